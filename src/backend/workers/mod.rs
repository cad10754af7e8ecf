//! [`Pooled`]: persistent workers (`block_allocation(true)`). A fixed number of long-lived
//! worker processes (the re-executed binary, `__pitch-worker pool`) each run their init
//! function once, then function tasks one at a time, sent and answered as frames over their
//! pipes ([`protocol`]). Each worker has one driver thread that takes the next task from the
//! shared FIFO when its worker is idle (no static assignment), writes it, and blocks on the
//! answer. Commands still run as their own processes, through [`SingleNode`]: a pool worker
//! would only start the same process (a warning event says so once). On pilot jobs
//! ([`pilot`]) commands do run in the pilots ([`command`]): there the alternative is a
//! scheduler job each.
//!
//! Failure rules: a panic or an `Err` fails only its task (the worker stays). A worker that
//! dies (signal, abort, exit) fails its current task (a lost worker: the engine submits the
//! task again while its `max_retries` allow, see `Backend::lost_worker`), and is replaced. `cancel()` and
//! `run_time_max` kill the worker running the task (SIGKILL to its process group) and replace
//! it. Closing the executor closes the workers' input pipes; a worker exits when its input
//! ends, so workers never outlive a killed driver by more than their current task.
//!
//! Results go to the cache directory's result log ([`crate::resultlog`]), one record per
//! task, instead of a directory per task; with the cache switched off at build, nowhere.
//!
//! The parts: this file declares the types they share ([`PoolConfig`], [`Pooled`], the
//! queue's `Shared` and `State`, a task's `PoolTask` and `Phase`); [`pool`] builds a pool,
//! takes its submissions and implements [`Backend`](super::Backend) for it; [`task`] makes a job a
//! `PoolTask` (or refuses it), cancels it, and records and delivers its end; [`drive`] is the
//! thread of each worker (the next task from the FIFO, one task run to its end, the worker
//! replaced); [`process`] one worker process (`Worker`, its `Link`s, starting and stopping
//! it); [`ranks`] the ranks of a multi-rank worker (where they connect, how their answers are
//! read and combined). The pilots ([`pilot`]) share `task`, `ranks` and `drive`'s
//! `fail_queued`.

mod command;
mod drive;
pub(crate) mod pilot;
mod pool;
mod process;
pub(crate) mod protocol;
mod ranks;
mod reach;
mod serve;
mod task;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use self::protocol::InitCall;
pub(crate) use self::serve::{current_key, serve, serve_pilot};
pub use self::serve::{init_function, worker_state, InitFunction, WorkerStateError};
use super::single_node::{Launcher, SingleNode};
use super::Done;
use crate::error::TaskError;
use crate::event::Events;
use crate::resources::Resources;
use crate::resultlog::LogSet;
use crate::store::TaskPaths;
use crate::task::TaskKey;

// What the pilots ([`pilot`]) share with a pool, by these names.
use self::drive::fail_queued;
use self::pool::{init_salt, key_salt, warn_damage};
use self::process::Link;
use self::ranks::{answers, gather, token, Gathered, RANKS_CONNECT};
use self::task::{cancel, deliver_to, keep_checkpoint, refuses, task_of};

/// How a pool is set up (from the builder).
pub(crate) struct PoolConfig {
    /// Worker processes.
    pub workers: u32,
    /// Run once in each worker when it starts.
    pub init: Option<InitCall>,
    /// The executor's default resources: every worker's size and environment.
    pub defaults: Resources,
    /// Whether results go to the result log (the builder's `cache`).
    pub log: bool,
}

enum Phase {
    Queued,
    /// Running in the worker whose process (group) is this; `true` for an srun step or a
    /// flux run job, stopped with SIGTERM (the launcher passes it on to the ranks).
    Running {
        /// 0 for a task on a pilot job (no process of the driver's).
        pid: i32,
        srun: bool,
        /// The worker's sockets (ranks connected to the driver): shut down on cancel, so
        /// that the thread waiting for the ranks' answers wakes at once.
        sockets: Vec<std::os::fd::RawFd>,
    },
    /// Cancel asked while running: the worker was killed.
    Cancelling,
    Ended,
}

struct PoolTask {
    key: TaskKey,
    name: String,
    /// The `Run` frame, encoded once.
    frame: Vec<u8>,
    limit: Option<Duration>,
    /// Where its checkpoint is written (by the driver: a worker writes no files).
    paths: TaskPaths,
    done: Done,
    started: Box<dyn Fn(Option<String>) + Send + Sync>,
    phase: Mutex<Phase>,
    /// A command run in a pilot ([`command`]): its result goes to its task directory, as a
    /// command job's does, and its pilot enforces its time limit.
    command: bool,
}

struct State {
    queue: VecDeque<Arc<PoolTask>>,
    closed: bool,
    /// Why no worker can start (its init function failed, or exec did): every task fails so.
    broken: Option<TaskError>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The program to start as a worker.
    exe: PathBuf,
    /// Its real path (mpiexec needs one).
    real_exe: PathBuf,
    /// Ranks per worker (`cores`): more than one run under `mpiexec -n` (or srun's).
    ranks: u32,
    /// Threads per rank.
    threads: u32,
    /// The executor's default resources (the launcher's options).
    defaults: Resources,
    /// How workers start: here, or as srun steps.
    launcher: Launcher,
    /// What the ranks of socket-connected workers must present.
    token: String,
    init: Option<InitCall>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    log: Option<Arc<LogSet>>,
    durable: bool,
    /// Worker processes started so far (the first `workers` and every replacement).
    started: AtomicUsize,
    /// The backend that runs the commands: a worker running tasks leases its size from its
    /// slots, so that workers and commands together stay within `max_cores`.
    single: Arc<SingleNode>,
}

/// The pool backend: function tasks to the workers, commands to `single`.
pub(crate) struct Pooled {
    single: Arc<SingleNode>,
    shared: Arc<Shared>,
    defaults: Resources,
    threads: Mutex<Vec<JoinHandle<()>>>,
    events: OnceLock<Events>,
    warned_commands: AtomicBool,
    /// What the keys of function tasks include: the init function, encoded.
    salt: Option<Vec<u8>>,
}
