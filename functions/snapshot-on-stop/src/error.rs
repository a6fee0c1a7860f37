//! The errors a delivery fails with, and their `Diagnostic` error types (stable: alarms and
//! people read them).

use amiguard::events::EventError;
use amiguard::AwsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("image {0} was created but is not visible to DescribeImages")]
    ImageVanished(String),
    /// Another delivery for the same instance holds its lease: this one fails so that Lambda
    /// retries it once the other is done (it then finds the image made).
    #[error("another delivery for {0} is in progress: retry later")]
    Busy(String),
    /// An image with the stop's name is still pending: until EC2 lists its snapshots, it cannot
    /// say who made it. Lambda's retry comes back when it can.
    #[error("image {0} carries this stop's name but lists no snapshots yet: retry later")]
    NotYetVerifiable(String),
    /// An AMI event came before EC2 says the image settled: the retry looks again.
    #[error("image {image_id} is {state} by EC2's word, not settled yet: retry later")]
    NotYetSettled { image_id: String, state: String },
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        let error_type = match &err {
            Error::Event(e) => return e.clone().into(),
            Error::Aws(e) => return e.clone().into(),
            Error::ImageVanished(_) => "ImageVanished",
            Error::Busy(_) => "InstanceBusy",
            Error::NotYetVerifiable(_) => "ImageNotYetVerifiable",
            Error::NotYetSettled { .. } => "ImageNotYetSettled",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: err.to_string() }
    }
}
