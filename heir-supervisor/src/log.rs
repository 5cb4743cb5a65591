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
