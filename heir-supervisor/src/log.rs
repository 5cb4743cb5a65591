//! Minimal logging to stderr: one line per message, UTC timestamp, level.
//! Under systemd this lands in the journal; the supervisor logs each decision with its reason.

fn line(level: &str, msg: &str) {
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    eprintln!(
        "{ts} {level} heir-supervisor[{}]: {msg}",
        std::process::id()
    );
}

pub fn info(msg: &str) {
    line("INFO", msg);
}

pub fn warn(msg: &str) {
    line("WARN", msg);
}

pub fn error(msg: &str) {
    line("ERROR", msg);
}

/// Repeating failures of one thing (a voter, a probe) logged without flooding the journal:
/// the first failure and every change of message at once, then one reminder a minute while
/// it lasts, and one line when it works again.
#[derive(Default)]
pub struct Throttle {
    // key -> (last message, failing since, last logged)
    state: std::sync::Mutex<
        std::collections::HashMap<String, (String, std::time::Instant, std::time::Instant)>,
    >,
}

const REMIND_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Throttle {
    pub fn failed(&self, key: &str, msg: &str) {
        let now = std::time::Instant::now();
        let Ok(mut st) = self.state.lock() else {
            return warn(&format!("{key}: {msg}"));
        };
        match st.get_mut(key) {
            None => {
                warn(&format!("{key}: {msg}"));
                st.insert(key.to_string(), (msg.to_string(), now, now));
            }
            Some((last, since, logged)) => {
                if last != msg || now.duration_since(*logged) >= REMIND_EVERY {
                    warn(&format!(
                        "{key}: {msg} (failing for {} s)",
                        now.duration_since(*since).as_secs()
                    ));
                    *last = msg.to_string();
                    *logged = now;
                }
            }
        }
    }

    pub fn ok(&self, key: &str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if let Some((_, since, _)) = st.remove(key) {
            info(&format!(
                "{key}: answers again after {} s",
                since.elapsed().as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_remembers_failures_until_ok() {
        let t = Throttle::default();
        t.failed("voter a", "no answer");
        t.failed("voter a", "no answer");
        assert_eq!(t.state.lock().unwrap().len(), 1);
        t.failed("voter b", "refused");
        assert_eq!(t.state.lock().unwrap().len(), 2);
        t.ok("voter a");
        assert!(!t.state.lock().unwrap().contains_key("voter a"));
        t.ok("voter c"); // never failed: nothing to forget
        assert_eq!(t.state.lock().unwrap().len(), 1);
    }
}
