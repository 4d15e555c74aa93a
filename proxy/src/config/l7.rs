//! The layer-7 part of the configuration: server-wide HTTP settings, listeners (TLS, PROXY
//! protocol), routes (matching, access control, header rules) and upstream pools (balancing,
//! health, retries, TLS and HTTP/2 to the upstream).
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::duration;
use crate::cidr::Cidr;

/// `[server]`: settings for every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Time a client has to send a request's headers (slowloris bound).
    #[serde(default = "d30s", with = "duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(default = "d60s", with = "duration")]
    pub idle_timeout: Duration,
    /// Upper bound for a whole request, from its headers to the end of the response headers.
    #[serde(default = "d300s", with = "duration")]
    pub request_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    #[serde(default = "d10s", with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// How long requests in flight may run on after a stop signal.
    #[serde(default = "d10s", with = "duration")]
    pub drain_timeout: Duration,
    /// A response write to the client that makes no progress for this long closes the
    /// connection (a client that stops reading cannot hold the response and its upstream).
    #[serde(default = "d60s", with = "duration")]
    pub send_timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed.
    #[serde(default = "d1h", with = "duration")]
    pub tunnel_idle_timeout: Duration,
    /// Which server reads HTTP/1.1 from clients: `own` (the proxy's, requests with a body
    /// handed to hyper's) or `hyper`.
    #[serde(default)]
    pub http1: Http1Server,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed: the client address
    /// is the nearest address in those headers that is not one of them.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Which header the trusted proxies write the client address into: exactly that one is
    /// read (a client could add the other one itself).
    #[serde(default)]
    pub client_address_from: ClientAddressFrom,
    /// Name this proxy gives itself in `Via` and in error pages.
    #[serde(default = "default_via")]
    pub name: String,
}

/// `server.client_address_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressFrom {
    /// `X-Forwarded-For` (nginx, HAProxy, most cloud balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=...` (Envoy with `use_remote_address`, some CDNs).
    Forwarded,
}

impl Default for ServerConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d60s() -> Duration {
    Duration::from_mins(1)
}
fn d90s() -> Duration {
    Duration::from_secs(90)
}
fn d300s() -> Duration {
    Duration::from_mins(5)
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d2s() -> Duration {
    Duration::from_secs(2)
}
fn d0s() -> Duration {
    Duration::ZERO
}
fn d1h() -> Duration {
    Duration::from_hours(1)
}
fn d10m() -> Duration {
    Duration::from_mins(10)
}
fn d1d() -> Duration {
    Duration::from_hours(24)
}
fn default_heuristic_fraction() -> f64 {
    0.1
}
fn d1s() -> Duration {
    Duration::from_secs(1)
}
fn yes() -> bool {
    true
}
fn default_via() -> String {
    "proxy".to_owned()
}

/// `[[listener]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to listen on.
    pub address: SocketAddr,
    /// A pool that gets every request on this listener that no `[[route]]` matches.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Expect a PROXY protocol v1 or v2 header first on every connection (from a load
    /// balancer in front); its source address is then the client address.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The load balancers allowed to send that header (required with `proxy_protocol`): a
    /// connection from any other address is closed before a byte is read.
    #[serde(default)]
    pub proxy_protocol_from: Vec<Cidr>,
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain listener.
    #[serde(default = "yes")]
    pub h2c: bool,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// What a request path's `%2F`, `%5C` and `\` become: `reject` (400, the default), `keep`
    /// (left as they are, inside a segment) or `decode` (each a `/`).
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// Answer this listener's SYNs in XDP with SYN cookies (a spoofed SYN flood never reaches
    /// the stack); nftables' synproxy completes the handshakes (see docs/configuration.md).
    /// Needs `kernel.attach` = auto, xdp or xdp-generic, nftables, and kernel 6.0 or later.
    #[serde(default)]
    pub syn_proxy: bool,
}

/// `[listener.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chains and keys (PEM); the one valid for the client's SNI name is used, the
    /// first one when no SNI matches.
    pub certificates: Vec<CertificatePair>,
    /// ALPN protocols offered, in order of preference.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
}

fn default_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[[route]]`: where requests go, who may send them, and how their headers change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Host to match: `api.example.com`, or `*.example.com` for any subdomain; absent: any.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix to match.
    #[serde(default = "default_path")]
    pub path: String,
    /// The pool to forward to.
    pub upstream: String,
    /// Only these client addresses may use the route (403 for others); empty: everyone.
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// These client addresses may not use the route (403), checked before `allow`.
    #[serde(default)]
    pub deny: Vec<Cidr>,
    /// Authentication required on the route.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Header rules.
    #[serde(default)]
    pub headers: HeaderRules,
    /// Pass the origin's `Server` header to the client (default: removed).
    #[serde(default)]
    pub pass_server_header: bool,
    /// Upgrade protocols (the `Upgrade` header's tokens) passed to the upstream; a request
    /// for any other is forwarded as a plain request without `Upgrade`.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// Send the upstream the request target as the client wrote it, not the normalised path
    /// that routing, access checks and the cache saw (for origins that need the raw bytes).
    #[serde(default)]
    pub forward_original_path: bool,
    /// Cache responses on this route (RFC 9111 shared cache); absent: no caching.
    #[serde(default)]
    pub cache: Option<RouteCache>,
}

/// `[cache]`: the response cache shared by every route that has `[route.cache]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory bound of the cache: bodies, headers and keys (bytes).
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
    /// A disk tier under the memory one: the cache survives restarts, and large responses
    /// stay out of memory.
    #[serde(default)]
    pub disk: Option<CacheDisk>,
}

/// `[cache] disk = { path = "...", max_bytes = N }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheDisk {
    /// The directory of the files (created if missing; nothing else may live in it).
    pub path: std::path::PathBuf,
    /// Bytes on disk at most (files, headers included); the least used go first.
    pub max_bytes: u64,
    /// Responses with a larger body are kept on disk only (bytes).
    #[serde(default = "default_memory_max_object_bytes")]
    pub memory_max_object_bytes: u64,
    /// Files up to this size are read on the worker thread (fast from the page cache; a
    /// slow disk stalls the worker meanwhile), larger ones on a blocking pool (bytes).
    #[serde(default = "default_inline_read_max_bytes")]
    pub inline_read_max_bytes: u64,
}

fn default_inline_read_max_bytes() -> u64 {
    64 << 10
}

fn default_memory_max_object_bytes() -> u64 {
    1 << 20
}

impl Default for CacheConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_cache_bytes() -> u64 {
    256 << 20
}

/// `[route.cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "mirrors the `[route.cache]` table, whose on/off settings are independent"
)]
pub struct RouteCache {
    /// Turn caching off on this route while keeping the table.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Lifetime for heuristically cacheable responses (200, 301, 404, ...) that state none
    /// (no `max-age`, `s-maxage` or `Expires`); `"0s"`: none.
    #[serde(default = "d0s", with = "duration")]
    pub default_ttl: Duration,
    /// Without an explicit or default lifetime, use a fraction of the time since
    /// `Last-Modified` (RFC 9111 4.2.2).
    #[serde(default = "yes")]
    pub heuristic: bool,
    /// That fraction.
    #[serde(default = "default_heuristic_fraction")]
    pub heuristic_fraction: f64,
    /// Upper bound for a heuristic lifetime.
    #[serde(default = "d1d", with = "duration")]
    pub heuristic_max: Duration,
    /// Responses larger than this are streamed through and not stored (bytes); default
    /// 8 MiB, or `cache.max_bytes` when that is smaller.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// Serve a stale response this long past its lifetime while one background request
    /// refreshes it, when the response does not say (`stale-while-revalidate=N` wins).
    #[serde(default = "d0s", with = "duration")]
    pub stale_while_revalidate: Duration,
    /// Serve a stale response this long past its lifetime when the origin fails (5xx or
    /// unreachable), when the response does not say (`stale-if-error=N` wins).
    #[serde(default = "d0s", with = "duration")]
    pub stale_if_error: Duration,
    /// A stale response is kept this long past its lifetime (for revalidation, `max-stale`
    /// requests and stale-if-error), unless the stale windows are longer.
    #[serde(default = "d10m", with = "duration")]
    pub keep_stale: Duration,
    /// Store responses with `Set-Cookie` (the stored copy never carries the cookie).
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Leave the query string out of the cache key.
    #[serde(default)]
    pub ignore_query: bool,
    /// Query parameters left out of the cache key (`utm_source`, ...).
    #[serde(default)]
    pub ignore_query_params: Vec<String>,
    /// Sort query parameters in the key, so `?a=1&b=2` and `?b=2&a=1` share an entry.
    #[serde(default)]
    pub sort_query: bool,
    /// Request headers whose values become part of the cache key.
    #[serde(default)]
    pub key_headers: Vec<String>,
    /// Concurrent misses for one key wait this long for the first one's response before
    /// going to the origin themselves.
    #[serde(default = "d5s", with = "duration")]
    pub lock_timeout: Duration,
    /// Targeted cache-control fields (RFC 9213) this cache obeys, highest precedence first:
    /// the first one a response carries replaces its `Cache-Control` (and `Expires`) here.
    #[serde(default = "default_targeted")]
    pub targeted_cache_control: Vec<String>,
    /// Pass the targeted fields on to clients (by default they are for this cache only).
    #[serde(default)]
    pub forward_targeted_cache_control: bool,
    /// Response fields whose values tag a stored response for `proxy cache purge --tag`
    /// (tags separated by spaces or commas, as Fastly's `Surrogate-Key` and Cloudflare's
    /// `Cache-Tag`).
    #[serde(default = "default_tag_headers")]
    pub tag_headers: Vec<String>,
    /// Pass the tag fields on to clients (by default they are removed).
    #[serde(default)]
    pub forward_tag_headers: bool,
}

fn default_tag_headers() -> Vec<String> {
    vec!["surrogate-key".to_owned(), "cache-tag".to_owned()]
}

fn default_targeted() -> Vec<String> {
    vec!["cdn-cache-control".to_owned()]
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".to_owned()]
}

fn default_path() -> String {
    "/".to_owned()
}

/// `[route.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "kebab-case")]
pub enum AuthConfig {
    /// HTTP Basic: user name -> password hash (`$argon2id$...`, from `proxy hash-password`).
    Basic {
        #[serde(default = "default_realm")]
        realm: String,
        users: BTreeMap<String, String>,
    },
    /// Bearer tokens, each stored as `sha256:<hex>` of the token.
    Bearer {
        #[serde(default = "default_realm")]
        realm: String,
        tokens: Vec<String>,
    },
}

fn default_realm() -> String {
    "proxy".to_owned()
}

/// `[route.headers]`: `request` rules apply before forwarding, `response` rules before
/// answering. Values may use `$client_ip`, `$host`, `$scheme`, `$request_id`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default)]
    pub request: HeaderOps,
    #[serde(default)]
    pub response: HeaderOps,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Add these headers (keeping existing values).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `[upstream.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `"IP:PORT"` or `{ address = "IP:PORT", weight = N }` for each origin server.
    pub servers: Vec<ServerEntry>,
    /// Load-balancing policy.
    #[serde(default)]
    pub policy: LbPolicy,
    /// For `policy = "hash"`: `client_ip` (default), `header:NAME` or `cookie:NAME`.
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default = "d5s", with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    #[serde(default = "d60s", with = "duration")]
    pub response_timeout: Duration,
    /// Idle pooled connections to the upstream are closed after this long.
    #[serde(default = "d90s", with = "duration")]
    pub idle_timeout: Duration,
    /// Idle connections kept per server and worker.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_server: usize,
    /// Speak HTTP/2 to the servers (prior knowledge over plain TCP, ALPN over TLS).
    #[serde(default)]
    pub http2: bool,
    /// Send a PROXY v2 header with the client's address on each upstream connection (such
    /// connections are not shared between clients).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// TLS to the servers.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Active health checks.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Passive ejection of failing servers.
    #[serde(default)]
    pub passive: PassiveConfig,
    /// Retries.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_max_idle() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServerEntry {
    Address(SocketAddr),
    Weighted {
        address: SocketAddr,
        #[serde(default = "one")]
        weight: u32,
    },
}

fn one() -> u32 {
    1
}

impl ServerEntry {
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        match self {
            Self::Address(a) | Self::Weighted { address: a, .. } => *a,
        }
    }

    #[must_use]
    pub fn weight(&self) -> u32 {
        match self {
            Self::Address(_) => 1,
            Self::Weighted { weight, .. } => *weight,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight per unit of weight.
    LeastConn,
    /// Consistent hashing (Maglev) on `hash_key`.
    Hash,
    /// Two random servers, the less loaded wins.
    RandomTwo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Name sent as SNI and checked against the server certificate (default: the address).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM bundle of CAs to trust (default: /etc/ssl/certs/ca-certificates.crt).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path requested with GET.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Status that counts as healthy.
    #[serde(default = "default_expect")]
    pub expect_status: u16,
    #[serde(default = "d2s", with = "duration")]
    pub interval: Duration,
    #[serde(default = "d1s", with = "duration")]
    pub timeout: Duration,
    /// Consecutive successes that bring a server back.
    #[serde(default = "two")]
    pub rise: u32,
    /// Consecutive failures that take a server out.
    #[serde(default = "three")]
    pub fall: u32,
}

fn default_health_path() -> String {
    "/".to_owned()
}
fn default_expect() -> u16 {
    200
}
fn default_max_tracked() -> usize {
    100_000
}
fn default_client_prefix_v6() -> u8 {
    64
}
fn fifty() -> u32 {
    50
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Consecutive failures the server causes (connect errors, broken connections, response
    /// timeouts after a complete request, and 5xx answers when `on_5xx`) that eject it; 0
    /// disables. What a client causes (bodies too large or too slow, aborts) never counts.
    #[serde(default = "three")]
    pub consecutive_failures: u32,
    /// Count 5xx responses as failures too (off by default, like nginx's `max_fails`: an
    /// application that answers 500 is still a working server).
    #[serde(default)]
    pub on_5xx: bool,
    /// At most this share of a pool's servers is ejected at once (percent, default 50); the
    /// last usable server is never ejected.
    #[serde(default = "fifty")]
    pub max_ejection_percent: u32,
    /// First ejection; each further one in a row doubles it, up to `max_ejection`.
    #[serde(default = "d5s", with = "duration")]
    pub base_ejection: Duration,
    #[serde(default = "d60s", with = "duration")]
    pub max_ejection: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Further tries on another server, for a connect failure (always safe) or, for
    /// idempotent requests without a body, a 502/503/504 or a broken response.
    #[serde(default = "one")]
    pub attempts: u32,
    /// Retries allowed on top of the requests of the last second, in percent (the budget).
    #[serde(default = "default_budget")]
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the budget.
    #[serde(default = "three")]
    pub min_per_second: u32,
}

fn default_budget() -> u32 {
    20
}

impl Default for RetryConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `[limits]`: per-client limits and request size limits, for every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second a client may make (token bucket, `429` with `Retry-After` past it);
    /// 0 = no limit.
    #[serde(default)]
    pub requests_per_second: u32,
    /// Requests a client may make at once above the rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// What a "client" is for the request rate: `client_ip` or `header:NAME`.
    #[serde(default)]
    pub key: RateKey,
    /// Open connections per client address; more are closed at accept (before any TLS
    /// work). 0 = no limit.
    #[serde(default)]
    pub connections_per_client: u32,
    /// Requests in flight per client address (`429` past it). 0 = no limit.
    #[serde(default)]
    pub requests_in_flight_per_client: u32,
    /// Bytes of request line and headers (HTTP/1.1; `431` past it). At least 8192.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Number of request headers (`431` past it).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Bytes of the request target (`414` past it).
    #[serde(default = "default_max_uri")]
    pub max_uri_bytes: usize,
    /// Bytes of a request body (`413` when the declared length is larger; a chunked body that
    /// grows past it is cut off). 0 = no limit.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Time allowed between two chunks of a request body; past it the request is aborted.
    #[serde(default = "d60s", with = "duration")]
    pub body_read_timeout: Duration,
    /// Minimum average request-body rate in bytes per second, checked after the first 5 s of
    /// a body; a slower upload is aborted. 0 = no minimum.
    #[serde(default)]
    pub min_body_rate: u64,
    /// Clients whose rate buckets, ban windows and offence counts are kept at most (each
    /// table); past it the oldest-looking entry is evicted (counted in
    /// `proxy_client_state_evictions_total`). Restart only.
    #[serde(default = "default_max_tracked")]
    pub max_tracked_clients: usize,
    /// IPv6 clients are one client per prefix of this length for limits and bans (a host gets
    /// a whole /64 and can pick any address in it). Restart only.
    #[serde(default = "default_client_prefix_v6")]
    pub client_prefix_v6: u8,
    /// HTTP/2: streams a client may have open at once.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: bytes of a header list (also bounds CONTINUATION floods).
    #[serde(default = "default_h2_header_list")]
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2: streams a client may reset before the proxy accepted them (rapid reset,
    /// CVE-2023-44487); past it the connection gets GOAWAY.
    #[serde(default = "default_h2_resets")]
    pub h2_max_pending_reset_streams: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_burst() -> u32 {
    20
}
/// What the request rate limit counts by (`limits.key`), parsed at load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RateKey {
    /// The client address (by `limits.client_prefix_v6` for IPv6).
    #[default]
    ClientIp,
    /// A header's value (`header:NAME`); requests without it count by client address.
    Header(hyper::header::HeaderName),
}

impl TryFrom<String> for RateKey {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if text == "client_ip" {
            return Ok(Self::ClientIp);
        }
        text.strip_prefix("header:")
            .and_then(|n| hyper::header::HeaderName::from_bytes(n.as_bytes()).ok())
            .map(Self::Header)
            .ok_or_else(|| format!("{text:?}: use client_ip or header:NAME"))
    }
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_uri() -> usize {
    8 * 1024
}
fn default_max_body() -> u64 {
    10 * 1024 * 1024
}
fn default_h2_streams() -> u32 {
    100
}
fn default_h2_header_list() -> u32 {
    16 * 1024
}
fn default_h2_resets() -> usize {
    20
}

/// What a ban rule counts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BanTrigger {
    /// Responses to the client whose status is in `statuses`.
    Status,
    /// Requests the HTTP parser refused (malformed, oversized headers).
    InvalidRequest,
    /// Requests matching `path_regex` or `user_agent_regex` (answered `403`).
    DenyPattern,
}

/// `[[ban]]`: abuse seen at layer 7 that puts the client into the kernel blocklist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRule {
    /// Shown in logs and as the blocklist entry's note.
    pub name: String,
    pub on: BanTrigger,
    /// For `on = "status"`: codes (`"429"`) or classes (`"4xx"`).
    #[serde(default)]
    pub statuses: Vec<String>,
    /// For `on = "deny-pattern"`.
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub user_agent_regex: Option<String>,
    /// Events within `window` that trigger the ban.
    #[serde(default = "one_u32")]
    pub threshold: u32,
    #[serde(default = "d10s", with = "duration")]
    pub window: Duration,
    /// First ban; each repeat doubles it, up to `max_ttl`.
    #[serde(default = "d600s", with = "duration")]
    pub ttl: Duration,
    #[serde(default = "d86400s", with = "duration")]
    pub max_ttl: Duration,
    /// Ban the client's prefix of this length instead of the single address.
    #[serde(default = "p32")]
    pub prefix_v4: u8,
    /// For IPv6 the default is the /64 a host owns (any address in it is the same client).
    #[serde(default = "default_client_prefix_v6")]
    pub prefix_v6: u8,
}

fn one_u32() -> u32 {
    1
}
fn d600s() -> Duration {
    Duration::from_mins(10)
}
fn d86400s() -> Duration {
    Duration::from_hours(24)
}
fn p32() -> u8 {
    32
}

/// `[admin]`: the admin API (metrics, health, reload, lists).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `unix:/path/to.sock` (mode 0600) or `IP:PORT` (then `token` is required); default
    /// `unix:/run/proxy/<instance>.sock`; `off` disables the admin API.
    #[serde(default)]
    pub listen: Option<String>,
    /// `sha256:<hex>` of the bearer token clients must send (see `proxy hash-token`).
    #[serde(default)]
    pub token: Option<String>,
}

/// What a listener does with `%2F`, `%5C` and `\` in a request path (like Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EscapedSlashes {
    /// Refuse the request with 400 (the default: no origin can read it differently).
    #[default]
    Reject,
    /// Keep `%2F` / `%5C` encoded (an opaque byte inside a segment) and `\` as it is.
    Keep,
    /// Turn each into `/`, a segment separator, before the dot segments are resolved.
    Decode,
}

/// Which server reads HTTP/1.1 from clients (`server.http1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Http1Server {
    /// The proxy's own (`crate::h1`): requests without a body are served on it, others handed
    /// to hyper's server with the bytes read.
    #[default]
    Own,
    /// hyper's server for every request.
    Hyper,
}
