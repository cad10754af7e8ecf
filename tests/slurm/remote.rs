//! Remote submission (feature `remote`): the driver reaches the "login node" over real SSH
//! (the sshd of `cluster-tests/start-sshd.sh` on 127.0.0.1) and submits to the real local
//! Slurm there. The remote cache directory is another directory of this machine, so every
//! task file, script, binary and result really travels by SFTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pitch::{Command, Executor, Remote, Shutdown, SingleNodeExecutor, SlurmClusterExecutor};

use crate::{add, ensure, TestFn};

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    ("remote_tasks_over_ssh", remote_tasks),
    ("remote_cli_profile", remote_cli_profile),
    ("remote_detach_and_reattach", remote_detach_and_reattach),
    ("remote_refuses_unknown_hosts_and_keys", remote_refusals),
];

/// The sshd settings from `$PITCH_SSHD_DIR/env.sh`.
struct Login {
    port: u16,
    user: String,
    key: PathBuf,
    known_hosts: PathBuf,
    known_hosts_wrong: PathBuf,
    dir: PathBuf,
}

fn login() -> Result<Login, String> {
    let var = |k: &str| {
        std::env::var(k).map_err(|_| {
            format!(
                "{k} is not set: run cluster-tests/start-sshd.sh and source /tmp/pitch-sshd/env.sh"
            )
        })
    };
    Ok(Login {
        port: var("PITCH_SSH_PORT")?
            .parse()
            .map_err(|e| format!("PITCH_SSH_PORT: {e}"))?,
        user: var("PITCH_SSH_USER")?,
        key: var("PITCH_SSH_KEY")?.into(),
        known_hosts: var("PITCH_SSH_KNOWN_HOSTS")?.into(),
        known_hosts_wrong: var("PITCH_SSH_KNOWN_HOSTS_WRONG")?.into(),
        dir: var("PITCH_SSHD_DIR")?.into(),
    })
}

fn remote(l: &Login, dir: &Path) -> Remote {
    Remote::new("127.0.0.1", dir)
        .port(l.port)
        .user(&l.user)
        .identity_file(&l.key)
        .known_hosts(&l.known_hosts)
        .timeout(Duration::from_secs(20))
}

fn executor(cache: &Path, remote: Remote) -> Result<Executor, pitch::Error> {
    SlurmClusterExecutor::builder()
        .cache_directory(cache)
        .remote(remote)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .build()
}

fn files_named(root: &Path, name: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| f == name) {
                n += 1;
            }
        }
    }
    n
}

fn remote_tasks(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let local = dir.join("local");
    // A missing parent on the way to the remote cache directory is made with the server's
    // umask, not 0700 like the cache directory.
    let far = dir.join("scratch").join("remote");
    // An input computed here earlier: only the local cache has its result.
    let here = SingleNodeExecutor::builder()
        .cache_directory(&local)
        .build()
        .map_err(|e| e.to_string())?;
    ensure!(add::submit(&here, 1, 1).result() == Ok(2), "local input");
    drop(here);

    let exe = executor(&local, remote(&l, &far)).map_err(|e| e.to_string())?;
    let cached = add::submit(&exe, 1, 1);
    let a = add::submit(&exe, 2, 3);
    let b = add::submit(&exe, &a, 10);
    let c = add::submit(&exe, &cached, 100);
    let cmd = exe.submit_command(Command::new("sh").args(["-c", "echo hello from $SLURM_JOB_ID"]));
    ensure!(b.result() == Ok(15), "{:?}", b.result());
    ensure!(c.result() == Ok(102), "{:?}", c.result());
    let out = cmd.result().map_err(|e| e.to_string())?;
    let text = out.read_stdout().map_err(|e| e.to_string())?;
    ensure!(text.starts_with("hello from "), "{text:?}");
    ensure!(a.job_id().is_some(), "a Slurm job id");
    drop(exe);

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777);
    let (cache_mode, parent_mode) = (mode(&far), mode(&dir.join("scratch")));
    ensure!(
        cache_mode == 0o700 && parent_mode != 0o700 && parent_mode != 0,
        "modes: cache {cache_mode:o}, its parent {parent_mode:o}"
    );

    // The jobs ran on the remote copy; the results came back to the local cache.
    ensure!(
        files_named(&far.join("tasks"), "task.bin") == 4,
        "four task files went up"
    );
    ensure!(
        files_named(&far.join("tasks"), "result.bin") == 4,
        "the remote side has the four function results (the local input went up)"
    );
    ensure!(
        files_named(&local.join("tasks"), "result.bin") == 5,
        "the results came down (four functions and the command's): {}",
        files_named(&local.join("tasks"), "result.bin")
    );
    ensure!(
        std::fs::read_dir(far.join("bin"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 1,
        "the worker binary went up once"
    );
    let scripts = std::fs::read_dir(far.join("jobs"))
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sh"))
        .count();
    ensure!(scripts >= 2, "job scripts went up: {scripts}");

    // A rerun answers from the local cache without a connection doing any work.
    let exe = executor(&local, remote(&l, &far)).map_err(|e| e.to_string())?;
    let again = add::submit(&exe, add::submit(&exe, 2, 3), 10);
    ensure!(again.result() == Ok(15), "{:?}", again.result());
    ensure!(again.job_id().is_none(), "answered from the cache");
    Ok(())
}

fn remote_refusals(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let far = dir.join("remote");
    let fails = |remote: Remote, what: &str, wanted: &str| -> Result<(), String> {
        let started = std::time::Instant::now();
        match executor(&dir.join("cache"), remote) {
            Ok(_) => Err(format!("{what}: built an executor")),
            Err(e) => {
                let text = e.to_string();
                ensure!(text.contains(wanted), "{what}: {text}");
                ensure!(
                    started.elapsed() < Duration::from_secs(15),
                    "{what}: took {:?}",
                    started.elapsed()
                );
                Ok(())
            }
        }
    };
    let empty = dir.join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    fails(
        remote(&l, &far).known_hosts(&empty),
        "unknown host",
        "is not in",
    )?;
    fails(
        remote(&l, &far).known_hosts(&l.known_hosts_wrong),
        "changed host key",
        "does NOT match",
    )?;
    fails(
        remote(&l, &far).identity_file(l.dir.join("other_ed25519")),
        "key not authorized",
        "was refused",
    )?;
    fails(
        remote(&l, &far).port(1),
        "nothing listening",
        "cannot connect to 127.0.0.1:1",
    )?;
    fails(
        remote(&l, Path::new("relative/cache")),
        "relative remote directory",
        "must be an absolute path",
    )?;
    ensure!(!far.exists(), "nothing was created on a refused login");
    Ok(())
}

/// `pitch run --profile far` with a `[profile.far.remote]` table: the CLI submits over SSH
/// and prints the job's output once it came back.
fn remote_cli_profile(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let far = dir.join("remote");
    std::fs::write(
        dir.join("pitch.toml"),
        format!(
            "[profile.far]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n\
             [profile.far.remote]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\ndirectory = \"{}\"\n",
            l.port,
            l.user,
            l.key.display(),
            l.known_hosts.display(),
            far.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = crate::pitch_in(
        dir,
        &[
            "run",
            "--profile",
            "far",
            "--",
            "sh",
            "-c",
            "echo hi from $SLURM_JOB_ID",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(out.status.success(), "{stdout}{stderr}");
    ensure!(stdout.starts_with("hi from "), "{stdout:?} {stderr}");
    ensure!(
        files_named(&far.join("tasks"), "task.bin") == 1,
        "the task went up"
    );
    // status and cancel run here, where the scheduler is not: they say where it is.
    let out = crate::pitch_in(
        dir,
        &["run", "--detach", "--profile", "far", "--", "sleep", "3"],
    );
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = dir.join("pitch-cache");
    let cache = cache.to_str().unwrap();
    let out = crate::pitch_in(dir, &["status", "--cache-dir", cache]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains(&format!(
            "submitted over SSH to {}@127.0.0.1:{}",
            l.user, l.port
        )),
        "{err}"
    );
    let out = crate::pitch_in(dir, &["cancel", "--all", "--cache-dir", cache]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("submitted over SSH"),
        "{err}"
    );
    Ok(())
}

/// A driver that detaches while its remote job runs loses nothing: the next run re-attaches
/// to the same job (no second sbatch) and fetches its result over SSH.
fn remote_detach_and_reattach(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let (local, far) = (dir.join("local"), dir.join("remote"));
    let work = || Command::new("sh").args(["-c", "sleep 4; echo done late"]);
    let exe = executor(&local, remote(&l, &far)).map_err(|e| e.to_string())?;
    let first = exe.submit_command(work());
    let start = std::time::Instant::now();
    while first.job_id().is_none() {
        ensure!(start.elapsed() < Duration::from_secs(20), "no job id");
        std::thread::sleep(Duration::from_millis(50));
    }
    let job = first.job_id();
    exe.shutdown(Shutdown::Detach);
    drop(exe);

    let exe = executor(&local, remote(&l, &far)).map_err(|e| e.to_string())?;
    let again = exe.submit_command(work());
    let out = again.result().map_err(|e| e.to_string())?;
    ensure!(
        again.job_id() == job,
        "re-attached to {job:?}, got {:?}",
        again.job_id()
    );
    let text = out.read_stdout().map_err(|e| e.to_string())?;
    ensure!(text == "done late\n", "{text:?}");
    Ok(())
}
