//! The worker side: [`init`] turns the process into a worker when it was launched as one; the
//! worker reads a task file, resolves its inputs from the store, runs the registered function
//! and writes its result atomically. [`TaskContext`] tells a running task its rank (and,
//! with `crate::checkpoint`, whether it should stop, and its checkpoint).

use std::ffi::OsStr;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{LaunchErrorKind, TaskError, REQUEUE_EXIT_CODE};
use crate::future::view_bytes;
use crate::registry;
use crate::store::{RankRecord, ResultRecord, Store, TaskPaths};
use crate::task::{ArgSlot, TaskKey, TaskKind, TaskSpec};

/// The first argument that makes a binary a worker.
pub(crate) const WORKER_ARG: &str = "__pitch-worker";
/// Set in a function task's environment.
pub(crate) const WORKER_ENV: &str = "PITCH_WORKER";
/// Set when the worker must fsync what it writes.
pub(crate) const DURABLE_ENV: &str = "PITCH_DURABLE";
/// Set for a worker whose cache directory trusts its group (`trust_group`): the worker's own
/// check of the cache directory ([`main`]) uses the same policy as the driver's.
pub(crate) const TRUST_GROUP_ENV: &str = "PITCH_TRUST_GROUP";
/// The exit code of a worker that refused its cache directory (`crate::trust`), as of one
/// that could not write its result: it writes nothing there.
const UNTRUSTED_EXIT_CODE: i32 = 3;
/// When a SingleNode (SlurmJob, FluxJob) function task is warned before its time limit, in
/// milliseconds since the Unix epoch: besides the SIGUSR1 its driver sends then, so that a
/// warning that comes while a launcher (mpiexec, srun, flux run) is still starting the ranks
/// is not lost.
pub(crate) const WARN_AT_ENV: &str = "PITCH_WARN_AT";

static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// Whether building an executor here would be the recursion a forgotten `pitch::init()`
/// causes: this process was launched as a worker (`__pitch-worker` first), yet `main` runs
/// instead of the task, and its executor would launch this binary as workers again, each of
/// them doing the same. A task that builds an executor (`pitch::init()` ran it: nested
/// executors, such as a FluxJobExecutor inside a FluxClusterExecutor's batch job) is allowed.
pub(crate) fn in_worker() -> bool {
    launched_without_init(
        IN_WORKER.load(Ordering::SeqCst),
        std::env::args_os().nth(1).as_deref(),
    )
}

fn launched_without_init(running_task: bool, first_arg: Option<&OsStr>) -> bool {
    !running_task && first_arg == Some(OsStr::new(WORKER_ARG))
}

/// Call first in `main`: when the process was launched as a pitch worker, runs the task it
/// was given and exits; otherwise returns at once and does nothing.
///
/// A program that forgets it re-runs `main` in every worker; building an executor there fails
/// with [`Error::InsideWorker`](crate::Error::InsideWorker) instead of spawning more workers.
pub fn init() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(WORKER_ARG)) {
        // The driver: find the binary the workers re-execute before anything can move it.
        crate::backend::exe::remember();
        return;
    }
    let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    std::process::exit(main(&rest));
}

/// The worker's entry: `run <cache-dir> <key>`, `gather <cache-dir> <key> <ranks>` or
/// `finished <cache-dir> <key>` (exit status 0 when the task's finished result is stored: a
/// job script asks before running a task again in a job Slurm requeued). Returns the
/// process exit code.
pub fn main(args: &[String]) -> i32 {
    IN_WORKER.store(true, Ordering::SeqCst);
    // Before anything else: the warning before a time limit must not kill the worker.
    crate::checkpoint::install_handler();
    let durable = std::env::var_os(DURABLE_ENV).is_some();
    let trust = crate::trust::Policy {
        trust_group: std::env::var_os(TRUST_GROUP_ENV).is_some(),
    };
    let parsed = |root: &str, key: &str| -> Result<(Store, TaskKey), String> {
        Ok((
            Store::at(PathBuf::from(root), durable).trusting(trust),
            key.parse()?,
        ))
    };
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["run", root, key] => match parsed(root, key) {
            Ok((store, _)) if !trusted(&store) => UNTRUSTED_EXIT_CODE,
            Ok((store, key)) => run(&store, key),
            Err(e) => usage(&e),
        },
        ["finished", root, key] => match parsed(root, key) {
            Ok((store, _)) if !trusted(&store) => 1,
            Ok((store, key)) => i32::from(store.task(&key).finished_result().is_none()),
            Err(e) => usage(&e),
        },
        ["gather", root, key, ranks] => match (parsed(root, key), ranks.parse::<u32>()) {
            (Ok((store, _)), Ok(_)) if !trusted(&store) => UNTRUSTED_EXIT_CODE,
            (Ok((store, key)), Ok(ranks)) => match store.task(&key).gather_ranks(ranks).outcome {
                Ok(_) => 0,
                Err(TaskError::Checkpointed { .. }) => REQUEUE_EXIT_CODE,
                Err(_) => 1,
            },
            (Err(e), _) => usage(&e),
            (_, Err(e)) => usage(&format!("bad rank count {ranks:?}: {e}")),
        },
        ["pool"] => crate::backend::workers::serve(),
        ["pilot", address, secret, idle, id] => {
            crate::backend::workers::serve_pilot(address, secret, idle, id)
        }
        #[cfg(feature = "remote")]
        ["relay", bind] => crate::backend::transport::relay::serve(bind),
        _ => usage("unknown worker command"),
    }
}

/// Checks the cache directory and every directory above it again, as the driver did when it
/// opened it (`crate::trust::check_root`), before the worker reads a task or writes a result
/// there: one swapped or opened to others since (the driver checked it earlier, maybe on
/// another host) is refused, saying why on stderr, which the driver shows in the task's
/// error. The path is resolved first (a remote cache's path may go through a link such as
/// `/home -> /gpfs/home`): a directory replaced by a link to another user's is refused by
/// its owner.
fn trusted(store: &Store) -> bool {
    let root = store.root();
    let checked = std::fs::canonicalize(root)
        .map_err(|e| crate::trust::Untrusted {
            path: root.to_path_buf(),
            reason: format!("cannot be resolved: {e}"),
        })
        .and_then(|root| crate::trust::check_root(&root, store.trust()));
    match checked {
        Ok(()) => true,
        Err(u) => {
            say(&format!(
                "pitch worker: refusing the cache directory {}: {u}",
                root.display()
            ));
            false
        }
    }
}

fn usage(problem: &str) -> i32 {
    say(&format!(
        "pitch worker: {problem}\nusage: {WORKER_ARG} run <cache-dir> <key> | {WORKER_ARG} gather <cache-dir> <key> <ranks> | {WORKER_ARG} finished <cache-dir> <key> | {WORKER_ARG} pool | {WORKER_ARG} pilot <address> <secret-file> <idle-secs> <id> | {WORKER_ARG} relay <bind-address>"
    ));
    2
}

/// Writes a line to stderr; a failed write (a full disk under the stderr file, a closed
/// pipe) is ignored, never a panic: the worker's exit status still says it failed.
pub(crate) fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where a task runs among its ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    /// This rank (0 for one-rank tasks).
    pub rank: u32,
    /// Number of ranks.
    pub size: u32,
    /// Rank among the ranks on this node.
    pub local_rank: u32,
    /// This node's name.
    pub node: String,
    /// The task's key.
    pub key: String,
}

pub(crate) static CONTEXT: OnceLock<TaskContext> = OnceLock::new();

/// The context of the task running in this process: rank, size, node. Outside a worker it
/// describes a single rank on this host.
pub fn context() -> TaskContext {
    if let Some(c) = CONTEXT.get() {
        let mut c = c.clone();
        if c.node.is_empty() {
            // Asked for when needed, not in every worker.
            c.node = hostname();
        }
        if c.key.is_empty() {
            c.key = crate::backend::workers::current_key();
        }
        return c;
    }
    TaskContext {
        rank: 0,
        size: 1,
        local_rank: 0,
        node: hostname(),
        key: String::new(),
    }
}

pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Rank, size and local rank from the launcher's environment, first family that is set.
///
/// Flux's comes before Slurm's and PMI's: a task `flux run` started also has Flux's simple
/// PMI variables (PMI_RANK, PMI_SIZE, but no MPI_LOCALRANKID, so PMI's local rank would be
/// the global one), and a Flux instance started by Slurm passes the SLURM_* variables of its
/// own launch on to every job. Open MPI's come first: pitch's `mpiexec -n N` may run inside a
/// Flux job, whose FLUX_TASK_RANK its ranks inherit.
pub(crate) fn rank_from_env(ranks: u32) -> Result<(u32, u32, u32), TaskError> {
    rank_from(ranks, env_u32)
}

/// [`rank_from_env`] with the variables `env_u32` gives.
fn rank_from(
    ranks: u32,
    env_u32: impl Fn(&str) -> Option<u32>,
) -> Result<(u32, u32, u32), TaskError> {
    if ranks <= 1 {
        return Ok((0, 1, 0));
    }
    const FAMILIES: [(&str, &str, &str); 5] = [
        (
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK",
        ),
        ("FLUX_TASK_RANK", "FLUX_JOB_SIZE", "FLUX_TASK_LOCAL_ID"),
        ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
        ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
        ("PMIX_RANK", "", ""),
    ];
    for (rank_var, size_var, local_var) in FAMILIES {
        if let Some(rank) = env_u32(rank_var) {
            let size = env_u32(size_var).unwrap_or(ranks);
            let local = env_u32(local_var).unwrap_or(rank);
            if size != ranks {
                return Err(TaskError::Launch {
                    what: "the worker".into(),
                    kind: LaunchErrorKind::Other,
                    detail: format!(
                        "the task asks for {ranks} ranks but the launcher started {size} ({size_var})"
                    ),
                });
            }
            return Ok((rank, size, local));
        }
    }
    Err(TaskError::Launch {
        what: "the worker".into(),
        kind: LaunchErrorKind::Other,
        detail: format!(
            "the task asks for {ranks} ranks but no MPI launcher's rank variable is set \
             (OMPI_COMM_WORLD_RANK, SLURM_PROCID, PMI_RANK, PMIX_RANK, FLUX_TASK_RANK)"
        ),
    })
}

static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Some(loc) = info.location() {
            *PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{}:{}:{}", loc.file(), loc.line(), loc.column()));
        }
        default(info);
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".into()
    }
}

/// Reads an upstream task's result for an argument.
fn resolve_arg(store: &Store, slot: ArgSlot, position: usize) -> Result<Vec<u8>, TaskError> {
    match slot {
        ArgSlot::Inline(bytes) => Ok(bytes),
        ArgSlot::Ref { key, view } => {
            let paths = store.task(&key);
            let record = paths
                .read_result()
                .map_err(|e| e.into_task_error(&paths.result_file()))?;
            match record.outcome {
                Ok(values) => view_bytes(&values, view),
                Err(cause) => Err(TaskError::DependencyFailed {
                    input: format!("argument {position}"),
                    key: key.to_string(),
                    cause: Box::new(cause),
                }),
            }
        }
    }
}

/// The registered function `name`, if this binary's fingerprint for it is `fingerprint`.
pub(crate) fn registered(
    name: &str,
    fingerprint: &str,
) -> Result<&'static registry::Registration, TaskError> {
    let registration = registry::lookup(name)?;
    let expected = (registration.fingerprint)();
    if expected != fingerprint {
        return Err(TaskError::BinaryMismatch {
            name: name.to_string(),
            expected: expected.to_string(),
            found: fingerprint.to_string(),
        });
    }
    Ok(registration)
}

fn execute(store: &Store, spec: TaskSpec) -> Result<Vec<u8>, TaskError> {
    let TaskKind::Function {
        name,
        fingerprint,
        args,
    } = spec.kind
    else {
        return Err(TaskError::Launch {
            what: "the worker".into(),
            kind: LaunchErrorKind::Other,
            detail: "a command task was handed to the function worker".into(),
        });
    };
    let registration = registered(&name, &fingerprint)?;
    let args = args
        .into_iter()
        .enumerate()
        .map(|(i, slot)| resolve_arg(store, slot, i))
        .collect::<Result<Vec<_>, _>>()?;
    run_registered(registration, args)
}

/// Runs a registered function on its encoded arguments, a panic caught as
/// [`TaskError::Panicked`], and the unwinding of `TaskContext::checkpoint` as the end it
/// carries ([`TaskError::Checkpointed`]).
pub(crate) fn run_registered(
    registration: &registry::Registration,
    args: Vec<Vec<u8>>,
) -> Result<Vec<u8>, TaskError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(install_panic_hook);
    match panic::catch_unwind(AssertUnwindSafe(|| (registration.run)(args))) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<crate::checkpoint::Stop>() {
            Ok(stop) => Err(stop.0),
            Err(payload) => Err(TaskError::Panicked {
                message: panic_message(payload.as_ref()),
                location: PANIC_LOCATION
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            }),
        },
    }
}

fn run(store: &Store, key: TaskKey) -> i32 {
    let paths = store.task(&key);
    let task_file = paths.task_file();
    // Through the checked task directory: a link planted in its place is not followed.
    // The task file holds its task's key: one copied from another task's directory is
    // refused, not run.
    let spec: Result<TaskSpec, TaskError> = paths
        .read_task()
        .map_err(|e| e.into_task_error(&task_file))
        .and_then(|spec: TaskSpec| {
            if spec.key == key {
                Ok(spec)
            } else {
                Err(TaskError::Store {
                    path: task_file.display().to_string(),
                    detail: format!(
                        "is the task file of task {}, not of this task: refused as foreign",
                        spec.key
                    ),
                })
            }
        });
    let ranks = spec.as_ref().map(|s| s.ranks).unwrap_or(1);
    crate::checkpoint::run_in(paths.clone());
    if let Some(at) = std::env::var(WARN_AT_ENV)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    {
        crate::checkpoint::stop_process_at(at);
    }
    let (rank, size, outcome) = match rank_from_env(ranks) {
        Err(e) => (0, 1, Err(e)),
        Ok((rank, size, local_rank)) => {
            let _ = CONTEXT.set(TaskContext {
                rank,
                size,
                local_rank,
                node: std::env::var("SLURMD_NODENAME").unwrap_or_default(),
                key: key.to_string(),
            });
            (rank, size, spec.and_then(|spec| execute(store, spec)))
        }
    };
    finish(&paths, rank, size, outcome)
}

/// Records how the task of `paths` ended on this rank (its result, or its rank's file);
/// returns the worker's exit code: 0, 1 for a failure, [`REQUEUE_EXIT_CODE`] for a
/// checkpoint, 3 when the result could not be written.
pub(crate) fn finish(
    paths: &TaskPaths,
    rank: u32,
    size: u32,
    outcome: Result<Vec<u8>, TaskError>,
) -> i32 {
    let code = match &outcome {
        Ok(_) => 0,
        Err(TaskError::Checkpointed { .. }) => REQUEUE_EXIT_CODE,
        Err(_) => 1,
    };
    let ok = outcome.is_ok();
    if size <= 1 {
        let record = paths.publish_result(ResultRecord {
            outcome: outcome.map(|v| vec![v]),
        });
        match &record.outcome {
            // The value could not be written: why (a full disk, a refused permission) goes
            // to stderr, whose tail the driver's error quotes.
            Err(e) if ok => {
                say(&format!("pitch worker: could not write the result: {e}"));
                return 3;
            }
            Err(e) if !paths.result_file().exists() => {
                say(&format!(
                    "pitch worker: the task failed ({e}) and its result could not be written to {}",
                    paths.result_file().display()
                ));
                return 3;
            }
            _ => {}
        }
    } else if let Err(e) = paths.write_rank(&RankRecord { rank, outcome }) {
        say(&format!(
            "pitch worker: could not write the rank's result: {e}"
        ));
        return 3;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::{launched_without_init, rank_from, WORKER_ARG};
    use std::ffi::OsStr;

    #[test]
    fn only_a_worker_main_without_init_may_not_build_executors() {
        let worker = Some(OsStr::new(WORKER_ARG));
        // main runs although the process was launched as a worker: pitch::init() is missing.
        assert!(launched_without_init(false, worker));
        // A task (init ran it) builds an executor: nested executors are fine.
        assert!(!launched_without_init(true, worker));
        // A driver, whatever its environment (PITCH_WORKER inherited from a task that
        // started another program does not matter).
        assert!(!launched_without_init(false, Some(OsStr::new("--tasks"))));
        assert!(!launched_without_init(false, None));
    }

    fn env<'a>(vars: &'a [(&'a str, u32)]) -> impl Fn(&str) -> Option<u32> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn flux_ranks_win_over_inherited_slurm_and_flux_pmi_variables() {
        // What a `flux run -N 2 -n 4` task (rank 3) sees in a Flux instance Slurm started:
        // Flux's variables, Flux's simple PMI ones, and the instance's own SLURM_* launch.
        let flux_task = [
            ("FLUX_TASK_RANK", 3),
            ("FLUX_JOB_SIZE", 4),
            ("FLUX_TASK_LOCAL_ID", 1),
            ("PMI_RANK", 3),
            ("PMI_SIZE", 4),
            ("SLURM_PROCID", 0),
            ("SLURM_NTASKS", 4),
            ("SLURM_LOCALID", 0),
        ];
        assert_eq!(rank_from(4, env(&flux_task)).ok(), Some((3, 4, 1)));
        // Open MPI's mpiexec inside a Flux job: its ranks inherit FLUX_TASK_RANK.
        let mpiexec = [
            ("OMPI_COMM_WORLD_RANK", 1),
            ("OMPI_COMM_WORLD_SIZE", 2),
            ("OMPI_COMM_WORLD_LOCAL_RANK", 1),
            ("FLUX_TASK_RANK", 0),
            ("FLUX_JOB_SIZE", 1),
        ];
        assert_eq!(rank_from(2, env(&mpiexec)).ok(), Some((1, 2, 1)));
        // srun steps.
        let srun = [
            ("SLURM_PROCID", 2),
            ("SLURM_NTASKS", 3),
            ("SLURM_LOCALID", 0),
        ];
        assert_eq!(rank_from(3, env(&srun)).ok(), Some((2, 3, 0)));
    }
}
