//! `cargo xtask bench lookup` runs this: the XDP program's own cost per packet
//! (`BPF_PROG_TEST_RUN`, kernel-timed, many repetitions) with 0, 1 000, 100 000 and
//! 1 000 000 blocklist prefixes of mixed lengths, for a blocked and a passed packet of each
//! family, and how many blocks per second the map API sustains. Prints one JSON object.
//!
//! Prefixes (a fixed pseudo-random sequence, so runs compare): IPv4 40 % /32, 30 % /24 and
//! 30 % spread over /8 to /31; IPv6 (a quarter as many, at most the map's size) 40 % /128,
//! 30 % /64, 30 % over /32 to /127. Addresses avoid 127/8 and `fe80::/10`, where the passed
//! packets come from.
#![expect(
    clippy::cast_precision_loss,
    reason = "a rate from counts far below 2^52"
)]
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use proxy::{
    cidr::Cidr,
    kernel::{Datapath, KernelMaps},
};
use proxy_common::{BLOCK_V6_MAX, BlockEntry, Reason};
use proxy_tests::{
    packet::{arp_frame, v4_frame, v6_frame},
    require_root, unique_id,
};

const REPEAT: u32 = 2_000_000;
/// With `LOOKUP_BENCH_PROFILE=<file>`: the blocked IPv4 packet at this many prefixes is run
/// under `perf record` (into that file) for a few seconds, and nothing else.
const PROFILE_LEVEL: usize = 100_000;
const LEVELS: [usize; 4] = [0, 1_000, 100_000, 1_000_000];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn v4_prefix(r: &mut Rng) -> Cidr {
    let len = match r.next() % 10 {
        0..=3 => 32,
        4..=6 => 24,
        _ => 8 + (r.next() % 24) as u8,
    };
    let mut a = (r.next() >> 32) as u32;
    // Not 0/8, 127/8 (the passed packet's), nor multicast and above.
    let first = 1 + (a >> 24) % 223;
    let first = if first == 127 { 128 } else { first };
    a = (first << 24) | (a & 0x00ff_ffff);
    Cidr::new_truncating(IpAddr::V4(Ipv4Addr::from(a)), len)
}

fn v6_prefix(r: &mut Rng) -> Cidr {
    let len = match r.next() % 10 {
        0..=3 => 128,
        4..=6 => 64,
        _ => 32 + (r.next() % 96) as u8,
    };
    // Inside 2000::/3.
    let hi = (r.next() & 0x1fff_ffff_ffff_ffff) | 0x2000_0000_0000_0000;
    let a = (u128::from(hi) << 64) | u128::from(r.next());
    Cidr::new_truncating(IpAddr::V6(Ipv6Addr::from(a)), len)
}

struct Pins(Datapath);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.pin_dir());
    }
}

fn ns(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[expect(
    clippy::too_many_lines,
    reason = "the bench start to end: levels of prefixes, each timed both ways"
)]
fn main() {
    require_root();
    let instance = format!("lookup-bench-{}", unique_id());
    let pin_dir = proxy::kernel::pin_dir(&instance);
    let mut dp = Pins(Datapath::load(&pin_dir).expect("load the kernel programs"));
    let mut maps = KernelMaps::open(&pin_dir).expect("open the maps");
    let entry = BlockEntry {
        expires_at_ns: 0,
        reason: Reason::Manual as u32,
        flags: 0,
    };
    let mut r4 = Rng(0x9e37_79b9_7f4a_7c15);
    let mut r6 = Rng(0x2545_f491_4f6c_dd1d);
    let (mut n4, mut n6) = (0usize, 0usize);
    // The blocked packets' addresses: inside the first /24 and /64 generated.
    let (mut blocked4, mut blocked6): (Option<Ipv4Addr>, Option<Ipv6Addr>) = (None, None);
    let (mut near4, mut near6): (Option<Ipv4Addr>, Option<Ipv6Addr>) = (None, None);
    let mut rows = Vec::new();
    let mut insert_ns = Vec::new();
    for level in LEVELS {
        let want6 = (level / 4).min(BLOCK_V6_MAX as usize - 1);
        let started = Instant::now();
        let before = n4 + n6;
        while n4 < level {
            let c = v4_prefix(&mut r4);
            maps.block(&c, entry).expect("block");
            if blocked4.is_none() && c.prefix_len() == 24 {
                let IpAddr::V4(a) = c.addr() else {
                    unreachable!()
                };
                blocked4 = Some(Ipv4Addr::from(u32::from(a) | 0x4d));
                near4 = Some(Ipv4Addr::from((u32::from(a) ^ 0x8000) | 0x4d));
            }
            n4 += 1;
        }
        while n6 < want6 {
            let c = v6_prefix(&mut r6);
            maps.block(&c, entry).expect("block");
            if blocked6.is_none() && c.prefix_len() == 64 {
                let IpAddr::V6(a) = c.addr() else {
                    unreachable!()
                };
                blocked6 = Some(Ipv6Addr::from(u128::from(a) | 0x77));
                near6 = Some(Ipv6Addr::from((u128::from(a) ^ (0x8000 << 64)) | 0x77));
            }
            n6 += 1;
        }
        let added = n4 + n6 - before;
        if added > 0 {
            insert_ns.push((added, started.elapsed().as_secs_f64()));
        }
        // As the daemon does after syncing the lists: the index made exact and marked built.
        maps.rebuild_index().expect("rebuild the index");
        if level == PROFILE_LEVEL
            && let Ok(out) = std::env::var("LOOKUP_BENCH_PROFILE")
        {
            let frame = v4_frame(&blocked4.expect("a /24 in the list").to_string());
            profile(&mut dp.0, &frame, &out);
            return;
        }
        let opt = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| format!("{v:.1}"));
        // The frames, and the action each must get (0: whatever the index says, which the
        // tries must confirm: traffic beside listed prefixes, in the blocked /24's /16 and
        // the /64's /48, usually passes, unless a shorter prefix of the list holds it).
        let frames: [(&str, Option<Vec<u8>>, u32); 7] = [
            ("non_ip_ns", Some(arp_frame()), 2),
            (
                "blocked_v4_ns",
                blocked4.map(|a| v4_frame(&a.to_string())),
                1,
            ),
            ("passed_v4_ns", Some(v4_frame("127.0.0.1")), 2),
            ("near_v4_ns", near4.map(|a| v4_frame(&a.to_string())), 0),
            (
                "blocked_v6_ns",
                blocked6.map(|a| v6_frame(&a.to_string())),
                1,
            ),
            ("passed_v6_ns", Some(v6_frame("fe80::1")), 2),
            ("near_v6_ns", near6.map(|a| v6_frame(&a.to_string())), 0),
        ];
        // [mode][frame] -> times of the repetitions; the index and the LPM tries (the lookup
        // before #15) interleaved on the same lists, the median of 3 kept.
        let mut times = vec![vec![Vec::new(); frames.len()]; 2];
        let mut actions = vec![vec![0u32; frames.len()]; 2];
        for _ in 0..3 {
            for (m, lpm) in [false, true].into_iter().enumerate() {
                maps.set_lpm_lookup(lpm).expect("switch the lookup");
                for (f, (name, frame, want)) in frames.iter().enumerate() {
                    let Some(frame) = frame else { continue };
                    let (action, d) = dp.0.time_xdp(frame, REPEAT).expect("test run");
                    assert!(
                        *want == 0 || action == *want,
                        "{name}: XDP action {action}, expected {want} (lpm: {lpm})"
                    );
                    actions[m][f] = action;
                    times[m][f].push(ns(d));
                }
            }
        }
        maps.set_lpm_lookup(false).expect("switch the lookup");
        assert_eq!(
            actions[0], actions[1],
            "the index and the tries disagree on a packet"
        );
        let mut cells = Vec::new();
        for (m, mode) in ["index", "lpm"].into_iter().enumerate() {
            let fields: Vec<String> = frames
                .iter()
                .enumerate()
                .map(|(f, (name, _, _))| {
                    let mut t = times[m][f].clone();
                    t.sort_by(f64::total_cmp);
                    format!("\"{name}\": {}", opt(t.get(t.len() / 2).copied()))
                })
                .collect();
            cells.push(format!("\"{mode}\": {{{}}}", fields.join(", ")));
        }
        rows.push(format!(
            "{{\"prefixes_v4\": {n4}, \"prefixes_v6\": {n6}, {}}}",
            cells.join(", ")
        ));
    }
    let (added, secs): (usize, f64) = insert_ns
        .iter()
        .fold((0, 0.0), |(a, s), (n, t)| (a + n, s + t));
    drop(maps);
    let bans = daemon_ban_rate(&pin_dir);
    println!(
        "{{\"repeat\": {REPEAT}, \"levels\": [{}], \"blocks_per_second\": {:.0}, \"daemon_bans\": {bans}}}",
        rows.join(", "),
        added as f64 / secs
    );
}

/// Runs the program on `frame` over and over while `perf record -e cpu-clock -g` samples this
/// process (the program runs in its system calls) for 5 seconds, into `out`.
fn profile(dp: &mut Datapath, frame: &[u8], out: &str) {
    let mut perf = std::process::Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "4999",
            "-g",
            "-o",
            out,
            "-p",
        ])
        .arg(std::process::id().to_string())
        .args(["--", "sleep", "5"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("perf record (linux-perf installed?)");
    // perf attaches within a moment; the runs before it are simply not sampled.
    while perf.try_wait().expect("perf record's status").is_none() {
        let (action, _) = dp.time_xdp(frame, 200_000).expect("test run");
        assert_eq!(action, 1, "the profiled packet is dropped");
    }
    let status = perf.wait().expect("perf record's status");
    assert!(status.success(), "perf record failed: {status}");
}

/// Automatic bans as the daemon applies them (`ListStore::ban_batch`: the state file's lock,
/// read, the maps, an atomic rewrite with fsync), in batches of 1 000 (what piles up in the
/// daemon's 100 ms batching window under a flood of abusers), 20 batches into a state file
/// that grows from empty to 20 000 entries, beside the lists already in the maps. JSON: bans
/// per second over all batches, and the time of the last batch (the largest file).
fn daemon_ban_rate(pin_dir: &std::path::Path) -> String {
    use proxy::defense::{BlockItem, ListStore, state::StateFile};
    const BATCH: u32 = 1_000;
    const BATCHES: u32 = 20;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = ListStore::new(
        KernelMaps::open(pin_dir).expect("open the maps"),
        StateFile::new(dir.path().join("state.json")),
    );
    let mut total = 0.0;
    let mut last_ms = 0.0;
    for b in 0..BATCHES {
        // Distinct /32s in 198.18.0.0/15 (benchmarking space, RFC 2544).
        let items: Vec<BlockItem<'_>> = (0..BATCH)
            .map(|i| BlockItem {
                cidr: Cidr::new_truncating(
                    IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (b * BATCH + i))),
                    32,
                ),
                ttl: Some(std::time::Duration::from_mins(10)),
                reason: Reason::L7Abuse,
                note: Some("bench"),
            })
            .collect();
        let started = Instant::now();
        store.ban_batch(&items).expect("ban batch");
        let t = started.elapsed().as_secs_f64();
        total += t;
        last_ms = t * 1000.0;
    }
    format!(
        "{{\"batch\": {BATCH}, \"batches\": {BATCHES}, \"bans_per_second\": {:.0}, \"last_batch_ms\": {last_ms:.1}}}",
        f64::from(BATCH * BATCHES) / total
    )
}
