//! The succession rules, one test per rule.

use super::*;
use crate::registry::{LeaseRow, MemberRow};

fn m(name: &str, seq: i64, live: bool) -> MemberRow {
    MemberRow {
        member: name.into(),
        instance: format!("i-{name}"),
        seq,
        host: "h".into(),
        pid: 1,
        ttl_ms: 3000,
        live,
        age_s: 0.1,
        registered_s: 10.0,
    }
}
fn lease(holder: Option<&str>, epoch: i64, valid: bool) -> Option<LeaseRow> {
    Some(LeaseRow {
        holder: holder.map(Into::into),
        instance: holder.map(|h| format!("i-{h}")),
        epoch,
        valid,
        remaining_s: if valid { 2.0 } else { -1.0 },
    })
}
fn view(members: Vec<MemberRow>, lease: Option<LeaseRow>) -> View {
    View {
        group: "g".into(),
        members,
        lease,
    }
}
fn me(name: &str) -> (String, String) {
    (name.to_string(), format!("i-{name}"))
}
fn decision(v: &View, who: &str, local: Local, clock: Clock) -> Decision {
    let (member, instance) = me(who);
    decide(
        v,
        &Me {
            member: &member,
            instance: &instance,
        },
        &local,
        &clock,
    )
}
fn act(v: &View, who: &str, local: Local) -> Action {
    decision(v, who, local, Clock::default()).action
}
const S: u64 = 1_000_000_000;
fn at(now_s: u64) -> Clock {
    Clock {
        now_ns: now_s * S,
        purge_at_ns: u64::MAX,
        interval: Duration::from_millis(500),
        ..Clock::default()
    }
}

#[test]
fn oldest_live_member_takes_a_free_lease() {
    let v = view(vec![m("a", 1, true), m("b", 2, true)], None);
    assert_eq!(act(&v, "a", Local::default()), Action::Acquire);
    assert_eq!(act(&v, "b", Local::default()), Action::Wait);
}

#[test]
fn dead_elders_are_skipped() {
    let v = view(
        vec![m("a", 1, false), m("b", 2, true), m("c", 3, true)],
        lease(Some("a"), 4, false),
    );
    assert_eq!(act(&v, "b", Local::default()), Action::Acquire);
    assert_eq!(act(&v, "c", Local::default()), Action::Wait);
}

#[test]
fn only_a_lapsed_lease_is_taken() {
    let v = view(
        vec![m("a", 1, false), m("b", 2, true)],
        lease(Some("a"), 4, true),
    );
    // a's row lapsed but its lease has not: b waits.
    assert_eq!(act(&v, "b", Local::default()), Action::Wait);
}

#[test]
fn leader_renews_while_the_db_agrees() {
    let v = view(vec![m("a", 1, true)], lease(Some("a"), 7, true));
    let l = Local {
        leading: Some(7),
        child_alive: true,
        ..Local::default()
    };
    assert_eq!(act(&v, "a", l), Action::Renew(7));
}

#[test]
fn leader_fences_on_any_disagreement() {
    let l = Local {
        leading: Some(7),
        child_alive: true,
        ..Local::default()
    };
    let lapsed = view(vec![m("a", 1, true)], lease(Some("a"), 7, false));
    assert_eq!(act(&lapsed, "a", l), Action::Fence);
    let taken = view(vec![m("b", 2, true)], lease(Some("b"), 8, true));
    assert_eq!(act(&taken, "a", l), Action::Fence);
    let other_epoch = view(vec![m("a", 1, true)], lease(Some("a"), 8, true));
    assert_eq!(act(&other_epoch, "a", l), Action::Fence);
    assert_eq!(act(&view(vec![], None), "a", l), Action::Fence);
}

#[test]
fn a_younger_live_member_never_preempts_the_leader() {
    // a leads; b is older only if a lapsed, which would end a's lease too. The leader keeps
    // its lease while the database agrees, whoever else is live.
    let v = view(
        vec![m("b", 1, true), m("a", 5, true)],
        lease(Some("a"), 3, true),
    );
    let l = Local {
        leading: Some(3),
        child_alive: true,
        ..Local::default()
    };
    assert_eq!(act(&v, "a", l), Action::Renew(3));
    assert_eq!(act(&v, "b", Local::default()), Action::Wait);
}

#[test]
fn shutdown_stops_the_child_then_leaves() {
    let v = view(vec![m("a", 1, true)], lease(Some("a"), 2, true));
    let mut l = Local {
        leading: Some(2),
        child_alive: true,
        shutting_down: true,
        ..Local::default()
    };
    assert_eq!(act(&v, "a", l), Action::StopChild(2));
    l.child_alive = false;
    assert_eq!(act(&v, "a", l), Action::Leave);
    let standby = Local {
        shutting_down: true,
        ..Local::default()
    };
    assert_eq!(act(&v, "b", standby), Action::Leave);
}

#[test]
fn holding_off_heir_waits_until_the_hold_off_ends_and_the_child_is_gone() {
    let v = view(vec![m("a", 1, true)], None);
    let held = Clock {
        hold_off_until_ns: Some(10 * S),
        ..at(9)
    };
    let wait = |l, c| decision(&v, "a", l, c).action;
    assert_eq!(wait(Local::default(), held), Action::Wait);
    assert_eq!(
        wait(
            Local::default(),
            Clock {
                now_ns: 10 * S,
                ..held
            }
        ),
        Action::Acquire
    );
    let stopping = Local {
        child_stopping: true,
        ..Local::default()
    };
    assert_eq!(wait(stopping, at(9)), Action::Wait);
}

#[test]
fn deadline_passed_fences_the_leader() {
    let leader = Local {
        leading: Some(4),
        child_alive: true,
        ..Local::default()
    };
    let clock = Clock {
        deadline_ns: Some(10 * S),
        ..at(9)
    };
    assert_eq!(decide_on_clock(&leader, &clock), ClockDecision::default());
    let late = Clock {
        now_ns: 10 * S,
        ..clock
    };
    assert!(decide_on_clock(&leader, &late).fence.is_some());
    // Not leading (e.g. fenced already): no deadline applies.
    let standby = Local {
        child_alive: true,
        ..Local::default()
    };
    assert!(decide_on_clock(&standby, &late).fence.is_none());
}

#[test]
fn warm_respawn_only_when_not_leading_and_the_child_is_dead() {
    let clock = Clock {
        respawn_at_ns: Some(5 * S),
        ..at(5)
    };
    let respawn = |l: Local, c: Clock| decide_on_clock(&l, &c).respawn_standby;
    assert!(respawn(Local::default(), clock));
    assert!(!respawn(Local::default(), at(5)), "no timer: not warm");
    assert!(!respawn(
        Local::default(),
        Clock {
            now_ns: 4 * S,
            ..clock
        }
    ));
    let alive = Local {
        child_alive: true,
        ..Local::default()
    };
    assert!(!respawn(alive, clock));
    let leading = Local {
        leading: Some(2),
        ..Local::default()
    };
    assert!(!respawn(leading, clock));
    let leaving = Local {
        shutting_down: true,
        ..Local::default()
    };
    assert!(!respawn(leaving, clock));
    // A leader fenced on its deadline with its child already gone respawns at once.
    let fenced = Clock {
        deadline_ns: Some(S),
        ..clock
    };
    assert_eq!(
        decide_on_clock(&leading, &fenced),
        ClockDecision {
            fence: Some("could not renew the lease before the local deadline".into()),
            respawn_standby: true,
        }
    );
}

#[test]
fn the_heir_wakes_at_the_lease_lapse() {
    // a died (its row lapsed), its lease has not yet: b is the heir and waits for it.
    let mut held = view(
        vec![m("a", 1, false), m("b", 2, true)],
        lease(Some("a"), 3, true),
    );
    if let Some(l) = held.lease.as_mut() {
        l.remaining_s = 0.25;
    }
    let d = decision(&held, "b", Local::default(), at(1));
    assert_eq!(d.action, Action::Wait);
    assert_eq!(d.wake_in, Some(Duration::from_millis(255)));
    // Not the heir, or a lapse later than the next tick: no wake-up.
    let v3 = view(
        vec![m("a", 1, false), m("b", 2, true), m("c", 3, true)],
        held.lease.clone(),
    );
    assert_eq!(decision(&v3, "c", Local::default(), at(1)).wake_in, None);
    if let Some(l) = held.lease.as_mut() {
        l.remaining_s = 0.7;
    }
    assert_eq!(decision(&held, "b", Local::default(), at(1)).wake_in, None);
}

#[test]
fn a_leader_purges_at_most_once_a_minute() {
    let v = view(vec![m("a", 1, true)], lease(Some("a"), 7, true));
    let leader = Local {
        leading: Some(7),
        child_alive: true,
        ..Local::default()
    };
    let due = Clock {
        purge_at_ns: 60 * S,
        ..at(60)
    };
    let d = decision(&v, "a", leader, due);
    assert_eq!((d.action, d.purge), (Action::Renew(7), true));
    let early = Clock {
        now_ns: 59 * S,
        ..due
    };
    assert!(!decision(&v, "a", leader, early).purge);
    // Only the leader purges (a standby, or a leader that is fenced).
    let standby = view(
        vec![m("a", 1, true), m("b", 2, true)],
        lease(Some("a"), 7, true),
    );
    assert!(!decision(&standby, "b", Local::default(), due).purge);
    let lapsed = view(vec![m("a", 1, true)], lease(Some("a"), 7, false));
    assert!(!decision(&lapsed, "a", leader, due).purge);
}

#[test]
fn a_stale_lease_of_mine_is_retaken_with_a_new_epoch() {
    let v = view(vec![m("a", 1, true)], lease(Some("a"), 3, true));
    assert_eq!(act(&v, "a", Local::default()), Action::Acquire);
}
