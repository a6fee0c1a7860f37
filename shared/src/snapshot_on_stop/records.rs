//! What snapshot-on-stop remembers in the ledger: every image it made, per instance and stop,
//! written before it acts on the image. Retention reads only these records: an AMI the ledger
//! does not hold is never retired, whatever its tags say.
//!
//! An image found by the stop's deterministic name (a crashed delivery's, one made before the
//! ledger existed) is taken for snapshot-on-stop's own only when EC2's own words say so
//! ([`made_by_create_image`]): names and tags anyone can set. Images made before the ledger
//! existed are adopted once per instance, when their name is exactly the deterministic name for
//! their own tags ([`adoptable`]) *and* EC2 says CreateImage made them of this instance.

use chrono::{DateTime, Duration, Utc};

use super::core::{image_name, parse_time, stopped_at_tag_value};
use super::ec2::{ImageRecord, LaunchTemplateRef};
use crate::aws_words::CreateImageDescription;
use crate::error::AwsError;
use crate::ledger::store::{query_all, Condition, Item, LedgerStore};
use crate::ledger::{keys, TTL_ATTRIBUTE};
use crate::tags;

/// How long the record of a retired image stays (for people reading the ledger).
pub const KEEP_RETIRED_RECORD: Duration = Duration::days(90);

/// The record of the image made for one stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeImage {
    pub stopped_at: DateTime<Utc>,
    pub name: String,
    /// When this delivery set out to create it (written before `CreateImage`).
    pub intended_at: DateTime<Utc>,
    /// `None` while `CreateImage` has not answered: a crashed delivery left only the intent.
    pub image_id: Option<String>,
    /// The snapshots EC2 made for it (what retention may delete, with the image's own mapping).
    pub snapshot_ids: Vec<String>,
    pub launch_template: Option<LaunchTemplateRef>,
    /// Made before the ledger existed, adopted by [`adoptable`].
    pub adopted: bool,
    pub retired_at: Option<DateTime<Utc>>,
    /// amiguard turned EC2's deregistration protection on (`PROTECT_NEWEST`): amiguard turns it
    /// off again when a newer image is available, and never touches a protection a person set.
    pub protection_set: bool,
}

impl MadeImage {
    pub fn intent(stopped_at: DateTime<Utc>, name: &str, now: DateTime<Utc>) -> Self {
        Self {
            stopped_at,
            name: name.to_string(),
            intended_at: now,
            image_id: None,
            snapshot_ids: Vec::new(),
            launch_template: None,
            adopted: false,
            retired_at: None,
            protection_set: false,
        }
    }

    /// An image that may still be retired: created, not retired yet.
    pub fn is_live(&self) -> bool {
        self.image_id.is_some() && self.retired_at.is_none()
    }
}

/// Everything the ledger holds about one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRecords {
    /// Oldest stop first.
    pub images: Vec<MadeImage>,
    /// The adoption of pre-ledger images has been done for this instance.
    pub adopted: bool,
}

impl InstanceRecords {
    pub fn for_stop(&self, stopped_at: DateTime<Utc>) -> Option<&MadeImage> {
        self.images.iter().find(|i| i.stopped_at == stopped_at)
    }

    pub fn holds_image(&self, image_id: &str) -> bool {
        self.images.iter().any(|i| i.image_id.as_deref() == Some(image_id))
    }
}

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

fn to_item(region: &str, instance_id: &str, image: &MadeImage) -> Item {
    let stopped_at = stopped_at_tag_value(image.stopped_at);
    let mut item = Item::new(keys::instance(region, instance_id), keys::image_of_stop(&stopped_at))
        .with_s("kind", "made-image")
        .with_s(STOPPED_AT, stopped_at)
        .with_s(NAME, &image.name)
        .with_time(INTENDED_AT, image.intended_at)
        .with_opt_s(IMAGE_ID, image.image_id.clone())
        .with_list(SNAPSHOT_IDS, image.snapshot_ids.clone())
        .with(ADOPTED, crate::ledger::Value::Bool(image.adopted))
        .with(PROTECTION_SET, crate::ledger::Value::Bool(image.protection_set));
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

/// The instance's records, in one query.
pub async fn read(store: &impl LedgerStore, region: &str, instance_id: &str) -> Result<InstanceRecords, AwsError> {
    let mut records = InstanceRecords::default();
    for item in query_all(store, &keys::instance(region, instance_id), "").await? {
        if item.sk == keys::ADOPTED {
            records.adopted = true;
        } else if item.sk.starts_with(keys::IMAGE_PREFIX) {
            // A record amiguard cannot read is not one it acts on.
            records.images.extend(from_item(&item));
        }
    }
    Ok(records)
}

/// Writes (or rewrites) the record of one stop. The caller holds the instance's lease.
pub async fn write(
    store: &impl LedgerStore,
    region: &str,
    instance_id: &str,
    image: &MadeImage,
) -> Result<(), AwsError> {
    store.put(&to_item(region, instance_id, image), &Condition::Always).await.map(|_| ())
}

/// How long the ledger says which instance an image was made of: its AMI events come within
/// hours of CreateImage; after that a stop's catch-up does what they would have done.
pub const KEEP_MADE_OF: Duration = Duration::days(30);
const INSTANCE_ID: &str = "instance_id";

/// Says which instance `image_id` was made of: an `EC2 AMI State Change` names only the image.
pub async fn write_made_of(
    store: &impl LedgerStore,
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
    store.put(&item, &Condition::Always).await.map(|_| ())
}

/// The instance snapshot-on-stop made `image_id` of, when the ledger says it did.
pub async fn made_of(store: &impl LedgerStore, region: &str, image_id: &str) -> Result<Option<String>, AwsError> {
    let items = query_all(store, &keys::made_images(region), image_id).await?;
    Ok(items.iter().find(|item| item.sk == image_id).and_then(|item| item.s(INSTANCE_ID)).map(str::to_string))
}

/// Says that the instance's pre-ledger images were adopted: adoption never runs again for it.
pub async fn mark_adopted(
    store: &impl LedgerStore,
    region: &str,
    instance_id: &str,
    now: DateTime<Utc>,
) -> Result<(), AwsError> {
    let item = Item::new(keys::instance(region, instance_id), keys::ADOPTED).with_time("adopted_at", now);
    store.put(&item, &Condition::Always).await.map(|_| ())
}

/// Whether an image made before the ledger existed is snapshot-on-stop's own image of
/// `instance_id`: its tags say so *and* its name is exactly the name snapshot-on-stop gives the
/// stop its tags name. Tags alone are never enough (anyone can write them, and
/// `copy-image --copy-image-tags` carries them); a name is unique per region, so a copy has
/// another. Answers the stop time.
pub fn adoptable(instance_id: &str, image: &ImageRecord) -> Option<DateTime<Utc>> {
    if tags::value(&image.tags, tags::SOURCE_INSTANCE) != Some(instance_id)
        || tags::value(&image.tags, tags::CREATED_BY) != Some(tags::CREATED_BY_SNAPSHOT_ON_STOP)
    {
        return None;
    }
    let stopped_at = tags::value(&image.tags, tags::STOPPED_AT).and_then(parse_time)?;
    (image.name.as_deref() == Some(image_name(instance_id, stopped_at).as_str())).then_some(stopped_at)
}

/// Whether EC2's own words say `image` was made by `CreateImage` of `instance_id`: every one of
/// its snapshots carries the description EC2 writes then, naming this instance and this very
/// image. Nobody can change a snapshot's description, and nobody can know an AMI's id before it
/// exists, so an image registered by hand over somebody else's snapshots never passes.
/// `descriptions` are `(snapshot id, description)`; an image without snapshots (still pending,
/// or not EBS) cannot pass.
pub fn made_by_create_image(instance_id: &str, image: &ImageRecord, descriptions: &[(String, String)]) -> bool {
    !image.snapshot_ids.is_empty()
        && image.snapshot_ids.iter().all(|snapshot| {
            descriptions.iter().any(|(id, description)| {
                id == snapshot
                    && CreateImageDescription::parse(description).is_some_and(|created| {
                        (created.instance_id, created.image_id) == (instance_id, image.image_id.as_str())
                    })
            })
        })
}

/// The record of an adopted image.
pub fn adopted_record(image: &ImageRecord, stopped_at: DateTime<Utc>, now: DateTime<Utc>) -> MadeImage {
    MadeImage {
        stopped_at,
        name: image.name.clone().unwrap_or_default(),
        intended_at: now,
        image_id: Some(image.image_id.clone()),
        snapshot_ids: image.snapshot_ids.clone(),
        launch_template: None,
        adopted: true,
        retired_at: None,
        protection_set: false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ledger::memory::MemoryLedger;
    use crate::tags::Tag;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const INSTANCE: &str = "i-0123456789abcdef0";

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 6, 7, minute, 9).unwrap()
    }

    fn image(name: &str, tags: &[(&str, &str)]) -> ImageRecord {
        ImageRecord {
            image_id: "ami-0a".into(),
            name: Some(name.into()),
            state: Some("available".into()),
            state_reason: None,
            creation_date: None,
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
            snapshot_ids: vec!["snap-0a".into()],
            deregistration_protection: None,
        }
    }

    fn own_tags(stopped: &str) -> Vec<(&'static str, String)> {
        vec![
            (tags::SOURCE_INSTANCE, INSTANCE.to_string()),
            (tags::CREATED_BY, "snapshot-on-stop".to_string()),
            (tags::STOPPED_AT, stopped.to_string()),
        ]
    }

    fn with_tags(name: &str, tags: &[(&'static str, String)]) -> ImageRecord {
        let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        image(name, &pairs)
    }

    #[test]
    fn adopts_only_the_exact_name_for_its_own_tags() {
        let stopped = "2026-05-06T07:08:09Z";
        let name = image_name(INSTANCE, at(8));
        assert_eq!(adoptable(INSTANCE, &with_tags(&name, &own_tags(stopped))), Some(at(8)));
        // A copy (another name), a hand-tagged golden image, another instance's, another stop's.
        assert_eq!(adoptable(INSTANCE, &with_tags(&format!("{name}-copy"), &own_tags(stopped))), None);
        assert_eq!(adoptable(INSTANCE, &with_tags("golden-web", &own_tags(stopped))), None);
        assert_eq!(adoptable("i-0ffffffffffffffff", &with_tags(&name, &own_tags(stopped))), None);
        assert_eq!(adoptable(INSTANCE, &with_tags(&name, &own_tags("2026-05-06T07:09:09Z"))), None);
        let mut not_ours = own_tags(stopped);
        not_ours[1].1 = "someone".into();
        assert_eq!(adoptable(INSTANCE, &with_tags(&name, &not_ours)), None);
        assert_eq!(adoptable(INSTANCE, &with_tags(&name, &own_tags("soon"))), None);
        assert_eq!(adoptable(INSTANCE, &with_tags(&name, &own_tags(stopped)[..2])), None);
    }

    #[test]
    fn only_ec2s_own_descriptions_make_an_image_this_instances() {
        let image = image("any-name", &[]);
        let ours = |description: &str| vec![("snap-0a".to_string(), description.to_string())];
        assert!(made_by_create_image(
            INSTANCE,
            &image,
            &ours(&format!("Created by CreateImage({INSTANCE}) for ami-0a"))
        ));
        assert!(made_by_create_image(
            INSTANCE,
            &image,
            &ours(&format!("Created by CreateImage({INSTANCE}) for ami-0a from vol-01"))
        ));
        // Registered by hand over another image's snapshot, or another instance's, or none said.
        assert!(!made_by_create_image(
            INSTANCE,
            &image,
            &ours(&format!("Created by CreateImage({INSTANCE}) for ami-0b"))
        ));
        assert!(!made_by_create_image(
            INSTANCE,
            &image,
            &ours("Created by CreateImage(i-0ffffffffffffffff) for ami-0a")
        ));
        assert!(!made_by_create_image(INSTANCE, &image, &ours("nightly backup")));
        assert!(!made_by_create_image(INSTANCE, &image, &[]));
        let pending = ImageRecord { snapshot_ids: vec![], ..image.clone() };
        assert!(!made_by_create_image(
            INSTANCE,
            &pending,
            &ours(&format!("Created by CreateImage({INSTANCE}) for ami-0a"))
        ));
        // Every snapshot must say so: one foreign snapshot among them is enough to refuse.
        let two = ImageRecord { snapshot_ids: vec!["snap-0a".into(), "snap-0b".into()], ..image };
        let mut descriptions = ours(&format!("Created by CreateImage({INSTANCE}) for ami-0a"));
        descriptions.push(("snap-0b".into(), "before the upgrade".into()));
        assert!(!made_by_create_image(INSTANCE, &two, &descriptions));
    }

    proptest! {
        /// Whatever the tags and name, an adopted image's name is the one its tags imply: no
        /// other name (a copy's, a person's) is ever adopted.
        #[test]
        fn adoption_needs_the_deterministic_name(
            minute in 0u32..60,
            name_minute in 0u32..60,
            suffix in prop::option::of("[a-z-]{1,6}"),
            tagged_instance in prop_oneof![Just(INSTANCE.to_string()), Just("i-0aaaaaaaaaaaaaaaa".to_string())],
            created_by in prop_oneof![Just("snapshot-on-stop"), Just("snapshot-on-stop "), Just("other")],
        ) {
            let stopped = stopped_at_tag_value(at(minute));
            let mut name = image_name(INSTANCE, at(name_minute));
            if let Some(suffix) = &suffix { name.push_str(suffix); }
            let record = image(&name, &[
                (tags::SOURCE_INSTANCE, tagged_instance.as_str()),
                (tags::CREATED_BY, created_by),
                (tags::STOPPED_AT, stopped.as_str()),
            ]);
            let adopted = adoptable(INSTANCE, &record);
            let expected = suffix.is_none() && minute == name_minute && tagged_instance == INSTANCE && created_by == "snapshot-on-stop";
            prop_assert_eq!(adopted.is_some(), expected);
            if let Some(stopped_at) = adopted {
                prop_assert_eq!(Some(image_name(INSTANCE, stopped_at)), record.name);
            }
        }
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
        mark_adopted(&store, "us-east-1", INSTANCE, at(4)).await.unwrap();

        let records = read(&store, "us-east-1", INSTANCE).await.unwrap();
        assert!(records.adopted);
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
