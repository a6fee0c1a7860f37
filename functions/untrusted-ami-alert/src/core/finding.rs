//! The Security Hub finding of an untrusted instance (`amiguard::findings`): one per instance and
//! image, its `Id` stable ([`finding_id`]) so that every sighting (each launch event, each audit)
//! updates the same finding, and archived once the audit verifies it is over ([`Resolution`]).

use amiguard::alert::Severity;
use amiguard::findings::{self, Finding, RecordState, Subject, MAX_DESCRIPTION_CHARS};
use chrono::{DateTime, Utc};

use super::message::AlertDetails;

/// The finding's `GeneratorId`: the check that makes it.
pub const GENERATOR_ID: &str = "amiguard/untrusted-image";
/// ASFF `Types`: a configuration check (the image is not approved by the trust policy).
pub const TYPE: &str = "Software and Configuration Checks/AWS Security Best Practices/Untrusted AMI";
const KIND: &str = "untrusted-image";

const REMEDIATION: &str = "Find out who launched the instance and why. If its image is not approved, stop or \
terminate the instance and relaunch it from a trusted image. If the image is approved, trust its owner in \
amiguard's policy (TRUSTED_IMAGE_PROVIDERS, ALLOWED_IMAGES_CRITERIA or the account's Allowed AMIs): the next \
audit archives this finding.";

/// `amiguard/<region>/untrusted-image/<instance-id>/<image-id>`: the same for every sighting of
/// the instance running the image.
pub fn finding_id(region: &str, instance_id: &str, image_id: &str) -> String {
    findings::finding_id(region, KIND, &[instance_id, image_id])
}

/// The active finding of an untrusted instance, as its alert states it: the reasons (with the
/// provenance chain) first, so that a cut description keeps them.
pub fn untrusted(details: &AlertDetails, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Finding {
    let owner = match (&details.owner_id, &details.owner_alias) {
        (Some(id), Some(alias)) => format!("{id} ({alias})"),
        (Some(id), None) => id.clone(),
        (None, _) => "unknown".to_string(),
    };
    let enforcement =
        serde_json::to_value(details.enforcement).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let description = format!(
        "Why: {reasons}. Instance {instance} ({state}) in account {account}, {region}, runs image {image} \
         owned by {owner}. Seen on: {seen}. Enforcement: {enforcement} (ENFORCEMENT={mode}). Policy: {policy}.",
        reasons = details.reasons.join("; "),
        instance = details.instance_id,
        state = details.instance_state,
        account = details.account,
        region = details.region,
        image = details.image_id,
        seen = details.seen_on,
        mode = details.enforcement_mode.as_str(),
        policy = details.policy,
    );
    Finding {
        id: finding_id(&details.region, &details.instance_id, &details.image_id),
        generator_id: GENERATOR_ID.into(),
        types: vec![TYPE.into()],
        created_at,
        updated_at: now,
        severity: details.severity,
        title: format!("Instance {} runs untrusted AMI {}", details.instance_id, details.image_id),
        description: findings::fit_text(&description, MAX_DESCRIPTION_CHARS),
        remediation: REMEDIATION.into(),
        subjects: vec![Subject::Instance(details.instance_id.clone()), Subject::Image(details.image_id.clone())],
        record_state: RecordState::Active,
    }
}

/// Why an open finding is over, as EC2 verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// EC2 lists the instance terminated (or shutting down).
    InstanceTerminated,
    /// EC2 no longer lists the instance, and the finding is older than EC2 lists a terminated one.
    InstanceNotFound,
    /// The audit judged the instance's image trusted.
    ImageTrusted,
}

impl Resolution {
    fn says(&self) -> &'static str {
        match self {
            Self::InstanceTerminated => "EC2 lists the instance terminated",
            Self::InstanceNotFound => "EC2 no longer lists the instance",
            Self::ImageTrusted => "the audit judged its image trusted under the current policy",
        }
    }
}

/// What amiguard recorded of a finding it imported, to archive it once it is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFinding {
    pub instance_id: String,
    pub image_id: String,
    pub severity: Severity,
    pub first_seen: DateTime<Utc>,
}

/// The archived finding: same `Id`, record state `ARCHIVED` (Security Hub resolves it).
pub fn resolved(region: &str, open: &OpenFinding, resolution: &Resolution, now: DateTime<Utc>) -> Finding {
    let OpenFinding { instance_id, image_id, severity, first_seen } = open;
    Finding {
        id: finding_id(region, instance_id, image_id),
        generator_id: GENERATOR_ID.into(),
        types: vec![TYPE.into()],
        created_at: *first_seen,
        updated_at: now,
        severity: *severity,
        title: format!("Instance {instance_id} runs untrusted AMI {image_id}"),
        description: format!(
            "Resolved: {}. Instance {instance_id} was seen running image {image_id}, not trusted then.",
            resolution.says()
        ),
        remediation: REMEDIATION.into(),
        subjects: vec![Subject::Instance(instance_id.clone()), Subject::Image(image_id.clone())],
        record_state: RecordState::Archived,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::enforce::{Enforcement, EnforcementTaken};
    use crate::core::message::OwnerSource;
    use chrono::TimeZone;

    fn details(severity: Severity, reasons: Vec<String>) -> AlertDetails {
        AlertDetails {
            instance_id: "i-0123456789abcdef0".into(),
            instance_state: "running".into(),
            image_id: "ami-0copy000000000001".into(),
            owner_id: Some("309956199498".into()),
            owner_alias: None,
            owner_source: OwnerSource::Image,
            image_name: None,
            reasons,
            severity,
            region: "us-east-1".into(),
            account: "123456789012".into(),
            seen_on: "running".into(),
            enforcement_mode: Enforcement::Alert,
            enforcement: EnforcementTaken::None,
            enforcement_error: None,
            tag_error: None,
            policy: "trusted image providers: amazon, self".into(),
            ledger_warning: None,
        }
    }

    #[test]
    fn the_finding_states_the_alert_with_a_stable_id_and_its_severity() {
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let chain = "ami-0copy000000000001 <- ami-0rhel000000000001 (owner 309956199498)".to_string();
        let first = untrusted(&details(Severity::High, vec![chain.clone()]), at(0), at(0));
        let again = untrusted(&details(Severity::High, vec![chain.clone()]), at(0), at(60));
        assert_eq!(first.id, "amiguard/us-east-1/untrusted-image/i-0123456789abcdef0/ami-0copy000000000001");
        assert_eq!(first.id, again.id, "a later sighting updates the same finding");
        assert_eq!((again.created_at, again.updated_at), (at(0), at(60)));
        assert_eq!(first.severity, Severity::High);
        assert_eq!(untrusted(&details(Severity::Medium, vec![]), at(0), at(0)).severity, Severity::Medium);
        assert!(first.description.starts_with(&format!("Why: {chain}")), "{}", first.description);
        assert_eq!(
            first.subjects,
            [Subject::Instance("i-0123456789abcdef0".into()), Subject::Image("ami-0copy000000000001".into())]
        );
        assert_eq!(first.record_state, RecordState::Active);
        let open = OpenFinding {
            instance_id: "i-0123456789abcdef0".into(),
            image_id: "ami-0copy000000000001".into(),
            severity: Severity::High,
            first_seen: at(0),
        };
        let archived = resolved("us-east-1", &open, &Resolution::InstanceTerminated, at(90));
        assert_eq!((archived.id, archived.record_state), (first.id, RecordState::Archived));
        assert!(archived.description.contains("terminated"));
    }

    #[test]
    fn many_reasons_are_cut_to_asffs_limit_and_say_so() {
        let reasons = (0..40).map(|n| format!("reason number {n} with some words")).collect();
        let finding = untrusted(&details(Severity::High, reasons), Utc::now(), Utc::now());
        assert!(finding.description.chars().count() <= MAX_DESCRIPTION_CHARS);
        assert!(finding.description.contains("more characters: see the alert"), "{}", finding.description);
        assert!(finding.description.starts_with("Why: reason number 0"));
    }
}
