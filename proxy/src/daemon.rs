//! `proxy run`: load and attach the kernel programs, sync the lists, serve, stop cleanly.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::{signal::unix::SignalKind, sync::watch};
use tracing::{error, info, warn};

use crate::{
    config::{AttachMode, Config},
    defense::{ListStore, state::StateFile},
    kernel::{
        self, Datapath, KernelMaps,
        spread::{LoadTable, WorkerLoadHandle, listener_key},
    },
    upstream::Pool,
    workers,
};

/// Where a running instance describes itself for the CLI: `<RUNTIME_DIR>/<instance>.json`.
pub const RUNTIME_DIR: &str = "/run/proxy";

/// What the CLI needs to know about a running instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub state_file: PathBuf,
    pub attach: String,
}

#[must_use]
pub fn runtime_file(instance: &str) -> PathBuf {
    Path::new(RUNTIME_DIR).join(format!("{instance}.json"))
}

/// Failures the tests inject through `PROXY_TEST_FAULTS` (comma-separated):
/// `no-reuseport-prog` (act as if the sk_reuseport program cannot load) and
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

/// Runs the proxy until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    kernel::require_root()?;
    kernel::ensure_bpffs()?;
    let faults = Faults::from_env();
    let instance = config.instance.clone();
    let pin_dir = kernel::pin_dir(&instance);

    // Kernel side: load (reusing pinned maps), then attach.
    let mut datapath = Datapath::load(&pin_dir)?;
    info!(instance, pin_dir = %pin_dir.display(), "kernel programs loaded, maps pinned");
    let attach = config.kernel.attach;
    if attach != AttachMode::None {
        for iface in &config.kernel.interfaces {
            datapath.attach(iface, attach).with_context(|| {
                format!(
                    "kernel.attach = {:?} on interface {iface:?}",
                    attach.as_str()
                )
            })?;
        }
    } else {
        info!("kernel.attach = none: the blocklist is enforced in userspace at accept()");
    }

    // Lists: the state file is the durable truth; make the maps match it.
    let state_file = config.state_file();
    let mut store = ListStore::new(
        KernelMaps::open(&pin_dir)?,
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
    let store = Arc::new(Mutex::new(store));

    // Workers: one socket per listener per worker, all bound before any worker starts.
    let workers = config.workers();
    let load = Arc::new(LoadTable::open(&pin_dir)?);
    load.reset();
    let mut sockets: Vec<Vec<std::net::TcpListener>> = Vec::new();
    for (i, l) in config.listener.iter().enumerate() {
        let group = (0..workers)
            .map(|_| workers::reuseport_socket(l.address))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listener[{i}]: cannot listen on {}", l.address))?;
        info!(address = %l.address, upstream = l.upstream, workers, "listening");
        sockets.push(group);
    }
    spread_connections(&mut datapath, &config, &sockets, workers, &faults);

    let (stop_tx, stop_rx) = watch::channel(false);
    let deny = if attach == AttachMode::None {
        Some(Arc::new(KernelMaps::open(&pin_dir)?))
    } else {
        None
    };
    let pools: Vec<Arc<Pool>> = config
        .listener
        .iter()
        .map(|l| Arc::new(Pool::new(&l.upstream, &config.upstream[&l.upstream])))
        .collect();
    let mut per_worker: Vec<Vec<(std::net::TcpListener, Arc<Pool>)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (group, pool) in sockets.into_iter().zip(&pools) {
        for (w, socket) in group.into_iter().enumerate() {
            per_worker[w].push((socket, pool.clone()));
        }
    }
    let mut threads = Vec::new();
    for (w, listeners) in (0u32..).zip(per_worker) {
        let plan = workers::WorkerPlan {
            index: w,
            listeners,
            load: WorkerLoadHandle::new(load.clone(), w),
            stop_after: faults
                .stop_worker
                .filter(|(fw, _)| *fw == w)
                .map(|(_, after)| after),
        };
        threads.push(
            workers::spawn(plan, deny.clone(), stop_rx.clone())
                .context("starting a worker thread")?,
        );
    }

    write_runtime_info(
        &runtime_file(&instance),
        &RuntimeInfo {
            pid: std::process::id(),
            state_file,
            attach: attach.as_str().to_owned(),
        },
    );
    info!(instance, workers, "proxy ready");

    // The control runtime: signals and the sweep. The request path runs on the workers.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    control.block_on(async {
        let sweeper = tokio::spawn(sweep_loop(
            store.clone(),
            config.kernel.sweep_interval,
            stop_rx.clone(),
        ));
        let mut term = tokio::signal::unix::signal(SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
            _ = term.recv() => info!("SIGTERM: stopping"),
        }
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        anyhow::Ok(())
    })?;
    for t in threads {
        if t.join().is_err() {
            error!("a worker thread panicked");
        }
    }
    // The runtime file stays: while the pins exist, it tells the CLI which state file to keep
    // in step. A stale PID in it is harmless (check_not_running looks the PID up).
    for (iface, how) in datapath.attached() {
        info!(iface, attached = %how, "detaching packet filter");
    }
    drop(datapath);
    info!("stopped; the pinned maps and the state file keep the lists");
    Ok(())
}

/// Attaches the sk_reuseport program to every listener group. If that is not possible the
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
            info!(policy = ?policy, workers, "connections spread in the kernel (sk_reuseport)")
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
