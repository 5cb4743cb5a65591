//! Ansible's `version` test (alias `version_compare`), which roles use to branch on the
//! distribution's or a package's version:
//!
//! ```yaml
//! when: ansible_distribution_version is version('12', '>=')
//! when: pg_version is version('16.2', operator='lt', version_type='strict')
//! ```
//!
//! Operators: `==` `=` `eq`, `!=` `<>` `ne`, `<` `lt`, `<=` `le`, `>` `gt`, `>=` `ge` (default
//! `eq`). Version types: `loose` (default; Python's LooseVersion: runs of digits compare as
//! numbers, runs of letters as strings, anything else separates), `strict` (StrictVersion:
//! `N.N[.N][(a|b)N]`, a pre-release sorts before its release) and `semver`/`semantic` (SemVer
//! 2.0: `MAJOR.MINOR.PATCH[-pre][+build]`, build ignored). `strict=true` is `version_type=strict`.
//! A version that does not parse for its type is an error naming both values, as in Ansible.

use std::cmp::Ordering;

use minijinja::value::Kwargs;
use minijinja::{Error, ErrorKind, Value};

fn err(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// The test: `VALUE is version(OTHER, OPERATOR='eq', strict=False, version_type='loose')`.
pub fn version_test(
    value: &Value,
    other: &Value,
    operator: Option<String>,
    kw: Kwargs,
) -> Result<bool, Error> {
    let op = match (operator, kw.get::<Option<String>>("operator")?) {
        (Some(_), Some(_)) => return Err(err("version: operator given twice".into())),
        (Some(o), None) | (None, Some(o)) => o,
        (None, None) => "eq".to_string(),
    };
    let strict = kw.get::<Option<bool>>("strict")?.unwrap_or(false);
    let kind = kw.get::<Option<String>>("version_type")?;
    kw.assert_all_used()?;
    let kind = match (kind.as_deref(), strict) {
        (Some(_), true) => {
            return Err(err(
                "version: strict and version_type are mutually exclusive".into(),
            ))
        }
        (None, true) | (Some("strict"), false) => Kind::Strict,
        (None | Some("loose"), false) => Kind::Loose,
        (Some("semver" | "semantic"), false) => Kind::Semver,
        (Some(other), false) => {
            return Err(err(format!(
                "version: version_type {other:?} is not one of loose, strict, semver, semantic"
            )))
        }
    };
    let (a, b) = (text(value), text(other));
    let ord = compare(&a, &b, kind)?;
    let holds = match op.as_str() {
        "==" | "=" | "eq" => ord == Ordering::Equal,
        "!=" | "<>" | "ne" => ord != Ordering::Equal,
        "<" | "lt" => ord == Ordering::Less,
        "<=" | "le" => ord != Ordering::Greater,
        ">" | "gt" => ord == Ordering::Greater,
        ">=" | "ge" => ord != Ordering::Less,
        _ => {
            return Err(err(format!(
            "version: invalid operator {op:?} (use ==, !=, <, <=, >, >= or eq, ne, lt, le, gt, ge)"
        )))
        }
    };
    Ok(holds)
}

/// Numbers in YAML (`12`, `3.10`) compare as the text they are written as.
fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Loose,
    Strict,
    Semver,
}

fn compare(a: &str, b: &str, kind: Kind) -> Result<Ordering, Error> {
    match kind {
        Kind::Loose => {
            let (x, y) = (loose(a), loose(b));
            for (p, q) in x.iter().zip(y.iter()) {
                let o = match (p, q) {
                    (Part::Num(m), Part::Num(n)) => m.cmp(n),
                    (Part::Str(m), Part::Str(n)) => m.cmp(n),
                    // Python 3 cannot order int and str: Ansible reports the comparison failed.
                    _ => {
                        return Err(err(format!(
                            "version comparison failed: cannot compare {a:?} with {b:?} \
                             (a number against letters at the same place)"
                        )))
                    }
                };
                if o != Ordering::Equal {
                    return Ok(o);
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        Kind::Strict => Ok(strict(a)?.cmp(&strict(b)?)),
        Kind::Semver => semver(a)?.compare(&semver(b)?),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Num(u128),
    Str(String),
}

/// LooseVersion's components: runs of digits (numbers), runs of letters, other characters
/// only separate (Python keeps them as strings but `.` is dropped; other punctuation is rare in
/// versions roles compare).
fn loose(v: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut chars = v.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            let mut s = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                s.push(d);
                chars.next();
            }
            out.push(Part::Num(s.parse().unwrap_or(u128::MAX)));
        } else if c.is_ascii_alphabetic() {
            let mut s = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_alphabetic()) {
                s.push(d);
                chars.next();
            }
            out.push(Part::Str(s));
        } else {
            chars.next();
        }
    }
    out
}

/// StrictVersion: (major, minor, patch) and the pre-release, which sorts before no pre-release.
fn strict(v: &str) -> Result<(u64, u64, u64, (u8, u64)), Error> {
    let bad = || {
        err(format!(
            "invalid version number {v:?} (strict: N.N[.N][(a|b)N])"
        ))
    };
    let (nums, pre) = match v.find(['a', 'b']) {
        Some(i) => (&v[..i], Some((&v[i..i + 1], &v[i + 1..]))),
        None => (v, None),
    };
    let parts: Vec<u64> = nums
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(bad())
            } else {
                p.parse().map_err(|_| bad())
            }
        })
        .collect::<Result<_, _>>()?;
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let pre = match pre {
        None => (2, 0),
        Some((tag, n)) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            (if tag == "a" { 0 } else { 1 }, n)
        }
    };
    Ok((parts[0], parts[1], parts.get(2).copied().unwrap_or(0), pre))
}

struct Semver {
    core: (u64, u64, u64),
    pre: Vec<String>,
}

fn semver(v: &str) -> Result<Semver, Error> {
    let bad = || {
        err(format!(
            "invalid semantic version {v:?} (MAJOR.MINOR.PATCH[-pre][+build])"
        ))
    };
    let no_build = v.split('+').next().unwrap_or(v);
    let (core, pre) = match no_build.split_once('-') {
        Some((c, p)) => (c, p.split('.').map(str::to_string).collect()),
        None => (no_build, Vec::new()),
    };
    let n: Vec<u64> = core
        .split('.')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [a, b, c] = n.as_slice() else {
        return Err(bad());
    };
    Ok(Semver {
        core: (*a, *b, *c),
        pre,
    })
}

impl Semver {
    /// SemVer 2.0 precedence: the core, then a pre-release below none, then its identifiers
    /// (numeric ones numerically and below alphanumeric ones, then by count).
    fn compare(&self, o: &Semver) -> Result<Ordering, Error> {
        Ok(self
            .core
            .cmp(&o.core)
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (x, y) in self.pre.iter().zip(o.pre.iter()) {
                        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                            (Ok(m), Ok(n)) => m.cmp(&n),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => x.cmp(y),
                        };
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    self.pre.len().cmp(&o.pre.len())
                }
            }))
    }
}

#[cfg(test)]
mod tests {
    use crate::template::{Scope, Templar};
    use serde_json::json;
    use std::sync::Arc;

    fn holds(expr: &str) -> Result<bool, String> {
        let t = Arc::new(Templar::new());
        let s = Scope::new(t.clone(), serde_json::Map::new());
        t.template_value(&json!(format!("{{{{ {expr} }}}}")), &s)
            .map(|r| r == json!(true))
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn loose_versions_compare_like_ansible() {
        for (expr, want) in [
            ("'12.4' is version('12', '>=')", true),
            ("'12.4' is version('12', 'ge')", true),
            ("'9.1' is version('10', '<')", true), // numbers, not text
            ("'3.10' is version('3.9', 'gt')", true),
            ("'1.2.0' is version('1.2', '==')", false), // LooseVersion: longer is greater
            ("'1.2.0' is version('1.2', '>')", true),
            ("'2.0' is version('2.0')", true),
            ("'4.0.5-1' is version('4.0.5', operator='gt')", true),
            ("12 is version('12.0', '<')", true),
            ("'17' is version_compare('16', '>')", true),
            ("'1.0b1' is version('1.0', 'gt')", true), // loose: letters after numbers
        ] {
            assert_eq!(holds(expr), Ok(want), "{expr}");
        }
    }

    #[test]
    fn strict_and_semver() {
        for (expr, want) in [
            ("'1.0b1' is version('1.0', 'lt', strict=true)", true),
            (
                "'1.0a2' is version('1.0b1', 'lt', version_type='strict')",
                true,
            ),
            ("'1.0' is version('1.0.0', 'eq', strict=true)", true),
            (
                "'1.0.0-alpha' is version('1.0.0', '<', version_type='semver')",
                true,
            ),
            (
                "'1.0.0-alpha.1' is version('1.0.0-alpha.beta', '<', version_type='semver')",
                true,
            ),
            (
                "'1.0.0+build.5' is version('1.0.0', '==', version_type='semantic')",
                true,
            ),
            (
                "'1.10.0' is version('1.9.0', '>', version_type='semver')",
                true,
            ),
        ] {
            assert_eq!(holds(expr), Ok(want), "{expr}");
        }
    }

    #[test]
    fn bad_input_is_an_error_naming_it() {
        for (expr, needle) in [
            (
                "'1.x' is version('1.2', strict=true)",
                "invalid version number \"1.x\"",
            ),
            ("'1.2' is version('1.2', '=>')", "invalid operator \"=>\""),
            (
                "'1.2' is version('1.2', version_type='pep9')",
                "version_type \"pep9\"",
            ),
            (
                "'1.2' is version('1', version_type='semver')",
                "invalid semantic version",
            ),
            ("'1.a' is version('1.2')", "cannot compare"),
            (
                "'1' is version('1', strict=true, version_type='loose')",
                "mutually exclusive",
            ),
        ] {
            let e = holds(expr).expect_err(expr);
            assert!(e.contains(needle), "{expr}: {e}");
        }
    }
}
