//! Harness of the `aws` floating-IP driver tests: moto's EC2/IAM/STS API server
//! (`tests/aws/moto.sh` at the repository root), SDK clients pointed at it, the VPC/ENI and
//! IAM set-up, and an IMDSv2 responder ([`imds`]).
#![allow(dead_code)]

pub mod imds;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const REGION: &str = "us-east-1";

pub fn moto_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/aws/moto.sh")
}

/// A moto server of our own on `addr` (HOST:PORT), stopped on drop.
pub struct Moto {
    pub addr: String,
}

impl Moto {
    /// Start a fresh server: one left behind by an aborted run is stopped first (its state,
    /// IAM enforcement included, would leak into this run).
    pub fn up(addr: &str) -> Moto {
        Moto::down(addr);
        let out = Command::new(moto_script())
            .arg("up")
            .env("HF_MOTO_ADDR", addr)
            .output()
            .expect("running tests/aws/moto.sh");
        assert!(
            out.status.success(),
            "moto.sh up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Moto { addr: addr.into() }
    }

    pub fn down(addr: &str) {
        let _ = Command::new(moto_script())
            .arg("down")
            .env("HF_MOTO_ADDR", addr)
            .output();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switch moto's IAM enforcement on (every request must be signed by a known key whose
    /// policies allow the action) or off: `POST /moto-api/reset-auth` with the number of
    /// requests still let through unchecked (moto `core/authorization.py`).
    pub async fn enforce_iam(&self, on: bool) {
        let body = if on { "0" } else { "inf" };
        let (status, text) = http_post(&self.addr, "/moto-api/reset-auth", body).await;
        assert_eq!(status, 200, "moto reset-auth: {text}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        Moto::down(&self.addr);
    }
}

/// A minimal HTTP/1.1 POST (moto's control API); returns the status and the body.
pub async fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let fut = async {
        let mut c = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to moto");
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("moto control API timed out")
}

/// Static credentials (`token` for a role's temporary ones).
pub fn creds(ak: &str, sk: &str, token: Option<&str>) -> Credentials {
    Credentials::new(ak, sk, token.map(str::to_string), None, "heirflow-test")
}

pub fn ec2(url: &str, c: Credentials) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(url)
            .credentials_provider(c)
            .build(),
    )
}

pub fn iam(url: &str, c: Credentials) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(url)
            .credentials_provider(c)
            .build(),
    )
}

pub fn sts(url: &str, c: Credentials) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(url)
            .credentials_provider(c)
            .build(),
    )
}

/// A VPC with one subnet `net`.0/24 and one ENI per primary address in it; returns the ENI ids.
pub async fn enis(ec2: &aws_sdk_ec2::Client, net: &str, hosts: &[u8]) -> Vec<String> {
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("{net}.0/24"))
        .send()
        .await
        .expect("CreateVpc");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block(format!("{net}.0/24"))
        .send()
        .await
        .expect("CreateSubnet");
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for h in hosts {
        let eni = ec2
            .create_network_interface()
            .subnet_id(&subnet_id)
            .private_ip_address(format!("{net}.{h}"))
            .description(format!("heirflow test host {net}.{h}"))
            .send()
            .await
            .expect("CreateNetworkInterface");
        ids.push(
            eni.network_interface()
                .and_then(|n| n.network_interface_id())
                .unwrap()
                .to_string(),
        );
    }
    ids
}

/// Which of `enis` carry `ip` (DescribeNetworkInterfaces).
pub async fn holders(ec2: &aws_sdk_ec2::Client, enis: &[String], ip: &str) -> Vec<String> {
    let out = ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(enis.to_vec()))
        .send()
        .await
        .expect("DescribeNetworkInterfaces");
    out.network_interfaces()
        .iter()
        .filter(|n| {
            n.private_ip_addresses()
                .iter()
                .any(|a| a.private_ip_address() == Some(ip))
        })
        .filter_map(|n| n.network_interface_id().map(str::to_string))
        .collect()
}

/// An IAM role for EC2 instances allowed exactly `actions` (on `*`), as an instance profile's.
pub async fn role(iam: &aws_sdk_iam::Client, name: &str, actions: &[&str]) -> String {
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    });
    let r = iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("CreateRole");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
    });
    iam.put_role_policy()
        .role_name(name)
        .policy_name(format!("{name}-policy"))
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("PutRolePolicy");
    r.role().unwrap().arn().to_string()
}

/// Temporary credentials of role `arn` (what EC2 serves an instance through its profile).
pub async fn assume(sts: &aws_sdk_sts::Client, arn: &str, session: &str) -> imds::RoleCreds {
    let out = sts
        .assume_role()
        .role_arn(arn)
        .role_session_name(session)
        .send()
        .await
        .expect("AssumeRole");
    let c = out.credentials().unwrap();
    imds::RoleCreds {
        role: arn.rsplit('/').next().unwrap().to_string(),
        access_key_id: c.access_key_id().into(),
        secret_access_key: c.secret_access_key().into(),
        token: c.session_token().into(),
    }
}

/// An IAM user allowed everything, with an access key: the test's own view once IAM is
/// enforced.
pub async fn admin(iam: &aws_sdk_iam::Client, name: &str) -> Credentials {
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .expect("CreateUser");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    });
    iam.put_user_policy()
        .user_name(name)
        .policy_name("all")
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("PutUserPolicy");
    let k = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .expect("CreateAccessKey");
    let k = k.access_key().unwrap();
    creds(k.access_key_id(), k.secret_access_key(), None)
}
