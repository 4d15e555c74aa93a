//! The response cache against a real origin (demo-origin's `/cache/<key>` endpoint, which
//! counts requests per key and shapes its response from the query) and real clients, in a
//! network namespace the test makes. Whether a response came from the cache is checked on
//! the origin's own counter, never only on the proxy's word.
use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use proxy_tests::{
    harness::World,
    http::{Client, Reply, get, request},
    netns::run_in,
    process::ChildGuard,
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const PLAIN: &str = "127.0.0.1:8080";
const HOST: &str = "c.test";

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

struct Cached {
    w: World,
    config: PathBuf,
    proxy: ChildGuard,
}

/// A proxy with `[cache] max_bytes` and one cached route to the origin, with `route_cache`
/// lines in its `[route.cache]`.
impl Cached {
    fn start(subnet: u8, max_bytes: u64, route_cache: &str) -> Self {
        let w = World::new(subnet, ORIGIN_BIN);
        let body = format!(
            r#"workers = 1
[kernel]
attach = "none"
[cache]
max_bytes = {max_bytes}
[[listener]]
address = "{PLAIN}"
[[route]]
path = "/cache/"
upstream = "origin"
[route.cache]
{route_cache}
[[route]]
path = "/"
upstream = "origin"
[upstream.origin]
servers = ["127.0.0.1:9000"]
"#
        );
        let config = w.write_config("cache.toml", &body);
        let proxy = w.start_proxy(&config, &["--attach", "none"], &[], addr(PLAIN));
        Self { w, config, proxy }
    }

    fn ns(&self) -> &str {
        &self.w.topo.srv_ns
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(
            self.ns(),
            &Client::default(),
            addr(PLAIN),
            method,
            HOST,
            path,
            headers,
            "",
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.proxy.log()))
    }

    fn get(&self, path: &str) -> Reply {
        self.req("GET", path, &[])
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.req("GET", path, headers)
    }

    /// Requests that reached the origin for `/cache/<key>` (the origin's own count).
    fn count(&self, key: &str) -> u64 {
        self.origin(&format!("/_count/{key}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn origin(&self, path: &str) -> String {
        get(
            self.ns(),
            &Client::default(),
            addr("127.0.0.1:9000"),
            "o",
            path,
            &[],
        )
        .unwrap()
        .body
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.w.cli_ok(&["cache", "stats", "--json"])).unwrap()
    }
}

fn status(r: &Reply) -> &str {
    r.header("cache-status").unwrap_or("")
}

/// The response came from the cache (Cache-Status says hit) and the body is the one the
/// origin sent as its `n`th answer for the key.
#[track_caller]
fn assert_hit(r: &Reply, n: u64) {
    assert_eq!(r.status, 200, "{r:?}");
    assert!(status(r).contains("; hit"), "want a hit: {r:?}");
    assert!(
        r.body.contains(&format!(" n={n}\n")),
        "want answer {n}: {r:?}"
    );
}

#[track_caller]
fn assert_miss(r: &Reply, n: u64) {
    assert!(status(r).contains("fwd="), "want a forwarded answer: {r:?}");
    assert!(
        r.body.contains(&format!(" n={n}\n")),
        "want answer {n}: {r:?}"
    );
}

fn age(r: &Reply) -> u64 {
    r.header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age: {r:?}"))
}

#[test]
fn freshness_from_each_directive_and_age() {
    let t = Cached::start(81, 1 << 20, "heuristic_max = \"2s\"");
    // max-age: fresh for its lifetime, then fetched again.
    let max_age = "/cache/maxage?cc=max-age=2";
    assert_miss(&t.get(max_age), 1);
    let hit = t.get(max_age);
    assert_hit(&hit, 1);
    assert!(status(&hit).contains("ttl="), "{hit:?}");
    std::thread::sleep(Duration::from_millis(2200));
    assert_miss(&t.get(max_age), 2);
    assert_eq!(t.count("maxage"), 2);

    // s-maxage wins over max-age (a shared cache).
    let s_maxage = "/cache/smaxage?cc=max-age=0,s-maxage=60";
    assert_miss(&t.get(s_maxage), 1);
    assert_hit(&t.get(s_maxage), 1);

    // Expires (with Date); an invalid Expires is already expired.
    let expires = "/cache/expires?expires=60";
    assert_miss(&t.get(expires), 1);
    assert_hit(&t.get(expires), 1);
    let bad = "/cache/badexpires?expires=bad";
    t.get(bad);
    assert_miss(&t.get(bad), 2);

    // Heuristic: Last-Modified long ago, 10 % capped at heuristic_max = 2 s.
    let heuristic = "/cache/heuristic?lm=1700000000";
    assert_miss(&t.get(heuristic), 1);
    assert_hit(&t.get(heuristic), 1);
    std::thread::sleep(Duration::from_millis(2200));
    let again = t.get(heuristic);
    assert!(
        !status(&again).contains("; hit"),
        "the heuristic lifetime is capped at 2 s: {again:?}"
    );

    // No lifetime and no validators: not stored.
    let none = "/cache/nolifetime";
    t.get(none);
    assert_miss(&t.get(none), 2);
    assert!(status(&t.get(none)).contains("detail=no-lifetime"));

    // Age: the origin says the response is already 100 s old; it has 3 s left.
    let aged = "/cache/aged?cc=max-age=103&age=100";
    let first = t.get(aged);
    assert!(
        age(&first) >= 100,
        "the origin's Age passes on a miss: {first:?}"
    );
    let hit = t.get(aged);
    assert_hit(&hit, 1);
    assert!((100..=102).contains(&age(&hit)), "{hit:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let later = t.get(aged);
    assert_hit(&later, 1);
    assert!(age(&later) > age(&hit), "Age grows while stored: {later:?}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_miss(&t.get(aged), 2);
}

#[test]
fn request_directives() {
    let t = Cached::start(82, 1 << 20, "");
    let p = "/cache/req?cc=max-age=60";
    assert_miss(&t.get(p), 1);
    // only-if-cached: served when stored, 504 when not.
    assert_hit(&t.get_with(p, &[("cache-control", "only-if-cached")]), 1);
    let absent = t.get_with(
        "/cache/never?cc=max-age=60",
        &[("cache-control", "only-if-cached")],
    );
    assert_eq!(absent.status, 504, "{absent:?}");
    assert_eq!(t.count("never"), 0);
    // no-cache and max-age=0 go to the origin.
    assert_miss(&t.get_with(p, &[("cache-control", "no-cache")]), 2);
    assert_miss(&t.get_with(p, &[("pragma", "no-cache")]), 3);
    std::thread::sleep(Duration::from_millis(1100));
    assert_miss(&t.get_with(p, &[("cache-control", "max-age=0")]), 4);
    // min-fresh beyond what is left.
    assert_miss(&t.get_with(p, &[("cache-control", "min-fresh=120")]), 5);
    assert_hit(&t.get_with(p, &[("cache-control", "min-fresh=10")]), 5);
    // max-stale accepts a stale response, unless it says must-revalidate.
    let q = "/cache/stale?cc=max-age=1";
    t.get(q);
    std::thread::sleep(Duration::from_millis(2100));
    let stale = t.get_with(q, &[("cache-control", "max-stale=60")]);
    assert_hit(&stale, 1);
    assert!(status(&stale).contains("detail=max-stale"), "{stale:?}");
    let m = "/cache/mr?cc=max-age=1,must-revalidate";
    t.get(m);
    std::thread::sleep(Duration::from_millis(2100));
    assert_miss(&t.get_with(m, &[("cache-control", "max-stale")]), 2);
    // no-store on the request: answered, not stored.
    let ns = "/cache/reqnostore?cc=max-age=60";
    t.get_with(ns, &[("cache-control", "no-store")]);
    assert_miss(&t.get(ns), 2);
}

#[test]
fn vary_match_mismatch_and_star() {
    let t = Cached::start(83, 1 << 20, "");
    let p = "/cache/vary?cc=max-age=60&vary=Accept-Language";
    assert_miss(&t.get_with(p, &[("accept-language", "de")]), 1);
    assert_hit(&t.get_with(p, &[("accept-language", "DE")]), 1);
    let fr = t.get_with(p, &[("accept-language", "fr")]);
    assert_miss(&fr, 2);
    assert!(status(&fr).contains("fwd=vary-miss"), "{fr:?}");
    assert_hit(&t.get_with(p, &[("accept-language", "fr")]), 2);
    assert_hit(&t.get_with(p, &[("accept-language", "de")]), 1);
    // No header is a value of its own.
    assert_miss(&t.get(p), 3);
    assert_hit(&t.get(p), 3);
    // Vary: * never matches.
    let star = "/cache/star?cc=max-age=60&vary=*";
    t.get(star);
    let again = t.get(star);
    assert_miss(&again, 2);
    assert!(status(&again).contains("detail=vary-star"), "{again:?}");
}

#[test]
fn revalidation_and_conditionals() {
    let t = Cached::start(84, 1 << 20, "");
    // Stale with an ETag: revalidated with If-None-Match; the 304 refreshes the headers.
    let p = "/cache/etag?cc=max-age=1&etag=v1";
    let first = t.get(p);
    assert_miss(&first, 1);
    assert_eq!(first.header("x-version"), Some("1"));
    std::thread::sleep(Duration::from_millis(2100));
    let revalidated = t.get(p);
    assert_eq!(revalidated.status, 200, "{revalidated:?}");
    assert!(
        status(&revalidated).contains("fwd-status=304"),
        "{revalidated:?}"
    );
    assert!(
        revalidated.body.contains(" n=1\n"),
        "the stored body: {revalidated:?}"
    );
    assert_eq!(
        revalidated.header("x-version"),
        Some("2"),
        "headers from the 304 replace the stored ones"
    );
    assert!(
        t.origin("/_last/etag").contains("if-none-match: \"v1\""),
        "{}",
        t.origin("/_last/etag")
    );
    assert_eq!(t.count("etag"), 2);
    // ...and fresh again: a hit with the updated header.
    let hit = t.get(p);
    assert_hit(&hit, 1);
    assert_eq!(hit.header("x-version"), Some("2"));
    // Last-Modified: If-Modified-Since.
    let lm = "/cache/lm?cc=max-age=1&lm=1700000000";
    t.get(lm);
    std::thread::sleep(Duration::from_millis(2100));
    assert!(status(&t.get(lm)).contains("fwd-status=304"));
    assert!(t.origin("/_last/lm").contains("if-modified-since: "));

    // Client conditionals are answered from the cache.
    let c = "/cache/cond?cc=max-age=60&etag=abc&lm=1700000000";
    t.get(c);
    let nm = t.get_with(c, &[("if-none-match", "\"zzz\", W/\"abc\"")]);
    assert_eq!(nm.status, 304, "{nm:?}");
    assert_eq!(nm.header("etag"), Some("\"abc\""));
    assert!(nm.body.is_empty());
    let ims = t.get_with(c, &[("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")]);
    assert_eq!(ims.status, 304, "{ims:?}");
    let changed = t.get_with(c, &[("if-none-match", "\"other\"")]);
    assert_hit(&changed, 1);
    assert_eq!(t.count("cond"), 1, "none of these reached the origin");
}

#[test]
fn stale_while_revalidate_refreshes_once_and_stale_if_error() {
    let t = Cached::start(85, 1 << 20, "");
    let p = "/cache/swr?cc=max-age=1,stale-while-revalidate=30&delay=300";
    t.get(p);
    std::thread::sleep(Duration::from_millis(2100));
    // Ten requests at once while stale: all answered at once from the cache, one refresh.
    let started = Instant::now();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10).map(|_| s.spawn(|| t.get(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_hit(r, 1);
        assert!(status(r).contains("stale-while-revalidate"), "{r:?}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stale answers do not wait for the origin"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(t.count("swr"), 2, "exactly one background refresh");
    assert_hit(&t.get(p), 2);

    // stale-if-error: the origin answers 503, the stale response is served instead.
    let e = "/cache/sie?cc=max-age=1,stale-if-error=60";
    t.get(e);
    std::thread::sleep(Duration::from_millis(2100));
    t.origin("/_fail/on");
    let stale = t.get(e);
    assert_eq!(stale.status, 200, "{stale:?}");
    assert!(stale.body.contains(" n=1\n"));
    assert!(
        status(&stale).contains("detail=stale-if-error"),
        "{stale:?}"
    );
    // Without the directive the error goes through.
    let plain = "/cache/nosie?cc=max-age=1";
    t.origin("/_fail/off");
    t.get(plain);
    std::thread::sleep(Duration::from_millis(2100));
    t.origin("/_fail/on");
    assert_eq!(t.get(plain).status, 503);
    t.origin("/_fail/off");
}

#[test]
fn stale_if_error_when_the_origin_is_down() {
    let w = World::new(86, ORIGIN_BIN);
    let down = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9002", "origin-2", &[]);
    let config = w.write_config(
        "c.toml",
        &format!(
            r#"workers = 1
[kernel]
attach = "none"
[[listener]]
address = "{PLAIN}"
[[route]]
upstream = "o"
[route.cache]
stale_if_error = "1m"
[upstream.o]
servers = ["127.0.0.1:9002"]
"#
        ),
    );
    let proxy = w.start_proxy(&config, &["--attach", "none"], &[], addr(PLAIN));
    let get = |p: &str| {
        request(
            &w.topo.srv_ns,
            &Client::default(),
            addr(PLAIN),
            "GET",
            HOST,
            p,
            &[],
            "",
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()))
    };
    let p = "/cache/down?cc=max-age=1";
    assert_miss(&get(p), 1);
    std::thread::sleep(Duration::from_millis(2100));
    drop(down);
    let stale = get(p);
    assert_eq!(
        stale.status, 200,
        "the route default stale_if_error applies: {stale:?}"
    );
    assert!(stale.body.contains(" n=1\n"));
    assert!(status(&stale).contains("fwd-status=502"), "{stale:?}");
}

#[test]
fn coalescing_and_uncacheable_responses() {
    let t = Cached::start(87, 1 << 20, "lock_timeout = \"10s\"");
    // 50 concurrent requests for one cold key: one origin request.
    let p = "/cache/cold?cc=max-age=60&delay=500";
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50).map(|_| s.spawn(|| t.get(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(t.count("cold"), 1, "exactly one origin request");
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!(r.body.contains(" n=1\n"), "{r:?}");
    }
    assert!(
        replies
            .iter()
            .filter(|r| status(r).contains("collapsed"))
            .count()
            >= 40,
        "most waited for the first one"
    );
    // An uncacheable answer releases the waiters at once: they go to the origin in parallel.
    let q = "/cache/private?cc=private&delay=1000";
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| t.get(q));
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waiters were released, not serialised: {:?}",
        started.elapsed()
    );
    assert_eq!(t.count("private"), 10);

    // Never served to another client: private, no-store, Set-Cookie, Authorization.
    for (key, extra, header) in [
        ("priv2", "cc=private,max-age=60", None),
        ("nostore", "cc=no-store,max-age=60", None),
        ("cookie", "cc=max-age=60&cookie=1", None),
        (
            "auth",
            "cc=max-age=60",
            Some(("authorization", "Basic dTpw")),
        ),
    ] {
        let path = format!("/cache/{key}?{extra}");
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        let first = t.get_with(&path, &headers);
        assert_miss(&first, 1);
        let second = t.get(&path);
        assert_miss(&second, 2);
        if key == "cookie" {
            assert!(second.header("set-cookie").unwrap().contains("secret-2"));
        }
    }
    // With public, an authorised response may be shared.
    let shared = "/cache/authpub?cc=public,max-age=60";
    t.get_with(shared, &[("authorization", "Basic dTpw")]);
    assert_hit(&t.get(shared), 1);
}

#[test]
fn invalidation_purge_head_and_large_objects() {
    let t = Cached::start(88, 1 << 20, "max_object_bytes = 100000");
    // HEAD from a stored GET.
    let page = "/cache/head?cc=max-age=60&size=5000";
    let got = t.get(page);
    let head = t.req("HEAD", page, &[]);
    assert_eq!(head.status, 200);
    assert!(status(&head).contains("; hit"), "{head:?}");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("5000"));
    assert_eq!(got.body.len(), 5000);
    assert_eq!(t.count("head"), 1);

    // Unsafe methods invalidate the URI and its same-host Location.
    let inv = "/cache/inv?cc=max-age=60";
    let other = "/cache/other?cc=max-age=60";
    t.get(inv);
    t.get(other);
    assert_hit(&t.get(inv), 1);
    let post = t.req("POST", inv, &[]);
    assert_eq!(post.status, 200);
    assert!(status(&post).contains("fwd=method"));
    assert_miss(&t.get(inv), 3);
    let loc = format!(
        "/cache/inv?cc=max-age=60&loc={}",
        "http://c.test/cache/other%3Fcc=max-age=60"
    );
    t.req("PUT", &loc, &[]);
    assert_miss(&t.get(other), 2);
    // A failed unsafe request invalidates nothing.
    t.get("/cache/keep?cc=max-age=60");
    t.req("DELETE", "/cache/keep?cc=max-age=60&status=500", &[]);
    assert_hit(&t.get("/cache/keep?cc=max-age=60"), 1);

    // Purge: one URL, then a prefix.
    t.get("/cache/purge1?cc=max-age=60");
    t.get("/cache/purge2?cc=max-age=60");
    let out =
        t.w.cli_ok(&["cache", "purge", "http://c.test/cache/purge1?cc=max-age=60"]);
    assert!(out.contains("purged 1"), "{out}");
    assert_miss(&t.get("/cache/purge1?cc=max-age=60"), 2);
    assert_hit(&t.get("/cache/purge2?cc=max-age=60"), 1);
    let out =
        t.w.cli_ok(&["cache", "purge", "http://C.test/cache/purge*"]);
    assert!(out.contains("purged 2"), "{out}");
    assert_miss(&t.get("/cache/purge2?cc=max-age=60"), 2);
    let bad = t.w.cli(&["cache", "purge", "/relative"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("absolute"), "{}", bad.stderr);

    // Large objects stream through and are not stored, with or without Content-Length.
    let big = "/cache/big?cc=max-age=60&size=200000";
    let reply = t.get(big);
    assert_eq!(reply.body.len(), 200_000);
    assert!(status(&reply).contains("detail=too-large"), "{reply:?}");
    assert_miss(&t.get(big), 2);
    let chunked = "/cache/bigchunked?cc=max-age=60&size=200000&chunks=3";
    assert_eq!(t.get(chunked).body.len(), 200_000);
    assert_miss(&t.get(chunked), 2);
    // A small streamed body reaches the client before it is complete, and is stored.
    let small = "/cache/stream?cc=max-age=60&size=3000&chunks=3";
    let (first_byte, total) = run_in(t.ns(), move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr(PLAIN)).unwrap();
        conn.write_all(
            format!("GET {small} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut first = None;
        let mut received = 0;
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    received += k;
                    first.get_or_insert(start.elapsed());
                }
            }
        }
        assert!(received > 3000);
        (first.unwrap(), start.elapsed())
    });
    assert!(
        first_byte + Duration::from_millis(150) < total,
        "the first bytes came before the body was complete: {first_byte:?} vs {total:?}"
    );
    assert_hit(&t.get(small), 1);
    let stats = t.stats();
    assert_eq!(stats["hits"].as_u64().unwrap(), 5, "{stats}");
    assert!(stats["purged"].as_u64().unwrap() >= 3, "{stats}");
}

#[test]
fn memory_bound_under_distinct_objects() {
    let max: u64 = 1 << 20;
    let t = Cached::start(89, max, "max_object_bytes = 65536");
    // 400 distinct 10 KB objects: four times the bound.
    for i in 0..400 {
        let r = t.get(&format!("/cache/m{i}?cc=max-age=600&size=10000"));
        assert_eq!(r.status, 200);
    }
    let stats = t.stats();
    let bytes = stats["bytes"].as_u64().unwrap();
    assert!(
        bytes <= max,
        "cache holds {bytes} bytes, bound {max}: {stats}"
    );
    assert!(bytes > max / 2, "and is used: {stats}");
    assert!(stats["evictions"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["stores"].as_u64().unwrap() >= 400, "{stats}");
    // The proxy's resident memory stays near the bound (binary, runtime and the cache).
    let pid = t.proxy.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kb < 64 * 1024, "RSS {rss_kb} kB for a 1 MiB cache");
    // The table form of the same figures.
    let m = t.w.cli_ok(&["cache", "stats"]);
    assert!(m.contains("hit ratio"), "{m}");
}

#[test]
fn the_cache_survives_reloads_and_its_size_needs_a_restart() {
    let t = Cached::start(90, 1 << 20, "");
    let p = "/cache/kept?cc=max-age=600";
    assert_miss(&t.get(p), 1);
    // A reload that changes a route setting: the stored response is still there.
    let text = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(
        &t.config,
        text.replace("[route.cache]\n", "[route.cache]\nlock_timeout = \"7s\"\n"),
    )
    .unwrap();
    let out = t.w.cli(&["reload"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_hit(&t.get(p), 1);
    // Its memory bound cannot change without a restart; the running config stays.
    std::fs::write(
        &t.config,
        text.replace("max_bytes = 1048576", "max_bytes = 2097152"),
    )
    .unwrap();
    let out = t.w.cli(&["reload"]);
    assert!(
        out.code == 2 && out.stderr.contains("[cache] changed"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_hit(&t.get(p), 1);
    assert_eq!(t.count("kept"), 1);
}

#[test]
fn key_headers_split_entries_and_invalidation_follows_them() {
    let t = Cached::start(91, 1 << 20, "key_headers = [\"x-tenant\"]");
    let p = "/cache/tenant?cc=max-age=600";
    assert_miss(&t.get_with(p, &[("x-tenant", "a")]), 1);
    assert_miss(&t.get_with(p, &[("x-tenant", "b")]), 2);
    assert_hit(&t.get_with(p, &[("x-tenant", "A")]), 1);
    assert_hit(&t.get_with(p, &[("x-tenant", "b")]), 2);
    // A write by tenant a whose answer points (Location) at the page invalidates tenant a's
    // copy, not tenant b's.
    let put = t.req(
        "PUT",
        "/cache/write?loc=/cache/tenant%3Fcc=max-age=600",
        &[("x-tenant", "a")],
    );
    assert_eq!(put.status, 200, "{put:?}");
    assert_miss(&t.get_with(p, &[("x-tenant", "a")]), 3);
    assert_hit(&t.get_with(p, &[("x-tenant", "b")]), 2);
}
