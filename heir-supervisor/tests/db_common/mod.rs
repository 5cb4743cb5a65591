//! Shared harness of the DB failover tests: a real PostgreSQL pair in two network namespaces
//! (tests/pgpair.sh), three witnesses and two `heir-supervisor db node` processes, a writer
//! through the floating IP that records every acknowledged commit.
//!
//! Needs root and the PostgreSQL 15 server binaries. Without them the tests FAIL, unless
//! `HEIR_DB_TESTS_SKIP=1` is set (then they print why and pass).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heir_supervisor::db::http::{fetch, Secret};
use heir_supervisor::db::view::{NodeState, View};
use tokio_postgres::NoTls;

pub const BIN: &str = env!("CARGO_BIN_EXE_heir-supervisor");

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pgpair.sh")
}

/// None: skipped on purpose. Panics when the prerequisites are missing without the skip flag.
pub fn prerequisites(test: &str) -> Option<()> {
    let skip = std::env::var("HEIR_DB_TESTS_SKIP").is_ok_and(|v| v == "1");
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (network namespaces, iptables)".to_string());
    }
    if !Path::new("/usr/lib/postgresql/15/bin/pg_rewind").exists() {
        missing.push("PostgreSQL 15 server (apt-get install -y postgresql)".to_string());
    }
    for tool in ["ip", "iptables", "runuser"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return Some(());
    }
    if skip {
        eprintln!(
            "{test}: SKIPPED (HEIR_DB_TESTS_SKIP=1): missing {}",
            missing.join(", ")
        );
        return None;
    }
    panic!(
        "{test}: cannot run, missing {} (set HEIR_DB_TESTS_SKIP=1 to skip on purpose)",
        missing.join(", ")
    );
}

/// Abort the whole test process if it runs too long (every test is bounded).
pub fn watchdog(limit: Duration, pair: u8) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; tearing down pair {pair}");
        let _ = Command::new(script())
            .arg("down")
            .env("HF_PAIR", pair.to_string())
            .status();
        std::process::exit(101);
    });
}

pub struct Pair {
    pub n: u8,
    pub dir: PathBuf,
    pub secret: PathBuf,
    /// Configuration outside the data directory, start/stop by command (Debian's shape).
    pub debian: bool,
    procs: Vec<(String, Child)>,
}

impl Pair {
    pub fn net(&self) -> String {
        format!("10.213.{}", self.n)
    }
    pub fn addr(&self, node: &str) -> String {
        format!("{}.{}", self.net(), if node == "a" { 11 } else { 12 })
    }
    pub fn vip(&self) -> String {
        format!("{}.100", self.net())
    }
    pub fn ns(&self, node: &str) -> String {
        format!("hfp{}{node}", self.n)
    }
    pub fn node_url(&self, node: &str) -> String {
        format!("http://{}:7433", self.addr(node))
    }
    pub fn witness_url(&self, i: usize) -> String {
        format!("http://{}.1:{}", self.net(), 7440 + i)
    }

    pub fn up(n: u8) -> Pair {
        Pair::up_layout(n, false)
    }

    /// A pair with Debian's layout: the node supervisors then use --pg-start-cmd,
    /// --pg-stop-cmd and --pg-config-file (pg_rewind --config-file).
    pub fn up_debian(n: u8) -> Pair {
        Pair::up_layout(n, true)
    }

    fn up_layout(n: u8, debian: bool) -> Pair {
        let out = Command::new(script())
            .arg("up")
            .env("HF_PAIR", n.to_string())
            .env("HF_PAIR_LAYOUT", if debian { "debian" } else { "plain" })
            .output()
            .expect("running tests/pgpair.sh");
        assert!(
            out.status.success(),
            "pgpair.sh up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(format!("/tmp/heir-pair-{n}"));
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("test-secret-{n}-{}\n", std::process::id())).unwrap();
        // The supervisor refuses a secret file that other users may read.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        Pair {
            n,
            dir,
            secret,
            debian,
            procs: Vec::new(),
        }
    }

    fn spawn(&mut self, label: &str, ns: Option<&str>, args: &[String], env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.join(format!("sup-{label}.log"))).unwrap();
        let err = log.try_clone().unwrap();
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        // The supervisors die with the test process, even when the watchdog ends it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawning heir-supervisor");
        self.procs.push((label.to_string(), child));
    }

    fn nodes_args(&self) -> Vec<String> {
        vec![
            "--node".into(),
            format!("a={}:5432", self.addr("a")),
            "--node".into(),
            format!("b={}:5432", self.addr("b")),
            "--secret-file".into(),
            self.secret.display().to_string(),
        ]
    }

    pub fn start_witnesses(&mut self) {
        for i in 1..=3 {
            let mut args: Vec<String> = vec![
                "db".into(),
                "witness".into(),
                "--name".into(),
                format!("w{i}"),
            ];
            args.extend(self.nodes_args());
            args.extend([
                "--listen".into(),
                format!("{}.1:{}", self.net(), 7440 + i),
                "--monitor-user".into(),
                "heir".into(),
            ]);
            self.spawn(&format!("w{i}"), None, &args, &[]);
        }
    }

    pub fn start_node(&mut self, node: &str) {
        self.start_node_with(node, &[], &[]);
    }

    /// [`Pair::start_node`] with more arguments (e.g. `--vip-driver aws`) and environment.
    pub fn start_node_with(&mut self, node: &str, extra: &[String], env: &[(&str, &str)]) {
        let other = if node == "a" { "b" } else { "a" };
        let d = self.dir.display().to_string();
        let mut args: Vec<String> = vec!["db".into(), "node".into(), "--name".into(), node.into()];
        args.extend(self.nodes_args());
        args.extend([
            "--listen".into(),
            format!("{}:7433", self.addr(node)),
            "--peer-url".into(),
            self.node_url(other),
            "--admin-user".into(),
            "heir".into(),
            "--replication-user".into(),
            "heir".into(),
            "--pgdata".into(),
            format!("{d}/{node}"),
            "--pg-bindir".into(),
            "/usr/lib/postgresql/15/bin".into(),
            "--pg-log".into(),
            format!("{d}/{node}.log"),
            "--vip".into(),
            format!("{}/24", self.vip()),
            "--vip-dev".into(),
            "eth0".into(),
        ]);
        let opts = format!("-c cluster_name={node} -k {d}/sock-{node}");
        if self.debian {
            let ctl = "runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl";
            args.extend([
                "--pg-start-cmd".into(),
                format!("{ctl} -D {d}/etc-{node} -l {d}/{node}.log -w -t 60 -o '{opts}' start"),
                "--pg-stop-cmd".into(),
                format!("{ctl} -D {d}/{node} -m fast -w -t 20 stop"),
                "--pg-config-file".into(),
                format!("{d}/etc-{node}/postgresql.conf"),
            ]);
        } else {
            args.extend(["--pg-ctl-opts".into(), opts]);
        }
        for i in 1..=3 {
            args.push("--witness".into());
            args.push(self.witness_url(i));
        }
        args.extend(extra.iter().cloned());
        self.spawn(node, Some(&self.ns(node)), &args, env);
    }

    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("sup-{label}.log"))).unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for l in ["a", "b", "w1"] {
            eprintln!("----- sup-{l}.log (tail) -----");
            let log = self.log(l);
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(25)..] {
                eprintln!("{line}");
            }
        }
    }

    /// SIGKILL the node's postmaster and all its children (a crash of PostgreSQL).
    pub fn kill_postgres(&self, node: &str) -> i32 {
        let pidfile = self.dir.join(node).join("postmaster.pid");
        let text = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
        let pid: i32 = text.lines().next().unwrap().trim().parse().unwrap();
        let _ = Command::new("pkill")
            .args(["-9", "-P", &pid.to_string()])
            .status();
        // SAFETY: kill(2) on the postmaster's pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        pid
    }

    /// Does the node's namespace hold the floating IP?
    pub fn holds_vip(&self, node: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns(node), "-o", "-4", "addr", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {}/", self.vip()))
    }

    /// Cut node `from`'s namespace off from `to`'s address (both directions).
    pub fn partition(&self, from: &str, to: &str, on: bool) {
        let op = if on { "-A" } else { "-D" };
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            let st = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns(from),
                    "iptables",
                    op,
                    chain,
                    dir,
                    &self.addr(to),
                    "-j",
                    "DROP",
                ])
                .status()
                .unwrap();
            assert!(st.success(), "iptables {op} {chain} in {from}");
        }
    }

    /// Cut the node's namespace off the network entirely (loopback still works): the
    /// `docker network disconnect` of a host, in one namespace.
    pub fn isolate(&self, node: &str, on: bool) {
        let op = if on { "-A" } else { "-D" };
        for (chain, iface) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            let st = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns(node),
                    "iptables",
                    op,
                    chain,
                    "!",
                    iface,
                    "lo",
                    "-j",
                    "DROP",
                ])
                .status()
                .unwrap();
            assert!(st.success(), "iptables {op} {chain} in {node}");
        }
    }

    /// Cut the node's namespace off from the bridge address (the witnesses and the writer
    /// live there) while the two DB nodes still see each other.
    pub fn hide_from_witnesses(&self, node: &str, on: bool) {
        let op = if on { "-A" } else { "-D" };
        let bridge = format!("{}.1", self.net());
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            let st = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns(node),
                    "iptables",
                    op,
                    chain,
                    dir,
                    &bridge,
                    "-j",
                    "DROP",
                ])
                .status()
                .unwrap();
            assert!(st.success(), "iptables {op} {chain} in {node}");
        }
    }

    pub async fn view(&self, url: &str) -> Option<View> {
        let secret = Secret::from_file(&self.secret).ok()?;
        let body = fetch(url, &secret, Duration::from_secs(2)).await.ok()?;
        serde_json::from_slice(&body).ok()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var("HEIR_DB_TESTS_KEEP").is_ok_and(|v| v == "1") {
            eprintln!(
                "HEIR_DB_TESTS_KEEP=1: pair {} left in {}",
                self.n,
                self.dir.display()
            );
            return;
        }
        let _ = Command::new(script())
            .arg("down")
            .env("HF_PAIR", self.n.to_string())
            .status();
    }
}

pub async fn sql_one(host: &str, sql: &str) -> Result<Option<String>, String> {
    let conn = format!("host={host} port=5432 user=heir dbname=postgres connect_timeout=2");
    let fut = async {
        let (c, conn) = tokio_postgres::connect(&conn, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let rows = c.simple_query(sql).await.map_err(|e| e.to_string())?;
        for m in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                return Ok(r.get(0).map(str::to_string));
            }
        }
        Ok(None)
    };
    tokio::time::timeout(Duration::from_secs(4), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

pub async fn is_primary(host: &str) -> Option<bool> {
    match sql_one(host, "SELECT pg_is_in_recovery()").await {
        Ok(Some(v)) => Some(v == "f"),
        _ => None,
    }
}

/// Poll `check` until it holds or `limit` passes; returns the time it took.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if check().await {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// The pair is healthy: `primary` holds the VIP, `standby` is its sync standby and eligible.
pub async fn wait_healthy(pair: &Pair, primary: &str, standby: &str, limit: Duration) {
    let p = pair.addr(primary);
    let url = pair.node_url(standby);
    wait_for(&format!("{primary} primary with the VIP, {standby} eligible sync standby"), limit, || {
        let p = p.clone();
        let url = url.clone();
        async move {
            let sync = sql_one(
                &p,
                &format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{standby}'"),
            )
            .await;
            let eligible = pair
                .view(&url)
                .await
                .and_then(|v| v.report)
                .is_some_and(|r| r.eligible && r.state == NodeState::Standby);
            sync == Ok(Some("sync".into())) && eligible && pair.holds_vip(primary) && !pair.holds_vip(standby)
        }
    })
    .await;
}

/// Writes through the floating IP; records each acknowledged commit with its time.
pub struct Writer {
    /// (id, issued, acknowledged)
    pub acked: Arc<Mutex<Vec<(i64, Instant, Instant)>>>,
    pub errors: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub async fn start(vip: &str) -> Writer {
        let conn_str = format!("host={vip} port=5432 user=heir dbname=postgres connect_timeout=2");
        // The table comes through the VIP too.
        let (c, conn) = tokio_postgres::connect(&conn_str, NoTls)
            .await
            .expect("connect via VIP");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        c.batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
            .await
            .expect("create table");
        // Ids continue after earlier writers' rows.
        let base: i64 = c
            .query_one("SELECT coalesce(max(id), 0) FROM acked", &[])
            .await
            .expect("max id")
            .get(0);
        drop(c);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, e, s) = (acked.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut next: i64 = base + 1;
            let mut client: Option<tokio_postgres::Client> = None;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    match tokio::time::timeout(
                        // Our own bound (libpq's connect_timeout is at least 2 s): measures resumption
                        // to within half a second while nobody answers for the floating IP.
                        Duration::from_millis(500),
                        tokio_postgres::connect(&conn_str, NoTls),
                    )
                    .await
                    {
                        Ok(Ok((c, conn))) => {
                            tokio::spawn(async move {
                                let _ = conn.await;
                            });
                            client = Some(c);
                        }
                        _ => {
                            *e.lock().unwrap() += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = &client else { continue };
                let id = next;
                next += 1;
                let issued = Instant::now();
                // A commit that does not come back within the bound is not acknowledged.
                let res = tokio::time::timeout(
                    Duration::from_secs(3),
                    c.execute("INSERT INTO acked (id) VALUES ($1)", &[&id]),
                )
                .await;
                match res {
                    Ok(Ok(1)) => a.lock().unwrap().push((id, issued, Instant::now())),
                    _ => {
                        *e.lock().unwrap() += 1;
                        client = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Writer {
            acked,
            errors,
            stop,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// First acknowledged commit after `t`.
    pub fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            // Issued after `t`: a commit sent before a kill may be acknowledged just after it.
            .find(|(_, issued, _)| *issued > t)
            .map(|(_, _, acked)| *acked)
    }

    pub async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _, _)| *id)
            .collect()
    }
}

/// How many of `ids` are missing on `host`.
pub async fn missing(host: &str, ids: &[i64]) -> usize {
    let conn = format!("host={host} port=5432 user=heir dbname=postgres connect_timeout=2");
    let (c, conn) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("connect for the check");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = c
        .query_one("SELECT count(*) FROM acked WHERE id = ANY($1)", &[&ids])
        .await
        .expect("count acked");
    let found: i64 = row.get(0);
    ids.len() - usize::try_from(found).unwrap_or(0)
}
