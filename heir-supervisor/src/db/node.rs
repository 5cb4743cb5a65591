//! The node supervisor loop (both DB hosts): observe → decide ([`rules::decide`]) → act.
//!
//! Each cycle (every `--interval`) probes the local and the peer PostgreSQL, fetches every
//! voter's signed view, and hands the reduced observation to the pure decision. Each decision
//! is logged with its reason when it changes; each action is published as a news event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures_util::future::join_all;
use tokio::signal::unix::{signal, SignalKind};

use super::http::{self, Secret};
use super::pg::PgCtl;
use super::probe::{self, literal, Creds, NodeAddr, PgState};
use super::rules::{self, Action, Local, Memory, Observed, Params, Peer, Set, Settings, VoterSeen};
use super::view::{NodeReport, Observer, View};
use crate::news::{Event, News};
use crate::vip::Vip;

pub struct Node {
    pub me: NodeAddr,
    pub peer: NodeAddr,
    /// Host used to reach the local PostgreSQL.
    pub local_host: String,
    pub admin: Creds,
    pub replication_user: String,
    pub conninfo_extra: Option<String>,
    pub sync_names: String,
    pub witnesses: Vec<String>,
    pub peer_url: Option<String>,
    pub secret: Secret,
    pub interval: Duration,
    pub probe_timeout: Duration,
    pub params: Params,
    pub pg: PgCtl,
    pub vip: Vip,
    pub news: News,
    pub observer: Arc<Observer>,
    /// Last local probe error logged (logged again only when it changes).
    pub last_local_error: std::sync::Mutex<String>,
    /// Voters that do not answer (logged on change and once a minute, not every cycle).
    pub voter_errors: crate::log::Throttle,
}

impl Node {
    fn stale_limit(&self) -> Duration {
        self.interval * 3 + self.probe_timeout
    }

    async fn probe_local(&self) -> Result<PgState> {
        probe::probe(
            &self.local_host,
            self.me.port,
            &self.admin,
            true,
            self.probe_timeout,
        )
        .await
    }

    async fn probe_peer(&self) -> Result<PgState> {
        probe::probe(
            &self.peer.host,
            self.peer.port,
            &self.admin,
            true,
            self.probe_timeout,
        )
        .await
    }

    async fn fetch_views(&self) -> Vec<(bool, &String, Result<View>)> {
        let mut urls: Vec<(bool, &String)> = self.witnesses.iter().map(|u| (true, u)).collect();
        if let Some(u) = &self.peer_url {
            urls.push((false, u));
        }
        let timeout = self.interval.mul_f64(0.8).max(Duration::from_millis(300));
        join_all(urls.into_iter().map(|(is_witness, url)| async move {
            let res = http::fetch(url, &self.secret, timeout).await.and_then(|b| {
                serde_json::from_slice::<View>(&b).with_context(|| format!("{url}: bad view JSON"))
            });
            (is_witness, url, res)
        }))
        .await
    }

    fn reduce(&self, is_witness: bool, v: &View) -> VoterSeen {
        reduce_view(
            v,
            &self.me.name,
            &self.peer.name,
            is_witness,
            super::view::ms(self.stale_limit()),
        )
    }

    async fn observe(&self) -> (Observed, Option<PgState>) {
        let alive = self.pg.postmaster().is_some();
        let (local_res, peer_res, views, vip_held) = tokio::join!(
            async {
                if alive {
                    Some(self.probe_local().await)
                } else {
                    None
                }
            },
            self.probe_peer(),
            self.fetch_views(),
            self.vip.held()
        );
        match &local_res {
            Some(r) => self.observer.record(&self.me.name, r),
            None => self
                .observer
                .record(&self.me.name, &Err(anyhow!("postmaster not running"))),
        }
        self.observer.record(&self.peer.name, &peer_res);
        if let Some(Err(e)) = &local_res {
            let msg = format!("{e:#}");
            if let Ok(mut last) = self.last_local_error.lock() {
                if *last != msg {
                    crate::log::warn(&format!("local PostgreSQL does not answer: {msg}"));
                    *last = msg;
                }
            }
        }
        let local_state = local_res.as_ref().and_then(|r| r.as_ref().ok()).cloned();
        let local = match (&local_res, &local_state) {
            (None, _) => Local::Down {
                was_primary: !self.pg.standby_signal(),
                rejoin_unfinished: self.pg.rejoin_marked(),
            },
            (Some(_), None) => Local::Unresponsive,
            (Some(_), Some(st)) if st.in_recovery => Local::Standby,
            (Some(_), Some(st)) => Local::Primary {
                timeline: st.timeline.unwrap_or(0),
                sync_names: st.sync_names.clone(),
                replicas: st.replicas.clone(),
            },
        };
        let peer = match &peer_res {
            Err(_) => Peer::Unreachable,
            Ok(st) if st.in_recovery => Peer::Standby,
            Ok(st) => Peer::Primary {
                timeline: st.timeline.unwrap_or(0),
                sync_names_set: !st.sync_names.trim().is_empty(),
                me: st.replicas.iter().find(|r| r.name == self.me.name).cloned(),
            },
        };
        let mut voters = Vec::new();
        let mut peer_report = None;
        for (is_witness, url, res) in views {
            let key = format!("voter {url}");
            match res {
                Ok(v) => {
                    self.voter_errors.ok(&key);
                    if !is_witness {
                        peer_report = v.report.clone().filter(|r| r.name == self.peer.name);
                    }
                    voters.push(self.reduce(is_witness, &v));
                }
                Err(e) => self.voter_errors.failed(&key, &format!("{e:#}")),
            }
        }
        let vip_held = match vip_held {
            Ok(h) => h,
            Err(e) => {
                crate::log::warn(&format!("floating IP state: {e:#}"));
                false
            }
        };
        (
            Observed {
                local,
                peer,
                own_peer_down_for: self.observer.down_for(&self.peer.name),
                voters,
                peer_report,
                vip_held,
                settings: local_state.as_ref().map(|st| Settings {
                    status_interval: st.status_interval.clone(),
                    retry_interval: st.retry_interval.clone(),
                }),
            },
            local_state,
        )
    }

    fn event(&self, kind: &str, timeline: Option<u32>, reason: &str) {
        self.news.publish(Event {
            kind: kind.to_string(),
            group: "db".into(),
            member: self.me.name.clone(),
            host: crate::hostname(),
            pid: std::process::id(),
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            epoch: timeline.map(i64::from),
            child_pid: None,
            reason: reason.to_string(),
            dropped_before: 0,
        });
    }

    async fn admin(&self, stmts: &[String]) -> Result<()> {
        probe::exec(
            &self.local_host,
            self.me.port,
            &self.admin,
            stmts,
            Duration::from_secs(90),
        )
        .await
    }

    fn primary_conninfo(&self) -> String {
        primary_conninfo(
            &self.peer,
            &self.replication_user,
            &self.me.name,
            self.conninfo_extra.as_deref(),
        )
    }

    /// Start the rewound or copied data directory as the peer's standby; only then is the
    /// rejoin finished (its mark removed).
    async fn start_following(&self, after: &str) -> Result<()> {
        self.pg.write_standby(&self.primary_conninfo())?;
        self.pg
            .start()
            .await
            .with_context(|| format!("starting as standby after {after}"))?;
        self.pg.clear_rejoin_mark()
    }

    /// Replace the local data directory by a fresh copy of the peer (pg_basebackup) and follow
    /// it: after a pg_rewind that failed or was cut short, whose result cannot be trusted.
    async fn reinit(&self, why: &str) -> Result<()> {
        let t0 = Instant::now();
        self.pg.mark_rejoin()?;
        self.pg
            .basebackup(&self.primary_conninfo())
            .await
            .with_context(|| format!("{why}: copying {} afresh", self.peer.name))?;
        self.start_following("pg_basebackup").await?;
        self.event(
            "db_reinitialized",
            None,
            &format!(
                "{why}: fresh copy of {} (pg_basebackup); following it; {:.1}s",
                self.peer.name,
                t0.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    async fn promote(&self, reason: &str) -> Result<()> {
        let t0 = Instant::now();
        // 1. The new primary has no standby yet: do not let its commits wait for one.
        // 2. Promote (replays every received WAL record first: all acknowledged commits).
        self.admin(&[
            "ALTER SYSTEM SET synchronous_standby_names = ''".into(),
            "SELECT pg_reload_conf()".into(),
            "SELECT pg_promote(true, 60)".into(),
        ])
        .await
        .context("promoting")?;
        let mut tl = None;
        for _ in 0..100 {
            if let Ok(st) = self.probe_local().await {
                if !st.in_recovery {
                    tl = st.timeline;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let promoted = t0.elapsed();
        // 3. Take the address before the checkpoint: clients can write meanwhile.
        if let Err(e) = self.vip.acquire().await {
            crate::log::error(&format!("promoted, but the floating IP: {e:#}"));
        }
        // 4. CHECKPOINT so the old primary can pg_rewind against us (FIELD-NOTES).
        self.admin(&["CHECKPOINT".into()])
            .await
            .context("CHECKPOINT after promotion")?;
        self.event(
            "db_promoted",
            tl,
            &format!(
                "{reason}; promoted in {:.2}s, floating IP {}, total {:.2}s",
                promoted.as_secs_f64(),
                self.vip.describe(),
                t0.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    async fn act(&self, a: Action, reason: &str, local: Option<&PgState>) -> Result<()> {
        let tl = local.and_then(|s| s.timeline);
        match a {
            Action::Promote => self.promote(reason).await?,
            Action::AcquireVip => {
                if self.vip.acquire().await? {
                    self.event(
                        "vip_acquired",
                        tl,
                        &format!("{} on the primary", self.vip.describe()),
                    );
                }
            }
            Action::ReleaseVip => {
                if self.vip.release().await? {
                    self.event(
                        "vip_released",
                        tl,
                        &format!("{}: {reason}", self.vip.describe()),
                    );
                }
            }
            Action::Fence | Action::Demote => {
                let _ = self.vip.release().await.map_err(|e| {
                    crate::log::error(&format!("releasing the floating IP: {e:#}"));
                });
                self.pg.stop().await?;
                let kind = if a == Action::Fence {
                    "db_fenced"
                } else {
                    "db_demoted"
                };
                self.event(kind, tl, reason);
            }
            Action::Rejoin => {
                let t0 = Instant::now();
                let source = rewind_source(
                    &self.peer,
                    &self.admin.user,
                    &self.admin.dbname,
                    self.conninfo_extra.as_deref(),
                );
                // Marked until the rejoined standby has started: a crash in between leaves a
                // data directory no one starts as is (PgCtl::rejoin_mark).
                self.pg.mark_rejoin()?;
                match self
                    .pg
                    .rewind(&source, self.admin.password.as_deref())
                    .await
                {
                    Ok(out) => {
                        let last = out
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("")
                            .trim();
                        self.start_following("pg_rewind").await?;
                        self.event(
                            "db_rejoined",
                            None,
                            &format!(
                                "pg_rewind from {} ({last}); following it; {:.1}s",
                                self.peer.name,
                                t0.elapsed().as_secs_f64()
                            ),
                        );
                    }
                    Err(e) => self.reinit(&format!("pg_rewind failed ({e:#})")).await?,
                }
            }
            Action::Reinit => {
                self.reinit("a rejoin of this data directory did not finish")
                    .await?
            }
            Action::StartStandby => {
                self.pg.start().await?;
                self.event("db_started", None, "standby started");
            }
            Action::StartPrimary => {
                self.pg.write_primary(&self.sync_names)?;
                self.pg.start().await?;
                self.event("db_restarted", None, reason);
            }
            Action::RestoreSync => {
                self.admin(&[
                    format!(
                        "ALTER SYSTEM SET synchronous_standby_names = {}",
                        literal(&self.sync_names)
                    ),
                    "SELECT pg_reload_conf()".into(),
                ])
                .await?;
                self.event(
                    "db_sync_restored",
                    tl,
                    &format!("synchronous_standby_names = {}", self.sync_names),
                );
            }
            Action::DegradeSync => {
                self.admin(&[
                    "ALTER SYSTEM SET synchronous_standby_names = ''".into(),
                    "SELECT pg_reload_conf()".into(),
                ])
                .await?;
                self.event("db_sync_degraded", tl, reason);
            }
        }
        Ok(())
    }

    /// Enforce the decided settings (`rules::settings_to_set`); `seen`: the values found.
    async fn apply_settings(&self, set: &[Set], seen: &Settings) {
        if set.is_empty() {
            return;
        }
        let mut stmts: Vec<String> = set
            .iter()
            .map(|s| format!("ALTER SYSTEM SET {} = {}", s.name, literal(s.value)))
            .collect();
        stmts.push("SELECT pg_reload_conf()".into());
        match self.admin(&stmts).await {
            Ok(()) => crate::log::info(&format!(
                "set wal_receiver_status_interval = 1s (was {}), wal_retrieve_retry_interval = 500ms (was {})",
                seen.status_interval, seen.retry_interval
            )),
            Err(e) => crate::log::warn(&format!("enforcing replication settings: {e:#}")),
        }
    }

    pub async fn run(self) -> Result<i32> {
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut mem = Memory::default();
        let mut last_line = String::new();
        let mut last_log = Instant::now();
        crate::log::info(&format!(
            "db node {} (peer {}), {} witness(es), floating IP {}, PostgreSQL {}",
            self.me.name,
            self.peer.name,
            self.witnesses.len(),
            self.vip.describe(),
            self.admin.tls.describe()
        ));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
            }
            let (obs, local_state) = self.observe().await;
            let now = Instant::now();
            rules::remember(&mut mem, &obs, &self.params, now);
            let d = rules::decide(&obs, &mem, &self.params, now);
            self.observer.set_report(NodeReport {
                name: self.me.name.clone(),
                state: d.state.clone(),
                eligible: rules::eligible(&mem, &self.params, now),
                timeline: local_state.as_ref().and_then(|s| s.timeline),
                holds_vip: obs.vip_held,
                reason: d.reason.clone(),
            });
            // Log when the decision changes in kind (durations in the reason do not count).
            let held = if d.held.is_empty() {
                String::new()
            } else {
                format!(" (held after a failure: {:?})", d.held)
            };
            let line = format!(
                "{} {:?}{held} {}",
                d.state,
                d.actions,
                d.reason
                    .replace(|c: char| c.is_ascii_digit() || c == '.', "")
            );
            if line != last_line
                || !d.actions.is_empty()
                || !d.held.is_empty()
                || last_log.elapsed() > Duration::from_secs(60)
            {
                crate::log::info(&format!(
                    "[{}] {:?}{held} — {}",
                    d.state, d.actions, d.reason
                ));
                last_line = line;
                last_log = Instant::now();
            }
            if let Some(seen) = &obs.settings {
                self.apply_settings(&d.settings, seen).await;
            }
            for a in d.actions {
                let res = self.act(a, &d.reason, local_state.as_ref()).await;
                // The outcome of a slow action is what holds the next ones (rules::decide).
                if a.is_slow() {
                    mem.slow_retry_at = res.is_err().then(|| Instant::now() + rules::RETRY_PAUSE);
                }
                if let Err(e) = res {
                    crate::log::error(&format!("{a:?}: {e:#}"));
                    self.event("db_action_failed", None, &format!("{a:?}: {e:#}"));
                    break;
                }
            }
        }
        crate::log::info("stopping; PostgreSQL and the floating IP are left as they are");
        self.news.flush(Duration::from_secs(2)).await;
        Ok(0)
    }
}

/// `conninfo` plus `--primary-conninfo-extra`: every libpq connection to the peer carries it
/// (with TLS, the peer refuses one that does not).
fn with_extra(mut conninfo: String, extra: Option<&str>) -> String {
    if let Some(x) = extra.map(str::trim).filter(|x| !x.is_empty()) {
        conninfo.push(' ');
        conninfo.push_str(x);
    }
    conninfo
}

/// The standby's `primary_conninfo`, also pg_basebackup's source (a replication login).
pub fn primary_conninfo(peer: &NodeAddr, user: &str, me: &str, extra: Option<&str>) -> String {
    with_extra(
        format!(
            "host={} port={} user={user} application_name={me} connect_timeout=2",
            peer.host, peer.port
        ),
        extra,
    )
}

/// pg_rewind's `--source-server` (the superuser login).
pub fn rewind_source(peer: &NodeAddr, user: &str, dbname: &str, extra: Option<&str>) -> String {
    with_extra(
        format!(
            "host={} port={} user={user} dbname={dbname}",
            peer.host, peer.port
        ),
        extra,
    )
}

/// Reduce a voter's view to what the decision needs; node entries older than `limit_ms` are
/// ignored (a voter whose probes stalled does not vote).
pub fn reduce_view(v: &View, me: &str, peer: &str, is_witness: bool, limit_ms: u64) -> VoterSeen {
    let fresh = |n: &str| v.nodes.get(n).filter(|s| s.age_ms <= limit_ms);
    let me = fresh(me);
    let peer = fresh(peer);
    VoterSeen {
        voter: v.voter.clone(),
        is_witness,
        me_reachable: me.is_some_and(|s| s.reachable),
        peer_down_for: peer
            .filter(|s| !s.reachable)
            .map(|s| Duration::from_millis(s.for_ms)),
        peer_primary_tl: peer
            .filter(|s| s.reachable && s.primary == Some(true))
            .map(|s| s.timeline.unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::view::NodeSeen;

    fn seen(
        reachable: bool,
        for_ms: u64,
        age_ms: u64,
        primary: Option<bool>,
        tl: Option<u32>,
    ) -> NodeSeen {
        NodeSeen {
            reachable,
            for_ms,
            age_ms,
            primary,
            timeline: tl,
            error: None,
        }
    }

    #[test]
    fn every_conninfo_to_the_peer_carries_the_extra_options() {
        let peer = NodeAddr {
            name: "b".into(),
            host: "10.0.0.2".into(),
            port: 5432,
        };
        let tls = "sslmode=verify-full sslrootcert=/etc/heirflow/tls/ca.crt";
        assert_eq!(
            primary_conninfo(&peer, "replicator", "a", Some(tls)),
            format!("host=10.0.0.2 port=5432 user=replicator application_name=a connect_timeout=2 {tls}")
        );
        assert_eq!(
            rewind_source(&peer, "postgres", "postgres", Some(tls)),
            format!("host=10.0.0.2 port=5432 user=postgres dbname=postgres {tls}")
        );
        assert_eq!(
            rewind_source(&peer, "postgres", "postgres", None),
            "host=10.0.0.2 port=5432 user=postgres dbname=postgres"
        );
        assert!(primary_conninfo(&peer, "r", "a", Some("  ")).ends_with("connect_timeout=2"));
    }

    #[test]
    fn views_reduce_to_votes_and_stale_entries_do_not_vote() {
        let mut v = View {
            voter: "w1".into(),
            kind: "witness".into(),
            ..View::default()
        };
        v.nodes
            .insert("a".into(), seen(true, 9000, 200, Some(false), None));
        v.nodes
            .insert("b".into(), seen(false, 4000, 300, None, None));
        let r = reduce_view(&v, "a", "b", true, 4500);
        assert!(r.me_reachable);
        assert_eq!(r.peer_down_for, Some(Duration::from_secs(4)));
        assert_eq!(r.peer_primary_tl, None);
        // The same view seen from b: a is a reachable standby, not a primary.
        let r = reduce_view(&v, "b", "a", true, 4500);
        assert!(!r.me_reachable);
        assert_eq!(r.peer_down_for, None);
        // Stale entries count for nothing.
        v.nodes
            .insert("b".into(), seen(false, 60000, 9000, None, None));
        assert_eq!(reduce_view(&v, "a", "b", true, 4500).peer_down_for, None);
        // A newer primary is reported with its timeline.
        v.nodes
            .insert("b".into(), seen(true, 1000, 100, Some(true), Some(3)));
        assert_eq!(
            reduce_view(&v, "a", "b", true, 4500).peer_primary_tl,
            Some(3)
        );
    }
}
