//! Argument plumbing shared by modules: Ansible-lenient deserializers (booleans from
//! `yes`/`no`/`on`/`off`, integers from strings, octal modes) and `k=v` free-form parsing.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::words::to_bool;

/// A module's templated arguments.
pub type Args = Map<String, Value>;

pub use hfplay_derive::ModuleArgs;

/// The argument names a `Params` type takes, derived from its fields (`#[derive(ModuleArgs)]`,
/// see `hfplay-derive`), so the unknown-argument check and the type cannot drift apart.
pub trait ModuleArgs {
    /// Every accepted name: fields (renamed), aliases and flattened structs' names.
    fn accepted() -> &'static [&'static str];
    /// The required fields, each as its name and aliases (one of them must be given).
    fn required() -> &'static [&'static [&'static str]];
}

/// The `state` of modules that only make a thing exist or not (group, user, sysctl,
/// lineinfile, blockinfile): one enum, so each accepts and rejects the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

pub fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    to_bool(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {v}")))
}

pub fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    to_bool(&v)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {v}")))
}

pub fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got {s:?}"))),
        _ => Err(serde::de::Error::custom(format!(
            "expected an integer, got {v}"
        ))),
    }
}

/// A scalar as a string (numbers and booleans accepted, as Ansible converts them).
pub fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(if b { "True" } else { "False" }.into())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// A required scalar as a string, as [`de_opt_string`] takes it. `parse` reports a missing or
/// null one before serde sees it; null here is only reached by deserializing directly.
pub fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_opt_string(d)?.ok_or_else(|| serde::de::Error::custom("expected a string, got null"))
}

/// A list given as a YAML list or a comma-separated string (`name: a,b`).
pub fn de_opt_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        )),
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(serde::de::Error::custom(format!(
                    "expected a list of strings, got {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(serde::de::Error::custom(format!(
            "expected a list, got {other}"
        ))),
    }
}

/// File mode: an integer is the permission bits themselves (YAML 1.1 reads `0644` as octal, as
/// Ansible does); a string is octal text (`"0644"`, `"644"`). Symbolic modes are not supported.
pub fn de_opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(|m| Some(m as u32))
            .ok_or_else(|| serde::de::Error::custom("bad mode")),
        Value::String(s) => parse_mode(s).map(Some).map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom(format!(
            "expected a mode such as '0644', got {v}"
        ))),
    }
}

pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            format!(
                "invalid mode {s:?}: use octal such as '0644' (symbolic modes are not supported)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{command, copy, file, systemd};

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("u+x").is_err());
        assert!(parse_mode("99999").is_err());
    }

    /// The names derived for modules with flattened attribute structs and renamed fields are
    /// the ones their hand-written lists gave before the derive (copied here), in that order.
    #[test]
    fn derived_names_match_the_old_hand_lists() {
        let attrs = ["owner", "group", "mode"];
        let ignored = [
            "seuser",
            "serole",
            "setype",
            "selevel",
            "unsafe_writes",
            "attributes",
            "attr",
        ];
        let file: Vec<&str> = ["path", "dest", "name", "state", "src"]
            .into_iter()
            .chain(attrs)
            .chain([
                "recurse",
                "force",
                "follow",
                "access_time",
                "access_time_format",
                "modification_time",
                "modification_time_format",
            ])
            .chain(ignored)
            .collect();
        assert_eq!(file::Params::accepted(), file.as_slice());
        let copy: Vec<&str> = ["content", "src", "dest"]
            .into_iter()
            .chain(attrs)
            .chain([
                "force",
                "backup",
                "remote_src",
                "directory_mode",
                "validate",
                "follow",
                "local_follow",
                "decrypt",
                "checksum",
            ])
            .chain(ignored)
            .collect();
        assert_eq!(copy::Params::accepted(), copy.as_slice());
        // `mode: preserve` wrapping changes no name.
        assert_eq!(
            copy::WithPreserve::<copy::Params>::accepted(),
            copy.as_slice()
        );
        let systemd = [
            "name",
            "unit",
            "state",
            "enabled",
            "masked",
            "daemon_reload",
            "daemon-reload",
            "daemon_reexec",
            "daemon-reexec",
            "scope",
            "no_block",
            "force",
        ];
        assert_eq!(systemd::Params::accepted(), systemd.as_slice());
        let command = [
            "_raw_params",
            "cmd",
            "argv",
            "creates",
            "removes",
            "chdir",
            "executable",
            "stdin",
            "stdin_add_newline",
            "strip_empty_ends",
            "warn",
        ];
        assert_eq!(command::Params::accepted(), command.as_slice());
    }

    #[derive(Deserialize, ModuleArgs)]
    #[allow(dead_code)]
    struct Inner {
        owner: Option<String>,
        must: String,
    }

    #[derive(Deserialize, ModuleArgs)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(alias = "dest", alias = "name")]
        path: String,
        #[serde(rename(deserialize = "use", serialize = "use_"))]
        use_: Option<String>,
        #[serde(default)]
        count: u32,
        #[serde(flatten)]
        inner: Inner,
        #[serde(skip)]
        cache: u32,
        #[serde(default, rename = "daemon-reload")]
        r#type: bool,
    }

    /// Renames, aliases, skipped and defaulted fields, flattened structs' names: as serde reads
    /// them. A required field is one that is neither `Option` nor `default`.
    #[test]
    fn derive_follows_serde_attributes() {
        assert_eq!(
            Outer::accepted(),
            [
                "path",
                "dest",
                "name",
                "use",
                "count",
                "owner",
                "must",
                "daemon-reload"
            ]
        );
        assert_eq!(
            Outer::required(),
            [&["path", "dest", "name"][..], &["must"][..]]
        );
        // Every derived name deserializes (an alias once: serde refuses a field given twice).
        for k in ["path", "dest", "name"] {
            let v = serde_json::json!({ k: "/x", "use": "u", "must": "m", "daemon-reload": true });
            assert!(serde_json::from_value::<Outer>(v).is_ok(), "{k}");
        }
    }
}
