//! Bad input to the CLI: each case exits with code 2 and one clear line, and changes nothing.
use std::process::Command;

use proxy::kernel::Datapath;
use proxy_tests::{
    process::{Output, proxy_bin, proxy_cli, run},
    require_root, unique_id,
};

fn assert_fails(out: &Output, needle: &str) {
    assert_eq!(
        out.code, 2,
        "expected exit code 2, got {}: {}{}",
        out.code, out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "stderr lacks {needle:?}: {}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "stdout should be empty on error: {}",
        out.stdout
    );
}

/// Pinned maps and a state file for a fake instance (no daemon needed for list management).
struct Instance {
    name: String,
    dir: tempfile::TempDir,
}

impl Instance {
    fn new() -> Self {
        require_root();
        proxy::kernel::ensure_bpffs().unwrap();
        let name = format!("cli-{}", unique_id());
        drop(Datapath::load(&proxy::kernel::pin_dir(&name)).expect("load kernel programs"));
        Self {
            name,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let state = self.dir.path().join("state.json");
        run(Command::new(proxy_bin()).args(args).args([
            "--instance",
            &self.name,
            "--state-file",
            state.to_str().unwrap(),
        ]))
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state.json")).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(proxy::kernel::pin_dir(&self.name));
    }
}

#[test]
fn invalid_cidrs_are_rejected_and_nothing_is_written() {
    let i = Instance::new();
    assert_fails(
        &i.cli(&["blocklist", "add", "10.0.0.1/8"]),
        "has host bits set after the /8 prefix; did you mean 10.0.0.0/8?",
    );
    assert_fails(
        &i.cli(&["blocklist", "add", "10.0.0.0/33"]),
        "too long for IPv4",
    );
    assert_fails(
        &i.cli(&["blocklist", "add", "not-an-address"]),
        "is not an IP address or CIDR",
    );
    assert_fails(&i.cli(&["allowlist", "add", "2001:db8::1/32"]), "host bits");
    assert_fails(
        &i.cli(&["blocklist", "remove", "192.0.2.0/24"]),
        "192.0.2.0/24 is not in the blocklist",
    );
    assert!(
        i.state().is_empty(),
        "state file written on bad input: {}",
        i.state()
    );
    let list = i.cli(&["blocklist", "list", "--json"]);
    assert_eq!(list.stdout.trim(), "[]");
}

#[test]
fn bad_ttls_are_rejected_by_the_parser() {
    let i = Instance::new();
    let out = i.cli(&["blocklist", "add", "192.0.2.1", "--ttl", "soon"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--ttl") && out.stderr.contains("soon"),
        "{}",
        out.stderr
    );
    let out = i.cli(&["blocklist", "add", "192.0.2.1", "--ttl", "0s"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("must be greater than 0"),
        "{}",
        out.stderr
    );
}

#[test]
fn import_is_all_or_nothing_and_names_the_bad_line() {
    let i = Instance::new();
    let good = i.dir.path().join("drop.txt");
    std::fs::write(&good, "; Spamhaus DROP List 2026/11/24\n1.10.16.0/20 ; SBL256894\n# comment\n\n192.0.2.7\n2001:db8::/32\n").unwrap();
    let out = i.cli(&[
        "blocklist",
        "import",
        good.to_str().unwrap(),
        "--reason",
        "drop list",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("imported 3 prefixes"), "{}", out.stdout);

    let bad = i.dir.path().join("bad.txt");
    std::fs::write(&bad, "198.51.100.0/24\n198.51.100.300\n").unwrap();
    let before = i.state();
    assert_fails(
        &i.cli(&["blocklist", "import", bad.to_str().unwrap()]),
        "bad.txt:2: ",
    );
    assert_eq!(i.state(), before, "a failed import changed the state file");
    let list = i.cli(&["blocklist", "list"]).stdout;
    assert!(!list.contains("198.51.100.0/24"), "{list}");
    assert!(
        list.contains("1.10.16.0/20") && list.contains("3 entries"),
        "{list}"
    );

    assert_fails(
        &i.cli(&["blocklist", "import", "/nonexistent/list.txt"]),
        "cannot read list file /nonexistent/list.txt",
    );

    let flushed = i.cli(&["blocklist", "flush"]);
    assert!(
        flushed.stdout.contains("removed 3 entries"),
        "{}",
        flushed.stdout
    );
    assert!(i.cli(&["blocklist", "list"]).stdout.contains("0 entries"));
}

#[test]
fn an_unknown_instance_is_named() {
    require_root();
    let name = format!("nosuch-{}", unique_id());
    assert_fails(
        &proxy_cli(&["blocklist", "add", "192.0.2.1", "--instance", &name]),
        &format!("no instance {name:?}"),
    );
    assert_fails(
        &proxy_cli(&["stats", "--instance", &name]),
        "does not exist",
    );
    assert_fails(
        &proxy_cli(&["blocklist", "list", "--instance", "../etc"]),
        "may only contain",
    );
    // The cache is reached through the running instance's admin API.
    assert_fails(
        &proxy_cli(&["cache", "stats", "--instance", &name]),
        &format!("instance {name:?} is not running"),
    );
    assert_fails(
        &proxy_cli(&[
            "cache",
            "purge",
            "http://example.com/x",
            "--instance",
            &name,
        ]),
        "is not running",
    );
    assert_fails(
        &proxy_cli(&["cache", "purge", "example.com/x", "--instance", &name]),
        "give an absolute http:// or https:// URL",
    );
}

#[test]
fn a_missing_bpffs_is_reported() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(proxy_bin())
        .args(["blocklist", "list"])
        .env("PROXY_BPFFS", dir.path()));
    assert_fails(
        &out,
        &format!("no bpffs is mounted at {}", dir.path().display()),
    );
}

#[test]
fn a_non_root_run_is_refused() {
    require_root();
    // setpriv (util-linux) drops to nobody for this one command.
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(proxy_bin())
        .args(["blocklist", "list"]));
    assert_fails(&out, "this needs root");
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(proxy_bin())
        .args(["stats"]));
    assert_fails(&out, "this needs root");
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[listener]]\naddress = \"127.0.0.1:8080\"\nupstream = \"missing\"\n\n[kernel]\nattach = \"none\"\n").unwrap();
    let out = proxy_cli(&["check-config", path.to_str().unwrap()]);
    assert_fails(
        &out,
        "`listener[0].upstream` names upstream \"missing\", which is not defined",
    );
    let out = proxy_cli(&["run", "--config", path.to_str().unwrap()]);
    assert_fails(&out, "listener[0].upstream");

    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:99999\"\nupstream = \"a\"\n",
    )
    .unwrap();
    assert_fails(
        &proxy_cli(&["check-config", path.to_str().unwrap()]),
        "address",
    );

    assert_fails(
        &proxy_cli(&["check-config", "/nonexistent.toml"]),
        "cannot read config file /nonexistent.toml",
    );

    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.toml");
    let out = proxy_cli(&["check-config", good]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(": ok"), "{}", out.stdout);
}
