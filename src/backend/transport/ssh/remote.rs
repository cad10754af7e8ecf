//! [`Remote`]: where and how to reach the login node (the settings both clients read, the
//! checks they make before connecting), and the shell line a scheduler command is there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::transport::{Offline, SshClient};
use crate::template::shell_quote;

/// Where and how to reach a cluster's login node, and where the cache directory's twin
/// lives on its shared storage.
///
/// `host` is what you would type after `ssh`: a host name, or a `Host` alias of
/// `~/.ssh/config`. With the system's `ssh` (the default where one is installed) that file
/// applies as in a terminal (`User`, `Port`, `IdentityFile`, `ProxyJump`, agent, Kerberos,
/// keyboard-interactive/MFA prompts, answered once per connection); what is set here
/// overrides it.
///
/// ```no_run
/// let exe = pitch::SlurmClusterExecutor::builder()
///     .remote(pitch::Remote::new("login.cluster.example.org", "/scratch/me/pitch-cache"))
///     .build()?;
/// # Ok::<(), pitch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Remote {
    pub(in crate::backend::transport) host: String,
    pub(in crate::backend::transport) port: Option<u16>,
    pub(in crate::backend::transport) user: Option<String>,
    pub(in crate::backend::transport) identity: Option<PathBuf>,
    pub(in crate::backend::transport) known_hosts: Option<PathBuf>,
    pub(in crate::backend::transport) ssh_config: Option<PathBuf>,
    pub(in crate::backend::transport) client: SshClient,
    pub(in crate::backend::transport) env: Vec<(String, String)>,
    pub(in crate::backend::transport) path: Vec<PathBuf>,
    pub(in crate::backend::transport) directory: PathBuf,
    pub(in crate::backend::transport) timeout: Duration,
}

impl Remote {
    /// The login node `host` (a host name or a `Host` alias of `~/.ssh/config`), with the
    /// cache directory's twin at `directory`, an absolute path on storage the compute nodes
    /// share.
    pub fn new(host: impl Into<String>, directory: impl Into<PathBuf>) -> Remote {
        Remote {
            host: host.into(),
            port: None,
            user: None,
            identity: None,
            known_hosts: None,
            ssh_config: None,
            client: SshClient::Auto,
            env: Vec::new(),
            path: Vec::new(),
            directory: directory.into(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The SSH port (default: the ssh configuration's, else 22).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The user on the login node (default: the ssh configuration's, else `$USER`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The private key to log in with, and only that one (default: the ssh configuration's
    /// and the SSH agent's keys; the built-in client: the agent, then `~/.ssh/id_ed25519`,
    /// `id_ecdsa`, `id_rsa`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity = Some(path.into());
        self
    }

    /// The known_hosts file the login node's key must be in (default: the ssh
    /// configuration's, else `~/.ssh/known_hosts`).
    pub fn known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }

    /// The ssh configuration file to read instead of `~/.ssh/config` (`ssh -F`); needs the
    /// system's `ssh`.
    pub fn ssh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssh_config = Some(path.into());
        self
    }

    /// Which SSH client connects (default [`SshClient::Auto`]: the system's `ssh` when one
    /// is on `PATH`, else the built-in one).
    pub fn client(mut self, client: SshClient) -> Self {
        self.client = client;
        self
    }

    /// Sets `name=value` for the scheduler's commands on the login node (and so for the jobs
    /// they submit, which inherit it): e.g. `FLUX_URI` for a Flux instance that a
    /// non-interactive login does not know.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Puts `dir` in front of the login node's `PATH` for the scheduler's commands, for a
    /// scheduler a non-interactive login does not find (e.g. `/opt/flux/bin`); the last one
    /// given comes first.
    pub fn path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path.push(dir.into());
        self
    }

    /// How long one network operation may take before it is an error (default 60 s): a
    /// dead connection fails the operation instead of hanging the driver.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(super) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(22))
    }

    /// The transport of `pitch render` for this login node: its paths, no connection.
    pub(crate) fn offline(&self, local_root: &Path) -> Offline {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        Offline {
            local_root: local_root.to_path_buf(),
            directory: self.directory.clone(),
            login: format!("{user}{}", self.address()),
        }
    }

    /// The checks both clients make before connecting.
    pub(in crate::backend::transport) fn check(&self) -> Result<(), String> {
        if !self.directory.is_absolute() {
            return Err(format!(
                "the remote cache directory {} must be an absolute path",
                self.directory.display()
            ));
        }
        if self.timeout.is_zero() {
            return Err("the timeout must be more than zero".into());
        }
        if self.host.is_empty() || self.host.starts_with('-') {
            return Err(format!("{:?} is not a host name", self.host));
        }
        for (name, _) in &self.env {
            let mut chars = name.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || name == "PATH" {
                return Err(format!(
                    "{name:?} cannot be set with env (a variable name{}",
                    if name == "PATH" {
                        ", but PATH: use path(dir))"
                    } else {
                        ": letters, digits, _)"
                    }
                ));
            }
        }
        for dir in &self.path {
            if !dir.is_absolute() || dir.to_string_lossy().contains(':') {
                return Err(format!(
                    "the remote PATH entry {} must be an absolute path without ':'",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// The shell line the login node runs for a scheduler command: this remote's `path` and
    /// `env`, then `env`, then `program args`, every word quoted.
    pub(in crate::backend::transport) fn command_line(
        &self,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> String {
        let mut all: Vec<(&str, String)> = Vec::new();
        if !self.path.is_empty() {
            let mut value = String::new();
            for dir in self.path.iter().rev() {
                value.push_str(&shell_quote(&dir.to_string_lossy()));
                value.push(':');
            }
            // Expanded by the login node's shell.
            value.push_str("\"$PATH\"");
            all.push(("PATH", value));
        }
        for (k, v) in self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied())
        {
            all.push((k, shell_quote(v)));
        }
        command_line(program, args, &all)
    }
}

/// The shell line the login node runs: `env K=V ... program args`, every word quoted but
/// the values, which come quoted.
fn command_line(program: &str, args: &[String], env: &[(&str, String)]) -> String {
    let mut line = String::new();
    if !env.is_empty() {
        line.push_str("env");
        for (k, v) in env {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push(' ');
    }
    line.push_str(&shell_quote(program));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_survive_the_remote_shell() {
        let args: Vec<String> = ["a b", "it's", "$HOME", "*", "--name=x;y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = Remote::new("h", "/c")
            .path("/opt/my tools/bin")
            .env("X_FIRST", "$HOME")
            .command_line(
                "sh",
                &[
                    vec![
                        "-c".to_string(),
                        r#"printf '%s|' "$X_FIRST" "$X_TEST" "${PATH%%:*}" "$@""#.to_string(),
                        "sh".to_string(),
                    ],
                    args,
                ]
                .concat(),
                &[("X_TEST", "1 2")],
            );
        assert!(
            line.starts_with(
                "env PATH='/opt/my tools/bin':\"$PATH\" X_FIRST='$HOME' X_TEST='1 2' sh "
            ),
            "{line}"
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "$HOME|1 2|/opt/my tools/bin|a b|it's|$HOME|*|--name=x;y|"
        );
    }
}
