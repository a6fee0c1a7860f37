//! Alerting that more than one function sends: the message a person reads ([`Alert`]: a subject
//! fitted to SNS, a body, a [`Severity`]), the port that publishes it ([`AlertPublisher`], with
//! its SNS adapter in [`sns`]), and alert-once claims in the ledger ([`once`]).

pub mod once;
pub mod sns;

use std::future::Future;

use crate::error::AwsError;

/// SNS subjects must be under 100 characters, printable ASCII, on one line.
pub const MAX_SUBJECT_CHARS: usize = 99;

/// The SNS message attribute carrying the severity (`high` or `medium`), so that subscriptions
/// can filter on it.
pub const SEVERITY_ATTRIBUTE: &str = "severity";

/// How loud an alert is: `high` when what it reports is proven (an untrusted owner), `medium`
/// when it is a lesser finding (a condition of a trusted owner's image, a missed backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A message ready for SNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub subject: String,
    pub body: String,
    pub severity: Severity,
}

/// The port alerts leave through.
pub trait AlertPublisher: Sync {
    /// Publishes `alert` and answers the SNS message id.
    fn publish(&self, alert: &Alert) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// One line of printable ASCII, at most `MAX_SUBJECT_CHARS` long (SNS refuses anything else).
pub fn fit_subject(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if clean.len() <= MAX_SUBJECT_CHARS {
        clean
    } else {
        format!("{}...", &clean[..MAX_SUBJECT_CHARS - 3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_one_line_of_printable_ascii_cut_with_an_ellipsis() {
        assert_eq!(fit_subject("amiguard: x"), "amiguard: x");
        assert_eq!(fit_subject("a\nb€"), "a?b?");
        let long = fit_subject(&"x".repeat(150));
        assert_eq!(long.len(), MAX_SUBJECT_CHARS);
        assert!(long.ends_with("..."));
        assert_eq!(fit_subject(&"y".repeat(MAX_SUBJECT_CHARS)), "y".repeat(MAX_SUBJECT_CHARS));
    }

    #[test]
    fn severities_are_written_in_lower_case() {
        assert_eq!(serde_json::to_value(Severity::High).ok(), Some(serde_json::json!("high")));
        assert_eq!(Severity::Medium.as_str(), "medium");
    }
}
