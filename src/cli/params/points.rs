//! The points of a sweep: [`points`] builds the grid of the `--param`s (product or zip),
//! [`combine`] and [`zip_rows`] join it with the `--params-file` rows.

use std::collections::HashSet;

use super::{max_points, Param, ParamError, Point};

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
