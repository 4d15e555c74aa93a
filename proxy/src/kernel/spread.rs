//! Connection spreading: the worker load table the `sk_reuseport` program reads, shared with
//! the workers through an mmap of the `WORKER_LOAD` map (no syscall per connection).
use std::{
    net::SocketAddr,
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Array, Map, MapData};
use proxy_common::{ListenerKey, MAX_WORKERS, SpreadConfig, SpreadPolicy, WorkerLoad, maps};

use super::KernelError;

/// The `WORKER_LOAD` array, mapped into this process.
pub struct LoadTable {
    base: NonNull<WorkerLoad>,
    bytes: usize,
    // Keeps the map alive for as long as the mapping is used (None: private memory).
    _map: Option<MapData>,
}

// SAFETY: the mapping is shared memory accessed only through atomics (see `field`); the pointer
// stays valid until Drop unmaps it.
unsafe impl Send for LoadTable {}
// SAFETY: as above: all access is atomic.
unsafe impl Sync for LoadTable {}

/// Which counter of a worker's entry.
#[derive(Clone, Copy)]
enum Field {
    Connections = 0,
    Inflight = 1,
    Alive = 2,
    Pending = 3,
}

impl LoadTable {
    /// Maps the `WORKER_LOAD` map pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, KernelError> {
        let path = pin_dir.join(maps::WORKER_LOAD);
        let map = MapData::from_pin(&path).map_err(|source| KernelError::OpenMap {
            path: path.clone(),
            source,
        })?;
        let bytes = std::mem::size_of::<WorkerLoad>() * MAX_WORKERS as usize;
        let base = super::mmap_map(&map, bytes, &path)?;
        Ok(Self {
            base: base.cast(),
            bytes,
            _map: Some(map),
        })
    }

    /// A table in private memory that no kernel program reads: for running the request path
    /// in-process (tests, fuzzing) where no `WORKER_LOAD` map is pinned.
    #[expect(
        clippy::missing_panics_doc,
        reason = "the only panic is on a null result of a successful mmap, which never happens"
    )]
    pub fn detached() -> std::io::Result<Self> {
        let bytes = std::mem::size_of::<WorkerLoad>() * MAX_WORKERS as usize;
        // SAFETY: a fresh anonymous private mapping, read/write, of `bytes`; the result is
        // checked. It is zeroed, page-aligned and unmapped only by Drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(addr.cast()).expect("mmap does not return null on success"),
            bytes,
            _map: None,
        })
    }

    fn field(&self, worker: u32, field: Field) -> &AtomicU32 {
        assert!(worker < MAX_WORKERS, "worker index {worker} out of range");
        // SAFETY: `worker` is in bounds of the mapping; WorkerLoad is #[repr(C)] of four u32,
        // so the field is a 4-byte aligned u32 inside it; the kernel's readers only load it.
        unsafe {
            let entry = self.base.as_ptr().add(worker as usize).cast::<u32>();
            AtomicU32::from_ptr(entry.add(field as usize))
        }
    }

    /// Zeroes every entry (at start: a previous run may have left counts behind).
    pub fn reset(&self) {
        for w in 0..MAX_WORKERS {
            for f in [
                Field::Connections,
                Field::Inflight,
                Field::Alive,
                Field::Pending,
            ] {
                self.field(w, f).store(0, Ordering::Relaxed);
            }
        }
    }

    pub fn set_alive(&self, worker: u32, alive: bool) {
        self.field(worker, Field::Alive)
            .store(u32::from(alive), Ordering::Release);
    }

    fn add(&self, worker: u32, field: Field) {
        self.field(worker, field).fetch_add(1, Ordering::Relaxed);
    }

    fn sub(&self, worker: u32, field: Field) {
        let _ = self
            .field(worker, field)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }

    /// Corrects the counts of picked, not yet accepted connections (every second): a count
    /// below zero (accepts the program's lost updates never counted) goes back to zero; a
    /// count above zero that has not moved since the last call is picks whose handshake never
    /// completed (nothing is on its way to the worker), and goes to zero. A count that moves is
    /// left alone: zeroing it blindly would make the most backlogged worker look idle.
    /// `last` holds the counts seen by the previous call.
    pub fn settle_pending(&self, last: &mut [u32]) {
        for (w, seen) in (0..MAX_WORKERS).zip(last.iter_mut()) {
            let field = self.field(w, Field::Pending);
            let now = field.load(Ordering::Relaxed);
            #[expect(
                clippy::cast_possible_wrap,
                reason = "the count is read as signed: accepts may run ahead of the picks"
            )]
            let negative = (now as i32) < 0;
            if (negative || (now != 0 && now == *seen))
                && field
                    .compare_exchange(now, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                *seen = 0;
            } else {
                *seen = now;
            }
        }
    }

    /// A copy of every entry.
    #[must_use]
    pub fn snapshot(&self) -> Vec<WorkerLoad> {
        (0..MAX_WORKERS)
            .map(|w| WorkerLoad {
                connections: self.field(w, Field::Connections).load(Ordering::Relaxed),
                inflight: self.field(w, Field::Inflight).load(Ordering::Relaxed),
                alive: self.field(w, Field::Alive).load(Ordering::Relaxed),
                pending: self.field(w, Field::Pending).load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Drop for LoadTable {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `open`; nothing uses it afterwards.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

/// One worker's view of the load table; counts connections and requests with RAII guards.
#[derive(Clone)]
pub struct WorkerLoadHandle {
    table: std::sync::Arc<LoadTable>,
    worker: u32,
}

/// Decrements a counter when dropped.
pub struct LoadGuard {
    handle: WorkerLoadHandle,
    field: Field,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.handle.table.sub(self.handle.worker, self.field);
    }
}

impl WorkerLoadHandle {
    #[must_use]
    pub fn new(table: std::sync::Arc<LoadTable>, worker: u32) -> Self {
        Self { table, worker }
    }

    #[must_use]
    pub fn worker(&self) -> u32 {
        self.worker
    }

    pub fn set_alive(&self, alive: bool) {
        self.table.set_alive(self.worker, alive);
    }

    /// An accepted connection is no longer pending (called for every accept, the ones
    /// refused at once included).
    pub fn accepted(&self) {
        self.table
            .field(self.worker, Field::Pending)
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts an open connection until the guard drops.
    #[must_use]
    pub fn connection(&self) -> LoadGuard {
        self.table.add(self.worker, Field::Connections);
        LoadGuard {
            handle: self.clone(),
            field: Field::Connections,
        }
    }

    /// Counts a request in flight until the guard drops.
    #[must_use]
    pub fn request(&self) -> LoadGuard {
        self.table.add(self.worker, Field::Inflight);
        LoadGuard {
            handle: self.clone(),
            field: Field::Inflight,
        }
    }
}

/// The key the `sk_reuseport` program computes for a listening socket bound to `addr`.
#[must_use]
pub fn listener_key(addr: SocketAddr) -> ListenerKey {
    match addr {
        SocketAddr::V4(a) => ListenerKey {
            family: libc::AF_INET as u32,
            port: u32::from(a.port()),
            addr: [u32::from_ne_bytes(a.ip().octets()), 0, 0, 0],
        },
        SocketAddr::V6(a) => {
            let o = a.ip().octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ListenerKey {
                family: libc::AF_INET6 as u32,
                port: u32::from(a.port()),
                addr: [word(0), word(4), word(8), word(12)],
            }
        }
    }
}

/// Reads the spreading config pinned in `pin_dir` (for `proxy stats`).
pub fn read_spread_config(pin_dir: &Path) -> Result<SpreadConfig, KernelError> {
    let path = pin_dir.join(maps::SPREAD_CONFIG);
    let err = |source| KernelError::OpenMap {
        path: path.clone(),
        source,
    };
    let map = Map::from_map_data(MapData::from_pin(&path).map_err(err)?).map_err(err)?;
    let array: Array<MapData, SpreadConfig> = Array::try_from(map).map_err(err)?;
    array.get(&0, 0).map_err(|source| KernelError::Map {
        op: "read",
        map: maps::SPREAD_CONFIG,
        source,
    })
}

/// The policy's name as written in the config.
#[must_use]
pub fn policy_name(code: u32) -> &'static str {
    match code {
        c if c == SpreadPolicy::LeastLoaded as u32 => "least-loaded",
        c if c == SpreadPolicy::P2c as u32 => "p2c",
        _ => "hash",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_table_counts_like_the_mapped_one() {
        let table = std::sync::Arc::new(LoadTable::detached().expect("anonymous mapping"));
        let handle = WorkerLoadHandle::new(table.clone(), 3);
        let request = handle.request();
        let connection = handle.connection();
        assert_eq!(table.snapshot()[3].inflight, 1);
        assert_eq!(table.snapshot()[3].connections, 1);
        drop((request, connection));
        assert_eq!(table.snapshot()[3].inflight, 0);
        assert_eq!(table.snapshot()[3].connections, 0);
        assert_eq!(table.snapshot().len(), MAX_WORKERS as usize);
    }
}
