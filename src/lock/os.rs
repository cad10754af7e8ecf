//! The system's side of the claims: whole-file and byte-range locks, whether a file system
//! has locks, how old a file is, whether a process runs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

/// Whether locks are forced off (`PITCH_LOCK=lease`).
pub(super) fn forced_lease() -> bool {
    std::env::var("PITCH_LOCK").is_ok_and(|v| v == "lease")
}

/// Takes an exclusive lock on the whole of `file` (an OFD lock on Linux, `flock` elsewhere),
/// waiting for it when `wait`. `Ok(false)`: someone else holds it.
pub(super) fn lock(file: &File, wait: bool) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        ofd(file, cmd, &mut fl)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
        loop {
            // SAFETY: flock on an open descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
                _ => return Err(e),
            }
        }
    }
}

/// Whether a lock error means "this file system has no locks" (then leases are used).
pub(super) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

/// Locks (`F_WRLCK`), unlocks (`F_UNLCK`) or tests (`test`: `F_OFD_GETLK`) the byte `at` of
/// `file`, never waiting. Locking: `Ok(false)` when another open file holds it; testing:
/// `Ok(true)` when another does.
#[cfg(target_os = "linux")]
pub(super) fn range(file: &File, kind: libc::c_int, at: i64, test: bool) -> io::Result<bool> {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = at as _;
    fl.l_len = 1;
    let cmd = if test {
        libc::F_OFD_GETLK
    } else {
        libc::F_OFD_SETLK
    };
    let set = ofd(file, cmd, &mut fl)?;
    Ok(if test {
        fl.l_type != libc::F_UNLCK as libc::c_short
    } else {
        set
    })
}

/// `fcntl(cmd)` with the OFD lock `fl` on `file` (`F_OFD_SETLK`, `F_OFD_SETLKW`, or
/// `F_OFD_GETLK`, which fills `fl` in), again when interrupted. `Ok(false)`: another open file
/// holds a lock in the way of one that does not wait (`F_OFD_SETLK`).
#[cfg(target_os = "linux")]
fn ofd(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<bool> {
    loop {
        // SAFETY: fcntl on an open descriptor with a valid flock struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut *fl) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if cmd == libc::F_OFD_SETLK => {
                return Ok(false)
            }
            _ => return Err(e),
        }
    }
}

/// How long ago `file` was last modified (`fstat`); `None` when unknown or in the future.
pub(super) fn age(file: &File) -> Option<Duration> {
    let modified = file.metadata().and_then(|m| m.modified()).ok()?;
    SystemTime::now().duration_since(modified).ok()
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn pid_runs(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
