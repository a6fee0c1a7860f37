//! The narrow traits untrusted-ami-alert acts through, the plain types they answer, and the one
//! bundle of them ([`Ports`]). Their SDK and ledger implementations are in `adapters`.

use std::future::Future;

use chrono::{DateTime, Utc};

use amiguard::alert::Severity;
use amiguard::error::AwsError;
use amiguard::findings::FindingsPublisher;
use amiguard::ledger::LedgerStore;
use amiguard::tags::Tag;

use crate::core::enforce::{InstanceState, LaunchedInstance, StopOutcome};
use crate::core::finding::OpenFinding;
use crate::core::message::AlertDetails;
use crate::core::provenance::Ancestor;
use crate::core::verdict::LaunchImage;

/// The adapters a delivery acts through, built once per container.
pub struct Ports<E, P, I, L> {
    pub ec2: E,
    pub alerts: P,
    pub identity: I,
    /// Where sent alerts are remembered. `None` (no `LEDGER_TABLE`): every event alerts.
    pub ledger: Option<L>,
    /// The region the clients talk to; an event from another region is refused.
    pub region: String,
    /// Where findings go (`SECURITY_HUB_FINDINGS`); `None`: no finding is imported.
    pub findings: Option<Box<dyn FindingsPublisher>>,
}

/// The EC2 calls untrusted-ami-alert makes: DescribeInstances, DescribeImages (also in the
/// regions of images' ancestors), DescribeInstanceImageMetadata, GetImageAncestry, CreateTags and
/// StopInstances. Every listing reads every page and fails on a page token answered twice.
pub trait Ec2: Sync {
    /// The instances among `instance_ids` that EC2 knows, every page; unknown ids are absent.
    fn instances(
        &self,
        instance_ids: &[String],
    ) -> impl Future<Output = Result<Vec<LaunchedInstance>, AwsError>> + Send;
    /// Every instance that is not terminated, every page.
    fn live_instances(&self) -> impl Future<Output = Result<Vec<LaunchedInstance>, AwsError>> + Send;
    /// The images among `image_ids` this account can see (its own, public ones, shared with it),
    /// deprecated and disabled ones included, every page; the others are absent.
    fn visible_images(&self, image_ids: &[String]) -> impl Future<Output = Result<Vec<LaunchImage>, AwsError>> + Send;
    /// [`Ec2::visible_images`] in another region: where an ancestor of an image is (a copy's
    /// source is read in its own region, through a client of that region made once per container).
    fn visible_images_in(
        &self,
        region: &str,
        image_ids: &[String],
    ) -> impl Future<Output = Result<Vec<LaunchImage>, AwsError>> + Send;
    /// What EC2 recorded at launch about each instance's image, even when the image is
    /// deregistered or private (and for instances DescribeInstances no longer lists). Best
    /// effort: few retries.
    fn launch_image_metadata(
        &self,
        instance_ids: &[String],
    ) -> impl Future<Output = Result<Vec<LaunchMetadata>, AwsError>> + Send;
    /// `GetImageAncestry`: the image's ancestors, parent first (the image itself left out), with
    /// what the call says of each (its region, its owner alias; not its owner id). Retried as any
    /// call (a throttled answer is not a lineage that cannot be read); an image's lineage never
    /// changes, so an answer is kept for the container (a failure is not).
    fn image_ancestry(&self, image_id: &str) -> impl Future<Output = Result<Vec<Ancestor>, AwsError>> + Send;
    fn tag_instance(&self, instance_id: &str, tag: &Tag) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn stop_instance(&self, instance_id: &str) -> impl Future<Output = Result<StopOutcome, AwsError>> + Send;
}

/// DescribeInstanceImageMetadata's answer for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchMetadata {
    pub instance_id: String,
    /// The image it was launched from, as EC2 recorded it then.
    pub image: LaunchImage,
    /// The instance's state now, when EC2 says.
    pub instance_state: Option<InstanceState>,
}

/// Which account `self` is: the function's own (STS `GetCallerIdentity`, asked once per
/// container), whatever an event says.
pub trait CallerIdentity: Sync {
    fn account_id(&self) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// untrusted-ami-alert's own records in the ledger, besides the alert-once claims
/// (`amiguard::alert::once`): the launch-alert slots of each image and hour, and the folded
/// launch alerts waiting for the audit's digest. Implemented once, for every [`LedgerStore`]
/// (`adapters::ledger`).
pub trait Records: LedgerStore {
    /// Takes the first free launch-alert slot of `image_id`'s hour.
    fn claim_slot(
        &self,
        region: &str,
        image_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Slot, AwsError>> + Send;
    /// How many launch alerts of `image_id` were counted in `now`'s hour, read without writing (a
    /// dry run says whether a launch would alert, follow up or fold).
    fn slots_taken(
        &self,
        region: &str,
        image_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, AwsError>> + Send;
    /// Gives a slot back after its alert could not be sent: a failed publish counts for nothing.
    fn release_slot(&self, taken: &Taken) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Keeps a folded alert for the next digest.
    fn keep_folded(
        &self,
        region: &str,
        details: &AlertDetails,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Every folded alert waiting for a digest, and how many records could not be read (they
    /// stay, and the caller says so).
    fn folded(&self, region: &str) -> impl Future<Output = Result<(Vec<Folded>, usize), AwsError>> + Send;
    /// Forgets a folded alert once a digest sent it (or it was alerted otherwise).
    fn forget_folded(&self, region: &str, folded: &Folded) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Records that the finding of `instance_id` running `image_id` was imported (active), and
    /// answers when it was first (this time, or an earlier sighting's).
    fn record_finding(
        &self,
        region: &str,
        instance_id: &str,
        image_id: &str,
        severity: Severity,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<DateTime<Utc>, AwsError>> + Send;
    /// Every finding recorded and not archived yet (records that cannot be read are left out:
    /// they stay active, never archived on what could not be read).
    fn open_findings(&self, region: &str) -> impl Future<Output = Result<Vec<OpenFinding>, AwsError>> + Send;
    /// Forgets a finding once Security Hub took its archived record.
    fn forget_finding(&self, region: &str, open: &OpenFinding) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// What one launch's alert may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// One of the first three of the hour: alert as usual.
    Alert(Taken),
    /// The fourth: the follow-up that says more are folded.
    FollowUp(Taken),
    /// Counted, not sent: the audit's digest lists it.
    Folded,
    /// Nothing to count with (no ledger, or it failed): alert as usual.
    Uncounted,
}

/// A slot this delivery took: the n-th launch alert of the image this hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub n: u32,
    pub(crate) pk: String,
    pub(crate) sk: String,
}

/// A folded launch alert, kept until an audit's digest sends it: the instance may be gone by
/// then (an audit lists only live instances, so without this record it would never be named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub details: AlertDetails,
    pub(crate) sk: String,
}
