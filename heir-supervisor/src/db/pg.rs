//! The local PostgreSQL's life: is the postmaster alive, start, stop, pg_rewind, a fresh copy
//! (pg_basebackup) when a rewind cannot be trusted, and the few settings written into
//! `postgresql.auto.conf` while it is stopped.

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

    /// `PGDATA.heir-rejoin`, beside the data directory (pg_rewind and pg_basebackup rewrite what
    /// is inside): present from the start of a rejoin until the rejoined standby started. A
    /// rejoin cut short (the host crashed during pg_rewind) leaves a data directory that
    /// pg_rewind may later call "no rewind required" although it cannot replay: a marked data
    /// directory is never started as is, only replaced by a fresh copy of the primary.
    fn rejoin_mark(&self) -> PathBuf {
        sibling(&self.pgdata, "heir-rejoin")
    }

    pub fn rejoin_marked(&self) -> bool {
        self.rejoin_mark().exists()
    }

    pub fn mark_rejoin(&self) -> Result<()> {
        let mark = self.rejoin_mark();
        std::fs::write(&mark, "a rejoin of this data directory has not finished\n")
            .with_context(|| format!("writing {}", mark.display()))
    }

    pub fn clear_rejoin_mark(&self) -> Result<()> {
        let mark = self.rejoin_mark();
        match std::fs::remove_file(&mark) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", mark.display()))
            }
            _ => Ok(()),
        }
    }

    /// Replace this (stopped) data directory by a fresh copy of `source` (pg_basebackup over a
    /// replication connection, WAL streamed alongside). The old directory waits beside it as
    /// `PGDATA.heir-old` until the copy is complete, and comes back if the copy fails.
    pub async fn basebackup(&self, source: &str) -> Result<String> {
        if self.postmaster().is_some() {
            bail!(
                "refusing to replace {}: PostgreSQL is running on it",
                self.pgdata.display()
            );
        }
        let old = sibling(&self.pgdata, "heir-old");
        if !self.pgdata.exists() && old.exists() {
            // an earlier copy was cut short: the directory set aside is the one to replace
            std::fs::rename(&old, &self.pgdata)
                .with_context(|| format!("restoring {}", self.pgdata.display()))?;
        }
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        std::fs::rename(&self.pgdata, &old)
            .with_context(|| format!("moving {} aside", self.pgdata.display()))?;
        let mut c = as_user(&self.user, &self.bin("pg_basebackup"));
        c.arg("-D")
            .arg(&self.pgdata)
            .arg(format!("--dbname={source}"))
            .args(["-X", "stream", "-c", "fast", "--no-password"]);
        c.env("PGCONNECT_TIMEOUT", "5");
        match output(c, "pg_basebackup", Duration::from_secs(3600)).await {
            Ok(out) => {
                std::fs::remove_dir_all(&old)
                    .with_context(|| format!("removing {}", old.display()))?;
                Ok(out)
            }
            Err(e) => {
                if self.pgdata.exists() {
                    let _ = std::fs::remove_dir_all(&self.pgdata);
                }
                std::fs::rename(&old, &self.pgdata)
                    .with_context(|| format!("restoring {} after: {e:#}", self.pgdata.display()))?;
                Err(e)
            }
        }
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

/// `DIR.ext` beside `dir` (`/var/lib/postgresql/17/main` → `/var/lib/postgresql/17/main.ext`).
fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ext);
    dir.with_file_name(name)
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
    fn marks_live_beside_the_data_directory() {
        let dir = std::env::temp_dir().join(format!("heir-pg-test-{}", std::process::id()));
        let pgdata = dir.join("main");
        std::fs::create_dir_all(&pgdata).unwrap();
        let pg = PgCtl {
            pgdata: pgdata.clone(),
            bindir: PathBuf::from("/nonexistent"),
            user: "nobody".into(),
            start_cmd: None,
            stop_cmd: None,
            ctl_opts: None,
            config_file: None,
            log_file: dir.join("log"),
        };
        assert!(!pg.rejoin_marked());
        pg.mark_rejoin().unwrap();
        assert!(dir.join("main.heir-rejoin").exists());
        assert!(pg.rejoin_marked());
        pg.clear_rejoin_mark().unwrap();
        pg.clear_rejoin_mark().unwrap(); // already gone: fine
        assert!(!pg.rejoin_marked());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_copy_puts_the_old_data_directory_back() {
        let dir = std::env::temp_dir().join(format!("heir-pg-copy-{}", std::process::id()));
        let pgdata = dir.join("main");
        std::fs::create_dir_all(&pgdata).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), "17\n").unwrap();
        let pg = PgCtl {
            pgdata: pgdata.clone(),
            bindir: PathBuf::from("/nonexistent"),
            user: "root".into(),
            start_cmd: None,
            stop_cmd: None,
            ctl_opts: None,
            config_file: None,
            log_file: dir.join("log"),
        };
        assert!(pg.basebackup("host=127.0.0.1").await.is_err());
        assert_eq!(
            std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
            "17\n"
        );
        assert!(!dir.join("main.heir-old").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
