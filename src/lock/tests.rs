//! The claims' tests: one driver at a time per task, a dead driver's claims taken over,
//! byte-range claims, leases, links in the locks folder.

use std::fs::{self, File};
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[cfg(target_os = "linux")]
use super::os::range;
#[cfg(target_os = "linux")]
use super::ranges::range_offset;
use super::*;
use crate::store::Store;
use crate::task::TaskKey;
use crate::trust::Policy;

fn store(dir: &Path) -> Store {
    Store::open(dir, false, Policy::default()).unwrap()
}

fn claims_of_two(dir: &Path) -> (Claims, Claims) {
    let s = store(dir);
    (Claims::open(&s).unwrap(), Claims::open(&s).unwrap())
}

fn one_claim_each_way(a: Claims, b: Claims) {
    let key = TaskKey::explicit("k");
    let mine = |took_over: Option<String>, after_other| Claim::Mine {
        took_over,
        after_other,
    };
    assert_eq!(a.try_claim(&key).unwrap(), mine(None, false));
    assert!(matches!(b.try_claim(&key).unwrap(), Claim::Busy { owner } if owner == a.id()));
    assert_eq!(a.try_claim(&key).unwrap(), mine(None, false));
    a.release(&key);
    // Released by a live driver: b knows another driver had it (where the claims say so).
    let ofd = a.mode == Mode::Ofd && cfg!(target_os = "linux");
    assert_eq!(b.try_claim(&key).unwrap(), mine(None, ofd));
    // b dies holding it: the next driver takes it over.
    let b_id = b.id().to_string();
    drop(b);
    // Another test's thread may be spawning a process right now: until that child's exec
    // closes its copy of b's descriptors it holds b's open file description, and so b's
    // OFD locks (seen once in ~90 runs of the whole suite). A real driver that dies has
    // no such window left; wait for it to close here.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let claim = loop {
        match a.try_claim(&key).unwrap() {
            Claim::Busy { owner } if owner == b_id && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            claim => break claim,
        }
    };
    assert_eq!(claim, mine(Some(b_id), true));
}

#[test]
fn a_claim_is_one_drivers_until_released_or_its_driver_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = claims_of_two(dir.path());
    assert_eq!(a.mode, Mode::Ofd, "tmpfs/ext4 have locks");
    one_claim_each_way(a, b);
}

#[test]
#[cfg(target_os = "linux")]
fn a_dead_drivers_lock_is_free_even_with_its_file_left() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = claims_of_two(dir.path());
    let key = TaskKey::explicit("k");
    assert!(matches!(b.try_claim(&key).unwrap(), Claim::Mine { .. }));
    // Its process died (the lock went with it) but the file stayed (no Drop ran).
    let path = b.dirs.drivers.join(b.id());
    let b_id = b.id().to_string();
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_UNLCK as _;
    // SAFETY: fcntl on an open descriptor with a valid flock struct.
    assert_eq!(
        unsafe { libc::fcntl(b._file.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
        0
    );
    // (its claims, byte-range locks of its open files, went too)
    if let Some(r) = &b.ranges {
        assert!(range(&r.file, libc::F_UNLCK, range_offset(&key), false).unwrap());
    }
    std::mem::forget(b);
    assert!(path.exists());
    assert!(!a.alive(&b_id).unwrap());
    assert!(!path.exists(), "a dead driver's file is removed");
    assert!(
        matches!(a.try_claim(&key).unwrap(), Claim::Mine { took_over: Some(id), .. } if id == b_id)
    );
}

/// Claims of one driver on several threads all find the same dead driver: the first to
/// lock its file removes it, and the others' look at it must not fail then.
#[test]
#[cfg(target_os = "linux")]
fn claims_racing_to_a_dead_drivers_file_all_succeed() {
    for round in 0..100 {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = claims_of_two(dir.path());
        let keys: Vec<TaskKey> = (0..8)
            .map(|i| TaskKey::explicit(&format!("{round}-{i}")))
            .collect();
        for k in &keys {
            assert!(matches!(b.try_claim(k).unwrap(), Claim::Mine { .. }));
        }
        // b dies: its locks go, its files stay.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_UNLCK as _;
        // SAFETY: fcntl on an open descriptor with a valid flock struct.
        unsafe { libc::fcntl(b._file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if let Some(r) = &b.ranges {
            for k in &keys {
                range(&r.file, libc::F_UNLCK, range_offset(k), false).unwrap();
            }
        }
        std::mem::forget(b);
        let a = &a;
        std::thread::scope(|scope| {
            let claims: Vec<_> = keys
                .iter()
                .map(|k| scope.spawn(move || a.try_claim(k)))
                .collect();
            for c in claims {
                let c = c.join().unwrap();
                assert!(matches!(c, Ok(Claim::Mine { .. })), "round {round}: {c:?}");
            }
        });
    }
}

#[test]
#[cfg(target_os = "linux")]
fn range_claims_leave_no_file_per_task_and_keys_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = claims_of_two(dir.path());
    let keys: Vec<TaskKey> = (0..500)
        .map(|i| TaskKey::explicit(&i.to_string()))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let (mine, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(
            mine.try_claim(k).unwrap(),
            Claim::Mine {
                took_over: None,
                after_other: false
            }
        );
        assert!(matches!(other.try_claim(k).unwrap(), Claim::Busy { .. }));
        assert!(other.busy(k).is_some() && mine.busy(k).is_none());
    }
    // Two claims logs, nothing per task.
    let files = fs::read_dir(dir.path().join("locks/claims"))
        .unwrap()
        .count();
    assert_eq!(files, 2);
    for k in &keys {
        a.release(k);
        b.release(k);
    }
    assert!(keys
        .iter()
        .all(|k| a.busy(k).is_none() && b.busy(k).is_none()));
    // A task another driver released is not taken over from it, even once that driver
    // is gone (its log says released).
    let b_id = b.id().to_string();
    drop(b);
    assert_eq!(
        a.try_claim(&keys[1]).unwrap(),
        Claim::Mine {
            took_over: None,
            after_other: true
        },
        "released by {b_id}"
    );
    a.release(&keys[1]);
    // Drivers that end holding nothing leave no log.
    drop(a);
    let files = fs::read_dir(dir.path().join("locks/claims"))
        .unwrap()
        .count();
    assert_eq!(files, 0);
}

#[test]
fn leases_are_used_where_locks_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mk = || {
        let mut c = Claims::open(&s).unwrap();
        c.mode = Mode::Lease;
        #[cfg(target_os = "linux")]
        {
            c.ranges = None;
        }
        let path = c.dirs.drivers.join(c.id());
        fs::write(
            &path,
            format!(
                "lease {} {}\n",
                crate::worker::hostname(),
                std::process::id()
            ),
        )
        .unwrap();
        c
    };
    let (a, b) = (mk(), mk());
    one_claim_each_way(a, b);
    // A driver of another host whose lease ran out is dead; one touched lately is alive.
    let a = mk();
    let other = a.dirs.drivers.join("elsewhere-1-1");
    fs::write(&other, "lease elsewhere 1\n").unwrap();
    assert!(a.alive("elsewhere-1-1").unwrap());
    File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .set_modified(SystemTime::now() - LEASE - Duration::from_secs(1))
        .unwrap();
    // (a driver found alive is believed for a second)
    assert!(a.alive("elsewhere-1-1").unwrap());
    a.seen_alive.lock().unwrap().clear();
    assert!(!a.alive("elsewhere-1-1").unwrap());
    // A driver of this host whose pid is gone is dead at once.
    fs::write(
        &other,
        format!("lease {} {}\n", crate::worker::hostname(), i32::MAX),
    )
    .unwrap();
    assert!(!a.alive("elsewhere-1-1").unwrap());
}

/// Issue 14: a link planted in `locks/` where pitch keeps a file of its own is refused
/// with an error naming it, and what it points to is neither read nor written.
#[test]
fn links_in_the_locks_folder_are_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let locks = s.root().join("locks");
    let outside = dir.path().join("outside");
    fs::write(&outside, "lease elsewhere 1\n").unwrap();
    let link = |at: &Path| {
        let _ = fs::remove_file(at);
        std::os::unix::fs::symlink(&outside, at).unwrap();
    };
    let refused = |e: io::Error, at: &Path| {
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{} is a symbolic link", at.display())),
            "{msg}"
        );
    };
    let key = TaskKey::explicit("k");
    fs::write(&outside, format!("{key}\n")).unwrap();
    #[cfg(target_os = "linux")]
    {
        // The byte-range claims file.
        let range = locks.join("claims.range");
        drop(Claims::open(&s).unwrap());
        link(&range);
        refused(Claims::open(&s).err().expect("refused"), &range);
        fs::remove_file(&range).unwrap();
        // Another driver's claims log, naming a key it claimed.
        let a = Claims::open(&s).unwrap();
        let log = locks.join("claims").join("ghost-1-1");
        link(&log);
        refused(a.try_claim(&key).unwrap_err(), &log);
        fs::remove_file(&log).unwrap();
        a.release(&key);
    }
    let a = Claims::open(&s).unwrap();
    // A driver file.
    let driver = locks.join("drivers").join("ghost-1-1");
    link(&driver);
    refused(a.alive("ghost-1-1").unwrap_err(), &driver);
    fs::remove_file(&driver).unwrap();
    // Leases: a task's claim file, and the claims lock.
    let mut b = Claims::open(&s).unwrap();
    b.mode = Mode::Lease;
    #[cfg(target_os = "linux")]
    {
        b.ranges = None;
    }
    let claim = locks.join("claims").join(key.to_string());
    link(&claim);
    refused(b.try_claim(&key).unwrap_err(), &claim);
    assert!(b.busy(&key).is_none());
    b.release(&key);
    assert!(
        claim.symlink_metadata().is_ok(),
        "the link is left, not followed"
    );
    fs::remove_file(&claim).unwrap();
    let held = locks.join("claims.held");
    link(&held);
    refused(b.try_claim(&key).unwrap_err(), &held);
    fs::remove_file(&held).unwrap();
    assert!(matches!(b.try_claim(&key).unwrap(), Claim::Mine { .. }));
    // Nothing was written through a link.
    assert_eq!(fs::read_to_string(&outside).unwrap(), format!("{key}\n"));
    // A folder: `locks/claims` a link to a folder outside.
    drop((a, b));
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::remove_dir_all(locks.join("claims")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, locks.join("claims")).unwrap();
    refused(
        Claims::open(&s).err().expect("refused"),
        &locks.join("claims"),
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}
