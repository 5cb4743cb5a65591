//! AWS modules (`amazon.aws.*`, `community.aws.*`): resources of the Heirflow topology, made
//! through the AWS SDK for Rust on the controller.
//!
//! They follow the same contract as every native module (probe = Describe/Get calls, a pure
//! plan, apply = Create/Modify/Delete calls; check mode never applies). They run only where the
//! task's connection is local (`delegate_to: localhost`, `connection: local`, or a `localhost`
//! play): the SDK call is made by hfplay itself, no Python anywhere.
//!
//! Credentials and region come from the standard AWS chain (environment, profile, instance
//! role), overridden per task by Ansible's arguments (`region`, `access_key`, `secret_key`,
//! `session_token`, `profile`, `endpoint_url`). `AWS_ENDPOINT_URL` points every call at another
//! EC2-compatible API (the tests use moto).
//!
//! **Check mode on a fresh account.** A resource that check mode predicts as created has no id
//! yet, but later tasks name it (`vpc_id: "{{ vpc.vpc.id }}"`). Such an id is reported as
//! `pending-<kind>-<name>` ([`pending`]); a module handed a pending id knows that the thing it
//! names does not exist yet, so neither does anything inside it, and predicts its own creation
//! without asking AWS about an id AWS would reject.

/// The `Module` side of an AWS module: names, arguments from its `Params`, the contract's driver.
macro_rules! aws_module {
    ($ty:ty, $collection:literal, $name:literal) => {
        #[async_trait::async_trait]
        impl $crate::modules::Module for $ty {
            literal_params!($name);
            fn names(&self) -> &'static [&'static str] {
                &[$name]
            }
            fn collections(&self) -> &'static [&'static str] {
                &[$collection]
            }
            fn arg_names(&self) -> &'static [&'static str] {
                <Params as $crate::modules::ModuleArgs>::accepted()
            }
            fn required(&self) -> &'static [&'static [&'static str]] {
                <Params as $crate::modules::ModuleArgs>::required()
            }
            async fn run(
                &self,
                args: &$crate::modules::Args,
                ctx: &$crate::modules::TaskCtx<'_>,
            ) -> Result<$crate::modules::Outcome, $crate::modules::ModuleError> {
                $crate::modules::contract::execute(self, args, ctx).await
            }
        }
    };
}

pub mod efs;
pub mod eni;
pub mod iam_policy;
pub mod iam_role;
pub mod instance;
pub mod security_group;
pub mod vpc_net;
pub mod vpc_subnet;

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::args::de_opt_string;
use super::{ModuleArgs, ModuleError, TaskCtx};

/// Connection arguments every AWS module takes (Ansible's names and aliases).
#[derive(Debug, Clone, Default, Deserialize, ModuleArgs)]
pub struct AwsConn {
    #[serde(
        default,
        alias = "aws_region",
        alias = "ec2_region",
        deserialize_with = "de_opt_string"
    )]
    pub region: Option<String>,
    #[serde(
        default,
        alias = "aws_endpoint_url",
        alias = "ec2_url",
        deserialize_with = "de_opt_string"
    )]
    pub endpoint_url: Option<String>,
    #[serde(
        default,
        alias = "aws_access_key_id",
        alias = "aws_access_key",
        alias = "ec2_access_key",
        deserialize_with = "de_opt_string"
    )]
    pub access_key: Option<String>,
    #[serde(
        default,
        alias = "aws_secret_access_key",
        alias = "aws_secret_key",
        alias = "ec2_secret_key",
        deserialize_with = "de_opt_string"
    )]
    pub secret_key: Option<String>,
    #[serde(
        default,
        alias = "aws_session_token",
        alias = "security_token",
        deserialize_with = "de_opt_string"
    )]
    pub session_token: Option<String>,
    #[serde(default, alias = "aws_profile", deserialize_with = "de_opt_string")]
    pub profile: Option<String>,
}

impl AwsConn {
    /// The SDK configuration for this task: the standard chain, then the task's arguments.
    /// Refuses to run anywhere but on the controller.
    pub async fn sdk(&self, module: &str, ctx: &TaskCtx<'_>) -> Result<SdkConfig, ModuleError> {
        if !ctx.conn.is_local() {
            return Err(ModuleError::Args(format!(
                "{module} calls the AWS API from the controller: run it with \
                 `delegate_to: localhost` or `connection: local` (host {})",
                ctx.host
            )));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(p) = &self.profile {
            loader = loader.profile_name(p);
        }
        if let Some(u) = &self.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        match (&self.access_key, &self.secret_key) {
            (Some(a), Some(s)) => {
                loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    a,
                    s,
                    self.session_token.clone(),
                    None,
                    "hfplay task arguments",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(ModuleError::Args(format!(
                    "{module}: access_key and secret_key go together"
                )))
            }
        }
        let conf = loader.load().await;
        if conf.region().is_none() {
            return Err(ModuleError::Args(format!(
                "{module}: no AWS region: set `region` or AWS_REGION"
            )));
        }
        Ok(conf)
    }
}

/// An AWS API error as one line: the action, then AWS's error code and message, or what went
/// wrong on the way (no answer, an HTTP error without an AWS error in it).
pub fn api_err<E, R>(action: &str, e: SdkError<E, R>) -> ModuleError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let text = match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => match &e {
            SdkError::ServiceError(s) => s.raw().describe(),
            SdkError::ResponseError(r) => r.raw().describe(),
            SdkError::DispatchFailure(_) if chain(&e).contains("credentials") => format!(
                "no usable AWS credentials (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or the task's access_key/secret_key): {}",
                chain(&e)
            ),
            SdkError::DispatchFailure(_) => {
                format!("cannot reach the AWS API endpoint: {}", chain(&e))
            }
            SdkError::TimeoutError(_) => "the AWS API did not answer in time".to_string(),
            _ => chain(&e),
        },
    };
    ModuleError::Controller(format!("{action}: {text}"))
}

/// An error and its sources, as one line of their messages (no Debug dumps).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A raw HTTP answer, in one line: its status and the start of its body.
pub trait HttpStatus {
    fn describe(&self) -> String;
}

impl HttpStatus for aws_sdk_ec2::config::http::HttpResponse {
    fn describe(&self) -> String {
        let body = self
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let body: String = body.chars().take(200).collect();
        format!("HTTP {} from the API: {body}", self.status().as_u16())
    }
}

/// The AWS error code of a failed call, if it has one (to tell "not found" from a failure).
pub fn err_code<E: ProvideErrorMetadata>(e: &E) -> Option<&str> {
    e.code()
}

/// The id a resource that check mode predicts as created is reported with.
pub fn pending(kind: &str, name: &str) -> String {
    format!("pending-{kind}-{name}")
}

/// Is this an id check mode made up for a resource not created yet?
pub fn is_pending(id: &str) -> bool {
    id.starts_with("pending-")
}

/// Tags, as Ansible takes them: a mapping whose values are scalars (numbers become strings).
pub type Tags = BTreeMap<String, String>;

pub fn de_opt_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tags>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                Value::Number(n) => Ok((k, n.to_string())),
                Value::Bool(b) => Ok((k, b.to_string())),
                other => Err(serde::de::Error::custom(format!(
                    "tag {k}: expected a string, got {other}"
                ))),
            })
            .collect::<Result<Tags, _>>()
            .map(Some),
        other => Err(serde::de::Error::custom(format!(
            "tags: expected a mapping, got {other}"
        ))),
    }
}

/// A JSON document given as a mapping or as a JSON string (policy documents).
pub fn de_opt_json_doc<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("not a JSON document: {e}"))),
        Value::Object(_) => Ok(Some(v)),
        other => Err(serde::de::Error::custom(format!(
            "expected a mapping or a JSON string, got {other}"
        ))),
    }
}

/// What to do to a resource's tags: set these, remove those.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TagChanges {
    pub set: Tags,
    pub unset: Vec<String>,
}

impl TagChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
    /// The tags `current` has once these changes are made (what a plan reports).
    pub fn applied_to(&self, current: &Tags) -> Tags {
        let mut t = current.clone();
        t.extend(self.set.clone());
        t.retain(|k, _| !self.unset.contains(k));
        t
    }
}

/// Pure: the tag changes from `current` to `want` (`None`: leave tags alone). With `purge`, tags
/// not wanted go, except `keep` (the `Name` tag a module sets from its own `name`) and AWS's own
/// `aws:` tags, which nobody may remove.
pub fn tag_changes(current: &Tags, want: Option<&Tags>, purge: bool, keep: &[&str]) -> TagChanges {
    let Some(want) = want else {
        return TagChanges::default();
    };
    let set = want
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let unset = if purge {
        current
            .keys()
            .filter(|k| {
                !want.contains_key(*k) && !keep.contains(&k.as_str()) && !k.starts_with("aws:")
            })
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    TagChanges { set, unset }
}

/// `want` with `Name` set to `name` (modules named by their Name tag).
pub fn with_name(want: Option<&Tags>, name: &str) -> Tags {
    let mut t = want.cloned().unwrap_or_default();
    t.insert("Name".into(), name.into());
    t
}

/// EC2 tags as a map.
pub fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// EC2 tags from a map.
pub fn to_ec2_tags(tags: &Tags) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// A tag specification for an EC2 create call.
pub fn ec2_tag_spec(
    kind: aws_sdk_ec2::types::ResourceType,
    tags: &Tags,
) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(to_ec2_tags(tags)))
        .build()
}

/// Applies tag changes to an EC2 resource (CreateTags / DeleteTags).
pub async fn ec2_apply_tags(
    client: &aws_sdk_ec2::Client,
    id: &str,
    changes: &TagChanges,
) -> Result<(), ModuleError> {
    if !changes.set.is_empty() {
        client
            .create_tags()
            .resources(id)
            .set_tags(Some(to_ec2_tags(&changes.set)))
            .send()
            .await
            .map_err(|e| api_err(&format!("CreateTags {id}"), e))?;
    }
    if !changes.unset.is_empty() {
        let keys = changes
            .unset
            .iter()
            .map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build())
            .collect();
        client
            .delete_tags()
            .resources(id)
            .set_tags(Some(keys))
            .send()
            .await
            .map_err(|e| api_err(&format!("DeleteTags {id}"), e))?;
    }
    Ok(())
}

/// An EC2 describe filter.
pub fn filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// Tags as a JSON object for results.
pub fn tags_json(tags: &Tags) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tag_changes_set_what_differs_and_purge_the_rest_but_name_and_aws() {
        let cur = tags(&[("Name", "a"), ("x", "1"), ("old", "o"), ("aws:cf", "z")]);
        let want = tags(&[("x", "2"), ("new", "n")]);
        let c = tag_changes(&cur, Some(&want), true, &["Name"]);
        assert_eq!(c.set, tags(&[("x", "2"), ("new", "n")]));
        assert_eq!(c.unset, vec!["old".to_string()]);
        let c = tag_changes(&cur, Some(&want), false, &["Name"]);
        assert!(c.unset.is_empty());
        assert!(tag_changes(&cur, None, true, &[]).is_empty());
        let c = tag_changes(&cur, Some(&want), true, &["Name"]);
        assert_eq!(
            c.applied_to(&cur),
            tags(&[("Name", "a"), ("x", "2"), ("new", "n"), ("aws:cf", "z")])
        );
        let same = tag_changes(&cur, Some(&cur), true, &[]);
        assert!(same.is_empty());
    }

    #[test]
    fn pending_ids_are_recognised() {
        assert!(is_pending(&pending("vpc", "heirflow")));
        assert!(!is_pending("vpc-0123"));
    }
}
