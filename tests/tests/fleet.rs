//! A fleet of three proxies sharing their lists through a real etcd (Debian's etcd-server,
//! started by the test): bans made on one node drop packets in the kernel of the others,
//! expire by etcd lease, are removed everywhere; etcd stopped and restarted while bans are
//! made; a node killed with `kill -9` catches up when it comes back.
//!
//! One server namespace holds etcd (127.0.0.1), the origin and the three nodes; each node
//! attaches its XDP program to its own veth, behind which one client namespace sits, so that
//! client k reaches node k through node k's kernel filter only.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use proxy_tests::{
    client::get_within_in,
    etcd::Etcd,
    harness::{ORIGIN, World},
    process::{ChildGuard, Output, run},
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");

struct Node {
    instance: String,
    config: PathBuf,
    port: u16,
    /// The client namespace behind this node's interface, and the addresses.
    client_ns: String,
    client_ip: std::net::Ipv4Addr,
    server_ip: std::net::Ipv4Addr,
    proxy: Option<ChildGuard>,
}

struct Fleet {
    w: World,
    etcd: Etcd,
    nodes: Vec<Node>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            drop(n.proxy.take());
            let _ = std::fs::remove_dir_all(proxy::kernel::pin_dir(&n.instance));
            let _ = std::fs::remove_file(proxy::daemon::runtime_file(&n.instance));
        }
    }
}

impl Fleet {
    fn start() -> Self {
        Self::start_on(170, false)
    }

    /// Three nodes on 10.250.<subnet>..<subnet+2>; with `tls`, etcd serves TLS only and
    /// wants a client certificate, which each node has (`ca`, `cert`, `key`).
    #[expect(
        clippy::too_many_lines,
        reason = "the namespaces, etcd, three configs and three starts, in order"
    )]
    fn start_on(subnet: u8, tls: bool) -> Self {
        let mut w = World::new(subnet, ORIGIN_BIN);
        w.topo.add_client(subnet + 1);
        w.topo.add_client(subnet + 2);
        let pki = tls.then(|| proxy_tests::http::TestPki::new(w.dir.path()));
        let etcd = match &pki {
            None => Etcd::start(&w.topo.srv_ns, w.dir.path()),
            Some(pki) => {
                let (cert, key) = pki.leaf(
                    w.dir.path(),
                    "etcd",
                    &["127.0.0.1", "127.0.0.2", "localhost"],
                );
                Etcd::start_tls(
                    &w.topo.srv_ns,
                    w.dir.path(),
                    proxy_tests::etcd::Tls {
                        cert,
                        key,
                        ca: pki.ca_pem.clone(),
                    },
                )
            }
        };
        let prefix = format!("/fleet-{}", w.instance);
        let mut clients = vec![(
            w.topo.cli_ns.clone(),
            w.topo.cli_ip,
            w.topo.srv_ip,
            w.topo.srv_if.clone(),
        )];
        for c in w.topo.second.iter().chain(&w.topo.more) {
            clients.push((c.ns.clone(), c.cli_ip, c.srv_ip, c.srv_if.clone()));
        }
        let mut nodes = Vec::new();
        for (i, (client_ns, client_ip, server_ip, iface)) in clients.into_iter().enumerate() {
            let k = i + 1;
            let instance = format!("{}-n{k}", w.instance);
            let port = 8080 + u16::try_from(k).unwrap();
            let config = w.dir.path().join(format!("n{k}.toml"));
            std::fs::write(
                &config,
                format!(
                    r#"
instance = "{instance}"
state_file = "{state}"
workers = 1

[kernel]
attach = "xdp"
interfaces = ["{iface}"]

[cache]
max_bytes = 16777216

[[listener]]
address = "0.0.0.0:{port}"

[[route]]
path = "/cache/"
upstream = "origin"
[route.cache]

[[route]]
path = "/"
upstream = "origin"

[upstream.origin]
servers = ["{ORIGIN}"]

[cluster]
endpoints = ["{endpoint}"]
prefix = "{prefix}"
node = "n{k}"
{tls}
"#,
                    tls = pki.as_ref().map_or_else(String::new, |pki| {
                        let (cert, key) =
                            pki.leaf(w.dir.path(), &format!("n{k}"), &[&format!("n{k}")]);
                        format!(
                            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
                            pki.ca_pem.display(),
                            cert.display(),
                            key.display()
                        )
                    }),
                    state = w.dir.path().join(format!("n{k}.json")).display(),
                    // Node 3 reaches etcd on another loopback address, so that it alone can be
                    // cut off.
                    endpoint = if k == 3 {
                        etcd.alt_endpoint()
                    } else {
                        etcd.endpoint()
                    },
                ),
            )
            .unwrap();
            nodes.push(Node {
                instance,
                config,
                port,
                client_ns,
                client_ip,
                server_ip,
                proxy: None,
            });
        }
        let mut f = Fleet { w, etcd, nodes };
        for i in 0..3 {
            f.start_node(i);
        }
        for i in 0..3 {
            f.wait_connected(i);
        }
        f
    }

    fn start_node(&mut self, i: usize) {
        let n = &self.nodes[i];
        let ready: SocketAddr = format!("127.0.0.1:{}", n.port).parse().unwrap();
        let proxy = self.w.start_proxy(&n.config, &[], &[], ready);
        self.nodes[i].proxy = Some(proxy);
    }

    fn cli(&self, i: usize, args: &[&str]) -> Output {
        run(
            std::process::Command::new(proxy_tests::process::proxy_bin())
                .args(args)
                .args(["--instance", &self.nodes[i].instance]),
        )
    }

    fn cli_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        assert_eq!(
            out.code,
            0,
            "node {}: proxy {args:?} failed: {}{}",
            i + 1,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    fn status(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(i, &["cluster", "status", "--json"])).unwrap()
    }

    fn log(&self, i: usize) -> String {
        self.nodes[i]
            .proxy
            .as_ref()
            .map(ChildGuard::log)
            .unwrap_or_default()
    }

    fn diagnosis(&self) -> String {
        let mut out = String::new();
        for i in 0..3 {
            let st = self.cli(i, &["cluster", "status"]);
            let list = self.cli(i, &["blocklist", "list"]);
            let _ = write!(
                out,
                "--- node {}\n{}{}{}{}\nlog:\n{}\n",
                i + 1,
                st.stdout,
                st.stderr,
                list.stdout,
                list.stderr,
                self.log(i)
            );
        }
        out + "--- etcd\n" + &self.etcd.log()
    }

    fn wait_connected(&self, i: usize) {
        self.wait(
            &format!("node {} connected", i + 1),
            Duration::from_secs(15),
            || self.status(i)["connected"] == serde_json::json!(true),
        );
    }

    fn wait(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < limit,
                "{what}: not after {limit:?}\n{}",
                self.diagnosis()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// Whether node `i`'s blocklist holds `cidr`, in its kernel map too.
    fn holds(&self, i: usize, cidr: &str) -> bool {
        let v: serde_json::Value =
            serde_json::from_str(&self.cli_ok(i, &["blocklist", "list", "--json"])).unwrap();
        v.as_array().into_iter().flatten().any(|e| {
            e["cidr"] == serde_json::json!(cidr) && e["in_kernel"] == serde_json::json!(true)
        })
    }

    /// A request from client k to node k (through node k's interface); `Ok(false)` when the
    /// connection or the response does not come (dropped).
    fn served(&self, k: usize) -> bool {
        let n = &self.nodes[k];
        let addr = SocketAddr::new(n.server_ip.into(), n.port);
        match get_within_in(&n.client_ns, addr, "/", Duration::from_millis(700)) {
            Ok(r) => {
                assert_eq!(r.status, 200, "{r:?}");
                true
            }
            Err(_) => false,
        }
    }

    /// `GET path` from client k through node k: the `Cache-Status` header and the body.
    fn cached(&self, k: usize, path: &str) -> (String, String) {
        let n = &self.nodes[k];
        let addr = SocketAddr::new(n.server_ip.into(), n.port);
        let r = get_within_in(&n.client_ns, addr, path, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("client {}: {e}\n{}", k + 1, self.diagnosis()));
        assert_eq!(r.status, 200, "{r:?}");
        (r.header("cache-status").unwrap_or_default(), r.body)
    }

    /// Runs an nftables script in the server namespace.
    fn nft(&self, script: &str) {
        let mut child = proxy_tests::netns::Topology::command_in(&self.w.topo.srv_ns, "nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), script.as_bytes())
            .expect("write the nft script");
        drop(child.stdin.take());
        assert!(child.wait().expect("nft").success(), "nft failed: {script}");
    }

    fn dropped_blocklist(&self, i: usize) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.cli_ok(i, &["stats", "--json"])).unwrap();
        v["counters"]["packets_dropped_blocklist"].as_u64().unwrap()
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one fleet, one scenario after another on the state the last left"
)]
fn bans_reach_every_node_expire_by_lease_and_survive_etcd_and_node_restarts() {
    let mut f = Fleet::start();
    let c2 = format!("{}/32", f.nodes[1].client_ip);
    let c3 = format!("{}/32", f.nodes[2].client_ip);
    for k in 0..3 {
        assert!(
            f.served(k),
            "client {} before any ban\n{}",
            k + 1,
            f.diagnosis()
        );
    }
    f.wait("every node seen by node 1", Duration::from_secs(10), || {
        f.status(0)["nodes"].as_array().unwrap().len() == 3
    });

    // A purge on node 2 empties node 1's and node 3's caches for that URL (and no other).
    let (page, other) = ("/cache/fleet?cc=max-age=600", "/cache/other?cc=max-age=600");
    for k in [0, 2] {
        f.cached(k, page);
        f.cached(k, other);
        assert!(f.cached(k, page).0.contains("hit"), "node {} caches", k + 1);
    }
    f.cli_ok(
        1,
        &["cache", "purge", &format!("http://test.example{page}")],
    );
    for k in [0, 2] {
        f.wait(
            &format!("node 2's purge on node {}", k + 1),
            Duration::from_secs(5),
            || !f.cached(k, page).0.contains("hit"),
        );
        assert!(
            f.cached(k, other).0.contains("hit"),
            "node {}: another URL was purged too",
            k + 1
        );
    }

    // A ban on node 1 drops client 2's packets in node 2's kernel, and node 3 holds it.
    f.cli_ok(
        0,
        &[
            "blocklist",
            "add",
            &c2,
            "--ttl",
            "10m",
            "--reason",
            "from node 1",
        ],
    );
    let took = f.wait(
        "node 1's ban on node 2 and 3",
        Duration::from_secs(5),
        || f.holds(1, &c2) && f.holds(2, &c2),
    );
    eprintln!("ban propagated to both other nodes in {took:?}");
    let before = f.dropped_blocklist(1);
    assert!(
        !f.served(1),
        "client 2 still served by node 2\n{}",
        f.diagnosis()
    );
    assert!(
        f.dropped_blocklist(1) > before,
        "node 2's kernel dropped nothing"
    );
    assert!(f.served(2), "client 3 is not banned");
    let list = f.cli_ok(2, &["blocklist", "list", "--json"]);
    assert!(list.contains("from node 1"), "{list}");

    // Removal on node 3 reaches node 2: client 2 is served again.
    f.cli_ok(2, &["blocklist", "remove", &c2]);
    f.wait(
        "the removal on node 1 and 2",
        Duration::from_secs(5),
        || !f.holds(0, &c2) && !f.holds(1, &c2),
    );
    f.wait("client 2 served again", Duration::from_secs(5), || {
        f.served(1)
    });

    // A ban with a 3 s TTL on node 2 expires everywhere: etcd's lease removes the key.
    f.cli_ok(1, &["blocklist", "add", &c3, "--ttl", "3s"]);
    f.wait("the short ban on node 3", Duration::from_secs(5), || {
        f.holds(2, &c3)
    });
    assert!(!f.served(2), "client 3 is banned on node 3");
    f.wait(
        "the short ban's expiry on node 1 and 3",
        Duration::from_secs(12),
        || !f.holds(0, &c3) && !f.holds(2, &c3),
    );
    f.wait("client 3 served again", Duration::from_secs(5), || {
        f.served(2)
    });

    // etcd goes away: nodes keep serving and filtering; a ban made on node 1 meanwhile is
    // queued, and reaches node 3 once etcd is back.
    f.etcd.stop();
    f.wait(
        "node 1 notices etcd is gone",
        Duration::from_secs(20),
        || f.status(0)["connected"] == serde_json::json!(false),
    );
    f.cli_ok(0, &["blocklist", "add", &c3, "--ttl", "10m"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!f.holds(2, &c3), "reached node 3 without etcd?");
    assert!(f.served(2), "node 3 serves while etcd is down");
    let ready: serde_json::Value =
        serde_json::from_str(&f.cli_ok(0, &["cluster", "status", "--json"])).unwrap();
    assert!(ready["last_error"].is_string(), "{ready}");
    f.etcd.restart();
    let took = f.wait(
        "the queued ban on node 3 after etcd's return",
        Duration::from_secs(20),
        || f.holds(2, &c3),
    );
    eprintln!("queued ban reached node 3 {took:?} after etcd answered again");
    assert!(!f.served(2), "client 3 is banned on node 3 now");
    for i in 0..3 {
        f.wait_connected(i);
    }

    // Node 2 killed with kill -9; meanwhile node 1 bans client 2 and node 3 lifts client 3's
    // ban. Node 2 restarted catches up on both.
    f.nodes[1].proxy.as_mut().unwrap().kill9();
    f.cli_ok(0, &["blocklist", "add", &c2, "--ttl", "10m"]);
    f.cli_ok(2, &["blocklist", "remove", &c3]);
    f.wait("node 1 sees the removal", Duration::from_secs(5), || {
        !f.holds(0, &c3)
    });
    f.start_node(1);
    f.wait(
        "node 2 caught up after kill -9",
        Duration::from_secs(15),
        || f.holds(1, &c2) && !f.holds(1, &c3),
    );
    assert!(!f.served(1), "client 2 banned on node 2 after its restart");
    let st = f.status(1);
    assert_eq!(st["connected"], serde_json::json!(true), "{st}");
    assert_eq!(st["pending"], serde_json::json!(0), "{st}");

    // Node 3 cut off from etcd (nftables drops what it sends there) and healed: what each side
    // did meanwhile reaches the other.
    let c1 = format!("{}/32", f.nodes[0].client_ip);
    f.wait(
        "node 3 holds node 1's ban before the cut",
        Duration::from_secs(5),
        || f.holds(2, &c2),
    );
    f.nft(&format!(
        "add table inet pxcut\nadd chain inet pxcut out {{ type filter hook output priority 0 ; }}\n\
         add rule inet pxcut out ip daddr 127.0.0.2 tcp dport {} drop\n",
        f.etcd.client_port()
    ));
    f.wait(
        "node 3 notices it is cut off",
        Duration::from_secs(30),
        || f.status(2)["connected"] == serde_json::json!(false),
    );
    f.cli_ok(2, &["blocklist", "add", &c1, "--ttl", "10m"]);
    f.cli_ok(0, &["blocklist", "remove", &c2]);
    f.wait(
        "node 3 counts its change as pending",
        Duration::from_secs(15),
        || f.status(2)["pending"].as_u64().unwrap_or(0) >= 1,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !f.holds(0, &c1) && f.holds(2, &c2),
        "a change crossed the cut\n{}",
        f.diagnosis()
    );
    f.nft("delete table inet pxcut\n");
    f.wait(
        "both sides' changes after healing",
        Duration::from_secs(30),
        || f.holds(0, &c1) && f.holds(1, &c1) && !f.holds(2, &c2),
    );
    f.wait_connected(2);
    assert_eq!(f.status(2)["pending"], serde_json::json!(0));
}

/// TLS to etcd with client certificates (`[cluster] ca`, `cert`, `key`): the nodes connect
/// and a ban made on one reaches the others' kernels.
#[test]
fn the_fleet_over_tls_with_client_certificates() {
    let f = Fleet::start_on(175, true);
    let c2 = format!("{}/32", f.nodes[1].client_ip);
    f.cli_ok(0, &["blocklist", "add", &c2, "--ttl", "10m"]);
    f.wait(
        "node 1's ban on node 2 and 3 over TLS",
        Duration::from_secs(5),
        || f.holds(1, &c2) && f.holds(2, &c2),
    );
    assert!(
        !f.served(1),
        "client 2 still served by node 2\n{}",
        f.diagnosis()
    );
    let st = f.status(2);
    assert!(
        st["endpoints"][0].as_str().unwrap().starts_with("https://"),
        "{st}"
    );
}
