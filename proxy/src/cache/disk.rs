//! The disk tier: one file per stored response, as nginx's `proxy_cache_path` keeps them.
//!
//! - Every response the memory tier stores is also written here (write-through, by one writer
//!   thread, off the request path), so the cache survives a restart and `kill -9`; responses
//!   larger than `memory_max_object_bytes` live here only. A memory miss looks here before
//!   the origin and brings what it finds back into memory.
//! - A file is written under `tmp/` and renamed into `objects/<xx>/<generation>`: a reader
//!   never sees half a file under its final name. Each file carries its key and two CRC-32
//!   checksums (metadata, body); a file that is short, damaged or not ours is never served:
//!   it is deleted, counted and logged, and the request goes to the origin.
//! - The index (key → file) lives in memory and is rebuilt at start-up from the files'
//!   headers. It is a byte-weighted moka cache bounded by `max_bytes`: what it evicts or
//!   expires, its listener deletes.
//! - A write that fails (disk full, unwritable) is dropped: the memory tier serves on, the
//!   failure is counted and logged once per change of state.
//!
//! Why not foyer (the hybrid-cache crate the issue suggests): its disk engine indexes hashes,
//! not keys, and gives no way to list what it holds after a restart, so purges by URL
//! prefix and by tag could not reach what is on disk; and its memory tier would replace the
//! moka one whose per-object expiry, weigher and compute API the cache relies on.
use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hyper::{HeaderMap, StatusCode, header::HeaderName, header::HeaderValue};
use tracing::{debug, info, warn};

use super::{Object, control::Directives};

const MAGIC: &[u8; 8] = b"PXCACHE1";
const HEAD_LEN: usize = 32;
/// Header fields of one stored response at most (far above what the request path admits).
const MAX_HEADERS: usize = 4096;
/// Writes waiting for the writer thread, in bytes, at most; past that a write is skipped.
const MAX_QUEUED_BYTES: u64 = 64 << 20;
/// How long a `Vary` marker is kept on disk (the variants it leads to have their own time).
const MARKER_KEEP: Duration = Duration::from_hours(720);

/// What a file holds.
#[derive(Debug, Clone)]
pub enum Item {
    Object(Arc<Object>),
    Vary {
        names: Arc<[HeaderName]>,
        epoch: u64,
    },
}

/// Why a file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a cache file (bad magic number)")]
    Magic,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("{0} checksum mismatch")]
    Checksum(&'static str),
    #[error("bad {0}")]
    Field(&'static str),
}

/// A decoded file.
#[derive(Debug)]
pub struct Stored {
    pub key: String,
    pub keep_until: SystemTime,
    pub tags: Box<[Box<str>]>,
    pub item: Item,
}

/// One indexed file.
#[derive(Debug)]
pub struct Entry {
    generation: u64,
    bytes: u32,
    keep_until: SystemTime,
    tags: Box<[Box<str>]>,
    /// A `Vary` marker, not a response.
    marker: bool,
    /// The number of invalidations and purges issued when its write was queued: one issued
    /// later may apply to it, and until the writer has applied it the entry is not used.
    stamp: u64,
    /// A soft purge made the object stale at this time (nanoseconds since the epoch; 0:
    /// none) until the writer rewrites its file stale.
    stale_at: AtomicU64,
}

/// Counters of the disk tier (since start).
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Lookups answered from a file.
    pub hits: AtomicU64,
    pub writes: AtomicU64,
    pub write_errors: AtomicU64,
    /// Writes skipped because the writer was too far behind.
    pub write_skipped: AtomicU64,
    /// Files found damaged (checksum, truncation, format) or unreadable; never served.
    pub corrupt: AtomicU64,
    /// Files removed to stay within `max_bytes`.
    pub evictions: AtomicU64,
}

type Matcher = Box<dyn Fn(&str, &Entry) -> bool + Send>;

enum Op {
    Put {
        key: String,
        generation: u64,
        keep_until: SystemTime,
        item: Item,
        queued: u64,
        stamp: u64,
    },
    Delete(u64),
    /// Removes `key`'s entry, made by a put queued before (invalidation `number`).
    Invalidate {
        key: String,
        number: u64,
    },
    /// Removes entries matching (hard), or rewrites them stale as of the time with the
    /// generations reserved for them (soft), after the puts queued before it (purge
    /// `number`).
    Purge {
        matches: Matcher,
        soft: Option<(SystemTime, std::ops::Range<u64>)>,
        number: u64,
    },
    Flush(mpsc::SyncSender<()>),
}

/// The disk tier.
pub struct Disk {
    root: PathBuf,
    index: moka::sync::Cache<String, Arc<Entry>>,
    tx: mpsc::Sender<Op>,
    rx: Mutex<Option<mpsc::Receiver<Op>>>,
    /// Disk-only responses queued for writing: found here until their file is.
    pending: Mutex<HashMap<String, Arc<Object>>>,
    queued_bytes: AtomicU64,
    next_generation: AtomicU64,
    failing: AtomicBool,
    /// Invalidations and purges issued (each numbered, sent in order under `purge_lock`),
    /// and how many of them the writer has applied. A read that overlaps one does not
    /// bring its object back into memory.
    pub invalidations: AtomicU64,
    applied: AtomicU64,
    purge_lock: Mutex<()>,
    /// The highest `Vary` epoch found on disk at start-up.
    pub highest_epoch: AtomicU64,
    pub max_bytes: u64,
    pub memory_max_object_bytes: u64,
    /// Files up to this size (in 4 KiB blocks) are read on the worker, larger ones on the
    /// blocking pool.
    pub inline_read_max_bytes: u64,
    pub stats: Arc<DiskStats>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The directory of a generation's file.
fn object_path(root: &Path, generation: u64) -> PathBuf {
    root.join("objects")
        .join(format!("{:02x}", generation & 0xff))
        .join(format!("{generation:016x}"))
}

/// The weight of a file: the 4 KiB blocks it takes.
fn blocks(len: u64) -> u32 {
    u32::try_from(len.div_ceil(4096).saturating_mul(4096)).unwrap_or(u32::MAX)
}

/// A directory of the store, created if missing; a symbolic link or anything but a
/// directory is refused (a root-run daemon must not follow links into other directories).
fn ensure_dir(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a directory (a symbolic link or a file): remove it, or choose another cache.disk.path",
                p.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(p)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", p.display()))),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
    }
}

/// Regular files in `dir` (links and the rest left alone).
fn files_in(dir: &Path) -> io::Result<impl Iterator<Item = fs::DirEntry>> {
    Ok(fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .flatten()
        .filter(|f| f.file_type().is_ok_and(|t| t.is_file())))
}

impl Disk {
    /// Opens (creating it if needed) the store under `root`; [`Disk::load`] indexes it.
    ///
    /// # Errors
    /// A directory of the store cannot be created, or is a link or not a directory.
    pub fn open(root: &Path, c: &crate::config::CacheDisk) -> io::Result<Arc<Self>> {
        ensure_dir(root)?;
        ensure_dir(&root.join("tmp"))?;
        ensure_dir(&root.join("objects"))?;
        for b in 0..=255u8 {
            ensure_dir(&root.join("objects").join(format!("{b:02x}")))?;
        }
        let stats = Arc::new(DiskStats::default());
        let (tx, rx) = mpsc::channel::<Op>();
        let deleter = tx.clone();
        let evicted = stats.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(c.max_bytes)
            .weigher(|_k: &String, e: &Arc<Entry>| e.bytes)
            .expire_after(KeepUntil)
            .eviction_listener(move |_k, e: Arc<Entry>, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evicted.evictions.fetch_add(1, Ordering::Relaxed);
                }
                let _ = deleter.send(Op::Delete(e.generation));
            })
            .build();
        Ok(Arc::new(Self {
            root: root.to_owned(),
            index,
            tx,
            rx: Mutex::new(Some(rx)),
            pending: Mutex::new(HashMap::new()),
            queued_bytes: AtomicU64::new(0),
            next_generation: AtomicU64::new(nanos(SystemTime::now())),
            failing: AtomicBool::new(false),
            invalidations: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            purge_lock: Mutex::new(()),
            highest_epoch: AtomicU64::new(0),
            max_bytes: c.max_bytes,
            memory_max_object_bytes: c.memory_max_object_bytes,
            inline_read_max_bytes: c.inline_read_max_bytes,
            stats,
        }))
    }

    /// Indexes every file (reading only headers and metadata), removes what is damaged,
    /// expired or half-written, then starts the writer. Called once, after the daemon
    /// dropped its privileges and before it serves.
    ///
    /// # Errors
    /// A directory of the store cannot be read, or the writer thread cannot start.
    pub fn load(self: &Arc<Self>) -> io::Result<()> {
        let Some(rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(()); // loaded already
        };
        let started = std::time::Instant::now();
        for f in files_in(&self.root.join("tmp"))? {
            let _ = fs::remove_file(f.path());
        }
        let now = SystemTime::now();
        let (mut damaged, mut highest) = (0u64, 0u64);
        for b in 0..=255u8 {
            let dir = self.root.join("objects").join(format!("{b:02x}"));
            for f in files_in(&dir)? {
                let path = f.path();
                // Exactly 16 hex digits, in the directory of its low byte: anything else is
                // not ours and is left alone.
                let generation = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| n.len() == 16 && n.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
                    .filter(|g| g & 0xff == u64::from(b) && *g < u64::MAX / 2);
                let Some(generation) = generation else {
                    continue;
                };
                highest = highest.max(generation);
                match read_head(&path) {
                    Ok((stored, len)) if stored.keep_until > now => {
                        if let Item::Vary { epoch, .. } = &stored.item {
                            self.highest_epoch.fetch_max(*epoch, Ordering::Relaxed);
                        }
                        let entry = Arc::new(Entry {
                            generation,
                            bytes: blocks(len),
                            keep_until: stored.keep_until,
                            tags: stored.tags,
                            marker: matches!(stored.item, Item::Vary { .. }),
                            stamp: 0,
                            stale_at: AtomicU64::new(0),
                        });
                        // Of two files for one key, the later generation wins (the
                        // listener removes the other).
                        let kept = self.index.entry(stored.key).and_compute_with(|cur| {
                            match cur.map(moka::Entry::into_value) {
                                Some(c) if c.generation > generation => moka::ops::compute::Op::Nop,
                                _ => moka::ops::compute::Op::Put(entry),
                            }
                        });
                        if matches!(kept, moka::ops::compute::CompResult::Unchanged(_)) {
                            let _ = fs::remove_file(&path);
                        }
                    }
                    Ok(_) => {
                        let _ = fs::remove_file(&path);
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "disk cache: removing a damaged file");
                        damaged += 1;
                        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        self.next_generation
            .fetch_max(highest.saturating_add(1), Ordering::Relaxed);
        self.index.run_pending_tasks();
        info!(
            path = %self.root.display(),
            objects = self.index.entry_count(),
            damaged,
            bytes = self.index.weighted_size(),
            ms = started.elapsed().as_millis(),
            "disk cache loaded"
        );
        let writer = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cache-disk".into())
            .spawn(move || write_loop(&writer, &rx))?;
        Ok(())
    }

    /// Files and bytes (in 4 KiB blocks) indexed.
    #[must_use]
    pub fn usage(&self) -> (u64, u64) {
        self.index.run_pending_tasks();
        (self.index.entry_count(), self.index.weighted_size())
    }

    /// Every counter and gauge by name (the admin API's names).
    #[must_use]
    pub fn snapshot(&self) -> [(&'static str, u64); 9] {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (entries, bytes) = self.usage();
        [
            ("entries", entries),
            ("bytes", bytes),
            ("max_bytes", self.max_bytes),
            ("hits", n(&self.stats.hits)),
            ("writes", n(&self.stats.writes)),
            ("write_errors", n(&self.stats.write_errors)),
            ("write_skipped", n(&self.stats.write_skipped)),
            ("corrupt", n(&self.stats.corrupt)),
            ("evictions", n(&self.stats.evictions)),
        ]
    }

    /// Whether a response of `body_len` bytes stays on disk only.
    #[must_use]
    pub fn disk_only(&self, body_len: usize) -> bool {
        body_len as u64 > self.memory_max_object_bytes
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Object>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item` to be written under `key`; it is findable once written (a disk-only
    /// response at once).
    pub fn put(&self, key: &str, item: Item) {
        let (queued, keep_until) = match &item {
            // `keep` counts from the response time (as `Object::stale_copy` does).
            Item::Object(o) => (o.body.len() as u64 + 4096, o.response_time + o.keep),
            Item::Vary { .. } => (256, SystemTime::now() + MARKER_KEEP),
        };
        let before = self.queued_bytes.fetch_add(queued, Ordering::Relaxed);
        // An empty queue takes any one response, however large.
        if before > 0 && before + queued > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
            self.stats.write_skipped.fetch_add(1, Ordering::Relaxed);
            // An older copy on disk must not outlive this newer one.
            self.invalidate(key);
            return;
        }
        if let Item::Object(o) = &item
            && self.disk_only(o.body.len())
        {
            self.pending().insert(key.to_owned(), o.clone());
        }
        let op = Op::Put {
            key: key.to_owned(),
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            keep_until,
            item,
            queued,
            stamp: self.invalidations.load(Ordering::Acquire),
        };
        let _ = self.tx.send(op);
    }

    /// Whether an invalidation or purge the writer has not applied yet may concern `e`.
    fn maybe_doomed(&self, e: &Entry) -> bool {
        let issued = self.invalidations.load(Ordering::Acquire);
        issued > e.stamp.max(self.applied.load(Ordering::Acquire))
    }

    /// Reads what is stored for `key`, if anything usable is. A damaged file is removed.
    pub async fn get(self: &Arc<Self>, key: &str) -> Option<Item> {
        if let Some(o) = self.pending().get(key) {
            return Some(Item::Object(o.clone()));
        }
        let entry = self.index.get(key)?;
        if self.maybe_doomed(&entry) {
            return None;
        }
        let path = object_path(&self.root, entry.generation);
        // Small files are read on the worker, as nginx reads without `aio`: from the page
        // cache that costs microseconds, where a hand-off to the blocking pool costs two
        // context switches (measured: 2.2x the hits per second of a 1 KiB object).
        let read = if u64::from(entry.bytes) <= self.inline_read_max_bytes {
            Ok(read_file(&path))
        } else {
            tokio::task::spawn_blocking(move || read_file(&path)).await
        };
        let stored = match read {
            Ok(Ok(s)) if s.key == key => s,
            Ok(Ok(_)) => {
                self.damaged(key, &entry, "the file holds another key");
                return None;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                self.damaged(key, &entry, &e.to_string());
                return None;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Replaced and removed meanwhile, or removed behind our back.
                self.forget(key, &entry);
                return None;
            }
            Ok(Err(e)) => {
                debug!(key, error = %e, "disk cache: cannot read a file; fetching instead");
                return None;
            }
            Err(_) => return None,
        };
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        match stored.item {
            Item::Object(o) => {
                let mut o = Arc::unwrap_or_clone(o);
                o.keep = stored
                    .keep_until
                    .duration_since(o.response_time)
                    .unwrap_or_default();
                let at = entry.stale_at.load(Ordering::Relaxed);
                if at != 0 {
                    o = o.stale_copy(from_nanos(at));
                }
                Some(Item::Object(Arc::new(o)))
            }
            vary @ Item::Vary { .. } => Some(vary),
        }
    }

    fn damaged(&self, key: &str, entry: &Arc<Entry>, why: &str) {
        warn!(
            file = %object_path(&self.root, entry.generation).display(),
            error = why,
            "disk cache: a damaged file was not served; removing it"
        );
        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
        self.forget(key, entry);
    }

    /// Removes `key`'s index entry if it is still `entry`.
    fn forget(&self, key: &str, entry: &Arc<Entry>) {
        let generation = entry.generation;
        self.index
            .entry(key.to_owned())
            .and_compute_with(|cur| match cur {
                Some(c) if c.value().generation == generation => moka::ops::compute::Op::Remove,
                _ => moka::ops::compute::Op::Nop,
            });
    }

    /// Numbers an invalidation or purge and queues its writer's part, in number order.
    fn issue(&self, op: impl FnOnce(u64) -> Op) {
        let _order = self
            .purge_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let number = self.invalidations.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.tx.send(op(number));
    }

    /// Removes `key`'s file, and the one a queued write would make.
    pub fn invalidate(&self, key: &str) {
        self.pending().remove(key);
        self.index.invalidate(key);
        let key = key.to_owned();
        self.issue(|number| Op::Invalidate { key, number });
    }

    /// Whether a file is indexed for `key`.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Removes every entry whose key `matches`; returns the keys of the responses removed
    /// (`Vary` markers go too, uncounted).
    pub fn purge_keys(&self, matches: impl Fn(&str) -> bool + Send + 'static) -> Vec<String> {
        self.pending().retain(|k, _| !matches(k));
        let doomed: Vec<(Arc<String>, Arc<Entry>)> =
            self.index.iter().filter(|(k, _)| matches(k)).collect();
        for (k, _) in &doomed {
            self.index.invalidate(k.as_str());
        }
        self.issue(|number| Op::Purge {
            matches: Box::new(move |k, _| matches(k)),
            soft: None,
            number,
        });
        doomed
            .into_iter()
            .filter(|(_, e)| !e.marker)
            .map(|(k, _)| (*k).clone())
            .collect()
    }

    /// Purges every object carrying one of `tags`: removed, or stale from `soft`'s time on.
    /// Returns the keys purged.
    pub fn purge_tags(
        &self,
        tags: &Arc<std::collections::HashSet<String>>,
        soft: Option<SystemTime>,
    ) -> Vec<String> {
        let has = {
            let tags = tags.clone();
            move |e: &Entry| e.tags.iter().any(|t| tags.contains(&**t))
        };
        let mut keys: Vec<String> = Vec::new();
        self.pending().retain(|k, o| {
            let hit = o.tags.iter().any(|t| tags.contains(&**t));
            if hit {
                keys.push(k.clone());
            }
            !hit
        });
        let doomed: Vec<(String, Arc<Entry>)> = self
            .index
            .iter()
            .filter(|(_, e)| has(e))
            .map(|(k, e)| ((*k).clone(), e))
            .collect();
        for (k, e) in &doomed {
            match soft {
                Some(at) => e.stale_at.store(nanos(at), Ordering::Relaxed),
                None => self.index.invalidate(k),
            }
        }
        // Generations for the stale rewrites, taken now: a response stored after the purge
        // gets a later one and wins over the rewrite, also after a crash.
        let count = doomed.len() as u64;
        let soft = soft.map(|at| {
            let first = self.next_generation.fetch_add(count, Ordering::Relaxed);
            (at, first..first + count)
        });
        self.issue(|number| Op::Purge {
            matches: Box::new(move |_, e| has(e)),
            soft,
            number,
        });
        keys.extend(doomed.into_iter().map(|(k, _)| k));
        keys
    }

    /// Waits (at most `timeout`) until every write queued so far is done.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        if self.tx.send(Op::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    /// Gives the directories and files to the account the daemon drops to (before
    /// [`Disk::load`]).
    ///
    /// # Errors
    /// A path cannot be handed over.
    pub fn hand_over(&self, account: crate::privileges::Account) -> io::Result<()> {
        let mut paths = vec![
            self.root.clone(),
            self.root.join("tmp"),
            self.root.join("objects"),
        ];
        for b in 0..=255u8 {
            let dir = self.root.join("objects").join(format!("{b:02x}"));
            paths.extend(files_in(&dir)?.map(|f| f.path()));
            paths.push(dir);
        }
        paths.extend(files_in(&self.root.join("tmp"))?.map(|f| f.path()));
        for p in paths {
            crate::safe_fs::hand_over(&p, account)?;
        }
        Ok(())
    }

    fn write(
        &self,
        key: &str,
        generation: u64,
        keep_until: SystemTime,
        item: &Item,
    ) -> io::Result<u64> {
        let tmp = self.root.join("tmp").join(format!("{generation:016x}"));
        let result = (|| {
            let (head, body) = encode(key, keep_until, item);
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&head)?;
            f.write_all(&body)?;
            drop(f);
            fs::rename(&tmp, object_path(&self.root, generation))?;
            Ok((head.len() + body.len()) as u64)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn wrote(&self, result: &io::Result<u64>) {
        match result {
            Ok(_) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!(path = %self.root.display(), "disk cache: writes succeed again");
                }
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(path = %self.root.display(), error = %e, "disk cache: writes fail; serving from memory only until they succeed (see proxy_cache_disk_write_errors_total)");
                }
            }
        }
    }

    /// The writer's part of a put.
    fn write_put(
        &self,
        key: &str,
        generation: u64,
        keep_until: SystemTime,
        item: &Item,
        stamp: u64,
    ) {
        let result = self.write(key, generation, keep_until, item);
        self.wrote(&result);
        match result {
            Ok(bytes) => {
                let (tags, marker) = match item {
                    Item::Object(o) => (o.tags.clone(), false),
                    Item::Vary { .. } => (Box::default(), true),
                };
                self.index.insert(
                    key.to_owned(),
                    Arc::new(Entry {
                        generation,
                        bytes: blocks(bytes),
                        keep_until,
                        tags,
                        marker,
                        stamp,
                        stale_at: AtomicU64::new(0),
                    }),
                );
            }
            // The file of an older response must not answer for this one.
            Err(_) => self.index.invalidate(key),
        }
        if let Item::Object(o) = item {
            let mut pending = self.pending();
            if pending.get(key).is_some_and(|p| Arc::ptr_eq(p, o)) {
                pending.remove(key);
            }
        }
    }

    /// The writer's part of a purge: entries made by puts queued before it, and the stale
    /// rewrites of a soft purge.
    fn purge_queued(&self, matches: &Matcher, soft: Option<(SystemTime, std::ops::Range<u64>)>) {
        let doomed: Vec<(Arc<String>, Arc<Entry>)> =
            self.index.iter().filter(|(k, e)| matches(k, e)).collect();
        let (at, mut generations) = match soft {
            Some((at, g)) => (Some(at), g),
            None => (None, 0..0),
        };
        for (k, e) in doomed {
            // Hard, or more to rewrite than generations reserved (puts that were queued).
            let (Some(at), Some(generation)) = (at, generations.next()) else {
                self.index.invalidate(k.as_str());
                continue;
            };
            let Ok(stored) = read_file(&object_path(&self.root, e.generation)) else {
                self.index.invalidate(k.as_str());
                continue;
            };
            let Item::Object(o) = stored.item else {
                continue;
            };
            let stale = Item::Object(Arc::new(o.stale_copy(at)));
            let result = self.write(&k, generation, stored.keep_until, &stale);
            self.wrote(&result);
            let Ok(bytes) = result else {
                self.index.invalidate(k.as_str());
                continue;
            };
            let new = Arc::new(Entry {
                generation,
                bytes: blocks(bytes),
                keep_until: stored.keep_until,
                tags: stored.tags,
                marker: false,
                stamp: e.stamp,
                stale_at: AtomicU64::new(0),
            });
            let r = self
                .index
                .entry(k.as_str().to_owned())
                .and_compute_with(|cur| match cur {
                    Some(c) if c.value().generation == e.generation => {
                        moka::ops::compute::Op::Put(new)
                    }
                    _ => moka::ops::compute::Op::Nop,
                });
            if matches!(
                r,
                moka::ops::compute::CompResult::Unchanged(_)
                    | moka::ops::compute::CompResult::StillNone(_)
            ) {
                let _ = fs::remove_file(object_path(&self.root, generation));
            }
        }
    }
}

fn write_loop(disk: &std::sync::Weak<Disk>, rx: &mpsc::Receiver<Op>) {
    while let Ok(op) = rx.recv() {
        let Some(disk) = disk.upgrade() else { return };
        match op {
            Op::Put {
                key,
                generation,
                keep_until,
                item,
                queued,
                stamp,
            } => {
                disk.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
                disk.write_put(&key, generation, keep_until, &item, stamp);
            }
            Op::Delete(generation) => {
                let _ = fs::remove_file(object_path(&disk.root, generation));
            }
            Op::Invalidate { key, number } => {
                disk.index.invalidate(&key);
                disk.applied.store(number, Ordering::Release);
            }
            Op::Purge {
                matches,
                soft,
                number,
            } => {
                disk.purge_queued(&matches, soft);
                disk.applied.store(number, Ordering::Release);
            }
            Op::Flush(done) => {
                disk.index.run_pending_tasks();
                let _ = done.send(());
            }
        }
    }
}

/// The index keeps an entry until its object's `keep` ends.
struct KeepUntil;

impl moka::Expiry<String, Arc<Entry>> for KeepUntil {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            value
                .keep_until
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        )
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Arc<Entry>,
        now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

// The file format (little-endian):
//   0  magic "PXCACHE1"
//   8  metadata length u32, 12 metadata CRC-32 u32
//  16  body length u64, 24 body CRC-32 u32, 28 zero u32
//  32  metadata, then the body.
// Metadata: kind u8 (0 object, 1 vary marker), key, keep-until (ns since the epoch); an
// object: status u16, response time ns, initial age ns, lifetime ns, stale-while-revalidate
// ns, stale-if-error ns, flags u8 (for_this_cache), directives, vary names, tags, headers;
// a marker: epoch u64, names. Strings and byte strings are a u32 length then the bytes;
// lists a u32 count then the items.

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn duration(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    fn opt(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    fn names(&mut self, names: &[HeaderName]) {
        self.u32(u32::try_from(names.len()).unwrap_or(u32::MAX));
        for n in names {
            self.bytes(n.as_str().as_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn duration(&mut self, what: &'static str) -> Result<Duration, DecodeError> {
        Ok(Duration::from_nanos(self.u64(what)?))
    }
    fn opt(&mut self, what: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.u64(what)?)),
            _ => Err(DecodeError::Field(what)),
        }
    }
    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        // Every item takes at least 4 bytes: a count larger than that is a lie.
        if n > self.0.len() / 4 {
            return Err(DecodeError::Field(what));
        }
        Ok(n)
    }
    fn names(&mut self, what: &'static str) -> Result<Vec<HeaderName>, DecodeError> {
        let n = self.count(what)?;
        (0..n)
            .map(|_| {
                HeaderName::from_bytes(self.bytes(what)?).map_err(|_| DecodeError::Field(what))
            })
            .collect()
    }
}

const FLAGS: [fn(&Directives) -> bool; 8] = [
    |d| d.no_store,
    |d| d.no_cache,
    |d| d.private,
    |d| d.public,
    |d| d.must_revalidate,
    |d| d.proxy_revalidate,
    |d| d.must_understand,
    |d| d.targeted,
];

fn encode_directives(w: &mut Writer, d: &Directives) {
    let mut flags = 0u8;
    for (i, f) in FLAGS.iter().enumerate() {
        if f(d) {
            flags |= 1 << i;
        }
    }
    w.u8(flags);
    w.opt(d.max_age);
    w.opt(d.s_maxage);
    w.opt(d.stale_while_revalidate);
    w.opt(d.stale_if_error);
    w.names(&d.no_cache_fields);
    w.names(&d.private_fields);
}

fn decode_directives(r: &mut Reader<'_>) -> Result<Directives, DecodeError> {
    let flags = r.u8("directives")?;
    let bit = |i: u8| flags & (1 << i) != 0;
    Ok(Directives {
        no_store: bit(0),
        no_cache: bit(1),
        private: bit(2),
        public: bit(3),
        must_revalidate: bit(4),
        proxy_revalidate: bit(5),
        must_understand: bit(6),
        targeted: bit(7),
        max_age: r.opt("max-age")?,
        s_maxage: r.opt("s-maxage")?,
        stale_while_revalidate: r.opt("stale-while-revalidate")?,
        stale_if_error: r.opt("stale-if-error")?,
        no_cache_fields: r.names("no-cache fields")?,
        private_fields: r.names("private fields")?,
        ..Directives::default()
    })
}

/// The file's head (fixed part and metadata) and its body.
#[must_use]
pub fn encode(key: &str, keep_until: SystemTime, item: &Item) -> (Vec<u8>, Bytes) {
    let mut w = Writer(Vec::with_capacity(512));
    let body = match item {
        Item::Object(o) => {
            w.u8(0);
            w.bytes(key.as_bytes());
            w.u64(nanos(keep_until));
            w.u16(o.status.as_u16());
            w.u64(nanos(o.response_time));
            w.duration(o.initial_age);
            w.duration(o.lifetime);
            w.duration(o.swr);
            w.duration(o.sie);
            w.u8(u8::from(o.for_this_cache));
            encode_directives(&mut w, &o.cc);
            w.names(&o.vary);
            w.u32(u32::try_from(o.tags.len()).unwrap_or(u32::MAX));
            for t in &o.tags {
                w.bytes(t.as_bytes());
            }
            w.u32(u32::try_from(o.headers.len()).unwrap_or(u32::MAX));
            for (n, v) in &o.headers {
                w.bytes(n.as_str().as_bytes());
                w.bytes(v.as_bytes());
            }
            o.body.clone()
        }
        Item::Vary { names, epoch } => {
            w.u8(1);
            w.bytes(key.as_bytes());
            w.u64(nanos(keep_until));
            w.u64(*epoch);
            w.names(names);
            Bytes::new()
        }
    };
    let meta = w.0;
    let mut head = Vec::with_capacity(HEAD_LEN + meta.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_le_bytes());
    head.extend_from_slice(&crc(&meta).to_le_bytes());
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(&crc(&body).to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&meta);
    (head, body)
}

/// The fixed part: (metadata length, metadata CRC, body length, body CRC).
fn parse_fixed(fixed: &[u8]) -> Result<(usize, u32, u64, u32), DecodeError> {
    if fixed.len() < HEAD_LEN {
        return Err(DecodeError::Truncated("header"));
    }
    if &fixed[..8] != MAGIC {
        return Err(DecodeError::Magic);
    }
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    let meta_len = u32_at(8) as usize;
    let body_len = u64::from_le_bytes(fixed[16..24].try_into().expect("8 bytes"));
    if u32_at(28) != 0 {
        return Err(DecodeError::Field("reserved header bytes"));
    }
    Ok((meta_len, u32_at(12), body_len, u32_at(24)))
}

/// Decodes a whole file (checking both checksums).
///
/// # Errors
/// The data is not a complete, undamaged cache file.
pub fn decode(data: &[u8]) -> Result<Stored, DecodeError> {
    decode_owned(&Bytes::copy_from_slice(data))
}

/// [`decode`] of a file read whole; the body shares its bytes.
fn decode_owned(data: &Bytes) -> Result<Stored, DecodeError> {
    let (meta_len, meta_crc, body_len, body_crc) = parse_fixed(data)?;
    let rest = &data[HEAD_LEN..];
    if rest.len() < meta_len {
        return Err(DecodeError::Truncated("metadata"));
    }
    let (meta, body) = rest.split_at(meta_len);
    if crc(meta) != meta_crc {
        return Err(DecodeError::Checksum("metadata"));
    }
    if body.len() as u64 != body_len {
        return Err(DecodeError::Truncated("body"));
    }
    if crc(body) != body_crc {
        return Err(DecodeError::Checksum("body"));
    }
    let body = data.slice(HEAD_LEN + meta_len..);
    decode_meta(&data[HEAD_LEN..HEAD_LEN + meta_len], body)
}

fn decode_meta(meta: &[u8], body: Bytes) -> Result<Stored, DecodeError> {
    let mut r = Reader(meta);
    let kind = r.u8("kind")?;
    let key = std::str::from_utf8(r.bytes("key")?)
        .map_err(|_| DecodeError::Field("key"))?
        .to_owned();
    let keep_until = from_nanos(r.u64("keep-until")?);
    let (item, tags) = match kind {
        0 => {
            let status =
                StatusCode::from_u16(r.u16("status")?).map_err(|_| DecodeError::Field("status"))?;
            let response_time = from_nanos(r.u64("response time")?);
            let initial_age = r.duration("initial age")?;
            let lifetime = r.duration("lifetime")?;
            let swr = r.duration("stale-while-revalidate")?;
            let sie = r.duration("stale-if-error")?;
            let for_this_cache = r.u8("flags")? & 1 != 0;
            let cc = decode_directives(&mut r)?;
            let vary = r.names("vary")?;
            let n = r.count("tags")?;
            let tags: Box<[Box<str>]> = (0..n)
                .map(|_| {
                    std::str::from_utf8(r.bytes("tag")?)
                        .map(Into::into)
                        .map_err(|_| DecodeError::Field("tag"))
                })
                .collect::<Result<_, _>>()?;
            let n = r.count("headers")?;
            if n > MAX_HEADERS {
                return Err(DecodeError::Field("header count"));
            }
            let mut headers = HeaderMap::new();
            for _ in 0..n {
                let name = HeaderName::from_bytes(r.bytes("header name")?)
                    .map_err(|_| DecodeError::Field("header name"))?;
                let value = HeaderValue::from_bytes(r.bytes("header value")?)
                    .map_err(|_| DecodeError::Field("header value"))?;
                headers
                    .try_append(name, value)
                    .map_err(|_| DecodeError::Field("header count"))?;
            }
            let object = Object {
                status,
                headers,
                body,
                response_time,
                initial_age,
                lifetime,
                cc,
                swr,
                sie,
                keep: Duration::ZERO,
                vary,
                tags: tags.clone(),
                for_this_cache,
            };
            (Item::Object(Arc::new(object)), tags)
        }
        1 => {
            let epoch = r.u64("epoch")?;
            let names = r.names("vary")?;
            (
                Item::Vary {
                    names: names.into(),
                    epoch,
                },
                Box::default(),
            )
        }
        _ => return Err(DecodeError::Field("kind")),
    };
    if !r.0.is_empty() {
        return Err(DecodeError::Field("trailing metadata"));
    }
    Ok(Stored {
        key,
        keep_until,
        tags,
        item,
    })
}

fn corrupt(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn read_file(path: &Path) -> io::Result<Stored> {
    let data = fs::read(path)?;
    decode_owned(&Bytes::from(data)).map_err(corrupt)
}

/// The metadata of a file (checked), without reading its body, and the file's length
/// (checked against the lengths the header gives).
fn read_head(path: &Path) -> io::Result<(Stored, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut fixed = [0u8; HEAD_LEN];
    f.read_exact(&mut fixed)
        .map_err(|_| corrupt(DecodeError::Truncated("header")))?;
    let (meta_len, meta_crc, body_len, _) = parse_fixed(&fixed).map_err(corrupt)?;
    if (HEAD_LEN as u64 + meta_len as u64).checked_add(body_len) != Some(len) {
        return Err(corrupt(DecodeError::Truncated("file length")));
    }
    let mut meta = vec![0u8; meta_len];
    f.read_exact(&mut meta)?;
    if crc(&meta) != meta_crc {
        return Err(corrupt(DecodeError::Checksum("metadata")));
    }
    Ok((decode_meta(&meta, Bytes::new()).map_err(corrupt)?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Object {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        Object {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"hello"),
            response_time: SystemTime::now(),
            initial_age: Duration::from_secs(3),
            lifetime: Duration::from_mins(1),
            cc: Directives {
                max_age: Some(60),
                public: true,
                private_fields: vec![HeaderName::from_static("x-b")],
                ..Directives::default()
            },
            swr: Duration::from_secs(5),
            sie: Duration::ZERO,
            keep: Duration::from_mins(10),
            vary: vec![HeaderName::from_static("accept-encoding")],
            tags: vec!["a".into(), "b".into()].into(),
            for_this_cache: true,
        }
    }

    /// The fuzz seeds were written by another implementation of the format (Python): the
    /// format is what the comment above `Writer` says, and it stays readable.
    #[test]
    fn reads_the_documented_format() {
        let s = decode(include_bytes!("../../fuzz/seeds/cache_file/object")).unwrap();
        assert_eq!(s.key, "http://c.test/p");
        assert_eq!(&*s.tags, &["tag1".into()] as &[Box<str>]);
        let Item::Object(o) = s.item else { panic!() };
        assert_eq!(o.body, "hello world\n");
        assert_eq!(o.cc.max_age, Some(60));
        assert!(o.cc.public);
        assert_eq!(o.headers["etag"], "\"v1\"");
        let s = decode(include_bytes!("../../fuzz/seeds/cache_file/vary")).unwrap();
        let Item::Vary { names, epoch } = s.item else {
            panic!()
        };
        assert_eq!(
            (&*names, epoch),
            (&[HeaderName::from_static("accept-language")][..], 7)
        );
    }

    fn config(memory_max_object_bytes: u64) -> crate::config::CacheDisk {
        crate::config::CacheDisk {
            path: PathBuf::new(),
            max_bytes: 1 << 20,
            memory_max_object_bytes,
            inline_read_max_bytes: 0,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn links_in_the_store_are_refused_and_foreign_names_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        std::fs::create_dir(&root).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("precious"), "x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("tmp")).unwrap();
        let e = Disk::open(&root, &config(1000)).err().unwrap();
        assert!(e.to_string().contains("not a directory"), "{e}");
        std::fs::remove_file(root.join("tmp")).unwrap();
        // Non-canonical names, links: left alone, never indexed or removed.
        let d = Disk::open(&root, &config(1000)).unwrap();
        let objects = root.join("objects");
        std::fs::write(objects.join("01/1"), "junk").unwrap();
        std::fs::write(objects.join("ab/0000000000000001"), "junk").unwrap();
        std::os::unix::fs::symlink(
            elsewhere.join("precious"),
            objects.join("02/0000000000000002"),
        )
        .unwrap();
        std::fs::write(root.join("tmp/0000000000000003"), "half").unwrap();
        d.load().unwrap();
        assert!(objects.join("01/1").exists());
        assert!(objects.join("ab/0000000000000001").exists());
        assert!(elsewhere.join("precious").exists());
        assert!(!root.join("tmp/0000000000000003").exists());
        assert_eq!(d.usage().0, 0);
    }

    #[test]
    fn an_invalidation_undoes_a_queued_write() {
        let dir = tempfile::tempdir().unwrap();
        let d = Disk::open(dir.path(), &config(1000)).unwrap();
        let mut o = object();
        o.response_time = SystemTime::now();
        let o = Arc::new(o);
        // Queued while the writer is not running yet, then invalidated.
        d.put("k1", Item::Object(o.clone()));
        d.put("k2", Item::Object(o.clone()));
        d.invalidate("k1");
        d.load().unwrap();
        assert!(d.flush(Duration::from_secs(5)));
        assert!(!d.contains("k1"));
        assert!(d.contains("k2"));
        let rt = runtime();
        assert!(rt.block_on(d.get("k1")).is_none());
        let Some(Item::Object(back)) = rt.block_on(d.get("k2")) else {
            panic!("k2 is on disk")
        };
        assert_eq!(back.body, o.body);
        // `keep` counts from the response time, as in memory.
        assert!(back.keep <= o.keep && back.keep + Duration::from_secs(5) > o.keep);
    }

    #[test]
    fn hostile_lengths_are_errors() {
        // A header count far above the cap, with valid checksums.
        let mut w = Writer(Vec::new());
        w.u8(0);
        w.bytes(b"k");
        w.u64(u64::MAX);
        w.u16(200);
        for _ in 0..5 {
            w.u64(0);
        }
        w.u8(0);
        encode_directives(&mut w, &Directives::default());
        w.names(&[]);
        w.u32(0);
        w.u32(50_000);
        for _ in 0..50_000 {
            w.bytes(b"x");
            w.bytes(b"y");
        }
        let meta = w.0;
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&u32::try_from(meta.len()).unwrap().to_le_bytes());
        file.extend_from_slice(&crc(&meta).to_le_bytes());
        file.extend_from_slice(&0u64.to_le_bytes());
        file.extend_from_slice(&crc(b"").to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&meta);
        assert!(matches!(
            decode(&file),
            Err(DecodeError::Field("header count"))
        ));
        // Lengths that overflow.
        let mut head = file[..HEAD_LEN].to_vec();
        head[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, &head).unwrap();
        assert!(read_head(&p).is_err());
    }

    #[test]
    fn round_trip_and_damage() {
        let o = object();
        let until = SystemTime::now() + Duration::from_secs(10);
        let (head, body) = encode("http://h/p", until, &Item::Object(Arc::new(o)));
        let mut file = head.clone();
        file.extend_from_slice(&body);
        let s = decode(&file).unwrap();
        assert_eq!(s.key, "http://h/p");
        let Item::Object(d) = s.item else { panic!() };
        let o = object();
        assert_eq!(d.status, o.status);
        assert_eq!(d.headers, o.headers);
        assert_eq!(d.body, o.body);
        assert_eq!(d.cc, o.cc);
        assert_eq!(d.vary, o.vary);
        assert_eq!(d.tags, o.tags);
        assert_eq!(d.lifetime, o.lifetime);
        assert!(d.for_this_cache);
        // Every truncation and every flipped byte is caught.
        for n in 0..file.len() {
            assert!(decode(&file[..n]).is_err(), "truncated at {n}");
            let mut bad = file.clone();
            bad[n] ^= 0x20;
            assert!(decode(&bad).is_err(), "byte {n} flipped");
        }
    }
}
