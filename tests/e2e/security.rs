//! Attacks on the cache directory by another local user (issue 14): a directory the attacker
//! owns or may rename is refused, and links planted inside the cache are refused, not followed.
//!
//! Run as root, the tests create the user `pitch-attacker` (idempotent) and act as it with
//! `setpriv`; as another user they skip with a message (they need a second user).

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

use pitch::{Command, Error, Resources, SingleNodeExecutor, TaskError};

use crate::ensure;

/// The tests that test nothing without a second user (so need root to create it): reported as
/// ignored when not root.
pub(crate) fn needs_root(name: &str) -> bool {
    [
        "security::another_users_open_cache_directory_is_refused",
        "security::a_private_cache_in_a_group_writable_folder_needs_trust_group",
        "security::a_link_another_user_planted_at_a_named_output_file_is_refused",
        "security::a_worker_refuses_a_cache_swapped_for_another_users",
    ]
    .contains(&name)
}

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    (
        "security::another_users_open_cache_directory_is_refused",
        another_users_open_cache_directory_is_refused,
    ),
    (
        "security::a_private_cache_in_a_group_writable_folder_needs_trust_group",
        a_private_cache_in_a_group_writable_folder_needs_trust_group,
    ),
    (
        "security::a_planted_link_for_a_shard_or_task_directory_is_refused",
        a_planted_link_for_a_shard_or_task_directory_is_refused,
    ),
    (
        "security::a_link_planted_as_a_tasks_stdout_is_not_written_through",
        a_link_planted_as_a_tasks_stdout_is_not_written_through,
    ),
    (
        "security::a_link_another_user_planted_at_a_named_output_file_is_refused",
        a_link_another_user_planted_at_a_named_output_file_is_refused,
    ),
    (
        "security::a_worker_checks_the_cache_directorys_ancestors_again",
        a_worker_checks_the_cache_directorys_ancestors_again,
    ),
    (
        "security::a_task_file_copied_from_another_task_is_not_run",
        a_task_file_copied_from_another_task_is_not_run,
    ),
    (
        "security::a_result_copied_from_another_task_is_refused",
        a_result_copied_from_another_task_is_refused,
    ),
    (
        "security::a_flux_cache_path_with_braces_is_refused",
        a_flux_cache_path_with_braces_is_refused,
    ),
    (
        "security::a_slurm_cache_path_with_a_backslash_is_refused",
        a_slurm_cache_path_with_a_backslash_is_refused,
    ),
    (
        "security::a_link_planted_in_the_jobs_folder_is_refused_when_a_queue_executor_is_built",
        a_link_planted_in_the_jobs_folder_is_refused_when_a_queue_executor_is_built,
    ),
    (
        "security::an_environment_name_bash_cannot_export_is_refused_locally_too",
        an_environment_name_bash_cannot_export_is_refused_locally_too,
    ),
    (
        "security::a_listing_never_follows_a_link_in_a_task_directory",
        a_listing_never_follows_a_link_in_a_task_directory,
    ),
];

const ATTACKER: &str = "pitch-attacker";

pitch::task! {
    /// Gives back its argument: which task ran shows in the value.
    pub fn echo_value(x: u32) -> u32 { x }
}

/// The attacker's uid and gid, creating the user when missing; `None` (the test skips) when
/// this process is not root.
fn attacker() -> Result<Option<(u32, u32)>, String> {
    if unsafe { crate::libc_geteuid() } != 0 {
        eprintln!("  skipped: needs root to create and act as a second user ({ATTACKER})");
        return Ok(None);
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Proc::new("id").args([flag, ATTACKER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        // Another test (or helper) may create it at the same moment: only the result counts.
        let _ = Proc::new("useradd")
            .args(["--system", "--no-create-home", ATTACKER])
            .output();
    }
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Ok(Some((u, g))),
        _ => Err(format!("could not create the user {ATTACKER}")),
    }
}

/// Runs `argv` as the attacker; Ok when it succeeded.
fn as_attacker((uid, gid): (u32, u32), argv: &[&str]) -> Result<(), String> {
    let out = Proc::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(argv)
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{argv:?} as {ATTACKER} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary directory every user may enter (tempdir makes it 0700).
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    d
}

fn untrusted(result: Result<pitch::Executor, Error>) -> Result<(PathBuf, String), String> {
    match result {
        Err(e @ Error::Untrusted { .. }) => {
            let text = e.to_string();
            let Error::Untrusted { path, .. } = e else {
                unreachable!()
            };
            Ok((path, text))
        }
        Err(e) => Err(format!("refused for another reason: {e}")),
        Ok(_) => Err("the executor was built on a directory another user controls".into()),
    }
}

/// A 0777 cache directory that another user made: refused, naming its owner and mode.
fn another_users_open_cache_directory_is_refused() -> Result<(), String> {
    let Some(who) = attacker()? else {
        return Ok(());
    };
    let d = open_tempdir();
    let cache = d.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(who.0), Some(who.1)).unwrap();
    // The attacker's own doing: a directory everybody may write.
    as_attacker(who, &["chmod", "0777", cache.to_str().unwrap()])?;
    let (path, text) = untrusted(
        SingleNodeExecutor::builder()
            .cache_directory(&cache)
            .trust_group(true)
            .build(),
    )?;
    ensure!(
        path == cache,
        "names {} instead of the cache",
        path.display()
    );
    ensure!(
        text.contains(ATTACKER) && text.contains("0777") && text.contains("another user"),
        "the error names the owner and the mode: {text}"
    );
    // Looking at it (pitch status, results, gc, cancel) is refused the same way.
    std::fs::create_dir(cache.join("tasks")).unwrap();
    ensure!(
        matches!(pitch::Cache::open(&cache), Err(Error::Untrusted { .. })),
        "Cache::open accepted another user's directory"
    );
    // Even a private directory of the attacker's is refused: its owner can change it.
    chmod(&cache, 0o700);
    let (path, _) = untrusted(
        SingleNodeExecutor::builder()
            .cache_directory(&cache)
            .build(),
    )?;
    ensure!(path == cache, "{}", path.display());
    Ok(())
}

/// pitch makes the cache 0700, but in a folder the attacker's group may write the attacker can
/// rename it and put their own in its place: refused unless the user trusts the group.
fn a_private_cache_in_a_group_writable_folder_needs_trust_group() -> Result<(), String> {
    let Some(who) = attacker()? else {
        return Ok(());
    };
    let d = open_tempdir();
    let project = d.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::os::unix::fs::chown(&project, None, Some(who.1)).unwrap();
    chmod(&project, 0o770);
    let cache = project.join("cache");
    let (path, text) = untrusted(
        SingleNodeExecutor::builder()
            .cache_directory(&cache)
            .build(),
    )?;
    ensure!(
        path == project,
        "names {} instead of the folder",
        path.display()
    );
    ensure!(
        text.contains("writable by its group")
            && text.contains("0770")
            && text.contains("trust_group"),
        "the error says why and how to opt in: {text}"
    );
    // The threat is real: a member of the group renames the private cache away.
    std::fs::create_dir_all(&cache).unwrap();
    chmod(&cache, 0o700);
    let moved = project.join("moved");
    let groups = format!("--groups={}", who.1);
    let out = Proc::new("setpriv")
        .args([&format!("--reuid={}", who.0), &format!("--regid={}", who.1)])
        .arg(&groups)
        .args(["mv", cache.to_str().unwrap(), moved.to_str().unwrap()])
        .output()
        .unwrap();
    ensure!(
        out.status.success(),
        "a group member can rename the 0700 cache: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&moved, &cache).unwrap();
    // Opting in: the group is trusted, the cache works.
    let exe = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .trust_group(true)
        .build()
        .map_err(|e| format!("trust_group(true) still refuses: {e}"))?;
    let out = exe
        .submit_command(Command::new("echo").arg("trusted"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.read_stdout().unwrap_or_default() == "trusted\n",
        "{out:?}"
    );
    Ok(())
}

/// A shard or a task directory replaced by a link to the attacker's folder: pitch refuses it,
/// naming the link; it neither serves a result from there nor writes there.
fn a_planted_link_for_a_shard_or_task_directory_is_refused() -> Result<(), String> {
    let who = attacker()?;
    let d = open_tempdir();
    let cache = d.path().join("cache");
    let elsewhere = d.path().join("attacker");
    std::fs::create_dir(&elsewhere).unwrap();
    if let Some((uid, gid)) = who {
        std::os::unix::fs::chown(&elsewhere, Some(uid), Some(gid)).unwrap();
    }
    let exe = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .build()
        .map_err(|e| e.to_string())?;
    let secret = exe.submit_command(Command::new("echo").arg("secret-1"));
    secret.result().map_err(|e| e.to_string())?;
    let forged = exe.submit_command(Command::new("echo").arg("FORGED"));
    forged.result().map_err(|e| e.to_string())?;
    let dir = exe
        .task_directory(&secret.key())
        .map_err(|e| e.to_string())?;
    let forged_dir = exe
        .task_directory(&forged.key())
        .map_err(|e| e.to_string())?;
    drop(exe);

    // The shard: moved to the attacker's folder, the forged result copied over the real one,
    // and a link left in its place.
    let shard = dir.parent().unwrap().to_path_buf();
    let planted = elsewhere.join("shard");
    std::fs::rename(&shard, &planted).unwrap();
    let key_dir = planted.join(dir.file_name().unwrap());
    for f in ["result.bin", "stdout"] {
        // Both tasks may share the shard: copy through the planted copy then.
        let from = if forged_dir.parent() == dir.parent() {
            planted.join(forged_dir.file_name().unwrap()).join(f)
        } else {
            forged_dir.join(f)
        };
        std::fs::copy(&from, key_dir.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(&planted, &shard).unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .build()
        .map_err(|e| e.to_string())?;
    let again = exe.submit_command(Command::new("echo").arg("secret-1"));
    ensure!(again.key() == secret.key(), "the same task");
    match again.result() {
        Err(TaskError::Store { path, detail }) => {
            ensure!(
                path == shard.display().to_string() && detail.contains("symbolic link"),
                "the error names the link: {path}: {detail}"
            );
        }
        Ok(out) => {
            return Err(format!(
                "the planted shard was followed: {:?}",
                out.read_stdout()
            ))
        }
        Err(e) => return Err(format!("refused for another reason: {e}")),
    }
    drop(exe);
    std::fs::remove_file(&shard).unwrap();

    // A task directory: a link to an empty folder of the attacker's, for a task that never ran.
    let target = elsewhere.join("task");
    std::fs::create_dir(&target).unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .build()
        .map_err(|e| e.to_string())?;
    let probe = exe.with_cache_key("planted-task");
    let task_dir = probe
        .task_directory(&probe.submit_command(Command::new("true")).key().to_string())
        .map_err(|e| e.to_string())?;
    drop(probe);
    drop(exe);
    std::fs::remove_dir_all(&task_dir).unwrap();
    std::os::unix::fs::symlink(&target, &task_dir).unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .build()
        .map_err(|e| e.to_string())?;
    let r = exe
        .with_cache_key("planted-task")
        .submit_command(Command::new("echo").arg("secret-2"))
        .result();
    match r {
        Err(TaskError::Store { path, detail }) => ensure!(
            path == task_dir.display().to_string() && detail.contains("symbolic link"),
            "the error names the link: {path}: {detail}"
        ),
        other => return Err(format!("the planted task directory was used: {other:?}")),
    }
    let written: Vec<_> = std::fs::read_dir(&target).unwrap().flatten().collect();
    ensure!(
        written.is_empty(),
        "pitch wrote through the link: {written:?}"
    );
    Ok(())
}

/// `MY-VAR` would work in a local child process but breaks the bash job script on Slurm or
/// Flux: refused on every backend, naming it, so the one-line swap cannot break on it.
fn an_environment_name_bash_cannot_export_is_refused_locally_too() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(d.path().join("cache"))
        .build()
        .map_err(|e| e.to_string())?;
    let rejected = |r: Result<pitch::CommandOutput, TaskError>| match r {
        Err(TaskError::Rejected { reason, .. }) if reason.contains("\"MY-VAR\"") => Ok(()),
        other => Err(format!("not rejected naming MY-VAR: {other:?}")),
    };
    rejected(
        exe.submit_command(Command::new("true").env("MY-VAR", "1"))
            .result(),
    )?;
    rejected(
        exe.with_resources(Resources::new().env("MY-VAR", "1"))
            .submit_command(Command::new("true"))
            .result(),
    )?;
    let built = SingleNodeExecutor::builder()
        .cache_directory(d.path().join("cache"))
        .resources(Resources::new().env("MY-VAR", "1"))
        .build();
    ensure!(
        matches!(&built, Err(e) if e.to_string().contains("\"MY-VAR\"")),
        "default resources with MY-VAR: {:?}",
        built.err()
    );
    // A proper name still works.
    let out = exe
        .submit_command(
            Command::new("sh")
                .args(["-c", "printf %s \"$MY_VAR\""])
                .env("MY_VAR", "ok"),
        )
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.read_stdout().unwrap_or_default() == "ok", "{out:?}");
    Ok(())
}

/// `stdout -> a file of yours` planted in a task directory: the task's output does not
/// overwrite that file (the attack of issue 14 on the local backend).
fn a_link_planted_as_a_tasks_stdout_is_not_written_through() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let precious = d.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(d.path().join("cache"))
        .build()
        .map_err(|e| e.to_string())?
        .with_cache_key("planted-output");
    // A first run that fails leaves the task directory; the next run of the key runs again.
    let first = exe.submit_command(Command::new("sh").args(["-c", "exit 1"]));
    ensure!(first.result().is_err(), "the first run fails");
    let dir = exe
        .task_directory(&first.key())
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(dir.join("stdout"));
    std::os::unix::fs::symlink(&precious, dir.join("stdout")).unwrap();
    let out = exe
        .submit_command(Command::new("echo").arg("FORGED"))
        .result()
        .map_err(|e| e.to_string())?;
    let kept = std::fs::read_to_string(&precious).unwrap();
    ensure!(
        kept == "keep me\n",
        "the link was written through: {kept:?}"
    );
    // The link itself was replaced by the task's own file (created fresh, never through it).
    let stdout = dir.join("stdout");
    ensure!(
        out.stdout.as_deref() == Some(stdout.as_path()) && !stdout.is_symlink(),
        "{out:?}"
    );
    ensure!(
        std::fs::read_to_string(&stdout).unwrap_or_default() == "FORGED\n",
        "the task's own output"
    );
    Ok(())
}

/// A command's stdout the user named in a directory every user may write (a shared scratch
/// folder without the sticky bit): the attacker plants `out.txt -> a file of ours` there. The
/// task fails before it runs, naming the link and its owner, and our file is untouched; the
/// same command with the link gone writes its output.
fn a_link_another_user_planted_at_a_named_output_file_is_refused() -> Result<(), String> {
    let Some(who) = attacker()? else {
        return Ok(());
    };
    let d = open_tempdir();
    let precious = d.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    let shared = d.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let out = shared.join("out.txt");
    as_attacker(
        who,
        &[
            "ln",
            "-s",
            precious.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    )?;
    let exe = SingleNodeExecutor::builder()
        .cache_directory(d.path().join("cache"))
        .build()
        .map_err(|e| e.to_string())?;
    let run = || {
        exe.submit_command(Command::new("echo").arg("FORGED").stdout(&out))
            .result()
    };
    let text = match run() {
        Err(TaskError::Launch { detail, .. }) => detail,
        other => return Err(format!("not refused as it should: {other:?}")),
    };
    let kept = std::fs::read_to_string(&precious).unwrap();
    ensure!(
        kept == "keep me\n",
        "the link was written through: {kept:?}"
    );
    ensure!(
        text.contains(&out.display().to_string())
            && text.contains("symbolic link")
            && text.contains(ATTACKER),
        "the error names the path, what it is and its owner: {text}"
    );
    std::fs::remove_file(&out).unwrap();
    let ran = run().map_err(|e| e.to_string())?;
    ensure!(ran.stdout.as_deref() == Some(out.as_path()), "{ran:?}");
    let written = std::fs::read_to_string(&out).unwrap();
    ensure!(written == "FORGED\n", "{written:?}");
    Ok(())
}

/// A folder above the cache directory opened to every user after the executor checked it (so
/// that anyone could swap the cache for their own): the worker checks the cache directory and
/// its ancestors again before it reads the task, and the task fails with the refusal, naming
/// the folder; nothing runs. Closed again, the next task runs.
fn a_worker_checks_the_cache_directorys_ancestors_again() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("project");
    std::fs::create_dir(&project).unwrap();
    chmod(&project, 0o755);
    let exe = SingleNodeExecutor::builder()
        .cache_directory(project.join("cache"))
        .build()
        .map_err(|e| e.to_string())?;
    chmod(&project, 0o777);
    let refused = echo_value::submit(&exe, 7).result();
    chmod(&project, 0o755);
    let text = match refused {
        Err(e @ TaskError::WorkerDied { .. }) => e.to_string(),
        other => return Err(format!("the task was not refused: {other:?}")),
    };
    let project = std::fs::canonicalize(&project).unwrap();
    ensure!(
        text.contains(&format!("{} is writable by every user", project.display()))
            && text.contains("refusing the cache directory"),
        "the error names the folder and why: {text}"
    );
    let ran = echo_value::submit(&exe, 8).result();
    ensure!(matches!(ran, Ok(8)), "{ran:?}");
    Ok(())
}

/// A `result.bin` copied from another task's directory (five tasks answered `0` from one
/// copied file before results carried their key): refused as foreign with a warning naming
/// it, and the task runs again and answers its own value.
fn a_result_copied_from_another_task_is_refused() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let build = |events: crate::single_node::Collect| {
        SingleNodeExecutor::builder()
            .cache_directory(&cache)
            .reporter(events)
            .build()
            .map_err(|e| e.to_string())
    };
    let exe = build(crate::single_node::Collect::default())?;
    let tasks: Vec<_> = (1..=5).map(|i| echo_value::submit(&exe, i)).collect();
    for (i, t) in tasks.iter().enumerate() {
        ensure!(t.result() == Ok(i as u32 + 1), "the tasks ran");
    }
    let dirs: Vec<PathBuf> = tasks
        .iter()
        .map(|t| exe.task_directory(&t.key()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    drop(exe);
    for dir in &dirs[1..] {
        std::fs::copy(dirs[0].join("result.bin"), dir.join("result.bin")).unwrap();
    }
    let events = crate::single_node::Collect::default();
    let exe = build(events.clone())?;
    let again: Vec<u32> = (1..=5)
        .map(|i| echo_value::submit(&exe, i).result())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    ensure!(again == [1, 2, 3, 4, 5], "answers {again:?}");
    let warnings = events.warnings();
    ensure!(
        warnings.len() == 4
            && warnings
                .iter()
                .all(|w| w.contains("foreign") && w.contains(&tasks[0].key())),
        "warnings {warnings:?}"
    );
    Ok(())
}

/// The worker (a job's `__pitch-worker run CACHE KEY`) is given a task directory whose
/// `task.bin` was copied from another task: it refuses it as foreign instead of running the
/// other task and filing its value under this key.
fn a_task_file_copied_from_another_task_is_not_run() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(d.path().join("cache"))
        .build()
        .map_err(|e| e.to_string())?;
    let (a, b) = (echo_value::submit(&exe, 1), echo_value::submit(&exe, 2));
    ensure!(a.result() == Ok(1) && b.result() == Ok(2), "the tasks ran");
    let (a_dir, b_dir) = (
        exe.task_directory(&a.key()).map_err(|e| e.to_string())?,
        exe.task_directory(&b.key()).map_err(|e| e.to_string())?,
    );
    let cache = exe.cache_directory();
    drop(exe);
    std::fs::copy(b_dir.join("task.bin"), a_dir.join("task.bin")).unwrap();
    std::fs::remove_file(a_dir.join("result.bin")).unwrap();
    let status = Proc::new(std::env::current_exe().unwrap())
        .args(["__pitch-worker", "run", cache.to_str().unwrap(), &a.key()])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(!status.success(), "the worker ran a foreign task file");
    match pitch::__private::read_result(&cache, &a.key())? {
        Err(TaskError::Store { detail, .. }) => ensure!(
            detail.contains("foreign") && detail.contains(&b.key()),
            "{detail}"
        ),
        other => return Err(format!("the foreign task file ran: {other:?}")),
    }
    Ok(())
}

/// Slurm takes an output path holding a backslash literally (no `%j` in it): a cache
/// directory with a backslash in its path is refused when a Slurm batch executor is built.
fn a_slurm_cache_path_with_a_backslash_is_refused() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let r = pitch::SlurmClusterExecutor::builder()
        .cache_directory(d.path().join("runs\\1").join("cache"))
        .build();
    ensure!(
        matches!(&r, Err(Error::Config(m)) if m.contains("runs\\1") && m.contains("Slurm")),
        "{:?}",
        r.err()
    );
    Ok(())
}

/// Flux reads `{{id}}` in a job's output path as the job id and has no escape for it: a cache
/// directory whose path holds `{{` is refused when a Flux batch executor is built (its jobs
/// would fail, their logs going to a directory that does not exist).
fn a_flux_cache_path_with_braces_is_refused() -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let r = pitch::FluxClusterExecutor::builder()
        .cache_directory(d.path().join("runs{{id}}").join("cache"))
        .build();
    ensure!(
        matches!(&r, Err(Error::Config(m)) if m.contains("runs{{id}}") && m.contains("Flux")),
        "{:?}",
        r.err()
    );
    Ok(())
}

/// `pitch status`, `results`, `cancel` and `gc` (`pitch::Cache`) read a task's files through
/// its directory's checked handle: a task directory replaced by a link to a folder holding
/// another task's files is named among what the listing could not read, and nothing there is
/// read (the other task's command is not listed under this key); a `stdout` planted as a link
/// in a task directory is not shown as the task's output.
fn a_listing_never_follows_a_link_in_a_task_directory() -> Result<(), String> {
    let d = open_tempdir();
    let cache = d.path().join("cache");
    let elsewhere = d.path().join("attacker");
    std::fs::create_dir(&elsewhere).unwrap();
    let exe = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .build()
        .map_err(|e| e.to_string())?;
    let run = |c: Command| -> Result<(String, PathBuf), String> {
        let f = exe.submit_command(c);
        f.result().map_err(|e| e.to_string())?;
        let dir = exe.task_directory(&f.key()).map_err(|e| e.to_string())?;
        Ok((f.key(), dir))
    };
    let (secret, dir) = run(Command::new("echo").arg("secret-1"))?;
    let (_, forged_dir) = run(Command::new("echo").arg("FORGED"))?;
    let (quiet, quiet_dir) = run(Command::new("true"))?;
    drop(exe);
    // The secret task's directory: a link to the attacker's copy of the forged task's files.
    let planted = elsewhere.join("task");
    std::fs::create_dir(&planted).unwrap();
    for f in ["task.bin", "result.bin", "stdout"] {
        std::fs::copy(forged_dir.join(f), planted.join(f)).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&planted, &dir).unwrap();
    // The quiet task (no output, so no stdout file): a stdout linked to a file outside.
    let precious = elsewhere.join("precious");
    std::fs::write(&precious, "not pitch's").unwrap();
    std::os::unix::fs::symlink(&precious, quiet_dir.join("stdout")).unwrap();

    let (tasks, unreadable) = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks_and_unreadable())
        .map_err(|e| e.to_string())?;
    let forged_listed = tasks
        .iter()
        .filter(|t| {
            t.argv
                .as_ref()
                .is_some_and(|a| a.contains(&"FORGED".into()))
        })
        .count();
    ensure!(
        !tasks.iter().any(|t| t.key == secret) && forged_listed == 1,
        "the linked task directory was read: {tasks:?}"
    );
    let link = dir.display().to_string();
    ensure!(
        unreadable.iter().any(|(path, why)| path.starts_with(&dir)
            && why.contains(&format!("{link} is a symbolic link"))),
        "the link is not named: {unreadable:?}"
    );
    let quiet = tasks.iter().find(|t| t.key == quiet).ok_or("quiet task")?;
    ensure!(
        quiet.stdout.is_none(),
        "a linked stdout is shown as the task's output: {:?}",
        quiet.stdout
    );
    ensure!(
        std::fs::read_to_string(&precious).unwrap() == "not pitch's",
        "written through the link"
    );
    // `pitch status` says what it skipped, and why.
    let out = Proc::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["status", "--cache-dir"])
        .arg(&cache)
        .env_remove("PITCH_PROFILE")
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains(&format!("pitch: skipped {link}/task.bin: "))
            && err.contains(&format!("{link} is a symbolic link")),
        "{err}"
    );
    Ok(())
}

/// A link planted in the cache's `jobs/` folder, where the scheduler marker or a journal
/// record should be (pointing at another cache's, whose jobs this executor would then watch
/// or cancel): building a queue executor on the cache is refused, naming the link, and
/// nothing is written through it.
fn a_link_planted_in_the_jobs_folder_is_refused_when_a_queue_executor_is_built(
) -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let build = || {
        pitch::SlurmClusterExecutor::builder()
            .cache_directory(&cache)
            .build()
    };
    drop(build().map_err(|e| e.to_string())?);
    let jobs = cache.join("jobs");
    ensure!(jobs.join("scheduler").is_file(), "no marker written");
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let theirs = other.join("scheduler");
    std::fs::write(&theirs, "flux\n").unwrap();
    for name in ["scheduler", "7.job"] {
        let planted = jobs.join(name);
        let _ = std::fs::remove_file(&planted);
        std::os::unix::fs::symlink(&theirs, &planted).unwrap();
        let (path, reason) = untrusted(build())?;
        ensure!(
            path == planted && reason.contains("symbolic link"),
            "{name}: {} {reason}",
            path.display()
        );
        ensure!(
            std::fs::read_to_string(&theirs).unwrap() == "flux\n",
            "written through the link"
        );
        // `pitch status` & co. refuse it too, rather than asking another scheduler.
        if name == "scheduler" {
            let e = match pitch::Cache::open(&cache) {
                Err(e) => e.to_string(),
                Ok(_) => return Err("a linked scheduler marker was read".into()),
            };
            ensure!(
                e.contains(&planted.display().to_string()) && e.contains("symbolic link"),
                "{e}"
            );
        }
        std::fs::remove_file(&planted).unwrap();
    }
    // Back to normal without the links.
    drop(build().map_err(|e| e.to_string())?);
    Ok(())
}
