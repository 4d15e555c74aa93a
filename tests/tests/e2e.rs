//! End to end, in network namespaces the test makes: a client namespace sends HTTP through the
//! real proxy binary to a real origin; `proxy blocklist` changes what the kernel drops while the
//! proxy runs; the lists survive a kill -9 and a restart. Run one at a time (`--test-threads=1`):
//! the tests attach programs and pin maps.
use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use proxy_tests::{
    client::{Reply, get_in},
    harness::{self, ORIGIN},
    process::{ChildGuard, run},
};

const PORT: u16 = 8080;

/// The harness world plus this file's config: a listener on the veth address (v4 and v6) and
/// on the namespace's loopback (for readiness checks the filter does not see).
struct World {
    w: harness::World,
    config: PathBuf,
}

impl std::ops::Deref for World {
    type Target = harness::World;
    fn deref(&self) -> &harness::World {
        &self.w
    }
}

impl World {
    fn new(subnet: u8, attach: &str) -> Self {
        let w = harness::World::new(subnet, env!("CARGO_BIN_EXE_demo-origin"));
        let config = w.write_config(
            "proxy.toml",
            &format!(
                r#"
[kernel]
attach = "{attach}"
interfaces = ["{iface}"]

[[listener]]
address = "{v4}:{PORT}"
upstream = "origin"

[[listener]]
address = "[{v6}]:{PORT}"
upstream = "origin"

[[listener]]
address = "127.0.0.1:{PORT}"
upstream = "origin"

[upstream.origin]
servers = ["{ORIGIN}"]
"#,
                iface = w.topo.srv_if,
                v4 = w.topo.srv_ip,
                v6 = w.topo.srv_ip6,
            ),
        );
        Self { w, config }
    }

    fn start_proxy(&self, extra: &[&str]) -> ChildGuard {
        let ready: SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
        self.w.start_proxy(&self.config, extra, &[], ready)
    }

    /// A request on a new connection from the client namespace, over IPv4 or IPv6.
    fn request(&self, v6: bool, path: &str) -> std::io::Result<Reply> {
        let ip: IpAddr = if v6 {
            self.topo.srv_ip6.into()
        } else {
            self.topo.srv_ip.into()
        };
        get_in(
            &self.topo.cli_ns,
            SocketAddr::new(ip, PORT),
            path,
            Duration::from_secs(1),
        )
    }

    fn expect_ok(&self, v6: bool) -> Reply {
        let r = self
            .request(v6, "/")
            .unwrap_or_else(|e| panic!("request (v6={v6}) failed: {e}"));
        assert_eq!(r.status, 200, "{r:?}");
        r
    }

    /// The kernel drops the SYN: the connect times out (no reset, no answer).
    fn expect_dropped(&self, v6: bool) {
        match self.request(v6, "/") {
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("expected the connection to be dropped (v6={v6}), got {other:?}"),
        }
    }

    fn xdp_attached(&self) -> bool {
        let out = run(Command::new("ip").args([
            "-n",
            &self.topo.srv_ns,
            "link",
            "show",
            "dev",
            &self.topo.srv_if,
        ]));
        out.stdout.contains("xdp")
    }
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// The whole blocklist life cycle against one attach mode.
fn blocklist_life_cycle(subnet: u8, attach: &str) {
    let w = World::new(subnet, attach);
    let mut proxy = w.start_proxy(&["--attach", attach]);
    let cli_v4 = w.topo.cli_ip.to_string();

    // Forwarding works, with X-Forwarded-For and hop-by-hop headers stripped.
    let r = w.expect_ok(false);
    assert!(r.body.contains("Hello from origin-1"), "{r:?}");
    assert!(
        r.header("x-origin-private").is_none(),
        "Connection-named header leaked: {r:?}"
    );
    let echo = w.request(false, "/echo").unwrap();
    assert!(
        echo.body.contains(&format!("x-forwarded-for: {cli_v4}")),
        "{}",
        echo.body
    );
    w.expect_ok(true);

    // Block the client: new connections are dropped in the kernel, at once.
    let out = w.cli_ok(&["blocklist", "add", &cli_v4, "--reason", "e2e test"]);
    assert!(out.contains(&format!("blocked {cli_v4}/32")), "{out}");
    let dropped_before = counter(&w.stats(), "packets_dropped_blocklist");
    w.expect_dropped(false);
    w.expect_ok(true); // IPv6 from the same client is another source
    assert!(
        counter(&w.stats(), "packets_dropped_blocklist") > dropped_before,
        "stats show no drops"
    );
    let list = w.cli_ok(&["blocklist", "list"]);
    assert!(
        list.contains(&format!("{cli_v4}/32")) && list.contains("e2e test"),
        "{list}"
    );

    // Remove: traffic flows again.
    w.cli_ok(&["blocklist", "remove", &cli_v4]);
    w.expect_ok(false);

    // IPv6 prefix blocking.
    let v6_prefix = proxy::defense::Cidr::new_truncating(w.topo.cli_ip6.into(), 64).to_string();
    w.cli_ok(&["blocklist", "add", &v6_prefix]);
    w.expect_dropped(true);
    w.expect_ok(false);
    w.cli_ok(&["blocklist", "remove", &v6_prefix]);
    w.expect_ok(true);

    // A TTL entry expires by itself: in the kernel at once, and the sweep removes it.
    let added = Instant::now();
    w.cli_ok(&["blocklist", "add", &cli_v4, "--ttl", "2s"]);
    w.expect_dropped(false);
    loop {
        if w.request(false, "/").is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(8),
            "TTL entry did not expire"
        );
    }
    assert!(
        added.elapsed() >= Duration::from_millis(1500),
        "TTL entry expired early: {:?}",
        added.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.cli_ok(&["blocklist", "list", "--json"]).trim() != "[]" {
        assert!(
            Instant::now() < deadline,
            "sweep did not remove the expired entry"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // kill -9, restart: the list is still there and enforced.
    w.cli_ok(&["blocklist", "add", &cli_v4, "--reason", "survives restarts"]);
    proxy.kill9();
    let proxy2 = w.start_proxy(&["--attach", attach]);
    let list = w.cli_ok(&["blocklist", "list"]);
    assert!(list.contains("survives restarts"), "{list}");
    w.expect_dropped(false);
    w.cli_ok(&["blocklist", "remove", &cli_v4]);
    w.expect_ok(false);

    // A graceful stop detaches the programs.
    let mut proxy2 = proxy2;
    assert_eq!(
        proxy2.interrupt(Duration::from_secs(15)),
        Some(0),
        "proxy did not stop cleanly:\n{}",
        proxy2.log()
    );
    assert!(!w.xdp_attached(), "XDP still attached after stop");
}

#[test]
fn blocklist_with_native_xdp() {
    blocklist_life_cycle(11, "xdp");
}

#[test]
fn blocklist_with_tc() {
    blocklist_life_cycle(12, "tc");
}

#[test]
fn auto_attach_picks_native_xdp_on_veth() {
    let w = World::new(13, "auto");
    let proxy = w.start_proxy(&[]);
    assert!(
        w.xdp_attached(),
        "no XDP program on the veth:\n{}",
        proxy.log()
    );
    assert!(proxy.log().contains("xdp (native)"), "{}", proxy.log());
}

#[test]
fn userspace_only_mode_refuses_blocked_clients_at_accept() {
    let w = World::new(14, "none");
    let _proxy = w.start_proxy(&["--attach", "none"]);
    assert!(!w.xdp_attached());
    w.expect_ok(false);
    w.cli_ok(&["blocklist", "add", &w.topo.cli_ip.to_string()]);
    // The handshake completes (no kernel filter), then the proxy closes the connection unserved.
    let r = w.request(false, "/");
    assert!(r.is_err(), "blocked client was served: {r:?}");
    w.cli_ok(&["allowlist", "add", &w.topo.cli_ip.to_string()]);
    w.expect_ok(false); // the allowlist wins over the blocklist
}

#[test]
fn allowlist_overrides_the_blocklist_in_the_kernel() {
    let w = World::new(15, "xdp");
    let _proxy = w.start_proxy(&[]);
    let subnet = proxy::defense::Cidr::new_truncating(w.topo.cli_ip.into(), 24).to_string();
    w.cli_ok(&["blocklist", "add", &subnet]);
    w.expect_dropped(false);
    w.cli_ok(&[
        "allowlist",
        "add",
        &w.topo.cli_ip.to_string(),
        "--reason",
        "monitoring",
    ]);
    let passed_before = counter(&w.stats(), "packets_passed_allowlist");
    w.expect_ok(false);
    assert!(counter(&w.stats(), "packets_passed_allowlist") > passed_before);
    let list = w.cli_ok(&["allowlist", "list", "--json"]);
    assert!(list.contains("monitoring"), "{list}");
    w.cli_ok(&["allowlist", "remove", &w.topo.cli_ip.to_string()]);
    w.expect_dropped(false);
}

#[test]
fn keep_kernel_state_keeps_dropping_while_the_daemon_is_down() {
    let w = World::new(16, "xdp");
    let mut proxy = w.start_proxy(&["--keep-kernel-state"]);
    let client = w.topo.cli_ip.to_string();
    w.cli_ok(&["blocklist", "add", &client]);
    w.expect_dropped(false);
    assert_eq!(
        proxy.interrupt(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("stays attached after exit"),
        "{}",
        proxy.log()
    );
    // Daemon down: the filter is still attached and still drops the blocked client (without
    // it, the SYN would be answered with a reset, nobody listening).
    assert!(w.xdp_attached(), "the filter was detached");
    w.expect_dropped(false);
    // The next run takes the kept filter over; stopping normally detaches it.
    let mut proxy2 = w.start_proxy(&[]);
    assert!(
        proxy2.log().contains("took over the packet filter"),
        "{}",
        proxy2.log()
    );
    w.expect_dropped(false);
    w.cli_ok(&["blocklist", "remove", &client]);
    w.expect_ok(false);
    assert_eq!(proxy2.interrupt(Duration::from_secs(15)), Some(0));
    assert!(!w.xdp_attached(), "XDP still attached after a normal stop");
}
