//! The supervisor loop of `heir-supervisor run`.
//!
//! Each cycle, every `interval` (or at once when another member NOTIFYs a change):
//! 1. **clock** — `rules::decide_on_clock`: if I lead and my local deadline passed, the child is
//!    stopped (the guard does it on its own too, even when this process is frozen); a dead warm
//!    standby child is started again;
//! 2. **observe** — check in (register again if my row lapsed; not while holding off after a
//!    failed child), read members and lease;
//! 3. **decide** — `rules::decide`, a pure function, with its reason logged when it changes;
//! 4. **act** — renew / acquire / fence / stop the child / leave, each a conditional statement
//!    that the database can refuse; then the decided wake-up and purge.
//!
//! When the child ends or cannot start, `rules::decide_on_exit` decides the step-down and the
//! back-off (1 s doubling to 60 s while it keeps failing). Every database call goes through
//! `db()`, bounded by ttl - margin (connect included), so a silent database cannot stall the loop.
//!
//! The deadline: a renewal (or acquisition) *sent* at local monotonic time `t` makes the lease
//! valid in the database until at least `t + ttl` on its clock, since the statement executes
//! after it was sent. The child may run until `t + ttl - margin`; the margin covers the
//! TERM→KILL escalation and clock-rate differences.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::child::{Guard, GuardEvent, GuardSpec};
use crate::clock::{dur_ns, mono_ns, until};
use crate::news::{Event, News};
use crate::registry::{CheckIn, Identity, Registry, View};
use crate::rules::{
    decide, decide_on_clock, decide_on_exit, Action, Clock, Local, Me, PURGE_EVERY,
};

/// Everything `run` needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub group: String,
    pub member: String,
    pub dsn: String,
    pub ttl: Duration,
    pub interval: Duration,
    pub margin: Duration,
    pub fence_grace: Duration,
    pub stop_timeout: Duration,
    pub hold_off: Duration,
    pub warm: bool,
    /// Start the command as this account (checked: the supervisor is root, the account is not).
    pub run_as: Option<crate::account::Account>,
    pub command: Vec<OsString>,
    /// Where the news go and the key that signs them.
    pub news: crate::news::NewsArgs,
}

impl RunConfig {
    /// The timing rules that make fencing sound.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl < Duration::from_millis(500) {
            return Err("--ttl must be at least 0.5 s".into());
        }
        if self.margin >= self.ttl {
            return Err("--margin must be smaller than --ttl".into());
        }
        if self.fence_grace >= self.margin {
            return Err("--fence-grace must be smaller than --margin".into());
        }
        if self.interval.is_zero() || self.interval * 2 > self.ttl - self.margin {
            return Err(format!(
                "--interval ({:?}) must be at most half of ttl - margin ({:?}), \
                 so that one missed renewal does not fence the leader",
                self.interval,
                self.ttl - self.margin
            ));
        }
        if self.command.is_empty() {
            return Err("missing the command to supervise (after --)".into());
        }
        Ok(())
    }
}

struct Supervisor {
    cfg: RunConfig,
    me: Identity,
    reg: Registry,
    news: News,
    guard: Guard,
    local: Local,
    /// The deadline and the timers the rules read (`now_ns` is set at each decision).
    clock: Clock,
    child_pid: Option<i32>,
    /// When the current child started (guard's CLOCK_MONOTONIC), to tell a crash loop.
    child_started_ns: Option<u64>,
    stop_sent: bool,
    was_heir: bool,
    db_down_since: Option<Instant>,
    last_reason: String,
    /// Heir waiting for a lease held by someone else: look again right when it lapses.
    wake_at_ns: Option<u64>,
}

/// Run the supervisor until SIGTERM/SIGINT; returns the process exit code.
pub async fn run(cfg: RunConfig) -> Result<i32> {
    let host = crate::hostname();
    let pid = std::process::id();
    let me = Identity {
        group: cfg.group.clone(),
        member: cfg.member.clone(),
        instance: format!("{host}:{pid}:{}", mono_ns()),
        host: host.clone(),
        pid: pid as i32,
        ttl: cfg.ttl,
    };
    let (notify_tx, mut notify_rx) = mpsc::unbounded_channel();
    let reg = Registry::new(&cfg.dsn, Some(notify_tx))?;
    let news = News::from_args(&cfg.news)?;
    let spec = GuardSpec {
        command: cfg.command.clone(),
        warm: cfg.warm,
        fence_grace: cfg.fence_grace,
        env: vec![
            ("HEIR_GROUP".into(), cfg.group.clone()),
            ("HEIR_MEMBER".into(), cfg.member.clone()),
        ],
        run_as: cfg.run_as.as_ref().map(|a| a.name.clone()),
    };
    let (guard, mut guard_rx) = Guard::start(&spec)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    crate::log::info(&format!(
        "member {} of group {}: ttl {:?}, interval {:?}, margin {:?}{}",
        me.member,
        me.group,
        cfg.ttl,
        cfg.interval,
        cfg.margin,
        if cfg.warm { ", warm standby" } else { "" }
    ));
    let mut s = Supervisor {
        me,
        reg,
        news,
        guard,
        local: Local::default(),
        clock: Clock {
            respawn_at_ns: cfg.warm.then(mono_ns),
            purge_at_ns: mono_ns() + dur_ns(PURGE_EVERY),
            interval: cfg.interval,
            ..Clock::default()
        },
        child_pid: None,
        child_started_ns: None,
        stop_sent: false,
        was_heir: false,
        db_down_since: None,
        last_reason: String::new(),
        wake_at_ns: None,
        cfg,
    };

    let mut tick = tokio::time::interval(s.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let code = loop {
        // The next timer: my lease's local deadline, or the decided wake-up at a lapse.
        let timer_in = [s.clock.deadline_ns, s.wake_at_ns]
            .into_iter()
            .flatten()
            .map(until)
            .min()
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = tick.tick() => {}
            Some(group) = notify_rx.recv() => {
                if group != s.me.group { continue; }
            }
            ev = guard_rx.recv() => {
                match ev {
                    Some(ev) => s.on_guard(ev).await?,
                    None => return Err(anyhow::anyhow!("guard reports ended")),
                }
            }
            _ = sigterm.recv() => s.on_signal("SIGTERM").await,
            _ = sigint.recv() => s.on_signal("SIGINT").await,
            _ = tokio::time::sleep(timer_in) => {}
        }
        if let Some(code) = s.cycle().await? {
            break code;
        }
    };
    s.news.flush(Duration::from_secs(3)).await;
    s.guard.shutdown(Duration::from_secs(3)).await;
    Ok(code)
}

impl Supervisor {
    fn event(&self, kind: &str, reason: impl Into<String>) -> Event {
        Event {
            kind: kind.to_string(),
            group: self.me.group.clone(),
            member: self.me.member.clone(),
            host: self.me.host.clone(),
            pid: std::process::id(),
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            epoch: self.local.leading,
            child_pid: self.child_pid,
            reason: reason.into(),
            dropped_before: 0,
        }
    }

    fn say(&self, kind: &str, reason: impl Into<String>) {
        self.news.publish(self.event(kind, reason));
    }

    async fn on_signal(&mut self, name: &str) {
        if self.local.shutting_down {
            crate::log::warn(&format!("second {name}: killing the child now"));
            let _ = self.guard.kill().await;
            return;
        }
        crate::log::info(&format!("{name}: handing over"));
        self.local.shutting_down = true;
        // Stop the child now, without waiting for the database: the lease is renewed meanwhile
        // when possible, and released once the child is gone.
        if self.local.leading.is_some() && self.local.child_alive && !self.stop_sent {
            self.stop_sent = true;
            if let Err(e) = self.guard.stop(self.cfg.stop_timeout).await {
                crate::log::error(&format!("{e:#}"));
            }
        }
    }

    /// Fence: tell the guard, and signal the child's group directly as well, in case the guard
    /// itself is stuck. `hard`: the lease is already lost, SIGKILL at once; otherwise SIGTERM
    /// and SIGKILL after the fence grace (the lease is still ours for `margin`).
    async fn fence(&mut self, reason: String, hard: bool) {
        self.say("fenced", reason);
        self.local.child_stopping = self.local.child_alive;
        let pgid = self.guard.child_pgid;
        if hard {
            let _ = self.guard.kill().await;
            if let Some(p) = pgid {
                crate::child::kill_group(p, libc::SIGKILL);
            }
        } else {
            let _ = self.guard.stop(self.cfg.fence_grace).await;
            if let Some(p) = pgid {
                crate::child::kill_group(p, libc::SIGTERM);
                let grace = self.cfg.fence_grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    crate::child::kill_group(p, libc::SIGKILL);
                });
            }
        }
        self.lose_lease();
    }

    async fn on_guard(&mut self, ev: GuardEvent) -> Result<()> {
        match ev {
            GuardEvent::Started { pid, at_ns } => {
                self.child_pid = Some(pid);
                self.child_started_ns = Some(at_ns);
                self.guard.child_pgid = Some(pid);
                self.local.child_alive = true;
                let what = match self.local.leading {
                    Some(e) => format!("child running as leader of epoch {e}"),
                    None => "warm standby child started".to_string(),
                };
                self.say("child_started", what);
            }
            GuardEvent::Fenced { pid, .. } => {
                self.local.child_stopping = true;
                if self.local.leading.is_some() {
                    self.say(
                        "fenced",
                        format!("lease not renewed before the deadline: guard stopping pid {pid}"),
                    );
                    self.lose_lease();
                }
            }
            GuardEvent::Exited { pid, how, at_ns } => {
                let ran = self.child_started_ns.take().map_or(Duration::ZERO, |t| {
                    Duration::from_nanos(at_ns.saturating_sub(t))
                });
                self.child_ended(Some(ran), format!("pid {pid} exited ({how})"))
                    .await;
            }
            GuardEvent::StartFailed { error, .. } => self.child_ended(None, error).await,
            GuardEvent::GuardLost(why) => {
                return Err(anyhow::anyhow!("the guard process is gone: {why}"));
            }
        }
        Ok(())
    }

    /// The child is gone (or never started): one event with the OS error or exit status and
    /// what `decide_on_exit` made of it, then its effects.
    async fn child_ended(&mut self, ran: Option<Duration>, what: String) {
        let d = decide_on_exit(&self.local, ran, self.cfg.hold_off, self.cfg.warm);
        self.local.child_alive = false;
        self.child_pid = None;
        self.guard.child_pgid = None;
        self.stop_sent = false;
        self.local.child_stopping = false;
        self.local.failed_starts = d.failed_starts;
        let kind = if ran.is_none() {
            "child_failed"
        } else {
            "child_stopped"
        };
        self.say(kind, format!("{what}: {}", d.reason));
        if d.step_down {
            // Give the next heir its chance at once and leave the line (rejoining at the back
            // after the hold-off; a lone member thus restarts its child).
            if let Err(e) = self.db(|r, me| Box::pin(r.release(me, true))).await {
                crate::log::warn(&format!("releasing after the child ended: {e:#}"));
            }
            if self.local.leading.is_some() {
                self.say("released", "child ended while leading: stepped down");
            }
            self.lose_lease();
        }
        if let Some(h) = d.hold_off {
            self.clock.hold_off_until_ns = Some(mono_ns() + dur_ns(h));
        }
        if let Some(r) = d.respawn_in {
            self.clock.respawn_at_ns = Some(mono_ns() + dur_ns(r));
        }
    }

    fn lose_lease(&mut self) {
        self.local.leading = None;
        self.clock.deadline_ns = None;
    }

    /// Run one registry operation with the cycle's timeout; a failure drops the connection.
    async fn db<T>(
        &mut self,
        op: impl for<'a> FnOnce(
            &'a mut Registry,
            &'a Identity,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>,
        >,
    ) -> Result<T> {
        let limit = self.cfg.ttl - self.cfg.margin;
        let res = tokio::time::timeout(limit, op(&mut self.reg, &self.me)).await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("database did not answer within {limit:?}")),
        };
        if res.is_err() {
            self.reg.reset();
        }
        res
    }

    /// One observe → decide → act cycle. `Some(code)`: the supervisor is done.
    async fn cycle(&mut self) -> Result<Option<i32>> {
        // 1. the local clock: not a database round trip before the deadline fence
        self.wake_at_ns = None; // one wake-up per decision, even if the database fails now
        self.clock.now_ns = mono_ns();
        let on_clock = decide_on_clock(&self.local, &self.clock);
        if let Some(reason) = on_clock.fence {
            // Soft: the lease is still ours for `margin`.
            self.fence(reason, false).await;
        }
        if on_clock.respawn_standby {
            self.clock.respawn_at_ns = None;
            self.guard.spawn_standby().await?;
        }

        // 2. observe (holding off: out of line, so only look)
        let check_in = on_clock.check_in;
        let observed = self
            .db(|r, me| {
                Box::pin(async move {
                    let c = if check_in {
                        Some(r.check_in(me).await?)
                    } else {
                        None
                    };
                    let v = r.view(&me.group).await?;
                    Ok((c, v))
                })
            })
            .await;
        let (checkin, view) = match observed {
            Ok(x) => {
                if let Some(since) = self.db_down_since.take() {
                    self.say(
                        "db_reachable",
                        format!(
                            "database answers again after {:.1}s",
                            since.elapsed().as_secs_f64()
                        ),
                    );
                }
                x
            }
            Err(e) => {
                if self.db_down_since.is_none() {
                    self.db_down_since = Some(Instant::now());
                    self.say("db_unreachable", format!("{e:#}"));
                }
                // Shutting down without a lease or child: our row lapses by itself.
                if self.local.shutting_down
                    && self.local.leading.is_none()
                    && !self.local.child_alive
                {
                    return Ok(Some(0));
                }
                return Ok(None);
            }
        };
        match checkin {
            Some(CheckIn::Registered(seq)) => {
                self.say("joined", format!("registered in line with seq {seq}"));
            }
            Some(CheckIn::NameTaken) => {
                self.note(format!(
                    "member name {} is held by another live instance; waiting for it to lapse",
                    self.me.member
                ));
            }
            Some(CheckIn::Alive(_)) | None => {}
        }
        self.track_heir(&view);

        // 3. decide
        let me = Me {
            member: &self.me.member,
            instance: &self.me.instance,
        };
        self.clock.now_ns = mono_ns();
        let decision = decide(&view, &me, &self.local, &self.clock);
        self.note(decision.reason.clone());

        // 4. act
        self.wake_at_ns = decision.wake_in.map(|d| mono_ns() + dur_ns(d));
        match decision.action {
            Action::Wait => {}
            Action::Renew(epoch) => self.renew(epoch).await,
            Action::Acquire => self.acquire().await?,
            Action::Fence => self.fence(decision.reason, true).await,
            Action::StopChild(epoch) => {
                self.renew(epoch).await;
                if !self.stop_sent {
                    self.stop_sent = true;
                    self.guard.stop(self.cfg.stop_timeout).await?;
                }
            }
            Action::Leave => {
                let _ = self.guard.kill().await;
                let res = self.db(|r, me| Box::pin(r.release(me, true))).await;
                match res {
                    Ok(()) => self.say("left", "released the lease and deregistered"),
                    Err(e) => self.say(
                        "left",
                        format!("could not deregister ({e:#}): the row lapses"),
                    ),
                }
                self.lose_lease();
                return Ok(Some(0));
            }
        }
        // Decided for a leader; a renewal or acquisition the database refused means I am not one.
        if decision.purge && self.local.leading.is_some() {
            self.clock.purge_at_ns = mono_ns() + dur_ns(PURGE_EVERY);
            let _ = self
                .db(|r, me| Box::pin(r.purge(&me.group, Duration::from_secs(600))))
                .await;
        }
        Ok(None)
    }

    async fn renew(&mut self, epoch: i64) {
        let sent = mono_ns();
        match self.db(|r, me| Box::pin(r.renew(me, epoch))).await {
            Ok(true) => {
                let deadline = sent + dur_ns(self.cfg.ttl - self.cfg.margin);
                self.clock.deadline_ns = Some(deadline);
                if let Err(e) = self.guard.renew(deadline).await {
                    crate::log::error(&format!("{e:#}"));
                }
            }
            Ok(false) => {
                self.fence(format!("lease of epoch {epoch} could not be renewed"), true)
                    .await
            }
            Err(e) => self.note(format!("renewal failed (deadline unchanged): {e:#}")),
        }
    }

    async fn acquire(&mut self) -> Result<()> {
        let sent = mono_ns();
        match self.db(|r, me| Box::pin(r.acquire(me))).await {
            Ok(Some(epoch)) => {
                let deadline = sent + dur_ns(self.cfg.ttl - self.cfg.margin);
                self.local.leading = Some(epoch);
                self.clock.deadline_ns = Some(deadline);
                self.say("leader", format!("took the lease: epoch {epoch}"));
                self.guard.lead(epoch, deadline).await?;
            }
            Ok(None) => self.note("lease acquisition refused by the database".into()),
            Err(e) => self.note(format!("acquisition failed: {e:#}")),
        }
        Ok(())
    }

    fn track_heir(&mut self, view: &View) {
        let is_heir = view
            .heir()
            .is_some_and(|h| h.member == self.me.member && h.instance == self.me.instance);
        if is_heir && !self.was_heir {
            self.say("heir", "first in the line of succession");
        }
        self.was_heir = is_heir;
    }

    /// Log a decision's reason when it changes (not every cycle).
    fn note(&mut self, reason: String) {
        // Compare without the numbers ("for 1.3s more"), so a steady state logs once.
        let key: String = reason
            .chars()
            .filter(|c| !c.is_ascii_digit() && *c != '.')
            .collect();
        if key != self.last_reason {
            crate::log::info(&reason);
            self.last_reason = key;
        }
    }
}
