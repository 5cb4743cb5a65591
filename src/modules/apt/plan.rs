//! apt's pure side: package state as dpkg/apt report it, the plan of what to install or remove,
//! the cache age rule and the parsing of probe and `apt-get` output.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[serde(alias = "installed")]
    Present,
    Latest,
    #[serde(alias = "removed")]
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
pub fn parse_probe(
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

/// Test data: (name, dpkg status, version, candidate) rows as a probe would record them.
#[cfg(test)]
pub fn info(v: &[(&str, &str, &str, Option<&str>)]) -> std::collections::BTreeMap<String, PkgInfo> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn specs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
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
