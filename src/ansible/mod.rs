//! The Ansible-module fallback: a task naming a module hfplay does not implement runs the real
//! Ansible module on the target, when an Ansible installation (ansible-core, plus the
//! collections a playbook names) is on the controller.
//!
//! ansible-core builds the payload itself ([`bridge`]: its `modify_module`, the module with the
//! module_utils it imports and its arguments, exactly what ansible-playbook ships with
//! pipelining); hfplay feeds it to the target's Python on stdin over the host's multiplexed SSH
//! connection, with the task's become and environment, and reads Ansible's result dictionary
//! back ([`remote`]). Only such tasks need Python on the target; native modules stay
//! Python-free. The recap counts them per module.
//!
//! Which installation: `HFPLAY_ANSIBLE_PYTHON` (a Python that can `import ansible`; `none`
//! turns the fallback off), else the interpreter of `ansible-playbook` on `PATH`. Without one,
//! an unknown module fails the load naming the module and this.
//!
//! Not run: modules that Ansible runs through their own action plugin on the controller (they
//! are refused at load, naming the plugin), and non-Python (PowerShell, binary) modules.

mod bridge;
mod remote;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use remote::run;

/// How to enable the fallback, for error messages.
pub const HOW_TO_ENABLE: &str = "hfplay runs modules it lacks through an Ansible installation: \
install ansible-core (and the collection) so that ansible-playbook is on PATH, or set \
HFPLAY_ANSIBLE_PYTHON to a Python that can import ansible";

/// A module resolved by the installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub fqcn: String,
    /// The module's source file on the controller.
    pub path: String,
}

/// The controller's Ansible installation, its bridge started on first use.
pub struct Fallback {
    python: PathBuf,
    bridge: Mutex<Option<Result<bridge::Bridge, String>>>,
    resolved: Mutex<HashMap<String, Result<Resolved, String>>>,
}

/// The installation, found once per process (`None`: no fallback).
pub fn fallback() -> Option<&'static Fallback> {
    static FALLBACK: OnceLock<Option<Fallback>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            find_python().map(|python| Fallback {
                python,
                bridge: Mutex::new(None),
                resolved: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

fn find_python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HFPLAY_ANSIBLE_PYTHON") {
        return (!p.is_empty() && p != "none").then(|| PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    let playbook = std::env::split_paths(&path)
        .map(|d| d.join("ansible-playbook"))
        .find(|p| p.is_file())?;
    shebang_python(&playbook)
}

/// The interpreter named by a script's `#!` line (`#!/usr/bin/env python3` → `python3`).
fn shebang_python(script: &Path) -> Option<PathBuf> {
    let text = std::fs::read(script).ok()?;
    let first = text.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(first).ok()?.strip_prefix("#!")?;
    let mut words = line.split_whitespace();
    let prog = words.next()?;
    Some(PathBuf::from(if prog.ends_with("/env") {
        words.find(|w| !w.starts_with('-'))?
    } else {
        prog
    }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fallback {
    /// Asks the bridge, starting it on first use (one start per process; a failed start is
    /// remembered and reported for every module).
    fn ask(&self, req: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut guard = lock(&self.bridge);
        let bridge = guard.get_or_insert_with(|| bridge::Bridge::start(&self.python));
        match bridge {
            Ok(b) => b.ask(&req),
            Err(e) => Err(e.clone()),
        }
    }

    /// The module `name` names in the installation (cached per name).
    pub fn resolve(&self, name: &str) -> Result<Resolved, String> {
        if let Some(r) = lock(&self.resolved).get(name) {
            return r.clone();
        }
        let r = self
            .ask(serde_json::json!({"op": "resolve", "name": name}))
            .and_then(|v| match (v["fqcn"].as_str(), v["path"].as_str()) {
                (Some(f), Some(p)) => Ok(Resolved {
                    fqcn: f.to_string(),
                    path: p.to_string(),
                }),
                _ => Err(format!("the Ansible bridge answered {v}")),
            });
        lock(&self.resolved).insert(name.to_string(), r.clone());
        r
    }

    /// The payload for one run of `module` with `args` (already templated).
    pub fn build(
        &self,
        module: &Resolved,
        args: serde_json::Value,
        opts: BuildOpts,
    ) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let v = self.ask(serde_json::json!({
            "op": "build",
            "fqcn": module.fqcn,
            "path": module.path,
            "args": args,
            "python": opts.python,
            "check": opts.check,
            "diff": opts.diff,
            "no_log": opts.no_log,
        }))?;
        let b64 = v["payload"]
            .as_str()
            .ok_or("the Ansible bridge returned no payload")?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the Ansible bridge's payload: {e}"))
    }

    pub fn python(&self) -> &Path {
        &self.python
    }
}

/// The run-time facts a payload embeds.
#[derive(Debug, Clone, Copy)]
pub struct BuildOpts<'a> {
    /// The target's interpreter (`ansible_python_interpreter`).
    pub python: &'a str,
    pub check: bool,
    pub diff: bool,
    pub no_log: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_shebang() {
        let d = tempfile::tempdir().expect("tempdir");
        for (body, want) in [
            (
                "#!/opt/venv/bin/python3\nimport x\n",
                Some("/opt/venv/bin/python3"),
            ),
            ("#!/usr/bin/env -S python3 -u\n", Some("python3")),
            ("#!/usr/bin/env python3\n", Some("python3")),
            ("no shebang\n", None),
        ] {
            let p = d.path().join("ansible-playbook");
            std::fs::write(&p, body).expect("script");
            assert_eq!(shebang_python(&p), want.map(PathBuf::from), "{body}");
        }
    }
}
