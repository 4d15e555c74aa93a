//! The layer-7 proxy against real origins (the demo-origin binary) and real clients (hyper,
//! rustls, raw sockets), in a network namespace the test makes. One test at a time.
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use proxy_tests::{
    harness::World,
    http::{Client, Reply, TestPki, get, request},
    netns::run_in,
    process::ChildGuard,
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const PLAIN: &str = "127.0.0.1:8080";

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

/// A world with the proxy started on `body` (which must have a listener on PLAIN).
struct L7 {
    w: World,
    config: PathBuf,
    proxy: ChildGuard,
}

impl L7 {
    fn start(subnet: u8, body: &str) -> Self {
        let w = World::new(subnet, ORIGIN_BIN);
        Self::start_in(w, body)
    }

    fn start_in(w: World, body: &str) -> Self {
        let config = w.write_config(
            "l7.toml",
            &format!("workers = 1\n[kernel]\nattach = \"none\"\n{body}"),
        );
        let proxy = w.start_proxy(&config, &["--attach", "none"], &[], addr(PLAIN));
        Self { w, config, proxy }
    }

    fn ns(&self) -> &str {
        &self.w.topo.srv_ns
    }

    fn get(&self, host: &str, path: &str) -> Reply {
        self.get_with(host, path, &[])
    }

    fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        get(
            self.ns(),
            &Client::default(),
            addr(PLAIN),
            host,
            path,
            headers,
        )
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}\n{}", self.proxy.log()))
    }

    fn origin_of(&self, host: &str, path: &str) -> String {
        let r = self.get(host, path);
        assert_eq!(r.status, 200, "{r:?}");
        r.header("x-origin").unwrap_or("").to_owned()
    }

    /// Requests served by the origin at `at` (its own counter).
    fn served(&self, at: &str) -> u64 {
        get(
            self.ns(),
            &Client::default(),
            addr(at),
            "o",
            "/_requests",
            &[],
        )
        .unwrap()
        .body
        .trim()
        .parse()
        .unwrap()
    }

    /// Raw bytes to the proxy on a new connection; returns everything read until close or
    /// `wait`.
    fn raw(&self, to: &str, bytes: Vec<u8>, wait: Duration) -> (String, Duration) {
        let to = addr(to);
        run_in(self.ns(), move || {
            let mut s = TcpStream::connect(to).unwrap();
            s.set_read_timeout(Some(wait)).unwrap();
            let start = Instant::now();
            s.write_all(&bytes).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
        })
    }
}

#[test]
fn routes_by_host_wildcard_and_path() {
    let w = World::new(31, ORIGIN_BIN);
    let _o2 = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9002", "origin-2", &[]);
    let _o3 = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9003", "origin-3", &[]);
    let t = L7::start_in(
        w,
        r#"
[[listener]]
address = "127.0.0.1:8080"

[[route]]
host = "api.test"
upstream = "one"

[[route]]
host = "*.test"
upstream = "two"

[[route]]
path = "/static/"
upstream = "three"

[[route]]
host = "api.test"
path = "/v2/"
upstream = "three"

[upstream.one]
servers = ["127.0.0.1:9000"]
[upstream.two]
servers = ["127.0.0.1:9002"]
[upstream.three]
servers = ["127.0.0.1:9003"]
"#,
    );
    assert_eq!(t.origin_of("api.test", "/"), "origin-1");
    assert_eq!(
        t.origin_of("API.test:8080", "/users"),
        "origin-1",
        "host is case-insensitive, port ignored"
    );
    assert_eq!(
        t.origin_of("api.test", "/v2/users"),
        "origin-3",
        "longer path on the same exact host"
    );
    assert_eq!(
        t.origin_of("www.test", "/static/x.css"),
        "origin-2",
        "a host match beats a path-only route"
    );
    assert_eq!(t.origin_of("other.org", "/static/x.css"), "origin-3");
    let r = t.get("other.org", "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("no route"), "{}", r.body);
}

#[test]
fn balancing_policies_distribute_as_configured() {
    let w = World::new(32, ORIGIN_BIN);
    let _o2 = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9002", "origin-2", &[]);
    let t = L7::start_in(
        w,
        r#"
[[listener]]
address = "127.0.0.1:8080"

[[route]]
host = "rr.test"
upstream = "rr"
[[route]]
host = "hash.test"
upstream = "hash"
[[route]]
host = "lc.test"
upstream = "lc"
[[route]]
host = "two.test"
upstream = "two"

[upstream.rr]
servers = [{ address = "127.0.0.1:9000", weight = 1 }, { address = "127.0.0.1:9002", weight = 3 }]
[upstream.hash]
servers = ["127.0.0.1:9000", "127.0.0.1:9002"]
policy = "hash"
hash_key = "header:x-user"
[upstream.lc]
servers = ["127.0.0.1:9000", "127.0.0.1:9002"]
policy = "least-conn"
[upstream.two]
servers = ["127.0.0.1:9000", "127.0.0.1:9002"]
policy = "random-two"
"#,
    );
    let count = |host: &str, headers: &[(&str, &str)], n: usize| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for _ in 0..n {
            let r = t.get_with(host, "/", headers);
            *m.entry(r.header("x-origin").unwrap().to_owned())
                .or_insert(0) += 1;
        }
        m
    };
    let rr = count("rr.test", &[], 40);
    assert_eq!(
        (rr["origin-1"], rr["origin-2"]),
        (10, 30),
        "weighted round robin 1:3: {rr:?}"
    );
    for user in ["alice", "bob", "carol", "dave"] {
        let h = count("hash.test", &[("x-user", user)], 10);
        assert_eq!(h.len(), 1, "user {user} moved between servers: {h:?}");
    }
    let spread: std::collections::HashSet<String> = (0..40)
        .map(|i| {
            t.get_with("hash.test", "/", &[("x-user", &format!("user-{i}"))])
                .header("x-origin")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(spread.len(), 2, "40 users all hashed to one server");
    let lc = count("lc.test", &[], 20);
    assert_eq!(
        (lc.get("origin-1"), lc.get("origin-2")),
        (Some(&10), Some(&10)),
        "idle least-conn rotates ties: {lc:?}"
    );
    let two = count("two.test", &[], 40);
    assert!(
        two.len() == 2 && two.values().all(|&c| c >= 5),
        "random-two uses both: {two:?}"
    );
}

#[test]
fn health_checks_and_passive_ejection_route_around_a_dead_server() {
    let w = World::new(33, ORIGIN_BIN);
    let mut o2 = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9002", "origin-2", &[]);
    let t = L7::start_in(
        w,
        r#"
[[listener]]
address = "127.0.0.1:8080"
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:9000", "127.0.0.1:9002"]
retry = { attempts = 0 }
passive = { consecutive_failures = 1, base_ejection = "30s" }
health = { path = "/", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }
"#,
    );
    let origins: std::collections::HashSet<String> =
        (0..6).map(|_| t.origin_of("a", "/")).collect();
    assert_eq!(origins.len(), 2);
    o2.kill9();
    // Within the ejection window (one failed request, or two failed checks) origin-2 is out.
    std::thread::sleep(Duration::from_millis(700));
    for i in 0..20 {
        let r = t.get("a", "/");
        assert_eq!(
            (r.status.as_u16(), r.header("x-origin")),
            (200, Some("origin-1")),
            "request {i} after the ejection window: {r:?}"
        );
    }
    // With every server dead, see all_servers_dead_answer_502_quickly_without_naming_them; with
    // every server down by the checks, hostile.rs's panic-mode test.
}

#[test]
fn all_servers_dead_answer_502_quickly_without_naming_them() {
    let t = L7::start(
        34,
        r#"
[[listener]]
address = "127.0.0.1:8080"
upstream = "dead"

[upstream.dead]
servers = ["127.0.0.1:9097", "127.0.0.1:9098"]
retry = { attempts = 1 }
passive = { consecutive_failures = 1, base_ejection = "30s" }
"#,
    );
    // One of the two is ejected at most (max_ejection_percent = 50, and never the last usable
    // server): the proxy keeps trying, and a refused connect fails fast.
    for _ in 0..3 {
        let start = Instant::now();
        let r = t.get("a", "/");
        assert_eq!(r.status, 502, "{r:?}");
        assert!(
            r.body.contains("could not be reached")
                && !r.body.contains("909")
                && !r.body.contains("127.0.0.1"),
            "error page leaks the upstream: {}",
            r.body
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "502 took {:?}",
            start.elapsed()
        );
        assert!(r.header("x-request-id").is_some());
    }
}

/// A raw origin that reads a request with its body, counts it, and closes without answering.
fn closing_origin(
    ns: &str,
    at: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let at = addr(at);
    let ns = ns.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        run_in(&ns, move || {
            let l = TcpListener::bind(at).unwrap();
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        while let Ok(n) = s.read(&mut chunk) {
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            let text = String::from_utf8_lossy(&buf);
                            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                                let len: usize = head
                                    .lines()
                                    .find_map(|l| {
                                        l.to_ascii_lowercase()
                                            .strip_prefix("content-length:")
                                            .map(|v| v.trim().parse().unwrap_or(0))
                                    })
                                    .unwrap_or(0);
                                if body.len() >= len {
                                    c.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                        drop(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    (count, handle)
}

#[test]
fn get_is_retried_on_connect_failure_and_post_is_not_retried_after_its_body_was_sent() {
    let w = World::new(35, ORIGIN_BIN);
    let stop = Arc::new(AtomicBool::new(false));
    let (closer_count, closer) = closing_origin(&w.topo.srv_ns, "127.0.0.1:9098", stop.clone());
    let t = L7::start_in(
        w,
        r#"
[[listener]]
address = "127.0.0.1:8080"

[[route]]
host = "get.test"
upstream = "half-dead"
[[route]]
host = "post.test"
upstream = "closer"

[upstream.half-dead]
servers = ["127.0.0.1:9097", "127.0.0.1:9000"]
retry = { attempts = 1, min_per_second = 100 }
passive = { consecutive_failures = 0 }

[[route]]
host = "budget.test"
upstream = "budget"

[upstream.budget]
servers = ["127.0.0.1:9097", "127.0.0.1:9000"]
retry = { attempts = 1, min_per_second = 1, budget_percent = 0 }
passive = { consecutive_failures = 0 }

[upstream.closer]
servers = ["127.0.0.1:9098", "127.0.0.1:9000"]
retry = { attempts = 2 }
passive = { consecutive_failures = 0 }
"#,
    );
    for i in 0..10 {
        let r = t.get("get.test", "/");
        assert_eq!(
            r.status, 200,
            "GET {i} was not retried on the live server: {r:?}"
        );
    }
    // The retry budget: one retry per second here, so of quick requests that first hit the
    // dead server, only one is retried.
    let budget: Vec<u16> = (0..6)
        .map(|_| t.get("budget.test", "/").status.as_u16())
        .collect();
    // 3 hit the live server and 1 retry fits the budget (2 if the second ticks over meanwhile);
    // without a budget all 6 would succeed.
    let ok = budget.iter().filter(|&&s| s == 200).count();
    assert!(
        (4..=5).contains(&ok),
        "the retry budget did not limit retries: {budget:?}"
    );
    let before = t.served("127.0.0.1:9000");
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = request(
            t.ns(),
            &Client::default(),
            addr(PLAIN),
            "POST",
            "post.test",
            "/submit",
            &[],
            "payload=1",
        )
        .unwrap();
        statuses.push(r.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        vec![200, 502],
        "one POST reached the closing server and must not be retried"
    );
    assert_eq!(
        closer_count.load(Ordering::Relaxed),
        1,
        "the closing server saw the POST once"
    );
    assert_eq!(
        t.served("127.0.0.1:9000") - before,
        1,
        "the POST that failed was not sent again"
    );
    stop.store(true, Ordering::Relaxed);
    closer.join().unwrap();
}

#[test]
fn each_timeout_is_enforced() {
    let t = L7::start(
        36,
        r#"
[server]
header_read_timeout = "1s"
idle_timeout = "1s"
request_timeout = "1500ms"

[[listener]]
address = "127.0.0.1:8080"

[[route]]
host = "slow.test"
upstream = "slow"
[[route]]
host = "total.test"
upstream = "patient"
[[route]]
host = "unreachable.test"
upstream = "unreachable"
[[route]]
host = "ok.test"
upstream = "patient"

[upstream.slow]
servers = ["127.0.0.1:9000"]
response_timeout = "300ms"
retry = { attempts = 0 }
[upstream.patient]
servers = ["127.0.0.1:9000"]
response_timeout = "10s"
[upstream.unreachable]
servers = ["10.250.36.77:80"]
connect_timeout = "300ms"
retry = { attempts = 0 }
"#,
    );
    // Upstream response headers.
    let start = Instant::now();
    let r = t.get("slow.test", "/slow/3000");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Whole request.
    let r = t.get("total.test", "/slow/3000");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.body.contains("longer than the proxy allows"),
        "{}",
        r.body
    );
    // Connect (an on-link address nobody answers for).
    let start = Instant::now();
    let r = t.get("unreachable.test", "/");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "connect timeout not applied: {:?}",
        start.elapsed()
    );
    // Request headers (slowloris): the proxy closes the connection.
    let (_, took) = t.raw(
        PLAIN,
        b"GET / HTTP/1.1\r\nHost: ok.test\r\nX-Slow: ".to_vec(),
        Duration::from_secs(5),
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "header read timeout: closed after {took:?}"
    );
    // Idle keep-alive connection: one request, then silence.
    let (out, took) = t.raw(
        PLAIN,
        b"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "idle timeout: closed after {took:?}"
    );
}

#[test]
fn tls_picks_the_certificate_by_sni_and_reloads_it_when_rotated() {
    let w = World::new(37, ORIGIN_BIN);
    let pki = TestPki::new(w.dir.path());
    let (a_cert, a_key) = pki.leaf(w.dir.path(), "a", &["a.test"]);
    let (b_cert, b_key) = pki.leaf(w.dir.path(), "b", &["b.test", "*.b.test"]);
    let body = format!(
        r#"
[server]
tls_handshake_timeout = "1s"

[[listener]]
address = "127.0.0.1:8080"
upstream = "app"

[[listener]]
address = "127.0.0.1:8443"
upstream = "app"
[listener.tls]
certificates = [{{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }}]

[upstream.app]
servers = ["127.0.0.1:9000"]
"#,
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display()
    );
    let t = L7::start_in(w, &body);
    let tls = |sni: &str, h2: bool| Client {
        h2,
        tls: Some((sni.to_owned(), pki.ca_pem.clone())),
        preface: None,
    };
    let get_tls = |sni: &str, h2: bool| {
        get(
            t.ns(),
            &tls(sni, h2),
            addr("127.0.0.1:8443"),
            sni,
            "/echo",
            &[],
        )
        .unwrap()
    };
    let a = get_tls("a.test", false);
    assert_eq!(a.status, 200);
    assert!(a.body.contains("x-forwarded-proto: https"), "{}", a.body);
    let b = get_tls("www.b.test", true);
    assert_eq!(
        (b.status.as_u16(), b.version),
        (200, hyper::Version::HTTP_2),
        "h2 by ALPN"
    );
    assert_ne!(a.peer_cert, b.peer_cert, "SNI chose different certificates");
    // Rotate b's certificate on disk: new handshakes get the new one, without a reload.
    let old = b.peer_cert.clone();
    pki.leaf(b_cert.parent().unwrap(), "b", &["b.test", "*.b.test"]);
    let new_der = {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_file(&b_cert)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let now = get_tls("b.test", false).peer_cert;
        if now.as_deref() == Some(new_der.as_slice()) {
            break;
        }
        assert_eq!(now, old, "an unexpected certificate");
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not picked up:\n{}",
            t.proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        get_tls("a.test", false).status,
        200,
        "the other certificate still works"
    );
}

#[test]
fn http2_downstream_h2c_and_upstream_h2_and_tls() {
    let w = World::new(38, ORIGIN_BIN);
    let pki = TestPki::new(w.dir.path());
    let (cert, key) = pki.leaf(w.dir.path(), "origin", &["origin.test"]);
    let _tls_origin = w.spawn_origin(
        ORIGIN_BIN,
        "127.0.0.1:9443",
        "origin-tls",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let body = format!(
        r#"
[[listener]]
address = "127.0.0.1:8080"

[[route]]
host = "h1.test"
upstream = "h1"
[[route]]
host = "h2.test"
upstream = "h2"
[[route]]
host = "tls.test"
upstream = "tls"
[[route]]
host = "tls2.test"
upstream = "tls2"

[upstream.h1]
servers = ["127.0.0.1:9000"]
[upstream.h2]
servers = ["127.0.0.1:9000"]
http2 = true
[upstream.tls]
servers = ["127.0.0.1:9443"]
tls = {{ server_name = "origin.test", ca_file = "{ca}" }}
[upstream.tls2]
servers = ["127.0.0.1:9443"]
http2 = true
tls = {{ server_name = "origin.test", ca_file = "{ca}" }}
"#,
        ca = pki.ca_pem.display()
    );
    let t = L7::start_in(w, &body);
    let h2c = Client {
        h2: true,
        ..Client::default()
    };
    let r = get(t.ns(), &h2c, addr(PLAIN), "h1.test", "/echo", &[]).unwrap();
    assert_eq!(
        (r.status.as_u16(), r.version),
        (200, hyper::Version::HTTP_2),
        "h2c prior knowledge downstream"
    );
    assert!(r.body.contains("HTTP/1.1"), "h1 upstream: {}", r.body);
    assert!(r.body.contains("via: 2 proxy"), "{}", r.body);
    let r = t.get("h2.test", "/echo");
    assert!(
        r.body.starts_with("GET") && r.body.contains("HTTP/2.0"),
        "h2 upstream: {}",
        r.body
    );
    assert!(r.body.contains("x-forwarded-for: 127.0.0.1"), "{}", r.body);
    assert_eq!(t.origin_of("tls.test", "/"), "origin-tls");
    let r = t.get("tls2.test", "/echo");
    assert!(
        r.body.contains("HTTP/2.0"),
        "h2 over TLS upstream: {}",
        r.body
    );
    // Many requests over one h2 client connection multiplexed upstream.
    for _ in 0..5 {
        assert_eq!(
            get(t.ns(), &h2c, addr(PLAIN), "h2.test", "/", &[])
                .unwrap()
                .status,
            200
        );
    }
}

#[test]
fn websocket_echo_through_the_proxy() {
    let t = L7::start(
        39,
        r#"
[[listener]]
address = "127.0.0.1:8080"
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:9000"]
"#,
    );
    let echoed = run_in(t.ns(), || {
        let mut s = TcpStream::connect(addr(PLAIN)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut replies = Vec::new();
        for msg in ["hello", "through the proxy"] {
            let mask = [1u8, 2, 3, 4];
            let mut frame = vec![0x81, 0x80 | u8::try_from(msg.len()).unwrap()];
            frame.extend_from_slice(&mask);
            frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            s.write_all(&frame).unwrap();
            let mut h = [0u8; 2];
            s.read_exact(&mut h).unwrap();
            let mut payload = vec![0u8; usize::from(h[1] & 0x7f)];
            s.read_exact(&mut payload).unwrap();
            replies.push(String::from_utf8(payload).unwrap());
        }
        replies
    });
    assert_eq!(echoed, vec!["hello", "through the proxy"]);
}

#[test]
fn proxy_protocol_in_gives_the_real_client_and_v2_goes_out() {
    let w = World::new(40, ORIGIN_BIN);
    let _pp_origin = w.spawn_origin(
        ORIGIN_BIN,
        "127.0.0.1:9004",
        "origin-pp",
        &["--proxy-protocol"],
    );
    let t = L7::start_in(
        w,
        r#"
[[listener]]
address = "127.0.0.1:8080"
upstream = "app"

[[listener]]
address = "127.0.0.1:8081"
proxy_protocol = true
proxy_protocol_from = ["127.0.0.0/8"]
upstream = "app"

[[listener]]
address = "127.0.0.1:8083"
proxy_protocol = true
proxy_protocol_from = ["192.0.2.0/24"]
upstream = "app"

[[route]]
host = "pp-out.test"
upstream = "pp"
[[route]]
host = "admin.test"
upstream = "app"
allow = ["203.0.113.0/24"]

[upstream.app]
servers = ["127.0.0.1:9000"]
[upstream.pp]
servers = ["127.0.0.1:9004"]
proxy_protocol = true
"#,
    );
    let v1 = Client {
        preface: Some(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8081\r\n".to_vec()),
        ..Client::default()
    };
    let r = get(t.ns(), &v1, addr("127.0.0.1:8081"), "a", "/echo", &[]).unwrap();
    assert!(
        r.body.contains("x-forwarded-for: 203.0.113.7\n"),
        "{}",
        r.body
    );
    let src: SocketAddr = "[2001:db8::9]:41000".parse().unwrap();
    let v2 = Client {
        preface: Some(proxy::proxy_protocol::encode_v2(src, addr("[::1]:8081"))),
        ..Client::default()
    };
    let r = get(t.ns(), &v2, addr("127.0.0.1:8081"), "a", "/echo", &[]).unwrap();
    assert!(
        r.body.contains("x-forwarded-for: 2001:db8::9\n"),
        "{}",
        r.body
    );
    // The real client address is what access control sees.
    assert_eq!(
        get(t.ns(), &v1, addr("127.0.0.1:8081"), "admin.test", "/", &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(t.get("admin.test", "/").status, 403);
    // Out: the upstream receives a PROXY v2 header naming the client.
    let r = get(
        t.ns(),
        &v1,
        addr("127.0.0.1:8081"),
        "pp-out.test",
        "/echo",
        &[],
    )
    .unwrap();
    assert!(
        r.body.contains("proxy-protocol-source: 203.0.113.7:40000"),
        "{}",
        r.body
    );
    // A PROXY header from an address not in proxy_protocol_from: closed unserved.
    let (out, _) = t.raw(
        "127.0.0.1:8083",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8083\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
            .to_vec(),
        Duration::from_secs(3),
    );
    assert!(out.is_empty(), "{out}");
    // A connection without a header on a PROXY listener is closed unserved.
    let (out, _) = t.raw(
        "127.0.0.1:8081",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        Duration::from_secs(3),
    );
    assert!(out.is_empty(), "{out}");
}

#[test]
fn header_rules_forwarding_headers_and_injection() {
    let t = L7::start(
        41,
        r#"
[server]
name = "edge-1"

[[listener]]
address = "127.0.0.1:8080"

[[route]]
upstream = "app"
[route.headers.request]
set = { "x-env" = "prod", "x-seen-by" = "$scheme://$host for $client_ip ($request_id)" }
add = { "x-tag" = "a" }
remove = ["x-debug"]
[route.headers.response]
set = { "x-frame-options" = "DENY" }
remove = ["x-origin"]

[upstream.app]
servers = ["127.0.0.1:9000"]
"#,
    );
    let r = t.get_with(
        "site.test",
        "/echo",
        &[
            ("x-debug", "1"),
            ("x-tag", "z"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-request-id", "req-42"),
        ],
    );
    let echo = r.body.to_ascii_lowercase();
    for want in [
        "x-env: prod",
        "x-seen-by: http://site.test for 127.0.0.1 (req-42)",
        "x-tag: z",
        "x-tag: a",
        "x-forwarded-for: 127.0.0.1\n",
        "x-forwarded-proto: http",
        "x-forwarded-host: site.test",
        "forwarded: for=127.0.0.1;proto=http;host=site.test",
        "via: 1.1 edge-1",
        "x-request-id: req-42",
    ] {
        assert!(echo.contains(want), "missing {want:?} in:\n{}", r.body);
    }
    assert!(
        !echo.contains("x-debug") && !echo.contains("6.6.6.6"),
        "{}",
        r.body
    );
    assert!(
        !echo.contains("connection:") && !echo.contains("keep-alive"),
        "hop-by-hop headers forwarded:\n{}",
        r.body
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-origin"), None);
    assert_eq!(
        r.header("server"),
        None,
        "the origin's Server header is hidden"
    );
    assert_eq!(
        r.header("x-origin-private"),
        None,
        "a header named in Connection passed"
    );
    assert_eq!(r.header("via"), Some("1.1 edge-1"));
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    let generated = t
        .get("site.test", "/")
        .header("x-request-id")
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    // CR or NUL inside a header value: refused with 400, nothing forwarded. (A bare LF ends
    // the header line, as RFC 9112 allows; the next line is then a header of its own.)
    for bad in [
        &b"X-Bad: a\rInjected: 1\r\n"[..],
        b"X-Bad: a\0b\r\n",
        b"X-Bad: \x7f\r\n",
    ] {
        let mut req = b"GET /echo HTTP/1.1\r\nHost: site.test\r\n".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\n");
        let (out, _) = t.raw(PLAIN, req, Duration::from_secs(3));
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?} -> {out:?}");
    }
}

#[test]
fn per_route_access_control_and_authentication() {
    use base64::Engine;

    let hash_of = |cmd: &str, secret: &str| -> String {
        let mut child = std::process::Command::new(proxy_tests::process::proxy_bin())
            .arg(cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(secret.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let password_hash = hash_of("hash-password", "s3cret");
    let token_hash = hash_of("hash-token", "tok-123");
    assert!(password_hash.starts_with("$argon2id$"), "{password_hash}");
    let t = L7::start(
        42,
        &format!(
            r#"
[[listener]]
address = "127.0.0.1:8080"
upstream = "app"

[[route]]
path = "/internal/"
upstream = "app"
allow = ["10.0.0.0/8"]

[[route]]
path = "/blocked/"
upstream = "app"
deny = ["127.0.0.0/8"]

[[route]]
path = "/ops/"
upstream = "app"
auth = {{ type = "basic", realm = "ops", users = {{ alice = "{password_hash}" }} }}

[[route]]
path = "/api/"
upstream = "app"
auth = {{ type = "bearer", realm = "api", tokens = ["{token_hash}"] }}

[upstream.app]
servers = ["127.0.0.1:9000"]
"#
        ),
    );
    assert_eq!(t.get("a", "/internal/x").status, 403);
    assert_eq!(t.get("a", "/blocked/x").status, 403);
    assert_eq!(t.get("a", "/open").status, 200);
    let r = t.get("a", "/ops/");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"ops\""));
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:nope")
    );
    assert_eq!(
        t.get_with("a", "/ops/", &[("authorization", &good)]).status,
        200
    );
    assert_eq!(
        t.get_with("a", "/ops/", &[("authorization", &bad)]).status,
        401
    );
    assert_eq!(
        t.get("a", "/api/x").header("www-authenticate"),
        Some("Bearer realm=\"api\"")
    );
    assert_eq!(
        t.get_with("a", "/api/x", &[("authorization", "Bearer tok-123")])
            .status,
        200
    );
    assert_eq!(
        t.get_with("a", "/api/x", &[("authorization", "Bearer tok-124")])
            .status,
        401
    );
}

#[test]
fn reload_under_load_loses_no_request_and_a_bad_config_keeps_the_old_one() {
    let w = World::new(43, ORIGIN_BIN);
    let _o2 = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9002", "origin-2", &[]);
    let config_for = |up: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\nupstream = \"{up}\"\n\n[upstream.one]\nservers = [\"127.0.0.1:9000\"]\n[upstream.two]\nservers = [\"127.0.0.1:9002\"]\n"
        )
    };
    let t = L7::start_in(w, &config_for("one"));
    assert_eq!(t.origin_of("a", "/"), "origin-1");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (stop, failures, done, ns) = (
                stop.clone(),
                failures.clone(),
                done.clone(),
                t.ns().to_owned(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match get(&ns, &Client::default(), addr(PLAIN), "a", "/slow/20", &[]) {
                        Ok(r) if r.status == 200 => done.fetch_add(1, Ordering::Relaxed),
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        &t.config,
        format!(
            "instance = \"{}\"\nstate_file = \"{}\"\nworkers = 1\n[kernel]\nattach = \"none\"\n{}",
            t.w.instance,
            t.w.dir.path().join("state.json").display(),
            config_for("two")
        ),
    )
    .unwrap();
    let out = t.w.cli(&["reload"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("config reloaded (generation 2)"),
        "{}",
        out.stdout
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the reload ({} succeeded)",
        done.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 40);
    assert_eq!(
        t.origin_of("a", "/"),
        "origin-2",
        "the new config is in force"
    );

    // A config that fails validation is rejected; the running one stays.
    let before = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(
        &t.config,
        before.replace("upstream = \"two\"", "upstream = \"three\""),
    )
    .unwrap();
    let out = t.w.cli(&["reload"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("listener[0].upstream") && out.stderr.contains("running config stays"),
        "{}",
        out.stderr
    );
    assert_eq!(t.origin_of("a", "/"), "origin-2");
    // So is one that changes the listeners (a restart is needed for that).
    std::fs::write(
        &t.config,
        before.replace("127.0.0.1:8080", "127.0.0.1:8090"),
    )
    .unwrap();
    let out = t.w.cli(&["reload"]);
    assert!(
        out.code == 2 && out.stderr.contains("needs a restart"),
        "{}",
        out.stderr
    );
    // The CLI sends SIGHUP, which the log names.
    assert!(
        t.proxy.log().contains("SIGHUP: reloading"),
        "{}",
        t.proxy.log()
    );
}

#[test]
fn trusted_proxies_forwarding_headers_give_the_client_address() {
    let t = L7::start(
        44,
        r#"
[server]
trusted_proxies = ["127.0.0.0/8"]

[[listener]]
address = "127.0.0.1:8080"

[[route]]
upstream = "app"
allow = ["198.51.100.0/24"]

[upstream.app]
servers = ["127.0.0.1:9000"]
"#,
    );
    // The peer (127.0.0.1) is trusted: the client is the address it forwarded for.
    let r = t.get_with(
        "a",
        "/echo",
        &[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .contains("x-forwarded-for: 198.51.100.7, 127.0.0.1\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("x-forwarded-proto: https"),
        "kept from a trusted proxy: {}",
        r.body
    );
    // Without it, the client is the trusted peer itself, which the route does not allow.
    assert_eq!(t.get("a", "/echo").status, 403);
    // A chain: the nearest untrusted address counts.
    let r = t.get_with(
        "a",
        "/",
        &[("x-forwarded-for", "203.0.113.1, 198.51.100.9, 127.0.0.5")],
    );
    assert_eq!(r.status, 200, "{r:?}");
}
