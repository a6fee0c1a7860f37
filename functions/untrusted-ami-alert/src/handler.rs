//! One event, end to end: parsed, refused when it is another region's, delivered (`flow`), and
//! its report logged as one line with its EMF lines.

use amiguard::alert::AlertPublisher;
use amiguard::events::EventError;
use amiguard::invocation::Invocation;

use crate::config::Config;
use crate::error::Error;
use crate::flow::{self, Failure};
use crate::ports::{CallerIdentity, Ec2, Ports, Records};
use crate::report::Report;
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
            log(&report, invocation);
            Ok(report)
        }
        Err(Failure { error, done }) => {
            if let Some(done) = &done {
                log(done, invocation);
            }
            Err(error)
        }
    }
}

/// Logs the report as one line, then its EMF lines: also when the invocation fails after some
/// alerts went out (those were sent, and count).
fn log(report: &Report, invocation: &Invocation) {
    amiguard::report::log(FUNCTION, report);
    for line in metrics::emf_lines(report, invocation.clock()) {
        println!("{line}");
    }
}

/// Warnings about the whole invocation (the policy's), on each instance's report.
fn add_warnings(report: &mut Report, warnings: &[String]) {
    match report {
        Report::Instance(one) => one.warnings.extend_from_slice(warnings),
        Report::Launch { instances } => instances.iter_mut().for_each(|i| i.warnings.extend_from_slice(warnings)),
        Report::Audit(audit) => audit.warnings.extend_from_slice(warnings),
    }
}
