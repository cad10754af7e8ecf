//! Clap types of the `pitch` command line and the dispatch to subcommands.

mod follow;
mod inspect;
mod interrupt;
mod json;
mod params;
mod report;
mod run;

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pitch::profile::{BackendKind, Profile};
use pitch::Resources;

/// Exit code of a subcommand that succeeded.
pub(crate) const OK: i32 = 0;
/// Exit code when some task failed.
pub(crate) const TASK_FAILED: i32 = 1;
/// Exit code of a usage or configuration error.
pub(crate) const USAGE: i32 = 2;

/// What `pitch --version` prints after the name: the version, the cargo features built in and
/// the cache format version (`-V` prints the version alone).
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let features = match pitch::FEATURES {
            [] => "none".to_string(),
            list => list.join(", "),
        };
        format!(
            "{}\nfeatures: {features}\ncache format version: {}",
            env!("CARGO_PKG_VERSION"),
            pitch::CACHE_FORMAT_VERSION
        )
    })
}

#[derive(Parser)]
#[command(
    name = "pitch",
    version,
    long_version = long_version(),
    about = "Pitch commands to local cores or to Slurm: one engine, one-line swap",
    after_help = "Examples:\n  pitch run -- ./simulate --steps 100\n  pitch sweep --param halo=1..5 --param radius=0.1:1.0:0.1 -- ./render {halo} {radius}\n  pitch sweep --profile cluster --tasks-per-job 10 --params-file grid.csv -- python fit.py {a} {b}\n  pitch status\n  pitch results --format csv"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one command as a task, stream its output, exit with its exit code (always runs).
    #[command(
        after_help = "The command's stdout and stderr are copied to pitch's as they are written (also from a\nSlurm job, through the task directory's files); status lines (submitted as Slurm job N,\nexit code N after X s) go to stderr unless -q. With --json, stdout carries only one JSON\nobject (key, exit_code, seconds, stdout and stderr file paths, error).\n\nExit codes: the command's own; 125 when pitch failed before the command ran (or the\nscheduler rejected the job), 126 when it cannot be executed, 127 when it is not found,\n128+N when killed by signal N.\n\nExamples:\n  pitch run -- echo hello\n  pitch run --backend slurm --cores 4 --time 01:00:00 -- lmp -in in.lmp\n  pitch run --backend slurm --detach -- ./long_job"
    )]
    Run(run::RunArgs),
    /// Run a command over a grid of parameters ({NAME} placeholders), resumably.
    #[command(
        after_help = "VALUES: a,b,c | 1..10 (inclusive) | 0..100:5 | 0.1:1.0:0.1 (inclusive end).\nThe same sweep run again resumes: finished points are not run again; --fresh reruns all.\n\nExamples:\n  pitch sweep --param steps=1..3 --param mode=fast,slow -- ./sim --steps {steps} --mode {mode}\n  pitch sweep --zip --param a=1,2 --param b=x,y -- echo {a} {b}\n  pitch sweep --params-file points.csv -- ./convert {input} {output}"
    )]
    Sweep(run::SweepArgs),
    /// Count the tasks of a cache directory by state.
    #[command(after_help = "Examples:\n  pitch status\n  pitch status --all --json")]
    Status(inspect::StatusArgs),
    /// One row per task: parameters, state, exit code, runtime, stdout.
    #[command(
        after_help = "Examples:\n  pitch results\n  pitch results --format csv > results.csv"
    )]
    Results(inspect::ResultsArgs),
    /// Cancel queued or running tasks (scancel or flux cancel their jobs).
    #[command(after_help = "Examples:\n  pitch cancel --all\n  pitch cancel 3f2a...")]
    Cancel(inspect::CancelArgs),
    /// Print the job script a command would be submitted with, without submitting.
    #[command(
        after_help = "Examples:\n  pitch render --partition short --time 2h -- ./render 51 0.1"
    )]
    Render(run::RenderArgs),
    /// Remove finished task directories from the cache.
    #[command(after_help = "Examples:\n  pitch gc --older-than 7d")]
    Gc(inspect::GcArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  pitch completions bash > /etc/bash_completion.d/pitch")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Options shared by the subcommands that run tasks.
#[derive(Args, Clone, Default)]
pub(crate) struct Common {
    /// A profile of pitch.toml (default: $PITCH_PROFILE).
    #[arg(long, env = "PITCH_PROFILE")]
    pub profile: Option<String>,
    /// Where tasks run.
    #[arg(long, value_parser = ["single-node", "slurm", "slurm-job", "flux", "flux-job"])]
    pub backend: Option<String>,
    /// MPI ranks per task.
    #[arg(long)]
    pub cores: Option<u32>,
    /// Threads per rank.
    #[arg(long)]
    pub threads_per_core: Option<u32>,
    /// GPUs per rank.
    #[arg(long)]
    pub gpus_per_core: Option<u32>,
    /// Nodes per task.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Time limit (HH:MM:SS, D-HH:MM:SS, 90s, 2h).
    #[arg(long)]
    pub time: Option<String>,
    /// Memory limit (4G, 512M).
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    /// Slurm QOS.
    #[arg(long)]
    pub qos: Option<String>,
    /// Working directory of the tasks.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Whole nodes.
    #[arg(long)]
    pub exclusive: bool,
    /// Times a task is submitted again after a failure it did not cause (preempted, node or
    /// boot failure, a lost worker or pilot, a job gone), one named by --retry-on, or a
    /// checkpoint; default 0 (1 with --block-allocation on slurm and flux).
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// The task's own failures retried too: a comma-separated list of panic, error,
    /// exit_code, signal, timeout, out_of_memory, worker_died, cancelled, or all.
    #[arg(long, value_name = "KINDS")]
    pub retry_on: Option<String>,
    /// The wait before the first retry, doubled for each further one (default 5s).
    #[arg(long, value_name = "TIME")]
    pub retry_backoff: Option<String>,
    /// Warn the task this long before its time limit (SIGUSR1; a function task sees
    /// should_stop()); see the README's "Checkpoint and requeue".
    #[arg(long, value_name = "TIME")]
    pub checkpoint_grace: Option<String>,
    /// Let Slurm requeue the job itself after a node failure or preemption (sbatch
    /// --requeue).
    #[arg(long, conflicts_with = "no_requeue")]
    pub requeue: bool,
    /// Never let Slurm requeue the job (sbatch --no-requeue).
    #[arg(long)]
    pub no_requeue: bool,
    /// An extra sbatch option, verbatim (repeatable).
    #[arg(long = "slurm-arg", allow_hyphen_values = true)]
    pub slurm_args: Vec<String>,
    /// The cache directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Accept a group-writable cache directory or parent: any member of the group can then
    /// replace results and run code as you (see the README's "Security model").
    #[arg(long)]
    pub trust_group: bool,
    /// Tasks in the Slurm queue at once.
    #[arg(long)]
    pub max_jobs: Option<u32>,
    /// Slots used on this machine (single-node).
    #[arg(long)]
    pub max_cores: Option<u32>,
    /// A job script template of your own.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Persistent workers for function tasks (single-node, slurm-job, flux-job: the commands
    /// pitch runs still run as their own processes, a warning says so), pilot jobs (slurm,
    /// flux: the commands run in the pilots, not as a job each; not with `run --detach`);
    /// pitch.toml's block_allocation.
    #[arg(long)]
    pub block_allocation: bool,
    /// Machine-readable output on stdout: JSON only (`run`: one object with the exit code and
    /// the paths of the command's stdout and stderr files, the command's stdout is not copied;
    /// `sweep`: one line per point). Status lines stay on stderr.
    #[arg(long)]
    pub json: bool,
}

impl Common {
    /// The profile named by --profile (or a default one), with the flags applied on top.
    pub(crate) fn profile(&self) -> Result<Profile, String> {
        let mut p = match &self.profile {
            Some(name) => {
                let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
                pitch::profile::load_named(name, &cwd).map_err(|e| e.to_string())?
            }
            None => Profile::default(),
        };
        if let Some(b) = &self.backend {
            p.backend = b.parse::<BackendKind>().map_err(|e| e.to_string())?;
        }
        let mut r = Resources::new();
        r.cores = self.cores;
        r.threads_per_core = self.threads_per_core;
        r.gpus_per_core = self.gpus_per_core;
        r.num_nodes = self.nodes;
        if let Some(t) = &self.time {
            r.run_time_max = Some(pitch::parse_duration(t).map_err(|e| format!("--time: {e}"))?);
        }
        if let Some(m) = &self.mem {
            r.memory_max = Some(pitch::parse_memory(m).map_err(|e| format!("--mem: {e}"))?);
        }
        r.partition = self.partition.clone();
        r.account = self.account.clone();
        r.qos = self.qos.clone();
        r.cwd = self.cwd.clone();
        if self.exclusive {
            r.exclusive = Some(true);
        }
        r.slurm_cmd_args = self.slurm_args.clone();
        r.max_retries = self.max_retries;
        if let Some(kinds) = &self.retry_on {
            r.retry_on =
                pitch::RetryOn::parse_list(kinds).map_err(|e| format!("--retry-on: {e}"))?;
        }
        if let Some(t) = &self.retry_backoff {
            r.retry_backoff =
                Some(pitch::parse_duration(t).map_err(|e| format!("--retry-backoff: {e}"))?);
        }
        if let Some(t) = &self.checkpoint_grace {
            r.checkpoint_grace =
                Some(pitch::parse_duration(t).map_err(|e| format!("--checkpoint-grace: {e}"))?);
        }
        if self.requeue || self.no_requeue {
            r.requeue = Some(self.requeue);
        }
        p.resources = p.resources.merged(&r);
        if let Some(d) = &self.cache_dir {
            p.cache_directory = Some(d.clone());
        }
        if self.trust_group {
            p.trust_group = Some(true);
        }
        if self.max_jobs.is_some() {
            p.max_jobs = self.max_jobs;
        }
        if self.max_cores.is_some() {
            p.max_cores = self.max_cores;
        }
        if let Some(t) = &self.template {
            p.template = Some(t.clone());
        }
        if self.block_allocation {
            p.block_allocation = Some(true);
        }
        Ok(p)
    }
}

/// `n` with the noun in the singular or the plural as `n` asks.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints an error once, without a backtrace, and returns `code`.
pub(crate) fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("pitch: {message}");
    code
}

/// For `pitch run echo hi` (the `--` forgotten): the command line with the `--` where it
/// belongs.
fn missing_separator_hint(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(unexpected)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = args.first()?;
    if !["run", "sweep", "render"].contains(&sub.as_str()) || args.iter().any(|a| a == "--") {
        return None;
    }
    // An unknown option is a typo, not the command.
    if unexpected.starts_with('-') {
        return None;
    }
    let at = args.iter().position(|a| a == unexpected)?;
    let mut fixed = args.clone();
    fixed.insert(at, "--".into());
    Some(format!(
        "hint: the command goes after `--`: pitch {}",
        report::shell_words(&fixed)
    ))
}

/// `PITCH_LOG` (else `RUST_LOG`), e.g. `debug` or `pitch::scheduler=debug`: prints pitch's
/// `tracing` events (scheduler commands with argv, exit status and duration; submissions;
/// poll ticks; task state changes) on stderr. A filter that does not parse is reported.
fn init_tracing() {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let Some((name, filter)) = set("PITCH_LOG")
        .map(|f| ("PITCH_LOG", f))
        .or_else(|| set("RUST_LOG").map(|f| ("RUST_LOG", f)))
    else {
        return;
    };
    match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
        Err(e) => eprintln!("pitch: {name}={filter:?} is not a log filter ({e}); no logging"),
    }
}

/// Runs the command line; returns the process exit code.
pub(crate) fn main() -> i32 {
    init_tracing();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((mut cli, m)) => {
            // `--param` and `--param-str` in the order given.
            match (&mut cli.command, m.subcommand()) {
                (Cmd::Sweep(a), Some((_, sub))) => a.params.order(sub),
                (Cmd::Render(a), Some((_, sub))) => a.params.order(sub),
                _ => {}
            }
            cli
        }
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => OK,
                _ => USAGE,
            };
            let _ = e.print();
            if let Some(hint) = missing_separator_hint(&e) {
                eprintln!("{hint}");
            }
            return code;
        }
    };
    match cli.command {
        Cmd::Run(a) => run::run(a),
        Cmd::Sweep(a) => run::sweep(a),
        Cmd::Render(a) => run::render(a),
        Cmd::Status(a) => inspect::status(a),
        Cmd::Results(a) => inspect::results(a),
        Cmd::Cancel(a) => inspect::cancel(a),
        Cmd::Gc(a) => inspect::gc(a),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "pitch", &mut std::io::stdout());
            OK
        }
    }
}

/// How chatty to be on stderr: `-q` and `-v`, options of the subcommands that run tasks
/// (`run`, `sweep`) only.
#[derive(Args, Clone, Copy)]
pub(crate) struct Output {
    /// Print nothing but errors on stderr: no status lines, progress bar or summary (the
    /// command's own output of `pitch run` is still copied). Wins over -v.
    #[arg(short, long)]
    pub quiet: bool,
    /// One line on stderr per task end (`pitch: finished KEY PARAMS in 1.2 s`, `pitch: failed
    /// KEY PARAMS: ERROR`), for `sweep` instead of the progress bar; -vv also each task's
    /// submission and start (with its Slurm job id).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
