//! `heir-supervisor db`: automatic PostgreSQL failover with a floating IP, no split brain and
//! no acknowledged commit lost.
//!
//! * `db node` runs on both DB hosts: it supervises the local PostgreSQL, promotes the
//!   synchronous standby when a majority of voters lost the primary, moves the floating IP
//!   ([`crate::vip`]), fences an isolated primary, rejoins an old primary with `pg_rewind`, and
//!   manages `synchronous_standby_names`. The rules and why they are safe: [`rules`].
//! * `db witness` runs on a few other hosts (e.g. the queue hosts): it probes both DB nodes
//!   every interval and serves what it saw on an authenticated endpoint ([`http`]).
//! * `db status` prints a voter's view.
//!
//! Rooms: [`probe`] (SQL), [`view`] (what a voter saw), [`rules`] (the pure decision),
//! [`pg`] (start/stop/rewind), [`node`] (the loop), [`http`] (the signed endpoint).

/// An enum read from text (a PostgreSQL view, a voter's JSON). Parsing never fails: a value
/// this version does not know (or `''` for a NULL) is kept as `Other`, which no rule treats as
/// a state it acts on (not streaming, not sync): it can only make a standby less eligible,
/// never more. Failing instead would fail the probe, which the votes read as "unreachable".
/// Display and serde give back the original text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($variant,)+
            Other(String),
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(s),
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::Other(String::new())
            }
        }
    };
}

pub mod http;
pub mod node;
pub mod pg;
pub mod probe;
pub mod rules;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use futures_util::future::join_all;

use crate::clock::parse_duration;
use crate::news::{News, NewsArgs};
use crate::pg_tls::PgTls;
use crate::vip::{DriverKind, Vip, VipAddr};
use http::Secret;
use probe::{Creds, NodeAddr};
use view::{Observer, View};

/// Arguments of `heir-supervisor db`.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DbCommand {
    /// Supervise this host's PostgreSQL: failover, floating IP, fencing, rejoin (DB hosts).
    Node(Box<NodeArgs>),
    /// Vote on the primary's reachability for the DB nodes (a few other hosts).
    Witness(WitnessArgs),
    /// Print a voter's view (what it sees of both nodes; a node adds its own report).
    Status(StatusArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// This voter's name (default: the host name). On a node: its entry in --node.
    #[arg(long)]
    pub name: Option<String>,
    /// A database node, `NAME=HOST:PORT` (twice). NAME is its cluster_name, which is also
    /// its application_name as a standby.
    #[arg(long = "node", required = true, num_args = 1)]
    pub nodes: Vec<NodeAddr>,
    /// Address of this voter's endpoint.
    #[arg(long, default_value = "0.0.0.0:7433")]
    pub listen: SocketAddr,
    /// Shared secret of all voters (HMAC key; at least 16 characters).
    #[arg(long = "secret-file", env = "HEIR_DB_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// Probe period.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
    /// Bound of one probe (connect + query).
    #[arg(long = "probe-timeout", default_value = "1", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Database the probes connect to.
    #[arg(long, default_value = "postgres")]
    pub dbname: String,
    /// CA certificate(s) (PEM) of the PostgreSQL servers: every probe and admin connection
    /// then uses TLS and verifies the server's certificate and address (libpq's verify-full).
    /// Absent: plain connections.
    #[arg(long = "pg-ca-file", env = "HEIR_PG_CA_FILE")]
    pub pg_ca_file: Option<PathBuf>,
}

impl CommonArgs {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(crate::hostname)
    }
    fn secret(&self) -> Result<Secret> {
        Secret::from_file(&self.secret_file)
    }
    /// How probes connect; the CA is read once, here, so a bad file fails the start. A public
    /// certificate: no private-file mode check.
    fn pg_tls(&self) -> Result<PgTls> {
        PgTls::from_ca_file(self.pg_ca_file.as_deref()).context("--pg-ca-file (HEIR_PG_CA_FILE)")
    }
    fn check_nodes(&self) -> Result<()> {
        if self.nodes.len() != 2 || self.nodes[0].name == self.nodes[1].name {
            bail!("give exactly two --node NAME=HOST:PORT with different names");
        }
        Ok(())
    }
}

fn read_password(path: &Option<PathBuf>) -> Result<Option<String>> {
    match path {
        None => Ok(None),
        Some(p) => Ok(Some(
            crate::private_file::read(p, "password file")?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct WitnessArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Login of the probes (any role that may connect; no privileges needed).
    #[arg(long = "monitor-user", default_value = "heir_monitor")]
    pub monitor_user: String,
    /// File holding that login's password.
    #[arg(long = "monitor-password-file")]
    pub monitor_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A witness's endpoint, `http://HOST:PORT` (repeat; at least one).
    #[arg(long = "witness", required = true, num_args = 1)]
    pub witnesses: Vec<String>,
    /// The peer node supervisor's endpoint (`http://HOST:PORT`): its view confirms this node
    /// as primary and its report says whether it may promote.
    #[arg(long = "peer-url")]
    pub peer_url: Option<String>,
    /// Superuser login for the local node (promote, ALTER SYSTEM, CHECKPOINT) and for probing
    /// the peer and `pg_rewind` from it.
    #[arg(long = "admin-user", default_value = "postgres")]
    pub admin_user: String,
    /// File holding that login's password (none: trust/peer/.pgpass).
    #[arg(long = "admin-password-file")]
    pub admin_password_file: Option<PathBuf>,
    /// Host for the local PostgreSQL (its port comes from --node).
    #[arg(long = "local-host", default_value = "127.0.0.1")]
    pub local_host: String,
    /// Data directory of the local PostgreSQL.
    #[arg(long)]
    pub pgdata: PathBuf,
    /// Directory of pg_ctl, pg_rewind.
    #[arg(long = "pg-bindir", default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bindir: PathBuf,
    /// OS user owning the data directory.
    #[arg(long = "pg-user", default_value = "postgres")]
    pub pg_user: String,
    /// Shell command starting PostgreSQL (Debian: `systemctl start postgresql@15-main`).
    /// Default: `pg_ctl -D PGDATA -l LOG -w start` as --pg-user.
    #[arg(long = "pg-start-cmd")]
    pub pg_start_cmd: Option<String>,
    /// Shell command stopping it (default: `pg_ctl -m fast stop`; SIGKILL if it fails).
    #[arg(long = "pg-stop-cmd")]
    pub pg_stop_cmd: Option<String>,
    /// `pg_ctl -o` options for the default start (node-specific settings).
    #[arg(long = "pg-ctl-opts", allow_hyphen_values = true)]
    pub pg_ctl_opts: Option<String>,
    /// postgresql.conf when outside the data directory (Debian:
    /// /etc/postgresql/15/main/postgresql.conf), for pg_rewind --config-file.
    #[arg(long = "pg-config-file")]
    pub pg_config_file: Option<PathBuf>,
    /// Server log of the default start (default: PGDATA.log).
    #[arg(long = "pg-log")]
    pub pg_log: Option<PathBuf>,
    /// Replication login written into primary_conninfo on rejoin (password: ~/.pgpass).
    #[arg(long = "replication-user", default_value = "replicator")]
    pub replication_user: String,
    /// Extra libpq options for every connection to the peer that PostgreSQL's own tools make:
    /// primary_conninfo, pg_basebackup and pg_rewind (e.g. `sslmode=verify-full
    /// sslrootcert=/etc/heirflow/tls/ca.crt`).
    #[arg(long = "primary-conninfo-extra")]
    pub primary_conninfo_extra: Option<String>,
    /// synchronous_standby_names while a standby streams (default: `FIRST 1 (n1, n2)`).
    #[arg(long = "sync-names")]
    pub sync_names: Option<String>,
    /// Floating IP, `ADDRESS/PREFIX`.
    #[arg(long)]
    pub vip: Option<VipAddr>,
    #[arg(long = "vip-driver", value_enum, default_value = "linux")]
    pub vip_driver: DriverKind,
    /// Interface for the floating IP; `auto`: the one with an address in its network.
    #[arg(long = "vip-dev", default_value = "auto")]
    pub vip_dev: String,
    /// Voters must have seen the primary unreachable this long before a promotion.
    #[arg(long = "failover-after", default_value = "3", value_parser = parse_duration)]
    pub failover_after: Duration,
    /// An unconfirmed primary without a streaming standby fences itself after this.
    #[arg(long = "fence-after", default_value = "2", value_parser = parse_duration)]
    pub fence_after: Duration,
    /// A standby may promote only if it was the live synchronous standby this recently.
    #[arg(long = "sync-window", default_value = "10", value_parser = parse_duration)]
    pub sync_window: Duration,
    /// A primary without a live standby this long stops requiring one (> --sync-window).
    #[arg(long = "degrade-after", default_value = "13", value_parser = parse_duration)]
    pub degrade_after: Duration,
    /// A crashed primary whose standby may promote waits this long before restarting.
    #[arg(long = "restart-hold", default_value = "15", value_parser = parse_duration)]
    pub restart_hold: Duration,
    /// A standby is live if it replied within this (needs wal_receiver_status_interval=1s,
    /// which the supervisor sets).
    #[arg(long = "replica-fresh", default_value = "3", value_parser = parse_duration)]
    pub replica_fresh: Duration,
    #[command(flatten)]
    pub news: NewsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The voter's endpoint, `http://HOST:PORT` (repeat for several).
    #[arg(long = "url", required = true, num_args = 1)]
    pub urls: Vec<String>,
    #[arg(long = "secret-file", env = "HEIR_DB_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// Print the raw JSON views.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DbArgs) -> Result<i32> {
    match args.command {
        DbCommand::Node(a) => run_node(*a).await,
        DbCommand::Witness(a) => run_witness(a).await,
        DbCommand::Status(a) => run_status(a).await,
    }
}

async fn run_witness(a: WitnessArgs) -> Result<i32> {
    a.common.check_nodes()?;
    let secret = a.common.secret()?;
    let creds = Creds {
        user: a.monitor_user.clone(),
        password: read_password(&a.monitor_password_file)?,
        dbname: a.common.dbname.clone(),
        tls: a.common.pg_tls()?,
    };
    let name = a.common.name();
    let obs = Arc::new(Observer::new(&name, "witness", a.common.interval));
    let served = obs.clone();
    http::serve(a.common.listen, secret, move || served.view_json()).await?;
    crate::log::info(&format!(
        "db witness {name}: probing {} ({})",
        a.common
            .nodes
            .iter()
            .map(|n| format!("{}={}:{}", n.name, n.host, n.port))
            .collect::<Vec<_>>()
            .join(", "),
        creds.tls.describe()
    ));
    let mut ticker = tokio::time::interval(a.common.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let mut last: Vec<bool> = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = sigterm.recv() => return Ok(0),
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        let results = join_all(
            a.common
                .nodes
                .iter()
                .map(|n| probe::probe(&n.host, n.port, &creds, false, a.common.probe_timeout)),
        )
        .await;
        let now: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
        for (n, r) in a.common.nodes.iter().zip(&results) {
            obs.record(&n.name, r);
        }
        if now != last {
            let summary: Vec<String> = a
                .common
                .nodes
                .iter()
                .zip(&results)
                .map(|(n, r)| match r {
                    Ok(st) if st.in_recovery => format!("{}: standby", n.name),
                    Ok(st) => format!(
                        "{}: primary (timeline {})",
                        n.name,
                        st.timeline.unwrap_or(0)
                    ),
                    Err(e) => format!("{}: unreachable ({e:#})", n.name),
                })
                .collect();
            crate::log::info(&summary.join("; "));
            last = now;
        }
    }
}

async fn run_node(a: NodeArgs) -> Result<i32> {
    a.common.check_nodes()?;
    let name = a.common.name();
    let me = a
        .common
        .nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .with_context(|| format!("--name {name} is not one of the --node names"))?;
    let peer = a
        .common
        .nodes
        .iter()
        .find(|n| n.name != name)
        .cloned()
        .context("no peer node")?;
    let params = rules::Params {
        failover_after: a.failover_after,
        fence_after: a.fence_after,
        sync_window: a.sync_window,
        degrade_after: a.degrade_after,
        restart_hold: a.restart_hold,
        replica_fresh: a.replica_fresh,
        witnesses: a.witnesses.len(),
    };
    params.validate().map_err(anyhow::Error::msg)?;
    for u in a.witnesses.iter().chain(a.peer_url.iter()) {
        if !u.starts_with("http://") {
            bail!("{u:?}: voter URLs look like http://HOST:PORT");
        }
    }
    let secret = a.common.secret()?;
    let tls = a.common.pg_tls()?;
    let sync_names = a.sync_names.clone().unwrap_or_else(|| {
        let mut names: Vec<&str> = a.common.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        format!("FIRST 1 ({})", names.join(", "))
    });
    let pgdata = a.pgdata.clone();
    let log_file = a
        .pg_log
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.log", pgdata.display())));
    let vip = Vip::new(a.vip_driver, a.vip, &a.vip_dev).await?;
    let observer = Arc::new(Observer::new(&me.name, "node", a.common.interval));
    let served = observer.clone();
    http::serve(a.common.listen, secret.clone(), move || served.view_json()).await?;
    let node = node::Node {
        me,
        peer,
        local_host: a.local_host.clone(),
        admin: Creds {
            user: a.admin_user.clone(),
            password: read_password(&a.admin_password_file)?,
            dbname: a.common.dbname.clone(),
            tls,
        },
        replication_user: a.replication_user.clone(),
        conninfo_extra: a.primary_conninfo_extra.clone(),
        sync_names,
        witnesses: a.witnesses.clone(),
        peer_url: a.peer_url.clone(),
        secret,
        interval: a.common.interval,
        probe_timeout: a.common.probe_timeout,
        params,
        pg: pg::PgCtl {
            pgdata,
            bindir: a.pg_bindir.clone(),
            user: a.pg_user.clone(),
            start_cmd: a.pg_start_cmd.clone(),
            stop_cmd: a.pg_stop_cmd.clone(),
            ctl_opts: a.pg_ctl_opts.clone(),
            config_file: a.pg_config_file.clone(),
            log_file,
        },
        vip,
        news: News::from_args(&a.news)?,
        observer,
        last_local_error: std::sync::Mutex::new(String::new()),
        voter_errors: crate::log::Throttle::default(),
    };
    node.run().await
}

async fn run_status(a: StatusArgs) -> Result<i32> {
    let secret = Secret::from_file(&a.secret_file)?;
    let mut failed = 0;
    for url in &a.urls {
        let res = http::fetch(url, &secret, Duration::from_secs(3))
            .await
            .and_then(|b| serde_json::from_slice::<View>(&b).context("bad view JSON"));
        match res {
            Ok(v) if a.json => println!("{}", serde_json::to_string(&v)?),
            Ok(v) => print_view(url, &v),
            Err(e) => {
                failed += 1;
                eprintln!("{url}: {e:#}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn print_view(url: &str, v: &View) {
    println!("{} ({}) at {url}", v.voter, v.kind);
    for (name, s) in &v.nodes {
        let what = match (s.reachable, s.primary) {
            (true, Some(true)) => format!("primary, timeline {}", s.timeline.unwrap_or(0)),
            (true, _) => "standby".to_string(),
            (false, _) => format!("UNREACHABLE ({})", s.error.as_deref().unwrap_or("?")),
        };
        println!(
            "  {name:<12} {what} for {:.1}s (probed {:.1}s ago)",
            s.for_ms as f64 / 1000.0,
            s.age_ms as f64 / 1000.0
        );
    }
    if let Some(r) = &v.report {
        println!(
            "  report: {} {}{}{} — {}",
            r.name,
            r.state,
            if r.eligible { ", eligible" } else { "" },
            if r.holds_vip {
                ", holds the floating IP"
            } else {
                ""
            },
            r.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: DbCommand,
    }

    #[test]
    fn node_arguments_parse() {
        let t = T::try_parse_from([
            "db",
            "node",
            "--name",
            "a",
            "--node",
            "a=10.0.0.1:5432",
            "--node",
            "b=10.0.0.2:5432",
            "--secret-file",
            "/s",
            "--witness",
            "http://w1:7433",
            "--pgdata",
            "/d",
            "--vip",
            "10.0.0.100/24",
            "--pg-ctl-opts",
            "-c cluster_name=a",
        ])
        .unwrap();
        let DbCommand::Node(n) = t.cmd else {
            panic!("not node")
        };
        assert_eq!(n.common.nodes.len(), 2);
        assert_eq!(n.vip.map(|v| v.prefix), Some(24));
        assert_eq!(n.failover_after, Duration::from_secs(3));
        assert_eq!(n.pg_ctl_opts.as_deref(), Some("-c cluster_name=a"));
    }

    use crate::private_file::TempFile;

    #[test]
    fn password_file_is_read_when_private() {
        let f = TempFile::new("pw-private", "s3cret pass\r\n", 0o600);
        assert_eq!(
            read_password(&Some(f.0.clone())).unwrap().as_deref(),
            Some("s3cret pass")
        );
        let f = TempFile::new("pw-owner-only", "x\n", 0o400);
        assert_eq!(
            read_password(&Some(f.0.clone())).unwrap().as_deref(),
            Some("x")
        );
        assert_eq!(read_password(&None).unwrap(), None);
    }

    #[test]
    fn password_file_readable_by_others_is_refused() {
        for (tag, mode) in [("pw-group", 0o640), ("pw-world", 0o604), ("pw-gw", 0o620)] {
            let f = TempFile::new(tag, "hunter2\n", mode);
            let err = format!("{:#}", read_password(&Some(f.0.clone())).unwrap_err());
            let p = f.0.display();
            assert!(err.contains(&format!("{p} has mode {mode:04o}")), "{err}");
            assert!(err.contains(&format!("chmod 600 {p}")), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn missing_password_file_is_named() {
        let path = std::env::temp_dir().join(format!("heir-db-absent-{}", std::process::id()));
        let err = format!("{:#}", read_password(&Some(path.clone())).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn witness_needs_nodes() {
        assert!(T::try_parse_from(["db", "witness", "--secret-file", "/s"]).is_err());
    }
}
