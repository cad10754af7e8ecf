//! The lines of a driver's claims log (`locks/claims/<driver id>`, byte-range claims).

use crate::task::TaskKey;

/// One line of a driver's claims log.
#[cfg(any(target_os = "linux", feature = "fuzzing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLine {
    /// `KEY`: the driver claimed the task.
    Claimed(TaskKey),
    /// `-KEY`: the driver released it.
    Released(TaskKey),
}

/// Reads one line of a claims log (without its newline); `None` for anything else.
#[cfg(any(target_os = "linux", feature = "fuzzing"))]
pub(crate) fn log_line(line: &[u8]) -> Option<LogLine> {
    let line = std::str::from_utf8(line).ok()?;
    match line.strip_prefix('-') {
        Some(key) => key.parse().ok().map(LogLine::Released),
        None => line.parse().ok().map(LogLine::Claimed),
    }
}
