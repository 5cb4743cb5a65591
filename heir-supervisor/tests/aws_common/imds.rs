//! A small IMDSv2 responder: the instance metadata the `aws` floating-IP driver reads (region,
//! MAC, the ENI of a MAC) and instance-profile credentials, answered per caller by its source
//! address, as EC2 answers each instance with its own data on 169.254.169.254.
//!
//! IMDSv2 as EC2 serves it: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//! hands out a session token (and echoes the TTL); every `GET` must carry it in
//! `X-aws-ec2-metadata-token` (401 otherwise); a path this instance does not have is a 404.
//! One request per connection (`Connection: close`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Temporary credentials of an IAM role (what an instance profile serves).
#[derive(Clone, Debug)]
pub struct RoleCreds {
    pub role: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
}

/// What one caller (one "instance") sees.
#[derive(Clone, Debug)]
pub struct Instance {
    pub region: String,
    /// MAC of its (only) network interface, lower case.
    pub mac: String,
    /// `interface-id` of that MAC.
    pub eni: String,
    pub creds: RoleCreds,
}

#[derive(Default)]
struct State {
    instances: HashMap<IpAddr, Instance>,
    tokens: HashSet<String>,
    /// Callers whose connections are closed unanswered (a metadata service out of reach).
    silenced: HashSet<IpAddr>,
    /// (caller, method path, status), in order.
    served: Vec<(IpAddr, String, u16)>,
}

pub struct Imds {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Imds {
    /// Serve on `listener` (bound beforehand, so that its address can go into the environment
    /// before anything else runs).
    pub fn start(listener: std::net::TcpListener) -> Imds {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                let Ok((conn, peer)) = listener.accept().await else {
                    continue;
                };
                n += 1;
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, peer, st, n).await;
                });
            }
        });
        Imds { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `caller` sees from now on.
    pub fn set(&self, caller: IpAddr, i: Instance) {
        self.state.lock().unwrap().instances.insert(caller, i);
    }

    /// Close `caller`'s connections without an answer (`false`: answer again).
    pub fn silence(&self, caller: IpAddr, on: bool) {
        let mut st = self.state.lock().unwrap();
        if on {
            st.silenced.insert(caller);
        } else {
            st.silenced.remove(&caller);
        }
    }

    /// Requests of `caller` whose path starts with `prefix`, answered with `status`.
    pub fn served(&self, caller: IpAddr, prefix: &str, status: u16) -> usize {
        self.state
            .lock()
            .unwrap()
            .served
            .iter()
            .filter(|(c, p, s)| *c == caller && p.starts_with(prefix) && *s == status)
            .count()
    }

    pub fn log(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .served
            .iter()
            .map(|(c, p, s)| format!("{c} {p} -> {s}"))
            .collect()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    st: &mut State,
    caller: IpAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    n: u64,
) -> (u16, Vec<(String, String)>, String) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if method == "PUT" && path == "/latest/api/token" {
        let Some(ttl) = header("x-aws-ec2-metadata-token-ttl-seconds") else {
            return (400, vec![], "missing token TTL".into());
        };
        let token = format!("hf-imds-token-{n}-{}", std::process::id());
        st.tokens.insert(token.clone());
        let ttl = vec![(
            "x-aws-ec2-metadata-token-ttl-seconds".into(),
            ttl.to_string(),
        )];
        return (200, ttl, token);
    }
    if method != "GET" {
        return (405, vec![], String::new());
    }
    if !header("x-aws-ec2-metadata-token").is_some_and(|t| st.tokens.contains(t)) {
        return (401, vec![], String::new());
    }
    let Some(i) = st.instances.get(&caller) else {
        return (404, vec![], String::new());
    };
    let eni_path = format!(
        "/latest/meta-data/network/interfaces/macs/{}/interface-id",
        i.mac
    );
    let creds_path = "/latest/meta-data/iam/security-credentials/";
    let body = match path {
        "/latest/meta-data/placement/region" => i.region.clone(),
        "/latest/meta-data/mac" => i.mac.clone(),
        p if p == eni_path => i.eni.clone(),
        p if p == creds_path => i.creds.role.clone(),
        p if p.strip_prefix(creds_path) == Some(i.creds.role.as_str()) => {
            let now = chrono::Utc::now();
            let ts = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            serde_json::json!({
                "Code": "Success",
                "LastUpdated": ts(now),
                "Type": "AWS-HMAC",
                "AccessKeyId": i.creds.access_key_id,
                "SecretAccessKey": i.creds.secret_access_key,
                "Token": i.creds.token,
                "Expiration": ts(now + chrono::Duration::hours(6)),
            })
            .to_string()
        }
        _ => return (404, vec![], String::new()),
    };
    (200, vec![], body)
}

async fn serve(
    mut conn: TcpStream,
    peer: SocketAddr,
    st: Arc<Mutex<State>>,
    n: u64,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        let got = conn.read(&mut chunk).await?;
        if got == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..got]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 16 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let (status, extra, body) = {
        let mut st = st.lock().unwrap();
        if st.silenced.contains(&peer.ip()) {
            st.served.push((peer.ip(), format!("{method} {path}"), 0));
            return Ok(());
        }
        let a = answer(&mut st, peer.ip(), &method, &path, &headers, n);
        st.served.push((peer.ip(), format!("{method} {path}"), a.0));
        a
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}
