//! What to do about an instance that runs an untrusted image: pure decisions over plain data.
//!
//! The alert goes out once per instance and image (the `amiguard:alerted` mark); enforcement is
//! applied on every untrusted event and is idempotent. A scheduled audit never stops an instance:
//! stopping a long-running machine is a person's decision.

use std::fmt;

use serde::Serialize;

use crate::tags::{self, Tag};

/// `ENFORCEMENT`: what happens besides the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Alert only.
    Alert,
    /// Alert and tag the instance `amiguard:untrusted-ami=<image id>`.
    Tag,
    /// Alert, tag and stop the instance (launch events only).
    Stop,
}

impl Enforcement {
    pub const CHOICES: [(&'static str, Enforcement); 3] =
        [("alert", Enforcement::Alert), ("tag", Enforcement::Tag), ("stop", Enforcement::Stop)];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Tag => "tag",
            Self::Stop => "stop",
        }
    }
}

/// An instance's state as EC2 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
    Other(String),
}

impl InstanceState {
    pub fn parse(name: &str) -> Self {
        match name {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "shutting-down" => Self::ShuttingDown,
            "terminated" => Self::Terminated,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the adapter learned of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: String,
    /// EC2 always reports it; `None` only if it did not.
    pub image_id: Option<String>,
    pub state: InstanceState,
    pub tags: Vec<Tag>,
}

/// Why the instance is being judged now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occasion {
    /// An `EC2 Instance State-change Notification` (`pending` or `running`).
    StateChange(String),
    /// A CloudTrail `RunInstances` call.
    RunInstances,
    /// The scheduled audit of every instance that is not terminated.
    Audit,
}

impl Occasion {
    pub fn is_audit(&self) -> bool {
        matches!(self, Self::Audit)
    }
}

impl fmt::Display for Occasion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StateChange(state) => write!(f, "launch (state-change event: {state})"),
            Self::RunInstances => f.write_str("launch (CloudTrail RunInstances)"),
            Self::Audit => f.write_str("scheduled audit"),
        }
    }
}

/// What to do about the stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// Enforcement is not `stop`, or this is an audit.
    NotAsked,
    /// The instance runs: stop it now.
    Now,
    /// EC2 refuses to stop a `pending` instance: its `running` event will.
    WhenRunning,
    /// The instance is stopping, stopped or going away: nothing to stop.
    NotRunning,
}

/// The actions for one untrusted instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// No alert was sent yet for this instance and image.
    pub alert: bool,
    /// Write `amiguard:untrusted-ami=<image id>` (not there yet, and enforcement asks for it).
    pub tag: bool,
    pub stop: StopStep,
}

/// Whether the instance carries the mark of an alert already sent for `image_id`. A mark for
/// another image (the root volume was replaced from another AMI) does not count.
pub fn already_alerted(instance: &InstanceFacts, image_id: &str) -> bool {
    tags::value(&instance.tags, tags::ALERTED) == Some(image_id)
}

pub fn plan(enforcement: Enforcement, occasion: &Occasion, instance: &InstanceFacts, image_id: &str) -> Plan {
    let tags_it = matches!(enforcement, Enforcement::Tag | Enforcement::Stop);
    let stop = match (enforcement, occasion.is_audit(), &instance.state) {
        (Enforcement::Stop, false, InstanceState::Running) => StopStep::Now,
        (Enforcement::Stop, false, InstanceState::Pending) => StopStep::WhenRunning,
        (Enforcement::Stop, false, _) => StopStep::NotRunning,
        _ => StopStep::NotAsked,
    };
    Plan {
        alert: !already_alerted(instance, image_id),
        tag: tags_it && tags::value(&instance.tags, tags::UNTRUSTED_AMI) != Some(image_id),
        stop,
    }
}

/// The enforcement taken, as reports and alerts state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnforcementTaken {
    /// Trusted, skipped, or `ENFORCEMENT=alert`.
    None,
    /// The instance carries `amiguard:untrusted-ami=<image id>`.
    Tagged,
    /// Tagged, and StopInstances accepted.
    TaggedAndStopped,
    /// Tagged; the instance is `pending` and is stopped on its `running` event.
    TaggedStopDeferred,
    /// Tagged; there was nothing to stop (the instance is not running).
    TaggedNotRunning,
    /// A tag or stop call failed: the invocation fails so that Lambda retries it.
    Failed,
}

/// How StopInstances answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopping,
    /// `IncorrectInstanceState`: the instance left `running` in the meantime.
    NotStoppable,
}

/// The enforcement taken once the planned calls are made. `stop` is `None` when no stop was
/// attempted; `failed` when a tag or stop call failed.
pub fn taken(enforcement: Enforcement, plan: &Plan, stop: Option<&StopOutcome>, failed: bool) -> EnforcementTaken {
    if failed {
        return EnforcementTaken::Failed;
    }
    match (enforcement, plan.stop, stop) {
        (Enforcement::Alert, _, _) => EnforcementTaken::None,
        (_, StopStep::Now, Some(StopOutcome::Stopping)) => EnforcementTaken::TaggedAndStopped,
        (_, StopStep::Now, _) | (_, StopStep::NotRunning, _) => EnforcementTaken::TaggedNotRunning,
        (_, StopStep::WhenRunning, _) => EnforcementTaken::TaggedStopDeferred,
        (_, StopStep::NotAsked, _) => EnforcementTaken::Tagged,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const AMI: &str = "ami-0123456789abcdef0";

    fn instance(state: InstanceState, tags: &[(&str, &str)]) -> InstanceFacts {
        InstanceFacts {
            instance_id: "i-0123456789abcdef0".into(),
            image_id: Some(AMI.into()),
            state,
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
        }
    }

    fn launch() -> Occasion {
        Occasion::StateChange("running".into())
    }

    #[test]
    fn alert_mode_alerts_once_and_does_nothing_else() {
        let fresh = plan(Enforcement::Alert, &launch(), &instance(InstanceState::Running, &[]), AMI);
        assert_eq!(fresh, Plan { alert: true, tag: false, stop: StopStep::NotAsked });
        assert_eq!(taken(Enforcement::Alert, &fresh, None, false), EnforcementTaken::None);
        let marked = instance(InstanceState::Running, &[(tags::ALERTED, AMI)]);
        assert!(!plan(Enforcement::Alert, &launch(), &marked, AMI).alert);
    }

    #[test]
    fn a_mark_for_another_image_does_not_count() {
        let marked = instance(InstanceState::Running, &[(tags::ALERTED, "ami-0aaaaaaaaaaaaaaaa")]);
        assert!(plan(Enforcement::Alert, &launch(), &marked, AMI).alert);
        assert!(!already_alerted(&marked, AMI));
    }

    #[test]
    fn tag_mode_tags_once_and_reports_tagged_every_time() {
        let fresh = plan(Enforcement::Tag, &launch(), &instance(InstanceState::Running, &[]), AMI);
        assert_eq!(fresh, Plan { alert: true, tag: true, stop: StopStep::NotAsked });
        let tagged = instance(InstanceState::Running, &[(tags::UNTRUSTED_AMI, AMI), (tags::ALERTED, AMI)]);
        let again = plan(Enforcement::Tag, &launch(), &tagged, AMI);
        assert_eq!(again, Plan { alert: false, tag: false, stop: StopStep::NotAsked });
        assert_eq!(taken(Enforcement::Tag, &again, None, false), EnforcementTaken::Tagged);
    }

    #[test]
    fn stop_mode_stops_a_running_instance_defers_a_pending_one_and_leaves_the_rest() {
        let running = plan(Enforcement::Stop, &launch(), &instance(InstanceState::Running, &[]), AMI);
        assert_eq!(running.stop, StopStep::Now);
        assert!(running.tag);
        assert_eq!(
            taken(Enforcement::Stop, &running, Some(&StopOutcome::Stopping), false),
            EnforcementTaken::TaggedAndStopped
        );
        assert_eq!(
            taken(Enforcement::Stop, &running, Some(&StopOutcome::NotStoppable), false),
            EnforcementTaken::TaggedNotRunning
        );
        let pending = plan(
            Enforcement::Stop,
            &Occasion::StateChange("pending".into()),
            &instance(InstanceState::Pending, &[]),
            AMI,
        );
        assert_eq!(pending.stop, StopStep::WhenRunning);
        assert_eq!(taken(Enforcement::Stop, &pending, None, false), EnforcementTaken::TaggedStopDeferred);
        for state in [InstanceState::Stopping, InstanceState::Stopped, InstanceState::ShuttingDown] {
            let p = plan(Enforcement::Stop, &Occasion::RunInstances, &instance(state, &[]), AMI);
            assert_eq!(p.stop, StopStep::NotRunning);
            assert_eq!(taken(Enforcement::Stop, &p, None, false), EnforcementTaken::TaggedNotRunning);
        }
    }

    #[test]
    fn an_audit_tags_but_never_stops() {
        let p = plan(Enforcement::Stop, &Occasion::Audit, &instance(InstanceState::Running, &[]), AMI);
        assert_eq!(p, Plan { alert: true, tag: true, stop: StopStep::NotAsked });
        assert_eq!(taken(Enforcement::Stop, &p, None, false), EnforcementTaken::Tagged);
    }

    #[test]
    fn a_failed_call_is_reported_as_failed() {
        let p = plan(Enforcement::Stop, &launch(), &instance(InstanceState::Running, &[]), AMI);
        assert_eq!(taken(Enforcement::Stop, &p, None, true), EnforcementTaken::Failed);
    }

    #[test]
    fn names() {
        assert_eq!(serde_json::to_value(EnforcementTaken::TaggedStopDeferred).unwrap(), "tagged-stop-deferred");
        assert_eq!(InstanceState::parse("shutting-down"), InstanceState::ShuttingDown);
        assert_eq!(InstanceState::parse("weird").as_str(), "weird");
        assert_eq!(Occasion::StateChange("pending".into()).to_string(), "launch (state-change event: pending)");
    }
}
