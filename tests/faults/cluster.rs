//! Faults on the local cluster of `cluster-tests/start-slurm.sh`: its daemons found by their
//! pid files in `$PITCH_SLURM_DIR/run` and started as that script starts them; a tmpfs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ensure, wait_until};

pub(crate) struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
    pub nodes: u32,
}

/// Alive: exists and is not a zombie (as the cluster scripts check).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

fn kill(pid: i32, signal: i32) {
    unsafe { libc::kill(pid, signal) };
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Slurm {
    pub(crate) fn from_env() -> Result<Slurm, String> {
        let dir = PathBuf::from(std::env::var_os("PITCH_SLURM_DIR").ok_or("no PITCH_SLURM_DIR")?);
        let conf = std::env::var_os("SLURM_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("etc/slurm.conf"));
        let nodes = std::env::var("PITCH_SLURM_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(4);
        Ok(Slurm { dir, conf, nodes })
    }

    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("run").join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn controller_answers() -> bool {
        quiet(Command::new("scontrol").arg("ping")) && quiet(Command::new("squeue").arg("-h"))
    }

    /// Stops slurmctld with SIGTERM (it saves its state in StateSaveLocation).
    pub(crate) fn stop_controller(&self) -> Result<(), String> {
        let pid = self.pid("slurmctld").ok_or("no slurmctld pid file")?;
        ensure!(alive(pid), "slurmctld (pid {pid}) is not running");
        kill(pid, libc::SIGTERM);
        wait_until("slurmctld stops", Duration::from_secs(30), || !alive(pid))
    }

    /// Starts slurmctld again, keeping its saved state (no `-c`), and waits until it answers.
    pub(crate) fn start_controller(&self) -> Result<(), String> {
        ensure!(
            quiet(Command::new("slurmctld").arg("-f").arg(&self.conf)),
            "slurmctld did not start"
        );
        wait_until(
            "slurmctld answers after its restart",
            Duration::from_secs(60),
            Self::controller_answers,
        )
    }

    /// The unique job ids (`%A`) Slurm runs on `node`.
    pub(crate) fn jobs_on(&self, node: &str) -> Vec<String> {
        output(Command::new("squeue").args(["-h", "-t", "RUNNING", "-w", node, "-o", "%A"]))
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// A crash of `node`: its slurmd, the slurmstepd of each of its jobs and every process of
    /// those jobs die at once (SIGKILL), as when the machine loses power; then the node is
    /// marked down, as slurmctld does once SlurmdTimeout (300 s) passes without an answer
    /// (on this cluster the restarted slurmd alone would not make slurmctld notice the jobs
    /// are gone: they would stay RUNNING). Slurm ends the jobs NODE_FAIL and requeues those
    /// that may be. Returns the job ids that ran there.
    ///
    /// Only processes of this cluster are touched (their `SLURM_CONF` is this cluster's: a
    /// second test cluster may run on the same machine with the same node names).
    pub(crate) fn crash_node(&self, node: &str) -> Result<Vec<String>, String> {
        let jobs = self.jobs_on(node);
        let pid = self
            .pid(&format!("slurmd-{node}"))
            .ok_or_else(|| format!("no pid file of slurmd {node}"))?;
        kill(pid, libc::SIGKILL);
        wait_until("slurmd dies", Duration::from_secs(10), || !alive(pid))?;
        let ours = format!("SLURM_CONF={}", self.conf.display());
        let on_node = format!("SLURMD_NODENAME={node}");
        let me = std::process::id() as i32;
        for _ in 0..3 {
            for entry in std::fs::read_dir("/proc")
                .map_err(|e| e.to_string())?
                .flatten()
            {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
                let has = |v: &str| environ.split(|&b| b == 0).any(|e| e == v.as_bytes());
                if !has(&ours) {
                    continue;
                }
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                let stepd = cmdline.starts_with("slurmstepd")
                    && jobs.iter().any(|j| cmdline.contains(&format!("[{j}.")));
                if stepd || has(&on_node) {
                    kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.set_down(node, "crash (pitch fault-injection suite)")?;
        Ok(jobs)
    }

    /// Kills `node`'s slurmd alone (SIGKILL); its jobs run on.
    pub(crate) fn kill_slurmd(&self, node: &str) -> Result<(), String> {
        let pid = self
            .pid(&format!("slurmd-{node}"))
            .ok_or_else(|| format!("no pid file of slurmd {node}"))?;
        kill(pid, libc::SIGKILL);
        wait_until("slurmd dies", Duration::from_secs(10), || !alive(pid))
    }

    /// Starts `node`'s slurmd as start-slurm.sh does.
    pub(crate) fn start_slurmd(&self, node: &str) -> Result<(), String> {
        ensure!(
            quiet(
                Command::new("slurmd")
                    .arg("-f")
                    .arg(&self.conf)
                    .args(["-N", node])
            ),
            "slurmd {node} did not start"
        );
        Ok(())
    }

    /// Marks `node` down (what an administrator or a health check does with a dead node):
    /// Slurm ends its jobs with NODE_FAIL, and requeues those that may be.
    pub(crate) fn set_down(&self, node: &str, reason: &str) -> Result<(), String> {
        ensure!(
            quiet(Command::new("scontrol").args([
                "update",
                &format!("nodename={node}"),
                "state=down",
                &format!("reason={reason}"),
            ])),
            "scontrol update {node} state=down"
        );
        Ok(())
    }

    /// Waits (at most `bound`) until every node answers and can take work; a node left down
    /// is resumed.
    pub(crate) fn wait_healthy(&self, bound: Duration) -> Result<(), String> {
        let start = Instant::now();
        wait_until("slurmctld answers", bound, Self::controller_answers)?;
        let mut resumed = false;
        loop {
            let states: Vec<(String, String)> =
                output(Command::new("sinfo").args(["-h", "-N", "-o", "%N %t"]))
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(n, s)| (n.to_string(), s.trim().to_string()))
                    .collect();
            let bad: Vec<&(String, String)> = states
                .iter()
                .filter(|(_, s)| !["idle", "mix", "alloc", "comp"].contains(&s.as_str()))
                .collect();
            let names: std::collections::BTreeSet<&str> =
                states.iter().map(|(n, _)| n.as_str()).collect();
            if bad.is_empty() && names.len() as u32 >= self.nodes {
                return Ok(());
            }
            if !resumed && start.elapsed() > Duration::from_secs(5) {
                for (node, state) in &bad {
                    if state.starts_with("down") || state.starts_with("drain") {
                        quiet(Command::new("scontrol").args([
                            "update",
                            &format!("nodename={node}"),
                            "state=resume",
                        ]));
                    }
                }
                resumed = true;
            }
            ensure!(
                start.elapsed() < bound,
                "the cluster is not healthy after {bound:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// A tmpfs mounted for the length of a case (unmounted on drop).
pub(crate) struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created), mode 0700 (the cache's trust checks
    /// refuse a world-writable parent).
    pub(crate) fn mount(path: &Path, bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        ensure!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Free bytes.
    pub(crate) fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return 0;
        }
        s.f_bavail as u64 * s.f_frsize as u64
    }

    /// Fills the file system with `name` until not a byte is left.
    pub(crate) fn fill(&self, name: &str) -> Result<PathBuf, String> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let path = self.path.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let free = self.free();
        // The suite runs on Linux (a tmpfs, Slurm's daemons); elsewhere it only builds.
        #[cfg(target_os = "linux")]
        if free > 0 {
            // SAFETY: fallocate on an open descriptor.
            let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, free as libc::off_t) };
            ensure!(rc == 0, "fallocate: {}", std::io::Error::last_os_error());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = f.as_raw_fd();
        // Whatever fallocate left (partial blocks).
        let block = vec![1u8; 4096];
        let mut end = free;
        loop {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(end))
                .map_err(|e| e.to_string())?;
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(n) => end += n as u64,
            }
        }
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
