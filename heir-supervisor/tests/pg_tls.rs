//! PostgreSQL over TLS against a real server: `tests/pg.sh` with `HEIR_PG_TLS_DIR` (ssl=on,
//! pg_hba `hostssl ... scram-sha-256` alone) and a test CA and server certificate for 127.0.0.1
//! (IP SAN only) made here with the openssl CLI. verify-full with the right CA connects over
//! TLS; another CA, an address or a name the certificate does not hold, and plain text are all
//! refused. Takes seconds. Without Postgres the test FAILS, unless `HEIR_TEST_SKIP_PG=1` (as the
//! other Postgres tests).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use heir_supervisor::db::probe::{self, Creds};
use heir_supervisor::pg_tls::{parse_dsn, PgTls};

const BIN: &str = env!("CARGO_BIN_EXE_heir-supervisor");
const PASSWORD: &str = "tls-test-pw'x";

fn pg_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg.sh")
}

fn skipped() -> bool {
    let skip = std::env::var("HEIR_TEST_SKIP_PG").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED: HEIR_TEST_SKIP_PG=1 (no Postgres for heir-supervisor tests)");
    }
    skip
}

fn run(c: &mut Command, what: &str) -> Output {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    run(
        Command::new("openssl").current_dir(dir).args(args),
        &format!("openssl {}", args.join(" ")),
    );
}

/// `openssl req` with a new unencrypted P-256 key, then `args`.
fn openssl_req(dir: &Path, args: &[&str]) {
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

/// A self-signed CA `NAME.crt`/`NAME.key` (P-256, two days).
fn make_ca(dir: &Path, name: &str) {
    openssl_req(
        dir,
        &[
            "-x509",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=heir-supervisor test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `server.crt`/`server.key` signed by `ca`, naming `san` only (CN is ignored by verifiers).
fn make_server_cert(dir: &Path, ca: &str, san: &str) {
    openssl_req(
        dir,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("writing server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// A TLS-only PostgreSQL on 127.0.0.1 and 127.0.0.2 (one port), torn down on drop.
struct TlsServer {
    base: PathBuf,
    port: u16,
}

impl TlsServer {
    fn pg_dir(&self) -> PathBuf {
        self.base.join("pg")
    }

    fn certs(&self) -> PathBuf {
        self.base.join("certs")
    }

    fn pg(&self, action: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(pg_sh())
            .arg(action)
            .env("HEIR_PG_PORT", self.port.to_string())
            .env("HEIR_PG_DIR", self.pg_dir())
            .env("HEIR_PG_TLS_DIR", self.certs())
            .env("HEIR_PG_LISTEN", "127.0.0.1,127.0.0.2");
        c
    }

    fn start() -> TlsServer {
        // In /tmp, not a private temp dir: as root the server runs as `postgres`, which must
        // reach its data directory.
        let base = std::env::temp_dir().join(format!("heir-pg-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("certs")).expect("creating the test directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free port")
            .port();
        let s = TlsServer { base, port };
        let certs = s.certs();
        make_ca(&certs, "ca");
        make_ca(&certs, "other-ca");
        make_server_cert(&certs, "ca", "IP:127.0.0.1");
        std::fs::write(certs.join("password"), PASSWORD).expect("writing the password");
        run(&mut s.pg("up"), "tests/pg.sh up (TLS)");
        s
    }

    fn ca(&self, name: &str) -> String {
        self.certs()
            .join(format!("{name}.crt"))
            .display()
            .to_string()
    }

    /// A DSN to `host` with the test login; `tls`: the DSN's TLS keys.
    fn dsn(&self, host: &str, tls: &str) -> String {
        format!(
            "host={host} port={} user=heir password='{}' dbname=postgres connect_timeout=5 {tls}",
            self.port,
            PASSWORD.replace('\'', "\\'")
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.pg("down").output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Connect with `dsn` (bounded); on success, whether the session is encrypted. Errors with
/// their causes (tokio-postgres keeps the TLS or server error in its source).
async fn connect(dsn: &str) -> Result<bool, String> {
    let chain = |e: anyhow::Error| format!("{e:#}");
    let target = parse_dsn(dsn).map_err(|e| chain(e.into()))?;
    let (client, conn) = tokio::time::timeout(Duration::from_secs(10), target.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| chain(e.into()))?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| chain(e.into()))?;
    Ok(row.get(0))
}

#[tokio::test]
async fn verify_full_connects_only_to_a_server_its_ca_signed_for_that_address() {
    if skipped() {
        return;
    }
    let s = TlsServer::start();
    let ca = s.ca("ca");
    let verify = |ca: &str| format!("sslmode=verify-full sslrootcert={ca}");

    // The right CA, the address the certificate names: TLS.
    assert_eq!(connect(&s.dsn("127.0.0.1", &verify(&ca))).await, Ok(true));

    // Another CA: the chain is refused.
    let err = connect(&s.dsn("127.0.0.1", &verify(&s.ca("other-ca"))))
        .await
        .expect_err("connected with a certificate another CA signed");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The same server at an address its certificate does not name.
    let err = connect(&s.dsn("127.0.0.2", &verify(&ca)))
        .await
        .expect_err("connected to an address the certificate does not name");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("not valid for name"), "{err}");

    // A DNS name the certificate does not hold (the address is right: only the name is wrong).
    let err = connect(&format!(
        "{} hostaddr=127.0.0.1",
        s.dsn("localhost", &verify(&ca))
    ))
    .await
    .expect_err("connected to a name the certificate does not hold");
    assert!(err.contains("not valid for name"), "{err}");

    // Plain text: the server has no pg_hba entry for it.
    for tls in ["sslmode=disable", ""] {
        let err = connect(&s.dsn("127.0.0.1", tls))
            .await
            .expect_err("connected without TLS");
        assert!(err.contains("no pg_hba.conf entry"), "{tls:?}: {err}");
        assert!(err.contains("no encryption"), "{tls:?}: {err}");
    }

    // The fixed-address probes (`db node`/`db witness --pg-ca-file`).
    let creds = |tls: PgTls| Creds {
        user: "heir".into(),
        password: Some(PASSWORD.into()),
        dbname: "postgres".into(),
        tls,
    };
    let timeout = Duration::from_secs(10);
    let with_ca = creds(PgTls::from_ca_file(Some(Path::new(&ca))).expect("the test CA"));
    let st = probe::probe("127.0.0.1", s.port, &with_ca, false, timeout)
        .await
        .expect("probe over TLS");
    assert!(!st.in_recovery);
    let plain = creds(PgTls::plain().expect("plain"));
    let err = probe::probe("127.0.0.1", s.port, &plain, false, timeout)
        .await
        .expect_err("a plain probe got in");
    assert!(
        format!("{err:#}").contains("no pg_hba.conf entry"),
        "{err:#}"
    );
    let err = probe::probe("127.0.0.2", s.port, &with_ca, false, timeout)
        .await
        .expect_err("a probe to an unnamed address got in");
    assert!(format!("{err:#}").contains("not valid for name"), "{err:#}");

    // The registry (`status`, like `run` and `interface`) takes the DSN's TLS keys.
    let status = |dsn: String| {
        Command::new(BIN)
            .args(["status", "--timeout", "10", "--dsn", &dsn])
            .output()
            .expect("running status")
    };
    let out = status(s.dsn("127.0.0.1", &verify(&ca)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "exit 3: no table yet; {stderr}");
    assert!(stderr.contains("no succession table yet"), "{stderr}");
    let out = status(s.dsn("127.0.0.1", &verify(&s.ca("other-ca"))));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains("tls-test-pw"), "{stderr}");
}

#[test]
fn witness_refuses_to_start_on_an_unreadable_ca_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("heir-pg-tls-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").expect("writing the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let missing = dir.join("no-ca.crt");
    let mut child = Command::new(BIN)
        .args(["db", "witness", "--node", "a=127.0.0.1:1", "--node"])
        .args(["b=127.0.0.1:2", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&secret)
        .env("HEIR_PG_CA_FILE", &missing)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running db witness");
    // Bounded: a witness that started anyway would run until killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("waiting").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("db witness started without its CA file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collecting output");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--pg-ca-file"), "{stderr}");
    assert!(
        stderr.contains(&format!("reading the CA file {}", missing.display())),
        "{stderr}"
    );
}
