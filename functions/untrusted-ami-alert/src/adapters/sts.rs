//! The SDK implementation of [`CallerIdentity`]: which account `self` is, STS GetCallerIdentity,
//! asked once per container (never taken from an event).

use std::sync::OnceLock;

use amiguard::error::AwsError;

use crate::ports::CallerIdentity;

/// The real STS client. The answer never changes within a Lambda container, so it is kept.
#[derive(Debug)]
pub struct StsIdentity {
    client: aws_sdk_sts::Client,
    account_id: OnceLock<String>,
}

impl StsIdentity {
    pub fn new(client: aws_sdk_sts::Client) -> Self {
        Self { client, account_id: OnceLock::new() }
    }

    /// Built from the shared SDK configuration (callers need not depend on aws-sdk-sts).
    pub fn from_conf(config: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_sts::Client::new(config))
    }
}

impl CallerIdentity for StsIdentity {
    async fn account_id(&self) -> Result<String, AwsError> {
        if let Some(known) = self.account_id.get() {
            return Ok(known.clone());
        }
        let output =
            self.client.get_caller_identity().send().await.map_err(|e| AwsError::from_sdk("GetCallerIdentity", e))?;
        let account = output
            .account()
            .map(str::to_string)
            .ok_or_else(|| AwsError::new("GetCallerIdentity", "MissingAccount", "STS answered without an account"))?;
        Ok(self.account_id.get_or_init(|| account).clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_sdk_sts::operation::get_caller_identity::{GetCallerIdentityError, GetCallerIdentityOutput};
    use aws_sdk_sts::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    #[tokio::test]
    async fn asks_sts_once_and_keeps_the_answer() {
        let rule = mock!(Client::get_caller_identity)
            .then_output(|| GetCallerIdentityOutput::builder().account("123456789012").build());
        let identity = StsIdentity::new(mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&rule]));
        assert_eq!(identity.account_id().await.unwrap(), "123456789012");
        assert_eq!(identity.account_id().await.unwrap(), "123456789012");
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_failure_keeps_the_code_and_is_not_remembered() {
        let denied = mock!(Client::get_caller_identity).then_error(|| {
            GetCallerIdentityError::generic(ErrorMetadata::builder().code("AccessDenied").message("no").build())
        });
        let identity = StsIdentity::new(mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&denied]));
        let err = identity.account_id().await.unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("GetCallerIdentity", "AccessDenied"));
        assert!(identity.account_id.get().is_none());
    }
}
