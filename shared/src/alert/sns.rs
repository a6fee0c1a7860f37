//! The alert publisher's SNS adapter: the severity as a message attribute, so that
//! subscriptions can filter on it.

use super::{Alert, AlertPublisher, SEVERITY_ATTRIBUTE};
use crate::error::AwsError;

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
        let attributes = [(SEVERITY_ATTRIBUTE, alert.severity.as_str())];
        crate::sns::publish(&self.client, &self.topic_arn, &alert.subject, &alert.body, &attributes)
            .await?
            .ok_or_else(|| AwsError::new("Publish", "MissingMessageId", "SNS answered without a message id"))
    }
}
