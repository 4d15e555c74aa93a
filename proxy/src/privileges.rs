//! Dropping root after start-up: once the kernel programs are attached, the maps opened and
//! the sockets bound, the daemon switches to an unprivileged user and keeps only `CAP_BPF` (needed
//! to update the maps it already holds: bans, the expiry sweep, the admin API's list changes).
//! A compromise of the HTTP path can then not load programs, attach them, bind ports below
//! 1024 or touch files it does not own.
use std::{ffi::CString, io};

/// `CAP_BPF` (Linux 5.8+).
const CAP_BPF: u32 = 39;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A user to run as.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in the user database.
pub fn lookup(name: &str) -> Result<Account, String> {
    let c_name = CString::new(name).map_err(|_| format!("user {name:?} contains a NUL byte"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pwd` and `buf` (whose length is passed) and sets `result`;
    // all pointers are valid for the call.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &raw mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!(
            "user {name:?} does not exist (create it, e.g. `useradd --system {name}`)"
        ));
    }
    Ok(Account {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Switches this process to `account`, keeping only `CAP_BPF`. Call it before any thread that
/// must keep `CAP_BPF` is spawned: capabilities are per thread, and new threads inherit them
/// from the thread that creates them.
pub fn drop_to(account: Account) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on this process's credentials with valid arguments; glibc
    // applies setgroups/setgid/setuid to every thread of the process.
    unsafe {
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(account.gid))?;
        check(libc::setuid(account.uid))?;
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0))?;
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let bit = 1u32 << (CAP_BPF - 32);
    let mut data = [
        CapData::default(),
        CapData {
            effective: bit,
            permitted: bit,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and the two data words it expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; refuse setuid-root executables to regain privileges.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}
