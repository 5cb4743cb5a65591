//! What a task's result becomes: report lines, stats, registered values, notifications and the
//! failure a rescue sees; and the JSON helpers for results.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{lock, PlayCtx, Runner};
use crate::modules::{self, Outcome};
use crate::playbook::{Action, Task};
use crate::report::{HostResult, Status};
use crate::template::Scope;

impl Runner {
    /// Fails `host` at `task` with a controller-side error (template, loop, include).
    pub(super) fn fail_host(&self, host: &str, task: &Task, msg: &str) {
        let r = HostResult {
            status: Status::Failed,
            ignored: false,
            item: None,
            msg: located(task, host, msg),
            diffs: vec![],
            result: json!({}),
            no_log: false,
            delegated: None,
        };
        let result = json!({"failed": true, "msg": r.msg.clone()});
        self.reporter.host_result(host, &r);
        self.stat(host, |s| s.failed += 1);
        let mut st = lock(&self.state);
        let hs = st.entry(host.to_string()).or_default();
        hs.failed = true;
        hs.last_failure = Some((failed_task_value(task), result));
    }

    pub(super) fn report_item(
        &self,
        host: &str,
        task: &Task,
        res: &Value,
        status: Status,
        label: Option<String>,
        no_log: bool,
    ) {
        let ignored = status == Status::Failed && self.ignore_errors(task, res);
        self.reporter.host_result(
            host,
            &HostResult {
                status,
                ignored,
                item: label,
                msg: res
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                diffs: diffs_of(res),
                result: strip_internal(res),
                no_log,
                delegated: res
                    .get("__delegated")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            },
        );
    }

    pub(super) fn ignore_errors(&self, _task: &Task, res: &Value) -> bool {
        res.get("__ignore_errors")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Records the task's final outcome for a host: stats, register, notify, failure.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn account(
        &self,
        host: &str,
        task: &Task,
        res: &Value,
        status: Status,
        looped: Option<()>,
        no_log: bool,
        ctx: &Arc<PlayCtx>,
    ) -> bool {
        // A notify no handler answers fails the task, as in Ansible (handlers that dynamic
        // includes bring are known by now; the static case already failed at load).
        let unknown = if status == Status::Changed {
            let handlers = lock(&ctx.handlers);
            task.opts
                .notify
                .iter()
                .find(|n| !handlers.iter().any(|h| h.answers_notify(n)))
                .cloned()
        } else {
            None
        };
        let refused;
        let was_refused = unknown.is_some();
        let (res, status) = match unknown {
            Some(n) => {
                refused = json!({"failed": true, "msg": located(task, host, &format!("notify: no handler is named or listens to {n:?}"))});
                (&refused, Status::Failed)
            }
            None => (res, status),
        };
        if looped.is_none() || was_refused {
            self.report_item(host, task, res, status, None, no_log);
        }
        let ignored = status == Status::Failed
            && (self.ignore_errors(task, res)
                || res
                    .get("results")
                    .and_then(Value::as_array)
                    .is_some_and(|rs| {
                        rs.iter().all(|r| {
                            r.get("failed") != Some(&json!(true)) || self.ignore_errors(task, r)
                        })
                    }));
        let mut st = lock(&self.state);
        let hs = st.entry(host.to_string()).or_default();
        if let Some(name) = &task.opts.register {
            hs.host_facts.insert(name.clone(), strip_internal(res));
        }
        if let Some(Value::Object(facts)) = res.get("__set_facts") {
            for (k, v) in facts {
                hs.host_facts.insert(k.clone(), v.clone());
            }
        }
        if let Some(Value::Object(facts)) = res.get("ansible_facts") {
            for (k, v) in facts {
                hs.facts.insert(k.clone(), v.clone());
                if !k.starts_with("ansible_") {
                    hs.facts.insert(format!("ansible_{k}"), v.clone());
                }
            }
        }
        if status == Status::Changed {
            for n in &task.opts.notify {
                if !hs.notified.contains(n) {
                    hs.notified.push(n.clone());
                }
            }
        }
        let failed = match status {
            Status::Unreachable => {
                hs.unreachable = true;
                !task.opts.ignore_unreachable
            }
            Status::Failed if !ignored => {
                hs.failed = true;
                hs.last_failure = Some((failed_task_value(task), strip_internal(res)));
                true
            }
            _ => false,
        };
        drop(st);
        self.stat(host, |s| match status {
            Status::Ok => s.ok += 1,
            Status::Changed => {
                s.ok += 1;
                s.changed += 1
            }
            Status::Skipped => s.skipped += 1,
            Status::Failed if ignored => {
                s.ok += 1;
                s.ignored += 1
            }
            Status::Failed => s.failed += 1,
            Status::Unreachable => s.unreachable += 1,
        });
        failed
    }
}

/// `ansible_failed_task`: the failed task's name and action, as a rescue section sees it.
fn failed_task_value(task: &Task) -> Value {
    let action = match &task.action {
        Action::Module { name, .. } => name.clone(),
        Action::Debug { .. } => "debug".into(),
        Action::SetFact { .. } => "set_fact".into(),
        Action::Assert { .. } => "assert".into(),
        Action::Fail { .. } => "fail".into(),
        Action::IncludeVars { .. } => "include_vars".into(),
        Action::Pause { .. } => "pause".into(),
        Action::Ping => "ping".into(),
        Action::AsyncStatus { .. } => "async_status".into(),
        Action::IncludeTasks { .. } => "include_tasks".into(),
        Action::IncludeRole { .. } => "include_role".into(),
        Action::Block { .. } => "block".into(),
        Action::Meta(_) => "meta".into(),
    };
    json!({"name": task.display_name(), "action": action, "path": task.loc.to_string()})
}

/// A controller-side error as the user sees it: where the task is, which task, which host.
pub(super) fn located(task: &Task, host: &str, msg: &str) -> String {
    format!(
        "{}: task '{}' on {host}: {msg}",
        task.loc,
        task.display_name()
    )
}

pub(super) fn fixed_of(scope: &Arc<Scope>) -> HashMap<String, minijinja::Value> {
    let mut m = HashMap::new();
    use minijinja::value::Object;
    for k in ["groups", "hostvars"] {
        if let Some(v) = scope.get_value(&minijinja::Value::from(k)) {
            m.insert(k.to_string(), v);
        }
    }
    m
}

pub(super) fn outcome_json(o: &Outcome) -> Value {
    let mut m = o.data.clone();
    m.insert("changed".into(), json!(o.changed));
    if o.failed {
        m.insert("failed".into(), json!(true));
    }
    if o.skipped {
        m.insert("skipped".into(), json!(true));
    }
    if !o.msg.is_empty() {
        m.insert("msg".into(), json!(o.msg));
    }
    if let Some(f) = &o.facts {
        m.insert("ansible_facts".into(), Value::Object(f.clone()));
    }
    if !o.diffs.is_empty() {
        m.insert(
            "__diffs".into(),
            json!(o
                .diffs
                .iter()
                .map(|d| json!({"path": d.path, "before": d.before, "after": d.after}))
                .collect::<Vec<_>>()),
        );
    }
    Value::Object(m)
}

fn diffs_of(v: &Value) -> Vec<modules::FileDiff> {
    v.get("__diffs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| modules::FileDiff {
                    path: d["path"].as_str().unwrap_or_default().into(),
                    before: d["before"].as_str().unwrap_or_default().into(),
                    after: d["after"].as_str().unwrap_or_default().into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The registered form of a result: without hfplay's internal keys.
pub(super) fn strip_internal(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with("__") && *k != "ansible_facts")
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "results" {
                            strip_internal(v)
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_internal).collect()),
        other => other.clone(),
    }
}

pub(super) fn value_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}
