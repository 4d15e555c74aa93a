//! Per-client limits shared by all workers: a request-rate token bucket, and counters of open
//! connections and requests in flight. State lives in sharded maps (a lock per shard, held for
//! a few instructions); idle entries are swept periodically.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const SHARDS: usize = 32;

/// A map split into independently locked shards.
pub struct Sharded<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V: Default> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq, V: Default> Sharded<K, V> {
    fn shard(&self, key: &K) -> &Mutex<HashMap<K, V>> {
        let i = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % SHARDS;
        &self.shards[i]
    }

    /// Runs `f` on the entry of `key` (created with `V::default()` when absent).
    pub fn with<R>(&self, key: K, f: impl FnOnce(&mut V) -> R) -> R {
        let mut shard = self.shard(&key).lock().expect("shard lock");
        f(shard.entry(key).or_default())
    }

    /// Runs `f` on the entry of `key` if it exists.
    pub fn with_existing<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.shard(key)
            .lock()
            .expect("shard lock")
            .get_mut(key)
            .map(f)
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in &self.shards {
            shard.lock().expect("shard lock").retain(|k, v| keep(k, v));
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("shard lock").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Who a request-rate bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Ip(IpAddr),
    Value(String),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            tokens: f64::NAN,
            last: Instant::now(),
        }
    }
}

/// Per-client limit state.
#[derive(Default)]
pub struct ClientLimits {
    buckets: Sharded<LimitKey, Bucket>,
    connections: Sharded<IpAddr, u32>,
    in_flight: Sharded<IpAddr, u32>,
}

/// Decrements a per-client counter when dropped.
pub struct CountGuard {
    /// None when there is no limit: nothing was counted (no lock, no hashing per request).
    limits: Option<Arc<ClientLimits>>,
    ip: IpAddr,
    requests: bool,
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let Some(limits) = &self.limits else { return };
        let map = if self.requests {
            &limits.in_flight
        } else {
            &limits.connections
        };
        map.with_existing(&self.ip, |n| *n = n.saturating_sub(1));
    }
}

impl ClientLimits {
    /// Takes a token from `key`'s bucket (`rate` per second, `burst` deep). `Err(wait)`: over
    /// the limit, a token is due in `wait`.
    pub fn take_request(&self, key: LimitKey, rate: u32, burst: u32) -> Result<(), Duration> {
        let (rate, burst) = (f64::from(rate), f64::from(burst.max(1)));
        self.buckets.with(key, |b| {
            let now = Instant::now();
            if b.tokens.is_nan() {
                b.tokens = burst;
            } else {
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
            }
            b.last = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
            }
        })
    }

    fn count(self: &Arc<Self>, ip: IpAddr, max: u32, requests: bool) -> Option<CountGuard> {
        if max == 0 {
            // No limit, nothing to count. (A reload that sets a limit starts counting with
            // the requests and connections that begin after it.)
            return Some(CountGuard {
                limits: None,
                ip,
                requests,
            });
        }
        let map = if requests {
            &self.in_flight
        } else {
            &self.connections
        };
        let admitted = map.with(ip, |n| {
            if max > 0 && *n >= max {
                false
            } else {
                *n += 1;
                true
            }
        });
        admitted.then(|| CountGuard {
            limits: Some(self.clone()),
            ip,
            requests,
        })
    }

    /// Counts an open connection from `ip`; `None` when it would exceed `max` (0 = no limit).
    pub fn open_connection(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<CountGuard> {
        self.count(ip, max, false)
    }

    /// Counts a request in flight from `ip`; `None` when it would exceed `max` (0 = no limit).
    pub fn start_request(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<CountGuard> {
        self.count(ip, max, true)
    }

    /// Drops idle state: full buckets not touched for a minute, zero counters.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| now.duration_since(b.last) < Duration::from_secs(60));
        self.connections.retain(|_, n| *n > 0);
        self.in_flight.retain(|_, n| *n > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let l = ClientLimits::default();
        let k = || LimitKey::Ip("192.0.2.1".parse().unwrap());
        for _ in 0..5 {
            assert!(l.take_request(k(), 10, 5).is_ok());
        }
        let wait = l.take_request(k(), 10, 5).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.take_request(k(), 10, 5).is_ok(), "a token came back");
        assert!(
            l.take_request(LimitKey::Ip("192.0.2.2".parse().unwrap()), 10, 5)
                .is_ok(),
            "other clients have their own"
        );
    }

    #[test]
    fn counters_admit_up_to_the_limit_and_release_on_drop() {
        let l = Arc::new(ClientLimits::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.open_connection(ip, 2).unwrap();
        let _b = l.open_connection(ip, 2).unwrap();
        assert!(l.open_connection(ip, 2).is_none());
        drop(a);
        assert!(l.open_connection(ip, 2).is_some());
        assert!(l.start_request(ip, 0).is_some(), "0 = no limit");
        l.sweep();
    }
}
