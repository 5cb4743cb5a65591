//! What the packages a check run would install put on the host. A real run's install brings the
//! package's files and runs its maintainer scripts (Debian's postinst enables and starts the
//! services it ships); a check run installs nothing, so a later task that reads one of those
//! (a service `started`/`enabled`, a directory or a default site the package ships) would be
//! predicted against a host without them. When such a task finds nothing on the host, it asks
//! here: the packages apt's simulation listed are downloaded (`apt-get download`, the exact
//! versions, into a scratch directory removed when the run ends) and read without installing
//! them — their file lists (`dpkg-deb -c`) and what their postinst does to units
//! (`deb-systemd-helper enable`, `deb-systemd-invoke start`, `update-rc.d`, `invoke-rc.d`), with
//! the host's `/usr/sbin/policy-rc.d` or the task's `policy_rc_d` (no start when they deny it),
//! and the links and directories it makes with literal paths (`ln -s /a /b`, `mkdir -p /d`:
//! nginx's default site is such a link).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::connection::quote;
use crate::modules::{ModuleError, TaskCtx};

/// A path a package would create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgPath {
    /// `d` directory, `-` file, `l` symlink (`dpkg-deb -c`'s first letter).
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Where a symlink points.
    pub target: Option<String>,
}

/// A unit a package would ship, and what its postinst would do to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgUnit {
    pub enabled: bool,
    pub started: bool,
}

/// The predicted effects of the installs noted so far on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub paths: BTreeMap<String, PkgPath>,
    /// Keyed by full unit name (`memcached.service`).
    pub units: BTreeMap<String, PkgUnit>,
}

impl Effects {
    /// The path as the packages would leave it, and whether anything would be below it.
    pub fn path(&self, path: &str) -> Option<(&PkgPath, bool)> {
        let path = path.trim_end_matches('/');
        let p = self.paths.get(path)?;
        let below = format!("{path}/");
        let has_children = self
            .paths
            .range(below.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&below));
        Some((p, has_children))
    }
}

/// Packages noted by apt's simulations on one host, and what was learnt of them.
#[derive(Default)]
struct HostInstalls {
    /// package=version → whether its services may start (no denying `policy_rc_d`).
    noted: BTreeMap<String, bool>,
    read: BTreeSet<String>,
    effects: Arc<Effects>,
    /// Why the packages could not be read (reported once, then no prediction).
    failed: Option<String>,
}

static HOSTS: Mutex<BTreeMap<String, HostInstalls>> = Mutex::new(BTreeMap::new());

fn with_host<T>(host: &str, f: impl FnOnce(&mut HostInstalls) -> T) -> T {
    let mut m = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    f(m.entry(host.to_string()).or_default())
}

/// The packages `apt-get -s` output says it would install or upgrade: `name=version`.
pub fn simulated_installs(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| {
            let name = l.split_whitespace().next()?;
            let ver = l.split_once('(')?.1.split_whitespace().next()?;
            Some(format!("{name}={ver}"))
        })
        .collect()
}

/// Notes the installs a check-mode simulation predicted; `may_start`: no `policy_rc_d` of the
/// task denies starting services.
pub fn note_installs(host: &str, pkgs: &[String], may_start: bool) {
    with_host(host, |h| {
        for p in pkgs {
            h.noted.insert(p.clone(), may_start);
        }
    });
}

/// The predicted effects of this check run's installs on the task's host; `None` when no
/// install was predicted there, or its packages could not be downloaded (then the caller
/// predicts from the host as it is, as without this).
pub async fn predicted(
    ctx: &TaskCtx<'_>,
    lists: Option<String>,
) -> Result<Option<Arc<Effects>>, ModuleError> {
    let (todo, have) = with_host(ctx.host, |h| {
        let todo: Vec<(String, bool)> = h
            .noted
            .iter()
            .filter(|(p, _)| !h.read.contains(*p))
            .map(|(p, s)| (p.clone(), *s))
            .collect();
        (
            todo,
            (!h.noted.is_empty() && h.failed.is_none()).then(|| h.effects.clone()),
        )
    });
    let Some(have) = have else { return Ok(None) };
    if todo.is_empty() {
        return Ok(Some(have));
    }
    let pkgs: Vec<String> = todo.iter().map(|(p, _)| quote(p)).collect();
    let script = format!(
        "d=$(mktemp -d /var/tmp/hfplay-check-debs.XXXXXX) || exit 1; echo \"DIR|$d\"; cd \"$d\" && chmod 0755 . || exit 1; \
         LANG=C apt-get download -q {lists} -- {pkgs} >/dev/null 2>err || {{ grep -v '^W:' err >&2; exit 1; }}; \
         pol=0; if [ -x /usr/sbin/policy-rc.d ]; then /usr/sbin/policy-rc.d hfplay-probe start >/dev/null 2>&1; pol=$?; fi; echo \"POLICY|$pol\"; \
         for f in *.deb; do echo \"PKG|${{f%%_*}}\"; \
           dpkg-deb -c \"$f\" | awk '{{ p=$6; sub(/^\\./, \"\", p); sub(/\\/$/, \"\", p); t=\"\"; if ($7 == \"->\") t=$8; print \"F|\" $1 \"|\" $2 \"|\" p \"|\" t }}'; \
           dpkg-deb -I \"$f\" postinst 2>/dev/null | grep -E 'deb-systemd-helper|deb-systemd-invoke|invoke-rc.d|update-rc.d|ln -s|mkdir -p' | sed 's/^/P|/'; \
           rm -f \"$f\"; done",
        lists = lists.unwrap_or_default(),
        pkgs = pkgs.join(" ")
    );
    let r = ctx.sh(&script).await?;
    if let Some(d) = r.stdout.lines().find_map(|l| l.strip_prefix("DIR|")) {
        ctx.conn
            .at_end(format!("rm -rf -- {}", quote(d)), ctx.become_.clone());
    }
    if r.rc != 0 {
        let why = r.stderr.trim().lines().last().unwrap_or("").to_string();
        with_host(ctx.host, |h| h.failed = Some(why));
        return Ok(None);
    }
    let may_start: BTreeMap<&str, bool> = todo
        .iter()
        .map(|(p, s)| (p.split('=').next().unwrap_or(p), *s))
        .collect();
    let mut effects = (*have).clone();
    read_packages(&r.stdout, &may_start, &mut effects);
    let effects = Arc::new(effects);
    with_host(ctx.host, |h| {
        h.read.extend(todo.into_iter().map(|(p, _)| p));
        h.effects = effects.clone();
    });
    Ok(Some(effects))
}

/// Pure: merges the output of the reading script into `e`. `may_start`: per package name,
/// whether the task that installs it lets services start.
fn read_packages(out: &str, may_start: &BTreeMap<&str, bool>, e: &mut Effects) {
    let policy_denies = out
        .lines()
        .find_map(|l| l.strip_prefix("POLICY|"))
        .is_some_and(|c| c.trim() == "101");
    let mut pkg = String::new();
    // Units and sysv scripts shipped, then what the postinst lines do to them.
    let mut enable: Vec<String> = Vec::new();
    let mut start: Vec<String> = Vec::new();
    for l in out.lines() {
        if let Some(p) = l.strip_prefix("PKG|") {
            pkg = p.to_string();
        } else if let Some(f) = l.strip_prefix("F|") {
            let parts: Vec<&str> = f.splitn(4, '|').collect();
            if parts.len() < 4 || parts[2].is_empty() {
                continue;
            }
            let (perm, ug, path, target) = (parts[0], parts[1], parts[2], parts[3]);
            let (owner, group) = ug.split_once('/').unwrap_or((ug, ug));
            e.paths.insert(
                path.to_string(),
                PkgPath {
                    kind: perm.chars().next().unwrap_or('-'),
                    mode: perm_bits(perm),
                    owner: owner.into(),
                    group: group.into(),
                    target: (!target.is_empty()).then(|| target.to_string()),
                },
            );
            for dir in ["/usr/lib/systemd/system/", "/lib/systemd/system/"] {
                if let Some(u) = path.strip_prefix(dir).filter(|u| !u.contains('/')) {
                    e.units.entry(u.to_string()).or_default();
                }
            }
        } else if let Some(p) = l.strip_prefix("P|") {
            let may = may_start.get(pkg.as_str()).copied().unwrap_or(true) && !policy_denies;
            read_postinst_line(p, may, &mut enable, &mut start);
            for (path, made) in postinst_paths(p) {
                e.paths.entry(path).or_insert(made);
            }
        }
    }
    for u in enable {
        if let Some(x) = e.units.get_mut(&u) {
            x.enabled = true;
        }
    }
    for u in start {
        if let Some(x) = e.units.get_mut(&u) {
            x.started = true;
        }
    }
}

/// One postinst line: the units it enables or starts (sysv names as `NAME.service`).
fn read_postinst_line(l: &str, may_start: bool, enable: &mut Vec<String>, start: &mut Vec<String>) {
    let words: Vec<String> = l
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
        .collect();
    let units = || {
        words
            .iter()
            .filter(|w| {
                [".service", ".socket", ".timer", ".path", ".target"]
                    .iter()
                    .any(|s| w.ends_with(s))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let has = |w: &str| words.iter().any(|x| x == w);
    if has("deb-systemd-helper") && has("enable") {
        enable.extend(units());
    } else if has("deb-systemd-invoke") && (has("start") || has("$_dh_action")) && may_start {
        start.extend(units());
    } else if let Some(i) = words.iter().position(|w| w == "update-rc.d") {
        if let Some(name) = words.get(i + 1).filter(|n| !n.starts_with('-')) {
            if words.iter().any(|w| w == "defaults" || w == "enable") {
                enable.push(format!("{name}.service"));
            }
        }
    } else if let Some(i) = words.iter().position(|w| w == "invoke-rc.d") {
        let rest: Vec<&String> = words[i + 1..]
            .iter()
            .filter(|w| !w.starts_with('-'))
            .collect();
        if let [name, action, ..] = rest.as_slice() {
            if action.as_str() == "start" && may_start {
                start.push(format!("{name}.service"));
            }
        }
    }
}

/// The paths a postinst line makes when it names them literally: `ln -s /a /b` (with `-f`/`-n`
/// too) and `mkdir -p /d...` (root's, as maintainer scripts run as root).
fn postinst_paths(l: &str) -> Vec<(String, PkgPath)> {
    let words: Vec<&str> = l.split_whitespace().collect();
    let literal = |w: &&str| w.starts_with('/') && !w.contains(['$', '`', '*', '?', ';']);
    let made = |kind, mode, target: Option<String>| PkgPath {
        kind,
        mode,
        owner: "root".into(),
        group: "root".into(),
        target,
    };
    let opts = |from: usize| -> (Vec<&str>, Vec<&str>) {
        words[from..].iter().partition(|w| w.starts_with('-'))
    };
    match words.first() {
        Some(&"ln") => {
            let (o, args) = opts(1);
            if o.iter().any(|o| o.contains('s')) && args.len() == 2 && args.iter().all(literal) {
                let to = args[1].trim_end_matches('/').to_string();
                return vec![(to, made('l', 0o777, Some(args[0].to_string())))];
            }
        }
        Some(&"mkdir") => {
            let (o, args) = opts(1);
            if o.iter().any(|o| o.contains('p')) && !args.is_empty() && args.iter().all(literal) {
                return args
                    .iter()
                    .map(|d| (d.trim_end_matches('/').to_string(), made('d', 0o755, None)))
                    .collect();
            }
        }
        _ => {}
    }
    Vec::new()
}

/// `drwxr-xr-x` → 0o755 (setuid/setgid/sticky included).
fn perm_bits(p: &str) -> u32 {
    let b: Vec<char> = p.chars().skip(1).collect();
    if b.len() < 9 {
        return 0;
    }
    let mut m = 0;
    for (i, c) in b.iter().take(9).enumerate() {
        let bit = 1 << (8 - i);
        if !matches!(c, '-' | 'S' | 'T') {
            m |= bit;
        }
    }
    if matches!(b[2], 's' | 'S') {
        m |= 0o4000;
    }
    if matches!(b[5], 's' | 'S') {
        m |= 0o2000;
    }
    if matches!(b[8], 't' | 'T') {
        m |= 0o1000;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_from_simulation() {
        let out = "NOTE: This is only a simulation!\nInst libevent-2.1-7t64 (2.1.12-stable-10+b1 Debian:13.2/stable [amd64])\nInst memcached (1.6.38-1 Debian:13.2/stable [amd64])\nConf memcached (1.6.38-1 Debian:13.2/stable [amd64])\nInst git [1:2.39] (1:2.47.3-0+deb13u1 Debian-Security:13/stable-security [amd64])\n";
        assert_eq!(
            simulated_installs(out),
            vec![
                "libevent-2.1-7t64=2.1.12-stable-10+b1",
                "memcached=1.6.38-1",
                "git=1:2.47.3-0+deb13u1"
            ]
        );
    }

    #[test]
    fn reads_units_paths_and_postinst() {
        let out = "POLICY|0\nPKG|memcached\n\
F|drwxr-xr-x|root/root|/etc|\n\
F|-rw-r--r--|root/root|/etc/memcached.conf|\n\
F|-rw-r--r--|root/root|/usr/lib/systemd/system/memcached.service|\n\
F|lrwxrwxrwx|root/root|/usr/sbin/x|../bin/x\n\
F|drwxr-sr-x|root/adm|/var/log/x|\n\
P|\t\tdeb-systemd-helper enable 'memcached.service' >/dev/null || true\n\
P|\t\tdeb-systemd-invoke $_dh_action 'memcached.service' >/dev/null || true\n\
PKG|quiet\n\
F|-rw-r--r--|root/root|/usr/lib/systemd/system/quiet.service|\n\
P|\tdeb-systemd-helper update-state 'quiet.service' >/dev/null || true\n\
PKG|legacy\n\
F|-rwxr-xr-x|root/root|/etc/init.d/legacy|\n\
P|\tupdate-rc.d legacy defaults >/dev/null\n\
P|      ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default\n\
P|      mkdir -p /var/www/html\n\
P|      ln -s \"$x\" /etc/y\n";
        let may = BTreeMap::from([("memcached", true), ("quiet", true)]);
        let mut e = Effects::default();
        read_packages(out, &may, &mut e);
        let m = &e.units["memcached.service"];
        assert!(m.enabled && m.started);
        let q = &e.units["quiet.service"];
        assert!(!q.enabled && !q.started);
        // A sysv script is no unit file: its generated unit is not predicted.
        assert!(!e.units.contains_key("legacy.service"));
        assert_eq!(e.paths["/etc"].kind, 'd');
        let (etc, full) = e.path("/etc/").expect("/etc");
        assert!(etc.kind == 'd' && full);
        let (html, full) = e.path("/var/www/html").expect("html");
        assert!(html.kind == 'd' && !full);
        assert!(e.path("/nowhere").is_none());
        assert_eq!(e.paths["/etc"].mode, 0o755);
        assert_eq!(e.paths["/var/log/x"].mode, 0o2755);
        assert_eq!(e.paths["/var/log/x"].group, "adm");
        assert_eq!(e.paths["/usr/sbin/x"].target.as_deref(), Some("../bin/x"));
        let site = &e.paths["/etc/nginx/sites-enabled/default"];
        assert_eq!(site.kind, 'l');
        assert_eq!(
            site.target.as_deref(),
            Some("/etc/nginx/sites-available/default")
        );
        assert_eq!(e.paths["/var/www/html"].kind, 'd');
        assert!(!e.paths.contains_key("/etc/y"));

        // policy_rc_d 101 on the install, or the host's policy-rc.d denying: enabled, not started.
        let mut e = Effects::default();
        read_packages(out, &BTreeMap::from([("memcached", false)]), &mut e);
        assert!(e.units["memcached.service"].enabled && !e.units["memcached.service"].started);
        let mut e = Effects::default();
        read_packages(&out.replace("POLICY|0", "POLICY|101"), &may, &mut e);
        assert!(!e.units["memcached.service"].started);
    }
}
