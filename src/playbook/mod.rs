//! Playbooks and roles, parsed into a typed plan. Everything static is resolved here —
//! `import_playbook`, `import_tasks`, `import_role`, play `roles:`, role dependencies, keyword
//! inheritance from blocks — and every task's module and argument names are checked, so a
//! misspelt keyword, an unknown module or an unknown argument fails with file:line:column
//! before any host is contacted.

mod action;
mod loader;
mod nodes;
mod task;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::Loc;
use crate::inventory::VarsDir;
use crate::modules::Module;

pub use loader::{find_yaml, load_role_tasks, load_task_file, RoleTasks};

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
    pub loop_items: Option<Loop>,
    pub loop_var: Option<String>,
    pub index_var: Option<String>,
    pub loop_label: Option<String>,
    /// `loop_control.pause`: seconds between two items (templated per run).
    pub loop_pause: Option<Value>,
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
    /// `throttle:` at most this many hosts run the task at once (on top of `--forks`).
    pub throttle: Option<usize>,
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

/// A task's loop as written; its items are computed per host when the task runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Loop {
    /// `loop`, `with_items`, `with_list`, `with_dict`: a list, templated.
    Items(Value),
    /// `with_first_found`: the terms of the `first_found` lookup; the loop runs once with the
    /// first existing file, or not at all when none exists and the terms say `skip`.
    FirstFound(Value),
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
    /// A module hfplay lacks, run as the real Ansible module (`crate::ansible`).
    Ansible {
        module: crate::ansible::Resolved,
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

impl Action {
    /// The action's name as a task names it (`template`, `include_vars`, `debug`).
    pub fn name(&self) -> &str {
        match self {
            Action::Module { name, .. } => name,
            Action::Ansible { module, .. } => &module.fqcn,
            Action::Block { .. } => "block",
            Action::IncludeTasks { .. } => "include_tasks",
            Action::IncludeRole { .. } => "include_role",
            Action::Meta(_) => "meta",
            Action::Debug { .. } => "debug",
            Action::SetFact { .. } => "set_fact",
            Action::Assert { .. } => "assert",
            Action::Fail { .. } => "fail",
            Action::IncludeVars { .. } => "include_vars",
            Action::Pause { .. } => "pause",
            Action::Ping => "ping",
            Action::AsyncStatus { .. } => "async_status",
        }
    }
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
            (None, Action::Ansible { module, .. }) => module.fqcn.clone(),
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

/// What the loader needs besides files: where roles live and which modules exist.
pub struct Loader<'a> {
    pub roles_path: Vec<PathBuf>,
    pub registry: &'a [Box<dyn Module>],
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
