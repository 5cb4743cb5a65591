//! heir-supervisor: Heirflow's succession supervisor.
//!
//! Rooms by concern: [`cli`] (arguments), [`registry`] (the SQL of members and leases),
//! [`rules`] (the pure succession decision), [`succession`] (the supervisor loop),
//! [`child`] (the guard process: process group, fencing), [`account`] (who the command runs as), [`news`] (AMQP publisher),
//! [`status`] and [`interface`] (read-only views), [`db`] (PostgreSQL failover),
//! [`pg_tls`] (PostgreSQL over TLS, DSN parsing).

pub mod account;
pub mod child;
pub mod cli;
pub mod clock;
pub mod db;
pub mod interface;
pub mod log;
pub mod news;
pub mod pg_tls;
pub mod private_file;
pub mod registry;
pub mod rules;
pub mod status;
pub mod succession;
pub mod vip;

/// This host's name (for the default member id and the registry).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
