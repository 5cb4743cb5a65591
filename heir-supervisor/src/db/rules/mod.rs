//! The DB failover decision: a pure function of what one node supervisor observed.
//!
//! # Why no acknowledged commit is lost
//! The primary runs `synchronous_commit = on` with `synchronous_standby_names` naming the
//! standby (`FIRST 1 (db1, db2)`): a commit is acknowledged only after the standby flushed its
//! WAL. Promotion replays everything the standby received, so every acknowledged commit
//! survives a failover — **provided the standby really was the synchronous one**. The primary
//! stops requiring a standby ("degrades", clearing `synchronous_standby_names`) only after
//! `degrade_after` without a live streaming standby, and a standby is *eligible* only while its
//! last sighting of itself as the live `sync` standby of a primary that required one is younger
//! than `sync_window` < `degrade_after`. Both sides use the same liveness rule (state
//! `streaming` and a reply within `replica_fresh`), so by the time a primary may acknowledge
//! commits alone, the standby has stopped being eligible: a standby that could have missed a
//! commit never promotes. (The margin `degrade_after - sync_window` absorbs probe delays; the
//! window itself must cover last sighting → detection → `failover_after` → decision, about 7 s
//! with the defaults when the primary's host goes silent.)
//!
//! # Why no split brain
//! A standby promotes only when a majority of the voters (itself plus the witnesses) have seen
//! the primary unreachable for `failover_after`. A primary that cannot get enough voters to
//! confirm it (and has no standby streaming from it) fences itself after `fence_after`; a
//! primary that learns of a primary on a newer timeline demotes itself at once. Even before
//! it does, an old primary cut off from a promoted standby cannot acknowledge a single commit:
//! its synchronous standby is gone, and it degrades only with a majority confirming it and no
//! other primary in sight.

use std::time::{Duration, Instant};

use super::probe::{Replica, SenderState, SyncState};
use super::view::{NodeReport, NodeState};

#[derive(Debug, Clone)]
pub struct Params {
    pub failover_after: Duration,
    pub fence_after: Duration,
    pub sync_window: Duration,
    pub degrade_after: Duration,
    pub restart_hold: Duration,
    pub replica_fresh: Duration,
    pub witnesses: usize,
}

impl Params {
    /// Voters on a promotion: the standby and the witnesses.
    pub fn voters(&self) -> usize {
        self.witnesses + 1
    }
    pub fn majority(&self) -> usize {
        self.voters() / 2 + 1
    }
    /// Confirmations a primary needs so that no majority can be against it.
    pub fn confirmations_needed(&self) -> usize {
        self.voters() - self.majority() + 1
    }
    pub fn validate(&self) -> Result<(), String> {
        if self.witnesses == 0 {
            return Err(
                "at least one --witness is needed (the standby alone is no majority)".into(),
            );
        }
        if self.sync_window >= self.degrade_after {
            return Err("--sync-window must be shorter than --degrade-after (see rules.rs)".into());
        }
        if self.fence_after >= self.failover_after + self.sync_window {
            return Err("--fence-after is too long compared with --failover-after".into());
        }
        Ok(())
    }
}

/// The local PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Local {
    /// No postmaster. `was_primary`: no `standby.signal` in the data directory;
    /// `rejoin_unfinished`: the rejoin mark is there (`PgCtl::mark_rejoin`).
    Down {
        was_primary: bool,
        rejoin_unfinished: bool,
    },
    /// A postmaster, but queries fail (starting, stopping, recovering, hung).
    Unresponsive,
    Primary {
        timeline: u32,
        sync_names: String,
        replicas: Vec<Replica>,
    },
    Standby,
}

/// The peer's PostgreSQL, probed directly.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    Unreachable,
    Primary {
        timeline: u32,
        sync_names_set: bool,
        /// This node's row in the peer's `pg_stat_replication`.
        me: Option<Replica>,
    },
    Standby,
}

/// A fresh view from another voter (a witness or the peer's supervisor), reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct VoterSeen {
    pub voter: String,
    pub is_witness: bool,
    /// It reaches this node's PostgreSQL.
    pub me_reachable: bool,
    /// It has seen the peer unreachable for this long.
    pub peer_down_for: Option<Duration>,
    /// It sees the peer as a primary on this timeline.
    pub peer_primary_tl: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Observed {
    pub local: Local,
    pub peer: Peer,
    /// This supervisor's own view: how long the peer has been unreachable.
    pub own_peer_down_for: Option<Duration>,
    pub voters: Vec<VoterSeen>,
    /// The peer supervisor's report about itself (fresh), if it answered.
    pub peer_report: Option<NodeReport>,
    pub vip_held: bool,
    /// The local server's settings, when it answers queries.
    pub settings: Option<Settings>,
}

/// Server settings the failover relies on, as the local PostgreSQL reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub status_interval: String,
    pub retry_interval: String,
}

impl Action {
    /// Slow and repeated on failure (PostgreSQL start, rewind, copy): held after a failure.
    pub fn is_slow(self) -> bool {
        matches!(
            self,
            Action::Rejoin | Action::Reinit | Action::StartPrimary | Action::StartStandby
        )
    }
}

/// What the loop remembers between cycles (monotonic instants).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Standby: the last time it saw itself as the live sync standby of a primary requiring one.
    pub last_sync_seen: Option<Instant>,
    /// Primary: since when no standby is live.
    pub no_replica_since: Option<Instant>,
    /// Primary: since when it lacks confirmations and a live standby.
    pub unconfirmed_since: Option<Instant>,
    /// Down after having been a primary: since when.
    pub down_since: Option<Instant>,
    /// A slow action failed: none is tried again before this (the act step records it).
    pub slow_retry_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Clear synchronous_standby_names, promote, CHECKPOINT, take the floating IP.
    Promote,
    AcquireVip,
    ReleaseVip,
    /// Isolated primary: drop the floating IP and stop PostgreSQL.
    Fence,
    /// A newer primary exists: stop PostgreSQL (rejoin follows).
    Demote,
    /// pg_rewind from the peer, standby.signal + primary_conninfo, start.
    Rejoin,
    /// A rejoin of this data directory did not finish: copy the peer afresh (pg_basebackup)
    /// and follow it.
    Reinit,
    StartStandby,
    StartPrimary,
    /// A standby streams again: require it again.
    RestoreSync,
    /// No standby for `degrade_after`: stop requiring one.
    DegradeSync,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: NodeState,
    /// To run in this order; the first failure ends the cycle.
    pub actions: Vec<Action>,
    /// Slow actions decided but held back: one failed less than `RETRY_PAUSE` ago.
    pub held: Vec<Action>,
    /// `ALTER SYSTEM` settings to enforce before the actions.
    pub settings: Vec<Set>,
    pub reason: String,
}

/// Pause before a slow action is tried again after one failed.
pub const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// One `ALTER SYSTEM SET name = 'value'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Set {
    pub name: &'static str,
    pub value: &'static str,
}

pub fn live(r: &Replica, p: &Params) -> bool {
    r.state == SenderState::Streaming
        && r.reply_age_s
            .is_some_and(|a| a <= p.replica_fresh.as_secs_f64())
}

pub fn eligible(m: &Memory, p: &Params, now: Instant) -> bool {
    m.last_sync_seen
        .is_some_and(|t| now.saturating_duration_since(t) <= p.sync_window)
}

fn confirmed(o: &Observed, p: &Params) -> (bool, usize) {
    let confirmations = o.voters.iter().filter(|v| v.me_reachable).count();
    let streaming = match &o.local {
        Local::Primary { replicas, .. } => replicas.iter().any(|r| live(r, p)),
        _ => false,
    };
    (
        confirmations >= p.confirmations_needed() || streaming,
        confirmations,
    )
}

/// Update the memory with this cycle's observation.
pub fn remember(m: &mut Memory, o: &Observed, p: &Params, now: Instant) {
    match &o.local {
        Local::Standby => {
            if let Peer::Primary {
                sync_names_set: true,
                me: Some(r),
                ..
            } = &o.peer
            {
                if r.sync_state == SyncState::Sync && live(r, p) {
                    m.last_sync_seen = Some(now);
                }
            }
        }
        Local::Unresponsive => {}
        _ => m.last_sync_seen = None,
    }
    match &o.local {
        Local::Primary { replicas, .. } => {
            if replicas.iter().any(|r| live(r, p)) {
                m.no_replica_since = None;
            } else {
                m.no_replica_since.get_or_insert(now);
            }
            if confirmed(o, p).0 {
                m.unconfirmed_since = None;
            } else {
                m.unconfirmed_since.get_or_insert(now);
            }
        }
        _ => {
            m.no_replica_since = None;
            m.unconfirmed_since = None;
        }
    }
    match &o.local {
        Local::Down {
            was_primary: true,
            rejoin_unfinished: false,
        } => {
            m.down_since.get_or_insert(now);
        }
        _ => m.down_since = None,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Decide this cycle's actions, the settings to enforce and the slow actions held back.
pub fn decide(o: &Observed, m: &Memory, p: &Params, now: Instant) -> Decision {
    let plan = plan(o, m, p, now);
    // A slow action that failed is retried only after RETRY_PAUSE; the others still run.
    let hold = m.slow_retry_at.is_some_and(|t| now < t);
    let (held, actions) = plan.actions.into_iter().partition(|a| hold && a.is_slow());
    Decision {
        state: plan.state,
        actions,
        held,
        settings: o.settings.as_ref().map(settings_to_set).unwrap_or_default(),
        reason: plan.reason,
    }
}

/// The settings the failover relies on that the local server lacks (both nodes, any state):
/// * `wal_receiver_status_interval = 1s`: a standby's replies are its liveness;
/// * `wal_retrieve_retry_interval = 500ms`: a standby that lost its primary sleeps this long
///   between WAL retries, and a promote request waited for the end of the sleep (measured: 5 s
///   with the default).
pub fn settings_to_set(s: &Settings) -> Vec<Set> {
    [
        ("wal_receiver_status_interval", "1s", &s.status_interval),
        ("wal_retrieve_retry_interval", "500ms", &s.retry_interval),
    ]
    .into_iter()
    .filter(|(_, want, have)| have != want)
    .map(|(name, value, _)| Set { name, value })
    .collect()
}

/// The state, actions and reason of one cycle, before holds.
struct Plan {
    state: NodeState,
    actions: Vec<Action>,
    reason: String,
}

fn plan(o: &Observed, m: &Memory, p: &Params, now: Instant) -> Plan {
    let since = |t: Option<Instant>| {
        t.map(|t| now.saturating_duration_since(t))
            .unwrap_or_default()
    };
    let mut actions = Vec::new();
    match &o.local {
        Local::Primary {
            timeline,
            sync_names,
            replicas,
        } => {
            let direct = match &o.peer {
                Peer::Primary { timeline: t, .. } if t > timeline => Some(*t),
                _ => None,
            };
            let newer = direct.or_else(|| {
                o.voters
                    .iter()
                    .filter_map(|v| v.peer_primary_tl)
                    .filter(|t| t > timeline)
                    .max()
            });
            if let Some(t) = newer {
                return Plan {
                    state: NodeState::Demoting,
                    actions: vec![Action::ReleaseVip, Action::Demote],
                    reason: format!(
                        "the peer is primary on timeline {t}, newer than mine ({timeline})"
                    ),
                };
            }
            let (ok, confirmations) = confirmed(o, p);
            let any_live = replicas.iter().any(|r| live(r, p));
            let mut reason = format!(
                "primary on timeline {timeline}; {confirmations} voter(s) confirm me, standby {}",
                if any_live { "streaming" } else { "absent" }
            );
            if !ok {
                let gone = since(m.unconfirmed_since);
                if gone >= p.fence_after {
                    return Plan {
                        state: NodeState::Fencing,
                        actions: vec![Action::Fence],
                        reason: format!(
                            "isolated: {confirmations} of the {} confirmations needed and no standby streaming, for {}",
                            p.confirmations_needed(),
                            secs(gone)
                        ),
                    };
                }
                reason.push_str(&format!("; unconfirmed for {}", secs(gone)));
            } else if !o.vip_held {
                actions.push(Action::AcquireVip);
            }
            let sync_set = !sync_names.trim().is_empty();
            if !sync_set && any_live {
                actions.push(Action::RestoreSync);
                reason.push_str("; a standby streams again: requiring it");
            }
            let alone = since(m.no_replica_since);
            let peer_is_primary = matches!(o.peer, Peer::Primary { .. })
                || o.voters.iter().any(|v| v.peer_primary_tl.is_some());
            if sync_set
                && !any_live
                && m.no_replica_since.is_some()
                && alone >= p.degrade_after
                && confirmations >= p.confirmations_needed()
                && !peer_is_primary
            {
                actions.push(Action::DegradeSync);
                reason.push_str(&format!(
                    "; no standby for {}: stop waiting for one",
                    secs(alone)
                ));
            }
            Plan {
                state: NodeState::Primary,
                actions,
                reason,
            }
        }
        Local::Standby => {
            if o.vip_held {
                actions.push(Action::ReleaseVip);
            }
            let own = o.own_peer_down_for.is_some_and(|d| d >= p.failover_after);
            let votes = usize::from(own)
                + o.voters
                    .iter()
                    .filter(|v| {
                        v.is_witness && v.peer_down_for.is_some_and(|d| d >= p.failover_after)
                    })
                    .count();
            let is_eligible = eligible(m, p, now);
            let last_sync = m
                .last_sync_seen
                .map(|t| format!("{} ago", secs(now.saturating_duration_since(t))))
                .unwrap_or_else(|| "never".into());
            if votes >= p.majority() {
                if is_eligible {
                    actions.push(Action::Promote);
                    return Plan {
                        state: NodeState::Promoting,
                        actions,
                        reason: format!(
                            "{votes} of {} voters have seen the primary unreachable for {}+; I was its synchronous standby {last_sync}",
                            p.voters(),
                            secs(p.failover_after)
                        ),
                    };
                }
                return Plan {
                    state: NodeState::Standby,
                    actions,
                    reason: format!(
                        "{votes} of {} voters lost the primary, but I was last seen as its live synchronous standby {last_sync} (window {}): promoting could lose acknowledged commits",
                        p.voters(),
                        secs(p.sync_window)
                    ),
                };
            }
            let reason = match &o.peer {
                Peer::Standby => {
                    "standby; the peer is a standby too: no primary (operator needed)".to_string()
                }
                _ => format!(
                    "standby{}; {votes} of {} voters see the primary down (need {})",
                    if is_eligible { " (eligible)" } else { "" },
                    p.voters(),
                    p.majority()
                ),
            };
            Plan {
                state: NodeState::Standby,
                actions,
                reason,
            }
        }
        Local::Unresponsive => {
            // Keep the address unless another primary exists: a supervisor that merely cannot
            // log in (wrong password file) must not take the database away from its clients.
            let other_primary = matches!(o.peer, Peer::Primary { .. })
                || o.voters.iter().any(|v| v.peer_primary_tl.is_some());
            if o.vip_held && other_primary {
                actions.push(Action::ReleaseVip);
            }
            Plan {
                state: NodeState::Unresponsive,
                actions,
                reason: format!(
                    "postmaster running but not answering my queries: waiting{}",
                    if other_primary {
                        "; the peer is primary"
                    } else {
                        ""
                    }
                ),
            }
        }
        Local::Down { .. } => {
            // A node that is down never holds the address, whatever it does next.
            if o.vip_held {
                actions.push(Action::ReleaseVip);
            }
            let rest = decide_down(o, p, since(m.down_since));
            actions.extend(rest.actions);
            Plan { actions, ..rest }
        }
    }
}

/// A node whose PostgreSQL has been down for `down` (the address already let go).
fn decide_down(o: &Observed, p: &Params, down: Duration) -> Plan {
    let mut actions = Vec::new();
    match o.local {
        // A data directory whose rejoin did not finish is never started as a primary: it is
        // a standby to be copied afresh.
        Local::Down {
            rejoin_unfinished: true,
            ..
        } => {
            actions.push(Action::Reinit);
            Plan {
                state: NodeState::Down,
                actions,
                reason: "a rejoin of this data directory did not finish: copying the peer afresh"
                    .into(),
            }
        }
        Local::Down {
            was_primary: false, ..
        } => {
            actions.push(Action::StartStandby);
            Plan {
                state: NodeState::Down,
                actions,
                reason: "standby not running: starting it".into(),
            }
        }
        // It was the primary (the only case left: `plan` calls this for a node that is down).
        _ => {
            if let Peer::Primary { timeline, .. } = &o.peer {
                actions.push(Action::Rejoin);
                return Plan {
                    state: NodeState::Rejoining,
                    actions,
                    reason: format!(
                        "the peer is primary (timeline {timeline}): rewinding and following it"
                    ),
                };
            }
            if o.voters.iter().any(|v| v.peer_primary_tl.is_some()) {
                return Plan {
                    state: NodeState::Down,
                    actions,
                    reason: "voters see the peer as primary but I cannot reach it: waiting".into(),
                };
            }
            let peer_may_promote = o.peer_report.as_ref().is_none_or(|r| r.eligible);
            if peer_may_promote && down < p.restart_hold {
                return Plan {
                    state: NodeState::Down,
                    actions,
                    reason: format!(
                        "was primary, down for {}: the standby may promote (hold {})",
                        secs(down),
                        secs(p.restart_hold)
                    ),
                };
            }
            if o.voters.len() < p.confirmations_needed() {
                return Plan {
                    state: NodeState::Down,
                    actions,
                    reason: format!(
                        "was primary, but only {} voter(s) answer: isolated, not restarting",
                        o.voters.len()
                    ),
                };
            }
            actions.push(Action::StartPrimary);
            Plan {
                state: NodeState::Down,
                actions,
                reason: if peer_may_promote {
                    format!(
                        "was primary and nobody promoted within {}: restarting as primary",
                        secs(p.restart_hold)
                    )
                } else {
                    "was primary and the standby is not eligible: restarting as primary".into()
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
