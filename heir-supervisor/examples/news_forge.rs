//! Test tool (not installed): publishes one succession event that no supervisor signed, as
//! someone holding only the news vhost's password could, so a test can check that the
//! interface refuses it.
//!
//!   news_forge AMQP_URL EXCHANGE GROUP MEMBER [SIG]
//!
//! An `amqps://` URL is verified against the CA file in `HEIR_NEWS_CA_FILE`.
//!
//! The event claims that MEMBER took GROUP's lease; SIG, when given, is put in its `sig` field
//! (a made-up signature), else it goes unsigned.

use anyhow::{Context, Result};
use lapin::options::BasicPublishOptions;
use std::time::Duration;

use heir_supervisor::news::NewsTls;
use lapin::BasicProperties;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, exchange, group, member, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: news_forge AMQP_URL EXCHANGE GROUP MEMBER [SIG]");
    };
    let mut event = serde_json::json!({
        "type": "leader",
        "group": group,
        "member": member,
        "host": member,
        "pid": 1,
        "ts": chrono::Utc::now().to_rfc3339(),
        "epoch": 999_999,
        "reason": "forged: took the lease",
    });
    if let Some(sig) = rest.first() {
        event["sig"] = serde_json::Value::String(sig.clone());
    }
    let ca = std::env::var_os("HEIR_NEWS_CA_FILE").map(std::path::PathBuf::from);
    let conn = NewsTls::from_ca_file(ca.as_deref())?
        .connect(url, Duration::from_secs(5))
        .await
        .context("connecting to the broker")?;
    let ch = conn.create_channel().await?;
    ch.basic_publish(
        exchange,
        &format!("succession.{group}"),
        BasicPublishOptions::default(),
        &serde_json::to_vec(&event)?,
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await?
    .await?;
    conn.close(200, "bye").await?;
    println!("published a forged '{group}' event for {member}");
    Ok(())
}
