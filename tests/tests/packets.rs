//! Table-driven packet tests of the XDP and TC programs through `BPF_PROG_TEST_RUN`: each fixture
//! is a description, a frame from the builder, and the expected verdict. Both programs must
//! agree on every fixture (they share one parser and one decision).
use proxy::{
    clock::kernel_ns,
    defense::Cidr,
    kernel::{Datapath, KernelMaps},
};
use proxy_common::{BlockEntry, Counter, Reason};
use proxy_tests::{packet::*, require_root, unique_id};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Pass,
    Drop,
}

/// What the fixture's packet should be counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Plain,
    Blocked,
    Allowed,
    Malformed,
    NonIp,
}

struct Fixture {
    what: &'static str,
    frame: Vec<u8>,
    expect: Expect,
    class: Class,
}

#[expect(
    clippy::too_many_lines,
    reason = "the fixture table: one entry per packet shape, grouped by what it tests"
)]
fn fixtures() -> Vec<Fixture> {
    use Class::*;
    use Expect::*;
    let f = |what, frame, expect, class| Fixture {
        what,
        frame,
        expect,
        class,
    };
    vec![
        f("IPv4 source not listed", v4_frame("192.0.3.1"), Pass, Plain),
        f(
            "IPv4 source inside a blocked /8",
            v4_frame("10.200.1.1"),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 source inside a blocked /24",
            v4_frame("192.0.2.77"),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 neighbour of a blocked /24",
            v4_frame("192.0.1.255"),
            Pass,
            Plain,
        ),
        f(
            "IPv4 source equal to a blocked /32",
            v4_frame("198.51.100.7"),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 next to a blocked /32",
            v4_frame("198.51.100.8"),
            Pass,
            Plain,
        ),
        f(
            "IPv4 allowlisted inside a blocked /8",
            v4_frame("10.1.2.3"),
            Pass,
            Allowed,
        ),
        f(
            "IPv4 in an expired entry",
            v4_frame("203.0.113.9"),
            Pass,
            Plain,
        ),
        // The longest prefix decides, as an LPM lookup does: an expired /16 inside an active
        // /8 lets its addresses through.
        f(
            "IPv4 in an expired /16 inside a blocked /8",
            v4_frame("10.77.1.1"),
            Pass,
            Plain,
        ),
        f(
            "IPv4 inside a blocked /4 (the shortest tier)",
            v4_frame("241.1.1.1"),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 inside a blocked /7 (the shortest tier)",
            v6_frame("fd00::1"),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 inside a blocked /20 (shorter than the bucket bits)",
            v6_frame("3fff:0:1::1"),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 inside a blocked /65 (past the word boundary)",
            v6_frame("2001:db8:cccc:dddd:8000::1"),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 beside a blocked /65",
            v6_frame("2001:db8:cccc:dddd:7fff::1"),
            Pass,
            Plain,
        ),
        f(
            "IPv6 inside a blocked /64",
            v6_frame("2001:db8:aaaa:bbbb::9"),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 in an entry expiring in an hour",
            v4_frame("203.0.114.9"),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 with options, blocked",
            v4_frame_with_options("10.9.9.9", 3),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 with 40 bytes of options, not listed",
            v4_frame_with_options("192.0.3.1", 10),
            Pass,
            Plain,
        ),
        f(
            "IPv6 source inside a blocked /48",
            v6_frame("2001:db8:0:1::5"),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 source outside the blocked /48",
            v6_frame("2001:db8:1::5"),
            Pass,
            Plain,
        ),
        f(
            "IPv6 source equal to a blocked /128",
            v6_frame("2001:db8:ffff::1"),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 next to a blocked /128",
            v6_frame("2001:db8:ffff::2"),
            Pass,
            Plain,
        ),
        f(
            "IPv6 allowlisted inside a blocked /48",
            v6_frame("2001:db8:0:2::1"),
            Pass,
            Allowed,
        ),
        f(
            "802.1Q-tagged IPv4, blocked",
            vlan_v4_frame("10.0.0.1"),
            Drop,
            Blocked,
        ),
        f(
            "802.1Q-tagged IPv4, not listed",
            vlan_v4_frame("192.0.3.1"),
            Pass,
            Plain,
        ),
        f(
            "QinQ-tagged IPv4, blocked",
            qinq_v4_frame("192.0.2.1"),
            Drop,
            Blocked,
        ),
        f(
            "QinQ-tagged IPv6, blocked",
            qinq_v6_frame("2001:db8::1"),
            Drop,
            Blocked,
        ),
        f(
            "three VLAN tags: not parsed, passed",
            triple_tagged_v4_frame("10.0.0.1"),
            Pass,
            NonIp,
        ),
        f("ARP", arp_frame(), Pass, NonIp),
        f(
            "IPv4 cut inside the header",
            truncated(v4_frame("10.0.0.1"), 14 + 10),
            Pass,
            Malformed,
        ),
        f(
            "IPv4 header claims options beyond the frame",
            truncated(v4_frame_with_options("10.0.0.1", 5), 14 + 24),
            Pass,
            Malformed,
        ),
        f(
            "IPv6 cut inside the header",
            truncated(v6_frame("2001:db8::1"), 14 + 30),
            Pass,
            Malformed,
        ),
        f(
            "Ethernet header only, IPv4 type",
            truncated(v4_frame("10.0.0.1"), 14),
            Pass,
            Malformed,
        ),
        f(
            "VLAN tag cut short",
            truncated(vlan_v4_frame("10.0.0.1"), 16),
            Pass,
            Malformed,
        ),
        f(
            "IPv4 ethertype with version 5",
            bad_version_v4_frame("10.0.0.1"),
            Pass,
            Malformed,
        ),
        f(
            "IPv4 with IHL 4",
            bad_ihl_v4_frame("10.0.0.1"),
            Pass,
            Malformed,
        ),
        // IPv6 extension headers: the source is read whatever the chain, so a blocked source
        // stays blocked behind any of them (SYN counting: syn_limiter_counts_*).
        f(
            "IPv6 SYN behind hop-by-hop, blocked",
            v6_chain_frame("2001:db8::10", &[Ext::HopByHop(8)], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 SYN behind hop-by-hop, not listed",
            v6_chain_frame("2001:db8:1::10", &[Ext::HopByHop(8)], SYN),
            Pass,
            Plain,
        ),
        f(
            "IPv6 SYN behind a routing header, blocked",
            v6_chain_frame("2001:db8::11", &[Ext::Routing], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 SYN behind destination options, blocked",
            v6_chain_frame("2001:db8::12", &[Ext::DestOpts(16)], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 SYN behind AH, blocked",
            v6_chain_frame("2001:db8::13", &[Ext::Auth], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 first fragment with a SYN, blocked",
            v6_chain_frame("2001:db8::14", &[FIRST_FRAGMENT], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 non-first fragment, blocked",
            v6_chain_frame("2001:db8::15", &[LATER_FRAGMENT], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 non-first fragment, not listed",
            v6_chain_frame("2001:db8:1::15", &[LATER_FRAGMENT], SYN),
            Pass,
            Plain,
        ),
        f(
            "IPv6 SYN behind six extension headers, blocked",
            v6_chain_frame("2001:db8::16", &six_headers(), SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 SYN behind more extension headers than the walk follows, blocked",
            v6_chain_frame("2001:db8::17", &too_many_headers(), SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 SYN behind more extension headers than the walk follows, not listed",
            v6_chain_frame("2001:db8:1::17", &too_many_headers(), SYN),
            Pass,
            Plain,
        ),
        f(
            "IPv6 SYN behind a 512-byte hop-by-hop header, blocked",
            v6_chain_frame("2001:db8::18", &[Ext::HopByHop(512)], SYN),
            Drop,
            Blocked,
        ),
        f(
            "IPv6 extension header chain cut short, blocked",
            truncated(
                v6_chain_frame("2001:db8::19", &[Ext::HopByHop(8), Ext::DestOpts(64)], SYN),
                14 + 40 + 8 + 20,
            ),
            Drop,
            Blocked,
        ),
        // IPv4 fragments: the source counts, the bytes after a later fragment's header do not.
        f(
            "IPv4 non-first fragment, blocked",
            v4_fragment_frame("10.0.0.9", 185, false),
            Drop,
            Blocked,
        ),
        f(
            "IPv4 non-first fragment, not listed",
            v4_fragment_frame("192.0.3.1", 185, true),
            Pass,
            Plain,
        ),
        f(
            "IPv4 first fragment, blocked",
            v4_fragment_frame("10.0.0.9", 0, true),
            Drop,
            Blocked,
        ),
        // The longest IPv4 path: two VLAN tags and 40 bytes of options before the TCP flags.
        f(
            "QinQ-tagged IPv4 with 40 bytes of options, blocked",
            qinq_v4_options_frame("192.0.2.9", 10, SYN),
            Drop,
            Blocked,
        ),
        f(
            "QinQ-tagged IPv4 with 40 bytes of options, not listed",
            qinq_v4_options_frame("192.0.3.9", 10, SYN),
            Pass,
            Plain,
        ),
    ]
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIRST_FRAGMENT: Ext = Ext::Fragment {
    offset: 0,
    more: true,
};
/// A later fragment (offset 1480 bytes) whose data starts with bytes that look like a TCP SYN.
const LATER_FRAGMENT: Ext = Ext::Fragment {
    offset: 185,
    more: false,
};

/// One of each extension header the parser walks (six: within its bound of eight).
fn six_headers() -> Vec<Ext> {
    vec![
        Ext::HopByHop(8),
        Ext::DestOpts(8),
        Ext::Routing,
        FIRST_FRAGMENT,
        Ext::Auth,
        Ext::DestOpts(24),
    ]
}

/// Nine small headers: one more than the parser walks before it stops looking for TCP.
fn too_many_headers() -> Vec<Ext> {
    vec![Ext::DestOpts(8); 9]
}

/// A pinned datapath for this test, removed on drop.
struct TestDatapath {
    datapath: Datapath,
}

impl Drop for TestDatapath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.datapath.pin_dir());
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn block(maps: &mut KernelMaps, prefix: &str, expires_at_ns: u64) {
    let entry = BlockEntry {
        expires_at_ns,
        reason: Reason::Manual as u32,
        flags: 0,
    };
    maps.block(&cidr(prefix), entry).unwrap();
}

#[test]
fn xdp_and_tc_verdicts_match_the_table() {
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).expect("load the kernel programs"),
    };
    let mut maps = KernelMaps::open(&pin_dir).unwrap();

    let now = kernel_ns();
    for p in [
        "10.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.7/32",
        "2001:db8::/48",
        "2001:db8:ffff::1/128",
    ] {
        block(&mut maps, p, 0);
    }
    for p in [
        "240.0.0.0/4",
        "fc00::/7",
        "3fff::/20",
        "2001:db8:cccc:dddd:8000::/65",
        "2001:db8:aaaa:bbbb::/64",
    ] {
        block(&mut maps, p, 0);
    }
    block(&mut maps, "10.77.0.0/16", now.saturating_sub(1)); // expired, inside 10/8
    block(&mut maps, "203.0.113.0/24", now.saturating_sub(1)); // already expired
    block(&mut maps, "203.0.114.0/24", now + 3_600_000_000_000); // an hour from now
    maps.allow(&cidr("10.1.2.3/32")).unwrap();
    maps.allow(&cidr("2001:db8:0:2::/64")).unwrap();
    // The table runs through the index, as the daemon's programs do once it has built it
    // (`index_not_built_yet_uses_the_tries` covers the time before).
    maps.rebuild_index().unwrap();

    let before = maps.counters().unwrap();
    let fixtures = fixtures();
    let mut failures = Vec::new();
    // How many times each fixture ran (XDP always; TC unless the kernel's test harness
    // refuses the frame, which it does for IP frames shorter than an IP header).
    let mut runs = Vec::new();
    for fx in &fixtures {
        let xdp = t
            .datapath
            .test_run_xdp(&fx.frame)
            .unwrap_or_else(|e| panic!("{}: XDP test run: {e}", fx.what));
        let tc = match t.datapath.test_run_tc(&fx.frame) {
            Ok(v) => Some(v),
            Err(e) if fx.class == Class::Malformed => {
                eprintln!(
                    "{}: TC test run refused by the kernel ({e}); XDP verdict checked",
                    fx.what
                );
                None
            }
            Err(e) => panic!("{}: TC test run: {e}", fx.what),
        };
        runs.push(if tc.is_some() { 2 } else { 1 });
        let (want_xdp, want_tc) = match fx.expect {
            Expect::Pass => (XDP_PASS, TC_ACT_OK),
            Expect::Drop => (XDP_DROP, TC_ACT_SHOT),
        };
        if xdp != want_xdp || tc.is_some_and(|tc| tc != want_tc) {
            failures.push(format!(
                "{}: expected {:?}, XDP returned {xdp}, TC returned {tc:?}",
                fx.what, fx.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "verdicts differ from the table:\n{}",
        failures.join("\n")
    );
    assert!(
        runs.iter().filter(|&&r| r == 2).count() > fixtures.len() / 2,
        "TC ran on too few fixtures"
    );

    // Every run is counted once as seen and once by its class, in both programs.
    let after = maps.counters().unwrap();
    let delta = |c: Counter| after.get(c) - before.get(c);
    let n = |class: Class| {
        fixtures
            .iter()
            .zip(&runs)
            .filter(|(f, _)| f.class == class)
            .map(|(_, r)| *r)
            .sum::<u64>()
    };
    let total: u64 = runs.iter().sum();
    assert_eq!(delta(Counter::Seen), total);
    assert_eq!(delta(Counter::DroppedBlocklist), n(Class::Blocked));
    assert_eq!(delta(Counter::Passed), total - n(Class::Blocked));
    assert_eq!(delta(Counter::PassedAllowlist), n(Class::Allowed));
    assert_eq!(delta(Counter::Malformed), n(Class::Malformed));
    assert_eq!(delta(Counter::NonIp), n(Class::NonIp));
}

#[test]
fn index_not_built_yet_uses_the_tries() {
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).unwrap(),
    };
    let mut maps = KernelMaps::open(&pin_dir).unwrap();
    // Before the index is marked built (as after an upgrade over maps pinned by a version
    // without it), the programs decide from the tries, allowlist included.
    block(&mut maps, "10.0.0.0/8", 0);
    maps.allow(&cidr("10.1.2.3/32")).unwrap();
    let v4 = |a: &str| v4_frame(a);
    assert_eq!(t.datapath.test_run_xdp(&v4("10.9.9.9")).unwrap(), XDP_DROP);
    assert_eq!(t.datapath.test_run_xdp(&v4("10.1.2.3")).unwrap(), XDP_PASS);
    assert_eq!(t.datapath.test_run_xdp(&v4("11.0.0.1")).unwrap(), XDP_PASS);
    maps.rebuild_index().unwrap();
    assert_eq!(t.datapath.test_run_xdp(&v4("10.9.9.9")).unwrap(), XDP_DROP);
    assert_eq!(t.datapath.test_run_xdp(&v4("10.1.2.3")).unwrap(), XDP_PASS);
    // A flush's leftovers: the index stays right after the bits are rebuilt.
    assert!(maps.unblock(&cidr("10.0.0.0/8")).unwrap());
    maps.rebuild_index().unwrap();
    assert_eq!(t.datapath.test_run_xdp(&v4("10.9.9.9")).unwrap(), XDP_PASS);
}

#[test]
fn removing_an_entry_takes_effect_on_the_next_packet() {
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).unwrap(),
    };
    let mut maps = KernelMaps::open(&pin_dir).unwrap();
    maps.rebuild_index().unwrap();
    let frame = v4_frame("172.16.5.5");
    assert_eq!(t.datapath.test_run_xdp(&frame).unwrap(), XDP_PASS);
    block(&mut maps, "172.16.0.0/12", 0);
    assert_eq!(t.datapath.test_run_xdp(&frame).unwrap(), XDP_DROP);
    assert!(maps.unblock(&cidr("172.16.0.0/12")).unwrap());
    assert_eq!(t.datapath.test_run_xdp(&frame).unwrap(), XDP_PASS);
    assert!(
        !maps.unblock(&cidr("172.16.0.0/12")).unwrap(),
        "second removal finds nothing"
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one token bucket driven step by step: rate, burst, prefixes, extension headers, allowlist"
)]
fn syn_rate_limit_per_source_prefix() {
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).unwrap(),
    };
    let maps = KernelMaps::open(&pin_dir).unwrap();
    // One SYN per second, a bucket of 2, sources grouped by /24.
    t.datapath
        .set_rate_config(proxy_common::RateConfig {
            syn_rate: 1,
            syn_burst: 2,
            prefix_v4: 24,
            prefix_v6: 64,
        })
        .unwrap();
    let syn = |src: &str| v4_tcp_frame(src, 0x02);
    let before = maps.counters().unwrap().get(Counter::DroppedSynRate);
    assert_eq!(
        t.datapath.test_run_xdp(&syn("192.0.2.1")).unwrap(),
        XDP_PASS
    );
    assert_eq!(
        t.datapath.test_run_xdp(&syn("192.0.2.2")).unwrap(),
        XDP_PASS,
        "same /24, second token"
    );
    assert_eq!(
        t.datapath.test_run_xdp(&syn("192.0.2.3")).unwrap(),
        XDP_DROP,
        "same /24, bucket empty"
    );
    assert_eq!(
        t.datapath.test_run_tc(&syn("192.0.2.4")).unwrap(),
        TC_ACT_SHOT,
        "TC shares the bucket"
    );
    assert_eq!(
        t.datapath.test_run_xdp(&syn("192.0.3.1")).unwrap(),
        XDP_PASS,
        "another /24 has its own bucket"
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v4_tcp_frame("192.0.2.5", 0x10))
            .unwrap(),
        XDP_PASS,
        "ACKs are not limited"
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v4_tcp_frame("192.0.2.5", 0x12))
            .unwrap(),
        XDP_PASS,
        "SYN+ACK is not a new connection"
    );
    assert_eq!(
        maps.counters().unwrap().get(Counter::DroppedSynRate) - before,
        2
    );

    // A SYN flood wearing IPv6 extension headers draws on the same bucket as a plain one.
    let v6_syn = |src: &str, chain: &[Ext]| v6_chain_frame(src, chain, SYN);
    let before = maps.counters().unwrap().get(Counter::DroppedSynRate);
    assert_eq!(
        t.datapath
            .test_run_xdp(&v6_syn("2001:db8:7::1", &[]))
            .unwrap(),
        XDP_PASS
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v6_syn("2001:db8:7::2", &[Ext::HopByHop(8)]))
            .unwrap(),
        XDP_PASS,
        "behind hop-by-hop: same /64, second token"
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v6_syn("2001:db8:7::3", &six_headers()))
            .unwrap(),
        XDP_DROP,
        "behind six headers: same /64, bucket empty"
    );
    assert_eq!(
        t.datapath
            .test_run_tc(&v6_syn("2001:db8:7::4", &[FIRST_FRAGMENT]))
            .unwrap(),
        TC_ACT_SHOT,
        "a first fragment is a SYN in TC too"
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v6_syn("2001:db8:7::5", &too_many_headers()))
            .unwrap(),
        XDP_DROP,
        "beyond the walk: limited like a SYN"
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v6_syn("2001:db8:7::6", &[LATER_FRAGMENT]))
            .unwrap(),
        XDP_PASS,
        "a later fragment carries no SYN"
    );
    assert_eq!(
        t.datapath
            .test_run_xdp(&v6_chain_frame("2001:db8:7::7", &[Ext::HopByHop(8)], ACK))
            .unwrap(),
        XDP_PASS,
        "ACKs behind headers are not limited"
    );
    assert_eq!(
        maps.counters().unwrap().get(Counter::DroppedSynRate) - before,
        3
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        t.datapath.test_run_xdp(&syn("192.0.2.9")).unwrap(),
        XDP_PASS,
        "a token came back after a second"
    );
    // Allowlisted sources are never rate limited.
    let mut maps = maps;
    maps.allow(&cidr("192.0.2.0/24")).unwrap();
    for _ in 0..5 {
        assert_eq!(
            t.datapath.test_run_xdp(&syn("192.0.2.7")).unwrap(),
            XDP_PASS
        );
    }
}

/// A frame from a source, and whether the SYN limiter must count it.
struct SynCase {
    what: &'static str,
    frame: fn(&str) -> Vec<u8>,
    v6: bool,
    counted: bool,
}

#[expect(
    clippy::too_many_lines,
    reason = "the SYN case table: one entry per packet shape, counted or not"
)]
fn syn_cases() -> Vec<SynCase> {
    fn v4(what: &'static str, frame: fn(&str) -> Vec<u8>, counted: bool) -> SynCase {
        SynCase {
            what,
            frame,
            v6: false,
            counted,
        }
    }
    fn v6(what: &'static str, frame: fn(&str) -> Vec<u8>, counted: bool) -> SynCase {
        SynCase {
            what,
            frame,
            v6: true,
            counted,
        }
    }
    vec![
        v4("IPv4 SYN", |s| v4_tcp_frame(s, SYN), true),
        v4("IPv4 ACK", |s| v4_tcp_frame(s, ACK), false),
        v4(
            "IPv4 first fragment with a SYN",
            |s| v4_fragment_frame(s, 0, true),
            true,
        ),
        v4(
            "IPv4 non-first fragment whose data looks like a SYN",
            |s| v4_fragment_frame(s, 185, true),
            false,
        ),
        v4(
            "IPv4 last fragment whose data looks like a SYN",
            |s| v4_fragment_frame(s, 1, false),
            false,
        ),
        v4(
            "IPv4 first fragment cut before the TCP flags",
            v4_tiny_first_fragment_frame,
            true,
        ),
        v4(
            "QinQ-tagged IPv4 SYN with 40 bytes of options",
            |s| qinq_v4_options_frame(s, 10, SYN),
            true,
        ),
        v4(
            "QinQ-tagged IPv4 ACK with 40 bytes of options",
            |s| qinq_v4_options_frame(s, 10, ACK),
            false,
        ),
        v6("IPv6 SYN", |s| v6_chain_frame(s, &[], SYN), true),
        v6(
            "IPv6 SYN behind hop-by-hop",
            |s| v6_chain_frame(s, &[Ext::HopByHop(8)], SYN),
            true,
        ),
        v6(
            "IPv6 ACK behind hop-by-hop",
            |s| v6_chain_frame(s, &[Ext::HopByHop(8)], ACK),
            false,
        ),
        v6(
            "IPv6 SYN behind a routing header",
            |s| v6_chain_frame(s, &[Ext::Routing], SYN),
            true,
        ),
        v6(
            "IPv6 SYN behind destination options",
            |s| v6_chain_frame(s, &[Ext::DestOpts(16)], SYN),
            true,
        ),
        v6(
            "IPv6 SYN behind AH",
            |s| v6_chain_frame(s, &[Ext::Auth], SYN),
            true,
        ),
        v6(
            "IPv6 first fragment with a SYN",
            |s| v6_chain_frame(s, &[FIRST_FRAGMENT], SYN),
            true,
        ),
        v6(
            "IPv6 first fragment with an ACK",
            |s| v6_chain_frame(s, &[FIRST_FRAGMENT], ACK),
            false,
        ),
        v6(
            "IPv6 non-first fragment whose data looks like a SYN",
            |s| v6_chain_frame(s, &[LATER_FRAGMENT], SYN),
            false,
        ),
        v6(
            "IPv6 SYN behind six extension headers",
            |s| v6_chain_frame(s, &six_headers(), SYN),
            true,
        ),
        v6(
            "IPv6 ACK behind six extension headers",
            |s| v6_chain_frame(s, &six_headers(), ACK),
            false,
        ),
        v6(
            "IPv6 SYN behind eight extension headers (the bound)",
            |s| v6_chain_frame(s, &[Ext::DestOpts(8); 8], SYN),
            true,
        ),
        v6(
            "IPv6 ACK behind eight extension headers (the bound)",
            |s| v6_chain_frame(s, &[Ext::DestOpts(8); 8], ACK),
            false,
        ),
        // Beyond what the parser walks, it cannot tell a SYN from an ACK: both are counted.
        v6(
            "IPv6 SYN behind nine extension headers",
            |s| v6_chain_frame(s, &too_many_headers(), SYN),
            true,
        ),
        v6(
            "IPv6 ACK behind nine extension headers",
            |s| v6_chain_frame(s, &too_many_headers(), ACK),
            true,
        ),
        v6(
            "IPv6 SYN behind a 512-byte hop-by-hop header",
            |s| v6_chain_frame(s, &[Ext::HopByHop(512)], SYN),
            true,
        ),
        v6(
            "IPv6 extension header chain cut short",
            |s| {
                truncated(
                    v6_chain_frame(s, &[Ext::HopByHop(8), Ext::DestOpts(64)], SYN),
                    14 + 40 + 8 + 20,
                )
            },
            true,
        ),
    ]
}

/// Which packets the SYN limiter counts, in both programs: with one token per source, a counted
/// frame passes once and is dropped the second time; any other frame passes both times. Each
/// run has its own source, so no case draws on another's bucket.
#[test]
fn syn_limiter_counts_what_may_open_a_connection() {
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).unwrap(),
    };
    t.datapath
        .set_rate_config(proxy_common::RateConfig {
            syn_rate: 1,
            syn_burst: 1,
            prefix_v4: 32,
            prefix_v6: 128,
        })
        .unwrap();
    let mut failures = Vec::new();
    let mut source = 0u16;
    for case in syn_cases() {
        for tc in [false, true] {
            source += 1;
            let src = if case.v6 {
                format!("2001:db8:5::{source:x}")
            } else {
                format!("198.18.{}.{}", source >> 8, source & 0xff)
            };
            let frame = (case.frame)(&src);
            let mut run = || {
                if tc {
                    t.datapath.test_run_tc(&frame).map(|r| r == TC_ACT_OK)
                } else {
                    t.datapath.test_run_xdp(&frame).map(|r| r == XDP_PASS)
                }
            };
            let program = if tc { "TC" } else { "XDP" };
            let (first, second) = match (run(), run()) {
                (Ok(first), Ok(second)) => (first, second),
                (Err(e), _) | (_, Err(e)) => panic!("{}: {program} test run: {e}", case.what),
            };
            if !first || second == case.counted {
                failures.push(format!(
                    "{} ({program}): expected {}, passed {first} then {second}",
                    case.what,
                    if case.counted {
                        "counted"
                    } else {
                        "not counted"
                    },
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the SYN limiter counted the wrong packets:\n{}",
        failures.join("\n")
    );
}

const XDP_TX: u32 = 3;

/// The TCP options of a segment: (kind, data) pairs.
fn tcp_options(mut o: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(&kind) = o.first() {
        match kind {
            0 => break,
            1 => o = &o[1..],
            _ => {
                let len = usize::from(o[1]);
                out.push((kind, o[2..len].to_vec()));
                o = &o[len..];
            }
        }
    }
    out
}

/// What the SYN proxy answers and lets through, through `BPF_PROG_TEST_RUN`: the SYN-ACK's
/// addresses, checksums and options for IPv4 and IPv6; the ACK that completes the handshake
/// passes, a forged one does not; what it leaves to the stack.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of cases per family, then the odd frames"
)]
fn syn_proxy_answers_syns_and_checks_acks() {
    use proxy_common::SynProxyConfig;
    use std::net::SocketAddr;
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).expect("load the kernel programs"),
    };
    let mut maps = KernelMaps::open(&pin_dir).unwrap();
    maps.rebuild_index().unwrap();
    let config = SynProxyConfig {
        mss4: 1400,
        mss6: 1380,
        wscale: 9,
        ttl: 61,
        enabled: 1,
        hop_limit: 62,
    };
    // A real connection on loopback, for the branch where the stack already has the tuple.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let (_accepted, _) = server.accept().unwrap();
    let (server_addr, client_addr) = (server.local_addr().unwrap(), client.local_addr().unwrap());
    let listeners: Vec<SocketAddr> = vec![
        "10.255.0.1:8443".parse().unwrap(),
        "[::]:9443".parse().unwrap(),
        server_addr,
    ];
    t.datapath.set_syn_proxy(config, &listeners).unwrap();
    let before = maps.counters().unwrap();
    let syn = |src: &str, dst: &str, dport: u16, options: Vec<u8>| Segment {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 40000,
        dport,
        seq: 0xffff_fff0,
        ack: 0,
        flags: 0x02,
        options,
        payload: Vec::new(),
    };
    let cases: [(&str, &str, u16, u16); 4] = [
        ("192.0.2.10", "10.255.0.1", 8443, 1400),
        // The dual-stack wildcard listener takes IPv4 to any address too.
        ("192.0.2.10", "10.255.0.77", 9443, 1400),
        ("2001:db8::10", "2001:db8::1", 9443, 1380),
        ("2001:db8::10", "2001:db8::99", 9443, 1380),
    ];
    for (src, dst, port, mss) in cases {
        let what = format!("{src} -> {dst}:{port}");
        let s = syn(src, dst, port, linux_syn_options(123_456));
        let frame = s.frame();
        let (action, out) = t.datapath.test_run_xdp_out(&frame).unwrap();
        assert_eq!(action, XDP_TX, "{what}: the SYN is answered in XDP");
        let (ans, ttl) = Segment::parse(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out[..6], frame[6..12], "{what}: MACs swapped");
        assert_eq!(out[6..12], frame[..6], "{what}: MACs swapped");
        assert_eq!((ans.src, ans.dst), (s.dst, s.src), "{what}: addresses");
        assert_eq!((ans.sport, ans.dport), (port, 40000), "{what}: ports");
        assert_eq!(ans.flags, 0x12, "{what}: SYN+ACK");
        assert_eq!(ans.ack, 0xffff_fff1, "{what}: acknowledges the SYN");
        let want_ttl = if s.src.is_ipv4() { 61 } else { 62 };
        assert_eq!(ttl, want_ttl, "{what}: TTL / hop limit");
        assert!(ans.payload.is_empty(), "{what}: no payload");
        let opts = tcp_options(&ans.options);
        let find = |kind: u8| {
            opts.iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, d)| d.clone())
        };
        assert_eq!(find(2), Some(mss.to_be_bytes().to_vec()), "{what}: MSS");
        assert_eq!(find(4), Some(vec![]), "{what}: SACK permitted");
        assert_eq!(find(3), Some(vec![9]), "{what}: our window scale");
        let ts = find(8).unwrap_or_else(|| panic!("{what}: timestamps: {opts:?}"));
        let tsval = u32::from_be_bytes(ts[..4].try_into().unwrap());
        assert_eq!(
            &ts[4..],
            &123_456u32.to_be_bytes(),
            "{what}: TSecr echoes TSval"
        );
        // The client's window scale (7) and SACK in the low bits, as nftables decodes them.
        assert_eq!(tsval & 0x3f, 7 | 1 << 4, "{what}: TS cookie bits");

        // The handshake's last ACK: on to the stack; one with a wrong cookie is dropped.
        let mut ack = s.clone();
        ack.seq = s.seq.wrapping_add(1);
        ack.ack = ans.seq.wrapping_add(1);
        ack.flags = 0x10;
        let mut ack_options = vec![1, 1, 8, 10];
        ack_options.extend_from_slice(&123_457u32.to_be_bytes());
        ack_options.extend_from_slice(&tsval.to_be_bytes());
        ack.options = ack_options;
        assert_eq!(
            t.datapath.test_run_xdp(&ack.frame()).unwrap(),
            XDP_PASS,
            "{what}: the ACK with our cookie"
        );
        // (Not the cookie + 1: its low bits carry the MSS index, and a neighbour of a valid
        // cookie may decode to another valid index: a cookie is checked, not signed.)
        let mut forged = ack.clone();
        forged.ack = ans.seq.wrapping_add(1) ^ 0x5a5a_5a5a;
        assert_eq!(
            t.datapath.test_run_xdp(&forged.frame()).unwrap(),
            XDP_DROP,
            "{what}: an ACK with a forged cookie"
        );
        let mut other_source = ack.clone();
        other_source.sport = 40001;
        assert_eq!(
            t.datapath.test_run_xdp(&other_source.frame()).unwrap(),
            XDP_DROP,
            "{what}: the cookie of another connection"
        );
        let mut rst = ack.clone();
        rst.flags = 0x04;
        assert_eq!(
            t.datapath.test_run_xdp(&rst.frame()).unwrap(),
            XDP_DROP,
            "{what}: a RST that belongs to no connection"
        );
    }

    // Without timestamps the cookie cannot carry SACK or the window scale: MSS only.
    let plain = syn(
        "192.0.2.11",
        "10.255.0.1",
        8443,
        vec![2, 4, 5, 0xb4, 1, 3, 3, 7],
    );
    let (action, out) = t.datapath.test_run_xdp_out(&plain.frame()).unwrap();
    assert_eq!(action, XDP_TX);
    let (ans, _) = Segment::parse(&out).unwrap();
    assert_eq!(
        tcp_options(&ans.options),
        vec![(2, 1400u16.to_be_bytes().to_vec())]
    );
    // Timestamps without window scale: no WS option back, 0xf in the cookie's low bits;
    // without SACK: NOP NOP before the timestamps, no SACK bit.
    let mut ts_only = vec![2, 4, 5, 0xb4, 1, 1, 8, 10];
    ts_only.extend_from_slice(&777u32.to_be_bytes());
    ts_only.extend_from_slice(&[0, 0, 0, 0]);
    let (action, out) = t
        .datapath
        .test_run_xdp_out(&syn("192.0.2.15", "10.255.0.1", 8443, ts_only).frame())
        .unwrap();
    assert_eq!(action, XDP_TX);
    let (ans, _) = Segment::parse(&out).unwrap();
    let opts = tcp_options(&ans.options);
    assert!(opts.iter().all(|(k, _)| *k != 3 && *k != 4), "{opts:?}");
    let ts = &opts.iter().find(|(k, _)| *k == 8).unwrap().1;
    assert_eq!(u32::from_be_bytes(ts[..4].try_into().unwrap()) & 0x3f, 0xf);
    assert_eq!(&ans.options[4..8], &[1, 1, 8, 10], "NOP NOP TS layout");
    // No options at all (a 54-byte frame: the program grows it to build the answer).
    let bare = syn("192.0.2.12", "10.255.0.1", 8443, Vec::new());
    let (action, out) = t.datapath.test_run_xdp_out(&bare.frame()).unwrap();
    assert_eq!(action, XDP_TX);
    Segment::parse(&out).unwrap();

    // Left to the stack (nftables' synproxy answers those, the stack drops what is broken): a
    // bad IPv4 header checksum, a payload.
    let mut bad = syn("192.0.2.13", "10.255.0.1", 8443, linux_syn_options(1)).frame();
    bad[14 + 10] ^= 0xff;
    assert_eq!(
        t.datapath.test_run_xdp(&bad).unwrap(),
        XDP_PASS,
        "bad IPv4 header checksum"
    );
    let mut broadcast = syn("192.0.2.13", "10.255.0.1", 8443, linux_syn_options(1)).frame();
    broadcast[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(
        t.datapath.test_run_xdp(&broadcast).unwrap(),
        XDP_PASS,
        "broadcast MAC"
    );
    let loopback_source = syn("127.0.0.1", "10.255.0.1", 8443, linux_syn_options(1));
    assert_eq!(
        t.datapath.test_run_xdp(&loopback_source.frame()).unwrap(),
        XDP_PASS,
        "martian source"
    );
    let mut with_data = syn("192.0.2.13", "10.255.0.1", 8443, linux_syn_options(1));
    with_data.payload = b"GET / HTTP/1.1\r\n".to_vec();
    assert_eq!(
        t.datapath.test_run_xdp(&with_data.frame()).unwrap(),
        XDP_PASS,
        "payload"
    );
    // Not a SYN-proxied listener: another address on the specific listener's port, another
    // port.
    let other = syn("192.0.2.14", "10.255.0.2", 8443, linux_syn_options(1));
    assert_eq!(t.datapath.test_run_xdp(&other.frame()).unwrap(), XDP_PASS);
    let other_port = syn("192.0.2.14", "10.255.0.1", 8444, linux_syn_options(1));
    assert_eq!(
        t.datapath.test_run_xdp(&other_port.frame()).unwrap(),
        XDP_PASS
    );
    let mut other_ack = other_port.clone();
    other_ack.flags = 0x10;
    assert_eq!(
        t.datapath.test_run_xdp(&other_ack.frame()).unwrap(),
        XDP_PASS
    );

    // A SYN whose tuple the stack already has (a connection, or its TIME_WAIT: NAT port reuse)
    // goes to the stack; any other packet of it passes without a cookie check.
    let mut again = syn(
        "127.0.0.1",
        "127.0.0.1",
        server_addr.port(),
        linux_syn_options(1),
    );
    again.sport = client_addr.port();
    assert_eq!(
        t.datapath.test_run_xdp(&again.frame()).unwrap(),
        XDP_PASS,
        "existing tuple"
    );
    let mut segment = again.clone();
    segment.flags = 0x18;
    segment.ack = 12345;
    segment.payload = b"data".to_vec();
    assert_eq!(
        t.datapath.test_run_xdp(&segment.frame()).unwrap(),
        XDP_PASS,
        "its data"
    );
    // Frames it does not parse pass untouched (nftables answers them), not counted: a VLAN
    // tag, IPv4 options, a fragment, an IPv6 extension header.
    let plain_syn = syn("192.0.2.16", "10.255.0.1", 8443, linux_syn_options(1)).frame();
    let mut tagged = plain_syn[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    tagged.extend_from_slice(&plain_syn[12..]);
    let mut options = plain_syn[..34].to_vec();
    options.extend_from_slice(&[1, 1, 1, 0]);
    options.extend_from_slice(&plain_syn[34..]);
    options[14] = 0x46;
    let mut fragment = plain_syn.clone();
    fragment[14 + 6] |= 0x20;
    let mut extension = syn("2001:db8::16", "2001:db8::1", 9443, linux_syn_options(1)).frame();
    extension[14 + 6] = 0; // hop-by-hop announced where TCP was
    for (what, frame) in [
        ("VLAN tag", &tagged),
        ("IPv4 options", &options),
        ("IPv4 fragment", &fragment),
        ("IPv6 extension header", &extension),
    ] {
        let (action, out) = t.datapath.test_run_xdp_out(frame).unwrap();
        assert_eq!(action, XDP_PASS, "{what}");
        assert_eq!(&out, frame, "{what}: untouched");
    }

    // A blocked source is dropped before the SYN proxy answers anything.
    block(&mut maps, "198.51.100.0/24", 0);
    maps.rebuild_index().unwrap();
    let blocked = syn("198.51.100.5", "10.255.0.1", 8443, linux_syn_options(1));
    assert_eq!(t.datapath.test_run_xdp(&blocked.frame()).unwrap(), XDP_DROP);

    let after = maps.counters().unwrap();
    let delta = |c: Counter| after.get(c) - before.get(c);
    assert_eq!(delta(Counter::SynCookiesSent), 7);
    assert_eq!(delta(Counter::SynCookieAcksValid), 4);
    assert_eq!(delta(Counter::SynCookieAcksInvalid), 12);
    assert_eq!(delta(Counter::SynProxyToStack), 5);

    // Off: SYNs go to the stack untouched.
    t.datapath
        .set_syn_proxy(
            SynProxyConfig {
                enabled: 0,
                ..config
            },
            &[],
        )
        .unwrap();
    let (action, out) = t
        .datapath
        .test_run_xdp_out(&syn("192.0.2.10", "10.255.0.1", 8443, Vec::new()).frame())
        .unwrap();
    assert_eq!(action, XDP_PASS);
    let (unchanged, _) = Segment::parse(&out).unwrap();
    assert_eq!(unchanged.flags, 0x02);
}
