//! `--block-allocation` on the command line: the commands pitch runs still run as their own
//! processes, and a warning says so (the flag is never silently ignored).

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
    // Not on a queue backend.
    let out = Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "render",
            "--backend",
            "slurm",
            "--block-allocation",
            "--",
            "true",
        ])
        .current_dir(d.path())
        .env("HOME", d.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("block_allocation"));
}
