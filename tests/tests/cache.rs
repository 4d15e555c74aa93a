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
        Self::start_with(
            subnet,
            max_bytes,
            route_cache,
            "servers = [\"127.0.0.1:9000\"]",
        )
    }

    /// [`Cached::start`] with `upstream` as the `[upstream.origin]` table.
    fn start_with(subnet: u8, max_bytes: u64, route_cache: &str, upstream: &str) -> Self {
        Self::start_full(
            subnet,
            &format!("max_bytes = {max_bytes}"),
            route_cache,
            upstream,
        )
    }

    /// [`Cached::start`] with a disk tier in the world's directory: `disk` are the keys of
    /// `[cache] disk` after its path.
    fn start_disk(subnet: u8, max_bytes: u64, disk: &str, route_cache: &str) -> Self {
        Self::start_full(
            subnet,
            &format!("max_bytes = {max_bytes}\ndisk = {{ path = \"{{dir}}/disk\", {disk} }}"),
            route_cache,
            "servers = [\"127.0.0.1:9000\"]",
        )
    }

    fn disk_dir(&self) -> PathBuf {
        self.w.dir.path().join("disk")
    }

    /// Stops the proxy (SIGINT, or SIGKILL when `crash`) and starts it again on the same
    /// config.
    fn restart(&mut self, crash: bool) {
        if crash {
            self.proxy.kill9();
        } else {
            assert_eq!(
                self.proxy.interrupt(Duration::from_secs(20)),
                Some(0),
                "{}",
                self.proxy.log()
            );
        }
        self.proxy = self
            .w
            .start_proxy(&self.config, &["--attach", "none"], &[], addr(PLAIN));
    }

    /// Waits until the disk tier has written `n` files since start.
    fn wait_disk_writes(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.stats();
            if s["disk"]["writes"].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(Instant::now() < deadline, "disk writes stay below {n}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The object files under the disk tier.
    fn disk_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for d in std::fs::read_dir(self.disk_dir().join("objects")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        files
    }

    /// A proxy whose `[cache]` table holds `cache`.
    fn start_full(subnet: u8, cache: &str, route_cache: &str, upstream: &str) -> Self {
        let w = World::new(subnet, ORIGIN_BIN);
        let cache = cache.replace("{dir}", &w.dir.path().display().to_string());
        let body = format!(
            r#"workers = 1
[kernel]
attach = "none"
[cache]
{cache}
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
{upstream}
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

/// `Expires` in RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`), `secs` from now.
fn rfc850_in(secs: u64) -> String {
    let imf = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(secs));
    // "Sun, 06 Nov 1994 08:49:37 GMT" -> "Sunday, 06-Nov-94 08:49:37 GMT"
    let p: Vec<&str> = imf.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    let day = match p[0] {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    format!("{day}, {}-{}-{} {} GMT", p[1], p[2], &p[3][2..], p[4])
}

/// `Expires` in asctime form (`Sun Nov  6 08:49:37 1994`), `secs` from now.
fn asctime_in(secs: u64) -> String {
    let imf = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(secs));
    let p: Vec<&str> = imf.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    let day: u32 = p[1].parse().unwrap();
    format!("{} {} {day:>2} {} {}", p[0], p[2], p[4], p[3])
}

fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace(' ', "%20")
        .replace(',', "%2C")
        .replace('&', "%26")
        .replace('"', "%22")
        .replace('=', "%3D")
}

/// RFC 9111's storage rules as a CDN operator tries them: any final status with explicit
/// freshness, `must-understand`, request `no-store` (not answered from the cache, and the
/// stored response left alone), dates in all three formats, qualified `private`.
#[test]
fn storage_rules_statuses_no_store_and_dates() {
    let t = Cached::start(92, 1 << 20, "");
    for code in [400, 503, 599] {
        let p = format!("/cache/s{code}?status={code}&cc=max-age=60");
        let first = t.get(&p);
        assert_eq!(first.status, code, "{first:?}");
        assert!(status(&first).contains("stored"), "{first:?}");
        let again = t.get(&p);
        assert_eq!(again.status, code);
        assert!(status(&again).contains("; hit"), "{again:?}");
        assert_eq!(t.count(&format!("s{code}")), 1, "{code} stored");
    }
    // Without explicit freshness, a status that is not heuristically cacheable is not
    // stored, validators or not.
    let p = "/cache/s400v?status=400&etag=x";
    t.get(p);
    t.get(p);
    assert_eq!(t.count("s400v"), 2);
    // must-understand overrides no-store for a status the cache knows.
    let mu = "/cache/mu?cc=must-understand,no-store,max-age=60";
    t.get(mu);
    assert_hit(&t.get(mu), 1);

    // Request no-store: forwarded, not stored, and the stored response stays.
    let p = "/cache/rns?cc=max-age=60";
    assert_miss(&t.get(p), 1);
    let bypass = t.get_with(p, &[("cache-control", "no-store")]);
    assert_miss(&bypass, 2);
    assert!(status(&bypass).contains("detail=no-store"), "{bypass:?}");
    assert_hit(&t.get(p), 1);

    // Expires in RFC 850 and asctime form; Date and Expires compared as dates.
    for (key, expires) in [("e850", rfc850_in(3600)), ("easc", asctime_in(3600))] {
        let p = format!("/cache/{key}?h={}", enc(&format!("Expires:{expires}")));
        let first = t.get(&p);
        assert!(status(&first).contains("stored"), "{expires}: {first:?}");
        assert_hit(&t.get(&p), 1);
    }
    // private="X-Secret": stored without the field.
    let p = format!(
        "/cache/priv?cc={}&h={}",
        enc("max-age=60, private=\"x-secret\""),
        enc("X-Secret:abc")
    );
    let first = t.get(&p);
    assert_eq!(first.header("x-secret"), Some("abc"), "{first:?}");
    let hit = t.get(&p);
    assert_hit(&hit, 1);
    assert_eq!(hit.header("x-secret"), None, "{hit:?}");
}

/// Conditional requests and freshening: a miss forwards the client's own conditionals (and
/// passes the origin's 304 on), a stored `ETag` goes back exactly as it came, a 304 updates
/// Content-Type, a HEAD response freshens or invalidates the stored GET.
#[test]
fn conditionals_on_misses_and_freshening() {
    let t = Cached::start(93, 1 << 20, "");
    // A miss with the client's If-None-Match: the origin answers 304, which is passed on.
    let p = "/cache/cm?cc=max-age=60&etag=v1";
    let nm = t.get_with(p, &[("if-none-match", "\"v1\"")]);
    assert_eq!(nm.status, 304, "{nm:?}");
    assert!(
        t.origin("/_last/cm").contains("if-none-match: \"v1\""),
        "{}",
        t.origin("/_last/cm")
    );
    assert_eq!(t.count("cm"), 1);
    // A plain request then fetches and stores the body.
    assert_miss(&t.get(p), 2);
    assert_hit(&t.get(p), 2);
    // Preconditions are the client's own: forwarded, never answered from or stored in the
    // cache (a 412 stored for everyone would deny the resource to all).
    let pre = t.get_with(p, &[("if-match", "\"nope\"")]);
    assert!(status(&pre).contains("detail=precondition"), "{pre:?}");
    assert_eq!(t.count("cm"), 3);
    assert_hit(&t.get(p), 2);

    // An unquoted ETag is sent back exactly as stored.
    let raw = "/cache/raw?cc=max-age=1&etag_raw=abc";
    t.get(raw);
    std::thread::sleep(Duration::from_millis(2100));
    let again = t.get(raw);
    assert!(status(&again).contains("fwd-status=304"), "{again:?}");
    assert!(
        t.origin("/_last/raw").contains("if-none-match: abc\n"),
        "{}",
        t.origin("/_last/raw")
    );

    // A 304 updates the stored Content-Type.
    let ct = "/cache/ct?cc=max-age=1&etag=c1&ctv=1";
    assert_eq!(t.get(ct).header("content-type"), Some("text/plain; v=1"));
    std::thread::sleep(Duration::from_millis(2100));
    let refreshed = t.get(ct);
    assert!(
        status(&refreshed).contains("fwd-status=304"),
        "{refreshed:?}"
    );
    assert_eq!(refreshed.header("content-type"), Some("text/plain; v=2"));
    let hit = t.get(ct);
    assert_hit(&hit, 1);
    assert_eq!(hit.header("content-type"), Some("text/plain; v=2"));

    // A 304 about another representation (another ETag) does not freshen the stored one:
    // it is dropped and the body fetched again without conditions.
    let lie = "/cache/lie?cc=max-age=1&etag=a&lie304=b";
    t.get(lie);
    std::thread::sleep(Duration::from_millis(2100));
    let again = t.get(lie);
    assert_eq!(again.status, 200, "{again:?}");
    assert!(again.body.contains(" n=3\n"), "{again:?}");
    assert_eq!(t.count("lie"), 3);
    assert!(
        !t.origin("/_last/lie").contains("if-none-match"),
        "{}",
        t.origin("/_last/lie")
    );
    assert_hit(&t.get(lie), 3);

    // HEAD freshens the stored GET it matches (no validators: the same length)...
    let hf = "/cache/hf?cc=max-age=1&ctv=1";
    t.get(hf);
    std::thread::sleep(Duration::from_millis(2100));
    let head = t.req("HEAD", hf, &[]);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(t.count("hf"), 2);
    let hit = t.get(hf);
    assert_hit(&hit, 1);
    assert_eq!(hit.header("x-version"), Some("2"), "{hit:?}");
    // ...and invalidates one it does not match (a new ETag).
    let hm = "/cache/hm?cc=max-age=1&etagv=1";
    t.get(hm);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(t.req("HEAD", hm, &[]).status, 200);
    assert_eq!(t.count("hm"), 2);
    assert_miss(&t.get(hm), 3);
}

/// Targeted cache control (RFC 9213): CDN-Cache-Control wins over Cache-Control and
/// Expires for this cache, and does not reach clients unless configured.
#[test]
fn targeted_cache_control_for_this_cache_only() {
    let t = Cached::start(94, 1 << 20, "");
    let p = format!(
        "/cache/cdn?cc=no-store&h={}",
        enc("CDN-Cache-Control:max-age=60")
    );
    let first = t.get(&p);
    assert!(status(&first).contains("stored"), "{first:?}");
    assert_eq!(first.header("cdn-cache-control"), None, "{first:?}");
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let hit = t.get(&p);
    assert_hit(&hit, 1);
    assert_eq!(hit.header("cdn-cache-control"), None, "{hit:?}");
    // The targeted field forbids what Cache-Control allows.
    let p = format!(
        "/cache/cdn2?cc=max-age=60&h={}",
        enc("CDN-Cache-Control:no-store")
    );
    t.get(&p);
    t.get(&p);
    assert_eq!(t.count("cdn2"), 2);
    // ...and makes Expires ignored.
    let p = format!(
        "/cache/cdn3?expires=60&h={}",
        enc("CDN-Cache-Control:public")
    );
    t.get(&p);
    t.get(&p);
    assert_eq!(t.count("cdn3"), 2);
    drop(t);

    // Another field first in the list, and passed on when configured.
    let t = Cached::start(
        95,
        1 << 20,
        "targeted_cache_control = [\"proxy-cache-control\", \"cdn-cache-control\"]\nforward_targeted_cache_control = true",
    );
    let p = format!(
        "/cache/pcc?cc=no-store&h={}&h={}",
        enc("Proxy-Cache-Control:max-age=60"),
        enc("CDN-Cache-Control:no-store")
    );
    let first = t.get(&p);
    assert!(status(&first).contains("stored"), "{first:?}");
    assert_eq!(first.header("proxy-cache-control"), Some("max-age=60"));
    assert_hit(&t.get(&p), 1);
}

/// Purge by tag (`Surrogate-Key`, `Cache-Tag`): hard purge removes every response carrying
/// a tag and nothing else; soft purge makes them stale, so they are revalidated and still
/// answer when the origin fails. The tag fields do not reach clients.
#[test]
fn purge_by_tag_hard_and_soft() {
    let t = Cached::start(96, 1 << 20, "stale_if_error = \"1h\"\nkeep_stale = \"1h\"");
    let t1 = format!(
        "/cache/t1?cc=max-age=60&h={}",
        enc("Surrogate-Key:prod-1 list-a")
    );
    let t2 = format!(
        "/cache/t2?cc=max-age=60&h={}",
        enc("Cache-Tag:prod-2,prod-1")
    );
    let t3 = format!("/cache/t3?cc=max-age=60&h={}", enc("Surrogate-Key:other"));
    for p in [&t1, &t2, &t3] {
        let first = t.get(p);
        assert!(status(&first).contains("stored"), "{first:?}");
        assert_eq!(first.header("surrogate-key"), None, "{first:?}");
        assert_eq!(first.header("cache-tag"), None, "{first:?}");
    }
    let out = t.w.cli_ok(&["cache", "purge", "--tag", "prod-1"]);
    assert!(out.contains("purged 2 entries"), "{out}");
    assert_miss(&t.get(&t1), 2);
    assert_miss(&t.get(&t2), 2);
    assert_hit(&t.get(&t3), 1);

    // Soft: stale, revalidated with its ETag (the stored body stays)...
    let s1 = format!(
        "/cache/s1?cc=max-age=60&etag=s1&h={}",
        enc("Surrogate-Key:soft")
    );
    let s2 = format!("/cache/s2?cc=max-age=60&h={}", enc("Surrogate-Key:soft"));
    t.get(&s1);
    t.get(&s2);
    let out = t.w.cli_ok(&["cache", "purge", "--tag", "soft", "--soft"]);
    assert!(out.contains("marked stale 2 entries"), "{out}");
    let again = t.get(&s1);
    assert!(status(&again).contains("fwd-status=304"), "{again:?}");
    assert!(again.body.contains(" n=1\n"), "{again:?}");
    // ...and answering when the origin fails.
    t.origin("/_fail/on");
    let failing = t.get(&s2);
    t.origin("/_fail/off");
    assert_eq!(failing.status, 200, "{failing:?}");
    assert!(status(&failing).contains("stale-if-error"), "{failing:?}");
    assert!(failing.body.contains(" n=1\n"), "{failing:?}");

    // Bad tags and bad combinations are refused with a reason.
    let bad = t.w.cli(&["cache", "purge", "--tag", "a b"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("without spaces"), "{}", bad.stderr);
    let both =
        t.w.cli(&["cache", "purge", "http://c.test/x", "--tag", "a"]);
    assert_ne!(both.code, 0, "{}", both.stdout);
}

/// Range requests are answered from a complete stored response: 206 with Content-Range for
/// each form of one range, 416 past the end, the whole response for several ranges or an
/// If-Range that does not match; the origin sees none of them.
#[test]
fn ranges_from_a_stored_response() {
    let t = Cached::start(97, 1 << 20, "");
    let p = "/cache/rg?cc=max-age=60&size=100&etag=r1";
    let full = t.get(p);
    assert_eq!(full.body.len(), 100);
    let part = |range: &str| t.get_with(p, &[("range", range)]);
    for (range, bytes, cr) in [
        ("bytes=0-9", 0..10, "bytes 0-9/100"),
        ("bytes=-5", 95..100, "bytes 95-99/100"),
        ("bytes=90-", 90..100, "bytes 90-99/100"),
        ("bytes=95-1000", 95..100, "bytes 95-99/100"),
    ] {
        let r = part(range);
        assert_eq!(r.status, 206, "{range}: {r:?}");
        assert_eq!(r.header("content-range"), Some(cr), "{range}");
        assert_eq!(r.body, full.body[bytes.clone()], "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str()),
            "{range}"
        );
        assert!(status(&r).contains("; hit"), "{r:?}");
    }
    let past = part("bytes=100-");
    assert_eq!(past.status, 416, "{past:?}");
    assert_eq!(past.header("content-range"), Some("bytes */100"));
    let several = part("bytes=0-1,5-6");
    assert_eq!(several.status, 200);
    assert_eq!(several.body, full.body);
    let other = t.get_with(p, &[("range", "bytes=0-9"), ("if-range", "\"r2\"")]);
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(other.body, full.body);
    let same = t.get_with(p, &[("range", "bytes=0-9"), ("if-range", "\"r1\"")]);
    assert_eq!(same.status, 206, "{same:?}");
    assert_eq!(t.count("rg"), 1, "every range came from the cache");
    // Nothing stored: the range request goes to the origin (and is not stored).
    let miss = t.get_with("/cache/rgm?cc=max-age=60", &[("range", "bytes=0-3")]);
    assert!(status(&miss).contains("detail=range"), "{miss:?}");
    assert_eq!(t.count("rgm"), 1);
}

/// `103 Early Hints` from the origin reaches an HTTP/1.1 client before the final answer (not
/// an HTTP/1.0 one, RFC 9110 15.2), and is never stored: the hit that follows has none.
#[test]
fn early_hints_reach_the_client_and_are_not_stored() {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
    };
    // The cached route's origin is the raw one below, on 9100 (the proxy's readiness probe
    // may get a 502 before it listens: any answer will do).
    let t = Cached::start_with(98, 1 << 20, "", "servers = [\"127.0.0.1:9100\"]");
    // A raw origin: each request gets a 103 with a Link, then the final answer.
    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (st, sv) = (stop.clone(), served.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let origin = proxy_tests::netns::spawn_in(t.ns(), move || {
        let listener = TcpListener::bind("127.0.0.1:9100").unwrap();
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_mins(1);
        while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            sv.fetch_add(1, Ordering::Relaxed);
            let _ = s.write_all(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\
                  Connection: close\r\n\r\nok",
            );
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let raw = |request: &'static str| {
        run_in(t.ns(), move || {
            let mut s = TcpStream::connect(PLAIN).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let before = served.load(Ordering::Relaxed);
    let first = raw("GET /cache/h/a HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n");
    assert!(
        first.starts_with(
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{first:?}\n{}",
        t.proxy.log()
    );
    assert!(first.ends_with("\r\n\r\nok"), "{first:?}");
    let hit = raw("GET /cache/h/a HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n");
    assert!(hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit:?}");
    assert!(hit.contains("; hit"), "{hit:?}");
    assert_eq!(
        served.load(Ordering::Relaxed) - before,
        1,
        "the second was a hit"
    );
    // HTTP/1.0: no interim answers.
    let old = raw("GET /cache/h/b HTTP/1.0\r\nHost: c.test\r\n\r\n");
    assert!(
        old.starts_with("HTTP/1.0 200 OK\r\n") || old.starts_with("HTTP/1.1 200 OK\r\n"),
        "{old:?}"
    );
    assert!(!old.contains("103"), "{old:?}");
    stop.store(true, Ordering::Relaxed);
    drop(t);
    origin.join().unwrap();
}

/// stale-if-error from the route (the origin sent no such directive) stands in for every way
/// the origin can fail: a 5xx, a connection dropped without an answer, an answer too slow.
#[test]
fn stale_if_error_for_drops_timeouts_and_5xx() {
    let t = Cached::start_with(
        99,
        1 << 20,
        "stale_if_error = \"1h\"\nkeep_stale = \"1h\"",
        "servers = [\"127.0.0.1:9000\"]\nresponse_timeout = \"500ms\"",
    );
    let p = "/cache/sie?cc=max-age=1";
    assert_miss(&t.get(p), 1);
    std::thread::sleep(Duration::from_millis(1100));
    for (on, off, what) in [
        ("/_abort/on", "/_abort/off", "dropped connection"),
        ("/_slow/2000", "/_slow/0", "timeout"),
        ("/_fail/on", "/_fail/off", "503"),
    ] {
        t.origin(on);
        let r = t.get(p);
        t.origin(off);
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert!(
            status(&r).contains("detail=stale-if-error"),
            "{what}: {r:?}"
        );
        assert!(r.body.contains(" n=1\n"), "{what}: the stale body: {r:?}");
    }
}

#[track_caller]
fn assert_disk_hit(r: &Reply, n: u64) {
    assert_hit(r, n);
    assert!(
        status(r).contains("detail=disk"),
        "want a hit from disk: {r:?}"
    );
}

/// The disk tier keeps responses (plain, with `Vary`, tagged) across a clean restart and a
/// `kill -9`; what was purged before a restart stays purged.
#[test]
fn disk_tier_survives_restart_and_kill9_and_keeps_purges() {
    let mut t = Cached::start_disk(120, 1 << 20, "max_bytes = 16777216", "");
    let plain = "/cache/d1?cc=max-age=600";
    let vary = "/cache/dv?cc=max-age=600&vary=Accept-Language";
    let tagged = "/cache/dt?cc=max-age=600&h=Surrogate-Key:tg1";
    let purged = "/cache/dp?cc=max-age=600";
    let fr = [("accept-language", "fr")];
    let de = [("accept-language", "de")];
    assert_miss(&t.get(plain), 1);
    assert_miss(&t.get_with(vary, &fr), 1);
    assert_miss(&t.get_with(vary, &de), 2);
    assert_miss(&t.get(tagged), 1);
    assert_miss(&t.get(purged), 1);
    // 5 responses and the Vary marker.
    t.wait_disk_writes(6);
    let out =
        t.w.cli_ok(&["cache", "purge", &format!("http://{HOST}{purged}")]);
    assert!(out.contains("purged 1"), "{out}");

    t.restart(false);
    assert_disk_hit(&t.get(plain), 1);
    // Served from memory now that the disk brought it back.
    let again = t.get(plain);
    assert_hit(&again, 1);
    assert!(!status(&again).contains("detail=disk"), "{again:?}");
    assert_disk_hit(&t.get_with(vary, &de), 2);
    assert_hit(&t.get_with(vary, &fr), 1);
    assert_disk_hit(&t.get(tagged), 1);
    assert_miss(&t.get(purged), 2);
    assert_eq!(t.count("d1"), 1);
    assert_eq!(t.count("dv"), 2);

    // A response stored just before a crash is there after it.
    let crash = "/cache/dk?cc=max-age=600";
    assert_miss(&t.get(crash), 1);
    let written = t.stats()["disk"]["writes"].as_u64().unwrap();
    assert!(written >= 2, "{written}");
    t.wait_disk_writes(2);
    t.restart(true);
    assert_disk_hit(&t.get(crash), 1);
    assert_eq!(t.count("dk"), 1);

    // A tag purge reaches what only the disk holds (the restart emptied memory).
    t.restart(false);
    let out = t.w.cli_ok(&["cache", "purge", "--tag", "tg1"]);
    assert!(out.contains("purged 1"), "{out}");
    assert_miss(&t.get(tagged), 2);
    // Soft: stale from now on, so it is revalidated (the origin sees a request) but kept.
    let soft = "/cache/ds?cc=max-age=600&h=Surrogate-Key:tg2&etag=s1";
    assert_miss(&t.get(soft), 1);
    t.wait_disk_writes(2);
    t.restart(false);
    let out = t.w.cli_ok(&["cache", "purge", "--tag", "tg2", "--soft"]);
    assert!(out.contains("marked stale 1 "), "{out}");
    let r = t.get(soft);
    assert!(status(&r).contains("fwd=stale"), "{r:?}");
    assert_eq!(t.count("ds"), 2);
}

/// Responses larger than `memory_max_object_bytes` live on disk only; responses evicted
/// from memory are still served from disk; the disk stays within its own bound.
#[test]
fn disk_tier_large_objects_memory_eviction_and_its_bound() {
    let t = Cached::start_disk(
        121,
        64 << 10,
        "max_bytes = 1048576, memory_max_object_bytes = 20000",
        "max_object_bytes = 1000000",
    );
    let large = "/cache/big?cc=max-age=600&size=300000";
    assert_miss(&t.get(large), 1);
    t.wait_disk_writes(1);
    let r = t.get(large);
    assert_disk_hit(&r, 1);
    assert_eq!(r.body.len(), 300_000);
    assert_eq!(
        t.stats()["entries"],
        0,
        "the large response stays out of memory"
    );
    // Every hit reads it from disk.
    assert_disk_hit(&t.get(large), 1);
    assert_eq!(t.count("big"), 1);

    // 20 responses of 8 KB: more than the 64 KiB of memory, all still answered from the
    // cache, those memory dropped from disk.
    for i in 0..20 {
        assert_miss(&t.get(&format!("/cache/e{i}?cc=max-age=600&size=8000")), 1);
    }
    t.wait_disk_writes(21);
    let mut from_disk = 0;
    for i in 0..20 {
        let r = t.get(&format!("/cache/e{i}?cc=max-age=600&size=8000"));
        assert_hit(&r, 1);
        from_disk += u32::from(status(&r).contains("detail=disk"));
        assert_eq!(t.count(&format!("e{i}")), 1);
    }
    assert!(
        from_disk > 0,
        "memory held all 20 responses: the test proves nothing"
    );

    // Four more large ones: past the disk's 1 MiB, the least used files go.
    for i in 0..4 {
        assert_miss(
            &t.get(&format!("/cache/b{i}?cc=max-age=600&size=300000")),
            1,
        );
    }
    t.wait_disk_writes(25);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = t.stats();
        let bytes = s["disk"]["bytes"].as_u64().unwrap();
        let on_disk: u64 = t
            .disk_files()
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        if bytes <= 1 << 20 && on_disk <= 1 << 20 && s["disk"]["evictions"].as_u64() > Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "disk over its bound: index {bytes}, files {on_disk}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A damaged file (a flipped byte, a truncation) is never served: the request goes to the
/// origin, the file is removed and counted.
#[test]
fn damaged_disk_files_are_never_served() {
    let mut t = Cached::start_disk(
        122,
        1 << 20,
        "max_bytes = 16777216, memory_max_object_bytes = 1000",
        "",
    );
    // Disk-only (larger than 1000 bytes): every hit reads the file.
    let p = "/cache/dmg?cc=max-age=600&size=5000";
    assert_miss(&t.get(p), 1);
    t.wait_disk_writes(1);
    let files = t.disk_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut data = std::fs::read(&files[0]).unwrap();
    let at = data.len() - 100;
    data[at] ^= 0x01;
    std::fs::write(&files[0], &data).unwrap();
    let r = t.get(p);
    assert_miss(&r, 2);
    assert_eq!(r.body.len(), 5000);
    assert!(!r.body.contains('\u{fffd}'));
    assert_eq!(t.stats()["disk"]["corrupt"], 1);
    assert!(t.proxy.log().contains("damaged file was not served"));

    // Truncated while the proxy was down: found at start-up, removed, fetched again.
    t.wait_disk_writes(2);
    let files = t.disk_files();
    assert_eq!(files.len(), 1, "{files:?}");
    t.restart(false);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap();
    f.set_len(2000).unwrap();
    drop(f);
    t.restart(false);
    assert!(t.proxy.log().contains("damaged=1"), "{}", t.proxy.log());
    assert_miss(&t.get(p), 3);
    assert_eq!(t.count("dmg"), 3);
}

/// A full disk: writes fail, the memory tier serves on; the failure is counted and logged
/// once, and writes resume when space is back.
#[test]
fn a_full_disk_keeps_serving_from_memory() {
    let t = Cached::start_disk(
        123,
        4 << 20,
        "max_bytes = 16777216",
        "max_object_bytes = 2000000",
    );
    // Swap the directory for a 256 KiB tmpfs, under the running proxy: its files stay in
    // the old place, new ones go to the small one.
    let dir = t.disk_dir();
    let mounted = Mount::tmpfs(&dir, "256k");
    for sub in ["tmp", "objects/00"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for b in 1..=255u8 {
        std::fs::create_dir_all(dir.join(format!("objects/{b:02x}"))).unwrap();
    }
    for i in 0..3 {
        assert_miss(
            &t.get(&format!("/cache/full{i}?cc=max-age=600&size=200000")),
            1,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.stats()["disk"]["write_errors"].as_u64() == Some(0) {
        assert!(Instant::now() < deadline, "no write failed: {}", t.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..3 {
        assert_hit(
            &t.get(&format!("/cache/full{i}?cc=max-age=600&size=200000")),
            1,
        );
    }
    let log = t.proxy.log();
    assert_eq!(log.matches("disk cache: writes fail").count(), 1, "{log}");
    drop(mounted);
    // Space again (the directory is back on the big disk, recreate its layout).
    for b in 0..=255u8 {
        std::fs::create_dir_all(dir.join(format!("objects/{b:02x}"))).unwrap();
    }
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    assert_miss(&t.get("/cache/full9?cc=max-age=600"), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.proxy.log().contains("disk cache: writes succeed again") {
        assert!(Instant::now() < deadline, "{}", t.proxy.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tmpfs mounted by the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Self {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        Self(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// With `user = NAME`, the files an earlier run wrote as root are handed over and served,
/// and new ones are written as that user.
#[test]
fn disk_tier_under_a_dropped_privilege() {
    use std::os::unix::fs::MetadataExt;
    let mut t = Cached::start_disk(124, 1 << 20, "max_bytes = 16777216", "");
    let p = "/cache/priv1?cc=max-age=600";
    assert_miss(&t.get(p), 1);
    t.wait_disk_writes(1);
    let text = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(&t.config, format!("user = \"nobody\"\n{text}")).unwrap();
    t.restart(false);
    assert!(
        t.proxy.log().contains("privileges dropped"),
        "{}",
        t.proxy.log()
    );
    assert_disk_hit(&t.get(p), 1);
    assert_miss(&t.get("/cache/priv2?cc=max-age=600"), 1);
    t.wait_disk_writes(1);
    let owners: Vec<u32> = t
        .disk_files()
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().uid())
        .collect();
    assert_eq!(owners, vec![65534, 65534], "files owned by nobody");
    t.restart(false);
    assert_disk_hit(&t.get("/cache/priv2?cc=max-age=600"), 1);
}

/// A stored `206` answers the ranges it holds, and `416` past the end of the complete
/// response (RFC 9111 3.3); other ranges, and requests without `Range`, go to the origin.
#[test]
fn a_stored_part_answers_the_ranges_it_holds() {
    let t = Cached::start(125, 1 << 20, "");
    let p = "/cache/part?cc=max-age=60&ranges=1&size=100&etag=p1";
    let first = t.get_with(p, &[("range", "bytes=10-59")]);
    assert_eq!(first.status, 206, "{first:?}");
    assert_eq!(first.header("content-range"), Some("bytes 10-59/100"));
    assert!(status(&first).contains("stored"), "{first:?}");
    let inner = t.get_with(p, &[("range", "bytes=20-29")]);
    assert_eq!(inner.status, 206, "{inner:?}");
    assert_eq!(inner.header("content-range"), Some("bytes 20-29/100"));
    assert_eq!(inner.body, first.body[10..20]);
    assert!(status(&inner).contains("detail=partial"), "{inner:?}");
    let whole_part = t.get_with(p, &[("range", "bytes=10-59")]);
    assert_eq!(whole_part.body, first.body);
    let past = t.get_with(p, &[("range", "bytes=100-")]);
    assert_eq!(past.status, 416, "{past:?}");
    assert_eq!(past.header("content-range"), Some("bytes */100"));
    // An If-Range naming another entity: not from this part.
    let other = t.get_with(p, &[("range", "bytes=20-29"), ("if-range", "\"p2\"")]);
    assert!(!status(&other).contains("hit"), "{other:?}");
    assert_eq!(t.count("part"), 2);
    // Outside the part: the origin (its part replaces the stored one).
    let outside = t.get_with(p, &[("range", "bytes=0-9")]);
    assert_eq!(outside.status, 206);
    assert_eq!(outside.header("content-range"), Some("bytes 0-9/100"));
    assert_eq!(t.count("part"), 3);
    assert!(status(&t.get_with(p, &[("range", "bytes=2-5")])).contains("detail=partial"));
    assert_eq!(t.count("part"), 3);
    // Never for a request without Range.
    let full = t.get(p);
    assert_eq!(full.status, 200, "{full:?}");
    assert_eq!(full.body.len(), 100);
    assert_eq!(t.count("part"), 4);
    // An unsafe method removes the part with the response.
    let post = t.req("POST", p, &[]);
    assert!(post.status.as_u16() < 500, "{post:?}");
    let after = t.get_with(
        "/cache/part?cc=max-age=60&ranges=1&size=100&etag=p1",
        &[("range", "bytes=2-5")],
    );
    assert!(!status(&after).contains("hit"), "{after:?}");
}
