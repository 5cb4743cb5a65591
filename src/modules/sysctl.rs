//! `sysctl`: a kernel parameter in a sysctl file and (optionally) in the running kernel.
//!
//! ```yaml
//! - sysctl:
//!     name: vm.swappiness
//!     value: "10"
//!     sysctl_file: /etc/sysctl.d/90-heirflow.conf
//!     sysctl_set: true
//! ```
//! Probe (one round trip): `sysctl -n NAME` and the file's content. Plan (pure, [`plan_file`]):
//! Ansible's rewrite — when the file's value (last occurrence) differs, every `key = value` line
//! is rewritten as `key=value` with duplicates dropped and the wanted key replaced (or appended);
//! `absent` drops the key. With `sysctl_set`, the live value is compared (whitespace
//! normalised) and set with `sysctl -w`. `reload` (default true) runs `sysctl -p FILE` when
//! anything changed. Apply: one round trip. Check mode and `--diff` come from the plan.

use async_trait::async_trait;
use serde::Deserialize;

use super::args::{de_opt_bool, de_opt_string};
use super::fileops::{self, Attrs, WriteOpts};
use super::{parse, Args, FileDiff, Module, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    val: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    state: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    sysctl_file: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    reload: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    sysctl_set: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    ignoreerrors: Option<bool>,
}

const ARGS: &[&str] = &[
    "name",
    "key",
    "value",
    "val",
    "state",
    "sysctl_file",
    "reload",
    "sysctl_set",
    "ignoreerrors",
];

/// Whitespace-normalised value; Ansible's boolean words become 1/0.
pub fn norm(v: &str) -> String {
    let j = v.split_whitespace().collect::<Vec<_>>().join(" ");
    match j.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => "1".into(),
        "no" | "false" | "off" => "0".into(),
        _ => j,
    }
}

/// The value of `key` in the file (last occurrence).
pub fn file_value(text: &str, key: &str) -> Option<String> {
    let mut v = None;
    for l in text.lines() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some((k, val)) = t.split_once('=') {
            if k.trim() == key {
                v = Some(val.trim().to_string());
            }
        }
    }
    v
}

/// Pure: the new file text (`None` if the file is fine).
pub fn plan_file(text: &str, key: &str, value: Option<&str>) -> Option<String> {
    let cur = file_value(text, key);
    let needs = match value {
        Some(v) => cur.as_deref().map(norm) != Some(norm(v)),
        None => cur.is_some(),
    };
    if !needs {
        return None;
    }
    let mut out = String::new();
    let mut seen: Vec<String> = Vec::new();
    for l in text.split_inclusive('\n') {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') || !t.contains('=') {
            out.push_str(l);
            if !l.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        let (k, v) = t.split_once('=').unwrap_or((t, ""));
        let (k, v) = (k.trim(), v.trim());
        if seen.iter().any(|s| s == k) {
            continue;
        }
        seen.push(k.to_string());
        if k == key {
            if let Some(nv) = value {
                out.push_str(&format!("{k}={nv}\n"));
            }
        } else {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    if let Some(v) = value {
        if !seen.iter().any(|s| s == key) {
            out.push_str(&format!("{key}={v}\n"));
        }
    }
    Some(out)
}

pub struct Sysctl;

#[async_trait]
impl Module for Sysctl {
    literal_params!("sysctl");
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[&["name", "key"]]
    }
    fn names(&self) -> &'static [&'static str] {
        &["sysctl"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        ARGS
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        let p: Params = parse("sysctl", args)?;
        let name = p
            .name
            .clone()
            .or(p.key.clone())
            .ok_or_else(|| ModuleError::Args("sysctl: name is required".into()))?;
        let present = match p.state.as_deref().unwrap_or("present") {
            "present" => true,
            "absent" => false,
            o => return Err(ModuleError::Args(format!("sysctl: unknown state {o:?}"))),
        };
        let value = p
            .value
            .clone()
            .or(p.val.clone())
            .map(|v| v.trim().to_string());
        if present && value.is_none() {
            return Err(ModuleError::Args(
                "sysctl: value is required with state=present".into(),
            ));
        }
        let file = p
            .sysctl_file
            .clone()
            .unwrap_or_else(|| "/etc/sysctl.conf".into());
        let key = name.replace('/', ".");
        let qk = quote(&key);
        let probe = format!(
            "v=$(sysctl -n -- {qk} 2>/dev/null) && printf 'V|%s\\n' \"$v\" | tr '\\t' ' ' | head -n 1; {}",
            fileops::content_cmd(&file)
        );
        let r = ctx.sh(&probe).await?;
        let live = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("V|"))
            .map(str::to_string);
        let text = fileops::parse_content(&r.stdout)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let new_text = plan_file(&text, &key, if present { value.as_deref() } else { None });
        if present
            && live.is_none()
            && !p.ignoreerrors.unwrap_or(false)
            && (p.sysctl_set.unwrap_or(false) || p.reload.unwrap_or(true))
        {
            return Ok(Outcome::failed(format!(
                "setting {key} failed: unknown key or unreadable /proc/sys"
            )));
        }
        let set_live = present
            && p.sysctl_set.unwrap_or(false)
            && live.as_deref().map(norm) != value.as_deref().map(norm);
        let changed = new_text.is_some() || set_live;
        let mut out = Outcome::changed(changed)
            .with("name", key.clone())
            .with("sysctl_file", file.clone());
        if let Some(v) = &value {
            out = out.with("value", v.clone());
        }
        if ctx.diff {
            if let Some(n) = &new_text {
                out.diffs.push(FileDiff {
                    path: file.clone(),
                    before: text.clone(),
                    after: n.clone(),
                });
            }
        }
        if !changed || ctx.check {
            return Ok(out);
        }
        let mut script = String::new();
        let attrs = Attrs::default();
        if new_text.is_some() {
            let wo = WriteOpts {
                attrs: &attrs,
                validate: None,
                backup: false,
                mkdirs: true,
                source: None,
            };
            script.push_str(&format!(
                "( {} ) || exit 1; ",
                fileops::write_script(&file, &wo)?
            ));
        }
        if set_live {
            if let Some(v) = &value {
                script.push_str(&format!(
                    "sysctl -q -w {} >/dev/null || exit 2; ",
                    quote(&format!("{key}={v}"))
                ));
            }
        }
        if p.reload.unwrap_or(true) {
            let e = if p.ignoreerrors.unwrap_or(false) {
                " -e"
            } else {
                ""
            };
            script.push_str(&format!(
                "sysctl -q{e} -p {} >/dev/null || exit 3; ",
                quote(&file)
            ));
        }
        script.push_str("true");
        let r = match &new_text {
            Some(n) => ctx.sh_stdin(&script, n.as_bytes()).await?,
            None => ctx.sh(&script).await?,
        };
        if r.rc != 0 {
            let what = match r.rc {
                2 => "setting the live value",
                3 => "reloading the sysctl file",
                _ => "writing the sysctl file",
            };
            let mut f =
                Outcome::failed(format!("sysctl {key}: {what} failed: {}", r.stderr.trim()));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = ARGS.iter().map(|k| (k.to_string(), Value::Null)).collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"name": "a", "valeu": 1})).is_err());
    }

    #[test]
    fn unchanged_when_value_matches() {
        let t = "# comment\nvm.swappiness = 10\nnet.core.somaxconn=1024\n";
        assert_eq!(plan_file(t, "vm.swappiness", Some("10")), None);
        assert_eq!(
            plan_file(
                "net.ipv4.tcp_rmem = 4096  87380 6291456\n",
                "net.ipv4.tcp_rmem",
                Some("4096 87380 6291456")
            ),
            None
        );
    }

    #[test]
    fn rewrites_like_ansible() {
        let t = "# comment\nvm.swappiness = 60\nnet.core.somaxconn = 1024\nvm.swappiness=30\n";
        assert_eq!(
            plan_file(t, "vm.swappiness", Some("10")).unwrap(),
            "# comment\nvm.swappiness=10\nnet.core.somaxconn=1024\n"
        );
        assert_eq!(plan_file("a=1\n", "b", Some("2")).unwrap(), "a=1\nb=2\n");
        assert_eq!(plan_file("", "b", Some("2")).unwrap(), "b=2\n");
        assert_eq!(plan_file("a=1\nb=2\n", "b", None).unwrap(), "a=1\n");
        assert_eq!(plan_file("a=1\n", "b", None), None);
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm(" 4096\t87380  6291456 "), "4096 87380 6291456");
        assert_eq!(norm("yes"), "1");
        assert_eq!(file_value("a = 1\na=2\n", "a").as_deref(), Some("2"));
    }
}
