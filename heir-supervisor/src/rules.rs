//! The succession rules, as a pure function of what one cycle observed.
//!
//! `decide(view, me, local)` says what to do and why; the loop in `succession` does the I/O.
//! The database enforces the same rules again in its conditional `UPDATE`s (see `registry`), so
//! a decision made on a stale view can fail there but never break safety.

use crate::registry::View;

/// What this supervisor believes about itself, independent of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Local {
    /// The epoch of the lease I hold and my child runs under, if any.
    pub leading: Option<i64>,
    /// SIGTERM received: step down and leave.
    pub shutting_down: bool,
    /// A child (active or warm) is still alive.
    pub child_alive: bool,
    /// Not eligible yet (e.g. just after my child failed as leader).
    pub holding_off: bool,
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
}

fn d(action: Action, reason: impl Into<String>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
    }
}

/// Me, as the registry knows me.
pub struct Me<'a> {
    pub member: &'a str,
    pub instance: &'a str,
}

pub fn decide(view: &View, me: &Me, local: &Local) -> Decision {
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
        _ if local.holding_off => d(Action::Wait, "heir, holding off after a failed child"),
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
    fn act(v: &View, who: &str, local: Local) -> Action {
        let (member, instance) = me(who);
        decide(
            v,
            &Me {
                member: &member,
                instance: &instance,
            },
            &local,
        )
        .action
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
    fn holding_off_heir_waits() {
        let v = view(vec![m("a", 1, true)], None);
        let l = Local {
            holding_off: true,
            ..Local::default()
        };
        assert_eq!(act(&v, "a", l), Action::Wait);
    }

    #[test]
    fn a_stale_lease_of_mine_is_retaken_with_a_new_epoch() {
        let v = view(vec![m("a", 1, true)], lease(Some("a"), 3, true));
        assert_eq!(act(&v, "a", Local::default()), Action::Acquire);
    }
}
