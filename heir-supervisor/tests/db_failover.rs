//! Real failover: kill -9 the primary's PostgreSQL while a writer commits through the floating
//! IP → the synchronous standby is promoted within 10 s, writes resume, no acknowledged commit
//! is missing, the floating IP moved, and the old primary rejoins as standby with pg_rewind.
//! Then the same in the other direction (the rejoined node is eligible again).
//! The pair has Debian's layout (configuration outside the data directory, PostgreSQL started
//! and stopped by commands), so the rejoin runs pg_rewind --config-file through crash recovery.

mod db_common;

use std::time::{Duration, Instant};

use db_common::*;

const PAIR: u8 = 41;

async fn one_failover(pair: &Pair, primary: &str, standby: &str) {
    wait_healthy(pair, primary, standby, Duration::from_secs(60)).await;
    let writer = Writer::start(&pair.vip()).await;
    wait_for("the writer commits", Duration::from_secs(10), || {
        let n = writer.count();
        async move { n >= 50 }
    })
    .await;

    let pid = pair.kill_postgres(primary);
    let killed_at = Instant::now();
    eprintln!("killed postmaster {pid} of {primary}");

    let s = pair.addr(standby);
    let promoted = wait_for(
        &format!("{standby} promoted"),
        Duration::from_secs(10),
        || {
            let s = s.clone();
            async move { is_primary(&s).await == Some(true) }
        },
    )
    .await;
    let resumed = wait_for(
        "writes through the floating IP resume",
        Duration::from_secs(10),
        || {
            let r = writer.first_ack_after(killed_at).is_some();
            async move { r }
        },
    )
    .await;
    let gap = writer
        .first_ack_after(killed_at)
        .map(|t| t - killed_at)
        .unwrap_or(resumed);
    eprintln!(
        "{standby} promoted {:.2}s after the kill; writes resumed after {:.2}s",
        promoted.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap <= Duration::from_secs(10),
        "writes resumed only after {gap:?}"
    );
    assert!(
        pair.holds_vip(standby),
        "the new primary holds the floating IP"
    );
    assert!(
        !pair.holds_vip(primary),
        "the old primary dropped the floating IP"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = *writer.errors.lock().unwrap();
    let ids = writer.stop().await;
    let lost = missing(&s, &ids).await;
    eprintln!(
        "{} acknowledged commits, {errors} failed attempts, {lost} missing",
        ids.len()
    );
    assert_eq!(lost, 0, "acknowledged commits missing on the new primary");

    // The old primary rejoins as a synchronous standby by itself (pg_rewind).
    let p = pair.addr(primary);
    let rejoined = wait_for(&format!("{primary} rejoins as sync standby"), Duration::from_secs(60), || {
        let p = p.clone();
        let s = s.clone();
        async move {
            let sync = sql_one(
                &s,
                &format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{primary}'"),
            )
            .await;
            is_primary(&p).await == Some(false) && sync == Ok(Some("sync".into()))
        }
    })
    .await;
    eprintln!(
        "{primary} streaming as sync standby {:.1}s later",
        rejoined.as_secs_f64()
    );
    assert!(
        pair.log(primary).contains("pg_rewind"),
        "rejoined with pg_rewind"
    );
    let names = sql_one(&s, "SHOW synchronous_standby_names").await;
    assert_eq!(
        names,
        Ok(Some("FIRST 1 (a, b)".into())),
        "sync replication restored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_primary_promotes_the_sync_standby_and_the_old_primary_rejoins() {
    if prerequisites("db_failover").is_none() {
        return;
    }
    watchdog(Duration::from_secs(300), PAIR);
    let mut pair = Pair::up_debian(PAIR);
    pair.start_witnesses();
    pair.start_node("a");
    pair.start_node("b");
    let res = tokio::time::timeout(Duration::from_secs(280), async {
        one_failover(&pair, "a", "b").await;
        one_failover(&pair, "b", "a").await;
    })
    .await;
    if res.is_err() {
        pair.dump_logs();
        panic!("test timed out");
    }
}
