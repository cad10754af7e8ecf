//! The pool's wire protocol between the driver and a worker process: length-prefixed frames
//! (a little-endian u32 byte count, then the bincode of a message) over the worker's standard
//! input (driver to worker) and standard output (worker to driver).
//!
//! The driver opens with [`ToWorker::Start`]; the worker runs its init function and answers
//! [`FromWorker::Ready`]. Then each [`ToWorker::Run`] is answered by one [`FromWorker::Done`],
//! one task at a time. The end of the worker's input (the driver closed the pipe, or died)
//! makes the worker exit.
//!
//! A pilot job ([`super::pilot`]) connects over TCP and first sends [`PILOT_MAGIC`] and the
//! executor's secret, raw bytes of fixed length that the driver checks before it decodes
//! anything from the peer; then [`FromWorker::PilotHello`], and the exchange above. The
//! driver sends [`ToWorker::Stay`] to an idle pilot it keeps, so that a pilot whose driver
//! has gone silent leaves after its idle timeout.
//!
//! A pilot also runs commands: [`ToWorker::Command`] is answered by one [`FromWorker::Done`]
//! whose value is the encoded [`crate::CommandOutput`] (see [`super::command`]). The magic's
//! last character is the protocol's version: version 2 added commands, so that a pilot of an
//! older pitch, which could not read them, is refused at its greeting instead of failing on
//! its first command (and an older driver refuses a newer pilot the same way).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::TaskError;
use crate::store::CheckpointRecord;
use crate::task::{CommandSpec, TaskKey};

/// A registered function run once in every worker when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InitCall {
    pub name: String,
    pub fingerprint: String,
    /// `std::any::type_name` of the value it returns, checked by `worker_state`.
    pub output_type: String,
    pub args: Vec<Vec<u8>>,
}

/// What the driver sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// The first message: which worker this is, and its init function; for a pilot job, when
    /// (from now) its tasks are warned that its wall time is near (`checkpoint_grace`).
    Start {
        index: u32,
        init: Option<InitCall>,
        stop_after: Option<Duration>,
    },
    /// Run one task on these (inline) arguments, with its checkpoint (or why it could not be
    /// read) and when (from now) it is warned before its time limit.
    Run {
        key: TaskKey,
        name: String,
        fingerprint: String,
        args: Vec<Vec<u8>>,
        checkpoint: Option<Result<CheckpointRecord, TaskError>>,
        stop_after: Option<Duration>,
    },
    /// Nothing to do yet: a pilot stays (its idle timer starts again).
    Stay,
    /// Run one command as a child process (pilots of one rank only).
    Command(CommandRun),
}

/// A command task as a pilot runs it: what its job script would have run, with the files
/// its output goes to (where the pilot sees them) and its time limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommandRun {
    pub key: TaskKey,
    pub spec: CommandSpec,
    /// The task's environment (threads, the resources' `env`), before the command's own.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Standard output and error: the command's own files, or the task directory's.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The cache directory and whether it trusts its group: the pilot writes the task
    /// directory's own output files relative to its handle, opened level by level from
    /// there and checked (`TaskPaths::output_dir`), never through a link.
    pub cache: PathBuf,
    pub trust_group: bool,
    /// Its own `run_time_max` (none: it inherits the pilot's wall time).
    pub limit: Option<Duration>,
    /// When (from its start) it gets SIGUSR1 (`run_time_max - checkpoint_grace`).
    pub warning: Option<Duration>,
}

/// What a pilot job sends first, before its secret; its last byte is the protocol version.
pub(crate) const PILOT_MAGIC: &[u8; 8] = b"PITCHPL3";
/// The length of an executor's pilot secret (hex digits).
pub(crate) const SECRET_LEN: usize = 64;

/// The variable that gives each rank of a multi-rank worker the driver's socket.
pub(crate) const SOCKET_ENV: &str = "PITCH_POOL_SOCKET";
/// The number of ranks a multi-rank worker was started with.
pub(crate) const RANKS_ENV: &str = "PITCH_POOL_RANKS";
/// When a pilot's job started (seconds since the epoch, by the clock of the node its job
/// script runs on): its job script sets it, its ranks report their job's age from it.
pub(crate) const PILOT_STARTED_ENV: &str = "PITCH_PILOT_STARTED";
/// The secret each rank presents when it connects.
pub(crate) const TOKEN_ENV: &str = "PITCH_POOL_TOKEN";

/// What the worker answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// A rank of a multi-rank worker has connected to the driver's socket (its first message).
    Hello { rank: u32, size: u32, token: String },
    /// A pilot job's rank, after its secret: which pilot it is (the id its job script gave
    /// it), which of its `size` ranks (a multi-rank pilot's ranks connect one by one), and
    /// how long ago its job started, in milliseconds (its wall time runs from then).
    PilotHello {
        pilot: String,
        rank: u32,
        size: u32,
        age_ms: u64,
    },
    /// The worker has run its init function (or has none).
    Ready { init: Result<(), TaskError> },
    /// The task's encoded value, or why it failed; the checkpoint it saved (rank 0's), for
    /// the driver to write.
    Done {
        outcome: Result<Vec<u8>, TaskError>,
        checkpoint: Option<CheckpointRecord>,
    },
}

/// What `poll` reports when the peer closed the connection: Linux says so as soon as the
/// peer shuts its side (`POLLRDHUP`); elsewhere (pilots run on Linux compute nodes, this only
/// has to build) a hang-up.
#[cfg(target_os = "linux")]
pub(crate) const PEER_CLOSED: libc::c_short = libc::POLLRDHUP;
#[cfg(not(target_os = "linux"))]
pub(crate) const PEER_CLOSED: libc::c_short = libc::POLLHUP;

/// One frame's bytes: length and payload.
pub(crate) fn frame<T: Serialize>(message: &T) -> Result<Vec<u8>, String> {
    let payload = codec::encode(message)?;
    let len = u32::try_from(payload.len())
        .map_err(|_| format!("a message of {} bytes is too large", payload.len()))?;
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Writes one message as a frame (not flushed).
pub(crate) fn write<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    let bytes = frame(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    out.write_all(&bytes)
}

/// Writes `raw` bytes as they are, then one message as a frame, in one write.
pub(crate) fn write_raw_then<T: Serialize>(
    out: &mut impl Write,
    raw: &[u8],
    message: &T,
) -> io::Result<()> {
    let bytes = frame(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    out.write_all(&[raw, &bytes[..]].concat())?;
    out.flush()
}

/// Reads one message; `None` at the end of the input between frames.
pub(crate) fn read<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        match input.read(&mut len[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > codec::DECODE_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit"),
        ));
    }
    // Grown as bytes arrive, never to what the prefix claims: a peer that sends a length
    // and no payload (or a torn frame) costs no memory.
    let mut payload = Vec::with_capacity(len.min(1 << 16));
    input.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    codec::decode(&payload)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_cut_frame_is_an_error() {
        let run = ToWorker::Run {
            key: TaskKey::from_bytes([3; 16]),
            name: "m::f".into(),
            fingerprint: "fp".into(),
            args: vec![vec![1, 2], vec![]],
            checkpoint: Some(Ok(CheckpointRecord {
                type_name: "u64".into(),
                state: vec![7],
            })),
            stop_after: Some(Duration::from_millis(1500)),
        };
        let mut bytes = Vec::new();
        write(&mut bytes, &run).unwrap();
        let done = FromWorker::Done {
            outcome: Ok(vec![9]),
            checkpoint: None,
        };
        let command = ToWorker::Command(CommandRun {
            key: TaskKey::from_bytes([4; 16]),
            spec: CommandSpec {
                program: "sh".into(),
                args: vec!["-c".into(), "exit 3".into()],
                env: vec![("K".into(), "v".into())],
                stdout: Some("/o".into()),
                stderr: None,
                allow_failure: true,
            },
            env: vec![("OMP_NUM_THREADS".into(), "1".into())],
            cwd: Some("/tmp".into()),
            stdout: "/o".into(),
            stderr: "/c/stderr".into(),
            cache: "/c".into(),
            trust_group: true,
            limit: Some(Duration::from_secs(3)),
            warning: Some(Duration::from_secs(1)),
        });
        write(&mut bytes, &command).unwrap();
        write(&mut bytes, &done).unwrap();
        let mut input = &bytes[..];
        assert_eq!(read::<ToWorker>(&mut input).unwrap(), Some(run));
        assert_eq!(read::<ToWorker>(&mut input).unwrap(), Some(command));
        assert_eq!(read::<FromWorker>(&mut input).unwrap(), Some(done));
        assert_eq!(read::<FromWorker>(&mut input).unwrap(), None);
        let cut = &bytes[..bytes.len() - 1];
        let mut input = cut;
        read::<ToWorker>(&mut input).unwrap();
        assert!(read::<FromWorker>(&mut input).is_err());
    }
}
