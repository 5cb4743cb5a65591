//! EC2 floating IP: a secondary private IP moved between the DB hosts' ENIs.
//!
//! `AssignPrivateIpAddresses(ENI, [VIP], AllowReassignment=true)` moves the address to this
//! instance's ENI even while the old holder still has it (asynchronous, ~1 s; Nitro announces
//! it); the OS must still carry the address, so the Linux driver adds/removes it locally too.
//! Region and ENI come from IMDSv2: the ENI is the one whose MAC is the VIP interface's.
//! IAM: `ec2:AssignPrivateIpAddresses`, `ec2:UnassignPrivateIpAddresses`,
//! `ec2:DescribeNetworkInterfaces` on the DB hosts' instance profile.
//!
//! Errors name what failed and what to check: the metadata path and the metadata endpoint when
//! IMDS does not answer, the EC2 error code and message (not the SDK's debug dump) when EC2
//! refuses, with a hint for a missing permission, rejected credentials or an unknown ENI.
//!
//! Tested against moto's EC2 API server (`tests/vip_aws.rs`: two ENIs, a small IMDSv2 responder,
//! instance-profile credentials of an IAM role with exactly the three actions above, moto's IAM
//! enforcement switched on), through the DB failover of a real PostgreSQL pair; not against EC2
//! itself. moto's `AssignPrivateIpAddresses` ignores `AllowReassignment`: it adds the address to
//! the new ENI without taking it from the old one (EC2 moves it), so there the old holder's ENI
//! loses the address only when its supervisor releases it.

use std::error::Error;

use anyhow::{anyhow, Context, Result};
use aws_config::imds::client::error::ImdsError;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
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

/// An error and its sources, `: `-separated (the SDK's `Display` says only "service error").
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Why a metadata request failed, with what to check.
fn imds_error(e: &ImdsError) -> String {
    match e {
        ImdsError::ErrorResponse(r) => {
            let status = r.response().status().as_u16();
            let what = match status {
                404 => " (not found: no such entry for this instance)",
                401 | 403 => " (IMDSv2 token refused)",
                _ => "",
            };
            format!("HTTP {status}{what}")
        }
        e => {
            let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .map(|u| format!("{u} (AWS_EC2_METADATA_SERVICE_ENDPOINT)"))
                .unwrap_or_else(|_| "http://169.254.169.254".into());
            format!(
                "{}; is the instance metadata service reachable at {endpoint}, with IMDSv2 \
                 enabled (in a container the token needs a hop limit of 2)?",
                chain(e)
            )
        }
    }
}

async fn imds_get(imds: &aws_config::imds::Client, path: &str) -> Result<String> {
    let v = imds
        .get(path)
        .await
        .map_err(|e| anyhow!("instance metadata {path}: {}", imds_error(&e)))?;
    Ok(String::from(v).trim().to_string())
}

/// `Code: message` of an EC2 error, with a hint for the codes a person can act on; the SDK's
/// error chain when EC2 did not answer (timeout, refused connection, no credentials).
fn api_error<E, R>(action: &str, e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
    R: std::fmt::Debug,
{
    let Some(code) = e.code() else {
        return chain(e);
    };
    let hint = match code {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            format!(" (this host's IAM role, its instance profile, must allow ec2:{action})")
        }
        "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" => {
            " (the AWS credentials were rejected)".into()
        }
        c if c.starts_with("InvalidNetworkInterfaceID") => {
            " (the ENI id comes from the instance metadata of the interface's MAC)".into()
        }
        _ => String::new(),
    };
    format!(
        "{code}: {}{hint}",
        e.message().unwrap_or("(no message)").trim()
    )
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
                    "AssignPrivateIpAddresses {} to {} ({}): {}",
                    self.addr.ip,
                    self.eni,
                    self.region,
                    api_error("AssignPrivateIpAddresses", &e)
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
                "UnassignPrivateIpAddresses {} from {} ({}; probably already moved): {}",
                self.addr.ip,
                self.eni,
                self.region,
                api_error("UnassignPrivateIpAddresses", &e)
            ));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &dyn Error)
        }
    }

    #[test]
    fn chains_sources_without_debug_dumps() {
        let e = E(
            "dispatch failure",
            Some(Box::new(E("connection refused", None))),
        );
        assert_eq!(chain(&e), "dispatch failure: connection refused");
    }
}
