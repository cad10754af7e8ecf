//! The result log: where pooled tasks (`block_allocation`) keep their results instead of a
//! directory and two files per task.
//!
//! ```text
//! <cache_directory>/log/<nanos>-<pid>.plog   one file per driver process that wrote results
//! ```
//!
//! A log is a sequence of records, each written with one `write(2)` on a file opened `O_APPEND`: a
//! 4-byte magic `PLR1`, the payload length (u32, little endian), the first 16 bytes of the
//! payload's BLAKE3 hash, then the payload (the bincode of [`LogRecord`](record::LogRecord): key,
//! task name, finish time and the [`ResultRecord`](crate::store::ResultRecord)). A driver killed in
//! the middle of an append leaves a short last record: the reader sees it is cut short and stops
//! there, so at most that record is lost. A record whose checksum fails is skipped (its task runs
//! again); a record whose framing is damaged ends the reading of that file. Each run appends to a
//! new file, never after another run's torn tail.
//!
//! A key may appear more than once (a failure, then a success after a rerun): a finished
//! (Ok) record always wins over a failed one, so a failure never hides a result; among
//! records of the same kind the last one wins.
//!
//! The index of every log of a cache directory is loaded once per process (on the first
//! lookup or append) and kept up to date with this process's own appends; it holds where each
//! record is, not its values, which are read back (and checked again) on a hit.
//!
//! The parts: `record.rs` the record format (framing, checksum) and reading a log through;
//! `folder.rs` the log folder and its files, opened through checked handles; `set.rs` the
//! per-process index ([`LogSet`]) with its lookups and this process's appends; `tasks.rs`
//! every task of the logs read afresh (for `Cache` and the tests); `compact.rs` folding
//! finished task directories into a log (`pitch gc --compact`).

mod compact;
mod folder;
mod record;
mod set;
mod tasks;
#[cfg(test)]
mod tests;

pub(crate) use compact::compact;
pub use compact::Compacted;
pub(crate) use folder::is_log;
#[cfg(test)]
pub(crate) use folder::log_files;
#[cfg(test)]
pub(crate) use record::encode_record;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use record::LogRecord;
pub(crate) use set::{lookup, LogSet};
pub(crate) use tasks::{logged_tasks, records_of, Logged};
