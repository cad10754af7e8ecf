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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::dir::Dir;
use crate::error::{Error, TaskError};
use crate::scheduler::SchedulerKind;
use crate::task::TaskKey;
use crate::trust::{self, Policy};

mod format;
mod task_paths;

pub(crate) use format::*;
pub(crate) use task_paths::TaskPaths;

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
        self.dir(&[LOG], create)
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
        if !crate::dir::is_refusal(&e) {
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
mod tests;
