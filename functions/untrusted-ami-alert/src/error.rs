//! The errors an invocation answers with, and their `Diagnostic` (the error types Lambda and the
//! dead-letter queue see).

use std::fmt;

use amiguard::error::AwsError;
use amiguard::events::EventError;

/// The step of guarding an instance that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStep {
    /// SNS Publish failed: the claim was given back, so a retry alerts.
    Alert,
    /// Another delivery claimed the alert and has not confirmed it: a retry finds it sent, or
    /// the claim expired and sends it.
    AlertInProgress,
    /// The stop failed.
    Enforcement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFailure {
    pub instance_id: String,
    pub step: FailedStep,
    pub error: AwsError,
}

impl fmt::Display for InstanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.step {
            FailedStep::Alert => "alert not sent",
            FailedStep::AlertInProgress => "another delivery is sending the alert",
            FailedStep::Enforcement => "enforcement failed",
        };
        write!(f, "{}: {step}: {}", self.instance_id, self.error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// EC2 does not list the instance (yet): right after a launch its APIs can lag, so the
    /// invocation fails and Lambda retries it.
    #[error("instance not found: {}: EC2 may not list a new instance yet; failing so that Lambda retries", .0.join(", "))]
    InstancesNotFound(Vec<String>),
    /// The event names an account other than the function's own (STS's answer): forged, or
    /// misrouted. Judged as that account, every own image would be untrusted (and, with
    /// `ENFORCEMENT=stop`, its instances stopped); so it is refused and changes nothing.
    #[error("the event names account {named}, but this function runs in account {own}: refused; nothing judged, tagged, stopped or sent")]
    AnotherAccount { named: String, own: String },
    /// Some instances could not be fully guarded; the others were. A retry is safe: the ledger
    /// keeps alerts single and enforcement is idempotent.
    #[error("{} instance(s) not fully guarded: {}", .0.len(), describe_failures(.0))]
    NotGuarded(Vec<InstanceFailure>),
}

fn describe_failures(failures: &[InstanceFailure]) -> String {
    let shown: Vec<String> = failures.iter().take(5).map(ToString::to_string).collect();
    let more = failures.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{}; and {more} more", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        let error_type = match &err {
            Error::Event(event) => return event.clone().into(),
            Error::Aws(aws) => format!("AwsError.{}", aws.code),
            Error::InstancesNotFound(_) => "InstanceNotFound".to_string(),
            Error::AnotherAccount { .. } => "EventForAnotherAccount".to_string(),
            Error::NotGuarded(failures) => match failures.first().map(|f| f.step) {
                Some(FailedStep::Alert) => "AlertNotSent".to_string(),
                Some(FailedStep::AlertInProgress) => "AlertInProgress".to_string(),
                _ => "EnforcementFailed".to_string(),
            },
        };
        lambda_runtime::Diagnostic { error_type, error_message: err.to_string() }
    }
}
