//! `community.aws.efs`: an EFS file system (found by its creation token, the `name`) and its
//! mount targets.
//!
//! ```yaml
//! - community.aws.efs:
//!     name: heirflow-dags
//!     tags: {heirflow-cluster: prod}
//!     targets:
//!       - {subnet_id: "{{ subnet.subnet.id }}", security_groups: ["{{ sg.group_id }}"]}
//!   register: efs          # efs.efs.filesystem_address
//! ```
//! Probe: DescribeFileSystems by creation token, DescribeMountTargets. Plan: create the file
//! system, add the mount targets of subnets not yet served, remove those of subnets not listed,
//! retag; `absent` removes the targets, then the file system. Apply waits for the file system to
//! be available before adding targets (AWS refuses them before), and for targets to go before
//! deleting the file system.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_efs::types::{LifeCycleState, PerformanceMode, Tag};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api_err, de_opt_tags, pending, tag_changes, tags_json, with_name, AwsConn, TagChanges, Tags,
};
use crate::modules::args::{de_opt_bool, de_opt_string, de_opt_u64, de_string, Presence};
use crate::modules::contract::{NativeModule, Planned};
use crate::modules::{ModuleArgs, ModuleError, Outcome, TaskCtx};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    subnet_id: String,
    #[serde(default)]
    security_groups: Vec<String>,
    #[serde(default)]
    ip_address: Option<String>,
}

#[derive(Debug, Deserialize, ModuleArgs)]
pub struct Params {
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(default)]
    targets: Option<Vec<Target>>,
    #[serde(default, deserialize_with = "de_opt_string")]
    performance_mode: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    encrypt: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_tags")]
    tags: Option<Tags>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    purge_tags: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    wait: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_u64")]
    wait_timeout: Option<u64>,
    #[serde(default)]
    state: Presence,
    #[serde(flatten)]
    aws: AwsConn,
}

#[derive(Debug, Clone)]
pub struct SeenFs {
    pub id: String,
    pub state: String,
    pub tags: Tags,
    /// Mount targets by subnet: (target id, address).
    pub targets: BTreeMap<String, (String, String)>,
    pub region: String,
}

#[derive(Debug)]
pub struct Observed {
    pub fs: Option<SeenFs>,
    pub region: String,
}

#[derive(Debug)]
pub enum Change {
    Apply {
        id: Option<String>,
        add: Vec<Target>,
        remove: Vec<String>,
        tags: TagChanges,
    },
    Delete {
        id: String,
        targets: Vec<String>,
    },
}

pub struct Efs;
aws_module!(Efs, "community.aws", "efs");

fn fs_json(name: &str, id: &str, region: &str, state: &str, targets: Value, tags: &Tags) -> Value {
    let dns = format!("{id}.efs.{region}.amazonaws.com");
    json!({
        "file_system_id": id, "creation_token": name, "name": name,
        "life_cycle_state": state,
        "filesystem_address": format!("{dns}:/"), "mount_point": format!(".{dns}:/"),
        "dns_name": dns, "mount_targets": targets, "tags": tags_json(tags),
    })
}

fn efs_tags(t: &[Tag]) -> Tags {
    t.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

fn to_efs_tags(t: &Tags) -> Result<Vec<Tag>, ModuleError> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| ModuleError::Args(format!("efs tag {k}: {e}")))
        })
        .collect()
}

impl Efs {
    async fn file_system(
        client: &aws_sdk_efs::Client,
        name: &str,
    ) -> Result<Option<aws_sdk_efs::types::FileSystemDescription>, ModuleError> {
        let out = client
            .describe_file_systems()
            .creation_token(name)
            .send()
            .await
            .map_err(|e| api_err(&format!("DescribeFileSystems {name}"), e))?;
        Ok(out.file_systems().first().cloned())
    }

    async fn mount_targets(
        client: &aws_sdk_efs::Client,
        id: &str,
    ) -> Result<Vec<aws_sdk_efs::types::MountTargetDescription>, ModuleError> {
        let out = client
            .describe_mount_targets()
            .file_system_id(id)
            .send()
            .await
            .map_err(|e| api_err(&format!("DescribeMountTargets {id}"), e))?;
        Ok(out.mount_targets().to_vec())
    }

    async fn delete_targets(
        client: &aws_sdk_efs::Client,
        targets: &[String],
    ) -> Result<(), ModuleError> {
        for mt in targets {
            client
                .delete_mount_target()
                .mount_target_id(mt)
                .send()
                .await
                .map_err(|e| api_err(&format!("DeleteMountTarget {mt}"), e))?;
        }
        Ok(())
    }

    /// Polls until every mount target of `id` is in `state`.
    async fn wait_targets(
        client: &aws_sdk_efs::Client,
        p: &Params,
        id: &str,
        state: LifeCycleState,
    ) -> Result<(), ModuleError> {
        let what = format!("mount targets {}", state.as_str());
        Self::wait_until(p, &what, || {
            let (client, state) = (client.clone(), state.clone());
            async move {
                Ok(Self::mount_targets(&client, id)
                    .await?
                    .iter()
                    .all(|t| *t.life_cycle_state() == state))
            }
        })
        .await
    }

    /// Polls until `done` holds, up to the task's wait_timeout.
    async fn wait_until<F, Fut>(p: &Params, what: &str, mut done: F) -> Result<(), ModuleError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, ModuleError>>,
    {
        let secs = p.wait_timeout.unwrap_or(600);
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done().await? {
            if Instant::now() > deadline {
                return Err(ModuleError::Controller(format!(
                    "efs {}: {what} not reached after {secs} s",
                    p.name
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(())
    }
}

#[async_trait]
impl NativeModule for Efs {
    type Params = Params;
    type Observed = Observed;
    type Plan = Change;
    const NAME: &'static str = "efs";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let conf = p.aws.sdk("efs", ctx).await?;
        let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
        let client = aws_sdk_efs::Client::new(&conf);
        let Some(fs) = Self::file_system(&client, &p.name).await? else {
            return Ok(Observed { fs: None, region });
        };
        let id = fs.file_system_id().to_string();
        let targets = Self::mount_targets(&client, &id)
            .await?
            .into_iter()
            .filter(|t| {
                !matches!(
                    t.life_cycle_state(),
                    LifeCycleState::Deleting | LifeCycleState::Deleted
                )
            })
            .map(|t| {
                (
                    t.subnet_id().to_string(),
                    (
                        t.mount_target_id().to_string(),
                        t.ip_address().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect();
        Ok(Observed {
            fs: Some(SeenFs {
                id,
                state: fs.life_cycle_state().as_str().to_string(),
                tags: efs_tags(fs.tags()),
                targets,
                region: region.clone(),
            }),
            region,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        _diff: bool,
    ) -> Result<Planned<Change>, ModuleError> {
        let want_tags = with_name(p.tags.as_ref(), &p.name);
        let targets_json = |m: &BTreeMap<String, (String, String)>| -> Value {
            m.iter()
                .map(|(s, (id, ip))| json!({"subnet_id": s, "mount_target_id": id, "ip_address": ip}))
                .collect::<Vec<_>>()
                .into()
        };
        Ok(match (p.state, &seen.fs) {
            (Presence::Present, fs) => {
                let (id, current, cur_tags, state) = match fs {
                    Some(f) => (
                        Some(f.id.clone()),
                        f.targets.clone(),
                        f.tags.clone(),
                        f.state.clone(),
                    ),
                    None => (None, BTreeMap::new(), Tags::new(), "creating".to_string()),
                };
                let wanted: Vec<Target> = p.targets.clone().unwrap_or_default();
                let add: Vec<Target> = wanted
                    .iter()
                    .filter(|t| !current.contains_key(&t.subnet_id))
                    .cloned()
                    .collect();
                let remove: Vec<String> = match &p.targets {
                    Some(_) => current
                        .iter()
                        .filter(|(s, _)| !wanted.iter().any(|t| &t.subnet_id == *s))
                        .map(|(_, (mt, _))| mt.clone())
                        .collect(),
                    None => vec![],
                };
                let tags = if id.is_some() {
                    tag_changes(
                        &cur_tags,
                        Some(&want_tags),
                        p.purge_tags.unwrap_or(true),
                        &["Name"],
                    )
                } else {
                    TagChanges::default()
                };
                let changed =
                    id.is_none() || !add.is_empty() || !remove.is_empty() || !tags.is_empty();
                let mut after = current.clone();
                after.retain(|_, (mt, _)| !remove.contains(mt));
                for t in &add {
                    let mt = pending("fsmt", &t.subnet_id);
                    after.insert(
                        t.subnet_id.clone(),
                        (mt, t.ip_address.clone().unwrap_or_default()),
                    );
                }
                let shown_id = id.clone().unwrap_or_else(|| pending("fs", &p.name));
                let out = Outcome::changed(changed).with(
                    "efs",
                    fs_json(
                        &p.name,
                        &shown_id,
                        &seen.region,
                        &state,
                        targets_json(&after),
                        &want_tags,
                    ),
                );
                Planned::when(
                    changed,
                    Change::Apply {
                        id,
                        add,
                        remove,
                        tags,
                    },
                    out,
                )
            }
            (Presence::Absent, Some(f)) => Planned::change(
                Change::Delete {
                    id: f.id.clone(),
                    targets: f.targets.values().map(|(mt, _)| mt.clone()).collect(),
                },
                Outcome::changed(true).with("efs", json!({"file_system_id": f.id})),
            ),
            (Presence::Absent, None) => Planned::nothing(Outcome::ok().with("efs", json!({}))),
        })
    }

    async fn apply(
        &self,
        p: &Params,
        plan: Change,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let conf = p.aws.sdk("efs", ctx).await?;
        let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
        let client = aws_sdk_efs::Client::new(&conf);
        match plan {
            Change::Apply {
                id,
                add,
                remove,
                tags,
            } => {
                let id = match id {
                    Some(id) => id,
                    None => {
                        let mode = match p.performance_mode.as_deref() {
                            None | Some("general_purpose") | Some("generalPurpose") => {
                                PerformanceMode::GeneralPurpose
                            }
                            Some("max_io") | Some("maxIO") => PerformanceMode::MaxIo,
                            Some(other) => {
                                return Err(ModuleError::Args(format!(
                                    "efs: performance_mode {other:?}: general_purpose or max_io"
                                )))
                            }
                        };
                        let out = client
                            .create_file_system()
                            .creation_token(&p.name)
                            .performance_mode(mode)
                            .encrypted(p.encrypt.unwrap_or(false))
                            .set_tags(Some(to_efs_tags(&with_name(p.tags.as_ref(), &p.name))?))
                            .send()
                            .await
                            .map_err(|e| api_err(&format!("CreateFileSystem {}", p.name), e))?;
                        out.file_system_id().to_string()
                    }
                };
                if !add.is_empty() {
                    Self::wait_until(p, "file system available", || {
                        let client = client.clone();
                        async move {
                            Ok(Self::file_system(&client, &p.name).await?.is_some_and(|f| {
                                *f.life_cycle_state() == LifeCycleState::Available
                            }))
                        }
                    })
                    .await?;
                }
                for t in &add {
                    client
                        .create_mount_target()
                        .file_system_id(&id)
                        .subnet_id(&t.subnet_id)
                        .set_security_groups(Some(t.security_groups.clone()))
                        .set_ip_address(t.ip_address.clone())
                        .send()
                        .await
                        .map_err(|e| {
                            api_err(&format!("CreateMountTarget {id} in {}", t.subnet_id), e)
                        })?;
                }
                Self::delete_targets(&client, &remove).await?;
                if !tags.set.is_empty() {
                    client
                        .tag_resource()
                        .resource_id(&id)
                        .set_tags(Some(to_efs_tags(&tags.set)?))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("TagResource {id}"), e))?;
                }
                if !tags.unset.is_empty() {
                    client
                        .untag_resource()
                        .resource_id(&id)
                        .set_tag_keys(Some(tags.unset.clone()))
                        .send()
                        .await
                        .map_err(|e| api_err(&format!("UntagResource {id}"), e))?;
                }
                if p.wait.unwrap_or(false) {
                    Self::wait_targets(&client, p, &id, LifeCycleState::Available).await?;
                }
                let fs = Self::file_system(&client, &p.name).await?;
                let targets: Value = Self::mount_targets(&client, &id)
                    .await?
                    .iter()
                    .map(|t| {
                        json!({"subnet_id": t.subnet_id(), "mount_target_id": t.mount_target_id(),
                               "ip_address": t.ip_address()})
                    })
                    .collect::<Vec<_>>()
                    .into();
                let (state, tags) = fs
                    .map(|f| {
                        (
                            f.life_cycle_state().as_str().to_string(),
                            efs_tags(f.tags()),
                        )
                    })
                    .unwrap_or_default();
                Ok(predicted.with(
                    "efs",
                    fs_json(&p.name, &id, &region, &state, targets, &tags),
                ))
            }
            Change::Delete { id, targets } => {
                Self::delete_targets(&client, &targets).await?;
                Self::wait_targets(&client, p, &id, LifeCycleState::Deleted).await?;
                client
                    .delete_file_system()
                    .file_system_id(&id)
                    .send()
                    .await
                    .map_err(|e| api_err(&format!("DeleteFileSystem {id}"), e))?;
                Ok(predicted)
            }
        }
    }
}
