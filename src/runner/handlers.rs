//! Handlers (notified, then flushed after each section or on `meta: flush_handlers`) and the
//! other `meta` actions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{lock, PlayCtx, Runner};
use crate::playbook::Task;

impl Runner {
    pub(super) async fn run_meta(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        m: &str,
        active: &mut Vec<String>,
    ) {
        match m {
            "flush_handlers" => self.flush_handlers(ctx, active).await,
            "end_play" => {
                *lock(&ctx.ended) = true;
            }
            "end_host" => {
                // Ends the play for hosts where the task's condition holds.
                let mut ended = Vec::new();
                for h in active.iter() {
                    let scope = self.scope(ctx, h, Some(task), &Arc::new(HashMap::new()), None);
                    if self
                        .conditions_hold(&task.opts.when, &scope)
                        .unwrap_or(false)
                    {
                        ended.push(h.clone());
                    }
                }
                active.retain(|h| !ended.contains(h));
            }
            "clear_facts" => {
                for h in active.iter() {
                    lock(&self.state)
                        .entry(h.clone())
                        .or_default()
                        .facts
                        .clear();
                }
            }
            _ => {}
        }
    }

    pub(super) async fn flush_handlers(self: &Arc<Self>, ctx: &Arc<PlayCtx>, hosts: &[String]) {
        // Handlers may notify later handlers; bounded passes.
        for _ in 0..10 {
            let handlers = lock(&ctx.handlers).clone();
            // Decide every host's handlers before any runs: one notification can reach several
            // handlers (`listen`), and a handler notified twice runs once.
            let mut targets: Vec<Vec<String>> = vec![Vec::new(); handlers.len()];
            {
                let mut st = lock(&self.state);
                for host in hosts {
                    let s = st.entry(host.clone()).or_default();
                    if s.notified.is_empty() {
                        continue;
                    }
                    for (i, h) in handlers.iter().enumerate() {
                        if s.notified.iter().any(|n| h.answers_notify(n)) {
                            targets[i].push(host.clone());
                        }
                    }
                    s.notified.clear();
                }
            }
            if targets.iter().all(Vec::is_empty) {
                break;
            }
            let mut failed: HashSet<String> = HashSet::new();
            for (h, hosts_of) in handlers.iter().zip(targets) {
                let run_on: Vec<String> = hosts_of
                    .into_iter()
                    .filter(|x| !failed.contains(x))
                    .collect();
                if run_on.is_empty() {
                    continue;
                }
                failed.extend(
                    self.run_task_kind(
                        ctx,
                        h,
                        &run_on,
                        &Arc::new(HashMap::new()),
                        "RUNNING HANDLER",
                    )
                    .await,
                );
            }
        }
    }
}
