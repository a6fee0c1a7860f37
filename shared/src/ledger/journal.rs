//! The journal: one ledger entry per deletion and deregistration amiguard made, under its run,
//! so that one `Query` on `pk = run#<run-id>` lists everything a run deleted (and what is needed
//! to restore it).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::store::{Condition, Item, LedgerStore};
use super::{keys, TTL_ATTRIBUTE};
use crate::error::AwsError;

/// How long journal entries are kept.
pub const KEEP_JOURNAL: Duration = Duration::days(400);

/// What was deleted or deregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Snapshot,
    Image,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Image => "image",
        }
    }
}

/// One deletion or deregistration, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub run_id: String,
    pub function: &'static str,
    pub region: String,
    pub resource: Resource,
    pub resource_id: String,
    pub time: DateTime<Utc>,
    /// Snapshots: the volume size (GiB).
    pub size_gib: Option<u64>,
    /// The AMI the snapshot was made for, or the retired image of a snapshot.
    pub source_image_id: Option<String>,
    /// The rule that allowed it (`orphan`, `retention`, `unused_image`, ...).
    pub rule: &'static str,
}

/// The key of `resource_id`'s entry in the journal of `run_id`.
pub fn key(run_id: &str, resource_id: &str) -> (String, String) {
    (keys::run(run_id), keys::deleted(resource_id))
}

impl JournalEntry {
    /// The entry as written: `state = deleted` (written ahead of the call; corrected by
    /// [`JournalEntry::failed`] when it does not happen).
    pub fn to_item(&self) -> Item {
        let (pk, sk) = key(&self.run_id, &self.resource_id);
        Item::new(pk, sk)
            .with_s("kind", "journal")
            .with_s("state", "deleted")
            .with_s("function", self.function)
            .with_s("region", &self.region)
            .with_s("resource", self.resource.as_str())
            .with_s("resource_id", &self.resource_id)
            .with_time("time", self.time)
            .with_s("rule", self.rule)
            .with_opt_s("source_image_id", self.source_image_id.clone())
            .with_n("size_gib", self.size_gib.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)))
            .with_n(TTL_ATTRIBUTE, (self.time + KEEP_JOURNAL).timestamp())
    }

    /// The entry of a deletion that AWS refused: kept, with the reason (`state = failed`).
    pub fn failed(&self, code: &str, message: &str) -> Item {
        self.to_item().with_s("state", "failed").with_s("code", code).with_s("message", message)
    }
}

/// Writes entries one by one (a handful per delivery); a batch writer uses [`JournalEntry::to_item`].
pub async fn write(store: &impl LedgerStore, entries: &[JournalEntry]) -> Result<(), AwsError> {
    for entry in entries {
        store.put(&entry.to_item(), &Condition::Always).await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_entry_is_keyed_by_its_run_and_expires() {
        let time = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
        let entry = JournalEntry {
            run_id: "r-1".into(),
            function: "orphan-snapshot-sweeper",
            region: "eu-west-1".into(),
            resource: Resource::Snapshot,
            resource_id: "snap-01".into(),
            time,
            size_gib: Some(8),
            source_image_id: Some("ami-0a".into()),
            rule: "orphan",
        };
        let item = entry.to_item();
        assert_eq!((item.pk.as_str(), item.sk.as_str()), ("run#r-1", "deleted#snap-01"));
        assert_eq!(
            (item.s("resource"), item.n("size_gib"), item.s("rule")),
            (Some("snapshot"), Some(8), Some("orphan"))
        );
        assert_eq!(item.n(TTL_ATTRIBUTE), Some((time + KEEP_JOURNAL).timestamp()));
    }
}
