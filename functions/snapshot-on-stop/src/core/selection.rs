//! Which stopped instances are imaged: the scope, the opt-in and opt-out tag, and what EC2 says
//! of the instance now.

use amiguard::tags::{self, Tag};
use serde::Serialize;

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
pub struct StoppedInstance {
    pub instance_id: String,
    /// `pending`, `running`, `stopping`, `stopped`, ...
    pub state: String,
    /// `ebs` or `instance-store`.
    pub root_device_type: Option<String>,
    /// EC2's `StateReason.Code` of the last state change: `Client.UserInitiatedShutdown`,
    /// `Client.UserInitiatedHibernate`, `Server.SpotInstanceTermination`, ...
    pub state_reason: Option<String>,
    /// EC2's `StateTransitionReason`: for a stop a person or the API made, `User initiated
    /// (<time> GMT)`, the stop time that names its image ([`super::stop_time::stated_by_ec2`]).
    pub state_transition_reason: Option<String>,
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
pub fn select(instance: &StoppedInstance, scope: SnapshotScope) -> Result<(), SkipReason> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn instance(state: &str, root: Option<&str>, tags: &[(&str, &str)]) -> StoppedInstance {
        StoppedInstance {
            instance_id: "i-0123456789abcdef0".into(),
            state: state.into(),
            root_device_type: root.map(str::to_string),
            state_reason: Some("Client.UserInitiatedShutdown".into()),
            state_transition_reason: Some("User initiated (2026-11-27 01:00:00 GMT)".into()),
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
        }
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
        let with_reason = |reason: Option<&str>| StoppedInstance {
            state_reason: reason.map(str::to_string),
            ..instance("stopped", Some("ebs"), &tag)
        };
        assert_eq!(select(&with_reason(Some(HIBERNATION)), SnapshotScope::Tagged), Err(SkipReason::Hibernated));
        assert!(SkipReason::Hibernated.to_string().contains("hibernation"));
        for imaged in [Some("Server.SpotInstanceTermination"), Some("Client.UserInitiatedShutdown"), None] {
            assert_eq!(select(&with_reason(imaged), SnapshotScope::Tagged), Ok(()), "{imaged:?}");
        }
    }
}
