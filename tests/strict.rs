//! hfplay refuses what Ansible refuses, checks host keys and keeps secrets off command lines
//! (issue 11): the release binary against the containers of `tests/hosts.sh`, playbooks in
//! `tests/fixtures/strict/`. Hosts are read through `docker exec`, not through hfplay.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::{exists, hfplay, hosts, play_args, read, repo, reset, Hosts, Run};

/// Exit codes (src/cli.rs).
const FAILED: i32 = 2;
const LOAD_ERROR: i32 = 3;
const UNREACHABLE: i32 = 4;
const USAGE: i32 = 5;

fn strict(playbook: &str) -> String {
    format!("strict/{playbook}")
}

/// A load-time error: exit 3, the located message, nothing printed on stdout, no host touched.
#[track_caller]
fn assert_refused_at_load(h: &Hosts, playbook: &str, tag: &str, extra: &[&str], words: &[&str]) {
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, &strict(playbook), tag, extra));
    run.expect_code(LOAD_ERROR);
    for w in words {
        assert!(run.stderr.contains(w), "want {w:?}\n{}", run.describe());
    }
    assert!(run.stdout.trim().is_empty(), "{}", run.describe());
    for host in &h.names {
        assert!(
            !exists(host, &format!("{base}/touched")),
            "{host} was touched"
        );
        assert!(
            !exists(host, &format!("/tmp/hft-{tag}-touched")),
            "{host} was touched"
        );
    }
}

#[test]
fn undefined_variables_fail_like_ansible_and_guards_still_work() {
    let Some(h) = hosts() else { return };
    let tag = "strictundef";
    let base = reset(h, tag);
    let run = hfplay(&play_args(
        h,
        &strict("undefined_uses.yml"),
        tag,
        &["--json"],
    ));
    run.expect_code(0);
    for host in &h.names {
        for (task, file) in [
            ("filter", "filter"),
            ("concat", "concat"),
            ("loop in a template", "for"),
            ("when not", "not"),
            ("when compare", "compare"),
            ("when attribute", "attr"),
        ] {
            let res = run.result(task, host).expect("result");
            assert_eq!(res["status"], "failed", "{task} on {host}: {res}");
            let msg = res["msg"].as_str().unwrap_or_default();
            assert!(msg.contains("'typo' is undefined"), "{task}: {msg}");
            assert!(msg.contains("undefined_uses.yml:"), "{task}: {msg}");
            assert!(
                !exists(host, &format!("{base}/{file}")),
                "{task} wrote {file}"
            );
        }
        assert_eq!(read(host, &format!("{base}/guarded")), "dn");
        assert_eq!(run.stat(host, "ignored"), 6);
    }
}

#[test]
fn unknown_handler_empty_playbook_and_alias_bomb_are_load_errors() {
    let Some(h) = hosts() else { return };
    assert_refused_at_load(
        h,
        "unknown_handler.yml",
        "strictnotify",
        &[],
        &[
            "unknown_handler.yml:5:7",
            "no handler is named or listens to \"restart the servcie\"",
            "did you mean \"restart the service\"",
        ],
    );
    assert_refused_at_load(h, "empty.yml", "strictempty", &[], &["empty playbook"]);
    let t = std::time::Instant::now();
    assert_refused_at_load(
        h,
        "alias_bomb.yml",
        "strictbomb",
        &[],
        &["alias_bomb.yml:", "alias bomb"],
    );
    // Not a timed assertion of speed: a bomb that expanded would take minutes and gigabytes.
    assert!(t.elapsed().as_secs() < 60, "the alias bomb was expanded");
}

#[test]
fn missing_required_argument_and_literal_wrong_type_fail_at_load() {
    let Some(h) = hosts() else { return };
    assert_refused_at_load(
        h,
        "missing_argument.yml",
        "strictreq",
        &[],
        &[
            "missing_argument.yml:8:7",
            "missing required argument 'dest' for module 'copy'",
        ],
    );
    assert_refused_at_load(
        h,
        "wrong_type.yml",
        "stricttype",
        &[],
        &[
            "wrong_type.yml:8:7",
            "wait_for: expected an integer, got \"eighty\"",
        ],
    );
}

#[test]
fn duplicate_keys_warn_with_both_lines_and_fail_with_strict() {
    let Some(h) = hosts() else { return };
    let tag = "strictdup";
    reset(h, tag);
    let run = hfplay(&play_args(h, &strict("duplicate_key.yml"), tag, &[]));
    run.expect_code(0);
    // The later value wins, as in Ansible (the touched file, not "first").
    assert!(
        run.stderr
            .contains("duplicate_key.yml:9:9: duplicate key \"path\": also at line 8"),
        "{}",
        run.describe()
    );
    for host in &h.names {
        assert!(exists(host, &format!("/tmp/hft-{tag}-touched")), "{host}");
        assert!(!exists(host, &format!("/tmp/hft-{tag}-first")), "{host}");
    }
    assert_refused_at_load(
        h,
        "duplicate_key.yml",
        "strictdup2",
        &["--strict"],
        &["duplicate_key.yml:9:9", "duplicate key \"path\""],
    );
}

#[test]
fn include_of_itself_fails_located_instead_of_overflowing() {
    let Some(h) = hosts() else { return };
    let tag = "strictinc";
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, &strict("include_self.yml"), tag, &[]));
    run.expect_code(FAILED);
    assert!(
        run.stdout.contains("includes nested more than 64 deep"),
        "{}",
        run.describe()
    );
    assert!(!run.stdout.contains("././"), "{}", run.describe());
    for host in &h.names {
        assert!(!exists(host, &format!("{base}/reached")), "{host}");
    }
}

#[test]
fn limit_matching_no_host_is_an_error() {
    let Some(h) = hosts() else { return };
    let tag = "strictlimit";
    let run = hfplay(&play_args(
        h,
        &strict("touch.yml"),
        tag,
        &["-l", "no-such-host"],
    ));
    run.expect_code(USAGE);
    assert!(run.stderr.contains("matches no host"), "{}", run.describe());
}

/// Command lines of every process on the machine (the containers share its kernel), sampled
/// while `f` runs; returns the distinct ones.
fn sample_command_lines(f: impl FnOnce() -> Run) -> (Run, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lines = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(out) = Command::new("ps").args(["-eww", "-o", "args="]).output() {
                    for l in String::from_utf8_lossy(&out.stdout).lines() {
                        lines.insert(l.to_string());
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            lines
        })
    };
    let run = f();
    stop.store(true, Ordering::Relaxed);
    let lines = seen.join().expect("sampler").into_iter().collect();
    (run, lines)
}

#[test]
fn secrets_in_environment_and_payloads_never_reach_a_command_line() {
    let Some(h) = hosts() else { return };
    let tag = "strictsecret";
    let base = reset(h, tag);
    let secret = format!("hft-s3cret-{}", std::process::id());
    // The secret reaches hfplay in a vars file: on its own command line it would be seen too.
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = dir.path().join("secret.yml");
    std::fs::write(&vars, format!("secret: {secret}\n")).expect("vars");
    let at_vars = format!("@{}", vars.display());
    let (run, lines) = sample_command_lines(|| {
        hfplay(&play_args(
            h,
            &strict("secrets.yml"),
            tag,
            &["-e", &at_vars],
        ))
    });
    run.expect_code(0);
    assert!(
        lines.iter().any(|l| l.contains("sleep 3")),
        "the sampler never saw the task's own process: {} lines",
        lines.len()
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(&secret)).collect();
    assert!(leaks.is_empty(), "secret on a command line: {leaks:?}");
    for host in &h.names {
        assert_eq!(read(host, &format!("{base}/seen")), secret, "{host}: env");
        assert_eq!(
            read(host, &format!("{base}/copied")),
            secret,
            "{host}: copy"
        );
        assert_eq!(
            read(host, &format!("{base}/lined")),
            format!("key={secret}\n"),
            "{host}: lineinfile"
        );
    }
}

/// An inventory of the first test host with the given known_hosts file (strict by default).
fn one_host_inventory(h: &Hosts, dir: &std::path::Path, known_hosts: &std::path::Path) -> String {
    let text = std::fs::read_to_string(&h.inventory).expect("inventory");
    let host_line = text
        .lines()
        .find(|l| l.starts_with(&h.names[0]))
        .expect("host line");
    let key = repo().join(".cache/ssh/id_ed25519");
    let inv = dir.join("hosts.ini");
    std::fs::write(
        &inv,
        format!(
            "[hft]\n{host_line}\n\n[all:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n\
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            key.display(),
            known_hosts.display()
        ),
    )
    .expect("inventory");
    inv.to_string_lossy().into_owned()
}

fn run_touch(inv: &str, tag: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hfplay"));
    cmd.args([
        support::fixture("strict/touch.yml")
            .to_string_lossy()
            .as_ref(),
        "-i",
        inv,
        "-e",
        &format!("tag={tag}"),
        "-T",
        "5",
    ])
    .current_dir(repo())
    .stdin(Stdio::null())
    .env_remove("ANSIBLE_HOST_KEY_CHECKING");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cannot run hfplay");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: vec!["strict/touch.yml".into(), "-i".into(), inv.into()],
    }
}

#[test]
fn host_keys_are_checked_a_changed_key_is_refused_and_nothing_sent() {
    let Some(h) = hosts() else { return };
    let tag = "strictkeys";
    reset(h, tag);
    let host = &h.names[0];
    let touched = format!("/tmp/hft-{tag}-touched");
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    let inv = one_host_inventory(h, dir.path(), &known);
    let addr = std::fs::read_to_string(&inv)
        .expect("inventory")
        .split("ansible_host=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("address")
        .to_string();

    // 1. A key that is not the host's: refused, nothing reaches the host.
    let other = dir.path().join("other");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let fake = std::fs::read_to_string(other.with_extension("pub")).expect("pub key");
    let fake: Vec<&str> = fake.split_whitespace().take(2).collect();
    std::fs::write(&known, format!("{addr} {} {}\n", fake[0], fake[1])).expect("known_hosts");
    let run = run_touch(&inv, tag, &[]);
    run.expect_code(UNREACHABLE);
    assert!(
        run.stdout.contains("does not match the one in known_hosts"),
        "{}",
        run.describe()
    );
    assert!(
        !exists(host, &touched),
        "a host with a changed key was reached"
    );

    // 2. An unknown host: refused by default (strict), with what to do.
    std::fs::write(&known, "").expect("known_hosts");
    let run = run_touch(&inv, tag, &[]);
    run.expect_code(UNREACHABLE);
    assert!(
        run.stdout.contains("host key unknown"),
        "{}",
        run.describe()
    );
    assert!(!exists(host, &touched));

    // 3. accept-new, opted into: the key is learnt and the run goes on ...
    let run = run_touch(&inv, tag, &[("ANSIBLE_HOST_KEY_CHECKING", "accept-new")]);
    run.expect_code(0);
    assert!(exists(host, &touched));
    let learnt = std::fs::read_to_string(&known).expect("known_hosts");
    assert!(learnt.contains(&addr), "{learnt}");
    // ... and a later run checks against what it learnt (strict again).
    let run = run_touch(&inv, tag, &[]);
    run.expect_code(0);

    // 4. host_key_checking = False in ansible.cfg turns checking off (Ansible's switch).
    std::fs::write(&known, format!("{addr} {} {}\n", fake[0], fake[1])).expect("known_hosts");
    let cfg = dir.path().join("ansible.cfg");
    std::fs::write(&cfg, "[defaults]\nhost_key_checking = False\n").expect("cfg");
    let run = run_touch(
        &inv,
        tag,
        &[("ANSIBLE_CONFIG", cfg.to_str().expect("utf-8"))],
    );
    run.expect_code(0);
}

#[test]
fn ansible_limit_is_the_limit_pattern_and_undefined_without_one() {
    let base = [
        "tests/fixtures/strict/limit.yml",
        "-i",
        "tests/fixtures/strict/local.ini",
    ];
    let run = hfplay(&base);
    run.expect_code(FAILED);
    assert!(
        run.stdout.contains("name the hosts with --limit"),
        "{}",
        run.describe()
    );
    let mut limited = base.to_vec();
    limited.extend(["--limit", "localhost"]);
    let run = hfplay(&limited);
    run.expect_code(0);
    assert!(run.stdout.contains("limit=localhost"), "{}", run.describe());
}
