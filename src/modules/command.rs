//! `command` and `shell`: run a command on the host.
//!
//! ```yaml
//! - name: initialise the database once
//!   ansible.builtin.command: airflow db migrate
//!   args:
//!     creates: /opt/airflow/.migrated
//!     chdir: /opt/airflow
//! - shell: "ls /etc | wc -l > /tmp/count"
//! ```
//! `command` runs argv without a shell (words split like Ansible's `shlex`); `shell` runs the
//! string with `/bin/sh`. Both report `changed` unless `creates`/`removes` say there is nothing to
//! do. In check mode they are skipped (Ansible does the same), except when `creates`/`removes`
//! are given: then the guard decides and check mode reports `ok` or `changed` like the real run.
//! On the contract: the probe checks the guards, the plan is always to run unless a guard says
//! otherwise (a command cannot be predicted), and its prediction is that check-mode report.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_list, de_opt_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::words::shell_words;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    _raw_params: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    cmd: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    argv: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_string")]
    creates: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    removes: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    chdir: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    executable: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    stdin: Option<String>,
    #[serde(default)]
    stdin_add_newline: Option<bool>,
    #[serde(default)]
    strip_empty_ends: Option<bool>,
    #[serde(default, rename = "warn")]
    _warn: Option<Value>,
}

pub struct Command;
pub struct Shell;

/// What the `creates`/`removes` guards found (`None`: not given, or not asked because the other
/// guard already decided).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub creates_exists: Option<bool>,
    pub removes_exists: Option<bool>,
}

/// The command and the shell module: the same contract, `use_shell` apart.
macro_rules! command_module {
    ($ty:ident, $name:literal, $use_shell:expr) => {
        #[async_trait]
        impl Module for $ty {
            literal_params!($name);
            fn names(&self) -> &'static [&'static str] {
                &[$name]
            }
            fn arg_names(&self) -> &'static [&'static str] {
                Params::accepted()
            }
            fn free_form(&self) -> bool {
                true
            }
            async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
                execute(self, args, ctx).await
            }
        }

        #[async_trait]
        impl NativeModule for $ty {
            type Params = Params;
            type Observed = Observed;
            /// The script to run.
            type Plan = String;
            const NAME: &'static str = $name;

            async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
                probe(p, $use_shell, ctx).await
            }
            fn plan(
                &self,
                p: &Params,
                seen: &Observed,
                _diff: bool,
            ) -> Result<Planned<String>, ModuleError> {
                plan(p, $use_shell, seen)
            }
            async fn apply(
                &self,
                p: &Params,
                script: String,
                _predicted: Outcome,
                ctx: &TaskCtx<'_>,
            ) -> Result<Outcome, ModuleError> {
                apply(p, &script, ctx).await
            }
        }
    };
}

command_module!(Command, "command", false);
command_module!(Shell, "shell", true);

/// Builds the remote script: guards for creates/removes, then the command itself.
fn script(use_shell: bool, p: &Params) -> Result<String, ModuleError> {
    let text = p.cmd.clone().or_else(|| p._raw_params.clone());
    let body = if use_shell {
        let text = text.ok_or_else(|| ModuleError::Args("shell: no command given".into()))?;
        match &p.executable {
            Some(exe) => format!("{} -c {}", quote(exe), quote(&text)),
            None => format!("sh -c {}", quote(&text)),
        }
    } else {
        let words = match (&p.argv, text) {
            (Some(argv), _) => argv.clone(),
            (None, Some(t)) => shell_words(&t),
            (None, None) => return Err(ModuleError::Args("command: no command given".into())),
        };
        if words.is_empty() {
            return Err(ModuleError::Args("command: no command given".into()));
        }
        words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
    };
    let mut s = String::new();
    if let Some(dir) = &p.chdir {
        s.push_str(&format!("cd {} || exit 111; ", quote(dir)));
    }
    s.push_str("exec ");
    s.push_str(&body);
    if p.stdin.is_none() {
        s.push_str(" </dev/null");
    }
    Ok(s)
}

/// The guards, checked on the host first: the outcome may already be decided. The script is
/// built first so a missing command fails before the host is touched.
async fn probe(p: &Params, use_shell: bool, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
    script(use_shell, p)?;
    let mut seen = Observed::default();
    if let Some(path) = &p.creates {
        let r = ctx.sh(&format!("test -e {}", quote(path))).await?;
        seen.creates_exists = Some(r.rc == 0);
        if r.rc == 0 {
            return Ok(seen);
        }
    }
    if let Some(path) = &p.removes {
        let r = ctx.sh(&format!("test -e {}", quote(path))).await?;
        seen.removes_exists = Some(r.rc == 0);
    }
    Ok(seen)
}

/// Pure. A command's effect cannot be predicted: unless a guard says there is nothing to do, the
/// plan is to run it, and the prediction says what Ansible's check mode reports: with
/// `creates`/`removes` the guard decided, so changed; without them the command is skipped.
fn plan(p: &Params, use_shell: bool, seen: &Observed) -> Result<Planned<String>, ModuleError> {
    let script = script(use_shell, p)?;
    let skipped = |msg: String| {
        Planned::nothing(
            Outcome::ok()
                .with_msg(msg)
                .with("rc", 0)
                .with("stdout", "")
                .with("stdout_lines", Value::Array(vec![])),
        )
    };
    if let (Some(path), Some(true)) = (&p.creates, seen.creates_exists) {
        return Ok(skipped(format!("skipped, since {path} exists")));
    }
    if let (Some(path), Some(false)) = (&p.removes, seen.removes_exists) {
        return Ok(skipped(format!("skipped, since {path} does not exist")));
    }
    if p.creates.is_some() || p.removes.is_some() {
        return Ok(Planned::change(
            script,
            Outcome::changed(true).with_msg("Command would have run if not in check mode"),
        ));
    }
    let mut o = Outcome::changed(false);
    o.skipped = true;
    o.msg = "command would have run (check mode)".into();
    Ok(Planned::change(script, o))
}

async fn apply(p: &Params, script: &str, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
    let cmd_text = p
        .cmd
        .clone()
        .or_else(|| p._raw_params.clone())
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let r = match &p.stdin {
        Some(input) => {
            let mut data = input.clone();
            if p.stdin_add_newline.unwrap_or(true) {
                data.push('\n');
            }
            ctx.sh_stdin(script, data.as_bytes()).await?
        }
        None => ctx.sh(script).await?,
    };
    let strip = p.strip_empty_ends.unwrap_or(true);
    let stdout = if strip {
        r.stdout.trim_end_matches('\n').to_string()
    } else {
        r.stdout.clone()
    };
    let stderr = if strip {
        r.stderr.trim_end_matches('\n').to_string()
    } else {
        r.stderr.clone()
    };
    let lines = |s: &str| Value::Array(s.lines().map(|l| Value::String(l.to_string())).collect());
    let mut o = Outcome::changed(true)
        .with("cmd", cmd_text)
        .with("rc", r.rc)
        .with("stdout_lines", lines(&stdout))
        .with("stderr_lines", lines(&stderr))
        .with("stdout", stdout)
        .with("stderr", stderr.clone())
        .with("delta", format!("{:.3}s", started.elapsed().as_secs_f64()));
    if r.rc != 0 {
        o.failed = true;
        o.msg = if r.rc == 111 && p.chdir.is_some() {
            format!("cannot chdir to {}", p.chdir.as_deref().unwrap_or(""))
        } else {
            "non-zero return code".into()
        };
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_quotes_words_and_chdir() {
        let s = script(
            false,
            &params(json!({"_raw_params": "echo 'a b' c", "chdir": "/tmp"})),
        )
        .unwrap();
        assert_eq!(s, "cd /tmp || exit 111; exec echo 'a b' c </dev/null");
    }

    #[test]
    fn shell_wraps_text() {
        let s = script(true, &params(json!({"cmd": "ls | wc -l"}))).unwrap();
        assert_eq!(s, "exec sh -c 'ls | wc -l' </dev/null");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p = params(json!({"_raw_params": "airflow db migrate", "creates": "/opt/.m"}));
        let seen = |e| Observed {
            creates_exists: Some(e),
            removes_exists: None,
        };
        let done = Command.plan(&p, &seen(true), false).unwrap();
        assert!(done.changes.is_none() && !done.outcome.changed);
        assert_eq!(done.outcome.msg, "skipped, since /opt/.m exists");
        assert_eq!(done.outcome.data["rc"], json!(0));
        let due = Command.plan(&p, &seen(false), false).unwrap();
        assert_eq!(
            due.changes.as_deref(),
            Some("exec airflow db migrate </dev/null")
        );
        assert!(due.outcome.changed && !due.outcome.skipped);
        // Without a guard nothing can be predicted: check mode skips.
        let p = params(json!({"cmd": "ls | wc -l"}));
        let blind = Shell.plan(&p, &Observed::default(), false).unwrap();
        assert!(blind.changes.is_some() && blind.outcome.skipped && !blind.outcome.changed);
        let p = params(json!({"_raw_params": "x", "removes": "/gone"}));
        let gone = Observed {
            removes_exists: Some(false),
            ..Default::default()
        };
        let none = Command.plan(&p, &gone, false).unwrap();
        assert!(none.changes.is_none());
        assert_eq!(none.outcome.msg, "skipped, since /gone does not exist");
    }

    #[test]
    fn unknown_argument_is_rejected() {
        let r: Result<Params, _> = serde_json::from_value(json!({"cmd": "x", "crates": "/a"}));
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("unknown field `crates`"));
    }
}
