//! Operator steps under running DAGs (issue 15): instead of faults, a run may carry steps —
//! shell commands that add, remove or roll hosts (`cluster/add.sh worker && hfplay …`). They
//! run one after another, a healthy gap before each, while the workload goes on; each is
//! recorded as an [`Applied`] of kind `step`, so its extra DAG time and the invariants are
//! measured exactly as a fault's are.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::figures::Applied;
use crate::run::now;
use crate::schedule::{Fault, FaultKind};

/// One step: a name for the tables and the command (`sh -c`).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub command: String,
}

impl Step {
    /// `NAME=COMMAND` as given on the command line.
    pub fn parse(s: &str) -> Result<Step, String> {
        let (name, command) = s
            .split_once('=')
            .ok_or_else(|| format!("step {s:?}: expected NAME=COMMAND"))?;
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("step {s:?}: the name must be one word"));
        }
        if command.is_empty() {
            return Err(format!("step {name}: empty command"));
        }
        Ok(Step {
            name: name.to_string(),
            command: command.to_string(),
        })
    }
}

/// Runs the steps in order, `gap` seconds of undisturbed workload before each; each command's
/// output goes to `out/step-N-NAME.log`. Stops at the first step that fails (its error is in
/// its `Applied`): what follows a failed step would measure a cluster in an unknown shape.
/// `say` reports progress.
pub fn run(steps: &[Step], gap: f64, out: &Path, t0: f64, say: &dyn Fn(&str)) -> Vec<Applied> {
    let mut applied = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        std::thread::sleep(Duration::from_secs_f64(gap.max(0.0)));
        let log = out.join(format!("step-{}-{}.log", i + 1, step.name));
        say(&format!(
            "step {}: {} (log {})",
            step.name,
            step.command,
            log.display()
        ));
        let a0 = now();
        let error = run_one(&step.command, &log).err();
        let a1 = now();
        say(&format!(
            "step {} {} in {:.1} s",
            step.name,
            error
                .as_deref()
                .map_or("done".to_string(), |e| format!("FAILED ({e})")),
            a1 - a0
        ));
        applied.push(Applied {
            fault: Fault {
                at_s: a0 - t0,
                duration_s: a1 - a0,
                host: step.name.clone(),
                kind: FaultKind::Step,
                unit: None,
            },
            class: "step".to_string(),
            applied: a0,
            healed: a1,
            extra_s: None,
            cut_short: 0,
            new_dag_s: None,
            error: error.clone(),
        });
        if error.is_some() {
            break;
        }
    }
    applied
}

fn run_one(command: &str, log: &Path) -> Result<(), String> {
    let file = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let status = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| format!("starting sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        let tail = std::fs::read_to_string(log)
            .map(|t| {
                let lines: Vec<&str> = t.lines().rev().take(3).collect();
                lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
            })
            .unwrap_or_default();
        Err(format!("exit {status}: {tail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_command() {
        let s = Step::parse("add-worker=cluster/add.sh worker && hfplay x=y").unwrap();
        assert_eq!(s.name, "add-worker");
        assert_eq!(s.command, "cluster/add.sh worker && hfplay x=y");
        assert!(Step::parse("no command").is_err());
        assert!(Step::parse("two words=true").is_err());
        assert!(Step::parse("x=  ").is_err());
    }

    #[test]
    fn runs_in_order_and_stops_at_a_failure() {
        let dir = std::env::temp_dir().join(format!("hf-steps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let steps: Vec<Step> = ["a=echo one", "b=echo two >&2; exit 3", "c=true"]
            .iter()
            .map(|s| Step::parse(s).unwrap())
            .collect();
        let applied = run(&steps, 0.0, &dir, now(), &|_| {});
        assert_eq!(applied.len(), 2, "the step after a failure does not run");
        assert!(applied[0].error.is_none());
        let e = applied[1].error.as_deref().unwrap();
        assert!(e.contains("two"), "{e}");
        assert_eq!(applied[1].fault.kind, FaultKind::Step);
        assert!(applied[1].healed >= applied[1].applied);
        let log = std::fs::read_to_string(dir.join("step-1-a.log")).unwrap();
        assert_eq!(log, "one\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
