//! Tests of the bash a task runs inside a job: exit files, exec failures, warnings
//! passed on to one task or a pack, arrays and packs.

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

/// The body of `spec` whose files are `paths`'s, with `srun` as the ranks' launcher: `exe` the
/// staged binary of a function task (not durable), `trust_group` as the executor's, `warning`
/// the scheduler's warning before the time limit.
fn body_of(
    spec: &TaskSpec,
    paths: &TaskPaths,
    exe: Option<&Path>,
    trust_group: bool,
    warning: Option<WarningReach>,
) -> String {
    task_body(&TaskBody {
        spec,
        stdout: &paths.stdout(),
        stderr: &paths.stderr(),
        result: &paths.result_file(),
        exit: &paths.exit_file(),
        exit_tmp: &paths.exit_tmp(),
        cache: paths.root(),
        exe,
        durable: false,
        trust_group,
        rank_launcher: "srun",
        warning,
    })
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
    body_of(&s, paths, None, false, warning)
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
    let body = body_of(&s, &paths, None, false, None);
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
    let body = body_of(&f, &paths, Some(Path::new("/bin/w")), false, None);
    // Once in its task directory (the body's first lines), the result file is named there.
    let first = body.lines().find(|l| l.starts_with("if [ -e ")).unwrap();
    assert_eq!(
        first,
        format!(
            "if [ -e result.bin ] && /bin/w __pitch-worker finished {} {}; then exit 0; fi",
            paths.root().display(),
            f.key
        )
    );
    let enter = body
        .lines()
        .find(|l| l.starts_with("pitch_enter "))
        .unwrap();
    assert!(
        enter.starts_with(&format!(
            "pitch_enter {} tasks 1d {} || ",
            paths.root().display(),
            f.key
        )),
        "{enter}"
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
    let mut s = spec(TaskKind::Command(CommandSpec::bare("true")), 1);
    s.cwd = Some(dir.path().join("no-such-dir"));
    let body = body_of(&s, &paths, None, false, None);
    assert_eq!(run(&body), "cwd");
}

#[test]
fn command_body_quotes_arguments_and_records_the_exit_status() {
    let paths = task_paths(Path::new("/c"));
    let body = command_body("echo", &["a b", "it's", "$HOME"], &paths);
    // The task directory's files are named relative to it (the shell entered it first).
    assert!(
        body.contains("exec echo 'a b' 'it'\\''s' '$HOME' 7>&- ) 7> .exit.failed > stdout"),
        "{body}"
    );
    assert!(body.contains("mv -f .exit.$$ exit"), "{body}");
    assert!(!body.contains(&paths.dir().display().to_string()), "{body}");
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

/// The body of a one-rank command task `program args` writing to the files the user named.
fn named_output_body(
    program: &str,
    args: &[&str],
    stdout: Option<&Path>,
    stderr: Option<&Path>,
    paths: &TaskPaths,
) -> (String, CommandSpec) {
    let command = CommandSpec {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        stdout: stdout.map(Path::to_path_buf),
        stderr: stderr.map(Path::to_path_buf),
        allow_failure: false,
    };
    let s = spec(TaskKind::Command(command.clone()), 1);
    let body = body_of(&s, paths, None, false, None);
    (body, command)
}

/// Runs `script` with bash in `dir` (after removing the exit file of the last run, as
/// `ship_task` does), returning its exit code.
fn run_script(dir: &Path, paths: &TaskPaths, script: &str) -> Option<i32> {
    let _ = std::fs::remove_file(paths.exit_file());
    let file = dir.join("s.sh");
    std::fs::write(&file, format!("set -u\n{script}")).unwrap();
    std::process::Command::new("bash")
        .arg(&file)
        .status()
        .unwrap()
        .code()
}

#[test]
fn a_link_planted_as_a_named_output_file_is_refused_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let paths = task_paths(dir.path());
    paths.create().unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    let named = dir.path().join("named.out");
    std::os::unix::fs::symlink(&precious, &named).unwrap();
    let (body, command) = named_output_body("echo", &["FORGED"], Some(&named), None, &paths);
    assert_eq!(run_script(dir.path(), &paths, &body), Some(1), "{body}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert_eq!(exit_code(&paths), "output:stdout");
    let (code, outcome) =
        crate::backend::queue::poll::exit_outcome(&paths, &command, None).expect("an exit file");
    assert_eq!(code, None);
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains(&named.display().to_string()), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    // The same for stderr; another user's file, a FIFO or a directory is refused too.
    let (body, _) = named_output_body("echo", &["FORGED"], None, Some(&named), &paths);
    assert_eq!(run_script(dir.path(), &paths, &body), Some(1));
    assert_eq!(exit_code(&paths), "output:stderr");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for refused in [fifo.as_path(), dir.path()] {
        let (body, _) = named_output_body("echo", &["x"], Some(refused), None, &paths);
        assert_eq!(
            run_script(dir.path(), &paths, &body),
            Some(1),
            "{refused:?}"
        );
        assert_eq!(exit_code(&paths), "output:stdout");
    }
    if crate::trust::me() == 0 {
        let theirs = dir.path().join("theirs.out");
        std::fs::write(&theirs, "theirs\n").unwrap();
        std::os::unix::fs::chown(&theirs, Some(1), Some(1)).unwrap();
        let (body, _) = named_output_body("echo", &["x"], Some(&theirs), None, &paths);
        assert_eq!(run_script(dir.path(), &paths, &body), Some(1));
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "theirs\n");
    }
}

#[test]
fn a_named_output_file_is_created_or_truncated_like_a_shells() {
    let dir = tempfile::tempdir().unwrap();
    let paths = task_paths(dir.path());
    paths.create().unwrap();
    let out = dir.path().join("out.txt");
    let err = dir.path().join("err.txt");
    let cmd = [
        "-c",
        "echo new; echo oops >&2; ls -l /proc/self/fd/ | grep -c ' [89] ->' >&2 || true",
    ];
    // Missing: created.
    let (body, _) = named_output_body("sh", &cmd, Some(&out), Some(&err), &paths);
    assert_eq!(run_script(dir.path(), &paths, &body), Some(0), "{body}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
    // The command does not inherit the descriptors pitch opened them on.
    assert_eq!(std::fs::read_to_string(&err).unwrap(), "oops\n0\n");
    // Existing, longer: truncated, the same file (its mode kept).
    std::fs::write(&out, "an earlier run's much longer output\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(run_script(dir.path(), &paths, &body), Some(0));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(exit_code(&paths), "0");
    // Both streams to one file, and /dev/null.
    let short = ["-c", "echo new; echo oops >&2"];
    let (body, _) = named_output_body("sh", &short, Some(&out), Some(&out), &paths);
    assert_eq!(run_script(dir.path(), &paths, &body), Some(0));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\noops\n");
    let null = Path::new("/dev/null");
    let (body, _) = named_output_body("sh", &short, Some(null), Some(null), &paths);
    assert_eq!(run_script(dir.path(), &paths, &body), Some(0));
}

#[test]
fn a_link_planted_at_the_exit_files_temporary_name_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let paths = task_paths(dir.path());
    paths.create().unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    // The job shell's pid names the temporary file: the link is planted by the script itself
    // just before the body (an attacker would guess it), and at the code and failed files.
    let tmp = p(&paths.exit_tmp());
    let plant = format!(
        "ln -s {0} {tmp}.$$; ln -s {0} {tmp}.code; ln -s {0} {tmp}.failed\n",
        p(&precious)
    );
    for warning in [None, Some(WarningReach::BatchShell)] {
        let body = warned_command_body("sh", &["-c", "exit 3"], &paths, warning);
        assert_eq!(
            run_script(dir.path(), &paths, &format!("{plant}{body}")),
            Some(3)
        );
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        assert_eq!(exit_code(&paths), "3");
        assert!(!paths.exit_file().is_symlink());
    }
    // A function task whose worker left no result writes the exit file the same way.
    let s = spec(
        TaskKind::Function {
            name: "f".into(),
            fingerprint: "0".into(),
            args: vec![],
        },
        1,
    );
    let exe = dir.path().join("worker");
    std::fs::write(&exe, "#!/bin/sh\nexit 4\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let body = body_of(&s, &paths, Some(&exe), false, None);
    let _ = std::fs::remove_file(paths.exit_tmp().with_extension("code"));
    assert_eq!(
        run_script(dir.path(), &paths, &format!("{plant}{body}")),
        Some(4)
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert_eq!(exit_code(&paths), "4");
}

/// Runs `script` with bash in the working directory `cwd`: its exit code and its stderr.
fn run_in(cwd: &Path, script: &str) -> (Option<i32>, String) {
    let file = cwd.join("s.sh");
    std::fs::write(&file, format!("set -u\n{script}")).unwrap();
    let out = std::process::Command::new("bash")
        .arg(&file)
        .current_dir(cwd)
        .env("CDPATH", "/")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_link_planted_on_the_way_to_the_task_directory_is_refused_and_nothing_runs() {
    let function = spec(
        TaskKind::Function {
            name: "f".into(),
            fingerprint: "0".into(),
            args: vec![],
        },
        1,
    );
    // Each level below the cache directory in turn: `tasks`, the shard, the task's own.
    for level in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        let paths = task_paths(&root);
        paths.create().unwrap();
        let marker = dir.path().join("ran");
        // The same tree elsewhere, which the link points into: nothing may be written there.
        let elsewhere = dir.path().join("elsewhere");
        let rel = paths.dir().strip_prefix(&root).unwrap();
        std::fs::create_dir_all(elsewhere.join(rel)).unwrap();
        let at: PathBuf = rel.components().take(level).collect();
        let planted = root.join(&at);
        std::fs::remove_dir_all(&planted).unwrap();
        std::os::unix::fs::symlink(elsewhere.join(&at), &planted).unwrap();
        let exe = dir.path().join("worker");
        std::fs::write(&exe, format!("#!/bin/sh\necho x > {}\n", marker.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let command = command_body(
            "sh",
            &["-c", &format!("echo x > {}", marker.display())],
            &paths,
        );
        let function = body_of(&function, &paths, Some(&exe), false, None);
        for body in [command, function] {
            let (code, stderr) = run_in(dir.path(), &body);
            assert_eq!(code, Some(REFUSED_EXIT_CODE), "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "refusing the task directory: {} is a symbolic link",
                    planted.display()
                )),
                "level {level}: {stderr}"
            );
            assert!(!marker.exists(), "the task ran");
            let written: Vec<_> = walkdir(&elsewhere)
                .into_iter()
                .filter(|p| !p.is_dir())
                .collect();
            assert!(written.is_empty(), "written through the link: {written:?}");
        }
        // The driver refuses it too, naming it, when it reads the task's files.
        let e = paths.read_result().unwrap_err().to_string();
        assert!(e.contains(&planted.display().to_string()), "{e}");
    }
}

/// Every path below `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walkdir(&path));
        }
        all.push(path);
    }
    all
}

#[test]
fn once_in_its_task_directory_a_task_still_runs_where_the_job_started() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    std::fs::create_dir(&root).unwrap();
    let paths = task_paths(&root);
    paths.create().unwrap();
    std::fs::write(dir.path().join("here"), "").unwrap();
    // A relative program and a relative output file the user named are the job's
    // directory's, and so is the command's working directory; a `CDPATH` does not matter.
    std::fs::write(
        dir.path().join("prog"),
        "#!/bin/sh\npwd -P; ls here\necho err >&2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("prog"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (body, _) = named_output_body("./prog", &[], Some(Path::new("out.txt")), None, &paths);
    let (code, stderr) = run_in(dir.path(), &body);
    assert_eq!(code, Some(0), "{stderr}");
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        format!("{}\nhere\n", cwd.display())
    );
    assert_eq!(std::fs::read_to_string(paths.stderr()).unwrap(), "err\n");
    assert_eq!(exit_code(&paths), "0");
    // A program that is not there is still `exec:127`, recorded in the task directory.
    let _ = std::fs::remove_file(paths.exit_file());
    let body = command_body("./no-such-prog", &[], &paths);
    let (code, _) = run_in(dir.path(), &body);
    assert_eq!(code, Some(127));
    assert_eq!(exit_code(&paths), "exec:127");
}

#[test]
fn a_task_directory_others_may_write_is_refused_and_nothing_runs() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // A group that is not this user's private one (named like the user), if any.
    let me = unsafe { libc::getuid() };
    let other_group = [1u32, 2, 4, 100, 65534]
        .into_iter()
        .find(|&g| g != unsafe { libc::getgid() } && unsafe { !libc::getgrgid(g).is_null() });
    // Each directory the script enters: the cache directory, `tasks`, the shard, the task's.
    for level in 0..=3 {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        chmod(&root, 0o700);
        let paths = task_paths(&root);
        paths.create().unwrap();
        let marker = dir.path().join("ran");
        let rel = paths.dir().strip_prefix(&root).unwrap();
        let at: PathBuf = root
            .components()
            .chain(rel.components().take(level))
            .collect();
        let body = |trust_group: bool| {
            let s = spec(TaskKind::Command(CommandSpec::bare("sh")), 1);
            let mut s = s;
            if let TaskKind::Command(c) = &mut s.kind {
                c.args = vec!["-c".into(), format!("echo x > {}", marker.display())];
            }
            body_of(&s, &paths, None, trust_group, None)
        };
        let refused = |body: &str, why: &str| {
            let (code, stderr) = run_in(dir.path(), body);
            assert_eq!(code, Some(REFUSED_EXIT_CODE), "level {level}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "refusing the task directory: {} {why}",
                    at.display()
                )),
                "level {level}: {stderr}"
            );
            assert!(!marker.exists(), "level {level}: the task ran");
        };
        // Writable by every user: refused, trust_group or not.
        chmod(&at, 0o777);
        refused(&body(false), "is writable by every user (mode drwxrwxrwx)");
        refused(&body(true), "is writable by every user");
        // Writable by a group that is not the user's own: only with trust_group.
        if let Some(g) = other_group {
            std::os::unix::fs::chown(&at, None, Some(g)).unwrap();
            chmod(&at, 0o770);
            refused(&body(false), "is writable by its group");
            let (code, stderr) = run_in(dir.path(), &body(true));
            assert_eq!(code, Some(0), "level {level}: {stderr}");
            assert!(marker.exists(), "level {level}: trust_group let it run");
            std::fs::remove_file(&marker).unwrap();
            // (A finished command's exit file would skip the next run.)
            std::fs::remove_file(paths.exit_file()).unwrap();
        }
        // Another user's (only root can give a directory away).
        if me == 0 {
            chmod(&at, 0o700);
            std::os::unix::fs::chown(&at, Some(65534), None).unwrap();
            refused(&body(true), "is owned by");
            std::os::unix::fs::chown(&at, Some(0), None).unwrap();
        }
        // As it was made: it runs.
        chmod(&at, 0o700);
        let (code, stderr) = run_in(dir.path(), &body(false));
        assert_eq!(code, Some(0), "level {level}: {stderr}");
        assert!(marker.exists());
    }
}
