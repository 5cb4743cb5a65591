//! PostgreSQL over TLS for every client of heir-supervisor (and heirflow-chaos): rustls with
//! the ring provider, verified like libpq's `sslmode=verify-full` — the chain against the
//! certificates of one CA file only (no system roots), the host's name or IP address against
//! the server certificate's subject alternative names.
//!
//! One connector type for both modes ([`MakeRustlsConnect`]): a plain connection sets
//! `SslMode::Disable` and never uses it, so every caller has one `Connection` type.
//!
//! DSNs ([`parse_dsn`]): `sslmode` and `sslrootcert` are read here and removed before
//! `tokio_postgres::Config` parses the rest (it knows neither `verify-full` nor `sslrootcert`).
//! Only `verify-full` and `disable` (or no `sslmode`: plain, as before) are accepted: `require`
//! and `verify-ca` would talk to whoever holds any certificate of the CA, and `prefer`/`allow`
//! fall back to plaintext without a word.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};

pub use tokio_postgres_rustls::MakeRustlsConnect;

/// The connection half of a client made with [`PgTls::connector`] (plain or TLS alike).
pub type PgConnection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Why a DSN or a CA file cannot be used. Never holds a DSN value other than `sslmode`'s and
/// `sslrootcert`'s (a password may be among them).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(
        "sslmode={0:?} is not supported: use sslmode=verify-full with sslrootcert=FILE (TLS, \
         the server's certificate and name verified) or sslmode=disable (plain)"
    )]
    UnsupportedMode(String),
    #[error(
        "sslmode=verify-full needs sslrootcert=FILE: the CA certificate(s) the server's \
         certificate must chain to"
    )]
    MissingRootCert,
    #[error(
        "sslrootcert is given without sslmode: add sslmode=verify-full (or sslmode=disable to \
         connect in plain text)"
    )]
    RootCertWithoutMode,
    #[error("sslrootcert=system (the system's trust store) is not supported: give the CA's file")]
    SystemRoots,
    #[error("reading the CA file {}", path.display())]
    CaUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        path.display()
    )]
    CaEmpty { path: PathBuf },
    #[error("the CA file {}: {reason}", path.display())]
    CaInvalid { path: PathBuf, reason: String },
    #[error("invalid DSN: {0}")]
    Syntax(String),
    #[error("setting up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How a client reaches PostgreSQL: in plain text, or over TLS verified as `verify-full`.
#[derive(Clone)]
pub struct PgTls {
    connector: MakeRustlsConnect,
    /// The CA file when TLS is on.
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PgTls {
    /// No TLS (today's local test servers).
    pub fn plain() -> Result<PgTls, TlsSetupError> {
        Ok(PgTls {
            connector: MakeRustlsConnect::new(client_config(RootCertStore::empty())?),
            ca_file: None,
        })
    }

    /// TLS required, the server verified against the certificates of `ca_file` only.
    pub fn verify_full(ca_file: &Path) -> Result<PgTls, TlsSetupError> {
        Ok(PgTls {
            connector: MakeRustlsConnect::new(client_config(load_roots(ca_file)?)?),
            ca_file: Some(ca_file.to_path_buf()),
        })
    }

    /// `verify-full` against `ca_file` when one is given, else plain (`--pg-ca-file`).
    pub fn from_ca_file(ca_file: Option<&Path>) -> Result<PgTls, TlsSetupError> {
        match ca_file {
            Some(p) => PgTls::verify_full(p),
            None => PgTls::plain(),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.ca_file.is_some()
    }

    /// The mode to set on a `tokio_postgres::Config` (or the sync `postgres::Config`, which
    /// shares the type): `Require` with this verifying connector is libpq's `verify-full`.
    pub fn ssl_mode(&self) -> SslMode {
        if self.is_tls() {
            SslMode::Require
        } else {
            SslMode::Disable
        }
    }

    /// The connector to pass to `connect` (cheap: the rustls config is shared).
    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    pub fn apply(&self, config: &mut tokio_postgres::Config) {
        config.ssl_mode(self.ssl_mode());
    }

    /// `plain` or `TLS verify-full (CA FILE)`, for logs.
    pub fn describe(&self) -> String {
        match &self.ca_file {
            Some(p) => format!("TLS verify-full (CA {})", p.display()),
            None => "plain".to_string(),
        }
    }
}

/// A parsed DSN: where to connect and how.
#[derive(Clone, Debug)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
}

impl PgTarget {
    pub async fn connect(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        self.config.connect(self.tls.connector()).await
    }
}

/// Parse a libpq DSN (`key=value ...`, values optionally `'quoted'` with `\'` and `\\`) or a
/// `postgres://` / `postgresql://` URL, with `sslmode` and `sslrootcert` as described in the
/// module documentation. Reads the CA file now, so a bad one fails at start.
pub fn parse_dsn(dsn: &str) -> Result<PgTarget, TlsSetupError> {
    let dsn = dsn.trim();
    let stripped = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        strip_url(dsn)?
    } else {
        strip_key_values(dsn)?
    };
    let mut config: tokio_postgres::Config = stripped
        .rest
        .parse()
        .map_err(|e: tokio_postgres::Error| TlsSetupError::Syntax(with_causes(&e)))?;
    let tls = tls_for(stripped.sslmode.as_deref(), stripped.sslrootcert.as_deref())?;
    tls.apply(&mut config);
    Ok(PgTarget { config, tls })
}

/// `e: cause: cause` (tokio-postgres's Display leaves the cause, e.g. the unknown key, out).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A DSN without its TLS keys (libpq: the last occurrence of a key wins).
#[derive(Debug, PartialEq)]
struct Stripped {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn tls_for(mode: Option<&str>, rootcert: Option<&str>) -> Result<PgTls, TlsSetupError> {
    let rootcert = rootcert.filter(|r| !r.is_empty());
    match (mode, rootcert) {
        (None, None) | (Some("disable"), _) => PgTls::plain(),
        // libpq would try TLS here (sslmode defaults to prefer): plain text is not what the
        // author of this DSN meant, so refuse rather than guess.
        (None, Some(_)) => Err(TlsSetupError::RootCertWithoutMode),
        (Some("verify-full"), None) => Err(TlsSetupError::MissingRootCert),
        (Some("verify-full"), Some("system")) => Err(TlsSetupError::SystemRoots),
        (Some("verify-full"), Some(p)) => PgTls::verify_full(Path::new(p)),
        (Some(other), _) => Err(TlsSetupError::UnsupportedMode(other.to_string())),
    }
}

/// Split `key=value` pairs as libpq (and tokio-postgres) read them; the rest is written back
/// with every value quoted.
fn strip_key_values(dsn: &str) -> Result<Stripped, TlsSetupError> {
    let mut out = Stripped {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
    };
    let mut kept = Vec::new();
    for (key, value) in key_values(dsn)? {
        match key.as_str() {
            "sslmode" => out.sslmode = Some(value),
            "sslrootcert" => out.sslrootcert = Some(value),
            _ => kept.push(format!("{key}={}", quote(&value))),
        }
    }
    out.rest = kept.join(" ");
    Ok(out)
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The pairs of a libpq DSN. Errors name the key, never a value (it may be a password).
fn key_values(dsn: &str) -> Result<Vec<(String, String)>, TlsSetupError> {
    let syntax = TlsSetupError::Syntax;
    let mut out = Vec::new();
    let mut it = dsn.chars().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if it.peek().is_none() {
                return Ok(out);
            }
            return Err(syntax(
                "expected KEY=VALUE, found a '=' without a key".into(),
            ));
        }
        skip_ws(&mut it);
        if it.next() != Some('=') {
            return Err(syntax(format!("expected '=' after {key:?}")));
        }
        skip_ws(&mut it);
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    Some('\'') => break,
                    Some('\\') => match it.next() {
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some(c) => value.push(c),
                    None => return Err(syntax(format!("the quoted value of {key} is not closed"))),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(c) = it.next() {
                        value.push(c);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(syntax(format!(
                    "{key} has no value (write {key}='' for an empty one)"
                )));
            }
        }
        out.push((key, value));
    }
}

/// Take `sslmode`/`sslrootcert` out of a URL's query string (percent-decoded); the other
/// parameters stay as written.
fn strip_url(url: &str) -> Result<Stripped, TlsSetupError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = Stripped {
        rest: base.to_string(),
        sslmode: None,
        sslrootcert: None,
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| TlsSetupError::Syntax("a URL parameter is not valid UTF-8".into()))
    };
    let mut kept = Vec::new();
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        match decode(k)?.as_str() {
            "sslmode" => out.sslmode = Some(decode(v)?),
            "sslrootcert" => out.sslrootcert = Some(decode(v)?),
            _ if param.is_empty() => {}
            _ => kept.push(param),
        }
    }
    if !kept.is_empty() {
        out.rest.push('?');
        out.rest.push_str(&kept.join("&"));
    }
    Ok(out)
}

/// The trust anchors of a PEM file: every certificate in it (other PEM sections are skipped).
fn load_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::CaUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| TlsSetupError::CaInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| invalid(format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("certificate {} is not usable: {e}", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// A rustls client configuration trusting the certificates of `ca_file` only (no system
/// roots): what every TLS client of heir-supervisor verifies against (PostgreSQL here, the
/// news broker in `news`).
pub fn verifying_client_config(ca_file: &Path) -> Result<ClientConfig, TlsSetupError> {
    client_config(load_roots(ca_file)?)
}

/// Always ring, chosen here: the AWS SDK in the same build enables aws-lc-rs too, and with two
/// providers compiled in, rustls' process default is ambiguous (a panic at first use).
fn client_config(roots: RootCertStore) -> Result<ClientConfig, TlsSetupError> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::private_file::TempFile;

    /// A self-signed CA made with openssl for these tests (no key kept: nothing is signed).
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBtTCCAVugAwIBAgIUBzJy0Snvby6TjfTyZwvixPfNckIwCgYIKoZIzj0EAwIw
JzElMCMGA1UEAwwcaGVpci1zdXBlcnZpc29yIHVuaXQtdGVzdCBDQTAgFw0yNjEy
MDYxNzU1NTZaGA8yMTI2MTExMjE3NTU1NlowJzElMCMGA1UEAwwcaGVpci1zdXBl
cnZpc29yIHVuaXQtdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKsn
K8Sr5C8cWDc3CEb535zvKtQ+s57sUCcYoLUDzbaDI/Mw00IusBbnMw4jOQV19UQW
jRW/xHmRn0up+7sTacSjYzBhMB0GA1UdDgQWBBTbclxbrCnrWmKVwUcMVylZrte7
VjAfBgNVHSMEGDAWgBTbclxbrCnrWmKVwUcMVylZrte7VjAPBgNVHRMBAf8EBTAD
AQH/MA4GA1UdDwEB/wQEAwIBBjAKBggqhkjOPQQDAgNIADBFAiEAq1AdRYBHEhFs
c+PCHgK/CdM03+zsgTU5ymukat6mewsCIFU5zdY/zyr1CulfFj1hbtuf03DkB/12
ahoCPZBwqr4i
-----END CERTIFICATE-----
";

    fn err(dsn: &str) -> String {
        let e = parse_dsn(dsn).expect_err(dsn);
        format!("{:#}", anyhow::Error::from(e))
    }

    fn pairs(dsn: &str) -> Vec<(String, String)> {
        key_values(dsn).unwrap()
    }

    #[test]
    fn quoted_and_escaped_values() {
        let p = pairs(r"host=h  password='a b\'c\\d' user = u dbname=x\ y empty=''");
        let v: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            v,
            [
                ("host", "h"),
                ("password", r"a b'c\d"),
                ("user", "u"),
                ("dbname", "x y"),
                ("empty", "")
            ]
        );
        assert!(pairs("  ").is_empty());
    }

    #[test]
    fn malformed_dsns_name_the_key_not_the_value() {
        for (dsn, want) in [
            (
                "host=h password='hunter2",
                "quoted value of password is not closed",
            ),
            ("host=h password", "expected '=' after \"password\""),
            ("host=h password=", "password has no value"),
            ("=hunter2", "a '=' without a key"),
        ] {
            let e = err(dsn);
            assert!(e.contains(want), "{dsn}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_rest_reaches_tokio_postgres_intact() {
        let t = parse_dsn(r"host=10.0.0.1 port=5433 user=heir password='p w\'x' dbname=airflow")
            .unwrap();
        assert_eq!(t.config.get_user(), Some("heir"));
        assert_eq!(t.config.get_password(), Some(&b"p w'x"[..]));
        assert_eq!(t.config.get_dbname(), Some("airflow"));
        assert_eq!(t.config.get_ports(), [5433]);
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert!(!t.tls.is_tls());
        // an unknown key is still tokio-postgres's to refuse
        let e = err("host=h frobnicate=1");
        assert!(e.contains("invalid DSN") && e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn no_sslmode_or_disable_is_plain() {
        for dsn in [
            "host=h user=u",
            "host=h sslmode=disable",
            "host=h sslmode=disable sslrootcert=/nonexistent",
            "postgresql://u@h/db",
            "postgres://u@h:5433/db?sslmode=disable&connect_timeout=2",
        ] {
            let t = parse_dsn(dsn).unwrap_or_else(|e| panic!("{dsn}: {e}"));
            assert_eq!(t.config.get_ssl_mode(), SslMode::Disable, "{dsn}");
            assert!(!t.tls.is_tls(), "{dsn}");
        }
        let t = parse_dsn("postgres://u@h:5433/db?sslmode=disable&connect_timeout=2").unwrap();
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(2))
        );
    }

    #[test]
    fn verify_full_with_a_ca_file_requires_tls() {
        let ca = TempFile::new("pg-ca", CA_PEM, 0o644);
        let p = ca.0.display().to_string();
        for dsn in [
            format!("host=127.0.0.1 user=u sslmode=verify-full sslrootcert={p}"),
            format!("host=127.0.0.1 sslrootcert='{p}' sslmode='verify-full' user=u"),
            format!("postgresql://u@127.0.0.1/db?sslmode=verify-full&sslrootcert={p}"),
            format!(
                "postgres://u@127.0.0.1/db?sslrootcert={}&sslmode=verify%2Dfull",
                p.replace('/', "%2F")
            ),
        ] {
            let t = parse_dsn(&dsn).unwrap_or_else(|e| panic!("{dsn}: {e:#}"));
            assert_eq!(t.config.get_ssl_mode(), SslMode::Require, "{dsn}");
            assert!(t.tls.is_tls());
            assert_eq!(t.tls.describe(), format!("TLS verify-full (CA {p})"));
            assert_eq!(t.config.get_user(), Some("u"));
        }
    }

    #[test]
    fn other_sslmodes_are_refused_by_name() {
        for mode in ["prefer", "require", "verify-ca", "allow", "VERIFY-FULL"] {
            let e = err(&format!("host=h sslmode={mode} sslrootcert=/x"));
            assert!(
                e.contains(&format!("sslmode=\"{mode}\" is not supported")),
                "{e}"
            );
            assert!(e.contains("sslmode=verify-full"), "{e}");
            assert!(e.contains("sslmode=disable"), "{e}");
        }
        let e = err("postgres://u@h/db?sslmode=require");
        assert!(e.contains("\"require\" is not supported"), "{e}");
    }

    #[test]
    fn verify_full_needs_its_root_cert() {
        for dsn in [
            "host=h sslmode=verify-full",
            "host=h sslmode=verify-full sslrootcert=''",
            "postgres://u@h/db?sslmode=verify-full",
        ] {
            let e = err(dsn);
            assert!(e.contains("needs sslrootcert=FILE"), "{dsn}: {e}");
        }
        assert!(err("host=h sslrootcert=/etc/ca.crt").contains("without sslmode"));
        assert!(err("host=h sslmode=verify-full sslrootcert=system").contains("system"));
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_named() {
        let missing = std::env::temp_dir().join(format!("heir-no-ca-{}", std::process::id()));
        let e = err(&format!(
            "host=h sslmode=verify-full sslrootcert={}",
            missing.display()
        ));
        assert!(
            e.contains(&format!(
                "reading the CA file {}: No such file",
                missing.display()
            )),
            "{e}"
        );
        let empty = TempFile::new("pg-ca-empty", "not a certificate\n", 0o644);
        let e = err(&format!(
            "host=h sslmode=verify-full sslrootcert={}",
            empty.0.display()
        ));
        assert!(
            e.contains(&format!("{} holds no PEM certificate", empty.0.display())),
            "{e}"
        );
        let bad = TempFile::new(
            "pg-ca-bad",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            0o644,
        );
        let e = format!(
            "{:#}",
            anyhow::Error::from(PgTls::from_ca_file(Some(&bad.0)).unwrap_err())
        );
        assert!(e.contains(&bad.0.display().to_string()), "{e}");
        assert!(e.contains("certificate 1 is not usable"), "{e}");
    }

    #[test]
    fn ca_file_helper() {
        assert!(!PgTls::from_ca_file(None).unwrap().is_tls());
        let ca = TempFile::new("pg-ca-helper", CA_PEM, 0o644);
        let t = PgTls::from_ca_file(Some(&ca.0)).unwrap();
        assert_eq!(t.ssl_mode(), SslMode::Require);
        let mut cfg = tokio_postgres::Config::new();
        t.apply(&mut cfg);
        assert_eq!(cfg.get_ssl_mode(), SslMode::Require);
    }
}
