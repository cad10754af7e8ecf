//! Reporters: consumers of [`Event`](crate::Event)s that show them to people or programs.
//! [`ProgressReporter`] draws a bar on a terminal; [`JsonLinesReporter`] writes one JSON object
//! per event.

mod json;
mod progress;

pub use json::JsonLinesReporter;
pub use progress::ProgressReporter;
