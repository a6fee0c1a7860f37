//! What snapshot-on-stop remembers of the images it made (the ledger's records, as plain data),
//! and the decisions about images it finds without a record.
//!
//! An image found by the stop's deterministic name (a crashed delivery's, one made before the
//! ledger existed, one made while the ledger failed) is taken for snapshot-on-stop's own only when
//! EC2's own words say so ([`made_by_create_image`]): names and tags anyone can set. Such images
//! are adopted when their name is exactly the deterministic name for their own tags
//! ([`adoptable`]), their stop is not after EC2 made them, *and* EC2 says CreateImage made them of
//! this instance: all of them on the instance's first adoption (made before the ledger existed),
//! then those of the stops since (made while the ledger failed): [`to_adopt`].

use amiguard::aws_words::CreateImageDescription;
use amiguard::tags;
use chrono::{DateTime, Utc};

use super::described::{ImageRecord, LaunchTemplateRef};
use super::naming::{image_name, parse_time};

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
    /// Made before the ledger existed, or while it failed, and adopted ([`to_adopt`]).
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
    /// The stop of the delivery that did it: from then on, only images of that stop or later ones
    /// are adopted (made while the ledger failed).
    pub adopted_since: Option<DateTime<Utc>>,
}

impl InstanceRecords {
    pub fn for_stop(&self, stopped_at: DateTime<Utc>) -> Option<&MadeImage> {
        self.images.iter().find(|i| i.stopped_at == stopped_at)
    }

    pub fn holds_image(&self, image_id: &str) -> bool {
        self.images.iter().any(|i| i.image_id.as_deref() == Some(image_id))
    }

    /// The latest stop recorded (retired images' included).
    pub fn last_stop(&self) -> Option<DateTime<Utc>> {
        self.images.iter().map(|i| i.stopped_at).max()
    }

    /// Whether the launch template `template_id` is one snapshot-on-stop made: a record of the
    /// instance names it. Its name alone (`amiguard-<instance>`) anyone can take first.
    pub fn holds_template(&self, template_id: &str) -> bool {
        self.images.iter().any(|i| i.launch_template.as_ref().is_some_and(|t| t.id == template_id))
    }
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

/// Which of `found` (this account's images tagged as snapshot-on-stop's of `instance_id`) may be
/// adopted into its `records`, with their stop times, before EC2's own proof
/// ([`made_by_create_image`]) is read: [`adoptable`] ones, whose stop is not after EC2's
/// `CreationDate` of the image (an image of a stop is made after it: a stop time ahead of that is
/// a tag's word, and would make the image the newest for ever), that the records do not hold and
/// whose stop they hold no other image for (only, maybe, the intent of a delivery that failed to
/// record the image). After the instance's first adoption, only images of its stop or later ones:
/// those made while the ledger failed, never again an older one under an adoptable name.
pub fn to_adopt<'a>(
    instance_id: &str,
    records: &InstanceRecords,
    found: &'a [ImageRecord],
) -> Vec<(&'a ImageRecord, DateTime<Utc>)> {
    let since = records.adopted.then(|| records.adopted_since.or_else(|| records.last_stop()));
    found
        .iter()
        .filter_map(|image| {
            let stopped_at = adoptable(instance_id, image)?;
            let created = image.creation_date.as_deref().and_then(parse_time)?;
            let ours_already = records.holds_image(&image.image_id)
                || records.for_stop(stopped_at).is_some_and(|r| r.image_id.is_some() || r.retired_at.is_some());
            let too_old = match since {
                None => false,
                Some(None) => true,
                Some(Some(since)) => stopped_at < since,
            };
            (stopped_at <= created && !ours_already && !too_old).then_some((image, stopped_at))
        })
        .collect()
}

/// The record of an adopted image: the intent a failed delivery left for its stop, completed, or
/// a new one.
pub fn adopted_into(
    intent: Option<&MadeImage>,
    image: &ImageRecord,
    stopped_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> MadeImage {
    match intent {
        Some(intent) => MadeImage {
            image_id: Some(image.image_id.clone()),
            snapshot_ids: image.snapshot_ids.clone(),
            adopted: true,
            ..intent.clone()
        },
        None => adopted_record(image, stopped_at, now),
    }
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
    use crate::core::naming::stopped_at_tag_value;
    use amiguard::tags::Tag;
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

    fn candidate(id: &str, stopped: DateTime<Utc>, created: &str) -> ImageRecord {
        let stopped_tag = stopped_at_tag_value(stopped);
        ImageRecord {
            image_id: id.into(),
            creation_date: Some(created.into()),
            ..with_tags(&image_name(INSTANCE, stopped), &own_tags(&stopped_tag))
        }
    }

    fn recorded(stopped: DateTime<Utc>, image: Option<&str>) -> MadeImage {
        MadeImage { image_id: image.map(str::to_string), ..MadeImage::intent(stopped, "n", stopped) }
    }

    fn adopted_ids(records: &InstanceRecords, found: &[ImageRecord]) -> Vec<String> {
        to_adopt(INSTANCE, records, found).into_iter().map(|(i, _)| i.image_id.clone()).collect()
    }

    #[test]
    fn first_adoption_takes_every_adoptable_image_made_after_its_stop() {
        let found = [
            candidate("ami-0a", at(1), "2026-05-06T07:01:30Z"),
            // The stop its tags claim is after EC2 made it: a tag's word (a forged 2099 would be
            // the newest for ever).
            candidate("ami-0b", at(30), "2026-05-06T07:02:00Z"),
            candidate("ami-0c", at(2), "not a date"),
        ];
        assert_eq!(adopted_ids(&InstanceRecords::default(), &found), ["ami-0a"]);
        let (_, stopped_at) = to_adopt(INSTANCE, &InstanceRecords::default(), &found)[0];
        assert_eq!(stopped_at, at(1));
    }

    #[test]
    fn after_the_first_adoption_only_images_of_later_stops_are_adopted() {
        let records = InstanceRecords {
            images: vec![recorded(at(10), Some("ami-10"))],
            adopted: true,
            adopted_since: Some(at(10)),
        };
        let found = [
            candidate("ami-10", at(10), "2026-05-06T07:10:30Z"),
            // Made while the ledger failed, after the adoption: adopted.
            candidate("ami-20", at(20), "2026-05-06T07:20:30Z"),
            // An older stop's image appearing now under an adoptable name: not any more.
            candidate("ami-05", at(5), "2026-05-06T07:30:00Z"),
        ];
        assert_eq!(adopted_ids(&records, &found), ["ami-20"]);
        // The very stop of the first adoption, whose own record was lost after it: adopted.
        let lost = InstanceRecords { images: vec![], ..records.clone() };
        assert_eq!(adopted_ids(&lost, &found), ["ami-10", "ami-20"]);
        // Adopted without a time on record: the last recorded stop bounds it.
        let untimed = InstanceRecords { adopted_since: None, ..records.clone() };
        assert_eq!(adopted_ids(&untimed, &found), ["ami-20"]);
        let nothing = InstanceRecords { images: vec![], adopted: true, adopted_since: None };
        assert!(adopted_ids(&nothing, &found).is_empty());
    }

    #[test]
    fn a_stop_the_records_hold_an_image_for_is_never_given_another_but_an_intent_is_completed() {
        let intent = recorded(at(20), None);
        let other = recorded(at(21), Some("ami-other"));
        let retired = MadeImage { retired_at: Some(at(40)), ..recorded(at(22), Some("ami-gone")) };
        let records =
            InstanceRecords { images: vec![intent.clone(), other, retired], adopted: false, adopted_since: None };
        let found = [
            candidate("ami-20", at(20), "2026-05-06T07:20:30Z"),
            candidate("ami-21", at(21), "2026-05-06T07:21:30Z"),
            candidate("ami-22", at(22), "2026-05-06T07:22:30Z"),
        ];
        assert_eq!(adopted_ids(&records, &found), ["ami-20"]);
        let completed = adopted_into(Some(&intent), &found[0], at(20), at(50));
        assert_eq!(completed.image_id.as_deref(), Some("ami-20"));
        assert_eq!((completed.intended_at, completed.adopted), (intent.intended_at, true));
        assert_eq!(completed.snapshot_ids, ["snap-0a"]);
        let fresh = adopted_into(None, &found[1], at(21), at(50));
        assert_eq!((fresh.stopped_at, fresh.intended_at, fresh.adopted), (at(21), at(50), true));
    }

    #[test]
    fn the_records_say_their_last_stop_and_which_template_is_amiguards() {
        let mut newest = recorded(at(30), Some("ami-30"));
        newest.launch_template = Some(LaunchTemplateRef { id: "lt-ours".into(), version: 2 });
        let records = InstanceRecords {
            images: vec![recorded(at(10), Some("ami-10")), newest],
            adopted: true,
            adopted_since: None,
        };
        assert_eq!(records.last_stop(), Some(at(30)));
        assert!(records.holds_template("lt-ours") && !records.holds_template("lt-theirs"));
        assert_eq!(InstanceRecords::default().last_stop(), None);
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
}
