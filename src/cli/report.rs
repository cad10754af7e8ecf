//! [`TaskLines`]: the CLI's reporter of one line per event on standard error.
//!
//! `-v` prints a line when a task ends (finished, failed, from the cache); `-vv` also when it
//! is submitted and when it starts (with its Slurm or Flux job id). `pitch run` always prints
//! the start of its one task ("submitted as Slurm job 123"), and its end itself. Warnings are
//! always printed. `-q` installs no reporter at all.

use std::collections::HashMap;
use std::sync::Mutex;

use pitch::{Event, EventKind, Reporter};

/// What the lines are for.
pub(crate) enum Mode {
    /// `pitch run`: one task, this command line.
    Run(String),
    /// `pitch sweep`: tasks named by their parameters (see [`TaskLines::label`]).
    Sweep,
}

/// A line waiting for its task's label (events can come before `submit` returns the key).
struct Line {
    verb: &'static str,
    key: String,
    suffix: String,
}

#[derive(Default)]
struct Labels {
    labels: HashMap<String, String>,
    waiting: Vec<Line>,
}

/// One line per event on standard error, as `-v` asks.
pub(crate) struct TaskLines {
    verbose: u8,
    mode: Mode,
    labels: Mutex<Labels>,
    /// `pitch run`: the scheduler's name for its "submitted as" line ("Slurm", "Flux"), set
    /// once the executor is built; and whether that line was printed.
    scheduler: std::sync::OnceLock<&'static str>,
    /// Held while the line is printed, so that a detached run (which exits once its
    /// `announce_job` returns) never exits while the event thread is halfway through it.
    announced: Mutex<bool>,
}

impl TaskLines {
    pub(crate) fn new(verbose: u8, mode: Mode) -> TaskLines {
        TaskLines {
            verbose,
            mode,
            labels: Mutex::new(Labels::default()),
            scheduler: std::sync::OnceLock::new(),
            announced: Mutex::new(false),
        }
    }

    /// The scheduler `pitch run`'s task is submitted to, by its backend name.
    pub(crate) fn set_backend(&self, backend: &str) {
        let _ = self.scheduler.set(scheduler_title(backend));
    }

    /// `pitch run`'s "submitted as <scheduler> job ID" line, once: from its task's start
    /// event, or from `--detach` itself once the job id is known (which may come first: the
    /// event is reported on another thread, and a detached run exits at once).
    pub(crate) fn announce_job(&self, key: &str, id: &str) {
        let mut announced = self.announced.lock().unwrap();
        if !*announced {
            let scheduler = self.scheduler.get().copied().unwrap_or("Slurm");
            // One write of the whole line (stderr is unbuffered: `eprintln!` with arguments
            // writes it piece by piece).
            let line = format!("pitch: submitted as {scheduler} job {id} (key {key})\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            *announced = true;
        }
    }

    /// Names the task `key` in its lines (a sweep point's `a=1 b=x`); prints the lines that
    /// waited for it.
    pub(crate) fn label(&self, key: &str, label: String) {
        let mut l = self.labels.lock().unwrap();
        let waiting = std::mem::take(&mut l.waiting);
        l.labels.insert(key.to_string(), label);
        for line in waiting {
            if let Some(label) = l.labels.get(&line.key) {
                eprintln!("pitch: {} {} {label}{}", line.verb, line.key, line.suffix);
            } else {
                l.waiting.push(line);
            }
        }
    }

    /// Prints the lines of tasks that were never labelled.
    pub(crate) fn flush(&self) {
        let mut l = self.labels.lock().unwrap();
        for line in std::mem::take(&mut l.waiting) {
            eprintln!("pitch: {} {}{}", line.verb, line.key, line.suffix);
        }
    }

    fn line(&self, verb: &'static str, key: &str, suffix: String) {
        let label = match &self.mode {
            Mode::Run(command) => Some(command.clone()),
            Mode::Sweep => {
                let mut l = self.labels.lock().unwrap();
                match l.labels.get(key) {
                    Some(label) => Some(label.clone()),
                    None => {
                        l.waiting.push(Line {
                            verb,
                            key: key.to_string(),
                            suffix,
                        });
                        return;
                    }
                }
            }
        };
        if let Some(label) = label {
            eprintln!("pitch: {verb} {key} {label}{suffix}");
        }
    }
}

/// The scheduler's name in "submitted as <scheduler> job" for a backend name
/// (`Executor::backend_name`): Flux for `flux` and `flux-job`, else Slurm.
fn scheduler_title(backend: &str) -> &'static str {
    if backend.starts_with("flux") {
        "Flux"
    } else {
        "Slurm"
    }
}

impl Reporter for TaskLines {
    fn report(&self, event: &Event) {
        let run = matches!(self.mode, Mode::Run(_));
        match &event.kind {
            EventKind::Submitted { key, .. } if self.verbose >= 2 => {
                self.line("submitted", key, String::new())
            }
            EventKind::Started { key, job_id, .. } => match (&self.mode, job_id) {
                (Mode::Run(_), Some(id)) => self.announce_job(key, id),
                (Mode::Run(command), None) => eprintln!("pitch: running {command} (key {key})"),
                (Mode::Sweep, _) if self.verbose >= 2 => self.line(
                    "started",
                    key,
                    job_id
                        .as_ref()
                        .map(|id| {
                            let scheduler = self.scheduler.get().copied().unwrap_or("Slurm");
                            format!(" as {scheduler} job {id}")
                        })
                        .unwrap_or_default(),
                ),
                _ => {}
            },
            // `pitch run` prints its task's end itself.
            EventKind::Finished { key, runtime, .. } if self.verbose >= 1 && !run => self.line(
                "finished",
                key,
                format!(" in {:.1} s", runtime.as_secs_f64()),
            ),
            EventKind::Failed { key, error, .. } if self.verbose >= 1 && !run => {
                self.line("failed", key, format!(": {}", one_line(&error.to_string())))
            }
            // Always: a retry means the cluster had a bad moment, worth a line.
            EventKind::Retrying {
                key,
                attempt,
                delay,
                ..
            } => self.line(
                "retrying",
                key,
                format!(
                    ": attempt {}{} failed: {}; next attempt in {:.0} s",
                    attempt.number,
                    attempt
                        .job_id
                        .as_ref()
                        .map(|j| format!(" (job {j})"))
                        .unwrap_or_default(),
                    one_line(&attempt.error.to_string()),
                    delay.as_secs_f64()
                ),
            ),
            EventKind::Cached { key, .. } if self.verbose >= 1 && !run => {
                self.line("cached", key, " (finished before)".into())
            }
            EventKind::Warning { message } => eprintln!("pitch: warning: {message}"),
            _ => {}
        }
    }
}

/// An error on one line: its first line and, when it goes on (a stderr tail), its last.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first} {}", last.trim()),
    }
}

/// A command line as a shell would take it back (for messages only).
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%{}".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_backends_submit_flux_jobs() {
        for (backend, title) in [
            ("slurm", "Slurm"),
            ("slurm-job", "Slurm"),
            ("flux", "Flux"),
            ("flux-job", "Flux"),
        ] {
            assert_eq!(scheduler_title(backend), title, "{backend}");
        }
    }

    #[test]
    fn quotes_only_what_needs_it() {
        let argv: Vec<String> = ["sh", "-c", "echo it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_words(&argv), "sh -c 'echo it'\\''s' ''");
    }

    #[test]
    fn errors_fit_on_one_line() {
        assert_eq!(one_line("boom"), "boom");
        assert_eq!(
            one_line("exited with code 2; stderr ends with:\nfirst\n\nlast\n"),
            "exited with code 2; stderr ends with: last"
        );
    }

    #[test]
    fn lines_wait_for_their_label() {
        let t = TaskLines::new(1, Mode::Sweep);
        t.line("finished", "k1", " in 1.0 s".into());
        assert_eq!(t.labels.lock().unwrap().waiting.len(), 1);
        t.label("k2", "a=2".into());
        assert_eq!(t.labels.lock().unwrap().waiting.len(), 1);
        t.label("k1", "a=1".into());
        assert!(t.labels.lock().unwrap().waiting.is_empty());
    }
}
