//! Whole requests through the request path: the input is the byte stream of one client
//! connection, served by the proxy's own connection code (`http::server::serve_http`: the
//! hyper settings and limits of a plain listener, HTTP/1.1, or HTTP/2 with prior knowledge when
//! the input starts with the h2 preface) and its request handler (`http::phases::handle`:
//! limits, ban rules, routing, access rules and bearer auth, header rules, forwarding headers,
//! the response cache, retries) against an origin in the same process.
//!
//! The origin answers every request with its body, and with the status and headers the
//! request asks for: `x-origin-status: 304`, `x-origin-set-cache-control: max-age=60` (so the
//! fuzzer controls upstream responses too). The config is `PROXY_CONFIG` below.
//!
//! The connection ends once the input is used up and the proxy has had time to answer
//! (see [`Conn`]); a connection still open 10 s later is a crash (a hang in the request path).
//! With `PROXY_FUZZ_SHOW=1` in the environment the proxy's answers are printed (for triage:
//! `cargo fuzz run request <input>`).
#![no_main]

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, header::HeaderName, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use proxy::{
    cache::Cache,
    config::{Config, ServerConfig},
    defense::{ban::BanEngine, limits::ClientLimits},
    http::{
        ctx::{ConnInfo, WorkerCtx},
        server::{ListenerCtx, serve_http},
    },
    kernel::spread::{LoadTable, WorkerLoadHandle},
    metrics::Global,
    runtime::{self, Shared},
    upstream::{HealthBoard, client::ClientPool},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The proxy's config; `ORIGIN` is replaced by the in-process origin's address.
const PROXY_CONFIG: &str = r#"
instance = "fuzz"

[kernel]
attach = "none"

[server]
header_read_timeout = "1s"
idle_timeout = "2s"
request_timeout = "2s"
trusted_proxies = ["127.0.0.0/8"]
name = "fuzz"

[limits]
max_body_bytes = 65536
body_read_timeout = "1s"
max_header_bytes = 16384
max_headers = 64
max_uri_bytes = 2048

[[ban]]
name = "scanner"
on = "deny-pattern"
path_regex = "^/(\\.env|wp-login\\.php|\\.git/)"
user_agent_regex = "(?i)sqlmap"

[[ban]]
name = "errors"
on = "status"
statuses = ["401", "5xx"]
threshold = 1000000
window = "1s"

[[listener]]
address = "127.0.0.1:1"
upstream = "origin"

[[route]]
path = "/cache/"
upstream = "origin"
[route.cache]
default_ttl = "1m"
stale_while_revalidate = "10s"
stale_if_error = "1m"
sort_query = true
ignore_query_params = ["utm_source"]
key_headers = ["x-tenant"]

[[route]]
host = "api.example.com"
path = "/"
upstream = "origin"
# The token is "fuzz".
auth = { type = "bearer", realm = "api", tokens = ["sha256:93850b707585e404e4951a3ddc1f05a34b3d4f5fc081d616f46d8a2e8f1c8e68"] }
[route.headers.request]
set = { "x-client" = "$client_ip", "x-scheme" = "$scheme", "x-host" = "$host" }
add = { "x-request" = "$request_id" }
remove = ["x-debug"]
[route.headers.response]
set = { "strict-transport-security" = "max-age=31536000" }
remove = ["x-powered-by"]

[[route]]
host = "*.example.com"
path = "/admin/"
upstream = "origin"
allow = ["10.0.0.0/8", "127.0.0.0/8"]
deny = ["10.66.0.0/16"]

[upstream.origin]
servers = ["ORIGIN"]
connect_timeout = "1s"
response_timeout = "2s"
retry = { attempts = 1 }

[cache]
max_bytes = 4194304
"#;

/// How long the proxy may take to answer once the input is used up (a truncated body or an
/// answer that never comes ends the connection after this).
const PATIENCE: Duration = Duration::from_millis(50);
/// How long the connection must be quiet, with no request in flight, before it ends.
const QUIET: Duration = Duration::from_millis(1);

struct World {
    rt: tokio::runtime::Runtime,
    wctx: Arc<WorkerCtx>,
    load: Arc<LoadTable>,
    server: ServerConfig,
    http1: ListenerCtx,
    h2c: ListenerCtx,
    show: bool,
}

/// The origin: echoes the body; status and headers as the request's `x-origin-*` ask.
async fn origin(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut resp = Response::new(Full::new(body));
    if let Some(status) = parts
        .headers
        .get("x-origin-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        *resp.status_mut() = status;
    }
    for (name, value) in &parts.headers {
        if let Some(n) = name.as_str().strip_prefix("x-origin-set-")
            && let Ok(n) = HeaderName::from_bytes(n.as_bytes())
        {
            resp.headers_mut().append(n, value.clone());
        }
    }
    Ok(resp)
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the origin");
        let origin_addr = listener.local_addr().expect("origin address");
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(origin)),
                );
            }
        });
        let text = PROXY_CONFIG.replace("ORIGIN", &origin_addr.to_string());
        let config = Config::parse(&text, Path::new("fuzz.toml")).expect("valid fuzz config");
        let server = config.server.clone();
        let max_bytes = config.cache.max_bytes;
        let (max_clients, prefix_v6) = (
            config.limits.max_tracked_clients,
            config.limits.client_prefix_v6,
        );
        let generation = runtime::build(1, Arc::new(config), &HealthBoard::default())
            .expect("fuzz config builds");
        let (ban_tx, mut ban_rx) = tokio::sync::mpsc::unbounded_channel();
        // The daemon would ban in the kernel; here the requests are only drained.
        rt.spawn(async move { while ban_rx.recv().await.is_some() {} });
        let shared = Arc::new(Shared {
            generation: ArcSwap::from_pointee(generation),
            tls: ArcSwap::from_pointee(vec![None]),
            limits: Arc::new(ClientLimits::new(max_clients)),
            bans: BanEngine::new(ban_tx, max_clients, prefix_v6),
            metrics: Arc::new(Global::default()),
            requests: Default::default(),
            latency: Default::default(),
            access_log: None,
            cache: Cache::new(max_bytes),
            // No pinned maps: the blocklist is the kernel's business, not this target's.
            maps: None,
            cluster: std::sync::OnceLock::new(),
        });
        let load = Arc::new(LoadTable::detached().expect("anonymous load table"));
        let wctx = Arc::new(WorkerCtx {
            shared,
            pool: Arc::new(ClientPool::default()),
            load: WorkerLoadHandle::new(load.clone(), 0),
        });
        let listener = |h2c| ListenerCtx {
            index: 0,
            proxy_protocol: false,
            h2c,
            tls: false,
            deny: None,
        };
        World {
            rt,
            wctx,
            load,
            server,
            http1: listener(false),
            h2c: listener(true),
            show: std::env::var_os("PROXY_FUZZ_SHOW").is_some(),
        }
    })
}

/// The client side of the connection: reads come from the input; once it is used up, the
/// stream ends when no request is in flight and nothing was written for [`QUIET`], or at
/// the latest [`PATIENCE`] after the last write. Writes (the responses) are discarded.
struct Conn {
    input: Bytes,
    show: bool,
    load: Arc<LoadTable>,
    last_write: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.input.is_empty() {
            let n = buf.remaining().min(self.input.len());
            buf.put_slice(&self.input[..n]);
            self.input.advance(n);
            return Poll::Ready(Ok(()));
        }
        let in_flight = self.load.snapshot()[0].inflight > 0;
        let wait = if in_flight { PATIENCE } else { QUIET };
        let deadline = self.last_write + wait;
        if Instant::now() >= deadline {
            return Poll::Ready(Ok(()));
        }
        self.timer.as_mut().reset(deadline.into());
        let _ = self.timer.as_mut().poll(cx);
        Poll::Pending
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.last_write = Instant::now();
        if self.show {
            eprint!("{}", String::from_utf8_lossy(buf));
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let lctx = if data.starts_with(b"PRI * HTTP/2.0") {
        &w.h2c
    } else {
        &w.http1
    };
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let info = Arc::new(ConnInfo {
        listener: 0,
        peer,
        local: ([127, 0, 0, 1], 8080).into(),
        tls: false,
        interim: proxy::http::ctx::Interim::default(),
    });
    w.rt.block_on(async {
        let conn = Conn {
            input: Bytes::copy_from_slice(data),
            show: w.show,
            load: w.load.clone(),
            last_write: Instant::now(),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let served = serve_http(conn, info, lctx, w.wctx.clone(), stop, &w.server);
        if tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .is_err()
        {
            panic!("the connection was still open 10 s after the input ended");
        }
    });
});
