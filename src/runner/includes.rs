//! Dynamic includes (`include_tasks`, `include_role`): evaluated per host, then run once per
//! distinct file and loop item for the hosts that include it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{json, Map, Value};

use super::{lock, IncludeVars, PlayCtx, Runner};
use crate::playbook::{self, Action, Task};

/// Hosts of a dynamic include grouped by (file, loop index), with each host's include vars.
type IncludeGroups = IndexMap<(String, usize), HashMap<String, Arc<Map<String, Value>>>>;

impl Runner {
    pub(super) async fn run_include(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
    ) -> HashSet<String> {
        // Per host: evaluate when/loop, then group hosts by what they include.
        let mut groups: IncludeGroups = IndexMap::new();
        let mut failed = HashSet::new();
        for h in hosts {
            let scope = self.scope(ctx, h, Some(task), inc, None);
            let items = match self.loop_items(task, &scope) {
                Ok(i) => i,
                Err(e) => {
                    self.fail_host(h, task, &e);
                    failed.insert(h.clone());
                    continue;
                }
            };
            let iterations: Vec<Option<Value>> = match items {
                Some(list) => list.into_iter().map(Some).collect(),
                None => vec![None],
            };
            for (i, item) in iterations.into_iter().enumerate() {
                let mut vars = inc.get(h).map(|m| (**m).clone()).unwrap_or_default();
                let loop_var = task.opts.loop_var.clone().unwrap_or_else(|| "item".into());
                if let Some(it) = &item {
                    vars.insert(loop_var.clone(), it.clone());
                    if let Some(iv) = &task.opts.index_var {
                        vars.insert(iv.clone(), json!(i));
                    }
                }
                for v in &task.opts.vars {
                    vars.extend((**v).clone());
                }
                let iscope = self.scope(ctx, h, Some(task), inc, Some(&vars));
                match self.conditions_hold(&task.opts.when, &iscope) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        self.fail_host(h, task, &e);
                        failed.insert(h.clone());
                        continue;
                    }
                }
                let key = match &task.action {
                    Action::IncludeTasks { file } => {
                        match self.templar.template_value(&json!(file), &iscope) {
                            Ok(v) => v.as_str().unwrap_or_default().to_string(),
                            Err(e) => {
                                self.fail_host(h, task, &e);
                                failed.insert(h.clone());
                                continue;
                            }
                        }
                    }
                    Action::IncludeRole { name, tasks_from } => format!("role:{name}:{tasks_from}"),
                    _ => continue,
                };
                groups
                    .entry((key, i))
                    .or_default()
                    .insert(h.clone(), Arc::new(vars));
            }
        }
        for ((key, _), host_vars) in groups {
            let group_hosts: Vec<String> = hosts
                .iter()
                .filter(|h| host_vars.contains_key(*h) && !failed.contains(*h))
                .cloned()
                .collect();
            let mut inherit = task.opts.clone();
            inherit.loop_items = None;
            inherit.when.clear();
            inherit.register = None;
            inherit.vars.clear();
            inherit.include_depth += 1;
            if inherit.include_depth > playbook::MAX_INCLUDE_DEPTH {
                let e = format!(
                    "{key}: includes nested more than {} deep (does a file include itself?)",
                    playbook::MAX_INCLUDE_DEPTH
                );
                for h in &group_hosts {
                    self.fail_host(h, task, &e);
                    failed.insert(h.clone());
                }
                continue;
            }
            let loaded = if let Some(rest) = key.strip_prefix("role:") {
                let (name, tasks_from) = rest.rsplit_once(':').unwrap_or((rest, "main"));
                playbook::load_role_tasks(&self.loader(), name, tasks_from, &task.loc, &inherit)
                    .map(|(roles, tasks, handlers)| {
                        lock(&ctx.handlers).extend(handlers);
                        let _ = roles;
                        tasks
                    })
            } else {
                let path = PathBuf::from(&key);
                let path = if path.is_absolute() {
                    path
                } else {
                    crate::error::tidy_path(&self.pb.dir.join(path))
                };
                playbook::load_task_file(&self.loader(), &path, task.role.clone(), &inherit)
            };
            match loaded {
                Ok(tasks) => {
                    self.reporter
                        .note(&format!("included: {key} for {}", group_hosts.join(", ")));
                    let f = self
                        .run_list(ctx.clone(), tasks, group_hosts, Arc::new(host_vars))
                        .await;
                    failed.extend(f);
                }
                Err(e) => {
                    for h in group_hosts {
                        self.fail_host(&h, task, &e.to_string());
                        failed.insert(h);
                    }
                }
            }
        }
        failed
    }
}
