//! The result log: where pooled tasks (`block_allocation`) keep their results instead of a
//! directory and two files per task.
//!
//! ```text
//! <cache_directory>/log/<nanos>-<pid>.plog   one file per driver process that wrote results
//! ```
//!
//! A log is a sequence of records, each written with one `write(2)` on a file opened
//! `O_APPEND`: a 4-byte magic `PLR1`, the payload length (u32, little endian), the first 16
//! bytes of the payload's BLAKE3 hash, then the payload (the bincode of [`LogRecord`]: key,
//! task name, finish time and the [`ResultRecord`]). A driver killed in the middle of an
//! append leaves a short last record: the reader sees it is cut short and stops there, so at
//! most that record is lost. A record whose checksum fails is skipped (its task runs again);
//! a record whose framing is damaged ends the reading of that file. Each run appends to a
//! new file, never after another run's torn tail.
//!
//! A key may appear more than once (a failure, then a success after a rerun): a finished
//! (Ok) record always wins over a failed one, so a failure never hides a result; among
//! records of the same kind the last one wins.
//!
//! The index of every log of a cache directory is loaded once per process (on the first
//! lookup or append) and kept up to date with this process's own appends; it holds where each
//! record is, not its values, which are read back (and checked again) on a hit.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::dir::Dir;
use crate::store::{FormatError, ResultRecord, Store};
use crate::task::TaskKey;

const MAGIC: [u8; 4] = *b"PLR1";
const HEADER_LEN: usize = 24;
const EXTENSION: &str = "plog";

/// One record of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    pub key: TaskKey,
    /// The task's name (a function's registered name).
    pub name: String,
    /// Seconds since the Unix epoch when the record was written.
    pub finished: u64,
    pub record: ResultRecord,
    /// A command's program and arguments (records folded from a command's task directory).
    pub argv: Option<Vec<String>>,
    /// A `pitch sweep` point's parameters (its `PITCH_PARAM_*` variables).
    pub params: Vec<(String, String)>,
}

fn checksum(payload: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::hash(payload).as_bytes()[..16]);
    out
}

/// The bytes of one record: header and payload.
pub(crate) fn encode_record(record: &LogRecord) -> Result<Vec<u8>, String> {
    let payload = codec::encode(record)?;
    let len = u32::try_from(payload.len()).map_err(|_| {
        format!(
            "a result of {} bytes is too large for the log",
            payload.len()
        )
    })?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&checksum(&payload));
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// What reading one log found besides its records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Records whose checksum failed (skipped).
    pub corrupt: usize,
    /// Whether the file ends in a record cut short or damaged framing (reading stopped).
    pub torn: bool,
    /// Why the file (or the log folder) was not read at all: a link or something else than
    /// a regular file (a directory) in its place, never followed; an error naming it.
    pub refused: Option<String>,
}

/// Reads the log `name` of the log folder `dir` from its start, calling `each(offset,
/// record)` for every sound record.
fn scan(dir: &Dir, name: &str, each: impl FnMut(u64, u32, LogRecord)) -> io::Result<Damage> {
    scan_from(dir.open_regular(name)?, 0, each).map(|(damage, _)| damage)
}

/// [`scan`] of the open log `opened` (a regular file of the log folder, opened through its
/// handle) from byte `start` (a record's start); also returns where the last whole record
/// read ends (a torn tail, perhaps a record being appended, is left for a later read).
fn scan_from(
    mut opened: File,
    start: u64,
    mut each: impl FnMut(u64, u32, LogRecord),
) -> io::Result<(Damage, u64)> {
    std::io::Seek::seek(&mut opened, io::SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 16, opened);
    let mut damage = Damage::default();
    let mut offset = start;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        match read_full(&mut reader, &mut header)? {
            0 => return Ok((damage, offset)),
            n if n < HEADER_LEN => {
                damage.torn = true;
                return Ok((damage, offset));
            }
            _ => {}
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if header[0..4] != MAGIC || len as usize > codec::DECODE_LIMIT {
            damage.torn = true;
            return Ok((damage, offset));
        }
        // Read through `take`, so memory grows with the bytes present, never to what a
        // damaged length claims.
        payload.clear();
        (&mut reader)
            .take(u64::from(len))
            .read_to_end(&mut payload)?;
        if payload.len() < len as usize {
            damage.torn = true;
            return Ok((damage, offset));
        }
        let sound = header[8..24] == checksum(&payload);
        match sound
            .then(|| codec::decode::<LogRecord>(&payload).ok())
            .flatten()
        {
            Some(record) => each(offset, len, record),
            None => damage.corrupt += 1,
        }
        offset += (HEADER_LEN + len as usize) as u64;
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The folder of the result logs of the cache directory `root` (its path, for messages).
fn log_dir(root: &Path) -> PathBuf {
    Store::at(root.to_path_buf(), false).log_dir()
}

/// The log folder of the cache directory `root` as a checked handle (never through a link:
/// one there is an error naming it); `None` when there is none yet.
fn open_log_dir(root: &Path) -> io::Result<Option<Dir>> {
    match Store::at(root.to_path_buf(), false).log_handle(false) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names of the logs in the log folder `dir`, oldest first (their names start with the
/// time). Whatever is in a log's place is opened through the handle as a regular file only:
/// a link planted among the logs is refused then, never followed.
fn log_names(dir: &Dir) -> Vec<String> {
    let mut names: Vec<String> = dir
        .entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with('.') && Path::new(n).extension() == Some(EXTENSION.as_ref()))
        .collect();
    names.sort();
    names
}

/// The log folder of `root` and its logs' names (none when it cannot be opened).
fn listed(root: &Path) -> Option<(Dir, Vec<String>)> {
    let dir = open_log_dir(root).ok().flatten()?;
    let names = log_names(&dir);
    Some((dir, names))
}

/// The log files of a cache directory, oldest first.
#[cfg(test)]
pub(crate) fn log_files(root: &Path) -> Vec<PathBuf> {
    listed(root).map_or_else(Vec::new, |(dir, names)| {
        names.iter().map(|n| dir.join(n)).collect()
    })
}

/// The modification time of the folder `dir` (`fstat` of its handle).
fn mtime(dir: &Dir) -> Option<SystemTime> {
    dir.metadata().and_then(|m| m.modified()).ok()
}

/// The length of the log `name` of `dir` (`fstat` of the file opened through the handle).
fn log_len(dir: &Dir, name: &str) -> Option<u64> {
    dir.open_regular(name)
        .and_then(|f| f.metadata())
        .ok()
        .map(|m| m.len())
}

/// Where a record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: usize,
    offset: u64,
    len: u32,
    ok: bool,
}

/// Whether a record found later replaces the one indexed: a finished result is never
/// replaced by a failure.
fn replaces(new_ok: bool, old: Option<&Loc>) -> bool {
    match old {
        None => true,
        Some(old) => new_ok || !old.ok,
    }
}

struct Writer {
    file: File,
    /// Its name in the log folder.
    name: String,
    index: usize,
    offset: u64,
}

struct Inner {
    /// The log folder, opened through handles (not through a link) and checked; `None`
    /// while there is none (it is opened when it appears, created on the first append).
    dir: Option<Arc<Dir>>,
    /// The logs' names in it.
    files: Vec<String>,
    /// Each file's length when it was read (this process's own file: its writer's offset),
    /// and the log folder's modification time then: what [`LogSet::stale`] compares.
    lengths: Vec<u64>,
    dir_mtime: Option<std::time::SystemTime>,
    index: HashMap<TaskKey, Loc>,
    writer: Option<Writer>,
    /// What loading found damaged, per file (reported once by whoever asks first).
    damage: Vec<(PathBuf, Damage)>,
    /// Damaged files already reported.
    reported: std::collections::HashSet<PathBuf>,
}

/// The logs of one cache directory, as this process sees them.
pub(crate) struct LogSet {
    root: PathBuf,
    inner: Mutex<Inner>,
}

impl LogSet {
    /// The log set of the cache directory `root` (absolute), loaded on first use in this
    /// process and shared by every executor of the process that uses the directory.
    pub(crate) fn of(root: &Path) -> Arc<LogSet> {
        static SETS: OnceLock<Mutex<HashMap<PathBuf, Arc<LogSet>>>> = OnceLock::new();
        let mut sets = SETS.get_or_init(Default::default).lock().unwrap();
        sets.entry(root.to_path_buf())
            .or_insert_with(|| Arc::new(LogSet::load(root)))
            .clone()
    }

    /// The log set of `root`, read again from disk (what other processes appended since this
    /// process first read it); called when an executor is built.
    pub(crate) fn refreshed(root: &Path) -> Arc<LogSet> {
        let set = LogSet::of(root);
        let fresh = LogSet::load(root).inner.into_inner().unwrap();
        {
            let mut inner = set.inner.lock().unwrap();
            let mut writer = inner.writer.take();
            if let Some(w) = writer.as_mut() {
                // Appends go on only where this process left the file: one removed, or
                // changed by someone else, is left alone and a new one is started.
                let intact = fresh
                    .dir
                    .as_ref()
                    .and_then(|d| log_len(d, &w.name))
                    .is_some_and(|len| len == w.offset);
                match fresh.files.iter().position(|f| *f == w.name) {
                    Some(i) if intact => w.index = i,
                    _ => writer = None,
                }
            }
            let reported = std::mem::take(&mut inner.reported);
            *inner = Inner {
                writer,
                damage: fresh
                    .damage
                    .into_iter()
                    .filter(|(p, _)| !reported.contains(p))
                    .collect(),
                reported,
                ..fresh
            };
        }
        set
    }

    fn load(root: &Path) -> LogSet {
        let mut damage = Vec::new();
        let dir = open_log_dir(root).unwrap_or_else(|e| {
            damage.push((
                log_dir(root),
                Damage {
                    refused: Some(e.to_string()),
                    ..Damage::default()
                },
            ));
            None
        });
        let dir_mtime = dir.as_ref().and_then(mtime);
        let files = dir.as_ref().map(log_names).unwrap_or_default();
        let mut lengths = Vec::with_capacity(files.len());
        let mut index: HashMap<TaskKey, Loc> = HashMap::new();
        for (i, name) in files.iter().enumerate() {
            let dir = dir.as_ref().expect("files are listed from the folder");
            let found = dir.open_regular(name).and_then(|file| {
                scan_from(file, 0, |offset, len, record| {
                    let ok = record.record.outcome.is_ok();
                    if replaces(ok, index.get(&record.key)) {
                        index.insert(
                            record.key,
                            Loc {
                                file: i,
                                offset,
                                len,
                                ok,
                            },
                        );
                    }
                })
            });
            // Where the whole records end: what is appended after is read by `catch_up`.
            lengths.push(found.as_ref().map_or(0, |(_, end)| *end));
            match found {
                Ok((d, _)) if d == Damage::default() => {}
                Ok((d, _)) => damage.push((dir.join(name), d)),
                // A link (or anything but a regular file) in a log's place: refused, named.
                Err(e) if e.raw_os_error().is_none() => damage.push((
                    dir.join(name),
                    Damage {
                        refused: Some(e.to_string()),
                        ..Damage::default()
                    },
                )),
                Err(_) => damage.push((
                    dir.join(name),
                    Damage {
                        torn: true,
                        ..Damage::default()
                    },
                )),
            }
        }
        LogSet {
            root: root.to_path_buf(),
            inner: Mutex::new(Inner {
                dir: dir.map(Arc::new),
                files,
                lengths,
                dir_mtime,
                index,
                writer: None,
                damage,
                reported: Default::default(),
            }),
        }
    }

    /// The log folder's handle, opened now if it appeared since (another process's first
    /// append); `None` while there is none.
    fn log_folder(&self, inner: &mut Inner) -> Option<Arc<Dir>> {
        if inner.dir.is_none() {
            inner.dir = open_log_dir(&self.root).ok().flatten().map(Arc::new);
        }
        inner.dir.clone()
    }

    /// Whether another process may have logged results since this set was read: a log file
    /// appeared (the folder changed) or one of the files read grew. A few `stat` calls; the
    /// engine asks before it runs a task it found no result for, and reads the logs again
    /// when so (a second driver that finished a task after this one started).
    pub(crate) fn stale(&self) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let Some(dir) = self.log_folder(&mut inner) else {
            return false;
        };
        if mtime(&dir) != inner.dir_mtime {
            return true;
        }
        inner.files.iter().enumerate().any(|(i, name)| {
            let expected = match &inner.writer {
                Some(w) if w.index == i => w.offset,
                _ => inner.lengths[i],
            };
            log_len(&dir, name).is_some_and(|len| len != expected)
        })
    }

    /// Reads what other processes logged since this set last read the logs: the new records
    /// of grown files and new files (not the whole logs again, as [`LogSet::refreshed`]
    /// does), so a driver beside another one keeps up at the cost of what was appended.
    pub(crate) fn catch_up(&self) {
        let mut inner = self.inner.lock().unwrap();
        let Some(dir) = self.log_folder(&mut inner) else {
            return;
        };
        inner.dir_mtime = mtime(&dir);
        for name in log_names(&dir) {
            if !inner.files.contains(&name) {
                inner.files.push(name);
                inner.lengths.push(0);
            }
        }
        let own = inner.writer.as_ref().map(|w| w.index);
        for i in 0..inner.files.len() {
            if Some(i) == own {
                continue;
            }
            let from = inner.lengths[i];
            // Opened through the folder's handle, a regular file only (a link is passed over).
            let Ok(file) = dir.open_regular(&inner.files[i]) else {
                continue;
            };
            if !file.metadata().is_ok_and(|m| m.len() > from) {
                continue;
            }
            let mut found = Vec::new();
            let Ok((_, end)) = scan_from(file, from, |offset, len, record| {
                found.push((record.key, offset, len, record.record.outcome.is_ok()));
            }) else {
                continue;
            };
            for (key, offset, len, ok) in found {
                if replaces(ok, inner.index.get(&key)) {
                    inner.index.insert(
                        key,
                        Loc {
                            file: i,
                            offset,
                            len,
                            ok,
                        },
                    );
                }
            }
            inner.lengths[i] = end;
        }
    }

    /// The folder of the logs (its path, for messages: the one its handle was opened at).
    pub(crate) fn dir(&self) -> PathBuf {
        match &self.inner.lock().unwrap().dir {
            Some(dir) => dir.path().to_path_buf(),
            None => log_dir(&self.root),
        }
    }

    /// Describes, once, what loading found damaged: one message per damaged log.
    pub(crate) fn take_damage(&self) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap();
        let damage = std::mem::take(&mut inner.damage);
        inner.reported.extend(damage.iter().map(|(p, _)| p.clone()));
        damage
            .into_iter()
            .map(|(path, d)| {
                if let Some(why) = d.refused {
                    return format!(
                        "result log {}: not read ({why}); the tasks it holds run again",
                        path.display()
                    );
                }
                let mut what = Vec::new();
                if d.corrupt > 0 {
                    what.push(format!("{} records fail their checksum", d.corrupt));
                }
                if d.torn {
                    what.push(
                        "it ends in a record cut short (a crash while it was written)".into(),
                    );
                }
                format!(
                    "result log {}: {}; those tasks run again",
                    path.display(),
                    what.join(" and ")
                )
            })
            .collect()
    }

    /// The stored result of `key`: a finished one if any record has it, else the last
    /// failure; `Missing` when no log has the key.
    pub(crate) fn lookup(&self, key: &TaskKey) -> Result<ResultRecord, FormatError> {
        let (dir, name, loc) = {
            let inner = self.inner.lock().unwrap();
            let Some(loc) = inner.index.get(key).copied() else {
                return Err(FormatError::Missing);
            };
            // (An indexed record was read from the folder, or appended to it.)
            let Some(dir) = inner.dir.clone() else {
                return Err(FormatError::Missing);
            };
            (dir, inner.files[loc.file].clone(), loc)
        };
        let path = dir.join(&name);
        let mut bytes = vec![0u8; HEADER_LEN + loc.len as usize];
        dir.open_regular(&name)?
            .read_exact_at(&mut bytes, loc.offset)?;
        if bytes[0..4] != MAGIC || bytes[8..24] != checksum(&bytes[HEADER_LEN..]) {
            return Err(FormatError::Checksum);
        }
        let record: LogRecord = codec::decode(&bytes[HEADER_LEN..]).map_err(FormatError::Decode)?;
        if record.key != *key {
            return Err(FormatError::Decode(format!(
                "the record at offset {} of {} is not the one of task {key}",
                loc.offset,
                path.display()
            )));
        }
        Ok(record.record)
    }

    /// Appends a task's result to this process's log (created on the first append), with one
    /// write; `durable` syncs it to disk before returning.
    pub(crate) fn append(
        &self,
        key: TaskKey,
        name: &str,
        record: &ResultRecord,
        durable: bool,
    ) -> Result<(), String> {
        let finished = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.append_record(
            &LogRecord {
                key,
                name: name.to_string(),
                finished,
                record: record.clone(),
                argv: None,
                params: Vec::new(),
            },
            durable,
        )
    }

    /// Whether the logs hold a finished result of `key`.
    fn has_finished(&self, key: &TaskKey) -> bool {
        self.inner
            .lock()
            .unwrap()
            .index
            .get(key)
            .is_some_and(|l| l.ok)
    }

    /// Syncs this process's log to disk.
    fn sync(&self) -> io::Result<()> {
        match &self.inner.lock().unwrap().writer {
            Some(w) => w.file.sync_all(),
            None => Ok(()),
        }
    }

    fn append_record(&self, record: &LogRecord, durable: bool) -> Result<(), String> {
        let key = record.key;
        let record_ok = record.record.outcome.is_ok();
        let bytes = encode_record(record)?;
        let mut inner = self.inner.lock().unwrap();
        if inner.writer.is_none() {
            let (file, name) = self.create(&mut inner).map_err(|e| {
                format!(
                    "could not create a result log in {}: {e}",
                    log_dir(&self.root).display()
                )
            })?;
            inner.files.push(name.clone());
            inner.lengths.push(0);
            // Its own new file changed the folder: not a sign of another process.
            inner.dir_mtime = inner.dir.as_deref().and_then(mtime);
            let index = inner.files.len() - 1;
            inner.writer = Some(Writer {
                file,
                name,
                index,
                offset: 0,
            });
        }
        let writer = inner.writer.as_mut().expect("created above");
        let offset = writer.offset;
        let file_index = writer.index;
        let written = writer.file.write_all(&bytes).and_then(|()| {
            if durable {
                writer.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // The file may now end in part of this record: start a new one next time.
            inner.writer = None;
            return Err(format!("could not append to the result log: {e}"));
        }
        writer.offset += bytes.len() as u64;
        let ok = record_ok;
        if replaces(ok, inner.index.get(&key)) {
            inner.index.insert(
                key,
                Loc {
                    file: file_index,
                    offset,
                    len: (bytes.len() - HEADER_LEN) as u32,
                    ok,
                },
            );
        }
        Ok(())
    }

    /// Creates this process's log (its name) in the log folder, which is created 0700 when
    /// missing and opened again through handles (never through a link; checked like every
    /// folder pitch writes into: ours, nobody else may write).
    fn create(&self, inner: &mut Inner) -> io::Result<(File, String)> {
        let dir = Arc::new(Store::at(self.root.clone(), false).log_handle(true)?);
        inner.dir = Some(dir.clone());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{nanos:020}-{}.{EXTENSION}", std::process::id());
        let file = dir.openat(
            &name,
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        Ok((file, name))
    }
}

/// The stored result of `key` in the logs of the cache directory `root`.
pub(crate) fn lookup(root: &Path, key: &TaskKey) -> Result<ResultRecord, FormatError> {
    LogSet::of(root).lookup(key)
}

/// One task found in the logs, for [`crate::Cache`]: its newest record (a finished one over
/// any failure) and the log file that holds it.
pub(crate) struct Logged {
    pub key: TaskKey,
    pub name: String,
    pub finished: SystemTime,
    pub record: ResultRecord,
    pub file: PathBuf,
    pub argv: Option<Vec<String>>,
    pub params: Vec<(String, String)>,
}

/// Whether `path` is a result log (not a task directory).
pub(crate) fn is_log(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(EXTENSION)
        && path.symlink_metadata().is_ok_and(|m| m.is_file())
}

/// Every task of the logs of `root`, read afresh from disk (damaged records left out).
pub(crate) fn logged_tasks(root: &Path) -> Vec<Logged> {
    let mut found: HashMap<TaskKey, Logged> = HashMap::new();
    let Some((dir, names)) = listed(root) else {
        return Vec::new();
    };
    for name in names {
        let path = dir.join(&name);
        let _ = scan(&dir, &name, |_, _, r| {
            let ok = r.record.outcome.is_ok();
            let keep = match found.get(&r.key) {
                None => true,
                Some(old) => ok || old.record.outcome.is_err(),
            };
            if keep {
                found.insert(
                    r.key,
                    Logged {
                        key: r.key,
                        name: r.name,
                        finished: UNIX_EPOCH + Duration::from_secs(r.finished),
                        record: r.record,
                        file: path.clone(),
                        argv: r.argv,
                        params: r.params,
                    },
                );
            }
        });
    }
    found.into_values().collect()
}

/// Every sound record of `key` in the logs of `root`, in the order they were written (oldest
/// log first), read afresh from disk: the tests' view of how often a task was recorded.
pub(crate) fn records_of(root: &Path, key: &TaskKey) -> Vec<ResultRecord> {
    let mut out = Vec::new();
    let Some((dir, names)) = listed(root) else {
        return out;
    };
    for name in names {
        let _ = scan(&dir, &name, |_, _, r| {
            if r.key == *key {
                out.push(r.record);
            }
        });
    }
    out
}

/// What [`Cache::compact`](crate::Cache::compact) (`pitch gc --compact`) did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Task directories folded into the result log (and removed).
    pub folded: usize,
    /// Finished task directories left as they are: they hold more than a task and a result
    /// file (the task's stdout or stderr, rank files), or are younger than asked.
    pub kept: usize,
}

/// Folds the directories of finished tasks (a finished result, nothing but `task.bin` and
/// `result.bin`, last changed at least `older_than` ago) into a result log of this process,
/// then removes them. Safe to interrupt at any point: every record is written and synced to
/// disk before any directory goes, a record cut short is detected and skipped when read, and
/// a directory whose task is already in a log with a finished result is only removed, so
/// running it again finishes the work and loses nothing.
pub(crate) fn compact(root: &Path, older_than: Duration) -> Result<Compacted, String> {
    use crate::task::{TaskKind, TaskSpec};
    let store = Store::at(root.to_path_buf(), false);
    let logs = LogSet::of(root);
    let mut done = Compacted::default();
    let mut foldable: Vec<TaskKey> = Vec::new();
    let now = SystemTime::now();
    for key in store.task_keys().map_err(|e| e.to_string())? {
        {
            let paths = store.task(&key);
            let Ok(record) = paths.read_result() else {
                continue; // unfinished, or unreadable: left alone
            };
            if record.outcome.is_err() {
                continue;
            }
            // The task directory through handles from the cache root (a link on the way is
            // refused, never followed): what it holds and when it last changed (`fstat`).
            let Some(dir) = crate::dir::below(root, paths.dir()).and_then(|(mut names, name)| {
                names.push(name);
                store.dir(&names, false).ok()
            }) else {
                done.kept += 1;
                continue;
            };
            let names = dir.entries().unwrap_or_default();
            let own = [paths.task_file(), paths.result_file()];
            let only_own = names
                .iter()
                .all(|n| own.iter().any(|p| p.file_name() == Some(n.as_os_str())));
            let modified = dir.metadata().and_then(|m| m.modified());
            let young = modified
                .as_ref()
                .ok()
                .and_then(|m| now.duration_since(*m).ok())
                .is_none_or(|age| age < older_than);
            if young || !only_own {
                done.kept += 1;
                continue;
            }
            if !logs.has_finished(&key) {
                let Ok(spec) = paths.read_task::<TaskSpec>() else {
                    done.kept += 1;
                    continue;
                };
                let (name, argv, params) = match &spec.kind {
                    TaskKind::Function { name, .. } => (name.clone(), None, Vec::new()),
                    TaskKind::Command(c) => (
                        c.program_name(),
                        Some(
                            std::iter::once(c.program.clone())
                                .chain(c.args.iter().cloned())
                                .collect(),
                        ),
                        c.env
                            .iter()
                            .filter_map(|(k, v)| {
                                k.strip_prefix("PITCH_PARAM_")
                                    .map(|n| (n.to_string(), v.clone()))
                            })
                            .collect(),
                    ),
                };
                let finished = modified
                    .as_ref()
                    .ok()
                    .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default()
                    .as_secs();
                logs.append_record(
                    &LogRecord {
                        key,
                        name,
                        finished,
                        record,
                        argv,
                        params,
                    },
                    false,
                )?;
            }
            foldable.push(key);
        }
    }
    // Every record is on disk before any directory goes.
    logs.sync()
        .map_err(|e| format!("could not sync the result log: {e}"))?;
    for key in foldable {
        store.remove_task(&key).map_err(|e| e.to_string())?;
        let shard = store.task(&key).dir().parent().map(Path::to_path_buf);
        if let Some((tasks, shard)) = shard.as_deref().and_then(|s| crate::dir::below(root, s)) {
            // Only when it became empty (through the handle of `tasks/`).
            if let Ok(tasks) = store.dir(&tasks, false) {
                let _ = tasks.remove_dir(shard);
            }
        }
        done.folded += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TaskError;

    fn ok(v: u8) -> ResultRecord {
        ResultRecord {
            outcome: Ok(vec![vec![v]]),
        }
    }

    fn failed() -> ResultRecord {
        ResultRecord {
            outcome: Err(TaskError::Cancelled),
        }
    }

    /// Issue 11 (f): results another process logs after this one read the logs are found by
    /// a catch-up that reads only what was appended (new files and grown ones).
    #[test]
    fn another_process_s_appends_are_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            TaskKey::from_bytes([1; 16]),
            TaskKey::from_bytes([2; 16]),
            TaskKey::from_bytes([3; 16]),
        );
        let other = LogSet::load(dir.path());
        other.append(a, "t::a", &ok(1), false).unwrap();
        let mine = LogSet::load(dir.path());
        assert!(!mine.stale(), "nothing new yet");
        mine.append(c, "t::c", &ok(3), false).unwrap();
        assert!(!mine.stale(), "its own appends are no news");
        // The other process appends to its file after this one read it.
        other.append(b, "t::b", &ok(2), false).unwrap();
        assert!(matches!(mine.lookup(&b), Err(FormatError::Missing)));
        assert!(mine.stale());
        mine.catch_up();
        assert!(!mine.stale());
        assert_eq!(mine.lookup(&b).unwrap(), ok(2));
        assert_eq!(mine.lookup(&a).unwrap(), ok(1));
        assert_eq!(mine.lookup(&c).unwrap(), ok(3));
        // A third process's new file.
        let third = LogSet::load(dir.path());
        let d = TaskKey::from_bytes([4; 16]);
        third.append(d, "t::d", &ok(4), false).unwrap();
        assert!(mine.stale());
        mine.catch_up();
        assert_eq!(mine.lookup(&d).unwrap(), ok(4));
        mine.append(d, "t::d", &failed(), false).unwrap();
        assert_eq!(
            mine.lookup(&d).unwrap(),
            ok(4),
            "a failure never hides a result"
        );
    }

    #[test]
    fn appends_are_found_and_a_failure_never_hides_a_result() {
        let dir = tempfile::tempdir().unwrap();
        let set = LogSet::load(dir.path());
        let (a, b) = (TaskKey::from_bytes([1; 16]), TaskKey::from_bytes([2; 16]));
        assert!(matches!(set.lookup(&a), Err(FormatError::Missing)));
        set.append(a, "t::a", &failed(), false).unwrap();
        set.append(a, "t::a", &ok(7), false).unwrap();
        set.append(a, "t::a", &failed(), true).unwrap();
        set.append(b, "t::b", &failed(), false).unwrap();
        assert_eq!(set.lookup(&a).unwrap(), ok(7));
        assert_eq!(set.lookup(&b).unwrap(), failed());
        // A fresh load (another process) sees the same.
        let again = LogSet::load(dir.path());
        assert_eq!(again.lookup(&a).unwrap(), ok(7));
        assert_eq!(again.lookup(&b).unwrap(), failed());
        assert!(again.take_damage().is_empty());
        let listed = logged_tasks(dir.path());
        assert_eq!(listed.len(), 2);
        assert_eq!(log_files(dir.path()).len(), 1, "one file per process");
    }

    /// Every record of every log of `root`, in order.
    fn all_records(root: &Path) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let (dir, names) = listed(root).unwrap();
        for name in names {
            scan(&dir, &name, |_, _, r| out.push(r)).unwrap();
        }
        out
    }

    #[test]
    fn compaction_resumed_after_a_crash_neither_loses_nor_duplicates() {
        use crate::store::{write_value, FileKind, Store};
        use crate::task::{TaskKind, TaskSpec};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false, Default::default()).unwrap();
        let root = store.root().to_path_buf();
        let keys: Vec<TaskKey> = (0..6u8).map(|i| TaskKey::from_bytes([i + 1; 16])).collect();
        for (i, key) in keys.iter().enumerate() {
            let paths = store.task(key);
            paths.create().unwrap();
            let spec = TaskSpec {
                key: *key,
                kind: TaskKind::Function {
                    name: "m::f".into(),
                    fingerprint: "fp".into(),
                    args: vec![],
                },
                ranks: 1,
                threads: 1,
                env: vec![],
                cwd: None,
            };
            write_value(&paths.task_file(), FileKind::Task, &spec, false).unwrap();
            paths.publish_result(ok(i as u8));
        }
        // An earlier compaction crashed: it had logged the first three tasks, the last record
        // cut short, and removed no directory.
        let set = LogSet::of(&root);
        for (i, key) in keys.iter().take(3).enumerate() {
            set.append(*key, "m::f", &ok(i as u8), false).unwrap();
        }
        let file = log_files(&root).remove(0);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();
        let set = LogSet::refreshed(&root);
        assert!(
            !set.has_finished(&keys[2]),
            "the torn record is not a result"
        );
        // The next compaction finishes the work.
        let done = compact(&root, Duration::ZERO).unwrap();
        assert_eq!(done, Compacted { folded: 6, kept: 0 });
        assert!(store.task_keys().unwrap().is_empty());
        let records = all_records(&root);
        for (i, key) in keys.iter().enumerate() {
            let n = records.iter().filter(|r| r.key == *key).count();
            assert_eq!(n, 1, "task {i} has {n} records");
            assert_eq!(LogSet::refreshed(&root).lookup(key).unwrap(), ok(i as u8));
        }
        // Nothing left to do; running it again changes nothing.
        assert_eq!(
            compact(&root, Duration::ZERO).unwrap(),
            Compacted::default()
        );
        assert_eq!(all_records(&root).len(), records.len());
    }

    #[test]
    fn a_torn_tail_loses_only_the_last_record_and_a_bad_checksum_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let set = LogSet::load(dir.path());
        let keys: Vec<TaskKey> = (0..4u8).map(|i| TaskKey::from_bytes([i; 16])).collect();
        for (i, k) in keys.iter().enumerate() {
            set.append(*k, "t::f", &ok(i as u8), false).unwrap();
        }
        let file = log_files(dir.path()).remove(0);
        let mut bytes = std::fs::read(&file).unwrap();
        let record_len = bytes.len() / 4;
        // Flip a payload byte of record 1, cut record 3 short.
        bytes[record_len + HEADER_LEN + 2] ^= 0xff;
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&file, &bytes).unwrap();
        let again = LogSet::load(dir.path());
        assert_eq!(again.lookup(&keys[0]).unwrap(), ok(0));
        assert!(matches!(again.lookup(&keys[1]), Err(FormatError::Missing)));
        assert_eq!(again.lookup(&keys[2]).unwrap(), ok(2));
        assert!(matches!(again.lookup(&keys[3]), Err(FormatError::Missing)));
        let damage = again.take_damage();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert!(
            damage[0].contains("1 records fail their checksum"),
            "{damage:?}"
        );
        assert!(damage[0].contains("cut short"), "{damage:?}");
        assert!(again.take_damage().is_empty(), "reported once");
        // Damage found after loading (a record changed on disk) is an error, not a value.
        let set2 = LogSet::load(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[HEADER_LEN + 1] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        assert!(matches!(set2.lookup(&keys[0]), Err(FormatError::Checksum)));
    }

    /// Issue 14: the log folder, or a log, that is a link (or a FIFO) is refused with a
    /// message naming it: nothing is read through it, nothing appended through it.
    #[test]
    fn links_among_the_logs_are_refused_and_named() {
        use crate::store::Store;
        let d = tempfile::tempdir().unwrap();
        let key = TaskKey::from_bytes([7; 16]);
        // Another cache directory's log, with a result.
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        LogSet::load(&other)
            .append(key, "t::k", &ok(1), false)
            .unwrap();
        let other_logs = other.join("log");
        let other_log = log_files(&other).remove(0);
        let before = std::fs::read(&other_log).unwrap();
        let store = Store::open(&d.path().join("cache"), false, Default::default()).unwrap();
        let root = store.root().to_path_buf();
        // The log folder a link to the other one.
        std::os::unix::fs::symlink(&other_logs, store.log_dir()).unwrap();
        let set = LogSet::load(&root);
        assert!(matches!(set.lookup(&key), Err(FormatError::Missing)));
        assert!(!set.stale());
        set.catch_up();
        assert!(matches!(set.lookup(&key), Err(FormatError::Missing)));
        let named = format!("{} is a symbolic link", store.log_dir().display());
        let damage = set.take_damage();
        assert!(
            damage.len() == 1 && damage[0].contains(&named),
            "{damage:?}"
        );
        let e = set.append(key, "t::k", &ok(2), false).unwrap_err();
        assert!(e.contains(&named), "{e}");
        assert!(logged_tasks(&root).is_empty() && records_of(&root, &key).is_empty());
        // A log that is a link to the other log, and a FIFO in a log's place.
        std::fs::remove_file(store.log_dir()).unwrap();
        std::fs::create_dir(store.log_dir()).unwrap();
        let linked = store.log_file("00000000000000000001-1.plog");
        std::os::unix::fs::symlink(&other_log, &linked).unwrap();
        let fifo = store.log_file("00000000000000000002-1.plog");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let set = LogSet::load(&root);
        assert!(matches!(set.lookup(&key), Err(FormatError::Missing)));
        let damage = set.take_damage();
        assert_eq!(damage.len(), 2, "{damage:?}");
        assert!(
            damage[0].contains(&format!("{} is a symbolic link", linked.display())),
            "{damage:?}"
        );
        assert!(
            damage[1].contains(&format!("{} is not a regular file", fifo.display())),
            "{damage:?}"
        );
        // Appends go to a file of its own, never through the link.
        set.append(key, "t::k", &ok(3), false).unwrap();
        assert_eq!(set.lookup(&key).unwrap(), ok(3));
        assert_eq!(records_of(&root, &key), vec![ok(3)]);
        assert_eq!(std::fs::read(&other_log).unwrap(), before);
        assert_eq!(std::fs::read_dir(&other_logs).unwrap().count(), 1);
    }
}
