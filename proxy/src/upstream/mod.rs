//! Upstream pools. Here: a fixed list of servers picked round robin; health checks and the
//! other balancing policies build on this type.
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use crate::config::UpstreamConfig;

/// One named pool of origin servers.
#[derive(Debug)]
pub struct Pool {
    name: String,
    servers: Vec<SocketAddr>,
    next: AtomicUsize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl Pool {
    /// A pool from its config (validated: at least one server).
    #[must_use]
    pub fn new(name: &str, config: &UpstreamConfig) -> Self {
        assert!(
            !config.servers.is_empty(),
            "config validation guarantees a server"
        );
        Self {
            name: name.to_owned(),
            servers: config.servers.clone(),
            next: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next server, round robin.
    pub fn pick(&self) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.servers[i % self.servers.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_server_equally() {
        let config = UpstreamConfig {
            servers: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                "127.0.0.1:3".parse().unwrap(),
            ],
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        };
        let pool = Pool::new("app", &config);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..300 {
            *counts.entry(pool.pick()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }
}
