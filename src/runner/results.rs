//! What a task's result becomes: report lines, stats, registered values, facts, notifications
//! and the failure a rescue sees; and small JSON helpers.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{lock, PlayCtx, Runner};
use crate::playbook::Task;
use crate::report::HostResult;
use crate::task_result::{Status, TaskResult};
use crate::template::Scope;

impl Runner {
    /// Fails `host` at `task` with a controller-side error (template, loop, include).
    pub(super) fn fail_host(&self, host: &str, task: &Task, msg: &str) {
        let msg = located(task, host, msg);
        self.reporter.host_error(host, &msg);
        self.stat(host, |s| s.failed += 1);
        let mut st = lock(&self.state);
        let hs = st.entry(host.to_string()).or_default();
        hs.failed = true;
        hs.last_failure = Some((failed_task_value(task), json!({"failed": true, "msg": msg})));
    }

    pub(super) fn report_item(
        &self,
        host: &str,
        res: &TaskResult,
        label: Option<String>,
        no_log: bool,
    ) {
        self.reporter.host_result(
            host,
            &HostResult {
                result: res,
                item: label,
                ignored: ignored(res),
                no_log,
            },
        );
    }

    /// Records the task's final outcome for a host: stats, register, notify, failure. A loop's
    /// items were reported one by one, so its summary is not (unless a notify refuses it).
    pub(super) fn account(
        &self,
        host: &str,
        task: &Task,
        res: &TaskResult,
        looped: bool,
        no_log: bool,
        ctx: &Arc<PlayCtx>,
    ) -> bool {
        // A notify no handler answers fails the task, as in Ansible (handlers that dynamic
        // includes bring are known by now; the static case already failed at load).
        let unknown = if res.status == Status::Changed {
            let handlers = lock(&ctx.handlers);
            task.opts
                .notify
                .iter()
                .find(|n| !handlers.iter().any(|h| h.answers_notify(n)))
                .cloned()
        } else {
            None
        };
        let refused = unknown.map(|n| {
            TaskResult::failed(located(
                task,
                host,
                &format!("notify: no handler is named or listens to {n:?}"),
            ))
        });
        let res = refused.as_ref().unwrap_or(res);
        if !looped || refused.is_some() {
            self.report_item(host, res, None, no_log);
        }
        let ignored = ignored(res);
        let mut st = lock(&self.state);
        let hs = st.entry(host.to_string()).or_default();
        if let Some(name) = &task.opts.register {
            hs.host_facts.insert(name.clone(), res.registered());
        }
        for (k, v) in res.set_facts.iter().flatten() {
            hs.host_facts.insert(k.clone(), v.clone());
        }
        for (k, v) in res.ansible_facts.iter().flatten() {
            hs.facts.insert(k.clone(), v.clone());
            if !k.starts_with("ansible_") {
                hs.facts.insert(format!("ansible_{k}"), v.clone());
            }
        }
        if res.status == Status::Changed {
            for n in &task.opts.notify {
                if !hs.notified.contains(n) {
                    hs.notified.push(n.clone());
                }
            }
        }
        let failed = match res.status {
            Status::Unreachable => {
                hs.unreachable = true;
                !task.opts.ignore_unreachable
            }
            Status::Failed if !ignored => {
                hs.failed = true;
                hs.last_failure = Some((failed_task_value(task), res.registered()));
                true
            }
            _ => false,
        };
        drop(st);
        self.stat(host, |s| match res.status {
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

/// A failure that `ignore_errors` turns into "...ignoring".
fn ignored(res: &TaskResult) -> bool {
    res.status == Status::Failed && res.ignore_errors
}

/// `ansible_failed_task`: the failed task's name and action, as a rescue section sees it.
fn failed_task_value(task: &Task) -> Value {
    let action = task.action.name();
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
