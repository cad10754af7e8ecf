//! The result log's tests: appends and lookups, catching up with another process, torn and
//! corrupt records, compaction, links among the logs.

use std::path::Path;
use std::time::Duration;

use super::folder::listed;
use super::record::{scan, HEADER_LEN};
use super::*;
use crate::error::TaskError;
use crate::store::{FormatError, ResultRecord};
use crate::task::TaskKey;

fn ok(v: u8) -> ResultRecord {
    ResultRecord {
        outcome: Ok(vec![vec![v]]),
    }
}

fn failed() -> ResultRecord {
    ResultRecord {
        outcome: Err(TaskError::Cancelled),
    }
}

/// Issue 11 (f): results another process logs after this one read the logs are found by
/// a catch-up that reads only what was appended (new files and grown ones).
#[test]
fn another_process_s_appends_are_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        TaskKey::from_bytes([1; 16]),
        TaskKey::from_bytes([2; 16]),
        TaskKey::from_bytes([3; 16]),
    );
    let other = LogSet::load(dir.path());
    other.append(a, "t::a", &ok(1), false).unwrap();
    let mine = LogSet::load(dir.path());
    assert!(!mine.stale(), "nothing new yet");
    mine.append(c, "t::c", &ok(3), false).unwrap();
    assert!(!mine.stale(), "its own appends are no news");
    // The other process appends to its file after this one read it.
    other.append(b, "t::b", &ok(2), false).unwrap();
    assert!(matches!(mine.lookup(&b), Err(FormatError::Missing)));
    assert!(mine.stale());
    mine.catch_up();
    assert!(!mine.stale());
    assert_eq!(mine.lookup(&b).unwrap(), ok(2));
    assert_eq!(mine.lookup(&a).unwrap(), ok(1));
    assert_eq!(mine.lookup(&c).unwrap(), ok(3));
    // A third process's new file.
    let third = LogSet::load(dir.path());
    let d = TaskKey::from_bytes([4; 16]);
    third.append(d, "t::d", &ok(4), false).unwrap();
    assert!(mine.stale());
    mine.catch_up();
    assert_eq!(mine.lookup(&d).unwrap(), ok(4));
    mine.append(d, "t::d", &failed(), false).unwrap();
    assert_eq!(
        mine.lookup(&d).unwrap(),
        ok(4),
        "a failure never hides a result"
    );
}

#[test]
fn appends_are_found_and_a_failure_never_hides_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let set = LogSet::load(dir.path());
    let (a, b) = (TaskKey::from_bytes([1; 16]), TaskKey::from_bytes([2; 16]));
    assert!(matches!(set.lookup(&a), Err(FormatError::Missing)));
    set.append(a, "t::a", &failed(), false).unwrap();
    set.append(a, "t::a", &ok(7), false).unwrap();
    set.append(a, "t::a", &failed(), true).unwrap();
    set.append(b, "t::b", &failed(), false).unwrap();
    assert_eq!(set.lookup(&a).unwrap(), ok(7));
    assert_eq!(set.lookup(&b).unwrap(), failed());
    // A fresh load (another process) sees the same.
    let again = LogSet::load(dir.path());
    assert_eq!(again.lookup(&a).unwrap(), ok(7));
    assert_eq!(again.lookup(&b).unwrap(), failed());
    assert!(again.take_damage().is_empty());
    let listed = logged_tasks(dir.path());
    assert_eq!(listed.len(), 2);
    assert_eq!(log_files(dir.path()).len(), 1, "one file per process");
}

/// Every record of every log of `root`, in order.
fn all_records(root: &Path) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let (dir, names) = listed(root).unwrap();
    for name in names {
        scan(&dir, &name, |_, _, r| out.push(r)).unwrap();
    }
    out
}

#[test]
fn compaction_resumed_after_a_crash_neither_loses_nor_duplicates() {
    use crate::store::{write_value, FileKind, Store};
    use crate::task::{TaskKind, TaskSpec};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Default::default()).unwrap();
    let root = store.root().to_path_buf();
    let keys: Vec<TaskKey> = (0..6u8).map(|i| TaskKey::from_bytes([i + 1; 16])).collect();
    for (i, key) in keys.iter().enumerate() {
        let paths = store.task(key);
        paths.create().unwrap();
        let spec = TaskSpec {
            key: *key,
            kind: TaskKind::Function {
                name: "m::f".into(),
                fingerprint: "fp".into(),
                args: vec![],
            },
            ranks: 1,
            threads: 1,
            env: vec![],
            cwd: None,
        };
        write_value(&paths.task_file(), FileKind::Task, &spec, false).unwrap();
        paths.publish_result(ok(i as u8));
    }
    // An earlier compaction crashed: it had logged the first three tasks, the last record
    // cut short, and removed no directory.
    let set = LogSet::of(&root);
    for (i, key) in keys.iter().take(3).enumerate() {
        set.append(*key, "m::f", &ok(i as u8), false).unwrap();
    }
    let file = log_files(&root).remove(0);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();
    let set = LogSet::refreshed(&root);
    assert!(
        !set.has_finished(&keys[2]),
        "the torn record is not a result"
    );
    // The next compaction finishes the work.
    let done = compact(&root, Duration::ZERO).unwrap();
    assert_eq!(done, Compacted { folded: 6, kept: 0 });
    assert!(store.task_keys().unwrap().is_empty());
    let records = all_records(&root);
    for (i, key) in keys.iter().enumerate() {
        let n = records.iter().filter(|r| r.key == *key).count();
        assert_eq!(n, 1, "task {i} has {n} records");
        assert_eq!(LogSet::refreshed(&root).lookup(key).unwrap(), ok(i as u8));
    }
    // Nothing left to do; running it again changes nothing.
    assert_eq!(
        compact(&root, Duration::ZERO).unwrap(),
        Compacted::default()
    );
    assert_eq!(all_records(&root).len(), records.len());
}

#[test]
fn a_torn_tail_loses_only_the_last_record_and_a_bad_checksum_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let set = LogSet::load(dir.path());
    let keys: Vec<TaskKey> = (0..4u8).map(|i| TaskKey::from_bytes([i; 16])).collect();
    for (i, k) in keys.iter().enumerate() {
        set.append(*k, "t::f", &ok(i as u8), false).unwrap();
    }
    let file = log_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    let record_len = bytes.len() / 4;
    // Flip a payload byte of record 1, cut record 3 short.
    bytes[record_len + HEADER_LEN + 2] ^= 0xff;
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&file, &bytes).unwrap();
    let again = LogSet::load(dir.path());
    assert_eq!(again.lookup(&keys[0]).unwrap(), ok(0));
    assert!(matches!(again.lookup(&keys[1]), Err(FormatError::Missing)));
    assert_eq!(again.lookup(&keys[2]).unwrap(), ok(2));
    assert!(matches!(again.lookup(&keys[3]), Err(FormatError::Missing)));
    let damage = again.take_damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert!(
        damage[0].contains("1 records fail their checksum"),
        "{damage:?}"
    );
    assert!(damage[0].contains("cut short"), "{damage:?}");
    assert!(again.take_damage().is_empty(), "reported once");
    // Damage found after loading (a record changed on disk) is an error, not a value.
    let set2 = LogSet::load(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[HEADER_LEN + 1] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(set2.lookup(&keys[0]), Err(FormatError::Checksum)));
}

/// Issue 14: the log folder, or a log, that is a link (or a FIFO) is refused with a
/// message naming it: nothing is read through it, nothing appended through it.
#[test]
fn links_among_the_logs_are_refused_and_named() {
    use crate::store::Store;
    let d = tempfile::tempdir().unwrap();
    let key = TaskKey::from_bytes([7; 16]);
    // Another cache directory's log, with a result.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    LogSet::load(&other)
        .append(key, "t::k", &ok(1), false)
        .unwrap();
    let other_logs = other.join("log");
    let other_log = log_files(&other).remove(0);
    let before = std::fs::read(&other_log).unwrap();
    let store = Store::open(&d.path().join("cache"), false, Default::default()).unwrap();
    let root = store.root().to_path_buf();
    // The log folder a link to the other one.
    std::os::unix::fs::symlink(&other_logs, store.log_dir()).unwrap();
    let set = LogSet::load(&root);
    assert!(matches!(set.lookup(&key), Err(FormatError::Missing)));
    assert!(!set.stale());
    set.catch_up();
    assert!(matches!(set.lookup(&key), Err(FormatError::Missing)));
    let named = format!("{} is a symbolic link", store.log_dir().display());
    let damage = set.take_damage();
    assert!(
        damage.len() == 1 && damage[0].contains(&named),
        "{damage:?}"
    );
    let e = set.append(key, "t::k", &ok(2), false).unwrap_err();
    assert!(e.contains(&named), "{e}");
    assert!(logged_tasks(&root).is_empty() && records_of(&root, &key).is_empty());
    // A log that is a link to the other log, and a FIFO in a log's place.
    std::fs::remove_file(store.log_dir()).unwrap();
    std::fs::create_dir(store.log_dir()).unwrap();
    let linked = store.log_file("00000000000000000001-1.plog");
    std::os::unix::fs::symlink(&other_log, &linked).unwrap();
    let fifo = store.log_file("00000000000000000002-1.plog");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let set = LogSet::load(&root);
    assert!(matches!(set.lookup(&key), Err(FormatError::Missing)));
    let damage = set.take_damage();
    assert_eq!(damage.len(), 2, "{damage:?}");
    assert!(
        damage[0].contains(&format!("{} is a symbolic link", linked.display())),
        "{damage:?}"
    );
    assert!(
        damage[1].contains(&format!("{} is not a regular file", fifo.display())),
        "{damage:?}"
    );
    // Appends go to a file of its own, never through the link.
    set.append(key, "t::k", &ok(3), false).unwrap();
    assert_eq!(set.lookup(&key).unwrap(), ok(3));
    assert_eq!(records_of(&root, &key), vec![ok(3)]);
    assert_eq!(std::fs::read(&other_log).unwrap(), before);
    assert_eq!(std::fs::read_dir(&other_logs).unwrap().count(), 1);
}
