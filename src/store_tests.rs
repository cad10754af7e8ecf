//! Tests of the store: file format, atomic writes, the task directory and the jobs directory.

use super::*;

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
    let store = Store::open(dir.path(), false).unwrap();
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
    let store = Store::open(dir.path(), false).unwrap();
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
    let store = Store::open(&dir.path().join("cache"), false).unwrap();
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
    let store = Store::open(dir.path(), false).unwrap();
    let paths = store.task(&TaskKey::from_bytes([1; 16]));
    paths.create().unwrap();
    let rank = |r: u32, outcome| {
        write_value(
            &paths.rank_file(r),
            FileKind::Rank,
            &RankRecord { rank: r, outcome },
            false,
        )
        .unwrap()
    };
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
