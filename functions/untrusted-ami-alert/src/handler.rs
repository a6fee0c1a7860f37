//! One event, end to end: parsed, refused when it is another region's (or, in `flow`, another
//! account's), delivered (`flow`), and its report cut to fit one log event and logged as one line
//! with its EMF lines.

use amiguard::alert::AlertPublisher;
use amiguard::events::EventError;
use amiguard::invocation::Invocation;
use amiguard::ledger::store::LedgerStore;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::Error;
use crate::flow::{self, Failure};
use crate::ports::{CallerIdentity, Ec2, Ports, Records};
use crate::report::{self, Report};
use crate::{event, metrics, FUNCTION};

/// Handles one event. The invocation's clock dates the age conditions of the policy and the
/// ledger's claims.
pub async fn handle<E, P, I, L>(
    config: &Config,
    ports: &Ports<E, P, I, L>,
    payload: &serde_json::Value,
    invocation: &Invocation,
) -> Result<Report, Error>
where
    E: Ec2,
    P: AlertPublisher,
    I: CallerIdentity,
    L: Records,
{
    let event = event::parse(payload)?;
    if let Some(region) = event.origin().region.as_deref().filter(|r| *r != ports.region) {
        return Err(EventError::Unexpected(format!(
            "event from region {region}: this function watches {} (deploy it in each region)",
            ports.region
        ))
        .into());
    }
    match flow::deliver(config, ports, event, invocation).await {
        Ok(mut report) => {
            let mut warnings = config.policy.warnings();
            warnings.extend(config.policy_note.clone());
            add_warnings(&mut report, &warnings);
            log(&mut report, config, ports, invocation);
            Ok(report)
        }
        Err(Failure { error, done }) => {
            if let Some(mut done) = done {
                log(&mut done, config, ports, invocation);
            }
            Err(error)
        }
    }
}

/// Logs the report as one line, its lists cut to fit one log event (their whole lengths in
/// `counts`), then its EMF lines, counted from the whole lists: also when the invocation fails
/// after some alerts went out (those were sent, and count).
fn log<E, P, I, L: Records>(report: &mut Report, config: &Config, ports: &Ports<E, P, I, L>, invocation: &Invocation) {
    let table = ports.ledger.as_ref().map(LedgerStore::table);
    let full_lists = report::full_lists(report, config.dry_run, table, &ports.region);
    let lines = metrics_then_bound(report, &full_lists, invocation.clock());
    amiguard::report::log(FUNCTION, report);
    for line in lines {
        println!("{line}");
    }
}

/// The report's EMF lines, counted from its whole lists; then the report cut to fit one log event.
fn metrics_then_bound(report: &mut Report, full_lists: &str, at: DateTime<Utc>) -> Vec<serde_json::Value> {
    let lines = metrics::emf_lines(report, at);
    report.bound(full_lists);
    lines
}

/// Warnings about the whole invocation (the policy's), on each instance's report; first on an
/// audit's, so that cutting its list to fit one log event never drops them.
fn add_warnings(report: &mut Report, warnings: &[String]) {
    match report {
        Report::Instance(one) => one.warnings.extend_from_slice(warnings),
        Report::Launch { instances, .. } => instances.iter_mut().for_each(|i| i.warnings.extend_from_slice(warnings)),
        Report::Audit(audit) => {
            audit.warnings.splice(0..0, warnings.iter().cloned());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::enforce::EnforcementTaken;
    use crate::report::{AuditFinding, AuditReport, Outcome};
    use amiguard::alert::Severity;

    #[test]
    fn the_metrics_count_the_whole_lists_and_the_policys_warnings_survive_the_cut() {
        let finding = AuditFinding {
            instance_id: "i-0123456789abcdef0".into(),
            image_id: None,
            owner_id: None,
            reasons: vec!["x".repeat(300)],
            severity: Some(Severity::High),
            alert_message_id: Some("m-1".into()),
            enforcement: EnforcementTaken::None,
            would: vec![],
            why_not_enforced: None,
        };
        let mut report = Report::Audit(AuditReport {
            outcome: Outcome::Audit,
            dry_run: false,
            audited: 1_000,
            untrusted: vec![finding; 1_000],
            alerts_sent: 1_000,
            alerts_would_send: None,
            warnings: vec!["a tag could not be written".into(); 1_000],
            counts: Default::default(),
            full_lists: None,
        });
        add_warnings(&mut report, &["the policy trusts any owner".into()]);
        let lines = metrics_then_bound(&mut report, "elsewhere", chrono::Utc::now());
        let high = lines.iter().find(|l| l["Severity"] == "high").unwrap();
        assert_eq!(high["AlertsSent"], 1_000, "every alert sent counts, shown or not");
        let Report::Audit(audit) = report else { panic!() };
        assert!(audit.untrusted.len() < 1_000 && audit.counts.untrusted == 1_000);
        assert_eq!(audit.warnings[0], "the policy trusts any owner");
    }
}
