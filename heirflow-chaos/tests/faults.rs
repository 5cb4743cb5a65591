//! Every fault kind applied to a real host and healed: `heirflow-chaos fault` against the first
//! container of `tests/hosts.sh` (systemd, sshd), its effect read with `docker inspect`/`exec`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static IN_USE: OnceLock<std::fs::File> = OnceLock::new();

/// The test hosts, started if needed (and then removed when this binary exits), shared with
/// the other test binaries through the same in-use lock as `tests/support/mod.rs`.
fn host() -> &'static str {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        let dir = repo().join(".cache/test-hosts");
        std::fs::create_dir_all(&dir).expect("cache dir");
        let lock = std::fs::File::create(dir.join("in-use.lock")).expect("lock file");
        lock.lock_shared().expect("lock");
        let _ = IN_USE.set(lock);
        let script = repo().join("tests/hosts.sh");
        let already = Command::new(&script)
            .arg("status")
            .status()
            .is_ok_and(|s| s.success());
        let out = Command::new(&script)
            .arg("up")
            .stdin(Stdio::null())
            .output()
            .expect("tests/hosts.sh up");
        assert!(
            out.status.success(),
            "tests/hosts.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !already {
            // The watcher outlives this process on purpose: it removes the hosts after it.
            #[allow(clippy::zombie_processes)]
            Command::new("setsid")
                .arg(&script)
                .arg("down-after")
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cleanup watcher");
        }
    });
    "hft-1"
}

fn chaos(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_heirflow-chaos"))
        .args(args)
        .output()
        .expect("heirflow-chaos");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn inspect(host: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Paused}} {{with index .NetworkSettings.Networks \"heirflow-test\"}}{{.IPAddress}}{{end}}",
        host,
    ])
}

/// Applies a fault for `secs` in a background process and reads the host while it holds.
fn during(
    kind: &str,
    extra: &[&str],
    secs: &str,
    probe: impl FnOnce() -> String,
) -> (String, String) {
    let h = host();
    let mut args = vec![
        "fault",
        "--host",
        h,
        "--kind",
        kind,
        "--duration",
        secs,
        "--network",
        "heirflow-test",
    ];
    args.extend_from_slice(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_heirflow-chaos"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("heirflow-chaos");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let seen = probe();
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (seen, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_fault_kind_holds_then_heals() {
    let h = host();
    let healthy = inspect(h);
    assert!(healthy.starts_with("true false 172.31.0."), "{healthy}");
    let ip = healthy.rsplit(' ').next().unwrap_or_default().to_string();

    let (seen, out) = during("crash", &[], "3", || inspect(h));
    assert!(seen.starts_with("false"), "crash: {seen}");
    assert!(out.contains("healed"), "{out}");
    assert_eq!(inspect(h), healthy, "after the crash");

    let (seen, _) = during("freeze", &[], "3", || inspect(h));
    assert!(seen.starts_with("true true"), "freeze: {seen}");
    assert_eq!(inspect(h), healthy, "after the freeze");

    let (seen, _) = during("partition", &[], "3", || inspect(h));
    assert_eq!(seen, "true false", "partition: {seen}");
    assert_eq!(
        inspect(h),
        format!("true false {ip}"),
        "reconnected with its address"
    );

    let (seen, _) = during("netem", &[], "3", || {
        docker(&["exec", h, "tc", "qdisc", "show"])
    });
    assert!(
        seen.contains("netem") || seen.contains("tbf"),
        "netem: {seen}"
    );
    let after = docker(&["exec", h, "tc", "qdisc", "show"]);
    assert!(
        !after.contains("netem") && !after.contains("tbf"),
        "{after}"
    );

    let pid = || {
        docker(&[
            "exec",
            h,
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "ssh.service",
        ])
    };
    let before = pid();
    let (ok, out) = chaos(&[
        "fault",
        "--host",
        h,
        "--kind",
        "kill9",
        "--unit",
        "ssh.service",
        "--network",
        "heirflow-test",
    ]);
    assert!(ok, "{out}");
    let mut restarted = String::new();
    for _ in 0..40 {
        restarted = pid();
        if restarted != before && restarted != "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        restarted != before && restarted != "0",
        "sshd {before} was not killed and restarted ({restarted})"
    );
}

#[test]
fn unknown_kind_and_unknown_host_are_refused() {
    let (ok, out) = chaos(&["fault", "--host", "hft-1", "--kind", "meteor"]);
    assert!(
        !ok && out.contains("unknown fault kind \"meteor\""),
        "{out}"
    );
    let (ok, out) = chaos(&[
        "fault",
        "--host",
        "no-such-host",
        "--kind",
        "freeze",
        "--duration",
        "0",
    ]);
    assert!(!ok && out.contains("no-such-host"), "{out}");
}
