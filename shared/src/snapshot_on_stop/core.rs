//! The decisions of snapshot-on-stop, as plain functions over plain data.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::tags::{self, Tag};

/// Which instances are imaged when they stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotScope {
    /// Only instances tagged `amiguard:snapshot-on-stop=true`.
    Tagged,
    /// Every instance, except those tagged `amiguard:snapshot-on-stop=false`.
    All,
}

/// What the function knows of an instance when it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: String,
    /// `pending`, `running`, `stopping`, `stopped`, ...
    pub state: String,
    /// `ebs` or `instance-store`.
    pub root_device_type: Option<String>,
    /// EC2's `StateReason.Code` of the last state change: `Client.UserInitiatedShutdown`,
    /// `Client.UserInitiatedHibernate`, `Server.SpotInstanceTermination`, ...
    pub state_reason: Option<String>,
    pub tags: Vec<Tag>,
}

/// The `StateReason.Code` of a stop by hibernation.
pub const HIBERNATION: &str = "Client.UserInitiatedHibernate";

/// Why an instance is not imaged. The text is the report's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    EventStateNotStopped(String),
    InstanceGone,
    NoLongerStopped(String),
    NotEbsBacked(String),
    /// Stopped by hibernation: AWS warns that an image of a hibernated instance may not boot.
    Hibernated,
    OptedOut,
    NotOptedIn,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EventStateNotStopped(state) => write!(f, "event state is {state}, not stopped"),
            Self::InstanceGone => write!(f, "instance no longer exists"),
            Self::NoLongerStopped(state) => write!(f, "instance is {state} now, no longer stopped"),
            Self::NotEbsBacked(kind) => write!(f, "root device is {kind}, not EBS: it cannot be imaged"),
            Self::Hibernated => write!(f, "stopped by hibernation ({HIBERNATION}): such an image may not boot"),
            Self::OptedOut => write!(f, "instance opted out with {}=false", tags::SNAPSHOT_ON_STOP),
            Self::NotOptedIn => write!(f, "instance is not tagged {}=true (scope is tagged)", tags::SNAPSHOT_ON_STOP),
        }
    }
}

/// Whether `instance` is to be imaged now. A stop event is acted on only while the instance is
/// still stopped: an image of an instance that was started again would not be consistent.
pub fn select(instance: &InstanceFacts, scope: SnapshotScope) -> Result<(), SkipReason> {
    if instance.state == "terminated" || instance.state == "shutting-down" {
        return Err(SkipReason::InstanceGone);
    }
    if instance.state != "stopped" {
        return Err(SkipReason::NoLongerStopped(instance.state.clone()));
    }
    match instance.root_device_type.as_deref() {
        Some("ebs") => {}
        other => return Err(SkipReason::NotEbsBacked(other.unwrap_or("unknown").to_string())),
    }
    // Any other stop, one AWS made included (a Spot interruption, `Server.*`), is imaged.
    if instance.state_reason.as_deref() == Some(HIBERNATION) {
        return Err(SkipReason::Hibernated);
    }
    let opt_in = tags::value(&instance.tags, tags::SNAPSHOT_ON_STOP).map(|v| v.trim().to_ascii_lowercase());
    match (scope, opt_in.as_deref()) {
        (_, Some("false")) => Err(SkipReason::OptedOut),
        (SnapshotScope::Tagged, Some("true")) => Ok(()),
        (SnapshotScope::Tagged, _) => Err(SkipReason::NotOptedIn),
        (SnapshotScope::All, _) => Ok(()),
    }
}

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
pub fn image_tags(instance: &InstanceFacts, stopped_at: DateTime<Utc>, protect_tag: &str) -> Vec<Tag> {
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

/// The snapshots' tags: amiguard's own and the AMI they belong to.
pub fn snapshot_tags(instance_id: &str, stopped_at: DateTime<Utc>, image_id: &str) -> Vec<Tag> {
    let mut result = ownership_tags(instance_id, stopped_at);
    result.push(Tag::new(tags::IMAGE, image_id));
    result
}

/// One of the images snapshot-on-stop made of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedImage {
    pub image_id: String,
    /// The stop it was made for (the ledger's record); `None` when unknown.
    pub stopped_at: Option<DateTime<Utc>>,
    pub creation_date: Option<DateTime<Utc>>,
    pub snapshot_ids: Vec<String>,
    /// EC2 says it is `available` (not pending, failed, disabled or unknown).
    pub available: bool,
    /// The protect tag is on it or on one of its snapshots.
    pub protected: bool,
    /// EC2 says it failed (`failed`, `error`, `invalid`), with EC2's reason when it gives one.
    pub failed: Option<String>,
    /// EC2's deregistration protection is on: counted like any available image, never retired
    /// (`DeregisterImage` would fail).
    pub deregistration_protected: bool,
    /// EC2's own words for it (`enabled-without-cooldown`, `enabled-with-cooldown`, ...).
    pub deregistration_protection: Option<String>,
}

/// The newest available image (by stop, then creation date): the one the launch template's
/// default launches. Protected images count (they are good images); a pending or failed one never.
pub fn newest_available(images: &[ManagedImage]) -> Option<&ManagedImage> {
    images
        .iter()
        .filter(|i| i.available && i.stopped_at.is_some())
        .max_by(|a, b| (a.stopped_at, a.creation_date, &a.image_id).cmp(&(b.stopped_at, b.creation_date, &b.image_id)))
}

/// The images to retire so that the newest `keep_last` *available* images remain ("newest" by
/// the stop they were made for, ties broken by creation date). Never retired, and never counted
/// among the `keep_last`: an image that is not available (a pending one may never become
/// available, a failed one is evidence), a protected one, and one whose stop cannot be read (it
/// cannot be ordered, and a wrong guess would delete a newer image). So a pending image never
/// displaces the last good one. `current` (the image of this stop) is never retired, even when a
/// late redelivery makes it older than the others. An image EC2 protects from deregistration
/// counts among the `keep_last` but is never retired.
pub fn images_to_retire<'a>(images: &'a [ManagedImage], keep_last: usize, current: &str) -> Vec<&'a ManagedImage> {
    let mut ordered: Vec<&ManagedImage> =
        images.iter().filter(|i| i.stopped_at.is_some() && i.available && !i.protected).collect();
    ordered.sort_by(|a, b| {
        (b.stopped_at, b.creation_date, &b.image_id).cmp(&(a.stopped_at, a.creation_date, &a.image_id))
    });
    ordered.into_iter().skip(keep_last).filter(|i| i.image_id != current && !i.deregistration_protected).collect()
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

    fn instance(state: &str, root: Option<&str>, tags: &[(&str, &str)]) -> InstanceFacts {
        InstanceFacts {
            instance_id: "i-0123456789abcdef0".into(),
            state: state.into(),
            root_device_type: root.map(str::to_string),
            state_reason: Some("Client.UserInitiatedShutdown".into()),
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, h, m, 5).unwrap()
    }

    #[test]
    fn selects_a_tagged_stopped_ebs_instance() {
        let i = instance("stopped", Some("ebs"), &[("amiguard:snapshot-on-stop", "true")]);
        assert_eq!(select(&i, SnapshotScope::Tagged), Ok(()));
        assert_eq!(select(&i, SnapshotScope::All), Ok(()));
        let shouty = instance("stopped", Some("ebs"), &[("amiguard:snapshot-on-stop", " TRUE ")]);
        assert_eq!(select(&shouty, SnapshotScope::Tagged), Ok(()));
    }

    #[test]
    fn scope_tagged_needs_the_tag_and_false_opts_out_everywhere() {
        let untagged = instance("stopped", Some("ebs"), &[]);
        assert_eq!(select(&untagged, SnapshotScope::Tagged), Err(SkipReason::NotOptedIn));
        assert_eq!(select(&untagged, SnapshotScope::All), Ok(()));
        let out = instance("stopped", Some("ebs"), &[("amiguard:snapshot-on-stop", "false")]);
        assert_eq!(select(&out, SnapshotScope::All), Err(SkipReason::OptedOut));
        assert_eq!(select(&out, SnapshotScope::Tagged), Err(SkipReason::OptedOut));
        let other = instance("stopped", Some("ebs"), &[("amiguard:snapshot-on-stop", "yes")]);
        assert_eq!(select(&other, SnapshotScope::Tagged), Err(SkipReason::NotOptedIn));
    }

    #[test]
    fn skips_instances_that_are_not_stopped_any_more_or_not_ebs() {
        let tag = [("amiguard:snapshot-on-stop", "true")];
        assert_eq!(
            select(&instance("running", Some("ebs"), &tag), SnapshotScope::All),
            Err(SkipReason::NoLongerStopped("running".into()))
        );
        assert_eq!(
            select(&instance("terminated", Some("ebs"), &tag), SnapshotScope::All),
            Err(SkipReason::InstanceGone)
        );
        assert_eq!(
            select(&instance("stopped", Some("instance-store"), &tag), SnapshotScope::All),
            Err(SkipReason::NotEbsBacked("instance-store".into()))
        );
        assert_eq!(
            select(&instance("stopped", None, &tag), SnapshotScope::All),
            Err(SkipReason::NotEbsBacked("unknown".into()))
        );
    }

    #[test]
    fn a_hibernation_stop_is_skipped_and_a_stop_aws_made_is_imaged() {
        let tag = [("amiguard:snapshot-on-stop", "true")];
        let with_reason = |reason: Option<&str>| InstanceFacts {
            state_reason: reason.map(str::to_string),
            ..instance("stopped", Some("ebs"), &tag)
        };
        assert_eq!(select(&with_reason(Some(HIBERNATION)), SnapshotScope::Tagged), Err(SkipReason::Hibernated));
        assert!(SkipReason::Hibernated.to_string().contains("hibernation"));
        for imaged in [Some("Server.SpotInstanceTermination"), Some("Client.UserInitiatedShutdown"), None] {
            assert_eq!(select(&with_reason(imaged), SnapshotScope::Tagged), Ok(()), "{imaged:?}");
        }
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
    fn snapshot_tags_name_the_image() {
        let got = snapshot_tags("i-1", at(1, 2), "ami-9");
        assert_eq!(tags::value(&got, "amiguard:image"), Some("ami-9"));
        assert_eq!(tags::value(&got, "amiguard:source-instance"), Some("i-1"));
        assert_eq!(got.len(), 4);
    }

    fn managed(id: &str, stopped: Option<DateTime<Utc>>, created: Option<DateTime<Utc>>) -> ManagedImage {
        ManagedImage {
            image_id: id.into(),
            stopped_at: stopped,
            creation_date: created,
            snapshot_ids: vec![format!("snap-{id}")],
            available: true,
            protected: false,
            failed: None,
            deregistration_protected: false,
            deregistration_protection: None,
        }
    }

    fn ids(images: Vec<&ManagedImage>) -> Vec<&str> {
        images.into_iter().map(|i| i.image_id.as_str()).collect()
    }

    #[test]
    fn retires_all_but_the_newest_by_stop_time() {
        let images = [
            managed("ami-a", Some(at(1, 0)), Some(at(9, 0))),
            managed("ami-c", Some(at(3, 0)), Some(at(3, 0))),
            managed("ami-b", Some(at(2, 0)), Some(at(2, 0))),
        ];
        assert_eq!(ids(images_to_retire(&images, 2, "ami-c")), ["ami-a"]);
        assert_eq!(ids(images_to_retire(&images, 1, "ami-c")), ["ami-b", "ami-a"]);
        assert!(images_to_retire(&images, 3, "ami-c").is_empty());
    }

    #[test]
    fn ties_in_stop_time_are_broken_by_creation_date() {
        let images =
            [managed("ami-old", Some(at(1, 0)), Some(at(1, 0))), managed("ami-new", Some(at(1, 0)), Some(at(2, 0)))];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-x")), ["ami-old"]);
    }

    #[test]
    fn never_retires_the_current_image_or_one_it_cannot_order() {
        let images = [
            managed("ami-late", Some(at(1, 0)), None),
            managed("ami-b", Some(at(3, 0)), None),
            managed("ami-c", Some(at(4, 0)), None),
            managed("ami-unknown", None, None),
        ];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-late")), ["ami-b"]);
    }

    #[test]
    fn a_pending_or_failed_image_never_displaces_an_available_one() {
        let pending = ManagedImage { available: false, ..managed("ami-new", Some(at(2, 0)), Some(at(2, 0))) };
        let images = [managed("ami-old", Some(at(1, 0)), Some(at(1, 0))), pending.clone()];
        // KEEP_LAST=1 while this stop's image is still pending: the last good image stays.
        assert!(images_to_retire(&images, 1, "ami-new").is_empty());
        // Once it is available (the next stop's view), the old one goes.
        let available = ManagedImage { available: true, ..pending };
        let images = [managed("ami-old", Some(at(1, 0)), Some(at(1, 0))), available];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-newer")), ["ami-old"]);
        // A failed image is never retired and never counted.
        let failed = ManagedImage { available: false, ..managed("ami-failed", Some(at(0, 0)), None) };
        let images = [failed, managed("ami-ok", Some(at(1, 0)), None)];
        assert!(images_to_retire(&images, 1, "ami-x").is_empty());
    }

    #[test]
    fn an_image_ec2_protects_from_deregistration_counts_but_is_never_retired() {
        let guarded = ManagedImage { deregistration_protected: true, ..managed("ami-a", Some(at(1, 0)), None) };
        let images = [guarded, managed("ami-b", Some(at(2, 0)), None), managed("ami-c", Some(at(3, 0)), None)];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-c")), ["ami-b"]);
        assert_eq!(ids(images_to_retire(&images, 2, "ami-c")), Vec::<&str>::new());
    }

    #[test]
    fn the_template_launches_the_newest_available_image_only() {
        let pending = ManagedImage { available: false, ..managed("ami-pending", Some(at(3, 0)), None) };
        let failed = ManagedImage {
            available: false,
            failed: Some("KMS".into()),
            ..managed("ami-failed", Some(at(4, 0)), None)
        };
        let protected = ManagedImage { protected: true, ..managed("ami-kept", Some(at(2, 0)), None) };
        let images = [managed("ami-old", Some(at(1, 0)), None), protected, pending.clone(), failed];
        assert_eq!(newest_available(&images).map(|i| i.image_id.as_str()), Some("ami-kept"));
        assert_eq!(newest_available(&[pending]), None);
        let unordered = managed("ami-unknown", None, None);
        assert_eq!(newest_available(&[unordered]), None, "an image whose stop is unknown cannot be ordered");
    }

    #[test]
    fn a_protected_image_is_never_retired_nor_counted() {
        let protected = ManagedImage { protected: true, ..managed("ami-kept", Some(at(1, 0)), None) };
        let images = [protected, managed("ami-b", Some(at(2, 0)), None), managed("ami-c", Some(at(3, 0)), None)];
        assert_eq!(ids(images_to_retire(&images, 1, "ami-c")), ["ami-b"]);
        assert_eq!(ids(images_to_retire(&images, 2, "ami-c")), Vec::<&str>::new());
    }

    proptest! {
        #[test]
        fn retention_keeps_the_newest_and_current(stops in proptest::collection::vec((0i64..50, 0i64..50, any::<bool>(), any::<bool>(), any::<bool>()), 0..12), keep in 1usize..6, current in 0usize..12) {
            let images: Vec<ManagedImage> = stops.iter().enumerate().map(|(n, (s, c, available, protected, guarded))| ManagedImage {
                available: *available,
                protected: *protected,
                deregistration_protected: *guarded,
                ..managed(
                    &format!("ami-{n}"),
                    Some(at(0, 0) + chrono::Duration::minutes(*s)),
                    Some(at(0, 0) + chrono::Duration::minutes(*c)),
                )
            }).collect();
            let current_id = format!("ami-{current}");
            let retired = images_to_retire(&images, keep, &current_id);
            let kept: Vec<&ManagedImage> = images.iter().filter(|i| !retired.iter().any(|r| r.image_id == i.image_id)).collect();
            // only available, unprotected images are retired, and never the current one
            prop_assert!(retired.iter().all(|r| r.available && !r.protected && r.image_id != current_id));
            prop_assert!(retired.iter().all(|r| !r.deregistration_protected));
            // at least min(keep, n) of the available, unprotected images are kept
            let counted = images.iter().filter(|i| i.available && !i.protected).count();
            let kept_counted = kept.iter().filter(|i| i.available && !i.protected).count();
            prop_assert!(kept_counted >= keep.min(counted));
            // no retired image is newer than a kept available, unprotected one other than the current
            for r in &retired {
                for k in kept.iter().filter(|k| k.image_id != current_id && k.available && !k.protected && !k.deregistration_protected) {
                    prop_assert!((r.stopped_at, r.creation_date) <= (k.stopped_at, k.creation_date));
                }
            }
            // the same whatever the input order
            let mut reversed = images.clone();
            reversed.reverse();
            let mut a = ids(retired.clone()); a.sort();
            let mut b = ids(images_to_retire(&reversed, keep, &current_id)); b.sort();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn image_tags_never_exceed_the_limit_nor_copy_reserved(user in proptest::collection::vec(("[a-zA-Z:]{1,12}", "[a-z]{0,5}"), 0..80)) {
            let i = InstanceFacts { instance_id: "i-1".into(), state: "stopped".into(), root_device_type: Some("ebs".into()), state_reason: None, tags: user.into_iter().map(|(k, v)| Tag::new(k, v)).collect() };
            let got = image_tags(&i, at(0, 0), "legal-hold");
            prop_assert!(got.len() <= tags::MAX_TAGS_PER_RESOURCE);
            prop_assert!(got.iter().all(|t| !tags::is_aws_reserved(&t.key)));
            prop_assert_eq!(got.iter().filter(|t| tags::is_amiguard(&t.key)).count(), 3);
        }
    }
}
