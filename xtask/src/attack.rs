//! `cargo xtask bench attack`: legitimate HTTP throughput and p99 while a bounded SYN flood from
//! a blocked source address hits the proxy, for: no flood; the blocklist in XDP; the same
//! blocklist enforced in userspace at `accept()` (`attach = "none"`); the same blocklist in
//! nftables (netdev ingress). All inside network namespaces this benchmark makes and removes.
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util::{Procs, ip, median_range, output, run, to_f64};

const SRV: &str = "pxb-srv";
const LEGIT: &str = "pxb-legit";
const FLOOD: &str = "pxb-flood";
const INSTANCE: &str = "bench-attack";
const RUN: Duration = Duration::from_secs(6);
const SRV_LEGIT: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 1);
const LEGIT_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 2);
const SRV_FLOOD: Ipv4Addr = Ipv4Addr::new(10, 251, 2, 1);
const FLOOD_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 2, 2);

/// The namespaces; removed on drop.
struct Net;

impl Net {
    fn up() -> anyhow::Result<Self> {
        Net::down();
        let net = Net;
        for ns in [SRV, LEGIT, FLOOD] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        for (srv_if, cli_if, ns, srv_ip, cli_ip) in [
            ("pxb-s1", "pxb-c1", LEGIT, SRV_LEGIT, LEGIT_IP),
            ("pxb-s2", "pxb-c2", FLOOD, SRV_FLOOD, FLOOD_IP),
        ] {
            ip(&[
                "link", "add", srv_if, "netns", SRV, "type", "veth", "peer", "name", cli_if,
                "netns", ns,
            ])?;
            ip(&[
                "-n",
                SRV,
                "addr",
                "add",
                &format!("{srv_ip}/24"),
                "dev",
                srv_if,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{cli_ip}/24"),
                "dev",
                cli_if,
            ])?;
            ip(&["-n", SRV, "link", "set", srv_if, "up"])?;
            ip(&["-n", ns, "link", "set", cli_if, "up"])?;
        }
        Ok(net)
    }

    fn down() {
        crate::util::del_netns(&[SRV, LEGIT, FLOOD]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::down();
    }
}

fn in_ns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the loop folds the sum to 16 bits before the cast"
)]
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends TCP SYNs from `src` to `dst:port` through a raw socket, from inside network namespace
/// `ns`, until `stop` or `limit`; returns how many were sent. Bounded in time by the caller.
/// `spoof`: each SYN from a random address of 10.252.0.0/16 and with the options a Linux client
/// sends (MSS, SACK permitted, timestamps, window scale), as a spoofed flood looks.
#[expect(
    clippy::cast_possible_truncation,
    reason = "AF_INET (2) fits a sa_family_t, size_of::<sockaddr_in>() (16) a socklen_t, the packet (60 bytes) and its TCP header length fit their fields"
)]
fn syn_flood(
    ns: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    spoof: bool,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns on a namespace fd only changes this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let tcp_len: usize = if spoof { 40 } else { 20 };
    let mut packet = [0u8; 60];
    let packet_len = 20 + tcp_len;
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(packet_len as u16).to_be_bytes());
    packet[8] = 64;
    packet[9] = 6;
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    packet[22..24].copy_from_slice(&port.to_be_bytes());
    packet[32] = ((tcp_len / 4) as u8) << 4;
    packet[33] = 0x02;
    packet[34..36].copy_from_slice(&64240u16.to_be_bytes());
    if spoof {
        // MSS 1460, SACK permitted, timestamps (TSval set per packet), NOP, window scale 7.
        packet[40..48].copy_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
        packet[56..60].copy_from_slice(&[1, 3, 3, 7]);
    }
    let pseudo_of = |src: Ipv4Addr| -> u32 {
        [src.octets(), dst.octets()]
            .iter()
            .flat_map(|o| {
                [
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([o[2], o[3]]),
                ]
            })
            .map(u32::from)
            .sum::<u32>()
            + 6
            + tcp_len as u32
    };
    let mut pseudo = pseudo_of(src);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let mut sport: u16 = 1024;
    let mut seq: u32 = 1;
    let deadline = Instant::now() + RUN * 3;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        sport = sport.wrapping_add(1).max(1024);
        seq = seq.wrapping_mul(1_103_515_245).wrapping_add(12345);
        if spoof {
            let from = Ipv4Addr::from(0x0afc_0000 | (seq >> 16));
            packet[12..16].copy_from_slice(&from.octets());
            pseudo = pseudo_of(from);
            packet[48..52].copy_from_slice(&seq.to_be_bytes());
        }
        packet[20..22].copy_from_slice(&sport.to_be_bytes());
        packet[24..28].copy_from_slice(&seq.to_be_bytes());
        packet[36..38].copy_from_slice(&[0, 0]);
        let sum = checksum(&packet[20..packet_len], pseudo);
        packet[36..38].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: sendto with a valid buffer and a sockaddr_in of the right size.
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet_len,
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n > 0 {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    Ok(())
}

struct Run {
    rps: f64,
    p99_ms: f64,
    flood_pps: f64,
}

/// wrk's "Requests/sec" and 99th percentile latency (ms).
fn parse_wrk(out: &str) -> Option<(f64, f64)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)?;
    let ms = if let Some(v) = p99.strip_suffix("ms") {
        v.parse().ok()?
    } else if let Some(v) = p99.strip_suffix("us") {
        v.parse::<f64>().ok()? / 1000.0
    } else if let Some(v) = p99.strip_suffix('s') {
        v.parse::<f64>().ok()? * 1000.0
    } else {
        return None;
    };
    Some((rps, ms))
}

/// wrk from the legit namespace on CPU 1 for [`RUN`].
fn legit_load(url: &str) -> anyhow::Result<std::process::Output> {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            LEGIT,
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c32",
            &format!("-d{}s", RUN.as_secs()),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")
}

/// Starts the demo origin and the proxy (`config`) in the server namespace, both on CPU 0,
/// into `procs`; returns the legit client's URL once the proxy answers there.
fn start_servers(
    bin: &Path,
    config: &Path,
    mode: &str,
    procs: &mut Procs,
) -> anyhow::Result<String> {
    let mut origin = in_ns(SRV, &bin.join("demo-origin"));
    origin
        .args(["--listen", "127.0.0.1:9000"])
        .stderr(Stdio::null());
    procs.0.push(
        Command::new("taskset")
            .args(["-c", "0"])
            .args(std::iter::once(origin.get_program()).chain(origin.get_args()))
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut proxy = Command::new("taskset");
    proxy
        .args([
            "-c",
            "0",
            "nsenter",
            &format!("--net=/run/netns/{SRV}"),
            "--",
        ])
        .arg(bin.join("proxy"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn");
    procs.0.push(proxy.spawn().context("starting the proxy")?);
    // Ready when the legit namespace gets an answer.
    let url = format!("http://{SRV_LEGIT}:8080/");
    let deadline = Instant::now() + Duration::from_secs(15);
    while output(Command::new("ip").args([
        "netns",
        "exec",
        LEGIT,
        "curl",
        "-s",
        "-m",
        "1",
        "-o",
        "/dev/null",
        &url,
    ]))
    .is_none()
    {
        if Instant::now() > deadline {
            bail!("the proxy did not answer in the bench namespaces ({mode})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(url)
}

fn one(bin: &Path, dir: &Path, mode: &str) -> anyhow::Result<Run> {
    let _net = Net::up()?;
    let attach = if mode == "xdp" { "xdp" } else { "none" };
    let config = dir.join(format!("attack-{mode}.toml"));
    std::fs::write(
        &config,
        format!(
            "instance = \"{INSTANCE}\"\nstate_file = \"{}\"\nworkers = 1\n[kernel]\nattach = \"{attach}\"\ninterfaces = [\"pxb-s1\", \"pxb-s2\"]\n[[listener]]\naddress = \"0.0.0.0:8080\"\nupstream = \"o\"\n[upstream.o]\nservers = [\"127.0.0.1:9000\"]\n",
            dir.join(format!("state-{mode}.json")).display()
        ),
    )?;
    let _ = std::fs::remove_file(dir.join(format!("state-{mode}.json")));
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{INSTANCE}"));
    let mut procs = Procs(Vec::new());
    let url = start_servers(bin, &config, mode, &mut procs)?;
    let proxy_bin = bin.join("proxy");
    if mode != "none" {
        run(Command::new(&proxy_bin)
            .args([
                "blocklist",
                "add",
                &FLOOD_IP.to_string(),
                "--instance",
                INSTANCE,
            ])
            .arg("--state-file")
            .arg(dir.join(format!("state-{mode}.json")))
            .stdout(Stdio::null()))?;
    }
    if mode == "nftables" {
        let rules = format!(
            "table netdev pxb {{\n  chain in {{\n    type filter hook ingress device \"pxb-s2\" priority -500;\n    ip saddr {FLOOD_IP} drop\n  }}\n}}\n"
        );
        let mut c = Command::new("ip");
        c.args(["netns", "exec", SRV, "nft", "-f", "-"])
            .stdin(Stdio::piped());
        let mut child = c.spawn()?;
        std::io::Write::write_all(child.stdin.as_mut().expect("piped"), rules.as_bytes())?;
        drop(child.stdin.take());
        if !child.wait()?.success() {
            bail!("nft rules failed");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = (mode != "baseline").then(|| {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            // SAFETY: sched_setaffinity on this thread with a valid, zeroed-then-set cpu_set_t.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(1, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
            }
            syn_flood(FLOOD, FLOOD_IP, SRV_FLOOD, 8080, false, &stop, &sent)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let wrk = legit_load(&url)?;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(f) = flood {
        f.join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{INSTANCE}"));
    let text = String::from_utf8_lossy(&wrk.stdout);
    let (rps, p99_ms) =
        parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))?;
    Ok(Run {
        rps,
        p99_ms,
        flood_pps: to_f64(sent.load(Ordering::Relaxed)) / elapsed,
    })
}

/// What one spoofed-flood mode measured.
struct SpoofRun {
    rps: f64,
    p99_ms: f64,
    /// SYNs per second the sender pushed with nothing else on its CPU.
    alone_pps: f64,
    /// SYN-ACKs per second that reached the flood namespace then.
    synack_pps: f64,
    /// softirq time (all CPUs) per SYN then: on veth the receive side runs in softirq.
    softirq_ns: f64,
}

/// A proxy in client namespace `ns` whose only job is its XDP program on `iface`: a veth takes
/// the `XDP_TX` frames of its peer only when it runs an XDP program itself.
fn xdp_receiver(
    bin: &Path,
    dir: &Path,
    ns: &str,
    iface: &str,
) -> anyhow::Result<std::process::Child> {
    let instance = format!("bench-rx-{iface}");
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{instance}"));
    let config = dir.join(format!("{instance}.toml"));
    std::fs::write(
        &config,
        format!(
            "instance = \"{instance}\"\nstate_file = \"{}\"\nworkers = 1\n[kernel]\nattach = \"xdp\"\ninterfaces = [\"{iface}\"]\n[[listener]]\naddress = \"127.0.0.1:7001\"\nupstream = \"o\"\n[upstream.o]\nservers = [\"127.0.0.1:9\"]\n",
            dir.join(format!("{instance}.json")).display()
        ),
    )?;
    let mut cmd = in_ns(ns, &bin.join("proxy"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    let child = cmd.spawn().context("starting an XDP receiver")?;
    // Attached when its listener answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    while output(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "curl",
        "-s",
        "-m",
        "1",
        "-o",
        "/dev/null",
        "http://127.0.0.1:7001/",
    ]))
    .is_none()
    {
        if Instant::now() > deadline {
            bail!("the XDP receiver in {ns} did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// A kernel counter of an instance (`proxy stats --json`), 0 when it cannot be read.
fn xdp_counter(bin: &Path, state: &Path, instance: &str, name: &str) -> u64 {
    output(
        Command::new(bin.join("proxy"))
            .args(["stats", "--json", "--instance", instance])
            .arg("--state-file")
            .arg(state),
    )
    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    .and_then(|v| v["counters"][name].as_u64())
    .unwrap_or(0)
}

/// nftables' synproxy alone (the stack answers every SYN with a cookie, netfilter completes
/// the handshake): the same table the daemon installs for the XDP SYN proxy.
const NFT_SYNPROXY: &str = "table inet pxb_synproxy {
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    tcp dport 8080 tcp flags & (fin|syn|rst|ack) == syn notrack
  }
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 8080 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    tcp dport 8080 ct state invalid drop
  }
}
";

/// One spoofed-flood mode: `drop` (the flood's sources blocklisted: dropped in XDP, the
/// floor every SYN costs the sender's CPU), `cookies` (the kernel's own SYN cookies), `nft`
/// (nftables' synproxy), `xdp` (the XDP SYN proxy).
#[expect(
    clippy::too_many_lines,
    reason = "one run start to end: namespaces, servers, the flood alone, then flood and load"
)]
fn one_spoofed(
    bin: &Path,
    dir: &Path,
    mode: &str,
    profile: Option<&Path>,
) -> anyhow::Result<SpoofRun> {
    let _net = Net::up()?;
    // The stack's SYN-ACKs to the spoofed sources go to the flood namespace (as XDP_TX's do),
    // which drops them.
    ip(&[
        "-n",
        SRV,
        "route",
        "add",
        "10.252.0.0/16",
        "via",
        &FLOOD_IP.to_string(),
    ])?;
    let (attach, syn_proxy) = match mode {
        "xdp" => ("xdp", "true"),
        "drop" => ("xdp", "false"),
        _ => ("none", "false"),
    };
    let config = dir.join(format!("spoof-{mode}.toml"));
    std::fs::write(
        &config,
        format!(
            "instance = \"{INSTANCE}\"\nstate_file = \"{}\"\nworkers = 1\n[kernel]\nattach = \"{attach}\"\ninterfaces = [\"pxb-s1\", \"pxb-s2\"]\n[[listener]]\naddress = \"0.0.0.0:8080\"\nupstream = \"o\"\nsyn_proxy = {syn_proxy}\n[upstream.o]\nservers = [\"127.0.0.1:9000\"]\n",
            dir.join(format!("spoof-{mode}.json")).display()
        ),
    )?;
    let _ = std::fs::remove_file(dir.join(format!("spoof-{mode}.json")));
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{INSTANCE}"));
    let mut procs = Procs(Vec::new());
    // In every mode: the client veths run an XDP program (needed for XDP_TX, harmless
    // otherwise), and the flood namespace's drops the SYN-ACKs coming back (the attacker's
    // cost, not the receiver's: dropped there as cheaply as possible, and counted).
    procs.0.push(xdp_receiver(bin, dir, LEGIT, "pxb-c1")?);
    procs.0.push(xdp_receiver(bin, dir, FLOOD, "pxb-c2")?);
    run(Command::new(bin.join("proxy"))
        .args([
            "blocklist",
            "add",
            &format!("{SRV_FLOOD}/32"),
            "--instance",
            "bench-rx-pxb-c2",
        ])
        .arg("--state-file")
        .arg(dir.join("bench-rx-pxb-c2.json"))
        .stdout(Stdio::null()))?;
    if mode == "nft" {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", SRV, "nft", "-f", "-"])
            .stdin(Stdio::piped());
        let mut child = c.spawn()?;
        std::io::Write::write_all(
            child.stdin.as_mut().expect("piped"),
            NFT_SYNPROXY.as_bytes(),
        )?;
        drop(child.stdin.take());
        if !child.wait()?.success() {
            bail!("nft synproxy rules failed");
        }
        run(Command::new("ip").args([
            "netns",
            "exec",
            SRV,
            "sysctl",
            "-q",
            "-w",
            "net.netfilter.nf_conntrack_tcp_loose=0",
        ]))?;
    }
    let url = start_servers(bin, &config, mode, &mut procs)?;
    if mode == "drop" {
        run(Command::new(bin.join("proxy"))
            .args(["blocklist", "add", "10.252.0.0/16", "--instance", INSTANCE])
            .arg("--state-file")
            .arg(dir.join(format!("spoof-{mode}.json")))
            .stdout(Stdio::null()))?;
    }
    let flood = |stop: Arc<AtomicBool>, sent: Arc<AtomicU64>| {
        std::thread::spawn(move || {
            // SAFETY: sched_setaffinity on this thread with a valid, zeroed-then-set cpu_set_t.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(1, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
            }
            syn_flood(FLOOD, FLOOD_IP, SRV_FLOOD, 8080, true, &stop, &sent)
        })
    };
    // The flood alone: what its CPU pushes, and how many SYN-ACKs come back.
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let rx_state = dir.join("bench-rx-pxb-c2.json");
    let synacks_before = xdp_counter(
        bin,
        &rx_state,
        "bench-rx-pxb-c2",
        "packets_dropped_blocklist",
    );
    // A profiling run samples CPU 1 (the sender and, on veth, every packet's receive path)
    // while the flood runs alone.
    let perf = profile
        .map(|data| {
            Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-a",
                    "-C",
                    "1",
                    "-g",
                    "-e",
                    "cpu-clock:k",
                    "-F",
                    "2999",
                ])
                .arg("-o")
                .arg(data)
                .args(["--", "sleep", "3"])
                .stdout(Stdio::null())
                .spawn()
                .context("perf record (linux-perf installed?)")
        })
        .transpose()?;
    let soft0 = crate::xdpbench::softirq_ticks();
    let started = Instant::now();
    let t = flood(stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    t.join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    if let Some(mut perf) = perf {
        let status = perf.wait()?;
        anyhow::ensure!(status.success(), "perf record failed: {status}");
    }
    let alone = started.elapsed().as_secs_f64();
    // Let the last packets' softirq work finish.
    std::thread::sleep(Duration::from_millis(100));
    let soft = crate::xdpbench::softirq_ticks().saturating_sub(soft0);
    let syns = sent.load(Ordering::Relaxed);
    let softirq_ns = to_f64(soft) * 10_000_000.0 / to_f64(syns.max(1));
    let alone_pps = to_f64(syns) / alone;
    // What the server's XDP program saw (a check that each mode did what it says).
    let state = dir.join(format!("spoof-{mode}.json"));
    let counters = format!(
        "server XDP: seen {} dropped_blocklist {} syn_cookies_sent {}",
        xdp_counter(bin, &state, INSTANCE, "packets_seen"),
        xdp_counter(bin, &state, INSTANCE, "packets_dropped_blocklist"),
        xdp_counter(bin, &state, INSTANCE, "syn_cookies_sent"),
    );
    eprintln!("      {mode}: {syns} SYNs in {alone:.1} s, softirq {soft} ticks; {counters}");
    let synack_pps = to_f64(
        xdp_counter(
            bin,
            &rx_state,
            "bench-rx-pxb-c2",
            "packets_dropped_blocklist",
        )
        .saturating_sub(synacks_before),
    ) / alone;
    // Then legitimate load beside it (not in a profiling run).
    let wrk = if profile.is_none() {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let t = flood(stop.clone(), sent);
        std::thread::sleep(Duration::from_millis(300));
        let wrk = legit_load(&url)?;
        stop.store(true, Ordering::Relaxed);
        t.join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        Some(wrk)
    } else {
        None
    };
    drop(procs);
    for rx in ["bench-rx-pxb-c1", "bench-rx-pxb-c2", INSTANCE] {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/proxy/{rx}"));
    }
    let (rps, p99_ms) = match wrk {
        Some(wrk) => {
            let text = String::from_utf8_lossy(&wrk.stdout);
            parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))?
        }
        None => (f64::NAN, f64::NAN),
    };
    Ok(SpoofRun {
        rps,
        p99_ms,
        alone_pps,
        synack_pps,
        softirq_ns,
    })
}

/// The spoofed-source part of `bench attack`: the Markdown section and JSON entries.
fn spoofed(bin: &Path, dir: &Path, base_rps: f64) -> anyhow::Result<(String, Vec<String>)> {
    let modes = ["drop", "cookies", "nft", "xdp"];
    let mut runs: Vec<Vec<SpoofRun>> = modes.iter().map(|_| Vec::new()).collect();
    for rep in 0..3 {
        for (i, mode) in modes.iter().enumerate() {
            let r = one_spoofed(bin, dir, mode, None)?;
            eprintln!(
                "    rep {} spoofed {mode:<8} legit {:>8.0} req/s  p99 {:>6.2} ms  flood alone {:>8.0} SYN/s  SYN-ACKs {:>8.0}/s  softirq {:>6.0} ns/SYN",
                rep + 1,
                r.rps,
                r.p99_ms,
                r.alone_pps,
                r.synack_pps,
                r.softirq_ns
            );
            runs[i].push(r);
        }
    }
    let mut md = format!(
        "### spoofed-source SYN flood: the kernel's SYN cookies, nftables synproxy, the XDP SYN proxy\n\n\
         The same namespaces; the flood now comes from random sources in 10.252.0.0/16 with a Linux client's \
         options (MSS, SACK, timestamps, window scale), so no blocklist or per-source limit can stop it. First the \
         flood alone for 3 s (CPU 1: the sender and, on veth, the receive path of every SYN and the SYN-ACK's way \
         back into the flood namespace): the SYNs it pushes per second, the SYN-ACKs that come back, and the \
         softirq time (all CPUs, /proc/stat) per SYN: on veth the receive side (XDP, the stack, netfilter) runs in \
         softirq. The flood namespace's veth runs an XDP program that drops the SYN-ACKs coming back (and counts \
         them), so the attacker's side costs little and the same in every mode. The first row drops the whole \
         flood in XDP on the server (its sources blocklisted): what a mode costs above that floor is what \
         answering a SYN costs the receiver. Then \
         wrk beside it ({} s, keep-alive connections opened through the same path). Each client namespace runs an idle \
         proxy for its XDP program (a veth takes its peer's `XDP_TX` frames only then); the stack's SYN-ACKs are \
         routed to the flood namespace. Kernel cookies: `tcp_syncookies = 1` \
         (cookies once the SYN queue overflows, the default). 3 repetitions, median (min..max).\n\n\
         | mode | legit req/s | vs no flood | legit p99 ms | flood alone SYN/s | SYN-ACKs/s | softirq ns per SYN | above the XDP-drop floor | vs kernel cookies |\n|---|---|---|---|---|---|---|---|---|\n",
        RUN.as_secs()
    );
    let mut json = Vec::new();
    let ns_of =
        |rs: &[SpoofRun]| median_range(&rs.iter().map(|r| r.softirq_ns).collect::<Vec<_>>()).0;
    let floor = ns_of(&runs[0]);
    let kernel_ns = ns_of(&runs[1]) - floor;
    for (mode, rs) in modes.iter().zip(&runs) {
        let (rps, rlo, rhi) = median_range(&rs.iter().map(|r| r.rps).collect::<Vec<_>>());
        let (p99, plo, phi) = median_range(&rs.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
        let (pps, _, _) = median_range(&rs.iter().map(|r| r.alone_pps).collect::<Vec<_>>());
        let (synacks, _, _) = median_range(&rs.iter().map(|r| r.synack_pps).collect::<Vec<_>>());
        let per_syn = ns_of(rs);
        let above = per_syn - floor;
        let label = match *mode {
            "drop" => "(floor) flood sources blocklisted, XDP drop",
            "cookies" => "kernel SYN cookies only",
            "nft" => "nftables synproxy",
            _ => "XDP SYN proxy",
        };
        let _ = writeln!(
            md,
            "| {label} | {rps:.0} ({rlo:.0}..{rhi:.0}) | {:.2} | {p99:.2} ({plo:.2}..{phi:.2}) | {pps:.0} | {synacks:.0} | {per_syn:.0} | {above:.0} | {:.2} |",
            rps / base_rps,
            above / kernel_ns
        );
        json.push(format!(
            "{{\"mode\": \"spoofed-{mode}\", \"legit_rps\": {rps:.0}, \"legit_p99_ms\": {p99:.3}, \"flood_alone_pps\": {pps:.0}, \"softirq_ns_per_syn\": {per_syn:.0}, \"ns_above_floor\": {above:.0}, \"synack_pps\": {synacks:.0}}}"
        ));
    }
    // #15's goals, from this run.
    let rps_of = |rs: &[SpoofRun]| median_range(&rs.iter().map(|r| r.rps).collect::<Vec<_>>()).0;
    let xdp_share = rps_of(&runs[3]) / base_rps;
    let xdp_above = ns_of(&runs[3]) - floor;
    let _ = write!(
        md,
        "\n**Against #15's goals, this run:** legitimate throughput under the spoofed flood with the XDP SYN proxy \
         {:.2}x of no flood (goal: at least 0.90: {}; on this box wrk shares CPU 1 with the sender, and even the \
         XDP-drop floor gets {:.2}x); softirq per flood SYN above the floor {xdp_above:.0} ns against the kernel's \
         own SYN cookies' {kernel_ns:.0} ns: {:.2}x (goal: at most 1/3: {}).\n",
        xdp_share,
        if xdp_share >= 0.9 { "met" } else { "missed" },
        rps_of(&runs[0]) / base_rps,
        xdp_above / kernel_ns,
        if xdp_above * 3.0 <= kernel_ns {
            "met"
        } else {
            "missed"
        }
    );
    md.push_str(&spoofed_profiles(bin, dir)?);
    md.push('\n');
    Ok((md, json))
}

/// What the profiles have shown (sessions 7 and 8); kept with the tables they explain.
const PROFILE_NOTE: &str = "\nWhat the profiles say. Every mode pays the sender's side on CPU 1 (`raw_sendmsg`, `__ip_select_ident`, \
`fib_table_lookup`: the raw-socket flood itself) and, on veth, the copy of each frame into a page with XDP headroom: that \
is the floor. Above it, the kernel's cookies run the whole receive path of a SYN through TCP (`__inet_lookup_established`, \
the listener, the cookie, a SYN-ACK built as a socket buffer and routed back through `ip_finish_output2`). The XDP SYN \
proxy's share is the program (`xdp_synproxy`: the cookie's SipHash, the option walk, the rewrite and checksums), the filter \
in front of it (`xdp_filter`), and `__inet_lookup_established` again: `bpf_skc_lookup_tcp`, which the SYN proxy calls for \
every SYN so that a SYN matching an existing connection or TIME_WAIT (NAT port reuse) goes to the stack instead of getting \
a cookie; about as much as the program itself. Then `XDP_TX` puts the SYN-ACK on the peer veth, whose NAPI poll \
(`veth_poll`) and XDP program run on the same CPU: the attacker side's receive work, counted here because veth has no \
wire. So on this box the XDP path is 0.5 to 0.75 of the kernel cookies' cost above the floor (three sessions' runs), not \
the third the goal asks for; the socket lookup per SYN is the next thing to cut (only SYNs from sources with a recent \
connection need it), and a NIC, where `XDP_TX` is a DMA to the wire and no page copy happens, is where the goal can be \
judged.\n";

/// The flood alone once more for the floor, the kernel's cookies and the XDP SYN proxy, under
/// `perf record` on CPU 1: where a SYN's time goes in each, as markdown.
fn spoofed_profiles(bin: &Path, dir: &Path) -> anyhow::Result<String> {
    let modes = [
        ("drop", "floor (XDP drop)"),
        ("cookies", "kernel SYN cookies"),
        ("xdp", "XDP SYN proxy"),
    ];
    let mut tops = Vec::new();
    for (mode, _) in modes {
        let data = dir.join(format!("spoof-{mode}.perf"));
        let r = one_spoofed(bin, dir, mode, Some(&data))?;
        let top = crate::xdpbench::perf_top(&data, 1.5)?;
        let _ = std::fs::remove_file(&data);
        eprintln!(
            "    profile {mode}: {:.0} SYN/s; {}",
            r.alone_pps,
            top.iter()
                .take(4)
                .map(|(p, s)| format!("{s} {p:.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tops.push((r.alone_pps, top));
    }
    let mut md = String::from(
        "\nWhere CPU 1's time goes with the flood alone (`perf record -a -C 1 -g -e cpu-clock:k`, kernel time \
         only, 3 s, one more run per mode after the measured ones): the sender's system calls and, on veth, the \
         receive path of each SYN and the way back of each SYN-ACK all run there (the sender's own user-space \
         work is left out). Self time by function, 1.5 % and above of the kernel's samples; SYN/s is what the \
         sender pushed while sampled.\n",
    );
    for ((_, label), (pps, top)) in modes.iter().zip(&tops) {
        let _ = write!(
            md,
            "\n{label}, {pps:.0} SYN/s:\n\n| self % | function |\n|---|---|\n"
        );
        for (pct, sym) in top {
            let _ = writeln!(md, "| {pct:.1} | `{sym}` |");
        }
    }
    md.push_str(PROFILE_NOTE);
    Ok(md)
}

/// Runs the scenario; returns the Markdown section and a JSON object.
pub fn attack(bin: &Path) -> anyhow::Result<(String, String)> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("proxy-bench-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let modes = ["baseline", "xdp", "userspace", "nftables"];
    let mut runs: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
    for rep in 0..3 {
        for (i, mode) in modes.iter().enumerate() {
            let r = one(bin, &dir, mode)?;
            eprintln!(
                "    rep {} {mode:<10} legit {:>8.0} req/s  p99 {:>6.2} ms  flood {:>8.0} SYN/s",
                rep + 1,
                r.rps,
                r.p99_ms,
                r.flood_pps
            );
            runs[i].push(r);
        }
    }
    let base_rps = median_range(&runs[0].iter().map(|r| r.rps).collect::<Vec<_>>()).0;
    let (spoofed_md, spoofed_json) = spoofed(bin, &dir, base_rps)?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut md = format!(
        "## attack: legitimate traffic under a SYN flood from a blocked address\n\n\
         Three namespaces: the proxy (1 worker) and the demo origin pinned to CPU 0; wrk (1 thread, 32 connections, {} s) \
         from a second, clean namespace and the flood sender (a raw-socket SYN flood as fast as it goes, from one blocked \
         address) from a third, both on CPU 1. On veth the receive work of a packet (XDP, netfilter, the TCP stack) runs \
         on the sending CPU, so the flood's cost shows up as fewer SYNs pushed per second by the sender: compare the flood \
         rate between modes, and legit req/s against no flood (wrk shares CPU 1 with the sender in every flood mode). In \
         the accept() mode the kernel answers every SYN (SYN-ACK, then the flood namespace's RST); the proxy never sees \
         these half-open connections. Modes interleaved, 3 repetitions, median (min..max).\n\n\
         | mode | legit req/s | vs no flood | legit p99 ms | flood SYN/s sent |\n|---|---|---|---|---|\n",
        RUN.as_secs()
    );
    let mut json = Vec::new();
    for (mode, rs) in modes.iter().zip(&runs) {
        let (rps, rlo, rhi) = median_range(&rs.iter().map(|r| r.rps).collect::<Vec<_>>());
        let (p99, plo, phi) = median_range(&rs.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
        let (pps, _, _) = median_range(&rs.iter().map(|r| r.flood_pps).collect::<Vec<_>>());
        let label = match *mode {
            "baseline" => "no flood",
            "xdp" => "blocklist in XDP",
            "userspace" => "blocklist at accept() (attach none)",
            _ => "nftables netdev ingress drop",
        };
        let _ = writeln!(
            md,
            "| {label} | {rps:.0} ({rlo:.0}..{rhi:.0}) | {:.2} | {p99:.2} ({plo:.2}..{phi:.2}) | {pps:.0} |",
            rps / base_rps
        );
        json.push(format!("{{\"mode\": \"{mode}\", \"legit_rps\": {rps:.0}, \"legit_p99_ms\": {p99:.3}, \"flood_pps\": {pps:.0}}}"));
    }
    md.push('\n');
    md.push_str(&spoofed_md);
    json.extend(spoofed_json);
    Ok((
        md,
        format!(
            "{{\"scenario\": \"attack\", \"results\": [{}]}}",
            json.join(", ")
        ),
    ))
}
