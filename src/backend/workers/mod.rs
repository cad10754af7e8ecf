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

mod command;
pub(crate) mod pilot;
pub(crate) mod protocol;
mod reach;
mod serve;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::protocol::{FromWorker, InitCall, ToWorker};
pub(crate) use self::serve::{current_key, serve, serve_pilot};
pub use self::serve::{init_function, worker_state, InitFunction, WorkerStateError};
use super::single_node::{Launcher, SingleNode};
use super::{Backend, BoxFuture, Done, Job};
use crate::error::{Error, LaunchErrorKind, TaskError};
use crate::event::{EventKind, Events};
use crate::future::{view_bytes, Slot};
use crate::resources::Resources;
use crate::resultlog::LogSet;
use crate::store::{CheckpointRecord, ResultRecord, Store, TaskPaths};
use crate::task::{ArgSlot, TaskKey, TaskKind, TaskSpec};
use crate::worker;

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

impl Pooled {
    /// Starts the workers (their init functions run at once, in parallel).
    pub(crate) fn new(single: SingleNode, store: &Store, cfg: PoolConfig) -> Result<Pooled, Error> {
        // The running binary, even if a rebuild replaced its file (a staged copy where there
        // is no /proc/self/exe); launchers (mpiexec, srun, flux run) need its real path.
        let exe = PathBuf::from(
            super::exe::local_worker(store).map_err(|e| Error::Config(e.to_string()))?,
        );
        let real_exe = super::exe::path()
            .map_err(|e| Error::Config(e.to_string()))?
            .to_path_buf();
        let threads = cfg.defaults.threads().to_string();
        let mut env: Vec<(String, String)> = [
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "RAYON_NUM_THREADS",
        ]
        .iter()
        .map(|v| (v.to_string(), threads.clone()))
        .collect();
        env.extend(cfg.defaults.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push((worker::WORKER_ENV.to_string(), "1".to_string()));
        let cwd = cfg.defaults.cwd.as_ref().map(|d| {
            if d.is_absolute() {
                d.clone()
            } else {
                std::env::current_dir().map_or_else(|_| d.clone(), |c| c.join(d))
            }
        });
        let salt = cfg
            .init
            .as_ref()
            .map(|init| crate::codec::encode(init).expect("an init call always encodes"));
        let single = Arc::new(single);
        let shared = Arc::new(Shared {
            single: single.clone(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                broken: None,
            }),
            wake: Condvar::new(),
            real_exe,
            ranks: cfg.defaults.ranks(),
            threads: cfg.defaults.threads(),
            defaults: cfg.defaults.clone(),
            launcher: single.launcher().clone(),
            token: token(),
            exe,
            init: cfg.init,
            env,
            cwd,
            log: cfg.log.then(|| LogSet::of(store.root())),
            durable: store.durable(),
            started: AtomicUsize::new(0),
        });
        let mut handles = Vec::new();
        for index in 0..cfg.workers {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("pitch-pool-{index}"))
                .spawn(move || drive(&s, index))
                .map_err(|e| Error::Config(format!("could not start a pool thread: {e}")))?;
            handles.push(handle);
        }
        Ok(Pooled {
            single,
            shared,
            defaults: cfg.defaults,
            threads: Mutex::new(handles),
            events: OnceLock::new(),
            warned_commands: AtomicBool::new(false),
            salt,
        })
    }

    fn submit(&self, job: Job) {
        let reason = refuses(&self.defaults, &job.resources);
        let limit = job.resources.run_time_max;
        let Some((task, slot)) = task_of(job, self.name(), reason, limit) else {
            return;
        };
        let task = Arc::new(task);
        {
            let mut st = self.shared.state.lock().unwrap();
            if let Some(e) = &st.broken {
                let e = e.clone();
                drop(st);
                task.done.finish(ResultRecord { outcome: Err(e) });
                return;
            }
            st.queue.push_back(task.clone());
        }
        self.shared.wake.notify_one();
        slot.cancel.on_cancel(Box::new(move || cancel(&task)));
    }
}

/// Why a worker (pool worker or pilot) sized by the defaults `d` cannot run a task asking for `r` (per-submit resources
/// merged onto the executor's defaults).
fn refuses(d: &Resources, r: &Resources) -> Option<String> {
    let size = |r: &Resources| {
        format!(
            "cores = {}, threads_per_core = {}, gpus_per_core = {}",
            r.ranks(),
            r.threads(),
            r.gpus_per_core.unwrap_or(0)
        )
    };
    if r.ranks() != d.ranks() || r.threads() != d.threads() || r.gpus_per_core != d.gpus_per_core {
        return Some(format!(
            "block_allocation workers are sized by the executor's default resources \
             ({}); this task asks for {}: submit it to an executor without \
             block_allocation",
            size(d),
            size(r)
        ));
    }
    if r.env != d.env {
        return Some(
            "block_allocation workers keep the environment they were started with; \
             this task asks for other env variables"
                .into(),
        );
    }
    if r.cwd != d.cwd {
        return Some(
            "block_allocation workers keep the working directory they were started in; \
             this task asks for another cwd"
                .into(),
        );
    }
    None
}

/// A function task as the pool's workers (or pilots) run it, with the time limit `limit`: its
/// inputs resolved from their futures, its checkpoint read, and its `Run` frame encoded (with
/// the warning `checkpoint_grace` before `limit`). `None` when the task ended here (refused
/// for `reason`, a failed input, an unencodable frame): `done` has its record.
fn task_of(
    job: Job,
    backend: &str,
    reason: Option<String>,
    limit: Option<Duration>,
) -> Option<(PoolTask, Arc<Slot>)> {
    let Job {
        spec,
        paths,
        resources,
        slot,
        deps,
        started,
        done,
        ..
    } = job;
    let fail = |e: TaskError| {
        done.finish(ResultRecord { outcome: Err(e) });
        None
    };
    if let Some(reason) = reason {
        return fail(TaskError::Rejected {
            backend: backend.to_string(),
            reason,
        });
    }
    let TaskSpec { key, kind, .. } = &*spec;
    let TaskKind::Function {
        name,
        fingerprint,
        args,
    } = kind
    else {
        unreachable!("commands go to the process backend");
    };
    // Inputs are resolved here, from their futures: a worker reads no files.
    let mut values = Vec::with_capacity(args.len());
    for (position, arg) in args.iter().enumerate() {
        match arg {
            ArgSlot::Inline(bytes) => values.push(bytes.clone()),
            ArgSlot::Ref {
                key: upstream,
                view,
            } => {
                let outcome = deps
                    .iter()
                    .find(|(_, d)| d.slot.key == *upstream)
                    .and_then(|(_, d)| d.slot.outcome());
                let value = match outcome.as_deref() {
                    Some(Ok(v)) => view_bytes(v, *view),
                    Some(Err(cause)) => Err(TaskError::DependencyFailed {
                        input: format!("argument {position}"),
                        key: upstream.to_string(),
                        cause: Box::new(cause.clone()),
                    }),
                    None => Err(TaskError::Launch {
                        kind: LaunchErrorKind::Other,
                        what: "pitch".into(),
                        detail: format!(
                            "the input of argument {position} (task {upstream}) has not \
                                 finished"
                        ),
                    }),
                };
                match value {
                    Ok(v) => values.push(v),
                    Err(e) => return fail(e),
                }
            }
        }
    }
    let stop_after = resources
        .checkpoint_grace
        .zip(limit)
        .map(|(grace, limit)| limit.saturating_sub(grace));
    let frame = match protocol::frame(&ToWorker::Run {
        key: *key,
        name: name.clone(),
        fingerprint: fingerprint.clone(),
        args: values,
        checkpoint: paths.read_checkpoint().transpose(),
        stop_after,
    }) {
        Ok(f) => f,
        Err(detail) => {
            return fail(TaskError::Encode {
                what: "the task for its worker".into(),
                detail,
            })
        }
    };
    Some((
        PoolTask::queued(*key, name.clone(), frame, limit, paths, done, started),
        slot,
    ))
}

impl PoolTask {
    /// A function task waiting in the queue, with its encoded frame.
    fn queued(
        key: TaskKey,
        name: String,
        frame: Vec<u8>,
        limit: Option<Duration>,
        paths: TaskPaths,
        done: Done,
        started: Box<dyn Fn(Option<String>) + Send + Sync>,
    ) -> PoolTask {
        PoolTask {
            key,
            name,
            frame,
            limit,
            paths,
            done,
            started,
            phase: Mutex::new(Phase::Queued),
            command: false,
        }
    }
}

/// A cancel request: a queued task ends at once; a running one has its worker killed (the
/// thread driving it reports the cancellation and replaces the worker).
fn cancel(task: &PoolTask) {
    let mut phase = task.phase.lock().unwrap();
    match *phase {
        Phase::Queued => {
            *phase = Phase::Ended;
            drop(phase);
            task.done.finish(ResultRecord {
                outcome: Err(TaskError::Cancelled),
            });
        }
        Phase::Running {
            pid,
            srun,
            ref sockets,
        } => {
            for fd in sockets {
                // SAFETY: the worker owns these descriptors until its thread has ended the
                // task, which it does under this lock; shutdown(2) on a pipe fails harmlessly.
                unsafe {
                    libc::shutdown(*fd, libc::SHUT_RDWR);
                }
            }
            // A pilot's task (pid 0) has no process here: the shut socket makes the pilot
            // exit.
            if pid > 0 {
                stop_process(pid, srun);
            }
            *phase = Phase::Cancelling;
        }
        Phase::Cancelling | Phase::Ended => {}
    }
}

/// Stops a worker: SIGTERM to an srun or flux run (which signals the ranks wherever they
/// run, then exits), SIGKILL to the process group of a local worker.
fn stop_process(pid: i32, srun: bool) {
    if srun {
        // SAFETY: kill(2) on the worker's own srun.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    } else {
        kill_group(pid);
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) on the worker's own process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

impl Pooled {
    /// Closes the pool: each worker's input is closed once the queue is empty, so it exits;
    /// with `wait`, returns when every worker has been reaped.
    fn shut(&self, wait: bool) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.wake.notify_all();
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        for handle in std::mem::take(&mut *self.threads.lock().unwrap()) {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.shut(true);
    }
}

impl Backend for Pooled {
    fn name(&self) -> &'static str {
        self.single.name()
    }

    fn check(&self, resources: &Resources) -> Result<Vec<&'static str>, String> {
        self.single.check(resources)
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        if let TaskKind::Command(_) = job.spec.kind {
            if !self.warned_commands.swap(true, Ordering::SeqCst) {
                if let Some(events) = self.events.get() {
                    events.emit(EventKind::Warning {
                        message: "block_allocation pools only function tasks: commands run \
                                  as their own processes, as without it (a pool worker would \
                                  only start the same process)"
                            .into(),
                    });
                }
            }
            return self.single.clone().run(job);
        }
        self.submit(job);
        Box::pin(std::future::ready(()))
    }

    fn refuses_function(&self, resources: &Resources) -> Option<String> {
        refuses(&self.defaults, resources)
    }

    fn lost_worker(&self, spec: &TaskSpec, error: &TaskError) -> bool {
        // A function task runs in a worker: its worker dying under it is a lost worker.
        matches!(spec.kind, TaskKind::Function { .. })
            && matches!(
                error,
                TaskError::Signaled { .. } | TaskError::WorkerDied { .. }
            )
    }

    fn attach(&self, events: Events, preparing: Arc<AtomicUsize>) {
        if let Some(log) = &self.shared.log {
            for message in log.take_damage() {
                events.emit(EventKind::Warning { message });
            }
        }
        self.single.attach(events.clone(), preparing);
        let _ = self.events.set(events);
    }

    /// Tasks of a pool with an init function depend on it: its name, fingerprint and
    /// arguments are part of their keys (so a result computed with another init function, or
    /// without one, is never taken from the cache; executorlib's issue #1084).
    fn key_salt(&self, kind: &TaskKind) -> Option<&[u8]> {
        match kind {
            TaskKind::Function { .. } => self.salt.as_deref(),
            TaskKind::Command(_) => None,
        }
    }

    fn close(&self, wait: bool) {
        self.shut(wait);
    }

    fn writes_task_file(&self, spec: &TaskSpec) -> bool {
        matches!(spec.kind, TaskKind::Command(_))
    }
}

/// One connection to a worker rank: the worker's pipes, or (multi-rank workers) a socket.
struct Link {
    reader: BufReader<File>,
    writer: File,
}

/// One live worker process (or `mpiexec` and its ranks) and its links, one per rank.
struct Worker {
    index: u32,
    child: Child,
    links: Vec<Link>,
    pid: i32,
    /// Whether the process is a launcher of remote ranks (srun, flux run).
    srun: bool,
}

/// How long a stopped worker may take to end before its process group gets SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

impl Worker {
    fn what(&self) -> String {
        format!("pool worker {} (pid {})", self.index, self.pid)
    }

    /// Stops the worker and reaps it; returns how it ended.
    fn kill(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// Stops the worker (see [`stop_process`]), SIGKILL to its process group if it is still
    /// there after [`KILL_GRACE`], and reaps it.
    fn terminate(&mut self) -> std::process::ExitStatus {
        stop_process(self.pid, self.srun);
        self.reap()
    }

    /// Reaps the worker; SIGKILL to its process group if it has not ended within
    /// [`KILL_GRACE`].
    fn reap(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + KILL_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Whatever the launcher left in its process group goes too.
                    kill_group(self.pid);
                    return status;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    kill_group(self.pid);
                    return self
                        .child
                        .wait()
                        .unwrap_or_else(|_| std::process::ExitStatus::from_raw(0));
                }
            }
        }
    }

    /// Closes its input (it exits when idle) and reaps it.
    fn stop(mut self) {
        self.links.clear();
        let _ = self.child.wait();
    }

    /// Sends `bytes` (a frame) to every rank.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for link in &mut self.links {
            link.writer.write_all(bytes)?;
        }
        Ok(())
    }
}

fn launch_error(index: u32, detail: String) -> TaskError {
    launch_error_of(index, LaunchErrorKind::Other, detail)
}

fn launch_error_of(index: u32, kind: LaunchErrorKind, detail: String) -> TaskError {
    TaskError::Launch {
        kind,
        what: format!("pool worker {index}"),
        detail,
    }
}

/// A socket path for the ranks of one multi-rank worker to connect to.
fn socket_path(index: u32) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "pitch-pool-{}-{index}-{}.sock",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Where the ranks of a multi-rank worker (or of an srun worker step) connect: a Unix socket
/// on this machine, or a TCP port when the ranks may run on other nodes.
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// What the ranks are told (`PITCH_POOL_SOCKET`): a path, or `tcp:HOST:PORT`.
    fn address(&self) -> Result<String, String> {
        match self {
            Listener::Unix(_, path) => Ok(path.display().to_string()),
            Listener::Tcp(l) => {
                let port = l.local_addr().map_err(|e| e.to_string())?.port();
                Ok(format!("tcp:{}:{port}", worker::hostname()))
            }
        }
    }

    fn accept(&self) -> std::io::Result<OwnedFd> {
        match self {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                OwnedFd::from(s)
            }),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                OwnedFd::from(s)
            }),
        }
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Listener::Unix(l, _) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A secret each rank must present, so that nobody else who reaches the socket gets tasks.
fn token() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    blake3::hash(
        &[
            &bytes[..],
            &nanos.to_le_bytes(),
            &std::process::id().to_le_bytes(),
        ]
        .concat(),
    )
    .to_hex()[..32]
        .to_string()
}

/// Accepts one connection per rank (each says which rank it is, with the token), while the
/// launcher lives.
fn accept_ranks(
    listener: &Listener,
    child: &mut Child,
    ranks: u32,
    token: &str,
) -> Result<Vec<Link>, String> {
    let deadline = Instant::now() + RANKS_CONNECT;
    let mut links: Vec<Option<Link>> = (0..ranks).map(|_| None).collect();
    let mut connected = 0;
    listener.set_nonblocking().map_err(|e| e.to_string())?;
    while connected < ranks {
        match listener.accept() {
            Ok(fd) => {
                let writer = File::from(fd.try_clone().map_err(|e| e.to_string())?);
                let mut reader = BufReader::with_capacity(1 << 16, File::from(fd));
                match protocol::read::<FromWorker>(&mut reader) {
                    Ok(Some(FromWorker::Hello {
                        rank,
                        size,
                        token: t,
                    })) if size == ranks && rank < ranks && t == token => {
                        if links[rank as usize]
                            .replace(Link { reader, writer })
                            .is_none()
                        {
                            connected += 1;
                        }
                    }
                    // A stranger, or a rank of another run: not one of ours.
                    _ => continue,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the launcher ended ({}) after {connected} of {ranks} ranks connected",
                        status_text(&status)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "only {connected} of {ranks} ranks connected within {RANKS_CONNECT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(links
        .into_iter()
        .map(|l| l.expect("all connected"))
        .collect())
}

/// How long the ranks of a multi-rank worker have to connect.
const RANKS_CONNECT: Duration = Duration::from_secs(60);

/// Starts a worker and waits for its init function.
fn start_worker(shared: &Shared, index: u32) -> Result<Worker, TaskError> {
    let worker_args = vec![worker::WORKER_ARG.to_string(), "pool".to_string()];
    // One-rank local workers talk over their pipes; the ranks of mpiexec and srun workers
    // connect to a socket of the driver (those launchers keep stdin and stdout for themselves).
    let socket = shared.ranks > 1 || shared.launcher != Launcher::Local;
    let (program, args) = if socket {
        // The launchers need a real path; the ranks run the same file.
        shared.launcher.wrap(
            shared.real_exe.display().to_string(),
            worker_args,
            shared.ranks,
            shared.threads,
            &shared.defaults,
        )
    } else {
        (shared.exe.display().to_string(), worker_args)
    };
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args)
        .envs(shared.env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::inherit())
        .process_group(0);
    if let Some(dir) = &shared.cwd {
        cmd.current_dir(dir);
    }
    let listener = if socket {
        let listener = if shared.launcher == Launcher::Local {
            let path = socket_path(index);
            UnixListener::bind(&path)
                .map(|l| Listener::Unix(l, path.clone()))
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))
        } else {
            TcpListener::bind(("0.0.0.0", 0))
                .map(Listener::Tcp)
                .map_err(|e| format!("cannot listen on a TCP port: {e}"))
        };
        let listener = listener.map_err(|e| launch_error(index, e))?;
        let address = listener.address().map_err(|e| launch_error(index, e))?;
        cmd.env(protocol::SOCKET_ENV, address)
            .env(protocol::TOKEN_ENV, &shared.token)
            .env(protocol::RANKS_ENV, shared.ranks.to_string())
            .stdin(Stdio::null())
            // The library never writes to stdout: the launcher's goes to the driver's stderr.
            .stdout(
                std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
        Some(listener)
    } else {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        None
    };
    let spawned = cmd.spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if let Some(dir) = shared.cwd.as_ref().filter(|d| !d.is_dir()) {
                return Err(launch_error_of(
                    index,
                    LaunchErrorKind::NoSuchCwd,
                    format!("the working directory {} does not exist", dir.display()),
                ));
            }
            let detail = if e.kind() == std::io::ErrorKind::NotFound && program == "mpiexec" {
                format!(
                    "mpiexec was not found on PATH: cores = {} workers need OpenMPI's mpiexec",
                    shared.ranks
                )
            } else if e.kind() == std::io::ErrorKind::NotFound && program == "srun" {
                "srun was not found on PATH".to_string()
            } else {
                format!("could not start {program}: {e}")
            };
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => LaunchErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => LaunchErrorKind::PermissionDenied,
                _ => LaunchErrorKind::Other,
            };
            return Err(launch_error_of(index, kind, detail));
        }
    };
    shared.started.fetch_add(1, Ordering::Relaxed);
    let pid = child.id() as i32;
    let links = match &listener {
        None => {
            let writer = File::from(OwnedFd::from(child.stdin.take().expect("piped")));
            let reader = File::from(OwnedFd::from(child.stdout.take().expect("piped")));
            Ok(vec![Link {
                reader: BufReader::with_capacity(1 << 16, reader),
                writer,
            }])
        }
        Some(listener) => accept_ranks(listener, &mut child, shared.ranks, &shared.token),
    };
    drop(listener);
    let links = match links {
        Ok(l) => l,
        Err(detail) => {
            kill_group(pid);
            let _ = child.wait();
            return Err(launch_error(index, format!("{program}: {detail}")));
        }
    };
    let mut worker = Worker {
        index,
        child,
        links,
        pid,
        srun: shared.launcher != Launcher::Local,
    };
    let start = protocol::frame(&ToWorker::Start {
        index,
        init: shared.init.clone(),
        stop_after: None,
    })
    .map_err(|e| launch_error(index, e))?;
    let mut ready = worker
        .send(&start)
        .map(|()| Some(FromWorker::Ready { init: Ok(()) }));
    for link in &mut worker.links {
        if !matches!(ready, Ok(Some(FromWorker::Ready { init: Ok(()) }))) {
            break;
        }
        ready = protocol::read::<FromWorker>(&mut link.reader);
    }
    let init_name = || {
        shared
            .init
            .as_ref()
            .map_or_else(String::new, |i| format!(" (init function {})", i.name))
    };
    match ready {
        Ok(Some(FromWorker::Ready { init: Ok(()) })) => Ok(worker),
        Ok(Some(FromWorker::Ready { init: Err(e) })) => {
            let what = worker.what();
            worker.kill();
            Err(TaskError::Launch {
                kind: LaunchErrorKind::Other,
                what: format!(
                    "{what}: its init function {}",
                    shared.init.as_ref().map_or("", |i| i.name.as_str())
                ),
                detail: e.to_string(),
            })
        }
        Ok(other) => {
            let what = worker.what();
            let status = worker.kill();
            Err(launch_error(
                index,
                format!(
                    "{what} ended before it was ready{} ({}; answer {other:?}); is \
                     pitch::init() the first line of main?",
                    init_name(),
                    status_text(&status)
                ),
            ))
        }
        Err(e) => {
            let what = worker.what();
            let status = worker.kill();
            Err(launch_error(
                index,
                format!(
                    "{what} ended before it was ready{}: {e} ({}); is pitch::init() the \
                     first line of main?",
                    init_name(),
                    status_text(&status)
                ),
            ))
        }
    }
}

fn status_text(status: &std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

/// A pooled task's checkpoint once it answered: the state it saved (`saved`, rank 0's) is
/// written to its directory when it checkpointed (a failure to write it becomes the task's
/// error); a finished task's checkpoint goes.
fn keep_checkpoint(
    task: &PoolTask,
    outcome: &mut Result<Vec<Vec<u8>>, TaskError>,
    saved: Option<CheckpointRecord>,
) {
    match outcome {
        Ok(_) => task.paths.remove_checkpoint(),
        Err(TaskError::Checkpointed { .. }) => {
            if let Some(record) = saved {
                if let Err(e) = task.paths.write_checkpoint(&record) {
                    *outcome = Err(e);
                }
            }
        }
        Err(_) => {}
    }
}

/// Records and delivers a task's end.
fn deliver(shared: &Shared, task: &PoolTask, outcome: Result<Vec<Vec<u8>>, TaskError>) {
    deliver_to(shared.log.as_deref(), shared.durable, task, outcome);
}

/// Records a task's end in the result log `log` (if any), or a command's in its task
/// directory, and delivers it.
fn deliver_to(
    log: Option<&LogSet>,
    durable: bool,
    task: &PoolTask,
    outcome: Result<Vec<Vec<u8>>, TaskError>,
) {
    let mut record = ResultRecord { outcome };
    if task.command {
        record = task.paths.publish_result(record);
    } else if let Some(log) = log {
        if let Err(detail) = log.append(task.key, &task.name, &record, durable) {
            if record.outcome.is_ok() {
                record = ResultRecord {
                    outcome: Err(TaskError::Store {
                        path: log.dir().display().to_string(),
                        detail,
                    }),
                };
            }
        }
    }
    task.done.finish(record);
}

impl Shared {
    /// The next queued task, marked as running in `w`; `None` once the pool is closed, or
    /// when `patience` passes first (then `*timed_out` is set).
    fn next(
        &self,
        w: &Worker,
        patience: Option<Duration>,
        timed_out: &mut bool,
    ) -> Option<Arc<PoolTask>> {
        let until = patience.map(|p| Instant::now() + p);
        let srun = w.srun;
        let sockets: Vec<std::os::fd::RawFd> = if w.srun || w.links.len() > 1 {
            w.links
                .iter()
                .map(|l| l.reader.get_ref().as_raw_fd())
                .collect()
        } else {
            Vec::new()
        };
        let mut st = self.state.lock().unwrap();
        loop {
            while let Some(task) = st.queue.pop_front() {
                let mut phase = task.phase.lock().unwrap();
                if let Phase::Queued = *phase {
                    *phase = Phase::Running {
                        pid: w.pid,
                        srun,
                        sockets: sockets.clone(),
                    };
                    drop(phase);
                    return Some(task);
                }
            }
            if st.closed {
                return None;
            }
            match until {
                None => st = self.wake.wait(st).unwrap(),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        *timed_out = true;
                        return None;
                    }
                    st = self.wake.wait_timeout(st, left).unwrap().0;
                }
            }
        }
    }

    /// Whether the executor closed the pool.
    fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    /// No worker can start: fail every queued task, and every later one, with `error`.
    fn break_with(&self, error: TaskError) {
        let queued: Vec<Arc<PoolTask>> = {
            let mut st = self.state.lock().unwrap();
            st.broken.get_or_insert(error.clone());
            st.queue.drain(..).collect()
        };
        fail_queued(queued, &error);
    }
}

/// Ends each of `tasks` that is still queued with `error` (a pool or the pilots that can
/// never start a worker).
fn fail_queued(tasks: Vec<Arc<PoolTask>>, error: &TaskError) {
    for task in tasks {
        let mut phase = task.phase.lock().unwrap();
        if let Phase::Queued = *phase {
            *phase = Phase::Ended;
            drop(phase);
            task.done.finish(ResultRecord {
                outcome: Err(error.clone()),
            });
        }
    }
}

/// What became of the worker after a task.
enum After {
    Keep,
    Replace,
}

/// How long an idle worker keeps its slots for its next task before it gives them back (and
/// the most a command waits for an idle worker's slots).
const LEASE_PATIENCE: Duration = Duration::from_millis(20);

/// How many times in a row a worker is started before its failure fails the pool's tasks.
const START_ATTEMPTS: u32 = 3;

/// The thread of worker `index`: start it, feed it tasks, replace it when it dies.
fn drive(shared: &Shared, index: u32) {
    let mut worker: Option<Worker> = None;
    // The worker's slots while it has tasks to run: taken before a task, given back when the
    // queue is empty or a command waits for slots (then taken again behind it).
    let mut lease = None;
    let slots = shared.ranks.saturating_mul(shared.threads);
    // Failed starts in a row (the init function failed, the worker could not be started): a
    // transient cause (a file system that hiccuped while the init function read its data)
    // gets START_ATTEMPTS tries, 0.5 s, then 1 s apart, before the pool gives up.
    let mut failed_starts = 0u32;
    loop {
        if worker.is_none() {
            match start_worker(shared, index) {
                Ok(w) => {
                    worker = Some(w);
                    failed_starts = 0;
                }
                Err(_) if failed_starts + 1 < START_ATTEMPTS && !shared.is_closed() => {
                    failed_starts += 1;
                    std::thread::sleep(Duration::from_millis(250 << failed_starts));
                    continue;
                }
                Err(e) => return shared.break_with(e),
            }
        }
        let w = worker.as_mut().expect("started above");
        if lease.is_some() && shared.single.waiting() {
            lease = None;
        }
        // Idle with the lease: it is kept a moment for the next task (back-to-back tasks
        // take no lease each), then given back.
        let mut timed_out = false;
        let patience = lease.is_some().then_some(LEASE_PATIENCE);
        let mut next = shared.next(w, patience, &mut timed_out);
        if timed_out {
            lease = None;
            next = shared.next(w, None, &mut timed_out);
        }
        let Some(task) = next else {
            if let Some(w) = worker.take() {
                w.stop();
            }
            return;
        };
        if lease.is_none() {
            lease = shared.single.lease(slots);
        }
        if let After::Replace = run_task(shared, w, &task) {
            if let Some(w) = worker.take() {
                w.kill();
            }
        }
    }
}

/// Waits until a rank's answer can be read, or `deadline` passes (false).
fn readable_before(link: &Link, deadline: Instant) -> bool {
    if !link.reader.buffer().is_empty() {
        return true;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fd = libc::pollfd {
            fd: link.reader.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return true; // let the read report it
        }
    }
}

/// Every rank's answer, in rank order; `Err` with the first unreadable one; `Ok(None)` when
/// the deadline passed.
fn answers(
    links: &mut [Link],
    deadline: Option<Instant>,
) -> std::io::Result<Option<Vec<Option<FromWorker>>>> {
    let mut out = Vec::with_capacity(links.len());
    for link in links {
        if let Some(deadline) = deadline {
            if !readable_before(link, deadline) {
                return Ok(None);
            }
        }
        out.push(protocol::read::<FromWorker>(&mut link.reader)?);
    }
    Ok(Some(out))
}

/// A task's outcome from its ranks' answers (in rank order) and rank 0's checkpoint; or the
/// answer of the first rank that did not send a result (`None`: its link closed), for which
/// the worker is lost. The failing rank that names the task's failure is the first with a
/// real error, else the first that checkpointed (see `store::rank_failure_weight`); ranks
/// that all checkpointed make a checkpointed task.
fn gather(answer: Vec<Option<FromWorker>>, size: u32) -> Gathered {
    let mut values = Vec::with_capacity(answer.len());
    let mut failure: Option<(u32, TaskError)> = None;
    let mut saved = None;
    for (rank, a) in answer.into_iter().enumerate() {
        match a {
            Some(FromWorker::Done {
                outcome,
                checkpoint,
            }) => {
                if rank == 0 {
                    saved = checkpoint;
                }
                match outcome {
                    Ok(v) => values.push(v),
                    Err(e) => {
                        let weight = crate::store::rank_failure_weight(&e);
                        if failure
                            .as_ref()
                            .is_none_or(|(_, f)| weight > crate::store::rank_failure_weight(f))
                        {
                            failure = Some((rank as u32, e));
                        }
                    }
                }
            }
            other => return Gathered::Broken(other),
        }
    }
    let outcome = match failure {
        // The ranks stopped together to be resumed: the task checkpointed.
        Some((_, e @ TaskError::Checkpointed { .. })) => Err(e),
        Some((rank, e)) if size > 1 => Err(TaskError::Rank {
            rank,
            size,
            cause: Box::new(e),
        }),
        Some((_, e)) => Err(e),
        None => Ok(values),
    };
    Gathered::Done(outcome, saved)
}

/// What [`gather`] makes of the ranks' answers.
enum Gathered {
    /// Every rank sent a result: the task's outcome and rank 0's checkpoint.
    Done(Result<Vec<Vec<u8>>, TaskError>, Option<CheckpointRecord>),
    /// A rank sent something else (`None`: its link closed): the worker is lost.
    Broken(Option<FromWorker>),
}

fn run_task(shared: &Shared, w: &mut Worker, task: &Arc<PoolTask>) -> After {
    (task.started)(None);
    let deadline = task.limit.map(|limit| Instant::now() + limit);
    let answer = w
        .send(&task.frame)
        .and_then(|()| answers(&mut w.links, deadline));
    let answer = match answer {
        Ok(None) => {
            // The time limit passed.
            let mut phase = task.phase.lock().unwrap();
            let cancelling = matches!(*phase, Phase::Cancelling);
            *phase = Phase::Ended;
            drop(phase);
            w.terminate();
            let outcome = if cancelling {
                Err(TaskError::Cancelled)
            } else {
                Err(TaskError::Timeout {
                    limit: task.limit.unwrap_or_default(),
                })
            };
            deliver(shared, task, outcome);
            return After::Replace;
        }
        Ok(Some(answers)) => answers,
        // A rank's link broke: the worker died.
        Err(_) => vec![None],
    };
    match gather(answer, w.links.len() as u32) {
        Gathered::Done(mut outcome, saved) => {
            let mut phase = task.phase.lock().unwrap();
            // A cancel that came as the task finished killed the worker: the value stands.
            let killed = matches!(*phase, Phase::Cancelling);
            *phase = Phase::Ended;
            drop(phase);
            keep_checkpoint(task, &mut outcome, saved);
            deliver(shared, task, outcome);
            if killed {
                After::Replace
            } else {
                After::Keep
            }
        }
        Gathered::Broken(other) => {
            // The worker died under the task (or spoke nonsense): find out how.
            let status = w.terminate();
            let mut phase = task.phase.lock().unwrap();
            if let Phase::Cancelling = *phase {
                *phase = Phase::Ended;
                drop(phase);
                deliver(shared, task, Err(TaskError::Cancelled));
                return After::Replace;
            }
            let what = format!("{} running task {}", w.what(), task.key);
            let error = match (other, status.signal()) {
                (Some(answer), _) => TaskError::WorkerDied {
                    status: format!("{what}: it answered {answer:?} instead of a result"),
                    stderr_tail: String::new(),
                },
                (None, Some(signal)) => TaskError::Signaled {
                    what,
                    signal,
                    stderr_tail: String::new(),
                },
                (None, None) => TaskError::WorkerDied {
                    status: format!("{what}: {}", status_text(&status)),
                    stderr_tail: String::new(),
                },
            };
            // A lost worker: the engine retries the task when its `max_retries` allows.
            *phase = Phase::Ended;
            drop(phase);
            deliver(shared, task, Err(error));
            After::Replace
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_task_cancelled_ends_at_once_and_is_skipped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let task = PoolTask {
            key: TaskKey::from_bytes([1; 16]),
            name: "t".into(),
            frame: vec![],
            limit: None,
            paths: Store::at("/nonexistent".into(), false).task(&TaskKey::from_bytes([1; 16])),
            done: Done::new(move |r| tx.send(r).unwrap()),
            started: Box::new(|_| {}),
            phase: Mutex::new(Phase::Queued),
            command: false,
        };
        cancel(&task);
        assert_eq!(rx.recv().unwrap().outcome, Err(TaskError::Cancelled));
        assert!(matches!(*task.phase.lock().unwrap(), Phase::Ended));
        cancel(&task);
        assert!(rx.try_recv().is_err());
    }
}
