//! Variables: Ansible's precedence, lowest first. Each layer replaces whole keys of the ones below
//! (Ansible's default `hash_behaviour=replace`).
//!
//! 1 role defaults · 2 inventory group vars, then host vars (incl. `group_vars/`, `host_vars/`)
//! · 3 facts · 4 play vars · 5 play vars_files · 6 role vars · 7 block vars, then task vars
//! (incl. include/role params) · 8 set_fact / register · 9 extra vars (`-e`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::inventory::Inventory;
use crate::playbook::Role;
use crate::template::{HostVars, Scope, Templar};

/// The precedence layers of one host at one task, merged in order by [`Layers::flatten`].
#[derive(Debug, Default, Clone)]
pub struct Layers<'a> {
    pub role_defaults: Vec<&'a Map<String, Value>>,
    pub inventory: Option<&'a Map<String, Value>>,
    pub facts: Option<&'a Map<String, Value>>,
    pub play_vars: Option<&'a Map<String, Value>>,
    pub vars_files: Option<&'a Map<String, Value>>,
    pub role_vars: Vec<&'a Map<String, Value>>,
    pub block_task_vars: Vec<&'a Map<String, Value>>,
    pub host_facts: Option<&'a Map<String, Value>>,
    pub extra_vars: Option<&'a Map<String, Value>>,
}

impl Layers<'_> {
    pub fn flatten(&self) -> Map<String, Value> {
        let mut out = Map::new();
        let mut add = |m: &Map<String, Value>| {
            for (k, v) in m {
                out.insert(k.clone(), v.clone());
            }
        };
        self.role_defaults.iter().for_each(|m| add(m));
        self.inventory.into_iter().for_each(&mut add);
        self.facts.into_iter().for_each(&mut add);
        self.play_vars.into_iter().for_each(&mut add);
        self.vars_files.into_iter().for_each(&mut add);
        self.role_vars.iter().for_each(|m| add(m));
        self.block_task_vars.iter().for_each(|m| add(m));
        self.host_facts.into_iter().for_each(&mut add);
        self.extra_vars.into_iter().for_each(&mut add);
        out
    }
}

/// The play-wide inputs of every host's scope.
pub struct PlayInputs<'a> {
    pub inv: &'a Inventory,
    pub play_vars: &'a Map<String, Value>,
    pub vars_files: &'a Map<String, Value>,
    /// Defaults and vars of the play's `roles:` (a task's own role is layered above them).
    pub role_defaults: &'a Map<String, Value>,
    pub role_vars: &'a Map<String, Value>,
    pub extra_vars: &'a Map<String, Value>,
    pub play_hosts: &'a [String],
    pub playbook_dir: &'a Path,
    pub check: bool,
    pub diff: bool,
    /// `groups`, computed once per run.
    pub groups: &'a Value,
}

/// One host's own inputs at one task.
pub struct HostInputs<'a> {
    pub host: &'a str,
    /// Inventory, group_vars and host_vars.
    pub inventory: &'a Map<String, Value>,
    pub facts: &'a Map<String, Value>,
    /// set_fact and register results.
    pub host_facts: &'a Map<String, Value>,
    /// The role the task comes from.
    pub role: Option<&'a Role>,
    /// The file the task is written in (`ansible_search_path`); `None` outside a task.
    pub task_file: Option<&'a Path>,
    /// Include, task and loop vars, lowest first.
    pub task_vars: Vec<&'a Map<String, Value>>,
}

/// Builds the template scope of one host at one task: the precedence layers plus Ansible's
/// magic variables, with `hostvars` (which needs the runner to build other hosts' scopes).
pub fn host_scope(
    templar: Arc<Templar>,
    play: &PlayInputs<'_>,
    h: HostInputs<'_>,
    hostvars: HostVars,
) -> Arc<Scope> {
    let host = h.host;
    let mut layers = Layers {
        role_defaults: vec![play.role_defaults],
        inventory: Some(h.inventory),
        facts: Some(h.facts),
        play_vars: Some(play.play_vars),
        vars_files: Some(play.vars_files),
        role_vars: vec![play.role_vars],
        block_task_vars: h.task_vars,
        host_facts: Some(h.host_facts),
        extra_vars: Some(play.extra_vars),
    };
    if let Some(r) = h.role {
        layers.role_defaults.push(&r.defaults);
        layers.role_vars.push(&r.vars);
    }
    let mut raw = layers.flatten();
    raw.insert("inventory_hostname".into(), json!(host));
    raw.insert(
        "inventory_hostname_short".into(),
        json!(host.split('.').next().unwrap_or(host)),
    );
    raw.insert("group_names".into(), json!(play.inv.group_names(host)));
    raw.insert("play_hosts".into(), json!(play.play_hosts));
    raw.insert("ansible_play_hosts".into(), json!(play.play_hosts));
    raw.insert("ansible_play_batch".into(), json!(play.play_hosts));
    raw.insert("ansible_play_hosts_all".into(), json!(play.play_hosts));
    raw.insert("ansible_check_mode".into(), json!(play.check));
    raw.insert("ansible_diff_mode".into(), json!(play.diff));
    raw.insert("playbook_dir".into(), json!(abs_path(play.playbook_dir)));
    raw.insert("inventory_dir".into(), json!(abs_path(&play.inv.dir)));
    raw.insert("inventory_file".into(), json!(abs_path(&play.inv.source)));
    raw.insert(
        "ansible_facts".into(),
        Value::Object(
            h.facts
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
    if let Some(r) = h.role {
        raw.insert("role_path".into(), json!(abs_path(&r.path)));
        raw.insert("role_name".into(), json!(r.name));
    }
    if let Some(f) = h.task_file {
        let stack =
            crate::lookups::first_found::task_search_path(h.role.map(|r| r.path.as_path()), f);
        // Lexically (no file-system calls): this is built for every host and task.
        let stack: Vec<String> = stack
            .iter()
            .map(|p| {
                crate::lookups::first_found::absolute(p)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        raw.insert("ansible_search_path".into(), json!(stack));
    }
    let mut fixed = HashMap::new();
    fixed.insert(
        "groups".to_string(),
        minijinja::Value::from_serialize(play.groups),
    );
    fixed.insert(
        "hostvars".to_string(),
        minijinja::Value::from_object(hostvars),
    );
    Scope::with_fixed(templar, raw, fixed)
}

/// A path as the `*_dir` variables show it: absolute, or as given when it cannot be resolved.
pub fn abs_path(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Parses one `-e` argument: `k=v k2=v2`, a JSON/YAML mapping, or `@file`.
pub fn parse_extra_vars(arg: &str) -> Result<Map<String, Value>, String> {
    let arg = arg.trim();
    if let Some(path) = arg.strip_prefix('@') {
        return crate::inventory::load_vars_file(std::path::Path::new(path))
            .map_err(|e| e.to_string());
    }
    if arg.starts_with('{') {
        let node = crate::yaml::parse_str(std::path::Path::new("<extra vars>"), arg.to_string())
            .map_err(|e| e.to_string())?;
        return match node.to_value() {
            Value::Object(m) => Ok(m),
            _ => Err(format!("extra vars must be a mapping: {arg}")),
        };
    }
    let (map, rest) = crate::words::split_kv(arg);
    if !rest.is_empty() {
        return Err(format!(
            "cannot parse extra vars {rest:?}: expected key=value, JSON, or @file"
        ));
    }
    // `-e port=5432` gives a string, as in Ansible.
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn precedence_order() {
        let d = m(
            json!({"a": "default", "b": "default", "c": "default", "d": "default", "e": "default"}),
        );
        let inv =
            m(json!({"b": "inventory", "c": "inventory", "d": "inventory", "e": "inventory"}));
        let play = m(json!({"c": "play", "d": "play", "e": "play"}));
        let task = m(json!({"d": "task", "e": "task"}));
        let extra = m(json!({"e": "extra"}));
        let l = Layers {
            role_defaults: vec![&d],
            inventory: Some(&inv),
            play_vars: Some(&play),
            block_task_vars: vec![&task],
            extra_vars: Some(&extra),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(l.flatten()),
            json!({"a": "default", "b": "inventory", "c": "play", "d": "task", "e": "extra"})
        );
    }

    #[test]
    fn extra_vars_forms() {
        assert_eq!(
            parse_extra_vars("a=1 b='x y'").unwrap(),
            m(json!({"a": "1", "b": "x y"}))
        );
        assert_eq!(
            parse_extra_vars("{\"a\": [1, 2], \"b\": yes}").unwrap(),
            m(json!({"a": [1, 2], "b": true}))
        );
        assert!(parse_extra_vars("oops").is_err());
    }
}
