//! The write engine of `copy` and `template` on the module contract: probe the destination
//! ([`probe_put`]), plan (pure, [`plan_put`]) whether to write or only fix attributes, then
//! upload and move into place in one round trip ([`apply_put`]).

use std::sync::Arc;

use crate::connection::quote;
use crate::modules::contract::Planned;
use crate::modules::fileops::{self, AttrChange, Attrs, FileState, Kind, WriteOpts};
use crate::modules::{FileDiff, ModuleError, Outcome, TaskCtx};

/// Shared by copy and template.
#[derive(Debug, Clone, Default)]
pub struct PutOpts {
    pub attrs: Attrs,
    pub force: bool,
    pub backup: bool,
    pub validate: Option<String>,
    pub directory_mode: Option<u32>,
    /// `checksum:` argument of copy: the source's sha1 as Ansible computes it (checked on the
    /// controller when we have the bytes).
    pub expect_checksum: Option<String>,
}

/// What to put. Controller bytes are shared, not copied, between what was seen and the plan:
/// a rendered template must be uploaded exactly as it was compared.
#[derive(Debug, Clone)]
pub enum Source {
    Bytes(Arc<Vec<u8>>),
    /// A path on the host (`remote_src`).
    Remote(String),
}

/// What the probe saw at the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The real destination (`dest/<basename>` when dest is a directory).
    pub path: String,
    pub state: FileState,
    pub sha256: Option<String>,
    pub parent_exists: bool,
    /// Old content (only in diff mode, only when it differs and is small).
    pub before: Option<Vec<u8>>,
    /// sha256 of the remote source (remote_src).
    pub src_sha256: Option<String>,
}

/// The pure decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub write: bool,
    pub attrs: Vec<AttrChange>,
    pub mkdir: bool,
}

impl Plan {
    pub fn changed(&self) -> bool {
        self.write || !self.attrs.is_empty() || self.mkdir
    }
}

/// Pure: what to do given the wanted content hash and what the probe saw.
pub fn plan(
    want_sha: &str,
    o: &Observed,
    opts: &PutOpts,
    dest_is_dir_path: bool,
) -> Result<Plan, String> {
    match o.state.kind {
        Kind::Dir => return Err(format!("destination {} is a directory", o.path)),
        Kind::Other => return Err(format!("destination {} is not a regular file", o.path)),
        _ => {}
    }
    let mkdir = !o.parent_exists;
    if mkdir && !dest_is_dir_path {
        return Err(format!(
            "Destination directory {} does not exist",
            fileops::parent_dir(&o.path)
        ));
    }
    let exists = o.state.exists();
    let write = if !exists {
        true
    } else {
        opts.force && o.sha256.as_deref() != Some(want_sha)
    };
    let attrs = if write {
        Vec::new()
    } else {
        fileops::attr_changes(&opts.attrs, &o.state)
    };
    Ok(Plan {
        write,
        attrs,
        mkdir,
    })
}

fn probe_script(
    dest: &str,
    base: Option<&str>,
    diff: bool,
    want_sha: Option<&str>,
    remote: Option<&str>,
) -> String {
    let mut s = format!("p={}; ", quote(dest));
    if let Some(b) = base {
        s.push_str(&format!(
            "case \"$p\" in */) p=\"$p\"{b};; *) if [ -d \"$p\" ]; then p=\"$p\"/{b}; fi;; esac; ",
            b = quote(b)
        ));
    }
    s.push_str("echo \"P|$p\"; ");
    s.push_str(&fileops::stat_word("\"$p\"", true));
    s.push_str("; d=$(dirname -- \"$p\"); if [ -d \"$d\" ]; then echo 'D|1'; fi; ");
    s.push_str("if [ -f \"$p\" ]; then h=$(sha256sum < \"$p\" | cut -c1-64); echo \"H|$h\"; fi; ");
    if let Some(src) = remote {
        let q = quote(src);
        s.push_str(&format!(
            "if [ -f {q} ]; then echo \"R|$(sha256sum < {q} | cut -c1-64)\"; echo \"RD|$(base64 < {q} | tr -d '\\n')\"; fi; "
        ));
    }
    if diff {
        let cond = match want_sha {
            Some(w) => format!("[ \"$h\" != {w} ] && "),
            None => String::new(),
        };
        s.push_str(&format!(
            "if [ -f \"$p\" ] && {cond}[ $(stat -L -c %s \"$p\") -le 104448 ]; then echo 'C|'; base64 < \"$p\"; echo 'E|'; fi; "
        ));
    }
    s.push_str("true");
    s
}

fn parse_probe(out: &str) -> Result<(Observed, Option<Vec<u8>>), ModuleError> {
    let mut path = None;
    let mut sha = None;
    let mut parent = false;
    let mut src_sha = None;
    let mut src_data = None;
    for l in out.lines() {
        if let Some(v) = l.strip_prefix("P|") {
            path = Some(v.to_string());
        } else if let Some(v) = l.strip_prefix("H|") {
            sha = Some(v.trim().to_string());
        } else if l == "D|1" {
            parent = true;
        } else if let Some(v) = l.strip_prefix("R|") {
            src_sha = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("RD|") {
            use base64::Engine;
            src_data = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok();
        }
    }
    let state = fileops::find_stat(out)
        .ok_or_else(|| ModuleError::Controller(format!("unexpected probe output: {out}")))?;
    let before = fileops::parse_content(out)?;
    let path = path.unwrap_or_default();
    Ok((
        Observed {
            path,
            state,
            sha256: sha,
            parent_exists: parent,
            before,
            src_sha256: src_sha,
        },
        src_data,
    ))
}

/// What copy and template saw: what to put (resolved on the controller) and the destination.
#[derive(Debug, Clone)]
pub struct PutSeen {
    /// The `dest` argument.
    pub dest: String,
    pub src: Source,
    pub opts: PutOpts,
    /// The destination, and the remote source's content (for `--diff`); `Err`: the task fails
    /// with this message (a `checksum` mismatch, found before asking the host, or a failed probe).
    pub at: Result<(Observed, Option<Vec<u8>>), String>,
}

/// The planned write, with what it needs (the same bytes the plan compared).
#[derive(Debug, Clone)]
pub enum PutChange {
    Write {
        plan: Plan,
        path: String,
        existed: bool,
        src: Source,
        opts: PutOpts,
    },
    /// The destination's directory is missing: check mode takes it as made by an earlier task of
    /// the run (Ansible's copy action reports `changed` there without asking the host either);
    /// the real run fails with this message.
    Fail(String),
}

/// The probe (one round trip): the destination (`dest/<base>` when `dest` is a directory), its
/// sha256, and with `--diff` its old content.
pub async fn probe_put(
    ctx: &TaskCtx<'_>,
    dest: &str,
    base: Option<&str>,
    src: Source,
    opts: PutOpts,
) -> Result<PutSeen, ModuleError> {
    let mut seen = PutSeen {
        dest: dest.to_string(),
        src,
        opts,
        at: Err(String::new()),
    };
    let local_sha = match &seen.src {
        Source::Bytes(b) => Some(fileops::sha256_hex(b)),
        Source::Remote(_) => None,
    };
    if let (Some(want), Source::Bytes(b)) = (&seen.opts.expect_checksum, &seen.src) {
        use sha2::Digest;
        let sha1 = hex::encode(sha1_digest(b));
        let sha256 = hex::encode(sha2::Sha256::digest(b.as_slice()));
        if want != &sha1 && want != &sha256 {
            seen.at = Err(format!(
                "copy: source checksum {sha1} does not match {want}"
            ));
            return Ok(seen);
        }
    }
    let remote = match &seen.src {
        Source::Remote(p) => Some(p.as_str()),
        _ => None,
    };
    let script = probe_script(dest, base, ctx.diff, local_sha.as_deref(), remote);
    let r = ctx.sh(&script).await?;
    seen.at = if r.rc != 0 {
        Err(format!("probe of {dest} failed: {}", r.stderr.trim()))
    } else {
        Ok(parse_probe(&r.stdout)?)
    };
    Ok(seen)
}

/// Pure: what to write, and the result to report.
pub fn plan_put(seen: &PutSeen, diff: bool) -> Planned<PutChange> {
    let (obs, remote_data) = match &seen.at {
        Ok(x) => x,
        Err(m) => return Planned::nothing(Outcome::failed(m.clone())),
    };
    let (src, opts) = (&seen.src, &seen.opts);
    let want_sha = match (src, &obs.src_sha256) {
        (Source::Bytes(b), _) => fileops::sha256_hex(b),
        (Source::Remote(_), Some(s)) => s.clone(),
        (Source::Remote(r), None) => {
            return Planned::nothing(Outcome::failed(format!("Source {r} not found")));
        }
    };
    let dir_path = seen.dest.ends_with('/');
    let (plan, fail) = match plan(&want_sha, obs, opts, dir_path) {
        Ok(p) => (p, None),
        Err(msg) if !obs.parent_exists => match plan(&want_sha, obs, opts, true) {
            Ok(p) => (p, Some(msg)),
            Err(m) => return Planned::nothing(Outcome::failed(m)),
        },
        Err(msg) => return Planned::nothing(Outcome::failed(msg)),
    };
    let mut out = Outcome::changed(plan.changed())
        .with("dest", obs.path.clone())
        .with("checksum", want_sha.clone());
    if let Source::Remote(s) = src {
        out = out.with("src", s.as_str());
    }
    if diff {
        if plan.write {
            let before = obs.before.clone().unwrap_or_default();
            let after: &[u8] = match src {
                Source::Bytes(b) => b,
                Source::Remote(_) => remote_data.as_deref().unwrap_or(b""),
            };
            out.diffs
                .push(fileops::file_diff(&obs.path, &before, after));
        } else if !plan.attrs.is_empty() {
            let (before, after) = fileops::attr_summary(&obs.state, &plan.attrs);
            out.diffs.push(FileDiff {
                path: obs.path.clone(),
                before,
                after,
            });
        }
    }
    if let Some(msg) = fail {
        return Planned::change(PutChange::Fail(msg), out);
    }
    if !plan.changed() {
        return Planned::nothing(out);
    }
    Planned::change(
        PutChange::Write {
            plan,
            path: obs.path.clone(),
            existed: obs.state.exists(),
            src: src.clone(),
            opts: opts.clone(),
        },
        out,
    )
}

/// Apply (one round trip): make the directory if planned, then upload through stdin into a temp
/// file beside the destination, set attributes, validate, `mv`; or only fix attributes.
pub async fn apply_put(
    ctx: &TaskCtx<'_>,
    change: PutChange,
    mut out: Outcome,
) -> Result<Outcome, ModuleError> {
    let (plan, path, existed, src, opts) = match change {
        PutChange::Fail(msg) => return Ok(Outcome::failed(msg)),
        PutChange::Write {
            plan,
            path,
            existed,
            src,
            opts,
        } => (plan, path, existed, src, opts),
    };
    let mut script = String::new();
    if plan.mkdir {
        let d = fileops::parent_dir(&path);
        script.push_str(&format!("mkdir -p -- {} || exit 1; ", quote(&d)));
        if let Some(m) = opts.directory_mode {
            script.push_str(&format!("chmod {m:04o} {} || exit 1; ", quote(&d)));
        }
    }
    let r = if plan.write {
        let wo = WriteOpts {
            attrs: &opts.attrs,
            validate: opts.validate.as_deref(),
            backup: opts.backup && existed,
            mkdirs: false,
            source: match &src {
                Source::Remote(r) => Some(r.as_str()),
                Source::Bytes(_) => None,
            },
        };
        script.push_str(&format!("( {} )", fileops::write_script(&path, &wo)?));
        match &src {
            Source::Bytes(b) => ctx.sh_stdin(&script, b).await?,
            Source::Remote(_) => ctx.sh(&script).await?,
        }
    } else {
        script.push_str(&fileops::attr_cmds(
            &plan.attrs,
            &quote(&path),
            false,
            false,
        ));
        ctx.sh(&script).await?
    };
    if r.rc != 0 {
        let mut f = Outcome::failed(fileops::write_error(r.rc, &r.stderr, &path));
        f.data = out.data;
        return Ok(f);
    }
    if let Some(b) = fileops::backup_name(&r.stdout) {
        out = out.with("backup_file", b);
    }
    Ok(out)
}

/// sha1 without another dependency: Ansible's `checksum:` argument is a sha1 hex.
fn sha1_digest(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(state: &str, sha: Option<&str>) -> Observed {
        Observed {
            path: "/etc/x".into(),
            state: fileops::parse_stat(state).unwrap(),
            sha256: sha.map(str::to_string),
            parent_exists: true,
            before: None,
            src_sha256: None,
        }
    }

    #[test]
    fn plan_writes_missing_or_different_files() {
        let opts = PutOpts {
            force: true,
            ..Default::default()
        };
        let p = plan("aa", &obs("S|absent", None), &opts, false).unwrap();
        assert!(p.write && p.changed());
        let p = plan(
            "aa",
            &obs("S|regular file|644|root|0|root|0|3", Some("bb")),
            &opts,
            false,
        )
        .unwrap();
        assert!(p.write);
        let p = plan(
            "aa",
            &obs("S|regular file|644|root|0|root|0|3", Some("aa")),
            &opts,
            false,
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn plan_force_no_keeps_existing() {
        let opts = PutOpts {
            force: false,
            ..Default::default()
        };
        let p = plan(
            "aa",
            &obs("S|regular file|644|root|0|root|0|3", Some("bb")),
            &opts,
            false,
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn plan_fixes_attrs_only() {
        let opts = PutOpts {
            force: true,
            attrs: Attrs {
                mode: Some(0o600),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = plan(
            "aa",
            &obs("S|regular file|644|root|0|root|0|3", Some("aa")),
            &opts,
            false,
        )
        .unwrap();
        assert!(!p.write);
        assert_eq!(p.attrs, vec![AttrChange::Mode(0o600)]);
    }

    #[test]
    fn plan_refuses_directory_and_missing_parent() {
        let opts = PutOpts {
            force: true,
            ..Default::default()
        };
        assert!(plan(
            "aa",
            &obs("S|directory|755|root|0|root|0|3", None),
            &opts,
            false
        )
        .is_err());
        let mut o = obs("S|absent", None);
        o.parent_exists = false;
        assert!(plan("aa", &o, &opts, false).is_err());
        assert!(plan("aa", &o, &opts, true).unwrap().mkdir);
    }

    #[test]
    fn sha1_matches_known_vector() {
        assert_eq!(
            hex::encode(sha1_digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(sha1_digest(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
