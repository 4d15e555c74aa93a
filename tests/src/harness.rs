//! A test world: two network namespaces, a real origin in the server namespace, a proxy
//! instance name and a temporary directory; everything is removed on drop.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    client::get_in,
    netns::Topology,
    process::{ChildGuard, Output, proxy_bin, run},
    require_root, unique_id,
};

/// Where the origin listens inside the server namespace.
pub const ORIGIN: &str = "127.0.0.1:9000";

pub struct World {
    pub topo: Topology,
    pub dir: tempfile::TempDir,
    pub instance: String,
    _origin: ChildGuard,
}

impl World {
    /// Namespaces on 10.250.<subnet>.0/24 and an origin (`origin_bin`, the tests' demo-origin)
    /// named `origin-1` on [`ORIGIN`] in the server namespace.
    ///
    /// # Panics
    ///
    /// If the tests do not run as root, or the namespaces, the temporary directory or the
    /// origin cannot be set up.
    #[must_use]
    pub fn new(subnet: u8, origin_bin: &str) -> Self {
        require_root();
        let topo = Topology::new(subnet);
        let dir = tempfile::tempdir().expect("temporary directory");
        let instance = format!("t-{}", unique_id());
        let mut origin_cmd = Topology::command_in(&topo.srv_ns, origin_bin);
        origin_cmd.args(["--listen", ORIGIN, "--name", "origin-1"]);
        let origin = ChildGuard::spawn("origin", origin_cmd, dir.path().join("origin.log"));
        Self {
            topo,
            dir,
            instance,
            _origin: origin,
        }
    }

    /// Starts another origin in the server namespace (killed on drop of the guard).
    ///
    /// # Panics
    ///
    /// If the origin cannot be started, or does not accept connections within 5 s.
    #[must_use]
    pub fn spawn_origin(
        &self,
        origin_bin: &str,
        listen: &str,
        name: &str,
        extra: &[&str],
    ) -> ChildGuard {
        let mut cmd = Topology::command_in(&self.topo.srv_ns, origin_bin);
        cmd.args(["--listen", listen, "--name", name]).args(extra);
        let guard = ChildGuard::spawn(name, cmd, self.dir.path().join(format!("{name}.log")));
        // Wait until it accepts connections.
        let addr: SocketAddr = listen.parse().expect("origin address");
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::netns::run_in(&self.topo.srv_ns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        })
        .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "origin {name} did not start:\n{}",
                guard.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        guard
    }

    /// Writes a config file: `instance` and `state_file` for this world, then `body`.
    ///
    /// # Panics
    ///
    /// If the file cannot be written.
    #[must_use]
    pub fn write_config(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!(
            "instance = \"{}\"\nstate_file = \"{}\"\n{body}",
            self.instance,
            self.dir.path().join("state.json").display()
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts `proxy run --config <config> <args>` (with `env`) in the server namespace and
    /// waits until `ready` (an address inside the server namespace) answers HTTP.
    ///
    /// # Panics
    ///
    /// If the proxy cannot be started, exits, or does not serve within 20 s.
    #[must_use]
    pub fn start_proxy(
        &self,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: SocketAddr,
    ) -> ChildGuard {
        let cmd =
            Topology::command_in(&self.topo.srv_ns, proxy_bin().to_str().expect("utf-8 path"));
        self.start_proxy_command(cmd, config, args, env, ready)
    }

    /// [`World::start_proxy`] with the proxy in a time namespace of its own whose
    /// `CLOCK_MONOTONIC` runs `offset_secs` ahead of the kernel's (behind when negative), as in
    /// a container restored from a checkpoint.
    ///
    /// # Panics
    ///
    /// As [`World::start_proxy`]; also if the time namespace cannot be made.
    #[must_use]
    pub fn start_proxy_in_time_namespace(
        &self,
        config: &Path,
        ready: SocketAddr,
        offset_secs: i64,
    ) -> ChildGuard {
        let mut cmd =
            Topology::command_in(&self.topo.srv_ns, proxy_bin().to_str().expect("utf-8 path"));
        crate::netns::in_new_time_namespace(&mut cmd, offset_secs);
        self.start_proxy_command(cmd, config, &[], &[], ready)
    }

    fn start_proxy_command(
        &self,
        mut cmd: Command,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: SocketAddr,
    ) -> ChildGuard {
        cmd.args(["run", "--config", config.to_str().expect("utf-8 path")])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = self.dir.path().join(format!("proxy-{}.log", unique_id()));
        let mut proxy = ChildGuard::spawn("proxy", cmd, log);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Any HTTP answer means the proxy serves (a 404 or 502 is the route's business).
            if get_in(&self.topo.srv_ns, ready, "/", Duration::from_millis(500)).is_ok() {
                return proxy;
            }
            assert!(
                !proxy.exited(),
                "proxy exited during start:\n{}",
                proxy.log()
            );
            assert!(
                Instant::now() < deadline,
                "proxy not serving after 20 s:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `proxy <args> --instance <this instance>`.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> Output {
        run(Command::new(proxy_bin())
            .args(args)
            .args(["--instance", &self.instance]))
    }

    /// Like [`World::cli`], and fails the test unless it succeeds; returns stdout.
    ///
    /// # Panics
    ///
    /// If the command does not exit with 0.
    #[expect(
        clippy::must_use_candidate,
        reason = "called for the command's effect as often as for its output"
    )]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(
            out.code, 0,
            "proxy {args:?} failed: {}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// `proxy stats --json`.
    ///
    /// # Panics
    ///
    /// If `proxy stats --json` fails or does not print JSON.
    #[must_use]
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["stats", "--json"])).expect("stats --json is JSON")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(proxy::kernel::pin_dir(&self.instance));
        let _ = std::fs::remove_file(proxy::daemon::runtime_file(&self.instance));
    }
}
