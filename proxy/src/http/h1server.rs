//! HTTP/1.1 from clients on the proxy's own codec (`crate::h1`): requests without a body are
//! read, run through the phases and answered here, in the connection's task, with the read
//! buffer given back whenever the connection waits for its next request (an idle keep-alive
//! connection holds no buffer). Anything else — a request with a body, an upgrade, an
//! `Expect`, HTTP/2's preface — is handed to hyper's server with the bytes read so far, which
//! then serves the rest of the connection. The differential tests of `crate::h1` hold both
//! readers to the same reading of the same bytes.
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::{Request, Version, header};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    sync::watch,
};
use tracing::debug;

use super::ctx::{ClientBody, ConnInfo, ProxyBody, WorkerCtx};
use crate::h1::{self, BodyKind, H1Error, Limits};

/// What the own server leaves when it stops serving a connection.
pub enum Ended {
    /// The connection is over (closed, timed out, stopped, or the client broke the protocol).
    Closed,
    /// Hyper's server takes over: the bytes read and not yet served come first.
    HandOver(Bytes),
}

/// The first bytes of HTTP/2 with prior knowledge (`PRI * HTTP/2.0`).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much is read from a client at once.
const READ_CHUNK: usize = 4096;

/// Serves requests on `io` until the connection ends or a request needs hyper's server.
pub async fn serve<S>(
    io: &mut S,
    info: &Arc<ConnInfo>,
    worker: &Arc<WorkerCtx>,
    stop: &mut watch::Receiver<bool>,
    server: &crate::config::ServerConfig,
    limits: Limits,
    h2c: bool,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        // 1. A head: the idle timeout while nothing came, the header-read timeout from the
        //    first byte of it; a stop ends a connection between requests.
        let head = match read_head(io, &mut buf, stop, server, &limits, h2c).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ended::Closed,
            Err(Next::HandOver) => return Ended::HandOver(buf.freeze()),
            // A request the codec refuses, hyper's server refuses too (the differential tests):
            // it answers it as it always has (status, bytes, the ban rules' count).
            Err(Next::Refuse(e)) => {
                debug!(peer = %info.peer, "refused a request head: {e}");
                return Ended::HandOver(buf.freeze());
            }
        };
        let (head, len) = head;
        let Ok(framing) = h1::request_framing(&head) else {
            return Ended::HandOver(buf.freeze());
        };
        // 2. What the own server does not serve goes to hyper, this request included.
        if framing.body != BodyKind::Empty
            || framing.upgrade
            || head.values(&header::EXPECT).next().is_some()
        {
            return Ended::HandOver(buf.freeze());
        }
        buf.advance(len);
        let asked = {
            let request = h1::RequestInfo::new(&head, &framing);
            Asked {
                method: head.method.clone(),
                version: head.version,
                // A stopping server answers, then closes (hyper's graceful shutdown).
                keep_alive: request.keep_alive && !*stop.borrow(),
                te_trailers: request.te_trailers,
            }
        };
        let mut req = Request::new(ClientBody::Empty);
        *req.headers_mut() = head.framed_header_map(&framing);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.target;
        *req.version_mut() = head.version;
        // 3. The phases (boxed: the request path's future is several KiB, and the
        //    connection's future is what an idle connection holds). Interim answers from
        //    the upstream (103 Early Hints) are written as they come, for HTTP/1.1 clients.
        info.interim.want(asked.version == Version::HTTP_11);
        let mut request = Box::pin(super::phases::handle(req, info.clone(), worker.clone()));
        let resp = loop {
            let polled = std::future::poll_fn(|cx| match request.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending if info.interim.is_pending() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            // Interim answers first (the final one may have come in the same read).
            if info.interim.is_pending() {
                for head in info.interim.take() {
                    if let Err(e) = write_within(io, &head, server.send_timeout).await {
                        debug!(peer = %info.peer, "writing an interim answer failed: {e}");
                        info.interim.want(false);
                        return Ended::Closed;
                    }
                }
            }
            if let Some(r) = polled {
                break r.unwrap_or_else(|never| match never {});
            }
        };
        info.interim.want(false);
        // 4. The answer.
        let kept = match respond(io, &mut out, resp, &asked, server.send_timeout).await {
            Ok(kept) => kept,
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    // The client read nothing of the response for send_timeout.
                    worker.shared.metrics.send_timeouts.inc();
                }
                debug!(peer = %info.peer, "writing a response failed: {e}");
                return Ended::Closed;
            }
        };
        if !kept {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
        // An idle connection holds no buffers (nginx frees its buffers between requests too):
        // what a busy connection pays is an allocation per request.
        if buf.is_empty() {
            buf = BytesMut::new();
            out = Vec::new();
        }
    }
}

enum Next {
    HandOver,
    Refuse(H1Error),
}

type Head = (h1::RequestHead, usize);

async fn read_head<S>(
    io: &mut S,
    buf: &mut BytesMut,
    stop: &mut watch::Receiver<bool>,
    server: &crate::config::ServerConfig,
    limits: &Limits,
    h2c: bool,
) -> Result<Option<Head>, Next>
where
    S: AsyncRead + Unpin,
{
    // The header-read timeout runs from the head's first byte (bytes already read count).
    let mut head_started = (!buf.is_empty()).then(tokio::time::Instant::now);
    loop {
        if !buf.is_empty() {
            if h2c && (buf.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(buf)) {
                if buf.len() >= H2_PREFACE.len() {
                    return Err(Next::HandOver);
                }
            } else if let Some(head) = h1::parse_request(buf, limits).map_err(Next::Refuse)? {
                return Ok(Some(head));
            }
        }
        let deadline = match head_started {
            None => tokio::time::Instant::now() + server.idle_timeout,
            Some(t) => t + server.header_read_timeout,
        };
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            r = io.read_buf(buf) => r,
            () = tokio::time::sleep_until(deadline) => {
                debug!("closing a connection: no complete request head in time");
                return Ok(None);
            }
            _ = stop.changed(), if buf.is_empty() => return Ok(None),
        };
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {
                head_started.get_or_insert_with(tokio::time::Instant::now);
            }
        }
    }
}

/// What the answer depends on in the request (kept when the head moves into the request).
struct Asked {
    method: hyper::Method,
    version: Version,
    keep_alive: bool,
    te_trailers: bool,
}

/// Writes `resp` (head, then body) to the client as hyper's server would
/// (`h1::respond`); whether the connection stays open.
async fn respond<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    resp: hyper::Response<ProxyBody>,
    asked: &Asked,
    send: Duration,
) -> io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    use crate::h1::{BodyHint, RequestInfo, ResponseBodyEncoder, response_head, with_date};
    out.clear();
    let (parts, mut body) = resp.into_parts();
    let info = RequestInfo {
        method: &asked.method,
        version: asked.version,
        keep_alive: asked.keep_alive,
        te_trailers: asked.te_trailers,
    };
    let planned = with_date(|date| {
        response_head(
            &info,
            parts.version,
            parts.status,
            &parts.headers,
            BodyHint::of(&body),
            date,
            out,
        )
    });
    let plan = match planned {
        Ok(plan) => plan,
        Err(H1Error::UnwritableStatus) => {
            // What hyper writes instead (a 500), then the connection closes.
            write_within(io, out, send).await?;
            return Ok(false);
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    let mut encoder = ResponseBodyEncoder::new(&plan);
    while !encoder.is_done() {
        // What is ready goes out together (the head and a short body in one write); when the
        // body must wait for more, what was written so far goes to the client first.
        let ready =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let next = match ready {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    write_within(io, out, send).await?;
                    out.clear();
                }
                body.frame().await
            }
        };
        match next {
            None => {
                encoder.end(out).map_err(io::Error::other)?;
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => encoder
                    .data(&data, body.is_end_stream(), out)
                    .map_err(io::Error::other)?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        encoder
                            .trailers(&parts.headers, &trailers, out)
                            .map_err(io::Error::other)?;
                    }
                }
            },
        }
        if out.len() >= 16 * 1024 {
            write_within(io, out, send).await?;
            out.clear();
        }
    }
    write_within(io, out, send).await?;
    Ok(encoder.keep_alive())
}

/// Writes all of `data`, failing when the client reads nothing for `send_timeout`.
async fn write_within<S>(io: &mut S, data: &[u8], send: Duration) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut rest = data;
    while !rest.is_empty() {
        let n = tokio::time::timeout(send, io.write(rest))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "send_timeout"))??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        rest = &rest[n..];
    }
    tokio::time::timeout(send, io.flush())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "send_timeout"))?
}

/// A connection with bytes already read put back in front, for hyper's server.
pub struct Rewind<S> {
    pre: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(pre: Bytes, inner: S) -> Self {
        Self { pre, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
