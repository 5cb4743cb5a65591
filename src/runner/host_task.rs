//! One task on its hosts: the parallel fan-out, loops, conditions, retries and `until`, task
//! timeouts, async jobs, and the become/environment settings a module runs with.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::results::{fixed_of, located, short_json, value_label};
use super::{lock, IncludeVars, PlayCtx, Runner};
use crate::connection::Become;
use crate::jobs::{async_mode, AsyncMode};
use crate::lookups::first_found::{self, SearchPath};
use crate::playbook::{Action, Loop, Task};
use crate::task_result::{Status, TaskResult};
use crate::template::Scope;
use crate::words::to_bool;

impl Runner {
    pub(super) fn conditions_hold(
        &self,
        conds: &[Value],
        scope: &Arc<Scope>,
    ) -> Result<bool, String> {
        for c in conds {
            let ok = match c {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_i64() != Some(0),
                Value::String(s) => self
                    .templar
                    .eval_bool(s, scope)
                    .map_err(|e| format!("error while evaluating conditional ({s}): {e}"))?,
                _ => false,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn loop_items(
        &self,
        task: &Task,
        scope: &Arc<Scope>,
    ) -> Result<Option<Vec<Value>>, String> {
        let items = match &task.opts.loop_items {
            None => return Ok(None),
            Some(Loop::FirstFound(terms)) => {
                return self.first_found_items(task, terms, scope).map(Some)
            }
            Some(Loop::Items(items)) => items,
        };
        let v = self
            .templar
            .template_value(items, scope)
            .map_err(|e| format!("loop: {e}"))?;
        match v {
            Value::Array(a) => Ok(Some(a)),
            Value::Null => Ok(Some(vec![])),
            Value::String(s) if s.is_empty() => Ok(Some(vec![])),
            other => Err(format!("loop needs a list, got {}", short_json(&other))),
        }
    }

    /// `with_first_found`: the first existing file of the terms, searched in the subdirectory
    /// of the task's kind along its search path, then the playbook directory. As in Ansible the
    /// terms are templated leniently: a candidate naming an undefined variable is passed over.
    fn first_found_items(
        &self,
        task: &Task,
        terms: &Value,
        scope: &Arc<Scope>,
    ) -> Result<Vec<Value>, String> {
        let terms = match self.template_lenient(terms, scope) {
            Value::Array(a) => a,
            other => vec![other],
        };
        let search = SearchPath {
            subdir: first_found::subdir_for_action(task.action.name()).into(),
            stack: first_found::task_search_path(
                task.role.as_deref().map(|r| r.path.as_path()),
                task.loc.path(),
            ),
            basedir: self.pb.dir.clone(),
        };
        let render = |s: &str| -> Option<String> {
            if !crate::template::is_template(s) {
                return Some(s.to_string());
            }
            match self.templar.template_value(&json!(s), scope) {
                Ok(Value::String(s)) => Some(s),
                _ => None,
            }
        };
        first_found::first_found(&terms, &Default::default(), &search, render)
            .map(|found| {
                found
                    .into_iter()
                    .map(|p| json!(p.to_string_lossy()))
                    .collect()
            })
            .map_err(|e| format!("with_first_found: {e}"))
    }

    /// Every string inside `v` templated where it can be; one that cannot (an undefined
    /// variable) is kept as written.
    fn template_lenient(&self, v: &Value, scope: &Arc<Scope>) -> Value {
        match v {
            Value::String(s) if crate::template::is_template(s) => self
                .templar
                .template_value(v, scope)
                .unwrap_or_else(|_| Value::String(s.clone())),
            Value::Array(a) => {
                Value::Array(a.iter().map(|i| self.template_lenient(i, scope)).collect())
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, i)| (k.clone(), self.template_lenient(i, scope)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Runs a simple task on all hosts in parallel; returns hosts that failed.
    pub(super) async fn run_task(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
    ) -> HashSet<String> {
        self.run_task_kind(ctx, task, hosts, inc, "TASK").await
    }

    pub(super) async fn run_task_kind(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
        kind: &str,
    ) -> HashSet<String> {
        let title = self.task_title(ctx, task, hosts, inc);
        self.reporter.task_start(kind, &title);
        let run_hosts: Vec<String> = if task.opts.run_once {
            hosts.iter().take(1).cloned().collect()
        } else {
            hosts.to_vec()
        };
        // throttle: a limit of this task's own, on top of the forks every task shares.
        let throttle = task
            .opts
            .throttle
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        let futures = run_hosts.iter().map(|h| {
            let throttle = throttle.clone();
            let this = self.clone();
            let ctx = ctx.clone();
            let inc = inc.clone();
            let h = h.clone();
            let title = title.clone();
            async move {
                let _own = match &throttle {
                    Some(t) => Some(t.acquire().await),
                    None => None,
                };
                let _permit = this.sem.acquire().await;
                this.reporter.host_busy(&h, &title);
                let r = this.run_on_host(&ctx, task, &h, &inc).await;
                this.reporter.host_idle(&h);
                (h, r)
            }
        });
        let mut all = std::pin::pin!(futures::future::join_all(futures));
        let every = Duration::from_secs(60);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let results = loop {
            tokio::select! {
                r = &mut all => break r,
                _ = tick.tick() => self.reporter.still_running(&title),
            }
        };
        let mut failed = HashSet::new();
        for (h, (registered, host_failed)) in results {
            if host_failed {
                failed.insert(h.clone());
            }
            // run_once: the one result applies to every host of the batch.
            if task.opts.run_once {
                if let (Some(name), Some(reg)) = (&task.opts.register, &registered) {
                    let reg = reg.registered();
                    for other in hosts {
                        lock(&self.state)
                            .entry(other.clone())
                            .or_default()
                            .host_facts
                            .insert(name.clone(), reg.clone());
                    }
                }
                if host_failed {
                    failed.extend(hosts.iter().cloned());
                }
            }
        }
        failed
    }

    /// The task's name for banners, templated like Ansible with the first host's variables
    /// (`Install PostgreSQL {{ postgres_version }}`); the raw name when that fails.
    fn task_title(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        hosts: &[String],
        inc: &IncludeVars,
    ) -> String {
        let raw = task.display_name();
        let Some(first) = hosts.first() else {
            return raw;
        };
        if !raw.contains("{{") {
            return raw;
        }
        let scope = self.scope(ctx, first, Some(task), inc, None);
        match self.templar.template_value(&json!(raw), &scope) {
            Ok(Value::String(s)) => s,
            Ok(other) => value_label(&other),
            Err(_) => raw,
        }
    }

    /// One task on one host (all loop items). Returns (its result, failed?).
    async fn run_on_host(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        inc: &IncludeVars,
    ) -> (Option<TaskResult>, bool) {
        let scope = self.scope(ctx, host, Some(task), inc, None);
        let fail_now = |this: &Arc<Self>, msg: String| -> (Option<TaskResult>, bool) {
            this.fail_host(host, task, &msg);
            (None, true)
        };
        let items = match self.loop_items(task, &scope) {
            Ok(i) => i,
            Err(e) => return fail_now(self, e),
        };
        let no_log = match &task.opts.no_log {
            Some(v) => match self.templar.template_value(v, &scope) {
                Ok(v) => to_bool(&v).unwrap_or(false),
                Err(e) => return fail_now(self, e),
            },
            None => false,
        };
        let mode = match self.async_mode(task, &scope) {
            Ok(m) => m,
            Err(e) => return fail_now(self, e),
        };
        if let Some(AsyncMode::Background(limit)) = mode {
            if items.is_some() {
                return fail_now(self, "async with poll: 0 in a loop is not supported".into());
            }
            return self.start_job(ctx, task, host, &scope, limit, no_log).await;
        }
        let loop_var = task.opts.loop_var.clone().unwrap_or_else(|| "item".into());
        let Some(items) = items else {
            let res = self.run_item(ctx, task, host, &scope, None, no_log).await;
            let failed = self.account(host, task, &res, false, no_log, ctx);
            return (Some(res), failed);
        };
        let mut results = Vec::new();
        let total = items.len();
        let pause = match self.loop_pause(task, &scope) {
            Ok(p) => p,
            Err(e) => return fail_now(self, e),
        };
        for (i, item) in items.into_iter().enumerate() {
            // As Ansible: before every item but the first.
            if i > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let mut extra = Map::new();
            extra.insert(loop_var.clone(), item.clone());
            extra.insert("ansible_loop_var".into(), json!(loop_var));
            extra.insert("ansible_loop".into(), json!({"index": i + 1, "index0": i, "first": i == 0, "last": i + 1 == total, "length": total}));
            if let Some(iv) = &task.opts.index_var {
                extra.insert(iv.clone(), json!(i));
            }
            let iscope = self.scope(ctx, host, Some(task), inc, Some(&extra));
            let label = match &task.opts.loop_label {
                Some(l) => self
                    .templar
                    .template_value(&json!(l), &iscope)
                    .map(|v| value_label(&v))
                    .unwrap_or_else(|_| value_label(&item)),
                None => value_label(&item),
            };
            let mut res = self
                .run_item(ctx, task, host, &iscope, Some(label.clone()), no_log)
                .await;
            // set_fact in a loop: each item sees the facts set by the previous ones.
            if let Some(facts) = res.set_facts.take() {
                let mut st = lock(&self.state);
                let hs = st.entry(host.to_string()).or_default();
                hs.host_facts.extend(facts);
            }
            self.report_item(host, &res, Some(label), no_log);
            // Registered items carry their loop variable; reported ones do not (as before).
            res.value.insert(loop_var.clone(), item);
            res.value.insert("ansible_loop_var".into(), json!(loop_var));
            let unreachable = res.status == Status::Unreachable;
            results.push(res);
            if unreachable {
                break;
            }
        }
        let agg = TaskResult::of_loop(results);
        let failed = self.account(host, task, &agg, true, no_log, ctx);
        (Some(agg), failed)
    }

    /// `loop_control.pause`, templated: a number of seconds (fractions allowed), else an error.
    fn loop_pause(&self, task: &Task, scope: &Arc<Scope>) -> Result<Duration, String> {
        let Some(p) = &task.opts.loop_pause else {
            return Ok(Duration::ZERO);
        };
        let v = self.templar.template_value(p, scope)?;
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("loop_control.pause: expected a number of seconds, got {v}"))
    }

    /// The task's `async` / `poll`, templated.
    fn async_mode(&self, task: &Task, scope: &Arc<Scope>) -> Result<Option<AsyncMode>, String> {
        let Some(a) = &task.opts.async_ else {
            return Ok(None);
        };
        let a = self.templar.template_value(a, scope)?;
        let p = match &task.opts.poll {
            Some(p) => Some(self.templar.template_value(p, scope)?),
            None => None,
        };
        async_mode(Some(&a), p.as_ref())
    }

    /// `async` + `poll: 0` on one host: unless `when` skips it, the task runs in the background
    /// and the job id is registered now (see src/jobs.rs).
    async fn start_job(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
        limit: Duration,
        no_log: bool,
    ) -> (Option<TaskResult>, bool) {
        match self.conditions_hold(&task.opts.when, scope) {
            Ok(true) => {}
            Ok(false) => {
                let res = self.run_item(ctx, task, host, scope, None, no_log).await;
                let failed = self.account(host, task, &res, false, no_log, ctx);
                return (Some(res), failed);
            }
            Err(e) => {
                self.fail_host(host, task, &e);
                return (None, true);
            }
        }
        let work = {
            let (this, ctx, task, host, scope) = (
                self.clone(),
                ctx.clone(),
                task.clone(),
                host.to_string(),
                scope.clone(),
            );
            async move {
                this.run_item(&ctx, &task, &host, &scope, None, no_log)
                    .await
            }
        };
        let (_, res) = self.jobs.start(host, limit, work);
        let failed = self.account(host, task, &res, false, no_log, ctx);
        (Some(res), failed)
    }

    /// One iteration: conditions, templated args, the action, changed_when/failed_when/until.
    async fn run_item(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
        _label: Option<String>,
        no_log: bool,
    ) -> TaskResult {
        let failure = |msg: &str, ignore_errors: bool| TaskResult {
            ignore_errors,
            ..TaskResult::failed(located(task, host, msg))
        };
        let ignore_errors = match &task.opts.ignore_errors {
            Some(v) => match self.templar.template_value(v, scope) {
                Ok(v) => to_bool(&v).unwrap_or(false),
                Err(e) => return failure(&e, false),
            },
            None => false,
        };
        // As in Ansible, ignore_errors also covers a task that fails before its action runs
        // (an undefined variable in `when`, a bad argument).
        let err = |msg: String| failure(&msg, ignore_errors);
        match self.conditions_hold(&task.opts.when, scope) {
            Ok(true) => {}
            Ok(false) => {
                return TaskResult::new(
                    Status::Skipped,
                    json!({"changed": false, "skipped": true, "skip_reason": "Conditional result was False"}),
                )
            }
            Err(e) => return err(e),
        }
        let retries = match &task.opts.until {
            Some(_) => match task
                .opts
                .retries
                .as_ref()
                .map(|r| self.templar.template_value(r, scope))
            {
                Some(Ok(v)) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(3),
                Some(Err(e)) => return err(e),
                None => 3,
            },
            None => 0,
        };
        let delay = match task
            .opts
            .delay
            .as_ref()
            .map(|r| self.templar.template_value(r, scope))
        {
            Some(Ok(v)) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(5),
            Some(Err(e)) => return err(e),
            None => 5,
        };
        let timeout = match task
            .opts
            .timeout
            .as_ref()
            .map(|r| self.templar.template_value(r, scope))
        {
            Some(Ok(v)) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(0) | None => {
                    return err(format!(
                        "timeout: expected a number of seconds > 0, got {v}"
                    ))
                }
                Some(n) => Some(Duration::from_secs(n)),
            },
            Some(Err(e)) => return err(e),
            None => None,
        };
        // async with poll > 0: the task waits in place, failed after `async` seconds.
        let timeout = match self.async_mode(task, scope) {
            Ok(Some(AsyncMode::Wait(limit))) => Some(timeout.map_or(limit, |t| t.min(limit))),
            Ok(_) => timeout,
            Err(e) => return err(e),
        };
        let mut attempt = 0;
        loop {
            let action = self.run_action(ctx, task, host, scope);
            let mut res = match timeout {
                None => action.await,
                Some(t) => match tokio::time::timeout(t, action).await {
                    Ok(r) => r,
                    // As Ansible's task `timeout`: the attempt fails (until/retries may retry).
                    Err(_) => TaskResult::failed(located(
                        task,
                        host,
                        &format!("the task timed out after {} seconds", t.as_secs()),
                    )),
                },
            };
            if res.status == Status::Unreachable {
                return res;
            }
            if res.status != Status::Skipped {
                // changed_when / failed_when see the result under the register name.
                let needs_eval = task.opts.changed_when.is_some()
                    || task.opts.failed_when.is_some()
                    || task.opts.until.is_some();
                if needs_eval {
                    let mut extra = Map::new();
                    if let Some(name) = &task.opts.register {
                        extra.insert(name.clone(), res.registered());
                    }
                    // Ansible also exposes the result's keys (rc, stdout) directly.
                    for (k, v) in &res.value {
                        extra.entry(k.clone()).or_insert(v.clone());
                    }
                    let mut merged = scope.raw().clone();
                    merged.extend(extra);
                    let rscope = Scope::with_fixed(self.templar.clone(), merged, fixed_of(scope));
                    if let Some(cw) = &task.opts.changed_when {
                        match self.conditions_hold_any(cw, &rscope) {
                            Ok(c) => {
                                res.value.insert("changed".into(), json!(c));
                                if res.status != Status::Failed {
                                    res.status = if c { Status::Changed } else { Status::Ok };
                                }
                            }
                            Err(e) => return err(e),
                        }
                    }
                    if let Some(fw) = &task.opts.failed_when {
                        match self.conditions_hold_any(fw, &rscope) {
                            Ok(f) => {
                                res.value.insert("failed".into(), json!(f));
                                if f {
                                    res.status = Status::Failed;
                                    if res.value.get("msg").is_none_or(|m| m.as_str() == Some("")) {
                                        res.value.insert(
                                            "msg".into(),
                                            json!("failed_when condition was met"),
                                        );
                                    }
                                } else if res.status == Status::Failed {
                                    res.status = if res.value.get("changed") == Some(&json!(true)) {
                                        Status::Changed
                                    } else {
                                        Status::Ok
                                    };
                                }
                            }
                            Err(e) => return err(e),
                        }
                    }
                    if let Some(until) = &task.opts.until {
                        let done = self
                            .conditions_hold(std::slice::from_ref(until), &rscope)
                            .unwrap_or(false);
                        if !done && attempt < retries {
                            attempt += 1;
                            let raw = task.display_name();
                            let name = match self.templar.template_value(&json!(raw), scope) {
                                Ok(Value::String(s)) => s,
                                _ => raw,
                            };
                            // Why it retries: the result's message, first line, shortened.
                            let why = res
                                .value
                                .get("msg")
                                .filter(|_| !no_log)
                                .and_then(Value::as_str)
                                .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
                                .map(|l| {
                                    let l: String = l.chars().take(240).collect();
                                    format!(": {l}")
                                })
                                .unwrap_or_default();
                            // Polling a background job is waiting, not failing: no line per
                            // poll (the "still running" lines show a long wait).
                            if !matches!(task.action, Action::AsyncStatus { .. }) {
                                self.reporter.note(&format!(
                                    "FAILED - RETRYING: [{host}]: {name} ({} retries left){why}",
                                    retries - attempt + 1
                                ));
                            }
                            tokio::time::sleep(Duration::from_secs(delay)).await;
                            continue;
                        }
                        if !done {
                            res.status = Status::Failed;
                            res.value.insert("failed".into(), json!(true));
                            res.value.insert("attempts".into(), json!(attempt + 1));
                        }
                    }
                }
            }
            // Set, never cleared: a job's result (async_status) keeps its own task's.
            if res.status == Status::Failed && ignore_errors {
                res.ignore_errors = true;
            }
            return res;
        }
    }

    /// changed_when / failed_when: a list means all must hold, as in Ansible.
    fn conditions_hold_any(&self, conds: &[Value], scope: &Arc<Scope>) -> Result<bool, String> {
        self.conditions_hold(conds, scope)
    }

    pub(super) fn become_of(
        &self,
        task: &Task,
        scope: &Arc<Scope>,
    ) -> Result<Option<Become>, String> {
        let on = match &task.opts.become_ {
            Some(v) => to_bool(&self.templar.template_value(v, scope)?).unwrap_or(false),
            None => match scope.get_json("ansible_become")? {
                Some(v) => to_bool(&v).unwrap_or(false),
                None => false,
            },
        };
        if !on {
            return Ok(None);
        }
        let user = match &task.opts.become_user {
            Some(u) => value_label(&self.templar.template_value(&json!(u), scope)?),
            None => scope
                .get_json("ansible_become_user")?
                .map(|v| value_label(&v))
                .unwrap_or_else(|| "root".into()),
        };
        Ok(Some(Become { user }))
    }

    pub(super) fn environment_of(
        &self,
        task: &Task,
        scope: &Arc<Scope>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for e in &task.opts.environment {
            match self.templar.template_value(e, scope)? {
                Value::Object(m) => {
                    for (k, v) in m {
                        out.insert(k, value_label(&v));
                    }
                }
                Value::Null => {}
                other => {
                    return Err(format!(
                        "environment must be a mapping, got {}",
                        short_json(&other)
                    ))
                }
            }
        }
        Ok(out)
    }
}
