//! The kernel side as userspace sees it: loading and attaching the programs (`loader`), the
//! pinned maps (`maps`), and the bpffs they are pinned in.
mod loader;
mod maps;
pub mod spread;
pub mod synproxy;

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

pub use loader::{AttachedAs, Datapath};
pub use maps::{Counters, KernelMaps};
use proxy_common::{BPFFS, PIN_SUBDIR};

/// `statfs` magic number of bpffs.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this needs root (it loads kernel programs and opens pinned eBPF maps); run it with sudo"
    )]
    NotRoot,
    #[error(
        "no bpffs is mounted at {path}; mount it with `mount -t bpf bpf {path}` (proxy run does this itself)"
    )]
    NoBpffs { path: PathBuf },
    #[error("mounting bpffs at {path} failed: {source}")]
    MountBpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no instance {instance:?}: {path} does not exist; is `proxy run` started with instance = {instance:?}?"
    )]
    UnknownInstance { instance: String, path: PathBuf },
    #[error(
        "this binary was built without kernel programs (PROXY_SKIP_EBPF); rebuild it with `cargo xtask build`"
    )]
    NoKernelPrograms,
    #[error("creating pin directory {path} failed: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "loading the kernel programs failed: {source}; if the maps pinned in {pin_dir} come from an older version, remove that directory (the state file restores the lists)"
    )]
    Load {
        pin_dir: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("opening pinned map {path}: {source}")]
    OpenMap {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("{op} on map {map} failed: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("loading program {name} into the kernel failed: {detail}")]
    ProgramLoad { name: &'static str, detail: String },
    #[error("attaching to interface {iface:?} failed: {reason}")]
    Attach { iface: String, reason: String },
    #[error("mapping {path} into memory failed: {source}")]
    Mmap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting up connection spreading failed: {0}")]
    Spread(String),
    #[error("running program {name} on a test packet failed: {source}")]
    TestRun {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
}

/// The bpffs mount point: `/sys/fs/bpf`, or `$PROXY_BPFFS` (tests point it elsewhere).
#[must_use]
pub fn bpffs_root() -> PathBuf {
    std::env::var_os("PROXY_BPFFS").map_or_else(|| PathBuf::from(BPFFS), PathBuf::from)
}

/// Where an instance pins its maps: `<bpffs>/proxy/<instance>`.
#[must_use]
pub fn pin_dir(instance: &str) -> PathBuf {
    bpffs_root().join(PIN_SUBDIR).join(instance)
}

/// Fails unless the process runs as root.
pub fn require_root() -> Result<(), KernelError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(KernelError::NotRoot)
    }
}

/// Whether `path` is a mounted bpffs.
#[must_use]
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs only writes into `buf`, which is a valid, writable statfs; c_path is a
    // NUL-terminated string that outlives the call.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &raw mut buf) == 0 && buf.f_type == BPF_FS_MAGIC
    }
}

/// Fails with a clear message unless bpffs is mounted (the CLI never mounts it).
pub fn require_bpffs() -> Result<(), KernelError> {
    let root = bpffs_root();
    if is_bpffs(&root) {
        Ok(())
    } else {
        Err(KernelError::NoBpffs { path: root })
    }
}

/// Mounts bpffs at its root if it is not mounted yet (the daemon does this at start).
pub fn ensure_bpffs() -> Result<(), KernelError> {
    let root = bpffs_root();
    if is_bpffs(&root) {
        return Ok(());
    }
    std::fs::create_dir_all(&root).map_err(|source| KernelError::MountBpffs {
        path: root.clone(),
        source,
    })?;
    let c_root = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| KernelError::NoBpffs { path: root.clone() })?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_root.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(KernelError::MountBpffs {
            path: root,
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!(path = %root.display(), "mounted bpffs");
    Ok(())
}

/// Maps `bytes` of a `BPF_F_MMAPABLE` array map (pinned at `path`) shared and writable into
/// this process.
pub(crate) fn mmap_map(
    map: &aya::maps::MapData,
    bytes: usize,
    path: &std::path::Path,
) -> Result<std::ptr::NonNull<libc::c_void>, KernelError> {
    use std::os::fd::{AsFd, AsRawFd};
    // SAFETY: mmap of a BPF_F_MMAPABLE array map fd, MAP_SHARED, read/write, at offset 0, of
    // at most the map's size (the kernel rounds it up to a page); the result is checked.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    (addr != libc::MAP_FAILED)
        .then(|| std::ptr::NonNull::new(addr))
        .flatten()
        .ok_or_else(|| KernelError::Mmap {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        })
}
