//! `cargo xtask setup`: detect what is missing and install only that.
//!
//! The kernel programs need Debian's rustc 1.96 with its library source (`-Z build-std=core`;
//! rustup cannot download rust-src here) and bpf-linker 0.13 built against Debian's LLVM 22.
//! See ../shared/TOOLCHAIN.md for why this is the recipe.
use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use crate::util::{is_root, output, run, step};

/// Where bpf-linker is installed (proxy/build.rs looks there too).
pub const TOOLCHAIN_ROOT: &str = "/opt/proxy-toolchain";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LIBRARY_SOURCE: &str = "/usr/lib/rustlib/src/rust/library/Cargo.lock";
/// Debian packages: the eBPF compiler, and the tools the tests and the demo use
/// (ip, nsenter, setpriv).
const PACKAGES: [&str; 8] = [
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "iproute2",
    "util-linux",
    // The SYN proxy's stack side (`nft`).
    "nftables",
    // etcd-client's build compiles etcd's protocol definitions (`[cluster]`).
    "protobuf-compiler",
    "libprotobuf-dev",
];
/// Only needed to build bpf-linker.
const LLVM_DEV: &str = "llvm-22-dev";

fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_some_and(|s| s.trim() == "installed")
}

fn bpf_linker() -> String {
    format!("{TOOLCHAIN_ROOT}/bin/bpf-linker")
}

fn bpf_linker_ok() -> bool {
    output(Command::new(bpf_linker()).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    })
}

/// apt-get install, with one `apt-get update` first in this run.
fn apt_install(packages: &[&str], updated: &mut bool) -> anyhow::Result<()> {
    if !*updated {
        step("apt-get update", || {
            run(Command::new("apt-get").args(["update", "-q", "-o", "DPkg::Lock::Timeout=300"]))
        })?;
        *updated = true;
    }
    step(&format!("apt-get install {}", packages.join(" ")), || {
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "DPkg::Lock::Timeout=300",
            ])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })
}

/// Installs what is missing; prints one line when everything is already there.
pub fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let need_linker = !bpf_linker_ok();
    let need_bpffs = !bpffs_mounted();
    if missing.is_empty() && !need_linker && Path::new(LIBRARY_SOURCE).exists() {
        if need_bpffs && is_root() {
            mount_bpffs()?;
        }
        eprintln!(
            "==> setup: eBPF toolchain ready (rustc-web, rust-web-src, bpf-linker {BPF_LINKER_VERSION})"
        );
        return Ok(());
    }
    if !is_root() {
        bail!(
            "setup must install {} but is not running as root; run `cargo xtask setup` as root",
            missing
                .iter()
                .copied()
                .chain(need_linker.then_some("bpf-linker"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut updated = false;
    if !missing.is_empty() {
        apt_install(&missing, &mut updated)?;
    }
    if !Path::new(LIBRARY_SOURCE).exists() {
        bail!(
            "{LIBRARY_SOURCE} is missing although rust-web-src is installed; reinstall it with `apt-get install --reinstall rust-web-src`"
        );
    }
    if need_linker {
        if !installed(LLVM_DEV) {
            apt_install(&[LLVM_DEV], &mut updated)?;
        }
        step(
            &format!(
                "cargo install bpf-linker {BPF_LINKER_VERSION} (LLVM 22) into {TOOLCHAIN_ROOT}; about 90 s on 2 cores"
            ),
            || {
                run(Command::new("/usr/bin/cargo")
                    .args([
                        "install",
                        "--locked",
                        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    ])
                    .args([
                        "--no-default-features",
                        "--features",
                        "llvm-22",
                        "--root",
                        TOOLCHAIN_ROOT,
                    ])
                    .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                    .env("RUSTC", "/usr/bin/rustc")
                    .env(
                        "CARGO_BUILD_JOBS",
                        std::env::var("CARGO_BUILD_JOBS").unwrap_or_else(|_| "2".into()),
                    )
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("CARGO"))
            },
        )?;
        if !bpf_linker_ok() {
            bail!(
                "{} does not report version {BPF_LINKER_VERSION} after installing it",
                bpf_linker()
            );
        }
    }
    if need_bpffs {
        mount_bpffs()?;
    }
    eprintln!("==> setup: done");
    Ok(())
}

/// Installs Debian packages that are missing (for the benchmarks' peers and tools).
pub fn ensure_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("installing {} needs root", missing.join(", "));
    }
    let mut updated = false;
    apt_install(&missing, &mut updated)
}

/// [`ensure_packages`] for packages whose install would start a service (etcd-server): a
/// `policy-rc.d` that refuses every start is in place during the install (unless one is
/// there already), and removed after.
pub fn ensure_packages_without_services(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours && is_root() {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask: no service starts during this install\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let result = ensure_packages(&missing);
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result
}

/// Debian's etcd-server package enables a system-wide etcd on 127.0.0.1:2379 where systemd
/// runs; the tests start their own servers and want none in the way.
pub fn no_etcd_service() {
    if Path::new("/run/systemd/system").exists() {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "etcd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn mount_bpffs() -> anyhow::Result<()> {
    step("mount bpffs at /sys/fs/bpf", || {
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
    })
}

/// Adds rustup components (rustfmt, clippy) the checks need, when missing; a toolchain
/// without rustup (Debian's) must already have them.
pub fn ensure_rust_components(components: &[&str]) -> anyhow::Result<()> {
    let have = |c: &str| {
        let (cmd, arg) = match c {
            "rustfmt" => ("cargo", "fmt"),
            "clippy" => ("cargo", "clippy"),
            other => ("cargo", other),
        };
        Command::new(cmd)
            .args([arg, "--version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = components.iter().copied().filter(|c| !have(c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(
        &format!("rustup component add {}", missing.join(" ")),
        || {
            run(Command::new("rustup")
                .args(["component", "add"])
                .args(&missing))
        },
    )
}
