//! Partition of the primary↔standby link only (iptables in the standby's namespace) while the
//! witnesses still see the primary: no promotion, the primary keeps the floating IP, stops
//! waiting for its standby after --degrade-after (writes resume), and requires it again once
//! the link heals. Then, with the standby cut off for longer than its sync window, killing the
//! primary must NOT promote the stale standby (it could lack acknowledged commits).

mod db_common;

use std::time::{Duration, Instant};

use db_common::*;

const PAIR: u8 = 42;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_between_db_nodes_does_not_promote() {
    if prerequisites("db_partition").is_none() {
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

        pair.partition("b", "a", true);
        let cut = Instant::now();
        eprintln!("partitioned b from a");
        // Longer than failover_after + degrade_after: b must stay a standby throughout.
        let b = pair.addr("b");
        while cut.elapsed() < Duration::from_secs(20) {
            assert_eq!(
                is_primary(&b).await,
                Some(false),
                "b was promoted during the partition"
            );
            assert!(
                pair.holds_vip("a") && !pair.holds_vip("b"),
                "floating IP moved"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let resumed = writer.first_ack_after(cut + Duration::from_secs(4));
        assert!(
            resumed.is_some(),
            "a stopped waiting for the cut-off standby and writes resumed"
        );
        eprintln!(
            "writes resumed {:.1}s after the cut (degraded to no synchronous standby)",
            resumed.map(|t| (t - cut).as_secs_f64()).unwrap_or_default()
        );
        assert!(pair.log("a").contains("db_sync_degraded"));
        assert!(
            pair.log("b").contains("could lose acknowledged commits")
                || !pair.log("b").contains("Promote")
        );

        // While b is stale, a crash of a must not promote it.
        pair.kill_postgres("a");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(8) {
            assert_eq!(
                is_primary(&b).await,
                Some(false),
                "a stale standby was promoted"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            pair.log("b").contains("could lose acknowledged commits"),
            "b explained why it did not promote"
        );
        // a comes back as primary by itself (its standby is not eligible) once the link heals.
        pair.partition("b", "a", false);
        let a = pair.addr("a");
        wait_for("a restarted as primary", Duration::from_secs(40), || {
            let a = a.clone();
            async move { is_primary(&a).await == Some(true) }
        })
        .await;
        wait_healthy(&pair, "a", "b", Duration::from_secs(60)).await;
        let ids = writer.stop().await;
        let lost = missing(&a, &ids).await;
        eprintln!("{} acknowledged commits, {lost} missing", ids.len());
        assert_eq!(lost, 0);
    })
    .await;
    if res.is_err() {
        pair.dump_logs();
        panic!("test timed out");
    }
}
