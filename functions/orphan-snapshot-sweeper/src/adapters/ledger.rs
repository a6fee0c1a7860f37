//! The sweeper's records in the ledger ([`Records`], on any [`LedgerStore`]): per region, and of
//! each sweep:
//!
//! - every own image it lists, with the snapshots it maps, when it was first seen and when it
//!   was first seen gone (so a snapshot that an image now in the Recycle Bin mapped is kept,
//!   whatever its description says: `ListImagesInRecycleBin` gives no mappings; and an orphan is
//!   *witnessed* when its AMI's record maps it). An `EC2 AMI State Change` to `available`
//!   records an image the same way, as EC2 lists it: every own image is then witnessed, not only
//!   those a sweep happens to list;
//! - when each snapshot was first seen orphaned (the grace clock, [`crate::core::grace`]);
//! - `EC2 AMI State Change` events to `deregistered`, dated when amiguard learned the AMI was gone
//!   (an earlier start of that clock than the next sweep's);
//! - each run's summary, whose start time the next run reads.
//!
//! Only what changed is written: a sweep of an unchanged account writes nothing but its summary.

use std::collections::{BTreeMap, BTreeSet};

use amiguard::ledger::{keys, Condition, Item, LedgerStore, Written, TTL_ATTRIBUTE};
use amiguard::AwsError;
use chrono::{DateTime, Duration, Utc};
use hashbrown::{HashMap, HashSet};

use crate::core::grace::GoneImage;
use crate::core::{Id, ImageFacts, Orphan, StageRecord};
use crate::ports::{Records, RegionMemory};
use crate::report::Report;
use crate::FUNCTION;

/// The ledger partitions the sweeper reads and writes (`pk` prefixes of `amiguard::ledger::keys`):
/// its image records, orphan clocks, AMI events, run summaries, and its journal. Its role may
/// touch no other: `dynamodb:LeadingKeys` in `template.yaml` lists exactly these (a test holds
/// them together, and every request of its handler runs within them).
pub const LEDGER_PARTITIONS: &[&str] =
    &["images#", "orphans#", "ami-events#", "passes#", "runs#", "run#", "retirement#"];

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
const IN_BIN: &str = "in_recycle_bin";
const LEFT_BIN_AT: &str = "left_recycle_bin_at";
const FAILED_AT: &str = "delete_failed_at";
const FAILED_CODE: &str = "delete_failed_code";

/// How long a run's summary stays in the ledger.
pub const KEEP_RUN_SUMMARY: Duration = Duration::days(400);

impl<S: LedgerStore> Records for S {
    async fn previous_run(&self) -> Result<Option<DateTime<Utc>>, AwsError> {
        Ok(self.last(&keys::runs(FUNCTION)).await?.and_then(|run| run.time("started_at")))
    }

    async fn read_region(
        &self,
        region: &str,
        live_images: &[ImageFacts],
        binned: &BTreeSet<String>,
        now: DateTime<Utc>,
        previous_run: Option<DateTime<Utc>>,
    ) -> Result<RegionMemory, AwsError> {
        let mut region_memory = RegionMemory::default();
        let RegionMemory { memory, image_writes, stale } = &mut region_memory;
        let live: HashMap<&str, &ImageFacts> = live_images.iter().map(|i| (i.image_id.as_str(), i)).collect();
        let mut recorded: HashSet<Id> = HashSet::new();
        let mut gone: HashMap<Id, GoneImage> = HashMap::new();
        self.query(&keys::seen_images(region), "", &mut |item| {
            let image_id = Id::from(item.sk.as_str());
            let snapshots: Vec<Id> =
                item.list(SNAPSHOT_IDS).unwrap_or_default().iter().map(|s| Id::from(s.as_str())).collect();
            let first_seen = item.time(FIRST_SEEN).unwrap_or(now);
            recorded.insert(image_id.clone());
            if let Some(image) = live.get(image_id.as_str()) {
                // Listed again (or restored from the Recycle Bin): rewrite only if it changed.
                if !same_snapshots(&snapshots, &image.snapshot_ids) || item.s(GONE_AT).is_some() {
                    image_writes.push(image_item(region, &image_id, &image.snapshot_ids, first_seen));
                }
                return;
            }
            let in_bin = binned.contains(image_id.as_str());
            let was_in_bin = item.bool(IN_BIN).unwrap_or(false);
            let image = GoneImage {
                gone_at: item.time(GONE_AT).unwrap_or(now),
                // Listed by the sweep before: it was live then (or when first seen, if later).
                last_live: item.time(LAST_SEEN).unwrap_or_else(|| previous_run.unwrap_or(first_seen).max(first_seen)),
                left_bin_at: if was_in_bin && !in_bin { Some(now) } else { item.time(LEFT_BIN_AT) },
                binned: in_bin || was_in_bin || item.time(LEFT_BIN_AT).is_some(),
            };
            if item.s(GONE_AT).is_none() || in_bin != was_in_bin {
                let mut record = image_item(region, &image_id, &snapshots, first_seen)
                    .with_time(GONE_AT, image.gone_at)
                    .with_time(LAST_SEEN, image.last_live)
                    .with(IN_BIN, amiguard::ledger::Value::Bool(in_bin))
                    .with_n(TTL_ATTRIBUTE, (now + KEEP_GONE).timestamp());
                if let Some(left) = image.left_bin_at {
                    record = record.with_time(LEFT_BIN_AT, left);
                }
                image_writes.push(record);
            }
            for snapshot in snapshots {
                memory.mapped_by_gone_images.entry(snapshot).or_default().push(image_id.clone());
            }
            gone.insert(image_id, image);
        })
        .await?;
        for image in live_images {
            // `insert` is false for an image recorded already (or listed twice).
            if recorded.insert(image.image_id.clone()) {
                image_writes.push(image_item(region, &image.image_id, &image.snapshot_ids, now));
            }
        }
        // A binned image the sweeper never listed (made and deregistered between two sweeps): its
        // record says it was in the bin, so that its deregistration event is never its clock.
        for image_id in binned.iter().filter(|id| !recorded.contains(id.as_str())) {
            image_writes.push(
                image_item(region, image_id, &[], now)
                    .with_time(GONE_AT, now)
                    .with_time(LAST_SEEN, now)
                    .with(IN_BIN, amiguard::ledger::Value::Bool(true))
                    .with_n(TTL_ATTRIBUTE, (now + KEEP_GONE).timestamp()),
            );
            gone.insert(
                Id::from(image_id.as_str()),
                GoneImage { gone_at: now, last_live: now, left_bin_at: None, binned: true },
            );
        }

        self.query(&keys::orphans(region), "", &mut |item| {
            let Some(first_seen) = item.time(FIRST_SEEN) else { return };
            if item.s(SOURCE_IMAGE).is_some_and(|image| live.contains_key(image)) {
                // Its AMI is listed again: that clock belonged to an earlier absence.
                stale.push((item.pk.clone(), item.sk.clone()));
                return;
            }
            if item.time(FAILED_AT).is_some() {
                memory.failed_before.insert(Id::from(item.sk.as_str()));
            }
            memory.orphaned_since.insert(Id::from(item.sk.as_str()), first_seen);
        })
        .await?;
        let mut events: HashMap<Id, DateTime<Utc>> = HashMap::new();
        self.query(&keys::ami_events(region), "", &mut |item| {
            if live.contains_key(item.sk.as_str()) {
                stale.push((item.pk.clone(), item.sk.clone()));
            } else if let Some(at) = item.time(DEREGISTERED_AT) {
                events.insert(Id::from(item.sk.as_str()), at);
            }
        })
        .await?;
        for (image_id, image) in &gone {
            memory.deregistered_at.insert(image_id.clone(), image.deregistered_at(events.get(image_id).copied()));
        }
        for (image_id, at) in events {
            // An event for an image the sweeper never recorded is all there is.
            memory.deregistered_at.entry(image_id).or_insert(at);
        }
        Ok(region_memory)
    }

    fn orphan_writes(
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
            if !orphaned_since.contains_key(orphan.snapshot_id.as_str())
                && !deleting.contains(orphan.snapshot_id.as_str())
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

    fn failed_orphan(region: &str, orphan: &Orphan, code: &str, at: DateTime<Utc>) -> Item {
        Item::new(keys::orphans(region), orphan.snapshot_id.as_str())
            .with_s("kind", "orphan")
            .with_time(FIRST_SEEN, orphan.orphaned_since)
            .with_s(SOURCE_IMAGE, orphan.source_image_id.as_str())
            .with_time(FAILED_AT, at)
            .with_s(FAILED_CODE, code)
            .with_n(TTL_ATTRIBUTE, (at + KEEP_ORPHAN_RECORD).timestamp())
    }

    fn orphan_key(region: &str, snapshot_id: &str) -> (String, String) {
        (keys::orphans(region), snapshot_id.to_string())
    }

    async fn record_image(&self, region: &str, image: &ImageFacts, at: DateTime<Utc>) -> Result<bool, AwsError> {
        let item = image_item(region, &image.image_id, &image.snapshot_ids, at);
        Ok(self.put(&item, &Condition::Absent).await? == Written::Yes)
    }

    async fn record_deregistration(&self, region: &str, image_id: &str, at: DateTime<Utc>) -> Result<bool, AwsError> {
        let item = Item::new(keys::ami_events(region), image_id)
            .with_s("kind", "ami-event")
            .with_time(DEREGISTERED_AT, at)
            .with_n(EVENT_EPOCH, at.timestamp())
            .with_n(TTL_ATTRIBUTE, (at + KEEP_GONE).timestamp());
        let newer = Condition::AbsentOrBelow { attribute: EVENT_EPOCH, value: at.timestamp() };
        Ok(self.put(&item, &newer).await? == Written::Yes)
    }

    async fn record_run(&self, report: &Report) -> Result<(), AwsError> {
        self.put(&run_item(report), &Condition::Always).await.map(|_| ())
    }

    async fn snapshot_passes(&self, region: &str) -> Result<crate::core::partitions::Passes, AwsError> {
        super::passes::read(self, region).await
    }

    fn snapshot_passes_item(region: &str, passes: &crate::core::partitions::Passes, at: DateTime<Utc>) -> Item {
        super::passes::item(region, passes, at)
    }

    async fn record_snapshot_passes(
        &self,
        region: &str,
        passes: &crate::core::partitions::Passes,
        at: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        super::passes::write(self, region, passes, at).await
    }

    fn full_lists(&self, run_id: &str) -> String {
        format!(
            "ledger table {}: every deletion of this run under pk {}, every orphan and its clock under pk orphans#<region>",
            self.table(),
            keys::run(run_id)
        )
    }

    async fn retirement_records(&self, region: &str) -> Result<BTreeMap<String, StageRecord>, AwsError> {
        super::retirement_ledger::read_records(self, region).await
    }

    async fn record_retirement(
        &self,
        region: &str,
        image_id: &str,
        record: &StageRecord,
        run_id: &str,
        evidence: &str,
    ) -> Result<(), AwsError> {
        super::retirement_ledger::write_record(self, region, image_id, record, run_id, evidence).await
    }

    async fn forget_retirement(&self, region: &str, image_id: &str, at: DateTime<Utc>) -> Result<(), AwsError> {
        super::retirement_ledger::forget_record(self, region, image_id, at).await
    }
}

/// A seen image's record.
fn image_item(region: &str, image_id: &str, snapshots: &[Id], first_seen: DateTime<Utc>) -> Item {
    Item::new(keys::seen_images(region), image_id)
        .with_s("kind", "seen-image")
        .with_list(SNAPSHOT_IDS, snapshots.iter().map(Id::to_string))
        .with_time(FIRST_SEEN, first_seen)
}

fn same_snapshots(recorded: &[Id], listed: &[Id]) -> bool {
    let recorded: HashSet<&str> = recorded.iter().map(Id::as_str).collect();
    let listed: HashSet<&str> = listed.iter().map(Id::as_str).collect();
    recorded == listed
}

/// The run's summary in the ledger (`pk = runs#orphan-snapshot-sweeper`): the one item an
/// unchanged account's sweep writes; the next run reads its start time.
fn run_item(report: &Report) -> Item {
    let t = &report.totals;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let started = amiguard::ledger::store::format_time(report.started_at);
    Item::new(keys::runs(FUNCTION), keys::run_summary(&started, &report.run_id))
        .with_s("kind", "run")
        .with_s("run_id", &report.run_id)
        .with_time("started_at", report.started_at)
        .with("dry_run", amiguard::ledger::Value::Bool(report.dry_run))
        .with_n("orphans", count(t.orphans))
        .with_n("waiting", count(t.waiting))
        .with_n("deleted", count(t.deleted))
        .with_n("failed", count(t.failed))
        .with_n("regions_aborted", count(t.regions_aborted))
        .with_n("reclaimable_gib", count(t.reclaimable_gib))
        .with_n("images_retired", count(t.images_retired))
        .with_n(TTL_ATTRIBUTE, (report.started_at + KEEP_RUN_SUMMARY).timestamp())
}

/// The event's time as a number, for the "later wins" condition.
const EVENT_EPOCH: &str = "deregistered_epoch";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use amiguard::ledger::memory::MemoryLedger;
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
            deregistration_protection: None,
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
        sweep_binned(store, images, &[], now, previous).await
    }

    /// What a sweep reads and writes of the images, with `binned` in the Recycle Bin.
    async fn sweep_binned(
        store: &MemoryLedger,
        images: &[ImageFacts],
        binned: &[&str],
        now: DateTime<Utc>,
        previous: Option<DateTime<Utc>>,
    ) -> RegionMemory {
        let binned: std::collections::BTreeSet<String> = binned.iter().map(|s| s.to_string()).collect();
        let memory = store.read_region(REGION, images, &binned, now, previous).await.unwrap();
        store.write_batch(memory.image_writes.clone(), memory.stale.clone()).await.unwrap();
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
        assert_eq!(record.bool(IN_BIN), Some(false));
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
    async fn the_latest_deregistration_event_counts_and_a_redelivery_changes_nothing() {
        let store = MemoryLedger::new();
        let images = [image("ami-0a", &["snap-1"])];
        sweep(&store, &images, t(0), None).await;
        assert!(store.record_deregistration(REGION, "ami-0a", t(5)).await.unwrap());
        assert!(!store.record_deregistration(REGION, "ami-0a", t(5)).await.unwrap(), "a redelivery is not new");
        assert!(!store.record_deregistration(REGION, "ami-0a", t(4)).await.unwrap(), "an older event is not news");
        let memory = sweep(&store, &[], t(10), Some(t(0))).await;
        assert_eq!(memory.memory.deregistered_at.get("ami-0a"), Some(&t(5)), "the event is earlier than the sweep");
    }

    #[tokio::test]
    async fn a_restored_image_invalidates_its_old_clocks() {
        let store = MemoryLedger::new();
        let images = [image("ami-0a", &["snap-1"])];
        sweep(&store, &images, t(0), None).await;
        store.record_deregistration(REGION, "ami-0a", t(1)).await.unwrap();
        sweep(&store, &[], t(24), Some(t(0))).await;
        store.insert(
            Item::new(keys::orphans(REGION), "snap-1").with_time(FIRST_SEEN, t(24)).with_s(SOURCE_IMAGE, "ami-0a"),
        );
        // Restored from the Recycle Bin: the event and the orphan record are stale, and go.
        let restored = sweep(&store, &images, t(48), Some(t(24))).await;
        assert_eq!(restored.stale.len(), 2, "{:?}", restored.stale);
        assert!(restored.memory.orphaned_since.is_empty() && restored.memory.deregistered_at.is_empty());
        assert!(store.partition(&keys::ami_events(REGION)).is_empty());
        // Deregistered again, with the event lost: the clock starts at this sweep, not at day 0.
        let again = sweep(&store, &[], t(72), Some(t(48))).await;
        assert_eq!(again.memory.deregistered_at.get("ami-0a"), Some(&t(72)));
        // An event older than the last sweep that listed the image is from an earlier absence.
        store.insert(
            Item::new(keys::ami_events(REGION), "ami-0a").with_time(DEREGISTERED_AT, t(1)).with_n(EVENT_EPOCH, 0),
        );
        let with_old_event = sweep(&store, &[], t(96), Some(t(72))).await;
        assert_eq!(with_old_event.memory.deregistered_at.get("ami-0a"), Some(&t(72)));
    }

    #[tokio::test]
    async fn an_image_in_the_recycle_bin_starts_its_snapshots_clock_when_it_leaves() {
        let store = MemoryLedger::new();
        sweep(&store, &[image("ami-0a", &["snap-1"])], t(0), None).await;
        store.record_deregistration(REGION, "ami-0a", t(1)).await.unwrap();
        let binned = sweep_binned(&store, &[], &["ami-0a"], t(24), Some(t(0))).await;
        assert_eq!(binned.image_writes.len(), 1, "entering the bin is written once");
        assert!(sweep_binned(&store, &[], &["ami-0a"], t(48), Some(t(24))).await.image_writes.is_empty());
        // Seven days later the bin lets it go for good: the clock starts now, not at the event.
        let left = sweep_binned(&store, &[], &[], t(24 * 8), Some(t(48))).await;
        assert_eq!(left.image_writes.len(), 1, "leaving the bin is written once");
        assert_eq!(left.memory.deregistered_at.get("ami-0a"), Some(&t(24 * 8)));
        let later = sweep_binned(&store, &[], &[], t(24 * 9), Some(t(24 * 8))).await;
        assert!(later.image_writes.is_empty());
        assert_eq!(later.memory.deregistered_at.get("ami-0a"), Some(&t(24 * 8)));
        // An image the sweeper never listed, binned: recorded as binned, its event ignored.
        store.record_deregistration(REGION, "ami-0b", t(24 * 9)).await.unwrap();
        let unseen = sweep_binned(&store, &[], &["ami-0b"], t(24 * 10), Some(t(24 * 9))).await;
        assert_eq!(unseen.image_writes.len(), 1);
        let out = sweep_binned(&store, &[], &[], t(24 * 20), Some(t(24 * 10))).await;
        assert_eq!(out.memory.deregistered_at.get("ami-0b"), Some(&t(24 * 20)));
    }

    #[tokio::test]
    async fn a_failed_deletion_keeps_the_clock_and_queues_the_snapshot_behind_the_others() {
        let store = MemoryLedger::new();
        let orphan = Orphan {
            snapshot_id: "snap-1".into(),
            size_gib: 1,
            source_image_id: "ami-0a".into(),
            start_time: t(-100),
            orphaned_since: t(-30),
        };
        store.insert(MemoryLedger::failed_orphan(REGION, &orphan, "InvalidSnapshot.InUse", t(0)));
        let read = sweep(&store, &[], t(24), Some(t(0))).await;
        assert_eq!(read.memory.orphaned_since.get("snap-1"), Some(&t(-30)), "the clock goes on");
        assert!(read.memory.failed_before.contains("snap-1"));
        let item = &store.partition(&keys::orphans(REGION))[0];
        assert_eq!(item.s(FAILED_CODE), Some("InvalidSnapshot.InUse"));
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
        let (puts, deletes) = MemoryLedger::orphan_writes(REGION, &[&known, &fresh], &none, &recorded);
        assert_eq!(puts.iter().map(|i| i.sk.as_str()).collect::<Vec<_>>(), ["snap-2"]);
        assert_eq!(puts[0].time(FIRST_SEEN), Some(t(0)));
        assert_eq!(deletes, [(keys::orphans(REGION), "snap-9".to_string())]);
        // One deleted in this run needs no record first.
        let (puts, _) = MemoryLedger::orphan_writes(REGION, &[&known, &fresh], &HashSet::from(["snap-2"]), &recorded);
        assert!(puts.is_empty());
        let only_known: HashMap<Id, DateTime<Utc>> = [("snap-1".into(), t(-5))].into_iter().collect();
        let (puts, deletes) = MemoryLedger::orphan_writes(REGION, &[&known], &none, &only_known);
        assert!(puts.is_empty() && deletes.is_empty(), "nothing changed, nothing written");
    }
}
