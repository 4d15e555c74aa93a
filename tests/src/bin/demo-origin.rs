//! A small origin server for the demo (`cargo xtask run`) and the end-to-end tests.
//!
//! - `GET /` answers a short page; every response carries `X-Origin: <name>` and a `Server`
//!   header, so tests can tell servers apart and see what the proxy strips.
//! - `/echo` answers the request line and headers as the origin saw them.
//! - `/status/NNN` answers with that status; `/slow/MS` waits MS milliseconds first.
//! - `/ws` accepts a WebSocket upgrade and echoes every frame back.
//! - `/_requests` answers how many requests this origin served (not counting itself).
//! - `/cache/<key>?<params>`: a response shaped by its query, for the cache tests (see
//!   [`cache_response`]); `/_count/<key>` answers how many requests reached `/cache/<key>`,
//!   `/_last/<key>` the headers of the last one, `/_fail/on|off` makes `/cache/` answer 503.
//!
//! Speaks HTTP/1.1 and HTTP/2 (prior knowledge), and TLS with `--tls-cert/--tls-key`.
use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// Name reported in X-Origin and in the page.
    #[arg(long, default_value = "demo-origin")]
    name: String,
    /// Serve TLS with this certificate chain (PEM)...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ...and this key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Expect a PROXY protocol header first and report its source in /echo.
    #[arg(long)]
    proxy_protocol: bool,
}

struct State {
    name: String,
    served: AtomicU64,
    /// Per `/cache/<key>`: requests and the last request's headers.
    keys: std::sync::Mutex<std::collections::HashMap<String, (u64, String)>>,
    fail: std::sync::atomic::AtomicBool,
    /// `/_abort/on`: `/cache/` requests get no answer, the connection is dropped.
    abort: std::sync::atomic::AtomicBool,
    /// `/_slow/<ms>`: `/cache/` answers wait this long first.
    slow_ms: AtomicU64,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/cache/<key>?<params>`, counted per key. Parameters (values percent-encoded):
/// `cc` Cache-Control, `etag` (quoted for you), `lm` Last-Modified as a Unix time, `expires`
/// seconds from now (`bad` for an invalid date), `age` Age, `vary` Vary, `cookie=1`
/// Set-Cookie, `status`, `delay` ms before the headers, `size` body bytes, `chunks` N body
/// chunks 100 ms apart without Content-Length, `loc` Location, `ranges=1` single byte ranges
/// answered with 206. Conditionals are honoured
/// (304). Every response carries `x-version: <count>`, the body `key=<key> n=<count>` and a
/// `Date` rounded up to the next second (`expires` counts from it), so that a cache sees no
/// apparent age and `max-age=1` means one whole second.
#[expect(
    clippy::too_many_lines,
    reason = "one query parameter after another, each mapped to its response header"
)]
async fn cache_response(req: &Request<Incoming>, state: &State, key: &str) -> Response<Body> {
    let mut headers_text = String::new();
    for (k, v) in req.headers() {
        let _ = writeln!(
            headers_text,
            "{k}: {}",
            String::from_utf8_lossy(v.as_bytes())
        );
    }
    let count = {
        let mut keys = state.keys.lock().unwrap();
        let e = keys.entry(key.to_owned()).or_default();
        e.0 += 1;
        e.1 = headers_text;
        e.0
    };
    let params: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let p = |k: &str| {
        params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(ms) = p("delay").and_then(|d| d.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if state.fail.load(Ordering::Relaxed) {
        return Response::builder()
            .status(503)
            .header("x-version", count)
            .body(Full::new(Bytes::from_static(b"failing on purpose\n")).boxed())
            .expect("valid");
    }
    // Date rounded up to the next whole second: hyper's own Date is the current second
    // truncated, which makes a response up to a second old on arrival (RFC 9111 apparent age),
    // and a `max-age=1` answer then stale at a random moment within its one second.
    let now = std::time::SystemTime::now();
    let now = std::time::UNIX_EPOCH
        + Duration::from_secs(
            now.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        );
    let date = httpdate::fmt_http_date(now);
    // ctv=1: the content type changes with every answer (to see a 304 update it).
    let content_type = if p("ctv") == Some("1") {
        format!("text/plain; v={count}")
    } else {
        "text/plain".to_owned()
    };
    let mut b = Response::builder()
        .header("content-type", content_type)
        .header("x-version", count)
        .header("date", date.as_str());
    if let Some(v) = p("cc") {
        b = b.header("cache-control", v);
    }
    // h=Name:Value (repeatable): any header, on 304s too.
    for (_, h) in params.iter().filter(|(k, _)| k == "h") {
        if let Some((name, value)) = h.split_once(':') {
            b = b.header(name.trim(), value.trim());
        }
    }
    // etag=x: "x"; etag_raw=x: x, unquoted as some origins send it; etagv=1: "v<count>".
    let etag = p("etag")
        .map(|e| format!("\"{e}\""))
        .or_else(|| p("etag_raw").map(str::to_owned))
        .or_else(|| (p("etagv") == Some("1")).then(|| format!("\"v{count}\"")));
    if let Some(e) = &etag {
        b = b.header("etag", e.as_str());
    }
    let lm = p("lm")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| std::time::UNIX_EPOCH + Duration::from_secs(t));
    if let Some(t) = lm {
        b = b.header("last-modified", httpdate::fmt_http_date(t));
    }
    match p("expires") {
        Some("bad") => b = b.header("expires", "0"),
        Some(e) => {
            if let Ok(secs) = e.parse::<u64>() {
                b = b.header(
                    "expires",
                    httpdate::fmt_http_date(now + Duration::from_secs(secs)),
                );
            }
        }
        None => {}
    }
    for (param, header) in [("age", "age"), ("vary", "vary"), ("loc", "location")] {
        if let Some(v) = p(param) {
            b = b.header(header, v);
        }
    }
    if p("cookie") == Some("1") {
        b = b.header("set-cookie", format!("session=secret-{count}; Path=/"));
    }
    // Conditionals: If-None-Match first, else If-Modified-Since.
    let req_headers = req.headers();
    let inm = req_headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    let not_modified = match (inm, &etag) {
        (Some(list), Some(e)) => list
            .split(',')
            .any(|t| t.trim().trim_start_matches("W/") == e),
        (Some(_), None) => false,
        (None, _) => match (
            req_headers
                .get("if-modified-since")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            lm,
        ) {
            (Some(since), Some(t)) => t <= since,
            _ => false,
        },
    };
    // lie304=x: any conditional request gets a 304 about another representation ("x").
    if let Some(other) = p("lie304")
        && inm.is_some()
    {
        return Response::builder()
            .status(304)
            .header("date", date.as_str())
            .header("etag", format!("\"{other}\""))
            .body(Full::new(Bytes::new()).boxed())
            .expect("valid");
    }
    if not_modified {
        return b
            .status(304)
            .body(Full::new(Bytes::new()).boxed())
            .expect("valid");
    }
    let status = p("status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let mut text = format!("key={key} n={count}\n");
    if let Some(size) = p("size").and_then(|s| s.parse::<usize>().ok()) {
        while text.len() < size {
            text.push('.');
        }
        text.truncate(size.max(1));
    }
    let mut b = b.status(status);
    // `ranges=1`: a single `Range: bytes=a-b` (or `a-`) is answered with its part (206).
    if p("ranges").is_some()
        && let Some((start, end)) = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, e)| {
                let a: usize = a.parse().ok()?;
                let e: usize = if e.is_empty() {
                    text.len() - 1
                } else {
                    e.parse().ok()?
                };
                (a <= e && a < text.len()).then_some((a, e.min(text.len() - 1)))
            })
    {
        let total = text.len();
        text.truncate(end + 1);
        text.drain(..start);
        b = b
            .status(206)
            .header("content-range", format!("bytes {start}-{end}/{total}"));
    }
    if let Some(chunks) = p("chunks").and_then(|c| c.parse::<usize>().ok()) {
        let bytes = Bytes::from(text);
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let per = bytes.len().div_ceil(chunks.max(1)).max(1);
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + per).min(bytes.len());
                if tx
                    .send(Ok(hyper::body::Frame::data(bytes.slice(at..end))))
                    .await
                    .is_err()
                {
                    return;
                }
                at = end;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let stream = http_body_util::StreamBody::new(ReceiverStream(rx));
        return b.body(BodyExt::boxed(stream)).expect("valid");
    }
    b.body(Full::new(Bytes::from(text)).boxed()).expect("valid")
}

/// An mpsc receiver as a stream of body frames.
struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, name: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-origin", name)
        .header("server", "demo-origin/1.0")
        .header("connection", "keep-alive, x-origin-private")
        .header("x-origin-private", "must not reach the client")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

/// Minimal WebSocket echo over an upgraded connection: unmasks client frames and sends them
/// back unmasked (text, binary, ping->pong, close).
async fn websocket_echo(io: hyper::upgrade::Upgraded) {
    let mut io = TokioIo::new(io);
    loop {
        let mut head = [0u8; 2];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            if io.read_exact(&mut b).await.is_err() {
                return;
            }
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            if io.read_exact(&mut b).await.is_err() {
                return;
            }
            len = u64::from_be_bytes(b);
        }
        if len > 1 << 20 {
            return;
        }
        let mut mask = [0u8; 4];
        if masked && io.read_exact(&mut mask).await.is_err() {
            return;
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let reply_opcode = if opcode == 0x9 { 0xA } else { opcode };
        let mut frame = vec![0x80 | reply_opcode];
        if payload.len() < 126 {
            frame.push(u8::try_from(payload.len()).unwrap_or(0));
        } else {
            frame.push(126);
            frame.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(0).to_be_bytes());
        }
        frame.extend_from_slice(&payload);
        if io.write_all(&frame).await.is_err() || opcode == 0x8 {
            return;
        }
    }
}

fn websocket_accept(key: &str) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[expect(
    clippy::too_many_lines,
    reason = "the origin's router: one short branch per test endpoint"
)]
async fn handle(
    mut req: Request<Incoming>,
    state: Arc<State>,
    proxy_source: Option<SocketAddr>,
) -> Result<Response<Body>, Infallible> {
    let name = state.name.as_str();
    let path = req.uri().path().to_owned();
    if path != "/_requests" && !path.starts_with("/_") {
        state.served.fetch_add(1, Ordering::Relaxed);
    }
    if path == "/_requests" {
        return Ok(text(
            StatusCode::OK,
            name,
            state.served.load(Ordering::Relaxed).to_string(),
        ));
    }
    if let Some(key) = path.strip_prefix("/cache/") {
        return Ok(cache_response(&req, &state, key).await);
    }
    if let Some(key) = path.strip_prefix("/_count/") {
        let n = state.keys.lock().unwrap().get(key).map_or(0, |e| e.0);
        return Ok(text(StatusCode::OK, name, n.to_string()));
    }
    if let Some(key) = path.strip_prefix("/_last/") {
        let h = state
            .keys
            .lock()
            .unwrap()
            .get(key)
            .map(|e| e.1.clone())
            .unwrap_or_default();
        return Ok(text(StatusCode::OK, name, h));
    }
    if let Some(on) = path.strip_prefix("/_fail/") {
        state.fail.store(on == "on", Ordering::Relaxed);
        return Ok(text(StatusCode::OK, name, format!("fail {on}\n")));
    }
    if let Some(on) = path.strip_prefix("/_abort/") {
        state.abort.store(on == "on", Ordering::Relaxed);
        return Ok(text(StatusCode::OK, name, format!("abort {on}\n")));
    }
    if let Some(ms) = path.strip_prefix("/_slow/") {
        state
            .slow_ms
            .store(ms.parse().unwrap_or(0), Ordering::Relaxed);
        return Ok(text(StatusCode::OK, name, format!("slow {ms}\n")));
    }
    if path == "/echo" {
        let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        if let Some(src) = proxy_source {
            let _ = writeln!(out, "proxy-protocol-source: {src}");
        }
        for (k, v) in req.headers() {
            let _ = writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        if !body.is_empty() {
            let _ = write!(out, "\n{}", String::from_utf8_lossy(&body));
        }
        return Ok(text(StatusCode::OK, name, out));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return Ok(text(status, name, format!("status {}\n", status.as_u16())));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(text(
            StatusCode::OK,
            name,
            format!("slow {ms} ms from {name}\n"),
        ));
    }
    if path == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(key) = key else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                name,
                "not a websocket request\n".into(),
            ));
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                websocket_echo(io).await;
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", websocket_accept(&key))
            .header("x-origin", name)
            .body(Full::new(Bytes::new()).boxed())
            .expect("valid"));
    }
    Ok(text(
        StatusCode::OK,
        name,
        format!("Hello from {name}: you asked for {path}\n"),
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = Arc::new(State {
        name: args.name.clone(),
        served: AtomicU64::new(0),
        keys: std::sync::Mutex::default(),
        fail: std::sync::atomic::AtomicBool::new(false),
        abort: std::sync::atomic::AtomicBool::new(false),
        slow_ms: AtomicU64::new(0),
    });
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "{} listening on {}://{}",
        args.name,
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    loop {
        let (mut stream, _) = listener.accept().await?;
        let state = state.clone();
        let tls = tls.clone();
        let expect_proxy = args.proxy_protocol;
        tokio::spawn(async move {
            let source = if expect_proxy {
                match proxy::proxy_protocol::read_header(&mut stream).await {
                    Ok(proxy::proxy_protocol::ProxyHeader::Proxied { source, .. }) => Some(source),
                    Ok(proxy::proxy_protocol::ProxyHeader::Local) => None,
                    Err(_) => return,
                }
            } else {
                None
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    if req.uri().path().starts_with("/cache/") {
                        if state.abort.load(Ordering::Relaxed) {
                            // An error from the service: hyper drops the connection unanswered.
                            return Err(std::io::Error::other("aborting on purpose"));
                        }
                        let ms = state.slow_ms.load(Ordering::Relaxed);
                        if ms > 0 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                    }
                    handle(req, state, source)
                        .await
                        .map_err(|never| match never {})
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(s), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let tls = proxy::config::ListenerTls {
        certificates: vec![proxy::config::CertificatePair {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }],
        alpn: vec!["h2".into(), "http/1.1".into()],
    };
    Ok(tokio_rustls::TlsAcceptor::from(proxy::tls::server_config(
        &tls,
    )?))
}
