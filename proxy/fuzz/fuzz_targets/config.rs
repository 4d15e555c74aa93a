//! Config text (TOML) through everything `proxy check-config` and a (re)load do with it:
//! `Config::parse` (serde + validation), then `runtime::build` (routes, access rules, header
//! templates, cache policies, ban rules, balancers) and the reload compatibility check.
//!
//! Nothing is read from disk: certificate and CA files are left out (listener TLS is not
//! built and upstream TLS is dropped before the build), since reading arbitrary paths named by
//! the fuzzer (`/dev/zero`) is not a parser's job.
#![no_main]

use std::{path::Path, sync::Arc};

use libfuzzer_sys::fuzz_target;
use proxy::{config::Config, runtime, upstream::HealthBoard};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = (config.workers(), config.state_file());
    if let Err(e) = runtime::listeners_compatible(&config, &config) {
        panic!("a config is not reload-compatible with itself: {e}");
    }
    for upstream in config.upstream.values_mut() {
        upstream.tls = None;
    }
    let board = HealthBoard::default();
    if let Err(e) = runtime::build(1, Arc::new(config), &board) {
        let _ = e.to_string();
    }
});
