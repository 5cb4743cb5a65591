//! `hfplay` command line: parses options, loads inventory and playbook (every static error is
//! reported before any host is contacted), runs, and maps the outcome to an exit code.
//!
//! Exit codes: 0 ok · 2 a host failed · 4 a host was unreachable · 3 playbook/inventory/YAML
//! error · 5 bad command-line options · 1 unexpected error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::inventory::Inventory;
use crate::modules;
use crate::playbook::Loader;
use crate::report::Reporter;
use crate::runner::{RunOptions, RunOutcome, Runner};
use crate::vars::parse_extra_vars;

pub const EXIT_FAILED: i32 = 2;
pub const EXIT_LOAD: i32 = 3;
pub const EXIT_UNREACHABLE: i32 = 4;
pub const EXIT_USAGE: i32 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "hfplay",
    version,
    about = "Run Ansible-style playbooks over multiplexed SSH, fast"
)]
pub struct Cli {
    /// Playbook file(s) to run, in order.
    #[arg(required = true)]
    pub playbooks: Vec<PathBuf>,
    /// Inventory file or directory.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: Option<PathBuf>,
    /// Predict changes without making them.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show file differences.
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Hosts handled in parallel.
    #[arg(short = 'f', long, default_value_t = 50)]
    pub forks: usize,
    /// Further limit selected hosts to a pattern.
    #[arg(short = 'l', long)]
    pub limit: Option<String>,
    /// Only run tasks with these tags (comma-separated, repeatable).
    #[arg(short = 't', long = "tags")]
    pub tags: Vec<String>,
    /// Skip tasks with these tags.
    #[arg(long = "skip-tags")]
    pub skip_tags: Vec<String>,
    /// Extra variables: key=value, JSON/YAML mapping, or @file.
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
    /// Check the playbook and exit.
    #[arg(long)]
    pub syntax_check: bool,
    /// List the hosts each play would run on.
    #[arg(long)]
    pub list_hosts: bool,
    /// List the tasks of each play.
    #[arg(long)]
    pub list_tasks: bool,
    /// Print results as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// SSH connect timeout in seconds.
    #[arg(short = 'T', long, default_value_t = 10)]
    pub timeout: u64,
    /// More output (-v shows every result).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Treat what Ansible only warns about (duplicate YAML keys) as errors.
    #[arg(long)]
    pub strict: bool,
}

fn split_list(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Roles are looked up in `roles/` next to the playbook, the configured `roles_path`, and
/// `roles/` in the working directory.
fn roles_path(playbook_dir: &std::path::Path, cfg: &Config) -> Vec<PathBuf> {
    let mut out = vec![playbook_dir.join("roles")];
    out.extend(cfg.roles_path.iter().cloned());
    out.push(PathBuf::from("roles"));
    out
}

pub fn main_exit() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    crate::yaml::set_strict_keys(cli.strict);
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR! {e}");
            return EXIT_LOAD;
        }
    };
    let mut extra = Map::new();
    for e in &cli.extra_vars {
        match parse_extra_vars(e) {
            Ok(m) => extra.extend(m),
            Err(msg) => {
                eprintln!("ERROR! -e {e}: {msg}");
                return EXIT_USAGE;
            }
        }
    }
    // Ansible's magic variable: the --limit pattern as given (plays that must never run on
    // every host, such as playbooks/drain.yml, assert it is defined).
    if let Some(l) = &cli.limit {
        extra.insert("ansible_limit".into(), Value::String(l.clone()));
    }
    let inv_path = cli
        .inventory
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ansible/hosts"));
    let inv = match Inventory::load(&inv_path) {
        Ok(i) => Arc::new(i),
        // As Ansible: no -i and no default inventory leaves the implicit localhost.
        Err(_) if cli.inventory.is_none() && !inv_path.exists() => {
            eprintln!("[WARNING]: No inventory was parsed, only implicit localhost is available");
            Arc::new(Inventory::implicit_localhost())
        }
        Err(e) => {
            eprintln!("ERROR! {e}");
            return EXIT_LOAD;
        }
    };
    if let Some(l) = &cli.limit {
        match inv.select(l) {
            Ok(h) if !h.is_empty() => {}
            Ok(_) => {
                eprintln!(
                    "ERROR! --limit {l:?} matches no host of the inventory {}",
                    inv_path.display()
                );
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("ERROR! --limit {l:?}: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let registry: Arc<Vec<Box<dyn modules::Module>>> = Arc::new(modules::registry());
    let reporter = Arc::new(Reporter::new(cli.json, cli.verbose, cli.diff));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR! cannot start runtime: {e}");
            return 1;
        }
    };
    let mut worst = 0;
    for pb_path in &cli.playbooks {
        let pb_dir = pb_path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_default();
        let rp = roles_path(&pb_dir, &cfg);
        let loader = Loader {
            roles_path: rp.clone(),
            registry: &registry,
        };
        let pb = match loader.load_playbook(pb_path) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                eprintln!("ERROR! {e}");
                return EXIT_LOAD;
            }
        };
        if cli.syntax_check {
            println!("\nplaybook: {}", pb_path.display());
            continue;
        }
        if cli.list_hosts || cli.list_tasks {
            for play in &pb.plays {
                let hosts = inv.select(&play.hosts).unwrap_or_default();
                let hosts: Vec<String> = match &cli.limit {
                    Some(l) => {
                        let lim = inv.select(l).unwrap_or_default();
                        hosts.into_iter().filter(|h| lim.contains(h)).collect()
                    }
                    None => hosts,
                };
                println!("\n  play #{} ({}): {}", 1, play.hosts, play.name);
                if cli.list_hosts {
                    println!("    pattern: {}\n    hosts ({}):", play.hosts, hosts.len());
                    for h in &hosts {
                        println!("      {h}");
                    }
                }
                if cli.list_tasks {
                    println!("    tasks:");
                    for section in &play.sections {
                        list_tasks(section, 6);
                    }
                }
            }
            continue;
        }
        let opts = RunOptions {
            check: cli.check,
            diff: cli.diff,
            forks: cli.forks,
            limit: cli.limit.clone(),
            tags: split_list(&cli.tags),
            skip_tags: split_list(&cli.skip_tags),
            extra_vars: extra.clone(),
            connect_timeout: Duration::from_secs(cli.timeout),
            host_key_checking: cfg.host_key_checking,
            ssh_args: cfg.ssh_args.clone(),
            control_path_dir: cfg.control_path_dir.clone(),
        };
        let runner = Arc::new(Runner::new(
            inv.clone(),
            pb,
            registry.clone(),
            rp,
            opts,
            reporter.clone(),
        ));
        let outcome = rt.block_on(runner.run());
        let code = match outcome {
            RunOutcome::Ok => 0,
            RunOutcome::Failed => EXIT_FAILED,
            RunOutcome::Unreachable => EXIT_UNREACHABLE,
        };
        if code != 0 {
            return code;
        }
        worst = worst.max(code);
    }
    worst
}

fn list_tasks(tasks: &[crate::playbook::Task], indent: usize) {
    for t in tasks {
        let tags: Vec<&str> = t.opts.tags.iter().map(String::as_str).collect();
        println!(
            "{}{}\tTAGS: [{}]",
            " ".repeat(indent),
            t.display_name(),
            tags.join(", ")
        );
        if let crate::playbook::Action::Block {
            block,
            rescue,
            always,
        } = &t.action
        {
            list_tasks(block, indent + 2);
            list_tasks(rescue, indent + 2);
            list_tasks(always, indent + 2);
        }
    }
}
