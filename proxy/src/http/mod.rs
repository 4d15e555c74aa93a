//! The HTTP request path: accepting connections (`server`), the phase pipeline over one
//! request context (`phases`, `ctx`, `error`), sending upstream (`forward`), the cache path
//! (`cached`), and what phases share: normalisation, routing, access rules, header rules,
//! tunnels and the HTTP/2 stream watchdog.
pub mod cached;
pub mod ctx;
pub mod error;
pub mod forward;
pub mod h1server;
pub mod headers;
pub mod normalize;
pub mod phases;
pub mod server;
pub mod stall;
pub mod tunnel;
