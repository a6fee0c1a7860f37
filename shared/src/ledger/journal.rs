//! The journal: one ledger entry per deletion and deregistration amiguard made, under its run,
//! so that one `Query` on `pk = run#<run-id>` lists everything a run deleted (and what is needed
//! to restore it).
//!
//! Entries are written *ahead*: `intended` before the call, then `done` or `failed` after it (or
//! taken away when the call was never made). So nothing is deleted that the journal does not
//! hold, and an entry left `intended` says honestly that amiguard set out to delete it and could
//! not say how it ended (the invocation died).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::store::{Condition, Item, LedgerStore};
use super::{keys, TTL_ATTRIBUTE};
use crate::error::AwsError;
use crate::recycle_bin::RecycleBin;

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
    /// Until when the Recycle Bin keeps it restorable once deleted (`None`: no retention rule,
    /// the deletion is final). Counted from `time`, which is before the call: a lower bound.
    pub restorable_until: Option<DateTime<Utc>>,
    /// Snapshots: what deleting it frees, exactly (the EBS direct APIs' blocks), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
    /// Snapshots: what deleting it frees at most, when there is no exact figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes_at_most: Option<u64>,
}

/// The key of `resource_id`'s entry in the journal of `run_id`.
pub fn key(run_id: &str, resource_id: &str) -> (String, String) {
    (keys::run(run_id), keys::deleted(resource_id))
}

impl JournalEntry {
    /// An entry of run `run_id` at `time`, without size or source (see `with_size`, `with_source`).
    pub fn new(
        run_id: &str,
        function: &'static str,
        region: &str,
        resource: Resource,
        resource_id: &str,
        rule: &'static str,
        time: DateTime<Utc>,
    ) -> Self {
        Self {
            run_id: run_id.to_string(),
            function,
            region: region.to_string(),
            resource,
            resource_id: resource_id.to_string(),
            time,
            size_gib: None,
            source_image_id: None,
            rule,
            restorable_until: None,
            freed_bytes: None,
            freed_bytes_at_most: None,
        }
    }

    pub fn with_size(self, size_gib: u64) -> Self {
        Self { size_gib: Some(size_gib), ..self }
    }

    pub fn with_source(self, image_id: &str) -> Self {
        Self { source_image_id: Some(image_id.to_string()), ..self }
    }

    /// What deleting it frees: `exact` bytes, or `at_most` bytes when there is no exact figure.
    pub fn with_freed(self, exact: Option<u64>, at_most: Option<u64>) -> Self {
        Self { freed_bytes: exact, freed_bytes_at_most: at_most, ..self }
    }

    /// Says until when the Recycle Bin keeps it, when `bin` has rules (tagged for them first).
    pub fn in_recycle_bin(self, bin: &RecycleBin) -> Self {
        Self { restorable_until: bin.restorable_until(self.time), ..self }
    }

    pub fn key(&self) -> (String, String) {
        key(&self.run_id, &self.resource_id)
    }

    fn item(&self, state: &str) -> Item {
        let (pk, sk) = self.key();
        let item = Item::new(pk, sk)
            .with_s("kind", "journal")
            .with_s("state", state)
            .with_s("function", self.function)
            .with_s("region", &self.region)
            .with_s("resource", self.resource.as_str())
            .with_s("resource_id", &self.resource_id)
            .with_time("time", self.time)
            .with_s("rule", self.rule)
            .with_opt_s("source_image_id", self.source_image_id.clone())
            .with_n("size_gib", self.size_gib.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)))
            .with_n(TTL_ATTRIBUTE, (self.time + KEEP_JOURNAL).timestamp());
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let item = match self.freed_bytes {
            Some(n) => item.with_n("freed_bytes", bytes(n)),
            None => item,
        };
        match self.freed_bytes_at_most {
            Some(n) => item.with_n("freed_bytes_at_most", bytes(n)),
            None => item,
        }
    }

    /// Written before the call: amiguard sets out to delete (or deregister) it.
    pub fn intended(&self) -> Item {
        self.item("intended")
    }

    /// AWS confirmed the deletion (or deregistration): with until when the Recycle Bin keeps it,
    /// the one state where there is something to restore.
    pub fn done(&self) -> Item {
        let item = self.item("done");
        match self.restorable_until {
            Some(until) => item.with_time("restorable_until", until),
            None => item,
        }
    }

    /// Gone already when amiguard came to it (someone else deleted it).
    pub fn already_gone(&self) -> Item {
        self.item("already_gone")
    }

    /// AWS refused it: it still exists, with the reason.
    pub fn failed(&self, code: &str, message: &str) -> Item {
        self.item("failed").with_s("code", code).with_s("message", message)
    }
}

/// Writes entries one by one (a handful per delivery); a batch writer uses the items directly.
pub async fn write(store: &impl LedgerStore, items: Vec<Item>) -> Result<(), AwsError> {
    for item in &items {
        store.put(item, &Condition::Always).await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_entry_is_keyed_by_its_run_says_its_state_and_expires() {
        let time = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
        let entry = JournalEntry::new(
            "r-1",
            "orphan-snapshot-sweeper",
            "eu-west-1",
            Resource::Snapshot,
            "snap-01",
            "orphan",
            time,
        )
        .with_size(8)
        .with_source("ami-0a");
        let item = entry.intended();
        assert_eq!((item.pk.as_str(), item.sk.as_str()), ("run#r-1", "deleted#snap-01"));
        assert_eq!(
            (item.s("resource"), item.n("size_gib"), item.s("rule")),
            (Some("snapshot"), Some(8), Some("orphan"))
        );
        assert_eq!(item.n(TTL_ATTRIBUTE), Some((time + KEEP_JOURNAL).timestamp()));
        assert_eq!(
            [entry.intended(), entry.done(), entry.already_gone(), entry.failed("X", "y")]
                .map(|i| i.s("state").map(str::to_string)),
            [Some("intended".into()), Some("done".into()), Some("already_gone".into()), Some("failed".into())]
        );
        assert_eq!(entry.failed("InvalidSnapshot.InUse", "in use").s("code"), Some("InvalidSnapshot.InUse"));
        assert_eq!(entry.done().time("restorable_until"), None);
        let binned = entry.in_recycle_bin(&RecycleBin::retaining_for(7));
        assert_eq!(binned.done().time("restorable_until"), Some(time + Duration::days(7)));
        // Nothing to restore from what was not deleted by this entry's call.
        for not_deleted in [binned.intended(), binned.already_gone(), binned.failed("X", "refused")] {
            assert_eq!(not_deleted.time("restorable_until"), None, "{not_deleted:?}");
        }
    }
}
