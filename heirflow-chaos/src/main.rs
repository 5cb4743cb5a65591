//! `heirflow-chaos`: faults under running DAGs, and what must still hold (issue 10).
//!
//! `run` drives a whole run on the local cluster (`src/run.rs`); the other subcommands are its
//! pieces one at a time: schedules (`plan`), one fault (`fault`), the ledger endpoint and
//! summary, the invariants of recorded observations (`check`) and the PNG timeline.

mod airflow;
mod cluster;
mod db;
mod faults;
mod figures;
mod health;
mod invariants;
mod ledger;
mod ledger_server;
mod run;
mod schedule;
mod steps;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use cluster::Cluster;
use schedule::{Fault, FaultKind, PlanSpec, Target};

#[derive(Parser)]
#[command(
    name = "heirflow-chaos",
    version,
    about = "Host faults under running DAGs, and the invariants that must hold"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How a schedule is drawn: from a seed, or the bounded CI set.
#[derive(clap::Args)]
struct ScheduleArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of random faults (ignored with --bounded).
    #[arg(long, default_value_t = 50)]
    count: usize,
    /// Fault kinds to draw from (comma-separated): kill9, crash, freeze, partition, netem.
    #[arg(long, default_value = "kill9,crash,freeze,partition,netem")]
    kinds: String,
    /// Each kind once on each component class (the CI run).
    #[arg(long)]
    bounded: bool,
    /// Healthy seconds between two faults.
    #[arg(long, default_value_t = 30.0)]
    gap: f64,
    /// Only these component classes (comma-separated; all when empty).
    #[arg(long, default_value = "")]
    classes: String,
    /// Aim the db and scheduler faults at whoever leads the class when the fault starts
    /// (`leader:db`, `leader:scheduler`) instead of a fixed host.
    #[arg(long)]
    leaders: bool,
}

impl ScheduleArgs {
    fn draw(&self, mut targets: Vec<Target>) -> Result<Vec<Fault>> {
        let classes: Vec<&str> = self
            .classes
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if !classes.is_empty() {
            if let Some(c) = classes.iter().find(|c| !cluster::CLASSES.contains(c)) {
                bail!(
                    "unknown component class {c:?} (one of {})",
                    cluster::CLASSES.join(", ")
                );
            }
            targets.retain(|t| classes.contains(&t.class.as_str()));
        }
        if self.leaders {
            targets = schedule::leader_targets(targets);
        }
        let kinds = parse_kinds(&self.kinds)?;
        let faults = if self.bounded {
            schedule::bounded(&targets, &kinds, 20.0, self.gap)
        } else {
            schedule::plan(
                &PlanSpec {
                    seed: self.seed,
                    count: self.count,
                    kinds,
                    start_s: 20.0,
                    gap_s: self.gap,
                },
                &targets,
            )
        }
        .map_err(anyhow::Error::msg)?;
        schedule::validate(&faults, &targets, false).map_err(anyhow::Error::msg)?;
        Ok(faults)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// A whole chaos run on the local cluster: workload, DB writer, lease watcher and the
    /// schedule's faults; then the invariants (exit 1 when one fails), the figures per fault
    /// and per component class, and the timeline.
    Run {
        /// Inventory directory (hosts.ini, group_vars/all.yml, .secrets/).
        #[arg(short, long, default_value = "inventory/local")]
        inventory: PathBuf,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// A schedule file (JSON, as `plan --json` prints it) instead of drawing one.
        #[arg(long, conflicts_with_all = ["seed", "bounded"])]
        schedule_file: Option<PathBuf>,
        /// Operator steps instead of faults, `NAME=COMMAND` (repeatable): each command runs
        /// (`sh -c`, output in OUT/step-N-NAME.log) after --step-gap seconds of workload, the
        /// next when it ended; its extra DAG time is reported as a fault's.
        #[arg(long = "step", conflicts_with_all = ["schedule_file", "bounded"])]
        steps: Vec<String>,
        /// Seconds of undisturbed workload before each step.
        #[arg(long, default_value_t = 30.0)]
        step_gap: f64,
        /// Trigger a DAG run this often (seconds).
        #[arg(long, default_value_t = 30.0)]
        every: f64,
        /// Keep triggering this long after the last heal (seconds).
        #[arg(long, default_value_t = 30.0)]
        tail: f64,
        /// Wait at most this long for the DAG runs to end after the schedule (seconds).
        #[arg(long, default_value_t = 900.0)]
        settle: f64,
        /// Output folder: report.json, observed.json, ledger.jsonl, schedule.json, timeline.png.
        #[arg(short, long, default_value = "chaos-out")]
        out: PathBuf,
        /// Ledger endpoint port (on the cluster network's gateway address).
        #[arg(long, default_value_t = 7480)]
        port: u16,
        #[arg(long, default_value = "heirflow")]
        network: String,
        /// The Docker volume holding the shared DAG folder.
        #[arg(long, default_value = "heirflow-dags")]
        dag_volume: String,
        /// The report as JSON on stdout instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Print a fault schedule for the hosts of an inventory.
    Plan {
        /// Inventory directory or its hosts.ini.
        #[arg(short, long, default_value = "inventory/local")]
        inventory: PathBuf,
        #[command(flatten)]
        schedule: ScheduleArgs,
        #[arg(long)]
        json: bool,
    },
    /// Apply one fault to a host of the local cluster, hold it, heal it.
    Fault {
        #[arg(long)]
        host: String,
        /// kill9, crash, freeze, partition or netem.
        #[arg(long)]
        kind: String,
        /// For kill9: the systemd unit.
        #[arg(long)]
        unit: Option<String>,
        /// Seconds between apply and heal (ignored for kill9).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// The hosts' Docker network.
        #[arg(long, default_value = "heirflow")]
        network: String,
    },
    /// Serve the ledger endpoint (`POST /event`, one JSON line each), appending to FILE.
    LedgerServe {
        #[arg(long, default_value = "0.0.0.0:7480")]
        listen: String,
        file: PathBuf,
    },
    /// Summarise a ledger: executions, tries that ran twice, unfinished executions.
    Ledger { file: PathBuf },
    /// Check the invariants of a run: its ledger and what it observed (JSON: expected,
    /// dag_runs, acknowledged, stored, leases). Exit 1 when one fails.
    Check {
        #[arg(long)]
        ledger: PathBuf,
        #[arg(long)]
        observed: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Draw the PNG timeline of a ledger and a schedule.
    Timeline {
        #[arg(long)]
        ledger: PathBuf,
        /// The schedule (JSON, as `plan --json` prints it).
        #[arg(long)]
        schedule: PathBuf,
        /// Unix time the schedule's seconds count from.
        #[arg(long)]
        t0: f64,
        #[arg(short, long)]
        out: PathBuf,
    },
}

fn parse_kinds(s: &str) -> Result<Vec<FaultKind>> {
    s.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| FaultKind::parse(k).with_context(|| format!("unknown fault kind {k:?}")))
        .collect()
}

fn print_schedule(faults: &[Fault]) {
    println!(
        "{:>8}  {:>6}  {:<10}  {:<12}  unit",
        "at (s)", "for", "kind", "host"
    );
    for f in faults {
        println!(
            "{:>8.1}  {:>6.1}  {:<10}  {:<12}  {}",
            f.at_s,
            f.duration_s,
            f.kind.name(),
            f.host,
            f.unit.as_deref().unwrap_or("")
        );
    }
    let end = faults.iter().map(Fault::end_s).fold(0.0, f64::max);
    println!("{} faults, the last healed at {end:.0} s", faults.len());
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run {
            inventory,
            schedule,
            schedule_file,
            steps,
            step_gap,
            every,
            tail,
            settle,
            out,
            port,
            network,
            dag_volume,
            json,
        } => {
            let mut cluster = Cluster::load(&inventory)?;
            let leaders = run::leaders_first(&mut cluster);
            eprintln!("leaders (faulted first): {}", leaders.join(", "));
            let steps: Vec<steps::Step> = steps
                .iter()
                .map(|s| steps::Step::parse(s).map_err(anyhow::Error::msg))
                .collect::<Result<_>>()?;
            let faults = match schedule_file {
                _ if !steps.is_empty() => Vec::new(),
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let f: Vec<Fault> = serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a schedule", p.display()))?;
                    schedule::validate(&f, &cluster.targets(), false)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                    f
                }
                None => schedule.draw(cluster.targets())?,
            };
            let pass = run::run(run::RunSpec {
                cluster,
                faults,
                steps,
                step_gap_s: step_gap,
                out,
                network,
                dag_volume,
                every_s: every,
                tail_s: tail,
                settle_s: settle,
                port,
                json,
            })?;
            if !pass {
                bail!("an invariant failed");
            }
        }
        Cmd::Plan {
            inventory,
            schedule,
            json,
        } => {
            let faults = schedule.draw(Cluster::load(&inventory)?.targets())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&faults)?);
            } else {
                print_schedule(&faults);
            }
        }
        Cmd::Fault {
            host,
            kind,
            unit,
            duration,
            network,
        } => {
            let kind =
                FaultKind::parse(&kind).with_context(|| format!("unknown fault kind {kind:?}"))?;
            let f = Fault {
                at_s: 0.0,
                duration_s: if kind == FaultKind::Kill9 {
                    0.0
                } else {
                    duration
                },
                host,
                kind,
                unit,
            };
            let cluster = faults::Cluster { network };
            let t = std::time::Instant::now();
            let memo = faults::apply(&cluster, &f).map_err(anyhow::Error::msg)?;
            println!(
                "{} {}: applied in {:.2} s",
                f.kind.name(),
                f.host,
                t.elapsed().as_secs_f64()
            );
            std::thread::sleep(std::time::Duration::from_secs_f64(f.duration_s));
            let t = std::time::Instant::now();
            faults::heal(&cluster, &f, memo.as_deref()).map_err(anyhow::Error::msg)?;
            println!(
                "{} {}: healed in {:.2} s",
                f.kind.name(),
                f.host,
                t.elapsed().as_secs_f64()
            );
        }
        Cmd::LedgerServe { listen, file } => {
            let listener = std::net::TcpListener::bind(&listen)
                .with_context(|| format!("listening on {listen}"))?;
            eprintln!("ledger: POST http://{listen}/event -> {}", file.display());
            ledger_server::serve(listener, &file).map_err(anyhow::Error::msg)?;
        }
        Cmd::Ledger { file } => {
            let events = ledger::load(&file).map_err(anyhow::Error::msg)?;
            let execs = ledger::executions(&events);
            let unfinished = execs.iter().filter(|x| x.end.is_none()).count();
            let doubled = ledger::doubled_tries(&execs);
            println!(
                "{} executions, {} task instances finished, {unfinished} executions cut short, {} tries ran more than once",
                execs.len(),
                ledger::finished(&execs).len(),
                doubled.len()
            );
            for ((key, tr), hosts) in &doubled {
                println!(
                    "  twice: {}/{}/{} try {tr} on {}",
                    key.0,
                    key.1,
                    key.2,
                    hosts.join(", ")
                );
            }
            if !doubled.is_empty() {
                bail!("a try ran more than once");
            }
        }
        Cmd::Check {
            ledger: lpath,
            observed,
            json,
        } => {
            let events = ledger::load(&lpath).map_err(anyhow::Error::msg)?;
            let text = std::fs::read_to_string(&observed)
                .with_context(|| format!("reading {}", observed.display()))?;
            let mut o: invariants::Observed = serde_json::from_str(&text)
                .with_context(|| format!("{}: not an observation document", observed.display()))?;
            o.executions = ledger::executions(&events);
            let checks = invariants::check(&o);
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", invariants::render(&checks));
            }
            if checks.iter().any(|c| !c.pass) {
                bail!("an invariant failed");
            }
        }
        Cmd::Timeline {
            ledger: lpath,
            schedule: spath,
            t0,
            out,
        } => {
            let events = ledger::load(&lpath).map_err(anyhow::Error::msg)?;
            let execs = ledger::executions(&events);
            let text = std::fs::read_to_string(&spath)
                .with_context(|| format!("reading {}", spath.display()))?;
            let faults: Vec<Fault> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a schedule", spath.display()))?;
            let mut hosts: Vec<String> = faults
                .iter()
                .map(|f| f.host.clone())
                .chain(execs.iter().map(|x| x.host.clone()))
                .collect();
            hosts.sort();
            hosts.dedup();
            timeline::draw(
                &timeline::Timeline {
                    hosts: &hosts,
                    faults: &faults,
                    executions: &execs,
                    runs: &[],
                    t0,
                    title: format!("{} faults, {} executions", faults.len(), execs.len()),
                },
                &out,
            )
            .map_err(anyhow::Error::msg)?;
            println!("timeline: {}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heirflow-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
