//! Sending an alert: SNS Publish to the alert topic, the severity as a message attribute so that
//! subscriptions can filter on it.

use std::future::Future;

use aws_sdk_sns::types::MessageAttributeValue;

use super::alert::Alert;
use crate::error::AwsError;

/// The message attribute carrying `high` or `medium`.
pub const SEVERITY_ATTRIBUTE: &str = "severity";

pub trait AlertPublisher: Sync {
    /// Publishes `alert` and answers the SNS message id.
    fn publish(&self, alert: &Alert) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// The real SNS client, bound to the alert topic.
#[derive(Debug, Clone)]
pub struct SnsAlerts {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsAlerts {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        Self { client, topic_arn: topic_arn.into() }
    }
}

impl AlertPublisher for SnsAlerts {
    async fn publish(&self, alert: &Alert) -> Result<String, AwsError> {
        let severity = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(alert.severity.as_str())
            .build()
            .map_err(|e| AwsError::new("Publish", "ConstructionFailure", e.to_string()))?;
        let output = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&alert.subject)
            .message(&alert.body)
            .message_attributes(SEVERITY_ATTRIBUTE, severity)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("Publish", e))?;
        output
            .message_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::new("Publish", "MissingMessageId", "SNS answered without a message id"))
    }
}
