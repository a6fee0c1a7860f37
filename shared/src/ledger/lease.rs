//! Leases: one holder at a time for a key, with an expiry so that a holder that died (a Lambda
//! timeout) cannot block the others for longer than the lease.

use chrono::{DateTime, Duration, Utc};

use super::store::{Condition, Item, LedgerStore, Written};
use super::TTL_ATTRIBUTE;
use crate::error::AwsError;

/// The attribute naming the holder.
pub const OWNER: &str = "owner";

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub pk: String,
    pub sk: String,
    pub owner: String,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Held(Lease),
    /// Someone else holds it until `until` (or holds it and it cannot be read back).
    Busy,
}

/// Takes the lease `(pk, sk)` for `owner` until `now + duration`, unless someone else holds an
/// unexpired one. The expiry is also the item's time to live, so a dead holder's lease is
/// eventually removed by DynamoDB too.
pub async fn acquire(
    store: &impl LedgerStore,
    pk: &str,
    sk: &str,
    owner: &str,
    now: DateTime<Utc>,
    duration: Duration,
) -> Result<Acquired, AwsError> {
    acquire_item(store, Item::new(pk, sk), owner, now, duration).await
}

/// [`acquire`], the lease item carrying `item`'s attributes too (an alert claim's state).
pub async fn acquire_item(
    store: &impl LedgerStore,
    item: Item,
    owner: &str,
    now: DateTime<Utc>,
    duration: Duration,
) -> Result<Acquired, AwsError> {
    let until = now + duration;
    let item = item.with_s(OWNER, owner).with_n(TTL_ATTRIBUTE, until.timestamp());
    let expired = Condition::AbsentOrBelow { attribute: TTL_ATTRIBUTE, value: now.timestamp() };
    Ok(match store.put(&item, &expired).await? {
        Written::Yes => Acquired::Held(Lease { pk: item.pk, sk: item.sk, owner: owner.into(), until }),
        Written::ConditionFailed => Acquired::Busy,
    })
}

/// Gives the lease back, if it is still ours (an expired one may have been taken since).
pub async fn release(store: &impl LedgerStore, lease: &Lease) -> Result<(), AwsError> {
    let ours = Condition::Equals { attribute: OWNER, value: lease.owner.clone() };
    store.delete(&lease.pk, &lease.sk, &ours).await.map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::MemoryLedger;
    use chrono::TimeZone;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_release_or_expiry() {
        let store = MemoryLedger::new();
        let minute = Duration::seconds(60);
        let Acquired::Held(first) = acquire(&store, "p", "lease", "a", t(0), minute).await.unwrap() else {
            panic!("free lease not taken")
        };
        assert_eq!(acquire(&store, "p", "lease", "b", t(30), minute).await.unwrap(), Acquired::Busy);
        // Another key is another lease.
        assert!(matches!(acquire(&store, "q", "lease", "b", t(30), minute).await.unwrap(), Acquired::Held(_)));
        release(&store, &first).await.unwrap();
        let Acquired::Held(second) = acquire(&store, "p", "lease", "b", t(31), minute).await.unwrap() else {
            panic!("released lease not taken")
        };
        // The first holder's late release cannot free the second holder's lease.
        release(&store, &first).await.unwrap();
        assert_eq!(acquire(&store, "p", "lease", "c", t(40), minute).await.unwrap(), Acquired::Busy);
        // Expired: taken over.
        assert!(matches!(acquire(&store, "p", "lease", "c", t(92), minute).await.unwrap(), Acquired::Held(_)));
        assert_eq!(second.until, t(91));
    }
}
