//! One child process from spawn to end, on a plain thread: its output pipes and its exit are
//! watched with one `poll(2)` on the pipes and a descriptor that becomes readable when the
//! child exits (a pidfd on Linux; elsewhere, and with the `portable` feature, a pipe that a
//! small waiter thread closes when `waitid(2)` sees the exit), so the thread sleeps until
//! something happens (no polling interval); a time limit is the poll's timeout. The [`Ticket`] is the
//! only way other threads reach the child: it refuses to start a cancelled task and signals the
//! process group only while the child has not been reaped, so a recycled pid is never hit.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::output::{Captured, Sink};
use super::spawn::Child;

/// How long a task gets between SIGTERM and SIGKILL when it is timed out or cancelled.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the output pipes to close after the child exited (a background
/// grandchild may hold them open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Without an exit descriptor (Linux before 5.3, or no thread for the waiter), how often the
/// exit is checked.
const FALLBACK_TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
enum Stage {
    /// Not started yet.
    Queued,
    /// Running as the leader of process group `pid`.
    Running(u32),
    /// Running where pitch reaches it only through its scheduler (a Flux job submitted
    /// through libflux).
    Remote(Arc<dyn Remote>),
    /// Exited (the pid may be reaped and recycled: never signal it again).
    Ended,
}

impl Stage {
    fn running(&self) -> bool {
        matches!(self, Stage::Running(_) | Stage::Remote(_))
    }
}

/// A task's job that runs in a scheduler, not as pitch's child: how a cancel reaches it.
pub(crate) trait Remote: Send + Sync + std::fmt::Debug {
    /// Ends the job (the scheduler stops its processes, SIGKILL included).
    fn cancel(&self);
}

#[derive(Debug)]
struct TicketState {
    stage: Stage,
    cancel_requested: bool,
}

/// Shared between the thread that runs a child and whoever wants to cancel it.
#[derive(Debug)]
pub(crate) struct Ticket {
    state: Mutex<TicketState>,
    ended: Condvar,
}

/// What [`Ticket::cancel`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    /// The task had not started and never will.
    NotStarted,
    /// The child was sent SIGTERM; its thread reports the cancellation when it ends.
    Signalled,
    /// The child had already ended.
    Ended,
}

impl Default for Ticket {
    fn default() -> Ticket {
        Ticket {
            state: Mutex::new(TicketState {
                stage: Stage::Queued,
                cancel_requested: false,
            }),
            ended: Condvar::new(),
        }
    }
}

impl Ticket {
    /// Asks the task to stop: a queued task never starts, a running one gets SIGTERM.
    pub(crate) fn cancel(&self) -> CancelOutcome {
        let mut st = self.state.lock().unwrap();
        st.cancel_requested = true;
        match &st.stage {
            Stage::Queued => CancelOutcome::NotStarted,
            Stage::Running(pid) => {
                kill_group(*pid, libc::SIGTERM);
                CancelOutcome::Signalled
            }
            Stage::Remote(job) => {
                // The scheduler's cancel is a request to another process: not under the lock.
                let job = job.clone();
                drop(st);
                job.cancel();
                CancelOutcome::Signalled
            }
            Stage::Ended => CancelOutcome::Ended,
        }
    }

    /// SIGKILL for a cancelled child that outlived [`KILL_GRACE`] (a remote job's scheduler
    /// does that itself).
    pub(crate) fn kill(&self) {
        let st = self.state.lock().unwrap();
        if let Stage::Running(pid) = st.stage {
            kill_group(pid, libc::SIGKILL);
        }
    }

    /// Sends `signal` to the child's process group while it runs.
    pub(crate) fn signal(&self, signal: i32) {
        let st = self.state.lock().unwrap();
        if let Stage::Running(pid) = st.stage {
            kill_group(pid, signal);
        }
    }

    /// Whether the task runs as a remote job ([`Ticket::start_remote`]).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.state.lock().unwrap().stage, Stage::Remote(_))
    }

    /// Runs `submit` unless the task was cancelled first (then `None`), as [`Ticket::start`]
    /// does for a child; a cancel from now on reaches the job through its [`Remote`].
    pub(crate) fn start_remote<E>(
        &self,
        submit: impl FnOnce() -> Result<Arc<dyn Remote>, E>,
    ) -> Option<Result<(), E>> {
        let mut st = self.state.lock().unwrap();
        if st.cancel_requested {
            return None;
        }
        Some(submit().map(|job| st.stage = Stage::Remote(job)))
    }

    /// Whether cancellation was asked for.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.state.lock().unwrap().cancel_requested
    }

    /// Runs `spawn` unless the task was cancelled first (then `None`). Holding the lock
    /// while spawning closes the gap between "not started" and "running".
    pub(crate) fn start(
        &self,
        spawn: impl FnOnce() -> std::io::Result<Child>,
    ) -> Option<std::io::Result<Child>> {
        let mut st = self.state.lock().unwrap();
        if st.cancel_requested {
            return None;
        }
        let spawned = spawn();
        if let Ok(child) = &spawned {
            st.stage = Stage::Running(child.id());
        }
        Some(spawned)
    }

    /// Marks the task ended: no signal or cancel reaches it any more.
    pub(crate) fn ended(&self) {
        self.state.lock().unwrap().stage = Stage::Ended;
        self.ended.notify_all();
    }

    /// Waits up to `timeout` for a started child to end; tells whether it has.
    pub(crate) fn wait_ended(&self, timeout: Duration) -> bool {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .ended
            .wait_timeout_while(st, timeout, |st| st.stage.running())
            .unwrap();
        !st.stage.running()
    }
}

/// Signals the process group `pid` leads.
pub(crate) fn kill_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group the child leads.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

/// How a child process ended.
#[derive(Debug)]
pub(crate) enum End {
    Exited(ExitStatus),
    TimedOut(Duration),
    Cancelled,
}

/// The end of a child and what it wrote.
pub(crate) struct Finished {
    pub end: Result<End, std::io::Error>,
    pub elapsed: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// A descriptor that becomes readable when the child `pid` exits, without reaping it: a pidfd.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
fn exit_descriptor(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A descriptor that becomes readable when the child `pid` exits, without reaping it: the read
/// end of a pipe whose write end a waiter thread closes once `waitid(2)` with `WNOWAIT` sees
/// the exit. The child stays a zombie until [`supervise`] reaps it, so its pid is never
/// recycled while the [`Ticket`] may still signal it.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn exit_descriptor(pid: u32) -> Option<OwnedFd> {
    let (read, write) = super::spawn::pipe().ok()?;
    let waiter = std::thread::Builder::new()
        .name("pitch-wait".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            wait_for_exit(pid);
            drop(write);
        });
    waiter.ok().map(|_| read)
}

/// Blocks until the child `pid` has exited (or cannot be waited for), leaving it unreaped.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn wait_for_exit(pid: u32) {
    // si_code values of an exit, the same on Linux and macOS (not every libc target names
    // them).
    const CLD_EXITED: libc::c_int = 1;
    const CLD_KILLED: libc::c_int = 2;
    const CLD_DUMPED: libc::c_int = 3;
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid(2).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) on our own child with a valid siginfo pointer; WNOWAIT leaves it
        // waitable.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // ECHILD and the like: the supervisor's wait reports it
        }
        if matches!(info.si_code, CLD_EXITED | CLD_KILLED | CLD_DUMPED) {
            return;
        }
        // macOS may report a stopped child despite WEXITED: look again a little later.
        std::thread::sleep(FALLBACK_TICK);
    }
}

struct Stream<R> {
    pipe: Option<R>,
    sink: Sink,
}

impl<R: Read + AsRawFd> Stream<R> {
    fn fd(&self) -> RawFd {
        self.pipe.as_ref().map_or(-1, |p| p.as_raw_fd())
    }
    /// Reads what is there; closes the stream at its end.
    fn pump(&mut self, buf: &mut Vec<u8>) {
        if let Some(p) = self.pipe.as_mut() {
            if buf.is_empty() {
                buf.resize(64 * 1024, 0);
            }
            match p.read(buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => self.sink.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.pipe = None,
            }
        }
    }
}

/// Watches `child` until it has exited and its pipes are drained: copies its output into the
/// sinks, sends SIGUSR1 to its process group when `warn` passes (the warning before its time
/// limit, `checkpoint_grace`), SIGTERM when `limit` passes (SIGKILL after [`KILL_GRACE`]),
/// and reaps it.
pub(crate) fn supervise(
    mut child: Child,
    stdout: Sink,
    stderr: Sink,
    limit: Option<Duration>,
    warn: Option<Duration>,
    ticket: &Ticket,
) -> Finished {
    let start = Instant::now();
    let pid = child.id();
    let mut out = Stream {
        pipe: child.stdout.take(),
        sink: stdout,
    };
    let mut err = Stream {
        pipe: child.stderr.take(),
        sink: stderr,
    };
    let pidfd = exit_descriptor(pid);
    // Allocated on the first output: most tasks write none.
    let mut buf = Vec::new();
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut exited_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut kill_at: Option<Instant> = None;
    let mut warn_at: Option<Instant> = warn.map(|w| start + w);
    loop {
        let now = Instant::now();
        if let Some(at) = exited_at {
            if out.pipe.is_none() && err.pipe.is_none() || now >= at + DRAIN_GRACE {
                break;
            }
        }
        // Deadlines while the child runs: the warning, the time limit, then the SIGKILL
        // after it.
        if exited_at.is_none() {
            if warn_at.is_some_and(|w| now >= w) {
                warn_at = None;
                kill_group(pid, libc::SIGUSR1);
            }
            if let Some(l) = limit {
                if !timed_out && now >= start + l {
                    timed_out = true;
                    kill_group(pid, libc::SIGTERM);
                    kill_at = Some(now + KILL_GRACE);
                }
            }
            if let Some(k) = kill_at {
                if now >= k {
                    kill_group(pid, libc::SIGKILL);
                    kill_at = None;
                }
            }
        }
        let wake = match exited_at {
            Some(at) => Some(at + DRAIN_GRACE),
            None => match (kill_at, limit.filter(|_| !timed_out)) {
                (Some(k), _) => Some(k),
                (None, Some(l)) => Some(start + l),
                (None, None) => None,
            }
            .into_iter()
            .chain(warn_at)
            .min(),
        };
        let mut timeout = wake.map(|w| w.saturating_duration_since(now));
        if pidfd.is_none() && exited_at.is_none() {
            timeout = Some(timeout.map_or(FALLBACK_TICK, |t| t.min(FALLBACK_TICK)));
        }
        let timeout_ms = timeout.map_or(-1, |t| {
            // Round up so that a wake-up never comes just before its deadline.
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        let mut fds = [
            libc::pollfd {
                fd: out.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: err.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: match (&pidfd, exited_at) {
                    (Some(p), None) => p.as_raw_fd(),
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of pollfd; negative fds are ignored by poll(2).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                // Should not happen; do not spin.
                std::thread::sleep(FALLBACK_TICK);
            }
            continue;
        }
        if fds[0].revents != 0 {
            out.pump(&mut buf);
        }
        if fds[1].revents != 0 {
            err.pump(&mut buf);
        }
        let check_exit = exited_at.is_none() && (fds[2].revents != 0 || pidfd.is_none());
        if check_exit {
            // The child is a zombie now (or, without a pidfd, may be): mark it ended before
            // reaping, so that nobody signals a recycled pid.
            let done = if pidfd.is_some() {
                ticket.ended();
                Some(child.wait())
            } else {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        ticket.ended();
                        Some(Ok(s))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        ticket.ended();
                        Some(Err(e))
                    }
                }
            };
            if let Some(s) = done {
                status = Some(s);
                exited_at = Some(Instant::now());
            }
        }
    }
    let elapsed = exited_at.unwrap_or_else(Instant::now) - start;
    let end = match status.expect("the loop ends only after the child exited") {
        Err(e) => Err(e),
        Ok(_) if timed_out => Ok(End::TimedOut(limit.unwrap_or_default())),
        Ok(_) if ticket.cancel_requested() => Ok(End::Cancelled),
        Ok(s) => Ok(End::Exited(s)),
    };
    Finished {
        end,
        elapsed,
        stdout: out.sink.finish(),
        stderr: err.sink.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::spawn::{spawn, Launch};
    use super::*;

    fn handle(dir: &std::path::Path) -> std::sync::Arc<crate::dir::Dir> {
        std::sync::Arc::new(crate::dir::Dir::open(dir).unwrap())
    }

    fn sh(script: &str) -> std::io::Result<Child> {
        spawn(&Launch {
            program: "sh",
            args: &["-c".to_string(), script.to_string()],
            env: &[],
            cwd: None,
        })
    }

    fn run(script: &str, limit: Option<Duration>, dir: &std::path::Path) -> Finished {
        let ticket = Ticket::default();
        let child = ticket.start(|| sh(script)).unwrap().unwrap();
        supervise(
            child,
            Sink::new(handle(dir), "out"),
            Sink::new(handle(dir), "err"),
            limit,
            None,
            &ticket,
        )
    }

    #[test]
    fn output_and_exit_status_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let f = run("echo out; echo err >&2; exit 3", None, dir.path());
        match f.end.unwrap() {
            End::Exited(s) => assert_eq!(s.code(), Some(3)),
            e => panic!("{e:?}"),
        }
        assert_eq!(f.stdout.tail, "out");
        assert_eq!(f.stderr.tail, "err");
        assert!(f.stdout.path.is_some());
    }

    #[test]
    fn more_output_than_a_pipe_holds_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let f = run("head -c 1000000 /dev/zero | tr '\\0' x", None, dir.path());
        assert!(matches!(f.end.unwrap(), End::Exited(s) if s.success()));
        let len = std::fs::metadata(dir.path().join("out")).unwrap().len();
        assert_eq!(len, 1_000_000);
    }

    #[test]
    fn a_time_limit_kills_the_process_group() {
        times_out_quickly("sleep 30 & sleep 30");
    }

    #[test]
    fn a_child_that_closes_its_output_early_is_still_timed_and_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        // No time limit: the exit status comes after the output closed.
        // (The child's clock starts a moment before the supervisor's: allow for it, while
        // an end taken at the closed output would be ~0 ms.)
        let f = run("exec >&- 2>&-; sleep 0.5; exit 4", None, dir.path());
        assert!(matches!(f.end.unwrap(), End::Exited(s) if s.code() == Some(4)));
        assert!(f.elapsed >= Duration::from_millis(400), "{:?}", f.elapsed);
        // A time limit still applies once the output is closed.
        times_out_quickly("exec >&- 2>&-; sleep 30");
    }

    /// Runs `script` (which would take 30 s) with a 300 ms limit: it must end timed out, well
    /// before its own end.
    fn times_out_quickly(script: &str) {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let f = run(script, Some(Duration::from_millis(300)), dir.path());
        assert!(matches!(f.end.unwrap(), End::TimedOut(_)));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn the_warning_comes_before_the_time_limit_to_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        // The shell and its child both trap SIGUSR1: the process group gets it, once, at the
        // warning, and the task ends on its own before its time limit.
        let script = "trap 'echo parent; exit 75' USR1; \
                      sh -c 'trap \"echo child; exit 0\" USR1; while :; do sleep 0.05; done' & \
                      while :; do sleep 0.05; done";
        let ticket = Ticket::default();
        let child = ticket.start(|| sh(script)).unwrap().unwrap();
        let start = Instant::now();
        let f = supervise(
            child,
            Sink::new(handle(dir.path()), "out"),
            Sink::new(handle(dir.path()), "err"),
            Some(Duration::from_secs(20)),
            Some(Duration::from_millis(300)),
            &ticket,
        );
        assert!(
            matches!(f.end.unwrap(), End::Exited(s) if s.code() == Some(75)),
            "ended by its own trap"
        );
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(10),
            "{elapsed:?}"
        );
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert!(out.contains("parent"), "{out}");
        // The background child got it too (it may print after the parent's exit).
        std::thread::sleep(Duration::from_millis(300));
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(out.matches("child").count(), 1, "{out}");
    }

    #[test]
    fn a_child_with_its_output_closed_can_be_cancelled() {
        let start = Instant::now();
        let (f, _) = cancel_after_200ms("exec >&- 2>&-; sleep 30");
        assert!(matches!(f.end.unwrap(), End::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_background_grandchild_holding_the_pipe_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let f = run("(sleep 30 &) ; echo done", None, dir.path());
        assert!(matches!(f.end.unwrap(), End::Exited(s) if s.success()));
        assert_eq!(f.stdout.tail, "done");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_cancelled_ticket_never_starts_and_a_running_child_is_stopped() {
        let t = Ticket::default();
        assert_eq!(t.cancel(), CancelOutcome::NotStarted);
        assert!(t.start(|| sh("true")).is_none());

        let (f, t) = cancel_after_200ms("sleep 30");
        assert!(matches!(f.end.unwrap(), End::Cancelled));
        assert_eq!(t.cancel(), CancelOutcome::Ended);
    }

    #[test]
    fn wait_ended_returns_when_the_child_is_reaped_or_the_time_is_up() {
        let t = std::sync::Arc::new(Ticket::default());
        let child = t.start(|| sh("sleep 0.3")).unwrap().unwrap();
        let start = Instant::now();
        assert!(!t.wait_ended(Duration::from_millis(50)), "still running");
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || t2.wait_ended(Duration::from_secs(20)));
        let f = watch(child, &t);
        assert!(matches!(f.end.unwrap(), End::Exited(s) if s.success()));
        assert!(waiter.join().unwrap(), "woken by the end");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_exit_descriptor_wakes_on_the_exit_and_leaves_the_child_to_reap() {
        let mut child = sh("exec sleep 0.3").unwrap();
        let fd = exit_descriptor(child.id()).expect("an exit descriptor");
        let readable = |ms| {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, ms) == 1 }
        };
        assert!(!readable(50), "readable while the child runs");
        let start = Instant::now();
        assert!(readable(10_000), "not readable after the exit");
        assert!(start.elapsed() < Duration::from_secs(5));
        // Not reaped by whoever watched: the status is still there to collect.
        assert!(child.try_wait().unwrap().unwrap().success());
    }

    /// Runs `script` without a time limit and cancels it from another thread after 200 ms,
    /// checking that the cancel found it running.
    fn cancel_after_200ms(script: &str) -> (Finished, std::sync::Arc<Ticket>) {
        let t = std::sync::Arc::new(Ticket::default());
        let child = t.start(|| sh(script)).unwrap().unwrap();
        let t2 = t.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            t2.cancel()
        });
        let f = watch(child, &t);
        assert_eq!(canceller.join().unwrap(), CancelOutcome::Signalled);
        (f, t)
    }

    /// Supervises `child` without a time limit, its output going to a temporary directory.
    fn watch(child: Child, ticket: &Ticket) -> Finished {
        let dir = tempfile::tempdir().unwrap();
        supervise(
            child,
            Sink::new(handle(dir.path()), "o"),
            Sink::new(handle(dir.path()), "e"),
            None,
            None,
            ticket,
        )
    }
}
