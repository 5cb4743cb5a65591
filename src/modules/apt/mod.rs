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
//! the planned `apt-get` runs with `-s` (the contract's `simulate`, read-only) so the prediction
//! uses apt's own resolver.
//!
//! As in Ansible: `update_cache` alone reports changed whenever it refreshed the lists (use
//! `cache_valid_time` for idempotence); with packages, only package changes count.
//! Check mode with `update_cache` due simulates against refreshed lists downloaded into a
//! scratch directory ([`check_lists`]; Ansible simulates against the old lists and fails on a
//! fresh host). The same holds for later apt tasks on a host whose refresh an earlier task of
//! the check run skipped, and a `cache_valid_time` refresh after it is not due (as in the real
//! run): a fresh host's `--check` predicts the real run's changes, and its failures (a package
//! the lists do not hold). After a repository module predicted a change of the sources, a
//! simulation that fails predicts the install instead (the new source is not in the lists).
//! The installs a check predicts are noted for the modules that read what packages bring
//! ([`predicted_effects`]). `policy_rc_d: 101` puts a `/usr/sbin/policy-rc.d` answering 101 in
//! place for the install (services are not started by the packages), then the previous one
//! back, as Ansible. Deviations: `deb`, `upgrade` (dist/full/safe), `build-dep` and `fixed` are
//! not supported (clear error); version pins with wildcards are matched on the host by apt
//! itself.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_list, de_opt_string, de_opt_u64};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

mod check_effects;
mod check_lists;
mod plan;
pub use check_effects::{Effects, PkgPath, PkgUnit};
pub use check_lists::note_sources_changed;
use plan::parse_probe;
pub use plan::{apt_changed, cache_stale, glob, plan, split_pin, PkgInfo, Plan, State};

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_list")]
    name: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    pkg: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    package: Option<Vec<String>>,
    #[serde(default)]
    state: Option<State>,
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

pub struct Apt;

/// Bound of one `apt-get update` attempt on the host (a refresh takes seconds; a hung one was
/// seen behind a proxy that races on concurrent InRelease refreshes): the retry resumes.
const UPDATE_ATTEMPT_SECS: u64 = 60;

/// The arguments resolved and checked, before the host is touched.
struct Settings {
    specs: Vec<String>,
    state: State,
    update: bool,
    purge: bool,
    autoremove: bool,
    lock: u64,
    retries: u64,
    max_delay: u64,
    /// `policy_rc_d`: the exit code /usr/sbin/policy-rc.d gives during the run.
    policy_rc_d: Option<i64>,
}

impl Params {
    fn settings(&self) -> Result<Settings, ModuleError> {
        let _ = (&self.force_apt_get, &self.fail_on_autoremove);
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
        let retries = as_u64(&self.update_cache_retries, "update_cache_retries", 5)?.max(1);
        let max_delay = as_u64(
            &self.update_cache_retry_max_delay,
            "update_cache_retry_max_delay",
            12,
        )?;
        if self.deb.is_some() {
            return Err(ModuleError::Args(
                "apt: deb is not supported by hfplay".into(),
            ));
        }
        if self
            .upgrade
            .as_ref()
            .is_some_and(|u| !matches!(u, Value::Null) && crate::words::to_bool(u) != Some(false))
        {
            return Err(ModuleError::Args(
                "apt: upgrade is not supported by hfplay (list packages with state: latest)".into(),
            ));
        }
        Ok(Settings {
            specs: self
                .name
                .clone()
                .or(self.pkg.clone())
                .or(self.package.clone())
                .unwrap_or_default(),
            state: self.state.unwrap_or(State::Present),
            update: self.update_cache.or(self.update_cache2).unwrap_or(false),
            purge: self.purge.unwrap_or(false),
            autoremove: self.autoremove.unwrap_or(false),
            lock: self.lock_timeout.unwrap_or(120),
            retries,
            max_delay,
            policy_rc_d: match &self.policy_rc_d {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                        .filter(|c| (0..=255).contains(c))
                        .ok_or_else(|| {
                            ModuleError::Args(format!(
                                "apt: policy_rc_d must be an exit code, got {v}"
                            ))
                        })?,
                ),
            },
        })
    }
}

impl Settings {
    /// `apt-cache policy` of the named packages (state=latest), appended to a script; `opts`:
    /// apt options (check mode's scratch lists).
    fn policy(&self, opts: &str) -> String {
        if self.wants_candidates() {
            let names: Vec<String> = self.specs.iter().map(|s| quote(split_pin(s).0)).collect();
            format!(
                "; LANG=C apt-cache {opts} policy -- {} 2>/dev/null",
                names.join(" ")
            )
        } else {
            String::new()
        }
    }
    /// `state: latest` with packages: the plan compares with apt's candidates.
    fn wants_candidates(&self) -> bool {
        self.state == State::Latest && !self.specs.is_empty()
    }
    /// Only a refresh of the lists: no packages and no autoremove.
    fn update_only(&self) -> bool {
        self.specs.is_empty() && !self.autoremove
    }
}

/// The `apt-get` commands for a package plan; `simulate` runs them with `-s` (read-only) and
/// leaves out the cache cleaning; `lists`: apt options for other package lists (check mode's).
fn apt_cmds(
    p: &Params,
    s: &Settings,
    pl: &Plan,
    simulate: bool,
    lists: Option<&str>,
) -> Vec<String> {
    let mut opts = format!(
        "-y -q -o DPkg::Lock::Timeout={}{} -o Dpkg::Options::=--{}",
        s.lock,
        lists.map(|l| format!(" {l}")).unwrap_or_default(),
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
    let sim = if simulate { " -s" } else { "" };
    let pg = if s.purge { " --purge" } else { "" };
    let mut cmds = Vec::new();
    if !pl.install.is_empty() {
        let pk: Vec<String> = pl.install.iter().map(|s| quote(s)).collect();
        cmds.push(format!("apt-get{sim} install {opts} -- {}", pk.join(" ")));
    }
    if !pl.remove.is_empty() {
        let pk: Vec<String> = pl.remove.iter().map(|s| quote(s)).collect();
        let ar = if s.autoremove { " --auto-remove" } else { "" };
        cmds.push(format!(
            "apt-get{sim} remove{pg}{ar} {opts} -- {}",
            pk.join(" ")
        ));
    } else if s.autoremove {
        cmds.push(format!("apt-get{sim} autoremove{pg} {opts}"));
    }
    if p.autoclean.unwrap_or(false) && !simulate {
        cmds.push("apt-get -q autoclean".into());
    }
    if p.clean.unwrap_or(false) && !simulate {
        cmds.push("apt-get -q clean".into());
    }
    cmds
}

/// Runs the `apt-get` commands; `changed` comes from apt's own output. `sources_pending`: the
/// real run would have other package sources (a simulation may not know the packages yet).
async fn run_apt(
    ctx: &TaskCtx<'_>,
    cmds: &[String],
    mut out: Outcome,
    sources_pending: bool,
    simulate: bool,
    policy_rc_d: Option<i64>,
) -> Result<Outcome, ModuleError> {
    let mut script = format!(
        "export DEBIAN_FRONTEND=noninteractive LANG=C; {}",
        cmds.join(" && ")
    );
    if let (Some(code), false) = (policy_rc_d, simulate) {
        // As Ansible: /usr/sbin/policy-rc.d answers `code` to the packages' maintainer
        // scripts for the duration (101: do not start services), then the old one is back.
        let pol = "/usr/sbin/policy-rc.d";
        script = format!(
            "bk=; if [ -e {pol} ]; then bk=$(mktemp) && cp -p {pol} \"$bk\" || exit 1; fi; \
             printf '#!/bin/sh\\nexit %d\\n' {code} > {pol} && chmod 0755 {pol} || exit 1; \
             ( {script} ); rc=$?; if [ -n \"$bk\" ]; then mv \"$bk\" {pol}; else rm -f {pol}; fi; exit $rc"
        );
    }
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
    if r.rc != 0 && simulate && sources_pending {
        // The real run adds a package source first, which the lists of a check run lack.
        // Predict the install instead of failing.
        out.changed = true;
        out.msg = "a package source would be added first; predicting the install".into();
        return Ok(out);
    }
    if r.rc != 0 {
        out.failed = true;
        let last = r.stderr.trim().lines().last().unwrap_or("").to_string();
        out.msg = if simulate {
            format!("apt-get simulation failed: {last}")
        } else {
            format!("apt-get failed: {last}")
        };
        out = out.with("rc", r.rc);
    }
    Ok(out)
}

/// Shell: `apt-get update` with Ansible's retry tuning (`retries` attempts, the delay doubling up
/// to `max_delay` s), waiting up to `lock` s for apt's lock; exits 1 with apt's output on stderr
/// when every attempt failed. Also apt_repository's; `opts`: more apt options (check mode's
/// scratch lists). Each attempt is bounded (UPDATE_ATTEMPT_SECS): apt's http method was seen
/// hanging for good on a connection its proxy had closed; partial downloads survive in
/// lists/partial, so a retry resumes. The variables it sets start with `u_`.
pub fn update_script(lock: u64, retries: u64, max_delay: u64, opts: &str) -> String {
    let retries = retries.max(1);
    format!(
        "u_i=0; u_n=0; u_d=1; while :; do u_out=$(LANG=C DEBIAN_FRONTEND=noninteractive timeout -k 10 {UPDATE_ATTEMPT_SECS} apt-get update -q -o DPkg::Lock::Timeout={lock} {opts} 2>&1); u_rc=$?; [ $u_rc = 0 ] && break; \
         case \"$u_out\" in *'Could not get lock'*) u_i=$((u_i+1)); if [ $u_i -ge {lock} ]; then echo \"$u_out\" >&2; exit 1; fi; sleep 1; continue;; esac; \
         u_n=$((u_n+1)); if [ $u_n -ge {retries} ]; then [ $u_rc = 124 ] && echo \"apt-get update did not finish within {UPDATE_ATTEMPT_SECS} s\" >&2; echo \"$u_out\" >&2; echo \"(failed {retries} times)\" >&2; exit 1; fi; \
         sleep $u_d; u_d=$((u_d * 2)); [ $u_d -le {max_delay} ] || u_d={max_delay}; done"
    )
}

/// What the probe saw: dpkg's (and for `latest` apt's) view of the named packages, and the age
/// of the package lists.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub info: std::collections::BTreeMap<String, PkgInfo>,
    /// (lists mtime, now); `None`: the lists were never downloaded.
    pub stamp: Option<(u64, u64)>,
}

/// The changes: refresh the lists first, then the `apt-get` runs planned from `info`.
pub struct Changes {
    refresh: bool,
    /// `None`: only the refresh (no packages, no autoremove). Kept so the real run can plan
    /// again on the candidates the refresh brought.
    info: Option<std::collections::BTreeMap<String, PkgInfo>>,
}

/// Check mode: what the installs this check run predicted on the task's host would put there
/// (`None`: no install predicted, or its packages could not be read). For the modules that find
/// nothing on the host where a real run would find what a package brought.
pub async fn predicted_effects(
    ctx: &TaskCtx<'_>,
) -> Result<Option<std::sync::Arc<Effects>>, ModuleError> {
    if !ctx.check {
        return Ok(None);
    }
    check_effects::predicted(ctx, check_lists::ready_options(ctx.host)).await
}

/// Check mode could not download the lists the real run's refresh would bring.
fn scratch_failed(why: &str) -> Outcome {
    Outcome::failed(format!(
        "Failed to update apt cache (check mode, into a scratch directory): {why}"
    ))
}

#[async_trait]
impl Module for Apt {
    literal_params!("apt");
    fn names(&self) -> &'static [&'static str] {
        &["apt"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Apt {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "apt";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let s = p.settings()?;
        let names: Vec<String> = s.specs.iter().map(|s| quote(split_pin(s).0)).collect();
        let mut probe = String::from(
            "for f in /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists; do if [ -e $f ]; then echo \"CACHE|$(stat -c %Y $f)|$(date +%s)\"; break; fi; done; ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || echo NOLISTS",
        );
        if !names.is_empty() {
            probe.push_str(&format!(
                "; dpkg-query -W -f='Q|${{Package}}\\t${{db:Status-Abbrev}}\\t${{Version}}\\n' -- {} 2>/dev/null",
                names.join(" ")
            ));
        }
        probe.push_str(&s.policy(""));
        probe.push_str("; true");
        let r = ctx.sh(&probe).await?;
        let mut info = std::collections::BTreeMap::new();
        let stamp = parse_probe(&r.stdout, &mut info);
        // Lists that were never downloaded are stale whatever their directory's mtime says.
        let stamp = if r.stdout.lines().any(|l| l == "NOLISTS") {
            None
        } else {
            stamp
        };
        Ok(Observed { info, stamp })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let s = p.settings()?;
        let refresh = s.update && cache_stale(seen.stamp, p.cache_valid_time);
        let mut out = Outcome::ok().with("cache_updated", refresh);
        if s.update_only() {
            // A refresh alone counts as a change (as in Ansible).
            out.changed = refresh;
            return Ok(if refresh {
                Planned::change(
                    Changes {
                        refresh,
                        info: None,
                    },
                    out,
                )
            } else {
                Planned::nothing(out)
            });
        }
        let pl = plan(s.state, &s.specs, &seen.info, s.purge);
        // With packages only package changes count; apt's own output refines this.
        out.changed = !pl.install.is_empty() || !pl.remove.is_empty();
        // A due refresh may bring new candidates, so the real run plans again after it.
        if !refresh && apt_cmds(p, &s, &pl, false, None).is_empty() {
            return Ok(Planned::nothing(out));
        }
        Ok(Planned::change(
            Changes {
                refresh,
                info: Some(seen.info.clone()),
            },
            out,
        ))
    }

    /// Check mode: the planned `apt-get` runs with `-s`, so apt's resolver decides `changed`;
    /// against the refreshed scratch lists when the real run would refresh first.
    async fn simulate(
        &self,
        p: &Params,
        c: Changes,
        mut predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let s = p.settings()?;
        // Lists an earlier task of this check run would have refreshed count as refreshed.
        let refreshed_before = check_lists::note_refresh(ctx.host, c.refresh);
        let Some(mut info) = c.info else {
            // A `cache_valid_time` refresh right after that one is not due in the real run.
            if refreshed_before && p.cache_valid_time.is_some() {
                let mut o = predicted.with("cache_updated", false);
                o.changed = false;
                return Ok(o);
            }
            return Ok(predicted);
        };
        let refreshed = c.refresh || refreshed_before;
        let mut lists = None;
        // `latest` compares with the candidates the refreshed lists bring.
        if refreshed && s.wants_candidates() {
            let opts = match check_lists::scratch_options(ctx, &s).await? {
                Ok(o) => o,
                Err(e) => return Ok(scratch_failed(&e)),
            };
            let r = ctx.sh(s.policy(&opts).trim_start_matches("; ")).await?;
            for v in info.values_mut() {
                v.candidate = None;
            }
            parse_probe(&r.stdout, &mut info);
            lists = Some(opts);
        }
        let pl = plan(s.state, &s.specs, &info, s.purge);
        predicted.changed = !pl.install.is_empty() || !pl.remove.is_empty();
        if apt_cmds(p, &s, &pl, true, None).is_empty() {
            return Ok(predicted);
        }
        if refreshed && lists.is_none() {
            lists = match check_lists::scratch_options(ctx, &s).await? {
                Ok(o) => Some(o),
                Err(e) => return Ok(scratch_failed(&e)),
            };
        }
        let cmds = apt_cmds(p, &s, &pl, true, lists.as_deref());
        let sources = check_lists::sources_changed(ctx.host);
        let out = run_apt(ctx, &cmds, predicted, sources, true, None).await?;
        if !out.failed {
            if let Some(stdout) = out.data.get("stdout").and_then(Value::as_str) {
                let may_start = s.policy_rc_d.is_none_or(|c| c == 0);
                let pkgs = check_effects::simulated_installs(stdout);
                check_effects::note_installs(ctx.host, &pkgs, may_start);
            }
        }
        Ok(out)
    }

    async fn apply(
        &self,
        p: &Params,
        c: Changes,
        mut out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let s = p.settings()?;
        let mut info = c.info;
        if c.refresh {
            let policy = s.policy("");
            let script = format!(
                "{}{policy}",
                update_script(s.lock, s.retries, s.max_delay, "")
            );
            let r = ctx.sh(&script).await?;
            if r.rc != 0 {
                return Ok(Outcome::failed(format!(
                    "Failed to update apt cache: {}",
                    r.stderr.trim()
                )));
            }
            if let (Some(info), false) = (info.as_mut(), policy.is_empty()) {
                parse_probe(&r.stdout, info);
            }
        }
        let Some(info) = info else {
            return Ok(out);
        };
        let pl = plan(s.state, &s.specs, &info, s.purge);
        let cmds = apt_cmds(p, &s, &pl, false, None);
        if cmds.is_empty() {
            out.changed = false;
            return Ok(out);
        }
        run_apt(ctx, &cmds, out, c.refresh, false, s.policy_rc_d).await
    }
}
#[cfg(test)]
mod tests {
    use super::plan::info;
    use super::*;
    use serde_json::{json, Map};

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        let r = serde_json::from_value::<Params>(json!({"name": "x", "update_cahe": true}));
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({
            "name": ["curl", "git"], "state": "installed",
            "update_cache": true, "cache_valid_time": 3600
        }))
        .unwrap();
        let fresh = Some((100, 200));
        let both = Observed {
            info: info(&[("curl", "ii ", "7.88", None), ("git", "ii ", "2.39", None)]),
            stamp: fresh,
        };
        let same = Apt.plan(&p, &both, false).unwrap();
        assert!(same.changes.is_none() && !same.outcome.changed);
        assert_eq!(same.outcome.data["cache_updated"], json!(false));
        let one = Observed {
            info: info(&[("curl", "ii ", "7.88", None)]),
            stamp: fresh,
        };
        let missing = Apt.plan(&p, &one, false).unwrap();
        let c = missing.changes.unwrap();
        assert!(missing.outcome.changed && !c.refresh && c.info.is_some());
        // Lists never downloaded: the refresh is planned even with everything installed.
        let stale = Observed {
            stamp: None,
            ..both
        };
        let due = Apt.plan(&p, &stale, false).unwrap();
        assert!(due.changes.unwrap().refresh && !due.outcome.changed);
        assert_eq!(due.outcome.data["cache_updated"], json!(true));
        // A refresh alone is the change.
        let only: Params = serde_json::from_value(json!({"update_cache": true})).unwrap();
        let r = Apt.plan(&only, &Observed::default(), false).unwrap();
        assert!(r.changes.unwrap().info.is_none() && r.outcome.changed);
        let bad = serde_json::from_value::<Params>(json!({"name": "a", "state": "gone"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }
}
