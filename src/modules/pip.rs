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
use super::{parse, Args, Module, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
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
    #[serde(default, deserialize_with = "de_opt_string")]
    state: Option<String>,
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

const ARGS: &[&str] = &[
    "name",
    "version",
    "requirements",
    "virtualenv",
    "virtualenv_command",
    "virtualenv_site_packages",
    "virtualenv_python",
    "extra_args",
    "state",
    "executable",
    "chdir",
    "editable",
    "umask",
    "break_system_packages",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Latest,
    Absent,
    ForceReinstall,
}

/// PEP 503 name normalisation.
pub fn canonical(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A parsed requirement: name (canonical), specifiers `(op, version)`. `None` for URLs/paths.
pub fn parse_req(spec: &str) -> Option<(String, Vec<(String, String)>)> {
    let s = spec.split(';').next().unwrap_or("").trim();
    if s.contains("://") || s.starts_with('.') || s.starts_with('/') || s.contains(" @ ") {
        return None;
    }
    let end = s.find(|c: char| "=<>!~[ (".contains(c)).unwrap_or(s.len());
    let name = canonical(&s[..end]);
    if name.is_empty() {
        return None;
    }
    let mut rest = &s[end..];
    if let Some(i) = rest.find(']') {
        if rest.starts_with('[') {
            rest = &rest[i + 1..];
        }
    }
    let rest = rest.trim().trim_start_matches('(').trim_end_matches(')');
    let mut specs = Vec::new();
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let op_len = part
            .find(|c: char| !"=<>!~".contains(c))
            .unwrap_or(part.len());
        let (op, v) = part.split_at(op_len);
        specs.push((op.to_string(), v.trim().to_string()));
    }
    Some((name, specs))
}

fn vparts(v: &str) -> Vec<(u64, String)> {
    v.trim()
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            (digits.parse().unwrap_or(0), p[digits.len()..].to_string())
        })
        .collect()
}

/// Simplified PEP 440 ordering (numeric release segments, then suffix text; a suffix such as
/// `rc1` sorts before the bare release).
pub fn vcmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (pa, pb) = (vparts(a), vparts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).cloned().unwrap_or((0, String::new()));
        let y = pb.get(i).cloned().unwrap_or((0, String::new()));
        match x.0.cmp(&y.0) {
            Ordering::Equal => {}
            o => return o,
        }
        match (x.1.is_empty(), y.1.is_empty()) {
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ => match x.1.cmp(&y.1) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
    Ordering::Equal
}

/// Does `installed` satisfy every `(op, version)`?
pub fn satisfies(installed: &str, specs: &[(String, String)]) -> bool {
    use std::cmp::Ordering::*;
    specs.iter().all(|(op, v)| {
        if let Some(prefix) = v.strip_suffix(".*") {
            let m = installed == prefix || installed.starts_with(&format!("{prefix}."));
            return if op == "!=" { !m } else { m };
        }
        let c = vcmp(installed, v);
        match op.as_str() {
            "==" | "===" => c == Equal,
            "!=" => c != Equal,
            ">=" => c != Less,
            "<=" => c != Greater,
            ">" => c == Greater,
            "<" => c == Less,
            "~=" => {
                // ~=1.4.5 means >=1.4.5, ==1.4.*
                let mut parts: Vec<&str> = v.split('.').collect();
                if parts.len() > 1 {
                    parts.pop();
                }
                let prefix = parts.join(".");
                c != Less && (installed == prefix || installed.starts_with(&format!("{prefix}.")))
            }
            _ => false,
        }
    })
}

/// Parses `pip list --format=freeze` lines into canonical name → version.
pub fn parse_freeze(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("F|"))
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (canonical(n), v.trim().to_string()))
        .collect()
}

/// Pure: which of `names` need installing (present) or uninstalling (absent).
pub fn plan_names(
    state: State,
    names: &[String],
    installed: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut v = Vec::new();
    for n in names {
        match (state, parse_req(n)) {
            (State::ForceReinstall, _) => v.push(n.clone()),
            (State::Absent, Some((name, _))) => {
                if installed.contains_key(&name) {
                    v.push(name);
                }
            }
            (State::Absent, None) => {}
            (_, None) => v.push(n.clone()),
            (_, Some((name, specs))) => match installed.get(&name) {
                Some(ver) if satisfies(ver, &specs) => {}
                _ => v.push(n.clone()),
            },
        }
    }
    v
}

/// Names a `pip install --dry-run --report -` JSON would install; `None` if not a report.
pub fn report_installs(out: &str) -> Option<Vec<String>> {
    let start = out.find('{')?;
    let v: Value = serde_json::from_str(out[start..].trim()).ok()?;
    let list = v.get("install")?.as_array()?;
    Some(
        list.iter()
            .map(|i| {
                let md = &i["metadata"];
                format!(
                    "{}=={}",
                    md["name"].as_str().unwrap_or("?"),
                    md["version"].as_str().unwrap_or("?")
                )
            })
            .collect(),
    )
}

pub struct Pip;

#[async_trait]
impl Module for Pip {
    literal_params!("pip");
    fn names(&self) -> &'static [&'static str] {
        &["pip"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        ARGS
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        let p: Params = parse("pip", args)?;
        let state = match p.state.as_deref().unwrap_or("present") {
            "present" => State::Present,
            "latest" => State::Latest,
            "absent" => State::Absent,
            "forcereinstall" => State::ForceReinstall,
            o => return Err(ModuleError::Args(format!("pip: unknown state {o:?}"))),
        };
        let mut names = p.name.clone().unwrap_or_default();
        if let Some(v) = &p.version {
            if names.len() != 1 {
                return Err(ModuleError::Args(
                    "pip: version needs exactly one name".into(),
                ));
            }
            names[0] = format!("{}=={v}", names[0]);
        }
        if names.is_empty() && p.requirements.is_none() {
            return Err(ModuleError::Args(
                "pip: one of name or requirements is required".into(),
            ));
        }
        if p.executable.is_some() && p.virtualenv.is_some() {
            return Err(ModuleError::Args(
                "pip: executable and virtualenv are mutually exclusive".into(),
            ));
        }
        let pip = match (&p.virtualenv, &p.executable) {
            (Some(venv), _) => format!("{}/bin/python -m pip", quote(venv.trim_end_matches('/'))),
            (None, Some(exe)) => quote(exe),
            (None, None) => "python3 -m pip".into(),
        };
        let mut prefix = String::from("export PIP_DISABLE_PIP_VERSION_CHECK=1; ");
        if let Some(u) = &p.umask {
            prefix.push_str(&format!("umask {}; ", quote(u)));
        }
        if let Some(d) = &p.chdir {
            prefix.push_str(&format!("cd {} || exit 111; ", quote(d)));
        }
        let extra = p.extra_args.clone().unwrap_or_default();
        let bsp = if p.break_system_packages.unwrap_or(false) {
            " --break-system-packages"
        } else {
            ""
        };
        let editable = if p.editable.unwrap_or(false) {
            " -e"
        } else {
            ""
        };
        let mut out = Outcome::ok();
        if let Some(v) = &p.virtualenv {
            out = out.with("virtualenv", v.clone());
        }
        // 1. the virtualenv
        let mut venv_created = false;
        if let Some(venv) = &p.virtualenv {
            let q = quote(venv);
            let r = ctx
                .sh(&format!("[ -x {q}/bin/python ] && echo 'V|1'; true"))
                .await?;
            if !r.stdout.contains("V|1") {
                venv_created = true;
                if ctx.check {
                    out.changed = true;
                    out.msg = format!("virtualenv {venv} would be created");
                    return Ok(out);
                }
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
                let r = ctx.sh(&format!("{prefix}{cmd}{site}{py} {q}")).await?;
                if r.rc != 0 {
                    return Ok(Outcome::failed(format!(
                        "Failed to create virtualenv {venv}: {}{}",
                        r.stdout.trim(),
                        r.stderr.trim()
                    )));
                }
            }
        }
        // 2. probe installed packages (and dry-run what pip would install)
        // A venv created by this run holds nothing yet: everything will be installed, so a dry
        // run (which resolves and downloads the whole set) would only double the work.
        let dry_target = match (&p.requirements, state) {
            _ if venv_created => None,
            (Some(req), State::Present | State::Latest) => Some(format!("-r {}", quote(req))),
            (None, State::Latest) => {
                Some(names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" "))
            }
            _ => None,
        };
        let upgrade = if state == State::Latest { " -U" } else { "" };
        let mut probe = format!("{prefix}{pip} list --format=freeze 2>/dev/null | sed 's/^/F|/'");
        if let Some(t) = &dry_target {
            probe.push_str(&format!(
                "; echo 'DRY|'; {pip} install{bsp}{upgrade} --dry-run --quiet --report - {extra} {t} 2>&1"
            ));
        }
        let r = ctx.sh(&probe).await?;
        if r.rc == 111 {
            return Ok(Outcome::failed(format!(
                "cannot chdir to {}",
                p.chdir.clone().unwrap_or_default()
            )));
        }
        let installed = parse_freeze(&r.stdout);
        let dry = r.stdout.split_once("DRY|\n").map(|(_, d)| d.to_string());
        // 3. plan
        let mut todo_names = match state {
            State::Latest => Vec::new(),
            _ => plan_names(state, &names, &installed),
        };
        let mut req_todo = false;
        let mut would = Vec::new();
        if let Some(d) = &dry {
            match report_installs(d) {
                Some(list) => would = list,
                None if d.contains("no such option") => {
                    // old pip: cannot predict; install.
                    would.push("(unknown: pip without --report)".into());
                }
                None => return Ok(Outcome::failed(format!("pip dry run failed: {}", d.trim()))),
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
        let changed = venv_created || !todo_names.is_empty() || req_todo;
        out.changed = changed;
        out = out
            .with("name", Value::from(names.clone()))
            .with("would_install", Value::from(would.clone()));
        if let Some(r) = &p.requirements {
            out = out.with("requirements", r.clone());
        }
        if ctx.check || (todo_names.is_empty() && !req_todo) {
            return Ok(out);
        }
        // 4. apply
        let mut cmds = Vec::new();
        let q_names: Vec<String> = todo_names.iter().map(|n| quote(n)).collect();
        let req = p
            .requirements
            .as_ref()
            .map(|r| format!(" -r {}", quote(r)))
            .unwrap_or_default();
        match state {
            State::Absent => {
                let list = format!("{}{}", q_names.join(" "), req);
                cmds.push(format!("{pip} uninstall -y{bsp} {extra} {list}"));
            }
            _ => {
                let force = if state == State::ForceReinstall {
                    " -U --force-reinstall"
                } else {
                    upgrade
                };
                let mut list = String::new();
                if !q_names.is_empty() {
                    list.push_str(&format!("{editable} {}", q_names.join(" ")));
                }
                if req_todo {
                    list.push_str(&req);
                }
                cmds.push(format!("{pip} install{bsp}{force} {extra}{list}"));
            }
        }
        let cmd = cmds.join(" && ");
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = ARGS.iter().map(|k| (k.to_string(), Value::Null)).collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(
            serde_json::from_value::<Params>(json!({"name": "x", "virtual_env": "/v"})).is_err()
        );
    }

    #[test]
    fn requirement_parsing() {
        assert_eq!(
            parse_req("Flask_Login==0.6.3"),
            Some(("flask-login".into(), vec![("==".into(), "0.6.3".into())]))
        );
        assert_eq!(
            parse_req("celery[redis]>=5.6,<5.7"),
            Some((
                "celery".into(),
                vec![(">=".into(), "5.6".into()), ("<".into(), "5.7".into())]
            ))
        );
        assert_eq!(parse_req("requests"), Some(("requests".into(), vec![])));
        assert_eq!(parse_req("git+https://x/y.git"), None);
        assert_eq!(parse_req("./pkg"), None);
    }

    #[test]
    fn version_specifiers() {
        assert!(satisfies("5.6.3", &[("==".into(), "5.6.3".into())]));
        assert!(!satisfies("5.7.0", &[("==".into(), "5.6.3".into())]));
        assert!(satisfies(
            "5.6.3",
            &[(">=".into(), "5.6".into()), ("<".into(), "5.7".into())]
        ));
        assert!(satisfies("1.10.0", &[(">".into(), "1.9".into())]));
        assert!(satisfies("1.4.7", &[("~=".into(), "1.4.5".into())]));
        assert!(!satisfies("1.5.0", &[("~=".into(), "1.4.5".into())]));
        assert!(satisfies("2.3.1", &[("==".into(), "2.3.*".into())]));
        assert!(!satisfies("2.0rc1", &[(">=".into(), "2.0".into())]));
        assert!(satisfies("3.3.2", &[("==".into(), "3.3.2.0".into())]));
    }

    #[test]
    fn plan_present_and_absent() {
        let inst = parse_freeze("F|celery==5.6.3\nF|Kombu==5.6.2\nF|flask-login==0.6.3\n");
        let names: Vec<String> = ["celery==5.6.3", "kombu==5.7.0", "Flask_Login", "redis"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            plan_names(State::Present, &names, &inst),
            vec!["kombu==5.7.0", "redis"]
        );
        assert_eq!(
            plan_names(State::Absent, &names, &inst),
            vec!["celery", "kombu", "flask-login"]
        );
        assert_eq!(plan_names(State::ForceReinstall, &names, &inst).len(), 4);
    }

    #[test]
    fn dry_run_report() {
        let r =
            r#"{"version": "1", "install": [{"metadata": {"name": "six", "version": "1.16.0"}}]}"#;
        assert_eq!(report_installs(r), Some(vec!["six==1.16.0".to_string()]));
        assert_eq!(report_installs(r#"{"install": []}"#), Some(vec![]));
        assert_eq!(report_installs("ERROR: no such option: --report"), None);
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
