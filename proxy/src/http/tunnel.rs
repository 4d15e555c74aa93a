//! Upgraded connections (WebSocket and friends): once both sides switched protocols, bytes
//! are spliced between them until either closes or none moves for `tunnel_idle_timeout`.
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{
    ctx::RequestCtx,
    server::{Activity, Progress},
};
use crate::defense::limits::client_key;

/// Starts the tunnel of an upgraded request in a task of its own. It outlives the HTTP
/// connection that was counted at accept, so it keeps that place in the client's connection
/// limit.
pub fn start(ctx: &RequestCtx, client: OnUpgrade, upstream: OnUpgrade) {
    let limits = &ctx.generation.config.limits;
    let held = ctx.worker.shared.limits.hold_connection(
        client_key(ctx.conn.peer.ip(), limits.client_prefix_v6),
        limits.connections_per_client,
    );
    let idle = ctx.generation.config.server.tunnel_idle_timeout;
    let metrics = ctx.worker.shared.metrics.clone();
    crate::counters::spawn(async move {
        let _held = held;
        match tokio::try_join!(client, upstream) {
            Ok((client_io, upstream_io)) => splice(client_io, upstream_io, idle, &metrics).await,
            Err(e) => debug!("upgrade failed: {e}"),
        }
    });
}

/// Splices an upgraded connection to its upstream until either side closes, or no byte moves
/// either way for `idle`.
async fn splice(
    client: Upgraded,
    upstream: Upgraded,
    idle: std::time::Duration,
    metrics: &crate::metrics::Global,
) {
    let progress = Progress::new();
    let mut a = Activity {
        inner: TokioIo::new(client),
        progress: progress.clone(),
    };
    let mut b = Activity {
        inner: TokioIo::new(upstream),
        progress: progress.clone(),
    };
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let mut check = tokio::time::interval(std::time::Duration::from_secs(1).min(idle));
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let mut copy = std::pin::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => {
                if let Err(e) = r {
                    debug!("upgraded connection ended: {e}");
                }
                return;
            }
            _ = check.tick() => {
                if progress.idle_ms(crate::clock::now_ms()) >= idle_ms {
                    metrics.tunnel_idle_closed.inc();
                    debug!("closing an upgraded connection idle for tunnel_idle_timeout");
                    return;
                }
            }
        }
    }
}
