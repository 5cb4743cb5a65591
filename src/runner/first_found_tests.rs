//! `with_first_found` and the `first_found` lookup in a role, and `package` refusing a
//! manager hfplay cannot run, on two `ansible_connection=local` hosts.

use serde_json::{json, Value};

use super::register_tests::run;
use super::{lock, RunOutcome, Runner};

fn fact(runner: &Runner, host: &str, name: &str) -> Value {
    lock(&runner.state)
        .get(host)
        .and_then(|hs| hs.host_facts.get(name).cloned())
        .unwrap_or(Value::Null)
}

/// A role laid out as geerlingguy.mysql's: OS-specific vars files under `vars/`.
fn role() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (f, body) in [
        ("vars/Debian.yml", "__pkg: debian-default\n"),
        ("vars/Debian-12.yml", "__pkg: debian-12\n__specific: true\n"),
        ("files/motd", "hello\n"),
        (
            "tasks/main.yml",
            r#"
- name: Include OS-specific variables.
  ansible.builtin.include_vars: "{{ item }}"
  with_first_found:
    - files:
        - "vars/{{ os_family }}-{{ major }}.yml"
        - "vars/{{ os_family }}.yml"
      skip: true
- name: Nothing found, skipped
  include_vars: "{{ item }}"
  with_first_found:
    - files: [vars/Nope.yml]
      skip: true
- name: A plain list of names, the undefined one passed over
  include_vars: "{{ item }}"
  with_first_found:
    - "{{ not_defined_anywhere }}.yml"
    - Debian.yml
  register: plain
- set_fact:
    motd: "{{ lookup('first_found', 'missing', 'motd') }}"
    none: "{{ query('first_found', 'missing', skip=True) }}"
    ignored: "{{ query('first_found', 'missing', errors='ignore') }}"
- name: package on a host whose manager hfplay does not run
  package: {name: git, state: present, use: dnf}
  ignore_errors: true
  register: pkg
"#,
        ),
    ] {
        let p = d.path().join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, body).expect("file");
    }
    d
}

#[tokio::test]
async fn first_found_finds_the_roles_vars_files() {
    let r = role();
    let pb = format!(
        "- hosts: web\n  gather_facts: false\n  vars: {{os_family: Debian, major: 12}}\n  roles:\n    - role: {}\n",
        r.path().display()
    );
    let (runner, outcome) = run(&pb).await;
    assert_eq!(outcome, RunOutcome::Ok);
    // The most specific file first; then the plain list loaded the family file.
    assert_eq!(fact(&runner, "h1", "__specific"), json!(true));
    assert_eq!(fact(&runner, "h1", "__pkg"), json!("debian-default"));
    let plain = fact(&runner, "h1", "plain");
    assert_eq!(
        plain["results"][0]["item"],
        json!(r.path().join("vars/Debian.yml").to_string_lossy())
    );
    assert_eq!(
        fact(&runner, "h2", "motd"),
        json!(r.path().join("files/motd").to_string_lossy())
    );
    assert_eq!(fact(&runner, "h2", "none"), json!([]));
    assert_eq!(fact(&runner, "h2", "ignored"), json!([]));
    let pkg = fact(&runner, "h1", "pkg");
    let msg = pkg["msg"].as_str().unwrap_or_default();
    assert!(
        pkg["failed"] == json!(true) && msg.contains("'dnf'") && msg.contains("not available yet"),
        "{pkg}"
    );
}

#[tokio::test]
async fn no_file_found_fails_the_task_with_ansibles_message() {
    let pb = "- hosts: web\n  gather_facts: false\n  tasks:\n    - include_vars: '{{ item }}'\n      with_first_found: [a.yml, b.yml]\n";
    let (runner, outcome) = run(pb).await;
    assert_eq!(outcome, RunOutcome::Failed);
    let failure = lock(&runner.state)
        .get("h1")
        .and_then(|hs| hs.last_failure.clone())
        .map(|(_, r)| r)
        .unwrap_or_default();
    let msg = failure["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("No file was found when using first_found") && msg.contains("pb.yml:4"),
        "{failure}"
    );
}
