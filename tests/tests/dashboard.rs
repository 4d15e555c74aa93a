//! The live dashboard in headless Chromium (Debian's chromium): loaded from a running proxy's
//! admin API, its numbers change after traffic and a ban; a screenshot is saved.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use proxy_tests::{
    client::get_in,
    harness::{ORIGIN, World},
    netns::Topology,
    process::run,
};

const ORIGIN_BIN: &str = env!("CARGO_BIN_EXE_demo-origin");
const TOKEN: &str = "dashboard-token";

/// Renders the page in headless Chromium inside the server namespace; returns the DOM after
/// the page's scripts ran (virtual time lets its 1 s refresh run a few times).
fn render(w: &World, out_dir: &Path, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Topology::command_in(&w.topo.srv_ns, "chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=4000",
        "--window-size=1200,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    cmd.arg(format!("http://127.0.0.1:9901/#token={TOKEN}"))
        .current_dir(out_dir);
    let out = run(cmd.env("HOME", profile.path()));
    assert_eq!(out.code, 0, "chromium failed: {}", out.stderr);
    out.stdout
}

/// The text of the element with `id` in a dumped DOM.
fn value(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"))
        + marker.len();
    dom[start..].split('<').next().unwrap().trim().to_owned()
}

#[test]
fn the_dashboard_shows_live_numbers_and_bans() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: `cargo xtask test` installs it"
    );
    let w = World::new(65, ORIGIN_BIN);
    let digest = proxy::access::token_digest(TOKEN);
    let config = w.write_config(
        "dash.toml",
        &format!(
            r#"
workers = 2
[kernel]
attach = "xdp"
interfaces = ["{iface}"]
[admin]
listen = "127.0.0.1:9901"
token = "{digest}"
[[listener]]
address = "0.0.0.0:8080"
upstream = "o"
[upstream.o]
servers = ["{ORIGIN}"]
[[ban]]
name = "probe"
on = "deny-pattern"
path_regex = "^/wp-login"
ttl = "10m"
"#,
            iface = w.topo.srv_if
        ),
    );
    let _proxy = w.start_proxy(&config, &[], &[], "127.0.0.1:8080".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let before = render(&w, dir.path(), None);
    assert_eq!(value(&before, "error"), "", "the page reported an error");
    let requests_before: u64 = value(&before, "requests_total").parse().unwrap();
    assert!(
        value(&before, "workers").contains("<td>0</td>") || before.contains("id=\"workers\""),
        "no workers table"
    );

    // Traffic, then a ban (which makes the kernel drop the client's next packets).
    let addr = SocketAddr::new(w.topo.srv_ip.into(), 8080);
    for _ in 0..10 {
        assert_eq!(
            get_in(&w.topo.cli_ns, addr, "/", Duration::from_secs(1))
                .unwrap()
                .status,
            200
        );
    }
    assert_eq!(
        get_in(
            &w.topo.cli_ns,
            addr,
            "/wp-login.php",
            Duration::from_secs(1)
        )
        .unwrap()
        .status,
        403
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        get_in(&w.topo.cli_ns, addr, "/", Duration::from_secs(1)).is_err(),
        "the banned client was served"
    );

    let after = render(&w, dir.path(), None);
    let requests_after: u64 = value(&after, "requests_total").parse().unwrap();
    assert!(
        requests_after >= requests_before + 11,
        "requests_total went from {requests_before} to {requests_after}"
    );
    let client = w.topo.cli_ip.to_string();
    assert!(
        after.contains(&format!("{client}/32")) && after.contains("auto-ban: probe"),
        "the ban is not shown:\n{after}"
    );
    let dropped: u64 = value(&after, "dropped_total").parse().unwrap();
    assert!(dropped > 0, "no drops shown");
    assert!(
        after.contains("127.0.0.1:9000") && after.contains("class=\"up\""),
        "upstream health not shown"
    );

    // A screenshot for people to look at.
    let shot = dir.path().join("dashboard.png");
    render(&w, dir.path(), Some(&shot));
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(size > 10_000, "screenshot missing or empty ({size} bytes)");
    let keep: PathBuf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(&shot, keep.join("dashboard.png")).unwrap();
}
