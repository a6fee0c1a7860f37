//! Recording an `EC2 AMI State Change`, by what EC2 says now, never by what the event says (anyone
//! with `lambda:InvokeFunction` can send one, with any `time`):
//!
//! - `available`: the image's snapshot mapping, as EC2 lists it, so that every own image is
//!   witnessed and not only those a daily sweep happens to list;
//! - `deregistered`: once EC2 no longer lists the AMI, that amiguard learned it was gone, at the
//!   invocation's own clock: the grace clock of its snapshots starts no earlier than that.
//!
//! Other states concern the sweep not at all.

use amiguard::invocation::Invocation;

use crate::error::Error;
use crate::ports::{Ec2, Records};
use crate::report::AmiEventReport;

/// The AMI states the sweeper records.
const AVAILABLE: &str = "available";
const DEREGISTERED: &str = "deregistered";

/// Records the event in the ledger after asking EC2 about the image in its region: listed means
/// listed with `Owners=self` and owned by `account_id`, the account the sweeper acts for. Says why
/// when it records nothing. A failed question is an error: nothing was recorded (the sweep sees
/// the image itself).
pub(crate) async fn record<E: Ec2, L: Records>(
    regions: &[(String, E)],
    ledger: Option<&L>,
    read_only: bool,
    account_id: &str,
    mut report: AmiEventReport,
    invocation: &Invocation,
) -> Result<AmiEventReport, Error> {
    if report.state != AVAILABLE && report.state != DEREGISTERED {
        let reason = format!("state {}: only available and deregistered are recorded", report.state);
        return Ok(skipped(report, reason));
    }
    if read_only {
        return Ok(skipped(report, "LEDGER_READ_ONLY: not recorded (the sweep sees the AMI itself)".into()));
    }
    let Some(store) = ledger else {
        let reason = "no ledger is configured (LEDGER_TABLE): the sweep sees the AMI itself".into();
        return Ok(skipped(report, reason));
    };
    let Some((_, ec2)) = regions.iter().find(|(region, _)| *region == report.region) else {
        let reason = format!("{} is not a region this function sweeps (REGIONS)", report.region);
        return Ok(skipped(report, reason));
    };
    let listed = ec2.image(&report.image_id).await.map_err(Error::Ec2)?;
    let listed = listed.filter(|image| image.owner_id.as_deref() == Some(account_id));
    // One time for every call of this invocation: a redelivery at the same clock changes nothing.
    let now = invocation.now;
    let written = match (report.state.as_str(), listed) {
        (AVAILABLE, Some(image)) => store.record_image(&report.region, &image, now).await,
        (AVAILABLE, None) => {
            let reason =
                format!("{} is not listed by EC2 among this account's images: nothing recorded", report.image_id);
            return Ok(skipped(report, reason));
        }
        (_, Some(image)) => {
            let reason = format!(
                "EC2 still lists {} (state {}): nothing changed, whatever the event says",
                report.image_id, image.state
            );
            return Ok(skipped(report, reason));
        }
        (_, None) => store.record_deregistration(&report.region, &report.image_id, now).await,
    };
    report.outcome = if written.map_err(Error::Ledger)? { "recorded" } else { "already-recorded" };
    Ok(report)
}

fn skipped(report: AmiEventReport, reason: String) -> AmiEventReport {
    AmiEventReport { outcome: "skipped", reason: Some(reason), ..report }
}
