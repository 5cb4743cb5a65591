//! Ansible's undefined is strict yet chainable: `typo | lower`, `not typo` or `{% for i in typo %}`
//! fail naming the variable, but `a.b | default(x)` and `a.b is defined` work when `a` itself is
//! undefined. minijinja's strict mode gives the first half only (attribute access on an undefined
//! value fails before `default` sees it), so before compiling, hfplay rewrites exactly the chains
//! that feed `default`/`d`/`mandatory` or an `is [not] defined`/`undefined` test into a call of
//! [`CHAIN_FN`], which walks the chain and yields undefined at the first missing step.

use std::borrow::Cow;

use minijinja::value::{Rest, Value};

/// The function the rewritten chains call; registered as a global by the template environment.
pub const CHAIN_FN: &str = "__hfplay_chain";

/// `__hfplay_chain(base, 'b', 0, ...)`: `base.b[0]...`, undefined at the first missing step.
pub fn chain(base: Value, keys: Rest<Value>) -> Value {
    let mut cur = base;
    for k in keys.iter() {
        if cur.is_undefined() || cur.is_none() {
            return Value::UNDEFINED;
        }
        cur = cur.get_item(k).unwrap_or(Value::UNDEFINED);
    }
    cur
}

/// Rewrites the guarded chains inside the `{{ }}` and `{% %}` blocks of a template text;
/// literal text, comments and `{% raw %}` sections are left alone.
pub fn rewrite_template(src: &str) -> Cow<'_, str> {
    if !src.contains('.') && !src.contains('[') {
        return Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 32);
    let mut rest = src;
    let mut changed = false;
    while let Some(at) = find_open(rest) {
        out.push_str(&rest[..at]);
        let open = &rest[at..at + 2];
        let close = match open {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let body_start = at + 2;
        let Some(len) = find_close(&rest[body_start..], close, open != "{#") else {
            // Unclosed block: leave it to the parser, which reports it.
            out.push_str(&rest[at..]);
            return if changed {
                Cow::Owned(out)
            } else {
                Cow::Borrowed(src)
            };
        };
        let body = &rest[body_start..body_start + len];
        let after = body_start + len + 2;
        out.push_str(open);
        if open == "{#" {
            out.push_str(body);
            out.push_str(close);
            rest = &rest[after..];
            continue;
        }
        if open == "{%" && is_raw_tag(body) {
            // Copy everything up to and including `{% endraw %}` untouched.
            out.push_str(body);
            out.push_str(close);
            rest = &rest[after..];
            let end = find_endraw(rest).unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let new = rewrite_expr(body);
        changed |= matches!(new, Cow::Owned(_));
        out.push_str(&new);
        out.push_str(close);
        rest = &rest[after..];
    }
    if !changed {
        return Cow::Borrowed(src);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn find_open(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(1)).find(|&i| b[i] == b'{' && matches!(b[i + 1], b'{' | b'%' | b'#'))
}

/// Length of the block body up to `close`, skipping string literals when `code` is set.
fn find_close(s: &str, close: &str, code: bool) -> Option<usize> {
    let b = s.as_bytes();
    let c = close.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if code && (b[i] == b'\'' || b[i] == b'"') {
            i = skip_string(b, i);
            continue;
        }
        if b[i] == c[0] && b[i + 1] == c[1] {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn is_raw_tag(body: &str) -> bool {
    body.trim_matches(|c: char| c.is_whitespace() || c == '-' || c == '+') == "raw"
}

fn find_endraw(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = s[from..].find("{%") {
        let start = from + at;
        let body_start = start + 2;
        let close = s[body_start..].find("%}")?;
        let body = &s[body_start..body_start + close];
        if body.trim_matches(|c: char| c.is_whitespace() || c == '-' || c == '+') == "endraw" {
            return Some(start);
        }
        from = body_start + close + 2;
    }
    None
}

/// Index just past the string literal that starts at `i`.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(b: &[u8], i: usize) -> Option<usize> {
    if i < b.len() && is_ident_start(b[i]) {
        let mut j = i + 1;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        Some(j)
    } else {
        None
    }
}

/// Whether the word at `i` is `word` (not a prefix of a longer name).
fn word_at(b: &[u8], i: usize, word: &str) -> bool {
    let w = word.as_bytes();
    b.len() >= i + w.len()
        && &b[i..i + w.len()] == w
        && (i + w.len() == b.len() || !is_ident(b[i + w.len()]))
}

/// Whether what follows position `i` makes the chain before it a guarded one.
fn guarded_after(b: &[u8], i: usize) -> bool {
    let i = skip_ws(b, i);
    if i < b.len() && b[i] == b'|' {
        let j = skip_ws(b, i + 1);
        return ["default", "d", "mandatory"]
            .iter()
            .any(|w| word_at(b, j, w));
    }
    if word_at(b, i, "is") {
        let mut j = skip_ws(b, i + 2);
        if word_at(b, j, "not") {
            j = skip_ws(b, j + 3);
        }
        return word_at(b, j, "defined") || word_at(b, j, "undefined");
    }
    false
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

/// One step of a chain: `.name` or `[key]`, where the key is any expression (a literal, a
/// variable: `hostvars[h]`); returns (the key as an argument expression, end).
fn segment_at(b: &[u8], src: &str, i: usize) -> Option<(String, usize)> {
    if i >= b.len() {
        return None;
    }
    if b[i] == b'.' {
        let end = ident_at(b, i + 1)?;
        return Some((format!("'{}'", &src[i + 1..end]), end));
    }
    if b[i] == b'[' {
        // The matching `]`, past nested brackets and string literals.
        let (mut depth, mut slice) = (0usize, false);
        let mut k = i + 1;
        while k < b.len() {
            match b[k] {
                b':' if depth == 0 => slice = true,
                b'\'' | b'"' => {
                    k = skip_string(b, k);
                    continue;
                }
                b'[' | b'(' | b'{' => depth += 1,
                b']' if depth == 0 => {
                    let key = src[i + 1..k].trim();
                    // `a[1:3]` is a slice, not a key.
                    if key.is_empty() || slice {
                        return None;
                    }
                    return Some((key.to_string(), k + 1));
                }
                b']' | b')' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            k += 1;
        }
    }
    None
}

/// Rewrites guarded chains in one expression (the body of a `{{ }}`/`{% %}` block or a bare
/// condition): `a.b['c'] | default(1)` → `__hfplay_chain(a, 'b', 'c') | default(1)`.
pub fn rewrite_expr(src: &str) -> Cow<'_, str> {
    let b = src.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            i = skip_string(b, i);
            continue;
        }
        if !is_ident_start(c) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let Some(name_end) = ident_at(b, i) else {
            i += 1;
            continue;
        };
        let name = &src[i..name_end];
        let mut keys = Vec::new();
        let mut end = name_end;
        if !KEYWORDS.contains(&name) {
            while let Some((k, e)) = segment_at(b, src, end) {
                keys.push(k);
                end = e;
            }
        }
        let called = end < b.len() && (b[end] == b'(' || b[end] == b'[' || b[end] == b'.');
        if !keys.is_empty() && !called && guarded_after(b, end) {
            out.push_str(&src[copied..i]);
            out.push_str(CHAIN_FN);
            out.push('(');
            out.push_str(name);
            for k in &keys {
                out.push_str(", ");
                out.push_str(k);
            }
            out.push(')');
            copied = end;
        }
        i = end.max(name_end);
    }
    if copied == 0 {
        return Cow::Borrowed(src);
    }
    out.push_str(&src[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_chains_are_rewritten() {
        assert_eq!(
            rewrite_expr("a.b | default(1)"),
            "__hfplay_chain(a, 'b') | default(1)"
        );
        assert_eq!(
            rewrite_expr(" x['k'][0].y|d('z') "),
            " __hfplay_chain(x, 'k', 0, 'y')|d('z') "
        );
        assert_eq!(
            rewrite_expr("not a.b is defined and c.d is not undefined"),
            "not __hfplay_chain(a, 'b') is defined and __hfplay_chain(c, 'd') is not undefined"
        );
        assert_eq!(
            rewrite_expr("hostvars[h].ip | default(h)"),
            "__hfplay_chain(hostvars, h, 'ip') | default(h)"
        );
        assert_eq!(
            rewrite_expr("m[x['k:1']].v is defined"),
            "__hfplay_chain(m, x['k:1'], 'v') is defined"
        );
        assert_eq!(
            rewrite_expr("a.b | mandatory"),
            "__hfplay_chain(a, 'b') | mandatory"
        );
    }

    #[test]
    fn other_expressions_are_left_alone() {
        for e in [
            "a.b == 1",
            "a | default(1)",
            "a.b | lower",
            "'a.b | default(1)'",
            "a[1:2] | default(1)",
            "a.items() | default(1)",
            "x.y | defaultdict",
            "a.b is definedness",
            "f(x).y | default(1)",
        ] {
            assert_eq!(rewrite_expr(e), e, "{e}");
        }
    }

    #[test]
    fn only_code_blocks_of_a_template_are_rewritten() {
        assert_eq!(
            rewrite_template("a.b | default(1) {{ a.b | default(1) }} {# a.b | d #}"),
            "a.b | default(1) {{ __hfplay_chain(a, 'b') | default(1) }} {# a.b | d #}"
        );
        assert_eq!(
            rewrite_template("{% if a.b is defined %}{% raw %}{{ a.b | d }}{% endraw %}{% endif %}"),
            "{% if __hfplay_chain(a, 'b') is defined %}{% raw %}{{ a.b | d }}{% endraw %}{% endif %}"
        );
        assert_eq!(
            rewrite_template("{{ '}}' ~ a.b | d }}"),
            "{{ '}}' ~ __hfplay_chain(a, 'b') | d }}"
        );
        assert_eq!(rewrite_template("plain {{ x }}"), "plain {{ x }}");
        assert_eq!(rewrite_template("{{ a.b | d"), "{{ a.b | d");
    }
}
