//! A response body that streams to the client and, as it passes, fills a cache entry: the
//! first byte goes out as soon as the origin sends it, and the object is stored when the
//! last byte has passed. Too large, failed or abandoned bodies are not stored; in every case
//! the fill lock is released, so waiting requests go on.
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use crate::upstream::client::{BoxError, UpstreamBody};

use super::{Cache, FillGuard, Object, Stats};

/// What is needed to store the object once its body is complete.
pub struct Pending {
    pub cache: std::sync::Arc<Cache>,
    pub key: String,
    /// The request headers (for the `Vary` secondary key).
    pub request: hyper::HeaderMap,
    /// The object, without its body yet.
    pub object: Object,
    pub max_bytes: usize,
    pub lock: Option<FillGuard>,
}

pub struct StoreBody {
    inner: UpstreamBody,
    fill: Option<(Pending, BytesMut)>,
}

impl StoreBody {
    #[must_use]
    pub fn new(inner: UpstreamBody, pending: Pending) -> Self {
        let expected = inner
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(pending.max_bytes);
        Self {
            inner,
            fill: Some((pending, BytesMut::with_capacity(expected))),
        }
    }

    fn abandon(&mut self) {
        if let Some((p, _)) = self.fill.take() {
            Stats::inc(&p.cache.stats.not_stored);
        }
    }

    fn finish(&mut self) {
        let Some((mut p, buf)) = self.fill.take() else {
            return;
        };
        let declared = p
            .object
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n != buf.len()) {
            Stats::inc(&p.cache.stats.not_stored);
            return;
        }
        p.object.body = buf.freeze();
        p.cache.insert(&p.key, &p.request, p.object);
        // The lock is released after the insert: waiters find the entry.
        drop(p.lock);
    }
}

impl Body for StoreBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(data), Some((p, buf))) = (frame.data_ref(), this.fill.as_mut()) {
                    if buf.len() + data.len() > p.max_bytes {
                        this.abandon();
                    } else {
                        buf.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.abandon();
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for StoreBody {
    fn drop(&mut self) {
        // The client went away before the end: nothing is stored (the lock is released).
        if self.inner.is_end_stream() {
            self.finish();
        } else {
            self.abandon();
        }
    }
}
