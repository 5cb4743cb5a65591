//! `amazon.aws.ec2_eni`: a network interface's secondary private addresses.
//!
//! ```yaml
//! - amazon.aws.ec2_eni:                # the floating IP starts on db1's primary interface
//!     eni_id: "{{ db1.instances[0].network_interfaces[0].network_interface_id }}"
//!     secondary_private_ip_addresses: [10.0.1.100]
//!     allow_reassignment: true
//!   register: eni          # eni.interface.id
//! ```
//! The interface is named by `eni_id`, or by `instance_id` + `device_index` (an interface an
//! instance was launched with), or by `subnet_id` + `private_ip_address`, which also creates it
//! when missing. Plan: the secondary addresses to assign, and with
//! `purge_secondary_private_ip_addresses` those to unassign; `state: absent` deletes an
//! interface this module could have created (by `eni_id` or subnet + address).

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{api_err, err_code, filter, is_pending, pending, AwsConn};
use crate::modules::args::{de_opt_bool, de_opt_list, de_opt_string, de_opt_u64, Presence};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    eni_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    instance_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    device_index: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_string")]
    subnet_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    private_ip_address: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    secondary_private_ip_addresses: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_secondary_private_ip_addresses: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    allow_reassignment: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "de_opt_list")]
    security_groups: Option<Vec<String>>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

/// How the task names its interface.
enum Key<'a> {
    Id(&'a str),
    Attached(&'a str, u64),
    Address(&'a str, &'a str),
}

impl Params {
    fn key(&self) -> Result<Key<'_>, ModuleError> {
        if let Some(id) = &self.eni_id {
            return Ok(Key::Id(id));
        }
        if let Some(i) = &self.instance_id {
            return Ok(Key::Attached(i, self.device_index.unwrap_or(0)));
        }
        match (&self.subnet_id, &self.private_ip_address) {
            (Some(s), Some(a)) => Ok(Key::Address(s, a)),
            _ => Err(ModuleError::Args(
                "ec2_eni: name the interface by eni_id, instance_id (+ device_index) or \
                 subnet_id + private_ip_address"
                    .into(),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SeenEni {
    pub id: String,
    pub primary: String,
    pub secondary: BTreeSet<String>,
    pub json: Value,
}

#[derive(Debug)]
pub enum Change {
    Create {
        secondary: Vec<String>,
    },
    Update {
        id: String,
        assign: Vec<String>,
        unassign: Vec<String>,
    },
    Delete {
        id: String,
    },
}

pub struct Eni;
aws_module!(Eni, "amazon.aws", "ec2_eni");

fn eni_json(n: &aws_sdk_ec2::types::NetworkInterface) -> Value {
    json!({
        "id": n.network_interface_id(),
        "mac_address": n.mac_address(),
        "private_ip_address": n.private_ip_address(),
        "subnet_id": n.subnet_id(),
        "vpc_id": n.vpc_id(),
        "description": n.description(),
        "attachment": n.attachment().map(|a| json!({
            "instance_id": a.instance_id(), "device_index": a.device_index()})),
        "private_ip_addresses": n.private_ip_addresses().iter().map(|a| json!({
            "private_ip_address": a.private_ip_address(), "primary_address": a.primary()}))
            .collect::<Vec<_>>(),
    })
}

fn seen_eni(n: &aws_sdk_ec2::types::NetworkInterface) -> SeenEni {
    SeenEni {
        id: n.network_interface_id().unwrap_or_default().to_string(),
        primary: n.private_ip_address().unwrap_or_default().to_string(),
        secondary: n
            .private_ip_addresses()
            .iter()
            .filter(|a| a.primary() != Some(true))
            .filter_map(|a| a.private_ip_address().map(str::to_string))
            .collect(),
        json: eni_json(n),
    }
}

#[async_trait]
impl NativeModule for Eni {
    type Params = Params;
    type Observed = Option<SeenEni>;
    type Plan = Change;
    const NAME: &'static str = "ec2_eni";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Option<SeenEni>, ModuleError> {
        let key = p.key()?;
        let parent = match &key {
            Key::Id(id) => id,
            Key::Attached(i, _) => i,
            Key::Address(s, _) => s,
        };
        if is_pending(parent) {
            return Ok(None);
        }
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let req = client.describe_network_interfaces();
        // The device index is matched here rather than by the `attachment.device-index` filter,
        // which moto does not implement.
        let (req, index) = match key {
            Key::Id(id) => (req.network_interface_ids(id), None),
            Key::Attached(i, d) => (
                req.filters(filter("attachment.instance-id", &[i])),
                Some(d as i32),
            ),
            Key::Address(s, a) => (
                req.filters(filter("subnet-id", &[s]))
                    .filters(filter("private-ip-address", &[a])),
                None,
            ),
        };
        match req.send().await {
            Ok(out) => Ok(out
                .network_interfaces()
                .iter()
                .find(|n| index.is_none() || n.attachment().and_then(|a| a.device_index()) == index)
                .map(seen_eni)),
            Err(e) if err_code(&e) == Some("InvalidNetworkInterfaceID.NotFound") => Ok(None),
            Err(e) => Err(api_err("DescribeNetworkInterfaces", e)),
        }
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Option<SeenEni>,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let want: BTreeSet<String> = p
            .secondary_private_ip_addresses
            .iter()
            .flatten()
            .cloned()
            .collect();
        let key = p.key()?;
        Ok(match (p.state, seen) {
            (Presence::Present, None) => match key {
                Key::Address(s, a) => {
                    let id = pending("eni", a);
                    Planned::change(
                        Change::Create {
                            secondary: want.iter().cloned().collect(),
                        },
                        Outcome::changed(true).with(
                            "interface",
                            json!({"id": id, "subnet_id": s, "private_ip_address": a}),
                        ),
                    )
                }
                // The interface or its instance is itself only predicted (check mode on a
                // fresh account): so are the addresses it would get.
                Key::Id(id) if is_pending(id) => Planned::change(
                    Change::Update {
                        id: id.to_string(),
                        assign: want.iter().cloned().collect(),
                        unassign: vec![],
                    },
                    Outcome::changed(true).with("interface", json!({"id": id})),
                ),
                Key::Attached(i, d) if is_pending(i) => {
                    let id = pending("eni", i);
                    Planned::change(
                        Change::Update {
                            id: id.clone(),
                            assign: want.iter().cloned().collect(),
                            unassign: vec![],
                        },
                        Outcome::changed(true).with(
                            "interface",
                            json!({"id": id, "attachment": {"instance_id": i, "device_index": d}}),
                        ),
                    )
                }
                Key::Id(id) => {
                    return Err(ModuleError::Args(format!("ec2_eni: no interface {id}")))
                }
                Key::Attached(i, d) => {
                    return Err(ModuleError::Args(format!(
                        "ec2_eni: instance {i} has no interface at device_index {d}"
                    )))
                }
            },
            (Presence::Present, Some(n)) => {
                let assign: Vec<String> = want
                    .iter()
                    .filter(|a| !n.secondary.contains(*a) && **a != n.primary)
                    .cloned()
                    .collect();
                let unassign: Vec<String> =
                    if p.purge_secondary_private_ip_addresses.unwrap_or(false) {
                        n.secondary.difference(&want).cloned().collect()
                    } else {
                        vec![]
                    };
                let changed = !assign.is_empty() || !unassign.is_empty();
                let mut after = n.json.clone();
                if changed {
                    let mut addrs =
                        vec![json!({"private_ip_address": n.primary, "primary_address": true})];
                    addrs.extend(
                        n.secondary
                            .iter()
                            .filter(|a| !unassign.contains(a))
                            .chain(assign.iter())
                            .map(|a| json!({"private_ip_address": a, "primary_address": false})),
                    );
                    after["private_ip_addresses"] = Value::Array(addrs);
                }
                Planned::when(
                    changed,
                    Change::Update {
                        id: n.id.clone(),
                        assign,
                        unassign,
                    },
                    Outcome::changed(changed).with("interface", after),
                )
            }
            (Presence::Absent, Some(n)) => {
                if matches!(key, Key::Attached(..)) {
                    return Err(ModuleError::Args(
                        "ec2_eni: state=absent deletes an interface named by eni_id or \
                         subnet_id + private_ip_address, not an instance's own"
                            .into(),
                    ));
                }
                Planned::change(
                    Change::Delete { id: n.id.clone() },
                    Outcome::changed(true).with("interface", json!({"id": n.id})),
                )
            }
            (Presence::Absent, None) => Planned::nothing(Outcome::ok()),
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
        let id = match plan {
            Change::Create { secondary } => {
                let out = client
                    .create_network_interface()
                    .set_subnet_id(p.subnet_id.clone())
                    .set_private_ip_address(p.private_ip_address.clone())
                    .set_description(p.description.clone())
                    .set_groups(p.security_groups.clone())
                    .send()
                    .await
                    .map_err(|e| api_err("CreateNetworkInterface", e))?;
                let id = out
                    .network_interface()
                    .and_then(|n| n.network_interface_id())
                    .unwrap_or_default()
                    .to_string();
                self.assign(&client, p, &id, secondary).await?;
                id
            }
            Change::Update {
                id,
                assign,
                unassign,
            } => {
                self.assign(&client, p, &id, assign).await?;
                if !unassign.is_empty() {
                    client
                        .unassign_private_ip_addresses()
                        .network_interface_id(&id)
                        .set_private_ip_addresses(Some(unassign))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("UnassignPrivateIpAddresses {id}"), e))?;
                }
                id
            }
            Change::Delete { id } => {
                client
                    .delete_network_interface()
                    .network_interface_id(&id)
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("DeleteNetworkInterface {id}"), e))?;
                return Ok(predicted);
            }
        };
        let out = client
            .describe_network_interfaces()
            .network_interface_ids(&id)
            .send()
            .await
            .map_err(|e| api_err(&format!("DescribeNetworkInterfaces {id}"), e))?;
        Ok(match out.network_interfaces().first() {
            Some(n) => predicted.with("interface", eni_json(n)),
            None => predicted,
        })
    }
}

impl Eni {
    async fn assign(
        &self,
        client: &aws_sdk_ec2::Client,
        p: &Params,
        id: &str,
        addrs: Vec<String>,
    ) -> Result<(), ModuleError> {
        if addrs.is_empty() {
            return Ok(());
        }
        client
            .assign_private_ip_addresses()
            .network_interface_id(id)
            .set_private_ip_addresses(Some(addrs.clone()))
            .allow_reassignment(p.allow_reassignment.unwrap_or(false))
            .send()
            .await
            .map_err(|e| {
                api_err(
                    &format!("AssignPrivateIpAddresses {} to {id}", addrs.join(", ")),
                    e,
                )
            })?;
        Ok(())
    }
}
