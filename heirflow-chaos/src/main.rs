//! `heirflow-chaos`: faults under running DAGs, and what must still hold (issue 10).
//!
//! Built so far: schedules (`plan`: from a seed, or the bounded CI set; one faulty host at a
//! time), the ledger and its invariants (`ledger`), and the PNG timeline (`timeline`). Driving
//! the local cluster (applying the faults, the workload DAGs, the DB writer, the leases) comes
//! next; every piece here is a pure function of what such a run records.

mod faults;
mod invariants;
mod ledger;
mod ledger_server;
mod schedule;
mod timeline;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Cmd {
    /// Print a fault schedule for the hosts of an inventory.
    Plan {
        /// INI inventory with the groups db, queue, scheduler, worker, web.
        #[arg(short, long, default_value = "inventory/local/hosts.ini")]
        inventory: PathBuf,
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

/// The systemd units a `kill9` may pick on a host of each class.
fn units_of(class: &str) -> Vec<String> {
    let u: &[&str] = match class {
        "db" => &["postgresql@17-main", "heir-db"],
        "queue" => &["rabbitmq-server"],
        "scheduler" => &[
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "airflow-api-server",
        ],
        "worker" => &["airflow-worker"],
        "web" => &["airflow-api-server", "airflow-flower"],
        _ => &[],
    };
    u.iter().map(|s| s.to_string()).collect()
}

/// The fault targets of an INI inventory: hosts of the component groups, in file order.
fn targets(inventory: &Path) -> Result<Vec<Target>> {
    let text = std::fs::read_to_string(inventory)
        .with_context(|| format!("reading the inventory {}", inventory.display()))?;
    let mut out = Vec::new();
    let mut group = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(g) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = g.to_string();
            continue;
        }
        if ["db", "queue", "scheduler", "worker", "web"].contains(&group.as_str()) {
            if let Some(host) = line.split_whitespace().next() {
                out.push(Target {
                    host: host.to_string(),
                    class: group.clone(),
                    units: units_of(&group),
                });
            }
        }
    }
    if out.is_empty() {
        bail!(
            "{}: no host in the groups db, queue, scheduler, worker, web",
            inventory.display()
        );
    }
    Ok(out)
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
        Cmd::Plan {
            inventory,
            seed,
            count,
            kinds,
            bounded,
            gap,
            json,
        } => {
            let targets = targets(&inventory)?;
            let kinds = parse_kinds(&kinds)?;
            let faults = if bounded {
                schedule::bounded(&targets, &kinds, 20.0, gap)
            } else {
                schedule::plan(
                    &PlanSpec {
                        seed,
                        count,
                        kinds,
                        start_s: 20.0,
                        gap_s: gap,
                    },
                    &targets,
                )
            }
            .map_err(anyhow::Error::msg)?;
            schedule::validate(&faults, &targets, false).map_err(anyhow::Error::msg)?;
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
