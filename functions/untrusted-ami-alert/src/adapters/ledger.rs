//! untrusted-ami-alert's records in the ledger ([`Records`], for every [`LedgerStore`]): the
//! launch-alert slots of each image and clock hour (conditional writes: the first writer of a
//! slot has it; see `core::fold`), the folded launch alerts kept for the audit's digest, and the
//! Security Hub findings it imported and has not archived yet (the audit archives them once EC2
//! says they are over: what amiguard recorded, never a tag or Security Hub's own listing).

use chrono::{DateTime, Duration, Utc};

use amiguard::error::AwsError;
use amiguard::ledger::store::{query_all, Condition, Item, LedgerStore, Written};
use amiguard::ledger::{keys, TTL_ATTRIBUTE};

use amiguard::alert::Severity;

use crate::core::finding::OpenFinding;
use crate::core::fold::{self, LaunchAlert};
use crate::core::message::AlertDetails;
use crate::ports::{Folded, Records, Slot, Taken};

/// The ledger partitions untrusted-ami-alert reads and writes (`pk` prefixes of
/// `amiguard::ledger::keys`): the alert claims, the launch-alert slots, the folded alerts and the
/// Security Hub findings not archived yet.
/// Its role, which reads the most hostile input, may touch no other (none of the records that
/// drive a deletion or a retirement): `dynamodb:LeadingKeys` in `template.yaml` lists exactly
/// these (a test holds them together, and every request of its handler runs within them).
pub const LEDGER_PARTITIONS: &[&str] = &["alert#", "launch-alerts#", "folded-alerts#", "findings#"];

/// A slot record outlives its hour by a day (for people reading the ledger), then expires.
const KEEP_SLOT: Duration = Duration::days(1);
/// How long a folded alert waits for an audit's digest before the ledger forgets it: as long as a
/// sent alert is remembered (it is forgotten as soon as a digest sends it).
const KEEP_FOLDED: Duration = Duration::days(400);
const DETAILS: &str = "details";
const SEVERITY: &str = "severity";
const FIRST_SEEN: &str = "first_seen";

impl<S: LedgerStore> Records for S {
    async fn claim_slot(&self, region: &str, image_id: &str, now: DateTime<Utc>) -> Result<Slot, AwsError> {
        let pk = keys::launch_alerts(region, image_id);
        let hour = fold::hour(now);
        for n in 1..=fold::SLOTS_PER_HOUR {
            let item = Item::new(&pk, format!("{hour}#{n}"))
                .with_s("kind", "launch-alert-slot")
                .with_time("taken_at", now)
                .with_n(TTL_ATTRIBUTE, (now + Duration::hours(1) + KEEP_SLOT).timestamp());
            if self.put(&item, &Condition::Absent).await? == Written::Yes {
                let taken = Taken { n, pk: item.pk, sk: item.sk };
                return Ok(match LaunchAlert::nth(n) {
                    LaunchAlert::Alert => Slot::Alert(taken),
                    LaunchAlert::FollowUp | LaunchAlert::Folded => Slot::FollowUp(taken),
                });
            }
        }
        Ok(Slot::Folded)
    }

    async fn slots_taken(&self, region: &str, image_id: &str, now: DateTime<Utc>) -> Result<u32, AwsError> {
        let taken = query_all(self, &keys::launch_alerts(region, image_id), &format!("{}#", fold::hour(now))).await?;
        Ok(u32::try_from(taken.len()).unwrap_or(u32::MAX))
    }

    async fn release_slot(&self, taken: &Taken) -> Result<(), AwsError> {
        self.delete(&taken.pk, &taken.sk, &Condition::Always).await.map(|_| ())
    }

    async fn keep_folded(&self, region: &str, details: &AlertDetails, now: DateTime<Utc>) -> Result<(), AwsError> {
        let json =
            serde_json::to_string(details).map_err(|e| AwsError::new("PutItem", "Serialization", e.to_string()))?;
        let item = Item::new(keys::folded_alerts(region), format!("{}#{}", details.instance_id, details.image_id))
            .with_s("kind", "folded-alert")
            .with_s(DETAILS, json)
            .with_time("folded_at", now)
            .with_n(TTL_ATTRIBUTE, (now + KEEP_FOLDED).timestamp());
        self.put(&item, &Condition::Always).await.map(|_| ())
    }

    async fn folded(&self, region: &str) -> Result<(Vec<Folded>, usize), AwsError> {
        let items = query_all(self, &keys::folded_alerts(region), "").await?;
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

    async fn forget_folded(&self, region: &str, folded: &Folded) -> Result<(), AwsError> {
        self.delete(&keys::folded_alerts(region), &folded.sk, &Condition::Always).await.map(|_| ())
    }

    async fn record_finding(
        &self,
        region: &str,
        instance_id: &str,
        image_id: &str,
        severity: Severity,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, AwsError> {
        let (pk, sk) = (keys::findings(region), format!("{instance_id}#{image_id}"));
        let item = Item::new(&pk, &sk)
            .with_s("kind", "finding")
            .with_s("instance_id", instance_id)
            .with_s("image_id", image_id)
            .with_s(SEVERITY, severity.as_str())
            .with_time(FIRST_SEEN, now);
        if self.put(&item, &Condition::Absent).await? == Written::Yes {
            // As the ledger keeps it (to the second), so that every sighting states the same.
            return Ok(item.time(FIRST_SEEN).unwrap_or(now));
        }
        // Recorded by an earlier sighting: its first sighting dates the finding.
        let known = query_all(self, &pk, &sk).await?.into_iter().find(|item| item.sk == sk);
        Ok(known.and_then(|item| item.time(FIRST_SEEN)).unwrap_or(now))
    }

    async fn open_findings(&self, region: &str) -> Result<Vec<OpenFinding>, AwsError> {
        let items = query_all(self, &keys::findings(region), "").await?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let severity = match item.s(SEVERITY)? {
                    "high" => Severity::High,
                    "medium" => Severity::Medium,
                    _ => return None,
                };
                Some(OpenFinding {
                    instance_id: item.s("instance_id")?.to_string(),
                    image_id: item.s("image_id")?.to_string(),
                    severity,
                    first_seen: item.time(FIRST_SEEN)?,
                })
            })
            .collect())
    }

    async fn forget_finding(&self, region: &str, open: &OpenFinding) -> Result<(), AwsError> {
        let sk = format!("{}#{}", open.instance_id, open.image_id);
        self.delete(&keys::findings(region), &sk, &Condition::Always).await.map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::fold::ALERTS_PER_HOUR;
    use amiguard::ledger::memory::MemoryLedger;
    use chrono::TimeZone;

    #[tokio::test]
    async fn three_alerts_a_follow_up_then_folded_each_hour_and_image() {
        let store = MemoryLedger::new();
        let at = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap();
        let mut slots = Vec::new();
        for minute in 0..10 {
            slots.push(store.claim_slot("us-east-1", "ami-x", at(10, minute)).await.unwrap());
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
        assert!(first(store.claim_slot("us-east-1", "ami-y", at(10, 30)).await.unwrap()));
        assert!(first(store.claim_slot("us-east-1", "ami-x", at(11, 0)).await.unwrap()));
        // A slot given back (its alert was not sent) is taken again.
        let Slot::Alert(taken) = store.claim_slot("us-east-1", "ami-z", at(10, 0)).await.unwrap() else { panic!() };
        store.release_slot(&taken).await.unwrap();
        assert!(first(store.claim_slot("us-east-1", "ami-z", at(10, 1)).await.unwrap()));
        // Counted without writing: the hour's slots of one image only.
        let writes = store.writes();
        assert_eq!(store.slots_taken("us-east-1", "ami-x", at(10, 59)).await.unwrap(), ALERTS_PER_HOUR + 1);
        assert_eq!(store.slots_taken("us-east-1", "ami-x", at(11, 5)).await.unwrap(), 1);
        assert_eq!(store.slots_taken("us-east-1", "ami-w", at(10, 5)).await.unwrap(), 0);
        assert_eq!(store.writes(), writes);
    }
}
