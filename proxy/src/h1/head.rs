//! Request and response heads: `httparse` with its default settings (as hyper), then the
//! same conversions hyper makes (method, target as a [`Uri`], status, names and values), so
//! that a head is accepted here exactly when hyper accepts it.
//!
//! A parsed head owns one copy of its bytes; the target, the reason phrase and every header
//! value are slices of that copy, not copies of their own.
use std::{mem::MaybeUninit, ops::Range};

use bytes::Bytes;
use hyper::{
    HeaderMap, Method, StatusCode, Uri, Version,
    header::{CONNECTION, HeaderName, HeaderValue},
};

use super::{H1Error, Limits};

/// Header slots on the stack; a larger [`Limits::max_headers`] takes them from the heap.
const INLINE_HEADERS: usize = 100;
/// hyper refuses longer request targets (`MAX_URI_LEN`).
const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;
/// hyper refuses header names this long or longer.
const MAX_NAME_BYTES: usize = 1 << 16;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target exactly as sent (origin, absolute, authority or asterisk form).
    pub target: Uri,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The header lines in the order they came, names lowercased. Order matters for framing
    /// (a `Content-Length` after `Transfer-Encoding` is not even parsed, as in hyper).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The status code (100..=999).
    pub status: StatusCode,
    /// The reason phrase as sent; empty when it was empty or held non-ASCII bytes.
    pub reason: Bytes,
    /// The header lines in the order they came, names lowercased.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RequestHead {
    /// The headers as a map (values are shared with the head, not copied).
    #[must_use]
    pub fn to_header_map(&self) -> HeaderMap {
        to_header_map(&self.headers)
    }

    /// Every value of the header `name`, in order.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        values(&self.headers, name)
    }

    /// Whether the client lets the connection stay open after this request, as hyper decides:
    /// HTTP/1.1 unless a `Connection` header has `close`; HTTP/1.0 only with `keep-alive` and
    /// no `close`. A request with both framing headers closes too ([`super::Framing::close_after`]).
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }
}

impl ResponseHead {
    /// The headers as a map (values are shared with the head, not copied).
    #[must_use]
    pub fn to_header_map(&self) -> HeaderMap {
        to_header_map(&self.headers)
    }

    /// Every value of the header `name`, in order.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        values(&self.headers, name)
    }

    /// Whether the server lets the connection stay open after this response (the same rule
    /// as [`RequestHead::keep_alive`]; an upgrade ends it in any case).
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }

    /// A 1xx response other than 101: an interim answer (100 Continue, 103 Early Hints)
    /// without a body, followed by the final response on the same connection.
    #[must_use]
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet (read more and call again with all of it).
/// `Ok(Some((head, n)))`: the head took the first `n` bytes; the body, if any, starts there.
/// Empty lines before the request line are skipped (counted in `n`), as hyper does.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, H1Error> {
    let mut inline = [const { MaybeUninit::uninit() }; INLINE_HEADERS];
    let mut heap = Vec::new();
    let slots = header_slots(&mut inline, &mut heap, limits.max_headers);
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return incomplete(buf, limits),
        // As hyper: a bad token is the method's fault until a method was read.
        Err(httparse::Error::Token) if req.method.is_none() => return Err(H1Error::InvalidMethod),
        Err(httparse::Error::Token) => return Err(H1Error::InvalidTarget),
        Err(e) => return Err(parse_error(e, limits)),
    };
    if len > limits.max_head_bytes {
        return Err(H1Error::HeadTooLarge {
            limit: limits.max_head_bytes,
        });
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(H1Error::InvalidTarget);
    };
    if target.len() > MAX_TARGET_BYTES {
        return Err(H1Error::TargetTooLong);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| H1Error::InvalidMethod)?;
    let head = &buf[..len];
    let raw = Bytes::copy_from_slice(head);
    let target = within(head, target.as_bytes()).ok_or(H1Error::InvalidTarget)?;
    let target = Uri::from_maybe_shared(raw.slice(target)).map_err(|_| H1Error::InvalidTarget)?;
    let headers = convert_headers(head, &raw, req.headers)?;
    Ok(Some((
        RequestHead {
            method,
            target,
            version: version(minor),
            headers,
        },
        len,
    )))
}

/// Parses a response head at the start of `buf`; the same contract as [`parse_request`].
/// Interim (1xx) responses are returned like any other: see [`ResponseHead::is_interim`].
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(ResponseHead, usize)>, H1Error> {
    let mut inline = [const { MaybeUninit::uninit() }; INLINE_HEADERS];
    let mut heap = Vec::new();
    let slots = header_slots(&mut inline, &mut heap, limits.max_headers);
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return incomplete(buf, limits),
        Err(e) => return Err(parse_error(e, limits)),
    };
    if len > limits.max_head_bytes {
        return Err(H1Error::HeadTooLarge {
            limit: limits.max_head_bytes,
        });
    }
    let (Some(minor), Some(code), Some(reason)) = (res.version, res.code, res.reason) else {
        return Err(H1Error::InvalidStatus);
    };
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::InvalidStatus)?;
    let head = &buf[..len];
    let raw = Bytes::copy_from_slice(head);
    let reason = within(head, reason.as_bytes()).map_or_else(Bytes::new, |r| raw.slice(r));
    let headers = convert_headers(head, &raw, res.headers)?;
    Ok(Some((
        ResponseHead {
            version: version(minor),
            status,
            reason,
            headers,
        },
        len,
    )))
}

/// Whether bytes left over when the peer closes the connection between two messages are
/// only empty lines (CR and LF), which hyper takes as a clean close; anything else is the
/// start of a message that never ended.
#[must_use]
pub fn eof_is_clean(leftover: &[u8]) -> bool {
    leftover.iter().all(|&b| b == b'\r' || b == b'\n')
}

fn header_slots<'s, 'b>(
    inline: &'s mut [MaybeUninit<httparse::Header<'b>>; INLINE_HEADERS],
    heap: &'s mut Vec<MaybeUninit<httparse::Header<'b>>>,
    max: usize,
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    if max <= INLINE_HEADERS {
        &mut inline[..max]
    } else {
        heap.resize_with(max, MaybeUninit::uninit);
        heap
    }
}

/// An incomplete head: fine unless it already fills the head limit.
fn incomplete<T>(buf: &[u8], limits: &Limits) -> Result<Option<T>, H1Error> {
    if buf.len() >= limits.max_head_bytes {
        Err(H1Error::HeadTooLarge {
            limit: limits.max_head_bytes,
        })
    } else {
        Ok(None)
    }
}

fn parse_error(e: httparse::Error, limits: &Limits) -> H1Error {
    match e {
        httparse::Error::HeaderName => H1Error::InvalidHeaderName,
        httparse::Error::HeaderValue => H1Error::InvalidHeaderValue,
        httparse::Error::NewLine => H1Error::InvalidNewLine,
        httparse::Error::Status => H1Error::InvalidStatus,
        httparse::Error::Token => H1Error::InvalidTarget,
        httparse::Error::TooManyHeaders => H1Error::TooManyHeaders {
            limit: limits.max_headers,
        },
        httparse::Error::Version => H1Error::InvalidVersion,
    }
}

fn version(minor: u8) -> Version {
    if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    }
}

/// Where `part`, a slice of `head`, sits in it; `None` if it is empty or not a slice of `head`
/// at all (httparse makes up an empty reason phrase when the real one had obs-text).
fn within(head: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = part.as_ptr().addr().checked_sub(head.as_ptr().addr())?;
    let end = start.checked_add(part.len())?;
    (end <= head.len() && !part.is_empty()).then_some(start..end)
}

/// The parsed header lines (slices of `head`) as names and values; the values are slices of
/// `raw`, the copy of `head`.
fn convert_headers(
    head: &[u8],
    raw: &Bytes,
    parsed: &[httparse::Header<'_>],
) -> Result<Vec<(HeaderName, HeaderValue)>, H1Error> {
    let mut headers = Vec::with_capacity(parsed.len());
    for h in parsed {
        if h.name.len() >= MAX_NAME_BYTES {
            return Err(H1Error::HeaderNameTooLong);
        }
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| H1Error::InvalidHeaderName)?;
        let value = match within(head, h.value) {
            Some(r) => HeaderValue::from_maybe_shared(raw.slice(r)),
            None => HeaderValue::from_bytes(h.value),
        }
        .map_err(|_| H1Error::InvalidHeaderValue)?;
        headers.push((name, value));
    }
    Ok(headers)
}

fn to_header_map(headers: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        map.append(name.clone(), value.clone());
    }
    map
}

fn values<'a>(
    headers: &'a [(HeaderName, HeaderValue)],
    name: &'a HeaderName,
) -> impl Iterator<Item = &'a HeaderValue> {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v)
}

/// hyper's rule: any `close` token closes; otherwise HTTP/1.1 stays open and HTTP/1.0 stays
/// open only with a `keep-alive` token. Tokens are comma-separated, trimmed, any case.
fn keep_alive(version: Version, headers: &[(HeaderName, HeaderValue)]) -> bool {
    let mut open = version == Version::HTTP_11;
    for v in values(headers, &CONNECTION) {
        if has_token(v, "close") {
            return false;
        }
        open = open || has_token(v, "keep-alive");
    }
    open
}

/// Whether a comma-separated list value has `token` (ASCII case-insensitive); a value with
/// non-ASCII bytes has none, as in hyper.
pub(super) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Result<Option<(RequestHead, usize)>, H1Error> {
        parse_request(raw, &Limits::default())
    }

    fn ok(raw: &[u8]) -> RequestHead {
        let (head, n) = req(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        head
    }

    #[test]
    fn a_plain_request() {
        let raw = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target, "/a?b=c");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers.len(), 3);
        let two = HeaderName::from_static("x-two");
        assert_eq!(head.values(&two).collect::<Vec<_>>(), ["1", "2"]);
        let map = head.to_header_map();
        assert_eq!(map.get_all("x-two").iter().count(), 2);
        assert_eq!(map["host"], "x");
        assert!(head.keep_alive());
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        for end in 0..raw.len() - 3 {
            assert_eq!(req(&raw[..end]), Ok(None), "{end}");
        }
        let (head, n) = req(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 3);
        assert_eq!(head.method, Method::POST);
    }

    #[test]
    fn forms_of_target() {
        assert_eq!(
            ok(b"GET http://a.test/x HTTP/1.1\r\n\r\n").target,
            "http://a.test/x"
        );
        let connect = ok(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n");
        assert_eq!(connect.target.authority().unwrap(), "a.test:443");
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\n\r\n").target, "*");
        // hyper refuses what `http::Uri` refuses, even past httparse.
        assert_eq!(
            req(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(H1Error::InvalidTarget)
        );
        assert_eq!(req(b"GET  / HTTP/1.1\r\n\r\n"), Err(H1Error::InvalidTarget));
        assert_eq!(req(b"GET HTTP/1.1\r\n\r\n"), Err(H1Error::InvalidTarget));
    }

    #[test]
    fn versions() {
        let head = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.version, Version::HTTP_10);
        assert!(!head.keep_alive());
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        for bad in [
            &b"GET / HTTP/1.2\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(req(bad), Err(H1Error::InvalidVersion), "{bad:?}");
        }
    }

    #[test]
    fn strict_header_lines() {
        let cases: &[(&[u8], H1Error)] = &[
            (
                b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
                H1Error::InvalidHeaderName,
            ),
            (
                b"GET / HTTP/1.1\r\nX-A : a\r\n\r\n",
                H1Error::InvalidHeaderName,
            ),
            (
                b"GET / HTTP/1.1\r\nX A: a\r\n\r\n",
                H1Error::InvalidHeaderName,
            ),
            (b"GET / HTTP/1.1\r\n: a\r\n\r\n", H1Error::InvalidHeaderName),
            (
                b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
                H1Error::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
                H1Error::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
                H1Error::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nX-A:\x0ba\r\n\r\n",
                H1Error::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n",
                H1Error::InvalidHeaderValue,
            ),
            (b"GET / HTTP/1.1\r\n\rX: a\r\n\r\n", H1Error::InvalidNewLine),
            (b"G(T / HTTP/1.1\r\n\r\n", H1Error::InvalidMethod),
            (b"GET\t/ HTTP/1.1\r\n\r\n", H1Error::InvalidMethod),
        ];
        for (raw, want) in cases {
            assert_eq!(req(raw).as_ref(), Err(want), "{}", raw.escape_ascii());
        }
    }

    #[test]
    fn bare_lf_heads_are_accepted_as_hyper_does() {
        let head = ok(b"POST / HTTP/1.1\nHost: a\nContent-Length: 3\n\n");
        assert_eq!(head.headers.len(), 2);
        // Empty lines before a request are skipped, and counted.
        let (_, n) = req(b"\r\n\nGET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(n, 21);
    }

    #[test]
    fn values_keep_obs_text_and_tabs() {
        let head = ok(b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\tb\r\n\r\n");
        assert_eq!(head.headers[0].1.as_bytes(), b"caf\xc3\xa9\tb");
    }

    #[test]
    fn limits_apply_to_incomplete_heads_too() {
        let limits = Limits::listener(64, 2);
        let long = [b"GET /".as_slice(), &[b'a'; 80]].concat();
        assert_eq!(
            parse_request(&long, &limits),
            Err(H1Error::HeadTooLarge { limit: 64 })
        );
        assert_eq!(parse_request(&long[..63], &limits), Ok(None));
        let complete = [b"GET /".as_slice(), &[b'a'; 60], b" HTTP/1.1\r\n\r\n"].concat();
        assert_eq!(
            parse_request(&complete, &limits),
            Err(H1Error::HeadTooLarge { limit: 64 })
        );
        let three = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(
            parse_request(three, &limits),
            Err(H1Error::TooManyHeaders { limit: 2 })
        );
        let many = Limits::listener(100_000, 300);
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..250 {
            raw.extend_from_slice(format!("x-{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let (head, _) = parse_request(&raw, &many).unwrap().unwrap();
        assert_eq!(head.headers.len(), 250);
    }

    #[test]
    fn long_targets_and_names() {
        let limits = Limits::listener(200_000, 10);
        let target = [
            b"GET /".as_slice(),
            &vec![b'a'; 70_000],
            b" HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(parse_request(&target, &limits), Err(H1Error::TargetTooLong));
        let name = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &vec![b'a'; 70_000],
            b": 1\r\n\r\n",
        ]
        .concat();
        assert_eq!(
            parse_request(&name, &limits),
            Err(H1Error::HeaderNameTooLong)
        );
    }

    #[test]
    fn connection_tokens() {
        let close = ok(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: x, Close\r\n\r\n");
        assert!(!close.keep_alive());
        let ten = ok(b"GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n");
        assert!(!ten.keep_alive());
        let obs = ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, \xff\r\n\r\n");
        assert!(!obs.keep_alive(), "a non-ASCII value has no tokens");
    }

    fn res(raw: &[u8]) -> Result<Option<(ResponseHead, usize)>, H1Error> {
        parse_response(raw, &Limits::UPSTREAM)
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 404 Not Here\r\nContent-Length: 0\r\n\r\n";
        let (head, n) = res(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(head.status, 404);
        assert_eq!(head.reason, "Not Here");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.to_header_map()["content-length"], "0");
        assert!(head.keep_alive());
        assert!(!head.is_interim());
        let (head, _) = res(b"HTTP/1.0 299 \r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status.as_u16(), head.reason.len()), (299, 0));
        assert!(!head.keep_alive());
        let (head, _) = res(b"HTTP/1.1 200 caf\xc3\xa9\r\n\r\n").unwrap().unwrap();
        assert!(
            head.reason.is_empty(),
            "obs-text in a reason: httparse drops it"
        );
        let (head, _) = res(b"HTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.is_interim());
        let (head, _) = res(b"HTTP/1.1 101 Switching\r\n\r\n").unwrap().unwrap();
        assert!(!head.is_interim());
        let (head, _) = res(b"HTTP/1.1 999 Odd\n\n").unwrap().unwrap();
        assert_eq!(head.status, 999);
        assert_eq!(res(b"HTTP/1.1 200 OK\r\nX: 1\r\n"), Ok(None));
        assert_eq!(
            res(b"HTTP/1.1 099 Low\r\n\r\n"),
            Err(H1Error::InvalidStatus)
        );
        assert_eq!(res(b"HTTP/1.1 20 OK\r\n\r\n"), Err(H1Error::InvalidStatus));
        assert_eq!(
            res(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(H1Error::InvalidStatus)
        );
        assert_eq!(res(b"HTTP/2 200 OK\r\n\r\n"), Err(H1Error::InvalidVersion));
        assert_eq!(
            res(b"HTTP/1.1 200 OK\r\nX : 1\r\n\r\n"),
            Err(H1Error::InvalidHeaderName)
        );
        let limits = Limits::listener(32, 1);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", &limits),
            Err(H1Error::TooManyHeaders { limit: 1 })
        );
    }

    #[test]
    fn clean_eof() {
        assert!(eof_is_clean(b""));
        assert!(eof_is_clean(b"\r\n\n\r"));
        assert!(!eof_is_clean(b"\r\nG"));
    }
}
