//! Resource requests for tasks: [`Resources`], executorlib's `resource_dict`.
//!
//! Every field of [`Resources`] is optional so layers can be stacked with
//! [`Resources::merged`]: config file < executor defaults < per-submit values.
//! This module also parses and formats the text forms used in configs and on
//! the command line ([`parse_duration`], [`parse_memory`]) and the forms Slurm
//! expects ([`format_slurm_time`], [`format_slurm_memory`]); those text forms live in
//! `text.rs`, this file keeps the type, its merging, `set` and validation.

mod text;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use text::{backoff_serde, duration_for, duration_serde, duration_text, grace_serde};
pub use text::{format_slurm_memory, format_slurm_time, parse_duration, parse_memory};
use text::{memory_for, memory_serde};

/// Every key accepted by [`Resources::set`] and in a config table, in field order.
pub const RESOURCE_KEYS: &[&str] = &[
    "cores",
    "threads_per_core",
    "gpus_per_core",
    "cwd",
    "env",
    "num_nodes",
    "exclusive",
    "run_time_max",
    "memory_max",
    "partition",
    "account",
    "qos",
    "slurm_cmd_args",
    "openmpi_oversubscribe",
    "error_log_file",
    "max_retries",
    "retry_on",
    "retry_backoff",
    "checkpoint_grace",
    "requeue",
];

/// Why a resource value could not be parsed, set or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// A value's text could not be understood, or is out of range.
    #[error("invalid {field} {text:?}: {reason}")]
    Invalid {
        /// The field (or kind of value, e.g. "duration") being parsed.
        field: &'static str,
        /// The text as given.
        text: String,
        /// What is wrong with it, and how to fix it.
        reason: String,
    },
    /// [`Resources::set`] was given a key that is not a resource field.
    #[error("unknown resource key {key:?}; valid keys: {valid}")]
    UnknownKey {
        /// The key as given.
        key: String,
        /// The valid keys, comma separated.
        valid: String,
    },
    /// A count or limit that must be positive was zero.
    #[error("{field} must be at least 1, got 0")]
    Zero {
        /// The field that was zero.
        field: &'static str,
    },
}

/// Resources requested for a task, named as executorlib's `resource_dict`.
///
/// `None` (or an empty collection) means "not set at this layer"; the
/// effective-value helpers ([`Resources::ranks`], ...) supply defaults.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use pitch::{Command, Resources, SingleNodeExecutor};
///
/// # fn main() -> Result<(), pitch::Error> {
/// let defaults = Resources::new()
///     .run_time_max(Duration::from_secs(60))
///     .partition("short") // means nothing locally: accepted, reported once as a warning
///     .env("MODE", "fast");
/// let bigger = defaults.merged(&Resources::new().threads_per_core(2));
/// assert_eq!((bigger.ranks(), bigger.threads()), (1, 2));
///
/// let cache = tempfile::tempdir().unwrap();
/// let exe = SingleNodeExecutor::builder()
///     .max_cores(2)
///     .cache_directory(cache.path())
///     .resources(defaults)
///     .build()?;
/// let out = exe
///     .with_resources(Resources::new().threads_per_core(2))
///     .submit_command(Command::new("sh").args(["-c", "test $OMP_NUM_THREADS = 2 && test $MODE = fast"]))
///     .result()?;
/// assert_eq!(out.exit_code, 0);
/// // A request the backend cannot honour fails the task, not the program.
/// let err = exe
///     .with_resources(Resources::new().cores(64))
///     .submit_command(Command::new("true"))
///     .result()
///     .unwrap_err();
/// assert!(matches!(err, pitch::TaskError::Rejected { .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// Number of MPI ranks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Threads per rank (e.g. `OMP_NUM_THREADS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_per_core: Option<u32>,
    /// GPUs per rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus_per_core: Option<u32>,
    /// Working directory of the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables for the task.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Number of nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_nodes: Option<u32>,
    /// Whether the nodes are requested exclusively.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
    /// Wall-time limit; text like "2h" or "01:30:00", or integer seconds in serde.
    #[serde(with = "duration_serde", skip_serializing_if = "Option::is_none")]
    pub run_time_max: Option<Duration>,
    /// Memory limit in bytes; text like "4G", or integer bytes in serde.
    #[serde(with = "memory_serde", skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// Slurm partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Slurm account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Slurm quality of service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Extra arguments passed verbatim to `srun`/`sbatch`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slurm_cmd_args: Vec<String>,
    /// Whether to pass `--oversubscribe` to Open MPI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openmpi_oversubscribe: Option<bool>,
    /// File that receives the task's error log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_log_file: Option<PathBuf>,
    /// How many times a task is submitted again after a failure it did not cause (preempted,
    /// a failed node or boot, a lost worker or pilot, a job gone without a result), or one
    /// named in `retry_on`, or a checkpoint ([`TaskError::Checkpointed`](crate::TaskError)).
    /// Default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// The task's own failures that are retried too (by default none are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// The wait before the first retry, doubled for each further one (at most 10 min).
    /// Default 5 s.
    #[serde(with = "backoff_serde", skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Duration>,
    /// Warn the task this long before its time limit (Slurm `--signal=B:USR1@<grace>`, Flux
    /// `--signal=SIGUSR1@<grace>`, single-node: SIGUSR1 before `run_time_max`): a function task
    /// sees [`TaskContext::should_stop`](crate::TaskContext), a command receives SIGUSR1.
    /// Not set: no warning (a command that does not handle SIGUSR1 would die of it).
    #[serde(with = "grace_serde", skip_serializing_if = "Option::is_none")]
    pub checkpoint_grace: Option<Duration>,
    /// Let Slurm requeue the job itself after a node failure or preemption (`--requeue`;
    /// `false`: `--no-requeue`). Not set: the cluster's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeue: Option<bool>,
}

/// A failure of the task's own that [`Resources::retry_on`] asks to retry (failures the task
/// did not cause are retried whenever `max_retries` allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RetryOn {
    /// The task function panicked.
    Panic,
    /// The task function returned `Err`.
    Error,
    /// A command exited with a non-zero code.
    ExitCode,
    /// The task's process was killed by a signal.
    Signal,
    /// The task reached its time limit (`run_time_max`, Slurm's `TIMEOUT`).
    Timeout,
    /// The task ran out of memory (Slurm's `OUT_OF_MEMORY`).
    OutOfMemory,
    /// The worker process ended without writing a result.
    WorkerDied,
    /// The task's job was cancelled by someone other than this driver (`scancel`).
    Cancelled,
}

impl RetryOn {
    /// Every kind, in the order of their names in [`RetryOn::NAMES`].
    pub const ALL: [RetryOn; 8] = [
        RetryOn::Panic,
        RetryOn::Error,
        RetryOn::ExitCode,
        RetryOn::Signal,
        RetryOn::Timeout,
        RetryOn::OutOfMemory,
        RetryOn::WorkerDied,
        RetryOn::Cancelled,
    ];
    /// The names `retry_on` accepts (and `all`).
    pub const NAMES: [&'static str; 8] = [
        "panic",
        "error",
        "exit_code",
        "signal",
        "timeout",
        "out_of_memory",
        "worker_died",
        "cancelled",
    ];

    /// The kind's name.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|k| *k == self).expect("listed")]
    }

    /// Parses a comma-separated list of names (`"timeout,error"`, `"all"`).
    pub fn parse_list(text: &str) -> Result<Vec<RetryOn>, ResourceError> {
        let mut kinds = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                kinds.extend(Self::ALL);
                continue;
            }
            match Self::NAMES.iter().position(|n| *n == word) {
                Some(i) => kinds.push(Self::ALL[i]),
                None => {
                    return Err(invalid(
                        "retry_on",
                        word,
                        format!("expected one of {} or all", Self::NAMES.join(", ")),
                    ))
                }
            }
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }
}

/// Defines a builder setter that stores `Some(value)` in the field of the same name.
macro_rules! setter {
    ($doc:literal $name:ident: into $ty:ty) => {
        #[doc = $doc]
        pub fn $name(mut self, value: impl Into<$ty>) -> Self {
            self.$name = Some(value.into());
            self
        }
    };
    ($doc:literal $name:ident: $ty:ty) => {
        #[doc = $doc]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = Some(value);
            self
        }
    };
}

impl Resources {
    /// An empty layer: nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    setter!("Sets the number of MPI ranks." cores: u32);
    setter!("Sets the threads per rank." threads_per_core: u32);
    setter!("Sets the GPUs per rank." gpus_per_core: u32);
    setter!("Sets the working directory." cwd: into PathBuf);
    setter!("Sets the number of nodes." num_nodes: u32);
    setter!("Sets whether nodes are requested exclusively." exclusive: bool);
    setter!("Sets the wall-time limit." run_time_max: Duration);
    setter!("Sets the memory limit in bytes." memory_max: u64);
    setter!("Sets the Slurm partition." partition: into String);
    setter!("Sets the Slurm account." account: into String);
    setter!("Sets the Slurm quality of service." qos: into String);
    setter!("Sets whether Open MPI may oversubscribe." openmpi_oversubscribe: bool);
    setter!("Sets the error log file." error_log_file: into PathBuf);
    setter!("Sets how many times a task is retried (see the field)." max_retries: u32);
    setter!("Sets the wait before the first retry." retry_backoff: Duration);
    setter!("Sets how long before its time limit the task is warned." checkpoint_grace: Duration);
    setter!("Sets whether Slurm may requeue the job itself." requeue: bool);

    /// Sets the task's own failures that are retried too.
    pub fn retry_on(mut self, kinds: impl IntoIterator<Item = RetryOn>) -> Self {
        self.retry_on = kinds.into_iter().collect();
        self.retry_on.sort();
        self.retry_on.dedup();
        self
    }

    /// Adds (or replaces) one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Appends one extra Slurm argument.
    pub fn slurm_cmd_arg(mut self, arg: impl Into<String>) -> Self {
        self.slurm_cmd_args.push(arg.into());
        self
    }

    /// Replaces all extra Slurm arguments.
    pub fn slurm_cmd_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.slurm_cmd_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Layers `over` on top of `self`: each set field of `over` wins, `env`
    /// is the union (`over` wins per key), `slurm_cmd_args` are `self`'s then `over`'s.
    pub fn merged(&self, over: &Resources) -> Resources {
        fn pick<T: Clone>(base: &Option<T>, over: &Option<T>) -> Option<T> {
            over.as_ref().or(base.as_ref()).cloned()
        }
        let mut env = self.env.clone();
        env.extend(over.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut slurm_cmd_args = self.slurm_cmd_args.clone();
        slurm_cmd_args.extend(over.slurm_cmd_args.iter().cloned());
        Resources {
            cores: pick(&self.cores, &over.cores),
            threads_per_core: pick(&self.threads_per_core, &over.threads_per_core),
            gpus_per_core: pick(&self.gpus_per_core, &over.gpus_per_core),
            cwd: pick(&self.cwd, &over.cwd),
            env,
            num_nodes: pick(&self.num_nodes, &over.num_nodes),
            exclusive: pick(&self.exclusive, &over.exclusive),
            run_time_max: pick(&self.run_time_max, &over.run_time_max),
            memory_max: pick(&self.memory_max, &over.memory_max),
            partition: pick(&self.partition, &over.partition),
            account: pick(&self.account, &over.account),
            qos: pick(&self.qos, &over.qos),
            slurm_cmd_args,
            openmpi_oversubscribe: pick(&self.openmpi_oversubscribe, &over.openmpi_oversubscribe),
            error_log_file: pick(&self.error_log_file, &over.error_log_file),
            max_retries: pick(&self.max_retries, &over.max_retries),
            retry_on: if over.retry_on.is_empty() {
                self.retry_on.clone()
            } else {
                over.retry_on.clone()
            },
            retry_backoff: pick(&self.retry_backoff, &over.retry_backoff),
            checkpoint_grace: pick(&self.checkpoint_grace, &over.checkpoint_grace),
            requeue: pick(&self.requeue, &over.requeue),
        }
    }

    /// Effective MPI ranks: `cores`, or 1.
    pub fn ranks(&self) -> u32 {
        self.cores.unwrap_or(1)
    }

    /// Effective threads per rank: `threads_per_core`, or 1.
    pub fn threads(&self) -> u32 {
        self.threads_per_core.unwrap_or(1)
    }

    /// CPU slots needed: ranks times threads, saturating.
    pub fn slots(&self) -> u32 {
        self.ranks().saturating_mul(self.threads())
    }

    /// Effective node count: `num_nodes`, or 1.
    pub fn nodes(&self) -> u32 {
        self.num_nodes.unwrap_or(1)
    }

    /// Whether the field named `key` (one of [`RESOURCE_KEYS`]) is set at this layer.
    fn is_set(&self, key: &str) -> bool {
        match key {
            "cores" => self.cores.is_some(),
            "threads_per_core" => self.threads_per_core.is_some(),
            "gpus_per_core" => self.gpus_per_core.is_some(),
            "cwd" => self.cwd.is_some(),
            "env" => !self.env.is_empty(),
            "num_nodes" => self.num_nodes.is_some(),
            "exclusive" => self.exclusive.is_some(),
            "run_time_max" => self.run_time_max.is_some(),
            "memory_max" => self.memory_max.is_some(),
            "partition" => self.partition.is_some(),
            "account" => self.account.is_some(),
            "qos" => self.qos.is_some(),
            "slurm_cmd_args" => !self.slurm_cmd_args.is_empty(),
            "openmpi_oversubscribe" => self.openmpi_oversubscribe.is_some(),
            "error_log_file" => self.error_log_file.is_some(),
            "max_retries" => self.max_retries.is_some(),
            "retry_on" => !self.retry_on.is_empty(),
            "retry_backoff" => self.retry_backoff.is_some(),
            "checkpoint_grace" => self.checkpoint_grace.is_some(),
            "requeue" => self.requeue.is_some(),
            _ => unreachable!("{key:?} is not a resource key"),
        }
    }

    /// Those of `keys` that are set, in the order given: what a backend that ignores these
    /// keys reports as warnings.
    pub(crate) fn set_keys(&self, keys: &[&'static str]) -> Vec<&'static str> {
        keys.iter().copied().filter(|k| self.is_set(k)).collect()
    }

    /// Sets one field from text, as `--set key=value` would. `env` takes
    /// `"K=V"`; `slurm_cmd_args` appends one argument; booleans take
    /// true/false/yes/no/1/0; durations and memory use [`parse_duration`]
    /// and [`parse_memory`]. Zero values are caught by [`Resources::validate_basic`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ResourceError> {
        let Some(&field) = RESOURCE_KEYS.iter().find(|k| **k == key) else {
            return Err(ResourceError::UnknownKey {
                key: key.to_string(),
                valid: RESOURCE_KEYS.join(", "),
            });
        };
        match field {
            "cores" => self.cores = Some(parse_u32(field, value)?),
            "threads_per_core" => self.threads_per_core = Some(parse_u32(field, value)?),
            "gpus_per_core" => self.gpus_per_core = Some(parse_u32(field, value)?),
            "num_nodes" => self.num_nodes = Some(parse_u32(field, value)?),
            "cwd" => self.cwd = Some(PathBuf::from(value)),
            "error_log_file" => self.error_log_file = Some(PathBuf::from(value)),
            "exclusive" => self.exclusive = Some(parse_bool(field, value)?),
            "openmpi_oversubscribe" => self.openmpi_oversubscribe = Some(parse_bool(field, value)?),
            "run_time_max" => self.run_time_max = Some(duration_for(field, value)?),
            "memory_max" => self.memory_max = Some(memory_for(field, value)?),
            "partition" => self.partition = Some(value.to_string()),
            "account" => self.account = Some(value.to_string()),
            "qos" => self.qos = Some(value.to_string()),
            "slurm_cmd_args" => self.slurm_cmd_args.push(value.to_string()),
            "max_retries" => self.max_retries = Some(parse_u32(field, value)?),
            "retry_on" => self.retry_on = RetryOn::parse_list(value)?,
            "retry_backoff" => self.retry_backoff = Some(duration_for(field, value)?),
            "checkpoint_grace" => self.checkpoint_grace = Some(duration_for(field, value)?),
            "requeue" => self.requeue = Some(parse_bool(field, value)?),
            "env" => {
                let Some((k, v)) = value.split_once('=') else {
                    return Err(invalid(
                        field,
                        value,
                        "expected K=V, e.g. OMP_PROC_BIND=true",
                    ));
                };
                check_env_key(k)?;
                self.env.insert(k.to_string(), v.to_string());
            }
            _ => unreachable!("every RESOURCE_KEYS entry is handled"),
        }
        Ok(())
    }

    /// Checks what can be checked without knowing the backend: zero counts
    /// and limits, and malformed environment variable names.
    pub fn validate_basic(&self) -> Result<(), ResourceError> {
        let zero_checks = [
            ("cores", self.cores == Some(0)),
            ("threads_per_core", self.threads_per_core == Some(0)),
            ("num_nodes", self.num_nodes == Some(0)),
            ("run_time_max", self.run_time_max == Some(Duration::ZERO)),
            ("memory_max", self.memory_max == Some(0)),
            (
                "checkpoint_grace",
                self.checkpoint_grace == Some(Duration::ZERO),
            ),
        ];
        if let Some((field, _)) = zero_checks.iter().find(|(_, zero)| *zero) {
            return Err(ResourceError::Zero { field });
        }
        if let (Some(grace), Some(limit)) = (self.checkpoint_grace, self.run_time_max) {
            if grace >= limit {
                return Err(invalid(
                    "checkpoint_grace",
                    &duration_text(grace),
                    format!(
                        "the warning must come before the time limit: checkpoint_grace \
                         ({}) must be shorter than run_time_max ({})",
                        duration_text(grace),
                        duration_text(limit)
                    ),
                ));
            }
        }
        self.env.keys().try_for_each(|k| check_env_key(k))
    }
}

fn invalid(field: &'static str, text: &str, reason: impl Into<String>) -> ResourceError {
    ResourceError::Invalid {
        field,
        text: text.to_string(),
        reason: reason.into(),
    }
}

fn check_env_key(key: &str) -> Result<(), ResourceError> {
    env_name_problem(key).map_or(Ok(()), |reason| Err(invalid("env", key, reason)))
}

/// What is wrong with `name` as the name of an environment variable, if anything: it must be
/// a shell identifier (`[A-Za-z_][A-Za-z0-9_]*`), as the job scripts of Slurm and Flux
/// export it with bash; a name that only works locally would break the one-line swap.
pub(crate) fn env_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let identifier = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() {
        Some("variable name is empty".into())
    } else if identifier {
        None
    } else {
        Some(
            "variable name is not a shell identifier (letters, digits and `_`, not starting \
             with a digit): the job scripts of Slurm and Flux could not export it"
                .into(),
        )
    }
}

fn parse_u32(field: &'static str, text: &str) -> Result<u32, ResourceError> {
    text.trim()
        .parse()
        .map_err(|_| invalid(field, text, "expected a whole number from 0 to 4294967295"))
}

fn parse_bool(field: &'static str, text: &str) -> Result<bool, ResourceError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(invalid(field, text, "expected true/false, yes/no or 1/0")),
    }
}

#[cfg(test)]
mod tests;
