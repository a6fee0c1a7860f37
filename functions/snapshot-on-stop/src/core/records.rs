//! What snapshot-on-stop remembers of the images it made (the ledger's records, as plain data),
//! and the decisions about images it finds without a record.
//!
//! An image found by the stop's deterministic name (a crashed delivery's, one made before the
//! ledger existed) is taken for snapshot-on-stop's own only when EC2's own words say so
//! ([`made_by_create_image`]): names and tags anyone can set. Images made before the ledger
//! existed are adopted once per instance, when their name is exactly the deterministic name for
//! their own tags ([`adoptable`]) *and* EC2 says CreateImage made them of this instance.

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
