//! `cargo xtask bench l7`: HTTP/1.1 keep-alive reverse proxying of a 1 KiB file, this proxy
//! against nginx, HAProxy (configs in xtask/bench/), a minimal hyper proxy (the floor of
//! what tokio + hyper cost: xtask/bench/hyper-proxy) and the origin directly. The systems
//! under test and the origin are pinned to CPU 0, wrk to CPU 1; peers are interleaved, 3
//! repetitions; CPU per request is the proxy process's own user+system time. Then a build
//! with `bench-counters` counts heap allocations and task polls per request.
use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util::{Procs, cargo, median_range, run, step, to_f64, workspace};

const RUN: Duration = Duration::from_secs(6);

/// A fresh temporary directory for a scenario, with the 1 KiB page every origin serves
/// (`www/index.html`).
pub(crate) fn bench_dir(scenario: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("proxy-bench-{scenario}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www"))?;
    let page: String = (0..1024)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)))
        .collect();
    std::fs::write(dir.join("www/index.html"), page)?;
    Ok(dir)
}

/// Builds what `l7` needs besides the proxy: the minimal hyper proxy, and the proxy with
/// `bench-counters` (its own profile directory, so target/release stays the plain build).
pub fn build_extras() -> anyhow::Result<()> {
    step("build the minimal hyper proxy (bench floor)", || {
        run(cargo().args(["build", "--locked", "--release", "-p", "bench-hyper-proxy"]))
    })?;
    step(
        "build the proxy with bench-counters (allocations and polls per request)",
        || {
            run(cargo().args([
                "build",
                "--locked",
                "--profile",
                "bench-counters",
                "--features",
                "bench-counters",
                "-p",
                "proxy",
                "--bin",
                "proxy",
            ]))
        },
    )
}

/// Heap allocations and task polls per request of the proxy (a `bench-counters` build, not
/// pinned, not timed): the counters from `/metrics` before and after a wrk run.
fn counted(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("proxy.toml"))?
        .replace(
            "listen = \"off\"",
            &format!("listen = \"unix:{}/admin.sock\"", dir.display()),
        )
        .replace("127.0.0.1:19103", "127.0.0.1:19105")
        .replace("instance = \"bench-l7\"", "instance = \"bench-l7-count\"")
        .replace("state.json", "state-count.json");
    let cfg = dir.join("proxy-count.toml");
    std::fs::write(&cfg, text)?;
    let bin = workspace().join("target/bench-counters/proxy");
    let mut procs = Procs(Vec::new());
    procs.0.push(
        pinned(
            bin.to_str().unwrap_or_default(),
            &["run", "--config", cfg.to_str().unwrap_or_default()],
        )
        .spawn()
        .context("starting the bench-counters proxy")?,
    );
    wait_port(19105)?;
    let socket = dir.join("admin.sock");
    wrk(19105, 1, None)?;
    let before = counters(&socket)?;
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "wrk",
            "-t2",
            "-c64",
            "-d3s",
            "http://127.0.0.1:19105/",
        ])
        .output()
        .context("running wrk")?;
    let after = counters(&socket)?;
    drop(procs);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-l7-count");
    let text = String::from_utf8_lossy(&out.stdout);
    let total: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("wrk output:\n{text}"))?;
    // The two /metrics reads themselves allocate too: a few hundred, against 100 000 requests.
    Ok(((after.0 - before.0) / total, (after.1 - before.1) / total))
}

/// (allocations, polls) from the admin socket's `/metrics`.
fn counters(socket: &Path) -> anyhow::Result<(f64, f64)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let get = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .with_context(|| format!("{name} missing from /metrics (not a bench-counters build?)"))
    };
    Ok((
        get("proxy_bench_allocations_total ")?,
        get("proxy_bench_task_polls_total ")?,
    ))
}

/// One measured run, as a progress line.
pub(crate) fn report(rep: usize, name: &str, s: &Sample) {
    eprintln!(
        "    rep {} {name:<28} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  cpu {}",
        rep + 1,
        s.rps,
        s.p50_ms,
        s.p99_ms,
        s.cpu_us
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1} us/req"))
    );
}

pub(crate) fn template(name: &str, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(workspace().join("xtask/bench").join(name))
        .with_context(|| format!("reading xtask/bench/{name}"))?;
    let out = dir.join(name);
    std::fs::write(&out, text.replace("{DIR}", &dir.display().to_string()))?;
    Ok(out)
}

pub(crate) fn pinned(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", "0", program])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// utime + stime of `pid` in clock ticks (100 Hz).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The nginx worker's PID (the child of the master whose pid file is given).
pub(crate) fn nginx_worker(pid_file: &Path) -> Option<u32> {
    let master = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()?;
    let children =
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

pub(crate) fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us: Option<f64>,
}

fn ms(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Some(v) = t.strip_suffix("us") {
        return v.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    if let Some(v) = t.strip_suffix("ms") {
        return v.parse().ok();
    }
    t.strip_suffix('s')
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v * 1000.0)
}

fn wrk(port: u16, secs: u64, pid: Option<u32>) -> anyhow::Result<Sample> {
    wrk_url(&format!("http://127.0.0.1:{port}/"), secs, pid, None)
}

/// wrk (2 threads, 64 connections, on CPU 1) against `url`, optionally with a Lua script;
/// CPU per request is measured on `pid`.
pub(crate) fn wrk_url(
    url: &str,
    secs: u64,
    pid: Option<u32>,
    script: Option<&Path>,
) -> anyhow::Result<Sample> {
    crate::util::unpolluted(|| wrk_once(url, secs, pid, script))
}

fn wrk_once(
    url: &str,
    secs: u64,
    pid: Option<u32>,
    script: Option<&Path>,
) -> anyhow::Result<Sample> {
    let before = pid.map(cpu_ticks);
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "1",
        "wrk",
        "-t2",
        "-c64",
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
    let after = pid.map(cpu_ticks);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(str::to_owned))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk output:\n{text}"))?;
    let total: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if errors {
        bail!("wrk saw errors on {url}:\n{text}");
    }
    Ok(Sample {
        rps,
        p50_ms: field("50%").and_then(|v| ms(&v)).unwrap_or(f64::NAN),
        p99_ms: field("99%").and_then(|v| ms(&v)).unwrap_or(f64::NAN),
        cpu_us: match (before, after) {
            (Some(b), Some(a)) if total > 0.0 => Some(to_f64(a - b) * 10_000.0 / total),
            _ => None,
        },
    })
}

/// Runs the scenario; returns the Markdown section and a JSON object.
#[expect(
    clippy::too_many_lines,
    reason = "the scenario start to end: servers, measured runs, then the table"
)]
pub fn l7(bin: &Path) -> anyhow::Result<(String, String)> {
    let dir = bench_dir("l7")?;
    let mut procs = Procs(Vec::new());
    procs.0.push(
        pinned(
            "nginx",
            &[
                "-c",
                template("origin-nginx.conf", &dir)?
                    .to_str()
                    .unwrap_or_default(),
            ],
        )
        .spawn()
        .context("starting the origin nginx")?,
    );
    procs.0.push(
        pinned(
            "nginx",
            &[
                "-c",
                template("nginx.conf", &dir)?.to_str().unwrap_or_default(),
            ],
        )
        .spawn()
        .context("starting nginx")?,
    );
    let haproxy = pinned(
        "haproxy",
        &[
            "-f",
            template("haproxy.cfg", &dir)?.to_str().unwrap_or_default(),
        ],
    )
    .spawn()
    .context("starting haproxy")?;
    let haproxy_pid = haproxy.id();
    procs.0.push(haproxy);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-l7");
    let proxy_cfg = template("proxy.toml", &dir)?;
    let proxy = pinned(
        bin.join("proxy").to_str().unwrap_or_default(),
        &["run", "--config", proxy_cfg.to_str().unwrap_or_default()],
    )
    .spawn()
    .context("starting the proxy")?;
    let proxy_pid = proxy.id();
    procs.0.push(proxy);
    let floor = pinned(
        workspace()
            .join("target/release/bench-hyper-proxy")
            .to_str()
            .unwrap_or_default(),
        &["127.0.0.1:19104", "127.0.0.1:19100"],
    )
    .spawn()
    .context("starting the minimal hyper proxy")?;
    let floor_pid = floor.id();
    procs.0.push(floor);
    for port in [19100, 19101, 19102, 19103, 19104] {
        wait_port(port)?;
    }
    let nginx_pid = nginx_worker(&dir.join("nginx.pid"));
    let peers: [(&str, u16, Option<u32>); 5] = [
        ("origin direct", 19100, None),
        ("nginx", 19101, nginx_pid),
        ("HAProxy", 19102, Some(haproxy_pid)),
        ("minimal hyper proxy", 19104, Some(floor_pid)),
        ("proxy", 19103, Some(proxy_pid)),
    ];
    let mut samples: Vec<Vec<Sample>> = peers.iter().map(|_| Vec::new()).collect();
    for rep in 0..3 {
        for (i, (name, port, pid)) in peers.iter().enumerate() {
            wrk(*port, 1, None)?; // warm-up
            let s = wrk(*port, RUN.as_secs(), *pid)?;
            report(rep, name, &s);
            samples[i].push(s);
        }
    }
    // The origin still runs: the counted pass goes through it too.
    let (allocs, polls) = counted(&dir)?;
    eprintln!(
        "    proxy (bench-counters build): {allocs:.1} allocations and {polls:.2} task polls per request"
    );
    drop(procs);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-l7");
    let _ = std::fs::remove_dir_all(&dir);
    let nginx_rps = median_range(&samples[1].iter().map(|s| s.rps).collect::<Vec<_>>()).0;
    let nginx_cpu = median_range(
        &samples[1]
            .iter()
            .filter_map(|s| s.cpu_us)
            .collect::<Vec<_>>(),
    )
    .0;
    let mut md = format!(
        "## l7: HTTP/1.1 reverse proxying\n\n\
         A 1 KiB file from an nginx origin (1 worker); each proxy with 1 worker/thread; origin and proxies pinned to CPU 0, \
         wrk (2 threads, 64 connections, {} s after a 1 s warm-up) on CPU 1. Configs: `xtask/bench/`. CPU = the proxy \
         process's user+system time per request (it includes the loopback delivery work done in its context). Peers \
         interleaved, 3 repetitions, median (min..max). nginx adds X-Forwarded-For, HAProxy X-Forwarded-For; this proxy \
         adds X-Forwarded-For/-Proto/-Host, Forwarded, Via and X-Request-Id.\n\n\
         | target | req/s | vs nginx | p50 ms | p99 ms | CPU us/request | CPU vs nginx |\n|---|---|---|---|---|---|---|\n",
        RUN.as_secs()
    );
    let mut json = Vec::new();
    for ((name, _, _), ss) in peers.iter().zip(&samples) {
        let (rps, lo, hi) = median_range(&ss.iter().map(|s| s.rps).collect::<Vec<_>>());
        let (p50, _, _) = median_range(&ss.iter().map(|s| s.p50_ms).collect::<Vec<_>>());
        let (p99, _, _) = median_range(&ss.iter().map(|s| s.p99_ms).collect::<Vec<_>>());
        let cpus: Vec<f64> = ss.iter().filter_map(|s| s.cpu_us).collect();
        let cpu = (!cpus.is_empty()).then(|| median_range(&cpus).0);
        let _ = writeln!(
            md,
            "| {name} | {rps:.0} ({lo:.0}..{hi:.0}) | {:.2} | {p50:.2} | {p99:.2} | {} | {} |",
            rps / nginx_rps,
            cpu.map_or_else(|| "–".to_owned(), |c| format!("{c:.1}")),
            cpu.map_or_else(|| "–".to_owned(), |c| format!("{:.2}", c / nginx_cpu)),
        );
        let counts = if *name == "proxy" {
            format!(
                ", \"allocations_per_request\": {allocs:.2}, \"task_polls_per_request\": {polls:.3}"
            )
        } else {
            String::new()
        };
        json.push(format!(
            "{{\"target\": \"{name}\", \"rps\": {rps:.0}, \"p50_ms\": {p50:.3}, \"p99_ms\": {p99:.3}, \"cpu_us_per_request\": {}{counts}}}",
            cpu.map_or_else(|| "null".to_owned(), |c| format!("{c:.2}"))
        ));
    }
    // Against #13's targets, in words, from this run's medians.
    let median = |i: usize, f: &dyn Fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = samples[i].iter().filter_map(f).collect();
        median_range(&v).0
    };
    let proxy_rps = median(4, &|s| Some(s.rps)) / nginx_rps;
    let proxy_cpu = median(4, &|s| s.cpu_us) / nginx_cpu;
    let (proxy_p99, nginx_p99) = (
        median(4, &|s| Some(s.p99_ms)),
        median(1, &|s| Some(s.p99_ms)),
    );
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let _ = write!(
        md,
        "\n**Against #13's targets, this run:** req/s {proxy_rps:.2}x nginx's (target at least 1.0: {}), \
         CPU per request {proxy_cpu:.2}x nginx's (target at most 1.0: {}), p99 {proxy_p99:.2} ms against \
         nginx's {nginx_p99:.2} (target at most nginx's: {}).\n",
        verdict(proxy_rps >= 1.0),
        verdict(proxy_cpu <= 1.0),
        verdict(proxy_p99 <= nginx_p99),
    );
    let _ = write!(
        md,
        "\nPer request, the proxy (a `bench-counters` build of the same code: a counting allocator and counted \
         task polls, 3 s of the same load) made **{allocs:.1} heap allocations** and **{polls:.2} task polls** \
         (both in the client connection's task: an HTTP/1.1 upstream connection has no task of its own, its \
         response is read in the request's task).\n"
    );
    md.push_str(
        "\nThe proxy is behind nginx here, plainly. Under callgrind (exact userspace instructions per request, \
         the same load, one worker; docs/architecture.md has the table) nginx takes about 24 000 instructions, \
         the minimal hyper proxy 37 500, this proxy 40 900 with its own HTTP/1.1 server and upstream client and \
         mimalloc (45 500 with glibc's malloc, 67 400 before #13). Where the 40 900 go, by the profile: about \
         12 000 in the `http` crate's HeaderMap (each head is parsed into a list, converted into a map, then \
         hop-by-hop fields are looked up and removed and the forwarding fields inserted, for the request and \
         again for the response), 3 900 in memcpy (the request path's nested futures moved into their parents \
         and into the box each request's future lives in), 3 800 in tokio, 3 300 in the own codec and 2 700 in \
         httparse, 3 000 in the allocator (about two dozen allocations), 1 800 in `bytes`; the phases \
         themselves take about 5 000. Getting to nginx's figure needs a header list of our own on the HTTP/1.1 \
         path end to end (as Pingora and Sozu keep theirs), not more trimming; the system calls are the same \
         for all (one read and one writev per direction).\n",
    );
    md.push('\n');
    md.push_str(&crate::util::foreign_note());
    Ok((
        md,
        format!(
            "{{\"scenario\": \"l7\", \"results\": [{}]}}",
            json.join(", ")
        ),
    ))
}
