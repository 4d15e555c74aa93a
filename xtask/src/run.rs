//! `cargo xtask build | run | test`.
use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    setup::setup,
    util::{cargo, is_root, run, step, workspace},
};

const DEMO_CONFIG: &str = "examples/demo.toml";
const DEMO_INSTANCE: &str = "demo";
const DEMO_LISTEN: &str = "127.0.0.1:8080";
const DEMO_ORIGIN: &str = "127.0.0.1:9080";

fn profile_dir(release: bool) -> PathBuf {
    workspace()
        .join("target")
        .join(if release { "release" } else { "debug" })
}

/// Builds the proxy (its build script builds the kernel programs) and the demo origin.
pub fn build(release: bool) -> anyhow::Result<()> {
    step(
        &format!(
            "build proxy and its kernel programs ({})",
            if release { "release" } else { "debug" }
        ),
        || {
            let mut c = cargo();
            c.args([
                "build",
                "--locked",
                "-p",
                "proxy",
                "-p",
                "proxy-tests",
                "--bins",
            ]);
            if release {
                c.arg("--release");
            }
            run(&mut c)
        },
    )
}

/// Every test. Kernel tests need root and are never skipped: without root this fails.
pub fn test() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the tests load eBPF programs and make network namespaces: run `cargo xtask test` as root (kernel tests are never skipped)"
        );
    }
    setup()?;
    // What the end-to-end tests drive: curl (admin socket as another user), chromium (the
    // dashboard, headless), etcd (the fleet tests start their own servers).
    crate::setup::ensure_packages(&["curl", "chromium"])?;
    crate::setup::ensure_packages_without_services(&["etcd-server"])?;
    crate::setup::no_etcd_service();
    crate::setup::ensure_rust_components(&["rustfmt", "clippy"])?;
    step("cargo fmt --check", || {
        run(cargo().args(["fmt", "--all", "--check"]))
    })?;
    // Lints before the build, so a lint failure is the first thing a run reports. Every
    // host crate (the eBPF crate builds for its own target, through proxy/build.rs).
    step("cargo clippy -D warnings", || {
        run(cargo().args([
            "clippy",
            "--locked",
            "--workspace",
            "--exclude",
            "proxy-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    build(false)?;
    step("unit tests (host)", || {
        run(cargo().args([
            "test",
            "--locked",
            "-p",
            "proxy-common",
            "-p",
            "proxy",
            "-p",
            "xtask",
        ]))
    })?;
    // Every parser under libFuzzer for a short while (`cargo xtask fuzz` runs longer).
    crate::fuzz::fuzz(&[], crate::fuzz::TEST_SECONDS)?;
    // Last, so the run closes on cargo's own summary line. One test at a time: the tests
    // attach programs, pin maps and make namespaces.
    eprintln!(
        "==> kernel tests: BPF_PROG_TEST_RUN packet tables, CLI, end to end in network namespaces"
    );
    run(cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "proxy-tests",
            "--",
            "--test-threads=1",
        ])
        .env("PROXY_BIN", profile_dir(false).join("proxy")))
}

/// Ends a child by its PID with SIGINT, then SIGKILL after a grace period.
fn stop(child: &mut Child, name: &str) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    // SAFETY: kill on the PID of a child we started and have not reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("==> {name} did not stop in 15 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Children of the demo, stopped (by PID) and cleaned up on drop, even on an error path.
struct Demo {
    origin: Option<Child>,
    proxy: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            stop(&mut p, "proxy");
        }
        if let Some(mut o) = self.origin.take() {
            stop(&mut o, "demo origin");
        }
        let pins = PathBuf::from("/sys/fs/bpf/proxy").join(DEMO_INSTANCE);
        if pins.exists() {
            match std::fs::remove_dir_all(&pins) {
                Ok(()) => eprintln!("==> removed the demo's pinned maps ({})", pins.display()),
                Err(e) => eprintln!("==> could not remove {}: {e}", pins.display()),
            }
        }
    }
}

fn serving(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `cargo xtask run`: the demo.
pub fn demo(release: bool, duration: Option<Duration>) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the proxy loads kernel programs: run `cargo xtask run` as root");
    }
    setup()?;
    build(release)?;
    let bin = profile_dir(release);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let flag = stop_flag.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let mut demo = Demo {
        origin: None,
        proxy: None,
    };
    demo.origin = Some(
        Command::new(bin.join("demo-origin"))
            .args(["--listen", DEMO_ORIGIN, "--name", "demo-origin"])
            .spawn()
            .context("starting the demo origin")?,
    );
    demo.proxy = Some(
        Command::new(bin.join("proxy"))
            .args(["run", "--config"])
            .arg(workspace().join(DEMO_CONFIG))
            .spawn()
            .context("starting the proxy")?,
    );
    let listen: SocketAddr = DEMO_LISTEN.parse().expect("valid address");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !serving(listen) {
        if let Some(status) = demo
            .proxy
            .as_mut()
            .and_then(|p| p.try_wait().ok().flatten())
        {
            bail!("the proxy exited during start ({status}); its log is above");
        }
        if Instant::now() > deadline {
            bail!("the proxy is not listening on {DEMO_LISTEN} after 20 s; its log is above");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = bin.join("proxy");
    let p = p.display();
    eprintln!(
        "\n==> The proxy is running. Open http://{DEMO_LISTEN}/ (the demo origin answers behind it).\n\
         \x20   Try the in-kernel blocklist from another terminal (as root):\n\
         \x20     {p} blocklist add 127.0.0.2 --ttl 5m --reason demo --instance {DEMO_INSTANCE}\n\
         \x20     {p} blocklist list --instance {DEMO_INSTANCE}\n\
         \x20     {p} blocklist remove 127.0.0.2 --instance {DEMO_INSTANCE}\n\
         \x20   While 127.0.0.2 is blocked, `curl -m 2 --interface 127.0.0.2 http://{DEMO_LISTEN}/` times out\n\
         \x20   (XDP drops its SYN on lo) and `{p} stats --instance {DEMO_INSTANCE}` counts the drops.\n\
         \x20   Ctrl-C stops the demo.\n"
    );
    let started = Instant::now();
    loop {
        if stop_flag.load(Ordering::SeqCst) {
            eprintln!("==> stopping the demo");
            break;
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            eprintln!("==> --duration reached; stopping the demo");
            break;
        }
        if let Some(status) = demo
            .proxy
            .as_mut()
            .and_then(|p| p.try_wait().ok().flatten())
        {
            bail!("the proxy exited unexpectedly ({status}); its log is above");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(demo);
    Ok(())
}
