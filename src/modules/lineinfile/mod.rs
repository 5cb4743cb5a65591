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
    line: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    regexp: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    regex: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    search_string: Option<String>,
    #[serde(default)]
    state: Option<State>,
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
    let present = p.state.unwrap_or_default() == State::Present;
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
            .ok_or_else(|| ModuleError::Args("lineinfile: path is required".into()))
    }
    fn spec(&self) -> Result<Spec, ModuleError> {
        spec_from(self).map_err(|e| ModuleError::Args(format!("lineinfile: {e}")))
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
impl NativeModule for LineInFile {
    type Params = Params;
    type Observed = TextSeen;
    type Plan = TextChange;
    const NAME: &'static str = "lineinfile";

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
mod tests;
