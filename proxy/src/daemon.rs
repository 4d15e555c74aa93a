//! `proxy run`: load and attach the kernel programs, sync the lists, serve, stop cleanly.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::{signal::unix::SignalKind, sync::watch};
use tracing::{error, info, warn};

use arc_swap::ArcSwap;
use proxy_common::Reason;

use crate::{
    config::{AttachMode, Config},
    defense::{
        Applied, BlockItem, ListStore,
        ban::{BanEngine, BanRequest},
        limits::ClientLimits,
        state::StateFile,
    },
    http::server::ListenerCtx,
    kernel::{
        self, Datapath, KernelMaps,
        spread::{LoadTable, WorkerLoadHandle, listener_key},
    },
    runtime::{self, Generation, Shared},
    tls,
    upstream::{HealthBoard, health},
    workers,
};

pub use crate::config::RUNTIME_DIR;

/// What the CLI needs to know about a running instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub state_file: PathBuf,
    pub attach: String,
    /// The admin API (`unix:/path` or `IP:PORT`); None when it is off.
    #[serde(default)]
    pub admin: Option<String>,
}

#[must_use]
pub fn runtime_file(instance: &str) -> PathBuf {
    Path::new(RUNTIME_DIR).join(format!("{instance}.json"))
}

/// Failures the tests inject through `PROXY_TEST_FAULTS` (comma-separated):
/// `no-reuseport-prog` (act as if the `sk_reuseport` program cannot load) and
/// `stop-worker=W@MS` (worker W stops by itself after MS milliseconds).
#[derive(Debug, Default)]
struct Faults {
    no_reuseport_prog: bool,
    stop_worker: Option<(u32, std::time::Duration)>,
}

impl Faults {
    fn from_env() -> Self {
        let mut faults = Self::default();
        let Ok(text) = std::env::var("PROXY_TEST_FAULTS") else {
            return faults;
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "no-reuseport-prog" {
                faults.no_reuseport_prog = true;
            } else if let Some((w, ms)) = item
                .strip_prefix("stop-worker=")
                .and_then(|r| r.split_once('@'))
            {
                if let (Ok(w), Ok(ms)) = (w.parse(), ms.trim_end_matches("ms").parse()) {
                    faults.stop_worker = Some((w, std::time::Duration::from_millis(ms)));
                }
            } else {
                warn!("PROXY_TEST_FAULTS: unknown fault {item:?} ignored");
            }
        }
        warn!(?faults, "test faults injected");
        faults
    }
}

/// Runs the proxy until SIGINT or SIGTERM: the config is built first (nothing is touched
/// when it does not build), then the kernel side, the lists, the sockets, the shared state,
/// the admin API, the privilege drop, the workers, and the control loop.
#[expect(
    clippy::too_many_lines,
    reason = "the start-up sequence in order, each step one call; splitting it hides the order"
)]
pub fn run(config: Config, config_path: &Path, keep_kernel_state: bool) -> anyhow::Result<()> {
    kernel::require_root()?;
    raise_open_files_limit();
    // Validation is the build: a config that does not build stops the start before any
    // kernel or socket work.
    let board = Arc::new(HealthBoard::default());
    let config = Arc::new(config);
    let generation = runtime::build(1, config.clone(), &board)
        .with_context(|| format!("config file {}", config_path.display()))?;
    let tls = runtime::build_tls(&config.listener)
        .with_context(|| format!("config file {}", config_path.display()))?;
    kernel::ensure_bpffs()?;
    let faults = Faults::from_env();
    let instance = config.instance.clone();
    let pin_dir = kernel::pin_dir(&instance);

    let mut datapath = load_kernel(&config, &pin_dir, &instance)?;
    if let Some(c) = &config.cluster {
        let node = c
            .node_name()
            .map_err(|e| anyhow::anyhow!("cluster.node: {e}"))?;
        info!(node, endpoints = %c.endpoints.join(","), prefix = %c.prefix, "cluster: this node shares its lists through etcd");
    }
    let store = restore_lists(&config, &pin_dir)?;
    let workers = config.workers();
    let load = Arc::new(LoadTable::open(&pin_dir)?);
    load.reset();
    let sockets = bind_listeners(&config, workers)?;
    spread_connections(&mut datapath, &config, &sockets, workers, &faults);
    let syn_proxy = start_syn_proxy(&config, &mut datapath, &instance)?;

    let (ban_tx, ban_rx) = tokio::sync::mpsc::unbounded_channel();
    let maps = Arc::new(KernelMaps::open(&pin_dir)?);
    let shared = shared_state(&config, generation, tls, ban_tx, maps.clone())?;
    let per_worker = assign_sockets(&config, sockets, workers, &maps);
    let state_file = config.state_file();
    write_runtime_info(
        &runtime_file(&instance),
        &RuntimeInfo {
            pid: std::process::id(),
            state_file: state_file.clone(),
            attach: config.kernel.attach.as_str().to_owned(),
            admin: crate::admin::Listen::from_config(config.admin.listen.as_deref(), &instance)
                .map(|l| l.to_string()),
        },
    );

    // The admin API: bound (and its maps opened) now, while still root.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<crate::admin::ReloadRequest>(4);
    let admin = bind_admin(
        &config,
        config_path,
        &pin_dir,
        &shared,
        &store,
        &load,
        reload_tx,
    )?;
    if let Some(user) = &config.user {
        drop_privileges(&config, &shared.cache, user, &instance, &state_file)?;
    }
    // As the user the daemon runs as: a file or link planted in the cache directory gets
    // no more than that user's rights.
    shared
        .cache
        .load_disk()
        .context("cache.disk.path: loading the disk cache")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    for (w, listeners) in (0u32..).zip(per_worker) {
        let plan = workers::WorkerPlan {
            index: w,
            listeners,
            shared: shared.clone(),
            load: WorkerLoadHandle::new(load.clone(), w),
            stop_after: faults
                .stop_worker
                .filter(|(fw, _)| *fw == w)
                .map(|(_, after)| after),
        };
        threads.push(workers::spawn(plan, stop_rx.clone()).context("starting a worker thread")?);
    }
    // Connections the kernel picked a worker for but that never completed their handshake
    // would count against that worker forever: the counts of picked, not yet accepted
    // connections are corrected every second.
    {
        let load = load.clone();
        let stop = stop_rx.clone();
        std::thread::Builder::new()
            .name("proxy-pending".into())
            .spawn(move || {
                let mut last = vec![0u32; proxy_common::MAX_WORKERS as usize];
                while !*stop.borrow() {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    load.settle_pending(&mut last);
                }
            })
            .context("starting the pending-count thread")?;
    }
    info!(instance, workers, "proxy ready");

    // The control runtime: signals, reloads, health checks, certificate watch, the sweep.
    // The request path runs on the workers.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    control.block_on(control_loop(Control {
        config: config.clone(),
        config_path,
        instance: &instance,
        shared: &shared,
        board: &board,
        store: &store,
        admin,
        ban_rx,
        reload_rx,
        stop_tx,
        stop_rx,
    }))?;
    for t in threads {
        if t.join().is_err() {
            error!("a worker thread panicked");
        }
    }
    if let Some(disk) = &shared.cache.disk
        && !disk.flush(std::time::Duration::from_secs(10))
    {
        warn!("disk cache: writes still queued after 10 s were dropped");
    }
    // The runtime file stays: while the pins exist, it tells the CLI which state file to keep
    // in step. A stale PID in it is harmless (check_not_running looks the PID up).
    if let Some(side) = syn_proxy {
        // XDP first (a kept filter must not answer SYNs no synproxy completes), then the
        // stack side.
        if let Err(e) = datapath.set_syn_proxy(proxy_common::SynProxyConfig::default(), &[]) {
            error!("turning the XDP SYN proxy off: {e}");
        }
        side.remove();
    }
    detach(datapath, keep_kernel_state);
    info!("stopped; the pinned maps and the state file keep the lists");
    Ok(())
}

/// Loads the kernel programs (reusing pinned maps), sets the SYN limit, then attaches.
fn load_kernel(config: &Config, pin_dir: &Path, instance: &str) -> anyhow::Result<Datapath> {
    let mut datapath = Datapath::load(pin_dir)?;
    let k = &config.kernel;
    datapath.set_rate_config(proxy_common::RateConfig {
        syn_rate: k.syn_rate,
        syn_burst: if k.syn_burst == 0 {
            k.syn_rate
        } else {
            k.syn_burst
        },
        prefix_v4: u32::from(k.rate_prefix_v4),
        prefix_v6: u32::from(k.rate_prefix_v6),
    })?;
    if k.syn_rate > 0 && k.attach == AttachMode::None {
        warn!(
            "kernel.syn_rate is set but kernel.attach = none: there is no kernel program to enforce it"
        );
    }
    info!(instance, pin_dir = %pin_dir.display(), "kernel programs loaded, maps pinned");
    let offset = crate::clock::time_namespace_offset_ns();
    if offset != 0 {
        info!(
            offset_ms = offset / 1_000_000,
            "this process runs in a time namespace: expiry times in the kernel maps are converted to the kernel's clock"
        );
    }
    let attach = k.attach;
    if attach == AttachMode::None {
        info!("kernel.attach = none: the blocklist is enforced in userspace at accept()");
    } else {
        for iface in &k.interfaces {
            datapath.attach(iface, attach).with_context(|| {
                format!(
                    "kernel.attach = {:?} on interface {iface:?}",
                    attach.as_str()
                )
            })?;
        }
    }
    Ok(datapath)
}

/// The SYN proxy, when a listener has it: the stack side (nftables synproxy, sysctls) first,
/// then the XDP program's options and listeners. Every interface must run the XDP program.
fn start_syn_proxy(
    config: &Config,
    datapath: &mut Datapath,
    instance: &str,
) -> anyhow::Result<Option<kernel::synproxy::StackSide>> {
    let listeners: Vec<std::net::SocketAddr> = config
        .listener
        .iter()
        .filter(|l| l.syn_proxy)
        .map(|l| l.address)
        .collect();
    if listeners.is_empty() {
        // A previous run with the SYN proxy whose clean-up was killed with it (a service
        // manager's kill of the whole unit) left its table and sysctls: undone now.
        match kernel::synproxy::clean_leftovers(instance) {
            Ok(true) => warn!(
                "SYN proxy: a previous run's nftables table and sysctls were left behind; restored"
            ),
            Ok(false) => {}
            Err(e) => warn!("SYN proxy: leftovers of a previous run could not be removed: {e:#}"),
        }
        return Ok(None);
    }
    for (iface, how) in datapath.attached() {
        if !matches!(
            how,
            kernel::AttachedAs::XdpNative | kernel::AttachedAs::XdpGeneric
        ) {
            anyhow::bail!(
                "listener syn_proxy: interface {iface:?} runs the filter as {how}, and the SYN proxy needs XDP (TC cannot answer a SYN); see the log above for why XDP did not attach, or set kernel.attach = \"xdp\" to make that an error of its own"
            );
        }
    }
    let options = kernel::synproxy::options(&config.kernel.interfaces)
        .context("listener syn_proxy: reading what the SYN-ACKs advertise")?;
    let side = kernel::synproxy::install(instance, &config.kernel.interfaces, &listeners, &options)
        .context("listener syn_proxy: setting up the stack side")?;
    if let Err(e) = datapath.set_syn_proxy(options, &listeners) {
        side.remove();
        return Err(e).context("listener syn_proxy: configuring the XDP program");
    }
    info!(
        listeners = ?listeners,
        mss4 = options.mss4,
        mss6 = options.mss6,
        wscale = options.wscale,
        "SYN proxy on: SYNs answered in XDP with cookies"
    );
    Ok(Some(side))
}

/// The lists: the state file is the durable truth; the maps are made to match it.
fn restore_lists(config: &Config, pin_dir: &Path) -> anyhow::Result<Arc<Mutex<ListStore>>> {
    let state_file = config.state_file();
    let mut store = ListStore::new(
        KernelMaps::open(pin_dir)?,
        StateFile::new(state_file.clone()),
    );
    let report = store.sync_kernel_from_state()?;
    info!(
        state_file = %state_file.display(),
        blocked = report.blocked,
        allowed = report.allowed,
        expired = report.expired,
        stray_removed = report.stray_removed,
        "lists restored from the state file"
    );
    Ok(Arc::new(Mutex::new(store)))
}

/// One socket per listener per worker, all bound before any worker starts.
fn bind_listeners(
    config: &Config,
    workers: u32,
) -> anyhow::Result<Vec<Vec<std::net::TcpListener>>> {
    let mut sockets = Vec::new();
    for (i, l) in config.listener.iter().enumerate() {
        let group = (0..workers)
            .map(|_| workers::reuseport_socket(l.address))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listener[{i}]: cannot listen on {}", l.address))?;
        info!(address = %l.address, tls = l.tls.is_some(), workers, "listening");
        sockets.push(group);
    }
    Ok(sockets)
}

/// What every worker shares: the generation, TLS, limits, bans, metrics, the access log,
/// the cache and the lists as the request path checks them (clients behind a trusted proxy;
/// every client when nothing is attached).
fn shared_state(
    config: &Config,
    generation: Generation,
    tls: runtime::TlsConfigs,
    ban_tx: tokio::sync::mpsc::UnboundedSender<BanRequest>,
    maps: Arc<KernelMaps>,
) -> anyhow::Result<Arc<Shared>> {
    let metrics = Arc::new(crate::metrics::Global::default());
    let access_log = crate::access_log::AccessLog::start(&config.access_log, metrics.clone())
        .with_context(|| format!("access_log.path: cannot open {:?}", config.access_log.path))?;
    let disk = match &config.cache.disk {
        None => None,
        Some(d) => Some(crate::cache::disk::Disk::open(&d.path, d).with_context(|| {
            format!(
                "cache.disk.path: cannot use {} as the disk cache (check that it is a \
                         directory the daemon can write)",
                d.path.display()
            )
        })?),
    };
    Ok(Arc::new(Shared {
        generation: ArcSwap::from_pointee(generation),
        tls: ArcSwap::from_pointee(tls),
        limits: Arc::new(ClientLimits::new(config.limits.max_tracked_clients)),
        bans: BanEngine::new(
            ban_tx,
            config.limits.max_tracked_clients,
            config.limits.client_prefix_v6,
        ),
        metrics,
        requests: crate::metrics::StatusCounts::default(),
        latency: crate::metrics::Histogram::default(),
        access_log,
        cache: crate::cache::Cache::with_disk(config.cache.max_bytes, disk),
        maps: Some(maps),
        cluster: std::sync::OnceLock::new(),
    }))
}

/// Each worker's sockets, one per listener, with the listener's settings.
fn assign_sockets(
    config: &Config,
    sockets: Vec<Vec<std::net::TcpListener>>,
    workers: u32,
    maps: &Arc<KernelMaps>,
) -> Vec<Vec<(std::net::TcpListener, Arc<ListenerCtx>)>> {
    let deny = (config.kernel.attach == AttachMode::None).then(|| maps.clone());
    let mut per_worker: Vec<Vec<(std::net::TcpListener, Arc<ListenerCtx>)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for ((index, l), group) in config.listener.iter().enumerate().zip(sockets) {
        let lctx = Arc::new(ListenerCtx {
            index,
            proxy_protocol: l.proxy_protocol,
            h2c: l.h2c,
            tls: l.tls.is_some(),
            deny: deny.clone(),
        });
        for (w, socket) in group.into_iter().enumerate() {
            per_worker[w].push((socket, lctx.clone()));
        }
    }
    per_worker
}

type BoundAdmin = (Arc<crate::admin::AdminCtx>, crate::admin::Bound);

/// Binds the admin API when it is on.
fn bind_admin(
    config: &Config,
    config_path: &Path,
    pin_dir: &Path,
    shared: &Arc<Shared>,
    store: &Arc<Mutex<ListStore>>,
    load: &Arc<LoadTable>,
    reload: tokio::sync::mpsc::Sender<crate::admin::ReloadRequest>,
) -> anyhow::Result<Option<BoundAdmin>> {
    let Some(listen) =
        crate::admin::Listen::from_config(config.admin.listen.as_deref(), &config.instance)
    else {
        return Ok(None);
    };
    let bound = crate::admin::bind(listen).context("admin.listen: cannot bind the admin API")?;
    let ctx = Arc::new(crate::admin::AdminCtx {
        instance: config.instance.clone(),
        config_path: config_path.to_path_buf(),
        shared: shared.clone(),
        store: store.clone(),
        kernel: KernelMaps::open(pin_dir)?,
        load: load.clone(),
        workers: config.workers(),
        reload,
        token: config
            .admin
            .token
            .as_deref()
            .and_then(crate::access::parse_token_digest),
    });
    Ok(Some((ctx, bound)))
}

/// Everything privileged is done: the files the daemon still writes go to `user`, then the
/// process becomes that user, keeping `CAP_BPF`.
fn drop_privileges(
    config: &Config,
    cache: &crate::cache::Cache,
    user: &str,
    instance: &str,
    state_file: &Path,
) -> anyhow::Result<()> {
    let account = crate::privileges::lookup(user)
        .map_err(anyhow::Error::msg)
        .context("user")?;
    // What the daemon still writes: the state file's directory, the reload result, the
    // access log (when reopened).
    let reload_result = reload_result_file(instance);
    let _ = crate::safe_fs::open_append(&reload_result, 0o644);
    let lock = StateFile::new(state_file.to_path_buf()).lock_file();
    crate::safe_fs::open_or_create(&lock, 0o600)
        .with_context(|| format!("creating the lock file {}", lock.display()))?;
    let mut owned = vec![reload_result];
    if let Some(dir) = state_file.parent() {
        owned.push(dir.to_owned());
    }
    owned.push(state_file.to_path_buf());
    owned.push(lock);
    if config.access_log.path != "stdout" {
        owned.push(PathBuf::from(&config.access_log.path));
    }
    for path in &owned {
        crate::safe_fs::hand_over(path, account)
            .with_context(|| format!("giving {} to user {user:?}", path.display()))?;
    }
    if let Some(disk) = &cache.disk {
        disk.hand_over(account)
            .with_context(|| format!("giving the disk cache to user {user:?}"))?;
    }
    crate::privileges::drop_to(account).with_context(|| format!("switching to user {user:?}"))?;
    info!(
        user,
        uid = account.uid,
        "privileges dropped (CAP_BPF kept for map updates)"
    );
    Ok(())
}

/// What the control loop runs with.
struct Control<'a> {
    config: Arc<Config>,
    config_path: &'a Path,
    instance: &'a str,
    shared: &'a Arc<Shared>,
    board: &'a Arc<HealthBoard>,
    store: &'a Arc<Mutex<ListStore>>,
    admin: Option<BoundAdmin>,
    ban_rx: tokio::sync::mpsc::UnboundedReceiver<BanRequest>,
    reload_rx: tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

/// Signals and reloads until SIGINT or SIGTERM, with the background tasks (sweep, health
/// checks, certificate watch, bans, the admin API); then stops the workers and waits for
/// the tasks.
async fn control_loop(c: Control<'_>) -> anyhow::Result<()> {
    let Control {
        config,
        config_path,
        instance,
        shared,
        board,
        store,
        admin,
        ban_rx,
        mut reload_rx,
        stop_tx,
        stop_rx,
    } = c;
    start_cluster(&config, shared, store);
    let sweeper = tokio::spawn(sweep_loop(
        store.clone(),
        config.kernel.sweep_interval,
        stop_rx.clone(),
    ));
    let mut checks = start_health_checks(&shared.generation.load());
    let watcher = tokio::spawn(watch_certificates(shared.clone(), stop_rx.clone()));
    let banner = tokio::spawn(apply_bans(
        ban_rx,
        store.clone(),
        shared.clone(),
        stop_rx.clone(),
    ));
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut hup = tokio::signal::unix::signal(SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let mut usr1 = tokio::signal::unix::signal(SignalKind::user_defined1())
        .context("installing the SIGUSR1 handler")?;
    let admin = admin.map(|(ctx, bound)| {
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(ctx, bound, stop).await {
                error!("the admin API cannot listen: {e}");
            }
        })
    });
    let mut reload_open = true;
    loop {
        let responder = tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = usr1.recv() => {
                if let Some(log) = &shared.access_log {
                    info!("SIGUSR1: reopening the access log");
                    log.reopen();
                }
                continue;
            }
            _ = hup.recv() => {
                info!(config = %config_path.display(), "SIGHUP: reloading the config");
                None
            }
            r = reload_rx.recv(), if reload_open => {
                // No admin API (or it is gone): nothing can ask for a reload this way.
                let Some(r) = r else {
                    reload_open = false;
                    continue;
                };
                info!(config = %config_path.display(), "admin API: reloading the config");
                Some(r)
            }
        };
        let outcome = reload(shared, board, config_path);
        match &outcome {
            Ok(id) => {
                let _ = checks.send(true);
                checks = start_health_checks(&shared.generation.load());
                shared.metrics.reloads_ok.inc();
                info!(generation = id, "config reloaded");
            }
            Err(e) => {
                shared.metrics.reloads_failed.inc();
                error!("reload rejected, the running config stays: {e}");
            }
        }
        write_reload_result(instance, &outcome);
        if let Some(r) = responder {
            let _ = r.send(outcome);
        }
    }
    let _ = stop_tx.send(true);
    let _ = checks.send(true);
    let _ = sweeper.await;
    let _ = watcher.await;
    let _ = banner.await;
    if let Some(a) = admin {
        let _ = a.await;
    }
    Ok(())
}

/// Starts the fleet task (`[cluster]`) on the control runtime.
fn start_cluster(config: &Config, shared: &Shared, store: &Arc<Mutex<ListStore>>) {
    let Some(c) = &config.cluster else { return };
    // Checked at start-up (`node_name` cannot fail here unless the host name changed).
    match c.node_name() {
        Ok(node) => {
            let _ = shared.cluster.set(crate::cluster::Cluster::start(
                c.clone(),
                node,
                store.clone(),
                shared.cache.clone(),
            ));
        }
        Err(e) => error!("cluster: {e}; this node does not join the fleet"),
    }
}

/// Detaches the packet filter, or keeps it attached for the next start.
fn detach(mut datapath: Datapath, keep_kernel_state: bool) {
    if keep_kernel_state {
        match datapath.keep_attached() {
            Ok(n) => info!(
                links = n,
                "--keep-kernel-state: the packet filter stays attached after exit"
            ),
            Err(e) => error!(
                "--keep-kernel-state: keeping the filter attached failed, it is detached: {e}"
            ),
        }
    } else {
        for (iface, how) in datapath.attached() {
            info!(iface, attached = %how, "detaching packet filter");
        }
    }
    drop(datapath);
}

/// Longest a ban waits for others to share its state file write.
const BAN_BATCH: std::time::Duration = std::time::Duration::from_millis(100);

/// Applies the bans the request path asks for, through the same code path as
/// `proxy blocklist add` (kernel map + state file), in batches: the bans that arrive within
/// [`BAN_BATCH`] of the first share one lock and one state file write, so a flood of bans
/// costs a write per 100 ms, not one per ban. Also sweeps idle limit state.
async fn apply_bans(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<BanRequest>,
    store: Arc<Mutex<ListStore>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        let first = tokio::select! {
            r = requests.recv() => match r { Some(r) => r, None => return },
            _ = sweep.tick() => {
                shared.limits.sweep();
                shared.bans.sweep();
                tokio::task::spawn_blocking(release_free_memory);
                continue;
            }
            _ = stop.changed() => return,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BAN_BATCH;
        while batch.len() < 10_000 {
            match tokio::time::timeout_at(deadline, requests.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        // A ban prefix never takes in a trusted proxy or PROXY sender.
        {
            let generation = shared.generation.load();
            for r in &mut batch {
                r.cidr = generation.ban_prefix(r.client, r.cidr);
            }
        }
        let store = store.clone();
        let requests_copy = batch.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().expect("list store");
            let mut allowed = Vec::with_capacity(requests_copy.len());
            for r in &requests_copy {
                allowed.push(store.maps().is_allowed(r.client)?);
            }
            let notes: Vec<String> = requests_copy
                .iter()
                .map(|r| format!("auto-ban: {} (offence {})", r.rule, r.offence))
                .collect();
            let items: Vec<BlockItem<'_>> = requests_copy
                .iter()
                .zip(&notes)
                .zip(&allowed)
                .filter(|(_, allowed)| !**allowed)
                .map(|((r, note), _)| BlockItem {
                    cidr: r.cidr,
                    ttl: Some(r.ttl),
                    reason: Reason::L7Abuse,
                    note: Some(note),
                })
                .collect();
            let outcomes = store.ban_batch(&items)?;
            Ok::<_, crate::defense::DefenseError>((allowed, outcomes))
        })
        .await;
        let (allowed, outcomes) = match applied {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                error!(bans = batch.len(), "bans failed: {e}");
                continue;
            }
            Err(e) => {
                error!("ban task failed: {e}");
                continue;
            }
        };
        shared.lists_changed();
        let mut outcomes = outcomes.into_iter();
        for (request, allowed) in batch.iter().zip(allowed) {
            if allowed {
                shared.metrics.bans_skipped_allowlisted.inc();
                info!(client = %request.client, rule = request.rule, "ban skipped: the client is allowlisted");
                continue;
            }
            match outcomes.next() {
                Some(Applied::Added | Applied::Updated) => {
                    shared.metrics.bans.inc();
                    warn!(
                        client = %request.client,
                        banned = %request.cidr,
                        rule = request.rule,
                        ttl = ?request.ttl,
                        offence = request.offence,
                        "client banned in the kernel"
                    );
                }
                Some(Applied::Kept) => {
                    shared.metrics.bans_kept_stronger.inc();
                    info!(client = %request.client, banned = %request.cidr, rule = request.rule, "ban not needed: a stronger block of the prefix stays");
                }
                Some(Applied::Failed(e)) => {
                    shared.metrics.bans_failed.inc();
                    error!(client = %request.client, banned = %request.cidr, rule = request.rule, "ban failed, the client is NOT blocked in the kernel (is the blocklist map full? see `proxy stats`): {e}");
                }
                None => {}
            }
        }
    }
}

/// Gives memory that glibc's malloc freed back to the system (it keeps freed memory of its
/// per-thread arenas otherwise). The proxy's own allocations go to mimalloc (see main.rs),
/// which returns freed pages by itself; what remains on glibc's heap is C code's.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Every client and upstream connection is a file descriptor: the soft limit (often 1024)
/// goes up to the hard limit, as nginx's `worker_rlimit_nofile` and HAProxy do.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0
            || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0 {
            info!(
                from = before,
                to = limit.rlim_max,
                "raised the open files limit"
            );
        } else {
            warn!(
                "cannot raise the open files limit from {before}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Starts the active health checks of a generation; sending `true` stops them.
fn start_health_checks(generation: &Generation) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    for up in generation.upstreams.values() {
        if up.health.is_some() {
            tokio::spawn(health::run_checks(up.clone(), rx.clone()));
        }
    }
    tx
}

/// Loads, validates and builds a new generation, then swaps it in. Any error leaves the
/// running generation in place.
fn reload(shared: &Shared, board: &HealthBoard, path: &Path) -> Result<u64, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    let current = shared.generation.load();
    runtime::listeners_compatible(&current.config, &new)?;
    let tls = runtime::build_tls(&new.listener).map_err(|e| e.to_string())?;
    let id = current.id + 1;
    let generation = runtime::build(id, Arc::new(new), board).map_err(|e| e.to_string())?;
    shared.tls.store(Arc::new(tls));
    shared.generation.store(Arc::new(generation));
    Ok(id)
}

/// The outcome of the last reload, for `proxy reload`: `<RUNTIME_DIR>/<instance>.reload.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadResult {
    /// Increases with every SIGHUP handled.
    pub serial: u64,
    pub ok: bool,
    pub generation: Option<u64>,
    pub message: String,
}

#[must_use]
pub fn reload_result_file(instance: &str) -> PathBuf {
    Path::new(RUNTIME_DIR).join(format!("{instance}.reload.json"))
}

fn write_reload_result(instance: &str, outcome: &Result<u64, String>) {
    let path = reload_result_file(instance);
    let serial = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<ReloadResult>(&t).ok())
        .map_or(1, |r| r.serial + 1);
    let result = match outcome {
        Ok(id) => ReloadResult {
            serial,
            ok: true,
            generation: Some(*id),
            message: format!("config reloaded (generation {id})"),
        },
        Err(e) => ReloadResult {
            serial,
            ok: false,
            generation: None,
            message: format!("reload rejected, the running config stays: {e}"),
        },
    };
    // Written in place (not renamed over): after a privilege drop the daemon owns the file,
    // not the directory.
    let written = std::fs::write(&path, serde_json::to_vec(&result).expect("serializes"));
    if let Err(e) = written {
        warn!(path = %path.display(), "cannot write the reload result: {e}");
    }
}

/// Rebuilds the TLS configs when a certificate or key file changes (new handshakes use the
/// new files; open connections keep theirs).
async fn watch_certificates(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let stamp = |config: &Config| -> Vec<Option<std::time::SystemTime>> {
        config
            .listener
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(tls::files)
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let mut seen = (
        shared.generation.load().id,
        stamp(&shared.generation.load().config),
    );
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let generation = shared.generation.load_full();
        let now = (generation.id, stamp(&generation.config));
        if now.0 != seen.0 {
            seen = now; // a reload rebuilt the TLS configs already
            continue;
        }
        if now.1 != seen.1 {
            match runtime::build_tls(&generation.config.listener) {
                Ok(tls) => {
                    shared.tls.store(Arc::new(tls));
                    info!("certificate files changed: TLS reloaded");
                    seen = now;
                }
                // Files may be half-written; try again on the next tick.
                Err(e) => warn!("certificate files changed but cannot be loaded yet: {e}"),
            }
        }
    }
}

/// Attaches the `sk_reuseport` program to every listener group. If that is not possible the
/// kernel's own hash spreads connections; the operator asked for spreading, so say so, once.
fn spread_connections(
    datapath: &mut Datapath,
    config: &Config,
    sockets: &[Vec<std::net::TcpListener>],
    workers: u32,
    faults: &Faults,
) {
    let policy = config.kernel.spread;
    let result = if faults.no_reuseport_prog {
        Err(kernel::KernelError::Spread(
            "program load disabled by PROXY_TEST_FAULTS".into(),
        ))
    } else {
        datapath
            .set_spread_policy(policy.policy(), workers)
            .and_then(|()| {
                for (slot, (group, l)) in (0u32..).zip(sockets.iter().zip(&config.listener)) {
                    let addr = group[0].local_addr().unwrap_or(l.address);
                    datapath.spread_listener(slot, listener_key(addr), group)?;
                }
                Ok(())
            })
    };
    match result {
        Ok(()) => {
            info!(policy = ?policy, workers, "connections spread in the kernel (sk_reuseport)");
        }
        Err(e) => {
            warn!(
                policy = ?policy,
                "connection spreading unavailable, the kernel's 4-tuple hash spreads connections instead: {e}"
            );
            // `proxy stats` reads the worker count and the policy in effect from here.
            if let Err(e) = datapath.set_spread_policy(proxy_common::SpreadPolicy::Hash, workers) {
                warn!("recording the spreading policy for `proxy stats` failed: {e}");
            }
        }
    }
}

fn write_runtime_info(path: &Path, info: &RuntimeInfo) {
    let result = std::fs::create_dir_all(RUNTIME_DIR)
        .and_then(|()| std::fs::write(path, serde_json::to_vec_pretty(info).expect("serializes")));
    if let Err(e) = result {
        warn!(path = %path.display(), "cannot write runtime info (the CLI will need --state-file): {e}");
    }
}

async fn sweep_loop(
    store: Arc<Mutex<ListStore>>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let store = store.clone();
        let swept =
            tokio::task::spawn_blocking(move || store.lock().expect("sweep lock").sweep()).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(removed = n, "expired blocklist entries removed"),
            Ok(Err(e)) => error!("blocklist sweep failed: {e}"),
            Err(e) => error!("blocklist sweep task failed: {e}"),
        }
    }
}

/// Refuses to start a second daemon on the same instance.
pub fn check_not_running(instance: &str) -> anyhow::Result<()> {
    let path = runtime_file(instance);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let Ok(info) = serde_json::from_str::<RuntimeInfo>(&text) else {
        return Ok(());
    };
    if Path::new(&format!("/proc/{}", info.pid)).exists() && info.pid != std::process::id() {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", info.pid)).unwrap_or_default();
        if comm.trim() == "proxy" {
            bail!(
                "instance {instance:?} is already running as pid {} ({}); stop it first or pick another instance",
                info.pid,
                path.display()
            );
        }
    }
    Ok(())
}
