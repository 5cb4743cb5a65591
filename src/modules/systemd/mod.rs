//! `systemd` (alias `systemd_service`) and `service`: start/stop/restart/reload a unit, enable
//! or disable it, mask it, and reload systemd's configuration.
//!
//! ```yaml
//! - name: scheduler running and enabled
//!   ansible.builtin.systemd:
//!     name: airflow-scheduler
//!     state: started
//!     enabled: true
//!     daemon_reload: true
//! - service: name=nginx state=reloaded
//! ```
//! Prepare (real runs only, one round trip): `daemon_reexec`/`daemon_reload`. Probe (one round
//! trip): `systemctl show -p LoadState,ActiveState,SubState,UnitFileState` and `systemctl
//! is-enabled`. Plan (pure, [`plan`]) follows Ansible: mask/unmask, then enable/disable, then
//! the state action — `started` starts a unit that is not active/activating, `stopped` stops an
//! active/activating/deactivating one, `restarted`/`reloaded` always act (start if not running)
//! and so always report changed. `daemon_reload` alone does not report changed (as Ansible).
//! Apply: one round trip running the planned `systemctl` commands in order.
//!
//! `service` is the same implementation (targets are systemd hosts); it takes `service`'s
//! arguments (`pattern`, `sleep`, `arguments`, `runlevel`, `use` accepted and ignored).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::args::{de_opt_bool, de_opt_string, de_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    unit: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    masked: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    daemon_reload: Option<bool>,
    #[serde(default, rename = "daemon-reload", deserialize_with = "de_opt_bool")]
    daemon_reload2: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    daemon_reexec: Option<bool>,
    #[serde(default, rename = "daemon-reexec", deserialize_with = "de_opt_bool")]
    daemon_reexec2: Option<bool>,
    #[serde(default)]
    scope: Option<Scope>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    no_block: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
}

/// `service` arguments.
#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    enabled: Option<bool>,
    #[serde(default)]
    pattern: Option<Value>,
    #[serde(default)]
    sleep: Option<Value>,
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    runlevel: Option<Value>,
    #[serde(default, rename = "use")]
    use_: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Scope {
    #[default]
    System,
    User,
    Global,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Want {
    pub state: Option<State>,
    pub enabled: Option<bool>,
    pub masked: Option<bool>,
}

/// What the probe saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub unit_file_state: String,
    /// `systemctl is-enabled` output and exit code.
    pub is_enabled_out: String,
    pub is_enabled_rc: i32,
}

impl Observed {
    pub fn found(&self) -> bool {
        self.load_state != "not-found"
    }
    pub fn running(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "activating")
    }
    pub fn enabled(&self) -> bool {
        // Ansible: rc 0 means enabled, except "enabled-runtime" (enabled only until the next
        // boot: `enabled: true` makes it permanent), a bare "indirect" or "alias".
        self.is_enabled_rc == 0
            && !matches!(
                self.is_enabled_out.trim(),
                "enabled-runtime" | "indirect" | "alias"
            )
    }
    pub fn masked(&self) -> bool {
        self.unit_file_state.starts_with("masked") || self.load_state == "masked"
    }
}

/// Pure: the `systemctl` verbs to run, in order.
pub fn plan(unit: &str, w: &Want, o: &Observed) -> Result<Vec<&'static str>, String> {
    let mut v = Vec::new();
    if let Some(m) = w.masked {
        if m != o.masked() {
            v.push(if m { "mask" } else { "unmask" });
        }
    }
    let masked_after = w.masked.unwrap_or(o.masked());
    let found = o.found() || (w.masked == Some(true));
    if (w.enabled.is_some() || w.state.is_some()) && !found {
        return Err(format!("Could not find the requested service {unit}: host"));
    }
    if let Some(e) = w.enabled {
        if masked_after && e {
            return Err(format!("Unable to enable service {unit}: it is masked"));
        }
        if e != o.enabled() {
            v.push(if e { "enable" } else { "disable" });
        }
    }
    if let Some(s) = w.state {
        // After an unmask the unit's state is what it was.
        let running = o.running();
        let act = match s {
            State::Started if !running => Some("start"),
            State::Started => None,
            State::Stopped if running || o.active_state == "deactivating" => Some("stop"),
            State::Stopped => None,
            _ if !running => Some("start"),
            State::Restarted => Some("restart"),
            State::Reloaded => Some("reload"),
        };
        if let Some(a) = act {
            if masked_after && a != "stop" {
                return Err(format!("Unable to {a} service {unit}: it is masked"));
            }
            v.push(a);
        }
    }
    Ok(v)
}

fn parse_probe(out: &str) -> Observed {
    let mut o = Observed {
        is_enabled_rc: 1,
        ..Default::default()
    };
    for l in out.lines() {
        if let Some((k, v)) = l.split_once('=') {
            match k {
                "LoadState" => o.load_state = v.to_string(),
                "ActiveState" => o.active_state = v.to_string(),
                "SubState" => o.sub_state = v.to_string(),
                "UnitFileState" => o.unit_file_state = v.to_string(),
                _ => {}
            }
        } else if let Some(v) = l.strip_prefix("EN|") {
            o.is_enabled_out = v.to_string();
        } else if let Some(v) = l.strip_prefix("ENRC|") {
            o.is_enabled_rc = v.trim().parse().unwrap_or(1);
        }
    }
    o
}

/// `memcached` → `memcached.service` (a name with a unit suffix stays).
fn unit_file_name(unit: &str) -> String {
    const SUFFIXES: [&str; 10] = [
        ".service",
        ".socket",
        ".timer",
        ".path",
        ".target",
        ".mount",
        ".automount",
        ".swap",
        ".slice",
        ".scope",
    ];
    if SUFFIXES.iter().any(|s| unit.ends_with(s)) {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// What `systemctl` would show of a unit a package just installed (check mode's prediction).
fn as_installed(u: &crate::modules::apt::PkgUnit) -> Observed {
    let en = if u.enabled { "enabled" } else { "disabled" };
    Observed {
        load_state: "loaded".into(),
        active_state: if u.started { "active" } else { "inactive" }.into(),
        sub_state: if u.started { "running" } else { "dead" }.into(),
        unit_file_state: en.into(),
        is_enabled_out: en.into(),
        is_enabled_rc: if u.enabled { 0 } else { 1 },
    }
}

/// Either module's arguments resolved to what to do with which unit.
pub struct Job {
    unit: String,
    want: Want,
    daemon_reload: bool,
    daemon_reexec: bool,
    scope_flag: &'static str,
    no_block: bool,
    force: bool,
}

/// What the probe saw.
pub enum Seen {
    /// No unit named (`daemon_reload` alone): nothing to probe.
    NoUnit,
    /// `systemctl show` failed; the message.
    Failed(String),
    Unit(Observed),
}

/// What to do to the unit.
pub enum Action {
    /// These `systemctl` verbs, in order.
    Run(Vec<&'static str>),
    /// The unit is not there: check mode assumes an earlier task installs it (as Ansible's
    /// fail_if_missing); a real run fails with this message.
    Missing(String),
}

impl Job {
    fn systemctl(&self) -> String {
        format!("systemctl{}", self.scope_flag)
    }

    /// Real runs only, before the probe: `daemon_reexec`/`daemon_reload`.
    async fn prepare(&self, ctx: &TaskCtx<'_>) -> Result<Option<Outcome>, ModuleError> {
        let sc = self.systemctl();
        let mut script = String::new();
        if self.daemon_reexec {
            script.push_str(&format!("{sc} daemon-reexec || exit 1; "));
        }
        if self.daemon_reload {
            script.push_str(&format!("{sc} daemon-reload || exit 1; "));
        }
        if script.is_empty() {
            return Ok(None);
        }
        let r = ctx.sh(&format!("{script}true")).await?;
        if r.rc == 0 {
            return Ok(None);
        }
        let what = if self.unit.is_empty() {
            "daemon-reload"
        } else {
            "systemctl"
        };
        Ok(Some(Outcome::failed(format!(
            "{what} failed: {}",
            r.stderr.trim()
        ))))
    }

    async fn probe(&self, ctx: &TaskCtx<'_>) -> Result<Seen, ModuleError> {
        if self.unit.is_empty() {
            return Ok(Seen::NoUnit);
        }
        let (sc, q) = (self.systemctl(), quote(&self.unit));
        let r = ctx.sh(&format!(
            "{sc} show -p LoadState,ActiveState,SubState,UnitFileState -- {q}; e=$({sc} is-enabled -- {q} 2>/dev/null); echo \"ENRC|$?\"; echo \"EN|$e\" | head -n 1"
        )).await?;
        if r.rc != 0 && !r.stdout.contains("LoadState=") {
            return Ok(Seen::Failed(format!(
                "systemctl failed: {}",
                r.stderr.trim()
            )));
        }
        let seen = parse_probe(&r.stdout);
        if !seen.found() && self.scope_flag.is_empty() {
            // Check mode: a unit that a package this run installs would ship, as its postinst
            // would leave it.
            if let Some(e) = crate::modules::apt::predicted_effects(ctx).await? {
                if let Some(u) = e.units.get(&unit_file_name(&self.unit)) {
                    return Ok(Seen::Unit(as_installed(u)));
                }
            }
        }
        Ok(Seen::Unit(seen))
    }

    fn plan(&self, seen: &Seen) -> Planned<Action> {
        let obs = match seen {
            Seen::NoUnit => return Planned::nothing(Outcome::ok()),
            Seen::Failed(m) => return Planned::nothing(Outcome::failed(m.clone())),
            Seen::Unit(o) => o,
        };
        let (unit, w) = (&self.unit, &self.want);
        if !obs.found() && w.masked != Some(true) && (w.enabled.is_some() || w.state.is_some()) {
            return Planned::change(
                Action::Missing(format!("Could not find the requested service {unit}: host")),
                Outcome::changed(true)
                    .with("name", unit.clone())
                    .with_msg(format!(
                        "Service {unit} not found on host, assuming it will exist on full run"
                    )),
            );
        }
        let verbs = match plan(unit, w, obs) {
            Ok(v) => v,
            Err(m) => return Planned::nothing(Outcome::failed(m).with("name", unit.clone())),
        };
        let mut status = Map::new();
        status.insert("LoadState".into(), obs.load_state.clone().into());
        status.insert("ActiveState".into(), obs.active_state.clone().into());
        status.insert("SubState".into(), obs.sub_state.clone().into());
        status.insert("UnitFileState".into(), obs.unit_file_state.clone().into());
        let mut out = Outcome::changed(!verbs.is_empty())
            .with("name", unit.clone())
            .with("status", Value::Object(status));
        if let Some(s) = w.state {
            out = out.with(
                "state",
                if s == State::Stopped {
                    "stopped"
                } else {
                    "started"
                },
            );
        }
        if let Some(e) = w.enabled {
            out = out.with("enabled", e);
        }
        Planned::when(!verbs.is_empty(), Action::Run(verbs), out)
    }

    async fn apply(
        &self,
        action: Action,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let verbs = match action {
            Action::Missing(m) => return Ok(Outcome::failed(m).with("name", self.unit.clone())),
            Action::Run(v) => v,
        };
        let (sc, q) = (self.systemctl(), quote(&self.unit));
        let nb = if self.no_block { " --no-block" } else { "" };
        let script = verbs
            .iter()
            .map(|v| {
                let f = if self.force && matches!(*v, "enable" | "disable" | "mask") {
                    " --force"
                } else {
                    ""
                };
                format!("{sc}{nb}{f} {v} -- {q}")
            })
            .collect::<Vec<_>>()
            .join(" && ");
        let r = ctx.sh(&script).await?;
        if r.rc != 0 {
            let mut f = Outcome::failed(format!(
                "Unable to {} service {}: {}",
                verbs.join("/"),
                self.unit,
                r.stderr.trim()
            ));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

impl Params {
    fn job(&self) -> Result<Job, ModuleError> {
        let unit = self.name.clone().or(self.unit.clone()).unwrap_or_default();
        let want = Want {
            state: self.state,
            enabled: self.enabled,
            masked: self.masked,
        };
        let daemon_reload = self.daemon_reload.or(self.daemon_reload2).unwrap_or(false);
        let daemon_reexec = self.daemon_reexec.or(self.daemon_reexec2).unwrap_or(false);
        if unit.is_empty() && (want != Want::default()) {
            return Err(ModuleError::Args("systemd: name is required".into()));
        }
        if unit.is_empty() && !daemon_reload && !daemon_reexec {
            return Err(ModuleError::Args(
                "systemd: one of name, daemon_reload or daemon_reexec is required".into(),
            ));
        }
        Ok(Job {
            unit,
            want,
            daemon_reload,
            daemon_reexec,
            scope_flag: match self.scope.unwrap_or_default() {
                Scope::System => "",
                Scope::User => " --user",
                Scope::Global => " --global",
            },
            no_block: self.no_block.unwrap_or(false),
            force: self.force.unwrap_or(false),
        })
    }
}

impl ServiceParams {
    fn job(&self) -> Result<Job, ModuleError> {
        let _ = (
            &self.pattern,
            &self.sleep,
            &self.arguments,
            &self.args,
            &self.runlevel,
            &self.use_,
        );
        let unit = self.name.clone();
        if self.state.is_none() && self.enabled.is_none() {
            return Err(ModuleError::Args(
                "service: one of state or enabled is required".into(),
            ));
        }
        Ok(Job {
            unit,
            want: Want {
                state: self.state,
                enabled: self.enabled,
                masked: None,
            },
            daemon_reload: false,
            daemon_reexec: false,
            scope_flag: "",
            no_block: false,
            force: false,
        })
    }
}

pub struct Systemd;
pub struct Service;

#[async_trait]
impl Module for Systemd {
    literal_params!("systemd");
    fn names(&self) -> &'static [&'static str] {
        &["systemd", "systemd_service"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Systemd {
    type Params = Params;
    type Observed = Seen;
    type Plan = Action;
    const NAME: &'static str = "systemd";

    async fn prepare(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Option<Outcome>, ModuleError> {
        p.job()?.prepare(ctx).await
    }
    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Seen, ModuleError> {
        p.job()?.probe(ctx).await
    }
    fn plan(&self, p: &Params, seen: &Seen, _diff: bool) -> Result<Planned<Action>, ModuleError> {
        Ok(p.job()?.plan(seen))
    }
    async fn apply(
        &self,
        p: &Params,
        a: Action,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        p.job()?.apply(a, predicted, ctx).await
    }
}

#[async_trait]
impl Module for Service {
    fn required(&self) -> &'static [&'static [&'static str]] {
        ServiceParams::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["service"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        ServiceParams::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Service {
    type Params = ServiceParams;
    type Observed = Seen;
    type Plan = Action;
    const NAME: &'static str = "service";

    async fn probe(&self, p: &ServiceParams, ctx: &TaskCtx<'_>) -> Result<Seen, ModuleError> {
        p.job()?.probe(ctx).await
    }
    fn plan(
        &self,
        p: &ServiceParams,
        seen: &Seen,
        _diff: bool,
    ) -> Result<Planned<Action>, ModuleError> {
        Ok(p.job()?.plan(seen))
    }
    async fn apply(
        &self,
        p: &ServiceParams,
        a: Action,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        p.job()?.apply(a, predicted, ctx).await
    }
}

#[cfg(test)]
mod tests;
