//! The worker side of the pool: `__pitch-worker pool` runs its init function once, then the
//! tasks the driver sends, one at a time, until its input ends. Also the API tasks use to
//! reach what the init function returned ([`worker_state`]).

use std::any::Any;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Mutex, OnceLock};

use serde::de::DeserializeOwned;

use super::protocol::{self, FromWorker, InitCall, ToWorker};
use crate::error::TaskError;
use crate::worker::{self, TaskContext};

/// A registered function to run once in each pooled worker when it starts, with its
/// arguments: `my_task::init(args..)` for a task defined with [`task!`](crate::task!). Tasks
/// running in the worker read its value with [`worker_state`].
#[derive(Debug, Clone)]
pub struct InitFunction {
    pub(crate) call: Result<InitCall, TaskError>,
}

impl InitFunction {
    /// The init function's registered name.
    pub fn name(&self) -> Option<&str> {
        self.call.as_ref().ok().map(|c| c.name.as_str())
    }
}

#[doc(hidden)]
pub fn init_function(
    name: &str,
    fingerprint: &str,
    output_type: &str,
    args: Vec<Result<Vec<u8>, TaskError>>,
) -> InitFunction {
    InitFunction {
        call: args
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(|args| InitCall {
                name: name.to_string(),
                fingerprint: fingerprint.to_string(),
                output_type: output_type.to_string(),
                args,
            }),
    }
}

/// Why [`worker_state`] has no value for the asking task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pitch::worker_state: {0}")]
pub struct WorkerStateError(String);

/// What this worker's init function returned.
struct InitValue {
    name: String,
    output_type: String,
    bytes: Vec<u8>,
}

static INIT_VALUE: OnceLock<InitValue> = OnceLock::new();
static DECODED: Mutex<Option<&'static (dyn Any + Send + Sync)>> = Mutex::new(None);

/// The value the executor's [`init_function`](crate::SingleNodeBuilder::init_function)
/// returned in this worker, as `T` (the init function's output type, checked by name).
///
/// The init function runs once when a pooled worker (`block_allocation(true)`) starts; every
/// task that runs in that worker afterwards sees the same value, decoded once and kept for the
/// worker's life (`&'static`). Put a `Mutex` inside `T` for state the tasks change. Fails
/// outside a pooled worker, when the executor has no init function, or when `T` is not the
/// init function's output type.
///
/// ```no_run
/// pitch::task! {
///     pub fn load_table(n: usize) -> Vec<f64> { (0..n).map(|i| i as f64).collect() }
/// }
/// pitch::task! {
///     pub fn lookup(i: usize) -> Result<f64, pitch::WorkerStateError> {
///         Ok(pitch::worker_state::<Vec<f64>>()?[i])
///     }
/// }
/// ```
pub fn worker_state<T: DeserializeOwned + Send + Sync + 'static>(
) -> Result<&'static T, WorkerStateError> {
    let wanted = std::any::type_name::<T>();
    let Some(init) = INIT_VALUE.get() else {
        return Err(WorkerStateError(if worker::in_worker() {
            "this worker has no init function (set one with .init_function(..) on a \
             block_allocation executor)"
                .into()
        } else {
            "only tasks running in a pooled worker (block_allocation) have worker state".into()
        }));
    };
    if init.output_type != wanted {
        return Err(WorkerStateError(format!(
            "asked for a {wanted}, but the init function {} returns a {}",
            init.name, init.output_type
        )));
    }
    let mut decoded = DECODED.lock().unwrap_or_else(|e| e.into_inner());
    let value: &'static (dyn Any + Send + Sync) = match *decoded {
        Some(v) => v,
        None => {
            let value: T = crate::codec::decode(&init.bytes).map_err(|e| {
                WorkerStateError(format!(
                    "could not decode the value of the init function {} as {wanted}: {e}",
                    init.name
                ))
            })?;
            let leaked: &'static T = Box::leak(Box::new(value));
            *decoded = Some(leaked);
            leaked
        }
    };
    value.downcast_ref::<T>().ok_or_else(|| {
        WorkerStateError(format!(
            "the init function's value was first read as another type than {wanted}"
        ))
    })
}

static CURRENT_KEY: Mutex<String> = Mutex::new(String::new());

/// The key of the task running in this pooled worker (empty elsewhere).
pub(crate) fn current_key() -> String {
    CURRENT_KEY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Moves the protocol pipes off standard input and output, so that what tasks print cannot
/// corrupt a frame: the task's standard output goes to the worker's standard error, its
/// standard input is `/dev/null`. The protocol descriptors are close-on-exec, so programs the
/// tasks start do not hold the pipes open.
fn take_protocol_fds() -> std::io::Result<(File, File)> {
    fn dup_cloexec(fd: RawFd) -> std::io::Result<RawFd> {
        // SAFETY: fcntl on a descriptor this process owns.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(new)
    }
    let input = dup_cloexec(0)?;
    let output = dup_cloexec(1)?;
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors of this process.
    unsafe {
        if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both were just duplicated and are owned by nothing else.
        Ok((File::from_raw_fd(input), File::from_raw_fd(output)))
    }
}

/// A rank of a multi-rank worker (started by mpiexec, which keeps standard input and
/// output for itself): connects to the driver's socket and says which rank it is. Its
/// standard output goes to its standard error, like a one-rank worker's.
fn connect(path: &str) -> Result<(File, File, u32, u32, u32), String> {
    use std::os::fd::OwnedFd;
    let ranks = std::env::var(protocol::RANKS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let (rank, size, local) = worker::rank_from_env(ranks).map_err(|e| e.to_string())?;
    let stream: OwnedFd = match path.strip_prefix("tcp:") {
        Some(address) => std::net::TcpStream::connect(address)
            .map(|s| {
                let _ = s.set_nodelay(true);
                OwnedFd::from(s)
            })
            .map_err(|e| format!("cannot connect to the driver at {address}: {e}"))?,
        None => std::os::unix::net::UnixStream::connect(path)
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot connect to the driver at {path}: {e}"))?,
    };
    let other = stream.try_clone().map_err(|e| e.to_string())?;
    let token = std::env::var(protocol::TOKEN_ENV).unwrap_or_default();
    // SAFETY: dup2 onto this process's standard output.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let mut output = File::from(other);
    protocol::write(&mut output, &FromWorker::Hello { rank, size, token })
        .map_err(|e| format!("cannot greet the driver: {e}"))?;
    Ok((File::from(stream), output, rank, size, local))
}

/// The pooled worker's main loop; returns the process exit code.
pub(crate) fn serve() -> i32 {
    let (input, output, rank, size, local_rank) = match std::env::var(protocol::SOCKET_ENV) {
        Ok(path) => match connect(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pitch pool worker: {e}");
                return 2;
            }
        },
        Err(_) => match take_protocol_fds() {
            Ok((input, output)) => (input, output, 0, 1, 0),
            Err(e) => {
                eprintln!("pitch pool worker: cannot set up its pipes: {e}");
                return 2;
            }
        },
    };
    serve_on(input, output, rank, size, local_rank)
}

/// A pilot job's worker (`__pitch-worker pilot ADDRESS SECRET_FILE IDLE_SECS ID`): connects
/// to the driver at `address` (`host:port`), proves it is the user's own with the secret in
/// `secret_file`, then serves tasks like a pool worker until the driver lets it go, its
/// connection is lost, or nothing came for `idle` seconds. Returns the exit code.
///
/// A multi-rank pilot's ranks are started by the scheduler's launcher (srun, flux run) with
/// `PITCH_POOL_RANKS`; each learns its rank from the launcher's variables and connects on its
/// own.
pub(crate) fn serve_pilot(address: &str, secret_file: &str, idle: &str, id: &str) -> i32 {
    let ranks = std::env::var(protocol::RANKS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let age_ms = job_age_ms();
    // The pilot's own variables are not the commands' it runs (a command job has none of
    // them); read above, no thread runs yet.
    for var in [
        worker::WORKER_ENV,
        protocol::PILOT_STARTED_ENV,
        protocol::RANKS_ENV,
    ] {
        std::env::remove_var(var);
    }
    let connected = worker::rank_from_env(ranks)
        .map_err(|e| e.to_string())
        .and_then(|(rank, size, local)| {
            pilot_connect(address, secret_file, idle, id, rank, size, age_ms)
                .map(|(input, output)| (input, output, rank, size, local))
        });
    match connected {
        Ok((input, output, rank, size, local)) => serve_on(input, output, rank, size, local),
        Err(e) => {
            eprintln!("pitch pilot {id}: {e}");
            2
        }
    }
}

/// How long ago the pilot's job started, in milliseconds: from the start its job script
/// recorded (`PITCH_PILOT_STARTED`, whole seconds since the epoch), 0 without one.
fn job_age_ms() -> u64 {
    let Some(started) = std::env::var(protocol::PILOT_STARTED_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return 0;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(std::time::Duration::from_secs(started))
        .as_millis()
        .min(u128::from(u64::MAX)) as u64
}

/// Reads the executor's secret: a regular file of this user that nobody else may read. Its
/// folder (the cache directory's `jobs/`) is opened not through a link, and the file relative
/// to that handle, not through a link either and without blocking on a FIFO; the checks are
/// made on the opened file (`fstat`), so what is read is what was checked. A link in either
/// place is refused, naming it, never followed.
fn read_secret(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file_path = std::path::Path::new(path);
    let (Some(folder), Some(name)) = (
        file_path.parent(),
        file_path.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(format!("the secret file {path} does not name a file"));
    };
    let folder = if folder.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        folder
    };
    let file = crate::dir::Dir::open(folder)
        .and_then(|dir| dir.open_read(name))
        .map_err(|e| format!("cannot open the secret file {path}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot examine the secret file {path}: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the secret file {path} is not a private file of this user (mode {:o}, owner {})",
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    let mut secret = Vec::with_capacity(protocol::SECRET_LEN + 1);
    file.take(protocol::SECRET_LEN as u64 + 1)
        .read_to_end(&mut secret)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if secret.len() != protocol::SECRET_LEN {
        return Err(format!("the secret file {path} is not a pitch secret"));
    }
    Ok(secret)
}

fn pilot_connect(
    address: &str,
    secret_file: &str,
    idle: &str,
    id: &str,
    rank: u32,
    size: u32,
    age_ms: u64,
) -> Result<(File, File), String> {
    use std::os::fd::AsRawFd;
    let idle: u64 = idle
        .parse()
        .map_err(|e| format!("bad idle timeout {idle:?}: {e}"))?;
    let secret = read_secret(secret_file)?;
    let stream = std::net::TcpStream::connect(address)
        .map_err(|e| format!("cannot connect to the driver at {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    // A driver that has gone silent (its host lost) lets no frame through: leave after
    // `idle` seconds without one. The driver sends `Stay` more often to a pilot it keeps.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(idle.max(1))))
        .map_err(|e| e.to_string())?;
    let mut hello = Vec::with_capacity(protocol::PILOT_MAGIC.len() + secret.len());
    hello.extend_from_slice(protocol::PILOT_MAGIC);
    hello.extend_from_slice(&secret);
    protocol::write_raw_then(
        &mut &stream,
        &hello,
        &FromWorker::PilotHello {
            pilot: id.to_string(),
            rank,
            size,
            age_ms,
        },
    )
    .map_err(|e| format!("cannot greet the driver at {address}: {e}"))?;
    // Task output goes to the job's log, never into the protocol.
    // SAFETY: dup2 onto this process's standard output.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fd = stream.as_raw_fd();
    // The watchdog: a lost connection ends the pilot at once, even in the middle of a task
    // (the driver has given the task up or is gone).
    std::thread::Builder::new()
        .name("pitch-pilot-watchdog".into())
        .spawn(move || loop {
            let mut p = libc::pollfd {
                fd,
                events: protocol::PEER_CLOSED,
                revents: 0,
            };
            // SAFETY: one valid pollfd; the descriptor lives as long as the process.
            let n = unsafe { libc::poll(&mut p, 1, 1000) };
            if n > 0 && p.revents & (protocol::PEER_CLOSED | libc::POLLHUP | libc::POLLERR) != 0 {
                eprintln!("pitch pilot: the driver closed the connection; leaving");
                super::command::kill_running();
                std::process::exit(0);
            }
        })
        .map_err(|e| e.to_string())?;
    let other = stream.try_clone().map_err(|e| e.to_string())?;
    Ok((
        File::from(std::os::fd::OwnedFd::from(stream)),
        File::from(std::os::fd::OwnedFd::from(other)),
    ))
}

/// Serves tasks on a connection (pipes or a socket) until its input ends; the exit code.
fn serve_on(input: File, output: File, rank: u32, size: u32, local_rank: u32) -> i32 {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = BufWriter::with_capacity(1 << 16, output);
    let (index, init) = match protocol::read::<ToWorker>(&mut input) {
        Ok(Some(ToWorker::Start {
            index,
            init,
            stop_after,
        })) => {
            if let Some(after) = stop_after {
                crate::checkpoint::stop_process_after(after);
            }
            (index, init)
        }
        Ok(None) => return 0,
        Ok(Some(other)) => {
            eprintln!("pitch pool worker: expected a start message, got {other:?}");
            return 2;
        }
        Err(e) => {
            eprintln!("pitch pool worker: {e}");
            return 2;
        }
    };
    let _ = worker::CONTEXT.set(TaskContext {
        rank,
        size,
        local_rank,
        node: std::env::var("SLURMD_NODENAME").unwrap_or_default(),
        key: String::new(),
    });
    let ready = match init {
        None => Ok(()),
        Some(call) => run_init(call),
    };
    let failed = ready.is_err();
    if protocol::write(&mut output, &FromWorker::Ready { init: ready })
        .and_then(|()| output.flush())
        .is_err()
        || failed
    {
        return 1;
    }
    loop {
        match protocol::read::<ToWorker>(&mut input) {
            Ok(None) => return 0,
            Ok(Some(ToWorker::Stay)) => {}
            Ok(Some(ToWorker::Run {
                key,
                name,
                fingerprint,
                args,
                checkpoint,
                stop_after,
            })) => {
                *CURRENT_KEY.lock().unwrap_or_else(|e| e.into_inner()) = key.to_string();
                crate::checkpoint::begin_pooled(key.to_string(), checkpoint, stop_after);
                let outcome = worker::registered(&name, &fingerprint)
                    .and_then(|registration| worker::run_registered(registration, args));
                let checkpoint = crate::checkpoint::end_pooled();
                let sent = protocol::write(
                    &mut output,
                    &FromWorker::Done {
                        outcome,
                        checkpoint,
                    },
                )
                .and_then(|()| output.flush());
                if let Err(e) = sent {
                    // The driver is gone: nobody wants the next task either.
                    eprintln!("pitch pool worker {index}: cannot send a result: {e}");
                    return 0;
                }
            }
            Ok(Some(ToWorker::Command(run))) => {
                *CURRENT_KEY.lock().unwrap_or_else(|e| e.into_inner()) = run.key.to_string();
                let outcome = super::command::run_here(run);
                let sent = protocol::write(
                    &mut output,
                    &FromWorker::Done {
                        outcome,
                        checkpoint: None,
                    },
                )
                .and_then(|()| output.flush());
                if let Err(e) = sent {
                    eprintln!("pitch pilot {index}: cannot send a command's result: {e}");
                    return 0;
                }
            }
            Ok(Some(other)) => {
                eprintln!("pitch pool worker {index}: unexpected message {other:?}");
                return 2;
            }
            // Only a pilot has a read timeout: no word from its driver for its idle timeout.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                eprintln!(
                    "pitch pilot {index}: no word from the driver within the idle timeout; leaving"
                );
                return 0;
            }
            Err(e) => {
                eprintln!("pitch pool worker {index}: {e}");
                return 2;
            }
        }
    }
}

fn run_init(call: InitCall) -> Result<(), TaskError> {
    let registration = worker::registered(&call.name, &call.fingerprint)?;
    let bytes = worker::run_registered(registration, call.args)?;
    let _ = INIT_VALUE.set(InitValue {
        name: call.name,
        output_type: call.output_type,
        bytes,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_secret_is_read_only_from_a_private_regular_file_never_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let jobs = d.path().join("jobs");
        std::fs::create_dir(&jobs).unwrap();
        let secret = jobs.join("t.secret");
        std::fs::write(&secret, [b'k'; protocol::SECRET_LEN]).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = secret.to_str().unwrap();
        assert_eq!(read_secret(path).unwrap(), [b'k'; protocol::SECRET_LEN]);
        // A link to another private file of the user's, in the secret's place.
        let other = d.path().join("other");
        std::fs::write(&other, [b'o'; protocol::SECRET_LEN]).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&secret).unwrap();
        std::os::unix::fs::symlink(&other, &secret).unwrap();
        let e = read_secret(path).unwrap_err();
        assert!(e.contains(path) && e.contains("symbolic link"), "{e}");
        // The folder a link (to a folder holding a secret of that name).
        std::fs::remove_file(&secret).unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::copy(&other, elsewhere.join("t.secret")).unwrap();
        std::fs::remove_dir(&jobs).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &jobs).unwrap();
        let e = read_secret(path).unwrap_err();
        assert!(e.contains("jobs is a symbolic link"), "{e}");
        // A FIFO is refused without blocking; a file others may read is refused.
        std::fs::remove_file(&jobs).unwrap();
        std::fs::create_dir(&jobs).unwrap();
        let fifo = std::ffi::CString::new(path).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = read_secret(path).unwrap_err();
        assert!(e.contains("not a private file"), "{e}");
        std::fs::remove_file(&secret).unwrap();
        std::fs::write(&secret, [b'k'; protocol::SECRET_LEN]).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret(path)
            .unwrap_err()
            .contains("not a private file"));
    }
}
