//! One attempt's way to the backend: the task file, the inputs waited for (or handed over,
//! on a queue), and the [`Job`] the backend runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Engine, Preparing};
use crate::backend::{Done, Job};
use crate::error::TaskError;
use crate::event::EventKind;
use crate::future::{Dependency, Slot};
use crate::resources::Resources;
use crate::store::ResultRecord;
use crate::task::TaskSpec;

impl Engine {
    /// Writes the task file, waits for the inputs and hands the task to the backend, which
    /// delivers its record to `done`; a record returned here ends the task before that. With
    /// the resources comes whether the command gets the driver's standard input.
    pub(super) async fn execute(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        spec: Arc<TaskSpec>,
        deps: Vec<(String, Dependency)>,
        (resources, stdin): (Resources, bool),
        preparing: Preparing,
        done: Done,
    ) -> Option<ResultRecord> {
        let paths = self.store.task(&spec.key);
        let fail = |e: TaskError| ResultRecord { outcome: Err(e) };
        if self.backend.writes_task_file(&spec) {
            if let Err(e) = paths.create() {
                return Some(fail(e));
            }
            if let Err(e) = paths.write_task(&*spec) {
                return Some(fail(e));
            }
        }
        // Process backends start a task once its inputs have finished; queue backends take
        // the unfinished inputs and queue the task behind them (afterok).
        let queue_deps = self.backend.queues_dependencies();
        let mut waiting = Vec::new();
        for (input, dep) in deps {
            if queue_deps && dep.slot.outcome().is_none() {
                waiting.push((input, dep));
                continue;
            }
            let outcome = tokio::select! {
                o = dep.slot.wait_async() => o,
                _ = slot.cancel.cancelled() => return Some(paths.publish_result(fail(TaskError::Cancelled))),
            };
            if let Err(cause) = outcome.as_ref() {
                return Some(paths.publish_result(fail(TaskError::dependency_failed(
                    &input,
                    &dep.slot.name,
                    &dep.slot.key,
                    cause,
                ))));
            }
            if !queue_deps {
                waiting.push((input, dep));
            }
        }
        if slot.cancel.is_cancelled() {
            return Some(paths.publish_result(fail(TaskError::Cancelled)));
        }
        let events = self.events.clone();
        let started_slot = slot.clone();
        let started_once = std::sync::atomic::AtomicBool::new(false);
        let job = Job {
            spec,
            paths,
            resources,
            slot,
            deps: waiting,
            done,
            stdin,
            started: Box::new(move |job_id: Option<String>| {
                if let Some(id) = &job_id {
                    started_slot.set_job_id(id.clone());
                }
                if started_once.swap(true, Ordering::SeqCst) {
                    return;
                }
                events.emit(EventKind::Started {
                    key: started_slot.key.to_string(),
                    name: started_slot.name.clone(),
                    job_id,
                });
            }),
        };
        drop(preparing);
        self.backend.clone().run(job).await;
        None
    }
}
