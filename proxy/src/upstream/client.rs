//! Connections to upstream servers: connect (TCP, optional PROXY v2 header, optional TLS),
//! HTTP/1.1 or HTTP/2 handshake, and a per-worker pool of idle HTTP/1.1 connections and shared
//! HTTP/2 connections.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tracing::debug;

use super::{
    Upstream,
    h1::{H1Body, H1Conn, Return},
};
use crate::proxy_protocol;

/// Any error a body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests sent upstream.
pub type UpBody = BoxBody<Bytes, BoxError>;

/// An empty request body.
#[must_use]
pub fn empty_body() -> UpBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// How a client's request body failed the pace limits (the client's fault, never the
/// upstream's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyPaceError {
    #[error("the client stopped sending the request body")]
    Stalled,
    #[error("the client sends the request body slower than the minimum rate")]
    TooSlow,
}

/// A request body that fails when no data arrives for `timeout` (a client trickling its
/// body, or stalling, ties up a worker and an upstream connection otherwise).
pub struct ReadTimeout<B> {
    inner: B,
    timeout: std::time::Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Minimum average rate (bytes/s) after `MIN_RATE_GRACE`; 0 = none.
    min_rate: u64,
    started: Instant,
    received: u64,
}

/// How long a body may take before the minimum rate is enforced.
const MIN_RATE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl<B> ReadTimeout<B> {
    pub fn new(inner: B, timeout: std::time::Duration, min_rate: u64) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            min_rate,
            started: Instant::now(),
            received: 0,
        }
    }
}

impl<B> hyper::body::Body for ReadTimeout<B>
where
    B: hyper::body::Body + Unpin,
    B::Data: hyper::body::Buf,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    self.received += hyper::body::Buf::remaining(data) as u64;
                    let elapsed = self.started.elapsed();
                    if self.min_rate > 0
                        && elapsed > MIN_RATE_GRACE
                        && u128::from(self.received) * 1000
                            < u128::from(self.min_rate) * elapsed.as_millis()
                    {
                        return Poll::Ready(Some(Err(BodyPaceError::TooSlow.into())));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Some(Err(BodyPaceError::Stalled.into())))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Any byte stream to a server (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting timed out")]
    Timeout,
    #[error("connecting failed: {0}")]
    Io(std::io::Error),
    #[error("TLS handshake with the server failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
}

/// Opens a byte stream to `addr`: TCP, then the PROXY v2 header (`proxy` = client and the
/// address it connected to), then TLS when the pool uses it; all within the connect timeout.
pub async fn connect_stream(
    up: &Upstream,
    addr: SocketAddr,
    proxy: Option<(SocketAddr, SocketAddr)>,
) -> Result<Box<dyn Io>, ConnectError> {
    let fut = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        if up.proxy_protocol
            && let Some((source, destination)) = proxy
        {
            tcp.write_all(&proxy_protocol::encode_v2(source, destination))
                .await
                .map_err(ConnectError::Io)?;
        }
        let Some(tls) = &up.tls else {
            return Ok(Box::new(tcp) as Box<dyn Io>);
        };
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| rustls_pki_types::ServerName::IpAddress(addr.ip().into()));
        let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(Box::new(stream) as Box<dyn Io>)
    };
    tokio::time::timeout(up.connect_timeout, fut)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// An HTTP/1.1 connection; the returned future drives it and must be spawned.
pub async fn connect_h1(
    up: &Upstream,
    addr: SocketAddr,
    proxy: Option<(SocketAddr, SocketAddr)>,
) -> Result<
    (
        http1::SendRequest<UpBody>,
        impl Future<Output = ()> + Send + 'static,
    ),
    ConnectError,
> {
    let io = connect_stream(up, addr, proxy).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    Ok((sender, async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!("upstream connection ended: {e}");
        }
    }))
}

async fn connect_h2(
    up: &Upstream,
    addr: SocketAddr,
) -> Result<http2::SendRequest<UpBody>, ConnectError> {
    let io = connect_stream(up, addr, None).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    crate::counters::spawn(async move {
        if let Err(e) = conn.await {
            debug!("upstream HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}

/// A pool's name and a server's address: what idle connections are kept by.
pub type Key = (std::sync::Arc<str>, SocketAddr);

/// One worker's connections to every upstream server.
/// Idle connections per server that keep their read and write buffers (the busiest: no
/// allocation per request on a hot pool); the others keep only their socket.
pub(crate) const WARM: usize = 32;

/// The pool's maps are looked up twice per request; their keys come from the config, so a
/// fast hash needs no protection against chosen collisions.
type Map<V> = HashMap<Key, V, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct ClientPool {
    /// Idle HTTP/1.1 connections on the proxy's own client (every request but upgrades).
    own: Mutex<Map<std::collections::VecDeque<(u64, H1Conn)>>>,
    h2: Mutex<Map<http2::SendRequest<UpBody>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ClientPool {
    /// An idle connection of the own client that can carry a request: the newest first;
    /// closed, expired and unasked-for-data ones are dropped.
    fn take_own(&self, key: &Key, up: &Upstream) -> Option<H1Conn> {
        let idle_ms = u64::try_from(up.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let now = crate::clock::now_ms();
        let mut own = lock(&self.own);
        let list = own.get_mut(key)?;
        while let Some((since, mut conn)) = list.pop_back() {
            if now.saturating_sub(since) < idle_ms && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// An idle connection of the own client, for tests.
    #[cfg(test)]
    pub(crate) fn take_for_test(&self, key: &Key) -> Option<H1Conn> {
        lock(&self.own).get_mut(key)?.pop_back().map(|(_, c)| c)
    }

    /// How many idle connections of the own client the pool holds for `key`, for tests.
    #[cfg(test)]
    pub(crate) fn idle_for_test(&self, key: &Key) -> usize {
        lock(&self.own)
            .get(key)
            .map_or(0, std::collections::VecDeque::len)
    }

    /// A connection whose response is over, back to the pool.
    /// Idle connections past the oldest that expired are closed here, not only when reached;
    /// past the [`WARM`] most recently used, an idle connection gives its buffers back.
    pub fn put_h1(
        &self,
        key: Key,
        mut conn: H1Conn,
        max: usize,
        idle_timeout: std::time::Duration,
    ) {
        let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let now = crate::clock::now_ms();
        let mut own = lock(&self.own);
        let list = own.entry(key).or_default();
        while list
            .front()
            .is_some_and(|(since, _)| now.saturating_sub(*since) >= idle_ms)
        {
            list.pop_front();
        }
        if list.len() < max {
            if list.len() >= WARM {
                conn.release_buffers();
            }
            list.push_back((now, conn));
        }
    }

    /// A connection to server `addr` of `up`: a pooled one when there is one, else a new one.
    /// `client` is (client address, address it connected to), for the PROXY v2 header.
    /// `upgrade`: the request asks to switch protocols (hyper's client carries those).
    pub async fn acquire(
        &self,
        up: &Upstream,
        addr: SocketAddr,
        client: (SocketAddr, SocketAddr),
        upgrade: bool,
    ) -> Result<Conn, ConnectError> {
        let key: Key = (up.pool_key.clone(), addr);
        if up.http2 && !up.proxy_protocol {
            let cached = lock(&self.h2).get(&key).filter(|s| !s.is_closed()).cloned();
            let sender = if let Some(s) = cached {
                s
            } else {
                let s = Box::pin(connect_h2(up, addr)).await?;
                lock(&self.h2).insert(key, s.clone());
                s
            };
            return Ok(Conn::H2(sender));
        }
        // With PROXY v2 a connection names one client: never pooled.
        let reusable = !up.proxy_protocol;
        if !upgrade {
            let pooled = if reusable {
                self.take_own(&key, up)
            } else {
                None
            };
            let conn = if let Some(c) = pooled {
                c
            } else {
                // Boxed: connecting is the rare case, and its future is large.
                H1Conn::new(Box::pin(connect_stream(up, addr, Some(client))).await?)
            };
            return Ok(Conn::Own {
                conn,
                key,
                reusable,
                max_idle: up.max_idle_per_server,
                idle_timeout: up.idle_timeout,
            });
        }
        // An upgrade request's connection is the tunnel's if the server switches, and is
        // not reused otherwise either: always a new one.
        let (sender, conn) = Box::pin(connect_h1(up, addr, Some(client))).await?;
        crate::counters::spawn(conn);
        Ok(Conn::H1(sender))
    }

    /// Sends `req` on `conn`. An own HTTP/1.1 connection goes back to the pool once the
    /// response body has been read (never with PROXY v2, whose header names one client).
    pub async fn send(
        self: &Arc<Self>,
        conn: Conn,
        req: Request<UpBody>,
        interim: Option<&crate::http::ctx::Interim>,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        match conn {
            Conn::Own {
                conn,
                key,
                reusable,
                max_idle,
                idle_timeout,
            } => {
                let back = reusable.then(|| Return {
                    pool: self.clone(),
                    key,
                    max_idle,
                    idle_timeout,
                });
                let resp = super::h1::send(conn, req, back, interim).await?;
                Ok(resp.map(UpstreamBody::Own))
            }
            Conn::H2(mut sender) => Ok(sender.send_request(req).await?.map(UpstreamBody::Hyper)),
            Conn::H1(mut sender) => Ok(sender.send_request(req).await?.map(UpstreamBody::Hyper)),
        }
    }
}

/// A connection ready for one request.
pub enum Conn {
    /// The proxy's own HTTP/1.1 client.
    Own {
        conn: H1Conn,
        key: Key,
        reusable: bool,
        max_idle: usize,
        idle_timeout: std::time::Duration,
    },
    /// hyper's HTTP/1.1 client (upgrade requests; never pooled).
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

/// A response body from a server, whichever client read it.
#[expect(
    clippy::large_enum_variant,
    reason = "the own client's body holds its connection inline: boxing it allocates per request"
)]
pub enum UpstreamBody {
    Own(H1Body),
    Hyper(Incoming),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Own(b) => std::pin::Pin::new(b).poll_frame(cx),
            Self::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Own(b) => b.is_end_stream(),
            Self::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Own(b) => b.size_hint(),
            Self::Hyper(b) => b.size_hint(),
        }
    }
}
