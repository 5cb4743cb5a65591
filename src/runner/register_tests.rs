//! Registered values as a playbook sees them, pinned byte for byte: set_fact, a loop (with a
//! user loop variable), a delegated module, run_once and an ignored failure, run on two
//! `ansible_connection=local` hosts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{lock, RunOptions, RunOutcome, Runner};
use crate::inventory::Inventory;
use crate::modules;
use crate::playbook::Loader;
use crate::report::Reporter;

const PLAYBOOK: &str = r#"
- hosts: web
  gather_facts: false
  tasks:
    - set_fact: {a: 1}
      register: sf
    - set_fact: {acc: "{{ (acc | default([])) + [item] }}"}
      loop: [x, y]
      register: lp
    - debug: {msg: "n{{ __i }}"}
      loop: [1]
      loop_control: {loop_var: __i}
      register: dbg
    - command: echo hi
      delegate_to: h2
      register: dl
    - debug: {msg: once}
      run_once: true
      register: once
    - fail: {msg: nope}
      ignore_errors: true
      register: fl
"#;

pub(super) async fn run(playbook: &str) -> (Arc<Runner>, RunOutcome) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (inv_path, pb_path) = (dir.path().join("inv.ini"), dir.path().join("pb.yml"));
    std::fs::write(
        &inv_path,
        "[web]\nh1 ansible_connection=local\nh2 ansible_connection=local\n",
    )
    .expect("inventory written");
    std::fs::write(&pb_path, playbook).expect("playbook written");
    let inv = Arc::new(Inventory::load(&inv_path).expect("inventory"));
    let registry = Arc::new(modules::registry());
    let loader = Loader {
        roles_path: vec![],
        registry: &registry,
    };
    let pb = Arc::new(loader.load_playbook(&pb_path).expect("playbook"));
    let opts = RunOptions {
        forks: 2,
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    // --json: the reporter prints one document at the end, not a line per result.
    let reporter = Arc::new(Reporter::new(true, 0, false));
    let runner = Arc::new(Runner::new(inv, pb, registry, vec![], opts, reporter));
    let outcome = runner.run().await;
    (runner, outcome)
}

fn registered(runner: &Runner, host: &str, name: &str) -> Value {
    lock(&runner.state)
        .get(host)
        .and_then(|hs| hs.host_facts.get(name).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn registered_values_keep_their_ansible_shape() {
    let (runner, outcome) = run(PLAYBOOK).await;
    assert_eq!(outcome, RunOutcome::Ok);
    let reg = |host, name| registered(&runner, host, name).to_string();
    assert_eq!(
        reg("h1", "sf"),
        r#"{"changed":false,"ansible_facts_set":{"a":1}}"#
    );
    assert_eq!(reg("h1", "a"), "1");
    assert_eq!(
        reg("h1", "lp"),
        concat!(
            r#"{"changed":false,"failed":false,"skipped":false,"results":["#,
            r#"{"changed":false,"ansible_facts_set":{"acc":["x"]},"item":"x","ansible_loop_var":"item"},"#,
            r#"{"changed":false,"ansible_facts_set":{"acc":["x","y"]},"item":"y","ansible_loop_var":"item"}],"#,
            r#""msg":"All items completed"}"#
        )
    );
    assert_eq!(reg("h2", "acc"), r#"["x","y"]"#);
    // A loop variable of the user's own is registered, whatever its name.
    assert_eq!(
        reg("h1", "dbg"),
        concat!(
            r#"{"changed":false,"failed":false,"skipped":false,"results":["#,
            r#"{"changed":false,"msg":"n1","__i":1,"ansible_loop_var":"__i"}],"#,
            r#""msg":"All items completed"}"#
        )
    );
    // The delegated host is the report's business, not the registered value's.
    let dl = registered(&runner, "h1", "dl");
    assert_eq!(dl["stdout"], "hi");
    assert_eq!(dl["changed"], true);
    let keys: Vec<&str> = dl
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        keys.contains(&"rc") && !keys.iter().any(|k| k.starts_with("__")),
        "{dl}"
    );
    // run_once: every host of the batch registers the one result, in the same shape.
    for h in ["h1", "h2"] {
        assert_eq!(reg(h, "once"), r#"{"changed":false,"msg":"once"}"#);
    }
    assert_eq!(reg("h2", "fl"), r#"{"failed":true,"msg":"nope"}"#);
}
