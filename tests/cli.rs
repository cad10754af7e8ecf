//! The `pitch` command line on the local backend: exit codes, parameter grammar,
//! placeholders, CSV, zip, resume, JSON output, bad flags and bad configuration.

use std::path::Path;
use std::process::{Command, Output};

fn pitch(dir: &Path, args: &[&str]) -> Output {
    pitch_with(dir, args, &[])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    l.sort();
    l
}

#[test]
fn run_exit_codes_follow_the_env_convention() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(text(&o.stdout), "out\n");
    assert!(text(&o.stderr).contains("err"));
    let o = pitch(d.path(), &["run", "--", "no-such-program-pitch-test"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    let script = d.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho x\n").unwrap();
    let o = pitch(d.path(), &["run", "--", script.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    // A missing absolute path is "not found" too; a missing working directory "cannot execute".
    let o = pitch(d.path(), &["run", "--", "/no/such/dir/pitch-test"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    let o = pitch(d.path(), &["run", "--cwd", "no-such-dir", "--", "true"]);
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("working directory") && text(&o.stderr).contains("does not exist"),
        "{}",
        text(&o.stderr)
    );
    // Pitch itself failing before the command ran: 125.
    let o = pitch(d.path(), &["run", "--cores", "999", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    // Always runs: no cache hit.
    let log = d.path().join("log");
    for _ in 0..2 {
        let cmd = format!("echo x >> {}", log.display());
        assert!(pitch(d.path(), &["run", "-q", "--", "sh", "-c", &cmd])
            .status
            .success());
    }
    assert_eq!(lines(&log).len(), 2);
}

#[test]
fn sweep_product_placeholders_resume_and_fresh() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "sweep",
            "-q",
            "--param",
            "n=1..3",
            "--param",
            "word=a b,it's \"q\"",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[
            "--",
            "sh",
            "-c",
            "printf '%s|%s\\n' \"$0\" \"$1\" >> \"$2\"",
            "{n}",
            "{word}",
        ]);
        a
    }
    let log_s = log.to_str().unwrap().to_string();
    let mut a = args(&[]);
    a.push(&log_s);
    let o = pitch(d.path(), &a);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let got = lines(&log);
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.contains(&"1|a b".to_string()), "{got:?}");
    assert!(got.contains(&"3|it's \"q\"".to_string()), "{got:?}");
    // Resume: nothing runs again.
    assert!(pitch(d.path(), &a).status.success());
    assert_eq!(lines(&log).len(), 6);
    // --fresh reruns everything.
    let mut f = args(&["--fresh"]);
    f.push(&log_s);
    assert!(pitch(d.path(), &f).status.success());
    assert_eq!(lines(&log).len(), 12);
}

#[test]
fn sweep_zip_csv_json_and_failures() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &[
            "sweep", "-q", "--json", "--zip", "--param", "a=1,2", "--param", "b=x,y", "--", "echo",
            "{a}-{b}",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rows: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["params"]["a"], "1");
    assert_eq!(rows[1]["params"]["b"], "y");
    assert_eq!(rows[0]["state"], "finished");

    std::fs::write(d.path().join("p.csv"), "x,y\n1,\"hello, world\"\n2,plain\n").unwrap();
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "-q",
            "--params-file",
            "p.csv",
            "--",
            "sh",
            "-c",
            "exit $(( {x} - 1 ))",
            "{y}",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "one point failed");
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "--params-file",
            "p.csv",
            "--",
            "sh",
            "-c",
            "exit $(( {x} - 1 ))",
            "{y}",
        ],
    );
    assert!(
        text(&o.stderr).contains("failed: x=2"),
        "{}",
        text(&o.stderr)
    );

    let o = pitch(d.path(), &["results", "--format", "json"]);
    let rows = text(&o.stdout).lines().count();
    assert_eq!(rows, 4, "{}", text(&o.stdout));
    let o = pitch(d.path(), &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(s["total"], 4);
    assert_eq!(s["counts"]["failed"], 1);
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    for bad in [
        vec!["sweep", "--param", "n=1..x", "--", "echo", "{n}"],
        vec!["sweep", "--param", "n=1,2", "--", "echo", "{m}"],
        vec!["sweep", "--param", "n=1,2", "--", "echo"],
        vec![
            "sweep", "--zip", "--param", "a=1,2", "--param", "b=1", "--", "echo", "{a}{b}",
        ],
        vec!["run", "--no-such-flag", "--", "true"],
        vec!["status", "--cache-dir", "does-not-exist"],
    ] {
        let o = pitch(d.path(), &bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
    }
    std::fs::write(
        d.path().join("pitch.toml"),
        "[profile.laptop]\nbackend = \"single-node\"\nmax_cores = 2\n\n[profile.typo]\nmax_core = 2\n",
    )
    .unwrap();
    let o = pitch(d.path(), &["run", "--profile", "typo", "--", "true"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("pitch.toml:6") && err.contains("max_core"),
        "{err}"
    );
    // A bad key anywhere makes the whole file an error, whichever profile is asked for.
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "--profile",
            "laptop",
            "--param",
            "a=1",
            "--",
            "echo",
            "{a}",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    std::fs::write(
        d.path().join("pitch.toml"),
        "[profile.laptop]\nbackend = \"single-node\"\nmax_cores = 2\n",
    )
    .unwrap();
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "--profile",
            "gpu",
            "--param",
            "a=1",
            "--",
            "echo",
            "{a}",
        ],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no profile \"gpu\"") && err.contains("laptop"),
        "{err}"
    );
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "-q",
            "--profile",
            "laptop",
            "--param",
            "a=1",
            "--",
            "echo",
            "{a}",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn completions_and_version() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(d.path(), &["completions", "bash"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("sweep"));
    let o = pitch(d.path(), &["--version"]);
    assert!(text(&o.stdout).starts_with("pitch "));
}

#[test]
fn version_names_the_features_and_the_cache_format_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(d.path(), &["--version"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let features: Vec<&str> = [
        (cfg!(feature = "remote"), "remote"),
        (cfg!(feature = "mpi-examples"), "mpi-examples"),
        (cfg!(feature = "portable"), "portable"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(", ")
    };
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!("pitch {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(lines[1], format!("features: {features}"));
    // The version printed is the one in the header of the files a run writes (bytes 4-5,
    // little-endian, after the magic).
    let printed: u16 = lines[2]
        .strip_prefix("cache format version: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let o = pitch(d.path(), &["run", "-q", "--", "true"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let task_file = find_file(&d.path().join("pitch-cache/tasks"), "task.bin").unwrap();
    let header = std::fs::read(&task_file).unwrap();
    assert_eq!(&header[..4], b"PTCH");
    assert_eq!(u16::from_le_bytes([header[4], header[5]]), printed);
    // -V stays one line.
    let o = pitch(d.path(), &["-V"]);
    assert_eq!(
        text(&o.stdout).trim_end(),
        format!("pitch {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The first file named `name` under `dir`, depth first.
fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

#[test]
fn results_show_parameters_render_and_gc() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &["sweep", "-q", "--param", "n=1,2", "--", "echo", "{n}"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = pitch(d.path(), &["results", "--format", "csv"]);
    let csv = text(&o.stdout);
    assert!(csv.starts_with("key,n,command,state"), "{csv}");
    assert!(csv.contains(",1,echo 1,finished,0,"), "{csv}");
    let o = pitch(d.path(), &["gc", "--finished"]);
    assert!(
        text(&o.stdout).contains("removed 2 of 2"),
        "{}",
        text(&o.stdout)
    );
    let o = pitch(d.path(), &["status", "--json"]);
    assert!(
        text(&o.stdout).contains("\"total\":0"),
        "{}",
        text(&o.stdout)
    );
    // render prints the Slurm job script without submitting anything.
    let o = pitch(
        d.path(),
        &[
            "render",
            "--partition",
            "short",
            "--time",
            "90s",
            "--",
            "echo",
            "a b",
        ],
    );
    let script = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(script.starts_with("#!/bin/bash"), "{script}");
    assert!(script.contains("#SBATCH --partition=short"), "{script}");
    assert!(script.contains("#SBATCH --time=00:01:30"), "{script}");
    assert!(script.contains("exec echo 'a b'"), "{script}");
    // The warning before the time limit, and Slurm's own requeue, are shown too: the job
    // script then passes SIGUSR1 on to the command.
    let o = pitch(
        d.path(),
        &[
            "render",
            "--time",
            "2m",
            "--checkpoint-grace",
            "90s",
            "--no-requeue",
            "--",
            "./sim",
        ],
    );
    let script = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        script.contains("\n#SBATCH --signal=B:USR1@90\n"),
        "{script}"
    );
    assert!(script.contains("\n#SBATCH --no-requeue\n"), "{script}");
    assert!(script.contains("trap pitch_warn USR1"), "{script}");
    let o = pitch(
        d.path(),
        &[
            "render",
            "--time",
            "1m",
            "--checkpoint-grace",
            "2m",
            "--",
            "true",
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("run_time_max (60s)"),
        "{}",
        text(&o.stderr)
    );
    // cancel on a cache without scheduler jobs has nothing to do.
    let o = pitch(d.path(), &["cancel", "--all"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("nothing to cancel"));
}

#[test]
fn run_streams_output_while_the_command_runs() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["run", "--", "sh", "-c", "echo first; sleep 2; echo second"])
        .current_dir(d.path())
        .env_remove("PITCH_PROFILE")
        .env("HOME", d.path())
        .env_remove("XDG_CONFIG_HOME")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let first_at = start.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    let total = start.elapsed();
    assert_eq!(first, "first\n");
    assert_eq!(rest, "second\n");
    assert!(o.status.success());
    assert!(
        total >= std::time::Duration::from_secs(2),
        "the run took {total:?}"
    );
    assert!(
        first_at < std::time::Duration::from_millis(1500),
        "the first line came after {first_at:?}, the run took {total:?}: not streamed"
    );
    let err = text(&o.stderr);
    assert!(err.contains("pitch: running sh -c"), "{err}");
    assert!(err.contains("pitch: exit code 0 after 2."), "{err}");
}

#[test]
fn run_json_prints_one_object_with_the_output_files() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &[
            "run",
            "--json",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    let stdout = text(&o.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["key"].as_str().unwrap().len(), 32);
    let out_file = v["stdout"].as_str().expect("a stdout path");
    let err_file = v["stderr"].as_str().expect("a stderr path");
    assert_eq!(std::fs::read_to_string(out_file).unwrap(), "to-stdout\n");
    assert_eq!(std::fs::read_to_string(err_file).unwrap(), "to-stderr\n");
    // The command's stdout is in its file only; its stderr is still copied.
    let err = text(&o.stderr);
    assert!(!err.lines().any(|l| l == "to-stdout"), "{err}");
    assert!(err.lines().any(|l| l == "to-stderr"), "{err}");
    // Nothing written: no file, null paths.
    let o = pitch(d.path(), &["run", "--json", "--", "true"]);
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(v["exit_code"], 0);
    assert!(v["stdout"].is_null() && v["stderr"].is_null(), "{v}");
}

#[test]
fn verbose_prints_a_line_per_point_and_quiet_nothing() {
    let d = tempfile::tempdir().unwrap();
    let sweep = |flag: &str, n: &str| {
        let param = format!("n={n}");
        pitch(
            d.path(),
            &[
                "sweep",
                flag,
                "--param",
                &param,
                "--",
                "sh",
                "-c",
                "test {n} -ne 3",
            ],
        )
    };
    let o = sweep("-v", "1..3");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    let finished: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pitch: finished "))
        .collect();
    assert_eq!(finished.len(), 2, "{err}");
    for n in ["n=1 in ", "n=2 in "] {
        assert!(finished.iter().any(|l| l.contains(n)), "{err}");
    }
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pitch: failed "))
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    assert!(
        failed[0].contains(" n=3: command \"sh\" exited with code 1"),
        "{err}"
    );
    // The key is the task's directory name.
    let key = finished[0].split(' ').nth(2).unwrap();
    assert_eq!(key.len(), 32, "{err}");
    assert!(!err.contains("pitch: submitted "), "{err}");
    // -vv: also submissions and starts; points from the cache are listed too.
    let o = sweep("-vv", "1..4");
    let err = text(&o.stderr);
    let count = |p: &str| err.lines().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("pitch: submitted "), 4, "{err}");
    assert_eq!(count("pitch: cached "), 2, "{err}");
    assert_eq!(count("pitch: started "), 2, "{err}");
    assert_eq!(count("pitch: finished "), 1, "{err}");
    // -q: nothing at all on stderr for a successful sweep (or run).
    let o = sweep("-q", "1,2");
    assert!(o.status.success());
    assert_eq!(text(&o.stderr), "");
    let o = sweep("-q", "4..6");
    assert!(o.status.success());
    assert_eq!(text(&o.stderr), "");
    let o = pitch(d.path(), &["run", "-q", "--", "echo", "hi"]);
    assert_eq!(text(&o.stdout), "hi\n");
    assert_eq!(text(&o.stderr), "");
}

/// Every JSON output carries `schema_version` 1 and keeps its documented fields.
#[test]
fn every_json_output_has_a_schema_version() {
    let d = tempfile::tempdir().unwrap();
    let json = |stdout: &[u8]| -> Vec<serde_json::Value> {
        text(stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let has = |v: &serde_json::Value, fields: &[&str]| {
        assert_eq!(v["schema_version"], 1, "{v}");
        for f in fields {
            assert!(v.get(f).is_some(), "no {f} in {v}");
        }
    };
    let o = pitch(d.path(), &["run", "--json", "--", "echo", "x"]);
    let run = json(&o.stdout);
    assert_eq!(run.len(), 1);
    has(
        &run[0],
        &[
            "key",
            "exit_code",
            "seconds",
            "run_seconds",
            "total_seconds",
            "queued_seconds",
            "stdout",
            "stderr",
            "error",
        ],
    );
    // Locally the command's run time is measured: seconds is it, and it fits in the total.
    let (secs, run_s, total) = (
        run[0]["seconds"].as_f64().unwrap(),
        run[0]["run_seconds"]
            .as_f64()
            .expect("run_seconds measured locally"),
        run[0]["total_seconds"].as_f64().unwrap(),
    );
    assert_eq!(secs, run_s, "{}", run[0]);
    assert!(run_s <= total, "{}", run[0]);
    assert!(
        run[0]["queued_seconds"].as_f64().unwrap() >= 0.0,
        "{}",
        run[0]
    );
    let o = pitch(
        d.path(),
        &[
            "sweep", "-q", "--json", "--param", "n=1,2", "--", "echo", "{n}",
        ],
    );
    let points = json(&o.stdout);
    assert_eq!(points.len(), 2);
    for p in &points {
        has(p, &["key", "params", "state", "exit_code", "error"]);
    }
    let o = pitch(d.path(), &["results", "--format", "json"]);
    let rows = json(&o.stdout);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        has(
            r,
            &[
                "key",
                "params",
                "name",
                "argv",
                "state",
                "exit_code",
                "runtime",
                "stdout",
                "error",
            ],
        );
    }
    for args in [&["status", "--json"][..], &["status", "--all", "--json"]] {
        let o = pitch(d.path(), args);
        let status = json(&o.stdout);
        assert_eq!(status.len(), 1);
        has(&status[0], &["cache_directory", "total", "counts", "tasks"]);
        assert_eq!(status[0]["total"], 3);
        let tasks = status[0]["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), if args.len() == 3 { 3 } else { 0 });
        for t in tasks {
            assert_eq!(t["state"], "finished", "{t}");
        }
    }
}

/// `pitch status --all` and `pitch results` keep their columns in line whatever the states'
/// names ("unfinished" is longer than the others), and counts read as English.
#[test]
fn tables_stay_in_line_and_counts_read_well() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(d.path(), &["sweep", "--param", "n=1", "--", "echo", "{n}"]);
    assert!(
        text(&o.stderr).contains("pitch: 1 point: 1 ran"),
        "{}",
        text(&o.stderr)
    );
    let o = pitch(d.path(), &["status"]);
    assert!(
        text(&o.stdout).starts_with("1 task in "),
        "{}",
        text(&o.stdout)
    );
    let o = pitch(
        d.path(),
        &["sweep", "-q", "--param", "n=2,3", "--", "echo", "{n}"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A task without a result is unfinished.
    let o = pitch(d.path(), &["results", "--format", "json"]);
    let key = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["argv"][1] == "3")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = d.path().join("pitch-cache");
    std::fs::remove_file(pitch::__private::result_path(&cache, &key).unwrap()).unwrap();
    let column = |table: &str, what: &str| -> Vec<usize> {
        table
            .lines()
            .map(|l| {
                l.find(what)
                    .unwrap_or_else(|| panic!("no {what} in {l:?}:\n{table}"))
            })
            .collect()
    };
    let o = pitch(d.path(), &["status", "--all"]);
    let out = text(&o.stdout);
    assert!(out.contains("3 tasks in"), "{out}");
    let rows: String = out.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert!(rows.contains("unfinished"), "{out}");
    let at = column(&rows, "echo ");
    assert!(
        at.iter().all(|&c| c == at[0]),
        "commands out of line:\n{out}"
    );
    let o = pitch(d.path(), &["results"]);
    let out = text(&o.stdout);
    assert!(out.contains("unfinished"), "{out}");
    let body: String = out.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let at = column(&body, "echo ");
    let header = out.lines().next().unwrap();
    assert!(
        at.iter().all(|&c| c == at[0]) && header.find("command") == Some(at[0]),
        "columns out of line:\n{out}"
    );
    let o = pitch(d.path(), &["gc", "--all", "--older-than", "1000d"]);
    assert!(
        text(&o.stdout).contains("removed 0 of 3 task directories"),
        "{}",
        text(&o.stdout)
    );
}

/// `-q` and `-v` are options of the subcommands they change, listed once in their help and
/// not at all elsewhere.
#[test]
fn quiet_and_verbose_only_where_they_mean_something() {
    let d = tempfile::tempdir().unwrap();
    for sub in ["run", "sweep"] {
        let help = text(&pitch(d.path(), &[sub, "--help"]).stdout);
        assert_eq!(help.matches("--quiet").count(), 1, "{help}");
        assert_eq!(help.matches("--verbose").count(), 1, "{help}");
    }
    for sub in [
        &[][..],
        &["status"],
        &["results"],
        &["cancel"],
        &["render"],
        &["gc"],
        &["completions"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let help = text(&pitch(d.path(), &args).stdout);
        assert!(
            !help.contains("--quiet") && !help.contains("--verbose"),
            "{args:?}: {help}"
        );
    }
}

/// `pitch` with `argv` and `stdin`, under a 512 MiB address-space limit and a time limit: an
/// input read without a bound fails the test instead of filling the machine.
fn pitch_bounded(
    dir: &Path,
    args: &[&str],
    stdin: std::process::Stdio,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "prlimit", "--as=536870912", "--"])
        .arg(env!("CARGO_BIN_EXE_pitch"))
        .args(args)
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .env_remove("PITCH_MAX_POINTS")
        .env_remove("PITCH_MAX_PARAMS_BYTES")
        .env("HOME", dir)
        .stdin(stdin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("timeout and prlimit run")
}

#[test]
fn an_endless_params_file_or_stdin_fails_fast_with_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let null = std::process::Stdio::null;
    let start = std::time::Instant::now();
    let o = pitch_bounded(
        d.path(),
        &["sweep", "--params-file", "/dev/zero", "--", "echo", "{a}"],
        null(),
        &[],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/dev/zero: larger than the limit of 67108864 bytes")
            && err.contains("--max-params-bytes"),
        "{err}"
    );
    // An endless standard input, and a smaller limit from the environment.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let o = pitch_bounded(
        d.path(),
        &["sweep", "--params-file", "-", "--", "echo", "{a}"],
        zero.into(),
        &[("PITCH_MAX_PARAMS_BYTES", "1000")],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("-: larger than the limit of 1000 bytes"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    // The limit is the bound, not a ban: a small file on stdin works.
    let csv = d.path().join("p.csv");
    std::fs::write(&csv, "a\n1\n2\n").unwrap();
    let o = pitch_bounded(
        d.path(),
        &["sweep", "-q", "--params-file", "-", "--", "true", "{a}"],
        std::fs::File::open(&csv).unwrap().into(),
        &[("PITCH_MAX_PARAMS_BYTES", "6")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Points: --max-points (or PITCH_MAX_POINTS) names itself in the error.
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "--max-points",
            "3",
            "--param",
            "a=1..4",
            "--",
            "true",
            "{a}",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("more than the limit of 3"),
        "{}",
        text(&o.stderr)
    );
    let o = pitch_bounded(
        d.path(),
        &[
            "sweep",
            "--param",
            "b=1,2",
            "--params-file",
            csv.to_str().unwrap(),
            "--",
            "true",
            "{a}{b}",
        ],
        null(),
        &[("PITCH_MAX_POINTS", "3")],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("more than 3 points") && err.contains("--max-points"),
        "{err}"
    );
}

#[test]
fn a_group_writable_cache_folder_needs_trust_group() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("project");
    std::fs::create_dir(&project).unwrap();
    // A group shared with others (daemon, 1), not the user's private group: root only.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if root {
        std::os::unix::fs::chown(&project, None, Some(1)).unwrap();
    } else {
        eprintln!("the refusal is not tested: only root can give a directory a shared group");
    }
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o770)).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-q", "--cache-dir", "project/cache"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "true"]);
        pitch(d.path(), &args)
    };
    if root {
        let o = run(&[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{err}");
        assert!(
            err.contains("refusing the cache directory")
                && err.contains("project is writable by its group")
                && err.contains("mode 0770")
                && err.contains("--trust-group"),
            "{err}"
        );
        assert!(!project.join("cache").exists(), "nothing is created in it");
    }
    let o = run(&["--trust-group"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Looking at the cache asks for the same trust.
    for cmd in ["status", "results", "gc", "cancel"] {
        let mut args = vec![cmd, "--cache-dir", "project/cache"];
        if cmd == "cancel" || cmd == "gc" {
            args.push("--all");
        }
        if root {
            let o = pitch(d.path(), &args);
            assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o.stderr));
            assert!(
                text(&o.stderr).contains("is writable by its group"),
                "{cmd}: {}",
                text(&o.stderr)
            );
        }
        args.push("--trust-group");
        let o = pitch(d.path(), &args);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", text(&o.stderr));
    }
    // Missing parents on the way to a cache directory get the umask's mode, not 0700.
    let o = pitch(
        d.path(),
        &["run", "-q", "--cache-dir", "scratch/me/cache", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mode = |p: &str| {
        std::fs::metadata(d.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("scratch/me/cache"), 0o700);
    assert_ne!(mode("scratch"), 0o700, "a parent made private");
    assert_ne!(mode("scratch/me"), 0o700, "a parent made private");
}

/// Points that repeat an earlier one are one task, and the summary says so (issue 19: "3
/// points: 1 ran" did not add up).
#[test]
fn repeated_points_are_counted_as_repeats() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &["sweep", "--param", "x=1,1,2", "--", "echo", "{x}"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("3 points (1 repeats an earlier point, run once): 2 ran"),
        "{err}"
    );
    let o = pitch(
        d.path(),
        &["sweep", "--param", "x=3,4", "--", "echo", "{x}"],
    );
    let err = text(&o.stderr);
    assert!(err.contains("2 points: 2 ran"), "{err}");
}

/// What a listing cannot read is named, not skipped without a word (issue 19): a task
/// directory with mode 000, and a cache directory with mode 000. Root reads everything, so
/// this runs as a second user (created when missing); skipped when not root.
#[test]
fn unreadable_entries_are_named() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as a second user");
        return;
    }
    let user = "pitch-attacker";
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        text(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        // Other tests may create it at the same moment: only the result counts.
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", user])
            .output();
    }
    let (uid, gid) = (id("-u").expect("the user"), id("-g").expect("its group"));
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    // A copy of the binary the user may run, wherever the checkout is.
    let bin = home.join("pitch");
    std::fs::copy(env!("CARGO_BIN_EXE_pitch"), &bin).unwrap();
    std::os::unix::fs::chown(d.path(), Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&bin, Some(uid), Some(gid)).unwrap();
    let as_user = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .arg(&bin)
            .args(args)
            .current_dir(&home)
            .env("HOME", &home)
            .env_remove("PITCH_PROFILE")
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .expect("setpriv runs")
    };
    let o = as_user(&["sweep", "-q", "--param", "n=1,2,3", "--", "true", "{n}"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = as_user(&["status", "--all"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Close one task's directory to its own user.
    let tasks = home.join("pitch-cache").join("tasks");
    let shard = std::fs::read_dir(&tasks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let task = std::fs::read_dir(&shard)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let chmod = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(&task, 0o000);
    let o = as_user(&["status", "--all"]);
    let err = text(&o.stderr);
    assert!(
        err.contains("skipped") && err.contains(&*task.to_string_lossy()),
        "the unreadable task is not named: {err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
    chmod(&task, 0o700);
    // A cache directory its user cannot read: the error says so, not "no tasks/ folder".
    chmod(&home.join("pitch-cache"), 0o000);
    let o = as_user(&["status"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("Permission denied") && !err.contains("no tasks/ folder"),
        "{err}"
    );
    chmod(&home.join("pitch-cache"), 0o700);
}

/// Issue 14: two `pitch sweep` of the same points on one cache directory, started at the same
/// moment, run every point exactly once (each run appends a line to a file): the second waits
/// for the points the first runs and answers with their results. With file locks, and with
/// the lease files used where a file system has none (`PITCH_LOCK=lease`).
#[test]
fn two_sweeps_at_once_run_every_point_once() {
    for lock in ["", "lease"] {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("runs");
        let cmd = format!("echo {{n}} >> {}; sleep 0.2", runs.display());
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_pitch"))
                .args(["sweep", "-q", "--max-cores", "4", "--param", "n=1..12"])
                .args(["--", "sh", "-c", &cmd])
                .current_dir(d.path())
                .env_remove("PITCH_PROFILE")
                .env("HOME", d.path())
                .env("PITCH_LOCK", lock)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "lock {lock:?}: {}", text(&o.stderr));
        }
        let got = lines(&runs);
        let mut want: Vec<String> = (1..=12).map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "lock {lock:?}: every point once");
        // Nothing is left claimed: no claim file per task (32 hex digits) is left; with
        // byte-range claims a driver that exits without dropping its executor may leave its
        // claims log, which says every claim was released.
        let claims = d.path().join("pitch-cache/locks/claims");
        let left: Vec<String> = std::fs::read_dir(claims)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        assert!(left.is_empty(), "lock {lock:?}: claims left: {left:?}");
    }
}

fn pitch_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pitch"));
    c.args(args)
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the pitch binary runs")
}

/// Issue 17: `pitch status/results/cancel/gc --profile P` (or PITCH_PROFILE) look in P's cache
/// directory, where `pitch sweep --profile P` put the tasks.
#[test]
fn inspecting_subcommands_use_the_profiles_cache_directory() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("pitch.toml"),
        "[profile.p]\nbackend = \"single-node\"\ncache_directory = \"elsewhere\"\n",
    )
    .unwrap();
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "-q",
            "--profile",
            "p",
            "--param",
            "n=1,2",
            "--",
            "echo",
            "{n}",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(d.path().join("elsewhere/tasks").is_dir());
    let o = pitch(d.path(), &["status", "--profile", "p", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("\"total\":2"),
        "{}",
        text(&o.stdout)
    );
    let o = pitch_with(
        d.path(),
        &["results", "--format", "json"],
        &[("PITCH_PROFILE", "p")],
    );
    assert_eq!(text(&o.stdout).lines().count(), 2, "{}", text(&o.stderr));
    let o = pitch(d.path(), &["cancel", "--profile", "p", "--all"]);
    assert!(
        text(&o.stdout).contains("nothing to cancel"),
        "{}",
        text(&o.stderr)
    );
    // Without the profile: ./pitch-cache, which does not exist.
    let o = pitch(d.path(), &["status"]);
    assert_eq!(o.status.code(), Some(2));
    let o = pitch(d.path(), &["gc", "--profile", "p", "--all"]);
    assert!(
        text(&o.stdout).contains("removed 2 of 2"),
        "{}",
        text(&o.stderr)
    );
    // --cache-dir wins over the profile's; an unknown profile is an error.
    let o = pitch(
        d.path(),
        &["status", "--profile", "p", "--cache-dir", "nope"],
    );
    assert_eq!(o.status.code(), Some(2));
    let o = pitch(d.path(), &["results", "--profile", "typo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("typo"), "{}", text(&o.stderr));
}

/// Issue 17: `pitch results` lists a sweep's points in sweep order (numbers as numbers), one
/// column per parameter, in CSV (through the csv crate: commas, quotes, CR and LF kept) and
/// JSON (the parameters in their order).
/// `pitch results` lists points in the order the sweep made them, values as typed (not
/// sorted), sweep after sweep.
#[test]
fn results_keep_the_order_values_were_typed_in() {
    let d = tempfile::tempdir().unwrap();
    let sweep = |params: &[&str]| {
        let mut args = vec!["sweep", "-q"];
        for p in params {
            args.extend(["--param", p]);
        }
        args.extend(["--", "echo", "{x}"]);
        if params.len() > 1 {
            args.push("{y}");
        }
        let o = pitch(d.path(), &args);
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    sweep(&["x=3,1,2", "y=b,a"]);
    sweep(&["x=10,5"]);
    let o = pitch(d.path(), &["results", "--format", "csv"]);
    let mut r = csv::Reader::from_reader(o.stdout.as_slice());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[..3], ["key", "x", "y"]);
    let rows: Vec<String> = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            format!("{}{}", &rec[1], &rec[2])
        })
        .collect();
    assert_eq!(rows, ["3b", "3a", "1b", "1a", "2b", "2a", "10", "5"]);
}

#[test]
fn results_are_in_sweep_order_with_a_column_per_parameter() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "-q",
            "--param",
            "n=1..11",
            "--param-str",
            "s=a,\"b\"\r\nc",
            "--param-str",
            "s=z",
            "--",
            "echo",
            "{n}",
            "{s}",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = pitch(d.path(), &["results", "--format", "csv"]);
    let mut r = csv::Reader::from_reader(o.stdout.as_slice());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[..4], ["key", "n", "s", "command"]);
    let rows: Vec<(String, String)> = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[1].to_string(), rec[2].to_string())
        })
        .collect();
    let want: Vec<(String, String)> = (1..=11)
        .flat_map(|n| {
            [
                (n.to_string(), "a,\"b\"\r\nc".to_string()),
                (n.to_string(), "z".into()),
            ]
        })
        .collect();
    assert_eq!(rows, want);
    let o = pitch(d.path(), &["results", "--format", "json"]);
    let first = text(&o.stdout).lines().next().unwrap().to_string();
    assert!(
        first.contains("\"params\":{\"n\":\"1\",\"s\":\"a,\\\"b\\\"\\r\\nc\"}"),
        "{first}"
    );
    let o = pitch(d.path(), &["results"]);
    let table = text(&o.stdout);
    let header = table.lines().next().unwrap();
    assert!(header.contains(" n ") && header.contains(" s "), "{table}");
}

/// Issue 17: `--fresh` runs a point again under the same key: the next plain run answers with
/// the new result and `pitch results` shows one row; a rerun that fails keeps the finished
/// result.
#[test]
fn fresh_supersedes_the_old_result_of_the_point() {
    let d = tempfile::tempdir().unwrap();
    let sweep = |extra: &[&str]| {
        let mut a = vec!["sweep", "--json", "--param", "n=1"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--", "sh", "-c", "sleep $(cat t) && echo {n}"]);
        pitch(d.path(), &a)
    };
    let runtime = || -> (usize, f64) {
        let o = pitch(d.path(), &["results", "--format", "json"]);
        let rows: Vec<serde_json::Value> = text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (rows.len(), rows[0]["runtime"].as_f64().unwrap())
    };
    std::fs::write(d.path().join("t"), "0").unwrap();
    assert!(sweep(&[]).status.success());
    assert!(runtime().1 < 0.4);
    std::fs::write(d.path().join("t"), "0.5").unwrap();
    let o = sweep(&["--fresh"]);
    assert!(text(&o.stderr).contains("1 ran"), "{}", text(&o.stderr));
    let (rows, took) = runtime();
    assert_eq!(rows, 1, "one row per point");
    assert!(took >= 0.5, "the new result: {took}");
    let o = sweep(&[]);
    assert!(
        text(&o.stderr).contains("1 from the cache"),
        "{}",
        text(&o.stderr)
    );
    // A fresh run that fails reports its failure; the finished result stays.
    std::fs::write(d.path().join("t"), "bad").unwrap();
    let o = sweep(&["--fresh"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let o = sweep(&[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("1 from the cache"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(runtime(), (1, took));
}

/// Issue 17: `pitch gc` removes nothing without a selection, and `--dry-run` lists.
#[test]
fn gc_needs_a_selection_and_has_a_dry_run() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &[
            "sweep", "-q", "--param", "n=0..2", "--", "sh", "-c", "exit {n}",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let total = || {
        let o = pitch(d.path(), &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["total"].as_u64().unwrap()
    };
    let o = pitch(d.path(), &["gc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--finished"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(total(), 3);
    let o = pitch(d.path(), &["gc", "--all", "--dry-run"]);
    assert!(
        text(&o.stdout).contains("would remove 3 of 3"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(text(&o.stdout).matches("would remove ").count(), 4);
    assert_eq!(total(), 3);
    let o = pitch(d.path(), &["gc", "--failed"]);
    assert!(
        text(&o.stdout).contains("removed 2 of 3"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(total(), 1);
    let o = pitch(d.path(), &["gc", "no-such-key"]);
    assert_eq!(o.status.code(), Some(2));
    let o = pitch(d.path(), &["results", "--format", "json"]);
    let row: serde_json::Value =
        serde_json::from_str(text(&o.stdout).lines().next().unwrap()).unwrap();
    let key = row["key"].as_str().unwrap();
    let o = pitch(d.path(), &["gc", key]);
    assert!(
        text(&o.stdout).contains("removed 1 of 1"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(total(), 0);
}

/// Issue 17: `pitch run` passes its standard input to the command (local backend), and a
/// forgotten `--` gets a hint with the corrected command line.
#[test]
fn run_passes_stdin_and_hints_at_a_forgotten_separator() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["run", "-q", "--", "cat"])
        .current_dir(d.path())
        .env("HOME", d.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hi\nthere\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "hi\nthere\n");
    for (args, hint) in [
        (&["run", "echo", "hi"][..], "pitch run -- echo hi"),
        (
            &["sweep", "--param", "x=1", "echo", "{x}"][..],
            "pitch sweep --param x=1 -- echo {x}",
        ),
        (&["render", "-q"][..], ""),
    ] {
        let o = pitch(d.path(), args);
        assert_eq!(o.status.code(), Some(2));
        let err = text(&o.stderr);
        if hint.is_empty() {
            assert!(!err.contains("hint"), "{err}");
        } else {
            assert!(
                err.contains(&format!("hint: the command goes after `--`: {hint}")),
                "{err}"
            );
        }
    }
}

/// Issue 17: ranges keep zero padding, `--param-str` gives literal values, `--zip` pairs the
/// `--params-file` rows with the `--param` values, `pitch sweep --help` shows its example's
/// placeholders.
#[test]
fn padding_literals_and_zip_with_a_params_file() {
    let d = tempfile::tempdir().unwrap();
    let points = |args: &[&str]| -> Vec<String> {
        let o = pitch(d.path(), args);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        // The raw text: the parameters' order is what is checked.
        text(&o.stdout)
            .lines()
            .map(|l| {
                let params = &l[l.find("\"params\":{").unwrap() + 10..];
                let params = &params[..params.find('}').unwrap()];
                params
                    .split(',')
                    .map(|kv| kv.replace('"', "").replacen(':', "=", 1))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let got = points(&[
        "sweep", "-q", "--json", "--param", "x=00..03", "--", "echo", "{x}",
    ]);
    assert_eq!(got, ["x=00", "x=01", "x=02", "x=03"]);
    let got = points(&[
        "sweep", "-q", "--json", "--param", "x=8..10", "--", "echo", "{x}",
    ]);
    assert_eq!(got, ["x=8", "x=9", "x=10"]);
    let got = points(&[
        "sweep",
        "-q",
        "--json",
        "--param-str",
        "t=01:30:00",
        "--param",
        "n=1,2",
        "--param-str",
        "t=2-00:00:00",
        "--",
        "echo",
        "{t}",
        "{n}",
    ]);
    assert_eq!(
        got,
        [
            "t=01:30:00 n=1",
            "t=01:30:00 n=2",
            "t=2-00:00:00 n=1",
            "t=2-00:00:00 n=2"
        ]
    );
    std::fs::write(d.path().join("p.csv"), "a\n1\n2\n").unwrap();
    let got = points(&[
        "sweep",
        "-q",
        "--json",
        "--zip",
        "--params-file",
        "p.csv",
        "--param",
        "b=x,y",
        "--",
        "echo",
        "{a}",
        "{b}",
    ]);
    assert_eq!(got, ["a=1 b=x", "a=2 b=y"]);
    let o = pitch(
        d.path(),
        &[
            "sweep",
            "--zip",
            "--params-file",
            "p.csv",
            "--param",
            "b=x,y,z",
            "--",
            "echo",
            "{a}",
            "{b}",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("2 rows"), "{}", text(&o.stderr));
    let help = text(&pitch(d.path(), &["sweep", "--help"]).stdout);
    assert!(help.contains("--steps {steps} --mode {mode}"), "{help}");
}

/// Issue 17: `pitch render --param` renders one point and creates nothing.
#[test]
fn render_takes_a_point_and_creates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch(
        d.path(),
        &[
            "render",
            "--param",
            "n=5",
            "--param-str",
            "t=01:30:00",
            "--",
            "echo",
            "{n}",
            "{t}",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let script = text(&o.stdout);
    assert!(script.contains("exec echo 5 01:30:00"), "{script}");
    assert!(script.contains("PITCH_PARAM_n=5"), "{script}");
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "created something"
    );
    let o = pitch(
        d.path(),
        &["render", "--param", "n=1,2", "--", "echo", "{n}"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("one point"), "{}", text(&o.stderr));
}

/// Issue 17: `PITCH_LOG` (or `RUST_LOG`) prints pitch's `tracing` events on stderr: each task's
/// state changes here (the scheduler commands are checked on the real Slurm); a filter that
/// does not parse is reported, not ignored.
#[test]
fn pitch_log_prints_tracing_events() {
    let d = tempfile::tempdir().unwrap();
    let o = pitch_with(
        d.path(),
        &["run", "-q", "--", "true"],
        &[("PITCH_LOG", "debug")],
    );
    assert!(o.status.success());
    let err = text(&o.stderr);
    for want in ["pitch::task", "Submitted", "Started", "Finished"] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let o = pitch_with(
        d.path(),
        &["run", "-q", "--", "true"],
        &[("RUST_LOG", "pitch=debug")],
    );
    assert!(text(&o.stderr).contains("Finished"), "{}", text(&o.stderr));
    let o = pitch(d.path(), &["run", "-q", "--", "true"]);
    assert_eq!(text(&o.stderr), "", "nothing without PITCH_LOG");
    let o = pitch_with(
        d.path(),
        &["run", "-q", "--", "true"],
        &[("PITCH_LOG", "pitch=[")],
    );
    assert!(
        text(&o.stderr).contains("is not a log filter"),
        "{}",
        text(&o.stderr)
    );
}
