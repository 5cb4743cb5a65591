//! Executes a typed playbook: plays in order, hosts of a play in parallel (bounded by
//! `--forks`), tasks in the linear strategy (every host finishes a task before the next one
//! starts), blocks with rescue/always, handlers, loops, registers and facts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use tokio::sync::{OnceCell, Semaphore};

use crate::connection::{Become, ConnSpec, HostConn, HostKeyPolicy};
use crate::inventory::{load_vars_file, Inventory};
use crate::jobs::{async_mode, AsyncMode, Jobs};
use crate::modules::{
    self, args::to_bool, FileKind, Module, ModuleError, Outcome, TaskCtx, TaskEnv,
};
use crate::playbook::{self, Action, Loader, Play, Playbook, Role, Task, TaskOpts};
use crate::report::{HostResult, Reporter, Stats, Status};
use crate::template::{HostVars, Scope, Templar, OMIT};
use crate::vars::Layers;

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

/// Hosts of a dynamic include grouped by (file, loop index), with each host's include vars.
type IncludeGroups = IndexMap<(String, usize), HashMap<String, Arc<Map<String, Value>>>>;

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
            m.insert("playbook_dir".into(), json!(abs(&self.pb.dir)));
            m.insert("inventory_dir".into(), json!(abs(&self.inv.dir)));
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
        let role: Option<&Arc<Role>> = task.and_then(|t| t.role.as_ref());
        let mut layers = Layers {
            role_defaults: vec![&ctx.role_defaults],
            inventory: Some(&inv),
            facts: Some(&facts),
            play_vars: Some(&ctx.play.vars),
            vars_files: Some(&ctx.vars_files),
            role_vars: vec![&ctx.role_vars],
            block_task_vars: vec![],
            host_facts: Some(&host_facts),
            extra_vars: Some(&self.opts.extra_vars),
        };
        if let Some(r) = role {
            layers.role_defaults.push(&r.defaults);
            layers.role_vars.push(&r.vars);
        }
        let inc_vars = inc.get(host).cloned();
        if let Some(iv) = &inc_vars {
            layers.block_task_vars.push(iv);
        }
        if let Some(t) = task {
            for v in &t.opts.vars {
                layers.block_task_vars.push(v);
            }
        }
        if let Some(e) = extra {
            layers.block_task_vars.push(e);
        }
        let mut raw = layers.flatten();
        raw.insert("inventory_hostname".into(), json!(host));
        raw.insert(
            "inventory_hostname_short".into(),
            json!(host.split('.').next().unwrap_or(host)),
        );
        raw.insert("group_names".into(), json!(self.inv.group_names(host)));
        raw.insert("play_hosts".into(), json!(ctx.hosts));
        raw.insert("ansible_play_hosts".into(), json!(ctx.hosts));
        raw.insert("ansible_play_batch".into(), json!(ctx.hosts));
        raw.insert("ansible_play_hosts_all".into(), json!(ctx.hosts));
        raw.insert("ansible_check_mode".into(), json!(self.opts.check));
        raw.insert("ansible_diff_mode".into(), json!(self.opts.diff));
        raw.insert("playbook_dir".into(), json!(abs(&self.pb.dir)));
        raw.insert("inventory_dir".into(), json!(abs(&self.inv.dir)));
        raw.insert("inventory_file".into(), json!(abs(&self.inv.source)));
        raw.insert(
            "ansible_facts".into(),
            Value::Object(
                facts
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.strip_prefix("ansible_").unwrap_or(k).to_string(),
                            v.clone(),
                        )
                    })
                    .collect(),
            ),
        );
        raw.insert(
            "ansible_version".into(),
            json!({"full": "2.17.0", "major": 2, "minor": 17, "string": "2.17.0 (hfplay)"}),
        );
        if let Some(r) = role {
            raw.insert("role_path".into(), json!(abs(&r.path)));
            raw.insert("role_name".into(), json!(r.name));
        }
        let mut fixed = HashMap::new();
        fixed.insert(
            "groups".to_string(),
            minijinja::Value::from_serialize(&self.groups),
        );
        let me = self.clone();
        let ctx2 = ctx.clone();
        let hv_hosts: Vec<String> = self.inv.hosts.keys().cloned().collect();
        let hostvars = HostVars::new(
            hv_hosts,
            Box::new(move |h: &str| {
                if !me.inv.knows(h) {
                    return None;
                }
                Some(me.scope_plain(&ctx2, h))
            }),
        );
        fixed.insert(
            "hostvars".to_string(),
            minijinja::Value::from_object(hostvars),
        );
        Scope::with_fixed(self.templar.clone(), raw, fixed)
    }

    /// A host's vars as seen through `hostvars` (no task-level vars).
    fn scope_plain(self: &Arc<Self>, ctx: &Arc<PlayCtx>, host: &str) -> Arc<Scope> {
        self.scope(ctx, host, None, &Arc::new(HashMap::new()), None)
    }

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
                let spec = self.conn_spec(host, &scope)?;
                HostConn::open(spec)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await;
        r.clone()
    }

    fn conn_spec(&self, host: &str, scope: &Arc<Scope>) -> Result<ConnSpec, String> {
        let get = |k: &str| -> Result<Option<String>, String> {
            Ok(scope.get_json(k)?.and_then(|v| match v {
                Value::String(s) => Some(s),
                Value::Null => None,
                other => Some(other.to_string()),
            }))
        };
        let connection = get("ansible_connection")?.unwrap_or_else(|| "ssh".into());
        let mut ssh_options = Vec::new();
        for key in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            if let Some(args) = get(key)? {
                let words = crate::words::shell_words(&args);
                let mut it = words.iter();
                while let Some(w) = it.next() {
                    let opt = if w == "-o" {
                        it.next().cloned()
                    } else {
                        w.strip_prefix("-o").map(str::to_string)
                    };
                    if let Some(o) = opt {
                        if let Some((k, v)) = o.split_once('=') {
                            ssh_options.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                }
            }
        }
        let host_keys = self.host_key_policy(host, &get, &mut ssh_options)?;
        let port = match get("ansible_port")?.or(get("ansible_ssh_port")?) {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{host}: ansible_port {p:?} is not a port number"))?,
            ),
            None => None,
        };
        Ok(ConnSpec {
            inventory_name: host.to_string(),
            address: get("ansible_host")?
                .or(get("ansible_ssh_host")?)
                .unwrap_or_else(|| host.to_string()),
            port,
            user: get("ansible_user")?.or(get("ansible_ssh_user")?),
            key_file: get("ansible_ssh_private_key_file")?.map(PathBuf::from),
            ssh_options,
            local: connection == "local",
            connect_timeout: self.opts.connect_timeout,
            host_keys,
        })
    }

    /// Ansible's order: a disabled `host_key_checking` (command line, config, environment or the
    /// host's `ansible_host_key_checking`) wins; else the host's own `-o StrictHostKeyChecking`;
    /// else the setting, strict by default. The ssh option is taken out of `ssh_options`: hfplay
    /// passes the policy to ssh itself.
    fn host_key_policy(
        &self,
        host: &str,
        get: &dyn Fn(&str) -> Result<Option<String>, String>,
        ssh_options: &mut Vec<(String, String)>,
    ) -> Result<HostKeyPolicy, String> {
        let mut from_args = None;
        let mut bad = None;
        ssh_options.retain(|(k, v)| {
            if !k.eq_ignore_ascii_case("StrictHostKeyChecking") {
                return true;
            }
            match HostKeyPolicy::parse_ssh_option(v) {
                Some(p) => from_args = from_args.or(Some(p)),
                None => bad = Some(v.clone()),
            }
            false
        });
        if let Some(v) = bad {
            return Err(format!(
                "{host}: ssh option StrictHostKeyChecking={v:?}: expected yes, accept-new or no"
            ));
        }
        let mut setting = self.opts.host_key_checking;
        for key in ["ansible_host_key_checking", "ansible_ssh_host_key_checking"] {
            if let Some(v) = get(key)? {
                setting =
                    Some(HostKeyPolicy::parse_setting(&v).ok_or_else(|| {
                        format!("{host}: {key}={v:?}: {}", HostKeyPolicy::EXPECTED)
                    })?);
                break;
            }
        }
        Ok(match (setting, from_args) {
            (Some(HostKeyPolicy::Off), _) => HostKeyPolicy::Off,
            (_, Some(p)) => p,
            (Some(p), None) => p,
            (None, None) => HostKeyPolicy::Strict,
        })
    }

    async fn run_meta(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        m: &str,
        active: &mut Vec<String>,
    ) {
        match m {
            "flush_handlers" => self.flush_handlers(ctx, active).await,
            "end_play" => {
                *lock(&ctx.ended) = true;
            }
            "end_host" => {
                // Ends the play for hosts where the task's condition holds.
                let mut ended = Vec::new();
                for h in active.iter() {
                    let scope = self.scope(ctx, h, Some(task), &Arc::new(HashMap::new()), None);
                    if self
                        .conditions_hold(&task.opts.when, &scope)
                        .unwrap_or(false)
                    {
                        ended.push(h.clone());
                    }
                }
                active.retain(|h| !ended.contains(h));
            }
            "clear_facts" => {
                for h in active.iter() {
                    lock(&self.state)
                        .entry(h.clone())
                        .or_default()
                        .facts
                        .clear();
                }
            }
            _ => {}
        }
    }

    async fn flush_handlers(self: &Arc<Self>, ctx: &Arc<PlayCtx>, hosts: &[String]) {
        // Handlers may notify later handlers; bounded passes.
        for _ in 0..10 {
            let handlers = lock(&ctx.handlers).clone();
            // Decide every host's handlers before any runs: one notification can reach several
            // handlers (`listen`), and a handler notified twice runs once.
            let mut targets: Vec<Vec<String>> = vec![Vec::new(); handlers.len()];
            {
                let mut st = lock(&self.state);
                for host in hosts {
                    let s = st.entry(host.clone()).or_default();
                    if s.notified.is_empty() {
                        continue;
                    }
                    for (i, h) in handlers.iter().enumerate() {
                        if s.notified.iter().any(|n| h.answers_notify(n)) {
                            targets[i].push(host.clone());
                        }
                    }
                    s.notified.clear();
                }
            }
            if targets.iter().all(Vec::is_empty) {
                break;
            }
            let mut failed: HashSet<String> = HashSet::new();
            for (h, hosts_of) in handlers.iter().zip(targets) {
                let run_on: Vec<String> = hosts_of
                    .into_iter()
                    .filter(|x| !failed.contains(x))
                    .collect();
                if run_on.is_empty() {
                    continue;
                }
                failed.extend(
                    self.run_task_kind(
                        ctx,
                        h,
                        &run_on,
                        &Arc::new(HashMap::new()),
                        "RUNNING HANDLER",
                    )
                    .await,
                );
            }
        }
    }

    async fn run_include(
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

    /// Fails `host` at `task` with a controller-side error (template, loop, include).
    fn fail_host(&self, host: &str, task: &Task, msg: &str) {
        let r = HostResult {
            status: Status::Failed,
            ignored: false,
            item: None,
            msg: located(task, host, msg),
            diffs: vec![],
            result: json!({}),
            no_log: false,
            delegated: None,
        };
        let result = json!({"failed": true, "msg": r.msg.clone()});
        self.reporter.host_result(host, &r);
        self.stat(host, |s| s.failed += 1);
        let mut st = lock(&self.state);
        let hs = st.entry(host.to_string()).or_default();
        hs.failed = true;
        hs.last_failure = Some((failed_task_value(task), result));
    }

    fn conditions_hold(&self, conds: &[Value], scope: &Arc<Scope>) -> Result<bool, String> {
        for c in conds {
            let ok = match c {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_i64() != Some(0),
                Value::String(s) => self
                    .templar
                    .eval_bool(s, scope)
                    .map_err(|e| format!("error while evaluating conditional ({s}): {e}"))?,
                _ => false,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn loop_items(&self, task: &Task, scope: &Arc<Scope>) -> Result<Option<Vec<Value>>, String> {
        let Some(items) = &task.opts.loop_items else {
            return Ok(None);
        };
        let v = self
            .templar
            .template_value(items, scope)
            .map_err(|e| format!("loop: {e}"))?;
        match v {
            Value::Array(a) => Ok(Some(a)),
            Value::Null => Ok(Some(vec![])),
            Value::String(s) if s.is_empty() => Ok(Some(vec![])),
            other => Err(format!("loop needs a list, got {}", short_json(&other))),
        }
    }

    /// Runs a simple task on all hosts in parallel; returns hosts that failed.
    async fn run_task(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
    ) -> HashSet<String> {
        self.run_task_kind(ctx, task, hosts, inc, "TASK").await
    }

    async fn run_task_kind(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
        kind: &str,
    ) -> HashSet<String> {
        let title = self.task_title(ctx, task, hosts, inc);
        self.reporter.task_start(kind, &title);
        let run_hosts: Vec<String> = if task.opts.run_once {
            hosts.iter().take(1).cloned().collect()
        } else {
            hosts.to_vec()
        };
        let futures = run_hosts.iter().map(|h| {
            let this = self.clone();
            let ctx = ctx.clone();
            let inc = inc.clone();
            let h = h.clone();
            let title = title.clone();
            async move {
                let _permit = this.sem.acquire().await;
                this.reporter.host_busy(&h, &title);
                let r = this.run_on_host(&ctx, task, &h, &inc).await;
                this.reporter.host_idle(&h);
                (h, r)
            }
        });
        let mut all = std::pin::pin!(futures::future::join_all(futures));
        let every = Duration::from_secs(60);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let results = loop {
            tokio::select! {
                r = &mut all => break r,
                _ = tick.tick() => self.reporter.still_running(&title),
            }
        };
        let mut failed = HashSet::new();
        for (h, (registered, host_failed)) in results {
            if host_failed {
                failed.insert(h.clone());
            }
            // run_once: the one result applies to every host of the batch.
            if task.opts.run_once {
                if let (Some(name), Some(reg)) = (&task.opts.register, &registered) {
                    for other in hosts {
                        lock(&self.state)
                            .entry(other.clone())
                            .or_default()
                            .host_facts
                            .insert(name.clone(), reg.clone());
                    }
                }
                if host_failed {
                    failed.extend(hosts.iter().cloned());
                }
            }
        }
        failed
    }

    /// The task's name for banners, templated like Ansible with the first host's variables
    /// (`Install PostgreSQL {{ postgres_version }}`); the raw name when that fails.
    fn task_title(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
    ) -> String {
        let raw = task.display_name();
        let Some(first) = hosts.first() else {
            return raw;
        };
        if !raw.contains("{{") {
            return raw;
        }
        let scope = self.scope(ctx, first, Some(task), inc, None);
        match self.templar.template_value(&json!(raw), &scope) {
            Ok(Value::String(s)) => s,
            Ok(other) => value_label(&other),
            Err(_) => raw,
        }
    }

    /// One task on one host (all loop items). Returns (registered value, failed?).
    async fn run_on_host(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        inc: &IncludeVars,
    ) -> (Option<Value>, bool) {
        let scope = self.scope(ctx, host, Some(task), inc, None);
        let fail_now = |this: &Arc<Self>, msg: String| -> (Option<Value>, bool) {
            this.fail_host(host, task, &msg);
            (None, true)
        };
        let items = match self.loop_items(task, &scope) {
            Ok(i) => i,
            Err(e) => return fail_now(self, e),
        };
        let no_log = match &task.opts.no_log {
            Some(v) => match self.templar.template_value(v, &scope) {
                Ok(v) => to_bool(&v).unwrap_or(false),
                Err(e) => return fail_now(self, e),
            },
            None => false,
        };
        let mode = match self.async_mode(task, &scope) {
            Ok(m) => m,
            Err(e) => return fail_now(self, e),
        };
        if let Some(AsyncMode::Background(limit)) = mode {
            if items.is_some() {
                return fail_now(self, "async with poll: 0 in a loop is not supported".into());
            }
            return self.start_job(ctx, task, host, &scope, limit, no_log).await;
        }
        let loop_var = task.opts.loop_var.clone().unwrap_or_else(|| "item".into());
        let Some(items) = items else {
            let (res, status) = self.run_item(ctx, task, host, &scope, None, no_log).await;
            let failed = self.account(host, task, &res, status, None, no_log, ctx);
            return (Some(res), failed);
        };
        let mut results = Vec::new();
        let (mut any_changed, mut any_failed, mut all_skipped) = (false, false, true);
        let total = items.len();
        for (i, item) in items.into_iter().enumerate() {
            let mut extra = Map::new();
            extra.insert(loop_var.clone(), item.clone());
            extra.insert("ansible_loop_var".into(), json!(loop_var));
            extra.insert("ansible_loop".into(), json!({"index": i + 1, "index0": i, "first": i == 0, "last": i + 1 == total, "length": total}));
            if let Some(iv) = &task.opts.index_var {
                extra.insert(iv.clone(), json!(i));
            }
            let iscope = self.scope(ctx, host, Some(task), inc, Some(&extra));
            let label = match &task.opts.loop_label {
                Some(l) => self
                    .templar
                    .template_value(&json!(l), &iscope)
                    .map(|v| value_label(&v))
                    .unwrap_or_else(|_| value_label(&item)),
                None => value_label(&item),
            };
            let (mut res, status) = self
                .run_item(ctx, task, host, &iscope, Some(label.clone()), no_log)
                .await;
            // set_fact in a loop: each item sees the facts set by the previous ones.
            if let Some(Value::Object(facts)) = res.get("__set_facts") {
                let mut st = lock(&self.state);
                let hs = st.entry(host.to_string()).or_default();
                for (k, v) in facts {
                    hs.host_facts.insert(k.clone(), v.clone());
                }
            }
            self.report_item(host, task, &res, status, Some(label), no_log);
            match status {
                Status::Changed => {
                    any_changed = true;
                    all_skipped = false;
                }
                Status::Ok => all_skipped = false,
                Status::Failed | Status::Unreachable => {
                    any_failed = true;
                    all_skipped = false;
                }
                Status::Skipped => {}
            }
            if let Value::Object(m) = &mut res {
                m.insert(loop_var.clone(), item);
                m.insert("ansible_loop_var".into(), json!(loop_var));
            }
            results.push(res);
            if status == Status::Unreachable {
                break;
            }
        }
        let status = if any_failed {
            Status::Failed
        } else if any_changed {
            Status::Changed
        } else if all_skipped {
            Status::Skipped
        } else {
            Status::Ok
        };
        let mut agg = json!({"changed": any_changed, "failed": any_failed, "skipped": all_skipped && total > 0, "results": results, "msg": if any_failed { "One or more items failed" } else { "All items completed" }});
        if total == 0 {
            agg["skipped"] = json!(true);
            agg["skipped_reason"] = json!("No items in the list");
        }
        let failed = self.account(host, task, &agg, status, Some(()), no_log, ctx);
        (Some(agg), failed)
    }

    /// The task's `async` / `poll`, templated.
    fn async_mode(&self, task: &Task, scope: &Arc<Scope>) -> Result<Option<AsyncMode>, String> {
        let Some(a) = &task.opts.async_ else {
            return Ok(None);
        };
        let a = self.templar.template_value(a, scope)?;
        let p = match &task.opts.poll {
            Some(p) => Some(self.templar.template_value(p, scope)?),
            None => None,
        };
        async_mode(Some(&a), p.as_ref())
    }

    /// `async` + `poll: 0` on one host: unless `when` skips it, the task runs in the background
    /// and the job id is registered now (see src/jobs.rs).
    async fn start_job(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
        limit: Duration,
        no_log: bool,
    ) -> (Option<Value>, bool) {
        match self.conditions_hold(&task.opts.when, scope) {
            Ok(true) => {}
            Ok(false) => {
                let (res, status) = self.run_item(ctx, task, host, scope, None, no_log).await;
                let failed = self.account(host, task, &res, status, None, no_log, ctx);
                return (Some(res), failed);
            }
            Err(e) => {
                self.fail_host(host, task, &e);
                return (None, true);
            }
        }
        let work = {
            let (this, ctx, task, host, scope) = (
                self.clone(),
                ctx.clone(),
                task.clone(),
                host.to_string(),
                scope.clone(),
            );
            async move {
                this.run_item(&ctx, &task, &host, &scope, None, no_log)
                    .await
            }
        };
        let (_, res) = self.jobs.start(host, limit, work);
        let failed = self.account(host, task, &res, Status::Ok, None, no_log, ctx);
        (Some(res), failed)
    }

    fn report_item(
        &self,
        host: &str,
        task: &Task,
        res: &Value,
        status: Status,
        label: Option<String>,
        no_log: bool,
    ) {
        let ignored = status == Status::Failed && self.ignore_errors(task, res);
        self.reporter.host_result(
            host,
            &HostResult {
                status,
                ignored,
                item: label,
                msg: res
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                diffs: diffs_of(res),
                result: strip_internal(res),
                no_log,
                delegated: res
                    .get("__delegated")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            },
        );
    }

    fn ignore_errors(&self, _task: &Task, res: &Value) -> bool {
        res.get("__ignore_errors")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Records the task's final outcome for a host: stats, register, notify, failure.
    #[allow(clippy::too_many_arguments)]
    fn account(
        &self,
        host: &str,
        task: &Task,
        res: &Value,
        status: Status,
        looped: Option<()>,
        no_log: bool,
        ctx: &Arc<PlayCtx>,
    ) -> bool {
        // A notify no handler answers fails the task, as in Ansible (handlers that dynamic
        // includes bring are known by now; the static case already failed at load).
        let unknown = if status == Status::Changed {
            let handlers = lock(&ctx.handlers);
            task.opts
                .notify
                .iter()
                .find(|n| !handlers.iter().any(|h| h.answers_notify(n)))
                .cloned()
        } else {
            None
        };
        let refused;
        let was_refused = unknown.is_some();
        let (res, status) = match unknown {
            Some(n) => {
                refused = json!({"failed": true, "msg": located(task, host, &format!("notify: no handler is named or listens to {n:?}"))});
                (&refused, Status::Failed)
            }
            None => (res, status),
        };
        if looped.is_none() || was_refused {
            self.report_item(host, task, res, status, None, no_log);
        }
        let ignored = status == Status::Failed
            && (self.ignore_errors(task, res)
                || res
                    .get("results")
                    .and_then(Value::as_array)
                    .is_some_and(|rs| {
                        rs.iter().all(|r| {
                            r.get("failed") != Some(&json!(true)) || self.ignore_errors(task, r)
                        })
                    }));
        let mut st = lock(&self.state);
        let hs = st.entry(host.to_string()).or_default();
        if let Some(name) = &task.opts.register {
            hs.host_facts.insert(name.clone(), strip_internal(res));
        }
        if let Some(Value::Object(facts)) = res.get("__set_facts") {
            for (k, v) in facts {
                hs.host_facts.insert(k.clone(), v.clone());
            }
        }
        if let Some(Value::Object(facts)) = res.get("ansible_facts") {
            for (k, v) in facts {
                hs.facts.insert(k.clone(), v.clone());
                if !k.starts_with("ansible_") {
                    hs.facts.insert(format!("ansible_{k}"), v.clone());
                }
            }
        }
        if status == Status::Changed {
            for n in &task.opts.notify {
                if !hs.notified.contains(n) {
                    hs.notified.push(n.clone());
                }
            }
        }
        let failed = match status {
            Status::Unreachable => {
                hs.unreachable = true;
                !task.opts.ignore_unreachable
            }
            Status::Failed if !ignored => {
                hs.failed = true;
                hs.last_failure = Some((failed_task_value(task), strip_internal(res)));
                true
            }
            _ => false,
        };
        drop(st);
        self.stat(host, |s| match status {
            Status::Ok => s.ok += 1,
            Status::Changed => {
                s.ok += 1;
                s.changed += 1
            }
            Status::Skipped => s.skipped += 1,
            Status::Failed if ignored => {
                s.ok += 1;
                s.ignored += 1
            }
            Status::Failed => s.failed += 1,
            Status::Unreachable => s.unreachable += 1,
        });
        failed
    }

    /// One iteration: conditions, templated args, the action, changed_when/failed_when/until.
    async fn run_item(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
        _label: Option<String>,
        no_log: bool,
    ) -> (Value, Status) {
        let failure = |msg: &str, ignored: bool| {
            let mut r = json!({"failed": true, "msg": located(task, host, msg)});
            if ignored {
                r["__ignore_errors"] = json!(true);
            }
            (r, Status::Failed)
        };
        let ignore_errors = match &task.opts.ignore_errors {
            Some(v) => match self.templar.template_value(v, scope) {
                Ok(v) => to_bool(&v).unwrap_or(false),
                Err(e) => return failure(&e, false),
            },
            None => false,
        };
        // As in Ansible, ignore_errors also covers a task that fails before its action runs
        // (an undefined variable in `when`, a bad argument).
        let err = |msg: String| failure(&msg, ignore_errors);
        match self.conditions_hold(&task.opts.when, scope) {
            Ok(true) => {}
            Ok(false) => {
                return (
                    json!({"changed": false, "skipped": true, "skip_reason": "Conditional result was False"}),
                    Status::Skipped,
                )
            }
            Err(e) => return err(e),
        }
        let retries = match &task.opts.until {
            Some(_) => match task
                .opts
                .retries
                .as_ref()
                .map(|r| self.templar.template_value(r, scope))
            {
                Some(Ok(v)) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(3),
                Some(Err(e)) => return err(e),
                None => 3,
            },
            None => 0,
        };
        let delay = match task
            .opts
            .delay
            .as_ref()
            .map(|r| self.templar.template_value(r, scope))
        {
            Some(Ok(v)) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(5),
            Some(Err(e)) => return err(e),
            None => 5,
        };
        let timeout = match task
            .opts
            .timeout
            .as_ref()
            .map(|r| self.templar.template_value(r, scope))
        {
            Some(Ok(v)) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(0) | None => {
                    return err(format!(
                        "timeout: expected a number of seconds > 0, got {v}"
                    ))
                }
                Some(n) => Some(Duration::from_secs(n)),
            },
            Some(Err(e)) => return err(e),
            None => None,
        };
        // async with poll > 0: the task waits in place, failed after `async` seconds.
        let timeout = match self.async_mode(task, scope) {
            Ok(Some(AsyncMode::Wait(limit))) => Some(timeout.map_or(limit, |t| t.min(limit))),
            Ok(_) => timeout,
            Err(e) => return err(e),
        };
        let mut attempt = 0;
        loop {
            let action = self.run_action(ctx, task, host, scope);
            let (mut res, mut status) = match timeout {
                None => action.await,
                Some(t) => match tokio::time::timeout(t, action).await {
                    Ok(r) => r,
                    // As Ansible's task `timeout`: the attempt fails (until/retries may retry).
                    Err(_) => (
                        json!({"failed": true, "msg": located(task, host, &format!("the task timed out after {} seconds", t.as_secs()))}),
                        Status::Failed,
                    ),
                },
            };
            if status == Status::Unreachable {
                return (res, status);
            }
            if status != Status::Skipped {
                // changed_when / failed_when see the result under the register name.
                let needs_eval = task.opts.changed_when.is_some()
                    || task.opts.failed_when.is_some()
                    || task.opts.until.is_some();
                if needs_eval {
                    let mut extra = Map::new();
                    let clean = strip_internal(&res);
                    if let Some(name) = &task.opts.register {
                        extra.insert(name.clone(), clean.clone());
                    }
                    if let Value::Object(m) = &clean {
                        // Ansible also exposes the result's keys (rc, stdout) directly.
                        for (k, v) in m {
                            extra.entry(k.clone()).or_insert(v.clone());
                        }
                    }
                    let mut merged = scope.raw().clone();
                    merged.extend(extra);
                    let rscope = Scope::with_fixed(self.templar.clone(), merged, fixed_of(scope));
                    if let Some(cw) = &task.opts.changed_when {
                        match self.conditions_hold_any(cw, &rscope) {
                            Ok(c) => {
                                res["changed"] = json!(c);
                                if status != Status::Failed {
                                    status = if c { Status::Changed } else { Status::Ok };
                                }
                            }
                            Err(e) => return err(e),
                        }
                    }
                    if let Some(fw) = &task.opts.failed_when {
                        match self.conditions_hold_any(fw, &rscope) {
                            Ok(f) => {
                                res["failed"] = json!(f);
                                if f {
                                    status = Status::Failed;
                                    if res.get("msg").is_none_or(|m| m.as_str() == Some("")) {
                                        res["msg"] = json!("failed_when condition was met");
                                    }
                                } else if status == Status::Failed {
                                    status = if res.get("changed") == Some(&json!(true)) {
                                        Status::Changed
                                    } else {
                                        Status::Ok
                                    };
                                }
                            }
                            Err(e) => return err(e),
                        }
                    }
                    if let Some(until) = &task.opts.until {
                        let done = self
                            .conditions_hold(std::slice::from_ref(until), &rscope)
                            .unwrap_or(false);
                        if !done && attempt < retries {
                            attempt += 1;
                            let raw = task.display_name();
                            let name = match self.templar.template_value(&json!(raw), scope) {
                                Ok(Value::String(s)) => s,
                                _ => raw,
                            };
                            // Why it retries: the result's message, first line, shortened.
                            let why = res
                                .get("msg")
                                .filter(|_| !no_log)
                                .and_then(Value::as_str)
                                .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
                                .map(|l| {
                                    let l: String = l.chars().take(240).collect();
                                    format!(": {l}")
                                })
                                .unwrap_or_default();
                            // Polling a background job is waiting, not failing: no line per
                            // poll (the "still running" lines show a long wait).
                            if !matches!(task.action, Action::AsyncStatus { .. }) {
                                self.reporter.note(&format!(
                                    "FAILED - RETRYING: [{host}]: {name} ({} retries left){why}",
                                    retries - attempt + 1
                                ));
                            }
                            tokio::time::sleep(Duration::from_secs(delay)).await;
                            continue;
                        }
                        if !done {
                            status = Status::Failed;
                            res["failed"] = json!(true);
                            res["attempts"] = json!(attempt + 1);
                        }
                    }
                }
            }
            if status == Status::Failed && ignore_errors {
                res["__ignore_errors"] = json!(true);
            }
            return (res, status);
        }
    }

    /// changed_when / failed_when: a list means all must hold, as in Ansible.
    fn conditions_hold_any(&self, conds: &[Value], scope: &Arc<Scope>) -> Result<bool, String> {
        self.conditions_hold(conds, scope)
    }

    async fn run_action(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
    ) -> (Value, Status) {
        let err = |msg: String| {
            (
                json!({"failed": true, "msg": located(task, host, &msg)}),
                Status::Failed,
            )
        };
        let tmpl_args = |args: &Map<String, Value>| -> Result<Map<String, Value>, String> {
            match self
                .templar
                .template_value(&Value::Object(args.clone()), scope)?
            {
                Value::Object(mut m) => {
                    m.retain(|_, v| v.as_str() != Some(OMIT));
                    Ok(m)
                }
                _ => Err("arguments must be a mapping".into()),
            }
        };
        let check = match &task.opts.check_mode {
            Some(v) => match self.templar.template_value(v, scope) {
                Ok(v) => to_bool(&v).unwrap_or(self.opts.check),
                Err(e) => return err(e),
            },
            None => self.opts.check,
        };
        match &task.action {
            Action::Debug { args } => {
                let a = match tmpl_args(args) {
                    Ok(a) => a,
                    Err(e) => return err(e),
                };
                if let Some(var) = args.get("var").and_then(Value::as_str) {
                    let v = match self.templar.eval(var, scope) {
                        Ok(v) => v,
                        Err(_) => json!("VARIABLE IS NOT DEFINED!"),
                    };
                    return (
                        json!({"changed": false, "msg": {var: v}, "__debug": true}),
                        Status::Ok,
                    );
                }
                let msg = a.get("msg").cloned().unwrap_or(json!("Hello world!"));
                (
                    json!({"changed": false, "msg": msg, "__debug": true}),
                    Status::Ok,
                )
            }
            Action::SetFact { args } => match tmpl_args(args) {
                Ok(a) => {
                    let facts = Value::Object(a.clone());
                    (
                        json!({"changed": false, "ansible_facts_set": facts.clone(), "__set_facts": facts}),
                        Status::Ok,
                    )
                }
                Err(e) => err(e),
            },
            Action::Assert { args } => {
                let that = match args.get("that") {
                    Some(Value::Array(a)) => a.clone(),
                    Some(other) => vec![other.clone()],
                    None => vec![],
                };
                for cond in &that {
                    match self.conditions_hold(std::slice::from_ref(cond), scope) {
                        Ok(true) => {}
                        Ok(false) => {
                            let msg = match args.get("fail_msg").or_else(|| args.get("msg")) {
                                Some(m) => self
                                    .templar
                                    .template_value(m, scope)
                                    .map(|v| value_label(&v))
                                    .unwrap_or_else(|e| e),
                                None => "Assertion failed".into(),
                            };
                            return (
                                json!({"failed": true, "changed": false, "assertion": cond, "evaluated_to": false, "msg": msg}),
                                Status::Failed,
                            );
                        }
                        Err(e) => return err(e),
                    }
                }
                let msg = match args.get("success_msg") {
                    Some(m) => self
                        .templar
                        .template_value(m, scope)
                        .map(|v| value_label(&v))
                        .unwrap_or_default(),
                    None => "All assertions passed".into(),
                };
                (json!({"changed": false, "msg": msg}), Status::Ok)
            }
            Action::Fail { args } => match tmpl_args(args) {
                Ok(a) => (
                    json!({"failed": true, "msg": a.get("msg").cloned().unwrap_or(json!("Failed as requested from task"))}),
                    Status::Failed,
                ),
                Err(e) => err(e),
            },
            Action::IncludeVars { args } => {
                let a = match tmpl_args(args) {
                    Ok(a) => a,
                    Err(e) => return err(e),
                };
                let file = a
                    .get("file")
                    .or_else(|| a.get("_raw_params"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let mut path = PathBuf::from(&file);
                if path.is_relative() {
                    let cands: Vec<PathBuf> = task
                        .role
                        .iter()
                        .map(|r| r.path.join("vars").join(&file))
                        .chain(std::iter::once(self.pb.dir.join(&file)))
                        .collect();
                    path = cands
                        .iter()
                        .find(|p| p.exists())
                        .cloned()
                        .unwrap_or_else(|| self.pb.dir.join(&file));
                }
                match load_vars_file(&path) {
                    Ok(m) => {
                        let facts = match a.get("name").and_then(Value::as_str) {
                            Some(n) => json!({ n: m }),
                            None => Value::Object(m),
                        };
                        (json!({"changed": false, "__set_facts": facts}), Status::Ok)
                    }
                    Err(e) => err(e.to_string()),
                }
            }
            Action::Pause { args } => {
                let a = match tmpl_args(args) {
                    Ok(a) => a,
                    Err(e) => return err(e),
                };
                let secs = a
                    .get("seconds")
                    .and_then(|v| {
                        v.as_f64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    })
                    .unwrap_or(0.0)
                    + 60.0
                        * a.get("minutes")
                            .and_then(|v| {
                                v.as_f64()
                                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                            })
                            .unwrap_or(0.0);
                if !check {
                    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
                }
                (json!({"changed": false}), Status::Ok)
            }
            Action::AsyncStatus { args } => {
                let a = match tmpl_args(args) {
                    Ok(a) => a,
                    Err(e) => return err(e),
                };
                let jid = a.get("jid").map(value_label).unwrap_or_default();
                match a.get("mode").and_then(Value::as_str).unwrap_or("status") {
                    "status" => match self.jobs.status(&jid).await {
                        Some(r) => r,
                        None => err(format!("could not find job '{jid}'")),
                    },
                    "cleanup" => {
                        let known = self.jobs.cleanup(&jid);
                        (
                            json!({"changed": false, "ansible_job_id": jid, "erased": known}),
                            Status::Ok,
                        )
                    }
                    other => err(format!(
                        "async_status: mode must be status or cleanup, got '{other}'"
                    )),
                }
            }
            Action::Ping => match self.connection(ctx, host).await {
                Ok(conn) => match conn.run("echo pong", None, None, &BTreeMap::new()).await {
                    Ok(r) if r.rc == 0 => (json!({"changed": false, "ping": "pong"}), Status::Ok),
                    Ok(r) => err(format!("ping failed: {}", r.stderr.trim())),
                    Err(e) => (
                        json!({"unreachable": true, "msg": e.to_string()}),
                        Status::Unreachable,
                    ),
                },
                Err(e) => (json!({"unreachable": true, "msg": e}), Status::Unreachable),
            },
            Action::Module { name, args } => {
                let a = match tmpl_args(args) {
                    Ok(a) => a,
                    Err(e) => return err(e),
                };
                let Some(module) = modules::lookup(&self.registry, name) else {
                    return err(format!("unknown module '{name}'"));
                };
                // delegate_to: run on another host's connection with this host's vars.
                let delegate = match &task.opts.delegate_to {
                    Some(d) => match self.templar.template_value(&json!(d), scope) {
                        Ok(v) => Some(v.as_str().unwrap_or_default().to_string()),
                        Err(e) => return err(e),
                    },
                    None => None,
                };
                let conn_host = delegate.clone().unwrap_or_else(|| host.to_string());
                let conn = match self.connection(ctx, &conn_host).await {
                    Ok(c) => c,
                    Err(e) => {
                        if delegate.is_some() {
                            return err(format!("delegate_to {conn_host}: {e}"));
                        }
                        return (json!({"unreachable": true, "msg": e}), Status::Unreachable);
                    }
                };
                let become_ = match self.become_of(task, scope) {
                    Ok(b) => b,
                    Err(e) => return err(e),
                };
                let environment = match self.environment_of(task, scope) {
                    Ok(e) => e,
                    Err(e) => return err(e),
                };
                let env = Env {
                    templar: self.templar.clone(),
                    scope: scope.clone(),
                    role: task.role.clone(),
                    pb_dir: self.pb.dir.clone(),
                };
                let tctx = TaskCtx {
                    host,
                    check,
                    diff: self.opts.diff,
                    conn: &conn,
                    become_,
                    environment,
                    env: &env,
                };
                match module.run(&a, &tctx).await {
                    Ok(o) => {
                        let mut v = outcome_json(&o);
                        if let Some(d) = &delegate {
                            v["__delegated"] = json!(d);
                        }
                        let status = if o.failed {
                            Status::Failed
                        } else if o.skipped {
                            Status::Skipped
                        } else if o.changed {
                            Status::Changed
                        } else {
                            Status::Ok
                        };
                        (v, status)
                    }
                    Err(ModuleError::Conn(e)) if delegate.is_none() => (
                        json!({"unreachable": true, "msg": e.to_string()}),
                        Status::Unreachable,
                    ),
                    Err(e) => err(e.to_string()),
                }
            }
            Action::Block { .. }
            | Action::IncludeTasks { .. }
            | Action::IncludeRole { .. }
            | Action::Meta(_) => err("internal: structural task dispatched as an action".into()),
        }
    }

    fn become_of(&self, task: &Task, scope: &Arc<Scope>) -> Result<Option<Become>, String> {
        let on = match &task.opts.become_ {
            Some(v) => to_bool(&self.templar.template_value(v, scope)?).unwrap_or(false),
            None => match scope.get_json("ansible_become")? {
                Some(v) => to_bool(&v).unwrap_or(false),
                None => false,
            },
        };
        if !on {
            return Ok(None);
        }
        let user = match &task.opts.become_user {
            Some(u) => value_label(&self.templar.template_value(&json!(u), scope)?),
            None => scope
                .get_json("ansible_become_user")?
                .map(|v| value_label(&v))
                .unwrap_or_else(|| "root".into()),
        };
        Ok(Some(Become { user }))
    }

    fn environment_of(
        &self,
        task: &Task,
        scope: &Arc<Scope>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for e in &task.opts.environment {
            match self.templar.template_value(e, scope)? {
                Value::Object(m) => {
                    for (k, v) in m {
                        out.insert(k, value_label(&v));
                    }
                }
                Value::Null => {}
                other => {
                    return Err(format!(
                        "environment must be a mapping, got {}",
                        short_json(&other)
                    ))
                }
            }
        }
        Ok(out)
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

/// The controller side of a module run.
struct Env {
    templar: Arc<Templar>,
    scope: Arc<Scope>,
    role: Option<Arc<Role>>,
    pb_dir: PathBuf,
}

impl TaskEnv for Env {
    fn render(&self, text: &str, origin: &str) -> Result<String, String> {
        self.templar
            .render(text, &self.scope)
            .map_err(|e| format!("{origin}: {e}"))
    }
    fn find_file(&self, kind: FileKind, name: &str) -> Option<PathBuf> {
        let p = PathBuf::from(name);
        if p.is_absolute() {
            return p.exists().then_some(p);
        }
        let sub = match kind {
            FileKind::Files => "files",
            FileKind::Templates => "templates",
        };
        let mut cands = Vec::new();
        if let Some(r) = &self.role {
            cands.push(r.path.join(sub).join(&p));
            cands.push(r.path.join(&p));
        }
        cands.push(self.pb_dir.join(sub).join(&p));
        cands.push(self.pb_dir.join(&p));
        if let Some(parent) = self.pb_dir.parent() {
            cands.push(parent.join(sub).join(&p));
        }
        cands.into_iter().find(|c| c.exists())
    }
}

/// `ansible_failed_task`: the failed task's name and action, as a rescue section sees it.
fn failed_task_value(task: &Task) -> Value {
    let action = match &task.action {
        Action::Module { name, .. } => name.clone(),
        Action::Debug { .. } => "debug".into(),
        Action::SetFact { .. } => "set_fact".into(),
        Action::Assert { .. } => "assert".into(),
        Action::Fail { .. } => "fail".into(),
        Action::IncludeVars { .. } => "include_vars".into(),
        Action::Pause { .. } => "pause".into(),
        Action::Ping => "ping".into(),
        Action::AsyncStatus { .. } => "async_status".into(),
        Action::IncludeTasks { .. } => "include_tasks".into(),
        Action::IncludeRole { .. } => "include_role".into(),
        Action::Block { .. } => "block".into(),
        Action::Meta(_) => "meta".into(),
    };
    json!({"name": task.display_name(), "action": action, "path": task.loc.to_string()})
}

/// A controller-side error as the user sees it: where the task is, which task, which host.
fn located(task: &Task, host: &str, msg: &str) -> String {
    format!(
        "{}: task '{}' on {host}: {msg}",
        task.loc,
        task.display_name()
    )
}

fn fixed_of(scope: &Arc<Scope>) -> HashMap<String, minijinja::Value> {
    let mut m = HashMap::new();
    use minijinja::value::Object;
    for k in ["groups", "hostvars"] {
        if let Some(v) = scope.get_value(&minijinja::Value::from(k)) {
            m.insert(k.to_string(), v);
        }
    }
    m
}

fn outcome_json(o: &Outcome) -> Value {
    let mut m = o.data.clone();
    m.insert("changed".into(), json!(o.changed));
    if o.failed {
        m.insert("failed".into(), json!(true));
    }
    if o.skipped {
        m.insert("skipped".into(), json!(true));
    }
    if !o.msg.is_empty() {
        m.insert("msg".into(), json!(o.msg));
    }
    if let Some(f) = &o.facts {
        m.insert("ansible_facts".into(), Value::Object(f.clone()));
    }
    if !o.diffs.is_empty() {
        m.insert(
            "__diffs".into(),
            json!(o
                .diffs
                .iter()
                .map(|d| json!({"path": d.path, "before": d.before, "after": d.after}))
                .collect::<Vec<_>>()),
        );
    }
    Value::Object(m)
}

fn diffs_of(v: &Value) -> Vec<modules::FileDiff> {
    v.get("__diffs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| modules::FileDiff {
                    path: d["path"].as_str().unwrap_or_default().into(),
                    before: d["before"].as_str().unwrap_or_default().into(),
                    after: d["after"].as_str().unwrap_or_default().into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The registered form of a result: without hfplay's internal keys.
fn strip_internal(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with("__") && *k != "ansible_facts")
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "results" {
                            strip_internal(v)
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_internal).collect()),
        other => other.clone(),
    }
}

fn value_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

fn abs(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
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
