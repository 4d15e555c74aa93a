//! The admin API, on its own listener: a Unix socket (mode 0600, so only root can use it) or
//! TCP with a bearer token. JSON in and out; errors carry a message and a status.
//!
//! - `GET /healthz`, `GET /readyz`
//! - `GET /metrics` (Prometheus text format)
//! - `GET /config` (the running config, secrets redacted)
//! - `POST /reload`
//! - `GET|POST|DELETE /blocklist`, `GET|POST|DELETE /allowlist` (same code path as the CLI)
//! - `GET /upstreams`, `POST /upstreams/<pool>/<server>/drain|undrain`
//! - `GET /cache` (entries, bytes, hit ratio, counters), `POST /cache/purge` with
//!   `{"url": "http://host/path"}` (or a prefix ending in `*`)
//! - `GET /` (the live dashboard) and `GET /stats.json` (its data)
//! - `GET /cluster` (the fleet: this node's view of etcd and of every node)
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

mod api;
mod metrics;

use api::{
    DASHBOARD, cache_purge, cache_stats, drain, lists, redacted_config, stats_json, upstreams,
};

pub use metrics::render_metrics;

use crate::{
    defense::ListStore,
    kernel::{KernelMaps, spread::LoadTable},
    runtime::Shared,
};

/// A reload request: the control loop answers on the oneshot.
pub type ReloadRequest = oneshot::Sender<Result<u64, String>>;

/// What the admin API reaches into.
pub struct AdminCtx {
    pub instance: String,
    pub config_path: PathBuf,
    pub shared: Arc<Shared>,
    pub store: Arc<Mutex<ListStore>>,
    pub kernel: KernelMaps,
    pub load: Arc<LoadTable>,
    pub workers: u32,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// SHA-256 of the bearer token (TCP listeners).
    pub token: Option<[u8; 32]>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn reply(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string() + "\n")).boxed())
        .expect("valid response")
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    reply(status, &json!({ "error": message.to_string() }))
}

/// Where the admin API listens.
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Listen {
    /// From `admin.listen` (None: the default socket; `off`: no admin API).
    #[must_use]
    pub fn from_config(listen: Option<&str>, instance: &str) -> Option<Self> {
        match listen {
            Some("off") => None,
            Some(l) if l.starts_with("unix:") => {
                Some(Self::Unix(PathBuf::from(&l["unix:".len()..])))
            }
            Some(l) => l.parse().ok().map(Self::Tcp),
            None => Some(Self::Unix(
                PathBuf::from(crate::config::RUNTIME_DIR).join(format!("{instance}.sock")),
            )),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A bound admin listener (bound early, while the daemon may still be root).
pub enum Bound {
    Unix(std::os::unix::net::UnixListener, PathBuf),
    Tcp(std::net::TcpListener),
}

/// Binds the admin listener; a Unix socket gets mode 0600.
pub fn bind(listen: Listen) -> std::io::Result<Bound> {
    match listen {
        Listen::Unix(path) => {
            // Mode 0600 from its first instant (bound in a private directory, then moved).
            let listener = crate::safe_fs::bind_private_unix(&path)?;
            listener.set_nonblocking(true)?;
            Ok(Bound::Unix(listener, path))
        }
        Listen::Tcp(addr) => {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(Bound::Tcp(listener))
        }
    }
}

/// Serves the admin API until `stop` changes.
pub async fn serve(
    ctx: Arc<AdminCtx>,
    bound: Bound,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    match bound {
        Bound::Unix(listener, path) => {
            let listener = tokio::net::UnixListener::from_std(listener)?;
            info!(socket = %path.display(), "admin API listening");
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            spawn_conn(ctx.clone(), stream, false);
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        Bound::Tcp(listener) => {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            info!(addr = ?listener.local_addr().ok(), "admin API listening (bearer token required)");
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            spawn_conn(ctx.clone(), stream, true);
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        }
    }
    Ok(())
}

fn spawn_conn<S>(ctx: Arc<AdminCtx>, stream: S, need_token: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(route(ctx, req, need_token).await) }
        });
        if let Err(e) = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            debug!("admin connection: {e}");
        }
    });
}

fn authorized(ctx: &AdminCtx, req: &Request<Incoming>) -> bool {
    let Some(expected) = ctx.token else {
        return false;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            use sha2::Digest;
            let got: [u8; 32] = sha2::Sha256::digest(t.trim().as_bytes()).into();
            // Constant-time comparison of the digests.
            got.iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
}

async fn route(ctx: Arc<AdminCtx>, req: Request<Incoming>, need_token: bool) -> Response<Body> {
    // The dashboard page itself is static and holds no data: it loads without the token and
    // sends the token (from its URL fragment) with its data requests.
    let page = req.method() == Method::GET && matches!(req.uri().path(), "/" | "/dashboard");
    if need_token && !page && !authorized(&ctx, &req) {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"proxy-admin\""),
        );
        return r;
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => reply(StatusCode::OK, &json!({ "status": "ok" })),
        (Method::GET, "/" | "/dashboard") => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from_static(DASHBOARD.as_bytes())).boxed())
            .expect("valid response"),
        (Method::GET, "/stats.json") => {
            let ctx2 = ctx.clone();
            match tokio::task::spawn_blocking(move || stats_json(&ctx2)).await {
                Ok(v) => reply(StatusCode::OK, &v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (Method::GET, "/readyz") => readyz(&ctx),
        (Method::GET, "/cluster") => match ctx.shared.cluster.get() {
            Some(c) => reply(
                StatusCode::OK,
                &serde_json::to_value(c.status()).unwrap_or_default(),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                "this node is not in a fleet: the config has no [cluster]",
            ),
        },
        (Method::GET, "/metrics") => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(render_metrics(&ctx))).boxed())
            .expect("valid response"),
        (Method::GET, "/config") => match redacted_config(&ctx) {
            Ok(v) => reply(StatusCode::OK, &v),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        (Method::POST, "/reload") => {
            let (tx, rx) = oneshot::channel();
            if ctx.reload.send(tx).await.is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "the proxy is stopping");
            }
            match rx.await {
                Ok(Ok(id)) => reply(StatusCode::OK, &json!({ "ok": true, "generation": id })),
                Ok(Err(e)) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("reload rejected, the running config stays: {e}"),
                ),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the proxy is stopping"),
            }
        }
        (Method::GET, "/upstreams") => upstreams(&ctx),
        (Method::GET, "/cache") => {
            let ctx2 = ctx.clone();
            match tokio::task::spawn_blocking(move || cache_stats(&ctx2)).await {
                Ok(v) => reply(StatusCode::OK, &v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (Method::POST, "/cache/purge") => cache_purge(&ctx, req).await,
        (Method::POST, p)
            if p.starts_with("/upstreams/")
                && (p.ends_with("/drain") || p.ends_with("/undrain")) =>
        {
            drain(&ctx, p)
        }
        (method, "/blocklist" | "/allowlist") => {
            lists(&ctx, method, path == "/blocklist", &query, req).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint {} {path}", req.method()),
        ),
    }
}

/// `GET /readyz`: ready while a worker is alive; the fleet's state as a detail.
fn readyz(ctx: &AdminCtx) -> Response<Body> {
    let alive = ctx
        .load
        .snapshot()
        .iter()
        .take(ctx.workers as usize)
        .filter(|w| w.alive != 0)
        .count();
    let status = if alive > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "workers_alive": alive, "generation": ctx.shared.generation.load().id });
    // A node cut off from etcd still serves (and filters with what it has): a detail,
    // not unreadiness.
    if let Some(c) = ctx.shared.cluster.get() {
        let s = c.status();
        body["cluster"] = json!({
            "connected": s.connected,
            "pending": s.pending,
            "revision": s.revision,
            "last_error": s.last_error,
        });
    }
    reply(status, &body)
}
