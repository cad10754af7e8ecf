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

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::dir::Dir;
use crate::store::{LockDirs, Store};
use crate::task::TaskKey;

/// The file held while a claim is read and written (in `locks/`).
const CLAIMS_LOCK: &str = "claims.lock";
/// `claims.lock` of leases: a file created with `O_EXCL` (in `locks/`).
const CLAIMS_HELD: &str = "claims.held";
/// The file whose bytes are the tasks' claims when they are byte-range locks (in `locks/`).
#[cfg(target_os = "linux")]
const CLAIMS_RANGE: &str = "claims.range";

/// How long a `Lease` driver counts as alive after its last touch.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

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

#[cfg(target_os = "linux")]
/// Claims as byte-range locks (Linux, OFD locks): a task's claim is a write lock on one byte
/// of `locks/claims.range` at an offset from its key, so claiming costs a lock and a line
/// appended to this driver's claims log (`locks/claims/<driver id>`), and no file per task
/// (a create and an unlink per task cost about 0.1 ms on a local ext4, and two metadata
/// operations on a parallel file system's metadata server). The kernel drops a dead driver's
/// locks; its log says which tasks it had claimed, so the driver that claims one next knows
/// it takes it over (and looks for the job the dead one submitted).
struct Ranges {
    file: File,
    /// The claims log, and the tasks this driver holds now (a driver that ends holding none
    /// removes its log: nothing of it is left to take over).
    log: Mutex<(File, std::collections::HashSet<TaskKey>)>,
    others: Mutex<Others>,
}

/// What this driver has read of the other drivers' claims logs.
#[cfg(target_os = "linux")]
#[derive(Default)]
struct Others {
    /// Bytes read so far of each log, by driver id.
    read: HashMap<String, u64>,
    /// The driver that last claimed each task, per the logs.
    owner: HashMap<TaskKey, std::sync::Arc<str>>,
    /// Every task another driver claimed while this one read their logs (ended or not).
    handled: std::collections::HashSet<TaskKey>,
}

/// A claims log older than this whose driver is dead is removed when a driver starts (any
/// driver running meanwhile read it long since).
#[cfg(target_os = "linux")]
const OLD_LOG: Duration = Duration::from_secs(3600);

/// The byte of `claims.range` that stands for `key` (63 bits of it: `off_t` is signed).
#[cfg(target_os = "linux")]
fn range_offset(key: &TaskKey) -> i64 {
    let b = key.as_bytes();
    (u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) >> 1) as i64
}

/// Locks (`F_WRLCK`), unlocks (`F_UNLCK`) or tests (`test`: `F_OFD_GETLK`) the byte `at` of
/// `file`, never waiting. Locking: `Ok(false)` when another open file holds it; testing:
/// `Ok(true)` when another does.
#[cfg(target_os = "linux")]
fn range(file: &File, kind: libc::c_int, at: i64, test: bool) -> io::Result<bool> {
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
    loop {
        // SAFETY: fcntl on an open descriptor with a valid flock struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) } == 0 {
            return Ok(if test {
                fl.l_type != libc::F_UNLCK as libc::c_short
            } else {
                true
            });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !test => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// How long a driver found alive is taken to be alive without asking again.
const SEEN_ALIVE: Duration = Duration::from_secs(1);

/// Whether locks are forced off (`PITCH_LOCK=lease`).
fn forced_lease() -> bool {
    std::env::var("PITCH_LOCK").is_ok_and(|v| v == "lease")
}

/// Takes an exclusive lock on the whole of `file` (an OFD lock on Linux, `flock` elsewhere),
/// waiting for it when `wait`. `Ok(false)`: someone else holds it.
fn lock(file: &File, wait: bool) -> io::Result<bool> {
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
        loop {
            // SAFETY: fcntl on an open descriptor with a valid flock struct.
            if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
                _ => return Err(e),
            }
        }
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
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

/// Reads a task's claim (the owner's id) in `claims`: a regular file, not through a link.
fn read_claim(claims: &Dir, name: &str) -> io::Result<String> {
    String::from_utf8(claims.read(name, 4096)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads a driver file in `drivers`: a regular file, not through a link; also returns the
/// open file (for its modification time).
fn read_driver(drivers: &Dir, name: &str) -> io::Result<(String, File)> {
    let file = drivers.open_regular(name)?;
    let mut text = String::new();
    (&file).take(4096).read_to_string(&mut text)?;
    Ok((text, file))
}

/// How long ago `file` was last modified (`fstat`); `None` when unknown or in the future.
fn age(file: &File) -> Option<Duration> {
    let modified = file.metadata().and_then(|m| m.modified()).ok()?;
    SystemTime::now().duration_since(modified).ok()
}

/// One line of a driver's claims log.
#[cfg(any(target_os = "linux", feature = "fuzzing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLine {
    /// `KEY`: the driver claimed the task.
    Claimed(TaskKey),
    /// `-KEY`: the driver released it.
    Released(TaskKey),
}

/// Reads one line of a claims log (without its newline); `None` for anything else.
#[cfg(any(target_os = "linux", feature = "fuzzing"))]
pub(crate) fn log_line(line: &[u8]) -> Option<LogLine> {
    let line = std::str::from_utf8(line).ok()?;
    match line.strip_prefix('-') {
        Some(key) => key.parse().ok().map(LogLine::Released),
        None => line.parse().ok().map(LogLine::Claimed),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pid_runs(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

    /// Opens `claims.range` and this driver's claims log; removes the logs of drivers dead
    /// for long.
    #[cfg(target_os = "linux")]
    fn open_ranges(&self) -> io::Result<Ranges> {
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
    #[cfg(target_os = "linux")]
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
    #[cfg(target_os = "linux")]
    fn last_owner(&self, ranges: &Ranges, key: &TaskKey) -> io::Result<Option<String>> {
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

    /// Whether the driver `id` is alive.
    fn alive(&self, id: &str) -> io::Result<bool> {
        if id.contains('/') || id.starts_with('.') || id.is_empty() {
            return Ok(false);
        }
        let seen = self.seen_alive.lock().unwrap().get(id).copied();
        if seen.is_some_and(|at| at.elapsed() < SEEN_ALIVE) {
            return Ok(true);
        }
        let alive = self.ask_alive(id)?;
        let mut seen = self.seen_alive.lock().unwrap();
        if alive {
            seen.insert(id.to_string(), Instant::now());
        } else {
            seen.remove(id);
        }
        Ok(alive)
    }

    fn ask_alive(&self, id: &str) -> io::Result<bool> {
        let drivers = &self.dirs.drivers;
        let (text, read) = match read_driver(drivers, id) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut words = text.split_whitespace();
        let (mode, host, pid) = (words.next(), words.next(), words.next());
        if mode == Some("ofd") {
            let file = match drivers.open_rw(id, false, 0) {
                Ok(file) => file,
                // Removed since it was read: by its driver, which ended, or by another claim
                // (of this driver or another) that found it dead, as below.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            return match lock(&file, false) {
                // Its driver died without removing it: nobody needs it any more.
                Ok(true) => {
                    let _ = drivers.unlink(id);
                    Ok(false)
                }
                Ok(false) => Ok(true),
                // This driver cannot take locks here where its owner could: trust the lease.
                Err(e) if unsupported(&e) => Ok(self.leased(&read, host, pid)),
                Err(e) => Err(e),
            };
        }
        // A driver file being written (no mode yet) counts as alive.
        Ok(mode.is_none() || self.leased(&read, host, pid))
    }

    /// Whether the lease of the driver whose file is `file` (open) holds.
    fn leased(&self, file: &File, host: Option<&str>, pid: Option<&str>) -> bool {
        if host == Some(crate::worker::hostname().as_str()) {
            if let Some(pid) = pid.and_then(|p| p.parse::<i32>().ok()) {
                if !pid_runs(pid) {
                    return false;
                }
            }
        }
        let touched = age(file);
        touched.is_some_and(|age| age < LEASE) || touched.is_none()
    }

    /// Holds the cache directory's claims lock until the value is dropped.
    fn hold(&self) -> io::Result<Held<'_>> {
        let locks = &self.dirs.locks;
        if self.mode == Mode::Ofd {
            let file = locks.open_rw(CLAIMS_LOCK, true, 0o600)?;
            lock(&file, true)?;
            return Ok(Held::Ofd(file));
        }
        loop {
            match locks.create_new(CLAIMS_HELD, 0o600) {
                Ok(mut f) => {
                    let _ = writeln!(
                        f,
                        "{} {} {}",
                        crate::worker::hostname(),
                        std::process::id(),
                        now_secs()
                    );
                    return Ok(Held::Excl(locks));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Held for a few milliseconds at most: one older than the lease was left
                    // by a driver that died holding it. (A link there is never followed: it
                    // is not a regular file, so it is never stale, and the error names it.)
                    let stale = match locks.open_regular(CLAIMS_HELD) {
                        Ok(f) => age(&f).is_some_and(|age| age > LEASE),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                        Err(e) => return Err(e),
                    };
                    if stale {
                        let _ = locks.unlink(CLAIMS_HELD);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
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

enum Held<'a> {
    Ofd(#[allow(dead_code)] File),
    /// `claims.held`, in this folder.
    Excl(&'a Dir),
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Held::Excl(locks) = self {
            let _ = locks.unlink(CLAIMS_HELD);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Policy;
    use std::fs;
    use std::path::Path;

    fn store(dir: &Path) -> Store {
        Store::open(dir, false, Policy::default()).unwrap()
    }

    fn claims_of_two(dir: &Path) -> (Claims, Claims) {
        let s = store(dir);
        (Claims::open(&s).unwrap(), Claims::open(&s).unwrap())
    }

    fn one_claim_each_way(a: Claims, b: Claims) {
        let key = TaskKey::explicit("k");
        let mine = |took_over: Option<String>, after_other| Claim::Mine {
            took_over,
            after_other,
        };
        assert_eq!(a.try_claim(&key).unwrap(), mine(None, false));
        assert!(matches!(b.try_claim(&key).unwrap(), Claim::Busy { owner } if owner == a.id()));
        assert_eq!(a.try_claim(&key).unwrap(), mine(None, false));
        a.release(&key);
        // Released by a live driver: b knows another driver had it (where the claims say so).
        let ofd = a.mode == Mode::Ofd && cfg!(target_os = "linux");
        assert_eq!(b.try_claim(&key).unwrap(), mine(None, ofd));
        // b dies holding it: the next driver takes it over.
        let b_id = b.id().to_string();
        drop(b);
        // Another test's thread may be spawning a process right now: until that child's exec
        // closes its copy of b's descriptors it holds b's open file description, and so b's
        // OFD locks (seen once in ~90 runs of the whole suite). A real driver that dies has
        // no such window left; wait for it to close here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let claim = loop {
            match a.try_claim(&key).unwrap() {
                Claim::Busy { owner } if owner == b_id && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                claim => break claim,
            }
        };
        assert_eq!(claim, mine(Some(b_id), true));
    }

    #[test]
    fn a_claim_is_one_drivers_until_released_or_its_driver_dies() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = claims_of_two(dir.path());
        assert_eq!(a.mode, Mode::Ofd, "tmpfs/ext4 have locks");
        one_claim_each_way(a, b);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_dead_drivers_lock_is_free_even_with_its_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = claims_of_two(dir.path());
        let key = TaskKey::explicit("k");
        assert!(matches!(b.try_claim(&key).unwrap(), Claim::Mine { .. }));
        // Its process died (the lock went with it) but the file stayed (no Drop ran).
        let path = b.dirs.drivers.join(b.id());
        let b_id = b.id().to_string();
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_UNLCK as _;
        // SAFETY: fcntl on an open descriptor with a valid flock struct.
        assert_eq!(
            unsafe { libc::fcntl(b._file.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
            0
        );
        // (its claims, byte-range locks of its open files, went too)
        if let Some(r) = &b.ranges {
            assert!(range(&r.file, libc::F_UNLCK, range_offset(&key), false).unwrap());
        }
        std::mem::forget(b);
        assert!(path.exists());
        assert!(!a.alive(&b_id).unwrap());
        assert!(!path.exists(), "a dead driver's file is removed");
        assert!(
            matches!(a.try_claim(&key).unwrap(), Claim::Mine { took_over: Some(id), .. } if id == b_id)
        );
    }

    /// Claims of one driver on several threads all find the same dead driver: the first to
    /// lock its file removes it, and the others' look at it must not fail then.
    #[test]
    #[cfg(target_os = "linux")]
    fn claims_racing_to_a_dead_drivers_file_all_succeed() {
        for round in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = claims_of_two(dir.path());
            let keys: Vec<TaskKey> = (0..8)
                .map(|i| TaskKey::explicit(&format!("{round}-{i}")))
                .collect();
            for k in &keys {
                assert!(matches!(b.try_claim(k).unwrap(), Claim::Mine { .. }));
            }
            // b dies: its locks go, its files stay.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_UNLCK as _;
            // SAFETY: fcntl on an open descriptor with a valid flock struct.
            unsafe { libc::fcntl(b._file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
            if let Some(r) = &b.ranges {
                for k in &keys {
                    range(&r.file, libc::F_UNLCK, range_offset(k), false).unwrap();
                }
            }
            std::mem::forget(b);
            let a = &a;
            std::thread::scope(|scope| {
                let claims: Vec<_> = keys
                    .iter()
                    .map(|k| scope.spawn(move || a.try_claim(k)))
                    .collect();
                for c in claims {
                    let c = c.join().unwrap();
                    assert!(matches!(c, Ok(Claim::Mine { .. })), "round {round}: {c:?}");
                }
            });
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn range_claims_leave_no_file_per_task_and_keys_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = claims_of_two(dir.path());
        let keys: Vec<TaskKey> = (0..500)
            .map(|i| TaskKey::explicit(&i.to_string()))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let (mine, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            assert_eq!(
                mine.try_claim(k).unwrap(),
                Claim::Mine {
                    took_over: None,
                    after_other: false
                }
            );
            assert!(matches!(other.try_claim(k).unwrap(), Claim::Busy { .. }));
            assert!(other.busy(k).is_some() && mine.busy(k).is_none());
        }
        // Two claims logs, nothing per task.
        let files = fs::read_dir(dir.path().join("locks/claims"))
            .unwrap()
            .count();
        assert_eq!(files, 2);
        for k in &keys {
            a.release(k);
            b.release(k);
        }
        assert!(keys
            .iter()
            .all(|k| a.busy(k).is_none() && b.busy(k).is_none()));
        // A task another driver released is not taken over from it, even once that driver
        // is gone (its log says released).
        let b_id = b.id().to_string();
        drop(b);
        assert_eq!(
            a.try_claim(&keys[1]).unwrap(),
            Claim::Mine {
                took_over: None,
                after_other: true
            },
            "released by {b_id}"
        );
        a.release(&keys[1]);
        // Drivers that end holding nothing leave no log.
        drop(a);
        let files = fs::read_dir(dir.path().join("locks/claims"))
            .unwrap()
            .count();
        assert_eq!(files, 0);
    }

    #[test]
    fn leases_are_used_where_locks_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mk = || {
            let mut c = Claims::open(&s).unwrap();
            c.mode = Mode::Lease;
            #[cfg(target_os = "linux")]
            {
                c.ranges = None;
            }
            let path = c.dirs.drivers.join(c.id());
            fs::write(
                &path,
                format!(
                    "lease {} {}\n",
                    crate::worker::hostname(),
                    std::process::id()
                ),
            )
            .unwrap();
            c
        };
        let (a, b) = (mk(), mk());
        one_claim_each_way(a, b);
        // A driver of another host whose lease ran out is dead; one touched lately is alive.
        let a = mk();
        let other = a.dirs.drivers.join("elsewhere-1-1");
        fs::write(&other, "lease elsewhere 1\n").unwrap();
        assert!(a.alive("elsewhere-1-1").unwrap());
        File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(SystemTime::now() - LEASE - Duration::from_secs(1))
            .unwrap();
        // (a driver found alive is believed for a second)
        assert!(a.alive("elsewhere-1-1").unwrap());
        a.seen_alive.lock().unwrap().clear();
        assert!(!a.alive("elsewhere-1-1").unwrap());
        // A driver of this host whose pid is gone is dead at once.
        fs::write(
            &other,
            format!("lease {} {}\n", crate::worker::hostname(), i32::MAX),
        )
        .unwrap();
        assert!(!a.alive("elsewhere-1-1").unwrap());
    }

    /// Issue 14: a link planted in `locks/` where pitch keeps a file of its own is refused
    /// with an error naming it, and what it points to is neither read nor written.
    #[test]
    fn links_in_the_locks_folder_are_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let locks = s.root().join("locks");
        let outside = dir.path().join("outside");
        fs::write(&outside, "lease elsewhere 1\n").unwrap();
        let link = |at: &Path| {
            let _ = fs::remove_file(at);
            std::os::unix::fs::symlink(&outside, at).unwrap();
        };
        let refused = |e: io::Error, at: &Path| {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{} is a symbolic link", at.display())),
                "{msg}"
            );
        };
        let key = TaskKey::explicit("k");
        fs::write(&outside, format!("{key}\n")).unwrap();
        #[cfg(target_os = "linux")]
        {
            // The byte-range claims file.
            let range = locks.join("claims.range");
            drop(Claims::open(&s).unwrap());
            link(&range);
            refused(Claims::open(&s).err().expect("refused"), &range);
            fs::remove_file(&range).unwrap();
            // Another driver's claims log, naming a key it claimed.
            let a = Claims::open(&s).unwrap();
            let log = locks.join("claims").join("ghost-1-1");
            link(&log);
            refused(a.try_claim(&key).unwrap_err(), &log);
            fs::remove_file(&log).unwrap();
            a.release(&key);
        }
        let a = Claims::open(&s).unwrap();
        // A driver file.
        let driver = locks.join("drivers").join("ghost-1-1");
        link(&driver);
        refused(a.alive("ghost-1-1").unwrap_err(), &driver);
        fs::remove_file(&driver).unwrap();
        // Leases: a task's claim file, and the claims lock.
        let mut b = Claims::open(&s).unwrap();
        b.mode = Mode::Lease;
        #[cfg(target_os = "linux")]
        {
            b.ranges = None;
        }
        let claim = locks.join("claims").join(key.to_string());
        link(&claim);
        refused(b.try_claim(&key).unwrap_err(), &claim);
        assert!(b.busy(&key).is_none());
        b.release(&key);
        assert!(
            claim.symlink_metadata().is_ok(),
            "the link is left, not followed"
        );
        fs::remove_file(&claim).unwrap();
        let held = locks.join("claims.held");
        link(&held);
        refused(b.try_claim(&key).unwrap_err(), &held);
        fs::remove_file(&held).unwrap();
        assert!(matches!(b.try_claim(&key).unwrap(), Claim::Mine { .. }));
        // Nothing was written through a link.
        assert_eq!(fs::read_to_string(&outside).unwrap(), format!("{key}\n"));
        // A folder: `locks/claims` a link to a folder outside.
        drop((a, b));
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::remove_dir_all(locks.join("claims")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, locks.join("claims")).unwrap();
        refused(
            Claims::open(&s).err().expect("refused"),
            &locks.join("claims"),
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
