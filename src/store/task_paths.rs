//! [`TaskPaths`]: every path of one task, and its files read and written through the task
//! directory's checked handle.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::codec;
use crate::dir::Dir;
use crate::error::TaskError;
use crate::task::TaskKey;
use crate::trust::{self, Policy};

use super::*;

/// Every path of one task. The only type that knows file names inside a task directory.
#[derive(Debug, Clone)]
pub(crate) struct TaskPaths {
    pub(super) key: TaskKey,
    pub(super) root: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) durable: bool,
    pub(super) trust: Policy,
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
    pub(super) fn shard_name(&self) -> &str {
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
    pub(super) fn open_dir(&self) -> Result<Dir, FormatError> {
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
                Err(e) if crate::dir::is_refusal(&e) => {
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
        write_value_in(&dir, TASK_FILE, FileKind::Task, spec, self.durable)
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
