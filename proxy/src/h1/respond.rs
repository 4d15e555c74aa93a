//! Answering HTTP/1.x clients: the response head a server writes, how the body is framed, the
//! body's bytes, and whether the connection stays open, all decided the way hyper's HTTP/1
//! server (1.12: `proto/h1/role.rs` `Server::encode`, `conn.rs`, `encode.rs`) decides them,
//! so a connection served here looks to a client exactly as one served by hyper.
//!
//! - [`response_head`] writes the head for the response to one request and returns a
//!   [`ResponsePlan`]: the body's framing, whether the connection may stay open, whether
//!   trailers may be sent.
//! - [`ResponseBodyEncoder`] writes the body per the plan, with hyper's rules for a body that
//!   yields more or fewer bytes than the head announced.
//! - [`error_response`] is what hyper writes when a request head cannot be parsed.
//! - [`CachedDate`] and [`with_date`]: the `Date` value, formatted once a second, as hyper
//!   caches it.
//!
//! `proxy/tests/h1_respond_differential.rs` runs a table of requests and responses through
//! hyper's server and through this module and compares the bytes. The deliberate differences
//! (all of them refusals where hyper would write a head that contradicts itself or the body,
//! or panic) are listed there and on [`response_head`].
use std::{
    cell::RefCell,
    io::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper::{
    HeaderMap, Method, StatusCode, Version,
    body::Body,
    header::{
        AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
        CONTENT_TYPE, DATE, HOST, HeaderName, HeaderValue, MAX_FORWARDS, SET_COOKIE, TE, TRAILER,
        TRANSFER_ENCODING,
    },
};

use super::{
    BodyKind, ChunkHeader, ChunkedEncoder, Framing, H1Error, RequestHead,
    framing::{digits, ends_in_chunked},
    head::has_token,
};

/// What the response head depends on in the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// The request's method (`HEAD` and `CONNECT` change the framing).
    pub method: &'a Method,
    /// The request's version: an HTTP/1.0 request gets an HTTP/1.0 response, whatever the
    /// response's own version.
    pub version: Version,
    /// The connection may stay open after this exchange, as far as the request and the
    /// connection go: the request allows it ([`RequestHead::keep_alive`], and not both
    /// framing headers, [`Framing::close_after`]), and the server is not closing it anyway
    /// (a graceful shutdown, or a request body abandoned unread: hyper's `disable_keep_alive`
    /// and `close_read`). When `false`, an HTTP/1.1 response says `Connection: close`.
    pub keep_alive: bool,
    /// The request's `TE` has `trailers`: only then does hyper send trailers.
    pub te_trailers: bool,
}

impl<'a> RequestInfo<'a> {
    /// The information from a parsed request head and its framing ([`super::request_framing`]).
    /// `keep_alive` is the request's; clear it when the connection is closing for another
    /// reason.
    #[must_use]
    pub fn new(head: &'a RequestHead, framing: &Framing) -> Self {
        Self {
            method: &head.method,
            version: head.version,
            keep_alive: head.keep_alive() && !framing.close_after,
            te_trailers: head.values(&TE).any(|v| has_token(v, "trailers")),
        }
    }
}

/// What hyper looks at in a response body before writing the head: `Body::is_end_stream`
/// and `Body::size_hint().exact()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHint {
    /// The body's exact length, if it knows it.
    pub exact: Option<u64>,
    /// The body has nothing more to yield (checked first: an ended body is no body at all,
    /// whatever its length says).
    pub end_stream: bool,
}

impl BodyHint {
    /// A body with nothing in it.
    pub const EMPTY: Self = Self {
        exact: Some(0),
        end_stream: true,
    };

    /// The hint of `body`, as hyper reads it.
    #[must_use]
    pub fn of<B: Body>(body: &B) -> Self {
        Self {
            exact: body.size_hint().exact(),
            end_stream: body.is_end_stream(),
        }
    }
}

/// How to send the body of a response whose head was written, and what happens after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePlan {
    /// How the body is framed on the wire. [`BodyKind::Empty`]: no body bytes at all; the
    /// body is not read (hyper drops it unpolled). [`BodyKind::Length`]: exactly that many
    /// bytes. [`BodyKind::Chunked`]: the chunked coding. [`BodyKind::CloseDelimited`]: the
    /// bytes as they come, then the connection closes.
    pub body: BodyKind,
    /// The connection stays open for the next request once the body has been sent in full
    /// (a body shorter than announced still closes it: [`ResponseBodyEncoder::keep_alive`]).
    pub keep_alive: bool,
    /// Trailers may be sent: the body is chunked, the request's `TE` has `trailers`, and the
    /// response announced a `Trailer` header. Only the fields it names, and none of the
    /// fields that may not be trailers, are sent ([`ResponseBodyEncoder::trailers`]).
    pub trailers: bool,
}

/// hyper's `BodyLength`: `None` for a body that has ended before its head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Known(u64),
    Unknown,
}

/// Appends the head of a response to `req` to `out`, as hyper's HTTP/1 server writes it, and
/// returns how the body must be sent and whether the connection stays open.
///
/// - The status line has the request's version when that is HTTP/1.0, otherwise `version`
///   (the response's own: HTTP/1.0, or HTTP/1.1 for HTTP/1.1 and HTTP/2), the code, and the
///   canonical reason (`<none>` for codes without one).
/// - `headers` are written in their order, names lowercase, one line per value, except that
///   the values of `Connection`, `Transfer-Encoding` and `Trailer` are joined into one line
///   each (at the place of the first value).
/// - Keep-alive: an HTTP/1.0 request keeps the connection only with `keep-alive`; the
///   response then gets `Connection: keep-alive` unless it says so itself (an HTTP/1.0
///   response without it closes instead; an HTTP/2 one neither adds it nor closes). An
///   HTTP/1.1 response on a connection that will close gets `Connection: close` unless it
///   says so. A `close` in the response's `Connection` closes the connection too.
/// - Framing: a service's `Transfer-Encoding` makes the body chunked (`, chunked` is added
///   when it does not end in `chunked`), except on HTTP/1.0, for `HEAD`, a 2xx to `CONNECT`,
///   1xx, 204 and 304, where the header is dropped. A service's `Content-Length` is kept; the
///   body is then that long. Without either: an ended body (`end_stream`) gets
///   `Content-Length: 0`, a body of known length gets its `Content-Length`, a body of unknown
///   length is chunked (HTTP/1.1) or delimited by the close (HTTP/1.0). No body bytes, and no
///   added `Content-Length: 0`, for `HEAD`, 1xx, 204, 304 and a 2xx to `CONNECT` (a `HEAD`
///   response still announces a known length). An ended body's `Content-Length` is dropped,
///   except for `HEAD`.
/// - `Trailer` is dropped where the body cannot be chunked.
/// - `Date` (the value in `date`, from [`CachedDate`]) comes last, unless `headers` has one.
///
/// Errors, where nothing is appended and hyper writes nothing either, closing the connection
/// (hyper's "user header" error): [`H1Error::UnwritableFraming`] for `Content-Length` and
/// `Transfer-Encoding` together, `Content-Length` values that differ or are not a number on a
/// body of unknown length, and a framing header on a 2xx to `CONNECT`;
/// [`H1Error::UnwritableVersion`] for a response version other than HTTP/1.0, 1.1 and 2 to an
/// HTTP/1.1 request (hyper panics).
///
/// [`H1Error::UnwritableStatus`] for a 1xx other than 101: hyper's server cannot send one, and
/// writes `HTTP/1.1 500 Internal Server Error` with no header but its framing and `Date`
/// instead; those bytes ARE appended, and the connection must close after them.
///
/// Deliberately stricter than hyper (which trusts the header and writes it, framing the body
/// by the body's own length, so the head lies; debug builds of hyper panic):
/// [`H1Error::UnwritableFraming`] also for a `Content-Length` that is not the length of a body
/// of known length (any value goes for an empty body of known length to `HEAD`).
///
/// Nothing is allocated but room in `out`.
pub fn response_head(
    req: &RequestInfo<'_>,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    body: BodyHint,
    date: &[u8],
    out: &mut Vec<u8>,
) -> Result<ResponsePlan, H1Error> {
    let method = Some(req.method);
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        encode(
            &Encode {
                method,
                version: Version::HTTP_11,
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: &HeaderMap::new(),
                extra_connection: None,
                body: None,
                is_last: true,
                wrote_len: false,
                te_trailers: false,
                date,
            },
            out,
        )?;
        return Err(H1Error::UnwritableStatus);
    }
    let mut keep_alive = req.keep_alive;
    let says = |token| {
        headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v, token))
    };
    // hyper's `Conn::enforce_version` and `fix_keep_alive`.
    let (version, extra) = if req.version == Version::HTTP_10 {
        let mut extra = None;
        if !says("keep-alive") {
            match version {
                Version::HTTP_10 => keep_alive = false,
                Version::HTTP_11 if keep_alive => extra = Some("keep-alive"),
                _ => {}
            }
        }
        (Version::HTTP_10, extra)
    } else {
        let version = match version {
            Version::HTTP_10 => Version::HTTP_10,
            Version::HTTP_11 | Version::HTTP_2 => Version::HTTP_11,
            _ => return Err(H1Error::UnwritableVersion),
        };
        (version, (!keep_alive && !says("close")).then_some("close"))
    };
    let extra = extra.map(HeaderValue::from_static);
    let connect_tunnel = *req.method == Method::CONNECT && status.is_success();
    encode(
        &Encode {
            method,
            version,
            status,
            headers,
            extra_connection: extra.as_ref(),
            body: if body.end_stream {
                None
            } else {
                Some(body.exact.map_or(Length::Unknown, Length::Known))
            },
            is_last: status == StatusCode::SWITCHING_PROTOCOLS || connect_tunnel || !keep_alive,
            wrote_len: connect_tunnel,
            te_trailers: req.te_trailers,
            date,
        },
        out,
    )
}

/// Appends what hyper's server writes when it cannot parse a request head, before it closes
/// the connection: `status` (from [`H1Error::status`]: 400, 414 or 431), no body. `version` is
/// the version of the last request head parsed on this connection, HTTP/1.1 if none was: an
/// HTTP/1.0 one (a keep-alive connection) makes the status line HTTP/1.0, without
/// `Connection: close`. hyper writes nothing for a connection that ends in the middle of a
/// head, a head that times out, or an HTTP/2 preface.
pub fn error_response(version: Version, status: StatusCode, date: &[u8], out: &mut Vec<u8>) {
    let close = HeaderValue::from_static("close");
    let http10 = version == Version::HTTP_10;
    let written = encode(
        &Encode {
            method: None,
            version: if http10 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            },
            status,
            headers: &HeaderMap::new(),
            extra_connection: (!http10).then_some(&close),
            body: None,
            is_last: true,
            wrote_len: false,
            te_trailers: false,
            date,
        },
        out,
    );
    debug_assert!(written.is_ok(), "a head without headers is always writable");
}

/// One call of hyper's `Server::encode`, after `enforce_version`.
struct Encode<'a> {
    /// `None` for an answer to a request that could not be parsed.
    method: Option<&'a Method>,
    /// HTTP/1.0 or HTTP/1.1, as the status line says.
    version: Version,
    status: StatusCode,
    headers: &'a HeaderMap,
    /// A value hyper appends to the `Connection` header (a new one at the end if there is none).
    extra_connection: Option<&'a HeaderValue>,
    body: Option<Length>,
    is_last: bool,
    /// Framing headers are already out of the question (a 2xx to `CONNECT`).
    wrote_len: bool,
    te_trailers: bool,
    date: &'a [u8],
}

/// Writes the head (rewinding `out` on error) and returns the plan.
fn encode(e: &Encode<'_>, out: &mut Vec<u8>) -> Result<ResponsePlan, H1Error> {
    let start = out.len();
    let result = encode_inner(e, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_inner(e: &Encode<'_>, out: &mut Vec<u8>) -> Result<ResponsePlan, H1Error> {
    let reason = e.status.canonical_reason().unwrap_or("<none>");
    out.reserve(64 + reason.len() + e.headers.len() * 32 + e.date.len());
    out.extend_from_slice(if e.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(e.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");

    let mut w = Fields {
        e,
        out,
        encoder: BodyKind::Empty,
        is_last: e.is_last,
        wrote_len: e.wrote_len,
        wrote_date: false,
        trailer: false,
        name_written: false,
        must_write_chunked: false,
        prev_len: None,
    };
    // hyper adds the extra `Connection` value to the map: after the values of an existing
    // `Connection` (joined into its line), or as a new header at the end.
    let has_connection = e.headers.contains_key(CONNECTION);
    let mut prev: Option<&HeaderName> = None;
    for (name, value) in e.headers {
        if prev != Some(name) {
            if let Some(extra) = e.extra_connection.filter(|_| prev == Some(&CONNECTION)) {
                w.field(&CONNECTION, extra)?;
            }
            w.end_line();
            prev = Some(name);
        }
        w.field(name, value)?;
    }
    if let Some(extra) = e.extra_connection {
        if prev == Some(&CONNECTION) {
            w.field(&CONNECTION, extra)?;
        } else if !has_connection {
            w.end_line();
            w.field(&CONNECTION, extra)?;
        }
    }
    w.end_line();

    let (method, status) = (e.method, e.status);
    if !w.wrote_len {
        w.encoder = match e.body {
            Some(Length::Unknown) => {
                if e.version == Version::HTTP_10 || !can_chunked(method, status) {
                    BodyKind::CloseDelimited
                } else {
                    w.out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    BodyKind::Chunked
                }
            }
            None | Some(Length::Known(0)) => {
                if can_have_content_length(method, status) && method != Some(&Method::HEAD) {
                    w.out.extend_from_slice(b"content-length: 0\r\n");
                }
                BodyKind::Empty
            }
            Some(Length::Known(len)) => {
                if can_have_content_length(method, status) {
                    w.out.extend_from_slice(b"content-length: ");
                    let _ = write!(w.out, "{len}");
                    w.out.extend_from_slice(b"\r\n");
                    BodyKind::Length(len)
                } else {
                    BodyKind::Empty
                }
            }
        };
    }
    if !can_chunked(method, status) {
        w.encoder = BodyKind::Empty;
    }
    if !w.wrote_date {
        w.out.extend_from_slice(b"date: ");
        w.out.extend_from_slice(e.date);
        w.out.extend_from_slice(b"\r\n");
    }
    w.out.extend_from_slice(b"\r\n");
    let body = w.encoder;
    Ok(ResponsePlan {
        body,
        keep_alive: !w.is_last && body != BodyKind::CloseDelimited,
        trailers: body == BodyKind::Chunked && w.trailer && e.te_trailers,
    })
}

/// The header loop of hyper's `Server::encode_headers`.
#[expect(
    clippy::struct_excessive_bools,
    reason = "the flags of hyper's `encode_headers`, one for one, to read the two side by side"
)]
struct Fields<'e, 'o> {
    e: &'e Encode<'e>,
    out: &'o mut Vec<u8>,
    encoder: BodyKind,
    is_last: bool,
    wrote_len: bool,
    wrote_date: bool,
    /// A `Trailer` line was written (with a value that is text).
    trailer: bool,
    /// A joined line (`Connection`, `Transfer-Encoding`, `Trailer`, `Content-Length`) is open:
    /// its CRLF comes when the next name starts.
    name_written: bool,
    must_write_chunked: bool,
    prev_len: Option<u64>,
}

impl Fields<'_, '_> {
    /// The end of one name's values: closes a joined line.
    fn end_line(&mut self) {
        if self.name_written {
            if self.must_write_chunked {
                self.out.extend_from_slice(b", chunked\r\n");
            } else {
                self.out.extend_from_slice(b"\r\n");
            }
            self.name_written = false;
        }
        // hyper never resets this, so every joined line after a `Transfer-Encoding` that does
        // not end in `chunked` gets `, chunked` too (`Connection: close, chunked`); only the
        // `Transfer-Encoding` line gets it here.
        self.must_write_chunked = false;
    }

    /// Starts a joined line with `prefix` (`name: `) and `value`, or adds `, value` to it.
    fn joined(&mut self, prefix: &[u8], value: &HeaderValue) {
        if self.name_written {
            self.out.extend_from_slice(b", ");
        } else {
            self.out.extend_from_slice(prefix);
            self.name_written = true;
        }
        self.out.extend_from_slice(value.as_bytes());
    }

    fn field(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), H1Error> {
        let (method, status) = (self.e.method, self.e.status);
        match *name {
            CONTENT_LENGTH => {
                if self.wrote_len && !self.name_written {
                    return Err(H1Error::UnwritableFraming);
                }
                match self.e.body {
                    Some(Length::Known(known)) => {
                        let head_of_nothing = method == Some(&Method::HEAD) && known == 0;
                        if !head_of_nothing && digits(value.as_bytes()) != Some(known) {
                            return Err(H1Error::UnwritableFraming);
                        }
                        if !self.name_written {
                            self.encoder = length(known);
                            self.joined(b"content-length: ", value);
                            self.wrote_len = true;
                        }
                        return Ok(());
                    }
                    Some(Length::Unknown) => {
                        let len = digits(value.as_bytes()).ok_or(H1Error::UnwritableFraming)?;
                        match self.prev_len {
                            Some(prev) if prev != len => return Err(H1Error::UnwritableFraming),
                            Some(_) => {}
                            None => {
                                self.encoder = length(len);
                                self.joined(b"content-length: ", value);
                                self.wrote_len = true;
                                self.prev_len = Some(len);
                            }
                        }
                        return Ok(());
                    }
                    // An ended body: the header is dropped, except for HEAD, where it is a
                    // plain line (and a second one is refused, as above).
                    None if method != Some(&Method::HEAD) => return Ok(()),
                    None => self.wrote_len = true,
                }
            }
            TRANSFER_ENCODING => {
                if self.wrote_len && !self.name_written {
                    return Err(H1Error::UnwritableFraming);
                }
                if self.e.version == Version::HTTP_10 || !can_chunked(method, status) {
                    return Ok(());
                }
                self.wrote_len = true;
                self.must_write_chunked = !ends_in_chunked(value);
                if !self.name_written {
                    self.encoder = BodyKind::Chunked;
                }
                self.joined(b"transfer-encoding: ", value);
                return Ok(());
            }
            CONNECTION => {
                if !self.is_last && has_token(value, "close") {
                    self.is_last = true;
                }
                self.joined(b"connection: ", value);
                return Ok(());
            }
            DATE => self.wrote_date = true,
            TRAILER => {
                if self.e.version == Version::HTTP_10 || !can_chunked(method, status) {
                    return Ok(());
                }
                self.joined(b"trailer: ", value);
                self.trailer |= value.to_str().is_ok();
                return Ok(());
            }
            _ => {}
        }
        self.out.extend_from_slice(name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

fn length(n: u64) -> BodyKind {
    if n == 0 {
        BodyKind::Empty
    } else {
        BodyKind::Length(n)
    }
}

/// hyper's `Server::can_chunked` (and `can_have_body`).
fn can_chunked(method: Option<&Method>, status: StatusCode) -> bool {
    !(method == Some(&Method::HEAD)
        || method == Some(&Method::CONNECT) && status.is_success()
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// hyper's `Server::can_have_content_length`.
fn can_have_content_length(method: Option<&Method>, status: StatusCode) -> bool {
    !(status.is_informational()
        || method == Some(&Method::CONNECT) && status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Fields hyper never sends as trailers (`encode.rs`, `is_valid_trailer_field`).
fn is_valid_trailer_field(name: &HeaderName) -> bool {
    !matches!(
        *name,
        AUTHORIZATION
            | CACHE_CONTROL
            | CONTENT_ENCODING
            | CONTENT_LENGTH
            | CONTENT_RANGE
            | CONTENT_TYPE
            | HOST
            | MAX_FORWARDS
            | SET_COOKIE
            | TRAILER
            | TRANSFER_ENCODING
            | TE
    )
}

/// Writes a response body as a [`ResponsePlan`] says, frame by frame as the body yields them,
/// with hyper's rules (`encode.rs`, `Conn::write_body`, `write_body_and_end`, `end_body`):
///
/// - Length: at most the announced length is sent; bytes beyond it are dropped silently and
///   the body is over (the connection stays open if the plan said so). A body that ends short
///   on a data frame flagged as the last (`end_stream`) is sent as it is and the connection
///   closes; one that ends short otherwise (no more frames, or trailers) is an error
///   ([`H1Error::ShortBody`]): hyper aborts the connection, dropping what it has not yet
///   flushed.
/// - Chunked: each non-empty data frame is one chunk; then the last chunk, with the
///   trailers if [`ResponsePlan::trailers`] and any of them may be sent.
/// - Close-delimited: the bytes as they come; the connection closes after them.
/// - Empty data frames are skipped; trailers on a body that is not chunked are dropped.
///
/// Once [`Self::is_done`], hyper polls the body no more (and drops it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBodyEncoder {
    kind: BodyKind,
    keep_alive: bool,
    trailers: bool,
    done: bool,
}

impl ResponseBodyEncoder {
    /// The encoder for the body of a response whose head gave `plan`.
    #[must_use]
    pub fn new(plan: &ResponsePlan) -> Self {
        Self {
            kind: plan.body,
            keep_alive: plan.keep_alive,
            trailers: plan.trailers,
            done: plan.body == BodyKind::Empty,
        }
    }

    /// The body is over on the wire: nothing more is written, the body need not be polled.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the connection stays open for the next request, once [`Self::is_done`].
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Appends one data frame; `end_stream`: the body said it had ended after it
    /// (`Body::is_end_stream`).
    pub fn data(
        &mut self,
        data: &[u8],
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), H1Error> {
        if self.done {
            return Ok(());
        }
        if data.is_empty() {
            return if end_stream { self.end(out) } else { Ok(()) };
        }
        let len = data.len() as u64;
        match &mut self.kind {
            BodyKind::Chunked => {
                if let Some(header) = ChunkHeader::new(len) {
                    out.reserve(header.as_bytes().len() + data.len() + 7);
                    out.extend_from_slice(header.as_bytes());
                }
                out.extend_from_slice(data);
                out.extend_from_slice(ChunkedEncoder::CHUNK_END);
                if end_stream {
                    out.extend_from_slice(b"0\r\n\r\n");
                    self.done = true;
                }
            }
            BodyKind::Length(remaining) => {
                let take = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                out.extend_from_slice(&data[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.done = true;
                } else if end_stream {
                    // Shorter than announced, but the body said it ended: hyper sends what
                    // there is and closes, without an error.
                    self.done = true;
                    self.keep_alive = false;
                }
            }
            BodyKind::CloseDelimited => {
                out.extend_from_slice(data);
                self.done = end_stream;
            }
            BodyKind::Empty => self.done = true,
        }
        Ok(())
    }

    /// Ends the body with trailers (a trailers frame). Only a chunked body with
    /// [`ResponsePlan::trailers`] sends them, and only the fields named by the response's
    /// `Trailer` header (`response_headers`) that may be trailers; otherwise this is
    /// [`Self::end`].
    pub fn trailers(
        &mut self,
        response_headers: &HeaderMap,
        trailers: &HeaderMap,
        out: &mut Vec<u8>,
    ) -> Result<(), H1Error> {
        if self.done || !(self.kind == BodyKind::Chunked && self.trailers) {
            return self.end(out);
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            if is_valid_trailer_field(name) && announced(response_headers, name) {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        self.done = true;
        Ok(())
    }

    /// Ends the body (no more frames). A body of announced length that is not complete is an
    /// error: [`H1Error::ShortBody`], and the connection must be aborted.
    pub fn end(&mut self, out: &mut Vec<u8>) -> Result<(), H1Error> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        match self.kind {
            BodyKind::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            BodyKind::Length(missing) => {
                self.keep_alive = false;
                return Err(H1Error::ShortBody { missing });
            }
            BodyKind::Empty | BodyKind::CloseDelimited => {}
        }
        Ok(())
    }
}

/// Whether a `Trailer` value of `headers` names `name` (comma-separated, trimmed, any case;
/// values that are not text name nothing), as hyper reads them.
fn announced(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(TRAILER).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
        })
    })
}

/// Length of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub const DATE_LEN: usize = 29;

/// The `Date` header value, formatted again only when the second changes (hyper's
/// `common/date.rs`: it renders the date once and again after the next whole second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedDate {
    value: [u8; DATE_LEN],
    next_update: SystemTime,
}

impl CachedDate {
    /// The date now.
    #[must_use]
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// The date at `now` (after 1970 and before 10000, as `httpdate` requires).
    #[must_use]
    pub fn at(now: SystemTime) -> Self {
        let mut date = Self {
            value: [0; DATE_LEN],
            next_update: now,
        };
        date.render(now);
        date
    }

    /// The value, formatted again first if `now` is past the second it was formatted in.
    pub fn check_at(&mut self, now: SystemTime) -> &[u8; DATE_LEN] {
        if now > self.next_update {
            self.render(now);
        }
        &self.value
    }

    /// [`Self::check_at`] the current time.
    pub fn check(&mut self) -> &[u8; DATE_LEN] {
        self.check_at(SystemTime::now())
    }

    /// The value as last formatted.
    #[must_use]
    pub fn value(&self) -> &[u8; DATE_LEN] {
        &self.value
    }

    fn render(&mut self, now: SystemTime) {
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let mut rest = &mut self.value[..];
        let written = write!(rest, "{}", httpdate::HttpDate::from(now));
        debug_assert!(
            written.is_ok() && rest.is_empty(),
            "an HTTP date is 29 bytes"
        );
        self.next_update = now + Duration::from_secs(1) - Duration::from_nanos(u64::from(nanos));
    }
}

impl Default for CachedDate {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static DATE_CACHE: RefCell<CachedDate> = RefCell::new(CachedDate::new());
}

/// Calls `f` with the current `Date` value from this thread's cache (hyper keeps one per
/// thread too, checked each time a connection is polled).
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    DATE_CACHE.with(|cache| f(cache.borrow_mut().check()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{Limits, parse_request, request_framing};

    const D: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(n, v) in list {
            map.append(n, HeaderValue::from_static(v));
        }
        map
    }

    fn info(method: &Method, version: Version, keep_alive: bool) -> RequestInfo<'_> {
        RequestInfo {
            method,
            version,
            keep_alive,
            te_trailers: false,
        }
    }

    fn known(n: u64) -> BodyHint {
        BodyHint {
            exact: Some(n),
            end_stream: false,
        }
    }

    const UNKNOWN: BodyHint = BodyHint {
        exact: None,
        end_stream: false,
    };

    /// The head written, and the plan.
    fn head(
        req: &RequestInfo<'_>,
        version: Version,
        status: u16,
        map: &HeaderMap,
        body: BodyHint,
    ) -> (String, ResponsePlan) {
        let mut out = b"before".to_vec();
        let status = StatusCode::from_u16(status).unwrap();
        let plan = response_head(req, version, status, map, body, D, &mut out).unwrap();
        (String::from_utf8(out[6..].to_vec()).unwrap(), plan)
    }

    fn refused(req: &RequestInfo<'_>, status: u16, map: &HeaderMap, body: BodyHint) -> H1Error {
        let mut out = b"before".to_vec();
        let status = StatusCode::from_u16(status).unwrap();
        let e = response_head(req, Version::HTTP_11, status, map, body, D, &mut out).unwrap_err();
        assert_eq!(out, b"before", "{e}: something appended");
        e
    }

    fn plan(body: BodyKind, keep_alive: bool) -> ResponsePlan {
        ResponsePlan {
            body,
            keep_alive,
            trailers: false,
        }
    }

    const DATE_LINE: &str = "date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n";

    #[test]
    fn http11_keep_alive() {
        let get = info(&Method::GET, Version::HTTP_11, true);
        let map = headers(&[("x-a", "1"), ("x-b", "2"), ("x-a", "3")]);
        let (h, p) = head(&get, Version::HTTP_11, 200, &map, known(5));
        assert_eq!(
            h,
            format!(
                "HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 3\r\nx-b: 2\r\ncontent-length: 5\r\n{DATE_LINE}"
            )
        );
        assert_eq!(p, plan(BodyKind::Length(5), true));
        let (h, p) = head(
            &get,
            Version::HTTP_11,
            404,
            &HeaderMap::new(),
            BodyHint::EMPTY,
        );
        assert_eq!(
            h,
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Empty, true));
        let (h, p) = head(&get, Version::HTTP_11, 200, &HeaderMap::new(), UNKNOWN);
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Chunked, true));
        // An HTTP/2 response goes out as HTTP/1.1; an unknown code has the reason `<none>`.
        let (h, _) = head(
            &get,
            Version::HTTP_2,
            599,
            &HeaderMap::new(),
            BodyHint::EMPTY,
        );
        assert!(h.starts_with("HTTP/1.1 599 <none>\r\n"), "{h}");
    }

    #[test]
    fn closing() {
        let get = info(&Method::GET, Version::HTTP_11, false);
        let (h, p) = head(&get, Version::HTTP_11, 200, &HeaderMap::new(), known(2));
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Length(2), false));
        // Joined to the service's Connection line, where that is; not twice.
        let map = headers(&[("connection", "x-hop"), ("x-a", "1"), ("connection", "y")]);
        let (h, _) = head(&get, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert!(
            h.contains("\r\nconnection: x-hop, y, close\r\nx-a: 1\r\n"),
            "{h}"
        );
        let map = headers(&[("connection", "Close")]);
        let (h, _) = head(&get, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert!(h.contains("\r\nconnection: Close\r\ncontent-length"), "{h}");
        // The service's close closes a connection the client would keep.
        let get = info(&Method::GET, Version::HTTP_11, true);
        let (_, p) = head(&get, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert_eq!(p, plan(BodyKind::Empty, false));
    }

    #[test]
    fn http10_clients() {
        let keep = info(&Method::GET, Version::HTTP_10, true);
        let (h, p) = head(
            &keep,
            Version::HTTP_11,
            200,
            &headers(&[("x-a", "1")]),
            known(3),
        );
        assert_eq!(
            h,
            format!(
                "HTTP/1.0 200 OK\r\nx-a: 1\r\nconnection: keep-alive\r\ncontent-length: 3\r\n{DATE_LINE}"
            )
        );
        assert_eq!(p, plan(BodyKind::Length(3), true));
        // Unknown length: no chunking for HTTP/1.0, the close ends the body.
        let (h, p) = head(&keep, Version::HTTP_11, 200, &HeaderMap::new(), UNKNOWN);
        assert_eq!(
            h,
            format!("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::CloseDelimited, false));
        // An HTTP/1.0 response without keep-alive closes; an HTTP/2 one adds nothing.
        let (h, p) = head(&keep, Version::HTTP_10, 200, &HeaderMap::new(), known(3));
        assert_eq!(
            h,
            format!("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Length(3), false));
        let (h, p) = head(&keep, Version::HTTP_2, 200, &HeaderMap::new(), known(3));
        assert_eq!(
            h,
            format!("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Length(3), true));
        // Without keep-alive from the client: nothing added, closed.
        let close = info(&Method::GET, Version::HTTP_10, false);
        let (h, p) = head(&close, Version::HTTP_11, 200, &HeaderMap::new(), known(3));
        assert_eq!(
            h,
            format!("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Length(3), false));
        // A service's Transfer-Encoding and Trailer are dropped.
        let map = headers(&[("transfer-encoding", "chunked"), ("trailer", "x")]);
        let (h, p) = head(&keep, Version::HTTP_11, 200, &map, known(3));
        assert!(
            !h.contains("transfer-encoding") && !h.contains("trailer"),
            "{h}"
        );
        assert_eq!(p.body, BodyKind::Length(3));
        // A service's close next to the added keep-alive still closes.
        let map = headers(&[("connection", "close")]);
        let (h, p) = head(&keep, Version::HTTP_11, 200, &map, known(3));
        assert!(h.contains("\r\nconnection: close, keep-alive\r\n"), "{h}");
        assert!(!p.keep_alive);
    }

    #[test]
    fn bodiless_responses() {
        let get = info(&Method::GET, Version::HTTP_11, true);
        let head_req = info(&Method::HEAD, Version::HTTP_11, true);
        for status in [204, 304] {
            let (h, p) = head(&get, Version::HTTP_11, status, &HeaderMap::new(), known(9));
            let reason = StatusCode::from_u16(status)
                .unwrap()
                .canonical_reason()
                .unwrap();
            assert_eq!(h, format!("HTTP/1.1 {status} {reason}\r\n{DATE_LINE}"));
            assert_eq!(p, plan(BodyKind::Empty, true));
            let map = headers(&[("transfer-encoding", "chunked")]);
            let (h, p) = head(&get, Version::HTTP_11, status, &map, UNKNOWN);
            assert!(!h.contains("transfer-encoding"), "{h}");
            assert_eq!(p, plan(BodyKind::Empty, true));
        }
        // HEAD: the length is announced, nothing is sent.
        let (h, p) = head(
            &head_req,
            Version::HTTP_11,
            200,
            &HeaderMap::new(),
            known(9),
        );
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n{DATE_LINE}")
        );
        assert_eq!(p, plan(BodyKind::Empty, true));
        let (h, _) = head(
            &head_req,
            Version::HTTP_11,
            200,
            &HeaderMap::new(),
            BodyHint::EMPTY,
        );
        assert_eq!(h, format!("HTTP/1.1 200 OK\r\n{DATE_LINE}"));
        // An ended body's Content-Length is kept for HEAD only.
        let map = headers(&[("content-length", "9")]);
        let (h, _) = head(&head_req, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n{DATE_LINE}")
        );
        let (h, _) = head(&get, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{DATE_LINE}")
        );
        let (h, _) = head(&get, Version::HTTP_11, 304, &map, BodyHint::EMPTY);
        assert_eq!(h, format!("HTTP/1.1 304 Not Modified\r\n{DATE_LINE}"));
        // A 2xx to CONNECT: a tunnel, no framing, closed for HTTP.
        let connect = info(&Method::CONNECT, Version::HTTP_11, true);
        let (h, p) = head(&connect, Version::HTTP_11, 200, &HeaderMap::new(), known(9));
        assert_eq!(h, format!("HTTP/1.1 200 OK\r\n{DATE_LINE}"));
        assert_eq!(p, plan(BodyKind::Empty, false));
        let (_, p) = head(&connect, Version::HTTP_11, 403, &HeaderMap::new(), known(9));
        assert_eq!(p, plan(BodyKind::Length(9), true));
    }

    #[test]
    fn service_framing_headers() {
        let get = info(&Method::GET, Version::HTTP_11, true);
        // A matching length is written as the service wrote it, once.
        let map = headers(&[("content-length", "5"), ("content-length", "5")]);
        let (h, p) = head(&get, Version::HTTP_11, 200, &map, known(5));
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n{DATE_LINE}")
        );
        assert_eq!(p.body, BodyKind::Length(5));
        // A body of unknown length takes the service's length.
        let map = headers(&[("content-length", "007")]);
        let (h, p) = head(&get, Version::HTTP_11, 200, &map, UNKNOWN);
        assert_eq!(
            h,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 007\r\n{DATE_LINE}")
        );
        assert_eq!(p.body, BodyKind::Length(7));
        // Transfer-Encoding: chunked, whatever the body's length; `chunked` added once.
        let map = headers(&[("transfer-encoding", "gzip"), ("connection", "x-hop")]);
        let (h, p) = head(&get, Version::HTTP_11, 200, &map, known(5));
        assert_eq!(
            h,
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: x-hop\r\n{DATE_LINE}"
            )
        );
        assert_eq!(p.body, BodyKind::Chunked);
        let map = headers(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        let (h, _) = head(&get, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert!(
            h.contains("\r\ntransfer-encoding: gzip, chunked\r\ndate"),
            "{h}"
        );
        // A service's Date replaces the cached one.
        let map = headers(&[("date", "Thu, 01 Jan 1970 00:00:00 GMT")]);
        let (h, _) = head(&get, Version::HTTP_11, 200, &map, BodyHint::EMPTY);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn refusals() {
        let get = info(&Method::GET, Version::HTTP_11, true);
        let framing = H1Error::UnwritableFraming;
        for list in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
        ] {
            for body in [known(5), UNKNOWN] {
                assert_eq!(refused(&get, 200, &headers(list), body), framing);
            }
        }
        let map = headers(&[("content-length", "5"), ("content-length", "6")]);
        assert_eq!(refused(&get, 200, &map, UNKNOWN), framing);
        assert_eq!(refused(&get, 200, &map, known(5)), framing);
        let map = headers(&[("content-length", "x")]);
        assert_eq!(refused(&get, 200, &map, UNKNOWN), framing);
        assert_eq!(refused(&get, 200, &map, known(5)), framing);
        // Not the body's length (hyper: a lying head, or a panic in debug builds).
        let map = headers(&[("content-length", "6")]);
        assert_eq!(refused(&get, 200, &map, known(5)), framing);
        let head_req = info(&Method::HEAD, Version::HTTP_11, true);
        assert!(
            response_head(
                &head_req,
                Version::HTTP_11,
                StatusCode::OK,
                &map,
                known(0),
                D,
                &mut Vec::new()
            )
            .is_ok()
        );
        // Two lines for HEAD with an ended body.
        let map = headers(&[("content-length", "5"), ("content-length", "5")]);
        assert_eq!(refused(&head_req, 200, &map, BodyHint::EMPTY), framing);
        let connect = info(&Method::CONNECT, Version::HTTP_11, true);
        let map = headers(&[("content-length", "0")]);
        assert_eq!(refused(&connect, 200, &map, known(0)), framing);
        let mut out = Vec::new();
        assert_eq!(
            response_head(
                &get,
                Version::HTTP_3,
                StatusCode::OK,
                &HeaderMap::new(),
                UNKNOWN,
                D,
                &mut out
            ),
            Err(H1Error::UnwritableVersion)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn informational_statuses_become_500() {
        for (method, length) in [(Method::GET, "content-length: 0\r\n"), (Method::HEAD, "")] {
            let req = info(&method, Version::HTTP_10, true);
            let mut out = Vec::new();
            let map = headers(&[("x-a", "1")]);
            assert_eq!(
                response_head(
                    &req,
                    Version::HTTP_11,
                    StatusCode::CONTINUE,
                    &map,
                    known(3),
                    D,
                    &mut out
                ),
                Err(H1Error::UnwritableStatus)
            );
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("HTTP/1.1 500 Internal Server Error\r\n{length}{DATE_LINE}")
            );
        }
        // 101 is written (an upgrade), and ends HTTP on the connection.
        let get = info(&Method::GET, Version::HTTP_11, true);
        let map = headers(&[("upgrade", "websocket"), ("connection", "upgrade")]);
        let (h, p) = head(&get, Version::HTTP_11, 101, &map, BodyHint::EMPTY);
        assert_eq!(
            h,
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n{DATE_LINE}"
            )
        );
        assert_eq!(p, plan(BodyKind::Empty, false));
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        error_response(Version::HTTP_11, StatusCode::BAD_REQUEST, D, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n{DATE_LINE}"
            )
        );
        let mut out = Vec::new();
        let status = H1Error::HeadTooLarge { limit: 1 }.status();
        error_response(Version::HTTP_10, status, D, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "HTTP/1.0 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n{DATE_LINE}"
            )
        );
    }

    #[test]
    fn request_info_from_a_head() {
        let raw = b"POST / HTTP/1.1\r\nTE: gzip, Trailers\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        let (head, _) = parse_request(raw, &Limits::default()).unwrap().unwrap();
        let framing = request_framing(&head).unwrap();
        let info = RequestInfo::new(&head, &framing);
        assert_eq!(
            (info.method, info.version),
            (&Method::POST, Version::HTTP_11)
        );
        // Both framing headers: the connection closes after the exchange.
        assert!(!info.keep_alive && info.te_trailers);
        let raw = b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
        let (head, _) = parse_request(raw, &Limits::default()).unwrap().unwrap();
        let info = RequestInfo::new(&head, &request_framing(&head).unwrap());
        assert!(info.keep_alive && !info.te_trailers);
    }

    fn encoder(body: BodyKind, keep_alive: bool, trailers: bool) -> ResponseBodyEncoder {
        ResponseBodyEncoder::new(&ResponsePlan {
            body,
            keep_alive,
            trailers,
        })
    }

    #[test]
    fn length_bodies() {
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Length(5), true, false);
        e.data(b"", false, &mut out).unwrap();
        e.data(b"ab", false, &mut out).unwrap();
        assert!(!e.is_done());
        // More than announced: cut, and the connection stays.
        e.data(b"cdefg", false, &mut out).unwrap();
        assert!(e.is_done() && e.keep_alive());
        e.data(b"more", true, &mut out).unwrap();
        assert_eq!(out, b"abcde");
        // Short, but the body said it ended: sent, then closed.
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Length(5), true, false);
        e.data(b"abc", true, &mut out).unwrap();
        assert!(e.is_done() && !e.keep_alive());
        assert_eq!(out, b"abc");
        // Short, and the body just stops: an error.
        let mut e = encoder(BodyKind::Length(5), true, false);
        e.data(b"abc", false, &mut out).unwrap();
        assert_eq!(e.end(&mut out), Err(H1Error::ShortBody { missing: 2 }));
        assert!(e.is_done() && !e.keep_alive());
        let mut e = encoder(BodyKind::Length(5), true, false);
        let t = headers(&[("x-sum", "1")]);
        assert_eq!(
            e.trailers(&HeaderMap::new(), &t, &mut out),
            Err(H1Error::ShortBody { missing: 5 })
        );
        // Exactly the length, ended by trailers: they are dropped.
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Length(2), true, false);
        e.data(b"ab", false, &mut out).unwrap();
        e.trailers(&HeaderMap::new(), &t, &mut out).unwrap();
        assert_eq!((out.as_slice(), e.keep_alive()), (&b"ab"[..], true));
        let e = encoder(BodyKind::Empty, true, false);
        assert!(e.is_done() && e.keep_alive());
    }

    #[test]
    fn chunked_bodies() {
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Chunked, true, false);
        e.data(&[b'x'; 26], false, &mut out).unwrap();
        e.data(b"", false, &mut out).unwrap();
        e.data(b"yz", true, &mut out).unwrap();
        assert!(e.is_done() && e.keep_alive());
        let mut expected = b"1A\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n2\r\nyz\r\n0\r\n\r\n");
        assert_eq!(out, expected);
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Chunked, false, false);
        e.data(b"a", false, &mut out).unwrap();
        e.end(&mut out).unwrap();
        assert_eq!(
            (out.as_slice(), e.keep_alive()),
            (&b"1\r\na\r\n0\r\n\r\n"[..], false)
        );
        // Trailers: only the announced ones that may be trailers.
        let announced = headers(&[("trailer", "X-Sum, content-type"), ("trailer", " x-late ")]);
        let trailers = headers(&[
            ("x-sum", "7"),
            ("content-type", "a"),
            ("x-other", "1"),
            ("x-late", "a"),
            ("x-late", "b"),
        ]);
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Chunked, true, true);
        e.trailers(&announced, &trailers, &mut out).unwrap();
        assert_eq!(out, b"0\r\nx-sum: 7\r\nx-late: a\r\nx-late: b\r\n\r\n");
        assert!(e.is_done() && e.keep_alive());
        // Not allowed (no `TE: trailers`, or no `Trailer`): the plain last chunk.
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::Chunked, true, false);
        e.trailers(&announced, &trailers, &mut out).unwrap();
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn close_delimited_bodies() {
        let mut out = Vec::new();
        let mut e = encoder(BodyKind::CloseDelimited, false, false);
        e.data(b"ab", false, &mut out).unwrap();
        e.data(b"cd", false, &mut out).unwrap();
        assert!(!e.is_done());
        e.trailers(&HeaderMap::new(), &headers(&[("x", "1")]), &mut out)
            .unwrap();
        assert_eq!(out, b"abcd");
        assert!(e.is_done() && !e.keep_alive());
    }

    #[test]
    fn trailer_plans() {
        let mut req = info(&Method::GET, Version::HTTP_11, true);
        let map = headers(&[("trailer", "x-sum")]);
        let (h, p) = head(&req, Version::HTTP_11, 200, &map, UNKNOWN);
        assert!(
            h.contains("\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n"),
            "{h}"
        );
        assert!(!p.trailers, "no TE: trailers");
        req.te_trailers = true;
        let (_, p) = head(&req, Version::HTTP_11, 200, &map, UNKNOWN);
        assert!(p.trailers);
        let (_, p) = head(&req, Version::HTTP_11, 200, &map, known(3));
        assert!(!p.trailers, "not chunked");
        let (_, p) = head(&req, Version::HTTP_11, 200, &HeaderMap::new(), UNKNOWN);
        assert!(!p.trailers, "no Trailer");
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut date = CachedDate::at(t + Duration::from_millis(250));
        assert_eq!(date.value(), D);
        assert_eq!(date.check_at(t + Duration::from_millis(999)), D);
        assert_eq!(date.check_at(t + Duration::from_secs(1)), D);
        assert_eq!(
            date.check_at(t + Duration::from_millis(1001)),
            b"Sun, 06 Nov 1994 08:49:38 GMT"
        );
        let now = with_date(<[u8]>::to_vec);
        assert_eq!(now.len(), DATE_LEN);
        assert!(httpdate::parse_http_date(std::str::from_utf8(&now).unwrap()).is_ok());
        assert_eq!(CachedDate::default().value().len(), DATE_LEN);
    }
}
