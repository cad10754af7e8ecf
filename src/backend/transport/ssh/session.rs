//! [`Ssh`], the built-in client's connection to the login node: opening it (the host key
//! checked against `known_hosts`, a key file or the agent to log in), opening it again when it
//! drops, and a scheduler command run over it.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ssh2::{CheckResult, KnownHostFileKind, Session};

use super::files::mkdirs;
use super::Remote;
use crate::backend::scheduler::CmdOutput;
use crate::backend::transport::{
    check_remote_cache, remote_output, trace_outcome, twin_path, TransportError,
};
use crate::error::Error;
use crate::scheduler::SchedulerError;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// An SSH connection to the login node, opened again when it drops.
pub(crate) struct Ssh {
    pub(super) remote: Remote,
    pub(super) user: String,
    pub(super) local_root: PathBuf,
    /// Whether downloaded files are fsynced (the store's setting).
    pub(super) durable: bool,
    /// What the local cache directory trusts (see `write_local`).
    pub(super) trust: crate::trust::Policy,
    pub(super) session: Mutex<Option<Session>>,
}

impl Ssh {
    /// Connects (so that a wrong host, key or directory fails when the executor is built),
    /// creates the cache directory's twin when `create`, and checks it by `trust`.
    pub(crate) fn connect(
        remote: Remote,
        local_root: &Path,
        durable: bool,
        trust: crate::trust::Policy,
        create: bool,
    ) -> Result<Ssh, Error> {
        let address = remote.address();
        let config = |m: String| Error::Config(format!("remote {address}: {m}"));
        remote.check().map_err(config)?;
        if let Some(file) = &remote.ssh_config {
            return Err(config(format!(
                "an ssh configuration file ({}) needs the system's ssh client, not the \
                 built-in one",
                file.display()
            )));
        }
        let user = match &remote.user {
            Some(u) => u.clone(),
            None => std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .map_err(|_| config("no user given and $USER is not set".into()))?,
        };
        let ssh = Ssh {
            remote,
            user,
            local_root: local_root.to_path_buf(),
            durable,
            trust,
            session: Mutex::new(None),
        };
        if create {
            ssh.with_session(|s| {
                let sftp = s
                    .sftp()
                    .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
                // The directories above the cache directory are not pitch's: the server's
                // umask.
                mkdirs(&sftp, &ssh.remote.directory, 0o777)
            })
            .map_err(|e| config(e.to_string()))?;
        }
        let dir = ssh.remote.directory.to_string_lossy().into_owned();
        let args = [
            "-c".to_string(),
            crate::trust::REMOTE_CHECK_SCRIPT.to_string(),
            "sh".to_string(),
            dir,
        ];
        let ran = ssh
            .exec("sh", &args, &[], "sh")
            .map(|o| (o.success, o.stdout, o.stderr))
            .map_err(|e| e.to_string());
        check_remote_cache(&ssh.remote.directory, trust, ran)?;
        Ok(ssh)
    }

    pub(in crate::backend::transport) fn open(&self) -> Result<Session, String> {
        let r = &self.remote;
        let port = r.port.unwrap_or(22);
        let addrs: Vec<_> = (r.host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", r.host))?
            .collect();
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, r.timeout) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = format!("cannot connect to {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let mut s = Session::new().map_err(|e| format!("cannot start SSH: {e}"))?;
        s.set_timeout(r.timeout.as_millis().min(u32::MAX as u128) as u32);
        s.set_tcp_stream(tcp);
        s.handshake()
            .map_err(|e| format!("SSH handshake failed: {e}"))?;
        self.check_host_key(&s)?;
        self.authenticate(&s)?;
        Ok(s)
    }

    fn check_host_key(&self, s: &Session) -> Result<(), String> {
        let r = &self.remote;
        let file = r
            .known_hosts
            .clone()
            .or_else(|| home().map(|h| h.join(".ssh/known_hosts")))
            .ok_or("no known_hosts file given and $HOME is not set")?;
        let (key, _) = s.host_key().ok_or("the server sent no host key")?;
        let mut known = s
            .known_hosts()
            .map_err(|e| format!("cannot read known hosts: {e}"))?;
        known
            .read_file(&file, KnownHostFileKind::OpenSSH)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let port = r.port.unwrap_or(22);
        match known.check_port(&r.host, port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::NotFound => Err(format!(
                "the host key of {} is not in {}: check its fingerprint with the site, then \
                 add it (`ssh-keyscan -p {} {} >> {}`)",
                r.host,
                file.display(),
                port,
                r.host,
                file.display()
            )),
            CheckResult::Mismatch => Err(format!(
                "the host key of {} does NOT match the one in {}: someone may be \
                 impersonating the host (or its key changed); refusing to connect",
                r.host,
                file.display()
            )),
            CheckResult::Failure => Err(format!(
                "could not check the host key of {} against {}",
                r.host,
                file.display()
            )),
        }
    }

    fn authenticate(&self, s: &Session) -> Result<(), String> {
        let user = &self.user;
        let mut tried = Vec::new();
        if let Some(key) = &self.remote.identity {
            return s
                .userauth_pubkey_file(user, None, key, None)
                .map_err(|e| format!("the key {} was refused for {user}: {e}", key.display()));
        }
        if std::env::var_os("SSH_AUTH_SOCK").is_some() {
            match s.userauth_agent(user) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("the SSH agent ({e})")),
            }
        }
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let Some(key) = home().map(|h| h.join(".ssh").join(name)) else {
                break;
            };
            if key.exists() {
                match s.userauth_pubkey_file(user, None, &key, None) {
                    Ok(()) => return Ok(()),
                    Err(e) => tried.push(format!("{} ({e})", key.display())),
                }
            }
        }
        Err(if tried.is_empty() {
            format!("no SSH key to log in as {user}: give one with Remote::identity_file, or run an SSH agent")
        } else {
            format!("could not log in as {user}; tried {}", tried.join(", "))
        })
    }

    /// Runs `f` with a live session; a failure that looks like a lost connection opens a new
    /// session and tries once more.
    pub(super) fn with_session<T>(
        &self,
        mut f: impl FnMut(&Session) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let mut guard = self.session.lock().unwrap();
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open().map_err(TransportError::Remote)?);
            }
            match f(guard.as_ref().unwrap()) {
                Ok(v) => return Ok(v),
                Err(TransportError::Remote(e)) if attempt == 0 && lost(&e) => *guard = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the second attempt returns")
    }

    pub(super) fn remote_path(&self, local: &Path) -> PathBuf {
        twin_path(&self.local_root, &self.remote.directory, local)
    }

    pub(super) fn exec(
        &self,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        title: &str,
    ) -> Result<CmdOutput, SchedulerError> {
        let line = self.remote.command_line(program, args, env);
        let started = std::time::Instant::now();
        let out = self.with_session(|s| {
            let mut ch = s
                .channel_session()
                .map_err(|e| on_login_node(format!("cannot open an SSH channel: {e}")))?;
            ch.exec(&line)
                .map_err(|e| on_login_node(format!("cannot run {program}: {e}")))?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            ch.read_to_end(&mut stdout)
                .map_err(|e| on_login_node(format!("reading {program}'s output: {e}")))?;
            ch.stderr()
                .read_to_end(&mut stderr)
                .map_err(|e| on_login_node(format!("reading {program}'s errors: {e}")))?;
            ch.wait_close()
                .map_err(|e| on_login_node(format!("waiting for {program}: {e}")))?;
            let code = ch.exit_status().map_err(|e| on_login_node(e.to_string()))?;
            Ok((code, stdout, stderr))
        });
        let host = Some(self.remote.host.as_str());
        trace_outcome(
            host,
            program,
            args,
            &out,
            |(code, ..)| (code, *code == 0),
            started,
        );
        let (code, stdout, stderr) = out.map_err(|e| SchedulerError::CannotRun {
            program: program.to_string(),
            detail: e.to_string(),
        })?;
        remote_output(
            &self.remote.host,
            program,
            title,
            Some(code),
            &stdout,
            &stderr,
        )
    }

    /// `user@host:port`.
    pub(super) fn login(&self) -> String {
        format!("{}@{}", self.user, self.remote.address())
    }
}

/// A failure of the login node's side.
pub(in crate::backend::transport) fn on_login_node(message: String) -> TransportError {
    TransportError::Remote(message)
}

/// Whether an error means the connection is gone (worth one new session).
fn lost(e: &str) -> bool {
    [
        "channel",
        "SFTP",
        "socket",
        "disconnect",
        "Broken pipe",
        "Timed out",
        "timed out",
    ]
    .iter()
    .any(|w| e.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_map_to_the_remote_twin_others_stay() {
        let ssh = Ssh {
            remote: Remote::new("h", "/scratch/me/cache"),
            user: "me".into(),
            local_root: PathBuf::from("/home/me/pitch-cache"),
            durable: false,
            trust: crate::trust::Policy::default(),
            session: Mutex::new(None),
        };
        assert_eq!(
            ssh.remote_path(Path::new("/home/me/pitch-cache/tasks/ab/k/task.bin")),
            Path::new("/scratch/me/cache/tasks/ab/k/task.bin")
        );
        assert_eq!(
            ssh.remote_path(Path::new("/data/input.csv")),
            Path::new("/data/input.csv")
        );
        assert_eq!(ssh.login(), "me@h:22");
        assert!(lost("cannot open an SSH channel: [-7] Unable to send"));
        assert!(!lost(
            "the key /k was refused for me: Username/PublicKey combination invalid"
        ));
    }
}
