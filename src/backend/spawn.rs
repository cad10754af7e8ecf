//! Starting a task's child process with `posix_spawn(3)` directly, for the process backends.
//!
//! `std::process::Command` does the same through glibc, but per spawn it copies the whole
//! environment into a map once any variable is set (every task sets a few), opens
//! `/dev/null` again, and glibc's child asks for the disposition of each of the 64 signals
//! before it resets it. Here the environment block points into the process's own environment
//! plus the task's variables, `/dev/null` is opened once, and the signals to reset are worked
//! out once per process: with thousands of short tasks this is a measurable part of the
//! driver's work (see `benches/`).
//!
//! The child gets `/dev/null` as standard input, a pipe each for standard output and error,
//! an empty signal mask, every signal that is not ignored in the driver (and SIGPIPE, which
//! Rust ignores) back to its default, and its own process group.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;

/// What to start.
pub(crate) struct Launch<'a> {
    /// A path, or a name looked up on `PATH` (the task's own `PATH` when it sets one).
    pub program: &'a str,
    pub args: &'a [String],
    /// Variables set on top of the driver's environment; a later one wins.
    pub env: &'a [(&'a str, &'a str)],
    pub cwd: Option<&'a Path>,
}

/// A started child: its pid and the read ends of its output pipes. Reap it with
/// [`Child::wait`] (or [`Child::try_wait`]); it is not reaped on drop.
#[derive(Debug)]
pub(crate) struct Child {
    pid: u32,
    status: Option<ExitStatus>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl Child {
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Blocks until the child exits and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        self.wait_flags(0)
            .map(|s| s.expect("waitpid without WNOHANG returns a status"))
    }

    /// Reaps the child if it has exited.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_flags(libc::WNOHANG)
    }

    fn wait_flags(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid(2) on our own child's pid with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut raw, flags) };
            if rc > 0 {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if rc == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// What every spawn shares: `/dev/null` and the signals to reset, worked out once.
struct Shared {
    devnull: OwnedFd,
    sigdefault: libc::sigset_t,
}

// SAFETY: sigset_t is plain data, only read after initialisation.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

fn shared() -> io::Result<&'static Shared> {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    if let Some(s) = SHARED.get() {
        return Ok(s);
    }
    // SAFETY: open(2) with a valid C string; the result is checked.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let devnull = above_stdio(unsafe { OwnedFd::from_raw_fd(fd) })?;
    // SAFETY: sigemptyset/sigaddset/sigaction on a local set and valid pointers; sigaddset
    // refuses glibc's internal signals, which glibc's child then handles itself.
    let sigdefault = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..=last_signal() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue; // always at their default
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
            {
                libc::sigaddset(&mut set, sig);
            }
        }
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    };
    Ok(SHARED.get_or_init(|| Shared {
        devnull,
        sigdefault,
    }))
}

/// The highest signal number to reset in the child.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
fn last_signal() -> libc::c_int {
    libc::SIGRTMAX()
}

/// The highest signal number to reset in the child: the classic signals 1 to 31 (macOS has
/// no others; on Linux this leaves out the real-time signals, which a driver rarely ignores).
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn last_signal() -> libc::c_int {
    31
}

/// `fd` moved to a number above 2 when it is one of the standard streams (a driver started
/// with them closed), so that the child's dup2 onto 0-2 never clobbers another source.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl(2) F_DUPFD_CLOEXEC on a descriptor we own; the result is checked.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// A close-on-exec pipe: (read end, write end).
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2(2) fills two descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// A close-on-exec pipe: (read end, write end). Without pipe2(2) the flag is set after the
/// pipe exists, so this holds [`SPAWN_LOCK`]: no child of ours is spawned meanwhile that
/// could inherit the descriptors (and hold another task's pipe open until it exits).
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe(2) fills two descriptors into a valid array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&r, &w] {
        // SAFETY: fcntl(2) F_SETFD on a descriptor we own; the result is checked.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// Held while a pipe lacks its close-on-exec flag and while a child is spawned (portable
/// path only: pipe2(2) sets the flag as it creates the pipe).
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn c_string(what: &str, bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// A regular file this process may execute (access(2) X_OK alone accepts directories).
fn is_executable_file(path: &Path) -> bool {
    let Ok(c) = c_string("path", path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) with a valid C string.
    let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    executable && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// The program's path: as given when it has a slash, else the first executable file of that
/// name on `PATH` (the task's, from `env`, else the driver's); relative entries are taken from
/// the child's working directory. `NotFound` when there is none.
fn resolve(program: &str, env: &[(&str, &str)], cwd: Option<&Path>) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let not_found = || io::Error::new(io::ErrorKind::NotFound, "not found on PATH");
    if program.is_empty() {
        return Err(not_found());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(if dir.is_empty() { b"." } else { dir }));
        let candidate = match cwd {
            Some(cwd) if dir.is_relative() => cwd.join(dir).join(program),
            _ => dir.join(program),
        };
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(not_found())
}

#[cfg(not(target_vendor = "apple"))]
extern "C" {
    static environ: *const *const libc::c_char;
}

/// The process environment: `environ`, which Apple's linker only promises to executables.
fn environment() -> *const *const libc::c_char {
    #[cfg(target_vendor = "apple")]
    // SAFETY: _NSGetEnviron returns a valid pointer to the environment pointer.
    unsafe {
        *libc::_NSGetEnviron() as *const *const libc::c_char
    }
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: reading the pointer itself; see spawn for reading what it points to.
    unsafe {
        environ
    }
}

/// The name part of an environment entry `NAME=value`.
fn entry_name(entry: &[u8]) -> &[u8] {
    let end = entry.iter().position(|&b| b == b'=').unwrap_or(entry.len());
    &entry[..end]
}

/// Spawns `launch` with standard input from `/dev/null` and piped output.
#[cfg(test)]
pub(crate) fn spawn(launch: &Launch) -> io::Result<Child> {
    spawn_with(launch, false)
}

/// Spawns `launch` with piped output, and standard input from `/dev/null`, or with `stdin`
/// this process's own when it is not a terminal (the child leads a process group of its own:
/// reading a terminal would stop it).
pub(crate) fn spawn_with(launch: &Launch, stdin: bool) -> io::Result<Child> {
    // SAFETY: isatty on descriptor 0.
    let stdin = stdin && unsafe { libc::isatty(0) } == 0;
    let shared = shared()?;
    let mut overrides: Vec<CString> = Vec::with_capacity(launch.env.len());
    let mut names: Vec<&[u8]> = Vec::with_capacity(launch.env.len());
    for (i, (k, v)) in launch.env.iter().enumerate() {
        if k.is_empty() || k.contains('=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("environment variable name {k:?} is empty or contains '='"),
            ));
        }
        // A later setting of the same name wins.
        if launch.env[i + 1..].iter().any(|(later, _)| later == k) {
            continue;
        }
        overrides.push(c_string(
            &format!("environment variable {k}"),
            format!("{k}={v}"),
        )?);
        names.push(k.as_bytes());
    }
    let program = resolve(launch.program, launch.env, launch.cwd)?;
    let program = c_string("the program's path", program.into_os_string().into_vec())?;
    let mut args: Vec<CString> = Vec::with_capacity(launch.args.len() + 1);
    args.push(c_string("the program name", launch.program)?);
    for a in launch.args {
        args.push(c_string("an argument", a.as_str())?);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());

    // The environment block: the driver's entries not overridden, then the task's. It
    // points into the process environment as posix_spawn(3) callers in C do; changing the
    // environment from another thread meanwhile is undefined behaviour for any reader (which
    // is why Rust 2024 makes std::env::set_var unsafe).
    let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(64 + overrides.len());
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings.
    unsafe {
        let mut p = environment();
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            if !names.contains(&entry_name(entry)) {
                envp.push(*p);
            }
            p = p.add(1);
        }
    }
    envp.extend(overrides.iter().map(|o| o.as_ptr()));
    envp.push(std::ptr::null());

    let cwd = match launch.cwd {
        Some(dir) => Some(c_string(
            "the working directory",
            dir.as_os_str().as_bytes(),
        )?),
        None => None,
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; every pointer handed to posix_spawn (program, argv, envp, cwd, the sets) lives
    // until it returns; the descriptors are open.
    let rc = unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        libc::posix_spawn_file_actions_init(&mut actions);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        // Every step runs; the first failure, if any, is the error.
        let setup = [
            libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK
                    | libc::POSIX_SPAWN_SETSIGDEF
                    | libc::POSIX_SPAWN_SETPGROUP) as libc::c_short,
            ),
            libc::posix_spawnattr_setsigmask(&mut attr, &empty),
            libc::posix_spawnattr_setsigdefault(&mut attr, &shared.sigdefault),
            libc::posix_spawnattr_setpgroup(&mut attr, 0),
            if stdin {
                0
            } else {
                libc::posix_spawn_file_actions_adddup2(&mut actions, shared.devnull.as_raw_fd(), 0)
            },
            libc::posix_spawn_file_actions_adddup2(&mut actions, out_w.as_raw_fd(), 1),
            libc::posix_spawn_file_actions_adddup2(&mut actions, err_w.as_raw_fd(), 2),
            match &cwd {
                Some(dir) => libc::posix_spawn_file_actions_addchdir_np(&mut actions, dir.as_ptr()),
                None => 0,
            },
        ];
        let mut rc = setup.into_iter().find(|&r| r != 0).unwrap_or(0);
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    drop((out_w, err_w));
    Ok(Child {
        pid: pid as u32,
        status: None,
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(launch: &Launch) -> (ExitStatus, String, String) {
        let mut child = spawn(launch).unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (child.wait().unwrap(), out, err)
    }

    fn sh<'a>(script: &'a [String], env: &'a [(&'a str, &'a str)]) -> Launch<'a> {
        Launch {
            program: "sh",
            args: script,
            env,
            cwd: None,
        }
    }

    #[test]
    #[cfg(target_os = "linux")] // reads /proc
    fn output_status_and_process_group() {
        let script = [
            "-c".into(),
            "echo out; echo err >&2; [ \"$(readlink /proc/$$/fd/0)\" = /dev/null ] || exit 8; \
             set -- $(cat /proc/$$/stat); [ \"$5\" = $$ ] || exit 9; exit 3"
                .into(),
        ];
        let (status, out, err) = run(&sh(&script, &[]));
        // 8: stdin is not /dev/null; 9: not the leader of its own process group.
        assert_eq!(status.code(), Some(3));
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    }

    #[test]
    #[cfg(target_os = "linux")] // reads /proc
    fn signals_start_unblocked_and_sigpipe_at_its_default() {
        // The child reads its own status: a shell would show its own transient masks (dash
        // blocks every signal around its wait for a child).
        let args = ["/proc/self/status".to_string()];
        let launch = Launch {
            program: "cat",
            args: &args,
            env: &[],
            cwd: None,
        };
        let (status, out, _) = run(&launch);
        assert!(status.success());
        let mask = |field: &str| {
            let line = out.lines().find(|l| l.starts_with(field)).unwrap();
            u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "signals blocked in the child");
        // Rust ignores SIGPIPE in the driver; the child gets it back at its default.
        assert_eq!(
            mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE still ignored"
        );
    }

    #[test]
    #[cfg(target_os = "linux")] // reads /proc
    fn the_child_inherits_none_of_our_descriptors() {
        // Open pipes of ours (another task's output, an exit pipe) must not reach the child,
        // nor its own pipes' read ends or the shared /dev/null (the test process may have
        // inherited other descriptors from whoever started it: those are not ours).
        let open = pipe().unwrap();
        let script = ["-c".into(), "exec sleep 5".into()];
        let mut child = spawn(&sh(&script, &[])).unwrap();
        // posix_spawn may return before the kernel has closed the close-on-exec descriptors
        // of the exec it waited for: look once the shell has gone on to exec sleep.
        let start = std::time::Instant::now();
        while !std::fs::read(format!("/proc/{}/cmdline", child.id()))
            .unwrap_or_default()
            .starts_with(b"sleep")
        {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "no sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // An inherited descriptor keeps its number and points at the same object (for a
        // pipe `pipe:[inode]`): compared by both, since a number alone also matched the
        // dynamic loader's own short-lived descriptor 3 of `sleep` when our pipe was 3.
        let target = |pid: &str, fd: RawFd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|t| t.to_string_lossy().into_owned())
                .ok()
        };
        let pid = child.id().to_string();
        let fds: Vec<RawFd> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
            .collect();
        let ours: Vec<(RawFd, String)> = [
            open.0.as_raw_fd(),
            open.1.as_raw_fd(),
            child.stdout.as_ref().unwrap().as_raw_fd(),
            child.stderr.as_ref().unwrap().as_raw_fd(),
            shared().unwrap().devnull.as_raw_fd(),
        ]
        .iter()
        .map(|&fd| (fd, target("self", fd).unwrap()))
        .collect();
        let leaked: Vec<_> = ours
            .iter()
            .filter(|(fd, t)| target(&pid, *fd).as_ref() == Some(t))
            .collect();
        super::super::child::kill_group(child.id(), libc::SIGKILL);
        child.wait().unwrap();
        assert!(
            fds.contains(&0) && fds.contains(&1) && fds.contains(&2),
            "{fds:?}"
        );
        assert!(
            leaked.is_empty(),
            "inherited {leaked:?} (child has {fds:?})"
        );
    }

    #[test]
    fn environment_is_inherited_and_overridden_last_wins() {
        // No set_var here: other tests spawn meanwhile. PATH and HOME come from the driver.
        let path = std::env::var("PATH").unwrap();
        let script = [
            "-c".into(),
            "echo \"$PATH|$HOME|$PITCH_SPAWN_TEST\"; env | grep -c '^HOME='".into(),
        ];
        let env = [
            ("HOME", "first"),
            ("PITCH_SPAWN_TEST", "set"),
            ("HOME", "new"),
        ];
        let (status, out, _) = run(&sh(&script, &env));
        assert!(status.success());
        assert_eq!(out, format!("{path}|new|set\n1\n"));
    }

    #[test]
    fn working_directory_and_the_tasks_own_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("pitch-spawn-tool");
        std::fs::write(&tool, "#!/bin/sh\npwd\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // Not on the driver's PATH: found on the task's, a relative entry from the cwd.
        let path = "bin:/usr/bin:/bin".to_string();
        let launch = Launch {
            program: "pitch-spawn-tool",
            args: &[],
            env: &[("PATH", &path)],
            cwd: Some(dir.path()),
        };
        let (status, out, _) = run(&launch);
        assert!(status.success());
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(out.trim_end(), canonical.to_str().unwrap());
    }

    #[test]
    fn missing_programs_and_bad_input_are_errors() {
        let missing = Launch {
            program: "pitch-no-such-program-anywhere",
            args: &[],
            env: &[],
            cwd: None,
        };
        assert_eq!(spawn(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        let absolute = Launch {
            program: "/nonexistent/pitch-tool",
            ..missing
        };
        assert_eq!(
            spawn(&absolute).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let args = ["a\0b".to_string()];
        let nul = Launch {
            program: "true",
            args: &args,
            env: &[],
            cwd: None,
        };
        assert_eq!(spawn(&nul).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let bad_name = Launch {
            program: "true",
            args: &[],
            env: &[("A=B", "c")],
            cwd: None,
        };
        assert!(spawn(&bad_name).unwrap_err().to_string().contains("'='"));
        let no_dir = Launch {
            program: "true",
            args: &[],
            env: &[],
            cwd: Some(Path::new("/nonexistent/pitch-dir")),
        };
        assert!(spawn(&no_dir).is_err());
    }

    #[test]
    fn try_wait_reports_a_running_child_then_its_status_once_reaped() {
        let script = ["-c".into(), "exec sleep 0.2".into()];
        let mut child = spawn(&sh(&script, &[])).unwrap();
        assert!(child.try_wait().unwrap().is_none());
        assert!(child.wait().unwrap().success());
        assert!(child.try_wait().unwrap().unwrap().success());
    }
}
