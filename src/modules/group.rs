//! `group`: a local group.
//!
//! ```yaml
//! - group:
//!     name: airflow
//!     gid: 990
//!     system: true
//! ```
//! Probe (one round trip): `getent group NAME`. Plan (pure, [`plan`]): `groupadd` when missing,
//! `groupmod -g` when the gid differs, `groupdel` for `state: absent`. Apply: one round trip
//! unless in check mode.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_u64, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_u64")]
    gid: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    system: Option<bool>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    non_unique: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default)]
    local: Option<Value>,
    #[serde(default)]
    gid_min: Option<Value>,
    #[serde(default)]
    gid_max: Option<Value>,
}

/// Pure: the command to run (`None`: nothing to do). `current` is the gid if the group exists.
pub fn plan(
    name: &str,
    present: bool,
    gid: Option<u64>,
    system: bool,
    non_unique: bool,
    force: bool,
    current: Option<u64>,
) -> Option<String> {
    let q = quote(name);
    match (present, current) {
        (false, None) => None,
        (false, Some(_)) => Some(format!("groupdel{} {q}", if force { " -f" } else { "" })),
        (true, None) => {
            let mut c = String::from("groupadd");
            if let Some(g) = gid {
                c.push_str(&format!(" -g {g}"));
                if non_unique {
                    c.push_str(" -o");
                }
            }
            if system {
                c.push_str(" -r");
            }
            c.push_str(&format!(" {q}"));
            Some(c)
        }
        (true, Some(cur)) => match gid {
            Some(g) if g != cur => Some(format!(
                "groupmod -g {g}{} {q}",
                if non_unique { " -o" } else { "" }
            )),
            _ => None,
        },
    }
}

/// The gid from a `getent group` line.
pub fn parse_getent(out: &str) -> Option<u64> {
    out.lines()
        .find(|l| l.matches(':').count() >= 3)
        .and_then(|l| l.split(':').nth(2))
        .and_then(|g| g.parse().ok())
}

pub struct Group;

/// What `getent group` said: the gid if the group exists.
pub struct Observed {
    pub gid: Option<u64>,
}

#[async_trait]
impl Module for Group {
    literal_params!("group");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["group"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Group {
    type Params = Params;
    type Observed = Observed;
    /// The `groupadd`/`groupmod`/`groupdel` command.
    type Plan = String;
    const NAME: &'static str = "group";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let r = ctx
            .sh(&format!("getent group -- {}; true", quote(&p.name)))
            .await?;
        Ok(Observed {
            gid: parse_getent(&r.stdout),
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<String>, ModuleError> {
        let _ = (&p.local, &p.gid_min, &p.gid_max);
        let name = p.name.as_str();
        let present = p.state.unwrap_or_default() == State::Present;
        let system = p.system.unwrap_or(false);
        let cmd = plan(
            name,
            present,
            p.gid,
            system,
            p.non_unique.unwrap_or(false),
            p.force.unwrap_or(false),
            seen.gid,
        );
        let mut out = Outcome::changed(cmd.is_some())
            .with("name", name)
            .with("state", if present { "present" } else { "absent" });
        if present {
            out = out.with("system", system);
            if let Some(g) = p.gid.or(seen.gid) {
                out = out.with("gid", g);
            }
        }
        Ok(match cmd {
            Some(c) => Planned::change(c, out),
            None => Planned::nothing(out),
        })
    }

    async fn apply(
        &self,
        p: &Params,
        cmd: String,
        mut out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let r = ctx
            .sh(&format!(
                "{cmd} && {{ getent group -- {} || true; }}",
                quote(&p.name)
            ))
            .await?;
        if r.rc != 0 {
            let mut f = Outcome::failed(format!("{cmd}: {}", r.stderr.trim()));
            f.data = out.data;
            return Ok(f);
        }
        // The gid the system picked for a new group.
        if let Some(g) = parse_getent(&r.stdout) {
            out = out.with("gid", g);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"name": "x", "gdi": 3})).is_err());
    }

    #[test]
    fn plans() {
        assert_eq!(plan("g", true, None, false, false, false, Some(5)), None);
        assert_eq!(plan("g", true, Some(5), false, false, false, Some(5)), None);
        assert_eq!(
            plan("g", true, Some(6), false, false, false, Some(5)).unwrap(),
            "groupmod -g 6 g"
        );
        assert_eq!(
            plan("g", true, Some(990), true, false, false, None).unwrap(),
            "groupadd -g 990 -r g"
        );
        assert_eq!(
            plan("g", false, None, false, false, false, Some(5)).unwrap(),
            "groupdel g"
        );
        assert_eq!(plan("g", false, None, false, false, false, None), None);
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({"name": "airflow", "gid": 990})).unwrap();
        let same = Group.plan(&p, &Observed { gid: Some(990) }, false).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert_eq!(same.outcome.data["gid"], json!(990));
        let moved = Group.plan(&p, &Observed { gid: Some(5) }, false).unwrap();
        assert_eq!(moved.changes.as_deref(), Some("groupmod -g 990 airflow"));
        assert!(moved.outcome.changed);
        let bad = serde_json::from_value::<Params>(json!({"name": "a", "state": "gone"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }

    #[test]
    fn getent_parsing() {
        assert_eq!(parse_getent("airflow:x:990:bob\n"), Some(990));
        assert_eq!(parse_getent(""), None);
    }
}
