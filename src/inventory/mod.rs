//! Inventory: INI or YAML files (or a directory of them), `group_vars/` and `host_vars/`, and
//! host patterns (`all`, `a:b`, `a:&b`, `a:!b`, globs).

mod sources;
mod vars_files;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::error::{LoadResult, Loc, LocatedError, SourceFile};
use crate::yaml;

use vars_files::merge_into;
pub use vars_files::{load_vars_file, VarsDir};

#[derive(Debug, Default, Clone)]
pub struct Group {
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: Map<String, Value>,
}

#[derive(Debug, Default)]
pub struct Inventory {
    /// Hosts in the order they were first seen, with inline vars.
    pub hosts: IndexMap<String, Map<String, Value>>,
    pub groups: IndexMap<String, Group>,
    /// The directory holding the inventory (its `group_vars/` and `host_vars/`).
    pub dir: PathBuf,
    pub source: PathBuf,
    /// `group_vars/` and `host_vars/` found next to the inventory.
    pub vars_dirs: VarsDir,
}

impl Inventory {
    /// Loads an inventory file or directory. `localhost` is always available implicitly.
    /// No inventory at all: only the implicit `localhost` exists (Ansible without `-i` and
    /// without /etc/ansible/hosts), enough for controller-side playbooks such as aws.yml.
    pub fn implicit_localhost() -> Inventory {
        let mut inv = Inventory::default();
        inv.groups.insert("all".into(), Group::default());
        inv.groups.insert("ungrouped".into(), Group::default());
        inv
    }

    pub fn load(path: &Path) -> LoadResult<Inventory> {
        let mut inv = Inventory {
            source: path.to_path_buf(),
            ..Default::default()
        };
        inv.groups.insert("all".into(), Group::default());
        inv.groups.insert("ungrouped".into(), Group::default());
        if !path.exists() {
            return Err(LocatedError::new(
                &Loc::file_only(path),
                "inventory not found",
            ));
        }
        if path.is_dir() {
            inv.dir = path.to_path_buf();
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| LocatedError::new(&Loc::file_only(path), e.to_string()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    let n = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
                    !(n.starts_with('.')
                        || n.ends_with('~')
                        || n.ends_with(".md")
                        || n.ends_with(".retry"))
                })
                .collect();
            files.sort();
            for f in files {
                inv.load_file(&f)?;
            }
        } else {
            inv.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            inv.load_file(path)?;
        }
        inv.vars_dirs = VarsDir::load(&inv.dir)?;
        inv.finish();
        if let Some(cycle) = inv.group_cycle() {
            return Err(LocatedError::new(
                &Loc::file_only(path),
                format!(
                    "circular group membership: {} (a group cannot contain itself)",
                    cycle.join(" → ")
                ),
            ));
        }
        Ok(inv)
    }

    /// A chain of `children` that leads back to where it started, if any.
    fn group_cycle(&self) -> Option<Vec<String>> {
        fn visit(
            inv: &Inventory,
            g: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == g) {
                let mut cycle = path[at..].to_vec();
                cycle.push(g.to_string());
                return Some(cycle);
            }
            if done.contains(g) {
                return None;
            }
            path.push(g.to_string());
            for c in inv
                .groups
                .get(g)
                .map(|x| x.children.as_slice())
                .unwrap_or(&[])
            {
                if let Some(cycle) = visit(inv, c, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(g.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for g in self.groups.keys() {
            if let Some(c) = visit(self, g, &mut Vec::new(), &mut done) {
                return Some(c);
            }
        }
        None
    }

    fn load_file(&mut self, path: &Path) -> LoadResult<()> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if ["yml", "yaml", "json"].contains(&ext) {
            let node = yaml::load_file(path)?;
            self.load_yaml(&node)
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| {
                LocatedError::new(&Loc::file_only(path), format!("cannot read inventory: {e}"))
            })?;
            let file = std::sync::Arc::new(SourceFile {
                path: path.to_path_buf(),
                text,
            });
            self.load_ini(&file)
        }
    }

    fn add_host(&mut self, name: &str, vars: Map<String, Value>) {
        let slot = self.hosts.entry(name.to_string()).or_default();
        merge_into(slot, vars);
    }

    fn group_mut(&mut self, name: &str) -> &mut Group {
        self.groups.entry(name.to_string()).or_default()
    }

    /// Every group is a child of `all`; hosts in no group are in `ungrouped`.
    fn finish(&mut self) {
        let names: Vec<String> = self
            .groups
            .keys()
            .filter(|g| *g != "all")
            .cloned()
            .collect();
        let all_children: BTreeSet<String> = self
            .groups
            .values()
            .flat_map(|g| g.children.clone())
            .collect();
        for n in &names {
            if !all_children.contains(n) && !self.groups["all"].children.contains(n) {
                self.group_mut("all").children.push(n.clone());
            }
        }
        let grouped: BTreeSet<String> = self
            .groups
            .iter()
            .filter(|(n, _)| *n != "all" && *n != "ungrouped")
            .flat_map(|(_, g)| g.hosts.clone())
            .collect();
        let ungrouped: Vec<String> = self
            .hosts
            .keys()
            .filter(|h| !grouped.contains(*h))
            .cloned()
            .collect();
        for h in ungrouped {
            let g = self.group_mut("ungrouped");
            if !g.hosts.contains(&h) {
                g.hosts.push(h);
            }
        }
    }

    /// All hosts of a group, including those of its descendants, in inventory order.
    pub fn group_hosts(&self, group: &str) -> Vec<String> {
        if group == "all" {
            return self.hosts.keys().cloned().collect();
        }
        let mut set = BTreeSet::new();
        let mut seen = BTreeSet::new();
        self.collect_hosts(group, &mut set, &mut seen);
        self.hosts
            .keys()
            .filter(|h| set.contains(*h))
            .cloned()
            .collect()
    }

    fn collect_hosts(&self, group: &str, out: &mut BTreeSet<String>, seen: &mut BTreeSet<String>) {
        if !seen.insert(group.to_string()) {
            return;
        }
        if let Some(g) = self.groups.get(group) {
            out.extend(g.hosts.iter().cloned());
            for c in &g.children {
                self.collect_hosts(c, out, seen);
            }
        }
    }

    /// The groups a host belongs to, ordered from `all` down to the most specific (parents
    /// before children, then by name), which is the order their vars apply in.
    pub fn host_groups(&self, host: &str) -> Vec<String> {
        let mut depth: IndexMap<String, usize> = IndexMap::new();
        fn walk(
            inv: &Inventory,
            g: &str,
            d: usize,
            host: &str,
            depth: &mut IndexMap<String, usize>,
            stack: &mut Vec<String>,
        ) -> bool {
            if stack.iter().any(|s| s == g) {
                return false;
            }
            let Some(grp) = inv.groups.get(g) else {
                return false;
            };
            stack.push(g.to_string());
            let mut contains = grp.hosts.iter().any(|h| h == host);
            for c in &grp.children {
                if walk(inv, c, d + 1, host, depth, stack) {
                    contains = true;
                }
            }
            stack.pop();
            if contains {
                let e = depth.entry(g.to_string()).or_insert(d);
                *e = (*e).max(d);
            }
            contains
        }
        walk(self, "all", 0, host, &mut depth, &mut Vec::new());
        depth.entry("all".into()).or_insert(0);
        let mut v: Vec<(String, usize)> = depth.into_iter().collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(g, _)| g).collect()
    }

    /// `group_names`: the host's groups without `all` and `ungrouped`, sorted.
    pub fn group_names(&self, host: &str) -> Vec<String> {
        let mut g: Vec<String> = self
            .host_groups(host)
            .into_iter()
            .filter(|g| g != "all" && g != "ungrouped")
            .collect();
        g.sort();
        g
    }

    /// Inventory-level variables of a host: group vars from `all` down, then `group_vars/`
    /// files, host inline vars, `host_vars/` files. `extra` are more vars dirs (the playbook's),
    /// applied after the inventory's.
    pub fn host_vars(&self, host: &str, extra: &[&VarsDir]) -> Map<String, Value> {
        let mut vars = Map::new();
        let dirs: Vec<&VarsDir> = std::iter::once(&self.vars_dirs)
            .chain(extra.iter().copied())
            .collect();
        for g in self.host_groups(host) {
            if let Some(grp) = self.groups.get(&g) {
                merge_into(&mut vars, grp.vars.clone());
            }
            for d in &dirs {
                if let Some(gv) = d.groups.get(&g) {
                    merge_into(&mut vars, gv.clone());
                }
            }
        }
        if let Some(hv) = self.hosts.get(host) {
            merge_into(&mut vars, hv.clone());
        }
        for d in &dirs {
            if let Some(hv) = d.hosts.get(host) {
                merge_into(&mut vars, hv.clone());
            }
        }
        vars
    }

    /// The `groups` magic variable.
    pub fn groups_value(&self) -> Value {
        let mut m = Map::new();
        for g in self.groups.keys() {
            m.insert(
                g.clone(),
                Value::Array(self.group_hosts(g).into_iter().map(Value::String).collect()),
            );
        }
        Value::Object(m)
    }

    /// Resolves a host pattern (`all`, `web:db`, `web:&prod`, `all:!db`, `hf-*`, comma lists).
    /// Implicit `localhost` matches only by name, as in Ansible.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, String> {
        let mut include: Vec<String> = Vec::new();
        let mut intersect: Vec<Vec<String>> = Vec::new();
        let mut exclude: BTreeSet<String> = BTreeSet::new();
        let parts: Vec<&str> = pattern
            .split([':', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err("empty host pattern".into());
        }
        for p in parts {
            if let Some(x) = p.strip_prefix('!') {
                exclude.extend(self.match_one(x));
            } else if let Some(x) = p.strip_prefix('&') {
                intersect.push(self.match_one(x));
            } else {
                for h in self.match_one(p) {
                    if !include.contains(&h) {
                        include.push(h);
                    }
                }
            }
        }
        Ok(include
            .into_iter()
            .filter(|h| intersect.iter().all(|set| set.contains(h)))
            .filter(|h| !exclude.contains(h))
            .collect())
    }

    fn match_one(&self, p: &str) -> Vec<String> {
        if p == "all" || p == "*" {
            return self.hosts.keys().cloned().collect();
        }
        if self.groups.contains_key(p) {
            return self.group_hosts(p);
        }
        if self.hosts.contains_key(p) {
            return vec![p.to_string()];
        }
        if p == "localhost" || p == "127.0.0.1" {
            return vec![p.to_string()];
        }
        if p.contains('*') || p.contains('?') {
            let mut out: Vec<String> = Vec::new();
            for g in self.groups.keys().filter(|g| glob_match(p, g)) {
                out.extend(self.group_hosts(g));
            }
            out.extend(self.hosts.keys().filter(|h| glob_match(p, h)).cloned());
            let mut seen = BTreeSet::new();
            out.retain(|h| seen.insert(h.clone()));
            return out;
        }
        Vec::new()
    }

    /// Whether `name` is an inventory host (or the implicit localhost).
    pub fn knows(&self, name: &str) -> bool {
        self.hosts.contains_key(name) || name == "localhost" || name == "127.0.0.1"
    }
}

fn glob_match(pat: &str, s: &str) -> bool {
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], s) || (!s.is_empty() && rec(p, &s[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pat.as_bytes(), s.as_bytes())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn circular_groups_and_huge_ranges_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(
            &p,
            "[a:children]\nb\n[b:children]\nc\n[c:children]\na\n[c]\nh1\n",
        )
        .unwrap();
        let e = Inventory::load(&p).unwrap_err();
        assert!(
            e.msg.contains("circular group membership: a → b → c → a"),
            "{}",
            e.msg
        );
        std::fs::write(&p, "[w]\nweb[1:1000000000]\n").unwrap();
        let e = Inventory::load(&p).unwrap_err();
        assert!(e.msg.contains("fewer than 100000 hosts"), "{}", e.msg);
    }

    pub(super) fn ini(text: &str) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(&p, text).unwrap();
        Inventory::load(&p).unwrap()
    }

    pub(super) const INI: &str = "\
# comment
lonely ansible_host=10.0.0.9
[db]
db1 ansible_host=10.0.0.1 ansible_port=2222 pg_role=primary
db2 ansible_host=10.0.0.2
[web]
web[1:2]
[app:children]
db
web
[app:vars]
port=5432
[db:vars]
port=6432
";

    #[test]
    fn patterns() {
        let inv = ini(INI);
        assert_eq!(
            inv.select("db:web").unwrap(),
            vec!["db1", "db2", "web1", "web2"]
        );
        assert_eq!(inv.select("app:&db").unwrap(), vec!["db1", "db2"]);
        assert_eq!(inv.select("all:!app").unwrap(), vec!["lonely"]);
        assert_eq!(inv.select("web*").unwrap(), vec!["web1", "web2"]);
        assert_eq!(inv.select("db1,web2").unwrap(), vec!["db1", "web2"]);
        assert!(inv.select("nosuch").unwrap().is_empty());
    }
}
