//! [`ProgressReporter`]: an indicatif bar on standard error, hidden when it is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::{Event, EventKind, Reporter};

/// A progress bar over the tasks of a run: total grows as tasks are submitted; finished,
/// failed and cached tasks advance it. Warnings are printed above the bar. Draws on standard
/// error only, and nothing at all when standard error is not a terminal (batch jobs, pipes).
pub struct ProgressReporter {
    bar: ProgressBar,
}

impl ProgressReporter {
    /// A bar on standard error.
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    /// A bar drawing to `target` (for tests: `ProgressDrawTarget::hidden()`).
    pub fn with_target(target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
            )
            .expect("a valid template"),
        );
        ProgressReporter { bar }
    }

    /// Tasks done so far and tasks submitted.
    pub fn position(&self) -> (u64, u64) {
        (self.bar.position(), self.bar.length().unwrap_or(0))
    }
}

impl Default for ProgressReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for ProgressReporter {
    fn report(&self, event: &Event) {
        match &event.kind {
            EventKind::Submitted { .. } => self.bar.inc_length(1),
            EventKind::Cached { .. } | EventKind::Finished { .. } => self.bar.inc(1),
            EventKind::Failed { name, error, .. } => {
                self.bar.inc(1);
                self.bar.println(format!("failed: {name}: {error}"));
            }
            EventKind::Retrying {
                name,
                attempt,
                delay,
                ..
            } => self.bar.println(format!(
                "retrying: {name}: attempt {} failed ({}); next in {:.0} s",
                attempt.number,
                attempt.error,
                delay.as_secs_f64()
            )),
            EventKind::Warning { message } => self.bar.println(format!("warning: {message}")),
            EventKind::RunFinished { .. } => self.bar.finish(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn ev(kind: EventKind) -> Event {
        Event {
            at: SystemTime::now(),
            elapsed: Duration::ZERO,
            kind,
        }
    }

    #[test]
    fn counts_follow_events() {
        let p = ProgressReporter::with_target(ProgressDrawTarget::hidden());
        for k in ["a", "b", "c"] {
            p.report(&ev(EventKind::Submitted {
                key: k.into(),
                name: "t".into(),
            }));
        }
        p.report(&ev(EventKind::Cached {
            key: "a".into(),
            name: "t".into(),
        }));
        p.report(&ev(EventKind::Failed {
            key: "b".into(),
            name: "t".into(),
            error: crate::TaskError::Cancelled,
        }));
        assert_eq!(p.position(), (2, 3));
    }
}
