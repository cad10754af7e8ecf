//! The limits of a sweep: how many points (and range values) it may have, [`max_points`],
//! and how large a `--params-file` may be, [`MAX_PARAMS_BYTES`].

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
