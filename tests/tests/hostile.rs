//! Hostile input through the real proxy: authority confusion, path spellings, health poisoning
//! and request smuggling, against a raw TCP origin that records the exact bytes it receives.
//! Every case asserts one outcome: refused (with the status named), or forwarded as one
//! unambiguous message. One test at a time (the harness makes network namespaces).
use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use proxy_tests::{
    harness::World,
    netns::{run_in, spawn_in},
    process::ChildGuard,
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const PLAIN: &str = "127.0.0.1:8080";
const RAW: &str = "127.0.0.1:9100";
/// `sha256:` of the bearer token "secret".
const SECRET_HASH: &str = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

/// One message the origin read, split by its own strict framing (Content-Length or chunked),
/// with whatever else arrived on the connection after it.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
    /// Bytes after the message on the same connection (a smuggled request would be here).
    trailing: Vec<u8>,
}

impl Received {
    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
}

/// What the origin read from one connection: a whole message, or bytes that never made one.
#[derive(Debug, Clone)]
enum Conn {
    Message(Received),
    Incomplete(Vec<u8>),
}

/// Reads one HTTP/1.1 request strictly; `Err(bytes)` when the connection ended first or the
/// framing is not one this origin accepts (both CL and TE, either twice, bad chunks).
fn read_request(s: &mut TcpStream) -> Result<Received, Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut fill = |buf: &mut Vec<u8>| -> bool {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(&mut buf) {
            return Err(buf);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let lower = head.to_ascii_lowercase();
    let values = |name: &str| -> Vec<String> {
        lower
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .collect()
    };
    let te = values("transfer-encoding:");
    let cl = values("content-length:");
    if !te.is_empty() && !cl.is_empty() || cl.len() > 1 || te.len() > 1 {
        return Err(buf);
    }
    let mut body = Vec::new();
    let mut pos = head_end;
    if te.first().is_some_and(|t| t == "chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                if !fill(&mut buf) {
                    return Err(buf);
                }
            };
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or(""), 16)
            else {
                return Err(buf);
            };
            pos = line_end + 2;
            // The data, then CRLF (for the last chunk: the empty trailer section's CRLF).
            while buf.len() < pos + size + 2 {
                if !fill(&mut buf) {
                    return Err(buf);
                }
            }
            if &buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(buf);
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = cl.first() {
        let Ok(len) = len.parse::<usize>() else {
            return Err(buf);
        };
        while buf.len() < pos + len {
            if !fill(&mut buf) {
                return Err(buf);
            }
        }
        body.extend_from_slice(&buf[pos..pos + len]);
        pos += len;
    } else if !te.is_empty() {
        return Err(buf);
    }
    Ok(Received {
        head,
        body,
        trailing: buf.split_off(pos),
    })
}

/// A raw origin in the server namespace: answers each connection's one request with the
/// status `status(path)` (and `Connection: close`), and records what it read.
struct Origin {
    log: Arc<Mutex<Vec<Conn>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The status `/health` answers.
    health: Arc<AtomicU16>,
}

impl Origin {
    fn start(ns: &str, at: &str) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(AtomicU16::new(200));
        let (l, st, h) = (log.clone(), stop.clone(), health.clone());
        let at = addr(at);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in(ns, move || {
            let listener = TcpListener::bind(at).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            // Bounded: the origin stops by itself after two minutes at most.
            let deadline = Instant::now() + Duration::from_mins(2);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (l, h) = (l.clone(), h.clone());
                        std::thread::spawn(move || serve(s, &l, &h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            log,
            stop,
            thread: Some(thread),
            health,
        }
    }

    /// The complete messages received since the last call (connections still being read
    /// are waited for briefly).
    fn take(&self) -> Vec<Conn> {
        std::thread::sleep(Duration::from_millis(150));
        std::mem::take(&mut *self.log.lock().unwrap())
            .into_iter()
            .filter(|c| !matches!(c, Conn::Message(r) if r.target() == "/health"))
            .collect()
    }

    fn messages(&self) -> Vec<Received> {
        self.take()
            .into_iter()
            .filter_map(|c| match c {
                Conn::Message(r) => Some(r),
                Conn::Incomplete(_) => None,
            })
            .collect()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, log: &Mutex<Vec<Conn>>, health: &AtomicU16) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    match read_request(&mut s) {
        Ok(mut m) => {
            let path = m.target().to_owned();
            let status = if path == "/health" {
                health.load(Ordering::Relaxed)
            } else if path.contains("/fail") {
                500
            } else {
                200
            };
            let cache = if path.starts_with("/cache/") {
                "cache-control: max-age=60\r\n"
            } else {
                ""
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n{cache}\r\nok"
            );
            // Anything more the proxy sends on this connection would be a second message.
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut more = [0u8; 4096];
            while let Ok(n) = s.read(&mut more) {
                if n == 0 {
                    break;
                }
                m.trailing.extend_from_slice(&more[..n]);
            }
            log.lock().unwrap().push(Conn::Message(m));
        }
        Err(bytes) => {
            if !bytes.is_empty() {
                log.lock().unwrap().push(Conn::Incomplete(bytes));
            }
        }
    }
}

/// One response as the client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Sends raw bytes on a new connection to the proxy; reads responses until the proxy closes
/// or nothing more comes for `quiet`.
fn raw(ns: &str, to: &str, bytes: &[u8], quiet: Duration) -> Vec<Response> {
    let to = addr(to);
    let bytes = bytes.to_vec();
    let received = run_in(ns, move || {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(quiet)).unwrap();
        let _ = s.write_all(&bytes);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    parse_responses(&received)
}

fn parse_responses(mut data: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let body_end = (end + 4 + len).min(data.len());
        let body = String::from_utf8_lossy(&data[end + 4..body_end]).into_owned();
        out.push(Response { status, head, body });
        data = &data[body_end..];
    }
    out
}

/// The proxy in front of the raw origin.
struct Hostile {
    w: World,
    proxy: ChildGuard,
    origin: Origin,
    _config: PathBuf,
}

impl Hostile {
    fn start(subnet: u8, body: &str) -> Self {
        let w = World::new(subnet, ORIGIN_BIN);
        let origin = Origin::start(&w.topo.srv_ns, RAW);
        let admin = w.dir.path().join("admin.sock");
        let config = w.write_config(
            "hostile.toml",
            &format!(
                "workers = 1\n[kernel]\nattach = \"none\"\n[admin]\nlisten = \"unix:{}\"\n{body}",
                admin.display()
            ),
        );
        let proxy = w.start_proxy(&config, &["--attach", "none"], &[], addr(PLAIN));
        origin.take();
        Self {
            w,
            proxy,
            origin,
            _config: config,
        }
    }

    fn ns(&self) -> &str {
        &self.w.topo.srv_ns
    }

    /// The Prometheus text from the admin socket.
    fn metrics(&self) -> String {
        let socket = self.w.dir.path().join("admin.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// One request (raw bytes) and its first response.
    fn one(&self, to: &str, bytes: &str) -> Response {
        let mut r = raw(self.ns(), to, bytes.as_bytes(), Duration::from_millis(400));
        assert!(
            !r.is_empty(),
            "no response to {bytes:?}\n{}",
            self.proxy.log()
        );
        r.remove(0)
    }

    fn get(&self, host: &str, target: &str, extra: &str) -> Response {
        self.one(
            PLAIN,
            &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"),
        )
    }

    /// Asserts the request was refused with `status` and that the origin saw nothing.
    #[track_caller]
    fn refused(&self, what: &str, r: &Response, status: u16) {
        assert_eq!(r.status, status, "{what}: {r:?}");
        let seen = self.origin.take();
        assert!(seen.is_empty(), "{what}: the origin saw {seen:?}");
    }

    /// Asserts the request was forwarded as exactly one message, and returns it.
    #[track_caller]
    fn forwarded(&self, what: &str, r: &Response) -> Received {
        assert_eq!(r.status, 200, "{what}: {r:?}\n{}", self.proxy.log());
        let mut seen = self.origin.take();
        assert_eq!(seen.len(), 1, "{what}: the origin saw {seen:?}");
        match seen.remove(0) {
            Conn::Message(m) => {
                assert!(
                    m.trailing.is_empty(),
                    "{what}: bytes after the message: {:?}",
                    String::from_utf8_lossy(&m.trailing)
                );
                m
            }
            Conn::Incomplete(b) => panic!(
                "{what}: the origin got an incomplete message: {:?}",
                String::from_utf8_lossy(&b)
            ),
        }
    }
}

const ROUTES: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[[listener]]
address = "127.0.0.1:8081"
escaped_slashes = "keep"

[[listener]]
address = "127.0.0.1:8082"
escaped_slashes = "decode"

[[route]]
host = "admin.test"
upstream = "raw"
auth = { type = "bearer", tokens = ["SECRET"] }

[[route]]
path = "/admin/"
upstream = "raw"
auth = { type = "bearer", tokens = ["SECRET"] }

[[route]]
path = "/raw/"
upstream = "raw"
forward_original_path = true

[[route]]
path = "/cache/"
upstream = "raw"
[route.cache]

[[route]]
host = "www.test"
upstream = "raw"

[[route]]
path = "/"
upstream = "raw"

[[ban]]
name = "deny-secret"
on = "deny-pattern"
path_regex = "^/secret"
threshold = 1000

[upstream.raw]
servers = ["127.0.0.1:9100"]
"#;

fn routes() -> String {
    ROUTES.replace("SECRET", SECRET_HASH)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the authority rules one after another (absolute form, Host, HTTP/1.0, HTTP/2) on one proxy"
)]
fn one_authority_per_request() {
    let t = Hostile::start(101, &routes());
    // Absolute form wins, and the upstream sees the authority that was routed.
    let r = t.one(
        PLAIN,
        "GET http://www.test/ HTTP/1.1\r\nHost: admin.test\r\n\r\n",
    );
    let m = t.forwarded("absolute form www.test, Host admin.test", &r);
    assert_eq!(m.headers("host"), ["www.test"]);
    assert_eq!(m.target(), "/");
    let r = t.one(
        PLAIN,
        "GET http://admin.test/ HTTP/1.1\r\nHost: www.test\r\n\r\n",
    );
    t.refused("absolute form admin.test, Host www.test", &r, 401);
    // The Host sent upstream is the canonical one (lowercase, no trailing dot), once.
    let r = t.get("WWW.Test.:8080", "/", "");
    let m = t.forwarded("mixed-case Host", &r);
    assert_eq!(m.headers("host"), ["www.test:8080"]);
    assert_eq!(
        m.header("x-forwarded-host").as_deref(),
        Some("www.test:8080")
    );
    for (what, req) in [
        (
            "two Host lines",
            "GET / HTTP/1.1\r\nHost: www.test\r\nHost: admin.test\r\n\r\n",
        ),
        (
            "Host with a space",
            "GET / HTTP/1.1\r\nHost: www.test x\r\n\r\n",
        ),
        (
            "Host with a path",
            "GET / HTTP/1.1\r\nHost: www.test/a\r\n\r\n",
        ),
        (
            "Host with user info",
            "GET / HTTP/1.1\r\nHost: evil@admin.test\r\n\r\n",
        ),
        (
            "Host with a bad port",
            "GET / HTTP/1.1\r\nHost: www.test:99999\r\n\r\n",
        ),
        ("empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n"),
        (
            "absolute form with user info",
            "GET http://evil@admin.test/ HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        ),
        (
            "absolute form without Host",
            "GET http://www.test/ HTTP/1.1\r\n\r\n",
        ),
        (
            "CONNECT",
            "CONNECT www.test:443 HTTP/1.1\r\nHost: www.test:443\r\n\r\n",
        ),
    ] {
        let r = t.one(PLAIN, req);
        let expect = if what == "CONNECT" { 405 } else { 400 };
        // hyper refuses some of these itself (400 too); either way nothing reaches the origin.
        t.refused(what, &r, expect);
    }
    // Connection cannot name the Host away: the upstream gets the one that was routed.
    let r = t.get("www.test", "/", "Connection: keep-alive, host\r\n");
    assert_eq!(
        t.forwarded("Connection: host", &r).headers("host"),
        ["www.test"]
    );
    // The refusal says what was wrong.
    let r = t.one(
        PLAIN,
        "GET / HTTP/1.1\r\nHost: www.test\r\nHost: admin.test\r\n\r\n",
    );
    assert!(r.body.contains("more than one Host header"), "{r:?}");
    t.origin.take();
    // HTTP/1.0 without Host: no authority, so only host-less routes; none is sent upstream.
    let r = t.one(PLAIN, "GET / HTTP/1.0\r\n\r\n");
    let m = t.forwarded("HTTP/1.0 without Host", &r);
    assert_eq!(
        m.headers("host"),
        [""],
        "an empty Host, as RFC 9112 3.2 asks: {m:?}"
    );
    assert!(m.headers("x-forwarded-host").is_empty(), "{m:?}");

    // HTTP/2: :authority wins, and a host header that disagrees is refused.
    let h2 = |authority: &str, host: Option<&str>| -> Option<u16> {
        let (authority, host) = (authority.to_owned(), host.map(str::to_owned));
        run_in(t.ns(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tcp = tokio::net::TcpStream::connect(addr(PLAIN)).await.ok()?;
                let (mut client, conn) = h2::client::handshake(tcp).await.ok()?;
                tokio::spawn(conn);
                let mut req = hyper::Request::get(format!("http://{authority}/"));
                if let Some(h) = host {
                    req = req.header("host", h);
                }
                let (resp, _) = client.send_request(req.body(()).ok()?, true).ok()?;
                let resp = tokio::time::timeout(Duration::from_secs(5), resp)
                    .await
                    .ok()?
                    .ok()?;
                Some(resp.status().as_u16())
            })
        })
    };
    assert_eq!(h2("www.test", Some("admin.test")), Some(400));
    assert_eq!(h2("admin.test", Some("www.test")), Some(400));
    assert!(
        t.origin.take().is_empty(),
        "h2 host and :authority disagreeing"
    );
    assert_eq!(h2("www.test", Some("www.test")), Some(200));
    let m = t.origin.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].headers("host"), ["www.test"]);
    assert_eq!(h2("admin.test", None), Some(401), "h2 :authority is routed");
    assert!(t.origin.take().is_empty());
}

#[test]
fn paths_are_normalised_before_routing_access_and_cache() {
    let t = Hostile::start(102, &routes());
    for spelling in [
        "//admin/x",
        "/%61dmin/x",
        "/x/../admin/x",
        "/./admin/x",
        "/%2e/admin/x",
        "/admin//x",
        "/a/%2E%2E/admin/x",
    ] {
        let r = t.get("other.test", spelling, "");
        t.refused(spelling, &r, 401);
        let r = t.get("other.test", spelling, "Authorization: Bearer secret\r\n");
        let m = t.forwarded(spelling, &r);
        assert_eq!(m.target(), "/admin/x", "{spelling}");
    }
    // Refused outright.
    for (spelling, why) in [
        ("/../x", "climbs above the root"),
        ("/a/%2e%2e/%2e%2e/x", "climbs above the root, encoded"),
        ("/a%00b", "encoded NUL"),
        ("/a%0d%0ab", "encoded CR LF"),
        ("/a%zzb", "invalid escape"),
        ("/a%2", "truncated escape"),
        ("/admin%2Fx", "encoded slash on a rejecting listener"),
        ("/admin%5cx", "encoded backslash on a rejecting listener"),
    ] {
        let r = t.get("other.test", spelling, "");
        t.refused(why, &r, 400);
    }
    // Encoded slashes where the listener keeps them: one opaque segment, still normalised
    // around it, and the auth route is not reached through it.
    let r = t.one(
        "127.0.0.1:8081",
        "GET /./a%2fb/../c HTTP/1.1\r\nHost: other.test\r\n\r\n",
    );
    assert_eq!(t.forwarded("keep", &r).target(), "/c");
    let r = t.one(
        "127.0.0.1:8081",
        "GET /x%2F..%2Fadmin/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    );
    assert_eq!(t.forwarded("keep", &r).target(), "/x%2F..%2Fadmin/x");
    // Where the listener decodes them, they are separators before dot segments resolve.
    let r = t.one(
        "127.0.0.1:8082",
        "GET /x%2F..%2Fadmin/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    );
    t.refused("decode: /x/../admin/x needs auth", &r, 401);
    // Path parameters: routes match without them (Java containers drop them), and a dot
    // segment with parameters is refused.
    let r = t.get("other.test", "/admin;x/secret", "");
    t.refused("/admin;x/secret takes the /admin/ route", &r, 401);
    let r = t.get("other.test", "/public/..;/admin/x", "");
    t.refused("..; segment", &r, 400);
    // Deny patterns see the normalised path.
    let r = t.get("other.test", "/%73ecret/x", "");
    t.refused("deny pattern through an escape", &r, 403);
    let r = t.get("other.test", "//secret", "");
    t.refused("deny pattern through a double slash", &r, 403);
    // The query is not touched.
    let r = t.get("other.test", "/q/./x?a=%2e%2e&b=/../", "");
    assert_eq!(t.forwarded("query", &r).target(), "/q/x?a=%2e%2e&b=/../");
    // A route that forwards the original target.
    let r = t.get("other.test", "/raw/./a/%7e/../b", "");
    assert_eq!(
        t.forwarded("forward_original_path", &r).target(),
        "/raw/./a/%7e/../b"
    );
    // The cache key holds a non-default port: a response to another port is not served.
    let r = t.get("other.test:6666", "/cache/port", "");
    t.forwarded("cache fill on port 6666", &r);
    let r = t.get("other.test", "/cache/port", "");
    t.forwarded("same path without the port goes to the origin", &r);
    // The cache key uses the normalised path: two spellings, one origin request.
    let r = t.get("other.test", "/cache/a", "");
    t.forwarded("cache fill", &r);
    for spelling in ["/cache/./a", "/cache//a", "/%63ache/a", "/cache/x/../a"] {
        let r = t.get("other.test", spelling, "");
        assert_eq!(r.status, 200, "{spelling}: {r:?}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("cache-status: proxy; hit"),
            "{spelling}: {}",
            r.head
        );
        assert!(t.origin.take().is_empty(), "{spelling} went to the origin");
    }
}

/// What must become of a request.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Refused with this status before anything reached the origin.
    Refused(u16),
    /// The head was fine and went upstream, the body was not: the client gets this status
    /// and the origin never gets a complete message.
    CutOff(u16),
    /// Forwarded as exactly one message, with one framing header and this body.
    Forwarded(&'static [u8]),
    /// Both `Transfer-Encoding: chunked` and `Content-Length`: the transfer coding wins, the
    /// length is dropped, one message with this body is forwarded and the client connection
    /// is closed after the response, so nothing after the chunked body is ever read as a
    /// request (RFC 9112 §6.3; hyper's parser does this before the proxy sees the request).
    ChunkedWins(&'static [u8]),
}

use Outcome::{ChunkedWins, CutOff, Forwarded, Refused};

/// A raw HTTP/1.1 request smuggling corpus, each case with its one outcome.
const SMUGGLING: &[(&str, &str, Outcome)] = &[
    (
        "CL.TE",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
        ChunkedWins(b""),
    ),
    (
        "TE.CL",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        ChunkedWins(b"SMUGGLED"),
    ),
    (
        "TE with a space before the colon",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "TE xchunked",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "TE chunked, identity",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "TE gzip (not chunked last)",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        Refused(400),
    ),
    (
        "TE in two lines",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "TE with a vertical tab",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "TE on HTTP/1.0",
        "POST / HTTP/1.0\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "two different Content-Length",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        Refused(400),
    ),
    (
        "Content-Length list that disagrees",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3, 4\r\n\r\nabcd",
        Refused(400),
    ),
    (
        "Content-Length with a sign",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: +3\r\n\r\nabc",
        Refused(400),
    ),
    (
        "Content-Length negative",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: -1\r\n\r\nabc",
        Refused(400),
    ),
    (
        "Content-Length in hex",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 0x3\r\n\r\nabc",
        Refused(400),
    ),
    (
        "Content-Length overflowing",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
        Refused(400),
    ),
    (
        "chunk size overflowing",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
        CutOff(400),
    ),
    (
        "chunk size with 0x",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        CutOff(400),
    ),
    (
        "chunk size negative",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        CutOff(400),
    ),
    (
        "chunk data longer than its size",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        CutOff(400),
    ),
    (
        "bare CR in a header value",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-A: a\rb\r\n\r\n",
        Refused(400),
    ),
    (
        "NUL in a header value",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-A: a\0b\r\n\r\n",
        Refused(400),
    ),
    (
        "space in a header name",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX A: b\r\n\r\n",
        Refused(400),
    ),
    (
        "obsolete line folding",
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-A: a\r\n b\r\n\r\n",
        Refused(400),
    ),
    (
        "request line with a tab",
        "GET\t/ HTTP/1.1\r\nHost: www.test\r\n\r\n",
        Refused(400),
    ),
    (
        "CL body with a pipelined request after it",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\nabcGET /admin/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
        Forwarded(b"abc"),
    ),
    (
        "chunked with an extension",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3;name=\"v;al\"\r\nabc\r\n0\r\n\r\n",
        Forwarded(b"abc"),
    ),
    (
        "chunked, TE in capitals",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Forwarded(b"abc"),
    ),
    (
        "bare LF line endings",
        "POST / HTTP/1.1\nHost: www.test\nContent-Length: 3\n\nabc",
        Forwarded(b"abc"),
    ),
    (
        "chunk size line ended by a bare LF",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        CutOff(400),
    ),
    (
        "equal Content-Length twice",
        "POST / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        Forwarded(b"abc"),
    ),
    (
        "chunked with a smuggled request in the body",
        "POST / HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n22\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n",
        Forwarded(b"GET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ),
];

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the HTTP/1.1 corpus, then the HTTP/2 cases, on one proxy; each outcome's checks inline"
)]
fn request_smuggling_corpus() {
    let t = Hostile::start(103, &routes());
    for (what, bytes, outcome) in SMUGGLING {
        let responses = raw(t.ns(), PLAIN, bytes.as_bytes(), Duration::from_millis(500));
        let Some(first) = responses.first() else {
            panic!("{what}: no response\n{}", t.proxy.log());
        };
        match *outcome {
            Refused(status) => t.refused(what, first, status),
            CutOff(status) => {
                assert_eq!(first.status, status, "{what}: {first:?}");
                let seen = t.origin.take();
                assert!(
                    seen.iter().all(|c| matches!(c, Conn::Incomplete(_))),
                    "{what}: the origin got a complete message: {seen:?}"
                );
            }
            ChunkedWins(body) => {
                let m = t.forwarded(what, first);
                assert_eq!(m.headers("transfer-encoding"), ["chunked"], "{what}: {m:?}");
                assert!(m.headers("content-length").is_empty(), "{what}: {m:?}");
                assert_eq!(m.body, body, "{what}");
                assert_eq!(responses.len(), 1, "{what}: {responses:?}");
                assert!(
                    first
                        .head
                        .to_ascii_lowercase()
                        .contains("connection: close"),
                    "{what}: the connection must close: {first:?}"
                );
            }
            Forwarded(body) => {
                let m = t.forwarded(what, first);
                let te = m.headers("transfer-encoding");
                let cl = m.headers("content-length");
                assert!(
                    te.len() + cl.len() == 1,
                    "{what}: one framing header, got TE {te:?} CL {cl:?}"
                );
                assert_eq!(
                    String::from_utf8_lossy(&m.body),
                    String::from_utf8_lossy(body),
                    "{what}"
                );
                // A request pipelined after the body is a request of its own, routed and
                // checked on its own (here: refused by the /admin/ route's auth).
                if what.contains("pipelined") {
                    assert_eq!(responses.len(), 2, "{what}: {responses:?}");
                    assert_eq!(responses[1].status, 401, "{what}: {responses:?}");
                } else {
                    assert_eq!(responses.len(), 1, "{what}: {responses:?}");
                }
            }
        }
    }
    // HTTP/2 to an HTTP/1.1 upstream: a content-length that the DATA frames contradict, and
    // values carrying CR/LF or pseudo-headers, never reach the origin.
    let h2_case = |headers: Vec<(&'static str, &'static [u8])>, data: &'static [u8]| {
        run_in(t.ns(), move || {
            let mut s = TcpStream::connect(addr(PLAIN)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(800)))
                .unwrap();
            s.write_all(&h2_request(&headers, data)).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        })
    };
    let base = || -> Vec<(&'static str, &'static [u8])> {
        vec![
            (":method", b"POST"),
            (":scheme", b"http"),
            (":path", b"/"),
            (":authority", b"www.test"),
        ]
    };
    let mut cl_mismatch = base();
    cl_mismatch.push(("content-length", b"3"));
    let mut crlf = base();
    crlf.push(("x-a", b"a\r\nx-injected: 1"));
    let mut lf = base();
    lf.push(("x-a", b"a\nx-injected: 1"));
    let mut pseudo_late = base();
    pseudo_late.insert(2, ("x-a", b"1"));
    let mut pseudo_unknown = base();
    pseudo_unknown.push((":x-injected", b"1"));
    let mut upper = base();
    upper.push(("X-Injected", b"1"));
    let mut te = base();
    te.push(("transfer-encoding", b"chunked"));
    let mut conn = base();
    conn.push(("connection", b"x-injected"));
    for (what, headers, data) in [
        (
            "h2 content-length 3 with 10 bytes of DATA",
            cl_mismatch,
            &b"0123456789"[..],
        ),
        ("h2 CR LF in a value", crlf, &b""[..]),
        ("h2 LF in a value", lf, &b""[..]),
        (
            "h2 pseudo-header after a regular one",
            pseudo_late,
            &b""[..],
        ),
        ("h2 unknown pseudo-header", pseudo_unknown, &b""[..]),
        ("h2 upper-case header name", upper, &b""[..]),
        ("h2 transfer-encoding", te, &b""[..]),
        ("h2 connection header", conn, &b""[..]),
    ] {
        let answer = h2_case(headers, data);
        assert!(
            !answer.is_empty(),
            "{what}: the connection gave nothing back"
        );
        let seen = t.origin.take();
        assert!(seen.is_empty(), "{what}: the origin saw {seen:?}");
    }
}

/// A client preface, an empty SETTINGS frame, and one request on stream 1: a HEADERS frame
/// whose header block is HPACK literals without indexing (any bytes, as a hostile client
/// would send them), then one DATA frame with `END_STREAM` when `data` is not empty.
fn h2_request(headers: &[(&str, &[u8])], data: &[u8]) -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap();
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 127);
        out.push(u8::try_from(s.len()).unwrap());
        out.extend_from_slice(s);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00);
        string(&mut block, name.as_bytes());
        string(&mut block, value);
    }
    let end_stream = u8::from(data.is_empty());
    frame(&mut out, 0x1, 0x4 | end_stream, 1, &block);
    if !data.is_empty() {
        frame(&mut out, 0x0, 0x1, 1, data);
    }
    out
}

#[test]
fn clients_cannot_get_a_server_ejected() {
    let body = r#"
[[listener]]
address = "127.0.0.1:8080"

[limits]
max_body_bytes = 1000
body_read_timeout = "1s"

[[route]]
path = "/"
upstream = "one"

[[route]]
path = "/fivexx/"
upstream = "counting"

[[route]]
path = "/pair/"
upstream = "pair"

[upstream.one]
servers = ["127.0.0.1:9100"]
passive = { consecutive_failures = 3 }

[upstream.counting]
servers = ["127.0.0.1:9100"]
passive = { consecutive_failures = 3, on_5xx = true }

[upstream.pair]
servers = ["127.0.0.1:9100", "127.0.0.1:9199"]
passive = { consecutive_failures = 2, max_ejection_percent = 50 }
"#;
    let t = Hostile::start(104, body);
    // An application answering 500 is a working server: its answers keep coming.
    for i in 0..10 {
        let r = t.get("www.test", "/fail", "");
        assert_eq!(r.status, 500, "500 number {i}: {r:?}");
    }
    t.origin.take();
    // Oversized and stalled bodies are the client's failures.
    for i in 0..5 {
        let big = "a".repeat(5000);
        let r = t.one(
            PLAIN,
            &format!(
                "POST /up HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                big.len()
            ),
        );
        assert_eq!(r.status, 413, "oversized chunked body {i}: {r:?}");
        let r = t.one(
            PLAIN,
            "POST /up HTTP/1.1\r\nHost: www.test\r\nContent-Length: 5000\r\n\r\nabc",
        );
        assert_eq!(r.status, 413, "declared oversized body {i}: {r:?}");
    }
    for i in 0..4 {
        let responses = raw(
            t.ns(),
            PLAIN,
            b"POST /up HTTP/1.1\r\nHost: www.test\r\nContent-Length: 100\r\n\r\nabc",
            Duration::from_secs(3),
        );
        assert_eq!(
            responses.first().map(|r| r.status),
            Some(408),
            "stalled body {i}: {responses:?}"
        );
    }
    t.origin.take();
    let r = t.get("www.test", "/ok", "");
    assert_eq!(r.status, 200, "the server is still in the pool: {r:?}");
    t.origin.take();
    // on_5xx counts 500s, but the pool's only server is never ejected.
    for i in 0..8 {
        let r = t.get("www.test", "/fivexx/fail", "");
        assert_eq!(r.status, 500, "on_5xx, answer {i}: {r:?}");
    }
    let r = t.get("www.test", "/fivexx/ok", "");
    assert_eq!(r.status, 200, "{r:?}");
    // Two servers, one dead (nothing listens on 9199): the dead one is ejected, the live one
    // never is, and every request succeeds (connect failures are retried elsewhere).
    for i in 0..10 {
        let r = t.get("www.test", "/pair/x", "");
        assert_eq!(r.status, 200, "pair request {i}: {r:?}");
    }
    t.origin.take();
    let metrics = t.metrics();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("proxy_upstream_ejections_refused_total{upstream=\"counting\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("proxy_upstream_server_up{upstream=\"one\",server=\"127.0.0.1:9100\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_pool_with_every_server_down_keeps_trying_them() {
    let body = r#"
[[listener]]
address = "127.0.0.1:8080"

[[route]]
path = "/"
upstream = "checked"

[upstream.checked]
servers = ["127.0.0.1:9100"]
health = { path = "/health", interval = "200ms", timeout = "1s", fall = 1, rise = 1 }
"#;
    let t = Hostile::start(105, body);
    let r = t.get("www.test", "/", "");
    t.forwarded("healthy", &r);
    t.origin.health.store(503, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..3 {
        let r = t.get("www.test", "/", "");
        t.forwarded(&format!("panic mode request {i}"), &r);
    }
    let metrics = t.metrics();
    assert!(
        metrics.contains("proxy_upstream_panic_total{upstream=\"checked\"} 3"),
        "{metrics}"
    );
    assert!(
        t.proxy.log().contains("panic mode"),
        "a log line says so:\n{}",
        t.proxy.log()
    );
    t.origin.health.store(200, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(800));
    let r = t.get("www.test", "/", "");
    t.forwarded("healthy again", &r);
    assert!(
        t.proxy.log().contains("panic mode over"),
        "{}",
        t.proxy.log()
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one trusted-proxy setup through limits, bans, blocks and the tracked-client bound, in order"
)]
fn limits_and_bans_hold_behind_a_trusted_proxy() {
    let body = r#"
[server]
trusted_proxies = ["127.0.0.0/8"]

[limits]
requests_per_second = 1
burst = 1
max_tracked_clients = 1024

[[listener]]
address = "127.0.0.1:8080"

[[listener]]
address = "127.0.0.1:8083"
proxy_protocol = true
proxy_protocol_from = ["127.0.0.0/8", "192.0.2.1/32"]

[[route]]
path = "/"
upstream = "raw"

[[route]]
path = "/denied/"
upstream = "raw"
allow = ["192.0.2.0/24"]

[[ban]]
name = "abuse"
on = "status"
statuses = ["403", "429"]
threshold = 2
window = "30s"
ttl = "10m"
prefix_v4 = 24

[upstream.raw]
servers = ["127.0.0.1:9100"]
"#;
    let t = Hostile::start(106, body);
    let from = |client: &str, path: &str| {
        t.get(
            "www.test",
            path,
            &format!("X-Forwarded-For: {client}\r\nConnection: close\r\n"),
        )
        .status
    };
    let listed = || t.w.cli_ok(&["blocklist", "list"]);
    let wait_listed = |cidr: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !listed().contains(cidr) {
            assert!(
                Instant::now() < deadline,
                "{cidr} not banned:\n{}\n{}",
                listed(),
                t.proxy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Two addresses of one IPv6 /64 are one client: one bucket.
    assert_eq!(from("2001:db8:0:1::1", "/a"), 200);
    assert_eq!(from("2001:db8:0:1::2", "/a"), 429);
    assert_eq!(from("2001:db8:0:2::1", "/a"), 200, "another /64");
    // A second offence bans the /64, and the client behind the proxy is refused in
    // userspace (the kernel only sees 127.0.0.1).
    assert_eq!(from("2001:db8:0:1::3", "/a"), 429);
    wait_listed("2001:db8:0:1::/64");
    assert_eq!(from("2001:db8:0:1::99", "/a"), 403);
    // IPv4-mapped IPv6 in X-Forwarded-For is the IPv4 client.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(from("::ffff:203.0.113.9", "/a"), 200);
    assert_eq!(from("203.0.113.9", "/a"), 429);
    assert_eq!(from("::ffff:203.0.113.9", "/a"), 429);
    wait_listed("203.0.113.0/24");
    // The trusted proxy itself answers to limits but is never banned, even when every one of
    // its requests is refused.
    for _ in 0..4 {
        let _ = t.get("www.test", "/a", "Connection: close\r\n");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!listed().contains("127.0.0."), "{}", listed());
    // A manual block is never weakened by an automatic ban of the same prefix.
    t.w.cli_ok(&[
        "blocklist",
        "add",
        "198.51.100.0/24",
        "--reason",
        "operator",
    ]);
    assert_eq!(from("198.51.100.7", "/a"), 403);
    assert_eq!(from("198.51.100.7", "/a"), 403);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.metrics().contains("proxy_bans_kept_stronger_total 1") {
        assert!(Instant::now() < deadline, "{}", t.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = listed()
        .lines()
        .find(|l| l.contains("198.51.100.0/24"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("manual") && line.contains("never") && !line.contains("l7-abuse"),
        "the manual block stays as it was: {line}"
    );
    // A blocked client behind a PROXY-protocol balancer is refused at the connection.
    let refused = raw(
        t.ns(),
        "127.0.0.1:8083",
        b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 8083\r\nGET /a HTTP/1.1\r\nHost: www.test\r\n\r\n",
        Duration::from_millis(500),
    );
    assert!(refused.is_empty(), "{refused:?}");
    let ok = raw(
        t.ns(),
        "127.0.0.1:8083",
        b"PROXY TCP4 198.18.0.9 127.0.0.1 40000 8083\r\nGET /a HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
        Duration::from_millis(500),
    );
    assert_eq!(ok.first().map(|r| r.status), Some(200), "{ok:?}");
    // A ban prefix (here /24) that would take in a PROXY sender (192.0.2.1) covers the
    // client's own address only.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(from("192.0.2.77", "/a"), 200);
    assert_eq!(from("192.0.2.77", "/a"), 429);
    assert_eq!(from("192.0.2.77", "/a"), 429);
    wait_listed("192.0.2.77/32");
    assert!(!listed().contains("192.0.2.0/24"), "{}", listed());
    // A flood of distinct clients stays within max_tracked_clients: entries are evicted and
    // counted, memory does not grow.
    let mut flood = String::new();
    for i in 0..1500u32 {
        let _ = write!(
            flood,
            "GET /denied/x HTTP/1.1\r\nHost: www.test\r\nX-Forwarded-For: 10.{}.{}.{}\r\n\r\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    let responses = raw(t.ns(), PLAIN, flood.as_bytes(), Duration::from_secs(2));
    assert_eq!(responses.len(), 1500);
    assert!(responses.iter().all(|r| r.status == 403));
    let metrics = t.metrics();
    for table in ["rate", "ban_windows"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "proxy_client_state_evictions_total{{table=\"{table}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("{metrics}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1500 - 1024 - 32 * 2, "{line}");
    }
}

/// Reads an HTTP response head byte by byte (the rest stays in the stream).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

const WS_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one proxy, then each kind of slow peer (HTTP/1.1, HTTP/2, WebSocket) in turn"
)]
fn slow_readers_and_tunnels_are_bounded() {
    let body = r#"
[server]
send_timeout = "1s"
tunnel_idle_timeout = "1500ms"

[limits]
connections_per_client = 2

[[listener]]
address = "127.0.0.1:8080"

[[route]]
path = "/"
upstream = "raw"

[[route]]
path = "/ws"
upstream = "demo"

[[route]]
path = "/cache/"
upstream = "demo"

[upstream.raw]
servers = ["127.0.0.1:9100"]

[upstream.demo]
servers = ["127.0.0.1:9000"]
"#;
    let t = Hostile::start(107, body);
    // A client that stops reading a large response is cut off after send_timeout.
    let (got, closed) = run_in(t.ns(), || {
        let mut s = TcpStream::connect(addr(PLAIN)).unwrap();
        s.write_all(b"GET /cache/big?size=33554432 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_secs(4));
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got += n,
                Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        };
        (got, closed)
    });
    assert!(closed, "the connection was not closed (read {got} bytes)");
    assert!(got < 32 << 20, "the whole response came through: {got}");
    assert!(
        t.metrics().contains("proxy_send_timeouts_total 1"),
        "{}",
        t.metrics()
    );

    // HTTP/2: a stream whose window the client keeps shut is reset after send_timeout; the
    // connection and its other streams go on.
    let (stalled, next) = run_in(t.ns(), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr(PLAIN)).await.unwrap();
            let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::get("http://a.test/cache/h2big?size=4000000")
                .body(())
                .unwrap();
            let (resp, _) = client.send_request(req, true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            // Never release flow-control capacity: the window stays shut after 64 KiB.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut got = 0usize;
            let stalled = loop {
                match tokio::time::timeout(Duration::from_secs(3), body.data()).await {
                    Ok(Some(Ok(chunk))) => got += chunk.len(),
                    Ok(Some(Err(e))) => break format!("reset after {got} bytes: {e}"),
                    Ok(None) => break format!("complete: {got} bytes"),
                    Err(_) => break format!("still open after {got} bytes"),
                }
            };
            let mut client = client.ready().await.unwrap();
            let req = hyper::Request::get("http://a.test/cache/h2small")
                .body(())
                .unwrap();
            let (resp, _) = client.send_request(req, true).unwrap();
            let next = resp.await.map(|r| r.status().as_u16());
            (stalled, next.map_err(|e| e.to_string()))
        })
    });
    assert!(stalled.starts_with("reset"), "{stalled}");
    assert_eq!(next, Ok(200), "the connection goes on");
    assert!(
        t.metrics().contains("proxy_send_timeouts_total 2"),
        "{}",
        t.metrics()
    );

    // A WebSocket tunnel keeps its place in the per-client connection limit, and closes when
    // idle for tunnel_idle_timeout.
    let ns = t.ns().to_owned();
    let (third_refused, after_idle) = run_in(&ns, || {
        let mut ws = TcpStream::connect(addr(PLAIN)).unwrap();
        ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ws.write_all(WS_REQUEST).unwrap();
        let head = read_head(&mut ws);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut second = TcpStream::connect(addr(PLAIN)).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        second
            .write_all(b"GET /cache/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        assert!(read_head(&mut second).starts_with("HTTP/1.1 200"));
        let mut third = TcpStream::connect(addr(PLAIN)).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = third.write_all(b"GET /cache/y HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let third_refused = read_head(&mut third).is_empty();
        // Idle past tunnel_idle_timeout: the proxy closes the tunnel.
        std::thread::sleep(Duration::from_millis(2500));
        let mut byte = [0u8; 1];
        let after_idle = ws.read(&mut byte);
        (third_refused, after_idle.map_err(|e| e.kind()))
    });
    assert!(third_refused, "a third connection got in beside the tunnel");
    assert!(
        matches!(after_idle, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the idle tunnel is still open: {after_idle:?}"
    );
    assert!(
        t.metrics().contains("proxy_tunnel_idle_closed_total 1"),
        "{}",
        t.metrics()
    );

    // Only the route's upgrade protocols pass: h2c goes upstream as a plain request...
    let r = t.get(
        "a.test",
        "/plain",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    );
    let m = t.forwarded("h2c upgrade", &r);
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(m.headers(name).is_empty(), "{name} went upstream: {m:?}");
    }
    // ...and an upstream that switches protocols unasked is refused.
    let r = t.one(
        PLAIN,
        "GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(r.status, 502, "{r:?}");
}

/// An argon2id hash with a cost high enough to time (hundreds of milliseconds per check).
fn slow_hash(password: &str) -> String {
    use argon2::{PasswordHasher, password_hash::SaltString};
    let params = argon2::Params::new(64 * 1024, 8, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            password.as_bytes(),
            &SaltString::encode_b64(b"fixed-test-salt!").unwrap(),
        )
        .unwrap()
        .to_string()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one route's password checks: cost, checks off the worker, reuse, then bans, in order"
)]
fn password_checks_never_stall_the_worker() {
    use base64::Engine;
    let body = format!(
        r#"
[server]
trusted_proxies = ["127.0.0.0/8"]

[[listener]]
address = "127.0.0.1:8080"

[[route]]
path = "/private/"
upstream = "raw"
auth = {{ type = "basic", users = {{ alice = "{}" }} }}

[[route]]
path = "/"
upstream = "raw"

[[ban]]
name = "guessers"
on = "status"
statuses = ["401"]
threshold = 3
window = "30s"
ttl = "1m"

[upstream.raw]
servers = ["127.0.0.1:9100"]
"#,
        slow_hash("right")
    );
    let t = Hostile::start(108, &body);
    let ns = t.ns().to_owned();
    let creds = |user: &str, pw: &str| {
        format!(
            "Authorization: Basic {}\r\nConnection: close\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    // Every request here closes its connection, so waiting long for quiet costs nothing.
    let send = |path: &str, extra: &str| {
        let r = raw(
            t.ns(),
            PLAIN,
            format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n").as_bytes(),
            Duration::from_secs(10),
        );
        r.first().map_or(0, |r| r.status)
    };
    let timed = |path: &str, extra: &str| {
        let start = Instant::now();
        let status = send(path, extra);
        (status, start.elapsed())
    };
    let (status, known) = timed("/private/x", &creds("alice", "wrong"));
    assert_eq!(status, 401);
    assert!(
        known > Duration::from_millis(80),
        "the hash is too cheap to time: {known:?}"
    );
    // An unknown user costs a check too (no user enumeration by timing).
    let (status, unknown) = timed("/private/x", &creds("mallory", "wrong"));
    assert_eq!(status, 401);
    assert!(
        unknown * 3 > known,
        "unknown user {unknown:?}, known user {known:?}"
    );
    t.origin.take();
    // Checks run off the worker: with four slow checks in flight on the one worker, another
    // request is answered at once.
    let guesses: Vec<_> = (0..4)
        .map(|_| {
            let extra = creds("alice", "wrong-again");
            let ns = ns.clone();
            std::thread::spawn(move || {
                raw(
                    &ns,
                    PLAIN,
                    format!("GET /private/y HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n").as_bytes(),
                    Duration::from_secs(10),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    let (status, open) = timed("/open", "Connection: close\r\n");
    assert_eq!(status, 200);
    assert!(
        open * 2 < known,
        "an open request waited {open:?} behind password checks of {known:?}"
    );
    for g in guesses {
        assert_eq!(g.join().unwrap()[0].status, 401);
    }
    // A success is reused for a while: the second request skips argon2.
    let (status, first) = timed("/private/x", &creds("alice", "right"));
    assert_eq!(status, 200);
    let (status, second) = timed("/private/x", &creds("alice", "right"));
    assert_eq!(status, 200);
    assert!(second * 2 < first, "first {first:?}, second {second:?}");
    t.origin.take();
    // Failed logins feed a [[ban]] rule like any other status.
    let guesser = |pw: &str| {
        send(
            "/private/x",
            &format!("{}X-Forwarded-For: 203.0.113.50\r\n", creds("alice", pw)),
        )
    };
    for pw in ["a", "b", "c"] {
        assert_eq!(guesser(pw), 401);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while guesser("right") != 403 {
        assert!(Instant::now() < deadline, "the guesser was not banned");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn files_in_the_daemons_directory_cannot_be_turned_against_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = World::new(109, ORIGIN_BIN);
    // Something root owns that the unprivileged user must never get: outside its directory.
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let untouched = |what: &str| {
        let meta = std::fs::metadata(&victim).unwrap();
        assert_eq!(
            (
                meta.uid(),
                std::fs::read_to_string(&victim).unwrap().as_str()
            ),
            (0, "precious"),
            "{what}: the file outside was changed"
        );
    };
    let admin = w.dir.path().join("admin.sock");
    let config = w.write_config(
        "files.toml",
        &format!(
            "user = \"nobody\"\nworkers = 1\n[kernel]\nattach = \"none\"\n[admin]\nlisten = \"unix:{}\"\n[[listener]]\naddress = \"127.0.0.1:8080\"\nupstream = \"o\"\n[upstream.o]\nservers = [\"127.0.0.1:9000\"]\n",
            admin.display()
        ),
    );
    let state = w.dir.path().join("state.json");
    // The user replaced the state file with a link before a restart: the start fails, saying
    // so, and neither reads, writes nor hands over what the link points to.
    std::os::unix::fs::symlink(&victim, &state).unwrap();
    let mut cmd = proxy_tests::netns::Topology::command_in(
        &w.topo.srv_ns,
        proxy_tests::process::proxy_bin().to_str().unwrap(),
    );
    cmd.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--attach",
        "none",
    ]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started over a planted link: {stderr}"
    );
    assert!(
        stderr.contains("state.json"),
        "the error names the file: {stderr}"
    );
    untouched("start over a linked state file");
    std::fs::remove_file(&state).unwrap();

    let proxy = w.start_proxy(&config, &["--attach", "none"], &[], addr(PLAIN));
    // The admin socket is its owner's only, the pins root's only.
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&admin), 0o600);
    let pins = proxy::kernel::pin_dir(&w.instance);
    assert_eq!(mode(&pins), 0o700);
    assert_eq!(mode(pins.parent().unwrap()), 0o700);
    // The lock file belongs to the daemon's user, 0600: another local user cannot hold it.
    let lock = w.dir.path().join("state.json.lock");
    assert_eq!(mode(&lock), 0o600);
    let other = std::process::Command::new("setpriv")
        .args(["--reuid=1", "--regid=1", "--clear-groups", "flock", "-n"])
        .arg(&lock)
        .arg("true")
        .output()
        .unwrap();
    assert!(
        !other.status.success(),
        "another user took the lock: {}",
        String::from_utf8_lossy(&other.stderr)
    );
    // Root's CLI writes through the user's directory: a link planted where the temporary
    // file used to go is not followed...
    std::os::unix::fs::symlink(&victim, w.dir.path().join("state.json.tmp")).unwrap();
    w.cli_ok(&["blocklist", "add", "192.0.2.9"]);
    untouched("CLI write next to a planted temporary link");
    assert!(w.cli_ok(&["blocklist", "list"]).contains("192.0.2.9/32"));
    // ...nor a lock file replaced by a link (the CLI refuses, naming it).
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let out = w.cli(&["blocklist", "add", "192.0.2.10"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("state.json.lock"), "{}", out.stderr);
    untouched("CLI lock through a planted link");
    drop(proxy);
}

#[test]
fn a_full_blocklist_map_is_never_silent() {
    let body = r#"
[server]
trusted_proxies = ["127.0.0.0/8"]

[limits]
requests_per_second = 1
burst = 1

[[listener]]
address = "127.0.0.1:8080"

[[route]]
path = "/"
upstream = "raw"

[[ban]]
name = "rate"
on = "status"
statuses = ["429"]
threshold = 1
ttl = "1m"

[upstream.raw]
servers = ["127.0.0.1:9100"]
"#;
    let t = Hostile::start(110, body);
    // Exactly as many IPv6 entries as the map holds.
    let max = proxy_common::BLOCK_V6_MAX;
    let mut list = String::with_capacity(max as usize * 24);
    for i in 0..max {
        let _ = writeln!(list, "2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff);
    }
    let file = t.w.dir.path().join("many.txt");
    std::fs::write(&file, list).unwrap();
    t.w.cli_ok(&["blocklist", "import", file.to_str().unwrap()]);
    // proxy stats prints its figures and fails, naming the full map.
    let out = t.w.cli(&["stats"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("blocklist_entries"), "{}", out.stdout);
    assert!(
        out.stderr.contains("IPv6 blocklist map (BLOCK_V6) is full"),
        "{}",
        out.stderr
    );
    let out = t.w.cli(&["stats", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(1), "{json}");
    // One more block fails with an error that names the map, and nothing is half-written.
    let out = t.w.cli(&["blocklist", "add", "2001:db8:ffff::1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("BLOCK_V6"), "{}", out.stderr);
    // An automatic ban that does not fit is logged and counted, never silent.
    for _ in 0..2 {
        let _ = t.get(
            "www.test",
            "/",
            "X-Forwarded-For: 2001:db9::7\r\nConnection: close\r\n",
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.metrics().contains("proxy_bans_failed_total 1") {
        assert!(Instant::now() < deadline, "{}", t.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t.proxy
            .log()
            .contains("ban failed, the client is NOT blocked"),
        "{}",
        t.proxy.log()
    );
}

#[test]
fn the_client_address_comes_from_the_configured_header_only() {
    let body = r#"
[server]
trusted_proxies = ["127.0.0.0/8"]
client_address_from = "forwarded"

[[listener]]
address = "127.0.0.1:8080"

[[route]]
path = "/"
upstream = "raw"
allow = ["192.0.2.0/24"]

[upstream.raw]
servers = ["127.0.0.1:9100"]
"#;
    let t = Hostile::start(111, body);
    // The balancer writes Forwarded: that client is let in.
    let r = t.get("www.test", "/", "Forwarded: for=\"192.0.2.5:4711\"\r\n");
    t.forwarded("Forwarded from the balancer", &r);
    // A client's own X-Forwarded-For names nobody.
    let r = t.get("www.test", "/", "X-Forwarded-For: 192.0.2.5\r\n");
    t.refused("X-Forwarded-For when Forwarded is configured", &r, 403);
}

#[test]
fn one_connection_served_by_both_http1_servers_reads_as_one() {
    // `server.http1 = "own"` serves requests without a body itself and hands a request with
    // one (and everything after it) to hyper's server with the bytes it read; "hyper" serves
    // all. A client must not tell them apart: same answers, same order, same upstream messages.
    for (subnet, http1) in [(111, "own"), (112, "hyper")] {
        let t = Hostile::start(
            subnet,
            &format!("[server]\nhttp1 = \"{http1}\"\n{}", routes()),
        );
        let rs = raw(
            t.ns(),
            PLAIN,
            b"GET /a HTTP/1.1\r\nHost: www.test\r\n\r\nGET /b HTTP/1.1\r\nHost: www.test\r\n\r\n\
              POST /c HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\nabc\
              GET /d HTTP/1.1\r\nHost: www.test\r\n\r\n",
            Duration::from_millis(800),
        );
        assert_eq!(
            rs.iter()
                .map(|r| (r.status, r.body.as_str()))
                .collect::<Vec<_>>(),
            [(200, "ok"); 4],
            "{http1}: {rs:?}\n{}",
            t.proxy.log()
        );
        for r in &rs {
            let head = r.head.to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{http1}: {head}");
            assert!(
                head.contains("\r\ndate: "),
                "{http1}: a Date, as hyper writes: {head}"
            );
            assert!(head.contains("\r\ncontent-length: 2"), "{http1}: {head}");
            assert!(
                !head.contains("\r\nconnection: close"),
                "{http1}: kept alive: {head}"
            );
        }
        let mut targets: Vec<(String, Vec<u8>)> = t
            .origin
            .take()
            .into_iter()
            .map(|c| match c {
                Conn::Message(m) => (m.target().to_owned(), m.body),
                Conn::Incomplete(b) => panic!("{http1}: incomplete {b:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                ("/a".to_owned(), vec![]),
                ("/b".to_owned(), vec![]),
                ("/c".to_owned(), b"abc".to_vec()),
                ("/d".to_owned(), vec![])
            ],
            "{http1}"
        );
        // HTTP/1.0 without keep-alive, and `Connection: close`: one answer, then the close
        // (the second request on the connection is never read).
        for (request, status_line) in [
            ("GET /e HTTP/1.0\r\nHost: www.test\r\n\r\n", "http/1.0 200"),
            (
                "GET /e HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
                "http/1.1 200",
            ),
        ] {
            let bytes = format!("{request}GET /f HTTP/1.1\r\nHost: www.test\r\n\r\n");
            let rs = raw(t.ns(), PLAIN, bytes.as_bytes(), Duration::from_millis(800));
            assert_eq!(rs.len(), 1, "{http1}: {request:?}: {rs:?}");
            let head = rs[0].head.to_ascii_lowercase();
            assert!(head.starts_with(status_line), "{http1}: {head}");
            if status_line.starts_with("http/1.1") {
                assert!(head.contains("\r\nconnection: close"), "{http1}: {head}");
            }
            assert_eq!(t.origin.take().len(), 1, "{http1}: only /e went upstream");
        }
        // HEAD: the length announced, no body.
        let rs = raw(
            t.ns(),
            PLAIN,
            b"HEAD /g HTTP/1.1\r\nHost: www.test\r\n\r\n",
            Duration::from_millis(800),
        );
        assert_eq!(rs.len(), 1, "{http1}: {rs:?}");
        assert!(
            rs[0]
                .head
                .to_ascii_lowercase()
                .contains("content-length: 2")
        );
        assert!(
            rs[0].body.is_empty(),
            "{http1}: no body after a HEAD answer"
        );
        let _ = t.origin.take();
        // A request the codec refuses is answered by hyper's server as before.
        let r = t.one(
            PLAIN,
            "GET / HTTP/1.1\r\nHost: www.test\r\nBad Header: x\r\n\r\n",
        );
        assert_eq!(r.status, 400, "{http1}: {r:?}");
    }
}
