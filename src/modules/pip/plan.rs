//! pip's pure side: requirement parsing, PEP 440-ish version matching, reading `pip list` and
//! `--report` output, and which names need installing or uninstalling.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Present,
    Latest,
    Absent,
    ForceReinstall,
}

/// PEP 503 name normalisation.
pub fn canonical(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A parsed requirement: name (canonical), specifiers `(op, version)`. `None` for URLs/paths.
pub fn parse_req(spec: &str) -> Option<(String, Vec<(String, String)>)> {
    let s = spec.split(';').next().unwrap_or("").trim();
    if s.contains("://") || s.starts_with('.') || s.starts_with('/') || s.contains(" @ ") {
        return None;
    }
    let end = s.find(|c: char| "=<>!~[ (".contains(c)).unwrap_or(s.len());
    let name = canonical(&s[..end]);
    if name.is_empty() {
        return None;
    }
    let mut rest = &s[end..];
    if let Some(i) = rest.find(']') {
        if rest.starts_with('[') {
            rest = &rest[i + 1..];
        }
    }
    let rest = rest.trim().trim_start_matches('(').trim_end_matches(')');
    let mut specs = Vec::new();
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let op_len = part
            .find(|c: char| !"=<>!~".contains(c))
            .unwrap_or(part.len());
        let (op, v) = part.split_at(op_len);
        specs.push((op.to_string(), v.trim().to_string()));
    }
    Some((name, specs))
}

fn vparts(v: &str) -> Vec<(u64, String)> {
    v.trim()
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            (digits.parse().unwrap_or(0), p[digits.len()..].to_string())
        })
        .collect()
}

/// Simplified PEP 440 ordering (numeric release segments, then suffix text; a suffix such as
/// `rc1` sorts before the bare release).
pub fn vcmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (pa, pb) = (vparts(a), vparts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).cloned().unwrap_or((0, String::new()));
        let y = pb.get(i).cloned().unwrap_or((0, String::new()));
        match x.0.cmp(&y.0) {
            Ordering::Equal => {}
            o => return o,
        }
        match (x.1.is_empty(), y.1.is_empty()) {
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ => match x.1.cmp(&y.1) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
    Ordering::Equal
}

/// Does `installed` satisfy every `(op, version)`?
pub fn satisfies(installed: &str, specs: &[(String, String)]) -> bool {
    use std::cmp::Ordering::*;
    specs.iter().all(|(op, v)| {
        if let Some(prefix) = v.strip_suffix(".*") {
            let m = installed == prefix || installed.starts_with(&format!("{prefix}."));
            return if op == "!=" { !m } else { m };
        }
        let c = vcmp(installed, v);
        match op.as_str() {
            "==" | "===" => c == Equal,
            "!=" => c != Equal,
            ">=" => c != Less,
            "<=" => c != Greater,
            ">" => c == Greater,
            "<" => c == Less,
            "~=" => {
                // ~=1.4.5 means >=1.4.5, ==1.4.*
                let mut parts: Vec<&str> = v.split('.').collect();
                if parts.len() > 1 {
                    parts.pop();
                }
                let prefix = parts.join(".");
                c != Less && (installed == prefix || installed.starts_with(&format!("{prefix}.")))
            }
            _ => false,
        }
    })
}

/// Parses `pip list --format=freeze` lines into canonical name → version.
pub fn parse_freeze(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("F|"))
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (canonical(n), v.trim().to_string()))
        .collect()
}

/// Pure: which of `names` need installing (present) or uninstalling (absent).
pub fn plan_names(
    state: State,
    names: &[String],
    installed: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut v = Vec::new();
    for n in names {
        match (state, parse_req(n)) {
            (State::ForceReinstall, _) => v.push(n.clone()),
            (State::Absent, Some((name, _))) => {
                if installed.contains_key(&name) {
                    v.push(name);
                }
            }
            (State::Absent, None) => {}
            (_, None) => v.push(n.clone()),
            (_, Some((name, specs))) => match installed.get(&name) {
                Some(ver) if satisfies(ver, &specs) => {}
                _ => v.push(n.clone()),
            },
        }
    }
    v
}

/// Names a `pip install --dry-run --report -` JSON would install; `None` if not a report.
pub fn report_installs(out: &str) -> Option<Vec<String>> {
    let start = out.find('{')?;
    let v: Value = serde_json::from_str(out[start..].trim()).ok()?;
    let list = v.get("install")?.as_array()?;
    Some(
        list.iter()
            .map(|i| {
                let md = &i["metadata"];
                format!(
                    "{}=={}",
                    md["name"].as_str().unwrap_or("?"),
                    md["version"].as_str().unwrap_or("?")
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_parsing() {
        assert_eq!(
            parse_req("Flask_Login==0.6.3"),
            Some(("flask-login".into(), vec![("==".into(), "0.6.3".into())]))
        );
        assert_eq!(
            parse_req("celery[redis]>=5.6,<5.7"),
            Some((
                "celery".into(),
                vec![(">=".into(), "5.6".into()), ("<".into(), "5.7".into())]
            ))
        );
        assert_eq!(parse_req("requests"), Some(("requests".into(), vec![])));
        assert_eq!(parse_req("git+https://x/y.git"), None);
        assert_eq!(parse_req("./pkg"), None);
    }

    #[test]
    fn version_specifiers() {
        assert!(satisfies("5.6.3", &[("==".into(), "5.6.3".into())]));
        assert!(!satisfies("5.7.0", &[("==".into(), "5.6.3".into())]));
        assert!(satisfies(
            "5.6.3",
            &[(">=".into(), "5.6".into()), ("<".into(), "5.7".into())]
        ));
        assert!(satisfies("1.10.0", &[(">".into(), "1.9".into())]));
        assert!(satisfies("1.4.7", &[("~=".into(), "1.4.5".into())]));
        assert!(!satisfies("1.5.0", &[("~=".into(), "1.4.5".into())]));
        assert!(satisfies("2.3.1", &[("==".into(), "2.3.*".into())]));
        assert!(!satisfies("2.0rc1", &[(">=".into(), "2.0".into())]));
        assert!(satisfies("3.3.2", &[("==".into(), "3.3.2.0".into())]));
    }

    #[test]
    fn plan_present_and_absent() {
        let inst = parse_freeze("F|celery==5.6.3\nF|Kombu==5.6.2\nF|flask-login==0.6.3\n");
        let names: Vec<String> = ["celery==5.6.3", "kombu==5.7.0", "Flask_Login", "redis"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            plan_names(State::Present, &names, &inst),
            vec!["kombu==5.7.0", "redis"]
        );
        assert_eq!(
            plan_names(State::Absent, &names, &inst),
            vec!["celery", "kombu", "flask-login"]
        );
        assert_eq!(plan_names(State::ForceReinstall, &names, &inst).len(), 4);
    }

    #[test]
    fn dry_run_report() {
        let r =
            r#"{"version": "1", "install": [{"metadata": {"name": "six", "version": "1.16.0"}}]}"#;
        assert_eq!(report_installs(r), Some(vec!["six==1.16.0".to_string()]));
        assert_eq!(report_installs(r#"{"install": []}"#), Some(vec![]));
        assert_eq!(report_installs("ERROR: no such option: --report"), None);
    }
}
