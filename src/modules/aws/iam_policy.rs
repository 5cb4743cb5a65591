//! `amazon.aws.iam_policy`: an inline policy of an IAM role.
//!
//! ```yaml
//! - amazon.aws.iam_policy:
//!     iam_type: role
//!     iam_name: heirflow-db
//!     policy_name: floating-ip
//!     policy_json: "{{ lookup('template', 'floating-ip-policy.json.j2') }}"
//! ```
//! Probe: GetRolePolicy (a role that does not exist yet has no policy: check mode on a fresh
//! account predicts the creation). Plan: put the document when it differs, delete it with
//! `absent`. Only `iam_type: role` is supported (users and groups are not in the topology).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::iam_role::policy_doc;
use super::{api_err, de_opt_json_doc, err_code, AwsConn};
use crate::modules::args::{de_string, Presence};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    iam_type: String,
    #[serde(deserialize_with = "de_string")]
    iam_name: String,
    #[serde(deserialize_with = "de_string")]
    policy_name: String,
    #[serde(default, deserialize_with = "de_opt_json_doc")]
    policy_json: Option<Value>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

#[derive(Debug)]
pub enum Change {
    Put(Value),
    Delete,
}

pub struct IamPolicy;
aws_module!(IamPolicy, "amazon.aws", "iam_policy");

#[async_trait]
impl NativeModule for IamPolicy {
    type Params = Params;
    /// The current document (`None`: no such policy, or no such role).
    type Observed = Option<Value>;
    type Plan = Change;
    const NAME: &'static str = "iam_policy";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Option<Value>, ModuleError> {
        if p.iam_type != "role" {
            return Err(ModuleError::Args(format!(
                "iam_policy: iam_type {:?} is not supported (role only)",
                p.iam_type
            )));
        }
        let client = aws_sdk_iam::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        match client
            .get_role_policy()
            .role_name(&p.iam_name)
            .policy_name(&p.policy_name)
            .send()
            .await
        {
            Ok(o) => Ok(policy_doc(o.policy_document())),
            Err(e) if err_code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(api_err(
                &format!("GetRolePolicy {} {}", p.iam_name, p.policy_name),
                e,
            )),
        }
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Option<Value>,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let report = |changed: bool| {
            Outcome::changed(changed)
                .with("role_name", p.iam_name.clone())
                .with("policy_names", json!([p.policy_name]))
        };
        Ok(match p.state {
            Presence::Present => {
                let doc = p.policy_json.clone().ok_or_else(|| {
                    ModuleError::Args(
                        "iam_policy: policy_json is required with state=present".into(),
                    )
                })?;
                let changed = seen.as_ref() != Some(&doc);
                Planned::when(changed, Change::Put(doc), report(changed))
            }
            Presence::Absent => {
                Planned::when(seen.is_some(), Change::Delete, report(seen.is_some()))
            }
        })
    }

    async fn apply(
        &self,
        p: &Params,
        plan: Change,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let client = aws_sdk_iam::Client::new(&p.aws.sdk(Self::NAME, ctx).await?);
        let what = format!("{} {}", p.iam_name, p.policy_name);
        match plan {
            Change::Put(doc) => client
                .put_role_policy()
                .role_name(&p.iam_name)
                .policy_name(&p.policy_name)
                .policy_document(doc.to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_err(&format!("PutRolePolicy {what}"), e))?,
            Change::Delete => client
                .delete_role_policy()
                .role_name(&p.iam_name)
                .policy_name(&p.policy_name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_err(&format!("DeleteRolePolicy {what}"), e))?,
        }
        Ok(predicted)
    }
}
