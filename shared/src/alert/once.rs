//! Alert once: a conditional record in the ledger, never a tag (a launcher can set any tag on its
//! own instance, and a tag that cannot be written would make every event alert again). Each alert
//! has its key ([`AlertKey`]): an untrusted image's, per instance and image; a failed image's,
//! per image.
//!
//! The first delivery to write the record *claims* the alert, publishes it, then marks the record
//! sent. A claim expires after [`CLAIM_DURATION`]: a delivery that died before publishing cannot
//! silence the alert for longer than that, and a failed publish gives its claim back at once.
//! A failure costs at most a duplicate message, never a missed alert.

use chrono::{DateTime, Duration, Utc};

use crate::error::AwsError;
use crate::ledger::lease::{self, Acquired, Lease, OWNER};
use crate::ledger::store::{query_all, Condition, Item, LedgerStore, Written};
use crate::ledger::{keys, TTL_ATTRIBUTE};

/// How long a claim keeps other deliveries from alerting: longer than one publish with its
/// retries, shorter than Lambda's first retry of a failed invocation.
pub const CLAIM_DURATION: Duration = Duration::seconds(90);
/// How long a sent alert is remembered: an instance still running an untrusted image a year
/// later is alerted again (a reminder, at most once a year).
pub const REMEMBER_SENT: Duration = Duration::days(400);

const STATE: &str = "state";
const SENDING: &str = "sending";
const SENT: &str = "sent";

/// A claim this delivery holds (a lease on the alert's record): it must publish, then
/// [`confirm`] (or [`release`] on failure).
pub type AlertClaim = Lease;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery sends the alert.
    Claimed(AlertClaim),
    /// The alert was sent already (by an earlier delivery).
    AlreadySent { sent_at: Option<DateTime<Utc>>, message_id: Option<String> },
    /// Another delivery claimed it and has not said yet whether it sent it.
    InProgress,
}

/// Which alert: the ledger record that says it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertKey {
    pk: String,
    sk: String,
    image_id: String,
}

impl AlertKey {
    /// An untrusted image's alert: `instance_id` running `image_id`.
    pub fn untrusted(region: &str, instance_id: &str, image_id: &str) -> Self {
        Self { pk: keys::alert(region, instance_id), sk: keys::alerted_image(image_id), image_id: image_id.into() }
    }

    /// A failed image's alert: an image amiguard made ended `failed`.
    pub fn failed_image(region: &str, image_id: &str) -> Self {
        Self { pk: keys::failed_image_alerts(region), sk: image_id.into(), image_id: image_id.into() }
    }
}

/// Claims the alert `key`, unless it was sent or another delivery's claim is still running.
pub async fn claim(
    store: &impl LedgerStore,
    key: &AlertKey,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<Claim, AwsError> {
    let item =
        Item::new(&key.pk, &key.sk).with_s("kind", "alert").with_s(STATE, SENDING).with_s("image_id", &key.image_id);
    // A claim or a sent record past its expiry is free again.
    match lease::acquire_item(store, item, owner, now, CLAIM_DURATION).await? {
        Acquired::Held(claim) => Ok(Claim::Claimed(claim)),
        Acquired::Busy => state(store, key).await,
    }
}

/// What the ledger says of the alert now.
pub async fn state(store: &impl LedgerStore, key: &AlertKey) -> Result<Claim, AwsError> {
    let record = query_all(store, &key.pk, &key.sk).await?.into_iter().find(|item| item.sk == key.sk);
    Ok(match record {
        Some(item) if item.s(STATE) == Some(SENT) => {
            Claim::AlreadySent { sent_at: item.time("sent_at"), message_id: item.s("message_id").map(str::to_string) }
        }
        // Claimed by another delivery (or gone between the two calls: the next event claims it).
        _ => Claim::InProgress,
    })
}

/// Marks the claimed alert sent, with the message id SNS answered.
pub async fn confirm(
    store: &impl LedgerStore,
    claim: &AlertClaim,
    image_id: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<(), AwsError> {
    let item = Item::new(&claim.pk, &claim.sk)
        .with_s("kind", "alert")
        .with_s(STATE, SENT)
        .with_s(OWNER, &claim.owner)
        .with_s("image_id", image_id)
        .with_s("message_id", message_id)
        .with_time("sent_at", now)
        .with_n(TTL_ATTRIBUTE, (now + REMEMBER_SENT).timestamp());
    let ours = Condition::Equals { attribute: OWNER, value: claim.owner.clone() };
    match store.put(&item, &ours).await? {
        Written::Yes => Ok(()),
        // Our claim expired and another delivery took it: it will confirm its own.
        Written::ConditionFailed => Ok(()),
    }
}

/// Gives the claim back after a failed publish, so that the retry alerts at once.
pub async fn release(store: &impl LedgerStore, claim: &AlertClaim) -> Result<(), AwsError> {
    lease::release(store, claim).await
}

/// Whether this delivery sends an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Send it; with the ledger's claim to confirm, or without one (no ledger, or it failed:
    /// the warning says the alert may repeat).
    Send(Option<AlertClaim>, Option<String>),
    AlreadySent,
    /// Another delivery holds the claim after waiting for it.
    InProgress,
}

/// The warning of an alert sent without a ledger (it may repeat on every event).
const NO_LEDGER: &str = "no ledger is configured (LEDGER_TABLE)";

/// How long a delivery waits for a concurrent one that claimed the same alert.
pub const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether this delivery sends the alert `key`: the ledger's claim decides; a claim held by a
/// concurrent delivery is waited for a little. Without a working ledger the alert is sent (a
/// duplicate is better than silence).
pub async fn turn(
    store: Option<&impl LedgerStore>,
    key: &AlertKey,
    invocation: &crate::invocation::Invocation,
) -> Turn {
    let Some(store) = store else {
        return Turn::Send(None, Some(NO_LEDGER.to_string()));
    };
    let started = tokio::time::Instant::now();
    loop {
        match claim(store, key, &invocation.request_id, invocation.clock()).await {
            Ok(Claim::Claimed(claim)) => return Turn::Send(Some(claim), None),
            Ok(Claim::AlreadySent { .. }) => return Turn::AlreadySent,
            Ok(Claim::InProgress) if started.elapsed() < CLAIM_WAIT => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await
            }
            Ok(Claim::InProgress) => return Turn::InProgress,
            Err(err) => return Turn::Send(None, Some(format!("the ledger could not be used ({err})"))),
        }
    }
}

/// What [`turn`] would answer now, read from the ledger and never written (a dry run): `Send`
/// without a claim when no unexpired claim or sent record holds the alert (an expired one is free
/// again, as [`claim`]'s condition says), `InProgress` when another delivery's claim does. It
/// never waits: a dry run only says what it sees.
pub async fn preview(store: Option<&impl LedgerStore>, key: &AlertKey, now: DateTime<Utc>) -> Turn {
    let Some(store) = store else {
        return Turn::Send(None, Some(NO_LEDGER.to_string()));
    };
    match query_all(store, &key.pk, &key.sk).await {
        Err(err) => Turn::Send(None, Some(format!("the ledger could not be used ({err})"))),
        Ok(items) => match items.into_iter().find(|item| item.sk == key.sk) {
            Some(item) if item.n(TTL_ATTRIBUTE).is_none_or(|until| until >= now.timestamp()) => {
                if item.s(STATE) == Some(SENT) {
                    Turn::AlreadySent
                } else {
                    Turn::InProgress
                }
            }
            _ => Turn::Send(None, None),
        },
    }
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

    async fn claim_at(store: &MemoryLedger, owner: &str, seconds: i64) -> Claim {
        claim(store, &AlertKey::untrusted("us-east-1", "i-01", "ami-0a"), owner, t(seconds)).await.unwrap()
    }

    #[tokio::test]
    async fn the_first_claim_sends_and_every_later_one_sees_it_sent() {
        let store = MemoryLedger::new();
        let Claim::Claimed(first) = claim_at(&store, "a", 0).await else { panic!("not claimed") };
        assert_eq!(claim_at(&store, "b", 1).await, Claim::InProgress);
        confirm(&store, &first, "ami-0a", "m-1", t(2)).await.unwrap();
        let sent = Claim::AlreadySent { sent_at: Some(t(2)), message_id: Some("m-1".into()) };
        assert_eq!(claim_at(&store, "c", 3).await, sent);
        // Long after the claim would have expired, the sent record still holds.
        assert_eq!(claim_at(&store, "d", 86_400 * 30).await, sent);
        // Another image of the same instance, or another instance, is another alert.
        let other = |instance: &str, image: &str| AlertKey::untrusted("us-east-1", instance, image);
        assert!(matches!(claim(&store, &other("i-01", "ami-0b"), "e", t(4)).await.unwrap(), Claim::Claimed(_)));
        assert!(matches!(claim(&store, &other("i-02", "ami-0a"), "e", t(4)).await.unwrap(), Claim::Claimed(_)));
        // The failed-image alert of the same image is another alert again.
        let failed = AlertKey::failed_image("us-east-1", "ami-0a");
        assert!(matches!(claim(&store, &failed, "f", t(5)).await.unwrap(), Claim::Claimed(_)));
    }

    #[tokio::test]
    async fn a_failed_publish_or_a_dead_claimant_never_silences_the_alert() {
        let store = MemoryLedger::new();
        let Claim::Claimed(first) = claim_at(&store, "a", 0).await else { panic!("not claimed") };
        release(&store, &first).await.unwrap();
        let Claim::Claimed(_dies) = claim_at(&store, "b", 1).await else { panic!("released claim not free") };
        assert_eq!(claim_at(&store, "c", 60).await, Claim::InProgress);
        // The dead claimant's claim expires: the next delivery alerts.
        let Claim::Claimed(late) = claim_at(&store, "c", 92).await else { panic!("expired claim not free") };
        // The first claimant's late release does not free the new claim.
        release(&store, &first).await.unwrap();
        assert_eq!(claim_at(&store, "d", 93).await, Claim::InProgress);
        confirm(&store, &late, "ami-0a", "m-2", t(94)).await.unwrap();
        assert!(matches!(claim_at(&store, "e", 95).await, Claim::AlreadySent { .. }));
    }

    #[tokio::test]
    async fn a_preview_says_what_a_delivery_would_do_and_writes_nothing() {
        let store = MemoryLedger::new();
        let key = AlertKey::untrusted("us-east-1", "i-01", "ami-0a");
        assert_eq!(preview(Some(&store), &key, t(0)).await, Turn::Send(None, None));
        let Claim::Claimed(held) = claim_at(&store, "a", 0).await else { panic!("not claimed") };
        let writes = store.writes();
        assert_eq!(preview(Some(&store), &key, t(10)).await, Turn::InProgress);
        // The claim expired: a delivery would take it and send.
        assert_eq!(preview(Some(&store), &key, t(91)).await, Turn::Send(None, None));
        confirm(&store, &held, "ami-0a", "m-1", t(20)).await.unwrap();
        let writes_after_confirm = store.writes();
        assert_eq!(preview(Some(&store), &key, t(86_400)).await, Turn::AlreadySent);
        assert_eq!(
            (writes + 1, store.writes()),
            (writes_after_confirm, writes_after_confirm),
            "previews write nothing"
        );
        let unreachable = MemoryLedger::new();
        unreachable.fail_everything();
        let Turn::Send(None, Some(warning)) = preview(Some(&unreachable), &key, t(0)).await else { panic!("not sent") };
        assert!(warning.contains("could not be used"), "{warning}");
        assert_eq!(preview(None::<&MemoryLedger>, &key, t(0)).await, Turn::Send(None, Some(NO_LEDGER.into())));
    }
}
