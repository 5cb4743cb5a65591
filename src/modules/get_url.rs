//! `get_url`: download a file on the target (curl, else wget).
//!
//! ```yaml
//! - get_url:
//!     url: https://example.org/tool-1.2.tar.gz
//!     dest: /opt/tool-1.2.tar.gz
//!     checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!     mode: "0644"
//! ```
//! Probe (one round trip): stat of `dest` (or `dest/<url basename>` when `dest` is a
//! directory) and its checksum in the requested algorithm. Plan (pure, [`plan`]) as Ansible:
//! an existing file is not downloaded again unless `force` or its checksum differs from
//! `checksum`; then only owner/group/mode are fixed. Apply: download into a temp file beside
//! `dest`, verify `checksum`, compare with the current file (unchanged content → not changed),
//! set attributes, `mv`. With `force` in check mode the download still happens into the temp
//! file (removed afterwards; the contract's `simulate`) so the prediction is exact; otherwise
//! check mode stops after the plan. Deviations: `checksum` as a URL is not supported; `checksum_src`/`checksum_dest` are
//! sha256; a directory `dest` takes the URL's basename (not Content-Disposition).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_string, de_opt_u64, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::copy::IgnoredAttrs;
use super::fileops::{self, AttrChange, Attrs, FileState, Kind};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    url: String,
    #[serde(deserialize_with = "de_string")]
    dest: String,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(default, deserialize_with = "de_opt_string")]
    checksum: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    timeout: Option<u64>,
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    validate_certs: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    url_username: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    url_password: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    password: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force_basic_auth: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backup: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    http_agent: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    use_proxy: Option<bool>,
    #[serde(default)]
    tmp_dest: Option<Value>,
    #[serde(default)]
    decompress: Option<Value>,
    #[serde(default)]
    use_gssapi: Option<Value>,
    #[serde(default)]
    use_netrc: Option<Value>,
    #[serde(default)]
    unredirected_headers: Option<Value>,
    #[serde(default)]
    ciphers: Option<Value>,
    #[serde(default)]
    client_cert: Option<Value>,
    #[serde(default)]
    client_key: Option<Value>,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

/// `sha256:abc…` → (`sha256`, `abc…`).
pub fn parse_checksum(c: &str) -> Result<(String, String), String> {
    let (algo, sum) = c
        .split_once(':')
        .ok_or_else(|| format!("checksum must look like 'sha256:<hex>', got {c:?}"))?;
    let algo = algo.trim().to_ascii_lowercase();
    if !matches!(
        algo.as_str(),
        "md5" | "sha1" | "sha224" | "sha256" | "sha384" | "sha512"
    ) {
        return Err(format!("unsupported checksum algorithm {algo:?}"));
    }
    let sum = sum.trim();
    if sum.contains("://") {
        return Err("checksum URLs are not supported by hfplay; give the digest".into());
    }
    if sum.is_empty() || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("checksum {sum:?} is not a hex digest"));
    }
    Ok((algo, sum.to_ascii_lowercase()))
}

/// URL basename (query and fragment dropped).
pub fn url_basename(url: &str) -> String {
    let u = url.split(['?', '#']).next().unwrap_or(url);
    // Drop `scheme://host` so a bare host is not taken for a file name.
    let path = match u.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or(""),
        None => u,
    };
    let b = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if b.is_empty() {
        "index.html".into()
    } else {
        b.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Download (and compare); `check_by_download`: even in check mode.
    Download {
        check_by_download: bool,
    },
    Attrs(Vec<AttrChange>),
    Nothing,
}

/// Pure: download or not, from what the probe saw.
pub fn plan(
    force: bool,
    want_sum: Option<&str>,
    state: &FileState,
    have_sum: Option<&str>,
    attrs: &Attrs,
) -> Plan {
    if !state.exists() {
        return Plan::Download {
            check_by_download: false,
        };
    }
    if force {
        return Plan::Download {
            check_by_download: true,
        };
    }
    if let Some(w) = want_sum {
        if have_sum != Some(w) {
            return Plan::Download {
                check_by_download: false,
            };
        }
    }
    let ch = fileops::attr_changes(attrs, state);
    if ch.is_empty() {
        Plan::Nothing
    } else {
        Plan::Attrs(ch)
    }
}

fn headers_of(v: &Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .filter_map(|kv| kv.split_once(':'))
            .map(|(k, v)| format!("{}: {}", k.trim(), v.trim()))
            .collect(),
        _ => Vec::new(),
    }
}

pub struct GetUrl;

/// `url`, `dest` and the parsed `checksum` (algorithm, digest).
type Target<'a> = (&'a str, &'a str, Option<(String, String)>);

impl Params {
    /// The target, checked before the host is touched.
    fn target(&self) -> Result<Target<'_>, ModuleError> {
        let sum = self
            .checksum
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(parse_checksum)
            .transpose()
            .map_err(|e| ModuleError::Args(format!("get_url: {e}")))?;
        Ok((&self.url, &self.dest, sum))
    }
}

/// What the probe saw at the destination.
#[derive(Debug, Clone)]
pub struct Observed {
    /// `dest`, or `dest/<url basename>` when `dest` is a directory.
    pub path: String,
    pub state: FileState,
    /// The current file's digest in the `checksum` algorithm.
    pub have: Option<String>,
}

/// The plan with the destination it is for.
pub struct Changes {
    plan: Plan,
    path: String,
    state: FileState,
}

/// Downloads into a temp file beside the destination, verifies and compares it; unless
/// `simulate` (check mode with `force`: the prediction needs the content, the host keeps its
/// file) installs it with its attributes.
async fn download(
    p: &Params,
    c: &Changes,
    mut out: Outcome,
    simulate: bool,
    ctx: &TaskCtx<'_>,
) -> Result<Outcome, ModuleError> {
    let (url, _, sum) = p.target()?;
    let (path, state) = (&c.path, &c.state);
    let timeout = p.timeout.unwrap_or(10);
    let insecure = !p.validate_certs.unwrap_or(true);
    let user = p.url_username.clone().or(p.username.clone());
    let pass = p.url_password.clone().or(p.password.clone());
    let hdrs = headers_of(&p.headers);
    let mut curl = format!("curl -fsSL --max-time {timeout} -w '%{{http_code}}'");
    let mut wget = format!("wget -q -T {timeout}");
    if insecure {
        curl.push_str(" -k");
        wget.push_str(" --no-check-certificate");
    }
    if p.use_proxy == Some(false) {
        curl.push_str(" --noproxy '*'");
        wget.push_str(" --no-proxy");
    }
    if let Some(a) = &p.http_agent {
        curl.push_str(&format!(" -A {}", quote(a)));
        wget.push_str(&format!(" -U {}", quote(a)));
    }
    for h in &hdrs {
        curl.push_str(&format!(" -H {}", quote(h)));
        wget.push_str(&format!(" --header={}", quote(h)));
    }
    if let Some(u) = &user {
        let up = format!("{u}:{}", pass.clone().unwrap_or_default());
        curl.push_str(&format!(" -u {}", quote(&up)));
        wget.push_str(&format!(
            " --user={} --password={}",
            quote(u),
            quote(&pass.clone().unwrap_or_default())
        ));
    }
    let qu = quote(url);
    let qp = quote(path);
    let dir = quote(&fileops::parent_dir(path));
    let mut s = format!(
        "t=$(mktemp {dir}/.hfplay.XXXXXXXX) || exit 1; trap 'rm -f \"$t\"' EXIT; \
         if command -v curl >/dev/null 2>&1; then code=$({curl} -o \"$t\" {qu}) || {{ echo \"download failed (HTTP $code)\" >&2; exit 92; }}; echo \"CODE|$code\"; \
         elif command -v wget >/dev/null 2>&1; then {wget} -O \"$t\" {qu} || {{ echo 'download failed' >&2; exit 92; }}; \
         else echo 'neither curl nor wget is installed on the host' >&2; exit 90; fi; "
    );
    if let Some((a, want)) = &sum {
        s.push_str(&format!(
            "got=$({a}sum < \"$t\" | cut -d' ' -f1); if [ \"$got\" != {want} ]; then echo \"The checksum for {} did not match {want}; it was $got.\" >&2; exit 91; fi; ",
            path.replace(['"', '\\', '$', '`'], "")
        ));
    }
    s.push_str(&format!(
        "new=$(sha256sum < \"$t\" | cut -c1-64); echo \"NEW|$new\"; echo \"SIZE|$(stat -c %s \"$t\")\"; \
         if [ -f {qp} ] && [ \"$(sha256sum < {qp} | cut -c1-64)\" = \"$new\" ]; then echo SAME; exit 0; fi; echo DIFF; "
    ));
    if simulate {
        s.push_str("exit 0");
    } else {
        s.push_str(&format!(
            "if [ -e {qp} ]; then chmod --reference={qp} \"$t\"; chown --reference={qp} \"$t\" 2>/dev/null || true; else chmod $(printf '%o' $((0666 & ~$(umask)))) \"$t\"; fi; "
        ));
        if p.backup.unwrap_or(false) {
            s.push_str(&format!(
                "if [ -f {qp} ]; then b={qp}.$$.$(date +%Y-%m-%d@%H:%M:%S)~; cp -p -- {qp} \"$b\"; echo \"B|$b\"; fi; "
            ));
        }
        let mut ch = Vec::new();
        if let Some(o) = &p.attrs.owner {
            ch.push(AttrChange::Owner(o.clone()));
        }
        if let Some(g) = &p.attrs.group {
            ch.push(AttrChange::Group(g.clone()));
        }
        if let Some(m) = p.attrs.mode {
            ch.push(AttrChange::Mode(m));
        }
        s.push_str(&format!(
            "{} || exit 1; mv -f -- \"$t\" {qp} && trap - EXIT",
            fileops::attr_cmds(&ch, "\"$t\"", false, false)
        ));
    }
    let r = ctx.sh(&s).await?;
    let field = |k: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    if let Some(c) = field("CODE|") {
        if let Ok(n) = c.parse::<u64>() {
            out = out.with("status_code", n);
        }
    }
    if r.rc != 0 {
        let mut f = Outcome::failed(r.stderr.trim().to_string());
        f.data = out.data;
        return Ok(f);
    }
    let same = r.stdout.lines().any(|l| l == "SAME");
    if let Some(n) = field("NEW|") {
        out = out.with("checksum_src", n.clone()).with("checksum_dest", n);
    }
    if let Some(sz) = field("SIZE|").and_then(|s| s.parse::<u64>().ok()) {
        out = out.with("size", sz).with_msg(format!("OK ({sz} bytes)"));
    }
    if let Some(b) = fileops::backup_name(&r.stdout) {
        out = out.with("backup_file", b);
    }
    out.changed = !same;
    if same {
        // Content unchanged: attributes may still need fixing.
        let ch = fileops::attr_changes(&p.attrs, state);
        if !ch.is_empty() {
            out.changed = true;
            if !simulate {
                return set_attrs(&ch, path, out, ctx).await;
            }
        }
    }
    Ok(out)
}

async fn set_attrs(
    ch: &[AttrChange],
    path: &str,
    out: Outcome,
    ctx: &TaskCtx<'_>,
) -> Result<Outcome, ModuleError> {
    let r = ctx
        .sh(&fileops::attr_cmds(ch, &quote(path), false, false))
        .await?;
    if r.rc != 0 {
        return Ok(Outcome::failed(format!("{path}: {}", r.stderr.trim())));
    }
    Ok(out)
}

#[async_trait]
impl Module for GetUrl {
    literal_params!("get_url");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["get_url"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for GetUrl {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "get_url";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let (url, dest, sum) = p.target()?;
        let base = quote(&url_basename(url));
        let mut probe = format!(
            "p={}; if [ -d \"$p\" ]; then p=\"${{p%/}}\"/{base}; fi; echo \"P|$p\"; {}",
            quote(dest),
            fileops::stat_word("\"$p\"", true)
        );
        if let Some((a, _)) = &sum {
            probe.push_str(&format!(
                "; if [ -f \"$p\" ]; then echo \"H|$({a}sum < \"$p\" | cut -d' ' -f1)\"; fi"
            ));
        }
        let r = ctx.sh(&probe).await?;
        let path = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("P|"))
            .unwrap_or(dest)
            .to_string();
        let state = fileops::find_stat(&r.stdout).ok_or_else(|| {
            ModuleError::Controller(format!("unexpected probe output: {}", r.stdout))
        })?;
        let have = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("H|"))
            .map(|s| s.trim().to_string());
        Ok(Observed { path, state, have })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let _ = (
            &p.tmp_dest,
            &p.decompress,
            &p.use_gssapi,
            &p.use_netrc,
            &p.unredirected_headers,
            &p.ciphers,
            &p.client_cert,
            &p.client_key,
            p.force_basic_auth,
        );
        let (url, _, sum) = p.target()?;
        let Observed { path, state, have } = seen;
        if matches!(state.kind, Kind::Dir | Kind::Other) {
            return Ok(Planned::nothing(Outcome::failed(format!(
                "{path} is not a regular file"
            ))));
        }
        let pl = plan(
            p.force.unwrap_or(false),
            sum.as_ref().map(|s| s.1.as_str()),
            state,
            have.as_deref(),
            &p.attrs,
        );
        let mut out = Outcome::ok().with("dest", path.clone()).with("url", url);
        if pl == Plan::Nothing {
            return Ok(Planned::nothing(out.with_msg("file already exists")));
        }
        // A forced download may bring the same content: `simulate` downloads to know.
        out.changed = true;
        Ok(Planned::change(
            Changes {
                plan: pl,
                path: path.clone(),
                state: state.clone(),
            },
            out,
        ))
    }

    async fn simulate(
        &self,
        p: &Params,
        c: Changes,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        match c.plan {
            Plan::Download {
                check_by_download: true,
            } => download(p, &c, predicted, true, ctx).await,
            _ => Ok(predicted),
        }
    }

    async fn apply(
        &self,
        p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        match &c.plan {
            Plan::Attrs(ch) => set_attrs(ch, &c.path, out, ctx).await,
            _ => download(p, &c, out, false, ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fileops::parse_stat;
    use crate::modules::testutil;
    use serde_json::json;

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"url": "x", "dset": "/x"})).is_err());
    }

    #[test]
    fn checksums_and_names() {
        assert_eq!(
            parse_checksum("sha256:ABC").unwrap(),
            ("sha256".into(), "abc".into())
        );
        assert!(parse_checksum("sha256").is_err());
        assert!(parse_checksum("sha256:https://x/sum").is_err());
        assert!(parse_checksum("crc:1").is_err());
        assert_eq!(url_basename("https://h/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(url_basename("https://h/"), "index.html");
    }

    #[test]
    fn plans_like_ansible() {
        let file = parse_stat("S|regular file|644|root|0|root|0|3").unwrap();
        let none = Attrs::default();
        assert_eq!(
            plan(false, None, &FileState::absent(), None, &none),
            Plan::Download {
                check_by_download: false
            }
        );
        assert_eq!(plan(false, None, &file, None, &none), Plan::Nothing);
        assert_eq!(
            plan(false, Some("aa"), &file, Some("aa"), &none),
            Plan::Nothing
        );
        assert!(matches!(
            plan(false, Some("aa"), &file, Some("bb"), &none),
            Plan::Download { .. }
        ));
        assert_eq!(
            plan(true, None, &file, None, &none),
            Plan::Download {
                check_by_download: true
            }
        );
        let m = Attrs {
            mode: Some(0o600),
            ..Default::default()
        };
        assert_eq!(
            plan(false, None, &file, None, &m),
            Plan::Attrs(vec![AttrChange::Mode(0o600)])
        );
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({
            "url": "https://h/t.tgz", "dest": "/opt/", "checksum": "sha256:AA"
        }))
        .unwrap();
        let seen = |have: &str| Observed {
            path: "/opt/t.tgz".into(),
            state: parse_stat("S|regular file|644|root|0|root|0|3").unwrap(),
            have: Some(have.into()),
        };
        let same = GetUrl.plan(&p, &seen("aa"), false).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert_eq!(same.outcome.msg, "file already exists");
        assert_eq!(same.outcome.data["dest"], json!("/opt/t.tgz"));
        let other = GetUrl.plan(&p, &seen("bb"), false).unwrap();
        assert!(other.outcome.changed);
        assert_eq!(
            other.changes.map(|c| c.plan),
            Some(Plan::Download {
                check_by_download: false
            })
        );
        let dir = Observed {
            state: parse_stat("S|directory|755|root|0|root|0|3").unwrap(),
            ..seen("aa")
        };
        let d = GetUrl.plan(&p, &dir, false).unwrap();
        assert!(d.changes.is_none() && d.outcome.failed);
    }

    #[tokio::test]
    async fn local_file_url() {
        let dir = tempfile::tempdir().unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let has_curl = std::process::Command::new("sh")
            .args(["-c", "command -v curl"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !has_curl {
            return;
        }
        let src = dir.path().join("src.txt");
        std::fs::write(&src, "abc").unwrap();
        let dest = dir.path().join("dl.txt").display().to_string();
        let url = format!("file://{}", src.display());
        let sum = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let args: Args =
            serde_json::from_value(json!({"url": url, "dest": dest, "checksum": sum})).unwrap();
        let o = GetUrl
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(o.changed && !std::path::Path::new(&dest).exists(), "{o:?}");
        let o = GetUrl
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "abc");
        let o = GetUrl
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
        // force: downloads, but the same content is not a change (also in check mode)
        let args: Args =
            serde_json::from_value(json!({"url": url, "dest": dest, "force": true})).unwrap();
        let o = GetUrl
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
        // a wrong checksum fails
        let args: Args = serde_json::from_value(
            json!({"url": url, "dest": dest, "checksum": "sha256:00", "force": true}),
        )
        .unwrap();
        let o = GetUrl
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.failed, "{o:?}");
    }
}
