//! [`Executor::from_profile`] and [`Executor::from_env`]: the executors of `src/builders`
//! built from a `pitch.toml` profile (the CLI applies its flags to the profile first).

use std::sync::Arc;

use super::{
    build_queue, CommonBuilder, FluxJobBuilder, PilotSettings, PoolSettings, RemoteSetting,
    SingleNodeBuilder, SingleNodeExecutor, Slots, SlurmJobBuilder,
};
use crate::backend::queue::QueueConfig;
use crate::error::Error;
use crate::event::Reporter;
use crate::executor::Executor;
use crate::scheduler::SchedulerKind;

impl Executor {
    /// Builds the executor a profile of `pitch.toml` describes (the file in the current
    /// directory, else in the user's config directory): a config change is the whole swap.
    pub fn from_profile(name: &str) -> Result<Executor, Error> {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        Executor::from_profile_in(name, &cwd)
    }

    /// [`Executor::from_profile`] with `pitch.toml` looked up from `cwd`. A problem in the file
    /// is [`Error::Profile`], which names the file, the line and the key.
    fn from_profile_in(name: &str, cwd: &std::path::Path) -> Result<Executor, Error> {
        let profile = crate::profile::load_named(name, cwd)?;
        Executor::from_settings(&profile, Vec::new())
    }

    /// Builds the executor named by `PITCH_PROFILE`, or a default SingleNode executor when it
    /// is not set.
    pub fn from_env() -> Result<Executor, Error> {
        match std::env::var("PITCH_PROFILE") {
            Ok(name) if !name.is_empty() => Executor::from_profile(&name),
            _ => SingleNodeExecutor::builder().build(),
        }
    }

    /// Builds an executor from a profile's settings (the CLI's flags are applied to the
    /// profile first).
    #[doc(hidden)]
    pub fn from_settings(
        p: &crate::profile::Profile,
        reporters: Vec<Arc<dyn Reporter>>,
    ) -> Result<Executor, Error> {
        Executor::from_settings_with(p, reporters, false)
    }

    /// [`Executor::from_settings`] for an executor that only renders job scripts
    /// ([`Executor::render_command`]): it creates nothing, not even the cache directory
    /// (`pitch render`).
    #[doc(hidden)]
    pub fn for_rendering(p: &crate::profile::Profile) -> Result<Executor, Error> {
        Executor::from_settings_with(p, Vec::new(), true)
    }

    fn from_settings_with(
        p: &crate::profile::Profile,
        reporters: Vec<Arc<dyn Reporter>>,
        dry: bool,
    ) -> Result<Executor, Error> {
        use crate::profile::BackendKind;
        let mut common = CommonBuilder {
            resources: p.resources.clone(),
            reporters,
            dry,
            ..CommonBuilder::default()
        };
        if let Some(dir) = &p.cache_directory {
            common.cache_directory = dir.clone();
        }
        common.trust_group = p.trust_group.unwrap_or(false);
        let ignored = |what: &str| {
            Error::Config(format!(
                "{what} does not apply to the {} backend (profile {:?})",
                p.backend, p.name
            ))
        };
        let pilots = matches!(p.backend, BackendKind::Slurm | BackendKind::Flux)
            && p.block_allocation == Some(true);
        if !pilots {
            if p.min_workers.is_some() {
                return Err(ignored(
                    "min_workers (pilot jobs: slurm or flux with block_allocation)",
                ));
            }
            if p.idle_timeout.is_some() {
                return Err(ignored(
                    "idle_timeout (pilot jobs: slurm or flux with block_allocation)",
                ));
            }
            if p.pilot_address.is_some() {
                return Err(ignored(
                    "pilot_address (pilot jobs: slurm or flux with block_allocation)",
                ));
            }
        }
        match p.backend {
            BackendKind::SingleNode | BackendKind::SlurmJob | BackendKind::FluxJob => {
                if p.remote.is_some() {
                    return Err(ignored("remote (submission over SSH needs slurm or flux)"));
                }
                if p.max_jobs.is_some() {
                    return Err(ignored("max_jobs"));
                }
                if p.tasks_per_job.is_some() {
                    return Err(ignored("tasks_per_job"));
                }
                if p.template.is_some() {
                    return Err(ignored("template"));
                }
                let slots = Slots {
                    max_cores: p.max_cores,
                    max_workers: p.max_workers,
                };
                match p.backend {
                    BackendKind::SingleNode => SingleNodeBuilder {
                        common,
                        slots,
                        pool: super::PoolSettings {
                            block_allocation: p.block_allocation.unwrap_or(false),
                            ..Default::default()
                        },
                    }
                    .build(),
                    BackendKind::SlurmJob => SlurmJobBuilder {
                        common,
                        slots,
                        pool: super::PoolSettings {
                            block_allocation: p.block_allocation.unwrap_or(false),
                            ..Default::default()
                        },
                    }
                    .build(),
                    _ => FluxJobBuilder {
                        common,
                        slots,
                        pool: super::PoolSettings {
                            block_allocation: p.block_allocation.unwrap_or(false),
                            ..Default::default()
                        },
                    }
                    .build(),
                }
            }
            BackendKind::Slurm | BackendKind::Flux => {
                if p.max_cores.is_some() {
                    return Err(ignored("max_cores"));
                }
                if p.max_workers.is_some() && !pilots {
                    return Err(ignored("max_workers (without block_allocation)"));
                }
                if p.backend == BackendKind::Flux && p.array_throttle.is_some() {
                    return Err(ignored("array_throttle (Flux has no job arrays)"));
                }
                let mut cfg = QueueConfig {
                    max_jobs: p.max_jobs,
                    tasks_per_job: p.tasks_per_job.unwrap_or(1),
                    array_throttle: p.array_throttle,
                    template: p.template.clone(),
                    ..QueueConfig::default()
                };
                if let Some(i) = p.poll_interval {
                    cfg.poll_interval = i;
                }
                let kind = if p.backend == BackendKind::Flux {
                    SchedulerKind::Flux
                } else {
                    SchedulerKind::Slurm
                };
                let pilots = PilotSettings {
                    pool: PoolSettings {
                        block_allocation: pilots,
                        ..Default::default()
                    },
                    max_workers: p.max_workers,
                    min_workers: p.min_workers,
                    idle_timeout: p.idle_timeout,
                    address: p.pilot_address.clone(),
                };
                build_queue(common, cfg, remote_setting(p)?, kind, pilots)
            }
        }
    }
}

/// The `[profile.NAME.remote]` table as the builder's setting.
#[cfg(feature = "remote")]
fn remote_setting(p: &crate::profile::Profile) -> Result<RemoteSetting, Error> {
    Ok(p.remote.as_ref().map(crate::profile::RemoteProfile::remote))
}

/// Without the `remote` feature a profile that submits over SSH is refused.
#[cfg(not(feature = "remote"))]
fn remote_setting(p: &crate::profile::Profile) -> Result<RemoteSetting, Error> {
    match &p.remote {
        Some(r) => Err(Error::Config(format!(
            "profile {:?} submits over SSH to {} ([profile.{}.remote]), but this pitch was \
             built without the `remote` feature: build it with `--features remote`",
            p.name, r.host, p.name
        ))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileError;

    #[test]
    fn trust_group_in_a_profile_accepts_a_group_writable_folder() {
        use std::os::unix::fs::PermissionsExt;
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only root can give a test directory a shared group");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let project = d.path().join("project");
        std::fs::create_dir(&project).unwrap();
        // daemon (1): a group shared by others, not root's private group.
        std::os::unix::fs::chown(&project, None, Some(1)).unwrap();
        std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o770)).unwrap();
        std::fs::write(
            d.path().join("pitch.toml"),
            "[profile.strict]\ncache_directory = \"project/cache\"\n\n\
             [profile.shared]\ncache_directory = \"project/cache\"\ntrust_group = true\n",
        )
        .unwrap();
        let err = Executor::from_profile_in("strict", d.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Untrusted { path, .. } if path.ends_with("project")),
            "{err}"
        );
        assert_eq!(
            crate::profile::load_named("shared", d.path())
                .unwrap()
                .trust_group,
            Some(true)
        );
        Executor::from_profile_in("shared", d.path()).unwrap();
    }

    #[test]
    fn a_bad_profile_keeps_its_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("pitch.toml");
        std::fs::write(
            &file,
            "[profile.ok]\nmax_cores = 1\n\n[profile.typo]\nmax_core = 2\n",
        )
        .unwrap();
        let err = Executor::from_profile_in("typo", d.path()).unwrap_err();
        let text = err.to_string();
        match err {
            Error::Profile(e @ ProfileError::Invalid { .. }) => {
                assert_eq!(text, e.to_string());
                let ProfileError::Invalid {
                    path, line, key, ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(path, file);
                assert_eq!(line, Some(5));
                assert_eq!(key, "profile.typo.max_core");
            }
            other => panic!("not a typed profile error: {other:?}"),
        }
        assert!(
            text.contains("pitch.toml:5") && text.contains("max_core"),
            "{text}"
        );
        std::fs::write(&file, "[profile.ok]\nmax_cores = 1\n").unwrap();
        let err = Executor::from_profile_in("absent", d.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Profile(ProfileError::MissingProfile { name, .. }) if name == "absent"),
            "{err:?}"
        );
    }
}
