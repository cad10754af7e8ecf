//! Remote submission through the system's `ssh` (OpenSSH): the user's `~/.ssh/config`
//! (`Host` aliases, `User`, `Port`, `IdentityFile`, `ProxyJump`), the agent, Kerberos and
//! keyboard-interactive (MFA) prompts apply exactly as in their terminal.
//!
//! One master connection (`ssh -M`, a `ControlMaster`) is opened per executor and carries
//! every scheduler command and every transfer (`ssh -S socket host 'cat > file'`), so a
//! second-factor prompt is answered once per master, not per command. Its socket lives in a
//! 0700 directory of the user (`$XDG_RUNTIME_DIR` or `/tmp`, `pitch-ssh-UID/`), short enough
//! for the unix socket path limit; the master is closed and the directory removed when the
//! executor ends. A master that dies (network drop, login node reboot) is opened again on
//! the next command, once.
//!
//! The commands through the master run `BatchMode=yes` with `ProxyCommand=false`: when the
//! master is gone they fail instead of prompting or opening a connection of their own
//! (which would authenticate again behind the user's back). The host key is checked with
//! `StrictHostKeyChecking=yes` (never turned off). Every `ssh` is a child process awaited by
//! tokio: nothing blocks the engine's runtime threads, and a large upload is the kernel
//! copying a file into a pipe.
//!
//! Why not the `openssh` crate: its master runs `BatchMode=yes` with no terminal and no
//! askpass, so the keyboard-interactive prompt that MFA sites need can never be answered;
//! the parts we need (a master, commands through it, `cat` for files) are a few `ssh`
//! command lines.
//!
//! The parts: `client.rs` [`SystemSsh`] (the connection and the `Transport`), `options.rs`
//! (the `ssh` program, `ssh -G`, the options of every `ssh`), `master.rs` (the master: its
//! socket directory, opening, watchdog, end), `commands.rs` (command lines and scripts
//! through it, the relay's `ssh`), `files.rs` (uploads and downloads with `cat`).

mod client;
mod commands;
mod files;
mod master;
mod options;

pub(crate) use client::SystemSsh;
pub(crate) use options::program;
