//! The command line: `proxy run`, and the commands that manage a running instance through its
//! pinned maps and state file.
use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use proxy_common::{Counter, Reason};
use serde_json::json;

use crate::{
    clock::wall_ms,
    config::{AttachMode, Config, default_state_file, validate_instance},
    daemon,
    defense::{Cidr, ListStore, parse_list, state::StateFile},
    kernel::{self, KernelMaps, spread},
};

#[derive(Debug, Parser)]
#[command(
    name = "proxy",
    version,
    about = "eBPF-accelerated layer-4/7 reverse proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy: attach the kernel packet filter, restore the lists, serve HTTP.
    Run(RunArgs),
    /// Validate a config file without running anything.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Manage the source-address blocklist of a running instance (takes effect at once).
    Blocklist {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: BlocklistAction,
    },
    /// Manage the allowlist: sources that are never dropped, even when blocklisted.
    Allowlist {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: AllowlistAction,
    },
    /// Re-read the config of a running instance (same as SIGHUP); prints whether it was
    /// applied or why it was rejected (the running config then stays).
    Reload {
        /// Instance name.
        #[arg(long, default_value = "default", env = "PROXY_INSTANCE")]
        instance: String,
    },
    /// Hash a password for `[route.auth] type = "basic"` (reads it from stdin).
    HashPassword,
    /// Hash a bearer token for `[route.auth] type = "bearer"` (reads it from stdin).
    HashToken,
    /// Inspect or purge the response cache of a running instance (through its admin API).
    Cache {
        /// Instance name.
        #[arg(long, global = true, default_value = "default", env = "PROXY_INSTANCE")]
        instance: String,
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Internal: started by `proxy run` for the SYN proxy; restores the sysctls and removes
    /// the nftables table once the daemon has ended (its stdin closes).
    #[command(name = "__syn-proxy-cleanup", hide = true)]
    SynProxyCleanup {
        /// Instance name: the table and files follow from it.
        #[arg(long, default_value = "default", env = "PROXY_INSTANCE")]
        instance: String,
        /// Clean up at once (after a daemon that could not: systemd's `ExecStopPost`)
        /// instead of keeping the stack side until stdin closes.
        #[arg(long)]
        now: bool,
    },
    /// The fleet (`[cluster]`): this node's link to etcd and every node's progress.
    Cluster {
        /// Instance name.
        #[arg(long, global = true, default_value = "default", env = "PROXY_INSTANCE")]
        instance: String,
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Show the kernel packet counters of an instance.
    Stats {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Connected or not, the etcd revision this node has applied, and every node seen with
    /// its applied revision and lag.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Entries, bytes, hit ratio and counters.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a URL's stored responses (all variants), or every URL under a prefix ending
    /// in `*`: `proxy cache purge 'http://example.com/img/*'`; or every response tagged
    /// (`Surrogate-Key`, `Cache-Tag`) with one of the tags: `proxy cache purge --tag product-42`.
    Purge {
        /// `http(s)://host/path?query`, or a prefix ending in `*`.
        #[arg(required_unless_present = "tag", conflicts_with = "tag")]
        url: Option<String>,
        /// A purge tag (repeatable): every stored response carrying it.
        #[arg(long)]
        tag: Vec<String>,
        /// With --tag: mark the responses stale instead of removing them (they are
        /// revalidated, and may still answer when the origin fails, within stale-if-error).
        #[arg(long, requires = "tag")]
        soft: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Override kernel.attach from the config.
    #[arg(long, value_enum)]
    pub attach: Option<AttachMode>,
    /// Override the instance name from the config.
    #[arg(long)]
    pub instance: Option<String>,
    /// At stop, leave the packet filter attached (its links pinned) so the blocklist keeps
    /// protecting the host until the next `proxy run` takes it over.
    #[arg(long)]
    pub keep_kernel_state: bool,
}

/// Which instance a management command acts on.
#[derive(Debug, Args)]
pub struct Target {
    /// Instance name: its maps are pinned in /sys/fs/bpf/proxy/<instance>/.
    #[arg(long, global = true, default_value = "default", env = "PROXY_INSTANCE")]
    pub instance: String,
    /// State file to keep in step (default: the running instance's, else
    /// /var/lib/proxy/<instance>/state.json).
    #[arg(long, global = true)]
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BlocklistAction {
    /// Block an address or CIDR (replaces an existing entry for the same prefix).
    Add {
        /// e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32
        #[expect(
            clippy::doc_markdown,
            reason = "clap prints this doc comment as --help text, where backticks would show"
        )]
        cidr: String,
        /// Remove the entry by itself after this long (e.g. 90s, 10m, 12h).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Free text kept with the entry.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unblock a prefix (exactly as it was added).
    Remove { cidr: String },
    /// List the entries.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Block every address or CIDR in a file: one per line, `#` and `;` start comments
    /// (the Spamhaus DROP format loads as is). Nothing is applied if any line is invalid.
    Import {
        file: PathBuf,
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove every entry.
    Flush,
}

#[derive(Debug, Subcommand)]
pub enum AllowlistAction {
    /// Always pass this address or CIDR.
    Add {
        cidr: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a prefix from the allowlist.
    Remove { cidr: String },
    /// List the entries.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("{e}; write e.g. 90s, 10m, 12h"))?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d)
}

fn parse_cidr(text: &str) -> anyhow::Result<Cidr> {
    text.parse::<Cidr>().map_err(anyhow::Error::from)
}

/// Runs a management command (everything but `run`).
pub fn manage(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(_) => unreachable!("main dispatches run"),
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            // Also read what the config points to (certificates, CA files), as `run` would.
            crate::runtime::build_tls(&config.listener)
                .with_context(|| format!("config file {}", file.display()))?;
            let board = crate::upstream::HealthBoard::default();
            crate::runtime::build(0, std::sync::Arc::new(config.clone()), &board)
                .with_context(|| format!("config file {}", file.display()))?;
            println!(
                "{}: ok (instance {:?}, {} listener(s), {} upstream(s), attach {})",
                file.display(),
                config.instance,
                config.listener.len(),
                config.upstream.len(),
                config.kernel.attach.as_str()
            );
            Ok(())
        }
        Command::Blocklist { target, action } => blocklist(&target, action),
        Command::Allowlist { target, action } => allowlist(&target, action),
        Command::Stats { target, json } => stats(&target, json),
        Command::SynProxyCleanup { instance, now } => {
            crate::config::validate_instance(&instance).map_err(anyhow::Error::msg)?;
            crate::kernel::synproxy::cleanup_main(&instance, now)
        }
        Command::Reload { instance } => reload(&instance),
        Command::Cache { instance, action } => cache(&instance, action),
        Command::Cluster {
            instance,
            action: ClusterAction::Status { json },
        } => cluster_status(&instance, json),
        Command::HashPassword => {
            let secret = read_secret()?;
            println!(
                "{}",
                crate::access::hash_password(&secret).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::HashToken => {
            println!("{}", crate::access::token_digest(&read_secret()?));
            Ok(())
        }
    }
}

/// One line from stdin, without its line end; empty is an error.
fn read_secret() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the secret from stdin")?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(
        !secret.is_empty(),
        "no secret on stdin: pipe it in, e.g. `printf %s 's3cret' | proxy hash-password`"
    );
    Ok(secret)
}

/// What a running instance wrote about itself (its runtime file).
fn running(instance: &str) -> anyhow::Result<daemon::RuntimeInfo> {
    validate_instance(instance).map_err(anyhow::Error::msg)?;
    let runtime = daemon::runtime_file(instance);
    std::fs::read_to_string(&runtime)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .with_context(|| {
            format!(
                "instance {instance:?} is not running ({} is missing)",
                runtime.display()
            )
        })
}

/// Sends SIGHUP to the running instance and waits for its verdict.
fn reload(instance: &str) -> anyhow::Result<()> {
    let info = running(instance)?;
    let alive = std::fs::read_to_string(format!("/proc/{}/comm", info.pid))
        .is_ok_and(|c| c.trim() == "proxy");
    anyhow::ensure!(
        alive,
        "instance {instance:?} is not running (pid {} is gone)",
        info.pid
    );
    let result_file = daemon::reload_result_file(instance);
    let read = || -> Option<daemon::ReloadResult> {
        serde_json::from_str(&std::fs::read_to_string(&result_file).ok()?).ok()
    };
    let before = read().map_or(0, |r| r.serial);
    let pid = i32::try_from(info.pid).context("pid out of range")?;
    // SAFETY: kill(2) with a PID read from the instance's runtime file, checked to be a proxy.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        anyhow::bail!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(r) = read().filter(|r| r.serial > before) {
            anyhow::ensure!(r.ok, "{}", r.message);
            println!("{}", r.message);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("instance {instance:?} did not report a reload result within 15 s")
}

/// Where the running instance's admin API listens (from its runtime file).
fn admin_address(instance: &str) -> anyhow::Result<String> {
    running(instance)?.admin.with_context(|| {
        format!("instance {instance:?} runs with admin.listen = \"off\": the cache is only reachable through the admin API")
    })
}

/// One request to the admin API (HTTP/1.1, `Connection: close`); the bearer token comes from
/// `PROXY_ADMIN_TOKEN` for TCP listeners. Returns the status and the JSON body.
fn admin_call(
    instance: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use std::fmt::Write as _;
    use std::io::{Read, Write};
    let address = admin_address(instance)?;
    let body = body.map(ToString::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: proxy-admin\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Ok(token) = std::env::var("PROXY_ADMIN_TOKEN") {
        let _ = write!(request, "Authorization: Bearer {token}\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut response = Vec::new();
    let timeout = Some(Duration::from_secs(30));
    if let Some(path) = address.strip_prefix("unix:") {
        let mut s = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connecting to the admin socket {path} (are you root?)"))?;
        s.set_read_timeout(timeout)?;
        s.write_all(request.as_bytes())?;
        s.read_to_end(&mut response)
            .with_context(|| format!("reading the answer from {path}"))?;
    } else {
        let mut s = std::net::TcpStream::connect(&address)
            .with_context(|| format!("connecting to the admin API at {address}"))?;
        s.set_read_timeout(timeout)?;
        s.write_all(request.as_bytes())?;
        s.read_to_end(&mut response)
            .with_context(|| format!("reading the answer from {address}"))?;
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("the admin API sent no HTTP response: {text:?}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("the admin API sent a bad status line: {head:?}"))?;
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned()));
    Ok((status, json))
}

/// An admin API answer's body when it is a 200, else an error that says what went wrong.
fn admin_ok((status, v): (u16, serde_json::Value)) -> anyhow::Result<serde_json::Value> {
    if status == 200 {
        Ok(v)
    } else if status == 401 {
        anyhow::bail!("the admin API wants a bearer token: set PROXY_ADMIN_TOKEN")
    } else {
        anyhow::bail!(
            "the admin API answered {status}: {}",
            v.get("error")
                .and_then(|e| e.as_str())
                .map_or_else(|| v.to_string(), str::to_owned)
        )
    }
}

fn cluster_status(instance: &str, json: bool) -> anyhow::Result<()> {
    let v = admin_ok(admin_call(instance, "GET", "/cluster", None)?)?;
    if json {
        println!("{v:#}");
        return Ok(());
    }
    let s: crate::cluster::StatusView =
        serde_json::from_value(v).context("the admin API's /cluster answer")?;
    println!(
        "node {}  etcd {}  prefix {}  {}",
        s.node,
        s.endpoints.join(","),
        s.prefix,
        if s.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        }
    );
    println!(
        "applied revision {}  etcd revision {}  pending changes {}  published {}  applied {}  reconnects {}",
        s.revision, s.etcd_revision, s.pending, s.published, s.applied, s.reconnects
    );
    if let Some(e) = &s.last_error {
        println!("last error: {e}");
    }
    let now = crate::clock::wall_ms();
    println!(
        "{:<24} {:>10} {:>8} {:>10}  VERSION",
        "NODE", "REVISION", "LAG", "SEEN"
    );
    // Names and versions come from etcd: no control characters reach the terminal.
    let clean = |t: &str| t.chars().filter(|c| !c.is_control()).collect::<String>();
    for n in &s.nodes {
        println!(
            "{:<24} {:>10} {:>8} {:>9}s  {}",
            clean(&n.node),
            n.revision,
            (s.etcd_revision - n.revision).max(0),
            now.saturating_sub(n.updated_ms) / 1000,
            clean(&n.version)
        );
    }
    println!(
        "{} node(s); LAG: revisions behind the latest this node has seen",
        s.nodes.len()
    );
    Ok(())
}

fn cache(instance: &str, action: CacheAction) -> anyhow::Result<()> {
    let check = admin_ok;
    match action {
        CacheAction::Stats { json } => {
            let v = check(admin_call(instance, "GET", "/cache", None)?)?;
            if json {
                println!("{v:#}");
                return Ok(());
            }
            let ratio = v["hit_ratio"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |r| format!("{:.1} %", r * 100.0));
            println!(
                "entries {}  bytes {} / {}  hit ratio {ratio}",
                v["entries"], v["bytes"], v["max_bytes"]
            );
            // Every counter the API sends, after the summary line.
            let summary = ["entries", "bytes", "max_bytes", "hit_ratio", "disk"];
            for (k, n) in v.as_object().into_iter().flatten() {
                if !summary.contains(&k.as_str()) {
                    println!("  {k:<22}{n}");
                }
            }
            if let Some(d) = v.get("disk").and_then(|d| d.as_object()) {
                println!(
                    "disk: entries {}  bytes {} / {}",
                    d["entries"], d["bytes"], d["max_bytes"]
                );
                for (k, n) in d {
                    if !["entries", "bytes", "max_bytes"].contains(&k.as_str()) {
                        println!("  disk {k:<17}{n}");
                    }
                }
            }
            Ok(())
        }
        CacheAction::Purge {
            url: None,
            tag,
            soft,
        } => {
            let v = check(admin_call(
                instance,
                "POST",
                "/cache/purge",
                Some(&json!({ "tags": tag, "soft": soft })),
            )?)?;
            println!(
                "{} {} entr{} tagged {}",
                if soft { "marked stale" } else { "purged" },
                v["purged"],
                if v["purged"] == 1 { "y" } else { "ies" },
                tag.join(", ")
            );
            Ok(())
        }
        CacheAction::Purge { url: Some(url), .. } => {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{url:?}: give an absolute http:// or https:// URL (a trailing * purges a prefix)"
            );
            let v = check(admin_call(
                instance,
                "POST",
                "/cache/purge",
                Some(&json!({ "url": url })),
            )?)?;
            println!(
                "purged {} entr{} for {url}",
                v["purged"],
                if v["purged"] == 1 { "y" } else { "ies" }
            );
            Ok(())
        }
    }
}

/// Opens the pinned maps of the target instance, with the checks that give clear errors.
fn open_maps(target: &Target) -> anyhow::Result<KernelMaps> {
    validate_instance(&target.instance).map_err(anyhow::Error::msg)?;
    kernel::require_root()?;
    kernel::require_bpffs()?;
    let pin_dir = kernel::pin_dir(&target.instance);
    if !pin_dir.is_dir() {
        return Err(kernel::KernelError::UnknownInstance {
            instance: target.instance.clone(),
            path: pin_dir,
        }
        .into());
    }
    Ok(KernelMaps::open(&pin_dir)?)
}

/// The state file: `--state-file`, else the running instance's, else the default.
fn state_file(target: &Target) -> PathBuf {
    if let Some(p) = &target.state_file {
        return p.clone();
    }
    std::fs::read_to_string(daemon::runtime_file(&target.instance))
        .ok()
        .and_then(|t| serde_json::from_str::<daemon::RuntimeInfo>(&t).ok())
        .map_or_else(
            || default_state_file(&target.instance),
            |info| info.state_file,
        )
}

fn open_store(target: &Target) -> anyhow::Result<ListStore> {
    let maps = open_maps(target)?;
    Ok(ListStore::new(maps, StateFile::new(state_file(target))))
}

fn blocklist(target: &Target, action: BlocklistAction) -> anyhow::Result<()> {
    match action {
        BlocklistAction::Add { cidr, ttl, reason } => {
            let cidr = parse_cidr(&cidr)?;
            let mut store = open_store(target)?;
            let report = store.block(&[cidr], ttl, Reason::Manual, reason.as_deref())?;
            let verb = if report.updated > 0 {
                "updated"
            } else {
                "blocked"
            };
            match ttl {
                Some(t) => println!("{verb} {cidr} for {}", humantime::format_duration(t)),
                None => println!("{verb} {cidr}"),
            }
        }
        BlocklistAction::Remove { cidr } => {
            let cidr = parse_cidr(&cidr)?;
            open_store(target)?.unblock(&cidr)?;
            println!("unblocked {cidr}");
        }
        BlocklistAction::List { json } => {
            let entries = open_store(target)?.blocked()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                let now = wall_ms();
                println!(
                    "{:<43} {:<10} {:<12} NOTE",
                    "PREFIX", "REASON", "EXPIRES IN"
                );
                for e in &entries {
                    let expires = e.expires_at_ms.map_or_else(
                        || "never".to_owned(),
                        |t| {
                            humantime::format_duration(Duration::from_secs(
                                t.saturating_sub(now).div_ceil(1000),
                            ))
                            .to_string()
                        },
                    );
                    let note = e.note.as_deref().unwrap_or("");
                    let flag = if e.in_kernel { "" } else { " (not in kernel)" };
                    println!(
                        "{:<43} {:<10} {:<12} {note}{flag}",
                        e.cidr.to_string(),
                        e.reason,
                        expires
                    );
                }
                println!(
                    "{} entr{}",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" }
                );
            }
        }
        BlocklistAction::Import { file, ttl, reason } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read list file {}", file.display()))?;
            let cidrs = parse_list(&file, &text)?;
            let report =
                open_store(target)?.block(&cidrs, ttl, Reason::Import, reason.as_deref())?;
            println!(
                "imported {} prefixes from {} ({} new, {} updated)",
                cidrs.len(),
                file.display(),
                report.added,
                report.updated
            );
        }
        BlocklistAction::Flush => {
            let n = open_store(target)?.flush_blocklist()?;
            println!("removed {n} entries");
        }
    }
    Ok(())
}

fn allowlist(target: &Target, action: AllowlistAction) -> anyhow::Result<()> {
    match action {
        AllowlistAction::Add { cidr, reason } => {
            let cidr = parse_cidr(&cidr)?;
            open_store(target)?.allow(&cidr, reason.as_deref())?;
            println!("allowed {cidr}");
        }
        AllowlistAction::Remove { cidr } => {
            let cidr = parse_cidr(&cidr)?;
            open_store(target)?.disallow(&cidr)?;
            println!("removed {cidr} from the allowlist");
        }
        AllowlistAction::List { json } => {
            let entries = open_store(target)?.allowed()?;
            if json {
                let list: Vec<_> = entries
                    .iter()
                    .map(
                        |(c, r)| json!({ "cidr": c, "added_at_ms": r.added_at_ms, "note": r.note }),
                    )
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (cidr, r) in &entries {
                    println!(
                        "{:<43} {}",
                        cidr.to_string(),
                        r.note.as_deref().unwrap_or("")
                    );
                }
                println!(
                    "{} entr{}",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" }
                );
            }
        }
    }
    Ok(())
}

fn stats(target: &Target, json: bool) -> anyhow::Result<()> {
    let maps = open_maps(target)?;
    let counters = maps.counters()?;
    let by_interface = maps.counters_by_interface()?;
    let entries = maps.blocked()?;
    let blocked = entries.len();
    let blocked_v4 = entries.iter().filter(|(c, _)| c.is_ipv4()).count();
    let errors = full_map_errors(blocked_v4, blocked - blocked_v4);
    let allowed = maps.allowed()?.len();
    let pin_dir = kernel::pin_dir(&target.instance);
    let spread = spread::read_spread_config(&pin_dir)?;
    let loads = spread::LoadTable::open(&pin_dir)?.snapshot();
    let workers: Vec<_> = loads.iter().take(spread.workers as usize).collect();
    if json {
        let mut c = serde_json::Map::new();
        for counter in Counter::ALL {
            c.insert(counter.name().to_owned(), counters.get(counter).into());
        }
        let interfaces: serde_json::Map<String, serde_json::Value> = by_interface
            .iter()
            .map(|(name, cs)| {
                let per: serde_json::Map<String, serde_json::Value> = Counter::ALL
                    .iter()
                    .map(|k| (k.name().to_owned(), cs.get(*k).into()))
                    .collect();
                (name.clone(), per.into())
            })
            .collect();
        let out = json!({
            "instance": target.instance,
            "counters": c,
            "interfaces": interfaces,
            "blocklist_entries": blocked,
            "allowlist_entries": allowed,
            "errors": errors,
            "spread_policy": spread::policy_name(spread.policy),
            "workers": workers.iter().enumerate().map(|(i, w)| json!({
                "worker": i,
                "alive": w.alive != 0,
                "connections": w.connections,
                "inflight": w.inflight,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "instance {} ({})",
            target.instance,
            kernel::pin_dir(&target.instance).display()
        );
        for counter in Counter::ALL {
            println!("  {:<28} {}", counter.name(), counters.get(counter));
        }
        println!("  {:<28} {blocked}", "blocklist_entries");
        for (name, cs) in &by_interface {
            let parts: Vec<String> = Counter::ALL
                .iter()
                .filter(|k| cs.get(**k) > 0)
                .map(|k| format!("{} {}", k.name().trim_start_matches("packets_"), cs.get(*k)))
                .collect();
            println!(
                "interface {name}: {}",
                if parts.is_empty() {
                    "no packets".to_owned()
                } else {
                    parts.join(", ")
                }
            );
        }
        println!("  {:<28} {allowed}", "allowlist_entries");
        println!(
            "workers ({} connection spreading)",
            spread::policy_name(spread.policy)
        );
        for (i, w) in workers.iter().enumerate() {
            let state = if w.alive != 0 { "alive" } else { "stopped" };
            println!(
                "  worker {i:<3} {state:<8} connections {:<6} inflight {}",
                w.connections, w.inflight
            );
        }
    }
    // After the figures, so they still print; the exit status says something is wrong.
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// What `proxy stats` reports as errors: a blocklist map that is full (every further block
/// and ban fails until entries expire or are removed).
fn full_map_errors(v4: usize, v6: usize) -> Vec<String> {
    [
        ("BLOCK_V4", "IPv4", v4, proxy_common::BLOCK_V4_MAX),
        ("BLOCK_V6", "IPv6", v6, proxy_common::BLOCK_V6_MAX),
    ]
    .into_iter()
    .filter(|(_, _, n, max)| *n >= *max as usize)
    .map(|(map, family, n, _)| {
        format!(
            "the {family} blocklist map ({map}) is full ({n} entries): new blocks and automatic bans fail; remove entries (`proxy blocklist remove`/`flush`) or block wider prefixes"
        )
    })
    .collect()
}

/// Loads the config for `proxy run`, with the command-line overrides applied and checked.
pub fn run_config(args: &RunArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(&args.config)?;
    if let Some(instance) = &args.instance {
        validate_instance(instance).map_err(|e| anyhow::anyhow!("--instance: {e}"))?;
        config.instance.clone_from(instance);
    }
    if let Some(attach) = args.attach {
        if attach != AttachMode::None && config.kernel.interfaces.is_empty() {
            anyhow::bail!(
                "--attach {}: kernel.interfaces in {} is empty",
                attach.as_str(),
                args.config.display()
            );
        }
        config.kernel.attach = attach;
    }
    Ok(config)
}
