//! Inventory sources: INI files and YAML (or JSON) files, with host ranges and INI literals.

use serde_json::{Map, Value};

use super::vars_files::merge_into;
use super::Inventory;
use crate::error::{LoadResult, Loc, LocatedError, SourceFile};
use crate::yaml::{Kind, Node};

impl Inventory {
    pub(super) fn load_ini(&mut self, file: &std::sync::Arc<SourceFile>) -> LoadResult<()> {
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

    pub(super) fn load_yaml(&mut self, node: &Node) -> LoadResult<()> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{ini, INI};
    use super::super::Inventory;
    use serde_json::json;

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
