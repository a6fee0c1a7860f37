//! The findings publisher's Security Hub adapter: `BatchImportFindings` into the account's own
//! default product, in calls of at most 100 findings. The account is STS's (asked once per
//! container, when the first finding is imported), the region and partition its client's.
//!
//! Security Hub not enabled (`InvalidAccessException`) is remembered for an hour
//! ([`ASK_AGAIN_AFTER`]): no call is made in that time, and every import answers [`NOT_ENABLED`]
//! too, so that no report is silent about the findings it did not import. Then the container asks
//! again: Security Hub enabled later (an organisation's auto-enable may come after amiguard's
//! first launch) takes findings without a restart.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_securityhub::types::{
    AwsSecurityFinding, Partition, Recommendation, RecordState as AsffRecordState, Remediation, Resource,
    Severity as AsffSeverity, SeverityLabel,
};
use futures::future::BoxFuture;

use super::{
    fit_text, severity_label, Finding, FindingsPublisher, RecordState, Scope, Subject, MAX_DESCRIPTION_CHARS,
    MAX_FINDINGS_PER_CALL, MAX_REMEDIATION_CHARS, MAX_TITLE_CHARS, NOT_ENABLED, SCHEMA_VERSION,
};
use crate::error::AwsError;

/// The code Security Hub answers when it is not enabled in the account (and region).
pub const NOT_ENABLED_CODE: &str = "InvalidAccessException";

/// How long a container takes Security Hub's "not enabled" for an answer before it asks again.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(3600);

/// The real Security Hub client, with STS to learn the account.
#[derive(Debug)]
pub struct SecurityHubFindings {
    client: aws_sdk_securityhub::Client,
    sts: aws_sdk_sts::Client,
    account: Mutex<Option<String>>,
    /// When Security Hub last answered "not enabled", while that answer still holds.
    not_enabled_since: Mutex<Option<Instant>>,
    ask_again_after: Duration,
}

impl SecurityHubFindings {
    pub fn new(client: aws_sdk_securityhub::Client, sts: aws_sdk_sts::Client) -> Self {
        Self {
            client,
            sts,
            account: Mutex::new(None),
            not_enabled_since: Mutex::new(None),
            ask_again_after: ASK_AGAIN_AFTER,
        }
    }

    /// The same, asking again `after` a "not enabled" answer instead of [`ASK_AGAIN_AFTER`].
    pub fn asking_again_after(self, after: Duration) -> Self {
        Self { ask_again_after: after, ..self }
    }

    fn known_not_enabled(&self) -> bool {
        let mut since = self.not_enabled_since.lock().unwrap_or_else(PoisonError::into_inner);
        match *since {
            Some(when) if when.elapsed() < self.ask_again_after => true,
            Some(_) => {
                *since = None;
                false
            }
            None => false,
        }
    }

    pub fn from_conf(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_securityhub::Client::new(sdk), aws_sdk_sts::Client::new(sdk))
    }

    /// Where the findings go: STS's account (asked once), the client's region.
    async fn scope(&self) -> Result<Scope, AwsError> {
        let region =
            self.client.config().region().map(ToString::to_string).ok_or_else(|| {
                AwsError::new("BatchImportFindings", "NoRegion", "the Security Hub client has no region")
            })?;
        let known = self.account.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let account = match known {
            Some(account) => account,
            None => {
                let identity = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("GetCallerIdentity", e))?;
                let account = identity.account().map(str::to_string).filter(|a| crate::aws_words::is_account_id(a));
                let account = account.ok_or_else(|| {
                    AwsError::new("GetCallerIdentity", "NoAccount", "STS answered without an account id")
                })?;
                *self.account.lock().unwrap_or_else(PoisonError::into_inner) = Some(account.clone());
                account
            }
        };
        Ok(Scope::new(&region, &account))
    }

    async fn import_all(&self, findings: &[Finding]) -> Vec<String> {
        if findings.is_empty() {
            return Vec::new();
        }
        if self.known_not_enabled() {
            return vec![NOT_ENABLED.to_string()];
        }
        let scope = match self.scope().await {
            Ok(scope) => scope,
            Err(err) => {
                return vec![format!(
                    "{} Security Hub finding(s) not imported: the account could not be learned ({err})",
                    findings.len()
                )]
            }
        };
        let mut warnings = Vec::new();
        for chunk in findings.chunks(MAX_FINDINGS_PER_CALL) {
            let request = self
                .client
                .batch_import_findings()
                .set_findings(Some(chunk.iter().map(|finding| asff(&scope, finding)).collect()));
            match request.send().await.map_err(|e| AwsError::from_sdk("BatchImportFindings", e)) {
                Ok(answer) => warnings.extend(answer.failed_findings().iter().map(|failed| {
                    format!(
                        "Security Hub refused finding {} ({}: {})",
                        failed.id().unwrap_or("?"),
                        failed.error_code().unwrap_or("?"),
                        failed.error_message().unwrap_or("")
                    )
                })),
                Err(err) if err.has_code(NOT_ENABLED_CODE) => {
                    *self.not_enabled_since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    tracing::warn!(error = %err, "{NOT_ENABLED}: no finding is imported for an hour, then asked again");
                    warnings.push(NOT_ENABLED.to_string());
                    break;
                }
                Err(err) => warnings.push(format!("{} Security Hub finding(s) not imported ({err})", chunk.len())),
            }
        }
        warnings
    }
}

impl FindingsPublisher for SecurityHubFindings {
    fn import<'a>(&'a self, findings: &'a [Finding]) -> BoxFuture<'a, Vec<String>> {
        Box::pin(self.import_all(findings))
    }
}

/// The finding in the AWS Security Finding Format, in `scope`.
pub fn asff(scope: &Scope, finding: &Finding) -> AwsSecurityFinding {
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let resources = finding.subjects.iter().map(|subject| {
        let (kind, id) = match subject {
            Subject::Instance(instance_id) => ("AwsEc2Instance", scope.instance_arn(instance_id)),
            Subject::Image(image_id) => ("Other", scope.image_arn(image_id)),
        };
        Resource::builder()
            .r#type(kind)
            .id(id)
            .partition(Partition::from(scope.partition.as_str()))
            .region(&scope.region)
            .build()
    });
    let record_state = match finding.record_state {
        RecordState::Active => AsffRecordState::Active,
        RecordState::Archived => AsffRecordState::Archived,
    };
    AwsSecurityFinding::builder()
        .schema_version(SCHEMA_VERSION)
        .id(&finding.id)
        .product_arn(scope.product_arn())
        .generator_id(&finding.generator_id)
        .aws_account_id(&scope.account)
        .set_types(Some(finding.types.clone()))
        .created_at(time(finding.created_at))
        .updated_at(time(finding.updated_at))
        .severity(AsffSeverity::builder().label(SeverityLabel::from(severity_label(finding.severity))).build())
        .title(fit_text(&finding.title, MAX_TITLE_CHARS))
        .description(fit_text(&finding.description, MAX_DESCRIPTION_CHARS))
        .remediation(
            Remediation::builder()
                .recommendation(
                    Recommendation::builder().text(fit_text(&finding.remediation, MAX_REMEDIATION_CHARS)).build(),
                )
                .build(),
        )
        .set_resources(Some(resources.collect()))
        .record_state(record_state)
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use chrono::TimeZone;

    #[test]
    fn a_finding_is_written_in_asff_in_its_scope() {
        let at = chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let finding = Finding {
            id: "amiguard/us-east-1/untrusted-image/i-01/ami-0a".into(),
            generator_id: "amiguard/untrusted-image".into(),
            types: vec!["Software and Configuration Checks/AWS Security Best Practices".into()],
            created_at: at,
            updated_at: at,
            severity: Severity::High,
            title: "t".repeat(300),
            description: "d".repeat(2_000),
            remediation: "r".into(),
            subjects: vec![Subject::Instance("i-01".into()), Subject::Image("ami-0a".into())],
            record_state: RecordState::Archived,
        };
        let asff = asff(&Scope::new("us-east-1", "123456789012"), &finding);
        assert_eq!(asff.schema_version(), Some(SCHEMA_VERSION));
        assert_eq!(asff.product_arn(), Some("arn:aws:securityhub:us-east-1:123456789012:product/123456789012/default"));
        assert_eq!(asff.aws_account_id(), Some("123456789012"));
        assert_eq!(asff.severity().and_then(|s| s.label()), Some(&SeverityLabel::High));
        assert_eq!(asff.record_state(), Some(&AsffRecordState::Archived));
        assert_eq!(asff.created_at(), Some("2027-01-15T08:00:00.000Z"));
        assert!(asff.title().unwrap().chars().count() <= MAX_TITLE_CHARS);
        assert!(asff.description().unwrap().chars().count() <= MAX_DESCRIPTION_CHARS);
        let resources: Vec<_> = asff.resources().iter().map(|r| (r.r#type().unwrap(), r.id().unwrap())).collect();
        assert_eq!(
            resources,
            [
                ("AwsEc2Instance", "arn:aws:ec2:us-east-1:123456789012:instance/i-01"),
                ("Other", "arn:aws:ec2:us-east-1::image/ami-0a")
            ]
        );
    }
}
