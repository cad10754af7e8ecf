//! The RFC 25 jobspec (version 1) of a FluxJobExecutor task, as pitch submits it through
//! libflux ([`super::native`]): the same JSON `flux run --dry-run -n N -c T [-N n] [-g g]
//! [-t Ds] [--exclusive] [-q Q] -o exit-on-error --output=F --error=F CMD` prints (resources,
//! tasks, `attributes.system`: duration, environment, cwd, queue, shell options), built here
//! so that no Python runs per task.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::resources::Resources;

/// What one job runs and where its output goes.
pub(crate) struct JobRequest<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub ranks: u32,
    pub threads: u32,
    pub resources: &'a Resources,
    /// The job's whole environment (`flux run` sends the submitter's, with the task's own
    /// variables on top).
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
}

/// A Flux job's whole environment, as `flux run` sends it: the driver's (variables that are
/// not UTF-8 cannot be JSON and are left out), with the task's `env` on top.
pub(crate) fn job_environment(env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: std::collections::BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    for (k, v) in env {
        all.insert(k.to_string(), v.to_string());
    }
    all.into_iter().collect()
}

/// The rlimits `flux run` passes on by default (its `--rlimit` rules drop memlock, ofile,
/// msgqueue, nice, rtprio, rttime and sigpending): the job shell applies them to the tasks.
fn rlimits() -> Map<String, Value> {
    let limits = [
        ("cpu", libc::RLIMIT_CPU),
        ("fsize", libc::RLIMIT_FSIZE),
        ("data", libc::RLIMIT_DATA),
        ("stack", libc::RLIMIT_STACK),
        ("core", libc::RLIMIT_CORE),
        ("nofile", libc::RLIMIT_NOFILE),
        ("as", libc::RLIMIT_AS),
        ("rss", libc::RLIMIT_RSS),
        ("nproc", libc::RLIMIT_NPROC),
    ];
    let mut map = Map::new();
    for (name, resource) in limits {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) with a valid resource and a valid out-pointer.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            continue;
        }
        let soft = if limit.rlim_cur == libc::RLIM_INFINITY {
            json!(-1)
        } else {
            json!(limit.rlim_cur)
        };
        map.insert(name.to_string(), soft);
    }
    map
}

/// The jobspec of `req`, as JSON text.
pub(crate) fn jobspec(req: &JobRequest) -> String {
    jobspec_value(req, rlimits()).to_string()
}

fn jobspec_value(req: &JobRequest, rlimit: Map<String, Value>) -> Value {
    let r = req.resources;
    let mut per_slot = vec![json!({"type": "core", "count": req.threads})];
    if let Some(g) = r.gpus_per_core {
        per_slot.push(json!({"type": "gpu", "count": g}));
    }
    let (resources, count) = match r.num_nodes {
        // `flux run -N`: the ranks spread over the nodes, `ceil(ranks / nodes)` slots each.
        Some(nodes) => {
            let per_node = req.ranks.div_ceil(nodes.max(1));
            let slot =
                json!({"type": "slot", "count": per_node, "with": per_slot, "label": "task"});
            let mut node = Map::new();
            node.insert("type".into(), json!("node"));
            node.insert("count".into(), json!(nodes));
            if r.exclusive == Some(true) {
                node.insert("exclusive".into(), json!(true));
            }
            node.insert("with".into(), json!([slot]));
            let count = if req.ranks % nodes.max(1) == 0 {
                json!({"per_slot": 1})
            } else {
                json!({"total": req.ranks})
            };
            (json!([Value::Object(node)]), count)
        }
        None => (
            json!([{"type": "slot", "count": req.ranks, "with": per_slot, "label": "task"}]),
            json!({"per_slot": 1}),
        ),
    };
    let mut command = vec![req.program.to_string()];
    command.extend(req.args.iter().cloned());
    let environment: Map<String, Value> =
        req.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut options = Map::new();
    options.insert("rlimit".into(), Value::Object(rlimit));
    options.insert("exit-on-error".into(), json!(1));
    options.insert(
        "output".into(),
        json!({
            "stdout": {"type": "file", "path": req.stdout.display().to_string()},
            "stderr": {"type": "file", "path": req.stderr.display().to_string()},
        }),
    );
    let mut system = Map::new();
    // Whole seconds, rounded up as `flux run -t` is given: pitch's own timer fires first.
    let duration = r.run_time_max.map_or(0, super::parse::whole_seconds);
    system.insert("duration".into(), json!(duration));
    system.insert("environment".into(), Value::Object(environment));
    system.insert("cwd".into(), json!(req.cwd.display().to_string()));
    if let Some(q) = &r.partition {
        system.insert("queue".into(), json!(q));
    }
    system.insert("shell".into(), json!({"options": options}));
    json!({
        "resources": resources,
        "tasks": [{"command": command, "slot": "task", "count": count}],
        "attributes": {"system": system},
        "version": 1,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn spec(ranks: u32, threads: u32, r: &Resources) -> Value {
        let args = vec!["1".to_string()];
        let env = vec![("A".to_string(), "b".to_string())];
        let (cwd, out, err) = (
            PathBuf::from("/w"),
            PathBuf::from("/t/stdout"),
            PathBuf::from("/t/stderr"),
        );
        let req = JobRequest {
            program: "true",
            args: &args,
            ranks,
            threads,
            resources: r,
            env: &env,
            cwd: &cwd,
            stdout: &out,
            stderr: &err,
        };
        let mut limits = Map::new();
        limits.insert("core".into(), json!(0));
        jobspec_value(&req, limits)
    }

    /// What `flux run --dry-run` 0.88 printed for the same options (environment, cwd and
    /// rlimits aside).
    #[test]
    fn the_jobspec_is_what_flux_run_submits() {
        let s = spec(1, 1, &Resources::new());
        assert_eq!(
            s["resources"],
            json!([{"type": "slot", "count": 1, "with": [{"type": "core", "count": 1}], "label": "task"}])
        );
        assert_eq!(
            s["tasks"],
            json!([{"command": ["true", "1"], "slot": "task", "count": {"per_slot": 1}}])
        );
        let sys = &s["attributes"]["system"];
        assert_eq!(sys["duration"], json!(0));
        assert_eq!(sys["environment"], json!({"A": "b"}));
        assert_eq!(sys["cwd"], json!("/w"));
        assert_eq!(sys.get("queue"), None);
        assert_eq!(
            sys["shell"]["options"],
            json!({"rlimit": {"core": 0}, "exit-on-error": 1, "output": {
                "stdout": {"type": "file", "path": "/t/stdout"},
                "stderr": {"type": "file", "path": "/t/stderr"}}})
        );
        assert_eq!(s["version"], json!(1));

        // -n2 -c2 -N2 --exclusive -t 1.5s (2) -q debug
        let r = Resources::new()
            .num_nodes(2)
            .exclusive(true)
            .run_time_max(Duration::from_millis(1500))
            .partition("debug");
        let s = spec(2, 2, &r);
        assert_eq!(
            s["resources"],
            json!([{"type": "node", "count": 2, "exclusive": true, "with": [{"type": "slot",
                "count": 1, "with": [{"type": "core", "count": 2}], "label": "task"}]}])
        );
        assert_eq!(s["attributes"]["system"]["duration"], json!(2));
        assert_eq!(s["attributes"]["system"]["queue"], json!("debug"));
        // -n5 -N2 -c2 -g1: 3 slots per node, 5 tasks in all.
        let s = spec(5, 2, &Resources::new().num_nodes(2).gpus_per_core(1));
        assert_eq!(
            s["resources"],
            json!([{"type": "node", "count": 2, "with": [{"type": "slot", "count": 3, "with":
                [{"type": "core", "count": 2}, {"type": "gpu", "count": 1}], "label": "task"}]}])
        );
        assert_eq!(s["tasks"][0]["count"], json!({"total": 5}));
        // Whole seconds, rounded up, never zero.
        let s = spec(
            1,
            1,
            &Resources::new().run_time_max(Duration::from_secs(90)),
        );
        assert_eq!(s["attributes"]["system"]["duration"], json!(90));
        let s = spec(
            1,
            1,
            &Resources::new().run_time_max(Duration::from_millis(1)),
        );
        assert_eq!(s["attributes"]["system"]["duration"], json!(1));
    }

    #[test]
    fn the_tasks_variables_win_over_the_drivers() {
        let env = job_environment(&[("PATH", "/task/bin"), ("PITCH_TASK_ONLY", "1")]);
        assert!(env.contains(&("PATH".to_string(), "/task/bin".to_string())));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(env.contains(&("PITCH_TASK_ONLY".to_string(), "1".to_string())));
    }

    #[test]
    fn the_rlimits_are_the_drivers() {
        let limits = rlimits();
        assert!(limits.contains_key("nofile") && limits.contains_key("stack"));
        assert!(!limits.contains_key("memlock"));
    }
}
