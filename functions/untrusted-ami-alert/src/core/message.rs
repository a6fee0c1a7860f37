//! The alert a person reads: a subject naming the instance, readable text, and a JSON block for
//! tools. Pure: the SNS adapter only sends what this module writes.

use std::ops::Range;

use serde::Serialize;

use amiguard::alert::{fit_subject, Alert, Severity};
use amiguard::tags;

use super::enforce::{self, Enforcement, EnforcementTaken, Occasion};

/// Where the owner facts in an alert come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerSource {
    /// DescribeImages: the image is visible.
    Image,
    /// DescribeInstanceImageMetadata: what EC2 recorded at launch; the image itself is not visible.
    LaunchMetadata,
    /// Neither: the owner is unknown.
    Unknown,
}

/// Everything an alert says, also its JSON block (and, for a folded launch alert, what the ledger
/// keeps until the audit's digest sends it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AlertDetails {
    pub instance_id: String,
    pub instance_state: String,
    pub image_id: String,
    pub owner_id: Option<String>,
    pub owner_alias: Option<String>,
    pub owner_source: OwnerSource,
    pub image_name: Option<String>,
    pub reasons: Vec<String>,
    pub severity: Severity,
    pub region: String,
    pub account: String,
    pub seen_on: String,
    /// The configured `ENFORCEMENT`.
    pub enforcement_mode: Enforcement,
    /// What was done.
    pub enforcement: EnforcementTaken,
    /// The failed stop, when `enforcement` is `failed`.
    pub enforcement_error: Option<String>,
    /// The tag that could not be written, and why (`tag-failed`, `stopped-not-tagged`).
    pub tag_error: Option<String>,
    pub policy: String,
    /// Set when amiguard's ledger could not be used: this alert may repeat one already sent.
    pub ledger_warning: Option<String>,
}

pub fn compose(details: &AlertDetails, occasion: &Occasion) -> Alert {
    let subject = fit_subject(&format!(
        "amiguard: untrusted AMI on {} ({}, {} {})",
        details.instance_id, details.image_id, details.account, details.region
    ));
    let owner = match (&details.owner_id, details.owner_source) {
        (Some(id), OwnerSource::Image) => format!("{id} ({})", alias_text(details.owner_alias.as_deref())),
        (Some(id), OwnerSource::LaunchMetadata) => format!(
            "{id} ({}), as recorded at launch; the image itself is not visible",
            alias_text(details.owner_alias.as_deref())
        ),
        _ => "unknown (the image is not visible and its launch metadata could not be read)".to_string(),
    };
    let name = details.image_name.as_deref().map(|n| format!(" {n:?}")).unwrap_or_default();
    let reasons: String = details.reasons.iter().map(|r| format!("  - {r}\n")).collect();
    let json = serde_json::to_string_pretty(details).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let body = format!(
        "An EC2 instance runs from an AMI that amiguard does not trust ({severity} severity).\n\
         \n\
         Instance:    {instance} ({state}) in account {account}, {region}\n\
         Image:       {image}{name}\n\
         Owner:       {owner}\n\
         Seen on:     {occasion}\n\
         Why:\n{reasons}\
         Enforcement: {enforcement}\n\
         Policy:      {policy}\n\
         \n\
         What to do: find out who launched the instance and from which AMI (CloudTrail RunInstances).\n\
         If the AMI is legitimate, trust its owner (TRUSTED_IMAGE_PROVIDERS or ALLOWED_IMAGES_CRITERIA);\n\
         otherwise stop or terminate the instance.\n\
         amiguard alerts once per instance and image.{repeat}\n\
         \n\
         Details (JSON):\n{json}\n",
        severity = details.severity.as_str(),
        instance = details.instance_id,
        state = details.instance_state,
        account = details.account,
        region = details.region,
        image = details.image_id,
        enforcement = enforcement_text(details, occasion),
        policy = details.policy,
        repeat =
            details.ledger_warning.as_deref().map(|w| format!(" This one may be a repeat: {w}.")).unwrap_or_default(),
    );
    Alert { subject, body, severity: details.severity }
}

/// The fourth launch alert of an image within the hour: this launch's alert, saying that the
/// further ones are folded (counted; the next audit's digest lists them).
pub fn compose_follow_up(details: &AlertDetails, occasion: &Occasion, launches: u32) -> Alert {
    let alert = compose(details, occasion);
    let note = format!(
        "This is launch {launches} of image {image} within the hour: more launches of it this hour are not alerted one by one.\n\
         They are enforced as configured and counted; the next scheduled audit sends one digest listing every instance.\n\n",
        image = details.image_id
    );
    Alert { body: format!("{note}{}", alert.body), ..alert }
}

/// Findings per digest message: about 2 KB each with its JSON, so a message stays far below
/// SNS's 256 KB (a large first audit sends several parts rather than one that SNS refuses).
pub const DIGEST_FINDINGS_PER_MESSAGE: usize = 50;
/// The JSON a digest part carries at most, with room for its text (SNS takes 256 KB).
pub const DIGEST_PART_BYTES: usize = 120_000;

/// The digest's parts, as ranges of `findings`: at most [`DIGEST_FINDINGS_PER_MESSAGE`] findings
/// and about [`DIGEST_PART_BYTES`] of their JSON each (a finding alone always makes a part).
pub fn digest_parts(findings: &[&AlertDetails]) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, details) in findings.iter().enumerate() {
        let size = serde_json::to_string(details).map(|j| j.len()).unwrap_or(0) + 500;
        if i > start && (i - start >= DIGEST_FINDINGS_PER_MESSAGE || bytes + size > DIGEST_PART_BYTES) {
            parts.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < findings.len() {
        parts.push(start..findings.len());
    }
    parts
}

/// The audit's message: newly untrusted instances, grouped by image and owner; `part` is
/// `(n, of)` when the audit's findings take several messages.
pub fn compose_digest(findings: &[AlertDetails], account: &str, region: &str, part: Option<(usize, usize)>) -> Alert {
    let severity =
        if findings.iter().any(|f| f.severity == Severity::High) { Severity::High } else { Severity::Medium };
    let part_text = part.map(|(n, of)| format!(", part {n} of {of}")).unwrap_or_default();
    let subject = fit_subject(&format!(
        "amiguard: untrusted AMIs on {} instance{} ({account} {region}{part_text})",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    ));
    let mut groups: Vec<(&str, Option<&str>, Vec<&AlertDetails>)> = Vec::new();
    for finding in findings {
        let owner = finding.owner_id.as_deref();
        match groups.iter_mut().find(|(image, o, _)| *image == finding.image_id && *o == owner) {
            Some((_, _, members)) => members.push(finding),
            None => groups.push((finding.image_id.as_str(), owner, vec![finding])),
        }
    }
    let mut text = String::new();
    for (image, owner, members) in &groups {
        let first = members[0];
        let name = first.image_name.as_deref().map(|n| format!(" {n:?}")).unwrap_or_default();
        let owner = owner.map(|o| format!("owner {o} ({})", alias_text(first.owner_alias.as_deref())));
        text.push_str(&format!(
            "Image {image}{name}, {} ({} severity), {} instance{}:\n",
            owner.unwrap_or_else(|| "owner unknown".to_string()),
            first.severity.as_str(),
            members.len(),
            if members.len() == 1 { "" } else { "s" }
        ));
        for reason in &first.reasons {
            text.push_str(&format!("  why: {reason}\n"));
        }
        for member in members {
            let withheld = if member.enforcement == EnforcementTaken::Withheld {
                " (not proven untrusted: alerted only; ENFORCE_UNVERIFIABLE=true would enforce it)"
            } else {
                ""
            };
            text.push_str(&format!(
                "  - {} ({}), enforcement: {}{withheld}\n",
                member.instance_id,
                member.instance_state,
                serde_json::to_value(member.enforcement)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ));
        }
    }
    let json = serde_json::to_string_pretty(findings).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let body = format!(
        "The scheduled audit found {count} instance{s} running from AMIs that amiguard does not trust, not alerted before \
         ({severity} severity at most), in account {account}, {region}.\n\n{text}\n\
         What to do: find out who launched them and from which AMI (CloudTrail RunInstances). If an AMI is legitimate, \
         trust its owner; otherwise stop or terminate the instances. Each instance is listed once; an audit with nothing \
         new sends nothing.\n\nDetails (JSON):\n{json}\n",
        count = findings.len(),
        s = if findings.len() == 1 { "" } else { "s" },
        severity = severity.as_str(),
    );
    Alert { subject, body, severity }
}

fn alias_text(alias: Option<&str>) -> String {
    alias.map(|a| format!("owner alias {a}")).unwrap_or_else(|| "no owner alias".to_string())
}

fn enforcement_text(details: &AlertDetails, occasion: &Occasion) -> String {
    let tag = format!("tagged {}={}", tags::UNTRUSTED_AMI, details.image_id);
    match details.enforcement {
        EnforcementTaken::None => "none (ENFORCEMENT=alert: alert only)".to_string(),
        EnforcementTaken::Tagged if details.enforcement_mode == Enforcement::Stop && occasion.is_audit() => {
            format!("{tag}; not stopped: a scheduled audit never stops an instance")
        }
        EnforcementTaken::Tagged => tag,
        EnforcementTaken::TaggedAndStopped => format!("{tag} and stopped"),
        EnforcementTaken::TaggedStopDeferred => {
            format!("{tag}; the instance is pending (EC2 cannot stop it yet): it is stopped on its running event")
        }
        EnforcementTaken::TaggedNotRunning => format!("{tag}; not stopped: the instance is not running"),
        EnforcementTaken::TagFailed => {
            format!("NOT TAGGED: the tag {} could not be written: {}", tags::UNTRUSTED_AMI, tag_error(details))
        }
        EnforcementTaken::StoppedNotTagged => {
            format!("stopped; NOT TAGGED: the tag {} could not be written: {}", tags::UNTRUSTED_AMI, tag_error(details))
        }
        EnforcementTaken::InstanceGone => {
            format!("none: the instance is {} (nothing to tag or stop)", details.instance_state)
        }
        EnforcementTaken::Withheld => format!("none: {}", enforce::withheld_because(details.enforcement_mode)),
        EnforcementTaken::Failed => format!(
            "FAILED ({}): {}",
            details.enforcement_mode.as_str(),
            details.enforcement_error.as_deref().unwrap_or("unknown error")
        ),
    }
}

fn tag_error(details: &AlertDetails) -> &str {
    details.tag_error.as_deref().unwrap_or("unknown error")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_lists_every_instance_once_grouped_by_image_and_owner() {
        let on = |instance: &str, image: &str, severity: Severity| AlertDetails {
            instance_id: instance.into(),
            image_id: image.into(),
            severity,
            ..details()
        };
        let findings = [
            on("i-01", "ami-a", Severity::Medium),
            on("i-02", "ami-b", Severity::High),
            on("i-03", "ami-a", Severity::Medium),
            on("i-04", "ami-a", Severity::Medium),
        ];
        let digest = compose_digest(&findings, "123456789012", "us-east-1", None);
        assert_eq!(digest.subject, "amiguard: untrusted AMIs on 4 instances (123456789012 us-east-1)");
        assert_eq!(digest.severity, Severity::High, "the highest of its findings");
        let a = digest.body.find("Image ami-a").unwrap();
        let b = digest.body.find("Image ami-b").unwrap();
        assert!(a < b, "groups in the order first seen");
        assert!(digest.body.contains("3 instances:"), "{}", digest.body);
        for instance in ["i-01", "i-02", "i-03", "i-04"] {
            assert_eq!(digest.body.matches(&format!("  - {instance} (")).count(), 1, "{instance} once");
        }
        let follow_up = compose_follow_up(&findings[0], &Occasion::RunInstances, 4);
        let part = compose_digest(&findings[..1], "123456789012", "us-east-1", Some((2, 3)));
        assert_eq!(part.subject, "amiguard: untrusted AMIs on 1 instance (123456789012 us-east-1, part 2 of 3)");
        assert!(follow_up.body.starts_with("This is launch 4 of image ami-a within the hour"), "{}", follow_up.body);
        assert_eq!(follow_up.subject, compose(&findings[0], &Occasion::RunInstances).subject, "the subject's contract");
    }

    #[test]
    fn a_large_digest_is_cut_in_parts_of_at_most_fifty_findings_or_about_120_kb() {
        let findings = vec![details(); 120];
        let all: Vec<&AlertDetails> = findings.iter().collect();
        assert_eq!(digest_parts(&all), [0..50, 50..100, 100..120]);
        assert_eq!(digest_parts(&all[..1]), [Range { start: 0, end: 1 }]);
        assert!(digest_parts(&[]).is_empty());
        let mut long = details();
        long.reasons = vec!["x".repeat(DIGEST_PART_BYTES)];
        assert_eq!(digest_parts(&[&long, &long, &findings[0]]), [0..1, 1..2, 2..3], "one finding alone is a part");
    }

    fn details() -> AlertDetails {
        AlertDetails {
            instance_id: "i-0123456789abcdef0".into(),
            instance_state: "running".into(),
            image_id: "ami-0123456789abcdef0".into(),
            owner_id: Some("111122223333".into()),
            owner_alias: None,
            owner_source: OwnerSource::Image,
            image_name: Some("cheap-miner".into()),
            reasons: vec![
                "owner 111122223333 (no owner alias) is not a trusted provider (trusted: amazon, self)".into()
            ],
            severity: Severity::High,
            region: "us-east-1".into(),
            account: "123456789012".into(),
            seen_on: "launch (state-change event: running)".into(),
            enforcement_mode: Enforcement::Tag,
            enforcement: EnforcementTaken::Tagged,
            enforcement_error: None,
            tag_error: None,
            policy: "trusted image providers: amazon, self".into(),
            ledger_warning: None,
        }
    }

    #[test]
    fn the_subject_names_the_instance_and_fits_sns() {
        let alert = compose(&details(), &Occasion::RunInstances);
        assert_eq!(
            alert.subject,
            "amiguard: untrusted AMI on i-0123456789abcdef0 (ami-0123456789abcdef0, 123456789012 us-east-1)"
        );
        assert!(alert.subject.len() <= amiguard::alert::MAX_SUBJECT_CHARS);
        let mut long = details();
        long.region = "a-very-long-region-name-that-does-not-exist-1".into();
        long.instance_id = "i-0123456789abcdef0\nX".into();
        let subject = compose(&long, &Occasion::RunInstances).subject;
        assert_eq!(subject.len(), amiguard::alert::MAX_SUBJECT_CHARS);
        assert!(subject.starts_with("amiguard: untrusted AMI on i-0123456789abcdef0?X ("), "{subject}");
        assert!(subject.ends_with("..."));
    }

    #[test]
    fn the_body_is_readable_text_then_a_json_block_with_every_fact() {
        let alert = compose(&details(), &Occasion::StateChange("running".into()));
        let body = &alert.body;
        assert!(
            body.contains("Instance:    i-0123456789abcdef0 (running) in account 123456789012, us-east-1"),
            "{body}"
        );
        assert!(body.contains("Image:       ami-0123456789abcdef0 \"cheap-miner\""), "{body}");
        assert!(body.contains("Owner:       111122223333 (no owner alias)"), "{body}");
        assert!(body.contains("  - owner 111122223333 (no owner alias) is not a trusted provider"), "{body}");
        assert!(body.contains("Enforcement: tagged amiguard:untrusted-ami=ami-0123456789abcdef0\n"), "{body}");
        let json_start = body.find("Details (JSON):\n").unwrap() + "Details (JSON):\n".len();
        let json: serde_json::Value = serde_json::from_str(&body[json_start..]).unwrap();
        assert_eq!(json["instance_id"], "i-0123456789abcdef0");
        assert_eq!(json["image_id"], "ami-0123456789abcdef0");
        assert_eq!(json["owner_id"], "111122223333");
        assert_eq!(json["owner_alias"], serde_json::Value::Null);
        assert_eq!(json["image_name"], "cheap-miner");
        assert_eq!(json["reasons"][0], details().reasons[0]);
        assert_eq!(json["region"], "us-east-1");
        assert_eq!(json["account"], "123456789012");
        assert_eq!(json["enforcement"], "tagged");
        assert_eq!(json["severity"], "high");
        assert_eq!(alert.severity, Severity::High);
    }

    #[test]
    fn a_ledger_warning_says_the_alert_may_repeat() {
        assert!(!compose(&details(), &Occasion::Audit).body.contains("repeat"));
        let mut d = details();
        d.ledger_warning = Some("the ledger could not be read (Query failed: x)".into());
        let body = compose(&d, &Occasion::Audit).body;
        assert!(body.contains("This one may be a repeat: the ledger could not be read (Query failed: x)."), "{body}");
    }

    #[test]
    fn the_owner_line_says_where_the_owner_comes_from() {
        let mut hidden = details();
        hidden.owner_source = OwnerSource::LaunchMetadata;
        hidden.owner_alias = Some("amazon".into());
        let body = compose(&hidden, &Occasion::Audit).body;
        assert!(body.contains(
            "Owner:       111122223333 (owner alias amazon), as recorded at launch; the image itself is not visible"
        ));
        hidden.owner_source = OwnerSource::Unknown;
        hidden.owner_id = None;
        let body = compose(&hidden, &Occasion::Audit).body;
        assert!(body.contains("Owner:       unknown"), "{body}");
    }

    #[test]
    fn enforcement_lines() {
        let mut d = details();
        d.enforcement_mode = Enforcement::Stop;
        assert!(compose(&d, &Occasion::Audit).body.contains("a scheduled audit never stops an instance"));
        d.enforcement = EnforcementTaken::TaggedStopDeferred;
        assert!(compose(&d, &Occasion::RunInstances).body.contains("it is stopped on its running event"));
        d.enforcement = EnforcementTaken::Failed;
        d.enforcement_error = Some("StopInstances failed: UnauthorizedOperation: no".into());
        assert!(compose(&d, &Occasion::RunInstances)
            .body
            .contains("Enforcement: FAILED (stop): StopInstances failed: UnauthorizedOperation: no"));
        d.enforcement = EnforcementTaken::StoppedNotTagged;
        d.tag_error = Some("CreateTags failed: TagLimitExceeded: 50".into());
        assert!(compose(&d, &Occasion::RunInstances).body.contains(
            "Enforcement: stopped; NOT TAGGED: the tag amiguard:untrusted-ami could not be written: CreateTags failed: TagLimitExceeded: 50"
        ));
        d.enforcement_mode = Enforcement::Alert;
        d.enforcement = EnforcementTaken::None;
        assert!(compose(&d, &Occasion::RunInstances)
            .body
            .contains("Enforcement: none (ENFORCEMENT=alert: alert only)"));
        // A medium verdict with ENFORCEMENT=stop: why nothing was done, in the alert and the digest.
        d.enforcement_mode = Enforcement::Stop;
        d.enforcement = EnforcementTaken::Withheld;
        d.severity = Severity::Medium;
        let body = compose(&d, &Occasion::RunInstances).body;
        assert!(body.contains("Enforcement: none: not proven untrusted (a medium verdict"), "{body}");
        assert!(body.contains("ENFORCEMENT=stop tags and stops only on a high verdict"), "{body}");
        let digest = compose_digest(&[d], "123456789012", "us-east-1", None).body;
        assert!(digest.contains("enforcement: withheld (not proven untrusted: alerted only;"), "{digest}");
    }
}
