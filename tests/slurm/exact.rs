//! Exact values on the real Slurm (issue 14): parameter values with newlines, tabs, quotes,
//! backslashes and `%` arrive byte-identical in an array element, through the library and
//! through `pitch sweep`; a `%` or a backslash in the cache directory's path does not break
//! `#SBATCH --output`; an environment name bash cannot export is refused before sbatch.

use std::path::Path;

use pitch::{Command, SlurmClusterExecutor, TaskError};

use crate::{add, ensure, executor, TestFn};

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    ("values_arrive_byte_identical_in_arrays", values_in_arrays),
    ("cli_sweep_values_arrive_byte_identical", cli_sweep_values),
    (
        "percent_and_backslash_in_the_cache_path",
        percent_and_backslash_in_the_cache_path,
    ),
];

/// Values that a shell, a line-based file or a Slurm filename pattern could change.
const VALUES: &[&str] = &[
    "line1\nline2",
    "tab\there, 'single' and \"double\" quotes",
    "back\\slash \\n, 100% %j %%, $HOME `date` $(date)",
    "trailing newline\n",
];

fn values_in_arrays(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    // One map: one array job, each value in its own element, as an argument and in the
    // environment.
    let futures = exe.map_commands(VALUES.iter().map(|v| {
        Command::new("sh")
            .args(["-c", "printf '%s|%s' \"$1\" \"$VALUE\"", "sh", v])
            .env("VALUE", *v)
    }));
    for (f, v) in futures.iter().zip(VALUES) {
        let out = f.result().map_err(|e| e.to_string())?;
        let got = out.read_stdout().map_err(|e| e.to_string())?;
        ensure!(got == format!("{v}|{v}"), "{v:?} arrived as {got:?}");
    }
    let r = exe
        .submit_command(Command::new("true").env("MY-VAR", "1"))
        .result();
    ensure!(
        matches!(&r, Err(TaskError::Rejected { reason, .. }) if reason.contains("\"MY-VAR\"")),
        "MY-VAR on Slurm: {r:?}"
    );
    Ok(())
}

fn cli_sweep_values(dir: &Path) -> Result<(), String> {
    // The CSV quotes each value; row i writes its value to out.<i>.arg and, through
    // PITCH_PARAM_v, to out.<i>.env.
    let mut csv = String::from("i,v\n");
    for (i, v) in VALUES.iter().enumerate() {
        csv.push_str(&format!("{i},\"{}\"\n", v.replace('"', "\"\"")));
    }
    std::fs::write(dir.join("values.csv"), csv).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "sweep",
            "-q",
            "--backend",
            "slurm",
            "--cache-dir",
            "cache",
            "--params-file",
            "values.csv",
            "--",
            "sh",
            "-c",
            "printf %s \"$1\" > \"out.$0.arg\"; printf %s \"$PITCH_PARAM_v\" > \"out.$0.env\"",
            "{i}",
            "{v}",
        ])
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "pitch sweep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, v) in VALUES.iter().enumerate() {
        for how in ["arg", "env"] {
            let got = std::fs::read_to_string(dir.join(format!("out.{i}.{how}")))
                .map_err(|e| format!("out.{i}.{how}: {e}"))?;
            ensure!(&got == v, "{v:?} arrived as {got:?} ({how})");
        }
    }
    Ok(())
}

fn percent_and_backslash_in_the_cache_path(dir: &Path) -> Result<(), String> {
    // A backslash would make Slurm take every job's --output literally (one log for all
    // jobs, no job id in its name): refused when the executor is built.
    let refused = SlurmClusterExecutor::builder()
        .cache_directory(dir.join("back\\slash").join("cache"))
        .build();
    ensure!(
        matches!(&refused, Err(pitch::Error::Config(m)) if m.contains("backslash")),
        "a cache path with a backslash: {:?}",
        refused.err()
    );
    {
        let name = "100%j%%x";
        let exe = executor(&dir.join(name).join("cache"));
        // A single job (a function task) and an array (a map of commands).
        let sum = add::submit(&exe, 2, 3);
        let echoes = exe.map_commands((0..3).map(|i| Command::new("echo").arg(i.to_string())));
        ensure!(sum.result() == Ok(5), "{name}: {:?}", sum.result());
        for (i, f) in echoes.iter().enumerate() {
            let out = f.result().map_err(|e| format!("{name}: {e}"))?;
            let got = out.read_stdout().unwrap_or_default();
            ensure!(got == format!("{i}\n"), "{name}: {got:?}");
        }
    }
    // Slurm's own log of the job went where pitch asked (not to a path with the job id
    // substituted for `%j`).
    let jobs = dir.join("100%j%%x/cache/jobs");
    let logs = std::fs::read_dir(&jobs)
        .map_err(|e| format!("{}: {e}", jobs.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
        .count();
    ensure!(logs >= 1, "no slurm-*.out in {}", jobs.display());
    Ok(())
}
