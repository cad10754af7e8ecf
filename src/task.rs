//! Task identity and the task file: [`TaskKey`], the content-addressed name of a task, and
//! `TaskSpec`, what a worker (or a job script) needs to run it, with `CommandSpec`, the
//! serializable part of a [`crate::Command`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec;

/// The content-addressed key of a task: 128 bits of BLAKE3, shown as 32 hex digits. It names
/// the task's directory in the cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey([u8; 16]);

impl TaskKey {
    /// The key of these 16 bytes (as read back from a result file).
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> TaskKey {
        TaskKey(bytes)
    }

    /// The key's 16 bytes (result and rank files start their payload with them).
    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    fn hash(material: &[u8]) -> TaskKey {
        let mut out = [0u8; 16];
        out.copy_from_slice(&blake3::hash(material).as_bytes()[..16]);
        TaskKey(out)
    }

    /// This key combined with `salt` (what else the task's value depends on, e.g. the init
    /// function of the worker that runs it).
    pub(crate) fn salted(&self, salt: &[u8]) -> TaskKey {
        TaskKey::hash(&[b"salted\0".as_slice(), &self.0, salt].concat())
    }

    /// The key of an explicit, user-chosen cache key.
    pub(crate) fn explicit(name: &str) -> TaskKey {
        TaskKey::hash(&[b"explicit\0".as_slice(), name.as_bytes()].concat())
    }

    /// A key that no other task has: for tasks with caching switched off.
    pub(crate) fn unique() -> TaskKey {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let material = format!(
            "unique\0{}\0{now}\0{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        TaskKey::hash(material.as_bytes())
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskKey({self})")
    }
}

impl FromStr for TaskKey {
    type Err = String;
    fn from_str(s: &str) -> Result<TaskKey, String> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a task key (32 hex digits)"));
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(TaskKey(out))
    }
}

/// Which part of an upstream result an argument takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum View {
    /// Rank 0's value (the value of a one-rank task).
    Value,
    /// Every rank's value, as a `Vec` in rank order.
    AllRanks,
}

/// One argument of a function task: inline bytes, or a reference to an upstream task's result,
/// which the worker resolves from the store (its bytes are the argument's encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ArgSlot {
    Inline(Vec<u8>),
    Ref { key: TaskKey, view: View },
}

/// The serializable part of a command: what the task file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    pub allow_failure: bool,
}

impl CommandSpec {
    /// `program` alone: no arguments, environment or named output files; failure is an
    /// error (what the tests and the fuzz entry points need).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn bare(program: &str) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: vec![],
            env: vec![],
            stdout: None,
            stderr: None,
            allow_failure: false,
        }
    }

    pub(crate) fn program_name(&self) -> String {
        Path::new(&self.program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.clone())
    }
}

/// What runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum TaskKind {
    Function {
        name: String,
        fingerprint: String,
        args: Vec<ArgSlot>,
    },
    Command(CommandSpec),
}

impl TaskKind {
    /// What a listing (`pitch status`/`results`, a compacted log record) shows of a task:
    /// its name (a command's program name), a command's argv, and a `pitch sweep` point's
    /// parameters (its `PITCH_PARAM_*` variables, the prefix taken off).
    pub(crate) fn shown(&self) -> (String, Option<Vec<String>>, Vec<(String, String)>) {
        match self {
            TaskKind::Function { name, .. } => (name.clone(), None, Vec::new()),
            TaskKind::Command(c) => (
                c.program_name(),
                Some(
                    std::iter::once(c.program.clone())
                        .chain(c.args.iter().cloned())
                        .collect(),
                ),
                c.env
                    .iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix("PITCH_PARAM_")
                            .map(|n| (n.to_string(), v.clone()))
                    })
                    .collect(),
            ),
        }
    }
}

/// The contents of `task.bin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskSpec {
    pub key: TaskKey,
    pub kind: TaskKind,
    /// Number of ranks (`cores`).
    pub ranks: u32,
    /// Threads per rank.
    pub threads: u32,
    /// Environment added for the task.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
}

impl TaskSpec {
    /// The content-addressed key. Functions: name, fingerprint, argument slots, ranks.
    /// Commands: argv, environment, working directory, output files, ranks. Scheduling-only
    /// settings (partition, time, memory...) never change it.
    pub(crate) fn content_key(kind: &TaskKind, ranks: u32, cwd: &Option<PathBuf>) -> TaskKey {
        #[derive(Serialize)]
        enum Material<'a> {
            Function {
                name: &'a str,
                fingerprint: &'a str,
                args: &'a [ArgSlot],
                ranks: u32,
            },
            Command {
                spec: &'a CommandSpec,
                cwd: &'a Option<PathBuf>,
                ranks: u32,
            },
        }
        let material = match kind {
            TaskKind::Function {
                name,
                fingerprint,
                args,
            } => Material::Function {
                name,
                fingerprint,
                args,
                ranks,
            },
            TaskKind::Command(spec) => Material::Command { spec, cwd, ranks },
        };
        TaskKey::hash(&codec::encode(&material).expect("key material always encodes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(args: Vec<ArgSlot>) -> TaskKind {
        TaskKind::Function {
            name: "m::f".into(),
            fingerprint: "fp".into(),
            args,
        }
    }

    #[test]
    fn key_text_round_trip() {
        let key = TaskKey::explicit("x");
        let text = key.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<TaskKey>().unwrap(), key);
        assert!("zz".parse::<TaskKey>().is_err());
        assert!("g".repeat(32).parse::<TaskKey>().is_err());
    }

    #[test]
    fn key_depends_on_arguments_and_ranks_only() {
        let a = TaskSpec::content_key(&function(vec![ArgSlot::Inline(vec![1])]), 1, &None);
        let same = TaskSpec::content_key(&function(vec![ArgSlot::Inline(vec![1])]), 1, &None);
        let other_arg = TaskSpec::content_key(&function(vec![ArgSlot::Inline(vec![2])]), 1, &None);
        let other_ranks =
            TaskSpec::content_key(&function(vec![ArgSlot::Inline(vec![1])]), 2, &None);
        let by_ref = TaskSpec::content_key(
            &function(vec![ArgSlot::Ref {
                key: a,
                view: View::Value,
            }]),
            1,
            &None,
        );
        assert_eq!(a, same);
        assert_ne!(a, other_arg);
        assert_ne!(a, other_ranks);
        assert_ne!(a, by_ref);
        assert_ne!(TaskKey::unique(), TaskKey::unique());
        assert_ne!(TaskKey::explicit("a"), TaskKey::explicit("b"));
    }
}
