//! [`SingleNode`]: each task is a child process of the driver on this machine. Function tasks
//! re-execute the running binary as a worker; commands run directly; `cores = N` runs either
//! under `mpiexec -n N`. The same backend runs tasks as `srun --exact` steps inside a Slurm
//! allocation and as `flux run` jobs inside a Flux instance ([`Launcher`], in
//! `launcher.rs`): the launcher is the child process, so the driver still wakes on its exit.
//! Children run on the threads of a [`Pool`](crate::backend::pool::Pool), which does the slot
//! accounting; each thread sleeps in `poll(2)` until its child writes or exits: there is no
//! polling loop.
//!
//! The parts: `backend.rs` the [`SingleNode`] type, its construction and its
//! [`Backend`](crate::backend::Backend) impl; `start.rs` a task queued on the pool and its
//! cancel (SIGTERM then SIGKILL, a `flux run` child's job cancelled through Flux), and a task
//! whose work was dropped without a record; `run.rs` a task run on a pool thread (its argv
//! through the launcher, its environment and output files, the child spawned and supervised,
//! or a Flux job submitted through libflux) and [`warning_after`](run::warning_after);
//! `outcome.rs` the task's result from how its process ended, with [`command_outcome`] and
//! [`spawn_failure`], which commands run in pilots share.

mod backend;
mod outcome;
mod run;
mod start;

pub(crate) use self::backend::SingleNode;
pub(crate) use self::outcome::{command_outcome, spawn_failure};
pub(crate) use super::launcher::Launcher;
