//! The request path of a route with a cache (between access control and the response
//! phase of `http::proxy`):
//!
//! 1. Unsafe methods go to the origin; a non-error answer invalidates the target URI and
//!    the same-host `Location`/`Content-Location` (RFC 9111 4.4). Other methods and range
//!    requests bypass the cache.
//! 2. GET/HEAD: look up the key (and `Vary` variant); fresh -> answer from the cache
//!    (client conditionals answered with 304); stale within `stale-while-revalidate` ->
//!    answer stale and refresh once in the background; otherwise validate or fetch.
//! 3. Misses coalesce: the first one fetches, the others wait (up to `lock_timeout`) and are
//!    answered from what it stored; an uncacheable answer releases them at once.
//! 4. Validation sends the stored validators; a 304 refreshes the stored headers; an error
//!    or 5xx answer is replaced by the stale response within `stale-if-error`.
//! 5. A storable answer streams to the client and is stored when complete
//!    (`cache::body`).
//!
//! Every answer on such a route carries `Cache-Status` (RFC 9211).
use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    header::{self, HeaderMap, HeaderValue},
    http::request::Parts,
};
use tracing::debug;

use super::{
    ctx::{ClientBody, ProxyBody, RequestCtx},
    error::{ErrorKind, ProxyError},
    forward::{self, BodyState},
    phases::{self, Validators},
};
use crate::cache::{
    Fill, FillGuard, Lookup, Object, Policy, Stats, Use,
    body::{Pending, StoreBody},
    control::{self, Directives, NotStored},
};
use crate::upstream::client::UpstreamBody;

static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// Appends `<name>; <params>` to the response's `Cache-Status` list (RFC 9211): the name as
/// an sf-token when it is one, else as an sf-string.
pub fn append_cache_status(headers: &mut HeaderMap, name: &str, params: &str) {
    let token = name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
    let member = if token {
        format!("{name}; {params}")
    } else {
        format!("{name:?}; {params}")
    };
    super::headers::append_list(headers, &CACHE_STATUS, member);
}

/// The upstream request (phase 4) and the send phase (5) for the cache: `validators` when
/// the fetch is the cache's own (the client's conditionals replaced by the stored
/// response's validators).
async fn fetch(
    ctx: &mut RequestCtx,
    parts: Parts,
    body: ClientBody,
    validators: Option<Validators<'_>>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let parts = phases::upstream_request(ctx, parts, validators);
    let (body, state) = forward::upstream_body(body, &ctx.generation.config.limits);
    phases::send(ctx, parts, body, &state).await
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

#[expect(
    clippy::too_many_lines,
    reason = "the RFC 9111 flow (bypass, lookup, coalesce, fetch or validate, store) read top to bottom"
)]
/// The cache lookup phase of a route with a cache: answers from the cache, or fetches (and
/// stores), or validates. `Cache-Status` parameters are left in `ctx.cache_status`.
pub async fn serve(
    ctx: &mut RequestCtx,
    policy: &Arc<Policy>,
    req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, body) = req.into_parts();
    let cache = ctx.worker.shared.cache.clone();
    let stats = cache.stats.clone();
    let scheme = ctx.scheme();
    let host = crate::cache::key_authority(scheme, ctx.host_header.to_str().unwrap_or(""));
    let key = policy.key(scheme, &host, &parts.uri, &parts.headers);
    let method = parts.method.clone();
    let req_cc = Directives::parse_request(&parts.headers);

    // A range of a complete, fresh stored response is answered from it; other range
    // requests go to the origin below.
    if method == Method::GET
        && !req_cc.no_store
        && !parts.headers.contains_key(header::IF_MATCH)
        && !parts.headers.contains_key(header::IF_UNMODIFIED_SINCE)
        && let Some(range) = parts.headers.get(header::RANGE)
        && let (Lookup::Hit(obj), _) = cache.lookup_tiered(&key, &parts.headers).await
        && obj.status == StatusCode::OK
    {
        let now = SystemTime::now();
        if matches!(obj.usable(&req_cc, now), Use::Fresh | Use::StaleAccepted) {
            Stats::inc(&stats.hits);
            // Conditionals come before Range (RFC 9110 13.2.2): a match is a 304.
            if control::not_modified(&parts.headers, &obj.headers) {
                return Ok(hit(ctx, policy, &obj, &parts, now, ""));
            }
            let answer = crate::cache::range::evaluate(
                range,
                parts.headers.get(header::IF_RANGE),
                &obj.headers,
                obj.body.len(),
            );
            ctx.cache_status = Some(format!("hit; ttl={}", obj.ttl(now)));
            let len = obj.body.len();
            return Ok(ranged(policy, &obj, &parts, now, answer, (0, len)));
        }
    }

    // 1. Not for the cache. A request with `no-store` is not answered from the cache either
    //    (as browsers and CDNs do), and leaves the stored response alone.
    // Preconditions (If-Match, If-Unmodified-Since) are the client's own: what the origin
    // answers to them (a 412, say) is never stored for everyone.
    let precondition = parts.headers.contains_key(header::IF_MATCH)
        || parts.headers.contains_key(header::IF_UNMODIFIED_SINCE);
    // A range that no complete stored response answered: from the URL's stored part when
    // it holds the range, else from the origin, whose single-part 206 is stored as the part.
    if method == Method::GET
        && !req_cc.no_store
        && !precondition
        && let Some(range) = parts.headers.get(header::RANGE).cloned()
    {
        return serve_range(ctx, policy, key, parts, body, &req_cc, &range).await;
    }
    if !(method == Method::GET || method == Method::HEAD)
        || parts.headers.contains_key(header::RANGE)
        || req_cc.no_store
        || precondition
    {
        Stats::inc(&stats.bypass);
        // What the key takes from the request, for the keys of Location URIs after forwarding
        // (empty, and free, without key_headers).
        let key_values = policy.key_header_values(&parts.headers);
        let detail = if !(method == Method::GET || method == Method::HEAD) {
            "fwd=method"
        } else if req_cc.no_store {
            "fwd=bypass; detail=no-store"
        } else if precondition && !parts.headers.contains_key(header::RANGE) {
            "fwd=bypass; detail=precondition"
        } else {
            "fwd=bypass; detail=range"
        };
        ctx.cache_status = Some(detail.to_owned());
        let mut resp = fetch(ctx, parts, body, None).await?;
        policy.strip_targeted(resp.headers_mut());
        if is_unsafe(&method) && (resp.status().is_success() || resp.status().is_redirection()) {
            cache.invalidate(&key);
            for h in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(uri) = resp
                    .headers()
                    .get(&h)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| same_host_uri(v, scheme, &host))
                {
                    cache.invalidate(&policy.key(scheme, &host, &uri, &key_values));
                }
            }
        }
        return Ok(resp.map(BodyExt::boxed));
    }

    // 2. Look up.
    let mut stale: Option<Arc<Object>> = None;
    let (found, from_disk) = cache.lookup_tiered(&key, &parts.headers).await;
    let mut fwd = match found {
        Lookup::Hit(obj) => {
            let now = SystemTime::now();
            match obj.usable(&req_cc, now) {
                Use::Fresh => {
                    Stats::inc(&stats.hits);
                    let detail = if from_disk { "; detail=disk" } else { "" };
                    return Ok(hit(ctx, policy, &obj, &parts, now, detail));
                }
                Use::StaleAccepted => {
                    Stats::inc(&stats.stale);
                    return Ok(hit(ctx, policy, &obj, &parts, now, "; detail=max-stale"));
                }
                Use::StaleWhileRevalidate => {
                    Stats::inc(&stats.stale);
                    refresh_in_background(ctx, policy, &key, &parts, &obj);
                    return Ok(hit(
                        ctx,
                        policy,
                        &obj,
                        &parts,
                        now,
                        "; detail=stale-while-revalidate",
                    ));
                }
                Use::Validate => {
                    stale = Some(obj);
                    if req_cc.no_cache { "request" } else { "stale" }
                }
            }
        }
        Lookup::UriMiss => "uri-miss",
        Lookup::VaryMiss => "vary-miss",
    };
    if req_cc.only_if_cached {
        Stats::inc(&stats.misses);
        ctx.cache_status = Some(format!("fwd={fwd}; detail=only-if-cached"));
        return Err(ErrorKind::OnlyIfCached.into());
    }

    // 3. Coalesce GET misses.
    let mut lock: Option<FillGuard> = None;
    if method == Method::GET && !req_cc.no_cache {
        match cache.fill(&key) {
            Fill::Leader(g) => lock = Some(g),
            Fill::Wait(mut rx) => {
                let waited = tokio::time::timeout(policy.lock_timeout, rx.changed()).await;
                if let (Lookup::Hit(obj), _) = cache.lookup_tiered(&key, &parts.headers).await {
                    let now = SystemTime::now();
                    if obj.usable(&req_cc, now) == Use::Fresh {
                        Stats::inc(&stats.hits);
                        Stats::inc(&stats.coalesced);
                        return Ok(hit(ctx, policy, &obj, &parts, now, "; collapsed"));
                    }
                }
                if waited.is_err() {
                    debug!(key, "cache fill lock timed out; fetching without it");
                }
                fwd = if fwd == "uri-miss" { "miss" } else { fwd };
            }
        }
    }

    // 4. Fetch or validate.
    let client_headers = parts.headers.clone();
    let mut validating = stale.as_ref().filter(|o| o.has_validators()).cloned();
    let validators = Validators {
        etag: validating
            .as_ref()
            .and_then(|o| o.headers.get(header::ETAG)),
        last_modified: validating
            .as_ref()
            .and_then(|o| o.headers.get(header::LAST_MODIFIED)),
    };
    let head_only = method == Method::HEAD;
    let request_time = SystemTime::now();
    // Validating a stored response: its validators replace the client's conditionals.
    // Nothing to validate: the client's own conditionals go to the origin, which may then
    // answer 304 (passed on, not stored) instead of a body the client does not need.
    let validators = validating.is_some().then_some(validators);
    // The request again, should a 304 turn out to be about another representation.
    let mut again = validating.is_some().then(|| parts.clone());
    let result = fetch(ctx, parts, body, validators).await;
    let now = SystemTime::now();
    // stale-if-error: the origin failed (an error, or a 5xx answer) and a stale response
    // may stand in.
    let stand_in = |ctx: &mut RequestCtx, fwd_status: StatusCode| {
        let obj = stale.as_ref().filter(|o| o.usable_on_error(now))?;
        Stats::inc(&stats.stale);
        let ttl = obj.ttl(now);
        ctx.cache_status = Some(format!(
            "fwd=stale; fwd-status={}; ttl={ttl}; detail=stale-if-error",
            fwd_status.as_u16()
        ));
        Some(answer_to(policy, obj, &method, &client_headers, now))
    };
    let mut resp = match result {
        Err(error) => {
            if let Some(answer) = stand_in(ctx, error.status()) {
                return Ok(answer);
            }
            Stats::inc(&stats.misses);
            ctx.cache_status = Some(format!("fwd={fwd}"));
            return Err(error);
        }
        Ok(resp) if resp.status().is_server_error() => match stand_in(ctx, resp.status()) {
            Some(answer) => return Ok(answer),
            None => resp,
        },
        Ok(resp) => resp,
    };
    super::headers::strip_hop_by_hop(resp.headers_mut());
    let mut status = resp.status();

    // A 304 whose entity tag is not the stored one does not select the stored response
    // (RFC 9111 4.3.4): that one is outdated, and the request is made again without
    // conditions to get the body.
    if status == StatusCode::NOT_MODIFIED
        && let Some(old) = &validating
        && let Some(parts) = again.take()
        && !same_etag(old, resp.headers())
    {
        cache.invalidate(&key);
        ctx.tried = super::ctx::Tried::default();
        let unconditional = Validators {
            etag: None,
            last_modified: None,
        };
        resp = fetch(ctx, parts, ClientBody::Empty, Some(unconditional)).await?;
        super::headers::strip_hop_by_hop(resp.headers_mut());
        status = resp.status();
        validating = None;
        stale = None;
        fwd = "stale";
    }
    if status == StatusCode::NOT_MODIFIED
        && let Some(old) = &validating
    {
        // The stored response is still good: take the new headers (RFC 9111 4.3.4).
        Stats::inc(&stats.revalidated);
        let refreshed = refreshed(policy, old, resp.headers(), request_time, now);
        let ttl = refreshed.ttl(now);
        let answer = answer_to(policy, &refreshed, &method, &client_headers, now);
        if keepable(policy, &client_headers, &refreshed) {
            ctx.cache_status = Some(format!("fwd={fwd}; fwd-status=304; ttl={ttl}; stored"));
            cache.insert(&key, &client_headers, refreshed);
        } else {
            // The 304 made it private or no-store: this client gets it, nobody else.
            ctx.cache_status = Some(format!("fwd={fwd}; fwd-status=304; ttl={ttl}"));
            cache.invalidate(&key);
        }
        drop(lock);
        return Ok(answer);
    }
    Stats::inc(&stats.misses);

    // 5. Store?
    let resp_cc = policy.response_directives(resp.headers());
    let decision = if head_only {
        if status == StatusCode::OK
            && let Some(old) = &stale
        {
            // A HEAD response freshens the stored GET response it matches, and shows a
            // stored response it does not match to be outdated (RFC 9111 4.3.5).
            let updated = head_matches(old, resp.headers())
                .then(|| refreshed(policy, old, resp.headers(), request_time, now))
                .filter(|u| keepable(policy, &client_headers, u));
            match updated {
                Some(u) => cache.insert(&key, &client_headers, u),
                None => cache.invalidate(&key),
            }
        }
        Err(NotStored::Method)
    } else {
        decide(
            policy,
            &client_headers,
            &req_cc,
            status,
            resp.headers(),
            &resp_cc,
            request_time,
            now,
        )
    };
    policy.strip_targeted(resp.headers_mut());
    match decision {
        Ok(object) => {
            let ttl = object.ttl(now);
            ctx.cache_status = Some(format!(
                "fwd={fwd}; fwd-status={}; ttl={ttl}; stored",
                status.as_u16()
            ));
            let pending = Pending {
                cache: cache.clone(),
                key,
                request: client_headers,
                object,
                max_bytes: usize::try_from(policy.max_object_bytes).unwrap_or(usize::MAX),
                lock,
            };
            Ok(resp.map(|b| StoreBody::new(b, pending).boxed()))
        }
        Err(why) => {
            Stats::inc(&stats.not_stored);
            drop(lock);
            // A stored response that the origin now refuses to have cached is dropped.
            if matches!(
                why,
                NotStored::NoStore | NotStored::Private | NotStored::VaryStar
            ) && stale.is_some()
            {
                cache.invalidate(&key);
            }
            ctx.cache_status = Some(format!(
                "fwd={fwd}; fwd-status={}; detail={}",
                status.as_u16(),
                why.detail()
            ));
            Ok(resp.map(BodyExt::boxed))
        }
    }
}

/// A range request (GET, no `no-store`, no precondition) that no complete stored response
/// answered (RFC 9111 3.3, 3.4): the URL's stored part answers ranges it holds (`416` past
/// the end of the complete response); other requests go to the origin, and its answer is
/// stored as the URL's part when it is a single-part `206` of a response of known length
/// with a matching `Content-Length`, storable and without `Vary`. Parts are not combined: a
/// newer part replaces the older one.
async fn serve_range(
    ctx: &mut RequestCtx,
    policy: &Arc<Policy>,
    key: String,
    parts: Parts,
    body: ClientBody,
    req_cc: &Directives,
    range: &HeaderValue,
) -> Result<Response<ProxyBody>, ProxyError> {
    use crate::cache::range::{RangeAnswer, evaluate, stored_part};
    let cache = ctx.worker.shared.cache.clone();
    let stats = cache.stats.clone();
    let pkey = crate::cache::partial_key(&key);
    let now = SystemTime::now();
    if let (Lookup::Hit(obj), _) = cache.lookup_tiered(&pkey, &HeaderMap::new()).await
        && obj.status == StatusCode::PARTIAL_CONTENT
        && matches!(obj.usable(req_cc, now), Use::Fresh | Use::StaleAccepted)
        && let Some((a, b, len)) = stored_part(&obj.headers)
        && let (Ok(a), Ok(b), Ok(len)) =
            (usize::try_from(a), usize::try_from(b), usize::try_from(len))
        && obj.body.len() == b - a + 1
        && !control::not_modified(&parts.headers, &obj.headers)
    {
        let answer = evaluate(
            range,
            parts.headers.get(header::IF_RANGE),
            &obj.headers,
            len,
        );
        let held = match &answer {
            RangeAnswer::Partial(r) => r.start >= a && r.end <= b + 1,
            RangeAnswer::Unsatisfiable => true,
            RangeAnswer::Full => false,
        };
        if held {
            Stats::inc(&stats.hits);
            ctx.cache_status = Some(format!("hit; ttl={}; detail=partial", obj.ttl(now)));
            return Ok(ranged(policy, &obj, &parts, now, answer, (a, len)));
        }
    }
    Stats::inc(&stats.bypass);
    let client_headers = parts.headers.clone();
    let request_time = SystemTime::now();
    let mut resp = fetch(ctx, parts, body, None).await?;
    let now = SystemTime::now();
    let part = (resp.status() == StatusCode::PARTIAL_CONTENT)
        .then(|| stored_part(resp.headers()))
        .flatten()
        .filter(|(a, b, _)| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                == Some(b - a + 1)
        });
    let object = part.and_then(|_| {
        // Judged as the complete response would be; the part keeps its Content-Range.
        let mut whole = resp.headers().clone();
        let content_range = whole.remove(header::CONTENT_RANGE)?;
        let cc = policy.response_directives(&whole);
        let mut o = decide(
            policy,
            &client_headers,
            req_cc,
            StatusCode::OK,
            &whole,
            &cc,
            request_time,
            now,
        )
        .ok()
        .filter(|o| o.vary.is_empty())?;
        o.status = StatusCode::PARTIAL_CONTENT;
        o.headers.insert(header::CONTENT_RANGE, content_range);
        Some(o)
    });
    policy.strip_targeted(resp.headers_mut());
    let Some(object) = object else {
        ctx.cache_status = Some("fwd=bypass; detail=range".to_owned());
        return Ok(resp.map(BodyExt::boxed));
    };
    ctx.cache_status = Some(format!(
        "fwd=bypass; fwd-status=206; ttl={}; stored; detail=range",
        object.ttl(now)
    ));
    let pending = Pending {
        cache: cache.clone(),
        key: pkey,
        request: client_headers,
        object,
        max_bytes: usize::try_from(policy.max_object_bytes).unwrap_or(usize::MAX),
        lock: None,
    };
    Ok(resp.map(|b| StoreBody::new(b, pending).boxed()))
}

/// A `Location`-style URI on the same scheme and host, as a path URI.
fn same_host_uri(value: &str, scheme: &str, host: &str) -> Option<hyper::Uri> {
    if value.starts_with('/') && !value.starts_with("//") {
        return value.parse().ok();
    }
    let uri: hyper::Uri = value.parse().ok()?;
    let same = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        && uri
            .authority()
            .is_some_and(|a| crate::cache::key_authority(scheme, a.as_str()) == host);
    same.then(|| uri.path_and_query()?.as_str().parse().ok())
        .flatten()
}

/// The object to store for a response, or why not.
#[expect(
    clippy::too_many_arguments,
    reason = "the inputs of RFC 9111's storing rules, each on its own"
)]
pub fn decide(
    policy: &Policy,
    request: &HeaderMap,
    req_cc: &Directives,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &Directives,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Object, NotStored> {
    control::storable(
        &Method::GET,
        request,
        req_cc,
        status,
        headers,
        cc,
        policy.store_set_cookie,
    )?;
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > policy.max_object_bytes)
    {
        return Err(NotStored::TooLarge);
    }
    let mut stored = headers.clone();
    stored.remove(header::AGE);
    stored.remove(header::SET_COOKIE);
    stored.remove(&CACHE_STATUS);
    // `no-cache="F"` and `private="F"`: stored, without those fields.
    for name in cc.no_cache_fields.iter().chain(&cc.private_fields) {
        stored.remove(name);
    }
    let vary = control::vary_names(headers).ok_or(NotStored::VaryStar)?;
    let explicit = control::freshness_lifetime(status, headers, cc, &policy.rules, response_time);
    let has_validators =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let lifetime = match explicit {
        Some(l) => l,
        // Without a lifetime, keep it only to revalidate it; that needs a status a cache
        // may store without explicit freshness (RFC 9111 3: heuristically cacheable, or
        // `public`).
        None if has_validators && (control::heuristic_status(status) || cc.public) => {
            std::time::Duration::ZERO
        }
        None => return Err(NotStored::NoLifetime),
    };
    let object = finish_object(
        policy,
        status,
        stored,
        cc.clone(),
        lifetime,
        vary,
        headers,
        request_time,
        response_time,
    );
    if object.keep.is_zero() {
        return Err(NotStored::NoLifetime);
    }
    Ok(object)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of a stored object, each on its own"
)]
fn finish_object(
    policy: &Policy,
    status: StatusCode,
    stored: HeaderMap,
    cc: Directives,
    lifetime: std::time::Duration,
    vary: Vec<header::HeaderName>,
    received: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Object {
    use std::time::Duration;
    // `keep_stale` bounds how long a response is kept past its lifetime, and so the stale
    // windows, whatever the response asks for (as Varnish's grace + keep and nginx's
    // `inactive` do): an origin cannot pin stale objects in the cache for days.
    let swr = cc
        .stale_while_revalidate
        .map_or(policy.stale_while_revalidate, Duration::from_secs)
        .min(policy.keep_stale);
    let sie = cc
        .stale_if_error
        .map_or(policy.stale_if_error, Duration::from_secs)
        .min(policy.keep_stale);
    let initial_age = control::corrected_initial_age(received, request_time, response_time);
    // Stale, it still serves revalidation, max-stale requests and stale-if-error.
    let keep = (lifetime + policy.keep_stale).saturating_sub(initial_age);
    let tags = policy.tags(&stored);
    let for_this_cache = policy.has_own_fields(&stored);
    Object {
        status,
        headers: stored,
        body: Bytes::new(),
        response_time,
        initial_age,
        lifetime,
        cc,
        swr,
        sie,
        keep,
        vary,
        tags,
        for_this_cache,
    }
}

/// The stored object with the headers of a 304 merged in and its clock restarted.
pub fn refreshed(
    policy: &Policy,
    old: &Object,
    fresh: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Object {
    let mut headers = old.headers.clone();
    for name in fresh.keys() {
        if control::updatable_by_304(name)
            && *name != header::AGE
            && *name != header::SET_COOKIE
            && *name != CACHE_STATUS
        {
            headers.remove(name);
            for v in fresh.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
    }
    let cc = policy.response_directives(&headers);
    for name in cc.no_cache_fields.iter().chain(&cc.private_fields) {
        headers.remove(name);
    }
    let lifetime =
        control::freshness_lifetime(old.status, &headers, &cc, &policy.rules, response_time)
            .unwrap_or(std::time::Duration::ZERO);
    let vary = control::vary_names(&headers).unwrap_or_else(|| old.vary.clone());
    let mut object = finish_object(
        policy,
        old.status,
        headers,
        cc,
        lifetime,
        vary,
        // The age comes from the 304 itself: its Date and Age.
        fresh,
        request_time,
        response_time,
    );
    object.body = old.body.clone();
    object
}

/// An answer from the cache: `hit; ttl=N` and `extra` in `Cache-Status`.
fn hit(
    ctx: &mut RequestCtx,
    policy: &Policy,
    obj: &Object,
    parts: &Parts,
    now: SystemTime,
    extra: &str,
) -> Response<ProxyBody> {
    ctx.cache_status = Some(format!("hit; ttl={}{extra}", obj.ttl(now)));
    answer_to(policy, obj, &parts.method, &parts.headers, now)
}

/// A range of a stored response: `206` with the part, `416`, or the whole response. The
/// stored body holds bytes `offset..` of a response of `len` bytes (a stored part), or all
/// of it (`offset` 0, `len` its length); a part is only asked for ranges it holds.
fn ranged(
    policy: &Policy,
    obj: &Object,
    parts: &Parts,
    now: SystemTime,
    answer: crate::cache::range::RangeAnswer,
    (offset, len): (usize, usize),
) -> Response<ProxyBody> {
    use crate::cache::range::{RangeAnswer, content_range};
    let (status, body, range) = match answer {
        RangeAnswer::Full => return answer_to(policy, obj, &parts.method, &parts.headers, now),
        RangeAnswer::Partial(r) => (
            StatusCode::PARTIAL_CONTENT,
            obj.body.slice(r.start - offset..r.end - offset),
            content_range(Some(&r), len),
        ),
        RangeAnswer::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Bytes::new(),
            content_range(None, len),
        ),
    };
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    if status == StatusCode::PARTIAL_CONTENT {
        *resp.headers_mut() = obj.headers.clone();
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        resp.headers_mut()
            .insert(header::AGE, control::age_value(obj.age(now)));
    } else {
        // A 416 describes the stored response only by its length.
        for name in [header::DATE, header::ETAG, header::LAST_MODIFIED] {
            if let Some(v) = obj.headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
    }
    resp.headers_mut().insert(header::CONTENT_RANGE, range);
    resp.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if obj.for_this_cache {
        policy.strip_targeted(resp.headers_mut());
    }
    resp
}

/// Whether a stored response updated by a 304 or a HEAD answer may still be stored for
/// everyone (the update may have made it `private`, `no-store`, ...).
fn keepable(policy: &Policy, request: &HeaderMap, obj: &Object) -> bool {
    control::storable(
        &Method::GET,
        request,
        &Directives::default(),
        obj.status,
        &obj.headers,
        &obj.cc,
        policy.store_set_cookie,
    )
    .is_ok()
}

/// Whether a 304 is about the stored response: it has no entity tag, or the stored one.
fn same_etag(stored: &Object, fresh: &HeaderMap) -> bool {
    let tag = |h: &HeaderMap| {
        h.get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match (tag(&stored.headers), tag(fresh)) {
        (Some(a), Some(b)) => control::weak_eq(&a, &b),
        (None, Some(_)) => false,
        (_, None) => true,
    }
}

/// Whether a HEAD response describes the stored response (RFC 9111 4.3.5): the same
/// entity tag, or without tags the same Last-Modified, or without either the same length.
fn head_matches(stored: &Object, head: &HeaderMap) -> bool {
    let text = |h: &HeaderMap, name: header::HeaderName| {
        h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    match (
        text(&stored.headers, header::ETAG),
        text(head, header::ETAG),
    ) {
        (Some(a), Some(b)) => return control::strong_eq(&a, &b) || (a == b),
        (None, None) => {}
        _ => return false,
    }
    match (
        text(&stored.headers, header::LAST_MODIFIED),
        text(head, header::LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => return a == b,
        (None, None) => {}
        _ => return false,
    }
    text(head, header::CONTENT_LENGTH)
        .is_none_or(|n| n.trim().parse::<usize>().ok() == Some(stored.body.len()))
}

/// A response from a stored object: 304 when the client's conditionals match, the body
/// (shared, not copied) for GET, none for HEAD; with `Age`.
fn answer_to(
    policy: &Policy,
    obj: &Object,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
) -> Response<ProxyBody> {
    let age = control::age_value(obj.age(now));
    let mut resp = if obj.status == StatusCode::OK && control::not_modified(request, &obj.headers) {
        let mut resp = Response::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in &control::NOT_MODIFIED_HEADERS {
            for v in obj.headers.get_all(name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
        resp
    } else {
        let body = if *method == Method::HEAD {
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed()
        } else {
            Full::new(obj.body.clone())
                .map_err(|never| match never {})
                .boxed()
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = obj.status;
        *resp.headers_mut() = obj.headers.clone();
        if *method == Method::HEAD && !resp.headers().contains_key(header::CONTENT_LENGTH) {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(obj.body.len()));
        }
        resp
    };
    resp.headers_mut().insert(header::AGE, age);
    if obj.for_this_cache {
        policy.strip_targeted(resp.headers_mut());
    }
    resp
}

/// `stale-while-revalidate`: one background request refreshes the entry (none when one is
/// already under way for the key). It runs the upstream request and send phases on a
/// context of its own.
fn refresh_in_background(
    ctx: &RequestCtx,
    policy: &Arc<Policy>,
    key: &str,
    parts: &Parts,
    obj: &Arc<Object>,
) {
    let cache = ctx.worker.shared.cache.clone();
    let Some(lock) = cache.try_fill(key) else {
        return;
    };
    Stats::inc(&cache.stats.background_refreshes);
    let mut head = parts.clone();
    head.method = Method::GET;
    let mut bg = ctx.fork();
    let policy = policy.clone();
    let (key, old) = (key.to_owned(), obj.clone());
    let request = parts.headers.clone();
    tokio::spawn(async move {
        let _lock = lock;
        let request_time = SystemTime::now();
        let head = phases::upstream_request(
            &bg,
            head,
            Some(Validators {
                etag: old.headers.get(header::ETAG),
                last_modified: old.headers.get(header::LAST_MODIFIED),
            }),
        );
        let result = phases::send(
            &mut bg,
            head,
            crate::upstream::client::empty_body(),
            &BodyState::bodiless(),
        )
        .await;
        let now = SystemTime::now();
        let Ok(mut resp) = result else {
            debug!(key, "background refresh failed");
            return;
        };
        super::headers::strip_hop_by_hop(resp.headers_mut());
        let status = resp.status();
        if status.is_server_error() {
            // A failing origin does not replace a good response in the background, even
            // with a lifetime of its own: the stored one stays for stale-if-error.
            debug!(
                key,
                status = status.as_u16(),
                "background refresh answered 5xx"
            );
            return;
        }
        if status == StatusCode::NOT_MODIFIED && old.has_validators() {
            Stats::inc(&cache.stats.revalidated);
            let updated = refreshed(&policy, &old, resp.headers(), request_time, now);
            if keepable(&policy, &request, &updated) {
                cache.insert(&key, &request, updated);
            } else {
                cache.invalidate(&key);
            }
            return;
        }
        let cc = policy.response_directives(resp.headers());
        let req_cc = Directives::parse_request(&request);
        let Ok(mut object) = decide(
            &policy,
            &request,
            &req_cc,
            status,
            resp.headers(),
            &cc,
            request_time,
            now,
        ) else {
            Stats::inc(&cache.stats.not_stored);
            return;
        };
        let max = usize::try_from(policy.max_object_bytes).unwrap_or(usize::MAX);
        match http_body_util::Limited::new(resp.into_body(), max)
            .collect()
            .await
        {
            Ok(b) => {
                object.body = b.to_bytes();
                cache.insert(&key, &request, object);
            }
            Err(e) => debug!(key, "background refresh body: {e}"),
        }
    });
}
