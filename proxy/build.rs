//! Builds the kernel programs (`proxy-ebpf`) for `bpfel-unknown-none` and leaves the object in
//! `OUT_DIR/proxy-ebpf.o`, which `src/kernel/loader.rs` embeds with `include_bytes_aligned!`.
//!
//! The kernel side needs Debian's rustc 1.96 with its library source (for `-Z build-std=core`)
//! and bpf-linker; `cargo xtask setup` installs both. Set `PROXY_SKIP_EBPF=1` to build without
//! them (for `cargo check` / `cargo clippy`): the binary then refuses to attach kernel programs.
use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// Debian's rustc-web (sysroot /usr); rustup's toolchains have no library source here.
const EBPF_RUSTC: &str = "/usr/bin/rustc";
const EBPF_CARGO: &str = "/usr/bin/cargo";
const LIBRARY_SOURCE: &str = "/usr/lib/rustlib/src/rust/library/Cargo.lock";
/// Where `cargo xtask setup` installs bpf-linker (kept in sync with xtask/src/setup.rs).
const TOOLCHAIN_BIN: &str = "/opt/proxy-toolchain/bin";
const TARGET: &str = "bpfel-unknown-none";

fn main() -> ExitCode {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("proxy/ is inside the workspace");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("proxy-ebpf.o");

    println!("cargo:rerun-if-env-changed=PROXY_SKIP_EBPF");
    for path in [
        "proxy-ebpf/src",
        "proxy-ebpf/Cargo.toml",
        "proxy-common/src",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    if env::var_os("PROXY_SKIP_EBPF").is_some_and(|v| v != "0" && !v.is_empty()) {
        println!("cargo:warning=PROXY_SKIP_EBPF is set: building without kernel programs");
        std::fs::write(&out, b"").expect("write empty eBPF object to OUT_DIR");
        return ExitCode::SUCCESS;
    }

    let Some(linker_dir) = find_bpf_linker() else {
        return missing("bpf-linker is not on PATH nor in /opt/proxy-toolchain/bin");
    };
    if !Path::new(EBPF_RUSTC).exists() || !Path::new(EBPF_CARGO).exists() {
        return missing(
            "Debian's rustc-web/cargo-web (/usr/bin/rustc, /usr/bin/cargo) are not installed",
        );
    }
    if !Path::new(LIBRARY_SOURCE).exists() {
        return missing("the Rust library source (package rust-web-src) is not installed");
    }

    let target_dir = workspace.join("target").join("ebpf");
    let path = env::join_paths(
        std::iter::once(linker_dir)
            .chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH entries contain no separator");
    let mut cmd = Command::new(EBPF_CARGO);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "--package",
            "proxy-ebpf",
            "--bin",
            "proxy-ebpf",
        ])
        .args(["--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", EBPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        );
    // Nothing of the outer (host) build may leak into the nested one.
    for key in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(key);
    }
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!(
                "error: building the kernel programs (proxy-ebpf) failed with {status}; see the compiler output above"
            );
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("error: could not run {EBPF_CARGO}: {err}");
            return ExitCode::FAILURE;
        }
    }
    let built = target_dir.join(TARGET).join("release").join("proxy-ebpf");
    if let Err(err) = std::fs::copy(&built, &out) {
        eprintln!(
            "error: copying {} to {}: {err}",
            built.display(),
            out.display()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn find_bpf_linker() -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .chain(std::iter::once(PathBuf::from(TOOLCHAIN_BIN)))
        .find(|dir| dir.join("bpf-linker").is_file())
}

fn missing(what: &str) -> ExitCode {
    eprintln!(
        "error: cannot build the kernel programs: {what}.\n\
         Run `cargo xtask setup` (installs the eBPF toolchain), then `cargo xtask build`.\n\
         To check or lint the userspace without it, set PROXY_SKIP_EBPF=1."
    );
    ExitCode::FAILURE
}
