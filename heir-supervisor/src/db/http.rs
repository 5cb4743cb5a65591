//! The voters' endpoint: one authenticated `GET /v1/view` over plain HTTP/1.1 on tokio.
//!
//! Authentication is a shared secret (a file, the same on every voter, mode 0600), used as an
//! HMAC-SHA256 key in both directions, so the secret never crosses the wire and a forged or
//! replayed message is rejected (a forged "primary unreachable" vote could otherwise trigger a
//! promotion, and a replayed request would let anyone who once captured one keep reading the
//! views):
//! * the client picks a fresh random nonce `N`, takes its clock `T` (unix milliseconds) and
//!   sends `GET /v1/view?nonce=N&ts=T` with `X-Heir-Auth: HMAC(secret, "req|" N "|" T)`;
//! * the server answers 401 unless the MAC verifies, `T` is within [`REPLAY_WINDOW_MS`] of its
//!   own clock and `N` was not seen within that window ([`ReplayGuard`]). The window bounds
//!   how long a nonce must be remembered; the voters' clocks must agree to well within it
//!   (NTP), or every request is refused as stale;
//! * it signs its body with `X-Heir-Sig: HMAC(secret, "resp|" N "|" body)`; the client checks
//!   it, so an answer recorded for another request (another nonce) is rejected too.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type HmacSha256 = Hmac<Sha256>;

const MAX_HEAD: usize = 8 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// How far a request's timestamp may be from the server's clock, either way. Short, so a
/// captured request is soon useless and little must be remembered; long against the skew of
/// NTP-synchronised hosts and a slow network.
pub const REPLAY_WINDOW_MS: u64 = 30_000;

/// Bound of the nonce memory. Normal traffic (two nodes and an occasional `db status`, each
/// about once a second) keeps ~100 nonces within the window; only holders of the secret can
/// add any (the MAC is checked first). Past the bound new requests are refused rather than the
/// memory grown without limit, or old nonces forgotten early, which would let them be replayed.
const MAX_NONCES: usize = 100_000;

/// The shared secret.
#[derive(Clone)]
pub struct Secret(Arc<Vec<u8>>);

impl Secret {
    /// Read the secret from a file that only its owner may access (see
    /// [`crate::private_file::read`]).
    pub fn from_file(path: &std::path::Path) -> Result<Secret> {
        let raw = crate::private_file::read(path, "shared secret")?;
        Secret::new(raw.trim().as_bytes())
            .with_context(|| format!("shared secret {}", path.display()))
    }

    pub fn new(bytes: &[u8]) -> Result<Secret> {
        if bytes.len() < 16 {
            bail!("the shared secret must be at least 16 characters");
        }
        Ok(Secret(Arc::new(bytes.to_vec())))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut m = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts every key length"),
        };
        for p in parts {
            m.update(p);
        }
        m
    }

    pub fn sign(&self, parts: &[&[u8]]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }

    /// Constant-time comparison of a hex signature.
    pub fn verify(&self, parts: &[&[u8]], sig_hex: &str) -> bool {
        match hex::decode(sig_hex.trim()) {
            Ok(sig) => self.mac(parts).verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// The nonces of admitted requests, each until its request would be stale anyway: one per
/// [`serve`], shared by its connections.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    nonces: HashSet<String>,
    /// (last server time, unix ms, at which the nonce's request is still fresh; nonce): the
    /// order in which they may be forgotten, so pruning costs only what it removes (a full
    /// scan per request would be quadratic under a flood up to [`MAX_NONCES`]).
    by_expiry: BTreeSet<(u64, String)>,
}

impl ReplayGuard {
    /// Admit a request (its MAC already verified) sent at `ts_ms` by the client's clock, at
    /// `now_ms` by ours; remember its nonce. Err: the reason, for the 401 body.
    pub fn admit(&self, nonce: &str, ts_ms: u64, now_ms: u64) -> Result<(), &'static str> {
        if ts_ms.abs_diff(now_ms) > REPLAY_WINDOW_MS {
            return Err("stale request");
        }
        // Both sets stay consistent whatever panicked while holding the lock.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // A pruned nonce's request is stale by the check above, so forgetting it is safe.
        while seen.by_expiry.first().is_some_and(|(t, _)| *t < now_ms) {
            if let Some((_, old)) = seen.by_expiry.pop_first() {
                seen.nonces.remove(&old);
            }
        }
        if seen.nonces.contains(nonce) {
            return Err("replayed request");
        }
        if seen.nonces.len() >= MAX_NONCES {
            return Err("too many requests");
        }
        let fresh_until = ts_ms.saturating_add(REPLAY_WINDOW_MS);
        seen.nonces.insert(nonce.to_string());
        seen.by_expiry.insert((fresh_until, nonce.to_string()));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(seen.nonces.len(), seen.by_expiry.len());
        seen.nonces.len()
    }
}

/// Unix time in milliseconds (0 before 1970: such a clock makes every request stale).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A nonce as the client makes them (hex), bounded so the nonce memory is too.
fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Check a request for `target` (`/v1/view?nonce=N&ts=T`) with its `X-Heir-Auth` value: the
/// MAC first (so strangers cannot fill the nonce memory), then freshness. Ok: the nonce.
fn authorize<'a>(
    target: &'a str,
    auth: Option<&str>,
    secret: &Secret,
    guard: &ReplayGuard,
    now_ms: u64,
) -> Result<&'a str, &'static str> {
    let nonce = query_param(target, "nonce").unwrap_or_default();
    let ts = query_param(target, "ts").unwrap_or_default();
    let ts_ms = ts
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| ts.parse::<u64>().ok())
        .flatten();
    let authed = valid_nonce(nonce)
        && ts_ms.is_some()
        && auth.is_some_and(|sig| {
            secret.verify(&[b"req|", nonce.as_bytes(), b"|", ts.as_bytes()], sig)
        });
    match ts_ms {
        Some(ts_ms) if authed => guard.admit(nonce, ts_ms, now_ms).map(|()| nonce),
        _ => Err("bad or missing X-Heir-Auth"),
    }
}

/// The raw request for a view: the client's, and what a replay test captures.
fn view_request(host_port: &str, secret: &Secret, nonce: &str, ts_ms: u64) -> String {
    let ts = ts_ms.to_string();
    let auth = secret.sign(&[b"req|", nonce.as_bytes(), b"|", ts.as_bytes()]);
    format!(
        "GET /v1/view?nonce={nonce}&ts={ts} HTTP/1.1\r\nHost: {host_port}\r\nX-Heir-Auth: {auth}\r\nConnection: close\r\n\r\n"
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, q) = target.split_once('?')?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Read up to the end of the header block.
async fn read_head(s: &mut TcpStream) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            bail!("header block too large");
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the end of the headers");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serve `GET /v1/view` with the JSON produced by `view` until the process ends.
pub async fn serve<F>(listen: SocketAddr, secret: Secret, view: F) -> Result<()>
where
    F: Fn() -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    crate::log::info(&format!("voter endpoint on http://{listen}/v1/view"));
    let view = Arc::new(view);
    let guard = Arc::new(ReplayGuard::default());
    tokio::spawn(async move {
        loop {
            let (mut sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    crate::log::warn(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let secret = secret.clone();
            let view = view.clone();
            let guard = guard.clone();
            tokio::spawn(async move {
                let res = tokio::time::timeout(Duration::from_secs(3), async {
                    let (head, _) = read_head(&mut sock).await?;
                    let first = head.lines().next().unwrap_or_default();
                    let mut parts = first.split_whitespace();
                    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
                    let path = target.split('?').next().unwrap_or_default();
                    let (status, body, sig) = if method != Some("GET") || path != "/v1/view" {
                        ("404 Not Found", b"not found\n".to_vec(), None)
                    } else {
                        let auth = header(&head, "x-heir-auth");
                        match authorize(target, auth, &secret, &guard, unix_ms()) {
                            Err(why) => ("401 Unauthorized", format!("{why}\n").into_bytes(), None),
                            Ok(nonce) => {
                                let body = view();
                                let sig = secret.sign(&[b"resp|", nonce.as_bytes(), b"|", &body]);
                                ("200 OK", body, Some(sig))
                            }
                        }
                    };
                    let mut resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    if let Some(sig) = sig {
                        resp.push_str(&format!("X-Heir-Sig: {sig}\r\n"));
                    }
                    resp.push_str("\r\n");
                    sock.write_all(resp.as_bytes()).await?;
                    sock.write_all(&body).await?;
                    sock.shutdown().await?;
                    anyhow::Ok(())
                })
                .await;
                if let Ok(Err(e)) = res {
                    crate::log::warn(&format!("voter endpoint: request from {peer}: {e:#}"));
                }
            });
        }
    });
    Ok(())
}

/// Fetch and verify a voter's view. `url` is `http://host:port` (any path is replaced).
pub async fn fetch(url: &str, secret: &Secret, timeout: Duration) -> Result<Vec<u8>> {
    tokio::time::timeout(timeout, fetch_inner(url, secret))
        .await
        .map_err(|_| anyhow!("{url}: no answer within {timeout:?}"))?
}

fn host_port(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?}: voter URLs look like http://HOST:PORT"))?;
    let hp = rest.split('/').next().unwrap_or_default();
    if !hp.contains(':') {
        bail!("{url:?}: the port is required (http://HOST:PORT)");
    }
    Ok(hp.to_string())
}

async fn fetch_inner(url: &str, secret: &Secret) -> Result<Vec<u8>> {
    let hp = host_port(url)?;
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mut s = TcpStream::connect(&hp)
        .await
        .with_context(|| format!("connecting to {hp}"))?;
    // The clock is read after connecting, so a slow connect does not eat into the window.
    let req = view_request(&hp, secret, &nonce, unix_ms());
    s.write_all(req.as_bytes()).await?;
    let (head, mut body) = read_head(&mut s).await?;
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
        if body.len() > MAX_BODY {
            bail!("{hp}: answer too large");
        }
    }
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{hp}: {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    if let Some(len) = header(&head, "content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.truncate(len);
    }
    let sig = header(&head, "x-heir-sig").ok_or_else(|| anyhow!("{hp}: unsigned answer"))?;
    if !secret.verify(&[b"resp|", nonce.as_bytes(), b"|", &body], sig) {
        bail!("{hp}: answer signature does not verify (different shared secret?)");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let s = Secret::new(b"0123456789abcdef0123").unwrap();
        let sig = s.sign(&[b"req|", b"n1"]);
        assert!(s.verify(&[b"req|", b"n1"], &sig));
        assert!(!s.verify(&[b"req|", b"n2"], &sig));
        assert!(!s.verify(&[b"req|", b"n1"], "zz"));
        let other = Secret::new(b"another-secret-of-len").unwrap();
        assert!(!other.verify(&[b"req|", b"n1"], &sig));
        assert!(Secret::new(b"short").is_err());
    }

    #[test]
    fn parses_urls_and_queries() {
        assert_eq!(host_port("http://10.0.0.1:7433").unwrap(), "10.0.0.1:7433");
        assert_eq!(host_port("http://h:1/v1/view").unwrap(), "h:1");
        assert!(host_port("https://h:1").is_err());
        assert!(host_port("http://h").is_err());
        assert_eq!(query_param("/v1/view?a=1&nonce=ab", "nonce"), Some("ab"));
        assert_eq!(query_param("/v1/view", "nonce"), None);
    }

    const NONCE: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn replay_guard_admits_a_fresh_nonce_once() {
        let g = ReplayGuard::default();
        assert_eq!(g.admit(NONCE, NOW, NOW), Ok(()));
        assert_eq!(g.admit(NONCE, NOW, NOW + 1), Err("replayed request"));
        // Another nonce at the same time is fine.
        assert_eq!(g.admit("fedcba9876543210", NOW, NOW + 1), Ok(()));
    }

    #[test]
    fn replay_guard_refuses_stale_and_future_timestamps() {
        let g = ReplayGuard::default();
        let w = REPLAY_WINDOW_MS;
        assert_eq!(g.admit("n-old", NOW - w - 1, NOW), Err("stale request"));
        assert_eq!(g.admit("n-future", NOW + w + 1, NOW), Err("stale request"));
        assert_eq!(g.admit("n-edge-old", NOW - w, NOW), Ok(()));
        assert_eq!(g.admit("n-edge-future", NOW + w, NOW), Ok(()));
        assert_eq!(g.admit("n-zero", 0, NOW), Err("stale request"));
        assert_eq!(g.admit("n-max", u64::MAX, NOW), Err("stale request"));
        assert_eq!(g.len(), 2, "refused requests are not remembered");
    }

    #[test]
    fn replay_guard_forgets_nonces_after_the_window() {
        let g = ReplayGuard::default();
        let w = REPLAY_WINDOW_MS;
        assert_eq!(g.admit(NONCE, NOW, NOW), Ok(()));
        // Until its request is stale the nonce is remembered ...
        assert_eq!(g.admit("other-1", NOW + w, NOW + w), Ok(()));
        assert_eq!(g.len(), 2);
        assert_eq!(g.admit(NONCE, NOW, NOW + w), Err("replayed request"));
        // ... then the next insert prunes it, and its request is refused as stale instead.
        assert_eq!(g.admit("other-2", NOW + w + 1, NOW + w + 1), Ok(()));
        assert_eq!(g.len(), 2);
        assert_eq!(g.admit(NONCE, NOW, NOW + w + 1), Err("stale request"));
        // A nonce whose timestamp was ahead of our clock is kept until that request is stale.
        assert_eq!(g.admit("ahead", NOW + 2 * w, NOW + w + 2), Ok(()));
        assert_eq!(
            g.admit("ahead", NOW + 2 * w, NOW + 3 * w),
            Err("replayed request")
        );
    }

    #[test]
    fn replay_guard_is_bounded() {
        let g = ReplayGuard::default();
        for i in 0..MAX_NONCES {
            assert_eq!(g.admit(&format!("n{i}"), NOW, NOW), Ok(()));
        }
        assert_eq!(g.admit("one-more", NOW, NOW), Err("too many requests"));
        assert_eq!(g.len(), MAX_NONCES);
        // Once the window has passed the memory empties and requests are admitted again.
        let later = NOW + REPLAY_WINDOW_MS + 1;
        assert_eq!(g.admit("one-more", later, later), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn authorize_checks_mac_then_freshness() {
        let s = Secret::new(b"0123456789abcdef0123").unwrap();
        let g = ReplayGuard::default();
        let req = view_request("h:1", &s, NONCE, NOW);
        let target = req.split_whitespace().nth(1).unwrap().to_string();
        let auth = header(&req, "x-heir-auth").map(str::to_string);
        let auth = auth.as_deref();
        assert_eq!(authorize(&target, auth, &s, &g, NOW), Ok(NONCE));
        let ok = |t: &str, a: Option<&str>, now| authorize(t, a, &s, &g, now).map(|_| ());
        assert_eq!(ok(&target, auth, NOW), Err("replayed request"));
        // The MAC covers the timestamp: moving it (to look fresh) breaks the MAC.
        let moved = target.replace(&NOW.to_string(), &(NOW + 1).to_string());
        let bad = Err("bad or missing X-Heir-Auth");
        assert_eq!(ok(&moved, auth, NOW), bad);
        assert_eq!(ok(&target, None, NOW), bad);
        let no_ts = format!("/v1/view?nonce={NONCE}");
        let old_style = s.sign(&[b"req|", NONCE.as_bytes()]);
        assert_eq!(ok(&no_ts, Some(&old_style), NOW), bad);
        // A short nonce is refused even with a valid MAC.
        let short = view_request("h:1", &s, "abc", NOW);
        let (t, a) = (
            short.split_whitespace().nth(1).unwrap(),
            header(&short, "x-heir-auth"),
        );
        assert_eq!(ok(t, a, NOW), bad);
        // An old request with a valid MAC is stale and leaves no trace in the memory.
        let g2 = ReplayGuard::default();
        let req = view_request("h:1", &s, NONCE, NOW - REPLAY_WINDOW_MS - 1);
        let (t, a) = (
            req.split_whitespace().nth(1).unwrap(),
            header(&req, "x-heir-auth"),
        );
        assert_eq!(authorize(t, a, &s, &g2, NOW), Err("stale request"));
        assert_eq!(g2.len(), 0);
    }

    /// Send raw request bytes, return the whole answer.
    async fn raw_exchange(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn round_trip_and_rejections() {
        let secret = Secret::new(b"round-trip-secret-123").unwrap();
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        serve(addr, secret.clone(), || b"{\"ok\":true}".to_vec())
            .await
            .unwrap();
        let url = format!("http://{addr}");
        let body = fetch(&url, &secret, Duration::from_secs(2)).await.unwrap();
        assert_eq!(body, b"{\"ok\":true}");
        let wrong = Secret::new(b"wrong-secret-456789").unwrap();
        let err = fetch(&url, &wrong, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("401"), "{err:#}");

        // A captured request is answered once; its replay is refused.
        let hp = addr.to_string();
        let req = view_request(&hp, &secret, NONCE, unix_ms());
        let first = raw_exchange(addr, req.as_bytes()).await;
        assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
        assert!(first.contains("X-Heir-Sig: "), "{first}");
        let again = raw_exchange(addr, req.as_bytes()).await;
        assert!(again.starts_with("HTTP/1.1 401 "), "{again}");
        assert!(again.ends_with("replayed request\n"), "{again}");
        // A validly signed request from outside the window is refused as stale.
        let old = unix_ms() - REPLAY_WINDOW_MS - 1_000;
        let req = view_request(&hp, &secret, "00112233445566778899aabbccddeeff", old);
        let stale = raw_exchange(addr, req.as_bytes()).await;
        assert!(stale.starts_with("HTTP/1.1 401 "), "{stale}");
        assert!(stale.ends_with("stale request\n"), "{stale}");
        // The client still works after all that.
        let body = fetch(&url, &secret, Duration::from_secs(2)).await.unwrap();
        assert_eq!(body, b"{\"ok\":true}");
    }

    #[test]
    fn secret_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("heir-secret-test-{}", std::process::id()));
        std::fs::write(&path, "a-secret-of-20-chars\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", Secret::from_file(&path).err().unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ok = Secret::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        let p = path.display();
        assert!(err.contains(&format!("{p} has mode 0644")), "{err}");
        assert!(err.contains(&format!("chmod 600 {p}")), "{err}");
        let ok = ok.unwrap();
        assert!(ok.verify(
            &[b"x"],
            &Secret::new(b"a-secret-of-20-chars").unwrap().sign(&[b"x"])
        ));
    }
}
