//! `send_timeout` for one HTTP/2 stream: a client that keeps a stream's flow-control window
//! shut (zero window) while the rest of its connection moves stalls only that stream, so no
//! socket write ever blocks and the connection-level check cannot see it.
//!
//! hyper runs each HTTP/2 stream (the request handler, then the pipe that sends the response
//! body) as a task of its own, through the executor given to its server. [`StreamExecutor`]
//! runs each such task under a [`Watch`] (a task-local); the response body, wrapped by
//! [`watched`], notes when it handed hyper a frame that hyper has not yet taken the next one
//! after (hyper takes the next frame only once the window has room for the last). When that
//! lasts `send_timeout`, the task is dropped, which resets the stream (`RST_STREAM`), as
//! nginx's `send_timeout` closes a connection.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};

use super::ctx::ProxyBody;
use crate::clock::now_ms;

tokio::task_local! {
    static WATCH: Arc<Watch>;
}

/// Since when a stream's last frame has waited for the client's window (0: not waiting).
#[derive(Debug, Default)]
pub struct Watch {
    waiting_since: AtomicU64,
}

/// Spawns hyper's per-stream tasks with a send-timeout watchdog.
#[derive(Clone)]
pub struct StreamExecutor {
    pub send_timeout: Duration,
    pub metrics: Arc<crate::metrics::Global>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let watch = Arc::new(Watch::default());
        let dog = Watchdog {
            fut: Box::pin(fut),
            watch: watch.clone(),
            timeout_ms: u64::try_from(self.send_timeout.as_millis()).unwrap_or(u64::MAX),
            sleep: None,
            metrics: self.metrics.clone(),
        };
        crate::counters::spawn(WATCH.scope(watch, dog));
    }
}

struct Watchdog<F> {
    fut: Pin<Box<F>>,
    watch: Arc<Watch>,
    timeout_ms: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<crate::metrics::Global>,
}

impl<F: Future<Output = ()>> Future for Watchdog<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let since = self.watch.waiting_since.load(Ordering::Relaxed);
        if since == 0 {
            return Poll::Pending;
        }
        let deadline_ms = since.saturating_add(self.timeout_ms);
        let now = now_ms();
        if now >= deadline_ms {
            self.metrics.send_timeouts.inc();
            tracing::debug!("resetting an HTTP/2 stream: the client read nothing for send_timeout");
            // Dropping the stream's task resets the stream; the connection goes on.
            return Poll::Ready(());
        }
        let at = tokio::time::Instant::now() + Duration::from_millis(deadline_ms - now);
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        if let Some(s) = &mut self.sleep {
            // Registers the wake-up; the next poll re-checks the watch.
            let _ = s.as_mut().poll(cx);
        }
        Poll::Pending
    }
}

/// The response body, noting when it waits on the client; unchanged outside an HTTP/2 stream
/// task (HTTP/1 has the connection-level check).
pub fn watched(body: ProxyBody) -> ProxyBody {
    match WATCH.try_with(Arc::clone) {
        Ok(watch) => Watched { inner: body, watch }.boxed(),
        Err(_) => body,
    }
}

struct Watched {
    inner: ProxyBody,
    watch: Arc<Watch>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = crate::upstream::client::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::client::BoxError>>> {
        // Asked for the next frame: the last one went out.
        self.watch.waiting_since.store(0, Ordering::Relaxed);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(&polled, Poll::Ready(Some(Ok(f))) if f.is_data()) {
            self.watch
                .waiting_since
                .store(now_ms().max(1), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
