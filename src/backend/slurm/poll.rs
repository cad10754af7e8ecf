//! The one poller of a Slurm executor: per tick ONE squeue call for all of its jobs
//! (filtered by user and the cache directory's job name), backing off while nothing changes.
//! Result files are read only for jobs that left the queue or are reported finished; a job
//! gone without a result is asked about (scontrol, then sacct) after a grace period for NFS
//! attribute caching, and its error names the scheduler state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::parse::{self, JobRef, SlurmState};
use super::{run_cmd, Slurm};
use crate::command::{CommandOutput, CommandSpec};
use crate::error::TaskError;
use crate::store::{FormatError, ResultRecord, TaskPaths};
use crate::task::{TaskKind, TaskSpec};

/// How a watched task ended.
pub(crate) enum WatchEnd {
    /// With this (published) result.
    Done(ResultRecord),
    /// A re-attached job is gone without a result: submit the task again.
    Lost,
}

/// A task the poller watches.
pub(crate) struct Watch {
    job: JobRef,
    paths: TaskPaths,
    spec: Arc<TaskSpec>,
    reattached: bool,
    /// When the job was first seen finished or gone without a result.
    gone_since: Option<Instant>,
    tx: Option<oneshot::Sender<WatchEnd>>,
}

impl Watch {
    pub(crate) fn new(
        job: JobRef,
        paths: TaskPaths,
        spec: Arc<TaskSpec>,
        reattached: bool,
        tx: oneshot::Sender<WatchEnd>,
    ) -> Watch {
        Watch {
            job,
            paths,
            spec,
            reattached,
            gone_since: None,
            tx: Some(tx),
        }
    }
}

/// The task's result when its files are there: `result.bin`, or a command's `exit` file
/// turned into one.
fn collect(w: &Watch) -> Option<ResultRecord> {
    match w.paths.read_result() {
        Ok(rec) => return Some(rec),
        Err(FormatError::Missing) => {}
        Err(e) => {
            return Some(ResultRecord {
                outcome: Err(e.into_task_error(&w.paths.result_file())),
            })
        }
    }
    let TaskKind::Command(spec) = &w.spec.kind else {
        return None;
    };
    let outcome = exit_outcome(&w.paths, spec)?;
    let rec = w.paths.publish_result(ResultRecord { outcome });
    let _ = std::fs::remove_file(w.paths.exit_file());
    Some(rec)
}

/// A command job's outcome from the `exit` file its script wrote (`None` while there is
/// none). Reads only: the poller publishes it as the result, `pitch status` just shows it.
pub(crate) fn exit_outcome(
    paths: &TaskPaths,
    spec: &CommandSpec,
) -> Option<Result<Vec<Vec<u8>>, TaskError>> {
    let exit_file = paths.exit_file();
    let text = std::fs::read_to_string(&exit_file).ok()?;
    let code: i32 = match text.trim().parse() {
        Ok(c) => c,
        Err(_) => {
            return Some(Err(TaskError::Store {
                path: exit_file.display().to_string(),
                detail: format!("holds {text:?}, not an exit code"),
            }))
        }
    };
    let stdout = spec.stdout.clone().unwrap_or_else(|| paths.stdout());
    let stderr = spec.stderr.clone().unwrap_or_else(|| paths.stderr());
    let stderr_tail = tail(&stderr);
    Some(if code != 0 && !spec.allow_failure {
        Err(TaskError::CommandFailed {
            program: spec.program.clone(),
            code,
            stderr_tail,
        })
    } else {
        let output = CommandOutput {
            exit_code: code,
            stdout: stdout.exists().then_some(stdout),
            stderr: stderr.exists().then_some(stderr),
            stderr_tail,
            elapsed: Duration::ZERO,
        };
        crate::codec::encode(&output)
            .map(|b| vec![b])
            .map_err(|detail| TaskError::Encode {
                what: "the command's output".into(),
                detail,
            })
    })
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Learns why a job ended: scontrol while Slurm still knows it, then sacct.
async fn final_state(job: JobRef) -> Option<(SlurmState, String)> {
    let id = job.to_string();
    if let Ok(out) = run_cmd(
        "scontrol",
        &["show".into(), "job".into(), "-o".into(), id.clone()],
    )
    .await
    {
        if out.success {
            if let Ok(jobs) = parse::parse_scontrol_show_job(&out.stdout) {
                if let Some(j) = jobs.iter().find(|j| j.job == job) {
                    let reason = j.reason.clone().unwrap_or_default();
                    return Some((j.state, reason));
                }
            }
        }
    }
    let args: Vec<String> = ["-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j"]
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(id))
        .collect();
    if let Ok(out) = run_cmd("sacct", &args).await {
        if out.success && !parse::sacct_disabled(&out.stdout) && !parse::sacct_disabled(&out.stderr)
        {
            if let Ok(entries) = parse::parse_sacct(&out.stdout) {
                if let Some(e) = entries.iter().find(|e| e.job == job) {
                    return Some((
                        e.state,
                        format!("exit code {}:{}", e.exit_code.0, e.exit_code.1),
                    ));
                }
            }
        }
    }
    None
}

/// The poller's loop; ends never (it idles while nothing is watched).
pub(crate) async fn run(slurm: Arc<Slurm>) {
    let cfg = slurm.config().clone();
    let uid = unsafe { libc::getuid() }.to_string();
    let mut interval = cfg.poll_interval;
    loop {
        if slurm.watches.lock().unwrap().is_empty() {
            slurm.poke.notified().await;
            interval = cfg.poll_interval;
        }
        tokio::time::sleep(interval).await;
        let args: Vec<String> = vec![
            "-h".into(),
            "-r".into(),
            "-u".into(),
            uid.clone(),
            "-n".into(),
            slurm.tag().to_string(),
            "-t".into(),
            "all".into(),
            "-o".into(),
            parse::SQUEUE_FORMAT.into(),
        ];
        let queue = match run_cmd("squeue", &args).await {
            Ok(out) if out.success => match parse::parse_squeue(&out.stdout) {
                Ok(entries) => entries,
                Err(e) => {
                    slurm.warn(format!("could not parse squeue's output (will retry): {e}"));
                    continue;
                }
            },
            Ok(out) => {
                slurm.warn(format!("squeue failed (will retry): {}", out.stderr.trim()));
                continue;
            }
            Err(e) => {
                slurm.warn(format!("squeue failed (will retry): {e}"));
                continue;
            }
        };
        let states: HashMap<JobRef, SlurmState> = parse::states_by_job(&queue);
        let mut changed = false;
        let mut to_ask = Vec::new();
        {
            let mut watches = slurm.watches.lock().unwrap();
            let now = Instant::now();
            let mut done = Vec::new();
            for (key, w) in watches.iter_mut() {
                let state = parse::lookup_state(&states, w.job);
                if matches!(state, Some(s) if !s.is_finished()) {
                    continue;
                }
                if let Some(rec) = collect(w) {
                    if let Some(tx) = w.tx.take() {
                        let _ = tx.send(WatchEnd::Done(rec));
                    }
                    done.push(*key);
                    continue;
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
        for (key, job, state) in to_ask {
            let learned = match state {
                Some(s) => Some((s, String::new())),
                None => final_state(job).await,
            };
            let (state, detail) = match learned {
                Some((s, d)) => (s.name().to_string(), d),
                None => (
                    "UNKNOWN".to_string(),
                    "the job left the queue and Slurm no longer knows it (accounting is off)"
                        .into(),
                ),
            };
            let w = slurm.watches.lock().unwrap().remove(&key);
            if let Some(mut w) = w {
                // One last look: the result may have appeared meanwhile.
                let rec = collect(&w).unwrap_or_else(|| {
                    w.paths.publish_result(ResultRecord {
                        outcome: Err(TaskError::Scheduler {
                            job_id: job.to_string(),
                            state,
                            detail,
                        }),
                    })
                });
                if let Some(tx) = w.tx.take() {
                    let _ = tx.send(WatchEnd::Done(rec));
                }
                changed = true;
            }
        }
        interval = if changed {
            cfg.poll_interval
        } else {
            (interval.mul_f64(1.5)).min(cfg.max_poll_interval.max(cfg.poll_interval))
        };
    }
}
