//! A throw-away single-node etcd (Debian's `etcd-server`) for the fleet tests, inside a
//! network namespace the test made, on 127.0.0.1; killed by its PID and its data removed on
//! drop.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{netns::Topology, process::ChildGuard};

pub const ETCD_BIN: &str = "/usr/bin/etcd";

pub struct Etcd {
    ns: String,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<ChildGuard>,
    starts: u32,
    tls: Option<Tls>,
}

/// Server certificate, key and the CA clients must chain to (`--client-cert-auth`).
#[derive(Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A port that is free in `ns` now (bound, then released).
fn free_port(ns: &str) -> u16 {
    crate::netns::run_in(ns, || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a free port")
            .local_addr()
            .expect("local address")
            .port()
    })
}

impl Etcd {
    /// Starts etcd in `ns` with its data under `dir` and waits until it answers.
    ///
    /// # Panics
    ///
    /// If `/usr/bin/etcd` is missing (`cargo xtask test` installs `etcd-server`) or etcd does
    /// not come up within 20 s.
    #[must_use]
    pub fn start(ns: &str, dir: &Path) -> Self {
        Self::start_with(ns, dir, None)
    }

    /// [`Etcd::start`] serving TLS only, with client certificates required.
    ///
    /// # Panics
    ///
    /// As [`Etcd::start`].
    #[must_use]
    pub fn start_tls(ns: &str, dir: &Path, tls: Tls) -> Self {
        Self::start_with(ns, dir, Some(tls))
    }

    fn start_with(ns: &str, dir: &Path, tls: Option<Tls>) -> Self {
        assert!(
            Path::new(ETCD_BIN).exists(),
            "{ETCD_BIN} not found: run the tests with `cargo xtask test` (it installs etcd-server)"
        );
        let mut e = Self {
            ns: ns.to_owned(),
            dir: dir.join("etcd"),
            client_port: free_port(ns),
            peer_port: free_port(ns),
            child: None,
            starts: 0,
            tls,
        };
        e.restart();
        e
    }

    /// The client URL (`http://127.0.0.1:<port>`, `https://` with TLS).
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The same server on another loopback address (`http://127.0.0.2:<port>`): a client given
    /// this one can be cut off alone (a firewall rule on 127.0.0.2).
    #[must_use]
    pub fn alt_endpoint(&self) -> String {
        format!("{}://127.0.0.2:{}", self.scheme(), self.client_port)
    }

    #[must_use]
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Stops etcd (SIGKILL: as abrupt as a crash or a cut cable); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill9();
        }
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    ///
    /// # Panics
    ///
    /// If it does not come up within 20 s.
    pub fn restart(&mut self) {
        self.stop();
        self.starts += 1;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let listen = format!("{client},{}", self.alt_endpoint());
        let mut cmd = Topology::command_in(&self.ns, ETCD_BIN);
        cmd.arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--unsafe-no-fsync",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ])
            .args(["--log-level", "warn"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let log = self.dir.with_file_name(format!("etcd-{}.log", self.starts));
        let child = ChildGuard::spawn("etcd", cmd, log);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.client_port)
            .parse()
            .expect("address");
        let deadline = Instant::now() + Duration::from_secs(20);
        let tls = self.tls.is_some();
        loop {
            // etcd answers /health on its client URL once it has a leader (with TLS, where
            // this plain client cannot ask, listening is taken as enough: clients retry).
            let ok = crate::netns::run_in(&self.ns, move || {
                if tls {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                } else {
                    crate::client::get(addr, "/health", Duration::from_millis(500))
                        .is_ok_and(|r| r.status == 200 && r.body.contains("true"))
                }
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy:\n{}",
                child.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
    }

    /// Its output so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.child.as_ref().map(ChildGuard::log).unwrap_or_default()
    }
}
