//! [`JsonLinesReporter`]: one JSON object per event, for programs that watch a run.

use std::io::Write;
use std::sync::Mutex;

use crate::event::{Event, Reporter};

/// Writes each event as one line of JSON to a writer (a file, or the CLI's stdout).
///
/// Each line has `at` (seconds since the Unix epoch, float), `elapsed` (seconds, float),
/// `event` (`submitted`, `cached`, `started`, `finished`, `failed`, `retrying`, `warning`,
/// `run_finished`) and the event's fields (durations in seconds, floats).
pub struct JsonLinesReporter<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> JsonLinesReporter<W> {
    /// Reports to `out`.
    pub fn new(out: W) -> Self {
        JsonLinesReporter {
            out: Mutex::new(out),
        }
    }

    /// Returns the writer.
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Renders one event as a JSON line (without the newline).
pub(crate) fn to_json(event: &Event) -> String {
    let mut value = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        let at = event
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        map.insert("at".into(), serde_json::json!(at));
        map.insert(
            "elapsed".into(),
            serde_json::json!(event.elapsed.as_secs_f64()),
        );
        for field in ["runtime", "delay"] {
            if let Some(rt) = map.get_mut(field) {
                if let Ok(d) = serde_json::from_value::<std::time::Duration>(rt.clone()) {
                    *rt = serde_json::json!(d.as_secs_f64());
                }
            }
        }
    }
    value.to_string()
}

impl<W: Write + Send> Reporter for JsonLinesReporter<W> {
    fn report(&self, event: &Event) {
        let line = to_json(event);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use std::time::{Duration, SystemTime};

    #[test]
    fn one_parseable_line_per_event() {
        let r = JsonLinesReporter::new(Vec::new());
        r.report(&Event {
            at: SystemTime::now(),
            elapsed: Duration::from_millis(1500),
            kind: EventKind::Finished {
                key: "k".into(),
                name: "m::f".into(),
                runtime: Duration::from_millis(250),
            },
        });
        r.report(&Event {
            at: SystemTime::now(),
            elapsed: Duration::from_secs(2),
            kind: EventKind::Failed {
                key: "k2".into(),
                name: "m::g".into(),
                error: crate::TaskError::Cancelled,
            },
        });
        let text = String::from_utf8(r.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "finished");
        assert_eq!(lines[0]["name"], "m::f");
        assert_eq!(lines[0]["elapsed"], 1.5);
        assert_eq!(lines[0]["runtime"], 0.25);
        assert!(lines[0]["at"].as_f64().unwrap() > 1.0e9);
        assert_eq!(lines[1]["event"], "failed");
        assert_eq!(lines[1]["error"], "Cancelled");
    }
}
