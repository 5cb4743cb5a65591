//! Live checks against one of the local cluster's hosts over SSH (run by hand:
//! `HF_LIVE_HOST=172.30.0.51 cargo test --lib modules::live -- --ignored --nocapture`).
//! Each module runs check → real → real, asserting that check predicted the change and the
//! second run is unchanged; everything created is removed again.

use std::time::Duration;

use serde_json::{json, Value};

use super::testutil::Env;
use crate::connection::{ConnSpec, HostConn};
use crate::modules::{registry, Args, Module, TaskCtx};

async fn conn() -> Option<HostConn> {
    let host = std::env::var("HF_LIVE_HOST").ok()?;
    let spec = ConnSpec {
        inventory_name: host.clone(),
        address: host,
        user: Some("root".into()),
        key_file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/ssh/id_ed25519").into()),
        ssh_options: vec![(
            "UserKnownHostsFile".into(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/ssh/known_hosts").into(),
        )],
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    Some(HostConn::open(spec).await.unwrap())
}

async fn run(
    m: &dyn Module,
    conn: &HostConn,
    env: &Env,
    args: &Value,
    check: bool,
) -> crate::modules::Outcome {
    let a: Args = serde_json::from_value(args.clone()).unwrap();
    let ctx = TaskCtx {
        host: "live",
        check,
        diff: true,
        conn,
        become_: None,
        environment: Default::default(),
        env,
    };
    m.run(&a, &ctx).await.unwrap()
}

/// check predicts `changed`, real run agrees, second run is unchanged.
async fn converge(name: &str, conn: &HostConn, env: &Env, args: Value) {
    let reg = registry();
    let m = crate::modules::lookup(&reg, name).unwrap();
    let c = run(m, conn, env, &args, true).await;
    let r = run(m, conn, env, &args, false).await;
    let again = run(m, conn, env, &args, false).await;
    let c2 = run(m, conn, env, &args, true).await;
    eprintln!(
        "{name} {args}: check={} real={} again={} check2={} msg={:?}",
        c.changed, r.changed, again.changed, c2.changed, r.msg
    );
    assert!(
        !c.failed && !r.failed && !again.failed,
        "{name}: {c:?} {r:?} {again:?}"
    );
    assert_eq!(
        c.changed, r.changed,
        "{name}: check mode mispredicted: {c:?} vs {r:?}"
    );
    assert!(!again.changed, "{name}: not idempotent: {again:?}");
    assert!(!c2.changed, "{name}: check after converge: {c2:?}");
}

#[tokio::test]
#[ignore]
async fn modules_converge_on_a_live_host() {
    let Some(conn) = conn().await else { return };
    let env = Env {
        dir: std::env::temp_dir(),
    };
    let reg = registry();
    let setup = crate::modules::lookup(&reg, "setup").unwrap();
    let o = run(setup, &conn, &env, &json!({}), false).await;
    let f = o.facts.unwrap();
    eprintln!(
        "setup: {} {} {} {}",
        f["ansible_hostname"],
        f["ansible_distribution"],
        f["ansible_default_ipv4"],
        f["ansible_service_mgr"]
    );
    converge(
        "group",
        &conn,
        &env,
        json!({"name": "hftestg", "gid": 4321}),
    )
    .await;
    converge("user", &conn, &env, json!({"name": "hftest", "group": "hftestg", "groups": ["adm"], "shell": "/bin/sh", "password": "$6$x$y"})).await;
    converge(
        "user",
        &conn,
        &env,
        json!({"name": "hftest", "groups": ["adm", "hftestg"], "append": true}),
    )
    .await;
    converge(
        "file",
        &conn,
        &env,
        json!({"path": "/tmp/hfl/d", "state": "directory", "owner": "hftest", "mode": "0750"}),
    )
    .await;
    converge("copy", &conn, &env, json!({"content": "x=1\n", "dest": "/tmp/hfl/d/c.conf", "group": "hftestg", "mode": "0640"})).await;
    converge(
        "lineinfile",
        &conn,
        &env,
        json!({"path": "/tmp/hfl/d/c.conf", "regexp": "^x=", "line": "x=2"}),
    )
    .await;
    converge(
        "blockinfile",
        &conn,
        &env,
        json!({"path": "/tmp/hfl/d/c.conf", "block": "y=3"}),
    )
    .await;
    converge("sysctl", &conn, &env, json!({"name": "net.ipv4.ip_forward", "value": "1", "sysctl_file": "/tmp/hfl/sysctl.conf", "sysctl_set": true, "reload": false})).await;
    converge(
        "apt",
        &conn,
        &env,
        json!({"name": ["tree"], "state": "present", "update_cache": true, "cache_valid_time": 3600}),
    )
    .await;
    converge(
        "apt",
        &conn,
        &env,
        json!({"name": "tree", "state": "absent", "purge": true}),
    )
    .await;
    let unit = "[Unit]\nDescription=hfplay test\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
    converge(
        "copy",
        &conn,
        &env,
        json!({"content": unit, "dest": "/etc/systemd/system/hftest.service"}),
    )
    .await;
    converge(
        "systemd",
        &conn,
        &env,
        json!({"name": "hftest", "state": "started", "enabled": true, "daemon_reload": true}),
    )
    .await;
    converge(
        "service",
        &conn,
        &env,
        json!({"name": "hftest", "state": "stopped", "enabled": false}),
    )
    .await;
    converge(
        "file",
        &conn,
        &env,
        json!({"path": "/etc/systemd/system/hftest.service", "state": "absent"}),
    )
    .await;
    converge("systemd", &conn, &env, json!({"daemon_reload": true})).await;
    converge(
        "systemd",
        &conn,
        &env,
        json!({"name": "hftest", "masked": true}),
    )
    .await;
    converge(
        "systemd",
        &conn,
        &env,
        json!({"name": "hftest", "masked": false}),
    )
    .await;
    converge("wait_for", &conn, &env, json!({"port": 22, "timeout": 5})).await;
    let m = json!({"path": "/tmp/hfl/m", "src": "tmpfs", "fstype": "tmpfs", "opts": "size=1m", "fstab": "/tmp/hfl/fstab", "state": "mounted"});
    converge("mount", &conn, &env, m.clone()).await;
    let mut m2 = m.clone();
    m2["opts"] = json!("size=2m");
    converge("mount", &conn, &env, m2).await;
    converge(
        "mount",
        &conn,
        &env,
        json!({"path": "/tmp/hfl/m", "fstab": "/tmp/hfl/fstab", "state": "absent"}),
    )
    .await;
    let stat = crate::modules::lookup(&reg, "stat").unwrap();
    let o = run(stat, &conn, &env, &json!({"path": "/etc/hostname"}), false).await;
    eprintln!("stat: {}", o.data["stat"]);
    assert_eq!(o.data["stat"]["isreg"], true);
    converge(
        "pip",
        &conn,
        &env,
        json!({"name": ["pip"], "virtualenv": "/tmp/hfl/venv"}),
    )
    .await;
    converge(
        "user",
        &conn,
        &env,
        json!({"name": "hftest", "state": "absent", "remove": true}),
    )
    .await;
    converge(
        "group",
        &conn,
        &env,
        json!({"name": "hftestg", "state": "absent"}),
    )
    .await;
    converge(
        "file",
        &conn,
        &env,
        json!({"path": "/tmp/hfl", "state": "absent"}),
    )
    .await;
}
