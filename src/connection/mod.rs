//! How hfplay reaches a host: one multiplexed SSH master per host (openssh native-mux), or the
//! local machine for `ansible_connection=local`. Every module speaks to a host only through
//! [`HostConn::run`], which executes a POSIX shell script (with `become` and `environment`
//! applied) and returns its exit code and output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use thiserror::Error;

mod persistent;
mod shell;
use std::sync::{Arc, Mutex};
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

/// How a target's SSH host key is checked against known_hosts (Ansible's `host_key_checking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// The key must already be known and match (the default, as in Ansible).
    #[default]
    Strict,
    /// An unknown host's key is added to known_hosts; a changed key is still refused.
    AcceptNew,
    /// No check at all (`host_key_checking = False`): a machine in the middle sees everything.
    Off,
}

impl HostKeyPolicy {
    pub const EXPECTED: &'static str = "expected true, false or accept-new";

    /// A `host_key_checking` setting: a boolean, or `accept-new`.
    pub fn parse_setting(v: &str) -> Option<HostKeyPolicy> {
        match v.trim().to_ascii_lowercase().as_str() {
            "accept-new" | "accept_new" => Some(HostKeyPolicy::AcceptNew),
            "true" | "yes" | "on" | "1" => Some(HostKeyPolicy::Strict),
            "false" | "no" | "off" | "0" => Some(HostKeyPolicy::Off),
            _ => None,
        }
    }

    /// A `StrictHostKeyChecking` value of ssh itself.
    pub fn parse_ssh_option(v: &str) -> Option<HostKeyPolicy> {
        match v.trim().to_ascii_lowercase().as_str() {
            "yes" | "ask" => Some(HostKeyPolicy::Strict),
            "accept-new" => Some(HostKeyPolicy::AcceptNew),
            "no" | "off" => Some(HostKeyPolicy::Off),
            _ => None,
        }
    }

    fn known_hosts(self) -> openssh::KnownHosts {
        match self {
            HostKeyPolicy::Strict => openssh::KnownHosts::Strict,
            HostKeyPolicy::AcceptNew => openssh::KnownHosts::Add,
            HostKeyPolicy::Off => openssh::KnownHosts::Accept,
        }
    }
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
    pub host_keys: HostKeyPolicy,
    /// `-o ControlPersist=…` (ansible.cfg's `ssh_args` or the host's ssh arguments): the master
    /// connection outlives the run by that many idle seconds (0: for good), and the next run
    /// to the same host with the same settings reuses it ([`persistent`]). `None`: one master
    /// per run, closed with it.
    pub control_persist: Option<u64>,
    /// Where such masters live (`None`: `~/.cache/hfplay/cp`).
    pub control_dir: Option<PathBuf>,
}

/// A host's variables as strings, by name (`None` when unset or null).
pub type VarLookup<'a> = &'a dyn Fn(&str) -> Result<Option<String>, String>;

impl ConnSpec {
    /// Reads `host`'s connection settings from its variables (`get`). `host_key_checking` is the
    /// run-wide setting, which the host's own variables may override.
    pub fn from_vars(
        host: &str,
        get: VarLookup<'_>,
        connect_timeout: Duration,
        host_key_checking: Option<HostKeyPolicy>,
        ssh_args: Option<&str>,
    ) -> Result<ConnSpec, String> {
        let connection = get("ansible_connection")?.unwrap_or_else(|| "ssh".into());
        let mut ssh_options = Vec::new();
        // As Ansible's command line: ansible.cfg's ssh_args, then the host's common and extra.
        let mut arg_sets = vec![ssh_args.map(str::to_string)];
        for key in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            arg_sets.push(get(key)?);
        }
        for args in arg_sets.into_iter().flatten() {
            let words = crate::words::shell_words(&args);
            let mut it = words.iter();
            while let Some(w) = it.next() {
                let opt = if w == "-o" {
                    it.next().cloned()
                } else {
                    w.strip_prefix("-o").map(str::to_string)
                };
                if let Some((k, v)) = opt.as_deref().and_then(|o| o.split_once('=')) {
                    ssh_options.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        let host_keys = host_key_policy(host, get, &mut ssh_options, host_key_checking)?;
        let control_persist = persistent::take_control_options(host, &mut ssh_options)?;
        let port = match get("ansible_port")?.or(get("ansible_ssh_port")?) {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{host}: ansible_port {p:?} is not a port number"))?,
            ),
            None => None,
        };
        Ok(ConnSpec {
            inventory_name: host.to_string(),
            address: get("ansible_host")?
                .or(get("ansible_ssh_host")?)
                .unwrap_or_else(|| host.to_string()),
            port,
            user: get("ansible_user")?.or(get("ansible_ssh_user")?),
            key_file: get("ansible_ssh_private_key_file")?.map(PathBuf::from),
            ssh_options,
            local: connection == "local",
            connect_timeout,
            host_keys,
            control_persist,
            control_dir: None,
        })
    }

    pub fn with_control_dir(mut self, dir: Option<PathBuf>) -> ConnSpec {
        self.control_dir = dir;
        self
    }
}

/// Ansible's order: a disabled `host_key_checking` (command line, config, environment or the
/// host's `ansible_host_key_checking`) wins; else the host's own `-o StrictHostKeyChecking`;
/// else the setting, strict by default. The ssh option is taken out of `ssh_options`: hfplay
/// passes the policy to ssh itself.
fn host_key_policy(
    host: &str,
    get: VarLookup<'_>,
    ssh_options: &mut Vec<(String, String)>,
    host_key_checking: Option<HostKeyPolicy>,
) -> Result<HostKeyPolicy, String> {
    let mut from_args = None;
    let mut bad = None;
    ssh_options.retain(|(k, v)| {
        if !k.eq_ignore_ascii_case("StrictHostKeyChecking") {
            return true;
        }
        match HostKeyPolicy::parse_ssh_option(v) {
            Some(p) => from_args = from_args.or(Some(p)),
            None => bad = Some(v.clone()),
        }
        false
    });
    if let Some(v) = bad {
        return Err(format!(
            "{host}: ssh option StrictHostKeyChecking={v:?}: expected yes, accept-new or no"
        ));
    }
    let mut setting = host_key_checking;
    for key in ["ansible_host_key_checking", "ansible_ssh_host_key_checking"] {
        if let Some(v) = get(key)? {
            setting = Some(
                HostKeyPolicy::parse_setting(&v)
                    .ok_or_else(|| format!("{host}: {key}={v:?}: {}", HostKeyPolicy::EXPECTED))?,
            );
            break;
        }
    }
    Ok(match (setting, from_args) {
        (Some(HostKeyPolicy::Off), _) => HostKeyPolicy::Off,
        (_, Some(p)) => p,
        (Some(p), None) => p,
        (None, None) => HostKeyPolicy::Strict,
    })
}

enum Transport {
    Local,
    Ssh(Arc<openssh::Session>),
}

/// An open connection to one host. Cheap to share: scripts are multiplexed over one master.
pub struct HostConn {
    spec: ConnSpec,
    transport: Transport,
    /// The login user, so `become: root` as root needs no sudo.
    login_user: String,
    _config_dir: Option<tempfile::TempDir>,
    /// Scripts to run when the run ends (scratch space a check run used on the host), with the
    /// become they need; see [`HostConn::at_end`].
    end_scripts: Mutex<Vec<(String, Option<Become>)>>,
    /// Idle shells on the host ([`shell`]), at most [`IDLE_SHELLS`] per become user.
    shells: Mutex<Vec<shell::Shell>>,
}

/// Idle shells kept per become user: scripts on one host mostly run one at a time; a burst of
/// concurrent ones opens more channels, as many as it needs, and the extra ones close after.
const IDLE_SHELLS: usize = 2;

impl HostConn {
    /// Does this connection run scripts on the controller itself (`ansible_connection=local`)?
    pub fn is_local(&self) -> bool {
        matches!(self.transport, Transport::Local)
    }

    pub async fn open(spec: ConnSpec) -> Result<HostConn, ConnError> {
        if spec.local {
            let login_user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            return Ok(HostConn {
                spec,
                transport: Transport::Local,
                login_user,
                _config_dir: None,
                end_scripts: Default::default(),
                shells: Default::default(),
            });
        }
        let mut builder = openssh::SessionBuilder::default();
        builder.known_hosts_check(spec.host_keys.known_hosts());
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
        let failed = |e: openssh::Error| {
            ConnError::Unreachable(connect_error(&spec, &crate::error::error_chain(&e)))
        };
        let session = match spec.control_persist {
            Some(secs) => persistent::connect(&spec, &mut builder, secs)
                .await
                .map_err(failed)?,
            None => {
                builder.control_directory(config_dir.path());
                builder.connect_mux(&spec.address).await.map_err(failed)?
            }
        };
        let login_user = spec.user.clone().unwrap_or_else(|| "root".into());
        Ok(HostConn {
            spec,
            transport: Transport::Ssh(Arc::new(session)),
            login_user,
            _config_dir: Some(config_dir),
            end_scripts: Default::default(),
            shells: Default::default(),
        })
    }

    /// Registers `script` to run once on this host when the run ends, whatever its outcome.
    pub fn at_end(&self, script: String, become_: Option<Become>) {
        self.end_scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((script, become_));
    }

    /// Runs the scripts registered with [`HostConn::at_end`], newest first; a failure is
    /// returned as text (the run's outcome stands).
    pub async fn run_at_end(&self) -> Vec<String> {
        let scripts =
            std::mem::take(&mut *self.end_scripts.lock().unwrap_or_else(|e| e.into_inner()));
        let mut errors = Vec::new();
        for (script, b) in scripts.into_iter().rev() {
            match self.run(&script, None, b.as_ref(), &BTreeMap::new()).await {
                Ok(r) if r.rc == 0 => {}
                Ok(r) => errors.push(format!("rc={}: {}", r.rc, r.stderr.trim())),
                Err(e) => errors.push(e.to_string()),
            }
        }
        errors
    }

    pub fn spec(&self) -> &ConnSpec {
        &self.spec
    }

    /// Runs `script` with `sh` on the host, feeding `stdin` if given.
    ///
    /// Over SSH the script goes to one of the host's long-lived shells ([`shell`]); locally to a
    /// new `sh`. Either way it travels over stdin with the `environment:` exports, ahead of the
    /// payload: the command line that `ps` shows on the target (and sudo logs) is always the
    /// same bootstrap, so no secret of a task ever appears there.
    pub async fn run(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        become_: Option<&Become>,
        env: &BTreeMap<String, String>,
    ) -> Result<ExecResult, ConnError> {
        let session = match &self.transport {
            Transport::Local => {
                let (line, input) = self.command_line(script, stdin, become_, env);
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(&line);
                return run_child_local(cmd, &input).await;
            }
            Transport::Ssh(session) => session,
        };
        let user = self.sudo_user(become_);
        let shell = match self.idle_shell(user) {
            Some(s) => s,
            None => shell::Shell::start(session.clone(), user)
                .await
                .map_err(|e| self.unreachable(e))?,
        };
        let full = with_env(script, env);
        match shell.run(&full, stdin.unwrap_or_default()).await {
            Ok((res, sh)) => {
                self.keep_shell(sh);
                Ok(res)
            }
            // ssh reports a lost connection as exit status 255.
            Err(res) if res.rc == 255 && self.check_alive().await.is_err() => Err(
                ConnError::Unreachable(format!("{}: connection lost", self.spec.address)),
            ),
            Err(res) => Ok(res),
        }
    }

    /// An idle shell for `user` that is still there (ended ones are dropped: a new one
    /// replaces them, as the script has not been sent).
    fn idle_shell(&self, user: Option<&str>) -> Option<shell::Shell> {
        let mut idle = self.shells.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.iter().position(|s| s.user.as_deref() == user) {
            let mut sh = idle.swap_remove(i);
            if !sh.ended() {
                return Some(sh);
            }
        }
        None
    }

    fn keep_shell(&self, sh: shell::Shell) {
        let mut idle = self.shells.lock().unwrap_or_else(|e| e.into_inner());
        if idle.iter().filter(|s| s.user == sh.user).count() < IDLE_SHELLS {
            idle.push(sh);
        }
    }

    /// The fixed command line and the bytes for its stdin: `<script length>\n<script><payload>`.
    /// The bootstrap reads exactly the script (`read` and `head -c` never read past what they
    /// need from a pipe), so the script's own stdin is the payload.
    fn command_line(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        become_: Option<&Become>,
        env: &BTreeMap<String, String>,
    ) -> (String, Vec<u8>) {
        let full = with_env(script, env);
        let payload = stdin.unwrap_or_default();
        let mut input = Vec::with_capacity(full.len() + payload.len() + 12);
        input.extend_from_slice(format!("{}\n", full.len()).as_bytes());
        input.extend_from_slice(full.as_bytes());
        input.extend_from_slice(payload);
        let line = as_user(
            self.sudo_user(become_),
            format!("sh -c {}", quote(BOOTSTRAP)),
        );
        (line, input)
    }

    /// The user sudo switches to: the become user unless it is the login user.
    fn sudo_user<'b>(&self, become_: Option<&'b Become>) -> Option<&'b str> {
        become_
            .filter(|b| b.user != self.login_user)
            .map(|b| b.user.as_str())
    }

    async fn check_alive(&self) -> Result<(), ConnError> {
        match &self.transport {
            Transport::Local => Ok(()),
            Transport::Ssh(s) => s.check().await.map_err(|e| self.unreachable(e)),
        }
    }

    fn unreachable(&self, e: openssh::Error) -> ConnError {
        ConnError::Unreachable(format!(
            "{}: {}",
            self.spec.address,
            crate::error::error_chain(&e)
        ))
    }

    pub async fn close(self) {
        let shells = std::mem::take(&mut *self.shells.lock().unwrap_or_else(|e| e.into_inner()));
        for sh in shells {
            sh.close().await;
        }
        if let Transport::Ssh(s) = self.transport {
            if let Ok(s) = Arc::try_unwrap(s) {
                let _ = s.close().await;
            }
        }
    }
}

/// `line` run as `user` through sudo (no password prompt), or as is.
fn as_user(user: Option<&str>, line: String) -> String {
    match user {
        Some(u) => format!("sudo -H -n -u {} -- {line}", quote(u)),
        None => line,
    }
}

/// The script behind the `environment:` exports.
fn with_env(script: &str, env: &BTreeMap<String, String>) -> String {
    let mut full = String::new();
    for (k, v) in env {
        full.push_str(&format!("export {}={}; ", k, quote(v)));
    }
    full.push_str(script);
    full
}

/// Writes the input while the output is read (a script that prints before it has read all of
/// its payload must not deadlock); a script that exits without reading it all is no error.
async fn feed<W: tokio::io::AsyncWrite + Unpin>(w: Option<W>, data: &[u8]) {
    if let Some(mut w) = w {
        let _ = w.write_all(data).await;
        let _ = w.shutdown().await;
    }
}

async fn run_child_local(
    mut cmd: tokio::process::Command,
    input: &[u8],
) -> Result<ExecResult, ConnError> {
    cmd.stdin(Stdio::piped());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| ConnError::Unreachable(format!("local sh: {e}")))?;
    let writer = feed(child.stdin.take(), input);
    let (_, out) = tokio::join!(writer, child.wait_with_output());
    let out = out.map_err(|e| ConnError::Unreachable(e.to_string()))?;
    Ok(ExecResult {
        rc: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A failed login, explained where ssh's own words are cryptic (host key problems).
fn connect_error(spec: &ConnSpec, detail: &str) -> String {
    let addr = &spec.address;
    if detail.contains("IDENTIFICATION HAS CHANGED")
        || detail.contains("key for host") && detail.contains("has changed")
    {
        format!(
            "ssh {addr}: the host key does not match the one in known_hosts: refusing to connect \
             (nothing was sent). If the host was rebuilt, remove its old key \
             (ssh-keygen -R {addr}) and add the new one."
        )
    } else if detail.contains("Host key verification failed")
        || detail.contains("No ED25519 host key is known")
        || detail.contains("host key is known")
    {
        format!(
            "ssh {addr}: host key unknown (not in known_hosts) and host_key_checking is strict: \
             add the key to known_hosts (ssh-keyscan, checked), or opt in with \
             host_key_checking = accept-new"
        )
    } else {
        format!("ssh {addr}: {detail}")
    }
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

/// Reads the script from stdin and runs it (see [`HostConn::command_line`]).
const BOOTSTRAP: &str =
    "IFS= read -r __hfplay_n && __hfplay_s=$(head -c \"$__hfplay_n\") && eval \"$__hfplay_s\"";

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

    async fn local() -> HostConn {
        HostConn::open(ConnSpec {
            local: true,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn local_run_with_env_and_stdin() {
        let conn = local().await;
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

    #[tokio::test]
    async fn secrets_never_reach_the_command_line() {
        let conn = local().await;
        let mut env = BTreeMap::new();
        env.insert("PW".to_string(), "s3cret-env".to_string());
        let become_ = Become {
            user: "nobody".into(),
        };
        let (line, input) = conn.command_line(
            "echo s3cret-script",
            Some(b"s3cret-payload"),
            Some(&become_),
            &env,
        );
        assert!(!line.contains("s3cret"), "{line}");
        assert!(line.starts_with("sudo -H -n -u nobody -- sh -c "), "{line}");
        let input = String::from_utf8(input).unwrap();
        assert!(
            input.contains("s3cret-env") && input.ends_with("s3cret-payload"),
            "{input}"
        );
        // The script sees exactly its payload on stdin, also when it is large.
        let big = "x".repeat(300_000);
        let r = conn
            .run("wc -c; echo \"$PW\"", Some(big.as_bytes()), None, &env)
            .await
            .unwrap();
        assert_eq!(
            r.stdout.split_whitespace().collect::<Vec<_>>(),
            ["300000", "s3cret-env"]
        );
    }
}
