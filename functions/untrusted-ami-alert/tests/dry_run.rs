//! `DRY_RUN` against fakes: judge and report everything, with what a real run would do; change
//! nothing (no publish, no tag, no stop, no ledger write).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Mutex;

use amiguard::alert::once::{self as sent, AlertKey};
use serde_json::json;
use support::*;
use untrusted_ami_alert::core::enforce::{Enforcement, EnforcementTaken, InstanceState};
use untrusted_ami_alert::ports::Records;
use untrusted_ami_alert::{handle, Outcome, Report, WouldDo};

#[tokio::test]
async fn a_dry_run_launch_says_what_it_would_do_and_changes_nothing() {
    for (state, event, expected) in [
        (InstanceState::Running, "running", vec![WouldDo::Tag, WouldDo::Stop, WouldDo::Alert]),
        (InstanceState::Pending, "pending", vec![WouldDo::Tag, WouldDo::StopWhenRunning, WouldDo::Alert]),
    ] {
        let clients =
            clients(FakeEc2 { images: vec![vendor_image()], ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, state)) });
        let report =
            instance_report(handle(&dry(Enforcement::Stop), &clients, &state_change(event), &at()).await.unwrap());
        assert_eq!((report.outcome, report.dry_run), (Outcome::Untrusted, true));
        assert_eq!(report.would, expected, "{event}");
        assert_eq!((report.enforcement, report.alert_message_id.as_deref()), (EnforcementTaken::None, None));
        assert!(report.reasons[0].contains("111122223333"), "the finding is named: {:?}", report.reasons);
        assert_changed_nothing(&clients);
        let json = serde_json::to_value(Report::Instance(report)).unwrap();
        assert_eq!((&json["dry_run"], &json["would"][0]), (&json!(true), &json!("tag")));
    }
    // A trusted launch: nothing would be done.
    let own = own_image();
    let clients = clients(FakeEc2 {
        images: vec![own.clone()],
        ..FakeEc2::with(instance(INSTANCE, &own.image_id, InstanceState::Running))
    });
    let trusted =
        instance_report(handle(&dry(Enforcement::Stop), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!((trusted.outcome, trusted.dry_run, trusted.would.len()), (Outcome::Trusted, true, 0));
}

#[tokio::test]
async fn a_dry_run_reads_the_sent_alerts_and_says_an_alert_sent_before_would_not_repeat() {
    let ec2 = FakeEc2 {
        images: vec![vendor_image()],
        ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
    };
    let clients = clients(ec2);
    handle(&config(Enforcement::Tag), &clients, &state_change("running"), &at()).await.unwrap();
    let (writes, sent, calls) =
        (clients.ledger.as_ref().unwrap().writes(), clients.alerts.sent.lock().unwrap().len(), clients.ec2.calls());
    let report =
        instance_report(handle(&dry(Enforcement::Tag), &clients, &state_change("running"), &at()).await.unwrap());
    assert!(report.already_alerted && report.dry_run);
    assert_eq!(report.would, [WouldDo::Tag], "tagged again (idempotent), not alerted again");
    assert_eq!(clients.ledger.as_ref().unwrap().writes(), writes);
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), sent);
    assert_eq!(clients.ec2.calls().iter().filter(|c| c.starts_with("CreateTags")).count(), 1, "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_neither_waits_for_nor_fails_on_a_claim_another_delivery_holds() {
    let ec2 = FakeEc2 {
        images: vec![vendor_image()],
        ..FakeEc2::with(instance(INSTANCE, VENDOR_AMI, InstanceState::Running))
    };
    let clients = clients(ec2);
    let store = clients.ledger.as_ref().unwrap();
    let key = AlertKey::untrusted("us-east-1", INSTANCE, VENDOR_AMI);
    let sent::Claim::Claimed(_held) = sent::claim(store, &key, "other", now()).await.unwrap() else {
        panic!("not claimed")
    };
    let writes = store.writes();
    let started = tokio::time::Instant::now();
    let report =
        instance_report(handle(&dry(Enforcement::Alert), &clients, &state_change("running"), &at()).await.unwrap());
    assert_eq!(started.elapsed(), std::time::Duration::ZERO, "a dry run does not wait");
    assert!(report.would.is_empty() && !report.already_alerted);
    assert!(report.warnings.iter().any(|w| w.contains("another delivery holds")), "{:?}", report.warnings);
    assert_eq!(store.writes(), writes);
}

#[tokio::test]
async fn a_dry_run_of_many_launches_says_which_alerts_would_fold_and_takes_no_slot() {
    let ids: Vec<String> = (1..=5).map(|n| format!("i-0{n:016x}")).collect();
    let instances = ids.iter().map(|id| instance(id, VENDOR_AMI, InstanceState::Running)).collect();
    let clients =
        clients(FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() });
    let items: Vec<serde_json::Value> = ids.iter().map(|id| json!({"instanceId": id, "imageId": VENDOR_AMI})).collect();
    let event = cloudtrail(json!({"instancesSet": {"items": items}}));
    let Report::Launch { instances, .. } = handle(&dry(Enforcement::Alert), &clients, &event, &at()).await.unwrap()
    else {
        panic!("not a launch report")
    };
    let would: Vec<Vec<WouldDo>> = instances.iter().map(|i| i.would.clone()).collect();
    use WouldDo::{Alert, AlertFollowUp, FoldAlert};
    assert_eq!(would, [vec![Alert], vec![Alert], vec![Alert], vec![AlertFollowUp], vec![FoldAlert]]);
    assert!(instances.iter().all(|i| i.dry_run && !i.alert_folded));
    assert_changed_nothing(&clients);
    // Slots real alerts took this hour count too.
    let store = clients.ledger.as_ref().unwrap();
    for _ in 0..3 {
        store.claim_slot("us-east-1", VENDOR_AMI, now()).await.unwrap();
    }
    let mut one = state_change("running");
    one["detail"]["instance-id"] = json!(ids[0]);
    let next = instance_report(handle(&dry(Enforcement::Alert), &clients, &one, &at()).await.unwrap());
    assert_eq!(next.would, [AlertFollowUp]);
}

#[tokio::test]
async fn a_dry_run_audit_counts_its_digest_sends_none_tags_none_and_keeps_the_folded_records() {
    let instances = vec![
        instance("i-0000000000000000b", VENDOR_AMI, InstanceState::Running),
        instance("i-0000000000000000c", VENDOR_AMI, InstanceState::Stopped),
    ];
    let clients =
        clients(FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() });
    let store = clients.ledger.as_ref().unwrap();
    // A folded launch alert of an instance gone since: a real digest would name it.
    store.keep_folded("us-east-1", &folded_alert("i-0000000000000000a"), now()).await.unwrap();
    let before = store.items();
    let writes = store.writes();
    let Report::Audit(audit) = handle(&dry(Enforcement::Stop), &clients, &audit_event(), &at()).await.unwrap() else {
        panic!("not an audit")
    };
    assert!(audit.dry_run);
    assert_eq!((audit.audited, audit.alerts_sent, audit.alerts_would_send), (2, 0, Some(3)));
    let mut found: Vec<(&str, &[WouldDo])> =
        audit.untrusted.iter().map(|f| (f.instance_id.as_str(), f.would.as_slice())).collect();
    found.sort();
    use WouldDo::{AlertInDigest, Tag};
    assert_eq!(
        found,
        [
            ("i-0000000000000000a", &[AlertInDigest][..]),
            ("i-0000000000000000b", &[Tag, AlertInDigest][..]),
            ("i-0000000000000000c", &[Tag, AlertInDigest][..]),
        ],
        "the audit tags, never stops"
    );
    assert!(clients.alerts.sent.lock().unwrap().is_empty());
    assert!(clients.ec2.calls().iter().all(|c| !c.starts_with("CreateTags") && !c.starts_with("StopInstances")));
    assert_eq!((store.writes(), store.items()), (writes, before), "the ledger is as it was");
    // The real audit after it still finds everything to send.
    let Report::Audit(real) = handle(&config(Enforcement::Tag), &clients, &audit_event(), &at()).await.unwrap() else {
        panic!("not an audit")
    };
    assert_eq!((real.alerts_sent, real.alerts_would_send, real.dry_run), (3, None, false));
}
