//! The invocation's CloudWatch EMF lines (namespace `amiguard`, dimensions `Function` and
//! `Severity`): the alerts it sent, by how loud they are. Built from the report alone, so a metric
//! says exactly what the logged report says.

use amiguard::alert::Severity;
use amiguard::metrics;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::{Report, FUNCTION};

/// Every metric untrusted-ami-alert emits, as the template's dashboard names them.
pub const METRIC_NAMES: &[&str] = &["AlertsSent"];
/// The metrics published under a dimension besides `Function`: `AlertsSent` per severity.
pub const METRIC_DIMENSIONS: &[(&str, &[&str])] = &[("AlertsSent", &["Severity"])];
/// Every severity gets its line each invocation (0 when none was sent), so the dashboard's
/// series have no gaps and a quiet day reads 0, not "no data".
const SEVERITIES: [Severity; 2] = [Severity::High, Severity::Medium];

/// `AlertsSent`: the instances this invocation alerted (a launch's alert, or each instance an
/// audit's digest lists), by the severity of each one's own finding. An alert sent before (the
/// ledger holds it), folded into the next digest, or only previewed by a dry run (`DryRun`, which
/// sends nothing) is not counted.
pub fn emf_lines(report: &Report, timestamp: DateTime<Utc>) -> Vec<Value> {
    let (dry_run, sent): (bool, Vec<Option<Severity>>) = match report {
        Report::Instance(one) => (one.dry_run, sent_by(std::slice::from_ref(one))),
        Report::Launch { instances, .. } => (instances.first().is_some_and(|i| i.dry_run), sent_by(instances)),
        Report::Audit(audit) => (
            audit.dry_run,
            audit.untrusted.iter().filter(|f| f.alert_message_id.is_some()).map(|f| f.severity).collect(),
        ),
    };
    SEVERITIES
        .iter()
        .map(|severity| {
            let count = sent.iter().filter(|s| **s == Some(*severity)).count();
            metrics::emf_line(
                metrics::NAMESPACE,
                FUNCTION,
                &[("Severity", severity.as_str())],
                &[("DryRun", json!(dry_run))],
                &[("AlertsSent", "Count", json!(count))],
                timestamp,
            )
        })
        .collect()
}

fn sent_by(instances: &[crate::InstanceReport]) -> Vec<Option<Severity>> {
    instances.iter().filter(|i| i.alert_message_id.is_some()).map(|i| i.severity).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::enforce::EnforcementTaken;
    use crate::{AuditFinding, AuditReport, InstanceReport, Outcome};
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
    }

    fn alerted(severity: Severity, message_id: Option<&str>) -> InstanceReport {
        InstanceReport {
            outcome: Outcome::Untrusted,
            severity: Some(severity),
            alert_message_id: message_id.map(str::to_string),
            ..InstanceReport::skipped(false, Some("i-1".into()), String::new())
        }
    }

    fn counts(lines: &[Value]) -> Vec<(&str, i64)> {
        lines.iter().map(|l| (l["Severity"].as_str().unwrap(), l["AlertsSent"].as_i64().unwrap())).collect()
    }

    #[test]
    fn the_emitted_metrics_are_exactly_metric_names_with_their_dimensions() {
        let lines = emf_lines(&Report::Instance(alerted(Severity::High, Some("m-1"))), at());
        let mut emitted: Vec<(String, Vec<String>)> = lines.iter().flat_map(metrics::declared).collect();
        emitted.dedup();
        let expected: Vec<(String, Vec<String>)> = METRIC_NAMES
            .iter()
            .map(|name| {
                let extra = METRIC_DIMENSIONS.iter().find(|(n, _)| n == name).map_or(&[][..], |(_, d)| *d);
                let mut dimensions = vec![metrics::FUNCTION_DIMENSION.to_string()];
                dimensions.extend(extra.iter().map(|d| d.to_string()));
                (name.to_string(), dimensions)
            })
            .collect();
        assert_eq!(emitted, expected);
        assert!(lines.iter().all(|l| l["Function"] == FUNCTION));
    }

    #[test]
    fn a_launch_counts_the_alerts_it_sent_by_severity_and_every_severity_has_its_line() {
        let launch = Report::launch(vec![
            alerted(Severity::High, Some("m-1")),
            alerted(Severity::Medium, Some("m-2")),
            alerted(Severity::Medium, Some("m-3")),
            // Alerted before, or folded: nothing sent now.
            alerted(Severity::High, None),
        ]);
        assert_eq!(counts(&emf_lines(&launch, at())), [("high", 1), ("medium", 2)]);
        let quiet = Report::Instance(InstanceReport::skipped(false, None, "a stop".into()));
        assert_eq!(counts(&emf_lines(&quiet, at())), [("high", 0), ("medium", 0)]);
    }

    #[test]
    fn an_audit_counts_the_findings_its_digest_sent() {
        let finding = |severity, message_id: Option<&str>| AuditFinding {
            instance_id: "i-1".into(),
            image_id: None,
            owner_id: None,
            reasons: vec![],
            severity: Some(severity),
            alert_message_id: message_id.map(str::to_string),
            enforcement: EnforcementTaken::None,
            would: vec![],
            why_not_enforced: None,
        };
        let audit = Report::Audit(AuditReport {
            outcome: Outcome::Audit,
            dry_run: false,
            audited: 3,
            untrusted: vec![finding(Severity::Medium, Some("d-1")), finding(Severity::High, None)],
            alerts_sent: 1,
            alerts_would_send: None,
            warnings: vec![],
            counts: Default::default(),
            full_lists: None,
        });
        assert_eq!(counts(&emf_lines(&audit, at())), [("high", 0), ("medium", 1)]);
    }
}
