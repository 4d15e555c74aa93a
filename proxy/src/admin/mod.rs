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
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use proxy_common::{Counter as KernelCounter, Reason};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

mod metrics;

pub use metrics::render_metrics;

use crate::{
    defense::{Cidr, ListStore},
    kernel::{KernelMaps, spread::LoadTable},
    runtime::Shared,
    upstream::health::now_ms,
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
        (Method::GET, "/readyz") => {
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
            reply(
                status,
                &json!({ "workers_alive": alive, "generation": ctx.shared.generation.load().id }),
            )
        }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListChange {
    cidr: String,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn lists(
    ctx: &Arc<AdminCtx>,
    method: Method,
    blocklist: bool,
    query: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let store = ctx.store.clone();
    let query = query.to_owned();
    let outcome = tokio::task::spawn_blocking(move || -> Result<(StatusCode, serde_json::Value), (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        let mut store = store.lock().expect("list store");
        let internal = |e: crate::defense::DefenseError| match e {
            crate::defense::DefenseError::NotListed { .. } => (StatusCode::NOT_FOUND, e.to_string()),
            other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        };
        match method {
            Method::GET if blocklist => Ok((StatusCode::OK, serde_json::to_value(store.blocked().map_err(internal)?).unwrap_or_default())),
            Method::GET => {
                let list: Vec<_> = store.allowed().map_err(internal)?.into_iter().map(|(c, r)| json!({ "cidr": c, "note": r.note, "added_at_ms": r.added_at_ms })).collect();
                Ok((StatusCode::OK, json!(list)))
            }
            Method::POST => {
                let change: ListChange = serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
                let cidr: Cidr = change.cidr.parse().map_err(|e: crate::defense::CidrError| bad(e.to_string()))?;
                let ttl = change
                    .ttl
                    .map(|t| humantime::parse_duration(&t).map_err(|e| bad(format!("ttl {t:?}: {e}"))))
                    .transpose()?;
                if blocklist {
                    store.block(&[cidr], ttl, Reason::Manual, change.reason.as_deref()).map_err(internal)?;
                } else {
                    store.allow(&cidr, change.reason.as_deref()).map_err(internal)?;
                }
                Ok((StatusCode::OK, json!({ "ok": true, "cidr": cidr })))
            }
            Method::DELETE => {
                let raw = query.split('&').find_map(|kv| kv.strip_prefix("cidr=")).ok_or_else(|| bad("DELETE needs ?cidr=PREFIX".into()))?;
                let cidr: Cidr = raw.replace("%2F", "/").replace("%2f", "/").parse().map_err(|e: crate::defense::CidrError| bad(e.to_string()))?;
                if blocklist { store.unblock(&cidr) } else { store.disallow(&cidr) }.map_err(internal)?;
                Ok((StatusCode::OK, json!({ "ok": true, "cidr": cidr })))
            }
            _ => Err((StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE".into())),
        }
    })
    .await;
    match outcome {
        Ok(Ok((status, v))) => reply(status, &v),
        Ok(Err((status, m))) => error(status, m),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /upstreams/<pool>/<IP:PORT>/drain` (or `/undrain`): the server gets no new requests
/// (those in flight finish); it stays drained across reloads until undrained.
fn drain(ctx: &AdminCtx, path: &str) -> Response<Body> {
    let parts: Vec<&str> = path.trim_start_matches("/upstreams/").split('/').collect();
    let [pool, server, action] = parts.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            "use POST /upstreams/<pool>/<IP:PORT>/drain or /undrain",
        );
    };
    let generation = ctx.shared.generation.load();
    let Some(up) = generation.upstreams.get(*pool) else {
        return error(StatusCode::NOT_FOUND, format!("no upstream pool {pool:?}"));
    };
    let Some(s) = up.servers.iter().find(|s| s.addr.to_string() == *server) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pool {pool:?} has no server {server:?}"),
        );
    };
    let drained = *action == "drain";
    s.health.set_drained(drained);
    info!(
        upstream = pool,
        server, drained, "server drain changed through the admin API"
    );
    reply(
        StatusCode::OK,
        &json!({ "ok": true, "upstream": pool, "server": server, "drained": drained, "inflight": s.inflight.load(Ordering::Relaxed) }),
    )
}

fn upstreams(ctx: &AdminCtx) -> Response<Body> {
    let generation = ctx.shared.generation.load();
    let now = now_ms();
    let pools: serde_json::Map<String, serde_json::Value> = generation
        .upstreams
        .iter()
        .map(|(name, up)| {
            let servers: Vec<_> = up
                .servers
                .iter()
                .map(|s| {
                    json!({
                        "address": s.addr.to_string(),
                        "weight": s.weight,
                        "up": s.health.is_up(),
                        "usable": s.health.usable(now),
                        "drained": s.health.is_drained(),
                        "inflight": s.inflight.load(Ordering::Relaxed),
                    })
                })
                .collect();
            (name.clone(), json!({ "servers": servers }))
        })
        .collect();
    reply(StatusCode::OK, &serde_json::Value::Object(pools))
}

/// `GET /cache`.
fn cache_stats(ctx: &AdminCtx) -> serde_json::Value {
    let cache = &ctx.shared.cache;
    let (entries, bytes) = cache.usage();
    let mut v = json!({
        "entries": entries,
        "bytes": bytes,
        "max_bytes": cache.max_bytes,
        "hit_ratio": cache.stats.hit_ratio(),
    });
    for (name, count) in cache.stats.snapshot() {
        v[name] = count.into();
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    url: String,
}

/// `POST /cache/purge` `{"url": "http://host/path"}`; a `*` at the end purges a prefix.
async fn cache_purge(ctx: &Arc<AdminCtx>, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let purge: Purge = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body (want {{\"url\": \"http://host/path\"}}): {e}"),
            );
        }
    };
    if !(purge.url.starts_with("http://") || purge.url.starts_with("https://")) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "url {:?}: give an absolute http:// or https:// URL (a trailing * purges a prefix)",
                purge.url
            ),
        );
    }
    let cache = ctx.shared.cache.clone();
    let url = purge.url.clone();
    match tokio::task::spawn_blocking(move || cache.purge(&url)).await {
        Ok(n) => {
            info!(
                url = purge.url,
                purged = n,
                "cache purge through the admin API"
            );
            reply(
                StatusCode::OK,
                &json!({ "ok": true, "url": purge.url, "purged": n }),
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The dashboard: one page, no external assets; it polls `/stats.json` every second.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The numbers the dashboard shows (cumulative; the page computes rates).
fn stats_json(ctx: &AdminCtx) -> serde_json::Value {
    let shared = &ctx.shared;
    let generation = shared.generation.load();
    let (buckets, count) = shared.latency.snapshot();
    let mut kernel = serde_json::Map::new();
    if let Ok(c) = ctx.kernel.counters() {
        for counter in KernelCounter::ALL {
            kernel.insert(
                counter.name().trim_start_matches("packets_").to_owned(),
                c.get(counter).into(),
            );
        }
    }
    let now = now_ms();
    let wall = crate::defense::state::now_ms();
    let upstreams: serde_json::Map<String, serde_json::Value> = generation
        .upstreams
        .iter()
        .map(|(name, up)| {
            let servers: Vec<_> = up
                .servers
                .iter()
                .map(|s| json!({ "address": s.addr.to_string(), "up": s.health.is_up(), "usable": s.health.usable(now), "drained": s.health.is_drained(), "inflight": s.inflight.load(Ordering::Relaxed) }))
                .collect();
            (name.clone(), json!(servers))
        })
        .collect();
    let bans: Vec<_> = ctx
        .store
        .lock()
        .expect("list store")
        .blocked()
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.expires_at_ms.is_none_or(|e| e > wall))
        .map(|b| {
            json!({
                "cidr": b.cidr,
                "reason": b.reason,
                "note": b.note,
                "expires_in_s": b.expires_at_ms.map(|e| e.saturating_sub(wall).div_ceil(1000)),
            })
        })
        .collect();
    let workers: Vec<_> = ctx
        .load
        .snapshot()
        .iter()
        .take(ctx.workers as usize)
        .enumerate()
        .map(|(i, w)| json!({ "worker": i, "alive": w.alive != 0, "connections": w.connections, "inflight": w.inflight }))
        .collect();
    json!({
        "instance": ctx.instance,
        "time_ms": wall,
        "generation": generation.id,
        "requests_total": shared.requests.total(),
        "latency": { "count": count, "buckets": buckets },
        "kernel": kernel,
        "workers": workers,
        "upstreams": upstreams,
        "bans": bans,
        "cache": {
            "hit_ratio": shared.cache.stats.hit_ratio(),
            "entries": shared.cache.usage().0,
        },
    })
}

/// The config file as JSON, with passwords and tokens replaced.
fn redacted_config(ctx: &AdminCtx) -> Result<serde_json::Value, String> {
    fn redact(v: &mut toml::Value) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t.iter_mut() {
                    if matches!(k.as_str(), "users" | "tokens" | "token") {
                        *v = toml::Value::String("<redacted>".into());
                    } else {
                        redact(v);
                    }
                }
            }
            toml::Value::Array(a) => a.iter_mut().for_each(redact),
            _ => {}
        }
    }

    let text = std::fs::read_to_string(&ctx.config_path)
        .map_err(|e| format!("reading {}: {e}", ctx.config_path.display()))?;
    let mut value: toml::Value = toml::from_str(&text).map_err(|e| e.to_string())?;
    redact(&mut value);
    let mut json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    json["generation"] = json!(ctx.shared.generation.load().id);
    Ok(json)
}
