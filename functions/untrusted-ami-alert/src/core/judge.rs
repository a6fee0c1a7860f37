//! The verdict on a launch: who owns its image (the policy's word, or EC2's own where the policy
//! is the account's Allowed AMIs settings), then who made it (provenance), and whose word the
//! alert gives for the owner. Pure.

use chrono::{DateTime, Utc};

use amiguard::alert::Severity;

use super::message::OwnerSource;
use super::policy::TrustPolicy;
use super::verdict::{self, LaunchImage, Problem, Reason, Verdict};

/// The verdict on the image's owner: the policy's, except where the policy is the account's
/// own Allowed AMIs settings and EC2 says whether it allows the image (`ImageAllowed`): then
/// EC2's word decides, so amiguard and EC2 agree by construction. Provenance comes after.
///
/// An image that is not visible is alerted, always; it is `high` (enforceable) only when EC2's
/// own launch record (`launch_metadata`) proves it untrusted: an owner the policy does not trust,
/// or the account's Allowed AMIs refusing it. Otherwise its owner cannot be verified: `medium`.
pub fn owner_verdict(
    policy: &TrustPolicy,
    image: Option<&LaunchImage>,
    launch_metadata: Option<&LaunchImage>,
    this_account: &str,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(image) = image else { return hidden_image_verdict(policy, launch_metadata, this_account) };
    let verdict = verdict::verdict(policy, Some(image), this_account, now);
    match (policy.defers_to_ec2(), image.image_allowed, verdict) {
        (true, Some(false), Verdict::Untrusted { mut reasons, .. }) => {
            reasons.insert(0, Reason { criterion: None, problem: Problem::NotAllowedByEc2 });
            Verdict::Untrusted { reasons, severity: Severity::High }
        }
        (true, Some(false), Verdict::Trusted) => Verdict::Untrusted {
            reasons: vec![Reason { criterion: None, problem: Problem::NotAllowedByEc2 }],
            severity: Severity::High,
        },
        (true, Some(true), _) => Verdict::Trusted,
        (_, _, verdict) => verdict,
    }
}

/// An image DescribeImages does not show, judged by what EC2 recorded at launch, if anything.
fn hidden_image_verdict(policy: &TrustPolicy, recorded: Option<&LaunchImage>, this_account: &str) -> Verdict {
    let mut reasons = vec![Reason { criterion: None, problem: Problem::ImageNotVisible }];
    let proven = match recorded {
        Some(recorded) if policy.defers_to_ec2() && recorded.image_allowed == Some(false) => {
            Some(Problem::NotAllowedByEc2)
        }
        Some(recorded)
            if !recorded.owner_id.is_empty()
                && !policy.trusts_owner(&recorded.owner_id, recorded.owner_alias.as_deref(), this_account) =>
        {
            Some(Problem::RecordedOwnerNotTrusted {
                owner_id: recorded.owner_id.clone(),
                owner_alias: recorded.owner_alias.clone(),
            })
        }
        _ => None,
    };
    let severity = if proven.is_some() { Severity::High } else { Severity::Medium };
    reasons.extend(proven.map(|problem| Reason { criterion: None, problem }));
    Verdict::Untrusted { reasons, severity }
}

/// Who owns it (as the policy, or EC2's own Allowed AMIs verdict, says), then who made it
/// (`made_from`: the provenance problem of the image, if any): an image whose owner is trusted
/// but whose lineage is not is untrusted (high), or cannot be verified (medium).
pub fn launch_verdict(owner: Verdict, made_from: Option<&Problem>) -> Verdict {
    match (owner, made_from) {
        (Verdict::Trusted, Some(problem)) => {
            let severity = match problem {
                Problem::ProvenanceUnverifiable { .. } => Severity::Medium,
                _ => Severity::High,
            };
            Verdict::Untrusted { reasons: vec![Reason { criterion: None, problem: problem.clone() }], severity }
        }
        (verdict, _) => verdict,
    }
}

/// Whose word an alert gives for the owner: the visible image's, else what EC2 recorded at
/// launch (only detail: the verdict stays "not visible"), else none.
pub fn owner<'a>(
    image: Option<&'a LaunchImage>,
    launch_metadata: Option<&'a LaunchImage>,
) -> (Option<&'a LaunchImage>, OwnerSource) {
    match (image, launch_metadata) {
        (Some(image), _) => (Some(image), OwnerSource::Image),
        (None, Some(recorded)) => (Some(recorded), OwnerSource::LaunchMetadata),
        (None, None) => (None, OwnerSource::Unknown),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const ME: &str = "123456789012";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
    }

    fn image(owner_id: &str, image_allowed: Option<bool>) -> LaunchImage {
        LaunchImage { image_id: "ami-1".into(), owner_id: owner_id.into(), image_allowed, ..LaunchImage::default() }
    }

    #[test]
    fn ec2s_image_allowed_decides_only_for_the_accounts_own_settings() {
        let account =
            TrustPolicy::from_account_settings("enabled", serde_json::json!([{"ImageProviders": [ME]}])).unwrap();
        let refused = owner_verdict(&account, Some(&image(ME, Some(false))), None, ME, now());
        assert!(matches!(&refused, Verdict::Untrusted { reasons, severity: Severity::High }
            if reasons[0].problem == Problem::NotAllowedByEc2));
        assert!(owner_verdict(&account, Some(&image("111122223333", Some(true))), None, ME, now()).is_trusted());
        assert!(!owner_verdict(&account, Some(&image("111122223333", None)), None, ME, now()).is_trusted());
        // The variables' policy judges by itself, whatever EC2 says.
        let env = TrustPolicy::default();
        assert!(owner_verdict(&env, Some(&image(ME, Some(false))), None, ME, now()).is_trusted());
    }

    #[test]
    fn a_hidden_image_is_high_only_when_ecs_launch_record_proves_it_untrusted() {
        let judged = |policy: &TrustPolicy, recorded: Option<&LaunchImage>| match owner_verdict(
            policy,
            None,
            recorded,
            ME,
            now(),
        ) {
            Verdict::Untrusted { reasons, severity } => {
                assert_eq!(reasons[0].problem, Problem::ImageNotVisible, "always said first");
                (severity, reasons.get(1).map(|r| r.problem.clone()))
            }
            Verdict::Trusted => panic!("a hidden image is never trusted"),
        };
        let env = TrustPolicy::default();
        // Nothing recorded, or a trusted owner recorded: the owner cannot be verified.
        assert_eq!(judged(&env, None), (Severity::Medium, None));
        assert_eq!(judged(&env, Some(&image(ME, None))), (Severity::Medium, None));
        assert_eq!(judged(&env, Some(&image("", None))), (Severity::Medium, None), "no owner recorded");
        // An owner the policy does not trust, as EC2 recorded it: proven.
        let vendor = LaunchImage { owner_alias: Some("vendor".into()), ..image("111122223333", None) };
        assert_eq!(
            judged(&env, Some(&vendor)),
            (
                Severity::High,
                Some(Problem::RecordedOwnerNotTrusted {
                    owner_id: "111122223333".into(),
                    owner_alias: Some("vendor".into())
                })
            )
        );
        // The account's own Allowed AMIs: EC2's refusal is proof; its consent still shows nothing.
        let account =
            TrustPolicy::from_account_settings("enabled", serde_json::json!([{"ImageProviders": [ME]}])).unwrap();
        assert_eq!(judged(&account, Some(&image(ME, Some(false)))), (Severity::High, Some(Problem::NotAllowedByEc2)));
        assert_eq!(judged(&account, Some(&image(ME, Some(true)))), (Severity::Medium, None));
    }

    #[test]
    fn a_trusted_owner_with_an_untrusted_or_unverifiable_lineage_is_untrusted() {
        let copied = Problem::AncestorNotTrusted { chain: vec![], owner_id: "111122223333".into(), owner_alias: None };
        let unknown = Problem::ProvenanceUnverifiable { chain: vec![], why: "x".into() };
        let severity = |v: Verdict| match v {
            Verdict::Untrusted { severity, .. } => Some(severity),
            Verdict::Trusted => None,
        };
        assert_eq!(severity(launch_verdict(Verdict::Trusted, Some(&copied))), Some(Severity::High));
        assert_eq!(severity(launch_verdict(Verdict::Trusted, Some(&unknown))), Some(Severity::Medium));
        assert_eq!(severity(launch_verdict(Verdict::Trusted, None)), None);
        let owner = Verdict::Untrusted { reasons: vec![], severity: Severity::Medium };
        assert_eq!(launch_verdict(owner.clone(), Some(&copied)), owner, "the owner's verdict stands");
    }

    #[test]
    fn the_owner_is_the_visible_images_else_the_launch_records() {
        let (seen, recorded) = (image(ME, None), image("111122223333", None));
        assert_eq!(owner(Some(&seen), Some(&recorded)).1, OwnerSource::Image);
        assert_eq!(owner(None, Some(&recorded)), (Some(&recorded), OwnerSource::LaunchMetadata));
        assert_eq!(owner(None, None), (None, OwnerSource::Unknown));
    }
}
