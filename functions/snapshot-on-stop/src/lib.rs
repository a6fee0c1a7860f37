//! snapshot-on-stop: when an instance reaches `stopped`, image it (an image of a stopped instance
//! is consistent), keep a launch template that relaunches it with the same configuration, and
//! retire its older images with their snapshots.

use std::time::Duration;

use amiguard::config::{self, ConfigError, VarSource};
use amiguard::events::{self, EventError};
use amiguard::snapshot_on_stop::core::{self as decide, ManagedImage, SkipReason, SnapshotScope};
use amiguard::snapshot_on_stop::ec2::{
    CreateImageOutcome, LaunchTemplateRef, LaunchTemplateVersion, SnapshotOnStopEc2,
};
use amiguard::snapshot_on_stop::launch_data;
use amiguard::tags::{self, Tag};
use amiguard::AwsError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FUNCTION: &str = "snapshot-on-stop";
const STATE_CHANGE: &str = "EC2 Instance State-change Notification";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub scope: SnapshotScope,
    pub keep_last: usize,
    pub dry_run: bool,
}

impl Config {
    pub fn from_env(source: &dyn VarSource) -> Result<Self, ConfigError> {
        Ok(Self {
            scope: config::choice_var(
                source,
                "SNAPSHOT_SCOPE",
                SnapshotScope::Tagged,
                &[("tagged", SnapshotScope::Tagged), ("all", SnapshotScope::All)],
            )?,
            keep_last: config::number_var(source, "KEEP_LAST", 3usize, 1, 1000)?,
            dry_run: config::bool_var(source, "DRY_RUN", false)?,
        })
    }
}

/// The `detail` of an EC2 state-change notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateChange {
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    pub state: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    AlreadyCreated,
    Skipped,
    DryRun,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub instance_id: String,
    pub image_id: Option<String>,
    pub image_name: Option<String>,
    /// Why the instance was skipped.
    pub reason: Option<String>,
    pub launch_template: Option<LaunchTemplateRef>,
    /// Images deregistered by retention (in a dry run: those that would be).
    pub retired_images: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// Snapshots of retired images that EC2 refused to delete (`InvalidSnapshot.InUse`: another
    /// image uses them); they are kept.
    pub kept_snapshots: Vec<KeptSnapshot>,
    /// Cleanup that did not happen and loses nothing (a launch-template version left behind).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptSnapshot {
    pub snapshot_id: String,
    pub code: String,
}

impl Report {
    fn new(outcome: Outcome, instance_id: &str) -> Self {
        Self {
            outcome,
            instance_id: instance_id.to_string(),
            image_id: None,
            image_name: None,
            reason: None,
            launch_template: None,
            retired_images: Vec::new(),
            deleted_snapshots: Vec::new(),
            kept_snapshots: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn skipped(instance_id: &str, reason: SkipReason) -> Self {
        Self { reason: Some(reason.to_string()), ..Self::new(Outcome::Skipped, instance_id) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("image {0} was created but is not visible to DescribeImages")]
    ImageVanished(String),
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        match err {
            Error::Event(e) => e.into(),
            Error::Aws(e) => e.into(),
            other => {
                lambda_runtime::Diagnostic { error_type: "ImageVanished".into(), error_message: other.to_string() }
            }
        }
    }
}

/// How long to wait for a new image's snapshot ids to appear (AWS fills them in while the image
/// is `pending`) before tagging its snapshots is left for a warning.
const SNAPSHOT_ID_POLLS: u32 = 10;
const SNAPSHOT_ID_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Handles one EventBridge delivery. Idempotent: a redelivery finds the image by its
/// deterministic name and completes what an earlier delivery left undone.
pub async fn handle(
    ec2: &impl SnapshotOnStopEc2,
    config: &Config,
    payload: serde_json::Value,
) -> Result<Report, Error> {
    let event = events::parse_envelope::<StateChange>(&payload)?;
    if event.detail_type != STATE_CHANGE || event.source != "aws.ec2" {
        return Err(EventError::Unexpected(format!(
            "expected `{STATE_CHANGE}` from aws.ec2, got `{}` from {}",
            event.detail_type, event.source
        ))
        .into());
    }
    let instance_id = event.detail.instance_id.as_str();
    if !instance_id.starts_with("i-") {
        return Err(
            EventError::Malformed(format!("`detail.instance-id` is not an instance id: {instance_id:?}")).into()
        );
    }
    if event.detail.state != "stopped" {
        return Ok(Report::skipped(instance_id, SkipReason::EventStateNotStopped(event.detail.state.clone())));
    }
    // The event time names the image, so a redelivery finds it again: without it there is no
    // safe name, and an image per delivery would follow.
    let stopped_at = event.time.ok_or_else(|| EventError::Malformed("missing field `time`".into()))?;

    let Some(instance) = ec2.describe_instance(instance_id).await? else {
        return Ok(Report::skipped(instance_id, SkipReason::InstanceGone));
    };
    if let Err(reason) = decide::select(&instance, config.scope) {
        return Ok(Report::skipped(instance_id, reason));
    }

    let name = decide::image_name(instance_id, stopped_at);
    let existing = ec2.find_own_image_by_name(&name).await?;
    let ownership =
        [Tag::new(tags::SOURCE_INSTANCE, instance_id), Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP)];

    if config.dry_run {
        let mut report = Report::new(Outcome::DryRun, instance_id);
        report.image_name = Some(name);
        report.image_id = existing.as_ref().map(|i| i.image_id.clone());
        let current = existing.map(|i| i.image_id).unwrap_or_default();
        let managed = managed_images(ec2.list_own_images_tagged(&ownership).await?);
        // The image this stop would make counts among those kept.
        let keep_others = if current.is_empty() { config.keep_last - 1 } else { config.keep_last };
        report.retired_images =
            decide::images_to_retire(&managed, keep_others, &current).into_iter().map(|i| i.image_id.clone()).collect();
        return Ok(report);
    }

    let (outcome, image_id) = match existing {
        Some(image) => (Outcome::AlreadyCreated, image.image_id),
        None => {
            let description = decide::image_description(instance_id, stopped_at);
            match ec2.create_image(instance_id, &name, &description, &decide::image_tags(&instance, stopped_at)).await?
            {
                CreateImageOutcome::Created(id) => (Outcome::Created, id),
                CreateImageOutcome::NameTaken => {
                    let image =
                        ec2.find_own_image_by_name(&name).await?.ok_or_else(|| Error::ImageVanished(name.clone()))?;
                    (Outcome::AlreadyCreated, image.image_id)
                }
            }
        }
    };
    let mut report = Report::new(outcome, instance_id);
    report.image_name = Some(name);
    report.image_id = Some(image_id.clone());

    tag_snapshots(ec2, instance_id, stopped_at, &image_id, &mut report).await?;
    let (template, earlier_versions) = ensure_launch_template(ec2, instance_id, &image_id, stopped_at).await?;
    report.launch_template = Some(template);
    retire_old_images(ec2, config, &ownership, &image_id, &earlier_versions, &mut report).await?;
    Ok(report)
}

/// Tags the image's snapshots (CreateTags is idempotent, so a redelivery simply repeats it).
async fn tag_snapshots(
    ec2: &impl SnapshotOnStopEc2,
    instance_id: &str,
    stopped_at: DateTime<Utc>,
    image_id: &str,
    report: &mut Report,
) -> Result<(), Error> {
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
        report.warnings.push(format!("image {image_id} lists no snapshots yet: its snapshots were not tagged"));
        return Ok(());
    }
    ec2.create_tags(&snapshot_ids, &decide::snapshot_tags(instance_id, stopped_at, image_id)).await?;
    Ok(())
}

/// Makes `amiguard-<instance>`'s default version launch `image_id` with the instance's
/// configuration, creating the template or a version only when none launches it yet. Also
/// returns the versions the template had before (none when it was just created), which the
/// retention needs.
async fn ensure_launch_template(
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

/// Keeps the newest `KEEP_LAST` of this instance's images; deregisters the rest, deletes their
/// snapshots and the launch-template versions that launch them. Only images tagged as made by
/// snapshot-on-stop for this instance are ever candidates.
async fn retire_old_images(
    ec2: &impl SnapshotOnStopEc2,
    config: &Config,
    ownership: &[Tag],
    current_image: &str,
    template_versions: &[LaunchTemplateVersion],
    report: &mut Report,
) -> Result<(), Error> {
    let managed = managed_images(ec2.list_own_images_tagged(ownership).await?);
    let retiring: Vec<ManagedImage> =
        decide::images_to_retire(&managed, config.keep_last, current_image).into_iter().cloned().collect();
    for image in &retiring {
        match ec2.deregister_image(&image.image_id).await {
            Ok(()) => {}
            // Gone already (a concurrent delivery retired it): its snapshots still need deleting.
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
        report.retired_images.push(image.image_id.clone());
        for snapshot_id in &image.snapshot_ids {
            match ec2.delete_snapshot(snapshot_id).await {
                Ok(()) => report.deleted_snapshots.push(snapshot_id.clone()),
                Err(err) if err.is_not_found() => {}
                Err(err) if err.has_code("InvalidSnapshot.InUse") => {
                    report.kept_snapshots.push(KeptSnapshot { snapshot_id: snapshot_id.clone(), code: err.code })
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    if !retiring.is_empty() {
        remove_retired_template_versions(ec2, template_versions, report).await;
    }
    Ok(())
}

/// Deletes the launch-template versions that launch a retired image. A failure loses nothing
/// (the version only points at a deregistered image), so it is a warning, not an error.
async fn remove_retired_template_versions(
    ec2: &impl SnapshotOnStopEc2,
    versions: &[LaunchTemplateVersion],
    report: &mut Report,
) {
    let Some(template) = report.launch_template.clone() else { return };
    // The default is `template.version` now (it launches the current image): never stale.
    let stale: Vec<i64> = versions
        .iter()
        .filter(|v| v.version != template.version)
        .filter(|v| v.image_id.as_ref().is_some_and(|id| report.retired_images.contains(id)))
        .map(|v| v.version)
        .collect();
    if stale.is_empty() {
        return;
    }
    if let Err(err) = ec2.delete_launch_template_versions(&template.id, &stale).await {
        report.warnings.push(format!("launch-template versions {stale:?} of {} not deleted: {err}", template.id));
    }
}

fn managed_images(records: Vec<amiguard::snapshot_on_stop::ec2::ImageRecord>) -> Vec<ManagedImage> {
    records
        .into_iter()
        // The listing filters on these tags already; checking again costs nothing and keeps the
        // rule local: only images snapshot-on-stop made are ever retired.
        .filter(|i| tags::value(&i.tags, tags::CREATED_BY) == Some(tags::CREATED_BY_SNAPSHOT_ON_STOP))
        .map(|i| ManagedImage {
            stopped_at: tags::value(&i.tags, tags::STOPPED_AT).and_then(decide::parse_time),
            creation_date: i.creation_date.as_deref().and_then(decide::parse_time),
            image_id: i.image_id,
            snapshot_ids: i.snapshot_ids,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    type Env = &'static [(&'static str, &'static str)];

    fn from(pairs: Env) -> Result<Config, ConfigError> {
        Config::from_env(&|name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_are_tagged_keep_three_and_act() {
        assert_eq!(from(&[]).unwrap(), Config { scope: SnapshotScope::Tagged, keep_last: 3, dry_run: false });
    }

    #[test]
    fn reads_every_setting() {
        let config = from(&[("SNAPSHOT_SCOPE", "all"), ("KEEP_LAST", "7"), ("DRY_RUN", "true")]).unwrap();
        assert_eq!(config, Config { scope: SnapshotScope::All, keep_last: 7, dry_run: true });
    }

    #[test]
    fn invalid_values_name_the_variable_and_what_it_accepts() {
        let cases: [(Env, &str, &str); 4] = [
            (&[("SNAPSHOT_SCOPE", "some")], "SNAPSHOT_SCOPE", "one of tagged, all"),
            (&[("KEEP_LAST", "0")], "KEEP_LAST", "a number from 1 to 1000"),
            (&[("KEEP_LAST", "three")], "KEEP_LAST", "a number from 1 to 1000"),
            (&[("DRY_RUN", "maybe")], "DRY_RUN", "true or false"),
        ];
        for (env, variable, expected) in cases {
            let err = from(env).unwrap_err();
            assert_eq!((err.variable, err.expected.as_str()), (variable, expected));
            assert!(err.to_string().contains(variable));
        }
    }
}
