//! Dynamic includes load their file when they run, as Ansible's: an OS branch behind a false
//! `when` may name modules hfplay lacks (geerlingguy.mysql's setup-RedHat.yml uses `yum`).

use std::sync::Arc;

use super::register_tests::run;
use super::{lock, RunOutcome};
use crate::modules;
use crate::playbook::Loader;

/// A tasks file only another OS runs, and a playbook including it under `when: {guard}`.
fn branch(guard: &str) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().expect("tempdir");
    let file = d.path().join("setup-RedHat.yml");
    std::fs::write(
        &file,
        "- name: Install\n  yum: {name: git, state: present}\n",
    )
    .expect("tasks file");
    let pb = format!(
        "- hosts: web\n  gather_facts: false\n  vars: {{os_family: Debian}}\n  tasks:\n    - include_tasks: {}\n      when: {guard}\n    - debug: msg=after\n",
        file.display()
    );
    (d, pb)
}

#[tokio::test]
async fn an_include_behind_a_false_when_is_never_loaded() {
    let (_d, pb) = branch("os_family == 'RedHat'");
    let (_, outcome) = run(&pb).await;
    assert_eq!(outcome, RunOutcome::Ok);
}

#[tokio::test]
async fn a_taken_branch_fails_at_run_time_naming_the_module() {
    let (_d, pb) = branch("os_family == 'Debian'");
    let (runner, outcome) = run(&pb).await;
    assert_eq!(outcome, RunOutcome::Failed);
    let failure = lock(&runner.state)
        .get("h1")
        .and_then(|hs| hs.last_failure.clone())
        .map(|(_, r)| r)
        .unwrap_or_default();
    let msg = failure["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("unknown module 'yum'") && msg.contains("setup-RedHat.yml:2"),
        "{failure}"
    );
}

#[test]
fn an_unguarded_include_is_still_checked_at_load() {
    let (d, pb) = branch("true");
    let pb = pb.replace("      when: true\n", "");
    let path = d.path().join("pb.yml");
    std::fs::write(&path, pb).expect("playbook");
    let registry = Arc::new(modules::registry());
    let loader = Loader {
        roles_path: vec![],
        registry: &registry,
    };
    let Err(err) = loader.load_playbook(&path) else {
        panic!("the load should fail")
    };
    assert!(err.to_string().contains("unknown module 'yum'"), "{err}");
}
