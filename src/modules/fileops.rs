//! Shared file plumbing for the file-writing modules (copy, template, file, lineinfile,
//! blockinfile, stat, get_url, unarchive): a one-line `stat` probe, the pure comparison of wanted
//! owner/group/mode against what was observed, and the shell snippets that apply them or write a
//! file atomically (temp file in the destination directory, attributes, optional validate, `mv`).
//!
//! Not a module itself: it has no `Module` impl and is not in the registry.

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::args::{de_opt_mode, de_opt_string, ModuleArgs};
use super::contract::Planned;
use super::{FileDiff, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

/// What kind of thing is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Absent,
    File,
    Dir,
    Link,
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Absent => "absent",
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Link => "link",
            Kind::Other => "other",
        }
    }
}

/// The observed state of one path (from [`stat_cmd`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub kind: Kind,
    pub mode: u32,
    pub owner: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    pub size: u64,
}

impl FileState {
    pub fn absent() -> Self {
        FileState {
            kind: Kind::Absent,
            mode: 0,
            owner: String::new(),
            uid: 0,
            group: String::new(),
            gid: 0,
            size: 0,
        }
    }
    pub fn exists(&self) -> bool {
        self.kind != Kind::Absent
    }
}

/// Prints `S|<type>|<octal mode>|<user>|<uid>|<group>|<gid>|<size>` or `S|absent` for `path`
/// (`follow` dereferences symlinks). One line, no file names in the output.
pub fn stat_cmd(path: &str, follow: bool) -> String {
    stat_word(&quote(path), follow)
}

/// [`stat_cmd`] for a shell word (`"$p"` or an already quoted path).
pub fn stat_word(q: &str, follow: bool) -> String {
    let l = if follow { "-L " } else { "" };
    format!(
        "if [ -e {q} ] || [ -L {q} ]; then stat {l}-c 'S|%F|%a|%U|%u|%G|%g|%s' -- {q} || echo 'S|absent'; else echo 'S|absent'; fi"
    )
}

/// Parses one `S|...` line; `None` if `line` is not a stat line.
pub fn parse_stat(line: &str) -> Option<FileState> {
    let rest = line.trim_end().strip_prefix("S|")?;
    if rest == "absent" {
        return Some(FileState::absent());
    }
    let f: Vec<&str> = rest.split('|').collect();
    if f.len() != 7 {
        return None;
    }
    let kind = match f[0] {
        "regular file" | "regular empty file" => Kind::File,
        "directory" => Kind::Dir,
        "symbolic link" => Kind::Link,
        _ => Kind::Other,
    };
    Some(FileState {
        kind,
        mode: u32::from_str_radix(f[1], 8).ok()?,
        owner: f[2].to_string(),
        uid: f[3].parse().ok()?,
        group: f[4].to_string(),
        gid: f[5].parse().ok()?,
        size: f[6].parse().ok()?,
    })
}

/// Finds the first `S|` line in a probe's output.
pub fn find_stat(out: &str) -> Option<FileState> {
    out.lines().find_map(parse_stat)
}

/// Wanted owner/group/mode (each optional), as the file-ish modules take them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ModuleArgs)]
pub struct Attrs {
    #[serde(default, deserialize_with = "de_opt_string")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "de_opt_mode")]
    pub mode: Option<u32>,
}

/// One attribute that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrChange {
    Owner(String),
    Group(String),
    Mode(u32),
}

/// Pure: which of `want` differ from `have` (an absent file differs in everything wanted).
pub fn attr_changes(want: &Attrs, have: &FileState) -> Vec<AttrChange> {
    let mut v = Vec::new();
    if let Some(o) = &want.owner {
        if !have.exists() || (have.owner != *o && have.uid.to_string() != *o) {
            v.push(AttrChange::Owner(o.clone()));
        }
    }
    if let Some(g) = &want.group {
        if !have.exists() || (have.group != *g && have.gid.to_string() != *g) {
            v.push(AttrChange::Group(g.clone()));
        }
    }
    if let Some(m) = want.mode {
        if !have.exists() || have.mode != m {
            v.push(AttrChange::Mode(m));
        }
    }
    v
}

/// Shell commands applying `changes` to the path held in shell word `target` (already quoted or a
/// `"$var"`). `nofollow` uses `chown -h` (symlinks themselves); modes never apply to symlinks.
pub fn attr_cmds(changes: &[AttrChange], target: &str, nofollow: bool, recurse: bool) -> String {
    let h = if nofollow { "-h " } else { "" };
    let r = if recurse { "-R " } else { "" };
    let mut s = String::new();
    for c in changes {
        match c {
            AttrChange::Owner(o) => s.push_str(&format!("chown {h}{r}{} {target} && ", quote(o))),
            AttrChange::Group(g) => s.push_str(&format!("chgrp {h}{r}{} {target} && ", quote(g))),
            AttrChange::Mode(m) => s.push_str(&format!("chmod {r}{m:04o} {target} && ")),
        }
    }
    s.push_str("true");
    s
}

/// A summary of attribute changes for a `--diff` of a non-content change.
pub fn attr_summary(have: &FileState, changes: &[AttrChange]) -> (String, String) {
    let mut before = String::new();
    let mut after = String::new();
    for c in changes {
        match c {
            AttrChange::Owner(o) => {
                before.push_str(&format!("owner: {}\n", have.owner));
                after.push_str(&format!("owner: {o}\n"));
            }
            AttrChange::Group(g) => {
                before.push_str(&format!("group: {}\n", have.group));
                after.push_str(&format!("group: {g}\n"));
            }
            AttrChange::Mode(m) => {
                before.push_str(&format!("mode: {:04o}\n", have.mode));
                after.push_str(&format!("mode: {m:04o}\n"));
            }
        }
    }
    (before, after)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Options of an atomic write.
#[derive(Debug, Clone)]
pub struct WriteOpts<'a> {
    pub attrs: &'a Attrs,
    /// `validate` command with `%s` standing for the temp file.
    pub validate: Option<&'a str>,
    /// Keep a timestamped copy of the old file (`path.<pid>.<date>~`), printed as `B|<name>`.
    pub backup: bool,
    /// Create missing parent directories (lineinfile/blockinfile `create`).
    pub mkdirs: bool,
    /// Copy this file on the host instead of reading stdin (`remote_src`).
    pub source: Option<&'a str>,
}

/// Script writing stdin to `dest` atomically: temp file beside `dest`, attributes (explicit ones,
/// else those of the file it replaces, else umask defaults), validate, backup, `mv`.
pub fn write_script(dest: &str, o: &WriteOpts) -> Result<String, ModuleError> {
    let q = quote(dest);
    let dir = parent_dir(dest);
    let qd = quote(&dir);
    let mut s = String::from("set -e; ");
    if o.mkdirs {
        s.push_str(&format!("mkdir -p -- {qd}; "));
    }
    s.push_str(&format!(
        "t=$(mktemp {}); trap 'rm -f \"$t\"' EXIT; {} > \"$t\"; ",
        quote(&format!("{dir}/.hfplay.XXXXXXXX")),
        match o.source {
            Some(src) => format!("cat -- {}", quote(src)),
            None => "cat".into(),
        }
    ));
    // Keep the replaced file's attributes unless told otherwise; new files get umask defaults.
    s.push_str(&format!(
        "if [ -e {q} ]; then chmod --reference={q} \"$t\"; chown --reference={q} \"$t\" 2>/dev/null || true; \
         else chmod $(printf '%o' $((0666 & ~$(umask)))) \"$t\"; fi; "
    ));
    let mut changes = Vec::new();
    if let Some(o) = &o.attrs.owner {
        changes.push(AttrChange::Owner(o.clone()));
    }
    if let Some(g) = &o.attrs.group {
        changes.push(AttrChange::Group(g.clone()));
    }
    if let Some(m) = o.attrs.mode {
        changes.push(AttrChange::Mode(m));
    }
    s.push_str(&attr_cmds(&changes, "\"$t\"", false, false));
    s.push_str("; ");
    if let Some(v) = o.validate {
        if !v.contains("%s") {
            return Err(ModuleError::Args(format!("validate must contain %s: {v}")));
        }
        let cmd = v.replace("%s", "\"$t\"");
        s.push_str(&format!(
            "if ! out=$( {cmd} 2>&1 ); then echo \"validation failed: $out\" >&2; exit 97; fi; "
        ));
    }
    if o.backup {
        s.push_str(&format!(
            "if [ -f {q} ]; then b={}.$$.$(date +%Y-%m-%d@%H:%M:%S)~; cp -p -- {q} \"$b\"; echo \"B|$b\"; fi; ",
            q
        ));
    }
    // A bind-mounted file (Docker's /etc/hosts) cannot be replaced by rename (EBUSY); like
    // Ansible, write it in place only when unsafe writes are allowed (ANSIBLE_UNSAFE_WRITES=1).
    s.push_str(&format!(
        "if ! mv -f -- \"$t\" {q} 2>/dev/null; then \
         if [ \"${{ANSIBLE_UNSAFE_WRITES:-}}\" = 1 ] && [ -f {q} ]; then cat -- \"$t\" > {q}; rm -f -- \"$t\"; \
         else mv -f -- \"$t\" {q}; fi; fi; trap - EXIT"
    ));
    Ok(s)
}

/// Extracts `B|<backup file>` from a write's output.
pub fn backup_name(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("B|"))
        .map(str::to_string)
}

/// `dirname` as coreutils computes it for our purposes.
pub fn parent_dir(path: &str) -> String {
    let t = path.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) => "/".into(),
        Some(i) => t[..i].to_string(),
        None => ".".into(),
    }
}

pub fn basename(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t)
}

/// Probe snippet printing the file's content as base64 between markers (`C|` start, `E|` end).
pub fn content_cmd(path: &str) -> String {
    let q = quote(path);
    format!("if [ -f {q} ]; then echo 'C|'; base64 < {q}; echo 'E|'; fi")
}

/// Extracts and decodes the content printed by [`content_cmd`].
pub fn parse_content(out: &str) -> Result<Option<Vec<u8>>, ModuleError> {
    let Some(start) = out.find("C|\n") else {
        return Ok(None);
    };
    let body = &out[start + 3..];
    let end = body.find("E|").unwrap_or(body.len());
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(Some)
        .map_err(|e| ModuleError::Controller(format!("cannot decode file content from host: {e}")))
}

/// Text for a diff: lossless for UTF-8, a placeholder for binary content.
pub fn diff_text(data: &[u8]) -> String {
    if data.contains(&0) {
        return "<binary content>\n".into();
    }
    String::from_utf8_lossy(data).into_owned()
}

pub fn file_diff(path: &str, before: &[u8], after: &[u8]) -> FileDiff {
    FileDiff {
        path: path.to_string(),
        before: diff_text(before),
        after: diff_text(after),
    }
}

/// Message of a failed write (validate exits 97).
pub fn write_error(rc: i32, stderr: &str, dest: &str) -> String {
    if rc == 97 {
        format!("failed to validate: {}", stderr.trim())
    } else {
        format!("cannot write {dest}: {}", stderr.trim())
    }
}

/// Where and how [`apply_text`] writes the file back.
#[derive(Debug, Clone)]
pub struct EditOpts<'a> {
    pub path: &'a str,
    pub attrs: &'a Attrs,
    pub validate: Option<&'a str>,
    pub backup: bool,
    pub create: bool,
}

/// What [`probe_text`] saw: the shape of lineinfile and blockinfile is probe (stat + content,
/// one round trip), pure edit ([`plan_text`]), apply ([`apply_text`], one round trip).
#[derive(Debug, Clone)]
pub struct TextSeen {
    /// The path written to: a symlink's target (e.g. /etc/resolv.conf), so the link is kept.
    pub real: String,
    pub state: FileState,
    /// The content (`None`: no file).
    pub bytes: Option<Vec<u8>>,
}

/// The planned write: new content, or (content unchanged) attributes to fix.
#[derive(Debug, Clone)]
pub struct TextChange {
    real: String,
    new: Option<String>,
    attrs: Vec<AttrChange>,
    existed: bool,
}

pub async fn probe_text(ctx: &TaskCtx<'_>, path: &str) -> Result<TextSeen, ModuleError> {
    let q = quote(path);
    let script = format!(
        "{}; {}; if [ -L {q} ]; then echo \"R|$(readlink -f -- {q})\"; fi",
        stat_cmd(path, true),
        content_cmd(path)
    );
    let r = ctx.sh(&script).await?;
    let real = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("R|"))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| path.to_string());
    let state = find_stat(&r.stdout)
        .ok_or_else(|| ModuleError::Controller(format!("unexpected probe output: {}", r.stdout)))?;
    Ok(TextSeen {
        real,
        state,
        bytes: parse_content(&r.stdout)?,
    })
}

/// Pure. `edit` gets the current text (`None`: no file) and returns the new text (`None`: leave
/// the content alone) and a message, or an error message.
pub fn plan_text<F>(
    o: &EditOpts<'_>,
    seen: &TextSeen,
    diff: bool,
    edit: F,
) -> Result<Planned<TextChange>, ModuleError>
where
    F: FnOnce(Option<&str>) -> Result<(Option<String>, String), String>,
{
    let state = &seen.state;
    if matches!(state.kind, Kind::Dir | Kind::Other) {
        return Ok(Planned::nothing(Outcome::failed(format!(
            "{} is not a regular file",
            o.path
        ))));
    }
    let text = match &seen.bytes {
        Some(b) => Some(
            String::from_utf8(b.clone())
                .map_err(|_| ModuleError::Controller(format!("{} is not UTF-8 text", o.path)))?,
        ),
        None => None,
    };
    let (new, msg) = match edit(text.as_deref()) {
        Ok(x) => x,
        Err(m) => return Ok(Planned::nothing(Outcome::failed(m).with("path", o.path))),
    };
    let new = new.filter(|n| Some(n.as_str()) != text.as_deref());
    let attrs = match &new {
        Some(_) => Vec::new(),
        None if state.exists() => attr_changes(o.attrs, state),
        None => Vec::new(),
    };
    let changed = new.is_some() || !attrs.is_empty();
    let msg = match (&new, attrs.is_empty()) {
        (None, false) if msg.is_empty() => {
            "ownership, perms or SE linux context changed".to_string()
        }
        (None, false) => format!("{msg} and ownership, perms or SE linux context changed"),
        _ => msg,
    };
    let mut out = Outcome::changed(changed)
        .with_msg(msg.clone())
        .with("msg", msg)
        .with("path", o.path);
    if diff {
        if let Some(n) = &new {
            out.diffs.push(FileDiff {
                path: o.path.to_string(),
                before: text.clone().unwrap_or_default(),
                after: n.clone(),
            });
        } else if !attrs.is_empty() {
            let (before, after) = attr_summary(state, &attrs);
            out.diffs.push(FileDiff {
                path: o.path.to_string(),
                before,
                after,
            });
        }
    }
    if !changed {
        return Ok(Planned::nothing(out));
    }
    Ok(Planned::change(
        TextChange {
            real: seen.real.clone(),
            new,
            attrs,
            existed: state.exists(),
        },
        out,
    ))
}

pub async fn apply_text(
    ctx: &TaskCtx<'_>,
    o: &EditOpts<'_>,
    c: TextChange,
    mut out: Outcome,
) -> Result<Outcome, ModuleError> {
    let r = match &c.new {
        Some(n) => {
            let wo = WriteOpts {
                attrs: o.attrs,
                validate: o.validate,
                backup: o.backup && c.existed,
                mkdirs: o.create,
                source: None,
            };
            ctx.sh_stdin(&write_script(&c.real, &wo)?, n.as_bytes())
                .await?
        }
        None => {
            ctx.sh(&attr_cmds(&c.attrs, &quote(&c.real), false, false))
                .await?
        }
    };
    if r.rc != 0 {
        let mut f = Outcome::failed(write_error(r.rc, &r.stderr, o.path));
        f.data = out.data;
        return Ok(f);
    }
    if let Some(b) = backup_name(&r.stdout) {
        out = out.with("backup", b.clone()).with("backup_file", b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let s = parse_stat("S|regular file|644|root|0|adm|4|12\n").unwrap();
        assert_eq!(s.kind, Kind::File);
        assert_eq!(s.mode, 0o644);
        assert_eq!(s.group, "adm");
        assert_eq!(s.gid, 4);
        assert_eq!(parse_stat("S|absent").unwrap().kind, Kind::Absent);
        assert_eq!(
            parse_stat("S|directory|4755|a|1|b|2|4096").unwrap().mode,
            0o4755
        );
        assert!(parse_stat("junk").is_none());
    }

    #[test]
    fn attr_changes_accept_names_or_ids() {
        let have = parse_stat("S|regular file|644|root|0|adm|4|12").unwrap();
        let want = Attrs {
            owner: Some("0".into()),
            group: Some("adm".into()),
            mode: Some(0o644),
        };
        assert!(attr_changes(&want, &have).is_empty());
        let want = Attrs {
            owner: Some("bob".into()),
            group: None,
            mode: Some(0o600),
        };
        assert_eq!(
            attr_changes(&want, &have),
            vec![AttrChange::Owner("bob".into()), AttrChange::Mode(0o600)]
        );
        assert_eq!(attr_changes(&want, &FileState::absent()).len(), 2);
    }

    #[test]
    fn dirs_and_names() {
        assert_eq!(parent_dir("/etc/x.conf"), "/etc");
        assert_eq!(parent_dir("/x"), "/");
        assert_eq!(parent_dir("x"), ".");
        assert_eq!(basename("/a/b/c.txt"), "c.txt");
        assert_eq!(basename("/a/b/"), "b");
    }

    #[test]
    fn content_round_trip() {
        let out = "S|absent\nC|\naGVsbG8K\nE|\n";
        assert_eq!(parse_content(out).unwrap().unwrap(), b"hello\n");
        assert_eq!(parse_content("S|absent\n").unwrap(), None);
    }

    #[test]
    fn validate_needs_placeholder() {
        let a = Attrs::default();
        let o = WriteOpts {
            attrs: &a,
            validate: Some("visudo -cf"),
            backup: false,
            mkdirs: false,
            source: None,
        };
        assert!(write_script("/etc/x", &o).is_err());
    }
}
