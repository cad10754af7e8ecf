//! Entry points of the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`, never
//! part of the API): one per family of decoders of what pitch reads back. Each takes the
//! bytes a file or a scheduler's output could hold and hands them to the decoders pitch
//! itself uses, ignoring their answers: a target fails only on a panic, a crash, an
//! allocation over libFuzzer's limit or a hang. Nothing here decodes by itself.
//!
//! The decoders that read a file through its path (the `exit` file, the scheduler marker,
//! the attempts file, the result log) are given the bytes through a file in a scratch cache
//! directory under the temporary directory (`TMPDIR`), one per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::backend::queue::journal::{IntentRecord, JournalRecord};
use crate::codec;
use crate::store::{self, CheckpointRecord, FileKind, RankRecord, ResultRecord, Store, TaskPaths};
use crate::task::{CommandSpec, TaskKey, TaskSpec};

/// The scratch cache directory of this process, and a task directory in it.
struct Scratch {
    root: PathBuf,
    store: Store,
    paths: TaskPaths,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("pitch-fuzz-{}", std::process::id()));
        let store = Store::open(&root, false, crate::trust::Policy::default())
            .expect("the scratch cache directory opens");
        store.create_jobs_dir().expect("its jobs directory");
        let paths = store.task(&TaskKey::from_bytes([9; 16]));
        paths.create().expect("its task directory");
        std::fs::create_dir_all(store.log_dir()).expect("its result log directory");
        Scratch { root, store, paths }
    })
}

fn put(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("the scratch file is written");
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The task key a bound payload starts with (so that its value is decoded), if any.
fn key_in(data: &[u8]) -> TaskKey {
    TaskKey::from_bytes(data.first_chunk::<16>().copied().unwrap_or([0; 16]))
}

/// A task file (and a sweep order file, the other unbound kind): the header and checksum,
/// and the payload as if its checksum held (a forged file with a right checksum).
pub fn task_file(data: &[u8]) {
    if let Ok(payload) = store::check(data, FileKind::Task) {
        let _ = codec::decode::<TaskSpec>(payload);
    }
    let _ = codec::decode::<TaskSpec>(data);
    let _ = store::check(data, FileKind::Sweep);
    let _ = codec::decode::<Vec<String>>(data);
}

/// A result, rank or checkpoint file (bound to its task by the key its payload starts
/// with), and the attempts file next to them.
pub fn result_file(data: &[u8]) {
    for kind in [FileKind::Result, FileKind::Rank, FileKind::Checkpoint] {
        let _ = store::check(data, kind);
    }
    let key = key_in(data);
    let _ = store::decode_bound::<ResultRecord>(data, FileKind::Result, &key);
    let _ = store::decode_bound::<RankRecord>(data, FileKind::Rank, &key);
    let _ = store::decode_bound::<CheckpointRecord>(data, FileKind::Checkpoint, &key);
    let _ =
        store::decode_bound::<ResultRecord>(data, FileKind::Result, &TaskKey::from_bytes([1; 16]));
    let s = scratch();
    put(&s.paths.attempts_file(), data);
    let _ = s.paths.attempts();
}

/// A journal file: a submitted job's record or a submission's intent.
pub fn journal_file(data: &[u8]) {
    if let Ok(payload) = store::check(data, FileKind::Journal) {
        let _ = codec::decode::<JournalRecord>(payload);
    }
    let _ = codec::decode::<JournalRecord>(data);
    let _ = codec::decode::<IntentRecord>(data);
}

/// The scheduler marker (`jobs/scheduler`) and a line of a driver's claims log.
pub fn markers(data: &[u8]) {
    let s = scratch();
    put(&s.root.join("jobs/scheduler"), data);
    let _ = s.store.scheduler_marker();
    for line in data.split(|&b| b == b'\n') {
        let _ = crate::lock::log_line(line);
    }
}

/// A command task's `exit` file, as the poller and `pitch status` read it.
pub fn exit_file(data: &[u8]) {
    let s = scratch();
    put(&s.paths.exit_file(), data);
    let spec = CommandSpec::bare("true");
    let _ = crate::backend::queue::poll::exit_outcome(&s.paths, &spec, None);
}

/// A result log of pooled tasks: a record's payload (as if its checksum held), and the
/// whole file (framing, checksums, torn tails) through the reader `pitch status` uses.
pub fn result_log(data: &[u8]) {
    let _ = codec::decode::<crate::resultlog::LogRecord>(data);
    let s = scratch();
    put(&s.store.log_file("fuzz"), data);
    let _ = crate::resultlog::logged_tasks(&s.root);
}

/// The persistent workers' frames, both ways (a pilot's come over the network).
pub fn worker_frames(data: &[u8]) {
    use crate::backend::workers::protocol::{self, FromWorker, ToWorker};
    let mut input = data;
    while let Ok(Some(_)) = protocol::read::<ToWorker>(&mut input) {}
    let mut input = data;
    while let Ok(Some(_)) = protocol::read::<FromWorker>(&mut input) {}
}

/// What Slurm's commands print: sbatch, squeue, scontrol (jobs, config), sacct, sinfo.
pub fn slurm_output(data: &[u8]) {
    use crate::backend::slurm::parse as slurm;
    let t = text(data);
    let _ = slurm::parse_sbatch_parsable(&t);
    if let Ok(entries) = slurm::parse_squeue(&t) {
        let _ = slurm::states_by_job(&entries);
    }
    let _ = slurm::never_clears(&t);
    let _ = slurm::parse_squeue_scripts(&t);
    for p in slurm::parse_partitions(&t) {
        let _ = p.refuses(4, 2, Some(2), Some(std::time::Duration::from_secs(90)));
    }
    let _ = slurm::scontrol_job_unknown(&t);
    let _ = slurm::parse_scontrol_show_job(&t);
    let _ = slurm::parse_sacct(&t);
    let _ = slurm::sacct_disabled(&t);
    let _ = slurm::max_array_size(&slurm::parse_scontrol_config(&t));
}

/// What Flux prints (job ids, `flux jobs` lines, `flux resource info`, a cancel's error) and
/// a job's eventlog, one JSON entry a line, followed as pitch follows it.
pub fn flux_output(data: &[u8]) {
    use crate::backend::flux::parse as flux;
    let t = text(data);
    let _ = flux::parse_job_id(&t);
    let _ = flux::parse_submit_output(&t);
    let _ = flux::parse_queue(&t);
    let _ = flux::parse_final(&t);
    let _ = flux::parse_never_ran(&t);
    let _ = flux::parse_submitted(&t);
    let _ = flux::cancel_failure(&t);
    let _ = crate::backend::flux::instance::parse_flux_resource_info(&t);
    let mut followed = crate::backend::flux::job::Followed::default();
    for line in t.lines() {
        if let Ok(event) = crate::backend::flux::native::Event::parse(line) {
            followed.take(&event);
        }
    }
}

/// A profile file (`pitch.toml`): the user's, but read back on every run.
pub fn profile(data: &[u8]) {
    let _ = crate::profile::parse(&text(data), Path::new("pitch.toml"));
}

// The `pitch` binary's reader of `--params-file` and `--param`, compiled here from the same
// source files (it needs nothing of the binary's; what this file does not call of them is
// unused here).
#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "cli/params/mod.rs"]
mod params;

/// A `--params-file` (CSV) and a `--param NAME=VALUES` spec, expanded to points as
/// `pitch sweep` does (the point limit bounds what a range or a file may expand to).
///
/// The point limit is lowered to 10,000 (`--max-points`): at the default million, a range
/// of a million values is accepted by design, and its strings alone pass libFuzzer's memory
/// limit under AddressSanitizer.
pub fn params(data: &[u8]) {
    params::set_max_points(10_000);
    let t = text(data);
    if let Ok(rows) = params::read_csv(&t, "params.csv") {
        let _ = params::combine(Vec::new(), rows);
    }
    if let Ok(p) = params::parse_param(&t) {
        let q = params::Param {
            name: format!("{}_2", p.name),
            values: p.values.clone(),
        };
        let _ = params::points(&[p, q], false);
    }
    let _ = params::excerpt(&t);
}
