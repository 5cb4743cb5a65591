//! The failover rules, one scenario per test.

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
        state: SenderState::Streaming,
        sync_state: SyncState::Sync,
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
        settings: None,
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

fn primary_obs(replicas: Vec<Replica>, sync: &str, voters: Vec<VoterSeen>, vip: bool) -> Observed {
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
        settings: None,
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
        local: Local::Down {
            was_primary: true,
            rejoin_unfinished: false,
        },
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
        settings: None,
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
        settings: None,
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
        local: Local::Down {
            was_primary: false,
            rejoin_unfinished: false,
        },
        peer: Peer::Unreachable,
        own_peer_down_for: None,
        voters: vec![],
        peer_report: None,
        vip_held: true,
        settings: None,
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

#[test]
fn settings_are_enforced_only_where_they_differ() {
    let p = params();
    let now = Instant::now();
    let mut o = standby_obs(healthy_primary_peer(), None, vec![]);
    let seen = |a: &str, b: &str| Settings {
        status_interval: a.into(),
        retry_interval: b.into(),
    };
    o.settings = Some(seen("1s", "500ms"));
    assert!(decide(&o, &Memory::default(), &p, now).settings.is_empty());
    o.settings = Some(seen("10s", "500ms"));
    assert_eq!(
        decide(&o, &Memory::default(), &p, now).settings,
        vec![Set {
            name: "wal_receiver_status_interval",
            value: "1s"
        }]
    );
    o.settings = Some(seen("10s", "5s"));
    assert_eq!(decide(&o, &Memory::default(), &p, now).settings.len(), 2);
    // A server that does not answer has no settings to correct.
    o.settings = None;
    assert!(decide(&o, &Memory::default(), &p, now).settings.is_empty());
}

#[test]
fn a_failed_slow_action_is_held_for_the_retry_pause_but_the_others_run() {
    let p = params();
    let now = Instant::now();
    let o = Observed {
        local: Local::Down {
            was_primary: false,
            rejoin_unfinished: false,
        },
        peer: Peer::Unreachable,
        own_peer_down_for: None,
        voters: vec![],
        peer_report: None,
        vip_held: true,
        settings: None,
    };
    let failed = Memory {
        slow_retry_at: Some(now + Duration::from_secs(1)),
        ..Memory::default()
    };
    let d = decide(&o, &failed, &p, now);
    assert_eq!(d.actions, vec![Action::ReleaseVip]);
    assert_eq!(d.held, vec![Action::StartStandby]);
    let d = decide(&o, &failed, &p, now + Duration::from_secs(1));
    assert_eq!(d.actions, vec![Action::ReleaseVip, Action::StartStandby]);
    assert!(d.held.is_empty());
}

#[test]
fn an_unfinished_rejoin_is_copied_afresh_never_started_as_primary() {
    let p = params();
    let now = Instant::now();
    let long_down = Memory {
        down_since: Some(now - Duration::from_secs(60)),
        ..Memory::default()
    };
    for was_primary in [false, true] {
        let mut o = down_obs(Peer::Unreachable, Some(false), 3);
        o.local = Local::Down {
            was_primary,
            rejoin_unfinished: true,
        };
        let d = decide(&o, &long_down, &p, now);
        assert_eq!(d.actions, vec![Action::Reinit], "{}", d.reason);
        let mut m = Memory::default();
        remember(&mut m, &o, &p, now);
        assert_eq!(m.down_since, None, "not a primary that is down");
    }
}
