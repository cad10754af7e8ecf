//! The poller's loop ([`run`]): per tick one queue query; jobs queued for a reason that never
//! clears cancelled; the files of jobs no longer active fetched (remote transport) and read;
//! jobs gone without a result asked about; the interval backing off while nothing changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::collect::{collect, ended_by_scheduler, Collected, Known};
use super::watch::WatchEnd;
use crate::backend::queue::Queue;
use crate::backend::scheduler::{lookup_state, JobRef, JobState};
use crate::scheduler::EndReason;
use crate::store::ResultRecord;

/// Whether the queue lists the job as still queued or running: its files are not read yet.
fn active(state: Option<&JobState>) -> bool {
    matches!(state, Some(JobState::Active(_) | JobState::Stuck(_)))
}

/// The poller's loop; ends never (it idles while nothing is watched).
pub(crate) async fn run(queue: Arc<Queue>) {
    let cfg = queue.config().clone();
    let scheduler = queue.scheduler();
    let title = scheduler.dialect.title();
    let mut interval = cfg.poll_interval;
    let mut cancelled = Vec::new();
    loop {
        if queue.watches.lock().unwrap().is_empty() {
            queue.poke.notified().await;
            interval = cfg.poll_interval;
        }
        tokio::time::sleep(interval).await;
        let states = match scheduler.client.active(queue.tag()).await {
            Ok(states) => {
                let watched = queue.watches.lock().unwrap().len();
                tracing::debug!(target: "pitch::poll", watched, listed = states.len(), "poll tick");
                states
            }
            Err(e) => {
                queue.warn(format!("{e} (will retry)"));
                continue;
            }
        };
        // Jobs that run elsewhere leave their files there: bring those of the jobs that are
        // no longer active here before reading them.
        if queue.transport().is_remote() {
            let files: Vec<PathBuf> = queue
                .watches
                .lock()
                .unwrap()
                .values()
                .filter(|w| !active(lookup_state(&states, w.job).as_ref()))
                .flat_map(|w| {
                    // A finished result here is never replaced (by a failure) from there.
                    let result = w
                        .paths
                        .finished_result()
                        .is_none()
                        .then(|| w.paths.result_file());
                    result.into_iter().chain([
                        w.paths.exit_file(),
                        w.paths.stdout(),
                        w.paths.stderr(),
                    ])
                })
                .collect();
            if !files.is_empty() {
                if let Err(e) = queue.transport().fetch(&files).await {
                    queue.warn(format!("could not fetch results (will retry): {e}"));
                    continue;
                }
            }
        }
        let mut changed = false;
        // Jobs queued for a reason that never clears, seen so on a second tick (one to
        // confirm: a reason can be stale for a moment): cancelled, their tasks rejected.
        let mut stuck = Vec::new();
        // Their tasks' ends, sent once the jobs are cancelled (the error says they were).
        let mut stuck_ends = Vec::new();
        {
            let mut watches = queue.watches.lock().unwrap();
            for (key, w) in watches.iter_mut() {
                match lookup_state(&states, w.job) {
                    Some(JobState::Stuck(reason)) => {
                        w.stuck_ticks += 1;
                        if w.stuck_ticks >= 2 {
                            stuck.push((*key, reason));
                        }
                    }
                    _ => w.stuck_ticks = 0,
                }
            }
            for (key, reason) in stuck {
                let Some(mut w) = watches.remove(&key) else {
                    continue;
                };
                let job = w.job;
                if let Some(tx) = w.tx.take() {
                    stuck_ends.push((
                        tx,
                        WatchEnd::Stuck(format!(
                            "{title} can never start job {job}: it is pending with reason \
                             {reason}; the job was cancelled"
                        )),
                    ));
                }
                cancelled.push(job);
                changed = true;
            }
        }
        if !cancelled.is_empty() {
            if let Err(e) = scheduler.client.cancel(&cancelled).await {
                queue.warn(format!("cancelling jobs that can never start failed: {e}"));
            }
            cancelled.clear();
        }
        for (tx, end) in stuck_ends {
            let _ = tx.send(end);
        }
        let mut to_ask = Vec::new();
        // Jobs the queue stopped listing this tick, without a result yet.
        let mut first_gone = Vec::new();
        {
            let mut watches = queue.watches.lock().unwrap();
            let now = Instant::now();
            let mut done = Vec::new();
            for (key, w) in watches.iter_mut() {
                let state = lookup_state(&states, w.job);
                if active(state.as_ref()) {
                    continue;
                }
                match collect(w, Known::Queue(state.as_ref()), title) {
                    Collected::Done(rec) => {
                        if let Some(tx) = w.tx.take() {
                            let _ = tx.send(WatchEnd::Done(rec));
                        }
                        done.push(*key);
                        continue;
                    }
                    Collected::Ask => {
                        to_ask.push((*key, w.job, state.clone()));
                        continue;
                    }
                    Collected::Nothing => {}
                }
                if state.is_none() && w.gone_since.is_none() {
                    first_gone.push((*key, w.job));
                }
                let since = *w.gone_since.get_or_insert(now);
                if now.duration_since(since) >= cfg.nfs_grace {
                    if w.reattached {
                        if let Some(tx) = w.tx.take() {
                            let _ = tx.send(WatchEnd::Lost);
                        }
                        done.push(*key);
                    } else {
                        to_ask.push((*key, w.job, state));
                    }
                }
            }
            for key in done {
                watches.remove(&key);
                changed = true;
            }
        }
        // A job that left the queue without ever running (Flux: a dependency that can never
        // be satisfied, an unsatisfiable request) has no result file to wait for: the
        // scheduler is asked at once, and such a job is reported now, not after nfs_grace.
        let mut learned_states = HashMap::new();
        if !first_gone.is_empty() {
            let jobs: Vec<JobRef> = first_gone.iter().map(|(_, job)| *job).collect();
            learned_states.extend(scheduler.client.never_ran(&jobs).await);
            for (key, job) in first_gone {
                if learned_states.contains_key(&job) {
                    to_ask.push((key, job, None));
                }
            }
        }
        // Jobs the queue no longer lists are asked about together.
        let unknown: Vec<JobRef> = to_ask
            .iter()
            .filter(|(_, job, state)| state.is_none() && !learned_states.contains_key(job))
            .map(|(_, job, _)| *job)
            .collect();
        if !unknown.is_empty() {
            learned_states.extend(scheduler.client.final_states(&unknown).await);
        }
        for (key, job, state) in to_ask {
            let learned = match state {
                Some(s) => Some((s, String::new())),
                None => learned_states.get(&job).cloned(),
            };
            let w = queue.watches.lock().unwrap().remove(&key);
            let Some(mut w) = w else { continue };
            // One last look: the result may have appeared meanwhile.
            let rec = match collect(&w, Known::Asked(learned.as_ref().map(|l| &l.0)), title) {
                Collected::Done(rec) => rec,
                Collected::Ask | Collected::Nothing => {
                    let (state, detail) = match learned {
                        Some((s, d)) => (s.into_reason(), d),
                        None => (
                            EndReason::forgotten(),
                            scheduler.dialect.forgotten.to_string(),
                        ),
                    };
                    w.paths.publish_result(ResultRecord {
                        outcome: Err(ended_by_scheduler(&w, state, detail)),
                    })
                }
            };
            if let Some(tx) = w.tx.take() {
                let _ = tx.send(WatchEnd::Done(rec));
            }
            changed = true;
        }
        interval = if changed {
            cfg.poll_interval
        } else {
            (interval.mul_f64(1.5)).min(cfg.max_poll_interval.max(cfg.poll_interval))
        };
    }
}
