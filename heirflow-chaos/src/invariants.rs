//! The invariants a chaos run must keep, as pure functions of what was observed: the DAG runs'
//! final states, the ledger's executions, the DB writer's acknowledged commits and what the DB
//! holds afterwards, and the leadership intervals of each heir group.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ledger::{doubled_tries, finished, Execution, TaskKey};

/// One leadership interval of a heir group (from heir-supervisor's records or news).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub group: String,
    pub member: String,
    pub from: f64,
    pub to: f64,
}

/// Everything the checks look at; all but the executions (from the ledger) as recorded by the
/// run in one JSON document.
#[derive(Debug, Default, Deserialize)]
pub struct Observed {
    /// Every task instance of the workload's DAG runs.
    pub expected: BTreeSet<TaskKey>,
    /// (dag, run, final state) of each DAG run of the workload.
    pub dag_runs: Vec<(String, String, String)>,
    #[serde(skip)]
    pub executions: Vec<Execution>,
    /// Ids the writer saw acknowledged, and the ids the DB holds at the end.
    #[serde(default)]
    pub acknowledged: Vec<u64>,
    #[serde(default)]
    pub stored: BTreeSet<u64>,
    #[serde(default)]
    pub leases: Vec<Lease>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

fn some<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .take(5)
        .map(|i| format!("{i:?}"))
        .collect();
    v.join(", ")
}

pub fn check(o: &Observed) -> Vec<Check> {
    let mut out = Vec::new();

    let failed: Vec<_> = o
        .dag_runs
        .iter()
        .filter(|(_, _, s)| s != "success")
        .collect();
    out.push(Check {
        name: "every DAG run succeeded",
        pass: failed.is_empty() && !o.dag_runs.is_empty(),
        detail: if o.dag_runs.is_empty() {
            "no DAG run observed".into()
        } else if failed.is_empty() {
            format!("{} of {}", o.dag_runs.len(), o.dag_runs.len())
        } else {
            format!("{} not successful: {}", failed.len(), some(&failed))
        },
    });

    let doubled = doubled_tries(&o.executions);
    out.push(Check {
        name: "no (task, try) executed twice",
        pass: doubled.is_empty(),
        detail: if doubled.is_empty() {
            format!("{} executions", o.executions.len())
        } else {
            format!(
                "{} tries ran more than once: {}",
                doubled.len(),
                some(&doubled)
            )
        },
    });

    let done = finished(&o.executions);
    let missing: Vec<&TaskKey> = o.expected.difference(&done).collect();
    out.push(Check {
        name: "every task instance ran to its end",
        pass: missing.is_empty() && !o.expected.is_empty(),
        detail: if missing.is_empty() {
            format!("{} of {}", o.expected.len(), o.expected.len())
        } else {
            format!("{} never finished: {}", missing.len(), some(&missing))
        },
    });

    let lost: Vec<u64> = o
        .acknowledged
        .iter()
        .filter(|id| !o.stored.contains(id))
        .copied()
        .collect();
    out.push(Check {
        name: "no acknowledged commit lost",
        pass: lost.is_empty(),
        detail: format!(
            "{} lost of {} acknowledged",
            lost.len(),
            o.acknowledged.len()
        ),
    });

    let overlaps = overlapping_leases(&o.leases);
    out.push(Check {
        name: "never two leaders in a heir group",
        // No interval at all means the watcher saw nothing (e.g. could not read the registry):
        // then the check proves nothing, so it fails.
        pass: overlaps.is_empty() && !o.leases.is_empty(),
        detail: if o.leases.is_empty() {
            "no leadership interval seen: the lease watcher read nothing".to_string()
        } else if overlaps.is_empty() {
            format!("{} leadership intervals", o.leases.len())
        } else {
            format!("{} overlaps: {}", overlaps.len(), some(&overlaps))
        },
    });
    out
}

/// Pairs of leases of one group held by different members at the same time.
pub fn overlapping_leases(leases: &[Lease]) -> Vec<(Lease, Lease)> {
    let mut by_group: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    for l in leases {
        by_group.entry(&l.group).or_default().push(l);
    }
    let mut out = Vec::new();
    for (_, mut ls) in by_group {
        ls.sort_by(|a, b| a.from.total_cmp(&b.from));
        for (i, a) in ls.iter().enumerate() {
            for b in &ls[i + 1..] {
                if b.from >= a.to {
                    break;
                }
                if b.member != a.member {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

/// The checks as a terminal table.
pub fn render(checks: &[Check]) -> String {
    let w = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<4} {:<w$}  {}\n",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> TaskKey {
        ("d".into(), "r".into(), t.into())
    }

    fn exec(t: &str, tr: u32, host: &str, end: Option<f64>, uid: &str) -> Execution {
        Execution {
            key: key(t),
            try_number: tr,
            host: host.into(),
            start: 0.0,
            end,
            uid: uid.into(),
        }
    }

    fn lease(m: &str, from: f64, to: f64) -> Lease {
        Lease {
            group: "scheduler".into(),
            member: m.into(),
            from,
            to,
        }
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let o = Observed {
            expected: [key("a"), key("b")].into(),
            dag_runs: vec![("d".into(), "r".into(), "success".into())],
            executions: vec![
                exec("a", 1, "w1", Some(1.0), "u1"),
                exec("b", 1, "w2", None, "u2"),
                exec("b", 2, "w1", Some(2.0), "u3"),
            ],
            acknowledged: vec![1, 2, 3],
            stored: [1, 2, 3, 4].into(),
            leases: vec![
                lease("s1", 0.0, 10.0),
                lease("s2", 10.0, 20.0),
                lease("s1", 20.0, 30.0),
            ],
        };
        let c = check(&o);
        assert!(c.iter().all(|c| c.pass), "{}", render(&c));
    }

    #[test]
    fn each_breach_fails_its_own_check() {
        let o = Observed {
            expected: [key("a"), key("b")].into(),
            dag_runs: vec![("d".into(), "r".into(), "failed".into())],
            executions: vec![
                exec("a", 1, "w1", Some(1.0), "u1"),
                exec("a", 1, "w2", Some(1.5), "u2"),
            ],
            acknowledged: vec![1, 2],
            stored: [1].into(),
            leases: vec![lease("s1", 0.0, 10.0), lease("s2", 9.0, 20.0)],
        };
        let c = check(&o);
        assert!(c.iter().all(|c| !c.pass), "{}", render(&c));
        let text = render(&c);
        assert!(text.contains("1 lost of 2 acknowledged"), "{text}");
        assert!(text.contains("1 never finished"), "{text}");
    }
}
