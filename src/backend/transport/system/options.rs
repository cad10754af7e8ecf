//! What the system's `ssh` and its configuration make of a [`Remote`]: the program on
//! `PATH`, the host as `ssh -G` resolves it, and the options of the master and of the
//! commands through it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::client::Inner;
use crate::backend::transport::ssh::Remote;

/// The `ssh` program on `PATH`, if there is one.
pub(crate) fn program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ssh"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What ssh's configuration makes of `remote`.
pub(super) struct Resolved {
    /// `user@hostname:port`.
    pub(super) login: String,
    /// `hostname:port`.
    pub(super) address: String,
    /// Options that undo settings of the user's configuration meant for their terminal
    /// sessions, which would break pitch's: a `RemoteCommand` (a command line of pitch's
    /// next to it is an error), `ForkAfterAuthentication` (the master would leave pitch's
    /// watch). Only when set: older ssh clients do not know these options.
    pub(super) overrides: Vec<String>,
}

/// `remote` as ssh's configuration resolves it (`ssh -G`).
pub(super) fn resolve(program: &Path, remote: &Remote) -> Result<Resolved, String> {
    let out = std::process::Command::new(program)
        .args(options(remote))
        .arg("-G")
        .arg("--")
        .arg(&remote.host)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "ssh cannot read its configuration for this host: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or("?")
            .to_string()
    };
    let address = format!("{}:{}", get("hostname"), get("port"));
    let mut overrides = vec!["-o".to_string(), "RequestTTY=no".to_string()];
    if get("remotecommand") != "?" {
        overrides.extend(["-o".into(), "RemoteCommand=none".into()]);
    }
    if get("forkafterauthentication") == "yes" {
        overrides.extend(["-o".into(), "ForkAfterAuthentication=no".into()]);
    }
    Ok(Resolved {
        login: format!("{}@{address}", get("user")),
        address,
        overrides,
    })
}

/// The options every `ssh` of `remote` gets: what the user set on the `Remote` (it
/// overrides the ssh configuration), strict host key checking, the timeout.
pub(super) fn options(remote: &Remote) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(file) = &remote.ssh_config {
        o.extend(["-F".into(), file.to_string_lossy().into_owned()]);
    }
    let mut opt = |s: String| o.extend(["-o".to_string(), s]);
    // An unknown or changed host key is an error, whatever the configuration says.
    opt("StrictHostKeyChecking=yes".into());
    if let Some(file) = &remote.known_hosts {
        opt(format!("UserKnownHostsFile={}", file.display()));
    }
    if let Some(port) = remote.port {
        opt(format!("Port={port}"));
    }
    if let Some(user) = &remote.user {
        opt(format!("User={user}"));
    }
    if let Some(key) = &remote.identity {
        opt(format!("IdentityFile={}", key.display()));
        opt("IdentitiesOnly=yes".into());
    }
    opt(format!(
        "ConnectTimeout={}",
        remote.timeout.as_secs().max(1)
    ));
    o
}

impl Inner {
    /// The options of a command through the master at `socket`: it must not prompt nor
    /// connect on its own when the master is gone.
    pub(super) fn client_options(&self, socket: &Path) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(file) = &self.remote.ssh_config {
            o.extend(["-F".into(), file.to_string_lossy().into_owned()]);
        }
        o.extend(["-S".into(), socket.to_string_lossy().into_owned()]);
        o.extend(self.overrides.iter().cloned());
        for opt in [
            "ControlMaster=no",
            "BatchMode=yes",
            "ProxyCommand=false",
            "ClearAllForwardings=yes",
            // Warnings of ssh's own would mix with the scheduler's messages.
            "LogLevel=ERROR",
        ] {
            o.extend(["-o".into(), opt.into()]);
        }
        o.push("-T".into());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_never_turn_host_key_checking_off_and_override_the_config() {
        let r = Remote::new("cluster", "/scratch/c")
            .port(2200)
            .user("me")
            .identity_file("/k")
            .known_hosts("/kh")
            .ssh_config("/cfg");
        let o = options(&r).join(" ");
        assert!(o.starts_with("-F /cfg "), "{o}");
        for want in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/kh",
            "Port=2200",
            "User=me",
            "IdentityFile=/k",
            "IdentitiesOnly=yes",
            "ConnectTimeout=60",
        ] {
            assert!(o.contains(&format!("-o {want}")), "{want} in {o}");
        }
        let bare = options(&Remote::new("cluster", "/c")).join(" ");
        assert!(!bare.contains("Port=") && !bare.contains("User="), "{bare}");
    }
}
