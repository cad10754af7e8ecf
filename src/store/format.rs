//! The file format of what pitch stores: the header (magic, format version, kind, length,
//! checksum), its check, and reading and writing payloads relative to a checked directory
//! handle ([`Dir`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;

use crate::codec;
use crate::dir::Dir;
use crate::error::TaskError;
use crate::task::TaskKey;

pub(super) const MAGIC: [u8; 4] = *b"PTCH";
/// The on-disk format version; a file of another version is refused. Version 2: result and
/// rank files start their checksummed payload with their task's key.
pub(crate) const FORMAT_VERSION: u16 = 2;
pub(super) const HEADER_LEN: usize = 32;
pub(super) const CHECKSUM_LEN: usize = 16;

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
    pub(super) fn name(self) -> &'static str {
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

pub(super) fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let hash = blake3::hash(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hash.as_bytes()[..CHECKSUM_LEN]);
    out
}

pub(super) fn header(kind: FileKind, payload: &[u8]) -> [u8; HEADER_LEN] {
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
pub(super) fn read_opened(
    opened: io::Result<File>,
    kind: FileKind,
) -> Result<Vec<u8>, FormatError> {
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
pub(super) fn read_value_bound_in<T: serde::de::DeserializeOwned>(
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
pub(super) fn write_value_bound_in<T: Serialize>(
    dir: &Dir,
    name: &str,
    kind: FileKind,
    key: &TaskKey,
    value: &T,
    durable: bool,
) -> Result<(), TaskError> {
    let encoded = encode(kind, value)?;
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
    write_in(dir, name, kind, &encode(kind, value)?, durable)
}

/// The payload of a file of `kind` holding `value`; an error names the kind.
fn encode<T: Serialize>(kind: FileKind, value: &T) -> Result<Vec<u8>, TaskError> {
    codec::encode(value).map_err(|detail| TaskError::Encode {
        what: kind.name().to_string(),
        detail,
    })
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
pub(super) fn write_in(
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

#[cfg(test)]
pub(crate) use by_path::*;

/// Reads and writes by path, for tests that plant or damage files (pitch itself goes through
/// `Dir` handles).
#[cfg(test)]
mod by_path {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
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
        let payload = encode(kind, value)?;
        write_atomic(path, kind, &payload, durable).map_err(|e| TaskError::Store {
            path: path.display().to_string(),
            detail: format!("could not write: {e}"),
        })
    }
}
