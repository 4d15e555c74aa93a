//! Files written by root in directories an unprivileged user may control.
//!
//! After a privilege drop the daemon's user owns the state directory; root (the CLI, the next
//! start) still writes there. Nothing here follows a symbolic link planted in such a
//! directory, changes the owner of anything but the file it opened, or leaves a socket or
//! temporary file reachable by others for an instant.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::privileges::Account;

/// Flags for every open here: no link is followed, and a FIFO planted at the path cannot
/// block the open (regular files ignore `O_NONBLOCK`; anything else is then refused).
const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// `file`, if it is a regular file.
fn regular(file: File, path: &Path) -> io::Result<File> {
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ))
    }
}

/// Opens `path` for reading; a symbolic link is refused (`ELOOP`).
pub fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(FLAGS)
        .open(path)?;
    regular(file, path)
}

/// Opens (creating with `mode`) `path` for appending; a symbolic link is refused.
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags(FLAGS)
        .open(path)?;
    regular(file, path)
}

/// Opens `path` read-only, creating it empty with `mode` if it is missing; a symbolic link is
/// refused (for lock files: `flock` needs no write access).
pub fn open_or_create(path: &Path, mode: u32) -> io::Result<File> {
    match open_read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => regular(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                .custom_flags(FLAGS)
                .open(path)?,
            path,
        ),
        other => other,
    }
}

/// Flushes a directory's entries (a rename inside it) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?
        .sync_all()
}

/// Replaces `path` atomically with `data` (mode `mode`): a new temporary file that cannot be
/// a planted link (`O_EXCL | O_NOFOLLOW`, unique name), synced, renamed over `path`, and the
/// directory synced.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Gives `account` a file or directory the daemon keeps writing after the privilege drop.
/// Through the opened file, never the path: a symbolic link, a hard link to someone else's
/// file (more than one link) or anything but a regular file or directory is refused, so a
/// planted name cannot make root hand over another file. A missing path is fine.
pub fn hand_over(path: &Path, account: Account) -> io::Result<()> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link; refusing to hand it over (remove it)",
                    path.display()
                ),
            ));
        }
        other => other?,
    };
    let meta = file.metadata()?;
    if !(meta.is_dir() || meta.is_file() && meta.nlink() == 1) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a plain file or directory of its own (links: {}); refusing to hand it over",
                path.display(),
                meta.nlink()
            ),
        ));
    }
    std::os::unix::fs::fchown(&file, Some(account.uid), Some(account.gid))
}

/// Binds a Unix socket at `path` that only its owner can use, and never anyone else for an
/// instant: bound inside a fresh private (0700) directory, set to 0600, then renamed into place.
pub fn bind_private_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut private = path.as_os_str().to_owned();
    private.push(format!(".bind.{}", std::process::id()));
    let private = PathBuf::from(private);
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| {
        let inner = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(&inner, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

/// Restricts a directory to its owner (0700).
pub fn make_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("proxy-safe-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn planted_links_are_never_followed() {
        let d = scratch("links");
        let victim = d.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = d.join("state.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(open_read(&link).is_err());
        assert!(open_append(&link, 0o600).is_err());
        assert!(open_or_create(&link, 0o600).is_err());
        // A FIFO cannot hold up the open.
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_read(&fifo).is_err());
        assert!(open_or_create(&fifo, 0o600).is_err());
        // The atomic write replaces the link itself, never writes through it.
        write_atomic(&link, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        // A temporary name planted in advance cannot catch the write either.
        let mut leftovers = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."));
        assert!(leftovers.next().is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn hand_over_refuses_links() {
        let d = scratch("handover");
        let victim = d.join("victim");
        std::fs::write(&victim, "x").unwrap();
        let me = Account {
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        };
        std::os::unix::fs::symlink(&victim, d.join("sym")).unwrap();
        let e = hand_over(&d.join("sym"), me).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::hard_link(&victim, d.join("hard")).unwrap();
        let e = hand_over(&d.join("hard"), me).unwrap_err();
        assert!(e.to_string().contains("links: 2"), "{e}");
        std::fs::remove_file(d.join("hard")).unwrap();
        hand_over(&victim, me).unwrap();
        hand_over(&d, me).unwrap();
        hand_over(&d.join("missing"), me).unwrap();
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn private_sockets_and_dirs() {
        let d = scratch("sock");
        let path = d.join("admin.sock");
        std::fs::write(&path, "stale").unwrap();
        let _l = bind_private_unix(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        make_private_dir(&d.join("pins")).unwrap();
        assert_eq!(
            std::fs::metadata(d.join("pins"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        std::fs::remove_dir_all(d).unwrap();
    }
}
