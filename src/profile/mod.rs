//! Named execution profiles read from `pitch.toml`.
//!
//! A profile bundles a backend choice, its limits and default [`Resources`]
//! under one name, so a workload moves from a laptop to a cluster by changing
//! `--profile laptop` to `--profile cluster`:
//!
//! ```toml
//! [profile.laptop]
//! backend = "single-node"          # single-node | slurm | slurm-job | flux | flux-job
//! cache_directory = "pitch-cache"  # relative to this file's directory
//! max_cores = 4
//! max_workers = 2
//!
//! [profile.cluster]
//! backend = "slurm"
//! cache_directory = "/scratch/me/pitch"
//! trust_group = false               # true: accept a group-writable cache directory or parent
//! template = "slurm.sh.j2"         # relative to this file's directory
//! max_jobs = 500
//! tasks_per_job = 10
//! array_throttle = 50
//! poll_interval = "5s"             # duration text, or integer seconds
//!
//! [profile.cluster.resources]
//! partition = "short"
//! run_time_max = "01:00:00"
//! memory_max = "4G"
//! cores = 1
//!
//! [profile.from-laptop]             # slurm or flux, submitted over SSH
//! backend = "slurm"                 # (needs pitch built with the `remote` feature)
//! [profile.from-laptop.remote]
//! host = "cluster"                  # a host name, or a Host alias of ~/.ssh/config
//! directory = "/scratch/me/pitch-cache"   # the cache directory's twin on the cluster
//! user = "me"                       # optional: port, user, identity_file, known_hosts,
//! identity_file = "~/.ssh/id_ed25519" #   timeout, ssh_config, client (auto|system|builtin),
//! path = ["/opt/flux/bin"]          #   path (in front of the login node's PATH), env:
//! env = { FLUX_URI = "local:///run/flux/local" }  # for the scheduler's commands there
//! ```
//!
//! The file is looked up by [`find_config`]: `pitch.toml` in the current
//! directory, else `$XDG_CONFIG_HOME/pitch/pitch.toml`, else
//! `$HOME/.config/pitch/pitch.toml`. [`load`] reads every profile of a file,
//! [`load_named`] finds the file and returns one profile.
//!
//! Every problem in the file is reported as a [`ProfileError::Invalid`] that
//! names the file, the 1-based line and the dotted key, displayed as
//! `path/to/pitch.toml:LINE: KEY: MESSAGE`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::resources::Resources;

mod locate;
mod raw;

use locate::{key_path, line_of};
use raw::RawFile;

/// The name of the configuration file.
pub const CONFIG_FILE_NAME: &str = "pitch.toml";

/// Which executor backend a profile runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// Processes on the local machine (`"single-node"`).
    #[default]
    SingleNode,
    /// One Slurm job (array) per batch of tasks, submitted with `sbatch` (`"slurm"`).
    Slurm,
    /// Inside an existing Slurm allocation, tasks started with `srun` (`"slurm-job"`).
    SlurmJob,
    /// One Flux batch job per task (or pack of tasks), submitted with `flux batch`
    /// (`"flux"`).
    Flux,
    /// Inside an existing Flux instance, tasks run as jobs with `flux run` (`"flux-job"`).
    FluxJob,
}

impl BackendKind {
    /// Every backend, in the order they are listed in error messages.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::SingleNode,
        BackendKind::Slurm,
        BackendKind::SlurmJob,
        BackendKind::Flux,
        BackendKind::FluxJob,
    ];

    /// The name used in `pitch.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::SingleNode => "single-node",
            BackendKind::Slurm => "slurm",
            BackendKind::SlurmJob => "slurm-job",
            BackendKind::Flux => "flux",
            BackendKind::FluxJob => "flux-job",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend name that is not one of [`BackendKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}; valid backends: single-node, slurm, slurm-job, flux, flux-job")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s.trim())
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

/// One named profile, with relative paths already resolved against the
/// directory of the file it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    /// The profile's name, `NAME` in `[profile.NAME]`.
    pub name: String,
    /// The backend; `single-node` when not given.
    pub backend: BackendKind,
    /// Where results are cached.
    pub cache_directory: Option<PathBuf>,
    /// Trust the group of the cache directory and of the directories above it: accept
    /// group-writable ones (see the README's "Security model").
    pub trust_group: Option<bool>,
    /// The job script template (Slurm).
    pub template: Option<PathBuf>,
    /// Cores the executor may use at once (single-node, slurm-job, flux-job).
    pub max_cores: Option<u32>,
    /// Worker processes kept alive at once.
    pub max_workers: Option<u32>,
    /// Persistent workers for function tasks (single-node, slurm-job, flux-job), pilot jobs
    /// (slurm, flux).
    pub block_allocation: Option<bool>,
    /// Pilot jobs kept once work came (slurm, flux with block_allocation).
    pub min_workers: Option<u32>,
    /// How long an idle pilot waits for work (slurm, flux with block_allocation).
    pub idle_timeout: Option<Duration>,
    /// The address pilots connect to, `host` or `host:port` (slurm, flux with
    /// block_allocation); with a `[remote]` table, where their relay listens on the login
    /// node.
    pub pilot_address: Option<String>,
    /// Jobs queued at once (Slurm).
    pub max_jobs: Option<u32>,
    /// Tasks packed into one job (Slurm).
    pub tasks_per_job: Option<u32>,
    /// Array tasks running at once, Slurm's `--array=...%N` (Slurm).
    pub array_throttle: Option<u32>,
    /// How often the scheduler is polled (Slurm).
    pub poll_interval: Option<Duration>,
    /// Default resources of every task run with this profile.
    pub resources: Resources,
    /// Submission over SSH to a login node (slurm, flux).
    pub remote: Option<RemoteProfile>,
    /// The file the profile was read from.
    pub source: PathBuf,
}

/// `[profile.NAME.remote]`: where a queue executor's login node is (see `pitch::Remote`,
/// feature `remote`). `~/` in `identity_file`, `known_hosts` and `ssh_config` is the home
/// directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteProfile {
    /// The login node: a host name or a `Host` alias of the ssh configuration.
    pub host: String,
    /// The cache directory's twin on the cluster's shared storage (absolute).
    pub directory: PathBuf,
    /// The SSH port (default: the ssh configuration's, else 22).
    pub port: Option<u16>,
    /// The user (default: the ssh configuration's, else `$USER`).
    pub user: Option<String>,
    /// The private key (default: the ssh configuration's, the agent, `~/.ssh/id_*`).
    pub identity_file: Option<PathBuf>,
    /// The known_hosts file (default `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// The longest one network operation may take.
    pub timeout: Option<Duration>,
    /// The ssh configuration file instead of `~/.ssh/config` (system `ssh` only).
    pub ssh_config: Option<PathBuf>,
    /// Which SSH client connects (`auto`, `system`, `builtin`).
    pub client: crate::backend::transport::SshClient,
    /// Variables set for the scheduler's commands on the login node (`env = { K = "v" }`).
    pub env: Vec<(String, String)>,
    /// Directories put in front of the login node's `PATH` for them (`path = ["/opt/x/bin"]`).
    pub path: Vec<PathBuf>,
}

#[cfg(feature = "remote")]
impl RemoteProfile {
    /// These settings as a [`Remote`](crate::Remote).
    pub fn remote(&self) -> crate::Remote {
        let mut remote = crate::Remote::new(&self.host, &self.directory);
        if let Some(port) = self.port {
            remote = remote.port(port);
        }
        if let Some(user) = &self.user {
            remote = remote.user(user);
        }
        if let Some(key) = &self.identity_file {
            remote = remote.identity_file(key);
        }
        if let Some(known) = &self.known_hosts {
            remote = remote.known_hosts(known);
        }
        if let Some(t) = self.timeout {
            remote = remote.timeout(t);
        }
        if let Some(file) = &self.ssh_config {
            remote = remote.ssh_config(file);
        }
        for (k, v) in &self.env {
            remote = remote.env(k, v);
        }
        for dir in &self.path {
            remote = remote.path(dir);
        }
        remote.client(self.client)
    }
}

/// Every profile defined in one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profiles {
    source: PathBuf,
    profiles: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The profile called `name`, or [`ProfileError::MissingProfile`]
    /// naming the file and listing the defined profiles.
    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ProfileError::MissingProfile {
                path: self.source.clone(),
                name: name.to_string(),
                defined: self.profiles.keys().cloned().collect(),
            })
    }

    /// The names of the defined profiles, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    /// The defined profiles, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// The file the profiles were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether the file defines no profile at all.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// Why a profile could not be found, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No `pitch.toml` exists in any of the places searched.
    #[error("no {CONFIG_FILE_NAME} found; looked for {}", list_paths(searched))]
    NotFound {
        /// The candidate files, in lookup order.
        searched: Vec<PathBuf>,
    },
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A syntax error, an unknown key or a bad value in the file.
    #[error("{}: {}{message}", location(path, *line), key_prefix(key))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the offending key or value, when known.
        line: Option<usize>,
        /// The dotted key, e.g. `profile.cluster.max_jobs`; empty when unknown
        /// (some syntax errors).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file has no `[profile.NAME]` table for the requested name.
    #[error(
        "{}: no profile {name:?} (no [profile.{name}] table); defined profiles: {}",
        path.display(),
        list_names(defined)
    )]
    MissingProfile {
        /// The file.
        path: PathBuf,
        /// The requested name.
        name: String,
        /// The names that are defined, sorted.
        defined: Vec<String>,
    },
}

fn location(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// The files [`find_config_with`] considers, in order: `cwd/pitch.toml`,
/// `xdg/pitch/pitch.toml` (only for an absolute `xdg`, as the XDG spec asks),
/// `home/.config/pitch/pitch.toml`. Empty `xdg`/`home` values are ignored.
pub fn config_candidates(cwd: &Path, xdg: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![cwd.join(CONFIG_FILE_NAME)];
    if let Some(xdg) = xdg.filter(|p| p.is_absolute()) {
        out.push(xdg.join("pitch").join(CONFIG_FILE_NAME));
    }
    if let Some(home) = home.filter(|p| !p.as_os_str().is_empty()) {
        out.push(home.join(".config").join("pitch").join(CONFIG_FILE_NAME));
    }
    out.dedup();
    out
}

/// The first existing file of [`config_candidates`], with `XDG_CONFIG_HOME`
/// and `HOME` given by the caller instead of read from the environment.
pub fn find_config_with(cwd: &Path, xdg: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    config_candidates(cwd, xdg, home)
        .into_iter()
        .find(|p| p.is_file())
}

/// The `pitch.toml` to use: in `cwd`, else in `$XDG_CONFIG_HOME/pitch/`,
/// else in `$HOME/.config/pitch/`. `None` when there is none.
pub fn find_config(cwd: &Path) -> Option<PathBuf> {
    let (xdg, home) = (env_path("XDG_CONFIG_HOME"), env_path("HOME"));
    find_config_with(cwd, xdg.as_deref(), home.as_deref())
}

/// An environment variable as a path; `None` when unset or empty.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Reads every profile in `path`. Relative `cache_directory` and `template`
/// paths are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Profiles, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Finds the config file from `cwd` (see [`find_config`]), loads it and
/// returns the profile called `name`.
pub fn load_named(name: &str, cwd: &Path) -> Result<Profile, ProfileError> {
    let (xdg, home) = (env_path("XDG_CONFIG_HOME"), env_path("HOME"));
    load_named_with(name, cwd, xdg.as_deref(), home.as_deref())
}

/// [`load_named`] with `XDG_CONFIG_HOME` and `HOME` given by the caller.
pub fn load_named_with(
    name: &str,
    cwd: &Path,
    xdg: Option<&Path>,
    home: Option<&Path>,
) -> Result<Profile, ProfileError> {
    let path = find_config_with(cwd, xdg, home).ok_or_else(|| ProfileError::NotFound {
        searched: config_candidates(cwd, xdg, home),
    })?;
    load(&path)?.get(name).cloned()
}

/// Parses the text of a `pitch.toml`; `path` is used for messages and to
/// resolve relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Profiles, ProfileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span();
        ProfileError::Invalid {
            path: path.to_path_buf(),
            line: span.as_ref().map(|s| line_of(text, s.start)),
            key: span.map(|s| key_path(text, s)).unwrap_or_default(),
            message: e.message().trim().to_string(),
        }
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut profiles = BTreeMap::new();
    for (name, raw) in raw.profile {
        let profile = raw.into_profile(&name, dir, path, text)?;
        profiles.insert(name, profile);
    }
    Ok(Profiles {
        source: path.to_path_buf(),
        profiles,
    })
}

#[cfg(test)]
mod tests;
