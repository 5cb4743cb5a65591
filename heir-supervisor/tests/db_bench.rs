//! Benchmark (ignored by default; run by bench/db-failover.sh): repeated kill -9 of the
//! primary's PostgreSQL on the local pair, alternating nodes; per trial the time from the kill
//! until a write through the floating IP is acknowledged again. Prints each trial, the median
//! and the 95th percentile, and checks that no acknowledged commit was lost over all trials.

mod db_common;

use std::time::{Duration, Instant};

use db_common::*;

const PAIR: u8 = 43;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/db-failover.sh"]
async fn db_failover_bench() {
    if prerequisites("db_bench").is_none() {
        return;
    }
    let trials: usize = std::env::var("HEIR_DB_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    watchdog(Duration::from_secs(120 + 60 * trials as u64), PAIR);
    let mut pair = Pair::up(PAIR);
    pair.start_witnesses();
    pair.start_node("a");
    pair.start_node("b");
    let (mut primary, mut standby) = ("a", "b");
    wait_healthy(&pair, primary, standby, Duration::from_secs(60)).await;
    let writer = Writer::start(&pair.vip()).await;
    let mut gaps = Vec::new();
    for i in 1..=trials {
        wait_healthy(&pair, primary, standby, Duration::from_secs(90)).await;
        let before = writer.count();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            writer.count() > before,
            "trial {i}: the writer is not committing before the kill"
        );
        pair.kill_postgres(primary);
        let killed = Instant::now();
        wait_for(
            &format!("trial {i}: writes resume"),
            Duration::from_secs(30),
            || {
                let r = writer.first_ack_after(killed).is_some();
                async move { r }
            },
        )
        .await;
        let gap = writer
            .first_ack_after(killed)
            .map(|t| (t - killed).as_secs_f64())
            .unwrap_or(f64::NAN);
        println!("trial {i:>2}: kill -9 {primary} → writes acknowledged again after {gap:.2} s (now on {standby})");
        gaps.push(gap);
        std::mem::swap(&mut primary, &mut standby);
    }
    let ids = writer.stop().await;
    let lost = missing(&pair.addr(primary), &ids).await;
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "db-failover: {} trials, median {:.2} s, p95 {:.2} s, min {:.2} s, max {:.2} s; {} acknowledged commits, {lost} missing",
        sorted.len(),
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
        ids.len()
    );
    assert_eq!(lost, 0, "acknowledged commits lost");
}
