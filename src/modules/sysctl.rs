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
use super::contract::{execute, NativeModule, Planned};
use super::fileops::{self, Attrs, WriteOpts};
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    val: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_string")]
    sysctl_file: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    reload: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    sysctl_set: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    ignoreerrors: Option<bool>,
}

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

/// The arguments resolved: aliases merged, required ones checked.
struct Want {
    key: String,
    present: bool,
    value: Option<String>,
    file: String,
}

impl Params {
    fn want(&self) -> Result<Want, ModuleError> {
        let name = self
            .name
            .as_deref()
            .or(self.key.as_deref())
            .ok_or_else(|| ModuleError::Args("sysctl: name is required".into()))?;
        let present = self.state.unwrap_or_default() == State::Present;
        let value = self
            .value
            .as_deref()
            .or(self.val.as_deref())
            .map(|v| v.trim().to_string());
        if present && value.is_none() {
            return Err(ModuleError::Args(
                "sysctl: value is required with state=present".into(),
            ));
        }
        Ok(Want {
            key: name.replace('/', "."),
            present,
            value,
            file: self
                .sysctl_file
                .clone()
                .unwrap_or_else(|| "/etc/sysctl.conf".into()),
        })
    }
}

/// What the probe saw: the live value (`None`: unknown key) and the file's text.
pub struct Observed {
    pub live: Option<String>,
    pub text: String,
}

pub struct Changes {
    /// The file's new text, if it changes.
    new_text: Option<String>,
    set_live: bool,
}

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
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Sysctl {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "sysctl";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let w = p.want()?;
        let probe = format!(
            "v=$(sysctl -n -- {} 2>/dev/null) && printf 'V|%s\\n' \"$v\" | tr '\\t' ' ' | head -n 1; {}",
            quote(&w.key),
            fileops::content_cmd(&w.file)
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
        Ok(Observed { live, text })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let Want {
            key,
            present,
            value,
            file,
        } = p.want()?;
        let new_text = plan_file(&seen.text, &key, value.as_deref().filter(|_| present));
        if present
            && seen.live.is_none()
            && !p.ignoreerrors.unwrap_or(false)
            && (p.sysctl_set.unwrap_or(false) || p.reload.unwrap_or(true))
        {
            return Ok(Planned::nothing(Outcome::failed(format!(
                "setting {key} failed: unknown key or unreadable /proc/sys"
            ))));
        }
        let set_live = present
            && p.sysctl_set.unwrap_or(false)
            && seen.live.as_deref().map(norm) != value.as_deref().map(norm);
        let changed = new_text.is_some() || set_live;
        let mut out = Outcome::changed(changed)
            .with("name", key)
            .with("sysctl_file", file.clone());
        if let Some(v) = value {
            out = out.with("value", v);
        }
        if diff {
            if let Some(n) = &new_text {
                out.diffs.push(FileDiff {
                    path: file,
                    before: seen.text.clone(),
                    after: n.clone(),
                });
            }
        }
        Ok(Planned::when(changed, Changes { new_text, set_live }, out))
    }

    async fn apply(
        &self,
        p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let Want {
            key, value, file, ..
        } = p.want()?;
        let mut script = String::new();
        let attrs = Attrs::default();
        if c.new_text.is_some() {
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
        if c.set_live {
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
        let r = match &c.new_text {
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
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
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
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(
            json!({"name": "vm.swappiness", "value": "10", "sysctl_file": "/etc/s.conf", "sysctl_set": true}),
        )
        .unwrap();
        let same = Observed {
            live: Some("10".into()),
            text: "vm.swappiness = 10\n".into(),
        };
        let pl = Sysctl.plan(&p, &same, true).unwrap();
        assert!(pl.changes.is_none() && !pl.outcome.changed && pl.outcome.diffs.is_empty());
        let differs = Observed {
            live: Some("60".into()),
            text: "vm.swappiness = 60\n".into(),
        };
        let pl = Sysctl.plan(&p, &differs, true).unwrap();
        let c = pl.changes.unwrap();
        assert!(c.set_live && pl.outcome.changed);
        assert_eq!(c.new_text.as_deref(), Some("vm.swappiness=10\n"));
        assert_eq!(pl.outcome.diffs[0].after, "vm.swappiness=10\n");
        assert_eq!(pl.outcome.data["value"], json!("10"));
        let unknown = Observed {
            live: None,
            text: String::new(),
        };
        let pl = Sysctl.plan(&p, &unknown, false).unwrap();
        assert!(pl.changes.is_none() && pl.outcome.failed);
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm(" 4096\t87380  6291456 "), "4096 87380 6291456");
        assert_eq!(norm("yes"), "1");
        assert_eq!(file_value("a = 1\na=2\n", "a").as_deref(), Some("2"));
    }
}
