//! Variables: Ansible's precedence, lowest first. Each layer replaces whole keys of the ones below
//! (Ansible's default `hash_behaviour=replace`).
//!
//! 1 role defaults · 2 inventory group vars, then host vars (incl. `group_vars/`, `host_vars/`)
//! · 3 facts · 4 play vars · 5 play vars_files · 6 role vars · 7 block vars, then task vars
//! (incl. include/role params) · 8 set_fact / register · 9 extra vars (`-e`).

use serde_json::{Map, Value};

/// Overlays `top` onto `base`, replacing whole keys.
pub fn merge_into(base: &mut Map<String, Value>, top: Map<String, Value>) {
    for (k, v) in top {
        base.insert(k, v);
    }
}

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
