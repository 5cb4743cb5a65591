//! `setup` (alias `gather_facts`): gather host facts in ONE round trip of plain shell.
//!
//! ```yaml
//! - setup:
//!     filter: "ansible_default_ipv4"
//! - debug: msg="{{ ansible_hostname }} {{ ansible_default_ipv4.address }}"
//! ```
//! The script prints tagged lines (`K|name=value`, `IF|`, `A4|`, `A6|`, `RT|`, `ENV|`, `MNT|`)
//! from `uname`, `/etc/os-release`, `/etc/debian_version`, `ip -o addr`, `ip route`,
//! `/sys/class/net`, `/proc/meminfo`, `/proc/cpuinfo`, `id`, `env` and `/proc/mounts`;
//! [`facts_from`] (pure, unit-tested) turns them into Ansible's fact names with the `ansible_`
//! prefix: hostname, fqdn, nodename, domain, distribution (`Debian`/`Ubuntu`),
//! distribution_release, distribution_version, distribution_major_version, os_family,
//! architecture, machine, kernel, kernel_version, system, default_ipv4 (address, interface,
//! gateway, netmask, network, prefix, broadcast, macaddress, mtu, type), all_ipv4_addresses,
//! all_ipv6_addresses, interfaces, `ansible_<iface>` dicts (dashes become underscores),
//! processor_vcpus, processor_count, processor_cores, processor_nproc, memtotal_mb, memfree_mb,
//! swaptotal_mb, user_id, user_uid, user_gid, user_dir, user_shell, env, service_mgr, pkg_mgr,
//! virtualization_type, machine_id, uptime_seconds, date_time, mounts (without sizes).
//! Read-only (probe only, an empty plan), never changed; runs in check mode too. `gather_subset` is accepted (everything
//! is cheap, so all facts are returned); `filter` (globs) limits the returned names.

use std::convert::Infallible;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::args::de_opt_list;
use super::contract::{execute, NativeModule, Planned};
use super::{Args, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_list")]
    gather_subset: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_list")]
    filter: Option<Vec<String>>,
    #[serde(default)]
    gather_timeout: Option<Value>,
    #[serde(default)]
    fact_path: Option<Value>,
}

/// A shell command printing the host's package manager as Ansible names it (`apt`, `dnf`,
/// `yum`, `zypper`, `apk`, `pacman`, ...): the first of their commands found, apt first. Shared by
/// `setup` (the `pkg_mgr` fact) and `package` (which detects it when facts were not gathered).
macro_rules! pkg_mgr_command {
    () => {
        "for c in apt-get:apt dnf5:dnf5 dnf:dnf yum:yum zypper:zypper apk:apk pacman:pacman emerge:portage xbps-install:xbps urpmi:urpmi pkg_add:openbsd_pkg pkg:pkgng; do command -v \"${c%%:*}\" >/dev/null 2>&1 && { echo \"${c#*:}\"; break; }; done"
    };
}

/// [`pkg_mgr_command!`] as a script.
pub const PKG_MGR_SCRIPT: &str = pkg_mgr_command!();

/// The facts script. Most facts are read with the shell's own `read` from /proc and /etc (a
/// fork and exec cost 1.5-2 ms on the test hosts: the first version's 45 of them were 55 ms of
/// every run's facts), falling back to the commands where a file is missing.
const SCRIPT: &str = concat!(
    r#"
k() { printf 'K|%s=%s\n' "$1" "$2"; }
# v := first line of file $1, else the output of command $2
r() { v=; if [ -r "$1" ]; then read -r v < "$1" || :; elif [ -n "$2" ]; then v=$($2 2>/dev/null); fi; }
r /proc/sys/kernel/hostname "uname -n"; k nodename "$v"; k hostname "${v%%.*}"
k fqdn "$(hostname -f 2>/dev/null || uname -n)"
r /proc/sys/kernel/osrelease "uname -r"; k kernel "$v"
r /proc/sys/kernel/version "uname -v"; k kernel_version "$v"
k machine "$(uname -m)"
r /proc/sys/kernel/ostype "uname -s"; k system "$v"
if [ -r /etc/os-release ]; then
  ( . /etc/os-release; k os_id "$ID"; k os_version_id "$VERSION_ID"; k os_codename "$VERSION_CODENAME"; k os_name "$NAME"; k os_id_like "$ID_LIKE" )
fi
[ -r /etc/debian_version ] && { r /etc/debian_version; k debian_version "$v"; }
k vcpus "$(nproc 2>/dev/null || echo 1)"
if [ -r /proc/cpuinfo ]; then
  awk '/^processor/ { t++ } /^physical id/ { p[$0] = 1 } /^cpu cores/ && c == "" { sub(/^[^:]*: */, ""); c = $0 }
    END { n = 0; for (i in p) n++; printf "K|cpu_threads=%d\nK|cpu_sockets=%d\nK|cpu_cores=%s\n", t, n, c }' /proc/cpuinfo
else k cpu_threads ""; k cpu_sockets 0; k cpu_cores ""; fi
mt=; mf=; st=
[ -r /proc/meminfo ] && while read -r a b _; do case $a in MemTotal:) mt=$b;; MemFree:) mf=$b;; SwapTotal:) st=$b;; esac; done < /proc/meminfo
k memtotal_kb "$mt"; k memfree_kb "$mf"; k swaptotal_kb "$st"
uid=; gid=
[ -r /proc/self/status ] && while read -r a _ e _; do case $a in Uid:) uid=$e;; Gid:) gid=$e;; esac; done < /proc/self/status
[ -n "$uid" ] || uid=$(id -u); [ -n "$gid" ] || gid=$(id -g)
pw=$(getent passwd "$uid" 2>/dev/null)
if [ -n "$pw" ]; then k user_id "${pw%%:*}"; else k user_id "$(id -un 2>/dev/null)"; fi
k user_uid "$uid"
k user_gid "$gid"
k user_dir "$HOME"
k user_shell "${pw##*:}"
if [ -d /run/systemd/system ]; then k service_mgr systemd; else r /proc/1/comm; k service_mgr "$v"; fi
"#,
    "k pkg_mgr \"$(",
    pkg_mgr_command!(),
    ")\"",
    r#"
k virt "$(systemd-detect-virt 2>/dev/null)"
[ -f /.dockerenv ] && k dockerenv 1
r /etc/machine-id; k machine_id "$v"
up=; [ -r /proc/uptime ] && read -r up _ < /proc/uptime; k uptime "$up"
d=$(date '+%s|%Y-%m-%d|%H:%M:%S|%Z|%z|%A|%B|%d|%m|%Y|%H|%M|%S'); k epoch "${d%%|*}"; k datetime "${d#*|}"
k datetime_utc "$(date -u '+%Y-%m-%dT%H:%M:%SZ')"
for i in /sys/class/net/*; do
  n=${i##*/}
  r $i/address; a=$v; r $i/mtu; m=$v; r $i/operstate; o=$v; r $i/type
  printf 'IF|%s|%s|%s|%s|%s\n' "$n" "$a" "$m" "$o" "$v"
done
ip -4 -o addr show 2>/dev/null | while read -r _ dev _ cidr rest; do
  brd=""; case "$rest" in brd\ *) brd=${rest#brd }; brd=${brd%% *};; esac
  printf 'A4|%s|%s|%s\n' "$dev" "$cidr" "$brd"
done
ip -6 -o addr show 2>/dev/null | while read -r _ dev _ cidr _ scope _; do printf 'A6|%s|%s|%s\n' "$dev" "$cidr" "$scope"; done
ip -4 route show default 2>/dev/null | head -n 1 | { read -r _ _ gw _ dev _; printf 'RT|%s|%s\n' "$gw" "$dev"; }
env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*=\)/ENV|\1/p'
while read -r dev mnt fs opts _; do printf 'MNT|%s|%s|%s|%s\n' "$dev" "$mnt" "$fs" "$opts"; done < /proc/self/mounts
true
"#
);

fn prefix_to_netmask(prefix: u32) -> String {
    let m: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    std::net::Ipv4Addr::from(m).to_string()
}

fn network_of(addr: &str, prefix: u32) -> String {
    match addr.parse::<std::net::Ipv4Addr>() {
        Ok(a) => {
            let m: u32 = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix.min(32))
            };
            std::net::Ipv4Addr::from(u32::from(a) & m).to_string()
        }
        Err(_) => String::new(),
    }
}

fn capitalise_distro(id: &str) -> String {
    match id {
        "debian" => "Debian".into(),
        "ubuntu" => "Ubuntu".into(),
        "centos" => "CentOS".into(),
        "rhel" => "RedHat".into(),
        "fedora" => "Fedora".into(),
        "alpine" => "Alpine".into(),
        "opensuse" | "opensuse-leap" => "openSUSE Leap".into(),
        "arch" => "Archlinux".into(),
        other => {
            let mut c = other.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => "NA".into(),
            }
        }
    }
}

fn os_family(id: &str, like: &str) -> String {
    let all = format!("{id} {like}");
    if all.contains("debian") || all.contains("ubuntu") {
        "Debian".into()
    } else if all.contains("rhel") || all.contains("fedora") || all.contains("centos") {
        "RedHat".into()
    } else if all.contains("suse") {
        "Suse".into()
    } else if id == "alpine" {
        "Alpine".into()
    } else if id == "arch" {
        "Archlinux".into()
    } else {
        capitalise_distro(id)
    }
}

fn num(v: Option<&String>) -> u64 {
    v.and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Pure: facts (with the `ansible_` prefix) from the script's output.
pub fn facts_from(out: &str) -> Map<String, Value> {
    let mut kv = std::collections::BTreeMap::new();
    let mut ifaces: Vec<(String, String, u64, String, String)> = Vec::new();
    let mut a4: Vec<(String, String, u32, String)> = Vec::new();
    let mut a6: Vec<(String, String, u32, String)> = Vec::new();
    let mut route: Option<(String, String)> = None;
    let mut env = Map::new();
    let mut mounts = Vec::new();
    for l in out.lines() {
        if let Some(r) = l.strip_prefix("K|") {
            if let Some((k, v)) = r.split_once('=') {
                kv.insert(k.to_string(), v.to_string());
            }
        } else if let Some(r) = l.strip_prefix("IF|") {
            let f: Vec<&str> = r.split('|').collect();
            if f.len() >= 5 {
                ifaces.push((
                    f[0].into(),
                    f[1].into(),
                    f[2].parse().unwrap_or(0),
                    f[3].into(),
                    f[4].into(),
                ));
            }
        } else if let Some(r) = l.strip_prefix("A4|") {
            let f: Vec<&str> = r.split('|').collect();
            if f.len() >= 3 {
                let (addr, pre) = f[1].split_once('/').unwrap_or((f[1], "32"));
                a4.push((
                    f[0].into(),
                    addr.into(),
                    pre.parse().unwrap_or(32),
                    f[2].into(),
                ));
            }
        } else if let Some(r) = l.strip_prefix("A6|") {
            let f: Vec<&str> = r.split('|').collect();
            if f.len() >= 3 {
                let (addr, pre) = f[1].split_once('/').unwrap_or((f[1], "128"));
                a6.push((
                    f[0].into(),
                    addr.into(),
                    pre.parse().unwrap_or(128),
                    f[2].into(),
                ));
            }
        } else if let Some(r) = l.strip_prefix("RT|") {
            if let Some((gw, dev)) = r.split_once('|') {
                if !dev.is_empty() {
                    route = Some((gw.to_string(), dev.to_string()));
                }
            }
        } else if let Some(r) = l.strip_prefix("ENV|") {
            if let Some((k, v)) = r.split_once('=') {
                env.insert(k.to_string(), Value::from(v));
            }
        } else if let Some(r) = l.strip_prefix("MNT|") {
            let f: Vec<&str> = r.splitn(4, '|').collect();
            if f.len() == 4 {
                mounts
                    .push(json!({"device": f[0], "mount": f[1], "fstype": f[2], "options": f[3]}));
            }
        }
    }
    let g = |k: &str| kv.get(k).cloned().unwrap_or_default();
    let mut f = Map::new();
    let mut put = |k: &str, v: Value| {
        f.insert(format!("ansible_{k}"), v);
    };
    let fqdn = g("fqdn");
    let hostname = g("hostname");
    put("hostname", hostname.clone().into());
    put("nodename", g("nodename").into());
    put("fqdn", fqdn.clone().into());
    let domain = fqdn
        .strip_prefix(&format!("{hostname}."))
        .unwrap_or("")
        .to_string();
    put("domain", domain.into());
    let id = g("os_id");
    let distro = capitalise_distro(&id);
    let version = if id == "debian" && !g("debian_version").is_empty() {
        g("debian_version")
    } else {
        g("os_version_id")
    };
    let major = version.split('.').next().unwrap_or("").to_string();
    put("distribution", distro.into());
    put("distribution_release", g("os_codename").into());
    put("distribution_version", version.into());
    put("distribution_major_version", major.into());
    put("os_family", os_family(&id, &g("os_id_like")).into());
    put("architecture", g("machine").into());
    put("machine", g("machine").into());
    put("kernel", g("kernel").into());
    put("kernel_version", g("kernel_version").into());
    put("system", g("system").into());
    let vcpus = num(kv.get("vcpus")).max(1);
    let threads = num(kv.get("cpu_threads")).max(vcpus);
    let sockets = num(kv.get("cpu_sockets")).max(1);
    let cores = num(kv.get("cpu_cores")).max(1);
    put("processor_vcpus", threads.into());
    put("processor_nproc", vcpus.into());
    put("processor_count", sockets.into());
    put("processor_cores", cores.into());
    put(
        "processor_threads_per_core",
        (threads / (sockets * cores)).max(1).into(),
    );
    put("memtotal_mb", (num(kv.get("memtotal_kb")) / 1024).into());
    put("memfree_mb", (num(kv.get("memfree_kb")) / 1024).into());
    put("swaptotal_mb", (num(kv.get("swaptotal_kb")) / 1024).into());
    put("user_id", g("user_id").into());
    put("user_uid", num(kv.get("user_uid")).into());
    put("user_gid", num(kv.get("user_gid")).into());
    put("user_dir", g("user_dir").into());
    put("user_shell", g("user_shell").into());
    put("service_mgr", g("service_mgr").into());
    put(
        "pkg_mgr",
        kv.get("pkg_mgr")
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown".into())
            .into(),
    );
    let virt = match g("virt").as_str() {
        "" | "none" if kv.contains_key("dockerenv") => "docker".to_string(),
        "" | "none" => String::new(),
        v => v.to_string(),
    };
    put("virtualization_type", virt.into());
    put("machine_id", g("machine_id").into());
    let uptime: f64 = g("uptime").parse().unwrap_or(0.0);
    put("uptime_seconds", (uptime as u64).into());
    put("env", Value::Object(env));
    put("mounts", Value::Array(mounts));
    // date_time
    let dt: Vec<String> = g("datetime").split('|').map(str::to_string).collect();
    if dt.len() == 12 {
        put(
            "date_time",
            json!({
                "date": dt[0], "time": dt[1], "tz": dt[2], "tz_offset": dt[3], "weekday": dt[4],
                "month": dt[7], "day": dt[6], "year": dt[8], "hour": dt[9], "minute": dt[10],
                "second": dt[11], "epoch": g("epoch"), "iso8601": g("datetime_utc"),
            }),
        );
    }
    // Interfaces.
    let mut names = Vec::new();
    let mut all4 = Vec::new();
    let mut all6 = Vec::new();
    for (name, mac, mtu, oper, typ) in &ifaces {
        names.push(Value::from(name.clone()));
        let kind = if typ == "772" || name == "lo" {
            "loopback"
        } else {
            "ether"
        };
        let mut d = Map::new();
        d.insert("device".into(), name.clone().into());
        d.insert("active".into(), (oper != "down").into());
        d.insert("macaddress".into(), mac.clone().into());
        d.insert("mtu".into(), (*mtu).into());
        d.insert("type".into(), kind.into());
        let mine: Vec<&(String, String, u32, String)> =
            a4.iter().filter(|a| &a.0 == name).collect();
        let v4 = |a: &(String, String, u32, String)| {
            json!({
                "address": a.1, "prefix": a.2.to_string(), "netmask": prefix_to_netmask(a.2),
                "network": network_of(&a.1, a.2), "broadcast": a.3,
            })
        };
        if let Some(first) = mine.first() {
            d.insert("ipv4".into(), v4(first));
            if mine.len() > 1 {
                d.insert(
                    "ipv4_secondaries".into(),
                    Value::Array(mine[1..].iter().map(|a| v4(a)).collect()),
                );
            }
        }
        let six: Vec<Value> = a6
            .iter()
            .filter(|a| &a.0 == name)
            .map(|a| json!({"address": a.1, "prefix": a.2.to_string(), "scope": a.3}))
            .collect();
        if !six.is_empty() {
            d.insert("ipv6".into(), Value::Array(six));
        }
        put(&name.replace(['-', '.', ':'], "_"), Value::Object(d));
    }
    for a in &a4 {
        if !a.1.starts_with("127.") {
            all4.push(Value::from(a.1.clone()));
        }
    }
    for a in &a6 {
        if a.1 != "::1" {
            all6.push(Value::from(a.1.clone()));
        }
    }
    put("interfaces", Value::Array(names));
    put("all_ipv4_addresses", Value::Array(all4));
    put("all_ipv6_addresses", Value::Array(all6));
    let mut def = Map::new();
    if let Some((gw, dev)) = &route {
        if let Some(a) = a4.iter().find(|a| &a.0 == dev) {
            def.insert("address".into(), a.1.clone().into());
            def.insert("prefix".into(), a.2.to_string().into());
            def.insert("netmask".into(), prefix_to_netmask(a.2).into());
            def.insert("network".into(), network_of(&a.1, a.2).into());
            def.insert("broadcast".into(), a.3.clone().into());
        }
        def.insert("interface".into(), dev.clone().into());
        def.insert("alias".into(), dev.clone().into());
        def.insert("gateway".into(), gw.clone().into());
        if let Some(i) = ifaces.iter().find(|i| &i.0 == dev) {
            def.insert("macaddress".into(), i.1.clone().into());
            def.insert("mtu".into(), i.2.into());
            def.insert("type".into(), "ether".into());
        }
    }
    put("default_ipv4", Value::Object(def));
    f
}

/// `*`/`?` glob for `filter`.
fn glob(pat: &str, s: &str) -> bool {
    super::apt::glob(pat, s)
}

pub struct Setup;

#[async_trait]
impl Module for Setup {
    literal_params!("setup");
    fn names(&self) -> &'static [&'static str] {
        &["setup", "gather_facts"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

/// The fact script's output.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub stdout: String,
    pub stderr: String,
}

#[async_trait]
impl NativeModule for Setup {
    type Params = Params;
    type Observed = Observed;
    /// Read-only: there is never anything to change.
    type Plan = Infallible;
    const NAME: &'static str = "setup";

    async fn probe(&self, _p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let r = ctx.sh(SCRIPT).await?;
        Ok(Observed {
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Infallible>, ModuleError> {
        let _ = (&p.gather_subset, &p.gather_timeout, &p.fact_path);
        if !seen.stdout.contains("K|nodename=") {
            return Ok(Planned::nothing(Outcome::failed(format!(
                "fact gathering failed: {}",
                seen.stderr.trim()
            ))));
        }
        let mut facts = facts_from(&seen.stdout);
        if let Some(filters) = &p.filter {
            if !filters.is_empty() {
                facts.retain(|k, _| filters.iter().any(|f| glob(f, k)));
            }
        }
        let mut o = Outcome::ok();
        o.facts = Some(facts);
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

    const OUT: &str = "K|nodename=hf-db1.example\nK|hostname=hf-db1\nK|fqdn=hf-db1.example\nK|os_id=debian\nK|os_version_id=12\nK|os_codename=bookworm\nK|debian_version=12.5\nK|machine=x86_64\nK|vcpus=2\nK|cpu_threads=2\nK|memtotal_kb=2048000\nK|service_mgr=systemd\nIF|eth0|02:42:ac:11:00:02|1500|up|1\nIF|lo|00:00:00:00:00:00|65536|unknown|772\nA4|lo|127.0.0.1/8|\nA4|eth0|172.17.0.2/16|172.17.255.255\nA4|eth0|172.17.0.50/16|172.17.255.255\nA6|eth0|fe80::1/64|link\nRT|172.17.0.1|eth0\nENV|HOME=/root\nENV|PATH=/usr/bin\nMNT|overlay|/|overlay|rw\n";

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"filtre": "x"})).is_err());
    }

    #[test]
    fn distro_and_host_facts() {
        let f = facts_from(OUT);
        assert_eq!(f["ansible_distribution"], "Debian");
        assert_eq!(f["ansible_distribution_release"], "bookworm");
        assert_eq!(f["ansible_distribution_version"], "12.5");
        assert_eq!(f["ansible_distribution_major_version"], "12");
        assert_eq!(f["ansible_os_family"], "Debian");
        assert_eq!(f["ansible_hostname"], "hf-db1");
        assert_eq!(f["ansible_domain"], "example");
        assert_eq!(f["ansible_processor_vcpus"], 2);
        assert_eq!(f["ansible_memtotal_mb"], 2000);
        assert_eq!(f["ansible_env"]["HOME"], "/root");
        assert_eq!(f["ansible_service_mgr"], "systemd");
    }

    #[test]
    fn network_facts() {
        let f = facts_from(OUT);
        let d = &f["ansible_default_ipv4"];
        assert_eq!(d["address"], "172.17.0.2");
        assert_eq!(d["interface"], "eth0");
        assert_eq!(d["gateway"], "172.17.0.1");
        assert_eq!(d["netmask"], "255.255.0.0");
        assert_eq!(d["network"], "172.17.0.0");
        assert_eq!(d["prefix"], "16");
        assert_eq!(f["ansible_interfaces"], json!(["eth0", "lo"]));
        assert_eq!(
            f["ansible_all_ipv4_addresses"],
            json!(["172.17.0.2", "172.17.0.50"])
        );
        assert_eq!(f["ansible_eth0"]["ipv4"]["address"], "172.17.0.2");
        assert_eq!(
            f["ansible_eth0"]["ipv4_secondaries"][0]["address"],
            "172.17.0.50"
        );
        assert_eq!(f["ansible_lo"]["type"], "loopback");
    }

    #[test]
    fn ubuntu_versions() {
        let f = facts_from(
            "K|os_id=ubuntu\nK|os_version_id=22.04\nK|os_codename=jammy\nK|os_id_like=debian\n",
        );
        assert_eq!(f["ansible_distribution"], "Ubuntu");
        assert_eq!(f["ansible_distribution_major_version"], "22");
        assert_eq!(f["ansible_os_family"], "Debian");
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({"filter": "ansible_host*"})).unwrap();
        let seen = Observed {
            stdout: OUT.into(),
            stderr: String::new(),
        };
        let o = Setup.plan(&p, &seen, false).unwrap();
        assert!(o.changes.is_none() && !o.outcome.changed);
        let facts = o.outcome.facts.unwrap();
        assert_eq!(facts["ansible_hostname"], "hf-db1");
        assert!(!facts.contains_key("ansible_distribution"));
        let broken = Observed {
            stdout: String::new(),
            stderr: "sh: 1: ip: not found\n".into(),
        };
        let o = Setup.plan(&p, &broken, false).unwrap();
        assert!(o.outcome.failed);
        assert_eq!(o.outcome.msg, "fact gathering failed: sh: 1: ip: not found");
    }

    #[tokio::test]
    async fn local_setup_runs() {
        use crate::modules::testutil;
        let env = testutil::Env {
            dir: std::env::temp_dir(),
        };
        let conn = testutil::local().await;
        let args: Args = serde_json::from_value(json!({})).unwrap();
        let o = Setup
            .run(&args, &testutil::ctx(&conn, &env, true))
            .await
            .unwrap();
        assert!(!o.failed && !o.changed, "{o:?}");
        let f = o.facts.unwrap();
        assert!(!f["ansible_hostname"].as_str().unwrap().is_empty());
        assert!(f["ansible_processor_vcpus"].as_u64().unwrap() >= 1);
    }
}
