//! What the user sees: per-task result lines, live per-host progress on a terminal (plain lines
//! otherwise), diffs, the final PLAY RECAP, or one JSON document with `--json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::modules::FileDiff;
use crate::task_result::{Status, TaskResult};

/// One host's result for one task (or one loop item), as the report shows it.
#[derive(Debug, Clone)]
pub struct HostResult<'a> {
    pub result: &'a TaskResult,
    /// The loop item's label.
    pub item: Option<String>,
    /// A failure that `ignore_errors` turns into "...ignoring".
    pub ignored: bool,
    pub no_log: bool,
}

/// Per-host counters of the recap.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    pub rescued: u32,
    pub ignored: u32,
}

pub struct Reporter {
    json: bool,
    verbosity: u8,
    diff: bool,
    progress: Option<MultiProgress>,
    bars: Mutex<HashMap<String, (ProgressBar, Instant)>>,
    /// Hosts busy with the current task and since when (for plain-mode "still running" lines).
    busy: Mutex<HashMap<String, Instant>>,
    log: Mutex<Vec<Value>>,
    /// Runs of Ansible modules through the fallback, per module (shown in the recap).
    ansible_modules: Mutex<std::collections::BTreeMap<String, u32>>,
    started: Instant,
}

impl Reporter {
    pub fn new(json: bool, verbosity: u8, diff: bool) -> Reporter {
        let tty = std::io::stdout().is_terminal() && !json;
        let progress =
            tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(8)));
        Reporter {
            json,
            verbosity,
            diff,
            progress,
            bars: Mutex::default(),
            busy: Mutex::default(),
            log: Mutex::default(),
            ansible_modules: Mutex::default(),
            started: Instant::now(),
        }
    }

    fn print(&self, s: &str) {
        if self.json {
            return;
        }
        match &self.progress {
            Some(mp) => {
                let _ = mp.println(s);
            }
            None => println!("{s}"),
        }
    }

    fn banner(kind: &str, name: &str) -> String {
        let head = format!("{kind} [{name}] ");
        let width = 79usize.saturating_sub(head.chars().count()).max(3);
        format!("\n{head}{}", "*".repeat(width))
    }

    pub fn play_start(&self, name: &str) {
        self.print(&Self::banner("PLAY", name));
        lock(&self.log).push(json!({"play": name, "tasks": []}));
    }

    pub fn task_start(&self, kind: &str, name: &str) {
        self.print(&Self::banner(kind, name));
        if let Some(Value::Object(play)) = lock(&self.log).last_mut() {
            if let Some(Value::Array(tasks)) = play.get_mut("tasks") {
                // start_s: seconds since the run began (consecutive starts give each task's duration)
                tasks.push(json!({"task": name, "start_s": self.started.elapsed().as_secs_f64(), "hosts": {}}));
            }
        }
    }

    /// Marks a host busy with a task (live progress line on a terminal).
    pub fn host_busy(&self, host: &str, task: &str) {
        lock(&self.busy).insert(host.to_string(), Instant::now());
        let Some(mp) = &self.progress else { return };
        let mut bars = lock(&self.bars);
        let entry = bars.entry(host.to_string()).or_insert_with(|| {
            let pb = mp.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<16} {wide_msg} {elapsed:>4}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(host.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            (pb, Instant::now())
        });
        entry.0.reset_elapsed();
        entry.0.set_message(task.to_string());
        entry.1 = Instant::now();
    }

    pub fn host_idle(&self, host: &str) {
        lock(&self.busy).remove(host);
        if let Some((pb, _)) = lock(&self.bars).get(host) {
            pb.set_message("…");
        }
    }

    /// Without a terminal there is no live progress: a long task instead gets a periodic line
    /// naming the hosts still on it, so a CI log shows where a slow run is.
    pub fn still_running(&self, task: &str) {
        if self.progress.is_some() || self.json {
            return;
        }
        let mut hosts: Vec<(String, u64)> = lock(&self.busy)
            .iter()
            .map(|(h, t)| (h.clone(), t.elapsed().as_secs()))
            .collect();
        if hosts.is_empty() {
            return;
        }
        hosts.sort();
        let list: Vec<String> = hosts.iter().map(|(h, s)| format!("{h} ({s} s)")).collect();
        self.print(&format!(
            "  ... still running [{task}] at {:.0} s: {}",
            self.started.elapsed().as_secs_f64(),
            list.join(", ")
        ));
    }

    pub fn clear_progress(&self) {
        let mut bars = lock(&self.bars);
        for (_, (pb, _)) in bars.drain() {
            pb.finish_and_clear();
        }
    }

    pub fn host_result(&self, host: &str, r: &HostResult) {
        let res = r.result;
        let who = match &res.delegated_to {
            Some(d) => format!("[{host} -> {d}]"),
            None => format!("[{host}]"),
        };
        // A no_log loop item may be the secret itself: shown as Ansible shows it.
        let item = r
            .item
            .as_ref()
            .map(|i| {
                if r.no_log {
                    " => (item=None)".to_string()
                } else {
                    format!(" => (item={i})")
                }
            })
            .unwrap_or_default();
        let detail = || -> String {
            if r.no_log {
                return "the output has been hidden due to 'no_log: true' for this result".into();
            }
            serde_json::to_string(&res.value).unwrap_or_default()
        };
        let line = match res.status {
            Status::Ok => format!("ok: {who}{item}"),
            Status::Changed => format!("changed: {who}{item}"),
            Status::Skipped => format!("skipping: {who}{item}"),
            Status::Unreachable => format!(
                "fatal: {who}: UNREACHABLE! => {}",
                if res.msg().is_empty() {
                    detail()
                } else {
                    res.msg().to_string()
                }
            ),
            Status::Failed if r.ignored => {
                format!("failed: {who}{item} => {}\n...ignoring", detail())
            }
            Status::Failed => format!("fatal: {who}{item}: FAILED! => {}", detail()),
        };
        let mut out = line;
        if matches!(res.status, Status::Ok | Status::Changed) && !r.no_log {
            if self.verbosity > 0 {
                out.push_str(&format!(" => {}", detail()));
            } else if res.shown {
                out.push_str(&format!(" => {}", shown_detail(&res.value)));
            }
        }
        if self.diff && !r.no_log {
            for d in &res.diffs {
                out.push('\n');
                out.push_str(&render_diff(d));
            }
        }
        self.print(&out);
        let mut logged = if r.no_log {
            json!({"censored": "no_log"})
        } else {
            Value::Object(res.value.clone())
        };
        if let Value::Object(m) = &mut logged {
            m.insert(
                "status".into(),
                json!(format!("{:?}", res.status).to_lowercase()),
            );
            if r.ignored {
                m.insert("ignored".into(), json!(true));
            }
            if res.real_in_check {
                m.insert("check_mode".into(), json!(false));
            }
            // As Ansible's json callback: file diffs under "diff" with --diff.
            if self.diff && !r.no_log && !res.diffs.is_empty() {
                let d: Vec<Value> = res
                    .diffs
                    .iter()
                    .map(|d| json!({"before_header": d.path, "after_header": d.path, "before": d.before, "after": d.after}))
                    .collect();
                m.insert("diff".into(), Value::Array(d));
            }
        }
        self.log_result(host, logged);
    }

    /// A controller-side error (template, loop, include) that fails the host before any
    /// result: shown with its message, and recorded with it in `--json`.
    pub fn host_error(&self, host: &str, msg: &str) {
        self.print(&format!(
            "fatal: [{host}]: FAILED! => {}",
            json!({ "msg": msg })
        ));
        self.log_result(host, json!({"status": "failed", "msg": msg}));
    }

    /// Adds a host's result to the current task of the `--json` document (a list when the
    /// task reports several for the host: loop items).
    fn log_result(&self, host: &str, res: Value) {
        let mut log = lock(&self.log);
        let Some(Value::Object(play)) = log.last_mut() else {
            return;
        };
        let Some(Value::Array(tasks)) = play.get_mut("tasks") else {
            return;
        };
        let Some(Value::Object(t)) = tasks.last_mut() else {
            return;
        };
        let Some(Value::Object(hosts)) = t.get_mut("hosts") else {
            return;
        };
        match hosts.get_mut(host) {
            Some(Value::Array(items)) => items.push(res),
            Some(existing) => {
                let prev = existing.take();
                *existing = Value::Array(vec![prev, res]);
            }
            None => {
                hosts.insert(host.to_string(), res);
            }
        }
    }

    pub fn note(&self, msg: &str) {
        self.print(msg);
    }

    pub fn warn(&self, msg: &str) {
        if self.json {
            eprintln!("[WARNING]: {msg}");
        } else {
            self.print(&format!("[WARNING]: {msg}"));
        }
    }

    /// One host's run of an Ansible module through the fallback.
    pub fn note_ansible_module(&self, fqcn: &str) {
        *lock(&self.ansible_modules)
            .entry(fqcn.to_string())
            .or_default() += 1;
    }

    pub fn recap(&self, stats: &IndexMap<String, Stats>) {
        self.clear_progress();
        let fallback = lock(&self.ansible_modules).clone();
        if self.json {
            let doc = json!({"plays": *lock(&self.log), "stats": stats, "ansible_modules": fallback, "elapsed_s": self.started.elapsed().as_secs_f64()});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            return;
        }
        println!(
            "{}",
            Self::banner("PLAY RECAP", "").replace("PLAY RECAP [] ", "PLAY RECAP ")
        );
        let width = stats.keys().map(|h| h.len()).max().unwrap_or(0).max(16);
        for (h, s) in stats {
            println!(
                "{h:<width$} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4} rescued={:<4} ignored={}",
                s.ok, s.changed, s.unreachable, s.failed, s.skipped, s.rescued, s.ignored
            );
        }
        if !fallback.is_empty() {
            let runs: Vec<String> = fallback.iter().map(|(m, n)| format!("{m} ×{n}")).collect();
            println!("\nran as Ansible modules (fallback): {}", runs.join(", "));
        }
        println!("\nelapsed: {:.1}s", self.started.elapsed().as_secs_f64());
    }
}

/// A unified diff with file names, like `ansible-playbook --diff`.
pub fn render_diff(d: &FileDiff) -> String {
    let diff = similar::TextDiff::from_lines(&d.before, &d.after);
    let mut s = format!("--- before: {}\n+++ after: {}\n", d.path, d.path);
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        s.push_str(&hunk.to_string());
    }
    s.trim_end().to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `debug` result as Ansible's default output shows it without `-v`: the dictionary without
/// `changed`, indented by four.
fn shown_detail(value: &serde_json::Map<String, Value>) -> String {
    // Filtered rather than removed: removing from the ordered map would move the last key.
    let shown: serde_json::Map<String, Value> = value
        .iter()
        .filter(|(k, _)| k.as_str() != "changed")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    match serde::Serialize::serialize(&Value::Object(shown), &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debug_result_shows_as_ansible_shows_it() {
        let v = json!({"changed": false, "msg": "hi", "nested": [1]});
        let Value::Object(m) = v else { unreachable!() };
        assert_eq!(
            shown_detail(&m),
            "{\n    \"msg\": \"hi\",\n    \"nested\": [\n        1\n    ]\n}"
        );
    }

    #[test]
    fn diff_shows_changed_lines() {
        let d = FileDiff {
            path: "/etc/x".into(),
            before: "a\nb\n".into(),
            after: "a\nc\n".into(),
        };
        let s = render_diff(&d);
        assert!(s.contains("--- before: /etc/x"));
        assert!(s.contains("-b\n+c"), "{s}");
    }

    #[test]
    fn the_json_document_holds_the_result_dictionary_and_status() {
        let rep = Reporter::new(true, 0, true);
        rep.play_start("p");
        rep.task_start("TASK", "t");
        let res = TaskResult {
            delegated_to: Some("h9".into()),
            ignore_errors: true,
            diffs: vec![FileDiff {
                path: "/x".into(),
                before: "a\n".into(),
                after: "b\n".into(),
            }],
            ..TaskResult::new(Status::Failed, json!({"failed": true, "msg": "m"}))
        };
        let r = HostResult {
            result: &res,
            item: None,
            ignored: true,
            no_log: false,
        };
        rep.host_result("h1", &r);
        rep.host_result("h1", &HostResult { no_log: true, ..r });
        rep.host_error("h2", "bad");
        let log = lock(&rep.log);
        assert_eq!(
            log[0]["tasks"][0]["hosts"].to_string(),
            concat!(
                r#"{"h1":[{"failed":true,"msg":"m","status":"failed","ignored":true,"#,
                r#""diff":[{"before_header":"/x","after_header":"/x","before":"a\n","after":"b\n"}]},"#,
                r#"{"censored":"no_log","status":"failed","ignored":true}],"#,
                r#""h2":{"status":"failed","msg":"bad"}}"#
            )
        );
    }
}
