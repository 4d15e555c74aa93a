//! The contexts of the request path: what a worker shares with its connections
//! ([`WorkerCtx`]), what is known of one client connection ([`ConnInfo`]), and the one
//! per-request context every phase works on ([`RequestCtx`]).
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use hyper::{
    Request, Version,
    body::Incoming,
    header::{self, HeaderValue},
    http::uri::PathAndQuery,
};

use super::normalize;
use crate::{
    kernel::spread::WorkerLoadHandle,
    runtime::{Generation, Route, Shared},
    upstream::client::ClientPool,
};

/// The body type of every response the proxy sends.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, crate::upstream::client::BoxError>;

/// A client's request body, whichever server read the request: hyper's (HTTP/2, and HTTP/1.1
/// requests the own server hands over), or none (what the own HTTP/1.1 server serves itself).
#[derive(Debug)]
pub enum ClientBody {
    Hyper(Incoming),
    Empty,
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = crate::upstream::client::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Self::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Hyper(b) => b.size_hint(),
            Self::Empty => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// What is known about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub listener: usize,
    /// The client (from the PROXY header when the listener expects one).
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub tls: bool,
    /// Interim (1xx) answers from the upstream on their way to this client.
    pub interim: Interim,
}

/// Interim answers (`103 Early Hints` and other 1xx but `100` and `101`) that an upstream
/// sent before its final answer, written as HTTP/1.1 heads, for the own HTTP/1.1 server to
/// pass on before the final answer. Only collected while that server asks for them (for an
/// HTTP/1.1 request: RFC 9110 15.2 forbids 1xx to HTTP/1.0 clients); hyper's servers cannot
/// send them. The upstream reads them in the request's own task, so the server finds them
/// after each poll of the request, without a wake-up of its own.
#[derive(Debug, Default)]
pub struct Interim {
    wanted: std::sync::atomic::AtomicBool,
    pending: std::sync::atomic::AtomicBool,
    /// Heads queued for the current request so far.
    sent: std::sync::atomic::AtomicUsize,
    heads: std::sync::Mutex<Vec<Bytes>>,
}

impl Interim {
    /// Starts (or stops) collecting for the request being served.
    ///
    /// # Panics
    ///
    /// If the queue's mutex is poisoned (a thread panicked while holding it).
    pub fn want(&self, on: bool) {
        self.wanted.store(on, std::sync::atomic::Ordering::Relaxed);
        self.sent.store(0, std::sync::atomic::Ordering::Relaxed);
        // Heads left unwritten (none, nearly always: no lock then).
        if !on && self.is_pending() {
            self.take();
        }
    }

    /// Whether anyone would pass an interim answer on now.
    pub fn wanted(&self) -> bool {
        self.wanted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Interim heads passed on per request at most, and their bytes at most: an upstream
    /// that sends more gets the rest dropped.
    const MAX_HEADS: usize = 8;
    const MAX_BYTES: usize = 16 * 1024;

    /// Queues an encoded interim head, if wanted (and within the bounds per request).
    ///
    /// # Panics
    ///
    /// If the queue's mutex is poisoned (a thread panicked while holding it).
    pub fn push(&self, head: Bytes) {
        if self.wanted() {
            let mut heads = self.heads.lock().expect("interim heads");
            let sent = self.sent.load(std::sync::atomic::Ordering::Relaxed);
            if sent >= Self::MAX_HEADS
                || heads.iter().map(Bytes::len).sum::<usize>() + head.len() > Self::MAX_BYTES
            {
                return;
            }
            self.sent
                .store(sent + 1, std::sync::atomic::Ordering::Relaxed);
            heads.push(head);
            self.pending
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether heads wait to be written.
    pub fn is_pending(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The queued heads, in order.
    ///
    /// # Panics
    ///
    /// If the queue's mutex is poisoned (a thread panicked while holding it).
    pub fn take(&self) -> Vec<Bytes> {
        self.pending
            .store(false, std::sync::atomic::Ordering::Release);
        std::mem::take(&mut *self.heads.lock().expect("interim heads"))
    }
}

/// What a worker shares with all its connections.
pub struct WorkerCtx {
    pub shared: Arc<Shared>,
    pub pool: Arc<ClientPool>,
    pub load: WorkerLoadHandle,
}

/// Which server answered a request and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamHop {
    pub server: SocketAddr,
    pub time: std::time::Duration,
}

/// The request as the client wrote it, for the access log (only copied when it is on).
#[derive(Debug)]
pub struct LogFields {
    pub method: String,
    pub host: String,
    pub target: String,
    pub protocol: &'static str,
    pub user_agent: String,
    pub referer: String,
}

/// The servers a request was sent to, in order: inline up to four (retries rarely go
/// further), so the common request allocates nothing for it.
#[derive(Debug, Default)]
pub struct Tried {
    len: usize,
    inline: [usize; 4],
    spill: Vec<usize>,
}

impl Tried {
    pub fn push(&mut self, index: usize) {
        if self.spill.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = index;
            self.len += 1;
            return;
        }
        if self.spill.is_empty() {
            self.spill.extend_from_slice(&self.inline[..self.len]);
        }
        self.spill.push(index);
    }

    #[must_use]
    pub fn as_slice(&self) -> &[usize] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

/// One request, from its head to its log line: created once in the first phase, then read
/// and filled in by each phase in turn (`http::phases`).
pub struct RequestCtx {
    pub started: Instant,
    pub conn: Arc<ConnInfo>,
    pub worker: Arc<WorkerCtx>,
    /// The config generation the request started on (it finishes on it, across reloads).
    pub generation: Arc<Generation>,
    /// The request id: the client's when it sent a usable one, else a new one.
    pub id: HeaderValue,
    /// The one client address every limit, ban, rule and log line uses.
    pub client_ip: IpAddr,
    pub version: Version,
    /// The routed host (lowercase, no port; empty for HTTP/1.0 without a Host).
    pub host: String,
    /// The `Host` sent upstream (the canonical authority, with its port).
    pub host_header: HeaderValue,
    /// The client's request target, when a route forwards it as written.
    pub original_target: Option<PathAndQuery>,
    pub route: Option<Arc<Route>>,
    /// Upstream servers tried so far (indexes into the route's pool).
    pub tried: Tried,
    /// The server whose answer is forwarded.
    pub hop: Option<UpstreamHop>,
    /// `Cache-Status` parameters, set by the cache phase on a cached route.
    pub cache_status: Option<String>,
    pub log: Option<LogFields>,
    /// The client waits for this request's answer (not a background refresh): interim
    /// answers from the upstream go to it.
    pub foreground: bool,
}

impl RequestCtx {
    /// The context of a request, before any check: id, client address, and what the access
    /// log will want of the request as it came.
    #[must_use]
    pub fn new(req: &Request<ClientBody>, conn: Arc<ConnInfo>, worker: Arc<WorkerCtx>) -> Self {
        let generation = worker.shared.generation.load_full();
        let server = &generation.config.server;
        let client_ip = super::headers::client_ip(
            conn.peer.ip(),
            req.headers(),
            &server.trusted_proxies,
            server.client_address_from,
        );
        let log = worker.shared.access_log.as_ref().map(|_| log_fields(req));
        Self {
            started: Instant::now(),
            id: request_id(req.headers()),
            client_ip,
            version: req.version(),
            host: String::new(),
            host_header: HeaderValue::from_static(""),
            original_target: None,
            route: None,
            tried: Tried::default(),
            hop: None,
            cache_status: None,
            log,
            foreground: true,
            conn,
            worker,
            generation,
        }
    }

    /// A context for a request the proxy makes on this one's behalf (a background cache
    /// refresh): the same client, id, authority and route; its own clock and attempts.
    #[must_use]
    pub fn fork(&self) -> Self {
        Self {
            started: Instant::now(),
            conn: self.conn.clone(),
            worker: self.worker.clone(),
            generation: self.generation.clone(),
            id: self.id.clone(),
            client_ip: self.client_ip,
            version: self.version,
            host: self.host.clone(),
            host_header: self.host_header.clone(),
            original_target: self.original_target.clone(),
            route: self.route.clone(),
            tried: Tried::default(),
            hop: None,
            cache_status: None,
            log: None,
            foreground: false,
        }
    }

    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.conn.tls { "https" } else { "http" }
    }

    /// The request id as text (always ASCII: generated hex, or checked printable).
    #[must_use]
    pub fn id_str(&self) -> &str {
        self.id.to_str().unwrap_or("")
    }

    /// The route; set by the request filter, which every later phase follows.
    ///
    /// # Panics
    /// Before the request filter has run (a phase out of order).
    #[must_use]
    pub fn route(&self) -> &Arc<Route> {
        self.route
            .as_ref()
            .expect("the request filter sets the route")
    }

    /// The values header rules may use.
    #[must_use]
    pub fn vars(&self) -> crate::rules::Vars<'_> {
        crate::rules::Vars {
            client_ip: self.client_ip,
            host: &self.host,
            scheme: self.scheme(),
            request_id: self.id_str(),
        }
    }

    pub(super) fn set_authority(
        &mut self,
        authority: Option<normalize::Authority>,
        host: HeaderValue,
    ) {
        self.host = authority.map(|a| a.host).unwrap_or_default();
        self.host_header = host;
    }

    /// "HTTP/1.1"-style text of the client's protocol version.
    #[must_use]
    pub fn protocol(&self) -> &'static str {
        protocol(self.version)
    }

    /// This proxy's `Via` entry for the request's version (`1.1 name`).
    #[must_use]
    pub fn via(&self) -> &HeaderValue {
        let via = &self.generation.via;
        match self.version {
            Version::HTTP_2 => &via[2],
            Version::HTTP_10 => &via[0],
            _ => &via[1],
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn log_fields(req: &Request<ClientBody>) -> LogFields {
    let text = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    LogFields {
        method: req.method().to_string(),
        host: req
            .uri()
            .authority()
            .map_or_else(|| text(header::HOST), |a| a.as_str().to_owned()),
        target: req
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str)
            .to_owned(),
        protocol: protocol(req.version()),
        user_agent: text(header::USER_AGENT),
        referer: text(header::REFERER),
    }
}

/// A client-sent request id is kept if it is short, printable text; otherwise a new random
/// 128-bit id in hex.
fn request_id(headers: &hyper::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&super::headers::X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return v.clone();
    }
    let mut hex = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, b) in hex.iter_mut().enumerate() {
        let nibble = u8::try_from((n >> (124 - 4 * i)) & 0xf).unwrap_or(0);
        *b = b"0123456789abcdef"[usize::from(nibble)];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interim_heads_are_bounded_per_request_and_only_when_wanted() {
        let i = Interim::default();
        i.push(Bytes::from_static(b"x"));
        assert!(!i.is_pending(), "nobody asked");
        i.want(true);
        for _ in 0..20 {
            i.push(Bytes::from_static(b"HTTP/1.1 103 Early Hints\r\n\r\n"));
        }
        assert_eq!(i.take().len(), Interim::MAX_HEADS);
        i.push(Bytes::from_static(b"late"));
        assert!(!i.is_pending(), "the bound is per request, not per queue");
        i.want(false);
        i.want(true);
        i.push(Bytes::from(vec![b'a'; Interim::MAX_BYTES + 1]));
        assert!(!i.is_pending(), "too large");
        i.push(Bytes::from_static(b"ok"));
        assert_eq!(i.take(), [Bytes::from_static(b"ok")]);
    }

    #[test]
    fn tried_servers_spill_past_four() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        for i in 0..6 {
            t.push(i * 10);
        }
        assert_eq!(t.as_slice(), &[0, 10, 20, 30, 40, 50]);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn request_ids_are_kept_when_printable_and_made_otherwise() {
        let mut h = hyper::HeaderMap::new();
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(request_id(&h), made, "random");
        h.insert("x-request-id", HeaderValue::from_static("abc-1"));
        assert_eq!(request_id(&h), "abc-1");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 32);
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 32);
    }
}
