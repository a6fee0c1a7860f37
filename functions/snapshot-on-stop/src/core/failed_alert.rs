//! The alert a person reads when an image snapshot-on-stop made ends `failed`: the instance has no
//! new backup. Pure: the handler sends it once (the ledger's claim) through the alert publisher.

use amiguard::alert::{fit_subject, Alert, Severity};
use amiguard::findings::{self, Finding, RecordState, Subject, MAX_DESCRIPTION_CHARS};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Everything the alert says, also its JSON block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedImage {
    pub image_id: String,
    pub image_name: String,
    pub instance_id: String,
    /// The stop it was made for (RFC 3339).
    pub stopped_at: String,
    /// EC2's reason (`StateReason.Message`, or the event's `ErrorMessage`), when it gives one.
    pub reason: Option<String>,
    /// The newest available image of the instance, which is kept (and which the launch
    /// template's default launches); `None` when the instance has none.
    pub last_good_image: Option<String>,
    pub account: Option<String>,
    pub region: String,
}

/// A failed image is a missed backup, not an intrusion: `medium`.
pub const SEVERITY: Severity = Severity::Medium;

pub fn compose(failed: &FailedImage) -> Alert {
    let account = failed.account.as_deref().unwrap_or("this account");
    let subject = fit_subject(&format!(
        "amiguard: image {} of {} failed ({account} {})",
        failed.image_id, failed.instance_id, failed.region
    ));
    let kept = match &failed.last_good_image {
        Some(image) => format!("{image}, the newest good image, is kept, and the launch template still launches it"),
        None => "the instance has no good image: nothing can relaunch it until one is made".to_string(),
    };
    let json = serde_json::to_string_pretty(failed).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let body = format!(
        "The image amiguard made when an EC2 instance stopped has failed: that stop has no backup.\n\
         \n\
         Image:    {image} \"{name}\" in account {account}, {region}\n\
         Instance: {instance}, stopped at {stopped_at}\n\
         Why:      {reason}\n\
         Kept:     {kept}.\n\
         \n\
         Nothing was deregistered or deleted for it, and retention does not count it. The failed image\n\
         stays until a person deregisters it. What to check: the KMS keys of the instance's volumes\n\
         (disabled, or not usable by EC2), and the volumes themselves.\n\
         amiguard alerts once per failed image (a reminder if it is still there after 400 days).\n\
         \n\
         Details (JSON):\n{json}\n",
        image = failed.image_id,
        name = failed.image_name,
        region = failed.region,
        instance = failed.instance_id,
        stopped_at = failed.stopped_at,
        reason = failed.reason.as_deref().filter(|r| !r.is_empty()).unwrap_or("EC2 gave no reason"),
    );
    Alert { subject, body, severity: SEVERITY }
}

/// The failed image's Security Hub finding: `amiguard/<region>/failed-image/<image-id>`, one per
/// image (a later sighting updates it), `MEDIUM` as its alert, dated by the stop it was made for.
pub fn finding(failed: &FailedImage, stopped_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Finding {
    let kept = match &failed.last_good_image {
        Some(image) => format!("{image}, the newest good image, is kept and the launch template launches it"),
        None => "the instance has no good image".to_string(),
    };
    let description = format!(
        "Why: {reason}. Image {image} \"{name}\" that amiguard made when instance {instance} stopped at {stopped} \
         failed in {region}: that stop has no backup. {kept}. Nothing was deregistered or deleted for it.",
        reason = failed.reason.as_deref().filter(|r| !r.is_empty()).unwrap_or("EC2 gave no reason"),
        image = failed.image_id,
        name = failed.image_name,
        instance = failed.instance_id,
        stopped = failed.stopped_at,
        region = failed.region,
    );
    Finding {
        id: findings::finding_id(&failed.region, "failed-image", &[failed.image_id.as_str()]),
        generator_id: "amiguard/failed-image".into(),
        types: vec!["Software and Configuration Checks/AWS Security Best Practices/Failed Backup Image".into()],
        created_at: stopped_at.unwrap_or(now),
        updated_at: now,
        severity: SEVERITY,
        title: format!("Backup image {} of instance {} failed", failed.image_id, failed.instance_id),
        description: findings::fit_text(&description, MAX_DESCRIPTION_CHARS),
        remediation: "Check the KMS keys of the instance's volumes (disabled, or not usable by EC2) and the volumes \
                      themselves, then stop the instance again for a new image; deregister the failed image."
            .into(),
        subjects: vec![Subject::Instance(failed.instance_id.clone()), Subject::Image(failed.image_id.clone())],
        record_state: RecordState::Active,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn failed() -> FailedImage {
        FailedImage {
            image_id: "ami-0fa11ed000000000a".into(),
            image_name: "amiguard-i-0123456789abcdef0-20261127T010000Z".into(),
            instance_id: "i-0123456789abcdef0".into(),
            stopped_at: "2026-11-27T01:00:00Z".into(),
            reason: Some("Client.InvalidKMSKey.InvalidState: The KMS key is disabled".into()),
            last_good_image: Some("ami-0900d000000000001".into()),
            account: Some("123456789012".into()),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn the_alert_names_the_image_the_reason_and_what_is_kept() {
        let alert = compose(&failed());
        assert_eq!(
            alert.subject,
            "amiguard: image ami-0fa11ed000000000a of i-0123456789abcdef0 failed (123456789012 us-east-1)"
        );
        assert_eq!(alert.severity, Severity::Medium);
        assert!(
            alert.body.contains("Why:      Client.InvalidKMSKey.InvalidState: The KMS key is disabled"),
            "{}",
            alert.body
        );
        assert!(alert.body.contains("ami-0900d000000000001, the newest good image, is kept"), "{}", alert.body);
        let json_start = alert.body.find("Details (JSON):\n").unwrap() + "Details (JSON):\n".len();
        let json: serde_json::Value = serde_json::from_str(&alert.body[json_start..]).unwrap();
        assert_eq!(json["image_id"], "ami-0fa11ed000000000a");
        assert_eq!(json["last_good_image"], "ami-0900d000000000001");
    }

    #[test]
    fn without_a_good_image_or_a_reason_it_says_so() {
        let alert = compose(&FailedImage { reason: None, last_good_image: None, account: None, ..failed() });
        assert!(alert.body.contains("Why:      EC2 gave no reason"), "{}", alert.body);
        assert!(alert.body.contains("the instance has no good image"), "{}", alert.body);
        assert!(alert.subject.contains("(this account us-east-1)"), "{}", alert.subject);
        assert!(alert.subject.len() < 100);
    }
}
