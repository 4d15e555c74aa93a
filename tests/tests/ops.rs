//! Operating the proxy: Prometheus metrics that change with traffic, drops and bans; access log
//! lines (and reopening for rotation); the admin API's access control. In network namespaces.
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use proxy_tests::{
    client::get_in,
    harness::{ORIGIN, World},
    process::{ChildGuard, run},
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const PORT: u16 = 8080;

/// A minimal HTTP/1.1 exchange over a Unix socket or TCP; returns (status, body).
fn admin_request(
    stream: &mut dyn ReadWrite,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn unix_admin(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    admin_request(&mut s, method, path, None, body)
}

/// Parses the Prometheus text format into `name{labels}` -> value, checking every line.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            out.insert(series.to_owned(), v).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

struct Ops {
    w: World,
    proxy: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
}

impl Ops {
    fn start(subnet: u8, extra: &str) -> Self {
        let w = World::new(subnet, ORIGIN_BIN);
        let socket = w.dir.path().join("admin.sock");
        let log = w.dir.path().join("access.log");
        let config = w.write_config(
            "ops.toml",
            &format!(
                r#"
workers = 2

[kernel]
attach = "xdp"
interfaces = ["{iface}"]

[admin]
listen = "unix:{socket}"

[access_log]
format = "json"
path = "{log}"

[[listener]]
address = "0.0.0.0:{PORT}"
upstream = "origin"

[upstream.origin]
servers = ["{ORIGIN}"]

{extra}
"#,
                iface = w.topo.srv_if,
                socket = socket.display(),
                log = log.display(),
            ),
        );
        let ready: SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
        let proxy = w.start_proxy(&config, &[], &[], ready);
        Self {
            w,
            proxy,
            socket,
            log,
        }
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let (status, body) = unix_admin(&self.socket, "GET", "/metrics", "");
        assert_eq!(status, 200, "{body}");
        parse_metrics(&body)
    }

    fn client(&self, path: &str) -> std::io::Result<proxy_tests::client::Reply> {
        get_in(
            &self.w.topo.cli_ns,
            SocketAddr::new(self.w.topo.srv_ip.into(), PORT),
            path,
            Duration::from_secs(1),
        )
    }

    fn log_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e}"))
            })
            .collect()
    }
}

#[test]
#[expect(
    clippy::float_cmp,
    reason = "the metric deltas are small whole numbers, which f64 holds exactly"
)]
fn metrics_follow_requests_drops_and_bans() {
    let o = Ops::start(
        61,
        "[[ban]]\nname = \"probe\"\non = \"deny-pattern\"\npath_regex = \"^/admin.php\"\nttl = \"1m\"",
    );
    let before = o.metrics();
    for _ in 0..5 {
        assert_eq!(o.client("/").unwrap().status, 200);
    }
    assert_eq!(o.client("/status/503").unwrap().status, 503);
    let after = o.metrics();
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    // The readiness probe used loopback; these came from the client namespace.
    assert_eq!(delta("proxy_requests_total{class=\"2xx\"}"), 5.0);
    assert_eq!(delta("proxy_requests_total{class=\"5xx\"}"), 1.0);
    assert_eq!(
        delta(
            "proxy_route_requests_total{route=\"listener[0]\",upstream=\"origin\",class=\"2xx\"}"
        ),
        5.0
    );
    assert_eq!(
        delta(&format!(
            "proxy_upstream_responses_total{{upstream=\"origin\",server=\"{ORIGIN}\",class=\"5xx\"}}"
        )),
        1.0
    );
    assert_eq!(delta("proxy_request_duration_seconds_count"), 6.0);
    assert_eq!(
        after[&format!("proxy_upstream_server_up{{upstream=\"origin\",server=\"{ORIGIN}\"}}")],
        1.0
    );
    assert!(after.contains_key("proxy_worker_connections{worker=\"1\"}"));
    assert!(
        delta(&format!(
            "proxy_kernel_packets_total{{interface=\"{}\",outcome=\"seen\"}}",
            o.w.topo.srv_if
        )) > 0.0,
        "kernel counters did not move"
    );
    // A block through the admin API: the kernel drops, the drop counter moves.
    let client = o.w.topo.cli_ip.to_string();
    let (status, body) = unix_admin(
        &o.socket,
        "POST",
        "/blocklist",
        &format!("{{\"cidr\": \"{client}\", \"reason\": \"from the admin API\"}}"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(o.client("/").is_err(), "blocked client served");
    let iface = o.w.topo.srv_if.clone();
    assert!(
        o.metrics()[&format!(
            "proxy_kernel_packets_total{{interface=\"{iface}\",outcome=\"dropped_blocklist\"}}"
        )] > 0.0
    );
    // The CLI shows the same per interface.
    let stats = o.w.stats();
    assert!(
        stats["interfaces"][iface.as_str()]["packets_dropped_blocklist"]
            .as_u64()
            .unwrap()
            > 0,
        "{stats}"
    );
    let (status, list) = unix_admin(&o.socket, "GET", "/blocklist", "");
    assert!(
        status == 200 && list.contains("from the admin API"),
        "{list}"
    );
    let (status, body) = unix_admin(
        &o.socket,
        "DELETE",
        &format!("/blocklist?cidr={client}%2F32"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(o.client("/").unwrap().status, 200);
    // A ban.
    assert_eq!(o.client("/admin.php").unwrap().status, 403);
    let deadline = Instant::now() + Duration::from_secs(3);
    while o.metrics()["proxy_bans_total"] < 1.0 {
        assert!(Instant::now() < deadline, "proxy_bans_total did not move");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(o.metrics()["proxy_deny_pattern_refused_total"], 1.0);
    // Admin API errors are JSON with a status.
    let (status, body) = unix_admin(
        &o.socket,
        "POST",
        "/blocklist",
        "{\"cidr\": \"10.0.0.1/8\"}",
    );
    assert_eq!(status, 400);
    assert!(body.contains("host bits"), "{body}");
    let (status, _) = unix_admin(&o.socket, "GET", "/nope", "");
    assert_eq!(status, 404);
    let (status, body) = unix_admin(&o.socket, "GET", "/upstreams", "");
    assert!(status == 200 && body.contains("\"usable\":true"), "{body}");
    let (status, body) = unix_admin(&o.socket, "GET", "/readyz", "");
    assert!(
        status == 200 && body.contains("\"workers_alive\":2"),
        "{body}"
    );
}

#[test]
fn access_log_has_a_line_per_request_and_reopens_on_sigusr1() {
    let o = Ops::start(62, "");
    for path in ["/", "/echo?x=1", "/status/404"] {
        o.client(path).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let lines = loop {
        let lines: Vec<_> = Ops::log_lines(&o.log)
            .into_iter()
            .filter(|l| l["client"] == o.w.topo.cli_ip.to_string())
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1]["path"], "/echo?x=1");
    assert_eq!(lines[2]["status"], 404);
    for l in &lines {
        for key in [
            "time",
            "method",
            "host",
            "duration_ms",
            "upstream",
            "upstream_server",
            "request_id",
            "route",
        ] {
            assert!(!l[key].is_null(), "{key} missing in {l}");
        }
    }
    // Rotation: move the file away, SIGUSR1, new lines go to a new file at the old path.
    let rotated = o.log.with_extension("1");
    std::fs::rename(&o.log, &rotated).unwrap();
    let pid = child_pid(o.proxy.pid());
    // SAFETY: kill(2) on the proxy process this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(300));
    o.client("/after-rotation").unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !std::fs::read_to_string(&o.log)
        .unwrap_or_default()
        .contains("/after-rotation")
    {
        assert!(
            Instant::now() < deadline,
            "no line in the reopened log:\n{}",
            o.proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("/after-rotation")
    );
}

/// The proxy runs under `nsenter`, which execs it: same PID. (Kept as a function in case the
/// launcher changes.)
fn child_pid(pid: i32) -> i32 {
    pid
}

#[test]
fn the_admin_api_refuses_without_the_token_and_to_other_users() {
    let token = "admin-token-123";
    let digest = proxy::access::token_digest(token);
    let w = World::new(63, ORIGIN_BIN);
    let socket = w.dir.path().join("admin.sock");
    let config = w.write_config(
        "admin.toml",
        &format!(
            "workers = 1\n[kernel]\nattach = \"none\"\n[admin]\nlisten = \"127.0.0.1:9901\"\ntoken = \"{digest}\"\n[[listener]]\naddress = \"127.0.0.1:{PORT}\"\nupstream = \"o\"\n[upstream.o]\nservers = [\"{ORIGIN}\"]\n"
        ),
    );
    let _proxy = w.start_proxy(
        &config,
        &[],
        &[],
        format!("127.0.0.1:{PORT}").parse().unwrap(),
    );
    let tcp = |t: Option<&'static str>| {
        proxy_tests::netns::run_in(&w.topo.srv_ns, move || {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9901").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            admin_request(&mut s, "GET", "/healthz", t, "")
        })
    };
    assert_eq!(tcp(None).0, 401);
    assert_eq!(tcp(Some("wrong")).0, 401);
    assert_eq!(tcp(Some(token)).0, 200);
    drop(socket);

    // The default Unix socket is 0600: another user cannot connect.
    let o = Ops::start(64, "");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&o.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(&o.socket)
        .arg("http://admin/healthz"));
    assert_ne!(
        out.stdout.trim(),
        "200",
        "another user reached the admin API"
    );
    assert_eq!(
        unix_admin(&o.socket, "GET", "/healthz", "").0,
        200,
        "root can"
    );
    let (status, config) = unix_admin(&o.socket, "GET", "/config", "");
    assert!(status == 200 && config.contains("\"listener\""), "{config}");
}

#[test]
fn privileges_are_dropped_and_bans_still_reach_the_kernel() {
    let w = World::new(66, ORIGIN_BIN);
    let config = w.write_config(
        "priv.toml",
        &format!(
            r#"
user = "nobody"
workers = 2
[kernel]
attach = "xdp"
interfaces = ["{iface}"]
[admin]
listen = "unix:{socket}"
[access_log]
format = "json"
path = "{log}"
[[listener]]
address = "0.0.0.0:{PORT}"
upstream = "o"
[upstream.o]
servers = ["{ORIGIN}"]
[[ban]]
name = "probe"
on = "deny-pattern"
path_regex = "^/\\.env"
ttl = "1m"
"#,
            iface = w.topo.srv_if,
            socket = w.dir.path().join("admin.sock").display(),
            log = w.dir.path().join("access.log").display(),
        ),
    );
    let proxy = w.start_proxy(
        &config,
        &[],
        &[],
        format!("127.0.0.1:{PORT}").parse().unwrap(),
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), vec!["65534"; 4], "{status}");
    assert_eq!(field("Gid:")[0], "65534", "{status}");
    assert_eq!(
        field("CapEff:"),
        vec!["0000008000000000"],
        "only CAP_BPF is kept: {status}"
    );
    assert_eq!(field("CapPrm:"), vec!["0000008000000000"]);
    assert!(
        proxy.log().contains("privileges dropped"),
        "{}",
        proxy.log()
    );
    // Still serves, still bans through the kernel maps, still rewrites its state file.
    let addr = SocketAddr::new(w.topo.srv_ip.into(), PORT);
    assert_eq!(
        get_in(&w.topo.cli_ns, addr, "/", Duration::from_secs(1))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get_in(&w.topo.cli_ns, addr, "/.env", Duration::from_secs(1))
            .unwrap()
            .status,
        403
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while get_in(&w.topo.cli_ns, addr, "/", Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the ban did not reach the kernel:\n{}",
            proxy.log()
        );
    }
    let state = std::fs::read_to_string(w.dir.path().join("state.json")).unwrap();
    assert!(state.contains("auto-ban: probe"), "{state}");
    // The root CLI and the reload keep working.
    w.cli_ok(&["blocklist", "remove", &w.topo.cli_ip.to_string()]);
    assert_eq!(
        get_in(&w.topo.cli_ns, addr, "/", Duration::from_secs(1))
            .unwrap()
            .status,
        200
    );
    let out = w.cli(&["reload"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        unix_admin(&w.dir.path().join("admin.sock"), "GET", "/healthz", "").0,
        200
    );
}

#[test]
fn draining_a_server_through_the_admin_api() {
    let w = World::new(67, ORIGIN_BIN);
    let _o2 = w.spawn_origin(ORIGIN_BIN, "127.0.0.1:9002", "origin-2", &[]);
    let config = w.write_config(
        "drain.toml",
        &format!(
            "log_level = \"warn\"\nworkers = 1\n[kernel]\nattach = \"none\"\n[[listener]]\naddress = \"127.0.0.1:{PORT}\"\nupstream = \"app\"\n[upstream.app]\nservers = [\"{ORIGIN}\", \"127.0.0.1:9002\"]\n"
        ),
    );
    let proxy = w.start_proxy(
        &config,
        &[],
        &[],
        format!("127.0.0.1:{PORT}").parse().unwrap(),
    );
    let socket = PathBuf::from(format!("/run/proxy/{}.sock", w.instance));
    let addr: SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
    let origins = |n: usize| -> std::collections::HashSet<String> {
        (0..n)
            .map(|_| {
                get_in(&w.topo.srv_ns, addr, "/", Duration::from_secs(1))
                    .unwrap()
                    .head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-origin: ").map(str::to_owned))
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(origins(6).len(), 2);
    let (status, body) = unix_admin(&socket, "POST", "/upstreams/app/127.0.0.1:9002/drain", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        origins(10),
        ["origin-1".to_owned()].into(),
        "a drained server got requests"
    );
    let (_, ups) = unix_admin(&socket, "GET", "/upstreams", "");
    assert!(ups.contains("\"drained\":true"), "{ups}");
    assert_eq!(
        unix_admin(&socket, "POST", "/upstreams/app/127.0.0.1:9999/drain", "").0,
        404
    );
    assert_eq!(
        unix_admin(&socket, "POST", "/upstreams/app/127.0.0.1:9002/undrain", "").0,
        200
    );
    assert_eq!(origins(6).len(), 2);
    // log_level = "warn": no info lines.
    assert!(!proxy.log().contains(" INFO "), "{}", proxy.log());
}

/// utime + stime of a process, in clock ticks (100 per second).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_proxy_without_the_admin_api_does_no_work() {
    // Found by profiling the benchmark config (admin off): a closed reload channel made the
    // control loop reload the config in a busy loop. An idle proxy must stay idle.
    let w = World::new(68, ORIGIN_BIN);
    let config = w.write_config(
        "idle.toml",
        &format!(
            r#"
workers = 1

[kernel]
attach = "none"

[admin]
listen = "off"

[[listener]]
address = "0.0.0.0:{PORT}"
upstream = "origin"

[upstream.origin]
servers = ["{ORIGIN}"]
"#
        ),
    );
    let ready: SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
    let proxy = w.start_proxy(&config, &[], &[], ready);
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(child_pid(proxy.pid()));
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child_pid(proxy.pid())) - before;
    // Health checks and timers cost well under 1 % of a CPU; the busy loop cost 100 %.
    assert!(
        used <= 10,
        "an idle proxy used {used} ticks of CPU in 2 s:\n{}",
        proxy.log()
    );
    assert!(
        !proxy.log().contains("reloading"),
        "nothing asked for a reload:\n{}",
        proxy.log()
    );
}
