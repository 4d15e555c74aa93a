//! `cargo xtask fuzz [TARGET...] [--time SECONDS]`: the fuzz targets in proxy/fuzz/ (cargo-fuzz,
//! libFuzzer, AddressSanitizer), built once, then each run for a while; a crash fails the run
//! and names the target and the input that crashed it.
//!
//! cargo-fuzz needs nightly flags (`-Z sanitizer`); the stable toolchain accepts them with
//! `RUSTC_BOOTSTRAP=1`, since rustup cannot download a nightly here. The targets are the
//! files in `proxy/fuzz/fuzz_targets/`; committed seeds are in proxy/fuzz/seeds/<target>/, the
//! corpus a run grows in proxy/fuzz/corpus/<target>/ and crash inputs in
//! proxy/fuzz/artifacts/<target>/ (both ignored by git).
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant, SystemTime},
};

use anyhow::{Context, bail};

use crate::util::{cargo, output, run, step, workspace};

/// How long `cargo xtask test` runs each target.
pub const TEST_SECONDS: u64 = 15;
/// A single input that takes longer than this is reported as a hang (libFuzzer `-timeout`).
const INPUT_TIMEOUT_SECONDS: u64 = 30;

fn fuzz_dir() -> PathBuf {
    workspace().join("proxy").join("fuzz")
}

/// Every fuzz target: the files in `proxy/fuzz/fuzz_targets/`, sorted.
pub fn targets() -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// cargo with the settings every cargo-fuzz command here needs.
fn cargo_fuzz() -> Command {
    let mut c = cargo();
    c.arg("fuzz")
        // Nightly flags on the stable toolchain (rustup cannot download a nightly here).
        .env("RUSTC_BOOTSTRAP", "1")
        // The fuzz build needs no kernel programs (and must not build them with ASan flags).
        .env("PROXY_SKIP_EBPF", "1");
    // What `cargo run` set for xtask itself: build scripts (ring's) track CARGO_MANIFEST_DIR,
    // so with it the fuzz build would differ from a plain `cargo fuzz` in proxy/fuzz, and
    // each would rebuild half the dependencies after the other.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(&*name);
        }
    }
    c
}

/// Installs cargo-fuzz and a C++ compiler (for libFuzzer) when missing.
fn ensure_tools() -> anyhow::Result<()> {
    if output(cargo().args(["fuzz", "--version"])).is_none() {
        step(
            "cargo install --locked cargo-fuzz (once; about 2 min on 2 cores)",
            || run(cargo().args(["install", "--locked", "cargo-fuzz"])),
        )?;
    }
    if output(Command::new("c++").arg("--version")).is_none() {
        crate::setup::ensure_packages(&["g++"])?;
    }
    Ok(())
}

/// What one target's run did.
struct Outcome {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    corpus: usize,
    /// The crash input, when the run failed.
    failure: Option<String>,
}

/// `cargo xtask fuzz`: builds every target once, then runs each of `selected` (all when
/// empty) for `seconds`. Fails, after running them all, if any target crashed.
pub fn fuzz(selected: &[String], seconds: u64) -> anyhow::Result<()> {
    let all = targets()?;
    for t in selected {
        if !all.contains(t) {
            bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
        }
    }
    let chosen: Vec<String> = if selected.is_empty() {
        all
    } else {
        selected.to_vec()
    };
    if seconds == 0 {
        bail!("--time must be at least 1 second");
    }
    ensure_tools()?;
    step(
        "build the fuzz targets (proxy/fuzz, AddressSanitizer; the first build takes minutes)",
        || run(cargo_fuzz().args(["build", "--fuzz-dir"]).arg(fuzz_dir())),
    )?;
    let mut outcomes = Vec::new();
    for target in &chosen {
        let outcome = step(&format!("fuzz {target} for {seconds} s"), || {
            run_target(target, seconds)
        })?;
        outcomes.push(outcome);
    }
    eprintln!("==> fuzz summary ({seconds} s per target)");
    for o in &outcomes {
        let execs = o
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        eprintln!(
            "    {:<16} {:>6.0} s {:>12} runs {:>6} corpus inputs  {}",
            o.target,
            o.seconds,
            execs,
            o.corpus,
            o.failure.as_deref().unwrap_or("ok")
        );
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| Some(format!("{} ({})", o.target, o.failure.as_ref()?)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) crashed: {}. Reproduce with `RUSTC_BOOTSTRAP=1 PROXY_SKIP_EBPF=1 cargo fuzz run --fuzz-dir proxy/fuzz TARGET ARTIFACT` (see docs/operations.md, Fuzzing)",
            failed.join("; ")
        );
    }
    Ok(())
}

/// Runs one target for `seconds`; a crash is an `Outcome` with a failure, not an error.
fn run_target(target: &str, seconds: u64) -> anyhow::Result<Outcome> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let seeds = dir.join("seeds").join(target);
    let dict = dir.join("dicts").join(format!("{target}.dict"));
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut cmd = cargo_fuzz();
    cmd.args(["run", "--fuzz-dir"])
        .arg(&dir)
        .arg(target)
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1");
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut executions = None;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading the output of {shown}"))?;
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if let Some(n) = text.strip_prefix("stat::number_of_executed_units:") {
            executions = n.trim().parse().ok();
        }
        // libFuzzer's progress lines (`#1234 NEW cov: ...`, `NEW_FUNC ...`) are many; keep the
        // periodic ones. The recommended dictionary at the end is long too. Everything else
        // (start-up, crash reports, stack traces) is shown.
        let progress = text.starts_with('#')
            && !(text.contains("pulse") || text.contains("INITED") || text.contains("DONE"));
        let dictionary = (text.starts_with('"') && text.contains("# Uses:"))
            || text.contains("ecommended dictionary");
        let new_function = text.trim_start().starts_with("NEW_FUNC");
        if !progress && !dictionary && !new_function {
            eprintln!("    {text}");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    let failure = (!status.success()).then(|| {
        newest_since(&artifacts, started_at).map_or_else(
            || format!("exited with {status}, no crash input saved (see its output above)"),
            |p| p.display().to_string(),
        )
    });
    Ok(Outcome {
        target: target.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        executions,
        corpus: std::fs::read_dir(&corpus).map_or(0, Iterator::count),
        failure,
    })
}

/// The newest file in `dir` written at or after `since` (the crash input of this run).
fn newest_since(dir: &Path, since: SystemTime) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| (modified, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_seeds() {
        let targets = targets().expect("fuzz targets listed");
        assert!(targets.len() >= 6, "{targets:?}");
        for t in targets {
            let seeds = fuzz_dir().join("seeds").join(&t);
            let count = std::fs::read_dir(&seeds).map_or(0, Iterator::count);
            assert!(
                count > 0,
                "fuzz target {t} has no seeds in {}",
                seeds.display()
            );
        }
    }
}
