//! The ports snapshot-on-stop acts through: EC2, its records in the ledger, and the alert
//! publisher (`amiguard::alert::AlertPublisher`).

use std::collections::BTreeSet;
use std::future::Future;

use amiguard::alert::sns::SnsAlerts;
use amiguard::findings::FindingsPublisher;
use amiguard::ledger::LedgerStore;
use amiguard::tags::Tag;
use amiguard::AwsError;
use chrono::{DateTime, Utc};

use crate::core::{ImageRecord, InstanceRecords, LaunchTemplateRef, LaunchTemplateVersion, MadeImage, StoppedInstance};

/// The ports the handler acts through, built once per container.
pub struct Ports<E, L, P = SnsAlerts> {
    pub ec2: E,
    /// `None` without `LEDGER_TABLE`: images are made, nothing is retired or followed.
    pub ledger: Option<L>,
    /// `None` without `ALERT_TOPIC_ARN`: a failed image is reported, not alerted.
    pub alerts: Option<P>,
    /// The region of the clients (part of the ledger's keys).
    pub region: String,
    /// Where findings go (`SECURITY_HUB_FINDINGS`); `None`: no finding is imported.
    pub findings: Option<Box<dyn FindingsPublisher>>,
}

/// The EC2 calls snapshot-on-stop makes, behind a narrow trait so that the handler can be
/// exercised against the emulator, or against mocks for what the emulator cannot do.
pub trait Ec2: Sync {
    /// The instance, or `None` when EC2 no longer knows it.
    fn describe_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<StoppedInstance>, AwsError>> + Send;
    /// This account's image named `name`, if any (every state, disabled and deprecated included).
    fn find_own_image_by_name(&self, name: &str) -> impl Future<Output = Result<Option<ImageRecord>, AwsError>> + Send;
    fn describe_image(&self, image_id: &str) -> impl Future<Output = Result<Option<ImageRecord>, AwsError>> + Send;
    /// The descriptions EC2 wrote on these snapshots: `(snapshot id, description)`; unknown ids
    /// are absent.
    fn snapshot_descriptions(
        &self,
        snapshot_ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String)>, AwsError>> + Send;
    /// The snapshots among `snapshot_ids` that carry `protect_tag` (any letter case, any value).
    fn protected_snapshots(
        &self,
        snapshot_ids: &[String],
        protect_tag: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, AwsError>> + Send;
    /// The images among `image_ids` that still exist (own ones, any state); the others are absent.
    fn describe_images(&self, image_ids: &[String]) -> impl Future<Output = Result<Vec<ImageRecord>, AwsError>> + Send;
    /// CreateImage without reboot, tagging the image with `image_tags` and each of its snapshots
    /// with `snapshot_tags` as EC2 creates them (TagSpecifications: the only way the role may
    /// write `amiguard:created-by`).
    fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: &str,
        image_tags: &[Tag],
        snapshot_tags: &[Tag],
    ) -> impl Future<Output = Result<CreateImageOutcome, AwsError>> + Send;
    fn create_tags(&self, resource_ids: &[String], tags: &[Tag]) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// This account's images tagged with every `(key, value)` of `tag_filters`, every page.
    fn list_own_images_tagged(
        &self,
        tag_filters: &[Tag],
    ) -> impl Future<Output = Result<Vec<ImageRecord>, AwsError>> + Send;
    fn deregister_image(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn delete_snapshot(&self, snapshot_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// EC2's own deregistration protection on the image, without a cooldown (so that taking it
    /// off works at once).
    fn enable_deregistration_protection(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn disable_deregistration_protection(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The id of the launch template named `name`, or `None` when there is none.
    fn find_launch_template(&self, name: &str) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// Creates the launch template `name`, tagged `tags` at creation, with one version, its
    /// default, that relaunches the instance's configuration (its `GetLaunchTemplateData`) from
    /// `image_id`. A name taken is AWS's `InvalidLaunchTemplateName.AlreadyExistsException`.
    fn create_launch_template(
        &self,
        name: &str,
        instance_id: &str,
        image_id: &str,
        version_description: &str,
        tags: &[Tag],
    ) -> impl Future<Output = Result<LaunchTemplateRef, AwsError>> + Send;
    /// Creates a version of the template that relaunches the instance's configuration (its
    /// `GetLaunchTemplateData`) from `image_id`; answers its number.
    fn create_launch_template_version(
        &self,
        template_id: &str,
        instance_id: &str,
        image_id: &str,
        version_description: &str,
    ) -> impl Future<Output = Result<i64, AwsError>> + Send;
    fn set_default_launch_template_version(
        &self,
        template_id: &str,
        version: i64,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn list_launch_template_versions(
        &self,
        template_id: &str,
    ) -> impl Future<Output = Result<Vec<LaunchTemplateVersion>, AwsError>> + Send;
    /// Cleanup that loses nothing when it fails: few retries, the caller reports a warning.
    fn delete_launch_template_versions(
        &self,
        template_id: &str,
        versions: &[i64],
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// The answer to CreateImage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateImageOutcome {
    Created(String),
    /// `InvalidAMIName.Duplicate`: an earlier delivery of the same event made it already.
    NameTaken,
}

/// snapshot-on-stop's own records in the ledger (implemented once, for every [`LedgerStore`], in
/// `adapters::ledger`).
pub trait Records: LedgerStore {
    /// The instance's records, in one query.
    fn read_records(
        &self,
        region: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<InstanceRecords, AwsError>> + Send;
    /// Writes (or rewrites) the record of one stop. The caller holds the instance's lease.
    fn write_record(
        &self,
        region: &str,
        instance_id: &str,
        image: &MadeImage,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Says which instance `image_id` was made of: an `EC2 AMI State Change` names only the image.
    fn write_made_of(
        &self,
        region: &str,
        image_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The instance snapshot-on-stop made `image_id` of, when the ledger says it did.
    fn made_of(&self, region: &str, image_id: &str) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// Says that the instance's pre-ledger images were adopted, by the delivery of the stop at
    /// `since_stop`: from then on only images of that stop or later ones are adopted.
    fn mark_adopted(
        &self,
        region: &str,
        instance_id: &str,
        now: DateTime<Utc>,
        since_stop: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}
