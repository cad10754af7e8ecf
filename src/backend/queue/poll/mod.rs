//! The one poller of a queue executor: per tick ONE queue query for all of its jobs
//! (filtered by user and the cache directory's job name), backing off while nothing changes.
//! Result files are read only for jobs that left the queue or are reported finished; a job
//! gone without a result is asked about (Slurm: scontrol, then sacct; Flux: flux jobs) after
//! a grace period for NFS attribute caching, and its error names the scheduler state.
//!
//! The parts: `watch.rs` a watched task ([`Watch`]) and how it ended ([`WatchEnd`]);
//! `tick.rs` the poller's loop ([`run`]); `collect.rs` what a job's files say, given what the
//! scheduler said about the job (a command that died of a signal in a job the scheduler
//! ended resolves to the scheduler's error naming its state); `exit.rs` the `exit` file a job
//! script writes ([`exit_outcome`], also read on re-attach and by `pitch status`);
//! `tests.rs` their unit tests.

mod collect;
mod exit;
#[cfg(test)]
mod tests;
mod tick;
mod watch;

pub(crate) use self::exit::{exit_outcome, ExitOutcome};
pub(crate) use self::tick::run;
pub(crate) use self::watch::{Watch, WatchEnd};
