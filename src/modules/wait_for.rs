//! `wait_for`: wait for a TCP port, a file (optionally containing a regex), their absence, or
//! just some time — as a shell loop on the target, in one round trip.
//!
//! ```yaml
//! - wait_for: port=8080 timeout=60
//! - wait_for:
//!     path: /var/log/airflow/scheduler.log
//!     search_regex: "Starting the scheduler"
//! - wait_for: host=10.0.0.5 port=5432 state=stopped
//! ```
//! Port checks use bash's `/dev/tcp` under `timeout` (falling back to `nc -z`); `search_regex`
//! uses `grep -E`; `drained` uses `ss`. Never reports changed. Ansible runs `wait_for` in check
//! mode too (it only reads), and so does hfplay: the wait is the probe, the plan is empty. Returns `elapsed` (seconds), `state`, `port`,
//! `path`. Deviations: `search_regex` is POSIX ERE, not Python `re`; `exclude_hosts` and
//! `active_connection_states` are accepted, `drained` counts ESTABLISHED connections only.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_list, de_opt_string, de_opt_u64};
use std::convert::Infallible;

use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    host: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    port: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    timeout: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    delay: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    sleep: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_string")]
    search_regex: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    connect_timeout: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_string")]
    msg: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    exclude_hosts: Option<Vec<String>>,
    #[serde(default)]
    active_connection_states: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Started,
    Present,
    Stopped,
    Absent,
    Drained,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Started => "started",
            State::Present => "present",
            State::Stopped => "stopped",
            State::Absent => "absent",
            State::Drained => "drained",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub host: String,
    pub port: Option<u64>,
    pub path: Option<String>,
    pub state: State,
    pub timeout: u64,
    pub delay: u64,
    pub sleep: u64,
    pub search_regex: Option<String>,
    pub connect_timeout: u64,
}

/// Pure: the condition to test each round, as shell.
pub fn condition(s: &Spec) -> Result<String, String> {
    let positive = matches!(s.state, State::Started | State::Present);
    if s.port.is_some() && s.path.is_some() {
        return Err("port and path are mutually exclusive".into());
    }
    if let Some(path) = &s.path {
        let q = quote(path);
        return Ok(match (&s.search_regex, positive) {
            (Some(re), true) => format!("[ -e {q} ] && grep -Eq -- {} {q}", quote(re)),
            (None, true) => format!("[ -e {q} ]"),
            (Some(re), false) => format!("! {{ [ -e {q} ] && grep -Eq -- {} {q}; }}", quote(re)),
            (None, false) => format!("[ ! -e {q} ]"),
        });
    }
    if let Some(port) = s.port {
        let ct = s.connect_timeout.max(1);
        let h = &s.host;
        if s.state == State::Drained {
            return Ok(format!(
                "[ -z \"$(ss -Htn state established '( sport = :{port} )' 2>/dev/null)\" ]"
            ));
        }
        let probe = match &s.search_regex {
            Some(re) => format!(
                "timeout {ct} bash -c {} 2>/dev/null | grep -Eq -- {}",
                quote(&format!("exec 3<>/dev/tcp/{h}/{port} && cat <&3")),
                quote(re)
            ),
            None => format!(
                "if command -v bash >/dev/null 2>&1; then timeout {ct} bash -c {} 2>/dev/null; else nc -z -w {ct} {} {port} 2>/dev/null; fi",
                quote(&format!("exec 3<>/dev/tcp/{h}/{port}")),
                quote(h)
            ),
        };
        return Ok(if positive {
            format!("{{ {probe}; }}")
        } else {
            format!("! {{ {probe}; }}")
        });
    }
    Ok(String::new())
}

/// Pure: the whole loop. Prints `ELAPSED|n` and exits 0 on success, 1 on timeout.
pub fn script(s: &Spec) -> Result<String, String> {
    let cond = condition(s)?;
    let start = "s=$(date +%s)";
    let delay = if s.delay > 0 {
        format!("; sleep {}", s.delay)
    } else {
        String::new()
    };
    if cond.is_empty() {
        // No port or path: just wait `timeout` seconds (Ansible does the same).
        return Ok(format!(
            "{start}{delay}; sleep {}; echo \"ELAPSED|$(( $(date +%s) - s ))\"",
            s.timeout
        ));
    }
    Ok(format!(
        "{start}{delay}; e=$((s + {t})); while :; do if {cond}; then echo \"ELAPSED|$(( $(date +%s) - s ))\"; exit 0; fi; n=$(date +%s); if [ \"$n\" -ge \"$e\" ]; then echo \"ELAPSED|$((n - s))\"; exit 1; fi; sleep {sl}; done",
        t = s.timeout,
        sl = s.sleep.max(1)
    ))
}

/// Ansible's timeout messages.
pub fn timeout_msg(s: &Spec) -> String {
    match (&s.path, s.port, s.state) {
        (Some(p), _, State::Absent | State::Stopped) => {
            format!("Timeout when waiting for {p} to be absent.")
        }
        (Some(p), _, _) => match &s.search_regex {
            Some(r) => format!("Timeout when waiting for search string {r} in {p}"),
            None => format!("Timeout when waiting for file {p}"),
        },
        (None, Some(port), State::Stopped | State::Absent) => {
            format!("Timeout when waiting for {}:{port} to stop.", s.host)
        }
        (None, Some(port), State::Drained) => {
            format!("Timeout when waiting for {}:{port} to drain", s.host)
        }
        (None, Some(port), _) => format!("Timeout when waiting for {}:{port}", s.host),
        _ => "Timeout".into(),
    }
}

pub struct WaitFor;

#[async_trait]
impl Module for WaitFor {
    literal_params!("wait_for");
    fn names(&self) -> &'static [&'static str] {
        &["wait_for"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

impl Params {
    fn spec(&self) -> Spec {
        let _ = (&self.exclude_hosts, &self.active_connection_states);
        Spec {
            host: self.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: self.port,
            path: self.path.clone(),
            state: self.state.unwrap_or_default(),
            timeout: self.timeout.unwrap_or(300),
            delay: self.delay.unwrap_or(0),
            sleep: self.sleep.unwrap_or(1),
            search_regex: self.search_regex.clone(),
            connect_timeout: self.connect_timeout.unwrap_or(5),
        }
    }
}

/// How the wait ended: `met` before the timeout, after `elapsed` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub met: bool,
    pub elapsed: u64,
}

#[async_trait]
impl NativeModule for WaitFor {
    type Params = Params;
    type Observed = Observed;
    /// Read-only: there is never anything to change.
    type Plan = Infallible;
    const NAME: &'static str = "wait_for";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let sc = script(&p.spec()).map_err(|e| ModuleError::Args(format!("wait_for: {e}")))?;
        let r = ctx.sh(&sc).await?;
        let elapsed: u64 = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ELAPSED|"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Observed {
            met: r.rc == 0,
            elapsed,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Infallible>, ModuleError> {
        let spec = p.spec();
        let mut out = Outcome::ok()
            .with("elapsed", seen.elapsed)
            .with("state", spec.state.as_str());
        if let Some(port) = spec.port {
            out = out.with("port", port);
        }
        if let Some(path) = &spec.path {
            out = out.with("path", path.clone());
        }
        if let Some(re) = &spec.search_regex {
            out = out.with("search_regex", re.clone());
        }
        if !seen.met {
            out.failed = true;
            out.msg = p.msg.clone().unwrap_or_else(|| timeout_msg(&spec));
        }
        Ok(Planned::nothing(out))
    }

    async fn apply(
        &self,
        _p: &Params,
        plan: Infallible,
        _predicted: Outcome,
        _ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        match plan {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::{json, Map};

    fn spec() -> Spec {
        Spec {
            host: "127.0.0.1".into(),
            port: None,
            path: None,
            state: State::Started,
            timeout: 2,
            delay: 0,
            sleep: 1,
            search_regex: None,
            connect_timeout: 1,
        }
    }

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"prot": 1})).is_err());
    }

    #[test]
    fn conditions() {
        let mut s = spec();
        s.path = Some("/tmp/x".into());
        assert_eq!(condition(&s).unwrap(), "[ -e /tmp/x ]");
        s.state = State::Absent;
        assert_eq!(condition(&s).unwrap(), "[ ! -e /tmp/x ]");
        s.state = State::Present;
        s.search_regex = Some("ready".into());
        assert!(condition(&s).unwrap().contains("grep -Eq -- ready /tmp/x"));
        let mut s = spec();
        s.port = Some(5432);
        assert!(condition(&s).unwrap().contains("/dev/tcp/127.0.0.1/5432"));
        s.state = State::Stopped;
        assert!(condition(&s).unwrap().starts_with("! {"));
        s.path = Some("/x".into());
        assert!(condition(&s).is_err());
        assert_eq!(timeout_msg(&spec()), "Timeout");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({"port": 5432, "state": "stopped"})).unwrap();
        let ok = WaitFor
            .plan(
                &p,
                &Observed {
                    met: true,
                    elapsed: 3,
                },
                false,
            )
            .unwrap();
        assert!(ok.changes.is_none() && !ok.outcome.changed && !ok.outcome.failed);
        assert_eq!(ok.outcome.data["state"], json!("stopped"));
        assert_eq!(ok.outcome.data["elapsed"], json!(3));
        let late = WaitFor
            .plan(
                &p,
                &Observed {
                    met: false,
                    elapsed: 300,
                },
                false,
            )
            .unwrap();
        assert!(late.outcome.failed && !late.outcome.changed);
        assert_eq!(
            late.outcome.msg,
            "Timeout when waiting for 127.0.0.1:5432 to stop."
        );
        let bad = serde_json::from_value::<Params>(json!({"port": 1, "state": "up"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }

    #[tokio::test]
    async fn local_path_wait() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let f = dir.path().join("ready");
        std::fs::write(&f, "server ready\n").unwrap();
        let args: Args = serde_json::from_value(
            json!({"path": f.display().to_string(), "search_regex": "ready$", "timeout": 2}),
        )
        .unwrap();
        let o = WaitFor
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(!o.failed && !o.changed, "{o:?}");
        let args: Args = serde_json::from_value(
            json!({"path": dir.path().join("nope").display().to_string(), "timeout": 1}),
        )
        .unwrap();
        let o = WaitFor
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.failed, "{o:?}");
        assert!(o.msg.contains("Timeout when waiting for file"));
        // a closed port: state=stopped succeeds at once
        let args: Args =
            serde_json::from_value(json!({"port": 1, "state": "stopped", "timeout": 2})).unwrap();
        let o = WaitFor
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.failed, "{o:?}");
    }
}
