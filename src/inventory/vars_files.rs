//! Variable files: `group_vars/` and `host_vars/` trees and single vars files.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::error::LoadResult;
use crate::yaml;

/// Overlays `top` onto `base`, replacing whole keys (Ansible's `hash_behaviour=replace`).
pub(super) fn merge_into(base: &mut Map<String, Value>, top: Map<String, Value>) {
    for (k, v) in top {
        base.insert(k, v);
    }
}

/// Variables from one `group_vars/` + `host_vars/` pair.
#[derive(Debug, Default, Clone)]
pub struct VarsDir {
    pub groups: IndexMap<String, Map<String, Value>>,
    pub hosts: IndexMap<String, Map<String, Value>>,
}

impl VarsDir {
    /// Loads `<dir>/group_vars` and `<dir>/host_vars` (files `name`, `name.yml`, `name.yaml`,
    /// `name.json`, or a directory `name/` whose files merge in name order).
    pub fn load(dir: &Path) -> LoadResult<VarsDir> {
        Ok(VarsDir {
            groups: load_vars_tree(&dir.join("group_vars"))?,
            hosts: load_vars_tree(&dir.join("host_vars"))?,
        })
    }
}

fn load_vars_tree(dir: &Path) -> LoadResult<IndexMap<String, Map<String, Value>>> {
    let mut out = IndexMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let fname = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string();
        if fname.starts_with('.') || fname.ends_with('~') {
            continue;
        }
        let name = ["yml", "yaml", "json"]
            .iter()
            .find_map(|ext| fname.strip_suffix(&format!(".{ext}")))
            .unwrap_or(&fname)
            .to_string();
        let mut vars = Map::new();
        if path.is_dir() {
            let mut files: Vec<PathBuf> = walk_files(&path);
            files.sort();
            for f in files {
                merge_into(&mut vars, load_vars_file(&f)?);
            }
        } else {
            vars = load_vars_file(&path)?;
        }
        let slot: &mut Map<String, Value> = out.entry(name).or_default();
        merge_into(slot, vars);
    }
    Ok(out)
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let hidden = p
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A vars file must hold a mapping (or be empty).
pub fn load_vars_file(path: &Path) -> LoadResult<Map<String, Value>> {
    let node = yaml::load_file(path)?;
    match node.to_value() {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(node.err(format!(
            "a vars file must be a mapping of variables, found {}",
            node.type_name()
        ))),
    }
}
