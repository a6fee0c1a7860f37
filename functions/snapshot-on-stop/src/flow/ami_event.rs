//! `EC2 AMI State Change` for the images snapshot-on-stop made: `available` makes the image's
//! launch-template version the default (when it is the newest available) and runs retention;
//! `failed` keeps everything as it is and alerts once. The event only says *which* image to look
//! at: what is done follows what EC2 says of it now, and only for an image the ledger holds.

use amiguard::alert::AlertPublisher;
use amiguard::events::AmiStateChangeDetail;
use amiguard::tags;
use amiguard::AwsError;

use super::alerts::Alerted;
use super::follow::{self, Settlement};
use super::session::Session;
use super::{image, retention, Delivery};
use crate::config::KeepAfterTermination;
use crate::core::retention::newest_available;
use crate::core::{ImageRecord, MadeImage, ManagedImage};
use crate::error::Error;
use crate::ports::{Ec2, Records};
use crate::report::{Outcome, Report};

/// The states the rule delivers; any other is skipped.
const FOLLOWED: [&str; 2] = ["available", "failed"];

/// An `EC2 AMI State Change` of `detail.image_id` (an AMI id: [`crate::event::parse`] checked it).
pub async fn image_state_changed<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    detail: AmiStateChangeDetail,
    event_region: Option<&str>,
) -> Result<Report, Error> {
    let image_id = detail.image_id.as_str();
    let ports = delivery.ports;
    let mut report = Report::new(Outcome::Skipped, "");
    report.image_id = Some(image_id.to_string());
    let skipped = |mut report: Report, reason: String| {
        report.reason = Some(reason);
        Ok(report)
    };
    if !FOLLOWED.contains(&detail.state.as_str()) {
        return skipped(report, format!("AMI state {}: only available and failed are followed", detail.state));
    }
    if let Some(region) = event_region.filter(|r| *r != ports.region) {
        return skipped(report, format!("the image is in {region}; this function follows {}", ports.region));
    }
    let Some(store) = ports.ledger.as_ref() else {
        return skipped(report, "no ledger is configured (LEDGER_TABLE): images are not followed".into());
    };
    let Some(instance_id) = store.made_of(&ports.region, image_id).await? else {
        return skipped(report, "not an image snapshot-on-stop made (the ledger holds no record of it)".into());
    };
    report.instance_id = instance_id.clone();
    let mut session = if delivery.config.dry_run {
        Session::read_only(store, &ports.region, &instance_id).await?
    } else {
        Session::open(Some(store), &ports.region, &instance_id, delivery.invocation).await?
    };
    let result = if session.is_healthy() {
        follow_image(delivery, &mut session, &instance_id, &detail, &mut report).await
    } else {
        Ok(())
    };
    // The event comes once: a ledger lost before or during the work fails the invocation, so
    // that Lambda's retries (then the dead-letter queue and its alarm) finish it. Everything it
    // does is idempotent.
    let healthy = session.is_healthy();
    let warnings = session.close().await;
    report.warnings.extend(warnings);
    result?;
    if !healthy {
        return Err(Error::Aws(AwsError::new("Ledger", "LedgerUnavailable", report.warnings.join("; "))));
    }
    Ok(report)
}

async fn follow_image<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    session: &mut Session<'_, L>,
    instance_id: &str,
    detail: &AmiStateChangeDetail,
    report: &mut Report,
) -> Result<(), Error> {
    let image_id = detail.image_id.as_str();
    let ec2 = &delivery.ports.ec2;
    let Some(record) = session.records.images.iter().find(|r| r.image_id.as_deref() == Some(image_id)).cloned() else {
        report.reason = Some(format!("the ledger's records of {instance_id} do not hold the image"));
        return Ok(());
    };
    if record.retired_at.is_some() {
        report.reason = Some("the image was retired since".into());
        return Ok(());
    }
    report.image_name = Some(record.name.clone());
    let Some(image) = ec2.describe_image(image_id).await? else {
        report.reason = Some("EC2 no longer knows the image".into());
        return Ok(());
    };
    report.image_state.clone_from(&image.state);
    match image.state.as_deref() {
        Some("available") => available(delivery, session, instance_id, record, &image, report).await,
        _ if image.has_failed() => failed(delivery, session, instance_id, &image, detail, report).await,
        // EC2 lags the event, or the event is early: the retry finds it settled.
        Some("pending" | "transient") => {
            Err(Error::NotYetSettled { image_id: image_id.to_string(), state: image.state.clone().unwrap_or_default() })
        }
        other => {
            report.reason = Some(format!("EC2 says the image is {}", other.unwrap_or("in no state")));
            Ok(())
        }
    }
}

/// The image is available: the template's default moves to it when it is the newest available
/// image, and retention runs: `KEEP_LAST` while the instance lives, `KEEP_AFTER_TERMINATION` once
/// it is terminated.
async fn available<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    session: &mut Session<'_, L>,
    instance_id: &str,
    record: MadeImage,
    image: &ImageRecord,
    report: &mut Report,
) -> Result<(), Error> {
    let ec2 = &delivery.ports.ec2;
    let config = delivery.config;
    let instance = ec2.describe_instance(instance_id).await?;
    let instance_live = instance.as_ref().is_some_and(|i| !matches!(i.state.as_str(), "terminated" | "shutting-down"));
    // An opt-out tag still on the instance keeps its images, as on a stop and a termination.
    let opted_out = instance.as_ref().is_some_and(|i| {
        tags::value(&i.tags, tags::SNAPSHOT_ON_STOP).is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    });
    let keep = match (instance_live, config.keep_after_termination) {
        _ if opted_out => None,
        (true, _) => Some(config.keep_last),
        (false, KeepAfterTermination::All) => None,
        (false, KeepAfterTermination::Newest(n)) => Some(n),
    };
    if opted_out {
        report.warnings.push(format!("{instance_id} opted out ({}=false): nothing is retired", tags::SNAPSHOT_ON_STOP));
    }
    if config.dry_run {
        report.outcome = Outcome::DryRun;
        if let Some(last) = keep {
            let keep = retention::Keep::newest(last, config);
            report.retired_images = retention::preview(ec2, &session.records, &keep, None).await?;
        }
        return Ok(());
    }
    report.outcome = Outcome::ImageAvailable;
    // The stop's delivery gave up waiting for the snapshot ids (AWS lists them while the image is
    // pending): now they are there. Retention deletes only the snapshots the ledger recorded.
    if record.snapshot_ids.is_empty() && !image.snapshot_ids.is_empty() {
        let stopped_at = record.stopped_at;
        if let Ok(snapshot_ids) = image::tag_snapshots(ec2, instance_id, stopped_at, &image.image_id).await? {
            session.record(&MadeImage { snapshot_ids, ..record }).await;
        }
    }
    let settlement = Settlement { instance_id, current_image: "", keep, instance_live };
    follow::settle(delivery, session, &settlement, report).await
}

/// The image failed: nothing changes (the last good image and the template's default stay,
/// retention does not run), the report says so, and the alert goes once. A failed alert fails the
/// invocation, so that Lambda's retry sends it.
async fn failed<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    session: &mut Session<'_, L>,
    instance_id: &str,
    image: &ImageRecord,
    detail: &AmiStateChangeDetail,
    report: &mut Report,
) -> Result<(), Error> {
    let ec2 = &delivery.ports.ec2;
    let (managed, _) = retention::recorded_images(ec2, &session.records, &delivery.config.protect_tag).await?;
    let last_good = newest_available(&managed).map(|i| i.image_id.clone());
    let Some(failed) = managed.iter().find(|i| i.image_id == image.image_id).cloned() else {
        report.reason = Some("EC2 no longer knows the image".into());
        return Ok(());
    };
    report.images_not_available = managed.iter().filter(|i| !i.available).map(|i| i.image_id.clone()).collect();
    // The event's words are only a fallback for EC2's own reason, and said to be the event's.
    let event_reason =
        detail.error_message.as_deref().filter(|m| !m.is_empty()).map(|m| format!("the event says: {m}"));
    let event_reason = event_reason.as_deref();
    report.reason = Some(failure_reason(&failed, event_reason, last_good.as_deref()));
    if delivery.config.dry_run {
        report.outcome = Outcome::DryRun;
        return Ok(());
    }
    report.outcome = Outcome::ImageFailed;
    let (last_good, warnings) = (last_good.as_deref(), &mut report.warnings);
    match follow::alert_failed(delivery, session, instance_id, &failed, last_good, event_reason, warnings).await {
        Alerted::Sent(warning) => {
            report.alerted_images.push(failed.image_id.clone());
            report.warnings.extend(warning);
        }
        Alerted::AlreadySent => {}
        Alerted::NoTopic => report.warnings.push(Alerted::NoTopic.warning(&failed.image_id)),
        Alerted::InProgress => {
            return Err(Error::Aws(AwsError::new(
                "Publish",
                "AlertInProgress",
                "another delivery claimed this alert and has not sent it yet",
            )))
        }
        Alerted::Failed(err) => return Err(err.into()),
    }
    Ok(())
}

fn failure_reason(failed: &ManagedImage, event_reason: Option<&str>, last_good: Option<&str>) -> String {
    let why = failed.failed.as_deref().filter(|r| !r.is_empty()).or(event_reason).unwrap_or("EC2 gave no reason");
    let kept = match last_good {
        Some(image) => format!("{image} (the newest available image) and the launch template's default are kept"),
        None => "the instance has no available image".to_string(),
    };
    format!("the image failed ({why}): nothing is retired; {kept}")
}
