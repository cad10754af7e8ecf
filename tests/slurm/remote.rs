//! Remote submission (feature `remote`): the driver reaches the "login node" over real SSH
//! (the sshd daemons of `cluster-tests/start-sshd.sh`: one on 127.0.0.1, and a login host
//! with a one-time code behind a jump host) and submits to the real local Slurm there. The
//! remote cache directory is another directory of this machine, so every task file, script,
//! binary and result really travels over SSH. The tests run with the system's `ssh` (the
//! default client) unless their name says `builtin`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{
    Command, Executor, FluxClusterExecutor, Remote, Shutdown, SingleNodeExecutor,
    SlurmClusterExecutor, SshClient,
};

use crate::{add, ensure, TestFn};

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    ("remote_tasks_over_ssh", remote_tasks),
    ("remote_tasks_builtin_client", remote_tasks_builtin),
    ("remote_cli_profile", remote_cli_profile),
    (
        "remote_status_checks_the_remote_cache_directory",
        remote_status_checks_the_remote_cache,
    ),
    ("remote_render_connects_to_nothing", remote_render_offline),
    ("remote_detach_and_reattach", remote_detach_and_reattach),
    ("remote_refuses_unknown_hosts_and_keys", remote_refusals),
    (
        "remote_builtin_refuses_unknown_hosts_and_keys",
        remote_refusals_builtin,
    ),
    ("remote_jump_host_one_time_code_once", remote_jump_host_mfa),
    ("remote_poller_ticks_during_an_upload", remote_poller_ticks),
    ("remote_flux_cluster_over_ssh", remote_flux),
];

pitch::task! {
    pub fn byte_count(data: String) -> usize { data.len() }
}

/// The sshd settings from `$PITCH_SSHD_DIR/env.sh`.
pub(crate) struct Login {
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) key: PathBuf,
    pub(crate) known_hosts: PathBuf,
    known_hosts_wrong: PathBuf,
    dir: PathBuf,
}

pub(crate) fn login() -> Result<Login, String> {
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
    remote_with(l, dir, SshClient::Auto)
}

pub(crate) fn remote_with(l: &Login, dir: &Path, client: SshClient) -> Remote {
    Remote::new("127.0.0.1", dir)
        .client(client)
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
    files_matching(root, &|n| n == name)
}

fn files_matching(root: &Path, name: &dyn Fn(&str) -> bool) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| name(&f.to_string_lossy())) {
                n += 1;
            }
        }
    }
    n
}

fn remote_tasks(dir: &Path) -> Result<(), String> {
    remote_tasks_with(dir, SshClient::System)
}

fn remote_tasks_builtin(dir: &Path) -> Result<(), String> {
    remote_tasks_with(dir, SshClient::Builtin)
}

fn remote_tasks_with(dir: &Path, client: SshClient) -> Result<(), String> {
    let l = login()?;
    let remote = |l: &Login, far: &Path| remote_with(l, far, client);
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
    remote_refusals_with(dir, SshClient::System)
}

fn remote_refusals_builtin(dir: &Path) -> Result<(), String> {
    remote_refusals_with(dir, SshClient::Builtin)
}

fn remote_refusals_with(dir: &Path, client: SshClient) -> Result<(), String> {
    let l = login()?;
    let remote = |l: &Login, far: &Path| remote_with(l, far, client);
    let far = dir.join("remote");
    let fails = |remote: Remote, what: &str, wanted: &str| -> Result<(), String> {
        let started = std::time::Instant::now();
        match executor(&dir.join("cache"), remote) {
            Ok(_) => Err(format!("{what}: built an executor")),
            Err(e) => {
                let text = e.to_string();
                ensure!(text.contains(wanted), "{what}: {text}");
                // The system client says what ssh said, too.
                ensure!(
                    client == SshClient::Builtin
                        || wanted == "must be an absolute path"
                        || wanted.contains("ssh client")
                        || text.contains("ssh said"),
                    "{what}: {text}"
                );
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
    if client == SshClient::Builtin {
        fails(
            remote(&l, &far).ssh_config(dir.join("ssh_config")),
            "an ssh configuration for the built-in client",
            "needs the system's ssh client",
        )?;
    }
    ensure!(!far.exists(), "nothing was created on a refused login");
    // A remote cache directory in a folder every user may write (without the sticky bit) is
    // checked on the login node like a local one, and refused naming the folder.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    match executor(&dir.join("cache"), remote(&l, &open.join("cache"))) {
        Err(e @ pitch::Error::Untrusted { .. }) => {
            let text = e.to_string();
            ensure!(
                text.contains(&format!(
                    "{} is writable by every user",
                    std::fs::canonicalize(&open).unwrap().display()
                )) && text.contains("on the remote side"),
                "the refusal names the folder: {text}"
            );
        }
        Err(e) => return Err(format!("refused for another reason: {e}")),
        Ok(_) => return Err("built on a remote folder every user may write".into()),
    }
    Ok(())
}

/// `pitch run --profile far` with a `[profile.far.remote]` table: the CLI submits over SSH
/// and prints the job's output once it came back.
fn remote_cli_profile(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let far = dir.join("remote");
    // The user's ssh configuration has what suits their terminal sessions and would break
    // pitch's: a remote command, going to the background after login, their own multiplexing.
    let config = dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  RemoteCommand echo from-the-config\n  RequestTTY force\n  \
             ForkAfterAuthentication yes\n  ControlMaster auto\n  ControlPath {}/cm-%C\n  \
             ControlPersist 10m\n",
            dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("pitch.toml"),
        format!(
            "[profile.far]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n\
             [profile.far.remote]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\ndirectory = \"{}\"\n\
             ssh_config = \"{}\"\n",
            l.port,
            l.user,
            l.key.display(),
            l.known_hosts.display(),
            far.display(),
            config.display()
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
    ensure!(
        masters_of(&config).is_empty(),
        "the master ended with pitch"
    );

    // pitch killed (no destructor runs): its master connection does not outlive it.
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["run", "--profile", "far", "--", "sleep", "4"])
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while masters_of(&config).is_empty() {
        ensure!(Instant::now() < deadline, "no master came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill().map_err(|e| e.to_string())?;
    run.wait().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !masters_of(&config).is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the master outlived pitch: {:?}",
            masters_of(&config)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// `pitch status` and `pitch cancel --profile far` check the remote cache directory as an
/// executor's build does, before they ask the login node anything: made writable by every
/// user after the jobs went there, it is refused naming it, its owner and its mode (with
/// either client); `pitch results` asks the login node nothing and still works.
fn remote_status_checks_the_remote_cache(dir: &Path) -> Result<(), String> {
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
            far.display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let said = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = crate::pitch_in(dir, &["run", "--profile", "far", "--", "echo", "hi"]);
    ensure!(out.status.success(), "{}", said(&out));
    let out = crate::pitch_in(dir, &["status", "--profile", "far"]);
    ensure!(out.status.success(), "before: {}", said(&out));
    let mode = |m: u32| {
        std::fs::set_permissions(&far, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(0o777);
    let far_seen = std::fs::canonicalize(&far).unwrap();
    let refusal = format!(
        "refusing the cache directory {far}: {far} is writable by every user (owner ",
        far = far_seen.display()
    );
    for args in [&["status"][..], &["status", "--json"], &["cancel", "--all"]] {
        let out = crate::pitch_in(dir, &[args, &["--profile", "far"]].concat());
        let text = said(&out);
        ensure!(
            !out.status.success()
                && text.contains(&refusal)
                && text.contains("mode 0777")
                && text.contains("(on the remote side)"),
            "{args:?} on a remote cache directory every user may write: {text}"
        );
    }
    let local = dir.join("pitch-cache");
    for client in [SshClient::System, SshClient::Builtin] {
        match pitch::Cache::open(&local)
            .map_err(|e| e.to_string())?
            .over_ssh(remote_with(&l, &far, client))
        {
            Err(e @ pitch::Error::Untrusted { .. }) => {
                ensure!(e.to_string().contains(&refusal), "{client:?}: {e}")
            }
            Err(e) => return Err(format!("{client:?}: refused for another reason: {e}")),
            Ok(_) => {
                return Err(format!(
                    "{client:?}: used a remote folder every user may write"
                ))
            }
        }
    }
    let out = crate::pitch_in(dir, &["results", "--profile", "far"]);
    ensure!(out.status.success(), "results: {}", said(&out));
    mode(0o700);
    let out = crate::pitch_in(dir, &["status", "--profile", "far"]);
    ensure!(out.status.success(), "after: {}", said(&out));
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
    // Waits for sbatch's answer however long the submission takes under load (an upload
    // of the staged binary and an SSH round trip; more than 20 s was seen in CI).
    let job = first.wait_job_id();
    ensure!(
        job.is_some(),
        "no job id; the task ended: {:?}",
        first.error()
    );
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

/// Counts the lines of `file` that hold `needle` (0 when it does not exist).
fn lines_with(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .map(|t| t.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// The authentications so far: prompts answered, one-time codes accepted by the login host,
/// logins to the jump host.
fn authentications(d: &Path) -> (usize, usize, usize) {
    (
        lines_with(&d.join("mfa/askpass.log"), ""),
        lines_with(&d.join("login.log"), "Accepted keyboard-interactive"),
        lines_with(&d.join("jump.log"), "Accepted publickey"),
    )
}

/// The pids of the ssh masters (`-M`) started with the configuration file `config`.
fn masters_of(config: &Path) -> Vec<u32> {
    let config = config.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        // The ssh itself, not the watchdog shell around it.
        let ssh = words
            .first()
            .is_some_and(|w| w == "ssh" || w.ends_with("/ssh"));
        if ssh && words.iter().any(|w| w == "-M") && words.contains(&config) {
            pids.push(pid);
        }
    }
    pids
}

/// A user at a centre with a jump host and MFA: the profile names a `Host` alias of their
/// ssh configuration (ProxyJump to the jump host, the login host asks for a one-time code
/// after the key). A sweep of 6 jobs asks for the code once; a master connection that drops
/// during a run is opened again (one more code) and the run ends well.
fn remote_jump_host_mfa(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let (Ok(config), Ok(askpass)) = (
        std::env::var("PITCH_SSH_CONFIG"),
        std::env::var("PITCH_SSH_ASKPASS"),
    ) else {
        return Err(
            "PITCH_SSH_CONFIG/PITCH_SSH_ASKPASS are not set: run cluster-tests/start-sshd.sh \
             and source /tmp/pitch-sshd/env.sh"
                .into(),
        );
    };
    // This test's own askpass in front of the shared one: its log counts this test's
    // prompts alone (other suites may log in through the same jump host meanwhile, so the
    // daemons' counts are lower bounds only).
    let own_askpass = dir.join("askpass");
    std::fs::write(
        &own_askpass,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\nexec {askpass} \"$@\"\n",
            dir.join("prompts.log").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        &own_askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| e.to_string())?;
    let askpass = own_askpass;
    let counts = || {
        let (_, codes, jumps) = authentications(&l.dir);
        (lines_with(&dir.join("prompts.log"), ""), codes, jumps)
    };
    // At least as many codes and jump logins as this test's prompts: each login asks once.
    let grew = |before: (usize, usize, usize), after: (usize, usize, usize), n: usize| {
        after.0 == before.0 + n && after.1 >= before.1 + n && after.2 >= before.2 + n
    };
    // This test's own copy: its path tells this test's masters from others'.
    let mine = dir.join("ssh_config");
    std::fs::copy(&config, &mine).map_err(|e| format!("{config}: {e}"))?;
    let far = dir.join("remote");
    std::fs::write(
        dir.join("pitch.toml"),
        format!(
            "[profile.mfa]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n\
             [profile.mfa.remote]\nhost = \"pitch-login\"\nssh_config = \"{}\"\n\
             directory = \"{}\"\nclient = \"system\"\n",
            mine.display(),
            far.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let pitch = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"));
        c.args(args)
            .current_dir(dir)
            .env_remove("PITCH_PROFILE")
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };

    let before = counts();
    let out = pitch(&[
        "sweep",
        "-q",
        "--profile",
        "mfa",
        "--param",
        "i=1..6",
        "--",
        "sh",
        "-c",
        "echo point $0",
        "{i}",
    ])
    .output()
    .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "the sweep failed: {err}");
    ensure!(
        files_named(&far.join("tasks"), "task.bin") == 6,
        "six tasks went up through the jump host"
    );
    let after = counts();
    ensure!(
        grew(before, after, 1),
        "one prompt, one code, one login through the jump host for the whole sweep: \
         (prompts, codes, jump logins) {before:?} -> {after:?}"
    );
    // Ended by its watchdog once pitch has closed the pipe: a moment after pitch exits.
    let until = Instant::now() + Duration::from_secs(10);
    while !masters_of(&mine).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        masters_of(&mine).is_empty(),
        "the master ended with the run"
    );

    // The master connection drops while a job runs: the next command opens another one.
    let before = after;
    let run = pitch(&[
        "run",
        "--profile",
        "mfa",
        "--",
        "sh",
        "-c",
        "sleep 6; echo survived",
    ])
    .spawn()
    .map_err(|e| e.to_string())?;
    // A bound on waiting (the batch window, a loaded login node), not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(180);
    // Submitted (the job's task file is up), then the connection is cut.
    while files_named(&far.join("tasks"), "task.bin") < 7 {
        ensure!(Instant::now() < deadline, "the run never submitted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let masters = masters_of(&mine);
    ensure!(masters.len() == 1, "one master: {masters:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &masters[0].to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(killed.success(), "kill {}", masters[0]);
    let out = run.wait_with_output().map_err(|e| e.to_string())?;
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(out.status.success(), "{stdout}{err}");
    ensure!(stdout.contains("survived"), "{stdout:?} {err}");
    let after = counts();
    ensure!(
        grew(before, after, 2),
        "the first connection and the one after the drop: {before:?} -> {after:?}"
    );

    // A wrong code: the login is refused, and pitch says so at once.
    let refused_before = lines_with(&l.dir.join("login.log"), "Failed keyboard-interactive");
    let wrong = dir.join("wrong-askpass");
    std::fs::write(&wrong, "#!/bin/sh\necho 000000\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let out = pitch(&["run", "--profile", "mfa", "--", "true"])
        .env("SSH_ASKPASS", &wrong)
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("was refused") && err.contains("ssh said"),
        "a wrong one-time code: {err}"
    );
    ensure!(
        counts().0 == after.0,
        "the wrong code's askpass, not this test's, answered: {:?}",
        counts()
    );
    ensure!(
        lines_with(&l.dir.join("login.log"), "Failed keyboard-interactive") > refused_before,
        "the login host refused no code"
    );
    Ok(())
}

/// A relay on 127.0.0.1 in front of the sshd that, when `slow` is set, lets the driver's
/// bytes through at `rate` bytes a second (a slow uplink); the login node's answers are not
/// slowed. Returns its port.
fn throttled_relay(
    to: u16,
    slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rate: f64,
) -> Result<u16, String> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let (mut s_in, mut c_out) = (server, client);
            let slow = slow.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                // Bytes sent since the link got slow (or was last idle), and since when.
                let mut slowed: Option<(f64, Instant)> = None;
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if !slow.load(Ordering::Relaxed) {
                        slowed = None;
                        continue;
                    }
                    let (sent, since) = slowed.get_or_insert((0.0, Instant::now()));
                    // Time when nothing was sent is no credit for a burst later.
                    let idle = Duration::from_secs_f64(*sent / rate) + Duration::from_millis(50);
                    if since.elapsed() > idle {
                        (*sent, *since) = (0.0, Instant::now());
                    }
                    *sent += n as f64;
                    let due = Duration::from_secs_f64(*sent / rate);
                    if let Some(wait) = due.checked_sub(since.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Ok(port)
}

/// A large upload over a slow uplink does not stop the poller: a job that ends meanwhile
/// has its result while the upload is still going.
fn remote_poller_ticks(dir: &Path) -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let l = login()?;
    let slow = Arc::new(AtomicBool::new(false));
    // 40 MiB at 4 MiB/s: a 10 s upload.
    let rate = 4.0 * 1024.0 * 1024.0;
    let port = throttled_relay(l.port, slow.clone(), rate)?;
    // The relay is another address for the same host key.
    let key = std::fs::read_to_string(&l.known_hosts).map_err(|e| e.to_string())?;
    let key = key.split_once(' ').map(|(_, k)| k.trim()).unwrap_or("");
    let known = dir.join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{port} {key}\n")).map_err(|e| e.to_string())?;
    let far = dir.join("remote");
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(dir.join("local"))
        .remote(
            remote_with(&l, &far, SshClient::System)
                .port(port)
                .known_hosts(&known),
        )
        .poll_interval(Duration::from_millis(200))
        .max_poll_interval(Duration::from_millis(500))
        .nfs_grace(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    // The quick job goes up (with the worker binary) before the uplink gets slow; it runs
    // until the test opens its gate.
    let (started_file, gate) = (dir.join("started"), dir.join("gate"));
    let quick = exe.submit_command(Command::new("sh").args([
        "-c",
        "touch \"$0\"; while [ ! -e \"$1\" ]; do sleep 0.1; done; echo quick",
        &started_file.to_string_lossy(),
        &gate.to_string_lossy(),
    ]));
    // A bound on queue wait (the whole suite shares the cluster), not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !started_file.exists() {
        if quick.done() {
            return Err(format!(
                "the quick job ended unstarted: {:?}",
                quick.error()
            ));
        }
        ensure!(
            Instant::now() < deadline,
            "the quick job (job {:?}) never started",
            quick.job_id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    slow.store(true, Ordering::Relaxed);
    let large = byte_count::submit(&exe, "x".repeat(40 << 20));
    // The large task's file is on its way (its temporary name), then complete (renamed).
    let temporary = |name: &str| name.starts_with(".task.bin.up");
    let since_upload = |what: &dyn Fn(&str) -> bool| -> Result<Instant, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if files_matching(&far.join("tasks"), what) > 0 {
                return Ok(Instant::now());
            }
            ensure!(Instant::now() < deadline, "no upload seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let upload_began = since_upload(&temporary)?;
    std::fs::write(&gate, "").map_err(|e| e.to_string())?;
    let ended = {
        let far = far.clone();
        std::thread::spawn(move || loop {
            if files_named(&far.join("tasks"), "task.bin") >= 2 {
                return Instant::now();
            }
            std::thread::sleep(Duration::from_millis(10));
        })
    };
    let out = quick.result().map_err(|e| e.to_string())?;
    let quick_at = Instant::now();
    ensure!(
        out.read_stdout().map_err(|e| e.to_string())? == "quick\n",
        "the quick job's output"
    );
    let upload_ended = ended.join().map_err(|_| "the watcher panicked")?;
    slow.store(false, Ordering::Relaxed);
    ensure!(large.result() == Ok(40 << 20), "{:?}", large.result());
    let upload = upload_ended - upload_began;
    ensure!(
        upload >= Duration::from_secs(5),
        "the upload took {upload:?}: too fast to show anything"
    );
    ensure!(
        quick_at < upload_ended,
        "the quick job's result came {:?} after the upload began, after the upload ended \
         ({upload:?}): the poller waited for the upload",
        quick_at - upload_began
    );
    Ok(())
}

/// The real Flux instance of `cluster-tests/start-flux.sh` (its env.sh sourced): its
/// `FLUX_URI` and the directory of `flux`; `None` (the test `name` passes without running)
/// when there is none, unless PITCH_REAL_FLUX=1 makes that a failure.
pub(crate) fn flux_instance(name: &str) -> Result<Option<(String, PathBuf)>, String> {
    let required = std::env::var("PITCH_REAL_FLUX").ok().as_deref() == Some("1");
    let uri = std::env::var("FLUX_URI").ok().filter(|u| !u.is_empty());
    let flux_dir = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| {
            d.join("flux").is_file() && !d.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")))
        })
    });
    let (Some(uri), Some(flux_dir)) = (uri, flux_dir) else {
        ensure!(
            !required,
            "PITCH_REAL_FLUX=1 but there is no Flux instance: source /tmp/pitch-flux/env.sh"
        );
        eprintln!("{name}: no Flux instance (FLUX_URI, flux on PATH): not run");
        return Ok(None);
    };
    Ok(Some((uri, flux_dir)))
}

/// FluxClusterExecutor over SSH against the real Flux instance of
/// `cluster-tests/start-flux.sh` (source its env.sh; PITCH_REAL_FLUX=1 makes a missing
/// instance a failure, otherwise the test passes without running). A login over SSH knows
/// neither the instance (`FLUX_URI`) nor where `flux` is: without `Remote::env` and
/// `Remote::path` the task fails naming `flux`; with them it runs in the instance.
fn remote_flux(dir: &Path) -> Result<(), String> {
    let Some((uri, flux_dir)) = flux_instance("remote_flux_cluster_over_ssh")? else {
        return Ok(());
    };
    let l = login()?;
    let far = dir.join("remote");
    let exe = |remote: Remote| {
        FluxClusterExecutor::builder()
            .cache_directory(dir.join("local"))
            .remote(remote)
            .poll_interval(Duration::from_millis(200))
            .max_poll_interval(Duration::from_secs(1))
            .nfs_grace(Duration::from_secs(1))
            .build()
            .map_err(|e| e.to_string())
    };
    // The login alone does not find Flux.
    let bare = exe(remote(&l, &far))?;
    let lost = add::submit(&bare, 1, 2).result();
    ensure!(
        lost.as_ref().is_err_and(|e| e.to_string().contains("flux")),
        "without the setting: {lost:?}"
    );
    drop(bare);

    let exe = exe(remote(&l, &far).env("FLUX_URI", &uri).path(&flux_dir))?;
    let a = add::submit(&exe, 2, 3);
    let b = add::submit(&exe, &a, 10);
    let cmd = exe.submit_command(Command::new("sh").args(["-c", "echo \"in $FLUX_URI\""]));
    ensure!(b.result() == Ok(15), "{:?}", b.result());
    let out = cmd.result().map_err(|e| e.to_string())?;
    let text = out.read_stdout().map_err(|e| e.to_string())?;
    // Inside its batch job: the job's own instance, not the one it was submitted to.
    ensure!(
        text.starts_with("in local://") && !text.contains(&uri),
        "the job's Flux instance: {text:?}"
    );
    ensure!(
        files_named(&far.join("tasks"), "result.bin") >= 2,
        "the jobs wrote their results on the remote side"
    );
    Ok(())
}

/// Issue 17: `pitch render` with a remote profile shows the job script with the paths of the
/// login node's twin, and contacts nobody (the login node here does not answer at all).
fn remote_render_offline(dir: &Path) -> Result<(), String> {
    std::fs::write(
        dir.join("pitch.toml"),
        "[profile.far]\nbackend = \"slurm\"\n[profile.far.remote]\nhost = \"127.0.0.9\"\n\
         port = 1\ndirectory = \"/scratch/me/pitch\"\n",
    )
    .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["render", "--profile", "far", "--", "echo", "hi"])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let script = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        // The task's body enters the twin's task directory level by level from its root.
        script.contains("#SBATCH --output=/scratch/me/pitch/jobs/")
            && script.contains("pitch_enter /scratch/me/pitch tasks "),
        "{script}"
    );
    ensure!(
        !dir.join("pitch-cache").exists(),
        "render created the cache directory"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "render took {:?}",
        started.elapsed()
    );
    // The pilots' script: their address is the relay's on the login node, whose port is
    // chosen when it starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["render", "--pilots", "--profile", "far"])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let script = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && script
                .contains("__pitch-worker pilot LOGIN-HOST:RELAY-PORT /scratch/me/pitch/jobs/"),
        "{script}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
