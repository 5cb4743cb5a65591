//! The voters' endpoint: one authenticated `GET /v1/view` over plain HTTP/1.1 on tokio.
//!
//! Authentication is a shared secret (a file, the same on every voter), used as an HMAC-SHA256
//! key in both directions, so the secret never crosses the wire and a forged or replayed answer
//! is rejected (a forged "primary unreachable" vote could otherwise trigger a promotion):
//! * the client picks a fresh random nonce and sends `X-Heir-Auth: HMAC(secret, "req|" nonce)`;
//! * the server answers only a valid request, and signs its body with
//!   `X-Heir-Sig: HMAC(secret, "resp|" nonce "|" body)`; the client verifies it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type HmacSha256 = Hmac<Sha256>;

const MAX_HEAD: usize = 8 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// The shared secret.
#[derive(Clone)]
pub struct Secret(Arc<Vec<u8>>);

impl Secret {
    pub fn from_file(path: &std::path::Path) -> Result<Secret> {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("reading the shared secret {}", path.display()))?;
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
            tokio::spawn(async move {
                let res = tokio::time::timeout(Duration::from_secs(3), async {
                    let (head, _) = read_head(&mut sock).await?;
                    let first = head.lines().next().unwrap_or_default();
                    let mut parts = first.split_whitespace();
                    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
                    let nonce = query_param(target, "nonce").unwrap_or_default();
                    let path = target.split('?').next().unwrap_or_default();
                    let authed = nonce.len() >= 16
                        && header(&head, "x-heir-auth")
                            .is_some_and(|sig| secret.verify(&[b"req|", nonce.as_bytes()], sig));
                    let (status, body, sig) = if method != Some("GET") || path != "/v1/view" {
                        ("404 Not Found", b"not found\n".to_vec(), None)
                    } else if !authed {
                        ("401 Unauthorized", b"bad or missing X-Heir-Auth\n".to_vec(), None)
                    } else {
                        let body = view();
                        let sig = secret.sign(&[b"resp|", nonce.as_bytes(), b"|", &body]);
                        ("200 OK", body, Some(sig))
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
    let auth = secret.sign(&[b"req|", nonce.as_bytes()]);
    let mut s = TcpStream::connect(&hp)
        .await
        .with_context(|| format!("connecting to {hp}"))?;
    let req = format!(
        "GET /v1/view?nonce={nonce} HTTP/1.1\r\nHost: {hp}\r\nX-Heir-Auth: {auth}\r\nConnection: close\r\n\r\n"
    );
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
    }
}
