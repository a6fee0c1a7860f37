//! The one SNS call amiguard makes: `Publish` to a topic, with a subject and message attributes.
//! Every publisher port (alerts, a run's summary) sends through it.

use aws_sdk_sns::types::MessageAttributeValue;

use crate::error::AwsError;

/// Publishes `message` to `topic_arn` under `subject` (already fitted to SNS by the caller) with
/// the string `attributes`, and answers the message id SNS gave it, if any.
pub async fn publish(
    client: &aws_sdk_sns::Client,
    topic_arn: &str,
    subject: &str,
    message: &str,
    attributes: &[(&str, &str)],
) -> Result<Option<String>, AwsError> {
    let mut request = client.publish().topic_arn(topic_arn).subject(subject).message(message);
    for (name, value) in attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(*value)
            .build()
            .map_err(|e| AwsError::new("Publish", "ConstructionFailure", e.to_string()))?;
        request = request.message_attributes(*name, value);
    }
    let output = request.send().await.map_err(|e| AwsError::from_sdk("Publish", e))?;
    Ok(output.message_id().map(str::to_string))
}
