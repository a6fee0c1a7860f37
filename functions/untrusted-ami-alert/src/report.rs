//! The JSON report of an invocation: one instance's (a state change), `instances` (a CloudTrail
//! `RunInstances`) or an audit's. Logged as one line and answered; its fields are a contract. Its
//! lists are cut to fit one log event ([`Report::bound`]), their whole lengths kept in `counts`.

use serde::Serialize;

use amiguard::alert::Severity;

use crate::core::enforce::{self, EnforcementTaken};
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
    /// For `enforcement: withheld`: why nothing was tagged or stopped (a `medium` verdict is not
    /// proven untrusted, and `ENFORCE_UNVERIFIABLE` is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not_enforced: Option<String>,
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
            why_not_enforced: None,
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
            why_not_enforced: None,
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
    /// For `enforcement: withheld`: why nothing was tagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not_enforced: Option<String>,
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
            why_not_enforced: report.why_not_enforced,
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
            why_not_enforced: (details.enforcement == EnforcementTaken::Withheld)
                .then(|| enforce::withheld_because(details.enforcement_mode)),
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
    /// The whole length of `untrusted` and `warnings` (the lists themselves may be cut).
    pub counts: AuditCounts,
    /// Where the entries cut from the lists are, when some were (`null`: the lists are whole).
    pub full_lists: Option<String>,
}

/// The whole length of each list of an audit's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditCounts {
    pub untrusted: usize,
    pub warnings: usize,
}

/// The whole length of a launch's `instances`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LaunchCounts {
    pub instances: usize,
}

/// The answer of an invocation: one instance (state change), `instances` (CloudTrail
/// RunInstances: one report per launched instance) or an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Report {
    Instance(InstanceReport),
    Launch {
        instances: Vec<InstanceReport>,
        /// The whole length of `instances` (the list itself may be cut).
        counts: LaunchCounts,
        /// Where the instances cut from the list are, when some were (`null`: the list is whole).
        full_lists: Option<String>,
    },
    Audit(AuditReport),
}

/// The most entries any list of a report shows (fewer when the report would not fit one log
/// event); the counts are always whole.
pub const LIST_LIMIT: usize = 200;
/// CloudWatch Logs takes events of up to 256 KB: the logged report stays under this.
pub const MAX_REPORT_BYTES: usize = 200_000;

impl Report {
    /// A launch's report: one per instance, in the event's order.
    pub(crate) fn launch(instances: Vec<InstanceReport>) -> Self {
        Self::Launch { instances, counts: LaunchCounts::default(), full_lists: None }
    }

    /// Takes the whole length of each list, then cuts every list to what fits one log event (at
    /// most [`LIST_LIMIT`] entries each, fewer for a large report); `full_lists` (where the rest
    /// is) is said when something was cut. Once per report: the handler's, before it is logged
    /// and answered.
    pub fn bound(&mut self, full_lists: &str) {
        match self {
            Self::Instance(_) => {}
            Self::Launch { instances, counts, .. } => *counts = LaunchCounts { instances: instances.len() },
            Self::Audit(audit) => {
                audit.counts = AuditCounts { untrusted: audit.untrusted.len(), warnings: audit.warnings.len() }
            }
        }
        let mut limit = LIST_LIMIT;
        loop {
            let cut = self.cut(limit);
            if cut {
                self.say_where_the_rest_is(full_lists);
            }
            let size = serde_json::to_string(self).map_or(0, |json| json.len());
            if size <= MAX_REPORT_BYTES || limit == 0 {
                break;
            }
            limit /= 2;
        }
    }

    /// Cuts each list to `limit` entries; answers whether anything was cut.
    fn cut(&mut self, limit: usize) -> bool {
        fn truncate<T>(list: &mut Vec<T>, limit: usize) -> bool {
            let cut = list.len() > limit;
            list.truncate(limit);
            cut
        }
        match self {
            Self::Instance(one) => truncate(&mut one.warnings, limit),
            Self::Launch { instances, .. } => truncate(instances, limit),
            Self::Audit(audit) => truncate(&mut audit.untrusted, limit) | truncate(&mut audit.warnings, limit),
        }
    }

    fn say_where_the_rest_is(&mut self, full_lists: &str) {
        match self {
            Self::Instance(_) => {}
            Self::Launch { full_lists: said, .. } => *said = Some(full_lists.to_string()),
            Self::Audit(audit) => audit.full_lists = Some(full_lists.to_string()),
        }
    }
}

/// Where an invocation's whole lists are, for a report cut to fit: a dry run's are nowhere (it
/// sends and records nothing); an audit's findings are in its digest messages, and those alerted
/// before in the ledger's alert records; a launch's instances each in its own alert.
pub fn full_lists(report: &Report, dry_run: bool, table: Option<&str>, region: &str) -> String {
    if dry_run {
        return "a dry run sends and records nothing: the entries cut from these lists are not kept anywhere; the \
                counts are whole"
            .to_string();
    }
    let sent = match report {
        Report::Audit(_) => {
            "every finding not alerted before is in this audit's digest messages (SNS; each \
                             finding's alert_message_id names its part)"
        }
        _ => "every untrusted instance not alerted before is in its own alert (SNS)",
    };
    match table {
        Some(table) => format!(
            "{sent}; every alert sent is recorded in the ledger table {table}: alert#{region}#<instance-id> (one \
             record per instance and image), folded launch alerts not sent yet under folded-alerts#{region}"
        ),
        None => format!("{sent}; without a ledger (LEDGER_TABLE unset) alerts sent are not recorded"),
    }
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
        let mut launch = Report::launch(vec![one]);
        launch.bound("elsewhere");
        assert_eq!(
            serde_json::to_value(launch).unwrap(),
            json!({"instances": [serde_json::to_value(one_again()).unwrap()], "counts": {"instances": 1}, "full_lists": null})
        );
        let mut audit = Report::Audit(audit(0));
        audit.bound("elsewhere");
        assert_eq!(
            serde_json::to_value(audit).unwrap(),
            json!({"outcome": "audit", "dry_run": false, "audited": 3, "untrusted": [], "alerts_sent": 0, "warnings": [],
                   "counts": {"untrusted": 0, "warnings": 0}, "full_lists": null})
        );
    }

    fn one_again() -> InstanceReport {
        InstanceReport::skipped(false, Some(INSTANCE.into()), "why".into())
    }

    fn audit(findings: usize) -> AuditReport {
        let finding = AuditFinding {
            instance_id: INSTANCE.into(),
            image_id: Some("ami-0123456789abcdef0".into()),
            owner_id: Some("111122223333".into()),
            reasons: vec![
                "owner 111122223333 (no owner alias) is not a trusted provider (trusted: amazon, self)".into()
            ],
            severity: Some(Severity::High),
            alert_message_id: Some("3f1c2a9e-0b4d-4c6e-8a7f-1d2e3f4a5b6c".into()),
            enforcement: EnforcementTaken::Tagged,
            would: vec![],
            why_not_enforced: None,
        };
        AuditReport {
            outcome: Outcome::Audit,
            dry_run: false,
            audited: 3,
            untrusted: vec![finding; findings],
            alerts_sent: findings,
            alerts_would_send: None,
            warnings: (0..findings)
                .map(|i| format!("the tag could not be written on i-{i:017x}: TagLimitExceeded"))
                .collect(),
            counts: AuditCounts::default(),
            full_lists: None,
        }
    }

    #[test]
    fn a_large_report_is_cut_to_fit_one_log_event_with_its_whole_counts_and_where_the_rest_is() {
        for findings in [150, 1_500, 20_000] {
            let mut report = Report::Audit(audit(findings));
            report.bound("the digest and the ledger");
            let line = serde_json::to_string(&report).unwrap();
            assert!(line.len() <= MAX_REPORT_BYTES, "{findings}: {} bytes", line.len());
            let Report::Audit(audit) = report else { panic!() };
            assert_eq!((audit.counts.untrusted, audit.counts.warnings), (findings, findings));
            assert_eq!(audit.alerts_sent, findings);
            assert!(!audit.untrusted.is_empty() && audit.untrusted.len() <= LIST_LIMIT, "{findings}");
            assert_eq!(audit.untrusted.len() == findings, findings <= LIST_LIMIT, "{findings}");
            assert_eq!(audit.full_lists.is_some(), findings > LIST_LIMIT, "{findings}");
        }
        let mut launch = Report::launch(vec![one_again(); 1_500]);
        launch.bound("each alert");
        assert!(serde_json::to_string(&launch).unwrap().len() <= MAX_REPORT_BYTES);
        let Report::Launch { instances, counts, full_lists } = launch else { panic!() };
        assert_eq!((instances.len(), counts.instances, full_lists.as_deref()), (LIST_LIMIT, 1_500, Some("each alert")));
    }

    #[test]
    fn the_full_lists_are_said_where_they_are() {
        let audit = Report::Audit(audit(0));
        let said = full_lists(&audit, false, Some("amiguard-ledger"), "us-east-1");
        assert!(said.contains("digest") && said.contains("amiguard-ledger: alert#us-east-1#<instance-id>"), "{said}");
        assert!(full_lists(&audit, false, None, "us-east-1").contains("LEDGER_TABLE unset"));
        assert!(full_lists(&audit, true, Some("t"), "us-east-1").starts_with("a dry run sends and records nothing"));
        assert!(full_lists(&Report::launch(vec![]), false, Some("t"), "r").contains("its own alert"));
    }
}
