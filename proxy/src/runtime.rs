//! A config generation: everything the request path needs, built from one validated config
//! and swapped in atomically on reload (in-flight requests finish on the generation they
//! started with).
use std::{collections::BTreeMap, sync::Arc};

use arc_swap::ArcSwap;

use crate::{
    access::Access,
    config::{Config, ListenerConfig},
    defense::{Cidr, ban, limits::ClientLimits},
    routing::{HostMatch, Router},
    rules::CompiledOps,
    tls,
    upstream::{HealthBoard, Upstream},
};

/// A route, compiled.
#[derive(Debug)]
pub struct Route {
    /// `route[i]` in the config, or `listener[i]` for a listener's own upstream.
    pub label: String,
    pub upstream: Arc<Upstream>,
    pub access: Access,
    pub request_ops: CompiledOps,
    pub response_ops: CompiledOps,
    pub pass_server_header: bool,
    /// Forward the client's own request target instead of the normalised one.
    pub forward_original_path: bool,
    /// Upgrade protocols passed through (lowercase).
    pub upgrades: Vec<String>,
    /// The route's cache settings (None: not cached).
    pub cache: Option<Arc<crate::cache::Policy>>,
    /// Responses and latency of requests that took this route.
    pub statuses: crate::metrics::StatusCounts,
    pub latency: crate::metrics::Histogram,
}

/// One config generation.
pub struct Generation {
    pub id: u64,
    pub config: Arc<Config>,
    pub router: Router<Arc<Route>>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// `[[ban]]` rules, compiled.
    pub bans: Vec<ban::CompiledRule>,
    /// This proxy's `Via` entries (`server.name`) for HTTP/1.0, 1.1 and 2, made once.
    pub via: [hyper::header::HeaderValue; 3],
}

impl Generation {
    /// Whether `ip` may be banned: never a trusted proxy nor a PROXY protocol sender (they
    /// relay other clients' traffic; the allowlist is checked where the ban is applied).
    #[must_use]
    pub fn may_ban(&self, ip: std::net::IpAddr) -> bool {
        let c = &self.config;
        !c.server.trusted_proxies.iter().any(|p| p.contains(ip))
            && !c
                .listener
                .iter()
                .any(|l| l.proxy_protocol_from.iter().any(|p| p.contains(ip)))
    }
}

impl Generation {
    /// The prefix a ban may really cover: `wanted`, unless it would take in a trusted proxy
    /// or a PROXY sender (one client of a shared /64 or /24 must never get the load balancer
    /// in front dropped); then the client's own address alone.
    #[must_use]
    pub fn ban_prefix(&self, client: std::net::IpAddr, wanted: Cidr) -> Cidr {
        let c = &self.config;
        let relays = c
            .server
            .trusted_proxies
            .iter()
            .chain(c.listener.iter().flat_map(|l| l.proxy_protocol_from.iter()));
        let mut relays = relays;
        if relays.any(|r| r.overlaps(&wanted)) {
            Cidr::host(client)
        } else {
            wanted
        }
    }
}

/// Per listener, the TLS server config in force (None for plain listeners). Swapped on reload
/// and when certificate files change.
pub type TlsConfigs = Vec<Option<Arc<rustls::ServerConfig>>>;

/// What every worker shares.
pub struct Shared {
    pub generation: ArcSwap<Generation>,
    pub tls: ArcSwap<TlsConfigs>,
    /// Per-client limit state (survives reloads).
    pub limits: Arc<ClientLimits>,
    /// Ban rule counters (survive reloads).
    pub bans: Arc<ban::BanEngine>,
    /// Process-wide counters.
    pub metrics: Arc<crate::metrics::Global>,
    /// All requests, by status class, and their latency.
    pub requests: crate::metrics::StatusCounts,
    pub latency: crate::metrics::Histogram,
    /// Access log (None when off).
    pub access_log: Option<crate::access_log::AccessLog>,
    /// The response cache (survives reloads).
    pub cache: Arc<crate::cache::Cache>,
    /// The pinned lists, for clients the kernel cannot see: those behind a trusted proxy
    /// (and every client when no kernel program is attached).
    pub maps: Option<Arc<crate::kernel::KernelMaps>>,
    /// The fleet task, once started (`[cluster]`).
    pub cluster: std::sync::OnceLock<crate::cluster::Cluster>,
}

impl Shared {
    /// The lists changed in this process (automatic bans): the fleet publishes them now
    /// rather than at its next look at the state file.
    pub fn lists_changed(&self) {
        if let Some(c) = self.cluster.get() {
            c.lists_changed();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("listener[{index}].tls: {source}")]
    Tls { index: usize, source: tls::TlsError },
}

/// Builds the TLS configs of every listener (reads the certificate files).
pub fn build_tls(listeners: &[ListenerConfig]) -> Result<TlsConfigs, BuildError> {
    listeners
        .iter()
        .enumerate()
        .map(|(index, l)| {
            l.tls
                .as_ref()
                .map(tls::server_config)
                .transpose()
                .map_err(|source| BuildError::Tls { index, source })
        })
        .collect()
}

/// Builds a generation; `board` keeps server health across generations.
pub fn build(id: u64, config: Arc<Config>, board: &HealthBoard) -> Result<Generation, BuildError> {
    let mut upstreams = BTreeMap::new();
    for (name, u) in &config.upstream {
        let tls = u
            .tls
            .as_ref()
            .map(|t| tls::client_config(t, u.http2))
            .transpose()
            .map_err(|e| BuildError::Invalid {
                key: format!("upstream.{name}.tls"),
                message: e.to_string(),
            })?;
        upstreams.insert(name.clone(), Arc::new(Upstream::new(name, u, board, tls)));
    }
    // Validation is the build: every rule is compiled here, once, and an error names the
    // config key it came from.
    // Objects may be as large as the larger tier.
    let cache_max = config
        .cache
        .disk
        .as_ref()
        .map_or(config.cache.max_bytes, |d| {
            d.max_bytes.max(config.cache.max_bytes)
        });
    let compile = |i: usize,
                   r: &crate::config::RouteConfig|
     -> Result<(HostMatch, String, Arc<Route>), BuildError> {
        let label = format!("route[{i}]");
        let invalid = |key: &str, message: String| BuildError::Invalid {
            key: format!("{label}.{key}"),
            message,
        };
        let host = HostMatch::parse(r.host.as_deref()).map_err(|m| invalid("host", m))?;
        let cache = match &r.cache {
            Some(c) => crate::cache::Policy::compile(c, cache_max)
                .map_err(|(k, m)| invalid(&format!("cache.{k}"), m))?,
            None => None,
        };
        let route = Arc::new(Route {
            upstream: upstreams[&r.upstream].clone(),
            access: Access::compile(&r.allow, &r.deny, r.auth.as_ref())
                .map_err(|m| invalid("auth", m))?,
            request_ops: CompiledOps::compile(&r.headers.request)
                .map_err(|m| invalid("headers.request", m))?,
            response_ops: CompiledOps::compile(&r.headers.response)
                .map_err(|m| invalid("headers.response", m))?,
            pass_server_header: r.pass_server_header,
            forward_original_path: r.forward_original_path,
            upgrades: r.upgrades.iter().map(|u| u.to_ascii_lowercase()).collect(),
            cache,
            statuses: crate::metrics::StatusCounts::default(),
            latency: crate::metrics::Histogram::default(),
            label,
        });
        Ok((host, r.path.clone(), route))
    };
    let routes = config
        .route
        .iter()
        .enumerate()
        .map(|(i, r)| compile(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut fallbacks = Vec::new();
    for (i, l) in config.listener.iter().enumerate() {
        fallbacks.push(l.upstream.as_ref().map(|up| {
            Arc::new(Route {
                label: format!("listener[{i}]"),
                upstream: upstreams[up].clone(),
                access: Access::default(),
                request_ops: CompiledOps::default(),
                response_ops: CompiledOps::default(),
                pass_server_header: false,
                forward_original_path: false,
                upgrades: vec!["websocket".to_owned()],
                cache: None,
                statuses: crate::metrics::StatusCounts::default(),
                latency: crate::metrics::Histogram::default(),
            })
        }));
    }
    let bans = ban::compile_all(&config.ban).map_err(|(i, message)| BuildError::Invalid {
        key: format!("ban[{i}]"),
        message,
    })?;
    let via_for = |version: &str| {
        hyper::header::HeaderValue::from_str(&format!("{version} {}", config.server.name)).map_err(
            |_| BuildError::Invalid {
                key: "server.name".into(),
                message: format!(
                    "{:?} cannot be sent in a header (Via): use letters, digits and punctuation",
                    config.server.name
                ),
            },
        )
    };
    let via = [via_for("1.0")?, via_for("1.1")?, via_for("2")?];
    Ok(Generation {
        id,
        bans,
        via,
        router: Router::new(routes, fallbacks),
        upstreams,
        config,
    })
}

/// What a reload may not change without a restart: the sockets.
pub fn listeners_compatible(old: &Config, new: &Config) -> Result<(), String> {
    let shape = |c: &Config| -> Vec<(std::net::SocketAddr, bool, bool, bool)> {
        c.listener
            .iter()
            .map(|l| (l.address, l.tls.is_some(), l.proxy_protocol, l.syn_proxy))
            .collect()
    };
    if shape(old) != shape(new) {
        return Err("the listeners changed (address, tls on/off, proxy_protocol or syn_proxy): that needs a restart, not a reload".into());
    }
    if old.workers() != new.workers()
        || old.kernel.attach != new.kernel.attach
        || old.kernel.interfaces != new.kernel.interfaces
    {
        return Err("workers or [kernel] changed: that needs a restart, not a reload".into());
    }
    if (old.limits.max_tracked_clients, old.limits.client_prefix_v6)
        != (new.limits.max_tracked_clients, new.limits.client_prefix_v6)
    {
        return Err(
            "limits.max_tracked_clients or limits.client_prefix_v6 changed: that needs a restart, not a reload"
                .into(),
        );
    }
    if old.cache != new.cache {
        return Err("[cache] changed: that needs a restart, not a reload".into());
    }
    if old.instance != new.instance || old.state_file() != new.state_file() || old.user != new.user
    {
        return Err(
            "instance, state_file or user changed: that needs a restart, not a reload".into(),
        );
    }
    if old.cluster != new.cluster {
        return Err("[cluster] changed: that needs a restart, not a reload".into());
    }
    Ok(())
}
