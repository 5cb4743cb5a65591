//! `throttle`: a task with `throttle: 1` runs on one host at a time even with forks to spare;
//! `loop_control.pause` spaces the items of a loop.
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

/// `loop_control.pause`: the items of a loop are that many seconds apart (the first is not
/// delayed); a pause that is not a number fails the task.
#[tokio::test]
async fn loop_control_pause_spaces_the_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("times");
    let pb = format!(
        r#"
- hosts: h1
  gather_facts: false
  tasks:
    - shell: date +%s.%N >> {log}
      loop: [1, 2, 3]
      loop_control:
        pause: 0.4
"#,
        log = log.display()
    );
    let (_, outcome) = run(&pb).await;
    assert_eq!(outcome, RunOutcome::Ok);
    let times: Vec<f64> = std::fs::read_to_string(&log)
        .expect("times written")
        .lines()
        .map(|l| l.trim().parse().expect("a time"))
        .collect();
    assert_eq!(times.len(), 3);
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= 0.35,
            "items closer than the pause: {times:?}"
        );
    }
    let bad = "- hosts: h1\n  gather_facts: false\n  tasks:\n    - command: 'true'\n      loop: [1, 2]\n      loop_control:\n        pause: soon\n";
    let (_, outcome) = run(bad).await;
    assert_eq!(outcome, RunOutcome::Failed);
}
