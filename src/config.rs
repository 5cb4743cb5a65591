//! The settings hfplay reads from `ansible.cfg` and the environment, found the way Ansible finds
//! them: `$ANSIBLE_CONFIG`, then `./ansible.cfg`, `~/.ansible.cfg`, `/etc/ansible/ansible.cfg`
//! (the first that exists is the only one read); `ANSIBLE_*` variables override the file.

use std::path::{Path, PathBuf};

use crate::connection::HostKeyPolicy;

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[defaults] roles_path` (colon-separated).
    pub roles_path: Vec<PathBuf>,
    /// `[defaults] host_key_checking` / `ANSIBLE_HOST_KEY_CHECKING`; `None` = not set.
    pub host_key_checking: Option<HostKeyPolicy>,
    /// `[ssh_connection] ssh_args` / `ANSIBLE_SSH_ARGS`: ssh options for every host, before the
    /// host's own (hfplay reads the `-o` options; `ControlPersist` keeps masters between runs).
    pub ssh_args: Option<String>,
    /// `[ssh_connection] control_path_dir` / `ANSIBLE_SSH_CONTROL_PATH_DIR`: where masters that
    /// outlive a run live (default `~/.cache/hfplay/cp`).
    pub control_path_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the settings; a value that does not parse is an error naming file and key.
    pub fn load() -> Result<Config, String> {
        let mut cfg = match find_file() {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Config::parse(&text, &path)?
            }
            None => Config::default(),
        };
        if let Ok(v) = std::env::var("ANSIBLE_HOST_KEY_CHECKING") {
            cfg.host_key_checking = Some(HostKeyPolicy::parse_setting(&v).ok_or_else(|| {
                format!(
                    "ANSIBLE_HOST_KEY_CHECKING={v:?}: {}",
                    HostKeyPolicy::EXPECTED
                )
            })?);
        }
        if let Ok(v) = std::env::var("ANSIBLE_SSH_ARGS") {
            cfg.ssh_args = Some(v);
        }
        if let Ok(v) = std::env::var("ANSIBLE_SSH_CONTROL_PATH_DIR") {
            cfg.control_path_dir = Some(expand_home(&v));
        }
        if let Ok(v) = std::env::var("ANSIBLE_ROLES_PATH") {
            cfg.roles_path = split_paths(&v);
        }
        Ok(cfg)
    }

    /// Parses the INI text of an `ansible.cfg` (`[defaults]`, and `ssh_args` of `[ssh_connection]`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, String> {
        let mut cfg = Config::default();
        let mut section = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.trim().to_string();
                continue;
            }
            let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if section == "ssh_connection" {
                match k {
                    "ssh_args" => cfg.ssh_args = Some(v.to_string()),
                    "control_path_dir" => cfg.control_path_dir = Some(expand_home(v)),
                    _ => {}
                }
            }
            if section != "defaults" {
                continue;
            }
            match k {
                "roles_path" => cfg.roles_path = split_paths(v),
                "host_key_checking" => {
                    cfg.host_key_checking =
                        Some(HostKeyPolicy::parse_setting(v).ok_or_else(|| {
                            format!(
                                "{}:{}: host_key_checking = {v:?}: {}",
                                path.display(),
                                n + 1,
                                HostKeyPolicy::EXPECTED
                            )
                        })?)
                }
                _ => {}
            }
        }
        Ok(cfg)
    }
}

fn split_paths(v: &str) -> Vec<PathBuf> {
    v.split(':')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(expand_home)
        .collect()
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn find_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ANSIBLE_CONFIG") {
        let p = PathBuf::from(p);
        let p = if p.is_dir() { p.join("ansible.cfg") } else { p };
        if p.is_file() {
            return Some(p);
        }
    }
    let mut candidates = vec![PathBuf::from("ansible.cfg")];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".ansible.cfg"));
    }
    candidates.push(PathBuf::from("/etc/ansible/ansible.cfg"));
    candidates.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_section_is_read() {
        let c = Config::parse(
            "[defaults]\nroles_path = a:b\nhost_key_checking = False\n[ssh_connection]\nroles_path = x\n",
            Path::new("ansible.cfg"),
        )
        .unwrap();
        assert_eq!(c.roles_path, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(c.host_key_checking, Some(HostKeyPolicy::Off));
        let c = Config::parse(
            "[ssh_connection]\nssh_args = -o ControlMaster=auto -o ControlPersist=60s\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(
            c.ssh_args.as_deref(),
            Some("-o ControlMaster=auto -o ControlPersist=60s")
        );
        let c =
            Config::parse("[defaults]\nhost_key_checking=accept-new\n", Path::new("f")).unwrap();
        assert_eq!(c.host_key_checking, Some(HostKeyPolicy::AcceptNew));
    }

    #[test]
    fn bad_value_names_file_line_and_key() {
        let e = Config::parse(
            "[defaults]\n\nhost_key_checking = maybe\n",
            Path::new("x/ansible.cfg"),
        )
        .unwrap_err();
        assert!(e.starts_with("x/ansible.cfg:3: host_key_checking"), "{e}");
    }
}
