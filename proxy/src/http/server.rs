//! Accepting client connections on a listener: the PROXY header when expected, TLS when
//! configured, then HTTP/1.1 or HTTP/2 (ALPN over TLS, prior knowledge on plain listeners).
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tracing::{debug, warn};

use super::{
    ctx::{ConnInfo, WorkerCtx},
    phases::handle,
};
use crate::{
    clock::{kernel_ns, now_ms},
    kernel::{KernelMaps, spread::LoadGuard},
    proxy_protocol::{self, ProxyHeader},
};

/// After a stop signal, how long connections already steered to this socket are still
/// accepted before it closes (the worker is marked dead first, so no new ones arrive).
const ACCEPT_GRACE: Duration = Duration::from_millis(50);

/// One listener as a worker serves it.
pub struct ListenerCtx {
    pub index: usize,
    pub proxy_protocol: bool,
    pub h2c: bool,
    pub tls: bool,
    /// Set when no kernel program filters the traffic (attach mode `none`): each new
    /// connection's source is then checked against the same maps the kernel would use.
    pub deny: Option<Arc<KernelMaps>>,
}

/// When a connection last moved bytes (idle timeouts), and since when a write has been
/// waiting on the peer (send timeout).
#[derive(Debug)]
pub(crate) struct Progress {
    last: AtomicU64,
    /// 0: no write waiting.
    write_blocked_since: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            last: AtomicU64::new(now_ms()),
            write_blocked_since: AtomicU64::new(0),
        })
    }

    fn moved(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    /// A write or flush returned: bytes moved (`progressed`), or it is waiting on the peer.
    /// Any completed call ends a wait (TLS buffers writes and may wait only in the flush).
    fn wrote<T>(&self, r: &Poll<std::io::Result<T>>, progressed: bool) {
        match r {
            Poll::Ready(Ok(_)) => {
                if progressed {
                    self.moved();
                }
                self.write_blocked_since.store(0, Ordering::Relaxed);
            }
            Poll::Pending => {
                let _ = self.write_blocked_since.compare_exchange(
                    0,
                    now_ms().max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(Err(_)) => {}
        }
    }

    /// Milliseconds since bytes last moved either way.
    pub(crate) fn idle_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.last.load(Ordering::Relaxed))
    }

    /// Milliseconds a write has been waiting for the peer to read (0: none is waiting).
    pub(crate) fn write_stalled_ms(&self, now: u64) -> u64 {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            0 => 0,
            since => now.saturating_sub(since),
        }
    }
}

/// A stream that reports its [`Progress`].
pub(crate) struct Activity<S> {
    pub(crate) inner: S,
    pub(crate) progress: Arc<Progress>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.moved();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        let progressed = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        self.progress.wrote(&r, progressed);
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress.wrote(&r, false);
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress.wrote(&r, false);
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let progressed = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        self.progress.wrote(&r, progressed);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `listener` until `shutdown` turns true, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    lctx: Arc<ListenerCtx>,
    wctx: Arc<WorkerCtx>,
    mut shutdown: watch::Receiver<bool>,
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
        // Counted as open before it stops counting as pending: in between, the worker would
        // look one connection lighter to the kernel's spreading than it is.
        let counted = wctx.load.connection();
        wctx.load.accepted();
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; use the plain form.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if let Some(maps) = &lctx.deny {
            match maps.is_denied(peer.ip(), kernel_ns()) {
                Ok(true) => {
                    debug!(%peer, "connection refused: source is on the blocklist");
                    continue;
                }
                Ok(false) => {}
                Err(e) => warn!(%peer, "blocklist lookup failed, letting the connection in: {e}"),
            }
        }
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let task = connection(
            stream,
            peer,
            local,
            lctx.clone(),
            wctx.clone(),
            shutdown.clone(),
            (open_tx.clone(), counted),
        );
        crate::counters::spawn(task);
    }
    drop(listener);
    drop(open_tx);
    let drain = wctx.shared.generation.load().config.server.drain_timeout;
    if tokio::time::timeout(drain, open_rx.recv()).await.is_err() {
        warn!(
            ?local,
            "connections still open after {drain:?}; closing them"
        );
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    lctx: Arc<ListenerCtx>,
    wctx: Arc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    // Held until the connection ends: the drain's sender and the load count.
    _open: (mpsc::Sender<()>, LoadGuard),
) {
    let server = wctx.shared.generation.load().config.server.clone();
    let (peer, local) = if lctx.proxy_protocol {
        // Only the listed load balancers may say who the client is.
        let sender_ok = wctx
            .shared
            .generation
            .load()
            .config
            .listener
            .get(lctx.index)
            .is_some_and(|l| l.proxy_protocol_from.iter().any(|c| c.contains(peer.ip())));
        if !sender_ok {
            wctx.shared.metrics.proxy_protocol_refused.inc();
            debug!(%peer, "connection refused: not in proxy_protocol_from");
            return;
        }
        match tokio::time::timeout(
            server.header_read_timeout,
            proxy_protocol::read_header(&mut stream),
        )
        .await
        {
            Ok(Ok(ProxyHeader::Proxied {
                source,
                destination,
            })) => {
                let source = SocketAddr::new(source.ip().to_canonical(), source.port());
                // The kernel only sees the load balancer: a blocked client behind it is
                // refused here, before any TLS or HTTP work.
                if let Some(maps) = &wctx.shared.maps
                    && maps.is_denied(source.ip(), kernel_ns()).unwrap_or(false)
                {
                    wctx.shared.metrics.forwarded_blocked.inc();
                    debug!(%source, "connection refused: the PROXY source is on the blocklist");
                    return;
                }
                (source, destination)
            }
            Ok(Ok(ProxyHeader::Local)) => (peer, local),
            Ok(Err(e)) => {
                debug!(%peer, "bad PROXY protocol header: {e}");
                return;
            }
            Err(_) => {
                debug!(%peer, "no PROXY protocol header in time");
                return;
            }
        }
    } else {
        (peer, local)
    };
    // Connections per client, counted before any TLS work.
    let (limit, prefix_v6) = {
        let generation = wctx.shared.generation.load();
        let l = &generation.config.limits;
        (l.connections_per_client, l.client_prefix_v6)
    };
    let key = crate::defense::limits::client_key(peer.ip(), prefix_v6);
    let Some(_per_client) = wctx.shared.limits.open_connection(key, limit) else {
        debug!(%peer, "connection refused: too many connections from this client");
        return;
    };
    let info = Arc::new(ConnInfo {
        listener: lctx.index,
        peer,
        local,
        tls: lctx.tls,
        interim: super::ctx::Interim::default(),
    });
    if lctx.tls {
        // Boxed: the TLS state is large, and a plain connection's task would otherwise hold
        // room for it for its whole life.
        Box::pin(async move {
            let Some(config) = wctx.shared.tls.load().get(lctx.index).cloned().flatten() else {
                warn!(listener = lctx.index, "no TLS config for a TLS listener");
                return;
            };
            let accepted = tokio::time::timeout(
                server.tls_handshake_timeout,
                tokio_rustls::TlsAcceptor::from(config).accept(stream),
            )
            .await;
            match accepted {
                Ok(Ok(tls)) => {
                    // HTTP/2 by ALPN goes to hyper's server at once.
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_client(tls, info, &lctx, wctx, stop, &server, !h2).await;
                }
                Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        })
        .await;
    } else {
        serve_client(stream, info, &lctx, wctx, stop, &server, true).await;
    }
}

/// HTTP/1.1 on the own server (`h1server`) when `own`, handing over to hyper's server for what
/// it does not serve; hyper's server (HTTP/2, and HTTP/1.1 when `server.http1 = "hyper"`)
/// otherwise.
async fn serve_client<S>(
    mut io: S,
    info: Arc<ConnInfo>,
    lctx: &ListenerCtx,
    wctx: Arc<WorkerCtx>,
    mut stop: watch::Receiver<bool>,
    server: &crate::config::ServerConfig,
    own: bool,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // hyper's connection state is several KiB: boxed, so that a connection on the own
    // server (whose task holds the largest state of this function) does not carry it.
    if !own || server.http1 == crate::config::Http1Server::Hyper {
        Box::pin(serve_http(io, info, lctx, wctx, stop, server)).await;
        return;
    }
    let limits = {
        let generation = wctx.shared.generation.load();
        let l = &generation.config.limits;
        crate::h1::Limits::listener(l.max_header_bytes, l.max_headers)
    };
    let h2c = !lctx.tls && lctx.h2c;
    match super::h1server::serve(&mut io, &info, &wctx, &mut stop, server, limits, h2c).await {
        super::h1server::Ended::Closed => {}
        super::h1server::Ended::HandOver(read) => {
            let io = super::h1server::Rewind::new(read, io);
            Box::pin(serve_http(io, info, lctx, wctx, stop, server)).await;
        }
    }
}

/// Serves HTTP on one accepted (and, if configured, TLS-terminated) connection until it ends,
/// `stop` turns true or it idles out. Public so that the fuzz target `request` drives the real
/// server settings with in-memory connections.
pub async fn serve_http<S>(
    io: S,
    info: Arc<ConnInfo>,
    lctx: &ListenerCtx,
    wctx: Arc<WorkerCtx>,
    mut stop: watch::Receiver<bool>,
    server: &crate::config::ServerConfig,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let progress = Progress::new();
    let io = TokioIo::new(Activity {
        inner: io,
        progress: progress.clone(),
    });
    let peer = info.peer;
    let shared = wctx.shared.clone();
    let limits = shared.generation.load().config.limits.clone();
    // Boxed per request: hyper keeps the space of one service future for the whole life of a
    // connection, and the request path's future is several KiB; idle keep-alive connections
    // should not hold it.
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        Box::pin(handle(
            req.map(super::ctx::ClientBody::Hyper),
            info.clone(),
            wctx.clone(),
        ))
    });
    // HTTP/2 streams run as tasks of their own, each with a send_timeout watchdog.
    let executor = super::stall::StreamExecutor {
        send_timeout: server.send_timeout,
        metrics: shared.metrics.clone(),
    };
    let mut builder = auto::Builder::new(executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams);
    if !lctx.tls && !lctx.h2c {
        builder = builder.http1_only();
    }
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let idle_ms = u64::try_from(server.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let send_ms = u64::try_from(server.send_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut check = tokio::time::interval(
        Duration::from_secs(1)
            .min(server.idle_timeout)
            .min(server.send_timeout),
    );
    // Accepted during the stop grace: serve what comes, then close.
    let mut closing = *stop.borrow_and_update();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.changed(), if !closing => {
                // Finish the requests in flight, then close (keep-alive ends here).
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                let now = now_ms();
                // A client that stops reading a response: nothing graceful is left to do.
                if progress.write_stalled_ms(now) >= send_ms {
                    debug!(%peer, "closing a connection: the client read nothing for send_timeout");
                    shared.metrics.send_timeouts.inc();
                    return;
                }
                if !closing && progress.idle_ms(now) >= idle_ms {
                    debug!(%peer, "closing an idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, "connection ended with an error: {e}");
        // A request the parser refused (malformed, too large) counts for the ban rules.
        let refused = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_parse() || e.is_parse_too_large());
        let generation = shared.generation.load();
        // Before a request head there is no forwarded address: the client is the peer, and
        // a trusted proxy or PROXY sender in front is never banned for what it relays.
        if refused && !generation.bans.is_empty() && generation.may_ban(peer.ip()) {
            shared.bans.record(
                &generation.bans,
                peer.ip(),
                crate::defense::ban::Event::Invalid,
                true,
            );
        }
    }
}
