//! `--block-allocation` on the command line: on the local backend the commands pitch runs
//! still run as their own processes, and a warning says so (the flag is never silently
//! ignored); on a queue backend they run in the pilot jobs.

use std::process::Command;

#[test]
fn block_allocation_flag_runs_commands_as_processes_and_warns() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "run",
            "--block-allocation",
            "--max-cores",
            "1",
            "--",
            "echo",
            "hi",
        ])
        .current_dir(d.path())
        .env_remove("PITCH_PROFILE")
        .env("HOME", d.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(
        stderr.contains("commands run as their own processes"),
        "{stderr}"
    );
    // On a queue backend the flag means pilot jobs, which run the commands too: a command
    // renders as the pilots' script.
    let pitch = |args: &[&str]| pitch_in(d.path(), args);
    let slurm = ["--backend", "slurm", "--block-allocation"];
    let out = pitch(&[&["render"], &slurm[..], &["--", "true"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("__pitch-worker pilot") && !stdout.contains("exec true"),
        "{stdout}"
    );
    // A command in a pilot needs pitch until it ends: --detach with pilots is refused,
    // before anything is submitted.
    let out = pitch(&[&["run"], &slurm[..], &["--detach", "--", "true"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--detach with block_allocation"),
        "{stderr}"
    );
}

#[test]
fn render_pilots_prints_the_pilot_job_array() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("pitch.toml"),
        "[profile.pilots]\nbackend = \"slurm\"\nblock_allocation = true\nmax_workers = 3\n\
         idle_timeout = \"45s\"\npilot_address = \"127.0.0.1\"\n\
         [profile.pilots.resources]\nrun_time_max = \"1h\"\npartition = \"short\"\n\
         requeue = true\n",
    )
    .unwrap();
    let render = |args: &[&str]| pitch_in(d.path(), args);
    let out = render(&["render", "--profile", "pilots", "--pilots"]);
    let script = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "#SBATCH --array=0-2",
        "#SBATCH --time=01:00:00",
        "#SBATCH --partition=short",
        "__pitch-worker pilot 127.0.0.1:",
        ".secret 45 ",
        "\"$SLURM_ARRAY_TASK_ID\"",
        // Never requeued by Slurm, whatever the defaults say (they apply to commands).
        "#SBATCH --no-requeue",
    ] {
        assert!(script.contains(line), "no {line:?} in\n{script}");
    }
    assert!(!script.contains("#SBATCH --requeue"), "{script}");
    // Pilot settings without block_allocation are refused, not ignored.
    std::fs::write(
        d.path().join("pitch.toml"),
        "[profile.p]\nbackend = \"slurm\"\nidle_timeout = \"45s\"\n",
    )
    .unwrap();
    let out = render(&["render", "--profile", "p", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("idle_timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not on the local backend.
    let out = render(&["render", "--backend", "single-node", "--pilots"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `pitch ARGS` in `dir`, with no profile but the directory's `pitch.toml`.
fn pitch_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(args)
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .env("HOME", dir)
        .output()
        .unwrap()
}
