//! Reading YAML nodes as keyword values, failing at the node with the expected type.

use serde_json::{Map, Value};

use crate::error::LoadResult;
use crate::yaml::{Kind, Node};

pub(super) fn fail<T>(node: &Node, msg: impl Into<String>) -> LoadResult<T> {
    Err(node.err(msg))
}

/// Fails on the first string under `node` whose template syntax is broken (see
/// [`crate::template::check_syntax`]); `condition` reads plain strings as expressions.
pub(super) fn check_templates(node: &Node, condition: bool) -> LoadResult<()> {
    match &node.kind {
        Kind::Str(s) => crate::template::check_syntax(s, condition).or_else(|e| fail(node, e)),
        Kind::Seq(items) => items.iter().try_for_each(|i| check_templates(i, condition)),
        Kind::Map(entries) => entries.iter().try_for_each(|(k, v)| {
            check_templates(k, false)?;
            check_templates(v, condition)
        }),
        _ => Ok(()),
    }
}

pub(super) fn string_of(node: &Node, what: &str) -> LoadResult<String> {
    match &node.kind {
        Kind::Str(s) => Ok(s.clone()),
        Kind::Int(i) => Ok(i.to_string()),
        Kind::Float(f) => Ok(f.to_string()),
        Kind::Bool(b) => Ok(b.to_string()),
        _ => fail(
            node,
            format!("'{what}' must be a string, found {}", node.type_name()),
        ),
    }
}

pub(super) fn string_list(node: &Node, what: &str) -> LoadResult<Vec<String>> {
    match &node.kind {
        Kind::Null => Ok(vec![]),
        Kind::Seq(items) => items.iter().map(|i| string_of(i, what)).collect(),
        _ => Ok(vec![string_of(node, what)?]),
    }
}

/// Conditions: a string, a boolean, or a list of them (all must hold).
pub(super) fn conditions(node: &Node) -> LoadResult<Vec<Value>> {
    match &node.kind {
        Kind::Seq(items) => items.iter().map(condition).collect(),
        _ => Ok(vec![condition(node)?]),
    }
}

pub(super) fn condition(node: &Node) -> LoadResult<Value> {
    match &node.kind {
        Kind::Str(_) | Kind::Bool(_) | Kind::Int(_) => Ok(node.to_value()),
        Kind::Null => Ok(Value::Bool(false)),
        _ => fail(
            node,
            format!(
                "a condition must be an expression string, found {}",
                node.type_name()
            ),
        ),
    }
}

pub(super) fn mapping(node: &Node, what: &str) -> LoadResult<Map<String, Value>> {
    match node.to_value() {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => fail(
            node,
            format!("'{what}' must be a mapping, found {}", node.type_name()),
        ),
    }
}

/// `throttle`: how many hosts may run the task at once (0: no limit beyond forks). A whole
/// number as written; hfplay does not template it.
pub(super) fn throttle_of(node: &Node) -> LoadResult<Option<usize>> {
    match &node.kind {
        Kind::Int(i) if *i >= 0 => Ok(usize::try_from(*i).ok().filter(|n| *n > 0)),
        Kind::Str(s) if s.trim().parse::<usize>().is_ok() => {
            Ok(s.trim().parse::<usize>().ok().filter(|n| *n > 0))
        }
        _ => fail(
            node,
            format!(
                "'throttle' must be a whole number of hosts (0: no limit), found {}",
                node.type_name()
            ),
        ),
    }
}

pub(super) fn bool_of(node: &Node, what: &str) -> LoadResult<Value> {
    match &node.kind {
        Kind::Bool(_) | Kind::Str(_) | Kind::Int(_) => Ok(node.to_value()),
        _ => fail(
            node,
            format!("'{what}' must be a boolean, found {}", node.type_name()),
        ),
    }
}
