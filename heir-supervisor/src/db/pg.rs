//! The local PostgreSQL's life: is the postmaster alive, start, stop, pg_rewind, and the few
//! settings written into `postgresql.auto.conf` while it is stopped.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::Command;

/// Settings the failover manages in `postgresql.auto.conf` (rewritten on rejoin/restart;
/// pg_rewind copies the source's file, so leaked values are removed here).
const MANAGED_KEYS: &[&str] = &[
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "default_transaction_read_only",
];

#[derive(Debug, Clone)]
pub struct PgCtl {
    pub pgdata: PathBuf,
    pub bindir: PathBuf,
    /// OS user owning the data directory (commands run as it when we are root).
    pub user: String,
    /// Shell command to start PostgreSQL (default: pg_ctl start).
    pub start_cmd: Option<String>,
    /// Shell command to stop it (default: pg_ctl stop -m fast).
    pub stop_cmd: Option<String>,
    /// Extra `pg_ctl -o` options for the default start (node-specific settings).
    pub ctl_opts: Option<String>,
    /// postgresql.conf outside the data directory (Debian), for pg_rewind --config-file.
    pub config_file: Option<PathBuf>,
    pub log_file: PathBuf,
}

fn as_user(user: &str, prog: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && user != "root" {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(user).arg("--").arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

async fn output(mut c: Command, what: &str, timeout: Duration) -> Result<String> {
    c.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(timeout, c.output())
        .await
        .map_err(|_| anyhow!("{what}: timed out after {timeout:?}"))?
        .with_context(|| format!("{what}: could not run"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, text.trim());
    }
    Ok(text)
}

fn shell(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    c
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Children of `pid` (from /proc).
fn children(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            v.push(child);
        }
    }
    v
}

impl PgCtl {
    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The postmaster's pid if one is running on this data directory.
    pub fn postmaster(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse::<i32>().ok()?;
        if pid <= 0 || !pid_alive(pid) {
            return None;
        }
        // A recycled pid is not our postmaster.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        (comm.starts_with("postgres") || comm.starts_with("postmaster")).then_some(pid)
    }

    pub fn standby_signal(&self) -> bool {
        self.pgdata.join("standby.signal").exists()
    }

    pub async fn start(&self) -> Result<()> {
        let c = match &self.start_cmd {
            Some(cmd) => shell(cmd),
            None => {
                let mut c = as_user(&self.user, &self.bin("pg_ctl"));
                c.arg("-D")
                    .arg(&self.pgdata)
                    .arg("-l")
                    .arg(&self.log_file)
                    .args(["-w", "-t", "60"]);
                if let Some(o) = &self.ctl_opts {
                    c.arg("-o").arg(o);
                }
                c.arg("start");
                c
            }
        };
        output(c, "starting PostgreSQL", Duration::from_secs(90)).await?;
        Ok(())
    }

    /// Stop (fast: sessions are cut, nothing acknowledged is lost); SIGKILL if that fails.
    pub async fn stop(&self) -> Result<()> {
        let c = match &self.stop_cmd {
            Some(cmd) => shell(cmd),
            None => {
                let mut c = as_user(&self.user, &self.bin("pg_ctl"));
                c.arg("-D")
                    .arg(&self.pgdata)
                    .args(["-m", "fast", "-w", "-t", "20", "stop"]);
                c
            }
        };
        let res = output(c, "stopping PostgreSQL", Duration::from_secs(30)).await;
        if let Some(pid) = self.postmaster() {
            crate::log::warn(&format!(
                "PostgreSQL still running after stop ({}): SIGKILL to postmaster {pid} and its children",
                res.as_ref().err().map(|e| format!("{e:#}")).unwrap_or_default()
            ));
            for c in children(pid) {
                // SAFETY: plain kill(2) on a pid we just read from /proc.
                unsafe { libc::kill(c, libc::SIGKILL) };
            }
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            for _ in 0..50 {
                if self.postmaster().is_none() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bail!("postmaster {pid} survived SIGKILL");
        }
        Ok(())
    }

    /// `pg_rewind` this (stopped) data directory from `source` (a libpq conninfo).
    pub async fn rewind(&self, source: &str, password: Option<&str>) -> Result<String> {
        let mut c = as_user(&self.user, &self.bin("pg_rewind"));
        c.arg("-D")
            .arg(&self.pgdata)
            .arg(format!("--source-server={source}"))
            .arg("--progress");
        if let Some(cf) = &self.config_file {
            c.arg(format!("--config-file={}", cf.display()));
        }
        if let Some(pw) = password {
            c.env("PGPASSWORD", pw);
        }
        c.env("PGCONNECT_TIMEOUT", "5");
        // pg_rewind may run crash recovery in single-user mode first: give it time.
        output(c, "pg_rewind", Duration::from_secs(600)).await
    }

    fn auto_conf(&self) -> PathBuf {
        self.pgdata.join("postgresql.auto.conf")
    }

    /// Rewrite the managed keys of postgresql.auto.conf (PostgreSQL stopped).
    fn write_auto_conf(&self, set: &[(&str, String)]) -> Result<()> {
        let path = self.auto_conf();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let text = rewrite_auto_conf(&old, set);
        write_owned(&path, &text, &self.pgdata)
    }

    /// Prepare a rejoin as standby: primary_conninfo + standby.signal.
    pub fn write_standby(&self, primary_conninfo: &str) -> Result<()> {
        self.write_auto_conf(&[("primary_conninfo", quote(primary_conninfo))])?;
        write_owned(&self.pgdata.join("standby.signal"), "", &self.pgdata)
    }

    /// Prepare a start as primary that requires its standby again.
    pub fn write_primary(&self, sync_names: &str) -> Result<()> {
        let sig = self.pgdata.join("standby.signal");
        if sig.exists() {
            std::fs::remove_file(&sig).with_context(|| format!("removing {}", sig.display()))?;
        }
        self.write_auto_conf(&[("synchronous_standby_names", quote(sync_names))])
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Drop every managed key, then append `set` (postgresql.auto.conf syntax).
pub fn rewrite_auto_conf(old: &str, set: &[(&str, String)]) -> String {
    let mut out = String::new();
    for line in old.lines() {
        let key = line
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if MANAGED_KEYS.contains(&key.as_str()) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n");
    }
    for (k, v) in set {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

/// Write a file owned like the data directory (we may be root; PostgreSQL must read it).
fn write_owned(path: &Path, text: &str, pgdata: &Path) -> Result<()> {
    let meta = std::fs::metadata(pgdata).with_context(|| format!("stat {}", pgdata.display()))?;
    let tmp = path.with_extension("heir-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
        .with_context(|| format!("chown {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_conf_is_rewritten() {
        let old = "# Do not edit this file manually!\n\
                   # It will be overwritten by the ALTER SYSTEM command.\n\
                   synchronous_standby_names = ''\n\
                   wal_receiver_status_interval = '1s'\n\
                   primary_conninfo = 'host=old user=heir'\n";
        let new = rewrite_auto_conf(old, &[("primary_conninfo", quote("host=b user='x'"))]);
        assert!(new.contains("wal_receiver_status_interval = '1s'\n"));
        assert!(!new.contains("synchronous_standby_names"));
        assert!(!new.contains("host=old"));
        assert!(
            new.ends_with("primary_conninfo = 'host=b user=''x'''\n"),
            "{new}"
        );
        assert!(rewrite_auto_conf("", &[]).starts_with("# Do not edit"));
    }
}
