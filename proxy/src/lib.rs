//! proxy: an eBPF-accelerated layer-4/7 reverse proxy.
//!
//! Modules by concern: `config`, `kernel` (loading, attaching, maps), `http` (server,
//! forwarding), `h1` (a sans-IO HTTP/1.1 codec), `upstream` (pools), `cache` (the RFC 9111 response cache), `defense` (blocklist, allowlist, state), `daemon` (`proxy
//! run`), `cli` (the management commands).
pub mod access;
pub mod access_log;
pub mod admin;
pub mod authority;
pub mod cache;
pub mod cidr;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod defense;
pub mod h1;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod privileges;
pub mod proxy_protocol;
pub mod routing;
pub mod rules;
pub mod runtime;
pub mod safe_fs;
pub mod tls;
pub mod upstream;
pub mod workers;
