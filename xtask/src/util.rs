//! Small helpers: timed steps, running commands with visible output, paths.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// Prints a step header, runs it, prints how long it took.
pub fn step<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("==> {what}");
    let start = Instant::now();
    let out = f().with_context(|| format!("step failed: {what}"))?;
    eprintln!("    done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(out)
}

/// Runs a command with inherited stdout/stderr; fails with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or `None` if it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo that runs us (rustup's), for the host builds.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace());
    if std::env::var_os("CARGO_BUILD_JOBS").is_none() {
        c.env("CARGO_BUILD_JOBS", "2");
    }
    c
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 2m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("{text:?} is not a duration like 10s or 2m")),
    }
}

/// Children a benchmark started, stopped by PID when dropped (also on error or panic).
/// SIGTERM first, so that an nginx or HAProxy master stops its workers too (SIGKILL would
/// leave them running, orphaned); SIGKILL only for what is still there after 5 s.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &self.0 {
            let pid = i32::try_from(c.id()).expect("pid fits");
            // SAFETY: kill(2) on the PID of a child we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` as f64, for rates, averages and reports.
#[expect(
    clippy::cast_precision_loss,
    reason = "the counts measured here (requests, packets, KiB, clock ticks) stay far below 2^53, where f64 is exact"
)]
pub fn to_f64(n: u64) -> f64 {
    n as f64
}

/// The value at fraction `p` (0..=1) of already sorted samples; NaN when there are none.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "p is in 0..=1, so the rounded index is a whole number in 0..len"
)]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((to_f64(sorted.len() as u64) - 1.0) * p).round() as usize;
    sorted[idx]
}

/// (median, min, max) of repeated runs; NaNs when there are none.
pub fn median_range(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(&lo), Some(&hi)) => (percentile(&v, 0.5), lo, hi),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// CPU time of processes that are not ours, to spot benchmark runs that something else on the
/// machine disturbed: every process that is neither this one, nor one of its descendants (the
/// systems under test, origins, load generators), nor a kernel thread (softirq work done for
/// the benchmark's own packets runs there).
pub struct Foreign {
    before: std::collections::HashMap<u32, u64>,
    started: Instant,
}

/// The worst foreign load seen by any measured run, in permille of one CPU.
pub static FOREIGN_MAX_PERMILLE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Foreign load above this share of one CPU makes a run polluted: it is discarded and
/// repeated.
pub const FOREIGN_LIMIT: f64 = 0.10;

fn foreign_processes() -> std::collections::HashMap<u32, u64> {
    // pid -> (ppid, ticks, kernel thread)
    let mut all = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|r| r.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Fields after the command: state(0) ppid(1) ... flags(6) ... utime(11) stime(12).
        let kthread = num(6) & 0x0020_0000 != 0;
        all.insert(
            pid,
            (
                u32::try_from(num(1)).unwrap_or(0),
                num(11) + num(12),
                kthread,
            ),
        );
    }
    let me = std::process::id();
    let ours = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match all.get(&pid) {
                Some((ppid, _, _)) if *ppid != 0 => pid = *ppid,
                _ => return false,
            }
        }
        false
    };
    all.iter()
        .filter(|(pid, (_, _, kthread))| !kthread && !ours(**pid))
        .map(|(pid, (_, ticks, _))| (*pid, *ticks))
        .collect()
}

impl Foreign {
    pub fn start() -> Self {
        Self {
            before: foreign_processes(),
            started: Instant::now(),
        }
    }

    /// Foreign CPU time since `start`, as a share of one CPU; also kept in
    /// [`FOREIGN_MAX_PERMILLE`].
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative share in permille, far below u64::MAX"
    )]
    pub fn share(&self) -> f64 {
        let ticks: u64 = foreign_processes()
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.before.get(pid).copied().unwrap_or(0)))
            .sum();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let share = to_f64(ticks) / 100.0 / secs;
        FOREIGN_MAX_PERMILLE.fetch_max(
            (share * 1000.0) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        share
    }
}

/// The line each scenario's section ends with about foreign load.
pub fn foreign_note() -> String {
    let worst = to_f64(FOREIGN_MAX_PERMILLE.swap(0, std::sync::atomic::Ordering::Relaxed)) / 10.0;
    format!(
        "Foreign CPU load (processes other than the benchmark's own, per /proc) during the measured runs: at most \
         {worst:.1} % of one CPU; runs above {:.0} % are discarded and repeated.\n",
        FOREIGN_LIMIT * 100.0
    )
}

/// Runs a measurement until foreign load stays under [`FOREIGN_LIMIT`] (3 tries; the last one
/// is kept whatever it saw, and says so).
pub fn unpolluted<T>(mut measure: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    for attempt in 1..=3 {
        let foreign = Foreign::start();
        let result = measure()?;
        let share = foreign.share();
        if share <= FOREIGN_LIMIT || attempt == 3 {
            if share > FOREIGN_LIMIT {
                eprintln!(
                    "    foreign load {:.0} % of a CPU in the third try too: kept",
                    share * 100.0
                );
            }
            return Ok(result);
        }
        eprintln!(
            "    run discarded: foreign load {:.0} % of a CPU; repeating",
            share * 100.0
        );
    }
    unreachable!("the third attempt returns")
}

/// On Ctrl-C or SIGTERM, the benchmark stops what it started (every descendant of this
/// process, by PID: servers, origins, load generators) before it exits; the namespaces, pins
/// and nftables tables it made are removed by the next run's set-up.
pub fn stop_children_on_signal() {
    let _ = ctrlc::set_handler(|| {
        let me = std::process::id();
        let mut parents = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            if let Some(ppid) = ppid {
                parents.insert(pid, ppid);
            }
        }
        for &pid in parents.keys() {
            let mut at = pid;
            for _ in 0..64 {
                match parents.get(&at) {
                    Some(&p) if p == me => {
                        if let Ok(pid) = i32::try_from(pid) {
                            // SAFETY: kill on the PID of a process this benchmark started.
                            unsafe { libc::kill(pid, libc::SIGTERM) };
                        }
                        break;
                    }
                    Some(&p) if p > 1 => at = p,
                    _ => break,
                }
            }
        }
        eprintln!("xtask: interrupted; stopped the benchmark's processes");
        std::process::exit(130);
    });
}

/// `ip ARGS...` (iproute2), quiet unless it fails.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args).stdout(Stdio::null()))
}

/// Deletes these network namespaces (those that exist), quietly.
pub fn del_netns(names: &[&str]) {
    for ns in names {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}
