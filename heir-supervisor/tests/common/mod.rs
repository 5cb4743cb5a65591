//! Harness for the integration tests: real `heir-supervisor` processes against a real Postgres,
//! a child that records what it does with `CLOCK_MONOTONIC` timestamps, real signals.
//!
//! Postgres: `HEIR_TEST_DSN` if set, else `tests/pg.sh up` (a throwaway local instance). If that
//! fails the tests FAIL, unless `HEIR_TEST_SKIP_PG=1` is set, which skips them loudly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use heir_supervisor::clock::mono_ns;

const BIN: &str = env!("CARGO_BIN_EXE_heir-supervisor");

/// The recording child: `start`/`beat`/`stop` lines with CLOCK_MONOTONIC ns (Python's
/// time.monotonic_ns), a grandchild (`sleep`) to prove the whole group dies, and an exclusive
/// flock held for its whole life: a child that cannot take it at start proves an overlap
/// exactly (the kernel drops the lock when its holder dies).
const CHILD_PY: &str = r#"
import fcntl, os, signal, subprocess, sys, time
rec, member, lockpath = sys.argv[1], sys.argv[2], sys.argv[3]
def w(line):
    fd = os.open(rec, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())
    os.close(fd)
now = time.monotonic_ns
if os.environ.get("HEIR_WARM") == "1":
    w(f"ready {member} {os.getpid()} {now()}")
    line = sys.stdin.readline()
    if not line.startswith("go"):
        sys.exit(0)
    epoch = line.split()[1]
else:
    epoch = os.environ.get("HEIR_EPOCH", "?")
lock = open(lockpath, "w")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    overlap = False
except OSError:
    overlap = True
w(f"start {member} {os.getpid()} {now()} {epoch}")
if overlap:
    w(f"overlap {member} {os.getpid()} {now()}")
gc = subprocess.Popen(["sleep", "1000"])
w(f"grandchild {member} {gc.pid} {now()}")
def term(*_):
    w(f"stop {member} {os.getpid()} {now()}")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    w(f"beat {member} {os.getpid()} {now()}")
    time.sleep(0.02)
"#;

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub kind: String,
    pub member: String,
    pub pid: i32,
    pub ns: u64,
    pub extra: String,
}

/// One child's life as recorded: [start, end] where end is its `stop` line or, when it was
/// SIGKILLed, its last heartbeat.
#[derive(Debug, Clone)]
pub struct Life {
    pub member: String,
    pub pid: i32,
    pub start: u64,
    pub end: u64,
    pub stopped_cleanly: bool,
}

pub struct Member {
    pub name: String,
    pub proc: Child,
    pub log: PathBuf,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub dsn: String,
    pub group: String,
    pub members: Vec<Member>,
    started: Instant,
}

/// The real interpreter (not a version-manager shim, whose start-up would be measured too).
pub fn python() -> String {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_string())
    })
    .clone()
}

pub fn dsn() -> Option<String> {
    if std::env::var("HEIR_TEST_SKIP_PG").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: HEIR_TEST_SKIP_PG=1 (no Postgres for heir-supervisor tests)");
        return None;
    }
    if let Ok(d) = std::env::var("HEIR_TEST_DSN") {
        return Some(d);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "Postgres is required for this test and `tests/pg.sh up` failed \
         (install it: apt-get install -y postgresql; or set HEIR_TEST_DSN, \
         or HEIR_TEST_SKIP_PG=1 to skip):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dsn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!dsn.is_empty(), "tests/pg.sh up printed no DSN");
    Some(dsn)
}

impl Cluster {
    /// A fresh group (unique name) in a fresh directory; `None` when Postgres tests are skipped.
    pub fn new(test: &str) -> Option<Cluster> {
        let dsn = dsn()?;
        let group = format!(
            "{test}-{}-{}",
            std::process::id(),
            mono_ns() % 1_000_000_000
        );
        let dir = std::env::temp_dir().join(format!("heir-test-{group}"));
        fs::create_dir_all(&dir).expect("creating the test directory");
        fs::write(dir.join("child.py"), CHILD_PY).expect("writing child.py");
        fs::write(dir.join("records"), "").expect("creating records");
        Some(Cluster {
            dir,
            dsn,
            group,
            members: Vec::new(),
            started: Instant::now(),
        })
    }

    pub fn records_path(&self) -> PathBuf {
        self.dir.join("records")
    }

    /// Start `heir-supervisor run` for a member, with extra options (e.g. `--ttl`).
    pub fn spawn(&mut self, name: &str, extra: &[&str]) {
        self.spawn_with_dsn(name, extra, &self.dsn.clone());
    }

    pub fn spawn_with_dsn(&mut self, name: &str, extra: &[&str], dsn: &str) {
        let child: Vec<String> = vec![
            python(),
            self.dir.join("child.py").display().to_string(),
            self.records_path().display().to_string(),
            name.to_string(),
            self.dir.join("lock").display().to_string(),
        ];
        self.spawn_cmd(name, extra, dsn, &child);
    }

    /// Start `heir-supervisor run` supervising `command` instead of the recording child.
    pub fn spawn_cmd(&mut self, name: &str, extra: &[&str], dsn: &str, command: &[String]) {
        let log = self.dir.join(format!("{name}.log"));
        let logf = fs::File::create(&log).expect("creating member log");
        let proc = Command::new(BIN)
            .args([
                "run",
                "--group",
                &self.group,
                "--dsn",
                dsn,
                "--member-id",
                name,
            ])
            .args(extra)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .expect("spawning heir-supervisor");
        self.members.push(Member {
            name: name.to_string(),
            proc,
            log,
        });
    }

    /// A member's log so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(&self.member(name).log).unwrap_or_default()
    }

    pub fn pid(&self, name: &str) -> i32 {
        self.member(name).proc.id() as i32
    }

    fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    pub fn signal(&self, name: &str, sig: i32) {
        // SAFETY: kill(2) on a pid we spawned.
        let rc = unsafe { libc::kill(self.pid(name), sig) };
        assert_eq!(rc, 0, "kill({name}, {sig})");
    }

    /// Wait for a member's supervisor to exit; returns its exit code.
    pub fn wait_exit(&mut self, name: &str, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        let m = self
            .members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("member");
        while Instant::now() < until {
            if let Ok(Some(st)) = m.proc.try_wait() {
                return st.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn records(&self) -> Vec<Rec> {
        let text = fs::read_to_string(self.records_path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some(Rec {
                    kind: it.next()?.to_string(),
                    member: it.next()?.to_string(),
                    pid: it.next()?.parse().ok()?,
                    ns: it.next()?.parse().ok()?,
                    extra: it.collect::<Vec<_>>().join(" "),
                })
            })
            .collect()
    }

    pub fn starts(&self) -> Vec<Rec> {
        self.records()
            .into_iter()
            .filter(|r| r.kind == "start")
            .collect()
    }

    /// Poll the records until `pred` holds; panic with the logs when `limit` passes.
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
        let until = Instant::now() + limit;
        loop {
            let recs = self.records();
            if pred(&recs) {
                return recs;
            }
            if Instant::now() >= until {
                self.dump();
                panic!("timed out after {limit:?} waiting for: {what}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `n` members are registered (in the DB).
    pub fn wait_registered(&self, n: usize, limit: Duration) -> serde_json::Value {
        let until = Instant::now() + limit;
        loop {
            let s = self.status();
            let live = s["groups"][0]["members"]
                .as_array()
                .map(|a| a.iter().filter(|m| m["live"] == true).count())
                .unwrap_or(0);
            if live >= n {
                return s;
            }
            if Instant::now() >= until {
                self.dump();
                panic!("timed out waiting for {n} live members: {s}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args([
                "status",
                "--json",
                "--group",
                &self.group,
                "--dsn",
                &self.dsn,
            ])
            .output()
            .expect("running status");
        // 3: no supervisor has created the tables yet (status creates nothing): no members.
        if out.status.code() == Some(3) {
            return serde_json::json!({ "groups": [] });
        }
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Line of succession (live members in order) as the DB sees it.
    pub fn line(&self) -> Vec<String> {
        self.status()["groups"][0]["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|m| m["live"] == true)
                    .filter_map(|m| m["member"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn dump(&self) {
        eprintln!(
            "---- test dir {} (after {:?})",
            self.dir.display(),
            self.started.elapsed()
        );
        for m in &self.members {
            eprintln!("---- {} log:", m.name);
            eprintln!("{}", fs::read_to_string(&m.log).unwrap_or_default());
        }
        let recs = self.records();
        let interesting: Vec<_> = recs.iter().filter(|r| r.kind != "beat").collect();
        eprintln!("---- records (without beats): {interesting:#?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.proc.kill(); // SIGKILL: the guards kill the children
            let _ = m.proc.wait();
        }
        if thread::panicking() {
            self.dump();
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Each child's [start, end] from the records.
pub fn lives(recs: &[Rec]) -> Vec<Life> {
    let mut by_pid: BTreeMap<i32, Life> = BTreeMap::new();
    for r in recs {
        match r.kind.as_str() {
            "start" => {
                by_pid.insert(
                    r.pid,
                    Life {
                        member: r.member.clone(),
                        pid: r.pid,
                        start: r.ns,
                        end: r.ns,
                        stopped_cleanly: false,
                    },
                );
            }
            "beat" | "stop" => {
                if let Some(l) = by_pid.get_mut(&r.pid) {
                    l.end = l.end.max(r.ns);
                    if r.kind == "stop" {
                        l.stopped_cleanly = true;
                    }
                }
            }
            _ => {}
        }
    }
    let mut v: Vec<Life> = by_pid.into_values().collect();
    v.sort_by_key(|l| l.start);
    v
}

/// The proof: no two recorded lives overlap, and no child ever found the lock taken.
pub fn assert_never_two(recs: &[Rec]) {
    let overlaps: Vec<_> = recs.iter().filter(|r| r.kind == "overlap").collect();
    assert!(
        overlaps.is_empty(),
        "a child started while another held the lock: {overlaps:?}"
    );
    let ls = lives(recs);
    for w in ls.windows(2) {
        assert!(
            w[1].start > w[0].end,
            "children overlap: {} (pid {}) lived until {} but {} (pid {}) started at {} ({} ms earlier)",
            w[0].member,
            w[0].pid,
            w[0].end,
            w[1].member,
            w[1].pid,
            w[1].start,
            (w[0].end - w[1].start) / 1_000_000
        );
    }
}

/// Does a process exist (zombies included)?
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Wait until none of the pids exist.
pub fn wait_gone(pids: &[i32], limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if pids.iter().all(|p| !pid_exists(*p)) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A TCP proxy to Postgres that can be cut (existing connections dropped, new ones refused),
/// to partition one supervisor from the database while the others still reach it.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (c2, k2) = (cut.clone(), conns.clone());
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if c2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect((target.0.as_str(), target.1)) else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (inbound.try_clone(), outbound.try_clone()) {
                    if let Ok(mut k) = k2.lock() {
                        k.push(a);
                        k.push(b);
                    }
                }
                pipe(
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                );
                pipe(outbound, inbound);
            }
        });
        Proxy { port, cut, conns }
    }

    /// Blackhole: drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut k) = self.conns.lock() {
            for s in k.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// host/port out of a `key=value` DSN (for the proxy).
pub fn dsn_host_port(dsn: &str) -> (String, u16) {
    let mut host = "127.0.0.1".to_string();
    let mut port = 5432u16;
    for kv in dsn.split_whitespace() {
        if let Some(h) = kv.strip_prefix("host=") {
            host = h.to_string();
        }
        if let Some(p) = kv.strip_prefix("port=") {
            port = p.parse().unwrap_or(5432);
        }
    }
    (host, port)
}

pub fn with_host_port(dsn: &str, host: &str, port: u16) -> String {
    let mut parts: Vec<String> = dsn
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .map(String::from)
        .collect();
    parts.push(format!("host={host}"));
    parts.push(format!("port={port}"));
    parts.join(" ")
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
