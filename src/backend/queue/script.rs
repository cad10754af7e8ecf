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
    /// The prefix that starts a multi-rank task's ranks (`srun --ntasks=N ...`).
    pub rank_launcher: &'a str,
    /// How the scheduler's warning before the time limit reaches the job, when the task has
    /// one (`checkpoint_grace`); see [`warning_prelude`].
    pub warning: Option<WarningReach>,
}

fn p(path: &Path) -> String {
    q(&path.display().to_string())
}

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
                close: format!(" ); c=$?; echo \"$c\" >| {code_file}; exit \"$c\" )"),
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

/// The bash lines that run one task and leave its result in its directory: the worker
/// writes the result file; a command's exit status goes to the exit file (atomically, by
/// rename), and so does a worker's that left no result (it exited or was killed before
/// writing one): what the task itself did, apart from what the scheduler did to the job.
/// A command that could not be executed (not found, not executable) is recorded as
/// `exec:<bash's code>`: bash's `execfail` keeps the subshell alive to say so, where its exit
/// code alone (127, 126) could be the program's own.
///
/// The task directory's `stdout` and `stderr` are removed first and then created under
/// bash's `noclobber` (`set -C`, which opens with `O_EXCL`): a link planted there is removed,
/// not written through, and one planted in between fails the redirection instead of being
/// followed. Output files the user named are written with `>|`, as before (they may exist).
///
/// With a warning before the time limit ([`TaskBody::warning`]) the task runs in the
/// background under [`warning_prelude`]'s trap, started by `exec` from a subshell that traps
/// the signal until then (so that no shell of pitch's stands between the signal and the task,
/// and a command still gets the signal's default action, or its own trap); its exit status
/// is the same.
pub(crate) fn task_body(t: &TaskBody<'_>) -> String {
    let spec = t.spec;
    let (out_file, err_file) = (p(t.stdout), p(t.stderr));
    let mut out = String::new();
    if let Some(reach) = t.warning {
        out.push_str(&warning_prelude(reach));
    }
    let code_file = format!("{}.code", p(t.exit_tmp));
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
    let cd = spec
        .cwd
        .as_ref()
        .map(|c| format!("cd {} && ", p(c)))
        .unwrap_or_default();
    let launcher = if spec.ranks > 1 {
        format!("{} ", t.rank_launcher)
    } else {
        String::new()
    };
    match &spec.kind {
        TaskKind::Function { .. } => {
            let exe = p(t.exe.expect("function tasks have a staged binary"));
            // The job's exit status is the task's, so `afterok` holds back dependents of a
            // failed task.
            let durable = if t.durable {
                "export PITCH_DURABLE=1; "
            } else {
                ""
            };
            // Finished already: a job Slurm requeued (node failure, preemption) runs again
            // from its start, and a packed job's finished tasks must not run twice (nor lose
            // their output files). Only asked when a result file is there.
            out.push_str(&format!(
                "if [ -e {result} ] && {exe} __pitch-worker finished {cache} {key}; then exit 0; fi\n",
                result = p(t.result),
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
                "[ -e {result} ] || {{ printf '%s\\n' \"$code\" > {tmp}.$$ && mv -f {tmp}.$$ {exit}; }}\n",
                result = p(t.result),
                tmp = p(t.exit_tmp),
                exit = p(t.exit),
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
            let stdout = c
                .stdout
                .as_deref()
                .map(p)
                .unwrap_or_else(|| out_file.clone());
            let stderr = c
                .stderr
                .as_deref()
                .map(p)
                .unwrap_or_else(|| err_file.clone());
            // The task directory's files are made fresh (see above); the user's are clobbered.
            let own: Vec<&str> = [(&c.stdout, &stdout), (&c.stderr, &stderr)]
                .into_iter()
                .filter(|(named, _)| named.is_none())
                .map(|(_, f)| f.as_str())
                .collect();
            let fresh = if own.is_empty() {
                String::new()
            } else {
                format!("rm -f {}; ", own.join(" "))
            };
            let redirect = |named: &Option<std::path::PathBuf>| {
                if named.is_some() {
                    ">|"
                } else {
                    ">"
                }
            };
            // Finished already (its exit file says 0: written by this job's earlier run, as
            // an earlier submission's is removed before it is submitted): a job Slurm
            // requeued runs again from its start; the command does not run twice.
            out.push_str(&format!(
                "if [ -e {exit} ] && read -r pitch_c _ < {exit} && [ \"$pitch_c\" = 0 ]; then exit 0; fi\n",
                exit = p(t.exit),
            ));
            // The exit file holds "CODE START END", the times in microseconds since the epoch
            // from bash's EPOCHREALTIME (bash 5; with an older bash they are left out). The
            // locale may write the seconds' decimal point as a comma: it is dropped either way.
            out.push_str("s=${EPOCHREALTIME:-}; s=${s/[.,]/}\n");
            // A working directory that is not there, or a program that cannot be executed,
            // is written to `failed` (`cwd`, `exec:<code>`) and becomes the exit file's
            // first field instead of the code.
            let failed = format!("{}.failed", p(t.exit_tmp));
            let cd = spec
                .cwd
                .as_ref()
                .map(|c| format!("cd {} || {{ echo cwd >| {failed}; exit 1; }}; ", p(c)))
                .unwrap_or_default();
            // The program is looked up as `exec` will (bash's `execfail` does not keep a
            // subshell alive): missing is `exec:127`, not executable `exec:126`.
            let find = if c.program.contains('/') {
                format!("pitch_p={}", q(&c.program))
            } else {
                format!("pitch_p=$(type -P {})", q(&c.program))
            };
            let check = format!(
                "{find}; if [ -z \"$pitch_p\" ] || [ ! -e \"$pitch_p\" ]; then echo \"pitch: {prog}: not found\" >&2; echo exec:127 >| {failed}; exit 127; fi; \
                 if [ ! -f \"$pitch_p\" ] || [ ! -x \"$pitch_p\" ]; then echo \"pitch: {prog}: Permission denied\" >&2; echo exec:126 >| {failed}; exit 126; fi; ",
                prog = c.program.replace(['"', '\\', '$', '`'], "?"),
            );
            out.push_str(&format!(
                "rm -f {failed}{fresh_code}; {fresh}set -C\n{open}{exports}{own_env}{cd}{check}exec {launcher}{}{close} {} {stdout} 2{} {stderr}{wait}",
                argv.join(" "),
                redirect(&c.stdout),
                redirect(&c.stderr),
            ));
            out.push_str(&format!(
                "; set +C; e=${{EPOCHREALTIME:-}}; e=${{e/[.,]/}}; w=$code; if [ -e {failed} ]; then read -r w < {failed} || w=$code; rm -f {failed}; fi; printf '%s %s %s\\n' \"$w\" \"$s\" \"$e\" > {tmp}.$$ && mv -f {tmp}.$$ {exit}\n",
                tmp = p(t.exit_tmp),
                exit = p(t.exit),
            ));
            if c.stdout.is_none() {
                out.push_str(&format!("[ -s {stdout} ] || rm -f {stdout}\n"));
            }
            if c.stderr.is_none() {
                out.push_str(&format!("[ -s {stderr} ] || rm -f {stderr}\n"));
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
        "pitch_task() {{\n  local line\n  line=$(sed -n \"$(($1 + 1))p\" {})\n  if [ -z \"$line\" ]; then echo \"pitch: the tasks file has no task $1\" >&2; exit 2; fi\n  eval \"line=$line\"\n  eval \"$line\"\n}}\n",
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
mod tests {
    use super::*;
    use crate::store::{Store, TaskPaths};
    use crate::task::CommandSpec;
    use crate::task::{TaskKey, TaskSpec};
    use std::path::PathBuf;

    fn spec(kind: TaskKind, ranks: u32) -> TaskSpec {
        TaskSpec {
            key: TaskKey::explicit("k"),
            kind,
            ranks,
            threads: 1,
            env: vec![("OMP_NUM_THREADS".into(), "1".into())],
            cwd: None,
        }
    }

    /// The paths of a task in the cache directory `root`.
    fn task_paths(root: &Path) -> TaskPaths {
        Store::at(root.to_path_buf(), false).task(&TaskKey::explicit("k"))
    }

    /// The body of a one-rank command task `program args` whose files are `paths`.
    fn command_body(program: &str, args: &[&str], paths: &TaskPaths) -> String {
        warned_command_body(program, args, paths, None)
    }

    /// [`command_body`] with the scheduler's warning reaching the job as `warning`.
    fn warned_command_body(
        program: &str,
        args: &[&str],
        paths: &TaskPaths,
        warning: Option<WarningReach>,
    ) -> String {
        let s = spec(
            TaskKind::Command(CommandSpec {
                program: program.into(),
                args: args.iter().map(|a| a.to_string()).collect(),
                env: vec![],
                stdout: None,
                stderr: None,
                allow_failure: false,
            }),
            1,
        );
        task_body(&TaskBody {
            spec: &s,
            stdout: &paths.stdout(),
            stderr: &paths.stderr(),
            result: &paths.result_file(),
            exit: &paths.exit_file(),
            exit_tmp: &paths.exit_tmp(),
            cache: paths.root(),
            exe: None,
            durable: true,
            rank_launcher: "srun",
            warning,
        })
    }

    /// A command that says it is ready, then waits for SIGUSR1 (sleeping in steps, as a
    /// program working would) and exits 75 when it comes; 0 after `secs` seconds without it.
    const WAITS_FOR_USR1: &str = "trap 'echo warned; exit 75' USR1; echo ready; \
         i=0; while [ $i -lt $(($1 * 20)) ]; do sleep 0.05; i=$((i + 1)); done";

    /// Runs `script` with bash as a process group of its own (as a batch script runs), and
    /// once each of `ready` (files) holds "ready", sends SIGUSR1 to the shell alone (`group`
    /// false: Slurm's `B:`) or to its process group (Flux); the shell's exit code.
    fn run_warned(dir: &Path, script: &str, ready: &[PathBuf], group: bool) -> Option<i32> {
        use std::os::unix::process::CommandExt;
        let file = dir.join("warned.sh");
        std::fs::write(&file, format!("set -u\n{script}")).unwrap();
        let mut child = std::process::Command::new("bash")
            .arg(&file)
            .env("SLURM_ARRAY_TASK_ID", "0")
            .env("SLURM_CPUS_PER_TASK", "2")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = std::time::Instant::now();
        while !ready
            .iter()
            .all(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("ready")))
        {
            assert!(start.elapsed().as_secs() < 20, "the tasks never got ready");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: kill(2) on the shell this test started, or its own process group.
        unsafe {
            libc::kill(if group { -pid } else { pid }, libc::SIGUSR1);
        }
        child.wait().unwrap().code()
    }

    fn exit_code(paths: &TaskPaths) -> String {
        let exit = std::fs::read_to_string(paths.exit_file()).unwrap();
        exit.split_whitespace().next().unwrap().to_string()
    }

    #[test]
    fn the_batch_shells_warning_reaches_the_command_which_exits_75() {
        for (reach, group) in [
            (WarningReach::BatchShell, false),
            (WarningReach::ProcessGroup, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let paths = task_paths(dir.path());
            paths.create().unwrap();
            let body = warned_command_body(
                "bash",
                &["-c", WAITS_FOR_USR1, "wait", "30"],
                &paths,
                Some(reach),
            );
            let start = std::time::Instant::now();
            let code = run_warned(dir.path(), &body, &[paths.stdout()], group);
            assert_eq!(code, Some(75), "{reach:?}");
            assert!(start.elapsed().as_secs() < 20, "{reach:?}: not warned");
            assert_eq!(exit_code(&paths), "75", "{reach:?}");
            let out = std::fs::read_to_string(paths.stdout()).unwrap();
            assert_eq!(out, "ready\nwarned\n", "{reach:?}: warned once");
        }
    }

    #[test]
    fn a_warned_body_keeps_its_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = task_paths(dir.path());
        paths.create().unwrap();
        let run = |body: &str| {
            // Each run another submission: the last one's exit file is removed first, as
            // `ship_task` does (a finished command's exit file makes its job skip it).
            let _ = std::fs::remove_file(paths.exit_file());
            let script = dir.path().join("s.sh");
            std::fs::write(&script, format!("set -u\n{body}")).unwrap();
            let status = std::process::Command::new("bash")
                .arg(&script)
                .status()
                .unwrap();
            (status.code(), exit_code(&paths))
        };
        let warned = Some(WarningReach::BatchShell);
        assert_eq!(
            run(&warned_command_body(
                "sh",
                &["-c", "exit 3"],
                &paths,
                warned
            )),
            (Some(3), "3".into())
        );
        assert_eq!(
            run(&warned_command_body("true", &[], &paths, warned)),
            (Some(0), "0".into())
        );
        // A death by signal is still 128 + N.
        assert_eq!(
            run(&warned_command_body(
                "sh",
                &["-c", "kill -TERM $$"],
                &paths,
                warned
            )),
            (Some(143), "143".into())
        );
        assert_eq!(
            run(&warned_command_body(
                "nosuch-pitch-program",
                &[],
                &paths,
                warned
            ))
            .1,
            "exec:127"
        );
        // A command without a trap dies of the warning (its default action), as it would
        // from the scheduler.
        let body = warned_command_body(
            "sh",
            &["-c", "echo ready; sleep 30"],
            &paths,
            Some(WarningReach::BatchShell),
        );
        let code = run_warned(dir.path(), &body, &[paths.stdout()], false);
        assert_eq!(code, Some(138));
        assert_eq!(exit_code(&paths), "138");
    }

    #[test]
    fn a_task_that_ends_at_once_on_the_warning_keeps_its_own_exit_code() {
        // The task exits as the trap interrupts `wait`: bash may have reaped it already,
        // and its own status (not 128 + 10) must be recorded.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let paths = task_paths(dir.path());
            paths.create().unwrap();
            let body = warned_command_body(
                "bash",
                &["-c", "trap 'exit 75' USR1; echo ready; while :; do :; done"],
                &paths,
                Some(WarningReach::ProcessGroup),
            );
            let code = run_warned(dir.path(), &body, &[paths.stdout()], true);
            assert_eq!(code, Some(75));
            assert_eq!(exit_code(&paths), "75");
        }
    }

    #[test]
    fn a_packed_element_passes_the_warning_to_every_running_task() {
        for (reach, group) in [
            (WarningReach::BatchShell, false),
            (WarningReach::ProcessGroup, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let roots: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("c{i}"))).collect();
            let paths: Vec<TaskPaths> = roots
                .iter()
                .map(|root| {
                    std::fs::create_dir(root).unwrap();
                    let paths = task_paths(root);
                    paths.create().unwrap();
                    paths
                })
                .collect();
            // Tasks 0 and 1 run side by side (2 CPUs) and are warned; task 2 starts after
            // them and finishes on its own.
            let bodies: Vec<String> = paths
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let secs = if i == 2 { "0" } else { "30" };
                    warned_command_body(
                        "bash",
                        &["-c", WAITS_FOR_USR1, "wait", secs],
                        p,
                        Some(reach),
                    )
                })
                .collect();
            let tasks = dir.path().join("s.tasks");
            std::fs::write(&tasks, tasks_file(&bodies)).unwrap();
            let body = packed_body(
                &tasks,
                3,
                3,
                1,
                "$SLURM_ARRAY_TASK_ID",
                "${SLURM_CPUS_PER_TASK:-1}",
                Some(reach),
            );
            let start = std::time::Instant::now();
            let ready = [paths[0].stdout(), paths[1].stdout()];
            let code = run_warned(dir.path(), &body, &ready, group);
            assert!(start.elapsed().as_secs() < 20, "{reach:?}: not warned");
            assert_eq!(code, Some(1), "{reach:?}: tasks exited 75");
            let codes: Vec<String> = paths.iter().map(exit_code).collect();
            assert_eq!(codes, ["75", "75", "0"], "{reach:?}");
        }
    }

    #[test]
    fn packed_elements_run_their_tasks_and_fail_when_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let bodies: Vec<String> = (0..5)
            .map(|i| {
                let code = if i == 3 { 1 } else { 0 };
                format!("echo {i} >> {}\nexit {code}\n", log.display())
            })
            .collect();
        let script = dir.path().join("s.sh");
        let tasks = dir.path().join("s.tasks");
        std::fs::write(&tasks, tasks_file(&bodies)).unwrap();
        let body = packed_body(
            &tasks,
            bodies.len(),
            2,
            1,
            "$SLURM_ARRAY_TASK_ID",
            "${SLURM_CPUS_PER_TASK:-1}",
            None,
        );
        std::fs::write(&script, body).unwrap();
        let run = |element: u32| {
            std::process::Command::new("bash")
                .arg(&script)
                .env("SLURM_ARRAY_TASK_ID", element.to_string())
                .env("SLURM_CPUS_PER_TASK", "2")
                .status()
                .unwrap()
        };
        assert!(run(0).success());
        assert!(!run(1).success(), "task 3 failed, so element 1 fails");
        assert!(run(2).success());
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn a_packed_single_job_runs_every_task_in_turn() {
        // Flux has no job arrays: one job runs all of a pack's tasks (element 0, 1 CPU).
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let bodies: Vec<String> = (0..3)
            .map(|i| format!("echo {i} >> {}\n", log.display()))
            .collect();
        let tasks = dir.path().join("s.tasks");
        std::fs::write(&tasks, tasks_file(&bodies)).unwrap();
        let script = dir.path().join("s.sh");
        std::fs::write(&script, packed_body(&tasks, 3, 3, 1, "0", "1", None)).unwrap();
        let status = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "0\n1\n2\n");
    }

    #[test]
    fn array_elements_get_values_byte_identical() {
        // Newlines, tabs, quotes, backslashes and `%` in arguments arrive as they are in an
        // array element, which runs its task from one line of the tasks file.
        let dir = tempfile::tempdir().unwrap();
        let values = [
            "line1\nline2",
            "tab\tand 'single' \"double\"",
            "back\\slash \\n 100% %j $HOME `x`",
        ];
        // One cache directory per value: the tasks share their key.
        let paths: Vec<TaskPaths> = (0..values.len())
            .map(|i| {
                let root = dir.path().join(format!("c{i}"));
                std::fs::create_dir(&root).unwrap();
                let paths = task_paths(&root);
                paths.create().unwrap();
                paths
            })
            .collect();
        let bodies: Vec<String> = values
            .iter()
            .zip(&paths)
            .map(|(v, p)| command_body("printf", &["%s", v], p))
            .collect();
        let tasks = dir.path().join("s.tasks");
        std::fs::write(&tasks, tasks_file(&bodies)).unwrap();
        assert_eq!(std::fs::read_to_string(&tasks).unwrap().lines().count(), 3);
        let script = dir.path().join("s.sh");
        std::fs::write(&script, array_body(&tasks, "$SLURM_ARRAY_TASK_ID")).unwrap();
        for (i, v) in values.iter().enumerate() {
            let status = std::process::Command::new("bash")
                .arg(&script)
                .env("SLURM_ARRAY_TASK_ID", i.to_string())
                .status()
                .unwrap();
            assert!(status.success(), "element {i}");
            let got = std::fs::read_to_string(paths[i].stdout()).unwrap();
            assert_eq!(&got, v, "element {i}");
        }
    }

    #[test]
    fn a_link_planted_as_stdout_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let paths = task_paths(dir.path());
        paths.create().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&precious, paths.stdout()).unwrap();
        std::os::unix::fs::symlink(&precious, paths.stderr()).unwrap();
        let run = |body: &str| {
            let script = dir.path().join("s.sh");
            std::fs::write(&script, format!("set -u\n{body}")).unwrap();
            std::process::Command::new("bash")
                .arg(&script)
                .status()
                .unwrap()
        };
        let body = command_body("sh", &["-c", "echo out; echo err >&2"], &paths);
        assert!(run(&body).success());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        assert!(!paths.stdout().is_symlink());
        assert_eq!(std::fs::read_to_string(paths.stdout()).unwrap(), "out\n");
        assert_eq!(std::fs::read_to_string(paths.stderr()).unwrap(), "err\n");
        // A file the user named is overwritten, as before, even when it exists. (Another
        // submission: the exit file of the last is removed first, as `ship_task` does.)
        std::fs::remove_file(paths.exit_file()).unwrap();
        let named = dir.path().join("named.out");
        std::fs::write(&named, "old\n").unwrap();
        let s = spec(
            TaskKind::Command(CommandSpec {
                program: "echo".into(),
                args: vec!["new".into()],
                env: vec![],
                stdout: Some(named.clone()),
                stderr: None,
                allow_failure: false,
            }),
            1,
        );
        let body = task_body(&TaskBody {
            spec: &s,
            stdout: &paths.stdout(),
            stderr: &paths.stderr(),
            result: &paths.result_file(),
            exit: &paths.exit_file(),
            exit_tmp: &paths.exit_tmp(),
            cache: paths.root(),
            exe: None,
            durable: true,
            rank_launcher: "srun",
            warning: None,
        });
        assert!(run(&body).success());
        assert_eq!(std::fs::read_to_string(&named).unwrap(), "new\n");
    }

    #[test]
    fn a_finished_task_is_not_run_again_by_its_requeued_job() {
        let dir = tempfile::tempdir().unwrap();
        let paths = task_paths(dir.path());
        paths.create().unwrap();
        let marker = dir.path().join("ran");
        let body = command_body(
            "sh",
            &["-c", &format!("echo out; echo x >> {}", marker.display())],
            &paths,
        );
        let run = || {
            let script = dir.path().join("s.sh");
            std::fs::write(&script, format!("set -u\n{body}")).unwrap();
            std::process::Command::new("bash")
                .arg(&script)
                .status()
                .unwrap()
        };
        assert!(run().success());
        let exit = std::fs::read_to_string(paths.exit_file()).unwrap();
        // The job runs again (requeued): the command is not run twice, its files are kept.
        assert!(run().success());
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n");
        assert_eq!(std::fs::read_to_string(paths.exit_file()).unwrap(), exit);
        assert_eq!(std::fs::read_to_string(paths.stdout()).unwrap(), "out\n");
        // A failure is run again.
        std::fs::write(paths.exit_file(), "3 1 2\n").unwrap();
        assert!(run().success());
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\nx\n");
        // A function task asks its worker, and only when a result file is there.
        let f = spec(
            TaskKind::Function {
                name: "t".into(),
                fingerprint: "f".into(),
                args: vec![],
            },
            1,
        );
        let body = task_body(&TaskBody {
            spec: &f,
            stdout: &paths.stdout(),
            stderr: &paths.stderr(),
            result: &paths.result_file(),
            exit: &paths.exit_file(),
            exit_tmp: &paths.exit_tmp(),
            cache: paths.root(),
            exe: Some(Path::new("/bin/w")),
            durable: false,
            rank_launcher: "srun",
            warning: None,
        });
        let first = body.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                "if [ -e {} ] && /bin/w __pitch-worker finished {} {}; then exit 0; fi",
                paths.result_file().display(),
                paths.root().display(),
                f.key
            )
        );
    }

    #[test]
    fn a_command_body_records_its_exit_code_and_run_time() {
        let dir = tempfile::tempdir().unwrap();
        let paths = task_paths(dir.path());
        paths.create().unwrap();
        let body = command_body("sh", &["-c", "sleep 0.2; exit 3"], &paths);
        let script = dir.path().join("s.sh");
        std::fs::write(&script, format!("set -u\n{body}")).unwrap();
        let status = std::process::Command::new("bash")
            .arg(&script)
            .env("LC_ALL", "C")
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        let exit = std::fs::read_to_string(paths.exit_file()).unwrap();
        let fields: Vec<u64> = exit
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(fields.len(), 3, "{exit:?}");
        assert_eq!(fields[0], 3);
        let micros = fields[2] - fields[1];
        assert!((200_000..10_000_000).contains(&micros), "{exit:?}");
        assert!(!paths.stdout().exists(), "empty output is not kept");
    }

    #[test]
    fn a_command_that_cannot_be_executed_is_recorded_apart_from_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let paths = task_paths(dir.path());
        paths.create().unwrap();
        let not_exec = dir.path().join("data");
        std::fs::write(&not_exec, "").unwrap();
        let run = |body: &str| {
            let script = dir.path().join("s.sh");
            std::fs::write(&script, format!("set -u\n{body}")).unwrap();
            std::process::Command::new("bash")
                .arg(&script)
                .status()
                .unwrap();
            let exit = std::fs::read_to_string(paths.exit_file()).unwrap();
            exit.split_whitespace().next().unwrap().to_string()
        };
        let not_exec = not_exec.display().to_string();
        assert_eq!(
            run(&command_body("nosuch-pitch-program", &[], &paths)),
            "exec:127"
        );
        assert_eq!(run(&command_body(&not_exec, &[], &paths)), "exec:126");
        // The program's own 127 is its exit code.
        assert_eq!(run(&command_body("sh", &["-c", "exit 127"], &paths)), "127");
        let mut s = spec(
            TaskKind::Command(CommandSpec {
                program: "true".into(),
                args: vec![],
                env: vec![],
                stdout: None,
                stderr: None,
                allow_failure: false,
            }),
            1,
        );
        s.cwd = Some(dir.path().join("no-such-dir"));
        let body = task_body(&TaskBody {
            spec: &s,
            stdout: &paths.stdout(),
            stderr: &paths.stderr(),
            result: &paths.result_file(),
            exit: &paths.exit_file(),
            exit_tmp: &paths.exit_tmp(),
            cache: paths.root(),
            exe: None,
            durable: true,
            rank_launcher: "srun",
            warning: None,
        });
        assert_eq!(run(&body), "cwd");
    }

    #[test]
    fn command_body_quotes_arguments_and_records_the_exit_status() {
        let paths = task_paths(Path::new("/c"));
        let body = command_body("echo", &["a b", "it's", "$HOME"], &paths);
        let d = paths.dir().display();
        assert!(
            body.contains(&format!(
                "exec echo 'a b' 'it'\\''s' '$HOME' ) > {d}/stdout"
            )),
            "{body}"
        );
        assert!(
            body.contains(&format!("mv -f {d}/.exit.$$ {d}/exit")),
            "{body}"
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.sh");
        let tasks = dir.path().join("s.tasks");
        std::fs::write(&tasks, tasks_file(&[body.clone(), body])).unwrap();
        std::fs::write(&script, array_body(&tasks, "$SLURM_ARRAY_TASK_ID")).unwrap();
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&tasks).unwrap().lines().count(), 2);
    }
}
