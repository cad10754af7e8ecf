//! The scheduler's side of the pilots: the job script that starts one, their submission, and
//! the manager thread that submits them as the backlog needs and notices those that ended.

use super::*;

/// The bash that starts one pilot (`index`: the shell expression of its array index).
pub(super) fn command(
    shared: &Shared,
    exe: &str,
    address: &str,
    submission: u64,
    index: &str,
) -> String {
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
pub(super) fn pilot_resources(shared: &Shared) -> Resources {
    Resources {
        checkpoint_grace: None,
        requeue: Some(false),
        ..shared.cfg.defaults.clone()
    }
}

/// The task's own time limit: its `run_time_max` unless it is the executor's default (the
/// pilots' wall time), which a task inherits without asking for it.
pub(super) fn own_limit(defaults: &Resources, r: &Resources) -> Option<Duration> {
    r.run_time_max
        .filter(|_| r.run_time_max != defaults.run_time_max)
}

/// Submits `count` pilots (one submission where the scheduler has arrays, else one each).
pub(super) fn submit_pilots(shared: &Shared, rt: &tokio::runtime::Runtime, count: usize) {
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

pub(super) fn submit_failed(shared: &Shared, e: TaskError) {
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
pub(super) fn kick(shared: &Shared, st: &mut State) {
    st.kicked = true;
    shared.manager.notify_one();
}

/// No pilot can start: fail every queued task, and every later one, with `error`.
pub(super) fn break_with(shared: &Shared, error: TaskError) {
    let queued: Vec<Arc<PoolTask>> = {
        let mut st = shared.state.lock().unwrap();
        st.broken.get_or_insert(error.clone());
        st.queue.drain(..).collect()
    };
    fail_queued(queued, &error);
    shared.wake.notify_all();
}

/// The manager thread: pilots as the backlog needs them, and their ends.
pub(super) fn manage(shared: &Arc<Shared>) {
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
pub(super) fn wanted_pilots(shared: &Shared) -> usize {
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
pub(super) fn observe(shared: &Shared, states: &HashMap<JobRef, JobState>) {
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

/// Why a pilot's job ended, as the scheduler tells it. Its connection usually closes before
/// the scheduler has seen the end (the processes of a crashed node die before the node is
/// marked down; a scancel kills the pilot before the job leaves RUNNING): the queue is asked
/// first, once a second, until it no longer lists the job as active (at most a minute), and
/// only then why it ended (`final_states` takes a job it is asked about for one that left
/// the queue, and would call one still RUNNING cancelled).
pub(super) fn end_of(shared: &Shared, job: JobRef) -> (EndReason, String) {
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
