//! Ctrl-C (and SIGTERM, SIGHUP) for `pitch run`: the signal cancels the task instead of
//! ending pitch and leaving the command behind (a local command runs in its own process
//! group, out of the terminal's reach). The handler only records the signal; a watcher
//! thread cancels the task (local: SIGTERM to the command's process group, SIGKILL after the
//! grace period; Slurm/Flux: the job is cancelled), which then resolves to `Cancelled`, and
//! `pitch run` exits 128 + the signal. A second signal ends pitch at once (128 + it), as
//! the first one's cancels may take a while (a grace period, a scheduler's answer).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Async-signal-safe: one atomic swap, and `_exit` for a second signal: the first one
    // asks for an orderly stop (cancels, a summary), a second one means "now".
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// The signals that cancel the task.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Until dropped, SIGINT, SIGTERM and SIGHUP call `cancel` (once, from a watcher thread).
pub(crate) struct Interrupts {
    done: Arc<AtomicBool>,
}

impl Interrupts {
    pub(crate) fn cancel_with(cancel: impl FnOnce() + Send + 'static) -> Interrupts {
        for s in SIGNALS {
            // SAFETY: the handler only stores to an atomic; a command pitch starts gets the
            // default dispositions back when it execs.
            unsafe {
                libc::signal(s, on_signal as *const () as libc::sighandler_t);
            }
        }
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let _ = std::thread::Builder::new()
            .name("pitch-interrupts".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if RECEIVED.load(Ordering::SeqCst) != 0 {
                        cancel();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        Interrupts { done }
    }

    /// The signal that cancelled the task, if one did.
    pub(crate) fn received(&self) -> Option<i32> {
        Some(RECEIVED.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}
