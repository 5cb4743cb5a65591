//! hfplay over real SSH: the release binary against the containers of `tests/hosts.sh`
//! (systemd, sshd, the project key). Playbooks are in `tests/fixtures/`. Each test works in its
//! own area on the hosts (`support::reset`), so the tests run in parallel on the same hosts.
//! What a test asserts about a host it reads through `docker exec`, not through hfplay.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use support::{
    ansible_python, exists, fixture, hfplay, hfplay_env, hosts, play_args, read, reset, sh, sh_all,
};

/// Exit codes (src/cli.rs).
const FAILED: i32 = 2;
const LOAD_ERROR: i32 = 3;
const UNREACHABLE: i32 = 4;
const USAGE: i32 = 5;

#[test]
fn converge_then_rerun_changes_nothing() {
    let Some(h) = hosts() else { return };
    let tag = "idem";
    let base = reset(h, tag);
    sh_all(h, "touch /tmp/hft-idem-incoming");

    let first = hfplay(&play_args(h, "converge.yml", tag, &["--json"]));
    first.expect_code(0);
    for host in &h.names {
        assert!(
            first.stat(host, "changed") >= 10,
            "{host} should have converged\n{}",
            first.describe()
        );
        assert_eq!(first.stat(host, "failed"), 0);
    }
    // What the run did, seen on the hosts themselves.
    for host in &h.names {
        let conf = read(host, &format!("{base}/app/conf/app.conf"));
        assert!(conf.contains(&format!("name = {host}\n")), "{host}: {conf}");
        assert!(
            conf.contains(&format!("greeting = hello from {}\n", host.to_uppercase())),
            "{conf}"
        );
        assert!(
            conf.contains("listen = 8082\n") && conf.contains("tag = IDEM\n"),
            "{conf}"
        );
        let (_, mode_owner) = sh(
            host,
            &format!("stat -c '%a %U %G' {base}/app/conf/host.txt"),
        );
        assert_eq!(mode_owner.trim(), "640 hftidem hftidem");
        assert_eq!(
            read(host, &format!("{base}/app/conf/settings.ini")),
            "mode=fast\nworkers=4\n"
        );
        assert!(read(host, &format!("{base}/app/conf/hosts.txt")).contains("port 8081\n"));
        assert_eq!(
            sh(host, &format!("readlink {base}/app/current.conf"))
                .1
                .trim(),
            format!("{base}/app/conf/app.conf")
        );
        assert!(exists(host, &format!("{base}/app/data/initialised")));
        assert!(
            exists(host, &format!("{base}/app/data/consumed"))
                && !exists(host, "/tmp/hft-idem-incoming")
        );
        assert_eq!(
            read(host, &format!("{base}/app/conf/sysctl.conf")),
            "net.core.somaxconn=1024\n"
        );
        assert_eq!(
            sh(host, "systemctl is-active hft-idem.service").1.trim(),
            "active"
        );
        assert_eq!(
            sh(host, "systemctl is-enabled hft-idem.service").1.trim(),
            "enabled"
        );
        assert_eq!(sh(host, "id -gn hftidem").1.trim(), "hftidem");
    }

    let second = hfplay(&play_args(h, "converge.yml", tag, &["--json"]));
    second.expect_code(0);
    assert!(
        second.changed().is_empty(),
        "the second run changed {:?}\n{}",
        second.changed(),
        second.describe()
    );
    for host in &h.names {
        assert_eq!(second.stat(host, "changed"), 0);
        assert!(second.stat(host, "ok") >= 20);
    }
}

#[test]
fn check_mode_predicts_the_real_run() {
    let Some(h) = hosts() else { return };
    let tag = "chk";
    let base = reset(h, tag);
    sh_all(h, "touch /tmp/hft-chk-incoming");

    // Fresh hosts: the prediction, then the run.
    let check = hfplay(&play_args(
        h,
        "converge.yml",
        tag,
        &["--check", "--diff", "--json"],
    ));
    check.expect_code(0);
    for host in &h.names {
        assert!(!exists(host, &base), "--check created {base} on {host}");
        assert!(
            exists(host, "/tmp/hft-chk-incoming"),
            "--check ran a command on {host}"
        );
        assert_ne!(
            sh(host, "id hftchk").0,
            0,
            "--check created a user on {host}"
        );
    }
    let diff = check
        .result("templated configuration", &h.names[0])
        .expect("template result");
    assert!(
        diff["diff"][0]["after"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("name = {}", h.names[0])),
        "{diff}"
    );
    let real = hfplay(&play_args(h, "converge.yml", tag, &["--json"]));
    real.expect_code(0);
    assert!(real.changed().len() >= 10 * h.names.len());
    assert_eq!(
        check.changed(),
        real.changed(),
        "check mode mispredicted the fresh run"
    );

    // Drift on some hosts only: the prediction names exactly what the run then fixes.
    let (a, b) = (&h.names[1], &h.names[2]);
    sh(a, &format!("echo tampered >> {base}/app/conf/app.conf; sed -i 's/^workers=.*/workers=9/' {base}/app/conf/settings.ini; chmod 600 {base}/app/conf/static.txt"));
    sh(b, &format!("systemctl stop hft-chk.service; rm {base}/app/current.conf; echo junk > {base}/app/conf/hosts.txt"));
    let check = hfplay(&play_args(
        h,
        "converge.yml",
        tag,
        &["--check", "--diff", "--json"],
    ));
    check.expect_code(0);
    assert!(
        read(a, &format!("{base}/app/conf/app.conf")).contains("tampered"),
        "--check repaired a file"
    );
    let predicted = check.changed();
    let names: BTreeSet<(String, String)> = predicted
        .iter()
        .map(|(_, _, t, host)| (t.clone(), host.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("templated configuration", a),
        ("settings, one line each", a),
        ("static file from files/", a),
        ("service running and enabled", b),
        ("link to the configuration", b),
        ("managed block", b),
    ]
    .iter()
    .map(|(t, host)| (t.to_string(), host.to_string()))
    .collect();
    assert_eq!(names, want, "prediction after drift\n{}", check.describe());
    let diff = check
        .result("templated configuration", a)
        .expect("template result");
    assert!(
        diff["diff"][0]["before"]
            .as_str()
            .unwrap_or_default()
            .contains("tampered"),
        "{diff}"
    );
    let real = hfplay(&play_args(h, "converge.yml", tag, &["--json"]));
    real.expect_code(0);
    assert_eq!(
        predicted,
        real.changed(),
        "check mode mispredicted the repair"
    );

    // Converged: both say nothing to do.
    let check = hfplay(&play_args(h, "converge.yml", tag, &["--check", "--json"]));
    let real = hfplay(&play_args(h, "converge.yml", tag, &["--json"]));
    check.expect_code(0);
    real.expect_code(0);
    assert!(
        check.changed().is_empty() && real.changed().is_empty(),
        "{}\n{}",
        check.describe(),
        real.describe()
    );
}

#[test]
fn handlers_run_once_when_notified_and_only_then() {
    let Some(h) = hosts() else { return };
    let tag = "hdl";
    let base = reset(h, tag);
    let log = format!("{base}/handlers.log");
    let special = &h.names[1];

    let first = hfplay(&play_args(h, "handlers.yml", tag, &["--json"]));
    first.expect_code(0);
    for host in &h.names {
        let mut want = "restart a\nlistener one\nlistener two\n".to_string();
        if host == special {
            want.push_str("only some hosts\n");
        }
        assert_eq!(read(host, &log), want, "handler log on {host}");
    }
    let names = first.task_names();
    assert_eq!(
        names.iter().filter(|n| *n == "restart a").count(),
        1,
        "{names:?}"
    );
    assert!(!names.contains(&"never notified".to_string()), "{names:?}");
    let only = first
        .with_status("changed")
        .into_iter()
        .filter(|(_, _, t, _)| t == "only some hosts")
        .map(|(_, _, _, h)| h)
        .collect::<Vec<_>>();
    assert_eq!(only, vec![special.clone()]);

    // Nothing changes: no handler runs.
    let second = hfplay(&play_args(h, "handlers.yml", tag, &["--json"]));
    second.expect_code(0);
    assert!(second.changed().is_empty(), "{}", second.describe());
    for host in &h.names {
        let lines = read(host, &log).lines().count();
        assert_eq!(
            lines,
            if host == special { 4 } else { 3 },
            "a handler ran again on {host}"
        );
    }
    for handler in [
        "restart a",
        "listener one",
        "listener two",
        "only some hosts",
    ] {
        assert!(
            !second.task_names().iter().any(|n| n == handler),
            "{handler} ran on the no-change run"
        );
    }

    // One host drifts: only its handlers run.
    sh(&h.names[0], &format!("echo x > {base}/a.conf"));
    let third = hfplay(&play_args(h, "handlers.yml", tag, &["--json"]));
    third.expect_code(0);
    assert_eq!(
        read(&h.names[0], &log),
        "restart a\nlistener one\nlistener two\nrestart a\n"
    );
    assert_eq!(read(&h.names[2], &log).lines().count(), 3);
}

#[test]
fn block_rescue_and_always() {
    let Some(h) = hosts() else { return };
    let tag = "blk";
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, "blocks.yml", tag, &["--json"]));
    run.expect_code(0);
    let failing = &h.names[1];
    for host in &h.names {
        let rescued = host == failing;
        assert_eq!(
            exists(host, &format!("{base}/block-done")),
            !rescued,
            "{host}: rest of the block"
        );
        assert!(exists(host, &format!("{base}/always")), "{host}: always");
        assert!(
            exists(host, &format!("{base}/after")),
            "{host}: after the block"
        );
        assert_eq!(
            run.stat(host, "rescued"),
            u64::from(rescued),
            "{host}\n{}",
            run.describe()
        );
        assert_eq!(run.stat(host, "failed"), 0, "{host}");
    }
    assert_eq!(
        read(failing, &format!("{base}/rescued")),
        "rescued from step that fails on the second host (rc 1)\n"
    );
    assert!(!exists(&h.names[0], &format!("{base}/rescued")));
}

#[test]
fn failing_task_exits_2_and_the_other_hosts_go_on() {
    let Some(h) = hosts() else { return };
    let tag = "fail";
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, "failing.yml", tag, &["--json"]));
    run.expect_code(FAILED);
    let (first, third) = (&h.names[0], &h.names[2]);
    for host in &h.names {
        let failed_early = host == first;
        let failed_in_block = host == third;
        let failed = failed_early || failed_in_block;
        assert_eq!(
            run.stat(host, "failed"),
            u64::from(failed),
            "{host}\n{}",
            run.describe()
        );
        assert_eq!(
            run.stat(host, "ignored"),
            u64::from(!failed_early),
            "{host}: ignore_errors"
        );
        assert_eq!(
            exists(host, &format!("{base}/later")),
            !failed_early,
            "{host}: later task"
        );
        assert_eq!(
            exists(host, &format!("{base}/always")),
            !failed_early,
            "{host}: always after a failure"
        );
        assert_eq!(
            exists(host, &format!("{base}/last")),
            !failed,
            "{host}: last task"
        );
        assert_eq!(
            exists(host, &format!("{base}/play2")),
            !failed,
            "{host}: second play"
        );
    }
    let res = run
        .result("fails on the first host", first)
        .expect("result");
    assert_eq!(res["rc"], 1);
    assert_eq!(res["status"], "failed");
}

#[test]
fn unreachable_host_is_reported_dropped_and_exit_is_4() {
    let Some(h) = hosts() else { return };
    let tag = "unr";
    let base = reset(h, tag);
    // The test hosts plus one whose SSH port refuses connections.
    let inv_text = std::fs::read_to_string(&h.inventory).expect("inventory");
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("hosts.ini");
    let addr = inv_text
        .lines()
        .find(|l| l.starts_with(&h.names[0]))
        .and_then(|l| l.split("ansible_host=").nth(1))
        .expect("address");
    std::fs::write(
        &inv,
        format!(
            "{inv_text}\n[dead]\nhft-dead ansible_host={} ansible_port=1\n",
            addr.trim()
        ),
    )
    .expect("write inventory");
    let inv = inv.to_string_lossy().into_owned();

    let args = [
        fixture("unreachable.yml").to_string_lossy().into_owned(),
        "-i".into(),
        inv.clone(),
        "-e".into(),
        format!("base={base}"),
        "-T".into(),
        "5".into(),
    ];
    let text = hfplay(&args);
    text.expect_code(UNREACHABLE);
    assert!(
        text.stdout.contains("fatal: [hft-dead]: UNREACHABLE!"),
        "{}",
        text.describe()
    );
    let recap = text
        .stdout
        .lines()
        .find(|l| l.starts_with("hft-dead "))
        .expect("recap line");
    assert!(
        recap.contains("unreachable=1") && recap.contains("ok=0"),
        "{recap}"
    );

    let mut json_args = args.to_vec();
    json_args.push("--json".into());
    let run = hfplay(&json_args);
    run.expect_code(UNREACHABLE);
    assert_eq!(run.stat("hft-dead", "unreachable"), 1);
    let second = run.result("second", &h.names[0]).expect("second task ran");
    assert_eq!(second["status"], "ok");
    assert!(
        run.result("second", "hft-dead").is_none(),
        "the unreachable host stayed in the play"
    );
    for host in &h.names {
        assert_eq!(run.stat(host, "unreachable"), 0);
        assert_eq!(run.stat(host, "ok"), 3, "{host}: facts, first, second");
        assert_eq!(read(host, &format!("{base}/second")), format!("{host}\n"));
    }
}

/// A load-time error: its exit code, `file:line:col` pointing at the culprit, and no host touched.
fn assert_load_error(playbook: &str, line_col: &str, words: &[&str]) {
    let Some(h) = hosts() else { return };
    let tag = "err";
    let base = format!("/srv/hft/{tag}");
    let run = hfplay(&play_args(h, playbook, tag, &[]));
    run.expect_code(LOAD_ERROR);
    let want = format!("{playbook}:{line_col}:");
    let first = run.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(&want),
        "want {want} in the first line\n{}",
        run.describe()
    );
    for w in words {
        assert!(
            run.stderr.contains(w),
            "want {w:?} in the message\n{}",
            run.describe()
        );
    }
    assert!(
        run.stdout.trim().is_empty(),
        "nothing may run before a load error\n{}",
        run.describe()
    );
    for host in &h.names {
        assert!(
            !exists(host, &format!("{base}/touched")),
            "{host} was touched"
        );
    }
}

#[test]
fn error_malformed_yaml() {
    assert_load_error("errors/malformed_yaml.yml", "9:1", &["YAML syntax error"]);
}

#[test]
fn error_unknown_module() {
    assert_load_error(
        "errors/unknown_module.yml",
        "8:7",
        &[
            "unknown module 'ansible.builtin.lineinfle'",
            "did you mean 'lineinfile'",
        ],
    );
}

#[test]
fn error_unsupported_loop_keyword() {
    assert_load_error(
        "errors/with_fileglob.yml",
        "12:22",
        &["with_fileglob is not supported by hfplay yet"],
    );
}

#[test]
fn error_unknown_module_argument() {
    assert_load_error(
        "errors/unknown_argument.yml",
        "11:9",
        &[
            "unsupported argument 'mdoe' for module 'template'",
            "did you mean 'mode'",
        ],
    );
}

#[test]
fn error_bad_template_syntax() {
    assert_load_error(
        "errors/bad_template.yml",
        "9:18",
        &["template syntax error"],
    );
}

#[test]
fn error_bad_condition_syntax() {
    assert_load_error("errors/bad_condition.yml", "9:13", &["syntax error"]);
}

#[test]
fn error_undefined_variable_names_file_task_and_host() {
    let Some(h) = hosts() else { return };
    let tag = "undef";
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, "errors/undefined_variable.yml", tag, &[]));
    run.expect_code(FAILED);
    for host in &h.names {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("fatal: [{host}]")))
            .unwrap_or_else(|| panic!("no failure for {host}\n{}", run.describe()));
        assert!(
            line.contains("errors/undefined_variable.yml:11:7"),
            "{line}"
        );
        assert!(line.contains("task 'uses an undefined variable'"), "{line}");
        assert!(line.contains(&format!("on {host}")), "{line}");
        assert!(line.contains("'no_such_variable' is undefined"), "{line}");
        assert!(exists(host, &base), "the task before ran");
        assert!(
            !exists(host, &format!("{base}/undefined")),
            "{host}: the failing task wrote its file"
        );
        assert!(
            !exists(host, &format!("{base}/reached")),
            "{host}: the play went on"
        );
    }
}

#[test]
fn error_bad_options_exit_5_and_touch_nothing() {
    let Some(h) = hosts() else { return };
    let tag = "opt";
    let base = reset(h, tag);
    let bad_file = format!("@{}", fixture("errors/bad_extra_vars.yml").display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-e", "@/nonexistent/vars.yml"],
            "/nonexistent/vars.yml",
        ),
        (vec!["-e", &bad_file], "bad_extra_vars.yml:2:6"),
        (vec!["-e", "{\"unclosed\": 1"], "-e"),
        (vec!["--forks", "many"], "--forks"),
        (vec!["--no-such-option"], "--no-such-option"),
    ];
    for (extra, needle) in cases {
        let run = hfplay(&play_args(h, "converge.yml", tag, &extra));
        run.expect_code(USAGE);
        assert!(
            run.stderr.contains(needle),
            "want {needle:?} in the message\n{}",
            run.describe()
        );
        for host in &h.names {
            assert!(!exists(host, &base), "{host} was touched by {extra:?}");
        }
    }
}

#[test]
fn task_timeout_fails_the_attempt() {
    let Some(h) = hosts() else { return };
    let tag = "timeout";
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, "timeout.yml", tag, &["--json"]));
    run.expect_code(FAILED);
    for host in &h.names {
        assert_eq!(run.stat(host, "failed"), 1, "{host}\n{}", run.describe());
        assert_eq!(run.stat(host, "ignored"), 1, "{host}: ignore_errors");
        let res = run.result("outlives its timeout", host).expect("result");
        assert_eq!(res["status"], "failed");
        let msg = res["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("timed out after 2 seconds"), "{host}: {msg}");
        assert!(
            msg.contains("timeout.yml"),
            "{host}: the message names the file: {msg}"
        );
        assert!(
            exists(host, &format!("{base}/after")),
            "{host}: went on after the ignored one"
        );
        assert!(
            !exists(host, &format!("{base}/reached")),
            "{host}: the play stopped"
        );
    }
}

#[test]
fn async_job_runs_in_the_background_and_async_status_collects_it() {
    let Some(h) = hosts() else { return };
    let tag = "async";
    let base = reset(h, tag);
    let run = hfplay(&play_args(h, "async.yml", tag, &["--json"]));
    run.expect_code(0);
    for host in &h.names {
        let num = |f: &str| -> f64 {
            read(host, &format!("{base}/{f}"))
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{host}: {f} holds no timestamp"))
        };
        // The next task ran while the job was still sleeping.
        assert!(
            num("meanwhile") + 1.0 < num("job-done"),
            "{host}: the play waited for the background job\n{}",
            run.describe()
        );
        assert_eq!(
            read(host, &format!("{base}/early")),
            "0",
            "{host}: finished: 0 while running"
        );
        assert_eq!(
            read(host, &format!("{base}/job-stdout")),
            "CHANGED",
            "{host}"
        );
        assert_eq!(
            read(host, &format!("{base}/outcomes")),
            "3 failed",
            "{host}: rc of the failed job, in-place timeout"
        );
        let waited = run.result("wait for the job", host).expect("result");
        assert_eq!(
            waited["status"], "changed",
            "{host}: the job's change counts on async_status"
        );
        let bad = run
            .result("wait for the failing job", host)
            .expect("result");
        assert_eq!(
            bad["status"], "failed",
            "{host}: a failed job fails async_status"
        );
        let slow = run
            .result("in place, past its async time", host)
            .expect("result");
        assert!(
            slow["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("timed out after 2 seconds"),
            "{host}: {slow}"
        );
        assert_eq!(run.stat(host, "ignored"), 2, "{host}\n{}", run.describe());
    }
}

/// A module hfplay lacks runs as the real Ansible module: changed, then not; check mode
/// predicts without writing; facts come back; the recap counts the runs.
#[test]
fn ansible_fallback_runs_the_real_module() {
    let Some(h) = hosts() else { return };
    let python = ansible_python();
    assert!(
        python.exists(),
        "{} missing: scripts/ansible-venv.sh installs it (make test runs it)",
        python.display()
    );
    let python = python.to_string_lossy().into_owned();
    let env = [("HFPLAY_ANSIBLE_PYTHON", python.as_str())];
    let tag = "fallback";
    let base = reset(h, tag);

    let check = hfplay_env(
        &play_args(h, "ansible_fallback.yml", tag, &["--check"]),
        &env,
    );
    check.expect_code(0);
    for host in &h.names {
        assert!(
            !exists(host, &format!("{base}/settings.ini")),
            "{host}: check mode wrote"
        );
    }
    let first = hfplay_env(
        &play_args(h, "ansible_fallback.yml", tag, &["--json"]),
        &env,
    );
    first.expect_code(0);
    let runs = &first.json()["ansible_modules"];
    assert_eq!(runs["community.general.ini_file"], h.names.len(), "{runs}");
    assert_eq!(runs["ansible.builtin.getent"], h.names.len(), "{runs}");
    for host in &h.names {
        assert_eq!(
            read(host, &format!("{base}/settings.ini")),
            "\n[app]\nworkers = 4\n"
        );
        let (_, mode) = sh(host, &format!("stat -c %a {base}/settings.ini"));
        assert_eq!(mode.trim(), "640");
    }
    let again = hfplay_env(
        &play_args(h, "ansible_fallback.yml", tag, &["-e", "converged=true"]),
        &env,
    );
    again.expect_code(0);
    assert!(
        again
            .stdout
            .contains("ran as Ansible modules (fallback): ansible.builtin.getent ×"),
        "{}",
        again.describe()
    );
    // The recap (plain output, where the fallback line is): nothing changed on any host.
    let recap: Vec<&str> = again
        .stdout
        .lines()
        .filter(|l| l.contains(" : ok="))
        .collect();
    assert_eq!(recap.len(), h.names.len(), "{}", again.describe());
    assert!(
        recap.iter().all(|l| l.contains("changed=0 ")),
        "{}",
        again.describe()
    );
}

/// Without an installation, a module hfplay lacks fails the load saying how to enable the
/// fallback; with one, a module needing Ansible's controller-side action plugin is refused.
#[test]
fn error_fallback_without_ansible_or_with_an_action_plugin() {
    let Some(h) = hosts() else { return };
    let none = hfplay_env(
        &play_args(h, "ansible_fallback.yml", "err", &[]),
        &[("HFPLAY_ANSIBLE_PYTHON", "none")],
    );
    none.expect_code(LOAD_ERROR);
    assert!(
        none.stderr.contains("ansible_fallback.yml:10:7")
            && none
                .stderr
                .contains("unknown module 'community.general.ini_file'")
            && none.stderr.contains("HFPLAY_ANSIBLE_PYTHON"),
        "{}",
        none.describe()
    );
    let python = ansible_python().to_string_lossy().into_owned();
    let plugin = hfplay_env(
        &play_args(h, "errors/action_plugin_module.yml", "err", &[]),
        &[("HFPLAY_ANSIBLE_PYTHON", python.as_str())],
    );
    plugin.expect_code(LOAD_ERROR);
    assert!(
        plugin.stderr.contains("action_plugin_module.yml:8:7")
            && plugin
                .stderr
                .contains("action plugin ansible.builtin.fetch"),
        "{}",
        plugin.describe()
    );
}

/// With `ControlPersist` (here `ANSIBLE_SSH_ARGS`, as ansible.cfg's `ssh_args`), a run's masters
/// outlive it and the next run reaches each host through the same SSH connection (the same
/// client port in `$SSH_CONNECTION`), from `ANSIBLE_SSH_CONTROL_PATH_DIR`; without it, every
/// run logs in anew and leaves no master behind.
#[test]
fn control_persist_masters_are_reused_by_the_next_run() {
    let Some(h) = hosts() else { return };
    let cp = tempfile::Builder::new()
        .prefix("hft-cp")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let cp_path = cp.path().to_string_lossy().into_owned();
    let args = [
        fixture("ssh_connection.yml").to_string_lossy().into_owned(),
        "-i".into(),
        h.inventory.to_string_lossy().into_owned(),
        "--json".into(),
    ];
    let connections = |env: &[(&str, &str)]| -> Vec<String> {
        let run = hfplay_env(&args, env);
        run.expect_code(0);
        h.names
            .iter()
            .map(|host| {
                let r = run.result("the ssh connection", host).expect("result");
                r["stdout"].as_str().unwrap_or_default().trim().to_string()
            })
            .collect()
    };
    let persist = [
        (
            "ANSIBLE_SSH_ARGS",
            "-o ControlMaster=auto -o ControlPersist=60s",
        ),
        ("ANSIBLE_SSH_CONTROL_PATH_DIR", cp_path.as_str()),
    ];
    let first = connections(&persist);
    let second = connections(&persist);
    assert!(first.iter().all(|c| !c.is_empty()), "{first:?}");
    assert_eq!(first, second, "the second run should reuse the masters");
    let sockets = |dir: &str| -> Vec<String> {
        let out = Command::new("find")
            .args([dir, "-type", "s"])
            .output()
            .expect("find");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let masters = sockets(&cp_path);
    assert_eq!(masters.len(), h.names.len(), "{masters:?}");
    // The masters are told to exit, so the test leaves none behind.
    for s in &masters {
        let _ = Command::new("ssh")
            .args(["-S", s, "-O", "exit", "hft-master"])
            .output();
    }

    let none = [("ANSIBLE_SSH_CONTROL_PATH_DIR", cp_path.as_str())];
    let (a, b) = (connections(&none), connections(&none));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x != y),
        "without ControlPersist each run logs in anew: {a:?} {b:?}"
    );
    assert!(sockets(&cp_path).is_empty());
}

#[test]
fn scripts_share_a_host_shell_without_reaching_each_other() {
    let Some(h) = hosts() else { return };
    let run = hfplay(&play_args(h, "host_shell.yml", "shell", &["--json"]));
    run.expect_code(0);
    for host in &h.names {
        assert_eq!(run.stat(host, "failed"), 0, "{}", run.describe());
        // the assert task ran: every check above it held
        assert!(
            run.result("what the scripts saw", host).is_some(),
            "{}",
            run.describe()
        );
    }
}
