//! [`Queue`]'s [`Backend`] implementation.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::Queue;
use crate::backend::{Backend, BoxFuture, DropPolicy, Job};
use crate::engine::Preparing;
use crate::error::TaskError;
use crate::event::Events;
use crate::resources::Resources;
use crate::task::{TaskKey, TaskKind};

impl Backend for Queue {
    fn name(&self) -> &'static str {
        self.scheduler.dialect.name()
    }

    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        let ignored = self.scheduler.dialect.check(r)?;
        match self.scheduler.client.refuses(r, r.ranks(), r.threads()) {
            Some(why) => Err(why),
            None => Ok(ignored),
        }
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        let done = job.done.clone();
        let key = job.spec.key;
        // Counted from here, before the future first runs, so that no moment passes between
        // the engine's count and this one.
        let arriving = Preparing::new(&self.arriving);
        Box::pin(async move {
            let record = self.clone().run_job(job, arriving).await;
            if record.outcome.is_err() {
                // No dependent may queue behind the failed job (the task may be retried
                // as a new job).
                self.jobs.lock().unwrap().remove(&key);
                self.jobs_changed.notify_waiters();
            }
            done.finish(record);
        })
    }

    fn queues_dependencies(&self) -> bool {
        true
    }

    fn job_name(&self) -> Option<&str> {
        Some(&self.tag)
    }

    fn render(
        &self,
        spec: &crate::task::TaskSpec,
        resources: &Resources,
        paths: &crate::store::TaskPaths,
    ) -> Option<Result<String, TaskError>> {
        let exe = match &spec.kind {
            TaskKind::Function { .. } => match self.staged_exe() {
                Ok(p) => Some(self.transport.path(&p)),
                Err(e) => return Some(Err(e)),
            },
            TaskKind::Command(_) => None,
        };
        let mut header = self.header(resources, spec.ranks, spec.threads);
        header.output = self.job_log(false);
        let warned = resources.checkpoint_grace.is_some();
        header.command = self.task_body(spec, paths, exe.as_deref(), warned);
        Some(self.script_text(&header))
    }

    fn drop_policy(&self) -> DropPolicy {
        DropPolicy::Detach
    }

    fn close(&self, _wait: bool) {
        // The SSH connection to a login node ends with the executor.
        self.transport.close();
    }

    fn attach(&self, events: Events, preparing: Arc<AtomicUsize>) {
        let _ = self.events.set(events);
        let _ = self.preparing.set(preparing);
    }

    fn taken_over(&self, _key: &TaskKey, since: std::time::Instant) {
        // Into the earlier runs' jobs, where a task looks for a job to re-attach to.
        self.journal
            .reload_since(since, &self.journaled, &self.packs);
    }
}
