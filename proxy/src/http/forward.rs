//! The mechanics under the send phase: the request body as it goes upstream (its fate
//! tracked, so a client's failure never counts against a server), one attempt on one server,
//! and the retry decision as a pure function.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{Request, Response, body::Body, http::request::Parts};

use super::{
    ctx::{ConnInfo, WorkerCtx},
    error::{ErrorKind, ProxyError},
};
use crate::upstream::{
    Upstream,
    client::{BoxError, ConnectError, ReadTimeout, UpBody, UpstreamBody, empty_body},
};

/// What became of a request body on its way upstream: still being sent, complete, or failed
/// by the client (too large, too slow, broken off). Only failures the upstream causes count
/// against a server's health, so the body's fate decides how a failed attempt is judged.
#[derive(Debug, Clone, Default)]
pub struct BodyState(Option<Arc<AtomicU8>>);

const BODY_SENDING: u8 = 0;
const BODY_DONE: u8 = 1;
const BODY_TOO_LARGE: u8 = 2;
const BODY_TOO_SLOW: u8 = 3;
const BODY_BROKEN: u8 = 4;

impl BodyState {
    /// A request without a body (complete from the start).
    #[must_use]
    pub fn bodiless() -> Self {
        Self(None)
    }

    fn get(&self) -> u8 {
        self.0
            .as_ref()
            .map_or(BODY_DONE, |s| s.load(Ordering::Relaxed))
    }

    #[must_use]
    pub fn is_bodiless(&self) -> bool {
        self.0.is_none()
    }

    /// Whether the whole body reached the upstream connection.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.get() == BODY_DONE
    }

    /// The client's part of a failure: the error it gets, when its body is what failed.
    #[must_use]
    pub fn client_fault(&self) -> Option<ProxyError> {
        let kind = match self.get() {
            BODY_TOO_LARGE => ErrorKind::BodyTooLarge,
            BODY_TOO_SLOW => ErrorKind::BodyTooSlow,
            BODY_BROKEN => ErrorKind::BodyBroken,
            _ => return None,
        };
        Some(kind.into())
    }
}

/// The request body as sent upstream, noting its fate in a [`BodyState`].
struct Watched {
    inner: UpBody,
    state: Arc<AtomicU8>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = crate::upstream::client::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.state.store(BODY_DONE, Ordering::Relaxed),
            std::task::Poll::Ready(Some(Err(e))) => {
                let fate = match ProxyError::from_body(e).map(|e| e.kind) {
                    Some(ErrorKind::BodyTooLarge) => BODY_TOO_LARGE,
                    Some(ErrorKind::BodyTooSlow) => BODY_TOO_SLOW,
                    _ => BODY_BROKEN,
                };
                self.state.store(fate, Ordering::Relaxed);
            }
            _ => {}
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

/// The client's request body as the upstream body (size and pace limits applied), and
/// where its fate is noted.
#[must_use]
pub fn upstream_body(
    body: super::ctx::ClientBody,
    limits: &crate::config::LimitsConfig,
) -> (UpBody, BodyState) {
    if body.is_end_stream() {
        return (empty_body(), BodyState::bodiless());
    }
    let paced = ReadTimeout::new(body, limits.body_read_timeout, limits.min_body_rate);
    let inner = if limits.max_body_bytes > 0 {
        Limited::new(
            paced,
            usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX),
        )
        .boxed()
    } else {
        paced.boxed()
    };
    let state = Arc::new(AtomicU8::new(BODY_SENDING));
    let watched = Watched {
        inner,
        state: state.clone(),
    };
    (watched.boxed(), BodyState(Some(state)))
}

/// How one attempt ended, as the retry decision and passive health see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status.
    Status(u16),
    /// No connection: nothing was sent.
    ConnectFailed,
    /// The connection broke, or the answer was not HTTP.
    Broken,
    /// No answer within the response timeout.
    TimedOut,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Give the client this answer.
    Deliver,
    /// Try another server (if the retry budget allows).
    Retry,
    /// Give up with the attempt's error.
    Fail,
}

/// The retry decision. `replayable`: the request may be sent twice (idempotent, and no body
/// that could be half-sent); `another`: attempts are left and a server not tried yet could be
/// picked (asked without touching the balancer). A connect failure sent nothing and is
/// always safe to retry; a 502/503/504 or a broken connection only for a replayable request;
/// a timeout never (the server may still be working on it).
#[must_use]
pub fn next_step(outcome: Outcome, replayable: bool, another: bool) -> Step {
    match outcome {
        Outcome::Status(502..=504) | Outcome::Broken if replayable && another => Step::Retry,
        Outcome::Status(_) => Step::Deliver,
        Outcome::ConnectFailed if another => Step::Retry,
        Outcome::ConnectFailed | Outcome::Broken | Outcome::TimedOut => Step::Fail,
    }
}

/// Whether an attempt counts against the server's health: connect failures, broken
/// connections, timeouts once the request body was complete (waiting on a client's body is
/// not the server's fault), and 5xx answers where the pool says so (`passive.on_5xx`).
#[must_use]
pub fn counts_against(outcome: Outcome, on_5xx: bool, body: &BodyState) -> bool {
    match outcome {
        Outcome::Status(s) => on_5xx && (500..600).contains(&s),
        Outcome::ConnectFailed | Outcome::Broken => true,
        Outcome::TimedOut => body.is_done(),
    }
}

/// The result of one attempt.
#[expect(
    clippy::large_enum_variant,
    reason = "a response moves a few times per request; boxing it would allocate on every one"
)]
pub enum Attempt {
    Response(Response<UpstreamBody>),
    ConnectFailed(ConnectError),
    Failed(BoxError),
    TimedOut,
}

/// One try on one server before `deadline`: connect (or reuse), then send. The body is only
/// handed over once a connection exists, so a connect failure keeps it for the next try;
/// `keep` keeps a copy of the head for a retry.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of the request an attempt may consume or keep, each on its own"
)]
pub async fn attempt(
    worker: &WorkerCtx,
    up: &Arc<Upstream>,
    addr: SocketAddr,
    conn: &ConnInfo,
    foreground: bool,
    parts: &mut Option<Parts>,
    keep: bool,
    body: &mut Option<UpBody>,
    deadline: Instant,
) -> Attempt {
    let upgrade = parts
        .as_ref()
        .is_some_and(|p| p.headers.contains_key(hyper::header::UPGRADE));
    let work = async {
        let connection = match worker
            .pool
            .acquire(up, addr, (conn.peer, conn.local), upgrade)
            .await
        {
            Ok(c) => c,
            Err(e) => return Attempt::ConnectFailed(e),
        };
        let Some(head) = (if keep { parts.clone() } else { parts.take() }) else {
            return Attempt::TimedOut;
        };
        let req_body = body.take().unwrap_or_else(empty_body);
        let interim = foreground.then_some(&conn.interim);
        match worker
            .pool
            .send(connection, Request::from_parts(head, req_body), interim)
            .await
        {
            Ok(resp) => Attempt::Response(resp),
            Err(e) => Attempt::Failed(e),
        }
    };
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .unwrap_or(Attempt::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_decision() {
        use Outcome as O;
        use Step as S;
        // (outcome, replayable, another server) -> step
        let table = [
            (O::Status(200), true, true, S::Deliver),
            (O::Status(404), true, true, S::Deliver),
            (O::Status(500), true, true, S::Deliver),
            (O::Status(502), true, true, S::Retry),
            (O::Status(503), true, true, S::Retry),
            (O::Status(504), true, true, S::Retry),
            (O::Status(503), false, true, S::Deliver),
            (O::Status(503), true, false, S::Deliver),
            (O::ConnectFailed, false, true, S::Retry),
            (O::ConnectFailed, true, false, S::Fail),
            (O::Broken, true, true, S::Retry),
            (O::Broken, false, true, S::Fail),
            (O::Broken, true, false, S::Fail),
            (O::TimedOut, true, true, S::Fail),
        ];
        for (outcome, replayable, another, want) in table {
            assert_eq!(
                next_step(outcome, replayable, another),
                want,
                "{outcome:?} replayable={replayable} another={another}"
            );
        }
    }

    #[test]
    fn only_server_faults_count_against_it() {
        let done = BodyState::bodiless();
        let sending = BodyState(Some(Arc::new(AtomicU8::new(BODY_SENDING))));
        assert!(counts_against(Outcome::ConnectFailed, false, &sending));
        assert!(counts_against(Outcome::Broken, false, &done));
        assert!(counts_against(Outcome::TimedOut, false, &done));
        assert!(!counts_against(Outcome::TimedOut, false, &sending));
        assert!(!counts_against(Outcome::Status(503), false, &done));
        assert!(counts_against(Outcome::Status(503), true, &done));
        assert!(!counts_against(Outcome::Status(404), true, &done));
        let too_large = BodyState(Some(Arc::new(AtomicU8::new(BODY_TOO_LARGE))));
        assert_eq!(
            too_large.client_fault().map(|e| e.status().as_u16()),
            Some(413)
        );
        assert!(done.client_fault().is_none());
    }
}
