//! `cargo xtask bench xdp`: dropping a flood from blocklisted sources. Two network namespaces
//! over a veth pair; trafgen sends a bounded stream of 60-byte UDP packets from random
//! addresses inside a blocklist of 100 000 prefixes; the receiver filters them with the
//! proxy's XDP program, its TC program, an nftables set (netdev ingress), or not at all.
//! Measured: packets per second sent and dropped, and the CPU the receive path spent per
//! packet (softirq time from /proc/stat: on veth the receive side runs in softirq context).
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util::{Procs, ip, median_range, output, run, to_f64};

const SND: &str = "pxx-snd";
const RCV: &str = "pxx-rcv";
const INSTANCE: &str = "bench-xdp";
const PACKETS: u64 = 2_000_000;
const PREFIXES: usize = 100_000;

/// The namespaces and the veth pair; removed on drop.
struct Net;

impl Net {
    fn up() -> anyhow::Result<Self> {
        Net::down();
        let net = Net;
        for ns in [SND, RCV] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", "pxx-s", "netns", SND, "type", "veth", "peer", "name", "pxx-r", "netns",
            RCV,
        ])?;
        ip(&["-n", SND, "addr", "add", "10.252.1.2/24", "dev", "pxx-s"])?;
        ip(&["-n", RCV, "addr", "add", "10.252.1.1/24", "dev", "pxx-r"])?;
        ip(&["-n", SND, "link", "set", "pxx-s", "up"])?;
        ip(&["-n", RCV, "link", "set", "pxx-r", "up"])?;
        // Like a real host: a default route, so unfiltered packets are not dropped as
        // unroutable right away but go up to UDP.
        ip(&["-n", RCV, "route", "add", "default", "via", "10.252.1.2"])?;
        Ok(net)
    }

    fn down() {
        crate::util::del_netns(&[SND, RCV]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::down();
    }
}

fn mac(ns: &str, dev: &str) -> anyhow::Result<String> {
    let text = output(Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", dev]))
        .with_context(|| format!("reading the MAC address of {dev}"))?;
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .context("no link/ether address")
}

/// Every /24 of 11.0.0.0/8 (65 536, where the flood comes from), then the first /24s of
/// 12.0.0.0/8 up to 100 000: separate entries, none merged.
fn prefixes() -> String {
    let mut out = String::with_capacity(PREFIXES * 16);
    for i in 0..PREFIXES {
        let n = 11u32 << 24 | (u32::try_from(i).unwrap_or(0) * 256);
        let o = n.to_be_bytes();
        let _ = writeln!(out, "{}.{}.{}.0/24", o[0], o[1], o[2]);
    }
    out
}

/// softirq time of all CPUs, in clock ticks (100 Hz).
pub fn softirq_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0)
}

struct Run {
    sent_pps: f64,
    dropped: u64,
    softirq_ns: f64,
}

fn dropped_by_proxy(bin: &Path) -> u64 {
    output(Command::new(bin.join("proxy")).args(["stats", "--json", "--instance", INSTANCE]))
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["counters"]["packets_dropped_blocklist"].as_u64())
        .unwrap_or(0)
}

#[expect(
    clippy::too_many_lines,
    reason = "one run start to end: namespaces, filter, the send, then the counters, in order"
)]
fn one(bin: &Path, dir: &Path, mode: &str, list: &Path) -> anyhow::Result<Run> {
    let _net = Net::up()?;
    let conf = dir.join("trafgen.cfg");
    let hex = |m: &str| {
        m.split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        &conf,
        format!(
            "{{\n  {}, {}, 0x08, 0x00,\n  0x45, 0x00, const16(46), const16(0), const16(0x4000), 64, 17, csumip(14, 33),\n  11, drnd(), drnd(), drnd(),\n  10, 252, 1, 1,\n  const16(1234), const16(9), const16(26), const16(0),\n  fill(0x00, 18),\n}}\n",
            hex(&mac(RCV, "pxx-r")?),
            hex(&mac(SND, "pxx-s")?)
        ),
    )?;
    let mut procs = Procs(Vec::new());
    let state = dir.join(format!("state-{mode}.json"));
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{INSTANCE}"));
    if mode == "xdp" || mode == "tc" {
        let config = dir.join(format!("xdp-{mode}.toml"));
        std::fs::write(
            &config,
            format!(
                "instance = \"{INSTANCE}\"\nstate_file = \"{}\"\nworkers = 1\nlog_level = \"warn\"\n[kernel]\nattach = \"{mode}\"\ninterfaces = [\"pxx-r\"]\n[admin]\nlisten = \"off\"\n[[listener]]\naddress = \"10.252.1.1:8080\"\nupstream = \"o\"\n[upstream.o]\nservers = [\"127.0.0.1:9\"]\n",
                state.display()
            ),
        )?;
        let mut proxy = Command::new("nsenter");
        proxy
            .arg(format!("--net=/run/netns/{RCV}"))
            .arg("--")
            .arg(bin.join("proxy"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs.0.push(proxy.spawn().context("starting the proxy")?);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !Path::new(&format!("/sys/fs/bpf/proxy/{INSTANCE}")).is_dir()
            || output(Command::new(bin.join("proxy")).args([
                "stats",
                "--json",
                "--instance",
                INSTANCE,
            ]))
            .is_none()
        {
            if Instant::now() > deadline {
                bail!("the proxy did not attach ({mode})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        run(Command::new(bin.join("proxy"))
            .args(["blocklist", "import"])
            .arg(list)
            .args(["--instance", INSTANCE, "--state-file"])
            .arg(&state)
            .stdout(Stdio::null()))?;
    }
    if mode == "nftables" {
        let mut rules = String::from(
            "table netdev pxx {\n  set blocked {\n    type ipv4_addr\n    flags interval\n    elements = {\n",
        );
        rules.push_str(
            &std::fs::read_to_string(list)?
                .lines()
                .collect::<Vec<_>>()
                .join(",\n"),
        );
        rules.push_str(
            "\n    }\n  }\n  chain in {\n    type filter hook ingress device \"pxx-r\" priority -500;\n    ip saddr @blocked counter drop\n  }\n}\n",
        );
        let file = dir.join("nft.rules");
        std::fs::write(&file, rules)?;
        run(Command::new("ip")
            .args(["netns", "exec", RCV, "nft", "-f"])
            .arg(&file))?;
    }
    let before = if mode == "xdp" || mode == "tc" {
        dropped_by_proxy(bin)
    } else {
        0
    };
    let soft0 = softirq_ticks();
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "60", "ip", "netns", "exec", SND, "taskset", "-c", "1", "trafgen",
        ])
        .args(["--dev", "pxx-s", "--conf"])
        .arg(&conf)
        // `-t 0ns`: sendto() without a gap instead of the TX ring, whose flush fails with EAGAIN
        // when a native XDP program makes veth queue to its peer's NAPI ring.
        .args([
            "--num",
            &PACKETS.to_string(),
            "--cpus",
            "1",
            "-q",
            "-t",
            "0ns",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running trafgen")?;
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last packets' softirq work finish.
    std::thread::sleep(Duration::from_millis(200));
    let soft = softirq_ticks().saturating_sub(soft0);
    if !out.status.success() {
        bail!(
            "trafgen failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dropped = match mode {
        "xdp" | "tc" => dropped_by_proxy(bin).saturating_sub(before),
        "nftables" => output(Command::new("ip").args([
            "netns", "exec", RCV, "nft", "list", "chain", "netdev", "pxx", "in",
        ]))
        .and_then(|t| {
            let words: Vec<&str> = t.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "packets")?;
            words.get(at + 1)?.parse().ok()
        })
        .unwrap_or(0),
        _ => 0,
    };
    drop(procs);
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{INSTANCE}"));
    Ok(Run {
        sent_pps: to_f64(PACKETS) / elapsed,
        dropped,
        softirq_ns: to_f64(soft) * 10_000_000.0 / to_f64(PACKETS),
    })
}

pub fn xdp(bin: &Path) -> anyhow::Result<(String, String)> {
    let dir: PathBuf = std::env::temp_dir().join(format!("proxy-bench-xdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let list = dir.join("blocklist.txt");
    std::fs::write(&list, prefixes())?;
    let modes = ["none", "xdp", "tc", "nftables"];
    let mut runs: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
    for rep in 0..3 {
        for (i, mode) in modes.iter().enumerate() {
            let r = one(bin, &dir, mode, &list)?;
            eprintln!(
                "    rep {} {mode:<9} sent {:>9.0} pkt/s  dropped {:>8} of {PACKETS}  softirq {:>6.0} ns/pkt",
                rep + 1,
                r.sent_pps,
                r.dropped,
                r.softirq_ns
            );
            if *mode != "none" && r.dropped < PACKETS * 99 / 100 {
                bail!(
                    "{mode} dropped only {} of {PACKETS} blocklisted packets",
                    r.dropped
                );
            }
            runs[i].push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let base_ns = median_range(&runs[0].iter().map(|r| r.softirq_ns).collect::<Vec<_>>()).0;
    let mut md = format!(
        "## xdp: dropping blocklisted sources, XDP against TC and nftables\n\n\
         Two network namespaces over a veth pair. trafgen (on CPU 1) sends {PACKETS} 60-byte UDP packets as fast as \
         it can from random addresses in 11.0.0.0/8, which a blocklist of {PREFIXES} /24 prefixes covers (every /24 of 11/8, then 12/8's first ones). \
         The receiver drops them with this proxy's XDP program, its TC program (both: one LPM-trie lookup per \
         packet), an nftables interval set of the same prefixes at netdev ingress (`ip saddr @blocked counter drop`), \
         or not at all (the packets go up to UDP, which finds no socket; the receiver has a default route, as a real host has). On veth the receive side runs in softirq \
         context on the sending CPU, so the sender's packet rate falls as the receive path costs more; the receive \
         cost per packet is the softirq time of all CPUs (/proc/stat) over the packets. Modes interleaved, 3 \
         repetitions, median (min..max).\n\n\
         | filter | packets/s sent | packets dropped | softirq ns/packet | vs no filter |\n|---|---|---|---|---|\n"
    );
    let mut json = Vec::new();
    for (mode, rs) in modes.iter().zip(&runs) {
        let (pps, lo, hi) = median_range(&rs.iter().map(|r| r.sent_pps).collect::<Vec<_>>());
        let (ns, _, _) = median_range(&rs.iter().map(|r| r.softirq_ns).collect::<Vec<_>>());
        let dropped = rs.iter().map(|r| r.dropped).min().unwrap_or(0);
        let label = match *mode {
            "none" => "no filter",
            "xdp" => "proxy XDP",
            "tc" => "proxy TC",
            _ => "nftables set",
        };
        let _ = writeln!(
            md,
            "| {label} | {pps:.0} ({lo:.0}..{hi:.0}) | {} | {ns:.0} | {:.2} |",
            if *mode == "none" {
                "–".to_owned()
            } else {
                format!("≥ {dropped}")
            },
            ns / base_ns
        );
        json.push(format!(
            "{{\"mode\": \"{label}\", \"sent_pps\": {pps:.0}, \"dropped_pps\": {}, \"softirq_ns_per_packet\": {ns:.1}}}",
            if *mode == "none" { 0.0 } else { pps }
        ));
    }
    let _ = write!(
        md,
        "\nOn veth, native XDP is not the fast path it is on a physical NIC: the packets arrive as socket buffers \
         that veth converts to XDP buffers (and back to the peer's NAPI ring) before the program runs, while TC \
         runs on the socket buffer as it is. On a NIC with a native XDP driver the program runs before any socket \
         buffer exists, which is where XDP's advantage comes from; this virtual machine has none to measure. Both \
         of the proxy's programs do one LPM-trie lookup per packet and cost less than the nftables interval set \
         holding the same prefixes. Stated plainly: with {PREFIXES} prefixes, either program costs more per packet \
         than no filter here, because the flood goes to a closed UDP port, which the stack drops cheaply; the \
         cost is the lookup in an LPM trie of that size (the kernel's trie walks a node per prefix bit; a hash \
         map per prefix length would be the next step). A filter pays off against traffic the stack must work \
         for, such as the SYN flood of the `attack` scenario on an open port.\n"
    );
    md.push('\n');
    Ok((
        md,
        format!(
            "{{\"scenario\": \"xdp\", \"results\": [{}]}}",
            json.join(", ")
        ),
    ))
}

/// What explains the lookup figures.
const LOOKUP_NOTE: &str = "What the figures say: the floor (a non-IP frame: the test run, the parser, the counters) is about 25 ns on this machine; a passed packet that no listed length reaches costs the floor plus the mask reads; each probe of the hash map costs about 20-25 ns (the key's hash and one bucket); `bpf_ktime_get_ns` costs as much again, so entries that never expire are decided without the clock. A blocked /24 whose 20-bit bucket holds no other length is one inline probe, against the trie's walk of up to 24 levels. The index does not win everywhere: traffic beside listed prefixes (\"near\") pays one probe for every length listed near it, and with this list (30 % of the prefixes spread over /8 to /31, so every region holds many lengths) it costs about what the trie walk costs; with 1 000 prefixes the trie is shallow and the two are close; an IPv6 packet in an unlisted region is a little dearer than the trie's miss. Real lists (mostly /32 and /24, some /16) populate few lengths per region, where the index probes once.";

/// The blocked IPv4 packet at 100 000 prefixes under `perf record -e cpu-clock -g` (see
/// lookup-bench's `profile`): where its time goes, by function, as markdown.
fn lookup_profile(bin: &Path) -> anyhow::Result<String> {
    let data = std::env::temp_dir().join(format!("proxy-lookup-{}.perf", std::process::id()));
    let out = Command::new(bin.join("lookup-bench"))
        .env("LOOKUP_BENCH_PROFILE", &data)
        .output()
        .context("running lookup-bench under perf")?;
    anyhow::ensure!(
        out.status.success(),
        "lookup-bench (profile) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = perf_top(&data, 1.0);
    let _ = std::fs::remove_file(&data);
    let report = report?;
    let mut md = String::from(
        "
Where the blocked IPv4 packet's time goes at 100 000 prefixes: `perf record -e cpu-clock -g` on the \
         process running the program through `BPF_PROG_TEST_RUN` for 5 s (the program runs in its system calls), \
         self time by function, 1 % and above. `bpf_prog_..._xdp_filter` is the JIT-compiled program itself \
         (with the array lookups the verifier inlines); the hash map's lookup (`__htab_map_lookup_elem`, \
         with `jhash` inlined into it) and the other helpers show on their own lines; the rest is the test run's \
         loop and timer.\n\n| self % | function |\n|---|---|\n",
    );
    for (pct, sym) in &report {
        let _ = writeln!(md, "| {pct:.1} | `{sym}` |");
    }
    md.push_str(
        "\nRead with the table above: a blocked IPv4 packet at 100 000 prefixes is about half the program's own \
         instructions (parse, masks, counters), a fifth the hash map's lookup (`htab_map_hash`, \
         `lookup_nulls_elem_raw`, `memcmp`: one probe), and a tenth a `memset` subprogram: a BPF-to-BPF call \
         LLVM emits to zero a stack structure on every packet, the next thing to remove (about 5 ns); the rest is \
         the test run's own loop.\n",
    );
    Ok(md)
}

/// `perf report`'s functions by self time (percent, name), at least `min` percent each.
pub fn perf_top(data: &Path, min: f64) -> anyhow::Result<Vec<(f64, String)>> {
    let out = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args([
            "--stdio",
            "--no-children",
            "--sort",
            "sym",
            "-g",
            "none",
            "-q",
        ])
        .arg(format!("--percent-limit={min}"))
        .output()
        .context("running perf report")?;
    anyhow::ensure!(
        out.status.success(),
        "perf report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "    45.12%  [k] bpf_prog_1234_xdp_filter"
            let (pct, rest) = l.trim().split_once('%')?;
            let sym = rest.trim();
            let sym = sym
                .strip_prefix("[k]")
                .or_else(|| sym.strip_prefix("[.]"))
                .unwrap_or(sym)
                .trim();
            Some((pct.trim().parse().ok()?, sym.to_owned()))
        })
        .collect())
}

/// Runs one of the tests crate's bench binaries (`name`, in `bin`), which prints one JSON
/// object: its text and its value.
pub fn run_json(bin: &Path, name: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let out = std::process::Command::new(bin.join(name))
        .output()
        .with_context(|| format!("running {name}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let v = serde_json::from_str(&text).with_context(|| format!("{name}'s output"))?;
    Ok((text, v))
}

/// `cargo xtask bench lookup`: the XDP program's own cost per packet by blocklist size
/// (`BPF_PROG_TEST_RUN`, kernel-timed; see tests/src/bin/lookup-bench.rs), through the index
/// and through the LPM tries (the lookup before #15) on the same lists in the same run, and
/// the rate of blocks the map API sustains.
pub fn lookup(bin: &Path) -> anyhow::Result<(String, String)> {
    let (text, v) = run_json(bin, "lookup-bench")?;
    let cell = |x: &serde_json::Value| {
        x.as_f64()
            .map_or_else(|| "–".to_owned(), |n| format!("{n:.0}"))
    };
    let mut md = format!(
        "## lookup: what the XDP program costs per packet, by blocklist size\n\n\
         The program's own time per packet, measured by the kernel (`BPF_PROG_TEST_RUN`, {} repetitions per \
         figure, cache-warm, one CPU), with IPv4 prefixes 40 % /32, 30 % /24 and 30 % spread over /8 to /31, and a \
         quarter as many IPv6 prefixes (40 % /128, 30 % /64, 30 % over /32 to /127; at most the map's 262 144). \
         Each figure through the index the programs use now (hash maps probed per populated length) and, in \
         brackets, through the LPM tries they walked before #15, on the same lists in the same run (a diagnostic \
         switch in `LIST_FLAGS`). Blocked packets come from a /24 and a /64 of the list; passed ones from \
         127.0.0.1 and fe80::1, which no prefix holds; a non-IP frame (ARP) gives the floor: the test run, \
         the parser and the counters.\n\n\
         Each figure is the median of 3 repetitions, the two lookups interleaved; \"near\" packets come from \
         the blocked /24's /16 and the /64's /48 (legitimate traffic beside listed prefixes: it pays a probe for \
         every length listed near it).\n\n\
         | IPv4 / IPv6 prefixes | non-IP ns | blocked IPv4 ns | passed IPv4 ns | near IPv4 ns | blocked IPv6 ns | passed IPv6 ns | near IPv6 ns |\n\
         |---|---|---|---|---|---|---|---|\n",
        v["repeat"]
    );
    let mut at_100k = (f64::NAN, f64::NAN);
    for l in v["levels"].as_array().into_iter().flatten() {
        let (i, t) = (&l["index"], &l["lpm"]);
        if l["prefixes_v4"].as_u64() == Some(100_000) {
            at_100k = (
                i["blocked_v4_ns"].as_f64().unwrap_or(f64::NAN),
                t["blocked_v4_ns"].as_f64().unwrap_or(f64::NAN),
            );
        }
        let both = |k: &str| format!("{} ({})", cell(&i[k]), cell(&t[k]));
        let _ = writeln!(
            md,
            "| {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            l["prefixes_v4"],
            l["prefixes_v6"],
            cell(&i["non_ip_ns"]),
            both("blocked_v4_ns"),
            both("passed_v4_ns"),
            both("near_v4_ns"),
            both("blocked_v6_ns"),
            both("passed_v6_ns"),
            both("near_v6_ns"),
        );
    }
    let _ = writeln!(md, "\n{LOOKUP_NOTE}");
    md.push_str(&lookup_profile(bin)?);
    let (index, lpm) = at_100k;
    let _ = write!(
        md,
        "\nBlocks through the map API (list trie, index hash map, length mask: what `proxy blocklist add` and \
         automatic bans do per prefix, without the state file): {} per second while the lists grew. Automatic \
         bans as the daemon applies them (`ListStore::ban_batch`: the state file's lock and read, the maps, an \
         atomic rewrite with fsync), in batches of {} (what piles up in its 100 ms batching window under a flood \
         of abusers), {} batches into a state file growing from empty: {} bans per second, the last batch \
         {} ms. The data path does not wait for any of it: the XDP program reads the maps while they change, \
         and the daemon applies bans off its request path (a channel, then this batch on the blocking pool).\n\n\
         **Against #15's target, this run:** a blocked IPv4 packet at 100 000 prefixes costs {index:.0} ns through \
         the index, {:.2}x the LPM tries' {lpm:.0} ns (target: at most 47 ns, a third of the LPM figure: {}).\n",
        v["blocks_per_second"],
        v["daemon_bans"]["batch"],
        v["daemon_bans"]["batches"],
        v["daemon_bans"]["bans_per_second"],
        v["daemon_bans"]["last_batch_ms"],
        index / lpm,
        if index <= 47.0 && index * 3.0 <= lpm {
            "met"
        } else {
            "missed"
        }
    );
    Ok((md, text))
}
