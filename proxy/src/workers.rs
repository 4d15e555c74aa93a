//! Workers: one OS thread each, with its own current-thread tokio runtime and its own listening
//! socket per listener, all in one `SO_REUSEPORT` group per listener. Nothing is shared between
//! workers on the request path but the config they were built from and the kernel maps.
use std::{net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    http::{
        ctx::WorkerCtx,
        server::{self, ListenerCtx},
    },
    kernel::spread::WorkerLoadHandle,
    runtime::Shared,
    upstream::client::ClientPool,
};

/// A listening socket for one worker: `SO_REUSEPORT` is set before bind, so every worker's socket
/// joins the listener's group.
pub fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What one worker serves: its socket of each listener.
pub struct WorkerPlan {
    pub index: u32,
    pub listeners: Vec<(std::net::TcpListener, Arc<ListenerCtx>)>,
    pub shared: Arc<Shared>,
    pub load: WorkerLoadHandle,
    /// Test fault: the worker stops by itself after this long.
    pub stop_after: Option<Duration>,
}

/// Starts a worker thread. It marks itself alive once serving and dead before its sockets
/// close (on stop, on error, and when unwinding from a panic).
pub fn spawn(plan: WorkerPlan, stop: watch::Receiver<bool>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("proxy-worker-{}", plan.index))
        .spawn(move || worker_main(plan, stop))
}

/// Marks the worker dead when dropped, so the kernel stops picking it even if the thread
/// unwinds from a panic.
struct AliveGuard(WorkerLoadHandle);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.set_alive(false);
    }
}

fn worker_main(plan: WorkerPlan, mut global_stop: watch::Receiver<bool>) {
    let index = plan.index;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(worker = index, "cannot start the worker's runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let alive = AliveGuard(plan.load.clone());
        // The worker's own stop signal: the global one, or its test fault.
        let (stop_tx, stop_rx) = watch::channel(false);
        let load = plan.load.clone();
        let stop_after = plan.stop_after;
        tokio::spawn(async move {
            match stop_after {
                Some(after) => {
                    tokio::select! {
                        _ = global_stop.changed() => {}
                        () = tokio::time::sleep(after) => warn!(worker = index, "test fault: stopping this worker"),
                    }
                }
                None => {
                    let _ = global_stop.changed().await;
                }
            }
            // Dead first, so the kernel stops sending new connections; then the sockets close.
            load.set_alive(false);
            let _ = stop_tx.send(true);
        });
        let wctx = Arc::new(WorkerCtx {
            shared: plan.shared.clone(),
            pool: Arc::new(ClientPool::default()),
            load: plan.load.clone(),
        });
        let mut tasks = Vec::new();
        for (listener, lctx) in plan.listeners {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    error!(worker = index, "cannot register a listening socket: {e}");
                    return;
                }
            };
            tasks.push(tokio::spawn(server::serve(listener, lctx, wctx.clone(), stop_rx.clone())));
        }
        plan.load.set_alive(true);
        for t in tasks {
            if let Err(e) = t.await {
                error!(worker = index, "listener task failed: {e}");
            }
        }
        drop(alive);
        info!(worker = index, "worker stopped");
    });
}
