//! `apt`: install, upgrade or remove Debian packages, refresh the package lists.
//!
//! ```yaml
//! - name: postgres and tools
//!   ansible.builtin.apt:
//!     name: [postgresql-15, "python3-psycopg2", "curl=7.88.1-10+deb12u5"]
//!     state: present
//!     update_cache: true
//!     cache_valid_time: 3600
//!     install_recommends: false
//! ```
//! Probe (one round trip): `dpkg-query` status and version of each named package, the age of
//! the package lists (`/var/lib/apt/periodic/update-success-stamp`, else `/var/lib/apt/lists`)
//! and, for `state: latest`, `apt-cache policy` (installed vs candidate). When `update_cache` is
//! due (never updated within `cache_valid_time`, or no `cache_valid_time`) the real run refreshes
//! the lists first (and re-reads the candidates). Plan (pure, [`plan`]): the packages to install,
//! upgrade, remove or purge. Apply: one `apt-get` run with `DEBIAN_FRONTEND=noninteractive`,
//! `-o DPkg::Lock::Timeout=…` and `--force-confdef,--force-confold`; `changed` is then taken from
//! apt's own summary line, so a virtual package or a no-op never reports changed. In check mode
//! the planned `apt-get` runs with `-s` (simulate, read-only) so the prediction uses apt's own
//! resolver.
//!
//! As in Ansible: `update_cache` alone reports changed whenever it refreshed the lists (use
//! `cache_valid_time` for idempotence); with packages, only package changes count.
//! Check mode with `update_cache` due simulates against the current lists; if that fails
//! (packages not known before the refresh) it predicts changed instead of failing (Ansible
//! fails there). Deviations: `deb`, `upgrade` (dist/full/safe), `build-dep` and `fixed` are not supported
//! (clear error); version pins with wildcards are matched on the host by apt itself.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_list, de_opt_string, de_opt_u64};
use super::{parse, Args, Module, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default, deserialize_with = "de_opt_list")]
    name: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    pkg: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    package: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_string")]
    state: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    update_cache: Option<bool>,
    #[serde(default, rename = "update-cache", deserialize_with = "de_opt_bool")]
    update_cache2: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    cache_valid_time: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    install_recommends: Option<bool>,
    #[serde(
        default,
        rename = "install-recommends",
        deserialize_with = "de_opt_bool"
    )]
    install_recommends2: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    force: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_unauthenticated: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_downgrade: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_change_held_packages: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    autoremove: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    autoclean: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    clean: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    dpkg_options: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    default_release: Option<String>,
    #[serde(
        default,
        rename = "default-release",
        deserialize_with = "de_opt_string"
    )]
    default_release2: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    only_upgrade: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    lock_timeout: Option<u64>,
    #[serde(default)]
    upgrade: Option<Value>,
    #[serde(default)]
    deb: Option<Value>,
    #[serde(default)]
    force_apt_get: Option<Value>,
    #[serde(default)]
    policy_rc_d: Option<Value>,
    #[serde(default)]
    update_cache_retries: Option<Value>,
    #[serde(default)]
    update_cache_retry_max_delay: Option<Value>,
    #[serde(default)]
    fail_on_autoremove: Option<Value>,
}

const ARGS: &[&str] = &[
    "name",
    "pkg",
    "package",
    "state",
    "update_cache",
    "update-cache",
    "cache_valid_time",
    "install_recommends",
    "install-recommends",
    "force",
    "allow_unauthenticated",
    "allow_downgrade",
    "allow_change_held_packages",
    "purge",
    "autoremove",
    "autoclean",
    "clean",
    "dpkg_options",
    "default_release",
    "default-release",
    "only_upgrade",
    "lock_timeout",
    "upgrade",
    "deb",
    "force_apt_get",
    "policy_rc_d",
    "update_cache_retries",
    "update_cache_retry_max_delay",
    "fail_on_autoremove",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Latest,
    Absent,
}

/// One package as dpkg and apt see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgInfo {
    /// dpkg's want/status abbreviation, e.g. `ii `, `rc `, `un `.
    pub status: String,
    pub version: String,
    /// `apt-cache policy` candidate (state=latest only).
    pub candidate: Option<String>,
}

impl PkgInfo {
    pub fn installed(&self) -> bool {
        self.status.as_bytes().get(1) == Some(&b'i')
    }
    pub fn has_config(&self) -> bool {
        self.status.as_bytes().get(1) == Some(&b'c')
    }
}

/// Splits `name=version` (a pin) and `name:arch`.
pub fn split_pin(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (spec.trim(), None),
    }
}

/// `*`/`?` glob match (version pins like `1.2*`).
pub fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

/// Pure: the package specs to install (or upgrade) and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub install: Vec<String>,
    pub remove: Vec<String>,
}

pub fn plan(
    state: State,
    specs: &[String],
    info: &std::collections::BTreeMap<String, PkgInfo>,
    purge: bool,
) -> Plan {
    let mut p = Plan::default();
    for spec in specs {
        let (name, pin) = split_pin(spec);
        let i = info.get(name).cloned().unwrap_or_default();
        match state {
            State::Present => {
                let ok = i.installed() && pin.map(|v| glob(v, &i.version)).unwrap_or(true);
                if !ok {
                    p.install.push(spec.clone());
                }
            }
            State::Latest => {
                let ok = i.installed()
                    && match (&pin, &i.candidate) {
                        (Some(v), _) => glob(v, &i.version),
                        (None, Some(c)) => c == &i.version || c == "(none)",
                        (None, None) => true,
                    };
                if !ok {
                    p.install.push(spec.clone());
                }
            }
            State::Absent => {
                let hit = match pin {
                    Some(v) => i.installed() && glob(v, &i.version),
                    None => i.installed(),
                };
                if hit || (purge && i.has_config()) {
                    p.remove.push(name.to_string());
                }
            }
        }
    }
    p
}

/// Pure: is the package cache older than `valid` seconds (or was it never updated)?
pub fn cache_stale(stamp: Option<(u64, u64)>, valid: Option<u64>) -> bool {
    match (stamp, valid) {
        (_, None) => true,
        (None, Some(_)) => true,
        (Some((mtime, now)), Some(v)) => now.saturating_sub(mtime) > v,
    }
}

/// Parses dpkg-query lines, the cache stamp and `apt-cache policy` output.
fn parse_probe(
    out: &str,
    info: &mut std::collections::BTreeMap<String, PkgInfo>,
) -> Option<(u64, u64)> {
    let mut stamp = None;
    let mut policy_pkg: Option<String> = None;
    for l in out.lines() {
        if let Some(v) = l.strip_prefix("CACHE|") {
            let mut it = v.split('|').filter_map(|x| x.trim().parse::<u64>().ok());
            if let (Some(a), Some(b)) = (it.next(), it.next()) {
                stamp = Some((a, b));
            }
        } else if let Some(v) = l.strip_prefix("Q|") {
            let f: Vec<&str> = v.split('\t').collect();
            if f.len() >= 3 {
                let name = f[0].split(':').next().unwrap_or(f[0]).to_string();
                let e = info.entry(name).or_default();
                e.status = f[1].to_string();
                e.version = f[2].to_string();
            }
        } else if !l.starts_with(' ') && l.ends_with(':') {
            policy_pkg = Some(
                l.trim_end_matches(':')
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
        } else if let (Some(pkg), Some(c)) = (&policy_pkg, l.trim().strip_prefix("Candidate:")) {
            info.entry(pkg.clone()).or_default().candidate = Some(c.trim().to_string());
        }
    }
    stamp
}

/// Pure: did apt do anything? From its `N upgraded, N newly installed, N to remove` line.
pub fn apt_changed(stdout: &str) -> bool {
    for l in stdout.lines() {
        if l.contains("upgraded,") && l.contains("newly installed") {
            let nums: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .collect();
            // upgraded, newly installed, to remove, not upgraded
            return nums.iter().take(3).any(|n| *n > 0);
        }
    }
    // Simulations print Inst/Remv/Purg lines.
    stdout
        .lines()
        .any(|l| l.starts_with("Inst ") || l.starts_with("Remv ") || l.starts_with("Purg "))
}

pub struct Apt;

/// Bound of one `apt-get update` attempt on the host (a refresh takes seconds; a hung one was
/// seen behind a proxy that races on concurrent InRelease refreshes): the retry resumes.
const UPDATE_ATTEMPT_SECS: u64 = 60;

#[async_trait]
impl Module for Apt {
    literal_params!("apt");
    fn names(&self) -> &'static [&'static str] {
        &["apt"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        ARGS
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        let p: Params = parse("apt", args)?;
        let _ = (&p.force_apt_get, &p.policy_rc_d, &p.fail_on_autoremove);
        let as_u64 = |v: &Option<Value>, what: &str, default: u64| -> Result<u64, ModuleError> {
            match v {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| {
                        ModuleError::Args(format!("apt: {what} must be a number, got {v}"))
                    }),
            }
        };
        // As Ansible: a failed refresh is retried (5 times, backoff up to 12 s).
        let retries = as_u64(&p.update_cache_retries, "update_cache_retries", 5)?.max(1);
        let max_delay = as_u64(
            &p.update_cache_retry_max_delay,
            "update_cache_retry_max_delay",
            12,
        )?;
        if p.deb.is_some() {
            return Err(ModuleError::Args(
                "apt: deb is not supported by hfplay".into(),
            ));
        }
        if p.upgrade
            .as_ref()
            .is_some_and(|u| !matches!(u, Value::Null) && crate::words::to_bool(u) != Some(false))
        {
            return Err(ModuleError::Args(
                "apt: upgrade is not supported by hfplay (list packages with state: latest)".into(),
            ));
        }
        let specs: Vec<String> = p
            .name
            .clone()
            .or(p.pkg.clone())
            .or(p.package.clone())
            .unwrap_or_default();
        let state = match p.state.as_deref().unwrap_or("present") {
            "present" | "installed" => State::Present,
            "latest" => State::Latest,
            "absent" | "removed" => State::Absent,
            o => {
                return Err(ModuleError::Args(format!(
                    "apt: state {o:?} is not supported (present, latest, absent)"
                )))
            }
        };
        let update = p.update_cache.or(p.update_cache2).unwrap_or(false);
        let purge = p.purge.unwrap_or(false);
        let autoremove = p.autoremove.unwrap_or(false);
        let lock = p.lock_timeout.unwrap_or(120);
        let names: Vec<String> = specs.iter().map(|s| quote(split_pin(s).0)).collect();
        let policy = if state == State::Latest && !names.is_empty() {
            format!(
                "; LANG=C apt-cache policy -- {} 2>/dev/null",
                names.join(" ")
            )
        } else {
            String::new()
        };
        let mut probe = String::from(
            "for f in /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists; do if [ -e $f ]; then echo \"CACHE|$(stat -c %Y $f)|$(date +%s)\"; break; fi; done; ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || echo NOLISTS",
        );
        if !names.is_empty() {
            probe.push_str(&format!(
                "; dpkg-query -W -f='Q|${{Package}}\\t${{db:Status-Abbrev}}\\t${{Version}}\\n' -- {} 2>/dev/null",
                names.join(" ")
            ));
        }
        probe.push_str(&policy);
        probe.push_str("; true");
        let r = ctx.sh(&probe).await?;
        let mut info = std::collections::BTreeMap::new();
        let stamp = parse_probe(&r.stdout, &mut info);
        let mut out = Outcome::ok();
        let mut cache_updated = false;
        // Lists that were never downloaded are stale whatever their directory's mtime says.
        let stamp = if r.stdout.lines().any(|l| l == "NOLISTS") {
            None
        } else {
            stamp
        };
        if update && cache_stale(stamp, p.cache_valid_time) {
            cache_updated = true;
            if !ctx.check {
                // Each attempt is bounded (UPDATE_ATTEMPT_SECS): apt's http method was seen
                // hanging for good on a connection its proxy had closed; partial downloads
                // survive in lists/partial, so a retry resumes.
                let script = format!(
                    "i=0; n=0; d=1; while :; do out=$(LANG=C timeout -k 10 {UPDATE_ATTEMPT_SECS} apt-get update -q -o DPkg::Lock::Timeout={lock} 2>&1); rc=$?; [ $rc = 0 ] && break; \
                     case \"$out\" in *'Could not get lock'*) i=$((i+1)); if [ $i -ge {lock} ]; then echo \"$out\" >&2; exit 1; fi; sleep 1; continue;; esac; \
                     n=$((n+1)); if [ $n -ge {retries} ]; then [ $rc = 124 ] && echo \"apt-get update did not finish within {UPDATE_ATTEMPT_SECS} s\" >&2; echo \"$out\" >&2; echo \"(failed {retries} times)\" >&2; exit 1; fi; \
                     sleep $d; d=$((d * 2)); [ $d -le {max_delay} ] || d={max_delay}; done{policy}"
                );
                let r = ctx.sh(&script).await?;
                if r.rc != 0 {
                    return Ok(Outcome::failed(format!(
                        "Failed to update apt cache: {}",
                        r.stderr.trim()
                    )));
                }
                if !policy.is_empty() {
                    parse_probe(&r.stdout, &mut info);
                }
            }
        }
        out = out.with("cache_updated", cache_updated);
        if specs.is_empty() && !autoremove {
            out.changed = cache_updated;
            return Ok(out);
        }
        let pl = plan(state, &specs, &info, purge);
        let mut opts = format!(
            "-y -q -o DPkg::Lock::Timeout={lock} -o Dpkg::Options::=--{}",
            p.dpkg_options
                .clone()
                .unwrap_or_else(|| "force-confdef,force-confold".into())
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" -o Dpkg::Options::=--")
        );
        match p.install_recommends.or(p.install_recommends2) {
            Some(true) => opts.push_str(" --install-recommends"),
            Some(false) => opts.push_str(" --no-install-recommends"),
            None => {}
        }
        if p.allow_unauthenticated.unwrap_or(false) || p.force.unwrap_or(false) {
            opts.push_str(" --allow-unauthenticated");
        }
        if p.allow_downgrade.unwrap_or(false) || p.force.unwrap_or(false) {
            opts.push_str(" --allow-downgrades");
        }
        if p.allow_change_held_packages.unwrap_or(false) {
            opts.push_str(" --allow-change-held-packages");
        }
        if p.only_upgrade.unwrap_or(false) {
            opts.push_str(" --only-upgrade");
        }
        if let Some(rel) = p.default_release.clone().or(p.default_release2.clone()) {
            opts.push_str(&format!(" -t {}", quote(&rel)));
        }
        let sim = if ctx.check { " -s" } else { "" };
        let mut cmds = Vec::new();
        if !pl.install.is_empty() {
            let pk: Vec<String> = pl.install.iter().map(|s| quote(s)).collect();
            cmds.push(format!("apt-get{sim} install {opts} -- {}", pk.join(" ")));
        }
        if !pl.remove.is_empty() {
            let pk: Vec<String> = pl.remove.iter().map(|s| quote(s)).collect();
            let pg = if purge { " --purge" } else { "" };
            let ar = if autoremove { " --auto-remove" } else { "" };
            cmds.push(format!(
                "apt-get{sim} remove{pg}{ar} {opts} -- {}",
                pk.join(" ")
            ));
        } else if autoremove {
            let pg = if purge { " --purge" } else { "" };
            cmds.push(format!("apt-get{sim} autoremove{pg} {opts}"));
        }
        if p.autoclean.unwrap_or(false) && !ctx.check {
            cmds.push("apt-get -q autoclean".into());
        }
        if p.clean.unwrap_or(false) && !ctx.check {
            cmds.push("apt-get -q clean".into());
        }
        if cmds.is_empty() {
            return Ok(out);
        }
        let script = format!(
            "export DEBIAN_FRONTEND=noninteractive LANG=C; {}",
            cmds.join(" && ")
        );
        let r = ctx.sh(&script).await?;
        out.changed = apt_changed(&r.stdout);
        out = out
            .with("stdout", r.stdout.clone())
            .with("stderr", r.stderr.clone())
            .with(
                "stdout_lines",
                Value::Array(
                    r.stdout
                        .lines()
                        .map(|l| Value::from(l.to_string()))
                        .collect(),
                ),
            );
        if r.rc != 0 && ctx.check && cache_updated {
            // The real run refreshes the lists first; a simulation against stale lists cannot
            // know the packages yet. Predict the install instead of failing.
            out.changed = true;
            out.msg = "the package lists would be refreshed first; predicting the install".into();
            return Ok(out);
        }
        if r.rc != 0 {
            out.failed = true;
            let last = r.stderr.trim().lines().last().unwrap_or("").to_string();
            out.msg = if ctx.check {
                format!("apt-get simulation failed: {last}")
            } else {
                format!("apt-get failed: {last}")
            };
            out = out.with("rc", r.rc);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use std::collections::BTreeMap;

    fn info(v: &[(&str, &str, &str, Option<&str>)]) -> BTreeMap<String, PkgInfo> {
        v.iter()
            .map(|(n, s, ver, c)| {
                (
                    n.to_string(),
                    PkgInfo {
                        status: s.to_string(),
                        version: ver.to_string(),
                        candidate: c.map(str::to_string),
                    },
                )
            })
            .collect()
    }
    fn specs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = ARGS.iter().map(|k| (k.to_string(), Value::Null)).collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        let r = serde_json::from_value::<Params>(json!({"name": "x", "update_cahe": true}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn present_installs_only_missing_or_wrong_pins() {
        let i = info(&[
            ("curl", "ii ", "7.88.1-10", None),
            ("vim", "rc ", "2:9.0", None),
        ]);
        let p = plan(State::Present, &specs(&["curl", "vim", "git"]), &i, false);
        assert_eq!(p.install, specs(&["vim", "git"]));
        let p = plan(State::Present, &specs(&["curl=7.88.1-10"]), &i, false);
        assert!(p.install.is_empty());
        let p = plan(State::Present, &specs(&["curl=7.88*"]), &i, false);
        assert!(p.install.is_empty());
        let p = plan(State::Present, &specs(&["curl=8.0"]), &i, false);
        assert_eq!(p.install, specs(&["curl=8.0"]));
    }

    #[test]
    fn latest_compares_candidate() {
        let i = info(&[("a", "ii ", "1", Some("2")), ("b", "ii ", "3", Some("3"))]);
        let p = plan(State::Latest, &specs(&["a", "b"]), &i, false);
        assert_eq!(p.install, specs(&["a"]));
    }

    #[test]
    fn absent_removes_installed_and_purges_configs() {
        let i = info(&[
            ("a", "ii ", "1", None),
            ("b", "rc ", "1", None),
            ("c", "un ", "", None),
        ]);
        assert_eq!(
            plan(State::Absent, &specs(&["a", "b", "c"]), &i, false).remove,
            specs(&["a"])
        );
        assert_eq!(
            plan(State::Absent, &specs(&["a", "b", "c"]), &i, true).remove,
            specs(&["a", "b"])
        );
    }

    #[test]
    fn cache_validity() {
        assert!(cache_stale(Some((100, 200)), None));
        assert!(!cache_stale(Some((100, 200)), Some(3600)));
        assert!(cache_stale(Some((100, 5000)), Some(3600)));
        assert!(cache_stale(None, Some(3600)));
    }

    #[test]
    fn probe_parsing() {
        let mut i = BTreeMap::new();
        let out = "CACHE|100|200\nQ|curl\tii \t7.88\nQ|libc6:amd64\tii \t2.36\ncurl:\n  Installed: 7.88\n  Candidate: 7.89\n  Version table:\n";
        assert_eq!(parse_probe(out, &mut i), Some((100, 200)));
        assert!(i["curl"].installed());
        assert_eq!(i["curl"].candidate.as_deref(), Some("7.89"));
        assert!(i["libc6"].installed());
    }

    #[test]
    fn apt_summary_decides_changed() {
        assert!(!apt_changed(
            "0 upgraded, 0 newly installed, 0 to remove and 3 not upgraded.\n"
        ));
        assert!(apt_changed(
            "0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n"
        ));
        assert!(apt_changed("Inst curl (7.88 Debian:12)\n"));
        assert!(!apt_changed("curl is already the newest version (7.88).\n"));
    }

    #[test]
    fn globs() {
        assert!(glob("1.2*", "1.2.3"));
        assert!(!glob("1.3*", "1.2.3"));
        assert!(glob("1.?", "1.5"));
    }
}
