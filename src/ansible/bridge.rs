//! The bridge process: `bridge.py` under the installation's Python, one JSON request per line
//! and one answer per line, alive for the whole run (ansible-core imports once, not per task).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

const SCRIPT: &str = include_str!("bridge.py");

pub struct Bridge {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Bridge {
    pub fn start(python: &Path) -> Result<Bridge, String> {
        let shown = python.display();
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {shown} for the Ansible fallback: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("{shown}: no pipes to the Ansible bridge"));
        };
        let mut b = Bridge {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        b.answer()
            .map_err(|e| format!("{shown} cannot run the Ansible fallback: {e}"))?;
        Ok(b)
    }

    pub fn ask(&mut self, req: &Value) -> Result<Value, String> {
        writeln!(self.stdin, "{req}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("the Ansible bridge went away: {e}"))?;
        self.answer()
    }

    /// One answer: `{"ok": true, …}` or its `error`.
    fn answer(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading the Ansible bridge: {e}"))?;
        if n == 0 {
            return Err("the Ansible bridge exited".into());
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| format!("the Ansible bridge said {line:?}: {e}"))?;
        if v["ok"] == Value::Bool(true) {
            Ok(v)
        } else {
            Err(v["error"].as_str().unwrap_or("failed").to_string())
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
