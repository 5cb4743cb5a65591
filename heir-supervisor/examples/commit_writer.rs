//! Test and benchmark tool (not installed): commits continuously through a DSN (the floating
//! IP) and records every *acknowledged* commit, so a failover test can check afterwards that
//! none of them is missing and when writes resumed.
//!
//!   commit_writer DSN OUT_FILE
//!
//! DSN as heir-supervisor's `--dsn` (`sslmode=verify-full sslrootcert=CA` for TLS).
//!
//! Creates `heirflow_acked (id bigint primary key)` if needed, then inserts ids after the
//! largest one present, one transaction each. Each acknowledged id is appended to OUT_FILE as
//! `id issued_unix acked_unix` (seconds, CLOCK_REALTIME) and flushed at once. A commit that
//! is not acknowledged within 3 s, or fails, is not recorded (it may or may not exist).
//! Runs until SIGTERM/SIGINT; prints `acked=N errors=M` on exit.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use heir_supervisor::pg_tls::{parse_dsn, PgTarget};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn connect(target: &PgTarget) -> Result<tokio_postgres::Client> {
    // Our own bound: libpq-style connect_timeout is too coarse to see resumption to 0.5 s.
    let (client, conn) = tokio::time::timeout(Duration::from_millis(500), target.connect())
        .await
        .context("connect timed out")??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dsn, out] = args.as_slice() else {
        anyhow::bail!("usage: commit_writer DSN OUT_FILE");
    };
    let target = parse_dsn(dsn).context("the DSN")?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {out}"))?;
    let mut next: i64 = loop {
        match connect(&target).await {
            Ok(c) => {
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS heirflow_acked (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
                )
                .await
                .context("creating heirflow_acked")?;
                let max: i64 = c
                    .query_one("SELECT coalesce(max(id), 0) FROM heirflow_acked", &[])
                    .await?
                    .get(0);
                break max + 1;
            }
            Err(e) => {
                eprintln!("commit_writer: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (mut acked, mut errors) = (0u64, 0u64);
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        let step = async {
            let c = match client.take() {
                Some(c) => c,
                None => connect(&target).await?,
            };
            let id = next;
            let issued = unix_now();
            let n = tokio::time::timeout(
                Duration::from_secs(3),
                c.execute("INSERT INTO heirflow_acked (id) VALUES ($1)", &[&id]),
            )
            .await
            .context("commit not acknowledged within 3 s")??;
            anyhow::ensure!(n == 1, "inserted {n} rows");
            Ok::<_, anyhow::Error>((c, id, issued, unix_now()))
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            r = step => match r {
                Ok((c, id, issued, at)) => {
                    writeln!(file, "{id} {issued:.3} {at:.3}")?;
                    file.flush()?;
                    client = Some(c);
                    acked += 1;
                    next += 1;
                }
                Err(_) => {
                    // The id may exist or not: never reuse it.
                    errors += 1;
                    next += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    println!("acked={acked} errors={errors}");
    Ok(())
}
