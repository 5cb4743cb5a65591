//! Airflow's REST API as the workload driver uses it: trigger a DAG run, read its state and its
//! task instances. Every api-server of the cluster is a way in; a request that cannot reach one
//! (its host may be the one under fault) goes to the next, and the one that answered is tried
//! first next time — the runner must not depend on the component it is hurting.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

pub struct Api {
    bases: Vec<String>,
    user: String,
    password: String,
    agent: ureq::Agent,
    /// (index of the base that answered last, its token)
    state: Mutex<(usize, Option<String>)>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DagRun {
    pub state: String,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskInstance {
    pub task_id: String,
}

/// Unix seconds of an API timestamp (RFC 3339).
pub fn unix(ts: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|d| d.timestamp_micros() as f64 / 1e6)
}

impl DagRun {
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "success" | "failed")
    }
    /// Seconds from start to end, once it ended.
    pub fn span(&self) -> Option<(f64, f64)> {
        Some((
            unix(self.start_date.as_deref()?)?,
            unix(self.end_date.as_deref()?)?,
        ))
    }
}

/// Did the request reach an api-server that could answer it? (Else try the next one.)
enum Outcome {
    Answer(Value),
    Unauthorized,
    Unreachable(String),
}

impl Api {
    /// `bases`: `https://ADDRESS:8080` of each api-server, their certificates checked against
    /// `ca_file` only (the cluster CA; no public roots), or `http://` without one.
    pub fn new(
        bases: Vec<String>,
        user: &str,
        password: &str,
        ca_file: Option<&Path>,
    ) -> Result<Api> {
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        if let Some(ca) = ca_file {
            let tls = heir_supervisor::pg_tls::verifying_client_config(ca)
                .with_context(|| format!("the api-servers' CA {}", ca.display()))?;
            agent = agent.tls_config(Arc::new(tls));
        }
        Ok(Api {
            bases,
            user: user.into(),
            password: password.into(),
            agent: agent.build(),
            state: Mutex::new((0, None)),
        })
    }

    fn token(&self, base: &str) -> Result<String, String> {
        let resp = self
            .agent
            .post(&format!("{base}/auth/token"))
            .send_json(json!({"username": self.user, "password": self.password}))
            .map_err(|e| format!("{base}/auth/token: {e}"))?;
        let v: Value = resp
            .into_json()
            .map_err(|e| format!("{base}/auth/token: {e}"))?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{base}/auth/token: no access_token in {v}"))
    }

    fn once(&self, base: &str, token: &str, method: &str, path: &str, body: &Value) -> Outcome {
        let req = self
            .agent
            .request(method, &format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {token}"));
        let resp = if body.is_null() {
            req.call()
        } else {
            req.send_json(body.clone())
        };
        match resp {
            Ok(r) => match r.into_json::<Value>() {
                Ok(v) => Outcome::Answer(v),
                Err(e) => Outcome::Unreachable(format!("{base}{path}: {e}")),
            },
            Err(ureq::Error::Status(401 | 403, _)) => Outcome::Unauthorized,
            // 5xx: that api-server cannot serve now (its DB connection may be moving); another may.
            Err(ureq::Error::Status(code, r)) if code >= 500 => Outcome::Unreachable(format!(
                "{base}{path}: {code} {}",
                r.into_string().unwrap_or_default()
            )),
            Err(ureq::Error::Status(code, r)) => Outcome::Answer(json!({
                "__status": code,
                "__body": r.into_string().unwrap_or_default(),
            })),
            Err(e) => Outcome::Unreachable(format!("{base}{path}: {e}")),
        }
    }

    /// One request, through the first api-server that answers. 4xx answers come back as
    /// `{"__status", "__body"}` for the caller to judge.
    pub fn request(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let (first, mut token) = {
            let s = self
                .state
                .lock()
                .map_err(|_| anyhow!("api state poisoned"))?;
            (s.0, s.1.clone())
        };
        let mut errors = Vec::new();
        for k in 0..self.bases.len() {
            let i = (first + k) % self.bases.len();
            let base = &self.bases[i];
            for _ in 0..2 {
                let t = match &token {
                    Some(t) => t.clone(),
                    None => match self.token(base) {
                        Ok(t) => {
                            token = Some(t.clone());
                            t
                        }
                        Err(e) => {
                            errors.push(e);
                            break;
                        }
                    },
                };
                match self.once(base, &t, method, path, &body) {
                    Outcome::Answer(v) => {
                        if let Ok(mut s) = self.state.lock() {
                            *s = (i, token);
                        }
                        return Ok(v);
                    }
                    Outcome::Unauthorized => token = None,
                    Outcome::Unreachable(e) => {
                        errors.push(e);
                        break;
                    }
                }
            }
        }
        bail!("no api-server answered: {}", errors.join("; "))
    }

    fn ok(v: Value, what: &str) -> Result<Value> {
        match v.get("__status") {
            Some(code) => bail!("{what}: HTTP {code}: {}", v["__body"]),
            None => Ok(v),
        }
    }

    /// True once the DAG processor has parsed the DAG.
    pub fn has_dag(&self, dag: &str) -> Result<bool> {
        let v = self.request("GET", &format!("/api/v2/dags/{dag}"), Value::Null)?;
        Ok(v.get("__status").is_none())
    }

    pub fn unpause(&self, dag: &str) -> Result<()> {
        let v = self.request(
            "PATCH",
            &format!("/api/v2/dags/{dag}"),
            json!({"is_paused": false}),
        )?;
        Self::ok(v, &format!("unpausing {dag}")).map(|_| ())
    }

    /// Triggers a run with this id. A retried trigger whose first attempt went through (the
    /// answer was lost) gets 409: the run exists, which is what was asked.
    pub fn trigger(&self, dag: &str, run_id: &str, conf: Value) -> Result<()> {
        let v = self.request(
            "POST",
            &format!("/api/v2/dags/{dag}/dagRuns"),
            json!({"dag_run_id": run_id, "logical_date": null, "conf": conf}),
        )?;
        if v.get("__status").and_then(Value::as_u64) == Some(409) {
            return Ok(());
        }
        Self::ok(v, &format!("triggering {dag} {run_id}")).map(|_| ())
    }

    pub fn dag_run(&self, dag: &str, run_id: &str) -> Result<DagRun> {
        let v = self.request(
            "GET",
            &format!("/api/v2/dags/{dag}/dagRuns/{run_id}"),
            Value::Null,
        )?;
        let v = Self::ok(v, &format!("reading {dag} {run_id}"))?;
        serde_json::from_value(v).with_context(|| format!("reading {dag} {run_id}"))
    }

    pub fn task_instances(&self, dag: &str, run_id: &str) -> Result<Vec<TaskInstance>> {
        let v = self.request(
            "GET",
            &format!("/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances?limit=1000"),
            Value::Null,
        )?;
        let v = Self::ok(v, &format!("task instances of {dag} {run_id}"))?;
        serde_json::from_value(v["task_instances"].clone())
            .with_context(|| format!("task instances of {dag} {run_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_timestamps() {
        assert_eq!(unix("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(unix("1970-01-01T01:00:02+01:00"), Some(2.0));
        assert_eq!(unix("yesterday"), None);
        let r = DagRun {
            state: "running".into(),
            start_date: Some("1970-01-01T00:00:01Z".into()),
            end_date: None,
        };
        assert!(!r.finished());
        assert_eq!(r.span(), None);
    }
}
