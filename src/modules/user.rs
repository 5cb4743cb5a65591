//! `user`: a local user account.
//!
//! ```yaml
//! - user:
//!     name: airflow
//!     uid: 990
//!     group: airflow
//!     groups: [docker]
//!     append: true
//!     shell: /bin/bash
//!     home: /opt/airflow
//!     system: true
//!     password: "{{ 'secret' | password_hash('sha512') }}"
//! ```
//! Probe (one round trip): `getent passwd`, `id -Gn`, the shadow hash (`getent shadow`, when
//! readable), the wanted primary group's and supplementary groups' existence/gids. Plan (pure,
//! [`plan`]): `useradd` with every given option when missing; otherwise `usermod` with only the
//! options whose value differs (uid, primary group, supplementary groups — added with
//! `append`, set exactly without —, shell, home (+ `-m` with `move_home`), comment, password
//! (with `update_password: always`), lock/unlock); `userdel [-r] [-f]` for `state: absent`.
//! Apply: one round trip. In check mode a user still to be created is reported changed before
//! its groups are checked (as Ansible: an earlier task of the same run may create them).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_list, de_opt_string, de_opt_u64, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Default, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_u64")]
    uid: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_string")]
    group: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    append: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    shell: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    home: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    system: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    create_home: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    createhome: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    move_home: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    comment: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_string")]
    password: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    password_lock: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    update_password: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    remove: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    non_unique: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    skeleton: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    expires: Option<String>,
    #[serde(default)]
    local: Option<Value>,
    #[serde(default)]
    umask: Option<Value>,
}

/// The account as the probe saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub exists: bool,
    pub uid: u64,
    pub gid: u64,
    pub comment: String,
    pub home: String,
    pub shell: String,
    /// Names from `id -Gn` (primary first).
    pub groups: Vec<String>,
    pub primary_name: String,
    /// Shadow hash, when readable.
    pub hash: Option<String>,
    /// gid of the wanted primary group (if it exists).
    pub want_group_gid: Option<u64>,
    /// Wanted supplementary groups that do not exist.
    pub missing_groups: Vec<String>,
}

/// Pure: the command to run, or `None`.
fn plan(name: &str, p: &Params, o: &Observed) -> Result<Option<String>, String> {
    let q = quote(name);
    let present = p.state.unwrap_or_default() == State::Present;
    if !present {
        if !o.exists {
            return Ok(None);
        }
        let mut c = String::from("userdel");
        if p.remove.unwrap_or(false) {
            c.push_str(" -r");
        }
        if p.force.unwrap_or(false) {
            c.push_str(" -f");
        }
        c.push_str(&format!(" {q}"));
        return Ok(Some(c));
    }
    if let Some(g) = o.missing_groups.first() {
        return Err(format!("Group {g} does not exist"));
    }
    if p.group.is_some() && o.want_group_gid.is_none() {
        return Err(format!(
            "Group {} does not exist",
            p.group.clone().unwrap_or_default()
        ));
    }
    let wanted_groups: Option<Vec<String>> = p
        .groups
        .as_ref()
        .map(|g| g.iter().filter(|x| !x.is_empty()).cloned().collect());
    let mut opts: Vec<String> = Vec::new();
    if !o.exists {
        if let Some(u) = p.uid {
            opts.push(format!("-u {u}"));
            if p.non_unique.unwrap_or(false) {
                opts.push("-o".into());
            }
        }
        if let Some(g) = &p.group {
            opts.push(format!("-g {}", quote(g)));
        }
        if let Some(gs) = &wanted_groups {
            if !gs.is_empty() {
                opts.push(format!("-G {}", quote(&gs.join(","))));
            }
        }
        if let Some(s) = &p.shell {
            opts.push(format!("-s {}", quote(s)));
        }
        if let Some(h) = &p.home {
            opts.push(format!("-d {}", quote(h)));
        }
        if let Some(c) = &p.comment {
            opts.push(format!("-c {}", quote(c)));
        }
        if p.system.unwrap_or(false) {
            opts.push("-r".into());
        }
        if p.create_home.or(p.createhome).unwrap_or(true) {
            opts.push("-m".into());
            if let Some(k) = &p.skeleton {
                opts.push(format!("-k {}", quote(k)));
            }
        } else {
            opts.push("-M".into());
        }
        if let Some(pw) = &p.password {
            opts.push(format!("-p {}", quote(pw)));
        }
        if let Some(e) = &p.expires {
            opts.push(format!("-e {}", quote(e)));
        }
        let mut c = format!("useradd {} {q}", opts.join(" "));
        if p.password_lock == Some(true) {
            c.push_str(&format!(" && usermod -L {q}"));
        }
        return Ok(Some(c));
    }
    if let Some(u) = p.uid {
        if u != o.uid {
            opts.push(format!("-u {u}"));
            if p.non_unique.unwrap_or(false) {
                opts.push("-o".into());
            }
        }
    }
    if let (Some(g), Some(gid)) = (&p.group, o.want_group_gid) {
        if gid != o.gid {
            opts.push(format!("-g {}", quote(g)));
        }
    }
    if let Some(gs) = &wanted_groups {
        let current: Vec<&String> = o.groups.iter().filter(|g| **g != o.primary_name).collect();
        // The primary group named in `groups` counts as present (Ansible does the same).
        let wanted: Vec<&String> = gs.iter().filter(|g| **g != o.primary_name).collect();
        if p.append.unwrap_or(false) {
            let missing: Vec<&str> = wanted
                .iter()
                .filter(|g| !current.contains(g))
                .map(|g| g.as_str())
                .collect();
            if !missing.is_empty() {
                opts.push(format!("-a -G {}", quote(&missing.join(","))));
            }
        } else {
            let mut a: Vec<&String> = current.clone();
            let mut b: Vec<&String> = wanted.clone();
            a.sort();
            a.dedup();
            b.sort();
            b.dedup();
            if a != b {
                opts.push(format!("-G {}", quote(&gs.join(","))));
            }
        }
    }
    if let Some(s) = &p.shell {
        if *s != o.shell {
            opts.push(format!("-s {}", quote(s)));
        }
    }
    if let Some(h) = &p.home {
        if h.trim_end_matches('/') != o.home.trim_end_matches('/') {
            opts.push(format!("-d {}", quote(h)));
            if p.move_home.unwrap_or(false) {
                opts.push("-m".into());
            }
        }
    }
    if let Some(c) = &p.comment {
        if *c != o.comment {
            opts.push(format!("-c {}", quote(c)));
        }
    }
    if let (Some(pw), Some(h)) = (&p.password, &o.hash) {
        let always = p.update_password.as_deref().unwrap_or("always") == "always";
        let cur = h.trim_start_matches('!');
        if always && pw != cur && pw != h {
            opts.push(format!("-p {}", quote(pw)));
        }
    }
    if let (Some(lock), Some(h)) = (p.password_lock, &o.hash) {
        let locked = h.starts_with('!');
        if lock && !locked {
            opts.push("-L".into());
        } else if !lock && locked {
            opts.push("-U".into());
        }
    }
    if let Some(e) = &p.expires {
        let _ = e; // expiry is set on creation only (no cheap probe of the current value)
    }
    if opts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(format!("usermod {} {q}", opts.join(" "))))
    }
}

fn probe_script(name: &str, p: &Params) -> String {
    let q = quote(name);
    let mut s = format!(
        "if u=$(getent passwd -- {q}); then echo \"P|$u\"; echo \"G|$(id -Gn -- {q})\"; echo \"PG|$(id -gn -- {q})\"; h=$(getent shadow -- {q} 2>/dev/null) && echo \"H|$h\"; fi"
    );
    if let Some(g) = &p.group {
        s.push_str(&format!(
            "; g=$(getent group -- {}) && echo \"WG|$g\"",
            quote(g)
        ));
    }
    for g in p.groups.iter().flatten().filter(|g| !g.is_empty()) {
        s.push_str(&format!(
            "; getent group -- {} >/dev/null || echo \"GX|{}\"",
            quote(g),
            g.replace(['"', '\\', '$', '`'], "")
        ));
    }
    s.push_str("; true");
    s
}

fn parse_probe(out: &str) -> Observed {
    let mut o = Observed::default();
    for l in out.lines() {
        if let Some(v) = l.strip_prefix("P|") {
            let f: Vec<&str> = v.split(':').collect();
            if f.len() >= 7 {
                o.exists = true;
                o.uid = f[2].parse().unwrap_or(0);
                o.gid = f[3].parse().unwrap_or(0);
                o.comment = f[4].to_string();
                o.home = f[5].to_string();
                o.shell = f[6].to_string();
            }
        } else if let Some(v) = l.strip_prefix("G|") {
            o.groups = v.split_whitespace().map(str::to_string).collect();
        } else if let Some(v) = l.strip_prefix("PG|") {
            o.primary_name = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("H|") {
            o.hash = v.split(':').nth(1).map(str::to_string);
        } else if let Some(v) = l.strip_prefix("WG|") {
            o.want_group_gid = v.split(':').nth(2).and_then(|g| g.parse().ok());
        } else if let Some(v) = l.strip_prefix("GX|") {
            o.missing_groups.push(v.to_string());
        }
    }
    o
}

pub struct User;

/// The planned `useradd`/`usermod`/`userdel`.
pub struct Change {
    /// `Err`: why the real run fails (a group missing for a user to be created).
    cmd: Result<String, String>,
    /// The real run's result where it differs from check mode's prediction.
    report: Option<Outcome>,
}

/// The result dictionary of a run that got as far as a command (or found nothing to do).
fn report(name: &str, p: &Params, obs: &Observed, changed: bool) -> Outcome {
    let absent = p.state == Some(State::Absent);
    let mut out = Outcome::changed(changed)
        .with("name", name)
        .with("state", if absent { "absent" } else { "present" });
    if !absent {
        out = out.with("system", p.system.unwrap_or(false));
        if let Some(u) = p.uid.or(obs.exists.then_some(obs.uid)) {
            out = out.with("uid", u);
        }
        if let Some(h) = p
            .home
            .clone()
            .or(Some(obs.home.clone()).filter(|h| !h.is_empty()))
        {
            out = out.with("home", h);
        }
        if let Some(s) = p
            .shell
            .clone()
            .or(Some(obs.shell.clone()).filter(|s| !s.is_empty()))
        {
            out = out.with("shell", s);
        }
        if let Some(g) = &p.groups {
            out = out.with("groups", g.join(","));
        }
        if let Some(c) = &p.comment {
            out = out.with("comment", c.clone());
        }
    }
    out
}

#[async_trait]
impl Module for User {
    literal_params!("user");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["user"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for User {
    type Params = Params;
    type Observed = Observed;
    type Plan = Change;
    const NAME: &'static str = "user";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let r = ctx.sh(&probe_script(p.name.as_str(), p)).await?;
        Ok(parse_probe(&r.stdout))
    }

    fn plan(
        &self,
        p: &Params,
        obs: &Observed,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let _ = (&p.local, &p.umask);
        let name = p.name.as_str();
        let cmd = plan(name, p, obs);
        if !obs.exists && p.state != Some(State::Absent) {
            // Check mode reports the creation before the groups are checked (see above).
            let report = cmd.as_ref().ok().map(|_| report(name, p, obs, true));
            let cmd =
                cmd.and_then(|c| c.ok_or_else(|| format!("useradd planned nothing for {name}")));
            return Ok(Planned::change(
                Change { cmd, report },
                Outcome::changed(true)
                    .with("name", name)
                    .with("state", "present"),
            ));
        }
        Ok(match cmd {
            Err(m) => Planned::nothing(Outcome::failed(m).with("name", name)),
            Ok(None) => Planned::nothing(report(name, p, obs, false)),
            Ok(Some(c)) => Planned::change(
                Change {
                    cmd: Ok(c),
                    report: None,
                },
                report(name, p, obs, true),
            ),
        })
    }

    async fn apply(
        &self,
        p: &Params,
        c: Change,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let name = p.name.as_str();
        let cmd = match c.cmd {
            Ok(cmd) => cmd,
            Err(m) => return Ok(Outcome::failed(m).with("name", name)),
        };
        let out = c.report.unwrap_or(predicted);
        let r = ctx.sh(&cmd).await?;
        if r.rc != 0 {
            let shown = if p.password.is_some() {
                "useradd/usermod".to_string()
            } else {
                cmd.clone()
            };
            let mut f = Outcome::failed(format!("{shown}: {}", r.stderr.trim()));
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
    fn existing() -> Observed {
        parse_probe(
            "P|airflow:x:990:990:Airflow:/opt/airflow:/bin/bash\nG|airflow docker\nPG|airflow\nH|airflow:$6$abc:19000:0:99999:7:::\nWG|airflow:x:990:\n",
        )
    }

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"name": "x", "gruops": "a"})).is_err());
    }

    #[test]
    fn creates_missing_user() {
        let p = params(
            json!({"name": "airflow", "uid": 990, "shell": "/bin/bash", "system": true, "groups": "a,b"}),
        );
        let c = plan("airflow", &p, &Observed::default()).unwrap().unwrap();
        assert_eq!(c, "useradd -u 990 -G a,b -s /bin/bash -r -m airflow");
    }

    #[test]
    fn unchanged_user_is_ok() {
        let p = params(
            json!({"name": "airflow", "uid": 990, "group": "airflow", "groups": ["docker"], "shell": "/bin/bash", "home": "/opt/airflow/", "comment": "Airflow", "password": "$6$abc"}),
        );
        assert_eq!(plan("airflow", &p, &existing()).unwrap(), None);
    }

    #[test]
    fn modifies_only_differences() {
        let p = params(
            json!({"name": "airflow", "shell": "/bin/sh", "groups": ["docker", "adm"], "append": true}),
        );
        assert_eq!(
            plan("airflow", &p, &existing()).unwrap().unwrap(),
            "usermod -a -G adm -s /bin/sh airflow"
        );
        let p = params(json!({"name": "airflow", "groups": []}));
        assert_eq!(
            plan("airflow", &p, &existing()).unwrap().unwrap(),
            "usermod -G '' airflow"
        );
        let p = params(json!({"name": "airflow", "password": "$6$new"}));
        assert_eq!(
            plan("airflow", &p, &existing()).unwrap().unwrap(),
            "usermod -p '$6$new' airflow"
        );
        let p = params(
            json!({"name": "airflow", "password": "$6$new", "update_password": "on_create"}),
        );
        assert_eq!(plan("airflow", &p, &existing()).unwrap(), None);
        let p = params(json!({"name": "airflow", "password_lock": true}));
        assert_eq!(
            plan("airflow", &p, &existing()).unwrap().unwrap(),
            "usermod -L airflow"
        );
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p = params(json!({"name": "airflow", "uid": 990, "shell": "/bin/bash"}));
        let pl = User.plan(&p, &existing(), false).unwrap();
        assert!(pl.changes.is_none() && !pl.outcome.changed);
        assert_eq!(pl.outcome.data["uid"], json!(990));
        assert_eq!(pl.outcome.data["home"], json!("/opt/airflow"));
        let p = params(json!({"name": "airflow", "shell": "/bin/sh"}));
        let pl = User.plan(&p, &existing(), false).unwrap();
        let c = pl.changes.unwrap();
        assert_eq!(c.cmd.as_deref(), Ok("usermod -s /bin/sh airflow"));
        assert!(pl.outcome.changed && c.report.is_none());
        // A new user whose group is missing: check mode predicts the creation, a real run fails.
        let mut o = Observed::default();
        o.missing_groups.push("docker".into());
        let p = params(json!({"name": "airflow", "groups": ["docker"]}));
        let pl = User.plan(&p, &o, false).unwrap();
        assert!(pl.outcome.changed && !pl.outcome.failed);
        assert_eq!(pl.outcome.data.len(), 2);
        assert!(pl.changes.unwrap().cmd.is_err());
    }

    #[test]
    fn removal_and_missing_groups() {
        let p = params(json!({"name": "airflow", "state": "absent", "remove": true}));
        assert_eq!(
            plan("airflow", &p, &existing()).unwrap().unwrap(),
            "userdel -r airflow"
        );
        assert_eq!(plan("airflow", &p, &Observed::default()).unwrap(), None);
        let mut o = existing();
        o.missing_groups.push("nope".into());
        let p = params(json!({"name": "airflow", "groups": ["nope"]}));
        assert!(plan("airflow", &p, &o).is_err());
    }
}
