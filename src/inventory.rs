//! Inventory: INI or YAML files (or a directory of them), `group_vars/` and `host_vars/`, and
//! host patterns (`all`, `a:b`, `a:&b`, `a:!b`, globs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::error::{LoadResult, Loc, LocatedError, SourceFile};
use crate::vars::merge_into;
use crate::yaml::{self, Kind, Node};

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

impl Inventory {
    /// Loads an inventory file or directory. `localhost` is always available implicitly.
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

    fn load_ini(&mut self, file: &std::sync::Arc<SourceFile>) -> LoadResult<()> {
        enum Section {
            Hosts(String),
            Vars(String),
            Children(String),
        }
        let mut section = Section::Hosts("ungrouped".into());
        for (i, raw) in file.text.lines().enumerate() {
            let loc = Loc {
                file: file.clone(),
                line: i + 1,
                col: 1,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(head) = line.strip_prefix('[') {
                let head = head
                    .strip_suffix(']')
                    .ok_or_else(|| LocatedError::new(&loc, "section header must end with ']'"))?;
                section = match head.split_once(':') {
                    None => Section::Hosts(head.to_string()),
                    Some((g, "vars")) => Section::Vars(g.to_string()),
                    Some((g, "children")) => Section::Children(g.to_string()),
                    Some((_, other)) => {
                        return Err(LocatedError::new(
                            &loc,
                            format!(
                                "unknown section type ':{other}' (expected :vars or :children)"
                            ),
                        ))
                    }
                };
                let g = match &section {
                    Section::Hosts(g) | Section::Vars(g) | Section::Children(g) => g.clone(),
                };
                if g.is_empty() || g.contains(char::is_whitespace) {
                    return Err(LocatedError::new(&loc, format!("invalid group name {g:?}")));
                }
                self.group_mut(&g);
                continue;
            }
            match &section {
                Section::Hosts(g) => {
                    let words = crate::words::shell_words(line);
                    let Some((name, rest)) = words.split_first() else {
                        continue;
                    };
                    let mut vars = Map::new();
                    for w in rest {
                        let (k, v) = w.split_once('=').ok_or_else(|| {
                            LocatedError::new(
                                &loc,
                                format!("expected key=value after the host name, found {w:?}"),
                            )
                        })?;
                        vars.insert(k.to_string(), ini_literal(v));
                    }
                    for h in expand_range(name).map_err(|m| LocatedError::new(&loc, m))? {
                        self.add_host(&h, vars.clone());
                        let grp = self.group_mut(g);
                        if !grp.hosts.contains(&h) {
                            grp.hosts.push(h);
                        }
                    }
                }
                Section::Vars(g) => {
                    let (k, v) = line.split_once('=').ok_or_else(|| {
                        LocatedError::new(&loc, "expected key=value in a :vars section")
                    })?;
                    let v = v.trim();
                    let v = crate::words::shell_words(v).join(" ");
                    self.group_mut(g)
                        .vars
                        .insert(k.trim().to_string(), Value::String(v));
                }
                Section::Children(g) => {
                    let child = line.to_string();
                    self.group_mut(&child);
                    let grp = self.group_mut(g);
                    if !grp.children.contains(&child) {
                        grp.children.push(child);
                    }
                }
            }
        }
        Ok(())
    }

    fn load_yaml(&mut self, node: &Node) -> LoadResult<()> {
        match &node.kind {
            Kind::Null => Ok(()),
            Kind::Map(entries) => {
                for (k, v) in entries {
                    self.load_yaml_group(&k.key_string(), v)?;
                }
                Ok(())
            }
            _ => Err(node.err("a YAML inventory must be a mapping of groups (e.g. `all:`)")),
        }
    }

    fn load_yaml_group(&mut self, name: &str, node: &Node) -> LoadResult<()> {
        self.group_mut(name);
        if node.is_null() {
            return Ok(());
        }
        let entries = node.as_map().ok_or_else(|| {
            node.err(format!(
                "group '{name}' must be a mapping with hosts/vars/children"
            ))
        })?;
        for (k, v) in entries {
            match k.key_string().as_str() {
                "hosts" => {
                    if v.is_null() {
                        continue;
                    }
                    let hosts = v
                        .as_map()
                        .ok_or_else(|| v.err("'hosts' must be a mapping of host names"))?;
                    for (hk, hv) in hosts {
                        let vars = match hv.to_value() {
                            Value::Object(m) => m,
                            Value::Null => Map::new(),
                            _ => return Err(hv.err("host vars must be a mapping")),
                        };
                        for h in expand_range(&hk.key_string()).map_err(|m| hk.err(m))? {
                            self.add_host(&h, vars.clone());
                            let g = self.group_mut(name);
                            if !g.hosts.contains(&h) {
                                g.hosts.push(h);
                            }
                        }
                    }
                }
                "vars" => match v.to_value() {
                    Value::Object(m) => merge_into(&mut self.group_mut(name).vars, m),
                    Value::Null => {}
                    _ => return Err(v.err("'vars' must be a mapping")),
                },
                "children" => {
                    if v.is_null() {
                        continue;
                    }
                    let children = v
                        .as_map()
                        .ok_or_else(|| v.err("'children' must be a mapping of groups"))?;
                    for (ck, cv) in children {
                        let child = ck.key_string();
                        self.load_yaml_group(&child, cv)?;
                        let g = self.group_mut(name);
                        if !g.children.contains(&child) {
                            g.children.push(child);
                        }
                    }
                }
                other => {
                    return Err(k.err(format!(
                    "unknown key '{other}' in group '{name}' (expected hosts, vars or children)"
                )))
                }
            }
        }
        Ok(())
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

/// INI inline host values are Python literals: numbers, booleans, quoted strings.
fn ini_literal(v: &str) -> Value {
    match v {
        "True" | "true" => return Value::Bool(true),
        "False" | "false" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::Number(i.into());
    }
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(v.to_string())
}

/// `web[01:03].example` → web01.example, web02.example, web03.example.
fn expand_range(name: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (name.find('['), name.find(']')) else {
        return Ok(vec![name.to_string()]);
    };
    if close < open {
        return Err(format!("bad host range in {name:?}"));
    }
    let (pre, inner, post) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    let (a, b) = inner
        .split_once(':')
        .ok_or_else(|| format!("bad host range in {name:?}: expected [start:end]"))?;
    let width = if a.starts_with('0') { a.len() } else { 0 };
    let (s, e): (u64, u64) = (
        a.parse()
            .map_err(|_| format!("bad range start in {name:?}"))?,
        b.parse()
            .map_err(|_| format!("bad range end in {name:?}"))?,
    );
    if e < s || e - s >= MAX_RANGE {
        return Err(format!(
            "host range in {name:?} must count up, by fewer than {MAX_RANGE} hosts"
        ));
    }
    let mut out = Vec::new();
    for i in s..=e {
        for rest in expand_range(post)? {
            out.push(format!("{pre}{i:0width$}{rest}"));
        }
    }
    Ok(out)
}

/// More hosts than any inventory holds: a typo such as `web[1:1000000000]` must not exhaust memory.
const MAX_RANGE: u64 = 100_000;

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
mod tests {
    use super::*;
    use serde_json::json;

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

    fn ini(text: &str) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(&p, text).unwrap();
        Inventory::load(&p).unwrap()
    }

    const INI: &str = "\
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
    fn ini_groups_vars_and_ranges() {
        let inv = ini(INI);
        assert_eq!(inv.group_hosts("app"), vec!["db1", "db2", "web1", "web2"]);
        assert_eq!(inv.group_hosts("ungrouped"), vec!["lonely"]);
        let v = inv.host_vars("db1", &[]);
        assert_eq!(v["ansible_port"], json!(2222));
        assert_eq!(v["pg_role"], json!("primary"));
        // the child group's vars win over the parent's
        assert_eq!(v["port"], json!("6432"));
        assert_eq!(inv.host_vars("web1", &[])["port"], json!("5432"));
        assert_eq!(inv.group_names("db1"), vec!["app", "db"]);
    }

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

    #[test]
    fn yaml_inventory_and_group_vars_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hosts.yml"),
            "all:\n  vars:\n    a: 1\n  children:\n    db:\n      hosts:\n        db1: {ansible_host: 10.1.1.1}\n      vars:\n        b: yes\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("group_vars/db")).unwrap();
        std::fs::write(dir.path().join("group_vars/db/main.yml"), "b: no\nc: 3\n").unwrap();
        std::fs::create_dir_all(dir.path().join("host_vars")).unwrap();
        std::fs::write(dir.path().join("host_vars/db1.yml"), "c: 4\n").unwrap();
        let inv = Inventory::load(dir.path()).unwrap();
        let v = inv.host_vars("db1", &[]);
        assert_eq!(v["a"], json!(1));
        assert_eq!(v["b"], json!(false));
        assert_eq!(v["c"], json!(4));
        assert_eq!(v["ansible_host"], json!("10.1.1.1"));
    }

    #[test]
    fn ini_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(&p, "[db]\ndb1 oops\n").unwrap();
        let e = Inventory::load(&p).unwrap_err();
        assert_eq!(e.loc.line, 2);
        assert!(e.msg.contains("key=value"), "{e}");
    }
}
