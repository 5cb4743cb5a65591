//! Background tasks: `async: SECONDS` with `poll: 0`, and `async_status`.
//!
//! ```yaml
//! - name: Build the venv while the next plays run
//!   command: uv pip sync --python /opt/app/venv/bin/python requirements.txt
//!   async: 900          # the job fails if it runs longer
//!   poll: 0             # do not wait: register the job id and go on
//!   register: venv_job
//! # ... other tasks and plays ...
//! - name: Wait for the venv
//!   async_status:
//!     jid: "{{ venv_job.ansible_job_id }}"
//!   register: venv_result
//!   until: venv_result.finished
//!   retries: 180
//!   delay: 2
//! ```
//! Ansible starts such a job as a detached process on the target; hfplay runs the task on the
//! controller in the background (its module reaches the host over the same multiplexed SSH
//! connection) while the playbook goes on. So a job lives as long as the hfplay run: one still
//! running when the playbook ends is abandoned (hfplay warns). `async_status` returns
//! `finished: 0` while the job runs, then the task's own result with `finished: 1`, counted
//! (changed, failed) on the `async_status` task, as in Ansible. `poll: N > 0` waits for the task
//! in place, failing it after `async` seconds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::task_result::{Status, TaskResult};

type JobResult = TaskResult;

enum Job {
    Running(JoinHandle<JobResult>),
    /// Boxed: a result is large beside a handle.
    Done(Box<JobResult>),
    /// Being collected by one `async_status` call (its handle was taken out).
    Collecting,
}

/// The run's background jobs, by job id.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<String, Job>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a task with `async` asks for, from its templated `async` / `poll` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncMode {
    /// `poll: 0`: start in the background, register the job id.
    Background(Duration),
    /// `poll: N > 0`: run in place within `async` seconds.
    Wait(Duration),
}

/// `async` and `poll` (templated values) → the mode; `None` when `async` is absent or 0.
pub fn async_mode(
    async_secs: Option<&Value>,
    poll: Option<&Value>,
) -> Result<Option<AsyncMode>, String> {
    let num = |v: &Value, what: &str| -> Result<u64, String> {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| format!("{what}: expected a number of seconds, got {v}"))
    };
    let Some(a) = async_secs else {
        return Ok(None);
    };
    let secs = num(a, "async")?;
    if secs == 0 {
        return Ok(None);
    }
    // Ansible's default poll is 15 (wait in place).
    let poll = poll.map(|p| num(p, "poll")).transpose()?.unwrap_or(15);
    let limit = Duration::from_secs(secs);
    Ok(Some(if poll == 0 {
        AsyncMode::Background(limit)
    } else {
        AsyncMode::Wait(limit)
    }))
}

/// The result of an attempt that ran out of its `async` time.
pub fn timed_out(limit: Duration) -> JobResult {
    TaskResult::failed(format!(
        "async task did not complete within the requested time - {}s",
        limit.as_secs()
    ))
}

impl Jobs {
    /// Starts `work` in the background for `host`, failed after `limit`; returns the job id and
    /// the result to register now.
    pub fn start<F>(&self, host: &str, limit: Duration, work: F) -> (String, TaskResult)
    where
        F: Future<Output = JobResult> + Send + 'static,
    {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let jid = format!("j{n}.{}", std::process::id());
        let handle = tokio::spawn(async move {
            tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| timed_out(limit))
        });
        lock(&self.jobs).insert(jid.clone(), Job::Running(handle));
        let registered = TaskResult::new(
            Status::Ok,
            json!({"ansible_job_id": jid, "started": 1, "finished": 0, "changed": false, "host": host}),
        );
        (jid, registered)
    }

    /// `async_status`: `None` for an unknown job id; else the result to report now.
    pub async fn status(&self, jid: &str) -> Option<JobResult> {
        let handle = {
            let mut jobs = lock(&self.jobs);
            match jobs.get(jid)? {
                Job::Done(r) => return Some(finished((**r).clone(), jid)),
                Job::Running(h) if h.is_finished() => {}
                Job::Running(_) | Job::Collecting => return Some(unfinished(jid)),
            }
            match jobs.insert(jid.to_string(), Job::Collecting) {
                Some(Job::Running(h)) => h,
                _ => return Some(unfinished(jid)),
            }
        };
        // Finished: awaiting the handle returns at once.
        let result = handle
            .await
            .unwrap_or_else(|e| TaskResult::failed(format!("async job {jid} crashed: {e}")));
        lock(&self.jobs).insert(jid.to_string(), Job::Done(Box::new(result.clone())));
        Some(finished(result, jid))
    }

    /// `async_status: mode=cleanup`: forgets the job (Ansible removes its results file).
    pub fn cleanup(&self, jid: &str) -> bool {
        lock(&self.jobs).remove(jid).is_some()
    }

    /// Job ids still running (warned about when the playbook ends).
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.jobs)
            .iter()
            .filter(|(_, j)| matches!(j, Job::Running(h) if !h.is_finished()))
            .map(|(k, _)| k.clone())
            .collect();
        ids.sort();
        ids
    }
}

/// `async_status` of a job still running.
fn unfinished(jid: &str) -> JobResult {
    TaskResult::new(
        Status::Ok,
        json!({"ansible_job_id": jid, "started": 1, "finished": 0, "changed": false}),
    )
}

/// `async_status` of a finished job: the task's own result plus the job fields (its delegated
/// host, diffs and ignore_errors go with it).
fn finished(mut res: JobResult, jid: &str) -> JobResult {
    res.value.insert("ansible_job_id".into(), json!(jid));
    res.value.insert("started".into(), json!(1));
    res.value.insert("finished".into(), json!(1));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(async_mode(None, None), Ok(None));
        assert_eq!(async_mode(Some(&json!(0)), Some(&json!(0))), Ok(None));
        assert_eq!(
            async_mode(Some(&json!(60)), Some(&json!(0))),
            Ok(Some(AsyncMode::Background(Duration::from_secs(60))))
        );
        assert_eq!(
            async_mode(Some(&json!("60")), None),
            Ok(Some(AsyncMode::Wait(Duration::from_secs(60))))
        );
        assert!(async_mode(Some(&json!("soon")), None).is_err());
        assert!(async_mode(Some(&json!(5)), Some(&json!("x"))).is_err());
    }

    #[tokio::test]
    async fn job_runs_in_the_background_and_reports_once_finished() {
        let jobs = Jobs::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (jid, reg) = jobs.start("h1", Duration::from_secs(30), async move {
            let _ = rx.await;
            TaskResult::new(Status::Changed, json!({"changed": true, "rc": 0}))
        });
        assert_eq!(reg.value["ansible_job_id"], json!(jid));
        assert_eq!(reg.value["finished"], json!(0));
        let r = jobs.status(&jid).await.expect("known job");
        assert_eq!(
            (r.value["finished"].clone(), r.status),
            (json!(0), Status::Ok)
        );
        assert_eq!(jobs.running(), vec![jid.clone()]);
        tx.send(()).expect("job waits");
        let r = loop {
            let r = jobs.status(&jid).await.expect("known job");
            if r.value["finished"] == json!(1) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(
            (r.value["rc"].clone(), r.value["changed"].clone(), r.status),
            (json!(0), json!(true), Status::Changed)
        );
        // asked again: the same result
        assert_eq!(
            jobs.status(&jid).await.map(|r| r.status),
            Some(Status::Changed)
        );
        assert!(jobs.running().is_empty());
        assert!(jobs.cleanup(&jid));
        assert!(jobs.status(&jid).await.is_none());
    }

    #[tokio::test]
    async fn job_over_its_time_fails() {
        let jobs = Jobs::default();
        let (jid, _) = jobs.start("h1", Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            TaskResult::new(Status::Ok, json!({}))
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = jobs.status(&jid).await.expect("known job");
        assert_eq!(r.status, Status::Failed);
        assert!(r.msg().contains("did not complete"), "{r:?}");
    }
}
