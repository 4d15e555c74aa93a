//! The HTTP request path: accept (`server`), forward to the upstream (`forward`), and the
//! header rules every proxied message goes through (`headers`).
pub mod access;
pub mod cached;
pub mod headers;
pub mod normalize;
pub mod proxy;
pub mod route;
pub mod server;
pub mod stall;
