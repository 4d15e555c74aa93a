//! Accepting client connections on a listener and serving HTTP/1.1 on them.
use std::{sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tracing::{debug, warn};

use super::forward::Forwarder;
use crate::kernel::{KernelMaps, monotonic_now_ns, spread::WorkerLoadHandle};

/// How long a client may take to send its request headers (slowloris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may run on after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a stop signal, how long connections already steered to this socket are still
/// accepted before it closes (the worker is marked dead first, so no new ones arrive).
const ACCEPT_GRACE: Duration = Duration::from_millis(50);

/// Serves `listener` until `shutdown` turns true, then drains open connections. `load` counts
/// this worker's connections and requests for the `sk_reuseport` program.
///
/// `deny` is set when no kernel program filters the traffic (attach mode `none`): each new
/// connection's source is then checked against the same maps the kernel would use.
pub async fn serve(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    deny: Option<Arc<KernelMaps>>,
    mut shutdown: watch::Receiver<bool>,
    load: WorkerLoadHandle,
) {
    let local = listener.local_addr().ok();
    // Every connection task holds a clone of `open_tx`; when all are gone, `open_rx` closes.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        let accepted = match stopping {
            None => tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => {
                    stopping = Some(tokio::time::Instant::now() + ACCEPT_GRACE);
                    continue;
                }
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, listener.accept()).await {
                Ok(accepted) => accepted,
                Err(_) => break,
            },
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(?local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; use the plain form.
        let peer = std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if let Some(maps) = &deny {
            match maps.is_denied(peer.ip(), monotonic_now_ns()) {
                Ok(true) => {
                    debug!(%peer, "connection refused: source is on the blocklist");
                    drop(stream);
                    continue;
                }
                Ok(false) => {}
                Err(e) => warn!(%peer, "blocklist lookup failed, letting the connection in: {e}"),
            }
        }
        let _ = stream.set_nodelay(true);
        let connection_guard = load.connection();
        let forwarder = forwarder.clone();
        let request_load = load.clone();
        let service = service_fn(move |req| {
            let forwarder = forwarder.clone();
            let in_flight = request_load.request();
            async move {
                let response = forwarder.forward(req, peer).await;
                drop(in_flight);
                response
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = shutdown.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _open = open;
            let _counted = connection_guard;
            let mut conn = std::pin::pin!(conn);
            // Accepted during the stop grace: serve one request, then close.
            if *stop.borrow_and_update() {
                conn.as_mut().graceful_shutdown();
            }
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    // Finish the request in flight, then close (keep-alive ends here).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, open_rx.recv())
        .await
        .is_err()
    {
        warn!(
            ?local,
            "connections still open after {DRAIN_TIMEOUT:?}; closing them"
        );
    }
}
