use super::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn full() -> Resources {
    Resources::new()
        .cores(4)
        .threads_per_core(2)
        .gpus_per_core(1)
        .cwd("/scratch")
        .env("A", "1")
        .env("B", "x=y")
        .num_nodes(2)
        .exclusive(true)
        .run_time_max(secs(5400))
        .memory_max(4 * GIB)
        .partition("gpu")
        .account("proj")
        .qos("high")
        .slurm_cmd_arg("--x")
        .slurm_cmd_arg("--y")
        .openmpi_oversubscribe(false)
        .error_log_file("err.log")
}

#[test]
fn builder_and_effective_values() {
    let r = full();
    assert_eq!((r.ranks(), r.threads(), r.slots(), r.nodes()), (4, 2, 8, 2));
    assert_eq!(r.slurm_cmd_args, ["--x", "--y"]);
    assert_eq!(r.clone().slurm_cmd_args(["--z"]).slurm_cmd_args, ["--z"]);
    assert_eq!(r.cwd, Some(PathBuf::from("/scratch")));
    assert_eq!(r.env["B"], "x=y");
    let d = Resources::new();
    assert_eq!((d.ranks(), d.threads(), d.slots(), d.nodes()), (1, 1, 1, 1));
    let big = Resources::new().cores(u32::MAX).threads_per_core(2);
    assert_eq!(big.slots(), u32::MAX);
}

#[test]
fn merge_semantics() {
    let base = Resources::new()
        .cores(2)
        .partition("cpu")
        .env("A", "base")
        .env("B", "base");
    let base = base.slurm_cmd_arg("--base");
    let over = Resources::new()
        .cores(8)
        .qos("low")
        .env("B", "over")
        .env("C", "over");
    let over = over.slurm_cmd_arg("--over");
    let m = base.merged(&over);
    assert_eq!(
        (m.cores, m.partition.as_deref(), m.qos.as_deref()),
        (Some(8), Some("cpu"), Some("low"))
    );
    assert_eq!(
        (&m.env["A"], &m.env["B"], &m.env["C"]),
        (&"base".into(), &"over".into(), &"over".into())
    );
    assert_eq!(m.slurm_cmd_args, ["--base", "--over"]);
    assert_eq!(base.merged(&Resources::new()), base);
    assert_eq!(Resources::new().merged(&over), over);
    assert_eq!(Resources::new().merged(&full()), full());
}

#[test]
fn set_from_text() {
    let mut r = Resources::new();
    let pairs = "cores=4 threads_per_core=2 gpus_per_core=1 cwd=/scratch env=A=1 env=B=x=y \
        num_nodes=2 exclusive=yes run_time_max=1h30m memory_max=4G partition=gpu account=proj \
        qos=high slurm_cmd_args=--x slurm_cmd_args=--y openmpi_oversubscribe=0 \
        error_log_file=err.log";
    for pair in pairs.split_whitespace() {
        let (k, v) = pair.split_once('=').unwrap();
        r.set(k, v).unwrap();
    }
    assert_eq!(r, full());
    for (v, b) in [
        ("TRUE", true),
        ("false", false),
        ("No", false),
        (" 1 ", true),
    ] {
        r.set("exclusive", v).unwrap();
        assert_eq!(r.exclusive, Some(b));
    }
    r.set("cores", " 8 ").unwrap();
    assert_eq!(r.cores, Some(8));
}

#[test]
fn set_errors() {
    let mut r = Resources::new();
    let e = r.set("corez", "4").unwrap_err();
    assert!(matches!(&e, ResourceError::UnknownKey { key, .. } if key == "corez"));
    let msg = e.to_string();
    assert!(msg.contains("\"corez\"") && RESOURCE_KEYS.iter().all(|k| msg.contains(k)));
    let set_err = |k: &str, v: &str| Resources::new().set(k, v).unwrap_err().to_string();
    assert!(set_err("cores", "-1").starts_with("invalid cores \"-1\": expected a whole"));
    assert!(set_err("num_nodes", "4294967296").contains("4294967295"));
    assert!(set_err("exclusive", "maybe").contains("yes/no"));
    assert!(set_err("env", "NOEQUALS").contains("K=V"));
    assert!(set_err("env", "=v").contains("empty"));
    let e = set_err("run_time_max", "60");
    assert!(
        e.starts_with("invalid run_time_max \"60\"") && e.contains("add a unit"),
        "{e}"
    );
    assert!(set_err("memory_max", "4096").starts_with("invalid memory_max \"4096\""));
    assert_eq!(r, Resources::new());
}

#[test]
fn validate_basic_checks() {
    assert!(full().validate_basic().is_ok());
    assert!(Resources::new().gpus_per_core(0).validate_basic().is_ok());
    let cases = [
        (Resources::new().cores(0), "cores"),
        (Resources::new().threads_per_core(0), "threads_per_core"),
        (Resources::new().num_nodes(0), "num_nodes"),
        (
            Resources::new().run_time_max(Duration::ZERO),
            "run_time_max",
        ),
        (Resources::new().memory_max(0), "memory_max"),
    ];
    for (r, field) in cases {
        let e = r.validate_basic().unwrap_err();
        assert_eq!(e, ResourceError::Zero { field });
        assert_eq!(e.to_string(), format!("{field} must be at least 1, got 0"));
    }
    let env_err = |k: &str| {
        Resources::new()
            .env(k, "v")
            .validate_basic()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(env_err(""), "invalid env \"\": variable name is empty");
    // Names must be shell identifiers: the Slurm and Flux job scripts export them with bash.
    for bad in ["A=B", "A\0", "MY-VAR", "1A", "A B", "É"] {
        let e = env_err(bad);
        assert!(
            e.starts_with(&format!(
                "invalid env {bad:?}: variable name is not a shell identifier"
            )),
            "{e}"
        );
    }
    for good in ["A", "_x1", "MY_VAR", "a1"] {
        Resources::new().env(good, "v").validate_basic().unwrap();
    }
}

#[test]
fn toml_deserialize() {
    let text = r#"
        cores = 4
        run_time_max = "01:30:00"
        memory_max = "4G"
        exclusive = true
        slurm_cmd_args = ["--a"]
        env = { OMP_NUM_THREADS = "2" }
    "#;
    let r: Resources = toml::from_str(text).unwrap();
    assert_eq!(
        (r.cores, r.exclusive, r.threads_per_core),
        (Some(4), Some(true), None)
    );
    assert_eq!(
        (r.run_time_max, r.memory_max),
        (Some(secs(5400)), Some(4 * GIB))
    );
    assert_eq!(
        (&r.env["OMP_NUM_THREADS"], &r.slurm_cmd_args[..]),
        (&"2".into(), &["--a".into()][..])
    );
    let r: Resources = toml::from_str("run_time_max = 90\nmemory_max = 1024").unwrap();
    assert_eq!((r.run_time_max, r.memory_max), (Some(secs(90)), Some(1024)));
    assert_eq!(toml::from_str::<Resources>("").unwrap(), Resources::new());
}

#[test]
fn toml_errors() {
    let cases = [
        ("cores = 1\nmemory_maxx = \"4G\"", "memory_maxx"),
        ("run_time_max = \"60\"", "add a unit"),
        ("run_time_max = -5", "negative"),
        ("memory_max = 1.5", "non-negative integer"),
        ("memory_max = \"1Q\"", "unknown unit"),
        ("cores = \"4\"", "u32"),
    ];
    for (text, want) in cases {
        let e = toml::from_str::<Resources>(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn serde_round_trip() {
    let odd = full()
        .run_time_max(Duration::from_millis(5_400_250))
        .memory_max(1536 * MIB + 1);
    for r in [full(), odd.clone(), Resources::new()] {
        let text = toml::to_string(&r).unwrap();
        assert_eq!(toml::from_str::<Resources>(&text).unwrap(), r, "{text}");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            serde_json::from_str::<Resources>(&json).unwrap(),
            r,
            "{json}"
        );
    }
    let text = toml::to_string(&full()).unwrap();
    assert!(text.contains("run_time_max = \"5400s\"") && text.contains("memory_max = \"4G\""));
    let text = toml::to_string(&odd).unwrap();
    assert!(
        text.contains("\"5400.25s\"") && text.contains("\"1610612737B\""),
        "{text}"
    );
    assert_eq!(serde_json::to_string(&Resources::new()).unwrap(), "{}");
    let json = r#"{"run_time_max": null, "memory_max": 2048, "cores": 2}"#;
    let want = Resources::new().cores(2).memory_max(2048);
    assert_eq!(serde_json::from_str::<Resources>(json).unwrap(), want);
}

#[test]
fn set_keys_names_exactly_the_keys_set() {
    let samples = [
        ("cores", "2"),
        ("threads_per_core", "2"),
        ("gpus_per_core", "1"),
        ("cwd", "/tmp"),
        ("env", "A=1"),
        ("num_nodes", "2"),
        ("exclusive", "true"),
        ("run_time_max", "90s"),
        ("memory_max", "4G"),
        ("partition", "p"),
        ("account", "a"),
        ("qos", "q"),
        ("slurm_cmd_args", "--x"),
        ("openmpi_oversubscribe", "true"),
        ("error_log_file", "/tmp/e"),
        ("max_retries", "2"),
        ("retry_on", "timeout,error"),
        ("retry_backoff", "10s"),
        ("checkpoint_grace", "2m"),
        ("requeue", "no"),
    ];
    assert_eq!(samples.len(), RESOURCE_KEYS.len());
    assert!(Resources::new().set_keys(RESOURCE_KEYS).is_empty());
    for (key, value) in samples {
        let mut r = Resources::new();
        r.set(key, value).unwrap();
        assert_eq!(r.set_keys(RESOURCE_KEYS), [key], "{key}");
    }
    let r = Resources::new().qos("q").partition("p");
    assert_eq!(
        r.set_keys(&["partition", "account", "qos"]),
        ["partition", "qos"]
    );
}

#[test]
fn retry_on_reads_names_and_all_and_names_a_wrong_one() {
    use crate::resources::RetryOn;
    assert_eq!(
        RetryOn::parse_list("timeout, error,timeout").unwrap(),
        [RetryOn::Error, RetryOn::Timeout]
    );
    assert_eq!(RetryOn::parse_list("all").unwrap(), RetryOn::ALL);
    let e = RetryOn::parse_list("timeout,oom").unwrap_err().to_string();
    assert!(
        e.contains("retry_on") && e.contains("\"oom\"") && e.contains("out_of_memory"),
        "{e}"
    );
    let r: Resources = toml::from_str(
        "retry_on = [\"timeout\"]\nmax_retries = 3\nretry_backoff = \"1m\"\ncheckpoint_grace = 90",
    )
    .unwrap();
    assert_eq!(r.retry_on, [RetryOn::Timeout]);
    assert_eq!(r.max_retries, Some(3));
    assert_eq!(r.retry_backoff, Some(Duration::from_secs(60)));
    assert_eq!(r.checkpoint_grace, Some(Duration::from_secs(90)));
    let zero = Resources::new().checkpoint_grace(Duration::ZERO);
    assert!(zero.validate_basic().is_err());
}

#[test]
fn a_checkpoint_grace_not_shorter_than_the_time_limit_is_refused_naming_both() {
    let r = |grace, limit| {
        Resources::new()
            .checkpoint_grace(secs(grace))
            .run_time_max(secs(limit))
            .validate_basic()
    };
    assert!(r(90, 120).is_ok());
    // Without a time limit there is nothing to check (Slurm's partition limit may apply).
    assert!(Resources::new()
        .checkpoint_grace(secs(90))
        .validate_basic()
        .is_ok());
    for (grace, limit) in [(60, 60), (120, 60)] {
        let e = r(grace, limit).unwrap_err().to_string();
        assert!(
            e.contains(&format!("checkpoint_grace ({grace}s)"))
                && e.contains(&format!("run_time_max ({limit}s)")),
            "{e}"
        );
    }
}
