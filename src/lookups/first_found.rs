//! `first_found`: the first existing file of a list of candidates, as the lookup
//! (`lookup('first_found', ...)`, `query('first_found', ...)`) and as the loop
//! `with_first_found` (the runner).
//!
//! Terms are file names, lists of them, or mappings with `files`, `paths` and `skip` (the same
//! three are keyword arguments). Names in `files` split on `,` and `;`, paths on `,`, `:` and
//! `;`; every path is joined with every name, paths first. A relative candidate is searched the
//! way Ansible searches a task's files: in each directory of the task's search path (its role,
//! then the directory of the tasks file) with the subdirectory of the task's kind
//! (`vars/` for `include_vars`, `templates/` for `template`, else `files/`; not doubled when
//! the name starts with it) and without it, then in the playbook directory likewise. The first
//! candidate found is returned as an absolute path; none found is the error "No file was found
//! when using first_found.", or an empty list with `skip: true`. A candidate that cannot be
//! templated (an undefined variable) is passed over, as in Ansible.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Where relative candidates are looked for.
#[derive(Debug, Clone)]
pub struct SearchPath {
    /// `files`, `templates` or `vars`: the subdirectory of the task's kind.
    pub subdir: String,
    /// The task's search path, most specific first (Ansible's `ansible_search_path`).
    pub stack: Vec<PathBuf>,
    /// The playbook's directory, searched last.
    pub basedir: PathBuf,
}

/// The search path of a task: its role's directory, then the directory of its tasks file
/// (unless it is the same).
pub fn task_search_path(role: Option<&Path>, task_file: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = role.map(Path::to_path_buf).into_iter().collect();
    let dir = task_file.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !out.iter().any(|p| p == dir) {
        out.push(dir.to_path_buf());
    }
    out
}

/// The subdirectory `with_first_found` searches for a task's action, by Ansible's rule: an
/// action naming `template` looks in `templates/`, one naming `var` in `vars/`, any other in
/// `files/`.
pub fn subdir_for_action(action: &str) -> &'static str {
    if action.contains("template") {
        "templates"
    } else if action.contains("var") {
        "vars"
    } else {
        "files"
    }
}

/// The options given as keyword arguments, or by a mapping term.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub files: Vec<String>,
    pub paths: Vec<String>,
    pub skip: bool,
}

impl Options {
    /// From a mapping (a term or the keyword arguments): `files`, `paths`, `skip`; anything
    /// else is an error naming it.
    pub fn from_map(m: &serde_json::Map<String, Value>) -> Result<Options, String> {
        let mut o = Options::default();
        for (k, v) in m {
            match k.as_str() {
                "files" => o.files = strings(v, "files")?,
                "paths" => o.paths = strings(v, "paths")?,
                "skip" => {
                    o.skip = crate::words::to_bool(v)
                        .ok_or_else(|| format!("first_found: skip must be a boolean, got {v}"))?
                }
                other => {
                    return Err(format!(
                        "first_found: unknown option '{other}' (it takes files, paths, skip)"
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// A string or a list of strings (nested lists flattened).
fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => {
            let mut out = Vec::new();
            for i in a {
                out.extend(strings(i, what)?);
            }
            Ok(out)
        }
        Value::Number(n) => Ok(vec![n.to_string()]),
        other => Err(format!(
            "first_found: {what} must be a list of strings, got {other}"
        )),
    }
}

/// Splits every element on any of `chars`, as Ansible does to turn `a.yml,b.yml` into a list.
fn split_on(items: &[String], chars: &[char]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| s.split(|c| chars.contains(&c)).map(str::to_string))
        .collect()
}

/// Pure: the candidate names, in search order, and whether none found is an empty result.
/// `kw` are the keyword arguments; with no terms, their `files` are the terms.
pub fn candidates(terms: &[Value], kw: &Options) -> Result<(Vec<String>, bool), String> {
    let mut opts = kw.clone();
    let mut out = Vec::new();
    if terms.is_empty() {
        let files: Vec<Value> = kw.files.iter().cloned().map(Value::String).collect();
        collect(&files, &mut opts, &mut out)?;
    } else {
        collect(terms, &mut opts, &mut out)?;
    }
    if out.is_empty() && !opts.skip {
        return Err("first_found needs file names: a list of them, or 'files'".into());
    }
    Ok((out, opts.skip))
}

fn collect(terms: &[Value], opts: &mut Options, out: &mut Vec<String>) -> Result<(), String> {
    for term in terms {
        let files = match term {
            // A mapping sets the options afresh (Ansible: the keyword arguments do not carry
            // into it); its `skip` is the one that counts.
            Value::Object(m) => {
                *opts = Options::from_map(m)?;
                opts.files.clone()
            }
            Value::String(s) => vec![s.clone()],
            Value::Array(inner) => {
                collect(inner, opts, out)?;
                continue;
            }
            other => {
                return Err(format!(
                    "first_found: a term must be a file name, a list or a mapping, got {other}"
                ))
            }
        };
        let files = split_on(&files, &[',', ';']);
        let paths = split_on(&opts.paths, &[',', ':', ';']);
        if paths.is_empty() {
            out.extend(files);
        } else {
            for p in &paths {
                for f in &files {
                    out.push(Path::new(p).join(f).to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(())
}

/// `~/x` → `$HOME/x`; made absolute against the current directory; `.` and `..` resolved
/// lexically (symlinks kept, as Ansible's `unfrackpath(follow=False)`).
pub fn absolute(p: &Path) -> PathBuf {
    let p = match p.strip_prefix("~") {
        Ok(rest) => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(rest),
            None => p.to_path_buf(),
        },
        Err(_) => p.to_path_buf(),
    };
    let p = if p.is_absolute() {
        p
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Pure but for `exists`: the places a relative `name` is looked for, in order.
pub fn search_order(search: &SearchPath, name: &str) -> Vec<PathBuf> {
    let sub = search.subdir.as_str();
    // Not `vars/vars/x.yml` when the name already starts with the subdirectory.
    let with_sub = !sub.is_empty() && name.split('/').next() != Some(sub);
    let mut out = Vec::new();
    let mut add = |dir: &Path| {
        if with_sub {
            out.push(dir.join(sub).join(name));
        }
        out.push(dir.join(name));
    };
    for dir in &search.stack {
        add(dir);
    }
    add(&search.basedir);
    out
}

/// The file `name` names for this task, if it exists.
pub fn find(search: &SearchPath, name: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.starts_with('/') || name.starts_with('~') {
        let p = absolute(Path::new(name));
        return p.exists().then_some(p);
    }
    search_order(search, name)
        .into_iter()
        .find(|p| p.exists())
        .map(|p| absolute(&p))
}

/// The first existing candidate (a one-element list), or an empty list with `skip`. `render`
/// templates a candidate; `None` (an undefined variable) passes it over.
pub fn first_found(
    terms: &[Value],
    kw: &Options,
    search: &SearchPath,
    render: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PathBuf>, String> {
    let (names, skip) = candidates(terms, kw)?;
    for n in &names {
        let Some(n) = render(n) else { continue };
        if let Some(p) = find(search, &n) {
            return Ok(vec![p]);
        }
    }
    if skip {
        return Ok(vec![]);
    }
    Err(format!(
        "No file was found when using first_found (searched: {}).",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn terms(v: Value) -> Vec<Value> {
        match v {
            Value::Array(a) => a,
            other => vec![other],
        }
    }

    /// A role tree on disk: roles/r/{vars,tasks,files,templates}, a playbook dir beside it.
    fn tree() -> (tempfile::TempDir, SearchPath) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for (f, body) in [
            ("roles/r/vars/Debian.yml", "a: 1\n"),
            ("roles/r/vars/Debian-12.yml", "a: 2\n"),
            ("roles/r/tasks/main.yml", "[]\n"),
            ("roles/r/tasks/extra.yml", "[]\n"),
            ("roles/r/files/motd", "hi\n"),
            ("roles/r/templates/motd.j2", "hi\n"),
            ("files/site.txt", "x\n"),
            ("only-in-play.yml", "b: 1\n"),
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let role = root.join("roles/r");
        let search = SearchPath {
            subdir: "vars".into(),
            stack: task_search_path(Some(&role), &role.join("tasks/main.yml")),
            basedir: root.to_path_buf(),
        };
        (d, search)
    }

    fn same(render: &str) -> Option<String> {
        Some(render.to_string())
    }

    /// The mysql role's pattern: `vars/...` names, the most specific first, skip.
    #[test]
    fn the_first_existing_file_wins_in_the_role() {
        let (d, search) = tree();
        let find = |t: Value| first_found(&terms(t), &Options::default(), &search, same).unwrap();
        let t = json!([{"files": ["vars/Debian-13.yml", "vars/Debian.yml"], "skip": true}]);
        assert_eq!(find(t), vec![d.path().join("roles/r/vars/Debian.yml")]);
        // Without the `vars/` prefix the task's subdirectory is added.
        assert_eq!(
            find(json!(["Debian-12.yml", "Debian.yml"])),
            vec![d.path().join("roles/r/vars/Debian-12.yml")]
        );
        // The tasks directory and the playbook directory are searched too.
        assert_eq!(
            find(json!(["nope.yml", "extra.yml"])),
            vec![d.path().join("roles/r/tasks/extra.yml")]
        );
        assert_eq!(
            find(json!("only-in-play.yml")),
            vec![d.path().join("only-in-play.yml")]
        );
    }

    #[test]
    fn none_found_is_an_error_or_with_skip_an_empty_list() {
        let (_d, search) = tree();
        let e = first_found(
            &terms(json!(["a.yml", "b.yml"])),
            &Options::default(),
            &search,
            same,
        )
        .unwrap_err();
        assert!(
            e.starts_with("No file was found when using first_found"),
            "{e}"
        );
        assert!(e.contains("a.yml, b.yml"), "{e}");
        let t = terms(json!({"files": ["a.yml"], "skip": "yes"}));
        assert_eq!(
            first_found(&t, &Options::default(), &search, same).unwrap(),
            Vec::<PathBuf>::new()
        );
        let kw = Options {
            skip: true,
            ..Default::default()
        };
        assert!(first_found(&terms(json!("a.yml")), &kw, &search, same)
            .unwrap()
            .is_empty());
    }

    /// `paths` joined with every file, paths first; names split on `,`/`;`, paths on `:` too.
    #[test]
    fn paths_and_files_combine_paths_first() {
        let t = terms(json!({"files": "a.yml,b.yml", "paths": ["/x:/y"]}));
        let (c, skip) = candidates(&t, &Options::default()).unwrap();
        assert_eq!(c, ["/x/a.yml", "/x/b.yml", "/y/a.yml", "/y/b.yml"]);
        assert!(!skip);
        // Keyword paths apply to plain names; with no terms, keyword files are the terms.
        let kw = Options {
            files: vec!["c.yml".into()],
            paths: vec!["p".into()],
            skip: false,
        };
        assert_eq!(candidates(&[], &kw).unwrap().0, ["p/c.yml"]);
        assert_eq!(
            candidates(&terms(json!(["d.yml", ["e.yml"]])), &kw)
                .unwrap()
                .0,
            ["p/d.yml", "p/e.yml"]
        );
        let e = candidates(
            &terms(json!({"files": ["a"], "pahts": ["b"]})),
            &Options::default(),
        )
        .unwrap_err();
        assert!(e.contains("unknown option 'pahts'"), "{e}");
        assert!(candidates(&[], &Options::default()).is_err());
    }

    #[test]
    fn absolute_names_and_untemplatable_candidates() {
        let (d, search) = tree();
        let abs = d.path().join("roles/r/files/motd");
        let t = terms(json!(["{{ undefined_var }}.yml", abs.to_string_lossy()]));
        let render = |s: &str| (!s.contains("{{")).then(|| s.to_string());
        assert_eq!(
            first_found(&t, &Options::default(), &search, render).unwrap(),
            vec![abs]
        );
        // Role, tasks dir, playbook dir; `vars/` is not added twice.
        assert_eq!(search_order(&search, "vars/x").len(), 3);
    }

    /// `template` tasks look in templates/, `include_vars` in vars/, others in files/.
    #[test]
    fn the_subdirectory_follows_the_action() {
        assert_eq!(subdir_for_action("template"), "templates");
        assert_eq!(subdir_for_action("include_vars"), "vars");
        assert_eq!(subdir_for_action("copy"), "files");
        assert_eq!(subdir_for_action("include_tasks"), "files");
        let (d, mut search) = tree();
        let mut find_in = |subdir: &str, name: &str| {
            search.subdir = subdir.into();
            first_found(&terms(json!([name])), &Options::default(), &search, same).unwrap()
        };
        assert_eq!(
            find_in("templates", "motd.j2"),
            vec![d.path().join("roles/r/templates/motd.j2")]
        );
        assert_eq!(
            find_in("files", "site.txt"),
            vec![d.path().join("files/site.txt")]
        );
    }

    #[test]
    fn paths_are_made_absolute_lexically() {
        assert_eq!(absolute(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        let stack = task_search_path(None, Path::new("play.yml"));
        assert_eq!(stack, vec![PathBuf::from(".")]);
    }
}
