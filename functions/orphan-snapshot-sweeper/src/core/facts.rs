//! What the sweeper knows of what EC2 listed: the few facts its rules read of each snapshot and
//! image, compact enough that a region of a million snapshots fits a small Lambda (issue 5:
//! < 512 MB at 1M), and the reason each kept snapshot is kept.
//!
//! The bottom of the core: every other module of it reads these types, and this one reads none
//! of them. How a listed snapshot becomes its [`SnapshotFacts`] is [`super::listing`].

use chrono::{DateTime, Utc};
use serde::Serialize;

use amiguard::tags::Tag;

/// An EC2 id (`snap-…`, `ami-…`, an account id), stored inline up to 24 bytes: EC2's ids are at
/// most 22, so a million of them cost no allocation of their own. Longer text still works (it is
/// then allocated); ids are never truncated.
pub type Id = compact_str::CompactString;

/// The AMIs a snapshot names: the one EC2's description says it was made for (when consistent
/// with the snapshot), and the others it names with no such proof: those amiguard's
/// `amiguard:image` tags name, and the AMI of a description in EC2's form that disagrees with the
/// snapshot. Any of them existing (or in the Recycle Bin) keeps the snapshot; only the described
/// one can make it an orphan.
///
/// Stored inline, the unproved ones boxed: a million snapshots' sources then cost no allocation
/// unless a snapshot is tagged or oddly described.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceImages {
    described: Option<Id>,
    /// Named without proof: these may keep the snapshot, never make it deletable.
    unproved: Box<[Id]>,
}

impl SourceImages {
    /// `described` is the AMI EC2's own description proves; `unproved`, the others named.
    pub(super) fn new(described: Option<Id>, unproved: Vec<Id>) -> Self {
        Self { described, unproved: unproved.into_boxed_slice() }
    }

    /// Every AMI named, the described one first.
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone {
        self.described.iter().chain(self.unproved.iter()).map(Id::as_str)
    }

    /// The AMI EC2's own description says the snapshot was made for: the only source that can
    /// make it an orphan.
    pub fn described(&self) -> Option<&str> {
        self.described.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.described.is_none() && self.unproved.is_empty()
    }
}

/// What the planner knows of one listed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub snapshot_id: Id,
    /// `None` when the listing did not say: such a snapshot is never treated as ours.
    pub owner_id: Option<Id>,
    /// Its state is `completed`; any other state (or none said) keeps it.
    pub completed: bool,
    /// `None` when the listing did not say: such a snapshot is treated as too young.
    pub start_time: Option<DateTime<Utc>>,
    pub size_gib: u64,
    /// The AMIs its description (when consistent with the snapshot) and `amiguard:image` tags name.
    pub sources: SourceImages,
    /// The first of the keep rules its own fields decide, in the planner's order:
    /// [`KeepReason::Protected`], [`KeepReason::AwsBackup`], [`KeepReason::Dlm`],
    /// [`KeepReason::RecycleBin`], [`KeepReason::Archived`].
    pub marked: Option<KeepReason>,
    /// The volume it was taken from (`vol-ffffffff` for a copy; `None`: not said): its lineage.
    pub volume_id: Option<Id>,
    /// EC2's `FullSnapshotSizeInBytes`, when said: what deleting it frees at most.
    pub full_size_bytes: Option<u64>,
    /// EC2's `StorageTier`, which sets its price.
    pub tier: Tier,
}

/// A snapshot's storage tier (EC2's `StorageTier`), which sets its price (`savings::Prices`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Standard,
    Archive,
}

impl Tier {
    /// EC2's `StorageTier` (`standard`, `archive`; not said: standard).
    pub fn from_ec2(tier: Option<&str>) -> Self {
        match tier {
            Some("archive") => Self::Archive,
            _ => Self::Standard,
        }
    }
}

/// Why a snapshot is kept. One reason per snapshot, the first that applies in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Its `OwnerId` is not this account (shared with us, public, or not said).
    NotOwned,
    /// An image (available, disabled or deprecated) maps it in a block device.
    ReferencedByImage,
    /// The AMI it was made for still exists.
    SourceImageExists,
    /// The AMI it was made for is in the Recycle Bin and can be restored.
    SourceImageInRecycleBin,
    /// It carries the protect tag.
    Protected,
    /// AWS Backup manages it.
    AwsBackup,
    /// Data Lifecycle Manager manages it.
    Dlm,
    /// Recycle Bin manages it (`aws:recycle-bin:*` tags).
    RecycleBin,
    /// In the archive tier (`StorageTier`): billed for its 90 days whatever happens.
    Archived,
    /// Under an EBS snapshot lock (`DescribeLockedSnapshots`): nobody can delete it.
    Locked,
    /// EC2's own words do not say it was made for an AMI (a tag alone never does): a manual
    /// snapshot, never deleted by the sweeper.
    NotFromImage,
    /// Its state is not `completed`.
    NotCompleted,
    /// An orphan amiguard never witnessed: the ledger never recorded its AMI mapping it while the
    /// AMI was registered, so only its description (which anyone can write) ties it to an AMI.
    /// Listed in the report's `unwitnessed` with its size, its grace clock recorded all the same;
    /// deleted only once `ADOPT_UNWITNESSED_ORPHANS=true` adopts it.
    Unwitnessed,
    /// Not an orphan for the grace period yet, by amiguard's own observation (or its start time
    /// is unknown).
    TooYoung,
    /// About to be deleted, but its `createVolumePermission` grants another account or `all` (it
    /// may be in use there), or could not be read. Asked only of the orphans about to be deleted.
    Shared,
    /// An orphan beyond what this run may delete (`MAX_DELETIONS`): next run.
    OverCap,
    /// An orphan in a region where the circuit breaker refused to act.
    CircuitBreaker,
}

impl KeepReason {
    /// Every reason, in the order they apply.
    pub(super) const ALL: [KeepReason; 17] = [
        KeepReason::NotOwned,
        KeepReason::ReferencedByImage,
        KeepReason::SourceImageExists,
        KeepReason::SourceImageInRecycleBin,
        KeepReason::Protected,
        KeepReason::AwsBackup,
        KeepReason::Dlm,
        KeepReason::RecycleBin,
        KeepReason::Archived,
        KeepReason::Locked,
        KeepReason::NotFromImage,
        KeepReason::NotCompleted,
        KeepReason::Unwitnessed,
        KeepReason::TooYoung,
        KeepReason::Shared,
        KeepReason::OverCap,
        KeepReason::CircuitBreaker,
    ];
}

/// What the region's `DescribeImages` said about one image. The snapshot planner reads its id and
/// snapshots; the retirement planner reads the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub image_id: Id,
    pub owner_id: Option<Id>,
    pub name: String,
    /// EC2's state (`available`, `disabled`, `pending`, `failed`, ...).
    pub state: Id,
    pub creation_date: Option<DateTime<Utc>>,
    pub last_launched_time: Option<DateTime<Utc>>,
    pub public: bool,
    /// EC2's `DeregistrationProtection`: `disabled`, `enabled-with-cooldown`,
    /// `enabled-without-cooldown`, or `disabled after <time>` (still on until then).
    pub deregistration_protection: Option<String>,
    /// The snapshots of its EBS block-device mappings.
    pub snapshot_ids: Vec<Id>,
    /// The tags the retirement planner reads (`retire::reads_image_tag`: the protect tag and
    /// `amiguard:created-by`); the EC2 adapter drops the others with the page.
    pub tags: Vec<Tag>,
}

/// A snapshot with Fast Snapshot Restore on in one Availability Zone: billed by the hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FastSnapshotRestore {
    pub snapshot_id: String,
    pub availability_zone: String,
    /// `enabling`, `optimizing`, `enabled` or `disabling`.
    pub state: String,
}
