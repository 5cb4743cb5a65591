//! Succession news through a real RabbitMQ, across a broker outage.
//!
//! Needs Postgres (as every test here) and a broker: `HEIR_TEST_AMQP_URL`, e.g.
//! `amqp://heirnews:PASSWORD@172.30.0.21:5672/heirflow-news` (the local cluster's news vhost).
//! It is `#[ignore]`d by default (RabbitMQ is not part of this machine); with `--ignored` and no
//! URL it fails.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use heir_supervisor::news::Event;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

/// `amqp://user:pass@host:port/vhost` → the broker's (host, port), and the same URL pointed at
/// 127.0.0.1:`local_port` instead.
fn split_amqp(url: &str, local_port: u16) -> ((String, u16), String) {
    let after_at = url.rsplit_once('@').map(|(_, r)| r).unwrap_or(url);
    let hostport = after_at.split('/').next().unwrap_or(after_at);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(5672)),
        None => (hostport.to_string(), 5672),
    };
    let through = url.replacen(hostport, &format!("127.0.0.1:{local_port}"), 1);
    ((host, port), through)
}

// Ignored by default (it needs a RabbitMQ it may stop): run it with
// `HEIR_TEST_AMQP_URL=amqp://... cargo test --release -p heir-supervisor --test news -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a RabbitMQ broker: set HEIR_TEST_AMQP_URL and pass --ignored"]
async fn events_survive_a_broker_outage_in_order() {
    let Ok(url) = std::env::var("HEIR_TEST_AMQP_URL") else {
        panic!("set HEIR_TEST_AMQP_URL to the broker this test may use (see the module doc)");
    };
    let Some(mut c) = Cluster::new("news") else {
        return;
    };

    // Our own consumer, bound before anything is published.
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&url, props)
        .await
        .expect("connecting the test consumer");
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        "heirflow.news",
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    let key = format!("succession.{}", c.group);
    ch.queue_bind(
        q.name().as_str(),
        "heirflow.news",
        &key,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let mut consumer = ch
        .basic_consume(
            q.name().as_str(),
            "news-test",
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");

    // The supervisor reaches the broker through a proxy that starts cut: a broker outage.
    let (target, _) = split_amqp(&url, 0);
    let proxy = Proxy::start(target);
    proxy.cut();
    let (_, news_url) = split_amqp(&url, proxy.port);
    c.spawn("m1", &["--news-url", &news_url]);
    c.wait_for("m1 leads", Duration::from_secs(10), |r| {
        r.iter().any(|r| r.kind == "start" && r.member == "m1")
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.heal();
    // After the outage: SIGTERM, so the buffered and the new events all flow.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.signal("m1", libc::SIGTERM);

    let mut kinds = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(d) = consumer.next().await {
            let d = d.expect("delivery");
            let ev: Event = serde_json::from_slice(&d.data).expect("event JSON");
            assert_eq!(ev.group, c.group);
            assert_eq!(d.routing_key.as_str(), key);
            kinds.push(ev.kind.clone());
            if ev.kind == "left" {
                break;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "events so far: {kinds:?}");
    assert_eq!(
        kinds,
        [
            "joined",
            "heir",
            "leader",
            "child_started",
            "child_stopped",
            "left"
        ],
        "every event, in order, none lost to the outage"
    );
}
