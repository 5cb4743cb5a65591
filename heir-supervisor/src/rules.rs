//! The succession rules, as pure functions of what one cycle observed.
//!
//! Two decisions per cycle, both here so that every effect of the loop is a unit-tested rule:
//! * `decide_on_clock(local, clock)`, before the database is asked: the local-deadline fence
//!   and the warm standby's respawn, which must not wait for (or on) a database round trip;
//! * `decide(view, me, local, clock)`, after it answered: renew / acquire / fence / stop /
//!   leave, the heir's wake-up at the lease's lapse, the leader's purge.
//!
//! The loop in `succession` observes, calls them, logs the reason and executes. The database
//! enforces the succession rules again in its conditional `UPDATE`s (see `registry`), so a
//! decision made on a stale view can fail there but never break safety.

use std::time::Duration;

use crate::registry::View;

/// How often the leader deletes rows that have been dead for long.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);
/// The heir looks again this long after the lapse it waits for (the DB clock decides).
const WAKE_SLACK: Duration = Duration::from_millis(5);

/// What this supervisor believes about itself, independent of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Local {
    /// The epoch of the lease I hold and my child runs under, if any.
    pub leading: Option<i64>,
    /// SIGTERM received: step down and leave.
    pub shutting_down: bool,
    /// A child (active or warm) is still alive.
    pub child_alive: bool,
    /// A fenced or stopped child has not exited yet: do not lead again until it has.
    pub child_stopping: bool,
}

/// The local monotonic clock and the timers earlier cycles set, as `CLOCK_MONOTONIC` ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    pub now_ns: u64,
    /// My lease's local deadline, while leading.
    pub deadline_ns: Option<u64>,
    /// Not eligible before this (set when my child failed as leader).
    pub hold_off_until_ns: Option<u64>,
    /// Warm standby (only with `--warm`): start the standby child from this time on.
    pub respawn_at_ns: Option<u64>,
    /// The leader's next purge.
    pub purge_at_ns: u64,
    /// The cycle interval: a lapse sooner than the next tick is worth a wake-up.
    pub interval: Duration,
}

impl Clock {
    fn reached(&self, t: Option<u64>) -> bool {
        t.is_some_and(|t| self.now_ns >= t)
    }
}

/// What the local clock alone decides, before the database is asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClockDecision {
    /// The local deadline passed: stop the child (SIGTERM, SIGKILL after the fence grace).
    pub fence: Option<String>,
    /// Start the warm standby child again.
    pub respawn_standby: bool,
}

/// The deadline first: a fence ends leadership, which may make the standby's respawn due.
pub fn decide_on_clock(local: &Local, clock: &Clock) -> ClockDecision {
    let fence = (local.leading.is_some() && clock.reached(clock.deadline_ns))
        .then(|| "could not renew the lease before the local deadline".to_string());
    let leading = local.leading.is_some() && fence.is_none();
    ClockDecision {
        respawn_standby: !local.child_alive
            && !leading
            && !local.shutting_down
            && clock.reached(clock.respawn_at_ns),
        fence,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Extend my lease of this epoch.
    Renew(i64),
    /// I am the heir and the lease is free or lapsed: take it.
    Acquire,
    /// I believed I led, the database disagrees: kill the child now.
    Fence,
    /// Leading while shutting down: stop the child (and keep renewing until it is gone).
    StopChild(i64),
    /// Release the lease and deregister, then exit.
    Leave,
    /// Nothing to do this cycle.
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    /// Run the next cycle after this, before the next tick (the heir, at the lease's lapse).
    pub wake_in: Option<Duration>,
    /// Delete long-dead rows of the group, if the action leaves me leading.
    pub purge: bool,
}

fn d(action: Action, reason: impl Into<String>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
        wake_in: None,
        purge: false,
    }
}

/// Me, as the registry knows me.
pub struct Me<'a> {
    pub member: &'a str,
    pub instance: &'a str,
}

pub fn decide(view: &View, me: &Me, local: &Local, clock: &Clock) -> Decision {
    let mut decision = decide_action(view, me, local, clock);
    // The heir looks again the moment the current lease lapses (not up to one interval
    // later): detection ≈ TTL after the leader's last renewal.
    if decision.action == Action::Wait {
        let heir = view
            .heir()
            .is_some_and(|h| h.member == me.member && h.instance == me.instance);
        decision.wake_in = view
            .lease
            .as_ref()
            .filter(|l| heir && l.valid && l.remaining_s < clock.interval.as_secs_f64())
            .map(|l| Duration::from_secs_f64(l.remaining_s.max(0.0)) + WAKE_SLACK);
    }
    // Housekeeping is the leader's job, once per PURGE_EVERY (`Acquire`: if it succeeds).
    decision.purge = matches!(
        decision.action,
        Action::Renew(_) | Action::StopChild(_) | Action::Acquire
    ) && clock.now_ns >= clock.purge_at_ns;
    decision
}

fn decide_action(view: &View, me: &Me, local: &Local, clock: &Clock) -> Decision {
    let lease = view.lease.as_ref();
    let mine = |l: &crate::registry::LeaseRow| {
        l.holder.as_deref() == Some(me.member) && l.instance.as_deref() == Some(me.instance)
    };

    // 1. I lead: the database must agree, or I fence.
    if let Some(epoch) = local.leading {
        return match lease {
            Some(l) if mine(l) && l.epoch == epoch && l.valid => {
                if local.shutting_down && local.child_alive {
                    d(
                        Action::StopChild(epoch),
                        "shutting down: stopping the child",
                    )
                } else if local.shutting_down {
                    d(Action::Leave, "child stopped: releasing the lease")
                } else {
                    d(Action::Renew(epoch), format!("leader of epoch {epoch}"))
                }
            }
            Some(l) if mine(l) && l.epoch == epoch => {
                d(Action::Fence, format!("my lease of epoch {epoch} lapsed"))
            }
            Some(l) => d(
                Action::Fence,
                format!(
                    "lease now held by {} at epoch {} (mine was {epoch})",
                    l.holder.as_deref().unwrap_or("nobody"),
                    l.epoch
                ),
            ),
            None => d(Action::Fence, "lease row missing"),
        };
    }

    // 2. Not leading.
    if local.shutting_down {
        return d(Action::Leave, "shutting down");
    }
    let position = view
        .members
        .iter()
        .filter(|m| m.live)
        .position(|m| m.member == me.member && m.instance == me.instance);
    let heir = view.heir();
    match (position, heir) {
        (None, _) => d(Action::Wait, "not (yet) a live registrant"),
        (Some(p), Some(h)) if p > 0 => d(
            Action::Wait,
            format!("standby: {p} ahead of me, heir is {}", h.member),
        ),
        _ if local.child_stopping || clock.hold_off_until_ns.is_some_and(|t| clock.now_ns < t) => {
            d(Action::Wait, "heir, holding off after a failed child")
        }
        _ => match lease {
            None => d(Action::Acquire, "heir and no lease exists yet"),
            Some(l) if l.epoch == 0 => d(Action::Acquire, "heir and nobody ever led"),
            Some(l) if !l.valid => d(
                Action::Acquire,
                format!(
                    "heir and the lease of epoch {} lapsed {:.1}s ago",
                    l.epoch, -l.remaining_s
                ),
            ),
            Some(l) if mine(l) => d(Action::Acquire, "heir and the lease is a stale one of mine"),
            Some(l) => d(
                Action::Wait,
                format!(
                    "heir; lease held by {} (epoch {}) for {:.1}s more",
                    l.holder.as_deref().unwrap_or("?"),
                    l.epoch,
                    l.remaining_s
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
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
}
