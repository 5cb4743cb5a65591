//! `amazon.aws.ec2_vpc_subnet`: a subnet of a VPC, found by VPC and CIDR.
//!
//! ```yaml
//! - amazon.aws.ec2_vpc_subnet:
//!     vpc_id: "{{ vpc.vpc.id }}"
//!     cidr: 10.0.1.0/24
//!     az: eu-west-1a
//!     tags: {Name: heirflow}
//!   register: subnet       # subnet.subnet.id
//! ```
//! Probe: DescribeSubnets by vpc-id and cidr-block (nothing when the VPC is itself only pending
//! in check mode). Plan: create, retag, set `map_public`, delete, or nothing. Apply: CreateSubnet
//! with its tags, ModifySubnetAttribute, CreateTags/DeleteTags, DeleteSubnet.

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api_err, de_opt_tags, ec2_apply_tags, ec2_tag_spec, ec2_tags, filter, is_pending, pending,
    tag_changes, tags_json, AwsConn, TagChanges, Tags,
};
use crate::modules::args::{de_opt_bool, de_opt_string, de_string, Presence};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    vpc_id: String,
    #[serde(deserialize_with = "de_string")]
    cidr: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    az: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    map_public: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_tags")]
    tags: Option<Tags>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_tags: Option<bool>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

#[derive(Debug, Clone)]
pub struct SeenSubnet {
    pub id: String,
    pub az: String,
    pub map_public: bool,
    pub tags: Tags,
}

#[derive(Debug)]
pub enum Change {
    Create,
    Update {
        id: String,
        tags: TagChanges,
        map_public: Option<bool>,
    },
    Delete {
        id: String,
    },
}

pub struct VpcSubnet;
aws_module!(VpcSubnet, "amazon.aws", "ec2_vpc_subnet");

fn subnet_json(p: &Params, id: &str, az: &str, tags: &Tags) -> Value {
    json!({"id": id, "subnet_id": id, "vpc_id": p.vpc_id, "cidr_block": p.cidr,
           "availability_zone": az, "tags": tags_json(tags), "state": "available"})
}

#[async_trait]
impl NativeModule for VpcSubnet {
    type Params = Params;
    type Observed = Option<SeenSubnet>;
    type Plan = Change;
    const NAME: &'static str = "ec2_vpc_subnet";

    async fn probe(
        &self,
        p: &Params,
        ctx: &TaskCtx<'_>,
    ) -> Result<Option<SeenSubnet>, ModuleError> {
        if is_pending(&p.vpc_id) {
            return Ok(None);
        }
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let out = client
            .describe_subnets()
            .filters(filter("vpc-id", &[p.vpc_id.as_str()]))
            .filters(filter("cidr-block", &[p.cidr.as_str()]))
            .send()
            .await
            .map_err(|e| api_err(&format!("DescribeSubnets {} {}", p.vpc_id, p.cidr), e))?;
        Ok(out.subnets().first().map(|s| SeenSubnet {
            id: s.subnet_id().unwrap_or_default().to_string(),
            az: s.availability_zone().unwrap_or_default().to_string(),
            map_public: s.map_public_ip_on_launch().unwrap_or(false),
            tags: ec2_tags(s.tags()),
        }))
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Option<SeenSubnet>,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let want_public = p.map_public.unwrap_or(false);
        Ok(match (p.state, seen) {
            (Presence::Present, None) => {
                let tags = p.tags.clone().unwrap_or_default();
                let id = pending("subnet", &p.cidr);
                let az = p.az.clone().unwrap_or_default();
                Planned::change(
                    Change::Create,
                    Outcome::changed(true).with("subnet", subnet_json(p, &id, &az, &tags)),
                )
            }
            (Presence::Present, Some(s)) => {
                let tags = tag_changes(
                    &s.tags,
                    p.tags.as_ref(),
                    p.purge_tags.unwrap_or(true),
                    &["Name"],
                );
                let map_public = (s.map_public != want_public).then_some(want_public);
                let changed = !tags.is_empty() || map_public.is_some();
                let after = tags.applied_to(&s.tags);
                let out =
                    Outcome::changed(changed).with("subnet", subnet_json(p, &s.id, &s.az, &after));
                Planned::when(
                    changed,
                    Change::Update {
                        id: s.id.clone(),
                        tags,
                        map_public,
                    },
                    out,
                )
            }
            (Presence::Absent, Some(s)) => Planned::change(
                Change::Delete { id: s.id.clone() },
                Outcome::changed(true).with("subnet", json!({"id": s.id})),
            ),
            (Presence::Absent, None) => Planned::nothing(Outcome::ok().with("subnet", json!({}))),
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
        let set_public = |id: String, on: bool| {
            let client = client.clone();
            async move {
                client
                    .modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(AttributeBooleanValue::builder().value(on).build())
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("ModifySubnetAttribute {id}"), e))
                    .map(|_| ())
            }
        };
        match plan {
            Change::Create => {
                let tags = p.tags.clone().unwrap_or_default();
                let mut req = client
                    .create_subnet()
                    .vpc_id(&p.vpc_id)
                    .cidr_block(&p.cidr)
                    .set_availability_zone(p.az.clone());
                if !tags.is_empty() {
                    req = req.tag_specifications(ec2_tag_spec(ResourceType::Subnet, &tags));
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("CreateSubnet {} {}", p.vpc_id, p.cidr), e))?;
                let s = out
                    .subnet()
                    .ok_or_else(|| ModuleError::Controller("CreateSubnet: no subnet".into()))?;
                let id = s.subnet_id().unwrap_or_default().to_string();
                let az = s.availability_zone().unwrap_or_default().to_string();
                if p.map_public.unwrap_or(false) {
                    set_public(id.clone(), true).await?;
                }
                Ok(predicted.with("subnet", subnet_json(p, &id, &az, &tags)))
            }
            Change::Update {
                id,
                tags,
                map_public,
            } => {
                ec2_apply_tags(&client, &id, &tags).await?;
                if let Some(on) = map_public {
                    set_public(id, on).await?;
                }
                Ok(predicted)
            }
            Change::Delete { id } => {
                client
                    .delete_subnet()
                    .subnet_id(&id)
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("DeleteSubnet {id}"), e))?;
                Ok(predicted)
            }
        }
    }
}
