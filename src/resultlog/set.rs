//! [`LogSet`]: the index of the logs of one cache directory as this process sees them, kept
//! up to date with this process's appends and caught up with other processes' ones.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::folder::{log_dir, log_len, log_names, mtime, open_log_dir, EXTENSION};
use super::record::{checksum, encode_record, scan_from, Damage, LogRecord, HEADER_LEN, MAGIC};
use crate::codec;
use crate::dir::Dir;
use crate::store::{FormatError, ResultRecord, Store};
use crate::task::TaskKey;

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

/// Indexes the record of `key` at `loc`, unless the one indexed already wins over it
/// ([`replaces`]).
fn index_record(index: &mut HashMap<TaskKey, Loc>, key: TaskKey, loc: Loc) {
    if replaces(loc.ok, index.get(&key)) {
        index.insert(key, loc);
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

    pub(super) fn load(root: &Path) -> LogSet {
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
                    index_record(
                        &mut index,
                        record.key,
                        Loc {
                            file: i,
                            offset,
                            len,
                            ok,
                        },
                    );
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
                index_record(
                    &mut inner.index,
                    key,
                    Loc {
                        file: i,
                        offset,
                        len,
                        ok,
                    },
                );
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
    pub(super) fn has_finished(&self, key: &TaskKey) -> bool {
        self.inner
            .lock()
            .unwrap()
            .index
            .get(key)
            .is_some_and(|l| l.ok)
    }

    /// Syncs this process's log to disk.
    pub(super) fn sync(&self) -> io::Result<()> {
        match &self.inner.lock().unwrap().writer {
            Some(w) => w.file.sync_all(),
            None => Ok(()),
        }
    }

    pub(super) fn append_record(&self, record: &LogRecord, durable: bool) -> Result<(), String> {
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
        index_record(
            &mut inner.index,
            key,
            Loc {
                file: file_index,
                offset,
                len: (bytes.len() - HEADER_LEN) as u32,
                ok,
            },
        );
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
