//! `apt_repository`: a one-line APT source (`deb …`/`deb-src …`) in `sources.list(.d)`.
//!
//! ```yaml
//! - apt_repository:
//!     repo: "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian trixie stable"
//!     filename: docker
//!     state: present
//! ```
//! Probe (one round trip): the text of `/etc/apt/sources.list`, every
//! `/etc/apt/sources.list.d/*.list` and the target file (symlinks resolved: the target is
//! written, the link kept). Plan (pure, [`plan_sources`]) as Ansible's: the repo line is parsed
//! like a sources line (whitespace collapsed, a `# comment` split off); it must start with `deb`
//! or `deb-src`. `present`: if the same source is in any of those files it is enabled where it is
//! commented out (`# deb …` → `deb …`), else it is appended to the target file — `filename` +
//! `.list` in `/etc/apt/sources.list.d` (a name with a `/` is taken as a path), or without
//! `filename` the name Ansible derives from the URL ([`suggest_filename`]:
//! `deb http://dl.google.com/linux/chrome/deb/ stable main` → `dl_google_com_linux_chrome_deb.list`).
//! `absent`: every enabled occurrence is removed; a file left without lines is deleted. `mode`
//! applies to the file appended to. Changed only when a file's text changes; `--diff` shows each
//! changed file. Apply (one round trip): atomic writes, then with `update_cache` (default true)
//! `apt-get update`, retried `update_cache_retries` times (default 5) with a doubling delay up
//! to `update_cache_retry_max_delay` s (default 12); if it still fails the files are put back as
//! they were and the task fails, as in Ansible. Results: `repo`, `state`, `sources_added`,
//! `sources_removed`.
//!
//! Deviations: lines that are not touched keep their formatting (Ansible rewrites every source
//! file it read in its normalised form whenever it saves); `ppa:` repositories fail (they need
//! Launchpad's API and key import; use `deb822_repository` or an explicit `deb` line);
//! `Dir::Etc::sourcelist`/`sourceparts` are taken at their defaults; `install_python_apt`,
//! `validate_certs` and `codename` (PPA only in Ansible) are accepted and ignored — no Python is
//! needed.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::args::{de_opt_bool, de_opt_mode, de_opt_string, de_opt_u64, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::fileops::{self, Attrs, WriteOpts};
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    repo: String,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_mode")]
    mode: Option<u32>,
    #[serde(default, alias = "update-cache", deserialize_with = "de_opt_bool")]
    update_cache: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    update_cache_retries: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    update_cache_retry_max_delay: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_string")]
    filename: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    install_python_apt: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    validate_certs: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    codename: Option<String>,
}

pub const SOURCES_LIST: &str = "/etc/apt/sources.list";
pub const SOURCE_PARTS: &str = "/etc/apt/sources.list.d";

/// One sources line as Ansible's apt_repository reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// Starts with `deb` or `deb-src`.
    pub valid: bool,
    /// Not commented out.
    pub enabled: bool,
    /// The source with whitespace collapsed (valid lines), else the trimmed text.
    pub source: String,
    pub comment: String,
}

/// Pure: parses one line (a leading `#` disables it; a later `#` starts a comment).
pub fn parse_line(line: &str) -> SourceLine {
    let mut l = line.trim();
    let mut enabled = true;
    if let Some(rest) = l.strip_prefix('#') {
        enabled = false;
        l = rest;
    }
    let mut comment = String::new();
    if let Some(i) = l.find('#').filter(|i| *i > 0) {
        comment = l[i + 1..].trim().to_string();
        l = &l[..i];
    }
    let mut source = l.trim().to_string();
    let chunks: Vec<&str> = source.split_whitespace().collect();
    let valid = matches!(chunks.first(), Some(&"deb") | Some(&"deb-src"));
    if valid {
        source = chunks.join(" ");
    }
    SourceLine {
        valid,
        enabled,
        source,
        comment,
    }
}

/// A source line written back (Ansible's form: `# ` when disabled, ` # comment`).
pub fn render_line(enabled: bool, source: &str, comment: &str) -> String {
    let mut s = String::new();
    if !enabled {
        s.push_str("# ");
    }
    s.push_str(source);
    if !comment.is_empty() {
        s.push_str(" # ");
        s.push_str(comment);
    }
    s
}

/// Pure: Ansible's file name for a source without `filename`: options (`[...]`) and URL schemes
/// dropped, the first word after `deb`/`deb-src` without `user:password@`, every run of
/// characters other than ASCII letters and digits turned into one `_`, plus `.list`.
pub fn suggest_filename(source: &str) -> String {
    let mut s = String::new();
    let mut depth = 0;
    for c in source.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    let first = s
        .split_whitespace()
        .filter(|w| *w != "deb" && *w != "deb-src")
        .map(|w| match w.find("://") {
            // `\w+://`: the scheme is word characters only.
            Some(i) if i > 0 && w[..i].chars().all(|c| c.is_alphanumeric() || c == '_') => {
                &w[i + 3..]
            }
            _ => w,
        })
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    let first = first.split_once('@').map_or(first, |(_, host)| host);
    let words: Vec<&str> = first
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!("{}.list", words.join("_"))
}

/// Pure: where the source goes (`filename` + `.list`, in `sources.list.d` unless it has a `/`).
pub fn target_path(filename: Option<&str>, source: &str) -> String {
    let name = match filename {
        Some(f) => format!("{f}.list"),
        None => suggest_filename(source),
    };
    if name.contains('/') {
        name
    } else {
        format!("{SOURCE_PARTS}/{name}")
    }
}

/// A source file as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as listed.
    pub path: String,
    /// Where it is written (a symlink's target).
    pub real: String,
    pub text: String,
}

/// One file to write (`new: None`: delete it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub real: String,
    pub before: Option<String>,
    pub new: Option<String>,
    /// The file the source was appended to (`mode` applies).
    pub target: bool,
}

/// Pure: the files to change so that `source` is present (enabled) or absent. `files` are the
/// existing source files; `target` is where a new source is appended.
pub fn plan_sources(
    files: &[SourceFile],
    source: &str,
    present: bool,
    target: &str,
) -> Vec<FileChange> {
    let mut changes = Vec::new();
    let mut found = false;
    for f in files {
        let mut out = String::new();
        let mut lines = 0;
        for l in f.text.split_inclusive('\n') {
            let p = parse_line(l);
            let same = p.valid && p.source == source;
            found |= same;
            if same && present && !p.enabled {
                out.push_str(&render_line(true, &p.source, &p.comment));
                out.push('\n');
            } else if same && !present && p.enabled {
                continue;
            } else {
                out.push_str(l);
            }
            lines += 1;
        }
        if out != f.text {
            changes.push(FileChange {
                path: f.path.clone(),
                real: f.real.clone(),
                before: Some(f.text.clone()),
                new: (lines > 0).then_some(out),
                target: false,
            });
        }
    }
    if present && !found {
        let existing = files.iter().find(|f| f.path == target || f.real == target);
        let mut text = existing.map(|f| f.text.clone()).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(source);
        text.push('\n');
        changes.push(FileChange {
            path: target.to_string(),
            real: existing.map_or_else(|| target.to_string(), |f| f.real.clone()),
            before: existing.map(|f| f.text.clone()),
            new: Some(text),
            target: true,
        });
    }
    changes
}

/// Probe snippet: `F|path`, `R|real path`, the content as base64, `E|` for each existing file of
/// `paths` (globs allowed, unquoted) — one round trip for the whole sources set.
pub fn sources_probe(paths: &str) -> String {
    format!(
        "for f in {paths}; do [ -f \"$f\" ] || continue; echo \"F|$f\"; echo \"R|$(readlink -f -- \"$f\")\"; \
         base64 < \"$f\"; echo 'E|'; done; true"
    )
}

/// A file [`sources_probe`] printed: its path, real path and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFile {
    pub path: String,
    pub real: String,
    pub bytes: Vec<u8>,
}

/// Parses [`sources_probe`]'s output (a path listed twice is kept once).
pub fn parse_files(out: &str) -> Result<Vec<RawFile>, ModuleError> {
    use base64::Engine;
    let mut files: Vec<RawFile> = Vec::new();
    let mut cur: Option<(String, String, String)> = None;
    for l in out.lines() {
        if let Some(p) = l.strip_prefix("F|") {
            cur = Some((p.to_string(), p.to_string(), String::new()));
        } else if let (Some(r), Some(c)) = (l.strip_prefix("R|"), cur.as_mut()) {
            if !r.is_empty() {
                c.1 = r.to_string();
            }
        } else if l == "E|" {
            if let Some((path, real, b64)) = cur.take() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| ModuleError::Controller(format!("{path}: bad base64: {e}")))?;
                if !files.iter().any(|f| f.path == path) {
                    files.push(RawFile { path, real, bytes });
                }
            }
        } else if let Some(c) = cur.as_mut() {
            c.2.push_str(l.trim());
        }
    }
    Ok(files)
}

/// [`parse_files`] as text.
pub fn parse_sources(out: &str) -> Result<Vec<SourceFile>, ModuleError> {
    Ok(parse_files(out)?
        .into_iter()
        .map(|f| SourceFile {
            path: f.path,
            real: f.real,
            text: String::from_utf8_lossy(&f.bytes).into_owned(),
        })
        .collect())
}

/// One file for [`write_files_script`] to write (`new: None`: delete it).
pub struct Write<'a> {
    pub real: &'a str,
    pub new: Option<&'a [u8]>,
    /// The mode to set (`None`: kept, or umask's for a new file).
    pub mode: Option<u32>,
}

/// Shell: writes the files (atomically, each from base64 embedded in the script, so one round
/// trip writes several) after saving the old ones; with `update` runs that command and on its
/// failure puts the old files back and exits 3. A write failure exits 2.
pub fn write_files_script(
    writes: &[Write<'_>],
    update: Option<&str>,
) -> Result<String, ModuleError> {
    use base64::Engine;
    let mut s = String::from("bk=$(mktemp -d) || exit 2; trap 'rm -rf \"$bk\"' EXIT; ");
    for (i, w) in writes.iter().enumerate() {
        let q = quote(w.real);
        s.push_str(&format!(
            "if [ -e {q} ]; then cp -p -- {q} \"$bk/{i}\"; else : > \"$bk/{i}.new\"; fi; "
        ));
    }
    for w in writes {
        match w.new {
            None => s.push_str(&format!("rm -f -- {} || exit 2; ", quote(w.real))),
            Some(bytes) => {
                let attrs = Attrs {
                    mode: w.mode,
                    ..Default::default()
                };
                let wo = WriteOpts {
                    attrs: &attrs,
                    validate: None,
                    backup: false,
                    mkdirs: true,
                    source: None,
                };
                s.push_str(&format!(
                    "printf '%s' {} | base64 -d | ( {} ) || exit 2; ",
                    quote(&base64::engine::general_purpose::STANDARD.encode(bytes)),
                    fileops::write_script(w.real, &wo)?
                ));
            }
        }
    }
    if let Some(update) = update {
        s.push_str(&format!("if ! ( {update} ); then "));
        for (i, w) in writes.iter().enumerate() {
            let q = quote(w.real);
            s.push_str(&format!(
                "if [ -e \"$bk/{i}.new\" ]; then rm -f -- {q}; else cp -p -- \"$bk/{i}\" {q}; fi; "
            ));
        }
        s.push_str("exit 3; fi; ");
    }
    s.push_str("true");
    Ok(s)
}

/// [`write_files_script`] for planned source changes; `mode` applies to the file appended to.
pub fn apply_script(
    changes: &[FileChange],
    mode: Option<u32>,
    update: Option<&str>,
) -> Result<String, ModuleError> {
    let writes: Vec<Write<'_>> = changes
        .iter()
        .map(|c| Write {
            real: &c.real,
            new: c.new.as_deref().map(str::as_bytes),
            mode: mode.filter(|_| c.target),
        })
        .collect();
    write_files_script(&writes, update)
}

pub struct AptRepository;

/// What the probe saw.
pub struct Observed {
    /// `/etc/apt` exists.
    pub apt: bool,
    pub files: Vec<SourceFile>,
}

#[async_trait]
impl Module for AptRepository {
    literal_params!("apt_repository");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["apt_repository"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

impl Params {
    /// The parsed source and its target file, or the failure Ansible reports.
    fn source(&self) -> Result<(String, String), String> {
        let repo = self.repo.trim();
        if repo.is_empty() {
            return Err("Please set argument 'repo' to a non-empty value".into());
        }
        if repo.starts_with("ppa:") {
            return Err(format!(
                "{repo}: ppa: repositories need Ubuntu's Launchpad (its API and signing key); \
                 hfplay does not add them — give the deb line (or use deb822_repository) with \
                 its key"
            ));
        }
        let p = parse_line(repo);
        if !p.valid || !p.enabled {
            return Err(format!("Invalid repository string: {repo}"));
        }
        let target = target_path(self.filename.as_deref(), &p.source);
        Ok((p.source, target))
    }
}

#[async_trait]
impl NativeModule for AptRepository {
    type Params = Params;
    type Observed = Observed;
    type Plan = Vec<FileChange>;
    const NAME: &'static str = "apt_repository";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let target = p
            .source()
            .map(|(_, t)| quote(&t))
            .unwrap_or_else(|_| "/nonexistent".into());
        let script = format!(
            "[ -d /etc/apt ] && echo 'APT|'; {}",
            sources_probe(&format!("{SOURCES_LIST} {SOURCE_PARTS}/*.list {target}"))
        );
        let r = ctx.sh(&script).await?;
        Ok(Observed {
            apt: r.stdout.lines().any(|l| l == "APT|"),
            files: parse_sources(&r.stdout)?,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Vec<FileChange>>, ModuleError> {
        let _ = (&p.install_python_apt, &p.validate_certs, &p.codename);
        let present = p.state.unwrap_or_default() == State::Present;
        let (source, target) = match p.source() {
            Ok(x) => x,
            Err(m) => return Ok(Planned::nothing(Outcome::failed(m))),
        };
        if !seen.apt {
            return Ok(Planned::nothing(Outcome::failed(
                "apt_repository: /etc/apt not found: not an APT host",
            )));
        }
        let changes = plan_sources(&seen.files, &source, present, &target);
        let added: Vec<&str> = changes
            .iter()
            .filter(|c| c.before.is_none())
            .map(|c| c.path.as_str())
            .collect();
        let removed: Vec<&str> = changes
            .iter()
            .filter(|c| c.new.is_none())
            .map(|c| c.path.as_str())
            .collect();
        let mut out = Outcome::changed(!changes.is_empty())
            .with("repo", p.repo.clone())
            .with("state", if present { "present" } else { "absent" })
            .with("sources_added", json!(added))
            .with("sources_removed", json!(removed));
        if diff {
            for c in &changes {
                out.diffs.push(FileDiff {
                    path: c.path.clone(),
                    before: c.before.clone().unwrap_or_default(),
                    after: c.new.clone().unwrap_or_default(),
                });
            }
        }
        Ok(Planned::when(!changes.is_empty(), changes, out))
    }

    /// Check mode: later apt tasks of the run learn that the sources would change (their
    /// scratch lists lack what the change brings).
    async fn simulate(
        &self,
        _p: &Params,
        _c: Vec<FileChange>,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        super::apt::note_sources_changed(ctx.host);
        Ok(predicted)
    }

    async fn apply(
        &self,
        p: &Params,
        changes: Vec<FileChange>,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let update = p.update_cache.unwrap_or(true).then(|| {
            super::apt::update_script(
                120,
                p.update_cache_retries.unwrap_or(5),
                p.update_cache_retry_max_delay.unwrap_or(12),
                "",
            )
        });
        let r = ctx
            .sh(&apply_script(&changes, p.mode, update.as_deref())?)
            .await?;
        if r.rc != 0 {
            let msg = match r.rc {
                3 => format!("Failed to update apt cache: {}", r.stderr.trim()),
                _ => format!(
                    "apt_repository: writing the sources failed: {}",
                    r.stderr.trim()
                ),
            };
            let mut f = Outcome::failed(msg);
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            real: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn every_arg_is_accepted() {
        let mut m = crate::modules::testutil::every_arg::<Params>();
        // An alias and its field together are a duplicate for serde.
        assert!(m.remove("update-cache").is_some());
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"repo": "x", "rpeo": 1})).is_err());
        let p: Params = serde_json::from_value(json!({"repo": "x", "update-cache": "no"})).unwrap();
        assert_eq!(p.update_cache, Some(false));
    }

    #[test]
    fn filenames_as_ansible_derives_them() {
        assert_eq!(
            suggest_filename("deb http://dl.google.com/linux/chrome/deb/ stable main"),
            "dl_google_com_linux_chrome_deb.list"
        );
        assert_eq!(
            suggest_filename(
                "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian trixie stable"
            ),
            "download_docker_com_linux_debian.list"
        );
        assert_eq!(
            suggest_filename("deb-src https://user:pw@repo.example.org/apt stable main"),
            "repo_example_org_apt.list"
        );
        assert_eq!(
            suggest_filename("deb http://archive.canonical.com/ubuntu hardy partner"),
            "archive_canonical_com_ubuntu.list"
        );
        assert_eq!(
            target_path(Some("google-chrome"), "deb http://x/ a b"),
            "/etc/apt/sources.list.d/google-chrome.list"
        );
        assert_eq!(
            target_path(Some("/etc/apt/sources.list"), "deb http://x/ a b"),
            "/etc/apt/sources.list.list"
        );
    }

    #[test]
    fn lines_parse_as_ansible_reads_them() {
        let l = parse_line("  deb   http://x/  stable  main # mine\n");
        assert_eq!(
            l,
            SourceLine {
                valid: true,
                enabled: true,
                source: "deb http://x/ stable main".into(),
                comment: "mine".into()
            }
        );
        let l = parse_line("#deb http://x/ stable main");
        assert!(l.valid && !l.enabled);
        assert!(!parse_line("## just a comment").valid);
        assert!(!parse_line("Types: deb").valid);
    }

    #[test]
    fn present_appends_once_and_enables_commented_lines() {
        let src = "deb http://x/ stable main";
        let t = "/etc/apt/sources.list.d/x.list";
        let c = plan_sources(&[], src, true, t);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].new.as_deref(), Some("deb http://x/ stable main\n"));
        assert!(c[0].before.is_none() && c[0].target);
        // Already there (any file, any spacing): nothing to do.
        let files = [file(
            "/etc/apt/sources.list",
            "# hi\ndeb  http://x/ stable  main\n",
        )];
        assert!(plan_sources(&files, src, true, t).is_empty());
        // Commented out: enabled in place, not appended.
        let files = [file(
            "/etc/apt/sources.list",
            "a\n# deb http://x/ stable main # c\n",
        )];
        let c = plan_sources(&files, src, true, t);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].new.as_deref(),
            Some("a\ndeb http://x/ stable main # c\n")
        );
        // The target exists with other content and no final newline.
        let files = [file(t, "deb http://y/ a b")];
        let c = plan_sources(&files, src, true, t);
        assert_eq!(
            c[0].new.as_deref(),
            Some("deb http://y/ a b\ndeb http://x/ stable main\n")
        );
        assert_eq!(c[0].before.as_deref(), Some("deb http://y/ a b"));
    }

    #[test]
    fn absent_removes_enabled_lines_and_empty_files() {
        let src = "deb http://x/ stable main";
        let t = "/etc/apt/sources.list.d/x.list";
        let files = [
            file(t, "deb http://x/ stable main\n"),
            file(
                "/etc/apt/sources.list",
                "deb http://deb.debian.org/debian trixie main\ndeb http://x/ stable main\n# deb http://x/ stable main\n",
            ),
        ];
        let c = plan_sources(&files, src, false, t);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].new, None);
        assert_eq!(
            c[1].new.as_deref(),
            Some("deb http://deb.debian.org/debian trixie main\n# deb http://x/ stable main\n")
        );
        assert!(plan_sources(&files[1..1], src, false, t).is_empty());
    }

    #[test]
    fn probe_output_parses() {
        let out = "APT|\nF|/etc/apt/sources.list.d/a.list\nR|/srv/a.list\nZGViIGh0dHA6Ly94\nLyBhIGIK\nE|\nF|/etc/apt/sources.list.d/a.list\nR|/srv/a.list\nZGViIGh0dHA6Ly94LyBhIGIK\nE|\n";
        let f = parse_sources(out).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].real, "/srv/a.list");
        assert_eq!(f[0].text, "deb http://x/ a b\n");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({
            "repo": "deb http://dl.google.com/linux/chrome/deb/ stable main"
        }))
        .unwrap();
        let none = Observed {
            apt: true,
            files: vec![],
        };
        let pl = AptRepository.plan(&p, &none, true).unwrap();
        assert!(pl.outcome.changed);
        assert_eq!(
            pl.outcome.data["sources_added"],
            json!(["/etc/apt/sources.list.d/dl_google_com_linux_chrome_deb.list"])
        );
        assert_eq!(
            pl.outcome.diffs[0].after,
            "deb http://dl.google.com/linux/chrome/deb/ stable main\n"
        );
        let there = Observed {
            apt: true,
            files: vec![file(
                "/etc/apt/sources.list.d/dl_google_com_linux_chrome_deb.list",
                "deb http://dl.google.com/linux/chrome/deb/ stable main\n",
            )],
        };
        let pl = AptRepository.plan(&p, &there, true).unwrap();
        assert!(pl.changes.is_none() && !pl.outcome.changed);
        let ppa: Params = serde_json::from_value(json!({"repo": "ppa:deadsnakes/ppa"})).unwrap();
        let pl = AptRepository.plan(&ppa, &none, false).unwrap();
        assert!(pl.outcome.failed && pl.outcome.msg.contains("Launchpad"));
        let bad: Params = serde_json::from_value(json!({"repo": "http://x/ a b"})).unwrap();
        let pl = AptRepository.plan(&bad, &none, false).unwrap();
        assert!(pl.outcome.msg.starts_with("Invalid repository string"));
    }

    #[test]
    fn apply_script_restores_on_failed_update() {
        let c = plan_sources(
            &[],
            "deb http://x/ a b",
            true,
            "/etc/apt/sources.list.d/x.list",
        );
        let s = apply_script(&c, Some(0o644), Some("false")).unwrap();
        assert!(s.contains("base64 -d"));
        assert!(s.contains("exit 3"));
        assert!(s.contains("chmod 0644"));
    }
}
