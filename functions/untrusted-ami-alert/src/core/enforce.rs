//! What to do about an instance that runs an untrusted image: pure decisions over plain data.
//!
//! The alert goes out once per instance and image (the ledger's record: `sent`); enforcement is
//! applied on every untrusted event and is idempotent, and only on what is proven: a `high`
//! verdict (an owner, or an ancestor's owner, proven untrusted). A `medium` one (provenance that
//! cannot be verified, a trusted owner's image failing a name or age condition) alerts only,
//! unless `ENFORCE_UNVERIFIABLE`. Nothing here reads the instance's tags: a launcher can pre-set
//! any tag on its own instance. A scheduled audit never stops an instance: stopping a
//! long-running machine is a person's decision.

use std::fmt;

use serde::Serialize;

use amiguard::alert::Severity;

/// `ENFORCEMENT`: what happens besides the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// EC2 no longer lists the instance (terminated long enough ago), or does not yet: only the
    /// launch's record (CloudTrail) or EC2's launch metadata names its image.
    Unlisted,
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
            Self::Unlisted => "no longer listed by EC2",
            Self::Other(name) => name,
        }
    }
}

impl InstanceState {
    /// Terminated, or no longer listed: judged and alerted, but there is nothing to tag or stop.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Terminated | Self::Unlisted)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the adapter learned of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedInstance {
    pub instance_id: String,
    /// EC2 always reports it; `None` only if it did not.
    pub image_id: Option<String>,
    pub state: InstanceState,
    // No tags: nothing this function decides may depend on what a launcher can write.
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

/// The enforcement actions for one untrusted instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnforcementPlan {
    /// Write `amiguard:untrusted-ami=<image id>` (every time: CreateTags is idempotent, and
    /// whatever tag the instance already carries was possibly set by its launcher).
    pub tag: bool,
    pub stop: StopStep,
    /// The instance is terminated or no longer listed: nothing is tagged or stopped.
    pub gone: bool,
    /// The verdict is not proven (`medium`) and `ENFORCE_UNVERIFIABLE` is off: nothing is tagged
    /// or stopped that `ENFORCEMENT` would have, and the report and the alert say why.
    pub withheld: bool,
}

/// Whether a verdict of `severity` is proven enough to be enforced: `high` (an owner, or an
/// ancestor's owner, proven untrusted; an image EC2 does not allow or cannot show), or `medium`
/// (not proven: provenance that cannot be verified, a trusted owner's image failing a name or
/// age condition) only when `ENFORCE_UNVERIFIABLE` says so. A throttled or refused lookup, an
/// ancestor in another region, a name: none of them may stop a production instance.
pub fn enforceable(severity: Severity, enforce_unverifiable: bool) -> bool {
    severity == Severity::High || enforce_unverifiable
}

/// What to do about an untrusted instance in `state`: `enforceable` says whether its verdict may
/// be enforced at all ([`enforceable`]).
pub fn plan(
    enforcement: Enforcement,
    occasion: &Occasion,
    state: &InstanceState,
    enforceable: bool,
) -> EnforcementPlan {
    let nothing = EnforcementPlan { tag: false, stop: StopStep::NotAsked, gone: false, withheld: false };
    if state.is_gone() {
        return EnforcementPlan { gone: true, ..nothing };
    }
    if !enforceable && enforcement != Enforcement::Alert {
        return EnforcementPlan { withheld: true, ..nothing };
    }
    let stop = match (enforcement, occasion.is_audit(), state) {
        (Enforcement::Stop, false, InstanceState::Running) => StopStep::Now,
        (Enforcement::Stop, false, InstanceState::Pending) => StopStep::WhenRunning,
        (Enforcement::Stop, false, _) => StopStep::NotRunning,
        _ => StopStep::NotAsked,
    };
    EnforcementPlan { tag: matches!(enforcement, Enforcement::Tag | Enforcement::Stop), stop, ..nothing }
}

/// Why nothing was enforced on a `withheld` instance, as the report and the alert say it.
pub fn withheld_because(enforcement: Enforcement) -> String {
    format!(
        "not proven untrusted (a medium verdict: its provenance cannot be verified, or a trusted owner's image fails a \
         name, age or deprecation condition): ENFORCEMENT={} tags and stops only on a high verdict (an owner or an \
         ancestor's owner proven untrusted); ENFORCE_UNVERIFIABLE=true would enforce it",
        enforcement.as_str()
    )
}

/// The enforcement taken, as reports and alerts state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// The tag could not be written (the instance has 50 tags, ...): the alert and the report
    /// say why; the invocation does not fail for it.
    TagFailed,
    /// Stopped, but the tag could not be written.
    StoppedNotTagged,
    /// The stop failed: the invocation fails so that Lambda retries it (the alert is not repeated).
    Failed,
    /// The instance is terminated or no longer listed: nothing to tag or stop (the alert still goes).
    InstanceGone,
    /// Not tagged or stopped although `ENFORCEMENT` would: the verdict is `medium`, not proven
    /// untrusted, and `ENFORCE_UNVERIFIABLE` is off (the alert still goes, saying why).
    Withheld,
}

/// How StopInstances answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopping,
    /// `IncorrectInstanceState`: the instance left `running` in the meantime.
    NotStoppable,
}

/// What the calls made of the plan came to: whether the tag failed, and how the stop answered
/// (`None` when no stop was attempted, or when it failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes<'a> {
    pub tag_failed: bool,
    pub stop: Option<&'a StopOutcome>,
    pub stop_failed: bool,
}

/// The enforcement taken once the planned calls are made.
pub fn taken(enforcement: Enforcement, plan: &EnforcementPlan, outcomes: Outcomes<'_>) -> EnforcementTaken {
    let Outcomes { tag_failed, stop, stop_failed } = outcomes;
    if plan.gone {
        return EnforcementTaken::InstanceGone;
    }
    if plan.withheld {
        return EnforcementTaken::Withheld;
    }
    match (enforcement, plan.stop, stop) {
        (Enforcement::Alert, _, _) => EnforcementTaken::None,
        _ if stop_failed => EnforcementTaken::Failed,
        (_, StopStep::Now, Some(StopOutcome::Stopping)) if tag_failed => EnforcementTaken::StoppedNotTagged,
        _ if tag_failed => EnforcementTaken::TagFailed,
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

    #[test]
    fn a_gone_instance_is_never_tagged_or_stopped_whatever_the_mode() {
        for enforcement in [Enforcement::Alert, Enforcement::Tag, Enforcement::Stop] {
            for state in [InstanceState::Terminated, InstanceState::Unlisted] {
                let p = plan(enforcement, &launch(), &state, true);
                assert_eq!(
                    p,
                    EnforcementPlan { tag: false, stop: StopStep::NotAsked, gone: true, withheld: false },
                    "{enforcement:?} {state:?}"
                );
                assert_eq!(taken(enforcement, &p, none()), EnforcementTaken::InstanceGone);
            }
        }
        assert!(!plan(Enforcement::Stop, &launch(), &InstanceState::ShuttingDown, true).gone);
    }

    fn launch() -> Occasion {
        Occasion::StateChange("running".into())
    }

    fn none() -> Outcomes<'static> {
        Outcomes::default()
    }

    #[test]
    fn alert_mode_does_nothing_but_alert() {
        let p = plan(Enforcement::Alert, &launch(), &InstanceState::Running, true);
        assert_eq!(p, EnforcementPlan { tag: false, stop: StopStep::NotAsked, gone: false, withheld: false });
        assert_eq!(taken(Enforcement::Alert, &p, none()), EnforcementTaken::None);
    }

    #[test]
    fn tag_mode_tags_on_every_event() {
        let p = plan(Enforcement::Tag, &launch(), &InstanceState::Running, true);
        assert_eq!(p, EnforcementPlan { tag: true, stop: StopStep::NotAsked, gone: false, withheld: false });
        assert_eq!(taken(Enforcement::Tag, &p, none()), EnforcementTaken::Tagged);
    }

    #[test]
    fn stop_mode_stops_a_running_instance_defers_a_pending_one_and_leaves_the_rest() {
        let running = plan(Enforcement::Stop, &launch(), &InstanceState::Running, true);
        assert_eq!(running, EnforcementPlan { tag: true, stop: StopStep::Now, gone: false, withheld: false });
        let stopped = Outcomes { stop: Some(&StopOutcome::Stopping), ..none() };
        assert_eq!(taken(Enforcement::Stop, &running, stopped), EnforcementTaken::TaggedAndStopped);
        let refused = Outcomes { stop: Some(&StopOutcome::NotStoppable), ..none() };
        assert_eq!(taken(Enforcement::Stop, &running, refused), EnforcementTaken::TaggedNotRunning);
        let pending = plan(Enforcement::Stop, &Occasion::StateChange("pending".into()), &InstanceState::Pending, true);
        assert_eq!(pending.stop, StopStep::WhenRunning);
        assert_eq!(taken(Enforcement::Stop, &pending, none()), EnforcementTaken::TaggedStopDeferred);
        for state in [InstanceState::Stopping, InstanceState::Stopped, InstanceState::ShuttingDown] {
            let p = plan(Enforcement::Stop, &Occasion::RunInstances, &state, true);
            assert_eq!(p.stop, StopStep::NotRunning);
            assert_eq!(taken(Enforcement::Stop, &p, none()), EnforcementTaken::TaggedNotRunning);
        }
    }

    #[test]
    fn an_audit_tags_but_never_stops() {
        let p = plan(Enforcement::Stop, &Occasion::Audit, &InstanceState::Running, true);
        assert_eq!(p, EnforcementPlan { tag: true, stop: StopStep::NotAsked, gone: false, withheld: false });
        assert_eq!(taken(Enforcement::Stop, &p, none()), EnforcementTaken::Tagged);
    }

    #[test]
    fn a_failed_tag_is_said_and_a_failed_stop_is_a_failure() {
        let p = plan(Enforcement::Stop, &launch(), &InstanceState::Running, true);
        let tag_failed = Outcomes { tag_failed: true, ..none() };
        assert_eq!(
            taken(Enforcement::Tag, &plan(Enforcement::Tag, &launch(), &InstanceState::Running, true), tag_failed),
            EnforcementTaken::TagFailed
        );
        let stopped_untagged = Outcomes { tag_failed: true, stop: Some(&StopOutcome::Stopping), stop_failed: false };
        assert_eq!(taken(Enforcement::Stop, &p, stopped_untagged), EnforcementTaken::StoppedNotTagged);
        let both = Outcomes { tag_failed: true, stop: None, stop_failed: true };
        assert_eq!(taken(Enforcement::Stop, &p, both), EnforcementTaken::Failed);
        assert_eq!(taken(Enforcement::Stop, &p, Outcomes { stop_failed: true, ..none() }), EnforcementTaken::Failed);
    }

    #[test]
    fn names() {
        assert_eq!(serde_json::to_value(EnforcementTaken::TaggedStopDeferred).unwrap(), "tagged-stop-deferred");
        assert_eq!(serde_json::to_value(EnforcementTaken::TagFailed).unwrap(), "tag-failed");
        assert_eq!(InstanceState::parse("shutting-down"), InstanceState::ShuttingDown);
        assert_eq!(InstanceState::parse("weird").as_str(), "weird");
        assert_eq!(Occasion::StateChange("pending".into()).to_string(), "launch (state-change event: pending)");
    }

    #[test]
    fn only_a_proven_verdict_is_enforced_unless_told_otherwise() {
        assert!(enforceable(Severity::High, false));
        assert!(!enforceable(Severity::Medium, false));
        assert!(enforceable(Severity::Medium, true));
        for enforcement in [Enforcement::Tag, Enforcement::Stop] {
            for occasion in [launch(), Occasion::RunInstances, Occasion::Audit] {
                for state in [InstanceState::Pending, InstanceState::Running, InstanceState::Stopped] {
                    let p = plan(enforcement, &occasion, &state, false);
                    assert_eq!(
                        p,
                        EnforcementPlan { tag: false, stop: StopStep::NotAsked, gone: false, withheld: true }
                    );
                    assert_eq!(taken(enforcement, &p, none()), EnforcementTaken::Withheld);
                }
            }
        }
        // Alert only: nothing was to be enforced, so nothing is withheld.
        let alert = plan(Enforcement::Alert, &launch(), &InstanceState::Running, false);
        assert_eq!(taken(Enforcement::Alert, &alert, none()), EnforcementTaken::None);
        // A gone instance stays gone, whatever the verdict.
        let gone = plan(Enforcement::Stop, &launch(), &InstanceState::Terminated, false);
        assert_eq!(taken(Enforcement::Stop, &gone, none()), EnforcementTaken::InstanceGone);
        let why = withheld_because(Enforcement::Stop);
        assert!(why.contains("not proven untrusted") && why.contains("ENFORCEMENT=stop"), "{why}");
        assert!(why.contains("ENFORCE_UNVERIFIABLE=true"), "{why}");
        assert_eq!(serde_json::to_value(EnforcementTaken::Withheld).unwrap(), "withheld");
    }
}
