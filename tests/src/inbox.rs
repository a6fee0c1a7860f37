//! Alerts as a subscriber sees them: an SQS queue subscribed to an SNS topic on the emulator.

use serde_json::Value;

use crate::TestAccount;

/// Alerts as a subscriber sees them: an SQS queue on the alert topic.
pub struct AlertInbox {
    pub topic_arn: String,
    queue_url: String,
    sqs: aws_sdk_sqs::Client,
    raw: bool,
}

/// One alert read back: subject (non-raw delivery only), body, severity attribute.
#[derive(Debug)]
pub struct Received {
    pub subject: Option<String>,
    pub body: String,
    pub severity: Option<String>,
}

impl AlertInbox {
    pub async fn new(account: &TestAccount, raw: bool) -> Self {
        let sns = account.sns();
        let sqs = account.sqs();
        let topic_arn =
            sns.create_topic().name("amiguard-alerts").send().await.unwrap().topic_arn().unwrap().to_string();
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("alerts-{raw}"))
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let queue_arn = attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", raw.to_string())
            .send()
            .await
            .unwrap();
        Self { topic_arn, queue_url, sqs, raw }
    }

    /// Every message waiting in the queue (and removes them).
    pub async fn drain(&self) -> Vec<Received> {
        let mut received = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            if output.messages().is_empty() {
                return received;
            }
            for message in output.messages() {
                let body = message.body().unwrap().to_string();
                received.push(if self.raw {
                    let severity =
                        message.message_attributes().and_then(|a| a.get("severity")).and_then(|v| v.string_value());
                    Received { subject: None, body, severity: severity.map(str::to_string) }
                } else {
                    let envelope: Value = serde_json::from_str(&body).unwrap();
                    Received {
                        subject: envelope["Subject"].as_str().map(str::to_string),
                        body: envelope["Message"].as_str().unwrap().to_string(),
                        severity: envelope["MessageAttributes"]["severity"]["Value"].as_str().map(str::to_string),
                    }
                });
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}
