//! The one clock module: every time the proxy reads comes from here.
//!
//! - [`now_ms`]: coarse monotonic milliseconds since the process started
//!   (`CLOCK_MONOTONIC_COARSE`: no hardware clock read, a few milliseconds of resolution),
//!   for idle and send timeouts, health, budgets: read on every socket read and write.
//! - [`kernel_ns`]: the kernel's `CLOCK_MONOTONIC` in nanoseconds, the clock eBPF programs
//!   read (`bpf_ktime_get_ns`), for expiry times in shared maps. Inside a time namespace
//!   (a container that was checkpointed and restored, `unshare --time`) the process's own
//!   `CLOCK_MONOTONIC` is shifted by the namespace's offset while the programs' is not: the
//!   offset is taken back out, or bans would end early or never start.
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

/// `CLOCK_MONOTONIC` in nanoseconds as the kernel programs see it (this process's clock less
/// its time namespace's offset).
#[must_use]
pub fn kernel_ns() -> u64 {
    let own = i128::from(clock_ns(libc::CLOCK_MONOTONIC));
    u64::try_from((own - i128::from(time_namespace_offset_ns())).max(0)).unwrap_or(u64::MAX)
}

/// How far this process's `CLOCK_MONOTONIC` is ahead of the kernel's (its time namespace's
/// offset; 0 outside a time namespace or on kernels without them). Read once.
#[must_use]
pub fn time_namespace_offset_ns() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        // The file shows the offsets of the namespace this process's children get; they are
        // its own unless it unshared a namespace it did not enter (then no offset is known).
        let own = std::fs::read_link("/proc/self/ns/time");
        let children = std::fs::read_link("/proc/self/ns/time_for_children");
        if let (Ok(own), Ok(children)) = (&own, &children)
            && own != children
        {
            tracing::warn!(
                "this process's time namespace is not its children's: expiry times in the kernel maps may be off by the namespace's offset"
            );
            return 0;
        }
        std::fs::read_to_string("/proc/self/timens_offsets")
            .ok()
            .and_then(|text| monotonic_offset(&text))
            .unwrap_or(0)
    })
}

/// The `monotonic` line of `/proc/<pid>/timens_offsets` ("monotonic <secs> <nanos>"), in ns.
fn monotonic_offset(text: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "monotonic" {
            return None;
        }
        let secs: i64 = words.next()?.parse().ok()?;
        let nanos: i64 = words.next()?.parse().ok()?;
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    })
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
        let (a, b) = (now_ms(), kernel_ns());
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(now_ms() >= a + 20, "coarse clock moved {}", now_ms() - a);
        assert!(kernel_ns() > b + 20_000_000);
        assert!(wall_ms() > 1_700_000_000_000);
    }

    #[test]
    fn time_namespace_offsets_are_read_from_the_monotonic_line() {
        assert_eq!(
            monotonic_offset("monotonic           0         0\nboottime            0         0\n"),
            Some(0)
        );
        assert_eq!(
            monotonic_offset("monotonic        -100         5\nboottime    7 0\n"),
            Some(-99_999_999_995)
        );
        assert_eq!(
            monotonic_offset("boottime 3 0\nmonotonic 2 500\n"),
            Some(2_000_000_500)
        );
        assert_eq!(monotonic_offset("boottime 3 0\n"), None);
        assert_eq!(monotonic_offset("monotonic x 0\n"), None);
    }
}
