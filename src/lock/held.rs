//! The claims lock of a cache directory (`locks/claims.lock`, or `locks/claims.held` with
//! leases), held while a claim is read and written.

use std::fs::File;
use std::io::{self, Write};
use std::time::Duration;

use super::os::{age, lock, now_secs};
use super::{Claims, Mode, LEASE};
use crate::dir::Dir;

/// The file held while a claim is read and written (in `locks/`).
const CLAIMS_LOCK: &str = "claims.lock";
/// `claims.lock` of leases: a file created with `O_EXCL` (in `locks/`).
const CLAIMS_HELD: &str = "claims.held";

impl Claims {
    /// Holds the cache directory's claims lock until the value is dropped.
    pub(super) fn hold(&self) -> io::Result<Held<'_>> {
        let locks = &self.dirs.locks;
        if self.mode == Mode::Ofd {
            let file = locks.open_rw(CLAIMS_LOCK, true, 0o600)?;
            lock(&file, true)?;
            return Ok(Held::Ofd(file));
        }
        loop {
            match locks.create_new(CLAIMS_HELD, 0o600) {
                Ok(mut f) => {
                    let _ = writeln!(
                        f,
                        "{} {} {}",
                        crate::worker::hostname(),
                        std::process::id(),
                        now_secs()
                    );
                    return Ok(Held::Excl(locks));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Held for a few milliseconds at most: one older than the lease was left
                    // by a driver that died holding it. (A link there is never followed: it
                    // is not a regular file, so it is never stale, and the error names it.)
                    let stale = match locks.open_regular(CLAIMS_HELD) {
                        Ok(f) => age(&f).is_some_and(|age| age > LEASE),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                        Err(e) => return Err(e),
                    };
                    if stale {
                        let _ = locks.unlink(CLAIMS_HELD);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

pub(super) enum Held<'a> {
    Ofd(#[allow(dead_code)] File),
    /// `claims.held`, in this folder.
    Excl(&'a Dir),
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Held::Excl(locks) = self {
            let _ = locks.unlink(CLAIMS_HELD);
        }
    }
}
