//! The text forms of durations and memory sizes: [`parse_duration`] and [`parse_memory`] (configs
//! and the command line), the forms Slurm expects ([`format_slurm_time`],
//! [`format_slurm_memory`]), and the serde forms of [`Resources`]' duration and memory fields
//! (canonical text out; text or an integer in).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::Resources;
use super::{invalid, ResourceError};

/// Parses `digits[.digits]` times `mult`, rounding a fraction up. `None` on overflow.
fn scaled_decimal(num: &str, mult: u128) -> Result<Option<u128>, String> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || num.ends_with('.') {
        return Err(format!("{num:?} is not a number"));
    }
    if frac.len() > 9 {
        return Err("at most 9 decimal places are allowed".into());
    }
    let Ok(int) = int.parse::<u128>() else {
        return Ok(None);
    };
    let whole = int.checked_mul(mult);
    if frac.is_empty() {
        return Ok(whole);
    }
    let denom = 10u128.pow(frac.len() as u32);
    let frac: u128 = frac.parse().expect("checked digits");
    let part = frac.checked_mul(mult).map(|p| p.div_ceil(denom));
    Ok(whole.zip(part).and_then(|(w, p)| w.checked_add(p)))
}

/// Parses a wall-time limit.
///
/// Accepts Slurm colon forms "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"
/// (minutes and seconds < 60, hours < 24 when days are given) and unit forms
/// "90s", "30m", "2h", "1d", "1h30m", "1.5h" (a fraction only with one unit).
/// "MM:SS" and bare numbers are rejected as ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, ResourceError> {
    duration_for("duration", text)
}

pub(super) fn duration_for(field: &'static str, text: &str) -> Result<Duration, ResourceError> {
    let t = text.trim();
    let err = |reason: String| invalid(field, text, reason);
    if t.is_empty() {
        return Err(err("empty; use e.g. \"2h\" or \"01:30:00\"".into()));
    }
    if t.starts_with('-') {
        return Err(err("a duration cannot be negative".into()));
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(err(format!(
            "a bare number is ambiguous (Slurm would read minutes); add a unit, e.g. \"{t}m\" or \"{t}s\""
        )));
    }
    let secs = if t.contains(':') || t.contains('-') {
        colon_seconds(t).map_err(err)?
    } else {
        return unit_duration(t).map_err(err);
    };
    Ok(Duration::from_secs(secs))
}

fn colon_seconds(t: &str) -> Result<u64, String> {
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    let num = |s: &str, what: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} field {s:?} is not a whole number"));
        }
        s.parse()
            .map_err(|_| format!("{what} field {s:?} is too large"))
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (h, m, s) = match (days.is_some(), parts.as_slice()) {
        (false, [_, _]) => {
            return Err(format!(
                "\"MM:SS\" is ambiguous; write \"00:{t}\" for minutes:seconds or \"{t}:00\" for hours:minutes"
            ))
        }
        (false, [h, m, s]) | (true, [h, m, s]) => (*h, *m, *s),
        (true, [h]) => (*h, "0", "0"),
        (true, [h, m]) => (*h, *m, "0"),
        _ => return Err("expected HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS".into()),
    };
    let days = days.map(|d| num(d, "days")).transpose()?;
    let (h, m, s) = (num(h, "hours")?, num(m, "minutes")?, num(s, "seconds")?);
    if m >= 60 {
        return Err(format!("minutes must be below 60, got {m}"));
    }
    if s >= 60 {
        return Err(format!("seconds must be below 60, got {s}"));
    }
    if days.is_some() && h >= 24 {
        return Err(format!(
            "hours must be below 24 when days are given, got {h}"
        ));
    }
    days.unwrap_or(0)
        .checked_mul(86_400)
        .and_then(|d| d.checked_add(h.checked_mul(3600)?))
        .and_then(|d| d.checked_add(m * 60 + s))
        .ok_or_else(|| "too large".to_string())
}

fn unit_duration(t: &str) -> Result<Duration, String> {
    const NANOS: u128 = 1_000_000_000;
    let mut rest = t;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        let tail = tail.trim_start();
        let u = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        if num.is_empty() {
            return Err(format!("expected a number at {rest:?}"));
        }
        let (rank, secs) = match unit.to_ascii_lowercase().as_str() {
            "d" => (3, 86_400),
            "h" => (2, 3_600),
            "m" => (1, 60),
            "s" => (0, 1),
            "" => return Err(format!("{num:?} has no unit; use s, m, h or d")),
            other => return Err(format!("unknown unit {other:?}; use s, m, h or d")),
        };
        parts.push((num, rank, secs));
        rest = tail.trim_start();
    }
    if parts.len() > 1 && parts.iter().any(|(num, _, _)| num.contains('.')) {
        return Err("a fraction is only allowed with a single unit, e.g. \"1.5h\"".into());
    }
    if parts.windows(2).any(|w| w[0].1 <= w[1].1) {
        return Err("use each unit once, largest first, e.g. \"1d2h30m\"".into());
    }
    let mut total: u128 = 0;
    for (num, _, secs) in parts {
        let n = scaled_decimal(num, secs * NANOS)?;
        total = n.and_then(|n| total.checked_add(n)).ok_or("too large")?;
    }
    let secs = u64::try_from(total / NANOS).map_err(|_| "too large")?;
    Ok(Duration::new(secs, (total % NANOS) as u32))
}

/// Parses a memory size to bytes: "4G", "4GB", "4GiB", "512M", "1T", "100K",
/// "1.5G", "100B" (binary units, 1K = 1024, case-insensitive, fractions
/// rounded up to whole bytes). Bare numbers and overflow are errors.
pub fn parse_memory(text: &str) -> Result<u64, ResourceError> {
    memory_for("memory", text)
}

pub(super) fn memory_for(field: &'static str, text: &str) -> Result<u64, ResourceError> {
    let t = text.trim();
    let err = |reason: String| invalid(field, text, reason);
    let n = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..n], t[n..].trim());
    if num.is_empty() {
        return Err(err("expected a number and a unit, e.g. \"4G\"".into()));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" => {
            return Err(err(format!(
                "a bare number is ambiguous (Slurm would read megabytes); add a unit, e.g. \"{num}M\" or \"{num}B\""
            )))
        }
        "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        other => {
            return Err(err(format!(
                "unknown unit {other:?}; use B, K, M, G, T or P"
            )))
        }
    };
    scaled_decimal(num, 1u128 << shift)
        .map_err(err)?
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| err("too large for a 64-bit byte count".into()))
}

/// Slurm `--time` text: "D-HH:MM:SS" from one day on, else "HH:MM:SS";
/// a partial second is rounded up. Note Slurm reads "00:00:00" as no limit.
pub fn format_slurm_time(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let hms = format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if days > 0 {
        format!("{days}-{hms}")
    } else {
        hms
    }
}

/// Slurm `--mem` text: rounded up to whole MiB ("1536M"), in G when a whole
/// number of GiB ("4G"). Never below "1M", since Slurm reads `--mem=0` as all memory.
pub fn format_slurm_memory(bytes: u64) -> String {
    let mib = bytes.div_ceil(1 << 20).max(1);
    if mib.trailing_zeros() >= 10 {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// Canonical serde text of a duration: whole or fractional seconds, "5400s", "0.5s".
pub(super) fn duration_text(d: Duration) -> String {
    match d.subsec_nanos() {
        0 => format!("{}s", d.as_secs()),
        n => {
            let frac = format!("{n:09}");
            format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
        }
    }
}

/// Canonical serde text of a byte count: the largest exact unit, else `"<n>B"`.
fn memory_text(bytes: u64) -> String {
    if bytes > 0 {
        for (suffix, shift) in [("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if bytes.trailing_zeros() >= shift {
                return format!("{}{suffix}", bytes >> shift);
            }
        }
    }
    format!("{bytes}B")
}

/// A config value given either as text or as a non-negative integer.
enum TextOrInt {
    Text(String),
    Int(u64),
}

impl<'de> Deserialize<'de> for TextOrInt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TextOrInt;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string like \"2h\" or \"4G\", or a non-negative integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TextOrInt, E> {
                Ok(TextOrInt::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TextOrInt, E> {
                Ok(TextOrInt::Int(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TextOrInt, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("value must not be negative"))?;
                Ok(TextOrInt::Int(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads an optional [`TextOrInt`], parsing text with `parse` and integers with `from_int`.
fn de_text_or_int<'de, D, T>(
    d: D,
    field: &'static str,
    parse: fn(&'static str, &str) -> Result<T, ResourceError>,
    from_int: fn(u64) -> T,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<TextOrInt>::deserialize(d)?
        .map(|raw| match raw {
            TextOrInt::Text(t) => parse(field, &t).map_err(serde::de::Error::custom),
            TextOrInt::Int(n) => Ok(from_int(n)),
        })
        .transpose()
}

/// Serde for `run_time_max`: canonical text out, text or integer seconds in.
pub(super) mod duration_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        v.map(duration_text).serialize(s)
    }

    pub fn deserialize<'de, D>(d: D) -> Result<Option<Duration>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        de_text_or_int(d, "run_time_max", duration_for, Duration::from_secs)
    }
}

/// Serde for `retry_backoff`: as `run_time_max`'s.
pub(super) mod backoff_serde {
    use super::*;

    pub use super::duration_serde::serialize;

    pub fn deserialize<'de, D>(d: D) -> Result<Option<Duration>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        de_text_or_int(d, "retry_backoff", duration_for, Duration::from_secs)
    }
}

/// Serde for `checkpoint_grace`: as `run_time_max`'s.
pub(super) mod grace_serde {
    use super::*;

    pub use super::duration_serde::serialize;

    pub fn deserialize<'de, D>(d: D) -> Result<Option<Duration>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        de_text_or_int(d, "checkpoint_grace", duration_for, Duration::from_secs)
    }
}

/// Serde for `memory_max`: canonical text out, text or integer bytes in.
pub(super) mod memory_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(memory_text).serialize(s)
    }

    pub fn deserialize<'de, D>(d: D) -> Result<Option<u64>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        de_text_or_int(d, "memory_max", memory_for, |b| b)
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
