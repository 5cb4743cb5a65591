//! Playbooks, plays and roles from files: `import_playbook`, play keywords, `roles:` and role
//! dependencies, task lists (each task: [`super::task`]), and the run-time loads of dynamic
//! includes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::nodes::{
    bool_of, check_templates, conditions, fail, mapping, string_list, string_of, throttle_of,
};
use super::{suggest, Action, Loader, Play, Playbook, Role, Task, TaskOpts};
use crate::error::{LoadResult, Loc, LocatedError};
use crate::inventory::{load_vars_file, VarsDir};
use crate::yaml::{self, Kind, Node};

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
                    play.gather_facts = crate::words::to_bool(&v.to_value()).unwrap_or(true)
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
                "throttle" => inherit.throttle = throttle_of(v)?,
                "ignore_errors" => inherit.ignore_errors = Some(bool_of(v, "ignore_errors")?),
                "force_handlers" => {
                    play.force_handlers = crate::words::to_bool(&v.to_value()).unwrap_or(false)
                }
                "any_errors_fatal" => {
                    play.any_errors_fatal = crate::words::to_bool(&v.to_value()).unwrap_or(false)
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
    pub(super) fn expand_role(
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

    pub(super) fn task_list(
        &self,
        node: &Node,
        ctx: &Ctx,
        inherit: &TaskOpts,
    ) -> LoadResult<Vec<Task>> {
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
}

pub(super) struct Ctx {
    /// Directory relative task files resolve against.
    pub(super) dir: PathBuf,
    pub(super) role: Option<Arc<Role>>,
    pub(super) depth: usize,
}

impl Ctx {
    pub(super) fn resolve_tasks_file(&self, file: &str) -> PathBuf {
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
