//! The sweeper's ports: what it needs from EC2 in one region ([`Ec2`]), the publisher of its
//! summary ([`SummaryPublisher`]), its own records in the ledger ([`Records`]), and the one
//! bundle an invocation acts through ([`Ports`]). Their AWS implementations are `adapters`.
//!
//! Every listing reads every page and fails as a whole when any page fails: a partial listing of
//! images would make referenced snapshots look orphaned, so there is no "best effort" here.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use amiguard::ledger::{Item, LedgerStore};
use amiguard::AwsError;
use chrono::{DateTime, Utc};
use hashbrown::{HashMap, HashSet};

use crate::core::partitions::Passes;
use crate::core::savings::{BlockSet, Blocks};
use crate::core::{
    FastSnapshotRestore, Id, ImageFacts, LaunchPermissions, Memory, Orphan, SnapshotFacts, StageRecord, StagedImage,
    UsageEntry, UsageReport,
};
use crate::report::Report;

/// The ports one invocation acts through.
pub struct Ports<'a, E, P, L> {
    /// One EC2 client per region of `REGIONS`, in order.
    pub regions: &'a [(String, E)],
    pub publisher: &'a P,
    /// `None` without `LEDGER_TABLE`: a dry run then has no memory, a real run deletes nothing.
    pub ledger: Option<&'a L>,
}

/// The images that launch templates' default and latest versions launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchTemplateImages {
    pub image_ids: BTreeSet<String>,
    /// Versions whose image is not an AMI id even after `ResolveAlias` (an SSM parameter that
    /// did not resolve): `lt-… version N: <value>`. Any of these means we cannot tell which AMIs
    /// are in use, so nothing is retired in that region.
    pub unresolved: Vec<String>,
}

/// What the sweeper needs from EC2 in one region.
pub trait Ec2: Send + Sync {
    /// Every snapshot `DescribeSnapshots` lists for `OwnerIds=self`, every page, read page by page
    /// into [`SnapshotFacts`] with `protect_tag` (`PROTECT_TAG`).
    fn snapshots(&self, protect_tag: &str) -> impl Future<Output = Result<Vec<SnapshotFacts>, AwsError>> + Send;
    /// Every image of the account (`Owners=self`), disabled and deprecated ones included, with
    /// only the tags the sweeper reads: `protect_tag` (`PROTECT_TAG`) and `amiguard:created-by`.
    fn images(&self, protect_tag: &str) -> impl Future<Output = Result<Vec<ImageFacts>, AwsError>> + Send;
    /// The account's image `image_id` as EC2 lists it now (`DescribeImages` of that id,
    /// `Owners=self`, disabled and deprecated ones included), or `None` when EC2 does not list
    /// it: deregistered, never existed, or another account's. What an AMI event may record comes
    /// from this answer, never from the event.
    fn image(&self, image_id: &str) -> impl Future<Output = Result<Option<ImageFacts>, AwsError>> + Send;
    /// The ids of the AMIs in the Recycle Bin (`ListImagesInRecycleBin`).
    fn images_in_recycle_bin(&self) -> impl Future<Output = Result<BTreeSet<String>, AwsError>> + Send;
    /// The images of every instance that is not terminated.
    fn images_used_by_instances(&self) -> impl Future<Output = Result<BTreeSet<String>, AwsError>> + Send;
    /// The images of every launch template's default and latest versions.
    fn launch_template_images(&self) -> impl Future<Output = Result<LaunchTemplateImages, AwsError>> + Send;
    /// Whether the image has any launch permission (an account, an organization or unit, `all`).
    fn is_image_shared(&self, image_id: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
    /// Snapshots under an EBS snapshot lock (`DescribeLockedSnapshots`, every page): every lock
    /// state but `expired`. Nobody can delete them; the sweeper never tries.
    fn locked_snapshots(&self) -> impl Future<Output = Result<HashSet<Id>, AwsError>> + Send;
    /// Every Fast Snapshot Restore that is not `disabled`, one per snapshot and zone.
    fn fast_snapshot_restores(&self) -> impl Future<Output = Result<Vec<FastSnapshotRestore>, AwsError>> + Send;
    /// The images among `image_ids` that `DescribeImageReferences` finds in use: by an instance,
    /// a launch template (every version), an SSM parameter or an Image Builder recipe.
    fn referenced_images(
        &self,
        image_ids: &[String],
    ) -> impl Future<Output = Result<BTreeSet<String>, AwsError>> + Send;
    /// Whether the snapshot has any create-volume permission (shared with an account or public).
    fn is_snapshot_shared(&self, snapshot_id: &str) -> impl Future<Output = Result<bool, AwsError>> + Send;
    fn deregister_image(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn delete_snapshot(&self, snapshot_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Writes the Recycle Bin rules' tag on `resource_ids` (snapshots or images, at most 1,000:
    /// one `CreateTags`), right before they are deleted or deregistered.
    fn mark_for_recycle_bin(&self, resource_ids: Vec<String>) -> impl Future<Output = Result<(), AwsError>> + Send;

    // Staged retirement (issue 22).

    /// Every own image (`Owners=self`, `IncludeDisabled`, `IncludeDeprecated`, every page) with
    /// what the stages read: its deprecation time, volume sizes and every tag.
    fn staged_images(&self) -> impl Future<Output = Result<Vec<StagedImage>, AwsError>> + Send;
    /// The image's launch permissions: accounts, organizations, units, and whether it is public.
    fn launch_permissions(&self, image_id: &str) -> impl Future<Output = Result<LaunchPermissions, AwsError>> + Send;
    /// Adds `permissions` (accounts, organizations, units) to the image's launch permissions.
    fn add_launch_permissions(
        &self,
        image_id: &str,
        permissions: &LaunchPermissions,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `CreateImageUsageReport` over every account (instances; launch templates to
    /// `template_depth` versions): the report's id.
    fn create_image_usage_report(
        &self,
        image_id: &str,
        template_depth: u32,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// Every usage report of `image_ids` (`DescribeImageUsageReports`, every page), without entries.
    fn image_usage_reports(
        &self,
        image_ids: &[String],
    ) -> impl Future<Output = Result<Vec<UsageReport>, AwsError>> + Send;
    /// A report's entries (`DescribeImageUsageReportEntries`, every page).
    fn image_usage_report_entries(
        &self,
        report_id: &str,
    ) -> impl Future<Output = Result<Vec<UsageEntry>, AwsError>> + Send;
    fn delete_image_usage_report(&self, report_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `EnableImageDeprecation` at the next whole minute after `now` (EC2 refuses the past).
    fn enable_image_deprecation(
        &self,
        image_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn disable_image_deprecation(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `DisableImage`: EC2 also removes every launch permission (record them first).
    fn disable_image(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `EnableImage`: EC2 does not put the launch permissions back.
    fn enable_image(&self, image_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// [`Ec2::snapshots`], counting in `seen` the snapshots listed so far, page by page, so that
    /// a listing cut by the deadline still says how far it came (issue 23: a region too large
    /// for one listing is listed in partitions from the next run on). By default the count is
    /// set once, at the end.
    fn snapshots_counting<'a>(
        &'a self,
        protect_tag: &'a str,
        seen: &'a std::sync::atomic::AtomicU64,
    ) -> impl Future<Output = Result<Vec<SnapshotFacts>, AwsError>> + Send + 'a {
        async move {
            let snapshots = self.snapshots(protect_tag).await?;
            seen.store(snapshots.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(snapshots)
        }
    }

    /// One page of `DescribeSnapshots` for `OwnerIds=self` (`MaxResults` 1000), of the partition
    /// `partition` (a `snapshot-id` filter value such as `snap-*0`; `None`: every snapshot), from
    /// `next_token`. Not retried when throttled: the caller paces its partitions and counts the
    /// throttled answers (`core::partitions`).
    fn snapshot_page(
        &self,
        protect_tag: &str,
        partition: Option<&str>,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<SnapshotPage, AwsError>> + Send {
        let _ = (protect_tag, partition, next_token);
        async { Err(AwsError::new("DescribeSnapshots", "NotImplemented", "no paged listing here")) }
    }

    /// The volumes `DescribeVolumes` lists with the filter `by` (`volume-id` or `snapshot-id`) of
    /// `values` (at most [`VOLUME_FILTER_VALUES`]), every page: each volume's id and the snapshot it
    /// was created from (`None`: from no snapshot). For exact savings (issue 23): what the oldest
    /// snapshot of a lineage descends from, and which planned snapshots a volume came from.
    fn volumes(
        &self,
        by: &'static str,
        values: Vec<String>,
    ) -> impl Future<Output = Result<Vec<(Id, Option<Id>)>, AwsError>> + Send {
        let _ = (by, values);
        async { Err(AwsError::new("DescribeVolumes", "NotImplemented", "no volumes here")) }
    }
}

/// The EBS direct APIs of one region, for exact savings (`EXACT_SAVINGS`): what a snapshot's
/// blocks are and which differ between two snapshots of one lineage, every page. Boxed futures,
/// so that a run holds the regions' clients as `dyn Ebs` ([`EbsRegions`]) beside [`Ports`].
pub trait Ebs: Send + Sync {
    /// Every block index `ListSnapshotBlocks` lists for the snapshot, and the block size.
    fn snapshot_blocks<'a>(&'a self, snapshot_id: &'a str) -> futures::future::BoxFuture<'a, Result<Blocks, AwsError>>;
    /// Every block index `ListChangedBlocks` lists from `first` (the older) to `second`.
    fn changed_blocks<'a>(
        &'a self,
        first: &'a str,
        second: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<BlockSet, AwsError>>;
}

/// The most values one `DescribeVolumes` filter is given.
pub const VOLUME_FILTER_VALUES: usize = 200;

/// One page of a snapshot listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotPage {
    pub snapshots: Vec<SnapshotFacts>,
    pub next_token: Option<String>,
}

/// The EBS direct APIs' client of each region, by region name (a region missing here gets bounds).
pub type EbsRegions = [(String, Box<dyn Ebs>)];

/// Publishes the sweep's summary to `REPORT_TOPIC_ARN`.
pub trait SummaryPublisher: Send + Sync {
    fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// The sweeper's own records in the ledger, on any [`LedgerStore`] (`adapters::ledger`). The
/// functions without `self` only build items and keys, for a batch written with others.
pub trait Records: LedgerStore {
    /// When the last sweep started, by its summary in the ledger (`None`: no sweep yet).
    fn previous_run(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>, AwsError>> + Send;

    /// Reads the region's records and compares them with what EC2 listed now: the live images, and
    /// the images in the Recycle Bin (empty when the check is off). `previous_run` is when the last
    /// sweep started (an image missing now was last seen then).
    ///
    /// The clock of a snapshot whose AMI went away starts at the *latest* evidence of the AMI's
    /// deregistration, never an older one: a record of an image listed live again is stale (it was
    /// restored), and while an image sits in the Recycle Bin its snapshots are kept, so their clock
    /// starts when it leaves the bin, not when it entered.
    fn read_region(
        &self,
        region: &str,
        live_images: &[ImageFacts],
        binned: &BTreeSet<String>,
        now: DateTime<Utc>,
        previous_run: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<RegionMemory, AwsError>> + Send;

    /// The orphan records to write after planning: a record for each candidate without one (first
    /// seen now, or at its AMI's deregistration), and away with the records of snapshots that are no
    /// longer candidates (deleted, gone, or kept by a rule now: their clock starts again if they
    /// ever become orphans again). A candidate this run deletes (`deleting`) needs no record: it is
    /// deletable already, and the journal will say what became of it.
    fn orphan_writes(
        region: &str,
        candidates: &[&Orphan],
        deleting: &HashSet<&str>,
        orphaned_since: &HashMap<Id, DateTime<Utc>>,
    ) -> (Vec<Item>, Vec<(String, String)>);

    /// The orphan record of a snapshot whose deletion failed: its clock goes on (it is still an orphan
    /// since then), and the failure makes it queue behind the others in the next runs.
    fn failed_orphan(region: &str, orphan: &Orphan, code: &str, at: DateTime<Utc>) -> Item;

    /// The key of a deleted snapshot's orphan record (deleted with its journal entry).
    fn orphan_key(region: &str, snapshot_id: &str) -> (String, String);

    /// Records what EC2 listed of an own image (its snapshots' mapping) when an `EC2 AMI State
    /// Change` said it became `available`, first seen `at` (amiguard's clock): the image is then
    /// witnessed though no sweep ever lists it. Written only when the ledger has no record of the
    /// image yet (a sweep's own record is never overwritten). Answers whether it was written.
    fn record_image(
        &self,
        region: &str,
        image: &ImageFacts,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;

    /// Records that an AMI is gone, as amiguard learned it `at` (its own clock, once EC2 no longer
    /// lists the AMI; never an event's `time`). The latest wins (an AMI restored from the Recycle
    /// Bin and deregistered again starts a new clock); an earlier or equal time changes nothing.
    /// Answers whether this one was written.
    fn record_deregistration(
        &self,
        region: &str,
        image_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;

    /// Writes the run's summary (`pk = runs#orphan-snapshot-sweeper`): the one item an unchanged
    /// account's sweep writes; the next run reads its start time.
    fn record_run(&self, report: &Report) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Where the full lists of the run `run_id` are, in the ledger.
    fn full_lists(&self, run_id: &str) -> String;

    /// Staged retirement: every image's retirement record in the region, by image id.
    fn retirement_records(
        &self,
        region: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, StageRecord>, AwsError>> + Send;

    /// Staged retirement: writes one image's record (before a stage is taken, and after), by the
    /// run `run_id`, with the evidence it acts on in words.
    fn record_retirement(
        &self,
        region: &str,
        image_id: &str,
        record: &StageRecord,
        run_id: &str,
        evidence: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// Staged retirement: forgets the record of a candidate that is one no more (its candidacy
    /// begins again, dated anew, when it is one again).
    fn forget_retirement(
        &self,
        region: &str,
        image_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;

    /// What the ledger keeps of the region's snapshot listing passes (`passes#<region>`): the
    /// last complete pass's size and how far the current partitioned pass came.
    fn snapshot_passes(&self, region: &str) -> impl Future<Output = Result<Passes, AwsError>> + Send;

    /// The item of the region's passes, for the batch written before deleting.
    fn snapshot_passes_item(region: &str, passes: &Passes, at: DateTime<Utc>) -> Item;

    /// Records the region's passes (after a complete listing, or partitions covered).
    fn record_snapshot_passes(
        &self,
        region: &str,
        passes: &Passes,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// What the ledger says of one region (for the planner), and what this sweep has to write of
/// the images it listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMemory {
    pub memory: Memory,
    /// The records to write: images new, changed, restored, seen gone, or entering or leaving the
    /// Recycle Bin for the first time.
    pub image_writes: Vec<Item>,
    /// Records that no longer hold: AMI events and orphan clocks of an image listed live again.
    pub stale: Vec<(String, String)>,
}
