//! Helpers for the end-to-end tests: a packet builder for `BPF_PROG_TEST_RUN` fixtures, network
//! namespaces and processes that clean up after themselves (guards with `Drop`), and a tiny
//! HTTP client that runs inside a namespace.
pub mod client;
pub mod etcd;
pub mod harness;
pub mod http;
pub mod netns;
pub mod packet;
pub mod process;

/// Fails (never skips) unless the tests run as root: the kernel tests must run in CI.
///
/// # Panics
///
/// If the effective user is not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests need root (they load eBPF programs and make network namespaces); run `cargo xtask test` as root"
    );
}

/// A short id unique to this test process and call, for namespace, interface and instance names.
pub fn unique_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n}", std::process::id() % 0xffff)
}
