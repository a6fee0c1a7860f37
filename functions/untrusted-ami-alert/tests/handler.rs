//! The handler against fakes: launches judged (owner, provenance, the account's own Allowed AMIs
//! settings), enforced and alerted once; what fails, and what a retry then does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use amiguard::alert::once::{self as sent, AlertKey};
use amiguard::alert::Severity;
use amiguard::invocation::Invocation;
use amiguard::ledger::memory::MemoryLedger;
use serde_json::json;
use support::*;
use untrusted_ami_alert::core::enforce::{Enforcement, EnforcementTaken, InstanceState};
use untrusted_ami_alert::core::policy::TrustPolicy;
use untrusted_ami_alert::core::provenance::Ancestor;
use untrusted_ami_alert::core::verdict::LaunchImage;
use untrusted_ami_alert::{handle, Config, Error, FailedStep, InstanceReport, Outcome, Ports, Report, WouldDo};

#[tokio::test]
async fn a_pending_instance_is_tagged_now_and_stopped_on_its_running_event() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Pending));
    ec2.images = vec![vendor_image()];
    let clients = clients(ec2);
    let config = config(Enforcement::Stop);
    let pending = instance_report(handle(&config, &clients, &state_change("pending"), &at()).await.unwrap());
    assert_eq!(pending.outcome, Outcome::Untrusted);
    assert_eq!(pending.enforcement, EnforcementTaken::TaggedStopDeferred);
    assert_eq!(pending.alert_message_id.as_deref(), Some("msg-1"));
    assert!(!clients.ec2.calls().iter().any(|c| c.starts_with("StopInstances")), "EC2 cannot stop a pending instance");
    assert!(clients.alerts.sent.lock().unwrap()[0].body.contains("it is stopped on its running event"));

    clients.ec2.instances.lock().unwrap()[0].state = InstanceState::Running;
    let running = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(running.enforcement, EnforcementTaken::TaggedAndStopped);
    assert_eq!(running.alert_message_id, None);
    assert!(running.already_alerted);
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1, "alerted once");
    let calls = clients.ec2.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("CreateTags")).count(),
        2,
        "the untrusted tag on each event, nothing else: {calls:?}"
    );
    assert!(calls.contains(&format!("StopInstances {INSTANCE}")));
}

#[tokio::test]
async fn a_stop_refused_because_the_state_changed_is_no_error() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
    ec2.images = vec![vendor_image()];
    ec2.stop_refused = true;
    let clients = clients(ec2);
    let report =
        instance_report(handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.enforcement, EnforcementTaken::TaggedNotRunning);
}

#[tokio::test]
async fn a_failed_publish_gives_the_claim_back_and_fails_the_invocation_so_the_retry_alerts() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
    ec2.images = vec![vendor_image()];
    let mut clients = clients(ec2);
    clients.alerts.fail = true;
    let err = handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotGuarded(f) if f[0].step == FailedStep::Alert && f[0].error.code == "NotFound"),
        "{err}"
    );
    assert!(clients.ledger.as_ref().unwrap().items().is_empty(), "the claim was given back");
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "AlertNotSent");
    assert!(diagnostic.error_message.contains("Publish failed: NotFound"), "{}", diagnostic.error_message);
    clients.alerts.fail = false;
    let retry =
        instance_report(handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(retry.alert_message_id.as_deref(), Some("msg-1"), "the retry alerts");
}

#[tokio::test]
async fn a_tag_that_cannot_be_written_is_said_and_fails_nothing() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
    ec2.images = vec![vendor_image()];
    ec2.fail_tag = Some("TagLimitExceeded");
    let clients = clients(ec2);
    for _ in 0..3 {
        let report = instance_report(
            handle(&config(Enforcement::Tag), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.enforcement, EnforcementTaken::TagFailed);
        assert!(report.warnings[0].contains("amiguard:untrusted-ami could not be written"), "{:?}", report.warnings);
        assert!(report.warnings[0].contains("TagLimitExceeded"));
    }
    let sent = clients.alerts.sent.lock().unwrap();
    assert_eq!(sent.len(), 1, "alerted once, however often the tag fails");
    assert!(
        sent[0].body.contains(
            "NOT TAGGED: the tag amiguard:untrusted-ami could not be written: CreateTags failed: TagLimitExceeded"
        ),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn without_a_working_ledger_every_event_alerts_and_says_it_may_repeat() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
    ec2.images = vec![vendor_image()];
    let clients = clients(ec2);
    clients.ledger.as_ref().unwrap().fail_everything();
    for _ in 0..2 {
        let report = instance_report(
            handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert!(report.alert_message_id.is_some() && !report.already_alerted);
        assert!(report.warnings.iter().any(|w| w.contains("the ledger could not be used")), "{:?}", report.warnings);
    }
    let sent = clients.alerts.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "a duplicate rather than silence");
    assert!(sent[1].body.contains("This one may be a repeat: the ledger could not be used"), "{}", sent[1].body);

    let mut unconfigured = self::clients(FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running)));
    unconfigured.ec2.images = vec![vendor_image()];
    unconfigured.ledger = None;
    let report = instance_report(
        handle(&config(Enforcement::Alert), &unconfigured, &state_change("running"), &at()).await.unwrap(),
    );
    assert!(report.alert_message_id.is_some());
    assert!(report.warnings[0].contains("LEDGER_TABLE"), "{:?}", report.warnings);
}

#[tokio::test(start_paused = true)]
async fn a_claim_held_by_another_delivery_is_waited_for_then_fails_retryably() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
    ec2.images = vec![vendor_image()];
    let clients = clients(ec2);
    let store = clients.ledger.as_ref().unwrap();
    let sent::Claim::Claimed(_held) =
        sent::claim(store, &AlertKey::untrusted("us-east-1", INSTANCE, VENDOR_AMI), "other", now()).await.unwrap()
    else {
        panic!("not claimed")
    };
    let err = handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap_err();
    assert!(matches!(&err, Error::NotGuarded(f) if f[0].step == FailedStep::AlertInProgress), "{err}");
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "AlertInProgress");
    assert!(clients.alerts.sent.lock().unwrap().is_empty(), "the holder sends it, not this delivery");
    // Once the holder's claim expires (it died), the next delivery alerts.
    let later = Invocation::at(now() + sent::CLAIM_DURATION + chrono::Duration::seconds(1));
    let report =
        instance_report(handle(&config(Enforcement::Alert), &clients, &state_change("running"), &later).await.unwrap());
    assert!(report.alert_message_id.is_some());
}

#[tokio::test]
async fn a_failed_stop_is_alerted_once_and_fails_the_invocation_for_a_retry() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running));
    ec2.images = vec![vendor_image()];
    ec2.fail_stop = Some("UnsupportedOperation");
    let mut clients = clients(ec2);
    let err = handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap_err();
    assert!(matches!(&err, Error::NotGuarded(f) if f.len() == 1 && f[0].step == FailedStep::Enforcement), "{err}");
    let sent = clients.alerts.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].body.contains("Enforcement: FAILED (stop): StopInstances failed: UnsupportedOperation"),
        "{}",
        sent[0].body
    );
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "EnforcementFailed");
    // The retry stops the instance and does not alert again.
    clients.ec2.fail_stop = None;
    let retry =
        instance_report(handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(retry.enforcement, EnforcementTaken::TaggedAndStopped);
    assert!(retry.already_alerted);
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_account_comes_from_sts_never_from_the_event() {
    let own =
        LaunchImage { image_id: "ami-0bbbbbbbbbbbbbbbb".into(), owner_id: ACCOUNT.into(), ..LaunchImage::default() };
    let mut ec2 = FakeEc2::with(instance(INSTANCE, &own.image_id, InstanceState::Running));
    ec2.images = vec![own];
    let clients = clients(ec2);
    let with_account =
        instance_report(handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(with_account.outcome, Outcome::Trusted);
    assert_eq!(*clients.identity.calls.lock().unwrap(), 1, "self resolved through STS, whatever the event says");
    let mut event = state_change("running");
    event.as_object_mut().unwrap().remove("account");
    let without = instance_report(handle(&config(Enforcement::Stop), &clients, &event, &at()).await.unwrap());
    assert_eq!(without.outcome, Outcome::Trusted, "self resolved through STS");
    // An event naming another account would make the account's own image untrusted (and, with
    // ENFORCEMENT=stop, stop the instance): refused, nothing read or done.
    event["account"] = json!("210987654321");
    let calls = clients.ec2.calls().len();
    let err = handle(&config(Enforcement::Stop), &clients, &event, &at()).await.unwrap_err();
    assert!(matches!(&err, Error::AnotherAccount { named, own } if named == "210987654321" && own == ACCOUNT), "{err}");
    assert_eq!(clients.ec2.calls().len(), calls, "no EC2 call: {:?}", clients.ec2.calls());
    assert!(clients.alerts.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_invisible_image_is_untrusted_and_its_recorded_owner_is_reported() {
    let mut ec2 = FakeEc2::with(instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running));
    ec2.metadata = vec![(
        INSTANCE.to_string(),
        LaunchImage {
            image_id: "ami-0ccccccccccccccc0".into(),
            owner_id: ACCOUNT.into(),
            name: Some("golden-old".into()),
            ..LaunchImage::default()
        },
    )];
    let clients = clients(ec2);
    let report =
        instance_report(handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Untrusted, "a recorded owner does not make an invisible image trusted");
    assert_eq!(report.owner_id.as_deref(), Some(ACCOUNT));
    assert!(report.reasons[0].starts_with("image not visible"));
    let body = clients.alerts.sent.lock().unwrap()[0].body.clone();
    assert!(body.contains("as recorded at launch; the image itself is not visible"), "{body}");
}

#[tokio::test]
async fn a_hidden_image_is_stopped_only_when_ecs_launch_record_names_an_untrusted_owner() {
    let recorded = |owner: &str| {
        vec![(
            INSTANCE.to_string(),
            LaunchImage { image_id: "ami-0ccccccccccccccc0".into(), owner_id: owner.into(), ..LaunchImage::default() },
        )]
    };
    // Its owner cannot be verified (nothing recorded, or its own account recorded): alerted
    // (medium), nothing tagged or stopped, and the report says why.
    for metadata in [vec![], recorded(ACCOUNT)] {
        let mut ec2 = FakeEc2::with(instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running));
        ec2.metadata = metadata.clone();
        let clients = clients(ec2);
        let report = instance_report(
            handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap(),
        );
        assert_eq!(report.outcome, Outcome::Untrusted, "{metadata:?}");
        assert_eq!(report.severity, Some(Severity::Medium), "{metadata:?}");
        assert_eq!(report.enforcement, EnforcementTaken::Withheld, "{metadata:?}");
        assert!(report.why_not_enforced.is_some(), "{metadata:?}");
        let calls = clients.ec2.calls();
        assert!(!calls.iter().any(|c| c.starts_with("StopInstances") || c.starts_with("CreateTags")), "{calls:?}");
        assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1, "alerted all the same");
    }
    // EC2 recorded at launch an owner the policy does not trust: proven, so enforced.
    let mut ec2 = FakeEc2::with(instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running));
    ec2.metadata = recorded("111122223333");
    let clients = clients(ec2);
    let report =
        instance_report(handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.severity, Some(Severity::High));
    assert_eq!(report.enforcement, EnforcementTaken::TaggedAndStopped);
    assert!(
        report.reasons.iter().any(|r| r.contains("EC2 recorded at launch that its owner is 111122223333")),
        "{:?}",
        report.reasons
    );
    assert!(clients.ec2.calls().contains(&format!("StopInstances {INSTANCE}")));
}

#[tokio::test]
async fn unavailable_launch_metadata_still_alerts_with_an_unknown_owner() {
    let clients = clients(FakeEc2::with(instance(INSTANCE, "ami-0ccccccccccccccc0", InstanceState::Running)));
    let report =
        instance_report(handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Untrusted);
    assert_eq!(report.owner_id, None);
    assert!(clients.alerts.sent.lock().unwrap()[0].body.contains("Owner:       unknown"));
}

#[tokio::test]
async fn states_other_than_pending_and_running_are_skipped_without_a_call() {
    let clients = clients(FakeEc2::default());
    for state in ["stopping", "stopped", "shutting-down", "terminated"] {
        let report =
            instance_report(handle(&config(Enforcement::Stop), &clients, &state_change(state), &at()).await.unwrap());
        assert_eq!(report.outcome, Outcome::Skipped);
        assert_eq!(report.instance_id.as_deref(), Some(INSTANCE));
        assert!(report.reasons[0].contains(state));
    }
    assert!(clients.ec2.calls().is_empty());
}

#[tokio::test]
async fn an_unknown_instance_fails_so_that_lambda_retries() {
    let clients = clients(FakeEc2::default());
    let err = handle(&config(Enforcement::Alert), &clients, &state_change("pending"), &at()).await.unwrap_err();
    assert!(matches!(&err, Error::InstancesNotFound(ids) if ids == &[INSTANCE.to_string()]), "{err}");
    assert!(clients.alerts.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_own_image_copied_from_an_untrusted_one_is_untrusted_with_its_chain() {
    let clients = clients(copied_in(Ok(vec![vendor_ancestor()]), None));
    let report =
        instance_report(handle(&config(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Untrusted);
    assert!(report.reasons[0].contains("ami-0c0c0c0c0c0c0c0c0 <- ami-0aaaaaaaaaaaaaaaa"), "{:?}", report.reasons);
    assert!(report.reasons[0].contains("111122223333"), "{:?}", report.reasons);
    let sent = clients.alerts.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].severity, Severity::High);
}

#[tokio::test]
async fn unreadable_provenance_is_medium_and_a_copys_source_is_judged_when_the_lineage_is_not() {
    let unreadable = clients(copied_in(Err("UnauthorizedOperation"), None));
    let report = instance_report(
        handle(&config(Enforcement::Alert), &unreadable, &state_change("running"), &at()).await.unwrap(),
    );
    assert_eq!(report.outcome, Outcome::Untrusted);
    assert!(report.reasons[0].contains("provenance cannot be verified"), "{:?}", report.reasons);
    assert_eq!(unreadable.alerts.sent.lock().unwrap()[0].severity, Severity::Medium);
    // The lineage cannot be read, but DescribeImages names the copy's source: that decides.
    let sourced = clients(copied_in(Err("UnauthorizedOperation"), Some(VENDOR_AMI)));
    let report =
        instance_report(handle(&config(Enforcement::Alert), &sourced, &state_change("running"), &at()).await.unwrap());
    assert!(report.reasons[0].contains("is not trusted"), "{:?}", report.reasons);
    assert_eq!(sourced.alerts.sent.lock().unwrap()[0].severity, Severity::High);
}

#[tokio::test]
async fn trusted_lineage_alias_trusted_images_and_check_provenance_false_stay_trusted() {
    let amazon_base = Ancestor { owner_alias: Some("amazon".into()), ..vendor_ancestor() };
    let lineage = clients(copied_in(Ok(vec![amazon_base]), None));
    let report =
        instance_report(handle(&config(Enforcement::Alert), &lineage, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Trusted, "{:?}", report.reasons);
    let off = clients(copied_in(Ok(vec![vendor_ancestor()]), None));
    let unchecked = Config { check_provenance: false, ..config(Enforcement::Alert) };
    let report = instance_report(handle(&unchecked, &off, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Trusted);
    assert!(off.ec2.calls().iter().all(|c| !c.starts_with("GetImageAncestry")), "{:?}", off.ec2.calls());
    // An image trusted by its alias (Amazon's) is not traced.
    let amazon = LaunchImage { owner_alias: Some("amazon".into()), owner_id: "137112412989".into(), ..vendor_image() };
    let aliased = clients(FakeEc2 {
        images: vec![amazon],
        ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
    });
    let report =
        instance_report(handle(&config(Enforcement::Alert), &aliased, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Trusted);
    assert!(aliased.ec2.calls().iter().all(|c| !c.starts_with("GetImageAncestry")));
}

#[tokio::test]
async fn with_the_accounts_settings_ec2s_image_allowed_decides() {
    let account_policy =
        TrustPolicy::from_account_settings("enabled", json!([{"ImageProviders": ["111122223333"]}])).unwrap();
    let config = Config { policy: account_policy, ..config(Enforcement::Alert) };
    let judged = |allowed: Option<bool>, owner: &str| {
        let image = LaunchImage { image_allowed: allowed, owner_id: owner.into(), ..vendor_image() };
        clients(FakeEc2 {
            images: vec![image],
            ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
        })
    };
    async fn verdict(config: &Config, clients: Ports<FakeEc2, FakeSns, FakeSts, MemoryLedger>) -> InstanceReport {
        instance_report(handle(config, &clients, &state_change("running"), &at()).await.unwrap())
    }
    // The criteria trust the owner, EC2 says not allowed (a condition amiguard cannot see).
    let refused = verdict(&config, judged(Some(false), "111122223333")).await;
    assert_eq!(refused.outcome, Outcome::Untrusted);
    assert!(refused.reasons[0].contains("Allowed AMIs settings do not allow it"), "{:?}", refused.reasons);
    // EC2 says allowed: trusted, whatever amiguard's reading of the criteria.
    assert_eq!(verdict(&config, judged(Some(true), "999988887777")).await.outcome, Outcome::Trusted);
    // EC2 does not say: the criteria decide.
    assert_eq!(verdict(&config, judged(None, "999988887777")).await.outcome, Outcome::Untrusted);
    assert_eq!(verdict(&config, judged(None, "111122223333")).await.outcome, Outcome::Trusted);
}

#[tokio::test]
async fn with_the_accounts_settings_an_allowed_own_copy_is_still_traced_to_its_maker() {
    // EC2 allows every image the account owns; the copy's maker is an untrusted vendor.
    let policy = TrustPolicy::from_account_settings("enabled", json!([{"ImageProviders": ["amazon"]}])).unwrap();
    let config = Config { policy, ..config(Enforcement::Alert) };
    let mut ec2 = copied_in(Ok(vec![vendor_ancestor()]), None);
    ec2.images[0].image_allowed = Some(true);
    let clients = clients(ec2);
    let report = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Untrusted);
    assert!(report.reasons[0].contains("<- ami-0aaaaaaaaaaaaaaaa"), "{:?}", report.reasons);
}

#[tokio::test]
async fn a_criterion_without_image_providers_is_warned_about_in_every_report() {
    let clients = clients(FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running)));
    let policy = TrustPolicy::from_criteria_json(r#"[{"ImageNames": ["vendor"]}]"#).unwrap();
    let config = Config { policy, ..config(Enforcement::Alert) };
    let report = instance_report(handle(&config, &clients, &state_change("running"), &at()).await.unwrap());
    assert!(report.warnings.iter().any(|w| w.contains("no ImageProviders")), "{:?}", report.warnings);
}

#[tokio::test]
async fn a_terminated_instance_is_alerted_once_with_nothing_enforced() {
    let ec2 = FakeEc2 {
        images: vec![vendor_image()],
        ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Terminated))
    };
    let clients = clients(ec2);
    let first =
        instance_report(handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!((first.outcome, first.enforcement), (Outcome::Untrusted, EnforcementTaken::InstanceGone));
    let second =
        instance_report(handle(&config(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert!(second.already_alerted);
    let sent = clients.alerts.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "alerted once");
    assert!(sent[0].body.contains("none: the instance is terminated (nothing to tag or stop)"), "{}", sent[0].body);
    assert!(clients.ec2.calls().iter().all(|c| !c.starts_with("CreateTags") && !c.starts_with("StopInstances")));
}

#[tokio::test]
async fn an_instance_ec2_no_longer_lists_is_judged_by_the_image_its_launch_record_names() {
    let clients = clients(FakeEc2 { images: vec![vendor_image()], ..FakeEc2::default() });
    let event = cloudtrail(json!({"instancesSet": {"items": [
        {"instanceId": INSTANCE, "imageId": VENDOR_AMI, "launchTime": 1769860800000u64}
    ]}}));
    let Report::Launch { instances, .. } = handle(&config(Enforcement::Stop), &clients, &event, &at()).await.unwrap()
    else {
        panic!("not a launch report")
    };
    assert_eq!(instances.len(), 1);
    assert_eq!((instances[0].outcome, instances[0].enforcement), (Outcome::Untrusted, EnforcementTaken::InstanceGone));
    assert_eq!(instances[0].image_id.as_deref(), Some(VENDOR_AMI));
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unlisted_instance_is_judged_by_ec2s_launch_metadata_only_when_ec2_says_it_is_gone() {
    let metadata = |state: Option<InstanceState>| FakeEc2 {
        metadata: vec![(INSTANCE.into(), vendor_image())],
        metadata_state: state,
        ..FakeEc2::default()
    };
    let judged = clients(metadata(Some(InstanceState::Terminated)));
    let report =
        instance_report(handle(&config(Enforcement::Stop), &judged, &state_change("pending"), &at()).await.unwrap());
    assert_eq!((report.outcome, report.enforcement), (Outcome::Untrusted, EnforcementTaken::InstanceGone));
    assert_eq!(report.image_id.as_deref(), Some(VENDOR_AMI));
    // Live by EC2's word, or EC2 does not say (and the event is fresh): EC2 may lag right
    // after the launch, so the retry looks again (and then enforces).
    for state in [Some(InstanceState::Running), None] {
        let lagging = clients(metadata(state.clone()));
        let err = handle(&config(Enforcement::Stop), &lagging, &state_change("pending"), &at()).await.unwrap_err();
        assert!(matches!(err, Error::InstancesNotFound(_)), "{state:?}: {err}");
        assert!(lagging.alerts.sent.lock().unwrap().is_empty(), "{state:?}");
    }
    let unknown = clients(FakeEc2::default());
    let err = handle(&config(Enforcement::Alert), &unknown, &state_change("pending"), &at()).await.unwrap_err();
    assert!(matches!(err, Error::InstancesNotFound(_)), "{err}");
}

#[tokio::test]
async fn ec2s_image_is_judged_when_the_record_names_another() {
    let ec2 = FakeEc2 {
        metadata: vec![(INSTANCE.into(), vendor_image())],
        metadata_state: Some(InstanceState::Terminated),
        ..FakeEc2::default()
    };
    let clients = clients(ec2);
    // A forged record naming a trusted image for an untrusted instance.
    let event =
        cloudtrail(json!({"instancesSet": {"items": [{"instanceId": INSTANCE, "imageId": "ami-0bbbbbbbbbbbbbbbb"}]}}));
    let Report::Launch { instances, .. } = handle(&config(Enforcement::Alert), &clients, &event, &at()).await.unwrap()
    else {
        panic!("not a launch report")
    };
    assert_eq!(instances[0].image_id.as_deref(), Some(VENDOR_AMI));
    assert_eq!(instances[0].outcome, Outcome::Untrusted);
    assert!(instances[0].warnings.iter().any(|w| w.contains("EC2's is judged")), "{:?}", instances[0].warnings);
}

#[tokio::test]
async fn run_instances_records_without_a_response_or_from_a_dry_run_are_answered() {
    let clients = clients(FakeEc2::default());
    let unrecorded =
        instance_report(handle(&config(Enforcement::Alert), &clients, &cloudtrail(json!(null)), &at()).await.unwrap());
    assert_eq!(unrecorded.outcome, Outcome::Skipped);
    assert!(unrecorded.reasons[0].contains("responseElements null"), "{:?}", unrecorded.reasons);
    let mut dry_run = cloudtrail(json!(null));
    dry_run["detail"]["errorCode"] = json!("Client.DryRunOperation");
    let dry = instance_report(handle(&config(Enforcement::Alert), &clients, &dry_run, &at()).await.unwrap());
    assert!(dry.reasons[0].contains("DryRun"), "{:?}", dry.reasons);
    assert!(clients.ec2.calls().is_empty(), "{:?}", clients.ec2.calls());
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let clients = clients(FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running)));
    for payload in [
        json!(null),
        json!({}),
        json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {"state": "running"}}),
    ] {
        let err = handle(&config(Enforcement::Stop), &clients, &payload, &at()).await.unwrap_err();
        assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "MalformedEvent");
    }
    let mut elsewhere = state_change("running");
    elsewhere["region"] = json!("eu-west-1");
    let err = handle(&config(Enforcement::Stop), &clients, &elsewhere, &at()).await.unwrap_err();
    assert!(err.to_string().contains("eu-west-1"), "{err}");
    assert!(clients.ec2.calls().is_empty());
    assert!(clients.alerts.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn cloudtrail_without_instances_is_skipped() {
    let clients = clients(FakeEc2::default());
    let failed = json!({
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "account": ACCOUNT, "region": "us-east-1",
        "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "errorCode": "Client.UnauthorizedOperation", "responseElements": null}
    });
    let report = instance_report(handle(&config(Enforcement::Alert), &clients, &failed, &at()).await.unwrap());
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(report.reasons[0].contains("Client.UnauthorizedOperation"));
    assert!(clients.ec2.calls().is_empty());
}

#[tokio::test]
async fn an_alert_sent_counts_once_by_its_severity_and_a_dry_run_counts_none() {
    let ec2 = || FakeEc2 {
        images: vec![vendor_image()],
        ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
    };
    let real = clients(ec2());
    let sent = handle(&config(Enforcement::Alert), &real, &state_change("running"), &at()).await.unwrap();
    assert_eq!(instance_report(sent.clone()).severity, Some(Severity::High));
    assert_eq!(alerts_sent(&sent), (1, 0, false));
    // The redelivery finds it sent: no second alert, nothing counted.
    let again = handle(&config(Enforcement::Alert), &real, &state_change("running"), &at()).await.unwrap();
    assert!(instance_report(again.clone()).already_alerted);
    assert_eq!(alerts_sent(&again), (0, 0, false));
    // A dry run would alert, and sends nothing: 0, said to be a dry run.
    let dry_clients = clients(ec2());
    let would = handle(&dry(Enforcement::Alert), &dry_clients, &state_change("running"), &at()).await.unwrap();
    assert_eq!(instance_report(would.clone()).would, [WouldDo::Alert]);
    assert_eq!(alerts_sent(&would), (0, 0, true));
}
