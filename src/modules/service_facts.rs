//! `service_facts`: the host's systemd services as the fact `services`.
//!
//! ```yaml
//! - service_facts:
//! - debug:
//!     msg: "{{ ansible_facts.services['ssh.service'].state }}"
//! ```
//! Probe (one round trip, `LC_ALL=C`): `systemctl list-units --type=service --all --no-legend
//! --plain`, `systemctl list-unit-files --type=service --no-legend`, and `systemctl show -p
//! ActiveState` of the unit files (templates such as `getty@.service` excluded). Pure
//! ([`services_from`]), Ansible's systemd scan: each unit `foo.service` becomes `{name, state,
//! status, source: systemd}` where `state` is `running` when the SUB column is `running`, else
//! `stopped`; `status` is the first of `not-found`/`masked`/`failed` among the unit's columns,
//! else its ACTIVE column, then replaced by the unit-file state (`enabled`, `disabled`,
//! `static`, `masked`, `alias`, `indirect`, `generated`, ...) unless it was one of those three.
//! A unit file with no loaded unit takes its `ActiveState` (`inactive`, ...) as `state`
//! (`unknown` for templates). The facts are merged like `setup`'s: `ansible_facts.services`,
//! also injected as the variables `services` and `ansible_services`.
//!
//! Read-only (probe only, an empty plan), never changed; runs in check mode too. Without systemd
//! (no `systemctl` or no `/run/systemd/system`) the task is skipped with Ansible's message.
//! Deviations: SysV init scripts (`service --status-all`, Ansible's `source: sysv` entries),
//! OpenRC, AIX and BSD service managers are not scanned.

use std::convert::Infallible;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};

/// `service_facts` takes no arguments.
#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {}

const SCRIPT: &str = r#"export LC_ALL=C SYSTEMD_COLORS=0 SYSTEMD_PAGER=
if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then echo 'NOSYSTEMD|'; exit 0; fi
echo 'UNITS|'
systemctl list-units --no-pager --type=service --all --no-legend --plain 2>/dev/null
echo 'FILES|'
files=$(systemctl list-unit-files --no-pager --type=service --no-legend 2>/dev/null)
printf '%s\n' "$files"
names=$(printf '%s\n' "$files" | awk '$1 ~ /\.service$/ && $1 !~ /@\.service$/ {print $1}')
echo 'NAMES|'
printf '%s\n' "$names"
echo 'SHOW|'
[ -z "$names" ] || printf '%s\n' "$names" | xargs systemctl show --no-pager -p ActiveState -- 2>/dev/null
true
"#;

/// The states that win over the unit-file state, as in Ansible.
const BAD_STATES: [&str; 3] = ["not-found", "masked", "failed"];

/// The lines of the probe's section `tag` (up to the next section marker).
fn section<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    const TAGS: [&str; 5] = ["NOSYSTEMD|", "UNITS|", "FILES|", "NAMES|", "SHOW|"];
    let mut lines = out.lines();
    let mut v = Vec::new();
    if !lines.any(|l| l == tag) {
        return v;
    }
    for l in lines {
        if TAGS.contains(&l) {
            break;
        }
        v.push(l);
    }
    v
}

/// Pure: the `services` fact from the probe's output (`None`: no systemd on the host).
pub fn services_from(out: &str) -> Option<Map<String, Value>> {
    if out.lines().any(|l| l == "NOSYSTEMD|") {
        return None;
    }
    let mut services = Map::new();
    for line in section(out, "UNITS|") {
        // A bullet may lead for units in a bad state on systemd builds without `--plain`.
        let fields: Vec<&str> = line
            .split_whitespace()
            .skip_while(|f| *f == "●" || *f == "*")
            .collect();
        if fields.len() < 4 || !fields[0].ends_with(".service") {
            continue;
        }
        // The description (from the fifth column on) never counts as a state.
        let status = BAD_STATES
            .iter()
            .find(|b| fields[1..4].contains(b))
            .copied()
            .unwrap_or(fields[2]);
        let state = if fields[3] == "running" {
            "running"
        } else {
            "stopped"
        };
        services.insert(fields[0].to_string(), entry(fields[0], state, status));
    }
    let names = section(out, "NAMES|");
    // `systemctl show` prints one block per unit, in argument order, separated by blank lines.
    let states: Vec<&str> = section(out, "SHOW|")
        .into_iter()
        .filter_map(|l| l.strip_prefix("ActiveState="))
        .collect();
    let active = |name: &str| -> String {
        if states.len() != names.len() {
            return "unknown".into();
        }
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| states[i].to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    for line in section(out, "FILES|") {
        let mut it = line.split_whitespace();
        let (Some(name), Some(status)) = (it.next(), it.next()) else {
            continue;
        };
        if !name.ends_with(".service") {
            continue;
        }
        match services.get_mut(name) {
            Some(Value::Object(s)) => {
                if !BAD_STATES.contains(&s["status"].as_str().unwrap_or_default()) {
                    s.insert("status".into(), json!(status));
                }
            }
            _ => {
                services.insert(name.to_string(), entry(name, &active(name), status));
            }
        }
    }
    Some(services)
}

fn entry(name: &str, state: &str, status: &str) -> Value {
    json!({"name": name, "state": state, "status": status, "source": "systemd"})
}

pub struct ServiceFacts;

#[async_trait]
impl Module for ServiceFacts {
    literal_params!("service_facts");
    fn names(&self) -> &'static [&'static str] {
        &["service_facts"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

/// The scan script's output.
pub struct Observed {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

#[async_trait]
impl NativeModule for ServiceFacts {
    type Params = Params;
    type Observed = Observed;
    /// Read-only: there is never anything to change.
    type Plan = Infallible;
    const NAME: &'static str = "service_facts";

    async fn probe(&self, _p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let r = ctx.sh(SCRIPT).await?;
        Ok(Observed {
            rc: r.rc,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    fn plan(
        &self,
        _p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Infallible>, ModuleError> {
        if seen.rc != 0 {
            return Ok(Planned::nothing(Outcome::failed(format!(
                "service_facts: the scan failed (rc {}): {}",
                seen.rc,
                seen.stderr.trim()
            ))));
        }
        let services = services_from(&seen.stdout).unwrap_or_default();
        if services.is_empty() {
            let mut o = Outcome::ok().with_msg(
                "Failed to find any services. This can be due to privileges or some other \
                 configuration issue.",
            );
            o.skipped = true;
            return Ok(Planned::nothing(o));
        }
        let mut o = Outcome::ok();
        o.facts = Some(Map::from_iter([(
            "services".to_string(),
            Value::Object(services),
        )]));
        Ok(Planned::nothing(o))
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

    /// Recorded on Debian 13 (trimmed).
    const OUT: &str = "UNITS|
cron.service                           loaded    active   running Regular background program processing daemon
ssh.service                            loaded    inactive dead    OpenBSD Secure Shell server
systemd-journald.service               loaded    active   running Journal Service
nginx.service                          not-found inactive dead    nginx.service
broken.service                         loaded    failed   failed  Broken thing
FILES|
cron.service                           enabled         enabled
getty@.service                         enabled         enabled
ssh.service                            disabled        enabled
sshd.service                           alias           -
systemd-journald.service               static          -
broken.service                         enabled         enabled
apt-daily.service                      static          -
masked.service                         masked          enabled
NAMES|
cron.service
ssh.service
sshd.service
systemd-journald.service
broken.service
apt-daily.service
masked.service
SHOW|
ActiveState=active

ActiveState=inactive

ActiveState=inactive

ActiveState=active

ActiveState=failed

ActiveState=inactive

ActiveState=inactive
";

    #[test]
    fn takes_no_arguments() {
        assert!(Params::accepted().is_empty());
        assert!(serde_json::from_value::<Params>(json!({})).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"name": "x"})).is_err());
    }

    #[test]
    fn ansible_shape_from_systemctl() {
        let s = services_from(OUT).unwrap();
        assert_eq!(
            s["cron.service"],
            json!({"name": "cron.service", "state": "running", "status": "enabled", "source": "systemd"})
        );
        assert_eq!(s["ssh.service"]["state"], "stopped");
        assert_eq!(s["ssh.service"]["status"], "disabled");
        assert_eq!(s["sshd.service"]["status"], "alias");
        assert_eq!(s["sshd.service"]["state"], "inactive");
        assert_eq!(s["systemd-journald.service"]["status"], "static");
        // A bad state of the unit wins over its unit-file state.
        assert_eq!(s["nginx.service"]["status"], "not-found");
        assert_eq!(s["broken.service"]["status"], "failed");
        assert_eq!(s["broken.service"]["state"], "stopped");
        // Unit files without a loaded unit: their ActiveState.
        assert_eq!(s["apt-daily.service"]["state"], "inactive");
        assert_eq!(s["masked.service"]["status"], "masked");
        assert_eq!(s["getty@.service"]["state"], "unknown");
        assert_eq!(s["getty@.service"]["status"], "enabled");
    }

    #[test]
    fn show_output_out_of_step_gives_unknown() {
        let out = "UNITS|\nFILES|\na.service enabled enabled\nb.service disabled enabled\nNAMES|\na.service\nb.service\nSHOW|\nActiveState=active\n";
        let s = services_from(out).unwrap();
        assert_eq!(s["a.service"]["state"], "unknown");
        assert_eq!(s["b.service"]["status"], "disabled");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({})).unwrap();
        let seen = Observed {
            rc: 0,
            stdout: OUT.into(),
            stderr: String::new(),
        };
        let o = ServiceFacts.plan(&p, &seen, false).unwrap();
        assert!(o.changes.is_none() && !o.outcome.changed && !o.outcome.skipped);
        let facts = o.outcome.facts.unwrap();
        assert_eq!(facts["services"]["cron.service"]["state"], "running");
        let none = Observed {
            rc: 0,
            stdout: "NOSYSTEMD|\n".into(),
            stderr: String::new(),
        };
        let o = ServiceFacts.plan(&p, &none, false).unwrap();
        assert!(o.outcome.skipped && o.outcome.facts.is_none());
    }
}
