//! Message framing (RFC 9112 §6): where a body ends, decided from the head the way hyper's
//! server (requests) and client (responses) decide it, and the decoders that find it.

use hyper::{
    HeaderMap, Method, Version,
    header::{CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING, UPGRADE},
};

use super::{ChunkedDecoder, Decoded, H1Error, Limits, RequestHead, ResponseHead};

/// hyper's largest body length (`DecodedLength::MAX_LEN`): it keeps two values for itself.
const MAX_LENGTH: u64 = u64::MAX - 2;

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no framing header, `Content-Length: 0`, or a response that has none).
    Empty,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Responses only: everything until the server closes the connection.
    CloseDelimited,
}

/// What the head says about the message's body and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// How the body is delimited.
    pub body: BodyKind,
    /// Both `Transfer-Encoding` and `Content-Length` were sent: the transfer coding wins, the
    /// length was ignored (and must not be forwarded: hyper removes it from a request, see
    /// [`RequestHead::framed_header_map`]), and
    /// the connection must close after this exchange (RFC 9112 §6.3), since the peer may
    /// disagree on where the message ended.
    pub close_after: bool,
    /// The connection may turn into a tunnel: a request with `CONNECT` or (HTTP/1.1)
    /// `Upgrade`, which becomes one if the response agrees; a 101 response, or a 2xx to
    /// `CONNECT`, which is one from its end on.
    pub upgrade: bool,
}

impl BodyKind {
    /// A decoder for a body of this kind.
    #[must_use]
    pub fn decoder(self, limits: &Limits) -> BodyDecoder {
        match self {
            Self::Empty => BodyDecoder::Length(0),
            Self::Length(n) => BodyDecoder::Length(n),
            Self::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
            Self::CloseDelimited => BodyDecoder::CloseDelimited,
        }
    }
}

/// The framing of a request, as hyper's server decides it:
///
/// - `Transfer-Encoding` on HTTP/1.0: refused.
/// - `Transfer-Encoding` whose last line's last coding is not `chunked` (case-insensitive):
///   refused, the length cannot be known.
/// - `Transfer-Encoding` and `Content-Length`: chunked, [`Framing::close_after`]. A
///   `Content-Length` before the first `Transfer-Encoding` line is still checked; one after
///   it is ignored unread (hyper does both).
/// - `Content-Length`: digits only (no sign, space, list or hex), fitting in 64 bits; repeated
///   lines must agree.
/// - Neither: no body.
pub fn request_framing(head: &RequestHead) -> Result<Framing, H1Error> {
    let mut length: Option<u64> = None;
    let mut saw_length = false;
    let mut transfer_coding = false;
    let mut chunked = false;
    for (name, value) in &head.headers {
        if name == TRANSFER_ENCODING {
            if head.version != Version::HTTP_11 {
                return Err(H1Error::TransferEncodingHttp10);
            }
            transfer_coding = true;
            length = None;
            chunked = ends_in_chunked(value);
        } else if name == CONTENT_LENGTH {
            saw_length = true;
            if transfer_coding {
                continue;
            }
            let n = digits(value.as_bytes()).ok_or(H1Error::InvalidContentLength)?;
            match length {
                Some(prev) if prev != n => return Err(H1Error::ConflictingContentLength),
                Some(_) => {}
                None if n > MAX_LENGTH => return Err(H1Error::ContentLengthTooLarge),
                None => length = Some(n),
            }
        }
    }
    if transfer_coding && !chunked {
        return Err(H1Error::TransferEncodingNotChunked);
    }
    let body = match (transfer_coding, length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(n)) if n > 0 => BodyKind::Length(n),
        (false, _) => BodyKind::Empty,
    };
    Ok(Framing {
        body,
        close_after: transfer_coding && saw_length,
        upgrade: wants_upgrade(head),
    })
}

impl RequestHead {
    /// The headers as hyper hands a request on, and as it should be forwarded with this
    /// framing (from [`request_framing`]): `Content-Length` once (equal repeated lines
    /// collapse to the first), and not at all next to a transfer coding.
    #[must_use]
    pub fn framed_header_map(&self, framing: &Framing) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        let mut length_kept = framing.body == BodyKind::Chunked;
        for (name, value) in &self.headers {
            if name == CONTENT_LENGTH {
                if length_kept {
                    continue;
                }
                length_kept = true;
            }
            map.append(name.clone(), value.clone());
        }
        map
    }
}

/// The framing of a response to a request with `request_method`, as hyper's client decides it:
///
/// - 101: no body, the connection is upgraded; other 1xx, 204 and 304: no body (whatever
///   the headers say); any status to `HEAD`: no body; 2xx to `CONNECT`: no body, a tunnel.
/// - `Transfer-Encoding` on HTTP/1.0: refused. Ending in `chunked` (last line, last coding):
///   chunked; otherwise close-delimited. `Content-Length` is then ignored, unread (and
///   [`Framing::close_after`] is set, where hyper keeps the connection).
/// - `Content-Length`: every value of every line (comma-separated lists allowed here) the
///   same plain decimal number; otherwise refused.
/// - Neither: close-delimited.
pub fn response_framing(head: &ResponseHead, request_method: &Method) -> Result<Framing, H1Error> {
    let status = head.status;
    let no_body = |upgrade| Framing {
        body: BodyKind::Empty,
        close_after: false,
        upgrade,
    };
    match status.as_u16() {
        101 => return Ok(no_body(true)),
        100..=199 | 204 | 304 => return Ok(no_body(false)),
        _ => {}
    }
    if *request_method == Method::HEAD {
        return Ok(no_body(false));
    }
    if *request_method == Method::CONNECT && status.is_success() {
        return Ok(no_body(true));
    }
    let headers = &head.headers;
    let has = |name: &HeaderName| headers.iter().any(|(n, _)| n == name);
    if has(&TRANSFER_ENCODING) {
        if head.version != Version::HTTP_11 {
            return Err(H1Error::TransferEncodingHttp10);
        }
        let chunked = head
            .values(&TRANSFER_ENCODING)
            .last()
            .is_some_and(ends_in_chunked);
        return Ok(Framing {
            body: if chunked {
                BodyKind::Chunked
            } else {
                BodyKind::CloseDelimited
            },
            close_after: has(&CONTENT_LENGTH),
            upgrade: false,
        });
    }
    let mut length: Option<u64> = None;
    for value in head.values(&CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| H1Error::InvalidContentLength)?;
        for item in text.split(',') {
            let n = digits(item.trim().as_bytes()).ok_or(H1Error::InvalidContentLength)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(H1Error::ConflictingContentLength);
            }
            length = Some(n);
        }
    }
    let body = match length {
        Some(n) if n > MAX_LENGTH => return Err(H1Error::ContentLengthTooLarge),
        Some(0) => BodyKind::Empty,
        Some(n) => BodyKind::Length(n),
        None => BodyKind::CloseDelimited,
    };
    Ok(Framing {
        body,
        close_after: false,
        upgrade: false,
    })
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked` (a value with non-ASCII
/// bytes never is).
pub(super) fn ends_in_chunked(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// hyper's `wants_upgrade` for a request: `CONNECT`, then each `Upgrade` line sets it to
/// whether the request is HTTP/1.1.
fn wants_upgrade(head: &RequestHead) -> bool {
    let mut upgrade = head.method == Method::CONNECT;
    for _ in head.values(&UPGRADE) {
        upgrade = head.version == Version::HTTP_11;
    }
    upgrade
}

/// A plain decimal number: one or more ASCII digits, nothing else, no overflow.
pub(super) fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Finds the body in the bytes after a head (any [`BodyKind`]), without copying them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes still to come.
    Length(u64),
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// Everything until the connection closes.
    CloseDelimited,
}

impl BodyDecoder {
    /// Looks at the next bytes of the connection: `consumed` of them belong to this body,
    /// `data` (a range of `input`) is body data, and `done` says the body has ended (what
    /// follows `consumed` is the next message). Call again with the input from `consumed` on
    /// (and more bytes once it is all consumed) until `done`. Never consumes a byte past the
    /// end of the body.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, H1Error> {
        match self {
            Self::Length(remaining) => {
                let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= n as u64;
                Ok(Decoded {
                    consumed: n,
                    data: 0..n,
                    done: *remaining == 0,
                })
            }
            Self::Chunked(chunked) => chunked.decode(input),
            Self::CloseDelimited => Ok(Decoded {
                consumed: input.len(),
                data: 0..input.len(),
                done: false,
            }),
        }
    }

    /// Whether the body has ended (a close-delimited body ends only at [`Self::finish`]).
    #[must_use]
    pub fn is_done(&self) -> bool {
        match self {
            Self::Length(remaining) => *remaining == 0,
            Self::Chunked(chunked) => chunked.is_done(),
            Self::CloseDelimited => false,
        }
    }

    /// The peer closed the connection: fine for a close-delimited body or one that ended;
    /// any other body is incomplete.
    pub fn finish(&self) -> Result<(), H1Error> {
        if self.is_done() || matches!(self, Self::CloseDelimited) {
            Ok(())
        } else {
            Err(H1Error::IncompleteBody)
        }
    }

    /// The trailers of a chunked body that has ended, if it had any.
    #[must_use]
    pub fn trailers(&self) -> Option<&hyper::HeaderMap> {
        match self {
            Self::Chunked(chunked) => chunked.trailers(),
            _ => None,
        }
    }
}

/// The body data one [`BodyDecoder::decode`] loop over `input` finds, and how far it got
/// (`Ok((data, consumed, done))`); used by the tests of this module and of `chunked`.
#[cfg(test)]
pub(super) fn decode_all(
    decoder: &mut BodyDecoder,
    input: &[u8],
) -> Result<(Vec<u8>, usize, bool), H1Error> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let d = decoder.decode(&input[at..])?;
        assert!(d.consumed <= input.len() - at);
        assert!(d.data.end <= d.consumed);
        data.extend_from_slice(&input[at + d.data.start..at + d.data.end]);
        at += d.consumed;
        if d.done || (d.consumed == 0 && d.data.is_empty()) {
            return Ok((data, at, d.done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{parse_request, parse_response};

    fn framing(raw: &str) -> Result<Framing, H1Error> {
        let (head, _) = parse_request(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        request_framing(&head)
    }

    fn body(kind: BodyKind) -> Framing {
        Framing {
            body: kind,
            close_after: false,
            upgrade: false,
        }
    }

    #[test]
    fn request_lengths() {
        let cases: &[(&str, Result<Framing, H1Error>)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Ok(body(BodyKind::Empty))),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Ok(body(BodyKind::Empty)),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                Ok(body(BodyKind::Length(5))),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 005\r\n\r\n",
                Ok(body(BodyKind::Length(5))),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Ok(body(BodyKind::Length(5))),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Err(H1Error::ConflictingContentLength),
            ),
            // A list is a list of lengths to hyper's client, not to its server.
            (
                "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                Err(H1Error::InvalidContentLength),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551614\r\n\r\n",
                Err(H1Error::ContentLengthTooLarge),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551613\r\n\r\n",
                Ok(body(BodyKind::Length(u64::MAX - 2))),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(&framing(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn request_transfer_codings() {
        let chunked = body(BodyKind::Chunked);
        let cases: &[(&str, Result<Framing, H1Error>)] = &[
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED \r\n\r\n",
                Ok(chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Ok(chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                Err(H1Error::TransferEncodingNotChunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                Err(H1Error::TransferEncodingNotChunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
                Err(H1Error::TransferEncodingNotChunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
                Err(H1Error::TransferEncodingNotChunked),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(H1Error::TransferEncodingHttp10),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(&framing(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn both_framing_headers() {
        let closing = Ok(Framing {
            body: BodyKind::Chunked,
            close_after: true,
            upgrade: false,
        });
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            // After the transfer coding, a length is not even read (hyper).
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
        ] {
            assert_eq!(framing(raw), closing, "{raw:?}");
        }
        // Before it, it is.
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(H1Error::InvalidContentLength)
        );
    }

    #[test]
    fn framed_headers() {
        let map = |raw: &str| {
            let (head, _) = parse_request(raw.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap();
            let framing = request_framing(&head).unwrap();
            let map = head.framed_header_map(&framing);
            assert_eq!(map.len(), head.headers.len() - 1, "{raw:?}");
            map
        };
        let once = map("POST / HTTP/1.1\r\nContent-Length: 3\r\nX: 1\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(once.get_all(CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(once["x"], "1");
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            let chunked = map(raw);
            assert!(!chunked.contains_key(CONTENT_LENGTH));
            assert_eq!(chunked[TRANSFER_ENCODING], "chunked");
        }
    }

    #[test]
    fn request_upgrades() {
        let up = |raw| framing(raw).unwrap().upgrade;
        assert!(up("CONNECT a:443 HTTP/1.1\r\n\r\n"));
        assert!(up("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
        assert!(!up("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"));
        assert!(!up("GET / HTTP/1.1\r\n\r\n"));
    }

    fn response(raw: &str, method: &Method) -> Result<Framing, H1Error> {
        let (head, _) = parse_response(raw.as_bytes(), &Limits::UPSTREAM)
            .unwrap()
            .unwrap();
        response_framing(&head, method)
    }

    #[test]
    fn response_bodies() {
        let get = &Method::GET;
        let cases: &[(&str, &Method, Result<Framing, H1Error>)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                get,
                Ok(body(BodyKind::Length(5))),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD,
                Ok(body(BodyKind::Empty)),
            ),
            (
                "HTTP/1.1 204 No\r\nContent-Length: 5\r\n\r\n",
                get,
                Ok(body(BodyKind::Empty)),
            ),
            (
                "HTTP/1.1 304 No\r\nTransfer-Encoding: chunked\r\n\r\n",
                get,
                Ok(body(BodyKind::Empty)),
            ),
            (
                "HTTP/1.1 100 Go\r\nContent-Length: 5\r\n\r\n",
                get,
                Ok(body(BodyKind::Empty)),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                get,
                Ok(body(BodyKind::CloseDelimited)),
            ),
            (
                "HTTP/1.0 200 OK\r\n\r\n",
                get,
                Ok(body(BodyKind::CloseDelimited)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                get,
                Ok(body(BodyKind::Length(5))),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5,5\r\n\r\n",
                get,
                Ok(body(BodyKind::Length(5))),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                get,
                Err(H1Error::ConflictingContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n",
                get,
                Err(H1Error::InvalidContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                get,
                Err(H1Error::InvalidContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: é\r\n\r\n",
                get,
                Err(H1Error::InvalidContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
                get,
                Err(H1Error::ContentLengthTooLarge),
            ),
        ];
        for (raw, method, want) in cases {
            assert_eq!(&response(raw, method), want, "{method} {raw:?}");
        }
    }

    #[test]
    fn response_transfer_codings_and_upgrades() {
        let get = &Method::GET;
        let cases: &[(&str, &Method, Result<Framing, H1Error>)] = &[
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                get,
                Ok(body(BodyKind::Chunked)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                get,
                Ok(body(BodyKind::CloseDelimited)),
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                get,
                Err(H1Error::TransferEncodingHttp10),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
                get,
                Ok(Framing {
                    body: BodyKind::Chunked,
                    close_after: true,
                    upgrade: false,
                }),
            ),
            (
                "HTTP/1.1 101 Up\r\nUpgrade: websocket\r\n\r\n",
                get,
                Ok(Framing {
                    body: BodyKind::Empty,
                    close_after: false,
                    upgrade: true,
                }),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                &Method::CONNECT,
                Ok(Framing {
                    body: BodyKind::Empty,
                    close_after: false,
                    upgrade: true,
                }),
            ),
            (
                "HTTP/1.1 407 Auth\r\nContent-Length: 1\r\n\r\n",
                &Method::CONNECT,
                Ok(body(BodyKind::Length(1))),
            ),
        ];
        for (raw, method, want) in cases {
            assert_eq!(&response(raw, method), want, "{method} {raw:?}");
        }
    }

    #[test]
    fn length_and_close_delimited_decoders() {
        let mut d = BodyKind::Length(5).decoder(&Limits::default());
        assert_eq!(decode_all(&mut d, b"abc"), Ok((b"abc".to_vec(), 3, false)));
        assert_eq!(d.finish(), Err(H1Error::IncompleteBody));
        assert_eq!(decode_all(&mut d, b"defGET"), Ok((b"de".to_vec(), 2, true)));
        assert!(d.is_done());
        assert_eq!(d.finish(), Ok(()));
        assert_eq!(d.trailers(), None);
        let mut empty = BodyKind::Empty.decoder(&Limits::default());
        assert!(empty.is_done());
        assert_eq!(decode_all(&mut empty, b"GET"), Ok((vec![], 0, true)));
        let mut eof = BodyKind::CloseDelimited.decoder(&Limits::default());
        assert_eq!(
            decode_all(&mut eof, b"all of it"),
            Ok((b"all of it".to_vec(), 9, false))
        );
        assert!(!eof.is_done());
        assert_eq!(eof.finish(), Ok(()));
        let mut big = BodyKind::Length(u64::MAX - 2).decoder(&Limits::default());
        assert_eq!(decode_all(&mut big, b"xy"), Ok((b"xy".to_vec(), 2, false)));
        assert_eq!(big, BodyDecoder::Length(u64::MAX - 4));
    }
}
