//! The ledger: what the workload's tasks did, recorded outside every component under test.
//! Each task execution appends two JSON lines — `start` when it begins and `end` when its work
//! is done — carrying (dag, run, task, try, host, time, uid); the uid is drawn by the execution
//! itself, so two executions of one try are two uids even if neither finished.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Start,
    End,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub phase: Phase,
    pub dag: String,
    pub run: String,
    pub task: String,
    #[serde(rename = "try")]
    pub try_number: u32,
    pub host: String,
    /// Unix time, seconds.
    pub t: f64,
    pub uid: String,
}

/// A task instance: (dag, run, task).
pub type TaskKey = (String, String, String);

/// One execution of a try, start to end (`end` is `None` when it never finished: killed).
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub key: TaskKey,
    pub try_number: u32,
    pub host: String,
    pub start: f64,
    pub end: Option<f64>,
    pub uid: String,
}

/// Reads a ledger file; a line that does not parse is an error naming its line number.
pub fn load(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}:{e}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{}: {e}", i + 1)))
        .collect()
}

/// Pairs start and end events by uid, in start order.
pub fn executions(events: &[Event]) -> Vec<Execution> {
    let mut by_uid: BTreeMap<&str, Execution> = BTreeMap::new();
    let mut ends: BTreeMap<&str, f64> = BTreeMap::new();
    for e in events {
        match e.phase {
            Phase::Start => {
                by_uid.entry(&e.uid).or_insert_with(|| Execution {
                    key: (e.dag.clone(), e.run.clone(), e.task.clone()),
                    try_number: e.try_number,
                    host: e.host.clone(),
                    start: e.t,
                    end: None,
                    uid: e.uid.clone(),
                });
            }
            Phase::End => {
                ends.insert(&e.uid, e.t);
            }
        }
    }
    let mut out: Vec<Execution> = by_uid
        .into_values()
        .map(|mut x| {
            x.end = ends.get(x.uid.as_str()).copied();
            x
        })
        .collect();
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    out
}

/// Tries that more than one execution ran: ((dag, run, task), try) → the hosts that ran it.
pub fn doubled_tries(execs: &[Execution]) -> BTreeMap<(TaskKey, u32), Vec<String>> {
    let mut seen: BTreeMap<(TaskKey, u32), Vec<String>> = BTreeMap::new();
    for x in execs {
        seen.entry((x.key.clone(), x.try_number))
            .or_default()
            .push(x.host.clone());
    }
    seen.retain(|_, hosts| hosts.len() > 1);
    seen
}

/// The task instances with at least one finished execution.
pub fn finished(execs: &[Execution]) -> BTreeSet<TaskKey> {
    execs
        .iter()
        .filter(|x| x.end.is_some())
        .map(|x| x.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(phase: &str, task: &str, tr: u32, host: &str, t: f64, uid: &str) -> String {
        format!(
            r#"{{"phase":"{phase}","dag":"ledger","run":"r1","task":"{task}","try":{tr},"host":"{host}","t":{t},"uid":"{uid}"}}"#
        )
    }

    #[test]
    fn executions_pair_by_uid_and_doubles_are_found() {
        let text = [
            line("start", "a", 1, "w1", 1.0, "u1"),
            line("start", "b", 1, "w2", 1.5, "u2"),
            line("end", "a", 1, "w1", 3.0, "u1"),
            // b's try 1 runs again on w1 (a redelivery) while w2 never finishes it
            line("start", "b", 1, "w1", 4.0, "u3"),
            line("end", "b", 1, "w1", 6.0, "u3"),
            line("start", "c", 1, "w2", 2.0, "u4"),
            line("start", "c", 2, "w1", 7.0, "u5"),
            line("end", "c", 2, "w1", 8.0, "u5"),
        ]
        .join("\n");
        let ev = parse(&text).unwrap();
        let ex = executions(&ev);
        assert_eq!(ex.len(), 5);
        assert_eq!(ex[0].end, Some(3.0));
        let d = doubled_tries(&ex);
        assert_eq!(d.len(), 1);
        let ((key, tr), hosts) = d.into_iter().next().unwrap();
        assert_eq!(
            (key.2.as_str(), tr, hosts),
            ("b", 1, vec!["w2".into(), "w1".into()])
        );
        let f = finished(&ex);
        assert_eq!(f.len(), 3, "a, b and c (its second try) finished");
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = parse("{\"phase\":\"start\"}\n").unwrap_err();
        assert!(e.starts_with("1: "), "{e}");
    }
}
