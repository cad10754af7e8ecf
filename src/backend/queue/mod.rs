//! [`Queue`]: the backend of the batch schedulers (Slurm, Flux). Each task runs as a batch
//! job — or, for bursts of equal submissions, as one element of a job array where the
//! scheduler has them — whose script runs the worker (or the command) on a compute node. One
//! poller per executor makes one queue query per tick for all of its jobs and reads result
//! files only for jobs that left the queue. What differs between schedulers (their commands,
//! their outputs, the script's header) is a [`Scheduler`](crate::backend::scheduler::Scheduler):
//! its dialect and its client.
//!
//! The parts: `state.rs` the [`Queue`] type, its [`QueueConfig`] and construction, and what
//! the others share; `run.rs` a task's way (inputs and `afterok`, the submission, watching
//! it again behind a retried input); `reattach.rs` what earlier runs left (their
//! submissions recovered, a failed or finished attempt); `watch.rs` a job watched to its end,
//! and cancels; `backend.rs` the [`Backend`](crate::backend::Backend) impl; `submit.rs` the
//! submission side (the batch window, arrays and packs, job scripts, intents, pilots);
//! `poll/` the one poller per executor; `script.rs` the bash of a task inside a job;
//! `journal.rs` which job runs which task, and the intent records.

mod backend;
pub(crate) mod journal;
pub(crate) mod poll;
mod reattach;
mod run;
pub(crate) mod script;
mod state;
mod submit;
mod watch;

pub(crate) use self::state::{job_name_for, Queue, QueueConfig};
