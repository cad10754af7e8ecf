//! The `--params-file`: [`read_input`] reads it (bounded), [`read_csv`] parses its header
//! and rows into points, naming the line of any error.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use super::param::is_identifier;
use super::{max_points, ParamError, Point};

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
