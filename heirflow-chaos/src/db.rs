//! The runner's two clients of the metadata database, both through the floating IP as every
//! component connects: the **writer**, which commits numbered rows one after another and keeps
//! the numbers whose commit was acknowledged (the ones the DB must still hold at the end, after
//! any failover), and the **lease watcher**, which samples heir-supervisor's `heirflow_leases`
//! and turns what it saw into leadership intervals (DB clock) for the overlap check.
//!
//! Neither sets `statement_timeout`: cancelling a commit that waits for the synchronous standby
//! makes Postgres report it committed although the standby may not have it — exactly the lost
//! acknowledged commit the check is there to catch, caused by the checker. Dead connections are
//! found by TCP keepalives and `tcp_user_timeout` instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::invariants::Lease;

pub fn config(host: &str, user: &str, password: &str, db: &str) -> postgres::Config {
    let mut c = postgres::Config::new();
    c.host(host)
        .user(user)
        .password(password)
        .dbname(db)
        .application_name("heirflow-chaos")
        .connect_timeout(Duration::from_secs(3))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(2))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(6));
    c
}

/// What the writer has done so far (shared with the progress line).
#[derive(Default)]
pub struct WriterStats {
    pub acknowledged: Mutex<Vec<u64>>,
    pub errors: AtomicU64,
    pub attempts: AtomicU64,
}

/// Commits row after row (one transaction each, ~`every` apart) into `heirflow_chaos_writes`
/// tagged with `run`, until `stop`. A commit whose answer was lost is neither counted nor
/// expected; its number is not reused.
pub fn writer(
    cfg: postgres::Config,
    run: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
) {
    let mut next: u64 = 1;
    let mut client: Option<postgres::Client> = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match cfg.connect(postgres::NoTls) {
                Ok(mut c) => {
                    if c.batch_execute(
                        "CREATE TABLE IF NOT EXISTS heirflow_chaos_writes \
                         (run text NOT NULL, id bigint NOT NULL, t timestamptz NOT NULL DEFAULT now(), \
                          PRIMARY KEY (run, id))",
                    )
                    .is_ok()
                    {
                        client = Some(c);
                    }
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let id = next;
        next += 1;
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        match c.execute(
            "INSERT INTO heirflow_chaos_writes (run, id) VALUES ($1, $2)",
            &[&run, &(id as i64)],
        ) {
            Ok(_) => {
                if let Ok(mut a) = stats.acknowledged.lock() {
                    a.push(id);
                }
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                client = None;
            }
        }
        std::thread::sleep(every);
    }
}

/// The ids of `run` the database holds now (retried for a while: the run may end right after a
/// failover).
pub fn stored(cfg: &postgres::Config, run: &str) -> Result<Vec<u64>> {
    let mut last = None;
    for _ in 0..30 {
        match cfg.connect(postgres::NoTls).and_then(|mut c| {
            c.query(
                "SELECT id FROM heirflow_chaos_writes WHERE run = $1 ORDER BY id",
                &[&run],
            )
        }) {
            Ok(rows) => return Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no attempt"), anyhow::Error::from))
        .context("reading the writer's rows back")
}

/// One sample of a lease row: (group, epoch) -> (holder, acquired_at, expires_at), DB clock.
type LeaseKey = (String, i64);

/// Leadership intervals from samples: each epoch from its acquisition to the latest expiry
/// seen for it (a renewal moves the expiry; a release brings it back to the release time).
pub fn intervals(samples: &BTreeMap<LeaseKey, (String, f64, f64)>) -> Vec<Lease> {
    samples
        .iter()
        .map(|((group, _), (member, from, to))| Lease {
            group: group.clone(),
            member: member.clone(),
            from: *from,
            to: *to,
        })
        .collect()
}

/// Samples `heirflow_leases` every `every` until `stop`; returns every epoch it saw.
pub fn watch_leases(
    cfg: postgres::Config,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> BTreeMap<LeaseKey, (String, f64, f64)> {
    let mut seen: BTreeMap<LeaseKey, (String, f64, f64)> = BTreeMap::new();
    let mut client: Option<postgres::Client> = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = cfg.connect(postgres::NoTls).ok();
        }
        if let Some(c) = client.as_mut() {
            let q = "SELECT grp, holder, epoch, extract(epoch FROM acquired_at)::float8, \
                     extract(epoch FROM expires_at)::float8 FROM heirflow_leases \
                     WHERE holder IS NOT NULL AND acquired_at IS NOT NULL";
            match c.query(q, &[]) {
                Ok(rows) => {
                    for r in rows {
                        let key = (r.get::<_, String>(0), r.get::<_, i64>(2));
                        let holder: String = r.get(1);
                        let (from, to): (f64, f64) = (r.get(3), r.get(4));
                        seen.insert(key, (holder, from, to));
                    }
                }
                Err(_) => client = None,
            }
        }
        std::thread::sleep(every);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_interval_per_epoch_with_its_last_expiry() {
        let mut s = BTreeMap::new();
        s.insert(("scheduler".to_string(), 1), ("a".to_string(), 10.0, 25.0));
        s.insert(("scheduler".to_string(), 2), ("b".to_string(), 26.0, 40.0));
        let l = intervals(&s);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[1].member.as_str(), l[1].from, l[1].to),
            ("b", 26.0, 40.0)
        );
        assert!(crate::invariants::overlapping_leases(&l).is_empty());
    }
}
