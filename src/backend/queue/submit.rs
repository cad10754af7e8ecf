//! The submission side of [`Queue`]: tasks submitted close together gathered into groups
//! (the batch window), each group one job or job array (or packed `tasks_per_job`), its job
//! script rendered and written, an intent recorded before the scheduler may accept it, the
//! submission made and journaled; pilot jobs' submissions; and the lookup, on the next
//! run, of submissions whose job id was never learned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::journal::{IntentRecord, JournalRecord};
use super::state::launch_failed;
use super::{script, Queue};
use crate::backend::scheduler::{JobRef, Unrecorded};
use crate::error::{LaunchErrorKind, TaskError};
use crate::resources::Resources;
use crate::scheduler::SchedulerError;
use crate::store::Store;
use crate::task::TaskKey;
use crate::template::{self, SlurmScript};

/// The longest a submission waits for more tasks to join its job array.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(5);
/// How long a batch may wait past [`MAX_BATCH_WAIT`] while submitted tasks are still on their
/// way (a big `map` whose task files take long to write, on a slow or busy file system): one
/// job array then, rather than one every few seconds.
const MAX_BATCH_WAIT_PREPARING: Duration = Duration::from_secs(60);

/// A task waiting to be submitted.
pub(super) struct Pending {
    pub(super) key: TaskKey,
    pub(super) body: String,
    pub(super) header: SlurmScript,
    pub(super) after: Vec<JobRef>,
    pub(super) reply: oneshot::Sender<Result<JobRef, TaskError>>,
}

/// Tasks with the same header and dependencies can share a job array.
fn group_key(p: &Pending) -> String {
    format!(
        "{:?}|{:?}",
        serde_json::to_string(&p.header).unwrap_or_default(),
        p.after
    )
}

/// The most of a job script read back (to find its job again): far more than any script
/// pitch writes (a group's tasks go in its tasks file).
const SCRIPT_MAX: u64 = 16 << 20;

impl Queue {
    pub(super) fn ensure_flusher(self: &Arc<Self>) {
        let mut running = self.flusher_running.lock().unwrap();
        if !*running {
            *running = true;
            let me = self.clone();
            tokio::spawn(async move { me.flush_loop().await });
        }
    }

    /// Gathers tasks submitted close together, then submits each group of equal tasks as
    /// one submission (a job array when the group has more than one task and the scheduler
    /// has arrays).
    async fn flush_loop(self: Arc<Self>) {
        loop {
            // Wait until no submitted task is still on its way here and submissions have
            // paused for one batch window, so that a `map` becomes one job array rather than
            // several: at most a few seconds for a trickle of submissions, longer (up to a
            // minute) while a `map`'s tasks are still being written.
            let started = std::time::Instant::now();
            let mut last = self.pending.lock().unwrap().len();
            loop {
                tokio::time::sleep(self.cfg.batch_window).await;
                let now = self.pending.lock().unwrap().len();
                let preparing = self.preparing.get().map_or(0, |p| p.load(Ordering::SeqCst))
                    + self.arriving.load(Ordering::SeqCst);
                let waited = started.elapsed();
                if (preparing == 0 && (now == last || waited > MAX_BATCH_WAIT))
                    || waited > MAX_BATCH_WAIT_PREPARING
                {
                    break;
                }
                last = now;
            }
            let batch: Vec<Pending> = std::mem::take(&mut *self.pending.lock().unwrap());
            if batch.is_empty() {
                let mut running = self.flusher_running.lock().unwrap();
                if self.pending.lock().unwrap().is_empty() {
                    *running = false;
                    return;
                }
                continue;
            }
            let mut groups: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
            for p in batch {
                groups.entry(group_key(&p)).or_default().push(p);
            }
            let max = self.max_array_size().await as usize;
            for (_, group) in groups {
                let mut group = group;
                // One submission: at most `max` array elements of `per_job` tasks each.
                let chunk = max * self.per_job(&group[0].header);
                while !group.is_empty() {
                    let rest = group.split_off(group.len().min(chunk));
                    self.submit_group(group).await;
                    group = rest;
                }
            }
        }
    }

    /// Tasks per job (array element) for tasks with this header: multi-rank tasks are never
    /// packed.
    fn per_job(&self, header: &SlurmScript) -> usize {
        if header.ntasks == 1 {
            self.cfg.tasks_per_job.max(1) as usize
        } else {
            1
        }
    }

    async fn submit_group(&self, group: Vec<Pending>) {
        let mut header = group[0].header.clone();
        // Packing: K one-rank tasks per job (array element). The job asks for one task's CPUs
        // (plus whatever extra options add) and runs its tasks one after another, in
        // parallel only when it was given more CPUs: the scheduler's per-job cost is paid
        // once per K tasks.
        let per_job = self.per_job(&header).min(group.len());
        let elements = group.len().div_ceil(per_job);
        // More than one element only where the scheduler has arrays (max_array_size > 1).
        let arrays = self
            .scheduler
            .dialect
            .arrays
            .as_ref()
            .filter(|_| elements > 1);
        let array = arrays.is_some();
        header.output = self.job_log(array);
        if let Some(arrays) = arrays {
            (arrays.header)(&mut header, elements, self.cfg.array_throttle);
        }
        if !group[0].after.is_empty() {
            (self.scheduler.dialect.depend)(&mut header, &group[0].after);
        }
        let bodies: Vec<String> = group.iter().map(|p| p.body.clone()).collect();
        let threads = header.cpus_per_task;
        let stem = self.script_stem();
        let tasks_path = self.store.job_tasks_file(&stem);
        if bodies.len() > 1 {
            let name = Store::job_tasks_name(&stem);
            if let Err(e) = self.write_script(&name, &script::tasks_file(&bodies)) {
                let e = TaskError::Store {
                    path: tasks_path.display().to_string(),
                    detail: format!("could not write the tasks file: {e}"),
                };
                for p in group {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return;
            }
        }
        let (index, cpus) = match arrays {
            Some(a) => (a.index, a.cpus),
            // One job running all of the group's tasks: element 0, its tasks in turn.
            None => ("0", "1"),
        };
        let jobs_tasks = self.transport.path(&tasks_path);
        header.command = if per_job > 1 {
            // The group's tasks share the header, and so its warning signal.
            let warning = header
                .signal
                .is_some()
                .then_some(self.scheduler.dialect.warning);
            script::packed_body(
                &jobs_tasks,
                bodies.len(),
                per_job,
                threads,
                index,
                cpus,
                warning,
            )
        } else if array {
            script::array_body(&jobs_tasks, index)
        } else {
            bodies[0].clone()
        };
        let extra = (bodies.len() > 1).then_some(tasks_path);
        let tasks: Vec<(TaskKey, Option<u32>)> = group
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key, array.then_some((i / per_job) as u32)))
            .collect();
        let result = self.submit(&header, &stem, extra, &tasks).await;
        let result = match result {
            Ok(job_id) => {
                let rec = JournalRecord { job_id, tasks };
                let recorded = self.journal.record(&rec).map(|_| job_id);
                if recorded.is_ok() {
                    self.journal.settle(&stem);
                }
                recorded
            }
            Err(e) => Err(e),
        };
        if let Ok(job_id) = &result {
            tracing::info!(target: "pitch::queue", job_id, tasks = group.len(), array, "submitted");
        }
        for (i, p) in group.into_iter().enumerate() {
            let reply = result.clone().map(|job_id| JobRef {
                job_id,
                array_index: array.then_some((i / per_job) as u32),
            });
            if let Ok(job) = &reply {
                self.jobs.lock().unwrap().insert(p.key, *job);
                if per_job > 1 {
                    self.packs.lock().unwrap().insert(*job);
                }
            }
            let _ = p.reply.send(reply);
        }
        self.jobs_changed.notify_waiters();
    }

    /// A fresh name for a job's script and tasks file.
    fn script_stem(&self) -> String {
        format!(
            "{}-{}",
            self.tag,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        )
    }

    /// The job script: the template rendered with `header`.
    pub(super) fn script_text(&self, header: &SlurmScript) -> Result<String, TaskError> {
        template::render(&self.template_name, &self.template_source, header)
            .map_err(|e| launch_failed("the job script", e))
    }

    /// Writes the job script (and ships it with the `tasks` file where the jobs run), records
    /// the intent to submit it for the tasks `keys`, then submits it.
    async fn submit(
        &self,
        header: &SlurmScript,
        stem: &str,
        tasks: Option<PathBuf>,
        keys: &[(TaskKey, Option<u32>)],
    ) -> Result<u64, TaskError> {
        let text = marked(self.script_text(header)?, stem);
        let path = self.store.job_script(stem);
        self.write_script(&Store::job_script_name(stem), &text)
            .map_err(|e| TaskError::Store {
                path: path.display().to_string(),
                detail: format!("could not write the job script: {e}"),
            })?;
        let files: Vec<PathBuf> = std::iter::once(path.clone()).chain(tasks).collect();
        self.transport
            .upload(&files, false)
            .await
            .map_err(|e| launch_failed("the job script", e))?;
        // Before the scheduler may accept the job: a driver killed from here on leaves the
        // intent, and the next run finds the job by its script instead of submitting again.
        let script = self.transport.path(&path);
        self.journal.intend(
            stem,
            &IntentRecord {
                script: script.display().to_string(),
                tasks: keys.to_vec(),
            },
        )?;
        let since = std::time::SystemTime::now();
        let mut submitted = self.scheduler.client.submit(&script).await;
        if let Err(e) = &submitted {
            // A failed submission may still have been accepted (sbatch's reply lost: "Socket
            // timed out on send/recv operation"): the job would run while its tasks end as
            // refused, and a rerun would run them again. Asked once, by the job's script.
            let wanted = [Unrecorded {
                script: script.display().to_string(),
                text,
                since,
            }];
            let known = self.known_jobs();
            let lookup = self.scheduler.client.submitted(&self.tag, &wanted, &known);
            if let Ok(Some(found)) = lookup.await {
                if let Some(&job_id) = found.get(&script.display().to_string()) {
                    self.warn(format!(
                        "{} said the submission failed ({e}), yet the scheduler lists job \
                         {job_id} with its script: its tasks are watched as that job",
                        self.scheduler.dialect.submitter
                    ));
                    submitted = Ok((job_id, String::new()));
                }
            }
        }
        match &submitted {
            // Accepted with a warning (sbatch: "can't run 1 processes on 50 nodes, setting
            // nnodes to 1"): said, not thrown away.
            Ok((job_id, warnings)) if !warnings.is_empty() => self.warn(format!(
                "{} accepted job {job_id} with a warning: {warnings}",
                self.scheduler.dialect.submitter
            )),
            Ok(_) => {}
            // Refused (or never run): no job to find again.
            Err(_) => self.journal.settle(stem),
        }
        submitted.map(|(job_id, _)| job_id).map_err(|e| match e {
            // The scheduler refused the job: rejected, with its message.
            SchedulerError::Rejected { program, stderr } => TaskError::Rejected {
                backend: self.scheduler.dialect.name().into(),
                reason: format!("{program} refused the job: {stderr}"),
            },
            e => TaskError::Launch {
                what: self.scheduler.dialect.submitter.into(),
                kind: launch_kind(&e),
                detail: e.to_string(),
            },
        })
    }

    /// The job script header of `count` pilot jobs (`block_allocation`, see
    /// `backend/workers/pilot.rs`) named `name` and sized by `r`: one job array where the
    /// scheduler has arrays and `count` > 1; each runs `command(index)`, `index` being the
    /// shell expression of its array index (`0` outside an array).
    fn pilot_header(
        &self,
        name: &str,
        r: &Resources,
        count: usize,
        command: &dyn Fn(&str) -> String,
    ) -> SlurmScript {
        let dialect = self.scheduler.dialect;
        let mut header = (dialect.header)(name, r, r.ranks(), r.threads());
        let arrays = dialect.arrays.as_ref().filter(|_| count > 1);
        header.output = self.job_log(arrays.is_some());
        if let Some(a) = arrays {
            (a.header)(&mut header, count, None);
        }
        header.command = command(arrays.map_or("0", |a| a.index));
        header
    }

    /// The pilot jobs' script, rendered from the executor's template (`pitch render`).
    pub(crate) fn render_pilots(
        &self,
        name: &str,
        r: &Resources,
        count: usize,
        command: &dyn Fn(&str) -> String,
    ) -> Result<String, TaskError> {
        self.script_text(&self.pilot_header(name, r, count, command))
    }

    /// Submits `count` pilot jobs (one submission); the job id.
    pub(crate) async fn submit_pilots(
        &self,
        name: &str,
        r: &Resources,
        count: usize,
        command: &dyn Fn(&str) -> String,
    ) -> Result<u64, TaskError> {
        let header = self.pilot_header(name, r, count, command);
        let stem = self.script_stem();
        // Pilots run no task of their own: nothing to journal, so the intent goes at once (a
        // pilot of a driver killed meanwhile leaves when it finds no driver to serve).
        let submitted = self.submit(&header, &stem, None, &[]).await;
        self.journal.settle(&stem);
        submitted
    }

    /// The job ids journaled by earlier runs and submitted by this one.
    fn known_jobs(&self) -> HashSet<u64> {
        let journaled = self.journaled.lock().unwrap();
        let jobs = self.jobs.lock().unwrap();
        journaled
            .values()
            .chain(jobs.values())
            .map(|j| j.job_id)
            .collect()
    }

    /// Writes the job script or tasks file `name` (executable by its owner only) through
    /// the jobs directory's checked handle: a link in its place is replaced, never followed.
    fn write_script(&self, name: &str, text: &str) -> Result<(), String> {
        let dir = self.store.jobs(true).map_err(|e| e.to_string())?;
        dir.write_atomic(name, text.as_bytes(), self.store.durable(), 0o700)
            .map_err(|e| e.to_string())
    }

    /// The text of the job script named `stem`, read through the jobs directory's checked
    /// handle (a link or anything but a regular file there is not read); empty when it
    /// cannot be read.
    fn script_of(&self, stem: &str) -> String {
        self.store
            .jobs(false)
            .ok()
            .and_then(|dir| dir.read(&Store::job_script_name(stem), SCRIPT_MAX).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Journals the jobs of these intents the scheduler lists; forgets the intents of the
    /// others (never accepted, or gone from the queue: their tasks' files speak for them).
    pub(super) async fn recover_intents(&self, intents: Vec<(String, IntentRecord)>) {
        // A lookup that fails (squeue timing out on a busy controller) would have the tasks
        // submitted twice: asked again, 1, 2 and 4 s later, before giving up.
        let wanted: Vec<Unrecorded> = intents
            .iter()
            .map(|(stem, intent)| Unrecorded {
                script: intent.script.clone(),
                // A script that cannot be read matches no job (Slurm looks by path alone).
                text: self.script_of(stem),
                since: self.journal.intended_at(stem),
            })
            .collect();
        let known = self.known_jobs();
        let mut looked = self
            .scheduler
            .client
            .submitted(&self.tag, &wanted, &known)
            .await;
        for wait in [1, 2, 4] {
            if looked.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(wait)).await;
            looked = self
                .scheduler
                .client
                .submitted(&self.tag, &wanted, &known)
                .await;
        }
        let found = match looked {
            Ok(Some(found)) => found,
            Ok(None) => {
                self.warn(format!(
                    "{} submission(s) of an earlier run may have been accepted without their \
                     job id being recorded, and {} cannot look them up: their tasks are \
                     submitted again",
                    intents.len(),
                    self.scheduler.dialect.title()
                ));
                HashMap::new()
            }
            Err(e) => {
                self.warn(format!(
                    "could not look for the jobs of {} unrecorded submission(s) of an earlier \
                     run ({e}): their tasks are submitted again",
                    intents.len()
                ));
                return;
            }
        };
        let mut journaled = self.journaled.lock().unwrap();
        for (stem, intent) in intents {
            if let Some(&job_id) = found.get(&intent.script) {
                let rec = JournalRecord {
                    job_id,
                    tasks: intent.tasks,
                };
                if let Err(e) = self.journal.record(&rec) {
                    self.warn(format!("could not journal job {job_id}: {e}"));
                }
                for (key, index) in &rec.tasks {
                    let job = JobRef {
                        job_id,
                        array_index: *index,
                    };
                    let newer = journaled.get(key).is_none_or(|j| j.job_id <= job_id);
                    if newer {
                        journaled.insert(*key, job);
                    }
                }
                let mut seen = HashSet::new();
                let mut packs = self.packs.lock().unwrap();
                for (_, index) in &rec.tasks {
                    if !seen.insert(*index) {
                        packs.insert(JobRef {
                            job_id,
                            array_index: *index,
                        });
                    }
                }
            }
            self.journal.settle(&stem);
        }
    }
}

/// Whether a failed submission of `job` is the scheduler refusing its dependency on an
/// input's job (which has ended badly, so the dependency can never be satisfied).
/// The job script `text` with a last line naming its submission (`# pitch: submission
/// STEM`): no two scripts pitch submits are the same, so a scheduler that keeps a job's
/// script but not its path (Flux) can tell which submission a job is.
pub(super) fn marked(mut text: String, stem: &str) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("# pitch: submission {stem}\n"));
    text
}

/// The kind of launch error a failed submission is.
pub(super) fn launch_kind(e: &SchedulerError) -> LaunchErrorKind {
    match e {
        SchedulerError::CommandMissing { .. } => LaunchErrorKind::NotFound,
        SchedulerError::Rejected { .. } => LaunchErrorKind::RejectedByScheduler,
        _ => LaunchErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_submission_is_a_launch_error_of_its_kind() {
        let missing = SchedulerError::CommandMissing {
            program: "sbatch".into(),
            scheduler: "Slurm".into(),
            host: None,
        };
        let rejected = SchedulerError::Rejected {
            program: "sbatch".into(),
            stderr: "Invalid partition name specified".into(),
        };
        let unreadable = SchedulerError::Unreadable {
            program: "sbatch".into(),
            detail: "no job id".into(),
        };
        assert_eq!(launch_kind(&missing), LaunchErrorKind::NotFound);
        assert_eq!(launch_kind(&rejected), LaunchErrorKind::RejectedByScheduler);
        assert_eq!(launch_kind(&unreadable), LaunchErrorKind::Other);
        assert_eq!(
            rejected.to_string(),
            "sbatch rejected the job: Invalid partition name specified"
        );
    }
}
