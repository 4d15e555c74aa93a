//! Connection spreading across workers by the `sk_reuseport` program, with real sockets in a
//! network namespace. Connections are opened one at a time and each is seen counted by a
//! worker before the next, so `least-loaded` is exactly predictable.
use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use proxy_tests::{
    client::{get_in, open_keepalive_in},
    harness::{ORIGIN, World},
    process::ChildGuard,
};

const PORT: u16 = 8080;
const WORKERS: usize = 4;

struct Spread {
    w: World,
    proxy: ChildGuard,
    /// Open client connections and the worker each landed on.
    conns: Vec<(TcpStream, usize)>,
}

impl Spread {
    fn start(subnet: u8, policy: &str, env: &[(&str, &str)]) -> Self {
        let w = World::new(subnet, env!("CARGO_BIN_EXE_demo-origin"));
        let config = w.write_config(
            "spread.toml",
            &format!(
                r#"
workers = {WORKERS}

[kernel]
attach = "none"
spread = "{policy}"

[[listener]]
address = "{srv}:{PORT}"
upstream = "origin"

[upstream.origin]
servers = ["{ORIGIN}"]
"#,
                srv = w.topo.srv_ip,
            ),
        );
        let ready = SocketAddr::new(w.topo.srv_ip.into(), PORT);
        let proxy = w.start_proxy(&config, &[], env, ready);
        let s = Self {
            w,
            proxy,
            conns: Vec::new(),
        };
        // The readiness probe's connection must be gone before counting starts.
        s.wait_for(
            |c| c.iter().sum::<u32>() == 0,
            "the readiness probe to close",
        );
        s
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.w.topo.srv_ip.into(), PORT)
    }

    /// Per-worker (alive, connections).
    fn workers(&self) -> Vec<(bool, u32)> {
        let stats = self.w.stats();
        let list = stats["workers"]
            .as_array()
            .expect("workers in stats")
            .clone();
        assert_eq!(list.len(), WORKERS, "{stats}");
        list.iter()
            .map(|w| {
                (
                    w["alive"].as_bool().unwrap(),
                    u32::try_from(w["connections"].as_u64().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    fn counts(&self) -> Vec<u32> {
        self.workers().into_iter().map(|(_, c)| c).collect()
    }

    fn wait_for(&self, ok: impl Fn(&[u32]) -> bool, what: &str) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = self.counts();
            if ok(&c) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; workers: {c:?}\n{}",
                self.proxy.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Opens one more long-lived connection and returns the worker that took it.
    fn open(&mut self) -> usize {
        let before = self.counts();
        let total: u32 = before.iter().sum();
        let stream = open_keepalive_in(&self.w.topo.cli_ns, self.addr())
            .expect("connection through the proxy");
        let after = self.wait_for(
            |c| c.iter().sum::<u32>() == total + 1,
            "the new connection to be counted",
        );
        let worker = (0..WORKERS)
            .find(|&i| after[i] == before[i] + 1)
            .expect("one worker's count rose");
        self.conns.push((stream, worker));
        worker
    }

    /// Closes every connection held on `worker`.
    fn close_all_on(&mut self, worker: usize) {
        self.conns.retain(|(_, w)| *w != worker);
        self.wait_for(|c| c[worker] == 0, "the closed connections to be counted");
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a worker count (at most MAX_WORKERS), exact in f64"
)]
fn imbalance(counts: &[u32]) -> f64 {
    let max = f64::from(*counts.iter().max().unwrap());
    let mean = f64::from(counts.iter().sum::<u32>()) / counts.len() as f64;
    max / mean
}

#[test]
fn least_loaded_sends_new_connections_to_the_least_loaded_worker() {
    let mut s = Spread::start(21, "least-loaded", &[]);
    for _ in 0..40 {
        s.open();
    }
    assert_eq!(
        s.counts(),
        vec![10; WORKERS],
        "least-loaded fills the workers evenly"
    );
    // Skew the load: worker 0 loses all its connections; the next 10 must all go there.
    s.close_all_on(0);
    let new: Vec<usize> = (0..10).map(|_| s.open()).collect();
    assert_eq!(
        new,
        vec![0; 10],
        "new connections went elsewhere than the least-loaded worker"
    );
    let counts = s.counts();
    assert!(
        imbalance(&counts) <= 1.25,
        "max/mean {} for {counts:?}",
        imbalance(&counts)
    );
    assert!(
        s.proxy.log().contains("connections spread in the kernel"),
        "{}",
        s.proxy.log()
    );
}

#[test]
fn hash_ignores_load_so_the_same_pattern_stays_skewed() {
    let mut s = Spread::start(22, "hash", &[]);
    for _ in 0..40 {
        s.open();
    }
    let freed = (0..WORKERS).max_by_key(|&i| s.counts()[i]).unwrap();
    s.close_all_on(freed);
    let new: Vec<usize> = (0..10).map(|_| s.open()).collect();
    // With the 4-tuple hash each new connection lands on the freed worker with probability 1/4;
    // all ten there would happen by chance once in a million runs.
    let on_freed = new.iter().filter(|&&w| w == freed).count();
    assert!(
        on_freed < 10,
        "hash sent every new connection to the freed worker: {new:?}"
    );
    eprintln!(
        "hash: {on_freed} of 10 new connections on the freed worker; final {:?}",
        s.counts()
    );
}

#[test]
fn p2c_keeps_workers_balanced() {
    let mut s = Spread::start(23, "p2c", &[]);
    for _ in 0..40 {
        s.open();
    }
    let counts = s.counts();
    assert!(
        counts.iter().all(|&c| c > 0),
        "a worker got nothing: {counts:?}"
    );
    assert!(
        imbalance(&counts) <= 1.3,
        "p2c max/mean {} for {counts:?}",
        imbalance(&counts)
    );
}

#[test]
fn a_stopped_worker_gets_no_new_connection() {
    let mut s = Spread::start(24, "p2c", &[("PROXY_TEST_FAULTS", "stop-worker=1@300ms")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.workers()[1].0 {
        assert!(
            Instant::now() < deadline,
            "worker 1 did not stop:\n{}",
            s.proxy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..40 {
        let worker = s.open();
        assert_ne!(worker, 1, "a connection went to the stopped worker");
    }
    let workers = s.workers();
    assert_eq!(workers[1], (false, 0), "{workers:?}");
    assert!(
        workers
            .iter()
            .enumerate()
            .all(|(i, w)| i == 1 || (w.0 && w.1 > 0)),
        "{workers:?}"
    );
}

#[test]
fn without_the_program_the_kernel_hash_spreads_and_a_warning_is_logged() {
    let s = Spread::start(
        25,
        "least-loaded",
        &[("PROXY_TEST_FAULTS", "no-reuseport-prog")],
    );
    let r = get_in(&s.w.topo.cli_ns, s.addr(), "/", Duration::from_secs(2))
        .expect("served without the program");
    assert_eq!(r.status, 200);
    let log = s.proxy.log();
    assert!(
        log.contains("connection spreading unavailable, the kernel's 4-tuple hash spreads connections instead"),
        "{log}"
    );
    assert_eq!(
        log.matches("connection spreading unavailable").count(),
        1,
        "warned more than once"
    );
}
