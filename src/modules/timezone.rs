//! `timezone`: the system time zone and whether the hardware clock keeps UTC or local time.
//!
//! ```yaml
//! - timezone:
//!     name: Europe/Paris
//! ```
//! Probe (one round trip): the zone `/etc/localtime` links to (below `zoneinfo/`, else
//! `/etc/timezone`), whether `/usr/share/zoneinfo/NAME` exists, and the third line of
//! `/etc/adjtime` (`LOCAL`, else UTC). Plan (pure, [`plan`]): a zone that differs is set with
//! `timedatectl set-timezone`, falling back (no systemd-timedated, as in a container) to
//! relinking `/etc/localtime` and rewriting `/etc/timezone` where it exists; `hwclock` (`local`
//! or `UTC`, any case) with `timedatectl set-local-rtc`, falling back to `/etc/adjtime`'s third
//! line. An unknown zone fails before anything changes, with Ansible's message. With `--diff`:
//! `name` and `hwclock` before and after, as Ansible's diff shows them.
//!
//! Deviations: Linux only (no BSD/macOS/AIX/SmartOS variants); `/etc/sysconfig/clock` (Red Hat)
//! is not written.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::args::de_opt_string;
use super::contract::{execute, NativeModule, Planned};
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    hwclock: Option<String>,
}

/// The hardware clock's time base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hwclock {
    Utc,
    Local,
}

impl Hwclock {
    fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "utc" => Ok(Hwclock::Utc),
            "local" | "localtime" => Ok(Hwclock::Local),
            _ => Err(format!(
                "timezone: hwclock must be 'local' or 'UTC', got {s:?}"
            )),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Hwclock::Utc => "UTC",
            Hwclock::Local => "local",
        }
    }
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The current zone (`None`: cannot tell).
    pub zone: Option<String>,
    /// `/usr/share/zoneinfo/NAME` exists for the wanted name.
    pub known: bool,
    pub hwclock: Hwclock,
}

/// The changes to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub zone: Option<String>,
    pub hwclock: Option<Hwclock>,
}

/// Pure: what to change (`Err`: the failure to report).
pub fn plan(
    name: Option<&str>,
    hwclock: Option<Hwclock>,
    seen: &Observed,
) -> Result<Changes, String> {
    let zone = match name {
        Some(n) if seen.zone.as_deref() == Some(n) => None,
        Some(n) if !seen.known => {
            return Err(format!(
                "given timezone \"{n}\" is not available in the system"
            ))
        }
        Some(n) => Some(n.to_string()),
        None => None,
    };
    let hwclock = hwclock.filter(|h| *h != seen.hwclock);
    Ok(Changes { zone, hwclock })
}

/// The zone name from the `/etc/localtime` link target or `/etc/timezone`.
pub fn zone_from(link: &str, etc_timezone: &str) -> Option<String> {
    if let Some(i) = link.find("zoneinfo/") {
        let z = &link[i + "zoneinfo/".len()..];
        // posix/ and right/ are variants of the same zone names.
        let z = z
            .strip_prefix("posix/")
            .or_else(|| z.strip_prefix("right/"))
            .unwrap_or(z);
        if !z.is_empty() {
            return Some(z.to_string());
        }
    }
    let t = etc_timezone.trim();
    (!t.is_empty()).then(|| t.to_string())
}

pub struct Timezone;

impl Params {
    fn want(&self) -> Result<(Option<&str>, Option<Hwclock>), ModuleError> {
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let hw = self
            .hwclock
            .as_deref()
            .map(Hwclock::parse)
            .transpose()
            .map_err(ModuleError::Args)?;
        if name.is_none() && hw.is_none() {
            return Err(ModuleError::Args(
                "timezone: one of the following is required: name, hwclock".into(),
            ));
        }
        if let Some(n) = name {
            if n.starts_with('/') || n.split('/').any(|c| c == "..") {
                return Err(ModuleError::Args(format!(
                    "timezone: {n:?} is not a zone name"
                )));
            }
        }
        Ok((name, hw))
    }
}

#[async_trait]
impl Module for Timezone {
    literal_params!("timezone");
    fn names(&self) -> &'static [&'static str] {
        &["timezone"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Timezone {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "timezone";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let (name, _) = p.want()?;
        let known = match name {
            Some(n) => format!(
                "[ -f {} ] && echo 'K|'; ",
                quote(&format!("/usr/share/zoneinfo/{n}"))
            ),
            None => String::new(),
        };
        let script = format!(
            "{known}echo \"L|$(readlink /etc/localtime 2>/dev/null)\"; \
             echo \"T|$(cat /etc/timezone 2>/dev/null | head -n 1)\"; \
             echo \"H|$(sed -n 3p /etc/adjtime 2>/dev/null)\"; true"
        );
        let r = ctx.sh(&script).await?;
        let field = |tag: &str| {
            r.stdout
                .lines()
                .find_map(|l| l.strip_prefix(tag))
                .unwrap_or_default()
                .to_string()
        };
        Ok(Observed {
            zone: zone_from(&field("L|"), &field("T|")),
            known: r.stdout.lines().any(|l| l == "K|"),
            hwclock: if field("H|").trim() == "LOCAL" {
                Hwclock::Local
            } else {
                Hwclock::Utc
            },
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let (name, hw) = p.want()?;
        let c = match plan(name, hw, seen) {
            Ok(c) => c,
            Err(m) => return Ok(Planned::nothing(Outcome::failed(m))),
        };
        let changed = c.zone.is_some() || c.hwclock.is_some();
        let before = json!({
            "name": seen.zone.clone().unwrap_or_default(),
            "hwclock": seen.hwclock.name(),
        });
        let after = json!({
            "name": name.map(str::to_string).or_else(|| seen.zone.clone()).unwrap_or_default(),
            "hwclock": hw.unwrap_or(seen.hwclock).name(),
        });
        let mut out = Outcome::changed(changed);
        if diff && changed {
            out.diffs.push(FileDiff {
                path: "timezone".into(),
                before: format!(
                    "name: {}\nhwclock: {}\n",
                    before["name"].as_str().unwrap_or_default(),
                    before["hwclock"].as_str().unwrap_or_default()
                ),
                after: format!(
                    "name: {}\nhwclock: {}\n",
                    after["name"].as_str().unwrap_or_default(),
                    after["hwclock"].as_str().unwrap_or_default()
                ),
            });
        }
        Ok(Planned::when(changed, c, out))
    }

    async fn apply(
        &self,
        _p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let mut s = String::new();
        if let Some(z) = &c.zone {
            let q = quote(z);
            let file = quote(&format!("/usr/share/zoneinfo/{z}"));
            s.push_str(&format!(
                "if ! timedatectl set-timezone {q} 2>/dev/null; then \
                 ln -sfn {file} /etc/localtime || exit 1; \
                 if [ -f /etc/timezone ]; then printf '%s\\n' {q} > /etc/timezone || exit 1; fi; fi; "
            ));
        }
        if let Some(h) = c.hwclock {
            let (rtc, word) = match h {
                Hwclock::Local => ("1", "LOCAL"),
                Hwclock::Utc => ("0", "UTC"),
            };
            s.push_str(&format!(
                "if ! timedatectl set-local-rtc {rtc} 2>/dev/null; then \
                 if [ -f /etc/adjtime ]; then sed -i '3s/.*/{word}/' /etc/adjtime || exit 2; \
                 [ \"$(sed -n 3p /etc/adjtime)\" = {word} ] || printf '0.0 0 0.0\\n0\\n{word}\\n' > /etc/adjtime || exit 2; \
                 else printf '0.0 0 0.0\\n0\\n{word}\\n' > /etc/adjtime || exit 2; fi; fi; "
            ));
        }
        s.push_str("true");
        let r = ctx.sh(&s).await?;
        if r.rc != 0 {
            let what = if r.rc == 2 { "hwclock" } else { "time zone" };
            let mut f = Outcome::failed(format!(
                "timezone: setting the {what} failed: {}",
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
    use serde_json::Value;

    fn seen(zone: &str, known: bool, hw: Hwclock) -> Observed {
        Observed {
            zone: Some(zone.into()),
            known,
            hwclock: hw,
        }
    }

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"nmae": "UTC"})).is_err());
    }

    #[test]
    fn zone_names() {
        assert_eq!(
            zone_from("/usr/share/zoneinfo/Europe/Paris", "").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(
            zone_from("../usr/share/zoneinfo/posix/UTC", "").as_deref(),
            Some("UTC")
        );
        assert_eq!(zone_from("", "Etc/UTC\n").as_deref(), Some("Etc/UTC"));
        assert_eq!(zone_from("", ""), None);
    }

    #[test]
    fn plans() {
        let utc = seen("Etc/UTC", true, Hwclock::Utc);
        assert_eq!(
            plan(Some("Etc/UTC"), None, &utc).unwrap(),
            Changes {
                zone: None,
                hwclock: None
            }
        );
        let c = plan(Some("Europe/Paris"), Some(Hwclock::Local), &utc).unwrap();
        assert_eq!(c.zone.as_deref(), Some("Europe/Paris"));
        assert_eq!(c.hwclock, Some(Hwclock::Local));
        let e = plan(
            Some("Mars/Olympus"),
            None,
            &seen("Etc/UTC", false, Hwclock::Utc),
        );
        assert!(e.unwrap_err().contains("not available"));
        assert_eq!(Hwclock::parse("utc"), Ok(Hwclock::Utc));
        assert!(Hwclock::parse("gmt").is_err());
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({"name": "Europe/Paris"})).unwrap();
        let pl = Timezone
            .plan(&p, &seen("Etc/UTC", true, Hwclock::Utc), true)
            .unwrap();
        assert!(pl.outcome.changed && pl.changes.is_some());
        assert_eq!(pl.outcome.diffs[0].before, "name: Etc/UTC\nhwclock: UTC\n");
        assert_eq!(
            pl.outcome.diffs[0].after,
            "name: Europe/Paris\nhwclock: UTC\n"
        );
        let pl = Timezone
            .plan(&p, &seen("Europe/Paris", true, Hwclock::Utc), true)
            .unwrap();
        assert!(!pl.outcome.changed && pl.changes.is_none());
        let none: Params = serde_json::from_value(json!({})).unwrap();
        assert!(none.want().is_err());
        let bad: Params = serde_json::from_value(json!({"name": "../../etc/passwd"})).unwrap();
        assert!(bad.want().is_err());
    }
}
