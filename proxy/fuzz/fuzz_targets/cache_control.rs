//! The cache's header arithmetic (`proxy::cache::control`: Cache-Control of requests and
//! responses, Expires, Date, Age, Last-Modified, ETag / If-None-Match, If-Modified-Since,
//! Vary) and what the request path does with it (`http::cached::decide` and `refreshed`,
//! freshness and staleness of the stored object, cache keys, store, lookup and purge), HTTP
//! dates in their three forms, ranges of a stored response, targeted fields and purge tags.
//!
//! Input: request header lines, a blank line, the response status and header lines, a blank
//! line, the header lines of a later 304; `name: value` per line (see seeds/cache_control/).
//! Special request headers: `x-fuzz-uri` (the request target), `x-fuzz-purge` (a purge
//! pattern).
#![no_main]

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use hyper::{
    HeaderMap, StatusCode, Uri,
    header::{HeaderName, HeaderValue},
};
use libfuzzer_sys::fuzz_target;
use proxy::{
    cache::{
        Cache, Policy,
        control::{self, Directives},
        range,
    },
    config::RouteCache,
    http::cached::{decide, refreshed},
};

const POLICIES: [&str; 2] = [
    "",
    r#"
default_ttl = "1m"
heuristic_fraction = 0.5
stale_while_revalidate = "30s"
stale_if_error = "1h"
keep_stale = "1h"
store_set_cookie = true
sort_query = true
ignore_query_params = ["utm_source", "fbclid"]
key_headers = ["accept-encoding", "x-tenant"]
"#,
];

struct World {
    policies: Vec<Arc<Policy>>,
    cache: Arc<Cache>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| World {
        policies: POLICIES
            .iter()
            .map(|text| {
                let c: RouteCache = toml::from_str(text).expect("valid [route.cache]");
                Policy::compile(&c, 1 << 20)
                    .expect("a valid [route.cache]")
                    .expect("enabled")
            })
            .collect(),
        cache: Cache::new(1 << 20),
    })
}

/// `name: value` lines into a header map (lines that are not a valid field are skipped).
fn headers(block: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

fn split_block(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (request_block, rest) = split_block(data);
    let (response_block, fresh_block) = split_block(rest);
    let (status, response_block) = {
        let (first, after) = match response_block.iter().position(|&b| b == b'\n') {
            Some(i) => (&response_block[..i], &response_block[i + 1..]),
            None => (response_block, &[][..]),
        };
        match std::str::from_utf8(first.trim_ascii())
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
        {
            Some(s) => (s, after),
            None => (StatusCode::OK, response_block),
        }
    };
    let request = headers(request_block);
    let response = headers(response_block);
    let fresh = headers(fresh_block);

    let request_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let response_time = request_time + Duration::from_secs(1);
    let later = [0, 30, 3600, 400 * 86_400].map(|s| response_time + Duration::from_secs(s));

    let req_cc = Directives::parse_request(&request);
    let cc = Directives::parse(&response);
    // Dates in every field, and ranges of the stored response (If-Range against it too).
    for value in request.values().chain(response.values()) {
        if let Ok(text) = value.to_str() {
            let _ = control::parse_http_date(text);
        }
        let _ = control::weak_eq(
            value.to_str().unwrap_or(""),
            response
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
    }
    if let Some(range) = request.get("range") {
        for len in [0, 1, 1024] {
            let _ = range::evaluate(range, request.get("if-range"), &response, len);
        }
    }
    let _ = (req_cc.forbids_stale(), cc.forbids_stale());
    let _ = control::vary_names(&response);
    let _ = control::not_modified(&request, &response);
    let _ = control::corrected_initial_age(&response, request_time, response_time);
    for name in request.keys() {
        let _ = control::normalized_value(&request, name);
        let _ = control::updatable_by_304(name);
    }

    let uri = request
        .get("x-fuzz-uri")
        .and_then(|v| Uri::try_from(v.as_bytes()).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let w = world();
    for policy in &w.policies {
        let targeted = policy.response_directives(&response);
        let _ = policy.tags(&response);
        let _ = control::freshness_lifetime(
            status,
            &response,
            &targeted,
            &policy.rules,
            response_time,
        );
        let key = policy.key("http", "example.com", &uri, &request);
        let _ = policy.key_header_values(&request);
        let decided = decide(
            policy,
            &request,
            &req_cc,
            status,
            &response,
            &cc,
            request_time,
            response_time,
        );
        let object = match decided {
            Ok(object) => object,
            Err(why) => {
                let _ = why.detail();
                continue;
            }
        };
        for now in later {
            let age = object.age(now);
            let _ = control::age_value(age);
            let _ = (
                object.ttl(now),
                object.usable(&req_cc, now),
                object.usable_on_error(now),
            );
        }
        let _ = (
            object.has_validators(),
            control::not_modified(&request, &object.headers),
        );
        let again = refreshed(policy, &object, &fresh, later[1], later[2]);
        for now in later {
            let _ = (
                again.ttl(now),
                again.usable(&req_cc, now),
                again.usable_on_error(now),
            );
        }
        w.cache.insert(&key, &request, again);
        let _ = w.cache.lookup(&key, &request);
    }
    if let Some(pattern) = request.get("x-fuzz-purge").and_then(|v| v.to_str().ok()) {
        let _ = w.cache.purge(pattern);
        let _ = w.cache.purge_tags(&[pattern.to_owned()], pattern.len() % 2 == 0);
    }
});
