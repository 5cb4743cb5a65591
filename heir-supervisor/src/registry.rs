//! The succession registry in the metadata database.
//!
//! Two tables, created idempotently by `run` (under an advisory lock, so concurrent first starts
//! do not race on `CREATE TABLE IF NOT EXISTS`); `status` and `interface` open a reader, which
//! never issues DDL (they may run with a read-only role):
//!
//! * `heirflow_members` — one row per registrant of a group. `seq` comes from a sequence and
//!   orders the line of succession (lower = registered earlier = older). A member is *live*
//!   while `last_seen + ttl_ms > now()`. A member that let its row lapse is no longer a
//!   registrant: it registers again and goes to the back of the line.
//! * `heirflow_leases` — one row per group: `holder`/`instance`, `epoch` (incremented by every
//!   acquisition, never reused) and `expires_at`; `prev_expires_at` keeps, from the acquiring
//!   `UPDATE` itself, when the previous epoch ended (its expiry, or its release): the evidence
//!   an observer needs to tell a handover from two leaders at once.
//!
//! Every time comparison happens in SQL against the database's `now()`; the supervisors' own
//! clocks never meet. The safety of the lease rests on the conditional `UPDATE`s below, which
//! Postgres serialises on the lease row: only one acquisition can succeed per lapse.
//!
//! The names are unqualified: they resolve through the login's `search_path`. Deployed, the
//! login is `heir_registry`, whose default `search_path` (`"$user", public`) finds its own
//! schema `heir_registry` first, which only it may use (roles/postgres): the Airflow login, held
//! by every worker and so by DAG code, can neither read nor rewrite succession.
//!
//! Changes that should wake the others (a member leaving, a lease released or taken) are
//! announced with `NOTIFY heirflow, '<group>'`.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Row};

use crate::pg_tls::{parse_dsn, PgTls};

pub const CHANNEL: &str = "heirflow";

const SCHEMA: &str = r#"
CREATE SEQUENCE IF NOT EXISTS heirflow_members_seq;
CREATE TABLE IF NOT EXISTS heirflow_members (
    grp           text        NOT NULL,
    member        text        NOT NULL,
    instance      text        NOT NULL,
    seq           bigint      NOT NULL,
    ttl_ms        integer     NOT NULL,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    registered_at timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    PRIMARY KEY (grp, member)
);
CREATE INDEX IF NOT EXISTS heirflow_members_line ON heirflow_members (grp, seq);
CREATE TABLE IF NOT EXISTS heirflow_leases (
    grp         text        PRIMARY KEY,
    holder      text,
    instance    text,
    epoch       bigint      NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT 'epoch',
    acquired_at timestamptz,
    renewed_at  timestamptz
);
ALTER TABLE heirflow_leases ADD COLUMN IF NOT EXISTS prev_expires_at timestamptz;
"#;

/// Who I am in the registry.
#[derive(Debug, Clone)]
pub struct Identity {
    pub group: String,
    pub member: String,
    /// Unique per process run: a restarted member is a new registrant.
    pub instance: String,
    pub host: String,
    pub pid: i32,
    pub ttl: Duration,
}

impl Identity {
    fn ttl_ms(&self) -> i32 {
        i32::try_from(self.ttl.as_millis()).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberRow {
    pub member: String,
    pub instance: String,
    pub seq: i64,
    pub host: String,
    pub pid: i32,
    pub ttl_ms: i32,
    pub live: bool,
    /// Seconds since the last check-in, on the DB clock.
    pub age_s: f64,
    /// Seconds since registration, on the DB clock.
    pub registered_s: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaseRow {
    pub holder: Option<String>,
    pub instance: Option<String>,
    pub epoch: i64,
    /// `expires_at > now()`.
    pub valid: bool,
    /// Seconds until expiry (negative: lapsed that long ago).
    pub remaining_s: f64,
}

/// One group as seen in one read.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct View {
    pub group: String,
    /// Ordered by `seq`: the line of succession, dead members included.
    pub members: Vec<MemberRow>,
    pub lease: Option<LeaseRow>,
}

impl View {
    /// The heir: the oldest live registrant.
    pub fn heir(&self) -> Option<&MemberRow> {
        self.members.iter().find(|m| m.live)
    }
}

/// Outcome of a check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckIn {
    /// Still registered, at this place in line.
    Alive(i64),
    /// Registered (first time or again after lapsing) with a new `seq`.
    Registered(i64),
    /// The name is held by another live instance (a duplicate, or our own predecessor whose row
    /// has not lapsed yet): wait.
    NameTaken,
}

/// A database connection that reconnects on demand and forwards notifications.
pub struct Registry {
    config: tokio_postgres::Config,
    /// Plain, or TLS verified as libpq's verify-full (the DSN's sslmode/sslrootcert).
    tls: PgTls,
    client: Option<Client>,
    notify_tx: Option<mpsc::UnboundedSender<String>>,
    /// `false` for a reader: the schema is never created (nor written) through it.
    ddl: bool,
    schema_ready: bool,
}

impl Registry {
    /// Parse a libpq-style DSN (`host=... user=...` or `postgresql://...`, with
    /// `sslmode=verify-full sslrootcert=FILE` for TLS: [`crate::pg_tls`]).
    pub fn new(dsn: &str, notify_tx: Option<mpsc::UnboundedSender<String>>) -> Result<Self> {
        let target =
            parse_dsn(dsn).context("invalid --dsn (libpq key=value or postgresql:// URL)")?;
        let (mut config, tls) = (target.config, target.tls);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(2));
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.tcp_user_timeout(Duration::from_secs(5));
        if config.get_application_name().is_none() {
            config.application_name("heir-supervisor");
        }
        Ok(Registry {
            config,
            tls,
            client: None,
            notify_tx,
            ddl: true,
            schema_ready: false,
        })
    }

    /// A connection that only reads (`status`, `interface`): no DDL, no LISTEN.
    pub fn reader(dsn: &str) -> Result<Self> {
        let mut r = Registry::new(dsn, None)?;
        r.ddl = false;
        Ok(r)
    }

    /// Where the DSN points (`host:port`, comma-separated), for errors: never the password.
    pub fn target(&self) -> String {
        let ports = self.config.get_ports();
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                    tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
                }
            })
            .collect();
        if hosts.is_empty() {
            format!("localhost:{}", ports.first().copied().unwrap_or(5432))
        } else {
            hosts.join(",")
        }
    }

    /// Drop the connection (after a timeout or error); the next call reconnects.
    pub fn reset(&mut self) {
        self.client = None;
    }

    pub async fn client(&mut self) -> Result<&Client> {
        let broken = self.client.as_ref().is_none_or(|c| c.is_closed());
        if broken {
            self.client = None;
            let (client, mut connection) = self
                .config
                .connect(self.tls.connector())
                .await
                .with_context(|| {
                    format!("connecting to the metadata database at {}", self.target())
                })?;
            let tx = self.notify_tx.clone();
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(msg) = messages.next().await {
                    match msg {
                        Ok(AsyncMessage::Notification(n)) => {
                            if let Some(tx) = &tx {
                                let _ = tx.send(n.payload().to_string());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            if self.ddl && !self.schema_ready {
                ensure_schema(&client).await?;
                self.schema_ready = true;
            }
            if self.notify_tx.is_some() {
                client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .context("LISTEN heirflow")?;
            }
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| anyhow!("no database connection"))
    }

    /// Check in, or register when not (or no longer) registered.
    pub async fn check_in(&mut self, me: &Identity) -> Result<CheckIn> {
        let ttl = me.ttl_ms();
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE heirflow_members SET last_seen = now(), ttl_ms = $4
                  WHERE grp = $1 AND member = $2 AND instance = $3
                    AND last_seen + ttl_ms * interval '1 millisecond' > now()
              RETURNING seq",
                &[&me.group, &me.member, &me.instance, &ttl],
            )
            .await
            .context("checking in")?;
        if let Some(r) = row {
            return Ok(CheckIn::Alive(r.get(0)));
        }
        // Not registered, or lapsed: (re-)register at the back of the line, unless the name is
        // held by another live instance.
        let row = c
            .query_opt(
                "INSERT INTO heirflow_members AS m
                        (grp, member, instance, seq, ttl_ms, host, pid, registered_at, last_seen)
                 VALUES ($1, $2, $3, nextval('heirflow_members_seq'), $4, $5, $6, now(), now())
                 ON CONFLICT (grp, member) DO UPDATE
                    SET instance = EXCLUDED.instance, seq = EXCLUDED.seq, ttl_ms = EXCLUDED.ttl_ms,
                        host = EXCLUDED.host, pid = EXCLUDED.pid,
                        registered_at = now(), last_seen = now()
                  WHERE m.instance = EXCLUDED.instance
                     OR m.last_seen + m.ttl_ms * interval '1 millisecond' <= now()
              RETURNING seq",
                &[&me.group, &me.member, &me.instance, &ttl, &me.host, &me.pid],
            )
            .await
            .context("registering")?;
        match row {
            Some(r) => {
                c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &me.group])
                    .await
                    .context("notifying")?;
                Ok(CheckIn::Registered(r.get(0)))
            }
            None => Ok(CheckIn::NameTaken),
        }
    }

    /// Members and lease of one group.
    pub async fn view(&mut self, group: &str) -> Result<View> {
        let c = self.client().await?;
        read_view(c, group).await
    }

    /// All groups that have members, live or dead (for `status` and `interface`); `only`
    /// shows that group even when it has none. `None`: the tables do not exist (yet), which a
    /// reader reports rather than creates.
    pub async fn all_views(&mut self, only: Option<&str>) -> Result<Option<Vec<View>>> {
        let c = self.client().await?;
        let exists: bool = c
            .query_one(
                "SELECT to_regclass('heirflow_members') IS NOT NULL
                    AND to_regclass('heirflow_leases') IS NOT NULL",
                &[],
            )
            .await
            .context("looking for the succession tables")?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let rows = c
            .query("SELECT DISTINCT grp FROM heirflow_members ORDER BY 1", &[])
            .await
            .context("listing groups")?;
        let mut out = Vec::new();
        for r in rows {
            let g: String = r.get(0);
            if only.is_some_and(|o| o != g) {
                continue;
            }
            out.push(read_view(c, &g).await?);
        }
        if let (Some(o), true) = (only, out.is_empty()) {
            out.push(View {
                group: o.to_string(),
                ..View::default()
            });
        }
        Ok(Some(out))
    }

    /// Take the lease if it is free or lapsed (or a stale one of mine) **and** I am the heir.
    /// Returns the new epoch.
    pub async fn acquire(&mut self, me: &Identity) -> Result<Option<i64>> {
        let ttl = me.ttl_ms();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO heirflow_leases (grp) VALUES ($1) ON CONFLICT (grp) DO NOTHING",
            &[&me.group],
        )
        .await
        .context("creating the lease row")?;
        let row = c
            .query_opt(
                "UPDATE heirflow_leases l
                    SET holder = $2, instance = $3, epoch = l.epoch + 1,
                        prev_expires_at = l.expires_at,
                        expires_at = now() + $4::int * interval '1 millisecond',
                        acquired_at = now(), renewed_at = now()
                  WHERE l.grp = $1
                    AND (l.expires_at <= now() OR (l.holder = $2 AND l.instance = $3))
                    AND EXISTS (
                        SELECT 1 FROM (
                            SELECT m.member, m.instance FROM heirflow_members m
                             WHERE m.grp = $1
                               AND m.last_seen + m.ttl_ms * interval '1 millisecond' > now()
                             ORDER BY m.seq LIMIT 1) heir
                         WHERE heir.member = $2 AND heir.instance = $3)
              RETURNING l.epoch",
                &[&me.group, &me.member, &me.instance, &ttl],
            )
            .await
            .context("acquiring the lease")?;
        if row.is_some() {
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &me.group])
                .await
                .context("notifying")?;
        }
        Ok(row.map(|r| r.get(0)))
    }

    /// Extend my lease of this epoch, only while it has not lapsed. `false`: it is lost.
    pub async fn renew(&mut self, me: &Identity, epoch: i64) -> Result<bool> {
        let ttl = me.ttl_ms();
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE heirflow_leases
                    SET expires_at = now() + $5::int * interval '1 millisecond', renewed_at = now()
                  WHERE grp = $1 AND holder = $2 AND instance = $3 AND epoch = $4
                    AND expires_at > now()",
                &[&me.group, &me.member, &me.instance, &epoch, &ttl],
            )
            .await
            .context("renewing the lease")?;
        Ok(n == 1)
    }

    /// Release my lease (if I hold it), optionally deregister, in one transaction, and wake
    /// the others so the next heir takes over at once.
    pub async fn release(&mut self, me: &Identity, deregister: bool) -> Result<()> {
        let c = self.client().await?;
        c.batch_execute("BEGIN").await.context("BEGIN")?;
        let res = async {
            c.execute(
                "UPDATE heirflow_leases SET holder = NULL, instance = NULL, expires_at = now()
                  WHERE grp = $1 AND holder = $2 AND instance = $3",
                &[&me.group, &me.member, &me.instance],
            )
            .await
            .context("releasing the lease")?;
            if deregister {
                c.execute(
                    "DELETE FROM heirflow_members WHERE grp = $1 AND member = $2 AND instance = $3",
                    &[&me.group, &me.member, &me.instance],
                )
                .await
                .context("deregistering")?;
            }
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &me.group])
                .await
                .context("notifying")?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        match res {
            Ok(()) => c.batch_execute("COMMIT").await.context("COMMIT"),
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// Forget members dead for longer than `older_than` (kept meanwhile for `status`).
    pub async fn purge(&mut self, group: &str, older_than: Duration) -> Result<u64> {
        let ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let c = self.client().await?;
        c.execute(
            "DELETE FROM heirflow_members
              WHERE grp = $1 AND last_seen < now() - $2::bigint * interval '1 millisecond'",
            &[&group, &ms],
        )
        .await
        .context("purging dead members")
    }
}

async fn ensure_schema(c: &Client) -> Result<()> {
    // A transaction-scoped advisory lock serialises concurrent first starts.
    let sql = format!("BEGIN; SELECT pg_advisory_xact_lock(7294851203); {SCHEMA} COMMIT;");
    if let Err(e) = c.batch_execute(&sql).await {
        let _ = c.batch_execute("ROLLBACK").await;
        return Err(anyhow::Error::new(e).context("creating heirflow_members/heirflow_leases"));
    }
    Ok(())
}

async fn read_view(c: &Client, group: &str) -> Result<View> {
    let members = c
        .query(
            "SELECT member, instance, seq, host, pid, ttl_ms,
                    last_seen + ttl_ms * interval '1 millisecond' > now() AS live,
                    extract(epoch FROM now() - last_seen)::float8 AS age_s,
                    extract(epoch FROM now() - registered_at)::float8 AS registered_s
               FROM heirflow_members WHERE grp = $1 ORDER BY seq",
            &[&group],
        )
        .await
        .context("reading members")?
        .iter()
        .map(member_row)
        .collect();
    let lease = c
        .query_opt(
            "SELECT holder, instance, epoch, expires_at > now() AS valid,
                    extract(epoch FROM expires_at - now())::float8 AS remaining_s
               FROM heirflow_leases WHERE grp = $1",
            &[&group],
        )
        .await
        .context("reading the lease")?
        .map(|r| LeaseRow {
            holder: r.get(0),
            instance: r.get(1),
            epoch: r.get(2),
            valid: r.get(3),
            remaining_s: r.get(4),
        });
    Ok(View {
        group: group.to_string(),
        members,
        lease,
    })
}

fn member_row(r: &Row) -> MemberRow {
    MemberRow {
        member: r.get(0),
        instance: r.get(1),
        seq: r.get(2),
        host: r.get(3),
        pid: r.get(4),
        ttl_ms: r.get(5),
        live: r.get(6),
        age_s: r.get(7),
        registered_s: r.get(8),
    }
}
