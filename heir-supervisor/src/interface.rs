//! `heir-supervisor interface`: a live terminal view of the groups and the succession news.
//!
//! Two sources, either or both: the registry (polled every `--refresh`, the truth about members,
//! heir, leader and epoch on the DB clock) and the news exchange (an exclusive, auto-deleted
//! queue bound with `#`, so DB failover events show too). Keys: `q`/Esc/Ctrl-C quit.
//!
//! Anyone with the news vhost's credentials can publish, so with `--news-key-file` only events
//! signed with that key (and on their own routing key) are shown; the rest are counted in the
//! status line as rejected. Without a key every event is shown and the status line says the
//! news are unverified.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Row, Table};
use ratatui::Frame;

use crate::cli::InterfaceArgs;
use crate::news::{redact, Event, NewsKey, NewsTls};
use crate::registry::{Registry, View};
use crate::status::member_state;

const MAX_EVENTS: usize = 500;

/// Everything the screen shows.
#[derive(Debug, Default, Clone)]
pub struct Screen {
    pub views: Vec<View>,
    pub db: String,
    pub news: String,
    pub events: VecDeque<String>,
    pub trust: NewsTrust,
    /// Messages not shown because they did not verify (with a key only).
    pub rejected: u64,
}

/// Whether the news shown are checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum NewsTrust {
    /// No `--news-url`.
    #[default]
    NotUsed,
    /// No `--news-key-file`: anyone with the vhost's credentials could have written them.
    Unverified,
    /// Only events signed with `--news-key-file` are shown.
    Verified,
}

pub async fn run(args: InterfaceArgs) -> Result<i32> {
    let dsn = args.dsn.resolve()?;
    let urls = crate::news::split_urls(&args.news.urls);
    if dsn.is_none() && urls.is_empty() {
        bail!("interface needs --dsn (registry) and/or --news-url (news exchange)");
    }
    let key = args.news.key()?;
    let tls = args.news.tls()?;
    if !std::io::stdout().is_terminal() {
        bail!("interface needs a terminal; use `heir-supervisor status` in scripts");
    }
    let screen = Arc::new(Mutex::new(Screen {
        db: if dsn.is_some() {
            "connecting"
        } else {
            "not used (no --dsn)"
        }
        .into(),
        news: if urls.is_empty() {
            "not used (no --news-url)"
        } else {
            "connecting"
        }
        .into(),
        trust: match (urls.is_empty(), key.is_some()) {
            (true, _) => NewsTrust::NotUsed,
            (false, false) => NewsTrust::Unverified,
            (false, true) => NewsTrust::Verified,
        },
        ..Screen::default()
    }));
    if let Some(dsn) = dsn {
        let s = screen.clone();
        let group = args.group.clone();
        let mut reg = Registry::reader(&dsn)?;
        let refresh = args.refresh.max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                let res =
                    tokio::time::timeout(Duration::from_secs(5), reg.all_views(group.as_deref()))
                        .await
                        .map_err(|_| anyhow!("timed out"))
                        .and_then(|r| r);
                if let Ok(mut sc) = s.lock() {
                    match res {
                        Ok(Some(v)) => {
                            sc.views = v;
                            sc.db = "ok".into();
                        }
                        Ok(None) => {
                            sc.views = Vec::new();
                            sc.db =
                                "ok, but no succession table yet (no supervisor has run)".into();
                        }
                        Err(e) => sc.db = format!("unreachable: {e:#}"),
                    }
                }
                if sc_failed(&s) {
                    reg.reset();
                }
                tokio::time::sleep(refresh).await;
            }
        });
    }
    if !urls.is_empty() {
        let s = screen.clone();
        let exchange = args.news.exchange.clone();
        let group = args.group.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                let url = urls[i % urls.len()].clone();
                i += 1;
                if let Err(e) =
                    consume(&url, &exchange, group.as_deref(), key.as_ref(), &tls, &s).await
                {
                    if let Ok(mut sc) = s.lock() {
                        sc.news = format!("{}: {e:#}; retrying", redact(&url));
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
    let ui = screen.clone();
    tokio::task::spawn_blocking(move || ui_loop(ui))
        .await
        .context("interface thread")??;
    Ok(0)
}

fn sc_failed(s: &Arc<Mutex<Screen>>) -> bool {
    s.lock().map(|sc| sc.db != "ok").unwrap_or(false)
}

async fn consume(
    url: &str,
    exchange: &str,
    group: Option<&str>,
    news_key: Option<&NewsKey>,
    tls: &NewsTls,
    screen: &Arc<Mutex<Screen>>,
) -> Result<()> {
    let conn = tls.connect(url, Duration::from_secs(5)).await?;
    let ch = conn.create_channel().await.context("channel")?;
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
    .context("declaring the exchange")?;
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
        .context("declaring a private queue")?;
    let key = match group {
        Some(g) => format!("succession.{g}"),
        None => "#".to_string(),
    };
    ch.queue_bind(
        q.name().as_str(),
        exchange,
        &key,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .context("binding")?;
    let mut consumer = ch
        .basic_consume(
            q.name().as_str(),
            "heir-interface",
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming")?;
    if let Ok(mut sc) = screen.lock() {
        sc.news = format!("{} exchange {exchange} key {key}", redact(url));
    }
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("delivery")?;
        let line = news_line(&delivery.data, delivery.routing_key.as_str(), news_key);
        if let Ok(mut sc) = screen.lock() {
            match line {
                Some(line) => {
                    sc.events.push_back(line);
                    while sc.events.len() > MAX_EVENTS {
                        sc.events.pop_front();
                    }
                }
                None => sc.rejected += 1,
            }
        }
    }
    Err(anyhow!("consumer ended"))
}

/// The line a received message shows as; `None`: rejected (`key` given, and the message is not
/// an event signed with it, or it came on another group's routing key).
pub fn news_line(data: &[u8], routing_key: &str, key: Option<&NewsKey>) -> Option<String> {
    match key {
        Some(k) => k
            .verify(data)
            .ok()
            .filter(|ev| ev.routing_key() == routing_key)
            .map(|ev| format_event(&ev)),
        None => Some(match serde_json::from_slice::<Event>(data) {
            Ok(ev) => format_event(&ev),
            Err(_) => format!("{routing_key} {}", String::from_utf8_lossy(data)),
        }),
    }
}

/// The bottom line. Whether the news are checked comes before the (long) broker description,
/// so a narrow terminal still shows it.
pub fn status_line(s: &Screen) -> String {
    let news = match s.trust {
        NewsTrust::NotUsed => s.news.clone(),
        NewsTrust::Unverified => format!("UNVERIFIED (no --news-key-file) · {}", s.news),
        NewsTrust::Verified if s.rejected == 0 => format!("signed only · {}", s.news),
        NewsTrust::Verified => format!(
            "signed only, {} rejected (unsigned or forged) · {}",
            s.rejected, s.news
        ),
    };
    format!("db: {} · news: {news} · q quits", s.db)
}

pub fn format_event(ev: &Event) -> String {
    let time = ev.ts.get(11..23).unwrap_or(&ev.ts);
    format!(
        "{time} {:<14} {:<13} {:<12}{} {}",
        ev.group,
        ev.kind,
        ev.member,
        ev.epoch.map(|e| format!(" e{e}")).unwrap_or_default(),
        ev.reason
    )
}

fn ui_loop(screen: Arc<Mutex<Screen>>) -> Result<()> {
    let mut terminal = ratatui::init();
    let res = (|| -> Result<()> {
        loop {
            let snapshot = screen.lock().map(|s| s.clone()).unwrap_or_default();
            terminal
                .draw(|f| draw(f, &snapshot))
                .context("drawing the screen")?;
            if event::poll(Duration::from_millis(250)).context("reading the terminal")? {
                if let TermEvent::Key(k) = event::read().context("reading a key")? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if k.kind == KeyEventKind::Press
                        && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    res
}

/// Render one frame (pure: tested with ratatui's TestBackend).
pub fn draw(f: &mut Frame, s: &Screen) {
    let groups_height: u16 = s
        .views
        .iter()
        .map(|v| v.members.len() as u16 + 3)
        .sum::<u16>()
        .max(3);
    let [top, bottom, foot] = Layout::vertical([
        Constraint::Max(groups_height),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(f.area());

    let group_areas = Layout::vertical(
        s.views
            .iter()
            .map(|v| Constraint::Length(v.members.len() as u16 + 3)),
    )
    .split(top);
    if s.views.is_empty() {
        f.render_widget(
            Paragraph::new("no groups registered (yet)")
                .block(Block::default().borders(Borders::ALL).title(" groups ")),
            top,
        );
    }
    for (v, area) in s.views.iter().zip(group_areas.iter()) {
        let title = match &v.lease {
            Some(l) if l.valid => format!(
                " {} — leader {} · epoch {} · lease {:.1}s ",
                v.group,
                l.holder.as_deref().unwrap_or("?"),
                l.epoch,
                l.remaining_s
            ),
            Some(l) => format!(" {} — NO LEADER · epoch {} ", v.group, l.epoch),
            None => format!(" {} — no lease yet ", v.group),
        };
        let rows = v.members.iter().enumerate().map(|(i, m)| {
            let state = member_state(v, m);
            let style = match state {
                "leader" => Style::default()
                    .fg(Color::Green)
                    .add_modifier(Modifier::BOLD),
                "heir" => Style::default().fg(Color::Yellow),
                "dead" => Style::default().fg(Color::DarkGray),
                _ => Style::default(),
            };
            Row::new(vec![
                format!("{}", i + 1),
                m.member.clone(),
                state.to_string(),
                m.host.clone(),
                m.pid.to_string(),
                format!("{:.1}s", m.age_s),
                format!("{:.0}s", m.registered_s),
            ])
            .style(style)
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(3),
                Constraint::Min(12),
                Constraint::Length(8),
                Constraint::Min(12),
                Constraint::Length(8),
                Constraint::Length(11),
                Constraint::Length(11),
            ],
        )
        .header(
            Row::new(vec![
                "#",
                "member",
                "state",
                "host",
                "pid",
                "checked in",
                "registered",
            ])
            .style(Style::default().add_modifier(Modifier::UNDERLINED)),
        )
        .block(Block::default().borders(Borders::ALL).title(title));
        f.render_widget(table, *area);
    }

    let visible = bottom.height.saturating_sub(2) as usize;
    let items: Vec<ListItem> = s
        .events
        .iter()
        .skip(s.events.len().saturating_sub(visible))
        .map(|e| ListItem::new(Line::from(e.as_str())))
        .collect();
    f.render_widget(
        List::new(items).block(Block::default().borders(Borders::ALL).title(" news ")),
        bottom,
    );
    let warn = s.trust == NewsTrust::Unverified || s.rejected > 0;
    f.render_widget(
        Paragraph::new(status_line(s)).style(Style::default().fg(if warn {
            Color::Yellow
        } else {
            Color::DarkGray
        })),
        foot,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{LeaseRow, MemberRow};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    #[test]
    fn renders_groups_and_news() {
        let m = |name: &str, seq, live| MemberRow {
            member: name.into(),
            instance: format!("i-{name}"),
            seq,
            host: format!("h-{name}"),
            pid: 10,
            ttl_ms: 3000,
            live,
            age_s: 0.2,
            registered_s: 60.0,
        };
        let ev = event("s2");
        let s = Screen {
            views: vec![View {
                group: "scheduler".into(),
                members: vec![m("s1", 1, false), m("s2", 2, true)],
                lease: Some(LeaseRow {
                    holder: Some("s2".into()),
                    instance: Some("i-s2".into()),
                    epoch: 4,
                    valid: true,
                    remaining_s: 2.5,
                }),
            }],
            db: "ok".into(),
            news: "amqp://q1".into(),
            events: VecDeque::from([format_event(&ev)]),
            trust: NewsTrust::Unverified,
            rejected: 0,
        };
        let text = render(&s);
        assert!(text.contains("scheduler — leader s2 · epoch 4"), "{text}");
        assert!(text.contains("dead"), "{text}");
        assert!(
            text.contains("10:00:00.123 scheduler      leader"),
            "{text}"
        );
        assert!(text.contains("db: ok"), "{text}");
        assert!(
            text.contains("news: UNVERIFIED (no --news-key-file) · amqp://q1"),
            "{text}"
        );
    }

    fn render(s: &Screen) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 20)).unwrap();
        t.draw(|f| draw(f, s)).unwrap();
        t.backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect()
    }

    fn event(member: &str) -> Event {
        Event {
            kind: "leader".into(),
            group: "scheduler".into(),
            member: member.into(),
            host: member.into(),
            pid: 1,
            ts: "2026-01-01T10:00:00.123Z".into(),
            epoch: Some(4),
            child_pid: None,
            reason: "took the lease: epoch 4".into(),
            dropped_before: 0,
        }
    }

    #[test]
    fn shows_only_signed_news_with_a_key() {
        let key = NewsKey::new(b"0123456789abcdef-news").unwrap();
        let rk = "succession.scheduler";
        let signed = crate::news::encode(&event("s2"), Some(&key)).unwrap();
        let unsigned = crate::news::encode(&event("s3"), None).unwrap();
        let forged = String::from_utf8(signed.clone()).unwrap().replacen(
            "\"member\":\"s2\"",
            "\"member\":\"s9\"",
            1,
        );

        let line = news_line(&signed, rk, Some(&key)).unwrap();
        assert!(line.contains("scheduler      leader        s2"), "{line}");
        assert_eq!(news_line(&unsigned, rk, Some(&key)), None);
        assert_eq!(news_line(forged.as_bytes(), rk, Some(&key)), None);
        assert_eq!(news_line(b"garbage", rk, Some(&key)), None);
        // A genuine event replayed on another group's routing key.
        assert_eq!(news_line(&signed, "succession.other", Some(&key)), None);

        // Without a key everything shows, as before (the signature is just one more field).
        assert_eq!(news_line(&signed, rk, None), Some(line.clone()));
        assert!(news_line(&unsigned, rk, None).is_some());
        assert_eq!(
            news_line(b"garbage", rk, None).as_deref(),
            Some("succession.scheduler garbage")
        );
    }

    #[test]
    fn status_line_counts_rejected_news() {
        let mut s = Screen {
            db: "ok".into(),
            news: "amqp://q1 exchange heirflow.news key #".into(),
            events: VecDeque::from([format_event(&event("s2"))]),
            trust: NewsTrust::Verified,
            ..Screen::default()
        };
        let text = render(&s);
        assert!(
            text.contains("news: signed only · amqp://q1 exchange"),
            "{text}"
        );
        assert!(!text.contains("rejected"), "{text}");

        s.rejected = 3;
        let text = render(&s);
        assert!(
            text.contains("news: signed only, 3 rejected (unsigned or forged) · amqp://q1"),
            "{text}"
        );
        assert!(
            text.contains("10:00:00.123 scheduler      leader"),
            "{text}"
        );

        s.trust = NewsTrust::NotUsed;
        s.news = "not used (no --news-url)".into();
        s.rejected = 0;
        assert_eq!(
            status_line(&s),
            "db: ok · news: not used (no --news-url) · q quits"
        );
    }
}
