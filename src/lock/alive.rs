//! Whether another driver is alive: its driver file locked, or its lease touched lately (and,
//! on this host, its pid running).

use std::fs::File;
use std::io::{self, Read};
use std::time::Instant;

use super::os::{age, lock, pid_runs, unsupported};
use super::{Claims, LEASE, SEEN_ALIVE};
use crate::dir::Dir;

/// Reads a driver file in `drivers`: a regular file, not through a link; also returns the
/// open file (for its modification time).
fn read_driver(drivers: &Dir, name: &str) -> io::Result<(String, File)> {
    let file = drivers.open_regular(name)?;
    let mut text = String::new();
    (&file).take(4096).read_to_string(&mut text)?;
    Ok((text, file))
}

impl Claims {
    /// Whether the driver `id` is alive.
    pub(super) fn alive(&self, id: &str) -> io::Result<bool> {
        if id.contains('/') || id.starts_with('.') || id.is_empty() {
            return Ok(false);
        }
        let seen = self.seen_alive.lock().unwrap().get(id).copied();
        if seen.is_some_and(|at| at.elapsed() < SEEN_ALIVE) {
            return Ok(true);
        }
        let alive = self.ask_alive(id)?;
        let mut seen = self.seen_alive.lock().unwrap();
        if alive {
            seen.insert(id.to_string(), Instant::now());
        } else {
            seen.remove(id);
        }
        Ok(alive)
    }

    pub(super) fn ask_alive(&self, id: &str) -> io::Result<bool> {
        let drivers = &self.dirs.drivers;
        let (text, read) = match read_driver(drivers, id) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut words = text.split_whitespace();
        let (mode, host, pid) = (words.next(), words.next(), words.next());
        if mode == Some("ofd") {
            let file = match drivers.open_rw(id, false, 0) {
                Ok(file) => file,
                // Removed since it was read: by its driver, which ended, or by another claim
                // (of this driver or another) that found it dead, as below.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            return match lock(&file, false) {
                // Its driver died without removing it: nobody needs it any more.
                Ok(true) => {
                    let _ = drivers.unlink(id);
                    Ok(false)
                }
                Ok(false) => Ok(true),
                // This driver cannot take locks here where its owner could: trust the lease.
                Err(e) if unsupported(&e) => Ok(self.leased(&read, host, pid)),
                Err(e) => Err(e),
            };
        }
        // A driver file being written (no mode yet) counts as alive.
        Ok(mode.is_none() || self.leased(&read, host, pid))
    }

    /// Whether the lease of the driver whose file is `file` (open) holds.
    fn leased(&self, file: &File, host: Option<&str>, pid: Option<&str>) -> bool {
        if host == Some(crate::worker::hostname().as_str()) {
            if let Some(pid) = pid.and_then(|p| p.parse::<i32>().ok()) {
                if !pid_runs(pid) {
                    return false;
                }
            }
        }
        let touched = age(file);
        touched.is_some_and(|age| age < LEASE) || touched.is_none()
    }
}
