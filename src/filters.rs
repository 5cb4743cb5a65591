//! The Ansible filters and tests that roles really use, on top of minijinja's builtins.

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

use crate::lookups::{b64, digest, lookup_fn, query_fn};

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn json_of(v: &Value) -> Result<Json, Error> {
    if v.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "undefined value passed to a filter",
        ));
    }
    serde_json::to_value(v).map_err(|e| err(e.to_string()))
}

fn sort_keys(v: Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut entries: Vec<(String, Json)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Ansible's `bool`: true for yes/on/1/true (any case); everything else false.
fn bool_filter(v: &Value) -> bool {
    match v.kind() {
        ValueKind::Bool => v.is_true(),
        ValueKind::Number => v.as_i64() == Some(1),
        ValueKind::String => matches!(
            v.as_str().map(|s| s.trim().to_ascii_lowercase()).as_deref(),
            Some("yes" | "on" | "1" | "true" | "y")
        ),
        _ => false,
    }
}

fn to_json(v: &Value, kw: Kwargs) -> Result<String, Error> {
    let _ = kw.get::<Option<Value>>("ensure_ascii")?;
    let sort = kw.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kw.assert_all_used()?;
    let j = json_of(v)?;
    let j = if sort { sort_keys(j) } else { j };
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, PyJson);
    serde::Serialize::serialize(&j, &mut ser).map_err(|e| err(e.to_string()))?;
    String::from_utf8(buf).map_err(|e| err(e.to_string()))
}

/// Python's `json.dumps` separators (`", "` and `": "`), so `to_json` output (and the files
/// rendered from it) is byte-identical to Ansible's.
struct PyJson;

impl serde_json::ser::Formatter for PyJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn to_nice_json(v: &Value, kw: Kwargs) -> Result<String, Error> {
    let indent = kw.get::<Option<usize>>("indent")?.unwrap_or(4);
    let _ = kw.get::<Option<Value>>("sort_keys")?;
    kw.assert_all_used()?;
    let j = sort_keys(json_of(v)?);
    let mut buf = Vec::new();
    let spaces = " ".repeat(indent);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&j, &mut ser).map_err(|e| err(e.to_string()))?;
    String::from_utf8(buf).map_err(|e| err(e.to_string()))
}

fn to_yaml(v: &Value, kw: Kwargs) -> Result<String, Error> {
    let _ = kw.get::<Option<Value>>("indent")?;
    let _ = kw.get::<Option<Value>>("width")?;
    let _ = kw.get::<Option<Value>>("default_flow_style")?;
    kw.assert_all_used()?;
    serde_norway::to_string(&sort_keys(json_of(v)?)).map_err(|e| err(e.to_string()))
}

fn from_json(s: &str) -> Result<Value, Error> {
    let j: Json = serde_json::from_str(s).map_err(|e| err(format!("from_json: {e}")))?;
    Ok(Value::from_serialize(j))
}

fn from_yaml(s: &str) -> Result<Value, Error> {
    let n = crate::yaml::parse_str(std::path::Path::new("<from_yaml>"), s.to_string())
        .map_err(|e| err(e.to_string()))?;
    Ok(Value::from_serialize(n.to_value()))
}

fn b64decode(s: &str) -> Result<String, Error> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s.trim()))
        .map_err(|e| err(format!("b64decode: {e}")))?;
    String::from_utf8(bytes).map_err(|e| err(format!("b64decode: not UTF-8: {e}")))
}

fn build_regex(pattern: &str, kw: &Kwargs) -> Result<regex::Regex, Error> {
    let icase = kw.get::<Option<bool>>("ignorecase")?.unwrap_or(false);
    let multi = kw.get::<Option<bool>>("multiline")?.unwrap_or(false);
    regex::RegexBuilder::new(pattern)
        .case_insensitive(icase)
        .multi_line(multi)
        .build()
        .map_err(|e| err(format!("invalid regular expression {pattern:?}: {e}")))
}

/// Python replacement syntax (`\1`, `\g<name>`) → the regex crate's (`${1}`, `${name}`).
fn py_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn regex_replace(
    s: &str,
    pattern: &str,
    replacement: Option<&str>,
    kw: Kwargs,
) -> Result<String, Error> {
    let re = build_regex(pattern, &kw)?;
    let count = kw.get::<Option<usize>>("count")?.unwrap_or(0);
    kw.assert_all_used()?;
    Ok(re
        .replacen(s, count, py_replacement(replacement.unwrap_or("")).as_str())
        .into_owned())
}

fn regex_search(s: &str, pattern: &str, groups: Rest<String>, kw: Kwargs) -> Result<Value, Error> {
    let re = build_regex(pattern, &kw)?;
    kw.assert_all_used()?;
    let Some(caps) = re.captures(s) else {
        return Ok(Value::from(()));
    };
    if groups.is_empty() {
        return Ok(Value::from(
            caps.get(0).map(|m| m.as_str()).unwrap_or_default(),
        ));
    }
    let mut out = Vec::new();
    for g in groups.iter() {
        let m = if let Some(n) = g.strip_prefix('\\').and_then(|n| n.parse::<usize>().ok()) {
            caps.get(n)
        } else if let Some(name) = g.strip_prefix("\\g<").and_then(|x| x.strip_suffix('>')) {
            caps.name(name)
        } else {
            return Err(err(format!("regex_search: unknown group reference {g:?}")));
        };
        out.push(Value::from(m.map(|m| m.as_str()).unwrap_or_default()));
    }
    Ok(Value::from(out))
}

fn regex_findall(s: &str, pattern: &str, kw: Kwargs) -> Result<Value, Error> {
    let re = build_regex(pattern, &kw)?;
    kw.assert_all_used()?;
    Ok(Value::from(
        re.find_iter(s)
            .map(|m| m.as_str().to_string())
            .collect::<Vec<_>>(),
    ))
}

fn combine_two(a: Json, b: Json, recursive: bool) -> Json {
    match (a, b) {
        (Json::Object(mut a), Json::Object(b)) => {
            for (k, v) in b {
                let merged = match (recursive, a.remove(&k)) {
                    (true, Some(old @ Json::Object(_))) if v.is_object() => {
                        combine_two(old, v, true)
                    }
                    _ => v,
                };
                a.insert(k, merged);
            }
            Json::Object(a)
        }
        (_, b) => b,
    }
}

fn combine(v: &Value, others: Rest<Value>, kw: Kwargs) -> Result<Value, Error> {
    let recursive = kw.get::<Option<bool>>("recursive")?.unwrap_or(false);
    let _ = kw.get::<Option<String>>("list_merge")?;
    kw.assert_all_used()?;
    let mut acc = json_of(v)?;
    for o in others.iter() {
        let items = match json_of(o)? {
            Json::Array(list) => list,
            single => vec![single],
        };
        for i in items {
            if !i.is_object() {
                return Err(err("combine expects dictionaries"));
            }
            acc = combine_two(acc, i, recursive);
        }
    }
    Ok(Value::from_serialize(acc))
}

fn dict2items(v: &Value, kw: Kwargs) -> Result<Value, Error> {
    let kn = kw
        .get::<Option<String>>("key_name")?
        .unwrap_or_else(|| "key".into());
    let vn = kw
        .get::<Option<String>>("value_name")?
        .unwrap_or_else(|| "value".into());
    kw.assert_all_used()?;
    let Json::Object(m) = json_of(v)? else {
        return Err(err("dict2items expects a dictionary"));
    };
    Ok(Value::from_serialize(
        m.into_iter()
            .map(|(k, v)| serde_json::json!({ kn.clone(): k, vn.clone(): v }))
            .collect::<Vec<_>>(),
    ))
}

fn items2dict(v: &Value, kw: Kwargs) -> Result<Value, Error> {
    let kn = kw
        .get::<Option<String>>("key_name")?
        .unwrap_or_else(|| "key".into());
    let vn = kw
        .get::<Option<String>>("value_name")?
        .unwrap_or_else(|| "value".into());
    kw.assert_all_used()?;
    let Json::Array(items) = json_of(v)? else {
        return Err(err("items2dict expects a list"));
    };
    let mut out = serde_json::Map::new();
    for i in items {
        let k = i
            .get(&kn)
            .ok_or_else(|| err(format!("items2dict: item has no '{kn}'")))?;
        let key = k
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| k.to_string());
        out.insert(key, i.get(&vn).cloned().unwrap_or(Json::Null));
    }
    Ok(Value::from_serialize(Json::Object(out)))
}

fn ternary(v: &Value, yes: Value, no: Value, none: Option<Value>) -> Value {
    if v.is_none() {
        if let Some(n) = none {
            return n;
        }
    }
    if v.is_true() {
        yes
    } else {
        no
    }
}

fn mandatory(v: &Value, msg: Option<String>) -> Result<Value, Error> {
    if v.is_undefined() {
        return Err(err(
            msg.unwrap_or_else(|| "mandatory variable not defined".into())
        ));
    }
    Ok(v.clone())
}

fn default_filter(v: &Value, other: Option<Value>, boolean: Option<bool>) -> Value {
    if v.is_undefined() || (boolean.unwrap_or(false) && !v.is_true()) {
        other.unwrap_or_else(|| Value::from(""))
    } else {
        v.clone()
    }
}

/// `password_hash('sha512', salt)`: SHA-512 crypt. Without a salt hfplay derives one from the
/// password (Ansible picks a random one), so re-runs produce the same hash and stay idempotent.
fn password_hash(
    pw: &str,
    scheme: Option<&str>,
    salt: Option<&str>,
    kw: Kwargs,
) -> Result<String, Error> {
    let rounds = kw.get::<Option<usize>>("rounds")?.unwrap_or(5000);
    kw.assert_all_used()?;
    match scheme.unwrap_or("sha512") {
        "sha512" | "sha512_crypt" => {}
        other => {
            return Err(err(format!(
                "password_hash: unsupported scheme '{other}' (hfplay supports sha512)"
            )))
        }
    }
    let salt: String = match salt {
        Some(s) => s.chars().take(16).collect(),
        None => {
            let d = digest("sha256", pw.as_bytes()).map_err(err)?;
            d.chars().take(16).collect()
        }
    };
    let params =
        sha_crypt::Sha512Params::new(rounds).map_err(|_| err("password_hash: bad rounds"))?;
    let hash = sha_crypt::sha512_crypt_b64(pw.as_bytes(), salt.as_bytes(), &params)
        .map_err(|_| err("password_hash failed"))?;
    Ok(if rounds == 5000 {
        format!("$6${salt}${hash}")
    } else {
        format!("$6$rounds={rounds}${salt}${hash}")
    })
}

fn flatten_into(v: &Json, depth: Option<usize>, out: &mut Vec<Json>) {
    match v {
        Json::Array(items) if depth != Some(0) => {
            for i in items {
                flatten_into(i, depth.map(|d| d - 1), out);
            }
        }
        other => out.push(other.clone()),
    }
}

fn list_of(v: &Value) -> Result<Vec<Json>, Error> {
    match json_of(v)? {
        Json::Array(a) => Ok(a),
        other => Ok(vec![other]),
    }
}

/// Tests over registered results: `result is succeeded` etc.
fn result_flag(v: &Value, key: &str) -> bool {
    v.get_attr(key).map(|x| x.is_true()).unwrap_or(false)
}

pub fn register(env: &mut Environment<'static>) {
    env.add_filter("bool", bool_filter);
    env.add_filter("default", default_filter);
    env.add_filter("d", default_filter);
    env.add_filter("to_json", to_json);
    env.add_filter("to_nice_json", to_nice_json);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_nice_yaml", to_yaml);
    env.add_filter("from_json", from_json);
    env.add_filter("from_yaml", from_yaml);
    env.add_filter("b64encode", |s: String| b64(s.as_bytes()));
    env.add_filter("b64decode", |s: String| b64decode(&s));
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("regex_escape", |s: String| regex::escape(&s));
    env.add_filter("combine", combine);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("ternary", ternary);
    env.add_filter("mandatory", mandatory);
    env.add_filter("basename", |s: String| {
        std::path::Path::new(&s)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    env.add_filter("dirname", |s: String| {
        std::path::Path::new(&s)
            .parent()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    env.add_filter("quote", |s: String| crate::connection::quote(&s));
    env.add_filter("password_hash", password_hash);
    env.add_filter("hash", |s: String, algo: Option<String>| {
        digest(algo.as_deref().unwrap_or("sha1"), s.as_bytes()).map_err(err)
    });
    env.add_filter("checksum", |s: String| {
        digest("sha1", s.as_bytes()).map_err(err)
    });
    env.add_filter(
        "flatten",
        |v: &Value, levels: Option<usize>| -> Result<Value, Error> {
            let mut out = Vec::new();
            for i in list_of(v)? {
                flatten_into(&i, levels.map(|l| l.saturating_sub(1)), &mut out);
            }
            Ok(Value::from_serialize(out))
        },
    );
    env.add_filter(
        "difference",
        |a: &Value, b: &Value| -> Result<Value, Error> {
            let (a, b) = (list_of(a)?, list_of(b)?);
            let mut out: Vec<Json> = Vec::new();
            for x in a {
                if !b.contains(&x) && !out.contains(&x) {
                    out.push(x);
                }
            }
            Ok(Value::from_serialize(out))
        },
    );
    env.add_filter("union", |a: &Value, b: &Value| -> Result<Value, Error> {
        let mut out: Vec<Json> = Vec::new();
        for x in list_of(a)?.into_iter().chain(list_of(b)?) {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        Ok(Value::from_serialize(out))
    });
    env.add_filter(
        "intersect",
        |a: &Value, b: &Value| -> Result<Value, Error> {
            let b = list_of(b)?;
            let mut out: Vec<Json> = Vec::new();
            for x in list_of(a)? {
                if b.contains(&x) && !out.contains(&x) {
                    out.push(x);
                }
            }
            Ok(Value::from_serialize(out))
        },
    );
    env.add_filter("type_debug", |v: &Value| v.kind().to_string());
    env.add_filter("to_bool", bool_filter);
    env.add_filter("comment", crate::template::comment::comment);

    for (name, key) in [("succeeded", "failed"), ("success", "failed")] {
        env.add_test(name, move |v: &Value| !result_flag(v, key));
    }
    for (name, key) in [
        ("failed", "failed"),
        ("failure", "failed"),
        ("changed", "changed"),
        ("change", "changed"),
        ("skipped", "skipped"),
        ("skip", "skipped"),
    ] {
        env.add_test(name, move |v: &Value| result_flag(v, key));
    }
    env.add_test("match", |s: String, p: String| -> Result<bool, Error> {
        let re = regex::Regex::new(&format!("^(?:{p})")).map_err(|e| err(e.to_string()))?;
        Ok(re.is_match(&s))
    });
    env.add_test("search", |s: String, p: String| -> Result<bool, Error> {
        let re = regex::Regex::new(&p).map_err(|e| err(e.to_string()))?;
        Ok(re.is_match(&s))
    });
    env.add_test("regex", |s: String, p: String| -> Result<bool, Error> {
        let re = regex::Regex::new(&p).map_err(|e| err(e.to_string()))?;
        Ok(re.is_match(&s))
    });
    env.add_test("version", crate::template::version::version_test);
    env.add_test("version_compare", crate::template::version::version_test);
    env.add_function("lookup", lookup_fn);
    env.add_function("query", query_fn);
    env.add_function("q", query_fn);
}

#[cfg(test)]
mod tests {
    use crate::template::{Scope, Templar};
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn render(expr: &str, vars: Value) -> Value {
        let t = Arc::new(Templar::new());
        let s = Scope::new(t.clone(), vars.as_object().cloned().unwrap());
        t.template_value(&json!(expr), &s)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    #[test]
    fn ansible_filters() {
        assert_eq!(render("{{ 'yes' | bool }}", json!({})), json!(true));
        assert_eq!(render("{{ 'off' | bool }}", json!({})), json!(false));
        assert_eq!(
            render("{{ m | to_json }}", json!({"m": {"b": 1, "a": [1]}})),
            json!("{\"b\": 1, \"a\": [1]}")
        );
        assert_eq!(
            render("{{ {'b': 1, 'a': 2} | to_nice_json }}", json!({})),
            json!("{\n    \"a\": 2,\n    \"b\": 1\n}")
        );
        assert_eq!(
            render("{{ {'a': 1} | to_nice_yaml }}", json!({})),
            json!("a: 1\n")
        );
        assert_eq!(
            render("{{ '{\"x\": 2}' | from_json }}", json!({})),
            json!({"x": 2})
        );
        assert_eq!(render("{{ 'hi' | b64encode }}", json!({})), json!("aGk="));
        assert_eq!(render("{{ 'aGk=' | b64decode }}", json!({})), json!("hi"));
        assert_eq!(
            render(
                "{{ 'ab12' | regex_replace('([a-z]+)(\\\\d+)', '\\\\2-\\\\1') }}",
                json!({})
            ),
            json!("12-ab")
        );
        assert_eq!(
            render("{{ 'v=15.3' | regex_search('[0-9]+') }}", json!({})),
            json!("15")
        );
        assert_eq!(
            render(
                "{{ a | combine(b) }}",
                json!({"a": {"x": 1, "y": {"z": 1}}, "b": {"y": {"w": 2}}})
            ),
            json!({"x": 1, "y": {"w": 2}})
        );
        assert_eq!(
            render(
                "{{ a | combine(b, recursive=true) }}",
                json!({"a": {"y": {"z": 1}}, "b": {"y": {"w": 2}}})
            ),
            json!({"y": {"z": 1, "w": 2}})
        );
        assert_eq!(
            render("{{ {'k': 'v'} | dict2items }}", json!({})),
            json!([{"key": "k", "value": "v"}])
        );
        assert_eq!(
            render("{{ [{'key': 'k', 'value': 1}] | items2dict }}", json!({})),
            json!({"k": 1})
        );
        assert_eq!(
            render("{{ (1 == 1) | ternary('a', 'b') }}", json!({})),
            json!("a")
        );
        assert_eq!(
            render("{{ '/a/b.txt' | basename }}", json!({})),
            json!("b.txt")
        );
        assert_eq!(render("{{ '/a/b.txt' | dirname }}", json!({})), json!("/a"));
        assert_eq!(
            render("{{ \"it's\" | quote }}", json!({})),
            json!("'it'\\''s'")
        );
        assert_eq!(
            render("{{ ['a', 'b'] | join(',') }}", json!({})),
            json!("a,b")
        );
        assert_eq!(
            render("{{ 'x' | hash('sha1') }}", json!({})),
            json!("11f6ad8ec52a2984abaafd7c3b516503785c2072")
        );
        assert_eq!(
            render("{{ [1, [2, [3]]] | flatten }}", json!({})),
            json!([1, 2, 3])
        );
        assert_eq!(render("{{ x | mandatory }}", json!({"x": 1})), json!(1));
    }

    #[test]
    fn password_hash_matches_crypt() {
        // Reference: openssl passwd -6 -salt saltsalt secret
        assert_eq!(
            render("{{ 'secret' | password_hash('sha512', 'saltsalt') }}", json!({})),
            json!("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1")
        );
    }

    #[test]
    fn result_tests() {
        assert_eq!(
            render("{{ r is failed }}", json!({"r": {"failed": true}})),
            json!(true)
        );
        assert_eq!(
            render("{{ r is succeeded }}", json!({"r": {"changed": true}})),
            json!(true)
        );
        assert_eq!(
            render("{{ r is changed }}", json!({"r": {"changed": true}})),
            json!(true)
        );
        assert_eq!(render("{{ r is skipped }}", json!({"r": {}})), json!(false));
        assert_eq!(render("{{ 'abc' is match('ab') }}", json!({})), json!(true));
    }

    #[test]
    fn mandatory_fails_on_undefined() {
        let t = Arc::new(Templar::new());
        let s = Scope::new(t.clone(), serde_json::Map::new());
        assert!(t
            .template_value(&json!("{{ nope | mandatory }}"), &s)
            .is_err());
    }
}
