//! `amazon.aws.ec2_security_group`: a VPC security group and its ingress rules.
//!
//! ```yaml
//! - amazon.aws.ec2_security_group:
//!     name: heirflow
//!     description: Heirflow cluster
//!     vpc_id: "{{ vpc.vpc.id }}"
//!     rules:
//!       - {proto: all, group_name: heirflow}            # the group's own members
//!       - {proto: tcp, ports: [22, 8080], cidr_ip: 203.0.113.0/24}
//!   register: sg           # sg.group_id
//! ```
//! Rules are compared one (protocol, port range, source) at a time, so a rule listing two ports
//! and two CIDRs is four permissions. With `purge_rules` (default true) ingress permissions not
//! listed are revoked. Egress rules are left as AWS makes them (everything allowed).
//! A `group_name` source must be the group itself; other groups are named by `group_id`.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, UserIdGroupPair};
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
    name: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    vpc_id: Option<String>,
    #[serde(default)]
    rules: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_rules: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_tags")]
    tags: Option<Tags>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_tags: Option<bool>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

/// Where traffic may come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Cidr(String),
    Group(String),
    /// The group itself, before it has an id.
    Itself,
}

/// One ingress permission: protocol (`-1` for all), port range, source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Perm {
    pub proto: String,
    pub from: i32,
    pub to: i32,
    pub src: Source,
}

fn port_range(v: &Value) -> Result<(i32, i32), String> {
    let num = |s: &str| {
        s.trim()
            .parse::<i32>()
            .map_err(|_| format!("bad port {s:?}"))
    };
    match v {
        Value::Number(n) => {
            let p = n.as_i64().ok_or(format!("bad port {n}"))? as i32;
            Ok((p, p))
        }
        Value::String(s) => match s.split_once('-') {
            Some((a, b)) => Ok((num(a)?, num(b)?)),
            None => num(s).map(|p| (p, p)),
        },
        other => Err(format!("bad port {other}")),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Pure: Ansible's rule list as permissions.
pub fn wanted_perms(group: &str, rules: &[Value]) -> Result<BTreeSet<Perm>, String> {
    let mut out = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = |m: String| format!("rules[{i}]: {m}");
        let obj = r
            .as_object()
            .ok_or_else(|| at(format!("expected a mapping, got {r}")))?;
        for k in obj.keys() {
            if ![
                "proto",
                "ip_protocol",
                "ports",
                "from_port",
                "to_port",
                "cidr_ip",
                "group_name",
                "group_id",
                "rule_desc",
            ]
            .contains(&k.as_str())
            {
                return Err(at(format!("unsupported key {k}")));
            }
        }
        let proto = obj
            .get("proto")
            .or(obj.get("ip_protocol"))
            .map(|v| match v {
                Value::String(s) => s.to_ascii_lowercase(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "tcp".into());
        let proto = match proto.as_str() {
            "all" | "-1" => "-1".to_string(),
            "6" => "tcp".into(),
            "17" => "udp".into(),
            "1" => "icmp".into(),
            p => p.to_string(),
        };
        let ranges: Vec<(i32, i32)> = if proto == "-1" {
            vec![(-1, -1)]
        } else if let Some(ports) = obj.get("ports") {
            let list = match ports {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            list.iter()
                .map(port_range)
                .collect::<Result<_, _>>()
                .map_err(at)?
        } else {
            let get = |k: &str| obj.get(k).map(port_range).transpose().map_err(at);
            match (get("from_port")?, get("to_port")?) {
                (Some((f, _)), Some((t, _))) => vec![(f, t)],
                _ if proto == "icmp" => vec![(-1, -1)],
                _ => {
                    return Err(at(format!(
                        "proto {proto} needs ports or from_port/to_port"
                    )))
                }
            }
        };
        let mut sources: Vec<Source> = strings(obj.get("cidr_ip"))
            .into_iter()
            .map(Source::Cidr)
            .collect();
        for g in strings(obj.get("group_name")) {
            if g != group {
                return Err(at(format!(
                    "group_name {g}: only the group itself ({group}) is supported; name other groups by group_id"
                )));
            }
            sources.push(Source::Itself);
        }
        sources.extend(strings(obj.get("group_id")).into_iter().map(Source::Group));
        if sources.is_empty() {
            return Err(at("needs cidr_ip, group_name or group_id".into()));
        }
        for (from, to) in &ranges {
            for src in &sources {
                out.insert(Perm {
                    proto: proto.clone(),
                    from: *from,
                    to: *to,
                    src: src.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The group's permissions as EC2 reports them, one per source.
fn seen_perms(perms: &[IpPermission]) -> BTreeSet<Perm> {
    let mut out = BTreeSet::new();
    for p in perms {
        let proto = p.ip_protocol().unwrap_or("-1").to_string();
        let (from, to) = if proto == "-1" {
            (-1, -1)
        } else {
            (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
        };
        let mk = |src| Perm {
            proto: proto.clone(),
            from,
            to,
            src,
        };
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                out.insert(mk(Source::Cidr(c.to_string())));
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.insert(mk(Source::Group(id.to_string())));
            }
        }
    }
    out
}

fn to_ip_permission(p: &Perm, own_id: &str) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol(&p.proto);
    if p.proto != "-1" {
        b = b.from_port(p.from).to_port(p.to);
    }
    match &p.src {
        Source::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Source::Group(g) => b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
        Source::Itself => {
            b.user_id_group_pairs(UserIdGroupPair::builder().group_id(own_id).build())
        }
    }
    .build()
}

#[derive(Debug, Clone)]
pub struct SeenGroup {
    pub id: String,
    pub vpc_id: String,
    pub perms: BTreeSet<Perm>,
    pub tags: Tags,
}

#[derive(Debug)]
pub enum Change {
    Create {
        description: String,
        perms: BTreeSet<Perm>,
    },
    Update {
        id: String,
        grant: Vec<Perm>,
        revoke: Vec<Perm>,
        tags: TagChanges,
    },
    Delete {
        id: String,
    },
}

pub struct SecurityGroup;
aws_module!(SecurityGroup, "amazon.aws", "ec2_security_group");

fn group_json(p: &Params, id: &str, vpc_id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("group_id", json!(id)),
        ("group_name", json!(p.name)),
        ("vpc_id", json!(vpc_id)),
        ("description", json!(p.description)),
        ("tags", tags_json(&p.tags.clone().unwrap_or_default())),
    ]
}

fn outcome(changed: bool, fields: Vec<(&'static str, Value)>) -> Outcome {
    fields
        .into_iter()
        .fold(Outcome::changed(changed), |o, (k, v)| o.with(k, v))
}

#[async_trait]
impl NativeModule for SecurityGroup {
    type Params = Params;
    type Observed = Option<SeenGroup>;
    type Plan = Change;
    const NAME: &'static str = "ec2_security_group";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Option<SeenGroup>, ModuleError> {
        if p.vpc_id.as_deref().is_some_and(is_pending) {
            return Ok(None);
        }
        let client = aws_sdk_ec2::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let mut req = client
            .describe_security_groups()
            .filters(filter("group-name", &[p.name.as_str()]));
        if let Some(v) = &p.vpc_id {
            req = req.filters(filter("vpc-id", &[v.as_str()]));
        }
        let out = req
            .send()
            .await
            .map_err(|e| api_err(&format!("DescribeSecurityGroups {}", p.name), e))?;
        Ok(out.security_groups().first().map(|g| SeenGroup {
            id: g.group_id().unwrap_or_default().to_string(),
            vpc_id: g.vpc_id().unwrap_or_default().to_string(),
            perms: seen_perms(g.ip_permissions()),
            tags: ec2_tags(g.tags()),
        }))
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Option<SeenGroup>,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let want =
            match &p.rules {
                Some(r) => Some(wanted_perms(&p.name, r).map_err(|e| {
                    ModuleError::Args(format!("ec2_security_group {}: {e}", p.name))
                })?),
                None => None,
            };
        let vpc = p.vpc_id.clone().unwrap_or_default();
        Ok(match (p.state, seen) {
            (Presence::Present, None) => {
                let description = p.description.clone().ok_or_else(|| {
                    ModuleError::Args(format!(
                        "ec2_security_group: description is required to create group {}",
                        p.name
                    ))
                })?;
                let id = pending("sg", &p.name);
                Planned::change(
                    Change::Create {
                        description,
                        perms: want.unwrap_or_default(),
                    },
                    outcome(true, group_json(p, &id, &vpc)),
                )
            }
            (Presence::Present, Some(g)) => {
                let (grant, revoke) = match want {
                    Some(want) => {
                        let want: BTreeSet<Perm> = want
                            .into_iter()
                            .map(|mut w| {
                                if w.src == Source::Itself {
                                    w.src = Source::Group(g.id.clone());
                                }
                                w
                            })
                            .collect();
                        let grant: Vec<Perm> = want.difference(&g.perms).cloned().collect();
                        let revoke: Vec<Perm> = if p.purge_rules.unwrap_or(true) {
                            g.perms.difference(&want).cloned().collect()
                        } else {
                            Vec::new()
                        };
                        (grant, revoke)
                    }
                    None => (Vec::new(), Vec::new()),
                };
                let tags = tag_changes(&g.tags, p.tags.as_ref(), p.purge_tags.unwrap_or(true), &[]);
                let changed = !grant.is_empty() || !revoke.is_empty() || !tags.is_empty();
                Planned::when(
                    changed,
                    Change::Update {
                        id: g.id.clone(),
                        grant,
                        revoke,
                        tags,
                    },
                    outcome(changed, group_json(p, &g.id, &g.vpc_id)),
                )
            }
            (Presence::Absent, Some(g)) => Planned::change(
                Change::Delete { id: g.id.clone() },
                Outcome::changed(true).with("group_id", g.id.clone()),
            ),
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
        let grant = |id: String, perms: Vec<IpPermission>| {
            let client = client.clone();
            async move {
                if perms.is_empty() {
                    return Ok(());
                }
                client
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .set_ip_permissions(Some(perms))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_err(&format!("AuthorizeSecurityGroupIngress {id}"), e))
            }
        };
        match plan {
            Change::Create { description, perms } => {
                let mut req = client
                    .create_security_group()
                    .group_name(&p.name)
                    .description(description)
                    .set_vpc_id(p.vpc_id.clone());
                if let Some(t) = p.tags.as_ref().filter(|t| !t.is_empty()) {
                    req = req.tag_specifications(ec2_tag_spec(ResourceType::SecurityGroup, t));
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("CreateSecurityGroup {}", p.name), e))?;
                let id = out.group_id().unwrap_or_default().to_string();
                let perms = perms.iter().map(|x| to_ip_permission(x, &id)).collect();
                grant(id.clone(), perms).await?;
                let vpc = p.vpc_id.clone().unwrap_or_default();
                Ok(group_json(p, &id, &vpc)
                    .into_iter()
                    .fold(predicted, |o, (k, v)| o.with(k, v)))
            }
            Change::Update {
                id,
                grant: add,
                revoke,
                tags,
            } => {
                let add = add.iter().map(|x| to_ip_permission(x, &id)).collect();
                grant(id.clone(), add).await?;
                if !revoke.is_empty() {
                    client
                        .revoke_security_group_ingress()
                        .group_id(&id)
                        .set_ip_permissions(Some(
                            revoke.iter().map(|x| to_ip_permission(x, &id)).collect(),
                        ))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("RevokeSecurityGroupIngress {id}"), e))?;
                }
                ec2_apply_tags(&client, &id, &tags).await?;
                Ok(predicted)
            }
            Change::Delete { id } => {
                client
                    .delete_security_group()
                    .group_id(&id)
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("DeleteSecurityGroup {id}"), e))?;
                Ok(predicted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_expand_to_one_permission_per_port_range_and_source() {
        let rules: Vec<Value> = serde_json::from_str(
            r#"[{"proto": "all", "group_name": "hf"},
                {"proto": "tcp", "ports": [22, "8000-8080"], "cidr_ip": ["10.0.0.0/8", "1.2.3.4/32"]}]"#,
        )
        .unwrap();
        let p = wanted_perms("hf", &rules).unwrap();
        assert_eq!(p.len(), 5);
        assert!(p.contains(&Perm {
            proto: "-1".into(),
            from: -1,
            to: -1,
            src: Source::Itself
        }));
        assert!(p.contains(&Perm {
            proto: "tcp".into(),
            from: 8000,
            to: 8080,
            src: Source::Cidr("1.2.3.4/32".into())
        }));
    }

    #[test]
    fn bad_rules_name_the_rule() {
        let bad = |s: &str| wanted_perms("hf", &serde_json::from_str::<Vec<Value>>(s).unwrap());
        assert!(bad(r#"[{"proto": "tcp", "cidr_ip": "0.0.0.0/0"}]"#)
            .unwrap_err()
            .starts_with("rules[0]: proto tcp needs ports"));
        assert!(bad(r#"[{"proto": "tcp", "ports": 22}]"#)
            .unwrap_err()
            .contains("needs cidr_ip"));
        assert!(bad(r#"[{"ports": 22, "group_name": "other"}]"#)
            .unwrap_err()
            .contains("only the group itself"));
        assert!(bad(r#"[{"ports": 22, "cidr": "x"}]"#)
            .unwrap_err()
            .contains("unsupported key cidr"));
    }
}
