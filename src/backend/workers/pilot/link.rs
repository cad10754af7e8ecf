//! The driver's side of the pilots' connections: the acceptor, which task a pilot gets next,
//! and the thread that serves one pilot (its tasks, and what happens when it is lost).

use super::*;

/// The acceptor thread: one connection thread per peer, until the executor closes.
pub(super) fn accept(
    shared: &Arc<Shared>,
    listener: TcpListener,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) {
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
pub(super) enum Next {
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
pub(super) fn next(
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
pub(super) fn serve_pilot(
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
pub(super) fn send_all(links: &mut [Link], bytes: &[u8]) -> std::io::Result<()> {
    links.iter_mut().try_for_each(|l| l.writer.write_all(bytes))
}

/// Whether the pilot at the other end of `socket` has closed it (or it broke).
pub(super) fn peer_gone(socket: std::os::fd::RawFd) -> bool {
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
pub(super) fn run_on_pilot(
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
