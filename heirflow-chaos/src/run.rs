//! A whole chaos run on the local cluster: the ledger endpoint, the workload (ledger DAG runs
//! triggered at a steady pace through any api-server), the DB writer and the lease watcher run
//! while the schedule's faults are applied and healed one after another; then the runner waits
//! for every DAG run to end, checks the invariants, and writes what it saw (`report.json`,
//! `observed.json`, the ledger, the schedule as applied, `timeline.png`) into the output folder.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::airflow::{Api, DagRun};
use crate::cluster::Cluster;
use crate::faults;
use crate::figures::{
    baseline_of, class_figures, figures, render_classes, render_faults, Applied, ClassFigure,
    RECOVERY_S,
};
use crate::health::{health, Health};
use crate::invariants::{self, Observed};
use crate::ledger::{self, Execution};
use crate::schedule::{self, Fault};
use crate::steps::{self, Step};
use crate::timeline::{self, RunSpan};
use crate::{db, ledger_server};

pub const DAG_ID: &str = "heirflow_ledger";
const DAG_FILE: &str = include_str!("../dags/heirflow_ledger.py");

pub struct RunSpec {
    pub cluster: Cluster,
    pub faults: Vec<Fault>,
    /// Operator steps instead of faults (`steps.rs`): run in order, `step_gap_s` apart.
    pub steps: Vec<Step>,
    pub step_gap_s: f64,
    pub out: PathBuf,
    /// The hosts' Docker network and DAG volume.
    pub network: String,
    pub dag_volume: String,
    /// Trigger a DAG run this often (seconds).
    pub every_s: f64,
    /// Keep triggering this long after the last fault healed.
    pub tail_s: f64,
    /// Give up waiting for the DAG runs to end after this long (after the schedule).
    pub settle_s: f64,
    pub port: u16,
    /// Print the report as JSON on stdout instead of the tables (progress stays on stderr).
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub baseline_s: f64,
    pub dag_runs: usize,
    pub executions: usize,
    pub acknowledged: usize,
    pub faults: Vec<Applied>,
    pub classes: Vec<ClassFigure>,
    pub checks: Vec<invariants::Check>,
    pub health: Health,
}

/// Unix time, seconds (the runner's and the ledger's clock).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn say(t0: f64, msg: &str) {
    eprintln!("[{:>7.1} s] {msg}", now() - t0);
}

/// Where the hosts reach the controller: their network's gateway.
fn gateway(network: &str) -> Result<String> {
    let g = faults::docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        network,
    ])
    .map_err(|e| anyhow!("{e} (is the local cluster up?)"))?;
    if g.is_empty() {
        bail!("network {network} has no gateway address");
    }
    Ok(g)
}

/// The leaders now: the Postgres primary (the db host holding the floating IP) and the
/// scheduler group's lease holder, as (class, host). Best effort: what cannot be asked is
/// left out.
pub fn leaders(c: &Cluster) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(vip) = c.floating_ip.clone() else {
        return out;
    };
    let needle = format!(" {vip}/");
    if let Some(h) = c.group("db").find(|h| {
        faults::docker(&["exec", &h.name, "ip", "-o", "addr", "show"])
            .is_ok_and(|out| out.contains(&needle))
    }) {
        out.push(("db".to_string(), h.name.clone()));
    }
    // The registry is readable only by its own login (the airflow login is refused).
    let Ok(password) = c.secret("postgres_heir_registry_password") else {
        return out;
    };
    let Ok(tls) = c.pg_tls() else {
        return out;
    };
    let cfg = db::config(&vip, "heir_registry", &password, "airflow", &tls);
    if let Ok(mut client) = cfg.connect() {
        let q = "SELECT m.host FROM heirflow_leases l JOIN heirflow_members m \
                 ON m.grp = l.grp AND m.member = l.holder \
                 WHERE l.grp = 'scheduler' AND l.expires_at > now()";
        if let Ok(Some(row)) = client.query_opt(q, &[]) {
            out.push(("scheduler".to_string(), row.get::<_, String>(0)));
        }
    }
    out
}

/// Puts the leaders first in their groups, so that "the first host of each class" of a
/// bounded schedule is the one whose loss costs the most.
pub fn leaders_first(c: &mut Cluster) -> Vec<String> {
    let leaders: Vec<String> = leaders(c).into_iter().map(|(_, h)| h).collect();
    // A stable sort: everyone else keeps the file order (schedules pick per class).
    c.hosts.sort_by_key(|h| !leaders.contains(&h.name));
    leaders
}

/// A fault aimed at `leader:CLASS` hits whoever leads that class when it starts.
fn resolve(c: &Cluster, f: &Fault) -> Result<Fault, String> {
    let Some(class) = f.host.strip_prefix(schedule::LEADER_PREFIX) else {
        return Ok(f.clone());
    };
    leaders(c)
        .into_iter()
        .find(|(k, _)| k == class)
        .map(|(_, host)| Fault { host, ..f.clone() })
        .ok_or_else(|| format!("no {class} leader found to fault"))
}

/// Puts the ledger DAG into the shared DAG folder (the volume every Airflow host mounts);
/// returns the folder.
fn install_dag(volume: &str) -> Result<PathBuf> {
    let dir = faults::docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", volume])
        .map_err(|e| anyhow!("{e} (is the local cluster up?)"))?;
    let path = Path::new(&dir).join("heirflow_ledger.py");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(DAG_FILE) {
        std::fs::write(&path, DAG_FILE)
            .with_context(|| format!("writing the ledger DAG to {}", path.display()))?;
    }
    Ok(PathBuf::from(dir))
}

/// The probe DAG files are named like this (removed again at the end of the run).
const PROBE_PREFIX: &str = "heirflow_chaos_probe_";

/// Writes a new one-task DAG file into the DAG folder and waits until the API knows the DAG:
/// how long a new DAG file takes to be parsed while the fault goes on. `None` after `limit`.
fn probe_new_dag(api: &Api, dags: &Path, id: &str, limit: Duration) -> Option<f64> {
    let t = Instant::now();
    let text = format!(
        "# heirflow-chaos probe: a new DAG file written when a fault started\n\
         from datetime import datetime\n\
         from airflow.providers.standard.operators.empty import EmptyOperator\n\
         from airflow.sdk import DAG\n\n\
         with DAG(dag_id=\"{id}\", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,\n\
                  tags=[\"heirflow\", \"chaos\"]):\n    EmptyOperator(task_id=\"noop\")\n"
    );
    std::fs::write(dags.join(format!("{id}.py")), text).ok()?;
    while t.elapsed() < limit {
        if api.has_dag(id).unwrap_or(false) {
            return Some(t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

fn remove_probes(dags: &Path) {
    if let Ok(rd) = std::fs::read_dir(dags) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(PROBE_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Triggers `prefix-NNN` every `every` until `until` (unix s) or `stop`; returns the run ids.
fn workload(
    api: &Api,
    prefix: &str,
    conf: &serde_json::Value,
    every: f64,
    until: f64,
    t0: f64,
    stop: &AtomicBool,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = now();
    while now() < until && !stop.load(Ordering::Relaxed) {
        if now() >= next {
            let id = format!("{prefix}-{:03}", ids.len());
            // Retried until it goes through: a run that could not be triggered is not one of
            // the workload's (the trigger's own failure is the api-server's figure, in the log).
            let mut tries = 0;
            loop {
                match api.trigger(DAG_ID, &id, conf.clone()) {
                    Ok(()) => {
                        ids.push(id);
                        break;
                    }
                    Err(e) => {
                        tries += 1;
                        if tries == 1 || tries % 10 == 0 {
                            say(t0, &format!("trigger {id}: {e:#} (retrying)"));
                        }
                        if stop.load(Ordering::Relaxed) || now() > until + 120.0 {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(2));
                    }
                }
            }
            next += every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ids
}

/// Waits until every run ended (or `deadline`), printing progress; returns the last states.
fn settle(api: &Api, ids: &[String], deadline: f64, t0: f64) -> Vec<Option<DagRun>> {
    let mut last: Vec<Option<DagRun>> = vec![None; ids.len()];
    let mut shown = String::new();
    loop {
        for (i, id) in ids.iter().enumerate() {
            if last[i].as_ref().is_some_and(DagRun::finished) {
                continue;
            }
            if let Ok(r) = api.dag_run(DAG_ID, id) {
                last[i] = Some(r);
            }
        }
        let done = last.iter().flatten().filter(|r| r.finished()).count();
        let line = format!("DAG runs ended: {done} of {}", ids.len());
        if line != shown {
            say(t0, &line);
            shown = line;
        }
        if done == ids.len() || now() > deadline {
            return last;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

pub fn run(spec: RunSpec) -> Result<bool> {
    let c = &spec.cluster;
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("creating {}", spec.out.display()))?;
    let gw = gateway(&spec.network)?;
    let vip = c
        .floating_ip
        .clone()
        .context("the inventory sets no heirflow_floating_ip")?;
    let admin = c.secret("airflow_admin_password")?;
    let tls = c.pg_tls()?;
    let dbcfg = db::config(
        &vip,
        "airflow",
        &c.secret("postgres_airflow_password")?,
        "airflow",
        &tls,
    );
    // heir-supervisor's registry: its own login (the airflow login may not read it).
    let regcfg = db::config(
        &vip,
        "heir_registry",
        &c.secret("postgres_heir_registry_password")?,
        "airflow",
        &tls,
    );
    // HTTPS (each certificate names its host's address) once the deploy made the cluster CA.
    let ca = c.ca_file();
    let scheme = if ca.is_some() { "https" } else { "http" };
    let bases: Vec<String> = c
        .group("scheduler")
        .chain(c.group("web"))
        .map(|h| format!("{scheme}://{}:8080", h.address))
        .collect();
    let api = Arc::new(Api::new(bases, "admin", &admin, ca.as_deref())?);
    let fault_cluster = faults::Cluster {
        network: spec.network.clone(),
    };

    // Faults left over from an interrupted run would make everything below misleading (an
    // interrupted run is healed here, by the next one).
    for h in &c.hosts {
        faults::heal_host(&fault_cluster, &h.name, &h.address).map_err(anyhow::Error::msg)?;
    }

    let ledger_path = spec.out.join("ledger.jsonl");
    let _ = std::fs::remove_file(&ledger_path);
    let listen = format!("{gw}:{}", spec.port);
    let listener = TcpListener::bind(&listen)
        .with_context(|| format!("listening on {listen} for the ledger"))?;
    {
        let p = ledger_path.clone();
        std::thread::spawn(move || {
            if let Err(e) = ledger_server::serve(listener, &p) {
                eprintln!("ledger endpoint stopped: {e}");
            }
        });
    }
    let conf = json!({ "ledger_url": format!("http://{listen}/event") });
    let t_start = now();
    let stamp = chrono::DateTime::from_timestamp(t_start as i64, 0).map_or_else(
        || "run".to_string(),
        |d| d.format("%Y%m%dT%H%M%S").to_string(),
    );

    say(
        t_start,
        "installing the ledger DAG and waiting for it to be parsed",
    );
    let dags = install_dag(&spec.dag_volume)?;
    remove_probes(&dags);
    let parse_deadline = Instant::now() + Duration::from_secs(300);
    while !api.has_dag(DAG_ID).unwrap_or(false) {
        if Instant::now() > parse_deadline {
            bail!("{DAG_ID} was not parsed within 300 s (dag-processor running?)");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    api.unpause(DAG_ID)?;

    // Baseline: one run with no fault, waited for; it also proves the pipeline works.
    let base_id = format!("chaos-{stamp}-baseline");
    api.trigger(DAG_ID, &base_id, conf.clone())?;
    let base = settle(&api, std::slice::from_ref(&base_id), now() + 600.0, t_start);
    let base = base.into_iter().flatten().next();
    let Some((bs, be)) = base
        .as_ref()
        .filter(|r| r.state == "success")
        .and_then(DagRun::span)
    else {
        bail!(
            "the baseline run {base_id} did not succeed without any fault (state {:?})",
            base.map(|r| r.state)
        );
    };
    let warmup = be - bs;
    say(
        t_start,
        &format!("warm-up run: {base_id} took {warmup:.1} s"),
    );

    // The clients that watch: DB writer and lease watcher.
    let stop = Arc::new(AtomicBool::new(false));
    let wstats = Arc::new(db::WriterStats::default());
    let writer = {
        let (cfg, run, stop, stats) = (dbcfg.clone(), stamp.clone(), stop.clone(), wstats.clone());
        std::thread::spawn(move || db::writer(cfg, run, Duration::from_millis(50), stop, stats))
    };
    let watcher = {
        let (cfg, stop) = (regcfg.clone(), stop.clone());
        std::thread::spawn(move || db::watch_leases(cfg, Duration::from_millis(500), stop))
    };

    let t0 = now();
    let last_heal = spec.faults.iter().map(Fault::end_s).fold(0.0, f64::max);
    // Steps take as long as they take: the workload then stops `tail` after the last one.
    let stepping = !spec.steps.is_empty();
    let until = if stepping {
        f64::INFINITY
    } else {
        t0 + last_heal + spec.tail_s
    };
    let wl_stop = Arc::new(AtomicBool::new(false));
    let wl = {
        let (api, conf, stop, prefix, every) = (
            api.clone(),
            conf.clone(),
            wl_stop.clone(),
            format!("chaos-{stamp}"),
            spec.every_s,
        );
        std::thread::spawn(move || workload(&api, &prefix, &conf, every, until, t0, &stop))
    };
    if stepping {
        say(
            t0,
            &format!(
                "{} operator steps, {:.0} s apart; a DAG run every {:.0} s",
                spec.steps.len(),
                spec.step_gap_s,
                spec.every_s
            ),
        );
    } else {
        say(
            t0,
            &format!(
                "{} faults over {last_heal:.0} s; a DAG run every {:.0} s",
                spec.faults.len(),
                spec.every_s
            ),
        );
    }

    let mut applied = Vec::new();
    // Joined after the schedule: a probe may outlast its fault, and waiting for it here would
    // eat the healthy gap before the next fault.
    let mut probes = Vec::new();
    let mut heal_error = None;
    for f in &spec.faults {
        let at = t0 + f.at_s;
        while now() < at {
            std::thread::sleep(Duration::from_millis(100));
        }
        let a0 = now();
        let (f, memo, error) = match resolve(c, f) {
            Ok(f) => match faults::apply(&fault_cluster, &f) {
                Ok(m) => (f, m, None),
                Err(e) => (f, None, Some(e)),
            },
            Err(e) => (f.clone(), None, Some(e)),
        };
        let f = &f;
        let class = c.class_of(&f.host).unwrap_or("?").to_string();
        let probe = {
            let (api, dags) = (api.clone(), dags.clone());
            let id = format!("{PROBE_PREFIX}{}_{}", stamp.to_lowercase(), applied.len());
            std::thread::spawn(move || probe_new_dag(&api, &dags, &id, Duration::from_secs(180)))
        };
        probes.push(probe);
        say(
            t0,
            &format!(
                "{} {}{} for {:.0} s{}",
                f.kind.name(),
                f.host,
                f.unit
                    .as_deref()
                    .map_or(String::new(), |u| format!(" ({u})")),
                f.duration_s,
                error.as_deref().map_or(String::new(), |e| format!(": {e}"))
            ),
        );
        while now() < a0 + f.duration_s {
            std::thread::sleep(Duration::from_millis(100));
        }
        // (A fault whose leader could not be found was never applied to any host.)
        let real_host = c.class_of(&f.host).is_some();
        let healed = if real_host {
            faults::heal(&fault_cluster, f, memo.as_deref())
        } else {
            Ok(())
        };
        if let Err(e) = healed {
            say(t0, &format!("healing {}: {e}", f.host));
            heal_error.get_or_insert(e);
        }
        let healed = now();
        let acks = wstats.acknowledged.lock().map_or(0, |a| a.len());
        say(
            t0,
            &format!(
                "healed {}; {acks} commits acknowledged, {} writer errors",
                f.host,
                wstats.errors.load(Ordering::Relaxed)
            ),
        );
        applied.push(Applied {
            fault: f.clone(),
            class,
            applied: a0,
            healed,
            extra_s: None,
            cut_short: 0,
            new_dag_s: None,
            error,
        });
        if heal_error.is_some() {
            break;
        }
    }
    if let Some(e) = heal_error {
        wl_stop.store(true, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        bail!("a fault could not be healed, the run stops here: {e}");
    }
    if stepping {
        applied = steps::run(&spec.steps, spec.step_gap_s, &spec.out, t0, &|m| say(t0, m));
        std::thread::sleep(Duration::from_secs_f64(spec.tail_s.max(0.0)));
        wl_stop.store(true, Ordering::Relaxed);
    }
    let step_failed = applied
        .iter()
        .any(|a| a.fault.kind == schedule::FaultKind::Step && a.error.is_some());

    let ids = wl.join().unwrap_or_default();
    say(
        t0,
        &format!("schedule done; waiting for {} DAG runs", ids.len()),
    );
    let states = settle(&api, &ids, now() + spec.settle_s, t0);
    for (a, p) in applied.iter_mut().zip(probes) {
        a.new_dag_s = p.join().ok().flatten();
    }
    remove_probes(&dags);
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    let leases = watcher
        .join()
        .map(|s| db::intervals(&s))
        .unwrap_or_default();
    let acknowledged = wstats
        .acknowledged
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let stored: BTreeSet<u64> = db::stored(&dbcfg, &stamp)?.into_iter().collect();

    let mut expected = BTreeSet::new();
    let mut dag_runs = Vec::new();
    let mut spans = Vec::new();
    for (id, st) in ids.iter().zip(&states) {
        let state = st
            .as_ref()
            .map_or("unknown".to_string(), |r| r.state.clone());
        dag_runs.push((DAG_ID.to_string(), id.clone(), state));
        if let Some(span) = st.as_ref().and_then(DagRun::span) {
            spans.push(span);
        }
        match api.task_instances(DAG_ID, id) {
            Ok(tis) => {
                for ti in tis {
                    expected.insert((DAG_ID.to_string(), id.clone(), ti.task_id));
                }
            }
            Err(e) => say(t0, &format!("task instances of {id}: {e:#}")),
        }
    }
    let events = ledger::load(&ledger_path).map_err(anyhow::Error::msg)?;
    let executions: Vec<Execution> = ledger::executions(&events)
        .into_iter()
        .filter(|x| x.key.1 != base_id)
        .collect();
    let observed = Observed {
        expected,
        dag_runs,
        executions,
        acknowledged,
        stored,
        leases,
    };
    std::fs::write(
        spec.out.join("observed.json"),
        serde_json::to_string_pretty(&json!({
            "expected": observed.expected,
            "dag_runs": observed.dag_runs,
            "acknowledged": observed.acknowledged,
            "stored": observed.stored,
            "leases": observed.leases,
        }))?,
    )?;
    let checks = invariants::check(&observed);
    let baseline = baseline_of(warmup, &spans, &applied);
    figures(&mut applied, &spans, &observed.executions, baseline);
    let classes = class_figures(&applied);

    if !spec.json {
        let what = if stepping { "operator steps" } else { "faults" };
        println!("\n{what} (extra s: the longest DAG run overlapping it or its {RECOVERY_S:.0} s recovery, minus the {baseline:.1} s baseline)");
        print!("{}", render_faults(&applied, t0));
        println!("\nper component class");
        print!("{}", render_classes(&classes));
        println!("\ninvariants");
        print!("{}", invariants::render(&checks));
    }
    let health = health(c);
    if !spec.json {
        println!(
            "\nafter the run (reported, not checked): PostgreSQL synchronous standby streaming: {}; RabbitMQ nodes running: {} of {}",
            if health.sync_standby { "yes" } else { "NO" },
            health.rabbitmq_running,
            health.rabbitmq_nodes
        );
    }

    // The schedule as it happened, for the timeline and for replaying.
    let as_applied: Vec<Fault> = applied
        .iter()
        .map(|a| Fault {
            at_s: a.applied - t0,
            duration_s: a.healed - a.applied,
            ..a.fault.clone()
        })
        .collect();
    std::fs::write(
        spec.out.join("schedule.json"),
        serde_json::to_string_pretty(&as_applied)?,
    )?;
    // Rows: the inventory's hosts as the run began, hosts that joined during it (their task
    // executions), and one row per operator step.
    let mut hosts: Vec<String> = c.hosts.iter().map(|h| h.name.clone()).collect();
    for name in observed
        .executions
        .iter()
        .map(|x| &x.host)
        .chain(spec.steps.iter().map(|s| &s.name))
    {
        if !hosts.contains(name) {
            hosts.push(name.clone());
        }
    }
    let runs: Vec<RunSpan> = ids
        .iter()
        .zip(&states)
        .filter_map(|(_, st)| {
            let r = st.as_ref()?;
            let (start, end) = r.span()?;
            Some(RunSpan {
                succeeded: r.state == "success",
                start,
                end,
            })
        })
        .collect();
    let png = spec.out.join("timeline.png");
    timeline::draw(
        &timeline::Timeline {
            hosts: &hosts,
            faults: &as_applied,
            executions: &observed.executions,
            runs: &runs,
            t0,
            title: format!(
                "heirflow-chaos {stamp}: {} {}, {} DAG runs, {} task executions",
                applied.len(),
                if stepping { "operator steps" } else { "faults" },
                ids.len(),
                observed.executions.len()
            ),
        },
        &png,
    )
    .map_err(anyhow::Error::msg)?;
    let pass = checks.iter().all(|c| c.pass) && !step_failed;
    if step_failed && !spec.json {
        println!(
            "\nan operator step failed (its log is in {})",
            spec.out.display()
        );
    }
    let report = Report {
        baseline_s: baseline,
        dag_runs: ids.len(),
        executions: observed.executions.len(),
        acknowledged: observed.acknowledged.len(),
        faults: applied,
        classes,
        checks,
        health,
    };
    let report_json = serde_json::to_string_pretty(&report)?;
    std::fs::write(spec.out.join("report.json"), &report_json)?;
    if spec.json {
        println!("{report_json}");
    }
    eprintln!(
        "\n{}: report {}, timeline {}",
        if pass { "PASS" } else { "FAIL" },
        spec.out.join("report.json").display(),
        png.display()
    );
    Ok(pass)
}
