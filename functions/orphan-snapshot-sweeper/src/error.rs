//! What an invocation answers instead of a report, and how Lambda is told (`Diagnostic`).

use amiguard::events::EventError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not an event the sweeper answers, or a malformed one: nothing was looked at or changed.
    #[error(transparent)]
    Event(#[from] EventError),
    /// An AMI event could not be recorded (the sweep will see the AMI gone by itself, later).
    #[error("the AMI event could not be recorded in the ledger: {0}")]
    Ledger(amiguard::AwsError),
    /// EC2 could not say whether it lists the AMI of an event: nothing was recorded (an event's
    /// word alone is never recorded).
    #[error("EC2 could not say whether it lists the event's AMI, nothing was recorded: {0}")]
    Ec2(amiguard::AwsError),
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        match err {
            Error::Event(e) => e.into(),
            Error::Ledger(e) | Error::Ec2(e) => e.into(),
        }
    }
}
