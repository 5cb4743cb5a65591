//! What a voter saw of the database nodes, as served on its endpoint.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::probe::PgState;

/// One node as seen by one voter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeSeen {
    /// The last probe ran a query.
    pub reachable: bool,
    /// How long `reachable` has had its current value (ms).
    pub for_ms: u64,
    /// Time since the last probe finished (ms): stale views do not vote.
    pub age_ms: u64,
    /// `Some(true)`: a primary; `Some(false)`: a standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

text_enum! {
    /// What a node supervisor decided it is this cycle (`rules::Decision::state`), as reported
    /// to the other voters and printed by `db status`; `Other`: a peer of another version.
    NodeState {
        Primary = "primary",
        Standby = "standby",
        Promoting = "promoting",
        Demoting = "demoting",
        Fencing = "fencing",
        Unresponsive = "unresponsive",
        Down = "down",
        Rejoining = "rejoining",
    }
}

/// A DB node supervisor's report about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NodeReport {
    pub name: String,
    pub state: NodeState,
    /// A standby that was the synchronous one recently enough to be promoted.
    pub eligible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    pub holds_vip: bool,
    pub reason: String,
}

/// The JSON of `GET /v1/view`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct View {
    pub voter: String,
    /// `witness` or `node`.
    pub kind: String,
    pub interval_ms: u64,
    pub nodes: BTreeMap<String, NodeSeen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<NodeReport>,
}

struct Seen {
    reachable: bool,
    since: Instant,
    last: Instant,
    state: Option<PgState>,
    error: Option<String>,
}

/// Thread-safe record of the latest probe per node, plus the node report.
pub struct Observer {
    voter: String,
    kind: &'static str,
    interval: Duration,
    seen: Mutex<BTreeMap<String, Seen>>,
    report: Mutex<Option<NodeReport>>,
}

impl Observer {
    pub fn new(voter: &str, kind: &'static str, interval: Duration) -> Observer {
        Observer {
            voter: voter.to_string(),
            kind,
            interval,
            seen: Mutex::new(BTreeMap::new()),
            report: Mutex::new(None),
        }
    }

    pub fn record(&self, node: &str, res: &anyhow::Result<PgState>) {
        let now = Instant::now();
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let reachable = res.is_ok();
        let e = seen.entry(node.to_string()).or_insert(Seen {
            reachable,
            since: now,
            last: now,
            state: None,
            error: None,
        });
        if e.reachable != reachable {
            e.reachable = reachable;
            e.since = now;
        }
        e.last = now;
        match res {
            Ok(st) => {
                e.state = Some(st.clone());
                e.error = None;
            }
            Err(err) => {
                e.state = None;
                e.error = Some(format!("{err:#}"));
            }
        }
    }

    /// How long this voter has seen `node` unreachable (None: reachable or never probed).
    pub fn down_for(&self, node: &str) -> Option<Duration> {
        let seen = self.seen.lock().ok()?;
        let e = seen.get(node)?;
        (!e.reachable).then(|| e.since.elapsed())
    }

    pub fn set_report(&self, r: NodeReport) {
        if let Ok(mut g) = self.report.lock() {
            *g = Some(r);
        }
    }

    pub fn view(&self) -> View {
        let now = Instant::now();
        let nodes = self
            .seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .map(|(k, e)| {
                        (
                            k.clone(),
                            NodeSeen {
                                reachable: e.reachable,
                                for_ms: ms(now.saturating_duration_since(e.since)),
                                age_ms: ms(now.saturating_duration_since(e.last)),
                                primary: e.state.as_ref().map(|s| !s.in_recovery),
                                timeline: e.state.as_ref().and_then(|s| s.timeline),
                                error: e.error.clone(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        View {
            voter: self.voter.clone(),
            kind: self.kind.to_string(),
            interval_ms: ms(self.interval),
            nodes,
            report: self.report.lock().ok().and_then(|r| r.clone()),
        }
    }

    pub fn view_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.view()).unwrap_or_else(|_| b"{}".to_vec())
    }
}

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_states_travel_as_their_text() {
        let r = NodeReport {
            name: "a".into(),
            state: NodeState::Promoting,
            ..NodeReport::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"promoting""#), "{json}");
        assert_eq!(serde_json::from_str::<NodeReport>(&json).unwrap(), r);
        let newer = json.replace("promoting", "resting");
        let back: NodeReport = serde_json::from_str(&newer).unwrap();
        assert_eq!(back.state, NodeState::Other("resting".into()));
        assert_eq!(back.state.to_string(), "resting");
    }

    #[test]
    fn records_flips_and_serves() {
        let o = Observer::new("w1", "witness", Duration::from_secs(1));
        o.record("a", &Ok(PgState::default()));
        assert_eq!(o.down_for("a"), None);
        o.record("a", &Err(anyhow::anyhow!("refused")));
        assert!(o.down_for("a").is_some());
        let v = o.view();
        assert_eq!(v.voter, "w1");
        assert!(!v.nodes["a"].reachable);
        assert_eq!(v.nodes["a"].error.as_deref(), Some("refused"));
        let back: View = serde_json::from_slice(&o.view_json()).unwrap();
        assert_eq!(back.nodes.len(), 1);
        assert_eq!(o.down_for("never"), None);
    }
}
