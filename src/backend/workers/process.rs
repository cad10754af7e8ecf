//! One worker process ([`Worker`]): its [`Link`]s, one per rank; starting it
//! ([`start_worker`]: the launcher, the ranks' socket, the init function) and stopping it.

use std::fs::File;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::protocol::{self, FromWorker, ToWorker};
use super::ranks::{accept_ranks, socket_path, Listener};
use super::Shared;
use crate::backend::single_node::Launcher;
use crate::error::{LaunchErrorKind, TaskError};
use crate::worker;

/// One connection to a worker rank: the worker's pipes, or (multi-rank workers) a socket.
pub(super) struct Link {
    pub(super) reader: BufReader<File>,
    pub(super) writer: File,
}

/// One live worker process (or `mpiexec` and its ranks) and its links, one per rank.
pub(super) struct Worker {
    index: u32,
    child: Child,
    pub(super) links: Vec<Link>,
    pub(super) pid: i32,
    /// Whether the process is a launcher of remote ranks (srun, flux run).
    pub(super) srun: bool,
}

/// How long a stopped worker may take to end before its process group gets SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

impl Worker {
    pub(super) fn what(&self) -> String {
        format!("pool worker {} (pid {})", self.index, self.pid)
    }

    /// Stops the worker and reaps it; returns how it ended.
    pub(super) fn kill(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// Stops the worker (see [`stop_process`]), SIGKILL to its process group if it is still
    /// there after [`KILL_GRACE`], and reaps it.
    pub(super) fn terminate(&mut self) -> std::process::ExitStatus {
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
    pub(super) fn stop(mut self) {
        self.links.clear();
        let _ = self.child.wait();
    }

    /// Sends `bytes` (a frame) to every rank.
    pub(super) fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
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

/// Stops a worker: SIGTERM to an srun or flux run (which signals the ranks wherever they
/// run, then exits), SIGKILL to the process group of a local worker.
pub(super) fn stop_process(pid: i32, srun: bool) {
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

/// Starts a worker and waits for its init function.
pub(super) fn start_worker(shared: &Shared, index: u32) -> Result<Worker, TaskError> {
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

pub(super) fn status_text(status: &std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}
