//! Tests of the store: file format, atomic writes, the task directory and the jobs directory.

use super::*;
use std::fs::File;

#[test]
fn a_file_over_the_size_limit_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.bin");
    // Sparse: no disk space is used.
    let f = File::create(&path).unwrap();
    f.set_len((codec::DECODE_LIMIT + HEADER_LEN + 1) as u64)
        .unwrap();
    assert!(matches!(
        read_checked(&path, FileKind::Result),
        Err(FormatError::TooLarge)
    ));
}

#[test]
fn header_round_trip_and_every_corruption_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.bin");
    let rec = ResultRecord {
        outcome: Ok(vec![vec![1, 2, 3]]),
    };
    write_value(&path, FileKind::Result, &rec, true).unwrap();
    let back: ResultRecord = read_value(&path, FileKind::Result).unwrap();
    assert_eq!(back, rec);

    // Read as the wrong kind.
    let err = read_value::<ResultRecord>(&path, FileKind::Task).unwrap_err();
    assert!(
        err.to_string().contains("result file where a task file"),
        "{err}"
    );

    let good = fs::read(&path).unwrap();
    // Truncated.
    fs::write(&path, &good[..good.len() - 1]).unwrap();
    let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    fs::write(&path, &good[..10]).unwrap();
    let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // Flipped payload byte.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    fs::write(&path, &bad).unwrap();
    let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // Another format version.
    let mut other = good.clone();
    other[4] = 99;
    fs::write(&path, &other).unwrap();
    let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
    assert!(err.to_string().contains("format version 99"), "{err}");
    // Not ours at all.
    fs::write(&path, b"#!/bin/sh\necho hello world, this is long enough\n").unwrap();
    let err = read_value::<ResultRecord>(&path, FileKind::Result).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    // Missing.
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        read_value::<ResultRecord>(&path, FileKind::Result),
        Err(FormatError::Missing)
    ));
}

#[test]
fn a_failure_never_replaces_a_finished_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Policy::default()).unwrap();
    let paths = store.task(&TaskKey::from_bytes([7; 16]));
    paths.create().unwrap();
    let ok = ResultRecord {
        outcome: Ok(vec![vec![42]]),
    };
    paths.publish_result(ok.clone());
    let kept = paths.publish_result(ResultRecord {
        outcome: Err(TaskError::Cancelled),
    });
    assert_eq!(kept, ok);
    assert_eq!(paths.read_result().unwrap(), ok);
}

#[test]
fn the_scheduler_marker_is_typed_and_old_markers_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Policy::default()).unwrap();
    assert_eq!(store.scheduler_marker(), None);
    store.create_jobs_dir().unwrap();
    // The two-line marker of older versions.
    fs::write(store.marker_file(), "flux\nme@login:22").unwrap();
    let old = store.scheduler_marker().unwrap();
    assert_eq!(
        (old.format, old.scheduler, old.login.as_deref()),
        (0, SchedulerKind::Flux, Some("me@login:22"))
    );
    fs::write(store.marker_file(), "slurm\n").unwrap();
    assert_eq!(store.scheduler_marker().unwrap().login, None);
    // Rewritten in the current format, which reads back.
    store
        .set_scheduler_marker(SchedulerKind::Flux, Some("me@login:22".into()))
        .unwrap();
    let text = fs::read_to_string(store.marker_file()).unwrap();
    assert!(text.contains("\"format\":1"), "{text}");
    let new = store.scheduler_marker().unwrap();
    assert_eq!(
        (new.format, new.scheduler, new.login.as_deref()),
        (MARKER_FORMAT, SchedulerKind::Flux, Some("me@login:22"))
    );
}

#[test]
fn atomic_writes_set_the_mode_and_leave_no_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    write_bytes_atomic(&path, b"#!/bin/sh\n", true, 0o700).unwrap();
    write_bytes_atomic(&path, b"#!/bin/sh\ntrue\n", true, 0o700).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"#!/bin/sh\ntrue\n");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn directories_are_private_and_sharded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cache"), false, Policy::default()).unwrap();
    let key = TaskKey::from_bytes([0xab; 16]);
    let paths = store.task(&key);
    paths.create().unwrap();
    assert!(paths.dir().parent().unwrap().ends_with("tasks/ab"));
    for p in [store.root().to_path_buf(), paths.dir().to_path_buf()] {
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", p.display());
    }
}

#[test]
fn gather_names_the_failing_rank() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Policy::default()).unwrap();
    let paths = store.task(&TaskKey::from_bytes([1; 16]));
    paths.create().unwrap();
    let rank = |r: u32, outcome| paths.write_rank(&RankRecord { rank: r, outcome }).unwrap();
    rank(0, Ok(vec![0]));
    rank(
        2,
        Err(TaskError::Panicked {
            message: "boom".into(),
            location: None,
        }),
    );
    // rank 1 and 3 left no file (stopped after rank 2 failed)
    let rec = paths.gather_ranks(4);
    match rec.outcome {
        Err(TaskError::Rank { rank, size, cause }) => {
            assert_eq!((rank, size), (2, 4));
            assert!(matches!(*cause, TaskError::Panicked { .. }));
        }
        other => panic!("{other:?}"),
    }
    assert!(!paths.rank_file(0).exists());
}

#[test]
fn files_behind_a_planted_link_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cache"), false, Policy::default()).unwrap();
    let paths = store.task(&TaskKey::from_bytes([0xcd; 16]));
    paths.create().unwrap();
    let rec = ResultRecord {
        outcome: Ok(vec![vec![1]]),
    };
    paths.publish_result(rec.clone());
    write_value(&paths.task_file(), FileKind::Task, &7u32, false).unwrap();
    assert_eq!(paths.read_result().unwrap(), rec);
    assert_eq!(paths.read_task::<u32>().unwrap(), 7);
    // The task directory moved elsewhere, a link left in its place.
    let elsewhere = dir.path().join("elsewhere");
    fs::rename(paths.dir(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, paths.dir()).unwrap();
    for err in [
        paths.read_result().unwrap_err().to_string(),
        paths.read_task::<u32>().unwrap_err().to_string(),
    ] {
        assert!(err.contains("symbolic link"), "{err}");
    }
    let err = paths.create().unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn planted_links_for_jobs_and_bin_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let store = Store::open(&root, false, Policy::default()).unwrap();
    // Planted after the store was opened: refused when pitch creates the jobs directory.
    std::os::unix::fs::symlink(&elsewhere, root.join("jobs")).unwrap();
    let err = store.create_jobs_dir().unwrap_err();
    assert!(
        matches!(&err, Error::Untrusted { path, .. } if path.ends_with("jobs")),
        "{err}"
    );
    // Planted before: refused when the store is opened.
    fs::remove_file(root.join("jobs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("bin")).unwrap();
    let err = Store::open(&root, false, Policy::default()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(
        fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing written through a link"
    );
}

#[test]
fn a_file_replaced_by_a_link_or_a_fifo_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cache"), false, Policy::default()).unwrap();
    let paths = store.task(&TaskKey::from_bytes([0xef; 16]));
    paths.create().unwrap();
    // Another file of the cache directory, a valid result, linked in as this task's result.
    let other = dir.path().join("other.bin");
    let rec = ResultRecord {
        outcome: Ok(vec![vec![9]]),
    };
    write_value(&other, FileKind::Result, &rec, false).unwrap();
    std::os::unix::fs::symlink(&other, paths.result_file()).unwrap();
    let err = paths.read_result().unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    fs::remove_file(paths.result_file()).unwrap();
    // A FIFO would block a plain open until someone writes to it.
    let fifo = std::ffi::CString::new(paths.result_file().to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let err = paths.read_result().unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_result_or_rank_file_of_another_task_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Policy::default()).unwrap();
    let (a, b) = (
        store.task(&TaskKey::from_bytes([0xa; 16])),
        store.task(&TaskKey::from_bytes([0xb; 16])),
    );
    a.create().unwrap();
    b.create().unwrap();
    let rec = ResultRecord {
        outcome: Ok(vec![vec![7]]),
    };
    assert_eq!(a.publish_result(rec.clone()), rec);
    assert_eq!(a.read_result().unwrap(), rec);
    fs::copy(a.result_file(), b.result_file()).unwrap();
    let err = b.read_result().unwrap_err();
    assert!(
        matches!(&err, FormatError::Foreign { found, .. } if *found == TaskKey::from_bytes([0xa; 16]).to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("foreign"), "{err}");
    // A rank file copied over is not gathered as this task's either.
    a.write_rank(&RankRecord {
        rank: 0,
        outcome: Ok(vec![1]),
    })
    .unwrap();
    fs::copy(a.rank_file(0), b.rank_file(0)).unwrap();
    match b.gather_ranks(1).outcome {
        Err(TaskError::Rank { cause, .. }) => {
            assert!(cause.to_string().contains("foreign"), "{cause}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_checkpoint_is_bound_to_its_task_and_goes_once_the_task_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Policy::default()).unwrap();
    let (a, b) = (
        store.task(&TaskKey::from_bytes([0xa; 16])),
        store.task(&TaskKey::from_bytes([0xb; 16])),
    );
    // None yet; the task directory is created when it is written (pooled tasks have none).
    assert_eq!(a.read_checkpoint().unwrap(), None);
    let rec = CheckpointRecord {
        type_name: "u64".into(),
        state: vec![1, 2, 3],
    };
    a.write_checkpoint(&rec).unwrap();
    assert_eq!(a.read_checkpoint().unwrap(), Some(rec.clone()));
    // Not a result, and never read as one.
    assert!(matches!(
        read_value::<ResultRecord>(&a.checkpoint_file(), FileKind::Result),
        Err(FormatError::Kind { .. })
    ));
    // Copied into another task's directory: refused as foreign, naming the kind.
    b.create().unwrap();
    fs::copy(a.checkpoint_file(), b.checkpoint_file()).unwrap();
    match b.read_checkpoint() {
        Err(TaskError::Store { detail, .. }) => {
            assert!(
                detail.contains("checkpoint file of task") && detail.contains("foreign"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Corrupted: refused.
    let mut bytes = fs::read(a.checkpoint_file()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(b.checkpoint_file(), &bytes).unwrap();
    assert!(b.read_checkpoint().is_err());
    // A failure leaves it; a finished result removes it.
    a.publish_result(ResultRecord {
        outcome: Err(TaskError::Checkpointed {
            detail: "saved".into(),
        }),
    });
    assert!(a.checkpoint_file().exists());
    a.publish_result(ResultRecord {
        outcome: Ok(vec![vec![1]]),
    });
    assert!(!a.checkpoint_file().exists());
    assert_eq!(a.read_checkpoint().unwrap(), None);
}

#[test]
fn ranks_that_checkpointed_make_a_checkpointed_task_unless_one_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false, Policy::default()).unwrap();
    let t = store.task(&TaskKey::from_bytes([0xc; 16]));
    t.create().unwrap();
    let checkpointed = || TaskError::Checkpointed {
        detail: "saved".into(),
    };
    let gather = |outcomes: Vec<Option<Result<Vec<u8>, TaskError>>>| {
        let _ = fs::remove_file(t.result_file());
        let size = outcomes.len() as u32;
        for (rank, outcome) in outcomes.into_iter().enumerate() {
            if let Some(outcome) = outcome {
                t.write_rank(&RankRecord {
                    rank: rank as u32,
                    outcome,
                })
                .unwrap();
            }
        }
        t.gather_ranks(size).outcome
    };
    // Every rank, or rank 0 with the others done or gone: the task checkpointed (unwrapped,
    // so that the engine sees it).
    assert_eq!(
        gather(vec![Some(Err(checkpointed())), Some(Err(checkpointed()))]),
        Err(checkpointed())
    );
    assert_eq!(
        gather(vec![Some(Err(checkpointed())), None, Some(Ok(vec![1]))]),
        Err(checkpointed())
    );
    // A rank that really failed names the failure.
    let failed = TaskError::Failed {
        chain: vec!["boom".into()],
    };
    assert_eq!(
        gather(vec![Some(Err(checkpointed())), Some(Err(failed.clone()))]),
        Err(TaskError::Rank {
            rank: 1,
            size: 2,
            cause: Box::new(failed)
        })
    );
}

#[test]
fn a_task_directory_swapped_after_it_was_opened_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cache"), false, Policy::default()).unwrap();
    let key = TaskKey::from_bytes([0xce; 16]);
    let paths = store.task(&key);
    paths.create().unwrap();
    paths.write_task(&7u32).unwrap();
    // Opened and checked; then the directory is swapped for a link to another one (as a
    // race between the check and the use would): what is written and read through the
    // handle stays in the directory that was checked.
    let handle = paths.open_dir().unwrap();
    let moved = dir.path().join("moved");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::rename(paths.dir(), &moved).unwrap();
    std::os::unix::fs::symlink(&elsewhere, paths.dir()).unwrap();
    let rec = ResultRecord {
        outcome: Ok(vec![vec![1]]),
    };
    write_value_bound_in(&handle, RESULT_FILE, FileKind::Result, &key, &rec, true).unwrap();
    assert!(moved.join(RESULT_FILE).is_file());
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written there"
    );
    let back: ResultRecord =
        read_value_bound_in(&handle, RESULT_FILE, FileKind::Result, &key).unwrap();
    assert_eq!(back, rec);
    handle.unlink(RESULT_FILE).unwrap();
    assert!(!moved.join(RESULT_FILE).exists());
    // Opened afresh, the link is refused, naming it.
    let err = paths.read_result().unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    let err = paths.write_task(&8u32).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    // A task directory others may write is refused through its handle (fstat) too.
    fs::remove_file(paths.dir()).unwrap();
    fs::rename(&moved, paths.dir()).unwrap();
    assert_eq!(paths.read_task::<u32>().unwrap(), 7);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(paths.dir(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = paths.read_task::<u32>().unwrap_err().to_string();
    assert!(err.contains("writable by every user"), "{err}");
}

/// `dir` holds nothing (links planted in the cache pointed there: nothing went through them).
fn untouched(dir: &Path) {
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(names.is_empty(), "written through a link: {names:?}");
}

#[test]
fn the_scheduler_marker_is_never_read_or_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let store = Store::open(&root, false, Policy::default()).unwrap();
    store.create_jobs_dir().unwrap();
    // Another cache's marker (or any file of the user's) linked in as this one's.
    let outside = dir.path().join("outside");
    fs::write(&outside, "flux\nme@elsewhere:22").unwrap();
    std::os::unix::fs::symlink(&outside, store.marker_file()).unwrap();
    let err = store.read_scheduler_marker().unwrap_err();
    assert!(
        matches!(&err, Error::Untrusted { path, reason, .. }
            if path == &store.marker_file() && reason.contains("symbolic link")),
        "{err}"
    );
    assert_eq!(
        store.scheduler_marker(),
        None,
        "the link's target is not read"
    );
    let err = store
        .set_scheduler_marker(SchedulerKind::Slurm, None)
        .unwrap_err();
    assert!(err.to_string().contains("jobs/scheduler"), "{err}");
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        "flux\nme@elsewhere:22"
    );
    // A FIFO there is refused too, without blocking.
    fs::remove_file(store.marker_file()).unwrap();
    let fifo = std::ffi::CString::new(store.marker_file().to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let err = store.read_scheduler_marker().unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // The whole jobs folder a link: nothing read or written through it.
    fs::remove_file(store.marker_file()).unwrap();
    fs::remove_dir(root.join("jobs")).unwrap();
    let other = dir.path().join("other-jobs");
    fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(&other, root.join("jobs")).unwrap();
    assert!(store.read_scheduler_marker().is_err());
    let err = store
        .set_scheduler_marker(SchedulerKind::Flux, None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Untrusted { path, .. } if path.ends_with("jobs")),
        "{err}"
    );
    untouched(&other);
}

#[test]
fn the_pilot_secret_is_not_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let store = Store::open(&root, false, Policy::default()).unwrap();
    let other = dir.path().join("other-jobs");
    fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(&other, root.join("jobs")).unwrap();
    let err = store.write_pilot_secret("t-1", &[7; 32]).unwrap_err();
    assert!(
        matches!(&err, Error::Untrusted { path, .. } if path.ends_with("jobs")),
        "{err}"
    );
    untouched(&other);
    // In a real jobs folder: a link in the secret's place is replaced, not written through,
    // and removing the secret removes it, not its target.
    fs::remove_file(root.join("jobs")).unwrap();
    store.create_jobs_dir().unwrap();
    let precious = dir.path().join("precious");
    fs::write(&precious, "keep me").unwrap();
    std::os::unix::fs::symlink(&precious, store.pilot_secret("t-1")).unwrap();
    let path = store.write_pilot_secret("t-1", &[7; 32]).unwrap();
    assert_eq!(path, store.pilot_secret("t-1"));
    assert_eq!(fs::read(&path).unwrap(), [7; 32]);
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
    std::os::unix::fs::symlink(&precious, root.join("jobs/t-2.secret")).unwrap();
    store.remove_pilot_secret("t-2");
    store.remove_pilot_secret("t-1");
    assert!(!path.exists() && !root.join("jobs/t-2.secret").exists());
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
}

#[test]
fn sweep_orders_are_never_read_or_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let store = Store::open(&root, false, Policy::default()).unwrap();
    // Another cache's sweep orders, linked in as this one's folder.
    let other = Store::open(&dir.path().join("other"), false, Policy::default()).unwrap();
    other.record_sweep(&["b".into(), "a".into()]).unwrap();
    assert_eq!(other.sweep_orders(), vec![vec!["b", "a"]]);
    std::os::unix::fs::symlink(other.root().join("sweeps"), root.join("sweeps")).unwrap();
    assert!(store.sweep_orders().is_empty(), "read through the link");
    let err = store.record_sweep(&["c".into()]).unwrap_err();
    assert!(
        matches!(&err, Error::Untrusted { path, reason, .. }
            if path.ends_with("sweeps") && reason.contains("symbolic link")),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(other.root().join("sweeps")).unwrap().count(),
        1
    );
    // A file of the folder a link to another sweep's order: passed over.
    fs::remove_file(root.join("sweeps")).unwrap();
    store.record_sweep(&["c".into()]).unwrap();
    let theirs = fs::read_dir(other.root().join("sweeps"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::os::unix::fs::symlink(theirs.path(), root.join("sweeps/linked")).unwrap();
    assert_eq!(store.sweep_orders(), vec![vec!["c"]]);
}

#[test]
fn the_jobs_file_names_are_told_apart() {
    assert!(Store::is_journal_record(&Store::journal_record_name(12)));
    assert!(!Store::is_journal_record("12.intent"));
    assert!(!Store::is_journal_record(".12.job.tmp.3.4"));
    let intent = Store::journal_intent_name("tag-1");
    assert_eq!(Store::intent_stem(&intent), Some("tag-1"));
    assert_eq!(Store::intent_stem("tag-1.job"), None);
    assert_eq!(Store::intent_stem(".intent"), None);
    assert_eq!(Store::intent_stem("xintent"), None);
}
