//! The file as TOML holds it: [`RawFile`], [`RawProfile`] and [`RawRemote`] (serde, unknown
//! keys refused, values kept with their spans), and [`RawProfile::into_profile`], which checks
//! each value and turns it into a [`Profile`] or a [`ProfileError::Invalid`] at its line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::locate::{key_offset_in_table, line_of};
use super::{BackendKind, Profile, ProfileError, RemoteProfile};
use crate::resources::{parse_duration, ResourceError, Resources};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) profile: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
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
    pub(super) fn into_profile(
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
