//! Floating IP drivers: the DB primary holds one address that every client uses.
//!
//! * `linux` — `ip addr add VIP/PREFIX dev IF` on the holder, `ip addr del` on the others, and a
//!   gratuitous ARP (`arping -U -c 3 -I IF VIP`, package `iputils-arping`) so that peers' stale
//!   ARP caches move at once (without it clients took 34 s to follow; see FIELD-NOTES).
//! * `aws` — the same OS work plus `AssignPrivateIpAddresses` (AllowReassignment) /
//!   `UnassignPrivateIpAddresses` on this instance's ENI, discovered from IMDSv2. Cargo feature
//!   `aws`, on by default (`--no-default-features` leaves it and the AWS SDK out).
//! * `none` — no floating IP (clients use libpq multi-host `target_session_attrs=read-write`).
//!
//! Every driver is idempotent: [`Vip::acquire`] and [`Vip::release`] report whether they
//! changed anything, and [`Vip::held`] reads the current state.

#[cfg(feature = "aws")]
pub mod aws;
pub mod linux;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// `10.0.1.100/24` (prefix defaults to 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipAddr {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for VipAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (
                ip,
                p.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| format!("{s:?}: prefix must be 0..=32"))?,
            ),
            None => (s, 32),
        };
        let ip = ip
            .parse::<Ipv4Addr>()
            .map_err(|e| format!("{s:?}: not an IPv4 address ({e})"))?;
        Ok(VipAddr { ip, prefix })
    }
}

impl fmt::Display for VipAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl VipAddr {
    /// Is `other` inside this address's network?
    pub fn same_network(&self, other: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(self.ip) & mask == u32::from(other) & mask
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    Linux,
    Aws,
    None,
}

/// A configured floating IP.
pub enum Vip {
    Linux(linux::Linux),
    #[cfg(feature = "aws")]
    Aws(aws::Aws),
    None,
}

impl Vip {
    /// Build the driver. `dev` = `auto` picks the interface holding an address in the VIP's
    /// network (interfaces get renamed, e.g. after `docker network disconnect/connect`).
    pub async fn new(kind: DriverKind, addr: Option<VipAddr>, dev: &str) -> Result<Vip> {
        if kind == DriverKind::None {
            return Ok(Vip::None);
        }
        let Some(addr) = addr else {
            bail!("--vip-driver {kind:?} needs --vip ADDRESS/PREFIX");
        };
        match kind {
            DriverKind::Linux => Ok(Vip::Linux(linux::Linux::new(addr, dev)?)),
            #[cfg(feature = "aws")]
            DriverKind::Aws => Ok(Vip::Aws(
                aws::Aws::new(addr, dev)
                    .await
                    .context("setting up the aws floating-IP driver")?,
            )),
            #[cfg(not(feature = "aws"))]
            DriverKind::Aws => bail!(
                "--vip-driver aws: this heir-supervisor was built without the `aws` feature; \
                 rebuild with `cargo build --release -p heir-supervisor --features aws`"
            ),
            DriverKind::None => Ok(Vip::None),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Vip::Linux(l) => format!("linux {}", l.addr),
            #[cfg(feature = "aws")]
            Vip::Aws(a) => a.describe(),
            Vip::None => "none".into(),
        }
    }

    pub async fn held(&self) -> Result<bool> {
        match self {
            Vip::Linux(l) => l.held().await,
            #[cfg(feature = "aws")]
            Vip::Aws(a) => a.held().await,
            Vip::None => Ok(false),
        }
    }

    /// Take the address (idempotent). Returns true if something changed.
    pub async fn acquire(&self) -> Result<bool> {
        match self {
            Vip::Linux(l) => l.acquire().await,
            #[cfg(feature = "aws")]
            Vip::Aws(a) => a.acquire().await,
            Vip::None => Ok(false),
        }
        .context("acquiring the floating IP")
    }

    /// Drop the address (idempotent). Returns true if something changed.
    pub async fn release(&self) -> Result<bool> {
        match self {
            Vip::Linux(l) => l.release().await,
            #[cfg(feature = "aws")]
            Vip::Aws(a) => a.release().await,
            Vip::None => Ok(false),
        }
        .context("releasing the floating IP")
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Vip::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let v: VipAddr = "10.0.1.100/24".parse().unwrap();
        assert_eq!(v.ip, Ipv4Addr::new(10, 0, 1, 100));
        assert_eq!(v.prefix, 24);
        assert_eq!(v.to_string(), "10.0.1.100/24");
        assert_eq!("10.0.1.100".parse::<VipAddr>().unwrap().prefix, 32);
        assert!("10.0.1.100/33".parse::<VipAddr>().is_err());
        assert!("nope/24".parse::<VipAddr>().is_err());
    }

    #[test]
    fn networks() {
        let v: VipAddr = "172.30.0.100/24".parse().unwrap();
        assert!(v.same_network(Ipv4Addr::new(172, 30, 0, 11)));
        assert!(!v.same_network(Ipv4Addr::new(172, 31, 0, 11)));
        let all: VipAddr = "1.2.3.4/0".parse().unwrap();
        assert!(all.same_network(Ipv4Addr::new(9, 9, 9, 9)));
    }

    #[tokio::test]
    async fn aws_without_feature_is_a_clear_error() {
        if cfg!(feature = "aws") {
            return;
        }
        let err = Vip::new(DriverKind::Aws, "10.0.0.1/24".parse().ok(), "auto")
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("--features aws"), "{err}");
    }
}
