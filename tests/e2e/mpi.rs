//! Multi-rank tasks on SingleNode under OpenMPI's mpiexec.

use pitch::{Command, Resources, TaskError};

use crate::ensure;
use crate::single_node::{executor, temp};

pitch::task! {
    pub fn where_am_i(tag: String) -> (String, u32, u32) {
        let ctx = pitch::context();
        (tag, ctx.rank, ctx.size)
    }
}
pitch::task! {
    pub fn rank_one_panics() -> u32 {
        let ctx = pitch::context();
        if ctx.rank == 1 {
            panic!("rank one gives up");
        }
        std::thread::sleep(std::time::Duration::from_secs(20));
        ctx.rank
    }
}

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    ("mpi::function_on_two_ranks", function_on_two_ranks),
    ("mpi::command_on_two_ranks", command_on_two_ranks),
    ("mpi::a_failing_rank_fails_the_task", failing_rank),
];

fn mpi_executor(dir: &std::path::Path) -> pitch::Executor {
    executor(dir, 2).with_resources(Resources::new().cores(2).openmpi_oversubscribe(true))
}

fn function_on_two_ranks() -> Result<(), String> {
    let dir = temp();
    let exe = mpi_executor(dir.path());
    every_rank_answers(&exe)?;
    rank_zero_answers(&exe)
}

/// `where_am_i` on an executor with `cores = 2`: `submit_ranks` gives both ranks' values in
/// rank order.
pub(crate) fn every_rank_answers(exe: &pitch::Executor) -> Result<(), String> {
    let all = where_am_i::submit_ranks(exe, "t".to_string())
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        all == vec![("t".to_string(), 0, 2), ("t".to_string(), 1, 2)],
        "{all:?}"
    );
    Ok(())
}

/// `where_am_i` on an executor with `cores = 2`: `submit` gives rank 0's value.
pub(crate) fn rank_zero_answers(exe: &pitch::Executor) -> Result<(), String> {
    let first = where_am_i::submit(exe, "u".to_string())
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(first == ("u".to_string(), 0, 2), "{first:?}");
    Ok(())
}

/// A command's standard output, its lines sorted (ranks write in any order).
pub(crate) fn sorted_lines(out: &pitch::CommandOutput) -> Vec<String> {
    let mut lines: Vec<String> = out
        .read_stdout()
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

fn command_on_two_ranks() -> Result<(), String> {
    let dir = temp();
    let exe = mpi_executor(dir.path());
    let out = exe
        .submit_command(Command::new("sh").args(["-c", "echo rank $OMPI_COMM_WORLD_RANK"]))
        .result()
        .map_err(|e| e.to_string())?;
    let lines = sorted_lines(&out);
    ensure!(lines == vec!["rank 0", "rank 1"], "{lines:?}");
    Ok(())
}

fn failing_rank() -> Result<(), String> {
    let dir = temp();
    rank_one_fails_and_stops_the_others(&mpi_executor(dir.path()))
}

/// `rank_one_panics` on two ranks fails naming rank 1, and the launcher stops rank 0 (which
/// sleeps 20 s) well before its end.
pub(crate) fn rank_one_fails_and_stops_the_others(exe: &pitch::Executor) -> Result<(), String> {
    let start = std::time::Instant::now();
    match rank_one_panics::submit(exe).result() {
        Err(TaskError::Rank { rank, size, cause }) => {
            ensure!(rank == 1 && size == 2, "rank {rank} of {size}");
            ensure!(matches!(*cause, TaskError::Panicked { .. }), "{cause:?}");
        }
        other => return Err(format!("expected a rank failure, got {other:?}")),
    }
    ensure!(
        start.elapsed() < std::time::Duration::from_secs(15),
        "the other rank was not stopped: {:?}",
        start.elapsed()
    );
    Ok(())
}
