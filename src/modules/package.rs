//! `package` (`ansible.builtin.package`): Ansible's generic front-end to the host's package
//! manager.
//!
//! ```yaml
//! - name: Install Memcached.
//!   package: name=memcached state=present
//! - ansible.builtin.package:
//!     name: [git, curl]
//!     state: latest
//! ```
//! As in Ansible, `package` is a proxy: it picks the backend module and hands it every argument
//! but `use`. The backend is `use` when not `auto`, else the variable `ansible_package_use`, else
//! the `pkg_mgr` fact (`ansible_pkg_mgr`), else the manager detected on the host in one round
//! trip (the `setup` module's own detection, for plays without fact gathering). On apt hosts
//! the backend is hfplay's native `apt` module, run as is: the arguments, check mode, diff and
//! result are apt's. Any other manager fails the task on that host, naming the manager: hfplay
//! has no native module for it and the fallback to Ansible's own module is not available yet.
//!
//! The names a task may give when it loads are package's own (`name`, `state`, `use`), apt's,
//! and those of the other backends roles pass through `package` (dnf/yum's `enablerepo` and
//! the like), so a role's branch for another OS loads; a misspelt name still fails at load. On
//! an apt host a name apt does not take fails the task, as Ansible's apt refuses it.

use std::sync::OnceLock;

use async_trait::async_trait;
use serde_json::Value;

use super::{apt, Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};

/// `package`'s own arguments (Ansible documents the intersection of the backends: name, state;
/// `use` selects the backend).
const OWN: &[&str] = &["name", "state", "use"];

/// Arguments of other backends (dnf, yum, zypper, apk, pacman) that roles pass through
/// `package` in tasks meant for those systems.
const OTHER_BACKENDS: &[&str] = &[
    "allowerasing",
    "available",
    "best",
    "bugfix",
    "cacheonly",
    "clean_deps",
    "conf_file",
    "disable_excludes",
    "disable_gpg_check",
    "disable_plugin",
    "disable_recommends",
    "disablerepo",
    "download_dir",
    "download_only",
    "enable_plugin",
    "enablerepo",
    "exclude",
    "extra_args",
    "force_resolution",
    "install_repoquery",
    "install_weak_deps",
    "installroot",
    "list",
    "no_cache",
    "nobest",
    "oldpackage",
    "reason",
    "releasever",
    "replacefiles",
    "repository",
    "security",
    "skip_broken",
    "sslverify",
    "type",
    "update_only",
    "use_backend",
    "validate_certs",
];

/// Every name accepted when a task loads: package's, apt's and the other backends'.
fn accepted() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<&'static str> = OWN
            .iter()
            .chain(apt::Params::accepted())
            .chain(OTHER_BACKENDS)
            .copied()
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    })
}

/// Pure: the backend named by `use` (unless `auto`), `ansible_package_use` or the `pkg_mgr`
/// fact, in that order; `None` when it must be detected on the host. An unknown fact counts
/// as not gathered.
pub fn chosen(
    use_arg: Option<&str>,
    package_use: Option<&str>,
    fact: Option<&str>,
) -> Option<String> {
    fn given(v: Option<&str>) -> Option<String> {
        v.map(str::trim)
            .filter(|m| !m.is_empty() && *m != "auto" && *m != "unknown")
            .map(str::to_string)
    }
    given(use_arg)
        .or_else(|| given(package_use))
        .or_else(|| given(fact))
}

/// Pure: apt's arguments from package's — all but `use`; a name apt does not take is refused
/// the way Ansible's apt refuses it (the others' names are accepted at load for their hosts).
pub fn apt_args(args: &Args) -> Result<Args, ModuleError> {
    let mut a = args.clone();
    a.remove("use");
    let foreign: Vec<&str> = a
        .keys()
        .map(String::as_str)
        .filter(|k| !apt::Params::accepted().contains(k))
        .collect();
    if !foreign.is_empty() {
        return Err(ModuleError::Args(format!(
            "package: unsupported parameters for apt, this host's package manager: {} (arguments of another package manager's module)",
            foreign.join(", ")
        )));
    }
    Ok(a)
}

/// The failure of a host whose package manager hfplay cannot run natively.
pub fn unsupported(manager: &str) -> ModuleError {
    if manager == "unknown" || manager.is_empty() {
        return ModuleError::Args(
            "package: could not detect a package manager on this host; set `use: apt` where apt is available".into(),
        );
    }
    ModuleError::Args(format!(
        "package: this host's package manager is '{manager}'; hfplay runs package natively only through apt, and the fallback to Ansible's own '{manager}' module is not available yet"
    ))
}

pub struct Package;

#[async_trait]
impl Module for Package {
    fn names(&self) -> &'static [&'static str] {
        &["package"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        let use_arg = match args.get("use") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(ModuleError::Args(format!(
                    "package: use must be a module name, got {other}"
                )))
            }
        };
        let var = |name: &str| {
            ctx.env
                .var(name)
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let manager = match chosen(
            use_arg,
            var("ansible_package_use").as_deref(),
            var("ansible_pkg_mgr").as_deref(),
        ) {
            Some(m) => m,
            None => {
                let r = ctx.sh(super::setup::PKG_MGR_SCRIPT).await?;
                r.stdout.trim().to_string()
            }
        };
        match super::short_name(&manager) {
            "apt" => apt::Apt.run(&apt_args(args)?, ctx).await,
            other => Err(unsupported(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Args {
        v.as_object().cloned().unwrap_or_default()
    }

    /// `use`, then `ansible_package_use`, then the fact; `auto` and an unknown fact defer.
    #[test]
    fn the_backend_is_use_then_the_variable_then_the_fact() {
        assert_eq!(
            chosen(Some("apt"), Some("dnf"), Some("yum")).as_deref(),
            Some("apt")
        );
        assert_eq!(
            chosen(Some("auto"), Some("dnf"), Some("apt")).as_deref(),
            Some("dnf")
        );
        assert_eq!(chosen(None, None, Some("apt")).as_deref(), Some("apt"));
        assert_eq!(chosen(Some("auto"), Some(""), Some("unknown")), None);
        assert_eq!(chosen(None, None, None), None);
    }

    /// apt gets everything but `use`; a dnf-only name fails on the apt host, naming it.
    #[test]
    fn apt_gets_the_arguments_but_use() {
        let a = apt_args(&args(
            json!({"name": ["git"], "state": "present", "use": "auto", "update_cache": true}),
        ))
        .unwrap();
        assert_eq!(
            a,
            args(json!({"name": ["git"], "state": "present", "update_cache": true}))
        );
        let e = apt_args(&args(json!({"name": "fail2ban", "enablerepo": "epel"})))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported parameters for apt") && e.contains("enablerepo"),
            "{e}"
        );
        // Whatever apt parses from the arguments, package hands over unchanged.
        let p: apt::Params = serde_json::from_value(Value::Object(a)).unwrap();
        let _ = p;
    }

    #[test]
    fn other_managers_fail_naming_the_manager() {
        let e = unsupported("dnf").to_string();
        assert!(
            e.contains("'dnf'") && e.contains("not available yet"),
            "{e}"
        );
        assert!(unsupported("unknown")
            .to_string()
            .contains("could not detect"));
    }

    /// Load-time names: package's, apt's, the other backends'; a typo is still unknown.
    #[test]
    fn accepted_names_cover_the_backends() {
        for n in [
            "name",
            "state",
            "use",
            "update_cache",
            "cache_valid_time",
            "enablerepo",
        ] {
            assert!(accepted().contains(&n), "{n}");
        }
        assert!(!accepted().contains(&"stat"));
        let mut sorted = accepted().to_vec();
        sorted.dedup();
        assert_eq!(sorted.len(), accepted().len());
    }

    /// The detection script names the first manager found, apt first.
    #[test]
    fn detection_names_the_first_manager_found() {
        let dir = tempfile::tempdir().unwrap();
        let detect = |cmds: &[&str]| {
            let bin = dir.path().join(cmds.join("-"));
            std::fs::create_dir_all(&bin).unwrap();
            for c in cmds {
                let p = bin.join(c);
                std::fs::write(&p, "#!/bin/sh\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(super::super::setup::PKG_MGR_SCRIPT)
                .env("PATH", &bin)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(detect(&["yum", "dnf"]), "dnf");
        assert_eq!(detect(&["yum", "apt-get"]), "apt");
        assert_eq!(detect(&["zypper"]), "zypper");
        assert_eq!(detect(&["true"]), "");
    }
}
