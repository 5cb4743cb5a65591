//! `locale_gen` (community.general): generate or remove locales.
//!
//! ```yaml
//! - locale_gen:
//!     name: de_CH.UTF-8
//!     state: present
//! ```
//! Probe (one round trip): `locale -a`, `/etc/locale.gen` and, on Ubuntu (where
//! `/var/lib/locales/supported.d/` exists), `/usr/share/i18n/SUPPORTED`. Plan (pure,
//! [`plan`]) as community.general's: `name` (a string or a list) must be listed in
//! `/etc/locale.gen` (Ubuntu: `SUPPORTED`), commented out or not, or be generated already (as
//! `C.UTF-8` is), else the task fails naming the missing ones. A locale is present when `locale
//! -a` lists it (`.utf8` and `.UTF-8` compare equal). On Debian the `NAME CHARSET` lines of
//! `/etc/locale.gen` are uncommented (`present`) or commented out (`absent`) and `locale-gen`
//! regenerates the enabled set; on Ubuntu `locale-gen NAME…` adds them, and `absent` drops them
//! from `supported.d/local` and runs `locale-gen --purge`. Changed when some locale is not in
//! the wanted state; `--diff` shows `/etc/locale.gen`. Without the `locales` package the task
//! fails with the module's message.
//!
//! Deviation: with a list and `state: absent`, the task changes when any of the names is
//! present (community.general compares the list as a whole, so it changes only when all are).

use async_trait::async_trait;
use serde::Deserialize;

use super::args::de_opt_list;
use super::contract::{execute, NativeModule, Planned};
use super::fileops::{self, Attrs, WriteOpts};
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(deserialize_with = "de_list")]
    name: Vec<String>,
    #[serde(default)]
    state: Option<State>,
}

fn de_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_opt_list(d)?.ok_or_else(|| serde::de::Error::custom("expected a list, got null"))
}

const LOCALE_GEN: &str = "/etc/locale.gen";
const SUPPORTED_D: &str = "/var/lib/locales/supported.d";

/// The charset spellings `locale -a` uses, as community.general normalises them.
const NORMALISATION: [(&str, &str); 10] = [
    (".utf8", ".UTF-8"),
    (".eucjp", ".EUC-JP"),
    (".iso885915", ".ISO-8859-15"),
    (".cp1251", ".CP1251"),
    (".koi8r", ".KOI8-R"),
    (".armscii8", ".ARMSCII-8"),
    (".euckr", ".EUC-KR"),
    (".gbk", ".GBK"),
    (".gb18030", ".GB18030"),
    (".euctw", ".EUC-TW"),
];

pub fn fix_case(name: &str) -> String {
    let mut n = name.to_string();
    for (s, r) in NORMALISATION {
        n = n.replace(s, r);
    }
    n
}

/// The locale named by a `NAME CHARSET` line, commented out or not.
fn listed_name(line: &str) -> Option<&str> {
    let l = line.strip_prefix('#').unwrap_or(line).trim_start();
    let mut it = l.split_whitespace();
    let (name, _charset, rest) = (it.next()?, it.next()?, it.next());
    // `NAME CHARSET` and nothing else (comments in the header have more words).
    (rest.is_none() && name.len() > 1).then_some(name)
}

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `locale -a`.
    pub generated: Vec<String>,
    /// `/etc/locale.gen` (`None`: missing).
    pub locale_gen: Option<String>,
    /// Ubuntu's `supported.d` layout, with `/usr/share/i18n/SUPPORTED`'s text.
    pub ubuntu_supported: Option<String>,
}

/// The changes to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Write `/etc/locale.gen` (if `Some`), then run `locale-gen`.
    Debian(Option<String>),
    /// `locale-gen` these names (present) or drop them and purge (absent).
    Ubuntu { present: bool, names: Vec<String> },
}

/// Pure: `/etc/locale.gen` with each `NAME charset` line enabled or commented out.
pub fn edit_locale_gen(text: &str, names: &[String], enable: bool) -> String {
    let mut out = String::new();
    for l in text.split_inclusive('\n') {
        let body = l.trim_end_matches('\n');
        let bare = body.strip_prefix('#').unwrap_or(body).trim_start();
        let hit = names.iter().find_map(|n| {
            bare.strip_prefix(n.as_str())
                .and_then(|r| r.strip_prefix(' '))
                .filter(|charset| !charset.is_empty())
                .map(|charset| (n, charset))
        });
        match hit {
            Some((n, charset)) => {
                let prefix = if enable { "" } else { "# " };
                out.push_str(&format!("{prefix}{n} {charset}"));
                if l.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(l),
        }
    }
    out
}

/// Pure: the changes (`None`: all in the wanted state) or the failure to report.
pub fn plan(names: &[String], present: bool, seen: &Observed) -> Result<Option<Changes>, String> {
    let generated: Vec<String> = seen.generated.iter().map(|g| fix_case(g)).collect();
    let is_generated = |n: &str| generated.contains(&fix_case(n));
    let available_in = match (&seen.ubuntu_supported, &seen.locale_gen) {
        (Some(s), _) => s.as_str(),
        (None, Some(g)) => g.as_str(),
        (None, None) => {
            return Err(format!(
                "{SUPPORTED_D}/ and {LOCALE_GEN} are missing. Is the package \"locales\" installed?"
            ))
        }
    };
    let listed: Vec<&str> = available_in.lines().filter_map(listed_name).collect();
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !listed.contains(n) && !is_generated(n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "The following locales you've entered are not available on your system: {}",
            missing.join(", ")
        ));
    }
    let todo = names.iter().any(|n| is_generated(n) != present);
    if !todo {
        return Ok(None);
    }
    Ok(Some(match (&seen.ubuntu_supported, &seen.locale_gen) {
        (Some(_), _) => Changes::Ubuntu {
            present,
            names: names.to_vec(),
        },
        (None, Some(g)) => {
            let new = edit_locale_gen(g, names, present);
            Changes::Debian((new != *g).then_some(new))
        }
        (None, None) => unreachable!("checked above"),
    }))
}

pub struct LocaleGen;

#[async_trait]
impl Module for LocaleGen {
    literal_params!("locale_gen");
    fn required(&self) -> &'static [&'static [&'static str]] {
        Params::required()
    }
    fn names(&self) -> &'static [&'static str] {
        &["locale_gen"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for LocaleGen {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "locale_gen";

    async fn probe(&self, _p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let script = format!(
            "echo 'A|'; LC_ALL=C locale -a 2>/dev/null; echo 'Z|'; {}; \
             if [ -d {SUPPORTED_D} ]; then echo 'U|'; base64 < /usr/share/i18n/SUPPORTED 2>/dev/null; echo 'V|'; fi; true",
            fileops::content_cmd(LOCALE_GEN)
        );
        let r = ctx.sh(&script).await?;
        let between = |a: &str, z: &str| -> Option<String> {
            let start = r.stdout.find(a)? + a.len();
            let end = r.stdout[start..]
                .find(z)
                .map_or(r.stdout.len(), |e| start + e);
            Some(r.stdout[start..end].to_string())
        };
        let generated = between("A|\n", "Z|\n")
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let locale_gen =
            fileops::parse_content(&r.stdout)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let ubuntu_supported = match between("U|\n", "V|") {
            Some(b64) => {
                use base64::Engine;
                let b: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| ModuleError::Controller(format!("SUPPORTED: {e}")))?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            None => None,
        };
        Ok(Observed {
            generated,
            locale_gen,
            ubuntu_supported,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let present = p.state.unwrap_or_default() == State::Present;
        if p.name.is_empty() {
            return Err(ModuleError::Args("locale_gen: name is empty".into()));
        }
        let c = match plan(&p.name, present, seen) {
            Ok(c) => c,
            Err(m) => {
                return Ok(Planned::nothing(
                    Outcome::failed(m).with("name", p.name.clone()),
                ))
            }
        };
        let mut out = Outcome::changed(c.is_some()).with("name", p.name.clone());
        if let (true, Some(Changes::Debian(Some(new))), Some(old)) = (diff, &c, &seen.locale_gen) {
            out.diffs.push(FileDiff {
                path: LOCALE_GEN.into(),
                before: old.clone(),
                after: new.clone(),
            });
        }
        Ok(match c {
            Some(c) => Planned::change(c, out),
            None => Planned::nothing(out),
        })
    }

    async fn apply(
        &self,
        _p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let r = match &c {
            Changes::Debian(new) => {
                let attrs = Attrs::default();
                let mut s = String::new();
                if new.is_some() {
                    let wo = WriteOpts {
                        attrs: &attrs,
                        validate: None,
                        backup: false,
                        mkdirs: false,
                        source: None,
                    };
                    s.push_str(&format!(
                        "( {} ) || exit 1; ",
                        fileops::write_script(LOCALE_GEN, &wo)?
                    ));
                }
                s.push_str("locale-gen >/dev/null || exit 2");
                match new {
                    Some(n) => ctx.sh_stdin(&s, n.as_bytes()).await?,
                    None => ctx.sh(&s).await?,
                }
            }
            Changes::Ubuntu { present, names } => {
                let q: Vec<String> = names.iter().map(|n| quote(n)).collect();
                let s = if *present {
                    format!("locale-gen {} >/dev/null || exit 2", q.join(" "))
                } else {
                    let drop: Vec<String> = names
                        .iter()
                        .map(|n| format!("-e {}", quote(&format!("^{} ", n.replace('.', "\\.")))))
                        .collect();
                    format!(
                        "f={SUPPORTED_D}/local; if [ -f \"$f\" ]; then grep -v {} \"$f\" > \"$f.hfplay\"; mv -f \"$f.hfplay\" \"$f\" || exit 1; fi; \
                         locale-gen --purge >/dev/null || exit 2",
                        drop.join(" ")
                    )
                };
                ctx.sh(&s).await?
            }
        };
        if r.rc != 0 {
            let what = if r.rc == 1 {
                "editing the locale list"
            } else {
                "locale-gen"
            };
            let mut f = Outcome::failed(format!("locale_gen: {what} failed: {}", r.stderr.trim()));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const GEN: &str = "# This file lists locales that you wish to have built.\n#\n# de_CH.UTF-8 UTF-8\n# en_US ISO-8859-1\n# en_US.UTF-8 UTF-8\nfr_FR.UTF-8 UTF-8\n";

    fn debian(generated: &[&str]) -> Observed {
        Observed {
            generated: generated.iter().map(|s| s.to_string()).collect(),
            locale_gen: Some(GEN.into()),
            ubuntu_supported: None,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        let p: Params = serde_json::from_value(json!({"name": ["a", "b"]})).unwrap();
        assert_eq!(p.name, names(&["a", "b"]));
        assert!(serde_json::from_value::<Params>(json!({"name": "a", "stat": "x"})).is_err());
    }

    #[test]
    fn locale_gen_edits() {
        let on = edit_locale_gen(GEN, &names(&["en_US.UTF-8"]), true);
        assert!(on.contains("\nen_US.UTF-8 UTF-8\n"));
        // Only the exact name: `en_US` (ISO-8859-1) is left alone.
        assert!(on.contains("\n# en_US ISO-8859-1\n"));
        let off = edit_locale_gen(GEN, &names(&["fr_FR.UTF-8"]), false);
        assert!(off.ends_with("\n# fr_FR.UTF-8 UTF-8\n"));
        assert_eq!(edit_locale_gen(GEN, &names(&["fr_FR.UTF-8"]), true), GEN);
    }

    #[test]
    fn plans() {
        let seen = debian(&["C", "C.utf8", "POSIX", "fr_FR.utf8"]);
        // Generated already (.utf8 reads as .UTF-8): nothing to do.
        assert_eq!(plan(&names(&["fr_FR.UTF-8"]), true, &seen), Ok(None));
        assert_eq!(plan(&names(&["C.UTF-8"]), true, &seen), Ok(None));
        let c = plan(&names(&["de_CH.UTF-8"]), true, &seen)
            .unwrap()
            .unwrap();
        let Changes::Debian(Some(new)) = c else {
            panic!("{c:?}")
        };
        assert!(new.contains("\nde_CH.UTF-8 UTF-8\n"));
        // Enabled in the file but never generated: locale-gen runs without a write.
        let c = plan(&names(&["fr_FR.UTF-8"]), true, &debian(&["C"])).unwrap();
        assert_eq!(c, Some(Changes::Debian(None)));
        assert!(plan(&names(&["xx_YY.UTF-8"]), true, &seen)
            .unwrap_err()
            .contains("not available on your system: xx_YY.UTF-8"));
        assert_eq!(plan(&names(&["de_CH.UTF-8"]), false, &seen), Ok(None));
        assert!(plan(&names(&["fr_FR.UTF-8"]), false, &seen)
            .unwrap()
            .is_some());
        let nothing = Observed::default();
        assert!(plan(&names(&["fr_FR.UTF-8"]), true, &nothing)
            .unwrap_err()
            .contains("\"locales\" installed"));
        let ubuntu = Observed {
            generated: vec!["C.utf8".into()],
            locale_gen: None,
            ubuntu_supported: Some("de_CH.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n".into()),
        };
        assert_eq!(
            plan(&names(&["de_CH.UTF-8"]), true, &ubuntu),
            Ok(Some(Changes::Ubuntu {
                present: true,
                names: names(&["de_CH.UTF-8"])
            }))
        );
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({"name": "de_CH.UTF-8"})).unwrap();
        let pl = LocaleGen.plan(&p, &debian(&["C.utf8"]), true).unwrap();
        assert!(pl.outcome.changed && pl.changes.is_some());
        assert_eq!(pl.outcome.diffs[0].path, "/etc/locale.gen");
        let pl = LocaleGen
            .plan(&p, &debian(&["C.utf8", "de_CH.utf8"]), true)
            .unwrap();
        assert!(!pl.outcome.changed && pl.changes.is_none());
    }
}
