//! The HTTP/1.1 codec (`proxy::h1`): the input is the byte stream of one connection, read as
//! requests (or, by the control byte, as responses to a GET, HEAD, CONNECT or POST): heads,
//! framing, bodies, one message after the other until an error or the end.
//!
//! The first byte controls the run: bit 7 requests or responses, bit 6 small limits (so
//! that they are reached) or the proxy's, bits 4-5 the request method responses answer,
//! bits 0-3 how the stream is cut into pieces. The stream is read twice, whole and in those
//! pieces (fed one at a time, as reads from a socket would come), and both readings must see
//! the same messages, the same body bytes and the same end: the codec may not depend on where
//! reads happen to split. Every call's counts must stay within its input, and a decoder that
//! is neither done nor returned data must have consumed all of it.
//!
//! Every accepted head is written again with the codec's writers and must parse back to
//! itself; every accepted chunked body is encoded again with the chunked encoder and must
//! decode back to itself, trailers included.
#![no_main]

use hyper::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use proxy::h1::{
    BodyKind, ChunkedDecoder, ChunkedEncoder, H1Error, Limits, RequestHead, ResponseHead,
    eof_is_clean, parse_request, parse_response, request_framing, response_framing,
    write_request_head, write_response_head,
};

/// Small enough for the fuzzer to reach every limit.
const SMALL: Limits = Limits {
    max_head_bytes: 256,
    max_headers: 4,
    max_trailer_bytes: 64,
    max_trailers: 3,
};

/// Piece sizes the control byte picks from (the pieces vary around them).
const PIECES: [usize; 16] = [1, 1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 100, 256, 1024, 65536];

/// What a reading saw.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A head (its debug form) and its framing, or the framing's error.
    Head(String, Result<String, H1Error>),
    /// A whole body, as the decoder gave it, and its trailers.
    Body(Vec<u8>, Option<HeaderMap>),
    /// A body error: exactly which, since the decoder reads byte by byte.
    BodyError(H1Error),
    /// A head error (which one may depend on how much of the head had arrived).
    HeadError,
    /// The stream ended between messages: cleanly or in the middle of a head.
    End { clean: bool },
    /// The connection is no longer HTTP (an upgrade, a CONNECT tunnel) or ends with the body.
    Stop,
}

/// The stream, handed out whole or in pieces.
struct Feed<'a> {
    input: &'a [u8],
    fed: usize,
    /// Pieces of 1 to 2 × this many bytes; `None`: all at once.
    piece: Option<usize>,
    rng: u32,
}

impl<'a> Feed<'a> {
    fn new(input: &'a [u8], piece: Option<usize>) -> Self {
        let rng = 0x9e37_79b9 ^ u32::try_from(input.len()).unwrap_or(u32::MAX);
        Self {
            input,
            fed: 0,
            piece,
            rng,
        }
    }

    /// Appends the next piece to `pending`; false when the stream has ended.
    fn more(&mut self, pending: &mut Vec<u8>) -> bool {
        let rest = self.input.len() - self.fed;
        if rest == 0 {
            return false;
        }
        let n = match self.piece {
            None => rest,
            Some(piece) => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 17;
                self.rng ^= self.rng << 5;
                let r = usize::try_from(self.rng).unwrap_or(usize::MAX);
                (1 + r % (2 * piece)).min(rest)
            }
        };
        pending.extend_from_slice(&self.input[self.fed..self.fed + n]);
        self.fed += n;
        true
    }
}

/// A parsed head, whichever side.
enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

fn read(mut feed: Feed<'_>, limits: &Limits, responses: Option<&Method>) -> Vec<Event> {
    let mut events = Vec::new();
    let mut pending = Vec::new();
    loop {
        // A head.
        let parsed = loop {
            let parsed = match responses {
                None => parse_request(&pending, limits).map(|h| h.map(|(h, n)| (Head::Request(h), n))),
                Some(_) => parse_response(&pending, limits).map(|h| h.map(|(h, n)| (Head::Response(h), n))),
            };
            match parsed {
                Ok(Some((head, n))) => {
                    assert!(n <= pending.len(), "a head took more than its input");
                    pending.drain(..n);
                    break head;
                }
                Ok(None) if feed.more(&mut pending) => {}
                Ok(None) => {
                    events.push(Event::End {
                        clean: eof_is_clean(&pending),
                    });
                    return events;
                }
                Err(_) => {
                    events.push(Event::HeadError);
                    return events;
                }
            }
        };
        let framing = match &parsed {
            Head::Request(head) => request_framing(head),
            Head::Response(head) => response_framing(head, responses.unwrap_or(&Method::GET)),
        };
        let summary = match &parsed {
            Head::Request(head) => format!("{head:?}"),
            Head::Response(head) => format!("{head:?}"),
        };
        events.push(Event::Head(summary, framing.clone().map(|f| format!("{f:?}"))));
        let Ok(framing) = framing else {
            return events;
        };
        check_written(&parsed, &framing, limits);
        if let Head::Response(head) = &parsed
            && head.is_interim()
        {
            continue;
        }
        // Its body.
        let mut decoder = framing.body.decoder(limits);
        let mut body = Vec::new();
        loop {
            let before = pending.len();
            let d = match decoder.decode(&pending) {
                Ok(d) => d,
                Err(e) => {
                    events.push(Event::BodyError(e));
                    return events;
                }
            };
            assert!(d.consumed <= before, "a decoder took more than its input");
            assert!(d.data.start <= d.data.end && d.data.end <= d.consumed);
            assert!(
                d.done || !d.data.is_empty() || d.consumed == before,
                "a decoder stopped early without data"
            );
            assert_eq!(d.done, decoder.is_done());
            body.extend_from_slice(&pending[d.data.clone()]);
            pending.drain(..d.consumed);
            if d.done {
                break;
            }
            if pending.is_empty() && !feed.more(&mut pending) {
                match decoder.finish() {
                    Ok(()) => events.push(Event::Body(body, None)),
                    Err(e) => events.push(Event::BodyError(e)),
                }
                events.push(Event::Stop);
                return events;
            }
        }
        if framing.body == BodyKind::Chunked {
            check_reencoded(&body, decoder.trailers(), limits);
        }
        events.push(Event::Body(body, decoder.trailers().cloned()));
        let tunnel = framing.upgrade && matches!(parsed, Head::Response(_));
        if tunnel || framing.close_after {
            events.push(Event::Stop);
            return events;
        }
    }
}

/// The head written again parses back to the same head.
fn check_written(head: &Head, framing: &proxy::h1::Framing, limits: &Limits) {
    let roomy = Limits {
        max_head_bytes: 2 * limits.max_head_bytes + 64,
        ..*limits
    };
    let mut out = Vec::new();
    match head {
        Head::Request(head) => {
            let map = head.framed_header_map(framing);
            write_request_head(&head.method, &head.target.to_string(), &map, &mut out)
                .expect("a parsed request head can be written");
            let (again, n) = parse_request(&out, &roomy)
                .expect("a written request head parses")
                .expect("a written request head is complete");
            assert_eq!(n, out.len());
            assert_eq!(again.method, head.method);
            assert_eq!(again.target, head.target);
            assert_eq!(again.to_header_map(), map);
        }
        Head::Response(head) => {
            let map = head.to_header_map();
            write_response_head(head.version, head.status, &map, &mut out)
                .expect("a parsed response head can be written");
            let (again, n) = parse_response(&out, &roomy)
                .expect("a written response head parses")
                .expect("a written response head is complete");
            assert_eq!(n, out.len());
            assert_eq!((again.version, again.status), (head.version, head.status));
            assert_eq!(again.to_header_map(), map);
        }
    }
}

/// A chunked body encoded again decodes back to the same data and trailers.
fn check_reencoded(body: &[u8], trailers: Option<&HeaderMap>, limits: &Limits) {
    let mut out = Vec::new();
    let mut encoder = ChunkedEncoder::default();
    for piece in body.chunks(7) {
        encoder.encode(piece, &mut out);
    }
    assert_eq!(encoder.finish(trailers, &mut out), body.len() as u64);
    let mut decoder = ChunkedDecoder::new(&Limits {
        max_trailer_bytes: out.len() + 1,
        ..*limits
    });
    let mut again = Vec::new();
    let mut at = 0;
    while !decoder.is_done() {
        let d = decoder.decode(&out[at..]).expect("an encoded body decodes");
        again.extend_from_slice(&out[at..][d.data.clone()]);
        at += d.consumed;
        assert!(d.consumed > 0 || d.done, "an encoded body ended early");
    }
    assert_eq!(at, out.len());
    assert_eq!(again, body);
    let empty = HeaderMap::new();
    let want = trailers.filter(|t| !t.is_empty());
    assert_eq!(decoder.trailers().filter(|t| *t != &empty), want);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let method = [Method::GET, Method::HEAD, Method::CONNECT, Method::POST]
        [usize::from(control >> 4) & 3]
        .clone();
    let responses = (control & 0x80 != 0).then_some(&method);
    let limits = if control & 0x40 != 0 {
        SMALL
    } else {
        Limits::default()
    };
    let whole = read(Feed::new(input, None), &limits, responses);
    let piece = PIECES[usize::from(control & 0x0f)];
    let pieces = read(Feed::new(input, Some(piece)), &limits, responses);
    assert_eq!(whole, pieces, "a split changed the reading (pieces around {piece})");
});
