//! Batch-script templating: [`render`] turns a [`SlurmScript`] context into
//! the text handed to `sbatch` (or `flux batch`), using the scheduler's built-in
//! template (`templates/slurm.sh.j2`, `templates/flux.sh.j2`, held by each
//! scheduler's dialect under `backend/`) or a user's own minijinja (Jinja2)
//! template.
//!
//! Templates are rendered with strict undefined behaviour (a misspelt variable
//! is an error, reported with template name and line) and keep their trailing
//! newline. Three filters are registered:
//!
//! * `sh` ([`shell_quote`]): POSIX single-quote quoting for the bash part of
//!   the script, e.g. `export NAME={{ value | sh }}`;
//! * `sbatch` ([`sbatch_quote`]): quoting for values on `#SBATCH` lines, which
//!   Slurm parses with its own rules rather than bash's;
//! * `flux`: shell words for `# flux:` directive lines (no line breaks).
//!
//! A template must render `{{ command }}` verbatim; one that drops the work is
//! rejected with [`TemplateError::MissingCommand`].

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

/// Everything a Slurm batch-script template can use.
///
/// Serialized field by field into the template context; optional fields are
/// `none` in the template when unset. Text fields that end up on `#SBATCH`
/// lines are expected to already be in Slurm syntax.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SlurmScript {
    /// `--job-name`.
    pub job_name: String,
    /// `--array` specification, e.g. `"0-99%10"`.
    pub array: Option<String>,
    /// `--ntasks`: number of tasks (cores, MPI ranks).
    pub ntasks: u32,
    /// `--cpus-per-task`: threads per task.
    pub cpus_per_task: u32,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--exclusive` when true.
    pub exclusive: bool,
    /// `--time` in the scheduler's syntax (Slurm: `"HH:MM:SS"` or `"D-HH:MM:SS"`; Flux:
    /// `"90s"`).
    pub time: Option<String>,
    /// `--signal`: the warning signal before the time limit, in the scheduler's syntax
    /// (Slurm: `"B:USR1@90"`; Flux: `"SIGUSR1@90s"`), from `checkpoint_grace`.
    pub signal: Option<String>,
    /// `--requeue` when true, `--no-requeue` when false (Slurm).
    pub requeue: Option<bool>,
    /// `--mem` in Slurm syntax (`"4G"`, `"1536M"`).
    pub mem: Option<String>,
    /// `--partition` (Flux: `--queue`).
    pub partition: Option<String>,
    /// `--account` (Flux: `--bank`).
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--chdir`: working directory of the job.
    pub chdir: Option<String>,
    /// `--dependency`, e.g. `"afterok:12:13"` (Slurm: all dependencies in one).
    pub dependency: Option<String>,
    /// The same dependencies one by one, e.g. `["afterok:12", "afterok:13"]` (Flux takes one
    /// per `--dependency`).
    pub dependencies: Vec<String>,
    /// `--output` path pattern, e.g. `".../slurm-%A_%a.out"`.
    pub output: String,
    /// `--error` path pattern; stderr goes to `output` when unset.
    pub error: Option<String>,
    /// Extra sbatch options, each rendered verbatim as its own `#SBATCH` line
    /// (e.g. `"--constraint=haswell"`). Must not contain line breaks.
    pub slurm_cmd_args: Vec<String>,
    /// Environment variables exported in the script body, values shell quoted.
    /// Names must be shell identifiers (`[A-Za-z_][A-Za-z0-9_]*`).
    pub env: Vec<(String, String)>,
    /// The bash that runs the work, inserted verbatim (may span many lines).
    pub command: String,
}

/// Why a Slurm script could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template text does not parse.
    #[error("template {name}, line {line}: {message}")]
    Syntax {
        /// Template name as given to [`render`].
        name: String,
        /// 1-based line of the error, 0 when minijinja gave none.
        line: usize,
        /// minijinja's description of the problem.
        message: String,
    },
    /// The template parsed but failed while rendering (undefined variable,
    /// bad filter argument, ...).
    #[error("template {name}, line {line}: {message}")]
    Render {
        /// Template name as given to [`render`].
        name: String,
        /// 1-based line of the error, 0 when minijinja gave none.
        line: usize,
        /// minijinja's description of the problem.
        message: String,
    },
    /// The template does not output `{{ command }}`, so the job would not
    /// run the work.
    #[error(
        "template {name} never uses `command` (verbatim, as `{{{{ command }}}}`): \
         the batch script would not run the work"
    )]
    MissingCommand {
        /// Template name as given to [`render`].
        name: String,
    },
    /// The [`SlurmScript`] holds a value that cannot be put in a script safely.
    #[error("invalid Slurm script setting: {0}")]
    InvalidContext(String),
}

/// Quotes `s` for a POSIX shell.
///
/// Strings made only of `[A-Za-z0-9_./:=@%+,-]` are returned unchanged; any
/// other string is wrapped in single quotes, with each `'` written as `'\''`.
/// The empty string becomes `''`. Registered as the template filter `sh`.
pub fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".to_owned();
    }
    if s.chars().all(is_safe_char) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes `s` for use as an option value on an `#SBATCH` line.
///
/// sbatch splits `#SBATCH` lines itself: it understands double quotes and
/// backslash escapes and treats an unquoted `#` as the start of a comment,
/// but it does not follow bash's single-quote rules (a backslash inside
/// single quotes is still an escape, and Slurm releases before 18.08 ignore
/// single quotes altogether). Strings made only of `[A-Za-z0-9_./:=@%+,-]`
/// are returned unchanged; others are wrapped in double quotes with `\`, `"`
/// and `#` backslash-escaped. The empty string becomes `""`. Registered as
/// the template filter `sbatch`.
///
/// # Errors
///
/// [`TemplateError::InvalidContext`] if `s` contains a line break or NUL,
/// which no `#SBATCH` line can carry.
pub fn sbatch_quote(s: &str) -> Result<String, TemplateError> {
    if s.contains(['\n', '\r', '\0']) {
        return Err(TemplateError::InvalidContext(format!(
            "{s:?} cannot be put on an #SBATCH line: it contains a line break or NUL"
        )));
    }
    if !s.is_empty() && s.chars().all(is_safe_char) {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// Quotes `s` as one bash word in ANSI-C quoting, `$'...'`, that holds no line break: a
/// newline is written `\n`, a tab `\t`, a carriage return `\r`, other control characters
/// `\xHH`, and `\` and `'` are backslash-escaped; everything else (quotes, `%`, `$`, UTF-8)
/// stays as it is. bash turns the word back into exactly `s` (a NUL byte, which no bash
/// string can hold, cuts it short). Used where one task must fit on one line: the tasks file
/// of an array job.
pub fn ansi_c_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The `--output` (or `--error`) value for the file `name` in the directory `dir`: `dir` is
/// a literal path, `name` may use Slurm's replacement symbols (`slurm-%j.out`).
///
/// Slurm reads these values as filename patterns: `%` starts a replacement symbol (`%%` is a
/// literal `%`), and a value with a backslash anywhere is not a pattern at all: Slurm then
/// drops each backslash and keeps the character after it (checked with Slurm 22.05). So each
/// `%` of `dir` is doubled; when `dir` holds a backslash, each is doubled instead and `name`
/// is taken literally, `%` and all (a fixed file name that every job of the directory
/// shares: no job id can be put in it then).
pub fn slurm_filename_in(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.contains('\\') {
        format!(
            "{}/{}",
            dir.replace('\\', "\\\\"),
            name.replace('\\', "\\\\")
        )
    } else {
        format!("{}/{name}", dir.replace('%', "%%"))
    }
}

/// Renders the template `source` (named `template_name` in errors) with `ctx`.
///
/// Pure: reads no files and no environment. Unknown variables are errors,
/// the template's trailing newline is kept, no HTML escaping is applied
/// whatever the name, and the filters `sh` and `sbatch` are available.
///
/// # Errors
///
/// * [`TemplateError::InvalidContext`] if an `env` name is not a shell
///   identifier or a `slurm_cmd_args` entry contains a line break;
/// * [`TemplateError::Syntax`] if the template does not parse;
/// * [`TemplateError::Render`] if rendering fails (undefined variable, a
///   value the `sbatch` filter refuses, ...);
/// * [`TemplateError::MissingCommand`] if the template never references
///   `command` or its output does not contain `ctx.command` verbatim.
pub fn render(
    template_name: &str,
    source: &str,
    ctx: &SlurmScript,
) -> Result<String, TemplateError> {
    validate(ctx)?;
    let env = environment();
    let template = env
        .template_from_named_str(template_name, source)
        .map_err(|e| TemplateError::Syntax {
            name: template_name.to_owned(),
            line: e.line().unwrap_or(0),
            message: describe(&e),
        })?;
    let missing_command = || TemplateError::MissingCommand {
        name: template_name.to_owned(),
    };
    if !template.undeclared_variables(false).contains("command") {
        return Err(missing_command());
    }
    let context = Value::from(Serde(ctx));
    let rendered = template.render(&context).map_err(|e| {
        let mut message = describe(&e);
        if e.kind() == ErrorKind::UndefinedError {
            message.push_str(&known_variables_hint(&context));
        }
        TemplateError::Render {
            name: template_name.to_owned(),
            line: e.line().unwrap_or(0),
            message,
        }
    })?;
    if !rendered.contains(&ctx.command) {
        return Err(missing_command());
    }
    Ok(rendered)
}

fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c)
}

fn is_shell_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validate(ctx: &SlurmScript) -> Result<(), TemplateError> {
    if let Some((name, _)) = ctx.env.iter().find(|(n, _)| !is_shell_identifier(n)) {
        return Err(TemplateError::InvalidContext(format!(
            "environment variable name {name:?} is not a shell identifier \
             ([A-Za-z_][A-Za-z0-9_]*)"
        )));
    }
    if let Some(arg) = ctx.slurm_cmd_args.iter().find(|a| a.contains(['\n', '\r'])) {
        return Err(TemplateError::InvalidContext(format!(
            "slurm_cmd_args entry {arg:?} contains a line break"
        )));
    }
    Ok(())
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let syntax = SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.add_filter("sh", sh_filter);
    env.add_filter("sbatch", sbatch_filter);
    env.add_filter("flux", flux_filter);
    env
}

/// The text a filter should quote: strings as they are, booleans as `true` /
/// `false` (not Jinja's `True`), numbers in their template spelling; `none`
/// is refused rather than quoted as the word "none".
fn filter_input(value: &Value, filter: &str) -> Result<String, minijinja::Error> {
    if value.is_none() || value.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("the `{filter}` filter got none; guard optional values with `{{% if ... %}}`"),
        ));
    }
    Ok(match (value.as_str(), value.kind()) {
        (Some(s), _) => s.to_owned(),
        (None, ValueKind::Bool) => value.is_true().to_string(),
        (None, _) => value.to_string(),
    })
}

fn sh_filter(value: &Value) -> Result<String, minijinja::Error> {
    filter_input(value, "sh").map(|s| shell_quote(&s))
}

fn sbatch_filter(value: &Value) -> Result<String, minijinja::Error> {
    let s = filter_input(value, "sbatch")?;
    sbatch_quote(&s).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// Quoting for a `# flux:` directive: Flux splits directive lines into shell words, so POSIX
/// single quotes work, but no quoting can carry a line break.
fn flux_filter(value: &Value) -> Result<String, minijinja::Error> {
    let s = filter_input(value, "flux")?;
    if s.contains(['\n', '\r', '\0']) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("{s:?} cannot be put on a `# flux:` line: it contains a line break or NUL"),
        ));
    }
    Ok(shell_quote(&s))
}

/// minijinja's kind and detail, followed by its chain of sources, without
/// the "(in name:line)" suffix that [`TemplateError`] already carries.
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// For an undefined-value error: the variables a template can use, since
/// the usual cause is a misspelt field name.
fn known_variables_hint(context: &Value) -> String {
    let known: Vec<String> = context
        .try_iter()
        .map(|keys| keys.map(|k| k.to_string()).collect())
        .unwrap_or_default();
    format!(" (known variables: {})", known.join(", "))
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
