//! `status` is read-only and bounded: it creates nothing in a database no supervisor has used,
//! and gives up on a database that accepts TCP but never answers.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_heir-supervisor");

/// Relations in the public schema of the database behind `dsn`.
async fn relations(dsn: &str) -> Vec<String> {
    let (c, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test database");
    tokio::spawn(conn);
    c.query(
        "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' ORDER BY 1",
        &[],
    )
    .await
    .expect("listing relations")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn admin(dsn: &str, sql: &str) {
    let (c, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test database");
    tokio::spawn(conn);
    c.batch_execute(sql).await.expect(sql);
}

#[tokio::test]
async fn status_on_a_fresh_database_creates_nothing() {
    let Some(dsn) = common::dsn() else {
        return;
    };
    let db = format!("heir_status_{}", std::process::id());
    // One statement per call: CREATE/DROP DATABASE refuse an (implicit) transaction block.
    admin(&dsn, &format!("DROP DATABASE IF EXISTS {db}")).await;
    admin(&dsn, &format!("CREATE DATABASE {db}")).await;
    let fresh = format!("{dsn} dbname={db}");
    let before = relations(&fresh).await;

    let out = Command::new(BIN)
        .args(["status", "--dsn", &fresh])
        .output()
        .expect("running status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let after = relations(&fresh).await;
    admin(&dsn, &format!("DROP DATABASE {db}")).await;

    assert_eq!(out.status.code(), Some(3), "exit 3: no table; {stderr}");
    assert!(stderr.contains("no succession table yet"), "{stderr}");
    assert_eq!(before, after, "status created relations");
    assert!(
        after.iter().all(|r| !r.starts_with("heirflow")),
        "{after:?}"
    );
}

#[test]
fn status_gives_up_on_a_silent_database_naming_the_host_not_the_password() {
    // Accepts TCP (the kernel completes the handshake on the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = silent.local_addr().expect("addr").port();
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["status", "--timeout", "1", "--dsn"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=u password=hunter2 dbname=d"
        ))
        .output()
        .expect("running status");
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("did not answer within 1s"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    drop(silent);
}
