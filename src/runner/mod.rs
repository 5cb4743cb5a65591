//! Executes a typed playbook: plays in order, hosts of a play in parallel (bounded by
//! `--forks`), tasks in the linear strategy (every host finishes a task before the next one
//! starts), blocks with rescue/always, handlers, loops, registers and facts.
//!
//! The rooms: this file runs plays, batches, task lists and blocks; [`host_task`] runs one task
//! on its hosts (loops, conditions, retries, async); [`actions`] holds the built-in actions and
//! the module call; [`handlers`] the handlers and `meta`; [`includes`] dynamic includes;
//! [`results`] turns results into stats, registers and report lines.

mod actions;
#[cfg(test)]
mod first_found_tests;
mod handlers;
mod host_task;
#[cfg(test)]
mod include_tests;
mod includes;
#[cfg(test)]
mod register_tests;
mod results;
#[cfg(test)]
mod throttle_tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use tokio::sync::{OnceCell, Semaphore};

use crate::connection::{ConnSpec, HostConn, HostKeyPolicy};
use crate::inventory::{load_vars_file, Inventory};
use crate::jobs::Jobs;
use crate::modules::{self, Module};
use crate::playbook::{Action, Loader, Play, Playbook, Task, TaskOpts};
use crate::report::{Reporter, Stats};
use crate::template::{HostVars, Scope, Templar};
use crate::vars::{abs_path, host_scope, HostInputs, PlayInputs};

/// Command-line choices that shape a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub check: bool,
    pub diff: bool,
    pub forks: usize,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Map<String, Value>,
    pub connect_timeout: Duration,
    /// `host_key_checking` from the command line, `ansible.cfg` or the environment; `None` =
    /// not set (strict, unless a host's own ssh arguments say otherwise).
    pub host_key_checking: Option<HostKeyPolicy>,
    /// ansible.cfg's `ssh_args`: ssh options for every host, before its own.
    pub ssh_args: Option<String>,
    /// ansible.cfg's `control_path_dir`: where masters that outlive the run live.
    pub control_path_dir: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct HostState {
    facts: Map<String, Value>,
    /// set_fact and register results (precedence above play/task vars).
    host_facts: Map<String, Value>,
    notified: Vec<String>,
    /// The task and result of the host's last failure (`ansible_failed_task/result` in rescue).
    last_failure: Option<(Value, Value)>,
    failed: bool,
    unreachable: bool,
}

/// One play's run-time context.
struct PlayCtx {
    play: Play,
    vars_files: Map<String, Value>,
    role_defaults: Map<String, Value>,
    role_vars: Map<String, Value>,
    hosts: Vec<String>,
    handlers: Mutex<Vec<Task>>,
    ended: Mutex<bool>,
}

/// A host's connection, opened once by the first task that needs it.
type ConnCell = Arc<OnceCell<Result<Arc<HostConn>, String>>>;

/// Per-host variables of a dynamic include (its loop item, for one host).
type IncludeVars = Arc<HashMap<String, Arc<Map<String, Value>>>>;

pub struct Runner {
    inv: Arc<Inventory>,
    pb: Arc<Playbook>,
    registry: Arc<Vec<Box<dyn Module>>>,
    roles_path: Vec<PathBuf>,
    templar: Arc<Templar>,
    opts: RunOptions,
    reporter: Arc<Reporter>,
    sem: Arc<Semaphore>,
    conns: Mutex<HashMap<String, ConnCell>>,
    state: Mutex<HashMap<String, HostState>>,
    stats: Mutex<IndexMap<String, Stats>>,
    inv_vars: Mutex<HashMap<String, Arc<Map<String, Value>>>>,
    groups: Value,
    /// Background tasks (`async` + `poll: 0`).
    jobs: Jobs,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The overall outcome, mapped to the exit code by the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Ok,
    Failed,
    Unreachable,
}

impl Runner {
    pub fn new(
        inv: Arc<Inventory>,
        pb: Arc<Playbook>,
        registry: Arc<Vec<Box<dyn Module>>>,
        roles_path: Vec<PathBuf>,
        opts: RunOptions,
        reporter: Arc<Reporter>,
    ) -> Runner {
        let groups = inv.groups_value();
        Runner {
            sem: Arc::new(Semaphore::new(opts.forks.max(1))),
            inv,
            pb,
            registry,
            roles_path,
            templar: Arc::new(Templar::new()),
            opts,
            reporter,
            conns: Mutex::default(),
            state: Mutex::default(),
            stats: Mutex::default(),
            inv_vars: Mutex::default(),
            groups,
            jobs: Jobs::default(),
        }
    }

    fn loader(&self) -> Loader<'_> {
        Loader {
            roles_path: self.roles_path.clone(),
            registry: &self.registry,
        }
    }

    /// Inventory-level vars of a host (inventory + group_vars/host_vars of inventory and playbook).
    fn inventory_vars(&self, host: &str) -> Arc<Map<String, Value>> {
        if let Some(v) = lock(&self.inv_vars).get(host) {
            return v.clone();
        }
        let mut v = self.inv.host_vars(host, &[&self.pb.vars_dir]);
        if (host == "localhost" || host == "127.0.0.1") && !self.inv.hosts.contains_key(host) {
            v.entry("ansible_connection").or_insert(json!("local"));
        }
        let v = Arc::new(v);
        lock(&self.inv_vars).insert(host.to_string(), v.clone());
        v
    }

    fn stat(&self, host: &str, f: impl FnOnce(&mut Stats)) {
        let mut s = lock(&self.stats);
        f(s.entry(host.to_string()).or_default());
    }

    /// Runs the whole playbook.
    pub async fn run(self: &Arc<Self>) -> RunOutcome {
        let limit: Option<HashSet<String>> = match &self.opts.limit {
            Some(l) => match self.inv.select(l) {
                Ok(h) => Some(h.into_iter().collect()),
                Err(e) => {
                    self.reporter.warn(&format!("--limit: {e}"));
                    Some(HashSet::new())
                }
            },
            None => None,
        };
        for play in self.pb.plays.clone() {
            let mut hosts = match self.inv.select(&play.hosts) {
                Ok(h) => h,
                Err(e) => {
                    self.reporter.warn(&format!("{}: {e}", play.loc));
                    vec![]
                }
            };
            if let Some(l) = &limit {
                hosts.retain(|h| l.contains(h));
            }
            {
                let st = lock(&self.state);
                hosts.retain(|h| st.get(h).is_none_or(|s| !s.failed && !s.unreachable));
            }
            self.reporter.play_start(&play.name);
            if hosts.is_empty() {
                self.reporter.note("skipping: no hosts matched");
                continue;
            }
            for h in &hosts {
                lock(&self.stats).entry(h.clone()).or_default();
            }
            for batch in batches(&hosts, play.serial.as_ref()) {
                if let Err(e) = self.run_play(&play, batch).await {
                    self.reporter.warn(&e);
                    for h in &hosts {
                        self.stat(h, |s| s.failed += 1);
                        lock(&self.state).entry(h.clone()).or_default().failed = true;
                    }
                }
            }
        }
        self.finish_hosts().await;
        let abandoned = self.jobs.running();
        if !abandoned.is_empty() {
            self.reporter.warn(&format!(
                "async jobs still running when the playbook ended (abandoned): {}",
                abandoned.join(", ")
            ));
        }
        let stats = lock(&self.stats).clone();
        self.reporter.recap(&stats);
        if stats.values().any(|s| s.failed > 0) {
            RunOutcome::Failed
        } else if stats.values().any(|s| s.unreachable > 0) {
            RunOutcome::Unreachable
        } else {
            RunOutcome::Ok
        }
    }

    async fn run_play(self: &Arc<Self>, play: &Play, hosts: Vec<String>) -> Result<(), String> {
        // vars_files are templated with play and extra vars, then loaded.
        let mut vars_files = Map::new();
        let base_scope = Scope::new(self.templar.clone(), {
            let mut m = play.vars.clone();
            m.extend(self.opts.extra_vars.clone());
            m.insert("playbook_dir".into(), json!(abs_path(&self.pb.dir)));
            m.insert("inventory_dir".into(), json!(abs_path(&self.inv.dir)));
            m
        });
        for (f, loc) in &play.vars_files {
            let name = self
                .templar
                .template_value(&json!(f), &base_scope)
                .map_err(|e| format!("{loc}: vars_files: {e}"))?;
            let p = self.pb.dir.join(name.as_str().unwrap_or_default());
            vars_files.extend(load_vars_file(&p).map_err(|e| e.to_string())?);
        }
        let mut role_defaults = Map::new();
        let mut role_vars = Map::new();
        for r in &play.roles {
            role_defaults.extend(r.defaults.clone());
            role_vars.extend(r.vars.clone());
        }
        let ctx = Arc::new(PlayCtx {
            play: play.clone(),
            vars_files,
            role_defaults,
            role_vars,
            hosts: hosts.clone(),
            handlers: Mutex::new(play.handlers.clone()),
            ended: Mutex::new(false),
        });
        let mut active = hosts.clone();
        if play.gather_facts {
            if let Some(setup) = modules::lookup(&self.registry, "setup") {
                let _ = setup;
                let task = Task {
                    loc: play.loc.clone(),
                    name: Some("Gathering Facts".into()),
                    action: Action::Module {
                        name: "setup".into(),
                        args: Map::new(),
                    },
                    opts: TaskOpts {
                        tags: ["always".to_string()].into_iter().collect(),
                        ..Default::default()
                    },
                    role: None,
                };
                let failed = self
                    .run_task(&ctx, &task, &active, &Arc::new(HashMap::new()))
                    .await;
                active.retain(|h| !failed.contains(h));
            }
        }
        for section in &play.sections {
            if active.is_empty() || *lock(&ctx.ended) {
                break;
            }
            let failed = self
                .run_list(
                    ctx.clone(),
                    section.clone(),
                    active.clone(),
                    Arc::new(HashMap::new()),
                )
                .await;
            active.retain(|h| !failed.contains(h));
            if play.any_errors_fatal && !failed.is_empty() {
                active.clear();
            }
            self.flush_handlers(&ctx, &active).await;
        }
        if play.force_handlers {
            let all: Vec<String> = hosts
                .iter()
                .filter(|h| !self.is_unreachable(h))
                .cloned()
                .collect();
            self.flush_handlers(&ctx, &all).await;
        }
        Ok(())
    }

    fn is_unreachable(&self, h: &str) -> bool {
        lock(&self.state).get(h).is_some_and(|s| s.unreachable)
    }

    /// Runs tasks in order on `hosts`; returns the hosts that failed (and were not rescued).
    fn run_list(
        self: &Arc<Self>,
        ctx: Arc<PlayCtx>,
        tasks: Vec<Task>,
        hosts: Vec<String>,
        inc: IncludeVars,
    ) -> BoxFuture<'static, HashSet<String>> {
        let this = self.clone();
        async move {
            let mut active = hosts;
            let mut failed_all = HashSet::new();
            for task in &tasks {
                if active.is_empty() || *lock(&ctx.ended) {
                    break;
                }
                if !this.tag_selected(&task.opts)
                    && !matches!(
                        task.action,
                        Action::Block { .. }
                            | Action::IncludeTasks { .. }
                            | Action::IncludeRole { .. }
                    )
                {
                    continue;
                }
                let failed = match &task.action {
                    Action::Block {
                        block,
                        rescue,
                        always,
                    } => {
                        this.run_block(&ctx, block, rescue, always, &active, &inc)
                            .await
                    }
                    Action::IncludeTasks { .. } | Action::IncludeRole { .. } => {
                        this.run_include(&ctx, task, &active, &inc).await
                    }
                    Action::Meta(m) => {
                        this.run_meta(&ctx, task, m, &mut active).await;
                        HashSet::new()
                    }
                    _ => this.run_task(&ctx, task, &active, &inc).await,
                };
                if ctx.play.any_errors_fatal && !failed.is_empty() {
                    failed_all.extend(active.iter().cloned());
                    active.clear();
                    break;
                }
                active.retain(|h| !failed.contains(h));
                failed_all.extend(failed);
            }
            failed_all
        }
        .boxed()
    }

    async fn run_block(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        block: &[Task],
        rescue: &[Task],
        always: &[Task],
        hosts: &[String],
        inc: &IncludeVars,
    ) -> HashSet<String> {
        let failed = self
            .run_list(ctx.clone(), block.to_vec(), hosts.to_vec(), inc.clone())
            .await;
        let mut still_failed: HashSet<String> = failed
            .iter()
            .filter(|h| !self.is_unreachable(h))
            .cloned()
            .collect();
        let unreachable: HashSet<String> = failed
            .iter()
            .filter(|h| self.is_unreachable(h))
            .cloned()
            .collect();
        if !rescue.is_empty() && !still_failed.is_empty() {
            let to_rescue: Vec<String> = hosts
                .iter()
                .filter(|h| still_failed.contains(*h))
                .cloned()
                .collect();
            for h in &to_rescue {
                // The failure is being handled: the host is no longer failed.
                let mut st = lock(&self.state);
                let hs = st.entry(h.clone()).or_default();
                hs.failed = false;
                if let Some((task, result)) = hs.last_failure.clone() {
                    hs.host_facts.insert("ansible_failed_task".into(), task);
                    hs.host_facts.insert("ansible_failed_result".into(), result);
                }
                drop(st);
                self.stat(h, |s| {
                    s.failed = s.failed.saturating_sub(1);
                    s.rescued += 1;
                });
            }
            let rescue_failed = self
                .run_list(ctx.clone(), rescue.to_vec(), to_rescue, inc.clone())
                .await;
            still_failed = rescue_failed;
        }
        if !always.is_empty() {
            let run_on: Vec<String> = hosts
                .iter()
                .filter(|h| !unreachable.contains(*h) && !self.is_unreachable(h))
                .cloned()
                .collect();
            let always_failed = self
                .run_list(ctx.clone(), always.to_vec(), run_on, inc.clone())
                .await;
            still_failed.extend(always_failed);
        }
        still_failed.extend(unreachable);
        still_failed
    }

    fn tag_selected(&self, opts: &TaskOpts) -> bool {
        let tags = &opts.tags;
        if self
            .opts
            .skip_tags
            .iter()
            .any(|t| tags.contains(t) || (t == "tagged" && !tags.is_empty()))
        {
            return false;
        }
        if tags.contains("never") && !self.opts.tags.iter().any(|t| tags.contains(t)) {
            return false;
        }
        if self.opts.tags.is_empty() || self.opts.tags.iter().any(|t| t == "all") {
            return true;
        }
        if tags.contains("always") {
            return true;
        }
        self.opts.tags.iter().any(|t| {
            tags.contains(t)
                || (t == "untagged" && tags.is_empty())
                || (t == "tagged" && !tags.is_empty())
        })
    }

    /// Builds the variable scope of `host` for `task`.
    fn scope(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        host: &str,
        task: Option<&Task>,
        inc: &IncludeVars,
        extra: Option<&Map<String, Value>>,
    ) -> Arc<Scope> {
        let inv = self.inventory_vars(host);
        let (facts, host_facts) = {
            let st = lock(&self.state);
            st.get(host)
                .map(|s| (s.facts.clone(), s.host_facts.clone()))
                .unwrap_or_default()
        };
        let inc_vars = inc.get(host).cloned();
        let mut task_vars: Vec<&Map<String, Value>> = inc_vars.iter().map(|v| &**v).collect();
        if let Some(t) = task {
            task_vars.extend(t.opts.vars.iter().map(|v| &**v));
        }
        task_vars.extend(extra);
        let me = self.clone();
        let ctx2 = ctx.clone();
        let hostvars = HostVars::new(
            self.inv.hosts.keys().cloned().collect(),
            Box::new(move |h: &str| {
                if !me.inv.knows(h) {
                    return None;
                }
                Some(me.scope_plain(&ctx2, h))
            }),
        );
        let play = PlayInputs {
            inv: &self.inv,
            play_vars: &ctx.play.vars,
            vars_files: &ctx.vars_files,
            role_defaults: &ctx.role_defaults,
            role_vars: &ctx.role_vars,
            extra_vars: &self.opts.extra_vars,
            play_hosts: &ctx.hosts,
            playbook_dir: &self.pb.dir,
            check: self.opts.check,
            diff: self.opts.diff,
            groups: &self.groups,
        };
        let inputs = HostInputs {
            host,
            inventory: &inv,
            facts: &facts,
            host_facts: &host_facts,
            role: task.and_then(|t| t.role.as_deref()),
            task_file: task.map(|t| t.loc.path()),
            task_vars,
        };
        host_scope(self.templar.clone(), &play, inputs, hostvars)
    }

    /// A host's vars as seen through `hostvars` (no task-level vars).
    fn scope_plain(self: &Arc<Self>, ctx: &Arc<PlayCtx>, host: &str) -> Arc<Scope> {
        self.scope(ctx, host, None, &Arc::new(HashMap::new()), None)
    }

    /// The host's connection, opened on first use.
    async fn connection(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        host: &str,
    ) -> Result<Arc<HostConn>, String> {
        let cell = lock(&self.conns)
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let r = cell
            .get_or_init(|| async {
                let scope = self.scope_plain(ctx, host);
                let get = |k: &str| -> Result<Option<String>, String> {
                    Ok(scope.get_json(k)?.and_then(|v| match v {
                        Value::String(s) => Some(s),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    }))
                };
                let spec = ConnSpec::from_vars(
                    host,
                    &get,
                    self.opts.connect_timeout,
                    self.opts.host_key_checking,
                    self.opts.ssh_args.as_deref(),
                )?
                .with_control_dir(self.opts.control_path_dir.clone());
                HostConn::open(spec)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await;
        r.clone()
    }

    /// Runs what tasks left to do on their hosts when the run ends (check mode's scratch space
    /// removed), on every host whose connection opened; a failure is a warning.
    async fn finish_hosts(&self) {
        let cells: Vec<(String, ConnCell)> = lock(&self.conns)
            .iter()
            .map(|(h, c)| (h.clone(), c.clone()))
            .collect();
        for (host, cell) in cells {
            if let Some(Ok(conn)) = cell.get() {
                for e in conn.run_at_end().await {
                    self.reporter.warn(&format!(
                        "{host}: cleanup at the end of the run failed: {e}"
                    ));
                }
            }
        }
    }

    /// Hosts that became unreachable in this run.
    pub fn unreachable_hosts(&self) -> Vec<String> {
        lock(&self.state)
            .iter()
            .filter(|(_, s)| s.unreachable)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

/// `serial`: a number, a percentage, or a list of them (the last repeats).
pub fn batches(hosts: &[String], serial: Option<&Value>) -> Vec<Vec<String>> {
    let Some(serial) = serial else {
        return vec![hosts.to_vec()];
    };
    let sizes: Vec<Value> = match serial {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let size_of = |v: &Value| -> usize {
        let n = match v {
            Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
            Value::String(s) if s.ends_with('%') => {
                let pct: f64 = s.trim_end_matches('%').trim().parse().unwrap_or(100.0);
                ((hosts.len() as f64) * pct / 100.0).floor() as usize
            }
            Value::String(s) => s.trim().parse().unwrap_or(0),
            _ => 0,
        };
        if n == 0 {
            if matches!(v, Value::Number(_)) && v.as_u64() == Some(0) {
                hosts.len()
            } else {
                1
            }
        } else {
            n
        }
    };
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < hosts.len() {
        let size = size_of(&sizes[k.min(sizes.len() - 1)]).max(1);
        out.push(hosts[i..(i + size).min(hosts.len())].to_vec());
        i += size;
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_batches() {
        let hosts: Vec<String> = (1..=5).map(|i| format!("h{i}")).collect();
        assert_eq!(batches(&hosts, None).len(), 1);
        let b = batches(&hosts, Some(&json!(2)));
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        let b = batches(&hosts, Some(&json!([1, "50%"])));
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 2, 2]);
    }
}
