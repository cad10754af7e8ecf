//! Parameter grammar of `pitch sweep`.
//!
//! ```text
//! pitch sweep [--param NAME=VALUES ...] [--zip] [--params-file FILE.csv] -- CMD with {NAME} placeholders
//! ```
//!
//! # `--param NAME=VALUES`
//!
//! `NAME` must be an identifier (`[A-Za-z_][A-Za-z0-9_]*`). The spec is split
//! at its first `=`, so values may contain `=`. Nothing is trimmed: spaces are
//! part of the values. `VALUES` takes one of these forms:
//!
//! * **comma list** `a,b,c`: the values, in order. A single value `x` is a
//!   list of one. Empty items (`a,,b`, `a,`) are an error. Ranges inside a
//!   list (`1..3,7`) are not supported and are an error; use a separate
//!   `--param` or a `--params-file` instead.
//! * **integer range** `START..END` or `START..END:STEP`: both ends are
//!   **inclusive**, `1..10` is `1,2,...,10` and `0..100:5` is `0,5,...,100`.
//!   Numbers may be negative (`-5..5:5` is `-5,0,5`). The step must be
//!   positive, `END` must not be below `START`, and `END` must be reached
//!   exactly (`0..10:3` is an error rather than silently stopping at 9).
//! * **float range** `START:END:STEP`: inclusive of `END` within rounding.
//!   The number of steps is `n = round((END - START) / STEP)` and the range is
//!   accepted when `|START + n*STEP - END| <= 1e-9 * max(1, |END|)`. The
//!   bounds must be plain decimal numbers (no exponent). Every value is
//!   formatted with the same number of decimals `D`, the largest number of
//!   decimals written in `START`, `END` or `STEP`; value `i` is
//!   `START + i*STEP` rounded to `D` decimals, so there is no binary noise:
//!   `0.1:1.0:0.1` gives `0.1, 0.2, ..., 0.9, 1.0` (ten values, the last
//!   being `"1.0"`), `0:1:0.25` gives `0.00, 0.25, 0.50, 0.75, 1.00` and
//!   `0:10:2` gives `0, 2, ..., 10`. A negative zero is printed as zero.
//!
//! A value is read as a range only when it looks like one: an integer range
//! when the text before its first `..` is a number, a float range when it has
//! exactly two `:` and the text before the first `:` is a number. So
//! `../data`, `v1..v2`, `a:b:c` and `16:9` are plain values, while
//! `10:30:00` is a float range (and an error, its step being zero): give such
//! values with `--param-str NAME=VALUE` (one value, taken as it is; repeat it
//! for more) or in a `--params-file`. An integer range written with a leading
//! zero keeps its width: `00..03` is `00,01,02,03`.
//!
//! # `--params-file FILE.csv`
//!
//! See [`read_csv`]: the header names the parameters, each row is one point.
//!
//! # Points
//!
//! [`points`] builds the cartesian product of the `--param`s (first parameter
//! varying slowest, like nested loops) or, with `--zip`, pairs them
//! element-wise. [`combine`] crosses the CSV rows with that grid ([`zip_rows`]
//! pairs them instead, for `--zip`), and
//! [`substitute`] fills `{NAME}` placeholders of the command for one point.
//! A sweep never has more than [`max_points`] points (nor a range more than
//! that many values).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

/// The default largest number of values a range may produce and of points a
/// sweep may have; larger sweeps are almost certainly a typo and would exhaust
/// memory. `pitch sweep --max-points N` (or `PITCH_MAX_POINTS`) changes it.
pub const MAX_POINTS: usize = 1_000_000;

/// The default largest `--params-file` (or standard input) read, in bytes:
/// 64 MiB. `--max-params-bytes N` (or `PITCH_MAX_PARAMS_BYTES`) changes it.
pub const MAX_PARAMS_BYTES: u64 = 64 << 20;

static MAX_POINTS_SET: OnceLock<usize> = OnceLock::new();

/// Sets the point limit for this process (once, before parsing, from
/// `--max-points`); later calls are ignored.
pub fn set_max_points(max: usize) {
    let _ = MAX_POINTS_SET.set(max);
}

/// The point limit: what [`set_max_points`] set, else [`MAX_POINTS`].
pub fn max_points() -> usize {
    MAX_POINTS_SET.get().copied().unwrap_or(MAX_POINTS)
}

/// At most a short prefix of `s` for an error message: a value of megabytes
/// is quoted as its first 100 characters and its size.
pub fn excerpt(s: &str) -> Cow<'_, str> {
    const KEEP: usize = 100;
    match s.char_indices().nth(KEEP) {
        Some((end, _)) if s.len() > 2 * KEEP => {
            Cow::Owned(format!("{}... ({} bytes in all)", &s[..end], s.len()))
        }
        _ => Cow::Borrowed(s),
    }
}

/// Reads a `--params-file` (`-` is standard input) as UTF-8 text of at most
/// `max_bytes` bytes: a larger input (`/dev/zero`, an endless pipe) is refused
/// after reading `max_bytes + 1` bytes, so memory stays bounded.
pub fn read_input(path: &Path, max_bytes: u64) -> Result<String, String> {
    let name = path.display();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?)
    };
    let mut bytes = Vec::new();
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "{name}: larger than the limit of {max_bytes} bytes for a --params-file; if you \
             mean it, raise the limit with --max-params-bytes N (or PITCH_MAX_PARAMS_BYTES=N)"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// One point of a sweep: `(name, value)` pairs in parameter order.
pub type Point = Vec<(String, String)>;

/// One `--param NAME=VALUES` after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The parameter name, an identifier used as `{NAME}` in the command.
    pub name: String,
    /// The values, in sweep order, exactly as they are substituted.
    pub values: Vec<String>,
}

/// Everything that can be wrong with sweep parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The `--param` spec has no `=`.
    #[error("invalid --param `{spec_}`: expected NAME=VALUES", spec_ = excerpt(.spec))]
    MissingEquals {
        /// The spec as given.
        spec: String,
    },
    /// The parameter name of a `--param` is not an identifier.
    #[error(
        "invalid --param `{spec_}`: `{name_}` is not a valid parameter name \
         (use letters, digits and `_`, not starting with a digit)",
        spec_ = excerpt(.spec), name_ = excerpt(.name)
    )]
    InvalidName {
        /// The spec as given.
        spec: String,
        /// The offending name.
        name: String,
    },
    /// Nothing after the `=`.
    #[error("invalid --param `{spec_}`: no values after `=`", spec_ = excerpt(.spec))]
    EmptyValues {
        /// The spec as given.
        spec: String,
    },
    /// An empty item in a comma list (`a,,b` or a trailing comma).
    #[error("invalid --param `{spec_}`: item {position} of the comma list is empty", spec_ = excerpt(.spec))]
    EmptyItem {
        /// The spec as given.
        spec: String,
        /// 1-based position of the empty item.
        position: usize,
    },
    /// A range inside a comma list (`1..3,7`).
    #[error(
        "invalid --param `{spec_}`: `{item_}` is a range inside a comma list; \
         mixing ranges and lists is not supported, use a separate --param or a --params-file csv",
        spec_ = excerpt(.spec), item_ = excerpt(.item)
    )]
    RangeInList {
        /// The spec as given.
        spec: String,
        /// The range-looking item.
        item: String,
    },
    /// A malformed, empty or oversized range.
    #[error("invalid range in --param `{spec_}`: {reason}", spec_ = excerpt(.spec))]
    BadRange {
        /// The spec as given.
        spec: String,
        /// What is wrong with the range.
        reason: String,
    },
    /// A [`Param`] with no values was passed to [`points`].
    #[error("parameter `{name_}` has no values", name_ = excerpt(.name))]
    NoValues {
        /// The parameter name.
        name: String,
    },
    /// The same parameter name given twice to [`points`].
    #[error("parameter `{name_}` is given more than once", name_ = excerpt(.name))]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// `--zip` with parameters of different lengths.
    #[error("--zip needs all parameters to have the same number of values, but {lengths}")]
    ZipLengthMismatch {
        /// Every parameter with its length, e.g. "`a` has 3 values, `b` has 2 values".
        lengths: String,
    },
    /// The sweep would exceed the point limit, [`max_points`].
    #[error(
        "the sweep would have more than {max} points; if you mean it, raise the limit with \
         --max-points N (or PITCH_MAX_POINTS=N)"
    )]
    TooManyPoints {
        /// The limit, [`max_points`].
        max: usize,
    },
    /// The CSV file has no header line.
    #[error("{origin}: the file is empty; its first line must name the parameters")]
    CsvEmpty {
        /// The file name.
        origin: String,
    },
    /// The CSV header has only a header, no rows.
    #[error("{origin}: no data rows after the header line")]
    CsvNoRows {
        /// The file name.
        origin: String,
    },
    /// A CSV header field is not an identifier.
    #[error(
        "{origin}:{line}: `{name_}` in the header is not a valid parameter name \
         (use letters, digits and `_`, not starting with a digit)",
        name_ = excerpt(.name)
    )]
    CsvInvalidName {
        /// The file name.
        origin: String,
        /// 1-based line of the header.
        line: usize,
        /// The offending name.
        name: String,
    },
    /// A CSV header names a parameter twice.
    #[error("{origin}:{line}: column `{name_}` appears more than once in the header", name_ = excerpt(.name))]
    CsvDuplicateName {
        /// The file name.
        origin: String,
        /// 1-based line of the header.
        line: usize,
        /// The repeated name.
        name: String,
    },
    /// A CSV row with a different number of fields than the header.
    #[error("{origin}:{line}: expected {expected} fields as in the header, found {found}")]
    CsvFieldCount {
        /// The file name.
        origin: String,
        /// 1-based line where the row starts.
        line: usize,
        /// Number of header fields.
        expected: usize,
        /// Number of fields in the row.
        found: usize,
    },
    /// A quoted CSV field that is never closed.
    #[error("{origin}:{line}: quoted field is never closed")]
    CsvUnterminatedQuote {
        /// The file name.
        origin: String,
        /// 1-based line of the field's opening quote.
        line: usize,
    },
    /// Text after the closing quote of a CSV field.
    #[error(
        "{origin}:{line}: unexpected `{found}` after a closing quote \
         (write `\"\"` for a quote inside a quoted field)"
    )]
    CsvAfterQuote {
        /// The file name.
        origin: String,
        /// 1-based line of the closing quote.
        line: usize,
        /// The character found after the closing quote.
        found: char,
    },
    /// Any other error of the `csv` crate reading the `--params-file`.
    #[error("{origin}:{line}: {reason}")]
    CsvRead {
        /// The file name.
        origin: String,
        /// 1-based line of the record being read.
        line: usize,
        /// The crate's message.
        reason: String,
    },
    /// A name given both by `--param` and by the `--params-file`.
    #[error("parameter `{name_}` is defined both by --param and in the --params-file", name_ = excerpt(.name))]
    NameClash {
        /// The clashing name.
        name: String,
    },
    /// `{name}` in the command that is not a parameter.
    #[error(
        "unknown placeholder `{{{name_}}}` in argument `{arg_}`; known parameters: {known_} \
         (write `{{{{` and `}}}}` for literal braces)",
        name_ = excerpt(.name), arg_ = excerpt(.arg), known_ = excerpt(.known)
    )]
    UnknownPlaceholder {
        /// The text between the braces.
        name: String,
        /// The argument containing it.
        arg: String,
        /// Comma-separated known names, or `(none)`.
        known: String,
    },
    /// A `{` without a matching `}`.
    #[error("unclosed `{{` in argument `{arg_}` (write `{{{{` for a literal brace)", arg_ = excerpt(.arg))]
    UnclosedBrace {
        /// The argument containing it.
        arg: String,
    },
    /// A `}` that closes nothing.
    #[error("unmatched `}}` in argument `{arg_}` (write `}}}}` for a literal brace)", arg_ = excerpt(.arg))]
    UnmatchedClose {
        /// The argument containing it.
        arg: String,
    },
    /// A parameter no argument refers to (usually a typo).
    #[error("parameter `{name_}` is not used: no argument of the command contains `{{{name_}}}`", name_ = excerpt(.name))]
    Unused {
        /// The unused parameter name.
        name: String,
    },
}

/// Whether `s` matches `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a number as far as range detection is concerned.
fn looks_numeric(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
        && s.parse::<f64>().is_ok()
}

/// Whether `v` is meant as an integer range `START..END[:STEP]`.
fn looks_like_int_range(v: &str) -> bool {
    v.split_once("..")
        .is_some_and(|(lhs, _)| looks_numeric(lhs))
}

/// Whether `v` is meant as a float range `START:END:STEP`.
fn looks_like_float_range(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 3 && looks_numeric(parts[0])
}

/// Splits `NAME=VALUES` at its first `=`, checking the name.
fn split_spec(spec: &str) -> Result<(&str, &str), ParamError> {
    let (name, values) = spec
        .split_once('=')
        .ok_or_else(|| ParamError::MissingEquals { spec: spec.into() })?;
    if !is_identifier(name) {
        return Err(ParamError::InvalidName {
            spec: spec.into(),
            name: name.into(),
        });
    }
    Ok((name, values))
}

/// Parses `NAME=VALUES` (see the module documentation for the forms).
pub fn parse_param(spec: &str) -> Result<Param, ParamError> {
    let (name, values) = split_spec(spec)?;
    if values.is_empty() {
        return Err(ParamError::EmptyValues { spec: spec.into() });
    }
    let values = if values.contains(',') {
        parse_list(spec, values)?
    } else if looks_like_int_range(values) {
        int_range(spec, values)?
    } else if looks_like_float_range(values) {
        float_range(spec, values)?
    } else {
        vec![values.to_string()]
    };
    Ok(Param {
        name: name.into(),
        values,
    })
}

/// Parses `--param-str NAME=VALUE`: one value taken as it is (no list, no range), so
/// `t=01:30:00` or `list=a,b` can be given.
pub fn parse_literal(spec: &str) -> Result<Param, ParamError> {
    let (name, value) = split_spec(spec)?;
    Ok(Param {
        name: name.into(),
        values: vec![value.to_string()],
    })
}

/// The `--param` (`false`) and `--param-str` (`true`) specs in command-line order, parsed;
/// `--param-str` given more than once for a name makes one parameter of those values, at the
/// place of its first mention (a name given twice by `--param` stays an error of [`points`]).
pub fn parse_all(specs: &[(bool, String)]) -> Result<Vec<Param>, ParamError> {
    let mut out: Vec<(bool, Param)> = Vec::with_capacity(specs.len());
    for (literal, spec) in specs {
        if !literal {
            out.push((false, parse_param(spec)?));
            continue;
        }
        let p = parse_literal(spec)?;
        match out.iter_mut().find(|(l, q)| *l && q.name == p.name) {
            Some((_, q)) => q.values.extend(p.values),
            None => out.push((true, p)),
        }
    }
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// Parses a comma list of plain values.
fn parse_list(spec: &str, values: &str) -> Result<Vec<String>, ParamError> {
    values
        .split(',')
        .enumerate()
        .map(|(i, item)| {
            if item.is_empty() {
                Err(ParamError::EmptyItem {
                    spec: spec.into(),
                    position: i + 1,
                })
            } else if looks_like_int_range(item) || looks_like_float_range(item) {
                Err(ParamError::RangeInList {
                    spec: spec.into(),
                    item: item.into(),
                })
            } else {
                Ok(item.to_string())
            }
        })
        .collect()
}

/// Builds a [`ParamError::BadRange`].
fn bad_range(spec: &str, reason: String) -> ParamError {
    ParamError::BadRange {
        spec: spec.into(),
        reason,
    }
}

/// Parses `START..END[:STEP]`, inclusive of `END`.
fn int_range(spec: &str, v: &str) -> Result<Vec<String>, ParamError> {
    let (start, rest) = v.split_once("..").unwrap_or((v, ""));
    let (end, step) = match rest.split_once(':') {
        Some((end, step)) => (end, Some(step)),
        None => (rest, None),
    };
    let int = |what: &str, text: &str| {
        text.parse::<i64>().map_err(|_| {
            bad_range(
                spec,
                format!(
                    "{what} `{}` is not an integer \
                     (write START:END:STEP for a float range)",
                    excerpt(text)
                ),
            )
        })
    };
    let start = int("start", start)?;
    let end = int("end", end)?;
    let step = match step {
        Some(s) => int("step", s)?,
        None => 1,
    };
    if step <= 0 {
        return Err(bad_range(
            spec,
            format!("step must be positive, got {step}"),
        ));
    }
    if end < start {
        return Err(bad_range(spec, format!("end {end} is below start {start}")));
    }
    let span = i128::from(end) - i128::from(start);
    let step128 = i128::from(step);
    if span % step128 != 0 {
        return Err(bad_range(
            spec,
            format!("end {end} is not reached from start {start} in steps of {step}"),
        ));
    }
    let count = span / step128 + 1;
    let max = max_points();
    if count > max as i128 {
        return Err(bad_range(
            spec,
            format!(
                "the range has {count} values, more than the limit of {max} \
                 (--max-points N or PITCH_MAX_POINTS=N raises it)"
            ),
        ));
    }
    // `00..03`: an end written with a leading zero keeps every value that wide.
    let (start_text, end_text) = v.split_once("..").unwrap_or((v, ""));
    let end_text = end_text.split(':').next().unwrap_or("");
    let digits = |t: &str| t.trim_start_matches(['+', '-']).len();
    let padded = |t: &str| digits(t) > 1 && t.trim_start_matches(['+', '-']).starts_with('0');
    let width = if padded(start_text) || padded(end_text) {
        digits(start_text).max(digits(end_text))
    } else {
        0
    };
    Ok((0..count)
        .map(|i| {
            let value = i128::from(start) + i * step128;
            match value {
                v if v < 0 => format!("-{:0width$}", -v),
                v => format!("{v:0width$}"),
            }
        })
        .collect())
}

/// Parses a plain decimal number, returning it and its number of decimals.
fn parse_decimal(spec: &str, what: &str, text: &str) -> Result<(f64, usize), ParamError> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !(int_part.is_empty() && frac_part.is_empty())
        && int_part.chars().all(|c| c.is_ascii_digit())
        && frac_part.chars().all(|c| c.is_ascii_digit());
    match text.parse::<f64>() {
        Ok(value) if plain && value.is_finite() => Ok((value, frac_part.len())),
        _ => Err(bad_range(
            spec,
            format!("{what} `{}` is not a plain decimal number", excerpt(text)),
        )),
    }
}

/// Formats `value` with exactly `decimals` decimals, never as `-0`.
fn format_decimal(value: f64, decimals: usize) -> String {
    let s = format!("{value:.decimals$}");
    match s.strip_prefix('-') {
        Some(abs) if abs.chars().all(|c| c == '0' || c == '.') => abs.to_string(),
        _ => s,
    }
}

/// Parses `START:END:STEP`, inclusive of `END` within rounding.
fn float_range(spec: &str, v: &str) -> Result<Vec<String>, ParamError> {
    let parts: Vec<&str> = v.split(':').collect();
    let (start_text, end_text, step_text) = (parts[0], parts[1], parts[2]);
    let (start, d1) = parse_decimal(spec, "start", start_text)?;
    let (end, d2) = parse_decimal(spec, "end", end_text)?;
    let (step, d3) = parse_decimal(spec, "step", step_text)?;
    let decimals = d1.max(d2).max(d3);
    if step <= 0.0 {
        return Err(bad_range(
            spec,
            format!("step must be positive, got {step_text}"),
        ));
    }
    if end < start {
        return Err(bad_range(
            spec,
            format!("end {end_text} is below start {start_text}"),
        ));
    }
    let n = ((end - start) / step).round();
    let max = max_points();
    if n >= max as f64 {
        return Err(bad_range(
            spec,
            format!(
                "the range has more than the limit of {max} values \
                 (--max-points N or PITCH_MAX_POINTS=N raises it)"
            ),
        ));
    }
    if (start + n * step - end).abs() > 1e-9 * end.abs().max(1.0) {
        return Err(bad_range(
            spec,
            format!(
                "end {end_text} is not reached from start {start_text} in steps of {step_text}"
            ),
        ));
    }
    // `n` is a non-negative integer below the point limit, so the cast is exact.
    let n = n as usize;
    Ok((0..=n)
        .map(|i| format_decimal(start + i as f64 * step, decimals))
        .collect())
}

/// Whether byte `i` of `b` ends a line: a LF, a CR not followed by a LF, or the LF of a CRLF
/// (so CRLF counts once), the line ends the `csv` crate ends a record at.
fn ends_line(b: &[u8], i: usize) -> bool {
    b[i] == b'\n' || (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'))
}

/// The 1-based line byte `at` of `b` is on.
fn line_at(b: &[u8], at: usize) -> usize {
    1 + (0..at.min(b.len())).filter(|&i| ends_line(b, i)).count()
}

/// The 1-based line of the record the `csv` crate read from byte `at` on: the crate's
/// position of a record is taken before the line ends and blank lines it skips to reach it,
/// so they are skipped here too (its own line count would name the blank line).
fn record_line(b: &[u8], at: u64) -> usize {
    let mut start = usize::try_from(at).unwrap_or(b.len()).min(b.len());
    while start < b.len() && matches!(b[start], b'\r' | b'\n') {
        start += 1;
    }
    line_at(b, start)
}

/// Refuses what the `csv` crate would read without a word: a quoted field still open at the
/// end of the input (the crate ends it there, taking the rest of the file as its value), and
/// text after a closing quote (`"x"y`, which the crate reads as `xy`; usually a quote meant
/// as `""`).
///
/// It follows the crate's states for its default dialect, which [`read_csv`] uses: `"`
/// opens a field only at its start, `""` is a quote inside it, `,` ends a field, and CR,
/// LF or CRLF end a record; a `"` inside an unquoted field is literal.
fn check_quotes(text: &str, origin: &str) -> Result<(), ParamError> {
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        AfterQuote,
    }
    let b = text.as_bytes();
    let mut state = State::FieldStart;
    let mut line = 1;
    let mut opened_on = 1;
    for (i, &c) in b.iter().enumerate() {
        let ends_field = matches!(c, b',' | b'\r' | b'\n');
        state = match state {
            State::FieldStart if c == b'"' => {
                opened_on = line;
                State::Quoted
            }
            State::FieldStart | State::Unquoted if ends_field => State::FieldStart,
            State::FieldStart | State::Unquoted => State::Unquoted,
            State::Quoted if c == b'"' => State::AfterQuote,
            State::Quoted => State::Quoted,
            State::AfterQuote if c == b'"' => State::Quoted,
            State::AfterQuote if ends_field => State::FieldStart,
            State::AfterQuote => {
                return Err(ParamError::CsvAfterQuote {
                    origin: origin.into(),
                    line,
                    // Byte `i` follows an ASCII `"`, so it starts a character.
                    found: text[i..].chars().next().unwrap_or_default(),
                });
            }
        };
        if ends_line(b, i) {
            line += 1;
        }
    }
    match state {
        State::Quoted => Err(ParamError::CsvUnterminatedQuote {
            origin: origin.into(),
            line: opened_on,
        }),
        _ => Ok(()),
    }
}

/// Reads a `--params-file` CSV with the `csv` crate; `origin` (the file name) prefixes
/// errors, which name the line too.
///
/// The first record is the header: unique identifiers naming the parameters. Each further
/// record is one point, as `(name, value)` pairs in header order. RFC 4180 quoting is
/// supported (`"a,b"`, `""` for a quote, line ends inside quotes kept as they are), as are
/// LF, CRLF and CR line ends, a trailing line end and a leading UTF-8 byte order mark. Blank
/// lines are skipped, a `"` inside an unquoted field is taken literally, and nothing is
/// trimmed. Errors: no header, a header but no rows, a header name that is not an
/// identifier or appears twice, a row with a different number of fields than the header, a
/// quoted field never closed, text after a closing quote, and more rows than
/// [`max_points`] (counted as they are read).
pub fn read_csv(text: &str, origin: &str) -> Result<Vec<Point>, ParamError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let b = text.as_bytes();
    check_quotes(text, origin)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(b);
    let read_error = |e: csv::Error| ParamError::CsvRead {
        origin: origin.into(),
        line: e.position().map_or(1, |p| record_line(b, p.byte())),
        reason: e.to_string(),
    };
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(ParamError::CsvEmpty {
                origin: origin.into(),
            })
        }
        Some(record) => record.map_err(read_error)?,
    };
    let header_line = || record_line(b, header.position().map_or(0, |p| p.byte()));
    let mut seen = HashSet::new();
    for name in &header {
        if !is_identifier(name) {
            return Err(ParamError::CsvInvalidName {
                origin: origin.into(),
                line: header_line(),
                name: name.into(),
            });
        }
        if !seen.insert(name) {
            return Err(ParamError::CsvDuplicateName {
                origin: origin.into(),
                line: header_line(),
                name: name.into(),
            });
        }
    }
    let max = max_points();
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(read_error)?;
        if record.len() != header.len() {
            return Err(ParamError::CsvFieldCount {
                origin: origin.into(),
                line: record_line(b, record.position().map_or(0, |p| p.byte())),
                expected: header.len(),
                found: record.len(),
            });
        }
        if rows.len() == max {
            return Err(ParamError::TooManyPoints { max });
        }
        rows.push(
            header
                .iter()
                .zip(&record)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
    }
    if rows.is_empty() {
        return Err(ParamError::CsvNoRows {
            origin: origin.into(),
        });
    }
    Ok(rows)
}

/// `"3 values"` or `"1 value"`.
fn count_values(n: usize) -> String {
    format!("{n} value{}", if n == 1 { "" } else { "s" })
}

/// Builds the points of a sweep from its `--param`s.
///
/// Without `zip`, the cartesian product in the order given, the first
/// parameter varying slowest (like nested loops): `a=1,2 b=x,y` gives
/// `(1,x) (1,y) (2,x) (2,y)`. With `zip`, all parameters must have the same
/// number of values and are paired element-wise. Each point lists its pairs in
/// parameter order. No parameters give no points (so that [`combine`] returns
/// the CSV rows). Duplicate names, parameters without values and sweeps over
/// [`max_points`] points are errors.
pub fn points(params: &[Param], zip: bool) -> Result<Vec<Point>, ParamError> {
    let mut seen = HashSet::new();
    for p in params {
        if !seen.insert(p.name.as_str()) {
            return Err(ParamError::DuplicateName {
                name: p.name.clone(),
            });
        }
        if p.values.is_empty() {
            return Err(ParamError::NoValues {
                name: p.name.clone(),
            });
        }
    }
    let Some(first) = params.first() else {
        return Ok(Vec::new());
    };
    if zip {
        let len = first.values.len();
        if params.iter().any(|p| p.values.len() != len) {
            let lengths = params
                .iter()
                .map(|p| format!("`{}` has {}", p.name, count_values(p.values.len())))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ParamError::ZipLengthMismatch { lengths });
        }
        return Ok((0..len)
            .map(|i| {
                params
                    .iter()
                    .map(|p| (p.name.clone(), p.values[i].clone()))
                    .collect()
            })
            .collect());
    }
    let max = max_points();
    params
        .iter()
        .try_fold(1usize, |acc, p| acc.checked_mul(p.values.len()))
        .filter(|&total| total <= max)
        .ok_or(ParamError::TooManyPoints { max })?;
    let mut out: Vec<Point> = vec![Vec::new()];
    for p in params {
        out = out
            .into_iter()
            .flat_map(|point| {
                p.values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.push((p.name.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    Ok(out)
}

/// Crosses the `--params-file` rows with the `--param` grid.
///
/// The CSV rows vary slowest: each CSV row is combined with every grid point,
/// its pairs first, then the grid's. If either side is empty the other is
/// returned unchanged. A name present on both sides is
/// [`ParamError::NameClash`]; more than [`max_points`] points is
/// [`ParamError::TooManyPoints`].
pub fn combine(grid: Vec<Point>, csv_rows: Vec<Point>) -> Result<Vec<Point>, ParamError> {
    let (Some(g0), Some(c0)) = (grid.first(), csv_rows.first()) else {
        return Ok(if grid.is_empty() { csv_rows } else { grid });
    };
    if let Some((name, _)) = c0.iter().find(|(n, _)| g0.iter().any(|(m, _)| m == n)) {
        return Err(ParamError::NameClash { name: name.clone() });
    }
    let max = max_points();
    grid.len()
        .checked_mul(csv_rows.len())
        .filter(|&total| total <= max)
        .ok_or(ParamError::TooManyPoints { max })?;
    Ok(csv_rows
        .iter()
        .flat_map(|row| {
            grid.iter()
                .map(move |g| row.iter().chain(g.iter()).cloned().collect())
        })
        .collect())
}

/// Pairs the `--params-file` rows with the `--param` points one to one (`--zip`): row `i`
/// with point `i`, its pairs first. Both sides must have as many; either side empty gives the
/// other. A name on both sides is [`ParamError::NameClash`].
pub fn zip_rows(grid: Vec<Point>, csv_rows: Vec<Point>) -> Result<Vec<Point>, ParamError> {
    let (Some(g0), Some(c0)) = (grid.first(), csv_rows.first()) else {
        return Ok(if grid.is_empty() { csv_rows } else { grid });
    };
    if let Some((name, _)) = c0.iter().find(|(n, _)| g0.iter().any(|(m, _)| m == n)) {
        return Err(ParamError::NameClash { name: name.clone() });
    }
    if grid.len() != csv_rows.len() {
        return Err(ParamError::ZipLengthMismatch {
            lengths: format!(
                "the --params-file has {} rows and the --param values make {} points",
                csv_rows.len(),
                grid.len()
            ),
        });
    }
    Ok(csv_rows
        .into_iter()
        .zip(grid)
        .map(|(mut row, g)| {
            row.extend(g);
            row
        })
        .collect())
}

/// Fills the `{NAME}` placeholders of `argv` with the values of `point`.
///
/// Each argument is processed on its own and no shell is involved: a value is
/// inserted verbatim (spaces, quotes and braces included) inside its argument
/// and is never re-split nor re-scanned for placeholders. `{{` and `}}` are
/// literal braces. Errors: an unknown placeholder (naming it and the known
/// parameters), an unclosed `{`, a lone `}`, and a parameter of `point` that
/// no argument uses ([`ParamError::Unused`], usually a typo).
pub fn substitute(argv: &[String], point: &[(String, String)]) -> Result<Vec<String>, ParamError> {
    let mut used = vec![false; point.len()];
    let mut out = Vec::with_capacity(argv.len());
    for arg in argv {
        let mut s = String::with_capacity(arg.len());
        let mut rest = arg.as_str();
        while let Some(pos) = rest.find(['{', '}']) {
            s.push_str(&rest[..pos]);
            let brace = &rest[pos..=pos];
            let after = &rest[pos + 1..];
            if let Some(r) = after.strip_prefix(brace) {
                s.push_str(brace);
                rest = r;
                continue;
            }
            if brace == "}" {
                return Err(ParamError::UnmatchedClose { arg: arg.clone() });
            }
            let close = match after.find(['{', '}']) {
                Some(close) if after.as_bytes()[close] == b'}' => close,
                _ => return Err(ParamError::UnclosedBrace { arg: arg.clone() }),
            };
            let name = &after[..close];
            let Some(i) = point.iter().position(|(n, _)| n == name) else {
                let known = if point.is_empty() {
                    "(none)".to_string()
                } else {
                    point
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(ParamError::UnknownPlaceholder {
                    name: name.into(),
                    arg: arg.clone(),
                    known,
                });
            };
            used[i] = true;
            s.push_str(&point[i].1);
            rest = &after[close + 1..];
        }
        s.push_str(rest);
        out.push(s);
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(ParamError::Unused {
            name: point[i].0.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
