//! The action of one task iteration: the built-in actions that run on the controller (debug,
//! set_fact, assert, fail, include_vars, pause, async_status), ping, and a module call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::results::{located, value_label};
use super::{PlayCtx, Runner};
use crate::inventory::load_vars_file;
use crate::modules::{self, FileKind, ModuleError, TaskCtx, TaskEnv};
use crate::playbook::{Action, Role, Task};
use crate::task_result::{Status, TaskResult};
use crate::template::{Scope, Templar, OMIT};
use crate::words::to_bool;

/// An action's result, or a controller-side error (reported as a failure located at the task).
type ActionResult = Result<TaskResult, String>;

impl Runner {
    pub(super) async fn run_action(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
    ) -> TaskResult {
        let check = self.check_mode(task, scope);
        let real_in_check = self.opts.check && check == Ok(false);
        let r = match check {
            Err(e) => Err(e),
            Ok(check) => match &task.action {
                Action::Debug { args } => self.debug(args, scope),
                Action::SetFact { args } => self.set_fact(args, scope),
                Action::Assert { args } => self.assert(args, scope),
                Action::Fail { args } => self.fail(args, scope),
                Action::IncludeVars { args } => self.include_vars(task, args, scope),
                Action::Pause { args } => self.pause(args, scope, check).await,
                Action::AsyncStatus { args } => self.async_status(args, scope).await,
                Action::Ping => self.ping(ctx, host).await,
                Action::Module { name, args } => match modules::lookup(&self.registry, name) {
                    Some(m) => {
                        let m = Runnable::Native(m);
                        self.module(ctx, task, host, scope, m, args, check).await
                    }
                    None => Err(format!("unknown module '{name}'")),
                },
                Action::Ansible { module, args } => {
                    self.reporter.note_ansible_module(&module.fqcn);
                    match self.no_log(task, scope) {
                        Ok(no_log) => {
                            let m = Runnable::Ansible(module, no_log);
                            self.module(ctx, task, host, scope, m, args, check).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Action::Block { .. }
                | Action::IncludeTasks { .. }
                | Action::IncludeRole { .. }
                | Action::Meta(_) => {
                    Err("internal: structural task dispatched as an action".into())
                }
            },
        };
        let mut r = r.unwrap_or_else(|msg| TaskResult::failed(located(task, host, &msg)));
        r.real_in_check = real_in_check;
        r
    }

    /// The task's `no_log`, templated.
    fn no_log(&self, task: &Task, scope: &Arc<Scope>) -> Result<bool, String> {
        Ok(match &task.opts.no_log {
            Some(v) => to_bool(&self.templar.template_value(v, scope)?).unwrap_or(false),
            None => false,
        })
    }

    /// `check_mode` of the task, else `--check`.
    fn check_mode(&self, task: &Task, scope: &Arc<Scope>) -> Result<bool, String> {
        Ok(match &task.opts.check_mode {
            Some(v) => to_bool(&self.templar.template_value(v, scope)?).unwrap_or(self.opts.check),
            None => self.opts.check,
        })
    }

    /// The action's arguments, templated, without those equal to `omit`.
    fn template_args(
        &self,
        args: &Map<String, Value>,
        scope: &Arc<Scope>,
    ) -> Result<Map<String, Value>, String> {
        match self
            .templar
            .template_value(&Value::Object(args.clone()), scope)?
        {
            Value::Object(mut m) => {
                m.retain(|_, v| v.as_str() != Some(OMIT));
                Ok(m)
            }
            _ => Err("arguments must be a mapping".into()),
        }
    }

    fn debug(&self, args: &Map<String, Value>, scope: &Arc<Scope>) -> ActionResult {
        let a = self.template_args(args, scope)?;
        if let Some(var) = args.get("var").and_then(Value::as_str) {
            let v = match self.templar.eval(var, scope) {
                Ok(v) => v,
                Err(_) => json!("VARIABLE IS NOT DEFINED!"),
            };
            return Ok(TaskResult {
                shown: true,
                // Ansible's shape: the variable's name as the key, beside `changed`.
                ..TaskResult::new(Status::Ok, json!({var: v, "changed": false}))
            });
        }
        let msg = a.get("msg").cloned().unwrap_or(json!("Hello world!"));
        Ok(TaskResult {
            shown: true,
            ..TaskResult::new(Status::Ok, json!({"changed": false, "msg": msg}))
        })
    }

    fn set_fact(&self, args: &Map<String, Value>, scope: &Arc<Scope>) -> ActionResult {
        let facts = self.template_args(args, scope)?;
        Ok(TaskResult {
            set_facts: Some(facts.clone()),
            ..TaskResult::new(
                Status::Ok,
                json!({"changed": false, "ansible_facts_set": facts}),
            )
        })
    }

    fn assert(&self, args: &Map<String, Value>, scope: &Arc<Scope>) -> ActionResult {
        let that = match args.get("that") {
            Some(Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
            None => vec![],
        };
        for cond in &that {
            if !self.conditions_hold(std::slice::from_ref(cond), scope)? {
                let msg = match args.get("fail_msg").or_else(|| args.get("msg")) {
                    Some(m) => self
                        .templar
                        .template_value(m, scope)
                        .map(|v| value_label(&v))
                        .unwrap_or_else(|e| e),
                    None => "Assertion failed".into(),
                };
                return Ok(TaskResult::new(
                    Status::Failed,
                    json!({"failed": true, "changed": false, "assertion": cond, "evaluated_to": false, "msg": msg}),
                ));
            }
        }
        let msg = match args.get("success_msg") {
            Some(m) => self
                .templar
                .template_value(m, scope)
                .map(|v| value_label(&v))
                .unwrap_or_default(),
            None => "All assertions passed".into(),
        };
        Ok(TaskResult::new(
            Status::Ok,
            json!({"changed": false, "msg": msg}),
        ))
    }

    fn fail(&self, args: &Map<String, Value>, scope: &Arc<Scope>) -> ActionResult {
        let a = self.template_args(args, scope)?;
        Ok(TaskResult::new(
            Status::Failed,
            json!({"failed": true, "msg": a.get("msg").cloned().unwrap_or(json!("Failed as requested from task"))}),
        ))
    }

    /// `include_vars`: a relative file is looked for in the role's `vars/`, then the playbook's
    /// directory.
    fn include_vars(
        &self,
        task: &Task,
        args: &Map<String, Value>,
        scope: &Arc<Scope>,
    ) -> ActionResult {
        let a = self.template_args(args, scope)?;
        let file = a
            .get("file")
            .or_else(|| a.get("_raw_params"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut path = PathBuf::from(&file);
        if path.is_relative() {
            let cands: Vec<PathBuf> = task
                .role
                .iter()
                .map(|r| r.path.join("vars").join(&file))
                .chain(std::iter::once(self.pb.dir.join(&file)))
                .collect();
            path = cands
                .iter()
                .find(|p| p.exists())
                .cloned()
                .unwrap_or_else(|| self.pb.dir.join(&file));
        }
        let m = load_vars_file(&path).map_err(|e| e.to_string())?;
        let facts = match a.get("name").and_then(Value::as_str) {
            Some(n) => Map::from_iter([(n.to_string(), Value::Object(m))]),
            None => m,
        };
        Ok(TaskResult {
            set_facts: Some(facts),
            ..TaskResult::new(Status::Ok, json!({"changed": false}))
        })
    }

    /// `pause` with `seconds`/`minutes` (no prompt); skipped in check mode.
    async fn pause(
        &self,
        args: &Map<String, Value>,
        scope: &Arc<Scope>,
        check: bool,
    ) -> ActionResult {
        let a = self.template_args(args, scope)?;
        let number = |k: &str| {
            a.get(k)
                .and_then(|v| {
                    v.as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(0.0)
        };
        let secs = number("seconds") + 60.0 * number("minutes");
        if !check {
            tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
        }
        Ok(TaskResult::new(Status::Ok, json!({"changed": false})))
    }

    async fn async_status(&self, args: &Map<String, Value>, scope: &Arc<Scope>) -> ActionResult {
        let a = self.template_args(args, scope)?;
        let jid = a.get("jid").map(value_label).unwrap_or_default();
        match a.get("mode").and_then(Value::as_str).unwrap_or("status") {
            "status" => self
                .jobs
                .status(&jid)
                .await
                .ok_or_else(|| format!("could not find job '{jid}'")),
            "cleanup" => {
                let known = self.jobs.cleanup(&jid);
                Ok(TaskResult::new(
                    Status::Ok,
                    json!({"changed": false, "ansible_job_id": jid, "erased": known}),
                ))
            }
            other => Err(format!(
                "async_status: mode must be status or cleanup, got '{other}'"
            )),
        }
    }

    async fn ping(self: &Arc<Self>, ctx: &Arc<PlayCtx>, host: &str) -> ActionResult {
        let conn = match self.connection(ctx, host).await {
            Ok(c) => c,
            Err(e) => return Ok(TaskResult::unreachable(e)),
        };
        match conn.run("echo pong", None, None, &BTreeMap::new()).await {
            Ok(r) if r.rc == 0 => Ok(TaskResult::new(
                Status::Ok,
                json!({"changed": false, "ping": "pong"}),
            )),
            Ok(r) => Err(format!("ping failed: {}", r.stderr.trim())),
            Err(e) => Ok(TaskResult::unreachable(e.to_string())),
        }
    }

    /// A module on the host's connection, or with `delegate_to` on another host's connection
    /// with this host's vars.
    #[allow(clippy::too_many_arguments)]
    async fn module(
        self: &Arc<Self>,
        ctx: &Arc<PlayCtx>,
        task: &Task,
        host: &str,
        scope: &Arc<Scope>,
        module: Runnable<'_>,
        args: &Map<String, Value>,
        check: bool,
    ) -> ActionResult {
        let a = self.template_args(args, scope)?;
        let delegate = match &task.opts.delegate_to {
            Some(d) => Some(
                self.templar
                    .template_value(&json!(d), scope)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => None,
        };
        let conn_host = delegate.clone().unwrap_or_else(|| host.to_string());
        let conn = match self.connection(ctx, &conn_host).await {
            Ok(c) => c,
            Err(e) if delegate.is_some() => return Err(format!("delegate_to {conn_host}: {e}")),
            Err(e) => return Ok(TaskResult::unreachable(e)),
        };
        let become_ = self.become_of(task, scope)?;
        let environment = self.environment_of(task, scope)?;
        let env = Env {
            templar: self.templar.clone(),
            scope: scope.clone(),
            role: task.role.clone(),
            pb_dir: self.pb.dir.clone(),
        };
        let tctx = TaskCtx {
            host,
            check,
            diff: self.opts.diff,
            conn: &conn,
            become_,
            environment,
            env: &env,
        };
        let ran = match module {
            Runnable::Native(m) => m.run(&a, &tctx).await,
            Runnable::Ansible(m, no_log) => crate::ansible::run(m, &a, &tctx, no_log).await,
        };
        match ran {
            Ok(o) => Ok(TaskResult {
                delegated_to: delegate,
                ..TaskResult::from_outcome(o)
            }),
            Err(ModuleError::Conn(e)) if delegate.is_none() => {
                Ok(TaskResult::unreachable(e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a module task runs: a native module, or an Ansible module through the fallback (with
/// the task's `no_log`, which the module is told).
enum Runnable<'a> {
    Native(&'a dyn modules::Module),
    Ansible(&'a crate::ansible::Resolved, bool),
}

/// The controller side of a module run.
struct Env {
    templar: Arc<Templar>,
    scope: Arc<Scope>,
    role: Option<Arc<Role>>,
    pb_dir: PathBuf,
}

impl TaskEnv for Env {
    fn render(&self, text: &str, origin: &str) -> Result<String, String> {
        self.templar
            .render(text, &self.scope)
            .map_err(|e| format!("{origin}: {e}"))
    }
    fn render_with(
        &self,
        text: &str,
        origin: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        self.templar
            .render(text, &self.scope.with_extra(extra))
            .map_err(|e| format!("{origin}: {e}"))
    }
    fn find_file(&self, kind: FileKind, name: &str) -> Option<PathBuf> {
        let p = PathBuf::from(name);
        if p.is_absolute() {
            return p.exists().then_some(p);
        }
        let sub = match kind {
            FileKind::Files => "files",
            FileKind::Templates => "templates",
        };
        let mut cands = Vec::new();
        if let Some(r) = &self.role {
            cands.push(r.path.join(sub).join(&p));
            cands.push(r.path.join(&p));
        }
        // Then the play's directory, as Ansible: templates shared across roles live in the
        // project's top-level templates/, which playbooks/templates links to.
        cands.push(self.pb_dir.join(sub).join(&p));
        cands.push(self.pb_dir.join(&p));
        cands.into_iter().find(|c| c.exists())
    }
    fn var(&self, name: &str) -> Option<Value> {
        self.scope.get_json(name).ok().flatten()
    }
}
