//! One task entry: its keywords, parsed one function per concern, then a block or its action
//! (see [`super::action`]).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::loader::Ctx;
use super::nodes::{bool_of, check_templates, condition, conditions, fail, mapping};
use super::nodes::{string_list, string_of, throttle_of};
use super::{suggest, Action, Loader, Loop, Task, TaskOpts};
use crate::error::LoadResult;
use crate::words::to_bool;
use crate::yaml::Node;

/// Task keywords hfplay knows (anything else on a task must be its one module).
const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop",
    "with_items",
    "with_list",
    "with_dict",
    "with_fileglob",
    "with_first_found",
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

/// A task entry read keyword by keyword, before its block or action is resolved.
#[derive(Default)]
pub(super) struct TaskParts<'n> {
    pub(super) opts: TaskOpts,
    pub(super) name: Option<String>,
    /// Entries that are not keywords: the action (exactly one is allowed).
    pub(super) action_keys: Vec<(&'n Node, &'n Node)>,
    /// `args:` and its node (for locating an unsupported argument).
    pub(super) extra_args: Option<(Map<String, Value>, &'n Node)>,
    own_vars: Map<String, Value>,
    block: Option<&'n Node>,
    rescue: Option<&'n Node>,
    always: Option<&'n Node>,
}

impl Loader<'_> {
    /// Parses one task entry, appending it (or, for static imports, what it expands to).
    pub(super) fn task(
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
        let mut parts = TaskParts {
            opts: inherit.clone(),
            ..Default::default()
        };
        for (k, v) in entries {
            parts.keyword(k, v)?;
        }
        if !parts.own_vars.is_empty() {
            let own = std::mem::take(&mut parts.own_vars);
            parts.opts.vars.push(Arc::new(own));
        }
        if let Some(b) = parts.block {
            return self.block(node, ctx, b, parts, out);
        }
        if let Some(r) = parts.rescue.or(parts.always) {
            return fail(r, "'rescue' and 'always' need a 'block'");
        }
        self.action_task(node, ctx, parts, out)
    }

    /// A block: its tasks, rescue and always sections, parsed with the block's keywords.
    fn block(
        &self,
        node: &Node,
        ctx: &Ctx,
        block: &Node,
        parts: TaskParts<'_>,
        out: &mut Vec<Task>,
    ) -> LoadResult<()> {
        if let Some((k, _)) = parts.action_keys.first() {
            return fail(
                k,
                format!(
                    "'{}' cannot be used on a block (a block holds only tasks and keywords)",
                    k.key_string()
                ),
            );
        }
        let opts = parts.opts;
        // Children inherit everything except the block's own loop/register/notify.
        let mut child = opts.clone();
        child.register = None;
        child.notify.clear();
        let block = self.task_list(block, ctx, &child)?;
        let rescue = match parts.rescue {
            Some(r) => self.task_list(r, ctx, &child)?,
            None => vec![],
        };
        let always = match parts.always {
            Some(a) => self.task_list(a, ctx, &child)?,
            None => vec![],
        };
        out.push(Task {
            loc: node.loc.clone(),
            name: parts.name,
            action: Action::Block {
                block,
                rescue,
                always,
            },
            opts,
            role: ctx.role.clone(),
        });
        Ok(())
    }
}

impl<'n> TaskParts<'n> {
    /// Takes one entry of the task: a keyword into the options, or a candidate action.
    fn keyword(&mut self, k: &'n Node, v: &'n Node) -> LoadResult<()> {
        let key = k.key_string();
        check_keyword_templates(&key, v)?;
        let opts = &mut self.opts;
        match key.as_str() {
            "name" => self.name = Some(string_of(v, "name")?),
            "when" => opts.when.extend(conditions(v)?),
            "loop" | "with_items" | "with_list" => {
                opts.loop_items = Some(Loop::Items(loop_items(&key, v)))
            }
            "with_dict" => opts.loop_items = Some(Loop::Items(with_dict(v))),
            "with_first_found" => opts.loop_items = Some(Loop::FirstFound(v.to_value())),
            // Refused rather than ignored: the task would run once, without its items.
            "with_fileglob" => return fail(
                v,
                "with_fileglob is not supported by hfplay yet; list the files with `loop:` instead",
            ),
            "loop_control" => loop_control(opts, v)?,
            "register" => opts.register = Some(string_of(v, "register")?),
            "notify" => opts.notify = string_list(v, "notify")?,
            "listen" => opts.listen = string_list(v, "listen")?,
            "changed_when" => opts.changed_when = Some(conditions(v)?),
            "failed_when" => opts.failed_when = Some(conditions(v)?),
            "ignore_errors" => opts.ignore_errors = Some(bool_of(v, "ignore_errors")?),
            "ignore_unreachable" => opts.ignore_unreachable = flag(v),
            "tags" => opts.tags.extend(string_list(v, "tags")?),
            "become" => opts.become_ = Some(bool_of(v, "become")?),
            "become_user" => opts.become_user = Some(string_of(v, "become_user")?),
            "run_once" => opts.run_once = flag(v),
            "throttle" => opts.throttle = throttle_of(v)?,
            "delegate_to" => opts.delegate_to = Some(string_of(v, "delegate_to")?),
            "delegate_facts" => opts.delegate_facts = flag(v),
            "check_mode" => opts.check_mode = Some(bool_of(v, "check_mode")?),
            "no_log" => opts.no_log = Some(bool_of(v, "no_log")?),
            "environment" => opts.environment.push(v.to_value()),
            "vars" => self.own_vars = mapping(v, "vars")?,
            "args" => self.extra_args = Some((mapping(v, "args")?, v)),
            "until" => opts.until = Some(condition(v)?),
            "retries" | "delay" | "timeout" | "async" | "poll" => {
                *run_setting(opts, &key) = Some(v.to_value())
            }
            "block" => self.block = Some(v),
            "rescue" => self.rescue = Some(v),
            "always" => self.always = Some(v),
            other
                if TASK_KEYWORDS.contains(&other)
                    && other != "action"
                    && other != "local_action" => {}
            _ => self.action_keys.push((k, v)),
        }
        Ok(())
    }
}

/// Template syntax of everything but nested task lists (checked as tasks themselves).
fn check_keyword_templates(key: &str, v: &Node) -> LoadResult<()> {
    match key {
        "block" | "rescue" | "always" => Ok(()),
        "when" | "changed_when" | "failed_when" | "until" => check_templates(v, true),
        "assert" | "ansible.builtin.assert" | "ansible.legacy.assert" => match v.as_map() {
            Some(m) => m
                .iter()
                .try_for_each(|(ak, av)| check_templates(av, ak.as_str() == Some("that"))),
            None => check_templates(v, false),
        },
        _ => check_templates(v, false),
    }
}

/// A yes/no keyword read leniently (anything else is false), as `run_once` always was.
fn flag(v: &Node) -> bool {
    to_bool(&v.to_value()).unwrap_or(false)
}

/// `loop`, `with_items`, `with_list`: the items as written; `with_items` flattens one level, as
/// in Ansible.
fn loop_items(key: &str, v: &Node) -> Value {
    let items = v.to_value();
    if key != "with_items" {
        return items;
    }
    let Value::Array(a) = &items else {
        return items;
    };
    let mut flat = Vec::new();
    for i in a {
        match i {
            Value::Array(inner) => flat.extend(inner.iter().cloned()),
            other => flat.push(other.clone()),
        }
    }
    Value::Array(flat)
}

/// `with_dict: x` loops over `x | dict2items`.
fn with_dict(v: &Node) -> Value {
    let expr = match v.to_value() {
        Value::String(s) => format!(
            "{{{{ ({}) | dict2items }}}}",
            s.trim().trim_start_matches("{{").trim_end_matches("}}")
        ),
        other => format!("{{{{ {} | dict2items }}}}", other),
    };
    Value::String(expr)
}

fn loop_control(opts: &mut TaskOpts, v: &Node) -> LoadResult<()> {
    let m = mapping(v, "loop_control")?;
    for (lk, lv) in &m {
        match lk.as_str() {
            "loop_var" => opts.loop_var = lv.as_str().map(str::to_string),
            "index_var" => opts.index_var = lv.as_str().map(str::to_string),
            "label" => opts.loop_label = lv.as_str().map(str::to_string),
            "pause" => opts.loop_pause = Some(lv.clone()),
            "extended" => {}
            other => return fail(v, format!("unknown loop_control option '{other}'")),
        }
    }
    Ok(())
}

/// Where `retries`, `delay`, `timeout`, `async` or `poll` go: kept as written, templated per run.
fn run_setting<'o>(opts: &'o mut TaskOpts, key: &str) -> &'o mut Option<Value> {
    match key {
        "retries" => &mut opts.retries,
        "delay" => &mut opts.delay,
        "timeout" => &mut opts.timeout,
        "async" => &mut opts.async_,
        _ => &mut opts.poll,
    }
}

/// A misspelt keyword among the action candidates, as a hint for the conflict error.
pub(super) fn keyword_hint(names: &[String]) -> String {
    names
        .iter()
        .find_map(|n| {
            suggest(n, TASK_KEYWORDS.iter().copied())
                .map(|s| format!(" (is '{n}' a misspelling of '{s}'?)"))
        })
        .unwrap_or_default()
}
