//! A task's result on one host, typed: Ansible's result dictionary (what `register:` stores and
//! `--json` / `-v` show) kept apart from what only hfplay reads (the status, facts to set, the
//! delegated host, `ignore_errors`, file diffs). It is carried from the action through the
//! runner (and a background job) to the report, and becomes JSON only as its dictionary,
//! [`TaskResult::value`] (see [`TaskResult::registered`]).

use serde_json::{json, Map, Value};

use crate::modules::{FileDiff, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Changed,
    Skipped,
    Failed,
    Unreachable,
}

/// One host's result for one task, or for one loop item.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub status: Status,
    /// Ansible's result dictionary (changed, failed, msg, rc, stdout, results, …): registered
    /// and shown as it is.
    pub value: Map<String, Value>,
    /// Facts a module gathered (`ansible_facts`): merged into the host's facts, neither
    /// registered nor shown.
    pub ansible_facts: Option<Map<String, Value>>,
    /// Host variables that `set_fact` and `include_vars` set.
    pub set_facts: Option<Map<String, Value>>,
    /// The host a module ran on with `delegate_to` (shown as `[host -> delegate]`).
    pub delegated_to: Option<String>,
    /// The task's `ignore_errors` held (read only when the result is a failure).
    pub ignore_errors: bool,
    /// File diffs, shown with `--diff`.
    pub diffs: Vec<FileDiff>,
    /// Shown without `-v`, as Ansible shows `debug`'s message.
    pub shown: bool,
    /// The task ran for real in a `--check` run (`check_mode: false`): marked in `--json`, as
    /// what the check saw there is the host as it is, not as the run would leave it.
    pub real_in_check: bool,
}

impl TaskResult {
    /// A result from its dictionary; `value` is a JSON object (anything else is an internal
    /// mistake and becomes an empty dictionary rather than a panic).
    pub fn new(status: Status, value: Value) -> TaskResult {
        TaskResult {
            status,
            value: match value {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            ansible_facts: None,
            set_facts: None,
            delegated_to: None,
            ignore_errors: false,
            diffs: vec![],
            shown: false,
            real_in_check: false,
        }
    }

    pub fn failed(msg: impl Into<String>) -> TaskResult {
        TaskResult::new(Status::Failed, json!({"failed": true, "msg": msg.into()}))
    }

    pub fn unreachable(msg: impl Into<String>) -> TaskResult {
        TaskResult::new(
            Status::Unreachable,
            json!({"unreachable": true, "msg": msg.into()}),
        )
    }

    /// A module's outcome as Ansible reports it: its data plus changed/failed/skipped/msg.
    pub fn from_outcome(o: Outcome) -> TaskResult {
        let status = if o.failed {
            Status::Failed
        } else if o.skipped {
            Status::Skipped
        } else if o.changed {
            Status::Changed
        } else {
            Status::Ok
        };
        let mut m = o.data;
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
        TaskResult {
            ansible_facts: o.facts,
            diffs: o.diffs,
            ..TaskResult::new(status, Value::Object(m))
        }
    }

    /// A looped task's result from its items' (each dictionary already holding its loop
    /// variable), as Ansible registers it: the items under `results`, with a summary.
    /// Facts were set item by item, so the summary carries none.
    pub fn of_loop(items: Vec<TaskResult>) -> TaskResult {
        let any = |f: fn(Status) -> bool| items.iter().any(|r| f(r.status));
        let any_failed = any(|s| matches!(s, Status::Failed | Status::Unreachable));
        let any_changed = any(|s| s == Status::Changed);
        let all_skipped = items.iter().all(|r| r.status == Status::Skipped);
        let status = if any_failed {
            Status::Failed
        } else if any_changed {
            Status::Changed
        } else if all_skipped {
            Status::Skipped
        } else {
            Status::Ok
        };
        // The loop's failure is ignored when every failed item's was.
        let ignore_errors = items.iter().all(|r| !r.failed_key() || r.ignore_errors);
        let empty = items.is_empty();
        let results: Vec<Value> = items.into_iter().map(|r| Value::Object(r.value)).collect();
        let msg = if any_failed {
            "One or more items failed"
        } else {
            "All items completed"
        };
        let mut agg = TaskResult::new(
            status,
            json!({"changed": any_changed, "failed": any_failed, "skipped": all_skipped, "results": results, "msg": msg}),
        );
        if empty {
            agg.value
                .insert("skipped_reason".into(), json!("No items in the list"));
        }
        agg.ignore_errors = ignore_errors;
        agg
    }

    /// The result's `msg` when it is text ("" otherwise).
    pub fn msg(&self) -> &str {
        self.value
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `failed: true` in the dictionary.
    fn failed_key(&self) -> bool {
        self.value.get("failed") == Some(&json!(true))
    }

    /// The value `register:` stores (and `ansible_failed_result` shows).
    pub fn registered(&self) -> Value {
        Value::Object(self.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(status: Status, value: Value, item: &str) -> TaskResult {
        let mut r = TaskResult::new(status, value);
        r.value.insert("item".into(), json!(item));
        r.value.insert("ansible_loop_var".into(), json!("item"));
        r
    }

    #[test]
    fn a_module_outcome_registers_its_data_without_facts_or_diffs() {
        let mut o = Outcome::changed(true);
        o.data.insert("rc".into(), json!(0));
        o.facts = Some(Map::from_iter([("x".to_string(), json!(1))]));
        o.diffs = vec![FileDiff::default()];
        let r = TaskResult::from_outcome(o);
        assert_eq!(r.status, Status::Changed);
        assert_eq!(r.registered().to_string(), r#"{"rc":0,"changed":true}"#);
        assert_eq!(r.diffs.len(), 1);
        assert!(r.ansible_facts.is_some());
        let r = TaskResult::from_outcome(Outcome::failed("no"));
        assert_eq!(
            (r.status, r.registered().to_string()),
            (
                Status::Failed,
                r#"{"changed":false,"failed":true,"msg":"no"}"#.into()
            )
        );
    }

    #[test]
    fn a_loop_registers_its_items_under_results() {
        let mut ok = item(Status::Ok, json!({"changed": false, "rc": 0}), "a");
        ok.set_facts = Some(Map::new());
        ok.delegated_to = Some("h2".into());
        let mut bad = item(Status::Failed, json!({"failed": true, "msg": "x"}), "b");
        bad.ignore_errors = true;
        let r = TaskResult::of_loop(vec![ok, bad]);
        assert_eq!(r.status, Status::Failed);
        assert!(r.ignore_errors, "every failed item was ignored");
        assert!(r.set_facts.is_none() && r.delegated_to.is_none());
        assert_eq!(
            r.registered().to_string(),
            concat!(
                r#"{"changed":false,"failed":true,"skipped":false,"results":["#,
                r#"{"changed":false,"rc":0,"item":"a","ansible_loop_var":"item"},"#,
                r#"{"failed":true,"msg":"x","item":"b","ansible_loop_var":"item"}],"#,
                r#""msg":"One or more items failed"}"#
            )
        );
        let r = TaskResult::of_loop(vec![item(Status::Changed, json!({"changed": true}), "a")]);
        assert_eq!(r.status, Status::Changed);
        assert_eq!(r.msg(), "All items completed");
    }

    #[test]
    fn an_empty_loop_is_skipped() {
        let r = TaskResult::of_loop(vec![]);
        assert_eq!(r.status, Status::Skipped);
        assert_eq!(
            r.registered().to_string(),
            r#"{"changed":false,"failed":false,"skipped":true,"results":[],"msg":"All items completed","skipped_reason":"No items in the list"}"#
        );
    }

    #[test]
    fn a_failed_item_not_ignored_fails_the_loop_unignored() {
        let ignored = TaskResult {
            ignore_errors: true,
            ..TaskResult::failed("a")
        };
        let r = TaskResult::of_loop(vec![ignored, TaskResult::failed("b")]);
        assert!(!r.ignore_errors);
    }
}
