//! `proxy run`: load and attach the kernel programs, sync the lists, serve, stop cleanly.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpSocket, signal::unix::SignalKind, sync::watch};
use tracing::{error, info, warn};

use crate::{
    config::{AttachMode, Config},
    defense::{ListStore, state::StateFile},
    http::{forward::Forwarder, server},
    kernel::{self, Datapath, KernelMaps},
    upstream::Pool,
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

/// Runs the proxy until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    kernel::require_root()?;
    kernel::ensure_bpffs()?;
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

    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_loop(
        store.clone(),
        config.kernel.sweep_interval,
        stop_rx.clone(),
    ));

    // Userspace side.
    let deny = if attach == AttachMode::None {
        Some(Arc::new(KernelMaps::open(&pin_dir)?))
    } else {
        None
    };
    let mut servers = Vec::new();
    for (i, l) in config.listener.iter().enumerate() {
        let pool = Arc::new(Pool::new(&l.upstream, &config.upstream[&l.upstream]));
        let listener = bind(l.address)
            .with_context(|| format!("listener[{i}]: cannot listen on {}", l.address))?;
        info!(address = %l.address, upstream = l.upstream, "listening");
        servers.push(tokio::spawn(server::serve(
            listener,
            Arc::new(Forwarder::new(pool)),
            deny.clone(),
            stop_rx.clone(),
        )));
    }

    let runtime = runtime_file(&instance);
    write_runtime_info(
        &runtime,
        &RuntimeInfo {
            pid: std::process::id(),
            state_file,
            attach: attach.as_str().to_owned(),
        },
    );
    info!(instance, "proxy ready");

    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        _ = term.recv() => info!("SIGTERM: stopping"),
    }
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    let _ = sweeper.await;
    // The runtime file stays: while the pins exist, it tells the CLI which state file to keep
    // in step. A stale PID in it is harmless (check_not_running looks the PID up).
    for (iface, how) in datapath.attached() {
        info!(iface, attached = %how, "detaching packet filter");
    }
    drop(datapath);
    info!("stopped; the pinned maps and the state file keep the lists");
    Ok(())
}

fn bind(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(4096)
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
