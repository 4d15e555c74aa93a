//! The admin API's handlers: lists, upstreams (drain), the cache (stats, purge), the
//! dashboard's data and the running config. Routing and authentication are in `admin`.
use std::sync::{Arc, atomic::Ordering};

use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use proxy_common::{Counter as KernelCounter, Reason};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::{AdminCtx, Body, error, reply};
use crate::defense::Cidr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListChange {
    cidr: String,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn lists(
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
pub(super) fn drain(ctx: &AdminCtx, path: &str) -> Response<Body> {
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

pub(super) fn upstreams(ctx: &AdminCtx) -> Response<Body> {
    let generation = ctx.shared.generation.load();
    let now = crate::clock::now_ms();
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
pub(super) fn cache_stats(ctx: &AdminCtx) -> serde_json::Value {
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
    if let Some(disk) = &cache.disk {
        let mut d = json!({});
        for (name, n) in disk.snapshot() {
            d[name] = n.into();
        }
        v["disk"] = d;
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    soft: bool,
}

/// `POST /cache/purge` `{"url": "http://host/path"}` (a `*` at the end purges a prefix) or
/// `{"tags": ["a", "b"], "soft": false}` (every response carrying one of the tags; `soft`
/// makes them stale instead of removing them).
pub(super) async fn cache_purge(ctx: &Arc<AdminCtx>, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let purge: Purge = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid JSON body (want {{\"url\": \"http://host/path\"}} or {{\"tags\": [\"t\"], \"soft\": false}}): {e}"
                ),
            );
        }
    };
    let url = match (purge.url, purge.tags.is_empty()) {
        (Some(url), true) if !purge.soft => url,
        (None, false) => return purge_tags(ctx, purge.tags, purge.soft).await,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either \"url\" or a non-empty \"tags\" list (\"soft\" goes with tags)",
            );
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "url {url:?}: give an absolute http:// or https:// URL (a trailing * purges a prefix)"
            ),
        );
    }
    if let Some(c) = ctx.shared.cluster.get()
        && let Err(e) = c.check_purge(&crate::cluster::Purge::Url(url.clone()))
    {
        return error(StatusCode::BAD_REQUEST, format!("not purged: {e}"));
    }
    let cache = ctx.shared.cache.clone();
    let pattern = url.clone();
    match tokio::task::spawn_blocking(move || cache.purge(&pattern)).await {
        Ok(n) => {
            info!(url, purged = n, "cache purge through the admin API");
            if let Some(c) = ctx.shared.cluster.get() {
                c.publish_purge(crate::cluster::Purge::Url(url.clone()));
            }
            reply(
                StatusCode::OK,
                &json!({ "ok": true, "url": url, "purged": n }),
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Purges by tag (see [`cache_purge`]).
async fn purge_tags(ctx: &Arc<AdminCtx>, tags: Vec<String>, soft: bool) -> Response<Body> {
    if let Some(bad) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > 1024 || t.contains([' ', ',', '\t']))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("tag {bad:?}: a tag is 1 to 1024 bytes without spaces or commas"),
        );
    }
    if let Some(c) = ctx.shared.cluster.get()
        && let Err(e) = c.check_purge(&crate::cluster::Purge::Tags {
            tags: tags.clone(),
            soft,
        })
    {
        return error(StatusCode::BAD_REQUEST, format!("not purged: {e}"));
    }
    let cache = ctx.shared.cache.clone();
    let wanted = tags.clone();
    match tokio::task::spawn_blocking(move || cache.purge_tags(&wanted, soft)).await {
        Ok(n) => {
            info!(
                ?tags,
                soft,
                purged = n,
                "cache purge by tag through the admin API"
            );
            if let Some(c) = ctx.shared.cluster.get() {
                c.publish_purge(crate::cluster::Purge::Tags {
                    tags: tags.clone(),
                    soft,
                });
            }
            reply(
                StatusCode::OK,
                &json!({ "ok": true, "tags": tags, "soft": soft, "purged": n }),
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The dashboard: one page, no external assets; it polls `/stats.json` every second.
pub(super) const DASHBOARD: &str = include_str!("dashboard.html");

/// The numbers the dashboard shows (cumulative; the page computes rates).
pub(super) fn stats_json(ctx: &AdminCtx) -> serde_json::Value {
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
    let now = crate::clock::now_ms();
    let wall = crate::clock::wall_ms();
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
pub(super) fn redacted_config(ctx: &AdminCtx) -> Result<serde_json::Value, String> {
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
