//! The names and tags of what snapshot-on-stop makes: deterministic, so that a redelivered event
//! finds what an earlier delivery made.

use amiguard::tags::{self, Tag};
use chrono::{DateTime, SecondsFormat, Utc};

use super::selection::StoppedInstance;

/// The AMI name for a stop of `instance_id` at `stopped_at`: deterministic, so a redelivered
/// event finds the image it already made. Only characters AMI names accept (no `:`).
pub fn image_name(instance_id: &str, stopped_at: DateTime<Utc>) -> String {
    format!("amiguard-{instance_id}-{}", stopped_at.format("%Y%m%dT%H%M%SZ"))
}

/// The launch template that relaunches `instance_id`.
pub fn launch_template_name(instance_id: &str) -> String {
    format!("amiguard-{instance_id}")
}

pub fn stopped_at_tag_value(stopped_at: DateTime<Utc>) -> String {
    stopped_at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn image_description(instance_id: &str, stopped_at: DateTime<Utc>) -> String {
    format!("amiguard snapshot-on-stop of {instance_id}, stopped at {}", stopped_at_tag_value(stopped_at))
}

/// amiguard's own tags, on the AMI and on each of its snapshots.
pub fn ownership_tags(instance_id: &str, stopped_at: DateTime<Utc>) -> Vec<Tag> {
    vec![
        Tag::new(tags::SOURCE_INSTANCE, instance_id),
        Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP),
        Tag::new(tags::STOPPED_AT, stopped_at_tag_value(stopped_at)),
    ]
}

/// The AMI's tags: amiguard's own first (information for people), then `Name`, then the
/// instance's tags. Never `aws:*` (reserved: the call would fail), never the instance's
/// `amiguard:*` control tags (any letter case), never the protect tag (on the instance it would
/// silently keep every image of it forever: protecting an image is a decision about that
/// image), never over EC2's 50-tag limit.
pub fn image_tags(instance: &StoppedInstance, stopped_at: DateTime<Utc>, protect_tag: &str) -> Vec<Tag> {
    let mut result = ownership_tags(&instance.instance_id, stopped_at);
    if let Some(name) = tags::value(&instance.tags, "Name") {
        result.push(Tag::new("Name", name));
    }
    let copied = instance
        .tags
        .iter()
        .filter(|t| t.key != "Name" && !tags::is_aws_reserved(&t.key) && !tags::is_amiguard(&t.key))
        .filter(|t| !t.key.eq_ignore_ascii_case(protect_tag));
    for tag in copied {
        if result.len() >= tags::MAX_TAGS_PER_RESOURCE {
            break;
        }
        result.push(tag.clone());
    }
    result
}

/// The snapshots' tags at creation (CreateImage's `snapshot` TagSpecification): amiguard's own,
/// `amiguard:created-by` included, which IAM lets the role write only on what it is creating.
pub fn snapshot_creation_tags(instance_id: &str, stopped_at: DateTime<Utc>) -> Vec<Tag> {
    ownership_tags(instance_id, stopped_at)
}

/// The snapshots' tags once the AMI exists (`CreateTags` on what exists: a redelivery repeats
/// it): the AMI they belong to, which nobody knows before CreateImage answers, and the
/// information tags an image of the previous version may lack. Never `amiguard:created-by`: IAM
/// refuses it on an existing resource (the role's tag gate would mean nothing otherwise), and an
/// image made before this rule has it from then on where it had it.
pub fn snapshot_tags_after_creation(instance_id: &str, stopped_at: DateTime<Utc>, image_id: &str) -> Vec<Tag> {
    let mut result: Vec<Tag> =
        ownership_tags(instance_id, stopped_at).into_iter().filter(|t| t.key != tags::CREATED_BY).collect();
    result.push(Tag::new(tags::IMAGE, image_id));
    result
}

/// The relaunch template's tags, written by CreateLaunchTemplate: `amiguard:created-by` is what
/// IAM requires of a template the role changes.
pub fn launch_template_tags(instance_id: &str) -> Vec<Tag> {
    vec![Tag::new(tags::SOURCE_INSTANCE, instance_id), Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP)]
}

/// Reads an `amiguard:stopped-at` or EC2 `CreationDate` value.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn instance(state: &str, root: Option<&str>, tags: &[(&str, &str)]) -> StoppedInstance {
        StoppedInstance {
            instance_id: "i-0123456789abcdef0".into(),
            state: state.into(),
            root_device_type: root.map(str::to_string),
            state_reason: Some("Client.UserInitiatedShutdown".into()),
            state_transition_reason: None,
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, h, m, 5).unwrap()
    }

    #[test]
    fn names_are_deterministic_and_valid_ami_names() {
        let name = image_name("i-0123456789abcdef0", at(10, 20));
        assert_eq!(name, "amiguard-i-0123456789abcdef0-20260304T102005Z");
        assert_eq!(name, image_name("i-0123456789abcdef0", at(10, 20)));
        assert_ne!(name, image_name("i-0123456789abcdef0", at(10, 21)));
        assert!(name.len() >= 3 && name.len() <= 128);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c)));
        assert_eq!(launch_template_name("i-1"), "amiguard-i-1");
        assert_eq!(stopped_at_tag_value(at(10, 20)), "2026-03-04T10:20:05Z");
    }

    #[test]
    fn image_tags_copy_user_tags_but_never_reserved_or_control_tags() {
        let i = instance(
            "stopped",
            Some("ebs"),
            &[
                ("Name", "db-1"),
                ("team", "data"),
                ("aws:cloudformation:stack-name", "s"),
                ("AWS:x", "y"),
                ("amiguard:snapshot-on-stop", "true"),
                ("AMIGUARD:KEEP", ""),
                ("Amiguard:Other", "x"),
            ],
        );
        let got = image_tags(&i, at(1, 2), tags::KEEP);
        let keys: Vec<&str> = got.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["amiguard:source-instance", "amiguard:created-by", "amiguard:stopped-at", "Name", "team"]);
        assert_eq!(tags::value(&got, "Name"), Some("db-1"));
        assert_eq!(tags::value(&got, "amiguard:created-by"), Some("snapshot-on-stop"));
        assert_eq!(tags::value(&got, "amiguard:source-instance"), Some("i-0123456789abcdef0"));
        assert_eq!(tags::value(&got, "amiguard:stopped-at"), Some("2026-03-04T01:02:05Z"));
        // A custom protect tag on the instance is not copied either, in any letter case.
        let held = instance("stopped", Some("ebs"), &[("Legal-Hold", "yes"), ("team", "data")]);
        let keys: Vec<String> = image_tags(&held, at(1, 2), "legal-hold").into_iter().map(|t| t.key).collect();
        assert!(!keys.iter().any(|k| k.eq_ignore_ascii_case("legal-hold")) && keys.contains(&"team".to_string()));
    }

    #[test]
    fn created_by_is_written_at_creation_only_and_the_snapshots_name_their_image_afterwards() {
        let created = snapshot_creation_tags("i-1", at(1, 2));
        assert_eq!(tags::value(&created, tags::CREATED_BY), Some(tags::CREATED_BY_SNAPSHOT_ON_STOP));
        assert_eq!(
            tags::value(&launch_template_tags("i-1"), tags::CREATED_BY),
            Some(tags::CREATED_BY_SNAPSHOT_ON_STOP)
        );
        let after = snapshot_tags_after_creation("i-1", at(1, 2), "ami-9");
        assert_eq!(tags::value(&after, "amiguard:image"), Some("ami-9"));
        assert_eq!(tags::value(&after, "amiguard:source-instance"), Some("i-1"));
        assert_eq!(tags::value(&after, "amiguard:stopped-at"), Some("2026-03-04T01:02:05Z"));
        assert!(!after.iter().any(|t| t.key.eq_ignore_ascii_case(tags::CREATED_BY)), "{after:?}");
        // Together, the snapshot carries what the image does, and the AMI's id.
        let keys: Vec<&str> = created.iter().chain(&after).map(|t| t.key.as_str()).collect();
        for key in [tags::SOURCE_INSTANCE, tags::CREATED_BY, tags::STOPPED_AT, tags::IMAGE] {
            assert!(keys.contains(&key), "{key}");
        }
    }

    proptest! {
        #[test]
        fn image_tags_never_exceed_the_limit_nor_copy_reserved(user in proptest::collection::vec(("[a-zA-Z:]{1,12}", "[a-z]{0,5}"), 0..80)) {
            let i = StoppedInstance { instance_id: "i-1".into(), state: "stopped".into(), root_device_type: Some("ebs".into()), state_reason: None, state_transition_reason: None, tags: user.into_iter().map(|(k, v)| Tag::new(k, v)).collect() };
            let got = image_tags(&i, at(0, 0), "legal-hold");
            prop_assert!(got.len() <= tags::MAX_TAGS_PER_RESOURCE);
            prop_assert!(got.iter().all(|t| !tags::is_aws_reserved(&t.key)));
            prop_assert_eq!(got.iter().filter(|t| tags::is_amiguard(&t.key)).count(), 3);
        }
    }
}
