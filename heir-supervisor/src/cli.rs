//! Command-line interface: parses arguments and hands over to the concern's module.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::clock::parse_duration;
use crate::news::NewsArgs;

#[derive(Debug, Parser)]
#[command(
    name = "heir-supervisor",
    version,
    about = "Heirflow succession: the oldest live member runs the singleton; the next takes over"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join a group and run CMD while holding its lease.
    Run(RunArgs),
    /// Show members, heir, epoch and check-in ages of each group.
    Status(StatusArgs),
    /// Live terminal view of groups and the succession news.
    Interface(InterfaceArgs),
    /// Automatic PostgreSQL failover with a floating IP (on the DB hosts).
    Db(crate::db::DbArgs),
    /// Internal: the fencing guard that owns the child (started by `run`).
    #[command(hide = true)]
    Guard(GuardArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DsnArgs {
    /// Metadata database (libpq `key=value` or `postgresql://` URL).
    #[arg(long, env = "HEIR_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// Read the DSN from this file (keeps passwords out of `ps`).
    #[arg(long, env = "HEIR_DSN_FILE", conflicts_with = "dsn")]
    pub dsn_file: Option<PathBuf>,
}

impl DsnArgs {
    pub fn resolve(&self) -> Result<Option<String>> {
        if let Some(d) = &self.dsn {
            return Ok(Some(d.clone()));
        }
        if let Some(p) = &self.dsn_file {
            let s = std::fs::read_to_string(p)
                .with_context(|| format!("reading --dsn-file {}", p.display()))?;
            return Ok(Some(s.trim().to_string()));
        }
        Ok(None)
    }

    pub fn require(&self) -> Result<String> {
        self.resolve()?
            .ok_or_else(|| anyhow!("no database given: use --dsn, --dsn-file or HEIR_DSN"))
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Group name (`scheduler`, `dag-processor`, ...).
    #[arg(long)]
    pub group: String,
    #[command(flatten)]
    pub dsn: DsnArgs,
    /// Member name (default: the host name). One live instance per name and group.
    #[arg(long = "member-id", env = "HEIR_MEMBER_ID")]
    pub member_id: Option<String>,
    /// Lease and check-in time to live, seconds (`3`, `2.5`, `1500ms`).
    #[arg(long, default_value = "3", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Check-in / renewal interval.
    #[arg(long, default_value = "0.5", value_parser = parse_duration)]
    pub interval: Duration,
    /// The child is stopped this long before the lease could expire (local monotonic clock)
    /// [default: the smaller of 1 s and ttl/3].
    #[arg(long, value_parser = parse_duration)]
    pub margin: Option<Duration>,
    /// When fencing: SIGTERM to the child's group, SIGKILL after this
    /// [default: the smaller of 0.3 s and margin/3].
    #[arg(long = "fence-grace", value_parser = parse_duration)]
    pub fence_grace: Option<Duration>,
    /// On SIGTERM: how long the child may take to stop before SIGKILL.
    #[arg(long = "stop-timeout", default_value = "20", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// After the child failed while leading, wait this long before leading again.
    #[arg(long = "hold-off", default_value = "2", value_parser = parse_duration)]
    pub hold_off: Duration,
    /// Warm standby: start CMD at once on every member; CMD prepares itself, then waits for a
    /// line `go <epoch>` on its stdin, sent when this member takes the lease.
    #[arg(long)]
    pub warm: bool,
    #[command(flatten)]
    pub news: NewsArgs,
    /// Start the command as this user (the supervisor must be root): the command then cannot
    /// read the supervisor's credentials, and gets none of them in its environment.
    #[arg(long = "run-as", env = "HEIR_RUN_AS")]
    pub run_as: Option<String>,
    /// The command to supervise.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// `--margin`, or the smaller of 1 s and ttl/3.
    pub fn margin(&self) -> Duration {
        self.margin
            .unwrap_or_else(|| Duration::from_secs(1).min(self.ttl / 3))
    }

    /// `--fence-grace`, or the smaller of 0.3 s and margin/3.
    pub fn fence_grace(&self) -> Duration {
        self.fence_grace
            .unwrap_or_else(|| Duration::from_millis(300).min(self.margin() / 3))
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dsn: DsnArgs,
    /// Only this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Give up (exit 1) when the database has not answered within this, per round trip.
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct InterfaceArgs {
    #[command(flatten)]
    pub dsn: DsnArgs,
    #[command(flatten)]
    pub news: NewsArgs,
    /// Only this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Database poll interval.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub refresh: Duration,
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    #[arg(long = "fence-grace-ms", default_value_t = 300)]
    pub fence_grace_ms: u64,
    #[arg(long)]
    pub warm: bool,
    #[arg(long = "run-as")]
    pub run_as: Option<String>,
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_takes_the_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "heir-supervisor",
            "run",
            "--group",
            "g",
            "--dsn",
            "host=x",
            "--",
            "sleep",
            "--x",
            "1",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.command, vec!["sleep", "--x", "1"]);
        assert_eq!(r.ttl, Duration::from_secs(3));
        assert_eq!(r.margin(), Duration::from_secs(1));
        assert_eq!(r.fence_grace(), Duration::from_millis(300));
    }

    #[test]
    fn short_ttl_scales_margin_and_grace() {
        let cli = Cli::try_parse_from([
            "heir-supervisor",
            "run",
            "--group",
            "g",
            "--dsn",
            "x",
            "--ttl",
            "1.5",
            "--interval",
            "0.2",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.margin(), Duration::from_millis(500));
        assert_eq!(r.fence_grace(), Duration::from_nanos(166_666_666));
    }

    #[test]
    fn db_subcommand_dispatches() {
        let cli = Cli::try_parse_from([
            "heir-supervisor",
            "db",
            "status",
            "--url",
            "http://h:7433",
            "--secret-file",
            "/s",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Db(_)));
    }
}
