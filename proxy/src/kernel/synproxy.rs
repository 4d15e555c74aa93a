//! The stack's side of the XDP SYN proxy: what completes a handshake whose SYN the XDP
//! program answered with a cookie.
//!
//! The validated ACK goes on to the stack, where nftables' `synproxy` (with conntrack) checks
//! the cookie again (the kernel's own secret), opens the connection to the listener with the
//! options the cookie carries, and from then on translates sequence numbers. For that the
//! daemon installs, in its network namespace, one table `inet proxy_synproxy_<instance>`:
//! SYNs to the listeners are not tracked (raw prerouting `notrack`), packets of no known
//! connection go to `synproxy` (which also answers the SYNs the XDP program leaves to the
//! stack), the rest of the invalid ones are dropped; and two sysctls: `tcp_timestamps = 1`
//! (the cookie carries the options in the timestamp) and `nf_conntrack_tcp_loose = 0` (an ACK
//! of no known connection is invalid, so it reaches `synproxy` instead of being picked up as
//! an established flow).
//!
//! A small process the daemon starts while it is still root (`proxy __syn-proxy-cleanup`, the
//! keeper) holds them in place and undoes them: every 2 s it puts back the table and the
//! sysctls if something else removed or changed them (an `nft flush ruleset`, a firewall
//! reload), and when the daemon ends (its stdin closes however the daemon ends, `kill -9`
//! included) it restores the sysctls and deletes the table. It holds a lock on
//! `<RUNTIME_DIR>/<instance>.synproxy.lock` from before anything is changed until it is done,
//! so a new start waits for the previous run's clean-up. The values found before the change are
//! kept in `<RUNTIME_DIR>/<instance>.synproxy` until restored, so a start after a run that could
//! not restore them saves the true originals, not its predecessor's settings.
use std::{
    fmt::Write as _,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use proxy_common::SynProxyConfig;
use tracing::{info, warn};

/// Sysctls the stack side sets, with the value it needs.
const SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.tcp_timestamps", "1"),
    ("net.netfilter.nf_conntrack_tcp_loose", "0"),
];

/// What went wrong setting up the stack side.
#[derive(Debug, thiserror::Error)]
pub enum SynProxyError {
    #[error(
        "syn_proxy needs nftables' `nft` command, which could not be run ({0}); install it (apt-get install nftables)"
    )]
    NoNft(std::io::Error),
    #[error("nft refused the SYN proxy's table {table}: {stderr}")]
    Nft { table: String, stderr: String },
    #[error("reading {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} in {path} is {value:?}, not a number")]
    Parse {
        what: &'static str,
        path: PathBuf,
        value: String,
    },
    #[error("setting sysctl {key} = {value}: {source}")]
    Sysctl {
        key: &'static str,
        value: String,
        source: std::io::Error,
    },
    #[error("writing the saved sysctls to {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the SYN proxy's clean-up process: {0}")]
    Janitor(std::io::Error),
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read_number(what: &'static str, path: &Path) -> Result<u64, SynProxyError> {
    let text = std::fs::read_to_string(path).map_err(|source| SynProxyError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    // tcp_rmem has three fields: the last one is the maximum.
    let last = text.split_whitespace().last().unwrap_or_default();
    last.parse().map_err(|_| SynProxyError::Parse {
        what,
        path: path.to_owned(),
        value: text.trim().to_owned(),
    })
}

/// What the SYN-ACKs advertise, as the listening sockets would: the MSS of the smallest MTU
/// among `interfaces`, the window scale the stack derives from its largest receive buffer
/// (`tcp_select_initial_window`), the default TTL.
///
/// # Errors
///
/// An interface or sysctl that cannot be read.
pub fn options(interfaces: &[String]) -> Result<SynProxyConfig, SynProxyError> {
    let mut mtu = u64::from(u16::MAX);
    for iface in interfaces {
        mtu = mtu.min(interface_mtu(iface).map_err(|source| SynProxyError::Read {
            what: "the interface MTU",
            path: Path::new("/sys/class/net").join(iface).join("mtu"),
            source,
        })?);
    }
    // rmem_max is not shown inside network namespaces by every kernel: tcp_rmem alone then.
    let rmem = read_number("tcp_rmem", &sysctl_path("net.ipv4.tcp_rmem"))?
        .max(read_number("rmem_max", &sysctl_path("net.core.rmem_max")).unwrap_or(0));
    let wscale = (rmem.max(1).ilog2().saturating_sub(15)).min(14);
    let ttl = read_number("ip_default_ttl", &sysctl_path("net.ipv4.ip_default_ttl"))?;
    let hop_limit = read_number(
        "the IPv6 hop limit",
        &sysctl_path("net.ipv6.conf.default.hop_limit"),
    )
    .unwrap_or(64);
    let mss = |overhead: u64| u16::try_from(mtu.saturating_sub(overhead).max(536)).unwrap_or(1460);
    Ok(SynProxyConfig {
        mss4: mss(40),
        mss6: mss(60),
        wscale: u8::try_from(wscale).unwrap_or(14),
        ttl: u8::try_from(ttl.clamp(1, 255)).unwrap_or(64),
        enabled: 1,
        hop_limit: u8::try_from(hop_limit.clamp(1, 255)).unwrap_or(64),
    })
}

/// The MTU of `iface` in this process's network namespace (`SIOCGIFMTU`: sysfs shows the
/// namespace it was mounted in).
fn interface_mtu(iface: &str) -> std::io::Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid; the name is copied in with room for its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= req.ifr_name.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src.cast_signed();
    }
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `req`, valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &raw mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the union's MTU member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u64::try_from(mtu).unwrap_or(1500))
}

/// Prefix of the tables of every instance.
const TABLE_PREFIX: &str = "proxy_synproxy_";

/// The nftables table name of an instance: letters and digits as they are, `_` as `_u`, `-`
/// as `_d` (distinct instances, distinct tables).
#[must_use]
pub fn table_name(instance: &str) -> String {
    let mut name = TABLE_PREFIX.to_owned();
    for c in instance.chars() {
        match c {
            '_' => name.push_str("_u"),
            '-' => name.push_str("_d"),
            c if c.is_ascii_alphanumeric() => name.push(c),
            c => {
                let _ = write!(name, "_x{:x}", u32::from(c));
            }
        }
    }
    name
}

/// The nftables script that (re)creates the table for `listeners` on `interfaces`.
#[must_use]
pub fn ruleset(
    table: &str,
    interfaces: &[String],
    listeners: &[SocketAddr],
    config: &SynProxyConfig,
) -> String {
    let ifaces = interfaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // One match per listener and family: (match, is IPv6).
    let mut matches = Vec::new();
    for l in listeners {
        let port = l.port();
        match l {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                matches.push((format!("meta nfproto ipv4 tcp dport {port}"), false));
            }
            SocketAddr::V4(a) => {
                matches.push((format!("ip daddr {} tcp dport {port}", a.ip()), false));
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                // Dual-stack: IPv4 too.
                matches.push((format!("meta nfproto ipv4 tcp dport {port}"), false));
                matches.push((format!("meta nfproto ipv6 tcp dport {port}"), true));
            }
            SocketAddr::V6(a) => {
                matches.push((format!("ip6 daddr {} tcp dport {port}", a.ip()), true));
            }
        }
    }
    let mut s = String::new();
    // Created if missing, then deleted and made anew: one transaction replaces any table a
    // previous run left.
    let _ = writeln!(s, "table inet {table} {{}}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    let _ = writeln!(
        s,
        "  chain prerouting {{\n    type filter hook prerouting priority raw; policy accept;"
    );
    for (m, _) in &matches {
        let _ = writeln!(
            s,
            "    iifname {{ {ifaces} }} fib daddr type local {m} tcp flags & (fin|syn|rst|ack) == syn notrack"
        );
    }
    let _ = writeln!(s, "  }}");
    // Before the filter chains (priority 0) of a host firewall, which may drop invalid
    // packets, and after conntrack (-200), which classifies them.
    let _ = writeln!(
        s,
        "  chain input {{\n    type filter hook input priority -150; policy accept;"
    );
    for (m, v6) in &matches {
        let mss = if *v6 { config.mss6 } else { config.mss4 };
        let _ = writeln!(
            s,
            "    iifname {{ {ifaces} }} {m} ct state invalid,untracked synproxy mss {mss} wscale {} timestamp sack-perm",
            config.wscale
        );
        let _ = writeln!(s, "    iifname {{ {ifaces} }} {m} ct state invalid drop");
    }
    let _ = writeln!(s, "  }}\n}}");
    s
}

fn nft(script: &str, table: &str) -> Result<(), SynProxyError> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SynProxyError::NoNft)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(SynProxyError::NoNft)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SynProxyError::Nft {
            table: table.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The stack side while it is installed. [`StackSide::remove`] (or the daemon's end, however
/// it comes) undoes it.
pub struct StackSide {
    table: String,
    keeper: Child,
    stdin: Option<ChildStdin>,
}

/// Files of an instance's stack side: `<RUNTIME_DIR>/<instance>.synproxy` (the sysctl values
/// to restore), `.synproxy.nft` (the ruleset the keeper puts back), `.synproxy.lock`.
#[must_use]
pub fn saved_file(instance: &str) -> PathBuf {
    Path::new(crate::config::RUNTIME_DIR).join(format!("{instance}.synproxy"))
}

fn ruleset_file(saved: &Path) -> PathBuf {
    saved.with_extension("synproxy.nft")
}

fn lock_file(saved: &Path) -> PathBuf {
    saved.with_extension("synproxy.lock")
}

/// The names of the tables in this network namespace's `inet` family.
fn inet_tables() -> Result<Vec<String>, SynProxyError> {
    let out = Command::new("nft")
        .args(["list", "tables", "inet"])
        .output()
        .map_err(SynProxyError::NoNft)?;
    if !out.status.success() {
        return Err(SynProxyError::Nft {
            table: "(listing)".into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .map(|t| t.trim().to_owned())
        .collect())
}

/// Installs the table and the sysctls, and starts the keeper.
///
/// # Errors
///
/// `nft` missing or refusing the rules, another instance's SYN proxy in this namespace, a
/// sysctl that cannot be read or set, the saved-values file, the keeper. What was set before
/// the error is undone (by the keeper, which ends with the returned error's drop).
pub fn install(
    instance: &str,
    interfaces: &[String],
    listeners: &[SocketAddr],
    config: &SynProxyConfig,
) -> Result<StackSide, SynProxyError> {
    let table = table_name(instance);
    let saved = saved_file(instance);
    std::fs::create_dir_all(crate::config::RUNTIME_DIR).map_err(|source| SynProxyError::Save {
        path: saved.clone(),
        source,
    })?;
    // The sysctls are the namespace's: one instance's SYN proxy per namespace.
    if let Some(other) = inet_tables()?
        .into_iter()
        .find(|t| t.starts_with(TABLE_PREFIX) && *t != table)
    {
        return Err(SynProxyError::Nft {
            table,
            stderr: format!(
                "another instance's SYN proxy (table inet {other}) runs in this network namespace; its sysctls are shared, so only one instance may use syn_proxy here"
            ),
        });
    }
    // The keeper first: it takes the lock (a previous run's keeper may still be cleaning up),
    // then says it is ready; from then on whatever is set is undone when the daemon ends.
    let mut keeper = Command::new("/proc/self/exe")
        .args(["__syn-proxy-cleanup", "--instance", instance])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(SynProxyError::Janitor)?;
    let stdin = keeper.stdin.take();
    let stdout = keeper.stdout.take();
    let side = StackSide {
        table,
        keeper,
        stdin,
    };
    // The keeper waits for a previous run's clean-up (the lock) first: bounded.
    if !stdout.is_some_and(|out| ready_within(out, std::time::Duration::from_secs(30))) {
        side.remove();
        return Err(SynProxyError::Janitor(std::io::Error::other(format!(
            "the keeper process did not get ready in 30 s: a previous run's clean-up may hold {} (see the messages above)",
            lock_file(&saved).display()
        ))));
    }
    let rules = ruleset(&side.table, interfaces, listeners, config);
    let result = (|| {
        crate::safe_fs::write_atomic(&ruleset_file(&saved), rules.as_bytes(), 0o600).map_err(
            |source| SynProxyError::Save {
                path: ruleset_file(&saved),
                source,
            },
        )?;
        // The table before the sysctls: it loads conntrack, without which its sysctl does not
        // exist.
        nft(&rules, &side.table)?;
        // Originals: the ones a previous run saved and could not restore win.
        if !saved.exists() {
            let mut text = String::new();
            for (key, _) in SYSCTLS {
                let path = sysctl_path(key);
                let value =
                    std::fs::read_to_string(&path).map_err(|source| SynProxyError::Read {
                        what: "a sysctl",
                        path,
                        source,
                    })?;
                let _ = writeln!(text, "{key}={}", value.trim());
            }
            crate::safe_fs::write_atomic(&saved, text.as_bytes(), 0o600).map_err(|source| {
                SynProxyError::Save {
                    path: saved.clone(),
                    source,
                }
            })?;
        }
        for (key, value) in SYSCTLS {
            std::fs::write(sysctl_path(key), value).map_err(|source| SynProxyError::Sysctl {
                key,
                value: value.to_owned(),
                source,
            })?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        side.remove();
        return Err(e);
    }
    info!(
        table = %side.table,
        saved = %saved.display(),
        "SYN proxy: nftables synproxy table installed, sysctls set (kept in place, restored at exit)"
    );
    Ok(side)
}

impl StackSide {
    /// Undoes the stack side now and waits (at most 20 s) for it.
    pub fn remove(mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match self.keeper.try_wait() {
                Ok(Some(status)) if status.success() => {
                    info!(table = %self.table, "SYN proxy: table removed, sysctls restored");
                    return;
                }
                Ok(Some(status)) => {
                    warn!(
                        table = %self.table,
                        %status,
                        "SYN proxy: the clean-up failed (see its message above); check `nft list tables` and the sysctls"
                    );
                    return;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(None) => {
                    warn!(table = %self.table, "SYN proxy: the clean-up is still running after 20 s; it goes on without the daemon");
                    return;
                }
                Err(e) => {
                    warn!(table = %self.table, "SYN proxy: waiting for the clean-up: {e}");
                    return;
                }
            }
        }
    }
}

fn parse_saved(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        // Only the keys this module sets: the file decides values, never which files are
        // written.
        .filter(|(k, v)| {
            SYSCTLS.iter().any(|(known, _)| known == k)
                && !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
        })
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `out` says `ready` within `wait`.
fn ready_within(mut out: std::process::ChildStdout, wait: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: out.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll on one valid pollfd for the given time.
    if unsafe { libc::poll(&raw mut fds, 1, ms) } <= 0 {
        return false;
    }
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).is_ok() && &ready == b"ready\n"
}

/// Cleans up after a run whose keeper could not (it was killed with the daemon: a service
/// manager's kill of the whole unit): restores the saved sysctls and removes the instance's
/// table, if anything is left. For starts without `syn_proxy` and for `ExecStopPost`.
///
/// # Errors
///
/// What could not be undone.
pub fn clean_leftovers(instance: &str) -> anyhow::Result<bool> {
    let saved = saved_file(instance);
    let table = table_name(instance);
    let table_left = inet_tables().is_ok_and(|t| t.contains(&table));
    if !saved.exists() && !table_left {
        return Ok(false);
    }
    undo(&table, &saved)?;
    Ok(true)
}

/// Restores the saved sysctls, deletes the table and the files (all of it is tried).
fn undo(table: &str, saved: &Path) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    if let Ok(text) = std::fs::read_to_string(saved) {
        for (key, value) in parse_saved(&text) {
            if let Err(e) = std::fs::write(sysctl_path(&key), &value) {
                failures.push(format!("restoring {key} = {value}: {e}"));
            }
        }
    }
    // Created if missing, then deleted: no error when it is already gone.
    if let Err(e) = nft(
        &format!("table inet {table} {{}}\ndelete table inet {table}\n"),
        table,
    ) {
        failures.push(e.to_string());
    }
    if failures.is_empty() {
        let _ = std::fs::remove_file(saved);
        let _ = std::fs::remove_file(ruleset_file(saved));
        Ok(())
    } else {
        anyhow::bail!(
            "SYN proxy clean-up: {}; {} is kept",
            failures.join("; "),
            saved.display()
        )
    }
}

/// Signals the keeper ignores: the terminal's, the service manager's stop and reload signals
/// (`systemctl kill` sends to every process of the unit), the log-reopen signal. The daemon's
/// end is its signal; SIGKILL still ends it.
const IGNORED_SIGNALS: [libc::c_int; 14] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGPWR,
];

/// Whether the daemon has ended: its end of our stdin closed. Waits up to `ms`.
fn daemon_ended(ms: i32) -> bool {
    let mut fds = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd for the given time.
    let n = unsafe { libc::poll(&raw mut fds, 1, ms) };
    if n <= 0 {
        return false;
    }
    let mut sink = [0u8; 64];
    !matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0)
}

/// Puts the table and the sysctls back when something changed them (once the daemon saved the
/// originals: before that, nothing is ours to keep).
fn keep(table: &str, saved: &Path) {
    if !saved.exists() {
        return;
    }
    if let Ok(rules) = std::fs::read_to_string(ruleset_file(saved))
        && inet_tables().is_ok_and(|t| !t.iter().any(|t| t == table))
    {
        match nft(&rules, table) {
            Ok(()) => warn!(
                table,
                "SYN proxy: the nftables table was removed by something else; put back"
            ),
            Err(e) => warn!(
                table,
                "SYN proxy: the nftables table was removed and cannot be put back: {e}"
            ),
        }
    }
    for (key, value) in SYSCTLS {
        let path = sysctl_path(key);
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != value) {
            match std::fs::write(&path, value) {
                Ok(()) => warn!(
                    key,
                    value, "SYN proxy: sysctl changed by something else; set back"
                ),
                Err(e) => warn!(key, "SYN proxy: sysctl changed and cannot be set back: {e}"),
            }
        }
    }
}

/// `proxy __syn-proxy-cleanup` (the keeper): takes the instance's lock, says `ready`, keeps
/// the stack side in place every 2 s until stdin closes (the daemon ended), then restores the
/// saved sysctls, deletes the table and the files. With `now`: takes the lock and cleans up
/// what is left at once.
///
/// # Errors
///
/// What could not be undone (all of it is tried).
pub fn cleanup_main(instance: &str, now: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let table = table_name(instance);
    let saved = saved_file(instance);
    // Its own log lines, on the daemon's stderr (the journal).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    if !now {
        // SAFETY: setting signal dispositions to SIG_IGN, and this thread's name, have no
        // preconditions.
        unsafe {
            for signal in IGNORED_SIGNALS {
                libc::signal(signal, libc::SIG_IGN);
            }
            libc::prctl(libc::PR_SET_NAME, c"proxy-synkeeper".as_ptr());
        }
    }
    std::fs::create_dir_all(crate::config::RUNTIME_DIR)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_file(&saved))?;
    // SAFETY: flock on an open file; held until this process ends.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        warn!(
            lock = %lock_file(&saved).display(),
            "SYN proxy: waiting for a previous run's clean-up"
        );
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            anyhow::bail!(
                "locking {}: {}",
                lock_file(&saved).display(),
                std::io::Error::last_os_error()
            );
        }
    }
    if now {
        if clean_leftovers(instance)? {
            info!(
                table,
                "SYN proxy: leftovers of a run that could not clean up removed"
            );
        }
        return Ok(());
    }
    {
        let mut out = std::io::stdout();
        out.write_all(b"ready\n")?;
        out.flush()?;
    }
    while !daemon_ended(2000) {
        keep(&table, &saved);
    }
    undo(&table, &saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_matches_each_listener_and_family() {
        let config = SynProxyConfig {
            mss4: 1460,
            mss6: 1440,
            wscale: 7,
            ttl: 64,
            enabled: 1,
            hop_limit: 64,
        };
        let rules = ruleset(
            "proxy_synproxy_t",
            &["eth0".into()],
            &["10.0.0.1:443".parse().unwrap(), "[::]:80".parse().unwrap()],
            &config,
        );
        assert!(rules.contains("ip daddr 10.0.0.1 tcp dport 443 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm"), "{rules}");
        assert!(
            rules.contains(
                "meta nfproto ipv4 tcp dport 80 ct state invalid,untracked synproxy mss 1460"
            ),
            "{rules}"
        );
        assert!(
            rules.contains(
                "meta nfproto ipv6 tcp dport 80 ct state invalid,untracked synproxy mss 1440"
            ),
            "{rules}"
        );
        assert!(rules.contains("iifname { \"eth0\" } fib daddr type local ip daddr 10.0.0.1 tcp dport 443 tcp flags & (fin|syn|rst|ack) == syn notrack"), "{rules}");
        assert!(rules.contains("hook input priority -150"), "{rules}");
        assert_eq!(table_name("a-b_c"), "proxy_synproxy_a_db_uc");
        assert_ne!(table_name("a-b"), table_name("a_b"));
    }

    #[test]
    fn saved_values_name_only_known_sysctls() {
        let parsed = parse_saved(
            "net.ipv4.tcp_timestamps=0\nkernel.core_pattern=|/bin/sh\nnet.netfilter.nf_conntrack_tcp_loose=1\nnet.ipv4.tcp_timestamps=x\n",
        );
        assert_eq!(
            parsed,
            vec![
                ("net.ipv4.tcp_timestamps".to_owned(), "0".to_owned()),
                (
                    "net.netfilter.nf_conntrack_tcp_loose".to_owned(),
                    "1".to_owned()
                ),
            ]
        );
    }
}
