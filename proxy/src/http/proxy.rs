//! The request path, phase by phase (read top to bottom):
//!
//! 1. `identify`: request id, scheme, host, real client address.
//! 2. `route`: the most specific route for host and path (404 when none).
//! 3. `access`: address allow/deny (403), authentication (401).
//! 4. `upstream_request`: hop-by-hop headers out, forwarding headers in, route rules.
//! 5. `forward`: pick a server, send, retry elsewhere when that is safe and in budget;
//!    record passive health; 502 / 503 / 504 on failure.
//! 6. `response`: hop-by-hop and `Server` headers out, `Via` and rules in; upgrades
//!    (WebSocket) are spliced into a byte tunnel.
use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode, Uri, Version,
    body::{Body, Incoming},
    header::{self, HeaderMap, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{
    access::Decision,
    headers::{Forwarding, Vars, set_forwarding, strip_hop_by_hop},
    normalize,
};
use crate::{
    defense::{
        ban,
        limits::{LimitKey, client_key},
    },
    kernel::spread::WorkerLoadHandle,
    runtime::{Generation, Route, Shared},
    upstream::{
        Upstream,
        client::{ClientPool, ReadTimeout, UpBody, empty_body},
    },
};

/// The body type of every response the proxy sends.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// What is known about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub listener: usize,
    /// The client (from the PROXY header when the listener expects one).
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub tls: bool,
}

/// What a worker shares with all its connections.
pub struct WorkerCtx {
    pub shared: Arc<Shared>,
    pub pool: Arc<ClientPool>,
    pub load: WorkerLoadHandle,
}

/// A short plain-text error page; it never names the upstream's address.
#[must_use]
pub fn error_response(status: StatusCode, detail: &str, request_id: &str) -> Response<ProxyBody> {
    let body = format!(
        "{} {}: {detail}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("static parts are valid");
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut()
            .insert(super::headers::X_REQUEST_ID.clone(), v);
    }
    resp
}

fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// A client-sent request id is kept if it is short, printable text.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&super::headers::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned)
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// An HTTP/1.1 upgrade request (WebSocket and friends).
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Whether every protocol the `Upgrade` header names (`websocket`, `h2c`, `foo/2`) is one the
/// route passes through.
fn upgrade_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut any = false;
    for value in headers.get_all(header::UPGRADE) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        for token in text.split(',') {
            let name = token.split('/').next().unwrap_or("").trim();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return false;
            }
            any = true;
        }
    }
    any
}

/// Splices an upgraded connection to its upstream until either side closes, or no byte moves
/// either way for `idle`.
async fn tunnel(
    client: hyper::upgrade::Upgraded,
    upstream: hyper::upgrade::Upgraded,
    idle: std::time::Duration,
    metrics: &crate::metrics::Global,
) {
    use super::server::{Activity, Progress};
    let progress = Progress::new();
    let mut a = Activity {
        inner: TokioIo::new(client),
        progress: progress.clone(),
    };
    let mut b = Activity {
        inner: TokioIo::new(upstream),
        progress: progress.clone(),
    };
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let mut check = tokio::time::interval(std::time::Duration::from_secs(1).min(idle));
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let mut copy = std::pin::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => {
                if let Err(e) = r {
                    debug!("upgraded connection ended: {e}");
                }
                return;
            }
            _ = check.tick() => {
                if progress.idle_ms(crate::upstream::health::now_ms()) >= idle_ms {
                    metrics.tunnel_idle_closed.inc();
                    debug!("closing an upgraded connection idle for tunnel_idle_timeout");
                    return;
                }
            }
        }
    }
}

/// Which server answered a request and how long it took (a response extension, read by the
/// access log).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamHop {
    pub server: SocketAddr,
    pub time: std::time::Duration,
}

/// The request target as the client wrote it, for routes with `forward_original_path` (a
/// request extension, read where the upstream request is built).
#[derive(Debug, Clone)]
struct OriginalTarget(hyper::http::uri::PathAndQuery);

/// The route a request took (a response extension).
#[derive(Debug, Clone)]
pub struct RouteTaken(pub Arc<Route>);

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    ctx: Arc<WorkerCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = std::time::Instant::now();
    let _in_flight = ctx.load.request();
    let generation = ctx.shared.generation.load_full();
    let id = request_id(req.headers());
    let client_ip = super::headers::client_ip(
        conn.peer.ip(),
        req.headers(),
        &generation.config.server.trusted_proxies,
        generation.config.server.client_address_from,
    );
    // Only copied when the access log is on.
    let logged = ctx.shared.access_log.as_ref().map(|_| {
        let text = |h: header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let protocol = match req.version() {
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let host = req
            .uri()
            .authority()
            .map_or_else(|| text(header::HOST), |a| a.as_str().to_owned());
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        (
            req.method().to_string(),
            host,
            target,
            protocol,
            text(header::USER_AGENT),
            text(header::REFERER),
        )
    });
    let resp = admit(req, &conn, &ctx, &generation, &id, client_ip).await;
    let status = resp.status().as_u16();
    ctx.shared.requests.record(status);
    ctx.shared.latency.observe(started.elapsed());
    if !generation.bans.is_empty() && generation.may_ban(client_ip) {
        ctx.shared.bans.record(
            &generation.bans,
            client_ip,
            ban::Event::Status(status),
            true,
        );
    }
    if let (Some(log), Some((method, host, target, protocol, user_agent, referer))) =
        (&ctx.shared.access_log, logged)
    {
        let hop = resp.extensions().get::<UpstreamHop>().copied();
        let route = resp.extensions().get::<RouteTaken>().map(|r| r.0.clone());
        log.log(crate::access_log::Record {
            time: std::time::SystemTime::now(),
            client: client_ip,
            method,
            host,
            target,
            protocol,
            status,
            bytes: resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            duration: started.elapsed(),
            route: route.as_ref().map(|r| r.label.clone()),
            upstream: route.as_ref().map(|r| r.upstream.name.clone()),
            upstream_server: hop.map(|h| h.server.to_string()),
            upstream_time: hop.map(|h| h.time),
            request_id: id,
            user_agent,
            referer,
        });
    }
    Ok(resp.map(super::stall::watched))
}

/// Limits before any work: deny patterns, sizes, the client's request rate and requests in
/// flight; then the request path under the total request timeout.
async fn admit(
    req: Request<Incoming>,
    conn: &Arc<ConnInfo>,
    ctx: &Arc<WorkerCtx>,
    generation: &Arc<Generation>,
    id: &str,
    client_ip: IpAddr,
) -> Response<ProxyBody> {
    let limits = &generation.config.limits;
    // One authority and one path for everything that follows (deny patterns, routing, access,
    // limits, the cache key, the upstream).
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > limits.max_uri_bytes {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "the request target is too long",
            id,
        );
    }
    let slashes = generation
        .config
        .listener
        .get(conn.listener)
        .map(|l| l.escaped_slashes)
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let original = parts.uri.path_and_query().cloned();
    let authority = match normalize::canonicalize(
        &parts.method,
        parts.version,
        &mut parts.uri,
        &mut parts.headers,
        slashes,
    ) {
        Ok(a) => a,
        Err(why) => {
            ctx.shared.metrics.requests_refused_invalid.inc();
            let status = if why == normalize::Rejection::Connect {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::BAD_REQUEST
            };
            return error_response(status, &why.to_string(), id);
        }
    };
    let original = original.filter(|o| Some(o) != parts.uri.path_and_query());
    let req = Request::from_parts(parts, body);
    // The kernel only sees the proxy in front; a banned client behind it is refused here.
    if client_ip != conn.peer.ip()
        && let Some(maps) = &ctx.shared.maps
        && maps
            .is_denied(client_ip, crate::kernel::monotonic_now_ns())
            .unwrap_or(false)
    {
        ctx.shared.metrics.forwarded_blocked.inc();
        return error_response(
            StatusCode::FORBIDDEN,
            "access denied for this client address",
            id,
        );
    }
    if !generation.bans.is_empty() {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let event = ban::Event::Request {
            path: &normalize::match_path(req.uri().path()),
            user_agent,
        };
        if ctx.shared.bans.record(
            &generation.bans,
            client_ip,
            event,
            generation.may_ban(client_ip),
        ) {
            ctx.shared.metrics.deny_pattern_refused.inc();
            return error_response(StatusCode::FORBIDDEN, "request refused", id);
        }
    }
    if limits.max_body_bytes > 0 && req.body().size_hint().lower() > limits.max_body_bytes {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large",
            id,
        );
    }
    if limits.requests_per_second > 0 {
        let by_ip = || LimitKey::Ip(client_key(client_ip, limits.client_prefix_v6));
        let key = match limits.key.strip_prefix("header:") {
            Some(name) => match req.headers().get(name) {
                Some(v) => ctx.shared.limits.value_key(v.as_bytes()),
                None => by_ip(),
            },
            None => by_ip(),
        };
        if let Err(wait) =
            ctx.shared
                .limits
                .take_request(key, limits.requests_per_second, limits.burst)
        {
            ctx.shared.metrics.rate_limited.inc();
            let mut resp = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this client",
                id,
            );
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return resp;
        }
    }
    let Some(_counted) = ctx.shared.limits.start_request(
        client_key(client_ip, limits.client_prefix_v6),
        limits.requests_in_flight_per_client,
    ) else {
        ctx.shared.metrics.in_flight_limited.inc();
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight from this client",
            id,
        );
    };
    let limit = generation.config.server.request_timeout;
    let work = proxy(
        req, authority, original, conn, ctx, generation, id, client_ip,
    );
    match tokio::time::timeout(limit, work).await {
        Ok(resp) => resp,
        Err(_) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "the request took longer than the proxy allows",
            id,
        ),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the request context of #13 replaces these parameters"
)]
async fn proxy(
    mut req: Request<Incoming>,
    authority: Option<normalize::Authority>,
    original: Option<hyper::http::uri::PathAndQuery>,
    conn: &Arc<ConnInfo>,
    ctx: &Arc<WorkerCtx>,
    generation: &Arc<Generation>,
    id: &str,
    client_ip: IpAddr,
) -> Response<ProxyBody> {
    let started = std::time::Instant::now();
    let server = &generation.config.server;
    // 1. identify
    let scheme = if conn.tls { "https" } else { "http" };
    // The one authority, as canonicalize left it: the host routed on, and the Host text sent
    // upstream (empty for HTTP/1.0 without one).
    let host = authority.map(|a| a.host).unwrap_or_default();
    let raw_host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();

    // 2. route
    let Some(route) = generation
        .router
        .find(
            conn.listener,
            &host,
            &normalize::match_path(req.uri().path()),
        )
        .cloned()
    else {
        return error_response(StatusCode::NOT_FOUND, "no route for this host and path", id);
    };

    // 3. access
    match route.access.check(client_ip, req.headers()).await {
        Decision::Allow => {}
        Decision::Busy => {
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many password checks at once; try again",
                id,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
        Decision::Forbidden => {
            return error_response(
                StatusCode::FORBIDDEN,
                "access denied for this client address",
                id,
            );
        }
        Decision::Unauthorized(challenge) => {
            let mut resp = error_response(StatusCode::UNAUTHORIZED, "authentication required", id);
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            return resp;
        }
    }

    // 4. upstream request
    let upgrade = is_upgrade(&req) && upgrade_allowed(req.headers(), &route.upgrades);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_value = req.headers().get(header::UPGRADE).cloned();
    let vars = Vars {
        client_ip,
        host: &host,
        scheme,
        request_id: id,
    };
    let version = match req.version() {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let (mut parts, body) = req.into_parts();
    if route.forward_original_path
        && let Some(o) = original
    {
        parts.extensions.insert(OriginalTarget(o));
    }
    strip_hop_by_hop(&mut parts.headers);
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u);
    }
    // No authority (HTTP/1.0 without Host): an empty Host upstream, as RFC 9112 §3.2 asks of
    // a client that has none.
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static(""));
    }
    // Room for the forwarding headers at once (one growth of the map, not several).
    parts.headers.reserve(6);
    set_forwarding(
        &mut parts.headers,
        &Forwarding {
            peer: conn.peer.ip(),
            scheme,
            host: &raw_host,
            version,
            via_name: &server.name,
            request_id: id,
            trusted_proxies: &server.trusted_proxies,
        },
    );
    route.request_ops.apply(&mut parts.headers, &vars);

    // 5. forward (through the cache when the route has one)
    let forwarded = match route.cache.as_ref().filter(|_| !upgrade) {
        Some(policy) => {
            let cache_host = crate::cache::key_authority(scheme, &raw_host);
            let r = super::cached::CacheRequest {
                policy,
                route: &route,
                conn,
                ctx,
                generation,
                client_ip,
                id,
                scheme,
                host: &cache_host,
            };
            // Boxed: the cache path's future is several KiB and would otherwise make every
            // request's future (allocated per request) that large.
            Box::pin(super::cached::serve(r, parts, body)).await
        }
        None => {
            let (body, state) = upstream_body(body, &generation.config.limits);
            forward(parts, body, state, &route, conn, ctx, client_ip, id)
                .await
                .map(|r| r.map(BodyExt::boxed))
        }
    };
    let mut resp = match forwarded {
        Ok(r) => r,
        Err(r) => return r,
    };

    // 6. response
    resp.headers_mut().reserve(2);
    // One framing towards the client: a length that came with chunked coding means nothing.
    if resp.headers().contains_key(header::TRANSFER_ENCODING) {
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let kept_upgrade = resp.headers().get(header::UPGRADE).cloned();
    // A switch nobody asked for (or to another protocol) would leave client and proxy reading
    // the connection two different ways.
    if switching && (client_upgrade.is_none() || !upgrade_allowed(resp.headers(), &route.upgrades))
    {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "the upstream server switched protocols without being asked to",
            id,
        );
    }
    strip_hop_by_hop(resp.headers_mut());
    if let (true, Some(u)) = (switching, kept_upgrade) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert(header::UPGRADE, u);
    }
    if !route.pass_server_header {
        resp.headers_mut().remove(header::SERVER);
    }
    super::headers::append_list(
        resp.headers_mut(),
        &super::headers::VIA,
        format!("{version} {}", server.name),
    );
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut()
            .insert(super::headers::X_REQUEST_ID.clone(), v);
    }
    route.response_ops.apply(resp.headers_mut(), &vars);
    if switching && let Some(client_side) = client_upgrade {
        let upstream_side = hyper::upgrade::on(&mut resp);
        // The tunnel outlives the HTTP connection that was counted at accept: it keeps its
        // place in the client's connection limit.
        let limits = &generation.config.limits;
        let held = ctx.shared.limits.hold_connection(
            client_key(conn.peer.ip(), limits.client_prefix_v6),
            limits.connections_per_client,
        );
        let idle = server.tunnel_idle_timeout;
        let metrics = ctx.shared.metrics.clone();
        tokio::spawn(async move {
            let _held = held;
            match tokio::try_join!(client_side, upstream_side) {
                Ok((client_io, upstream_io)) => {
                    tunnel(client_io, upstream_io, idle, &metrics).await;
                }
                Err(e) => debug!("upgrade failed: {e}"),
            }
        });
    }
    route.statuses.record(resp.status().as_u16());
    route.latency.observe(started.elapsed());
    // Extensions allocate a map: only when the access log will read them.
    if ctx.shared.access_log.is_some() {
        resp.extensions_mut().insert(RouteTaken(route.clone()));
    }
    resp
}

/// What became of a request body on its way upstream: still being sent, complete, or failed
/// by the client (too large, too slow, broken off). Only failures the upstream causes count
/// against a server's health, so the body's fate decides how a failed attempt is judged.
#[derive(Debug, Clone, Default)]
pub struct BodyState(Option<Arc<AtomicU8>>);

const BODY_SENDING: u8 = 0;
const BODY_DONE: u8 = 1;
const BODY_TOO_LARGE: u8 = 2;
const BODY_TOO_SLOW: u8 = 3;
const BODY_BROKEN: u8 = 4;

impl BodyState {
    /// A request without a body (complete from the start).
    #[must_use]
    pub fn bodiless() -> Self {
        Self(None)
    }

    fn get(&self) -> u8 {
        self.0
            .as_ref()
            .map_or(BODY_DONE, |s| s.load(Ordering::Relaxed))
    }

    fn is_bodiless(&self) -> bool {
        self.0.is_none()
    }

    /// The client's part of a failure: the answer it gets, when its body is what failed.
    fn client_fault(&self) -> Option<(StatusCode, &'static str)> {
        match self.get() {
            BODY_TOO_LARGE => Some((
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )),
            BODY_TOO_SLOW => Some((
                StatusCode::REQUEST_TIMEOUT,
                "the request body arrived too slowly",
            )),
            BODY_BROKEN => Some((
                StatusCode::BAD_REQUEST,
                "the request body was cut off or malformed",
            )),
            _ => None,
        }
    }
}

/// The request body as sent upstream, noting its fate in a [`BodyState`].
struct Watched {
    inner: UpBody,
    state: Arc<AtomicU8>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = crate::upstream::client::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.state.store(BODY_DONE, Ordering::Relaxed),
            std::task::Poll::Ready(Some(Err(e))) => {
                let fate = if e.is::<http_body_util::LengthLimitError>() {
                    BODY_TOO_LARGE
                } else if e.is::<crate::upstream::client::BodyPaceError>() {
                    BODY_TOO_SLOW
                } else {
                    BODY_BROKEN
                };
                self.state.store(fate, Ordering::Relaxed);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body as the upstream body (size and pace limits applied), and
/// where its fate is noted.
pub(super) fn upstream_body(
    body: Incoming,
    limits: &crate::config::LimitsConfig,
) -> (UpBody, BodyState) {
    if body.is_end_stream() {
        return (empty_body(), BodyState::bodiless());
    }
    let paced = ReadTimeout::new(body, limits.body_read_timeout, limits.min_body_rate);
    let inner = if limits.max_body_bytes > 0 {
        Limited::new(
            paced,
            usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX),
        )
        .boxed()
    } else {
        paced.boxed()
    };
    let state = Arc::new(AtomicU8::new(BODY_SENDING));
    let watched = Watched {
        inner,
        state: state.clone(),
    };
    (watched.boxed(), BodyState(Some(state)))
}

/// Sends the request to a server of the route's pool, retrying on another server when that is
/// safe (nothing was sent, or an idempotent request without a body) and the budget allows.
/// Only failures the upstream causes count against the server: connect errors, broken
/// connections, timeouts once the request body was complete, and 5xx where the pool says so.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    parts: hyper::http::request::Parts,
    body: UpBody,
    body_state: BodyState,
    route: &Arc<Route>,
    conn: &ConnInfo,
    ctx: &WorkerCtx,
    client_ip: std::net::IpAddr,
    id: &str,
) -> Result<Response<Incoming>, Response<ProxyBody>> {
    let up: &Arc<Upstream> = &route.upstream;
    up.note_request();
    let bodiless = body_state.is_bodiless();
    // A request without a body can be sent again; one with a body only if nothing was sent.
    let mut body: Option<UpBody> = Some(body);
    let replayable = bodiless && is_idempotent(&parts.method);
    let mut parts = Some(parts);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = (
        StatusCode::SERVICE_UNAVAILABLE,
        "no healthy upstream server is available",
    );
    // Set when a retry was already paid for (a 5xx response is only dropped once another
    // server and the budget are sure).
    let mut prepaid = false;
    for attempt in 0..=up.retry.attempts {
        if attempt > 0 && !std::mem::take(&mut prepaid) && !up.take_retry() {
            debug!(upstream = up.name, "retry budget exhausted");
            break;
        }
        let Some(headers) = parts.as_ref().map(|p| &p.headers) else {
            break;
        };
        let Some(index) = up.pick(client_ip, headers, &tried) else {
            break;
        };
        tried.push(index);
        let server = &up.servers[index];
        server.inflight.fetch_add(1, Ordering::Relaxed);
        // A copy of the request head for a retry, only when a retry could go somewhere: the
        // pool has a server not tried yet (one-server pools never copy).
        let keep = replayable && attempt < up.retry.attempts && up.servers.len() > tried.len();
        let sent_at = std::time::Instant::now();
        let result = send_one(
            ctx,
            up,
            server.addr,
            conn,
            &mut parts,
            keep,
            &mut body,
            bodiless,
        )
        .await;
        server.inflight.fetch_sub(1, Ordering::Relaxed);
        let retry_allowed = attempt < up.retry.attempts;
        match result {
            Attempt::Response(mut resp) => {
                let status = resp.status();
                let time = sent_at.elapsed();
                server.statuses.record(status.as_u16());
                up.latency.observe(time);
                if ctx.shared.access_log.is_some() {
                    resp.extensions_mut().insert(UpstreamHop {
                        server: server.addr,
                        time,
                    });
                }
                if status.is_server_error() {
                    if up.passive.on_5xx {
                        up.passive_failure(index);
                    }
                    // Retry elsewhere only when there is an elsewhere and the budget allows;
                    // otherwise the client gets the server's own answer.
                    if matches!(status.as_u16(), 502..=504)
                        && replayable
                        && retry_allowed
                        && up.has_candidate(&tried)
                        && up.take_retry()
                    {
                        prepaid = true;
                        continue;
                    }
                } else {
                    server.health.passive_success();
                }
                return Ok(resp);
            }
            Attempt::ConnectFailed(e) => {
                // Nothing was sent (the body is still ours): always safe to try elsewhere.
                debug!(upstream = up.name, server = %server.addr, "connect failed: {e}");
                up.passive_failure(index);
                last_error = (
                    StatusCode::BAD_GATEWAY,
                    "the upstream server could not be reached",
                );
            }
            Attempt::Failed(e) => {
                if let Some((status, why)) = body_state.client_fault() {
                    debug!(upstream = up.name, server = %server.addr, "request body failed: {e}");
                    return Err(error_response(status, why, id));
                }
                debug!(upstream = up.name, server = %server.addr, "request failed: {e}");
                up.passive_failure(index);
                last_error = (
                    StatusCode::BAD_GATEWAY,
                    "the upstream server closed the connection or sent an invalid response",
                );
                if !replayable {
                    break;
                }
            }
            Attempt::TimedOut => {
                if let Some((status, why)) = body_state.client_fault() {
                    return Err(error_response(status, why, id));
                }
                // Waiting on a body the client has not finished is not the server's fault.
                if body_state.get() == BODY_DONE {
                    up.passive_failure(index);
                }
                return Err(error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream server did not answer in time",
                    id,
                ));
            }
        }
    }
    Err(error_response(last_error.0, last_error.1, id))
}

enum Attempt {
    Response(Response<Incoming>),
    ConnectFailed(crate::upstream::client::ConnectError),
    Failed(hyper::Error),
    TimedOut,
}

/// One try on one server: connect (or reuse), then send; the body is only handed over once a
/// connection exists, so a connect failure keeps it for the next try.
#[allow(clippy::too_many_arguments)]
async fn send_one(
    ctx: &WorkerCtx,
    up: &Arc<Upstream>,
    addr: SocketAddr,
    conn: &ConnInfo,
    parts: &mut Option<hyper::http::request::Parts>,
    keep: bool,
    body: &mut Option<UpBody>,
    bodiless: bool,
) -> Attempt {
    let work = async {
        let connection = match ctx.pool.acquire(up, addr, (conn.peer, conn.local)).await {
            Ok(c) => c,
            Err(e) => return Attempt::ConnectFailed(e),
        };
        // Only a request that may be tried again keeps a copy of its head.
        let Some(mut head) = (if keep { parts.clone() } else { parts.take() }) else {
            return Attempt::TimedOut;
        };
        let req_body: UpBody = match body.take() {
            Some(b) if !bodiless => b,
            _ => empty_body(),
        };
        let path = head
            .extensions
            .remove::<OriginalTarget>()
            .map(|o| o.0)
            .or_else(|| head.uri.path_and_query().cloned())
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        let mut uri = hyper::http::uri::Parts::default();
        if up.http2 {
            head.version = Version::HTTP_2;
            uri.scheme = Some(if up.tls.is_some() {
                hyper::http::uri::Scheme::HTTPS
            } else {
                hyper::http::uri::Scheme::HTTP
            });
            uri.authority = head
                .headers
                .remove(header::HOST)
                .and_then(|h| hyper::http::uri::Authority::try_from(h.as_bytes()).ok())
                .or_else(|| Some(hyper::http::uri::Authority::from_static("localhost")));
        } else {
            head.version = Version::HTTP_11;
        }
        uri.path_and_query = Some(path);
        head.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
        match ctx
            .pool
            .send(connection, Request::from_parts(head, req_body))
            .await
        {
            Ok(resp) => Attempt::Response(resp),
            Err(e) => Attempt::Failed(e),
        }
    };
    tokio::time::timeout(up.response_timeout, work)
        .await
        .unwrap_or(Attempt::TimedOut)
}
