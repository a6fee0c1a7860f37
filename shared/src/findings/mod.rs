//! Security Hub findings that more than one function imports: the finding ([`Finding`], what a
//! function states in the AWS Security Finding Format, without SDK types), where it goes
//! ([`Scope`]: the account's own Security Hub, its default product), the port it leaves through
//! ([`FindingsPublisher`], with its Security Hub adapter in [`securityhub`]).
//!
//! A finding is *upserted*: its [`Finding::id`] is stable for what it is about (an instance and
//! its image, a failed image), so that a later sighting updates the finding instead of adding
//! one, and [`RecordState::Archived`] tells Security Hub to resolve it. Importing never fails an
//! invocation and never costs an alert: what could not be imported is a warning of the report
//! (Security Hub not enabled in the account is [`NOT_ENABLED`]).

pub mod securityhub;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::alert::Severity;

/// The environment variable that turns findings on or off (default on), read by every function
/// that imports them.
pub const SECURITY_HUB_FINDINGS: &str = "SECURITY_HUB_FINDINGS";
/// The version of the AWS Security Finding Format the findings are written in.
pub const SCHEMA_VERSION: &str = "2018-10-08";
/// The report's warning when the account's Security Hub is not enabled (`InvalidAccessException`).
pub const NOT_ENABLED: &str = "Security Hub not enabled";
/// ASFF limits: `Title` 256 characters, `Description` 1,024, `Remediation.Recommendation.Text` 512.
pub const MAX_TITLE_CHARS: usize = 256;
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
pub const MAX_REMEDIATION_CHARS: usize = 512;
/// `BatchImportFindings` takes at most 100 findings a call.
pub const MAX_FINDINGS_PER_CALL: usize = 100;

/// Whether Security Hub keeps the finding open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Active,
    /// What the finding states is over (verified: the instance is gone, its image is trusted
    /// now): Security Hub resolves it.
    Archived,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Archived => "ARCHIVED",
        }
    }
}

/// What a finding is about: each becomes one of its `Resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An instance of the account, in the scope's region (`AwsEc2Instance`, by its ARN).
    Instance(String),
    /// An image, in the scope's region (`Other`, by its ARN: ASFF has no image type).
    Image(String),
}

/// A finding, as a function states it; [`Scope`] adds where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable for what the finding is about ([`finding_id`]): a later sighting updates it.
    pub id: String,
    /// What made it (`GeneratorId`): the function's check.
    pub generator_id: String,
    /// ASFF `Types`, `namespace/category/classifier`.
    pub types: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `Severity.Label`: `HIGH` or `MEDIUM`, as the alert's.
    pub severity: Severity,
    pub title: String,
    /// At most [`MAX_DESCRIPTION_CHARS`] ([`fit_text`]).
    pub description: String,
    pub remediation: String,
    pub subjects: Vec<Subject>,
    pub record_state: RecordState,
}

/// ASFF `Severity.Label` of an alert's severity.
pub fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "HIGH",
        Severity::Medium => "MEDIUM",
    }
}

/// A finding's `Id`: `amiguard/<region>/<kind>/<part>/<part>...`, e.g.
/// `amiguard/us-east-1/untrusted-image/i-0123456789abcdef0/ami-0123456789abcdef0`. The same
/// region, kind and parts always make the same id (so the finding is updated, never doubled);
/// different ones never the same (ids contain no `/`).
pub fn finding_id(region: &str, kind: &str, parts: &[&str]) -> String {
    let mut id = format!("amiguard/{region}/{kind}");
    for part in parts {
        id.push('/');
        id.push_str(part);
    }
    id
}

/// `text` cut to at most `max` characters, saying so at its end: a reader is never led to take
/// a cut text for the whole one (the SNS alert and the report have all of it).
pub fn fit_text(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    // The marker names how much was left out; its length depends on that number, so size it
    // for the whole count (at most that many are left out).
    let marker = |left: usize| format!(" [... {left} more characters: see the alert]");
    let room = max.saturating_sub(marker(count).chars().count());
    let kept: String = text.chars().take(room).collect();
    format!("{kept}{}", marker(count - room))
}

/// Where findings go: the account's own Security Hub in the region of the function's client,
/// through the account's default product. Its parts are what amiguard verified (the client's
/// region, STS's account), never an event's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl Scope {
    /// The scope of `region` (its partition follows from it) and `account`.
    pub fn new(region: &str, account: &str) -> Self {
        Self { partition: partition_of(region).to_string(), region: region.to_string(), account: account.to_string() }
    }

    /// `arn:<partition>:securityhub:<region>:<account>:product/<account>/default`: the product
    /// every account may import its own findings through.
    pub fn product_arn(&self) -> String {
        let Self { partition, region, account } = self;
        format!("arn:{partition}:securityhub:{region}:{account}:product/{account}/default")
    }

    pub fn instance_arn(&self, instance_id: &str) -> String {
        let Self { partition, region, account } = self;
        format!("arn:{partition}:ec2:{region}:{account}:instance/{instance_id}")
    }

    /// An image's ARN has no account (images are shared and public).
    pub fn image_arn(&self, image_id: &str) -> String {
        let Self { partition, region, .. } = self;
        format!("arn:{partition}:ec2:{region}::image/{image_id}")
    }
}

/// The partition of a region: `aws-cn`, `aws-us-gov`, the isolated ones, else `aws`.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else {
        "aws"
    }
}

/// The port findings leave through. Object-safe (`&dyn`), so that a function's bundle of ports
/// carries it without one more type parameter.
pub trait FindingsPublisher: Send + Sync {
    /// Imports `findings` (any number: sent in calls of at most [`MAX_FINDINGS_PER_CALL`]) and
    /// answers the warnings for the report: each finding Security Hub refused, a call that failed,
    /// [`NOT_ENABLED`]. Empty: all were imported.
    fn import<'a>(&'a self, findings: &'a [Finding]) -> BoxFuture<'a, Vec<String>>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_the_same_for_the_same_subject_and_differs_for_another() {
        let id = finding_id("us-east-1", "untrusted-image", &["i-01", "ami-0a"]);
        assert_eq!(id, "amiguard/us-east-1/untrusted-image/i-01/ami-0a");
        assert_eq!(id, finding_id("us-east-1", "untrusted-image", &["i-01", "ami-0a"]));
        for other in [
            finding_id("us-east-1", "untrusted-image", &["i-01", "ami-0b"]),
            finding_id("us-east-1", "untrusted-image", &["i-02", "ami-0a"]),
            finding_id("eu-west-1", "untrusted-image", &["i-01", "ami-0a"]),
            finding_id("us-east-1", "failed-image", &["i-01", "ami-0a"]),
        ] {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn severities_map_to_asff_labels() {
        assert_eq!(severity_label(Severity::High), "HIGH");
        assert_eq!(severity_label(Severity::Medium), "MEDIUM");
    }

    #[test]
    fn a_long_text_is_cut_to_the_limit_and_says_so() {
        let short = "two reasons";
        assert_eq!(fit_text(short, MAX_DESCRIPTION_CHARS), short);
        let exact = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(fit_text(&exact, MAX_DESCRIPTION_CHARS), exact);
        let long = format!("{}{}", "é".repeat(MAX_DESCRIPTION_CHARS), "tail");
        let cut = fit_text(&long, MAX_DESCRIPTION_CHARS);
        assert!(cut.chars().count() <= MAX_DESCRIPTION_CHARS, "{}", cut.chars().count());
        assert!(cut.chars().count() > MAX_DESCRIPTION_CHARS - 60, "cut no more than needed");
        assert!(!cut.contains("tail"));
        let left = long.chars().count() - cut.split(" [... ").next().unwrap().chars().count();
        assert!(cut.ends_with(&format!(" [... {left} more characters: see the alert]")), "{cut}");
    }

    #[test]
    fn the_scope_names_the_default_product_and_the_resources_of_its_partition() {
        let scope = Scope::new("us-east-1", "123456789012");
        assert_eq!(scope.product_arn(), "arn:aws:securityhub:us-east-1:123456789012:product/123456789012/default");
        assert_eq!(scope.instance_arn("i-01"), "arn:aws:ec2:us-east-1:123456789012:instance/i-01");
        assert_eq!(scope.image_arn("ami-0a"), "arn:aws:ec2:us-east-1::image/ami-0a");
        let gov = Scope::new("us-gov-west-1", "123456789012");
        assert_eq!(
            gov.product_arn(),
            "arn:aws-us-gov:securityhub:us-gov-west-1:123456789012:product/123456789012/default"
        );
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-iso-east-1"), "aws-iso");
        assert_eq!(partition_of("us-isob-east-1"), "aws-iso-b");
        assert_eq!(partition_of("eu-west-1"), "aws");
        assert_eq!(RecordState::Archived.as_str(), "ARCHIVED");
    }
}
