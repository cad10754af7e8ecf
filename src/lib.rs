//! # pitch
//!
//! Write a parallel workload once, run it on a laptop, and move it to an HPC cluster by
//! changing one constructor. Work is "pitched" to whoever catches it — local processes, Slurm
//! jobs, srun steps, Flux jobs — and results come back as [`TaskFuture`]s.
//!
//! ```no_run
//! pitch::task! {
//!     /// Runs in a worker process, locally or on a compute node.
//!     pub fn square(x: u64) -> u64 { x * x }
//! }
//! pitch::task! {
//!     pub fn total(values: Vec<u64>) -> u64 { values.iter().sum() }
//! }
//!
//! fn main() -> Result<(), pitch::Error> {
//!     pitch::init(); // first line: turns this process into a worker when launched as one
//!     let exe = pitch::SingleNodeExecutor::builder().max_cores(4).build()?;
//!     let squares = square::map(&exe, 0..10);           // futures, in input order
//!     let values = pitch::wait_all(squares)?;
//!     let sum = total::submit(&exe, values);
//!     let echo = exe.submit_command(pitch::Command::new("echo").arg("hello"));
//!     println!("{} {}", sum.result()?, echo.result()?.read_stdout().unwrap_or_default());
//!     Ok(())
//! }
//! ```
//!
//! Key ideas:
//! - Tasks are registered functions ([`task!`]) or external programs ([`Command`]).
//! - A future passed as an argument makes a dependency; the worker reads the upstream
//!   result from the cache directory.
//! - Every task has a content-addressed key; rerunning a program with the same cache directory
//!   resolves finished tasks from their result files. Failed tasks run again.
//! - [`Resources`] uses executorlib's resource_dict names (`cores` are MPI ranks).
//! - The engine emits [`Event`]s; reporters show them. The library never prints to stdout.
#![deny(missing_docs)]

#[cfg(not(unix))]
compile_error!(
    "pitch supports Linux and macOS only: its process backend is POSIX (posix_spawn, process \
     groups, signals)"
);

mod backend;
mod builders;
mod cache;
mod checkpoint;
mod codec;
mod command;
mod dir;
mod engine;
mod error;
mod event;
mod executor;
mod future;
mod lock;
pub mod profile;
mod registry;
mod report;
mod resources;
mod resultlog;
mod scheduler;
mod store;
mod task;
mod template;
mod trust;
mod worker;

#[cfg(feature = "remote")]
pub use backend::transport::ssh::Remote;
#[cfg(feature = "remote")]
pub use backend::transport::SshClient;
pub use backend::workers::{worker_state, InitFunction, WorkerStateError};
pub use builders::{
    FluxClusterBuilder, FluxClusterExecutor, FluxJobBuilder, FluxJobExecutor, SingleNodeBuilder,
    SingleNodeExecutor, SlurmClusterBuilder, SlurmClusterExecutor, SlurmJobBuilder,
    SlurmJobExecutor,
};
pub use cache::{Cache, TaskInfo, TaskState, Unreadable};
pub use command::{Command, CommandOutput};
pub use error::{Attempt, Error, LaunchErrorKind, TaskError, REQUEUE_EXIT_CODE};
pub use event::{Event, EventKind, Reporter};
pub use executor::{Executor, RunSummary, Shutdown};
pub use future::{as_completed, wait_all, Arg, AsCompleted, TaskFuture};
pub use registry::registered_tasks;
pub use report::{JsonLinesReporter, ProgressReporter};
pub use resources::{
    format_slurm_memory, format_slurm_time, parse_duration, parse_memory, ResourceError, Resources,
    RetryOn, RESOURCE_KEYS,
};
pub use resultlog::Compacted;
pub use scheduler::{EndReason, SchedulerError, SchedulerKind};
pub use worker::{context, init, TaskContext};

/// The version of the on-disk cache format this build reads and writes, the second field of
/// every cache file's header (see the README's "On-disk format"). Files of another version are
/// refused with an error naming them, never misread.
pub const CACHE_FORMAT_VERSION: u16 = store::FORMAT_VERSION;

/// The optional cargo features this build of pitch was compiled with (`pitch --version` lists
/// them).
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "remote")]
    "remote",
    #[cfg(feature = "mpi-examples")]
    "mpi-examples",
    #[cfg(feature = "portable")]
    "portable",
];

/// The fuzz targets' entry points (`fuzz/`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;

/// Support for macro expansions and the project's own tests; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::backend::workers::init_function;
    pub use crate::executor::arg_source;
    pub use crate::registry::fingerprint;
    pub use crate::registry::support::*;
    pub use crate::registry::Registration;
    pub use crate::worker::main as worker_main;

    /// Rewrites the fingerprint recorded in a task's file (tests of incompatible code).
    pub fn set_task_fingerprint(
        cache: &std::path::Path,
        key: &str,
        fingerprint: &str,
    ) -> Result<(), String> {
        use crate::store::Store;
        use crate::task::{TaskKind, TaskSpec};
        let store = Store::at(cache.to_path_buf(), false);
        let paths = store.task(&key.parse()?);
        let mut spec: TaskSpec = paths.read_task().map_err(|e| e.to_string())?;
        if let TaskKind::Function { fingerprint: f, .. } = &mut spec.kind {
            *f = fingerprint.to_string();
        }
        paths.write_task(&spec).map_err(|e| e.to_string())
    }

    /// Reads a task's stored outcome (rank 0's bytes are not decoded).
    pub fn read_result(
        cache: &std::path::Path,
        key: &str,
    ) -> Result<Result<Vec<Vec<u8>>, crate::TaskError>, String> {
        let store = crate::store::Store::at(cache.to_path_buf(), false);
        let record = store
            .task(&key.parse()?)
            .read_result()
            .map_err(|e| e.to_string())?;
        Ok(record.outcome)
    }

    /// A stored outcome: every rank's encoded value, or the task's error.
    pub type Outcome = Result<Vec<Vec<u8>>, crate::TaskError>;

    /// Every record of a pooled task (`block_allocation`) in the cache directory's result
    /// logs, oldest first: `Ok` the encoded values of a finished record, `Err` a failure.
    pub fn logged_results(cache: &std::path::Path, key: &str) -> Result<Vec<Outcome>, String> {
        Ok(crate::resultlog::records_of(cache, &key.parse()?)
            .into_iter()
            .map(|r| r.outcome)
            .collect())
    }

    /// The path of a task's result file.
    pub fn result_path(cache: &std::path::Path, key: &str) -> Result<std::path::PathBuf, String> {
        let store = crate::store::Store::at(cache.to_path_buf(), false);
        Ok(store.task(&key.parse()?).result_file())
    }
}
