//! [`Pilots`]: elastic pilot jobs, `block_allocation(true)` on the queue backends
//! (SlurmCluster, FluxCluster). Instead of one scheduler job per function task, the executor
//! submits a few pilot jobs (one job array on Slurm, one `flux batch` each on Flux); each runs
//! the worker binary as `__pitch-worker pilot`, which connects back to the driver over TCP
//! and then serves tasks exactly like a pool worker ([`super::serve`], same frames).
//!
//! Threads of the driver:
//! - the manager ([`manage`]): submits pilots as the backlog needs them (never more than the
//!   backlog or `max_workers`; at least `min_workers` once work came), and makes one queue
//!   query per tick for the pilots' job name to notice pilots that ended (one that never
//!   connected counts as a failed start; three in a row with none ever connected fail the
//!   executor's tasks), and connected pilots whose job ended without their connection
//!   breaking (a lost node): their socket is shut, which ends their task as lost;
//! - the acceptor: takes connections on the executor's port;
//! - one thread per connection ([`connection`]): checks the secret first (raw bytes of fixed
//!   length, before anything is decoded; a failure is dropped and reported as a warning
//!   event), then the pilot's hello, start and init function, then hands it tasks one at a
//!   time from the shared FIFO: function tasks, and commands, which the pilot runs as child
//!   processes ([`super::command`]).
//!
//! Wall time: a pilot's `run_time_max` (the executor's default) is its wall time. A task is
//! only handed to a pilot whose remaining wall time (counted from its job's start as its job
//! script saw it, less [`MARGIN`]) covers the task's own `run_time_max`; a pilot that can take none of the queued
//! tasks drains (it leaves) and the manager submits a replacement.
//!
//! Faults: a pilot lost under a task (cancelled, timed out, node lost, killed) fails the task
//! with `TaskError::Scheduler` naming the pilot's job and its end reason; the engine submits
//! it again while its `max_retries` allow (default 1 with pilots; `Backend::lost_worker`). A
//! task is delivered once ([`Done`](crate::backend::Done) keeps the first record). A pilot
//! whose driver is gone (SIGKILL) sees its connection close and exits; one whose driver went
//! silent leaves after its idle timeout.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::protocol::{self, FromWorker, InitCall, ToWorker};
use super::reach::Reach;
use super::{
    answers, cancel, command, deliver_to, gather, keep_checkpoint, refuses, task_of, token,
    Gathered, Link, Phase, PoolTask,
};
use crate::backend::queue::Queue;
use crate::backend::scheduler::{lookup_state, JobRef, JobState};
use crate::backend::{Backend, BoxFuture, Job};
use crate::error::{Error, LaunchErrorKind, TaskError};
use crate::event::{EventKind, Events};
use crate::resources::Resources;
use crate::resultlog::LogSet;
use crate::scheduler::EndReason;
use crate::store::{ResultRecord, Store};
use crate::task::{TaskKind, TaskSpec};
use crate::template::shell_quote as q;
use crate::worker;

mod connect;
use connect::connection;

/// How long an idle pilot waits for work before it leaves, unless the builder says otherwise.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Taken off a pilot's wall time (counted from its job's start, as its job script saw it):
/// a pilot must not be killed by its limit while finishing a task.
pub(crate) const MARGIN: Duration = Duration::from_secs(10);
/// How long a peer has to present the secret and say which pilot it is.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pilots in a row that may end without ever connecting before the executor gives up.
const MAX_START_FAILURES: u32 = 3;
/// How long the manager waits for more tasks of a burst before it submits pilots.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// The longest it waits so.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(5);
/// Submissions in a row that may fail before the executor gives up.
const MAX_SUBMIT_FAILURES: u32 = 3;
/// How long a lost pilot's task waits for the scheduler to say why the pilot ended.
const END_WAIT: Duration = Duration::from_secs(60);

/// How the pilots are set up (from the builder).
pub(crate) struct PilotConfig {
    pub max_workers: u32,
    pub min_workers: u32,
    pub idle_timeout: Duration,
    /// The host (or `host:port`) the pilots connect to; default: this host's name.
    pub address: Option<String>,
    pub init: Option<InitCall>,
    /// The executor's default resources: every pilot's size; `run_time_max` its wall time.
    pub defaults: Resources,
    /// Whether results go to the result log (the builder's `cache`).
    pub log: bool,
    /// How often the manager asks the scheduler about its pilots.
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PilotPhase {
    /// Submitted, not connected yet.
    Pending,
    /// Connected and serving.
    Connected,
    /// Gone (left, drained, lost, or ended without connecting).
    Gone,
}

struct PilotInfo {
    job: JobRef,
    phase: PilotPhase,
    /// Its ranks' connections by rank, as they come (a one-rank pilot has one): to shut when
    /// the job is found ended while a socket is open, or when the ranks do not all come.
    ranks: Vec<Option<Arc<TcpStream>>>,
    /// When its job started (now, less the oldest age its ranks reported); `None` until its
    /// first rank connects.
    started: Option<Instant>,
    /// Queue queries in a row that did not list the job as active.
    misses: u32,
}

struct State {
    queue: VecDeque<Arc<PoolTask>>,
    /// Tasks handed to a pilot and not yet ended.
    running: usize,
    closed: bool,
    broken: Option<TaskError>,
    /// Whether any task came (`min_workers` pilots are kept from then on).
    seen_work: bool,
    pilots: HashMap<String, PilotInfo>,
    submissions: u64,
    /// Submissions whose sbatch (or flux batch) has not answered yet: their pilots may
    /// already run and connect.
    submitting: std::collections::HashSet<u64>,
    start_failures: u32,
    submit_failures: u32,
    ever_connected: bool,
    next_index: u32,
    /// Something the manager must look at came since it last looked (a task, a pilot's end).
    kicked: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the connection threads (a task came, the executor closes).
    wake: Condvar,
    /// Wakes the manager.
    manager: Condvar,
    /// Wakes the thread of a pilot's first rank when another rank connects.
    gathered: Condvar,
    queue: Arc<Queue>,
    cfg: PilotConfig,
    /// The secret pilots present, and the file they read it from (where the jobs see it).
    secret: Vec<u8>,
    secret_file: PathBuf,
    /// Where the pilots connect: the listener, or a relay on the login node.
    reach: Reach,
    /// The pilots' job name (the manager's queue query filters on it).
    tag: String,
    /// Unique per executor: the start of every pilot id.
    prefix: String,
    log: Option<Arc<LogSet>>,
    durable: bool,
    events: OnceLock<Events>,
    /// Submitted tasks still on their way to `run` (the engine's count).
    preparing: OnceLock<Arc<AtomicUsize>>,
}

impl Shared {
    /// Waits until the tasks of a burst (a `map`) are all in: none on its way and the
    /// backlog unchanged for one batch window, at most [`MAX_BATCH_WAIT`], or until the
    /// backlog reaches `max_workers`; so that a `map` gets its pilots in one submission.
    fn settle(&self) {
        let start = Instant::now();
        let backlog = || {
            let st = self.state.lock().unwrap();
            st.queue.len() + st.running
        };
        let mut last = backlog();
        // No need to wait once the backlog alone asks for every pilot.
        while start.elapsed() < MAX_BATCH_WAIT && last < self.cfg.max_workers as usize {
            std::thread::sleep(BATCH_WINDOW);
            let now = backlog();
            let preparing = self.preparing.get().map_or(0, |p| p.load(Ordering::SeqCst));
            if preparing == 0 && now == last {
                return;
            }
            last = now;
        }
    }

    fn warn(&self, message: String) {
        if let Some(events) = self.events.get() {
            events.emit(EventKind::Warning { message });
        }
    }
}

/// The pilot backend: function tasks and commands to pilot jobs; commands that do not fit a
/// pilot (`Pilots::command_refused`) to the queue backend as usual.
pub(crate) struct Pilots {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    warned_commands: AtomicBool,
    salt: Option<Vec<u8>>,
    /// The store and the name of the secret file, removed at the end.
    store: Store,
    secret_stem: String,
}

/// `host` and port of an address setting: `host`, `host:port` or `[v6]:port`.
pub(crate) fn split_address(address: &str) -> Result<(String, u16), String> {
    if let Some((host, port)) = address.rsplit_once(':') {
        if !host.contains(':') || host.starts_with('[') {
            let port = port
                .parse::<u16>()
                .map_err(|e| format!("pilot_address {address:?}: bad port {port:?}: {e}"))?;
            return Ok((host.trim_matches(['[', ']']).to_string(), port));
        }
    }
    if address.is_empty() {
        return Err("pilot_address is empty".into());
    }
    Ok((address.to_string(), 0))
}

impl Pilots {
    pub(crate) fn new(queue: Queue, store: &Store, cfg: PilotConfig) -> Result<Pilots, Error> {
        let queue = Arc::new(queue);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let prefix = format!("{}-{nanos}", std::process::id());
        let secret = format!("{}{}", token(), token()).into_bytes();
        debug_assert_eq!(secret.len(), protocol::SECRET_LEN);
        let secret_stem = format!("{}-{prefix}", queue.tag());
        // `pitch render --pilots` shows where the secret goes and writes nothing.
        let secret_path = if store.is_dry() {
            store.pilot_secret(&secret_stem)
        } else {
            store.write_pilot_secret(&secret_stem, &secret)?
        };
        let secret_file = queue.transport().path(&secret_path);
        let remote = queue.transport().is_remote();
        let (listener, reach) = Reach::listen(cfg.address.as_deref(), remote, &secret_path)?;
        let salt = cfg
            .init
            .as_ref()
            .map(|init| crate::codec::encode(init).expect("an init call always encodes"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: 0,
                closed: false,
                broken: None,
                seen_work: false,
                pilots: HashMap::new(),
                submissions: 0,
                submitting: Default::default(),
                start_failures: 0,
                submit_failures: 0,
                ever_connected: false,
                next_index: 0,
                kicked: false,
            }),
            wake: Condvar::new(),
            manager: Condvar::new(),
            gathered: Condvar::new(),
            tag: format!("{}-pilot", queue.tag()),
            queue,
            log: cfg.log.then(|| LogSet::of(store.root())),
            durable: store.durable(),
            cfg,
            secret,
            secret_file,
            reach,
            prefix,
            events: OnceLock::new(),
            preparing: OnceLock::new(),
        });
        let connections = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("pitch-pilot-manager".into())
                .spawn(move || manage(&s))
                .map_err(|e| Error::Config(format!("could not start a thread: {e}")))?,
        );
        let s = shared.clone();
        let c = connections.clone();
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Config(format!("block_allocation: {e}")))?;
        threads.push(
            std::thread::Builder::new()
                .name("pitch-pilot-accept".into())
                .spawn(move || accept(&s, listener, &c))
                .map_err(|e| Error::Config(format!("could not start a thread: {e}")))?,
        );
        Ok(Pilots {
            shared,
            threads: Mutex::new(threads),
            connections,
            warned_commands: AtomicBool::new(false),
            salt,
            store: store.clone(),
            secret_stem,
        })
    }

    /// Why a pilot cannot run a task asking for `r`.
    fn refuses(&self, r: &Resources) -> Option<String> {
        let d = &self.shared.cfg.defaults;
        if let Some(why) = refuses(d, r) {
            return Some(why);
        }
        if r.partition != d.partition
            || r.account != d.account
            || r.qos != d.qos
            || r.memory_max != d.memory_max
            || r.num_nodes != d.num_nodes
            || r.exclusive != d.exclusive
            || r.slurm_cmd_args != d.slurm_cmd_args
        {
            return Some(
                "pilot jobs (block_allocation) are sized by the executor's default resources; \
                 this task asks for another partition, account, qos, memory, node count, \
                 exclusive or slurm_cmd_args: submit it to an executor without \
                 block_allocation"
                    .into(),
            );
        }
        if let (Some(own), Some(wall)) = (own_limit(d, r), d.run_time_max) {
            let grace = d.checkpoint_grace.unwrap_or_default();
            if own + MARGIN + grace > wall {
                return Some(format!(
                    "its run_time_max ({own:?}) does not fit in a pilot's wall time ({wall:?}, \
                     the executor's run_time_max, less {MARGIN:?}{}): give the executor a \
                     longer run_time_max",
                    if grace.is_zero() {
                        String::new()
                    } else {
                        format!(" and its checkpoint_grace {grace:?}")
                    }
                ));
            }
        }
        None
    }

    fn submit(&self, job: Job) {
        let reason = self.refuses(&job.resources);
        let own = own_limit(&self.shared.cfg.defaults, &job.resources);
        if let Some((task, slot)) = task_of(job, self.name(), reason, own) {
            self.enqueue(task, slot);
        }
    }

    /// Why a command asking for `resources` runs as a job of its own instead of in a pilot
    /// (`None`: it runs in a pilot).
    fn command_refused(&self, spec: &TaskSpec, resources: &Resources) -> Option<String> {
        let d = &self.shared.cfg.defaults;
        if self.shared.queue.transport().is_remote() {
            return Some(
                "with remote submission a command's output files stay on the cluster, and \
                 come back with its own job"
                    .into(),
            );
        }
        if spec.ranks > 1 || d.ranks() > 1 {
            return Some(
                "pilots run commands of one rank, and only on pilots of one rank (cores = 1)"
                    .into(),
            );
        }
        // A command is a process of its own: its env and cwd are its own, whatever the
        // pilot's.
        self.refuses(&Resources {
            env: d.env.clone(),
            cwd: d.cwd.clone(),
            ..resources.clone()
        })
    }

    /// Queues a task for the pilots; a cancel ends it.
    fn enqueue(&self, task: PoolTask, slot: Arc<crate::future::Slot>) {
        let task = Arc::new(task);
        {
            let mut st = self.shared.state.lock().unwrap();
            if let Some(e) = &st.broken {
                let e = e.clone();
                drop(st);
                task.done.finish(ResultRecord { outcome: Err(e) });
                return;
            }
            st.seen_work = true;
            st.queue.push_back(task.clone());
            kick(&self.shared, &mut st);
        }
        self.shared.wake.notify_one();
        slot.cancel.on_cancel(Box::new(move || cancel(&task)));
    }
}

/// The bash that starts one pilot (`index`: the shell expression of its array index).
fn command(shared: &Shared, exe: &str, address: &str, submission: u64, index: &str) -> String {
    let d = &shared.cfg.defaults;
    let threads = d.threads().to_string();
    let mut out = String::new();
    for v in [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "RAYON_NUM_THREADS",
    ] {
        out.push_str(&format!("export {v}={threads}\n"));
    }
    for (k, v) in &d.env {
        out.push_str(&format!("export {k}={}\n", q(v)));
    }
    out.push_str(&format!("export {}=1\n", worker::WORKER_ENV));
    // The job's start, by this node's clock: bash's SECONDS counts from the job script's
    // start, which the template's own lines (module loads...) come after. The wall time
    // runs from there, not from the pilot's connection.
    out.push_str(&format!(
        "export {}=$(( ${{EPOCHSECONDS:-$(date +%s)}} - SECONDS ))\n",
        protocol::PILOT_STARTED_ENV
    ));
    if let Some(dir) = &d.cwd {
        out.push_str(&format!("cd {} || exit 1\n", q(&dir.display().to_string())));
    }
    // A multi-rank pilot starts its ranks with the scheduler's launcher (srun, flux run),
    // each of which connects on its own; one rank is the job's shell itself.
    let ranks = d.ranks();
    let launcher = if ranks > 1 {
        out.push_str(&format!("export {}={ranks}\n", protocol::RANKS_ENV));
        let dialect = shared.queue.scheduler().dialect;
        format!("{} ", (dialect.rank_launcher)(ranks, d.threads()))
    } else {
        String::new()
    };
    out.push_str(&format!(
        "exec {launcher}{} {} pilot {} {} {} {}\"{index}\"",
        q(exe),
        worker::WORKER_ARG,
        q(address),
        q(&shared.secret_file.display().to_string()),
        shared.cfg.idle_timeout.as_secs().max(1),
        q(&format!("{}.{submission}.", shared.prefix)),
    ));
    out
}

/// What a pilot job asks the scheduler for: the executor's default resources, without the
/// scheduler's warning signal (`checkpoint_grace`): the driver warns a pilot's tasks itself,
/// from the pilot's start (`ToWorker::Start`), and a signal the scheduler may send early
/// (Slurm: up to a minute) could come before the pilot's shell has become the worker. Never
/// requeued by the scheduler (`--no-requeue`, whatever the defaults say for command tasks):
/// a pilot lost with its node or preempted is replaced by the manager and its task retried,
/// and a requeued one would only come back, later, to a driver that refuses it (its id is
/// spent). It also ends with the true reason (NODE_FAIL, PREEMPTED) instead of going back
/// to the queue.
fn pilot_resources(shared: &Shared) -> Resources {
    Resources {
        checkpoint_grace: None,
        requeue: Some(false),
        ..shared.cfg.defaults.clone()
    }
}

/// The task's own time limit: its `run_time_max` unless it is the executor's default (the
/// pilots' wall time), which a task inherits without asking for it.
fn own_limit(defaults: &Resources, r: &Resources) -> Option<Duration> {
    r.run_time_max
        .filter(|_| r.run_time_max != defaults.run_time_max)
}

/// Submits `count` pilots (one submission where the scheduler has arrays, else one each).
fn submit_pilots(shared: &Shared, rt: &tokio::runtime::Runtime, count: usize) {
    let queue = &shared.queue;
    let exe = match rt.block_on(queue.job_exe()) {
        Ok(p) => p.display().to_string(),
        Err(e) => return submit_failed(shared, e),
    };
    let address = match shared.reach.address(rt, queue, std::path::Path::new(&exe)) {
        Ok(a) => a,
        Err(e) => return submit_failed(shared, e),
    };
    let arrays = queue.scheduler().dialect.arrays.is_some();
    let per_submission = if arrays { count } else { 1 };
    let mut left = count;
    while left > 0 {
        let n = per_submission.min(left);
        left -= n;
        let submission = {
            let mut st = shared.state.lock().unwrap();
            st.submissions += 1;
            let submission = st.submissions;
            st.submitting.insert(submission);
            submission
        };
        let command = |index: &str| command(shared, &exe, &address, submission, index);
        let submitted =
            rt.block_on(queue.submit_pilots(&shared.tag, &pilot_resources(shared), n, &command));
        // Its pilots' connections wait for this answer (`connection`): it is no longer in
        // flight only once its pilots are recorded, under the same lock.
        let mut st = shared.state.lock().unwrap();
        st.submitting.remove(&submission);
        match submitted {
            Ok(job_id) => {
                st.submit_failures = 0;
                for i in 0..n {
                    let job = JobRef {
                        job_id,
                        array_index: (n > 1).then_some(i as u32),
                    };
                    st.pilots.insert(
                        format!("{}.{submission}.{i}", shared.prefix),
                        PilotInfo {
                            job,
                            phase: PilotPhase::Pending,
                            ranks: vec![None; shared.cfg.defaults.ranks() as usize],
                            started: None,
                            misses: 0,
                        },
                    );
                }
                drop(st);
                shared.wake.notify_all();
            }
            Err(e) => {
                drop(st);
                shared.wake.notify_all();
                return submit_failed(shared, e);
            }
        }
    }
}

fn submit_failed(shared: &Shared, e: TaskError) {
    let give_up = {
        let mut st = shared.state.lock().unwrap();
        st.submit_failures += 1;
        st.submit_failures >= MAX_SUBMIT_FAILURES
    };
    shared.warn(format!("submitting pilot jobs failed: {e}"));
    if give_up {
        break_with(shared, e);
    }
}

/// Wakes the manager (with `st`, the state, locked by the caller).
fn kick(shared: &Shared, st: &mut State) {
    st.kicked = true;
    shared.manager.notify_one();
}

/// No pilot can start: fail every queued task, and every later one, with `error`.
fn break_with(shared: &Shared, error: TaskError) {
    let queued: Vec<Arc<PoolTask>> = {
        let mut st = shared.state.lock().unwrap();
        st.broken.get_or_insert(error.clone());
        st.queue.drain(..).collect()
    };
    for task in queued {
        let mut phase = task.phase.lock().unwrap();
        if let Phase::Queued = *phase {
            *phase = Phase::Ended;
            drop(phase);
            task.done.finish(ResultRecord {
                outcome: Err(error.clone()),
            });
        }
    }
    shared.wake.notify_all();
}

/// The manager thread: pilots as the backlog needs them, and their ends.
fn manage(shared: &Arc<Shared>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return break_with(
                shared,
                TaskError::Launch {
                    kind: LaunchErrorKind::Other,
                    what: "the pilot manager".into(),
                    detail: e.to_string(),
                },
            )
        }
    };
    let client = &shared.queue.scheduler().client;
    let mut last_query: Option<Instant> = None;
    loop {
        let (wanted, watched) = {
            let mut st = shared.state.lock().unwrap();
            st.kicked = false;
            if st.closed && st.queue.is_empty() && st.running == 0 {
                break;
            }
            let live = st.pilots.values().any(|p| p.phase != PilotPhase::Gone);
            drop(st);
            (wanted_pilots(shared), live)
        };
        if wanted > 0 {
            // The rest of a burst first: one submission for a `map`, not one per task.
            shared.settle();
            let wanted = wanted_pilots(shared);
            if wanted > 0 {
                submit_pilots(shared, &rt, wanted);
            }
        }
        // One queue query per poll interval at most, however often tasks end and wake the
        // manager.
        if watched && last_query.is_none_or(|t| t.elapsed() >= shared.cfg.poll_interval) {
            last_query = Some(Instant::now());
            match rt.block_on(client.active(&shared.tag)) {
                Ok(states) => observe(shared, &states),
                Err(e) => shared.warn(format!("asking about the pilot jobs failed: {e}")),
            }
        }
        let st = shared.state.lock().unwrap();
        let finished = st.closed && st.queue.is_empty() && st.running == 0;
        if !st.kicked && !finished {
            let _ = shared
                .manager
                .wait_timeout(st, shared.cfg.poll_interval)
                .unwrap();
        }
    }
    // Pilots that never connected would start for nothing: cancel them.
    let pending: Vec<JobRef> = {
        let st = shared.state.lock().unwrap();
        st.pilots
            .values()
            .filter(|p| p.phase == PilotPhase::Pending)
            .map(|p| p.job)
            .collect()
    };
    if !pending.is_empty() {
        if let Err(e) = rt.block_on(client.cancel(&pending)) {
            shared.warn(format!("cancelling pilot jobs failed: {e}"));
        }
    }
    shared.reach.close(&rt, &shared.queue);
}

/// How many more pilots the backlog needs: never more than the backlog (queued and running
/// tasks) or `max_workers` in all, at least `min_workers` once work came; none once broken.
fn wanted_pilots(shared: &Shared) -> usize {
    let st = shared.state.lock().unwrap();
    if st.broken.is_some() {
        return 0;
    }
    let backlog = st.queue.len() + st.running;
    let live = st
        .pilots
        .values()
        .filter(|p| p.phase != PilotPhase::Gone)
        .count();
    let mut want = (shared.cfg.max_workers as usize).min(backlog);
    if st.seen_work && !st.closed {
        want = want.max(shared.cfg.min_workers as usize);
    }
    want.saturating_sub(live)
}

/// What one queue query says of the pilots: which ended.
fn observe(shared: &Shared, states: &HashMap<JobRef, JobState>) {
    let mut failed_start: Option<JobRef> = None;
    {
        let mut st = shared.state.lock().unwrap();
        let mut never_connected = 0;
        for p in st.pilots.values_mut() {
            if p.phase == PilotPhase::Gone {
                continue;
            }
            let active = matches!(states.get(&p.job), Some(JobState::Active(_)));
            if active {
                p.misses = 0;
                continue;
            }
            p.misses += 1;
            // Once ended, or twice not listed at all (it may be on its way into the list).
            let ended = matches!(states.get(&p.job), Some(JobState::Ended(_)));
            if !ended && p.misses < 2 {
                continue;
            }
            match p.phase {
                PilotPhase::Pending => {
                    p.phase = PilotPhase::Gone;
                    never_connected += 1;
                    failed_start = Some(p.job);
                }
                PilotPhase::Connected => {
                    // Its job is over, but its sockets did not tell (a lost node): shut them,
                    // so that its thread ends its task as lost.
                    for s in p.ranks.iter().flatten() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
                PilotPhase::Gone => {}
            }
        }
        st.start_failures += never_connected;
        if st.ever_connected || st.start_failures < MAX_START_FAILURES {
            failed_start = failed_start.filter(|_| false);
        }
    }
    if let Some(job) = failed_start {
        let log = shared
            .secret_file
            .parent()
            .unwrap_or(std::path::Path::new("."));
        break_with(
            shared,
            TaskError::Launch {
                kind: LaunchErrorKind::Other,
                what: "pilot jobs".into(),
                detail: format!(
                    "{MAX_START_FAILURES} pilot jobs (the last {job}) ended without connecting \
                     to the driver at {}; see their logs in {} (is the address reachable from \
                     the compute nodes? set it with pilot_address)",
                    shared.reach.shown(),
                    log.display()
                ),
            },
        );
    }
}

/// The acceptor thread: one connection thread per peer, until the executor closes.
fn accept(shared: &Arc<Shared>, listener: TcpListener, threads: &Mutex<Vec<JoinHandle<()>>>) {
    loop {
        {
            let st = shared.state.lock().unwrap();
            if st.closed && st.queue.is_empty() && st.running == 0 {
                return;
            }
        }
        let mut fd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe {
            libc::poll(&mut fd, 1, 200);
        }
        while let Ok((stream, peer)) = listener.accept() {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("pitch-pilot".into())
                .spawn(move || connection(&s, stream, peer));
            if let Ok(handle) = spawned {
                let mut threads = threads.lock().unwrap();
                threads.retain(|h| !h.is_finished());
                threads.push(handle);
            }
        }
    }
}

/// What a pilot's thread does next.
enum Next {
    Task(Arc<PoolTask>),
    /// Nothing came for the idle timeout, and the pilot is not needed.
    Leave,
    /// Its remaining wall time fits none of the queued tasks.
    Drain,
    /// Send a `Stay` and wait again.
    Stay,
}

/// The next task for the pilot whose ranks' sockets are `sockets` (marked running there),
/// or what else it does.
fn next(
    shared: &Shared,
    deadline: Option<Instant>,
    idle_since: &mut Instant,
    sockets: &[std::os::fd::RawFd],
) -> Next {
    let heartbeat = (shared.cfg.idle_timeout / 3).max(Duration::from_millis(200));
    let mut st = shared.state.lock().unwrap();
    loop {
        if st.broken.is_some() {
            return Next::Leave;
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // The first queued task that fits (usually the head: one look per task). Tasks
        // cancelled while queued stay in the queue until a scan passes them.
        let mut queued = false;
        let mut found = None;
        let mut i = 0;
        while i < st.queue.len() {
            let mut phase = st.queue[i].phase.lock().unwrap();
            if !matches!(*phase, Phase::Queued) {
                drop(phase);
                st.queue.remove(i);
                continue;
            }
            queued = true;
            let limit = st.queue[i].limit;
            let fits = match remaining {
                None => true,
                Some(left) => !left.is_zero() && limit.is_none_or(|l| l <= left),
            };
            if fits {
                *phase = Phase::Running {
                    pid: 0,
                    srun: false,
                    sockets: sockets.to_vec(),
                };
                drop(phase);
                found = Some(i);
                break;
            }
            drop(phase);
            i += 1;
        }
        if let Some(i) = found {
            let task = st.queue.remove(i).expect("found above");
            st.running += 1;
            return Next::Task(task);
        }
        if queued {
            return Next::Drain;
        }
        let idle = idle_since.elapsed();
        if idle >= shared.cfg.idle_timeout || st.closed {
            let connected = st
                .pilots
                .values()
                .filter(|p| p.phase == PilotPhase::Connected)
                .count();
            if st.closed || connected > shared.cfg.min_workers as usize {
                return Next::Leave;
            }
            *idle_since = Instant::now();
        }
        let (guard, timeout) = shared.wake.wait_timeout(st, heartbeat).unwrap();
        st = guard;
        if timeout.timed_out() && st.queue.is_empty() && !st.closed {
            return Next::Stay;
        }
    }
}

/// Serves a connected pilot (its ranks' connections, in rank order) until it leaves, is let
/// go or is lost; `Some(warning)` to report.
fn serve_pilot(
    shared: &Arc<Shared>,
    streams: &[Arc<TcpStream>],
    job: JobRef,
    index: u32,
    started: Instant,
) -> Option<String> {
    let mut links = Vec::with_capacity(streams.len());
    for stream in streams {
        let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
            return Some(format!("pilot {job}: could not use its connection"));
        };
        links.push(Link {
            reader: BufReader::with_capacity(1 << 16, std::fs::File::from(OwnedFd::from(reader))),
            writer: std::fs::File::from(OwnedFd::from(writer)),
        });
    }
    let sockets: Vec<std::os::fd::RawFd> = links
        .iter()
        .map(|l| l.reader.get_ref().as_raw_fd())
        .collect();
    // A pilot's tasks are warned `checkpoint_grace` before its wall time (counted from its
    // job's start, less the margin), and it takes no task from then on.
    let wall = shared.cfg.defaults.run_time_max;
    let grace = shared.cfg.defaults.checkpoint_grace;
    let start = protocol::frame(&ToWorker::Start {
        index,
        init: shared.cfg.init.clone(),
        stop_after: wall.zip(grace).map(|(wall, grace)| {
            wall.saturating_sub(MARGIN)
                .saturating_sub(grace)
                .saturating_sub(started.elapsed())
        }),
    });
    let ready = start
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        .and_then(|f| send_all(&mut links, &f))
        .and_then(|()| answers(&mut links, None));
    let ready = match ready {
        Ok(Some(ready)) => ready,
        other => return Some(format!("pilot {job} ended before it was ready: {other:?}")),
    };
    for (rank, answer) in ready.into_iter().enumerate() {
        match answer {
            Some(FromWorker::Ready { init: Ok(()) }) => {}
            Some(FromWorker::Ready { init: Err(e) }) => {
                let name = shared.cfg.init.as_ref().map_or("", |i| i.name.as_str());
                break_with(
                    shared,
                    TaskError::Launch {
                        kind: LaunchErrorKind::Other,
                        what: format!("pilot {job}: its init function {name} (rank {rank})"),
                        detail: e.to_string(),
                    },
                );
                return None;
            }
            other => {
                return Some(format!(
                    "pilot {job} ended before it was ready: rank {rank} answered {other:?}"
                ))
            }
        }
    }
    let deadline = wall.map(|wall| {
        started
            + wall
                .saturating_sub(MARGIN)
                .saturating_sub(grace.unwrap_or_default())
    });
    let mut idle_since = Instant::now();
    loop {
        let task = match next(shared, deadline, &mut idle_since, &sockets) {
            Next::Task(t) => t,
            Next::Leave => return None,
            Next::Drain => {
                return Some(format!(
                    "pilot {job} drains: its remaining wall time fits none of the queued tasks; \
                     a new pilot takes them"
                ))
            }
            Next::Stay => {
                let stay = protocol::frame(&ToWorker::Stay).expect("a unit message encodes");
                if send_all(&mut links, &stay).is_err() {
                    return Some(format!("pilot {job}: its connection was lost while idle"));
                }
                continue;
            }
        };
        if sockets.iter().any(|&s| peer_gone(s)) {
            // It left while idle (cancelled, its time limit): the task is not its loss.
            let mut phase = task.phase.lock().unwrap();
            let requeue = matches!(*phase, Phase::Running { .. });
            *phase = if requeue { Phase::Queued } else { Phase::Ended };
            drop(phase);
            if !requeue {
                // Cancelled as it was handed over.
                deliver_to(
                    shared.log.as_deref(),
                    shared.durable,
                    &task,
                    Err(TaskError::Cancelled),
                );
            }
            let mut st = shared.state.lock().unwrap();
            st.running -= 1;
            if requeue {
                st.queue.push_front(task);
            }
            drop(st);
            shared.wake.notify_one();
            return Some(format!("pilot {job} left while idle"));
        }
        let end = run_on_pilot(shared, &mut links, job, &task);
        idle_since = Instant::now();
        {
            let mut st = shared.state.lock().unwrap();
            st.running -= 1;
            if st.closed {
                // The manager ends once the last task has.
                kick(shared, &mut st);
            }
        }
        if let Some(why) = end {
            return Some(why);
        }
    }
}

/// Writes `bytes` to every rank.
fn send_all(links: &mut [Link], bytes: &[u8]) -> std::io::Result<()> {
    links.iter_mut().try_for_each(|l| l.writer.write_all(bytes))
}

/// Whether the pilot at the other end of `socket` has closed it (or it broke).
fn peer_gone(socket: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: socket,
        events: protocol::PEER_CLOSED,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (protocol::PEER_CLOSED | libc::POLLHUP | libc::POLLERR) != 0
}

/// Runs `task` on the pilot's ranks; `Some(warning)` when the pilot is gone or must go.
fn run_on_pilot(
    shared: &Shared,
    links: &mut [Link],
    job: JobRef,
    task: &Arc<PoolTask>,
) -> Option<String> {
    (task.started)(Some(job.to_string()));
    // A command's pilot stops it at its limit and answers `Timeout` itself.
    let grace = if task.command {
        command::ANSWER_GRACE
    } else {
        Duration::ZERO
    };
    let deadline = task.limit.map(|limit| Instant::now() + limit + grace);
    let size = links.len() as u32;
    let answer = send_all(links, &task.frame).and_then(|()| answers(links, deadline));
    let deliver = |outcome| deliver_to(shared.log.as_deref(), shared.durable, task, outcome);
    let mut phase = task.phase.lock().unwrap();
    let cancelling = matches!(*phase, Phase::Cancelling);
    let broken = match answer {
        Ok(Some(answers)) => match gather(answers, size) {
            Gathered::Done(mut outcome, saved) => {
                *phase = Phase::Ended;
                drop(phase);
                keep_checkpoint(task, &mut outcome, saved);
                deliver(outcome);
                // A cancel that came as the task finished shut the connection: the value
                // stands.
                return cancelling.then(|| format!("pilot {job} was let go after a cancel"));
            }
            Gathered::Broken(Some(a)) => format!("it answered {a:?}"),
            Gathered::Broken(None) => "its connection closed".to_string(),
        },
        Ok(None) => {
            *phase = Phase::Ended;
            drop(phase);
            deliver(Err(if cancelling {
                TaskError::Cancelled
            } else {
                TaskError::Timeout {
                    limit: task.limit.unwrap_or_default(),
                }
            }));
            // The pilot is still running the task: closing the connection ends it.
            return Some(format!(
                "pilot {job} was let go: task {} ran past its run_time_max",
                task.key
            ));
        }
        Err(e) => format!("its connection broke: {e}"),
    };
    // Ended now (a cancel meanwhile finds nothing to do).
    *phase = Phase::Ended;
    drop(phase);
    if cancelling {
        deliver(Err(TaskError::Cancelled));
        return Some(format!("pilot {job} was let go after a cancel"));
    }
    // Delivered once the scheduler said why the pilot ended.
    let (state, detail) = end_of(shared, job);
    deliver(Err(TaskError::Scheduler {
        job_id: job.to_string(),
        state,
        detail: format!(
            "the pilot job running task {} ended ({broken}){}{detail}",
            task.key,
            if detail.is_empty() { "" } else { ": " }
        ),
    }));
    Some(format!("pilot {job} was lost running task {}", task.key))
}

/// Why a pilot's job ended, as the scheduler tells it. Its connection usually closes before
/// the scheduler has seen the end (the processes of a crashed node die before the node is
/// marked down; a scancel kills the pilot before the job leaves RUNNING): the queue is asked
/// first, once a second, until it no longer lists the job as active (at most a minute), and
/// only then why it ended (`final_states` takes a job it is asked about for one that left
/// the queue, and would call one still RUNNING cancelled).
fn end_of(shared: &Shared, job: JobRef) -> (EndReason, String) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return (EndReason::forgotten(), String::new());
    };
    let client = &shared.queue.scheduler().client;
    let until = Instant::now() + END_WAIT;
    loop {
        // `Some(state)`: listed as active; `Some("")`: the scheduler did not answer.
        let active = match rt.block_on(client.active(&shared.tag)) {
            Ok(states) => match lookup_state(&states, job) {
                Some(JobState::Active(name)) => Some(name),
                _ => None,
            },
            Err(_) => Some(""),
        };
        if let Some(name) = active {
            if Instant::now() <= until {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            if !name.is_empty() {
                return (
                    EndReason::Unknown(name.to_string()),
                    format!(
                        "its connection was lost, and {} s later the scheduler still lists its \
                         job as {name}",
                        END_WAIT.as_secs()
                    ),
                );
            }
        }
        let states = rt.block_on(client.final_states(std::slice::from_ref(&job)));
        if let Some((state, detail)) = states.get(&job) {
            if state.is_finished() || Instant::now() > until {
                return (state.clone().into_reason(), detail.clone());
            }
        } else if Instant::now() > until {
            return (EndReason::forgotten(), String::new());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

impl Pilots {
    fn shut(&self, wait: bool) {
        {
            let mut st = self.shared.state.lock().unwrap();
            st.closed = true;
            kick(&self.shared, &mut st);
        }
        self.shared.wake.notify_all();
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        let mut handles = std::mem::take(&mut *self.threads.lock().unwrap());
        handles.extend(std::mem::take(&mut *self.connections.lock().unwrap()));
        // The acceptor adds none once it has ended: join it (and the manager) first.
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        for handle in std::mem::take(&mut *self.connections.lock().unwrap()) {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        if !self.store.is_dry() {
            self.store.remove_pilot_secret(&self.secret_stem);
        }
    }
}

impl Drop for Pilots {
    fn drop(&mut self) {
        self.shut(true);
    }
}

impl Backend for Pilots {
    fn name(&self) -> &'static str {
        self.shared.queue.name()
    }

    fn check(&self, resources: &Resources) -> Result<Vec<&'static str>, String> {
        self.shared.queue.check(resources)
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        if let TaskKind::Command(c) = &job.spec.kind {
            if let Some(why) = self.command_refused(&job.spec, &job.resources) {
                if !self.warned_commands.swap(true, Ordering::SeqCst) {
                    self.shared.warn(format!(
                        "block_allocation: command {:?} runs as its own job, as without \
                         pilots, and so do other commands that do not fit a pilot: {why}",
                        c.program
                    ));
                }
                return self.shared.queue.clone().run(job);
            }
            let own = own_limit(&self.shared.cfg.defaults, &job.resources);
            if let Some((task, slot)) = command::pilot_task(job, own) {
                self.enqueue(task, slot);
            }
            return Box::pin(std::future::ready(()));
        }
        self.submit(job);
        Box::pin(std::future::ready(()))
    }

    fn refuses_function(&self, resources: &Resources) -> Option<String> {
        self.refuses(resources)
    }

    fn lost_worker(&self, spec: &TaskSpec, error: &TaskError) -> bool {
        // A function task's `Scheduler` error here is its pilot's end; a command's, when it
        // names a pilot (a command that ran as its own job names that job).
        match (&spec.kind, error) {
            (TaskKind::Function { .. }, TaskError::Scheduler { .. }) => true,
            (TaskKind::Command(_), TaskError::Scheduler { job_id, .. }) => {
                let st = self.shared.state.lock().unwrap();
                st.pilots.values().any(|p| p.job.to_string() == *job_id)
            }
            _ => false,
        }
    }

    fn attach(&self, events: Events, preparing: Arc<AtomicUsize>) {
        if let Some(log) = &self.shared.log {
            for message in log.take_damage() {
                events.emit(EventKind::Warning { message });
            }
        }
        let _ = self.shared.preparing.set(preparing.clone());
        self.shared.queue.attach(events.clone(), preparing);
        let _ = self.shared.events.set(events);
    }

    fn job_name(&self) -> Option<&str> {
        self.shared.queue.job_name()
    }

    /// A function task's script is the pilots' (all function tasks run in them), and so is
    /// a command's that runs in a pilot.
    fn render(
        &self,
        spec: &TaskSpec,
        resources: &Resources,
        paths: &crate::store::TaskPaths,
    ) -> Option<Result<String, TaskError>> {
        match spec.kind {
            TaskKind::Command(_) if self.command_refused(spec, resources).is_some() => {
                self.shared.queue.render(spec, resources, paths)
            }
            _ => Some(self.render_pilots()),
        }
    }

    fn render_pilots(&self) -> Option<Result<String, TaskError>> {
        Some(self.render_pilots())
    }

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

impl Pilots {
    /// The job script of `max_workers` pilots, as they would be submitted.
    fn render_pilots(&self) -> Result<String, TaskError> {
        let queue = &self.shared.queue;
        let exe = queue.staged_exe()?;
        let exe = queue.transport().path(&exe).display().to_string();
        let address = self.shared.reach.shown();
        let command = |index: &str| command(&self.shared, &exe, &address, 1, index);
        queue.render_pilots(
            &self.shared.tag,
            &pilot_resources(&self.shared),
            self.shared.cfg.max_workers as usize,
            &command,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("vm"), Ok(("vm".into(), 0)));
        assert_eq!(
            split_address("127.0.0.1:4100"),
            Ok(("127.0.0.1".into(), 4100))
        );
        assert_eq!(split_address("[::1]:7"), Ok(("::1".into(), 7)));
        assert_eq!(split_address("::1"), Ok(("::1".into(), 0)));
        assert!(split_address("h:x").unwrap_err().contains("bad port"));
        assert!(split_address("").is_err());
    }

    /// The build-time refusals: each names what is wrong (they come before the cache
    /// directory is touched).
    #[test]
    fn bad_pilot_settings_are_refused_at_build() {
        use crate::{FluxClusterExecutor, SlurmClusterExecutor};
        let err = |r: Result<crate::Executor, Error>| match r {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        };
        let m = err(SlurmClusterExecutor::builder()
            .idle_timeout(Duration::from_secs(5))
            .build());
        assert!(
            m.contains("idle_timeout") && m.contains("block_allocation"),
            "{m}"
        );
        let m = err(FluxClusterExecutor::builder().max_workers(3).build());
        assert!(m.contains("max_workers"), "{m}");
        let m = err(SlurmClusterExecutor::builder()
            .block_allocation(true)
            .max_workers(2)
            .min_workers(3)
            .build());
        assert!(
            m.contains("min_workers = 3") && m.contains("max_workers = 2"),
            "{m}"
        );
        let m = err(SlurmClusterExecutor::builder()
            .block_allocation(true)
            .resources(Resources::new().run_time_max(Duration::from_secs(5)))
            .build());
        assert!(m.contains("wall time"), "{m}");
        // A bad address is refused before anything connects (with remote: the relay's).
        let m = err(SlurmClusterExecutor::builder()
            .block_allocation(true)
            .pilot_address("login:x")
            .build());
        assert!(m.contains("pilot_address") && m.contains("bad port"), "{m}");
        #[cfg(feature = "remote")]
        {
            let m = err(SlurmClusterExecutor::builder()
                .block_allocation(true)
                .pilot_address("login:x")
                .remote(crate::Remote::new("login.invalid", "/scratch/pitch"))
                .build());
            assert!(m.contains("pilot_address") && m.contains("bad port"), "{m}");
        }
    }

    #[test]
    fn a_pilot_id_names_its_submission() {
        use super::connect::submission_of;
        assert_eq!(submission_of("12-34", "12-34.7.0"), Some(7));
        assert_eq!(submission_of("12-34", "12-34.12.3"), Some(12));
        assert_eq!(submission_of("12-34", "12-35.7.0"), None);
        assert_eq!(submission_of("12-34", "12-34x.7.0"), None);
        assert_eq!(submission_of("12-34", "12-34."), None);
    }

    #[test]
    fn a_task_inherits_no_limit_of_its_own_from_the_wall_time() {
        let d = Resources::new().run_time_max(Duration::from_secs(600));
        assert_eq!(own_limit(&d, &d), None);
        let r = d.clone().run_time_max(Duration::from_secs(5));
        assert_eq!(own_limit(&d, &r), Some(Duration::from_secs(5)));
    }
}
