//! Shared fixture of the SSH integration tests: real hosts from `tests/hosts.sh`, the real
//! `hfplay` binary, and helpers to look at hosts directly (through `docker exec`, not through
//! the tool under test).
//!
//! The hosts are started once per test binary. Without Docker (or without root to build the
//! image) every test fails with the reason, unless `HF_SKIP_SSH_TESTS=1` is set. Hosts this
//! binary started are removed when it exits (`tests/hosts.sh down-after`), unless
//! `HF_KEEP_TEST_HOSTS=1`; hosts that were already running are left running.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub struct Hosts {
    /// The generated INI inventory (group `hft`).
    pub inventory: PathBuf,
    /// Host names, which are also the container names.
    pub names: Vec<String>,
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

static HOSTS: OnceLock<Result<Hosts, String>> = OnceLock::new();

/// The test hosts, started on first use. `None` (the test returns early) only when
/// `HF_SKIP_SSH_TESTS=1`; a broken environment fails the test with the reason.
pub fn hosts() -> Option<&'static Hosts> {
    if std::env::var("HF_SKIP_SSH_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("HF_SKIP_SSH_TESTS=1: SSH integration test skipped");
        return None;
    }
    match HOSTS.get_or_init(start_hosts) {
        Ok(h) => Some(h),
        Err(e) => {
            panic!("SSH test hosts unavailable (set HF_SKIP_SSH_TESTS=1 to skip these tests):\n{e}")
        }
    }
}

/// Held (shared) for the life of the test binary: the cleanup watcher of whichever binary
/// started the hosts takes it exclusively before removing them, so it waits for every other
/// test binary still using them (cargo runs several in a row).
static IN_USE: OnceLock<std::fs::File> = OnceLock::new();

fn start_hosts() -> Result<Hosts, String> {
    let script = repo().join("tests/hosts.sh");
    let dir = repo().join(".cache/test-hosts");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock =
        std::fs::File::create(dir.join("in-use.lock")).map_err(|e| format!("in-use.lock: {e}"))?;
    lock.lock_shared()
        .map_err(|e| format!("in-use.lock: {e}"))?;
    let _ = IN_USE.set(lock);
    let already_up = Command::new(&script)
        .arg("status")
        .status()
        .is_ok_and(|s| s.success());
    let out = Command::new(&script)
        .arg("up")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "tests/hosts.sh up failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let inventory = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    if !inventory.is_file() {
        return Err(format!(
            "tests/hosts.sh up printed no inventory path: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let text =
        std::fs::read_to_string(&inventory).map_err(|e| format!("{}: {e}", inventory.display()))?;
    let names: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("hft-"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    if names.len() < 3 {
        return Err(format!(
            "the tests need at least 3 hosts, the inventory has {names:?}"
        ));
    }
    if !already_up && std::env::var("HF_KEEP_TEST_HOSTS").map_or(true, |v| v != "1") {
        // Removed when this test binary exits, whatever way it exits.
        let log = std::fs::File::create(repo().join(".cache/test-hosts/down.log"))
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        Command::new("setsid")
            .arg(&script)
            .arg("down-after")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the cleanup watcher: {e}"))?;
    }
    Ok(Hosts { inventory, names })
}

/// One finished hfplay run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

/// Runs the hfplay binary from the repository root.
pub fn hfplay<S: AsRef<str>>(args: &[S]) -> Run {
    hfplay_env(args, &[])
}

/// The Python of the Ansible installation `scripts/ansible-venv.sh` makes (for the fallback).
pub fn ansible_python() -> PathBuf {
    repo().join(".cache/ansible-venv/bin/python")
}

/// [`hfplay`] with extra environment variables.
pub fn hfplay_env<S: AsRef<str>>(args: &[S], env: &[(&str, &str)]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_hfplay"))
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run hfplay");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args,
    }
}

/// (play index, task index, task name, host) of every changed task result.
pub type TaskKey = (usize, usize, String, String);

impl Run {
    pub fn describe(&self) -> String {
        format!(
            "hfplay {}\nexit code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.describe());
        self
    }

    /// The `--json` document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", self.describe()))
    }

    /// Per host: the recap counters (`--json`).
    pub fn stats(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let doc = self.json();
        let mut out = BTreeMap::new();
        for (host, s) in doc["stats"].as_object().into_iter().flatten() {
            let counters = s
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect();
            out.insert(host.clone(), counters);
        }
        out
    }

    pub fn stat(&self, host: &str, counter: &str) -> u64 {
        self.stats()
            .get(host)
            .and_then(|s| s.get(counter).copied())
            .unwrap_or(0)
    }

    /// Every (play, task, host) whose result — or one of whose loop items — has `status`.
    pub fn with_status(&self, status: &str) -> BTreeSet<TaskKey> {
        let doc = self.json();
        let mut out = BTreeSet::new();
        for (pi, play) in doc["plays"].as_array().into_iter().flatten().enumerate() {
            for (ti, task) in play["tasks"].as_array().into_iter().flatten().enumerate() {
                let name = task["task"].as_str().unwrap_or_default().to_string();
                for (host, res) in task["hosts"].as_object().into_iter().flatten() {
                    let results: Vec<&Value> = match res {
                        Value::Array(items) => items.iter().collect(),
                        one => vec![one],
                    };
                    if results.iter().any(|r| r["status"] == status) {
                        out.insert((pi, ti, name.clone(), host.clone()));
                    }
                }
            }
        }
        out
    }

    pub fn changed(&self) -> BTreeSet<TaskKey> {
        self.with_status("changed")
    }

    /// Task names in order (handlers included, as they ran).
    pub fn task_names(&self) -> Vec<String> {
        let doc = self.json();
        doc["plays"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["tasks"].as_array().into_iter().flatten())
            .map(|t| t["task"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The result(s) of the first task named `name` on `host`.
    pub fn result(&self, name: &str, host: &str) -> Option<Value> {
        let doc = self.json();
        doc["plays"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["tasks"].as_array().into_iter().flatten())
            .find(|t| t["task"] == name)
            .and_then(|t| t["hosts"].get(host).cloned())
    }
}

/// Runs a shell script on a test host through `docker exec` (independent of hfplay).
/// Returns (exit code, stdout).
pub fn sh(host: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", host, "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run docker exec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `sh` on every host in parallel; results in host order.
pub fn sh_all(hosts: &Hosts, script: &str) -> Vec<(i32, String)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .names
            .iter()
            .map(|h| s.spawn(move || sh(h, script)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("docker exec thread"))
            .collect()
    })
}

/// Whether `path` exists on `host`.
pub fn exists(host: &str, path: &str) -> bool {
    sh(host, &format!("test -e '{path}'")).0 == 0
}

/// Content of a file on a host (empty when missing).
pub fn read(host: &str, path: &str) -> String {
    sh(host, &format!("cat '{path}' 2>/dev/null")).1
}

/// A test's own area on every host, emptied: `/srv/hft/<tag>`, the user/group `hft<tag>`,
/// the unit `hft-<tag>.service` and `/tmp/hft-<tag>-*`. Tests run in parallel and each uses
/// only its own names, so they can share the hosts.
pub fn reset(hosts: &Hosts, tag: &str) -> String {
    let base = format!("/srv/hft/{tag}");
    let script = format!(
        "systemctl disable --now hft-{tag}.service >/dev/null 2>&1; rm -f /etc/systemd/system/hft-{tag}.service; \
         systemctl daemon-reload; userdel hft{tag} >/dev/null 2>&1; groupdel hft{tag} >/dev/null 2>&1; \
         rm -rf {base} /tmp/hft-{tag}-*; true"
    );
    for (code, _) in sh_all(hosts, &script) {
        assert_eq!(code, 0, "reset of {tag} failed");
    }
    base
}

/// hfplay arguments for a fixture playbook on the test hosts with the test's own variables.
pub fn play_args(hosts: &Hosts, playbook: &str, tag: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        fixture(playbook).to_string_lossy().into_owned(),
        "-i".into(),
        hosts.inventory.to_string_lossy().into_owned(),
        "-e".into(),
        format!("base=/srv/hft/{tag}"),
        "-e".into(),
        format!("tag={tag}"),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
