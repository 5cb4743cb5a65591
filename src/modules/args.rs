//! Argument plumbing shared by modules: Ansible-lenient deserializers (booleans from
//! `yes`/`no`/`on`/`off`, integers from strings, octal modes) and `k=v` free-form parsing.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// A module's templated arguments.
pub type Args = Map<String, Value>;

/// Ansible's boolean coercion (`yes`, `on`, `true`, `1`, `y` and their negatives).
pub fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" | "1" | "y" | "t" => Some(true),
            "no" | "off" | "false" | "0" | "n" | "f" | "" => Some(false),
            _ => None,
        },
        Value::Null => Some(false),
        _ => None,
    }
}

pub fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    to_bool(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {v}")))
}

pub fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    to_bool(&v)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {v}")))
}

pub fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got {s:?}"))),
        _ => Err(serde::de::Error::custom(format!(
            "expected an integer, got {v}"
        ))),
    }
}

/// A scalar as a string (numbers and booleans accepted, as Ansible converts them).
pub fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(if b { "True" } else { "False" }.into())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// A list given as a YAML list or a comma-separated string (`name: a,b`).
pub fn de_opt_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        )),
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(serde::de::Error::custom(format!(
                    "expected a list of strings, got {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(serde::de::Error::custom(format!(
            "expected a list, got {other}"
        ))),
    }
}

/// File mode: an integer is the permission bits themselves (YAML 1.1 reads `0644` as octal, as
/// Ansible does); a string is octal text (`"0644"`, `"644"`). Symbolic modes are not supported.
pub fn de_opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(|m| Some(m as u32))
            .ok_or_else(|| serde::de::Error::custom("bad mode")),
        Value::String(s) => parse_mode(s).map(Some).map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom(format!(
            "expected a mode such as '0644', got {v}"
        ))),
    }
}

pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            format!(
                "invalid mode {s:?}: use octal such as '0644' (symbolic modes are not supported)"
            )
        })
}

/// Splits Ansible's `k=v k2='v 2' k3={{ a | b }}` form. Tokens without `=` are returned,
/// unquoted, as the raw remainder.
pub fn split_kv(s: &str) -> (Map<String, Value>, String) {
    let mut map = Map::new();
    let mut raw = Vec::new();
    for (start, end) in arg_spans(s) {
        let tok = &s[start..end];
        match kv_token(tok) {
            Some((k, v)) => {
                map.insert(k.to_string(), Value::String(unquote(v)));
            }
            None => raw.push(unquote(tok)),
        }
    }
    (map, raw.join(" "))
}

/// `key=value` with an identifier key.
pub fn kv_token(tok: &str) -> Option<(&str, &str)> {
    let (k, v) = tok.split_once('=')?;
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some((k, v))
}

/// Byte ranges of the whitespace-separated tokens of `s`, like Ansible's `split_args`:
/// whitespace inside quotes or inside `{{ }}`, `{% %}`, `{# #}` does not split.
pub fn arg_spans(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<u8> = None;
    // Inside a Jinja block: its closing delimiter, nesting of { } and an open string literal.
    let mut jinja: Option<(u8, usize, Option<u8>)> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some((close, depth, jq)) = jinja.as_mut() {
            match *jq {
                Some(_) if c == b'\\' => i += 1,
                Some(q) if c == q => *jq = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => *jq = Some(c),
                None if c == b'{' => *depth += 1,
                None if c == b'}' && *depth > 0 => *depth -= 1,
                None if c == *close && b.get(i + 1) == Some(&b'}') => {
                    jinja = None;
                    i += 1;
                }
                None => {}
            }
            i += 1;
            continue;
        }
        match quote {
            Some(q) if c == b'\\' && q == b'"' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c.is_ascii_whitespace() => {
                if let Some(st) = start.take() {
                    out.push((st, i));
                }
            }
            None => {
                start.get_or_insert(i);
                if c == b'"' || c == b'\'' {
                    quote = Some(c);
                } else if c == b'{' {
                    let close = match b.get(i + 1) {
                        Some(b'{') => Some(b'}'),
                        Some(b'%') => Some(b'%'),
                        Some(b'#') => Some(b'#'),
                        _ => None,
                    };
                    if let Some(cl) = close {
                        jinja = Some((cl, 0, None));
                        i += 1;
                    }
                }
            }
        }
        i += 1;
    }
    if let Some(st) = start {
        out.push((st, b.len()));
    }
    out
}

/// Removes one pair of matching surrounding quotes (and the escapes of that quote inside).
pub fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].replace(&format!("\\{q}"), &q.to_string());
        }
    }
    v.to_string()
}

/// Whitespace split honouring single and double quotes (quotes removed).
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c == '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ansible_booleans() {
        for t in ["yes", "Yes", "on", "true", "True", "1"] {
            assert_eq!(to_bool(&json!(t)), Some(true), "{t}");
        }
        for f in ["no", "off", "false", "False", "0"] {
            assert_eq!(to_bool(&json!(f)), Some(false), "{f}");
        }
        assert_eq!(to_bool(&json!("maybe")), None);
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("u+x").is_err());
        assert!(parse_mode("99999").is_err());
    }

    #[test]
    fn kv_split() {
        let (m, raw) = split_kv("path=/tmp/x state=directory mode='0755' extra word");
        assert_eq!(m["path"], json!("/tmp/x"));
        assert_eq!(m["mode"], json!("0755"));
        assert_eq!(raw, "extra word");
    }

    #[test]
    fn kv_split_keeps_jinja_and_quotes_together() {
        let (m, raw) = split_kv("path={{ base }}/x dest=\"{{ a ~ ' b' }}\" msg='it is' n={{ {'a': {'b': 1}} | length }} left over");
        assert_eq!(m["path"], json!("{{ base }}/x"));
        assert_eq!(m["dest"], json!("{{ a ~ ' b' }}"));
        assert_eq!(m["msg"], json!("it is"));
        assert_eq!(m["n"], json!("{{ {'a': {'b': 1}} | length }}"));
        assert_eq!(raw, "left over");
        assert_eq!(
            arg_spans("  a  {% if x %}b{% endif %}\n c"),
            vec![(2, 3), (5, 27), (29, 30)]
        );
        assert_eq!(unquote("'a\\'b'"), "a'b");
    }
}
