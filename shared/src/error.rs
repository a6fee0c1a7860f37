//! One error type for every AWS call, keeping the AWS error code so callers branch on it.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Serialize;

/// A failed AWS call: which operation, the AWS error code (`InvalidSnapshot.InUse`,
/// `RequestLimitExceeded`, ...) and its message. Transport failures get a code of their own
/// (`TimeoutError`, `DispatchFailure`, ...) so that nothing is ever reported without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{operation} failed: {code}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(operation: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { operation, code: code.into(), message: message.into() }
    }

    /// Maps any SDK error, service or transport, keeping the service's code when there is one.
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (code, message) = match &err {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                (
                    inner.code().unwrap_or("UnknownServiceError").to_string(),
                    inner.message().map(str::to_string).unwrap_or_else(|| DisplayErrorContext(inner).to_string()),
                )
            }
            SdkError::TimeoutError(_) => ("TimeoutError".to_string(), DisplayErrorContext(&err).to_string()),
            SdkError::DispatchFailure(_) => ("DispatchFailure".to_string(), DisplayErrorContext(&err).to_string()),
            SdkError::ResponseError(_) => ("ResponseError".to_string(), DisplayErrorContext(&err).to_string()),
            SdkError::ConstructionFailure(_) => {
                ("ConstructionFailure".to_string(), DisplayErrorContext(&err).to_string())
            }
            _ => ("Unknown".to_string(), DisplayErrorContext(&err).to_string()),
        };
        Self { operation, code, message }
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code == code
    }

    /// `InvalidSnapshot.NotFound`, `InvalidAMIID.NotFound`, `InvalidInstanceID.NotFound`, ...
    pub fn is_not_found(&self) -> bool {
        self.code.ends_with(".NotFound")
    }
}

impl From<AwsError> for lambda_runtime::Diagnostic {
    fn from(err: AwsError) -> Self {
        lambda_runtime::Diagnostic { error_type: format!("AwsError.{}", err.code), error_message: err.to_string() }
    }
}
