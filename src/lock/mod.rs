//! One driver at a time per task (issue 14): a driver claims a task before it runs or submits
//! it, and a second driver on the same cache directory waits for the claim to go instead of
//! running the task again.
//!
//! ```text
//! <cache>/locks/
//!     claims.lock           held (briefly) while a claim is read and written
//!     drivers/<id>          one file per live driver (executor), locked for its lifetime
//!     claims/<key>          the id of the driver that runs the task (removed when it ends)
//! ```
//!
//! A driver is alive while its file is locked. Two kinds of locks:
//! - `Ofd`: open-file-description locks (`fcntl(F_OFD_SETLK)`, `flock` off Linux), which the
//!   kernel forwards to the server on NFS (v4 locks, v3 through NLM), Lustre (mounted with
//!   `-o flock`), GPFS, BeeGFS and CephFS, and releases when the process dies, however it dies.
//! - `Lease`: where the file system refuses locks (`ENOLCK`, `ENOSYS`, `EOPNOTSUPP`: Lustre
//!   mounted `noflock`, NFS mounted `nolock` refuses nothing and is local only, see README),
//!   or with `PITCH_LOCK=lease`: the driver file names its host and pid and is touched every
//!   [`LEASE`] / 4; it is alive while touched within [`LEASE`] (and, on the same host, while
//!   its pid runs). `claims.lock` is then a file created with `O_EXCL`.
//!
//! A claim whose driver is gone is taken over; the new owner then looks again for a result
//! and for a job the old one submitted (the queue's journal) before it runs anything.
//!
//! The parts: `claim.rs` opening a driver's [`Claims`] and claiming, looking at and releasing
//! a task; `alive.rs` whether another driver is alive (its lock, or its lease); `held.rs` the
//! claims lock; `ranges.rs` (Linux) claims as byte-range locks with the drivers' claims logs,
//! whose lines `claims_log.rs` reads; `os.rs` the system's side (whole-file and byte-range
//! locks, file ages, processes).

mod alive;
mod claim;
#[cfg(any(target_os = "linux", feature = "fuzzing"))]
mod claims_log;
mod held;
mod os;
#[cfg(target_os = "linux")]
mod ranges;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

#[cfg(any(target_os = "linux", feature = "fuzzing"))]
pub(crate) use claims_log::log_line;
#[cfg(target_os = "linux")]
pub(crate) use claims_log::LogLine;
#[cfg(target_os = "linux")]
use ranges::Ranges;

use crate::store::LockDirs;

/// How long a `Lease` driver counts as alive after its last touch.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

/// How long a driver found alive is taken to be alive without asking again.
const SEEN_ALIVE: Duration = Duration::from_secs(1);

/// How a cache directory's drivers show they are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ofd,
    Lease,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ofd => "ofd",
            Mode::Lease => "lease",
        }
    }
}

/// What [`Claims::try_claim`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The task is this driver's now; `took_over` names the dead driver it was taken from;
    /// `after_other`: another driver claimed it before (and ended it, or died), so what it
    /// left (a pooled result logged since this driver read the logs) must be looked for.
    Mine {
        took_over: Option<String>,
        after_other: bool,
    },
    /// Another live driver runs it.
    Busy { owner: String },
}

/// This driver's claims on one cache directory.
pub(crate) struct Claims {
    /// `locks/`, `locks/drivers/` and `locks/claims/`, opened once: every file below is
    /// opened, created, renamed and removed relative to these handles, never through a link.
    dirs: LockDirs,
    id: String,
    mode: Mode,
    /// The locked driver file (held for the driver's lifetime).
    _file: File,
    /// Stops the lease heartbeat (dropping it ends the thread).
    _heartbeat: Option<mpsc::Sender<()>>,
    /// Drivers found alive, and when: one found alive within [`SEEN_ALIVE`] is not asked
    /// again (waiting on thousands of its tasks costs one check a second, not thousands).
    seen_alive: Mutex<HashMap<String, Instant>>,
    /// With OFD locks (Linux): claims are byte-range locks on one file, not a file per task.
    #[cfg(target_os = "linux")]
    ranges: Option<Ranges>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        // Claims left behind (a detached executor's jobs) are taken over by the next driver.
        #[cfg(target_os = "linux")]
        if let Some(r) = &self.ranges {
            if r.log.lock().unwrap().1.is_empty() {
                let _ = self.dirs.claims.unlink(&self.id);
            }
        }
        let _ = self.dirs.drivers.unlink(&self.id);
    }
}
