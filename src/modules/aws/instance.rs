//! `amazon.aws.ec2_instance`: one EC2 instance, found by its `Name` tag.
//!
//! ```yaml
//! - amazon.aws.ec2_instance:
//!     name: db1
//!     image_id: ami-0123
//!     instance_type: t3.large
//!     vpc_subnet_id: "{{ subnet.subnet.id }}"
//!     security_groups: ["{{ sg.group_id }}"]
//!     iam_instance_profile: heirflow-db
//!     tags: {heirflow-cluster: prod}
//!   register: db1          # db1.instances[0].private_ip_address, .network_interfaces[0].id
//! ```
//! Probe: DescribeInstances by `tag:Name` (plus `filters`) among instances not terminated. Plan:
//! launch one, retag, terminate, or nothing. Apply: RunInstances with its tags, then (with `wait`,
//! the default) DescribeInstances until it runs; TerminateInstances, and with `wait` until gone.
//! Security groups are given by id; `count`/`exact_count` are not supported (one name, one
//! instance, as the topology wants).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::types::{IamInstanceProfileSpecification, InstanceType, ResourceType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api_err, de_opt_tags, ec2_apply_tags, ec2_tag_spec, ec2_tags, filter, pending, tag_changes,
    tags_json, with_name, AwsConn, TagChanges, Tags,
};
use crate::modules::args::{de_opt_bool, de_opt_list, de_opt_string, de_opt_u64};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Running,
    Started,
    Absent,
    Terminated,
}

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    image_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    instance_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    vpc_subnet_id: Option<String>,
    #[serde(default, alias = "security_group", deserialize_with = "de_opt_list")]
    security_groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_string")]
    key_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    iam_instance_profile: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    user_data: Option<String>,
    /// Extra DescribeInstances filters (`{"tag:heirflow-cluster": prod}`).
    #[serde(default)]
    filters: Option<BTreeMap<String, Value>>,
    #[serde(default, deserialize_with = "de_opt_tags")]
    tags: Option<Tags>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_tags: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    wait: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    wait_timeout: Option<u64>,
    #[serde(default)]
    state: State,
    #[serde(flatten)]
    aws: AwsConn,
}

impl Params {
    fn present(&self) -> bool {
        !matches!(self.state, State::Absent | State::Terminated)
    }
}

/// An instance as DescribeInstances shows it, already in the shape results report.
#[derive(Debug, Clone)]
pub struct SeenInstance {
    pub id: String,
    pub tags: Tags,
    pub json: Value,
}

fn instance_json(i: &aws_sdk_ec2::types::Instance) -> Value {
    let enis: Vec<Value> = i
        .network_interfaces()
        .iter()
        .map(|n| {
            json!({
                "id": n.network_interface_id(),
                "network_interface_id": n.network_interface_id(),
                "mac_address": n.mac_address(),
                "private_ip_address": n.private_ip_address(),
                "attachment": {"device_index": n.attachment().and_then(|a| a.device_index())},
                "private_ip_addresses": n.private_ip_addresses().iter().map(|a| json!({
                    "private_ip_address": a.private_ip_address(),
                    "primary": a.primary(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "instance_id": i.instance_id(),
        "instance_type": i.instance_type().map(|t| t.as_str()),
        "image_id": i.image_id(),
        "private_ip_address": i.private_ip_address(),
        "public_ip_address": i.public_ip_address(),
        "subnet_id": i.subnet_id(),
        "vpc_id": i.vpc_id(),
        "state": {"name": i.state().and_then(|s| s.name()).map(|n| n.as_str())},
        "tags": tags_json(&ec2_tags(i.tags())),
        "network_interfaces": enis,
        "iam_instance_profile": i.iam_instance_profile().and_then(|p| p.arn()),
    })
}

#[derive(Debug)]
pub enum Change {
    Launch { tags: Tags },
    Retag { ids: Vec<String>, tags: TagChanges },
    Terminate { ids: Vec<String> },
}

pub struct Instance;
aws_module!(Instance, "amazon.aws", "ec2_instance");

impl Instance {
    /// Instances matching the task (not terminated).
    async fn find(
        client: &aws_sdk_ec2::Client,
        p: &Params,
        ids: Option<&[String]>,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>, ModuleError> {
        let mut req = client.describe_instances().filters(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped", "shutting-down"],
        ));
        if let Some(ids) = ids {
            req = req.set_instance_ids(Some(ids.to_vec()));
        } else {
            if let Some(n) = &p.name {
                req = req.filters(filter("tag:Name", &[n.as_str()]));
            }
            for (k, v) in p.filters.iter().flatten() {
                let vals: Vec<String> = match v {
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    other => vec![other.to_string()],
                };
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                req = req.filters(filter(k, &vals));
            }
        }
        let out = req
            .send()
            .await
            .map_err(|e| api_err("DescribeInstances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect())
    }

    /// Polls until every instance is in `state` (or gone, for `terminated`).
    async fn wait_for(
        client: &aws_sdk_ec2::Client,
        p: &Params,
        ids: &[String],
        state: &str,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>, ModuleError> {
        let deadline = Instant::now() + Duration::from_secs(p.wait_timeout.unwrap_or(600));
        loop {
            let out = client
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await
                .map_err(|e| api_err("DescribeInstances", e))?;
            let all: Vec<_> = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned())
                .collect();
            let done = all
                .iter()
                .all(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some(state));
            if done {
                return Ok(all);
            }
            if Instant::now() > deadline {
                return Err(ModuleError::Controller(format!(
                    "instances {} not {state} after {} s",
                    ids.join(", "),
                    p.wait_timeout.unwrap_or(600)
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[async_trait]
impl NativeModule for Instance {
    type Params = Params;
    type Observed = Vec<SeenInstance>;
    type Plan = Change;
    const NAME: &'static str = "ec2_instance";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Vec<SeenInstance>, ModuleError> {
        if p.name.is_none() && p.filters.as_ref().is_none_or(|f| f.is_empty()) {
            return Err(ModuleError::Args(
                "ec2_instance: give name or filters (which instances this task means)".into(),
            ));
        }
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        Ok(Self::find(&client, p, None)
            .await?
            .iter()
            .map(|i| SeenInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                tags: ec2_tags(i.tags()),
                json: instance_json(i),
            })
            .collect())
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Vec<SeenInstance>,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let ids: Vec<String> = seen.iter().map(|i| i.id.clone()).collect();
        let report = |changed: bool, instances: Vec<Value>| {
            let ids: Vec<Value> = instances.iter().map(|i| i["instance_id"].clone()).collect();
            Outcome::changed(changed)
                .with("instances", instances)
                .with("instance_ids", ids)
        };
        if !p.present() {
            return Ok(if seen.is_empty() {
                Planned::nothing(report(false, vec![]))
            } else {
                Planned::change(
                    Change::Terminate { ids },
                    report(true, seen.iter().map(|i| i.json.clone()).collect()),
                )
            });
        }
        let Some(name) = &p.name else {
            return Err(ModuleError::Args(
                "ec2_instance: name is required to launch an instance".into(),
            ));
        };
        let want = with_name(p.tags.as_ref(), name);
        if seen.is_empty() {
            for (field, v) in [
                ("image_id", &p.image_id),
                ("vpc_subnet_id", &p.vpc_subnet_id),
            ] {
                if v.is_none() {
                    return Err(ModuleError::Args(format!(
                        "ec2_instance: {field} is required to launch {name}"
                    )));
                }
            }
            let id = pending("instance", name);
            let eni = pending("eni", name);
            let predicted = json!({
                "instance_id": id, "private_ip_address": null, "subnet_id": p.vpc_subnet_id,
                "tags": tags_json(&want), "state": {"name": "pending"},
                "network_interfaces": [{"id": eni, "network_interface_id": eni,
                                        "attachment": {"device_index": 0}}],
            });
            return Ok(Planned::change(
                Change::Launch { tags: want },
                report(true, vec![predicted]),
            ));
        }
        let purge = p.purge_tags.unwrap_or(true);
        let changes: Vec<TagChanges> = seen
            .iter()
            .map(|i| tag_changes(&i.tags, Some(&want), purge, &["Name"]))
            .collect();
        let changed = changes.iter().any(|c| !c.is_empty());
        // One instance per name: the changes of the first stand for all (they share tags).
        let tags = changes
            .into_iter()
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        Ok(Planned::when(
            changed,
            Change::Retag { ids, tags },
            report(changed, seen.iter().map(|i| i.json.clone()).collect()),
        ))
    }

    async fn apply(
        &self,
        p: &Params,
        plan: Change,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let wait = p.wait.unwrap_or(true);
        let report = |instances: &[aws_sdk_ec2::types::Instance]| {
            let list: Vec<Value> = instances.iter().map(instance_json).collect();
            let ids: Vec<Value> = list.iter().map(|i| i["instance_id"].clone()).collect();
            predicted
                .clone()
                .with("instances", list)
                .with("instance_ids", ids)
        };
        match plan {
            Change::Launch { tags } => {
                let name = p.name.as_deref().unwrap_or_default();
                let mut req = client
                    .run_instances()
                    .min_count(1)
                    .max_count(1)
                    .set_image_id(p.image_id.clone())
                    .set_subnet_id(p.vpc_subnet_id.clone())
                    .set_security_group_ids(p.security_groups.clone())
                    .set_key_name(p.key_name.clone())
                    .tag_specifications(ec2_tag_spec(ResourceType::Instance, &tags));
                if let Some(t) = &p.instance_type {
                    req = req.instance_type(InstanceType::from(t.as_str()));
                }
                if let Some(prof) = &p.iam_instance_profile {
                    let spec = IamInstanceProfileSpecification::builder();
                    let spec = if prof.starts_with("arn:") {
                        spec.arn(prof)
                    } else {
                        spec.name(prof)
                    };
                    req = req.iam_instance_profile(spec.build());
                }
                if let Some(u) = &p.user_data {
                    use base64::Engine;
                    req = req.user_data(base64::engine::general_purpose::STANDARD.encode(u));
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("RunInstances {name}"), e))?;
                let ids: Vec<String> = out
                    .instances()
                    .iter()
                    .filter_map(|i| i.instance_id().map(str::to_string))
                    .collect();
                let now = if wait {
                    Self::wait_for(&client, p, &ids, "running").await?
                } else {
                    Self::find(&client, p, Some(&ids)).await?
                };
                Ok(report(&now))
            }
            Change::Retag { ids, tags } => {
                for id in &ids {
                    ec2_apply_tags(&client, id, &tags).await?;
                }
                Ok(report(&Self::find(&client, p, Some(&ids)).await?))
            }
            Change::Terminate { ids } => {
                client
                    .terminate_instances()
                    .set_instance_ids(Some(ids.clone()))
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("TerminateInstances {}", ids.join(", ")), e))?;
                if wait {
                    Self::wait_for(&client, p, &ids, "terminated").await?;
                }
                Ok(predicted)
            }
        }
    }
}
