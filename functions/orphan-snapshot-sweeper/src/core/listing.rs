//! Reading a listed snapshot: `DescribeSnapshots` gives a description and up to 50 tags per
//! snapshot; the planner reads only whether they name a source AMI or put the snapshot under a
//! keep rule of its own (the protect tag, AWS Backup, DLM, Recycle Bin, the archive tier).
//! [`SnapshotListing::read`] decides those at listing time, page by page, so the description and
//! tags are dropped with the page.

use chrono::{DateTime, Utc};

use super::facts::{Id, KeepReason, SnapshotFacts, Tier};
use super::origin;
use amiguard::tags::Tag;

/// A snapshot as `DescribeSnapshots` lists it (the fields the sweeper reads), before
/// [`SnapshotListing::read`] keeps what the rules need.
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

/// The storage tier of a snapshot that is not archived.
pub const STANDARD_TIER: &str = "standard";

impl SnapshotListing {
    /// Reads a listed snapshot. `protect_tag` is `PROTECT_TAG`: a snapshot carrying that key in
    /// any letter case, whatever its value, is kept (EC2 keys are case-sensitive, IAM's condition
    /// keys are not: `AMIGUARD:KEEP` is refused by the IAM guard, so it is kept here too).
    pub fn read(&self, protect_tag: &str) -> SnapshotFacts {
        let (description, tags) = (self.description.as_str(), self.tags.as_slice());
        let marked = if tags.iter().any(|t| t.key.eq_ignore_ascii_case(protect_tag)) {
            Some(KeepReason::Protected)
        } else if origin::is_aws_backup(description, tags) {
            Some(KeepReason::AwsBackup)
        } else if origin::is_dlm(description, tags) {
            Some(KeepReason::Dlm)
        } else if origin::is_recycle_bin(tags) {
            Some(KeepReason::RecycleBin)
        } else if self.storage_tier.as_deref().is_some_and(|tier| tier != STANDARD_TIER) {
            // An archived snapshot is billed for 90 days whatever happens: deleting it early saves
            // nothing, and the archive was somebody's decision.
            Some(KeepReason::Archived)
        } else {
            None
        };
        SnapshotFacts {
            snapshot_id: Id::from(self.snapshot_id.as_str()),
            owner_id: self.owner_id.as_deref().map(Id::from),
            completed: self.state == "completed",
            start_time: self.start_time,
            size_gib: self.size_gib,
            sources: origin::source_images(description, self.volume_id.as_deref(), tags),
            marked,
            volume_id: self.volume_id.as_deref().map(Id::from),
            full_size_bytes: None,
            tier: Tier::from_ec2(self.storage_tier.as_deref()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use amiguard::tags;

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
        let read = |tags: Vec<Tag>, description: &str| listing(description, tags).read(tags::KEEP).marked;
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
        let facts = listing("", vec![Tag::new("team:keep", "1")]).read("team:keep");
        assert_eq!(facts.marked, Some(KeepReason::Protected));
        assert_eq!(listing("", vec![keep()]).read("team:keep").marked, None);
        let shouting = listing("", vec![Tag::new("AMIGUARD:KEEP", "")]).read(tags::KEEP);
        assert_eq!(shouting.marked, Some(KeepReason::Protected));
        // EC2's storage tier: anything but standard keeps it.
        let mut archived = listing("Created by CreateImage(i-01) for ami-0a", vec![]);
        archived.storage_tier = Some("archive".into());
        assert_eq!(archived.read(tags::KEEP).marked, Some(KeepReason::Archived));
        archived.storage_tier = None;
        assert_eq!(archived.read(tags::KEEP).marked, None, "not said: standard");
    }

    #[test]
    fn ids_state_and_sources_are_kept_exactly() {
        let mut listed = listing("Created by CreateImage(i-01) for ami-0a from vol-0b", vec![]);
        listed.tags.push(Tag::new(tags::IMAGE, "ami-0c"));
        listed.state = "pending".into();
        let facts = listed.read(tags::KEEP);
        assert_eq!(facts.snapshot_id, "snap-0123456789abcdef0");
        assert_eq!(facts.owner_id.as_deref(), Some("123456789012"));
        assert!(!facts.completed);
        assert_eq!(facts.sources.iter().collect::<Vec<_>>(), ["ami-0a", "ami-0c"]);
        assert_eq!(facts.sources.described(), Some("ami-0a"));
        // The same description on another volume's snapshot is not EC2's word for it.
        listed.volume_id = Some("vol-0d".into());
        assert_eq!(listed.read(tags::KEEP).sources.described(), None);
        // An id longer than EC2's is kept whole, never cut to fit inline.
        listed.snapshot_id = format!("snap-{}", "f".repeat(40));
        assert_eq!(listed.read(tags::KEEP).snapshot_id, listed.snapshot_id);
        listed.owner_id = None;
        assert_eq!(listed.read(tags::KEEP).owner_id, None);
    }
}
