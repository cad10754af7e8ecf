//! [`substitute`]: the `{NAME}` placeholders of the command filled for one point.

use super::ParamError;

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
