//! A small origin server for the demo (`cargo xtask run`) and the end-to-end tests.
//!
//! - `GET /` answers a short page; every response carries `X-Origin: <name>` and a `Server`
//!   header, so tests can tell servers apart and see what the proxy strips.
//! - `/echo` answers the request line and headers as the origin saw them.
//! - `/status/NNN` answers with that status; `/slow/MS` waits MS milliseconds first.
//! - `/ws` accepts a WebSocket upgrade and echoes every frame back.
//! - `/_requests` answers how many requests this origin served (not counting itself).
//!
//! Speaks HTTP/1.1 and HTTP/2 (prior knowledge), and TLS with `--tls-cert/--tls-key`.
use std::{
    convert::Infallible,
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

async fn handle(
    mut req: Request<Incoming>,
    state: Arc<State>,
    proxy_source: Option<SocketAddr>,
) -> Result<Response<Body>, Infallible> {
    let name = state.name.as_str();
    let path = req.uri().path().to_owned();
    if path != "/_requests" {
        state.served.fetch_add(1, Ordering::Relaxed);
    }
    if path == "/_requests" {
        return Ok(text(
            StatusCode::OK,
            name,
            state.served.load(Ordering::Relaxed).to_string(),
        ));
    }
    if path == "/echo" {
        let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        if let Some(src) = proxy_source {
            out.push_str(&format!("proxy-protocol-source: {src}\n"));
        }
        for (k, v) in req.headers() {
            out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !body.is_empty() {
            out.push_str(&format!("\n{}", String::from_utf8_lossy(&body)));
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
            let service = service_fn(move |req| handle(req, state.clone(), source));
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
