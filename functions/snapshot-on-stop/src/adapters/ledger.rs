//! snapshot-on-stop's records in the ledger: every image it made, per instance and stop, written
//! before it acts on the image, and which instance each image was made of. Retention reads only
//! these records: an AMI the ledger does not hold is never retired, whatever its tags say.
//! Implemented once for every [`LedgerStore`] (DynamoDB, memory).

use amiguard::ledger::store::{query_all, Condition, Item, LedgerStore};
use amiguard::ledger::{keys, Value, TTL_ATTRIBUTE};
use amiguard::AwsError;
use chrono::{DateTime, Duration, Utc};

use crate::core::naming::stopped_at_tag_value;
use crate::core::{InstanceRecords, LaunchTemplateRef, MadeImage};
use crate::ports::Records;

/// The ledger partitions snapshot-on-stop reads and writes (`pk` prefixes of
/// `amiguard::ledger::keys`): its instances' records and leases, which instance each image was
/// made of, the alerts of failed images, and its journal. Its role may touch no other:
/// `dynamodb:LeadingKeys` in `template.yaml` lists exactly these (a test holds them together,
/// and every request of its handler runs within them).
pub const LEDGER_PARTITIONS: &[&str] = &["instance#", "made-images#", "failed-images#", "run#"];

/// How long the record of a retired image stays (for people reading the ledger).
pub const KEEP_RETIRED_RECORD: Duration = Duration::days(90);

const IMAGE_ID: &str = "image_id";
const NAME: &str = "name";
const STOPPED_AT: &str = "stopped_at";
const INTENDED_AT: &str = "intended_at";
const SNAPSHOT_IDS: &str = "snapshot_ids";
const TEMPLATE_ID: &str = "launch_template_id";
const TEMPLATE_VERSION: &str = "launch_template_version";
const ADOPTED: &str = "adopted";
const RETIRED_AT: &str = "retired_at";
const PROTECTION_SET: &str = "deregistration_protection_set";
const ADOPTED_AT: &str = "adopted_at";
const ADOPTED_SINCE: &str = "since_stop";

fn to_item(region: &str, instance_id: &str, image: &MadeImage) -> Item {
    let stopped_at = stopped_at_tag_value(image.stopped_at);
    let mut item = Item::new(keys::instance(region, instance_id), keys::image_of_stop(&stopped_at))
        .with_s("kind", "made-image")
        .with_s(STOPPED_AT, stopped_at)
        .with_s(NAME, &image.name)
        .with_time(INTENDED_AT, image.intended_at)
        .with_opt_s(IMAGE_ID, image.image_id.clone())
        .with_list(SNAPSHOT_IDS, image.snapshot_ids.clone())
        .with(ADOPTED, Value::Bool(image.adopted))
        .with(PROTECTION_SET, Value::Bool(image.protection_set));
    if let Some(template) = &image.launch_template {
        item = item.with_s(TEMPLATE_ID, &template.id).with_n(TEMPLATE_VERSION, template.version);
    }
    if let Some(retired_at) = image.retired_at {
        item = item
            .with_time(RETIRED_AT, retired_at)
            .with_n(TTL_ATTRIBUTE, (retired_at + KEEP_RETIRED_RECORD).timestamp());
    }
    item
}

fn from_item(item: &Item) -> Option<MadeImage> {
    let launch_template = match (item.s(TEMPLATE_ID), item.n(TEMPLATE_VERSION)) {
        (Some(id), Some(version)) => Some(LaunchTemplateRef { id: id.to_string(), version }),
        _ => None,
    };
    Some(MadeImage {
        stopped_at: item.time(STOPPED_AT)?,
        name: item.s(NAME)?.to_string(),
        intended_at: item.time(INTENDED_AT)?,
        image_id: item.s(IMAGE_ID).map(str::to_string),
        snapshot_ids: item.list(SNAPSHOT_IDS).map(<[String]>::to_vec).unwrap_or_default(),
        launch_template,
        adopted: item.bool(ADOPTED).unwrap_or(false),
        retired_at: item.time(RETIRED_AT),
        protection_set: item.bool(PROTECTION_SET).unwrap_or(false),
    })
}

/// How long the ledger says which instance an image was made of: its AMI events come within
/// hours of CreateImage; after that a stop's catch-up does what they would have done.
pub const KEEP_MADE_OF: Duration = Duration::days(30);
const INSTANCE_ID: &str = "instance_id";

impl<S: LedgerStore> Records for S {
    async fn read_records(&self, region: &str, instance_id: &str) -> Result<InstanceRecords, AwsError> {
        let mut records = InstanceRecords::default();
        for item in query_all(self, &keys::instance(region, instance_id), "").await? {
            if item.sk == keys::ADOPTED {
                records.adopted = true;
                // Marks written before `since_stop` existed: the time of the adoption bounds it.
                records.adopted_since = item.time(ADOPTED_SINCE).or_else(|| item.time(ADOPTED_AT));
            } else if item.sk.starts_with(keys::IMAGE_PREFIX) {
                // A record amiguard cannot read is not one it acts on.
                records.images.extend(from_item(&item));
            }
        }
        Ok(records)
    }

    async fn write_record(&self, region: &str, instance_id: &str, image: &MadeImage) -> Result<(), AwsError> {
        self.put(&to_item(region, instance_id, image), &Condition::Always).await.map(|_| ())
    }

    async fn write_made_of(
        &self,
        region: &str,
        image_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let item = Item::new(keys::made_images(region), image_id)
            .with_s("kind", "made-of")
            .with_s(INSTANCE_ID, instance_id)
            .with_time("made_at", now)
            .with_n(TTL_ATTRIBUTE, (now + KEEP_MADE_OF).timestamp());
        self.put(&item, &Condition::Always).await.map(|_| ())
    }

    async fn made_of(&self, region: &str, image_id: &str) -> Result<Option<String>, AwsError> {
        let items = query_all(self, &keys::made_images(region), image_id).await?;
        Ok(items.iter().find(|item| item.sk == image_id).and_then(|item| item.s(INSTANCE_ID)).map(str::to_string))
    }

    async fn mark_adopted(
        &self,
        region: &str,
        instance_id: &str,
        now: DateTime<Utc>,
        since_stop: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let item = Item::new(keys::instance(region, instance_id), keys::ADOPTED)
            .with_time(ADOPTED_AT, now)
            .with_time(ADOPTED_SINCE, since_stop);
        self.put(&item, &Condition::Always).await.map(|_| ())
    }
}

/// The instance's records, in one query ([`Records::read_records`], as a function for the tests
/// that read the ledger).
pub async fn read(store: &impl Records, region: &str, instance_id: &str) -> Result<InstanceRecords, AwsError> {
    store.read_records(region, instance_id).await
}

/// Writes (or rewrites) the record of one stop ([`Records::write_record`], as a function for the
/// tests that seed the ledger).
pub async fn write(store: &impl Records, region: &str, instance_id: &str, image: &MadeImage) -> Result<(), AwsError> {
    store.write_record(region, instance_id, image).await
}

/// Says that the instance's pre-ledger images were adopted ([`Records::mark_adopted`], as a
/// function for the tests that seed the ledger).
pub async fn mark_adopted(
    store: &impl Records,
    region: &str,
    instance_id: &str,
    now: DateTime<Utc>,
    since_stop: DateTime<Utc>,
) -> Result<(), AwsError> {
    store.mark_adopted(region, instance_id, now, since_stop).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use amiguard::ledger::memory::MemoryLedger;
    use chrono::TimeZone;

    const INSTANCE: &str = "i-0123456789abcdef0";

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 6, 7, minute, 9).unwrap()
    }

    #[tokio::test]
    async fn records_round_trip_through_the_ledger() {
        let store = MemoryLedger::new();
        let mut made = MadeImage::intent(at(1), "amiguard-x", at(2));
        write(&store, "us-east-1", INSTANCE, &made).await.unwrap();
        made.image_id = Some("ami-01".into());
        made.snapshot_ids = vec!["snap-01".into(), "snap-02".into()];
        made.launch_template = Some(LaunchTemplateRef { id: "lt-01".into(), version: 3 });
        write(&store, "us-east-1", INSTANCE, &made).await.unwrap();
        let mut older = MadeImage::intent(at(0), "amiguard-y", at(0));
        older.image_id = Some("ami-00".into());
        older.retired_at = Some(at(3));
        write(&store, "us-east-1", INSTANCE, &older).await.unwrap();
        mark_adopted(&store, "us-east-1", INSTANCE, at(4), at(1)).await.unwrap();

        let records = read(&store, "us-east-1", INSTANCE).await.unwrap();
        assert!(records.adopted);
        assert_eq!(records.adopted_since, Some(at(1)));
        assert_eq!(records.images, vec![older.clone(), made.clone()], "oldest stop first, rewritten in place");
        assert_eq!(records.for_stop(at(1)), Some(&made));
        assert!(records.holds_image("ami-00") && !records.images[0].is_live() && records.images[1].is_live());
        // A retired record expires; a live one does not.
        let partition = store.partition(&keys::instance("us-east-1", INSTANCE));
        let ttl: Vec<Option<i64>> = partition.iter().map(|i| i.n(TTL_ATTRIBUTE)).collect();
        assert_eq!(ttl[1], Some((at(3) + KEEP_RETIRED_RECORD).timestamp()));
        assert_eq!(ttl[2], None);
        assert_eq!(read(&store, "eu-west-1", INSTANCE).await.unwrap(), InstanceRecords::default());
    }
}
