//! Claims as byte-range locks on `locks/claims.range` (Linux, OFD locks), with each driver's
//! claims log saying which tasks it claimed and released.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use super::os::age;
use super::{log_line, Claims, LogLine};
use crate::task::TaskKey;

/// The file whose bytes are the tasks' claims when they are byte-range locks (in `locks/`).
const CLAIMS_RANGE: &str = "claims.range";

/// Claims as byte-range locks (Linux, OFD locks): a task's claim is a write lock on one byte
/// of `locks/claims.range` at an offset from its key, so claiming costs a lock and a line
/// appended to this driver's claims log (`locks/claims/<driver id>`), and no file per task
/// (a create and an unlink per task cost about 0.1 ms on a local ext4, and two metadata
/// operations on a parallel file system's metadata server). The kernel drops a dead driver's
/// locks; its log says which tasks it had claimed, so the driver that claims one next knows
/// it takes it over (and looks for the job the dead one submitted).
pub(super) struct Ranges {
    pub(super) file: File,
    /// The claims log, and the tasks this driver holds now (a driver that ends holding none
    /// removes its log: nothing of it is left to take over).
    pub(super) log: Mutex<(File, std::collections::HashSet<TaskKey>)>,
    pub(super) others: Mutex<Others>,
}

/// What this driver has read of the other drivers' claims logs.
#[derive(Default)]
pub(super) struct Others {
    /// Bytes read so far of each log, by driver id.
    read: HashMap<String, u64>,
    /// The driver that last claimed each task, per the logs.
    owner: HashMap<TaskKey, std::sync::Arc<str>>,
    /// Every task another driver claimed while this one read their logs (ended or not).
    pub(super) handled: std::collections::HashSet<TaskKey>,
}

/// A claims log older than this whose driver is dead is removed when a driver starts (any
/// driver running meanwhile read it long since).
const OLD_LOG: Duration = Duration::from_secs(3600);

/// The byte of `claims.range` that stands for `key` (63 bits of it: `off_t` is signed).
pub(super) fn range_offset(key: &TaskKey) -> i64 {
    let b = key.as_bytes();
    (u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) >> 1) as i64
}

impl Claims {
    /// Opens `claims.range` and this driver's claims log; removes the logs of drivers dead
    /// for long.
    pub(super) fn open_ranges(&self) -> io::Result<Ranges> {
        let file = self.dirs.locks.open_rw(CLAIMS_RANGE, true, 0o600)?;
        let log = self.dirs.claims.openat(
            &self.id,
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        for id in self.logs()? {
            // (A link or anything but a file here is not looked at: the claims refuse it.)
            let old = self
                .dirs
                .claims
                .open_regular(&id)
                .is_ok_and(|f| age(&f).is_some_and(|age| age > OLD_LOG));
            if old && !self.ask_alive(&id).unwrap_or(true) {
                let _ = self.dirs.claims.unlink(&id);
            }
        }
        Ok(Ranges {
            file,
            log: Mutex::new((log, Default::default())),
            others: Mutex::new(Others::default()),
        })
    }

    /// The claims logs of the cache directory: their drivers' ids (their names in
    /// `locks/claims`).
    fn logs(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for name in self.dirs.claims.entries()? {
            let name = name.to_string_lossy().into_owned();
            // Task claims (32 hex digits) are the file-per-task form's.
            if name.len() != 32 && !name.starts_with('.') {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// The other driver that claimed `key` last, per the claims logs read up to now.
    pub(super) fn last_owner(&self, ranges: &Ranges, key: &TaskKey) -> io::Result<Option<String>> {
        let mut others = ranges.others.lock().unwrap();
        let logs = self.logs()?;
        // A log gone since it was read: its driver ended holding nothing (see Drop).
        let gone: Vec<String> = others
            .read
            .keys()
            .filter(|id| !logs.contains(id))
            .cloned()
            .collect();
        for id in gone {
            others.read.remove(&id);
            others.owner.retain(|_, o| **o != *id);
        }
        for id in logs {
            if id == self.id {
                continue;
            }
            let from = others.read.get(&id).copied().unwrap_or(0);
            // A regular file, not through a link: anything else there is an error naming it.
            let mut file = match self.dirs.claims.open_regular(&id) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if file.metadata()?.len() <= from {
                continue;
            }
            let mut text = Vec::new();
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))?;
            file.read_to_end(&mut text)?;
            // Whole lines only: a line being appended is read next time.
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let owner: std::sync::Arc<str> = id.as_str().into();
            for line in text[..whole].split(|&b| b == b'\n') {
                match log_line(line) {
                    Some(LogLine::Released(k))
                        if others.owner.get(&k).is_some_and(|o| **o == *id) =>
                    {
                        others.owner.remove(&k);
                    }
                    Some(LogLine::Claimed(k)) => {
                        others.owner.insert(k, owner.clone());
                        others.handled.insert(k);
                    }
                    _ => {}
                }
            }
            others.read.insert(id, from + whole as u64);
        }
        Ok(others.owner.get(key).map(|o| o.to_string()))
    }
}
