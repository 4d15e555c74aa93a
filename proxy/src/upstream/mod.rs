//! Upstream pools: servers with weights, a balancing policy, health (active checks and passive
//! ejection), a retry budget, and how to reach the servers (timeouts, TLS, HTTP/2, PROXY v2).
pub mod client;
pub mod h1;
pub mod health;
pub mod lb;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use hyper::header::{COOKIE, HeaderMap};
use tracing::{info, warn};

pub use health::{HealthBoard, ServerHealth};
use lb::{Balancer, Member, PickContext, Policy};

use crate::config::{HealthConfig, LbPolicy, PassiveConfig, RetryConfig, UpstreamConfig};

/// One server of a pool.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Shared across reloads, keyed by pool name and address.
    pub health: Arc<ServerHealth>,
    /// Requests in flight to this server (least-connections, two-choices).
    pub inflight: AtomicU32,
    /// Responses from this server by status class.
    pub statuses: crate::metrics::StatusCounts,
}

/// What the consistent hash is computed on.
#[derive(Debug, Clone)]
pub enum HashKey {
    ClientIp,
    Header(hyper::header::HeaderName),
    Cookie(String),
}

/// TLS to the servers.
#[derive(Debug)]
pub struct UpstreamTlsConfig {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

/// A named pool, as built for one config generation.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// The name again, as the key of the per-worker connection pools (cloned per request
    /// without allocating).
    pub pool_key: std::sync::Arc<str>,
    pub servers: Vec<Server>,
    balancer: Box<dyn Balancer>,
    /// `Some` only for consistent hashing: other policies need no key.
    hash_key: Option<HashKey>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_server: usize,
    pub http2: bool,
    pub proxy_protocol: bool,
    pub tls: Option<UpstreamTlsConfig>,
    pub health: Option<HealthConfig>,
    pub passive: PassiveConfig,
    pub retry: RetryConfig,
    budget: RetryBudget,
    /// Time to the servers' response headers.
    pub latency: crate::metrics::Histogram,
    /// Requests sent while no server was usable (panic mode), and whether it is on now.
    pub panic_requests: crate::metrics::Counter,
    in_panic: AtomicBool,
    /// Ejections not done to keep the pool serving.
    pub ejections_refused: crate::metrics::Counter,
    /// Held while deciding an ejection, so two workers cannot both take the last server out.
    eject: std::sync::Mutex<()>,
}

impl Upstream {
    /// Builds a pool; `board` keeps each server's health across reloads.
    ///
    /// # Panics
    /// When `hash_key` names an invalid header: config validation refuses that first.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        board: &HealthBoard,
        tls: Option<UpstreamTlsConfig>,
    ) -> Self {
        let servers: Vec<Server> = config
            .servers
            .iter()
            .map(|s| Server {
                addr: s.address(),
                weight: s.weight(),
                health: board.get(name, s.address()),
                inflight: AtomicU32::new(0),
                statuses: crate::metrics::StatusCounts::default(),
            })
            .collect();
        let members: Vec<Member> = servers
            .iter()
            .map(|s| Member {
                id: s.addr.to_string(),
                weight: s.weight,
            })
            .collect();
        let policy = match config.policy {
            LbPolicy::RoundRobin => Policy::RoundRobin,
            LbPolicy::LeastConn => Policy::LeastConnections,
            LbPolicy::Hash => Policy::ConsistentHash,
            LbPolicy::RandomTwo => Policy::RandomTwoChoices,
        };
        let hash_key =
            (policy == Policy::ConsistentHash).then(|| match config.hash_key.as_deref() {
                Some(k) if k.starts_with("header:") => HashKey::Header(
                    hyper::header::HeaderName::from_bytes(&k.as_bytes()["header:".len()..])
                        .expect("validated"),
                ),
                Some(k) if k.starts_with("cookie:") => {
                    HashKey::Cookie(k["cookie:".len()..].to_owned())
                }
                _ => HashKey::ClientIp,
            });
        Self {
            name: name.to_owned(),
            pool_key: name.into(),
            balancer: lb::build(policy, &members),
            servers,
            hash_key,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            idle_timeout: config.idle_timeout,
            max_idle_per_server: config.max_idle_per_server,
            http2: config.http2,
            proxy_protocol: config.proxy_protocol,
            tls,
            health: config.health.clone(),
            passive: config.passive.clone(),
            retry: config.retry.clone(),
            budget: RetryBudget::default(),
            latency: crate::metrics::Histogram::default(),
            panic_requests: crate::metrics::Counter::default(),
            in_panic: AtomicBool::new(false),
            ejections_refused: crate::metrics::Counter::default(),
            eject: std::sync::Mutex::new(()),
        }
    }

    /// Picks a usable server, avoiding those in `exclude` (tried already). When no server at
    /// all is usable (every one down by the checks or ejected), the pool is in panic mode and
    /// picks among all servers not drained, as Envoy does, rather than refuse every request.
    /// `None`: nothing left to try (the caller answers 502/503).
    pub fn pick(
        &self,
        client_ip: std::net::IpAddr,
        headers: &HeaderMap,
        exclude: &[usize],
    ) -> Option<usize> {
        let now = crate::clock::now_ms();
        let key_buf;
        let key: Option<&[u8]> = match &self.hash_key {
            None => None,
            Some(HashKey::ClientIp) => {
                key_buf = client_ip.to_string();
                Some(key_buf.as_bytes())
            }
            Some(HashKey::Header(name)) => {
                headers.get(name).map(hyper::header::HeaderValue::as_bytes)
            }
            Some(HashKey::Cookie(name)) => cookie(headers, name),
        };
        let load = |i: usize| {
            self.servers
                .get(i)
                .map_or(u32::MAX, |s| s.inflight.load(Ordering::Relaxed))
        };
        let panic = !self.servers.iter().any(|s| s.health.usable(now));
        if panic != self.in_panic.swap(panic, Ordering::Relaxed) {
            if panic {
                warn!(
                    upstream = self.name,
                    "no server is usable (all down or ejected): panic mode, sending to every server that is not drained"
                );
            } else {
                info!(
                    upstream = self.name,
                    "a server is usable again: panic mode over"
                );
            }
        }
        let usable = |i: usize| {
            !exclude.contains(&i)
                && self.servers.get(i).is_some_and(|s| {
                    if panic {
                        !s.health.is_drained()
                    } else {
                        s.health.usable(now)
                    }
                })
        };
        let picked = self.balancer.pick(&PickContext {
            key,
            usable: &usable,
            load: &load,
        });
        if panic && picked.is_some() {
            self.panic_requests.inc();
        }
        picked
    }

    /// Whether a server not in `exclude` could still be picked; leaves the balancer as it is.
    #[must_use]
    pub fn has_candidate(&self, exclude: &[usize]) -> bool {
        let now = crate::clock::now_ms();
        let panic = !self.servers.iter().any(|s| s.health.usable(now));
        self.servers.iter().enumerate().any(|(i, s)| {
            !exclude.contains(&i)
                && if panic {
                    !s.health.is_drained()
                } else {
                    s.health.usable(now)
                }
        })
    }

    /// A request to server `index` failed through the server's fault: count it, and eject
    /// the server when that is due and the pool can spare it (never its last usable server,
    /// never more than `max_ejection_percent` of its servers).
    pub fn passive_failure(&self, index: usize) {
        let Some(server) = self.servers.get(index) else {
            return;
        };
        let may_eject = || {
            let now = crate::clock::now_ms();
            let others_usable = self
                .servers
                .iter()
                .enumerate()
                .any(|(i, s)| i != index && s.health.usable(now));
            let ejected = self
                .servers
                .iter()
                .filter(|s| s.health.is_ejected(now))
                .count();
            let cap = u64::from(self.passive.max_ejection_percent);
            others_usable && (ejected as u64 + 1) * 100 <= cap * self.servers.len() as u64
        };
        // Only on failures (never on the hot path): decide and eject under one lock.
        let _deciding = self
            .eject
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match server.health.passive_failure(&self.passive, may_eject) {
            health::Passive::Counted => {}
            health::Passive::Ejected(t) => warn!(
                upstream = self.name,
                server = %server.addr,
                ejected_for = ?t,
                "server ejected after consecutive failures"
            ),
            health::Passive::Refused => {
                self.ejections_refused.inc();
                warn!(
                    upstream = self.name,
                    server = %server.addr,
                    "server failing, but not ejected: it is the pool's last usable server or max_ejection_percent is reached"
                );
            }
        }
    }

    /// Counts a request for the retry budget.
    pub fn note_request(&self) {
        self.budget.request();
    }

    /// Whether one more retry fits the budget (and takes it).
    pub fn take_retry(&self) -> bool {
        self.budget.take(&self.retry)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.as_bytes())
        })
}

/// Retries allowed per one-second window: `max(min_per_second, budget_percent% of requests)`,
/// so retries cannot multiply the load on a failing pool.
#[derive(Debug, Default)]
struct RetryBudget {
    window: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn roll(&self) {
        let now = crate::clock::now_ms() / 1000;
        if self.window.swap(now, Ordering::Relaxed) != now {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    fn request(&self) {
        self.roll();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self, cfg: &RetryConfig) -> bool {
        self.roll();
        let allowed = u64::from(cfg.min_per_second)
            .max(self.requests.load(Ordering::Relaxed) * u64::from(cfg.budget_percent) / 100);
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_caps_retries() {
        let b = RetryBudget::default();
        let cfg = RetryConfig {
            attempts: 1,
            budget_percent: 10,
            min_per_second: 2,
        };
        for _ in 0..100 {
            b.request();
        }
        let granted = (0..50).filter(|_| b.take(&cfg)).count();
        // Unless the second ticked over during the loop, exactly 10 % of 100.
        assert!(granted == 10 || granted >= 2, "{granted}");
        assert!(granted <= 12);
    }

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
