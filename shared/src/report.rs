//! Every handler returns a JSON report and logs the same report as one structured line.

use serde::Serialize;

/// Logs `report` as one line: `report` holds the JSON, `function` who wrote it.
pub fn log<T: Serialize>(function: &'static str, report: &T) {
    match serde_json::to_string(report) {
        Ok(json) => tracing::info!(function, report = %json, "report"),
        Err(err) => tracing::error!(function, error = %err, "report could not be serialised"),
    }
}
