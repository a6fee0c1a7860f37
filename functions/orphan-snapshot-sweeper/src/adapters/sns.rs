//! Publishing the sweep's summary to `REPORT_TOPIC_ARN` ([`SummaryPublisher`]) on
//! `aws_sdk_sns::Client`.

use amiguard::AwsError;

use crate::ports::SummaryPublisher;

/// SNS allows subjects of up to 100 printable ASCII characters.
pub const MAX_SUBJECT_CHARS: usize = 100;

impl SummaryPublisher for aws_sdk_sns::Client {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<(), AwsError> {
        amiguard::sns::publish(self, topic_arn, &sns_subject(subject), message, &[]).await.map(|_| ())
    }
}

/// `subject` made acceptable to SNS: printable ASCII only, at most 100 characters.
pub fn sns_subject(subject: &str) -> String {
    subject.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(MAX_SUBJECT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_made_acceptable_to_sns() {
        assert_eq!(sns_subject("amiguard sweep: 3 deleted"), "amiguard sweep: 3 deleted");
        assert_eq!(sns_subject("a\nb€"), "a?b?");
        assert_eq!(sns_subject(&"x".repeat(150)).len(), MAX_SUBJECT_CHARS);
    }
}
