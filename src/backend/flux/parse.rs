//! Parsers of Flux's outputs: job ids (decimal, RFC 19 F58, hex) and the lines `flux jobs`
//! prints in the formats pitch asks for.

use std::collections::HashMap;
use std::fmt;

use crate::backend::scheduler::{JobRef, JobState};
use crate::scheduler::EndReason;

/// What `flux jobs` prints per job for the poller: `{id}|{state}`.
pub(crate) const QUEUE_FORMAT: &str = "{id}|{state}";

/// What `flux jobs` prints per job for a job that left the queue.
pub(crate) const FINAL_FORMAT: &str =
    "{id}|{state}|{result}|{returncode}|{exception.type}|{exception.note}";

/// What `flux jobs` prints per job when an unrecorded submission is looked for: its id and
/// when Flux accepted it (seconds since the epoch).
pub(crate) const SUBMITTED_FORMAT: &str = "{id}|{t_submit}";

/// A line Flux printed that pitch cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const F58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Parses a Flux job id in any of the forms Flux prints by default or on request: decimal
/// (`{id}`), F58 (`ƒ2X3vmZF`, or `f2X3vmZF` when Flux is told to print ASCII) and hex
/// (`0x1b2c`).
pub(crate) fn parse_job_id(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    let bad = || ParseError(format!("{t:?} is not a Flux job id"));
    if let Some(hex) = t.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).map_err(|_| bad());
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let digits = t
        .strip_prefix('ƒ')
        .or_else(|| t.strip_prefix('f'))
        .filter(|d| !d.is_empty())
        .ok_or_else(bad)?;
    let mut value: u64 = 0;
    for c in digits.bytes() {
        let d = F58.iter().position(|&a| a == c).ok_or_else(bad)? as u64;
        value = value
            .checked_mul(58)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(bad)?;
    }
    Ok(value)
}

/// The job id `flux batch` printed: its last non-empty line.
pub(crate) fn parse_submit_output(stdout: &str) -> Result<u64, ParseError> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| ParseError("flux batch printed no job id".into()))?;
    parse_job_id(line)
}

/// A Flux job state (RFC 21), as `{state}` prints it.
fn active_state(name: &str) -> Option<JobState> {
    let name: &'static str = match name {
        "NEW" => "NEW",
        "DEPEND" => "DEPEND",
        "PRIORITY" => "PRIORITY",
        "SCHED" => "SCHED",
        "RUN" => "RUN",
        "CLEANUP" => "CLEANUP",
        "INACTIVE" => return Some(JobState::Ended(EndReason::Unknown("INACTIVE".into()))),
        _ => return None,
    };
    Some(JobState::Active(name))
}

/// The lines of `flux jobs -n -o QUEUE_FORMAT`: each job's state.
pub(crate) fn parse_queue(output: &str) -> Result<HashMap<JobRef, JobState>, ParseError> {
    let mut states = HashMap::new();
    for (n, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError(format!("flux jobs, line {}: {why}: {line:?}", n + 1));
        let (id, state) = line
            .split_once('|')
            .ok_or_else(|| bad("expected ID|STATE"))?;
        let job_id = parse_job_id(id).map_err(|e| bad(&e.0))?;
        let state = active_state(state.trim()).ok_or_else(|| bad("unknown job state"))?;
        states.insert(JobRef::single(job_id), state);
    }
    Ok(states)
}

/// How an inactive job ended, from its result and exception: the one place Flux's results
/// become pitch's end reasons. A job that failed of an exception other than its processes'
/// own (`exec`) was failed by Flux: a lost node, or another exception named by its type.
fn final_state(state: &str, result: &str, exception: &str) -> Option<JobState> {
    if state != "INACTIVE" {
        return active_state(state);
    }
    Some(JobState::Ended(match (result, exception) {
        ("COMPLETED", _) => EndReason::Completed,
        ("FAILED", "" | "exec") => EndReason::Failed,
        ("FAILED", "lost" | "node-failure") => EndReason::NodeFail,
        ("FAILED", other) => EndReason::Unknown(format!("FAILED ({other})")),
        ("CANCELED", _) => EndReason::Cancelled,
        ("TIMEOUT", _) => EndReason::Timeout,
        _ => return None,
    }))
}

/// The lines of `flux jobs -n -o FINAL_FORMAT ID...`: each job's state and a detail naming
/// its return code and exception. Lines it cannot read are skipped (the job then counts as
/// unknown).
pub(crate) fn parse_final(output: &str) -> HashMap<JobRef, (JobState, String)> {
    final_lines(output)
        .into_iter()
        .map(|(job, state, detail, _)| (job, (state, detail)))
        .collect()
}

/// [`parse_final`] of the jobs that ended without ever running: an `alloc` exception (an
/// unsatisfiable request), a `dependency` one (an afterok job failed), or cancelled while
/// pending (return code -128).
pub(crate) fn parse_never_ran(output: &str) -> HashMap<JobRef, (JobState, String)> {
    final_lines(output)
        .into_iter()
        .filter(|(_, _, _, never_ran)| *never_ran)
        .map(|(job, state, detail, _)| (job, (state, detail)))
        .collect()
}

/// Each line [`parse_final`] reads: the job, its state, the detail, and whether it never ran.
fn final_lines(output: &str) -> Vec<(JobRef, JobState, String, bool)> {
    let mut found = Vec::new();
    for line in output.lines() {
        let fields: Vec<&str> = line.splitn(6, '|').collect();
        let [id, state, result, code, exc_type, note] = fields[..] else {
            continue;
        };
        let (Ok(job_id), Some(state)) = (
            parse_job_id(id),
            final_state(state.trim(), result.trim(), exc_type.trim()),
        ) else {
            continue;
        };
        let never_ran = state.is_finished()
            && (matches!(exc_type.trim(), "alloc" | "dependency") || code.trim().starts_with('-'));
        let mut detail = Vec::new();
        if !code.trim().is_empty() {
            detail.push(format!("return code {}", code.trim()));
        }
        if !exc_type.trim().is_empty() {
            let note = note.trim();
            detail.push(if note.is_empty() {
                format!("exception {}", exc_type.trim())
            } else {
                format!("exception {}: {note}", exc_type.trim())
            });
        }
        found.push((JobRef::single(job_id), state, detail.join("; "), never_ran));
    }
    found
}

/// Why a `flux cancel` that exited non-zero failed, from its stderr: `None` when it only
/// named jobs that had already ended (`flux-cancel: ERROR: ƒX: job is inactive`), which are
/// as cancelled as they get (it cancels the others all the same).
pub(crate) fn cancel_failure(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.ends_with(": job is inactive"))
        .collect();
    match (lines.is_empty(), errors.is_empty()) {
        (false, true) => None,
        (true, _) => Some("it failed without a message".into()),
        (false, false) => Some(errors.join("; ")),
    }
}

/// A Flux Standard Duration for a time limit: whole seconds, rounded up (`"90s"`).
pub(crate) fn fsd(d: std::time::Duration) -> String {
    format!("{}s", whole_seconds(d))
}

/// `d` in whole seconds, rounded up and never zero: Flux's time limit for pitch's
/// `run_time_max` (pitch's own timer, started first, fires first).
pub(crate) fn whole_seconds(d: std::time::Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// The lines of `flux jobs -n -o SUBMITTED_FORMAT`: each job's id and submission time
/// (seconds since the epoch), newest first.
pub(crate) fn parse_submitted(output: &str) -> Result<Vec<(u64, f64)>, ParseError> {
    let mut jobs = Vec::new();
    for (n, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError(format!("flux jobs, line {}: {why}: {line:?}", n + 1));
        let (id, at) = line
            .split_once('|')
            .ok_or_else(|| bad("expected ID|T_SUBMIT"))?;
        let job_id = parse_job_id(id).map_err(|e| bad(&e.0))?;
        let at: f64 = at
            .trim()
            .parse()
            .map_err(|_| bad("t_submit is not a number"))?;
        jobs.push((job_id, at));
    }
    jobs.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    Ok(jobs)
}

/// Whether the batch script `flux batch` put in a job's jobspec (`flux job info ID jobspec`:
/// `attributes.system.files.script`, its `data` in the `encoding` Flux chose: `utf-8`, or
/// `base64` for a script that is not UTF-8) is `text`. A jobspec without one (not a batch
/// job) or unreadable is not.
pub(crate) fn is_batch_script(jobspec: &str, text: &str) -> bool {
    let Ok(spec) = serde_json::from_str::<serde_json::Value>(jobspec) else {
        return false;
    };
    let script = &spec["attributes"]["system"]["files"]["script"];
    let Some(data) = script["data"].as_str() else {
        return false;
    };
    match script["encoding"].as_str() {
        Some("base64") => data == base64(text.as_bytes()),
        _ => data == text,
    }
}

/// Standard base64 with padding (RFC 4648, section 4), as Python's `base64.b64encode`
/// writes it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> JobRef {
        JobRef {
            job_id: id,
            array_index: None,
        }
    }

    #[test]
    fn job_ids_in_every_form() {
        assert_eq!(parse_job_id("1234"), Ok(1234));
        assert_eq!(parse_job_id("ƒ1"), Ok(0));
        assert_eq!(parse_job_id("ƒ2"), Ok(1));
        assert_eq!(parse_job_id("ƒz"), Ok(57));
        assert_eq!(parse_job_id("ƒ21"), Ok(58));
        assert_eq!(parse_job_id("f21"), Ok(58));
        assert_eq!(parse_job_id("0x3a"), Ok(58));
        // A realistic F58 id and its decimal form agree.
        let id = parse_job_id("ƒM7Zq9AKHno").unwrap();
        assert_eq!(parse_job_id(&id.to_string()), Ok(id));
        for bad in [
            "",
            "ƒ",
            "ƒ0",
            "ƒO",
            "ƒl",
            "abc",
            "-1",
            "ƒzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(parse_job_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_submit_output("ƒ2\n"),
            Ok(1),
            "flux batch prints the id on a line"
        );
        assert!(parse_submit_output("\n").is_err());
    }

    #[test]
    fn queue_lines_give_active_states() {
        let states = parse_queue("101|SCHED\n102|RUN\n\n103|CLEANUP\n").unwrap();
        assert_eq!(states.len(), 3);
        assert_eq!(states[&job(101)], JobState::Active("SCHED"));
        assert!(!states[&job(102)].is_finished());
        let err = parse_queue("101|SLEEPING\n").unwrap_err();
        assert!(err.0.contains("line 1: unknown job state"), "{err}");
        assert!(parse_queue("101 RUN\n").is_err());
    }

    #[test]
    fn final_lines_name_the_result_and_why() {
        let out = "7|INACTIVE|COMPLETED|0||\n\
                   8|INACTIVE|TIMEOUT|143|timeout|resource allocation expired\n\
                   9|INACTIVE|CANCELED|-128|cancel|\n\
                   10|INACTIVE|FAILED|1||\n\
                   11|INACTIVE|FAILED|137|lost|node 3 lost | rank 2\n\
                   12|RUN||||\n\
                   garbage\n";
        let f = parse_final(out);
        assert_eq!(f.len(), 6);
        let reason = |id| f[&job(id)].0.clone().into_reason();
        assert_eq!(reason(7), EndReason::Completed);
        assert!(!reason(7).by_scheduler());
        let (t, detail) = &f[&job(8)];
        assert_eq!(t, &JobState::Ended(EndReason::Timeout));
        assert_eq!(
            detail,
            "return code 143; exception timeout: resource allocation expired"
        );
        assert_eq!(reason(9), EndReason::Cancelled);
        assert_eq!(reason(10), EndReason::Failed, "the job's own failure");
        assert_eq!(reason(11), EndReason::NodeFail, "a lost node");
        assert!(reason(11).by_scheduler());
        assert_eq!(
            f[&job(11)].1,
            "return code 137; exception lost: node 3 lost | rank 2"
        );
        assert!(!f[&job(12)].0.is_finished());
        let other = parse_final("13|INACTIVE|FAILED|1|alloc|no resources\n");
        let reason = other[&job(13)].0.clone().into_reason();
        assert_eq!(reason.as_str(), "FAILED (alloc)");
        assert!(reason.by_scheduler(), "an exception Flux raised");
    }

    #[test]
    fn jobs_that_never_ran() {
        // What real Flux 0.88 printed for jobs that never ran, and for ones that did.
        let out = "ƒLW1B78b|INACTIVE|FAILED|1|dependency|dependency after-success=ƒLSMAsqH can never be satisfied\n\
                   ƒsLG2pNj|INACTIVE|FAILED|1|alloc|unsatisfiable request: need 1 slot(s) with 1 GPU(s) each\n\
                   ƒUSFt9MZ|INACTIVE|CANCELED|-128|cancel|\n\
                   ƒTaPSJYo|INACTIVE|CANCELED|129|cancel|\n\
                   ƒLSMAsqH|INACTIVE|FAILED|3||\n";
        let never = parse_never_ran(out);
        let mut ids: Vec<u64> = never.keys().map(|j| j.job_id).collect();
        ids.sort();
        let mut expected: Vec<u64> = ["ƒLW1B78b", "ƒsLG2pNj", "ƒUSFt9MZ"]
            .iter()
            .map(|id| parse_job_id(id).unwrap())
            .collect();
        expected.sort();
        assert_eq!(ids, expected);
        assert_eq!(parse_final(out).len(), 5);
        let (_, detail) = &never[&JobRef::single(parse_job_id("ƒsLG2pNj").unwrap())];
        assert!(
            detail.contains("exception alloc: unsatisfiable request"),
            "{detail}"
        );
    }

    #[test]
    fn cancelling_an_inactive_job_is_no_error() {
        // What flux cancel printed (exit 1) for an inactive job and for an unknown one.
        assert_eq!(
            cancel_failure("flux-cancel: ERROR: ƒTaPSJYo: job is inactive\n"),
            None
        );
        assert_eq!(
            cancel_failure(
                "flux-cancel: ERROR: ƒTaPSJYo: job is inactive\nflux-cancel: ERROR: ƒdhZ: unknown job id\n"
            )
            .as_deref(),
            Some("flux-cancel: ERROR: ƒdhZ: unknown job id")
        );
        // A failure that says nothing is still a failure.
        assert!(cancel_failure("\n").is_some());
    }

    #[test]
    fn submissions_newest_first_and_batch_scripts_from_jobspecs() {
        // What flux jobs -a -n --format='{id}|{t_submit}' printed (0.88).
        let out = "ƒYnSfyfd|1796573770.1596365\n1209956040705|1796573771.5\n\n";
        assert_eq!(
            parse_submitted(out),
            Ok(vec![
                (1209956040705, 1796573771.5),
                (1209956040704, 1796573770.1596365)
            ])
        );
        assert!(parse_submitted("12|soon").is_err());
        assert!(parse_submitted("12").is_err());
        // The jobspec flux batch 0.88 made of a script (trimmed to what matters).
        let text = "#!/bin/bash\n# flux: --nslots=1\necho hi\n";
        let spec = serde_json::json!({"attributes": {"system": {"files": {"script": {
            "mode": 33216, "data": text, "encoding": "utf-8"}}}}})
        .to_string();
        assert!(is_batch_script(&spec, text));
        assert!(!is_batch_script(&spec, "#!/bin/bash\necho hi\n"));
        assert!(!is_batch_script("{\"attributes\": {}}", text));
        assert!(!is_batch_script("not json", text));
        // Not UTF-8: Flux keeps it as base64 (Python's b64encode).
        let spec = serde_json::json!({"attributes": {"system": {"files": {"script": {
            "data": "IyEvYmluL2Jhc2gKZWNobyBoaQo=", "encoding": "base64"}}}}})
        .to_string();
        assert!(is_batch_script(&spec, "#!/bin/bash\necho hi\n"));
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn durations_round_up_to_seconds() {
        use std::time::Duration;
        assert_eq!(fsd(Duration::from_secs(90)), "90s");
        assert_eq!(fsd(Duration::from_millis(1500)), "2s");
        assert_eq!(fsd(Duration::ZERO), "1s");
    }
}
