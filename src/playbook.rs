//! Playbooks and roles, parsed into a typed plan. Everything static is resolved here —
//! `import_playbook`, `import_tasks`, `import_role`, play `roles:`, role dependencies, keyword
//! inheritance from blocks — and every task's module and argument names are checked, so a
//! misspelt keyword, an unknown module or an unknown argument fails with file:line:column
//! before any host is contacted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{LoadResult, Loc, LocatedError};
use crate::inventory::{load_vars_file, VarsDir};
use crate::modules::{self, Module};
use crate::template::is_template;
use crate::words::split_kv;
use crate::yaml::{self, Kind, Node};

/// A role as loaded from disk.
#[derive(Debug)]
pub struct Role {
    pub name: String,
    pub path: PathBuf,
    pub defaults: Map<String, Value>,
    pub vars: Map<String, Value>,
}

/// Keywords that modify how a task runs. Inherited from blocks, imports and roles.
#[derive(Debug, Clone, Default)]
pub struct TaskOpts {
    pub when: Vec<Value>,
    pub loop_items: Option<Value>,
    pub loop_var: Option<String>,
    pub index_var: Option<String>,
    pub loop_label: Option<String>,
    pub register: Option<String>,
    pub notify: Vec<String>,
    pub listen: Vec<String>,
    pub changed_when: Option<Vec<Value>>,
    pub failed_when: Option<Vec<Value>>,
    pub ignore_errors: Option<Value>,
    pub ignore_unreachable: bool,
    pub tags: BTreeSet<String>,
    pub become_: Option<Value>,
    pub become_user: Option<String>,
    pub run_once: bool,
    pub delegate_to: Option<String>,
    pub delegate_facts: bool,
    pub check_mode: Option<Value>,
    pub no_log: Option<Value>,
    pub environment: Vec<Value>,
    /// Block vars, then task vars (and role/include params), lowest first.
    pub vars: Vec<Arc<Map<String, Value>>>,
    pub until: Option<Value>,
    pub retries: Option<Value>,
    pub delay: Option<Value>,
    /// `timeout:` seconds one attempt of the action may take before the task fails.
    pub timeout: Option<Value>,
    /// `async:` seconds the task may run; with `poll: 0` it runs in the background (src/jobs.rs).
    pub async_: Option<Value>,
    pub poll: Option<Value>,
    /// How many dynamic includes led to this task (bounded: an include of itself must fail,
    /// not overflow the stack).
    pub include_depth: usize,
}

/// The deepest chain of dynamic includes hfplay follows (Ansible has no limit and recurses
/// until Python's stack gives out).
pub const MAX_INCLUDE_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub enum Action {
    /// A native module with its raw (untemplated) arguments.
    Module {
        name: String,
        args: Map<String, Value>,
    },
    Block {
        block: Vec<Task>,
        rescue: Vec<Task>,
        always: Vec<Task>,
    },
    /// Dynamic include: the file is templated and loaded per host at run time.
    IncludeTasks {
        file: String,
    },
    /// Dynamic role include.
    IncludeRole {
        name: String,
        tasks_from: String,
    },
    Meta(String),
    Debug {
        args: Map<String, Value>,
    },
    SetFact {
        args: Map<String, Value>,
    },
    Assert {
        args: Map<String, Value>,
    },
    Fail {
        args: Map<String, Value>,
    },
    IncludeVars {
        args: Map<String, Value>,
    },
    Pause {
        args: Map<String, Value>,
    },
    Ping,
    /// The state of a background job (`async` + `poll: 0`).
    AsyncStatus {
        args: Map<String, Value>,
    },
}

#[derive(Debug, Clone)]
pub struct Task {
    pub loc: Loc,
    pub name: Option<String>,
    pub action: Action,
    pub opts: TaskOpts,
    pub role: Option<Arc<Role>>,
}

impl Task {
    /// Whether this handler answers `notify: n`: its name, `role : name`, or a `listen` topic.
    pub fn answers_notify(&self, n: &str) -> bool {
        self.name.as_deref() == Some(n)
            || self.opts.listen.iter().any(|l| l == n)
            || match (&self.role, &self.name) {
                (Some(r), Some(name)) => {
                    n.strip_prefix(r.name.as_str())
                        .and_then(|x| x.strip_prefix(" : "))
                        == Some(name.as_str())
                }
                _ => false,
            }
    }

    /// The name shown in output: `role : name`, or the module and its main argument.
    pub fn display_name(&self) -> String {
        let base = match (&self.name, &self.action) {
            (Some(n), _) => n.clone(),
            (None, Action::Module { name, .. }) => name.clone(),
            (None, Action::Block { .. }) => "block".into(),
            (None, Action::IncludeTasks { file }) => format!("include_tasks {file}"),
            (None, Action::IncludeRole { name, .. }) => format!("include_role {name}"),
            (None, Action::Meta(m)) => format!("meta: {m}"),
            (None, Action::Debug { .. }) => "debug".into(),
            (None, Action::SetFact { .. }) => "set_fact".into(),
            (None, Action::Assert { .. }) => "assert".into(),
            (None, Action::Fail { .. }) => "fail".into(),
            (None, Action::IncludeVars { .. }) => "include_vars".into(),
            (None, Action::Pause { .. }) => "pause".into(),
            (None, Action::Ping) => "ping".into(),
            (None, Action::AsyncStatus { .. }) => "async_status".into(),
        };
        match &self.role {
            Some(r) => format!("{} : {}", r.name, base),
            None => base,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Play {
    pub loc: Loc,
    pub name: String,
    pub hosts: String,
    pub gather_facts: bool,
    pub serial: Option<Value>,
    pub vars: Map<String, Value>,
    pub vars_files: Vec<(String, Loc)>,
    pub roles: Vec<Arc<Role>>,
    /// pre_tasks, then roles' tasks with `tasks`, then post_tasks; handlers flush after each.
    pub sections: Vec<Vec<Task>>,
    pub handlers: Vec<Task>,
    pub force_handlers: bool,
    pub any_errors_fatal: bool,
}

#[derive(Debug)]
pub struct Playbook {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub plays: Vec<Play>,
    /// `group_vars/`, `host_vars/` next to the playbook.
    pub vars_dir: VarsDir,
}

/// Every task of a list, blocks' children included (depth first).
fn each_task<'t>(tasks: &'t [Task], out: &mut Vec<&'t Task>) {
    for t in tasks {
        out.push(t);
        if let Action::Block {
            block,
            rescue,
            always,
        } = &t.action
        {
            each_task(block, out);
            each_task(rescue, out);
            each_task(always, out);
        }
    }
}

/// Ansible fails a `notify` that names no handler. Where every handler of the play is known at
/// load time (no dynamic `include_role`, which may bring handlers), hfplay fails it before any
/// host is contacted; templated names are left to run time.
fn check_notify(play: &Play) -> LoadResult<()> {
    let mut tasks = Vec::new();
    for section in &play.sections {
        each_task(section, &mut tasks);
    }
    let mut handlers = Vec::new();
    each_task(&play.handlers, &mut handlers);
    let dynamic = |t: &&Task| matches!(t.action, Action::IncludeRole { .. });
    if tasks.iter().chain(handlers.iter()).any(dynamic) {
        return Ok(());
    }
    for t in tasks.iter().chain(handlers.iter()) {
        for n in &t.opts.notify {
            if crate::template::is_template(n) || handlers.iter().any(|h| h.answers_notify(n)) {
                continue;
            }
            let mut msg = format!(
                "notify: no handler is named or listens to {n:?} (task {:?})",
                t.display_name()
            );
            let names = handlers
                .iter()
                .flat_map(|h| h.name.iter().chain(h.opts.listen.iter()))
                .map(String::as_str);
            if let Some(s) = suggest(n, names) {
                msg.push_str(&format!("; did you mean {s:?}?"));
            }
            return Err(LocatedError::new(&t.loc, msg));
        }
    }
    Ok(())
}

/// Task keywords hfplay knows (anything else on a task must be its one module).
const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop",
    "with_items",
    "with_list",
    "with_dict",
    "with_fileglob",
    "loop_control",
    "register",
    "notify",
    "listen",
    "changed_when",
    "failed_when",
    "ignore_errors",
    "ignore_unreachable",
    "tags",
    "become",
    "become_user",
    "become_method",
    "run_once",
    "delegate_to",
    "delegate_facts",
    "check_mode",
    "diff",
    "no_log",
    "environment",
    "vars",
    "args",
    "until",
    "retries",
    "delay",
    "async",
    "poll",
    "block",
    "rescue",
    "always",
    "any_errors_fatal",
    "debugger",
    "throttle",
    "timeout",
    "collections",
    "module_defaults",
    "local_action",
    "action",
];

const PLAY_KEYWORDS: &[&str] = &[
    "name",
    "hosts",
    "become",
    "become_user",
    "become_method",
    "vars",
    "vars_files",
    "roles",
    "pre_tasks",
    "tasks",
    "post_tasks",
    "handlers",
    "serial",
    "gather_facts",
    "tags",
    "environment",
    "any_errors_fatal",
    "max_fail_percentage",
    "strategy",
    "check_mode",
    "no_log",
    "remote_user",
    "connection",
    "force_handlers",
    "collections",
    "order",
    "ignore_errors",
    "ignore_unreachable",
    "vars_prompt",
    "module_defaults",
    "diff",
    "timeout",
    "throttle",
    "run_once",
    "gather_subset",
    "gather_timeout",
    "fact_path",
    "debugger",
];

/// What the loader needs besides files: where roles live and which modules exist.
pub struct Loader<'a> {
    pub roles_path: Vec<PathBuf>,
    pub registry: &'a [Box<dyn Module>],
}

fn fail<T>(node: &Node, msg: impl Into<String>) -> LoadResult<T> {
    Err(node.err(msg))
}

/// Fails on the first string under `node` whose template syntax is broken (see
/// [`crate::template::check_syntax`]); `condition` reads plain strings as expressions.
fn check_templates(node: &Node, condition: bool) -> LoadResult<()> {
    match &node.kind {
        Kind::Str(s) => crate::template::check_syntax(s, condition).or_else(|e| fail(node, e)),
        Kind::Seq(items) => items.iter().try_for_each(|i| check_templates(i, condition)),
        Kind::Map(entries) => entries.iter().try_for_each(|(k, v)| {
            check_templates(k, false)?;
            check_templates(v, condition)
        }),
        _ => Ok(()),
    }
}

fn string_of(node: &Node, what: &str) -> LoadResult<String> {
    match &node.kind {
        Kind::Str(s) => Ok(s.clone()),
        Kind::Int(i) => Ok(i.to_string()),
        Kind::Float(f) => Ok(f.to_string()),
        Kind::Bool(b) => Ok(b.to_string()),
        _ => fail(
            node,
            format!("'{what}' must be a string, found {}", node.type_name()),
        ),
    }
}

fn string_list(node: &Node, what: &str) -> LoadResult<Vec<String>> {
    match &node.kind {
        Kind::Null => Ok(vec![]),
        Kind::Seq(items) => items.iter().map(|i| string_of(i, what)).collect(),
        _ => Ok(vec![string_of(node, what)?]),
    }
}

/// Conditions: a string, a boolean, or a list of them (all must hold).
fn conditions(node: &Node) -> LoadResult<Vec<Value>> {
    match &node.kind {
        Kind::Seq(items) => items.iter().map(condition).collect(),
        _ => Ok(vec![condition(node)?]),
    }
}

fn condition(node: &Node) -> LoadResult<Value> {
    match &node.kind {
        Kind::Str(_) | Kind::Bool(_) | Kind::Int(_) => Ok(node.to_value()),
        Kind::Null => Ok(Value::Bool(false)),
        _ => fail(
            node,
            format!(
                "a condition must be an expression string, found {}",
                node.type_name()
            ),
        ),
    }
}

fn mapping(node: &Node, what: &str) -> LoadResult<Map<String, Value>> {
    match node.to_value() {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => fail(
            node,
            format!("'{what}' must be a mapping, found {}", node.type_name()),
        ),
    }
}

fn bool_of(node: &Node, what: &str) -> LoadResult<Value> {
    match &node.kind {
        Kind::Bool(_) | Kind::Str(_) | Kind::Int(_) => Ok(node.to_value()),
        _ => fail(
            node,
            format!("'{what}' must be a boolean, found {}", node.type_name()),
        ),
    }
}

/// Suggests the closest known word for a typo (edit distance ≤ 2).
pub fn suggest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known
        .into_iter()
        .map(|k| (dist(word, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

impl Loader<'_> {
    pub fn load_playbook(&self, path: &Path) -> LoadResult<Playbook> {
        let pb = self.load_playbook_file(path)?;
        if pb.plays.is_empty() {
            return Err(LocatedError::new(
                &Loc::file_only(&pb.path),
                "empty playbook, nothing to do",
            ));
        }
        Ok(pb)
    }

    fn load_playbook_file(&self, path: &Path) -> LoadResult<Playbook> {
        let path = path.to_path_buf();
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let mut plays = Vec::new();
        self.load_plays(&path, &mut plays, 0)?;
        let vars_dir = VarsDir::load(&dir)?;
        Ok(Playbook {
            path,
            dir,
            plays,
            vars_dir,
        })
    }

    fn load_plays(&self, path: &Path, out: &mut Vec<Play>, depth: usize) -> LoadResult<()> {
        if depth > 20 {
            return Err(LocatedError::new(
                &Loc::file_only(path),
                "import_playbook nested too deeply (a cycle?)",
            ));
        }
        let root = yaml::load_file(path)?;
        let items = match &root.kind {
            Kind::Seq(items) => items,
            Kind::Null => return Ok(()),
            _ => {
                return fail(
                    &root,
                    format!(
                        "a playbook must be a list of plays, found {}",
                        root.type_name()
                    ),
                )
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        for item in items {
            if item.as_map().is_none() {
                return fail(
                    item,
                    format!("a play must be a mapping, found {}", item.type_name()),
                );
            }
            let imp = item
                .get("import_playbook")
                .or_else(|| item.get("ansible.builtin.import_playbook"));
            if let Some(imp) = imp {
                let file = string_of(imp, "import_playbook")?;
                let p = dir.join(&file);
                if !p.exists() {
                    return fail(imp, format!("imported playbook not found: {}", p.display()));
                }
                self.load_plays(&p, out, depth + 1)?;
                continue;
            }
            out.push(self.load_play(item, dir)?);
        }
        Ok(())
    }

    fn load_play(&self, node: &Node, dir: &Path) -> LoadResult<Play> {
        let mut hosts = None;
        let mut play = Play {
            loc: node.loc.clone(),
            name: String::new(),
            hosts: String::new(),
            gather_facts: true,
            serial: None,
            vars: Map::new(),
            vars_files: vec![],
            roles: vec![],
            sections: vec![],
            handlers: vec![],
            force_handlers: false,
            any_errors_fatal: false,
        };
        // Play-level keywords that tasks inherit.
        let mut inherit = TaskOpts::default();
        let (mut pre, mut roles_tasks, mut tasks, mut post, mut handlers) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut role_nodes = None;
        for (k, v) in node.as_map().unwrap_or_default() {
            let key = k.key_string();
            match key.as_str() {
                "name" => play.name = string_of(v, "name")?,
                "hosts" => {
                    hosts = Some(match &v.kind {
                        Kind::Seq(_) => string_list(v, "hosts")?.join(","),
                        _ => string_of(v, "hosts")?,
                    })
                }
                "gather_facts" => {
                    play.gather_facts = crate::modules::args::to_bool(&v.to_value()).unwrap_or(true)
                }
                "serial" => play.serial = Some(v.to_value()),
                "vars" => {
                    check_templates(v, false)?;
                    play.vars = mapping(v, "vars")?
                }
                "vars_files" => {
                    let list = match &v.kind {
                        Kind::Seq(items) => items.clone(),
                        _ => vec![v.clone()],
                    };
                    for f in list {
                        play.vars_files
                            .push((string_of(&f, "vars_files")?, f.loc.clone()));
                    }
                }
                "become" => inherit.become_ = Some(bool_of(v, "become")?),
                "become_user" => inherit.become_user = Some(string_of(v, "become_user")?),
                "environment" => inherit.environment.push(v.to_value()),
                "tags" => inherit.tags.extend(string_list(v, "tags")?),
                "check_mode" => inherit.check_mode = Some(bool_of(v, "check_mode")?),
                "no_log" => inherit.no_log = Some(bool_of(v, "no_log")?),
                "ignore_errors" => inherit.ignore_errors = Some(bool_of(v, "ignore_errors")?),
                "force_handlers" => {
                    play.force_handlers =
                        crate::modules::args::to_bool(&v.to_value()).unwrap_or(false)
                }
                "any_errors_fatal" => {
                    play.any_errors_fatal =
                        crate::modules::args::to_bool(&v.to_value()).unwrap_or(false)
                }
                "strategy" => {
                    let s = string_of(v, "strategy")?;
                    if s != "linear" && s != "free" {
                        return fail(v, format!("unknown strategy '{s}' (hfplay runs 'linear'; 'free' is accepted and runs linear)"));
                    }
                }
                "pre_tasks" | "tasks" | "post_tasks" | "handlers" => {
                    // parsed below, once play-level inheritance is known
                }
                "roles" => role_nodes = Some(v),
                other if PLAY_KEYWORDS.contains(&other) => {}
                other => {
                    let hint = suggest(other, PLAY_KEYWORDS.iter().copied())
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    return fail(k, format!("unknown play keyword '{other}'{hint}"));
                }
            }
        }
        play.hosts = hosts.ok_or_else(|| node.err("a play needs 'hosts'"))?;
        if play.name.is_empty() {
            play.name = play.hosts.clone();
        }
        let ctx = Ctx {
            dir: dir.to_path_buf(),
            role: None,
            depth: 0,
        };
        for (k, v) in node.as_map().unwrap_or_default() {
            match k.key_string().as_str() {
                "pre_tasks" => pre = self.task_list(v, &ctx, &inherit)?,
                "tasks" => tasks = self.task_list(v, &ctx, &inherit)?,
                "post_tasks" => post = self.task_list(v, &ctx, &inherit)?,
                "handlers" => handlers = self.task_list(v, &ctx, &inherit)?,
                _ => {}
            }
        }
        if let Some(rn) = role_nodes {
            let items = match &rn.kind {
                Kind::Seq(items) => items.clone(),
                Kind::Null => vec![],
                _ => return fail(rn, "'roles' must be a list"),
            };
            for item in &items {
                let (name, opts_node) = match &item.kind {
                    Kind::Str(s) => (s.clone(), None),
                    Kind::Map(_) => {
                        let n = item
                            .get("role")
                            .or_else(|| item.get("name"))
                            .ok_or_else(|| item.err("a role entry needs 'role'"))?;
                        (string_of(n, "role")?, Some(item))
                    }
                    _ => return fail(item, "a role entry must be a name or a mapping"),
                };
                let mut opts = inherit.clone();
                if let Some(m) = opts_node {
                    let mut params = Map::new();
                    for (k, v) in m.as_map().unwrap_or_default() {
                        match k.key_string().as_str() {
                            "role" | "name" => {}
                            "when" => opts.when.extend(conditions(v)?),
                            "tags" => opts.tags.extend(string_list(v, "tags")?),
                            "become" => opts.become_ = Some(bool_of(v, "become")?),
                            "become_user" => opts.become_user = Some(string_of(v, "become_user")?),
                            "vars" => params.extend(mapping(v, "vars")?),
                            "environment" => opts.environment.push(v.to_value()),
                            other => {
                                params.insert(other.to_string(), v.to_value());
                            }
                        }
                    }
                    if !params.is_empty() {
                        opts.vars.push(Arc::new(params));
                    }
                }
                let (mut rtasks, mut rhandlers) = (vec![], vec![]);
                self.expand_role(
                    &name,
                    "main",
                    item,
                    &opts,
                    &mut play.roles,
                    &mut rtasks,
                    &mut rhandlers,
                    0,
                )?;
                roles_tasks.extend(rtasks);
                play.handlers.extend(rhandlers);
            }
        }
        play.handlers.extend(handlers);
        roles_tasks.extend(tasks);
        play.sections = vec![pre, roles_tasks, post];
        check_notify(&play)?;
        Ok(play)
    }

    /// Loads a role (and its meta dependencies first) into tasks and handlers.
    #[allow(clippy::too_many_arguments)]
    fn expand_role(
        &self,
        name: &str,
        tasks_from: &str,
        at: &Node,
        opts: &TaskOpts,
        roles: &mut Vec<Arc<Role>>,
        tasks: &mut Vec<Task>,
        handlers: &mut Vec<Task>,
        depth: usize,
    ) -> LoadResult<Arc<Role>> {
        if depth > 20 {
            return fail(at, "role dependencies nested too deeply (a cycle?)");
        }
        let role = self.load_role(name, at)?;
        // meta/main.yml dependencies run first (once per play when given without params).
        if let Some(meta) = find_yaml(&role.path.join("meta"), "main") {
            let node = yaml::load_file(&meta)?;
            if let Some(deps) = node.get("dependencies") {
                for d in deps.as_seq().unwrap_or_default() {
                    let (dname, dparams) = match &d.kind {
                        Kind::Str(s) => (s.clone(), Map::new()),
                        Kind::Map(_) => {
                            let n = d
                                .get("role")
                                .or_else(|| d.get("name"))
                                .ok_or_else(|| d.err("a dependency needs 'role'"))?;
                            let mut m = mapping(d, "dependency")?;
                            m.remove("role");
                            m.remove("name");
                            (string_of(n, "role")?, m)
                        }
                        _ => return fail(d, "a dependency must be a role name or a mapping"),
                    };
                    if dparams.is_empty() && roles.iter().any(|r| r.name == dname) {
                        continue;
                    }
                    let mut dopts = opts.clone();
                    if !dparams.is_empty() {
                        dopts.vars.push(Arc::new(dparams));
                    }
                    self.expand_role(&dname, "main", d, &dopts, roles, tasks, handlers, depth + 1)?;
                }
            }
        }
        let role_ctx = Ctx {
            dir: role.path.join("tasks"),
            role: Some(role.clone()),
            depth: 0,
        };
        let file = find_yaml(&role.path.join("tasks"), tasks_from);
        match file {
            Some(f) => {
                let node = yaml::load_file(&f)?;
                tasks.extend(self.task_list(&node, &role_ctx, opts)?);
            }
            None if tasks_from != "main" => {
                return fail(
                    at,
                    format!(
                        "role '{name}' has no tasks file '{tasks_from}' in {}",
                        role.path.join("tasks").display()
                    ),
                )
            }
            None => {}
        }
        if !roles
            .iter()
            .any(|r| Arc::ptr_eq(r, &role) || r.path == role.path)
        {
            if let Some(hf) = find_yaml(&role.path.join("handlers"), "main") {
                let node = yaml::load_file(&hf)?;
                let hctx = Ctx {
                    dir: role.path.join("handlers"),
                    role: Some(role.clone()),
                    depth: 0,
                };
                handlers.extend(self.task_list(&node, &hctx, opts)?);
            }
            roles.push(role.clone());
        }
        Ok(role)
    }

    pub fn load_role(&self, name: &str, at: &Node) -> LoadResult<Arc<Role>> {
        let path = self
            .roles_path
            .iter()
            .map(|d| d.join(name))
            .chain(std::iter::once(PathBuf::from(name)))
            .find(|p| p.is_dir())
            .ok_or_else(|| {
                let searched: Vec<String> = self
                    .roles_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                at.err(format!(
                    "role '{name}' not found (searched: {})",
                    searched.join(", ")
                ))
            })?;
        let load = |sub: &str| -> LoadResult<Map<String, Value>> {
            match find_yaml(&path.join(sub), "main") {
                Some(f) => load_vars_file(&f),
                None => Ok(Map::new()),
            }
        };
        let short = Path::new(name)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        Ok(Arc::new(Role {
            name: short,
            defaults: load("defaults")?,
            vars: load("vars")?,
            path,
        }))
    }

    fn task_list(&self, node: &Node, ctx: &Ctx, inherit: &TaskOpts) -> LoadResult<Vec<Task>> {
        let items = match &node.kind {
            Kind::Seq(items) => items,
            Kind::Null => return Ok(vec![]),
            _ => {
                return fail(
                    node,
                    format!("expected a list of tasks, found {}", node.type_name()),
                )
            }
        };
        let mut out = Vec::new();
        for item in items {
            self.task(item, ctx, inherit, &mut out)?;
        }
        Ok(out)
    }

    /// Parses one task entry, appending it (or, for static imports, what it expands to).
    fn task(
        &self,
        node: &Node,
        ctx: &Ctx,
        inherit: &TaskOpts,
        out: &mut Vec<Task>,
    ) -> LoadResult<()> {
        let entries = match node.as_map() {
            Some(e) => e,
            None => {
                return fail(
                    node,
                    format!("a task must be a mapping, found {}", node.type_name()),
                )
            }
        };
        let mut opts = inherit.clone();
        let mut name = None;
        let mut action_keys: Vec<(&Node, &Node)> = Vec::new();
        let mut extra_args: Option<Map<String, Value>> = None;
        let mut extra_args_node: Option<&Node> = None;
        let mut own_vars = Map::new();
        let (mut block, mut rescue, mut always) = (None, None, None);
        for (k, v) in entries {
            let key = k.key_string();
            // Template syntax of everything but nested task lists (checked as tasks themselves).
            match key.as_str() {
                "block" | "rescue" | "always" => {}
                "when" | "changed_when" | "failed_when" | "until" => check_templates(v, true)?,
                "assert" | "ansible.builtin.assert" | "ansible.legacy.assert" => match v.as_map() {
                    Some(m) => m.iter().try_for_each(|(ak, av)| {
                        check_templates(av, ak.as_str() == Some("that"))
                    })?,
                    None => check_templates(v, false)?,
                },
                _ => check_templates(v, false)?,
            }
            match key.as_str() {
                "name" => name = Some(string_of(v, "name")?),
                "when" => opts.when.extend(conditions(v)?),
                "loop" | "with_items" | "with_list" => {
                    let mut items = v.to_value();
                    // with_items flattens one level, as in Ansible.
                    if key == "with_items" {
                        if let Value::Array(a) = &items {
                            let mut flat = Vec::new();
                            for i in a {
                                match i {
                                    Value::Array(inner) => flat.extend(inner.iter().cloned()),
                                    other => flat.push(other.clone()),
                                }
                            }
                            items = Value::Array(flat);
                        }
                    }
                    opts.loop_items = Some(items);
                }
                "with_dict" => {
                    let expr = match v.to_value() {
                        Value::String(s) => format!(
                            "{{{{ ({}) | dict2items }}}}",
                            s.trim().trim_start_matches("{{").trim_end_matches("}}")
                        ),
                        other => format!("{{{{ {} | dict2items }}}}", other),
                    };
                    opts.loop_items = Some(Value::String(expr));
                }
                "loop_control" => {
                    let m = mapping(v, "loop_control")?;
                    for (lk, lv) in &m {
                        match lk.as_str() {
                            "loop_var" => opts.loop_var = lv.as_str().map(str::to_string),
                            "index_var" => opts.index_var = lv.as_str().map(str::to_string),
                            "label" => opts.loop_label = lv.as_str().map(str::to_string),
                            "pause" | "extended" => {}
                            other => {
                                return fail(v, format!("unknown loop_control option '{other}'"))
                            }
                        }
                    }
                }
                "register" => opts.register = Some(string_of(v, "register")?),
                "notify" => opts.notify = string_list(v, "notify")?,
                "listen" => opts.listen = string_list(v, "listen")?,
                "changed_when" => opts.changed_when = Some(conditions(v)?),
                "failed_when" => opts.failed_when = Some(conditions(v)?),
                "ignore_errors" => opts.ignore_errors = Some(bool_of(v, "ignore_errors")?),
                "ignore_unreachable" => {
                    opts.ignore_unreachable =
                        crate::modules::args::to_bool(&v.to_value()).unwrap_or(false)
                }
                "tags" => opts.tags.extend(string_list(v, "tags")?),
                "become" => opts.become_ = Some(bool_of(v, "become")?),
                "become_user" => opts.become_user = Some(string_of(v, "become_user")?),
                "run_once" => {
                    opts.run_once = crate::modules::args::to_bool(&v.to_value()).unwrap_or(false)
                }
                "delegate_to" => opts.delegate_to = Some(string_of(v, "delegate_to")?),
                "delegate_facts" => {
                    opts.delegate_facts =
                        crate::modules::args::to_bool(&v.to_value()).unwrap_or(false)
                }
                "check_mode" => opts.check_mode = Some(bool_of(v, "check_mode")?),
                "no_log" => opts.no_log = Some(bool_of(v, "no_log")?),
                "environment" => opts.environment.push(v.to_value()),
                "vars" => own_vars = mapping(v, "vars")?,
                "args" => {
                    extra_args = Some(mapping(v, "args")?);
                    extra_args_node = Some(v);
                }
                "until" => opts.until = Some(condition(v)?),
                "retries" => opts.retries = Some(v.to_value()),
                "delay" => opts.delay = Some(v.to_value()),
                "timeout" => opts.timeout = Some(v.to_value()),
                "async" => opts.async_ = Some(v.to_value()),
                "poll" => opts.poll = Some(v.to_value()),
                "block" => block = Some(v),
                "rescue" => rescue = Some(v),
                "always" => always = Some(v),
                other
                    if TASK_KEYWORDS.contains(&other)
                        && other != "action"
                        && other != "local_action" => {}
                _ => action_keys.push((k, v)),
            }
        }
        if !own_vars.is_empty() {
            opts.vars.push(Arc::new(own_vars));
        }
        let base = |action: Action, opts: TaskOpts| Task {
            loc: node.loc.clone(),
            name: name.clone(),
            action,
            opts,
            role: ctx.role.clone(),
        };

        if let Some(b) = block {
            if let Some((k, _)) = action_keys.first() {
                return fail(
                    k,
                    format!(
                        "'{}' cannot be used on a block (a block holds only tasks and keywords)",
                        k.key_string()
                    ),
                );
            }
            // Children inherit everything except the block's own loop/register/notify.
            let mut child = opts.clone();
            child.register = None;
            child.notify.clear();
            let block = self.task_list(b, ctx, &child)?;
            let rescue = match rescue {
                Some(r) => self.task_list(r, ctx, &child)?,
                None => vec![],
            };
            let always = match always {
                Some(a) => self.task_list(a, ctx, &child)?,
                None => vec![],
            };
            out.push(base(
                Action::Block {
                    block,
                    rescue,
                    always,
                },
                opts,
            ));
            return Ok(());
        }
        if let Some(r) = rescue.or(always) {
            return fail(r, "'rescue' and 'always' need a 'block'");
        }
        let (key_node, arg_node) = match action_keys.as_slice() {
            [one] => *one,
            [] => return fail(node, "no module or action given in this task"),
            [first, second, ..] => {
                let names: Vec<String> = action_keys.iter().map(|(k, _)| k.key_string()).collect();
                // One of them is probably a misspelt keyword.
                let hint = names
                    .iter()
                    .find_map(|n| {
                        suggest(n, TASK_KEYWORDS.iter().copied())
                            .map(|s| format!(" (is '{n}' a misspelling of '{s}'?)"))
                    })
                    .unwrap_or_default();
                let _ = second;
                return fail(
                    first.0,
                    format!("conflicting action statements: {}{hint}", names.join(", ")),
                );
            }
        };
        let mut module = key_node.key_string();
        let mut arg_node = arg_node.clone();
        if module == "action" || module == "local_action" {
            // `action: copy src=a dest=b` → module copy with k=v args.
            if module == "local_action" {
                opts.delegate_to = Some("localhost".into());
            }
            let s = string_of(&arg_node, &module)?;
            let (m, rest) = s
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((s.trim(), ""));
            module = m.to_string();
            arg_node = Node {
                kind: Kind::Str(rest.to_string()),
                loc: arg_node.loc.clone(),
            };
        }
        let short = modules::short_name(&module).to_string();
        let raw_args = |free_form: bool| -> LoadResult<Map<String, Value>> {
            let mut args = match &arg_node.kind {
                Kind::Null => Map::new(),
                Kind::Map(_) => mapping(&arg_node, &module)?,
                Kind::Str(s) if free_form => {
                    // `command: cmd creates=/x chdir={{ d }}`: known k=v options are split off;
                    // the rest stays as written (quotes, newlines).
                    let mut m = Map::new();
                    let mut rest = String::new();
                    let mut copied = 0;
                    for (start, end) in crate::words::arg_spans(s) {
                        if let Some((k, v)) = crate::words::kv_token(&s[start..end]) {
                            if ["creates", "removes", "chdir", "executable", "stdin"].contains(&k)
                                && !v.is_empty()
                            {
                                m.insert(k.to_string(), Value::String(crate::words::unquote(v)));
                                rest.push_str(&s[copied..start]);
                                copied = end;
                            }
                        }
                    }
                    rest.push_str(&s[copied..]);
                    m.insert("_raw_params".into(), Value::String(rest.trim().to_string()));
                    m
                }
                Kind::Str(s) => {
                    let (m, rest) = split_kv(s);
                    if !rest.trim().is_empty() {
                        return fail(&arg_node, format!("'{module}' does not take free-form text {rest:?}: use key=value or a mapping"));
                    }
                    m
                }
                _ => {
                    return fail(
                        &arg_node,
                        format!(
                            "arguments of '{module}' must be a mapping or key=value text, found {}",
                            arg_node.type_name()
                        ),
                    )
                }
            };
            if let Some(extra) = &extra_args {
                for (k, v) in extra {
                    args.insert(k.clone(), v.clone());
                }
            }
            Ok(args)
        };
        let check_args = |args: &Map<String, Value>, allowed: &[&str]| -> LoadResult<()> {
            for k in args.keys() {
                if !allowed.contains(&k.as_str()) {
                    let hint = suggest(k, allowed.iter().copied())
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    // Point at the key itself when the arguments are a mapping (`args:` wins, as in raw_args).
                    let key_node = [extra_args_node, Some(&arg_node)]
                        .into_iter()
                        .flatten()
                        .find_map(|n| {
                            n.as_map()
                                .and_then(|m| m.iter().find(|(kn, _)| kn.key_string() == *k))
                                .map(|(kn, _)| kn)
                        })
                        .unwrap_or(&arg_node);
                    return fail(
                        key_node,
                        format!("unsupported argument '{k}' for module '{short}'{hint}"),
                    );
                }
            }
            Ok(())
        };

        let action = match short.as_str() {
            "debug" => {
                let a = raw_args(false)?;
                check_args(&a, &["msg", "var", "verbosity"])?;
                Action::Debug { args: a }
            }
            "set_fact" => {
                let mut a = raw_args(false)?;
                a.remove("cacheable");
                Action::SetFact { args: a }
            }
            "assert" => {
                let a = raw_args(false)?;
                check_args(&a, &["that", "msg", "fail_msg", "success_msg", "quiet"])?;
                if !a.contains_key("that") {
                    return fail(&arg_node, "assert needs 'that'");
                }
                Action::Assert { args: a }
            }
            "fail" => {
                let a = raw_args(false)?;
                check_args(&a, &["msg"])?;
                Action::Fail { args: a }
            }
            "include_vars" => {
                let a = raw_args(true)?;
                check_args(&a, &["_raw_params", "file", "name"])?;
                Action::IncludeVars { args: a }
            }
            "pause" => {
                let a = raw_args(false)?;
                check_args(&a, &["seconds", "minutes", "prompt"])?;
                if a.contains_key("prompt") {
                    return fail(
                        &arg_node,
                        "pause with 'prompt' needs a terminal; hfplay runs unattended",
                    );
                }
                Action::Pause { args: a }
            }
            "ping" => Action::Ping,
            "async_status" => {
                let a = raw_args(false)?;
                check_args(&a, &["jid", "mode"])?;
                if !a.contains_key("jid") {
                    return fail(&arg_node, "async_status needs 'jid'");
                }
                Action::AsyncStatus { args: a }
            }
            "meta" => {
                let m = string_of(&arg_node, "meta")?;
                if ![
                    "flush_handlers",
                    "noop",
                    "end_play",
                    "end_host",
                    "clear_facts",
                    "clear_host_errors",
                    "refresh_inventory",
                    "reset_connection",
                ]
                .contains(&m.as_str())
                {
                    return fail(&arg_node, format!("unknown meta action '{m}'"));
                }
                Action::Meta(m)
            }
            "gather_facts" => Action::Module {
                name: "setup".into(),
                args: raw_args(false)?,
            },
            "import_tasks" | "include_tasks" | "include" => {
                let a = raw_args(true)?;
                let file = a
                    .get("file")
                    .or_else(|| a.get("_raw_params"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| arg_node.err(format!("{short} needs a file")))?
                    .to_string();
                check_args(&a, &["_raw_params", "file", "apply"])?;
                let dynamic = short != "import_tasks" || is_template(&file);
                if !dynamic && opts.loop_items.is_none() {
                    if ctx.depth > 30 {
                        return fail(&arg_node, "import_tasks nested too deeply (a cycle?)");
                    }
                    let path = ctx.resolve_tasks_file(&file);
                    if !path.exists() {
                        return fail(
                            &arg_node,
                            format!("tasks file not found: {}", path.display()),
                        );
                    }
                    let inner = yaml::load_file(&path)?;
                    let sub = Ctx {
                        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                        role: ctx.role.clone(),
                        depth: ctx.depth + 1,
                    };
                    let mut child = opts.clone();
                    child.register = None;
                    out.extend(self.task_list(&inner, &sub, &child)?);
                    return Ok(());
                }
                // Validate statically known include files now; templated ones at run time.
                if !is_template(&file) {
                    let path = ctx.resolve_tasks_file(&file);
                    if !path.exists() {
                        return fail(
                            &arg_node,
                            format!("tasks file not found: {}", path.display()),
                        );
                    }
                    let inner = yaml::load_file(&path)?;
                    let sub = Ctx {
                        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                        role: ctx.role.clone(),
                        depth: ctx.depth + 1,
                    };
                    if ctx.depth < 30 {
                        self.task_list(&inner, &sub, &TaskOpts::default())?;
                    }
                }
                let path = crate::error::tidy_path(&ctx.resolve_tasks_file(&file));
                Action::IncludeTasks {
                    file: path.to_string_lossy().into_owned(),
                }
            }
            "import_role" | "include_role" => {
                let a = raw_args(false)?;
                check_args(
                    &a,
                    &[
                        "name",
                        "tasks_from",
                        "vars_from",
                        "defaults_from",
                        "handlers_from",
                        "allow_duplicates",
                        "public",
                        "apply",
                        "rolespec_validate",
                    ],
                )?;
                let rname = a
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| arg_node.err(format!("{short} needs 'name'")))?
                    .to_string();
                let tasks_from = a
                    .get("tasks_from")
                    .and_then(Value::as_str)
                    .unwrap_or("main")
                    .to_string();
                if short == "import_role" && opts.loop_items.is_none() {
                    let mut roles = Vec::new();
                    let mut handlers = Vec::new();
                    self.expand_role(
                        &rname,
                        &tasks_from,
                        &arg_node,
                        &opts,
                        &mut roles,
                        out,
                        &mut handlers,
                        ctx.depth + 1,
                    )?;
                    return Ok(());
                }
                // Dynamic: validate it loads now.
                let mut roles = Vec::new();
                let (mut t, mut h) = (Vec::new(), Vec::new());
                self.expand_role(
                    &rname,
                    &tasks_from,
                    &arg_node,
                    &TaskOpts::default(),
                    &mut roles,
                    &mut t,
                    &mut h,
                    ctx.depth + 1,
                )?;
                Action::IncludeRole {
                    name: rname,
                    tasks_from,
                }
            }
            _ => {
                let Some(m) = modules::lookup(self.registry, &module) else {
                    let mut known: Vec<&str> = self
                        .registry
                        .iter()
                        .flat_map(|m| m.names().iter().copied())
                        .collect();
                    known.extend([
                        "debug",
                        "set_fact",
                        "assert",
                        "fail",
                        "meta",
                        "include_tasks",
                        "import_tasks",
                        "include_role",
                        "import_role",
                        "include_vars",
                        "pause",
                        "ping",
                        "async_status",
                    ]);
                    let hint = suggest(&short, known.iter().copied())
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    return fail(key_node, format!("unknown module '{module}'{hint}"));
                };
                let a = raw_args(m.free_form())?;
                check_args(&a, m.arg_names())?;
                if let Err(e) = modules::check_at_load(m, &a) {
                    return fail(key_node, e);
                }
                Action::Module {
                    name: m.names()[0].to_string(),
                    args: a,
                }
            }
        };
        out.push(base(action, opts));
        Ok(())
    }
}

struct Ctx {
    /// Directory relative task files resolve against.
    dir: PathBuf,
    role: Option<Arc<Role>>,
    depth: usize,
}

impl Ctx {
    fn resolve_tasks_file(&self, file: &str) -> PathBuf {
        let p = PathBuf::from(file);
        if p.is_absolute() {
            return p;
        }
        let direct = self.dir.join(&p);
        if direct.exists() {
            return direct;
        }
        if let Some(r) = &self.role {
            let c = r.path.join("tasks").join(&p);
            if c.exists() {
                return c;
            }
        }
        direct
    }
}

/// `dir/name.yml`, `dir/name.yaml` or `dir/name`.
pub fn find_yaml(dir: &Path, name: &str) -> Option<PathBuf> {
    let has_ext = name.ends_with(".yml") || name.ends_with(".yaml");
    let candidates: Vec<PathBuf> = if has_ext {
        vec![dir.join(name)]
    } else {
        vec![
            dir.join(format!("{name}.yml")),
            dir.join(format!("{name}.yaml")),
            dir.join(name),
        ]
    };
    candidates.into_iter().find(|p| p.is_file())
}

/// Loads a task file at run time (dynamic `include_tasks`).
pub fn load_task_file(
    loader: &Loader,
    path: &Path,
    role: Option<Arc<Role>>,
    inherit: &TaskOpts,
) -> LoadResult<Vec<Task>> {
    let node = yaml::load_file(path)?;
    let ctx = Ctx {
        dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        role,
        depth: 1,
    };
    loader.task_list(&node, &ctx, inherit)
}

/// A role loaded at run time: the roles it brought in, its tasks, its handlers.
pub type RoleTasks = (Vec<Arc<Role>>, Vec<Task>, Vec<Task>);

/// Loads a role's tasks and handlers at run time (dynamic `include_role`).
pub fn load_role_tasks(
    loader: &Loader,
    name: &str,
    tasks_from: &str,
    at: &Loc,
    inherit: &TaskOpts,
) -> LoadResult<RoleTasks> {
    let node = Node {
        kind: Kind::Null,
        loc: at.clone(),
    };
    let (mut roles, mut tasks, mut handlers) = (Vec::new(), Vec::new(), Vec::new());
    loader.expand_role(
        name,
        tasks_from,
        &node,
        inherit,
        &mut roles,
        &mut tasks,
        &mut handlers,
        0,
    )?;
    Ok((roles, tasks, handlers))
}
