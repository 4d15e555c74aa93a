//! `/metrics`: every metric family in the Prometheus text format, in exposition order, one
//! function per concern.
use std::{fmt::Write as _, sync::atomic::Ordering};

use proxy_common::Counter as KernelCounter;
use tracing::warn;

use super::AdminCtx;
use crate::{
    clock::now_ms,
    metrics::{header as metric_header, label},
};

/// Every metric, in the Prometheus text format.
#[must_use]
pub fn render_metrics(ctx: &AdminCtx) -> String {
    let mut out = String::with_capacity(16 * 1024);
    requests(&mut out, ctx);
    upstreams(&mut out, ctx);
    workers(&mut out, ctx);
    counters(&mut out, ctx);
    evictions(&mut out, ctx);
    cache(&mut out, ctx);
    process(&mut out, ctx);
    cluster(&mut out, ctx);
    out
}

/// The fleet (only with `[cluster]`).
fn cluster(out: &mut String, ctx: &AdminCtx) {
    let Some(c) = ctx.shared.cluster.get() else {
        return;
    };
    let s = c.status();
    let gauges: [(&str, &str, i64); 4] = [
        (
            "proxy_cluster_connected",
            "1 while the node is connected to etcd and has reconciled its lists.",
            i64::from(s.connected),
        ),
        (
            "proxy_cluster_revision",
            "The etcd revision this node has applied.",
            s.revision,
        ),
        (
            "proxy_cluster_etcd_revision",
            "The latest etcd revision this node has seen.",
            s.etcd_revision,
        ),
        (
            "proxy_cluster_pending_changes",
            "List changes made here and not yet published to etcd.",
            i64::try_from(s.pending).unwrap_or(i64::MAX),
        ),
    ];
    for (name, help, v) in gauges {
        metric_header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters: [(&str, &str, u64); 3] = [
        (
            "proxy_cluster_published_total",
            "List entries written to etcd by this node.",
            s.published,
        ),
        (
            "proxy_cluster_applied_total",
            "List entries from etcd applied to this node's lists.",
            s.applied,
        ),
        (
            "proxy_cluster_reconnects_total",
            "Times the connection to etcd was lost and made again.",
            s.reconnects,
        ),
    ];
    for (name, help, v) in counters {
        metric_header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// Requests: all, and by route.
fn requests(out: &mut String, ctx: &AdminCtx) {
    let shared = &ctx.shared;
    let generation = ctx.shared.generation.load();
    metric_header(
        out,
        "proxy_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    shared.requests.render(out, "proxy_requests_total", "");
    metric_header(
        out,
        "proxy_request_duration_seconds",
        "histogram",
        "Time from request headers to response headers.",
    );
    shared
        .latency
        .render(out, "proxy_request_duration_seconds", "");

    metric_header(
        out,
        "proxy_route_requests_total",
        "counter",
        "Requests by route and status class.",
    );
    let routes: Vec<_> = generation.router.targets().collect();
    for r in &routes {
        r.statuses.render(
            out,
            "proxy_route_requests_total",
            &format!(
                "route=\"{}\",upstream=\"{}\"",
                label(&r.label),
                label(&r.upstream.name)
            ),
        );
    }
    metric_header(
        out,
        "proxy_route_request_duration_seconds",
        "histogram",
        "Request latency by route.",
    );
    for r in &routes {
        r.latency.render(
            out,
            "proxy_route_request_duration_seconds",
            &format!("route=\"{}\"", label(&r.label)),
        );
    }
}

/// Upstream pools and their servers.
fn upstreams(out: &mut String, ctx: &AdminCtx) {
    let generation = ctx.shared.generation.load();
    metric_header(
        out,
        "proxy_upstream_responses_total",
        "counter",
        "Upstream responses by server and status class.",
    );
    for (name, up) in &generation.upstreams {
        for s in &up.servers {
            s.statuses.render(
                out,
                "proxy_upstream_responses_total",
                &format!("upstream=\"{}\",server=\"{}\"", label(name), s.addr),
            );
        }
    }
    metric_header(
        out,
        "proxy_upstream_response_duration_seconds",
        "histogram",
        "Time to the upstream's response headers.",
    );
    for (name, up) in &generation.upstreams {
        up.latency.render(
            out,
            "proxy_upstream_response_duration_seconds",
            &format!("upstream=\"{}\"", label(name)),
        );
    }
    metric_header(
        out,
        "proxy_upstream_server_up",
        "gauge",
        "1 when a server may get traffic (health checks and passive ejection).",
    );
    let now = now_ms();
    for (name, up) in &generation.upstreams {
        for s in &up.servers {
            let _ = writeln!(
                out,
                "proxy_upstream_server_up{{upstream=\"{}\",server=\"{}\"}} {}",
                label(name),
                s.addr,
                u8::from(s.health.usable(now))
            );
        }
    }

    metric_header(
        out,
        "proxy_upstream_panic_total",
        "counter",
        "Requests a pool sent in panic mode: no server was usable, so every one not drained was tried.",
    );
    for (name, up) in &generation.upstreams {
        let _ = writeln!(
            out,
            "proxy_upstream_panic_total{{upstream=\"{}\"}} {}",
            label(name),
            up.panic_requests.get()
        );
    }
    metric_header(
        out,
        "proxy_upstream_ejections_refused_total",
        "counter",
        "Passive ejections not done because they would leave the pool without a usable server or above max_ejection_percent.",
    );
    for (name, up) in &generation.upstreams {
        let _ = writeln!(
            out,
            "proxy_upstream_ejections_refused_total{{upstream=\"{}\"}} {}",
            label(name),
            up.ejections_refused.get()
        );
    }
}

/// Connections and requests in flight per worker.
fn workers(out: &mut String, ctx: &AdminCtx) {
    metric_header(
        out,
        "proxy_worker_connections",
        "gauge",
        "Open client connections per worker.",
    );
    let loads = ctx.load.snapshot();
    for (w, l) in loads.iter().take(ctx.workers as usize).enumerate() {
        let _ = writeln!(
            out,
            "proxy_worker_connections{{worker=\"{w}\"}} {}",
            l.connections
        );
    }
    metric_header(
        out,
        "proxy_worker_inflight",
        "gauge",
        "Requests in flight per worker.",
    );
    for (w, l) in loads.iter().take(ctx.workers as usize).enumerate() {
        let _ = writeln!(
            out,
            "proxy_worker_inflight{{worker=\"{w}\"}} {}",
            l.inflight
        );
    }
}

/// Process-wide counters: refusals, bans, reloads.
fn counters(out: &mut String, ctx: &AdminCtx) {
    let shared = &ctx.shared;
    let g = &shared.metrics;
    for (name, help, value) in [
        (
            "proxy_rate_limited_total",
            "Requests refused with 429 by the request-rate limit.",
            g.rate_limited.get(),
        ),
        (
            "proxy_in_flight_limited_total",
            "Requests refused with 429 by the in-flight limit.",
            g.in_flight_limited.get(),
        ),
        (
            "proxy_deny_pattern_refused_total",
            "Requests refused by a deny-pattern ban rule.",
            g.deny_pattern_refused.get(),
        ),
        (
            "proxy_requests_refused_invalid_total",
            "Requests refused before routing: more than one or an invalid Host, Host and :authority disagreeing, an invalid or escaping path, CONNECT.",
            g.requests_refused_invalid.get(),
        ),
        (
            "proxy_proxy_protocol_refused_total",
            "Connections closed on a PROXY listener because the sender is not in proxy_protocol_from.",
            g.proxy_protocol_refused.get(),
        ),
        (
            "proxy_forwarded_blocked_total",
            "Requests refused (403) because the client behind a trusted proxy is on the blocklist.",
            g.forwarded_blocked.get(),
        ),
        (
            "proxy_send_timeouts_total",
            "Connections closed because the client read nothing of a response for send_timeout.",
            g.send_timeouts.get(),
        ),
        (
            "proxy_tunnel_idle_closed_total",
            "Upgraded connections (WebSocket) closed after tunnel_idle_timeout without traffic.",
            g.tunnel_idle_closed.get(),
        ),
        (
            "proxy_bans_total",
            "Clients banned in the kernel by [[ban]] rules.",
            g.bans.get(),
        ),
        (
            "proxy_bans_kept_stronger_total",
            "Bans not applied because a manual or imported block, or a longer ban, of the prefix stays.",
            g.bans_kept_stronger.get(),
        ),
        (
            "proxy_bans_failed_total",
            "Bans the kernel blocklist map refused (it is full: see proxy stats); the client is not blocked.",
            g.bans_failed.get(),
        ),
        (
            "proxy_bans_skipped_allowlisted_total",
            "Bans not applied because the client is allowlisted.",
            g.bans_skipped_allowlisted.get(),
        ),
        (
            "proxy_reloads_total{result=\"ok\"}",
            "Config reloads.",
            g.reloads_ok.get(),
        ),
        (
            "proxy_reloads_total{result=\"rejected\"}",
            "",
            g.reloads_failed.get(),
        ),
        (
            "proxy_access_log_dropped_total",
            "Access log records dropped because the writer was behind.",
            g.access_log_dropped.get(),
        ),
    ] {
        let base = name.split('{').next().unwrap_or(name);
        if !help.is_empty() {
            metric_header(out, base, "counter", help);
        }
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Per-client tracking tables: entries evicted to stay within their bound.
fn evictions(out: &mut String, ctx: &AdminCtx) {
    let shared = &ctx.shared;
    metric_header(
        out,
        "proxy_client_state_evictions_total",
        "counter",
        "Per-client entries evicted to keep the tables within limits.max_tracked_clients.",
    );
    let (windows, offences) = shared.bans.evictions();
    for (table, n) in [
        ("rate", shared.limits.evictions()),
        ("ban_windows", windows),
        ("offences", offences),
    ] {
        let _ = writeln!(
            out,
            "proxy_client_state_evictions_total{{table=\"{table}\"}} {n}"
        );
    }
}

/// The response cache.
fn cache(out: &mut String, ctx: &AdminCtx) {
    let shared = &ctx.shared;
    let cache = &shared.cache;
    let cs = &cache.stats;
    metric_header(
        out,
        "proxy_cache_requests_total",
        "counter",
        "Requests on cached routes, by cache result.",
    );
    for (result, c) in [
        ("hit", &cs.hits),
        ("stale", &cs.stale),
        ("miss", &cs.misses),
        ("revalidated", &cs.revalidated),
        ("bypass", &cs.bypass),
    ] {
        let _ = writeln!(
            out,
            "proxy_cache_requests_total{{result=\"{result}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    for (name, help, c) in [
        (
            "proxy_cache_stores_total",
            "Responses stored (new and refreshed).",
            &cs.stores,
        ),
        (
            "proxy_cache_not_stored_total",
            "Responses on cached routes that were not stored (uncacheable, too large, incomplete).",
            &cs.not_stored,
        ),
        (
            "proxy_cache_coalesced_total",
            "Requests answered from a response another request was fetching.",
            &cs.coalesced,
        ),
        (
            "proxy_cache_background_refreshes_total",
            "Background refreshes started by stale-while-revalidate.",
            &cs.background_refreshes,
        ),
        (
            "proxy_cache_evictions_total",
            "Entries evicted to stay within cache.max_bytes.",
            &cs.evictions,
        ),
        (
            "proxy_cache_purged_total",
            "Entries removed by purge requests.",
            &cs.purged,
        ),
        (
            "proxy_cache_invalidated_total",
            "Entries invalidated by unsafe requests (POST, PUT, DELETE, PATCH).",
            &cs.invalidated,
        ),
    ] {
        metric_header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
    }
    let (entries, bytes) = cache.usage();
    for (name, help, v) in [
        ("proxy_cache_entries", "Objects in the cache.", entries),
        (
            "proxy_cache_bytes",
            "Bytes the cache holds (bodies, headers, keys).",
            bytes,
        ),
        (
            "proxy_cache_max_bytes",
            "The cache's memory bound (cache.max_bytes).",
            cache.max_bytes,
        ),
    ] {
        metric_header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    if let Some(disk) = &cache.disk {
        disk_tier(out, disk);
    }
}

/// The disk tier's gauges and counters.
fn disk_tier(out: &mut String, disk: &crate::cache::disk::Disk) {
    for (name, n) in disk.snapshot() {
        let (metric, kind, help) = match name {
            "entries" => (
                "proxy_cache_disk_entries",
                "gauge",
                "Files in the disk tier (responses and Vary markers).",
            ),
            "bytes" => (
                "proxy_cache_disk_bytes",
                "gauge",
                "Bytes of the disk tier's files.",
            ),
            "max_bytes" => (
                "proxy_cache_disk_max_bytes",
                "gauge",
                "The disk tier's bound (cache.disk.max_bytes).",
            ),
            "hits" => (
                "proxy_cache_disk_hits_total",
                "counter",
                "Lookups answered from a file (not from memory).",
            ),
            "writes" => ("proxy_cache_disk_writes_total", "counter", "Files written."),
            "write_errors" => (
                "proxy_cache_disk_write_errors_total",
                "counter",
                "Writes that failed (disk full, unwritable); the memory tier serves on.",
            ),
            "write_skipped" => (
                "proxy_cache_disk_write_skipped_total",
                "counter",
                "Writes skipped because 64 MiB were already waiting to be written.",
            ),
            "corrupt" => (
                "proxy_cache_disk_corrupt_total",
                "counter",
                "Files found damaged or unreadable (checksum, length, format); never served, removed.",
            ),
            _ => (
                "proxy_cache_disk_evictions_total",
                "counter",
                "Files removed to stay within cache.disk.max_bytes.",
            ),
        };
        metric_header(out, metric, kind, help);
        let _ = writeln!(out, "{metric} {n}");
    }
}

/// The config generation, the kernel's packet counters, and the bench counters.
fn process(out: &mut String, ctx: &AdminCtx) {
    let generation = ctx.shared.generation.load();
    metric_header(
        out,
        "proxy_config_generation",
        "gauge",
        "The config generation in force.",
    );
    let _ = writeln!(out, "proxy_config_generation {}", generation.id);

    metric_header(
        out,
        "proxy_kernel_packets_total",
        "counter",
        "Packets seen by the kernel filter, by interface and outcome (summed over CPUs).",
    );
    match ctx.kernel.counters_by_interface() {
        Ok(list) => {
            for (iface, c) in list {
                for counter in KernelCounter::ALL {
                    let _ = writeln!(
                        out,
                        "proxy_kernel_packets_total{{interface=\"{}\",outcome=\"{}\"}} {}",
                        label(&iface),
                        counter.name().trim_start_matches("packets_"),
                        c.get(counter)
                    );
                }
            }
        }
        Err(e) => warn!("reading the kernel counters for /metrics: {e}"),
    }
    if let Some((allocations, polls)) = crate::counters::snapshot() {
        metric_header(
            out,
            "proxy_bench_allocations_total",
            "counter",
            "Heap allocations by the whole process (bench-counters builds only).",
        );
        let _ = writeln!(out, "proxy_bench_allocations_total {allocations}");
        metric_header(
            out,
            "proxy_bench_task_polls_total",
            "counter",
            "Polls of request-path tasks: connections, upstream connections, HTTP/2 streams (bench-counters builds only).",
        );
        let _ = writeln!(out, "proxy_bench_task_polls_total {polls}");
    }
}
