//! The cluster's redundancy after a run, as the runner finds it (reported, not an invariant).

use serde::Serialize;

use crate::cluster::Cluster;
use crate::faults;

/// Redundancy after the run, as the runner finds it (reported, not an invariant yet): does the
/// Postgres primary have a synchronous standby streaming, how many RabbitMQ nodes run.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub sync_standby: bool,
    pub rabbitmq_running: usize,
    pub rabbitmq_nodes: usize,
}

pub fn health(c: &Cluster) -> Health {
    let sync_standby = c.group("db").any(|h| {
        faults::docker(&[
            "exec",
            &h.name,
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-Atc",
            "SELECT count(*) FROM pg_stat_replication \
             WHERE state = 'streaming' AND sync_state = 'sync'",
        ])
        .is_ok_and(|n| n.trim().parse::<u32>().unwrap_or(0) > 0)
    });
    let rabbitmq_running = c
        .group("queue")
        .find_map(|h| {
            let out = faults::docker(&[
                "exec",
                &h.name,
                "rabbitmqctl",
                "-q",
                "cluster_status",
                "--formatter",
                "json",
            ])
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            Some(v["running_nodes"].as_array()?.len())
        })
        .unwrap_or(0);
    Health {
        sync_standby,
        rabbitmq_running,
        rabbitmq_nodes: c.group("queue").count(),
    }
}
