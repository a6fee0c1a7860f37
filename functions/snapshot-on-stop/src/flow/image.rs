//! Making the stop's image and its relaunch template, idempotently: a redelivery finds what an
//! earlier delivery made (in the ledger, or by the image's deterministic name when EC2's own
//! words confirm it) and completes it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::session::Session;
use crate::core::naming::{self, parse_time};
use crate::core::records::made_by_create_image;
use crate::core::{ImageRecord, InstanceRecords, LaunchTemplateRef, LaunchTemplateVersion, MadeImage, StoppedInstance};
use crate::error::Error;
use crate::ports::{CreateImageOutcome, Ec2, Records};
use crate::report::Outcome;

/// How long to wait for a new image's snapshot ids to appear (AWS fills them in while the image
/// is `pending`) before tagging its snapshots is left for a warning.
const SNAPSHOT_ID_POLLS: u32 = 10;
const SNAPSHOT_ID_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// What became of the stop's image.
pub enum Made {
    Image {
        outcome: Outcome,
        image_id: String,
        record: MadeImage,
    },
    /// Nothing to make, with the reason (the report's `reason`).
    Skipped(String),
}

/// Finds or creates the image of the stop at `stopped_at`, recording it before acting on it.
pub async fn find_or_create<L: Records>(
    ec2: &impl Ec2,
    session: &mut Session<'_, L>,
    instance: &StoppedInstance,
    stopped_at: DateTime<Utc>,
    now: DateTime<Utc>,
    protect_tag: &str,
) -> Result<Made, Error> {
    let instance_id = instance.instance_id.as_str();
    let name = naming::image_name(instance_id, stopped_at);
    let known = session.records.for_stop(stopped_at).cloned();
    // An earlier delivery of this stop set out to make the image: the only case in which an image
    // with the stop's name can be ours without the ledger holding its id.
    let intended_before = known.is_some();
    let record = match known {
        Some(known) if known.retired_at.is_some() => {
            return Ok(Made::Skipped(format!(
                "this stop's image {} was retired since: a late redelivery makes no new one",
                known.image_id.unwrap_or_default()
            )))
        }
        Some(known) if known.image_id.is_some() => {
            let image_id = known.image_id.clone().unwrap_or_default();
            return Ok(Made::Image { outcome: Outcome::AlreadyCreated, image_id, record: known });
        }
        // Only an intent: an earlier delivery did not live to record the image (if it made one).
        Some(intent) => intent,
        None => MadeImage::intent(stopped_at, &name, now),
    };
    if let Some(found) = ec2.find_own_image_by_name(&name).await? {
        if session.is_healthy() && !intended_before {
            return Ok(Made::Skipped(format!(
                "an image named {name} ({}) exists that the ledger does not hold (no delivery of this stop set out to make it): not touched, no image made",
                found.image_id
            )));
        }
        return claim_found(ec2, session, instance_id, found, record).await;
    }
    session.record(&record).await;
    let description = naming::image_description(instance_id, stopped_at);
    let image_tags = naming::image_tags(instance, stopped_at, protect_tag);
    let snapshot_tags = naming::snapshot_creation_tags(instance_id, stopped_at);
    match ec2.create_image(instance_id, &name, &description, &image_tags, &snapshot_tags).await? {
        CreateImageOutcome::Created(image_id) => {
            let record = MadeImage { image_id: Some(image_id.clone()), ..record };
            session.record(&record).await;
            session.record_made_of(&image_id, now).await;
            Ok(Made::Image { outcome: Outcome::Created, image_id, record })
        }
        // AWS refused the name: an image took it between the lookup and now.
        CreateImageOutcome::NameTaken => {
            let found = ec2.find_own_image_by_name(&name).await?.ok_or_else(|| Error::ImageVanished(name.clone()))?;
            claim_found(ec2, session, instance_id, found, record).await
        }
    }
}

/// An image already carries the stop's name, and a delivery of this stop recorded its intent to
/// make it (a crashed delivery, or this one losing a race for the name). With the ledger, it is
/// this stop's image only when it was made after the stop and EC2's own words say CreateImage
/// made it of this instance; anything else is somebody else's and is never touched. Without the
/// ledger the name is all there is (and nothing is retired in that mode).
async fn claim_found<L: Records>(
    ec2: &impl Ec2,
    session: &mut Session<'_, L>,
    instance_id: &str,
    found: ImageRecord,
    record: MadeImage,
) -> Result<Made, Error> {
    let record = MadeImage { image_id: Some(found.image_id.clone()), ..record };
    if !session.is_healthy() {
        return Ok(Made::Image { outcome: Outcome::AlreadyCreated, image_id: found.image_id, record });
    }
    if found.snapshot_ids.is_empty() {
        // Still pending: EC2 has not listed its snapshots, so it cannot vouch for it yet.
        return Err(Error::NotYetVerifiable(found.image_id));
    }
    let created = found.creation_date.as_deref().and_then(parse_time);
    if created.is_none_or(|created| created < record.stopped_at) {
        // Made before the instance stopped (or EC2 does not say when): not an image of this stop.
        return Ok(Made::Skipped(format!(
            "an image named {} ({}) exists that was not made after this stop: not touched, no image made",
            record.name, found.image_id
        )));
    }
    let descriptions = ec2.snapshot_descriptions(&found.snapshot_ids).await?;
    if !made_by_create_image(instance_id, &found, &descriptions) {
        return Ok(Made::Skipped(format!(
            "an image named {} ({}) exists that EC2 does not say CreateImage made of {instance_id}: not touched, no image made",
            record.name, found.image_id
        )));
    }
    session.record(&record).await;
    session.record_made_of(&found.image_id, record.intended_at).await;
    Ok(Made::Image { outcome: Outcome::AlreadyCreated, image_id: found.image_id, record })
}

/// Tags the image's snapshots with the AMI's id (CreateTags is idempotent, so a redelivery simply
/// repeats it; never `amiguard:created-by`, which they got at creation) and answers their ids, or
/// a warning when AWS has not listed them yet.
pub async fn tag_snapshots(
    ec2: &impl Ec2,
    instance_id: &str,
    stopped_at: DateTime<Utc>,
    image_id: &str,
) -> Result<Result<Vec<String>, String>, Error> {
    let mut polls = 0;
    let snapshot_ids = loop {
        let image = ec2.describe_image(image_id).await?.ok_or_else(|| Error::ImageVanished(image_id.to_string()))?;
        if !image.snapshot_ids.is_empty() || polls >= SNAPSHOT_ID_POLLS {
            break image.snapshot_ids;
        }
        polls += 1;
        tokio::time::sleep(SNAPSHOT_ID_POLL_INTERVAL).await;
    };
    if snapshot_ids.is_empty() {
        return Ok(Err(format!("image {image_id} lists no snapshots yet: its snapshots were not tagged")));
    }
    ec2.create_tags(&snapshot_ids, &naming::snapshot_tags_after_creation(instance_id, stopped_at, image_id)).await?;
    Ok(Ok(snapshot_ids))
}

/// The launch template named `amiguard-<instance>`, and whether it is amiguard's to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// There is none.
    None,
    /// The instance's records name it: snapshot-on-stop made it.
    Ours(String),
    /// The records do not name it (someone took the name first, or the ledger could not be
    /// read): it is left as it is, with a warning ([`Template::warning`]).
    NotOurs(String),
}

impl Template {
    /// The warning of a template that is left alone (`recorded`: the records were read).
    pub fn warning(instance_id: &str, template_id: &str, recorded: bool) -> String {
        let name = naming::launch_template_name(instance_id);
        if recorded {
            format!(
                "launch template {name} ({template_id}) is not amiguard's (the ledger does not record it): left as it is, no version made in it; delete it and a later stop makes amiguard's own"
            )
        } else {
            format!(
                "launch template {name} ({template_id}) is left as it is: without the ledger, amiguard cannot say it is its own"
            )
        }
    }
}

/// The instance's relaunch template, `amiguard-<instance>`, as `records` (the instance's, as
/// read) say of it.
pub async fn find_template(ec2: &impl Ec2, records: &InstanceRecords, instance_id: &str) -> Result<Template, Error> {
    Ok(match ec2.find_launch_template(&naming::launch_template_name(instance_id)).await? {
        None => Template::None,
        Some(id) if records.holds_template(&id) => Template::Ours(id),
        Some(id) => Template::NotOurs(id),
    })
}

/// The warning of a template name that another took when amiguard made its own.
pub fn name_taken_warning(instance_id: &str) -> String {
    format!(
        "launch template {} was made by someone else meanwhile: left as it is; delete it and a later stop makes amiguard's own",
        naming::launch_template_name(instance_id)
    )
}

fn version_description(image_id: &str, stopped_at: DateTime<Utc>) -> String {
    format!("{image_id}, stopped at {}", naming::stopped_at_tag_value(stopped_at))
}

/// Creates `amiguard-<instance>` with one version, its default, launching `image_id` with the
/// instance's configuration, tagged `amiguard:created-by` at creation (what IAM requires of a
/// template the role changes). Only for an available image: the default never names another.
/// `None`: the name was taken meanwhile ([`name_taken_warning`]): not amiguard's, left alone.
pub async fn create_template(
    ec2: &impl Ec2,
    instance_id: &str,
    image_id: &str,
    stopped_at: DateTime<Utc>,
) -> Result<Option<LaunchTemplateRef>, Error> {
    let name = naming::launch_template_name(instance_id);
    let description = version_description(image_id, stopped_at);
    let tags = naming::launch_template_tags(instance_id);
    match ec2.create_launch_template(&name, instance_id, image_id, &description, &tags).await {
        Ok(template) => Ok(Some(template)),
        Err(err) if err.has_code("InvalidLaunchTemplateName.AlreadyExistsException") => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The version of the template that launches `image_id` (the newest, if several do), created from
/// the instance's configuration now when none does. It does not change the default.
pub async fn version_for(
    ec2: &impl Ec2,
    template_id: &str,
    versions: &[LaunchTemplateVersion],
    instance_id: &str,
    image_id: &str,
    stopped_at: DateTime<Utc>,
) -> Result<i64, Error> {
    if let Some(version) = existing_version(versions, image_id) {
        return Ok(version);
    }
    let description = version_description(image_id, stopped_at);
    Ok(ec2.create_launch_template_version(template_id, instance_id, image_id, &description).await?)
}

/// The newest version that launches `image_id`.
pub fn existing_version(versions: &[LaunchTemplateVersion], image_id: &str) -> Option<i64> {
    versions.iter().filter(|v| v.image_id.as_deref() == Some(image_id)).map(|v| v.version).max()
}
