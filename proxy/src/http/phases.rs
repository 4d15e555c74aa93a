//! The request path: one pipeline of named phases over one [`RequestCtx`], in this order
//! (the chart in docs/architecture.md is this module):
//!
//! 1. [`early_request`]: one authority and one path (`normalize`), the target length, the
//!    blocklist for clients behind a trusted proxy, `[[ban]]` deny patterns, the body size,
//!    the client's request rate and requests in flight.
//! 2. [`request_filter`]: the route for host and path (404), then its access rules (403,
//!    401).
//! 3. cache lookup (`cached::serve`, on routes with a cache): answers from the cache, or
//!    goes on to the next phases to fetch or validate.
//! 4. [`upstream_request`]: the one place request headers are written (hop-by-hop out,
//!    forwarding headers in, route rules, cache validators, the upstream's URI form).
//! 5. [`send`]: [`upstream_peer`] picks a server, one attempt is made, and the pure retry
//!    decision (`forward::next_step`) says deliver, retry elsewhere, or fail; passive health
//!    is recorded per attempt.
//! 6. [`upstream_response`]: what the server's answer may not do (switch protocols unasked).
//! 7. [`response`]: the one place response headers are written (hop-by-hop out, `Via`,
//!    `X-Request-Id`, `Cache-Status`, route rules); upgrades become a tunnel.
//! 8. [`logging`]: metrics, status-based ban rules, the access log.
//!
//! Every phase returns a [`ProxyError`] on failure; [`handle`] turns it into the answer in one
//! place.
use std::{convert::Infallible, sync::Arc, time::Instant};

use http_body_util::BodyExt;
use hyper::{
    Method, Request, Response, StatusCode, Uri, Version,
    body::Body,
    header::{self, HeaderMap, HeaderValue},
    http::{request::Parts, uri},
};
use tracing::debug;

use super::{
    ctx::{ClientBody, ConnInfo, ProxyBody, RequestCtx, UpstreamHop, WorkerCtx},
    error::{ErrorKind, ProxyError},
    forward::{self, Attempt, BodyState, Outcome, Step},
    headers::{self, strip_hop_by_hop},
    normalize, tunnel,
};
use crate::{
    access::Decision,
    config::RateKey,
    defense::{
        ban,
        limits::{CountGuard, LimitKey, client_key},
    },
    upstream::client::{UpBody, UpstreamBody},
};

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    req: Request<ClientBody>,
    conn: Arc<ConnInfo>,
    worker: Arc<WorkerCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let _in_flight = worker.load.request();
    let mut ctx = RequestCtx::new(&req, conn, worker);
    let resp = match pipeline(&mut ctx, req).await {
        Ok(resp) => resp,
        Err(e) => {
            debug!(request_id = ctx.id_str(), "request failed: {e}");
            let mut resp = e.response(&ctx.id);
            cache_status(&ctx, resp.headers_mut());
            resp
        }
    };
    logging(&ctx, &resp);
    Ok(resp.map(super::stall::watched))
}

async fn pipeline(
    ctx: &mut RequestCtx,
    req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (req, _counted) = early_request(ctx, req)?;
    let mut req = request_filter(ctx, req).await?;
    let route = ctx.route().clone();
    // An upgrade the route passes through: the client side of it, taken before the request
    // goes upstream.
    let client_upgrade = (is_upgrade(&req) && upgrade_allowed(req.headers(), &route.upgrades))
        .then(|| hyper::upgrade::on(&mut req));
    let resp = if let Some(policy) = route.cache.as_ref().filter(|_| client_upgrade.is_none()) {
        // Boxed: the cache path's future is several KiB and would otherwise make every
        // request's future (allocated per request) that large.
        Box::pin(super::cached::serve(ctx, policy, req)).await?
    } else {
        let (parts, body) = req.into_parts();
        let parts = upstream_request(ctx, parts, None);
        let (body, state) = forward::upstream_body(body, &ctx.generation.config.limits);
        send(ctx, parts, body, &state).await?.map(BodyExt::boxed)
    };
    let resp = upstream_response(ctx, resp, client_upgrade.is_some())?;
    Ok(response(ctx, resp, client_upgrade))
}

// ------------------------------------------------------------------------- 1. early request

/// Checks before any routing: one authority and one path for everything that follows (deny
/// patterns, routing, access, limits, the cache key, the upstream), then the client's limits.
/// The guard counts the request in flight until it is answered.
pub fn early_request(
    ctx: &mut RequestCtx,
    req: Request<ClientBody>,
) -> Result<(Request<ClientBody>, Option<CountGuard>), ProxyError> {
    let generation = ctx.generation.clone();
    let limits = &generation.config.limits;
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > limits.max_uri_bytes {
        return Err(ErrorKind::TargetTooLong.into());
    }
    let slashes = generation
        .config
        .listener
        .get(ctx.conn.listener)
        .map(|l| l.escaped_slashes)
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let original = parts.uri.path_and_query().cloned();
    let authority = normalize::canonicalize(
        &parts.method,
        parts.version,
        &mut parts.uri,
        &mut parts.headers,
        slashes,
    )
    .map_err(|why| {
        ctx.worker.shared.metrics.requests_refused_invalid.inc();
        ProxyError::from(ErrorKind::Invalid(why))
    })?;
    ctx.original_target = original.filter(|o| Some(o) != parts.uri.path_and_query());
    let host_header = parts
        .headers
        .get(header::HOST)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    ctx.set_authority(authority, host_header);
    let shared = &ctx.worker.shared;
    let req = Request::from_parts(parts, body);
    let client_ip = ctx.client_ip;
    // The kernel only sees the proxy in front; a banned client behind it is refused here.
    if client_ip != ctx.conn.peer.ip()
        && let Some(maps) = &shared.maps
        && maps
            .is_denied(client_ip, crate::clock::kernel_ns())
            .unwrap_or(false)
    {
        shared.metrics.forwarded_blocked.inc();
        return Err(ErrorKind::ForwardedBlocked.into());
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
        if shared.bans.record(
            &generation.bans,
            client_ip,
            event,
            generation.may_ban(client_ip),
        ) {
            shared.metrics.deny_pattern_refused.inc();
            return Err(ErrorKind::DenyPattern.into());
        }
    }
    let counted = client_limits(ctx, &req)?;
    Ok((req, counted))
}

/// The client's limits: body size, request rate, requests in flight (the guard counts this
/// request until it is answered).
fn client_limits(
    ctx: &RequestCtx,
    req: &Request<ClientBody>,
) -> Result<Option<CountGuard>, ProxyError> {
    let shared = &ctx.worker.shared;
    let limits = &ctx.generation.config.limits;
    let client_ip = ctx.client_ip;
    if limits.max_body_bytes > 0 && req.body().size_hint().lower() > limits.max_body_bytes {
        return Err(ErrorKind::BodyTooLarge.into());
    }
    if limits.requests_per_second > 0 {
        let by_ip = || LimitKey::Ip(client_key(client_ip, limits.client_prefix_v6));
        let key = match &limits.key {
            RateKey::Header(name) => req
                .headers()
                .get(name)
                .map_or_else(by_ip, |v| shared.limits.value_key(v.as_bytes())),
            RateKey::ClientIp => by_ip(),
        };
        if let Err(wait) = shared
            .limits
            .take_request(key, limits.requests_per_second, limits.burst)
        {
            shared.metrics.rate_limited.inc();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ErrorKind::RateLimited {
                retry_after: secs.max(1),
            }
            .into());
        }
    }
    let counted = if limits.requests_in_flight_per_client > 0 {
        let Some(g) = shared.limits.start_request(
            client_key(client_ip, limits.client_prefix_v6),
            limits.requests_in_flight_per_client,
        ) else {
            shared.metrics.in_flight_limited.inc();
            return Err(ErrorKind::InFlightLimited.into());
        };
        Some(g)
    } else {
        None
    };
    Ok(counted)
}

// ------------------------------------------------------------------------- 2. request filter

/// The route for the request's host and path, then the route's access rules.
pub async fn request_filter(
    ctx: &mut RequestCtx,
    req: Request<ClientBody>,
) -> Result<Request<ClientBody>, ProxyError> {
    let route = ctx
        .generation
        .router
        .find(
            ctx.conn.listener,
            &ctx.host,
            &normalize::match_path(req.uri().path()),
        )
        .cloned()
        .ok_or(ErrorKind::NoRoute)?;
    ctx.route = Some(route.clone());
    match route.access.check(ctx.client_ip, req.headers()).await {
        Decision::Allow => Ok(req),
        Decision::Busy => Err(ErrorKind::AuthBusy.into()),
        Decision::Forbidden => Err(ErrorKind::AddressDenied.into()),
        Decision::Unauthorized(challenge) => Err(ErrorKind::Unauthorized(challenge).into()),
    }
}

// ------------------------------------------------------------------------- 4. upstream request

/// Validators a cache fetch sends instead of the client's conditionals.
pub struct Validators<'a> {
    pub etag: Option<&'a HeaderValue>,
    pub last_modified: Option<&'a HeaderValue>,
}

/// The request head as the upstream gets it: the one place request headers are written.
/// `validators`: a fetch for the cache (the client's conditionals are dropped; the stored
/// response's validators, if any, sent instead).
pub fn upstream_request(
    ctx: &RequestCtx,
    mut parts: Parts,
    validators: Option<Validators<'_>>,
) -> Parts {
    let route = ctx.route();
    let server = &ctx.generation.config.server;
    let upgrade = is_upgrade_head(&parts) && upgrade_allowed(&parts.headers, &route.upgrades);
    let upgrade_value = upgrade
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = upgrade_value {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u);
    }
    // Room for the forwarding headers at once (one growth of the map, not several).
    parts.headers.reserve(6);
    headers::set_forwarding(
        &mut parts.headers,
        &headers::Forwarding {
            peer: ctx.conn.peer.ip(),
            scheme: ctx.scheme(),
            host: &ctx.host_header,
            via: ctx.via(),
            request_id: &ctx.id,
            trusted_proxies: &server.trusted_proxies,
        },
    );
    route.request_ops.apply(&mut parts.headers, &ctx.vars());
    if let Some(v) = validators {
        for h in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            parts.headers.remove(h);
        }
        if let Some(etag) = v.etag {
            parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = v.last_modified {
            parts.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }
    // The upstream's form of the target: origin form for HTTP/1.1 (Host as set above: an
    // empty one for HTTP/1.0 without a Host, as RFC 9112 §3.2 asks of a client that has
    // none); absolute form for HTTP/2 (the authority from Host).
    let path = if route.forward_original_path {
        ctx.original_target.clone()
    } else {
        None
    }
    .or_else(|| parts.uri.path_and_query().cloned())
    .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    let mut target = uri::Parts::default();
    if route.upstream.http2 {
        parts.version = Version::HTTP_2;
        target.scheme = Some(if route.upstream.tls.is_some() {
            uri::Scheme::HTTPS
        } else {
            uri::Scheme::HTTP
        });
        target.authority = parts
            .headers
            .remove(header::HOST)
            .and_then(|h| uri::Authority::try_from(h.as_bytes()).ok())
            .or_else(|| Some(uri::Authority::from_static("localhost")));
    } else {
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, ctx.host_header.clone());
        }
    }
    target.path_and_query = Some(path);
    parts.uri = Uri::from_parts(target).unwrap_or_else(|_| Uri::from_static("/"));
    parts
}

// ------------------------------------------------------------------------- 5. upstream peer, send

/// The server for the next attempt, never one tried already; `None` when none is left.
pub fn upstream_peer(ctx: &RequestCtx, headers: &HeaderMap) -> Option<usize> {
    ctx.route()
        .upstream
        .pick(ctx.client_ip, headers, ctx.tried.as_slice())
}

/// Sends the request to the route's pool: one attempt per server picked, as the retry
/// decision says, within the request's deadline. Only failures the upstream causes count
/// against a server's health.
pub async fn send(
    ctx: &mut RequestCtx,
    parts: Parts,
    body: UpBody,
    body_state: &BodyState,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let route = ctx.route().clone();
    let up = &route.upstream;
    up.note_request();
    let request_deadline = ctx.started + ctx.generation.config.server.request_timeout;
    let bodiless = body_state.is_bodiless();
    // A request without a body can be sent again; one with a body only if nothing was sent.
    let replayable = bodiless && is_idempotent(&parts.method);
    let mut parts = Some(parts);
    let mut body = Some(body);
    let mut error: ProxyError = ErrorKind::NoServer.into();
    for attempt in 0..=up.retry.attempts {
        let Some(index) = parts.as_ref().and_then(|p| upstream_peer(ctx, &p.headers)) else {
            break;
        };
        ctx.tried.push(index);
        let server = &up.servers[index];
        let attempts_left = attempt < up.retry.attempts;
        // A copy of the request head for a retry, only when a retry could go somewhere.
        let keep = replayable && attempts_left && up.servers.len() > ctx.tried.len();
        let sent_at = Instant::now();
        let deadline = request_deadline.min(sent_at + up.response_timeout);
        server
            .inflight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = forward::attempt(
            &ctx.worker,
            up,
            server.addr,
            &ctx.conn,
            ctx.foreground,
            &mut parts,
            keep,
            &mut body,
            deadline,
        )
        .await;
        server
            .inflight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let took = sent_at.elapsed();
        let outcome = judge(up, index, &result, body_state, took)?;
        let another = attempts_left && up.has_candidate(ctx.tried.as_slice());
        let step = match forward::next_step(outcome, replayable, another) {
            Step::Retry if up.take_retry() => Step::Retry,
            Step::Retry if matches!(outcome, Outcome::Status(_)) => Step::Deliver,
            Step::Retry => Step::Fail,
            other => other,
        };
        match (step, result) {
            (Step::Deliver, Attempt::Response(resp)) => {
                ctx.hop = Some(UpstreamHop {
                    server: server.addr,
                    time: took,
                });
                return Ok(resp);
            }
            (Step::Retry, Attempt::Response(_)) => {
                debug!(upstream = up.name, server = %server.addr, "5xx answer; trying another server");
            }
            (step, Attempt::ConnectFailed(e)) => {
                debug!(upstream = up.name, server = %server.addr, "connect failed: {e}");
                error = ErrorKind::ConnectFailed(e).into();
                if step == Step::Fail {
                    break;
                }
            }
            (step, Attempt::Failed(e)) => {
                debug!(upstream = up.name, server = %server.addr, "request failed: {e}");
                error = ErrorKind::UpstreamBroken(e).into();
                if step == Step::Fail {
                    break;
                }
            }
            (_, Attempt::TimedOut) => {
                return Err(if Instant::now() >= request_deadline {
                    ErrorKind::RequestTimeout
                } else {
                    ErrorKind::UpstreamTimeout
                }
                .into());
            }
            (_, Attempt::Response(resp)) => return Ok(resp),
        }
    }
    Err(error)
}

/// What an attempt says about the server (passive health, its metrics) and what it means for
/// the request; the client's error when its body is what failed (never retried, never the
/// server's fault).
fn judge(
    up: &crate::upstream::Upstream,
    index: usize,
    result: &Attempt,
    body_state: &BodyState,
    took: std::time::Duration,
) -> Result<Outcome, ProxyError> {
    let server = &up.servers[index];
    let outcome = match result {
        Attempt::Response(resp) => {
            server.statuses.record(resp.status().as_u16());
            up.latency.observe(took);
            Outcome::Status(resp.status().as_u16())
        }
        Attempt::ConnectFailed(_) => Outcome::ConnectFailed,
        Attempt::Failed(_) | Attempt::TimedOut => {
            if let Some(fault) = body_state.client_fault() {
                return Err(fault);
            }
            if matches!(result, Attempt::Failed(_)) {
                Outcome::Broken
            } else {
                Outcome::TimedOut
            }
        }
    };
    if forward::counts_against(outcome, up.passive.on_5xx, body_state) {
        up.passive_failure(index);
    } else if matches!(outcome, Outcome::Status(s) if s < 500) {
        server.health.passive_success();
    }
    Ok(outcome)
}

// ------------------------------------------------------------------------- 6. upstream response

/// What a server's answer may not do: switch protocols when nobody asked, or to a protocol
/// the route does not pass (client and proxy would read the connection two ways).
pub fn upstream_response(
    ctx: &RequestCtx,
    resp: Response<ProxyBody>,
    upgrade_asked: bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && (!upgrade_asked || !upgrade_allowed(resp.headers(), &ctx.route().upgrades))
    {
        return Err(ErrorKind::UnaskedSwitch.into());
    }
    Ok(resp)
}

// ------------------------------------------------------------------------- 7. response

/// The answer as the client gets it: the one place response headers are written. An
/// upgrade becomes a tunnel here.
pub fn response(
    ctx: &RequestCtx,
    mut resp: Response<ProxyBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let route = ctx.route();
    let headers = resp.headers_mut();
    headers.reserve(3);
    // One framing towards the client: a length that came with chunked coding means nothing.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    let kept_upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(u) = kept_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    if !route.pass_server_header {
        headers.remove(header::SERVER);
    }
    headers::append_via(headers, ctx.via());
    headers.insert(headers::X_REQUEST_ID.clone(), ctx.id.clone());
    cache_status(ctx, headers);
    route.response_ops.apply(headers, &ctx.vars());
    if switching && let Some(client_side) = client_upgrade {
        tunnel::start(ctx, client_side, hyper::upgrade::on(&mut resp));
    }
    resp
}

/// `Cache-Status` (RFC 9211), when the cache phase left its parameters.
fn cache_status(ctx: &RequestCtx, headers: &mut HeaderMap) {
    if let Some(params) = &ctx.cache_status {
        super::cached::append_cache_status(headers, &ctx.generation.config.server.name, params);
    }
}

// ------------------------------------------------------------------------- 8. logging

/// Metrics, status-based ban rules and the access log, for every answer.
pub fn logging(ctx: &RequestCtx, resp: &Response<ProxyBody>) {
    let shared = &ctx.worker.shared;
    let status = resp.status().as_u16();
    let elapsed = ctx.started.elapsed();
    shared.requests.record(status);
    shared.latency.observe(elapsed);
    if let Some(route) = &ctx.route {
        route.statuses.record(status);
        route.latency.observe(elapsed);
    }
    let generation = &ctx.generation;
    if !generation.bans.is_empty() && generation.may_ban(ctx.client_ip) {
        shared.bans.record(
            &generation.bans,
            ctx.client_ip,
            ban::Event::Status(status),
            true,
        );
    }
    if let (Some(log), Some(fields)) = (&shared.access_log, &ctx.log) {
        let route = ctx.route.as_ref();
        log.log(crate::access_log::Record {
            time: std::time::SystemTime::now(),
            client: ctx.client_ip,
            method: fields.method.clone(),
            host: fields.host.clone(),
            target: fields.target.clone(),
            protocol: fields.protocol,
            status,
            bytes: resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            duration: elapsed,
            route: route.map(|r| r.label.clone()),
            upstream: route.map(|r| r.upstream.name.clone()),
            upstream_server: ctx.hop.map(|h| h.server.to_string()),
            upstream_time: ctx.hop.map(|h| h.time),
            request_id: ctx.id_str().to_owned(),
            user_agent: fields.user_agent.clone(),
            referer: fields.referer.clone(),
        });
    }
}

// ------------------------------------------------------------------------- helpers

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn connection_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// An HTTP/1.1 upgrade request (WebSocket and friends).
fn is_upgrade(req: &Request<ClientBody>) -> bool {
    connection_upgrade(req.version(), req.headers())
}

fn is_upgrade_head(parts: &Parts) -> bool {
    connection_upgrade(parts.version, &parts.headers)
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
