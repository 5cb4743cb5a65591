//! `heir-supervisor status`: members, heir, epoch and check-in ages per group, on the DB clock.
//!
//! Read-only by construction: a `Registry::reader` never issues DDL, so status works with a
//! read-only role and leaves a database no supervisor has used untouched. Every round trip has a
//! deadline, so a database that accepts TCP but never answers cannot hang it.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::registry::{Registry, View};

#[derive(Serialize)]
struct Report<'a> {
    groups: Vec<GroupReport<'a>>,
}

#[derive(Serialize)]
struct GroupReport<'a> {
    heir: Option<&'a str>,
    leader: Option<&'a str>,
    epoch: Option<i64>,
    lease_valid: bool,
    lease_remaining_s: Option<f64>,
    #[serde(flatten)]
    view: &'a View,
}

/// Exit code when the succession tables do not exist (distinct from 1, an error).
pub const NO_TABLE: i32 = 3;

pub async fn run(dsn: &str, group: Option<&str>, json: bool, timeout: Duration) -> Result<i32> {
    let mut reg = Registry::reader(dsn)?;
    let target = reg.target();
    bounded(timeout, &target, "connecting", async {
        reg.client().await.map(|_| ())
    })
    .await?;
    let Some(views) = bounded(timeout, &target, "reading", reg.all_views(group)).await? else {
        crate::log::error(
            "no succession table yet: no supervisor has run against this database \
             (heirflow_members does not exist; status creates nothing)",
        );
        return Ok(NO_TABLE);
    };
    if json {
        println!("{}", render_json(&views)?);
    } else {
        print!("{}", render_text(&views));
    }
    Ok(0)
}

/// `fut`, or an error naming the database (never the DSN: it may hold a password) after `limit`.
async fn bounded<T>(
    limit: Duration,
    target: &str,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        anyhow!("database at {target} did not answer within {limit:?} ({what}; see --timeout)")
    })?
}

fn leader(v: &View) -> Option<&str> {
    v.lease
        .as_ref()
        .filter(|l| l.valid)
        .and_then(|l| l.holder.as_deref())
}

pub fn render_json(views: &[View]) -> Result<String> {
    let groups = views
        .iter()
        .map(|v| GroupReport {
            heir: v.heir().map(|m| m.member.as_str()),
            leader: leader(v),
            epoch: v.lease.as_ref().map(|l| l.epoch),
            lease_valid: v.lease.as_ref().is_some_and(|l| l.valid),
            lease_remaining_s: v.lease.as_ref().map(|l| l.remaining_s),
            view: v,
        })
        .collect();
    Ok(serde_json::to_string_pretty(&Report { groups })?)
}

/// The state word shown for a member.
pub fn member_state(v: &View, m: &crate::registry::MemberRow) -> &'static str {
    let holds = v.lease.as_ref().is_some_and(|l| {
        l.valid
            && l.holder.as_deref() == Some(m.member.as_str())
            && l.instance.as_deref() == Some(m.instance.as_str())
    });
    let is_heir = v
        .heir()
        .is_some_and(|h| h.member == m.member && h.instance == m.instance);
    match (m.live, holds, is_heir) {
        (_, true, _) => "leader",
        (true, false, true) => "heir",
        (true, false, false) => "standby",
        (false, _, _) => "dead",
    }
}

pub fn render_text(views: &[View]) -> String {
    let mut out = String::new();
    if views.is_empty() {
        out.push_str("no groups registered\n");
    }
    for v in views {
        let lease = match &v.lease {
            Some(l) if l.valid => format!(
                "leader {} epoch {} (lease {:.1}s left)",
                l.holder.as_deref().unwrap_or("?"),
                l.epoch,
                l.remaining_s
            ),
            Some(l) if l.epoch == 0 => "no leader yet".to_string(),
            Some(l) => format!(
                "no leader (epoch {}, lease lapsed {:.1}s ago)",
                l.epoch, -l.remaining_s
            ),
            None => "no lease yet".to_string(),
        };
        let heir = v.heir().map(|m| m.member.as_str()).unwrap_or("none");
        let _ = writeln!(out, "group {}: {lease}; heir {heir}", v.group);
        let _ = writeln!(
            out,
            "  {:>3}  {:<20} {:<8} {:<20} {:>8} {:>12} {:>10}",
            "#", "member", "state", "host", "pid", "checked in", "registered"
        );
        for (i, m) in v.members.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>3}  {:<20} {:<8} {:<20} {:>8} {:>10.1}s {:>9.0}s",
                i + 1,
                m.member,
                member_state(v, m),
                m.host,
                m.pid,
                m.age_s,
                m.registered_s
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{LeaseRow, MemberRow};

    fn sample() -> View {
        let m = |name: &str, seq, live| MemberRow {
            member: name.into(),
            instance: format!("i-{name}"),
            seq,
            host: format!("host-{name}"),
            pid: 100 + seq as i32,
            ttl_ms: 3000,
            live,
            age_s: 0.25,
            registered_s: 42.0,
        };
        View {
            group: "scheduler".into(),
            members: vec![m("a", 1, false), m("b", 2, true), m("c", 3, true)],
            lease: Some(LeaseRow {
                holder: Some("b".into()),
                instance: Some("i-b".into()),
                epoch: 5,
                valid: true,
                remaining_s: 2.5,
            }),
        }
    }

    #[test]
    fn text_shows_leader_heir_and_states() {
        let t = render_text(&[sample()]);
        assert!(
            t.contains("group scheduler: leader b epoch 5 (lease 2.5s left); heir b"),
            "{t}"
        );
        assert!(t.contains(" a                    dead "), "{t}");
        assert!(t.contains(" b                    leader "), "{t}");
        assert!(t.contains(" c                    standby "), "{t}");
    }

    #[test]
    fn json_has_summary_and_members() {
        let j: serde_json::Value =
            serde_json::from_str(&render_json(&[sample()]).unwrap()).unwrap();
        let g = &j["groups"][0];
        assert_eq!(g["group"], "scheduler");
        assert_eq!(g["leader"], "b");
        assert_eq!(g["heir"], "b");
        assert_eq!(g["epoch"], 5);
        assert_eq!(g["members"].as_array().unwrap().len(), 3);
    }
}
