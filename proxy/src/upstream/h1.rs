//! HTTP/1.1 to upstream servers on the proxy's own codec (`crate::h1`), driven in the task of
//! the request that uses the connection: no connection task, no channel between tasks, the
//! response body read straight from the socket into the bytes handed to the client side.
//! Upgrade requests (WebSocket) and HTTP/2 keep hyper's client (`upstream::client`).
//!
//! A request goes out as hyper's client would send it (the differential tests of
//! `crate::h1` hold the codec to hyper's reading of the same bytes): the head as the request
//! path wrote it, framed by `Content-Length` when the body's length is known, else chunked
//! (none for GET, HEAD and CONNECT, as hyper). Interim (1xx) answers are skipped. A connection
//! goes back to the pool only when its response ended cleanly, both sides keep it alive, and
//! nothing followed the response.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::{
    Method, Request, Response,
    body::{Body, Frame, SizeHint},
    header::{self, HeaderMap, HeaderValue},
};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::client::{BoxError, ClientPool, Io, Key, UpBody};
use crate::h1::{self, BodyDecoder, BodyKind, ChunkedEncoder, H1Error, Limits};

/// How much is read from a server at once.
const READ_CHUNK: usize = 16 * 1024;

/// An open HTTP/1.1 connection to a server, idle or carrying one exchange.
pub struct H1Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet used (a connection goes back to the pool only with none).
    buf: BytesMut,
    /// The request head being written (kept between requests: no allocation per request).
    out: Vec<u8>,
}

impl H1Conn {
    #[must_use]
    pub fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// Gives the read and write buffers back (an idle connection beyond the warm ones).
    pub fn release_buffers(&mut self) {
        self.buf = BytesMut::new();
        self.out = Vec::new();
    }

    /// Whether an idle connection can carry another request: the server has not closed it
    /// and sent nothing unasked (checked without waiting).
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut read = tokio::io::ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut read),
            Poll::Pending
        )
    }
}

/// Where a connection goes when its response is over.
pub struct Return {
    pub pool: Arc<ClientPool>,
    pub key: Key,
    pub max_idle: usize,
    pub idle_timeout: std::time::Duration,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("writing the request failed: {0}")]
    Write(std::io::Error),
    #[error("reading the response failed: {0}")]
    Read(std::io::Error),
    #[error("the server closed the connection before a complete response head")]
    Closed,
    #[error("the server's response is not valid HTTP/1.1: {0}")]
    Invalid(H1Error),
    #[error("the request body failed: {0}")]
    Body(BoxError),
    #[error("the request cannot be written: {0}")]
    Request(H1Error),
}

impl SendError {
    /// The request's own body failed (the client's doing, as the body's state says).
    #[must_use]
    pub fn is_body(&self) -> bool {
        matches!(self, Self::Body(_))
    }
}

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body (or one of length 0).
    None,
    Length(u64),
    Chunked,
}

/// The request's framing as hyper's client sets it (its `set_length`): a known empty body
/// sends nothing more; a `Content-Length` already there is kept; a known length is written;
/// an unknown one goes chunked, except for GET, HEAD and CONNECT, which send no body.
fn framing(method: &Method, headers: &mut HeaderMap, body: &UpBody) -> Out {
    headers.remove(header::TRANSFER_ENCODING);
    if body.is_end_stream() {
        return Out::None;
    }
    let existing = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = existing {
        return if n == 0 { Out::None } else { Out::Length(n) };
    }
    if let Some(n) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return if n == 0 { Out::None } else { Out::Length(n) };
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        return Out::None;
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Out::Chunked
}

/// Sends `req` on `conn` and reads the response head; the body streams from the connection
/// as the client side reads it, and the connection goes to `back` when it is over.
pub async fn send(
    mut conn: H1Conn,
    req: Request<UpBody>,
    back: Option<Return>,
    interim: Option<&crate::http::ctx::Interim>,
) -> Result<Response<H1Body>, SendError> {
    let (mut parts, mut body) = req.into_parts();
    let out = framing(&parts.method, &mut parts.headers, &body);
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    let mut head = std::mem::take(&mut conn.out);
    head.clear();
    h1::write_request_head(&parts.method, target, &parts.headers, &mut head)
        .map_err(SendError::Request)?;
    let method = parts.method;
    let request_keeps = !connection_close(&parts.headers);
    if out == Out::None {
        conn.io.write_all(&head).await.map_err(SendError::Write)?;
        conn.out = head;
    } else if let Err(e) = write_body(&mut conn, head, &mut body, out).await {
        // A server may answer early (413, 401) and stop reading: its answer still counts.
        if e.is_body() || conn.buf.is_empty() && !early_answer(&mut conn).await {
            return Err(e);
        }
    }
    conn.io.flush().await.map_err(SendError::Write)?;
    let (head, decoder) = read_head(&mut conn, &method, interim).await?;
    let reusable = request_keeps && head.1;
    let mut resp = Response::new(H1Body {
        conn: Some(conn),
        decoder,
        reusable,
        back,
        trailers_sent: false,
    });
    *resp.status_mut() = head.0.status;
    *resp.version_mut() = head.0.version;
    *resp.headers_mut() = head.0.to_header_map();
    let body = resp.body_mut();
    // A response without a body is over at its head: the connection can go back at once.
    if body.decoder.is_done() {
        body.finish();
    }
    Ok(resp)
}

/// Whether a server that stopped reading the request body has an answer waiting.
async fn early_answer(conn: &mut H1Conn) -> bool {
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(100),
            tokio::io::AsyncReadExt::read_buf(&mut conn.io, &mut conn.buf)
        )
        .await,
        Ok(Ok(n)) if n > 0
    )
}

fn connection_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Writes the head, then the body as `out` frames it, then the chunked end.
async fn write_body(
    conn: &mut H1Conn,
    mut pending: Vec<u8>,
    body: &mut UpBody,
    out: Out,
) -> Result<(), SendError> {
    let mut encoder = (out == Out::Chunked).then(ChunkedEncoder::default);
    let mut left = match out {
        Out::Length(n) => n,
        _ => u64::MAX,
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(SendError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some(enc) = &mut encoder {
            enc.encode(&data, &mut pending);
        } else {
            // Never more than the length promised (the body wrappers enforce it; this keeps
            // the framing right whatever they do).
            let take = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
            pending.extend_from_slice(&data[..take]);
            left -= take as u64;
        }
        if pending.len() >= READ_CHUNK {
            conn.io
                .write_all(&pending)
                .await
                .map_err(SendError::Write)?;
            pending.clear();
        }
    }
    if let Some(enc) = encoder {
        enc.finish(None, &mut pending);
    }
    conn.io.write_all(&pending).await.map_err(SendError::Write)
}

/// Reads until the final response head; returns it with whether the server keeps the
/// connection, and the body's decoder. Interim 1xx answers go to `interim` (but `100
/// Continue`, which answers this hop's own request), or are skipped.
async fn read_head(
    conn: &mut H1Conn,
    method: &Method,
    interim: Option<&crate::http::ctx::Interim>,
) -> Result<((h1::ResponseHead, bool), BodyDecoder), SendError> {
    loop {
        if !conn.buf.is_empty()
            && let Some((head, n)) =
                h1::parse_response(&conn.buf, &Limits::UPSTREAM).map_err(SendError::Invalid)?
        {
            conn.buf.advance(n);
            if head.is_interim() {
                if let Some(sink) = interim.filter(|i| i.wanted())
                    && head.status != hyper::StatusCode::CONTINUE
                {
                    sink.push(h1::interim_head(&head));
                }
                continue;
            }
            let framing = h1::response_framing(&head, method).map_err(SendError::Invalid)?;
            let keeps = head.keep_alive()
                && !framing.close_after
                && !framing.upgrade
                && framing.body != BodyKind::CloseDelimited;
            let decoder = if framing.upgrade {
                // Switched (unasked: upgrades use hyper's client): the request path refuses it.
                BodyKind::Empty.decoder(&Limits::UPSTREAM)
            } else {
                framing.body.decoder(&Limits::UPSTREAM)
            };
            return Ok(((head, keeps), decoder));
        }
        conn.buf.reserve(READ_CHUNK);
        let n = tokio::io::AsyncReadExt::read_buf(&mut conn.io, &mut conn.buf)
            .await
            .map_err(SendError::Read)?;
        if n == 0 {
            return Err(SendError::Closed);
        }
    }
}

/// A response body read from its connection as the client side asks for it.
pub struct H1Body {
    conn: Option<H1Conn>,
    decoder: BodyDecoder,
    /// Both sides keep the connection after this exchange.
    reusable: bool,
    back: Option<Return>,
    trailers_sent: bool,
}

impl H1Body {
    /// The body is over: the connection goes back to the pool when it may.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(back) = self.back.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            back.pool
                .put_h1(back.key, conn, back.max_idle, back.idle_timeout);
        }
    }
}

/// The trailer fields passed on: never those that frame, route or authorise a message
/// (RFC 9110 §6.5.1), which a later hop could mistake for headers.
fn allowed_trailers(t: &HeaderMap) -> HeaderMap {
    let mut out = t.clone();
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HOST,
        header::CONNECTION,
        header::TRAILER,
        header::TE,
        header::UPGRADE,
        header::AUTHORIZATION,
        header::SET_COOKIE,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CACHE_CONTROL,
    ] {
        out.remove(name);
    }
    out
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // Dropped once the reader saw the end: the connection is still good.
        if self.decoder.is_done() {
            self.finish();
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.decoder.is_done() {
                if !this.trailers_sent {
                    this.trailers_sent = true;
                    if let Some(t) = this.decoder.trailers().map(allowed_trailers) {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                }
                this.finish();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                let d = match this.decoder.decode(&conn.buf) {
                    Ok(d) => d,
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                };
                let used = conn.buf.split_to(d.consumed).freeze();
                if d.done && this.decoder.trailers().is_none() {
                    // Over: the connection goes back now (a reader that sees the end
                    // through `is_end_stream` does not ask again).
                    this.trailers_sent = true;
                    this.finish();
                }
                if !d.data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(used.slice(d.data)))));
                }
                continue;
            }
            conn.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(Ok(0)) => {
                    // The server closed: the end of a close-delimited body, else a cut one.
                    this.conn = None;
                    return match this.decoder.finish() {
                        Ok(()) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                    };
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done() && (self.trailers_sent || self.decoder.trailers().is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decoder {
            BodyDecoder::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{Empty, Full};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::upstream::client::WARM as WARM_FOR_TEST;

    fn boxed<B>(b: B) -> UpBody
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        b.map_err(Into::into).boxed()
    }

    #[test]
    fn request_framing_follows_hyper() {
        let mut h = HeaderMap::new();
        let empty = boxed(Empty::<Bytes>::new());
        assert_eq!(framing(&Method::POST, &mut h, &empty), Out::None);
        assert!(h.is_empty());
        let full = boxed(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(framing(&Method::POST, &mut h, &full), Out::Length(3));
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(framing(&Method::PUT, &mut h, &full), Out::Length(3));
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
    }

    /// A server on 127.0.0.1 that reads each request (head, and a body of `Content-Length`
    /// or chunked) and answers with the next canned bytes; returns every request it read.
    async fn server(
        answers: Vec<&'static [u8]>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            for answer in answers {
                let request = loop {
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        let total = if head.contains("transfer-encoding: chunked") {
                            find(&buf[end..], b"0\r\n\r\n").map(|i| end + i + 5)
                        } else {
                            (buf.len() >= end + 4 + len).then_some(end + 4 + len)
                        };
                        if let Some(total) = total {
                            break buf.drain(..total).collect::<Vec<u8>>();
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return seen;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                seen.push(request);
                if answer.is_empty() {
                    // Close without answering.
                    return seen;
                }
                s.write_all(answer).await.unwrap();
            }
            // Keep the connection open a moment (a reused connection must not be read as closed).
            tokio::time::sleep(Duration::from_millis(200)).await;
            seen
        });
        (addr, task)
    }

    /// Where a test's connection goes back to.
    fn back(pool: &Arc<ClientPool>, key: &Key) -> Return {
        Return {
            pool: pool.clone(),
            key: key.clone(),
            max_idle: 4,
            idle_timeout: Duration::from_mins(1),
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    async fn conn(addr: std::net::SocketAddr) -> H1Conn {
        H1Conn::new(Box::new(TcpStream::connect(addr).await.unwrap()))
    }

    fn get(path: &str) -> Request<UpBody> {
        Request::builder()
            .uri(path)
            .header("host", "origin.test")
            .body(boxed(Empty::<Bytes>::new()))
            .unwrap()
    }

    async fn body(resp: Response<H1Body>) -> (Bytes, Option<HeaderMap>) {
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn length_chunked_trailers_and_interim_answers() {
        let (addr, srv) = server(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\ncontent-length: 99\r\n\r\n",
        ])
        .await;
        let pool = Arc::new(ClientPool::default());
        let key: Key = ("p".into(), addr);
        // Interim answers go to the client side when it wants them (but 100 Continue).
        let interim = crate::http::ctx::Interim::default();
        interim.want(true);
        let resp = send(
            conn(addr).await,
            get("/one"),
            Some(back(&pool, &key)),
            Some(&interim),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(interim.is_pending());
        let heads = interim.take();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert_eq!(heads[0], "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n");
        assert_eq!(body(resp).await.0, "hello");
        // The connection went back to the pool and carries the second request.
        let reused = lock_own(&pool, &key).expect("pooled after a complete response");
        let resp = send(reused, get("/two"), Some(back(&pool, &key)), None)
            .await
            .unwrap();
        let (data, trailers) = body(resp).await;
        assert_eq!(data, "abcde");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-sum"], "5");
        assert!(
            !trailers.contains_key("content-length"),
            "framing fields never pass as trailers"
        );
        let seen = srv.await.unwrap();
        assert_eq!(seen.len(), 2, "both requests on one connection");
        assert!(seen[0].starts_with(b"GET /one HTTP/1.1\r\nhost: origin.test\r\n\r\n"));
    }

    fn lock_own(pool: &ClientPool, key: &Key) -> Option<H1Conn> {
        pool.take_for_test(key)
    }

    #[tokio::test]
    async fn bodies_go_out_framed_as_hyper_frames_them() {
        let (addr, srv) = server(vec![
            b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let pool = Arc::new(ClientPool::default());
        let key: Key = ("p".into(), addr);
        let post = Request::post("/known")
            .header("host", "h")
            .body(boxed(Full::new(Bytes::from_static(b"abc"))))
            .unwrap();
        let resp = send(conn(addr).await, post, Some(back(&pool, &key)), None)
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert!(body(resp).await.0.is_empty());
        // An unknown length goes chunked.
        let post = Request::post("/unknown")
            .header("host", "h")
            .body(boxed(Unsized(Some(Bytes::from_static(b"xy")))))
            .unwrap();
        let reused = lock_own(&pool, &key).expect("pooled");
        let resp = send(reused, post, None, None).await.unwrap();
        assert_eq!(resp.status(), 204);
        let seen = srv.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&seen[0]),
            "POST /known HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc"
        );
        assert_eq!(
            String::from_utf8_lossy(&seen[1]),
            "POST /unknown HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
        );
    }

    /// A body of unknown length (as a client's chunked body is).
    struct Unsized(Option<Bytes>);

    impl Body for Unsized {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn connections_that_cannot_be_reused_are_not_pooled() {
        // Close-delimited, `connection: close`, bytes after the response, HTTP/1.0.
        for answer in [
            &b"HTTP/1.1 200 OK\r\n\r\nuntil close"[..],
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ] {
            // The server answers, waits a moment, and closes (the end of a close-delimited body).
            let (addr, _srv) = server(vec![answer]).await;
            let pool = Arc::new(ClientPool::default());
            let key: Key = ("p".into(), addr);
            let back = Some(back(&pool, &key));
            let c = conn(addr).await;
            let task = tokio::spawn(async move {
                let resp = send(c, get("/"), back, None).await.unwrap();
                body(resp).await.0
            });
            let data = tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .unwrap()
                .unwrap();
            assert!(
                data.starts_with(b"ok") || data.starts_with(b"until"),
                "{data:?}"
            );
            assert!(
                pool.take_for_test(&key).is_none(),
                "{:?} must not be pooled",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn broken_answers_are_errors() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let (addr, _srv) = server(vec![answer]).await;
            let r = send(conn(addr).await, get("/"), None, None).await;
            assert!(
                matches!(r, Err(SendError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(answer)
            );
        }
        // Closed before any answer.
        let (addr, _srv) = server(vec![b""]).await;
        assert!(matches!(
            send(conn(addr).await, get("/"), None, None).await,
            Err(SendError::Closed)
        ));
        // A body cut short.
        let (addr, srv) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let resp = send(conn(addr).await, get("/"), None, None).await.unwrap();
        let reader = tokio::spawn(async move { resp.into_body().collect().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        srv.abort();
        let r = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_err(), "a body cut short is an error, not an end");
    }

    #[tokio::test]
    async fn head_responses_and_no_content_have_no_body() {
        let (addr, _srv) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 1000\r\n\r\n",
        ])
        .await;
        let pool = Arc::new(ClientPool::default());
        let key: Key = ("p".into(), addr);
        let head = Request::head("/")
            .header("host", "h")
            .body(boxed(Empty::<Bytes>::new()))
            .unwrap();
        let resp = send(conn(addr).await, head, Some(back(&pool, &key)), None)
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "1000");
        assert!(resp.body().is_end_stream());
        let reused = pool
            .take_for_test(&key)
            .expect("a HEAD answer is over at its head");
        let resp = send(reused, get("/"), None, None).await.unwrap();
        assert_eq!(resp.status(), 304);
        assert!(body(resp).await.0.is_empty());
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_not_reused() {
        let (addr, srv) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
        let pool = Arc::new(ClientPool::default());
        let key: Key = ("p".into(), addr);
        let resp = send(conn(addr).await, get("/"), Some(back(&pool, &key)), None)
            .await
            .unwrap();
        assert_eq!(body(resp).await.0, "ok");
        let mut idle = pool.take_for_test(&key).expect("pooled");
        assert!(idle.is_reusable(), "open and quiet: reusable");
        srv.await.unwrap(); // the server closes its end
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!idle.is_reusable(), "closed by the server: not reusable");
    }

    #[tokio::test]
    async fn a_reader_that_stops_at_the_end_still_returns_the_connection() {
        // hyper's server stops polling a body once `is_end_stream` says it is over.
        let (addr, _srv) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
        let pool = Arc::new(ClientPool::default());
        let key: Key = ("p".into(), addr);
        let mut resp = send(conn(addr).await, get("/"), Some(back(&pool, &key)), None)
            .await
            .unwrap();
        let frame = resp.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ok");
        assert!(resp.body().is_end_stream());
        assert!(
            pool.take_for_test(&key).is_some(),
            "pooled at the last byte"
        );
        // And when the body is only dropped at its end.
        let (addr, _srv) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
        let key: Key = ("q".into(), addr);
        drop(
            send(conn(addr).await, get("/"), Some(back(&pool, &key)), None)
                .await
                .unwrap(),
        );
        assert!(
            pool.take_for_test(&key).is_some(),
            "pooled on drop at the end"
        );
    }

    #[tokio::test]
    async fn the_pool_bounds_what_idle_connections_hold() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = ClientPool::default();
        let key: Key = ("p".into(), addr);
        let hour = Duration::from_hours(1);
        for _ in 0..WARM_FOR_TEST + 2 {
            let mut c = conn(addr).await;
            c.buf.reserve(READ_CHUNK);
            pool.put_h1(key.clone(), c, 100, hour);
        }
        // The last two put back were past the warm ones: no buffers kept.
        for _ in 0..2 {
            let c = pool.take_for_test(&key).unwrap();
            assert_eq!(c.buf.capacity(), 0);
        }
        assert!(pool.take_for_test(&key).unwrap().buf.capacity() >= READ_CHUNK);
        // Expired idle connections are closed when another one comes back.
        pool.put_h1(key.clone(), conn(addr).await, 100, Duration::ZERO);
        assert_eq!(pool.idle_for_test(&key), 1, "all the older ones expired");
    }
}
