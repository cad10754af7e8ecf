//! flux-core's C API (`libflux-core.so.2`), loaded at run time with `dlopen(3)` so that
//! nothing of Flux is needed to build pitch (macOS builds it too): FluxJobExecutor submits
//! its tasks' jobs through it instead of one `flux run` process (Python, ~0.2 s of CPU) per
//! task. The library is looked for next to each `flux` on PATH (`<bin>/../lib`, the layout
//! of a flux-core install), then on the loader's default path; `PITCH_LIBFLUX` names it
//! instead.
//!
//! A [`Handle`] (`flux_t`) is not thread-safe: each pool thread keeps its own
//! ([`with_thread_handle`]), and cancels from other threads go through one handle behind a
//! mutex ([`cancel`]).

use std::cell::RefCell;
use std::ffi::{c_char, c_double, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The library's file name (its soname).
const SONAME: &str = "libflux-core.so.2";

type Open = unsafe extern "C" fn(*const c_char, c_int, *mut FluxError) -> *mut c_void;
type Close = unsafe extern "C" fn(*mut c_void);
type Submit = unsafe extern "C" fn(*mut c_void, *const c_char, c_int, c_int) -> *mut c_void;
type SubmitGetId = unsafe extern "C" fn(*mut c_void, *mut u64) -> c_int;
type ErrorString = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type Destroy = unsafe extern "C" fn(*mut c_void);
type WaitFor = unsafe extern "C" fn(*mut c_void, c_double) -> c_int;
type Get = unsafe extern "C" fn(*mut c_void, *mut *const c_void) -> c_int;
type EventWatch = unsafe extern "C" fn(*mut c_void, u64, *const c_char, c_int) -> *mut c_void;
type EventWatchGet = unsafe extern "C" fn(*mut c_void, *mut *const c_char) -> c_int;
type Reset = unsafe extern "C" fn(*mut c_void);
type Cancel = unsafe extern "C" fn(*mut c_void, u64, *const c_char) -> *mut c_void;
type Kill = unsafe extern "C" fn(*mut c_void, u64, c_int) -> *mut c_void;

/// `flux_error_t`: a message of up to 160 bytes.
#[repr(C)]
struct FluxError {
    text: [c_char; 160],
}

/// The functions pitch calls, resolved once.
struct Lib {
    path: String,
    open_ex: Open,
    close: Close,
    job_submit: Submit,
    job_submit_get_id: SubmitGetId,
    future_error_string: ErrorString,
    future_destroy: Destroy,
    future_wait_for: WaitFor,
    future_get: Get,
    job_event_watch: EventWatch,
    job_event_watch_get: EventWatchGet,
    future_reset: Reset,
    job_cancel: Cancel,
    job_kill: Kill,
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

fn lib() -> Result<&'static Lib, String> {
    LIB.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Where the library is looked for: next to each `flux` on `path` (the first `flux` may be a
/// wrapper script), the link target's directory too, then the bare soname.
fn candidates(path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let flux = dir.join("flux");
        if !flux.is_file() {
            continue;
        }
        let mut dirs = vec![dir.clone()];
        if let Some(real) = flux
            .canonicalize()
            .ok()
            .and_then(|r| r.parent().map(Path::to_path_buf))
        {
            dirs.push(real);
        }
        for d in dirs {
            let lib = d.join("..").join("lib").join(SONAME);
            if lib.is_file() && !found.contains(&lib) {
                found.push(lib);
            }
        }
    }
    found.push(PathBuf::from(SONAME));
    found
}

fn dlerror() -> String {
    // SAFETY: dlerror(3) returns NULL or a NUL-terminated message valid until the next call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: checked non-NULL above; a C string.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Names the library to load instead of looking for it (a Flux installed in another layout).
pub(crate) const LIB_ENV: &str = "PITCH_LIBFLUX";

fn load() -> Result<Lib, String> {
    let mut errors = Vec::new();
    let paths = match std::env::var_os(LIB_ENV).filter(|p| !p.is_empty()) {
        Some(p) => vec![PathBuf::from(p)],
        None => candidates(std::env::var_os("PATH").as_deref()),
    };
    for path in paths {
        let Ok(c) = CString::new(path.display().to_string()) else {
            continue;
        };
        // SAFETY: dlopen(3) with a NUL-terminated path; the library stays loaded for the
        // process's lifetime (never dlclose'd), so the symbols below stay valid.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            errors.push(dlerror());
            continue;
        }
        return resolve(handle, path.display().to_string());
    }
    Err(format!(
        "{SONAME} could not be loaded: {}",
        errors.join("; ")
    ))
}

fn resolve(handle: *mut c_void, path: String) -> Result<Lib, String> {
    macro_rules! sym {
        ($name:literal, $ty:ty) => {{
            let name = concat!($name, "\0");
            // SAFETY: dlsym(3) on a handle dlopen returned, with a NUL-terminated name.
            let p = unsafe { libc::dlsym(handle, name.as_ptr().cast()) };
            if p.is_null() {
                return Err(format!("{path} has no {}: {}", $name, dlerror()));
            }
            // SAFETY: the symbol is the flux-core function of that name, whose C signature
            // (flux-core 0.x, <flux/core.h>) the target type spells out.
            unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
        }};
    }
    Ok(Lib {
        open_ex: sym!("flux_open_ex", Open),
        close: sym!("flux_close", Close),
        job_submit: sym!("flux_job_submit", Submit),
        job_submit_get_id: sym!("flux_job_submit_get_id", SubmitGetId),
        future_error_string: sym!("flux_future_error_string", ErrorString),
        future_destroy: sym!("flux_future_destroy", Destroy),
        future_wait_for: sym!("flux_future_wait_for", WaitFor),
        future_get: sym!("flux_future_get", Get),
        job_event_watch: sym!("flux_job_event_watch", EventWatch),
        job_event_watch_get: sym!("flux_job_event_watch_get", EventWatchGet),
        future_reset: sym!("flux_future_reset", Reset),
        job_cancel: sym!("flux_job_cancel", Cancel),
        job_kill: sym!("flux_job_kill", Kill),
        path,
    })
}

/// Why a submission failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// Flux refused the job (an unknown queue, an invalid request): its reason.
    Refused(String),
    /// pitch could not reach Flux.
    Failed(String),
}

/// One entry of a job's eventlog (RFC 21): `submit`, `alloc`, `start`, `exception`,
/// `finish`, `clean`...
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct Event {
    pub name: String,
    #[serde(default)]
    pub context: serde_json::Value,
}

/// What [`Watch::next`] saw.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    Event(Event),
    /// Nothing within the timeout.
    TimedOut,
    /// The eventlog ended: the job is inactive.
    End,
}

/// One connection to the Flux instance `FLUX_URI` names.
pub(crate) struct Handle {
    lib: &'static Lib,
    h: NonNull<c_void>,
}

// SAFETY: a flux_t may move between threads; it is used by one thread at a time (a pool
// thread's own, or the cancel handle behind its mutex).
unsafe impl Send for Handle {}

/// A `flux_future_t`, destroyed with its owner.
struct Future {
    lib: &'static Lib,
    f: NonNull<c_void>,
}

impl Drop for Future {
    fn drop(&mut self) {
        // SAFETY: a future libflux returned, destroyed once.
        unsafe { (self.lib.future_destroy)(self.f.as_ptr()) }
    }
}

impl Future {
    fn new(lib: &'static Lib, f: *mut c_void, what: &str) -> Result<Future, String> {
        NonNull::new(f)
            .map(|f| Future { lib, f })
            .ok_or_else(|| format!("{what}: {}", std::io::Error::last_os_error()))
    }

    /// The error libflux recorded on the future, or `errno`'s.
    fn error(&self, errno: std::io::Error) -> String {
        // SAFETY: a live future; the string (if any) lives as long as the future.
        let s = unsafe { (self.lib.future_error_string)(self.f.as_ptr()) };
        if s.is_null() {
            errno.to_string()
        } else {
            // SAFETY: non-NULL, NUL-terminated.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        }
    }

    /// Waits for the future's response; its error message if it failed.
    fn get(&self) -> Result<(), String> {
        // SAFETY: a live future; a NULL result pointer is allowed.
        let rc = unsafe { (self.lib.future_get)(self.f.as_ptr(), std::ptr::null_mut()) };
        if rc < 0 {
            return Err(self.error(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// A job's eventlog, entry by entry, as it is written (`flux_job_event_watch`).
pub(crate) struct Watch {
    future: Future,
}

impl Watch {
    /// The next entry, waiting up to `timeout` (`None`: as long as it takes).
    pub(crate) fn next(&self, timeout: Option<Duration>) -> Result<Next, String> {
        let lib = self.future.lib;
        let f = self.future.f.as_ptr();
        let t = timeout.map_or(-1.0, |t| t.as_secs_f64().max(0.001));
        // SAFETY: a live future.
        if unsafe { (lib.future_wait_for)(f, t) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ETIMEDOUT) {
                return Ok(Next::TimedOut);
            }
            return Err(self.future.error(e));
        }
        let mut entry: *const c_char = std::ptr::null();
        // SAFETY: a live, fulfilled future; `entry` points into it until the reset below.
        if unsafe { (lib.job_event_watch_get)(f, &mut entry) } < 0 || entry.is_null() {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODATA) {
                return Ok(Next::End);
            }
            return Err(self.future.error(e));
        }
        // SAFETY: non-NULL and NUL-terminated, copied before the reset.
        let text = unsafe { CStr::from_ptr(entry) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: a live future; the next response replaces this one.
        unsafe { (lib.future_reset)(f) };
        Event::parse(&text).map(Next::Event)
    }
}

impl Event {
    /// Reads one eventlog entry as libflux hands it over (a JSON object).
    pub(crate) fn parse(text: &str) -> Result<Event, String> {
        serde_json::from_str(text).map_err(|e| format!("eventlog entry {text:?}: {e}"))
    }
}

impl Handle {
    /// Connects to the instance `FLUX_URI` names.
    pub(crate) fn open() -> Result<Handle, String> {
        let lib = lib()?;
        let mut err = FluxError { text: [0; 160] };
        // SAFETY: NULL uri (FLUX_URI), no flags, a valid error buffer.
        let h = unsafe { (lib.open_ex)(std::ptr::null(), 0, &mut err) };
        match NonNull::new(h) {
            Some(h) => Ok(Handle { lib, h }),
            None => {
                // SAFETY: libflux NUL-terminates the message inside the buffer.
                let text = unsafe { CStr::from_ptr(err.text.as_ptr()) }.to_string_lossy();
                let why = if text.is_empty() {
                    std::io::Error::last_os_error().to_string()
                } else {
                    text.into_owned()
                };
                Err(format!("flux_open (FLUX_URI) through {}: {why}", lib.path))
            }
        }
    }

    /// Submits `jobspec` (JSON) at the default urgency; the job's id.
    pub(crate) fn submit(&self, jobspec: &str) -> Result<u64, SubmitError> {
        let spec = CString::new(jobspec)
            .map_err(|_| SubmitError::Failed("the jobspec contains a NUL byte".into()))?;
        // SAFETY: a live handle and a NUL-terminated jobspec; urgency 16 is the default.
        let f = unsafe { (self.lib.job_submit)(self.h.as_ptr(), spec.as_ptr(), 16, 0) };
        let f = Future::new(self.lib, f, "flux_job_submit").map_err(SubmitError::Failed)?;
        let mut id = 0u64;
        // SAFETY: a live future and a valid out-pointer.
        if unsafe { (self.lib.job_submit_get_id)(f.f.as_ptr(), &mut id) } == 0 {
            return Ok(id);
        }
        let errno = std::io::Error::last_os_error();
        let refused = matches!(
            errno.raw_os_error(),
            Some(libc::EINVAL | libc::EPERM | libc::EPROTO | libc::ENOSPC)
        );
        let message = f.error(errno);
        Err(if refused {
            SubmitError::Refused(message)
        } else {
            SubmitError::Failed(message)
        })
    }

    /// Watches job `id`'s eventlog from its first entry.
    pub(crate) fn watch(&self, id: u64) -> Result<Watch, String> {
        // SAFETY: a live handle, the main eventlog, no flags.
        let f = unsafe { (self.lib.job_event_watch)(self.h.as_ptr(), id, c"eventlog".as_ptr(), 0) };
        Ok(Watch {
            future: Future::new(self.lib, f, "flux_job_event_watch")?,
        })
    }

    /// Cancels job `id` (Flux sends its tasks SIGTERM, then SIGKILL after its kill-timeout).
    pub(crate) fn cancel(&self, id: u64, reason: &str) -> Result<(), String> {
        let reason = CString::new(reason).unwrap_or_default();
        // SAFETY: a live handle and a NUL-terminated reason.
        let f = unsafe { (self.lib.job_cancel)(self.h.as_ptr(), id, reason.as_ptr()) };
        Future::new(self.lib, f, "flux_job_cancel")?.get()
    }

    /// Sends `signal` to job `id`'s tasks.
    pub(crate) fn kill(&self, id: u64, signal: i32) -> Result<(), String> {
        // SAFETY: a live handle.
        let f = unsafe { (self.lib.job_kill)(self.h.as_ptr(), id, signal) };
        Future::new(self.lib, f, "flux_job_kill")?.get()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle flux_open returned, closed once.
        unsafe { (self.lib.close)(self.h.as_ptr()) }
    }
}

/// Whether jobs can be submitted through libflux here: `Err` says why not (the library is
/// missing, or the instance cannot be reached through it).
pub(crate) fn probe() -> Result<(), String> {
    with_thread_handle(|_| Ok(()))
}

thread_local! {
    static THREAD_HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's handle, opened on first use and kept for the thread's next
/// tasks; dropped (and opened again next time) after an error, which may be a lost
/// connection.
pub(crate) fn with_thread_handle<T>(
    f: impl FnOnce(&Handle) -> Result<T, String>,
) -> Result<T, String> {
    THREAD_HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Handle::open()?);
        }
        let handle = slot.as_ref().expect("opened above");
        let r = f(handle);
        if r.is_err() {
            *slot = None;
        }
        r
    })
}

/// The handle of cancels from threads that do not own the job's handle.
static CONTROL: Mutex<Option<Handle>> = Mutex::new(None);

/// Cancels job `id` from any thread, with `reason` in its exception note.
pub(crate) fn cancel(id: u64, reason: &str) -> Result<(), String> {
    let mut slot = CONTROL.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(Handle::open()?);
    }
    let r = slot.as_ref().expect("opened above").cancel(id, reason);
    if r.is_err() {
        *slot = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_looked_for_next_to_each_flux_on_path_then_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (wrapper, install) = (dir.path().join("wrap/bin"), dir.path().join("opt/bin"));
        for d in [&wrapper, &install, &dir.path().join("opt/lib")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(wrapper.join("flux"), "#!/bin/sh\n").unwrap();
        std::fs::write(install.join("flux"), "").unwrap();
        std::fs::write(dir.path().join("opt/lib").join(SONAME), "").unwrap();
        let path = std::env::join_paths([&wrapper, &install]).unwrap();
        let found = candidates(Some(&path));
        assert_eq!(
            found,
            [
                install.join("..").join("lib").join(SONAME),
                PathBuf::from(SONAME)
            ]
        );
        assert_eq!(candidates(None), [PathBuf::from(SONAME)]);
    }

    #[test]
    fn an_eventlog_entry_reads_as_flux_writes_it() {
        // Entries flux-core 0.88 wrote.
        let e: Event = serde_json::from_str(
            r#"{"timestamp":1796574293.259832,"name":"finish","context":{"status":768}}"#,
        )
        .unwrap();
        assert_eq!(
            (e.name.as_str(), &e.context["status"]),
            ("finish", &serde_json::json!(768))
        );
        let e: Event = serde_json::from_str(r#"{"timestamp":1.5,"name":"start"}"#).unwrap();
        assert_eq!((e.name.as_str(), e.context.is_null()), ("start", true));
    }
}
