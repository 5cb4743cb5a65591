//! `copy`: put a file (from `content`, a controller file `src`, or with `remote_src` a file on
//! the host) at `dest`, with owner/group/mode.
//!
//! ```yaml
//! - name: airflow config
//!   ansible.builtin.copy:
//!     src: airflow.cfg          # files/ of the role, then the playbook dir
//!     dest: /opt/airflow/airflow.cfg
//!     owner: airflow
//!     mode: "0640"
//!     validate: /usr/bin/test -s %s
//! - copy: content="hello\n" dest=/tmp/hello.txt
//! ```
//! Probe (one round trip): stat + sha256 of the destination (or of `dest/<basename of src>` when
//! `dest` is a directory), plus the old content when `--diff` is on. Plan (pure): write when the
//! sha256 differs (and `force` or the file is missing), fix owner/group/mode otherwise. Apply (one
//! round trip): upload through stdin into a temp file beside `dest`, set attributes, run
//! `validate`, `mv` into place. Check mode stops after the plan (the contract's driver).
//!
//! `mode: preserve` uses the controller file's mode (with `remote_src`/`content` it is ignored).
//! Deviations: `checksum` is the sha256 of the content (Ansible returns sha1); `src` must be a
//! file (directories are refused with a clear error); `decrypt`/`local_follow` are accepted and
//! ignored.

mod put;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use crate::modules::args::{de_opt_bool, de_opt_mode, de_opt_string, de_string};
use crate::modules::contract::{execute, NativeModule, Planned};
use crate::modules::fileops::{self, Attrs};
use crate::modules::{Args, FileKind, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};

pub use put::{
    apply_put, plan, plan_put, probe_put, Observed, Plan, PutChange, PutOpts, PutSeen, Source,
};

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_content")]
    content: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    src: Option<String>,
    #[serde(deserialize_with = "de_string")]
    dest: String,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backup: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    remote_src: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_mode")]
    directory_mode: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_string")]
    validate: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    follow: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    local_follow: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    decrypt: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    checksum: Option<String>,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

/// SELinux and similar arguments Ansible accepts on every file module; hfplay ignores them.
#[derive(Debug, Default, Deserialize, ModuleArgs)]
pub struct IgnoredAttrs {
    #[serde(default)]
    pub seuser: Option<Value>,
    #[serde(default)]
    pub serole: Option<Value>,
    #[serde(default)]
    pub setype: Option<Value>,
    #[serde(default)]
    pub selevel: Option<Value>,
    #[serde(default)]
    pub unsafe_writes: Option<Value>,
    #[serde(default)]
    pub attributes: Option<Value>,
    #[serde(default)]
    pub attr: Option<Value>,
}

pub struct Copy;

#[async_trait]
impl Module for Copy {
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["copy"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

/// Module arguments with `mode: preserve` taken out (the caller then uses the controller file's
/// own mode), for copy and template.
pub struct WithPreserve<P> {
    pub p: P,
    pub preserve: bool,
}

impl<'de, P: serde::de::DeserializeOwned> Deserialize<'de> for WithPreserve<P> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (args, preserve) = take_preserve(&Args::deserialize(d)?);
        let p = serde_json::from_value(Value::Object(args)).map_err(serde::de::Error::custom)?;
        Ok(WithPreserve { p, preserve })
    }
}

/// `mode: preserve` is a value of `mode`, so the names are the inner type's.
impl<P: ModuleArgs> ModuleArgs for WithPreserve<P> {
    fn accepted() -> &'static [&'static str] {
        P::accepted()
    }
    fn required() -> &'static [&'static [&'static str]] {
        P::required()
    }
}

#[async_trait]
impl NativeModule for Copy {
    type Params = WithPreserve<Params>;
    type Observed = PutSeen;
    type Plan = PutChange;
    const NAME: &'static str = "copy";

    /// Resolves the source on the controller (arguments checked first), then probes `dest`.
    async fn probe(
        &self,
        w: &WithPreserve<Params>,
        ctx: &TaskCtx<'_>,
    ) -> Result<PutSeen, ModuleError> {
        let p = &w.p;
        let _ = (p.local_follow, p.decrypt, p.follow);
        let dest = p.dest.clone();
        let mut opts = PutOpts {
            attrs: p.attrs.clone(),
            force: p.force.unwrap_or(true),
            backup: p.backup.unwrap_or(false),
            validate: p.validate.clone(),
            directory_mode: p.directory_mode,
            expect_checksum: p.checksum.clone(),
        };
        let (base, src) = match (&p.content, &p.src) {
            (Some(_), Some(_)) => {
                return Err(ModuleError::Args(
                    "copy: src and content are mutually exclusive".into(),
                ))
            }
            (None, None) => {
                return Err(ModuleError::Args("copy: src or content is required".into()))
            }
            (Some(content), None) => {
                if dest.ends_with('/') {
                    return Err(ModuleError::Args(
                        "copy: dest must be a file path when content is given".into(),
                    ));
                }
                (None, Source::Bytes(Arc::new(content.as_bytes().to_vec())))
            }
            (None, Some(src)) if p.remote_src.unwrap_or(false) => {
                (Some(fileops::basename(src)), Source::Remote(src.clone()))
            }
            (None, Some(src)) => {
                let path = ctx.env.find_file(FileKind::Files, src).ok_or_else(|| {
                    ModuleError::Controller(format!("copy: could not find src {src:?}"))
                })?;
                if path.is_dir() {
                    return Err(ModuleError::Controller(format!(
                        "copy: src {} is a directory; hfplay copies single files only (use one task per file or unarchive)",
                        path.display()
                    )));
                }
                let data = std::fs::read(&path).map_err(|e| {
                    ModuleError::Controller(format!("copy: cannot read {}: {e}", path.display()))
                })?;
                if w.preserve {
                    opts.attrs.mode = local_mode(&path);
                }
                (Some(fileops::basename(src)), Source::Bytes(Arc::new(data)))
            }
        };
        probe_put(ctx, &dest, base, src, opts).await
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

/// `content` as Ansible takes it: a string as is; a list or dict dumped as JSON the way Python's
/// `json.dumps` does (`", "` and `": "` separators, non-ASCII escaped).
fn de_content<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(if b { "True" } else { "False" }.into()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(py_json(&other)),
    })
}

/// Python `json.dumps` formatting.
pub fn py_json(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut o = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    '\n' => o.push_str("\\n"),
                    '\r' => o.push_str("\\r"),
                    '\t' => o.push_str("\\t"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut buf = [0u16; 2];
                        for u in c.encode_utf16(&mut buf) {
                            o.push_str(&format!("\\u{:04x}", u));
                        }
                    }
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
        Value::Array(a) => format!("[{}]", a.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_json(&Value::String(k.clone())), py_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `mode: preserve` (copy/template): taken out of the arguments; the caller then uses the
/// controller file's own mode.
pub fn take_preserve(args: &Args) -> (Args, bool) {
    let mut a = args.clone();
    let preserve = matches!(a.get("mode"), Some(Value::String(s)) if s == "preserve");
    if preserve {
        a.remove("mode");
    }
    (a, preserve)
}

/// Permission bits of a controller file.
pub fn local_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
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
        let r: Result<Params, _> = serde_json::from_value(json!({"dest": "/x", "mdoe": "0644"}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn mode_preserve_is_taken_out() {
        let a: Args =
            serde_json::from_value(json!({"src": "x", "dest": "/y", "mode": "preserve"})).unwrap();
        let (b, p) = take_preserve(&a);
        assert!(p && !b.contains_key("mode"));
        let a: Args = serde_json::from_value(json!({"mode": "0644"})).unwrap();
        assert!(!take_preserve(&a).1);
    }

    #[test]
    fn dict_content_is_python_json() {
        let p: Params =
            serde_json::from_value(json!({"dest": "/x", "content": {"a": [1, "é"], "b": true}}))
                .unwrap();
        assert_eq!(p.content.unwrap(), "{\"a\": [1, \"\\u00e9\"], \"b\": true}");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        use crate::modules::fileops::parse_stat;
        let w: WithPreserve<Params> =
            serde_json::from_value(json!({"content": "hello\n", "dest": "/etc/motd"})).unwrap();
        let sha = fileops::sha256_hex(b"hello\n");
        let seen = |state: &str, sha: Option<&str>, parent: bool| PutSeen {
            dest: "/etc/motd".into(),
            src: Source::Bytes(Arc::new(b"hello\n".to_vec())),
            opts: PutOpts {
                force: true,
                ..Default::default()
            },
            at: Ok((
                Observed {
                    path: "/etc/motd".into(),
                    state: parse_stat(state).unwrap(),
                    sha256: sha.map(str::to_string),
                    parent_exists: parent,
                    before: Some(b"old\n".to_vec()),
                    src_sha256: None,
                },
                None,
            )),
        };
        let file = "S|regular file|644|root|0|root|0|6";
        let same = Copy.plan(&w, &seen(file, Some(&sha), true), true).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert!(same.outcome.diffs.is_empty());
        let other = Copy.plan(&w, &seen(file, Some("00"), true), true).unwrap();
        assert!(matches!(other.changes, Some(PutChange::Write { .. })));
        assert!(other.outcome.changed);
        assert_eq!(other.outcome.diffs[0].before, "old\n");
        assert_eq!(other.outcome.diffs[0].after, "hello\n");
        // A missing directory: check mode predicts the write, the real run fails.
        let orphan = Copy
            .plan(&w, &seen("S|absent", None, false), false)
            .unwrap();
        assert!(orphan.outcome.changed && !orphan.outcome.failed);
        assert!(
            matches!(orphan.changes, Some(PutChange::Fail(ref m)) if m == "Destination directory /etc does not exist")
        );
        let w: WithPreserve<Params> =
            serde_json::from_value(json!({"src": "a", "dest": "/b", "mode": "preserve"})).unwrap();
        assert!(w.preserve && w.p.attrs.mode.is_none());
    }

    #[tokio::test]
    async fn local_missing_directory_check_predicts_real_fails() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let dest = dir.path().join("no/such.txt").display().to_string();
        let args: Args = serde_json::from_value(json!({"content": "x", "dest": dest})).unwrap();
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.failed && o.msg.contains("does not exist"), "{o:?}");
        assert!(!dir.path().join("no").exists());
    }

    #[tokio::test]
    async fn local_copy_is_idempotent_and_check_predicts() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let dest = dir.path().join("sub.txt").display().to_string();
        let args: Args =
            serde_json::from_value(json!({"content": "hi\n", "dest": dest, "mode": "0600"}))
                .unwrap();
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert!(!std::path::Path::new(&dest).exists());
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(o.diffs[0].after, "hi\n");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hi\n");
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
        // into a directory: basename of src
        std::fs::write(dir.path().join("f.conf"), "x=1\n").unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let args: Args =
            serde_json::from_value(json!({"src": "f.conf", "dest": sub.display().to_string()}))
                .unwrap();
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(
            std::fs::read_to_string(sub.join("f.conf")).unwrap(),
            "x=1\n"
        );
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed, "{o:?}");
        // validate failure leaves the file alone
        let args: Args = serde_json::from_value(
            json!({"content": "new\n", "dest": dest, "validate": "false %s"}),
        )
        .unwrap();
        let o = Copy
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.failed, "{o:?}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hi\n");
    }
}
