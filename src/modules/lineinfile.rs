//! `lineinfile`: make sure one line is in a file (or absent), replacing the line a regexp finds.
//!
//! ```yaml
//! - name: listen on all addresses
//!   ansible.builtin.lineinfile:
//!     path: /etc/postgresql/15/main/postgresql.conf
//!     regexp: '^#?listen_addresses\s*='
//!     line: "listen_addresses = '*'"
//! - lineinfile: path=/etc/hosts line="10.0.0.5 db" insertafter=EOF
//! ```
//! Probe (one round trip): stat + the file's content. Plan: [`edit`], a pure function following
//! Ansible's rules — `regexp`/`search_string` replaces the LAST matching line (the first with
//! `firstmatch`); without a match the line is inserted after the last `insertafter` match
//! (before the last `insertbefore` match... first with `firstmatch`), at `BOF`, or at EOF; a line
//! already present exactly is left alone; `backrefs` without a match changes nothing. `absent`
//! removes every matching line. Apply (one round trip) only when the text changed (or owner/
//! group/mode differ). Check mode and `--diff` come from the same plan.
//!
//! Deviations: regular expressions are Rust `regex` syntax (Python's is nearly the same; no
//! look-around); `backrefs` understands `\1`..`\9` and `\g<name>`; files must be UTF-8.

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;

use super::args::{de_opt_bool, de_opt_string};
use super::copy::IgnoredAttrs;
use super::fileops::{self, Attrs, EditOpts};
use super::{parse, Args, Module, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    dest: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    destfile: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    line: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    regexp: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    regex: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    search_string: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    state: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    insertafter: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    insertbefore: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    create: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backrefs: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    firstmatch: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backup: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    validate: Option<String>,
    #[serde(default)]
    others: Option<serde_json::Value>,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

const ARGS: &[&str] = &[
    "path",
    "dest",
    "destfile",
    "name",
    "line",
    "value",
    "regexp",
    "regex",
    "search_string",
    "state",
    "insertafter",
    "insertbefore",
    "create",
    "backrefs",
    "firstmatch",
    "backup",
    "validate",
    "others",
    "owner",
    "group",
    "mode",
    "seuser",
    "serole",
    "setype",
    "selevel",
    "unsafe_writes",
    "attributes",
    "attr",
];

/// Where a missing line goes.
#[derive(Debug, Clone)]
pub enum Insert {
    After(Regex),
    Before(Regex),
    Eof,
    Bof,
}

/// The pure spec of one lineinfile task.
#[derive(Debug, Clone)]
pub struct Spec {
    pub present: bool,
    pub line: Option<String>,
    pub regexp: Option<Regex>,
    pub search_string: Option<String>,
    pub insert: Insert,
    pub backrefs: bool,
    pub firstmatch: bool,
    pub create: bool,
}

fn strip_eol(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

/// Python's `match.expand` for `\1`..`\9`, `\g<n>`, `\g<name>` and `\\`.
pub fn expand(template: &str, caps: &regex::Captures) -> String {
    let mut out = String::new();
    let mut it = template.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.peek().copied() {
            Some(d) if d.is_ascii_digit() => {
                it.next();
                let mut n = d.to_digit(10).unwrap_or(0) as usize;
                if let Some(e) = it.peek().and_then(|e| e.to_digit(10)) {
                    it.next();
                    n = n * 10 + e as usize;
                }
                out.push_str(caps.get(n).map(|m| m.as_str()).unwrap_or(""));
            }
            Some('g') => {
                it.next();
                if it.peek() == Some(&'<') {
                    it.next();
                    let name: String = it.by_ref().take_while(|c| *c != '>').collect();
                    let m = match name.parse::<usize>() {
                        Ok(i) => caps.get(i),
                        Err(_) => caps.name(&name),
                    };
                    out.push_str(m.map(|m| m.as_str()).unwrap_or(""));
                } else {
                    out.push_str("\\g");
                }
            }
            Some('\\') => {
                it.next();
                out.push('\\');
            }
            Some('n') => {
                it.next();
                out.push('\n');
            }
            Some('t') => {
                it.next();
                out.push('\t');
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// Pure: the new text (`None` if unchanged) and Ansible's message, from the current text
/// (`None` when the file does not exist).
pub fn edit(
    path: &str,
    current: Option<&str>,
    s: &Spec,
) -> Result<(Option<String>, String), String> {
    let text = match current {
        Some(t) => t,
        None if !s.present => return Ok((None, String::new())),
        None if !s.create => {
            return Err(format!("Destination {path} does not exist !"));
        }
        None => "",
    };
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    if s.present {
        present(&mut lines, s).map(|(changed, msg)| {
            let new = lines.concat();
            let file_created = current.is_none();
            if changed || file_created {
                (Some(new), msg)
            } else {
                (None, msg)
            }
        })
    } else {
        let before = lines.len();
        lines.retain(|l| {
            let cur = strip_eol(l);
            let found = if let Some(re) = &s.regexp {
                re.is_match(cur)
            } else if let Some(ss) = &s.search_string {
                l.contains(ss.as_str())
            } else {
                Some(cur) == s.line.as_deref()
            };
            !found
        });
        let removed = before - lines.len();
        if removed == 0 {
            Ok((None, String::new()))
        } else {
            let msg = format!("{removed} line(s) removed");
            Ok((Some(lines.concat()), msg))
        }
    }
}

fn present(lines: &mut Vec<String>, s: &Spec) -> Result<(bool, String), String> {
    let line = s
        .line
        .clone()
        .ok_or("line is required with state=present")?;
    let nl = "\n";
    // index[0]: line found by regexp/search_string/exact match; index[1]: insert position.
    let mut idx0: Option<usize> = None;
    let mut idx1: Option<usize> = None;
    let mut matched: Option<String> = None; // the matched line (for backrefs)
    if let Some(re) = &s.regexp {
        for (i, l) in lines.iter().enumerate() {
            if re.is_match(strip_eol(l)) {
                idx0 = Some(i);
                matched = Some(strip_eol(l).to_string());
                if s.firstmatch {
                    break;
                }
            }
        }
    }
    if let Some(ss) = &s.search_string {
        for (i, l) in lines.iter().enumerate() {
            if l.contains(ss.as_str()) {
                idx0 = Some(i);
                matched = Some(strip_eol(l).to_string());
                if s.firstmatch {
                    break;
                }
            }
        }
    }
    if matched.is_none() {
        let ins_re = match &s.insert {
            Insert::After(r) | Insert::Before(r) => Some(r),
            _ => None,
        };
        let mut stop_ins = false;
        for (i, l) in lines.iter().enumerate() {
            if strip_eol(l) == line {
                idx0 = Some(i);
            } else if let Some(r) = ins_re {
                if !stop_ins && r.is_match(strip_eol(l)) {
                    idx1 = Some(match s.insert {
                        Insert::After(_) => i + 1,
                        _ => i,
                    });
                    if s.firstmatch {
                        stop_ins = true;
                    }
                }
            }
        }
    }
    let added = || (true, "line added".to_string());
    if let Some(i0) = idx0 {
        let new_line = match (&s.regexp, s.backrefs, &matched) {
            (Some(re), true, Some(m)) => match re.captures(m) {
                Some(c) => expand(&line, &c),
                None => line.clone(),
            },
            _ => line.clone(),
        };
        let new_line = if new_line.ends_with(nl) {
            new_line
        } else {
            format!("{new_line}{nl}")
        };
        if lines[i0] != new_line {
            lines[i0] = new_line;
            return Ok((true, "line replaced".into()));
        }
        return Ok((false, String::new()));
    }
    if s.backrefs {
        return Ok((false, String::new()));
    }
    let ensure_trailing_nl = |lines: &mut Vec<String>| {
        if let Some(last) = lines.last_mut() {
            if !last.ends_with('\n') && !last.ends_with('\r') {
                last.push_str(nl);
            }
        }
    };
    match (&s.insert, idx1) {
        (Insert::Bof, _) => {
            lines.insert(0, format!("{line}{nl}"));
            Ok(added())
        }
        (Insert::Eof, _) | (_, None) => {
            ensure_trailing_nl(lines);
            lines.push(format!("{line}{nl}"));
            Ok(added())
        }
        (Insert::After(_), Some(i1)) => {
            if i1 == lines.len() {
                if strip_eol(&lines[i1 - 1]) != line {
                    ensure_trailing_nl(lines);
                    lines.push(format!("{line}{nl}"));
                    return Ok(added());
                }
                Ok((false, String::new()))
            } else if strip_eol(&lines[i1]) != line {
                lines.insert(i1, format!("{line}{nl}"));
                Ok(added())
            } else {
                Ok((false, String::new()))
            }
        }
        (Insert::Before(_), Some(i1)) => {
            lines.insert(i1, format!("{line}{nl}"));
            Ok(added())
        }
    }
}

fn compile(re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

fn spec_from(p: &Params) -> Result<Spec, String> {
    let present = match p.state.as_deref().unwrap_or("present") {
        "present" => true,
        "absent" => false,
        o => return Err(format!("state must be present or absent, got {o:?}")),
    };
    let regexp = p.regexp.as_ref().or(p.regex.as_ref());
    if regexp.is_some() && p.search_string.is_some() {
        return Err("regexp and search_string are mutually exclusive".into());
    }
    if p.insertafter.is_some() && p.insertbefore.is_some() {
        return Err("insertafter and insertbefore are mutually exclusive".into());
    }
    let line = p.line.clone().or_else(|| p.value.clone());
    if present && line.is_none() {
        return Err("line is required with state=present".into());
    }
    if !present && line.is_none() && regexp.is_none() && p.search_string.is_none() {
        return Err("one of line, regexp or search_string is required with state=absent".into());
    }
    let backrefs = p.backrefs.unwrap_or(false);
    if backrefs && regexp.is_none() {
        return Err("regexp is required with backrefs=true".into());
    }
    let insert = match (&p.insertafter, &p.insertbefore) {
        (Some(a), _) if a == "EOF" => Insert::Eof,
        (Some(a), _) if a == "BOF" => Insert::Bof,
        (Some(a), _) => Insert::After(compile(a)?),
        (None, Some(b)) if b == "BOF" => Insert::Bof,
        (None, Some(b)) if b == "EOF" => Insert::Eof,
        (None, Some(b)) => Insert::Before(compile(b)?),
        (None, None) => Insert::Eof,
    };
    Ok(Spec {
        present,
        line,
        regexp: regexp.map(|r| compile(r)).transpose()?,
        search_string: p.search_string.clone(),
        insert,
        backrefs,
        firstmatch: p.firstmatch.unwrap_or(false),
        create: p.create.unwrap_or(false),
    })
}

pub struct LineInFile;

#[async_trait]
impl Module for LineInFile {
    literal_params!("lineinfile");
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[&["path", "dest", "destfile", "name"]]
    }
    fn names(&self) -> &'static [&'static str] {
        &["lineinfile"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        ARGS
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        let p: Params = parse("lineinfile", args)?;
        let _ = &p.others;
        let path = p
            .path
            .clone()
            .or_else(|| p.dest.clone())
            .or_else(|| p.destfile.clone())
            .or_else(|| p.name.clone())
            .ok_or_else(|| ModuleError::Args("lineinfile: path is required".into()))?;
        let spec = spec_from(&p).map_err(|e| ModuleError::Args(format!("lineinfile: {e}")))?;
        let o = EditOpts {
            path: &path,
            attrs: &p.attrs,
            validate: p.validate.as_deref(),
            backup: p.backup.unwrap_or(false),
            create: spec.create,
        };
        fileops::edit_text(ctx, &o, |cur| edit(&path, cur, &spec)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::{json, Value};

    fn spec(v: Value) -> Spec {
        let p: Params = serde_json::from_value(v).unwrap();
        spec_from(&p).unwrap()
    }
    fn run(text: &str, v: Value) -> Option<String> {
        edit("/f", Some(text), &spec(v)).unwrap().0
    }

    #[test]
    fn every_arg_is_accepted() {
        let m: serde_json::Map<String, Value> =
            ARGS.iter().map(|k| (k.to_string(), Value::Null)).collect();
        let r: Result<Params, _> = serde_json::from_value(Value::Object(m));
        assert!(r.is_ok(), "{r:?}");
        let r: Result<Params, _> = serde_json::from_value(json!({"path": "/x", "lien": "a"}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn regexp_replaces_last_match() {
        let t = "a=1\nb=2\na=3\n";
        assert_eq!(
            run(t, json!({"regexp": "^a=", "line": "a=9"})).unwrap(),
            "a=1\nb=2\na=9\n"
        );
        assert_eq!(
            run(
                t,
                json!({"regexp": "^a=", "line": "a=9", "firstmatch": true})
            )
            .unwrap(),
            "a=9\nb=2\na=3\n"
        );
        // already right: no change
        assert_eq!(
            run("a=1\nb=2\na=9\n", json!({"regexp": "^a=", "line": "a=9"})),
            None
        );
    }

    #[test]
    fn no_match_appends_at_eof() {
        assert_eq!(
            run("x\n", json!({"regexp": "^a=", "line": "a=1"})).unwrap(),
            "x\na=1\n"
        );
        // missing final newline is fixed before appending
        assert_eq!(run("x", json!({"line": "a=1"})).unwrap(), "x\na=1\n");
        assert_eq!(run("", json!({"line": "a=1"})).unwrap(), "a=1\n");
    }

    #[test]
    fn exact_line_present_is_unchanged() {
        assert_eq!(run("a\nb\nc\n", json!({"line": "b"})), None);
        assert_eq!(
            run("a\nb\nc\n", json!({"line": "b", "insertafter": "^c"})),
            None
        );
        assert_eq!(
            run("a\nb\nc\n", json!({"line": "b", "insertbefore": "BOF"})),
            None
        );
    }

    #[test]
    fn insertafter_and_insertbefore() {
        let t = "[main]\nx=1\n[other]\ny=2\n";
        assert_eq!(
            run(t, json!({"line": "z=3", "insertafter": "^\\[main\\]"})).unwrap(),
            "[main]\nz=3\nx=1\n[other]\ny=2\n"
        );
        assert_eq!(
            run(t, json!({"line": "z=3", "insertbefore": "^\\[other\\]"})).unwrap(),
            "[main]\nx=1\nz=3\n[other]\ny=2\n"
        );
        assert_eq!(
            run(t, json!({"line": "z=3", "insertbefore": "BOF"})).unwrap(),
            "z=3\n[main]\nx=1\n[other]\ny=2\n"
        );
        // insertafter that does not match: EOF
        assert_eq!(
            run("a\n", json!({"line": "z", "insertafter": "^nomatch"})).unwrap(),
            "a\nz\n"
        );
        // insertafter matches the last line
        assert_eq!(
            run("a\nb", json!({"line": "z", "insertafter": "^b"})).unwrap(),
            "a\nb\nz\n"
        );
        // regexp wins over insertafter when it matches
        assert_eq!(
            run(
                t,
                json!({"regexp": "^y=", "line": "y=5", "insertafter": "^\\[main\\]"})
            )
            .unwrap(),
            "[main]\nx=1\n[other]\ny=5\n"
        );
        // insertafter uses the last match
        assert_eq!(
            run("k\nm\nk\n", json!({"line": "z", "insertafter": "^k"})).unwrap(),
            "k\nm\nk\nz\n"
        );
    }

    #[test]
    fn backrefs() {
        let t = "port = 5432\n";
        assert_eq!(
            run(t, json!({"regexp": "^port = (\\d+)", "line": "port = \\1 # was \\g<1>", "backrefs": true}))
                .unwrap(),
            "port = 5432 # was 5432\n"
        );
        // no match with backrefs: nothing happens
        assert_eq!(
            run(
                t,
                json!({"regexp": "^nope(.*)", "line": "x\\1", "backrefs": true})
            ),
            None
        );
    }

    #[test]
    fn search_string_and_absent() {
        let t = "a.b=1\nc=2\na.b=3\n";
        assert_eq!(
            run(t, json!({"search_string": "a.b", "line": "a.b=0"})).unwrap(),
            "a.b=1\nc=2\na.b=0\n"
        );
        assert_eq!(
            run(t, json!({"regexp": "^a", "state": "absent"})).unwrap(),
            "c=2\n"
        );
        assert_eq!(
            run(t, json!({"line": "c=2", "state": "absent"})).unwrap(),
            "a.b=1\na.b=3\n"
        );
        assert_eq!(run(t, json!({"line": "zzz", "state": "absent"})), None);
        let (_, msg) = edit(
            "/f",
            Some(t),
            &spec(json!({"regexp": "^a", "state": "absent"})),
        )
        .unwrap();
        assert_eq!(msg, "2 line(s) removed");
    }

    #[test]
    fn missing_file() {
        let s = spec(json!({"line": "a"}));
        assert!(edit("/f", None, &s).unwrap_err().contains("does not exist"));
        let s = spec(json!({"line": "a", "create": true}));
        assert_eq!(edit("/f", None, &s).unwrap().0.unwrap(), "a\n");
        let s = spec(json!({"line": "a", "state": "absent"}));
        assert_eq!(edit("/f", None, &s).unwrap().0, None);
    }

    #[test]
    fn replacing_unterminated_last_line_adds_newline() {
        // Ansible compares with the line separator, so this reports "line replaced".
        assert_eq!(
            run("a=1", json!({"regexp": "^a", "line": "a=1"})).unwrap(),
            "a=1\n"
        );
    }

    #[tokio::test]
    async fn local_lineinfile_through_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let real = dir.path().join("real.conf");
        std::fs::write(&real, "a=1\n").unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let args: Args =
            serde_json::from_value(json!({"path": link.display().to_string(), "line": "b=2"}))
                .unwrap();
        let o = LineInFile
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "a=1\nb=2\n");
    }

    #[tokio::test]
    async fn local_lineinfile() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let f = dir.path().join("c.conf");
        std::fs::write(&f, "a=1\n").unwrap();
        let args: Args = serde_json::from_value(
            json!({"path": f.display().to_string(), "regexp": "^a=", "line": "a=2", "mode": "0600"}),
        )
        .unwrap();
        let o = LineInFile
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(o.changed && o.diffs[0].after == "a=2\n", "{o:?}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a=1\n");
        let o = LineInFile
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a=2\n");
        let o = LineInFile
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed, "{o:?}");
    }
}
