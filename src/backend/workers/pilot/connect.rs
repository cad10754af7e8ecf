//! A pilot's connection to the driver ([`connection`], one thread per connected rank): the
//! secret and hello first ([`authenticate`]), then the wait for the pilot's other ranks,
//! then [`super::serve_pilot`] until the pilot leaves.

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{kick, serve_pilot, PilotPhase, Shared, AUTH_TIMEOUT};
use crate::backend::workers::protocol::{self, FromWorker};
use crate::backend::workers::RANKS_CONNECT;

/// Reads the peer's secret and hello: the pilot id and the rank that connected, or why the
/// peer is refused.
fn authenticate(shared: &Shared, stream: &TcpStream) -> Result<(String, u32, Duration), String> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(AUTH_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut first = [0u8; protocol::PILOT_MAGIC.len() + protocol::SECRET_LEN];
    (&mut &*stream)
        .read_exact(&mut first)
        .map_err(|e| format!("it sent no pilot greeting: {e}"))?;
    let (magic, secret) = first.split_at(protocol::PILOT_MAGIC.len());
    // Compared in full whatever differs (no early exit to time).
    let differs = magic
        .iter()
        .chain(secret)
        .zip(protocol::PILOT_MAGIC.iter().chain(&shared.secret))
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        // Not the secret, so nothing about it: whether the greeting is another version's.
        let version = protocol::PILOT_MAGIC.len() - 1;
        if magic[..version] == protocol::PILOT_MAGIC[..version] {
            return Err(format!(
                "it did not present this executor's secret (its greeting is of protocol \
                 version {:?}, this driver's is {:?}: a pilot of another pitch version?)",
                char::from(magic[version]),
                char::from(protocol::PILOT_MAGIC[version])
            ));
        }
        return Err("it did not present this executor's secret".into());
    }
    let hello = protocol::read::<FromWorker>(&mut &*stream).map_err(|e| e.to_string())?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let ranks = shared.cfg.defaults.ranks();
    match hello {
        Some(FromWorker::PilotHello {
            pilot,
            rank,
            size,
            age_ms,
        }) if size == ranks && rank < size => Ok((pilot, rank, Duration::from_millis(age_ms))),
        Some(FromWorker::PilotHello {
            pilot, rank, size, ..
        }) => Err(format!(
            "pilot {pilot} says it is rank {rank} of {size}, but this executor's pilots have \
             {ranks} rank(s)"
        )),
        other => Err(format!("it sent {other:?} instead of a pilot's hello")),
    }
}

/// One connected rank of a pilot. The thread of a pilot's first rank waits for the others
/// (for [`RANKS_CONNECT`]) and serves the pilot from then on; the others' threads end once
/// their rank is in.
pub(super) fn connection(shared: &Arc<Shared>, stream: TcpStream, peer: std::net::SocketAddr) {
    let (id, rank, age) = match authenticate(shared, &stream) {
        Ok(hello) => hello,
        Err(why) => {
            return shared.warn(format!(
                "refused a connection to the pilot port from {peer}: {why}"
            ))
        }
    };
    let stream = Arc::new(stream);
    let mut st = shared.state.lock().unwrap();
    // A pilot may start and connect before its submission has answered (a controller that
    // replies late): wait for the answer, which records it (a pilot waits for its start for
    // its idle timeout).
    let submission = submission_of(&shared.prefix, &id);
    let until = Instant::now() + shared.cfg.idle_timeout;
    while !st.pilots.contains_key(&id)
        && submission.is_some_and(|n| st.submitting.contains(&n))
        && Instant::now() < until
    {
        st = shared
            .wake
            .wait_timeout(st, Duration::from_millis(200))
            .unwrap()
            .0;
    }
    let first = match st.pilots.get_mut(&id) {
        Some(p) if p.phase == PilotPhase::Pending && p.ranks[rank as usize].is_none() => {
            p.ranks[rank as usize] = Some(stream.clone());
            let started = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            let first = p.started.is_none();
            p.started = Some(p.started.map_or(started, |s| s.min(started)));
            first
        }
        _ => {
            drop(st);
            return shared.warn(format!(
                "refused pilot {id} (rank {rank}) from {peer}: it is not a pilot this executor \
                 is waiting for"
            ));
        }
    };
    if !first {
        // The first rank's thread serves the pilot.
        drop(st);
        shared.gathered.notify_all();
        return;
    }
    let until = Instant::now() + RANKS_CONNECT;
    loop {
        let p = &st.pilots[&id];
        if p.ranks.iter().all(Option::is_some) || Instant::now() >= until {
            break;
        }
        let left = until.saturating_duration_since(Instant::now());
        st = shared.gathered.wait_timeout(st, left).unwrap().0;
    }
    let index = st.next_index;
    let p = st.pilots.get_mut(&id).expect("pilots are never forgotten");
    let job = p.job;
    let started = p.started.unwrap_or_else(Instant::now);
    let streams: Vec<Arc<TcpStream>> = p.ranks.iter().flatten().cloned().collect();
    if streams.len() < p.ranks.len() {
        let want = p.ranks.len();
        p.phase = PilotPhase::Gone;
        kick(shared, &mut st);
        drop(st);
        for s in &streams {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        return shared.warn(format!(
            "pilot {id} ({job}): only {} of its {want} ranks connected within \
             {RANKS_CONNECT:?}; it is let go",
            streams.len()
        ));
    }
    p.phase = PilotPhase::Connected;
    st.next_index += 1;
    st.ever_connected = true;
    st.start_failures = 0;
    drop(st);
    let end = serve_pilot(shared, &streams, job, index, started);
    for s in &streams {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    {
        let mut st = shared.state.lock().unwrap();
        if let Some(p) = st.pilots.get_mut(&id) {
            p.phase = PilotPhase::Gone;
            p.ranks.iter_mut().for_each(|r| *r = None);
        }
        kick(shared, &mut st);
    }
    if let Some(why) = end {
        shared.warn(why);
    }
}

/// The submission a pilot id (`<prefix>.<submission>.<index>`) belongs to.
pub(super) fn submission_of(prefix: &str, id: &str) -> Option<u64> {
    id.strip_prefix(prefix)?
        .strip_prefix('.')?
        .split('.')
        .next()?
        .parse()
        .ok()
}
