//! [`Param`], one `--param NAME=VALUES` (or `--param-str NAME=VALUE`) parsed: the spec split
//! at its first `=`, the values a comma list, a range (see `range.rs`) or one plain value.

use super::range::{float_range, int_range};
use super::ParamError;

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

/// Whether `s` matches `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_identifier(s: &str) -> bool {
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
/// place of its first mention (a name given twice by `--param` stays an error of
/// [`points`](super::points)).
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
