//! What the sweeper keeps of each listed snapshot: the few facts its rules read, compact enough
//! that a region of a million snapshots fits a small Lambda (issue 5: < 512 MB at 1M).
//!
//! `DescribeSnapshots` gives a description and up to 50 tags per snapshot; the planner reads
//! only whether they name a source AMI or put the snapshot under a keep rule of its own
//! (the protect tag, AWS Backup, DLM, Recycle Bin). [`SnapshotFacts::read`] decides those at
//! listing time, page by page, so the description and tags are dropped with the page.

use chrono::{DateTime, Utc};

use super::origin::{self, SourceImages};
use super::planner::KeepReason;
use crate::tags::Tag;

/// An EC2 id (`snap-…`, `ami-…`, an account id), stored inline up to 24 bytes: EC2's ids are at
/// most 22, so a million of them cost no allocation of their own. Longer text still works (it is
/// then allocated); ids are never truncated.
pub type Id = compact_str::CompactString;

/// A snapshot as `DescribeSnapshots` lists it (the fields the sweeper reads), before
/// [`SnapshotFacts::read`] keeps what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotListing {
    pub snapshot_id: String,
    pub owner_id: Option<String>,
    /// EC2's state (`completed`, `pending`, `error`, `recoverable`, `recovering`).
    pub state: String,
    pub start_time: Option<DateTime<Utc>>,
    /// The size of the volume it was taken from (what the snapshot can cost at most).
    pub size_gib: u64,
    pub description: String,
    /// The volume it was taken from; `vol-ffffffff` for a copy.
    pub volume_id: Option<String>,
    /// `standard` or `archive` (`None`: not said, standard).
    pub storage_tier: Option<String>,
    pub tags: Vec<Tag>,
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
}

/// The storage tier of a snapshot that is not archived.
pub const STANDARD_TIER: &str = "standard";

impl SnapshotFacts {
    /// Reads a listed snapshot. `protect_tag` is `PROTECT_TAG`: a snapshot carrying that key in
    /// any letter case, whatever its value, is kept (EC2 keys are case-sensitive, IAM's condition
    /// keys are not: `AMIGUARD:KEEP` is refused by the IAM guard, so it is kept here too).
    pub fn read(listing: &SnapshotListing, protect_tag: &str) -> Self {
        let (description, tags) = (listing.description.as_str(), listing.tags.as_slice());
        let marked = if tags.iter().any(|t| t.key.eq_ignore_ascii_case(protect_tag)) {
            Some(KeepReason::Protected)
        } else if origin::is_aws_backup(description, tags) {
            Some(KeepReason::AwsBackup)
        } else if origin::is_dlm(description, tags) {
            Some(KeepReason::Dlm)
        } else if origin::is_recycle_bin(tags) {
            Some(KeepReason::RecycleBin)
        } else if listing.storage_tier.as_deref().is_some_and(|tier| tier != STANDARD_TIER) {
            // An archived snapshot is billed for 90 days whatever happens: deleting it early saves
            // nothing, and the archive was somebody's decision.
            Some(KeepReason::Archived)
        } else {
            None
        };
        Self {
            snapshot_id: Id::from(listing.snapshot_id.as_str()),
            owner_id: listing.owner_id.as_deref().map(Id::from),
            completed: listing.state == "completed",
            start_time: listing.start_time,
            size_gib: listing.size_gib,
            sources: origin::source_images(description, listing.volume_id.as_deref(), tags),
            marked,
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::tags;

    fn listing(description: &str, tags: Vec<Tag>) -> SnapshotListing {
        SnapshotListing {
            snapshot_id: "snap-0123456789abcdef0".into(),
            owner_id: Some("123456789012".into()),
            state: "completed".into(),
            start_time: None,
            size_gib: 8,
            description: description.into(),
            volume_id: Some("vol-0b".into()),
            storage_tier: Some("standard".into()),
            tags,
        }
    }

    #[test]
    fn the_first_applying_mark_in_rule_order() {
        let read =
            |tags: Vec<Tag>, description: &str| SnapshotFacts::read(&listing(description, tags), tags::KEEP).marked;
        let keep = || Tag::new(tags::KEEP, "");
        let backup = || Tag::new("aws:backup:source-resource", "x");
        let dlm = || Tag::new("aws:dlm:lifecycle-policy-id", "p");
        let bin = || Tag::new("aws:recycle-bin:resource-type", "snapshot");
        assert_eq!(read(vec![bin(), dlm(), backup(), keep()], ""), Some(KeepReason::Protected));
        assert_eq!(read(vec![bin(), dlm(), backup()], ""), Some(KeepReason::AwsBackup));
        assert_eq!(read(vec![bin(), dlm()], ""), Some(KeepReason::Dlm));
        assert_eq!(read(vec![bin()], ""), Some(KeepReason::RecycleBin));
        assert_eq!(read(vec![], "This snapshot is created by the AWS Backup service."), Some(KeepReason::AwsBackup));
        assert_eq!(read(vec![], "Created for policy: policy-0a schedule: daily"), Some(KeepReason::Dlm));
        assert_eq!(read(vec![Tag::new("Name", "web")], "Created by CreateImage(i-01) for ami-0a"), None);
        // The protect tag is the configured key, not amiguard's default, in any letter case.
        let facts = SnapshotFacts::read(&listing("", vec![Tag::new("team:keep", "1")]), "team:keep");
        assert_eq!(facts.marked, Some(KeepReason::Protected));
        assert_eq!(SnapshotFacts::read(&listing("", vec![keep()]), "team:keep").marked, None);
        let shouting = SnapshotFacts::read(&listing("", vec![Tag::new("AMIGUARD:KEEP", "")]), tags::KEEP);
        assert_eq!(shouting.marked, Some(KeepReason::Protected));
        // EC2's storage tier: anything but standard keeps it.
        let mut archived = listing("Created by CreateImage(i-01) for ami-0a", vec![]);
        archived.storage_tier = Some("archive".into());
        assert_eq!(SnapshotFacts::read(&archived, tags::KEEP).marked, Some(KeepReason::Archived));
        archived.storage_tier = None;
        assert_eq!(SnapshotFacts::read(&archived, tags::KEEP).marked, None, "not said: standard");
    }

    #[test]
    fn ids_state_and_sources_are_kept_exactly() {
        let mut listed = listing("Created by CreateImage(i-01) for ami-0a from vol-0b", vec![]);
        listed.tags.push(Tag::new(tags::IMAGE, "ami-0c"));
        listed.state = "pending".into();
        let facts = SnapshotFacts::read(&listed, tags::KEEP);
        assert_eq!(facts.snapshot_id, "snap-0123456789abcdef0");
        assert_eq!(facts.owner_id.as_deref(), Some("123456789012"));
        assert!(!facts.completed);
        assert_eq!(facts.sources.iter().collect::<Vec<_>>(), ["ami-0a", "ami-0c"]);
        assert_eq!(facts.sources.described(), Some("ami-0a"));
        // The same description on another volume's snapshot is not EC2's word for it.
        listed.volume_id = Some("vol-0d".into());
        assert_eq!(SnapshotFacts::read(&listed, tags::KEEP).sources.described(), None);
        // An id longer than EC2's is kept whole, never cut to fit inline.
        listed.snapshot_id = format!("snap-{}", "f".repeat(40));
        assert_eq!(SnapshotFacts::read(&listed, tags::KEEP).snapshot_id, listed.snapshot_id);
        listed.owner_id = None;
        assert_eq!(SnapshotFacts::read(&listed, tags::KEEP).owner_id, None);
    }
}
