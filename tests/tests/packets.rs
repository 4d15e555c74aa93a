//! Table-driven packet tests of the XDP and TC programs through BPF_PROG_TEST_RUN: each fixture
//! is a description, a frame from the builder, and the expected verdict. Both programs must
//! agree on every fixture (they share one parser and one decision).
use proxy::{
    defense::Cidr,
    kernel::{Datapath, KernelMaps, monotonic_now_ns},
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
    ]
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

    let now = monotonic_now_ns();
    for p in [
        "10.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.7/32",
        "2001:db8::/48",
        "2001:db8:ffff::1/128",
    ] {
        block(&mut maps, p, 0);
    }
    block(&mut maps, "203.0.113.0/24", now.saturating_sub(1)); // already expired
    block(&mut maps, "203.0.114.0/24", now + 3_600_000_000_000); // an hour from now
    maps.allow(&cidr("10.1.2.3/32")).unwrap();
    maps.allow(&cidr("2001:db8:0:2::/64")).unwrap();

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
fn removing_an_entry_takes_effect_on_the_next_packet() {
    require_root();
    proxy::kernel::ensure_bpffs().unwrap();
    let pin_dir = proxy::kernel::pin_dir(&format!("packet-test-{}", unique_id()));
    let mut t = TestDatapath {
        datapath: Datapath::load(&pin_dir).unwrap(),
    };
    let mut maps = KernelMaps::open(&pin_dir).unwrap();
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
