//! `pitch run`, `pitch sweep` and `pitch render`: commands as tasks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use pitch::profile::BackendKind;
use pitch::{Command, Executor, LaunchErrorKind, Reporter, TaskError};

use super::follow::{Follower, Sink};
use super::report::{shell_words, Mode, TaskLines};
use super::{count, fail, json, params, Common, Output, OK, TASK_FAILED, USAGE};

/// `pitch run` exits 125 when pitch failed before the command ran.
const PITCH_FAILED: i32 = 125;
/// ... 126 when the command cannot be executed.
const CANNOT_EXECUTE: i32 = 126;
/// ... 127 when the command is not found.
const NOT_FOUND: i32 = 127;

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    out: Output,
    /// Return at once and print the task key (queue backends).
    #[arg(long)]
    detach: bool,
    /// Print the pilot jobs' script instead (slurm and flux with --block-allocation, which
    /// this flag implies): the pilots run the function tasks and commands of a
    /// block_allocation executor.
    #[arg(long)]
    pilots: bool,
    /// The command and its arguments.
    #[arg(required_unless_present = "pilots", last = true)]
    command: Vec<String>,
}

/// `--param` and `--param-str`, kept in command-line order.
#[derive(Args)]
pub(crate) struct ParamArgs {
    /// A parameter: NAME=VALUES (repeatable; the points are the cartesian product).
    #[arg(long = "param", value_name = "NAME=VALUES")]
    params: Vec<String>,
    /// A parameter with one value taken as it is, no list or range (`t=01:30:00`, `s=a,b`);
    /// repeat it with the same NAME for more values.
    #[arg(long = "param-str", value_name = "NAME=VALUE")]
    params_str: Vec<String>,
    /// Both, in the order given (set by [`ParamArgs::order`]).
    #[arg(skip)]
    ordered: Vec<(bool, String)>,
}

impl ParamArgs {
    /// Records the order of the `--param` and `--param-str` options on the command line.
    pub(crate) fn order(&mut self, m: &clap::ArgMatches) {
        let at = |id: &str, n: usize| -> Vec<usize> {
            m.indices_of(id)
                .map(|i| i.collect())
                .unwrap_or_else(|| (0..n).collect())
        };
        let mut all: Vec<(usize, bool, String)> = at("params", self.params.len())
            .into_iter()
            .zip(self.params.iter())
            .map(|(i, s)| (i, false, s.clone()))
            .chain(
                at("params_str", self.params_str.len())
                    .into_iter()
                    .zip(self.params_str.iter())
                    .map(|(i, s)| (i, true, s.clone())),
            )
            .collect();
        all.sort_by_key(|(i, _, _)| *i);
        self.ordered = all.into_iter().map(|(_, l, s)| (l, s)).collect();
    }

    fn parse(&self) -> Result<Vec<params::Param>, params::ParamError> {
        params::parse_all(&self.ordered)
    }
}

#[derive(Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    out: Output,
    #[command(flatten)]
    pub(crate) params: ParamArgs,
    /// Pair the parameters' values instead of crossing them (and the --params-file's rows
    /// with them).
    #[arg(long)]
    zip: bool,
    /// Points from a CSV file (header = parameter names); `-` reads standard input.
    #[arg(long)]
    params_file: Option<std::path::PathBuf>,
    /// The largest --params-file (or standard input) read, in bytes.
    #[arg(long, env = "PITCH_MAX_PARAMS_BYTES", default_value_t = params::MAX_PARAMS_BYTES)]
    max_params_bytes: u64,
    /// The most points a sweep (or one range) may have.
    #[arg(long, env = "PITCH_MAX_POINTS", default_value_t = params::MAX_POINTS)]
    max_points: usize,
    /// Pack K points into each Slurm array element.
    #[arg(long)]
    tasks_per_job: Option<u32>,
    /// Run every point again, even those that finished before.
    #[arg(long)]
    fresh: bool,
    /// The command template, with {NAME} placeholders.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RenderArgs {
    #[command(flatten)]
    common: Common,
    /// Print the pilot jobs' script instead (slurm and flux with --block-allocation, which
    /// this flag implies): the pilots run the function tasks and commands of a
    /// block_allocation executor.
    #[arg(long)]
    pilots: bool,
    /// The point to render: `{NAME}` placeholders of the command get these values (one
    /// value per parameter).
    #[command(flatten)]
    pub(crate) params: ParamArgs,
    /// The command and its arguments.
    #[arg(required_unless_present = "pilots", last = true)]
    command: Vec<String>,
}

fn executor(
    common: &Common,
    tasks_per_job: Option<u32>,
    reporters: Vec<Arc<dyn Reporter>>,
) -> Result<Executor, String> {
    let mut profile = common.profile()?;
    if tasks_per_job.is_some() {
        profile.tasks_per_job = tasks_per_job;
    }
    Executor::from_settings(&profile, reporters).map_err(|e| e.to_string())
}

fn command(argv: &[String], env: &[(String, String)]) -> Command {
    let mut c = Command::new(&argv[0]).args(&argv[1..]);
    for (k, v) in env {
        c = c.env(format!("PITCH_PARAM_{k}"), v.clone());
    }
    c
}

/// Where a finished (or failed) task's stream is: the output's path when the command ran,
/// else the task's own file (from the store) when there is one.
fn stream_path(reported: Option<&Option<PathBuf>>, file: Option<&PathBuf>) -> Option<PathBuf> {
    match reported {
        Some(p) => p.clone(),
        None => file.filter(|p| p.exists()).cloned(),
    }
}

pub(crate) fn run(a: RunArgs) -> i32 {
    let out = a.out;
    let lines = Arc::new(TaskLines::new(
        out.verbose,
        Mode::Run(shell_words(&a.command)),
    ));
    let mut reporters: Vec<Arc<dyn Reporter>> = Vec::new();
    if !out.quiet {
        reporters.push(lines.clone());
    }
    // A command in a pilot job is handed over by pitch, which must stay until it ends
    // (over SSH commands still run as jobs of their own: see the README's "Pilot jobs").
    if a.detach {
        if let Ok(p) = a.common.profile() {
            if p.block_allocation == Some(true)
                && matches!(p.backend, BackendKind::Slurm | BackendKind::Flux)
                && p.remote.is_none()
            {
                return fail(
                    USAGE,
                    "--detach with block_allocation (--block-allocation, or the profile's \
                     block_allocation = true): the command would run in a pilot job, which \
                     pitch feeds until the command ends; drop one of them",
                );
            }
        }
    }
    let exe = match executor(&a.common, None, reporters) {
        Ok(e) => e.with_cache(false),
        Err(e) => return fail(PITCH_FAILED, e),
    };
    lines.set_backend(exe.backend_name());
    if a.detach && exe.job_name().is_none() {
        return fail(
            USAGE,
            "--detach needs a queue backend (--backend slurm): local tasks end with pitch",
        );
    }
    let submitted = Instant::now();
    let future = exe.submit_command(command(&a.command, &[]).allow_failure().stdin_inherit());
    let dir = exe.task_directory(&future.key()).ok();
    let streams = exe.task_output_files(&future.key()).ok();
    if a.detach {
        // Wait until the job is queued, then leave it to the scheduler.
        let job = future.wait_job_id();
        if let Some(e) = future.error() {
            return fail(PITCH_FAILED, e);
        }
        if let (Some(id), false) = (&job, out.quiet) {
            lines.announce_job(&future.key(), id);
        }
        if a.common.json {
            json::print(&json::DetachOutput {
                schema_version: json::SCHEMA_VERSION,
                key: future.key(),
                job_id: future.job_id(),
                task_directory: dir,
            });
        } else {
            println!("{}", future.key());
        }
        exe.shutdown(pitch::Shutdown::Detach);
        return OK;
    }
    // Stream the command's output while it runs. With --json pitch's stdout carries only the
    // JSON object: the command's stdout stays in its file, whose path the object names.
    let follower = streams.as_ref().map(|(stdout, stderr)| {
        let mut files = vec![(stderr.clone(), Sink::Stderr)];
        if !a.common.json {
            files.insert(0, (stdout.clone(), Sink::Stdout));
        }
        Follower::start(files)
    });
    // Ctrl-C, SIGTERM, SIGHUP: the task is cancelled (the command's process group signalled,
    // or its job cancelled) and recorded so; pitch exits 128 + the signal.
    let interrupts = {
        let f = future.clone();
        super::interrupt::Interrupts::cancel_with(move || f.cancel())
    };
    let result = future.result();
    if let Some(f) = follower {
        f.finish();
    }
    // The command's run time where it was measured (locally, and by the job script on
    // Slurm/Flux when the node's bash can tell), else the time since submission.
    let total = submitted.elapsed().as_secs_f64();
    let run_seconds = match &result {
        Ok(o) if !o.elapsed.is_zero() => Some(o.elapsed.as_secs_f64()),
        _ => None,
    };
    let seconds = run_seconds.unwrap_or(total);
    if a.common.json {
        let ok = result.as_ref().ok();
        json::print(&json::RunOutput {
            schema_version: json::SCHEMA_VERSION,
            key: future.key(),
            exit_code: ok.map(|o| o.exit_code),
            seconds,
            run_seconds,
            total_seconds: total,
            queued_seconds: run_seconds.map(|r| (total - r).max(0.0)),
            stdout: stream_path(ok.map(|o| &o.stdout), streams.as_ref().map(|s| &s.0)),
            stderr: stream_path(ok.map(|o| &o.stderr), streams.as_ref().map(|s| &s.1)),
            error: result.as_ref().err().map(|e| e.to_string()),
        });
    }
    if let (Some(signal), Err(TaskError::Cancelled)) = (interrupts.received(), &result) {
        if !out.quiet {
            eprintln!(
                "pitch: interrupted by signal {signal}: the command was cancelled after {seconds:.1} s"
            );
        }
        return 128 + signal;
    }
    drop(interrupts);
    match result {
        Ok(o) => {
            if !out.quiet {
                eprintln!("pitch: exit code {} after {seconds:.1} s", o.exit_code);
            }
            o.exit_code
        }
        Err(e @ TaskError::Signaled { signal, .. }) => {
            if !out.quiet {
                eprintln!("pitch: {e} after {seconds:.1} s");
            }
            128 + signal
        }
        Err(TaskError::Launch { what, kind, detail }) => {
            fail(launch_exit_code(kind), format!("{what}: {detail}"))
        }
        Err(e) => fail(PITCH_FAILED, e),
    }
}

/// `pitch run`'s exit code when the command could not be started.
fn launch_exit_code(kind: LaunchErrorKind) -> i32 {
    match kind {
        LaunchErrorKind::NotFound => NOT_FOUND,
        LaunchErrorKind::RejectedByScheduler => PITCH_FAILED,
        LaunchErrorKind::PermissionDenied | LaunchErrorKind::NoSuchCwd => CANNOT_EXECUTE,
        // Cannot be executed for another reason (exec format error, an argument with a NUL
        // byte...), or pitch could not prepare the launch.
        LaunchErrorKind::Other => CANNOT_EXECUTE,
        // A kind added after this binary was written.
        _ => PITCH_FAILED,
    }
}

pub(crate) fn sweep(a: SweepArgs) -> i32 {
    let out = a.out;
    params::set_max_points(a.max_points);
    let grid = match a.params.parse().and_then(|ps| params::points(&ps, a.zip)) {
        Ok(g) => g,
        Err(e) => return fail(USAGE, e),
    };
    let rows = match &a.params_file {
        Some(path) => match params::read_input(path, a.max_params_bytes) {
            Ok(text) => match params::read_csv(&text, &path.display().to_string()) {
                Ok(r) => r,
                Err(e) => return fail(USAGE, e),
            },
            Err(e) => return fail(USAGE, e),
        },
        None => Vec::new(),
    };
    let points = match if a.zip {
        params::zip_rows(grid, rows)
    } else {
        params::combine(grid, rows)
    } {
        Ok(p) if p.is_empty() => return fail(USAGE, "no points: give --param or --params-file"),
        Ok(p) => p,
        Err(e) => return fail(USAGE, e),
    };
    let commands = match points
        .iter()
        .map(|pt| params::substitute(&a.command, pt).map(|argv| command(&argv, pt)))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(c) => c,
        Err(e) => return fail(USAGE, e),
    };
    // -v: one line per point instead of the progress bar; -q: neither.
    let lines = Arc::new(TaskLines::new(out.verbose, Mode::Sweep));
    let mut reporters: Vec<Arc<dyn Reporter>> = Vec::new();
    if !out.quiet {
        if out.verbose > 0 {
            reporters.push(lines.clone());
        } else {
            reporters.push(Arc::new(pitch::ProgressReporter::new()));
        }
    }
    let exe = match executor(&a.common, a.tasks_per_job, reporters) {
        Ok(e) => e.with_fresh(a.fresh),
        Err(e) => return fail(USAGE, e),
    };
    lines.set_backend(exe.backend_name());
    let futures = exe.map_commands(commands);
    for (f, point) in futures.iter().zip(&points) {
        lines.label(&f.key(), point_text(point));
    }
    // `pitch results` lists the points in this order.
    let keys: Vec<String> = futures.iter().map(|f| f.key()).collect();
    if let Err(e) = exe.record_sweep(&keys) {
        eprintln!("pitch: warning: could not record the sweep's order (pitch results will order its points by value): {e}");
    }
    // Ctrl-C, SIGTERM, SIGHUP: the points running here are cancelled (their processes are
    // out of the terminal's reach); scheduler jobs are left to run (an accidental Ctrl-C must
    // not throw away a queue of jobs): a rerun collects them, `pitch cancel --all` cancels
    // them. Either way pitch reports what stands and exits 128 + the signal.
    let in_scheduler = exe.job_name().is_some();
    let interrupts = {
        let exe = exe.clone();
        super::interrupt::Interrupts::cancel_with(move || {
            if !in_scheduler {
                exe.shutdown(pitch::Shutdown::Cancel);
            }
        })
    };
    let mut failed = Vec::new();
    let mut left_running = 0usize;
    for (i, f) in futures.iter().enumerate() {
        let r = loop {
            if let Some(r) = f.result_timeout(std::time::Duration::from_millis(200)) {
                break Some(r);
            }
            if in_scheduler && interrupts.received().is_some() {
                break None;
            }
        };
        let Some(r) = r else {
            left_running += 1;
            continue;
        };
        if a.common.json {
            let (state, code, error) = match &r {
                Ok(o) => ("finished", Some(o.exit_code), None),
                Err(e) => (
                    "failed",
                    match e {
                        TaskError::CommandFailed { code, .. } => Some(*code),
                        _ => None,
                    },
                    Some(e.to_string()),
                ),
            };
            json::print(&json::SweepPoint {
                schema_version: json::SCHEMA_VERSION,
                key: f.key(),
                params: json::params(&points[i]),
                state,
                exit_code: code,
                error,
            });
        }
        if let Err(e) = r {
            failed.push((i, e));
        }
    }
    let signal = interrupts.received();
    drop(interrupts);
    let summary = exe.shutdown(match signal {
        Some(_) if in_scheduler => pitch::Shutdown::Detach,
        _ => pitch::Shutdown::Wait,
    });
    lines.flush();
    if !out.quiet {
        // Points that repeat an earlier one (`x=1,1,1`) are one task: say so, or the counts
        // below would not add up.
        let distinct: std::collections::HashSet<String> = futures.iter().map(|f| f.key()).collect();
        let repeats = match points.len() - distinct.len() {
            0 => String::new(),
            n => format!(
                " ({} an earlier point, run once)",
                count(n, "repeats", "repeat")
            ),
        };
        // Refused before running (a resource the backend cannot honour, sbatch's refusal), or
        // never started because an input failed: failed, but not run.
        let never_ran = failed
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    TaskError::Rejected { .. } | TaskError::DependencyFailed { .. }
                )
            })
            .count() as u64;
        let not_run = match never_ran {
            0 => String::new(),
            n => format!(", {n} of them refused or not started"),
        };
        eprintln!(
            "pitch: {}{repeats}: {} ran, {} from the cache, {} failed{not_run} ({})",
            count(points.len(), "point", "points"),
            (summary.succeeded + summary.failed)
                .saturating_sub(summary.cached)
                .saturating_sub(never_ran),
            summary.cached,
            failed.len(),
            exe.cache_directory().display()
        );
        for (i, e) in failed
            .iter()
            .take(if out.verbose > 0 { usize::MAX } else { 10 })
        {
            eprintln!("  failed: {}: {e}", point_text(&points[*i]));
        }
        if failed.len() > 10 && out.verbose == 0 {
            eprintln!("  ... and {} more (-v lists all)", failed.len() - 10);
        }
    }
    if let Some(signal) = signal {
        if !out.quiet {
            let cancelled = failed
                .iter()
                .filter(|(_, e)| matches!(e, TaskError::Cancelled))
                .count();
            let cache = exe.cache_directory();
            if in_scheduler {
                eprintln!(
                    "pitch: interrupted by signal {signal}: {} still queued or running go on in the scheduler; run the same command again to collect them (finished points are not run again), or `pitch cancel --all --cache-dir {}` to cancel them",
                    count(left_running, "point", "points"),
                    cache.display()
                );
            } else {
                eprintln!(
                    "pitch: interrupted by signal {signal}: {} cancelled; run the same command again to run them (finished points are not run again)",
                    count(cancelled, "point", "points"),
                );
            }
        }
        return 128 + signal;
    }
    if failed.is_empty() {
        OK
    } else {
        TASK_FAILED
    }
}

/// A sweep point as `a=1 b=x`.
fn point_text(point: &[(String, String)]) -> String {
    point
        .iter()
        .map(|(k, v)| format!("{k}={}", params::excerpt(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn render(a: RenderArgs) -> i32 {
    let mut profile = match a.common.profile() {
        Ok(p) => p,
        Err(e) => return fail(USAGE, e),
    };
    if a.common.backend.is_none() && a.common.profile.is_none() {
        profile.backend = BackendKind::Slurm;
    }
    if a.pilots {
        if !a.command.is_empty() {
            return fail(
                USAGE,
                "--pilots prints the pilot jobs' script: give no command with it",
            );
        }
        profile.block_allocation = Some(true);
    }
    let exe = match Executor::for_rendering(&profile) {
        Ok(e) => e,
        Err(e) => return fail(USAGE, e),
    };
    let script = if a.pilots {
        exe.render_pilots()
    } else {
        let point = match a.params.parse().and_then(|ps| params::points(&ps, false)) {
            Ok(points) if points.len() > 1 => {
                return fail(
                    USAGE,
                    format!(
                        "render shows one point, these parameters make {}: give one value each",
                        points.len()
                    ),
                )
            }
            Ok(points) => points.into_iter().next().unwrap_or_default(),
            Err(e) => return fail(USAGE, e),
        };
        let argv = match params::substitute(&a.command, &point) {
            Ok(argv) => argv,
            Err(e) => return fail(USAGE, e),
        };
        exe.render_command(command(&argv, &point))
    };
    match script {
        Ok(script) => {
            print!("{script}");
            OK
        }
        Err(e) => fail(USAGE, e),
    }
}
