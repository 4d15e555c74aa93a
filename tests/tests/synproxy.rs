//! The XDP SYN proxy end to end, in network namespaces: real clients get their responses
//! through it (IPv4 and IPv6), a spoofed SYN flood never reaches the listener's accept queue,
//! forged ACKs are dropped, and the stack side (nftables table, sysctls) is undone when the
//! proxy stops, `kill -9` included. One test at a time (they change netns-wide sysctls).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use proxy_tests::{
    client::get_in,
    harness::{ORIGIN, World},
    netns::{Topology, XdpReceiver, run_in},
    packet::{Segment, linux_syn_options},
    process::ChildGuard,
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const PORT: u16 = 8080;

struct Proxied {
    proxy: ChildGuard,
    /// Dropped after the proxy, before the namespaces.
    _receiver: XdpReceiver,
    w: World,
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Proxied {
    /// A world whose proxy listens on `[::]:8080` (dual-stack) with the SYN proxy, XDP on the
    /// server's veth. The client's veth runs an XDP program (a veth only takes the `XDP_TX`
    /// frames of its peer then).
    fn start(subnet: u8) -> Self {
        let w = World::new(subnet, ORIGIN_BIN);
        let receiver = XdpReceiver::attach(&w.topo.cli_ns, &w.topo.cli_if);
        let config = w.write_config(
            "synproxy.toml",
            &format!(
                r#"
workers = 2

[kernel]
attach = "xdp"
interfaces = ["{srv_if}"]

[[listener]]
address = "[::]:{PORT}"
upstream = "origin"
syn_proxy = true

[upstream.origin]
servers = ["{ORIGIN}"]
"#,
                srv_if = w.topo.srv_if,
            ),
        );
        let proxy = w.start_proxy(
            &config,
            &[],
            &[],
            SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
        );
        Self {
            proxy,
            _receiver: receiver,
            w,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.w.stats()["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("counter {name} in stats"))
    }

    fn table(&self) -> String {
        proxy::kernel::synproxy::table_name(&self.w.instance)
    }

    /// Whether the server namespace has the instance's nftables table.
    fn has_table(&self) -> bool {
        let mut nft = Topology::command_in(&self.w.topo.srv_ns, "nft");
        nft.args(["list", "tables"]);
        run_ok(nft).contains(&self.table())
    }

    fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run_in(&self.w.topo.srv_ns, move || {
            std::fs::read_to_string(&path).map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|e| panic!("read {key}: {e}"))
    }
}

/// Lines of `/proc/net/tcp{,6}` in the server namespace in state `state` (hex, `03` is `SYN_RECV`)
/// on the proxy's port.
fn sockets_in_state(ns: &str, state: &'static str) -> usize {
    run_in(ns, move || {
        let mut n = 0;
        for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            n += text
                .lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[3] == state && f[1].ends_with(&format!(":{PORT:04X}"))
                })
                .count();
        }
        n
    })
}

/// A `TcpExt` counter of the server namespace (`/proc/net/netstat`).
fn tcp_ext(ns: &str, name: &'static str) -> u64 {
    run_in(ns, move || {
        let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            if !names.starts_with("TcpExt:") {
                continue;
            }
            for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if k == name {
                    return v.parse().unwrap();
                }
            }
        }
        panic!("no TcpExt {name}")
    })
}

/// SYNs nftables' synproxy answered itself in the server namespace (`syn_received`, summed
/// over CPUs).
fn nft_synproxy_syns(ns: &str) -> u64 {
    run_in(ns, || {
        let text =
            std::fs::read_to_string("/proc/thread-self/net/stat/synproxy").unwrap_or_default();
        text.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|v| u64::from_str_radix(v, 16).ok())
            .sum()
    })
}

/// Sends IPv4 packets (headers included) from namespace `ns` through a raw socket.
fn send_raw_v4(ns: &str, packets: Vec<(Ipv4Addr, Vec<u8>)>) {
    run_in(ns, move || {
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        for (dst, p) in &packets {
            let addr = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap(),
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `p` and `addr` are valid for the call's lengths.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&raw const addr).cast(),
                    u32::try_from(size_of::<libc::sockaddr_in>()).unwrap(),
                )
            };
            assert!(rc >= 0, "sendto: {}", std::io::Error::last_os_error());
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
    });
}

#[test]
fn clients_get_responses_through_the_xdp_syn_proxy() {
    let p = Proxied::start(140);
    assert!(p.has_table(), "the nftables table is installed");
    assert_eq!(p.sysctl("net.netfilter.nf_conntrack_tcp_loose"), "0");
    let before_sent = p.counter("syn_cookies_sent");
    let before_valid = p.counter("syn_cookie_acks_valid");
    let ns = p.w.topo.cli_ns.clone();
    for addr in [
        SocketAddr::from((p.w.topo.srv_ip, PORT)),
        SocketAddr::from((p.w.topo.srv_ip6, PORT)),
    ] {
        for i in 0..10 {
            let reply = get_in(&ns, addr, "/", Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("request {i} to {addr}: {e}\n{}", p.proxy.log()));
            assert!(
                reply.head.starts_with("HTTP/1.1 200"),
                "{addr}: {}",
                reply.head
            );
        }
    }
    // Every handshake went through XDP (a cookie each) and nftables (the ACKs validated).
    assert!(p.counter("syn_cookies_sent") - before_sent >= 20);
    assert!(p.counter("syn_cookie_acks_valid") - before_valid >= 20);
    assert_eq!(
        tcp_ext(&p.w.topo.srv_ns, "SyncookiesSent"),
        0,
        "the kernel sent no cookie of its own"
    );
    // A larger response: the window after the zero-window SYN-ACK and the sequence
    // translation carry it whole.
    let big = get_in(
        &ns,
        SocketAddr::from((p.w.topo.srv_ip, PORT)),
        "/cache/big?size=300000",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(big.head.starts_with("HTTP/1.1 200"), "{}", big.head);
    assert_eq!(big.body.len(), 300_000);
}

#[test]
fn a_spoofed_syn_flood_never_reaches_the_accept_queue() {
    let p = Proxied::start(141);
    let srv = p.w.topo.srv_ns.clone();
    let overflows = tcp_ext(&srv, "ListenOverflows");
    let drops = tcp_ext(&srv, "ListenDrops");
    let before_sent = p.counter("syn_cookies_sent");
    let before_invalid = p.counter("syn_cookie_acks_invalid");
    let nft_before = nft_synproxy_syns(&srv);
    // 20 000 SYNs from random sources inside 10.251.0.0/16 (nowhere but these namespaces:
    // the SYN-ACKs reach the client namespace, which drops them), in bursts.
    let dst = p.w.topo.srv_ip;
    let mut seed: u32 = 0x1234_5678;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut packets = Vec::new();
    for _ in 0..20_000 {
        let r = next();
        let src = Ipv4Addr::from(0x0afb_0000 | (r & 0xffff));
        let syn = Segment {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            sport: 1024 + u16::try_from((r >> 16) % 60000).unwrap(),
            dport: PORT,
            seq: next(),
            ack: 0,
            flags: 0x02,
            options: linux_syn_options(next()),
            payload: Vec::new(),
        };
        packets.push((dst, syn.ip_packet()));
    }
    // And 1 000 ACKs with made-up cookies, from the same kind of sources.
    for _ in 0..1_000 {
        let r = next();
        let ack = Segment {
            src: IpAddr::V4(Ipv4Addr::from(0x0afb_0000 | (r & 0xffff))),
            dst: IpAddr::V4(dst),
            sport: 1024 + u16::try_from((r >> 16) % 60000).unwrap(),
            dport: PORT,
            seq: next(),
            ack: next(),
            flags: 0x10,
            options: Vec::new(),
            payload: Vec::new(),
        };
        packets.push((dst, ack.ip_packet()));
    }
    let started = Instant::now();
    send_raw_v4(&p.w.topo.cli_ns, packets);
    let sent_in = started.elapsed();
    // The listener saw none of it: no half-open connection, no queue overflow, no drop.
    assert_eq!(
        sockets_in_state(&srv, "03"),
        0,
        "SYN_RECV sockets on the port"
    );
    assert_eq!(tcp_ext(&srv, "ListenOverflows"), overflows);
    assert_eq!(tcp_ext(&srv, "ListenDrops"), drops);
    let sent = p.counter("syn_cookies_sent") - before_sent;
    let invalid = p.counter("syn_cookie_acks_invalid") - before_invalid;
    eprintln!(
        "flood of 21 000 packets sent in {sent_in:?}: {sent} cookies, {invalid} ACKs dropped"
    );
    assert!(
        sent >= 20_000,
        "every spoofed SYN was answered in XDP ({sent})"
    );
    assert_eq!(
        nft_synproxy_syns(&srv),
        nft_before,
        "nftables' synproxy answered none of them (XDP did)"
    );
    assert!(
        invalid >= 1_000,
        "every forged ACK was dropped in XDP ({invalid})"
    );
    // A real client right after.
    let reply = get_in(
        &p.w.topo.cli_ns,
        SocketAddr::from((p.w.topo.srv_ip, PORT)),
        "/",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(reply.head.starts_with("HTTP/1.1 200"), "{}", reply.head);
}

#[test]
fn the_stack_side_is_undone_on_stop_and_after_kill_9() {
    let mut p = Proxied::start(142);
    let (loose, timestamps) = (
        "net.netfilter.nf_conntrack_tcp_loose",
        "net.ipv4.tcp_timestamps",
    );
    assert!(p.has_table());
    assert_eq!(p.sysctl(loose), "0");
    assert_eq!(p.sysctl(timestamps), "1");
    assert_eq!(
        p.proxy.interrupt(Duration::from_secs(15)),
        Some(0),
        "{}",
        p.proxy.log()
    );
    assert!(!p.has_table(), "table removed at stop");
    assert_eq!(p.sysctl(loose), "1", "conntrack's default back");
    assert!(
        !proxy::kernel::synproxy::saved_file(&p.w.instance).exists(),
        "saved values removed once restored"
    );

    // Timestamps off before the start: set for the run, off again after a kill -9.
    let path = "/proc/sys/net/ipv4/tcp_timestamps";
    run_in(&p.w.topo.srv_ns, move || std::fs::write(path, "0")).unwrap();
    let config = p.w.dir.path().join("synproxy.toml");
    p.proxy = p.w.start_proxy(
        &config,
        &[],
        &[],
        SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
    );
    assert_eq!(p.sysctl(timestamps), "1");
    p.proxy.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.has_table() || p.sysctl(timestamps) != "0" {
        assert!(
            Instant::now() < deadline,
            "after kill -9: table present {}, tcp_timestamps {}",
            p.has_table(),
            p.sysctl(timestamps)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.sysctl(loose), "1");

    // The keeper killed with the daemon (as a service manager's kill of the whole unit does):
    // the next start, without syn_proxy, undoes what is left.
    p.proxy = p.w.start_proxy(
        &config,
        &[],
        &[],
        SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
    );
    let keeper = keeper_of(p.proxy.pid()).expect("the daemon's keeper process");
    // SAFETY: kill on the PID of the keeper this test's daemon started (its child).
    unsafe { libc::kill(keeper, libc::SIGKILL) };
    p.proxy.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.has_table(), "left behind by the killed keeper");
    assert_eq!(p.sysctl(timestamps), "1");
    let plain = p.w.write_config(
        "plain.toml",
        &std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .skip(2)
            .filter(|l| !l.contains("syn_proxy"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    p.proxy = p.w.start_proxy(
        &plain,
        &[],
        &[],
        SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
    );
    assert!(!p.has_table(), "leftover table removed at the next start");
    assert_eq!(p.sysctl(timestamps), "0", "saved value restored");
    assert_eq!(p.sysctl(loose), "1");
}

/// The keeper process (`proxy-synkeeper`) among the children of the daemon `pid`.
fn keeper_of(pid: i32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == "proxy-synkeeper" {
                return Some(child);
            }
        }
    }
    None
}
