//! [`Pilots`]: elastic pilot jobs, `block_allocation(true)` on the queue backends
//! (SlurmCluster, FluxCluster). Instead of one scheduler job per function task, the executor
//! submits a few pilot jobs (one job array on Slurm, one `flux batch` each on Flux); each runs
//! the worker binary as `__pitch-worker pilot`, which connects back to the driver over TCP
//! and then serves tasks exactly like a pool worker ([`super::serve`](mod@super::serve), same frames).
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
    answers, cancel, command, deliver_to, fail_queued, gather, init_salt, keep_checkpoint,
    key_salt, refuses, task_of, token, warn_damage, Gathered, Link, Phase, PoolTask,
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
mod jobs;
mod link;
use connect::connection;
use jobs::*;
use link::*;

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
        let salt = init_salt(cfg.init.as_ref());
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
        warn_damage(self.shared.log.as_deref(), &events);
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
        key_salt(self.salt.as_deref(), kind)
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
