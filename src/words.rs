//! Ansible's text conventions: free-form `k=v` argument strings, shell-like word lists and
//! yes/no booleans. A leaf: the loaders, templates, connection settings and modules all use it.

use serde_json::{Map, Value};

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
