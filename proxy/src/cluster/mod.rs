//! The fleet: every node's blocklist and allowlist entries shared through etcd.
//!
//! Each node runs one task ([`Cluster::start`]) that
//! - at start-up and after every reconnection lists `<prefix>/` at one revision, reconciles
//!   its own lists with etcd's ([`model::merge`] against the mirror kept in the state file,
//!   written with the lists: etcd wins for what changed there, what changed only here is
//!   published; expired entries count as absent everywhere), then
//!   watches from the next revision, so no event is missed or applied twice;
//! - applies the watch's puts and deletes to its lists (kernel maps and state file, through
//!   [`ListStore::edit`]), unless the entry has a change of this node's own that is not
//!   published yet (which then goes out and wins, being later);
//! - publishes every change made here, whatever made it (CLI, admin API, automatic bans, the
//!   sweep of expired entries): it compares the state file with the mirror whenever the file
//!   changes (the daemon also wakes it at once after its own bans), and writes the differences
//!   in transactions of at most [`TXN_OPS`] operations; an entry with an expiry is attached to
//!   an etcd lease that ends then, so etcd removes it everywhere;
//! - keeps `<prefix>/nodes/<node>` (on a lease) with the revision it has applied, which
//!   `proxy cluster status` shows for every node.
//!
//! When etcd cannot be reached the node keeps filtering with what it has; its own changes stay
//! in its state file (the difference from the mirror is the queue) and go out on reconnection.
//! Retries back off from 100 ms to 5 s; each change of state is logged once.
pub mod model;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{
    cache::Cache,
    clock::wall_ms,
    config::ClusterConfig,
    defense::{DefenseError, ListStore, state::State},
};
use model::{Key, MirrorFile, Record, Value};

/// How long a purge stays in etcd: nodes away longer apply it no more (their cache is
/// whatever it is; a node that restarts starts empty).
const PURGE_TTL: i64 = 60;
const PURGE_QUEUE: usize = 10_000;
/// Operations per transaction (etcd's default `--max-txn-ops` is 128).
pub const TXN_OPS: usize = 100;
/// Keys per page when listing the prefix.
const PAGE: i64 = 2_000;
/// How often the state file is checked for changes made by other processes (the CLI).
const POLL: Duration = Duration::from_millis(100);
/// How long a burst of watch responses is gathered before it is applied (one state file
/// write for many events).
const GATHER: Duration = Duration::from_millis(20);
const GATHER_MAX: Duration = Duration::from_millis(100);
const GATHER_EVENTS: usize = 20_000;
/// The largest response accepted from etcd (a page of the listing, a watch response).
const MAX_MESSAGE: usize = 64 << 20;
/// etcd's largest lease TTL (`MaxLeaseTTL`); longer bans get it (and their own expiry).
const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// A transaction's operations stop at this many bytes (etcd's `--max-request-bytes` is
/// 1.5 MiB by default).
const TXN_BYTES: usize = 1 << 20;
/// A value larger than this is neither published nor taken (notes are short texts).
pub const MAX_VALUE: usize = 16 * 1024;
/// The node key's lease, and how often the key is rewritten.
const NODE_TTL: i64 = 10;
const HEARTBEAT: Duration = Duration::from_secs(2);
/// After publishing, the mirror is written at most this often (see `Mirror::save`).
const MIRROR_SAVE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd ({endpoints}): {op}: {source}")]
    Etcd {
        endpoints: String,
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd ({endpoints}): the watch on {prefix} ended: {reason}")]
    WatchEnded {
        endpoints: String,
        prefix: String,
        reason: String,
    },
    #[error("cluster: cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lists(#[from] DefenseError),
    #[error("cluster: the list task failed: {0}")]
    Task(String),
}

/// What the node knows of another node (from its key under `<prefix>/nodes/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// The etcd revision that node had applied.
    pub revision: i64,
    /// When it last wrote its key (wall-clock ms).
    pub updated_ms: u64,
    #[serde(default)]
    pub version: String,
}

/// The task's state, shared with `/metrics`, `/readyz` and `proxy cluster status`.
#[derive(Default)]
pub struct Status {
    connected: AtomicBool,
    /// The revision this node has applied.
    revision: AtomicI64,
    /// The latest revision etcd reported.
    etcd_revision: AtomicI64,
    /// Local changes not published yet (as of the last comparison).
    pending: AtomicU64,
    published: AtomicU64,
    applied: AtomicU64,
    reconnects: AtomicU64,
    /// The last publish failed for another reason than the connection: retried every poll
    /// second until it succeeds.
    publish_failed: AtomicBool,
    last_error: Mutex<Option<String>>,
    nodes: Mutex<BTreeMap<String, NodeInfo>>,
}

/// [`Status`] as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub node: String,
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub connected: bool,
    pub revision: i64,
    pub etcd_revision: i64,
    pub pending: u64,
    pub published: u64,
    pub applied: u64,
    pub reconnects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub nodes: Vec<NodeInfo>,
}

/// The running fleet task of this node.
pub struct Cluster {
    ctx: Arc<Ctx>,
}

struct Ctx {
    config: ClusterConfig,
    node: String,
    endpoints: String,
    store: Arc<Mutex<ListStore>>,
    cache: Arc<Cache>,
    state_path: PathBuf,
    status: Status,
    wake: Notify,
    /// Purges made here, waiting to be published (kept while etcd is unreachable).
    purges: Mutex<VecDeque<Purge>>,
    purge_serial: AtomicU64,
}

/// A cache purge, as the admin API takes it and as the fleet shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// A URL, or a prefix ending in `*`.
    Url(String),
    /// Every response carrying one of the tags (`soft`: made stale instead of removed).
    Tags { tags: Vec<String>, soft: bool },
}

/// A purge as stored under `<prefix>/purges/<node>/<serial>` (on a [`PURGE_TTL`] lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PurgeValue {
    origin: String,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default)]
    soft: bool,
}

impl PurgeValue {
    /// The purge, if the value describes a valid one.
    fn purge(&self) -> Result<Purge, String> {
        match (&self.url, self.tags.is_empty()) {
            (Some(url), true) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 8192
                {
                    return Err(format!(
                        "url {url:?} is not an absolute http(s) URL of at most 8192 bytes"
                    ));
                }
                Ok(Purge::Url(url.clone()))
            }
            (None, false) => {
                if self.tags.len() > 100
                    || self
                        .tags
                        .iter()
                        .any(|t| t.is_empty() || t.len() > 1024 || t.contains([' ', ',', '\t']))
                {
                    return Err(
                        "tags: 1 to 100 tags of 1 to 1024 bytes without spaces or commas".into(),
                    );
                }
                Ok(Purge::Tags {
                    tags: self.tags.clone(),
                    soft: self.soft,
                })
            }
            _ => Err("give either url or tags".into()),
        }
    }
}

impl Cluster {
    /// Starts the task on the current tokio runtime. `node` is this node's name (unique in
    /// the fleet).
    ///
    /// # Panics
    ///
    /// If the list store's lock is poisoned (a thread panicked while changing the lists).
    #[must_use]
    pub fn start(
        config: ClusterConfig,
        node: String,
        store: Arc<Mutex<ListStore>>,
        cache: Arc<Cache>,
    ) -> Self {
        let state_path = store.lock().expect("list store").state_path().to_owned();
        let ctx = Arc::new(Ctx {
            endpoints: config.endpoints.join(","),
            config,
            node,
            store,
            cache,
            state_path,
            status: Status::default(),
            wake: Notify::new(),
            purges: Mutex::new(VecDeque::new()),
            purge_serial: AtomicU64::new(0),
        });
        tokio::spawn(run(ctx.clone()));
        Self { ctx }
    }

    /// The lists changed here (the daemon's own bans): publish now rather than at the next
    /// poll.
    pub fn lists_changed(&self) {
        self.ctx.wake.notify_one();
    }

    /// Whether the fleet can take `purge` (the size and shape every node accepts): the admin
    /// API refuses one it cannot, rather than purge this node alone.
    ///
    /// # Errors
    ///
    /// What is wrong with it, in words for the client.
    pub fn check_purge(&self, purge: &Purge) -> Result<(), String> {
        let value = purge_value(&self.ctx, purge, 0);
        value.purge()?;
        let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
        if size > MAX_VALUE {
            return Err(format!(
                "the purge is {size} bytes as the fleet shares it, over {MAX_VALUE}: split it"
            ));
        }
        Ok(())
    }

    /// A purge made here (admin API): every other node applies it too. Queued while etcd
    /// is unreachable (the oldest dropped beyond [`PURGE_QUEUE`]).
    ///
    /// # Panics
    ///
    /// If the queue's lock is poisoned (never held across anything that can panic).
    pub fn publish_purge(&self, purge: Purge) {
        let mut q = self.ctx.purges.lock().expect("purge queue");
        if q.len() >= PURGE_QUEUE {
            q.pop_front();
            warn!("cluster: {PURGE_QUEUE} purges wait for etcd; the oldest is dropped");
        }
        q.push_back(purge);
        drop(q);
        self.ctx.wake.notify_one();
    }

    #[must_use]
    pub fn connected(&self) -> bool {
        self.ctx.status.connected.load(Ordering::Relaxed)
    }

    /// # Panics
    ///
    /// If the status lock is poisoned (never held across anything that can panic).
    #[must_use]
    pub fn status(&self) -> StatusView {
        let s = &self.ctx.status;
        StatusView {
            node: self.ctx.node.clone(),
            endpoints: self.ctx.config.endpoints.clone(),
            prefix: self.ctx.config.prefix.clone(),
            connected: s.connected.load(Ordering::Relaxed),
            revision: s.revision.load(Ordering::Relaxed),
            etcd_revision: s.etcd_revision.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            applied: s.applied.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            last_error: s.last_error.lock().expect("status").clone(),
            nodes: s.nodes.lock().expect("status").values().cloned().collect(),
        }
    }
}

/// The mirror in memory: etcd's entries as last seen, by key.
#[derive(Default)]
struct Mirror {
    cluster_id: u64,
    revision: i64,
    entries: BTreeMap<Key, Value>,
    /// The revision of the last write seen for a key in this session (this node's own
    /// transactions included): an older event for it is stale (an echo of what this node has
    /// since changed again) and is skipped.
    revs: HashMap<Key, i64>,
    dirty: bool,
    saved: Option<Instant>,
}

impl Mirror {
    /// The mirror kept in the state file (entries that do not parse under this prefix are
    /// left out).
    fn from_file(ctx: &Ctx, file: Option<MirrorFile>) -> Self {
        let file = file.unwrap_or_default();
        let prefix = &ctx.config.prefix;
        let entries = file
            .entries
            .into_iter()
            .filter_map(|(k, v)| {
                let key = model::parse_key(prefix, k.as_bytes()).ok()?;
                (v.prefix == key.cidr && v.list == key.list).then_some((key, v))
            })
            .collect();
        Self {
            cluster_id: file.cluster_id,
            revision: file.revision,
            entries,
            revs: HashMap::new(),
            dirty: false,
            saved: None,
        }
    }

    fn to_file(&self, ctx: &Ctx) -> MirrorFile {
        MirrorFile {
            cluster_id: self.cluster_id,
            revision: self.revision,
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (model::key_string(&ctx.config.prefix, k), v.clone()))
                .collect(),
        }
    }

    /// The entries in force at `now_ms`, as records.
    fn records(&self, now_ms: u64) -> BTreeMap<Key, Record> {
        model::live_only(
            self.entries.iter().map(|(k, v)| (*k, v.record())).collect(),
            now_ms,
        )
    }

    fn record(&self, key: &Key, now_ms: u64) -> Option<Record> {
        model::live(self.entries.get(key).map(Value::record), now_ms)
    }

    fn set(&mut self, key: Key, value: Option<Value>) {
        match value {
            Some(v) => self.entries.insert(key, v),
            None => self.entries.remove(&key),
        };
        self.dirty = true;
    }

    /// Writes the mirror into the state file if it changed and `force` or the last write is
    /// old enough. Only after publishing: a mirror that lags what was published makes the
    /// next merge find the two sides agreeing, which is harmless (what changes the lists
    /// writes the mirror with them, in the same write).
    async fn save(&mut self, ctx: &Arc<Ctx>, force: bool) {
        if !self.dirty || (!force && self.saved.is_some_and(|t| t.elapsed() < MIRROR_SAVE)) {
            return;
        }
        let file = self.to_file(ctx);
        match with_store(ctx, move |store| {
            store.edit(|state| {
                state.cluster = Some(file);
            })
        })
        .await
        {
            Ok(_) => {
                self.dirty = false;
                self.saved = Some(Instant::now());
            }
            Err(e) => warn!("cluster: cannot write the mirror into the state file: {e}"),
        }
    }
}

/// Reconnects for ever, backing off; logs each change between connected and not once.
async fn run(ctx: Arc<Ctx>) {
    // Without its mirror the node could not tell its own changes from etcd's: it waits
    // until the state file reads.
    let mut mirror = loop {
        match with_store(&ctx, |store| store.read_state()).await {
            Ok(state) => break Mirror::from_file(&ctx, state.cluster),
            Err(e) => {
                warn!("cluster: {e}; the node joins the fleet once it reads");
                *ctx.status.last_error.lock().expect("status") = Some(e.to_string());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut logged_down = false;
    loop {
        let started = Instant::now();
        let err = session(&ctx, &mut mirror, &mut logged_down).await;
        mirror.save(&ctx, true).await;
        let was_up = ctx.status.connected.swap(false, Ordering::Relaxed);
        let text = err.to_string();
        if was_up || !logged_down {
            warn!(node = %ctx.node, "cluster: {text}; the node keeps its lists, queues its own changes and retries");
            logged_down = true;
        } else {
            debug!("cluster: {text}");
        }
        *ctx.status.last_error.lock().expect("status") = Some(text);
        // What waits for etcd, for the metric and `cluster status`.
        if let Ok(state) = with_store(&ctx, |store| store.read_state()).await {
            let pending = local_changes(&state, &mirror, wall_ms()).len();
            ctx.status.pending.store(pending as u64, Ordering::Relaxed);
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        // Jitter, so that a fleet does not come back at the same instant.
        let jitter = Duration::from_millis(fastrand::u64(
            0..=u64::try_from(backoff.as_millis()).unwrap_or(0) / 4,
        ));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        ctx.status.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn etcd_err(ctx: &Ctx, op: &'static str) -> impl FnOnce(etcd_client::Error) -> ClusterError {
    let endpoints = ctx.endpoints.clone();
    move |source| ClusterError::Etcd {
        endpoints,
        op,
        source,
    }
}

async fn connect(ctx: &Ctx) -> Result<Client, ClusterError> {
    let c = &ctx.config;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
    if let Some(user) = &c.user {
        let path = c.password_file.as_ref().expect("checked by the config");
        let password = std::fs::read_to_string(path).map_err(|source| ClusterError::File {
            what: "password file",
            path: path.clone(),
            source,
        })?;
        opts = opts
            .with_user(user, password.trim_end_matches(['\n', '\r']))
            .with_auto_token_refresh(true);
    }
    if c.ca.is_some() || c.cert.is_some() {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| ClusterError::File {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &c.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
        }
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        opts = opts.with_tls(tls);
    }
    Client::connect(&c.endpoints, Some(opts))
        .await
        .map_err(etcd_err(ctx, "connect"))
}

/// What a listing of `<prefix>/` found.
struct Listing {
    entries: BTreeMap<Key, Value>,
    nodes: BTreeMap<String, NodeInfo>,
    /// Purges made by other nodes after revision `since` (the node's last applied).
    purges: Vec<Purge>,
    revision: i64,
    cluster_id: u64,
}

/// Everything under `<prefix>/` at one revision: list entries, node keys, purges made after
/// `since`; and that revision and the cluster's id. Entries that do not parse are logged and
/// skipped.
async fn list_all(ctx: &Ctx, client: &mut Client, since: i64) -> Result<Listing, ClusterError> {
    let root = format!("{}/", ctx.config.prefix);
    let end = prefix_end(root.as_bytes());
    let lists = model::lists_prefix(&ctx.config.prefix);
    let nodes_prefix = format!("{}/nodes/", ctx.config.prefix);
    let purges_prefix = format!("{}/purges/", ctx.config.prefix);
    let mut from = root.clone().into_bytes();
    let (mut revision, mut cluster_id) = (0, 0);
    let mut entries = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let mut purges = Vec::new();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let mut resp = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .get(from.clone(), Some(opts))
            .await
            .map_err(etcd_err(ctx, "list"))?;
        if revision == 0 {
            let h = resp.header();
            revision = h.map_or(0, etcd_client::ResponseHeader::revision);
            cluster_id = h.map_or(0, etcd_client::ResponseHeader::cluster_id);
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        for kv in &kvs {
            if kv.key().starts_with(lists.as_bytes()) {
                match parse_entry(ctx, kv.key(), kv.value()) {
                    Ok((k, v)) => {
                        entries.insert(k, v);
                    }
                    Err(e) => warn!("cluster: skipped: {e}"),
                }
            } else if let Some(name) = kv.key().strip_prefix(nodes_prefix.as_bytes())
                && let Ok(mut n) = serde_json::from_slice::<NodeInfo>(kv.value())
            {
                n.node = String::from_utf8_lossy(name).into_owned();
                nodes.insert(n.node.clone(), n);
            } else if kv.key().starts_with(purges_prefix.as_bytes())
                && kv.create_revision() > since
                && let Some(p) = parse_purge(ctx, kv.key(), kv.value())
            {
                purges.push(p);
            }
        }
        match kvs.last() {
            Some(last) if more => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(Listing {
        entries,
        nodes,
        purges,
        revision,
        cluster_id,
    })
}

/// A purge key's value, unless it is this node's own or does not parse (logged).
fn parse_purge(ctx: &Ctx, key: &[u8], value: &[u8]) -> Option<Purge> {
    let v: PurgeValue = match serde_json::from_slice(value) {
        Ok(v) if value.len() <= MAX_VALUE => v,
        Ok(_) => {
            warn!(key = %String::from_utf8_lossy(key), "cluster: purge skipped: over {MAX_VALUE} bytes");
            return None;
        }
        Err(e) => {
            warn!(key = %String::from_utf8_lossy(key), "cluster: purge skipped: {e}");
            return None;
        }
    };
    if v.origin == ctx.node {
        return None;
    }
    match v.purge() {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(key = %String::from_utf8_lossy(key), "cluster: purge skipped: {e}");
            None
        }
    }
}

/// Applies other nodes' purges to this node's cache (on the blocking pool).
async fn apply_purges(ctx: &Arc<Ctx>, purges: Vec<Purge>) {
    if purges.is_empty() {
        return;
    }
    let cache = ctx.cache.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for p in &purges {
            removed += match p {
                Purge::Url(url) => cache.purge(url),
                Purge::Tags { tags, soft } => cache.purge_tags(tags, *soft),
            };
        }
        (purges.len(), removed)
    })
    .await;
    if let Ok((purges, removed)) = done {
        info!(
            purges,
            removed, "cluster: cache purges from other nodes applied"
        );
    }
}

/// Publishes the purges made here, each under `<prefix>/purges/<node>/<ms>-<serial>` on one
/// [`PURGE_TTL`] lease; what etcd does not take goes back to the queue.
async fn publish_purges(ctx: &Arc<Ctx>, client: &mut Client) -> Result<(), ClusterError> {
    let queued: Vec<Purge> = ctx.purges.lock().expect("purge queue").drain(..).collect();
    if queued.is_empty() {
        return Ok(());
    }
    let requeue = |rest: &[Purge]| {
        let mut q = ctx.purges.lock().expect("purge queue");
        for p in rest.iter().rev() {
            if q.len() < PURGE_QUEUE {
                q.push_front(p.clone());
            }
        }
    };
    let lease = match client.lease_grant(PURGE_TTL, None).await {
        Ok(l) => l.id(),
        Err(e) => {
            requeue(&queued);
            return Err(etcd_err(ctx, "lease grant (purges)")(e));
        }
    };
    // Transactions of at most TXN_OPS purges and TXN_BYTES bytes.
    let mut start = 0;
    while start < queued.len() {
        let now = wall_ms();
        let (mut ops, mut bytes, mut end) = (Vec::new(), 0, start);
        while end < queued.len() && ops.len() < TXN_OPS {
            let serial = ctx.purge_serial.fetch_add(1, Ordering::Relaxed);
            let key = format!("{}/purges/{}/{now}-{serial}", ctx.config.prefix, ctx.node);
            let value =
                serde_json::to_vec(&purge_value(ctx, &queued[end], now)).expect("purge serializes");
            if !ops.is_empty() && bytes + key.len() + value.len() > TXN_BYTES {
                break;
            }
            bytes += key.len() + value.len();
            ops.push(TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            ));
            end += 1;
        }
        if let Err(e) = client.txn(Txn::new().and_then(ops)).await {
            let e = etcd_err(ctx, "transaction (purges)")(e);
            if is_transport(&e) {
                requeue(&queued[start..]);
                return Err(e);
            }
            // Refused (checked for size before queueing, so not for that): these purges
            // are dropped, not retried for ever.
            warn!(
                purges = end - start,
                "cluster: etcd refused purges, which the other nodes will not apply: {e}"
            );
        }
        start = end;
    }
    Ok(())
}

/// A purge as published.
fn purge_value(ctx: &Ctx, purge: &Purge, now: u64) -> PurgeValue {
    let (url, tags, soft) = match purge {
        Purge::Url(u) => (Some(u.clone()), Vec::new(), false),
        Purge::Tags { tags, soft } => (None, tags.clone(), *soft),
    };
    PurgeValue {
        origin: ctx.node.clone(),
        created_ms: now,
        url,
        tags,
        soft,
    }
}

fn parse_entry(ctx: &Ctx, key: &[u8], value: &[u8]) -> Result<(Key, Value), model::ModelError> {
    let k = model::parse_key(&ctx.config.prefix, key)?;
    let v = model::parse_value(&k, key, value)?;
    Ok((k, v))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Runs `f` on the list store on the blocking pool.
async fn with_store<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&mut ListStore) -> Result<T, DefenseError> + Send + 'static,
) -> Result<T, ClusterError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = ctx.store.lock().expect("list store");
        f(&mut store)
    })
    .await
    .map_err(|e| ClusterError::Task(e.to_string()))?
    .map_err(ClusterError::from)
}

/// One connection: list, reconcile, publish, then watch and publish until something fails.
async fn session(ctx: &Arc<Ctx>, mirror: &mut Mirror, logged_down: &mut bool) -> ClusterError {
    match session_inner(ctx, mirror, logged_down).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

/// Lists `<prefix>/`, reconciles the lists with etcd's and publishes what changed only here;
/// returns the listing's revision.
async fn reconcile(
    ctx: &Arc<Ctx>,
    client: &mut Client,
    mirror: &mut Mirror,
) -> Result<i64, ClusterError> {
    let Listing {
        entries: remote,
        nodes,
        purges,
        revision,
        cluster_id,
    } = list_all(ctx, client, mirror.revision).await?;
    let now = wall_ms();
    let base = if mirror.cluster_id != 0 && mirror.cluster_id != cluster_id {
        warn!(
            "cluster: the mirror is of another etcd cluster ({:x}, now {cluster_id:x}); reconciling from an empty base: etcd's entries win",
            mirror.cluster_id
        );
        BTreeMap::new()
    } else {
        mirror.records(now)
    };
    // Reconcile under the state file's lock; the mirror becomes etcd's listing in the same
    // write as the lists, and in memory only once that write succeeded (a failed attempt
    // must leave the old base, or the next one would take etcd's changes for this node's).
    let remote_records: BTreeMap<Key, Record> =
        model::live_only(remote.iter().map(|(k, v)| (*k, v.record())).collect(), now);
    let next = Mirror {
        cluster_id,
        revision,
        entries: remote,
        revs: HashMap::new(),
        dirty: false,
        saved: mirror.saved,
    };
    let file = next.to_file(ctx);
    let (plan, _) = with_store(ctx, move |store| {
        store.edit(|state| {
            let local = model::live_only(model::entries(state), now);
            let plan = model::merge(&base, &local, &remote_records);
            for (k, r) in &plan.local {
                model::set_entry(state, k, r.as_ref());
            }
            state.cluster = Some(file);
            plan
        })
    })
    .await?;
    *mirror = next;
    let taken = plan.local.len();
    let to_publish = plan.publish.len();
    // A change etcd refuses (too large, say) must not keep the node from watching: it is
    // logged and retried, and the watch starts anyway.
    let published = publish(ctx, client, mirror, plan.publish).await;
    refused_or(ctx, published)?;
    mirror.save(ctx, true).await;
    apply_purges(ctx, purges).await;
    let purged = publish_purges(ctx, client).await;
    refused_or(ctx, purged)?;
    let s = &ctx.status;
    s.applied.fetch_add(taken as u64, Ordering::Relaxed);
    s.revision.store(revision, Ordering::Relaxed);
    s.etcd_revision.store(revision, Ordering::Relaxed);
    *s.nodes.lock().expect("status") = nodes;
    s.connected.store(true, Ordering::Relaxed);
    *s.last_error.lock().expect("status") = None;
    info!(
        node = %ctx.node,
        endpoints = %ctx.endpoints,
        revision,
        entries = mirror.entries.len(),
        taken_from_etcd = taken,
        published = to_publish,
        "cluster: connected to etcd and reconciled"
    );
    Ok(revision)
}

async fn session_inner(
    ctx: &Arc<Ctx>,
    mirror: &mut Mirror,
    logged_down: &mut bool,
) -> Result<Never, ClusterError> {
    let mut client = connect(ctx).await?;
    // Taken before reconciling: a change written meanwhile shows as a change at the first poll.
    let mut file_seen = file_id(&ctx.state_path);
    let revision = reconcile(ctx, &mut client, mirror).await?;
    *logged_down = false;

    let root = format!("{}/", ctx.config.prefix);
    let mut watch = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE)
        .watch(
            root.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1)
                    .with_progress_notify(),
            ),
        )
        .await
        .map_err(etcd_err(ctx, "watch"))?;
    // The node key on a task of its own: a long apply or publish never starves its lease.
    let _beats = Aborted(tokio::spawn(node_key(ctx.clone(), client.clone())));
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retry = Instant::now();
    loop {
        tokio::select! {
            msg = watch.message() => {
                let (batch, revision) = gather(ctx, &mut watch, mirror, msg).await?;
                apply_events(ctx, mirror, batch, revision).await?;
                ctx.status.revision.store(mirror.revision, Ordering::Relaxed);
            }
            () = ctx.wake.notified() => {
                file_seen = file_id(&ctx.state_path);
                let published = publish_local(ctx, &mut client, mirror).await;
                refused_or(ctx, published)?;
                let purged = publish_purges(ctx, &mut client).await;
                refused_or(ctx, purged)?;
            }
            _ = poll.tick() => {
                let now_seen = file_id(&ctx.state_path);
                let retry = ctx.status.publish_failed.load(Ordering::Relaxed)
                    && last_retry.elapsed() >= Duration::from_secs(1);
                if now_seen != file_seen || retry {
                    file_seen = now_seen;
                    last_retry = Instant::now();
                    let published = publish_local(ctx, &mut client, mirror).await;
                    refused_or(ctx, published)?;
                }
                mirror.save(ctx, false).await;
            }
        }
    }
}

/// Whether an etcd error is the connection's (unavailable, timed out, transport), not a
/// refusal of what was sent.
fn is_transport(e: &ClusterError) -> bool {
    match e {
        ClusterError::Etcd { source, .. } => match source {
            etcd_client::Error::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
            ),
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
            _ => false,
        },
        _ => true,
    }
}

/// A watch response and what follows it within a moment (at most [`GATHER_MAX`] from the
/// first, and [`GATHER_EVENTS`] events): applied at once, one state file write for a burst.
async fn gather(
    ctx: &Ctx,
    watch: &mut etcd_client::WatchStream,
    mirror: &mut Mirror,
    first: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
) -> Result<(Vec<(EventType, Vec<u8>, Vec<u8>, i64)>, i64), ClusterError> {
    let mut batch = Vec::new();
    let mut revision = mirror.revision;
    let mut next = Some(first);
    let until = tokio::time::Instant::now() + GATHER_MAX;
    while let Some(msg) = next.take() {
        let resp = msg
            .map_err(etcd_err(ctx, "watch"))?
            .ok_or_else(|| ended(ctx, "closed by the server".to_owned()))?;
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(ended(
                ctx,
                format!(
                    "canceled ({}; compacted at {})",
                    resp.cancel_reason(),
                    resp.compact_revision()
                ),
            ));
        }
        if let Some(h) = resp.header() {
            ctx.status
                .etcd_revision
                .fetch_max(h.revision(), Ordering::Relaxed);
            if resp.events().is_empty() && !resp.created() {
                // Progress: nothing before this revision is still to come.
                revision = revision.max(h.revision());
            }
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            revision = revision.max(kv.mod_revision());
            batch.push((
                ev.event_type(),
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.mod_revision(),
            ));
        }
        let wait = GATHER.min(until.saturating_duration_since(tokio::time::Instant::now()));
        if batch.len() < GATHER_EVENTS
            && !wait.is_zero()
            && let Ok(m) = tokio::time::timeout(wait, watch.message()).await
        {
            next = Some(m);
        }
    }
    Ok((batch, revision))
}

fn ended(ctx: &Ctx, reason: String) -> ClusterError {
    ClusterError::WatchEnded {
        endpoints: ctx.endpoints.clone(),
        prefix: format!("{}/", ctx.config.prefix),
        reason,
    }
}

/// A task aborted when this is dropped (with the session that started it).
struct Aborted(tokio::task::JoinHandle<()>);

impl Drop for Aborted {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `<prefix>/nodes/<node>` on a [`NODE_TTL`] lease, rewritten every [`HEARTBEAT`] with
/// the revision this node has applied; starts over (new lease) when something fails.
async fn node_key(ctx: Arc<Ctx>, mut client: Client) {
    loop {
        if let Err(e) = node_key_once(&ctx, &mut client).await {
            debug!("cluster: node key: {e}");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn node_key_once(ctx: &Ctx, client: &mut Client) -> Result<(), ClusterError> {
    let lease = client
        .lease_grant(NODE_TTL, None)
        .await
        .map_err(etcd_err(ctx, "lease grant (node key)"))?
        .id();
    let (mut keeper, mut replies) = client
        .lease_keep_alive(lease)
        .await
        .map_err(etcd_err(ctx, "lease keep-alive (node key)"))?;
    loop {
        let revision = ctx.status.revision.load(Ordering::Relaxed);
        heartbeat(ctx, client, lease, revision).await?;
        tokio::time::sleep(HEARTBEAT).await;
        keeper
            .keep_alive()
            .await
            .map_err(etcd_err(ctx, "lease keep-alive (node key)"))?;
        match replies
            .message()
            .await
            .map_err(etcd_err(ctx, "lease keep-alive (node key)"))?
        {
            Some(r) if r.ttl() > 0 => {}
            _ => return Err(ended(ctx, "the node key's lease expired".to_owned())),
        }
    }
}

/// Writes this node's key: who it is and the revision it has applied.
async fn heartbeat(
    ctx: &Ctx,
    client: &mut Client,
    lease: i64,
    revision: i64,
) -> Result<(), ClusterError> {
    let info = NodeInfo {
        node: ctx.node.clone(),
        revision,
        updated_ms: wall_ms(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    client
        .put(
            format!("{}/nodes/{}", ctx.config.prefix, ctx.node),
            serde_json::to_vec(&info).expect("node info serializes"),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(etcd_err(ctx, "put (node key)"))?;
    Ok(())
}

/// The state file's identity: it is replaced (renamed over) at every write.
fn file_id(path: &Path) -> Option<(u64, u64, u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

/// A batch of watch events by kind: list changes (the last per key, stale ones left out)
/// with their revisions, purges from other nodes; node keys go straight to the status.
#[expect(
    clippy::type_complexity,
    reason = "three plain collections, named where they are taken apart"
)]
fn sort_events(
    ctx: &Ctx,
    mirror: &Mirror,
    batch: Vec<(EventType, Vec<u8>, Vec<u8>, i64)>,
) -> (BTreeMap<Key, Option<Value>>, HashMap<Key, i64>, Vec<Purge>) {
    let lists = model::lists_prefix(&ctx.config.prefix);
    let nodes_prefix = format!("{}/nodes/", ctx.config.prefix);
    let purges_prefix = format!("{}/purges/", ctx.config.prefix);
    // The last event of each key wins.
    let mut changes: BTreeMap<Key, Option<Value>> = BTreeMap::new();
    let mut revs: HashMap<Key, i64> = HashMap::new();
    let mut purges = Vec::new();
    for (kind, key, value, rev) in batch {
        if key.starts_with(purges_prefix.as_bytes()) {
            if kind == EventType::Put
                && let Some(p) = parse_purge(ctx, &key, &value)
            {
                purges.push(p);
            }
        } else if key.starts_with(lists.as_bytes()) {
            let parsed = match kind {
                EventType::Put => parse_entry(ctx, &key, &value).map(|(k, v)| (k, Some(v))),
                EventType::Delete => model::parse_key(&ctx.config.prefix, &key).map(|k| (k, None)),
            };
            match parsed {
                Ok((k, v)) => {
                    let seen = revs.get(&k).or_else(|| mirror.revs.get(&k)).copied();
                    if seen.is_some_and(|r| r >= rev) {
                        debug!(key = %String::from_utf8_lossy(&key), rev, "cluster: stale event skipped");
                        continue;
                    }
                    revs.insert(k, rev);
                    changes.insert(k, v);
                }
                Err(e) => warn!("cluster: skipped: {e}"),
            }
        } else if let Some(name) = key.strip_prefix(nodes_prefix.as_bytes()) {
            let mut nodes = ctx.status.nodes.lock().expect("status");
            match kind {
                EventType::Put => {
                    if let Ok(mut n) = serde_json::from_slice::<NodeInfo>(&value) {
                        n.node = String::from_utf8_lossy(name).into_owned();
                        nodes.insert(n.node.clone(), n);
                    }
                }
                EventType::Delete => {
                    nodes.remove(String::from_utf8_lossy(name).as_ref());
                }
            }
        }
    }
    (changes, revs, purges)
}

/// Applies a batch of watch events: list entries to the lists (unless this node changed the
/// entry and has not published that yet), node keys to the status.
async fn apply_events(
    ctx: &Arc<Ctx>,
    mirror: &mut Mirror,
    batch: Vec<(EventType, Vec<u8>, Vec<u8>, i64)>,
    revision: i64,
) -> Result<(), ClusterError> {
    let (changes, revs, purges) = sort_events(ctx, mirror, batch);
    apply_purges(ctx, purges).await;
    if changes.is_empty() {
        mirror.revs.extend(revs);
        mirror.revision = revision;
        // Written at the next save: purges applied up to here are not applied again after
        // a restart.
        mirror.dirty = true;
        return Ok(());
    }
    let now = wall_ms();
    let work: Vec<(Key, Option<Record>, Option<Record>)> = changes
        .iter()
        .map(|(k, v)| {
            (
                *k,
                mirror.record(k, now),
                model::live(v.as_ref().map(Value::record), now),
            )
        })
        .collect();
    let mut next = Mirror {
        cluster_id: mirror.cluster_id,
        revision,
        entries: mirror.entries.clone(),
        revs: mirror.revs.clone(),
        dirty: false,
        saved: mirror.saved,
    };
    next.revs.extend(revs);
    // Revisions at or below the applied one can no longer come: forget them.
    next.revs.retain(|_, r| *r > revision);
    for (k, v) in changes {
        next.set(k, v);
    }
    let file = next.to_file(ctx);
    let (applied, _) = with_store(ctx, move |store| {
        store.edit(|state| {
            let mut applied = 0u64;
            for (k, base, new) in &work {
                let local = model::live(local_entry(state, k), now);
                if local == *base {
                    if local != *new {
                        model::set_entry(state, k, new.as_ref());
                        applied += 1;
                    }
                } else {
                    debug!(key = %model::key_string("", k), "cluster: a change of this node's own is pending; it goes out next");
                }
            }
            state.cluster = Some(file);
            applied
        })
    })
    .await?;
    ctx.status.applied.fetch_add(applied, Ordering::Relaxed);
    next.dirty = false;
    *mirror = next;
    Ok(())
}

fn local_entry(state: &State, key: &Key) -> Option<Record> {
    match key.list {
        model::List::Block => state.blocklist.get(&key.cidr).cloned().map(Record::Block),
        model::List::Allow => state.allowlist.get(&key.cidr).cloned().map(Record::Allow),
    }
}

/// Every entry whose local version (in force at `now`) differs from the mirror's.
fn local_changes(state: &State, mirror: &Mirror, now: u64) -> Vec<(Key, Option<Record>)> {
    let local = model::live_only(model::entries(state), now);
    let mut changes = Vec::new();
    for (k, r) in &local {
        if mirror.record(k, now).as_ref() != Some(r) {
            changes.push((*k, Some(r.clone())));
        }
    }
    for k in mirror.records(now).keys() {
        if !local.contains_key(k) {
            changes.push((*k, None));
        }
    }
    changes
}

/// Publishes every entry whose local version differs from the mirror's.
async fn publish_local(
    ctx: &Arc<Ctx>,
    client: &mut Client,
    mirror: &mut Mirror,
) -> Result<(), ClusterError> {
    let state = with_store(ctx, |store| store.read_state()).await?;
    let changes = local_changes(&state, mirror, wall_ms());
    ctx.status
        .pending
        .store(changes.len() as u64, Ordering::Relaxed);
    if changes.is_empty() {
        ctx.status.publish_failed.store(false, Ordering::Relaxed);
        return Ok(());
    }
    publish(ctx, client, mirror, changes).await
}

/// A publish's outcome for the session: a connection error ends it (reconnect); a refusal
/// (too large, no space, ...) is logged when it starts and retried every second, and the
/// session goes on watching.
fn refused_or(ctx: &Ctx, result: Result<(), ClusterError>) -> Result<(), ClusterError> {
    match result {
        Err(e) if is_transport(&e) => Err(e),
        Err(e) => {
            if !ctx.status.publish_failed.swap(true, Ordering::Relaxed) {
                warn!("cluster: etcd refused this node's changes ({e}); retrying every second");
            }
            *ctx.status.last_error.lock().expect("status") = Some(e.to_string());
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Writes `changes` to etcd in transactions of at most [`TXN_OPS`] operations and
/// [`TXN_BYTES`] bytes; each transaction's entries go into the mirror once it succeeded.
/// Entries with an expiry share a lease per whole second of TTL (counted when the lease is
/// granted; at most etcd's largest). An entry whose value is over [`MAX_VALUE`] bytes is left
/// out (logged); the leases of a transaction etcd refuses are revoked.
async fn publish(
    ctx: &Arc<Ctx>,
    client: &mut Client,
    mirror: &mut Mirror,
    changes: Vec<(Key, Option<Record>)>,
) -> Result<(), ClusterError> {
    let mut leases: HashMap<i64, i64> = HashMap::new();
    let mut batch = Batch::default();
    let total = changes.len();
    for (key, record) in changes {
        let name = model::key_string(&ctx.config.prefix, &key);
        let Some(r) = record else {
            let size = name.len();
            batch.add(TxnOp::delete(name, None), size, key, None);
            if batch.full() {
                batch.send(ctx, client, mirror, &mut leases).await?;
            }
            continue;
        };
        let value = Value::new(&key, &r, &ctx.node);
        let bytes = serde_json::to_vec(&value).expect("value serializes");
        if bytes.len() > MAX_VALUE {
            warn!(key = %name, bytes = bytes.len(), "cluster: entry not published: its value is over {MAX_VALUE} bytes (shorten its note)");
            continue;
        }
        let now = wall_ms();
        let options = match value.expires_ms {
            // Expired since it was compared: nothing to publish (expiry is etcd's lease's
            // and each node's sweep's business, never a change).
            Some(e) if e <= now => continue,
            Some(e) => {
                // One lease per second of expiry (absolute: entries made at different times
                // with one TTL do not share it), ending no earlier than the entry.
                let second = i64::try_from(e.div_ceil(1000)).unwrap_or(i64::MAX);
                let lease = if let Some(id) = leases.get(&second) {
                    *id
                } else {
                    let ttl = i64::try_from((e - now).div_ceil(1000))
                        .unwrap_or(MAX_LEASE_TTL)
                        .clamp(1, MAX_LEASE_TTL);
                    let id = client
                        .lease_grant(ttl, None)
                        .await
                        .map_err(etcd_err(ctx, "lease grant"))?
                        .id();
                    leases.insert(second, id);
                    batch.leases.push(id);
                    id
                };
                Some(PutOptions::new().with_lease(lease))
            }
            None => None,
        };
        let size = name.len() + bytes.len();
        if batch.would_overflow(size) {
            batch.send(ctx, client, mirror, &mut leases).await?;
        }
        batch.add(TxnOp::put(name, bytes, options), size, key, Some(value));
        if batch.full() {
            batch.send(ctx, client, mirror, &mut leases).await?;
        }
    }
    batch.send(ctx, client, mirror, &mut leases).await?;
    ctx.status.pending.store(0, Ordering::Relaxed);
    ctx.status.publish_failed.store(false, Ordering::Relaxed);
    debug!(changes = total, "cluster: published");
    Ok(())
}

/// One transaction being filled.
#[derive(Default)]
struct Batch {
    ops: Vec<TxnOp>,
    bytes: usize,
    done: Vec<(Key, Option<Value>)>,
    /// Leases granted for this transaction (revoked if etcd refuses it).
    leases: Vec<i64>,
}

impl Batch {
    fn add(&mut self, op: TxnOp, size: usize, key: Key, value: Option<Value>) {
        self.ops.push(op);
        self.bytes += size;
        self.done.push((key, value));
    }

    fn full(&self) -> bool {
        self.ops.len() >= TXN_OPS
    }

    fn would_overflow(&self, size: usize) -> bool {
        !self.ops.is_empty() && self.bytes + size > TXN_BYTES
    }

    async fn send(
        &mut self,
        ctx: &Arc<Ctx>,
        client: &mut Client,
        mirror: &mut Mirror,
        leases: &mut HashMap<i64, i64>,
    ) -> Result<(), ClusterError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let n = self.ops.len() as u64;
        let sent = client
            .txn(Txn::new().and_then(std::mem::take(&mut self.ops)))
            .await
            .map_err(etcd_err(ctx, "transaction"));
        self.bytes = 0;
        let granted = std::mem::take(&mut self.leases);
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.done.clear();
                // Refused: its leases would only linger until their TTL. (Not after a
                // connection error: the transaction may have been committed.)
                if !is_transport(&e) {
                    for id in granted {
                        leases.retain(|_, v| *v != id);
                        let _ = client.lease_revoke(id).await;
                    }
                }
                return Err(e);
            }
        };
        let revision = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        ctx.status
            .etcd_revision
            .fetch_max(revision, Ordering::Relaxed);
        for (k, v) in self.done.drain(..) {
            mirror.revs.insert(k, revision);
            mirror.set(k, v);
        }
        ctx.status.published.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}
