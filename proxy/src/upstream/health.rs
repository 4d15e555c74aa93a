//! Server health: active checks (GET a path, expect a status, rise/fall thresholds) and
//! passive ejection (consecutive connect failures or 5xx eject a server for a growing time).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use tracing::{info, warn};

use super::Upstream;
use crate::config::PassiveConfig;

/// The health of one server in one pool.
#[derive(Debug)]
pub struct ServerHealth {
    /// Set by the active checks (servers start up, as in nginx and HAProxy).
    up: AtomicBool,
    ok_in_row: AtomicU32,
    fail_in_row: AtomicU32,
    /// Passive: failures in a row, ejections in a row, and the end of the current ejection.
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until: AtomicU64,
    /// Set by an operator (admin API): no new requests, those in flight finish.
    drained: AtomicBool,
}

impl Default for ServerHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            ok_in_row: AtomicU32::new(0),
            fail_in_row: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            drained: AtomicBool::new(false),
        }
    }
}

impl ServerHealth {
    /// May get traffic: up by the active checks and not ejected.
    #[must_use]
    pub fn usable(&self, now_ms: u64) -> bool {
        self.up.load(Ordering::Relaxed)
            && !self.drained.load(Ordering::Relaxed)
            && now_ms >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Drains (no new requests) or undrains the server; survives reloads.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A request to the server succeeded (no connect failure, no 5xx).
    pub fn passive_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Whether a passive ejection is running now.
    #[must_use]
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Ordering::Relaxed)
    }

    /// A request failed through the server's fault. When that makes `consecutive_failures`,
    /// the server is ejected if `may_eject` agrees (the pool's last usable server and servers
    /// past `max_ejection_percent` are not).
    pub fn passive_failure(
        &self,
        cfg: &PassiveConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> Passive {
        if cfg.consecutive_failures == 0 {
            return Passive::Counted;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < cfg.consecutive_failures {
            return Passive::Counted;
        }
        self.failures.store(0, Ordering::Relaxed);
        if !may_eject() {
            return Passive::Refused;
        }
        let round = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let time = cfg
            .base_ejection
            .saturating_mul(1 << round)
            .min(cfg.max_ejection);
        self.ejected_until.store(
            crate::clock::now_ms() + u64::try_from(time.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Passive::Ejected(time)
    }

    /// Records an active check; returns `Some(new state)` when the server changed state.
    fn check_result(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.fail_in_row.store(0, Ordering::Relaxed);
            let n = self.ok_in_row.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.up.load(Ordering::Relaxed) && n >= rise {
                self.up.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.ok_in_row.store(0, Ordering::Relaxed);
            let n = self.fail_in_row.fetch_add(1, Ordering::Relaxed) + 1;
            if self.up.load(Ordering::Relaxed) && n >= fall {
                self.up.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// What one failure did to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// Counted towards `consecutive_failures`.
    Counted,
    /// The server is out for this long.
    Ejected(Duration),
    /// It would have been ejected, but the pool cannot spare it.
    Refused,
}

/// Every server's health, keyed by pool name and address; it outlives config reloads.
#[derive(Debug, Default)]
pub struct HealthBoard {
    servers: Mutex<HashMap<(String, SocketAddr), Arc<ServerHealth>>>,
}

impl HealthBoard {
    /// The health of server `addr` in pool `pool` (created on first sight).
    ///
    /// # Panics
    ///
    /// If the board's mutex is poisoned (a thread panicked while holding it).
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Arc<ServerHealth> {
        self.servers
            .lock()
            .expect("health board")
            .entry((pool.to_owned(), addr))
            .or_default()
            .clone()
    }
}

/// One active check: GET `path` on the server (through the pool's connector), expect `status`.
async fn probe(upstream: &Upstream, index: usize) -> Result<(), String> {
    let cfg = upstream
        .health
        .as_ref()
        .expect("checks run only with a health config");
    let server = &upstream.servers[index];
    let fut = async {
        let (mut sender, conn) = super::client::connect_h1(upstream, server.addr, None)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get(cfg.path.as_str())
            .header(hyper::header::HOST, server.addr.to_string())
            .header(hyper::header::USER_AGENT, "proxy-health-check")
            .header(hyper::header::CONNECTION, "close")
            .body(super::client::empty_body())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status().as_u16() == cfg.expect_status {
            Ok(())
        } else {
            Err(format!(
                "status {} (expected {})",
                resp.status().as_u16(),
                cfg.expect_status
            ))
        }
    };
    match tokio::time::timeout(cfg.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", cfg.timeout)),
    }
}

/// Runs the active checks of every server of `upstream` until `stop` changes.
pub async fn run_checks(upstream: Arc<Upstream>, mut stop: watch::Receiver<bool>) {
    let Some(cfg) = upstream.health.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let probes = (0..upstream.servers.len()).map(|i| {
            let upstream = upstream.clone();
            async move { (i, probe(&upstream, i).await) }
        });
        for (i, result) in futures_join_all(probes).await {
            let server = &upstream.servers[i];
            match server
                .health
                .check_result(result.is_ok(), cfg.rise, cfg.fall)
            {
                Some(true) => {
                    info!(upstream = upstream.name, server = %server.addr, "server is up (health check)");
                }
                Some(false) => warn!(
                    upstream = upstream.name,
                    server = %server.addr,
                    reason = result.err().unwrap_or_default(),
                    "server is down (health check)"
                ),
                None => {}
            }
        }
    }
}

/// Awaits every future concurrently (a small `join_all` without the futures crate).
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let h = ServerHealth::default();
        assert!(h.is_up());
        assert_eq!(h.check_result(false, 2, 3), None);
        assert_eq!(h.check_result(false, 2, 3), None);
        assert_eq!(h.check_result(false, 2, 3), Some(false));
        assert!(!h.usable(crate::clock::now_ms()));
        assert_eq!(h.check_result(true, 2, 3), None);
        assert_eq!(h.check_result(true, 2, 3), Some(true));
    }

    #[test]
    fn passive_ejection_grows_and_is_capped() {
        let cfg = PassiveConfig {
            consecutive_failures: 2,
            on_5xx: false,
            max_ejection_percent: 50,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(3),
        };
        let h = ServerHealth::default();
        let fail = || h.passive_failure(&cfg, || true);
        assert_eq!(fail(), Passive::Counted);
        assert_eq!(fail(), Passive::Ejected(Duration::from_secs(1)));
        assert!(!h.usable(crate::clock::now_ms()));
        fail();
        assert_eq!(fail(), Passive::Ejected(Duration::from_secs(2)));
        fail();
        assert_eq!(fail(), Passive::Ejected(Duration::from_secs(3)), "capped");
        h.passive_success();
        fail();
        assert_eq!(
            fail(),
            Passive::Ejected(Duration::from_secs(1)),
            "a success resets the growth"
        );
        let spared = ServerHealth::default();
        spared.passive_failure(&cfg, || false);
        assert_eq!(spared.passive_failure(&cfg, || false), Passive::Refused);
        assert!(
            spared.usable(crate::clock::now_ms()),
            "a refused ejection leaves it usable"
        );
    }
}
