//! Only what is verified acts (issue 21), against fakes: `self` is STS's account and an event
//! naming another is refused; enforcement only on a `high` verdict; an ancestor read in its own
//! region; a listing that repeats a page token fails the invocation; the reports' lists cut to
//! fit one log event with their whole counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Mutex;

use amiguard::alert::Severity;
use serde_json::{json, Value};
use support::*;
use untrusted_ami_alert::core::enforce::{Enforcement, EnforcementTaken, InstanceState, LaunchedInstance};
use untrusted_ami_alert::core::provenance::Ancestor;
use untrusted_ami_alert::core::verdict::LaunchImage;
use untrusted_ami_alert::{handle, Config, Error, Outcome, Report};

const STRANGER: &str = "999988887777";

/// The account's own image, run by the instance, EC2 shows it.
fn own_instance() -> FakeEc2 {
    FakeEc2 {
        images: vec![own_image()],
        ..FakeEc2::with(instance(INSTANCE, &own_image().image_id, InstanceState::Running))
    }
}

fn changing_calls(clients: &FakeEc2) -> Vec<String> {
    clients.calls().into_iter().filter(|c| c.starts_with("CreateTags") || c.starts_with("StopInstances")).collect()
}

// ---- `self` ----

#[tokio::test]
async fn self_is_stss_account_and_an_event_naming_another_is_refused_before_anything_is_read() {
    let clients = clients(own_instance());
    let config = config(Enforcement::Stop);
    let mut forged = state_change("running");
    forged["account"] = json!(STRANGER);
    let mut recipient = cloudtrail(json!({"instancesSet": {"items": [{"instanceId": INSTANCE}]}}));
    recipient["detail"]["recipientAccountId"] = json!(STRANGER);
    let mut audit = audit_event();
    audit["account"] = json!(STRANGER);
    let mut skipped_state = state_change("stopped");
    skipped_state["account"] = json!(STRANGER);

    for event in [forged, recipient, audit, skipped_state] {
        let err = handle(&config, &clients, &event, &at()).await.unwrap_err();
        assert!(matches!(&err, Error::AnotherAccount { named, own } if named == STRANGER && own == ACCOUNT), "{err:?}");
        assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "EventForAnotherAccount");
    }

    assert!(clients.ec2.calls().is_empty(), "nothing read, tagged or stopped: {:?}", clients.ec2.calls());
    assert!(clients.alerts.sent.lock().unwrap().is_empty());
    assert_eq!(clients.ledger.as_ref().unwrap().writes(), 0);
    // The account's own events (with or without `account`): its own image is trusted.
    let mut unnamed = state_change("running");
    unnamed.as_object_mut().unwrap().remove("account");
    for event in [state_change("running"), unnamed] {
        let report = instance_report(handle(&config, &clients, &event, &at()).await.unwrap());
        assert_eq!(report.outcome, Outcome::Trusted, "{:?}", report.reasons);
    }
    assert_eq!(*clients.identity.calls.lock().unwrap(), 6, "STS decides every event (its adapter asks once)");
}

// ---- enforcement only on what is proven ----

#[tokio::test]
async fn a_medium_verdict_alerts_and_says_why_nothing_was_enforced_and_a_high_one_is_enforced() {
    for enforcement in [Enforcement::Tag, Enforcement::Stop] {
        let unverifiable = clients(copied_in(Err("RequestLimitExceeded"), None));
        let config = config(enforcement);
        let report = instance_report(handle(&config, &unverifiable, &state_change("running"), &at()).await.unwrap());
        assert_eq!((report.outcome, report.severity), (Outcome::Untrusted, Some(Severity::Medium)));
        assert_eq!(report.enforcement, EnforcementTaken::Withheld);
        let why = report.why_not_enforced.as_deref().unwrap();
        assert!(why.contains("not proven untrusted") && why.contains(&format!("ENFORCEMENT={}", enforcement.as_str())));
        assert!(changing_calls(&unverifiable.ec2).is_empty(), "{:?}", unverifiable.ec2.calls());
        let sent = unverifiable.alerts.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].severity, Severity::Medium);
        assert!(sent[0].body.contains("Enforcement: none: not proven untrusted"), "{}", sent[0].body);

        // ENFORCE_UNVERIFIABLE=true: enforced as ENFORCEMENT says.
        let told = clients(copied_in(Err("RequestLimitExceeded"), None));
        let config = Config { enforce_unverifiable: true, ..config };
        let report = instance_report(handle(&config, &told, &state_change("running"), &at()).await.unwrap());
        let expected = match enforcement {
            Enforcement::Stop => EnforcementTaken::TaggedAndStopped,
            _ => EnforcementTaken::Tagged,
        };
        assert_eq!((report.enforcement, report.why_not_enforced), (expected, None));
    }
    // A proven owner (high) is enforced without being told.
    let vendor = clients(FakeEc2 {
        images: vec![vendor_image()],
        ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
    });
    let report =
        instance_report(handle(&config(Enforcement::Stop), &vendor, &state_change("running"), &at()).await.unwrap());
    assert_eq!((report.severity, report.enforcement), (Some(Severity::High), EnforcementTaken::TaggedAndStopped));
}

#[tokio::test]
async fn a_trusted_owners_image_failing_a_name_condition_is_medium_and_not_enforced() {
    let criteria = r#"[{"ImageProviders": ["self"], "ImageNames": ["golden-*"]}]"#;
    let policy = untrusted_ami_alert::core::policy::TrustPolicy::from_criteria_json(criteria).unwrap();
    let config = Config { policy, ..config(Enforcement::Stop) };
    let clients = clients(own_instance());
    let report = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!((report.severity, report.enforcement), (Some(Severity::Medium), EnforcementTaken::Withheld));
    assert!(changing_calls(&clients.ec2).is_empty());
}

#[tokio::test]
async fn the_audit_tags_only_proven_findings_and_a_dry_run_says_the_same() {
    let unverifiable_own = LaunchImage { image_id: "ami-0d0d0d0d0d0d0d0d0".into(), ..own_image() };
    let instances = vec![
        instance("i-0aaaaaaaaaaaaaaa1", VENDOR_AMI, InstanceState::Running),
        instance("i-0aaaaaaaaaaaaaaa2", &unverifiable_own.image_id, InstanceState::Running),
    ];
    for dry_run in [false, true] {
        let clients = clients(FakeEc2 {
            instances: Mutex::new(instances.clone()),
            images: vec![vendor_image(), unverifiable_own.clone()],
            ancestry: [(unverifiable_own.image_id.clone(), Err("UnauthorizedOperation"))].into(),
            ..FakeEc2::default()
        });
        let config = Config { dry_run, ..config(Enforcement::Tag) };
        let Report::Audit(audit) = handle(&config, &clients, &audit_event(), &at()).await.unwrap() else { panic!() };
        let found: Vec<(&str, EnforcementTaken, bool)> = audit
            .untrusted
            .iter()
            .map(|f| (f.instance_id.as_str(), f.enforcement, f.why_not_enforced.is_some()))
            .collect();
        let tagged = if dry_run { EnforcementTaken::None } else { EnforcementTaken::Tagged };
        assert_eq!(
            found,
            [("i-0aaaaaaaaaaaaaaa1", tagged, false), ("i-0aaaaaaaaaaaaaaa2", EnforcementTaken::Withheld, true)],
            "dry run {dry_run}"
        );
        let tags: Vec<String> = changing_calls(&clients.ec2);
        assert_eq!(tags.len(), usize::from(!dry_run), "{tags:?}");
        if !dry_run {
            let digest = &clients.alerts.sent.lock().unwrap()[0].body;
            assert!(digest.contains("enforcement: withheld (not proven untrusted"), "{digest}");
        }
    }
}

// ---- an ancestor read in its own region ----

#[tokio::test]
async fn an_ancestor_in_another_region_is_judged_by_its_owner_there() {
    let source = |owner: &str| LaunchImage {
        image_id: "ami-0e0e0e0e0e0e0e0e0".into(),
        owner_id: owner.into(),
        ..LaunchImage::default()
    };
    let west =
        Ancestor { image_id: "ami-0e0e0e0e0e0e0e0e0".into(), region: Some("us-west-2".into()), ..Ancestor::default() };
    let cases = [
        (Some(source(ACCOUNT)), Outcome::Trusted, None),
        (Some(source("111122223333")), Outcome::Untrusted, Some(Severity::High)),
        (None, Outcome::Untrusted, Some(Severity::Medium)),
    ];
    for (seen, outcome, severity) in cases {
        let mut ec2 = copied_in(Ok(vec![west.clone()]), None);
        ec2.images_elsewhere = seen.into_iter().map(|i| ("us-west-2".to_string(), i)).collect();
        let clients = clients(ec2);
        let report = instance_report(
            handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!((report.outcome, report.severity), (outcome, severity), "{:?}", report.reasons);
        let calls = clients.ec2.calls();
        assert!(calls.contains(&"DescribeImages us-west-2".to_string()), "{calls:?}");
        let stopped = calls.iter().any(|c| c.starts_with("StopInstances"));
        assert_eq!(stopped, severity == Some(Severity::High), "only the proven one is stopped: {calls:?}");
    }
}

// ---- a listing that repeats a page token ----

#[tokio::test]
async fn a_listing_that_repeats_a_page_token_fails_the_invocation_and_sends_nothing() {
    let cases = [
        ("DescribeInstances", audit_event()),
        ("DescribeImages", audit_event()),
        ("DescribeInstanceImageMetadata", audit_event()),
        ("DescribeInstanceImageMetadata", state_change("running")),
    ];
    for (operation, event) in cases {
        let invisible = instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running);
        let ec2 = FakeEc2 {
            failing_listing: Some((operation, "RepeatedNextToken")),
            images: vec![vendor_image()],
            instances: Mutex::new(vec![invisible, instance("i-0aaaaaaaaaaaaaaa1", VENDOR_AMI, InstanceState::Running)]),
            ..FakeEc2::default()
        };
        let clients = clients(ec2);
        let err = handle(&config(Enforcement::Alert), &clients, &event, &at()).await.unwrap_err();
        assert!(matches!(&err, Error::Aws(e) if e.operation == operation && e.code == "RepeatedNextToken"), "{err:?}");
        assert!(clients.alerts.sent.lock().unwrap().is_empty(), "{operation}: nothing sent");
    }
    // An ancestor's owners listed with a repeated token: an error too, not "unverifiable".
    let mut ec2 = copied_in(Ok(vec![vendor_ancestor()]), None);
    ec2.failing_listing = Some(("DescribeImages", "RepeatedNextToken"));
    let err = handle(&config(Enforcement::Stop), &clients(ec2), &state_change("running"), &at()).await.unwrap_err();
    assert!(matches!(&err, Error::Aws(e) if e.code == "RepeatedNextToken"), "{err:?}");
}

// ---- reports that fit one log event ----

fn many(n: usize) -> Vec<LaunchedInstance> {
    (0..n).map(|i| instance(&format!("i-0{i:016x}"), VENDOR_AMI, InstanceState::Running)).collect()
}

#[tokio::test]
async fn an_audit_of_1500_untrusted_instances_answers_a_line_under_256_kb_with_the_true_counts() {
    let clients = clients(FakeEc2 {
        instances: Mutex::new(many(1_500)),
        images: vec![vendor_image()],
        fail_tag: Some("TagLimitExceeded"),
        ..FakeEc2::default()
    });
    let report = handle(&config(Enforcement::Tag), &clients, &audit_event(), &at()).await.unwrap();
    let line = serde_json::to_string(&report).unwrap();
    assert!(line.len() < 256 * 1024, "{} bytes", line.len());
    let json: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((json["audited"].as_u64(), json["alerts_sent"].as_u64()), (Some(1_500), Some(1_500)));
    assert_eq!(json["counts"], json!({"untrusted": 1_500, "warnings": 1_500}));
    assert!(json["untrusted"].as_array().unwrap().len() < 1_500 && json["warnings"].as_array().unwrap().len() < 1_500);
    let full_lists = json["full_lists"].as_str().unwrap();
    assert!(full_lists.contains("digest") && full_lists.contains("alert#us-east-1#<instance-id>"), "{full_lists}");
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), 30, "every finding is in the digest's parts");
}

#[tokio::test]
async fn a_launch_of_1500_untrusted_instances_answers_a_line_under_256_kb_with_the_true_count() {
    let clients =
        clients(FakeEc2 { instances: Mutex::new(many(1_500)), images: vec![vendor_image()], ..FakeEc2::default() });
    let items: Vec<Value> =
        (0..1_500).map(|i| json!({"instanceId": format!("i-0{i:016x}"), "imageId": VENDOR_AMI})).collect();
    let event = cloudtrail(json!({"instancesSet": {"items": items}}));
    let report = handle(&config(Enforcement::Alert), &clients, &event, &at()).await.unwrap();
    let line = serde_json::to_string(&report).unwrap();
    assert!(line.len() < 256 * 1024, "{} bytes", line.len());
    let Report::Launch { instances, counts, full_lists } = report else { panic!("not a launch") };
    assert_eq!(counts.instances, 1_500);
    assert!(instances.len() < 1_500 && instances.iter().all(|i| i.outcome == Outcome::Untrusted));
    assert!(full_lists.unwrap().contains("its own alert"));
    // A small launch: whole, nothing said elsewhere.
    let one =
        cloudtrail(json!({"instancesSet": {"items": [{"instanceId": "i-00000000000000000", "imageId": VENDOR_AMI}]}}));
    let Report::Launch { counts, full_lists, .. } =
        handle(&config(Enforcement::Alert), &clients, &one, &at()).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((counts.instances, full_lists), (1, None));
}
