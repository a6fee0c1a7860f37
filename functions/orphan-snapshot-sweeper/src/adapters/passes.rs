//! The region's snapshot listing passes in the ledger (`passes#<region>`, one item): the size of
//! the last complete pass, in all and per partition, and the partitions the current pass has
//! covered with their counts ([`crate::core::partitions::Passes`]).

use std::collections::BTreeMap;

use amiguard::ledger::{keys, Condition, Item, LedgerStore};
use amiguard::AwsError;
use chrono::{DateTime, Utc};

use crate::core::partitions::{LastPass, Passes, PARTITIONS};

const LAST_TOTAL: &str = "last_total";
const LAST_PER_PARTITION: &str = "last_per_partition";
/// The current pass: `<partition>:<count>` for each partition it covered.
const CURRENT: &str = "current";
const RECORDED_AT: &str = "recorded_at";
/// The deletions planned after each partition's listing: `<partition>:<count>` for the current
/// pass, one number a partition for the last complete one.
const CURRENT_DELETED: &str = "current_deleted";
const LAST_DELETED: &str = "last_deleted";
/// The last counts the coverage proof refused (a record, never a baseline): `<partition>:<count>`.
const REFUSED: &str = "refused";
/// A listing in one sequence cut after seeing this many snapshots.
const SEQUENTIAL_CUT_AFTER: &str = "sequential_cut_after";

pub(super) async fn read(store: &impl LedgerStore, region: &str) -> Result<Passes, AwsError> {
    let Some(item) = store.last(&keys::snapshot_passes(region)).await? else { return Ok(Passes::default()) };
    Ok(from_item(&item))
}

pub(super) async fn write(
    store: &impl LedgerStore,
    region: &str,
    passes: &Passes,
    at: DateTime<Utc>,
) -> Result<(), AwsError> {
    store.put(&item(region, passes, at), &Condition::Always).await.map(|_| ())
}

pub(super) fn item(region: &str, passes: &Passes, at: DateTime<Utc>) -> Item {
    let mut item = Item::new(keys::snapshot_passes(region), keys::SNAPSHOT_PASSES)
        .with_s("kind", "snapshot-passes")
        .with_time(RECORDED_AT, at)
        .with_list(CURRENT, passes.current.iter().map(|(p, n)| format!("{p}:{n}")));
    if let Some(last) = &passes.last {
        item = item
            .with_n(LAST_TOTAL, i64::try_from(last.total).unwrap_or(i64::MAX))
            .with_list(LAST_PER_PARTITION, last.per_partition.iter().map(u64::to_string));
        if !last.deleted.is_empty() {
            item = item.with_list(LAST_DELETED, last.deleted.iter().map(u64::to_string));
        }
    }
    if !passes.current_deleted.is_empty() {
        item = item.with_list(CURRENT_DELETED, passes.current_deleted.iter().map(|(p, n)| format!("{p}:{n}")));
    }
    if !passes.refused.is_empty() {
        item = item.with_list(REFUSED, passes.refused.iter().map(|(p, n)| format!("{p}:{n}")));
    }
    if let Some(seen) = passes.sequential_cut_after {
        item = item.with_n(SEQUENTIAL_CUT_AFTER, i64::try_from(seen).unwrap_or(i64::MAX));
    }
    item
}

/// What the item says; a part it cannot read is as if never recorded (a smaller pass to
/// compare with proves less, never more: an unreadable count is no count).
fn from_item(item: &Item) -> Passes {
    let last = item.n(LAST_TOTAL).and_then(|total| u64::try_from(total).ok()).map(|total| {
        let per_partition: Vec<u64> =
            item.list(LAST_PER_PARTITION).unwrap_or_default().iter().filter_map(|n| n.parse().ok()).collect();
        // Deletions unreadable: none expected (the next listing must find as many as listed:
        // a stricter proof, never a looser one).
        let deleted: Vec<u64> =
            item.list(LAST_DELETED).unwrap_or_default().iter().filter_map(|n| n.parse().ok()).collect();
        LastPass {
            total,
            per_partition: if per_partition.len() == PARTITIONS { per_partition } else { Vec::new() },
            deleted: if deleted.len() == PARTITIONS { deleted } else { Vec::new() },
        }
    });
    let per_partition = |name: &str| -> BTreeMap<usize, u64> {
        item.list(name)
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| {
                let (p, n) = entry.split_once(':')?;
                Some((p.parse().ok().filter(|p| *p < PARTITIONS)?, n.parse().ok()?))
            })
            .collect()
    };
    Passes {
        last,
        current: per_partition(CURRENT),
        current_deleted: per_partition(CURRENT_DELETED),
        refused: per_partition(REFUSED),
        sequential_cut_after: item.n(SEQUENTIAL_CUT_AFTER).and_then(|n| u64::try_from(n).ok()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use amiguard::ledger::memory::MemoryLedger;
    use chrono::TimeZone;

    #[tokio::test]
    async fn passes_are_read_back_as_written() {
        let ledger = MemoryLedger::new();
        let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert_eq!(read(&ledger, "eu-west-1").await.unwrap(), Passes::default());
        let mut passes = Passes::after_listing((0..16).collect(), 4).after_partitions(&[(3, 7), (12, 9)]);
        write(&ledger, "eu-west-1", &passes, at).await.unwrap();
        assert_eq!(read(&ledger, "eu-west-1").await.unwrap(), passes);
        // The deletions planned, the refused counts and a cut listing in one sequence too.
        let mut deleting = [0u64; PARTITIONS];
        (deleting[3], deleting[5]) = (2, 1);
        passes.deleting(&deleting);
        passes = passes.after_refused(&[(7, 1)]).after_cut_sequential(30_000);
        let complete = passes.after_partitions(&(0..16).map(|p| (p, 10)).collect::<Vec<_>>());
        for passes in [passes.clone(), complete] {
            write(&ledger, "eu-west-1", &passes, at).await.unwrap();
            assert_eq!(read(&ledger, "eu-west-1").await.unwrap(), passes);
        }
        assert_eq!(Passes::after_listing((0..16).collect(), 4).last.unwrap().total, 124);
        assert_eq!(read(&ledger, "us-east-1").await.unwrap(), Passes::default(), "per region");
    }
}
