//! The ledger's endpoint: a small HTTP server on the controller (outside every component under
//! test) to which the workload's tasks `POST /event` one ledger line each. A line that does not
//! parse as an [`Event`] is refused with 400, so a broken task shows up at once; accepted lines
//! are appended (and flushed) before the 200, so an acknowledged event is on disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::ledger::Event;

/// The largest event accepted (a ledger line is ~200 bytes).
const MAX_BODY: usize = 16 * 1024;

/// Serves until the process ends; each connection is handled on its own thread.
pub fn serve(listener: TcpListener, file: &Path) -> Result<(), String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let out = Arc::new(Mutex::new(out));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let out = out.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &out);
        });
    }
    Ok(())
}

fn respond(mut s: &TcpStream, code: u16, text: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Error",
    };
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

fn handle(stream: TcpStream, out: &Mutex<std::fs::File>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut r = BufReader::new(&stream);
    let mut request = String::new();
    r.read_line(&mut request)?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    if !request.starts_with("POST /event ") {
        return respond(&stream, 404, "POST /event only\n");
    }
    if len > MAX_BODY {
        return respond(&stream, 413, "event too large\n");
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let line = String::from_utf8_lossy(&body).trim().to_string();
    if let Err(e) = serde_json::from_str::<Event>(&line) {
        return respond(&stream, 400, &format!("not a ledger event: {e}\n"));
    }
    {
        let mut f = out.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(f, "{line}")?;
        f.flush()?;
    }
    respond(&stream, 200, "ok\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(addr: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn events_are_appended_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.jsonl");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let f = file.clone();
        std::thread::spawn(move || serve(listener, &f));
        let ev = r#"{"phase":"start","dag":"d","run":"r","task":"t","try":1,"host":"w1","t":1.5,"uid":"u1"}"#;
        assert_eq!(post(&addr, "/event", ev), "HTTP/1.1 200 OK");
        assert_eq!(
            post(&addr, "/event", "{\"phase\":1}"),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(post(&addr, "/other", ev), "HTTP/1.1 404 Not Found");
        let events = crate::ledger::load(&file).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].uid, "u1");
    }
}
