//! The succession rules, as pure functions of what one cycle observed.
//!
//! Two decisions per cycle, and one per child exit, all here so that every effect of the loop is
//! a unit-tested rule:
//! * `decide_on_clock(local, clock)`, before the database is asked: the local-deadline fence,
//!   the warm standby's respawn, and whether to check in at all (not while holding off);
//! * `decide(view, me, local, clock)`, after it answered: renew / acquire / fence / stop /
//!   leave, the heir's wake-up at the lease's lapse, the leader's purge;
//! * `decide_on_exit(local, ran, hold_off, warm)`, when the child ended or could not start:
//!   step down, and the exponential back-off of a command that keeps failing.
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
/// A child that ends sooner than this (unasked) failed to start; one that ran this long resets
/// the count of failed starts.
pub const STABLE_RUN: Duration = Duration::from_secs(60);
/// The back-off after the first failed start; it doubles with each further one, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

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
    /// Consecutive failed starts (could not exec, or ended before `STABLE_RUN`).
    pub failed_starts: u32,
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

    fn holding_off(&self) -> bool {
        self.hold_off_until_ns.is_some_and(|t| self.now_ns < t)
    }
}

/// What the local clock alone decides, before the database is asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClockDecision {
    /// The local deadline passed: stop the child (SIGTERM, SIGKILL after the fence grace).
    pub fence: Option<String>,
    /// Start the warm standby child again.
    pub respawn_standby: bool,
    /// Check in this cycle. Not while holding off after a failed child: a member that is in
    /// line but not eligible would, as the heir, keep every younger member waiting.
    pub check_in: bool,
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
        check_in: local.leading.is_some() || !clock.holding_off(),
        fence,
    }
}

/// `n` ≥ 1 failed starts in a row: 1 s, 2 s, 4 s … up to `BACKOFF_CAP`.
pub fn backoff(n: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(BACKOFF_CAP)
}

/// What to do when the child ended (`ran`: how long it ran) or could not start (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitDecision {
    /// Release the lease (if held) and leave the line, so the next heir (whose command may
    /// work) takes over at once instead of waiting for a lapse.
    pub step_down: bool,
    /// `Local::failed_starts` from now on.
    pub failed_starts: u32,
    /// Stand aside (not in line, not eligible) this long.
    pub hold_off: Option<Duration>,
    /// Start the warm standby child again after this.
    pub respawn_in: Option<Duration>,
    pub reason: String,
}

/// A leader never keeps the lease across a failed start: it steps down at once, every time, and
/// stands aside for the back-off, so a member whose command works leads meanwhile, and a lone
/// member retries at 1 s, 2 s, 4 s … 60 s rather than every hold-off.
pub fn decide_on_exit(
    local: &Local,
    ran: Option<Duration>,
    hold_off: Duration,
    warm: bool,
) -> ExitDecision {
    if local.shutting_down {
        return ExitDecision {
            step_down: false,
            failed_starts: local.failed_starts,
            hold_off: None,
            respawn_in: None,
            reason: "stopped for the shutdown".into(),
        };
    }
    let leading = local.leading.is_some();
    // A child we stopped (fence) did not fail; one that could not start always did.
    let failed = ran.is_none_or(|r| !local.child_stopping && r < STABLE_RUN);
    let base = if ran.is_some_and(|r| r >= STABLE_RUN) {
        0
    } else {
        local.failed_starts
    };
    let failed_starts = if failed { base + 1 } else { base };
    let wait = failed.then(|| backoff(failed_starts));
    let hold = match (wait, leading) {
        (Some(w), true) => Some(w.max(hold_off)),
        (Some(w), false) => Some(w),
        (None, true) => Some(hold_off),
        (None, false) => None,
    };
    let mut reason = match ran {
        None => format!("could not start (failure {failed_starts} in a row)"),
        Some(r) if failed => format!(
            "ended after {:.1}s (failure {failed_starts} in a row)",
            r.as_secs_f64()
        ),
        Some(r) => format!("ended after {:.1}s", r.as_secs_f64()),
    };
    // Holding off means out of line (see `ClockDecision::check_in`): leave it now rather than
    // block the line until my row lapses.
    let step_down = leading || hold.is_some();
    if leading {
        reason.push_str("; stepping down");
    }
    if let Some(h) = hold {
        reason.push_str(&format!("; standing aside for {:.0}s", h.as_secs_f64()));
    }
    ExitDecision {
        step_down,
        failed_starts,
        hold_off: hold,
        respawn_in: warm.then(|| wait.unwrap_or(Duration::from_secs(1))),
        reason,
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
    if let Some(t) = clock.hold_off_until_ns.filter(|_| clock.holding_off()) {
        return d(
            Action::Wait,
            format!(
                "holding off after a failed child: {:.1}s more, out of line",
                (t - clock.now_ns) as f64 / 1e9
            ),
        );
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
        _ if local.child_stopping => d(Action::Wait, "heir, waiting for my old child to exit"),
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
mod tests;
