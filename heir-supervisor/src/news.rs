//! Succession news: every event as JSON on a RabbitMQ topic exchange.
//!
//! The supervisor loop only ever calls [`News::publish`], which appends to an in-memory buffer
//! and returns at once. A background task owns the AMQP connection: it connects (rotating over
//! the given broker URLs), declares the durable topic exchange, and publishes the buffer in
//! order with publisher confirms. A message leaves the buffer only once the broker confirmed
//! it; on any error the task reconnects with backoff and resends. The buffer is bounded: when a
//! long outage fills it, the oldest events are dropped (and counted in the next event).
//!
//! Routing key: `succession.<group>`; the vhost is part of the URL
//! (`amqp://heirnews:PASSWORD@host:5672/heirflow-news`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub const DEFAULT_EXCHANGE: &str = "heirflow.news";

/// Where succession news goes: the command-line settings every subcommand that publishes shares.
#[derive(Debug, Clone, Args)]
pub struct NewsArgs {
    /// RabbitMQ URL(s) for succession news, vhost included
    /// (`amqp://user:pass@q1:5672/heirflow-news`); comma-separate one per node.
    #[arg(
        long = "news-url",
        env = "HEIR_NEWS_URL",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// Topic exchange of the news.
    #[arg(long = "news-exchange", env = "HEIR_NEWS_EXCHANGE", default_value = DEFAULT_EXCHANGE)]
    pub exchange: String,
}
const BUFFER_CAP: usize = 10_000;

/// One succession event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// `joined`, `rejoined`, `left`, `heir`, `leader`, `released`, `fenced`, `child_failed`,
    /// `child_started`, `child_stopped`, `db_unreachable`, `db_reachable`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub group: String,
    pub member: String,
    pub host: String,
    pub pid: u32,
    /// Wall-clock time of the publishing host (RFC 3339, UTC), for display only.
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub epoch: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub child_pid: Option<i32>,
    pub reason: String,
    /// Events dropped before this one because the buffer was full.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub dropped_before: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Event {
    pub fn routing_key(&self) -> String {
        format!("succession.{}", self.group)
    }
}

struct Buffer {
    queue: VecDeque<Event>,
    dropped: u64,
}

/// Non-blocking publisher handle (cheap to clone).
#[derive(Clone)]
pub struct News {
    buf: Arc<Mutex<Buffer>>,
    wake: Arc<Notify>,
    enabled: bool,
}

impl News {
    /// `urls` empty: events are only logged.
    pub fn start(urls: Vec<String>, exchange: String) -> News {
        let news = News {
            buf: Arc::new(Mutex::new(Buffer {
                queue: VecDeque::new(),
                dropped: 0,
            })),
            wake: Arc::new(Notify::new()),
            enabled: !urls.is_empty(),
        };
        if news.enabled {
            let worker = news.clone();
            tokio::spawn(async move { worker.run(urls, exchange).await });
        }
        news
    }

    /// Queue an event; never blocks on the broker.
    pub fn publish(&self, mut ev: Event) {
        crate::log::info(&format!(
            "event {} group={} member={}{} — {}",
            ev.kind,
            ev.group,
            ev.member,
            ev.epoch.map(|e| format!(" epoch={e}")).unwrap_or_default(),
            ev.reason
        ));
        if !self.enabled {
            return;
        }
        if let Ok(mut b) = self.buf.lock() {
            if b.queue.len() >= BUFFER_CAP {
                b.queue.pop_front();
                b.dropped += 1;
            }
            ev.dropped_before = std::mem::take(&mut b.dropped);
            b.queue.push_back(ev);
        }
        self.wake.notify_one();
    }

    /// Events not yet confirmed by the broker.
    pub fn pending(&self) -> usize {
        self.buf.lock().map(|b| b.queue.len()).unwrap_or(0)
    }

    /// Wait (bounded) until the buffer is empty, e.g. before exiting.
    pub async fn flush(&self, wait: Duration) {
        if !self.enabled {
            return;
        }
        let _ = tokio::time::timeout(wait, async {
            while self.pending() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn run(self, urls: Vec<String>, exchange: String) {
        // Every broker is tried in turn; after a full round of failures the task backs off
        // (up to 5 s). While the brokers stay unreachable (e.g. RabbitMQ not deployed yet) the
        // log gets the first error and then one reminder a minute, not a line per attempt.
        let mut backoff = Duration::from_millis(200);
        let mut i = 0usize;
        let mut failing_since: Option<std::time::Instant> = None;
        let mut last_log = std::time::Instant::now();
        loop {
            let url = &urls[i % urls.len()];
            i += 1;
            let mut connected = false;
            let Err(e) = self.session(url, &exchange, &mut connected).await else {
                continue;
            };
            if connected {
                failing_since = None;
                backoff = Duration::from_millis(200);
            }
            let now = std::time::Instant::now();
            match failing_since {
                None => {
                    crate::log::warn(&format!(
                        "news: {e:#} ({} events buffered); retrying",
                        self.pending()
                    ));
                    failing_since = Some(now);
                    last_log = now;
                }
                Some(since) if now.duration_since(last_log) >= Duration::from_secs(60) => {
                    crate::log::warn(&format!(
                        "news: no broker reachable for {} s, last error: {e:#} ({} events buffered); retrying",
                        now.duration_since(since).as_secs(),
                        self.pending()
                    ));
                    last_log = now;
                }
                Some(_) => {}
            }
            if i.is_multiple_of(urls.len()) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// One connection's life: publish until an error ends it.
    async fn session(&self, url: &str, exchange: &str, connected: &mut bool) -> Result<()> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = tokio::time::timeout(Duration::from_secs(5), Connection::connect(url, props))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", redact(url)))?
            .with_context(|| format!("connecting to {}", redact(url)))?;
        let ch = conn.create_channel().await.context("opening a channel")?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        ch.exchange_declare(
            exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {exchange}"))?;
        crate::log::info(&format!("news: connected to {}", redact(url)));
        *connected = true;
        loop {
            let next = self.buf.lock().ok().and_then(|b| b.queue.front().cloned());
            let Some(ev) = next else {
                // Wake on new events, and check the connection now and then.
                let _ = tokio::time::timeout(Duration::from_secs(5), self.wake.notified()).await;
                if !conn.status().connected() {
                    return Err(anyhow!("connection to {} lost", redact(url)));
                }
                continue;
            };
            let payload = serde_json::to_vec(&ev).context("encoding event")?;
            let confirm = tokio::time::timeout(Duration::from_secs(5), async {
                ch.basic_publish(
                    exchange,
                    &ev.routing_key(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_type(ev.kind.as_str().into())
                        .with_delivery_mode(2),
                )
                .await?
                .await
            })
            .await
            .map_err(|_| anyhow!("publish confirm timed out"))?
            .context("publishing")?;
            if confirm.is_nack() {
                return Err(anyhow!("broker nacked an event"));
            }
            if let Ok(mut b) = self.buf.lock() {
                // Only we pop from the front; publish() may have dropped it meanwhile when full.
                if b.queue.front() == Some(&ev) {
                    b.queue.pop_front();
                }
            }
        }
    }
}

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Split `--news-url` values: each may hold several comma-separated URLs (one per node).
pub fn split_urls(raw: &[String]) -> Vec<String> {
    raw.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("amqp://heirnews:s3cret@q1:5672/heirflow-news"),
            "amqp://heirnews:***@q1:5672/heirflow-news"
        );
        assert_eq!(redact("amqp://q1/v"), "amqp://q1/v");
    }

    #[test]
    fn splits_url_lists() {
        assert_eq!(
            split_urls(&["amqp://a/v, amqp://b/v".into(), "amqp://c/v".into()]),
            vec!["amqp://a/v", "amqp://b/v", "amqp://c/v"]
        );
    }

    #[test]
    fn event_json_shape() {
        let ev = Event {
            kind: "leader".into(),
            group: "scheduler".into(),
            member: "s1".into(),
            host: "s1".into(),
            pid: 7,
            ts: "2026-01-01T00:00:00Z".into(),
            epoch: Some(3),
            child_pid: None,
            reason: "heir and the lease lapsed".into(),
            dropped_before: 0,
        };
        let j = serde_json::to_value(&ev).unwrap();
        assert_eq!(j["type"], "leader");
        assert_eq!(j["epoch"], 3);
        assert!(j.get("child_pid").is_none());
        assert_eq!(ev.routing_key(), "succession.scheduler");
    }
}
