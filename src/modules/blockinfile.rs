//! `blockinfile`: a block of lines between marker lines.
//!
//! ```yaml
//! - blockinfile:
//!     path: /etc/hosts
//!     marker: "# {mark} HEIRFLOW HOSTS"
//!     block: |
//!       10.0.0.5 db1
//!       10.0.0.6 db2
//! ```
//! Probe (one round trip): stat + content. Plan: [`edit`], pure and following Ansible: an
//! existing block (both markers found) is replaced in place; otherwise the block goes after the
//! last `insertafter` match, before the last `insertbefore` match, at `BOF`, or at EOF (also
//! when the regex matches nothing); an empty `block` or `state: absent` removes it;
//! `prepend_newline`/`append_newline` add blank lines around it. Apply (one round trip) only
//! when the text or owner/group/mode differ. Check mode and `--diff` come from the same plan
//! (fileops' `plan_text`).
//! Regular expressions are Rust `regex` syntax.

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;

use super::args::{de_opt_bool, de_opt_string};
use super::contract::{execute, NativeModule, Planned};
use super::copy::IgnoredAttrs;
use super::fileops::{self, Attrs, EditOpts, TextChange, TextSeen};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::modules::args::Presence as State;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    dest: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    destfile: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    block: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    content: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    marker: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    marker_begin: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    marker_end: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_string")]
    insertafter: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    insertbefore: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    create: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backup: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    validate: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    append_newline: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    prepend_newline: Option<bool>,
    #[serde(default)]
    others: Option<serde_json::Value>,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

#[derive(Debug, Clone)]
pub enum Insert {
    After(Regex),
    Before(Regex),
    Eof,
    Bof,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub begin: String,
    pub end: String,
    /// `None`: remove the block.
    pub block: Option<String>,
    pub insert: Insert,
    pub create: bool,
    pub prepend_newline: bool,
    pub append_newline: bool,
}

/// Pure: new text (`None` if unchanged) and Ansible's message.
pub fn edit(
    path: &str,
    current: Option<&str>,
    s: &Spec,
) -> Result<(Option<String>, String), String> {
    if current.is_none() && !s.create {
        return Err(format!("Path {path} does not exist !"));
    }
    let original = current.unwrap_or("");
    let mut lines: Vec<String> = original.split_inclusive('\n').map(str::to_string).collect();
    let present = s.block.is_some();
    let blocklines: Vec<String> = match &s.block {
        Some(b) => std::iter::once(s.begin.clone())
            .chain(b.lines().map(str::to_string))
            .chain(std::iter::once(s.end.clone()))
            .map(|l| format!("{l}\n"))
            .collect(),
        None => Vec::new(),
    };
    let strip = |l: &str| l.trim_end_matches(['\r', '\n']).to_string();
    let mut n0 = None;
    let mut n1 = None;
    for (i, l) in lines.iter().enumerate() {
        let t = strip(l);
        if t == s.begin {
            n0 = Some(i);
        }
        if t == s.end {
            n1 = Some(i);
        }
    }
    let mut pos = match (n0, n1) {
        (Some(a), Some(b)) => {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            lines.drain(lo..=hi);
            lo
        }
        _ => match &s.insert {
            Insert::After(re) | Insert::Before(re) => {
                let mut found = None;
                for (i, l) in lines.iter().enumerate() {
                    if re.is_match(&strip(l)) {
                        found = Some(i);
                    }
                }
                match (found, &s.insert) {
                    (None, _) => lines.len(),
                    (Some(i), Insert::After(_)) => i + 1,
                    (Some(i), _) => i,
                }
            }
            Insert::Bof => 0,
            Insert::Eof => lines.len(),
        },
    };
    if pos > 0 && !lines[pos - 1].ends_with('\n') {
        lines[pos - 1].push('\n');
    }
    if s.prepend_newline && present && pos != 0 && lines[pos - 1] != "\n" {
        lines.insert(pos, "\n".into());
        pos += 1;
    }
    let after = pos + blocklines.len();
    lines.splice(pos..pos, blocklines);
    if s.append_newline && present && after < lines.len() && lines[after] != "\n" {
        lines.insert(after, "\n".into());
    }
    let result = lines.concat();
    if current == Some(result.as_str()) {
        return Ok((None, String::new()));
    }
    let msg = if current.is_none() {
        "File created"
    } else if !present {
        "Block removed"
    } else {
        "Block inserted"
    };
    Ok((Some(result), msg.into()))
}

fn spec_from(p: &Params) -> Result<Spec, String> {
    let marker = p
        .marker
        .clone()
        .unwrap_or_else(|| "# {mark} ANSIBLE MANAGED BLOCK".into());
    let begin = marker.replace("{mark}", p.marker_begin.as_deref().unwrap_or("BEGIN"));
    let end = marker.replace("{mark}", p.marker_end.as_deref().unwrap_or("END"));
    let present = p.state.unwrap_or_default() == State::Present;
    let block = p.block.clone().or(p.content.clone()).unwrap_or_default();
    if p.insertafter.is_some() && p.insertbefore.is_some() {
        return Err("insertafter and insertbefore are mutually exclusive".into());
    }
    let re = |r: &str| Regex::new(r).map_err(|e| format!("invalid regular expression {r:?}: {e}"));
    let insert = match (&p.insertafter, &p.insertbefore) {
        (Some(a), _) if a == "EOF" => Insert::Eof,
        (Some(a), _) => Insert::After(re(a)?),
        (None, Some(b)) if b == "BOF" => Insert::Bof,
        (None, Some(b)) => Insert::Before(re(b)?),
        (None, None) => Insert::Eof,
    };
    Ok(Spec {
        begin,
        end,
        block: (present && !block.is_empty()).then_some(block),
        insert,
        create: p.create.unwrap_or(false),
        prepend_newline: p.prepend_newline.unwrap_or(false),
        append_newline: p.append_newline.unwrap_or(false),
    })
}

pub struct BlockInFile;

#[async_trait]
impl Module for BlockInFile {
    literal_params!("blockinfile");
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[&["path", "dest", "destfile", "name"]]
    }
    fn names(&self) -> &'static [&'static str] {
        &["blockinfile"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

impl Params {
    fn path(&self) -> Result<&str, ModuleError> {
        let _ = &self.others;
        self.path
            .as_deref()
            .or(self.dest.as_deref())
            .or(self.destfile.as_deref())
            .or(self.name.as_deref())
            .ok_or_else(|| ModuleError::Args("blockinfile: path is required".into()))
    }
    fn spec(&self) -> Result<Spec, ModuleError> {
        spec_from(self).map_err(|e| ModuleError::Args(format!("blockinfile: {e}")))
    }
    fn opts<'a>(&'a self, path: &'a str, spec: &Spec) -> EditOpts<'a> {
        EditOpts {
            path,
            attrs: &self.attrs,
            validate: self.validate.as_deref(),
            backup: self.backup.unwrap_or(false),
            create: spec.create,
        }
    }
}

#[async_trait]
impl NativeModule for BlockInFile {
    type Params = Params;
    type Observed = TextSeen;
    type Plan = TextChange;
    const NAME: &'static str = "blockinfile";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<TextSeen, ModuleError> {
        let path = p.path()?;
        p.spec()?;
        fileops::probe_text(ctx, path).await
    }

    fn plan(
        &self,
        p: &Params,
        seen: &TextSeen,
        diff: bool,
    ) -> Result<Planned<TextChange>, ModuleError> {
        let (path, spec) = (p.path()?, p.spec()?);
        fileops::plan_text(&p.opts(path, &spec), seen, diff, |cur| {
            edit(path, cur, &spec)
        })
    }

    async fn apply(
        &self,
        p: &Params,
        c: TextChange,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let (path, spec) = (p.path()?, p.spec()?);
        fileops::apply_text(ctx, &p.opts(path, &spec), c, out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::{json, Value};

    fn spec(v: Value) -> Spec {
        spec_from(&serde_json::from_value::<Params>(v).unwrap()).unwrap()
    }
    fn run(text: &str, v: Value) -> Option<String> {
        edit("/f", Some(text), &spec(v)).unwrap().0
    }
    const B: &str = "# BEGIN ANSIBLE MANAGED BLOCK\n";
    const E: &str = "# END ANSIBLE MANAGED BLOCK\n";

    #[test]
    fn every_arg_is_accepted() {
        let m: serde_json::Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"path": "/x", "blok": "a"})).is_err());
    }

    #[test]
    fn inserts_at_eof_and_is_idempotent() {
        let t = "a\nb";
        let out = run(t, json!({"block": "x\ny\n"})).unwrap();
        assert_eq!(out, format!("a\nb\n{B}x\ny\n{E}"));
        assert_eq!(run(&out, json!({"block": "x\ny\n"})), None);
        assert_eq!(run(&out, json!({"block": "x\ny"})), None);
    }

    #[test]
    fn replaces_in_place_and_removes() {
        let t = format!("a\n{B}old\n{E}z\n");
        assert_eq!(
            run(&t, json!({"block": "new"})).unwrap(),
            format!("a\n{B}new\n{E}z\n")
        );
        assert_eq!(
            run(&t, json!({"block": "new", "insertbefore": "BOF"})).unwrap(),
            format!("a\n{B}new\n{E}z\n")
        );
        assert_eq!(run(&t, json!({"state": "absent"})).unwrap(), "a\nz\n");
        assert_eq!(run(&t, json!({"block": ""})).unwrap(), "a\nz\n");
        assert_eq!(run("a\n", json!({"state": "absent"})), None);
    }

    #[test]
    fn insert_positions_and_custom_markers() {
        let t = "[a]\nx=1\n[b]\ny=2\n";
        assert_eq!(
            run(
                t,
                json!({"block": "k=v", "insertafter": "^\\[a\\]", "marker": "; {mark} HF"})
            )
            .unwrap(),
            "[a]\n; BEGIN HF\nk=v\n; END HF\nx=1\n[b]\ny=2\n"
        );
        assert_eq!(
            run(t, json!({"block": "k=v", "insertbefore": "^\\[b\\]", "marker": "; {mark}", "marker_begin": "START", "marker_end": "STOP"})).unwrap(),
            "[a]\nx=1\n; START\nk=v\n; STOP\n[b]\ny=2\n"
        );
        assert_eq!(
            run(t, json!({"block": "k", "insertbefore": "BOF"})).unwrap(),
            format!("{B}k\n{E}{t}")
        );
        assert_eq!(
            run(t, json!({"block": "k", "insertafter": "^nomatch"})).unwrap(),
            format!("{t}{B}k\n{E}")
        );
    }

    #[test]
    fn blank_lines_around() {
        let t = "a\nb\n";
        assert_eq!(
            run(t, json!({"block": "k", "insertafter": "^a", "prepend_newline": true, "append_newline": true})).unwrap(),
            format!("a\n\n{B}k\n{E}\nb\n")
        );
    }

    #[test]
    fn missing_file() {
        let s = spec(json!({"block": "k"}));
        assert!(edit("/f", None, &s).is_err());
        let s = spec(json!({"block": "k", "create": true}));
        let (t, m) = edit("/f", None, &s).unwrap();
        assert_eq!(t.unwrap(), format!("{B}k\n{E}"));
        assert_eq!(m, "File created");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        use crate::modules::fileops::parse_stat;
        let p: Params =
            serde_json::from_value(json!({"path": "/etc/hosts", "block": "10.0.0.5 db1"})).unwrap();
        let seen = |text: &str| TextSeen {
            real: "/etc/hosts".into(),
            state: parse_stat("S|regular file|644|root|0|root|0|9").unwrap(),
            bytes: Some(text.as_bytes().to_vec()),
        };
        let done = format!("127.0.0.1 localhost\n{B}10.0.0.5 db1\n{E}");
        let same = BlockInFile.plan(&p, &seen(&done), true).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert!(same.outcome.diffs.is_empty());
        let new = BlockInFile
            .plan(&p, &seen("127.0.0.1 localhost\n"), true)
            .unwrap();
        assert!(new.changes.is_some() && new.outcome.changed);
        assert_eq!(new.outcome.msg, "Block inserted");
        assert_eq!(new.outcome.diffs[0].after, done);
    }

    #[tokio::test]
    async fn local_blockinfile() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let f = dir.path().join("sub/hosts").display().to_string();
        let args: serde_json::Map<String, Value> =
            serde_json::from_value(json!({"path": f, "block": "10.0.0.5 db1", "create": true}))
                .unwrap();
        let o = BlockInFile
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        let o = BlockInFile
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
    }
}
