//! Network namespaces made by the test itself, removed on drop even when the test fails.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
};

use crate::unique_id;

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces, `srv` (where the proxy and the origin run) and `cli` (the client), joined by
/// a veth pair: `srv_if` 10.250.N.1/24 + `fd00:250:N::1/64`, `cli_if` 10.250.N.2/24 + `fd00:250:N::2/64`.
pub struct Topology {
    pub srv_ns: String,
    pub cli_ns: String,
    pub srv_if: String,
    pub cli_if: String,
    pub srv_ip: Ipv4Addr,
    pub cli_ip: Ipv4Addr,
    pub srv_ip6: Ipv6Addr,
    pub cli_ip6: Ipv6Addr,
    /// A second client namespace, when made with [`Topology::add_client`].
    pub second: Option<SecondClient>,
    /// Further client namespaces ([`Topology::add_client`] after the second).
    pub more: Vec<SecondClient>,
}

/// Another client namespace on its own veth pair into the server namespace.
#[derive(Clone)]
pub struct SecondClient {
    pub ns: String,
    pub srv_if: String,
    pub srv_ip: Ipv4Addr,
    pub cli_ip: Ipv4Addr,
}

impl Topology {
    /// `subnet` picks 10.250.<subnet>.0/24, so tests never share addresses.
    ///
    /// # Panics
    ///
    /// If an `ip` command fails (not root, or a name is taken).
    #[must_use]
    pub fn new(subnet: u8) -> Self {
        let id = unique_id();
        let t = Self {
            srv_ns: format!("pxt-{id}-srv"),
            cli_ns: format!("pxt-{id}-cli"),
            srv_if: format!("pxs{id}"),
            cli_if: format!("pxc{id}"),
            srv_ip: Ipv4Addr::new(10, 250, subnet, 1),
            cli_ip: Ipv4Addr::new(10, 250, subnet, 2),
            srv_ip6: format!("fd00:250:{subnet}::1").parse().unwrap(),
            cli_ip6: format!("fd00:250:{subnet}::2").parse().unwrap(),
            second: None,
            more: Vec::new(),
        };
        assert!(t.srv_if.len() < 16, "interface name {} too long", t.srv_if);
        ip(&["netns", "add", &t.srv_ns]);
        // From here on, Drop removes what exists.
        ip(&["netns", "add", &t.cli_ns]);
        ip(&[
            "link", "add", &t.srv_if, "netns", &t.srv_ns, "type", "veth", "peer", "name",
            &t.cli_if, "netns", &t.cli_ns,
        ]);
        for (ns, dev, v4, v6) in [
            (&t.srv_ns, &t.srv_if, t.srv_ip, t.srv_ip6),
            (&t.cli_ns, &t.cli_if, t.cli_ip, t.cli_ip6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        t
    }

    /// Adds a client namespace on 10.250.<subnet>.0/24 (server side .1, client .2): the
    /// `second`, then into `more`.
    pub fn add_client(&mut self, subnet: u8) {
        let id = unique_id();
        let second = SecondClient {
            ns: format!("pxt-{id}-cl2"),
            srv_if: format!("pxs{id}"),
            srv_ip: Ipv4Addr::new(10, 250, subnet, 1),
            cli_ip: Ipv4Addr::new(10, 250, subnet, 2),
        };
        let cli_if = format!("pxc{id}");
        ip(&["netns", "add", &second.ns]);
        let ns = second.ns.clone();
        let srv_if = second.srv_if.clone();
        let (srv_ip, cli_ip) = (second.srv_ip, second.cli_ip);
        if self.second.is_none() {
            self.second = Some(second);
        } else {
            self.more.push(second);
        }
        ip(&[
            "link",
            "add",
            &srv_if,
            "netns",
            &self.srv_ns,
            "type",
            "veth",
            "peer",
            "name",
            &cli_if,
            "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.srv_ns,
            "addr",
            "add",
            &format!("{srv_ip}/24"),
            "dev",
            &srv_if,
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{cli_ip}/24"),
            "dev",
            &cli_if,
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &self.srv_ns, "link", "set", &srv_if, "up"]);
        ip(&["-n", &ns, "link", "set", &cli_if, "up"]);
    }

    /// A command that runs inside `ns`, keeping the host's mount namespace (so the pins under
    /// /sys/fs/bpf stay visible; `ip netns exec` would remount /sys and hide them).
    #[must_use]
    pub fn command_in(ns: &str, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program);
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for client in self.second.iter().chain(&self.more) {
            let _ = Command::new("ip")
                .args(["netns", "del", &client.ns])
                .status();
        }
        for ns in [&self.cli_ns, &self.srv_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets made there belong to it.
///
/// # Panics
///
/// If `f` panics, or the thread cannot enter `ns`.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f).join().expect("namespace thread panicked")
}

/// Starts `f` on a thread that has entered network namespace `ns` and returns at once (for a
/// server that lives as long as the test; the caller bounds its life and joins it).
///
/// # Panics
///
/// Not here: the new thread panics if it cannot enter `ns`, which shows when it is joined.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Makes `cmd` start in a new time namespace whose `CLOCK_MONOTONIC` is `offset_secs` ahead of
/// the kernel's (behind when negative). Needs root and a kernel with time namespaces (5.6+).
pub fn in_new_time_namespace(cmd: &mut Command, offset_secs: i64) {
    use std::os::unix::process::CommandExt;
    let line = format!("monotonic {offset_secs} 0\n").into_bytes();
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (unshare, open, write, setns, close) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWTIME) != 0 {
                return fail();
            }
            // The offsets can be set until the first process enters the namespace.
            let fd = libc::open(c"/proc/self/timens_offsets".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return fail();
            }
            let written = libc::write(fd, line.as_ptr().cast(), line.len());
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if usize::try_from(written).ok() != Some(line.len()) {
                return Err(error);
            }
            // unshare only moves children; this process enters it itself (it is single-threaded).
            let ns = libc::open(
                c"/proc/self/ns/time_for_children".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if ns < 0 {
                return fail();
            }
            let rc = libc::setns(ns, libc::CLONE_NEWTIME);
            let error = std::io::Error::last_os_error();
            libc::close(ns);
            if rc != 0 {
                return Err(error);
            }
            Ok(())
        });
    }
}

/// The proxy's XDP program attached to an interface of namespace `ns` with empty lists (it
/// passes everything), as a receiver for `XDP_TX` frames: a veth only takes the frames its
/// peer's XDP program sends back when it runs an XDP program itself (the kernel's own SYN
/// proxy selftest does the same). Detached and unpinned on drop.
pub struct XdpReceiver {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl XdpReceiver {
    /// # Panics
    ///
    /// If the program cannot be loaded or attached.
    #[must_use]
    pub fn attach(ns: &str, iface: &str) -> Self {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let iface = iface.to_owned();
        let thread = spawn_in(ns, move || {
            let pin_dir = proxy::kernel::pin_dir(&format!("xdp-receiver-{}", unique_id()));
            let attached = proxy::kernel::Datapath::load(&pin_dir).and_then(|mut d| {
                d.attach(&iface, proxy::config::AttachMode::Xdp)?;
                Ok(d)
            });
            match attached {
                Ok(datapath) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    drop(datapath);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
            let _ = std::fs::remove_dir_all(&pin_dir);
        });
        if let Ok(Err(e)) | Err(e) = ready_rx.recv().map_err(|e| e.to_string()) {
            panic!("attaching an XDP receiver: {e}");
        }
        Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for XdpReceiver {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
