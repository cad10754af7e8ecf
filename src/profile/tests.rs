use super::*;

use std::fs;

const VALID: &str = r#"# pitch profiles
[profile.laptop]
backend = "single-node"
cache_directory = "pitch-cache"
max_cores = 4
max_workers = 2

[profile.cluster]
backend = "slurm"
cache_directory = "/scratch/me/pitch"
template = "slurm.sh.j2"
max_jobs = 500
tasks_per_job = 10
array_throttle = 50
poll_interval = "5s"

[profile.cluster.resources]
partition = "short"
run_time_max = "01:00:00"
memory_max = "4G"
cores = 1
"#;

/// Writes `text` as `pitch.toml` in a fresh directory.
fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONFIG_FILE_NAME);
    fs::write(&path, text).unwrap();
    (dir, path)
}

/// Loads `text` and asserts it fails with an [`ProfileError::Invalid`] at
/// `line` for `key`, whose message contains every fragment of `wants`.
fn rejects(text: &str, line: usize, key: &str, wants: &[&str]) {
    let (_dir, path) = write(text);
    let err = load(&path).unwrap_err();
    let msg = err.to_string();
    match &err {
        ProfileError::Invalid {
            path: p,
            line: l,
            key: k,
            ..
        } => {
            assert_eq!(p, &path, "{msg}");
            assert_eq!(*l, Some(line), "{msg}");
            assert_eq!(k, key, "{msg}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let prefix = format!("{}:{line}: {key}: ", path.display());
    assert!(msg.starts_with(&prefix), "{msg:?} lacks prefix {prefix:?}");
    for want in wants {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn loads_two_profiles_and_resolves_relative_paths() {
    let (dir, path) = write(VALID);
    let profiles = load(&path).unwrap();
    assert_eq!(profiles.names(), ["cluster", "laptop"]);
    assert_eq!(profiles.source(), path);
    assert!(!profiles.is_empty());

    let laptop = profiles.get("laptop").unwrap();
    assert_eq!(
        laptop,
        &Profile {
            name: "laptop".into(),
            backend: BackendKind::SingleNode,
            cache_directory: Some(dir.path().join("pitch-cache")),
            max_cores: Some(4),
            max_workers: Some(2),
            source: path.clone(),
            ..Profile::default()
        }
    );

    let cluster = profiles.get("cluster").unwrap();
    assert_eq!(cluster.backend, BackendKind::Slurm);
    assert_eq!(
        cluster.cache_directory.as_deref(),
        Some(Path::new("/scratch/me/pitch"))
    );
    assert_eq!(cluster.template, Some(dir.path().join("slurm.sh.j2")));
    assert_eq!(cluster.max_jobs, Some(500));
    assert_eq!(cluster.tasks_per_job, Some(10));
    assert_eq!(cluster.array_throttle, Some(50));
    assert_eq!(cluster.poll_interval, Some(Duration::from_secs(5)));
    assert_eq!(cluster.max_cores, None);
    assert_eq!(
        cluster.resources,
        Resources::new()
            .partition("short")
            .run_time_max(Duration::from_secs(3600))
            .memory_max(4 << 30)
            .cores(1)
    );
    assert_eq!(profiles.iter().count(), 2);
}

#[test]
fn defaults_and_alternative_forms() {
    let text = "[profile.a]\npoll_interval = 7\n\n[profile.b]\nbackend = \"slurm-job\"\n\
                poll_interval = \"00:00:05\"\nresources = { cores = 2, memory_max = \"512M\" }\n\n\
                [profile.c]\nbackend = \"flux-job\"\nmax_cores = 3\n";
    let (_dir, path) = write(text);
    let profiles = load(&path).unwrap();
    let a = profiles.get("a").unwrap();
    assert_eq!(a.backend, BackendKind::SingleNode);
    assert_eq!(a.poll_interval, Some(Duration::from_secs(7)));
    assert_eq!(a.resources, Resources::default());
    let b = profiles.get("b").unwrap();
    assert_eq!(b.backend, BackendKind::SlurmJob);
    assert_eq!(b.poll_interval, Some(Duration::from_secs(5)));
    assert_eq!(b.resources, Resources::new().cores(2).memory_max(512 << 20));
    let c = profiles.get("c").unwrap();
    assert_eq!(c.backend, BackendKind::FluxJob);
    assert_eq!(c.max_cores, Some(3));
}

#[test]
fn empty_file_has_no_profiles() {
    let (_dir, path) = write("# nothing yet\n");
    let profiles = load(&path).unwrap();
    assert!(profiles.is_empty());
    let msg = profiles.get("laptop").unwrap_err().to_string();
    assert!(msg.contains("defined profiles: (none)"), "{msg}");
}

#[test]
fn empty_paths_are_refused_with_their_line() {
    rejects(
        "[profile.a]\nmax_cores = 2\ncache_directory = \"\"\n",
        3,
        "profile.a.cache_directory",
        &["empty path", "pitch.toml"],
    );
    rejects(
        "[profile.a]\ntemplate = \"\"\n",
        2,
        "profile.a.template",
        &["empty path"],
    );
}

#[test]
fn unknown_key_at_top_level() {
    rejects(
        "[profile.a]\nmax_cores = 2\n\n[profiles.b]\nmax_cores = 2\n",
        4,
        "profiles",
        &["unknown field `profiles`", "pitch.toml"],
    );
    rejects(
        "# c\nverbose = true\n",
        2,
        "verbose",
        &["unknown field `verbose`"],
    );
}

#[test]
fn unknown_key_in_profile() {
    rejects(
        VALID.replace("max_workers = 2", "max_worker = 2").as_str(),
        6,
        "profile.laptop.max_worker",
        &["unknown field `max_worker`", "max_workers"],
    );
    // An unknown sub-table of a profile.
    rejects(
        "[profile.a]\nmax_cores = 2\n[profile.a.resource]\ncores = 1\n",
        3,
        "profile.a.resource",
        &["unknown field `resource`"],
    );
}

#[test]
fn unknown_key_in_resources() {
    rejects(
        VALID.replace("cores = 1", "core = 1").as_str(),
        21,
        "profile.cluster.resources.core",
        &["unknown field `core`", "cores"],
    );
    rejects(
        "[profile.a]\n\nresources = { cores = 1, mem = \"4G\" }\n",
        3,
        "profile.a.resources.mem",
        &["unknown field `mem`"],
    );
}

#[test]
fn bad_backend_lists_valid_ones() {
    rejects(
        VALID.replace("\"slurm\"", "\"lsf\"").as_str(),
        9,
        "profile.cluster.backend",
        &[
            "unknown backend \"lsf\"",
            "single-node, slurm, slurm-job, flux, flux-job",
        ],
    );
}

#[test]
fn bad_duration_text() {
    rejects(
        VALID.replace("\"5s\"", "\"5 parsecs\"").as_str(),
        15,
        "profile.cluster.poll_interval",
        &["5 parsecs"],
    );
    rejects(
        VALID.replace("\"01:00:00\"", "\"an hour\"").as_str(),
        19,
        "profile.cluster.resources.run_time_max",
        &["invalid run_time_max \"an hour\""],
    );
}

#[test]
fn bad_memory_text() {
    rejects(
        VALID.replace("\"4G\"", "\"4 gallons\"").as_str(),
        20,
        "profile.cluster.resources.memory_max",
        &["invalid memory_max \"4 gallons\""],
    );
}

#[test]
fn wrong_types() {
    rejects(
        VALID
            .replace("max_cores = 4", "max_cores = \"four\"")
            .as_str(),
        5,
        "profile.laptop.max_cores",
        &["invalid type", "\"four\""],
    );
    rejects(
        VALID.replace("max_jobs = 500", "max_jobs = -1").as_str(),
        12,
        "profile.cluster.max_jobs",
        &["-1"],
    );
    rejects("profile = 3\n", 1, "profile", &["invalid type"]);
}

#[test]
fn zero_counts_are_rejected_at_their_line() {
    rejects(
        VALID.replace("max_jobs = 500", "max_jobs = 0").as_str(),
        12,
        "profile.cluster.max_jobs",
        &["must be at least 1, got 0"],
    );
    rejects(
        VALID.replace("max_cores = 4", "max_cores = 0").as_str(),
        5,
        "profile.laptop.max_cores",
        &["at least 1"],
    );
    rejects(
        VALID
            .replace("tasks_per_job = 10", "tasks_per_job = 0")
            .as_str(),
        13,
        "profile.cluster.tasks_per_job",
        &["at least 1"],
    );
    rejects(
        VALID.replace("\"5s\"", "\"0s\"").as_str(),
        15,
        "profile.cluster.poll_interval",
        &["longer than zero"],
    );
}

#[test]
fn zero_resources_are_rejected_at_their_line() {
    rejects(
        VALID.replace("cores = 1", "cores = 0").as_str(),
        21,
        "profile.cluster.resources.cores",
        &["cores must be at least 1"],
    );
    rejects(
        "[profile.a]\nmax_cores = 1\nresources = { cores = 1, memory_max = 0 }\n",
        3,
        "profile.a.resources.memory_max",
        &["memory_max must be at least 1"],
    );
    rejects(
        "[profile]\na.max_cores = 1\na.resources.cores = 1\na.resources.num_nodes = 0\n",
        4,
        "profile.a.resources.num_nodes",
        &["num_nodes must be at least 1"],
    );
}

#[test]
fn syntax_error_has_a_line() {
    let (_dir, path) = write("[profile.a]\nmax_cores = 1\n[profile.b\n");
    let err = load(&path).unwrap_err();
    let ProfileError::Invalid { line, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*line, Some(3), "{err}");
    assert!(err.to_string().contains("pitch.toml:3: "), "{err}");
}

#[test]
fn missing_profile_names_file_and_lists_profiles() {
    let (_dir, path) = write(VALID);
    let profiles = load(&path).unwrap();
    let err = profiles.get("gpu").unwrap_err();
    assert!(matches!(err, ProfileError::MissingProfile { .. }));
    let msg = err.to_string();
    for want in [
        path.display().to_string().as_str(),
        "\"gpu\"",
        "[profile.gpu]",
        "defined profiles: cluster, laptop",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, ProfileError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn backend_kind_text_round_trips() {
    for kind in BackendKind::ALL {
        assert_eq!(kind.to_string().parse::<BackendKind>(), Ok(kind));
    }
    assert_eq!(BackendKind::default(), BackendKind::SingleNode);
    let err = "pbs".parse::<BackendKind>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown backend \"pbs\"; valid backends: single-node, slurm, slurm-job, flux, flux-job"
    );
    assert_eq!("flux".parse::<BackendKind>(), Ok(BackendKind::Flux));
    assert_eq!("flux-job".parse::<BackendKind>(), Ok(BackendKind::FluxJob));
    assert_eq!(BackendKind::ALL.len(), 5);
}

/// A cwd, an XDG config home and a HOME, each with or without a pitch.toml.
struct Dirs {
    _root: tempfile::TempDir,
    cwd: PathBuf,
    xdg: PathBuf,
    home: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let [cwd, xdg, home] = ["cwd", "xdg", "home"].map(|d| root.path().join(d));
        for d in [&cwd, &xdg, &home] {
            fs::create_dir_all(d).unwrap();
        }
        Dirs {
            _root: root,
            cwd,
            xdg,
            home,
        }
    }

    fn cwd_file(&self) -> PathBuf {
        self.cwd.join("pitch.toml")
    }

    fn xdg_file(&self) -> PathBuf {
        self.xdg.join("pitch/pitch.toml")
    }

    fn home_file(&self) -> PathBuf {
        self.home.join(".config/pitch/pitch.toml")
    }

    fn put(&self, file: &Path, text: &str) {
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, text).unwrap();
    }

    fn find(&self) -> Option<PathBuf> {
        find_config_with(&self.cwd, Some(&self.xdg), Some(&self.home))
    }
}

#[test]
fn find_config_precedence() {
    let d = Dirs::new();
    assert_eq!(d.find(), None);
    d.put(&d.home_file(), "");
    assert_eq!(d.find(), Some(d.home_file()));
    d.put(&d.xdg_file(), "");
    assert_eq!(d.find(), Some(d.xdg_file()));
    d.put(&d.cwd_file(), "");
    assert_eq!(d.find(), Some(d.cwd_file()));

    // Unset or relative XDG_CONFIG_HOME falls through to HOME.
    let home_only = find_config_with(Path::new("/nonexistent"), None, Some(&d.home));
    assert_eq!(home_only, Some(d.home_file()));
    let relative = find_config_with(Path::new("/nonexistent"), Some(Path::new("xdg")), None);
    assert_eq!(relative, None);
    assert_eq!(
        find_config_with(Path::new("/nonexistent"), None, None),
        None
    );
}

#[test]
fn load_named_finds_and_selects() {
    let d = Dirs::new();
    let err = load_named_with("laptop", &d.cwd, Some(&d.xdg), Some(&d.home)).unwrap_err();
    let msg = err.to_string();
    for file in [d.cwd_file(), d.xdg_file(), d.home_file()] {
        assert!(msg.contains(&file.display().to_string()), "{msg}");
    }
    assert!(msg.starts_with("no pitch.toml found"), "{msg}");

    d.put(&d.xdg_file(), VALID);
    let laptop = load_named_with("laptop", &d.cwd, Some(&d.xdg), Some(&d.home)).unwrap();
    assert_eq!(laptop.source, d.xdg_file());
    assert_eq!(
        laptop.cache_directory,
        Some(d.xdg.join("pitch/pitch-cache"))
    );

    let err = load_named_with("gpu", &d.cwd, Some(&d.xdg), Some(&d.home)).unwrap_err();
    assert!(err.to_string().contains("cluster, laptop"), "{err}");
}

const REMOTE: &str = r#"[profile.far]
backend = "slurm"
[profile.far.remote]
host = "login.example.org"
directory = "/scratch/me/pitch-cache"
port = 2222
user = "me"
identity_file = "~/.ssh/id_ed25519"
known_hosts = "/etc/ssh/ssh_known_hosts"
timeout = "30s"
ssh_config = "~/.ssh/config-cluster"
client = "system"
path = ["/opt/flux/bin"]
env = { FLUX_URI = "local:///run/flux/local" }
"#;

#[test]
fn remote_table_is_read_with_home_expanded() {
    let (_dir, path) = write(REMOTE);
    let p = load(&path).unwrap().get("far").unwrap().clone();
    let r = p.remote.expect("a remote table");
    assert_eq!(r.host, "login.example.org");
    assert_eq!(r.directory, Path::new("/scratch/me/pitch-cache"));
    assert_eq!((r.port, r.user.as_deref()), (Some(2222), Some("me")));
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
    assert_eq!(r.identity_file, Some(home.join(".ssh/id_ed25519")));
    assert_eq!(
        r.known_hosts,
        Some(PathBuf::from("/etc/ssh/ssh_known_hosts"))
    );
    assert_eq!(r.timeout, Some(Duration::from_secs(30)));
    assert_eq!(r.ssh_config, Some(home.join(".ssh/config-cluster")));
    assert_eq!(r.client, crate::backend::transport::SshClient::System);
    assert_eq!(r.path, vec![PathBuf::from("/opt/flux/bin")]);
    assert_eq!(
        r.env,
        vec![(
            "FLUX_URI".to_string(),
            "local:///run/flux/local".to_string()
        )]
    );
    // Without the key: the system's ssh when there is one, else the built-in client.
    let (_dir, path) = write(&REMOTE.replace("client = \"system\"\n", ""));
    let p = load(&path).unwrap().get("far").unwrap().clone();
    assert_eq!(
        p.remote.unwrap().client,
        crate::backend::transport::SshClient::Auto
    );
}

#[test]
fn remote_table_rejects_unknown_and_missing_keys() {
    rejects(
        &REMOTE.replace("port = 2222", "prot = 2222"),
        6,
        "profile.far.remote.prot",
        &["unknown field `prot`"],
    );
    rejects(
        &REMOTE.replace("client = \"system\"", "client = \"putty\""),
        12,
        "profile.far.remote.client",
        &["unknown variant `putty`", "`auto`, `system`, `builtin`"],
    );
    let (_dir, path) = write(&REMOTE.replace("host = \"login.example.org\"\n", ""));
    let msg = load(&path).unwrap_err().to_string();
    assert!(msg.contains("missing field `host`"), "{msg}");
}

#[cfg(not(feature = "remote"))]
#[test]
fn remote_profile_without_the_feature_is_refused() {
    let (_dir, path) = write(REMOTE);
    let p = load(&path).unwrap().get("far").unwrap().clone();
    let Err(err) = crate::Executor::from_settings(&p, Vec::new()) else {
        panic!("built an executor");
    };
    let err = err.to_string();
    assert!(
        err.contains("built without the `remote` feature") && err.contains("login.example.org"),
        "{err}"
    );
}

#[test]
fn remote_on_a_process_backend_is_refused() {
    let (_dir, path) = write(&REMOTE.replace("backend = \"slurm\"", "backend = \"single-node\""));
    let p = load(&path).unwrap().get("far").unwrap().clone();
    let Err(err) = crate::Executor::from_settings(&p, Vec::new()) else {
        panic!("built an executor");
    };
    let err = err.to_string();
    assert!(
        err.contains("remote") && err.contains("single-node"),
        "{err}"
    );
}
