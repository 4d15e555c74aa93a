//! `cargo xtask bench fleet` runs this: three proxies sharing their lists through a real etcd
//! (Debian's etcd-server), in a network namespace of their own on 127.0.0.1. Measures how long
//! a ban made on node 1 takes to be in the kernel maps of nodes 2 and 3: single bans one at a
//! time, then a burst of 10 000 at once, then 100 000 entries in all (the start-up of a node
//! that joins with an empty list). Prints one JSON object.
//!
//! A ban is made as `proxy blocklist add`/`import` make it (`ListStore`: the kernel map and the
//! state file of node 1, which its daemon then publishes); the clock starts when that returns
//! and stops when the entry is in the other node's pinned map (polled).
#![expect(
    clippy::cast_precision_loss,
    reason = "times in ms from counts far below 2^52"
)]
use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use proxy::{
    cidr::Cidr,
    defense::{ListStore, state::StateFile},
    kernel::KernelMaps,
};
use proxy_common::Reason;
use proxy_tests::{etcd::Etcd, netns::Topology, process::ChildGuard, require_root, unique_id};

const SINGLES: u32 = 50;
const BURST: u32 = 10_000;
const TOTAL: u32 = 100_000;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Node {
    instance: String,
    config: PathBuf,
    state: PathBuf,
    proxy: Option<ChildGuard>,
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.proxy.take());
        let _ = std::fs::remove_dir_all(proxy::kernel::pin_dir(&self.instance));
        let _ = std::fs::remove_file(proxy::daemon::runtime_file(&self.instance));
    }
}

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("directory")
        .to_owned()
}

fn start(ns: &str, node: &mut Node, dir: &Path) {
    let mut cmd = Topology::command_in(ns, bin_dir().join("proxy").to_str().expect("utf-8"));
    cmd.args(["run", "--config"]).arg(&node.config);
    cmd.env("RUST_LOG", "warn");
    let log = dir.join(format!("{}-{}.log", node.instance, unique_id()));
    node.proxy = Some(ChildGuard::spawn(&node.instance, cmd, log));
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let out = Command::new(bin_dir().join("proxy"))
            .args(["cluster", "status", "--json", "--instance", &node.instance])
            .output()
            .expect("proxy cluster status");
        if String::from_utf8_lossy(&out.stdout).contains("\"connected\": true") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not connect to etcd:\n{}",
            node.instance,
            node.proxy.as_ref().map(ChildGuard::log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn maps(instance: &str) -> KernelMaps {
    KernelMaps::open(&proxy::kernel::pin_dir(instance)).expect("open the maps")
}

fn has(maps: &KernelMaps, cidr: &Cidr) -> bool {
    maps.is_denied(cidr.addr(), proxy::clock::kernel_ns())
        .expect("lookup")
}

/// Distinct /32s in 198.18.0.0/15 (benchmarking space, RFC 2544) from `from`.
fn prefixes(from: u32, n: u32) -> Vec<Cidr> {
    (from..from + n)
        .map(|i| Cidr::new_truncating(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)), 32))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an index from a fraction in [0, 1] of a length"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until every node of `instances` holds every one of `keys` in its map (bounded by
/// `limit`): per node, the ms from `t0` until the last key arrived, or `None`. Each pass looks
/// up only the keys a node still lacks.
fn wait_all(instances: &[&str], keys: &[Cidr], t0: Instant, limit: Duration) -> Vec<Option<f64>> {
    let all: Vec<KernelMaps> = instances.iter().map(|i| maps(i)).collect();
    let mut missing: Vec<Vec<Cidr>> = instances.iter().map(|_| keys.to_vec()).collect();
    let mut done: Vec<Option<f64>> = vec![None; instances.len()];
    while t0.elapsed() < limit && done.iter().any(Option::is_none) {
        for (i, m) in all.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            missing[i].retain(|c| !has(m, c));
            if missing[i].is_empty() {
                done[i] = Some(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done
}

#[expect(
    clippy::too_many_lines,
    reason = "one run in order: namespace, etcd, nodes, then each measurement"
)]
fn main() {
    require_root();
    let id = unique_id();
    let ns = Ns(format!("pxfb-{id}"));
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .expect("ip")
            .success()
    );
    let _ = Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status();
    let dir = tempfile::tempdir().expect("temporary directory");
    let etcd = Etcd::start(&ns.0, dir.path());
    let mut nodes: Vec<Node> = (1..=3)
        .map(|k| {
            let instance = format!("fb-{id}-n{k}");
            let state = dir.path().join(format!("n{k}.json"));
            let config = dir.path().join(format!("n{k}.toml"));
            std::fs::write(
                &config,
                format!(
                    "instance = \"{instance}\"\nstate_file = \"{}\"\nworkers = 1\n[kernel]\nattach = \"none\"\n\
                     [[listener]]\naddress = \"127.0.0.1:{}\"\nupstream = \"o\"\n[upstream.o]\nservers = [\"127.0.0.1:9\"]\n\
                     [cluster]\nendpoints = [\"{}\"]\nprefix = \"/bench\"\nnode = \"n{k}\"\n",
                    state.display(),
                    18_180 + k,
                    etcd.endpoint()
                ),
            )
            .expect("config");
            Node {
                instance,
                config,
                state,
                proxy: None,
            }
        })
        .collect();
    for n in &mut nodes {
        start(&ns.0, n, dir.path());
    }
    let mut store = ListStore::new(
        maps(&nodes[0].instance),
        StateFile::new(nodes[0].state.clone()),
    );
    let others = [maps(&nodes[1].instance), maps(&nodes[2].instance)];

    // Single bans, one at a time.
    let mut singles = Vec::new();
    for c in prefixes(0, SINGLES) {
        store
            .block(&[c], None, Reason::Manual, Some("bench"))
            .expect("block on node 1");
        let t0 = Instant::now();
        let mut seen = [false; 2];
        while !(seen[0] && seen[1]) {
            for (i, m) in others.iter().enumerate() {
                if !seen[i] && has(m, &c) {
                    seen[i] = true;
                    singles.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{c} never arrived");
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    singles.sort_by(f64::total_cmp);

    // A burst of 10 000 at once (what `proxy blocklist import` does).
    let burst = prefixes(1_000, BURST);
    store
        .block(&burst, Some(Duration::from_mins(30)), Reason::L7Abuse, None)
        .expect("burst on node 1");
    let t0 = Instant::now();
    let burst_ms = wait_all(
        &[&nodes[1].instance, &nodes[2].instance],
        &burst,
        t0,
        Duration::from_mins(2),
    );

    // 100 000 in all, then a node that joins empty (its state file removed) loads them.
    let rest = prefixes(20_000, TOTAL - SINGLES - BURST);
    store
        .block(&rest, None, Reason::Import, None)
        .expect("the rest on node 1");
    let bulk_ms = wait_all(
        &[&nodes[1].instance],
        &rest,
        Instant::now(),
        Duration::from_mins(5),
    )[0];
    drop(nodes[2].proxy.take());
    let _ = std::fs::remove_file(&nodes[2].state);
    let _ = std::fs::remove_dir_all(proxy::kernel::pin_dir(&nodes[2].instance));
    let started = Instant::now();
    start(&ns.0, &mut nodes[2], dir.path());
    let everything: Vec<Cidr> = prefixes(0, SINGLES)
        .into_iter()
        .chain(burst.iter().copied())
        .chain(rest.iter().copied())
        .collect();
    let join = wait_all(
        &[&nodes[2].instance],
        &everything,
        started,
        Duration::from_mins(5),
    )[0];
    let opt = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| format!("{v:.0}"));
    println!(
        "{{\"singles\": {}, \"single_p50_ms\": {:.1}, \"single_p99_ms\": {:.1}, \"single_max_ms\": {:.1}, \
         \"burst\": {BURST}, \"burst_ms\": [{}], \"total\": {TOTAL}, \"bulk_ms\": {}, \"join_ms\": {}}}",
        singles.len(),
        percentile(&singles, 0.5),
        percentile(&singles, 0.99),
        singles.last().copied().unwrap_or(f64::NAN),
        burst_ms
            .iter()
            .map(|v| opt(*v))
            .collect::<Vec<_>>()
            .join(", "),
        opt(bulk_ms),
        opt(join),
    );
    drop(nodes);
    drop(etcd);
}
