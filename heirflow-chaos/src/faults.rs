//! Applying and healing faults on the local cluster's hosts, which are Docker containers named
//! like their inventory hosts: `docker kill`/`start` (crash), `pause`/`unpause` (freeze),
//! `network disconnect`/`connect` with the host's own address (partition), `tc netem` inside
//! the host (delay and loss), `systemctl kill -s KILL` of a unit (kill9). Every apply has its
//! heal, and healing a host that is already healthy is a no-op, so a run interrupted anywhere
//! can always be healed.

use std::process::Command;

use crate::schedule::{Fault, FaultKind};

/// Where the hosts live: their Docker network (for partitions).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub network: String,
}

pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A host's address on the cluster network (kept to reconnect it after a partition).
fn address(cluster: &Cluster, host: &str) -> Result<String, String> {
    let fmt = format!(
        "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
        cluster.network
    );
    docker(&["inspect", "-f", &fmt, host])
}

/// What a host looks like now: running / paused / stopped, and on the network or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub running: bool,
    pub paused: bool,
    pub connected: bool,
}

pub fn state(cluster: &Cluster, host: &str) -> Result<HostState, String> {
    let s = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Paused}}",
        host,
    ])?;
    let mut it = s.split_whitespace();
    let running = it.next() == Some("true");
    let paused = it.next() == Some("true");
    let connected = !address(cluster, host)?.is_empty();
    Ok(HostState {
        running,
        paused,
        connected,
    })
}

/// Starts a fault. Returns what healing needs to know (the address, for a partition).
pub fn apply(cluster: &Cluster, f: &Fault) -> Result<Option<String>, String> {
    let h = f.host.as_str();
    match f.kind {
        FaultKind::Kill9 => {
            let unit = f.unit.as_deref().ok_or("kill9 needs a unit")?;
            docker(&["exec", h, "systemctl", "kill", "-s", "KILL", unit])?;
            Ok(None)
        }
        FaultKind::Step => Err("an operator step is run by the runner, not applied".into()),
        FaultKind::Crash => docker(&["kill", h]).map(|_| None),
        FaultKind::Freeze => docker(&["pause", h]).map(|_| None),
        FaultKind::Partition => {
            let ip = address(cluster, h)?;
            if ip.is_empty() {
                return Err(format!("{h} is not on {}", cluster.network));
            }
            docker(&["network", "disconnect", &cluster.network, h])?;
            Ok(Some(ip))
        }
        FaultKind::Netem => {
            // Every interface of the host but lo: after a partition it may be eth1, not eth0.
            // Delay and loss need the kernel's sch_netem; where it is missing (these machines'
            // kernel has no netem, only tbf) the link is throttled to 1 Mbit/s instead.
            docker(&[
                "exec",
                h,
                "sh",
                "-c",
                "for i in $(ls /sys/class/net | grep -vx lo); do \
                 tc qdisc replace dev $i root netem delay 200ms 50ms loss 10% 2>/dev/null \
                 || tc qdisc replace dev $i root tbf rate 1mbit burst 16kbit latency 400ms \
                 || exit 1; done",
            ])
            .map(|_| None)
        }
    }
}

/// Ends a fault; a host already healthy is left as it is.
pub fn heal(cluster: &Cluster, f: &Fault, ip: Option<&str>) -> Result<(), String> {
    let h = f.host.as_str();
    let now = state(cluster, h)?;
    match f.kind {
        FaultKind::Kill9 => Ok(()), // systemd restarts the unit
        FaultKind::Step => Ok(()),
        FaultKind::Crash => {
            if !now.running {
                docker(&["start", h])?;
            }
            Ok(())
        }
        FaultKind::Freeze => {
            if now.paused {
                docker(&["unpause", h])?;
            }
            Ok(())
        }
        FaultKind::Partition => {
            if !now.connected {
                let mut args = vec!["network", "connect"];
                if let Some(ip) = ip {
                    args.extend(["--ip", ip]);
                }
                args.extend([cluster.network.as_str(), h]);
                docker(&args)?;
            }
            Ok(())
        }
        FaultKind::Netem => docker(&[
            "exec",
            h,
            "sh",
            "-c",
            "for i in $(ls /sys/class/net | grep -vx lo); do tc qdisc del dev $i root 2>/dev/null; done; true",
        ])
        .map(|_| ()),
    }
}

/// Heals whatever fault a host may still carry (an interrupted run's), reading its state once:
/// started, thawed, reconnected with `address` (its own: Docker would otherwise hand out one
/// from the dynamic pool), links unthrottled.
pub fn heal_host(cluster: &Cluster, host: &str, address: &str) -> Result<(), String> {
    let now = state(cluster, host)?;
    if !now.running {
        docker(&["start", host])?;
    } else if now.paused {
        docker(&["unpause", host])?;
    }
    if !now.connected {
        docker(&[
            "network",
            "connect",
            "--ip",
            address,
            &cluster.network,
            host,
        ])?;
    }
    docker(&[
        "exec",
        host,
        "sh",
        "-c",
        "for i in $(ls /sys/class/net | grep -vx lo); do tc qdisc del dev $i root 2>/dev/null; done; true",
    ])
    .map(|_| ())
}
