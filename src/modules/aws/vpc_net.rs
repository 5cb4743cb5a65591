//! `amazon.aws.ec2_vpc_net`: a VPC, found by its `Name` tag and CIDR block.
//!
//! ```yaml
//! - amazon.aws.ec2_vpc_net:
//!     name: heirflow
//!     cidr_block: 10.0.0.0/16
//!     tags: {heirflow-cluster: prod}
//!   register: vpc          # vpc.vpc.id
//! ```
//! Probe: DescribeVpcs by `tag:Name` (and CIDR when given). Plan: create, retag, delete, or
//! nothing; two VPCs matching is an error (Ansible's `multi_ok` is not supported). Apply:
//! CreateVpc with its tags / CreateTags + DeleteTags / DeleteVpc.

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api_err, de_opt_tags, ec2_apply_tags, ec2_tag_spec, ec2_tags, filter, pending, tag_changes,
    tags_json, with_name, AwsConn, TagChanges, Tags,
};
use crate::modules::args::{de_opt_bool, de_opt_list, de_string, Presence};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    name: String,
    /// Ansible takes a list (the first is the primary block); one block is supported.
    #[serde(default, deserialize_with = "de_opt_list")]
    cidr_block: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_tags")]
    tags: Option<Tags>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_tags: Option<bool>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

impl Params {
    fn cidr(&self) -> Result<Option<&str>, ModuleError> {
        match self.cidr_block.as_deref() {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one)),
            Some(_) => Err(ModuleError::Args(
                "ec2_vpc_net: one cidr_block is supported".into(),
            )),
        }
    }
}

/// A VPC as DescribeVpcs shows it.
#[derive(Debug, Clone)]
pub struct SeenVpc {
    pub id: String,
    pub cidr: String,
    pub tags: Tags,
}

#[derive(Debug)]
pub enum Change {
    Create { cidr: String, tags: Tags },
    Retag { id: String, tags: TagChanges },
    Delete { id: String },
}

pub struct VpcNet;
aws_module!(VpcNet, "amazon.aws", "ec2_vpc_net");

fn vpc_json(id: &str, cidr: &str, tags: &Tags) -> Value {
    json!({"id": id, "vpc_id": id, "cidr_block": cidr, "tags": tags_json(tags), "state": "available"})
}

#[async_trait]
impl NativeModule for VpcNet {
    type Params = Params;
    type Observed = Vec<SeenVpc>;
    type Plan = Change;
    const NAME: &'static str = "ec2_vpc_net";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Vec<SeenVpc>, ModuleError> {
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let mut req = client
            .describe_vpcs()
            .filters(filter("tag:Name", &[p.name.as_str()]));
        if let Some(c) = p.cidr()? {
            req = req.filters(filter("cidr-block-association.cidr-block", &[c]));
        }
        let out = req
            .send()
            .await
            .map_err(|e| api_err(&format!("DescribeVpcs {}", p.name), e))?;
        Ok(out
            .vpcs()
            .iter()
            .map(|v| SeenVpc {
                id: v.vpc_id().unwrap_or_default().to_string(),
                cidr: v.cidr_block().unwrap_or_default().to_string(),
                tags: ec2_tags(v.tags()),
            })
            .collect())
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Vec<SeenVpc>,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        if seen.len() > 1 {
            let ids: Vec<&str> = seen.iter().map(|v| v.id.as_str()).collect();
            return Ok(Planned::nothing(Outcome::failed(format!(
                "{} VPCs are named {} ({}): give cidr_block, or remove the extra ones",
                seen.len(),
                p.name,
                ids.join(", ")
            ))));
        }
        let want = with_name(p.tags.as_ref(), &p.name);
        Ok(match (p.state, seen.first()) {
            (Presence::Present, None) => {
                let cidr = p.cidr()?.ok_or_else(|| {
                    ModuleError::Args(format!(
                        "ec2_vpc_net: cidr_block is required to create VPC {}",
                        p.name
                    ))
                })?;
                let id = pending("vpc", &p.name);
                Planned::change(
                    Change::Create {
                        cidr: cidr.to_string(),
                        tags: want.clone(),
                    },
                    Outcome::changed(true).with("vpc", vpc_json(&id, cidr, &want)),
                )
            }
            (Presence::Present, Some(v)) => {
                let changes = tag_changes(
                    &v.tags,
                    Some(&want),
                    p.purge_tags.unwrap_or(true),
                    &["Name"],
                );
                let after = changes.applied_to(&v.tags);
                let out = Outcome::changed(!changes.is_empty())
                    .with("vpc", vpc_json(&v.id, &v.cidr, &after));
                Planned::when(
                    !changes.is_empty(),
                    Change::Retag {
                        id: v.id.clone(),
                        tags: changes,
                    },
                    out,
                )
            }
            (Presence::Absent, Some(v)) => Planned::change(
                Change::Delete { id: v.id.clone() },
                Outcome::changed(true).with("vpc", json!({"id": v.id})),
            ),
            (Presence::Absent, None) => Planned::nothing(Outcome::ok().with("vpc", json!({}))),
        })
    }

    async fn apply(
        &self,
        p: &Params,
        plan: Change,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        match plan {
            Change::Create { cidr, tags } => {
                let out = client
                    .create_vpc()
                    .cidr_block(&cidr)
                    .tag_specifications(ec2_tag_spec(ResourceType::Vpc, &tags))
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("CreateVpc {} {cidr}", p.name), e))?;
                let id = out
                    .vpc()
                    .and_then(|v| v.vpc_id())
                    .ok_or_else(|| ModuleError::Controller("CreateVpc: no VPC id".into()))?;
                Ok(predicted.with("vpc", vpc_json(id, &cidr, &tags)))
            }
            Change::Retag { id, tags } => {
                ec2_apply_tags(&client, &id, &tags).await?;
                Ok(predicted)
            }
            Change::Delete { id } => {
                client
                    .delete_vpc()
                    .vpc_id(&id)
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("DeleteVpc {id}"), e))?;
                Ok(predicted)
            }
        }
    }
}
