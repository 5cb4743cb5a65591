//! Fault schedules: which fault hits which host when, and for how long — drawn from a seed or
//! read from a file. At most one host is faulty at a time unless the caller allows overlap, and
//! every fault has an end (the runner heals it then), so a schedule always ends healed.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What happens to a host (issue 10's fault kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9` of one component's processes (its systemd unit restarts it).
    Kill9,
    /// The whole host dies (`docker kill`) and comes back after the duration (`docker start`).
    Crash,
    /// Every process of the host stops (`docker pause`) and thaws after the duration.
    Freeze,
    /// The host is cut off the cluster network and reconnected after the duration.
    Partition,
    /// The host's traffic is delayed and partly dropped (`tc netem`) for the duration.
    Netem,
    /// Not a fault: an operator's step (a command: add, remove or roll hosts) run during the
    /// workload, recorded like a fault so that its cost is measured the same way (`steps.rs`).
    /// Never drawn by a schedule; `host` holds the step's name.
    Step,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill9,
        FaultKind::Crash,
        FaultKind::Freeze,
        FaultKind::Partition,
        FaultKind::Netem,
    ];

    /// How long the fault lasts, in seconds (`kill9` is instantaneous).
    fn duration_range(self) -> (f64, f64) {
        match self {
            FaultKind::Kill9 => (0.0, 0.0),
            FaultKind::Crash => (5.0, 15.0),
            FaultKind::Freeze => (31.0, 45.0),
            FaultKind::Partition => (30.0, 60.0),
            FaultKind::Netem => (20.0, 40.0),
            FaultKind::Step => (0.0, 0.0),
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill9 => "kill9",
            FaultKind::Crash => "crash",
            FaultKind::Freeze => "freeze",
            FaultKind::Partition => "partition",
            FaultKind::Netem => "netem",
            FaultKind::Step => "step",
        }
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Seconds after the run's start.
    pub at_s: f64,
    /// Seconds until it is healed (0 for `kill9`).
    pub duration_s: f64,
    pub host: String,
    pub kind: FaultKind,
    /// For `kill9`: the systemd unit whose processes are killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Fault {
    pub fn end_s(&self) -> f64 {
        self.at_s + self.duration_s
    }
}

/// A host faults may hit: its component class (`db`, `queue`, `scheduler`, `worker`, `web`)
/// and the units a `kill9` may pick.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub host: String,
    pub class: String,
    pub units: Vec<String>,
}

/// A fault's host `leader:CLASS` means the class's leader at the time the fault starts.
pub const LEADER_PREFIX: &str = "leader:";

/// The classes with a leader (db: the Postgres primary, scheduler: the lease holder) become one
/// `leader:CLASS` target each; the other classes keep their hosts.
pub fn leader_targets(targets: Vec<Target>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for t in targets {
        if t.class == "db" || t.class == "scheduler" {
            let host = format!("{LEADER_PREFIX}{}", t.class);
            if !out.iter().any(|o| o.host == host) {
                out.push(Target { host, ..t });
            }
        } else {
            out.push(t);
        }
    }
    out
}

/// How a random schedule is drawn.
#[derive(Debug, Clone)]
pub struct PlanSpec {
    pub seed: u64,
    pub count: usize,
    pub kinds: Vec<FaultKind>,
    /// When the first fault may start (the workload is running by then).
    pub start_s: f64,
    /// Healthy seconds between the end of one fault and the start of the next (recovery).
    pub gap_s: f64,
}

/// A random schedule: `count` faults, one host at a time, separated by `gap_s` of health.
/// The same seed and targets give the same schedule.
pub fn plan(spec: &PlanSpec, targets: &[Target]) -> Result<Vec<Fault>, String> {
    if targets.is_empty() {
        return Err("no hosts to fault".into());
    }
    if spec.kinds.is_empty() {
        return Err("no fault kinds to draw from".into());
    }
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut at = spec.start_s;
    let mut out = Vec::with_capacity(spec.count);
    for _ in 0..spec.count {
        let target = &targets[rng.gen_range(0..targets.len())];
        let kind = spec.kinds[rng.gen_range(0..spec.kinds.len())];
        out.push(fault_for(&mut rng, target, kind, at, false)?);
        at = out.last().map_or(at, Fault::end_s) + spec.gap_s;
    }
    Ok(out)
}

/// The bounded schedule of CI: each kind once on each component class (the first host of the
/// class), in a fixed order, one at a time, each for the shortest time of its kind (a freeze
/// still outlasts 30 s, a partition lasts 30 s) so the whole run stays within CI's budget.
pub fn bounded(
    targets: &[Target],
    kinds: &[FaultKind],
    start_s: f64,
    gap_s: f64,
) -> Result<Vec<Fault>, String> {
    let mut rng = StdRng::seed_from_u64(0);
    let classes: BTreeSet<&str> = targets.iter().map(|t| t.class.as_str()).collect();
    let mut at = start_s;
    let mut out = Vec::new();
    for class in classes {
        let Some(target) = targets.iter().find(|t| t.class == class) else {
            continue;
        };
        for &kind in kinds {
            if kind == FaultKind::Kill9 && target.units.is_empty() {
                continue;
            }
            let f = fault_for(&mut rng, target, kind, at, true)?;
            at = f.end_s() + gap_s;
            out.push(f);
        }
    }
    Ok(out)
}

fn fault_for(
    rng: &mut StdRng,
    target: &Target,
    kind: FaultKind,
    at: f64,
    shortest: bool,
) -> Result<Fault, String> {
    let (lo, hi) = kind.duration_range();
    let duration_s = if hi > lo && !shortest {
        (rng.gen_range(lo..hi) * 10.0).round() / 10.0
    } else {
        lo
    };
    let unit = if kind == FaultKind::Kill9 {
        if target.units.is_empty() {
            return Err(format!("{}: kill9 needs a unit to kill", target.host));
        }
        // The bounded run kills each class's main component (listed first); a random
        // schedule draws among them.
        let pick = if shortest {
            0
        } else {
            rng.gen_range(0..target.units.len())
        };
        Some(target.units[pick].clone())
    } else {
        None
    };
    Ok(Fault {
        at_s: (at * 10.0).round() / 10.0,
        duration_s,
        host: target.host.clone(),
        kind,
        unit,
    })
}

/// Checks a schedule read from a file: known hosts, `kill9` with a unit, and (unless overlap is
/// allowed) never two hosts faulty at once. Errors name the fault by its position.
pub fn validate(faults: &[Fault], targets: &[Target], allow_overlap: bool) -> Result<(), String> {
    for (i, f) in faults.iter().enumerate() {
        let n = i + 1;
        let leader_of_known_class = f
            .host
            .strip_prefix(LEADER_PREFIX)
            .is_some_and(|c| targets.iter().any(|t| t.class == c));
        if !leader_of_known_class && !targets.iter().any(|t| t.host == f.host) {
            return Err(format!("fault {n}: unknown host {:?}", f.host));
        }
        if f.at_s < 0.0 || f.duration_s < 0.0 {
            return Err(format!("fault {n}: negative time"));
        }
        if f.kind == FaultKind::Kill9 && f.unit.is_none() {
            return Err(format!("fault {n}: kill9 needs a unit"));
        }
        if f.kind != FaultKind::Kill9 && f.duration_s == 0.0 {
            return Err(format!("fault {n}: {} needs a duration", f.kind.name()));
        }
    }
    if !allow_overlap {
        let mut by_start: Vec<&Fault> = faults.iter().collect();
        by_start.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        for w in by_start.windows(2) {
            if w[1].at_s < w[0].end_s() && w[1].host != w[0].host {
                return Err(format!(
                    "faults on {} (at {} s) and {} (at {} s) overlap: at most one faulty host \
                     at a time (allow it with --allow-overlap)",
                    w[0].host, w[0].at_s, w[1].host, w[1].at_s
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<Target> {
        let t = |h: &str, c: &str, u: &[&str]| Target {
            host: h.into(),
            class: c.into(),
            units: u.iter().map(|s| s.to_string()).collect(),
        };
        vec![
            t("hf-db1", "db", &["postgresql@17-main"]),
            t("hf-queue1", "queue", &["rabbitmq-server"]),
            t("hf-worker1", "worker", &["airflow-worker"]),
            t("hf-worker2", "worker", &["airflow-worker"]),
        ]
    }

    #[test]
    fn random_plans_repeat_by_seed_and_never_overlap() {
        let spec = PlanSpec {
            seed: 7,
            count: 60,
            kinds: FaultKind::ALL.to_vec(),
            start_s: 20.0,
            gap_s: 15.0,
        };
        let a = plan(&spec, &targets()).unwrap();
        assert_eq!(a, plan(&spec, &targets()).unwrap());
        assert_ne!(
            a,
            plan(
                &PlanSpec {
                    seed: 8,
                    ..spec.clone()
                },
                &targets()
            )
            .unwrap()
        );
        assert_eq!(a.len(), 60);
        assert!(a[0].at_s >= 20.0);
        for w in a.windows(2) {
            assert!(w[1].at_s >= w[0].end_s() + 15.0 - 0.11, "{w:?}");
        }
        validate(&a, &targets(), false).unwrap();
        let kinds: BTreeSet<FaultKind> = a.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), 5, "60 draws reach every kind");
    }

    #[test]
    fn leader_targets_stand_for_their_class() {
        let t = leader_targets(targets());
        assert_eq!(t.iter().filter(|t| t.host == "leader:db").count(), 1);
        assert!(t.iter().all(|t| t.class != "db" || t.host == "leader:db"));
        let f = Fault {
            at_s: 1.0,
            duration_s: 5.0,
            host: "leader:db".into(),
            kind: FaultKind::Crash,
            unit: None,
        };
        assert!(validate(std::slice::from_ref(&f), &targets(), false).is_ok());
        let bad = Fault {
            host: "leader:nope".into(),
            ..f
        };
        assert!(validate(&[bad], &targets(), false).is_err());
    }

    #[test]
    fn bounded_plan_hits_each_class_with_each_kind_once() {
        let b = bounded(&targets(), &FaultKind::ALL, 10.0, 20.0).unwrap();
        // 3 classes (db, queue, worker) x 5 kinds, the first worker only.
        assert_eq!(b.len(), 15);
        assert!(b.iter().all(|f| f.host != "hf-worker2"));
        validate(&b, &targets(), false).unwrap();
    }

    #[test]
    fn bad_schedules_are_refused_with_the_fault_named() {
        let f = |h: &str, at: f64, d: f64, k: FaultKind| Fault {
            at_s: at,
            duration_s: d,
            host: h.into(),
            kind: k,
            unit: None,
        };
        let e = validate(&[f("nope", 0.0, 5.0, FaultKind::Crash)], &targets(), false).unwrap_err();
        assert!(e.contains("fault 1: unknown host"), "{e}");
        let e = validate(
            &[f("hf-db1", 0.0, 0.0, FaultKind::Kill9)],
            &targets(),
            false,
        )
        .unwrap_err();
        assert!(e.contains("kill9 needs a unit"), "{e}");
        let two = [
            f("hf-db1", 0.0, 30.0, FaultKind::Partition),
            f("hf-queue1", 10.0, 5.0, FaultKind::Crash),
        ];
        let e = validate(&two, &targets(), false).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        validate(&two, &targets(), true).unwrap();
    }
}
