//! The HTTP request path: accept (`server`), forward to the upstream (`forward`), and the
//! header rules every proxied message goes through (`headers`).
pub mod forward;
pub mod headers;
pub mod server;
