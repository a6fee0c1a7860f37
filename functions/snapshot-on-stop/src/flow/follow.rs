//! What snapshot-on-stop does once EC2 says what became of its images: the launch template's
//! default launches the newest *available* image, retention counts only available images, and an
//! image that failed is alerted once. The `EC2 AMI State Change` event does it as soon as an image
//! settles; every stop and termination does it again (EventBridge delivers on a best-effort
//! basis), so nothing depends on the event's coming.

use amiguard::alert::AlertPublisher;

use super::alerts::{self, Alerted};
use super::image::Template;
use super::session::Session;
use super::{image, retention, Delivery};
use crate::core::failed_alert::{self, FailedImage};
use crate::core::naming::stopped_at_tag_value;
use crate::core::retention::newest_available;
use crate::core::{LaunchTemplateRef, LaunchTemplateVersion, MadeImage, ManagedImage};
use crate::error::Error;
use crate::ports::{Ec2, Records};
use crate::report::Report;

/// What one settling does for an instance: whose images, which one this delivery made, how many
/// retention keeps, and whether the instance is still there.
pub struct Settlement<'a> {
    pub instance_id: &'a str,
    /// This delivery's image (a stop's): never retired by it. Empty when there is none.
    pub current_image: &'a str,
    /// How many available images retention keeps; `None`: it retires nothing
    /// (`KEEP_AFTER_TERMINATION=all` for a terminated instance).
    pub keep: Option<usize>,
    /// EC2 still has the instance (not terminated): a template or a version can be made from its
    /// configuration. Of a terminated instance, only what exists is used.
    pub instance_live: bool,
}

/// The template's default, retention and the alerts of failed images, from the ledger's records
/// and what EC2 says of each image now. Runs only with a healthy ledger. An alert that cannot be
/// sent is a warning here (the next stop, or the event's retry, sends it).
pub async fn settle<E: Ec2, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    session: &mut Session<'_, L>,
    settlement: &Settlement<'_>,
    report: &mut Report,
) -> Result<(), Error> {
    let ec2 = &delivery.ports.ec2;
    let config = delivery.config;
    let now = delivery.invocation.now;
    let (mut managed, gone) = retention::recorded_images(ec2, &session.records, &config.protect_tag).await?;
    // Deregistered by someone else: no longer counted, no longer looked up.
    for record in gone {
        session.record(&MadeImage { retired_at: Some(now), ..record }).await;
    }
    report.images_not_available = managed.iter().filter(|i| !i.available).map(|i| i.image_id.clone()).collect();
    let newest = newest_available(&managed).cloned();
    let versions = match &newest {
        Some(newest) => launch_newest(ec2, session, settlement, newest, report).await?,
        None => {
            if !managed.is_empty() {
                report.warnings.push(format!(
                    "no image of {} is available yet: the launch template's default moves when one is",
                    settlement.instance_id
                ));
            }
            Vec::new()
        }
    };
    if config.protect_newest {
        guard_newest(ec2, session, &mut managed, newest.as_ref().map(|i| i.image_id.as_str()), report).await;
    } else {
        let held: Vec<&str> = managed
            .iter()
            .filter(|i| i.deregistration_protected)
            .filter(|i| {
                session.records.images.iter().any(|r| r.image_id.as_deref() == Some(&i.image_id) && r.protection_set)
            })
            .map(|i| i.image_id.as_str())
            .collect();
        if !held.is_empty() {
            report.warnings.push(format!(
                "PROTECT_NEWEST is off: the deregistration protection amiguard set on {} stays until a person removes it",
                held.join(", ")
            ));
        }
    }
    if let Some(last) = settlement.keep {
        let keep = retention::Keep::newest(last, config);
        // The image the template's default launches stays, whatever the count: when the default
        // could not move (a terminated instance, no version for the newest image), it is older.
        let default_image =
            report.launch_template.as_ref().and_then(|t| match versions.iter().find(|v| v.version == t.version) {
                Some(version) => version.image_id.clone(),
                None => newest.as_ref().map(|i| i.image_id.clone()),
            });
        let never_retire: Vec<&str> =
            [Some(settlement.current_image), default_image.as_deref()].into_iter().flatten().collect();
        retention::retire(ec2, session, &keep, &managed, &never_retire, report, delivery.invocation).await?;
        if !report.retired_images.is_empty() {
            retention::remove_retired_template_versions(ec2, &versions, report).await;
        }
    }
    let last_good = newest.as_ref().map(|i| i.image_id.as_str());
    for failed in managed.iter().filter(|i| i.failed.is_some()) {
        let alerted =
            alert_failed(delivery, session, settlement.instance_id, failed, last_good, None, &mut report.warnings)
                .await;
        match alerted {
            Alerted::Sent(warning) => {
                report.alerted_images.push(failed.image_id.clone());
                report.warnings.extend(warning);
            }
            Alerted::AlreadySent => {}
            other => report.warnings.push(other.warning(&failed.image_id)),
        }
    }
    Ok(())
}

/// Makes the template's default launch `newest` (creating the template, or the version, from the
/// instance's configuration when missing and the instance is still there). Answers the template's
/// versions before, for the removal of retired images' versions.
async fn launch_newest<L: Records>(
    ec2: &impl Ec2,
    session: &mut Session<'_, L>,
    settlement: &Settlement<'_>,
    newest: &ManagedImage,
    report: &mut Report,
) -> Result<Vec<LaunchTemplateVersion>, Error> {
    let instance_id = settlement.instance_id;
    let stopped_at = newest.stopped_at.unwrap_or_default();
    let template_id = match image::find_template(ec2, &session.records, instance_id).await? {
        Template::Ours(template_id) => template_id,
        // Someone else's under amiguard's name: never changed (no version, no default, nothing
        // deleted in it).
        Template::NotOurs(template_id) => {
            report.warn(Template::warning(instance_id, &template_id, true));
            return Ok(Vec::new());
        }
        Template::None if !settlement.instance_live => {
            report.warnings.push(format!("{instance_id} has no launch template and is gone: none is made"));
            return Ok(Vec::new());
        }
        Template::None => {
            match image::create_template(ec2, instance_id, &newest.image_id, stopped_at).await? {
                Some(template) => {
                    remember_template(session, &newest.image_id, &template).await;
                    report.launch_template = Some(template);
                }
                None => report.warn(image::name_taken_warning(instance_id)),
            }
            return Ok(Vec::new());
        }
    };
    let versions = ec2.list_launch_template_versions(&template_id).await?;
    let version = match image::existing_version(&versions, &newest.image_id) {
        Some(version) => version,
        None if settlement.instance_live => {
            image::version_for(ec2, &template_id, &versions, instance_id, &newest.image_id, stopped_at).await?
        }
        None => {
            report.warnings.push(format!(
                "no version of {template_id} launches {}, and {instance_id} is gone: the default stays",
                newest.image_id
            ));
            let default = versions.iter().find(|v| v.is_default);
            report.launch_template = default.map(|v| LaunchTemplateRef { id: template_id.clone(), version: v.version });
            return Ok(versions);
        }
    };
    if !versions.iter().any(|v| v.version == version && v.is_default) {
        ec2.set_default_launch_template_version(&template_id, version).await?;
    }
    let template = LaunchTemplateRef { id: template_id, version };
    remember_template(session, &newest.image_id, &template).await;
    report.launch_template = Some(template);
    Ok(versions)
}

/// `PROTECT_NEWEST`: EC2's deregistration protection on the newest available image, and off again
/// on the images amiguard protected before. The ledger says which it protected, written *before*
/// the call (as the journal is), so a protection amiguard set is always one it knows about; it is
/// taken off only while EC2 still shows amiguard's own kind (`enabled-without-cooldown`): one a
/// person changed (a cooldown) or removed is theirs from then on. `managed` follows what was done,
/// so that retention sees it. A failure is a warning: protection is a second guard (retention
/// keeps the newest image anyway), and an image whose protection stays is simply not retired.
async fn guard_newest<L: Records>(
    ec2: &impl Ec2,
    session: &mut Session<'_, L>,
    managed: &mut [ManagedImage],
    newest: Option<&str>,
    report: &mut Report,
) {
    const AMIGUARDS_KIND: &str = "enabled-without-cooldown";
    for image in managed.iter_mut() {
        if !session.is_healthy() {
            // What is not recorded would never be taken off again: nothing is changed.
            return;
        }
        let Some(record) =
            session.records.images.iter().find(|r| r.image_id.as_deref() == Some(&image.image_id)).cloned()
        else {
            continue;
        };
        let is_newest = newest == Some(image.image_id.as_str());
        if is_newest && !image.deregistration_protected {
            session.record(&MadeImage { protection_set: true, ..record.clone() }).await;
            if !session.is_healthy() {
                return;
            }
            match ec2.enable_deregistration_protection(&image.image_id).await {
                Ok(()) => {
                    image.deregistration_protected = true;
                    image.deregistration_protection = Some(AMIGUARDS_KIND.to_string());
                    report.protection_enabled.push(image.image_id.clone());
                }
                Err(err) => {
                    session.record(&MadeImage { protection_set: false, ..record }).await;
                    report.warnings.push(format!("{} was not protected from deregistration: {err}", image.image_id))
                }
            }
        } else if !is_newest && record.protection_set {
            if image.deregistration_protection.as_deref() == Some(AMIGUARDS_KIND) {
                if let Err(err) = ec2.disable_deregistration_protection(&image.image_id).await {
                    report.warnings.push(format!(
                        "the deregistration protection of {} could not be taken off ({err}): it is kept",
                        image.image_id
                    ));
                    continue;
                }
                image.deregistration_protected = false;
                image.deregistration_protection = Some("disabled".to_string());
                report.protection_removed.push(image.image_id.clone());
            } else if image.deregistration_protected {
                report.warnings.push(format!(
                    "the deregistration protection of {} was changed by someone else ({}): it is theirs and stays",
                    image.image_id,
                    image.deregistration_protection.as_deref().unwrap_or_default()
                ));
            }
            session.record(&MadeImage { protection_set: false, ..record }).await;
        }
    }
}

/// Records which template version launches `image_id`, when the record does not say so yet.
async fn remember_template<L: Records>(session: &mut Session<'_, L>, image_id: &str, template: &LaunchTemplateRef) {
    let record = session.records.images.iter().find(|r| r.image_id.as_deref() == Some(image_id));
    if let Some(record) = record.filter(|r| r.launch_template.as_ref() != Some(template)).cloned() {
        session.record(&MadeImage { launch_template: Some(template.clone()), ..record }).await;
    }
}

/// Alerts once (the ledger's claim) that `failed`, an image of `instance_id`, failed.
/// `event_reason` is the event's `ErrorMessage`, used when EC2 gives no reason of its own. Then,
/// whatever became of the alert, its Security Hub finding (`SECURITY_HUB_FINDINGS`), whose
/// warnings go to `warnings` (never a failed invocation).
pub async fn alert_failed<E, L: Records, P: AlertPublisher>(
    delivery: &Delivery<'_, E, L, P>,
    session: &Session<'_, L>,
    instance_id: &str,
    failed: &ManagedImage,
    last_good: Option<&str>,
    event_reason: Option<&str>,
    warnings: &mut Vec<String>,
) -> Alerted {
    let record = session.records.images.iter().find(|r| r.image_id.as_deref() == Some(failed.image_id.as_str()));
    let reason = failed.failed.clone().filter(|r| !r.is_empty()).or_else(|| event_reason.map(str::to_string));
    let details = FailedImage {
        image_id: failed.image_id.clone(),
        image_name: record.map(|r| r.name.clone()).unwrap_or_default(),
        instance_id: instance_id.to_string(),
        stopped_at: failed.stopped_at.map(stopped_at_tag_value).unwrap_or_default(),
        reason,
        last_good_image: last_good.map(str::to_string),
        account: delivery.account.map(str::to_string),
        region: session.region().to_string(),
    };
    let alerted = alerts::once(delivery.ports.alerts.as_ref(), session.store(), &details, delivery.invocation).await;
    if let Some(publisher) = delivery.ports.findings.as_deref().filter(|_| !delivery.config.dry_run) {
        let finding = failed_alert::finding(&details, failed.stopped_at, delivery.invocation.clock());
        warnings.extend(publisher.import(std::slice::from_ref(&finding)).await);
    }
    alerted
}
