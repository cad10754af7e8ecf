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

mod csv_file;
mod error;
mod limits;
mod param;
mod points;
mod range;
mod substitute;

pub use self::csv_file::{read_csv, read_input};
pub use self::error::{excerpt, ParamError};
pub use self::limits::{max_points, set_max_points, MAX_PARAMS_BYTES, MAX_POINTS};
pub use self::param::{parse_all, Param, Point};
// What `parse_all` is made of: the binary calls only `parse_all`, the tests and the fuzz
// target (`src/fuzz.rs`) call these too.
#[allow(unused_imports)]
pub use self::param::{parse_literal, parse_param};
pub use self::points::{combine, points, zip_rows};
pub use self::substitute::substitute;

#[cfg(test)]
mod tests;
