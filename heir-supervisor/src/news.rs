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
//! (`amqps://heirnews:PASSWORD@host:5671/heirflow-news`).
//!
//! TLS: an `amqps://` URL needs `--news-ca-file`, and the broker's certificate must chain to
//! that file's certificates only (no system roots) and name the URL's host or IP address; an
//! `amqp://` URL is plain text (test brokers).
//!
//! Signatures: anyone holding the news vhost's credentials can publish on the exchange, so an
//! unsigned event proves nothing (a forged `leader` or `fenced` would mislead whoever watches).
//! With `--news-key-file` (a shared key, the same on every publisher and viewer, mode 0600) each
//! message carries an HMAC-SHA256 over its exact bytes, and `interface` with the key shows only
//! events that verify. The message is the event's JSON `J` (as serde_json writes [`Event`]) with
//! a last member added: `J` minus its closing `}`, then `,"sig":"<hex>"}` where
//! `hex = HMAC-SHA256(key, "news|" J)`. Consumers that do not check just see one more field.
//! The verifier MACs the received bytes in front of that suffix (plus `}`), so nothing is
//! re-serialized and fields unknown to an older viewer are covered too. A signature proves who
//! wrote an event, not when: a captured event can be replayed (its signed `ts` shows its age).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::db::http::Secret;

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
    /// File holding the shared news key (at least 16 bytes, mode 0600): events published are
    /// signed with it, and `interface` shows only events that verify.
    #[arg(
        long = "news-key-file",
        env = "HEIR_NEWS_KEY_FILE",
        value_name = "PATH"
    )]
    pub key_file: Option<PathBuf>,
    /// CA certificate(s) an `amqps://` broker's certificate must chain to (PEM).
    #[arg(long = "news-ca-file", env = "HEIR_NEWS_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

impl NewsArgs {
    /// The TLS setting of `--news-ca-file`, read and checked now.
    pub fn tls(&self) -> Result<NewsTls> {
        NewsTls::from_ca_file(self.ca_file.as_deref())
    }

    /// The key of `--news-key-file`, read and checked now; `None` without the option.
    pub fn key(&self) -> Result<Option<NewsKey>> {
        self.key_file.as_deref().map(NewsKey::from_file).transpose()
    }
}

/// How news connections verify an `amqps://` broker: the CA of `--news-ca-file`, or none.
#[derive(Clone, Default)]
pub struct NewsTls(Option<Arc<rustls::ClientConfig>>);

impl NewsTls {
    pub fn from_ca_file(ca_file: Option<&Path>) -> Result<NewsTls> {
        let Some(path) = ca_file else {
            return Ok(NewsTls(None));
        };
        let config = crate::pg_tls::verifying_client_config(path).context("--news-ca-file")?;
        Ok(NewsTls(Some(Arc::new(config))))
    }

    /// Connects to `url` within `timeout`: TLS (verified) for `amqps://`, plain for `amqp://`.
    pub async fn connect(&self, url: &str, timeout: Duration) -> Result<Connection> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let uri: lapin::uri::AMQPUri = url
            .parse()
            .map_err(|e| anyhow!("{}: bad AMQP URL: {e}", redact(url)))?;
        let (scheme, config) = (uri.scheme.clone(), self.0.clone());
        let connecting = async move {
            match (scheme, config) {
                (lapin::uri::AMQPScheme::AMQP, _) => Ok(Connection::connect_uri(uri, props).await),
                (lapin::uri::AMQPScheme::AMQPS, None) => Err(anyhow!(
                    "{}: an amqps:// URL needs --news-ca-file (the CA its certificate must chain to)",
                    redact(url)
                )),
                (lapin::uri::AMQPScheme::AMQPS, Some(config)) => {
                    // lapin's own TLS would also trust the system's roots: verify here instead.
                    let connector = lapin::tcp::RustlsConnector::from(config);
                    // The error type is lapin's (HandshakeResult), not ours to shrink.
                    #[allow(clippy::result_large_err)]
                    let connect = move |uri: &lapin::uri::AMQPUri| {
                        let host = uri.authority.host.clone();
                        let stream = lapin::tcp::TcpStream::connect_timeout(
                            (host.as_str(), uri.authority.port),
                            timeout,
                        )?
                        .into_rustls(&connector, &host)?;
                        // handshake done blocking; lapin's reactor then needs it non-blocking
                        stream.set_nonblocking(true)?;
                        Ok(stream)
                    };
                    Ok(Connection::connector(uri, Box::new(connect), props).await)
                }
            }
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", redact(url)))??
            .with_context(|| format!("connecting to {}", redact(url)))
    }
}

/// The shared key that signs and verifies events (see the module doc).
#[derive(Clone)]
pub struct NewsKey(Secret);

impl std::fmt::Debug for NewsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewsKey(***)")
    }
}

/// Domain separation: this key might be reused elsewhere, a news MAC must not pass for another.
const MAC_PREFIX: &[u8] = b"news|";
/// The signature ends every signed message: `,"sig":"` 64 hex digits `"}`.
const SIG_OPEN: &[u8] = b",\"sig\":\"";
const SIG_HEX_LEN: usize = 64;
const SIG_SUFFIX_LEN: usize = SIG_OPEN.len() + SIG_HEX_LEN + 2;

/// Why a received message is not accepted as a verified event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No signature where a signed message has it.
    Unsigned,
    /// A signature, but not by this key over these bytes.
    BadSignature,
    /// Correctly signed, but not an event this version understands.
    NotAnEvent,
}

impl NewsKey {
    /// The trimmed content of `path`; refused when group or others may access the file.
    pub fn from_file(path: &Path) -> Result<NewsKey> {
        let raw = crate::private_file::read(path, "news key file")?;
        NewsKey::new(raw.trim().as_bytes())
            .with_context(|| format!("the news key file {}", path.display()))
    }

    /// At least 16 bytes.
    pub fn new(bytes: &[u8]) -> Result<NewsKey> {
        Ok(NewsKey(Secret::new(bytes)?))
    }

    /// The message for `ev`: its JSON with `"sig"` as the last member.
    pub fn sign(&self, ev: &Event) -> Result<Vec<u8>> {
        let mut json = serde_json::to_vec(ev).context("encoding event")?;
        let sig = self.0.sign(&[MAC_PREFIX, &json]);
        // serde_json writes a struct as `{...}` without whitespace; `type` is always there.
        if json.pop() != Some(b'}') {
            bail!("an event did not encode as a JSON object");
        }
        json.extend_from_slice(SIG_OPEN);
        json.extend_from_slice(sig.as_bytes());
        json.extend_from_slice(b"\"}");
        Ok(json)
    }

    /// The event in `msg` if this key signed exactly these bytes.
    pub fn verify(&self, msg: &[u8]) -> Result<Event, Rejected> {
        let Some(body_len) = msg.len().checked_sub(SIG_SUFFIX_LEN) else {
            return Err(Rejected::Unsigned);
        };
        let (body, suffix) = msg.split_at(body_len);
        let (open, rest) = suffix.split_at(SIG_OPEN.len());
        let (hex, close) = rest.split_at(SIG_HEX_LEN);
        if open != SIG_OPEN || close != b"\"}" || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(Rejected::Unsigned);
        }
        let signed = [body, b"}"].concat();
        let hex = std::str::from_utf8(hex).map_err(|_| Rejected::Unsigned)?;
        if !self.0.verify(&[MAC_PREFIX, &signed], hex) {
            return Err(Rejected::BadSignature);
        }
        serde_json::from_slice(&signed).map_err(|_| Rejected::NotAnEvent)
    }
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
    key: Option<NewsKey>,
}

impl News {
    /// The publisher `args` describe (URLs split, key read and checked).
    pub fn from_args(args: &NewsArgs) -> Result<News> {
        Ok(News::start(
            split_urls(&args.urls),
            args.exchange.clone(),
            args.key()?,
            args.tls()?,
        ))
    }

    /// `urls` empty: events are only logged. Every event is signed with `key` when there is one.
    pub fn start(urls: Vec<String>, exchange: String, key: Option<NewsKey>, tls: NewsTls) -> News {
        let news = News {
            buf: Arc::new(Mutex::new(Buffer {
                queue: VecDeque::new(),
                dropped: 0,
            })),
            wake: Arc::new(Notify::new()),
            enabled: !urls.is_empty(),
            key,
        };
        if news.enabled {
            if news.key.is_none() {
                crate::log::info("news: events are unsigned (no --news-key-file)");
            }
            let worker = news.clone();
            tokio::spawn(async move { worker.run(urls, exchange, tls).await });
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

    async fn run(self, urls: Vec<String>, exchange: String, tls: NewsTls) {
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
            let Err(e) = self.session(url, &exchange, &tls, &mut connected).await else {
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
    async fn session(
        &self,
        url: &str,
        exchange: &str,
        tls: &NewsTls,
        connected: &mut bool,
    ) -> Result<()> {
        let conn = tls.connect(url, Duration::from_secs(5)).await?;
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
            let payload = encode(&ev, self.key.as_ref())?;
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

/// The message for `ev`: signed with `key`, plain JSON without one.
pub fn encode(ev: &Event, key: Option<&NewsKey>) -> Result<Vec<u8>> {
    match key {
        Some(k) => k.sign(ev),
        None => serde_json::to_vec(ev).context("encoding event"),
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

    fn leader_event() -> Event {
        Event {
            kind: "leader".into(),
            group: "scheduler".into(),
            member: "s1".into(),
            host: "s1".into(),
            pid: 7,
            ts: "2026-01-01T00:00:00.000Z".into(),
            epoch: Some(3),
            child_pid: None,
            reason: "heir and the lease lapsed".into(),
            dropped_before: 0,
        }
    }

    fn key(k: &str) -> NewsKey {
        NewsKey::new(k.as_bytes()).unwrap()
    }

    #[test]
    fn signed_event_verifies() {
        let k = key("0123456789abcdef-news");
        let ev = leader_event();
        let msg = encode(&ev, Some(&k)).unwrap();
        assert_eq!(k.verify(&msg), Ok(ev.clone()));
        // The signed bytes: `"news|"` and the plain JSON, `"sig"` appended as the last member.
        let plain = serde_json::to_vec(&ev).unwrap();
        let hex = k.0.sign(&[b"news|", &plain]);
        let mut expected = plain[..plain.len() - 1].to_vec();
        expected.extend_from_slice(format!(",\"sig\":\"{hex}\"}}").as_bytes());
        assert_eq!(msg, expected);
        // Consumers without the key read it as before.
        assert_eq!(serde_json::from_slice::<Event>(&msg).unwrap(), ev);
    }

    #[test]
    fn modified_event_fails_verification() {
        let k = key("0123456789abcdef-news");
        let msg = String::from_utf8(encode(&leader_event(), Some(&k)).unwrap()).unwrap();
        for (from, to) in [
            ("\"member\":\"s1\"", "\"member\":\"s2\""),
            ("\"epoch\":3", "\"epoch\":4"),
            ("\"type\":\"leader\"", "\"type\":\"fenced\""),
        ] {
            assert!(msg.contains(from), "{msg}");
            let forged = msg.replacen(from, to, 1);
            assert_eq!(
                k.verify(forged.as_bytes()),
                Err(Rejected::BadSignature),
                "{forged}"
            );
        }
        // An added member before the signature is covered as well.
        let forged = msg.replacen("{", "{\"x\":1,", 1);
        assert_eq!(k.verify(forged.as_bytes()), Err(Rejected::BadSignature));
        // Another key's signature.
        let other = key("fedcba9876543210-news");
        assert_eq!(other.verify(msg.as_bytes()), Err(Rejected::BadSignature));
    }

    #[test]
    fn unsigned_event_fails_verification() {
        let k = key("0123456789abcdef-news");
        let plain = encode(&leader_event(), None).unwrap();
        assert_eq!(k.verify(&plain), Err(Rejected::Unsigned));
        assert_eq!(k.verify(b""), Err(Rejected::Unsigned));
        assert_eq!(k.verify(b"not json at all"), Err(Rejected::Unsigned));
        // A signature field that is not the signed form's suffix.
        let signed = String::from_utf8(encode(&leader_event(), Some(&k)).unwrap()).unwrap();
        let moved = signed.replacen("\"}", "\" }", 1);
        assert_ne!(moved, signed);
        assert!(k.verify(moved.as_bytes()).is_err());
        // Correctly signed bytes that are no event.
        let junk = br#"{"type":1}"#;
        let hex = k.0.sign(&[b"news|", junk]);
        let msg = format!("{{\"type\":1,\"sig\":\"{hex}\"}}");
        assert_eq!(k.verify(msg.as_bytes()), Err(Rejected::NotAnEvent));
    }

    use crate::private_file::TempFile;

    #[tokio::test]
    async fn amqps_needs_a_ca_and_a_readable_one() {
        let e = NewsTls::default()
            .connect("amqps://u:secret@127.0.0.1:1/v", Duration::from_secs(1))
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("needs --news-ca-file"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let f = crate::private_file::TempFile::new("news-ca", "not a certificate\n", 0o644);
        let e = NewsTls::from_ca_file(Some(&f.0))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("--news-ca-file"), "{e}");
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn key_file_must_be_private() {
        let f = TempFile::new("key-0644", "0123456789abcdef-news\n", 0o644);
        let e = format!("{:#}", NewsKey::from_file(&f.0).unwrap_err());
        assert!(e.contains(&f.0.display().to_string()), "{e}");
        assert!(e.contains("mode 0644"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        let f = TempFile::new("key-0640", "0123456789abcdef-news\n", 0o640);
        assert!(NewsKey::from_file(&f.0).is_err());

        let f = TempFile::new("key-0600", "  0123456789abcdef-news\n", 0o600);
        let args = NewsArgs {
            urls: Vec::new(),
            exchange: DEFAULT_EXCHANGE.into(),
            key_file: Some(f.0.clone()),
            ca_file: None,
        };
        let k = args.key().unwrap().unwrap();
        // Trimmed: the same key as without the whitespace.
        let msg = encode(&leader_event(), Some(&key("0123456789abcdef-news"))).unwrap();
        assert_eq!(k.verify(&msg), Ok(leader_event()));

        let f = TempFile::new("key-short", "short\n", 0o600);
        let e = format!("{:#}", NewsKey::from_file(&f.0).unwrap_err());
        assert!(e.contains("16"), "{e}");
        assert!(NewsKey::from_file(Path::new("/nonexistent/heir-news-key")).is_err());
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
