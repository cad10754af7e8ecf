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
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::resources::{parse_duration, ResourceError, Resources};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    profile: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    backend: Option<BackendText>,
    cache_directory: Option<Spanned<PathBuf>>,
    trust_group: Option<bool>,
    template: Option<Spanned<PathBuf>>,
    max_cores: Option<Spanned<u32>>,
    max_workers: Option<Spanned<u32>>,
    block_allocation: Option<bool>,
    min_workers: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<DurationText>>,
    pilot_address: Option<String>,
    max_jobs: Option<Spanned<u32>>,
    tasks_per_job: Option<Spanned<u32>>,
    array_throttle: Option<Spanned<u32>>,
    poll_interval: Option<Spanned<DurationText>>,
    resources: Option<Spanned<Resources>>,
    remote: Option<RawRemote>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    host: String,
    directory: PathBuf,
    port: Option<u16>,
    user: Option<String>,
    identity_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    timeout: Option<DurationText>,
    ssh_config: Option<PathBuf>,
    #[serde(default)]
    client: crate::backend::transport::SshClient,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    path: Vec<PathBuf>,
}

/// `~/x` as `$HOME/x`; other paths as they are.
fn expand_home(p: PathBuf) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p,
    }
}

impl RawProfile {
    fn into_profile(
        self,
        name: &str,
        dir: &Path,
        path: &Path,
        text: &str,
    ) -> Result<Profile, ProfileError> {
        let invalid = |offset: usize, field: &str, message: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            line: Some(line_of(text, offset)),
            key: format!("profile.{name}.{field}"),
            message,
        };
        let counts = [
            ("max_cores", &self.max_cores),
            ("max_workers", &self.max_workers),
            ("max_jobs", &self.max_jobs),
            ("tasks_per_job", &self.tasks_per_job),
            ("array_throttle", &self.array_throttle),
        ];
        for (field, value) in counts {
            if let Some(v) = value.as_ref().filter(|v| *v.get_ref() == 0) {
                return Err(invalid(
                    v.span().start,
                    field,
                    "must be at least 1, got 0".into(),
                ));
            }
        }
        if let Some(v) = self
            .poll_interval
            .as_ref()
            .filter(|v| v.get_ref().0.is_zero())
        {
            let message = "must be longer than zero, e.g. \"5s\"".to_string();
            return Err(invalid(v.span().start, "poll_interval", message));
        }
        let (resources, resources_span) = match self.resources {
            Some(r) => {
                let span = r.span();
                (r.into_inner(), Some(span))
            }
            None => (Resources::default(), None),
        };
        if let Err(e) = resources.validate_basic() {
            let field = match &e {
                ResourceError::Zero { field } | ResourceError::Invalid { field, .. } => *field,
                ResourceError::UnknownKey { .. } => "",
            };
            let start = resources_span.map_or(0, |s| key_offset_in_table(text, s, field));
            return Err(invalid(start, &format!("resources.{field}"), e.to_string()));
        }
        // An empty path would silently mean "this file's folder" once resolved.
        for (field, value) in [
            ("cache_directory", &self.cache_directory),
            ("template", &self.template),
        ] {
            if let Some(v) = value
                .as_ref()
                .filter(|v| v.get_ref().as_os_str().is_empty())
            {
                let message = "is an empty path; give a directory, e.g. \"pitch-cache\"".into();
                return Err(invalid(v.span().start, field, message));
            }
        }
        let resolve = |p: Spanned<PathBuf>| {
            let p = p.into_inner();
            if p.is_absolute() {
                p
            } else {
                dir.join(p)
            }
        };
        let get = |v: Option<Spanned<u32>>| v.map(Spanned::into_inner);
        Ok(Profile {
            name: name.to_string(),
            backend: self.backend.map_or_else(BackendKind::default, |b| b.0),
            cache_directory: self.cache_directory.map(resolve),
            trust_group: self.trust_group,
            template: self.template.map(resolve),
            max_cores: get(self.max_cores),
            max_workers: get(self.max_workers),
            block_allocation: self.block_allocation,
            min_workers: get(self.min_workers),
            idle_timeout: self.idle_timeout.map(|d| d.into_inner().0),
            pilot_address: self.pilot_address,
            max_jobs: get(self.max_jobs),
            tasks_per_job: get(self.tasks_per_job),
            array_throttle: get(self.array_throttle),
            poll_interval: self.poll_interval.map(|d| d.into_inner().0),
            resources,
            remote: self.remote.map(|r| RemoteProfile {
                host: r.host,
                directory: r.directory,
                port: r.port,
                user: r.user,
                identity_file: r.identity_file.map(expand_home),
                known_hosts: r.known_hosts.map(expand_home),
                timeout: r.timeout.map(|t| t.0),
                ssh_config: r.ssh_config.map(expand_home),
                client: r.client,
                env: r.env.into_iter().collect(),
                path: r.path,
            }),
            source: path.to_path_buf(),
        })
    }
}

/// A backend name, checked while deserializing so the error carries a span.
struct BackendText(BackendKind);

impl<'de> Deserialize<'de> for BackendText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(BackendText)
            .map_err(serde::de::Error::custom)
    }
}

/// A duration given as text ("5s", "00:00:05") or integer seconds.
struct DurationText(Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"5s\" or \"00:00:05\", or integer seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                parse_duration(v).map(DurationText).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationText, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                Ok(DurationText(Duration::from_secs(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The byte offset where the line holding `offset` starts, and that line
/// (without its `\n`).
fn line_at(text: &str, offset: usize) -> (usize, &str) {
    let offset = offset.min(text.len());
    let bytes = text.as_bytes();
    let start = bytes[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = bytes[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| offset + i);
    (start, &text[start..end])
}

/// `a . b.c` as `a.b.c`.
fn normalize_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    parts.join(".")
}

/// The dotted path of a `[table]` or `[[array]]` header line.
fn header_of(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('[')?;
    let rest = rest.trim_start_matches('[');
    let inner = rest.split(']').next().unwrap_or(rest);
    Some(normalize_key(inner))
}

/// The key assigned on a `key = value` line.
fn leading_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let (key, _) = t.split_once('=')?;
    let key = normalize_key(key);
    (!key.is_empty()).then_some(key)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '\'')
}

/// Best-effort dotted key path (`profile.NAME.key`) of the key or value at
/// `span`, from the nearest table header above it and the key on its line.
fn key_path(text: &str, span: Range<usize>) -> String {
    let (line_start, line) = line_at(text, span.start);
    let rel_start = (span.start - line_start).min(line.len());
    let rel_end = span
        .end
        .saturating_sub(line_start)
        .clamp(rel_start, line.len());
    if header_of(line).is_some() {
        // The key is part of a header: the header's path up to the span's end.
        let upto = line.get(..rel_end).unwrap_or(line);
        return header_of(upto).unwrap_or_default();
    }
    let above = text.get(..line_start).unwrap_or("");
    let table = above
        .split('\n')
        .rev()
        .find_map(header_of)
        .unwrap_or_default();
    let local = match line.find('=') {
        // The span is (part of) the line's key.
        Some(eq) if rel_start < eq => normalize_key(line.get(..rel_end.min(eq)).unwrap_or("")),
        Some(eq) => {
            let lead = normalize_key(&line[..eq]);
            let spanned = line.get(rel_start..rel_end).unwrap_or("");
            let after = line.get(rel_end..).unwrap_or("");
            let before = line.get(..rel_start).unwrap_or("");
            let inner = if after.trim_start().starts_with('=') {
                // A key inside an inline table.
                Some(spanned.trim().to_string())
            } else if before.get(eq..).unwrap_or("").contains('{') {
                // A value inside an inline table: the key just before it.
                before
                    .trim_end()
                    .strip_suffix('=')
                    .map(|b| {
                        let b = b.trim_end();
                        let n = b.chars().rev().take_while(|c| is_key_char(*c)).count();
                        b.chars().skip(b.chars().count() - n).collect::<String>()
                    })
                    .filter(|k| !k.is_empty())
            } else {
                None
            };
            match inner {
                Some(inner) => format!("{lead}.{inner}"),
                None => lead,
            }
        }
        // A continuation line of a multi-line array: the key that opened it.
        None => above
            .split('\n')
            .rev()
            .take_while(|l| header_of(l).is_none())
            .find_map(leading_key)
            .unwrap_or_default(),
    };
    match (table.is_empty(), local.is_empty()) {
        (_, true) => table,
        (true, false) => local,
        (false, false) => format!("{table}.{local}"),
    }
}

/// Best-effort byte offset of `key = ...` inside the table whose span is
/// `table` (a `[header]`, an inline `{ ... }` or a dotted key); the table's
/// start when not found.
fn key_offset_in_table(text: &str, table: Range<usize>, key: &str) -> usize {
    if key.is_empty() {
        return table.start;
    }
    let (line_start, line) = line_at(text, table.start);
    let tail = line.get(table.start - line_start..).unwrap_or("");
    if let Some(i) = find_assignment(tail, key) {
        return table.start + i;
    }
    let mut offset = line_start + line.len() + 1;
    for next in text.get(offset..).unwrap_or("").split('\n') {
        if header_of(next).is_some() {
            break;
        }
        if let Some(lead) = leading_key(next) {
            if lead == key || lead.ends_with(&format!(".{key}")) {
                return offset;
            }
        }
        offset += next.len() + 1;
    }
    table.start
}

/// Where `key` occurs in `s` as a whole key followed by `=`.
fn find_assignment(s: &str, key: &str) -> Option<usize> {
    s.match_indices(key).map(|(i, _)| i).find(|&i| {
        let before_ok = s[..i].chars().next_back().is_none_or(|c| !is_key_char(c));
        let after = &s[i + key.len()..];
        before_ok && after.trim_start().starts_with('=')
    })
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
