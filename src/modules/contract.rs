//! The native module contract: probe → plan → apply, with check mode owned by [`execute`].
//!
//! A module says what it observes ([`NativeModule::probe`], one round trip), what it would change
//! and what it would report ([`NativeModule::plan`], pure), and how to make the change
//! ([`NativeModule::apply`]). [`execute`] is the one place that decides whether to apply: never
//! when the plan is empty, never in check mode. So `--check` reports exactly what the plan
//! predicts (or what [`NativeModule::simulate`] refines it to), and a module cannot forget to
//! honour it.

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::{parse, Args, ModuleArgs, ModuleError, Outcome, TaskCtx};

/// What a plan decided: the changes to make (`None`: nothing to do) and the result to report
/// when nothing is applied (no changes, or check mode) — `changed`, diffs and `register` data.
#[derive(Debug)]
pub struct Planned<P> {
    pub changes: Option<P>,
    pub outcome: Outcome,
}

impl<P> Planned<P> {
    /// Nothing to change; `outcome` is the result (it may be a failure the plan found).
    pub fn nothing(outcome: Outcome) -> Self {
        Planned {
            changes: None,
            outcome,
        }
    }
    /// `changes` to apply; `outcome` is what check mode reports. The change may be a failure
    /// only the real run reports (copy's missing directory, file's missing link source, a
    /// missing systemd unit: check mode takes them as made by an earlier task of the run).
    pub fn change(changes: P, outcome: Outcome) -> Self {
        Planned {
            changes: Some(changes),
            outcome,
        }
    }
    /// [`Planned::change`] if `changed`, else [`Planned::nothing`] (`changes` then dropped): for
    /// plans whose changes are built either way and only sometimes needed.
    pub fn when(changed: bool, changes: P, outcome: Outcome) -> Self {
        Planned {
            changes: changed.then_some(changes),
            outcome,
        }
    }
}

#[async_trait]
pub trait NativeModule: Send + Sync {
    /// The typed arguments (serde, `deny_unknown_fields`); their names, accepted and required,
    /// come from the same type (`#[derive(ModuleArgs)]`).
    type Params: DeserializeOwned + ModuleArgs + Send + Sync;
    /// What the probe saw: plain data, so plans can be tested on recorded observations.
    type Observed: Send + Sync;
    /// The changes to make.
    type Plan: Send + Sync;
    /// The name in argument error messages.
    const NAME: &'static str;

    /// Actions a real run takes before probing whatever the plan turns out to be, that do not
    /// count as changes (systemd's `daemon_reload`). Not run in check mode. `Some(outcome)`
    /// ends the task with that outcome (a failure).
    async fn prepare(
        &self,
        _p: &Self::Params,
        _ctx: &TaskCtx<'_>,
    ) -> Result<Option<Outcome>, ModuleError> {
        Ok(None)
    }

    /// Reads the host's current state: one round trip, no changes.
    async fn probe(
        &self,
        p: &Self::Params,
        ctx: &TaskCtx<'_>,
    ) -> Result<Self::Observed, ModuleError>;

    /// Pure: from the arguments and what the probe saw to the changes and the predicted result.
    /// `diff` asks for file diffs in the outcome.
    fn plan(
        &self,
        p: &Self::Params,
        seen: &Self::Observed,
        diff: bool,
    ) -> Result<Planned<Self::Plan>, ModuleError>;

    /// Makes the planned changes; `predicted` is the plan's outcome, to report or refine.
    async fn apply(
        &self,
        p: &Self::Params,
        plan: Self::Plan,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError>;

    /// Check mode only, when the plan has changes: refines the prediction with a read-only
    /// dry run on the host. It exists because some predictions are only exact from the tool
    /// that would make the change (apt's resolver with `apt-get -s`, a `force`d download
    /// compared with the current file); without it such modules would need their own check
    /// branch. Must not change the host. Default: the plan's prediction.
    async fn simulate(
        &self,
        _p: &Self::Params,
        _plan: Self::Plan,
        predicted: Outcome,
        _ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        Ok(predicted)
    }
}

/// Runs a module under the contract: parse → prepare (real runs) → probe → plan → apply when
/// there is something to change and this is not check mode (simulate when it is).
pub async fn execute<M: NativeModule>(
    m: &M,
    args: &Args,
    ctx: &TaskCtx<'_>,
) -> Result<Outcome, ModuleError> {
    let p: M::Params = parse(M::NAME, args)?;
    if !ctx.check {
        if let Some(stop) = m.prepare(&p, ctx).await? {
            return Ok(stop);
        }
    }
    let seen = m.probe(&p, ctx).await?;
    let Planned { changes, outcome } = m.plan(&p, &seen, ctx.diff)?;
    match changes {
        None => Ok(outcome),
        Some(c) if ctx.check => m.simulate(&p, c, outcome, ctx).await,
        Some(c) => m.apply(&p, c, outcome, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde::Deserialize;

    use super::*;
    use crate::modules::testutil;

    /// Counts which steps the driver ran.
    #[derive(Default)]
    struct Probe {
        applied: AtomicUsize,
        simulated: AtomicUsize,
    }

    #[derive(Deserialize, ModuleArgs)]
    struct P {
        change: bool,
    }

    #[async_trait]
    impl NativeModule for Probe {
        type Params = P;
        type Observed = ();
        type Plan = ();
        const NAME: &'static str = "probe";
        async fn probe(&self, _p: &P, _ctx: &TaskCtx<'_>) -> Result<(), ModuleError> {
            Ok(())
        }
        fn plan(&self, p: &P, _seen: &(), _diff: bool) -> Result<Planned<()>, ModuleError> {
            Ok(Planned::when(p.change, (), Outcome::changed(p.change)))
        }
        async fn apply(
            &self,
            _p: &P,
            _plan: (),
            predicted: Outcome,
            _ctx: &TaskCtx<'_>,
        ) -> Result<Outcome, ModuleError> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(predicted)
        }
        async fn simulate(
            &self,
            _p: &P,
            _plan: (),
            predicted: Outcome,
            _ctx: &TaskCtx<'_>,
        ) -> Result<Outcome, ModuleError> {
            self.simulated.fetch_add(1, Ordering::SeqCst);
            Ok(predicted)
        }
    }

    #[tokio::test]
    async fn driver_applies_for_real_and_simulates_in_check_mode() {
        let env = testutil::Env {
            dir: std::env::temp_dir(),
        };
        let conn = testutil::local().await;
        let m = Probe::default();
        let args = |change: bool| -> Args {
            serde_json::from_value(serde_json::json!({ "change": change })).unwrap()
        };
        for (change, check) in [(true, true), (true, false), (false, true), (false, false)] {
            let o = execute(&m, &args(change), &testutil::ctx(&conn, &env, check))
                .await
                .unwrap();
            assert_eq!(o.changed, change);
        }
        assert_eq!(m.applied.load(Ordering::SeqCst), 1);
        assert_eq!(m.simulated.load(Ordering::SeqCst), 1);
    }
}
