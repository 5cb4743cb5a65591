//! lineinfile's tests: the pure edit, the contract's plan and local runs.

use super::*;
use crate::modules::testutil;
use serde_json::{json, Value};

fn spec(v: Value) -> Spec {
    let p: Params = serde_json::from_value(v).unwrap();
    spec_from(&p).unwrap()
}
fn run(text: &str, v: Value) -> Option<String> {
    edit("/f", Some(text), &spec(v)).unwrap().0
}

#[test]
fn every_arg_is_accepted() {
    let m: serde_json::Map<String, Value> = Params::accepted()
        .iter()
        .map(|k| (k.to_string(), Value::Null))
        .collect();
    let r: Result<Params, _> = serde_json::from_value(Value::Object(m));
    assert!(r.is_ok(), "{r:?}");
    let r: Result<Params, _> = serde_json::from_value(json!({"path": "/x", "lien": "a"}));
    assert!(r.unwrap_err().to_string().contains("unknown field"));
}

#[test]
fn regexp_replaces_last_match() {
    let t = "a=1\nb=2\na=3\n";
    assert_eq!(
        run(t, json!({"regexp": "^a=", "line": "a=9"})).unwrap(),
        "a=1\nb=2\na=9\n"
    );
    assert_eq!(
        run(
            t,
            json!({"regexp": "^a=", "line": "a=9", "firstmatch": true})
        )
        .unwrap(),
        "a=9\nb=2\na=3\n"
    );
    // already right: no change
    assert_eq!(
        run("a=1\nb=2\na=9\n", json!({"regexp": "^a=", "line": "a=9"})),
        None
    );
}

#[test]
fn no_match_appends_at_eof() {
    assert_eq!(
        run("x\n", json!({"regexp": "^a=", "line": "a=1"})).unwrap(),
        "x\na=1\n"
    );
    // missing final newline is fixed before appending
    assert_eq!(run("x", json!({"line": "a=1"})).unwrap(), "x\na=1\n");
    assert_eq!(run("", json!({"line": "a=1"})).unwrap(), "a=1\n");
}

#[test]
fn exact_line_present_is_unchanged() {
    assert_eq!(run("a\nb\nc\n", json!({"line": "b"})), None);
    assert_eq!(
        run("a\nb\nc\n", json!({"line": "b", "insertafter": "^c"})),
        None
    );
    assert_eq!(
        run("a\nb\nc\n", json!({"line": "b", "insertbefore": "BOF"})),
        None
    );
}

#[test]
fn insertafter_and_insertbefore() {
    let t = "[main]\nx=1\n[other]\ny=2\n";
    assert_eq!(
        run(t, json!({"line": "z=3", "insertafter": "^\\[main\\]"})).unwrap(),
        "[main]\nz=3\nx=1\n[other]\ny=2\n"
    );
    assert_eq!(
        run(t, json!({"line": "z=3", "insertbefore": "^\\[other\\]"})).unwrap(),
        "[main]\nx=1\nz=3\n[other]\ny=2\n"
    );
    assert_eq!(
        run(t, json!({"line": "z=3", "insertbefore": "BOF"})).unwrap(),
        "z=3\n[main]\nx=1\n[other]\ny=2\n"
    );
    // insertafter that does not match: EOF
    assert_eq!(
        run("a\n", json!({"line": "z", "insertafter": "^nomatch"})).unwrap(),
        "a\nz\n"
    );
    // insertafter matches the last line
    assert_eq!(
        run("a\nb", json!({"line": "z", "insertafter": "^b"})).unwrap(),
        "a\nb\nz\n"
    );
    // regexp wins over insertafter when it matches
    assert_eq!(
        run(
            t,
            json!({"regexp": "^y=", "line": "y=5", "insertafter": "^\\[main\\]"})
        )
        .unwrap(),
        "[main]\nx=1\n[other]\ny=5\n"
    );
    // insertafter uses the last match
    assert_eq!(
        run("k\nm\nk\n", json!({"line": "z", "insertafter": "^k"})).unwrap(),
        "k\nm\nk\nz\n"
    );
}

#[test]
fn backrefs() {
    let t = "port = 5432\n";
    assert_eq!(
        run(
            t,
            json!({"regexp": "^port = (\\d+)", "line": "port = \\1 # was \\g<1>", "backrefs": true})
        )
        .unwrap(),
        "port = 5432 # was 5432\n"
    );
    // no match with backrefs: nothing happens
    assert_eq!(
        run(
            t,
            json!({"regexp": "^nope(.*)", "line": "x\\1", "backrefs": true})
        ),
        None
    );
}

#[test]
fn search_string_and_absent() {
    let t = "a.b=1\nc=2\na.b=3\n";
    assert_eq!(
        run(t, json!({"search_string": "a.b", "line": "a.b=0"})).unwrap(),
        "a.b=1\nc=2\na.b=0\n"
    );
    assert_eq!(
        run(t, json!({"regexp": "^a", "state": "absent"})).unwrap(),
        "c=2\n"
    );
    assert_eq!(
        run(t, json!({"line": "c=2", "state": "absent"})).unwrap(),
        "a.b=1\na.b=3\n"
    );
    assert_eq!(run(t, json!({"line": "zzz", "state": "absent"})), None);
    let (_, msg) = edit(
        "/f",
        Some(t),
        &spec(json!({"regexp": "^a", "state": "absent"})),
    )
    .unwrap();
    assert_eq!(msg, "2 line(s) removed");
}

#[test]
fn missing_file() {
    let s = spec(json!({"line": "a"}));
    assert!(edit("/f", None, &s).unwrap_err().contains("does not exist"));
    let s = spec(json!({"line": "a", "create": true}));
    assert_eq!(edit("/f", None, &s).unwrap().0.unwrap(), "a\n");
    let s = spec(json!({"line": "a", "state": "absent"}));
    assert_eq!(edit("/f", None, &s).unwrap().0, None);
}

#[test]
fn replacing_unterminated_last_line_adds_newline() {
    // Ansible compares with the line separator, so this reports "line replaced".
    assert_eq!(
        run("a=1", json!({"regexp": "^a", "line": "a=1"})).unwrap(),
        "a=1\n"
    );
}

#[test]
fn contract_plan_on_recorded_probe() {
    use crate::modules::fileops::parse_stat;
    let p: Params = serde_json::from_value(json!({
        "path": "/etc/ssh/sshd_config", "regexp": "^#?PermitRootLogin", "line": "PermitRootLogin no"
    }))
    .unwrap();
    let seen = |text: &str| TextSeen {
        real: "/etc/ssh/sshd_config".into(),
        state: parse_stat("S|regular file|644|root|0|root|0|9").unwrap(),
        bytes: Some(text.as_bytes().to_vec()),
    };
    let same = LineInFile
        .plan(&p, &seen("Port 22\nPermitRootLogin no\n"), true)
        .unwrap();
    assert!(same.changes.is_none() && !same.outcome.changed);
    let new = LineInFile
        .plan(&p, &seen("Port 22\n#PermitRootLogin yes\n"), true)
        .unwrap();
    assert!(new.changes.is_some() && new.outcome.changed);
    assert_eq!(new.outcome.msg, "line replaced");
    assert_eq!(new.outcome.diffs[0].after, "Port 22\nPermitRootLogin no\n");
    let dir = TextSeen {
        state: parse_stat("S|directory|755|root|0|root|0|9").unwrap(),
        bytes: None,
        ..seen("")
    };
    assert!(LineInFile.plan(&p, &dir, true).unwrap().outcome.failed);
    let bad = serde_json::from_value::<Params>(json!({"path": "/f", "state": "gone"}));
    assert!(bad.unwrap_err().to_string().contains("unknown variant"));
}

#[tokio::test]
async fn local_lineinfile_through_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let env = testutil::Env {
        dir: dir.path().to_path_buf(),
    };
    let conn = testutil::local().await;
    let real = dir.path().join("real.conf");
    std::fs::write(&real, "a=1\n").unwrap();
    let link = dir.path().join("link.conf");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let args: Args =
        serde_json::from_value(json!({"path": link.display().to_string(), "line": "b=2"})).unwrap();
    let o = LineInFile
        .run(&args, &testutil::ctx(&conn, &env, false))
        .await
        .unwrap();
    assert!(o.changed && !o.failed, "{o:?}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "a=1\nb=2\n");
}

#[tokio::test]
async fn local_lineinfile() {
    let dir = tempfile::tempdir().unwrap();
    let env = testutil::Env {
        dir: dir.path().to_path_buf(),
    };
    let conn = testutil::local().await;
    let f = dir.path().join("c.conf");
    std::fs::write(&f, "a=1\n").unwrap();
    let args: Args = serde_json::from_value(
        json!({"path": f.display().to_string(), "regexp": "^a=", "line": "a=2", "mode": "0600"}),
    )
    .unwrap();
    let o = LineInFile
        .run(&args, &testutil::ctx(&conn, &env, true))
        .await
        .unwrap();
    assert!(o.changed && o.diffs[0].after == "a=2\n", "{o:?}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "a=1\n");
    let o = LineInFile
        .run(&args, &testutil::ctx(&conn, &env, false))
        .await
        .unwrap();
    assert!(o.changed && !o.failed, "{o:?}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "a=2\n");
    let o = LineInFile
        .run(&args, &testutil::ctx(&conn, &env, false))
        .await
        .unwrap();
    assert!(!o.changed, "{o:?}");
}
