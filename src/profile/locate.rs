//! Where in a `pitch.toml` a problem is: the 1-based line of a byte offset ([`line_of`]), the
//! dotted key at a span ([`key_path`]), and a key's place inside a table
//! ([`key_offset_in_table`]). Best effort over the text, since `toml` reports only spans.

use std::ops::Range;

/// The 1-based line holding byte `offset`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The byte offset where the line holding `offset` starts, and that line
/// (without its `\n`).
fn line_at(text: &str, offset: usize) -> (usize, &str) {
    let offset = offset.min(text.len());
    let bytes = text.as_bytes();
    let start = bytes[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = bytes[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| offset + i);
    (start, &text[start..end])
}

/// `a . b.c` as `a.b.c`.
fn normalize_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    parts.join(".")
}

/// The dotted path of a `[table]` or `[[array]]` header line.
fn header_of(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('[')?;
    let rest = rest.trim_start_matches('[');
    let inner = rest.split(']').next().unwrap_or(rest);
    Some(normalize_key(inner))
}

/// The key assigned on a `key = value` line.
fn leading_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let (key, _) = t.split_once('=')?;
    let key = normalize_key(key);
    (!key.is_empty()).then_some(key)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '\'')
}

/// Best-effort dotted key path (`profile.NAME.key`) of the key or value at
/// `span`, from the nearest table header above it and the key on its line.
pub(super) fn key_path(text: &str, span: Range<usize>) -> String {
    let (line_start, line) = line_at(text, span.start);
    let rel_start = (span.start - line_start).min(line.len());
    let rel_end = span
        .end
        .saturating_sub(line_start)
        .clamp(rel_start, line.len());
    if header_of(line).is_some() {
        // The key is part of a header: the header's path up to the span's end.
        let upto = line.get(..rel_end).unwrap_or(line);
        return header_of(upto).unwrap_or_default();
    }
    let above = text.get(..line_start).unwrap_or("");
    let table = above
        .split('\n')
        .rev()
        .find_map(header_of)
        .unwrap_or_default();
    let local = match line.find('=') {
        // The span is (part of) the line's key.
        Some(eq) if rel_start < eq => normalize_key(line.get(..rel_end.min(eq)).unwrap_or("")),
        Some(eq) => {
            let lead = normalize_key(&line[..eq]);
            let spanned = line.get(rel_start..rel_end).unwrap_or("");
            let after = line.get(rel_end..).unwrap_or("");
            let before = line.get(..rel_start).unwrap_or("");
            let inner = if after.trim_start().starts_with('=') {
                // A key inside an inline table.
                Some(spanned.trim().to_string())
            } else if before.get(eq..).unwrap_or("").contains('{') {
                // A value inside an inline table: the key just before it.
                before
                    .trim_end()
                    .strip_suffix('=')
                    .map(|b| {
                        let b = b.trim_end();
                        let n = b.chars().rev().take_while(|c| is_key_char(*c)).count();
                        b.chars().skip(b.chars().count() - n).collect::<String>()
                    })
                    .filter(|k| !k.is_empty())
            } else {
                None
            };
            match inner {
                Some(inner) => format!("{lead}.{inner}"),
                None => lead,
            }
        }
        // A continuation line of a multi-line array: the key that opened it.
        None => above
            .split('\n')
            .rev()
            .take_while(|l| header_of(l).is_none())
            .find_map(leading_key)
            .unwrap_or_default(),
    };
    match (table.is_empty(), local.is_empty()) {
        (_, true) => table,
        (true, false) => local,
        (false, false) => format!("{table}.{local}"),
    }
}

/// Best-effort byte offset of `key = ...` inside the table whose span is
/// `table` (a `[header]`, an inline `{ ... }` or a dotted key); the table's
/// start when not found.
pub(super) fn key_offset_in_table(text: &str, table: Range<usize>, key: &str) -> usize {
    if key.is_empty() {
        return table.start;
    }
    let (line_start, line) = line_at(text, table.start);
    let tail = line.get(table.start - line_start..).unwrap_or("");
    if let Some(i) = find_assignment(tail, key) {
        return table.start + i;
    }
    let mut offset = line_start + line.len() + 1;
    for next in text.get(offset..).unwrap_or("").split('\n') {
        if header_of(next).is_some() {
            break;
        }
        if let Some(lead) = leading_key(next) {
            if lead == key || lead.ends_with(&format!(".{key}")) {
                return offset;
            }
        }
        offset += next.len() + 1;
    }
    table.start
}

/// Where `key` occurs in `s` as a whole key followed by `=`.
fn find_assignment(s: &str, key: &str) -> Option<usize> {
    s.match_indices(key).map(|(i, _)| i).find(|&i| {
        let before_ok = s[..i].chars().next_back().is_none_or(|c| !is_key_char(c));
        let after = &s[i + key.len()..];
        before_ok && after.trim_start().starts_with('=')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_helpers() {
        let text = "[profile . a]\nx = [\n  1,\n  \"b\",\n]\n";
        let at = text.find("\"b\"").unwrap();
        assert_eq!(key_path(text, at..at + 3), "profile.a.x");
        assert_eq!(line_of(text, at), 4);
        assert_eq!(
            find_assignment("max_cores = 1, cores = 2", "cores"),
            Some(15)
        );
        assert_eq!(find_assignment("cores.x", "cores"), None);
    }
}
