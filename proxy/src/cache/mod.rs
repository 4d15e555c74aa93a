//! The response cache: an in-memory RFC 9111 shared cache, bounded by bytes.
//!
//! - `control`: the RFC's rules (directives, storability, freshness, age, conditionals).
//! - this module: the store (moka, TinyLFU admission with a byte weigher), keys and `Vary`
//!   secondary keys, per-key fill locks for request coalescing, purge, statistics.
//! - `body`: the body wrapper that stores a response while it streams to the first client.
//!
//! The request path that uses all this is `http::cached`.
//!
//! Keys: `scheme://host/path?query` (host lowercase, without port), then per configured key
//! header `\0name=value`. Only GET responses are stored (HEAD is answered from them), so the
//! method is implicit. A response with `Vary` is stored under `key\0v<epoch>\0<values>` and
//! the primary key holds a marker naming the headers; replacing or removing the marker
//! orphans the old variants, which then age out of the store.
pub mod body;
pub mod control;
pub mod disk;
pub mod range;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use hyper::{HeaderMap, StatusCode, Uri, header::HeaderName};
use tokio::sync::watch;

use crate::config::RouteCache;
use control::{Directives, LifetimeRules};

/// A route's cache settings, compiled.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per independent [route.cache] switch"
)]
pub struct Policy {
    pub rules: LifetimeRules,
    pub max_object_bytes: u64,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub keep_stale: Duration,
    pub store_set_cookie: bool,
    pub ignore_query: bool,
    pub ignore_query_params: Vec<String>,
    pub sort_query: bool,
    pub key_headers: Vec<HeaderName>,
    pub lock_timeout: Duration,
    /// Targeted cache-control fields, highest precedence first (RFC 9213).
    pub targeted: Vec<HeaderName>,
    pub forward_targeted: bool,
    /// Fields that tag a stored response for purges by tag.
    pub tag_headers: Vec<HeaderName>,
    pub forward_tag_headers: bool,
}

/// Tags on one response at most (the rest are ignored), and bytes in a tag at most.
const MAX_TAGS: usize = 128;
const MAX_TAG_BYTES: usize = 1024;

/// Checks a `[route.cache]` table; the error names the key inside it.
fn check_route(c: &RouteCache, max_bytes: u64) -> Result<(), (String, String)> {
    if !(c.heuristic_fraction > 0.0 && c.heuristic_fraction <= 1.0) {
        return Err((
            "heuristic_fraction".into(),
            format!("{} must be in (0, 1]", c.heuristic_fraction),
        ));
    }
    let max_object = c.max_object_bytes.unwrap_or(0);
    if c.max_object_bytes.is_some() && (max_object == 0 || max_object > max_bytes) {
        return Err((
            "max_object_bytes".into(),
            format!(
                "{max_object} must be greater than 0 and at most cache.max_bytes, or cache.disk.max_bytes when larger ({max_bytes})"
            ),
        ));
    }
    if max_object > u64::from(u32::MAX / 2) {
        return Err(("max_object_bytes".into(), "must be at most 2 GiB".into()));
    }
    for h in &c.key_headers {
        HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| ("key_headers".into(), format!("{h:?} is not a header name")))?;
    }
    for h in &c.targeted_cache_control {
        let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            (
                "targeted_cache_control".to_owned(),
                format!("{h:?} is not a header name"),
            )
        })?;
        if name == hyper::header::CACHE_CONTROL {
            return Err((
                "targeted_cache_control".into(),
                "cache-control is not a targeted field; list fields such as cdn-cache-control"
                    .into(),
            ));
        }
    }
    for h in &c.tag_headers {
        HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            (
                "tag_headers".to_owned(),
                format!("{h:?} is not a header name"),
            )
        })?;
    }
    for (key, window) in [
        ("stale_while_revalidate", c.stale_while_revalidate),
        ("stale_if_error", c.stale_if_error),
    ] {
        if window > c.keep_stale {
            return Err((
                key.into(),
                format!(
                    "{}s is longer than keep_stale ({}s), which bounds how long a stale response is kept: raise keep_stale or shorten {key}",
                    window.as_secs(),
                    c.keep_stale.as_secs()
                ),
            ));
        }
    }
    if c.lock_timeout.is_zero() {
        return Err(("lock_timeout".into(), "must be greater than 0".into()));
    }
    Ok(())
}

impl Policy {
    /// `None` when the table turns caching off.
    ///
    /// # Errors
    /// A value out of range: (the key inside `[route.cache]`, what is wrong).
    pub fn compile(c: &RouteCache, max_bytes: u64) -> Result<Option<Arc<Self>>, (String, String)> {
        check_route(c, max_bytes)?;
        Ok(c.enabled.then(|| {
            Arc::new(Self {
                rules: LifetimeRules {
                    default_ttl: c.default_ttl,
                    heuristic: c.heuristic,
                    heuristic_fraction: c.heuristic_fraction,
                    heuristic_max: c.heuristic_max,
                },
                max_object_bytes: c.max_object_bytes.unwrap_or_else(|| max_bytes.min(8 << 20)),
                stale_while_revalidate: c.stale_while_revalidate,
                stale_if_error: c.stale_if_error,
                keep_stale: c.keep_stale,
                store_set_cookie: c.store_set_cookie,
                ignore_query: c.ignore_query,
                ignore_query_params: c.ignore_query_params.clone(),
                sort_query: c.sort_query,
                // Validated with the config.
                key_headers: c
                    .key_headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect(),
                lock_timeout: c.lock_timeout,
                targeted: c
                    .targeted_cache_control
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect(),
                forward_targeted: c.forward_targeted_cache_control,
                tag_headers: c
                    .tag_headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect(),
                forward_tag_headers: c.forward_tag_headers,
            })
        }))
    }

    /// A response's directives for this cache: those of the first targeted field it
    /// carries with any directive in it (RFC 9213 2.1), else its `Cache-Control`.
    #[must_use]
    pub fn response_directives(&self, headers: &HeaderMap) -> Directives {
        for name in &self.targeted {
            if headers.contains_key(name) {
                let d = Directives::parse_field(headers, name);
                if d != Directives::default() {
                    return Directives {
                        targeted: true,
                        ..d
                    };
                }
            }
        }
        Directives::parse(headers)
    }

    /// Removes the fields meant for this cache (targeted cache control, tags) from a
    /// response going to a client, unless configured to pass them on.
    pub fn strip_targeted(&self, headers: &mut HeaderMap) {
        if !self.forward_targeted {
            for name in &self.targeted {
                headers.remove(name);
            }
        }
        if !self.forward_tag_headers {
            for name in &self.tag_headers {
                headers.remove(name);
            }
        }
    }

    /// Whether `headers` carry a field that [`Policy::strip_targeted`] removes.
    #[must_use]
    pub fn has_own_fields(&self, headers: &HeaderMap) -> bool {
        (!self.forward_targeted && self.targeted.iter().any(|n| headers.contains_key(n)))
            || (!self.forward_tag_headers
                && self.tag_headers.iter().any(|n| headers.contains_key(n)))
    }

    /// The purge tags a response carries (deduplicated; at most 128 of at most 1 KiB each).
    #[must_use]
    pub fn tags(&self, headers: &HeaderMap) -> Box<[Box<str>]> {
        let mut tags: Vec<Box<str>> = Vec::new();
        for name in &self.tag_headers {
            for line in headers.get_all(name) {
                let Ok(text) = line.to_str() else { continue };
                for tag in text.split([' ', ',', '\t']).filter(|t| !t.is_empty()) {
                    if tag.len() <= MAX_TAG_BYTES
                        && tags.len() < MAX_TAGS
                        && !tags.iter().any(|t| &**t == tag)
                    {
                        tags.push(tag.into());
                    }
                }
            }
        }
        tags.into_boxed_slice()
    }

    /// The request's values of the key headers (an empty map without `key_headers`).
    #[must_use]
    pub fn key_header_values(&self, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for h in &self.key_headers {
            for v in headers.get_all(h) {
                out.append(h.clone(), v.clone());
            }
        }
        out
    }

    /// The primary cache key of a request.
    #[must_use]
    pub fn key(&self, scheme: &str, host: &str, uri: &Uri, headers: &HeaderMap) -> String {
        let mut k = String::with_capacity(scheme.len() + host.len() + 64);
        k.push_str(scheme);
        k.push_str("://");
        k.push_str(host);
        k.push_str(uri.path());
        if !self.ignore_query
            && let Some(q) = uri.query()
        {
            if self.ignore_query_params.is_empty() && !self.sort_query {
                k.push('?');
                k.push_str(q);
            } else {
                let mut params: Vec<&str> = q
                    .split('&')
                    .filter(|p| {
                        let name = p.split_once('=').map_or(*p, |(n, _)| n);
                        !p.is_empty() && !self.ignore_query_params.iter().any(|i| i == name)
                    })
                    .collect();
                if self.sort_query {
                    params.sort_unstable();
                }
                if !params.is_empty() {
                    k.push('?');
                    k.push_str(&params.join("&"));
                }
            }
        }
        for h in &self.key_headers {
            k.push('\0');
            k.push_str(h.as_str());
            k.push('=');
            k.push_str(&control::normalized_value(headers, h));
        }
        k
    }
}

/// A stored response.
#[derive(Debug, Clone)]
pub struct Object {
    pub status: StatusCode,
    /// As received, without hop-by-hop fields, `Age` and `Set-Cookie`.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub response_time: SystemTime,
    /// RFC 9111 4.2.3 `corrected_initial_age`.
    pub initial_age: Duration,
    pub lifetime: Duration,
    pub cc: Directives,
    /// Stale windows in force (the response's directive, else the route's default).
    pub swr: Duration,
    pub sie: Duration,
    /// How long the store keeps it after it is stored.
    pub keep: Duration,
    pub vary: Vec<HeaderName>,
    /// Purge tags (`Surrogate-Key`, `Cache-Tag`).
    pub tags: Box<[Box<str>]>,
    /// The stored headers carry fields meant for this cache only (targeted cache control,
    /// tags) that answers must lose: hits without any skip the removal.
    pub for_this_cache: bool,
}

/// What a stored response is good for, for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Fresh,
    /// Stale, but the request accepts it (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Must be validated with the origin first.
    Validate,
}

impl Object {
    #[must_use]
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age
            + now
                .duration_since(self.response_time)
                .unwrap_or(Duration::ZERO)
    }

    /// Seconds of freshness left (negative when stale), for `Cache-Status: ttl`.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a whole number of seconds; `as` saturates on the (absurd) out-of-range ones"
    )]
    pub fn ttl(&self, now: SystemTime) -> i64 {
        let age = self.age(now).as_secs_f64();
        (self.lifetime.as_secs_f64() - age).floor() as i64
    }

    #[must_use]
    pub fn has_validators(&self) -> bool {
        self.headers.contains_key(hyper::header::ETAG)
            || self.headers.contains_key(hyper::header::LAST_MODIFIED)
    }

    fn stale_allowed(&self) -> bool {
        !self.cc.no_cache && !self.cc.forbids_stale()
    }

    /// RFC 9111 4.2 and 5.2.1: whether this response can answer a request with directives
    /// `req` at `now`.
    #[must_use]
    pub fn usable(&self, req: &Directives, now: SystemTime) -> Use {
        if req.no_cache || self.cc.no_cache {
            return Use::Validate;
        }
        let age = self.age(now);
        if age < self.lifetime {
            let too_old = req.max_age.is_some_and(|m| age > Duration::from_secs(m));
            let not_fresh_enough = req
                .min_fresh
                .is_some_and(|m| self.lifetime.saturating_sub(age) < Duration::from_secs(m));
            return if too_old || not_fresh_enough {
                Use::Validate
            } else {
                Use::Fresh
            };
        }
        if !self.stale_allowed() {
            return Use::Validate;
        }
        let staleness = age.saturating_sub(self.lifetime);
        match req.max_stale {
            Some(None) => return Use::StaleAccepted,
            Some(Some(n)) if staleness <= Duration::from_secs(n) => return Use::StaleAccepted,
            _ => {}
        }
        let age_ok = req.max_age.is_none_or(|m| age <= Duration::from_secs(m));
        if staleness < self.swr && age_ok {
            return Use::StaleWhileRevalidate;
        }
        Use::Validate
    }

    /// A copy that is stale from `now` on (a soft purge): it still serves revalidation,
    /// `max-stale` and the stale windows, which run from `now`.
    #[must_use]
    pub fn stale_copy(&self, now: SystemTime) -> Self {
        let age = self.age(now);
        let stored_for = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        Self {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            response_time: self.response_time,
            initial_age: self.initial_age,
            lifetime: self.lifetime.min(age),
            cc: self.cc.clone(),
            swr: self.swr,
            sie: self.sie,
            keep: self
                .keep
                .saturating_sub(stored_for)
                .max(self.swr.max(self.sie)),
            vary: self.vary.clone(),
            tags: self.tags.clone(),
            for_this_cache: self.for_this_cache,
        }
    }

    /// May this response be served because the origin failed (`stale-if-error`)?
    #[must_use]
    pub fn usable_on_error(&self, now: SystemTime) -> bool {
        if !self.stale_allowed() {
            return false;
        }
        let age = self.age(now);
        age < self.lifetime || age.saturating_sub(self.lifetime) < self.sie
    }

    fn weight(&self, key: &str) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 16).sum();
        u32::try_from(self.body.len() + headers + tags + key.len() + 256).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Object(Arc<Object>),
    Vary {
        names: Arc<[HeaderName]>,
        epoch: u64,
    },
}

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<Object>),
    /// Nothing stored for the URI.
    UriMiss,
    /// Stored variants, none for these request headers.
    VaryMiss,
}

/// Counters (since start).
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub stale: AtomicU64,
    pub misses: AtomicU64,
    pub revalidated: AtomicU64,
    pub bypass: AtomicU64,
    pub stores: AtomicU64,
    pub not_stored: AtomicU64,
    pub coalesced: AtomicU64,
    pub background_refreshes: AtomicU64,
    pub evictions: AtomicU64,
    pub purged: AtomicU64,
    pub invalidated: AtomicU64,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter by name (the admin API's and the CLI's names).
    #[must_use]
    pub fn snapshot(&self) -> [(&'static str, u64); 12] {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("hits", n(&self.hits)),
            ("stale", n(&self.stale)),
            ("misses", n(&self.misses)),
            ("revalidated", n(&self.revalidated)),
            ("bypass", n(&self.bypass)),
            ("stores", n(&self.stores)),
            ("not_stored", n(&self.not_stored)),
            ("coalesced", n(&self.coalesced)),
            ("background_refreshes", n(&self.background_refreshes)),
            ("evictions", n(&self.evictions)),
            ("purged", n(&self.purged)),
            ("invalidated", n(&self.invalidated)),
        ]
    }

    /// Share of cacheable requests answered from the cache (fresh or stale), if any.
    #[must_use]
    pub fn hit_ratio(&self) -> Option<f64> {
        let served = self.hits.load(Ordering::Relaxed) + self.stale.load(Ordering::Relaxed);
        let total =
            served + self.misses.load(Ordering::Relaxed) + self.revalidated.load(Ordering::Relaxed);
        #[expect(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52, and a ratio needs no exact count anyway"
        )]
        (total > 0).then(|| served as f64 / total as f64)
    }
}

/// Per-key fill locks: the first miss fills, the others wait on its `watch` channel, which
/// closes when the filler is done (stored, or found the response uncacheable, or failed).
type Locks = Mutex<HashMap<String, (u64, watch::Receiver<()>)>>;

/// The cache shared by every worker (it survives reloads).
pub struct Cache {
    store: moka::sync::Cache<String, Slot>,
    locks: Locks,
    next_id: AtomicU64,
    pub max_bytes: u64,
    pub stats: Arc<Stats>,
    pub disk: Option<Arc<disk::Disk>>,
}

/// Keeps entries no longer than they can be used.
struct Keep;

impl moka::Expiry<String, Slot> for Keep {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Slot,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        match value {
            // `keep` counts from the response time (as on disk and in `stale_copy`).
            Slot::Object(o) => Some(
                o.keep.saturating_sub(
                    SystemTime::now()
                        .duration_since(o.response_time)
                        .unwrap_or_default(),
                ),
            ),
            Slot::Vary { .. } => None,
        }
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Slot,
        now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// The first miss for a key holds this while it fills the entry; dropping it releases the
/// requests that wait.
pub struct FillGuard {
    cache: Arc<Cache>,
    key: String,
    id: u64,
    _tx: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut locks = self.cache.locks.lock().expect("cache locks");
        if locks.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            locks.remove(&self.key);
        }
    }
}

pub enum Fill {
    /// This request fills the entry.
    Leader(FillGuard),
    /// Another request is filling it: wait for the channel to close.
    Wait(watch::Receiver<()>),
}

impl Cache {
    #[must_use]
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Self::with_disk(max_bytes, None)
    }

    /// A cache with a disk tier under its memory (see [`disk`]).
    #[must_use]
    pub fn with_disk(max_bytes: u64, disk: Option<Arc<disk::Disk>>) -> Arc<Self> {
        let stats = Arc::new(Stats::default());
        let evicted = stats.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Slot| match v {
                Slot::Object(o) => o.weight(k),
                Slot::Vary { names, .. } => {
                    u32::try_from(k.len() + 64 + names.len() * 32).unwrap_or(u32::MAX)
                }
            })
            .expire_after(Keep)
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    Stats::inc(&evicted.evictions);
                }
            })
            .build();
        // Vary epochs stay unique across restarts (the disk tier keeps variants).
        let first_id = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(1));
        Arc::new(Self {
            store,
            locks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(first_id),
            max_bytes,
            stats,
            disk,
        })
    }

    fn secondary_key(primary: &str, epoch: u64, names: &[HeaderName], req: &HeaderMap) -> String {
        let mut k = format!("{primary}\0v{epoch}");
        for n in names {
            k.push('\0');
            k.push_str(&control::normalized_value(req, n));
        }
        k
    }

    /// The stored response for `key` that matches the request's headers (`Vary`), in
    /// memory only.
    #[must_use]
    pub fn lookup(&self, key: &str, req: &HeaderMap) -> Lookup {
        match self.store.get(key) {
            None => Lookup::UriMiss,
            Some(Slot::Object(o)) => Lookup::Hit(o),
            Some(Slot::Vary { names, epoch }) => {
                match self
                    .store
                    .get(&Self::secondary_key(key, epoch, &names, req))
                {
                    Some(Slot::Object(o)) => Lookup::Hit(o),
                    _ => Lookup::VaryMiss,
                }
            }
        }
    }

    /// [`Cache::lookup`] in memory, then on disk; what the disk has comes back into memory.
    /// The flag says whether the answer came from disk.
    pub async fn lookup_tiered(&self, key: &str, req: &HeaderMap) -> (Lookup, bool) {
        let Some(disk) = &self.disk else {
            return (self.lookup(key, req), false);
        };
        let (slot, read) = match self.store.get(key) {
            Some(s) => (Some(s), false),
            None => (self.read_disk(disk, key).await, true),
        };
        match slot {
            None => (Lookup::UriMiss, false),
            Some(Slot::Object(o)) => (Lookup::Hit(o), read),
            Some(Slot::Vary { names, epoch }) => {
                let secondary = Self::secondary_key(key, epoch, &names, req);
                if let Some(Slot::Object(o)) = self.store.get(&secondary) {
                    return (Lookup::Hit(o), false);
                }
                match self.read_disk(disk, &secondary).await {
                    Some(Slot::Object(o)) => (Lookup::Hit(o), true),
                    _ => (Lookup::VaryMiss, false),
                }
            }
        }
    }

    /// Reads `key` from disk, and brings it into memory unless it is large, memory got a
    /// response for the key meanwhile, or an invalidation ran meanwhile.
    async fn read_disk(&self, disk: &Arc<disk::Disk>, key: &str) -> Option<Slot> {
        let before = disk.invalidations.load(Ordering::Acquire);
        let slot = match disk.get(key).await? {
            disk::Item::Object(o) => Slot::Object(o),
            disk::Item::Vary { names, epoch } => Slot::Vary { names, epoch },
        };
        if matches!(&slot, Slot::Object(o) if disk.disk_only(o.body.len()))
            || disk.invalidations.load(Ordering::Acquire) != before
        {
            return Some(slot);
        }
        let promoted = self
            .store
            .entry(key.to_owned())
            .and_compute_with(|cur| match cur {
                None => moka::ops::compute::Op::Put(slot.clone()),
                Some(_) => moka::ops::compute::Op::Nop,
            });
        // An invalidation between the check and the insert: take the copy out again.
        if matches!(promoted, moka::ops::compute::CompResult::Inserted(_))
            && disk.invalidations.load(Ordering::Acquire) != before
        {
            self.store.invalidate(key);
        }
        Some(slot)
    }

    /// Indexes the disk tier, if any (after the daemon dropped its privileges).
    ///
    /// # Errors
    /// The disk tier's directories cannot be read, or its writer cannot start.
    pub fn load_disk(&self) -> std::io::Result<()> {
        if let Some(d) = &self.disk {
            d.load()?;
            // Vary epochs on disk stay unique even if the clock went back.
            self.next_id.fetch_max(
                d.highest_epoch.load(Ordering::Relaxed).saturating_add(1),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// Stores a response for `key`, as selected by the request headers `req`. A part
    /// stored for the URL before goes: it may be of an older representation.
    pub fn insert(&self, key: &str, req: &HeaderMap, object: Object) {
        Stats::inc(&self.stats.stores);
        if !key.ends_with("\0part") {
            self.drop_part(key);
        }
        let object = Arc::new(object);
        if object.vary.is_empty() {
            self.put(key.to_owned(), object);
            return;
        }
        let epoch = match self.store.get(key) {
            Some(Slot::Vary { names, epoch }) if *names == *object.vary => {
                // The disk may have dropped its copy of the marker (its own bound).
                if let Some(d) = &self.disk
                    && !d.contains(key)
                {
                    d.put(key, disk::Item::Vary { names, epoch });
                }
                epoch
            }
            _ => {
                let epoch = self.next_id.fetch_add(1, Ordering::Relaxed);
                let names: Arc<[HeaderName]> = object.vary.clone().into();
                if let Some(d) = &self.disk {
                    d.put(
                        key,
                        disk::Item::Vary {
                            names: names.clone(),
                            epoch,
                        },
                    );
                }
                self.store
                    .insert(key.to_owned(), Slot::Vary { names, epoch });
                epoch
            }
        };
        let secondary = Self::secondary_key(key, epoch, &object.vary, req);
        self.put(secondary, object);
    }

    /// An object into memory (unless it is for the disk only) and onto disk.
    fn put(&self, key: String, object: Arc<Object>) {
        match &self.disk {
            None => self.store.insert(key, Slot::Object(object)),
            Some(d) => {
                d.put(&key, disk::Item::Object(object.clone()));
                if d.disk_only(object.body.len()) {
                    self.store.invalidate(&key);
                } else {
                    self.store.insert(key, Slot::Object(object));
                }
            }
        }
    }

    /// Removes what is stored for `key` (all its variants, and its stored part).
    pub fn invalidate(&self, key: &str) {
        self.drop_part(key);
        self.invalidate_one(key);
    }

    /// Removes the stored part of `key`, if there is one.
    fn drop_part(&self, key: &str) {
        let part = partial_key(key);
        if self.store.contains_key(&part) || self.disk.as_ref().is_some_and(|d| d.contains(&part)) {
            self.invalidate_one(&part);
        }
    }

    fn invalidate_one(&self, key: &str) {
        let on_disk = self.disk.as_ref().is_some_and(|d| {
            let had = d.contains(key);
            d.invalidate(key);
            had
        });
        if self.store.contains_key(key) || on_disk {
            Stats::inc(&self.stats.invalidated);
        }
        self.store.invalidate(key);
    }

    /// Removes every entry of a URL (`http://host/path?query`, all variants and key
    /// headers), or of every URL starting with a prefix when `pattern` ends with `*`.
    /// Returns how many entries were removed.
    pub fn purge(&self, pattern: &str) -> u64 {
        let pattern = normalize_url(pattern);
        let (prefix, exact) = match pattern.strip_suffix('*') {
            Some(p) => (p.to_owned(), false),
            None => (pattern.clone(), true),
        };
        let with_nul = format!("{prefix}\0");
        let doomed: Vec<Arc<String>> = self
            .store
            .iter()
            .filter(|(k, _)| {
                if exact {
                    **k == prefix || k.starts_with(&with_nul)
                } else {
                    k.starts_with(&prefix)
                }
            })
            .map(|(k, _)| k)
            .collect();
        let mut objects = std::collections::HashSet::new();
        for k in doomed {
            if let Some(Slot::Object(_)) = self.store.remove(k.as_str()) {
                objects.insert(k.as_str().to_owned());
            }
        }
        if let Some(d) = &self.disk {
            let matches = move |k: &str| {
                if exact {
                    k == prefix || k.starts_with(&with_nul)
                } else {
                    k.starts_with(&prefix)
                }
            };
            for k in d.purge_keys(matches) {
                objects.insert(k);
            }
        }
        let removed = objects.len() as u64;
        self.stats.purged.fetch_add(removed, Ordering::Relaxed);
        removed
    }

    /// Purges every stored response carrying one of `tags`: removed (`soft` false), or
    /// made stale so that it is revalidated and may still serve stale-if-error (`soft`).
    /// Returns how many responses were purged.
    pub fn purge_tags(&self, tags: &[String], soft: bool) -> u64 {
        let now = SystemTime::now();
        let wanted: std::collections::HashSet<&str> = tags.iter().map(String::as_str).collect();
        let doomed: Vec<(Arc<String>, Arc<Object>)> = self
            .store
            .iter()
            .filter_map(|(k, v)| match v {
                Slot::Object(o) if o.tags.iter().any(|t| wanted.contains(&**t)) => Some((k, o)),
                _ => None,
            })
            .collect();
        let mut purged = std::collections::HashSet::new();
        for (k, o) in doomed {
            if soft {
                // Only the object seen: one stored since (a refill, a purge, an invalidation
                // in between) is left as it is.
                let stale = Arc::new(o.stale_copy(now));
                let replaced = self.store.entry(k.as_str().to_owned()).and_compute_with(
                    |current| match current.map(moka::Entry::into_value) {
                        Some(Slot::Object(c)) if Arc::ptr_eq(&c, &o) => {
                            moka::ops::compute::Op::Put(Slot::Object(stale))
                        }
                        _ => moka::ops::compute::Op::Nop,
                    },
                );
                if matches!(replaced, moka::ops::compute::CompResult::ReplacedWith(_)) {
                    purged.insert(k.as_str().to_owned());
                }
            } else {
                self.store.invalidate(k.as_str());
                purged.insert(k.as_str().to_owned());
            }
        }
        if let Some(d) = &self.disk {
            let tags = Arc::new(tags.iter().cloned().collect());
            purged.extend(d.purge_tags(&tags, soft.then_some(now)));
        }
        let purged = purged.len() as u64;
        self.stats.purged.fetch_add(purged, Ordering::Relaxed);
        purged
    }

    /// Becomes the filler for `key`, or learns whom to wait for.
    ///
    /// # Panics
    ///
    /// If the fill-lock mutex is poisoned (a thread panicked while holding it).
    pub fn fill(self: &Arc<Self>, key: &str) -> Fill {
        let mut locks = self.locks.lock().expect("cache locks");
        if let Some((_, rx)) = locks.get(key) {
            return Fill::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        locks.insert(key.to_owned(), (id, rx));
        Fill::Leader(FillGuard {
            cache: self.clone(),
            key: key.to_owned(),
            id,
            _tx: tx,
        })
    }

    /// The fill lock for `key` if nobody holds it (background refresh: at most one).
    pub fn try_fill(self: &Arc<Self>, key: &str) -> Option<FillGuard> {
        match self.fill(key) {
            Fill::Leader(g) => Some(g),
            Fill::Wait(_) => None,
        }
    }

    /// Entries (objects, and one marker per URL with `Vary`) and their weight in bytes,
    /// after the store's pending evictions ran.
    #[must_use]
    pub fn usage(&self) -> (u64, u64) {
        self.store.run_pending_tasks();
        (self.store.entry_count(), self.store.weighted_size())
    }
}

/// Where a URL's stored part (a `206`) lives: beside its key, never answering a request
/// without `Range`; purges of the URL reach it (`key\0...`).
#[must_use]
pub fn partial_key(key: &str) -> String {
    format!("{key}\0part")
}

/// The authority as keys hold it: the canonical host, and the port unless it is the scheme's
/// default (a response to `Host: a.example:6666` is never served for `a.example`).
#[must_use]
pub fn key_authority(scheme: &str, authority: &str) -> String {
    match crate::authority::parse_authority(authority.as_bytes()) {
        Some(a) => match a.port {
            Some(p) if !matches!((scheme, p), ("http", 80) | ("https", 443)) => {
                format!("{}:{p}", a.host)
            }
            _ => a.host,
        },
        None => authority.to_ascii_lowercase(),
    }
}

/// `HTTP://Example.COM:80/p` -> `http://example.com/p`, as keys are written.
#[must_use]
pub fn normalize_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    format!("{scheme}://{}{path}", key_authority(&scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn policy(extra: &str) -> Arc<Policy> {
        let c: RouteCache = toml::from_str(extra).unwrap();
        Policy::compile(&c, 1 << 20).unwrap().unwrap()
    }

    fn object(body: &str, vary: &[&str]) -> Object {
        Object {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
            response_time: SystemTime::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_mins(1),
            cc: Directives::default(),
            swr: Duration::ZERO,
            sie: Duration::ZERO,
            keep: Duration::from_mins(1),
            vary: vary
                .iter()
                .map(|v| HeaderName::from_bytes(v.as_bytes()).unwrap())
                .collect(),
            tags: Box::new([]),
            for_this_cache: false,
        }
    }

    #[test]
    fn keys_normalise_the_query_and_add_headers() {
        let p = policy(
            "ignore_query_params = [\"utm_source\"]\nsort_query = true\nkey_headers = [\"x-tenant\"]",
        );
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("A"));
        let uri: Uri = "/p?b=2&utm_source=x&a=1".parse().unwrap();
        assert_eq!(
            p.key("http", "h", &uri, &h),
            "http://h/p?a=1&b=2\0x-tenant=a"
        );
        let q = policy("ignore_query = true");
        assert_eq!(q.key("https", "h", &uri, &h), "https://h/p");
        assert_eq!(
            normalize_url("HTTP://Ex.com:8080/a?b"),
            "http://ex.com:8080/a?b"
        );
        assert_eq!(normalize_url("HTTP://Ex.com:80/a?b"), "http://ex.com/a?b");
        assert_eq!(normalize_url("https://Ex.com.:443/"), "https://ex.com/");
    }

    #[test]
    fn vary_variants_and_purge() {
        let cache = Cache::new(1 << 20);
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let plain = HeaderMap::new();
        cache.insert("http://h/a", &gzip, object("gz", &["accept-encoding"]));
        assert!(matches!(cache.lookup("http://h/a", &gzip), Lookup::Hit(o) if o.body == "gz"));
        assert!(matches!(
            cache.lookup("http://h/a", &plain),
            Lookup::VaryMiss
        ));
        cache.insert("http://h/a", &plain, object("plain", &["accept-encoding"]));
        assert!(matches!(cache.lookup("http://h/a", &plain), Lookup::Hit(o) if o.body == "plain"));
        cache.insert("http://h/ab", &plain, object("ab", &[]));
        cache.insert("http://h/b", &plain, object("b", &[]));
        assert_eq!(cache.purge("http://h/a"), 2, "both variants, not /ab");
        assert!(matches!(
            cache.lookup("http://h/ab", &plain),
            Lookup::Hit(_)
        ));
        assert_eq!(cache.purge("http://H/a*"), 1);
        assert!(matches!(cache.lookup("http://h/b", &plain), Lookup::Hit(_)));
    }

    /// `keep_stale` bounds the stale windows: the route's defaults may not exceed it, and a
    /// response's own directives are cut to it.
    #[test]
    fn keep_stale_bounds_the_stale_windows() {
        let c: RouteCache = toml::from_str("stale_if_error = \"1h\"").unwrap();
        let (key, why) = Policy::compile(&c, 1 << 20).err().unwrap();
        assert_eq!(key, "stale_if_error");
        assert!(why.contains("keep_stale"), "{why}");
        let p = policy("keep_stale = \"2m\"\nstale_while_revalidate = \"1m\"");
        let mut h = HeaderMap::new();
        h.insert(
            "cache-control",
            HeaderValue::from_static("max-age=60, stale-if-error=86400"),
        );
        let now = SystemTime::now();
        let cc = p.response_directives(&h);
        let o = crate::http::cached::decide(
            &p,
            &HeaderMap::new(),
            &Directives::default(),
            StatusCode::OK,
            &h,
            &cc,
            now,
            now,
        )
        .unwrap();
        assert_eq!(o.sie, Duration::from_mins(2));
        assert_eq!(o.swr, Duration::from_mins(1));
        assert_eq!(o.keep, Duration::from_mins(3));
    }

    #[test]
    fn freshness_uses() {
        let now = SystemTime::now();
        let mut o = object("x", &[]);
        o.lifetime = Duration::from_secs(10);
        o.initial_age = Duration::from_secs(12);
        o.swr = Duration::from_secs(5);
        let none = Directives::default();
        assert_eq!(o.usable(&none, now), Use::StaleWhileRevalidate);
        let ms = Directives {
            max_stale: Some(Some(3)),
            ..Default::default()
        };
        assert_eq!(o.usable(&ms, now), Use::StaleAccepted);
        o.cc.must_revalidate = true;
        assert_eq!(o.usable(&ms, now), Use::Validate);
        o.cc.must_revalidate = false;
        o.initial_age = Duration::from_secs(2);
        assert_eq!(o.usable(&none, now), Use::Fresh);
        let min_fresh = Directives {
            min_fresh: Some(9),
            ..Default::default()
        };
        assert_eq!(o.usable(&min_fresh, now), Use::Validate);
        let max_age = Directives {
            max_age: Some(1),
            ..Default::default()
        };
        assert_eq!(o.usable(&max_age, now), Use::Validate);
    }

    #[test]
    fn fill_lock_releases_waiters() {
        let cache = Cache::new(1 << 20);
        let Fill::Leader(g) = cache.fill("k") else {
            panic!("first is the leader")
        };
        let Fill::Wait(mut rx) = cache.fill("k") else {
            panic!("second waits")
        };
        assert!(cache.try_fill("k").is_none());
        drop(g);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(
            rt.block_on(rx.changed()).is_err(),
            "closed when the leader is done"
        );
        assert!(cache.try_fill("k").is_some());
    }
}
