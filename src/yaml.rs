//! YAML loading with positions and Ansible's YAML 1.1 scalar rules.
//!
//! Playbooks are read into a [`Node`] tree where every node knows its file, line and column, so
//! every later error can point at the offending line. Plain scalars resolve as PyYAML (YAML 1.1)
//! resolves them, which is what Ansible users write against: `yes/no/on/off/true/false` in any of
//! their three capitalisations are booleans, `0644` is octal, `~`/`null`/empty are null. Quoted
//! scalars are always strings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::{LoadResult, Loc, LocatedError, SourceFile};

#[derive(Debug, Clone)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }
    /// The key of a mapping entry as text (YAML allows non-string keys; Ansible stringifies).
    pub fn key_string(&self) -> String {
        match &self.kind {
            Kind::Str(s) => s.clone(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Kind::Null => "None".to_string(),
            _ => "?".to_string(),
        }
    }
    /// Looks up a key in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
    pub fn err(&self, msg: impl Into<String>) -> LocatedError {
        LocatedError::new(&self.loc, msg)
    }
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Converts to plain data (variables, module arguments).
    pub fn to_value(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::Number((*i).into()),
            Kind::Float(f) => Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Kind::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.key_string(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }
}

/// The largest YAML file hfplay reads: playbooks and vars files are far smaller; anything
/// larger is a mistake (a log, a data dump) that would only exhaust memory.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// The most nodes a document may expand to through aliases (a "billion laughs" alias bomb
/// otherwise takes every byte of memory).
pub const MAX_NODES: usize = 1_000_000;

/// `--strict`: duplicate mapping keys are errors instead of warnings.
static STRICT_KEYS: AtomicBool = AtomicBool::new(false);

pub fn set_strict_keys(on: bool) {
    STRICT_KEYS.store(on, Ordering::Relaxed);
}

/// Reads and parses a YAML file (a single document).
pub fn load_file(path: &Path) -> LoadResult<Node> {
    let too_big = |len: u64| {
        LocatedError::new(
            &Loc::file_only(path),
            format!("file is {len} bytes, more than the {MAX_FILE_BYTES} hfplay reads"),
        )
    };
    if let Ok(m) = std::fs::metadata(path) {
        if m.len() > MAX_FILE_BYTES {
            return Err(too_big(m.len()));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| LocatedError::new(&Loc::file_only(path), format!("cannot read file: {e}")))?;
    parse_str(path, text)
}

fn node_count(n: &Node) -> usize {
    match &n.kind {
        Kind::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| node_count(k) + node_count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Parses YAML text; `path` is used for locations only.
pub fn parse_str(path: &Path, text: String) -> LoadResult<Node> {
    parse_with(path, text, STRICT_KEYS.load(Ordering::Relaxed))
}

fn parse_with(path: &Path, text: String, strict_keys: bool) -> LoadResult<Node> {
    let file = Arc::new(SourceFile {
        path: crate::error::tidy_path(path),
        text,
    });
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        error: None,
        nodes: 0,
        duplicates: Vec::new(),
    };
    let mut parser = Parser::new_from_str(&file.text);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        let loc = Loc {
            file: file.clone(),
            line: m.line(),
            col: m.col() + 1,
        };
        return Err(LocatedError::new(
            &loc,
            format!("YAML syntax error: {}", e.info()),
        ));
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    for (first, again, key) in &builder.duplicates {
        let msg = format!(
            "duplicate key {key:?}: also at line {}; the later value wins",
            first.line
        );
        if strict_keys {
            return Err(LocatedError::new(again, msg));
        }
        eprintln!("[WARNING]: {again}: {msg}");
    }
    let mut docs = builder.docs;
    match docs.len() {
        0 => Ok(Node {
            kind: Kind::Null,
            loc: Loc {
                file,
                line: 1,
                col: 1,
            },
        }),
        1 => Ok(docs.remove(0)),
        _ => Err(LocatedError::new(
            &docs[1].loc,
            "expected a single YAML document, found several",
        )),
    }
}

enum Frame {
    Seq(Vec<Node>, Loc, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Loc, usize),
}

struct Builder {
    file: Arc<SourceFile>,
    stack: Vec<Frame>,
    /// Each anchor's node and its size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    docs: Vec<Node>,
    error: Option<LocatedError>,
    /// Nodes built so far, aliases counted at their expanded size.
    nodes: usize,
    /// (first, later, key) of each key repeated in one mapping.
    duplicates: Vec<(Loc, Loc, String)>,
}

impl Builder {
    fn loc(&self, m: Marker) -> Loc {
        // yaml-rust2 columns are 0-based, lines 1-based.
        Loc {
            file: self.file.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = node_count(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if key.as_str() == Some("<<") {
                        merge_into(entries, &node);
                    } else if let Some(pos) = entries
                        .iter()
                        .position(|(k, _)| k.as_str().is_some() && k.as_str() == key.as_str())
                    {
                        // Later duplicate keys win, as in PyYAML (Ansible warns).
                        self.duplicates.push((
                            entries[pos].0.loc.clone(),
                            key.loc.clone(),
                            key.key_string(),
                        ));
                        entries[pos] = (key, node);
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// YAML merge key (`<<: *base`): keys already present win.
fn merge_into(entries: &mut Vec<(Node, Node)>, src: &Node) {
    let sources: Vec<&Node> = match &src.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![src],
    };
    for s in sources {
        if let Kind::Map(m) = &s.kind {
            for (k, v) in m {
                if !entries
                    .iter()
                    .any(|(ek, _)| ek.key_string() == k.key_string())
                {
                    entries.push((k.clone(), v.clone()));
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let loc = self.loc(mark);
        self.nodes += match &ev {
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..) => 1,
            Event::Alias(id) => self.anchors.get(id).map_or(0, |a| a.1),
            _ => 0,
        };
        if self.nodes > MAX_NODES {
            self.error = Some(LocatedError::new(
                &loc,
                format!(
                    "the document expands to more than {MAX_NODES} nodes \
                     (aliases of aliases: a YAML alias bomb?)"
                ),
            ));
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                match resolve_scalar(text, style, tag.as_ref()) {
                    Ok(kind) => self.push_node(Node { kind, loc }, anchor),
                    Err(msg) => self.error = Some(LocatedError::new(&loc, msg)),
                }
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(Vec::new(), loc, anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(Vec::new(), None, loc, anchor))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, l, anchor)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            kind: Kind::Seq(items),
                            loc: l,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(entries, _, l, anchor)) = self.stack.pop() {
                    // A block mapping's start event points at its first `:`; its first key is
                    // where a person sees it begin.
                    let l = match entries.first() {
                        Some((k, _))
                            if k.loc.line < l.line
                                || (k.loc.line == l.line && k.loc.col < l.col) =>
                        {
                            k.loc.clone()
                        }
                        _ => l,
                    };
                    self.push_node(
                        Node {
                            kind: Kind::Map(entries),
                            loc: l,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|a| a.0.clone()) {
                Some(mut n) => {
                    n.loc = loc;
                    self.push_node(n, 0);
                }
                None => self.error = Some(LocatedError::new(&loc, "unknown YAML alias")),
            },
            _ => {}
        }
    }
}

fn resolve_scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Kind, String> {
    if let Some(tag) = tag {
        let t = tag.suffix.as_str();
        return match (tag.handle.as_str(), t) {
            ("!!", "str") | ("!", "unsafe") => Ok(Kind::Str(text)),
            ("!!", "int") => text
                .trim()
                .parse()
                .map(Kind::Int)
                .map_err(|_| format!("invalid !!int {text:?}")),
            ("!!", "float") => text
                .trim()
                .parse()
                .map(Kind::Float)
                .map_err(|_| format!("invalid !!float {text:?}")),
            ("!!", "bool") => plain_bool(&text)
                .map(Kind::Bool)
                .ok_or_else(|| format!("invalid !!bool {text:?}")),
            ("!!", "null") => Ok(Kind::Null),
            ("!", "vault") => Err("Ansible Vault values are not supported by hfplay".into()),
            _ => Ok(Kind::Str(text)),
        };
    }
    if style != TScalarStyle::Plain {
        return Ok(Kind::Str(text));
    }
    Ok(resolve_plain(text))
}

fn plain_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// YAML 1.1 resolution of a plain scalar, as PyYAML does it.
pub fn resolve_plain(text: String) -> Kind {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    if let Some(b) = plain_bool(&text) {
        return Kind::Bool(b);
    }
    if let Some(i) = parse_int11(&text) {
        return Kind::Int(i);
    }
    if is_float11(&text) {
        if let Ok(f) = text.replace('_', "").parse::<f64>() {
            return Kind::Float(f);
        }
    }
    Kind::Str(text)
}

fn parse_int11(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let digits = |d: &str, ok: fn(char) -> bool| {
        !d.is_empty() && d.chars().all(|c| ok(c) || c == '_') && d.chars().any(ok)
    };
    let v = if let Some(b) = body.strip_prefix("0b") {
        if !digits(b, |c| c == '0' || c == '1') {
            return None;
        }
        i64::from_str_radix(&b.replace('_', ""), 2).ok()?
    } else if let Some(h) = body.strip_prefix("0x") {
        if !digits(h, |c| c.is_ascii_hexdigit()) {
            return None;
        }
        i64::from_str_radix(&h.replace('_', ""), 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        if !digits(&body[1..], |c| ('0'..='7').contains(&c)) {
            return None;
        }
        i64::from_str_radix(&body[1..].replace('_', ""), 8).ok()?
    } else {
        if !body.starts_with(|c: char| c.is_ascii_digit()) || !digits(body, |c| c.is_ascii_digit())
        {
            return None;
        }
        body.replace('_', "").parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// PyYAML's float pattern: digits with a dot, optional exponent (`1e5` alone is a string).
fn is_float11(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let Some((int, frac)) = mantissa.split_once('.') else {
        return false;
    };
    let ok_digits = |d: &str| d.chars().all(|c| c.is_ascii_digit() || c == '_');
    let int_ok =
        ok_digits(int) && (int.is_empty() || int.starts_with(|c: char| c.is_ascii_digit()));
    let frac_ok = ok_digits(frac) && (!int.is_empty() || !frac.is_empty());
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e2 = e.strip_prefix(['-', '+']);
            e2.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        }
    };
    int_ok && frac_ok && exp_ok
}

/// Reads a YAML file straight to data (vars files, group_vars).
pub fn load_value(path: &Path) -> LoadResult<Value> {
    Ok(load_file(path)?.to_value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Node {
        parse_str(Path::new("t.yml"), s.to_string()).unwrap()
    }

    #[test]
    fn yaml11_scalars() {
        let v = parse("a: yes\nb: Off\nc: 'yes'\nd: 0644\ne: 0x1F\nf: 1.5\ng: ~\nh: 1e5\ni: y\nj: 08\nk: -12\n").to_value();
        assert_eq!(
            v,
            json!({"a": true, "b": false, "c": "yes", "d": 420, "e": 31, "f": 1.5, "g": null, "h": "1e5", "i": "y", "j": "08", "k": -12})
        );
    }

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
            .windows(2)
            .map(|w| (w[0], w[1]))
        {
            text.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let e = parse_str(Path::new("bomb.yml"), text).unwrap_err();
        assert!(e.msg.contains("alias bomb"), "{}", e.msg);
        assert!(e.loc.line >= 6, "{}", e.loc);
        // Ordinary aliases still work.
        let v = parse("base: &b {x: 1}\nuse: *b\n").to_value();
        assert_eq!(v, json!({"base": {"x": 1}, "use": {"x": 1}}));
    }

    #[test]
    fn duplicate_keys_warn_or_fail_when_strict() {
        let v = parse("a: 1\nb: 2\na: 3\n").to_value();
        assert_eq!(v, json!({"a": 3, "b": 2}));
        let e = parse_with(Path::new("d.yml"), "a: 1\nb: 2\na: 3\n".into(), true).unwrap_err();
        assert_eq!(e.loc.line, 3);
        assert!(
            e.msg.contains("duplicate key \"a\": also at line 1"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn positions_are_one_based() {
        let n = parse("- hosts: all\n  tasks:\n    - debug: msg=hi\n");
        let play = &n.as_seq().unwrap()[0];
        let tasks = play.get("tasks").unwrap();
        let t = &tasks.as_seq().unwrap()[0];
        assert_eq!((t.loc.line, t.loc.col), (3, 7));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let v = parse("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n").to_value();
        assert_eq!(v["derived"], json!({"x": 1, "y": 3}));
    }

    #[test]
    fn syntax_error_is_located() {
        let e = parse_str(Path::new("bad.yml"), "a: [1, 2\nb: 3\n".into()).unwrap_err();
        assert!(e.to_string().starts_with("bad.yml:"), "{e}");
        assert!(e.msg.contains("YAML syntax error"));
    }
}
