//! Recording an `EC2 AMI State Change`: a deregistration starts the grace clock of the AMI's
//! snapshots earlier than the next sweep would see it gone; other states concern the sweep not at
//! all.

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::ports::Records;
use crate::report::AmiEventReport;

/// Records an AMI's deregistration in the ledger; says why when it does not.
pub(crate) async fn record<L: Records>(
    ledger: Option<&L>,
    read_only: bool,
    region: String,
    image_id: String,
    state: String,
    time: DateTime<Utc>,
) -> Result<AmiEventReport, Error> {
    let mut report = AmiEventReport { outcome: "skipped", image_id, region, state, time, reason: None };
    if report.state != "deregistered" {
        report.reason = Some(format!("state {}: only deregistered starts an orphan's clock", report.state));
        return Ok(report);
    }
    if read_only {
        report.reason = Some("LEDGER_READ_ONLY: not recorded (the sweep sees the AMI gone itself)".into());
        return Ok(report);
    }
    let Some(store) = ledger else {
        report.reason = Some("no ledger is configured (LEDGER_TABLE): the sweep sees the AMI gone itself".into());
        return Ok(report);
    };
    let new = store.record_deregistration(&report.region, &report.image_id, time).await.map_err(Error::Ledger)?;
    report.outcome = if new { "recorded" } else { "already-recorded" };
    Ok(report)
}
