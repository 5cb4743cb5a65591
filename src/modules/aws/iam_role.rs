//! `amazon.aws.iam_role`: an IAM role, its trust policy, managed policies, tags, and (by default,
//! as Ansible does) an instance profile of the same name holding it.
//!
//! ```yaml
//! - amazon.aws.iam_role:
//!     name: heirflow-db
//!     assume_role_policy_document: "{{ lookup('file', 'ec2-trust.json') }}"
//!     managed_policies: []
//!   register: role         # role.iam_role.arn
//! ```
//! Probe: GetRole, ListAttachedRolePolicies, ListRoleTags, GetInstanceProfile. Plan: create,
//! update the trust policy, attach/detach managed policies (`purge_policies`, default true),
//! retag, create the instance profile / add the role to it; `absent` detaches and deletes the
//! role's policies, takes it out of its instance profiles (deleting them with
//! `delete_instance_profile`) and deletes it.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_iam::types::Tag;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api_err, de_opt_json_doc, de_opt_tags, err_code, tag_changes, tags_json, AwsConn, TagChanges,
    Tags,
};
use crate::modules::args::{de_opt_bool, de_opt_list, de_opt_string, de_string, Presence};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(default, deserialize_with = "de_opt_json_doc")]
    assume_role_policy_document: Option<Value>,
    #[serde(default, deserialize_with = "de_opt_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default, alias = "managed_policy", deserialize_with = "de_opt_list")]
    managed_policies: Option<Vec<String>>,
    #[serde(default, alias = "purge_policy", deserialize_with = "de_opt_bool")]
    purge_policies: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    create_instance_profile: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    delete_instance_profile: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_tags")]
    tags: Option<Tags>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_tags: Option<bool>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

/// A policy document as IAM returns it: URL-encoded JSON (moto returns it plain).
pub fn policy_doc(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    serde_json::from_slice(&out).ok()
}

#[derive(Debug, Clone)]
pub struct SeenRole {
    pub arn: String,
    pub role_id: String,
    pub trust: Option<Value>,
    pub managed: BTreeSet<String>,
    pub tags: Tags,
    /// Instance profiles holding the role.
    pub profiles: Vec<String>,
    /// Inline policy names (deleted with the role).
    pub inline: Vec<String>,
}

#[derive(Debug)]
pub struct Observed {
    pub role: Option<SeenRole>,
    /// The instance profile named like the role: exists, and holds the role.
    pub profile: Option<bool>,
}

#[derive(Debug, Default)]
pub struct Update {
    create: bool,
    trust: Option<Value>,
    attach: Vec<String>,
    detach: Vec<String>,
    tags: TagChanges,
    create_profile: bool,
    add_to_profile: bool,
}

#[derive(Debug)]
pub enum Change {
    Apply(Update),
    Delete(SeenRole),
}

pub struct IamRole;
aws_module!(IamRole, "amazon.aws", "iam_role");

fn iam_tags(t: &Tags) -> Result<Vec<Tag>, ModuleError> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| ModuleError::Args(format!("iam_role tag {k}: {e}")))
        })
        .collect()
}

async fn detach<'a>(
    client: &aws_sdk_iam::Client,
    name: &str,
    arns: impl IntoIterator<Item = &'a String>,
) -> Result<(), ModuleError> {
    for arn in arns {
        client
            .detach_role_policy()
            .role_name(name)
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| api_err(&format!("DetachRolePolicy {name} {arn}"), e))?;
    }
    Ok(())
}

#[async_trait]
impl NativeModule for IamRole {
    type Params = Params;
    type Observed = Observed;
    type Plan = Change;
    const NAME: &'static str = "iam_role";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let client = aws_sdk_iam::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let name = p.name.as_str();
        let profile = match client
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(o) => Some(
                o.instance_profile()
                    .is_some_and(|ip| ip.roles().iter().any(|r| r.role_name() == name)),
            ),
            Err(e) if err_code(&e) == Some("NoSuchEntity") => None,
            Err(e) => return Err(api_err(&format!("GetInstanceProfile {name}"), e)),
        };
        let role = match client.get_role().role_name(name).send().await {
            Ok(o) => o.role().cloned(),
            Err(e) if err_code(&e) == Some("NoSuchEntity") => None,
            Err(e) => return Err(api_err(&format!("GetRole {name}"), e)),
        };
        let Some(role) = role else {
            return Ok(Observed {
                role: None,
                profile,
            });
        };
        let managed = client
            .list_attached_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(|e| api_err(&format!("ListAttachedRolePolicies {name}"), e))?
            .attached_policies()
            .iter()
            .filter_map(|a| a.policy_arn().map(str::to_string))
            .collect();
        let tags = client
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .map_err(|e| api_err(&format!("ListRoleTags {name}"), e))?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        let profiles = client
            .list_instance_profiles_for_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| api_err(&format!("ListInstanceProfilesForRole {name}"), e))?
            .instance_profiles()
            .iter()
            .map(|ip| ip.instance_profile_name().to_string())
            .collect();
        let inline = client
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .map_err(|e| api_err(&format!("ListRolePolicies {name}"), e))?
            .policy_names()
            .to_vec();
        Ok(Observed {
            role: Some(SeenRole {
                arn: role.arn().to_string(),
                role_id: role.role_id().to_string(),
                trust: role.assume_role_policy_document().and_then(policy_doc),
                managed,
                tags,
                profiles,
                inline,
            }),
            profile,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let want_profile = p.create_instance_profile.unwrap_or(true);
        let report = |changed: bool, arn: &str, id: &str| {
            Outcome::changed(changed).with(
                "iam_role",
                json!({"role_name": p.name, "arn": arn, "role_id": id,
                       "path": p.path.clone().unwrap_or_else(|| "/".into()),
                       "assume_role_policy_document": p.assume_role_policy_document,
                       "tags": tags_json(&p.tags.clone().unwrap_or_default())}),
            )
        };
        if p.state == Presence::Absent {
            return Ok(match &seen.role {
                Some(r) => {
                    Planned::change(Change::Delete(r.clone()), report(true, &r.arn, &r.role_id))
                }
                None => Planned::nothing(Outcome::ok()),
            });
        }
        let want_managed: BTreeSet<String> = p.managed_policies.iter().flatten().cloned().collect();
        let mut u = Update::default();
        let (arn, id) = match &seen.role {
            None => {
                if p.assume_role_policy_document.is_none() {
                    return Err(ModuleError::Args(format!(
                        "iam_role: assume_role_policy_document is required to create role {}",
                        p.name
                    )));
                }
                u.create = true;
                u.attach = want_managed.iter().cloned().collect();
                (format!("pending-arn-{}", p.name), String::new())
            }
            Some(r) => {
                if let Some(doc) = &p.assume_role_policy_document {
                    if r.trust.as_ref() != Some(doc) {
                        u.trust = Some(doc.clone());
                    }
                }
                if p.managed_policies.is_some() {
                    u.attach = want_managed.difference(&r.managed).cloned().collect();
                    if p.purge_policies.unwrap_or(true) {
                        u.detach = r.managed.difference(&want_managed).cloned().collect();
                    }
                }
                u.tags = tag_changes(&r.tags, p.tags.as_ref(), p.purge_tags.unwrap_or(true), &[]);
                (r.arn.clone(), r.role_id.clone())
            }
        };
        if want_profile {
            u.create_profile = seen.profile.is_none();
            u.add_to_profile = seen.profile != Some(true);
        }
        let changed = u.create
            || u.trust.is_some()
            || !u.attach.is_empty()
            || !u.detach.is_empty()
            || !u.tags.is_empty()
            || u.create_profile
            || u.add_to_profile;
        Ok(Planned::when(
            changed,
            Change::Apply(u),
            report(changed, &arn, &id),
        ))
    }

    async fn apply(
        &self,
        p: &Params,
        plan: Change,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let client = aws_sdk_iam::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let name = p.name.as_str();
        match plan {
            Change::Apply(u) => {
                let mut predicted = predicted;
                if u.create {
                    let doc = p.assume_role_policy_document.clone().unwrap_or_default();
                    let out = client
                        .create_role()
                        .role_name(name)
                        .path(p.path.clone().unwrap_or_else(|| "/".into()))
                        .assume_role_policy_document(doc.to_string())
                        .set_description(p.description.clone())
                        .set_tags(Some(iam_tags(&p.tags.clone().unwrap_or_default())?))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("CreateRole {name}"), e))?;
                    if let Some(r) = out.role() {
                        if let Some(Value::Object(m)) = predicted.data.get_mut("iam_role") {
                            m.insert("arn".into(), json!(r.arn()));
                            m.insert("role_id".into(), json!(r.role_id()));
                        }
                    }
                }
                if let Some(doc) = u.trust {
                    client
                        .update_assume_role_policy()
                        .role_name(name)
                        .policy_document(doc.to_string())
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("UpdateAssumeRolePolicy {name}"), e))?;
                }
                for arn in &u.attach {
                    client
                        .attach_role_policy()
                        .role_name(name)
                        .policy_arn(arn)
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("AttachRolePolicy {name} {arn}"), e))?;
                }
                detach(&client, name, &u.detach).await?;
                if !u.tags.set.is_empty() {
                    client
                        .tag_role()
                        .role_name(name)
                        .set_tags(Some(iam_tags(&u.tags.set)?))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("TagRole {name}"), e))?;
                }
                if !u.tags.unset.is_empty() {
                    client
                        .untag_role()
                        .role_name(name)
                        .set_tag_keys(Some(u.tags.unset.clone()))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("UntagRole {name}"), e))?;
                }
                if u.create_profile {
                    client
                        .create_instance_profile()
                        .instance_profile_name(name)
                        .path(p.path.clone().unwrap_or_else(|| "/".into()))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("CreateInstanceProfile {name}"), e))?;
                }
                if u.add_to_profile {
                    client
                        .add_role_to_instance_profile()
                        .instance_profile_name(name)
                        .role_name(name)
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("AddRoleToInstanceProfile {name}"), e))?;
                }
                Ok(predicted)
            }
            Change::Delete(r) => {
                detach(&client, name, &r.managed).await?;
                for pol in &r.inline {
                    client
                        .delete_role_policy()
                        .role_name(name)
                        .policy_name(pol)
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("DeleteRolePolicy {name} {pol}"), e))?;
                }
                for ip in &r.profiles {
                    client
                        .remove_role_from_instance_profile()
                        .instance_profile_name(ip)
                        .role_name(name)
                        .send()
                        .await
                        .map_err(|e| {
                            api_err(&format!("RemoveRoleFromInstanceProfile {ip} {name}"), e)
                        })?;
                    if p.delete_instance_profile.unwrap_or(false) {
                        client
                            .delete_instance_profile()
                            .instance_profile_name(ip)
                            .send()
                            .await
                            .map_err(|e| api_err(&format!("DeleteInstanceProfile {ip}"), e))?;
                    }
                }
                client
                    .delete_role()
                    .role_name(name)
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("DeleteRole {name}"), e))?;
                Ok(predicted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_read_plain_or_url_encoded() {
        let v = json!({"Version": "2012-10-17", "Statement": []});
        assert_eq!(policy_doc(&v.to_string()), Some(v.clone()));
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(policy_doc(enc), Some(v));
        assert_eq!(policy_doc("%7B%2"), None);
    }
}
