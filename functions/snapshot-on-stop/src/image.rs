//! Making the stop's image and its relaunch template, idempotently: a redelivery finds what an
//! earlier delivery made (in the ledger, or by the image's deterministic name) and completes it.

use std::time::Duration;

use amiguard::ledger::LedgerStore;
use amiguard::snapshot_on_stop::core::{self as decide, InstanceFacts};
use amiguard::snapshot_on_stop::ec2::{
    CreateImageOutcome, LaunchTemplateRef, LaunchTemplateVersion, SnapshotOnStopEc2,
};
use amiguard::snapshot_on_stop::launch_data;
use amiguard::snapshot_on_stop::records::MadeImage;
use amiguard::tags::{self, Tag};
use chrono::{DateTime, Utc};

use crate::session::Session;
use crate::{Error, Outcome};

/// How long to wait for a new image's snapshot ids to appear (AWS fills them in while the image
/// is `pending`) before tagging its snapshots is left for a warning.
const SNAPSHOT_ID_POLLS: u32 = 10;
const SNAPSHOT_ID_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// An image of another maker may carry the stop's name when its intent was written at most this
/// long before it was created: clocks differ a little, never by this much.
const CLOCK_SLACK: chrono::Duration = chrono::Duration::minutes(5);

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
pub async fn find_or_create<L: LedgerStore>(
    ec2: &impl SnapshotOnStopEc2,
    session: &mut Session<'_, L>,
    instance: &InstanceFacts,
    stopped_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Made, Error> {
    let instance_id = instance.instance_id.as_str();
    let name = decide::image_name(instance_id, stopped_at);
    let mut record = match session.records.for_stop(stopped_at).cloned() {
        Some(known) if known.retired_at.is_some() => {
            return Ok(Made::Skipped(format!(
                "this stop's image {} was retired since: a late redelivery makes no new one",
                known.image_id.unwrap_or_default()
            )))
        }
        Some(known) => match known.image_id.clone() {
            Some(image_id) => return Ok(Made::Image { outcome: Outcome::AlreadyCreated, image_id, record: known }),
            // An earlier delivery wrote its intent and did not live to record the image.
            None => match ec2.find_own_image_by_name(&name).await? {
                Some(found) if created_after(found.creation_date.as_deref(), known.intended_at - CLOCK_SLACK) => {
                    let record = MadeImage { image_id: Some(found.image_id.clone()), ..known };
                    session.record(&record).await;
                    return Ok(Made::Image { outcome: Outcome::AlreadyCreated, image_id: found.image_id, record });
                }
                Some(found) => return Ok(Made::Skipped(name_taken(&name, &found.image_id))),
                None => known,
            },
        },
        None => {
            if let Some(found) = ec2.find_own_image_by_name(&name).await? {
                if session.is_healthy() {
                    // Not in the ledger, so not amiguard's (adoption already took the old ones).
                    return Ok(Made::Skipped(name_taken(&name, &found.image_id)));
                }
                // Without the ledger the name is all there is; nothing is retired in this mode.
                let record =
                    MadeImage { image_id: Some(found.image_id.clone()), ..MadeImage::intent(stopped_at, &name, now) };
                return Ok(Made::Image { outcome: Outcome::AlreadyCreated, image_id: found.image_id, record });
            }
            MadeImage::intent(stopped_at, &name, now)
        }
    };
    session.record(&record).await;
    let description = decide::image_description(instance_id, stopped_at);
    let (outcome, image_id) =
        match ec2.create_image(instance_id, &name, &description, &decide::image_tags(instance, stopped_at)).await? {
            CreateImageOutcome::Created(id) => (Outcome::Created, id),
            // AWS refused the name: a concurrent delivery made it (only without the lease).
            CreateImageOutcome::NameTaken => {
                let image =
                    ec2.find_own_image_by_name(&name).await?.ok_or_else(|| Error::ImageVanished(name.clone()))?;
                (Outcome::AlreadyCreated, image.image_id)
            }
        };
    record.image_id = Some(image_id.clone());
    session.record(&record).await;
    Ok(Made::Image { outcome, image_id, record })
}

fn name_taken(name: &str, image_id: &str) -> String {
    format!(
        "an image named {name} ({image_id}) exists that amiguard's ledger does not hold: not touched, no image made"
    )
}

fn created_after(creation_date: Option<&str>, earliest: DateTime<Utc>) -> bool {
    creation_date.and_then(decide::parse_time).is_some_and(|created| created >= earliest)
}

/// Tags the image's snapshots (CreateTags is idempotent, so a redelivery simply repeats it) and
/// answers their ids, or a warning when AWS has not listed them yet.
pub async fn tag_snapshots(
    ec2: &impl SnapshotOnStopEc2,
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
    ec2.create_tags(&snapshot_ids, &decide::snapshot_tags(instance_id, stopped_at, image_id)).await?;
    Ok(Ok(snapshot_ids))
}

/// Makes `amiguard-<instance>`'s default version launch `image_id` with the instance's
/// configuration, creating the template or a version only when none launches it yet. Also
/// returns the versions the template had before (none when it was just created), which the
/// retention needs.
pub async fn ensure_launch_template(
    ec2: &impl SnapshotOnStopEc2,
    instance_id: &str,
    image_id: &str,
    stopped_at: DateTime<Utc>,
) -> Result<(LaunchTemplateRef, Vec<LaunchTemplateVersion>), Error> {
    let template_name = decide::launch_template_name(instance_id);
    let description = format!("{image_id}, stopped at {}", decide::stopped_at_tag_value(stopped_at));
    let Some(template_id) = ec2.find_launch_template(&template_name).await? else {
        let data = launch_data::relaunch_data(&ec2.instance_launch_data(instance_id).await?, image_id);
        let tags = [
            Tag::new(tags::SOURCE_INSTANCE, instance_id),
            Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP),
        ];
        return Ok((ec2.create_launch_template(&template_name, data, &description, &tags).await?, Vec::new()));
    };
    let versions = ec2.list_launch_template_versions(&template_id).await?;
    let version = match versions.iter().filter(|v| v.image_id.as_deref() == Some(image_id)).map(|v| v.version).max() {
        Some(version) => version,
        None => {
            let data = launch_data::relaunch_data(&ec2.instance_launch_data(instance_id).await?, image_id);
            ec2.create_launch_template_version(&template_id, data, &description).await?
        }
    };
    if !versions.iter().any(|v| v.version == version && v.is_default) {
        ec2.set_default_launch_template_version(&template_id, version).await?;
    }
    Ok((LaunchTemplateRef { id: template_id, version }, versions))
}
