//! `sacct`'s output: the end of jobs the accounting database remembers ([`parse_sacct`],
//! [`sacct_disabled`]).

use std::fmt;

use super::{parse_exit_code, parse_job_ids, ParseError, SlurmState};
use crate::backend::scheduler::JobRef;

/// One job (or array element) listed by `sacct -X -n -P -o JobID,State,ExitCode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacctEntry {
    /// The job or array element.
    pub job: JobRef,
    /// Its state (sacct's `"CANCELLED by <uid>"` is [`SlurmState::Cancelled`]).
    pub state: SlurmState,
    /// `ExitCode` as (exit code, signal).
    pub exit_code: (i32, i32),
}

/// Parses the output of `sacct -X -n -P -o JobID,State,ExitCode -j <ids>`
/// ([`SACCT_FIELDS`](super::SACCT_FIELDS)).
///
/// Blank lines and job steps (`123.batch`, `123_4.0`) are skipped; folded
/// pending array elements (`123_[5-9%2]`) yield one entry per element.
pub fn parse_sacct(output: &str) -> Result<Vec<SacctEntry>, ParseError> {
    let mut entries = Vec::new();
    for (n, line) in output.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &dyn fmt::Display| ParseError::line("sacct", n + 1, reason, line);
        let fields: Vec<&str> = line.split('|').collect();
        // -P separates fields with '|'; -p also ends the line with one.
        let (id, state, exit_code) = match fields[..] {
            [id, state, exit_code] | [id, state, exit_code, ""] => (id, state, exit_code),
            _ => return Err(err(&"expected \"<jobid>|<state>|<exitcode>\"")),
        };
        if id.contains('.') {
            continue;
        }
        let jobs = parse_job_ids(id).map_err(|e| err(&e))?;
        let state: SlurmState = state.parse().map_err(|e| err(&e))?;
        let exit_code = parse_exit_code(exit_code).map_err(|e| err(&e))?;
        entries.extend(jobs.into_iter().map(|job| SacctEntry {
            job,
            state,
            exit_code,
        }));
    }
    Ok(entries)
}

/// Whether sacct's output (stdout or stderr) says there is no accounting
/// database: "Slurm accounting storage is disabled" (sacct exits 1 in 22.05).
pub fn sacct_disabled(stderr_or_stdout: &str) -> bool {
    stderr_or_stdout.contains("Slurm accounting storage is disabled")
}
