//! `unarchive`: unpack a tar (any compression GNU tar reads) or zip archive into a directory.
//!
//! ```yaml
//! - unarchive:
//!     src: dags.tar.gz            # files/ of the role; or a path on the host with remote_src
//!     dest: /opt/airflow/dags
//!     owner: airflow
//!     creates: /opt/airflow/dags/.unpacked   # optional shortcut
//! ```
//! Idempotence rule: with `creates`, an existing path means nothing to do (one round trip).
//! Otherwise the archive is compared with `dest`: for tar, `tar --diff` (size, mode, mtime,
//! content; `Uid/Gid differs` lines are ignored, `Mode differs` too when `mode` is given), for
//! zip, every entry must exist with the archive's size; with `owner`/`group`/`mode`, every
//! archive entry under `dest` must also have them. Anything else → extract (changed).
//! Round trips: a controller `src` is uploaded into a temp file on the host together with the
//! probe, which removes it again (1); when something is to change, it is uploaded once more for
//! extraction + attributes + cleanup (2). Check mode stops after the plan. `list_files` returns the archive's entries as `files`.
//! Deviations: `src` URLs are not supported; `keep_newer`, `include`, `validate_certs`,
//! `io_buffer_size` and `decrypt` are accepted and ignored; `exclude` is passed to tar.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_list, de_opt_string, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::copy::IgnoredAttrs;
use super::fileops::{self, AttrChange, Attrs};
use super::{Args, FileKind, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    src: String,
    #[serde(deserialize_with = "de_string")]
    dest: String,
    #[serde(default, deserialize_with = "de_opt_bool")]
    remote_src: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    copy: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    creates: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    extra_opts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    exclude: Option<Vec<String>>,
    #[serde(default)]
    include: Option<Value>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    list_files: Option<bool>,
    #[serde(default)]
    keep_newer: Option<Value>,
    #[serde(default)]
    validate_certs: Option<Value>,
    #[serde(default)]
    io_buffer_size: Option<Value>,
    #[serde(default)]
    decrypt: Option<Value>,
    #[serde(flatten)]
    attrs: Attrs,
    #[serde(flatten)]
    _ignored: IgnoredAttrs,
}

/// What the probe reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub dest_ok: bool,
    pub src_ok: bool,
    pub zip: bool,
    /// Relevant `tar --diff` lines / missing zip entries.
    pub differences: Vec<String>,
    /// `user|uid|group|gid|mode` of each archive entry found under dest.
    pub entry_attrs: Vec<String>,
    pub files: Vec<String>,
}

/// Pure: `tar --diff` lines that mean the archive is not (fully) unpacked.
pub fn relevant_diff(line: &str, mode_given: bool) -> bool {
    let l = line.trim();
    if l.is_empty() || l.contains("Uid differs") || l.contains("Gid differs") {
        return false;
    }
    if mode_given && l.contains("Mode differs") {
        return false;
    }
    true
}

/// Pure: extract? and which attributes to apply to every entry.
pub fn plan(o: &Observed, attrs: &Attrs) -> (bool, Vec<AttrChange>) {
    let extract = o
        .differences
        .iter()
        .any(|l| relevant_diff(l, attrs.mode.is_some()));
    let mut wrong = Vec::new();
    for l in &o.entry_attrs {
        let f: Vec<&str> = l.split('|').collect();
        if f.len() < 5 {
            continue;
        }
        if let Some(u) = &attrs.owner {
            if f[0] != u && f[1] != u && !wrong.contains(&AttrChange::Owner(u.clone())) {
                wrong.push(AttrChange::Owner(u.clone()));
            }
        }
        if let Some(g) = &attrs.group {
            if f[2] != g && f[3] != g && !wrong.contains(&AttrChange::Group(g.clone())) {
                wrong.push(AttrChange::Group(g.clone()));
            }
        }
        if let Some(m) = attrs.mode {
            let have = u32::from_str_radix(f[4], 8).unwrap_or(0);
            if have != m && !wrong.contains(&AttrChange::Mode(m)) {
                wrong.push(AttrChange::Mode(m));
            }
        }
    }
    if extract {
        // After a fresh extraction every wanted attribute is applied.
        let mut all = Vec::new();
        if let Some(u) = &attrs.owner {
            all.push(AttrChange::Owner(u.clone()));
        }
        if let Some(g) = &attrs.group {
            all.push(AttrChange::Group(g.clone()));
        }
        if let Some(m) = attrs.mode {
            all.push(AttrChange::Mode(m));
        }
        return (true, all);
    }
    (false, wrong)
}

fn parse_probe(out: &str) -> Observed {
    let mut o = Observed::default();
    for l in out.lines() {
        if l == "DEST|1" {
            o.dest_ok = true;
        } else if l == "SRC|1" {
            o.src_ok = true;
        } else if l == "FMT|zip" {
            o.zip = true;
        } else if let Some(v) = l.strip_prefix("D|") {
            o.differences.push(v.to_string());
        } else if let Some(v) = l.strip_prefix("AT|") {
            o.entry_attrs.push(v.to_string());
        } else if let Some(v) = l.strip_prefix("F|") {
            o.files.push(v.to_string());
        }
    }
    o
}

fn probe_script(
    archive: &str,
    dest: &str,
    extra: &str,
    mode_given: bool,
    want_attrs: bool,
    upload: bool,
) -> String {
    let mut s = String::new();
    if upload {
        s.push_str("a=$(mktemp \"${TMPDIR:-/tmp}/hfplay-archive.XXXXXXXX\") || exit 1; trap 'rm -f -- \"$a\"' EXIT; cat > \"$a\"; ");
    } else {
        s.push_str(&format!("a={}; ", quote(archive)));
    }
    let d = quote(dest);
    let mode_filter = if mode_given { " -e 'Mode differs'" } else { "" };
    s.push_str(&format!(
        "[ -d {d} ] && echo 'DEST|1'; [ -r \"$a\" ] && echo 'SRC|1'; \
         if [ -d {d} ] && [ -r \"$a\" ]; then \
         if [ \"$(head -c 2 \"$a\")\" = PK ]; then echo 'FMT|zip'; \
           unzip -Z1 \"$a\" | sed 's/^/F|/'; \
           unzip -l \"$a\" | awk 'NR>3 && $1 ~ /^[0-9]+$/ && NF>=4 {{s=$1; $1=\"\"; $2=\"\"; $3=\"\"; sub(/^ +/, \"\"); print s \"\\t\" $0}}' | \
           while IFS=\"$(printf '\\t')\" read -r size name; do case \"$name\" in */) [ -d {d}/\"$name\" ] || echo \"D|$name: missing\";; *) [ \"$(stat -c %s -- {d}/\"$name\" 2>/dev/null)\" = \"$size\" ] || echo \"D|$name: differs\";; esac; done; \
         else echo 'FMT|tar'; \
           tar -tf \"$a\" {extra} | sed 's/^/F|/'; \
           tar -d -f \"$a\" -C {d} {extra} 2>&1 | grep -v -e 'Uid differs' -e 'Gid differs'{mode_filter} | sed 's/^/D|/'; \
         fi; "
    ));
    if want_attrs {
        s.push_str(&format!(
            "if [ \"$(head -c 2 \"$a\")\" = PK ]; then unzip -Z1 \"$a\"; else tar -tf \"$a\" {extra}; fi | ( cd {d} && tr '\\n' '\\0' | xargs -0 stat -c 'AT|%U|%u|%G|%g|%a' -- 2>/dev/null ); "
        ));
    }
    s.push_str("fi; true");
    s
}

pub struct Unarchive;

/// The arguments resolved and checked, before the host is touched.
struct Settings<'a> {
    src: &'a str,
    dest: &'a str,
    /// `src` is on the host (`remote_src`, or the old `copy: false`).
    remote: bool,
    /// `extra_opts` and `exclude` for tar, quoted.
    extra: String,
}

impl Params {
    fn settings(&self) -> Result<Settings<'_>, ModuleError> {
        let _ = (
            &self.include,
            &self.keep_newer,
            &self.validate_certs,
            &self.io_buffer_size,
            &self.decrypt,
        );
        let (src, dest) = (self.src.as_str(), self.dest.as_str());
        if src.contains("://") {
            return Err(ModuleError::Args(
                "unarchive: URL sources are not supported by hfplay; use get_url then unarchive with remote_src".into(),
            ));
        }
        let mut extra: Vec<String> = self
            .extra_opts
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|o| quote(o))
            .collect();
        for e in self.exclude.clone().unwrap_or_default() {
            extra.push(quote(&format!("--exclude={e}")));
        }
        Ok(Settings {
            src,
            dest,
            remote: self.remote_src.unwrap_or(false) || self.copy == Some(false),
            extra: extra.join(" "),
        })
    }
}

/// The archive's bytes when it comes from the controller (`None`: `src` is on the host).
fn controller_archive(s: &Settings, ctx: &TaskCtx<'_>) -> Result<Option<Vec<u8>>, ModuleError> {
    if s.remote {
        return Ok(None);
    }
    let src = s.src;
    let path = ctx
        .env
        .find_file(FileKind::Files, src)
        .ok_or_else(|| ModuleError::Controller(format!("unarchive: could not find src {src:?}")))?;
    Ok(Some(std::fs::read(&path).map_err(|e| {
        ModuleError::Controller(format!("unarchive: cannot read {}: {e}", path.display()))
    })?))
}

/// What the probe saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// `creates` names an existing path.
    Created(String),
    /// The probe script failed (its stderr).
    ProbeFailed(String),
    Archive(Observed),
}

/// What to do (from the pure [`plan`]); `zip` picks unzip over tar.
pub struct Changes {
    extract: bool,
    attrs: Vec<AttrChange>,
    zip: bool,
}

#[async_trait]
impl Module for Unarchive {
    literal_params!("unarchive");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["unarchive"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Unarchive {
    type Params = Params;
    type Observed = Seen;
    type Plan = Changes;
    const NAME: &'static str = "unarchive";

    /// A controller archive is uploaded into a temp file for the comparison and removed by the
    /// same script, so the probe leaves the host as it was; apply uploads it again.
    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Seen, ModuleError> {
        let s = p.settings()?;
        if let Some(c) = &p.creates {
            let r = ctx
                .sh(&format!("[ -e {} ] && echo EXISTS; true", quote(c)))
                .await?;
            if r.stdout.contains("EXISTS") {
                return Ok(Seen::Created(c.clone()));
            }
        }
        let data = controller_archive(&s, ctx)?;
        let want_attrs = p.attrs != Attrs::default();
        let probe = probe_script(
            s.src,
            s.dest,
            &s.extra,
            p.attrs.mode.is_some(),
            want_attrs,
            data.is_some(),
        );
        let r = match &data {
            Some(d) => ctx.sh_stdin(&probe, d).await?,
            None => ctx.sh(&probe).await?,
        };
        if r.rc != 0 {
            return Ok(Seen::ProbeFailed(r.stderr.trim().to_string()));
        }
        Ok(Seen::Archive(parse_probe(&r.stdout)))
    }

    fn plan(&self, p: &Params, seen: &Seen, diff: bool) -> Result<Planned<Changes>, ModuleError> {
        let s = p.settings()?;
        let (src, dest) = (s.src, s.dest);
        let mut out = Outcome::ok().with("dest", dest).with("src", src);
        let obs = match seen {
            Seen::Created(c) => {
                return Ok(Planned::nothing(
                    out.with_msg(format!("skipped, since {c} exists")),
                ))
            }
            Seen::ProbeFailed(e) => {
                return Ok(Planned::nothing(Outcome::failed(format!(
                    "unarchive probe failed: {e}"
                ))))
            }
            Seen::Archive(o) => o,
        };
        if !obs.dest_ok {
            return Ok(Planned::nothing(Outcome::failed(format!(
                "dest '{dest}' must be an existing dir"
            ))));
        }
        if !obs.src_ok {
            return Ok(Planned::nothing(Outcome::failed(format!(
                "Source '{src}' does not exist or is not readable"
            ))));
        }
        let (extract, attrs) = plan(obs, &p.attrs);
        let changed = extract || !attrs.is_empty();
        out.changed = changed;
        if p.list_files.unwrap_or(false) {
            out = out.with("files", Value::from(obs.files.clone()));
        }
        if diff && changed {
            out.diffs.push(super::FileDiff {
                path: dest.to_string(),
                before: String::new(),
                after: if extract {
                    format!("unpacked {src} ({} entries)\n", obs.files.len())
                } else {
                    let (_, a) = fileops::attr_summary(&fileops::FileState::absent(), &attrs);
                    a
                },
            });
        }
        if !changed {
            return Ok(Planned::nothing(out));
        }
        Ok(Planned::change(
            Changes {
                extract,
                attrs,
                zip: obs.zip,
            },
            out,
        ))
    }

    async fn apply(
        &self,
        p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let s = p.settings()?;
        let data = controller_archive(&s, ctx)?;
        let (qd, extra) = (quote(s.dest), &s.extra);
        let mut sh = String::from("set -e; ");
        let qa = if data.is_some() {
            sh.push_str("a=$(mktemp \"${TMPDIR:-/tmp}/hfplay-archive.XXXXXXXX\"); trap 'rm -f -- \"$a\"' EXIT; cat > \"$a\"; ");
            "\"$a\"".to_string()
        } else {
            quote(s.src)
        };
        if c.extract {
            if c.zip {
                sh.push_str(&format!("unzip -o -q {qa} -d {qd}; "));
            } else {
                sh.push_str(&format!("tar -x -f {qa} -C {qd} {extra}; "));
            }
        }
        if !c.attrs.is_empty() {
            let list = if c.zip {
                format!("unzip -Z1 {qa}")
            } else {
                format!("tar -tf {qa} {extra}")
            };
            for a in &c.attrs {
                let cmd = match a {
                    AttrChange::Owner(o) => format!("xargs -0 chown -h {} --", quote(o)),
                    AttrChange::Group(g) => format!("xargs -0 chgrp -h {} --", quote(g)),
                    AttrChange::Mode(m) => format!("xargs -0 chmod {m:04o} --"),
                };
                sh.push_str(&format!("{list} | ( cd {qd} && tr '\\n' '\\0' | {cmd} ); "));
            }
        }
        sh.push_str("true");
        let r = match &data {
            Some(d) => ctx.sh_stdin(&sh, d).await?,
            None => ctx.sh(&sh).await?,
        };
        if r.rc != 0 {
            let mut f = Outcome::failed(format!(
                "failed to unpack {} into {}: {}",
                s.src,
                s.dest,
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
    use crate::modules::testutil;
    use serde_json::json;

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"src": "a", "dst": "/x"})).is_err());
    }

    #[test]
    fn diff_lines() {
        assert!(!relevant_diff("./b: Uid differs", false));
        assert!(relevant_diff("./b: Mode differs", false));
        assert!(!relevant_diff("./b: Mode differs", true));
        assert!(relevant_diff(
            "tar: ./b: Warning: Cannot stat: No such file or directory",
            false
        ));
    }

    #[test]
    fn plans() {
        let mut o = Observed {
            dest_ok: true,
            src_ok: true,
            ..Default::default()
        };
        assert_eq!(plan(&o, &Attrs::default()), (false, vec![]));
        o.entry_attrs = vec!["root|0|root|0|644".into(), "bob|1000|root|0|644".into()];
        let a = Attrs {
            owner: Some("root".into()),
            ..Default::default()
        };
        assert_eq!(
            plan(&o, &a),
            (false, vec![AttrChange::Owner("root".into())])
        );
        o.differences.push("x: Size differs".into());
        assert_eq!(plan(&o, &a), (true, vec![AttrChange::Owner("root".into())]));
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({
            "src": "dags.tgz", "dest": "/opt/dags", "owner": "airflow"
        }))
        .unwrap();
        let mut o = Observed {
            dest_ok: true,
            src_ok: true,
            entry_attrs: vec!["airflow|990|airflow|990|644".into()],
            files: vec!["./a.py".into()],
            ..Default::default()
        };
        let same = Unarchive.plan(&p, &Seen::Archive(o.clone()), true).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert!(same.outcome.diffs.is_empty());
        o.differences.push("./a.py: Contents differ".into());
        let new = Unarchive.plan(&p, &Seen::Archive(o), true).unwrap();
        let c = new.changes.unwrap();
        assert!(c.extract && c.attrs == vec![AttrChange::Owner("airflow".into())]);
        assert!(new.outcome.changed);
        assert_eq!(
            new.outcome.diffs[0].after,
            "unpacked dags.tgz (1 entries)\n"
        );
        let done = Unarchive
            .plan(&p, &Seen::Created("/opt/dags/.x".into()), true)
            .unwrap();
        assert!(done.changes.is_none() && !done.outcome.changed);
        assert_eq!(done.outcome.msg, "skipped, since /opt/dags/.x exists");
    }

    #[tokio::test]
    async fn local_tar_and_zip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        std::fs::write(root.join("src/sub/a"), "a\n").unwrap();
        std::fs::write(root.join("src/b"), "b\n").unwrap();
        let ok = std::process::Command::new("tar")
            .args(["-C", &root.join("src").display().to_string(), "-czf"])
            .arg(root.join("x.tgz"))
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::create_dir(root.join("dest")).unwrap();
        let env = testutil::Env {
            dir: root.to_path_buf(),
        };
        let conn = testutil::local().await;
        let dest = root.join("dest").display().to_string();
        let args: Args = serde_json::from_value(
            json!({"src": "x.tgz", "dest": dest, "mode": "0640", "list_files": true}),
        )
        .unwrap();
        let o = Unarchive
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert!(!root.join("dest/b").exists());
        let o = Unarchive
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(
            std::fs::read_to_string(root.join("dest/sub/a")).unwrap(),
            "a\n"
        );
        let o = Unarchive
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(!o.changed && !o.failed, "{o:?}");
        // remote_src, and a changed file is restored
        std::fs::write(root.join("dest/b"), "changed\n").unwrap();
        let args: Args = serde_json::from_value(json!({"src": root.join("x.tgz").display().to_string(), "dest": dest, "remote_src": true})).unwrap();
        let o = Unarchive
            .run(&args, &testutil::ctx(&conn, &env, false))
            .await
            .unwrap();
        assert!(o.changed && !o.failed, "{o:?}");
        assert_eq!(std::fs::read_to_string(root.join("dest/b")).unwrap(), "b\n");
        // no temp archives left behind
        let has_zip = std::process::Command::new("sh")
            .args(["-c", "command -v zip && command -v unzip"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if has_zip {
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cd {} && zip -qr ../x.zip .",
                    root.join("src").display()
                ))
                .status()
                .unwrap();
            assert!(ok.success());
            std::fs::create_dir(root.join("zdest")).unwrap();
            let zd = root.join("zdest").display().to_string();
            let args: Args = serde_json::from_value(json!({"src": "x.zip", "dest": zd})).unwrap();
            let o = Unarchive
                .run(&args, &testutil::ctx(&conn, &env, false))
                .await
                .unwrap();
            assert!(o.changed && !o.failed, "{o:?}");
            assert_eq!(
                std::fs::read_to_string(root.join("zdest/sub/a")).unwrap(),
                "a\n"
            );
            let o = Unarchive
                .run(&args, &testutil::ctx(&conn, &env, false))
                .await
                .unwrap();
            assert!(!o.changed && !o.failed, "{o:?}");
        }
    }
}
