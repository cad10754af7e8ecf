//! [`ParamError`], everything that can be wrong with sweep parameters, and [`excerpt`], the
//! short quote of a value its messages use.

use std::borrow::Cow;

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
    /// A [`Param`](super::Param) with no values was passed to [`points`](super::points).
    #[error("parameter `{name_}` has no values", name_ = excerpt(.name))]
    NoValues {
        /// The parameter name.
        name: String,
    },
    /// The same parameter name given twice to [`points`](super::points).
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
    /// The sweep would exceed the point limit, [`max_points`](super::max_points).
    #[error(
        "the sweep would have more than {max} points; if you mean it, raise the limit with \
         --max-points N (or PITCH_MAX_POINTS=N)"
    )]
    TooManyPoints {
        /// The limit, [`max_points`](super::max_points).
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
