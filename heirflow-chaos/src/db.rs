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
use heir_supervisor::pg_tls::PgTls;

use crate::invariants::Lease;

/// A login to the metadata database and how to reach it (plain, or TLS verify-full).
#[derive(Clone, Debug)]
pub struct Db {
    cfg: postgres::Config,
    tls: PgTls,
}

impl Db {
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        self.cfg.connect(self.tls.connector())
    }
}

/// `host` must be a name the server's certificate holds when `tls` is on (the floating IP).
pub fn config(host: &str, user: &str, password: &str, db: &str, tls: &PgTls) -> Db {
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
        .tcp_user_timeout(Duration::from_secs(6))
        .ssl_mode(tls.ssl_mode());
    Db {
        cfg: c,
        tls: tls.clone(),
    }
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
    cfg: Db,
    run: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
) {
    let mut next: u64 = 1;
    let mut client: Option<postgres::Client> = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match cfg.connect() {
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
pub fn stored(cfg: &Db, run: &str) -> Result<Vec<u64>> {
    let mut last = None;
    for _ in 0..30 {
        match cfg.connect().and_then(|mut c| {
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

/// Lease rows are sampled per (group, epoch).
type LeaseKey = (String, i64);

/// The last sample of one epoch's lease row (DB clock, unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseSample {
    pub holder: String,
    pub acquired: f64,
    /// The latest expiry seen (each renewal moves it).
    pub expires: f64,
    /// When the epoch before this one ended, as the acquiring UPDATE found it (its expiry,
    /// or its release time after a graceful handover); `None` from an older supervisor.
    pub prev_ended: Option<f64>,
}

/// Leadership intervals from samples: each epoch from its acquisition to the latest expiry seen
/// for it, or to the end the next epoch's acquisition recorded when that is earlier: a release
/// (graceful handover) ends an epoch before its expiry, and the next member acquires within
/// milliseconds, between two samples.
pub fn intervals(samples: &BTreeMap<LeaseKey, LeaseSample>) -> Vec<Lease> {
    samples
        .iter()
        .map(|((group, epoch), s)| {
            let next_says = samples
                .get(&(group.clone(), epoch + 1))
                .and_then(|n| n.prev_ended);
            Lease {
                group: group.clone(),
                member: s.holder.clone(),
                from: s.acquired,
                to: next_says.map_or(s.expires, |e| e.min(s.expires)),
            }
        })
        .collect()
}

/// Samples `heirflow_leases` every `every` until `stop`; returns every epoch it saw.
pub fn watch_leases(
    cfg: Db,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> BTreeMap<LeaseKey, LeaseSample> {
    let mut seen: BTreeMap<LeaseKey, LeaseSample> = BTreeMap::new();
    let mut client: Option<postgres::Client> = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = cfg.connect().ok();
        }
        if let Some(c) = client.as_mut() {
            let q = "SELECT grp, holder, epoch, extract(epoch FROM acquired_at)::float8, \
                     extract(epoch FROM expires_at)::float8, \
                     extract(epoch FROM prev_expires_at)::float8 FROM heirflow_leases \
                     WHERE holder IS NOT NULL AND acquired_at IS NOT NULL";
            match c.query(q, &[]) {
                Ok(rows) => {
                    for r in rows {
                        let key = (r.get::<_, String>(0), r.get::<_, i64>(2));
                        seen.insert(
                            key,
                            LeaseSample {
                                holder: r.get(1),
                                acquired: r.get(3),
                                expires: r.get(4),
                                prev_ended: r.get(5),
                            },
                        );
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

    fn sample(holder: &str, acquired: f64, expires: f64, prev: Option<f64>) -> LeaseSample {
        LeaseSample {
            holder: holder.to_string(),
            acquired,
            expires,
            prev_ended: prev,
        }
    }

    #[test]
    fn one_interval_per_epoch_with_its_last_expiry() {
        let mut s = BTreeMap::new();
        s.insert(("scheduler".to_string(), 1), sample("a", 10.0, 25.0, None));
        s.insert(
            ("scheduler".to_string(), 2),
            sample("b", 26.0, 40.0, Some(25.0)),
        );
        let l = intervals(&s);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[1].member.as_str(), l[1].from, l[1].to),
            ("b", 26.0, 40.0)
        );
        assert!(crate::invariants::overlapping_leases(&l).is_empty());
    }

    #[test]
    fn a_release_ends_the_epoch_where_the_next_acquisition_found_it() {
        // a last sampled with its lease valid until 25; it released at 21.5 and b took over at
        // 21.6 (no sample in between): a handover, not two leaders.
        let mut s = BTreeMap::new();
        s.insert(("scheduler".to_string(), 1), sample("a", 10.0, 25.0, None));
        s.insert(
            ("scheduler".to_string(), 2),
            sample("b", 21.6, 30.0, Some(21.5)),
        );
        let l = intervals(&s);
        assert_eq!(l[0].to, 21.5);
        assert!(crate::invariants::overlapping_leases(&l).is_empty());
        // b acquired while the DB still had a valid until 25: two leaders, and seen as such.
        s.insert(
            ("scheduler".to_string(), 2),
            sample("b", 21.6, 30.0, Some(25.0)),
        );
        assert_eq!(
            crate::invariants::overlapping_leases(&intervals(&s)).len(),
            1
        );
        // without the next epoch's record, the last expiry seen stands
        s.insert(("scheduler".to_string(), 2), sample("b", 21.6, 30.0, None));
        assert_eq!(
            crate::invariants::overlapping_leases(&intervals(&s)).len(),
            1
        );
    }
}
