//! The FluxJob drivers of what the submission through libflux adds (`flux.rs` registers
//! them): the fallback to `flux run`, a stdin task, output files, jobs queued ahead in Flux,
//! an unknown PITCH_FLUX_SUBMIT; and [`submissions`], how every driver sees the jobs its
//! tasks ran as, either way.

use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Command, CommandOutput, Executor, FluxJobExecutor, Resources, TaskError};

use super::{calls, flux_executor, instance_cores, real_bin, seen, through_flux_run};
use crate::ensure;
use crate::mpi::sorted_lines;
use crate::single_node::{temp, Collect};

/// The jobs the driver's tasks ran as, in submission order, each as the `flux run` command
/// line that submits it: the shim's log of `flux run` calls; through libflux (where no
/// `flux run` may be called), the jobspec of each job a `Started` event named (`flux job info
/// ID jobspec`, as submitted) written back as one.
pub(super) fn submissions() -> Result<Vec<String>, String> {
    let runs: Vec<String> = calls()?
        .into_iter()
        .filter(|c| c.starts_with("run "))
        .collect();
    if through_flux_run() {
        return Ok(runs);
    }
    ensure!(runs.is_empty(), "flux run was called: {runs:#?}");
    let mut ids: Vec<u64> = Vec::new();
    for e in seen().events() {
        if let pitch::EventKind::Started { job_id, .. } = e {
            let id = job_id.ok_or("a Started event without the Flux job id")?;
            ids.push(id.parse().map_err(|e| format!("job id {id:?}: {e}"))?);
        }
    }
    ids.sort();
    ids.iter()
        .map(|id| {
            let out = std::process::Command::new(real_bin())
                .args(["job", "info", "--original", &id.to_string(), "jobspec"])
                .output()
                .map_err(|e| e.to_string())?;
            let spec: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("jobspec of {id}: {e}"))?;
            as_flux_run(&spec)
        })
        .collect()
}

/// The `flux run` options (in the order pitch writes them) that submit `spec`.
fn as_flux_run(spec: &serde_json::Value) -> Result<String, String> {
    let bad = || format!("unexpected jobspec: {spec}");
    let top = &spec["resources"][0];
    let (nodes, slot) = if top["type"] == "node" {
        (top["count"].as_u64(), &top["with"][0])
    } else {
        (None, top)
    };
    let count = |kind: &str| {
        slot["with"]
            .as_array()
            .and_then(|w| w.iter().find(|r| r["type"] == kind))
            .and_then(|r| r["count"].as_u64())
    };
    let task = &spec["tasks"][0];
    let ranks = match task["count"]["total"].as_u64() {
        Some(total) => total,
        None => slot["count"].as_u64().ok_or_else(bad)? * nodes.unwrap_or(1),
    };
    let sys = &spec["attributes"]["system"];
    let mut line = format!("run -n {ranks} -c {}", count("core").ok_or_else(bad)?);
    if let Some(n) = nodes {
        line += &format!(" -N {n}");
    }
    if let Some(g) = count("gpu") {
        line += &format!(" -g {g}");
    }
    let duration = sys["duration"].as_f64().unwrap_or(0.0);
    if duration > 0.0 {
        line += &format!(" -t {duration}s");
    }
    if top["exclusive"] == true {
        line += " --exclusive";
    }
    if let Some(q) = sys["queue"].as_str() {
        line += &format!(" -q {q}");
    }
    if sys["shell"]["options"]["exit-on-error"] == 1 {
        line += " -o exit-on-error";
    }
    for word in task["command"].as_array().ok_or_else(bad)? {
        line += &format!(" {}", word.as_str().ok_or_else(bad)?);
    }
    Ok(line)
}

pub(super) fn unknown_mode_driver() -> Result<(), String> {
    let dir = temp();
    let err = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .build()
        .err()
        .ok_or("built with PITCH_FLUX_SUBMIT=flux-batch")?
        .to_string();
    ensure!(
        err.contains("PITCH_FLUX_SUBMIT=\"flux-batch\"") && err.contains("flux-run"),
        "{err}"
    );
    Ok(())
}

pub(super) fn without_libflux_driver() -> Result<(), String> {
    let dir = temp();
    let seen = Collect::default();
    let exe = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .reporter(seen.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let out = exe
        .submit_command(Command::new("true"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 0, "{out:?}");
    let warnings = seen.warnings();
    ensure!(
        warnings.len() == 1
            && warnings[0].contains("libflux cannot be used")
            && warnings[0].contains("/nonexistent/libflux-core.so.2"),
        "{warnings:#?}"
    );
    let calls = calls()?;
    ensure!(
        calls[1..] == ["run -n 1 -c 1 -o exit-on-error true"],
        "{calls:#?}"
    );
    Ok(())
}

pub(super) fn stdin_driver() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let out = exe
        .submit_command(Command::new("true").arg("stdin"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 0, "{out:?}");
    let out = exe
        .submit_command(Command::new("cat").stdin_inherit())
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 0, "{out:?}");
    let runs: Vec<String> = calls()?
        .into_iter()
        .filter(|c| c.starts_with("run "))
        .collect();
    ensure!(runs == ["run -n 1 -c 1 -o exit-on-error cat"], "{runs:#?}");
    Ok(())
}

/// What a task writes reaches its files as on SingleNode: the task directory's stdout and
/// stderr only when written, the user's own even when empty, and the end of stderr in the
/// error of a failing command.
pub(super) fn output_driver() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let out = exe
        .with_resources(Resources::new().cores(2))
        .submit_command(Command::new("sh").args(["-c", "echo out $FLUX_TASK_RANK"]))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(sorted_lines(&out) == ["out 0", "out 1"], "{out:?}");
    ensure!(out.stderr.is_none(), "an empty stderr file: {out:?}");
    let quiet = exe
        .submit_command(Command::new("true").arg("quiet"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        quiet.stdout.is_none() && quiet.stderr.is_none(),
        "{quiet:?}"
    );
    let named = dir.path().join("named.out");
    let mine = exe
        .submit_command(Command::new("true").arg("named").stdout(&named))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        mine.stdout.as_deref() == Some(named.as_path()) && named.is_file(),
        "{mine:?}"
    );
    let failed = exe
        .submit_command(Command::new("sh").args(["-c", "echo first >&2; echo why >&2; exit 4"]))
        .result();
    match failed {
        Err(TaskError::CommandFailed {
            code, stderr_tail, ..
        }) => ensure!(
            code == 4 && stderr_tail == "first\nwhy",
            "{code} {stderr_tail:?}"
        ),
        other => return Err(format!("{other:?}")),
    }
    if !through_flux_run() {
        // A task's own stderr is never read as Flux refusing the job (flux run's stderr is).
        let mimic = exe
            .submit_command(Command::new("sh").args([
                "-c",
                "echo \"flux-run: ERROR: Invalid queue 'q' specified\" >&2; exit 1",
            ]))
            .result();
        ensure!(
            matches!(&mimic, Err(TaskError::CommandFailed { code: 1, .. })),
            "{mimic:?}"
        );
    }
    Ok(())
}

/// The most jobs of `script` Flux had active at once (pending or running, and running
/// alone) while `futures` ran.
fn most_active(
    script: &Path,
    futures: &[pitch::TaskFuture<CommandOutput>],
) -> Result<(usize, usize), String> {
    let name = script.file_name().unwrap().to_string_lossy().to_string();
    let (mut active, mut running) = (0, 0);
    let start = Instant::now();
    while futures.iter().any(|f| !f.done()) {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the tasks did not end"
        );
        let out = std::process::Command::new(real_bin())
            .args([
                "jobs",
                "--no-header",
                "--filter=pending,running",
                "--format={state}",
            ])
            .arg(format!("--name={name}"))
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        active = active.max(text.lines().count());
        running = running.max(text.lines().filter(|l| l.trim() == "RUN").count());
        std::thread::sleep(Duration::from_millis(200));
    }
    for f in futures {
        f.result().map_err(|e| e.to_string())?;
    }
    Ok((active, running))
}

pub(super) fn queue_ahead_driver() -> Result<(), String> {
    let dir = temp();
    let cores = instance_cores()? as usize;
    let script = dir
        .path()
        .join(format!("pitch-ahead-{}.sh", std::process::id()));
    std::fs::write(&script, "#!/bin/sh\nsleep 2\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let run = |exe: &Executor| {
        let futures: Vec<_> = (0..2 * cores)
            .map(|i| {
                exe.submit_command(
                    Command::new(&script)
                        .arg(i.to_string())
                        .arg(cores.to_string()),
                )
            })
            .collect();
        most_active(&script, &futures)
    };
    let exe = flux_executor(&dir.path().join("all"))?;
    let (active, running) = run(&exe)?;
    ensure!(
        active > cores && running <= cores,
        "{active} jobs active at most, {running} running ({cores} cores)"
    );
    let capped = FluxJobExecutor::builder()
        .cache_directory(dir.path().join("capped"))
        .max_cores(cores as u32)
        .build()
        .map_err(|e| e.to_string())?;
    let (active, _) = run(&capped)?;
    ensure!(
        active <= cores,
        "{active} jobs active with max_cores = {cores}"
    );
    Ok(())
}
