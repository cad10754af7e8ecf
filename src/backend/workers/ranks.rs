//! The ranks of a multi-rank worker (mpiexec, srun, flux run; a pilot's too): where they
//! connect ([`Listener`], [`accept_ranks`] with the [`token`] they present), and how their
//! answers to a task are read ([`answers`]) and combined into its outcome ([`gather`]).

use std::fs::File;
use std::io::BufReader;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::process::{status_text, Link};
use super::protocol::{self, FromWorker};
use crate::error::TaskError;
use crate::store::CheckpointRecord;
use crate::worker;

/// A socket path for the ranks of one multi-rank worker to connect to.
pub(super) fn socket_path(index: u32) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "pitch-pool-{}-{index}-{}.sock",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Where the ranks of a multi-rank worker (or of an srun worker step) connect: a Unix socket
/// on this machine, or a TCP port when the ranks may run on other nodes.
pub(super) enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// What the ranks are told (`PITCH_POOL_SOCKET`): a path, or `tcp:HOST:PORT`.
    pub(super) fn address(&self) -> Result<String, String> {
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
pub(super) fn token() -> String {
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
pub(super) fn accept_ranks(
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
pub(super) const RANKS_CONNECT: Duration = Duration::from_secs(60);

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
pub(super) fn answers(
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
pub(super) fn gather(answer: Vec<Option<FromWorker>>, size: u32) -> Gathered {
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
pub(super) enum Gathered {
    /// Every rank sent a result: the task's outcome and rank 0's checkpoint.
    Done(Result<Vec<Vec<u8>>, TaskError>, Option<CheckpointRecord>),
    /// A rank sent something else (`None`: its link closed): the worker is lost.
    Broken(Option<FromWorker>),
}
