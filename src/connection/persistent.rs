//! Master connections that outlive a run (`-o ControlPersist=60s` in ansible.cfg's `ssh_args` or
//! a host's ssh arguments, as Ansible's own default): the next run to the same host with the
//! same settings reuses the master instead of logging in again (an SSH login costs about
//! 160 ms on the test hosts, most of a no-change re-run of a small role).
//!
//! The masters live in `$HOME/.cache/hfplay/cp/<key>/` (or `control_path_dir`'s `hfplay-<key>`,
//! as Ansible's setting; mode 0700), `<key>` a hash of
//! everything that decides the connection: address, port, user, key file, ssh options and the
//! host-key policy, so a master is only reused for a connection that would have been made the
//! same way. A reused master must run `true` within the connect timeout: one whose host is gone
//! (or was recreated) is told to exit, its directory removed, and a new master logs in.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use openssh::{ControlPersist, Session, SessionBuilder};

use super::ConnSpec;

/// Takes `ControlMaster`, `ControlPath` and `ControlPersist` out of the ssh options (hfplay runs
/// the master itself) and returns the idle time a master should persist (`Some(0)`: for good).
pub fn take_control_options(
    host: &str,
    ssh_options: &mut Vec<(String, String)>,
) -> Result<Option<u64>, String> {
    let mut persist = None;
    let mut bad = None;
    ssh_options.retain(|(k, v)| {
        let k = k.to_ascii_lowercase();
        if k == "controlpersist" {
            // As ssh: the first value given wins (ansible.cfg's ssh_args come first).
            match (parse_persist(v), persist) {
                (Some(p), None) => persist = Some(p),
                (Some(_), Some(_)) => {}
                (None, _) => bad = Some(v.clone()),
            }
        }
        !matches!(
            k.as_str(),
            "controlpersist" | "controlmaster" | "controlpath"
        )
    });
    if let Some(v) = bad {
        return Err(format!(
            "{host}: ssh option ControlPersist={v:?}: expected yes, no or a time (60, 60s, 10m, 1h30m)"
        ));
    }
    Ok(persist.flatten())
}

/// ssh's ControlPersist values: yes (for good: 0), no, or a time in ssh's format.
fn parse_persist(v: &str) -> Option<Option<u64>> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => return Some(Some(0)),
        "no" | "false" => return Some(None),
        _ => {}
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in v.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total += num.parse::<u64>().ok()? * unit;
        num.clear();
    }
    if !num.is_empty() {
        total += num.parse::<u64>().ok()?;
    }
    // ssh takes 0 for "for good" too.
    Some(Some(total))
}

/// FNV-1a: a stable hash (the key must be the same from one build to the next).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The directory of the masters of connections made as `spec` says.
fn master_dir(spec: &ConnSpec) -> std::io::Result<PathBuf> {
    let root = match &spec.control_dir {
        Some(d) => d.clone(),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/hfplay/cp"),
    };
    let key = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        spec.address,
        spec.port,
        spec.user,
        spec.key_file,
        spec.ssh_options,
        spec.host_keys,
        spec.control_persist
    );
    let dir = root.join(format!("hfplay-{:016x}", fnv(&key)));
    // Private: a socket there runs commands as this user on the host. An existing
    // control_path_dir keeps its mode; what is created here is 0700.
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// A session on a master that outlives the run: an earlier run's, if one answers, else a new one.
pub async fn connect(
    spec: &ConnSpec,
    builder: &mut SessionBuilder,
    persist_secs: u64,
) -> Result<Session, openssh::Error> {
    let dir = master_dir(spec).map_err(openssh::Error::Master)?;
    if let Some(s) = reuse(&dir, spec).await {
        return Ok(s);
    }
    builder.control_directory(&dir);
    builder.control_persist(match NonZeroUsize::new(persist_secs as usize) {
        Some(n) => ControlPersist::IdleFor(n),
        None => ControlPersist::Forever,
    });
    let master = builder.launch_master(&spec.address).await?;
    // Kept: the master's socket and log outlive this process.
    let path = master.keep();
    Ok(Session::resume_mux(
        path.join("master").into_boxed_path(),
        Some(path.join("log").into_boxed_path()),
    ))
}

/// The first master in `dir` that runs `true` within the connect timeout; the others are told
/// to exit and their directories removed.
async fn reuse(dir: &Path, spec: &ConnSpec) -> Option<Session> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let path = e.path();
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(".ssh-connection")
        {
            continue;
        }
        let sock = path.join("master");
        if sock.exists() {
            let s = Session::resume_mux(
                sock.clone().into_boxed_path(),
                Some(path.join("log").into_boxed_path()),
            );
            let answered = tokio::time::timeout(spec.connect_timeout, async {
                s.command("true").status().await
            })
            .await;
            if matches!(answered, Ok(Ok(st)) if st.success()) {
                return Some(s);
            }
            let _ = tokio::process::Command::new("ssh")
                .arg("-S")
                .arg(&sock)
                .args(["-O", "exit", "hfplay-stale-master"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
        }
        let _ = std::fs::remove_dir_all(&path);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_values() {
        assert_eq!(parse_persist("60s"), Some(Some(60)));
        assert_eq!(parse_persist("60"), Some(Some(60)));
        assert_eq!(parse_persist("1h30m"), Some(Some(5400)));
        assert_eq!(parse_persist("yes"), Some(Some(0)));
        assert_eq!(parse_persist("no"), Some(None));
        assert_eq!(parse_persist("soon"), None);
    }

    #[test]
    fn control_options_are_taken_out() {
        let mut o = vec![
            ("ControlMaster".to_string(), "auto".to_string()),
            ("ControlPersist".to_string(), "60s".to_string()),
            ("ServerAliveCountMax".to_string(), "3".to_string()),
        ];
        assert_eq!(take_control_options("h", &mut o), Ok(Some(60)));
        assert_eq!(
            o,
            vec![("ServerAliveCountMax".to_string(), "3".to_string())]
        );
        let mut bad = vec![("controlpersist".to_string(), "soon".to_string())];
        let e = take_control_options("h", &mut bad).unwrap_err();
        assert!(e.contains("h: ssh option ControlPersist=\"soon\""), "{e}");
        assert_eq!(take_control_options("h", &mut vec![]), Ok(None));
        // ansible.cfg's ssh_args come first and win, as on ssh's command line.
        let mut two = vec![
            ("ControlPersist".to_string(), "no".to_string()),
            ("ControlPersist".to_string(), "60s".to_string()),
        ];
        assert_eq!(take_control_options("h", &mut two), Ok(None));
    }

    #[test]
    fn key_hash_is_stable() {
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv("a|22"), fnv("a|23"));
    }
}
