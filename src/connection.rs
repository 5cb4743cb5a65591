//! How hfplay reaches a host: one multiplexed SSH master per host (openssh native-mux), or the
//! local machine for `ansible_connection=local`. Every module speaks to a host only through
//! [`HostConn::run`], which executes a POSIX shell script (with `become` and `environment`
//! applied) and returns its exit code and output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;

/// The result of one remote script.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// Privilege escalation applied to every script of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub user: String,
}

/// Connection settings of one host, read from its variables (`ansible_host`, `ansible_port`, ...).
#[derive(Debug, Clone, Default)]
pub struct ConnSpec {
    pub inventory_name: String,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<PathBuf>,
    /// `-o Key=Value` options from `ansible_ssh_common_args` / `ansible_ssh_extra_args`.
    pub ssh_options: Vec<(String, String)>,
    pub local: bool,
    pub connect_timeout: Duration,
}

enum Transport {
    Local,
    Ssh(openssh::Session),
}

/// An open connection to one host. Cheap to share: scripts are multiplexed over one master.
pub struct HostConn {
    spec: ConnSpec,
    transport: Transport,
    /// The login user, so `become: root` as root needs no sudo.
    login_user: String,
    _config_dir: Option<tempfile::TempDir>,
}

impl HostConn {
    pub async fn open(spec: ConnSpec) -> Result<HostConn, ConnError> {
        if spec.local {
            let login_user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            return Ok(HostConn {
                spec,
                transport: Transport::Local,
                login_user,
                _config_dir: None,
            });
        }
        let mut builder = openssh::SessionBuilder::default();
        builder.known_hosts_check(openssh::KnownHosts::Accept);
        builder.connect_timeout(spec.connect_timeout);
        builder.server_alive_interval(Duration::from_secs(10));
        if let Some(p) = spec.port {
            builder.port(p);
        }
        if let Some(u) = &spec.user {
            builder.user(u.clone());
        }
        if let Some(k) = &spec.key_file {
            builder.keyfile(k);
        }
        // Extra `-o` options go through a generated ssh_config: the builder has no raw-args hook.
        let config_dir = tempfile::Builder::new()
            .prefix("hfplay-ssh")
            .tempdir()
            .map_err(|e| ConnError::Unreachable(format!("cannot create ssh config dir: {e}")))?;
        let mut cfg = String::from("Host *\n  BatchMode yes\n  LogLevel ERROR\n");
        for (k, v) in &spec.ssh_options {
            cfg.push_str(&format!("  {k} {v}\n"));
        }
        let cfg_path = config_dir.path().join("config");
        std::fs::write(&cfg_path, cfg)
            .map_err(|e| ConnError::Unreachable(format!("cannot write ssh config: {e}")))?;
        builder.config_file(&cfg_path);
        builder.control_directory(config_dir.path());
        let session = builder.connect_mux(&spec.address).await.map_err(|e| {
            ConnError::Unreachable(format!("ssh {}: {}", spec.address, flatten_err(&e)))
        })?;
        let login_user = spec.user.clone().unwrap_or_else(|| "root".into());
        Ok(HostConn {
            spec,
            transport: Transport::Ssh(session),
            login_user,
            _config_dir: Some(config_dir),
        })
    }

    pub fn spec(&self) -> &ConnSpec {
        &self.spec
    }

    /// Runs `script` with `sh -c` on the host, feeding `stdin` if given.
    pub async fn run(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        become_: Option<&Become>,
        env: &BTreeMap<String, String>,
    ) -> Result<ExecResult, ConnError> {
        let mut full = String::new();
        for (k, v) in env {
            full.push_str(&format!("export {}={}; ", k, quote(v)));
        }
        full.push_str(script);
        let mut line = format!("sh -c {}", quote(&full));
        if let Some(b) = become_ {
            if b.user != self.login_user {
                line = format!("sudo -H -n -u {} -- {}", quote(&b.user), line);
            }
        }
        match &self.transport {
            Transport::Local => {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(&line);
                run_child_local(cmd, stdin).await
            }
            Transport::Ssh(session) => {
                // The openssh crate turns remote exit status 127 into an error indistinguishable
                // from a broken session, so the real status travels as a stderr trailer.
                let wrapped = format!("{line}; printf '\\n{RC_TRAILER}%d\\n' $? >&2");
                let mut cmd = session.raw_command(&wrapped);
                cmd.stdin(if stdin.is_some() {
                    openssh::Stdio::piped()
                } else {
                    openssh::Stdio::null()
                });
                cmd.stdout(openssh::Stdio::piped());
                cmd.stderr(openssh::Stdio::piped());
                let mut child = cmd.spawn().await.map_err(|e| self.unreachable(e))?;
                if let Some(data) = stdin {
                    if let Some(mut w) = child.stdin().take() {
                        w.write_all(data)
                            .await
                            .map_err(|e| ConnError::Unreachable(e.to_string()))?;
                        w.shutdown().await.ok();
                    }
                }
                let out = child
                    .wait_with_output()
                    .await
                    .map_err(|e| self.unreachable(e))?;
                let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                let trailer = take_rc_trailer(&mut stderr);
                // ssh reports a lost connection as exit status 255 (and no trailer).
                let rc = trailer.unwrap_or_else(|| out.status.code().unwrap_or(255));
                if rc == 255 && self.check_alive().await.is_err() {
                    return Err(ConnError::Unreachable(format!(
                        "{}: connection lost",
                        self.spec.address
                    )));
                }
                Ok(ExecResult {
                    rc,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr,
                })
            }
        }
    }

    async fn check_alive(&self) -> Result<(), ConnError> {
        match &self.transport {
            Transport::Local => Ok(()),
            Transport::Ssh(s) => s.check().await.map_err(|e| self.unreachable(e)),
        }
    }

    fn unreachable(&self, e: openssh::Error) -> ConnError {
        ConnError::Unreachable(format!("{}: {}", self.spec.address, flatten_err(&e)))
    }

    pub async fn close(self) {
        if let Transport::Ssh(s) = self.transport {
            let _ = s.close().await;
        }
    }
}

async fn run_child_local(
    mut cmd: tokio::process::Command,
    stdin: Option<&[u8]>,
) -> Result<ExecResult, ConnError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| ConnError::Unreachable(format!("local sh: {e}")))?;
    if let Some(data) = stdin {
        if let Some(mut w) = child.stdin.take() {
            w.write_all(data)
                .await
                .map_err(|e| ConnError::Unreachable(e.to_string()))?;
            w.shutdown().await.ok();
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ConnError::Unreachable(e.to_string()))?;
    Ok(ExecResult {
        rc: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn flatten_err(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s.trim().to_string()
}

/// Single-quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[tokio::test]
    async fn local_run_with_env_and_stdin() {
        let conn = HostConn::open(ConnSpec {
            local: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_string(), "hi there".to_string());
        let r = conn
            .run(
                "read x; echo \"$GREETING $x\"; exit 3",
                Some(b"bob\n"),
                None,
                &env,
            )
            .await
            .unwrap();
        assert_eq!(r.rc, 3);
        assert_eq!(r.stdout, "hi there bob\n");
    }
}

const RC_TRAILER: &str = "@@hfplay-rc=";

/// Removes the exit-status trailer (`\n@@hfplay-rc=N\n`) from stderr and returns N.
fn take_rc_trailer(stderr: &mut String) -> Option<i32> {
    let at = stderr.rfind(&format!("\n{RC_TRAILER}"))?;
    let rc = stderr[at + 1 + RC_TRAILER.len()..]
        .trim_end()
        .parse()
        .ok()?;
    stderr.truncate(at);
    Some(rc)
}

#[cfg(test)]
mod rc_trailer_tests {
    use super::*;

    #[test]
    fn trailer_is_removed_and_parsed() {
        let mut e = "oops\n\n@@hfplay-rc=127\n".to_string();
        assert_eq!(take_rc_trailer(&mut e), Some(127));
        assert_eq!(e, "oops\n");
        let mut none = "no trailer".to_string();
        assert_eq!(take_rc_trailer(&mut none), None);
        assert_eq!(none, "no trailer");
    }
}
