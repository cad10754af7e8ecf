//! Commands on the login node through the master: a command line (run again once over a new
//! master when the old one died), a POSIX sh script with its arguments whatever the login
//! shell, and the relay's long-running `ssh`.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use super::client::Inner;
use crate::backend::transport::relay;
use crate::template::shell_quote;

impl Inner {
    /// Runs `line` on the login node through the master, `stdin` its input; a master found
    /// dead is opened again and the line run once more.
    pub(super) async fn ssh(
        self: &Arc<Self>,
        line: &str,
        stdin: Option<(&std::fs::File, &Path)>,
    ) -> Result<std::process::Output, String> {
        let mut dead = None;
        for attempt in 0..2 {
            let socket = self.socket(dead.as_deref()).await?;
            let input = match stdin {
                // From its start (a second attempt reads it again).
                Some((file, p)) => Stdio::from(
                    std::io::Seek::seek(&mut &*file, std::io::SeekFrom::Start(0))
                        .and_then(|_| file.try_clone())
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
                ),
                None => Stdio::null(),
            };
            let out = tokio::process::Command::new(&self.program)
                .args(self.client_options(&socket))
                .arg("--")
                .arg(&self.remote.host)
                .arg(line)
                .stdin(input)
                // Ctrl-C at the terminal is for pitch, which decides what to cancel.
                .process_group(0)
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
            // 255: ssh's own failure (or the remote command's status, when the master lives).
            if out.status.code() == Some(255) && attempt == 0 {
                let me = self.clone();
                let s = socket.clone();
                let alive = tokio::task::spawn_blocking(move || me.check(&s))
                    .await
                    .unwrap_or(false);
                if !alive {
                    dead = Some(socket);
                    continue;
                }
            }
            return Ok(out);
        }
        unreachable!("the second attempt returns")
    }

    /// Runs the POSIX sh `script` with `args` ($1...) on the login node.
    pub(super) async fn script(
        self: &Arc<Self>,
        script: &str,
        args: &[&str],
        stdin: Option<(&std::fs::File, &Path)>,
    ) -> Result<std::process::Output, String> {
        self.ssh(&script_line(script, args), stdin).await
    }

    /// [`Inner::script`] from code that is not async (building the executor).
    pub(super) fn blocking_script(
        self: &Arc<Self>,
        script: &str,
        args: &[&str],
    ) -> Result<std::process::Output, String> {
        let line = script_line(script, args);
        let socket = self
            .master
            .try_lock()
            .ok()
            .and_then(|m| m.as_ref().map(|m| m.socket.clone()))
            .ok_or("no SSH connection")?;
        use std::os::unix::process::CommandExt;
        std::process::Command::new(&self.program)
            .process_group(0)
            .args(self.client_options(&socket))
            .arg("--")
            .arg(&self.remote.host)
            .arg(line)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))
    }

    /// Runs the relay `line` through the master at `socket`: a child `ssh` whose standard
    /// input and output carry the relay's frames. Ending it (the executor closes) closes the
    /// session, and so the relay's input; so does the death of this process (the child's
    /// input closes) or of the master.
    pub(super) fn relay(
        &self,
        socket: &Path,
        line: &str,
        to: std::net::SocketAddr,
    ) -> Result<relay::Relay, String> {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(&self.program)
            .process_group(0)
            .args(self.client_options(socket))
            .arg("--")
            .arg(&self.remote.host)
            .arg(line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let (Some(input), Some(output), Some(mut err)) =
            (child.stdout.take(), child.stdin.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("ssh gave no pipes".into());
        };
        let errors = Arc::new(std::sync::Mutex::new(String::new()));
        let e = errors.clone();
        let said = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                let mut e = e.lock().unwrap();
                if e.len() < 64 * 1024 {
                    e.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        relay::Relay::start(
            Box::new(input),
            Box::new(output),
            to,
            Box::new(move || {
                let _ = child.kill();
                let _ = child.wait();
                // All it said, for the message of a relay that did not start.
                let _ = said.join();
            }),
            errors,
        )
    }
}

/// The line that runs the POSIX sh `script` with `args` whatever the user's login shell.
fn script_line(script: &str, args: &[&str]) -> String {
    let mut line = format!("exec sh -c {} sh", shell_quote(script));
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
    fn scripts_get_their_arguments_whatever_they_hold() {
        let line = script_line(r#"printf '%s|' "$@""#, &["a b", "it's", "$HOME", "*"]);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|it's|$HOME|*|");
    }
}
