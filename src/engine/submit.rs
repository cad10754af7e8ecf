//! Submissions: a function or a command becomes a task; an equal unresolved one is joined, a
//! cached result answers, and otherwise the task is claimed and its first attempt spawned.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::claim::Claimed;
use super::retry::Attempts;
use super::{Engine, Preparing, SubmitOptions};
use crate::command::{Command, CommandOutput};
use crate::event::EventKind;
use crate::future::{ArgSource, Dependency, Slot, TaskFuture};
use crate::store::{FormatError, ResultRecord};
use crate::task::{TaskKind, View};

impl Engine {
    /// Submits a registered function.
    pub(crate) fn submit_function<T>(
        self: &Arc<Self>,
        opts: &SubmitOptions,
        name: &str,
        fingerprint: &str,
        args: Vec<ArgSource>,
        all_ranks: bool,
    ) -> TaskFuture<T> {
        let mut slots = Vec::with_capacity(args.len());
        let mut deps = Vec::new();
        for (i, arg) in args.into_iter().enumerate() {
            match arg.into_slot(i) {
                Ok((slot, dep)) => {
                    slots.push(slot);
                    if let Some(dep) = dep {
                        deps.push((format!("argument {i}"), dep));
                    }
                }
                Err(e) => return TaskFuture::failed(name, e),
            }
        }
        let kind = TaskKind::Function {
            name: name.to_string(),
            fingerprint: fingerprint.to_string(),
            args: slots,
        };
        let view = if all_ranks {
            View::AllRanks
        } else {
            View::Value
        };
        self.submit(opts, kind, None, deps, view, false)
    }

    /// Submits an external command.
    pub(crate) fn submit_command(
        self: &Arc<Self>,
        opts: &SubmitOptions,
        command: Command,
    ) -> TaskFuture<CommandOutput> {
        let Command {
            mut spec,
            cwd,
            after,
            stdin,
        } = command;
        // The resources' environment is part of what the command does: fold it into the
        // command's own (the command's wins), so it is part of the key.
        for (k, v) in opts.resources.env.iter().rev() {
            if !spec.env.iter().any(|(ck, _)| ck == k) {
                spec.env.insert(0, (k.clone(), v.clone()));
            }
        }
        let deps = after
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("dependency {i}"), d))
            .collect();
        self.submit(opts, TaskKind::Command(spec), cwd, deps, View::Value, stdin)
    }

    fn submit<T>(
        self: &Arc<Self>,
        opts: &SubmitOptions,
        kind: TaskKind,
        cwd_override: Option<PathBuf>,
        deps: Vec<(String, Dependency)>,
        view: View,
        stdin: bool,
    ) -> TaskFuture<T> {
        let label = match &kind {
            TaskKind::Function { name, .. } => name.clone(),
            TaskKind::Command(c) => c.program_name(),
        };
        let spec = match self.make_spec(opts, kind, cwd_override) {
            Ok(spec) => spec,
            Err(e) => return TaskFuture::failed(&label, e),
        };
        let key = spec.key;

        let slot = {
            let mut live = self.live.lock().unwrap();
            if let Some(existing) = live.get(&key) {
                let failed = matches!(existing.outcome(), Some(o) if o.is_err());
                if !failed {
                    self.counts.joined.fetch_add(1, Ordering::Relaxed);
                    return TaskFuture::new(existing.clone(), view);
                }
            }
            let slot = Slot::new(key, label.clone());
            live.insert(key, slot.clone());
            slot
        };
        self.events.emit(EventKind::Submitted {
            key: key.to_string(),
            name: label.clone(),
        });

        if opts.cache && !opts.fresh {
            let stored = match self.store.task(&key).read_result() {
                Err(FormatError::Missing) => crate::resultlog::lookup(self.store.root(), &key),
                other => other,
            };
            match stored {
                Ok(ResultRecord {
                    outcome: Ok(values),
                }) => {
                    self.counts.cached.fetch_add(1, Ordering::Relaxed);
                    self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                    self.events.emit(EventKind::Cached {
                        key: key.to_string(),
                        name: label,
                    });
                    slot.resolve(Ok(values));
                    self.forget(&slot);
                    return TaskFuture::new(slot, view);
                }
                Ok(_) | Err(FormatError::Missing) => {}
                Err(e) => self.events.emit(EventKind::Warning {
                    message: format!(
                        "ignoring the unreadable cached result {}: it {e}; the task runs again",
                        self.store.task(&key).result_file().display()
                    ),
                }),
            }
        }

        *self.pending.lock().unwrap() += 1;
        let preparing = Preparing::new(&self.preparing);
        let engine = self.clone();
        let resources = opts.resources.clone();
        let task_slot = slot.clone();
        let (spec, deps) = (spec, deps);
        // Only a task with a key of its own can run twice (issue 14): claim it.
        let claim = (opts.cache || opts.cache_key.is_some()).then_some(opts.cache && !opts.fresh);
        let fresh = opts.fresh && claim.is_some();
        self.runtime.spawn(async move {
            let started_at = Instant::now();
            let mut preparing = Some(preparing);
            if let Some(use_cache) = claim {
                match engine.claim(&task_slot, use_cache, &mut preparing).await {
                    Ok(Claimed::Run) => {}
                    Ok(Claimed::Answered(record)) => {
                        return engine.finish(&task_slot, record, started_at, true);
                    }
                    Err(e) => {
                        let record = ResultRecord { outcome: Err(e) };
                        return engine.finish(&task_slot, record, started_at, false);
                    }
                }
            }
            let preparing = preparing.unwrap_or_else(|| Preparing::new(&engine.preparing));
            let paths = engine.store.task(&task_slot.key);
            if fresh {
                if let Err(e) = paths.create().and_then(|()| paths.set_aside_result()) {
                    let record = ResultRecord { outcome: Err(e) };
                    return engine.finish(&task_slot, record, started_at, false);
                }
            }
            let attempts = Attempts {
                spec: Arc::new(spec),
                deps,
                resources,
                stdin,
                fresh,
                started_at,
                made: Vec::new(),
            };
            engine.attempt(task_slot, attempts, preparing).await;
        });
        TaskFuture::new(slot, view)
    }
}
