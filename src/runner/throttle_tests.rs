//! `throttle`: a task with `throttle: 1` runs on one host at a time even with forks to spare.
//! Each host takes a lock directory for half a second; two at once collide and fail.

use super::register_tests::run;
use super::RunOutcome;

fn playbook(lock: &std::path::Path, throttle: &str) -> String {
    format!(
        r#"
- hosts: web
  gather_facts: false
  tasks:
    - shell: mkdir {lock} && sleep 0.5 && rmdir {lock}
      {throttle}
"#,
        lock = lock.display()
    )
}

#[tokio::test]
async fn throttle_one_serialises_the_hosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = dir.path().join("lock");
    let (_, outcome) = run(&playbook(&lock, "throttle: 1")).await;
    assert_eq!(outcome, RunOutcome::Ok);
    // The same task without it runs both hosts at once (forks 2): one finds the lock taken.
    let (_, outcome) = run(&playbook(&lock, "")).await;
    assert_eq!(outcome, RunOutcome::Failed);
}

#[test]
fn a_throttle_that_is_not_a_whole_number_fails_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  tasks:\n    - command: 'true'\n      throttle: '{{ n }}'\n",
    )
    .expect("playbook written");
    let registry = crate::modules::registry();
    let loader = crate::playbook::Loader {
        roles_path: vec![],
        registry: &registry,
    };
    let err = loader
        .load_playbook(&pb)
        .expect_err("a load error")
        .to_string();
    assert!(err.contains("pb.yml:4"), "{err}");
    assert!(err.contains("'throttle' must be a whole number"), "{err}");
}
