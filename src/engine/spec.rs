//! What a submission becomes: its resources checked, its task file ([`TaskSpec`]) with the
//! environment and working directory it runs with, and its key; and the job script a command
//! would be submitted with.

use std::path::PathBuf;

use super::{Engine, SubmitOptions};
use crate::command::Command;
use crate::error::TaskError;
use crate::event::EventKind;
use crate::resources::Resources;
use crate::task::{TaskKey, TaskKind, TaskSpec};

/// Environment variables that tell threaded libraries how many threads a task may use.
const THREAD_VARS: [&str; 4] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "RAYON_NUM_THREADS",
];

impl Engine {
    /// Validates resources for this backend; warns once per key the backend ignores.
    pub(crate) fn check_resources(&self, resources: &Resources) -> Result<(), TaskError> {
        let reject = |reason: String| TaskError::Rejected {
            backend: self.backend.name().to_string(),
            reason,
        };
        resources
            .validate_basic()
            .map_err(|e| reject(e.to_string()))?;
        let ignored = self.backend.check(resources).map_err(reject)?;
        let mut warned = self.warned.lock().unwrap();
        for key in ignored {
            if warned.insert(key) {
                self.events.emit(EventKind::Warning {
                    message: format!(
                        "resource {key:?} means nothing on the {} backend and is ignored",
                        self.backend.name()
                    ),
                });
            }
        }
        Ok(())
    }

    fn spec_env(resources: &Resources) -> Vec<(String, String)> {
        let threads = resources.threads().to_string();
        let mut env: Vec<(String, String)> = THREAD_VARS
            .iter()
            .map(|v| (v.to_string(), threads.clone()))
            .collect();
        env.extend(resources.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    fn absolute(dir: &Option<PathBuf>) -> Option<PathBuf> {
        dir.as_ref().map(|d| {
            if d.is_absolute() {
                d.clone()
            } else {
                std::env::current_dir()
                    .map(|c| c.join(d))
                    .unwrap_or_else(|_| d.clone())
            }
        })
    }

    /// The task file of a submission: checks resources, resolves the working directory and
    /// computes the key.
    pub(super) fn make_spec(
        &self,
        opts: &SubmitOptions,
        kind: TaskKind,
        cwd_override: Option<PathBuf>,
    ) -> Result<TaskSpec, TaskError> {
        let resources = &opts.resources;
        self.check_resources(resources)?;
        let ranks = resources.ranks();
        let cwd = Self::absolute(&cwd_override.or_else(|| resources.cwd.clone()));
        let key = match (&opts.cache_key, opts.cache) {
            (Some(k), _) => TaskKey::explicit(k),
            (None, true) => match self.backend.key_salt(&kind) {
                Some(salt) => TaskSpec::content_key(&kind, ranks, &cwd).salted(salt),
                None => TaskSpec::content_key(&kind, ranks, &cwd),
            },
            (None, false) => TaskKey::unique(),
        };
        Ok(TaskSpec {
            key,
            kind,
            ranks,
            threads: resources.threads(),
            env: Self::spec_env(resources),
            cwd,
        })
    }

    /// The job script a command would be submitted with, without submitting it.
    pub(crate) fn render_command(
        &self,
        opts: &SubmitOptions,
        command: Command,
    ) -> Result<String, TaskError> {
        let Command { spec, cwd, .. } = command;
        let spec = self.make_spec(opts, TaskKind::Command(spec), cwd)?;
        let paths = self.store.task(&spec.key);
        self.backend
            .render(&spec, &opts.resources, &paths)
            .unwrap_or_else(|| {
                Err(TaskError::Rejected {
                    backend: self.backend.name().into(),
                    reason: "this backend runs no job scripts".into(),
                })
            })
    }
}
