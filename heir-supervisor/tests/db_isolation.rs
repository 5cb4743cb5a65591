//! The primary's host is cut off from everything (its namespace drops all but loopback) while
//! a writer commits through the floating IP: the standby is promoted, the isolated primary
//! fences itself (drops the floating IP, stops PostgreSQL), writes resume on the new primary
//! with no acknowledged commit missing, and when the network returns the old primary rejoins
//! as synchronous standby with pg_rewind.

mod db_common;

use std::time::{Duration, Instant};

use db_common::*;

const PAIR: u8 = 44;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_fences_itself_and_rejoins() {
    if prerequisites("db_isolation").is_none() {
        return;
    }
    watchdog(Duration::from_secs(240), PAIR);
    let mut pair = Pair::up(PAIR);
    pair.start_witnesses();
    pair.start_node("a");
    pair.start_node("b");
    let res = tokio::time::timeout(Duration::from_secs(220), async {
        wait_healthy(&pair, "a", "b", Duration::from_secs(60)).await;
        let writer = Writer::start(&pair.vip()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        pair.isolate("a", true);
        let cut = Instant::now();
        eprintln!("isolated a");
        let b = pair.addr("b");
        let promoted = wait_for("b promoted", Duration::from_secs(10), || {
            let b = b.clone();
            async move { is_primary(&b).await == Some(true) }
        })
        .await;
        wait_for("writes resume on b", Duration::from_secs(10), || {
            let r = writer.first_ack_after(cut + promoted).is_some();
            async move { r }
        })
        .await;
        eprintln!("b promoted {:.2}s after the cut", promoted.as_secs_f64());
        wait_for("a fenced itself", Duration::from_secs(15), || {
            let fenced = pair.log("a").contains("db_fenced");
            async move { fenced }
        })
        .await;
        assert!(
            !pair.holds_vip("a") && pair.holds_vip("b"),
            "floating IP only on b"
        );
        // Nothing was acknowledged by the isolated a after b took over: all acks are on b.
        tokio::time::sleep(Duration::from_secs(1)).await;
        pair.isolate("a", false);
        let ids = writer.stop().await;
        let lost = missing(&b, &ids).await;
        eprintln!("{} acknowledged commits, {lost} missing", ids.len());
        assert_eq!(lost, 0);
        wait_healthy(&pair, "b", "a", Duration::from_secs(60)).await;
        assert!(
            pair.log("a").contains("pg_rewind"),
            "a rejoined with pg_rewind"
        );
    })
    .await;
    if res.is_err() {
        pair.dump_logs();
        panic!("test timed out");
    }
}
