//! No storm: launch alerts for one image fold after the first three in an hour. An Auto Scaling
//! group that keeps replacing instances from an untrusted image would otherwise send one message
//! per instance without limit. The first three launches of an image in a clock hour alert one by
//! one, the fourth sends a follow-up saying that more are folded, and the rest are counted only:
//! their instances' alert records stay unsent, so the next audit's digest lists every one of them.
//! Enforcement is never folded. The slots are conditional writes in the ledger (the first writer
//! of a slot has it); without a ledger nothing folds (a duplicate beats silence).

use chrono::{DateTime, Duration, Utc};

use super::alert::AlertDetails;
use crate::error::AwsError;
use crate::ledger::store::{query_all, Condition, Item, LedgerStore, Written};
use crate::ledger::{keys, TTL_ATTRIBUTE};

/// Launch alerts of one image sent one by one in a clock hour.
pub const ALERTS_PER_HOUR: u32 = 3;
/// A slot record outlives its hour by a day (for people reading the ledger), then expires.
const KEEP_SLOT: Duration = Duration::days(1);

/// What one launch's alert may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// One of the first three of the hour: alert as usual.
    Alert(Taken),
    /// The fourth: the follow-up that says more are folded.
    FollowUp(Taken),
    /// Counted, not sent: the audit's digest lists it.
    Folded,
    /// Nothing to count with (no ledger, or it failed): alert as usual.
    Uncounted,
}

/// A slot this delivery took: the n-th launch alert of the image this hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub n: u32,
    pk: String,
    sk: String,
}

/// The clock hour `now` is in, as the slots' key.
pub fn hour(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H").to_string()
}

/// Takes the first free slot of `image_id`'s hour.
pub async fn claim_slot(
    store: &impl LedgerStore,
    region: &str,
    image_id: &str,
    now: DateTime<Utc>,
) -> Result<Slot, AwsError> {
    let pk = keys::launch_alerts(region, image_id);
    let hour = hour(now);
    for n in 1..=ALERTS_PER_HOUR + 1 {
        let item = Item::new(&pk, format!("{hour}#{n}"))
            .with_s("kind", "launch-alert-slot")
            .with_time("taken_at", now)
            .with_n(TTL_ATTRIBUTE, (now + Duration::hours(1) + KEEP_SLOT).timestamp());
        if store.put(&item, &Condition::Absent).await? == Written::Yes {
            let taken = Taken { n, pk: item.pk, sk: item.sk };
            return Ok(if n <= ALERTS_PER_HOUR { Slot::Alert(taken) } else { Slot::FollowUp(taken) });
        }
    }
    Ok(Slot::Folded)
}

/// How many launch alerts of `image_id` were counted in `now`'s hour, read without writing (a
/// dry run says whether a launch would alert, follow up or fold).
pub async fn slots_taken(
    store: &impl LedgerStore,
    region: &str,
    image_id: &str,
    now: DateTime<Utc>,
) -> Result<u32, AwsError> {
    let taken = query_all(store, &keys::launch_alerts(region, image_id), &format!("{}#", hour(now))).await?;
    Ok(u32::try_from(taken.len()).unwrap_or(u32::MAX))
}

/// How long a folded alert waits for an audit's digest before the ledger forgets it: as long as a
/// sent alert is remembered (it is forgotten as soon as a digest sends it).
const KEEP_FOLDED: Duration = Duration::days(400);
const DETAILS: &str = "details";

/// A folded launch alert, kept until an audit's digest sends it: the instance may be gone by
/// then (an audit lists only live instances, so without this record it would never be named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub details: AlertDetails,
    sk: String,
}

/// Keeps a folded alert for the next digest.
pub async fn keep_folded(
    store: &impl LedgerStore,
    region: &str,
    details: &AlertDetails,
    now: DateTime<Utc>,
) -> Result<(), AwsError> {
    let json = serde_json::to_string(details).map_err(|e| AwsError::new("PutItem", "Serialization", e.to_string()))?;
    let item = Item::new(keys::folded_alerts(region), format!("{}#{}", details.instance_id, details.image_id))
        .with_s("kind", "folded-alert")
        .with_s(DETAILS, json)
        .with_time("folded_at", now)
        .with_n(TTL_ATTRIBUTE, (now + KEEP_FOLDED).timestamp());
    store.put(&item, &Condition::Always).await.map(|_| ())
}

/// Every folded alert waiting for a digest, and how many records could not be read (they stay,
/// and the caller says so).
pub async fn folded(store: &impl LedgerStore, region: &str) -> Result<(Vec<Folded>, usize), AwsError> {
    let items = query_all(store, &keys::folded_alerts(region), "").await?;
    let total = items.len();
    let read: Vec<Folded> = items
        .into_iter()
        .filter_map(|item| {
            let details = serde_json::from_str(item.s(DETAILS)?).ok()?;
            Some(Folded { details, sk: item.sk })
        })
        .collect();
    let unreadable = total - read.len();
    Ok((read, unreadable))
}

/// Forgets a folded alert once a digest sent it (or it was alerted otherwise).
pub async fn forget(store: &impl LedgerStore, region: &str, folded: &Folded) -> Result<(), AwsError> {
    store.delete(&keys::folded_alerts(region), &folded.sk, &Condition::Always).await.map(|_| ())
}

/// Gives a slot back after its alert could not be sent: a failed publish counts for nothing.
pub async fn release(store: &impl LedgerStore, taken: &Taken) -> Result<(), AwsError> {
    store.delete(&taken.pk, &taken.sk, &Condition::Always).await.map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::MemoryLedger;
    use chrono::TimeZone;

    #[tokio::test]
    async fn three_alerts_a_follow_up_then_folded_each_hour_and_image() {
        let store = MemoryLedger::new();
        let at = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap();
        let mut slots = Vec::new();
        for minute in 0..10 {
            slots.push(claim_slot(&store, "us-east-1", "ami-x", at(10, minute)).await.unwrap());
        }
        let kinds: Vec<(bool, u32)> = slots[..4]
            .iter()
            .map(|s| match s {
                Slot::Alert(t) => (false, t.n),
                Slot::FollowUp(t) => (true, t.n),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, [(false, 1), (false, 2), (false, 3), (true, 4)]);
        assert!(slots[4..].iter().all(|s| *s == Slot::Folded));
        // Another image, or the next hour, starts again.
        let first = |slot: Slot| matches!(slot, Slot::Alert(Taken { n: 1, .. }));
        assert!(first(claim_slot(&store, "us-east-1", "ami-y", at(10, 30)).await.unwrap()));
        assert!(first(claim_slot(&store, "us-east-1", "ami-x", at(11, 0)).await.unwrap()));
        // A slot given back (its alert was not sent) is taken again.
        let Slot::Alert(taken) = claim_slot(&store, "us-east-1", "ami-z", at(10, 0)).await.unwrap() else { panic!() };
        release(&store, &taken).await.unwrap();
        assert!(first(claim_slot(&store, "us-east-1", "ami-z", at(10, 1)).await.unwrap()));
        // Counted without writing: the hour's slots of one image only.
        let writes = store.writes();
        assert_eq!(slots_taken(&store, "us-east-1", "ami-x", at(10, 59)).await.unwrap(), ALERTS_PER_HOUR + 1);
        assert_eq!(slots_taken(&store, "us-east-1", "ami-x", at(11, 5)).await.unwrap(), 1);
        assert_eq!(slots_taken(&store, "us-east-1", "ami-w", at(10, 5)).await.unwrap(), 0);
        assert_eq!(store.writes(), writes);
    }
}
