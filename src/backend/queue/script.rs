//! The bash that runs tasks inside a batch job (Slurm, Flux): one body per task, and a line
//! of a tasks file per element for job arrays and packed jobs. Pure functions; the job script's header comes from the
//! template (`crate::template`).

use std::path::Path;

use crate::backend::scheduler::WarningReach;
use crate::task::{TaskKind, TaskSpec};
use crate::template::{ansi_c_quote, shell_quote as q};

/// What a job script needs to know about one task.
pub(crate) struct TaskBody<'a> {
    pub spec: &'a TaskSpec,
    /// The task's standard output and error files (from the store, where the jobs see them).
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// The task's result file (a function task's worker writes it).
    pub result: &'a Path,
    /// The file the task's exit status goes to (a command's always, a function task's when
    /// its worker left no result), and the prefix of its temporary name.
    pub exit: &'a Path,
    pub exit_tmp: &'a Path,
    /// The cache directory.
    pub cache: &'a Path,
    /// The staged worker binary (function tasks).
    pub exe: Option<&'a Path>,
    /// Whether the worker fsyncs its result.
    pub durable: bool,
    /// Whether the cache directory trusts its group (`trust_group`): the worker checks the
    /// cache directory again with the same policy.
    pub trust_group: bool,
    /// The prefix that starts a multi-rank task's ranks (`srun --ntasks=N ...`).
    pub rank_launcher: &'a str,
    /// How the scheduler's warning before the time limit reaches the job, when the task has
    /// one (`checkpoint_grace`); see [`warning_prelude`].
    pub warning: Option<WarningReach>,
}

fn p(path: &Path) -> String {
    q(&path.display().to_string())
}

/// A file the user named, for the shell once it has entered the task directory: a relative
/// path is taken from the job's own working directory (`$pitch_w`), as before.
fn named(path: &Path) -> String {
    if path.is_absolute() {
        p(path)
    } else {
        format!("\"$pitch_w\"/{}", p(path))
    }
}

/// The exit status of a job whose task directory was refused ([`ENTER`]); the worker's
/// for a refused cache directory too.
pub(crate) const REFUSED_EXIT_CODE: i32 = 3;

/// `pitch_enter ROOT NAME...`: enters the task directory `ROOT/NAME/...` one level at a time
/// (`cd -P`, so that the shell's working directory is a handle on the directory itself),
/// never through a link: each level must not be a symbolic link (`-L`), and once there the
/// physical working directory (`pwd -P`, from the kernel) must be exactly the levels entered
/// below the root's, so that a level swapped for a link between its check and the `cd` is
/// caught. Each directory entered, the root too, must be the user's (`-O`) and not writable
/// by others, nor by its group unless that is the user's private group (named like the user,
/// the user's primary group) or `pitch_tg=1` (`trust_group`): the rules of `crate::trust`
/// (which the driver, and a function task's worker, apply too). The task's files are then
/// written relative to it. A refusal sets `pitch_why`, naming the path. (`./NAME`: a
/// relative `cd` would search `CDPATH`.)
const ENTER: &str = r#"pitch_own() {
  local m o g
  read -r m _ o g _ <<< "$(LC_ALL=C ls -ld .)"
  if [ ! -O . ]; then pitch_why="$1 is owned by $o, not by you; pitch uses only a cache directory of yours"; return 1; fi
  case $m in ????????w*) pitch_why="$1 is writable by every user (mode $m): anyone could replace pitch's files"; return 1;; esac
  case $m in ?????w*) if [ "${pitch_tg:-0}" != 1 ] && { [ "$g" != "$(id -un)" ] || [ "$g" != "$(id -gn)" ]; }; then pitch_why="$1 is writable by its group $g (mode $m): any member could replace pitch's files (trust_group allows it)"; return 1; fi;; esac
}
pitch_enter() {
  local d=$1 r n
  shift
  cd -P -- "$d" || { pitch_why="$d cannot be entered"; return 1; }
  pitch_own "$d" || return 1
  r=$(pwd -P) || return 1
  for n in "$@"; do
    d=$d/$n
    if [ -L "./$n" ]; then pitch_why="$d is a symbolic link; pitch does not follow links in its cache directory"; return 1; fi
    if [ ! -d "./$n" ]; then pitch_why="$d is not a directory"; return 1; fi
    cd -P -- "./$n" || { pitch_why="$d cannot be entered"; return 1; }
    pitch_own "$d" || return 1
    r=$r/$n
  done
  if [ "$(pwd -P)" != "$r" ]; then pitch_why="$d is not the directory that was checked (a level was replaced meanwhile)"; return 1; fi
}
"#;

/// The bash functions a job script needs when the scheduler warns its tasks with SIGUSR1
/// before the time limit (`checkpoint_grace`), and the trap.
///
/// `pitch_warn`, the trap: where only the batch shell gets the signal (Slurm's `B:`), the
/// batch shell itself (never a subshell of it: `$BASHPID = $$`) passes it on to its process
/// group: the tasks it runs, a command's own children, an `srun` (which passes it on to its
/// step's tasks). Its own copy is ignored meanwhile, so it is passed on once. Where the
/// process group gets it anyway (Flux) the trap only keeps the shell alive (a shell without
/// a trap dies of it).
///
/// `pitch_wait PID [FILE]`: waits for a job started in the background and sets `code` to its
/// exit status, as a foreground run would have. Tasks run in the background because bash runs
/// a trap only once its foreground command has ended (too late to pass the warning on),
/// while `wait` returns at once for a trapped signal, with a status above 128: then, while the
/// job runs, it waits again. A job that ends just as the trap interrupts `wait` may be reaped
/// with its status lost (bash then answers -1), so a job that can writes its own status to
/// FILE, which wins when it is there.
pub(crate) fn warning_prelude(reach: WarningReach) -> String {
    let warn = match reach {
        WarningReach::BatchShell => {
            "pitch_warn() { if [ \"$BASHPID\" = \"$$\" ]; then trap '' USR1; kill -USR1 0 2>/dev/null; trap pitch_warn USR1; fi; }"
        }
        WarningReach::ProcessGroup => "pitch_warn() { :; }",
    };
    let lines = [
        warn,
        "pitch_wait() {",
        "  while :; do",
        "    wait \"$1\" 2>/dev/null; code=$?",
        "    [ \"$code\" -gt 128 ] && kill -0 \"$1\" 2>/dev/null || break",
        "  done",
        "  if [ -n \"${2:-}\" ]; then",
        "    if [ -s \"$2\" ]; then read -r code < \"$2\"; fi",
        "    rm -f \"$2\"",
        "  fi",
        "}",
        "trap pitch_warn USR1",
    ];
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// How a task's subshell is started and waited for: in the foreground, or (with a warning
/// before the time limit) in the background, inside a shell that traps the warning (so that
/// it survives it) and writes the task's status to `code_file` for [`warning_prelude`]'s
/// `pitch_wait`. The task's own subshell traps the warning too until it `exec`s the task, so
/// that no shell of pitch's dies of it; the task itself gets it with its default action, or
/// its own handler.
struct Run {
    open: String,
    close: String,
    wait: String,
}

impl Run {
    fn new(warned: bool, code_file: &str) -> Run {
        if warned {
            Run {
                open: "( trap : USR1; ( trap : USR1; ".into(),
                close: format!(" ); c=$?; echo \"$c\" > {code_file}; exit \"$c\" )"),
                wait: format!(" &\npitch_wait $! {code_file}"),
            }
        } else {
            Run {
                open: "( ".into(),
                close: " )".into(),
                wait: "\ncode=$?".into(),
            }
        }
    }
}

/// `pitch_open FD PATH`: opens a file the user named for a command's output on descriptor
/// FD, as a shell's `>` would but never through a link (the rules of
/// `output::open_named`): a missing file is created under `noclobber` (`O_EXCL`, which does
/// not follow a link planted meanwhile); a regular file of this user's or a character device
/// (`/dev/null`) is opened for appending; a link or anything else is refused. Once open, the
/// path must still not be a link and must name the very file opened (`-ef` against
/// `/proc/self/fd/FD`), so a link planted between the check and the open is caught; only then
/// is a regular file truncated, through its descriptor. Runs under `set -C`.
const OPEN_NAMED: &str = r#"pitch_open() {
  if [ -L "$2" ]; then return 1
  elif [ -e "$2" ]; then
    if [ -c "$2" ] || { [ -f "$2" ] && [ -O "$2" ]; }; then eval "exec $1>>\"\$2\"" || return 1; else return 1; fi
  else eval "exec $1>\"\$2\"" || return 1
  fi
  if [ -L "$2" ] || ! [ "$2" -ef "/proc/self/fd/$1" ]; then eval "exec $1>&-"; return 1; fi
  if [ -f "/proc/self/fd/$1" ]; then : >| "/proc/self/fd/$1" || return 1; fi
}
"#;

/// The bash lines that run one task and leave its result in its directory: the worker
/// writes the result file; a command's exit status goes to the exit file (atomically, by
/// rename), and so does a worker's that left no result (it exited or was killed before
/// writing one): what the task itself did, apart from what the scheduler did to the job.
/// A command that could not be executed (not found, not executable) is recorded as
/// `exec:<bash's code>`: bash's `execfail` keeps the subshell alive to say so, where its exit
/// code alone (127, 126) could be the program's own.
///
/// The shell first enters the task directory ([`ENTER`]: level by level from the cache
/// directory, never through a link, its physical path checked once there) and writes the
/// task's files relative to it, so that a link planted on the way (`tasks/`, the shard, the
/// task's directory) is refused, naming it, with exit status [`REFUSED_EXIT_CODE`] and nothing
/// run or written (the driver, reading the task's files through its own checked handles,
/// refuses it too). The task itself runs where the job started (`$pitch_w`), or in its
/// working directory, as before; a relative output file the user named is the job's
/// directory's too. What goes wrong before the command runs is written to `failed` on a
/// descriptor opened in the task directory.
///
/// The task directory's `stdout` and `stderr` are removed first and then created under
/// bash's `noclobber` (`set -C`, which opens with `O_EXCL`): a link planted there is removed,
/// not written through, and one planted in between fails the redirection instead of being
/// followed. Output files the user named are opened by [`OPEN_NAMED`]'s `pitch_open`: never
/// through a link, as SingleNode opens them (`output::open_named`). The exit file is written
/// under a temporary name removed first and created under `noclobber` too, then renamed.
///
/// With a warning before the time limit ([`TaskBody::warning`]) the task runs in the
/// background under [`warning_prelude`]'s trap, started by `exec` from a subshell that traps
/// the signal until then (so that no shell of pitch's stands between the signal and the task,
/// and a command still gets the signal's default action, or its own trap); its exit status
/// is the same.
pub(crate) fn task_body(t: &TaskBody<'_>) -> String {
    let spec = t.spec;
    // The task directory, as the names to enter below the cache directory, and its files by
    // name, relative to it.
    let dir = t
        .exit
        .parent()
        .expect("the exit file is in the task directory");
    let levels: Vec<String> = dir
        .strip_prefix(t.cache)
        .expect("the task directory is below the cache directory")
        .components()
        .map(|c| q(&c.as_os_str().to_string_lossy()))
        .collect();
    let name = |path: &Path| {
        debug_assert_eq!(path.parent(), Some(dir), "{path:?} is not in {dir:?}");
        q(&path
            .file_name()
            .expect("a task directory's file has a name")
            .to_string_lossy())
    };
    let (out_file, err_file) = (name(t.stdout), name(t.stderr));
    let (result, exit, tmp) = (name(t.result), name(t.exit), name(t.exit_tmp));
    let mut out = String::new();
    out.push_str(ENTER);
    // A relative cache directory (a remote one, from the login's home) as `./...`, which
    // `cd` does not look up in `CDPATH`.
    // (Its components, without a trailing `/`, for the messages' paths.)
    let cache: std::path::PathBuf = t.cache.components().collect();
    let root = if cache.is_absolute() {
        p(&cache)
    } else {
        p(&Path::new(".").join(&cache))
    };
    out.push_str(&format!(
        "pitch_w=$PWD{tg}\npitch_enter {root} {levels} || {{ echo \"pitch: refusing the task directory: $pitch_why; the task does not run\" >&2; exit {REFUSED_EXIT_CODE}; }}\n",
        tg = if t.trust_group { "; pitch_tg=1" } else { "" },
        levels = levels.join(" "),
    ));
    if let Some(reach) = t.warning {
        out.push_str(&warning_prelude(reach));
    }
    let code_file = format!("{tmp}.code");
    let Run { open, close, wait } = Run::new(t.warning.is_some(), &code_file);
    let exec = if t.warning.is_some() { "exec " } else { "" };
    let fresh_code = if t.warning.is_some() {
        format!(" {code_file}")
    } else {
        String::new()
    };
    let exports: String = spec
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}; ", q(v)))
        .collect();
    let launcher = if spec.ranks > 1 {
        format!("{} ", t.rank_launcher)
    } else {
        String::new()
    };
    match &spec.kind {
        TaskKind::Function { .. } => {
            let exe = p(t.exe.expect("function tasks have a staged binary"));
            // The worker runs where the job started, or in the task's working directory.
            let cd = match &spec.cwd {
                Some(c) => format!("cd {} && ", p(c)),
                None => "cd -- \"$pitch_w\" && ".to_string(),
            };
            // The job's exit status is the task's, so `afterok` holds back dependents of a
            // failed task.
            let durable = match (t.durable, t.trust_group) {
                (false, false) => "",
                (true, false) => "export PITCH_DURABLE=1; ",
                (false, true) => "export PITCH_TRUST_GROUP=1; ",
                (true, true) => "export PITCH_DURABLE=1 PITCH_TRUST_GROUP=1; ",
            };
            // Finished already: a job Slurm requeued (node failure, preemption) runs again
            // from its start, and a packed job's finished tasks must not run twice (nor lose
            // their output files). Only asked when a result file is there.
            out.push_str(&format!(
                "if [ -e {result} ] && {exe} __pitch-worker finished {cache} {key}; then exit 0; fi\n",
                cache = p(t.cache),
                key = spec.key,
            ));
            out.push_str(&format!(
                "rm -f {out_file} {err_file}{fresh_code}; set -C\n{open}{exports}export PITCH_WORKER=1; {durable}{cd}{exec}{launcher}{exe} __pitch-worker run {cache} {key}{close} > {out_file} 2> {err_file}{wait}; set +C\n",
                cache = p(t.cache),
                key = spec.key,
            ));
            if spec.ranks > 1 {
                out.push_str(&format!(
                    "{exe} __pitch-worker gather {} {} {}; code=$?\n",
                    p(t.cache),
                    spec.key,
                    spec.ranks
                ));
            }
            // No result here, on the node that ran the worker: the result will not come
            // later (over NFS) either, and the worker's own status says why.
            out.push_str(&format!(
                "[ -e {result} ] || {{ rm -f {tmp}.$$; set -C; printf '%s\\n' \"$code\" > {tmp}.$$ && mv -f {tmp}.$$ {exit}; set +C; }}\n",
            ));
            for f in [&out_file, &err_file] {
                out.push_str(&format!("[ -s {f} ] || rm -f {f}\n"));
            }
            out.push_str("exit \"$code\"\n");
        }
        TaskKind::Command(c) => {
            let own_env: String = c
                .env
                .iter()
                .map(|(k, v)| format!("export {k}={}; ", q(v)))
                .collect();
            let argv: Vec<String> = std::iter::once(&c.program)
                .chain(c.args.iter())
                .map(|a| q(a))
                .collect();
            // The task directory's files are made fresh (see above); the user's are clobbered.
            let own: Vec<&str> = [(&c.stdout, &out_file), (&c.stderr, &err_file)]
                .into_iter()
                .filter(|(named, _)| named.is_none())
                .map(|(_, f)| f.as_str())
                .collect();
            let fresh = if own.is_empty() {
                String::new()
            } else {
                format!("rm -f {}; ", own.join(" "))
            };
            // What went wrong before the command ran (see below) is written on descriptor 7
            // to the file `failed`, created fresh in the task directory.
            let failed = format!("{tmp}.failed");
            // The files the user named are opened by `pitch_open` (see [`OPEN_NAMED`]) on
            // descriptors 8 and 9 before the command runs; one it refuses is recorded as
            // `output:stdout` or `output:stderr` and the command does not run.
            let named_files: Vec<(u8, &std::path::Path, &str)> = [
                (8, c.stdout.as_deref(), "stdout"),
                (9, c.stderr.as_deref(), "stderr"),
            ]
            .into_iter()
            .filter_map(|(fd, path, which)| path.map(|p| (fd, p, which)))
            .collect();
            let target = |fd: u8, file: &str, is_named: bool| {
                if is_named {
                    format!(">&{fd}")
                } else {
                    format!("> {file}")
                }
            };
            let (out_to, err_to) = (
                target(8, &out_file, c.stdout.is_some()),
                target(9, &err_file, c.stderr.is_some()),
            );
            let (opens, closes, run_if, run_else) = if named_files.is_empty() {
                Default::default()
            } else {
                out.push_str(OPEN_NAMED);
                let mut opens = "pitch_o=0".to_string();
                let mut closes = String::new();
                for (fd, path, which) in &named_files {
                    opens.push_str(&format!(
                        "; [ $pitch_o = 1 ] || pitch_open {fd} {} || {{ pitch_o=1; echo output:{which} > {failed}; }}",
                        named(path),
                    ));
                    closes.push_str(&format!(" {fd}>&-"));
                }
                (
                    format!("{opens}\n"),
                    closes.clone(),
                    "if [ $pitch_o = 0 ]; then\n".to_string(),
                    format!("\nelse code=1; fi; exec{closes}"),
                )
            };
            // Finished already (its exit file says 0: written by this job's earlier run, as
            // an earlier submission's is removed before it is submitted): a job Slurm
            // requeued runs again from its start; the command does not run twice.
            out.push_str(&format!(
                "if [ -e {exit} ] && read -r pitch_c _ < {exit} && [ \"$pitch_c\" = 0 ]; then exit 0; fi\n",
            ));
            // The exit file holds "CODE START END", the times in microseconds since the epoch
            // from bash's EPOCHREALTIME (bash 5; with an older bash they are left out). The
            // locale may write the seconds' decimal point as a comma: it is dropped either way.
            out.push_str("s=${EPOCHREALTIME:-}; s=${s/[.,]/}\n");
            // The command runs where the job started, or in the task's working directory. A
            // working directory that is not there, or a program that cannot be executed, is
            // written to `failed` (`cwd`, `exec:<code>`) and becomes the exit file's first
            // field instead of the code.
            let cd = match &spec.cwd {
                Some(c) => format!("cd {} || {{ echo cwd >&7; exit 1; }}; ", p(c)),
                None => "cd -- \"$pitch_w\" || { echo cwd >&7; exit 1; }; ".to_string(),
            };
            // The program is looked up as `exec` will (bash's `execfail` does not keep a
            // subshell alive): missing is `exec:127`, not executable `exec:126`.
            let find = if c.program.contains('/') {
                format!("pitch_p={}", q(&c.program))
            } else {
                format!("pitch_p=$(type -P {})", q(&c.program))
            };
            let check = format!(
                "{find}; if [ -z \"$pitch_p\" ] || [ ! -e \"$pitch_p\" ]; then echo \"pitch: {prog}: not found\" >&2; echo exec:127 >&7; exit 127; fi; \
                 if [ ! -f \"$pitch_p\" ] || [ ! -x \"$pitch_p\" ]; then echo \"pitch: {prog}: Permission denied\" >&2; echo exec:126 >&7; exit 126; fi; ",
                prog = c.program.replace(['"', '\\', '$', '`'], "?"),
            );
            out.push_str(&format!(
                "rm -f {failed}{fresh_code}; {fresh}set -C\n{opens}{run_if}{open}{exports}{own_env}{cd}{check}exec {launcher}{} 7>&-{closes}{close} 7> {failed} {out_to} 2{err_to}{wait}{run_else}",
                argv.join(" "),
            ));
            out.push_str(&format!(
                "; e=${{EPOCHREALTIME:-}}; e=${{e/[.,]/}}; w=$code; if [ -s {failed} ]; then read -r w < {failed} || w=$code; fi; rm -f {failed} {tmp}.$$; printf '%s %s %s\\n' \"$w\" \"$s\" \"$e\" > {tmp}.$$ && mv -f {tmp}.$$ {exit}; set +C\n",
            ));
            if c.stdout.is_none() {
                out.push_str(&format!("[ -s {out_file} ] || rm -f {out_file}\n"));
            }
            if c.stderr.is_none() {
                out.push_str(&format!("[ -s {err_file} ] || rm -f {err_file}\n"));
            }
            out.push_str("exit \"$code\"\n");
        }
    }
    out
}

/// The tasks file of an array job: one line per task, so an element reads only its own line
/// instead of bash parsing every task's body. Each line is the task's whole body as one
/// `$'...'` word ([`ansi_c_quote`]): a value with a newline, a tab or a quote arrives
/// byte-identical (joining the body's lines would have turned `a\nb` into `a; b`).
pub(crate) fn tasks_file(bodies: &[String]) -> String {
    let mut out = String::new();
    for body in bodies {
        out.push_str(&ansi_c_quote(body));
        out.push('\n');
    }
    out
}

/// Reads line `$1 + 1` of the tasks file, decodes its `$'...'` word and runs the body.
fn run_line(tasks: &Path) -> String {
    format!(
        "pitch_task() {{\n  local line\n  line=$(sed -n \"$(($1 + 1)){{p;q;}}\" {})\n  if [ -z \"$line\" ]; then echo \"pitch: the tasks file has no task $1\" >&2; exit 2; fi\n  eval \"line=$line\"\n  eval \"$line\"\n}}\n",
        p(tasks)
    )
}

/// The body of an array job: element `i` (the shell expression `index`, e.g.
/// `$SLURM_ARRAY_TASK_ID`) runs line `i` of the tasks file.
pub(crate) fn array_body(tasks: &Path, index: &str) -> String {
    format!("{}pitch_task \"{index}\"\n", run_line(tasks))
}

/// The body of a packed job: element `i` (the shell expression `index`) runs tasks
/// `i*per_job ..` of the tasks file (`n` tasks in all), in parallel up to the element's CPUs
/// (the shell expression `cpus`) divided by each task's `threads`; the element fails when any
/// of its tasks failed. With a warning before the time limit (`warning`), the element's
/// shell traps it ([`warning_prelude`]: on Slurm it passes it on to every task running at
/// that moment) and waits for its tasks through it.
pub(crate) fn packed_body(
    tasks: &Path,
    n: usize,
    per_job: usize,
    threads: u32,
    index: &str,
    cpus: &str,
    warning: Option<WarningReach>,
) -> String {
    let mut out = run_line(tasks);
    // With a warning, each task's shell traps it until its body does; which tasks failed is
    // noted in a file (a status `wait` may lose, see `warning_prelude`).
    let (start, wait, rc) = match warning {
        Some(reach) => {
            out.push_str(&warning_prelude(reach));
            out.push_str("pitch_failed=$(mktemp) || exit 1\n");
            (
                "( trap : USR1; ( trap : USR1; pitch_task \"$t\" ) || echo \"$t\" >> \"$pitch_failed\" ) &",
                "pitch_wait \"$p\"",
                "\n[ -s \"$pitch_failed\" ] && rc=1; rm -f \"$pitch_failed\"",
            )
        }
        None => ("( pitch_task \"$t\" ) &", "wait \"$p\" || rc=1", ""),
    };
    out.push_str(&format!(
        "first=$(({index} * {per_job}))\n\
         last=$((first + {per_job} - 1)); [ \"$last\" -lt {n} ] || last={last}\n\
         slots=$(( {cpus} / {threads} )); [ \"$slots\" -ge 1 ] || slots=1\n\
         pids=()\n\
         for ((t = first; t <= last; t++)); do\n\
         \x20 while [ \"$(jobs -rp | wc -l)\" -ge \"$slots\" ]; do wait -n || true; done\n\
         \x20 {start}\n\
         \x20 pids+=($!)\n\
         done\n\
         rc=0\n\
         for p in \"${{pids[@]}}\"; do {wait}; done{rc}\n\
         exit \"$rc\"\n",
        last = n.saturating_sub(1),
    ));
    out
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
