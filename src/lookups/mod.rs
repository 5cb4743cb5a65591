//! The `lookup`/`query` plugins templates call (password, file, env, pipe, first_found), and the
//! digests and base64 the filters use. Below both `template` and `filters`, which register these.

pub mod first_found;

use std::path::PathBuf;

use base64::Engine;
use minijinja::value::{Kwargs, Rest};
use minijinja::{Error, ErrorKind, State, Value as MjValue};
use sha2::Digest;

/// The `lookup`/`query` plugins: password, file, env, pipe, template-free basics.
pub fn lookup(
    state: &State,
    name: &str,
    terms: &[MjValue],
    kwargs: &Kwargs,
) -> Result<Vec<MjValue>, Error> {
    let name = name.strip_prefix("ansible.builtin.").unwrap_or(name);
    if name == "first_found" {
        return first_found_lookup(state, terms, kwargs);
    }
    let base = state
        .lookup("playbook_dir")
        .and_then(|v| v.as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut out = Vec::new();
    for term in terms {
        let t = term
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| term.to_string());
        let v = match name {
            "env" => MjValue::from(std::env::var(&t).unwrap_or_default()),
            "file" => {
                let p = resolve_path(&base, &t, state);
                let s = std::fs::read_to_string(&p).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("lookup('file'): cannot read {}: {e}", p.display()),
                    )
                })?;
                let strip = kwargs.get::<Option<bool>>("rstrip")?.unwrap_or(true);
                MjValue::from(if strip { s.trim_end().to_string() } else { s })
            }
            "pipe" => {
                let o = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&t)
                    .output()
                    .map_err(|e| {
                        Error::new(ErrorKind::InvalidOperation, format!("lookup('pipe'): {e}"))
                    })?;
                if !o.status.success() {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("lookup('pipe'): {t:?} failed"),
                    ));
                }
                MjValue::from(String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            }
            "password" => MjValue::from(password_lookup(&base, &t, kwargs)?),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "unknown lookup plugin '{other}' (hfplay has: password, file, env, pipe, first_found)"
                    ),
                ))
            }
        };
        out.push(v);
    }
    let _ = kwargs.get::<Option<MjValue>>("errors");
    let _ = kwargs.get::<Option<MjValue>>("wantlist");
    let _ = kwargs.get::<Option<MjValue>>("length");
    let _ = kwargs.get::<Option<MjValue>>("chars");
    let _ = kwargs.get::<Option<MjValue>>("rstrip");
    kwargs.assert_all_used()?;
    Ok(out)
}

/// `lookup('first_found', ...)`: relative names are searched in `files/` along the task's
/// search path (`ansible_search_path`), then the playbook directory.
fn first_found_lookup(
    state: &State,
    terms: &[MjValue],
    kwargs: &Kwargs,
) -> Result<Vec<MjValue>, Error> {
    let fail = |msg: String| Error::new(ErrorKind::InvalidOperation, msg);
    let json =
        |v: &MjValue| crate::template::to_json(v).map_err(|e| fail(format!("first_found: {e}")));
    let mut kw = serde_json::Map::new();
    for k in ["files", "paths", "skip"] {
        if let Some(v) = kwargs.get::<Option<MjValue>>(k)? {
            kw.insert(k.to_string(), json(&v)?);
        }
    }
    let kw = first_found::Options::from_map(&kw).map_err(fail)?;
    let terms = terms.iter().map(json).collect::<Result<Vec<_>, _>>()?;
    let var_path = |k: &str| state.lookup(k).and_then(|v| v.as_str().map(PathBuf::from));
    let basedir = var_path("playbook_dir").unwrap_or_else(|| PathBuf::from("."));
    let stack: Vec<PathBuf> = match state.lookup("ansible_search_path") {
        Some(v) if !v.is_undefined() && !v.is_none() => json(&v)?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(PathBuf::from))
                    .collect()
            })
            .unwrap_or_default(),
        _ => var_path("role_path").into_iter().collect(),
    };
    let search = first_found::SearchPath {
        subdir: "files".into(),
        stack,
        basedir,
    };
    // The terms were templated by the expression that passed them.
    let found =
        first_found::first_found(&terms, &kw, &search, |s| Some(s.to_string())).map_err(fail)?;
    for k in ["errors", "wantlist"] {
        let _ = kwargs.get::<Option<MjValue>>(k);
    }
    kwargs.assert_all_used()?;
    Ok(found
        .into_iter()
        .map(|p| MjValue::from(p.to_string_lossy().into_owned()))
        .collect())
}

fn resolve_path(base: &std::path::Path, p: &str, state: &State) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        return path;
    }
    if let Some(role) = state
        .lookup("role_path")
        .and_then(|v| v.as_str().map(PathBuf::from))
    {
        for sub in ["files", "templates", ""] {
            let c = role.join(sub).join(&path);
            if c.exists() {
                return c;
            }
        }
    }
    base.join(path)
}

/// `lookup('password', 'path length=32 chars=ascii_letters,digits')`: generates a secret once,
/// keeps it on the controller (0600, parent dirs 0700) and returns it on every later run.
fn password_lookup(base: &std::path::Path, term: &str, kwargs: &Kwargs) -> Result<String, Error> {
    let (params, path) = crate::words::split_kv(term);
    let get = |k: &str| -> Result<Option<String>, Error> {
        if let Some(v) = params.get(k) {
            return Ok(v.as_str().map(str::to_string));
        }
        Ok(kwargs.get::<Option<MjValue>>(k)?.map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        }))
    };
    let length: usize = match get("length")? {
        Some(l) => l.parse().map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("password lookup: bad length {l:?}"),
            )
        })?,
        None => 20,
    };
    let chars = get("chars")?.unwrap_or_else(|| "ascii_letters,digits,.,:-_".to_string());
    let alphabet = password_alphabet(&chars);
    if path.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "password lookup needs a path",
        ));
    }
    let p = if std::path::Path::new(&path).is_absolute() {
        PathBuf::from(&path)
    } else {
        base.join(&path)
    };
    if path == "/dev/null" {
        return Ok(random_string(&alphabet, length));
    }
    if let Ok(existing) = std::fs::read_to_string(&p) {
        // Ansible stores "password salt=..." when encrypting; the password is the first word.
        return Ok(existing
            .lines()
            .next()
            .unwrap_or_default()
            .split(" salt=")
            .next()
            .unwrap_or_default()
            .to_string());
    }
    let secret = random_string(&alphabet, length);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = p.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        f.write_all(format!("{secret}\n").as_bytes())
    };
    match write() {
        Ok(()) => Ok(secret),
        // Another host's task created it concurrently: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&p)
            .map(|s| s.lines().next().unwrap_or_default().to_string())
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("password lookup: {}: {e}", p.display()),
                )
            }),
        Err(e) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("password lookup: cannot write {}: {e}", p.display()),
        )),
    }
}

fn password_alphabet(spec: &str) -> Vec<char> {
    let mut out: Vec<char> = Vec::new();
    // Ansible: a comma-separated list of Python `string` constants or literal characters;
    // ",," stands for a literal comma.
    let spec = spec.replace(",,", "\u{0}");
    for part in spec.split(',') {
        let part = part.replace('\u{0}', ",");
        let add: String = match part.as_str() {
            "ascii_letters" => ('a'..='z').chain('A'..='Z').collect(),
            "ascii_lowercase" => ('a'..='z').collect(),
            "ascii_uppercase" => ('A'..='Z').collect(),
            "digits" => ('0'..='9').collect(),
            "hexdigits" => "0123456789abcdefABCDEF".into(),
            "octdigits" => "01234567".into(),
            "punctuation" => "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".into(),
            other => other.into(),
        };
        for c in add.chars() {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        out = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    }
    out
}

fn random_string(alphabet: &[char], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
        .collect()
}

/// Registered for templates: `lookup(name, *terms, **kw)` and `query`/`q` (always a list).
pub fn lookup_fn(
    state: &State,
    name: String,
    terms: Rest<MjValue>,
    kwargs: Kwargs,
) -> Result<MjValue, Error> {
    let wantlist = kwargs.get::<Option<bool>>("wantlist")?.unwrap_or(false);
    let v = match lookup(state, &name, &terms, &kwargs) {
        Ok(v) => v,
        // `errors='ignore'`/`'warn'`: a failed lookup is none (query: an empty list).
        Err(_) if errors_ignored(&kwargs)? => {
            return Ok(if wantlist {
                MjValue::from(Vec::<MjValue>::new())
            } else {
                MjValue::from(())
            })
        }
        Err(e) => return Err(e),
    };
    if wantlist {
        return Ok(MjValue::from(v));
    }
    Ok(match v.len() {
        1 => v.into_iter().next().unwrap_or_default(),
        _ => MjValue::from(
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    })
}

pub fn query_fn(
    state: &State,
    name: String,
    terms: Rest<MjValue>,
    kwargs: Kwargs,
) -> Result<MjValue, Error> {
    match lookup(state, &name, &terms, &kwargs) {
        Ok(v) => Ok(MjValue::from(v)),
        Err(_) if errors_ignored(&kwargs)? => Ok(MjValue::from(Vec::<MjValue>::new())),
        Err(e) => Err(e),
    }
}

/// `errors='ignore'` or `errors='warn'` on a lookup (the default, `strict`, raises).
fn errors_ignored(kwargs: &Kwargs) -> Result<bool, Error> {
    Ok(matches!(
        kwargs.get::<Option<String>>("errors")?.as_deref(),
        Some("ignore" | "warn")
    ))
}

/// Hex digest used by the `hash`/`checksum` filters.
pub fn digest(algo: &str, data: &[u8]) -> Result<String, String> {
    Ok(match algo {
        "sha1" => hex::encode(sha1::Sha1::digest(data)),
        "sha256" => hex::encode(sha2::Sha256::digest(data)),
        "sha512" => hex::encode(sha2::Sha512::digest(data)),
        "sha224" => hex::encode(sha2::Sha224::digest(data)),
        "sha384" => hex::encode(sha2::Sha384::digest(data)),
        "md5" => hex::encode(md5::Md5::digest(data)),
        other => return Err(format!("unsupported hash type '{other}'")),
    })
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
