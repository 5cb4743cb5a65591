//! `template`: render a controller-side Jinja template with the host's variables and put the
//! result at `dest` (like `copy` with `content`).
//!
//! ```yaml
//! - name: airflow.cfg
//!   ansible.builtin.template:
//!     src: airflow.cfg.j2        # templates/ of the role, then the playbook dir
//!     dest: /opt/airflow/airflow.cfg
//!     owner: airflow
//!     group: airflow
//!     mode: "0640"
//!     backup: true
//! ```
//! `mode: preserve` gives the file the template's own mode. Rendering happens on the controller; then probe (stat + sha256), plan and apply are those of
//! `copy`, so check mode and `--diff` show exactly the rendered change.
//!
//! Deviations: `lstrip_blocks`, `trim_blocks`, `block_*_string`, `variable_*_string`,
//! `comment_*_string` and `output_encoding` are accepted but the core's renderer settings apply;
//! `newline_sequence` is honoured by rewriting `\n` after rendering.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_mode, de_opt_string, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::copy::{
    apply_put, plan_put, probe_put, IgnoredAttrs, PutChange, PutOpts, PutSeen, Source, WithPreserve,
};
use super::fileops::{self, Attrs};
use super::{Args, FileKind, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};

/// The Jinja environment overrides are accepted and ignored (never read).
#[allow(dead_code)]
#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    src: String,
    #[serde(deserialize_with = "de_string")]
    dest: String,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backup: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    validate: Option<String>,
    #[serde(default, deserialize_with = "de_opt_mode")]
    directory_mode: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    follow: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    lstrip_blocks: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    trim_blocks: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    newline_sequence: Option<String>,
    #[serde(default)]
    block_start_string: Option<Value>,
    #[serde(default)]
    block_end_string: Option<Value>,
    #[serde(default)]
    variable_start_string: Option<Value>,
    #[serde(default)]
    variable_end_string: Option<Value>,
    #[serde(default)]
    comment_start_string: Option<Value>,
    #[serde(default)]
    comment_end_string: Option<Value>,
    #[serde(default)]
    output_encoding: Option<Value>,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

pub struct Template;

/// The variables Ansible's template module adds for the template (they win over the host's):
/// `ansible_managed` (Ansible's default string), `template_host` (the controller), `template_path`
/// (`src` as given), `template_fullpath`, `template_destpath`, `template_uid` (the template
/// file's owner). `template_mtime` and `template_run_date` are left out: a date in a rendered
/// file would change it on every run.
fn template_vars(src: &str, path: &std::path::Path, dest: &str) -> serde_json::Map<String, Value> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).map(|m| m.uid()).ok();
    // the owner's name from /etc/passwd (no libc call for one lookup), else the number
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let owner = uid.map(|u| {
        passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == u.to_string()).then(|| f[0].to_string())
            })
            .unwrap_or_else(|| u.to_string())
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut m = serde_json::Map::new();
    m.insert("ansible_managed".into(), Value::from("Ansible managed"));
    m.insert("template_host".into(), Value::from(host));
    m.insert("template_path".into(), Value::from(src));
    m.insert(
        "template_fullpath".into(),
        Value::from(path.display().to_string()),
    );
    m.insert("template_destpath".into(), Value::from(dest));
    m.insert(
        "template_uid".into(),
        owner.map(Value::from).unwrap_or(Value::Null),
    );
    m
}

/// Pure: applies `newline_sequence` (`\n`, `\r\n`, `\r`) to rendered text.
pub fn apply_newlines(text: &str, seq: Option<&str>) -> Result<String, String> {
    let seq = match seq.unwrap_or("\\n") {
        "\\n" | "\n" => return Ok(text.to_string()),
        "\\r\\n" | "\r\n" => "\r\n",
        "\\r" | "\r" => "\r",
        other => {
            return Err(format!(
                "newline_sequence must be \\n, \\r or \\r\\n, got {other:?}"
            ))
        }
    };
    Ok(text.replace("\r\n", "\n").replace('\n', seq))
}

#[async_trait]
impl Module for Template {
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["template"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Template {
    type Params = WithPreserve<Params>;
    type Observed = PutSeen;
    type Plan = PutChange;
    const NAME: &'static str = "template";

    /// Renders on the controller (once: the plan and the upload use the same bytes), then
    /// probes `dest`.
    async fn probe(
        &self,
        w: &WithPreserve<Params>,
        ctx: &TaskCtx<'_>,
    ) -> Result<PutSeen, ModuleError> {
        let p = &w.p;
        let _ = (p.follow, p.lstrip_blocks, p.trim_blocks);
        let (src, dest) = (&p.src, &p.dest);
        let path = ctx.env.find_file(FileKind::Templates, src).ok_or_else(|| {
            ModuleError::Controller(format!("template: could not find src {src:?}"))
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ModuleError::Controller(format!("template: cannot read {}: {e}", path.display()))
        })?;
        let rendered = ctx
            .env
            .render_with(
                &text,
                &path.display().to_string(),
                template_vars(src, &path, dest),
            )
            .map_err(ModuleError::Controller)?;
        let rendered =
            apply_newlines(&rendered, p.newline_sequence.as_deref()).map_err(ModuleError::Args)?;
        let mut attrs = p.attrs.clone();
        if w.preserve {
            attrs.mode = super::copy::local_mode(&path);
        }
        let opts = PutOpts {
            attrs,
            force: p.force.unwrap_or(true),
            backup: p.backup.unwrap_or(false),
            validate: p.validate.clone(),
            directory_mode: p.directory_mode,
            expect_checksum: None,
        };
        // Like Ansible: into a directory `dest`, the file keeps the template's own name.
        let base = fileops::basename(src).to_string();
        let bytes = Source::Bytes(Arc::new(rendered.into_bytes()));
        probe_put(ctx, dest, Some(&base), bytes, opts).await
    }

    fn plan(
        &self,
        _p: &WithPreserve<Params>,
        seen: &PutSeen,
        diff: bool,
    ) -> Result<Planned<PutChange>, ModuleError> {
        Ok(plan_put(seen, diff))
    }

    async fn apply(
        &self,
        _p: &WithPreserve<Params>,
        c: PutChange,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        apply_put(ctx, c, out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::json;

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        let r: Result<Params, _> = serde_json::from_value(Value::Object(m));
        assert!(r.is_ok(), "{r:?}");
        let r: Result<Params, _> =
            serde_json::from_value(json!({"src": "a", "dest": "/x", "dset": "/x"}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn newline_sequences() {
        assert_eq!(apply_newlines("a\nb\n", None).unwrap(), "a\nb\n");
        assert_eq!(
            apply_newlines("a\nb\n", Some("\\r\\n")).unwrap(),
            "a\r\nb\r\n"
        );
        assert!(apply_newlines("a", Some("x")).is_err());
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        use crate::modules::copy::Observed;
        use crate::modules::fileops::{parse_stat, sha256_hex};
        let w: WithPreserve<Params> =
            serde_json::from_value(json!({"src": "a.j2", "dest": "/etc/a"})).unwrap();
        let seen = |sha: &str| PutSeen {
            dest: "/etc/a".into(),
            src: Source::Bytes(Arc::new(b"port=42\n".to_vec())),
            opts: PutOpts {
                force: true,
                ..Default::default()
            },
            at: Ok((
                Observed {
                    path: "/etc/a".into(),
                    state: parse_stat("S|regular file|644|root|0|root|0|8").unwrap(),
                    sha256: Some(sha.into()),
                    parent_exists: true,
                    before: Some(b"port=1\n".to_vec()),
                    src_sha256: None,
                },
                None,
            )),
        };
        let same = Template
            .plan(&w, &seen(&sha256_hex(b"port=42\n")), true)
            .unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        let other = Template.plan(&w, &seen("00"), true).unwrap();
        assert!(other.changes.is_some() && other.outcome.changed);
        assert_eq!(other.outcome.diffs[0].after, "port=42\n");
    }

    #[test]
    fn ansible_template_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.j2");
        std::fs::write(&path, "x").unwrap();
        let v = template_vars("t.j2", &path, "/etc/t");
        assert_eq!(v["ansible_managed"], "Ansible managed");
        assert_eq!(v["template_path"], "t.j2");
        assert_eq!(v["template_fullpath"], path.display().to_string());
        assert_eq!(v["template_destpath"], "/etc/t");
        assert!(v["template_uid"].is_string(), "{v:?}");
        assert!(
            v.get("template_run_date").is_none(),
            "a date would change every run"
        );
    }

    #[tokio::test]
    async fn local_template_renders_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.conf.j2"), "answer={{ x }}\n").unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let dest = dir.path().join("out.conf").display().to_string();
        let args: Args =
            serde_json::from_value(json!({"src": "t.conf.j2", "dest": dest, "mode": 0o640}))
                .unwrap();
        let o = Template
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "answer=42\n");
        let o = Template
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(!o.changed, "{o:?}");
    }
}
