//! `pip`: Python packages, optionally in a virtualenv.
//!
//! ```yaml
//! - name: airflow in a venv
//!   ansible.builtin.pip:
//!     name: ["apache-airflow==3.3.2", "celery==5.6.3", "kombu==5.6.2"]
//!     virtualenv: /opt/airflow/venv
//!     virtualenv_command: python3 -m venv
//!     extra_args: "-c /opt/airflow/constraints.txt"
//! - pip:
//!     requirements: /opt/app/requirements.txt   # a path on the target, as in Ansible
//!     virtualenv: /opt/app/venv
//! ```
//! Probe (one round trip): does `<virtualenv>/bin/python` exist, and `pip list --format=freeze`;
//! with `requirements` or `state: latest` also `pip install --dry-run --quiet --report -` (pip ≥
//! 22.2), whose `install` list says exactly what a real install would do. Plan (pure,
//! [`plan_names`]): per requirement — missing, or installed version not satisfying the
//! specifier (`==`, `!=`, `>=`, `<=`, `>`, `<`, `~=`, `==1.2.*`) → install; `absent` → uninstall
//! what is installed. Apply: create the venv if missing (changed), then one `pip install` /
//! `pip uninstall`. Check mode reports the same plan (a missing venv predicts changed).
//!
//! Deviations: `virtualenv_command` defaults to `python3 -m venv` (Ansible: `virtualenv`);
//! names that are URLs or paths cannot be probed and always install (changed); without
//! `--report` support (pip < 22.2) requirement files always install and report changed.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_list, de_opt_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

mod plan;
pub use plan::{
    canonical, parse_freeze, parse_req, plan_names, report_installs, satisfies, vcmp, State,
};

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_list")]
    name: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    requirements: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    virtualenv: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    virtualenv_command: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    virtualenv_site_packages: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    virtualenv_python: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    extra_args: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_string")]
    executable: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    chdir: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    editable: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    umask: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    break_system_packages: Option<bool>,
}

pub struct Pip;

/// The arguments resolved and checked, before the host is touched.
struct Settings {
    state: State,
    /// `name`, with `version` applied.
    names: Vec<String>,
    /// How to call pip (the venv's python, `executable`, or `python3 -m pip`).
    pip: String,
    /// umask and chdir before each pip run (`exit 111`: chdir failed).
    prefix: String,
    extra: String,
    bsp: &'static str,
}

impl Params {
    fn settings(&self) -> Result<Settings, ModuleError> {
        let state = self.state.unwrap_or(State::Present);
        let mut names = self.name.clone().unwrap_or_default();
        // An empty version means no pin, as in Ansible (roles default it to '').
        if let Some(v) = self.version.as_deref().filter(|v| !v.trim().is_empty()) {
            if names.len() != 1 {
                return Err(ModuleError::Args(
                    "pip: version needs exactly one name".into(),
                ));
            }
            names[0] = format!("{}=={v}", names[0]);
        }
        if names.is_empty() && self.requirements.is_none() {
            return Err(ModuleError::Args(
                "pip: one of name or requirements is required".into(),
            ));
        }
        if self.executable.is_some() && self.virtualenv.is_some() {
            return Err(ModuleError::Args(
                "pip: executable and virtualenv are mutually exclusive".into(),
            ));
        }
        let pip = match (&self.virtualenv, &self.executable) {
            (Some(venv), _) => format!("{}/bin/python -m pip", quote(venv.trim_end_matches('/'))),
            (None, Some(exe)) => quote(exe),
            (None, None) => "python3 -m pip".into(),
        };
        let mut prefix = String::from("export PIP_DISABLE_PIP_VERSION_CHECK=1; ");
        if let Some(u) = &self.umask {
            prefix.push_str(&format!("umask {}; ", quote(u)));
        }
        if let Some(d) = &self.chdir {
            prefix.push_str(&format!("cd {} || exit 111; ", quote(d)));
        }
        Ok(Settings {
            state,
            names,
            pip,
            prefix,
            extra: self.extra_args.clone().unwrap_or_default(),
            bsp: if self.break_system_packages.unwrap_or(false) {
                " --break-system-packages"
            } else {
                ""
            },
        })
    }
}

/// What pip reported in an existing environment.
#[derive(Debug, Clone, Default)]
pub struct Packages {
    /// `chdir` failed (nothing else was read).
    pub chdir_failed: bool,
    /// Canonical name → installed version (`pip list --format=freeze`).
    pub installed: std::collections::BTreeMap<String, String>,
    /// The output of `pip install --dry-run --report -`, when one ran.
    pub dry: Option<String>,
}

/// What the probe saw.
#[derive(Debug, Clone)]
pub enum Observed {
    /// `virtualenv` has no `bin/python` yet: nothing in it can be probed before it exists.
    NoVenv,
    Packages(Packages),
}

/// The changes to make.
pub enum Changes {
    /// Create the virtualenv, then probe, plan and install into it.
    CreateVenv,
    /// `pip install`/`uninstall` of these names, and of the requirements file if `req`.
    Pip { names: Vec<String>, req: bool },
}

/// Reads the installed packages and, where the plan needs it, what pip would install. In a venv
/// created by this run everything will be installed, so a dry run (which resolves and downloads
/// the whole set) would only double the work.
async fn probe_packages(
    p: &Params,
    s: &Settings,
    venv_created: bool,
    ctx: &TaskCtx<'_>,
) -> Result<Packages, ModuleError> {
    let (prefix, pip, bsp, extra) = (&s.prefix, &s.pip, s.bsp, &s.extra);
    let dry_target = match (&p.requirements, s.state) {
        _ if venv_created => None,
        (Some(req), State::Present | State::Latest) => Some(format!("-r {}", quote(req))),
        (None, State::Latest) => Some(
            s.names
                .iter()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    let upgrade = if s.state == State::Latest { " -U" } else { "" };
    let mut probe = format!("{prefix}{pip} list --format=freeze 2>/dev/null | sed 's/^/F|/'");
    if let Some(t) = &dry_target {
        probe.push_str(&format!(
            "; echo 'DRY|'; {pip} install{bsp}{upgrade} --dry-run --quiet --report - {extra} {t} 2>&1"
        ));
    }
    let r = ctx.sh(&probe).await?;
    Ok(Packages {
        chdir_failed: r.rc == 111,
        installed: parse_freeze(&r.stdout),
        dry: r.stdout.split_once("DRY|\n").map(|(_, d)| d.to_string()),
    })
}

/// Pure: the pip run for what was probed, and the result (`venv_created`: this run made the
/// venv, which is itself the change).
fn plan_packages(p: &Params, s: &Settings, pk: &Packages, venv_created: bool) -> Planned<Changes> {
    if pk.chdir_failed {
        return Planned::nothing(Outcome::failed(format!(
            "cannot chdir to {}",
            p.chdir.clone().unwrap_or_default()
        )));
    }
    let (state, names) = (s.state, &s.names);
    let mut todo_names = match state {
        State::Latest => Vec::new(),
        _ => plan_names(state, names, &pk.installed),
    };
    let mut req_todo = false;
    let mut would = Vec::new();
    if let Some(d) = &pk.dry {
        match report_installs(d) {
            Some(list) => would = list,
            None if d.contains("no such option") => {
                // old pip: cannot predict; install.
                would.push("(unknown: pip without --report)".into());
            }
            None => {
                return Planned::nothing(Outcome::failed(format!(
                    "pip dry run failed: {}",
                    d.trim()
                )))
            }
        }
        if !would.is_empty() {
            if p.requirements.is_some() {
                req_todo = true;
            }
            if state == State::Latest && p.requirements.is_none() {
                todo_names = names.clone();
            }
        }
    }
    if p.requirements.is_some() && state == State::ForceReinstall {
        req_todo = true;
    }
    if p.requirements.is_some() && state == State::Absent {
        req_todo = true;
    }
    if p.requirements.is_some() && venv_created && state != State::Absent {
        req_todo = true;
    }
    let mut out = venv_outcome(p);
    out.changed = venv_created || !todo_names.is_empty() || req_todo;
    out = out
        .with("name", Value::from(names.clone()))
        .with("would_install", Value::from(would));
    if let Some(r) = &p.requirements {
        out = out.with("requirements", r.clone());
    }
    if todo_names.is_empty() && !req_todo {
        return Planned::nothing(out);
    }
    Planned::change(
        Changes::Pip {
            names: todo_names,
            req: req_todo,
        },
        out,
    )
}

fn venv_outcome(p: &Params) -> Outcome {
    let mut out = Outcome::ok();
    if let Some(v) = &p.virtualenv {
        out = out.with("virtualenv", v.clone());
    }
    out
}

/// Runs the planned `pip install`/`uninstall`.
async fn run_pip(
    p: &Params,
    s: &Settings,
    todo_names: &[String],
    req_todo: bool,
    mut out: Outcome,
    ctx: &TaskCtx<'_>,
) -> Result<Outcome, ModuleError> {
    let (prefix, pip, bsp, extra) = (&s.prefix, &s.pip, s.bsp, &s.extra);
    let editable = if p.editable.unwrap_or(false) {
        " -e"
    } else {
        ""
    };
    let q_names: Vec<String> = todo_names.iter().map(|n| quote(n)).collect();
    let req = p
        .requirements
        .as_ref()
        .map(|r| format!(" -r {}", quote(r)))
        .unwrap_or_default();
    let cmd = match s.state {
        State::Absent => {
            let list = format!("{}{}", q_names.join(" "), req);
            format!("{pip} uninstall -y{bsp} {extra} {list}")
        }
        state => {
            let force = match state {
                State::ForceReinstall => " -U --force-reinstall",
                State::Latest => " -U",
                _ => "",
            };
            let mut list = String::new();
            if !q_names.is_empty() {
                list.push_str(&format!("{editable} {}", q_names.join(" ")));
            }
            if req_todo {
                list.push_str(&req);
            }
            format!("{pip} install{bsp}{force} {extra}{list}")
        }
    };
    let r = ctx.sh(&format!("{prefix}{cmd}")).await?;
    out = out
        .with("cmd", cmd)
        .with("stdout", r.stdout.clone())
        .with("stderr", r.stderr.clone());
    if r.rc != 0 {
        out.failed = true;
        out.msg = format!(
            "pip failed (rc {}): {}",
            r.rc,
            r.stderr.trim().lines().last().unwrap_or("")
        );
    }
    Ok(out)
}

#[async_trait]
impl Module for Pip {
    literal_params!("pip");
    fn names(&self) -> &'static [&'static str] {
        &["pip"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Pip {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "pip";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let s = p.settings()?;
        if let Some(venv) = &p.virtualenv {
            let r = ctx
                .sh(&format!(
                    "[ -x {}/bin/python ] && echo 'V|1'; true",
                    quote(venv)
                ))
                .await?;
            if !r.stdout.contains("V|1") {
                return Ok(Observed::NoVenv);
            }
        }
        Ok(Observed::Packages(probe_packages(p, &s, false, ctx).await?))
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let s = p.settings()?;
        Ok(match seen {
            Observed::NoVenv => {
                let mut out = venv_outcome(p);
                out.changed = true;
                out.msg = format!(
                    "virtualenv {} would be created",
                    p.virtualenv.clone().unwrap_or_default()
                );
                Planned::change(Changes::CreateVenv, out)
            }
            Observed::Packages(pk) => plan_packages(p, &s, pk, false),
        })
    }

    async fn apply(
        &self,
        p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let s = p.settings()?;
        match c {
            Changes::Pip { names, req } => run_pip(p, &s, &names, req, out, ctx).await,
            Changes::CreateVenv => {
                let venv = p.virtualenv.clone().unwrap_or_default();
                let cmd =
                    p.virtualenv_command
                        .clone()
                        .unwrap_or_else(|| match &p.virtualenv_python {
                            Some(py) => format!("{} -m venv", quote(py)),
                            None => "python3 -m venv".into(),
                        });
                let site = if p.virtualenv_site_packages.unwrap_or(false) {
                    " --system-site-packages"
                } else {
                    ""
                };
                let py = match (&p.virtualenv_python, cmd.contains("venv")) {
                    (Some(py), false) => format!(" -p {}", quote(py)),
                    _ => String::new(),
                };
                let r = ctx
                    .sh(&format!("{}{cmd}{site}{py} {}", s.prefix, quote(&venv)))
                    .await?;
                if r.rc != 0 {
                    return Ok(Outcome::failed(format!(
                        "Failed to create virtualenv {venv}: {}{}",
                        r.stdout.trim(),
                        r.stderr.trim()
                    )));
                }
                // The new venv is probed and planned like any other; it is the change itself.
                let pk = probe_packages(p, &s, true, ctx).await?;
                match plan_packages(p, &s, &pk, true) {
                    Planned {
                        changes: Some(Changes::Pip { names, req }),
                        outcome,
                    } => run_pip(p, &s, &names, req, outcome, ctx).await,
                    planned => Ok(planned.outcome),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(
            serde_json::from_value::<Params>(json!({"name": "x", "virtual_env": "/v"})).is_err()
        );
    }

    #[test]
    fn an_empty_version_pins_nothing() {
        let settings = |v: Value| {
            serde_json::from_value::<Params>(json!({"name": ["six"], "version": v}))
                .unwrap()
                .settings()
                .map(|s| s.names)
                .map_err(|e| e.to_string())
        };
        assert_eq!(settings(json!("")).unwrap(), ["six"]);
        assert_eq!(settings(json!(" ")).unwrap(), ["six"]);
        assert_eq!(settings(json!("1.16.0")).unwrap(), ["six==1.16.0"]);
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({
            "name": ["celery==5.6.3"], "virtualenv": "/opt/v"
        }))
        .unwrap();
        let seen = |v: &str| {
            Observed::Packages(Packages {
                installed: [("celery".to_string(), v.to_string())].into(),
                ..Default::default()
            })
        };
        let same = Pip.plan(&p, &seen("5.6.3"), false).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert_eq!(same.outcome.data["virtualenv"], json!("/opt/v"));
        let old = Pip.plan(&p, &seen("5.5.0"), false).unwrap();
        assert!(matches!(
            old.changes,
            Some(Changes::Pip { ref names, req: false }) if names == &["celery==5.6.3"]
        ));
        assert!(old.outcome.changed);
        let none = Pip.plan(&p, &Observed::NoVenv, false).unwrap();
        assert!(matches!(none.changes, Some(Changes::CreateVenv)) && none.outcome.changed);
        assert_eq!(none.outcome.msg, "virtualenv /opt/v would be created");
        let r = serde_json::from_value::<Params>(json!({"name": "a", "state": "forcereinstall"}));
        assert_eq!(r.unwrap().state, Some(State::ForceReinstall));
        let bad = serde_json::from_value::<Params>(json!({"name": "a", "state": "gone"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }
}

#[cfg(test)]
mod local_tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::json;

    /// Creates a venv in a tempdir (needs python3-venv; no network: only pip itself is asked for).
    #[tokio::test]
    #[ignore]
    async fn local_venv_and_present() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let venv = dir.path().join("v").display().to_string();
        let args: Args =
            serde_json::from_value(json!({"name": ["pip"], "virtualenv": venv})).unwrap();
        let o = Pip
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(o.changed, "{o:?}");
        let o = Pip
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        let o = Pip
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
        std::fs::write(dir.path().join("req.txt"), "pip\n").unwrap();
        let args: Args = serde_json::from_value(json!({"requirements": dir.path().join("req.txt").display().to_string(), "virtualenv": venv})).unwrap();
        let o = Pip
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
    }
}
