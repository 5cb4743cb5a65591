//! A task's action: which module or built-in action it names and its arguments, checked against
//! what that action accepts. Static imports (`import_tasks`, `import_role`) expand here.

use std::path::Path;

use serde_json::{Map, Value};

use super::loader::Ctx;
use super::nodes::{fail, mapping, string_of};
use super::task::{keyword_hint, TaskParts};
use super::{suggest, Action, Loader, Task, TaskOpts};
use crate::error::LoadResult;
use crate::modules;
use crate::template::is_template;
use crate::words::split_kv;
use crate::yaml::{self, Kind, Node};

/// Built-in actions that are not modules (for the unknown-module hint).
const BUILTIN_ACTIONS: &[&str] = &[
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
];

/// Options of a free-form `command`-like module that are split off its text.
const FREE_FORM_OPTIONS: &[&str] = &["creates", "removes", "chdir", "executable", "stdin"];

/// The arguments of a task's action: its own value and the task's `args:`.
struct ArgSource<'n> {
    /// The action as written (`ansible.builtin.copy`).
    module: String,
    /// Its short name (`copy`).
    short: String,
    node: Node,
    extra: Option<(Map<String, Value>, &'n Node)>,
}

impl ArgSource<'_> {
    /// The arguments as a mapping; `free_form` text keeps everything but the known options
    /// as `_raw_params`. `args:` wins over the action's own value.
    fn raw(&self, free_form: bool) -> LoadResult<Map<String, Value>> {
        let (module, node) = (&self.module, &self.node);
        let mut args = match &node.kind {
            Kind::Null => Map::new(),
            Kind::Map(_) => mapping(node, module)?,
            Kind::Str(s) if free_form => free_form_args(s),
            Kind::Str(s) => {
                let (m, rest) = split_kv(s);
                if !rest.trim().is_empty() {
                    return fail(node, format!("'{module}' does not take free-form text {rest:?}: use key=value or a mapping"));
                }
                m
            }
            _ => {
                return fail(
                    node,
                    format!(
                        "arguments of '{module}' must be a mapping or key=value text, found {}",
                        node.type_name()
                    ),
                )
            }
        };
        if let Some((extra, _)) = &self.extra {
            for (k, v) in extra {
                args.insert(k.clone(), v.clone());
            }
        }
        Ok(args)
    }

    /// Fails on the first argument not in `allowed`, pointing at its key where there is one.
    fn check(&self, args: &Map<String, Value>, allowed: &[&str]) -> LoadResult<()> {
        let short = &self.short;
        for k in args.keys() {
            if !allowed.contains(&k.as_str()) {
                let hint = suggest(k, allowed.iter().copied())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                // Point at the key itself when the arguments are a mapping (`args:` wins, as in raw).
                let key_node = [self.extra.as_ref().map(|(_, n)| *n), Some(&self.node)]
                    .into_iter()
                    .flatten()
                    .find_map(|n| {
                        n.as_map()
                            .and_then(|m| m.iter().find(|(kn, _)| kn.key_string() == *k))
                            .map(|(kn, _)| kn)
                    })
                    .unwrap_or(&self.node);
                // The accepted names, sorted as Ansible lists them; `_raw_params` is internal.
                let mut names: Vec<&str> = allowed
                    .iter()
                    .copied()
                    .filter(|n| !n.starts_with('_'))
                    .collect();
                names.sort_unstable();
                return fail(
                    key_node,
                    format!(
                        "unsupported argument '{k}' for module '{short}'{hint}; it accepts: {}",
                        names.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    /// `raw(false)` restricted to `allowed`.
    fn checked(&self, allowed: &[&str]) -> LoadResult<Map<String, Value>> {
        let a = self.raw(false)?;
        self.check(&a, allowed)?;
        Ok(a)
    }
}

/// `command: cmd creates=/x chdir={{ d }}`: known k=v options are split off; the rest stays as
/// written (quotes, newlines).
fn free_form_args(s: &str) -> Map<String, Value> {
    let mut m = Map::new();
    let mut rest = String::new();
    let mut copied = 0;
    for (start, end) in crate::words::arg_spans(s) {
        if let Some((k, v)) = crate::words::kv_token(&s[start..end]) {
            if FREE_FORM_OPTIONS.contains(&k) && !v.is_empty() {
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

/// The one entry of a task that is its action.
fn action_entry<'a>(
    node: &Node,
    action_keys: &[(&'a Node, &'a Node)],
) -> LoadResult<(&'a Node, &'a Node)> {
    match action_keys {
        [one] => Ok(*one),
        [] => fail(node, "no module or action given in this task"),
        [first, ..] => {
            let names: Vec<String> = action_keys.iter().map(|(k, _)| k.key_string()).collect();
            // One of them is probably a misspelt keyword.
            let hint = keyword_hint(&names);
            fail(
                first.0,
                format!("conflicting action statements: {}{hint}", names.join(", ")),
            )
        }
    }
}

/// `action: copy src=a dest=b` → module `copy` with the text as its arguments.
fn shorthand(key: &str, arg_node: &Node) -> LoadResult<(String, Node)> {
    let s = string_of(arg_node, key)?;
    let (m, rest) = s
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((s.trim(), ""));
    Ok((
        m.to_string(),
        Node {
            kind: Kind::Str(rest.to_string()),
            loc: arg_node.loc.clone(),
        },
    ))
}

impl Loader<'_> {
    /// A task that is not a block: resolves its action and appends it (or, for a static
    /// import, what the import expands to).
    pub(super) fn action_task(
        &self,
        node: &Node,
        ctx: &Ctx,
        parts: TaskParts<'_>,
        out: &mut Vec<Task>,
    ) -> LoadResult<()> {
        let TaskParts {
            mut opts,
            name,
            action_keys,
            extra_args,
            ..
        } = parts;
        let (key_node, arg_node) = action_entry(node, &action_keys)?;
        let mut module = key_node.key_string();
        let mut arg_node = arg_node.clone();
        if module == "action" || module == "local_action" {
            if module == "local_action" {
                opts.delegate_to = Some("localhost".into());
            }
            (module, arg_node) = shorthand(&module, &arg_node)?;
        }
        let src = ArgSource {
            short: modules::short_name(&module).to_string(),
            module,
            node: arg_node,
            extra: extra_args,
        };
        let action = match src.short.as_str() {
            "import_tasks" | "include_tasks" | "include" => {
                match self.include_tasks(ctx, &src, &opts, out)? {
                    Some(a) => a,
                    None => return Ok(()),
                }
            }
            "import_role" | "include_role" => match self.include_role(ctx, &src, &opts, out)? {
                Some(a) => a,
                None => return Ok(()),
            },
            _ => match builtin(&src)? {
                Some(a) => a,
                None => self.module(key_node, &src)?,
            },
        };
        out.push(Task {
            loc: node.loc.clone(),
            name,
            action,
            opts,
            role: ctx.role.clone(),
        });
        Ok(())
    }

    /// `import_tasks` expands in place (`None`); `include_tasks` is loaded at run time, and
    /// checked now when its file name is not templated and no `when` guards it.
    fn include_tasks(
        &self,
        ctx: &Ctx,
        src: &ArgSource<'_>,
        opts: &TaskOpts,
        out: &mut Vec<Task>,
    ) -> LoadResult<Option<Action>> {
        let (short, arg_node) = (&src.short, &src.node);
        let a = src.raw(true)?;
        let file = a
            .get("file")
            .or_else(|| a.get("_raw_params"))
            .and_then(Value::as_str)
            .ok_or_else(|| arg_node.err(format!("{short} needs a file")))?
            .to_string();
        src.check(&a, &["_raw_params", "file", "apply"])?;
        let dynamic = short != "import_tasks" || is_template(&file);
        if !dynamic && opts.loop_items.is_none() {
            if ctx.depth > 30 {
                return fail(arg_node, "import_tasks nested too deeply (a cycle?)");
            }
            let (inner, sub) = self.tasks_file(ctx, arg_node, &file)?;
            let mut child = opts.clone();
            child.register = None;
            out.extend(self.task_list(&inner, &sub, &child)?);
            return Ok(None);
        }
        // Check a literally named file now, so a typo fails before anything runs. Not behind a
        // `when`, as Ansible loads includes only when they run: an OS branch (setup-RedHat.yml
        // with `yum`) must not stop a Debian run, and loading it anyway would start the
        // Ansible fallback's Python for modules that never run (0.25 s per run).
        if !is_template(&file) && opts.when.is_empty() {
            let (inner, sub) = self.tasks_file(ctx, arg_node, &file)?;
            if ctx.depth < 30 {
                self.task_list(&inner, &sub, &TaskOpts::default())?;
            }
        }
        let path = crate::error::tidy_path(&ctx.resolve_tasks_file(&file));
        Ok(Some(Action::IncludeTasks {
            file: path.to_string_lossy().into_owned(),
        }))
    }

    /// A tasks file named by an import or include, read, with the context its tasks load in.
    fn tasks_file(&self, ctx: &Ctx, at: &Node, file: &str) -> LoadResult<(Node, Ctx)> {
        let path = ctx.resolve_tasks_file(file);
        if !path.exists() {
            return fail(at, format!("tasks file not found: {}", path.display()));
        }
        let inner = yaml::load_file(&path)?;
        let sub = Ctx {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            role: ctx.role.clone(),
            depth: ctx.depth + 1,
        };
        Ok((inner, sub))
    }

    /// `import_role` expands in place (`None`); `include_role` is loaded at run time, and
    /// checked now.
    fn include_role(
        &self,
        ctx: &Ctx,
        src: &ArgSource<'_>,
        opts: &TaskOpts,
        out: &mut Vec<Task>,
    ) -> LoadResult<Option<Action>> {
        let (short, arg_node) = (&src.short, &src.node);
        let a = src.checked(&[
            "name",
            "tasks_from",
            "vars_from",
            "defaults_from",
            "handlers_from",
            "allow_duplicates",
            "public",
            "apply",
            "rolespec_validate",
        ])?;
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
                arg_node,
                opts,
                &mut roles,
                out,
                &mut handlers,
                ctx.depth + 1,
            )?;
            return Ok(None);
        }
        // Dynamic: check it loads now; behind a `when`, at run time (as `include_tasks`).
        if opts.when.is_empty() {
            let mut roles = Vec::new();
            let (mut t, mut h) = (Vec::new(), Vec::new());
            self.expand_role(
                &rname,
                &tasks_from,
                arg_node,
                &TaskOpts::default(),
                &mut roles,
                &mut t,
                &mut h,
                ctx.depth + 1,
            )?;
        }
        Ok(Some(Action::IncludeRole {
            name: rname,
            tasks_from,
        }))
    }

    /// A native module, by any of its names.
    fn module(&self, key_node: &Node, src: &ArgSource<'_>) -> LoadResult<Action> {
        let (module, short) = (&src.module, &src.short);
        let Some(m) = modules::lookup(self.registry, module) else {
            let mut known: Vec<&str> = self
                .registry
                .iter()
                .flat_map(|m| m.names().iter().copied())
                .collect();
            known.extend(BUILTIN_ACTIONS);
            let hint = suggest(short, known.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            // Not native: the real Ansible module, when an installation can run it.
            let Some(fb) = crate::ansible::fallback() else {
                let how = crate::ansible::HOW_TO_ENABLE;
                return fail(key_node, format!("unknown module '{module}'{hint}; {how}"));
            };
            return match fb.resolve(module) {
                Ok(resolved) => Ok(Action::Ansible {
                    module: resolved,
                    args: src.raw(false)?,
                }),
                Err(e) => {
                    let python = fb.python().display();
                    fail(key_node, format!("unknown module '{module}'{hint}: the Ansible installation ({python}) says: {e}"))
                }
            };
        };
        let a = src.raw(m.free_form())?;
        src.check(&a, m.arg_names())?;
        if let Err(e) = modules::check_at_load(m, &a) {
            return fail(key_node, e);
        }
        Ok(Action::Module {
            name: m.names()[0].to_string(),
            args: a,
        })
    }
}

/// The built-in actions other than includes (`None`: not one of them).
fn builtin(src: &ArgSource<'_>) -> LoadResult<Option<Action>> {
    let arg_node = &src.node;
    Ok(Some(match src.short.as_str() {
        "debug" => Action::Debug {
            args: src.checked(&["msg", "var", "verbosity"])?,
        },
        "set_fact" => {
            let mut a = src.raw(false)?;
            a.remove("cacheable");
            Action::SetFact { args: a }
        }
        "assert" => {
            let a = src.checked(&["that", "msg", "fail_msg", "success_msg", "quiet"])?;
            if !a.contains_key("that") {
                return fail(arg_node, "assert needs 'that'");
            }
            Action::Assert { args: a }
        }
        "fail" => Action::Fail {
            args: src.checked(&["msg"])?,
        },
        "include_vars" => {
            let a = src.raw(true)?;
            src.check(&a, &["_raw_params", "file", "name"])?;
            Action::IncludeVars { args: a }
        }
        "pause" => {
            let a = src.checked(&["seconds", "minutes", "prompt"])?;
            if a.contains_key("prompt") {
                return fail(
                    arg_node,
                    "pause with 'prompt' needs a terminal; hfplay runs unattended",
                );
            }
            Action::Pause { args: a }
        }
        "ping" => Action::Ping,
        "async_status" => {
            let a = src.checked(&["jid", "mode"])?;
            if !a.contains_key("jid") {
                return fail(arg_node, "async_status needs 'jid'");
            }
            Action::AsyncStatus { args: a }
        }
        "meta" => meta(arg_node)?,
        "gather_facts" => Action::Module {
            name: "setup".into(),
            args: src.raw(false)?,
        },
        _ => return Ok(None),
    }))
}

fn meta(arg_node: &Node) -> LoadResult<Action> {
    let m = string_of(arg_node, "meta")?;
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
        return fail(arg_node, format!("unknown meta action '{m}'"));
    }
    Ok(Action::Meta(m))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::modules;
    use crate::playbook::{load_task_file, Loader, TaskOpts};

    fn load(dir: &Path, yaml: &str) -> Result<(), String> {
        let path = dir.join("tasks.yml");
        std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
        let registry = modules::registry();
        let loader = Loader {
            roles_path: vec![],
            registry: &registry,
        };
        load_task_file(&loader, &path, None, &TaskOpts::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// An argument the module's `Params` does not name fails at load, at its key, naming it,
    /// suggesting the close one and listing what the module accepts (flattened attributes too).
    #[test]
    fn unknown_argument_is_refused_with_the_accepted_names() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(
            dir.path(),
            "- copy:\n    dest: /tmp/x\n    content: hi\n    mdoe: '0644'\n",
        )
        .unwrap_err();
        assert!(e.contains("tasks.yml:4:5"), "{e}");
        assert!(
            e.contains("unsupported argument 'mdoe' for module 'copy' (did you mean 'mode'?)"),
            "{e}"
        );
        assert!(
            e.contains("it accepts: attr, attributes, backup, checksum, content, decrypt, dest, directory_mode, follow, force, group, local_follow, mode, owner, remote_src, selevel, serole, setype, seuser, src, unsafe_writes, validate"),
            "{e}"
        );
        // Free-form modules do not list their internal `_raw_params`.
        let e = load(dir.path(), "- command: ls\n  args:\n    chdri: /tmp\n").unwrap_err();
        assert!(
            e.contains("unsupported argument 'chdri' for module 'command'"),
            "{e}"
        );
        assert!(e.contains("it accepts: argv, chdir, cmd, creates,"), "{e}");
        // `package` takes its own names, apt's and other managers' (for their OS's branch).
        load(
            dir.path(),
            "- package: name=memcached state=present\n- package:\n    name: [git]\n    state: present\n    enablerepo: epel\n- ansible.builtin.package: {update_cache: true, cache_valid_time: 600}\n",
        )
        .unwrap();
        let e = load(dir.path(), "- package: {name: git, stat: present}\n").unwrap_err();
        assert!(
            e.contains("unsupported argument 'stat' for module 'package' (did you mean 'state'?)"),
            "{e}"
        );
        // `with_first_found` is a loop keyword, not a second action.
        load(
            dir.path(),
            "- include_vars: '{{ item }}'\n  with_first_found:\n    - files: [vars/a.yml]\n      skip: true\n",
        )
        .unwrap();
        // Every derived name, renamed ones included, loads.
        load(
            dir.path(),
            "- file: path=/tmp/x owner=root mode=0644 seuser=x\n- systemd:\n    name: x\n    daemon-reload: true\n",
        )
        .unwrap();
    }
}
