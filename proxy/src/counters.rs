//! Costs per request for `cargo xtask bench`: heap allocations and task polls. Only a build
//! with the `bench-counters` feature counts (a counting global allocator and a polling
//! wrapper on the tasks the request path spawns); every other build pays nothing and
//! reports none.
//!
//! The figures appear in `/metrics` as `proxy_bench_allocations_total` and
//! `proxy_bench_task_polls_total` in such a build.
use std::future::Future;

#[cfg(feature = "bench-counters")]
mod imp {
    use std::{
        alloc::{GlobalAlloc, Layout},
        pin::Pin,
        sync::atomic::{AtomicU64, Ordering},
        task::{Context, Poll},
    };

    pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
    pub static POLLS: AtomicU64 = AtomicU64::new(0);

    /// The proxy's allocator (mimalloc), counting allocations (reallocations count as one).
    pub struct Counting;

    // SAFETY: every call is passed unchanged to the system allocator; only a counter is added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the caller's contract for `alloc` is passed on as it is.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as for `alloc`.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, that is from `mimalloc::MiMalloc`, with `layout`.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `ptr` came from `mimalloc::MiMalloc` with `layout`; the caller's contract holds.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// A future whose polls are counted.
    pub struct Counted<F>(pub Pin<Box<F>>);

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            POLLS.fetch_add(1, Ordering::Relaxed);
            self.0.as_mut().poll(cx)
        }
    }
}

/// Spawns a task of the request path (a client connection, an upstream connection, an
/// HTTP/2 stream, a tunnel): with `bench-counters`, its polls are counted.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(feature = "bench-counters")]
    {
        tokio::spawn(imp::Counted(Box::pin(future)))
    }
    #[cfg(not(feature = "bench-counters"))]
    {
        tokio::spawn(future)
    }
}

/// (allocations, task polls) so far; `None` unless built with `bench-counters`.
#[must_use]
pub fn snapshot() -> Option<(u64, u64)> {
    #[cfg(feature = "bench-counters")]
    {
        use std::sync::atomic::Ordering;
        Some((
            imp::ALLOCATIONS.load(Ordering::Relaxed),
            imp::POLLS.load(Ordering::Relaxed),
        ))
    }
    #[cfg(not(feature = "bench-counters"))]
    {
        None
    }
}
