//! The configuration file (TOML): parsing, defaults and validation.
//!
//! Every error names the file and the key (`listener[1].upstream`), and says what is wrong.
//! See `docs/configuration.md` for each key and `examples/demo.toml` for a full file.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

mod l7;
pub use l7::*;

/// Where a running instance keeps its runtime files: `<instance>.json` (how the CLI finds
/// it), `<instance>.sock` (the default admin socket), `<instance>.reload.json`.
pub const RUNTIME_DIR: &str = "/run/proxy";

/// Where the state file lives when the config does not say: `<dir>/<instance>/state.json`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/proxy";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// How the kernel programs are attached to the configured interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// Native XDP, else generic XDP, else TC; the log says which one won and why.
    #[default]
    Auto,
    /// Native (driver) XDP only.
    Xdp,
    /// Generic (skb) XDP only.
    XdpGeneric,
    /// TC ingress classifier only (tcx where the kernel has it, else clsact).
    Tc,
    /// No kernel programs: the proxy enforces the blocklist at accept().
    #[expect(
        clippy::doc_markdown,
        reason = "clap prints this doc comment as the value's --help text, where backticks would show"
    )]
    None,
}

impl AttachMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Xdp => "xdp",
            Self::XdpGeneric => "xdp-generic",
            Self::Tc => "tc",
            Self::None => "none",
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this proxy's pinned maps (`/sys/fs/bpf/proxy/<instance>/`) and its state.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Blocklist/allowlist state file; default `/var/lib/proxy/<instance>/state.json`.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// Daemon log level (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such
    /// as `proxy=debug`); `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Run as this user after start-up (keeping only `CAP_BPF`); default: stay root.
    #[serde(default)]
    pub user: Option<String>,
    /// Worker threads, each with its own runtime and its own socket per listener; default: the
    /// number of CPUs.
    #[serde(default)]
    pub workers: Option<u32>,
    #[serde(default)]
    pub kernel: KernelConfig,
    /// HTTP settings for every listener.
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub listener: Vec<ListenerConfig>,
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    #[serde(default)]
    pub upstream: BTreeMap<String, UpstreamConfig>,
    /// Per-client and size limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Abuse that gets a client banned in the kernel.
    #[serde(default)]
    pub ban: Vec<BanRule>,
    /// The access log.
    #[serde(default)]
    pub access_log: crate::access_log::AccessLogConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The response cache (used by routes with `[route.cache]`).
    #[serde(default)]
    pub cache: CacheConfig,
    /// A fleet sharing its lists through etcd; absent = a single node.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: the etcd cluster a fleet of proxies shares its lists through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://host:port`, or `https://` with `ca`).
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet (`/proxy`): `<prefix>/lists/...`, `<prefix>/nodes/...`.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// This node's name in the fleet; default: the host name.
    #[serde(default)]
    pub node: Option<String>,
    /// CA certificate (PEM) that etcd's server certificate must chain to; turns TLS on.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd's client-certificate authentication.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// etcd user, with its password in `password_file` (one line).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// The host name (a fleet node's default name).
fn host_name() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(format!(
            "cannot read the host name ({}); set cluster.node",
            std::io::Error::last_os_error()
        ));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn default_cluster_prefix() -> String {
    "/proxy".to_owned()
}

/// Checks a fleet node name: it goes into etcd keys.
pub fn validate_node(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "node name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

impl ClusterConfig {
    /// This node's name: `node`, else the host name.
    pub fn node_name(&self) -> Result<String, String> {
        let name = if let Some(n) = &self.node {
            n.clone()
        } else {
            host_name()?
        };
        validate_node(&name)?;
        Ok(name)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("cluster.{key}"), problem));
        if self.endpoints.is_empty() {
            return bad("endpoints", "needs at least one etcd URL".into());
        }
        let tls = self.ca.is_some() || self.cert.is_some();
        for e in &self.endpoints {
            let rest = e
                .strip_prefix("http://")
                .map(|r| (r, false))
                .or_else(|| e.strip_prefix("https://").map(|r| (r, true)));
            let Some((hostport, https)) = rest else {
                return bad(
                    "endpoints",
                    format!("{e:?} must start with http:// or https://"),
                );
            };
            if hostport.is_empty() || hostport.contains(['/', ' ']) || !hostport.contains(':') {
                return bad(
                    "endpoints",
                    format!("{e:?} must be a URL with a host and a port and no path"),
                );
            }
            if https != tls {
                return bad(
                    "endpoints",
                    format!(
                        "{e:?}: {}",
                        if https {
                            "https:// needs `ca` (the CA etcd's certificate chains to)"
                        } else {
                            "http:// with `ca`/`cert` set: use https://"
                        }
                    ),
                );
            }
        }
        if !self.prefix.starts_with('/')
            || self.prefix.len() < 2
            || self.prefix.ends_with('/')
            || self
                .prefix
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return bad(
                "prefix",
                format!(
                    "{:?} must start with '/', not end with '/', and hold no spaces",
                    self.prefix
                ),
            );
        }
        if let Some(n) = &self.node {
            validate_node(n).map_err(|p| ("cluster.node".to_owned(), p))?;
        }
        if self.cert.is_some() != self.key.is_some() {
            return bad("cert", "and `cluster.key` go together".into());
        }
        if self.cert.is_some() && self.ca.is_none() {
            return bad(
                "cert",
                "needs `cluster.ca` (the CA etcd's server certificate chains to)".into(),
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            return bad("user", "and `cluster.password_file` go together".into());
        }
        if self.user.is_some() && !tls {
            return bad(
                "user",
                "needs TLS (`cluster.ca`, https:// endpoints): the password would cross the network in clear".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    #[serde(default)]
    pub attach: AttachMode,
    /// Interfaces the packet filter is attached to.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// How often expired blocklist entries are removed from the maps and the state file.
    #[serde(default = "default_sweep", with = "duration")]
    pub sweep_interval: Duration,
    /// How new connections are spread over the workers.
    #[serde(default)]
    pub spread: SpreadMode,
    /// New TCP connections (SYNs) per second allowed from one source prefix, in XDP/TC;
    /// 0 = no limit.
    #[serde(default)]
    pub syn_rate: u32,
    /// SYNs a source may send at once above the rate (default: the rate).
    #[serde(default)]
    pub syn_burst: u32,
    /// Sources are grouped by these prefix lengths for `syn_rate`.
    #[serde(default = "default_prefix_v4")]
    pub rate_prefix_v4: u8,
    #[serde(default = "default_prefix_v6")]
    pub rate_prefix_v6: u8,
}

fn default_prefix_v4() -> u8 {
    32
}
fn default_prefix_v6() -> u8 {
    64
}

/// How the `sk_reuseport` program picks a worker for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SpreadMode {
    /// Hash of the 4-tuple (the kernel's own behaviour; a baseline).
    Hash,
    /// The live worker with the fewest connections and in-flight requests.
    LeastLoaded,
    /// Power of two choices: two workers from the hash, the less loaded wins.
    #[default]
    P2c,
}

impl SpreadMode {
    #[must_use]
    pub fn policy(self) -> proxy_common::SpreadPolicy {
        match self {
            Self::Hash => proxy_common::SpreadPolicy::Hash,
            Self::LeastLoaded => proxy_common::SpreadPolicy::LeastLoaded,
            Self::P2c => proxy_common::SpreadPolicy::P2c,
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            attach: AttachMode::default(),
            interfaces: Vec::new(),
            sweep_interval: default_sweep(),
            spread: SpreadMode::default(),
            syn_rate: 0,
            syn_burst: 0,
            rate_prefix_v4: default_prefix_v4(),
            rate_prefix_v6: default_prefix_v6(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_instance() -> String {
    "default".to_owned()
}
fn default_sweep() -> Duration {
    Duration::from_secs(1)
}

/// Durations are written as humantime strings: `"500ms"`, `"10s"`, `"5m"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    /// The longest duration a config may give (100 years). Timers add durations to the clock,
    /// which overflows (and panicked, e.g. on every request body with `body_read_timeout =
    /// "300000000000y"`) for durations near what humantime accepts.
    pub const MAX: Duration = Duration::from_hours(100 * 365 * 24);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"500ms\", \"10s\", \"5m\""
            ))
        })?;
        if parsed > MAX {
            return Err(D::Error::custom(format!(
                "duration {text:?} is longer than 100 years"
            )));
        }
        Ok(parsed)
    }
}

/// Checks an instance name: it becomes a directory name under bpffs and /var/lib.
pub fn validate_instance(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("instance name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "instance name {name:?} may only contain letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// Most request headers `limits.max_headers` may allow: with the forwarding headers and the
/// header rules a request gets, it stays far below what a header map can hold (24 576).
const MAX_HEADERS: usize = 10_000;
/// Most `limits.h2_max_header_list_bytes` (HTTP/2 counts at least 33 bytes per field, so this
/// bounds a request to under 8 000 fields).
const MAX_H2_HEADER_LIST_BYTES: u32 = 256 * 1024;
/// Most `set` plus `add` rules per route and direction.
const MAX_HEADER_RULES: usize = 1_000;

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The number of workers, with the default (one per CPU) applied.
    #[must_use]
    pub fn workers(&self) -> u32 {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| {
                u32::try_from(n.get())
                    .unwrap_or(1)
                    .min(proxy_common::MAX_WORKERS)
            })
        })
    }

    /// The state file path, with the default applied.
    #[must_use]
    pub fn state_file(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| default_state_file(&self.instance))
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one flat run of independent checks, one per setting, in the config's order"
    )]
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem,
        };
        validate_instance(&self.instance).map_err(|p| invalid("instance".into(), p))?;
        if let Some(c) = &self.cluster {
            c.validate().map_err(|(k, p)| invalid(k, p))?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid(
                "log_level".into(),
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or filter",
                    self.log_level
                ),
            ));
        }
        if let Some(d) = &self.cache.disk {
            if !d.path.is_absolute() {
                return Err(invalid(
                    "cache.disk.path".into(),
                    format!("{} must be an absolute path", d.path.display()),
                ));
            }
            if d.max_bytes < 1 << 20 {
                return Err(invalid(
                    "cache.disk.max_bytes".into(),
                    format!("is {}; it must be at least 1048576 (1 MiB)", d.max_bytes),
                ));
            }
            if d.memory_max_object_bytes == 0 {
                return Err(invalid(
                    "cache.disk.memory_max_object_bytes".into(),
                    "must be greater than 0".into(),
                ));
            }
        }
        if let Some(w) = self.workers
            && !(1..=proxy_common::MAX_WORKERS).contains(&w)
        {
            return Err(invalid(
                "workers".into(),
                format!("is {w}; it must be from 1 to {}", proxy_common::MAX_WORKERS),
            ));
        }
        if self.listener.len() > proxy_common::MAX_LISTENERS as usize {
            return Err(invalid(
                "listener".into(),
                format!(
                    "has {} entries; at most {} are supported",
                    self.listener.len(),
                    proxy_common::MAX_LISTENERS
                ),
            ));
        }
        if self.listener.is_empty() {
            return Err(invalid(
                "listener".into(),
                "is missing: add at least one [[listener]] with address and upstream".into(),
            ));
        }
        let known = || {
            let names: Vec<&str> = self.upstream.keys().map(String::as_str).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        // Zero would not mean "no limit": the idle check cannot tick every 0 s (it panicked in
        // every connection) and hyper would refuse every request at once.
        for (k, d) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.request_timeout", self.server.request_timeout),
            (
                "server.tls_handshake_timeout",
                self.server.tls_handshake_timeout,
            ),
            ("server.send_timeout", self.server.send_timeout),
            (
                "server.tunnel_idle_timeout",
                self.server.tunnel_idle_timeout,
            ),
            ("limits.body_read_timeout", self.limits.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    k.into(),
                    "must be greater than 0 (e.g. \"30s\")".into(),
                ));
            }
        }
        for (i, listener) in self.listener.iter().enumerate() {
            if let Some(up) = &listener.upstream
                && !self.upstream.contains_key(up)
            {
                return Err(invalid(
                    format!("listener[{i}].upstream"),
                    format!(
                        "names upstream {up:?}, which is not defined (defined: {})",
                        known()
                    ),
                ));
            }
            if listener.upstream.is_none() && self.route.is_empty() {
                return Err(invalid(
                    format!("listener[{i}]"),
                    "has no upstream and there is no [[route]]: set `upstream` or add a route"
                        .into(),
                ));
            }
            if listener.proxy_protocol && listener.proxy_protocol_from.is_empty() {
                return Err(invalid(
                    format!("listener[{i}].proxy_protocol_from"),
                    "is required with proxy_protocol = true: list the load balancers that send the header (e.g. [\"10.0.0.0/24\"]); anyone else could claim any client address".into(),
                ));
            }
            if listener.address.port() == 0 {
                return Err(invalid(
                    format!("listener[{i}].address"),
                    "needs a port other than 0".into(),
                ));
            }
            if let Some(j) = self.listener[..i]
                .iter()
                .position(|l| l.address == listener.address)
            {
                return Err(invalid(
                    format!("listener[{i}].address"),
                    format!("{} is already used by listener[{j}]", listener.address),
                ));
            }
            if let Some(tls) = &listener.tls {
                if tls.certificates.is_empty() {
                    return Err(invalid(
                        format!("listener[{i}].tls.certificates"),
                        "is empty".into(),
                    ));
                }
                for (k, p) in tls.alpn.iter().enumerate() {
                    if p != "h2" && p != "http/1.1" {
                        return Err(invalid(
                            format!("listener[{i}].tls.alpn[{k}]"),
                            format!("is {p:?}; supported: \"h2\", \"http/1.1\""),
                        ));
                    }
                }
            }
        }
        for (i, route) in self.route.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            if !self.upstream.contains_key(&route.upstream) {
                return Err(invalid(
                    key("upstream"),
                    format!(
                        "names upstream {:?}, which is not defined (defined: {})",
                        route.upstream,
                        known()
                    ),
                ));
            }
            if !route.path.starts_with('/') {
                return Err(invalid(
                    key("path"),
                    format!("{:?} must start with '/'", route.path),
                ));
            }
            for (side, ops) in [
                ("request", &route.headers.request),
                ("response", &route.headers.response),
            ] {
                if ops.set.len() + ops.add.len() > MAX_HEADER_RULES {
                    return Err(invalid(
                        key(&format!("headers.{side}")),
                        format!("at most {MAX_HEADER_RULES} set and add rules"),
                    ));
                }
            }
            for (k, token) in route.upgrades.iter().enumerate() {
                if token.is_empty()
                    || !token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                {
                    return Err(invalid(
                        key(&format!("upgrades[{k}]")),
                        format!("{token:?} is not a protocol token (e.g. \"websocket\")"),
                    ));
                }
            }
            if route.forward_original_path && route.cache.is_some() {
                return Err(invalid(
                    key("forward_original_path"),
                    "cannot be combined with [route.cache]: the cache keys on the normalised path, so two spellings the origin may answer differently would share an entry".into(),
                ));
            }
        }
        for (name, upstream) in &self.upstream {
            let key = |k: &str| format!("upstream.{name}.{k}");
            if upstream.servers.is_empty() {
                return Err(invalid(
                    key("servers"),
                    "is empty: list at least one \"IP:PORT\"".into(),
                ));
            }
            for (j, s) in upstream.servers.iter().enumerate() {
                if !(1..=1000).contains(&s.weight()) {
                    return Err(invalid(
                        key(&format!("servers[{j}].weight")),
                        "must be from 1 to 1000".into(),
                    ));
                }
            }
            for (k, d) in [
                ("connect_timeout", upstream.connect_timeout),
                ("response_timeout", upstream.response_timeout),
                ("idle_timeout", upstream.idle_timeout),
            ] {
                if d.is_zero() {
                    return Err(invalid(key(k), "must be greater than 0".into()));
                }
            }
            if let Some(k) = &upstream.hash_key {
                let ok = k == "client_ip"
                    || k.strip_prefix("header:").is_some_and(|h| {
                        hyper::header::HeaderName::from_bytes(h.as_bytes()).is_ok()
                    })
                    || k.strip_prefix("cookie:").is_some_and(|c| !c.is_empty());
                if !ok {
                    return Err(invalid(
                        key("hash_key"),
                        format!("{k:?}: use client_ip, header:NAME or cookie:NAME"),
                    ));
                }
            }
            if let Some(h) = &upstream.health {
                if !h.path.starts_with('/') {
                    return Err(invalid(key("health.path"), "must start with '/'".into()));
                }
                if h.rise == 0 || h.fall == 0 {
                    return Err(invalid(
                        key("health"),
                        "rise and fall must be at least 1".into(),
                    ));
                }
                if h.interval.is_zero() || h.timeout.is_zero() {
                    return Err(invalid(
                        key("health"),
                        "interval and timeout must be greater than 0".into(),
                    ));
                }
            }
            let passive = &upstream.passive;
            if passive.base_ejection.is_zero() || passive.max_ejection < passive.base_ejection {
                return Err(invalid(
                    key("passive"),
                    "base_ejection must be greater than 0 and max_ejection at least base_ejection"
                        .into(),
                ));
            }
            if passive.max_ejection_percent > 100 {
                return Err(invalid(
                    key("passive.max_ejection_percent"),
                    format!(
                        "is {}; it is a percentage, at most 100",
                        passive.max_ejection_percent
                    ),
                ));
            }
            if upstream.retry.attempts > 5 {
                return Err(invalid(key("retry.attempts"), "must be at most 5".into()));
            }
        }
        if self.kernel.attach != AttachMode::None && self.kernel.interfaces.is_empty() {
            return Err(invalid(
                "kernel.interfaces".into(),
                format!(
                    "is empty but kernel.attach is {:?}: list the interfaces to filter on, or set attach = \"none\"",
                    self.kernel.attach.as_str()
                ),
            ));
        }
        let syn_proxy = self.listener.iter().any(|l| l.syn_proxy);
        for (i, iface) in self.kernel.interfaces.iter().enumerate() {
            // The SYN proxy writes the names into an nftables script.
            if syn_proxy
                && !iface
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(invalid(
                    format!("kernel.interfaces[{i}]"),
                    format!(
                        "{iface:?}: with syn_proxy, interface names may hold only letters, digits, '_', '-' and '.'"
                    ),
                ));
            }
        }
        for (i, l) in self.listener.iter().enumerate() {
            if l.syn_proxy && matches!(self.kernel.attach, AttachMode::None | AttachMode::Tc) {
                return Err(invalid(
                    format!("listener[{i}].syn_proxy"),
                    format!(
                        "needs the XDP program but kernel.attach is {:?}: set attach = \"auto\", \"xdp\" or \"xdp-generic\" (TC cannot answer a SYN), or turn syn_proxy off",
                        self.kernel.attach.as_str()
                    ),
                ));
            }
        }
        for (i, iface) in self.kernel.interfaces.iter().enumerate() {
            if iface.is_empty() || iface.len() >= libc::IF_NAMESIZE || iface.contains(['/', ' ']) {
                return Err(invalid(
                    format!("kernel.interfaces[{i}]"),
                    format!("{iface:?} is not a valid interface name"),
                ));
            }
        }
        if self.kernel.rate_prefix_v4 > 32 || self.kernel.rate_prefix_v6 > 128 {
            return Err(invalid(
                "kernel.rate_prefix_v4".into(),
                "prefix lengths are at most 32 (IPv4) and 128 (IPv6)".into(),
            ));
        }
        let limits = &self.limits;
        if limits.requests_per_second > 0 && limits.burst == 0 {
            return Err(invalid(
                "limits.burst".into(),
                "must be at least 1 when requests_per_second is set".into(),
            ));
        }
        if limits.client_prefix_v6 > 128 {
            return Err(invalid(
                "limits.client_prefix_v6".into(),
                format!(
                    "is {}; an IPv6 prefix is at most 128",
                    limits.client_prefix_v6
                ),
            ));
        }
        if limits.max_tracked_clients < 1024 {
            return Err(invalid(
                "limits.max_tracked_clients".into(),
                "must be at least 1024".into(),
            ));
        }
        if limits.max_header_bytes < 8192 {
            return Err(invalid(
                "limits.max_header_bytes".into(),
                "must be at least 8192".into(),
            ));
        }
        // A header map holds at most 24 576 fields (http's HeaderMap panics past that, in
        // hyper's parser or when the proxy adds its own), so requests must stay well below.
        if limits.max_headers > MAX_HEADERS {
            return Err(invalid(
                "limits.max_headers".into(),
                format!("is {}; at most {MAX_HEADERS}", limits.max_headers),
            ));
        }
        if limits.h2_max_header_list_bytes > MAX_H2_HEADER_LIST_BYTES {
            return Err(invalid(
                "limits.h2_max_header_list_bytes".into(),
                format!(
                    "is {}; at most {MAX_H2_HEADER_LIST_BYTES}",
                    limits.h2_max_header_list_bytes
                ),
            ));
        }
        if limits.max_headers == 0
            || limits.max_uri_bytes == 0
            || limits.h2_max_concurrent_streams == 0
        {
            return Err(invalid(
                "limits".into(),
                "max_headers, max_uri_bytes and h2_max_concurrent_streams must be greater than 0"
                    .into(),
            ));
        }
        match self.admin.listen.as_deref() {
            None | Some("off") => {}
            Some(l) if l.starts_with("unix:/") => {}
            Some(l) => {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    return Err(invalid(
                        "admin.listen".into(),
                        format!("{l:?}: use unix:/path/to.sock, IP:PORT or off"),
                    ));
                }
                if self.admin.token.is_none() {
                    return Err(invalid(
                        "admin.token".into(),
                        "is required when the admin API listens on TCP".into(),
                    ));
                }
            }
        }
        if let Some(t) = &self.admin.token
            && (t.len() != 71 || !t.starts_with("sha256:"))
        {
            return Err(invalid(
                "admin.token".into(),
                "must be \"sha256:<64 hex digits>\" (see `proxy hash-token`)".into(),
            ));
        }
        if self.kernel.sweep_interval < Duration::from_millis(100) {
            return Err(invalid(
                "kernel.sweep_interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        Ok(())
    }
}

/// `/var/lib/proxy/<instance>/state.json`.
#[must_use]
pub fn default_state_file(instance: &str) -> PathBuf {
    Path::new(DEFAULT_STATE_DIR)
        .join(instance)
        .join("state.json")
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    const GOOD: &str = r#"
        [kernel]
        attach = "tc"
        interfaces = ["lo"]

        [[listener]]
        address = "127.0.0.1:8080"
        upstream = "app"

        [upstream.app]
        servers = ["127.0.0.1:9000", "127.0.0.1:9001"]
        connect_timeout = "2s"
    "#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_good_config_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.instance, "default");
        assert_eq!(c.kernel.attach, AttachMode::Tc);
        assert_eq!(c.kernel.sweep_interval, Duration::from_secs(1));
        assert_eq!(c.upstream["app"].servers.len(), 2);
        assert_eq!(c.upstream["app"].connect_timeout, Duration::from_secs(2));
        assert_eq!(
            c.state_file(),
            PathBuf::from("/var/lib/proxy/default/state.json")
        );
    }

    #[test]
    fn syn_proxy_needs_the_xdp_program() {
        let with = GOOD.replace(
            "upstream = \"app\"\n",
            "upstream = \"app\"\n        syn_proxy = true\n",
        );
        let e = parse(&with).unwrap_err();
        assert!(
            e.contains("listener[0].syn_proxy") && e.contains("\"tc\""),
            "{e}"
        );
        let xdp = with.replace("attach = \"tc\"", "attach = \"xdp\"");
        assert!(parse(&xdp).unwrap().listener[0].syn_proxy);
        let none = with.replace("attach = \"tc\"", "attach = \"none\"");
        assert!(parse(&none).unwrap_err().contains("syn_proxy"));
        let odd = xdp.replace("[\"lo\"]", "[\"e;th\"]");
        assert!(parse(&odd).unwrap_err().contains("kernel.interfaces[0]"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&GOOD.replace("upstream = \"app\"", "upstream = \"nope\"")).unwrap_err();
        assert!(
            e.contains("listener[0].upstream") && e.contains("\"nope\""),
            "{e}"
        );

        let e = parse(&GOOD.replace("connect_timeout = \"2s\"", "connect_timeout = \"two\""))
            .unwrap_err();
        assert!(
            e.contains("connect_timeout") && e.contains("invalid duration"),
            "{e}"
        );

        let e = parse(&GOOD.replace("attach = \"tc\"", "attach = \"xdp-turbo\"")).unwrap_err();
        assert!(e.contains("attach") && e.contains("xdp-turbo"), "{e}");

        let e = parse(&GOOD.replace("[kernel]", "[kernel]\nbogus = 1")).unwrap_err();
        assert!(e.contains("bogus"), "{e}");

        let e = parse(&GOOD.replace("interfaces = [\"lo\"]", "interfaces = []")).unwrap_err();
        assert!(e.contains("kernel.interfaces"), "{e}");

        let e = parse(&format!("instance = \"a/b\"\n{GOOD}")).unwrap_err();
        assert!(e.contains("`instance`"), "{e}");

        let e = parse(&GOOD.replace("\"127.0.0.1:9000\", ", "\"127.0.0.1\", ")).unwrap_err();
        assert!(e.contains("servers"), "{e}");
    }

    #[test]
    fn durations_that_must_be_positive_are_checked() {
        let e = parse(&format!("[server]\nidle_timeout = \"0s\"\n{GOOD}")).unwrap_err();
        assert!(
            e.contains("server.idle_timeout") && e.contains("greater than 0"),
            "{e}"
        );
        let e = parse(&format!("[limits]\nbody_read_timeout = \"0s\"\n{GOOD}")).unwrap_err();
        assert!(e.contains("limits.body_read_timeout"), "{e}");
        let e = parse(&format!(
            "{GOOD}\n[upstream.app.passive]\nbase_ejection = \"0s\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("upstream.app.passive"), "{e}");
        let e = parse(&format!(
            "{GOOD}\n[upstream.app.passive]\nmax_ejection_percent = 150\n"
        ))
        .unwrap_err();
        assert!(e.contains("max_ejection_percent"), "{e}");
        let e = parse(&GOOD.replace(
            "upstream = \"app\"",
            "upstream = \"app\"\nescaped_slashes = \"maybe\"",
        ))
        .unwrap_err();
        assert!(e.contains("escaped_slashes") || e.contains("maybe"), "{e}");
    }

    #[test]
    fn server_timeouts_must_be_positive() {
        for key in [
            "header_read_timeout",
            "idle_timeout",
            "request_timeout",
            "tls_handshake_timeout",
        ] {
            let e = parse(&format!("{GOOD}\n[server]\n{key} = \"0s\"\n")).unwrap_err();
            assert!(e.contains(&format!("server.{key}")), "{e}");
        }
        // drain_timeout = 0 is meaningful: close at once on stop.
        parse(&format!("{GOOD}\n[server]\ndrain_timeout = \"0s\"\n")).unwrap();
    }

    #[test]
    fn header_counts_stay_within_a_header_map() {
        // 30 000 allowed headers let one request panic hyper's parser (HeaderMap holds 24 576).
        let e = parse(&format!("{GOOD}\n[limits]\nmax_headers = 30000\n")).unwrap_err();
        assert!(e.contains("limits.max_headers"), "{e}");
        parse(&format!("{GOOD}\n[limits]\nmax_headers = 10000\n")).unwrap();
        let e = parse(&format!(
            "{GOOD}\n[limits]\nh2_max_header_list_bytes = 4000000000\n"
        ))
        .unwrap_err();
        assert!(e.contains("limits.h2_max_header_list_bytes"), "{e}");
        let rules = (0..1001).fold(String::new(), |mut rules, i| {
            let _ = writeln!(rules, "\"x-{i}\" = \"v\"");
            rules
        });
        let e = parse(&format!(
            "{GOOD}\n[[route]]\nupstream = \"app\"\n[route.headers.request.add]\n{rules}"
        ))
        .unwrap_err();
        assert!(e.contains("route[0].headers.request"), "{e}");
    }

    #[test]
    fn durations_are_at_most_100_years() {
        let e = parse(&format!(
            "{GOOD}\n[limits]\nbody_read_timeout = \"300000000000y\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("body_read_timeout") && e.contains("longer than 100 years"),
            "{e}"
        );
        let c = parse(&format!(
            "{GOOD}\n[limits]\nbody_read_timeout = \"36500d\"\n"
        ))
        .unwrap();
        assert!(c.limits.body_read_timeout <= duration::MAX);
    }

    #[test]
    fn the_examples_are_valid() {
        for file in ["demo.toml", "full.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn cluster_settings_are_checked() {
        let c = parse(&format!(
            "{GOOD}\n[cluster]\nendpoints = [\"http://127.0.0.1:2379\"]\nnode = \"n-1.a\"\n"
        ))
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.prefix, "/proxy");
        assert_eq!(cluster.node_name().unwrap(), "n-1.a");
        for (body, key, says) in [
            ("endpoints = []", "cluster.endpoints", "at least one"),
            (
                "endpoints = [\"127.0.0.1:2379\"]",
                "cluster.endpoints",
                "http://",
            ),
            ("endpoints = [\"http://etcd\"]", "cluster.endpoints", "port"),
            (
                "endpoints = [\"https://e:2379\"]",
                "cluster.endpoints",
                "needs `ca`",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nca = \"/ca.pem\"",
                "cluster.endpoints",
                "use https://",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nprefix = \"proxy\"",
                "cluster.prefix",
                "start with '/'",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nprefix = \"/p/\"",
                "cluster.prefix",
                "not end",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nnode = \"a b\"",
                "cluster.node",
                "letters",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nuser = \"u\"",
                "cluster.user",
                "password_file",
            ),
            (
                "endpoints = [\"https://e:2379\"]\nca = \"/ca\"\ncert = \"/c\"",
                "cluster.cert",
                "cluster.key",
            ),
            (
                "endpoints = [\"https://e:2379\"]\ncert = \"/c\"\nkey = \"/k\"",
                "cluster.cert",
                "cluster.ca",
            ),
            (
                "endpoints = [\"http://e:2379\"]\nuser = \"u\"\npassword_file = \"/p\"",
                "cluster.user",
                "TLS",
            ),
        ] {
            let e = parse(&format!("{GOOD}\n[cluster]\n{body}\n")).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn none_mode_needs_no_interfaces() {
        let c = parse(&GOOD.replace(
            "attach = \"tc\"\n        interfaces = [\"lo\"]",
            "attach = \"none\"",
        ))
        .unwrap();
        assert_eq!(c.kernel.attach, AttachMode::None);
    }
}
