//! Remote submission: a queue executor (Slurm, Flux) whose driver runs on a laptop or
//! workstation and reaches the cluster's login node over SSH. Scheduler commands run there;
//! task files, the worker binary and job scripts go up into a twin of the cache directory on
//! the cluster's shared storage, and results come back down when their jobs leave the queue.
//! The local cache directory stays the driver's record of everything.
//!
//! This module holds [`Remote`] (where and how) and [`Ssh`], the built-in client (libssh2,
//! SFTP): the fallback where no system `ssh` exists (see [`super::system`] for the default).
//! The host key is checked against `known_hosts` (an unknown or changed key is an error,
//! never accepted); the user authenticates with a key file or the SSH agent, never a
//! password.
//!
//! The parts: `remote.rs` [`Remote`] (the settings, the checks, the remote command line),
//! `session.rs` [`Ssh`] (the connection: host key, login, reconnection, commands),
//! `files.rs` (uploads and downloads over SFTP, the local side through the cache directory's
//! checked handles), `builtin.rs` [`Builtin`] (the `Transport` on tokio's blocking pool).

mod builtin;
mod files;
mod remote;
mod session;

pub(crate) use builtin::Builtin;
pub(in crate::backend::transport) use files::{open_local, write_local};
pub use remote::Remote;
pub(in crate::backend::transport) use session::on_login_node;
pub(crate) use session::Ssh;
