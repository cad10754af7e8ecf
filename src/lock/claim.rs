//! Opening a driver's [`Claims`] and claiming, looking at and releasing a task.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{mpsc, Mutex};
use std::time::SystemTime;

#[cfg(target_os = "linux")]
use super::os::range;
use super::os::{forced_lease, lock, unsupported};
#[cfg(target_os = "linux")]
use super::ranges::range_offset;
use super::{Claim, Claims, Mode, LEASE};
use crate::dir::Dir;
use crate::store::Store;
use crate::task::TaskKey;

/// Reads a task's claim (the owner's id) in `claims`: a regular file, not through a link.
fn read_claim(claims: &Dir, name: &str) -> io::Result<String> {
    String::from_utf8(claims.read(name, 4096)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl Claims {
    /// Registers this driver in `store`'s cache directory.
    pub(crate) fn open(store: &Store) -> io::Result<Claims> {
        let dirs = store.create_lock_dirs()?;
        let host = crate::worker::hostname();
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("{}-{pid}-{nanos}", sanitize(&host));
        // Made under a temporary name, locked and filled, then renamed into place: a driver
        // file is never seen unlocked while its driver lives.
        let tmp = format!(".{id}.new");
        let mut file = dirs.drivers.openat(
            &tmp,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        let mode = if forced_lease() {
            Mode::Lease
        } else {
            match lock(&file, false) {
                Ok(true) => Mode::Ofd,
                Ok(false) => return Err(io::Error::other("a new driver file is locked already")),
                Err(e) if unsupported(&e) => Mode::Lease,
                Err(e) => return Err(e),
            }
        };
        writeln!(file, "{} {host} {pid}", mode.name())?;
        dirs.drivers.rename(&tmp, &id)?;
        let heartbeat = (mode == Mode::Lease).then(|| {
            let (tx, rx) = mpsc::channel::<()>();
            let touched = file.try_clone().expect("dup of the driver file");
            std::thread::Builder::new()
                .name("pitch-lease".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(LEASE / 4) {
                        let _ = touched.set_modified(SystemTime::now());
                    }
                })
                .expect("spawn the lease thread");
            tx
        });
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut claims = Claims {
            dirs,
            id,
            mode,
            _file: file,
            _heartbeat: heartbeat,
            seen_alive: Mutex::new(HashMap::new()),
            #[cfg(target_os = "linux")]
            ranges: None,
        };
        #[cfg(target_os = "linux")]
        if mode == Mode::Ofd {
            claims.ranges = Some(claims.open_ranges()?);
        }
        Ok(claims)
    }

    /// This driver's id (its file name in `locks/drivers`).
    #[cfg(test)]
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Claims `key` for this driver unless a live driver holds it.
    pub(crate) fn try_claim(&self, key: &TaskKey) -> io::Result<Claim> {
        #[cfg(target_os = "linux")]
        if let Some(r) = &self.ranges {
            if !range(&r.file, libc::F_WRLCK, range_offset(key), false)? {
                let owner = self.last_owner(r, key)?;
                return Ok(Claim::Busy {
                    owner: owner.unwrap_or_else(|| "another driver".into()),
                });
            }
            // Logged before anything is run or submitted, for whoever takes it over.
            {
                let mut log = r.log.lock().unwrap();
                // One write (a `writeln!` on the file would write each piece of the key).
                if let Err(e) = log.0.write_all(format!("{key}\n").as_bytes()) {
                    let _ = range(&r.file, libc::F_UNLCK, range_offset(key), false);
                    return Err(e);
                }
                log.1.insert(*key);
            }
            // The lock was free: whoever claimed it before ended it, or died (asked now, not
            // from the one-second memory of live drivers).
            let last = self.last_owner(r, key)?;
            let after_other = r.others.lock().unwrap().handled.contains(key);
            let took_over = match last {
                Some(owner) if !self.ask_alive(&owner)? => Some(owner),
                _ => None,
            };
            return Ok(Claim::Mine {
                took_over,
                after_other,
            });
        }
        let _held = self.hold()?;
        let name = key.to_string();
        let took_over = match read_claim(&self.dirs.claims, &name) {
            Ok(owner) if owner == self.id => None,
            Ok(owner) => {
                if self.alive(&owner)? {
                    return Ok(Claim::Busy { owner });
                }
                Some(owner)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        self.dirs
            .claims
            .write_atomic(&name, self.id.as_bytes(), false, 0o600)?;
        // A released claim leaves no file: only a dead owner is known here.
        let after_other = took_over.is_some();
        Ok(Claim::Mine {
            took_over,
            after_other,
        })
    }

    /// The live driver other than this one that holds `key`, read without the lock (a cheap
    /// look while waiting; `None` means: try [`Claims::try_claim`]).
    pub(crate) fn busy(&self, key: &TaskKey) -> Option<String> {
        #[cfg(target_os = "linux")]
        if let Some(r) = &self.ranges {
            // Our own lock is no conflict for our own open file: only another's shows.
            if !range(&r.file, libc::F_WRLCK, range_offset(key), true).unwrap_or(false) {
                return None;
            }
            let owner = self.last_owner(r, key).ok().flatten();
            return Some(owner.unwrap_or_else(|| "another driver".into()));
        }
        let owner = read_claim(&self.dirs.claims, &key.to_string()).ok()?;
        (owner != self.id && self.alive(&owner).unwrap_or(true)).then_some(owner)
    }

    /// Gives up the claim on `key` (when its task has ended), if it is still this driver's.
    pub(crate) fn release(&self, key: &TaskKey) {
        #[cfg(target_os = "linux")]
        if let Some(r) = &self.ranges {
            let mut log = r.log.lock().unwrap();
            if log.1.remove(key) {
                // Logged as released first: whoever claims it next takes nothing over (a
                // driver that exits without its Drop leaves a log of released claims only).
                let _ = log.0.write_all(format!("-{key}\n").as_bytes());
            }
            let _ = range(&r.file, libc::F_UNLCK, range_offset(key), false);
            return;
        }
        let name = key.to_string();
        if read_claim(&self.dirs.claims, &name).is_ok_and(|owner| owner == self.id) {
            let _ = self.dirs.claims.unlink(&name);
        }
    }
}

/// A host name as a file name part.
fn sanitize(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
