//! Building the AWS SDK configuration once per Lambda container.
//!
//! Endpoints come only from the SDK's standard `AWS_ENDPOINT_URL` (emulators, tests). Retries are
//! adaptive so that throttling (`RequestLimitExceeded`) slows a run instead of failing it, and
//! every call has a deadline so a hung endpoint cannot eat the whole Lambda run.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Attempts per call: enough that a third of calls throttled still gets through.
pub const MAX_ATTEMPTS: u32 = 10;

pub fn retry_config() -> RetryConfig {
    RetryConfig::adaptive().with_max_attempts(MAX_ATTEMPTS).with_max_backoff(Duration::from_secs(20))
}

pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(120))
        .build()
}

/// A retry policy for calls whose failure loses nothing (cleanup): two attempts, then report.
pub fn cleanup_retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(2)
}

/// The SDK configuration from the environment, with amiguard's retry and timeout policy.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .load()
        .await
}
