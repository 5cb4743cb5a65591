//! The child command and its fencing.
//!
//! The supervisor never forks the singleton itself. It starts a small **guard** process (this
//! same binary, hidden subcommand `guard`) that owns the child:
//!
//! * the child runs in its own process group (`setpgid(0, 0)`), so the whole tree of
//!   `airflow scheduler` (its grandchildren included) is signalled at once with `kill(-pgid)`;
//! * the child has `PR_SET_PDEATHSIG = SIGKILL` towards the guard, and the guard is a child
//!   subreaper, so orphans re-parent to it and are reaped by it;
//! * the guard reads commands on stdin from the supervisor. End of file on stdin means the
//!   supervisor is gone (crash, `kill -9`, normal exit): the guard kills the child's process
//!   group with SIGKILL at once and exits;
//! * the guard enforces the lease deadline itself, on `CLOCK_MONOTONIC`. If the supervisor is
//!   frozen (SIGSTOP, a stuck thread) it cannot renew and cannot kill; the guard still kills the
//!   child group before the lease can expire in the database.
//!
//! Protocol, one line per message (ASCII):
//! ```text
//! supervisor → guard:  spawn                      start a warm standby child (--warm only)
//!                      lead <epoch> <deadline>    run as leader: spawn (or tell the warm child
//!                                                 "go <epoch>") and arm the deadline (ns)
//!                      renew <deadline>           extend the deadline
//!                      stop <grace_ms>            SIGTERM the group, SIGKILL after grace
//!                      kill                       SIGKILL the group now
//! guard → supervisor:  started <pid> <mono_ns>
//!                      fenced <pid> <mono_ns>     deadline passed: the group is being killed
//!                      exited <pid> <how> <mono_ns>   how = code=N | signal=N
//!                      failed 0 <mono_ns> <error>  the command could not be started (the OS
//!                                                 error, e.g. not found / permission denied)
//! ```
//! The child's stdout is redirected to the guard's stderr (the guard's stdout is the protocol
//! pipe); both end in the supervisor's stderr (the journal under systemd).

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::account::Account;
use crate::clock::{dur_ns, mono_ns};

/// What the guard reports to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEvent {
    Started {
        pid: i32,
        at_ns: u64,
    },
    Fenced {
        pid: i32,
        at_ns: u64,
    },
    Exited {
        pid: i32,
        how: String,
        at_ns: u64,
    },
    /// The command could not be started (exec failed): the OS error, for the one log line.
    StartFailed {
        error: String,
        at_ns: u64,
    },
    /// The guard itself is gone (it only exits on EOF or when killed).
    GuardLost(String),
}

impl GuardEvent {
    fn parse(line: &str) -> Option<GuardEvent> {
        let mut it = line.split_whitespace();
        let kind = it.next()?;
        let pid: i32 = it.next()?.parse().ok()?;
        match kind {
            "started" => Some(GuardEvent::Started {
                pid,
                at_ns: it.next()?.parse().ok()?,
            }),
            "fenced" => Some(GuardEvent::Fenced {
                pid,
                at_ns: it.next()?.parse().ok()?,
            }),
            "exited" => {
                let how = it.next()?.to_string();
                Some(GuardEvent::Exited {
                    pid,
                    how,
                    at_ns: it.next()?.parse().ok()?,
                })
            }
            "failed" => Some(GuardEvent::StartFailed {
                at_ns: it.next()?.parse().ok()?,
                error: it.collect::<Vec<_>>().join(" "),
            }),
            _ => None,
        }
    }
}

/// Supervisor-side handle of the guard process.
pub struct Guard {
    stdin: Option<tokio::process::ChildStdin>,
    proc: tokio::process::Child,
    /// Process group of the current child (= its pid), for a last-resort kill on exit paths.
    pub child_pgid: Option<i32>,
}

/// How the guard runs the child command.
#[derive(Debug, Clone)]
pub struct GuardSpec {
    pub command: Vec<OsString>,
    pub warm: bool,
    /// SIGTERM → SIGKILL delay when the deadline passes.
    pub fence_grace: Duration,
    /// Extra environment for the child (HEIR_GROUP, HEIR_MEMBER, ...).
    pub env: Vec<(String, String)>,
    /// Start the command as this account (the supervisor runs as root).
    pub run_as: Option<String>,
}

impl Guard {
    /// Start the guard (`/proc/self/exe guard ...`) and a task forwarding its reports.
    pub fn start(spec: &GuardSpec) -> Result<(Guard, mpsc::UnboundedReceiver<GuardEvent>)> {
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        cmd.arg0("heir-supervisor-guard")
            .arg("guard")
            .arg("--fence-grace-ms")
            .arg(spec.fence_grace.as_millis().to_string());
        if spec.warm {
            cmd.arg("--warm");
        }
        if let Some(user) = &spec.run_as {
            cmd.arg("--run-as").arg(user);
        }
        cmd.arg("--").args(&spec.command);
        // The command gets none of the supervisor's credentials (the guard needs none either).
        for k in crate::account::SUPERVISOR_SECRET_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Deliberately no kill_on_drop: the guard must outlive us long enough to kill the group.
        let mut proc = cmd
            .spawn()
            .context("starting the guard process (/proc/self/exe guard)")?;
        let stdin = proc.stdin.take();
        let stdout = proc
            .stdout
            .take()
            .ok_or_else(|| anyhow!("guard stdout was not captured"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(ev) = GuardEvent::parse(&line) {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        } else {
                            crate::log::warn(&format!("guard said something odd: {line:?}"));
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(GuardEvent::GuardLost("guard closed its pipe".into()));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(GuardEvent::GuardLost(format!("reading guard: {e}")));
                        return;
                    }
                }
            }
        });
        Ok((
            Guard {
                stdin,
                proc,
                child_pgid: None,
            },
            rx,
        ))
    }

    async fn send(&mut self, line: String) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("guard pipe already closed"))?;
        stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("writing {:?} to the guard", line.trim_end()))?;
        stdin.flush().await.context("flushing the guard pipe")
    }

    pub async fn spawn_standby(&mut self) -> Result<()> {
        self.send("spawn\n".into()).await
    }
    pub async fn lead(&mut self, epoch: i64, deadline_ns: u64) -> Result<()> {
        self.send(format!("lead {epoch} {deadline_ns}\n")).await
    }
    pub async fn renew(&mut self, deadline_ns: u64) -> Result<()> {
        self.send(format!("renew {deadline_ns}\n")).await
    }
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        self.send(format!("stop {}\n", grace.as_millis())).await
    }
    pub async fn kill(&mut self) -> Result<()> {
        self.send("kill\n".into()).await
    }

    /// Close the pipe (the guard kills the group and exits) and wait for the guard, bounded.
    /// As a last resort, SIGKILL the child's group ourselves.
    pub async fn shutdown(mut self, wait: Duration) {
        self.stdin = None;
        let waited = tokio::time::timeout(wait, self.proc.wait()).await;
        if waited.is_err() {
            crate::log::warn("guard did not exit in time; killing the child group directly");
            let _ = self.proc.start_kill();
        }
        if let Some(pgid) = self.child_pgid {
            kill_group(pgid, libc::SIGKILL);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Every exit path (error, panic unwinding) ends here: closing stdin makes the guard kill
        // the group; the direct kill covers a guard that is itself stuck.
        self.stdin = None;
        if let Some(pgid) = self.child_pgid {
            kill_group(pgid, libc::SIGKILL);
        }
    }
}

/// Signal a whole process group; ESRCH (already gone) is fine.
pub fn kill_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Does any process of this group still exist (zombies included)?
pub fn group_exists(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

// ---------------------------------------------------------------------------------------------
// The guard process (blocking, single-threaded on purpose: PR_SET_PDEATHSIG follows the thread
// that forked the child, so that thread must live as long as the guard).

struct Running {
    pid: i32,
    stdin: Option<std::process::ChildStdin>,
    armed: Option<u64>,
    kill_at: Option<u64>,
    fenced: bool,
}

/// Entry point of `heir-supervisor guard`.
pub fn guard_main(
    command: Vec<OsString>,
    warm: bool,
    fence_grace: Duration,
    run_as: Option<&str>,
) -> Result<()> {
    if command.is_empty() {
        return Err(anyhow!("guard: no command given"));
    }
    let account = run_as.map(Account::lookup).transpose()?;
    let spawn = ChildSpec {
        command: &command,
        warm,
        account: account.as_ref(),
    };
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Our lifetime is tied to the supervisor's pipe, not to signals sent to the whole
        // session or cgroup (Ctrl-C, systemd's SIGTERM): the supervisor orchestrates the stop.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let me = std::process::id() as i32;
    let mut child: Option<Running> = None;
    let mut buf: Vec<u8> = Vec::new();
    let grace_ns = dur_ns(fence_grace);

    loop {
        // 1. wait for a command, at most 20 ms (the fencing timer's resolution)
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 20) };
        if n > 0 {
            let mut chunk = [0u8; 4096];
            // SAFETY: reading into our own buffer.
            let r = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
            if r == 0 || (r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted)
            {
                // The supervisor is gone: nothing may outlive it.
                if let Some(c) = child.take() {
                    kill_group(c.pid, libc::SIGKILL);
                    reap_until_gone(c.pid);
                }
                return Ok(());
            }
            if r > 0 {
                buf.extend_from_slice(&chunk[..r as usize]);
            }
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                guard_command(&line, &mut child, &spawn, me)?;
            }
        }

        // 2. enforce the deadline and the TERM→KILL escalation
        let now = mono_ns();
        if let Some(c) = child.as_mut() {
            if let Some(deadline) = c.armed {
                if now >= deadline && !c.fenced {
                    c.fenced = true;
                    c.armed = None;
                    report(&format!("fenced {} {}", c.pid, now));
                    kill_group(c.pid, libc::SIGTERM);
                    c.kill_at = Some(now + grace_ns);
                }
            }
            if let Some(k) = c.kill_at {
                if now >= k {
                    kill_group(c.pid, libc::SIGKILL);
                    c.kill_at = None;
                }
            }
        }

        // 3. reap: our child and any orphan re-parented to us
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid on any child, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if child.as_ref().map(|c| c.pid) == Some(pid) {
                // The leader of the group is gone: its leftovers go with it.
                kill_group(pid, libc::SIGKILL);
                let st = std::process::ExitStatus::from_raw(status);
                let how = match (st.code(), st.signal()) {
                    (Some(c), _) => format!("code={c}"),
                    (_, Some(s)) => format!("signal={s}"),
                    _ => "unknown".into(),
                };
                report(&format!("exited {pid} {how} {}", mono_ns()));
                child = None;
            }
        }
    }
}

/// What the guard starts: the command, warm or not, as which account.
struct ChildSpec<'a> {
    command: &'a [OsString],
    warm: bool,
    account: Option<&'a Account>,
}

fn guard_command(
    line: &str,
    child: &mut Option<Running>,
    spawn: &ChildSpec,
    me: i32,
) -> Result<()> {
    let warm = spawn.warm;
    let mut it = line.split_whitespace();
    let verb = it.next().unwrap_or("");
    let num = |s: Option<&str>| -> Result<u64> {
        s.ok_or_else(|| anyhow!("guard: {verb:?} needs a number"))?
            .parse::<u64>()
            .with_context(|| format!("guard: bad number in {line:?}"))
    };
    match verb {
        "spawn" => {
            if child.is_none() {
                *child = spawn_child(spawn, None, me);
            }
        }
        "lead" => {
            let epoch = num(it.next())?;
            let deadline = num(it.next())?;
            if child.is_none() {
                *child = spawn_child(spawn, Some(epoch), me);
            }
            if let Some(c) = child.as_mut() {
                if warm {
                    if let Some(stdin) = c.stdin.as_mut() {
                        // A warm child that cannot hear "go" is useless: kill it, the supervisor
                        // sees it exit and steps down.
                        if writeln!(stdin, "go {epoch}")
                            .and_then(|_| stdin.flush())
                            .is_err()
                        {
                            kill_group(c.pid, libc::SIGKILL);
                        }
                    }
                }
                c.armed = Some(deadline);
                c.fenced = false;
            }
        }
        "renew" => {
            let deadline = num(it.next())?;
            if let Some(c) = child.as_mut() {
                if c.armed.is_some() {
                    c.armed = Some(deadline);
                }
            }
        }
        "stop" => {
            let grace_ms = num(it.next())?;
            if let Some(c) = child.as_mut() {
                c.armed = None;
                kill_group(c.pid, libc::SIGTERM);
                let at = mono_ns() + grace_ms * 1_000_000;
                c.kill_at = Some(c.kill_at.map_or(at, |k| k.min(at)));
            }
        }
        "kill" => {
            if let Some(c) = child.as_mut() {
                c.armed = None;
                kill_group(c.pid, libc::SIGKILL);
            }
        }
        "" => {}
        other => crate::log::warn(&format!("guard: unknown command {other:?}")),
    }
    Ok(())
}

fn spawn_child(spec: &ChildSpec, epoch: Option<u64>, me: i32) -> Option<Running> {
    let (command, warm) = (spec.command, spec.warm);
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(acct) = spec.account {
        // std sets groups, gid, then uid before our pre_exec runs: PR_SET_PDEATHSIG below is
        // set after the credential change, which would otherwise clear it.
        cmd.uid(acct.uid).gid(acct.gid);
        for (k, v) in acct.login_env() {
            cmd.env(k, v);
        }
    }
    if let Some(e) = epoch {
        cmd.env("HEIR_EPOCH", e.to_string());
    }
    cmd.env("HEIR_WARM", if warm { "1" } else { "0" });
    cmd.stdin(if warm { Stdio::piped() } else { Stdio::null() });
    // Our stdout is the protocol pipe: the child writes its stdout to our stderr.
    match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => {
            cmd.stdout(Stdio::from(fd));
        }
        Err(_) => {
            cmd.stdout(Stdio::null());
        }
    }
    cmd.stderr(Stdio::inherit());
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Ignored dispositions survive exec: give the child the defaults back.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The guard may have died between fork and prctl: then do not run at all.
            if libc::getppid() != me {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(mut ch) => {
            let pid = ch.id() as i32;
            report(&format!("started {pid} {}", mono_ns()));
            Some(Running {
                pid,
                stdin: ch.stdin.take(),
                armed: None,
                kill_at: None,
                fenced: false,
            })
        }
        Err(e) => {
            // Reported, not logged: the supervisor logs it once, with what it decided.
            let error = format!("cannot start {:?}: {e}", command[0].to_string_lossy());
            report(&format!(
                "failed 0 {} {}",
                mono_ns(),
                error.replace('\n', " ")
            ));
            None
        }
    }
}

/// After SIGKILL, wait (bounded) until the group is reaped.
fn reap_until_gone(pgid: i32) {
    let until = mono_ns() + 2_000_000_000;
    while mono_ns() < until {
        let mut status = 0;
        // SAFETY: non-blocking waitpid on any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 && !group_exists(pgid) {
            return;
        }
        if pid <= 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guard_reports() {
        assert_eq!(
            GuardEvent::parse("started 42 1000"),
            Some(GuardEvent::Started {
                pid: 42,
                at_ns: 1000
            })
        );
        assert_eq!(
            GuardEvent::parse("exited 42 signal=9 7"),
            Some(GuardEvent::Exited {
                pid: 42,
                how: "signal=9".into(),
                at_ns: 7
            })
        );
        assert_eq!(
            GuardEvent::parse("failed 0 9 cannot start \"x\": No such file (os error 2)"),
            Some(GuardEvent::StartFailed {
                error: "cannot start \"x\": No such file (os error 2)".into(),
                at_ns: 9
            })
        );
        assert_eq!(GuardEvent::parse("bogus 1 2"), None);
        assert_eq!(GuardEvent::parse("started x 2"), None);
    }
}
