//! The delivery's CloudWatch EMF line (namespace `amiguard`, dimension `Function`): what the
//! dashboard shows of snapshot-on-stop. Built from the report alone, so a metric says exactly what
//! the logged report says.

use amiguard::metrics;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::report::{Outcome, Report};
use crate::FUNCTION;

/// Every metric snapshot-on-stop emits, as the template's dashboard names them (all under the
/// `Function` dimension only).
pub const METRIC_NAMES: &[&str] = &["ImagesCreated", "ImagesRetired", "ImagesFailed"];

/// One line per delivery that answers with a report (a failed invocation has none: the
/// function's `Errors` and its dead-letter queue count those).
/// - `ImagesCreated`: 1 when this delivery's `CreateImage` made the stop's image (`created`); a
///   redelivery that finds it (`already-created`) makes none.
/// - `ImagesRetired`: the images retention deregistered; a dry run retires none (the images it
///   would retire are in its report, not in the metric).
/// - `ImagesFailed`: failed images this delivery alerted. The alert is sent once per image (the
///   ledger's claim), so each failed image counts once, whichever event or stop found it.
pub fn emf(report: &Report, dry_run: bool, timestamp: DateTime<Utc>) -> Value {
    let dry_run = dry_run || report.outcome == Outcome::DryRun;
    let retired = if dry_run { 0 } else { report.retired_images.len() };
    let metrics = [
        ("ImagesCreated", "Count", json!(u8::from(report.outcome == Outcome::Created))),
        ("ImagesRetired", "Count", json!(retired)),
        ("ImagesFailed", "Count", json!(report.alerted_images.len())),
    ];
    metrics::emf_line(metrics::NAMESPACE, FUNCTION, &[], &[("DryRun", json!(dry_run))], &metrics, timestamp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap()
    }

    fn counts(line: &Value) -> (i64, i64, i64, bool) {
        let n = |name: &str| line[name].as_i64().unwrap();
        (n("ImagesCreated"), n("ImagesRetired"), n("ImagesFailed"), line["DryRun"].as_bool().unwrap())
    }

    #[test]
    fn the_emitted_metrics_are_exactly_metric_names_under_the_function_dimension() {
        let line = emf(&Report::new(Outcome::Created, "i-1"), false, at());
        let emitted = metrics::declared(&line);
        let expected: Vec<(String, Vec<String>)> =
            METRIC_NAMES.iter().map(|name| (name.to_string(), vec!["Function".to_string()])).collect();
        assert_eq!(emitted, expected);
        assert_eq!(line["Function"], FUNCTION);
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "amiguard");
    }

    #[test]
    fn a_created_image_counts_once_and_a_redelivery_not_again() {
        let mut created = Report::new(Outcome::Created, "i-1");
        created.retired_images = vec!["ami-old1".into(), "ami-old2".into()];
        assert_eq!(counts(&emf(&created, false, at())), (1, 2, 0, false));
        assert_eq!(counts(&emf(&Report::new(Outcome::AlreadyCreated, "i-1"), false, at())), (0, 0, 0, false));
        assert_eq!(counts(&emf(&Report::new(Outcome::Skipped, "i-1"), false, at())), (0, 0, 0, false));
    }

    #[test]
    fn a_failed_image_counts_when_this_delivery_alerted_it() {
        let mut failed = Report::new(Outcome::ImageFailed, "i-1");
        failed.alerted_images = vec!["ami-bad".into()];
        assert_eq!(counts(&emf(&failed, false, at())), (0, 0, 1, false));
        // A redelivery finds the alert sent: nothing new failed.
        assert_eq!(counts(&emf(&Report::new(Outcome::ImageFailed, "i-1"), false, at())), (0, 0, 0, false));
    }

    #[test]
    fn a_dry_run_counts_nothing_it_only_would_do() {
        let mut dry = Report::new(Outcome::DryRun, "i-1");
        dry.retired_images = vec!["ami-old1".into()];
        assert_eq!(counts(&emf(&dry, true, at())), (0, 0, 0, true));
        // A skipped delivery of a dry-run function still says it was one.
        assert_eq!(counts(&emf(&Report::new(Outcome::Skipped, "i-1"), true, at())), (0, 0, 0, true));
    }
}
