//! The checkpointing task the local and the Slurm checkpoint tests share, and how to read
//! what its attempts did.

use std::path::{Path, PathBuf};
use std::time::Duration;

pitch::task! {
    /// Sums `0..n`, one number every `step_ms` (every 10 ms once resumed, so that a resumed
    /// attempt ends soon, before any warning); when warned, saves where it is (the next
    /// number and the sum so far) and stops. The sum, and the number it resumed from. Each
    /// attempt appends the number it starts from to `log`.
    pub fn long_sum(n: u64, step_ms: u64, log: PathBuf) -> Result<(u64, u64), pitch::TaskError> {
        use std::io::Write;
        let ctx = pitch::context();
        let resumed = ctx.resume::<(u64, u64)>()?;
        let step_ms = if resumed.is_some() { 10 } else { step_ms };
        let (start, mut sum) = resumed.unwrap_or((0, 0));
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        // One write: the ranks of a multi-rank task append to the same file.
        f.write_all(format!("{start}\n").as_bytes()).unwrap();
        for i in start..n {
            if ctx.should_stop() {
                ctx.checkpoint(&(i, sum));
            }
            sum += i;
            std::thread::sleep(Duration::from_millis(step_ms));
        }
        Ok((sum, start))
    }
}

/// The numbers each attempt of `long_sum` started from.
pub(crate) fn starts(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}
