//! Unit tests of `crate::template` (included from template.rs).

use super::*;
use crate::backend::{FLUX_TEMPLATE, SLURM_TEMPLATE};

/// Renders the built-in Slurm template with `ctx`.
fn render_default(ctx: &SlurmScript) -> Result<String, TemplateError> {
    render(SLURM_TEMPLATE.0, SLURM_TEMPLATE.1, ctx)
}
use std::io::Write;
use std::process::{Command, Stdio};

fn minimal() -> SlurmScript {
    SlurmScript {
        job_name: "pitch".into(),
        ntasks: 1,
        cpus_per_task: 1,
        output: "slurm-%j.out".into(),
        command: "pitch-worker run\n".into(),
        ..SlurmScript::default()
    }
}

fn full() -> SlurmScript {
    SlurmScript {
        job_name: "sim run #1".into(),
        array: Some("0-99%10".into()),
        ntasks: 4,
        cpus_per_task: 2,
        gpus_per_task: Some(1),
        nodes: Some(2),
        exclusive: true,
        time: Some("1-00:00:00".into()),
        signal: Some("B:USR1@90".into()),
        requeue: Some(true),
        mem: Some("4G".into()),
        partition: Some("gpu".into()),
        account: Some("proj42".into()),
        qos: Some("normal".into()),
        chdir: Some("/scratch/my dir".into()),
        dependency: Some("afterok:12:13".into()),
        dependencies: vec!["afterok:12".into(), "afterok:13".into()],
        output: "/scratch/out/slurm-%A_%a.out".into(),
        error: Some("/scratch/out/slurm-%A_%a.err".into()),
        slurm_cmd_args: vec!["--constraint=haswell".into(), "--mail-type=END".into()],
        env: vec![
            ("OMP_NUM_THREADS".into(), "2".into()),
            ("GREETING".into(), "it's \"$HOME\"".into()),
        ],
        command: "srun pitch-worker --task \"$SLURM_ARRAY_TASK_ID\"\necho done".into(),
    }
}

/// Runs `bash` with `args`, feeding `script` as a file; returns (success, stdout, stderr).
fn bash(args: &[&str], script: &str) -> (bool, String, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(script.as_bytes()).unwrap();
    let out = Command::new("bash")
        .args(args)
        .arg(file.path())
        .env_remove("GREETING")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn minimal_snapshot() {
    let expected = "#!/bin/bash
#SBATCH --job-name=pitch
#SBATCH --output=slurm-%j.out
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1

set -u
pitch-worker run

";
    assert_eq!(render_default(&minimal()).unwrap(), expected);
}

#[test]
fn full_snapshot() {
    let expected = r#"#!/bin/bash
#SBATCH --job-name="sim run \#1"
#SBATCH --output=/scratch/out/slurm-%A_%a.out
#SBATCH --error=/scratch/out/slurm-%A_%a.err
#SBATCH --array=0-99%10
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=2
#SBATCH --gpus-per-task=1
#SBATCH --nodes=2
#SBATCH --exclusive
#SBATCH --time=1-00:00:00
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --mem=4G
#SBATCH --partition=gpu
#SBATCH --account=proj42
#SBATCH --qos=normal
#SBATCH --chdir="/scratch/my dir"
#SBATCH --dependency=afterok:12:13
#SBATCH --constraint=haswell
#SBATCH --mail-type=END

set -u
export OMP_NUM_THREADS=2
export GREETING='it'\''s "$HOME"'
srun pitch-worker --task "$SLURM_ARRAY_TASK_ID"
echo done
"#;
    assert_eq!(render_default(&full()).unwrap(), expected);
    let no_requeue = SlurmScript {
        requeue: Some(false),
        ..minimal()
    };
    let out = render_default(&no_requeue).unwrap();
    assert!(out.contains("\n#SBATCH --no-requeue\n"), "{out}");
    assert!(!out.contains("--signal"), "{out}");
}

#[test]
fn default_template_is_valid_bash_and_has_no_get_user_env() {
    assert!(!SLURM_TEMPLATE.1.contains("get-user-env\n"));
    for ctx in [minimal(), full()] {
        let script = render_default(&ctx).unwrap();
        assert!(script.starts_with("#!/bin/bash\n#SBATCH --job-name="));
        assert!(!script.contains("get-user-env"));
        let (ok, _, err) = bash(&["-n"], &script);
        assert!(ok, "bash -n rejected:\n{script}\n{err}");
    }
}

#[test]
fn env_values_survive_bash() {
    let values = [
        "two words",
        "it's",
        "say \"hi\"",
        "$HOME and ${PATH} and $(false) and `false`",
        "back\\slash; semi & amp | pipe > gt * ?",
        "line one\nline two",
        "",
        "héllo ☃",
    ];
    let mut ctx = minimal();
    ctx.env = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("V{i}"), (*v).to_owned()))
        .collect();
    ctx.command = (0..values.len())
        .map(|i| format!("printf '%s\\0' \"$V{i}\"\n"))
        .collect();
    let (ok, out, err) = bash(&[], &render_default(&ctx).unwrap());
    assert!(ok, "{err}");
    let got: Vec<&str> = out.split('\0').collect();
    assert_eq!(got[..values.len()], values[..]);
}

#[test]
fn shell_quote_cases() {
    assert_eq!(shell_quote(""), "''");
    assert_eq!(
        shell_quote("abc_XYZ-0.9/a:b=c@d%e+f,g"),
        "abc_XYZ-0.9/a:b=c@d%e+f,g"
    );
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    assert_eq!(shell_quote("'"), "''\\'''");
    assert_eq!(shell_quote("$x"), "'$x'");
    assert_eq!(shell_quote("~"), "'~'");
    assert_eq!(shell_quote("é"), "'é'");
}

#[test]
fn sh_filter_on_hard_strings_round_trips_through_bash() {
    let hard = [
        "",
        "'",
        "''",
        "\\'",
        "a'b\"c",
        "$(echo pwned)",
        "`id`",
        "!",
        "-n",
        "*",
        "~root",
        "\t\n ",
        "%s",
        "#x",
        "{{ x }}",
    ];
    let mut ctx = minimal();
    ctx.env = hard
        .iter()
        .map(|v| ("X".to_owned(), (*v).to_owned()))
        .collect();
    ctx.command = String::new();
    let source = "{% for k, v in env %}printf '%s\\0' {{ v | sh }}\n{% endfor %}\
                  {{ command }}{{ ntasks | sh }} {{ exclusive | sh }}\n";
    let script = render("probe.sh", source, &ctx).unwrap();
    assert!(script.ends_with("\n1 false\n"), "{script}");
    let script = script.replace("\n1 false\n", "\n");
    let (ok, out, err) = bash(&[], &script);
    assert!(ok, "{err}");
    let got: Vec<&str> = out.split('\0').collect();
    assert_eq!(got[..hard.len()], hard[..]);
}

/// sbatch's own `#SBATCH` argument splitter (Slurm 18.08+, `_get_argument`
/// in src/sbatch/opt.c), to check [`sbatch_quote`] against.
fn slurm_split(line: &str) -> Vec<String> {
    let (mut args, mut cur) = (Vec::new(), None::<String>);
    let (mut quote, mut escaped) = (None, false);
    for c in line.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
            continue;
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
                continue;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
            cur.get_or_insert_with(String::new);
            continue;
        } else if c == '#' {
            break;
        } else if c.is_whitespace() {
            args.extend(cur.take());
            continue;
        }
        cur.get_or_insert_with(String::new).push(c);
    }
    assert!(quote.is_none(), "unmatched quote in {line}");
    args.extend(cur);
    args
}

#[test]
fn sbatch_quote_round_trips_through_slurms_parser() {
    assert_eq!(sbatch_quote("gpu").unwrap(), "gpu");
    assert_eq!(sbatch_quote("").unwrap(), "\"\"");
    assert_eq!(sbatch_quote("a b#c").unwrap(), "\"a b\\#c\"");
    for hard in [
        "a b",
        "it's",
        "say \"hi\"",
        "x#y",
        "back\\slash",
        "$HOME",
        "\t",
        "",
    ] {
        let line = format!("--comment={} --exclusive", sbatch_quote(hard).unwrap());
        assert_eq!(
            slurm_split(&line),
            [format!("--comment={hard}"), "--exclusive".into()]
        );
    }
    assert!(matches!(
        sbatch_quote("a\nb"),
        Err(TemplateError::InvalidContext(_))
    ));
    let mut ctx = minimal();
    ctx.partition = Some("debug\n#SBATCH --qos=high".into());
    let err = render_default(&ctx).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    assert!(err.to_string().contains("line break"), "{err}");
}

#[test]
fn unsafe_context_is_rejected() {
    let mut ctx = minimal();
    ctx.env = vec![("X; rm -rf ~".into(), "1".into())];
    let err = render_default(&ctx).unwrap_err();
    assert!(matches!(err, TemplateError::InvalidContext(_)), "{err}");
    let mut ctx = minimal();
    ctx.slurm_cmd_args = vec!["--exclusive\nrm -rf ~".into()];
    let err = render_default(&ctx).unwrap_err();
    assert!(matches!(err, TemplateError::InvalidContext(_)), "{err}");
}

#[test]
fn syntax_error_names_template_and_line() {
    let source = "#!/bin/bash\n#SBATCH --ntasks={{ ntasks }}\n{% if %}\n{{ command }}\n";
    let err = render("site.sh.j2", source, &minimal()).unwrap_err();
    match &err {
        TemplateError::Syntax {
            name,
            line,
            message,
        } => {
            assert_eq!((name.as_str(), *line), ("site.sh.j2", 3));
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("template site.sh.j2, line 3: syntax error"));
}

#[test]
fn undefined_variable_names_line_and_variable() {
    let source = "#!/bin/bash\n{{ command }}\n#SBATCH --partition={{ partiton }}\n";
    let err = render("site.sh.j2", source, &minimal()).unwrap_err();
    let TemplateError::Render { line, message, .. } = &err else {
        panic!("expected a render error, got {err:?}");
    };
    assert_eq!(*line, 3);
    assert!(message.contains("partiton"), "{message}");
    assert!(
        message.contains("partition"),
        "lists the known fields: {message}"
    );
    // Strict: an undefined name is an error even in a condition.
    let err = render(
        "t",
        "{% if partiton %}x{% endif %}{{ command }}",
        &minimal(),
    );
    assert!(
        matches!(err, Err(TemplateError::Render { line: 1, .. })),
        "{err:?}"
    );
}

#[test]
fn template_without_command_is_rejected() {
    let cases = [
        "#!/bin/bash\necho forgot the work\n",
        "#!/bin/bash\n{% if false %}{{ command }}{% endif %}\n",
        "#!/bin/bash\n{{ command | upper }}\n",
        "#!/bin/bash\n{% set command = 'true' %}{{ command }}\n",
    ];
    for source in cases {
        let err = render("mine.sh", source, &minimal()).unwrap_err();
        assert!(matches!(&err, TemplateError::MissingCommand { name } if name == "mine.sh"));
        assert!(err.to_string().contains("never uses `command`"), "{err}");
    }
}

#[test]
fn custom_template_is_not_html_escaped_and_keeps_trailing_newline() {
    let mut ctx = minimal();
    ctx.command = "a < b && echo '<ok>'".into();
    let out = render("page.html", "{{ command }}\n", &ctx).unwrap();
    assert_eq!(out, "a < b && echo '<ok>'\n");
    assert_eq!(render("t", "{{ command }}", &ctx).unwrap(), ctx.command);
}

#[test]
fn none_is_refused_by_the_filters() {
    let err = render("t", "{{ command }}{{ error | sh }}", &minimal()).unwrap_err();
    assert!(err.to_string().contains("got none"), "{err}");
}

fn render_flux(ctx: &SlurmScript) -> Result<String, TemplateError> {
    render(FLUX_TEMPLATE.0, FLUX_TEMPLATE.1, ctx)
}

#[test]
fn flux_template_minimal() {
    let out = render_flux(&minimal()).unwrap();
    let directives: Vec<&str> = out.lines().filter(|l| l.starts_with("# flux:")).collect();
    assert_eq!(
        directives,
        [
            "# flux: --job-name=pitch",
            "# flux: --output=slurm-%j.out",
            "# flux: --nslots=1",
            "# flux: --cores-per-slot=1",
        ]
    );
    assert!(out.starts_with("#!/bin/bash\n"), "{out}");
    assert!(out.contains("\n\nset -u\npitch-worker run\n"), "{out}");
}

#[test]
fn flux_template_full_quotes_directive_values_as_shell_words() {
    let mut ctx = full();
    ctx.time = Some("90s".into());
    ctx.signal = Some("SIGUSR1@30s".into());
    ctx.requeue = None;
    ctx.partition = Some("debug queue".into());
    let out = render_flux(&ctx).unwrap();
    for line in [
        "# flux: --job-name='sim run #1'",
        "# flux: --nslots=4",
        "# flux: --cores-per-slot=2",
        "# flux: --gpus-per-slot=1",
        "# flux: --nodes=2",
        "# flux: --exclusive",
        "# flux: --time-limit=90s",
        "# flux: --signal=SIGUSR1@30s",
        "# flux: --queue='debug queue'",
        "# flux: --bank=proj42",
        "# flux: --dependency=afterok:12",
        "# flux: --dependency=afterok:13",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    // Slurm's own settings never reach a Flux script.
    for slurm_only in ["--mem", "--qos", "--array", "#SBATCH", "--constraint"] {
        assert!(!out.contains(slurm_only), "{slurm_only} in\n{out}");
    }
    let mut ctx = minimal();
    ctx.partition = Some("a\nb".into());
    let err = render_flux(&ctx).unwrap_err().to_string();
    assert!(err.contains("cannot be put on a `# flux:` line"), "{err}");
}

#[test]
fn ansi_c_quote_is_one_line_that_bash_reads_back_byte_for_byte() {
    let values = [
        "",
        "plain",
        "line1\nline2\n",
        "tab\there\r\n",
        "quotes ' \" `back` $HOME ${x} $(date)",
        "backslash \\ \\n \\\\ and % %% %j 100%",
        "\u{1}\u{7f} control, then é ü 漢字",
        "trailing backslash \\",
    ];
    for v in values {
        let word = ansi_c_quote(v);
        assert!(!word.contains('\n') && !word.contains('\r'), "{word}");
        let out = Command::new("bash")
            .args(["-c", "eval \"v=$1\"; printf %s \"$v\"", "bash", &word])
            .output()
            .unwrap();
        assert!(out.status.success(), "{word}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), v, "{word}");
    }
}

#[test]
fn slurm_filenames_keep_a_literal_directory_literal() {
    assert_eq!(
        slurm_filename_in("/c/jobs", "slurm-%j.out"),
        "/c/jobs/slurm-%j.out"
    );
    assert_eq!(
        slurm_filename_in("/c/100%j/jobs/", "slurm-%A.out"),
        "/c/100%%j/jobs/slurm-%A.out"
    );
    // A backslash makes Slurm take the whole value literally, dropping each backslash.
    assert_eq!(
        slurm_filename_in("/c/a\\b%/jobs", "slurm-%j.out"),
        "/c/a\\\\b%/jobs/slurm-%j.out"
    );
}
