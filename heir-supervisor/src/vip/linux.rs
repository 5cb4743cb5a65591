//! Linux floating IP: `ip addr add/del` plus gratuitous ARP.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::Command;

use super::VipAddr;

pub struct Linux {
    pub addr: VipAddr,
    /// Interface name, or `auto`.
    dev: String,
}

/// One `inet` line of `ip -o -4 addr show`.
#[derive(Debug, PartialEq, Eq)]
pub struct InetLine {
    pub dev: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

/// Parse `ip -o -4 addr show` output.
pub fn parse_ip_addr(out: &str) -> Vec<InetLine> {
    let mut v = Vec::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let _index = words.next();
        let Some(dev) = words.next() else { continue };
        // `eth0@if12` names the veth peer after '@'.
        let dev = dev.split('@').next().unwrap_or(dev).trim_end_matches(':');
        let rest: Vec<&str> = words.collect();
        let Some(pos) = rest.iter().position(|w| *w == "inet") else {
            continue;
        };
        let Some(cidr) = rest.get(pos + 1) else {
            continue;
        };
        if let Ok(a) = cidr.parse::<VipAddr>() {
            v.push(InetLine {
                dev: dev.to_string(),
                ip: a.ip,
                prefix: a.prefix,
            });
        }
    }
    v
}

async fn run(cmd: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let out = tokio::time::timeout(
        timeout,
        Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("`{cmd} {}` timed out", args.join(" ")))?
    .with_context(|| format!("running `{cmd}`"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Linux {
    pub fn new(addr: VipAddr, dev: &str) -> Result<Linux> {
        if dev.is_empty() {
            bail!("--vip-dev must name an interface or be `auto`");
        }
        Ok(Linux {
            addr,
            dev: dev.to_string(),
        })
    }

    async fn addresses(&self) -> Result<Vec<InetLine>> {
        Ok(parse_ip_addr(
            &run("ip", &["-o", "-4", "addr", "show"], Duration::from_secs(5)).await?,
        ))
    }

    /// The interface to use now.
    async fn device(&self, addrs: &[InetLine]) -> Result<String> {
        if self.dev != "auto" {
            return Ok(self.dev.clone());
        }
        if let Some(l) = addrs.iter().find(|l| l.ip == self.addr.ip) {
            return Ok(l.dev.clone());
        }
        addrs
            .iter()
            .find(|l| l.ip != self.addr.ip && self.addr.same_network(l.ip))
            .map(|l| l.dev.clone())
            .ok_or_else(|| {
                anyhow!(
                    "--vip-dev auto: no interface has an address in {}'s network; name one",
                    self.addr
                )
            })
    }

    pub async fn held(&self) -> Result<bool> {
        let addrs = self.addresses().await?;
        Ok(addrs.iter().any(|l| l.ip == self.addr.ip))
    }

    pub async fn acquire(&self) -> Result<bool> {
        let addrs = self.addresses().await?;
        let dev = self.device(&addrs).await?;
        if addrs.iter().any(|l| l.ip == self.addr.ip && l.dev == dev) {
            return Ok(false);
        }
        let cidr = self.addr.to_string();
        run(
            "ip",
            &["addr", "add", &cidr, "dev", &dev],
            Duration::from_secs(5),
        )
        .await?;
        // Gratuitous ARP so that neighbours update their caches at once. Not awaited: three
        // announcements one second apart; the first leaves immediately.
        let ip = self.addr.ip.to_string();
        tokio::spawn(async move {
            if let Err(e) = run(
                "arping",
                &["-U", "-c", "3", "-I", &dev, &ip],
                Duration::from_secs(10),
            )
            .await
            {
                crate::log::warn(&format!(
                    "gratuitous ARP for {ip} failed (peers may follow late): {e:#}"
                ));
            }
        });
        Ok(true)
    }

    pub async fn release(&self) -> Result<bool> {
        let mut changed = false;
        for l in self.addresses().await? {
            if l.ip == self.addr.ip {
                let cidr = format!("{}/{}", l.ip, l.prefix);
                run(
                    "ip",
                    &["addr", "del", &cidr, "dev", &l.dev],
                    Duration::from_secs(5),
                )
                .await?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                   2: eth0@if7    inet 172.30.0.11/24 brd 172.30.0.255 scope global eth0\\       valid_lft forever\n\
                   2: eth0@if7    inet 172.30.0.100/24 scope global secondary eth0\\       valid_lft forever\n";
        let v = parse_ip_addr(out);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].dev, "eth0");
        assert_eq!(v[1].ip, Ipv4Addr::new(172, 30, 0, 11));
        assert_eq!(v[2].prefix, 24);
    }
}
