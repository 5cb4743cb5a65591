//! The local monotonic clock, shared by the supervisor and its guard process.
//!
//! Deadlines cross a process boundary (supervisor → guard), so they are plain nanosecond
//! readings of `CLOCK_MONOTONIC`, which every process on the host reads identically and which
//! never jumps with wall-clock adjustments.

use std::time::Duration;

/// Current `CLOCK_MONOTONIC` reading in nanoseconds.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on
    // Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds of a duration, saturating.
pub fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Time left until a monotonic deadline (zero when it has passed).
pub fn until(deadline_ns: u64) -> Duration {
    Duration::from_nanos(deadline_ns.saturating_sub(mono_ns()))
}
