//! `stat`: facts about a path, in Ansible's `stat` dictionary.
//!
//! ```yaml
//! - stat:
//!     path: /opt/airflow/.migrated
//!   register: migrated
//! - debug: msg="{{ migrated.stat.exists and migrated.stat.isreg }}"
//! ```
//! One round trip: GNU `stat -c`, `readlink`, `<algo>sum` (sha1 by default, like Ansible),
//! `test -r/-w/-x`, and `file --mime-type` when `file` exists and `get_mime` is not false. The
//! parsing ([`stat_dict`]) is pure. Read-only (probe only, an empty plan): never changed, runs in
//! check mode.
//! Times are whole seconds (Ansible gives floats); `get_attributes` (lsattr) is accepted and
//! ignored.

use std::convert::Infallible;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::args::{de_opt_bool, de_opt_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    dest: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    follow: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    get_checksum: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    checksum_algorithm: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    checksum: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    checksum_algo: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    get_mime: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    mime: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    mime_type: Option<bool>,
    #[serde(default, rename = "mime-type", deserialize_with = "de_opt_bool")]
    mime_type2: Option<bool>,
    #[serde(default)]
    get_attributes: Option<Value>,
    #[serde(default)]
    attributes: Option<Value>,
    #[serde(default)]
    attr: Option<Value>,
    #[serde(default)]
    get_md5: Option<Value>,
}

fn script(path: &str, follow: bool, algo: Option<&str>, mime: bool) -> String {
    let q = quote(path);
    let l = if follow { "-L " } else { "" };
    let mut s = format!(
        "if [ -e {q} ] || [ -L {q} ]; then stat {l}-c 'T|%F|%a|%u|%g|%U|%G|%s|%X|%Y|%Z|%i|%h|%d|%b|%o|%t,%T' -- {q} || exit 1; "
    );
    s.push_str(&format!(
        "if [ -L {q} ]; then echo \"L|$(readlink -- {q})\"; echo \"LS|$(readlink -f -- {q})\"; fi; "
    ));
    s.push_str(&format!(
        "a=''; [ -r {q} ] && a=${{a}}r; [ -w {q} ] && a=${{a}}w; [ -x {q} ] && a=${{a}}x; echo \"A|$a\"; "
    ));
    if let Some(algo) = algo {
        s.push_str(&format!(
            "if [ -f {q} ] && [ -r {q} ]; then echo \"H|$({algo}sum < {q} | cut -d' ' -f1)\"; fi; "
        ));
    }
    if mime {
        s.push_str(&format!(
            "if command -v file >/dev/null 2>&1; then echo \"M|$(file -b {l}--mime-type -- {q})|$(file -b {l}--mime-encoding -- {q})\"; fi; "
        ));
    }
    s.push_str("else echo 'T|absent'; fi");
    s
}

/// Pure: Ansible's `stat` dict from the script's output.
pub fn stat_dict(path: &str, out: &str) -> Map<String, Value> {
    let mut d = Map::new();
    let mut lines = out.lines().filter(|l| l.contains('|'));
    let first = out
        .lines()
        .find_map(|l| l.strip_prefix("T|"))
        .unwrap_or("absent");
    if first == "absent" {
        d.insert("exists".into(), false.into());
        return d;
    }
    let f: Vec<&str> = first.split('|').collect();
    if f.len() < 16 {
        d.insert("exists".into(), false.into());
        return d;
    }
    let mode = u32::from_str_radix(f[1], 8).unwrap_or(0);
    let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
    let kind = f[0];
    d.insert("exists".into(), true.into());
    d.insert("path".into(), path.into());
    d.insert("mode".into(), format!("{:04o}", mode & 0o7777).into());
    d.insert("isdir".into(), (kind == "directory").into());
    d.insert(
        "isreg".into(),
        (kind == "regular file" || kind == "regular empty file").into(),
    );
    d.insert("islnk".into(), (kind == "symbolic link").into());
    d.insert("ischr".into(), (kind == "character special file").into());
    d.insert("isblk".into(), (kind == "block special file").into());
    d.insert("isfifo".into(), (kind == "fifo").into());
    d.insert("issock".into(), (kind == "socket").into());
    d.insert("uid".into(), n(2).into());
    d.insert("gid".into(), n(3).into());
    d.insert("pw_name".into(), f[4].into());
    d.insert("gr_name".into(), f[5].into());
    d.insert("size".into(), n(6).into());
    d.insert("atime".into(), n(7).into());
    d.insert("mtime".into(), n(8).into());
    d.insert("ctime".into(), n(9).into());
    d.insert("inode".into(), n(10).into());
    d.insert("nlink".into(), n(11).into());
    d.insert("dev".into(), n(12).into());
    d.insert("blocks".into(), n(13).into());
    d.insert("block_size".into(), n(14).into());
    let (maj, min) = f[15].split_once(',').unwrap_or(("0", "0"));
    let dev_type =
        u64::from_str_radix(maj, 16).unwrap_or(0) * 256 + u64::from_str_radix(min, 16).unwrap_or(0);
    d.insert("device_type".into(), dev_type.into());
    let bits = [
        ("rusr", 0o400),
        ("wusr", 0o200),
        ("xusr", 0o100),
        ("rgrp", 0o040),
        ("wgrp", 0o020),
        ("xgrp", 0o010),
        ("roth", 0o004),
        ("woth", 0o002),
        ("xoth", 0o001),
        ("isuid", 0o4000),
        ("isgid", 0o2000),
    ];
    for (k, b) in bits {
        d.insert(k.into(), (mode & b != 0).into());
    }
    for l in lines.by_ref() {
        if let Some(v) = l.strip_prefix("L|") {
            d.insert("lnk_target".into(), v.into());
        } else if let Some(v) = l.strip_prefix("LS|") {
            d.insert("lnk_source".into(), v.into());
        } else if let Some(v) = l.strip_prefix("A|") {
            d.insert("readable".into(), v.contains('r').into());
            d.insert("writeable".into(), v.contains('w').into());
            d.insert("executable".into(), v.contains('x').into());
        } else if let Some(v) = l.strip_prefix("H|") {
            d.insert("checksum".into(), v.trim().into());
        } else if let Some(v) = l.strip_prefix("M|") {
            let (m, c) = v.split_once('|').unwrap_or((v, ""));
            d.insert("mimetype".into(), m.into());
            d.insert("charset".into(), c.into());
        }
    }
    d
}

pub struct Stat;

#[async_trait]
impl Module for Stat {
    literal_params!("stat");
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[&["path", "dest", "name"]]
    }
    fn names(&self) -> &'static [&'static str] {
        &["stat"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

impl Params {
    /// The path and the stat script for it, checked before the host is touched.
    fn target(&self) -> Result<(String, String), ModuleError> {
        let _ = (
            &self.get_attributes,
            &self.attributes,
            &self.attr,
            &self.get_md5,
        );
        let path = self
            .path
            .clone()
            .or(self.dest.clone())
            .or(self.name.clone())
            .ok_or_else(|| ModuleError::Args("stat: path is required".into()))?;
        let algo = self
            .checksum_algorithm
            .clone()
            .or(self.checksum.clone())
            .or(self.checksum_algo.clone())
            .unwrap_or_else(|| "sha1".into());
        if !matches!(
            algo.as_str(),
            "md5" | "sha1" | "sha224" | "sha256" | "sha384" | "sha512"
        ) {
            return Err(ModuleError::Args(format!(
                "stat: checksum_algorithm must be md5, sha1, sha224, sha256, sha384 or sha512; got {algo:?}"
            )));
        }
        let want_sum = self.get_checksum.unwrap_or(true);
        let mime = self
            .get_mime
            .or(self.mime)
            .or(self.mime_type)
            .or(self.mime_type2)
            .unwrap_or(true);
        let s = script(
            &path,
            self.follow.unwrap_or(false),
            want_sum.then_some(algo.as_str()),
            mime,
        );
        Ok((path, s))
    }
}

/// The stat script's output (`Err`: its stderr when it failed).
#[derive(Debug, Clone)]
pub struct Observed(pub Result<String, String>);

#[async_trait]
impl NativeModule for Stat {
    type Params = Params;
    type Observed = Observed;
    /// Read-only: there is never anything to change.
    type Plan = Infallible;
    const NAME: &'static str = "stat";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let (_, s) = p.target()?;
        let r = ctx.sh(&s).await?;
        Ok(Observed(if r.rc == 0 {
            Ok(r.stdout)
        } else {
            Err(r.stderr.trim().to_string())
        }))
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Infallible>, ModuleError> {
        let (path, _) = p.target()?;
        Ok(Planned::nothing(match &seen.0 {
            Ok(out) => Outcome::ok().with("stat", Value::Object(stat_dict(&path, out))),
            Err(e) => Outcome::failed(format!("stat {path} failed: {e}")),
        }))
    }

    async fn apply(
        &self,
        _p: &Params,
        plan: Infallible,
        _predicted: Outcome,
        _ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        match plan {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testutil;
    use serde_json::json;

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"path": "/x", "folow": true})).is_err());
    }

    #[test]
    fn parses_a_regular_file() {
        let out = "T|regular file|644|0|4|root|adm|12|1|2|3|99|1|2049|8|4096|0,0\nA|rw\nH|abc\n";
        let d = stat_dict("/etc/x", out);
        assert_eq!(d["exists"], true);
        assert_eq!(d["mode"], "0644");
        assert_eq!(d["isreg"], true);
        assert_eq!(d["isdir"], false);
        assert_eq!(d["pw_name"], "root");
        assert_eq!(d["gr_name"], "adm");
        assert_eq!(d["gid"], 4);
        assert_eq!(d["size"], 12);
        assert_eq!(d["mtime"], 2);
        assert_eq!(d["checksum"], "abc");
        assert_eq!(d["readable"], true);
        assert_eq!(d["executable"], false);
        assert_eq!(d["roth"], true);
        assert_eq!(d["woth"], false);
    }

    #[test]
    fn absent_path() {
        let d = stat_dict("/nope", "T|absent\n");
        assert_eq!(Value::Object(d), json!({"exists": false}));
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({"path": "/etc/x"})).unwrap();
        let seen = Observed(Ok(
            "T|regular file|644|0|0|root|root|3|1|2|3|4|1|5|8|4096|0,0\nA|rw\n".into(),
        ));
        let o = Stat.plan(&p, &seen, false).unwrap();
        assert!(o.changes.is_none() && !o.outcome.changed);
        assert_eq!(o.outcome.data["stat"]["exists"], json!(true));
        assert_eq!(o.outcome.data["stat"]["mode"], json!("0644"));
        let o = Stat
            .plan(&p, &Observed(Err("denied".into())), false)
            .unwrap();
        assert!(o.changes.is_none() && o.outcome.failed);
        assert_eq!(o.outcome.msg, "stat /etc/x failed: denied");
    }

    #[tokio::test]
    async fn local_stat() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let env = testutil::Env {
            dir: dir.path().to_path_buf(),
        };
        let conn = testutil::local().await;
        let args: Args = serde_json::from_value(json!({"path": f.display().to_string()})).unwrap();
        let o = Stat
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        let st = &o.data["stat"];
        assert_eq!(st["exists"], true, "{o:?}");
        assert_eq!(st["isreg"], true);
        assert_eq!(st["size"], 3);
        assert_eq!(st["checksum"], "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
