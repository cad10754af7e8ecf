//! The ranges of a `--param`: integer `START..END[:STEP]` and float `START:END:STEP`, both
//! inclusive of `END`, expanded to their values as text.

use super::{excerpt, max_points, ParamError};

/// Builds a [`ParamError::BadRange`].
fn bad_range(spec: &str, reason: String) -> ParamError {
    ParamError::BadRange {
        spec: spec.into(),
        reason,
    }
}

/// Parses `START..END[:STEP]`, inclusive of `END`.
pub(super) fn int_range(spec: &str, v: &str) -> Result<Vec<String>, ParamError> {
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
pub(super) fn float_range(spec: &str, v: &str) -> Result<Vec<String>, ParamError> {
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
