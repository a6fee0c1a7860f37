//! The JSON report of an invocation: one instance's (a state change), `instances` (a CloudTrail
//! `RunInstances`) or an audit's. Logged as one line and answered; its fields are a contract.

use serde::Serialize;

use amiguard::alert::Severity;

use crate::core::enforce::EnforcementTaken;
use crate::core::message::AlertDetails;
use crate::core::verdict::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Trusted,
    Untrusted,
    Skipped,
    Audit,
}

/// What a dry run would have done about an untrusted instance (a real run's reports name none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WouldDo {
    /// Send its alert now (a launch).
    Alert,
    /// Send the follow-up saying that further launches of its image this hour are folded.
    AlertFollowUp,
    /// Fold its alert (its image had its alerts this hour): the next audit's digest would list it.
    FoldAlert,
    /// List it in the audit's digest.
    AlertInDigest,
    /// Tag it `amiguard:untrusted-ami=<image id>`.
    Tag,
    /// Stop it.
    Stop,
    /// Stop it on its `running` event (EC2 cannot stop a `pending` instance).
    StopWhenRunning,
}

/// The verdict on one instance and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub outcome: Outcome,
    /// `DRY_RUN`: nothing was published, tagged, stopped or written; `would` says what would be.
    pub dry_run: bool,
    pub instance_id: Option<String>,
    pub image_id: Option<String>,
    pub owner_id: Option<String>,
    /// Why untrusted; for `skipped`, why skipped.
    pub reasons: Vec<String>,
    /// For `untrusted`: how loud its alert is (`high`, `medium`), whether or not this invocation
    /// sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The SNS message id of the alert sent by this invocation.
    pub alert_message_id: Option<String>,
    pub enforcement: EnforcementTaken,
    /// The ledger holds the alert for this instance and image: no second alert was sent.
    pub already_alerted: bool,
    /// More than three launches of this image this hour: this one's alert is folded (counted,
    /// listed in the next audit's digest); its enforcement was not.
    pub alert_folded: bool,
    /// What did not work and did not fail the invocation: a tag that could not be written, a
    /// ledger that could not be used (the alert may then repeat).
    pub warnings: Vec<String>,
    /// A dry run's: what a real run would do now (nothing here when it would do nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would: Vec<WouldDo>,
}

impl InstanceReport {
    /// An instance not judged, and why.
    pub(crate) fn skipped(dry_run: bool, instance_id: Option<String>, reason: String) -> Self {
        Self {
            outcome: Outcome::Skipped,
            dry_run,
            instance_id,
            image_id: None,
            owner_id: None,
            reasons: vec![reason],
            severity: None,
            alert_message_id: None,
            enforcement: EnforcementTaken::None,
            already_alerted: false,
            alert_folded: false,
            warnings: Vec::new(),
            would: Vec::new(),
        }
    }

    /// A judged instance, before anything is done about it: `trusted`, or `untrusted` with the
    /// verdict's reasons and severity.
    pub(crate) fn judged(
        dry_run: bool,
        instance_id: String,
        image_id: String,
        owner_id: Option<String>,
        verdict: &Verdict,
    ) -> Self {
        let (outcome, reasons, severity) = match verdict {
            Verdict::Trusted => (Outcome::Trusted, vec![], None),
            Verdict::Untrusted { reasons, severity } => {
                (Outcome::Untrusted, reasons.iter().map(ToString::to_string).collect(), Some(*severity))
            }
        };
        Self {
            outcome,
            dry_run,
            instance_id: Some(instance_id),
            image_id: Some(image_id),
            owner_id,
            reasons,
            severity,
            alert_message_id: None,
            enforcement: EnforcementTaken::None,
            already_alerted: false,
            alert_folded: false,
            warnings: vec![],
            would: vec![],
        }
    }
}

/// One untrusted instance found by the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFinding {
    pub instance_id: String,
    pub image_id: Option<String>,
    pub owner_id: Option<String>,
    pub reasons: Vec<String>,
    /// How loud its alert is (`high`, `medium`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub alert_message_id: Option<String>,
    pub enforcement: EnforcementTaken,
    /// A dry run's: what a real run would do now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would: Vec<WouldDo>,
}

impl AuditFinding {
    /// An untrusted instance the audit judged, as its report says.
    pub(crate) fn judged(report: InstanceReport) -> Self {
        Self {
            instance_id: report.instance_id.unwrap_or_default(),
            image_id: report.image_id,
            owner_id: report.owner_id,
            reasons: report.reasons,
            severity: report.severity,
            alert_message_id: report.alert_message_id,
            enforcement: report.enforcement,
            would: report.would,
        }
    }

    /// A folded launch alert the digest names from its record (its instance gone since, or
    /// judged otherwise now).
    pub(crate) fn folded(details: AlertDetails, alert_message_id: Option<String>, would: Vec<WouldDo>) -> Self {
        Self {
            instance_id: details.instance_id,
            image_id: Some(details.image_id),
            owner_id: details.owner_id,
            reasons: details.reasons,
            severity: Some(details.severity),
            alert_message_id,
            enforcement: details.enforcement,
            would,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Always `audit`.
    pub outcome: Outcome,
    /// `DRY_RUN`: no digest was sent, nothing tagged or written.
    pub dry_run: bool,
    /// Instances judged (every instance that is not terminated).
    pub audited: usize,
    pub untrusted: Vec<AuditFinding>,
    /// Alerts sent by this run (the others were sent before: the ledger holds them).
    pub alerts_sent: usize,
    /// A dry run's: the alerts a real run's digest would send now (the findings whose `would`
    /// says `alert-in-digest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts_would_send: Option<usize>,
    pub warnings: Vec<String>,
}

/// The answer of an invocation: one instance (state change), `instances` (CloudTrail
/// RunInstances: one report per launched instance) or an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Report {
    Instance(InstanceReport),
    Launch { instances: Vec<InstanceReport> },
    Audit(AuditReport),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const INSTANCE: &str = "i-0123456789abcdef0";

    #[test]
    fn report_shapes() {
        let one = InstanceReport::skipped(false, Some(INSTANCE.into()), "why".into());
        assert_eq!(
            serde_json::to_value(Report::Instance(one.clone())).unwrap(),
            json!({"outcome": "skipped", "dry_run": false, "instance_id": INSTANCE, "image_id": null, "owner_id": null, "reasons": ["why"],
                   "alert_message_id": null, "enforcement": "none", "already_alerted": false, "alert_folded": false, "warnings": []})
        );
        assert_eq!(
            serde_json::to_value(Report::Launch { instances: vec![one] }).unwrap()["instances"][0]["outcome"],
            "skipped"
        );
        let audit = Report::Audit(AuditReport {
            outcome: Outcome::Audit,
            dry_run: false,
            audited: 3,
            untrusted: vec![],
            alerts_sent: 0,
            alerts_would_send: None,
            warnings: vec![],
        });
        assert_eq!(
            serde_json::to_value(audit).unwrap(),
            json!({"outcome": "audit", "dry_run": false, "audited": 3, "untrusted": [], "alerts_sent": 0, "warnings": []})
        );
    }
}
