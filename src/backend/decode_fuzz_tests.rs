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
            4 => {
                // A huge varint length: bincode's u64 marker and eight 0xff bytes.
                v.splice(
                    at..at,
                    [253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                );
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

/// Feeds `ROUNDS` mutations of each seed to `decode`.
fn fuzz(name: &str, seeds: &[Vec<u8>], rng: &mut Rng, mut decode: impl FnMut(&[u8])) {
    for seed in seeds {
        decode(seed);
    }
    for i in 0..ROUNDS {
        let input = mutate(rng, &seeds[i % seeds.len()]);
        decode(&input);
    }
    eprintln!("  {name}: {ROUNDS} inputs");
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
    fuzz("task payload", &tasks, &mut rng, |b| {
        let _ = codec::decode::<TaskSpec>(b);
    });
    fuzz("result payload", &results, &mut rng, |b| {
        let _ = codec::decode::<ResultRecord>(b);
    });
    fuzz("rank payload", &ranks, &mut rng, |b| {
        let _ = codec::decode::<RankRecord>(b);
    });
    fuzz("journal payload", &journal, &mut rng, |b| {
        let _ = codec::decode::<JournalRecord>(b);
    });

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
    let spec = CommandSpec {
        program: "true".into(),
        args: vec![],
        env: vec![],
        stdout: None,
        stderr: None,
        allow_failure: false,
    };
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
    fuzz("result log record", &records, &mut rng, |b| {
        let _ = codec::decode::<crate::resultlog::LogRecord>(b);
    });
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
            limit: Some(std::time::Duration::from_secs(3)),
            warning: None,
        }))
        .unwrap(),
    ];
    fuzz("frames to a worker", &to_worker, &mut rng, |b| {
        let mut input = b;
        while let Ok(Some(_)) = protocol::read::<ToWorker>(&mut input) {}
    });
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
    fuzz("frames from a worker", &from_worker, &mut rng, |b| {
        let mut input = b;
        while let Ok(Some(_)) = protocol::read::<FromWorker>(&mut input) {}
    });

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
