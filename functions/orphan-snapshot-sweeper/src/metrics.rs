//! The sweep's CloudWatch Embedded Metric Format lines: one with the run's counts, then one per
//! keep reason that kept any snapshot; [`METRIC_NAMES`] is every metric they carry.

use std::collections::BTreeMap;

use amiguard::metrics;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::core::summary::json_name;
use crate::core::KeepReason;
use crate::report::Report;
use crate::FUNCTION;

/// Every metric the sweeper emits (namespace `amiguard`, dimension `Function`), as the template's
/// dashboard and alarms name them: the run's line ([`emf`]), then `Kept` ([`kept_emf`]).
pub const METRIC_NAMES: &[&str] = &[
    "SnapshotsScanned",
    "Orphans",
    "Deleted",
    "AlreadyGone",
    "DeleteFailed",
    "LeftForNextRun",
    "ReclaimableGiB",
    "EstimatedMonthlySavingsUSD",
    "UnreferencedManualSnapshots",
    "RegionsAborted",
    "ImagesRetired",
    "Kept",
    "FreedBytes",
    "FreedBytesAtMost",
    "FreedMonthlyUSD",
    "FreedMonthlyUSDAtMost",
];
/// The metrics published under a dimension besides `Function`: `Kept` per keep reason.
pub const METRIC_DIMENSIONS: &[(&str, &[&str])] = &[("Kept", &["Reason"])];

/// One CloudWatch Embedded Metric Format object with the run's counts (dimension `Function`).
/// Printed on its own line to stdout, CloudWatch Logs turns it into metrics: alarm on
/// `RegionsAborted` and `DeleteFailed`.
pub fn emf(report: &Report, timestamp: DateTime<Utc>) -> Value {
    let t = &report.totals;
    let metrics = [
        ("SnapshotsScanned", "Count", json!(t.snapshots_scanned)),
        ("Orphans", "Count", json!(t.orphans)),
        ("Deleted", "Count", json!(t.deleted)),
        ("AlreadyGone", "Count", json!(t.already_gone)),
        ("DeleteFailed", "Count", json!(t.failed)),
        ("LeftForNextRun", "Count", json!(t.left_for_next_run)),
        ("ReclaimableGiB", "Gigabytes", json!(t.reclaimable_gib)),
        ("EstimatedMonthlySavingsUSD", "None", json!(t.estimated_monthly_savings_usd)),
        ("UnreferencedManualSnapshots", "Count", json!(t.unreferenced_manual_count)),
        ("RegionsAborted", "Count", json!(t.regions_aborted)),
        ("ImagesRetired", "Count", json!(t.images_retired)),
    ];
    metrics::emf_line(metrics::NAMESPACE, FUNCTION, &[], &[("DryRun", json!(report.dry_run))], &metrics, timestamp)
}

/// The kept snapshots of the run, all regions together: one line per keep reason that kept any
/// (metric `Kept`, dimension `Reason`, the report's name of the reason). An EMF object holds one
/// value per dimension, so each reason needs a line of its own; reasons that kept nothing are left
/// out rather than sent as a dozen zeros every run.
pub fn kept_emf(report: &Report, timestamp: DateTime<Utc>) -> Vec<Value> {
    let mut kept: BTreeMap<KeepReason, u64> = BTreeMap::new();
    for region in &report.regions {
        for (reason, count) in &region.kept {
            *kept.entry(*reason).or_default() += count;
        }
    }
    let dry_run = [("DryRun", json!(report.dry_run))];
    kept.into_iter()
        .map(|(reason, count)| {
            let reason = json_name(&reason);
            let metric = [("Kept", "Count", json!(count))];
            metrics::emf_line(
                metrics::NAMESPACE,
                FUNCTION,
                &[("Reason", reason.as_str())],
                &dry_run,
                &metric,
                timestamp,
            )
        })
        .collect()
}

/// What the run's deletions free (`totals.freed_bytes` and `totals.freed_bytes_at_most`, and their
/// monthly cost by tier): the dashboard's savings panel. In a real run the totals are of the
/// deletions AWS confirmed (their bytes are freed once the Recycle Bin's retention ends); a dry
/// run's plan is not sent ([`emf_lines`]). 0 when nothing was deleted.
pub fn freed_emf(report: &Report, timestamp: DateTime<Utc>) -> Value {
    let t = &report.totals;
    let metrics = [
        ("FreedBytes", "Bytes", json!(t.freed_bytes.unwrap_or(0))),
        ("FreedBytesAtMost", "Bytes", json!(t.freed_bytes_at_most.unwrap_or(0))),
        ("FreedMonthlyUSD", "None", json!(t.freed_monthly_usd.unwrap_or(0.0))),
        ("FreedMonthlyUSDAtMost", "None", json!(t.freed_monthly_usd_at_most.unwrap_or(0.0))),
    ];
    metrics::emf_line(metrics::NAMESPACE, FUNCTION, &[], &[("DryRun", json!(report.dry_run))], &metrics, timestamp)
}

/// Every EMF line of the run: [`emf`], [`freed_emf`] (a real run's only: the freed metrics count
/// the deletions AWS confirmed, never a dry run's plan), then [`kept_emf`].
pub fn emf_lines(report: &Report, timestamp: DateTime<Utc>) -> Vec<Value> {
    let mut lines = vec![emf(report, timestamp)];
    if !report.dry_run {
        lines.push(freed_emf(report, timestamp));
    }
    lines.extend(kept_emf(report, timestamp));
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::summary::tests::report;
    use chrono::TimeZone;

    #[test]
    fn emf_declares_every_metric_it_sets() {
        let line = emf(&report(), Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_780_272_000_000i64);
        assert_eq!(directive["Namespace"], "amiguard");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(line["Function"], FUNCTION);
        let metrics = directive["Metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 11);
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} has no value");
        }
        assert_eq!(line["DeleteFailed"], 1);
        assert_eq!(line["RegionsAborted"], 1);
        assert_eq!(line["ReclaimableGiB"], 30);
    }

    #[test]
    fn freed_carries_the_totals_exact_and_bound_apart() {
        let mut report = report();
        let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert_eq!(
            (freed_emf(&report, at)["FreedBytes"].clone(), freed_emf(&report, at)["FreedBytesAtMost"].clone()),
            (json!(0), json!(0))
        );
        report.totals.freed_bytes = Some(1 << 20);
        report.totals.freed_bytes_at_most = Some(8 << 30);
        report.totals.freed_monthly_usd_at_most = Some(0.4);
        let line = freed_emf(&report, at);
        assert_eq!((&line["FreedBytes"], &line["FreedBytesAtMost"]), (&json!(1 << 20), &json!(8u64 << 30)));
        assert_eq!((&line["FreedMonthlyUSD"], &line["FreedMonthlyUSDAtMost"]), (&json!(0.0), &json!(0.4)));
        let units: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Unit"].as_str().unwrap())
            .collect();
        assert_eq!(units, ["Bytes", "Bytes", "None", "None"]);
    }

    #[test]
    fn kept_is_one_line_per_reason_summed_over_the_regions() {
        let mut report = report();
        report.regions[1].kept = BTreeMap::from([(KeepReason::ReferencedByImage, 3)]);
        let lines = kept_emf(&report, Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let kept: Vec<(&str, &Value, &Value)> =
            lines.iter().map(|l| (l["Reason"].as_str().unwrap(), &l["Kept"], &l["DryRun"])).collect();
        assert_eq!(
            kept,
            [("referenced_by_image", &json!(5), &json!(false)), ("not_from_image", &json!(7), &json!(false))]
        );
        for line in &lines {
            assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function", "Reason"]]));
            assert_eq!(line["Function"], FUNCTION);
        }
        report.regions.iter_mut().for_each(|r| r.kept.clear());
        assert!(kept_emf(&report, Utc::now()).is_empty(), "nothing kept: no Kept line");
    }

    #[test]
    fn the_emitted_metrics_are_exactly_metric_names_with_their_dimensions() {
        let lines = emf_lines(&report(), Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let mut emitted: Vec<(String, Vec<String>)> = lines.iter().flat_map(metrics::declared).collect();
        emitted.sort();
        emitted.dedup();
        let mut expected: Vec<(String, Vec<String>)> = METRIC_NAMES
            .iter()
            .map(|name| {
                let mut dimensions = vec![metrics::FUNCTION_DIMENSION.to_string()];
                let extra = METRIC_DIMENSIONS.iter().find(|(n, _)| n == name).map_or(&[][..], |(_, d)| *d);
                dimensions.extend(extra.iter().map(|d| d.to_string()));
                (name.to_string(), dimensions)
            })
            .collect();
        expected.sort();
        assert_eq!(emitted, expected);
    }

    /// B5: the freed metrics are a real run's (the deletions AWS confirmed), never a dry run's plan.
    #[test]
    fn a_dry_run_sends_no_freed_metrics() {
        let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let freed_lines =
            |report: &Report| emf_lines(report, at).iter().filter(|line| line.get("FreedBytes").is_some()).count();
        let mut report = report();
        report.dry_run = true;
        assert_eq!(freed_lines(&report), 0);
        report.dry_run = false;
        assert_eq!(freed_lines(&report), 1);
    }
}
