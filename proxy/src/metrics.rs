//! Metrics in the Prometheus text format, kept in plain atomics on the request path (no locks,
//! no allocation per request) and rendered when scraped.
use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket upper bound, and the total count.
    #[must_use]
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64) {
        let mut cumulative = 0;
        let buckets = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*b, cumulative)
            })
            .collect();
        (buckets, self.count.load(Ordering::Relaxed))
    }

    /// Writes `name_bucket`, `name_sum`, `name_count` lines with `labels` (already formatted,
    /// without braces).
    #[expect(
        clippy::cast_precision_loss,
        reason = "the microsecond sum stays exact up to 2^53 us (285 years of request time)"
    )]
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Responses by status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct StatusCounts([AtomicU64; 5]);

impl StatusCounts {
    pub fn record(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    /// All responses counted.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes one line per class: `name{labels,class="2xx"} n`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, c) in self.0.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{{labels}{sep}class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
    }
}

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Process-wide counters that outlive config generations.
#[derive(Debug, Default)]
pub struct Global {
    pub rate_limited: Counter,
    pub in_flight_limited: Counter,
    pub connections_refused: Counter,
    pub deny_pattern_refused: Counter,
    /// Requests refused with 400/405 before routing (authority, path, CONNECT).
    pub requests_refused_invalid: Counter,
    /// Connections refused on a PROXY listener: the sender is not in `proxy_protocol_from`.
    pub proxy_protocol_refused: Counter,
    /// Requests refused because the client behind a trusted proxy is on the blocklist.
    pub forwarded_blocked: Counter,
    /// Connections closed because the client read nothing of a response for `send_timeout`.
    pub send_timeouts: Counter,
    /// Upgraded connections (tunnels) closed after `tunnel_idle_timeout` without traffic.
    pub tunnel_idle_closed: Counter,
    pub bans: Counter,
    pub bans_skipped_allowlisted: Counter,
    /// Bans not applied because a manual block or a longer ban of the prefix was there.
    pub bans_kept_stronger: Counter,
    /// Bans the kernel map refused (full).
    pub bans_failed: Counter,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
    pub access_log_dropped: Counter,
}

/// A label value, escaped for the text format.
#[must_use]
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_status_render() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "route=\"r\"");
        assert!(
            out.contains("x_seconds_bucket{route=\"r\",le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"r\",le=\"+Inf\"} 2"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{route=\"r\"} 2"), "{out}");
        let s = StatusCounts::default();
        s.record(204);
        s.record(503);
        let mut out = String::new();
        s.render(&mut out, "y_total", "");
        assert!(
            out.contains("y_total{class=\"2xx\"} 1") && out.contains("y_total{class=\"5xx\"} 1"),
            "{out}"
        );
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
