//! Differential test of the HTTP/1.1 codec (`proxy::h1`) against hyper.
//!
//! Every case is a byte stream one peer sends on one connection. Requests go through (a)
//! hyper's HTTP/1 server, configured as the proxy's listeners configure it (`max_buf_size`,
//! `max_headers`, upgrades on), over an in-memory duplex, with a service that records each
//! request (method, target, version, headers, body or body error, trailers) and answers 200;
//! and (b) the codec on the same bytes, driven the way hyper drives a connection (heads,
//! framing, bodies, pipelining, keep-alive, a clean or broken end). Responses go through
//! hyper's HTTP/1 client (the proxy's upstream settings: the defaults) after one request, and
//! through the codec.
//!
//! Both must agree: the same messages, in order, with the same bodies, and the same end. Where
//! the codec is stricter on purpose, the case is in [`STRICTER`] with the reason, and the test
//! checks that hyper accepts it and the codec refuses it, so the list cannot go stale.
//!
//! Every accepted request and response is then written again with the codec's writers and
//! chunked encoder (what the proxy would forward) and read back by hyper, which must see the
//! same message.
use std::{
    convert::Infallible,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, body::Incoming, client, ext::ReasonPhrase,
    server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use proxy::h1::{
    BodyKind, ChunkedEncoder, Limits, eof_is_clean, parse_request, parse_response, request_framing,
    response_framing, write_request_head, write_response_head,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The proxy's default listener limits (`limits.max_header_bytes`, `limits.max_headers`).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
/// Generous: every case is a few KiB in memory.
const PATIENCE: Duration = Duration::from_secs(10);

/// Cases the codec refuses and hyper accepts, on purpose, with the reason. Only the strict
/// side is allowed here, and only where the lenient reading is a risk.
const STRICTER: &[(&str, &str)] = &[
    (
        "chunk size with 18 digits (leading zeros)",
        "hyper reads any number of leading zeros in a chunk size; a size line of unbounded \
         length is read differently by parsers that cap the digits they read (they then take the \
         rest of the line as data, a known desync), and it keeps the line unbounded. 16 hex \
         digits hold every 64-bit size.",
    ),
    (
        "chunk size followed by 16 KiB of spaces",
        "hyper reads any amount of whitespace after a chunk size (RFC 9112 allows none outside \
         a chunk extension); the codec counts it against the 16 KiB extension budget so a size \
         line is always bounded.",
    ),
];

/// What one side saw of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    /// `METHOD target HTTP/1.x` or `HTTP/1.x code reason`.
    line: String,
    headers: Vec<(String, String)>,
    /// The body (escaped), or `Err` if it was refused or cut short.
    body: Result<String, ()>,
    trailers: Option<Vec<(String, String)>>,
}

/// What one side saw of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transcript {
    messages: Vec<Message>,
    /// The connection ended cleanly (`true`) or with an error (a refused head, a body cut
    /// short, bytes that never became a message).
    clean: bool,
}

impl Transcript {
    fn accepted(&self) -> bool {
        self.clean && self.messages.iter().all(|m| m.body.is_ok())
    }
}

fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn header_list(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_owned(), escape(v.as_bytes())))
        .collect()
}

/// `H1_DIFF_SHOW=1`: print what hyper made of every case (with `--nocapture`).
fn show() -> bool {
    std::env::var_os("H1_DIFF_SHOW").is_some()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// Requests

/// hyper's server on `input`: what the service saw, and how the connection ended.
async fn hyper_server(input: &[u8]) -> Transcript {
    let (mut peer, server) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let (body, trailers) = match body.collect().await {
                Ok(c) => {
                    let trailers = c.trailers().map(header_list);
                    (Ok(escape(&c.to_bytes())), trailers)
                }
                Err(_) => (Err(()), None),
            };
            record.lock().expect("record lock").push(Message {
                line: format!("{} {} {:?}", parts.method, parts.uri, parts.version),
                headers: header_list(&parts.headers),
                body,
                trailers,
            });
            // Keeps HTTP/1.0 keep-alive connections open, as a proxy answering them would.
            Ok::<_, Infallible>(
                Response::builder()
                    .header("connection", "keep-alive")
                    .body(Empty::<Bytes>::new())
                    .expect("response"),
            )
        }
    });
    // `half_close`: the input ends with the peer's half-close, and hyper must still serve what
    // came before it (by default it drops requests in flight when its read side sees EOF,
    // which concerns connections, not how bytes are parsed).
    let conn = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .half_close(true)
        .serve_connection(TokioIo::new(server), service)
        .with_upgrades();
    let task = tokio::spawn(conn);
    peer.write_all(input).await.expect("write the input");
    peer.shutdown().await.expect("half-close");
    let mut answers = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, peer.read_to_end(&mut answers)).await;
    let clean = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("hyper's connection ends")
        .expect("hyper's connection task")
        .is_ok();
    let messages = seen.lock().expect("record lock").clone();
    Transcript { messages, clean }
}

/// The codec on `input`, driven as hyper's server drives a connection whose service answers
/// every request with 200: requests one after the other until the input ends, an error, a
/// request that does not keep the connection, or a `CONNECT` (a tunnel after the 200).
fn codec_server(input: &[u8]) -> Transcript {
    let limits = Limits::listener(MAX_HEAD, MAX_HEADERS);
    let mut messages = Vec::new();
    let mut at = 0;
    loop {
        let rest = &input[at..];
        let (head, n) = match parse_request(rest, &limits) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                return Transcript {
                    messages,
                    clean: eof_is_clean(rest),
                };
            }
            Err(_) => {
                return Transcript {
                    messages,
                    clean: false,
                };
            }
        };
        at += n;
        let Ok(framing) = request_framing(&head) else {
            return Transcript {
                messages,
                clean: false,
            };
        };
        let mut decoder = framing.body.decoder(&limits);
        let mut body = Vec::new();
        let outcome = loop {
            match decoder.decode(&input[at..]) {
                Err(e) => break Err(e),
                Ok(d) => {
                    body.extend_from_slice(&input[at..][d.data.clone()]);
                    at += d.consumed;
                    if d.done {
                        break Ok(());
                    }
                    if d.consumed == 0 && d.data.is_empty() {
                        break decoder.finish();
                    }
                }
            }
        };
        messages.push(Message {
            line: format!("{} {} {:?}", head.method, head.target, head.version),
            headers: header_list(&head.framed_header_map(&framing)),
            body: outcome.as_ref().map(|()| escape(&body)).map_err(|_| ()),
            trailers: decoder.trailers().map(header_list),
        });
        // A body error goes to whoever reads the body, and ends the connection; hyper's
        // connection itself then ends without an error.
        if outcome.is_err() {
            return Transcript {
                messages,
                clean: true,
            };
        }
        if !head.keep_alive() || framing.close_after || head.method == Method::CONNECT {
            return Transcript {
                messages,
                clean: true,
            };
        }
    }
}

/// The bytes the codec would forward for the first request of `input`: its head written
/// again (HTTP/1.1, headers as [`proxy::h1::RequestHead::framed_header_map`] has them) and its body,
/// re-chunked if it was chunked.
fn forwarded_request(input: &[u8]) -> Vec<u8> {
    let limits = Limits::listener(MAX_HEAD, MAX_HEADERS);
    let (head, n) = parse_request(input, &limits)
        .expect("accepted")
        .expect("complete");
    let framing = request_framing(&head).expect("accepted");
    let headers = head.framed_header_map(&framing);
    let mut out = Vec::new();
    write_request_head(&head.method, &head.target.to_string(), &headers, &mut out)
        .expect("a parsed head can be written");
    let mut decoder = framing.body.decoder(&limits);
    let mut encoder = ChunkedEncoder::default();
    let mut at = n;
    loop {
        let d = decoder.decode(&input[at..]).expect("accepted body");
        let data = &input[at..][d.data.clone()];
        if framing.body == BodyKind::Chunked {
            encoder.encode(data, &mut out);
        } else {
            out.extend_from_slice(data);
        }
        at += d.consumed;
        if d.done {
            break;
        }
    }
    if framing.body == BodyKind::Chunked {
        encoder.finish(decoder.trailers(), &mut out);
    }
    out
}

/// A name and the bytes of one connection.
type Case = (String, Vec<u8>);

fn case(name: &str, bytes: impl AsRef<[u8]>) -> Case {
    (name.to_owned(), bytes.as_ref().to_vec())
}

/// `tests/tests/hostile.rs`'s `SMUGGLING` corpus, byte for byte.
const SMUGGLING: &[(&str, &str)] = &[
    (
        "CL.TE",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    ),
    (
        "TE.CL",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    ),
    (
        "TE with a space before the colon",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE xchunked",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE chunked, identity",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE gzip (not chunked last)",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ),
    (
        "TE in two lines",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE with a vertical tab",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE on HTTP/1.0",
        "POST / HTTP/1.0\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "two different Content-Length",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    (
        "Content-Length list that disagrees",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3, 4\r\n\r\nabcd",
    ),
    (
        "Content-Length with a sign",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: +3\r\n\r\nabc",
    ),
    (
        "Content-Length negative",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: -1\r\n\r\nabc",
    ),
    (
        "Content-Length in hex",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 0x3\r\n\r\nabc",
    ),
    (
        "Content-Length overflowing",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
    ),
    (
        "chunk size overflowing",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk size with 0x",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk size negative",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk data longer than its size",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    ),
    (
        "bare CR in a header value",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-A: a\rb\r\n\r\n",
    ),
    (
        "NUL in a header value",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-A: a\0b\r\n\r\n",
    ),
    (
        "space in a header name",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX A: b\r\n\r\n",
    ),
    (
        "obsolete line folding",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-A: a\r\n b\r\n\r\n",
    ),
    (
        "request line with a tab",
        "GET\t/ HTTP/1.1\r\nHost: www.test\r\n\r\n",
    ),
    (
        "CL body with a pipelined request after it",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\nabcGET /admin/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    ),
    (
        "chunked with an extension",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3;name=\"v;al\"\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunked, TE in capitals",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "bare LF line endings",
        "POST / HTTP/1.1\nHost: www.test\nContent-Length: 3\n\nabc",
    ),
    (
        "chunk size line ended by a bare LF",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    ),
    (
        "equal Content-Length twice",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    ),
    (
        "chunked with a smuggled request in the body",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n22\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n",
    ),
];

/// A chunked POST with this body (framing and all).
fn chunked(body: impl AsRef<[u8]>) -> Vec<u8> {
    [
        b"POST /up HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
        body.as_ref(),
    ]
    .concat()
}

/// A POST with these framing headers (each line without its CRLF) and this body.
fn post(headers: &[&str], body: &str) -> Vec<u8> {
    let mut raw = String::from("POST /p HTTP/1.1\r\nHost: www.test\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw.into_bytes()
}

fn get(line: &str, headers: &[&str]) -> Vec<u8> {
    let mut raw = format!("{line}\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

#[expect(
    clippy::too_many_lines,
    reason = "a table of cases, one per line or three"
)]
fn chunked_cases() -> Vec<Case> {
    let long_ext = |n: usize| format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(n));
    let mut too_many_trailers = String::from("3\r\nabc\r\n0\r\n");
    for i in 0..=MAX_HEADERS {
        let _ = write!(too_many_trailers, "T{i}: v\r\n");
    }
    too_many_trailers.push_str("\r\n");
    vec![
        case(
            "chunked, two chunks",
            chunked("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        ),
        case("chunked, empty body", chunked("0\r\n\r\n")),
        case(
            "chunked, hex in capitals",
            chunked("A\r\n0123456789\r\n0\r\n\r\n"),
        ),
        case(
            "chunked, leading zeros",
            chunked("0003\r\nabc\r\n000\r\n\r\n"),
        ),
        case(
            "chunk size with 16 digits (leading zeros)",
            chunked("0000000000000003\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size with 18 digits (leading zeros)",
            chunked("000000000000000003\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size of 16 f's, then EOF",
            chunked("ffffffffffffffff\r\nabc"),
        ),
        case(
            "chunk size 17 digits",
            chunked("10000000000000000\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size with a + sign",
            chunked("+3\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size with a space before",
            chunked(" 3\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size with a space after",
            chunked("3 \r\nabc\r\n0 \r\n\r\n"),
        ),
        case(
            "chunk size with a tab after",
            chunked("3\t\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size with a space inside",
            chunked("1 0\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size with junk after",
            chunked("3x\r\nabc\r\n0\r\n\r\n"),
        ),
        case("chunk size missing", chunked("\r\nabc\r\n0\r\n\r\n")),
        case(
            "chunk size followed by 16 KiB of spaces",
            chunked(format!("3{}\r\nabc\r\n0\r\n\r\n", " ".repeat(16 * 1024))),
        ),
        case(
            "chunk-size line CR without LF",
            chunked("3\rabc\r\n0\r\n\r\n"),
        ),
        case("chunk extension", chunked("3;a=b\r\nabc\r\n0;last\r\n\r\n")),
        case(
            "chunk extension after a space",
            chunked("3 ;a=b\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk extension with a bare LF",
            chunked("3;a\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk extension with control bytes",
            chunked("3;\0\x01\x7f\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk extensions just under 16 KiB",
            chunked(long_ext(16 * 1024 - 2)),
        ),
        case("chunk extensions of 16 KiB", chunked(long_ext(16 * 1024))),
        case(
            "chunk data followed by a bare LF",
            chunked("3\r\nabc\n0\r\n\r\n"),
        ),
        case(
            "chunk data followed by CR and junk",
            chunked("3\r\nabc\rx0\r\n\r\n"),
        ),
        case(
            "chunk data shorter than its size",
            chunked("5\r\nabc\r\n0\r\n\r\n"),
        ),
        case("last chunk with a bare LF", chunked("3\r\nabc\r\n0\n\r\n")),
        case("missing final CRLF", chunked("3\r\nabc\r\n0\r\n")),
        case("final CRLF half sent", chunked("3\r\nabc\r\n0\r\n\r")),
        case("final bare LF", chunked("3\r\nabc\r\n0\r\n\n")),
        case(
            "final bare LF then CRLF",
            chunked("3\r\nabc\r\n0\r\n\n\r\n\r\n"),
        ),
        case("no last chunk", chunked("3\r\nabc\r\n")),
        case(
            "trailers",
            chunked("3\r\nabc\r\n0\r\nX-Sum: 1\r\nx-sum: 2\r\n\r\n"),
        ),
        case(
            "trailer folded",
            chunked("3\r\nabc\r\n0\r\nX-Sum: 1\r\n 2\r\n\r\n"),
        ),
        case(
            "trailer with a space before the colon",
            chunked("3\r\nabc\r\n0\r\nX-Sum : 1\r\n\r\n"),
        ),
        case(
            "trailer lines split by a bare LF",
            chunked("3\r\nabc\r\n0\r\nX-A: 1\nX-B: 2\r\n\r\n"),
        ),
        case(
            "trailer line ended by a bare LF",
            chunked("3\r\nabc\r\n0\r\nX-A: 1\n\r\n\r\n"),
        ),
        case(
            "trailer with a NUL",
            chunked("3\r\nabc\r\n0\r\nX-A: 1\x002\r\n\r\n"),
        ),
        case(
            "trailer CR without LF",
            chunked("3\r\nabc\r\n0\r\nX-A: 1\rX\r\n\r\n"),
        ),
        case(
            "trailer Content-Length and Transfer-Encoding",
            chunked("3\r\nabc\r\n0\r\nContent-Length: 9\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ),
        case(
            "trailers of 16 KiB",
            chunked(format!("0\r\nX-Big: {}\r\n\r\n", "v".repeat(16 * 1024))),
        ),
        case(
            "trailers just under 16 KiB",
            chunked(format!(
                "0\r\nX-Big: {}\r\n\r\n",
                "v".repeat(16 * 1024 - 12)
            )),
        ),
        case("101 trailer lines", chunked(too_many_trailers)),
        case(
            "chunked then a pipelined request",
            [
                chunked("3\r\nabc\r\n0\r\n\r\n"),
                get("GET /next HTTP/1.1", &["Host: www.test"]),
            ]
            .concat(),
        ),
        case(
            "chunked with trailers then a pipelined request",
            [
                chunked("1\r\na\r\n0\r\nX: y\r\n\r\n"),
                get("GET /next HTTP/1.1", &["Host: www.test"]),
            ]
            .concat(),
        ),
    ]
}

#[expect(
    clippy::too_many_lines,
    reason = "a table of cases, one per line or three"
)]
fn length_and_coding_cases() -> Vec<Case> {
    vec![
        case("CL zero", post(&["Content-Length: 0"], "")),
        case(
            "CL with leading zeros",
            post(&["Content-Length: 003"], "abc"),
        ),
        case(
            "CL with spaces around",
            post(&["Content-Length:   3  "], "abc"),
        ),
        case(
            "CL with a space inside",
            post(&["Content-Length: 3 3"], "abc"),
        ),
        case(
            "CL list of equal values",
            post(&["Content-Length: 3, 3"], "abc"),
        ),
        case(
            "CL list without a space",
            post(&["Content-Length: 3,3"], "abc"),
        ),
        case("CL empty", post(&["Content-Length: "], "abc")),
        case("CL with a tab", post(&["Content-Length:\t3"], "abc")),
        case("CL with letters", post(&["Content-Length: 3a"], "abc")),
        case("CL obs-text", post(&["Content-Length: 3\u{e9}"], "abc")),
        case(
            "CL u64::MAX - 2, short body",
            post(&["Content-Length: 18446744073709551613"], "abc"),
        ),
        case(
            "CL u64::MAX - 1",
            post(&["Content-Length: 18446744073709551614"], "abc"),
        ),
        case(
            "CL duplicated, then different",
            post(
                &[
                    "Content-Length: 3",
                    "Content-Length: 3",
                    "Content-Length: 4",
                ],
                "abcd",
            ),
        ),
        case(
            "CL longer than the body",
            post(&["Content-Length: 10"], "abc"),
        ),
        case(
            "CL shorter than the body",
            post(&["Content-Length: 2"], "abc"),
        ),
        case("CL on a GET", get("GET / HTTP/1.1", &["Content-Length: 2"])),
        case(
            "TE chunked with a trailing space",
            [
                post(&["Transfer-Encoding: chunked "], ""),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE Chunked",
            [
                post(&["Transfer-Encoding: Chunked"], ""),
                b"1\r\na\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE gzip, chunked",
            [
                post(&["Transfer-Encoding: gzip, chunked"], ""),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE gzip then TE chunked",
            [
                post(
                    &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
                    "",
                ),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE chunked twice",
            [
                post(
                    &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                    "",
                ),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE chunked then TE gzip",
            [
                post(
                    &["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"],
                    "",
                ),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE chunked, chunked",
            [
                post(&["Transfer-Encoding: chunked, chunked"], ""),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE with an empty item before chunked",
            [
                post(&["Transfer-Encoding: , chunked"], ""),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case(
            "TE chunked with an empty item after",
            [
                post(&["Transfer-Encoding: chunked,"], ""),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        case("TE identity", post(&["Transfer-Encoding: identity"], "abc")),
        case("TE empty", post(&["Transfer-Encoding: "], "abc")),
        case(
            "TE quoted chunked",
            post(&["Transfer-Encoding: \"chunked\""], "0\r\n\r\n"),
        ),
        case(
            "TE chunked with a parameter",
            post(&["Transfer-Encoding: chunked;q=1"], "0\r\n\r\n"),
        ),
        case(
            "TE chunked with obs-text",
            post(&["Transfer-Encoding: chunked\u{e9}"], "0\r\n\r\n"),
        ),
        case(
            "TE chunked then an invalid CL",
            post(
                &["Transfer-Encoding: chunked", "Content-Length: abc"],
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        case(
            "an invalid CL then TE chunked",
            post(
                &["Content-Length: abc", "Transfer-Encoding: chunked"],
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        case(
            "CL, TE, different CL",
            post(
                &[
                    "Content-Length: 3",
                    "Transfer-Encoding: chunked",
                    "Content-Length: 4",
                ],
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        case(
            "TE.CL with a pipelined request (never read)",
            [
                post(
                    &["Transfer-Encoding: chunked", "Content-Length: 100"],
                    "3\r\nabc\r\n0\r\n\r\n",
                ),
                get("GET /next HTTP/1.1", &["Host: www.test"]),
            ]
            .concat(),
        ),
    ]
}

#[expect(
    clippy::too_many_lines,
    reason = "a table of cases, one per line or three"
)]
fn head_cases() -> Vec<Case> {
    let many_headers: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
    let many_headers: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let big = format!("X-Big: {}", "v".repeat(20 * 1024));
    let near = format!("X-Big: {}", "v".repeat(15 * 1024));
    let over = format!("X-Big: {}", "v".repeat(17 * 1024));
    let long_target = format!("GET /{} HTTP/1.1", "a".repeat(9000));
    vec![
        case("plain GET", get("GET / HTTP/1.1", &["Host: www.test"])),
        case("no Host", get("GET / HTTP/1.1", &[])),
        case("two Host", get("GET / HTTP/1.1", &["Host: a", "Host: b"])),
        case("lowercase method", get("get / HTTP/1.1", &["Host: a"])),
        case("extension method", get("PURGE /x HTTP/1.1", &["Host: a"])),
        case(
            "method with a bad byte",
            get("GE(T / HTTP/1.1", &["Host: a"]),
        ),
        case(
            "absolute-form",
            get("GET http://www.test/x?y=1 HTTP/1.1", &["Host: www.test"]),
        ),
        case(
            "absolute-form https with a port",
            get("GET https://www.test:8443/x HTTP/1.1", &["Host: www.test"]),
        ),
        case(
            "absolute-form with userinfo",
            get("GET http://u:p@www.test/ HTTP/1.1", &["Host: www.test"]),
        ),
        case(
            "absolute-form odd scheme",
            get("GET ftp://www.test/ HTTP/1.1", &[]),
        ),
        case(
            "absolute-form without a path",
            get("GET http://www.test HTTP/1.1", &[]),
        ),
        case(
            "absolute-form with only a query",
            get("GET http://www.test?x=1 HTTP/1.1", &[]),
        ),
        case(
            "absolute-form with an empty port",
            get("GET http://www.test:/ HTTP/1.1", &[]),
        ),
        case(
            "authority-form CONNECT",
            get("CONNECT www.test:443 HTTP/1.1", &["Host: www.test:443"]),
        ),
        case(
            "CONNECT then bytes for the tunnel",
            [
                get("CONNECT www.test:443 HTTP/1.1", &[]),
                b"\x16\x03\x01 tls".to_vec(),
            ]
            .concat(),
        ),
        case(
            "authority-form on a GET",
            get("GET www.test:80 HTTP/1.1", &[]),
        ),
        case(
            "asterisk-form",
            get("OPTIONS * HTTP/1.1", &["Host: www.test"]),
        ),
        case("target with a fragment", get("GET /a#frag HTTP/1.1", &[])),
        case(
            "target with a non-ASCII byte",
            get("GET /caf\u{e9} HTTP/1.1", &[]),
        ),
        case("target with a brace", get("GET /{x} HTTP/1.1", &[])),
        case("target with a backslash", get("GET /a\\b HTTP/1.1", &[])),
        case("target with a quote", get("GET /a\"b HTTP/1.1", &[])),
        case("target relative", get("GET a/b HTTP/1.1", &[])),
        case("target of 9000 bytes", get(&long_target, &[])),
        case("empty target", get("GET  HTTP/1.1", &[])),
        case("two spaces after the method", get("GET  / HTTP/1.1", &[])),
        case("space in the target", get("GET /a b HTTP/1.1", &[])),
        case(
            "trailing space after the version",
            get("GET / HTTP/1.1 ", &[]),
        ),
        case("HTTP/1.2", get("GET / HTTP/1.2", &[])),
        case("HTTP/2.0 line", get("GET / HTTP/2.0", &[])),
        case("HTTP/0.9 line", b"GET /\r\n"),
        case("lowercase version", get("GET / http/1.1", &[])),
        case("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        case(
            "header name with a tab before the colon",
            get("GET / HTTP/1.1", &["X-A\t: b"]),
        ),
        case(
            "header name with a bad byte",
            get("GET / HTTP/1.1", &["X(A): b"]),
        ),
        case("header name empty", get("GET / HTTP/1.1", &[": b"])),
        case(
            "header line without a colon",
            get("GET / HTTP/1.1", &["X-A"]),
        ),
        case("folded first header", get("GET / HTTP/1.1", &[" X-A: b"])),
        case(
            "folded with a tab",
            get("GET / HTTP/1.1", &["X-A: a", "\tb"]),
        ),
        case(
            "header value with DEL",
            get("GET / HTTP/1.1", &["X-A: a\x7fb"]),
        ),
        case(
            "header value with a vertical tab",
            get("GET / HTTP/1.1", &["X-A: a\x0bb"]),
        ),
        case(
            "header value with a form feed",
            get("GET / HTTP/1.1", &["X-A: a\x0cb"]),
        ),
        case(
            "header value with ESC",
            get("GET / HTTP/1.1", &["X-A: a\x1bb"]),
        ),
        case(
            "header value with obs-text",
            get("GET / HTTP/1.1", &["X-A: caf\u{e9}"]),
        ),
        case(
            "header value with tabs and spaces",
            get("GET / HTTP/1.1", &["X-A: \t a \t b \t "]),
        ),
        case("header value empty", get("GET / HTTP/1.1", &["X-A:"])),
        case("CR LF CR in a head", b"GET / HTTP/1.1\r\nX-A: a\r\n\r\r\n"),
        case("LF CR LF ending", b"GET / HTTP/1.1\nX-A: a\n\r\n"),
        case(
            "mixed line endings",
            b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\n",
        ),
        case("request line ended by CR CR", b"GET / HTTP/1.1\r\r\n\r\n"),
        case("101 headers", get("GET / HTTP/1.1", &many_headers)),
        case(
            "100 headers",
            get("GET / HTTP/1.1", &many_headers[..MAX_HEADERS]),
        ),
        case("head of 20 KiB", get("GET / HTTP/1.1", &[&big])),
        case("head of 15 KiB", get("GET / HTTP/1.1", &[&near])),
        case("head of 17 KiB", get("GET / HTTP/1.1", &[&over])),
        case("head incomplete at EOF", b"GET / HTTP/1.1\r\nHost: a\r\n"),
        case("request line only at EOF", b"GET / HTTP/1.1"),
        case(
            "empty lines before a request",
            [b"\r\n\n\r\n".as_slice(), &get("GET / HTTP/1.1", &[])].concat(),
        ),
        case(
            "empty lines after a request",
            [get("GET / HTTP/1.1", &[]), b"\r\n\n".to_vec()].concat(),
        ),
        case(
            "a CR after a request",
            [get("GET / HTTP/1.1", &[]), b"\r".to_vec()].concat(),
        ),
        case(
            "junk after a request",
            [get("GET / HTTP/1.1", &[]), b"xyz".to_vec()].concat(),
        ),
        case("a CR alone", b"\r"),
        case("nothing", b""),
        case(
            "Expect 100-continue",
            post(&["Expect: 100-continue", "Content-Length: 3"], "abc"),
        ),
        case(
            "Upgrade header, then a pipelined request",
            [
                get(
                    "GET /ws HTTP/1.1",
                    &["Upgrade: websocket", "Connection: upgrade"],
                ),
                get("GET /next HTTP/1.1", &[]),
            ]
            .concat(),
        ),
    ]
}

fn connection_cases() -> Vec<Case> {
    vec![
        case(
            "three pipelined GETs",
            [
                get("GET /1 HTTP/1.1", &["Host: a"]),
                get("GET /2 HTTP/1.1", &["Host: a"]),
                get("GET /3 HTTP/1.1", &["Host: a"]),
            ]
            .concat(),
        ),
        case(
            "pipelined POSTs, CL then chunked then CL 0",
            [
                post(&["Content-Length: 3"], "abc"),
                chunked("2\r\nde\r\n0\r\n\r\n"),
                post(&["Content-Length: 0"], ""),
            ]
            .concat(),
        ),
        case(
            "pipelined, the second refused",
            [
                get("GET /1 HTTP/1.1", &[]),
                get("GET /2 HTTP/1.1", &["X A: b"]),
            ]
            .concat(),
        ),
        case(
            "Connection: close, then a pipelined request",
            [
                get("GET /1 HTTP/1.1", &["Connection: close"]),
                get("GET /2 HTTP/1.1", &[]),
            ]
            .concat(),
        ),
        case(
            "Connection: keep-alive, Close",
            [
                get("GET /1 HTTP/1.1", &["Connection: keep-alive, Close"]),
                get("GET /2 HTTP/1.1", &[]),
            ]
            .concat(),
        ),
        case("HTTP/1.0 GET", get("GET / HTTP/1.0", &[])),
        case(
            "HTTP/1.0, then a pipelined request",
            [get("GET /1 HTTP/1.0", &[]), get("GET /2 HTTP/1.0", &[])].concat(),
        ),
        case(
            "HTTP/1.0 keep-alive, then a pipelined request",
            [
                get("GET /1 HTTP/1.0", &["Connection: keep-alive"]),
                get("GET /2 HTTP/1.0", &[]),
                get("GET /3 HTTP/1.0", &[]),
            ]
            .concat(),
        ),
        case(
            "HTTP/1.0 keep-alive then close",
            [
                get(
                    "GET /1 HTTP/1.0",
                    &["Connection: keep-alive", "Connection: close"],
                ),
                get("GET /2 HTTP/1.0", &[]),
            ]
            .concat(),
        ),
        case(
            "HTTP/1.0 POST with CL",
            b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        ),
        case(
            "HTTP/1.0 POST without a length",
            b"POST / HTTP/1.0\r\n\r\nabc",
        ),
    ]
}

fn request_corpus() -> Vec<Case> {
    let mut corpus: Vec<Case> = SMUGGLING.iter().map(|(n, b)| case(n, b)).collect();
    corpus.extend(chunked_cases());
    corpus.extend(length_and_coding_cases());
    corpus.extend(head_cases());
    corpus.extend(connection_cases());
    corpus
}

#[test]
fn requests_agree_with_hyper() {
    let rt = runtime();
    let corpus = request_corpus();
    let mut names: Vec<&str> = corpus.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), corpus.len(), "case names must be unique");
    for (name, _) in STRICTER {
        assert!(
            names.contains(name),
            "STRICTER lists {name:?}, not in the corpus"
        );
    }
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (name, input) in &corpus {
        let hyper = rt.block_on(hyper_server(input));
        let ours = codec_server(input);
        if show() {
            eprintln!("{name}: hyper {hyper:?}");
        }
        if STRICTER.iter().any(|(n, _)| n == name) {
            if !hyper.accepted() || ours.accepted() {
                failures.push(format!(
                    "{name}: listed as stricter, but hyper accepted: {}, the codec accepted: {}\n  hyper: {hyper:?}\n  codec: {ours:?}",
                    hyper.accepted(),
                    ours.accepted()
                ));
            }
            continue;
        }
        if hyper != ours {
            failures.push(format!(
                "{name}: {}\n  hyper: {hyper:?}\n  codec: {ours:?}",
                escape(input)
            ));
            continue;
        }
        if ours.accepted() {
            accepted += 1;
        } else {
            refused += 1;
        }
        // What the codec would forward reads back, in hyper, as the same first request.
        if let Some(first) = ours.messages.first().filter(|m| m.body.is_ok()) {
            let again = rt.block_on(hyper_server(&forwarded_request(input)));
            let mut want = first.clone();
            want.line = want.line.replace("HTTP/1.0", "HTTP/1.1");
            // An empty trailer section is written as none.
            want.trailers = want.trailers.filter(|t| !t.is_empty());
            if again.messages.first() != Some(&want) {
                failures.push(format!(
                    "{name}: forwarded, hyper reads {:?}, expected {want:?}",
                    again.messages.first()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} request cases: {accepted} accepted whole, {refused} refused (at some point) by both, {} stricter by design",
        corpus.len(),
        STRICTER.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Responses

/// hyper's client sends one `method` request, and reads `input` as the answer.
async fn hyper_client(method: &Method, input: &[u8]) -> Result<Message, ()> {
    let (io, mut server) = tokio::io::duplex(1 << 20);
    let (mut sender, conn) = client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .expect("handshake over a duplex");
    tokio::spawn(conn.with_upgrades());
    let input = input.to_vec();
    let origin = tokio::spawn(async move {
        read_head(&mut server).await;
        server.write_all(&input).await.expect("write the answer");
        server.shutdown().await.expect("half-close");
        // Kept open (for reading) until the client is done.
        server
    });
    let target = if *method == Method::CONNECT {
        "www.test:443"
    } else {
        "/"
    };
    let request = Request::builder()
        .method(method.clone())
        .uri(target)
        .header("host", "www.test")
        .body(Empty::new())
        .expect("request");
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("hyper answers in time");
    let _origin = origin.await.expect("origin task");
    let response = response.map_err(|_| ())?;
    let (parts, body) = response.into_parts();
    let reason = parts.extensions.get::<ReasonPhrase>().map_or_else(
        || parts.status.canonical_reason().unwrap_or("").to_owned(),
        |r| escape(r.as_bytes()),
    );
    let (body, trailers) = match tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the body ends in time")
    {
        Ok(c) => {
            let trailers = c.trailers().map(header_list);
            (Ok(escape(&c.to_bytes())), trailers)
        }
        Err(_) => (Err(()), None),
    };
    Ok(Message {
        line: format!("{:?} {} {reason}", parts.version, parts.status.as_u16()),
        headers: header_list(&parts.headers),
        body,
        trailers,
    })
}

/// Reads a request head (up to its empty line) from the client side.
async fn read_head(server: &mut DuplexStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if server.read(&mut byte).await.expect("read the request") == 0 {
            return;
        }
        head.push(byte[0]);
    }
}

/// The codec reading `input` as the answer to a `method` request: interim responses skipped,
/// the final one's body read until it ends or the input does (the server closed).
fn codec_client(method: &Method, input: &[u8]) -> Result<Message, ()> {
    let limits = Limits::UPSTREAM;
    let mut at = 0;
    let (head, framing) = loop {
        let (head, n) = parse_response(&input[at..], &limits)
            .map_err(|_| ())?
            .ok_or(())?;
        at += n;
        if !head.is_interim() {
            let framing = response_framing(&head, method).map_err(|_| ())?;
            break (head, framing);
        }
    };
    let mut decoder = framing.body.decoder(&limits);
    let mut body = Vec::new();
    let outcome = loop {
        match decoder.decode(&input[at..]) {
            Err(e) => break Err(e),
            Ok(d) => {
                body.extend_from_slice(&input[at..][d.data.clone()]);
                at += d.consumed;
                if d.done {
                    break Ok(());
                }
                if d.consumed == 0 && d.data.is_empty() {
                    break decoder.finish();
                }
            }
        }
    };
    Ok(Message {
        line: format!(
            "{:?} {} {}",
            head.version,
            head.status.as_u16(),
            escape(&head.reason)
        ),
        headers: header_list(&head.to_header_map()),
        body: outcome.map(|()| escape(&body)).map_err(|_| ()),
        trailers: decoder.trailers().map(header_list),
    })
}

/// The bytes the codec would send a client for the final response of `input`: its head
/// written again, its body as it came (re-chunked if chunked; a close-delimited body then
/// ends with the connection, as it did).
fn forwarded_response(method: &Method, input: &[u8]) -> Vec<u8> {
    let limits = Limits::UPSTREAM;
    let mut at = 0;
    let (head, framing) = loop {
        let (head, n) = parse_response(&input[at..], &limits)
            .expect("accepted")
            .expect("complete");
        at += n;
        if !head.is_interim() {
            let framing = response_framing(&head, method).expect("accepted");
            break (head, framing);
        }
    };
    let mut out = Vec::new();
    write_response_head(head.version, head.status, &head.to_header_map(), &mut out)
        .expect("a parsed head can be written");
    let mut decoder = framing.body.decoder(&limits);
    let mut encoder = ChunkedEncoder::default();
    loop {
        let d = decoder.decode(&input[at..]).expect("accepted body");
        let data = &input[at..][d.data.clone()];
        if framing.body == BodyKind::Chunked {
            encoder.encode(data, &mut out);
        } else {
            out.extend_from_slice(data);
        }
        at += d.consumed;
        if d.done || d.consumed == 0 {
            break;
        }
    }
    if framing.body == BodyKind::Chunked {
        encoder.finish(decoder.trailers(), &mut out);
    }
    out
}

fn response_corpus() -> Vec<(String, Method, Vec<u8>)> {
    let get = Method::GET;
    let head = Method::HEAD;
    let connect = Method::CONNECT;
    let many = (0..=100).fold(String::new(), |mut s, i| {
        let _ = write!(s, "X-{i}: v\r\n");
        s
    });
    let cases: Vec<(&str, &Method, Vec<u8>)> = vec![
        ("CL", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
        ("CL 0", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("CL, body cut short", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello".to_vec()),
        ("CL, more bytes than it", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello".to_vec()),
        ("CL list of equal values", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec()),
        ("CL lines equal", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
        ("CL list that disagrees", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello".to_vec()),
        ("CL lines that disagree", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec()),
        ("CL with an empty item", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\nhello".to_vec()),
        ("CL invalid", &get, b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello".to_vec()),
        ("CL with a sign", &get, b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".to_vec()),
        ("CL empty", &get, b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello".to_vec()),
        ("CL too large", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nhello".to_vec()),
        ("chunked", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("chunked with trailers", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n".to_vec()),
        ("chunked, cut short", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec()),
        ("chunked, bare LF after data", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n".to_vec()),
        ("chunked, bad size", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("TE and CL", &get, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("TE and an invalid CL", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("TE gzip: close-delimited", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello".to_vec()),
        ("TE gzip and CL", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nhello".to_vec()),
        ("TE chunked then gzip", &get, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\nhello".to_vec()),
        ("TE on HTTP/1.0", &get, b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("close-delimited", &get, b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec()),
        ("close-delimited HTTP/1.0", &get, b"HTTP/1.0 200 OK\r\n\r\nhello".to_vec()),
        ("HEAD with CL", &head, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec()),
        ("HEAD with chunked", &head, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        ("HEAD with an invalid CL", &head, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".to_vec()),
        ("204 with a body", &get, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
        ("304 with chunked", &get, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("100 then 200", &get, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
        ("103 with headers then 200", &get, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
        ("two 100 then 200", &get, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("100 with a body-looking CL", &get, b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
        ("100 then EOF", &get, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
        ("101", &get, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframes".to_vec()),
        ("CONNECT 200", &connect, b"HTTP/1.1 200 Connection Established\r\n\r\ntunnel".to_vec()),
        ("CONNECT 407", &connect, b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\ndeny".to_vec()),
        ("status 099", &get, b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("status 999", &get, b"HTTP/1.1 999 High\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("status with 4 digits", &get, b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("no reason", &get, b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("empty reason", &get, b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("reason with obs-text", &get, b"HTTP/1.1 200 \xc3\xa7a va\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("reason with a NUL", &get, b"HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("bare LF head", &get, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi".to_vec()),
        ("obs-fold", &get, b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("space before a colon", &get, b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("NUL in a value", &get, b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("HTTP/2 status line", &get, b"HTTP/2 200 OK\r\n\r\n".to_vec()),
        ("HTTP/1.2 status line", &get, b"HTTP/1.2 200 OK\r\n\r\n".to_vec()),
        ("garbage", &get, b"hello world\r\n\r\n".to_vec()),
        ("head cut short", &get, b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()),
        ("nothing", &get, Vec::new()),
        ("101 headers", &get, format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n").into_bytes()),
    ];
    cases
        .into_iter()
        .map(|(n, m, b)| (n.to_owned(), m.clone(), b))
        .collect()
}

#[test]
fn responses_agree_with_hyper() {
    let rt = runtime();
    let corpus = response_corpus();
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (name, method, input) in &corpus {
        let hyper = rt.block_on(hyper_client(method, input));
        let ours = codec_client(method, input);
        if show() {
            eprintln!("{name} ({method}): hyper {hyper:?}");
        }
        if hyper != ours {
            failures.push(format!(
                "{name} ({method}): {}\n  hyper: {hyper:?}\n  codec: {ours:?}",
                escape(input)
            ));
            continue;
        }
        let Ok(message) = ours else {
            refused += 1;
            continue;
        };
        if message.body.is_err() {
            refused += 1;
            continue;
        }
        accepted += 1;
        let again = rt.block_on(hyper_client(method, &forwarded_response(method, input)));
        let mut want = message.clone();
        want.trailers = want.trailers.filter(|t| !t.is_empty());
        // hyper writes no reason phrase of its own; the codec writes the canonical one.
        let status = StatusCode::from_bytes(&want.line.as_bytes()[9..12]).expect("a status");
        want.line = format!(
            "{} {}",
            &want.line[..12],
            status.canonical_reason().unwrap_or("")
        );
        if again.as_ref() != Ok(&want) {
            failures.push(format!(
                "{name}: forwarded, hyper reads {again:?}, expected {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} response cases: {accepted} accepted, {refused} refused by both",
        corpus.len()
    );
}
