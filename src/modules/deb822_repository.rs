//! `deb822_repository`: an APT source as a deb822 `.sources` file, with its signing key.
//!
//! ```yaml
//! - deb822_repository:
//!     name: docker
//!     types: deb
//!     uris: https://download.docker.com/linux/debian
//!     suites: "{{ ansible_distribution_release }}"
//!     components: stable
//!     signed_by: https://download.docker.com/linux/debian/gpg
//! ```
//! As Ansible's: the file is `/etc/apt/sources.list.d/<slug>.sources` where the slug is `name`
//! with spaces as `-` (or, when a file of the older slug exists — lower case, `_`/whitespace
//! runs as `-`, other characters dropped — that one). Its text ([`render`]) is one stanza of the
//! given options in alphabetical order of the option names: `X-Repolib-Name` for `name`, `URIs`
//! for `uris`, the others title-cased with `-` (`signed_by` → `Signed-By`); booleans `yes`/`no`,
//! lists space-separated, multi-line values indented with `.` for empty lines; `types` defaults
//! to `deb`. `signed_by`: a file that exists on the host is referenced as is; a URL is
//! downloaded on the host (curl, wget or apt-helper) into `/etc/apt/keyrings/<slug>.asc`
//! (armored) or `.gpg` (mode 0644, the directory made 0755 if missing) and referenced; anything
//! else (an armored key block, fingerprints) is written inline. Changed when the sources text,
//! the key file or the sources file's `mode` (default 0644) differs. `absent` deletes the
//! sources file and `/etc/apt/keyrings/<slug>.{asc,gpg}`. Like Ansible's, it does not update the
//! apt cache (use `apt: update_cache=true` on change). Probe: one round trip (the key download
//! included — read-only, so check mode predicts exactly). Results: `repo`, `dest`,
//! `key_filename`.
//!
//! Deviations: `install_python_debian` is accepted and ignored (no Python is needed).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::apt_key::fetch_script;
use super::apt_repository::{write_files_script, Write, SOURCE_PARTS};
use super::args::{de_opt_bool, de_opt_list, de_opt_mode, de_opt_string, de_opt_u64, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::fileops;
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Default, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_downgrade_to_insecure: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_insecure: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_weak: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_list")]
    architectures: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    by_hash: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    check_date: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    check_valid_until: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_list")]
    components: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    date_max_future: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_list")]
    exclude: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    include: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_string")]
    inrelease_path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    install_python_debian: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_list")]
    languages: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    pdiffs: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    signed_by: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    suites: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    targets: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    trusted: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_list")]
    types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_mode")]
    mode: Option<u32>,
    #[serde(default)]
    state: Option<State>,
}

pub const KEYRINGS_DIR: &str = "/etc/apt/keyrings";

/// Ansible's current slug: `name` with spaces as `-`.
pub fn slug(name: &str) -> String {
    name.replace(' ', "-")
}

/// The slug of Ansible before 2.19 (kept when its file exists).
pub fn legacy_slug(name: &str) -> String {
    let mut s = String::new();
    let mut run = false;
    for c in name.to_lowercase().chars() {
        if c == '_' || c.is_whitespace() {
            if !run {
                s.push('-');
            }
            run = true;
            continue;
        }
        run = false;
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            s.push(c);
        }
    }
    s
}

pub fn sources_path(slug: &str) -> String {
    format!("{SOURCE_PARTS}/{slug}.sources")
}

/// Does `signed_by` look like a URL (a scheme before a `:`), which Ansible downloads?
pub fn is_url(v: &str) -> bool {
    match v.split_once(':') {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn field_name(key: &str) -> String {
    match key {
        "name" => "X-Repolib-Name".into(),
        "uris" => "URIs".into(),
        _ => key
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f
                        .to_uppercase()
                        .chain(c.flat_map(char::to_lowercase))
                        .collect(),
                    None => String::new(),
                }
            })
            .collect::<Vec<String>>()
            .join("-"),
    }
}

fn multiline(v: &str) -> String {
    let lines: Vec<String> = v
        .trim()
        .lines()
        .map(|l| {
            let t = l.trim();
            format!("    {}", if t.is_empty() { "." } else { t })
        })
        .collect();
    format!("\n{}", lines.join("\n"))
}

/// A field's value as Ansible formats it.
enum Field<'a> {
    Bool(Option<bool>),
    Int(Option<u64>),
    List(Option<&'a [String]>),
    Str(Option<&'a str>),
}

/// Pure: the `.sources` text; `signed_by` is the value to write for it (a path or inline text).
pub fn render(p: &Params, signed_by: Option<&str>) -> String {
    let deb = ["deb".to_string()];
    let fields: Vec<(&str, Field<'_>)> = vec![
        (
            "allow_downgrade_to_insecure",
            Field::Bool(p.allow_downgrade_to_insecure),
        ),
        ("allow_insecure", Field::Bool(p.allow_insecure)),
        ("allow_weak", Field::Bool(p.allow_weak)),
        ("architectures", Field::List(p.architectures.as_deref())),
        ("by_hash", Field::Bool(p.by_hash)),
        ("check_date", Field::Bool(p.check_date)),
        ("check_valid_until", Field::Bool(p.check_valid_until)),
        ("components", Field::List(p.components.as_deref())),
        ("date_max_future", Field::Int(p.date_max_future)),
        ("enabled", Field::Bool(p.enabled)),
        ("exclude", Field::List(p.exclude.as_deref())),
        ("include", Field::List(p.include.as_deref())),
        ("inrelease_path", Field::Str(p.inrelease_path.as_deref())),
        ("languages", Field::List(p.languages.as_deref())),
        ("name", Field::Str(Some(&p.name))),
        ("pdiffs", Field::Bool(p.pdiffs)),
        ("signed_by", Field::Str(signed_by)),
        ("suites", Field::List(p.suites.as_deref())),
        ("targets", Field::List(p.targets.as_deref())),
        ("trusted", Field::Bool(p.trusted)),
        (
            "types",
            Field::List(Some(p.types.as_deref().unwrap_or(&deb))),
        ),
        ("uris", Field::List(p.uris.as_deref())),
    ];
    let mut out = String::new();
    for (key, f) in fields {
        let v = match f {
            Field::Bool(Some(b)) => if b { "yes" } else { "no" }.to_string(),
            Field::Int(Some(i)) => i.to_string(),
            Field::List(Some(l)) => l.join(" "),
            Field::Str(Some(s)) => s.to_string(),
            _ => continue,
        };
        if v.contains('\n') {
            out.push_str(&format!("{}:{}\n", field_name(key), multiline(&v)));
        } else {
            out.push_str(&format!("{}: {v}\n", field_name(key)));
        }
    }
    out
}

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The file of the legacy slug exists.
    pub legacy_exists: bool,
    /// The sources file's content and mode (`None`: missing).
    pub sources: Option<(String, u32)>,
    /// `signed_by` names an existing file on the host.
    pub signed_by_is_file: bool,
    /// The downloaded key (`signed_by` a URL and not a file).
    pub download: Option<Result<Vec<u8>, String>>,
    /// `/etc/apt/keyrings/<slug>.asc` and `.gpg`: content and mode, if present.
    pub asc: Option<(Vec<u8>, u32)>,
    pub gpg: Option<(Vec<u8>, u32)>,
    /// `/etc/apt/keyrings` exists.
    pub keyrings_dir: bool,
}

/// The planned changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Files to write (path, content, mode) or delete (content `None`).
    pub writes: Vec<(String, Option<Vec<u8>>, Option<u32>)>,
    /// chmod only (path, mode).
    pub chmods: Vec<(String, u32)>,
    pub mkdir_keyrings: bool,
}

pub struct Deb822Repository;

#[async_trait]
impl Module for Deb822Repository {
    literal_params!("deb822_repository");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["deb822_repository"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

fn mode_of(out: &str, tag: &str) -> Option<u32> {
    out.lines()
        .find_map(|l| l.strip_prefix(tag))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
}

/// Pure: the plan from what the probe saw.
pub fn plan(p: &Params, seen: &Observed) -> Result<(Changes, Outcome), String> {
    if p.exclude.is_some() && p.include.is_some() {
        return Err("parameters are mutually exclusive: exclude|include".into());
    }
    if let Some(t) = p
        .types
        .iter()
        .flatten()
        .find(|t| *t != "deb" && *t != "deb-src")
    {
        return Err(format!(
            "value of types must be one or more of: deb, deb-src. Got no match for: {t}"
        ));
    }
    let slug = if seen.legacy_exists {
        legacy_slug(&p.name)
    } else {
        slug(&p.name)
    };
    let dest = sources_path(&slug);
    let asc = format!("{KEYRINGS_DIR}/{slug}.asc");
    let gpg = format!("{KEYRINGS_DIR}/{slug}.gpg");
    let mut c = Changes {
        writes: Vec::new(),
        chmods: Vec::new(),
        mkdir_keyrings: false,
    };
    let mut out = Outcome::ok().with("dest", dest.clone());
    if p.state.unwrap_or_default() == State::Absent {
        let key = if seen.gpg.is_some() { &gpg } else { &asc };
        if seen.sources.is_some() {
            c.writes.push((dest, None, None));
        }
        for (f, have) in [(&asc, &seen.asc), (&gpg, &seen.gpg)] {
            if have.is_some() {
                c.writes.push((f.clone(), None, None));
            }
        }
        out = out
            .with("repo", Value::Null)
            .with("key_filename", key.clone());
        return Ok((c, out));
    }
    let mut key_filename = None;
    let signed_by = match p.signed_by.as_deref() {
        Some(v) if seen.signed_by_is_file => Some(v.to_string()),
        Some(v) if is_url(v) => match &seen.download {
            Some(Ok(data)) if !data.is_empty() => {
                let armored =
                    String::from_utf8_lossy(data).contains("-----BEGIN PGP PUBLIC KEY BLOCK-----");
                let (file, have) = if armored {
                    (&asc, &seen.asc)
                } else {
                    (&gpg, &seen.gpg)
                };
                match have {
                    Some((bytes, _)) if bytes == data => {}
                    _ => {
                        c.mkdir_keyrings = !seen.keyrings_dir;
                        c.writes
                            .push((file.clone(), Some(data.clone()), Some(0o644)));
                    }
                }
                if let Some((bytes, m)) = have {
                    if bytes == data && *m != 0o644 {
                        c.chmods.push((file.clone(), 0o644));
                    }
                }
                key_filename = Some(file.clone());
                Some(file.clone())
            }
            // Ansible references the URL itself when the download is empty.
            Some(Ok(_)) => Some(v.to_string()),
            Some(Err(e)) => return Err(format!("Could not fetch signed_by key: {e}")),
            None => return Err("Could not fetch signed_by key: not downloaded".into()),
        },
        Some(v) => Some(v.to_string()),
        None => None,
    };
    let repo = render(p, signed_by.as_deref());
    let mode = p.mode.unwrap_or(0o644);
    match &seen.sources {
        Some((text, _)) if *text == repo => {}
        _ => c
            .writes
            .push((dest.clone(), Some(repo.clone().into_bytes()), Some(mode))),
    }
    if let Some((text, m)) = &seen.sources {
        if *text == repo && *m != mode {
            c.chmods.push((dest.clone(), mode));
        }
    }
    out = out.with("repo", repo).with(
        "key_filename",
        key_filename.map_or(Value::Null, Value::from),
    );
    Ok((c, out))
}

#[async_trait]
impl NativeModule for Deb822Repository {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "deb822_repository";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let legacy = sources_path(&legacy_slug(&p.name));
        let script_for = |slug: &str| -> String {
            let dest = sources_path(slug);
            let asc = format!("{KEYRINGS_DIR}/{slug}.asc");
            let gpg = format!("{KEYRINGS_DIR}/{slug}.gpg");
            format!(
                "echo 'S|'; {} ; echo 'SM|'$(stat -c %a {qd} 2>/dev/null); echo 'A|'; {}; echo 'AM|'$(stat -c %a {qa} 2>/dev/null); echo 'G|'; {}; echo 'GM|'$(stat -c %a {qg} 2>/dev/null); echo 'Z|'",
                fileops::content_cmd(&dest),
                fileops::content_cmd(&asc),
                fileops::content_cmd(&gpg),
                qd = quote(&dest),
                qa = quote(&asc),
                qg = quote(&gpg),
            )
        };
        let mut script = format!(
            "if [ -e {} ]; then echo 'LEGACY|'; {}; else {}; fi; [ -d {KEYRINGS_DIR} ] && echo 'KD|'; ",
            quote(&legacy),
            script_for(&legacy_slug(&p.name)),
            script_for(&slug(&p.name))
        );
        if let Some(v) = &p.signed_by {
            script.push_str(&format!("if [ -f {} ]; then echo 'SBF|'; ", quote(v)));
            if is_url(v) && p.state.unwrap_or_default() == State::Present {
                script.push_str(&format!(
                    "else echo 'DL|'; ( {} ); echo \"DLRC|$?\"; ",
                    fetch_script(v, true)
                ));
            }
            script.push_str("fi; ");
        }
        script.push_str("true");
        let r = ctx.sh(&script).await?;
        let out = &r.stdout;
        let part = |a: &str, z: &str| -> &str {
            let Some(s) = out.find(a) else { return "" };
            let s = s + a.len();
            let e = out[s..].find(z).map_or(out.len(), |e| s + e);
            &out[s..e]
        };
        let content = |a: &str, z: &str| -> Result<Option<Vec<u8>>, ModuleError> {
            fileops::parse_content(part(a, z))
        };
        let with_mode =
            |b: Option<Vec<u8>>, tag: &str| b.map(|b| (b, mode_of(out, tag).unwrap_or(0)));
        let sources = with_mode(content("S|\n", "SM|")?, "SM|")
            .map(|(b, m)| (String::from_utf8_lossy(&b).into_owned(), m));
        let download = if out.contains("DL|\n") {
            let rc = out
                .lines()
                .find_map(|l| l.strip_prefix("DLRC|"))
                .unwrap_or("1");
            Some(if rc == "0" {
                fileops::parse_content(part("DL|\n", "DLRC|"))?
                    .ok_or_else(|| "no content".to_string())
            } else {
                Err(r.stderr.trim().to_string())
            })
        } else {
            None
        };
        Ok(Observed {
            legacy_exists: out.lines().any(|l| l == "LEGACY|"),
            sources,
            signed_by_is_file: out.lines().any(|l| l == "SBF|"),
            download,
            asc: with_mode(content("A|\n", "AM|")?, "AM|"),
            gpg: with_mode(content("G|\n", "GM|")?, "GM|"),
            keyrings_dir: out.lines().any(|l| l == "KD|"),
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let _ = &p.install_python_debian;
        let (c, mut out) = match plan(p, seen) {
            Ok(x) => x,
            Err(m) => return Ok(Planned::nothing(Outcome::failed(m))),
        };
        let changed = !c.writes.is_empty() || !c.chmods.is_empty() || c.mkdir_keyrings;
        out.changed = changed;
        if diff {
            for (path, new, _) in &c.writes {
                if path.ends_with(".sources") {
                    out.diffs.push(FileDiff {
                        path: path.clone(),
                        before: seen
                            .sources
                            .as_ref()
                            .map(|s| s.0.clone())
                            .unwrap_or_default(),
                        after: new
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(Planned::when(changed, c, out))
    }

    /// Check mode: later apt tasks of the run learn that the sources would change (their
    /// scratch lists lack what the change brings).
    async fn simulate(
        &self,
        _p: &Params,
        _c: Changes,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        super::apt::note_sources_changed(ctx.host);
        Ok(predicted)
    }

    async fn apply(
        &self,
        _p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let mut s = String::new();
        if c.mkdir_keyrings {
            s.push_str(&format!("mkdir -p -m 0755 {KEYRINGS_DIR} || exit 2; "));
        }
        let ws: Vec<Write<'_>> = c
            .writes
            .iter()
            .map(|(path, new, mode)| Write {
                real: path,
                new: new.as_deref(),
                mode: *mode,
            })
            .collect();
        s.push_str(&format!(
            "( {} ) || exit 2; ",
            write_files_script(&ws, None)?
        ));
        for (path, mode) in &c.chmods {
            s.push_str(&format!("chmod {mode:04o} {} || exit 2; ", quote(path)));
        }
        s.push_str("true");
        let r = ctx.sh(&s).await?;
        if r.rc != 0 {
            let mut f = Outcome::failed(format!(
                "deb822_repository: writing the files failed: {}",
                r.stderr.trim()
            ));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"name": "x", "suite": "y"})).is_err());
    }

    #[test]
    fn slugs_and_names() {
        assert_eq!(slug("My Repo"), "My-Repo");
        assert_eq!(legacy_slug("My_Repo  x.y"), "my-repo-xy");
        assert_eq!(field_name("signed_by"), "Signed-By");
        assert_eq!(
            field_name("allow_downgrade_to_insecure"),
            "Allow-Downgrade-To-Insecure"
        );
        assert_eq!(field_name("inrelease_path"), "Inrelease-Path");
        assert!(is_url("https://x/y.gpg"));
        assert!(!is_url("/etc/apt/keyrings/x.asc"));
        assert!(!is_url("-----BEGIN PGP PUBLIC KEY BLOCK-----\nVersion: x"));
    }

    #[test]
    fn renders_as_ansible() {
        let p = params(json!({
            "name": "docker",
            "uris": "https://download.docker.com/linux/debian",
            "suites": "trixie",
            "components": ["stable"],
            "architectures": "amd64",
            "enabled": true,
        }));
        assert_eq!(
            render(&p, Some("/etc/apt/keyrings/docker.asc")),
            "Architectures: amd64\nComponents: stable\nEnabled: yes\nX-Repolib-Name: docker\n\
             Signed-By: /etc/apt/keyrings/docker.asc\nSuites: trixie\nTypes: deb\n\
             URIs: https://download.docker.com/linux/debian\n"
        );
        let inline =
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n=x\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let r = render(
            &params(json!({"name": "k", "types": ["deb", "deb-src"]})),
            Some(inline),
        );
        assert_eq!(
            r,
            "X-Repolib-Name: k\nSigned-By:\n    -----BEGIN PGP PUBLIC KEY BLOCK-----\n    .\n    abc\n    =x\n    -----END PGP PUBLIC KEY BLOCK-----\nTypes: deb deb-src\n"
        );
    }

    #[test]
    fn plans() {
        let p = params(json!({
            "name": "ex", "uris": "https://x/", "suites": "s", "components": "main",
            "signed_by": "https://x/key.gpg"
        }));
        let key =
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----\n"
                .to_vec();
        let fresh = Observed {
            download: Some(Ok(key.clone())),
            ..Default::default()
        };
        let (c, out) = plan(&p, &fresh).unwrap();
        assert!(c.mkdir_keyrings);
        assert_eq!(c.writes.len(), 2);
        assert_eq!(c.writes[0].0, "/etc/apt/keyrings/ex.asc");
        assert_eq!(c.writes[1].0, "/etc/apt/sources.list.d/ex.sources");
        assert_eq!(out.data["key_filename"], "/etc/apt/keyrings/ex.asc");
        let repo = out.data["repo"].as_str().unwrap().to_string();
        assert!(repo.contains("Signed-By: /etc/apt/keyrings/ex.asc\n"));
        // Everything in place: nothing to do.
        let same = Observed {
            download: Some(Ok(key.clone())),
            asc: Some((key.clone(), 0o644)),
            sources: Some((repo.clone(), 0o644)),
            keyrings_dir: true,
            ..Default::default()
        };
        let (c, _) = plan(&p, &same).unwrap();
        assert_eq!(c.writes, vec![]);
        assert!(c.chmods.is_empty() && !c.mkdir_keyrings);
        // Only the mode differs.
        let loose = Observed {
            sources: Some((repo, 0o600)),
            ..same.clone()
        };
        assert_eq!(plan(&p, &loose).unwrap().0.chmods.len(), 1);
        // A failed download fails the task.
        let failed = Observed {
            download: Some(Err("404".into())),
            ..Default::default()
        };
        assert!(plan(&p, &failed)
            .unwrap_err()
            .contains("Could not fetch signed_by key"));
        // absent removes the file and keys that exist.
        let gone = params(json!({"name": "ex", "state": "absent"}));
        let (c, _) = plan(&gone, &same).unwrap();
        assert_eq!(c.writes.len(), 2);
        assert!(c.writes.iter().all(|w| w.1.is_none()));
        let bad = params(json!({"name": "ex", "types": "rpm"}));
        assert!(plan(&bad, &Observed::default()).is_err());
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p = params(
            json!({"name": "ex", "uris": "https://x/", "suites": "s", "components": "main"}),
        );
        let pl = Deb822Repository
            .plan(&p, &Observed::default(), true)
            .unwrap();
        assert!(pl.outcome.changed);
        assert_eq!(
            pl.outcome.diffs[0].path,
            "/etc/apt/sources.list.d/ex.sources"
        );
        let text = pl.outcome.data["repo"].as_str().unwrap().to_string();
        let seen = Observed {
            sources: Some((text, 0o644)),
            ..Default::default()
        };
        let pl = Deb822Repository.plan(&p, &seen, true).unwrap();
        assert!(!pl.outcome.changed && pl.changes.is_none());
    }
}
