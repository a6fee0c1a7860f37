//! What the sweeper remembers in the ledger, per region, and what it writes of each sweep:
//!
//! - every own image it lists, with the snapshots it maps, when it was first seen and when it
//!   was first seen gone (so a snapshot that an image now in the Recycle Bin mapped is kept,
//!   whatever its description says: `ListImagesInRecycleBin` gives no mappings);
//! - when each snapshot was first seen orphaned (the grace clock, [`super::grace`]);
//! - `EC2 AMI State Change` events to `deregistered` (an earlier start of that clock).
//!
//! Only what changed is written: a sweep of an unchanged account writes nothing here.

use chrono::{DateTime, Duration, Utc};
use hashbrown::{HashMap, HashSet};

use super::facts::{Id, ImageFacts};
use super::planner::{Memory, Orphan};
use crate::error::AwsError;
use crate::ledger::store::{Condition, Item, LedgerStore, Written};
use crate::ledger::{keys, TTL_ATTRIBUTE};

/// How long the record of a gone image and of an AMI event is kept: longer than the Recycle
/// Bin's longest retention (365 days), so a binned image's mapping outlives its stay there.
pub const KEEP_GONE: Duration = Duration::days(400);
/// An orphan record of a region that is no longer swept expires after this.
pub const KEEP_ORPHAN_RECORD: Duration = Duration::days(400);

const SNAPSHOT_IDS: &str = "snapshot_ids";
const FIRST_SEEN: &str = "first_seen";
const GONE_AT: &str = "gone_at";
const LAST_SEEN: &str = "last_seen";
const SOURCE_IMAGE: &str = "source_image_id";
const DEREGISTERED_AT: &str = "deregistered_at";

/// What the ledger says of one region (for the planner), and what this sweep has to write of
/// the images it listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMemory {
    pub memory: Memory,
    /// The image records to write: images new, changed, restored or seen gone for the first time.
    pub image_writes: Vec<Item>,
}

/// A seen image's record.
fn image_item(region: &str, image_id: &str, snapshots: &[Id], first_seen: DateTime<Utc>) -> Item {
    Item::new(keys::seen_images(region), image_id)
        .with_s("kind", "seen-image")
        .with_list(SNAPSHOT_IDS, snapshots.iter().map(Id::to_string))
        .with_time(FIRST_SEEN, first_seen)
}

/// Reads the region's records and compares them with the images listed now. `previous_run` is
/// when the last sweep started (an image missing now was last seen then).
pub async fn read_region(
    store: &impl LedgerStore,
    region: &str,
    live_images: &[ImageFacts],
    now: DateTime<Utc>,
    previous_run: Option<DateTime<Utc>>,
) -> Result<RegionMemory, AwsError> {
    let mut region_memory = RegionMemory::default();
    let (memory, image_writes) = (&mut region_memory.memory, &mut region_memory.image_writes);
    let live: HashMap<&str, &ImageFacts> = live_images.iter().map(|i| (i.image_id.as_str(), i)).collect();
    let mut recorded: HashSet<Id> = HashSet::new();
    store
        .query(&keys::seen_images(region), "", &mut |item| {
            let image_id = Id::from(item.sk.as_str());
            let snapshots: Vec<Id> =
                item.list(SNAPSHOT_IDS).unwrap_or_default().iter().map(|s| Id::from(s.as_str())).collect();
            let first_seen = item.time(FIRST_SEEN).unwrap_or(now);
            match live.get(image_id.as_str()) {
                Some(image) => {
                    // Listed again (or restored from the Recycle Bin): rewrite only if it changed.
                    if !same_snapshots(&snapshots, &image.snapshot_ids) || item.s(GONE_AT).is_some() {
                        image_writes.push(image_item(region, &image_id, &image.snapshot_ids, first_seen));
                    }
                }
                None => {
                    let gone_at = match item.time(GONE_AT) {
                        Some(gone_at) => gone_at,
                        None => {
                            let last_seen = previous_run.unwrap_or(first_seen).max(first_seen);
                            image_writes.push(
                                image_item(region, &image_id, &snapshots, first_seen)
                                    .with_time(GONE_AT, now)
                                    .with_time(LAST_SEEN, last_seen)
                                    .with_n(TTL_ATTRIBUTE, (now + KEEP_GONE).timestamp()),
                            );
                            now
                        }
                    };
                    memory.deregistered_at.insert(image_id.clone(), gone_at);
                    for snapshot in snapshots {
                        memory.mapped_by_gone_images.entry(snapshot).or_default().push(image_id.clone());
                    }
                }
            }
            recorded.insert(image_id);
        })
        .await?;
    for image in live_images {
        // `insert` is false for an image recorded already (or listed twice).
        if recorded.insert(image.image_id.clone()) {
            image_writes.push(image_item(region, &image.image_id, &image.snapshot_ids, now));
        }
    }

    store
        .query(&keys::orphans(region), "", &mut |item| {
            if let Some(first_seen) = item.time(FIRST_SEEN) {
                memory.orphaned_since.insert(Id::from(item.sk.as_str()), first_seen);
            }
        })
        .await?;
    store
        .query(&keys::ami_events(region), "", &mut |item| {
            if let Some(at) = item.time(DEREGISTERED_AT) {
                let known = memory.deregistered_at.entry(Id::from(item.sk.as_str())).or_insert(at);
                *known = (*known).min(at);
            }
        })
        .await?;
    Ok(region_memory)
}

fn same_snapshots(recorded: &[Id], listed: &[Id]) -> bool {
    let recorded: HashSet<&str> = recorded.iter().map(Id::as_str).collect();
    let listed: HashSet<&str> = listed.iter().map(Id::as_str).collect();
    recorded == listed
}

/// The orphan records to write after planning: a record for each candidate without one (first
/// seen now, or at its AMI's deregistration), and away with the records of snapshots that are no
/// longer candidates (deleted, gone, or kept by a rule now: their clock starts again if they
/// ever become orphans again). A candidate this run deletes (`deleting`) needs no record: it is
/// deletable already, and the journal will say what became of it.
pub fn orphan_writes(
    region: &str,
    candidates: &[&Orphan],
    deleting: &HashSet<&str>,
    orphaned_since: &HashMap<Id, DateTime<Utc>>,
) -> (Vec<Item>, Vec<(String, String)>) {
    let pk = keys::orphans(region);
    let mut puts = Vec::new();
    let mut still: HashSet<&str> = HashSet::with_capacity(candidates.len());
    for orphan in candidates {
        still.insert(orphan.snapshot_id.as_str());
        if !orphaned_since.contains_key(orphan.snapshot_id.as_str()) && !deleting.contains(orphan.snapshot_id.as_str())
        {
            puts.push(
                Item::new(&pk, orphan.snapshot_id.as_str())
                    .with_s("kind", "orphan")
                    .with_time(FIRST_SEEN, orphan.orphaned_since)
                    .with_s(SOURCE_IMAGE, orphan.source_image_id.as_str())
                    .with_n(TTL_ATTRIBUTE, (orphan.orphaned_since + KEEP_ORPHAN_RECORD).timestamp()),
            );
        }
    }
    let deletes = orphaned_since
        .keys()
        .filter(|id| !still.contains(id.as_str()))
        .map(|id| (pk.clone(), id.to_string()))
        .collect();
    (puts, deletes)
}

/// The key of a deleted snapshot's orphan record (deleted with its journal entry).
pub fn orphan_key(region: &str, snapshot_id: &str) -> (String, String) {
    (keys::orphans(region), snapshot_id.to_string())
}

/// Records an `EC2 AMI State Change` to `deregistered`. The first event for an image wins
/// (EventBridge may deliver one twice): answers whether this one was new.
pub async fn record_deregistration(
    store: &impl LedgerStore,
    region: &str,
    image_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, AwsError> {
    let item = Item::new(keys::ami_events(region), image_id)
        .with_s("kind", "ami-event")
        .with_time(DEREGISTERED_AT, at)
        .with_n(TTL_ATTRIBUTE, (at + KEEP_GONE).timestamp());
    Ok(store.put(&item, &Condition::Absent).await? == Written::Yes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::MemoryLedger;
    use chrono::TimeZone;

    const REGION: &str = "eu-west-1";

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap() + Duration::hours(hours)
    }

    fn image(id: &str, snapshots: &[&str]) -> ImageFacts {
        ImageFacts {
            image_id: id.into(),
            owner_id: Some("123456789012".into()),
            name: id.into(),
            state: "available".into(),
            creation_date: None,
            last_launched_time: None,
            public: false,
            snapshot_ids: snapshots.iter().map(|s| Id::from(*s)).collect(),
            tags: vec![],
        }
    }

    async fn sweep(
        store: &MemoryLedger,
        images: &[ImageFacts],
        now: DateTime<Utc>,
        previous: Option<DateTime<Utc>>,
    ) -> RegionMemory {
        let memory = read_region(store, REGION, images, now, previous).await.unwrap();
        store.write_batch(memory.image_writes.clone(), vec![]).await.unwrap();
        memory
    }

    #[tokio::test]
    async fn images_are_written_when_new_changed_gone_or_restored_and_never_otherwise() {
        let store = MemoryLedger::new();
        let a = image("ami-0a", &["snap-1", "snap-2"]);
        let b = image("ami-0b", &["snap-3"]);
        assert_eq!(sweep(&store, &[a.clone(), b.clone()], t(0), None).await.image_writes.len(), 2, "first sight");
        assert!(sweep(&store, &[b.clone(), a.clone()], t(24), Some(t(0))).await.image_writes.is_empty(), "unchanged");
        let a_reordered = image("ami-0a", &["snap-2", "snap-1"]);
        assert!(sweep(&store, &[a_reordered, b.clone()], t(25), Some(t(24))).await.image_writes.is_empty());

        // ami-0a deregistered: written once as gone, remembered with its snapshots.
        let gone = sweep(&store, std::slice::from_ref(&b), t(48), Some(t(25))).await;
        assert_eq!(gone.image_writes.len(), 1);
        let record = store.get(&keys::seen_images(REGION), "ami-0a").unwrap();
        assert_eq!((record.time(GONE_AT), record.time(LAST_SEEN)), (Some(t(48)), Some(t(25))));
        assert_eq!(record.time(FIRST_SEEN), Some(t(0)));
        assert_eq!(record.n(TTL_ATTRIBUTE), Some((t(48) + KEEP_GONE).timestamp()));
        assert_eq!(gone.memory.mapped_by_gone_images.get("snap-1").map(Vec::len), Some(1));
        assert_eq!(gone.memory.deregistered_at.get("ami-0a"), Some(&t(48)));
        let later = sweep(&store, std::slice::from_ref(&b), t(72), Some(t(48))).await;
        assert!(later.image_writes.is_empty(), "seen gone before: nothing to write");
        assert_eq!(later.memory.deregistered_at.get("ami-0a"), Some(&t(48)), "the first sighting of its absence stays");
        assert_eq!(later.memory.mapped_by_gone_images["snap-2"], [Id::from("ami-0a")]);

        // A changed mapping, and a restore from the Recycle Bin, are written.
        let b_changed = image("ami-0b", &["snap-3", "snap-4"]);
        let restored = image("ami-0a", &["snap-1", "snap-2"]);
        let back = sweep(&store, &[b_changed, restored], t(96), Some(t(72))).await;
        assert_eq!(back.image_writes.len(), 2);
        assert!(back.memory.mapped_by_gone_images.is_empty());
        assert_eq!(store.get(&keys::seen_images(REGION), "ami-0a").unwrap().s(GONE_AT), None);
    }

    #[tokio::test]
    async fn an_ami_event_counts_once_and_the_earliest_time_wins() {
        let store = MemoryLedger::new();
        assert!(record_deregistration(&store, REGION, "ami-0a", t(5)).await.unwrap());
        assert!(!record_deregistration(&store, REGION, "ami-0a", t(6)).await.unwrap(), "a redelivery is not new");
        let images = [image("ami-0a", &["snap-1"])];
        sweep(&store, &images, t(0), None).await;
        let memory = sweep(&store, &[], t(10), Some(t(0))).await;
        assert_eq!(memory.memory.deregistered_at.get("ami-0a"), Some(&t(5)), "the event is earlier than the sweep");
    }

    #[test]
    fn orphan_records_follow_the_candidates() {
        let orphan = |id: &str, since: DateTime<Utc>| Orphan {
            snapshot_id: id.into(),
            size_gib: 1,
            source_image_id: "ami-0a".into(),
            start_time: t(-100),
            orphaned_since: since,
        };
        let (known, fresh) = (orphan("snap-1", t(-5)), orphan("snap-2", t(0)));
        let recorded: HashMap<Id, DateTime<Utc>> =
            [("snap-1".into(), t(-5)), ("snap-9".into(), t(-9))].into_iter().collect();
        let none = HashSet::new();
        let (puts, deletes) = orphan_writes(REGION, &[&known, &fresh], &none, &recorded);
        assert_eq!(puts.iter().map(|i| i.sk.as_str()).collect::<Vec<_>>(), ["snap-2"]);
        assert_eq!(puts[0].time(FIRST_SEEN), Some(t(0)));
        assert_eq!(deletes, [(keys::orphans(REGION), "snap-9".to_string())]);
        // One deleted in this run needs no record first.
        let (puts, _) = orphan_writes(REGION, &[&known, &fresh], &HashSet::from(["snap-2"]), &recorded);
        assert!(puts.is_empty());
        let only_known: HashMap<Id, DateTime<Utc>> = [("snap-1".into(), t(-5))].into_iter().collect();
        let (puts, deletes) = orphan_writes(REGION, &[&known], &none, &only_known);
        assert!(puts.is_empty() && deletes.is_empty(), "nothing changed, nothing written");
    }
}
