//! Pilot jobs (`block_allocation`) with remote submission over SSH (feature `remote`): the
//! pilots connect to a relay on the "login node" (the sshd of `cluster-tests/start-sshd.sh`),
//! which carries their connections to the driver over the executor's SSH connection. A
//! sweep with a dependency chain through both SSH clients, a pilot scancelled under its task,
//! and the relay killed under a running task; each checks that the relay, its ssh command
//! and the secret's remote copy are gone once the executor closes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{Remote, SshClient};

use crate::pilot::{builder, pilot_victim, pilot_where, records, victim_job, wait_no_pilots};
use crate::remote::{flux_instance, login, remote_with};
use crate::slurm_tools::scancel;
use crate::{add, ensure, TestFn};

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    ("remote_pilot_sweep_over_ssh", sweep_system),
    ("remote_pilot_sweep_builtin_client", sweep_builtin),
    ("remote_pilot_scancelled_mid_task", scancelled),
    ("remote_pilot_relay_killed_mid_task", relay_killed),
    ("remote_pilot_driver_killed_over_ssh", driver_killed_system),
    (
        "remote_pilot_driver_killed_builtin_client",
        driver_killed_builtin,
    ),
    ("remote_pilot_status_and_cancel_over_ssh", status_and_cancel),
    ("remote_flux_pilots_over_ssh", flux),
    ("remote_pilot_relay_that_cannot_listen", relay_cannot_listen),
    ("pilot_default_addresses_are_host_names", default_addresses),
];

/// A pilot executor submitting over SSH; its relay binds the login node's 127.0.0.1.
fn executor(local: &Path, remote: Remote) -> Result<pitch::Executor, String> {
    builder(local, Duration::from_secs(600))
        .remote(remote)
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())
}

/// The processes of the relay whose worker binary is under `far` (the remote cache
/// directory): the relay itself on the login node and, with the system's ssh, the local
/// `ssh` that runs it. (pid, command line.)
fn relay_processes(far: &Path) -> Vec<(u32, String)> {
    let far = far.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if line.contains(&far) && line.contains("__pitch-worker") && line.contains(" relay ") {
            found.push((pid, line));
        }
    }
    found
}

/// The relay on the login node: the process that runs the staged binary itself.
fn relay_pid(far: &Path) -> Option<u32> {
    relay_processes(far)
        .into_iter()
        .find(|(_, line)| line.starts_with(&far.to_string_lossy().into_owned()))
        .map(|(pid, _)| pid)
}

/// The address in the pilots' job scripts (uploaded into `far/jobs`): the relay's.
fn pilot_addresses(far: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for e in std::fs::read_dir(far.join("jobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.split("__pitch-worker pilot ").nth(1) {
                if let Some(a) = rest.split_whitespace().next() {
                    found.insert(a.trim_matches('\'').to_string());
                }
            }
        }
    }
    found
}

/// The pilots reach the driver through the relay: their address is a port on which the
/// relay process on the login node listens.
fn check_relayed(far: &Path) -> Result<u32, String> {
    let pid = relay_pid(far).ok_or_else(|| {
        format!(
            "no relay runs on the login node: {:?}",
            relay_processes(far)
        )
    })?;
    let addresses = pilot_addresses(far);
    ensure!(addresses.len() == 1, "pilot addresses {addresses:?}");
    let address = addresses.into_iter().next().unwrap_or_default();
    let port = address.rsplit(':').next().unwrap_or_default().to_string();
    let out = std::process::Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains(&format!("pid={pid},")),
        "the pilots' address {address} is not the relay's (pid {pid}): {text}"
    );
    Ok(pid)
}

/// Once the executor closed: no relay process, no ssh running one, no pilot, and (when it
/// closed, not killed) no secret on either side.
fn check_cleaned(local: &Path, far: &Path, closed: bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = relay_processes(far);
        if left.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "relay processes left after the executor closed: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dirs = if closed {
        vec![local.join("jobs"), far.join("jobs")]
    } else {
        Vec::new()
    };
    for dir in dirs {
        let secrets: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "secret"))
            .collect();
        ensure!(secrets.is_empty(), "secrets left: {secrets:?}");
    }
    wait_no_pilots(local, Duration::from_secs(30))
}

fn sweep_system(dir: &Path) -> Result<(), String> {
    sweep(dir, SshClient::System)
}

fn sweep_builtin(dir: &Path) -> Result<(), String> {
    sweep(dir, SshClient::Builtin)
}

/// 20 tasks and a dependency chain through 2 pilots whose only way to the driver is the
/// relay; then nothing of the relay is left.
fn sweep(dir: &Path, client: SshClient) -> Result<(), String> {
    let l = login()?;
    let (local, far) = (dir.join("local"), dir.join("remote"));
    let exe = executor(&local, remote_with(&l, &far, client))?;
    let out = pitch::wait_all(pilot_where::map(&exe, 0..20)).map_err(|e| e.to_string())?;
    let workers: BTreeSet<&(String, u32)> = out.iter().collect();
    ensure!(
        !workers.is_empty() && workers.len() <= 2,
        "20 tasks ran in {} processes, not in at most 2 pilots: {workers:?}",
        workers.len()
    );
    ensure!(
        workers.iter().all(|(job, _)| !job.is_empty()),
        "a task ran outside a Slurm job: {workers:?}"
    );
    check_relayed(&far)?;
    let a = add::submit(&exe, 1, 1);
    let b = add::submit(&exe, &a, 10);
    let c = add::submit(&exe, &b, 100);
    ensure!(c.result() == Ok(112), "{:?}", c.result());
    drop(exe);
    ensure!(
        records(&local) == 23,
        "{} records for 23 tasks",
        records(&local)
    );
    check_cleaned(&local, &far, true)
}

/// How a pilot is lost under its task.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    /// Its job scancelled.
    Scancel,
    /// The relay on the login node killed: the pilot's connection breaks.
    RelayKilled,
}

fn scancelled(dir: &Path) -> Result<(), String> {
    lost_mid_task(dir, Loss::Scancel)
}

fn relay_killed(dir: &Path) -> Result<(), String> {
    lost_mid_task(dir, Loss::RelayKilled)
}

/// A pilot lost under its task over SSH: the task runs again on a new pilot (the default
/// retry; through a new relay when the relay was killed), recorded once, the attempt naming
/// the lost pilot.
fn lost_mid_task(dir: &Path, loss: Loss) -> Result<(), String> {
    let l = login()?;
    let (local, far, marks) = (dir.join("local"), dir.join("remote"), dir.join("marks"));
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let exe = executor(&local, remote_with(&l, &far, SshClient::System))?;
    let f = pilot_victim::submit(&exe, marks.clone(), 60_000);
    let victim = victim_job(&marks)?;
    let relay = check_relayed(&far)?;
    match loss {
        Loss::Scancel => scancel(&victim)?,
        Loss::RelayKilled => kill(relay)?,
    }
    let value = f.result().map_err(|e| e.to_string())?;
    ensure!(
        value.starts_with("rerun ") && value != format!("rerun {victim}"),
        "{value} (the victim was {victim})"
    );
    if loss == Loss::RelayKilled {
        let again = relay_pid(&far);
        ensure!(
            again.is_some_and(|p| p != relay),
            "a new relay runs: {again:?} (the killed one was {relay})"
        );
    }
    drop(exe);
    ensure!(
        records(&local) == 2,
        "{} records of one task retried once",
        records(&local)
    );
    let tasks = pitch::Cache::open(&local)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    ensure!(
        tasks.len() == 1
            && matches!(tasks[0].state, pitch::TaskState::Finished)
            && tasks[0].attempts.len() == 1
            && tasks[0].attempts[0].job_id.as_deref() == Some(victim.as_str()),
        "tasks {tasks:?} (the victim was {victim})"
    );
    check_cleaned(&local, &far, true)
}

fn kill(pid: u32) -> Result<(), String> {
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(killed.success(), "kill {pid}: {killed:?}");
    Ok(())
}

/// `slurm-remote-pilot-driver LOCAL FAR MARKS CLIENT`: one long task through a pilot over
/// SSH (`system` or `builtin` client), waited for.
pub(crate) fn driver(local: &Path, far: &Path, marks: &Path, client: &str) -> i32 {
    let client = if client == "builtin" {
        SshClient::Builtin
    } else {
        SshClient::System
    };
    let run = || -> Result<String, String> {
        let exe = executor(local, remote_with(&login()?, far, client))?;
        pilot_victim::submit(&exe, marks.to_path_buf(), 300_000)
            .result()
            .map_err(|e| e.to_string())
    };
    match run() {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn driver_killed_system(dir: &Path) -> Result<(), String> {
    driver_killed(dir, "system")
}

fn driver_killed_builtin(dir: &Path) -> Result<(), String> {
    driver_killed(dir, "builtin")
}

/// The driver killed with SIGKILL while its pilot runs a task: the relay on the login node
/// sees its SSH channel close and exits, and the pilot, its connection gone, leaves.
fn driver_killed(dir: &Path, client: &str) -> Result<(), String> {
    let (local, far, marks) = (dir.join("local"), dir.join("remote"), dir.join("marks"));
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let arg = |p: &Path| p.to_string_lossy().into_owned();
    let mut child = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args([
            "slurm-remote-pilot-driver",
            &arg(&local),
            &arg(&far),
            &arg(&marks),
            client,
        ])
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = victim_job(&marks).and_then(|_| check_relayed(&far));
    let _ = child.kill();
    let _ = child.wait();
    started?;
    check_cleaned(&local, &far, false)
}

/// `pitch status` and `pitch cancel --all` with the profile whose `[remote]` table reaches
/// the login node: they ask its scheduler over SSH and see the remote pilots.
fn status_and_cancel(dir: &Path) -> Result<(), String> {
    let l = login()?;
    let (local, far, marks) = (dir.join("local"), dir.join("remote"), dir.join("marks"));
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let exe = executor(&local, remote_with(&l, &far, SshClient::System))?;
    let f = pilot_victim::submit(&exe, marks.clone(), 120_000);
    let pilot = victim_job(&marks)?;
    std::fs::write(
        dir.join("pitch.toml"),
        format!(
            "[profile.far]\nbackend = \"slurm\"\ncache_directory = \"{}\"\n\
             [profile.far.remote]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\ndirectory = \"{}\"\n",
            local.display(),
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
    // Without the profile: where the jobs went, as for any remote cache directory.
    let cache = local.to_string_lossy().into_owned();
    let bare = crate::pitch_in(dir, &["status", "--cache-dir", &cache]);
    ensure!(
        said(&bare).contains("submitted over SSH") && said(&bare).contains("--profile"),
        "status without the profile: {}",
        said(&bare)
    );
    // A profile that reaches another login node (the same sshd by another name) is
    // refused: its scheduler does not know these jobs.
    let known = dir.join("known_hosts_localhost");
    let line = std::fs::read_to_string(&l.known_hosts).map_err(|e| e.to_string())?;
    std::fs::write(&known, line.replace("[127.0.0.1]:", "[localhost]:"))
        .map_err(|e| e.to_string())?;
    let other = pitch::Cache::open(&local)
        .map_err(|e| e.to_string())?
        .over_ssh(
            Remote::new("localhost", &far)
                .client(SshClient::System)
                .port(l.port)
                .user(&l.user)
                .identity_file(&l.key)
                .known_hosts(&known),
        )
        .map_err(|e| e.to_string())?
        .pilot_jobs();
    ensure!(
        other
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not to root@localhost")),
        "another login node: {other:?}"
    );
    let status = crate::pitch_in(dir, &["status", "--profile", "far"]);
    let text = said(&status);
    ensure!(
        text.contains("1 pilot job: ") && text.contains(&pilot),
        "status: {text}"
    );
    let json = crate::pitch_in(dir, &["status", "--json", "--profile", "far"]);
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).map_err(|e| format!("{e}: {}", said(&json)))?;
    ensure!(v["pilots"].get(&pilot).is_some(), "{v}");
    let cancel = crate::pitch_in(dir, &["cancel", "--all", "--profile", "far"]);
    let text = said(&cancel);
    ensure!(
        cancel.status.success() && text.contains("(1 of them pilot job)"),
        "cancel: {text}"
    );
    // Its task was lost with it and runs again on a new pilot (the default retry).
    let value = f.result().map_err(|e| e.to_string())?;
    ensure!(
        value.starts_with("rerun ") && value != format!("rerun {pilot}"),
        "{value} (the cancelled pilot was {pilot})"
    );
    drop(exe);
    check_cleaned(&local, &far, true)
}

/// FluxClusterExecutor pilots over SSH against the real Flux instance (see
/// `remote::flux_instance`; not run without one unless PITCH_REAL_FLUX=1): each pilot is a
/// `flux batch` job that reaches the driver through the relay.
fn flux(dir: &Path) -> Result<(), String> {
    let Some((uri, flux_dir)) = flux_instance("remote_flux_pilots_over_ssh")? else {
        return Ok(());
    };
    let l = login()?;
    let (local, far) = (dir.join("local"), dir.join("remote"));
    let remote = remote_with(&l, &far, SshClient::System)
        .env("FLUX_URI", &uri)
        .path(&flux_dir);
    let exe = pitch::FluxClusterExecutor::builder()
        .cache_directory(&local)
        .remote(remote)
        .poll_interval(Duration::from_millis(200))
        .max_poll_interval(Duration::from_secs(1))
        .nfs_grace(Duration::from_secs(1))
        .block_allocation(true)
        .max_workers(2)
        .pilot_address("127.0.0.1")
        .idle_timeout(Duration::from_secs(5))
        .resources(pitch::Resources::new().run_time_max(Duration::from_secs(600)))
        .build()
        .map_err(|e| e.to_string())?;
    let a = add::submit(&exe, 1, 1);
    let b = add::submit(&exe, &a, 10);
    let sum = pitch::wait_all(add::map(&exe, (100..110).map(|i| (i, 1))))
        .map_err(|e| e.to_string())?
        .into_iter()
        .sum::<i64>();
    ensure!(sum == 1055, "the map's sum {sum}");
    ensure!(b.result() == Ok(12), "{:?}", b.result());
    check_relayed(&far)?;
    drop(exe);
    ensure!(
        records(&local) == 12,
        "{} records for 12 tasks",
        records(&local)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !relay_processes(&far).is_empty() {
        ensure!(
            Instant::now() < deadline,
            "relay processes left: {:?}",
            relay_processes(&far)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A relay address the login node cannot listen on: the tasks fail with the relay's own
/// words (with each client), and no relay or pilot is left.
fn relay_cannot_listen(dir: &Path) -> Result<(), String> {
    let l = login()?;
    for client in [SshClient::System, SshClient::Builtin] {
        let name = format!("{client:?}");
        let (local, far) = (
            dir.join(format!("local-{name}")),
            dir.join(format!("far-{name}")),
        );
        let exe = builder(&local, Duration::from_secs(600))
            .remote(remote_with(&l, &far, client))
            .pilot_address("no-such-host.invalid")
            .build()
            .map_err(|e| e.to_string())?;
        let e = add::submit(&exe, 1, 2)
            .result()
            .err()
            .ok_or("a task ran without a relay")?
            .to_string();
        ensure!(
            e.contains("relay") && e.contains("cannot listen on no-such-host.invalid"),
            "{name}: {e}"
        );
        drop(exe);
        ensure!(
            relay_processes(&far).is_empty(),
            "{name}: {:?}",
            relay_processes(&far)
        );
        wait_no_pilots(&local, Duration::from_secs(10))?;
    }
    Ok(())
}

/// Without `pilot_address`, pilots connect to the host name of the machine that listens for
/// them: the driver's, or with remote submission the login node's (where the relay runs).
/// Here both are this machine, whose name must resolve to loopback addresses only (the tests
/// never listen elsewhere); on a machine where it does not, the test says so and runs nothing.
fn default_addresses(dir: &Path) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let out = std::process::Command::new("hostname")
        .output()
        .map_err(|e| format!("hostname: {e}"))?;
    let host = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(!host.is_empty(), "hostname printed nothing");
    let resolved: Vec<std::net::SocketAddr> = (host.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback()) {
        eprintln!(
            "pilot_default_addresses_are_host_names: NOT RUN: this machine's name {host} \
             resolves to {resolved:?}, not only loopback addresses"
        );
        return Ok(());
    }
    let l = login()?;
    for remote in [false, true] {
        let (local, far) = (
            dir.join(format!("local-{remote}")),
            dir.join(format!("far-{remote}")),
        );
        let mut b = pitch::SlurmClusterExecutor::builder()
            .cache_directory(&local)
            .poll_interval(Duration::from_millis(500))
            .max_poll_interval(Duration::from_secs(2))
            .nfs_grace(Duration::from_secs(1))
            .block_allocation(true)
            .max_workers(1)
            .idle_timeout(Duration::from_secs(5))
            .resources(pitch::Resources::new().run_time_max(Duration::from_secs(600)));
        if remote {
            b = b.remote(remote_with(&l, &far, SshClient::System));
        }
        let exe = b.build().map_err(|e| e.to_string())?;
        let sum = pitch::wait_all(add::map(&exe, (0..4).map(|i| (i, 1))))
            .map_err(|e| e.to_string())?
            .into_iter()
            .sum::<i64>();
        ensure!(sum == 10, "remote {remote}: the sum {sum}");
        let scripts = if remote { &far } else { &local };
        let addresses = pilot_addresses(scripts);
        ensure!(
            addresses.len() == 1 && addresses.iter().all(|a| a.starts_with(&format!("{host}:"))),
            "remote {remote}: pilot addresses {addresses:?}, not {host}:PORT"
        );
        if remote {
            check_relayed(&far)?;
        }
        drop(exe);
        if remote {
            check_cleaned(&local, &far, true)?;
        } else {
            wait_no_pilots(&local, Duration::from_secs(30))?;
        }
    }
    Ok(())
}
