//! `cargo xtask bench h2` and `cargo xtask bench tls`: the l7 scenario's method (systems under
//! test and the nginx origin on CPU 0, the load generator on CPU 1, interleaved, 3
//! repetitions, medians with their range, CPU per request of the serving process) for
//!
//! - `h2`: HTTP/2 with prior knowledge (h2c) from h2load (64 connections, 10 streams each)
//!   to nginx, HAProxy and this proxy, HTTP/1.1 to the origin; p50/p99 from h2load's
//!   per-request log;
//! - `tls`: TLS 1.3 termination against nginx (same ECDSA P-256 certificate): new handshakes
//!   per second (wrk, `Connection: close`, so every request is a new connection and a full
//!   handshake) and keep-alive requests per second.
use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{
    l7bench::{
        Sample, bench_dir, cpu_ticks, nginx_worker, pinned, report, template, wait_port, wrk_url,
    },
    util::{Procs, median_range, percentile, to_f64, workspace},
};

const RUN: Duration = Duration::from_secs(6);

fn arg(p: &Path) -> String {
    p.to_str().unwrap_or_default().to_owned()
}

/// h2load (1 thread on CPU 1, 64 connections x 10 streams, h2c) for `secs` seconds.
fn h2load(url: &str, secs: u64, pid: Option<u32>, log: &Path) -> anyhow::Result<Sample> {
    crate::util::unpolluted(|| h2load_once(url, secs, pid, log))
}

fn h2load_once(url: &str, secs: u64, pid: Option<u32>, log: &Path) -> anyhow::Result<Sample> {
    let _ = std::fs::remove_file(log);
    let before = pid.map(cpu_ticks);
    let out = Command::new("taskset")
        .args(["-c", "1", "h2load", "-t1", "-c64", "-m10"])
        .arg(format!("-D{secs}"))
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running h2load")?;
    let after = pid.map(cpu_ticks);
    let text = String::from_utf8_lossy(&out.stdout);
    // "finished in 8.00s, 41234.50 req/s, ..." and "requests: N total, N started, N done,
    // N succeeded, F failed, E errored, T timeout"
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .with_context(|| format!("h2load output:\n{text}"))?;
    let requests = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .context("h2load printed no request counts")?;
    let count = |what: &str| -> u64 {
        requests
            .split(", ")
            .find_map(|p| p.strip_suffix(what)?.trim().parse().ok())
            .unwrap_or(0)
    };
    if count(" failed") + count(" errored") > 0 {
        bail!("h2load saw failures on {url}:\n{text}");
    }
    let status_2xx: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("status codes: "))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    if status_2xx == 0 {
        bail!("h2load got no 2xx answers from {url}:\n{text}");
    }
    // Log lines: start time (us), status, duration (us).
    let mut durations: Vec<f64> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    durations.sort_by(f64::total_cmp);
    let done = to_f64(count(" done"));
    Ok(Sample {
        rps,
        p50_ms: percentile(&durations, 0.50),
        p99_ms: percentile(&durations, 0.99),
        cpu_us: match (before, after) {
            (Some(b), Some(a)) if done > 0.0 => Some(to_f64(a - b) * 10_000.0 / done),
            _ => None,
        },
    })
}

/// A Markdown table row and a JSON object per target.
fn table(
    names: &[&str],
    samples: &[Vec<Sample>],
    reference: usize,
    md: &mut String,
    json: &mut Vec<String>,
    label: &str,
) {
    let rps_of = |i: usize| median_range(&samples[i].iter().map(|s| s.rps).collect::<Vec<_>>());
    let cpu_of = |i: usize| {
        let c: Vec<f64> = samples[i].iter().filter_map(|s| s.cpu_us).collect();
        (!c.is_empty()).then(|| median_range(&c).0)
    };
    for (i, name) in names.iter().enumerate() {
        let (rps, lo, hi) = rps_of(i);
        let p50 = median_range(&samples[i].iter().map(|s| s.p50_ms).collect::<Vec<_>>()).0;
        let p99 = median_range(&samples[i].iter().map(|s| s.p99_ms).collect::<Vec<_>>()).0;
        let cpu = cpu_of(i);
        let cpu_vs = match (cpu, cpu_of(reference)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {label}{name} | {rps:.0} ({lo:.0}..{hi:.0}) | {:.2} | {p50:.2} | {p99:.2} | {} | {cpu_vs} |",
            rps / rps_of(reference).0,
            cpu.map_or_else(|| "–".to_owned(), |c| format!("{c:.1}")),
        );
        json.push(format!(
            "{{\"target\": \"{label}{name}\", \"rps\": {rps:.0}, \"rps_min\": {lo:.0}, \"rps_max\": {hi:.0}, \"p50_ms\": {p50:.3}, \"p99_ms\": {p99:.3}, \"cpu_us_per_request\": {}}}",
            cpu.map_or_else(|| "null".to_owned(), |c| format!("{c:.2}"))
        ));
    }
}

/// An ECDSA P-256 certificate for 127.0.0.1 (`cert.pem`, `key.pem`, and both in
/// `combined.pem` for HAProxy) in `dir`.
fn make_certificate(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.test",
            "-addext",
            "subjectAltName=DNS:bench.test,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running openssl to make the bench certificate")?;
    if !status.success() {
        bail!("openssl could not make the bench certificate");
    }
    let combined = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("cert.pem"))?,
        std::fs::read_to_string(dir.join("key.pem"))?
    );
    std::fs::write(dir.join("combined.pem"), combined)?;
    Ok(())
}

/// The bench certificate, the nginx origin and the nginx under test (`conf`), all pinned.
fn origin_and_nginx(dir: &Path, conf: &str) -> anyhow::Result<Procs> {
    make_certificate(dir)?;
    let mut procs = Procs(Vec::new());
    for (what, c) in [("the origin nginx", "origin-nginx.conf"), ("nginx", conf)] {
        procs.0.push(
            pinned("nginx", &["-c", &arg(&template(c, dir)?)])
                .spawn()
                .with_context(|| format!("starting {what}"))?,
        );
    }
    Ok(procs)
}

pub fn h2(bin: &Path) -> anyhow::Result<(String, String)> {
    let dir = bench_dir("h2")?;
    let mut procs = origin_and_nginx(&dir, "nginx-h2.conf")?;
    let haproxy = pinned("haproxy", &["-f", &arg(&template("haproxy-h2.cfg", &dir)?)])
        .spawn()
        .context("starting haproxy")?;
    let haproxy_pid = haproxy.id();
    procs.0.push(haproxy);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-h2");
    let proxy = pinned(
        bin.join("proxy").to_str().unwrap_or_default(),
        &["run", "--config", &arg(&template("proxy-h2.toml", &dir)?)],
    )
    .spawn()
    .context("starting the proxy")?;
    let proxy_pid = proxy.id();
    procs.0.push(proxy);
    for port in [19100, 19131, 19132, 19133, 19134, 19135, 19136] {
        wait_port(port)?;
    }
    let nginx_pid = nginx_worker(&dir.join("nginx-h2.pid"));
    let targets: [(&str, &str, u16, Option<u32>); 6] = [
        ("h2c: nginx", "http", 19131, nginx_pid),
        ("h2c: HAProxy", "http", 19132, Some(haproxy_pid)),
        ("h2c: proxy", "http", 19133, Some(proxy_pid)),
        ("TLS h2: nginx", "https", 19134, nginx_pid),
        ("TLS h2: HAProxy", "https", 19135, Some(haproxy_pid)),
        ("TLS h2: proxy", "https", 19136, Some(proxy_pid)),
    ];
    let log = dir.join("h2load.log");
    let mut samples: Vec<Vec<Sample>> = targets.iter().map(|_| Vec::new()).collect();
    for rep in 0..3 {
        for (i, (name, scheme, port, pid)) in targets.iter().enumerate() {
            let url = format!("{scheme}://127.0.0.1:{port}/");
            h2load(&url, 1, None, &log)?;
            let s = h2load(&url, RUN.as_secs(), *pid, &log)?;
            report(rep, name, &s);
            samples[i].push(s);
        }
    }
    drop(procs);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-h2");
    let _ = std::fs::remove_dir_all(&dir);
    let mut md = format!(
        "## h2: HTTP/2 reverse proxying, h2c and over TLS\n\n\
         h2load (1 thread, 64 connections, 10 concurrent streams each, {} s after a 1 s warm-up) on CPU 1; nginx \
         (`listen ... http2`), HAProxy (`proto h2`; over TLS `alpn h2`) and this proxy (h2c on its plain listener; \
         ALPN h2 on its TLS listener), 1 worker each, the same ECDSA P-256 certificate for TLS 1.3, and \
         the nginx origin (1 KiB file, HTTP/1.1 keep-alive behind every proxy) on CPU 0. p50/p99 from h2load's \
         per-request log. Interleaved, 3 repetitions, median (min..max); ratios against nginx.\n\n\
         | target | req/s | vs nginx | p50 ms | p99 ms | CPU us/request | CPU vs nginx |\n|---|---|---|---|---|---|---|\n",
        RUN.as_secs()
    );
    let mut json = Vec::new();
    let names: Vec<&str> = targets.iter().map(|t| t.0).collect();
    // h2c rows against nginx h2c, TLS rows against nginx over TLS.
    table(&names[..3], &samples[..3], 0, &mut md, &mut json, "");
    table(&names[3..], &samples[3..], 0, &mut md, &mut json, "");
    // Against #13's target (req/s at least nginx's), in words, from this run's medians.
    let rps = |i: usize| median_range(&samples[i].iter().map(|s| s.rps).collect::<Vec<_>>()).0;
    let (h2c, tls) = (rps(2) / rps(0), rps(5) / rps(3));
    let verdict = |r: f64| if r >= 1.0 { "met" } else { "missed" };
    let _ = write!(
        md,
        "\n**Against #13's target (req/s at least 1.0x nginx's), this run:** h2c {h2c:.2}x ({}), \
         TLS h2 {tls:.2}x ({}).\n",
        verdict(h2c),
        verdict(tls)
    );
    md.push_str(
        "\nWhere the proxy is behind: HTTP/2 stays on hyper's server (HPACK, a tokio task \
         per stream, under the proxy's per-stream send_timeout watchdog) while its upstream HTTP/1.1 requests go out \
         on the proxy's own client. An earlier profile (`perf record -g -p <proxy>` during this load) had a third of \
         the samples in the kernel, mostly the loopback writes to the origin on the same CPU, about a fifth in \
         malloc/free and memmove, and the rest spread thin over h2 and the request path. Idle upstream connections \
         per server default to 1024 (nginx gets `keepalive 1024` here too): with 64, 640 concurrent streams closed \
         and reopened upstream connections. HAProxy keeps every idle backend connection (`http-reuse always`, no \
         pool cap) and allocates from its own pools.\n",
    );
    md.push('\n');
    md.push_str(&crate::util::foreign_note());
    Ok((
        md,
        format!(
            "{{\"scenario\": \"h2\", \"results\": [{}]}}",
            json.join(", ")
        ),
    ))
}

pub fn tls(bin: &Path) -> anyhow::Result<(String, String)> {
    let dir = bench_dir("tls")?;
    let mut procs = origin_and_nginx(&dir, "nginx-tls.conf")?;
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-tls");
    let proxy = pinned(
        bin.join("proxy").to_str().unwrap_or_default(),
        &["run", "--config", &arg(&template("proxy-tls.toml", &dir)?)],
    )
    .spawn()
    .context("starting the proxy")?;
    let proxy_pid = proxy.id();
    procs.0.push(proxy);
    for port in [19100, 19141, 19143] {
        wait_port(port)?;
    }
    let nginx_pid = nginx_worker(&dir.join("nginx-tls.pid"));
    let close = workspace().join("xtask/bench/close.lua");
    let targets: [(&str, u16, Option<u32>); 2] = [
        ("nginx", 19141, nginx_pid),
        ("proxy", 19143, Some(proxy_pid)),
    ];
    // [handshakes, keep-alive] x target
    let mut samples: Vec<Vec<Vec<Sample>>> = (0..2)
        .map(|_| targets.iter().map(|_| Vec::new()).collect())
        .collect();
    for rep in 0..3 {
        for (mode, script) in [(0usize, Some(close.as_path())), (1, None)] {
            for (i, (name, port, pid)) in targets.iter().enumerate() {
                let url = format!("https://127.0.0.1:{port}/");
                wrk_url(&url, 1, None, script)?;
                let s = wrk_url(&url, RUN.as_secs(), *pid, script)?;
                let label = if mode == 0 {
                    "handshakes"
                } else {
                    "keep-alive"
                };
                report(rep, &format!("{label} {name}"), &s);
                samples[mode][i].push(s);
            }
        }
    }
    drop(procs);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/proxy/bench-tls");
    let _ = std::fs::remove_dir_all(&dir);
    let mut md = format!(
        "## tls: TLS 1.3 termination\n\n\
         nginx (OpenSSL) and this proxy (rustls, ring), 1 worker each, the same ECDSA P-256 certificate, on CPU 0 \
         with the nginx origin (1 KiB file); wrk (2 threads, 64 connections, {} s after a 1 s warm-up) on CPU 1. \
         New handshakes: `Connection: close` on every request (`xtask/bench/close.lua`), so each request is a new \
         TCP connection and a full TLS 1.3 handshake (no resumption): req/s = handshakes/s. Keep-alive: requests \
         on established TLS connections. Interleaved, 3 repetitions, median (min..max); ratios against nginx.\n\n\
         | target | req/s | vs nginx | p50 ms | p99 ms | CPU us/request | CPU vs nginx |\n|---|---|---|---|---|---|---|\n",
        RUN.as_secs()
    );
    let mut json = Vec::new();
    let names: Vec<&str> = targets.iter().map(|t| t.0).collect();
    table(
        &names,
        &samples[0],
        0,
        &mut md,
        &mut json,
        "new handshakes: ",
    );
    table(&names, &samples[1], 0, &mut md, &mut json, "keep-alive: ");
    md.push_str(
        "\nNew handshakes: the proxy is ahead (rustls with ring's P-256 against OpenSSL 3.0, which is known to be \
         slow at handshakes). Keep-alive: the proxy is behind nginx by the same userspace cost per request as in \
         `l7` (see there); TLS adds about the same to both.\n",
    );
    md.push('\n');
    md.push_str(&crate::util::foreign_note());
    Ok((
        md,
        format!(
            "{{\"scenario\": \"tls\", \"results\": [{}]}}",
            json.join(", ")
        ),
    ))
}
