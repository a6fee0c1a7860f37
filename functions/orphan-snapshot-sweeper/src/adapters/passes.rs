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
    }
    item
}

/// What the item says; a part it cannot read is as if never recorded (a smaller pass to
/// compare with proves less, never more: an unreadable count is no count).
fn from_item(item: &Item) -> Passes {
    let last = item.n(LAST_TOTAL).and_then(|total| u64::try_from(total).ok()).map(|total| {
        let per_partition: Vec<u64> =
            item.list(LAST_PER_PARTITION).unwrap_or_default().iter().filter_map(|n| n.parse().ok()).collect();
        LastPass { total, per_partition: if per_partition.len() == PARTITIONS { per_partition } else { Vec::new() } }
    });
    let current: BTreeMap<usize, u64> = item
        .list(CURRENT)
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| {
            let (p, n) = entry.split_once(':')?;
            Some((p.parse().ok().filter(|p| *p < PARTITIONS)?, n.parse().ok()?))
        })
        .collect();
    Passes { last, current }
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
        let passes = Passes::after_listing((0..16).collect(), 4).after_partitions(&[(3, 7), (12, 9)]);
        write(&ledger, "eu-west-1", &passes, at).await.unwrap();
        assert_eq!(read(&ledger, "eu-west-1").await.unwrap(), passes);
        assert_eq!(passes.last.as_ref().unwrap().total, 124);
        assert_eq!(read(&ledger, "us-east-1").await.unwrap(), Passes::default(), "per region");
    }
}
