//! A bounded fuzz run of every decoder of what pitch reads back (issue 14): the files of the
//! cache directory (task, result, rank and journal files, the scheduler marker, a command's
//! `exit` file), the result log of pooled tasks, the persistent workers' frames, and the
//! schedulers' outputs (sbatch, squeue, scontrol, sacct, flux). Each
//! gets thousands of inputs mutated from valid ones (bit flips, random bytes, cuts, repeats,
//! huge length prefixes), deterministically (a fixed seed), and must answer without a panic;
//! the run's peak memory must stay small, so no input makes a decoder allocate what its
//! length prefixes claim.

use std::time::Duration;

use crate::backend::queue::journal::JournalRecord;
use crate::backend::scheduler::JobRef;
use crate::codec;
use crate::error::TaskError;
use crate::store::{self, FileKind, RankRecord, ResultRecord, Store};
use crate::task::{ArgSlot, CommandSpec, TaskKey, TaskKind, TaskSpec, View};

/// Inputs per decoder.
const ROUNDS: usize = 1500;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(at),
            3 => {
                let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                v.splice(at..at, extra);
            }
            4 if rng.below(2) == 0 => {
                // A huge varint length: bincode's u64 marker and eight 0xff bytes.
                v.splice(
                    at..at,
                    [253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                );
            }
            4 => {
                // A length under the decode limit but far over the input: the u32 marker
                // and 16 MiB to 1 GiB.
                v.splice(at..at, [252, 0, 0, 0, 1 + rng.below(63) as u8]);
            }
            5 if !v.is_empty() => {
                let from = rng.below(v.len());
                let chunk = v[from..(from + rng.below(32)).min(v.len())].to_vec();
                v.splice(at..at, chunk);
            }
            _ => {
                // Text-ish noise for the line-based parsers.
                let pick = [
                    &b"|"[..],
                    b"\n",
                    b" ",
                    b"=",
                    b"_",
                    b"%",
                    b"-1",
                    b"\xff",
                    b"\0",
                ];
                v.splice(at..at, pick[rng.below(pick.len())].iter().copied());
            }
        }
    }
    v
}

/// The lib's test binary's allocator: the system's, noting the largest single request this
/// thread made since [`largest_allocation`] was last asked. A decoder that allocates what a
/// forged length claims shows here even when the pages are never touched (`calloc`, so the
/// resident memory below stays small).
struct Noting;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for Noting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        note(new);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static NOTING: Noting = Noting;

/// The largest single allocation this thread made since the last call.
fn largest_allocation() -> usize {
    LARGEST.with(|l| l.replace(0))
}

/// The largest single allocation a decoder may make for the small inputs of this run (the
/// file-reading decoders' buffers included).
const ALLOCATION_BOUND: usize = 16 << 20;

/// Inputs that made a decoder allocate what a forged length claimed (hundreds of MB), found
/// by the fuzz targets in `fuzz/` (hex; fixed in `codec::decode`).
const FOUND: &[(&str, &str)] = &[
    ("task", "070000000007070707071707070707070707072a00fc61646413766e286936342c206936342920feffff282d3e20695245414453016936342f746d70"),
    ("result", "070707000007000000505443fcfcfcfcfc07fcfc2a"),
    ("journal", "fcfeffff24ffffff013700000000000042fffffe04d6002932"),
    ("result log", "1c00000101010100000000000000000101012701010101010101fde1271b3d00000000000000000000c50600000000000000ffff00fec4fefefefefe00"),
    ("frames", "310000000107070707070707070707070707070707fda2646413000000000000666e286936342c3031383961626364010202030000020000000200"),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The process's peak resident memory in KiB (`VmHWM`).
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Feeds `ROUNDS` mutations of each seed to `decode`, and checks the largest allocation it
/// made.
fn fuzz(name: &str, seeds: &[Vec<u8>], rng: &mut Rng, mut decode: impl FnMut(&[u8])) {
    largest_allocation();
    for seed in seeds {
        decode(seed);
    }
    for i in 0..ROUNDS {
        let input = mutate(rng, &seeds[i % seeds.len()]);
        decode(&input);
    }
    let largest = largest_allocation();
    assert!(
        largest < ALLOCATION_BOUND,
        "{name}: an allocation of {largest} bytes for inputs of a few hundred"
    );
    eprintln!("  {name}: {ROUNDS} inputs, largest allocation {largest} bytes");
}

/// The seeds and the inputs the fuzz targets found for this decoder (`FOUND`).
fn with_found(what: &str, seeds: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let found = FOUND.iter().filter(|(w, _)| *w == what);
    seeds
        .iter()
        .cloned()
        .chain(found.map(|(_, hex)| unhex(hex)))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Valid encodings of each kind of binary file: the fuzz run's seeds.
struct Seeds {
    tasks: Vec<Vec<u8>>,
    results: Vec<Vec<u8>>,
    ranks: Vec<Vec<u8>>,
    journal: Vec<Vec<u8>>,
}

fn binary_seeds() -> Seeds {
    let key = TaskKey::from_bytes([7; 16]);
    let command = TaskSpec {
        key,
        kind: TaskKind::Command(CommandSpec {
            program: "echo".into(),
            args: vec!["a b".into(), "line1\nline2".into()],
            env: vec![("A".into(), "1".into())],
            stdout: Some("/tmp/out".into()),
            stderr: None,
            allow_failure: true,
        }),
        ranks: 2,
        threads: 1,
        env: vec![("OMP_NUM_THREADS".into(), "1".into())],
        cwd: Some("/tmp".into()),
    };
    let function = TaskSpec {
        kind: TaskKind::Function {
            name: "add".into(),
            fingerprint: "fn(i64, i64) -> i64".into(),
            args: vec![
                ArgSlot::Inline(vec![1, 2, 3]),
                ArgSlot::Ref {
                    key,
                    view: View::AllRanks,
                },
            ],
        },
        ..command.clone()
    };
    let tasks = vec![
        codec::encode(&command).unwrap(),
        codec::encode(&function).unwrap(),
    ];
    let results = vec![
        codec::encode(&ResultRecord {
            outcome: Ok(vec![vec![1, 2], vec![]]),
        })
        .unwrap(),
        codec::encode(&ResultRecord {
            outcome: Err(TaskError::Failed {
                chain: vec!["outer".into(), "inner".into()],
            }),
        })
        .unwrap(),
    ];
    let ranks = vec![codec::encode(&RankRecord {
        rank: 1,
        outcome: Err(TaskError::Timeout {
            limit: Duration::from_secs(3),
        }),
    })
    .unwrap()];
    let journal = vec![codec::encode(&JournalRecord {
        job_id: 42,
        tasks: vec![(key, Some(3)), (key, None)],
    })
    .unwrap()];
    Seeds {
        tasks,
        results,
        ranks,
        journal,
    }
}

#[test]
fn every_decoder_survives_mutated_input_with_bounded_memory() {
    let before = peak_kib();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let Seeds {
        tasks,
        results,
        ranks,
        journal,
    } = binary_seeds();

    // Payloads that passed their checksum (a forged file with a right checksum).
    fuzz("task payload", &with_found("task", &tasks), &mut rng, |b| {
        let _ = codec::decode::<TaskSpec>(b);
    });
    fuzz(
        "result payload",
        &with_found("result", &results),
        &mut rng,
        |b| {
            let _ = codec::decode::<ResultRecord>(b);
            let _ = codec::decode::<RankRecord>(b);
            // As bound to their task (the payload starts with its key).
            if let Some((k, _)) = b.split_first_chunk::<16>() {
                let key = TaskKey::from_bytes(*k);
                let _ = store::decode_bound::<ResultRecord>(b, FileKind::Result, &key);
                let _ =
                    store::decode_bound::<store::CheckpointRecord>(b, FileKind::Checkpoint, &key);
            }
        },
    );
    fuzz("rank payload", &ranks, &mut rng, |b| {
        let _ = codec::decode::<RankRecord>(b);
    });
    fuzz(
        "journal payload",
        &with_found("journal", &journal),
        &mut rng,
        |b| {
            let _ = codec::decode::<JournalRecord>(b);
            let _ = codec::decode::<crate::backend::queue::journal::IntentRecord>(b);
        },
    );

    // Whole files, header included, through the reader pitch uses.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.bin");
    let whole: Vec<Vec<u8>> = tasks
        .iter()
        .map(|p| {
            store::write_atomic(&file, FileKind::Task, p, false).unwrap();
            std::fs::read(&file).unwrap()
        })
        .collect();
    fuzz("task file", &whole, &mut rng, |b| {
        std::fs::write(&file, b).unwrap();
        let _ = store::read_value::<TaskSpec>(&file, FileKind::Task);
        let _ = store::check(b, FileKind::Result);
    });

    // The scheduler marker and a command's exit file, through their readers.
    let store = Store::open(
        &dir.path().join("cache"),
        false,
        crate::trust::Policy::default(),
    )
    .unwrap();
    store.create_jobs_dir().unwrap();
    store
        .set_scheduler_marker(
            crate::scheduler::SchedulerKind::Slurm,
            Some("me@login".into()),
        )
        .unwrap();
    let marker = dir.path().join("cache/jobs/scheduler");
    let markers = vec![
        std::fs::read(&marker).unwrap(),
        b"flux\nme@login\n".to_vec(),
    ];
    fuzz("scheduler marker", &markers, &mut rng, |b| {
        std::fs::write(&marker, b).unwrap();
        let _ = store.scheduler_marker();
    });
    let paths = store.task(&TaskKey::from_bytes([9; 16]));
    paths.create().unwrap();
    let spec = CommandSpec::bare("true");
    let exits = vec![b"0 1000000 1250000\n".to_vec(), b"143\n".to_vec()];
    fuzz("exit file", &exits, &mut rng, |b| {
        std::fs::write(paths.exit_file(), b).unwrap();
        let _ = crate::backend::queue::poll::exit_outcome(&paths, &spec, None);
    });

    // The result log of pooled tasks: record payloads (as if their checksum held), then
    // whole log files (framing, checksums, torn tails) through the reader `pitch status`,
    // `Cache` and re-runs use.
    let records: Vec<Vec<u8>> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            codec::encode(&crate::resultlog::LogRecord {
                key: TaskKey::from_bytes([i as u8; 16]),
                name: "add".into(),
                finished: 1_700_000_000,
                record: codec::decode(r).unwrap(),
                argv: (i == 1).then(|| vec!["echo".into(), "a b".into()]),
                params: vec![("x".into(), "1".into())],
            })
            .unwrap()
        })
        .collect();
    fuzz(
        "result log record",
        &with_found("result log", &records),
        &mut rng,
        |b| {
            let _ = codec::decode::<crate::resultlog::LogRecord>(b);
        },
    );
    let logs = dir.path().join("logs");
    let log_dir = Store::at(logs.clone(), false).log_dir();
    std::fs::create_dir_all(&log_dir).unwrap();
    let log_file = log_dir.join("fuzz.plog");
    let mut log_seed = Vec::new();
    for r in &records {
        let record: crate::resultlog::LogRecord = codec::decode(r).unwrap();
        log_seed.extend(crate::resultlog::encode_record(&record).unwrap());
    }
    fuzz("result log file", &[log_seed], &mut rng, |b| {
        std::fs::write(&log_file, b).unwrap();
        let _ = crate::resultlog::logged_tasks(&logs);
    });

    // The persistent workers' frames, both ways (a pilot's frames come over the network).
    use crate::backend::workers::protocol::{self, FromWorker, ToWorker};
    let to_worker = vec![
        protocol::frame(&ToWorker::Start {
            index: 3,
            init: Some(protocol::InitCall {
                name: "load".into(),
                fingerprint: "fn() -> u64".into(),
                output_type: "u64".into(),
                args: vec![vec![1, 2]],
            }),
            stop_after: Some(std::time::Duration::from_secs(90)),
        })
        .unwrap(),
        protocol::frame(&ToWorker::Run {
            key: TaskKey::from_bytes([5; 16]),
            name: "add".into(),
            fingerprint: "fn(i64, i64) -> i64".into(),
            args: vec![vec![1], vec![2, 3]],
            checkpoint: Some(Ok(crate::store::CheckpointRecord {
                type_name: "u64".into(),
                state: vec![4, 2],
            })),
            stop_after: None,
        })
        .unwrap(),
        protocol::frame(&ToWorker::Command(protocol::CommandRun {
            key: TaskKey::from_bytes([6; 16]),
            spec: crate::task::CommandSpec {
                program: "sh".into(),
                args: vec!["-c".into(), "exit 3".into()],
                env: vec![("K".into(), "v".into())],
                stdout: None,
                stderr: Some("/e".into()),
                allow_failure: false,
            },
            env: vec![("OMP_NUM_THREADS".into(), "1".into())],
            cwd: None,
            stdout: "/c/stdout".into(),
            stderr: "/e".into(),
            cache: "/c".into(),
            trust_group: false,
            limit: Some(std::time::Duration::from_secs(3)),
            warning: None,
        }))
        .unwrap(),
    ];
    fuzz(
        "frames to a worker",
        &with_found("frames", &to_worker),
        &mut rng,
        |b| {
            let mut input = b;
            while let Ok(Some(_)) = protocol::read::<ToWorker>(&mut input) {}
        },
    );
    let from_worker = vec![
        protocol::frame(&FromWorker::Hello {
            rank: 1,
            size: 2,
            token: "0123456789abcdef".into(),
        })
        .unwrap(),
        protocol::frame(&FromWorker::Ready { init: Ok(()) }).unwrap(),
        protocol::frame(&FromWorker::Done {
            outcome: Err(TaskError::Failed {
                chain: vec!["boom".into()],
            }),
            checkpoint: None,
        })
        .unwrap(),
        protocol::frame(&FromWorker::Done {
            outcome: Err(TaskError::Checkpointed {
                detail: "saved".into(),
            }),
            checkpoint: Some(crate::store::CheckpointRecord {
                type_name: "u64".into(),
                state: vec![1; 8],
            }),
        })
        .unwrap(),
    ];
    fuzz(
        "frames from a worker",
        &with_found("frames", &from_worker),
        &mut rng,
        |b| {
            let mut input = b;
            while let Ok(Some(_)) = protocol::read::<FromWorker>(&mut input) {}
        },
    );

    // The schedulers' outputs.
    use super::slurm::parse as slurm;
    fuzz(
        "sbatch --parsable",
        &[b"1234\n".to_vec(), b"1234;cluster\n".to_vec()],
        &mut rng,
        |b| {
            let _ = slurm::parse_sbatch_parsable(&text(b));
        },
    );
    let squeue = b"123|pitch-ab|RUNNING|\n124_3|pitch-ab|PENDING|Resources\n".to_vec();
    fuzz("squeue", &[squeue], &mut rng, |b| {
        if let Ok(entries) = slurm::parse_squeue(&text(b)) {
            let _ = slurm::states_by_job(&entries);
        }
    });
    let scontrol = b"JobId=123 ArrayJobId=120 ArrayTaskId=3 JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0\n\n".to_vec();
    fuzz("scontrol show job", &[scontrol], &mut rng, |b| {
        let _ = slurm::parse_scontrol_show_job(&text(b));
    });
    let sacct = b"123|FAILED|1:0\n123.batch|FAILED|1:0\n124_2|TIMEOUT|0:15\n".to_vec();
    fuzz("sacct", &[sacct], &mut rng, |b| {
        let _ = slurm::parse_sacct(&text(b));
    });
    let config = b"MaxArraySize            = 1001\nMinJobAge = 300 sec\n".to_vec();
    fuzz("scontrol show config", &[config], &mut rng, |b| {
        let _ = slurm::max_array_size(&slurm::parse_scontrol_config(&text(b)));
    });
    use super::flux::parse as flux;
    fuzz(
        "flux job ids",
        &[
            b"f2X3vmZF".to_vec(),
            "ƒ2X3vmZF\n".as_bytes().to_vec(),
            b"123456".to_vec(),
        ],
        &mut rng,
        |b| {
            let _ = flux::parse_job_id(&text(b));
            let _ = flux::parse_submit_output(&text(b));
        },
    );
    let queue = b"f2X3vmZF|RUN\n123|SCHED\n".to_vec();
    fuzz("flux jobs", &[queue], &mut rng, |b| {
        let _ = flux::parse_queue(&text(b));
    });
    let final_ = b"123|INACTIVE|TIMEOUT|143|timeout|resource allocation expired\n".to_vec();
    fuzz("flux jobs (ended)", &[final_], &mut rng, |b| {
        let _: std::collections::HashMap<JobRef, _> = flux::parse_final(&text(b));
    });

    let grown = peak_kib().saturating_sub(before);
    assert!(
        grown < 256 * 1024,
        "the peak memory grew by {} MiB during the fuzz run",
        grown / 1024
    );
}

/// Writes `bytes` as the seed `name` of the fuzz target `target` (`fuzz/corpus/<target>/`).
pub(super) fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Writes the seeds of the fuzz targets in `fuzz/` from what pitch writes (its encoders, a
/// real cache directory's files) and the outputs the parsers' tests recorded:
/// `cargo test --lib -- --ignored fuzz_seeds` (the Slurm ones are in `slurm::parse`'s tests).
#[test]
#[ignore = "writes the fuzz targets' seeds into fuzz/corpus"]
fn write_fuzz_seeds() {
    let Seeds {
        tasks,
        results,
        ranks,
        journal,
    } = binary_seeds();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("cache"),
        false,
        crate::trust::Policy::default(),
    )
    .unwrap();
    let key = TaskKey::from_bytes([7; 16]);
    let paths = store.task(&key);
    paths.create().unwrap();
    // Task files as the store writes them, and their payloads alone.
    for (i, t) in tasks.iter().enumerate() {
        store::write_atomic(&paths.task_file(), FileKind::Task, t, false).unwrap();
        write_seed(
            "task_file",
            &format!("task-{i}"),
            &std::fs::read(paths.task_file()).unwrap(),
        );
        write_seed("task_file", &format!("payload-{i}"), t);
    }
    let sweep = codec::encode(&vec!["k1".to_string(), "k2".to_string()]).unwrap();
    write_seed("task_file", "sweep", &sweep);
    // Result, rank and checkpoint files bound to their task, and the attempts file.
    for (i, r) in results.iter().enumerate() {
        let record: ResultRecord = codec::decode(r).unwrap();
        paths.publish_result(record);
        write_seed(
            "result_file",
            &format!("result-{i}"),
            &std::fs::read(paths.result_file()).unwrap(),
        );
        let mut bound = key.as_bytes().to_vec();
        bound.extend_from_slice(r);
        write_seed("result_file", &format!("payload-{i}"), &bound);
    }
    for (i, r) in ranks.iter().enumerate() {
        let mut bound = key.as_bytes().to_vec();
        bound.extend_from_slice(r);
        write_seed("result_file", &format!("rank-{i}"), &bound);
    }
    paths
        .write_checkpoint(&crate::store::CheckpointRecord {
            type_name: "u64".into(),
            state: vec![4, 2],
        })
        .unwrap();
    write_seed(
        "result_file",
        "checkpoint",
        &std::fs::read(paths.checkpoint_file()).unwrap(),
    );
    paths
        .record_attempt(&crate::error::Attempt {
            number: 1,
            job_id: Some("123_4".into()),
            error: TaskError::Failed {
                chain: vec!["boom".into()],
            },
            duration: Duration::from_millis(1500),
        })
        .unwrap();
    write_seed(
        "result_file",
        "attempts",
        &std::fs::read(paths.attempts_file()).unwrap(),
    );
    // Journal records and intents.
    write_seed("journal_file", "record", &journal[0]);
    let record = dir.path().join("cache/record.job");
    store::write_atomic(&record, FileKind::Journal, &journal[0], false).unwrap();
    write_seed(
        "journal_file",
        "record-file",
        &std::fs::read(&record).unwrap(),
    );
    let intent = codec::encode(&crate::backend::queue::journal::IntentRecord {
        script: "/c/jobs/pitch-1-5.sh".into(),
        tasks: vec![(key, Some(0)), (key, None)],
    })
    .unwrap();
    write_seed("journal_file", "intent", &intent);
    // The scheduler marker (and the older two-line one), a claims log.
    store.create_jobs_dir().unwrap();
    store
        .set_scheduler_marker(
            crate::scheduler::SchedulerKind::Slurm,
            Some("me@login".into()),
        )
        .unwrap();
    let marker = std::fs::read(dir.path().join("cache/jobs/scheduler")).unwrap();
    write_seed("markers", "marker", &marker);
    write_seed("markers", "marker-v0", b"flux\nme@login\n");
    write_seed(
        "markers",
        "claims-log",
        format!("{key}\n-{key}\n").as_bytes(),
    );
    // What job scripts write in `exit` files.
    write_seed("exit_file", "ok", b"0 1000000 1250000\n");
    write_seed("exit_file", "signal", b"143\n");
    write_seed("exit_file", "exec", b"exec:127\n");
    write_seed("exit_file", "cwd", b"cwd\n");
    // A result log of two records.
    let mut log = Vec::new();
    for (i, r) in results.iter().enumerate() {
        log.extend(
            crate::resultlog::encode_record(&crate::resultlog::LogRecord {
                key: TaskKey::from_bytes([i as u8; 16]),
                name: "add".into(),
                finished: 1_700_000_000,
                record: codec::decode(r).unwrap(),
                argv: (i == 1).then(|| vec!["echo".into(), "a b".into()]),
                params: vec![("x".into(), "1".into())],
            })
            .unwrap(),
        );
    }
    write_seed("result_log", "log", &log);
    // The workers' frames.
    use crate::backend::workers::protocol::{self, FromWorker, ToWorker};
    let mut frames = protocol::frame(&ToWorker::Run {
        key,
        name: "add".into(),
        fingerprint: "fn(i64, i64) -> i64".into(),
        args: vec![vec![1], vec![2, 3]],
        checkpoint: None,
        stop_after: None,
    })
    .unwrap();
    frames.extend(protocol::frame(&FromWorker::Ready { init: Ok(()) }).unwrap());
    write_seed("worker_frames", "run", &frames);
    write_seed(
        "worker_frames",
        "hello",
        &protocol::frame(&FromWorker::Hello {
            rank: 1,
            size: 2,
            token: "0123456789abcdef".into(),
        })
        .unwrap(),
    );
    // Flux's outputs (as its tests record them) and an eventlog.
    write_seed("flux_output", "submit", "ƒ2X3vmZF\n".as_bytes());
    write_seed("flux_output", "jobs", b"f2X3vmZF|RUN\n123|SCHED\n");
    write_seed(
        "flux_output",
        "jobs-ended",
        b"123|INACTIVE|TIMEOUT|143|timeout|resource allocation expired\n",
    );
    write_seed("flux_output", "submitted", b"f2X3vmZF|1796574293.25\n");
    write_seed("flux_output", "resources", b"2 Nodes, 8 Cores, 0 GPUs\n");
    write_seed(
        "flux_output",
        "eventlog",
        br#"{"timestamp":1.5,"name":"alloc","context":{}}
{"timestamp":1.6,"name":"exception","context":{"type":"exec","severity":0,"note":"rank 1"}}
{"timestamp":1796574293.259832,"name":"finish","context":{"status":768}}
"#,
    );
    // Params files and specs, a profile.
    write_seed("params", "csv", b"x,name\n1,\"a,b\"\n2,\"line1\nline2\"\n");
    write_seed("params", "range", b"x=1:10:2");
    write_seed("params", "float", b"t=0.5:2.0:0.25");
    write_seed("params", "list", b"n=a,b,c");
    write_seed(
        "profile",
        "pitch.toml",
        br#"[profile.laptop]
backend = "single-node"
max_cores = 4

[profile.cluster]
backend = "slurm"
cache_directory = "/scratch/me/pitch"
max_jobs = 500
poll_interval = "5s"
[profile.cluster.resources]
partition = "short"
run_time_max = "01:00:00"
memory_max = "4G"
"#,
    );
}
