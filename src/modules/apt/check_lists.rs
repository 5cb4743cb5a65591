//! Check mode's package lists. A check run never refreshes the host's lists, yet the real run
//! refreshes them before it installs (a fresh host has none at all), so a simulation against
//! the host's own lists predicts something else than what the real run does. Instead, the first
//! apt task of a check run that needs the refreshed lists downloads them, once per host, into
//! a scratch directory (`/var/tmp/hfplay-check-apt.*`), and apt's simulations of the run
//! (`apt-get -s`, `apt-cache policy`) read those: the prediction is the real run's, down to a
//! package the lists do not hold. The host's own lists, package caches and update stamp stay as
//! they were; the directory is removed when the run ends ([`HostConn::at_end`]).
//!
//! [`HostConn::at_end`]: crate::connection::HostConn::at_end

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{update_script, Settings};
use crate::connection::quote;
use crate::modules::{ModuleError, TaskCtx};

/// What one host's check run knows of its lists (one run per process, so the map lives as long
/// as the run).
#[derive(Default)]
struct HostLists {
    /// A task of this check run would have refreshed the lists.
    refresh_noted: bool,
    /// The scratch lists: `Ok(directory)`, or why they could not be downloaded.
    scratch: Option<Result<String, String>>,
    /// A repository module predicted a change of the package sources: the scratch lists (from
    /// the current sources) may lack packages the real run finds.
    sources_changed: bool,
}

static HOSTS: Mutex<BTreeMap<String, HostLists>> = Mutex::new(BTreeMap::new());

fn with_host<T>(host: &str, f: impl FnOnce(&mut HostLists) -> T) -> T {
    let mut m = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    f(m.entry(host.to_string()).or_default())
}

/// Notes that this task would refresh the lists (`refresh`) and returns whether an earlier task
/// of the check run already would have.
pub fn note_refresh(host: &str, refresh: bool) -> bool {
    with_host(host, |h| {
        let before = h.refresh_noted;
        h.refresh_noted |= refresh;
        before
    })
}

/// A repository module's check run predicted a change of the package sources on `host`.
pub fn note_sources_changed(host: &str) {
    with_host(host, |h| h.sources_changed = true);
}

pub fn sources_changed(host: &str) -> bool {
    with_host(host, |h| h.sources_changed)
}

/// The apt options that make apt read the lists in `lists` (a shell word) and write no binary
/// cache file (it would otherwise write one under /var/cache/apt from those lists).
fn apt_options(lists: &str) -> String {
    format!("-o Dir::State::Lists={lists} -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=")
}

fn scratch_apt_options(dir: &str) -> String {
    apt_options(&quote(&format!("{dir}/lists")))
}

/// The apt options of the scratch lists, when this check run downloaded them on `host`.
pub fn ready_options(host: &str) -> Option<String> {
    with_host(host, |h| match &h.scratch {
        Some(Ok(d)) => Some(scratch_apt_options(d)),
        _ => None,
    })
}

/// The apt options of the refreshed scratch lists of the task's host, downloading them on first
/// use; `Ok(Err(why))` when they could not be downloaded (the real run's refresh would likely
/// fail the same way).
pub async fn scratch_options(
    ctx: &TaskCtx<'_>,
    s: &Settings,
) -> Result<Result<String, String>, ModuleError> {
    if let Some(known) = with_host(ctx.host, |h| h.scratch.clone()) {
        return Ok(known.map(|d| scratch_apt_options(&d)));
    }
    // apt's Post-Invoke-Success hook (Debian's 15update-stamp) touches the update stamp, which
    // would make the real run's `cache_valid_time` skip its refresh: its time is put back.
    let stamp = "/var/lib/apt/periodic/update-success-stamp";
    let update = update_script(s.lock, s.retries, s.max_delay, &apt_options("\"$d/lists\""));
    let script = format!(
        "d=$(mktemp -d /var/tmp/hfplay-check-apt.XXXXXX) && mkdir -p \"$d/lists/partial\" || exit 1; \
         echo \"DIR|$d\"; t=; [ -e {stamp} ] && t=$(stat -c %Y {stamp}); \
         ( {update} ); rc=$?; \
         if [ -n \"$t\" ]; then touch -d \"@$t\" {stamp}; else rm -f {stamp}; fi; exit $rc"
    );
    let r = ctx.sh(&script).await?;
    let dir = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("DIR|"))
        .map(str::to_string);
    if let Some(d) = &dir {
        ctx.conn
            .at_end(format!("rm -rf -- {}", quote(d)), ctx.become_.clone());
    }
    let scratch = match (dir, r.rc) {
        (Some(d), 0) => Ok(d),
        (_, rc) => Err(format!(
            "rc={rc}: {}",
            r.stderr.trim().lines().last().unwrap_or("")
        )),
    };
    with_host(ctx.host, |h| h.scratch = Some(scratch.clone()));
    Ok(scratch.map(|d| scratch_apt_options(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_per_host() {
        assert!(!note_refresh("cl-a", true));
        assert!(note_refresh("cl-a", false));
        assert!(!note_refresh("cl-b", false));
        assert!(!note_refresh("cl-b", false));
        assert!(!sources_changed("cl-a"));
        note_sources_changed("cl-a");
        assert!(sources_changed("cl-a") && !sources_changed("cl-b"));
    }

    #[test]
    fn options_point_apt_at_the_scratch_lists() {
        let o = scratch_apt_options("/var/tmp/hfplay-check-apt.x");
        assert!(o.contains("Dir::State::Lists=/var/tmp/hfplay-check-apt.x/lists"));
        assert!(o.contains("Dir::Cache::pkgcache= "));
    }
}
