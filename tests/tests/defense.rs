//! Hostile traffic, end to end in network namespaces: per-client limits, layer-7 abuse banned
//! in the kernel, the in-kernel SYN rate limit, slow clients, oversized requests, and HTTP/2
//! rapid reset. One test at a time.
use std::{
    fmt::Write as _,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use proxy_tests::{
    client::{get_in, get_within_in},
    harness::{ORIGIN, World},
    netns::run_in,
    process::ChildGuard,
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const PORT: u16 = 8080;

struct Defended {
    w: World,
    proxy: ChildGuard,
}

impl Defended {
    /// A world with a second client namespace, the proxy listening on both veth addresses
    /// and loopback, and `extra` config (which may add [limits], [[ban]], [kernel] keys).
    fn start(subnet: u8, attach: &str, kernel_extra: &str, extra: &str) -> Self {
        Self::start_with_clock(subnet, attach, kernel_extra, extra, None)
    }

    /// [`Defended::start`] with the proxy in a time namespace `clock_offset` seconds off the
    /// kernel's clock when given.
    fn start_with_clock(
        subnet: u8,
        attach: &str,
        kernel_extra: &str,
        extra: &str,
        clock_offset: Option<i64>,
    ) -> Self {
        let mut w = World::new(subnet, ORIGIN_BIN);
        w.topo.add_client(subnet + 100);
        let second = w.topo.second.as_ref().unwrap();
        let config = w.write_config(
            "defense.toml",
            &format!(
                r#"
workers = 2

[kernel]
attach = "{attach}"
interfaces = ["{if1}", "{if2}"]
{kernel_extra}

[[listener]]
address = "0.0.0.0:{PORT}"
upstream = "origin"

[upstream.origin]
servers = ["{ORIGIN}"]

{extra}
"#,
                if1 = w.topo.srv_if,
                if2 = second.srv_if,
            ),
        );
        let ready: SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
        let proxy = match clock_offset {
            None => w.start_proxy(&config, &[], &[], ready),
            Some(offset) => w.start_proxy_in_time_namespace(&config, ready, offset),
        };
        Self { w, proxy }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.w.topo.srv_ip.into(), PORT)
    }

    fn addr2(&self) -> SocketAddr {
        SocketAddr::new(self.w.topo.second.as_ref().unwrap().srv_ip.into(), PORT)
    }

    /// A request from client 1 (`Err` when the connection cannot be made in 1 s).
    /// A request from client 1; a connect or a read that waits a second counts as dropped
    /// (a ban can land between a connection's handshake and its request).
    fn client1(&self, path: &str) -> std::io::Result<proxy_tests::client::Reply> {
        get_within_in(
            &self.w.topo.cli_ns,
            self.addr(),
            path,
            Duration::from_secs(1),
        )
    }

    fn client2(&self, path: &str) -> std::io::Result<proxy_tests::client::Reply> {
        get_in(
            &self.w.topo.second.as_ref().unwrap().ns,
            self.addr2(),
            path,
            Duration::from_secs(1),
        )
    }

    /// What the kernel and the lists say, for a failure message: the kernel's counters, the
    /// blocklist, and the proxy's log.
    fn diagnosis(&self) -> String {
        let stats = self.w.cli(&["stats", "--json"]);
        let list = self.w.cli(&["blocklist", "list"]);
        format!(
            "stats: {}{}\nblocklist: {}{}\nproxy log:\n{}",
            stats.stdout,
            stats.stderr,
            list.stdout,
            list.stderr,
            self.proxy.log()
        )
    }

    fn counter(&self, name: &str) -> u64 {
        self.w.stats()["counters"][name].as_u64().unwrap()
    }
}

fn dropped(r: &std::io::Result<proxy_tests::client::Reply>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: limit, kernel ban, expiry; each step starts from the state the last left"
)]
fn a_client_over_the_rate_limit_gets_429_then_is_banned_in_the_kernel_and_the_ban_expires() {
    let d = Defended::start(
        51,
        "xdp",
        "",
        r#"
[limits]
requests_per_second = 2
burst = 3

[[ban]]
name = "rate-limit-abuse"
on = "status"
statuses = ["429"]
threshold = 3
window = "10s"
ttl = "3s"
"#,
    );
    // Client 2 makes one request a second (under its own limit) throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ns2, addr2) = (d.w.topo.second.as_ref().unwrap().ns.clone(), d.addr2());
    let steady = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                outcomes.push(
                    get_in(&ns2, addr2, "/", Duration::from_secs(1))
                        .map(|r| r.status)
                        .map_err(|e| e.to_string()),
                );
                std::thread::sleep(Duration::from_millis(700));
            }
            outcomes
        })
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    let mut last_429 = Instant::now();
    let start = Instant::now();
    // Hammer until the kernel drops us (bounded: at most 400 tries, 10 s; bans are applied in
    // batches up to 100 ms apart).
    let banned_at = loop {
        assert!(
            statuses.len() < 400 && start.elapsed() < Duration::from_secs(10),
            "never banned: {statuses:?}\n{}",
            d.diagnosis()
        );
        let r = d.client1("/");
        if dropped(&r) {
            break Instant::now();
        }
        let r = r.unwrap_or_else(|e| panic!("client 1: {e}"));
        if r.status == 429 {
            retry_after = r.header("retry-after");
            last_429 = Instant::now();
        }
        statuses.push(r.status);
    };
    assert_eq!(
        &statuses[..3],
        &[200, 200, 200],
        "the burst is served: {statuses:?}"
    );
    // Banned at the third 429; a request already on its way while the ban is being applied
    // may still be answered (the ban is applied asynchronously, in well under a second).
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(limited >= 3, "banned before the third 429: {statuses:?}");
    if limited > 3 {
        eprintln!(
            "note: {limited} responses of 429 before the kernel dropped the client: {statuses:?}"
        );
    }
    assert_eq!(retry_after.as_deref(), Some("1"), "429 carries Retry-After");
    assert!(
        d.counter("packets_dropped_blocklist") > 0,
        "the kernel dropped nothing"
    );
    let list = d.w.cli_ok(&["blocklist", "list"]);
    let client1 = d.w.topo.cli_ip.to_string();
    assert!(
        list.contains(&format!("{client1}/32"))
            && list.contains("l7-abuse")
            && list.contains("auto-ban: rate-limit-abuse"),
        "{list}"
    );
    assert!(
        d.proxy.log().contains("client banned in the kernel"),
        "{}",
        d.proxy.log()
    );
    assert_eq!(
        d.client2("/").unwrap().status,
        200,
        "client 2 is still served"
    );
    // The ban expires after its TTL; the client is served again.
    loop {
        if d.client1("/").is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            banned_at.elapsed() < Duration::from_secs(8),
            "the ban did not expire"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The ban began with the third 429 and lasts its 3 s TTL.
    assert!(
        last_429.elapsed() >= Duration::from_millis(2900),
        "the ban ended early: {:?}",
        last_429.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = steady.join().unwrap();
    assert!(
        outcomes.len() >= 4 && outcomes.iter().all(|o| *o == Ok(200)),
        "client 2 was not served throughout: {outcomes:?}"
    );
}

#[test]
fn deny_patterns_ban_at_once_and_allowlisted_clients_are_never_banned() {
    let d = Defended::start(
        52,
        "xdp",
        "",
        r#"
[[ban]]
name = "scanner"
on = "deny-pattern"
path_regex = "^/(\\.env|wp-login\\.php)"
ttl = "1m"
"#,
    );
    let client2 = d.w.topo.second.as_ref().unwrap().cli_ip.to_string();
    d.w.cli_ok(&["allowlist", "add", &client2]);
    // The allowlisted client probing gets 403, and stays served.
    assert_eq!(d.client2("/.env").unwrap().status, 403);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.client2("/").unwrap().status,
        200,
        "an allowlisted client was banned"
    );
    assert!(
        d.proxy
            .log()
            .contains("ban skipped: the client is allowlisted"),
        "{}",
        d.proxy.log()
    );
    // Client 1 probing is refused and banned at once.
    assert_eq!(d.client1("/index.html").unwrap().status, 200);
    assert_eq!(d.client1("/wp-login.php").unwrap().status, 403);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dropped(&d.client1("/")) {
        assert!(
            Instant::now() < deadline,
            "client 1 not banned:\n{}",
            d.proxy.log()
        );
    }
}

/// A proxy whose `CLOCK_MONOTONIC` is not the kernel's (a time namespace: containers restored
/// from a checkpoint) still writes bans the kernel keeps for exactly their TTL: 30 s behind,
/// a naive expiry time would lie in the kernel's past (never dropping anything); 30 s ahead,
/// it would hold the ban 30 s too long.
#[test]
fn bans_last_their_ttl_when_the_proxy_clock_is_not_the_kernels() {
    for (subnet, offset) in [(74, -30), (75, 30)] {
        let d = Defended::start_with_clock(
            subnet,
            "xdp",
            "",
            r#"
[[ban]]
name = "scanner"
on = "deny-pattern"
path_regex = "^/wp-login\\.php"
ttl = "2s"
"#,
            Some(offset),
        );
        assert!(
            d.proxy.log().contains("runs in a time namespace"),
            "offset {offset}: the proxy did not see its time namespace:\n{}",
            d.proxy.log()
        );
        assert_eq!(d.client1("/wp-login.php").unwrap().status, 403);
        let probed = Instant::now();
        let deadline = probed + Duration::from_secs(2);
        while !dropped(&d.client1("/")) {
            assert!(
                Instant::now() < deadline,
                "offset {offset}: client 1 never dropped in the kernel:\n{}",
                d.diagnosis()
            );
        }
        // Dropped now; served again once the 2 s TTL is over, not before, not 30 s later.
        loop {
            if d.client1("/").is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                probed.elapsed() < Duration::from_secs(6),
                "offset {offset}: the ban did not expire:\n{}",
                d.diagnosis()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            probed.elapsed() >= Duration::from_millis(1900),
            "offset {offset}: the ban ended after {:?}, before its TTL",
            probed.elapsed()
        );
    }
}

#[test]
fn syn_rate_limit_drops_a_burst_above_the_limit_in_xdp() {
    let d = Defended::start(53, "xdp", "syn_rate = 5\nsyn_burst = 5", "");
    // Below the limit: spaced connections all pass.
    for i in 0..3 {
        assert_eq!(
            d.client1("/")
                .unwrap_or_else(|e| panic!("spaced connection {i}: {e}"))
                .status,
            200
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(1200)); // refill the bucket
    // A burst of 20 new connections at once: about the bucket's 5 get through.
    let addr = d.addr();
    let results: Vec<bool> = run_in(&d.w.topo.cli_ns, move || {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                std::thread::spawn(move || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|&&r| r).count();
    assert!(
        (4..=8).contains(&ok),
        "{ok} of 20 SYNs passed a limit of 5/s with a burst of 5"
    );
    assert!(
        d.counter("packets_dropped_syn_rate") >= 12,
        "syn drops not counted"
    );
    // Another source is not affected by client 1's bucket.
    assert_eq!(d.client2("/").unwrap().status, 200);
}

#[test]
fn slowloris_connections_are_closed_while_a_normal_client_keeps_its_latency() {
    let d = Defended::start(54, "none", "", "[server]\nheader_read_timeout = \"2s\"");
    let addr = d.addr();
    let ns = d.w.topo.cli_ns.clone();
    let attacker = std::thread::spawn(move || {
        run_in(&ns, move || {
            let mut socks: Vec<TcpStream> = (0..200)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            for s in &mut socks {
                s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
                s.set_nonblocking(true).unwrap();
            }
            let start = Instant::now();
            let mut closed_at = vec![None; socks.len()];
            // Trickle a header byte every 250 ms; note when the proxy closes each (bounded: 8 s).
            while start.elapsed() < Duration::from_secs(8) && closed_at.iter().any(Option::is_none)
            {
                for (i, s) in socks.iter_mut().enumerate() {
                    if closed_at[i].is_some() {
                        continue;
                    }
                    let mut buf = [0u8; 512];
                    let gone = match s.read(&mut buf) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => s.write_all(b"X").is_err(),
                        Ok(_) | Err(_) => true,
                    };
                    if gone {
                        closed_at[i] = Some(start.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            closed_at
        })
    });
    // Meanwhile, a normal client.
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let r = d.client2("/").expect("normal client");
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_at = attacker.join().unwrap();
    let open = closed_at.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} slowloris connections still open after 8 s");
    let latest = closed_at.iter().flatten().max().unwrap();
    assert!(
        *latest < Duration::from_millis(4500),
        "closed only after {latest:?} (header timeout 2 s)"
    );
    assert!(
        worst < Duration::from_millis(500),
        "the normal client waited {worst:?}"
    );
}

#[test]
fn oversized_requests_get_431_414_413() {
    let d = Defended::start(
        55,
        "none",
        "",
        "[limits]\nmax_header_bytes = 8192\nmax_headers = 20\nmax_uri_bytes = 1000\nmax_body_bytes = 1000",
    );
    let send = |raw: Vec<u8>| -> String {
        let addr = d.addr();
        run_in(&d.w.topo.cli_ns, move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(&raw);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert!(
        send(big_header.into_bytes()).starts_with("HTTP/1.1 431"),
        "header bytes"
    );
    let many = (0..30).fold(String::new(), |mut many, i| {
        let _ = write!(many, "X-H{i}: v\r\n");
        many
    });
    assert!(
        send(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes())
            .starts_with("HTTP/1.1 431"),
        "header count"
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(2000));
    assert!(
        send(long_uri.into_bytes()).starts_with("HTTP/1.1 414"),
        "uri"
    );
    let body = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n{}",
        "b".repeat(5000)
    );
    assert!(send(body.into_bytes()).starts_with("HTTP/1.1 413"), "body");
    let small =
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let out = send(small.as_bytes().to_vec());
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("hello"),
        "{out}"
    );
}

#[test]
fn http2_rapid_reset_is_cut_off_with_goaway() {
    let d = Defended::start(
        56,
        "none",
        "",
        "[limits]\nh2_max_pending_reset_streams = 20",
    );
    let addr = d.addr();
    let rss_before = rss_kib(d.proxy.pid());
    let outcome = run_in(&d.w.topo.cli_ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
            let conn = tokio::spawn(connection);
            let mut sent = 0u32;
            // Bounded: at most 20000 streams or 10 s.
            let start = Instant::now();
            'outer: while sent < 20_000 && start.elapsed() < Duration::from_secs(10) {
                let Ok(ready) = client.clone().ready().await else {
                    break;
                };
                client = ready;
                // A burst of streams opened and reset at once, as the attack does.
                for _ in 0..50 {
                    let req = hyper::Request::get(format!("http://{addr}/slow/1000"))
                        .body(())
                        .unwrap();
                    match client.send_request(req, true) {
                        Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                        Err(_) => break 'outer,
                    }
                    sent += 1;
                }
                tokio::task::yield_now().await;
            }
            let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
            (sent, format!("{ended:?}"))
        })
    });
    let (sent, ended) = outcome;
    assert!(sent < 20_000, "the connection survived {sent} rapid resets");
    assert!(
        ended.contains("GoAway") || ended.contains("ENHANCE_YOUR_CALM") || ended.contains("Err"),
        "connection end: {ended}"
    );
    let rss_after = rss_kib(d.proxy.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The proxy still serves others.
    assert_eq!(d.client2("/").unwrap().status, 200);
}

/// Resident memory of a process, in KiB (from /proc). For a process started through nsenter,
/// the proxy is its child; sum the tree.
fn rss_kib(pid: i32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(rss_kib)
        .sum();
    own + children
}

#[test]
fn per_client_connection_and_in_flight_limits() {
    let d = Defended::start(
        57,
        "none",
        "",
        "[limits]\nconnections_per_client = 3\nrequests_in_flight_per_client = 2",
    );
    let addr = d.addr();
    let (held, fourth) = run_in(&d.w.topo.cli_ns, move || {
        let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut fourth = TcpStream::connect(addr).unwrap();
        fourth
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut buf = [0u8; 64];
        let got = fourth.read(&mut buf);
        (held.len(), got.map_err(|e| e.kind()))
    });
    assert_eq!(held, 3);
    assert!(
        matches!(fourth, Ok(0) | Err(ErrorKind::ConnectionReset)),
        "the fourth connection was served: {fourth:?}"
    );
    // Wait until the proxy has seen the held connections close (they count against the
    // connection limit until then).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = d.w.stats();
        let open: u64 = stats["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["connections"].as_u64().unwrap())
            .sum();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections still counted: {stats}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Requests in flight: three slow requests at once, one is refused with 429.
    let ns = d.w.topo.cli_ns.clone();
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                get_in(&ns, addr, "/slow/800", Duration::from_secs(2)).map_or(0, |r| r.status)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![200, 200, 429], "{statuses:?}");
}

#[test]
fn invalid_requests_get_the_client_banned() {
    let d = Defended::start(
        58,
        "xdp",
        "",
        "[[ban]]\nname = \"garbage\"\non = \"invalid-request\"\nthreshold = 2\nttl = \"1m\"",
    );
    let addr = d.addr();
    for _ in 0..2 {
        let out = run_in(&d.w.topo.cli_ns, move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
                .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        });
        assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dropped(&d.client1("/")) {
        assert!(
            Instant::now() < deadline,
            "not banned after two invalid requests:\n{}",
            d.proxy.log()
        );
    }
    assert_eq!(d.client2("/").unwrap().status, 200);
    assert!(
        d.w.cli_ok(&["blocklist", "list"])
            .contains("auto-ban: garbage")
    );
}

#[test]
fn stalled_and_trickling_request_bodies_are_aborted() {
    let d = Defended::start(
        59,
        "none",
        "",
        "[limits]\nbody_read_timeout = \"1s\"\nmin_body_rate = 1000",
    );
    let addr = d.addr();
    // Returns what came back and when the proxy answered or closed.
    let upload = move |ns: String, trickle: bool| -> (String, Duration) {
        run_in(&ns, move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s.write_all(
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nfirst bytes",
            )
            .unwrap();
            let start = Instant::now();
            let mut out = Vec::new();
            // Bounded: 12 s.
            while start.elapsed() < Duration::from_secs(12) {
                let mut buf = [0u8; 1024];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        if out.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
                if trickle && s.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
        })
    };
    let (out, took) = upload(d.w.topo.cli_ns.clone(), false);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "a stalled body was cut after {took:?}: {out}"
    );
    // 10 bytes/s against a minimum of 1000 bytes/s: cut once the 5 s grace is over.
    let (out, took) = upload(d.w.topo.cli_ns.clone(), true);
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "a trickling body was cut after {took:?}: {out}"
    );
    assert_eq!(d.client2("/").unwrap().status, 200);
}
