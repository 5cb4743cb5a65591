//! PostgreSQL probes and the few admin statements the failover needs.
//!
//! Every call opens a fresh connection bounded by a timeout: a connection kept across a
//! partition would hang until TCP gives up, and one probe per second costs a few ms.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::pg_tls::PgTls;

/// Login used for probes or admin work.
#[derive(Debug, Clone)]
pub struct Creds {
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// Plain, or TLS verify-full against `--pg-ca-file` (loaded once at start).
    pub tls: PgTls,
}

/// A database node: `name=host:port` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for NodeAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, hp) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=HOST:PORT"))?;
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected NAME=HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: bad port {port:?}"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "{s:?}: the node name is its cluster_name / application_name: use [a-z0-9_]"
            ));
        }
        Ok(NodeAddr {
            name: name.to_string(),
            host: host.trim().to_string(),
            port,
        })
    }
}

text_enum! {
    /// `pg_stat_replication.state`: the WAL sender's state.
    SenderState {
        Startup = "startup",
        Catchup = "catchup",
        Streaming = "streaming",
        Backup = "backup",
        Stopping = "stopping",
    }
}

text_enum! {
    /// `pg_stat_replication.sync_state`.
    SyncState {
        Async = "async",
        Potential = "potential",
        Sync = "sync",
        Quorum = "quorum",
    }
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Replica {
    pub name: String,
    pub state: SenderState,
    pub sync_state: SyncState,
    /// Seconds since the standby's last reply (its flush position report).
    pub reply_age_s: Option<f64>,
}

/// What one probe saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PgState {
    pub in_recovery: bool,
    /// Current WAL timeline (primaries only).
    pub timeline: Option<u32>,
    pub sync_names: String,
    /// `pg_stat_wal_receiver.status` (standbys).
    pub receiver: Option<String>,
    pub receive_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    pub status_interval: String,
    /// How long a standby's startup process sleeps between WAL retries: a promote request
    /// waits for the end of that sleep.
    pub retry_interval: String,
    /// Primaries, with `detail`: their standbys.
    pub replicas: Vec<Replica>,
}

pub async fn connect(host: &str, port: u16, creds: &Creds, timeout: Duration) -> Result<Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(&creds.user)
        .dbname(&creds.dbname)
        .application_name("heir-supervisor")
        .connect_timeout(timeout);
    if let Some(pw) = &creds.password {
        cfg.password(pw);
    }
    creds.tls.apply(&mut cfg);
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(creds.tls.connector()))
        .await
        .map_err(|_| anyhow!("{host}:{port}: connect timed out after {timeout:?}"))?
        .with_context(|| format!("{host}:{port}: connecting as {}", creds.user))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

const STATE_SQL: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL \
         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
    current_setting('synchronous_standby_names'), \
    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
    pg_last_wal_receive_lsn()::text, \
    pg_last_wal_replay_lsn()::text, \
    current_setting('wal_receiver_status_interval'), \
    current_setting('wal_retrieve_retry_interval')";

const REPLICAS_SQL: &str = "SELECT application_name, coalesce(state, ''), \
    coalesce(sync_state, ''), \
    extract(epoch FROM (clock_timestamp() - reply_time))::float8 \
    FROM pg_stat_replication";

/// Probe a node. `detail` adds `pg_stat_replication` (needs a superuser or pg_monitor).
pub async fn probe(
    host: &str,
    port: u16,
    creds: &Creds,
    detail: bool,
    timeout: Duration,
) -> Result<PgState> {
    tokio::time::timeout(timeout, async {
        let c = connect(host, port, creds, timeout).await?;
        let row = c
            .query_one(STATE_SQL, &[])
            .await
            .with_context(|| format!("{host}:{port}: state query"))?;
        let timeline = row
            .get::<_, Option<String>>(1)
            .and_then(|t| u32::from_str_radix(&t, 16).ok());
        let mut st = PgState {
            in_recovery: row.get(0),
            timeline,
            sync_names: row.get(2),
            receiver: row.get(3),
            receive_lsn: row.get(4),
            replay_lsn: row.get(5),
            status_interval: row.get(6),
            retry_interval: row.get(7),
            replicas: Vec::new(),
        };
        if detail && !st.in_recovery {
            for r in c
                .query(REPLICAS_SQL, &[])
                .await
                .with_context(|| format!("{host}:{port}: pg_stat_replication"))?
            {
                st.replicas.push(Replica {
                    name: r.get::<_, Option<String>>(0).unwrap_or_default(),
                    state: r.get::<_, String>(1).into(),
                    sync_state: r.get::<_, String>(2).into(),
                    reply_age_s: r.get(3),
                });
            }
        }
        anyhow::Ok(st)
    })
    .await
    .map_err(|_| anyhow!("{host}:{port}: probe timed out after {timeout:?}"))?
}

/// `'value'` as an SQL literal (ALTER SYSTEM takes no bind parameters).
pub fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Run admin statements on one connection, in order.
pub async fn exec(
    host: &str,
    port: u16,
    creds: &Creds,
    stmts: &[String],
    timeout: Duration,
) -> Result<()> {
    tokio::time::timeout(timeout, async {
        let c = connect(host, port, creds, Duration::from_secs(5)).await?;
        for s in stmts {
            c.batch_execute(s)
                .await
                .with_context(|| format!("{host}:{port}: {s}"))?;
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("{host}:{port}: admin statements timed out after {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        let n: NodeAddr = "hf_db1=172.30.0.11:5432".parse().unwrap();
        assert_eq!(n.name, "hf_db1");
        assert_eq!(n.host, "172.30.0.11");
        assert_eq!(n.port, 5432);
        assert!("hf-db1=h:1".parse::<NodeAddr>().is_err());
        assert!("a=h".parse::<NodeAddr>().is_err());
        assert!("a=h:x".parse::<NodeAddr>().is_err());
    }

    #[test]
    fn replication_states_parse_and_print_the_database_text() {
        for t in [
            "startup",
            "catchup",
            "streaming",
            "backup",
            "stopping",
            "",
            "new",
        ] {
            assert_eq!(SenderState::from(t.to_string()).to_string(), t);
        }
        for t in ["async", "potential", "sync", "quorum", "", "new"] {
            assert_eq!(SyncState::from(t.to_string()).to_string(), t);
        }
        assert_eq!(
            SenderState::from("streaming".to_string()),
            SenderState::Streaming
        );
        assert_eq!(SyncState::from("sync".to_string()), SyncState::Sync);
        assert_eq!(
            SyncState::from("Sync".to_string()),
            SyncState::Other("Sync".into())
        );
        let r = Replica {
            name: "b".into(),
            state: SenderState::Streaming,
            sync_state: SyncState::Sync,
            reply_age_s: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""state":"streaming","sync_state":"sync""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Replica>(&json).unwrap(), r);
    }

    #[test]
    fn literals() {
        assert_eq!(literal("FIRST 1 (a, b)"), "'FIRST 1 (a, b)'");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
