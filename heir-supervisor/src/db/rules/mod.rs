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

use super::probe::Replica;
use super::view::NodeReport;

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
    /// No postmaster. `was_primary`: no `standby.signal` in the data directory.
    Down {
        was_primary: bool,
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
    StartStandby,
    StartPrimary,
    /// A standby streams again: require it again.
    RestoreSync,
    /// No standby for `degrade_after`: stop requiring one.
    DegradeSync,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: &'static str,
    pub actions: Vec<Action>,
    pub reason: String,
}

pub fn live(r: &Replica, p: &Params) -> bool {
    r.state == "streaming"
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
                if r.sync_state == "sync" && live(r, p) {
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
        Local::Down { was_primary: true } => {
            m.down_since.get_or_insert(now);
        }
        _ => m.down_since = None,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Decide this cycle's actions.
pub fn decide(o: &Observed, m: &Memory, p: &Params, now: Instant) -> Decision {
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
                return Decision {
                    state: "demoting",
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
                    return Decision {
                        state: "fencing",
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
            Decision {
                state: "primary",
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
                    return Decision {
                        state: "promoting",
                        actions,
                        reason: format!(
                            "{votes} of {} voters have seen the primary unreachable for {}+; I was its synchronous standby {last_sync}",
                            p.voters(),
                            secs(p.failover_after)
                        ),
                    };
                }
                return Decision {
                    state: "standby",
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
            Decision {
                state: "standby",
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
            Decision {
                state: "unresponsive",
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
        Local::Down { was_primary: false } => {
            if o.vip_held {
                actions.push(Action::ReleaseVip);
            }
            actions.push(Action::StartStandby);
            Decision {
                state: "down",
                actions,
                reason: "standby not running: starting it".into(),
            }
        }
        Local::Down { was_primary: true } => {
            if o.vip_held {
                actions.push(Action::ReleaseVip);
            }
            if let Peer::Primary { timeline, .. } = &o.peer {
                actions.push(Action::Rejoin);
                return Decision {
                    state: "rejoining",
                    actions,
                    reason: format!(
                        "the peer is primary (timeline {timeline}): rewinding and following it"
                    ),
                };
            }
            if o.voters.iter().any(|v| v.peer_primary_tl.is_some()) {
                return Decision {
                    state: "down",
                    actions,
                    reason: "voters see the peer as primary but I cannot reach it: waiting".into(),
                };
            }
            let down = since(m.down_since);
            let peer_may_promote = o.peer_report.as_ref().is_none_or(|r| r.eligible);
            if peer_may_promote && down < p.restart_hold {
                return Decision {
                    state: "down",
                    actions,
                    reason: format!(
                        "was primary, down for {}: the standby may promote (hold {})",
                        secs(down),
                        secs(p.restart_hold)
                    ),
                };
            }
            if o.voters.len() < p.confirmations_needed() {
                return Decision {
                    state: "down",
                    actions,
                    reason: format!(
                        "was primary, but only {} voter(s) answer: isolated, not restarting",
                        o.voters.len()
                    ),
                };
            }
            actions.push(Action::StartPrimary);
            Decision {
                state: "down",
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
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            failover_after: Duration::from_secs(3),
            fence_after: Duration::from_secs(2),
            sync_window: Duration::from_secs(7),
            degrade_after: Duration::from_secs(10),
            restart_hold: Duration::from_secs(15),
            replica_fresh: Duration::from_secs(3),
            witnesses: 3,
        }
    }

    fn sync_replica(name: &str) -> Replica {
        Replica {
            name: name.into(),
            state: "streaming".into(),
            sync_state: "sync".into(),
            reply_age_s: Some(0.4),
        }
    }

    fn witness(name: &str, me: bool, peer_down: Option<u64>) -> VoterSeen {
        VoterSeen {
            voter: name.into(),
            is_witness: true,
            me_reachable: me,
            peer_down_for: peer_down.map(Duration::from_secs),
            peer_primary_tl: None,
        }
    }

    fn standby_obs(peer: Peer, own_down: Option<u64>, voters: Vec<VoterSeen>) -> Observed {
        Observed {
            local: Local::Standby,
            peer,
            own_peer_down_for: own_down.map(Duration::from_secs),
            voters,
            peer_report: None,
            vip_held: false,
        }
    }

    fn healthy_primary_peer() -> Peer {
        Peer::Primary {
            timeline: 1,
            sync_names_set: true,
            me: Some(sync_replica("b")),
        }
    }

    #[test]
    fn majority_arithmetic() {
        let p = params();
        assert_eq!(
            (p.voters(), p.majority(), p.confirmations_needed()),
            (4, 3, 2)
        );
        let one = Params {
            witnesses: 1,
            ..params()
        };
        assert_eq!(
            (one.voters(), one.majority(), one.confirmations_needed()),
            (2, 2, 1)
        );
        assert!(Params {
            witnesses: 0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(Params {
            sync_window: Duration::from_secs(10),
            ..params()
        }
        .validate()
        .is_err());
        assert!(params().validate().is_ok());
    }

    #[test]
    fn standby_remembers_being_sync_only_when_live_and_required() {
        let p = params();
        let now = Instant::now();
        let mut m = Memory::default();
        remember(
            &mut m,
            &standby_obs(healthy_primary_peer(), None, vec![]),
            &p,
            now,
        );
        assert_eq!(m.last_sync_seen, Some(now));
        // A stale reply (walreceiver gone, walsender not yet timed out) does not count.
        let mut stale = sync_replica("b");
        stale.reply_age_s = Some(9.0);
        let later = now + Duration::from_secs(1);
        let peer = Peer::Primary {
            timeline: 1,
            sync_names_set: true,
            me: Some(stale),
        };
        remember(&mut m, &standby_obs(peer, None, vec![]), &p, later);
        assert_eq!(m.last_sync_seen, Some(now));
        // A primary that does not require a standby does not make it eligible.
        let peer = Peer::Primary {
            timeline: 1,
            sync_names_set: false,
            me: Some(sync_replica("b")),
        };
        remember(&mut m, &standby_obs(peer, None, vec![]), &p, later);
        assert_eq!(m.last_sync_seen, Some(now));
    }

    #[test]
    fn promotes_on_majority_when_eligible() {
        let p = params();
        let now = Instant::now();
        let m = Memory {
            last_sync_seen: Some(now - Duration::from_secs(4)),
            ..Memory::default()
        };
        let o = standby_obs(
            Peer::Unreachable,
            Some(4),
            vec![
                witness("w1", true, Some(4)),
                witness("w2", true, Some(3)),
                witness("w3", true, Some(1)),
            ],
        );
        let d = decide(&o, &m, &p, now);
        assert_eq!(d.actions, vec![Action::Promote], "{}", d.reason);
    }

    #[test]
    fn no_promotion_when_witnesses_still_see_the_primary() {
        // primary<->standby partition: the standby alone lost the primary.
        let p = params();
        let now = Instant::now();
        let m = Memory {
            last_sync_seen: Some(now),
            ..Memory::default()
        };
        let o = standby_obs(
            Peer::Unreachable,
            Some(30),
            vec![
                witness("w1", true, None),
                witness("w2", true, None),
                witness("w3", true, None),
            ],
        );
        assert!(decide(&o, &m, &p, now).actions.is_empty());
        // Two witnesses plus the standby is a majority only when the standby also votes.
        let o = standby_obs(
            Peer::Unreachable,
            None,
            vec![
                witness("w1", true, Some(9)),
                witness("w2", true, Some(9)),
                witness("w3", true, None),
            ],
        );
        assert!(decide(&o, &m, &p, now).actions.is_empty());
        // A vote counts only after failover_after.
        let o = standby_obs(
            Peer::Unreachable,
            Some(9),
            vec![witness("w1", true, Some(9)), witness("w2", true, Some(2))],
        );
        assert!(decide(&o, &m, &p, now).actions.is_empty());
    }

    #[test]
    fn ineligible_standby_never_promotes() {
        let p = params();
        let now = Instant::now();
        let o = standby_obs(
            Peer::Unreachable,
            Some(60),
            vec![
                witness("w1", true, Some(60)),
                witness("w2", true, Some(60)),
                witness("w3", true, Some(60)),
            ],
        );
        for m in [
            Memory::default(),
            Memory {
                last_sync_seen: Some(now - Duration::from_secs(8)),
                ..Memory::default()
            },
        ] {
            let d = decide(&o, &m, &p, now);
            assert!(d.actions.is_empty(), "{d:?}");
            assert!(
                d.reason.contains("could lose acknowledged commits"),
                "{}",
                d.reason
            );
        }
    }

    #[test]
    fn eligibility_always_expires_before_the_primary_may_degrade() {
        // The standby's last sighting as live sync standby is at t0; the primary, probing
        // the same pg_stat_replication row, cannot start its no-standby clock before t0, and
        // degrades degrade_after later. The standby's eligibility ends sync_window after t0.
        let p = params();
        let t0 = Instant::now();
        let m = Memory {
            last_sync_seen: Some(t0),
            ..Memory::default()
        };
        let degrade_at = t0 + p.degrade_after;
        assert!(!eligible(&m, &p, degrade_at));
        assert!(!eligible(
            &m,
            &p,
            t0 + p.sync_window + Duration::from_millis(1)
        ));
        assert!(eligible(&m, &p, t0 + p.sync_window));
    }

    fn primary_obs(
        replicas: Vec<Replica>,
        sync: &str,
        voters: Vec<VoterSeen>,
        vip: bool,
    ) -> Observed {
        Observed {
            local: Local::Primary {
                timeline: 2,
                sync_names: sync.into(),
                replicas,
            },
            peer: Peer::Unreachable,
            own_peer_down_for: None,
            voters,
            peer_report: None,
            vip_held: vip,
        }
    }

    #[test]
    fn primary_takes_vip_restores_and_degrades_sync() {
        let p = params();
        let now = Instant::now();
        let m = Memory::default();
        let w = vec![witness("w1", true, None), witness("w2", true, None)];
        let o = primary_obs(vec![sync_replica("a")], "", w.clone(), false);
        let d = decide(&o, &m, &p, now);
        assert_eq!(d.actions, vec![Action::AcquireVip, Action::RestoreSync]);
        // No standby for degrade_after, confirmed by voters: stop requiring one.
        let m = Memory {
            no_replica_since: Some(now - Duration::from_secs(11)),
            ..Memory::default()
        };
        let o = primary_obs(vec![], "FIRST 1 (a, b)", w.clone(), true);
        assert_eq!(decide(&o, &m, &p, now).actions, vec![Action::DegradeSync]);
        // ... but not without enough confirmations.
        let o = primary_obs(
            vec![],
            "FIRST 1 (a, b)",
            vec![witness("w1", true, None)],
            true,
        );
        let m2 = Memory {
            unconfirmed_since: Some(now),
            ..m.clone()
        };
        assert!(decide(&o, &m2, &p, now).actions.is_empty());
        // ... and not when a voter sees another primary.
        let mut w2 = w.clone();
        w2[0].peer_primary_tl = Some(1);
        let o = primary_obs(vec![], "FIRST 1 (a, b)", w2, true);
        assert!(!decide(&o, &m, &p, now)
            .actions
            .contains(&Action::DegradeSync));
    }

    #[test]
    fn isolated_primary_fences_unless_its_standby_streams() {
        let p = params();
        let now = Instant::now();
        let m = Memory {
            unconfirmed_since: Some(now - Duration::from_secs(3)),
            ..Memory::default()
        };
        let o = primary_obs(
            vec![],
            "FIRST 1 (a, b)",
            vec![witness("w1", true, None)],
            true,
        );
        assert_eq!(decide(&o, &m, &p, now).actions, vec![Action::Fence]);
        let o = primary_obs(vec![sync_replica("b")], "FIRST 1 (a, b)", vec![], true);
        assert!(decide(&o, &m, &p, now).actions.is_empty());
        let young = Memory {
            unconfirmed_since: Some(now - Duration::from_secs(1)),
            ..Memory::default()
        };
        let o = primary_obs(vec![], "FIRST 1 (a, b)", vec![], true);
        assert!(decide(&o, &young, &p, now).actions.is_empty());
    }

    #[test]
    fn old_primary_demotes_when_a_newer_one_exists() {
        let p = params();
        let now = Instant::now();
        let mut o = primary_obs(vec![], "FIRST 1 (a, b)", vec![], true);
        o.peer = Peer::Primary {
            timeline: 3,
            sync_names_set: false,
            me: None,
        };
        assert_eq!(
            decide(&o, &Memory::default(), &p, now).actions,
            vec![Action::ReleaseVip, Action::Demote]
        );
        let mut w = witness("w1", false, None);
        w.peer_primary_tl = Some(3);
        let o = primary_obs(vec![], "FIRST 1 (a, b)", vec![w], true);
        assert_eq!(
            decide(&o, &Memory::default(), &p, now).actions,
            vec![Action::ReleaseVip, Action::Demote]
        );
    }

    fn down_obs(peer: Peer, report: Option<bool>, voters: usize) -> Observed {
        Observed {
            local: Local::Down { was_primary: true },
            peer,
            own_peer_down_for: None,
            voters: (0..voters)
                .map(|i| witness(&format!("w{i}"), false, None))
                .collect(),
            peer_report: report.map(|eligible| NodeReport {
                eligible,
                ..NodeReport::default()
            }),
            vip_held: false,
        }
    }

    #[test]
    fn crashed_primary_waits_for_the_standby_then_rejoins() {
        let p = params();
        let now = Instant::now();
        let m = Memory {
            down_since: Some(now - Duration::from_secs(2)),
            ..Memory::default()
        };
        // The standby is eligible: wait for its promotion.
        let d = decide(&down_obs(Peer::Standby, Some(true), 3), &m, &p, now);
        assert!(d.actions.is_empty(), "{d:?}");
        // It promoted: rewind and follow.
        let promoted = Peer::Primary {
            timeline: 2,
            sync_names_set: false,
            me: None,
        };
        assert_eq!(
            decide(&down_obs(promoted, Some(false), 3), &m, &p, now).actions,
            vec![Action::Rejoin]
        );
        // The standby cannot promote: restart at once.
        assert_eq!(
            decide(&down_obs(Peer::Standby, Some(false), 3), &m, &p, now).actions,
            vec![Action::StartPrimary]
        );
        // Nobody promoted within the hold: restart.
        let old = Memory {
            down_since: Some(now - Duration::from_secs(16)),
            ..Memory::default()
        };
        assert_eq!(
            decide(&down_obs(Peer::Unreachable, None, 3), &old, &p, now).actions,
            vec![Action::StartPrimary]
        );
        // ... unless isolated.
        assert!(decide(&down_obs(Peer::Unreachable, None, 1), &old, &p, now)
            .actions
            .is_empty());
    }

    #[test]
    fn unresponsive_node_keeps_the_vip_unless_another_primary_exists() {
        let p = params();
        let now = Instant::now();
        let mut o = Observed {
            local: Local::Unresponsive,
            peer: Peer::Standby,
            own_peer_down_for: None,
            voters: vec![],
            peer_report: None,
            vip_held: true,
        };
        assert!(decide(&o, &Memory::default(), &p, now).actions.is_empty());
        o.peer = Peer::Primary {
            timeline: 2,
            sync_names_set: false,
            me: None,
        };
        assert_eq!(
            decide(&o, &Memory::default(), &p, now).actions,
            vec![Action::ReleaseVip]
        );
    }

    #[test]
    fn standby_restarts_and_never_holds_the_vip() {
        let p = params();
        let now = Instant::now();
        let o = Observed {
            local: Local::Down { was_primary: false },
            peer: Peer::Unreachable,
            own_peer_down_for: None,
            voters: vec![],
            peer_report: None,
            vip_held: true,
        };
        assert_eq!(
            decide(&o, &Memory::default(), &p, now).actions,
            vec![Action::ReleaseVip, Action::StartStandby]
        );
        let mut s = standby_obs(healthy_primary_peer(), None, vec![]);
        s.vip_held = true;
        assert_eq!(
            decide(&s, &Memory::default(), &p, now).actions,
            vec![Action::ReleaseVip]
        );
    }
}
