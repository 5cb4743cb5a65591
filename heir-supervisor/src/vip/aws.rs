//! EC2 floating IP: a secondary private IP moved between the DB hosts' ENIs.
//!
//! `AssignPrivateIpAddresses(ENI, [VIP], AllowReassignment=true)` moves the address to this
//! instance's ENI even while the old holder still has it (asynchronous, ~1 s; Nitro announces
//! it); the OS must still carry the address, so the Linux driver adds/removes it locally too.
//! Region and ENI come from IMDSv2: the ENI is the one whose MAC is the VIP interface's.
//! IAM: `ec2:AssignPrivateIpAddresses`, `ec2:UnassignPrivateIpAddresses`,
//! `ec2:DescribeNetworkInterfaces` on the DB hosts' instance profile.

use anyhow::{anyhow, Context, Result};
use aws_config::BehaviorVersion;
use aws_sdk_ec2::Client;

use super::linux::Linux;
use super::VipAddr;

pub struct Aws {
    client: Client,
    eni: String,
    region: String,
    os: Linux,
    addr: VipAddr,
}

async fn imds_get(imds: &aws_config::imds::Client, path: &str) -> Result<String> {
    let v = imds
        .get(path)
        .await
        .map_err(|e| anyhow!("instance metadata {path}: {e}"))?;
    Ok(String::from(v).trim().to_string())
}

impl Aws {
    pub async fn new(addr: VipAddr, dev: &str) -> Result<Aws> {
        let os = Linux::new(addr, dev)?;
        let imds = aws_config::imds::Client::builder().build();
        let region = imds_get(&imds, "/latest/meta-data/placement/region").await?;
        let mac = match dev {
            "auto" => imds_get(&imds, "/latest/meta-data/mac").await?,
            dev => std::fs::read_to_string(format!("/sys/class/net/{dev}/address"))
                .with_context(|| format!("reading the MAC address of {dev}"))?
                .trim()
                .to_string(),
        };
        let eni = imds_get(
            &imds,
            &format!("/latest/meta-data/network/interfaces/macs/{mac}/interface-id"),
        )
        .await?;
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.clone()))
            .load()
            .await;
        Ok(Aws {
            client: Client::new(&conf),
            eni,
            region,
            os,
            addr,
        })
    }

    pub fn describe(&self) -> String {
        format!("aws {} on {} ({})", self.addr, self.eni, self.region)
    }

    pub async fn held(&self) -> Result<bool> {
        self.os.held().await
    }

    pub async fn acquire(&self) -> Result<bool> {
        self.client
            .assign_private_ip_addresses()
            .network_interface_id(&self.eni)
            .private_ip_addresses(self.addr.ip.to_string())
            .allow_reassignment(true)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "AssignPrivateIpAddresses {} to {}: {e:?}",
                    self.addr.ip,
                    self.eni
                )
            })?;
        self.os.acquire().await?;
        Ok(true)
    }

    pub async fn release(&self) -> Result<bool> {
        let changed = self.os.release().await?;
        // Not ours any more (already reassigned) is fine: AWS answers with an error then.
        if let Err(e) = self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(&self.eni)
            .private_ip_addresses(self.addr.ip.to_string())
            .send()
            .await
        {
            crate::log::warn(&format!(
                "UnassignPrivateIpAddresses {} from {} (probably already moved): {e:?}",
                self.addr.ip, self.eni
            ));
        }
        Ok(changed)
    }
}
