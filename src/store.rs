//! The on-disk layout of the cache directory, owned by [`Store`]: nobody else joins paths.
//!
//! ```text
//! <cache_directory>/
//!   bin/<hash>/<exe>          content-addressed copy of the driver binary (cluster backends)
//!   tasks/<k0k1>/<key>/       one directory per task, sharded by the key's first two hex digits
//!       task.bin              what to run
//!       result.bin            the outcome (values of every rank, or a TaskError)
//!       rank.<r>.bin          a rank's outcome, before the ranks are gathered into result.bin
//!       stdout, stderr        kept only when the task wrote something
//!   jobs/                     the scheduler journal (cluster backends)
//! ```
//!
//! Every file starts with a 32-byte header: magic `PTCH`, format version, file kind, payload
//! length and a BLAKE3 checksum of the payload. Files are written to a temporary name in the same
//! directory and renamed, so a reader sees the whole file or none. Directories are created 0700.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, TaskError};
use crate::task::TaskKey;

const MAGIC: [u8; 4] = *b"PTCH";
/// The on-disk format version; a file of another version is refused.
pub(crate) const FORMAT_VERSION: u16 = 1;
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
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Task => "task file",
            FileKind::Result => "result file",
            FileKind::Rank => "rank result file",
            FileKind::Journal => "journal file",
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

/// Reads and checks a file, returning its payload.
pub(crate) fn read_checked(path: &Path, kind: FileKind) -> Result<Vec<u8>, FormatError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FormatError::Missing),
        Err(e) => return Err(e.into()),
    };
    let limit = (codec::DECODE_LIMIT + HEADER_LEN) as u64;
    let len = file.metadata()?.len();
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

/// Reads, checks and decodes a file.
pub(crate) fn read_value<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: FileKind,
) -> Result<T, FormatError> {
    let payload = read_checked(path, kind)?;
    codec::decode(&payload).map_err(FormatError::Decode)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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
    write_bytes_atomic(path, &bytes, durable)
}

/// Writes `bytes` as they are to `path` atomically (mode 0600): a temporary file in the same
/// directory, optionally fsynced, then renamed over `path`.
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
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
            .mode(0o600)
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
    result
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

/// Creates a directory and its parents with mode 0700.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// What a finished task left behind: the encoded value of every rank, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResultRecord {
    pub outcome: Result<Vec<Vec<u8>>, TaskError>,
}

/// One rank's outcome, before the ranks are gathered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RankRecord {
    pub rank: u32,
    pub outcome: Result<Vec<u8>, TaskError>,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    root: PathBuf,
    durable: bool,
}

impl Store {
    /// Opens (creating it 0700 when missing) the cache directory at `root`.
    pub(crate) fn open(root: &Path, durable: bool) -> Result<Store, Error> {
        create_dir(&root.join("tasks")).map_err(|e| Error::io(root, e))?;
        let root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        Ok(Store { root, durable })
    }

    /// A store handle for a worker: the directory must exist already.
    pub(crate) fn at(root: PathBuf, durable: bool) -> Store {
        Store { root, durable }
    }

    /// The cache directory's absolute path.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether writes are fsynced before the rename.
    pub(crate) fn durable(&self) -> bool {
        self.durable
    }

    /// The paths of one task.
    pub(crate) fn task(&self, key: &TaskKey) -> TaskPaths {
        let hex = key.to_string();
        TaskPaths {
            root: self.root.clone(),
            dir: self.root.join("tasks").join(&hex[..2]).join(&hex),
            durable: self.durable,
        }
    }
}

/// Every path of one task. The only type that knows file names inside a task directory.
#[derive(Debug, Clone)]
pub(crate) struct TaskPaths {
    root: PathBuf,
    dir: PathBuf,
    durable: bool,
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
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
    pub(crate) fn task_file(&self) -> PathBuf {
        self.dir.join("task.bin")
    }
    pub(crate) fn result_file(&self) -> PathBuf {
        self.dir.join("result.bin")
    }
    pub(crate) fn rank_file(&self, rank: u32) -> PathBuf {
        self.dir.join(format!("rank.{rank}.bin"))
    }
    pub(crate) fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }
    pub(crate) fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }
    /// The exit code a command's job script leaves for the driver to collect.
    pub(crate) fn exit_file(&self) -> PathBuf {
        self.dir.join("exit")
    }

    /// Creates the task directory (and its shard) 0700.
    pub(crate) fn create(&self) -> Result<(), TaskError> {
        create_dir(&self.dir).map_err(|e| TaskError::Store {
            path: self.dir.display().to_string(),
            detail: format!("could not create the task directory: {e}"),
        })
    }

    /// Reads the stored result; `Missing` when the task has not finished.
    pub(crate) fn read_result(&self) -> Result<ResultRecord, FormatError> {
        read_value(&self.result_file(), FileKind::Result)
    }

    /// The stored result when it is a finished (Ok) one: nothing may replace it by a failure.
    pub(crate) fn finished_result(&self) -> Option<ResultRecord> {
        self.read_result().ok().filter(|r| r.outcome.is_ok())
    }

    /// Publishes a result, except that a finished (Ok) result already there is never replaced
    /// by a failure: the stored one wins and is returned.
    pub(crate) fn publish_result(&self, record: ResultRecord) -> ResultRecord {
        if record.outcome.is_err() {
            if let Some(existing) = self.finished_result() {
                return existing;
            }
        }
        match write_value(&self.result_file(), FileKind::Result, &record, self.durable) {
            Ok(()) => record,
            Err(e) if record.outcome.is_ok() => ResultRecord { outcome: Err(e) },
            Err(_) => record,
        }
    }

    /// Gathers the rank files of a `size`-rank task into its result: the values of all ranks,
    /// or the failure of the lowest failing rank. Rank files are removed once gathered.
    pub(crate) fn gather_ranks(&self, size: u32) -> ResultRecord {
        let mut values = Vec::with_capacity(size as usize);
        let mut failure: Option<TaskError> = None;
        for rank in 0..size {
            let path = self.rank_file(rank);
            let outcome = match read_value::<RankRecord>(&path, FileKind::Rank) {
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
                    // a rank with a real error over one that merely has no result.
                    let real = !matches!(cause, TaskError::WorkerDied { .. });
                    let keep = match &failure {
                        None => true,
                        Some(TaskError::Rank { cause: c, .. }) => {
                            real && matches!(**c, TaskError::WorkerDied { .. })
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
                Some(e) => Err(e),
                None => Ok(values),
            },
        };
        let record = self.publish_result(record);
        for rank in 0..size {
            let _ = fs::remove_file(self.rank_file(rank));
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_size_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.bin");
        // Sparse: no disk space is used.
        let f = File::create(&path).unwrap();
        f.set_len((codec::DECODE_LIMIT + HEADER_LEN + 1) as u64)
            .unwrap();
        assert!(matches!(
            read_checked(&path, FileKind::Result),
            Err(FormatError::TooLarge)
        ));
    }

    #[test]
    fn header_round_trip_and_every_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.bin");
        let rec = ResultRecord {
            outcome: Ok(vec![vec![1, 2, 3]]),
        };
        write_value(&path, FileKind::Result, &rec, true).unwrap();
        let back: ResultRecord = read_value(&path, FileKind::Result).unwrap();
        assert_eq!(back, rec);

        // Read as the wrong kind.
        let err = read_value::<ResultRecord>(&path, FileKind::Task).unwrap_err();
        assert!(
            err.to_string().contains("result file where a task file"),
            "{err}"
        );

        let good = fs::read(&path).unwrap();
        // Truncated.
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        fs::write(&path, &good[..10]).unwrap();
        let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // Flipped payload byte.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0xff;
        fs::write(&path, &bad).unwrap();
        let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // Another format version.
        let mut other = good.clone();
        other[4] = 99;
        fs::write(&path, &other).unwrap();
        let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
        assert!(err.to_string().contains("format version 99"), "{err}");
        // Not ours at all.
        fs::write(&path, b"#!/bin/sh\necho hello world, this is long enough\n").unwrap();
        let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
        // Missing.
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_value::<ResultRecord>(&path, FileKind::Result),
            Err(FormatError::Missing)
        ));
    }

    #[test]
    fn a_failure_never_replaces_a_finished_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let paths = store.task(&TaskKey::from_bytes([7; 16]));
        paths.create().unwrap();
        let ok = ResultRecord {
            outcome: Ok(vec![vec![42]]),
        };
        paths.publish_result(ok.clone());
        let kept = paths.publish_result(ResultRecord {
            outcome: Err(TaskError::Cancelled),
        });
        assert_eq!(kept, ok);
        assert_eq!(paths.read_result().unwrap(), ok);
    }

    #[test]
    fn directories_are_private_and_sharded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache"), false).unwrap();
        let key = TaskKey::from_bytes([0xab; 16]);
        let paths = store.task(&key);
        paths.create().unwrap();
        assert!(paths.dir().parent().unwrap().ends_with("tasks/ab"));
        for p in [store.root().to_path_buf(), paths.dir().to_path_buf()] {
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
    }

    #[test]
    fn gather_names_the_failing_rank() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let paths = store.task(&TaskKey::from_bytes([1; 16]));
        paths.create().unwrap();
        let rank = |r: u32, outcome| {
            write_value(
                &paths.rank_file(r),
                FileKind::Rank,
                &RankRecord { rank: r, outcome },
                false,
            )
            .unwrap()
        };
        rank(0, Ok(vec![0]));
        rank(
            2,
            Err(TaskError::Panicked {
                message: "boom".into(),
                location: None,
            }),
        );
        // rank 1 and 3 left no file (stopped after rank 2 failed)
        let rec = paths.gather_ranks(4);
        match rec.outcome {
            Err(TaskError::Rank { rank, size, cause }) => {
                assert_eq!((rank, size), (2, 4));
                assert!(matches!(*cause, TaskError::Panicked { .. }));
            }
            other => panic!("{other:?}"),
        }
        assert!(!paths.rank_file(0).exists());
    }
}
