//! What a chaos run's faults cost: each fault's extra DAG time against the fault-free baseline
//! measured in the same run, the task executions it cut short, and the per-class medians; and
//! their text rendering for the run's summary.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::ledger::Execution;
use crate::schedule::Fault;

/// A fault as it happened: when it was applied and healed (unix seconds) and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub fault: Fault,
    pub class: String,
    pub applied: f64,
    pub healed: f64,
    /// Longest DAG run that overlapped the fault, minus the baseline.
    pub extra_s: Option<f64>,
    /// Task executions that started during the fault or its recovery and were cut short.
    pub cut_short: usize,
    /// Seconds from the fault's start until a DAG file written then was parsed (the
    /// dag-processor's figure), `None` when it was not within the probe's limit.
    pub new_dag_s: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassFigure {
    pub class: String,
    pub faults: usize,
    pub median_extra_s: Option<f64>,
    pub max_extra_s: Option<f64>,
    pub median_new_dag_s: Option<f64>,
}

pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Seconds after a heal during which a run or a task still counts against the fault.
pub const RECOVERY_S: f64 = 30.0;

/// The fault-free DAG time: the median of the workload's runs that overlapped no fault (nor
/// its recovery), with the warm-up run among them — measured in the same run as the faults.
pub fn baseline_of(warmup: f64, runs: &[(f64, f64)], applied: &[Applied]) -> f64 {
    let mut clean: Vec<f64> = runs
        .iter()
        .filter(|(s, e)| {
            !applied
                .iter()
                .any(|a| *s < a.healed + RECOVERY_S && *e > a.applied)
        })
        .map(|(s, e)| e - s)
        .chain([warmup])
        .collect();
    median(&mut clean).unwrap_or(warmup)
}

/// Per-fault costs from the runs and executions that overlapped it.
pub fn figures(applied: &mut [Applied], runs: &[(f64, f64)], execs: &[Execution], baseline: f64) {
    for a in applied.iter_mut() {
        let (lo, hi) = (a.applied, a.healed + RECOVERY_S);
        a.extra_s = runs
            .iter()
            .filter(|(s, e)| *s < hi && *e > lo)
            .map(|(s, e)| (e - s - baseline).max(0.0))
            .reduce(f64::max);
        a.cut_short = execs
            .iter()
            .filter(|x| x.end.is_none() && x.start < hi && x.start > lo - 60.0)
            .count();
    }
}

pub fn class_figures(applied: &[Applied]) -> Vec<ClassFigure> {
    let classes: BTreeSet<&str> = applied.iter().map(|a| a.class.as_str()).collect();
    classes
        .into_iter()
        .map(|c| {
            let mut v: Vec<f64> = applied
                .iter()
                .filter(|a| a.class == c)
                .filter_map(|a| a.extra_s)
                .collect();
            let mut parsed: Vec<f64> = applied
                .iter()
                .filter(|a| a.class == c)
                .filter_map(|a| a.new_dag_s)
                .collect();
            ClassFigure {
                class: c.to_string(),
                faults: applied.iter().filter(|a| a.class == c).count(),
                max_extra_s: v.iter().copied().reduce(f64::max),
                median_extra_s: median(&mut v),
                median_new_dag_s: median(&mut parsed),
            }
        })
        .collect()
}

pub fn render_faults(applied: &[Applied], t0: f64) -> String {
    // host names, or the names of operator steps, which run longer
    let hw = applied
        .iter()
        .map(|a| a.fault.host.len())
        .fold(11, usize::max);
    let mut s = format!(
        "{:>7}  {:>5}  {:<9}  {:<hw$}  {:<22}  {:>8}  {:>9}  {:>9}\n",
        "at (s)", "for", "kind", "host", "unit", "extra s", "cut short", "new DAG s"
    );
    for a in applied {
        s.push_str(&format!(
            "{:>7.1}  {:>5.1}  {:<9}  {:<hw$}  {:<22}  {:>8}  {:>9}  {:>9}{}\n",
            a.applied - t0,
            a.healed - a.applied,
            a.fault.kind.name(),
            a.fault.host,
            a.fault.unit.as_deref().unwrap_or(""),
            a.extra_s.map_or("-".into(), |x| format!("{x:.1}")),
            a.cut_short,
            a.new_dag_s.map_or("-".into(), |x| format!("{x:.1}")),
            a.error
                .as_deref()
                .map_or(String::new(), |e| format!("  ERROR {e}"))
        ));
    }
    s
}

pub fn render_classes(c: &[ClassFigure]) -> String {
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
    let mut s = format!(
        "{:<10}  {:>6}  {:>15}  {:>12}  {:>18}\n",
        "class", "faults", "median extra s", "max extra s", "median new DAG s"
    );
    for c in c {
        s.push_str(&format!(
            "{:<10}  {:>6}  {:>15}  {:>12}  {:>18}\n",
            c.class,
            c.faults,
            f(c.median_extra_s),
            f(c.max_extra_s),
            f(c.median_new_dag_s)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::FaultKind;

    fn applied(class: &str, from: f64, to: f64) -> Applied {
        Applied {
            fault: Fault {
                at_s: 0.0,
                duration_s: to - from,
                host: "h".into(),
                kind: FaultKind::Crash,
                unit: None,
            },
            class: class.into(),
            applied: from,
            healed: to,
            extra_s: None,
            cut_short: 0,
            new_dag_s: None,
            error: None,
        }
    }

    #[test]
    fn a_fault_costs_the_longest_overlapping_run_beyond_the_baseline() {
        let mut a = vec![
            applied("queue", 100.0, 110.0),
            applied("worker", 300.0, 310.0),
        ];
        // runs: one before both faults, two overlapping the first, none near the second
        let runs = [(10.0, 40.0), (90.0, 125.0), (105.0, 170.0)];
        figures(&mut a, &runs, &[], 30.0);
        assert_eq!(a[0].extra_s, Some(35.0));
        assert_eq!(a[1].extra_s, None);
        let c = class_figures(&a);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].class, "queue");
        assert_eq!(c[0].median_extra_s, Some(35.0));
        assert_eq!(c[1].median_extra_s, None);
    }

    #[test]
    fn the_baseline_is_the_median_of_the_runs_no_fault_touched() {
        let a = vec![applied("queue", 100.0, 110.0)];
        // (0, 30) and (200, 236) are clean; (90, 150) overlaps the fault
        let runs = [(0.0, 30.0), (90.0, 150.0), (200.0, 236.0)];
        assert_eq!(baseline_of(32.0, &runs, &a), 32.0);
        assert_eq!(baseline_of(32.0, &[], &a), 32.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
