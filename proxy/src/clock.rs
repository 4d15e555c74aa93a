//! The one clock module: every time the proxy reads comes from here.
//!
//! - [`now_ms`]: coarse monotonic milliseconds since the process started
//!   (`CLOCK_MONOTONIC_COARSE`: no hardware clock read, a few milliseconds of resolution),
//!   for idle and send timeouts, health, budgets: read on every socket read and write.
//! - [`monotonic_ns`]: the kernel's `CLOCK_MONOTONIC` in nanoseconds, the clock eBPF programs
//!   read (`bpf_ktime_get_ns`), for expiry times in shared maps.
//! - [`wall_ms`]: Unix time in milliseconds, for state written to disk.
//! - `std::time::Instant` for latencies and request deadlines; `SystemTime` where HTTP dates
//!   are compared (the cache, RFC 9111).
use std::{
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`, a valid timespec; both clocks used here exist
    // on every Linux the proxy runs on (COARSE since 2.6.32).
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Coarse monotonic milliseconds since the process started (never 0 after the first call
/// plus a millisecond; compare, never store as an absolute time).
#[must_use]
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<u64> = OnceLock::new();
    let now = clock_ns(libc::CLOCK_MONOTONIC_COARSE);
    let epoch = *EPOCH.get_or_init(|| now);
    now.saturating_sub(epoch) / 1_000_000
}

/// `CLOCK_MONOTONIC` in nanoseconds, as the kernel programs see it.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Unix time in milliseconds.
#[must_use]
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let (a, b) = (now_ms(), monotonic_ns());
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(now_ms() >= a + 20, "coarse clock moved {}", now_ms() - a);
        assert!(monotonic_ns() > b + 20_000_000);
        assert!(wall_ms() > 1_700_000_000_000);
    }
}
