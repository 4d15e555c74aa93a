//! Per-client limits shared by all workers: a request-rate token bucket, and counters of open
//! connections and requests in flight. State lives in sharded maps (a lock per shard, held for
//! a few instructions); idle entries are swept periodically.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const SHARDS: usize = 32;

/// A map split into independently locked shards, optionally bounded: a new key in a full shard
/// evicts another entry (an arbitrary one), so a flood of distinct clients cannot grow it.
pub struct Sharded<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
    hasher: RandomState,
    /// Entries per shard at most (`usize::MAX`: unbounded).
    per_shard: usize,
    evictions: AtomicU64,
}

impl<K: Hash + Eq + Clone, V: Default> Default for Sharded<K, V> {
    fn default() -> Self {
        Self::bounded(usize::MAX)
    }
}

impl<K: Hash + Eq + Clone, V: Default> Sharded<K, V> {
    /// At most about `max` entries (rounded up to a multiple of the shard count).
    #[must_use]
    pub fn bounded(max: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: max.div_ceil(SHARDS).max(1),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, V>> {
        let i = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % SHARDS;
        &self.shards[i]
    }

    /// Runs `f` on the entry of `key` (created with `V::default()` when absent; in a full
    /// shard another entry is evicted first).
    ///
    /// # Panics
    ///
    /// If the shard's mutex is poisoned (a thread panicked while holding it).
    pub fn with<R>(&self, key: K, f: impl FnOnce(&mut V) -> R) -> R {
        let mut shard = self.shard(&key).lock().expect("shard lock");
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            // HashMap's order follows its random hash keys: the first entry is as good as a
            // random victim, and costs no bookkeeping on the hot path.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        f(shard.entry(key).or_default())
    }

    /// Entries evicted to stay within the bound, so far.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Runs `f` on the entry of `key` if it exists.
    ///
    /// # Panics
    ///
    /// If the shard's mutex is poisoned (a thread panicked while holding it).
    pub fn with_existing<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.shard(key)
            .lock()
            .expect("shard lock")
            .get_mut(key)
            .map(f)
    }

    /// Keeps only the entries for which `keep` is true.
    ///
    /// # Panics
    ///
    /// If a shard's mutex is poisoned (a thread panicked while holding it).
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in &self.shards {
            shard.lock().expect("shard lock").retain(|k, v| keep(k, v));
        }
    }

    /// Entries in all shards together.
    ///
    /// # Panics
    ///
    /// If a shard's mutex is poisoned (a thread panicked while holding it).
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

/// The key a client's limits and bans are kept under: its address, or for IPv6 its prefix of
/// `prefix_v6` bits (one host owns a whole /64 and can pick any address in it).
#[must_use]
pub fn client_key(ip: IpAddr, prefix_v6: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(a) if prefix_v6 < 128 => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_v6))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
        other => other,
    }
}

/// Who a request-rate bucket belongs to: a client key (see [`client_key`]), or a keyed hash
/// of a header's value (any length of value costs 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Ip(IpAddr),
    Value(u64),
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

/// Per-client limit state. The rate buckets are bounded (`max_tracked_clients`); the open
/// connection and in-flight counters are bounded by the open connections themselves.
pub struct ClientLimits {
    buckets: Sharded<LimitKey, Bucket>,
    connections: Sharded<IpAddr, u32>,
    in_flight: Sharded<IpAddr, u32>,
    /// Keys header values, so a client cannot pick which bucket its value lands in.
    value_hasher: RandomState,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
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
    /// Limits tracking at most about `max_clients` rate buckets.
    #[must_use]
    pub fn new(max_clients: usize) -> Self {
        Self {
            buckets: Sharded::bounded(max_clients),
            connections: Sharded::default(),
            in_flight: Sharded::default(),
            value_hasher: RandomState::new(),
        }
    }

    /// The bucket key for a header value.
    #[must_use]
    pub fn value_key(&self, value: &[u8]) -> LimitKey {
        LimitKey::Value(self.value_hasher.hash_one(value))
    }

    /// Rate buckets evicted to stay within `max_tracked_clients`.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.buckets.evictions()
    }

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

    /// Counts one more open connection from `ip` without checking `max`: a connection that
    /// was admitted at accept and outlives its first guard (an upgraded tunnel).
    pub fn hold_connection(self: &Arc<Self>, ip: IpAddr, max: u32) -> CountGuard {
        if max == 0 {
            return CountGuard {
                limits: None,
                ip,
                requests: false,
            };
        }
        self.connections.with(ip, |n| *n += 1);
        CountGuard {
            limits: Some(self.clone()),
            ip,
            requests: false,
        }
    }

    /// Counts a request in flight from `ip`; `None` when it would exceed `max` (0 = no limit).
    pub fn start_request(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<CountGuard> {
        self.count(ip, max, true)
    }

    /// Drops idle state: full buckets not touched for a minute, zero counters.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| now.duration_since(b.last) < Duration::from_mins(1));
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
    fn bounded_tables_evict_instead_of_growing() {
        let l = ClientLimits::new(64);
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.take_request(LimitKey::Ip(ip), 10, 5);
        }
        assert!(l.buckets.len() <= 64 + SHARDS, "{}", l.buckets.len());
        assert!(l.evictions() >= 10_000 - 64 - SHARDS as u64);
        // Header values of any length cost one small key, and equal values share it.
        let long = vec![b'x'; 100_000];
        assert_eq!(l.value_key(&long), l.value_key(&long.clone()));
        assert_ne!(l.value_key(b"a"), l.value_key(b"b"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 128),
            ip("2001:db8:1:2:aaaa::1")
        );
        assert_eq!(client_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(client_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(client_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
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
