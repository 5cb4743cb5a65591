//! The primary is cut off from the witnesses and the clients (everything on the bridge
//! address) but still sees its standby: the majority (3 witnesses of 4 voters) lost it, so the
//! synchronous standby is promoted although it still reaches the primary itself; the old
//! primary learns of the newer timeline, demotes itself (drops the floating IP, stops) and
//! rejoins with pg_rewind at once — no split brain, no acknowledged commit lost.

mod db_common;

use std::time::{Duration, Instant};

use db_common::*;

const PAIR: u8 = 45;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_lost_by_the_majority_is_replaced_and_demotes_itself() {
    if prerequisites("db_witness_partition").is_none() {
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

        pair.hide_from_witnesses("a", true);
        let cut = Instant::now();
        let b = pair.addr("b");
        let promoted = wait_for("b promoted", Duration::from_secs(12), || {
            let b = b.clone();
            async move { is_primary(&b).await == Some(true) }
        })
        .await;
        eprintln!(
            "b promoted {:.2}s after a was cut off from the witnesses",
            promoted.as_secs_f64()
        );
        wait_for("a demoted itself", Duration::from_secs(10), || {
            let demoted = pair.log("a").contains("db_demoted");
            async move { demoted }
        })
        .await;
        wait_for("writes resume on b", Duration::from_secs(10), || {
            let r = writer.first_ack_after(cut + promoted).is_some();
            async move { r }
        })
        .await;
        assert!(
            !pair.holds_vip("a") && pair.holds_vip("b"),
            "floating IP only on b"
        );
        // a rejoins through the still-working a<->b link, even while hidden.
        wait_for("a rejoined with pg_rewind", Duration::from_secs(30), || {
            let rejoined = pair.log("a").contains("db_rejoined");
            async move { rejoined }
        })
        .await;
        pair.hide_from_witnesses("a", false);
        let ids = writer.stop().await;
        let lost = missing(&b, &ids).await;
        eprintln!("{} acknowledged commits, {lost} missing", ids.len());
        assert_eq!(lost, 0);
        wait_healthy(&pair, "b", "a", Duration::from_secs(60)).await;
    })
    .await;
    if res.is_err() {
        pair.dump_logs();
        panic!("test timed out");
    }
}
