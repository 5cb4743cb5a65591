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
    assert_eq!(
        decide_on_clock(&leader, &clock),
        ClockDecision {
            check_in: true,
            ..ClockDecision::default()
        }
    );
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
            check_in: true,
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

#[test]
fn backoff_doubles_from_one_second_to_the_cap() {
    let secs: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
}

#[test]
fn a_leader_whose_child_cannot_start_steps_down_and_backs_off() {
    let hold = Duration::from_secs(2);
    let mut l = Local {
        leading: Some(3),
        ..Local::default()
    };
    let mut waits = Vec::new();
    for n in 1..=8 {
        let e = decide_on_exit(&l, None, hold, false);
        assert!(e.step_down, "attempt {n}: the lease is released every time");
        assert_eq!(e.failed_starts, n);
        assert!(e.reason.contains("could not start"), "{}", e.reason);
        assert_eq!(e.respawn_in, None, "not warm");
        waits.push(e.hold_off.map(|d| d.as_secs()));
        l.failed_starts = e.failed_starts;
    }
    // Never below --hold-off, then doubling to the cap.
    let expect = [2, 2, 4, 8, 16, 32, 60, 60].map(Some);
    assert_eq!(waits, expect);
}

#[test]
fn a_child_that_ran_long_enough_resets_the_back_off() {
    let hold = Duration::from_secs(2);
    let l = Local {
        leading: Some(3),
        failed_starts: 6,
        ..Local::default()
    };
    let quick = decide_on_exit(&l, Some(Duration::from_secs(5)), hold, false);
    assert_eq!(
        (quick.failed_starts, quick.hold_off),
        (7, Some(BACKOFF_CAP))
    );
    let long = decide_on_exit(&l, Some(STABLE_RUN), hold, false);
    assert_eq!((long.failed_starts, long.hold_off), (0, Some(hold)));
    assert!(long.step_down);
}

#[test]
fn a_stopped_child_is_no_failure() {
    // Fenced (not leading any more, its exit awaited): no step-down, no count, no hold-off.
    let fenced = Local {
        child_stopping: true,
        failed_starts: 2,
        ..Local::default()
    };
    let e = decide_on_exit(&fenced, Some(Duration::from_millis(300)), S2, false);
    assert_eq!((e.step_down, e.failed_starts, e.hold_off), (false, 2, None));
    // Shutting down: nothing but the exit.
    let leaving = Local {
        leading: Some(1),
        shutting_down: true,
        ..Local::default()
    };
    let e = decide_on_exit(&leaving, None, S2, true);
    assert_eq!((e.step_down, e.hold_off, e.respawn_in), (false, None, None));
}

const S2: Duration = Duration::from_secs(2);

#[test]
fn a_warm_standby_that_cannot_start_backs_off_and_stands_aside() {
    let l = Local {
        failed_starts: 2,
        ..Local::default()
    };
    let e = decide_on_exit(&l, None, S2, true);
    assert!(e.step_down, "out of line while it cannot start");
    assert_eq!(e.respawn_in, Some(Duration::from_secs(4)));
    assert_eq!(e.hold_off, Some(Duration::from_secs(4)));
    // A warm child that ran long and ended: respawn after a second, as before.
    let e = decide_on_exit(&l, Some(STABLE_RUN), S2, true);
    assert_eq!(
        (e.respawn_in, e.hold_off),
        (Some(Duration::from_secs(1)), None)
    );
    assert!(!e.step_down, "stays in line");
}

#[test]
fn holding_off_means_out_of_line() {
    let held = Clock {
        hold_off_until_ns: Some(10 * S),
        ..at(9)
    };
    assert!(!decide_on_clock(&Local::default(), &held).check_in);
    assert!(decide_on_clock(&Local::default(), &at(9)).check_in);
    let over = Clock {
        now_ns: 10 * S,
        ..held
    };
    assert!(decide_on_clock(&Local::default(), &over).check_in);
    let leaving = Local {
        shutting_down: true,
        ..Local::default()
    };
    assert!(
        !decide_on_clock(&leaving, &held).check_in,
        "out of line already: no need to rejoin to leave"
    );
    let v = view(vec![], None);
    assert_eq!(decision(&v, "a", leaving, held).action, Action::Leave);
    // Even with a stale row of mine still first in line, no acquisition while held off.
    let v = view(vec![m("a", 1, true)], None);
    let d = decision(&v, "a", Local::default(), held);
    assert_eq!(d.action, Action::Wait);
    assert!(d.reason.contains("1.0s more"), "{}", d.reason);
}
