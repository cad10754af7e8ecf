//! The on-disk layout of the cache directory, owned by [`Store`]: nobody else joins paths.
//!
//! ```text
//! <cache_directory>/
//!   bin/<hash>/<exe>          content-addressed copy of the driver binary (cluster backends)
//!   tasks/<k0k1>/<key>/       one directory per task, sharded by the key's first two hex digits
//!       task.bin              what to run
//!       result.bin            the outcome (values of every rank, or a TaskError)
//!       rank.<r>.bin          a rank's outcome, before the ranks are gathered into result.bin
//!       checkpoint.bin        the state a function task saved to be resumed from (rank 0's),
//!                             removed once the task has a finished result
//!       stdout, stderr        kept only when the task wrote something
//!       exit                  a command's exit code and times, left by its job script
//!   log/<nanos>-<pid>.plog    a result log: records of pooled tasks' results (see resultlog)
//!   jobs/                     the scheduler's side (cluster backends):
//!       <job id>.job          journal record: which job runs which task
//!       <stem>.intent         a submission about to be made (its script and tasks)
//!       <stem>.sh, .tasks     a job script, and the tasks file of an array or packed job
//!       slurm-%j.out, ...     the jobs' logs (the scheduler's own file name pattern)
//!       <stem>.secret         the pilots' secret of an executor (`block_allocation`)
//!       scheduler             the marker: which scheduler, and the SSH login if any
//!   sweeps/<hash>             the order of a sweep's points (`pitch sweep`, `pitch results`)
//!   locks/                    which driver runs which task (see `crate::lock`)
//! ```
//!
//! Every binary file starts with a 32-byte header: magic `PTCH`, format version, file kind,
//! payload length and a BLAKE3 checksum of the payload. Every file is written by
//! `Dir::write_atomic`: to a fresh temporary name in the same directory, then renamed, so a reader
//! sees the whole file or none. Directories are created 0700. Below the root, files are
//! opened, created, listed and removed relative to checked directory handles
//! ([`crate::dir::Dir`]; [`Store::dir`], [`Store::jobs`]): a link is refused, never followed.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::dir::Dir;
use crate::error::{Error, TaskError};
use crate::scheduler::SchedulerKind;
use crate::task::TaskKey;
use crate::trust::{self, Policy};

const MAGIC: [u8; 4] = *b"PTCH";
/// The on-disk format version; a file of another version is refused. Version 2: result and
/// rank files start their checksummed payload with their task's key.
pub(crate) const FORMAT_VERSION: u16 = 2;
const HEADER_LEN: usize = 32;
const CHECKSUM_LEN: usize = 16;

/// What a file holds; stored in its header so a task file is never read as a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FileKind {
    Task = 1,
    Result = 2,
    Rank = 3,
    Journal = 4,
    Checkpoint = 5,
    Sweep = 6,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Task => "task file",
            FileKind::Result => "result file",
            FileKind::Rank => "rank result file",
            FileKind::Journal => "journal file",
            FileKind::Checkpoint => "checkpoint file",
            FileKind::Sweep => "sweep order file",
        }
    }
}

/// Why a stored file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("does not exist")]
    Missing,
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
    #[error("is truncated: {0}")]
    Truncated(String),
    #[error("is not a pitch file (bad magic)")]
    BadMagic,
    #[error("has on-disk format version {found}, this binary reads version {FORMAT_VERSION}")]
    Version { found: u16 },
    #[error("is a {found} where a {expected} was expected")]
    Kind {
        found: String,
        expected: &'static str,
    },
    #[error("fails its checksum (corrupted)")]
    Checksum,
    #[error("is larger than the {} byte limit", codec::DECODE_LIMIT)]
    TooLarge,
    #[error("holds undecodable data: {0}")]
    Decode(String),
    /// A result, rank or checkpoint file whose payload names another task (copied from its
    /// directory).
    #[error("is the {kind} of task {found}, not of this task: refused as foreign")]
    Foreign { found: String, kind: &'static str },
    /// It, or its directory, is not one pitch can trust (a link, another user's, writable by
    /// others); the text reads after "it", like the others.
    #[error("{0}")]
    Untrusted(String),
}

impl FormatError {
    pub(crate) fn into_task_error(self, path: &Path) -> TaskError {
        TaskError::Store {
            path: path.display().to_string(),
            detail: self.to_string(),
        }
    }
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let hash = blake3::hash(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hash.as_bytes()[..CHECKSUM_LEN]);
    out
}

fn header(kind: FileKind, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6] = kind as u8;
    h[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[16..32].copy_from_slice(&checksum(payload));
    h
}

/// Checks a whole file's bytes and returns its payload.
pub(crate) fn check(bytes: &[u8], kind: FileKind) -> Result<&[u8], FormatError> {
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 4 && bytes[0..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        return Err(FormatError::Truncated(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    if bytes[0..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    if bytes[6] != kind as u8 {
        let found = [
            FileKind::Task,
            FileKind::Result,
            FileKind::Rank,
            FileKind::Journal,
            FileKind::Checkpoint,
        ]
        .into_iter()
        .find(|k| *k as u8 == bytes[6])
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("file of unknown kind {}", bytes[6]));
        return Err(FormatError::Kind {
            found,
            expected: kind.name(),
        });
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if len != payload.len() as u64 {
        return Err(FormatError::Truncated(format!(
            "the header announces {len} payload bytes, the file holds {}",
            payload.len()
        )));
    }
    if bytes[16..32] != checksum(payload) {
        return Err(FormatError::Checksum);
    }
    Ok(payload)
}

/// Reads and checks the file opened already as `opened` (or the error of its open), returning
/// its payload: a link (`O_NOFOLLOW`'s refusal, or a handle's) or anything but a regular file
/// is refused, not followed.
fn read_opened(opened: io::Result<File>, kind: FileKind) -> Result<Vec<u8>, FormatError> {
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FormatError::Missing),
        // ELOOP of O_NOFOLLOW, or a `Dir`'s refusal of the link it met (it has no errno).
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP)
                || (e.raw_os_error().is_none() && e.kind() == io::ErrorKind::PermissionDenied) =>
        {
            return Err(FormatError::Untrusted(
                "is a symbolic link: pitch does not follow links in the cache directory".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(FormatError::Untrusted("is not a regular file".into()));
    }
    let limit = (codec::DECODE_LIMIT + HEADER_LEN) as u64;
    let len = meta.len();
    if len > limit {
        return Err(FormatError::TooLarge);
    }
    // Through `take`, read_to_end uses the capacity given instead of asking the file for its
    // size again; a file that grew past the limit meanwhile is still refused.
    let mut bytes = Vec::with_capacity(len as usize + 1);
    (&mut file).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(FormatError::TooLarge);
    }
    check(&bytes, kind)?;
    bytes.drain(..HEADER_LEN);
    Ok(bytes)
}

/// Reads, checks and decodes the result, rank or checkpoint file `name` of the task `key` in
/// its checked directory `dir`: its payload starts with the key of the task that wrote it, so
/// a file copied from another task's directory is refused as foreign (the checksum covers
/// the key).
fn read_value_bound_in<T: serde::de::DeserializeOwned>(
    dir: &Dir,
    name: &str,
    kind: FileKind,
    key: &TaskKey,
) -> Result<T, FormatError> {
    decode_bound(&read_opened(dir.open_read(name), kind)?, kind, key)
}

/// Decodes the checked payload of a result, rank or checkpoint file of the task `key` (see
/// [`read_value_bound_in`]): a payload that names another task is refused as foreign.
pub(crate) fn decode_bound<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    kind: FileKind,
    key: &TaskKey,
) -> Result<T, FormatError> {
    let Some((found, value)) = payload.split_first_chunk::<16>() else {
        return Err(FormatError::Truncated(format!(
            "{} payload bytes, shorter than a task key",
            payload.len()
        )));
    };
    if found != key.as_bytes() {
        let found = TaskKey::from_bytes(*found);
        return Err(FormatError::Foreign {
            found: found.to_string(),
            kind: kind.name(),
        });
    }
    codec::decode(value).map_err(FormatError::Decode)
}

/// Encodes `value` after the task's `key` and writes it atomically (see
/// [`read_value_bound_in`]) as the file `name` of the checked directory `dir`.
fn write_value_bound_in<T: Serialize>(
    dir: &Dir,
    name: &str,
    kind: FileKind,
    key: &TaskKey,
    value: &T,
    durable: bool,
) -> Result<(), TaskError> {
    let encoded = codec::encode(value).map_err(|detail| TaskError::Encode {
        what: kind.name().to_string(),
        detail,
    })?;
    let mut payload = Vec::with_capacity(16 + encoded.len());
    payload.extend_from_slice(key.as_bytes());
    payload.extend_from_slice(&encoded);
    write_in(dir, name, kind, &payload, durable)
}

/// Encodes `value` and writes it with a header as the file `name` of the checked directory
/// `dir`, atomically ([`Dir::write_atomic`]: a link there is replaced, never followed).
pub(crate) fn write_value_in<T: Serialize>(
    dir: &Dir,
    name: &str,
    kind: FileKind,
    value: &T,
    durable: bool,
) -> Result<(), TaskError> {
    let payload = codec::encode(value).map_err(|detail| TaskError::Encode {
        what: kind.name().to_string(),
        detail,
    })?;
    write_in(dir, name, kind, &payload, durable)
}

/// Reads, checks and decodes the file `name` of the checked directory `dir`, opened relative
/// to its handle: a link or anything but a regular file there is refused, not followed.
pub(crate) fn read_value_in<T: serde::de::DeserializeOwned>(
    dir: &Dir,
    name: &str,
    kind: FileKind,
) -> Result<T, FormatError> {
    let payload = read_opened(dir.open_read(name), kind)?;
    codec::decode(&payload).map_err(FormatError::Decode)
}

/// Writes `payload` with a header as the file `name` of `dir`, atomically ([`Dir::write_atomic`]).
fn write_in(
    dir: &Dir,
    name: &str,
    kind: FileKind,
    payload: &[u8],
    durable: bool,
) -> Result<(), TaskError> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&header(kind, payload));
    bytes.extend_from_slice(payload);
    dir.write_atomic(name, &bytes, durable, 0o600)
        .map_err(|e| TaskError::Store {
            path: dir.join(name).display().to_string(),
            detail: format!("could not write: {e}"),
        })
}

/// Reads and writes by path, for tests that plant or damage files (pitch itself goes through
/// `Dir` handles).
#[cfg(test)]
mod by_path {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

    /// Reads and checks a file, returning its payload.
    ///
    /// The file is opened with `O_NOFOLLOW` (and `O_NONBLOCK`, so a planted FIFO cannot block the
    /// reader): a link or anything but a regular file in its place is refused, not followed.
    pub(crate) fn read_checked(path: &Path, kind: FileKind) -> Result<Vec<u8>, FormatError> {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        read_opened(opened, kind)
    }

    /// Reads, checks and decodes a file.
    pub(crate) fn read_value<T: serde::de::DeserializeOwned>(
        path: &Path,
        kind: FileKind,
    ) -> Result<T, FormatError> {
        let payload = read_checked(path, kind)?;
        codec::decode(&payload).map_err(FormatError::Decode)
    }

    /// Writes `payload` with a header to `path` atomically: a temporary file in the same directory,
    /// optionally fsynced, then renamed over `path`.
    pub(crate) fn write_atomic(
        path: &Path,
        kind: FileKind,
        payload: &[u8],
        durable: bool,
    ) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&header(kind, payload));
        bytes.extend_from_slice(payload);
        write_bytes_atomic(path, &bytes, durable, 0o600)
    }

    /// Writes `bytes` as they are to `path` atomically with permissions `mode`: a temporary file
    /// in the same directory, renamed over `path`. When `durable`, the file is fsynced before the
    /// rename and its directory after it, so the file survives a crash once this returns.
    pub(crate) fn write_bytes_atomic(
        path: &Path,
        bytes: &[u8],
        durable: bool,
        mode: u32,
    ) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            file.write_all(bytes)?;
            if durable {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Encodes `value` and writes it atomically.
    pub(crate) fn write_value<T: Serialize>(
        path: &Path,
        kind: FileKind,
        value: &T,
        durable: bool,
    ) -> Result<(), TaskError> {
        let payload = codec::encode(value).map_err(|detail| TaskError::Encode {
            what: kind.name().to_string(),
            detail,
        })?;
        write_atomic(path, kind, &payload, durable).map_err(|e| TaskError::Store {
            path: path.display().to_string(),
            detail: format!("could not write: {e}"),
        })
    }
}
#[cfg(test)]
pub(crate) use by_path::*;

/// What a finished task left behind: the encoded value of every rank, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResultRecord {
    pub outcome: Result<Vec<Vec<u8>>, TaskError>,
}

/// The state a function task saved with `TaskContext::checkpoint` (`checkpoint.bin`, after
/// the task's key): the encoded state and the name of its type, which `TaskContext::resume`
/// checks before decoding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckpointRecord {
    /// `std::any::type_name` of the state.
    pub type_name: String,
    /// The state, encoded with the codec.
    pub state: Vec<u8>,
}

/// One rank's outcome, before the ranks are gathered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RankRecord {
    pub rank: u32,
    pub outcome: Result<Vec<u8>, TaskError>,
}

/// Folders that could not be read, with why.
pub(crate) type Unreadable = Vec<(PathBuf, io::Error)>;

/// The cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    root: PathBuf,
    durable: bool,
    trust: Policy,
    /// A store only for rendering job scripts (`pitch render`): nothing is created.
    dry: bool,
}

impl Store {
    /// Whether this store is only for rendering (creates nothing).
    pub(crate) fn is_dry(&self) -> bool {
        self.dry
    }
}

impl Store {
    /// Opens (creating it 0700 when missing, its missing parents with the umask's mode) the
    /// cache directory at `root`, after checking that no other user can replace it or any
    /// directory above it (`crate::trust`).
    pub(crate) fn open(root: &Path, durable: bool, trust: Policy) -> Result<Store, Error> {
        // Nothing is created below a directory another user could replace.
        trust::check_existing_parents(root, trust).map_err(|u| Error::Untrusted {
            cache: root.to_path_buf(),
            path: u.path,
            reason: u.reason,
        })?;
        trust::create_private(root).map_err(|e| Error::io(root, e))?;
        let root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        let untrusted = |u: trust::Untrusted| Error::Untrusted {
            cache: root.clone(),
            path: u.path,
            reason: u.reason,
        };
        trust::check_root(&root, trust).map_err(untrusted)?;
        let tasks = root.join(TASKS);
        trust::create_private(&tasks).map_err(|e| Error::io(&tasks, e))?;
        // pitch's own directories below the root, where they exist already.
        for dir in [tasks, root.join(JOBS), root.join(BIN)] {
            if dir.symlink_metadata().is_ok() {
                trust::check_own(&dir, trust).map_err(untrusted)?;
            }
        }
        Ok(Store {
            root,
            durable,
            trust,
            dry: false,
        })
    }

    /// A store that creates nothing, for job scripts that are only shown (`pitch render`):
    /// `root` made absolute, not checked, not created.
    pub(crate) fn dry(root: &Path, trust: Policy) -> Result<Store, Error> {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        Ok(Store {
            root: cwd.join(root),
            durable: false,
            trust,
            dry: true,
        })
    }

    /// A store handle for a worker: the directory must exist already.
    pub(crate) fn at(root: PathBuf, durable: bool) -> Store {
        Store {
            root,
            durable,
            trust: Policy::default(),
            dry: false,
        }
    }

    /// This handle with another trust policy (see `crate::trust`).
    pub(crate) fn trusting(mut self, trust: Policy) -> Store {
        self.trust = trust;
        self
    }

    /// The cache directory's absolute path.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether writes are fsynced before the rename.
    pub(crate) fn durable(&self) -> bool {
        self.durable
    }

    /// What the cache directory trusts besides the current user and root.
    pub(crate) fn trust(&self) -> Policy {
        self.trust
    }

    /// One of pitch's folders below the cache root (`&["jobs"]`, `&["locks", "drivers"]`),
    /// opened one level at a time through handles that refuse links, each checked (owner,
    /// mode); missing levels are created 0700 when `create` (never in a dry store). Its files
    /// are then read and written relative to the handle ([`Dir`]).
    pub(crate) fn dir(&self, names: &[&str], create: bool) -> io::Result<Dir> {
        crate::dir::walk(&self.root, names, self.trust, create && !self.dry)
    }

    /// The paths of one task.
    pub(crate) fn task(&self, key: &TaskKey) -> TaskPaths {
        let hex = key.to_string();
        TaskPaths {
            key: *key,
            root: self.root.clone(),
            dir: self.root.join(TASKS).join(&hex[..2]).join(&hex),
            durable: self.durable,
            trust: self.trust,
        }
    }

    /// Whether `dir` looks like a cache directory (it has the tasks folder): `Ok(false)` when
    /// it has none, an error naming the folder when it cannot be examined (no permission).
    pub(crate) fn is_cache(dir: &Path) -> Result<bool, Error> {
        let tasks = dir.join(TASKS);
        match fs::metadata(&tasks) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(tasks, e)),
        }
    }

    /// The key of every task directory, in no particular order (names that are not keys
    /// are skipped).
    pub(crate) fn task_keys(&self) -> Result<Vec<TaskKey>, Error> {
        Ok(self.task_keys_and_unreadable()?.0)
    }

    /// [`Store::task_keys`], and the shard folders that could not be read, with why.
    pub(crate) fn task_keys_and_unreadable(&self) -> Result<(Vec<TaskKey>, Unreadable), Error> {
        let tasks = self.root.join(TASKS);
        let dir = self
            .dir(&[TASKS], false)
            .map_err(|e| Error::io(&tasks, e))?;
        let shards = dir.entries().map_err(|e| Error::io(&tasks, e))?;
        let (mut keys, mut unreadable) = (Vec::new(), Vec::new());
        for shard in shards {
            let Some(name) = shard.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let entries = match dir.sub(name).and_then(|d| {
                d.check(self.trust)?;
                d.entries()
            }) {
                Ok(entries) => entries,
                Err(e) => {
                    unreadable.push((dir.join(name), e));
                    continue;
                }
            };
            keys.extend(
                entries
                    .iter()
                    .filter_map(|e| e.to_str().and_then(|k| k.parse::<TaskKey>().ok())),
            );
        }
        Ok((keys, unreadable))
    }

    /// The folder of the result logs (`crate::resultlog` owns what is inside).
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.root.join(LOG)
    }

    /// The result log named `name` (in [`Store::log_dir`]).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(name)
    }

    /// The folder of the result logs as a checked handle (not through a link; created 0700
    /// when `create`): the logs are created, read and listed relative to it.
    pub(crate) fn log_handle(&self, create: bool) -> io::Result<Dir> {
        crate::dir::walk(&self.root, &[LOG], self.trust, create && !self.dry)
    }

    /// Removes a task's directory and everything in it.
    /// (Through handles: a link inside is removed, never followed.)
    pub(crate) fn remove_task(&self, key: &TaskKey) -> Result<(), Error> {
        let paths = self.task(key);
        let shard = paths.shard_name();
        let dir = self
            .dir(&[TASKS, shard], false)
            .map_err(|e| Error::io(&paths.dir, e))?;
        dir.remove_tree(&key.to_string())
            .map_err(|e| Error::io(&paths.dir, e))
    }

    /// The directory of the scheduler's files (journal, job scripts, logs): its path, for
    /// messages and for the programs that take one (its files are read and written through
    /// [`Store::jobs`]).
    fn jobs_dir(&self) -> PathBuf {
        self.root.join(JOBS)
    }

    /// The path of the file `name` of the jobs directory (for messages).
    pub(crate) fn job_file(&self, name: &str) -> PathBuf {
        self.jobs_dir().join(name)
    }

    /// One of pitch's folders below the cache root ([`Store::dir`]), its refusal as the cache
    /// directory's error naming the level at fault (a link, another user's folder).
    fn folder(&self, names: &[&str], create: bool) -> Result<Dir, Error> {
        crate::dir::walk_naming(&self.root, names, self.trust, create && !self.dry)
            .map_err(|(path, e)| self.refusal(path, e))
    }

    /// The error of `e`, met at `path` below the cache root: a refusal ([`Dir`]'s: a link, not
    /// a directory or not a regular file, another user's) as `Error::Untrusted` naming it,
    /// anything else as an I/O error.
    fn refusal(&self, path: PathBuf, e: io::Error) -> Error {
        let refused = e.raw_os_error().is_none()
            && matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
            );
        if !refused {
            return Error::io(path, e);
        }
        // Dir's messages start with the path they name: said once.
        let text = e.to_string();
        let reason = text
            .strip_prefix(&format!("{} ", path.display()))
            .unwrap_or(&text)
            .to_string();
        Error::Untrusted {
            cache: self.root.clone(),
            path,
            reason,
        }
    }

    /// The jobs directory, opened through checked handles (each level `O_NOFOLLOW`, checked
    /// for owner and mode), created 0700 first when missing and `create`: its files are read
    /// and written relative to the handle.
    pub(crate) fn jobs(&self, create: bool) -> Result<Dir, Error> {
        self.folder(&[JOBS], create)
    }

    /// Creates the jobs directory 0700 through handles (a link there is refused, naming it).
    pub(crate) fn create_jobs_dir(&self) -> Result<(), Error> {
        if self.dry {
            return Ok(());
        }
        self.jobs(true).map(drop)
    }

    /// Records the order of a sweep's points (their task keys, as `pitch sweep` made them) in
    /// `sweeps/<hash of the keys>`, so that `pitch results` lists them in that order; the
    /// same sweep run again writes the same file. Written through a checked handle of
    /// `sweeps/`: a link there is refused, never followed.
    pub(crate) fn record_sweep(&self, keys: &[String]) -> Result<(), Error> {
        if self.dry {
            return Ok(());
        }
        let dir = self.folder(&[SWEEPS], true)?;
        let id = blake3::hash(keys.join("\n").as_bytes()).to_hex();
        let name = &id.as_str()[..32];
        write_value_in(&dir, name, FileKind::Sweep, &keys, self.durable)
            .map_err(|e| Error::Config(format!("{}: {e}", dir.join(name).display())))
    }

    /// The sweeps' recorded orders ([`Store::record_sweep`]), the oldest first; files that
    /// cannot be read (damaged, not a pitch file, a link) are passed over: they only order a
    /// listing. A `sweeps/` that is a link (or not pitch's) is not read at all.
    pub(crate) fn sweep_orders(&self) -> Vec<Vec<String>> {
        let Ok(dir) = self.dir(&[SWEEPS], false) else {
            return Vec::new();
        };
        let Ok(names) = dir.entries() else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, Vec<String>)> = names
            .iter()
            .filter_map(|name| {
                let name = name.to_str().filter(|n| !n.starts_with('.'))?;
                let file = dir.open_regular(name).ok()?;
                let modified = file.metadata().and_then(|m| m.modified()).ok()?;
                let payload = read_opened(Ok(file), FileKind::Sweep).ok()?;
                let keys = codec::decode::<Vec<String>>(&payload).ok()?;
                Some((modified, keys))
            })
            .collect();
        found.sort_by_key(|f| f.0);
        found.into_iter().map(|(_, keys)| keys).collect()
    }

    /// The folder of the drivers' claims on tasks (`crate::lock` owns what is inside).
    fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS)
    }

    /// Opens the folders of [`crate::lock`] through handles, creating them 0700 when missing
    /// (each opened without following a link, and checked through its handle: a link, another
    /// user's folder or one others may write is refused, named).
    pub(crate) fn create_lock_dirs(&self) -> io::Result<LockDirs> {
        let named = |path: PathBuf, e: io::Error| {
            let shown = path.display().to_string();
            if e.to_string().contains(&shown) {
                e
            } else {
                io::Error::new(e.kind(), format!("{shown}: {e}"))
            }
        };
        let locks = crate::dir::walk_naming(&self.root, &[LOCKS], self.trust, true)
            .map_err(|(path, e)| named(path, e))?;
        let sub = |name: &str| {
            locks
                .sub_created(name, self.trust)
                .map_err(|e| named(locks.join(name), e))
        };
        Ok(LockDirs {
            drivers: sub("drivers")?,
            claims: sub("claims")?,
            locks,
        })
    }

    /// The claim on task `key`: the id of the driver that runs it (its path, for messages).
    pub(crate) fn claim_file(&self, key: &TaskKey) -> PathBuf {
        self.locks_dir().join("claims").join(key.to_string())
    }

    /// The name in [`Store::jobs`] of the journal record of the submission `job_id`.
    pub(crate) fn journal_record_name(job_id: u64) -> String {
        format!("{job_id}.{JOURNAL_EXT}")
    }

    /// Whether `name` in [`Store::jobs`] is a journal record's.
    pub(crate) fn is_journal_record(name: &str) -> bool {
        !name.starts_with('.') && Path::new(name).extension() == Some(JOURNAL_EXT.as_ref())
    }

    /// The name in [`Store::jobs`] of the intent record of the submission whose job script is
    /// named `stem`: written before the submit command runs, removed once its journal record
    /// is written.
    pub(crate) fn journal_intent_name(stem: &str) -> String {
        format!("{stem}.{INTENT_EXT}")
    }

    /// The stem of the intent record named `name` in [`Store::jobs`]; `None` for another file.
    pub(crate) fn intent_stem(name: &str) -> Option<&str> {
        name.strip_suffix(INTENT_EXT)?
            .strip_suffix('.')
            .filter(|s| !s.is_empty() && !s.starts_with('.'))
    }

    /// The name in [`Store::jobs`] of the job script named `stem`.
    pub(crate) fn job_script_name(stem: &str) -> String {
        format!("{stem}.sh")
    }

    /// The job script named `stem` (its path: the scheduler is given it).
    pub(crate) fn job_script(&self, stem: &str) -> PathBuf {
        self.jobs_dir().join(Self::job_script_name(stem))
    }

    /// The name in [`Store::jobs`] of the tasks file of the job named `stem` (one line per
    /// task of an array or packed job).
    pub(crate) fn job_tasks_name(stem: &str) -> String {
        format!("{stem}.tasks")
    }

    /// The tasks file of the job named `stem` (its path: the job script names it).
    pub(crate) fn job_tasks_file(&self, stem: &str) -> PathBuf {
        self.jobs_dir().join(Self::job_tasks_name(stem))
    }

    /// The name of an executor's pilot secret file (`block_allocation` on a queue backend),
    /// named `stem`: the pilots read it, the driver checks what they present against it.
    fn pilot_secret_name(stem: &str) -> String {
        format!("{stem}.secret")
    }

    /// The path of the pilot secret file named `stem` (the pilots are given it).
    pub(crate) fn pilot_secret(&self, stem: &str) -> PathBuf {
        self.jobs_dir().join(Self::pilot_secret_name(stem))
    }

    /// Writes the pilot secret named `stem` (0600, atomically, through the checked handle of
    /// the jobs directory, created when missing): its path.
    pub(crate) fn write_pilot_secret(&self, stem: &str, secret: &[u8]) -> Result<PathBuf, Error> {
        let dir = self.jobs(true)?;
        let name = Self::pilot_secret_name(stem);
        dir.write_atomic(&name, secret, self.durable, 0o600)
            .map_err(|e| self.refusal(dir.join(&name), e))?;
        Ok(dir.join(&name))
    }

    /// Removes the pilot secret named `stem` (through the jobs directory's handle: a link
    /// there is removed itself, never its target).
    pub(crate) fn remove_pilot_secret(&self, stem: &str) {
        if let Ok(dir) = self.jobs(false) {
            let _ = dir.unlink(&Self::pilot_secret_name(stem));
        }
    }

    /// The log of a job, named by the scheduler's pattern `name` (`slurm-%j.out`).
    pub(crate) fn job_log(&self, name: &str) -> PathBuf {
        self.jobs_dir().join(name)
    }

    /// Where the binary with content hash `hash` and file name `name` is staged.
    pub(crate) fn staged_binary(&self, hash: &str, name: &str) -> PathBuf {
        self.root.join(BIN).join(hash).join(name)
    }

    /// The folder `bin/<hash>` of the binary with content hash `hash`, created 0700 when
    /// missing, opened and checked one level at a time through handles (a link refused).
    pub(crate) fn staged_dir(&self, hash: &str) -> Result<Dir, Error> {
        self.folder(&[BIN, hash], true)
    }

    /// The scheduler marker file.
    #[cfg(test)]
    fn marker_file(&self) -> PathBuf {
        self.jobs_dir().join(MARKER)
    }

    /// Which scheduler the cache directory's jobs were submitted to, if any queue executor
    /// used it (`None` too when the marker cannot be read: [`Store::read_scheduler_marker`]).
    pub(crate) fn scheduler_marker(&self) -> Option<SchedulerMarker> {
        self.read_scheduler_marker().ok().flatten()
    }

    /// Which scheduler the cache directory's jobs were submitted to: `Ok(None)` when no queue
    /// executor used it; the marker of older versions (the scheduler's name, and the login on
    /// a second line) is read too. Read through the jobs directory's checked handle: a link
    /// (or a FIFO, a directory) in the marker's place is an error naming it, never followed.
    pub(crate) fn read_scheduler_marker(&self) -> Result<Option<SchedulerMarker>, Error> {
        let dir = match self.jobs(false) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            dir => dir?,
        };
        // A few dozen bytes; read no more than 64 KiB of whatever is there.
        let bytes = match dir.read(MARKER, 64 << 10) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.refusal(dir.join(MARKER), e)),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(None);
        };
        if let Ok(marker) = serde_json::from_str::<SchedulerMarker>(&text) {
            return Ok(Some(marker));
        }
        let mut lines = text.lines().map(str::trim);
        let Some(first) = lines.next() else {
            return Ok(None);
        };
        let scheduler = first.parse().unwrap_or(SchedulerKind::Slurm);
        let login = lines.next().filter(|l| !l.is_empty()).map(str::to_string);
        Ok(Some(SchedulerMarker {
            format: 0,
            scheduler,
            login,
        }))
    }

    /// Records which scheduler the jobs go to (when it changed), through the jobs directory's
    /// checked handle; a link in the marker's place is refused, naming it.
    pub(crate) fn set_scheduler_marker(
        &self,
        scheduler: SchedulerKind,
        login: Option<String>,
    ) -> Result<(), Error> {
        if self.dry {
            return Ok(());
        }
        let marker = SchedulerMarker {
            format: MARKER_FORMAT,
            scheduler,
            login,
        };
        let dir = self.jobs(true)?;
        if self.read_scheduler_marker()?.as_ref() == Some(&marker) {
            return Ok(());
        }
        let text = serde_json::to_string(&marker).expect("a marker serializes");
        dir.write_atomic(MARKER, text.as_bytes(), self.durable, 0o600)
            .map_err(|e| self.refusal(dir.join(MARKER), e))
    }
}

const TASKS: &str = "tasks";
const TASK_FILE: &str = "task.bin";
const RESULT_FILE: &str = "result.bin";
const PREVIOUS_RESULT_FILE: &str = "result.prev.bin";
const CHECKPOINT_FILE: &str = "checkpoint.bin";
const EXIT_FILE: &str = "exit";
const ATTEMPTS_FILE: &str = "attempts";

fn rank_name(rank: u32) -> String {
    format!("rank.{rank}.bin")
}
const JOBS: &str = "jobs";
const BIN: &str = "bin";
const LOCKS: &str = "locks";
const LOG: &str = "log";
const SWEEPS: &str = "sweeps";
const MARKER: &str = "scheduler";
const JOURNAL_EXT: &str = "job";
const INTENT_EXT: &str = "intent";
/// The format of the scheduler marker file this binary writes.
const MARKER_FORMAT: u32 = 1;

/// What `jobs/scheduler` says: the scheduler of the cache directory's jobs and the login node
/// they were submitted to over SSH. Stored as JSON with its format version (0: the two-line
/// text of older versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchedulerMarker {
    pub format: u32,
    pub scheduler: SchedulerKind,
    pub login: Option<String>,
}

/// Every path of one task. The only type that knows file names inside a task directory.
#[derive(Debug, Clone)]
pub(crate) struct TaskPaths {
    key: TaskKey,
    root: PathBuf,
    dir: PathBuf,
    durable: bool,
    trust: Policy,
}

/// The folders of [`crate::lock`], opened through handles ([`Store::create_lock_dirs`]).
#[derive(Debug)]
pub(crate) struct LockDirs {
    /// `locks/`: `claims.lock`, `claims.range`.
    pub locks: Dir,
    /// `locks/drivers/`: a file per live driver.
    pub drivers: Dir,
    /// `locks/claims/`: claims (file per task) and the drivers' claims logs.
    pub claims: Dir,
}

impl TaskPaths {
    /// The cache directory this task belongs to.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    /// Whether writes are fsynced.
    pub(crate) fn durable(&self) -> bool {
        self.durable
    }
    /// What the cache directory trusts (a worker is told, to check it again).
    pub(crate) fn trust(&self) -> Policy {
        self.trust
    }
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
    pub(crate) fn task_file(&self) -> PathBuf {
        self.dir.join(TASK_FILE)
    }
    pub(crate) fn result_file(&self) -> PathBuf {
        self.dir.join(RESULT_FILE)
    }
    pub(crate) fn rank_file(&self, rank: u32) -> PathBuf {
        self.dir.join(rank_name(rank))
    }
    pub(crate) fn stdout(&self) -> PathBuf {
        self.dir.join(Self::STDOUT)
    }
    pub(crate) fn stderr(&self) -> PathBuf {
        self.dir.join(Self::STDERR)
    }
    /// The state the task saved to be resumed from ([`CheckpointRecord`]).
    pub(crate) fn checkpoint_file(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }
    /// The exit code a command's job script leaves for the driver to collect.
    pub(crate) fn exit_file(&self) -> PathBuf {
        self.dir.join(EXIT_FILE)
    }
    /// The prefix of the temporary name the job script writes the exit file under.
    pub(crate) fn exit_tmp(&self) -> PathBuf {
        self.dir.join(".exit")
    }
    /// The failed attempts of a retried task, a JSON line each (`record_attempt`).
    pub(crate) fn attempts_file(&self) -> PathBuf {
        self.dir.join(ATTEMPTS_FILE)
    }

    /// Opens the task directory's file `name` for reading through the checked directory
    /// handle ([`TaskPaths::open_dir`]): never through a link, never blocking on a FIFO, a
    /// regular file only.
    fn open_in_dir(&self, name: &str) -> io::Result<File> {
        let dir = self.open_dir().map_err(|e| match e {
            FormatError::Missing => io::Error::from(io::ErrorKind::NotFound),
            FormatError::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        dir.open_regular(name)
    }

    /// Opens the exit file a job script left ([`TaskPaths::exit_file`]) for reading, as
    /// [`TaskPaths::open_in_dir`] does.
    pub(crate) fn open_exit_file(&self) -> io::Result<File> {
        self.open_in_dir(EXIT_FILE)
    }

    /// Removes the exit file a job script left (once its outcome is published), through the
    /// checked directory handle: a link there is removed itself, a link on the way is not
    /// followed.
    pub(crate) fn remove_exit_file(&self) {
        if let Ok(dir) = self.open_dir() {
            let _ = dir.unlink(EXIT_FILE);
        }
    }

    /// The task directory, opened through checked handles ([`TaskPaths::open_dir`]), for
    /// writing the task's own standard output and error ([`TaskPaths::STDOUT`],
    /// [`TaskPaths::STDERR`]) relative to it; a link on the way (or a directory missing or
    /// not trusted) is an error naming it.
    pub(crate) fn output_dir(&self) -> Result<Dir, TaskError> {
        self.open_dir().map_err(|e| TaskError::Store {
            path: self.dir.display().to_string(),
            detail: match e {
                FormatError::Missing => {
                    "the task directory is gone: its output is not written".into()
                }
                e => format!("its output is not written: {e}"),
            },
        })
    }

    /// The name of the task's own standard output file in its directory.
    pub(crate) const STDOUT: &'static str = "stdout";
    /// The name of the task's own standard error file in its directory.
    pub(crate) const STDERR: &'static str = "stderr";

    /// Whether the task's own output file `name` ([`TaskPaths::STDOUT`] or
    /// [`TaskPaths::STDERR`]) is there, a regular file in the checked task directory.
    pub(crate) fn has_output(&self, name: &str) -> bool {
        self.open_in_dir(name).is_ok()
    }

    /// The last `max` bytes of the task's own output file `name`, read through the checked
    /// directory handle (never through a link; nothing when it is not a regular file).
    pub(crate) fn output_end(&self, name: &str, max: u64) -> Vec<u8> {
        use io::Seek;
        let mut bytes = Vec::new();
        if let Ok(mut file) = self.open_in_dir(name) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if file
                .seek(io::SeekFrom::Start(len.saturating_sub(max)))
                .is_ok()
            {
                let _ = io::Read::take(file, max).read_to_end(&mut bytes);
            }
        }
        bytes
    }

    /// Appends a failed attempt to the task's attempts file (created 0600, never through a
    /// link), creating the task directory when the task has none (a pooled task).
    pub(crate) fn record_attempt(&self, attempt: &crate::error::Attempt) -> Result<(), TaskError> {
        self.create()?;
        let path = self.attempts_file();
        let failed = |e: String| TaskError::Store {
            path: path.display().to_string(),
            detail: e,
        };
        let mut line = serde_json::to_vec(attempt).map_err(|e| failed(e.to_string()))?;
        line.push(b'\n');
        let dir = self.open_dir_for_write(&path)?;
        let mut file = dir
            .open_append(ATTEMPTS_FILE, 0o600)
            .map_err(|e| failed(format!("could not open: {e}")))?;
        // One write of a whole line: appends of lines this short do not interleave.
        file.write_all(&line)
            .map_err(|e| failed(format!("could not write: {e}")))
    }

    /// The failed attempts recorded for the task (none when it was never retried); a line
    /// that does not read (cut short by a full disk) is skipped.
    pub(crate) fn attempts(&self) -> Vec<crate::error::Attempt> {
        let Ok(file) = self.open_in_dir(ATTEMPTS_FILE) else {
            return Vec::new();
        };
        let mut text = String::new();
        // At most 1 MiB: a task is not retried thousands of times.
        if io::Read::take(file, 1 << 20)
            .read_to_string(&mut text)
            .is_err()
        {
            return Vec::new();
        }
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Creates the task directory (and its shard, and `tasks/` when missing) 0700, one level
    /// at a time through handles (`mkdirat`, then `openat` with `O_NOFOLLOW`), each checked
    /// through its handle before pitch enters it: a link planted where the shard or the task
    /// directory should be is refused (naming it), not followed.
    pub(crate) fn create(&self) -> Result<(), TaskError> {
        let key = self.key.to_string();
        crate::dir::walk_naming(
            &self.root,
            &[TASKS, self.shard_name(), &key],
            self.trust,
            true,
        )
        .map(drop)
        .map_err(|(path, e)| TaskError::Store {
            path: path.display().to_string(),
            detail: format!("could not create the task directory: {e}"),
        })
    }

    /// The name of the task directory's shard (the key's first two hex digits).
    fn shard_name(&self) -> &str {
        self.dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("a task directory has a shard")
    }

    /// Opens the task directory through handles, one level at a time from the cache
    /// directory (`tasks/`, the shard, the task's directory, each with `O_DIRECTORY |
    /// O_NOFOLLOW` relative to the one above), each checked through its handle (owner,
    /// mode): its files are then read and written relative to the handle ([`Dir`]), so a
    /// directory swapped after the check is not followed. `Missing` when one does not exist.
    fn open_dir(&self) -> Result<Dir, FormatError> {
        let shard = self.dir.parent().expect("a task directory has a shard");
        let names = [
            Path::new(TASKS),
            Path::new(shard.file_name().expect("a shard has a name")),
            Path::new(self.dir.file_name().expect("a task directory has a name")),
        ];
        let mut dir = Dir::open(&self.root).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FormatError::Missing,
            _ => FormatError::Io(e),
        })?;
        for name in names {
            let name = name.to_str().expect("pitch's own names are UTF-8");
            let path = dir.join(name);
            dir = match dir.sub(name) {
                Ok(sub) => sub,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FormatError::Missing),
                // A link or not a directory (named by the error).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
                    ) && e.raw_os_error().is_none() =>
                {
                    let what = trust::check_own(&path, self.trust)
                        .err()
                        .map_or_else(|| e.to_string(), |u| u.to_string());
                    return Err(FormatError::Untrusted(format!("is not read: {what}")));
                }
                Err(e) => return Err(FormatError::Io(e)),
            };
            if let Err(e) = dir.check(self.trust) {
                return Err(FormatError::Untrusted(format!("is not read: {e}")));
            }
        }
        Ok(dir)
    }

    /// [`TaskPaths::open_dir`] for a write: its refusal as the task's error.
    fn open_dir_for_write(&self, file: &Path) -> Result<Dir, TaskError> {
        self.open_dir().map_err(|e| TaskError::Store {
            path: file.display().to_string(),
            detail: match e {
                FormatError::Missing => "could not write: its task directory is gone".into(),
                e => format!("could not write: {e}"),
            },
        })
    }

    /// Writes the task file (the task directory exists: [`TaskPaths::create`]) through the
    /// checked directory handle.
    pub(crate) fn write_task<T: Serialize>(&self, spec: &T) -> Result<(), TaskError> {
        let dir = self.open_dir_for_write(&self.task_file())?;
        let payload = codec::encode(spec).map_err(|detail| TaskError::Encode {
            what: FileKind::Task.name().to_string(),
            detail,
        })?;
        write_in(&dir, TASK_FILE, FileKind::Task, &payload, self.durable)
    }

    /// Reads the task file, after the same checks as [`TaskPaths::read_result`].
    pub(crate) fn read_task<T: serde::de::DeserializeOwned>(&self) -> Result<T, FormatError> {
        let dir = self.open_dir()?;
        let payload = read_opened(dir.open_read(TASK_FILE), FileKind::Task)?;
        codec::decode(&payload).map_err(FormatError::Decode)
    }

    /// Reads the stored result; `Missing` when the task has not finished. A result in a
    /// directory pitch cannot trust (a planted link) is not read.
    pub(crate) fn read_result(&self) -> Result<ResultRecord, FormatError> {
        let dir = self.open_dir()?;
        read_value_bound_in(&dir, RESULT_FILE, FileKind::Result, &self.key)
    }

    /// Before a task runs again although it has a result (`with_fresh`): moves that result
    /// aside, so the rerun's outcome is its own. A result left aside by a driver that died
    /// meanwhile is put back first.
    pub(crate) fn set_aside_result(&self) -> Result<(), TaskError> {
        let result = self.result_file();
        let io = |e: io::Error| TaskError::Store {
            path: result.display().to_string(),
            detail: format!("could not set the earlier result aside: {e}"),
        };
        let dir = match self.open_dir() {
            Ok(dir) => dir,
            Err(FormatError::Missing) => return Ok(()),
            Err(e) => return Err(e.into_task_error(&result)),
        };
        if dir.exists(PREVIOUS_RESULT_FILE) && !dir.exists(RESULT_FILE) {
            dir.rename(PREVIOUS_RESULT_FILE, RESULT_FILE).map_err(io)?;
        }
        match dir.rename(RESULT_FILE, PREVIOUS_RESULT_FILE) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    /// After a rerun: a failure gives the earlier finished result back its place (a finished
    /// result is never replaced by a failure); otherwise the earlier one goes.
    pub(crate) fn settle_rerun(&self, succeeded: bool) {
        let Ok(dir) = self.open_dir() else {
            return;
        };
        let finished_before = read_value_bound_in::<ResultRecord>(
            &dir,
            PREVIOUS_RESULT_FILE,
            FileKind::Result,
            &self.key,
        )
        .is_ok_and(|r| r.outcome.is_ok());
        if !succeeded && finished_before {
            let _ = dir.rename(PREVIOUS_RESULT_FILE, RESULT_FILE);
        } else {
            let _ = dir.unlink(PREVIOUS_RESULT_FILE);
        }
    }

    /// The stored result when it is a finished (Ok) one: nothing may replace it by a failure.
    pub(crate) fn finished_result(&self) -> Option<ResultRecord> {
        self.read_result().ok().filter(|r| r.outcome.is_ok())
    }

    /// Publishes a result, except that a finished (Ok) result already there is never replaced
    /// by a failure: the stored one wins and is returned. Once a finished result is written,
    /// the task's checkpoint goes: a later run (`with_fresh`) starts from the beginning.
    pub(crate) fn publish_result(&self, record: ResultRecord) -> ResultRecord {
        if record.outcome.is_err() {
            if let Some(existing) = self.finished_result() {
                return existing;
            }
        }
        let written = self
            .open_dir_for_write(&self.result_file())
            .and_then(|dir| {
                write_value_bound_in(
                    &dir,
                    RESULT_FILE,
                    FileKind::Result,
                    &self.key,
                    &record,
                    self.durable,
                )
            });
        match written {
            Ok(()) => {
                if record.outcome.is_ok() {
                    self.remove_checkpoint();
                }
                record
            }
            Err(e) if record.outcome.is_ok() => ResultRecord { outcome: Err(e) },
            Err(_) => record,
        }
    }

    /// Saves the task's checkpoint atomically (creating the task directory when missing: a
    /// pooled task has none): a reader sees the previous checkpoint or this one, never a
    /// torn file.
    pub(crate) fn write_checkpoint(&self, record: &CheckpointRecord) -> Result<(), TaskError> {
        self.create()?;
        let dir = self.open_dir_for_write(&self.checkpoint_file())?;
        write_value_bound_in(
            &dir,
            CHECKPOINT_FILE,
            FileKind::Checkpoint,
            &self.key,
            record,
            self.durable,
        )
    }

    /// The task's checkpoint, if it saved one: `Ok(None)` when there is none; a file that is
    /// not this task's (copied from another task's directory), corrupted or in a directory
    /// pitch cannot trust is an error, never read as the task's state.
    pub(crate) fn read_checkpoint(&self) -> Result<Option<CheckpointRecord>, TaskError> {
        let read = self.open_dir().and_then(|dir| {
            read_value_bound_in(&dir, CHECKPOINT_FILE, FileKind::Checkpoint, &self.key)
        });
        match read {
            Ok(record) => Ok(Some(record)),
            Err(FormatError::Missing) => Ok(None),
            Err(e) => Err(e.into_task_error(&self.checkpoint_file())),
        }
    }

    /// Removes the task's checkpoint (once it has finished), if any.
    pub(crate) fn remove_checkpoint(&self) {
        if let Ok(dir) = self.open_dir() {
            let _ = dir.unlink(CHECKPOINT_FILE);
        }
    }

    /// Clears what a failed attempt left before the task is submitted again: a failed result,
    /// the exit file, and the rank files of its `ranks` (a new job must not find them and
    /// take them for its own). A finished result is never touched.
    pub(crate) fn clear_failed_attempt(&self, ranks: u32) {
        if self.finished_result().is_some() {
            return;
        }
        let Ok(dir) = self.open_dir() else {
            return;
        };
        let _ = dir.unlink(RESULT_FILE);
        let _ = dir.unlink(EXIT_FILE);
        if ranks > 1 {
            for rank in 0..ranks {
                let _ = dir.unlink(&rank_name(rank));
            }
        }
    }

    /// Writes rank `record.rank`'s file of a multi-rank task.
    pub(crate) fn write_rank(&self, record: &RankRecord) -> Result<(), TaskError> {
        let dir = self.open_dir_for_write(&self.rank_file(record.rank))?;
        write_value_bound_in(
            &dir,
            &rank_name(record.rank),
            FileKind::Rank,
            &self.key,
            record,
            self.durable,
        )
    }

    /// Gathers the rank files of a `size`-rank task into its result: the values of all ranks,
    /// or the failure of the lowest failing rank. Rank files are removed once gathered.
    pub(crate) fn gather_ranks(&self, size: u32) -> ResultRecord {
        let mut values = Vec::with_capacity(size as usize);
        let mut failure: Option<TaskError> = None;
        let dir = self.open_dir();
        for rank in 0..size {
            let path = self.rank_file(rank);
            let read = dir.as_ref().map_err(|e| match e {
                FormatError::Missing => FormatError::Missing,
                e => FormatError::Untrusted(e.to_string()),
            });
            let read = read.and_then(|dir| {
                read_value_bound_in::<RankRecord>(dir, &rank_name(rank), FileKind::Rank, &self.key)
            });
            let outcome = match read {
                Ok(rec) => rec.outcome,
                Err(FormatError::Missing) => Err(TaskError::WorkerDied {
                    status: "no result from this rank".into(),
                    stderr_tail: String::new(),
                }),
                Err(e) => Err(e.into_task_error(&path)),
            };
            match outcome {
                Ok(v) => values.push(v),
                Err(cause) => {
                    // A rank stopped because another rank failed is not the cause: prefer
                    // a rank with a real error over one that checkpointed (the ranks stop
                    // together), and that over one that merely has no result.
                    let keep = match &failure {
                        None => true,
                        Some(TaskError::Rank { cause: c, .. }) => {
                            rank_failure_weight(&cause) > rank_failure_weight(c)
                        }
                        Some(_) => false,
                    };
                    if keep {
                        failure = Some(TaskError::Rank {
                            rank,
                            size,
                            cause: Box::new(cause),
                        });
                    }
                }
            }
        }
        let record = ResultRecord {
            outcome: match failure {
                // The ranks stopped to be resumed (rank 0 saved the state): the task's
                // attempt ends so, whichever rank said it first.
                Some(TaskError::Rank { cause, .. })
                    if matches!(*cause, TaskError::Checkpointed { .. }) =>
                {
                    Err(*cause)
                }
                Some(e) => Err(e),
                None => Ok(values),
            },
        };
        let record = self.publish_result(record);
        if let Ok(dir) = &dir {
            for rank in 0..size {
                let _ = dir.unlink(&rank_name(rank));
            }
        }
        record
    }

    /// When the task directory last changed (`fstat` of its checked handle,
    /// [`TaskPaths::open_dir`]: a link there is refused, never followed).
    pub(crate) fn modified(&self) -> Result<std::time::SystemTime, FormatError> {
        Ok(self.open_dir()?.metadata()?.modified()?)
    }

    /// The task's `stdout` file in its directory, when it is a regular file opened through
    /// the checked handle: `None` when there is none, or when a link (or anything but a
    /// regular file) is there.
    pub(crate) fn stdout_file(&self) -> Option<PathBuf> {
        self.open_in_dir("stdout").ok().map(|_| self.stdout())
    }
}

/// Which rank's failure names a multi-rank task's: a real error (2) over a checkpoint (1) over
/// a rank that merely left no result (0), stopped because another rank ended.
pub(crate) fn rank_failure_weight(cause: &TaskError) -> u8 {
    match cause {
        TaskError::WorkerDied { .. } => 0,
        TaskError::Checkpointed { .. } => 1,
        _ => 2,
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
