//! CloudWatch Embedded Metric Format (EMF): a JSON object printed on a line of its own, which
//! CloudWatch Logs turns into metrics. No `cloudwatch:PutMetricData` permission, no call that
//! could fail or slow a handler: the metrics travel with the logs the function writes anyway.
//!
//! Every amiguard metric is in [`NAMESPACE`] with the dimension [`FUNCTION_DIMENSION`] (the
//! package name); a line may add dimensions of its own (a reason, a severity). Each function keeps
//! the names it emits as string literals beside the code that emits them (`METRIC_NAMES`), so
//! that the template's dashboard can be checked against them.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every amiguard metric.
pub const NAMESPACE: &str = "amiguard";
/// The dimension every amiguard metric carries: the function's package name.
pub const FUNCTION_DIMENSION: &str = "Function";

/// One metric of a line: its name, its CloudWatch unit (`Count`, `Gigabytes`, `None`, ...) and
/// its value.
pub type Metric<'a> = (&'a str, &'a str, Value);

/// One EMF line: the directive declares exactly `metrics`, under one dimension set (`Function`
/// then `dimensions`, in that order), and the object holds each metric's value, each dimension's
/// value and each of `fields` (properties such as `DryRun`: searchable in Logs Insights, not
/// metrics, and no dimension, so a dry run and a real run add up to the same series).
pub fn emf_line(
    namespace: &str,
    function: &str,
    dimensions: &[(&str, &str)],
    fields: &[(&str, Value)],
    metrics: &[Metric<'_>],
    timestamp: DateTime<Utc>,
) -> Value {
    let mut names = vec![FUNCTION_DIMENSION];
    names.extend(dimensions.iter().map(|(name, _)| *name));
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [names],
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    line.insert(FUNCTION_DIMENSION.into(), json!(function));
    for (name, value) in dimensions {
        line.insert((*name).into(), json!(value));
    }
    for (name, value) in fields {
        line.insert((*name).into(), value.clone());
    }
    for (name, _, value) in metrics {
        line.insert((*name).into(), value.clone());
    }
    Value::Object(line)
}

/// What a line declares: each metric's name with the dimension names it is published under, as
/// CloudWatch reads the directive. For the tests that hold the emitted metrics to `METRIC_NAMES`.
pub fn declared(line: &Value) -> Vec<(String, Vec<String>)> {
    let mut declared = Vec::new();
    for directive in line["_aws"]["CloudWatchMetrics"].as_array().into_iter().flatten() {
        for dimensions in directive["Dimensions"].as_array().into_iter().flatten() {
            let dimensions: Vec<String> =
                dimensions.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
            for metric in directive["Metrics"].as_array().into_iter().flatten() {
                if let Some(name) = metric["Name"].as_str() {
                    declared.push((name.to_string(), dimensions.clone()));
                }
            }
        }
    }
    declared
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn the_directive_declares_exactly_the_metrics_the_line_sets() {
        let metrics = [("Deleted", "Count", json!(3)), ("ReclaimableGiB", "Gigabytes", json!(30))];
        let line = emf_line(NAMESPACE, "fn", &[], &[("DryRun", json!(false))], &metrics, at());
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_780_272_000_000i64);
        assert_eq!(directive["Namespace"], "amiguard");
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "Deleted", "Unit": "Count"}, {"Name": "ReclaimableGiB", "Unit": "Gigabytes"}])
        );
        assert_eq!((&line["Deleted"], &line["ReclaimableGiB"]), (&json!(3), &json!(30)));
        // The object holds the directive, the dimension, the field and the two metrics: nothing else.
        let mut keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["Deleted", "DryRun", "Function", "ReclaimableGiB", "_aws"]);
        assert_eq!(
            declared(&line),
            [("Deleted".into(), vec!["Function".into()]), ("ReclaimableGiB".into(), vec!["Function".into()])]
        );
    }

    #[test]
    fn every_dimension_is_declared_and_present_as_a_field_and_fields_are_no_dimensions() {
        let line = emf_line(
            NAMESPACE,
            "untrusted-ami-alert",
            &[("Severity", "high")],
            &[("DryRun", json!(true))],
            &[("AlertsSent", "Count", json!(0))],
            at(),
        );
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function", "Severity"]]));
        assert_eq!((&line["Function"], &line["Severity"]), (&json!("untrusted-ami-alert"), &json!("high")));
        assert_eq!(line["DryRun"], true);
        assert_eq!(declared(&line), [("AlertsSent".into(), vec!["Function".into(), "Severity".into()])]);
    }

    #[test]
    fn declared_reads_nothing_from_a_line_that_is_not_emf() {
        assert!(declared(&json!({"report": {}})).is_empty());
    }
}
