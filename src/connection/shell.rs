//! A long-lived `sh` on the host that runs a connection's scripts one after another.
//!
//! A new SSH session channel per script costs the host sshd's session setup plus a fork and
//! exec of the login shell, `sh` and `head`: 12–15 ms on a test host, most of what a task that
//! changes nothing takes. One channel per host and become user running [`LOOP`] instead costs a
//! script a subshell and one `head`.
//!
//! Protocol, host side: a header line `<script bytes> <payload bytes>`, the script, the payload.
//! The script runs in a subshell (its `exit`, `cd`, exports and traps end with it), its stdin
//! the payload, drained if the script stops reading early so that the next header is where the
//! loop expects it, or /dev/null. Then a marker line with the exit status on stdout and one on
//! stderr. The marker carries a random token of this shell, which no output can guess.
//!
//! A shell serves one script at a time: [`super::HostConn`] takes it from its pool and puts it
//! back only when both markers arrived. A script whose future is dropped midway takes its shell
//! with it: the channel closes and the loop ends at its next read.

use std::sync::Arc;

use openssh::{ChildStderr, ChildStdin, ChildStdout, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{as_user, quote, ExecResult};

/// The host-side loop; `TOKEN` is replaced by the shell's token.
const LOOP: &str = r#"while IFS=' ' read -r __hf_n __hf_p; do
__hf_s=$(head -c "$__hf_n")
if [ "$__hf_p" -gt 0 ]; then
head -c "$__hf_p" | { (eval "$__hf_s"); __hf_r=$?; cat >/dev/null; exit $__hf_r; }
else
(eval "$__hf_s") </dev/null
fi
printf '\n@@hfplay-done-TOKEN %d\n' $?
printf '\n@@hfplay-done-TOKEN\n' >&2
done"#;

/// One shell on the host, as the login user or (`user`) through sudo.
pub(super) struct Shell {
    pub user: Option<String>,
    child: openssh::Child<Arc<Session>>,
    stdin: ChildStdin,
    out: Stream<ChildStdout>,
    err: Stream<ChildStderr>,
    marker: Vec<u8>,
}

impl Shell {
    /// Opens a session channel running the loop (through `sudo -n -u user` when given).
    pub async fn start(session: Arc<Session>, user: Option<&str>) -> Result<Shell, openssh::Error> {
        let token = format!("{:016x}", rand::random::<u64>());
        let line = as_user(
            user,
            format!("sh -c {}", quote(&LOOP.replace("TOKEN", &token))),
        );
        let mut cmd = session.arc_raw_command(line);
        cmd.stdin(openssh::Stdio::piped());
        cmd.stdout(openssh::Stdio::piped());
        cmd.stderr(openssh::Stdio::piped());
        let mut child = cmd.spawn().await?;
        let missing = || openssh::Error::ChildIo(std::io::Error::other("no pipe to the shell"));
        let stdin = child.stdin().take().ok_or_else(missing)?;
        let out = child.stdout().take().ok_or_else(missing)?;
        let err = child.stderr().take().ok_or_else(missing)?;
        Ok(Shell {
            user: user.map(str::to_string),
            child,
            stdin,
            out: Stream::new(out),
            err: Stream::new(err),
            marker: format!("\n@@hfplay-done-{token}").into_bytes(),
        })
    }

    /// Runs one script, its stdin `payload`: its result and the shell, ready for the next one.
    /// `Err`: the shell ended first (the connection broke, sudo refused, the script killed
    /// it), with the shell's own exit status (255 when ssh saw none) and the output so far.
    /// Input is written while output is read, so a script that prints before reading all of
    /// its payload cannot deadlock.
    pub async fn run(
        mut self,
        script: &str,
        payload: &[u8],
    ) -> Result<(ExecResult, Shell), ExecResult> {
        let Shell {
            stdin,
            out,
            err,
            marker,
            ..
        } = &mut self;
        let write = async {
            let header = format!("{} {}\n", script.len(), payload.len());
            stdin.write_all(header.as_bytes()).await?;
            stdin.write_all(script.as_bytes()).await?;
            stdin.write_all(payload).await?;
            stdin.flush().await
        };
        let (_, o, e) = tokio::join!(write, out.until(marker), err.until(marker));
        match (o, e) {
            (Some((stdout, rc)), Some((stderr, _))) => match rc.parse() {
                Ok(rc) => {
                    let res = ExecResult {
                        rc,
                        stdout: lossy(stdout),
                        stderr: lossy(stderr),
                    };
                    Ok((res, self))
                }
                Err(_) => Err(self.end().await),
            },
            _ => Err(self.end().await),
        }
    }

    /// Has an idle shell ended (its loop killed on the host, say)? A pending read means no;
    /// output that came while idle (a background process a script left) is kept in front of
    /// the next script's.
    pub fn ended(&mut self) -> bool {
        use futures::FutureExt;
        // Polled once: a read that is not ready at once means the stream is still open.
        self.out.fill().now_or_never() == Some(false)
            || self.err.fill().now_or_never() == Some(false)
    }

    /// The shell's exit status and whatever output it left, once it ended.
    async fn end(self) -> ExecResult {
        let Shell {
            child,
            stdin,
            mut out,
            mut err,
            ..
        } = self;
        drop(stdin);
        let (_, _) = tokio::join!(out.rest(), err.rest());
        let rc = match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
            Ok(Ok(st)) => st.code().unwrap_or(255),
            _ => 255,
        };
        ExecResult {
            rc,
            stdout: lossy(out.buf),
            stderr: lossy(err.buf),
        }
    }

    /// Ends the loop (EOF on its stdin) and waits briefly for the channel to close.
    pub async fn close(self) {
        let Shell { child, stdin, .. } = self;
        drop(stdin);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
    }
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A stream of the shell's output, read up to each marker.
struct Stream<R> {
    r: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Stream<R> {
    fn new(r: R) -> Self {
        Stream { r, buf: Vec::new() }
    }

    /// The bytes before the next `marker` line and the rest of that line (`None`: the stream
    /// ended first; what came is left in `buf`).
    async fn until(&mut self, marker: &[u8]) -> Option<(Vec<u8>, String)> {
        let mut from = 0;
        loop {
            if let Some((out, tail)) = split_marker(&mut self.buf, marker, &mut from) {
                return Some((out, tail));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// One read appended to `buf`: `false` when the stream ended.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.r.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads to the end (bounded: a shell that ended has nothing more to say).
    async fn rest(&mut self) {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.r.read_to_end(&mut self.buf),
        )
        .await;
    }
}

/// When `buf` holds `marker` and the end of its line: the bytes before it and the rest of the
/// line (trimmed), both removed from `buf`. `from`: where the search resumes (bytes before it
/// were searched already).
fn split_marker(buf: &mut Vec<u8>, marker: &[u8], from: &mut usize) -> Option<(Vec<u8>, String)> {
    let Some(i) = buf[*from..].windows(marker.len()).position(|w| w == marker) else {
        *from = buf.len().saturating_sub(marker.len() - 1);
        return None;
    };
    let at = *from + i;
    let after = at + marker.len();
    let Some(nl) = buf[after..].iter().position(|b| *b == b'\n') else {
        *from = at;
        return None;
    };
    let tail = String::from_utf8_lossy(&buf[after..after + nl])
        .trim()
        .to_string();
    let out = buf[..at].to_vec();
    buf.drain(..after + nl + 1);
    *from = 0;
    Some((out, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_splits_output_and_keeps_what_follows() {
        let m = b"\n@@hfplay-done-ab";
        let mut buf = b"hello\nworld\n@@hfplay-done-ab 3\nnext".to_vec();
        let mut from = 0;
        let (out, tail) = split_marker(&mut buf, m, &mut from).unwrap();
        assert_eq!(out, b"hello\nworld");
        assert_eq!(tail, "3");
        assert_eq!(buf, b"next");
    }

    #[test]
    fn output_without_a_final_newline_is_kept_whole() {
        let m = b"\n@@hfplay-done-ab";
        let mut buf = b"no newline\n@@hfplay-done-ab 0\n".to_vec();
        let (out, _) = split_marker(&mut buf, m, &mut 0).unwrap();
        assert_eq!(out, b"no newline");
        let mut empty = b"\n@@hfplay-done-ab\n".to_vec();
        let (out, tail) = split_marker(&mut empty, m, &mut 0).unwrap();
        assert!(out.is_empty() && tail.is_empty());
    }

    #[test]
    fn a_marker_line_not_yet_complete_waits_for_more() {
        let m = b"\n@@hfplay-done-ab";
        let mut buf = b"x\n@@hfplay-done-ab 1".to_vec();
        let mut from = 0;
        assert!(split_marker(&mut buf, m, &mut from).is_none());
        assert_eq!(from, 1);
        let mut partial = b"abc\n@@hfplay-do".to_vec();
        let mut pf = 0;
        assert!(split_marker(&mut partial, m, &mut pf).is_none());
        partial.extend_from_slice(b"ne-ab 0\n");
        assert!(split_marker(&mut partial, m, &mut pf).is_some());
        buf.extend_from_slice(b"27\n");
        let (out, tail) = split_marker(&mut buf, m, &mut from).unwrap();
        assert_eq!((out.as_slice(), tail.as_str()), (&b"x"[..], "127"));
    }

    #[test]
    fn another_token_is_output() {
        let m = b"\n@@hfplay-done-ab";
        let mut buf = b"\n@@hfplay-done-cd 0\n".to_vec();
        assert!(split_marker(&mut buf, m, &mut 0).is_none());
    }
}
