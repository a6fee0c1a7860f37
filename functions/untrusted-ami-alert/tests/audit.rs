//! The audit against fakes: its digest (in parts when large), and the launch alerts folded after
//! three an hour that the digest then sends from their records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Mutex;

use serde_json::json;
use support::*;
use untrusted_ami_alert::core::enforce::{Enforcement, InstanceState, LaunchedInstance};
use untrusted_ami_alert::ports::Records;
use untrusted_ami_alert::{handle, Config, Error, Report};

#[tokio::test]
async fn a_large_audit_sends_its_digest_in_parts_and_a_refused_part_is_sent_by_the_retry() {
    let instances: Vec<LaunchedInstance> =
        (0..120).map(|n| instance(&format!("i-0{n:016x}"), VENDOR_AMI, InstanceState::Running)).collect();
    let ec2 = FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() };
    let mut clients = clients(ec2);
    clients.alerts.fail = true;
    let err = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap_err();
    assert!(matches!(err, Error::NotGuarded(ref f) if f.len() == 120), "{err}");
    clients.alerts.fail = false;
    let Report::Audit(audit) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
    else {
        panic!("not an audit")
    };
    assert_eq!(audit.alerts_sent, 120);
    let sent = clients.alerts.sent.lock().unwrap().clone();
    let sizes: Vec<&str> = sent.iter().map(|a| a.subject.as_str()).collect();
    assert_eq!(sent.len(), 3, "{sizes:?}");
    assert!(sent[0].subject.contains("on 50 instances") && sent[0].subject.contains("part 1 of 3"), "{sizes:?}");
    assert!(sent[2].subject.contains("on 20 instances") && sent[2].subject.contains("part 3 of 3"), "{sizes:?}");
    assert!(sent.iter().all(|a| a.body.len() < 200_000));
    // Sent means sent: the next audit finds nothing new.
    let Report::Audit(again) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
    else {
        panic!("not an audit")
    };
    assert_eq!(again.alerts_sent, 0);
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn launch_alerts_fold_after_three_an_hour_unless_folding_is_off() {
    let ids: Vec<String> = (1..=5).map(|n| format!("i-0{n:016x}")).collect();
    let launches = |fold: bool| {
        let ids = ids.clone();
        async move {
            let instances = ids.iter().map(|id| instance(id, VENDOR_AMI, InstanceState::Running)).collect();
            let clients = clients(FakeEc2 {
                instances: Mutex::new(instances),
                images: vec![vendor_image()],
                ..FakeEc2::default()
            });
            let config = Config { fold_launch_alerts: fold, ..config(Enforcement::Alert) };
            let mut folded = 0;
            for id in &ids {
                let mut event = state_change("running");
                event["detail"]["instance-id"] = json!(id);
                folded +=
                    usize::from(instance_report(handle(&config, &clients, &event, &at()).await.unwrap()).alert_folded);
            }
            let sent = clients.alerts.sent.lock().unwrap().len();
            (sent, folded)
        }
    };
    assert_eq!(launches(true).await, (4, 1), "three alerts, the follow-up, one folded");
    assert_eq!(launches(false).await, (5, 0), "no audit to name the folded: every launch alerts");
}

#[tokio::test]
async fn a_folded_alert_is_sent_by_the_digest_from_its_record_whatever_became_of_its_instance() {
    // One instance gone (EC2 lists nothing), one still running but trusted now (its image is
    // the account's own): neither is alerted by this audit's judging, both by their records.
    let own = own_image();
    let ec2 = FakeEc2 {
        images: vec![own.clone()],
        ..FakeEc2::with(instance("i-0000000000000000b", &own.image_id, InstanceState::Running))
    };
    let clients = clients(ec2);
    let store = clients.ledger.as_ref().unwrap();
    for instance in ["i-0000000000000000a", "i-0000000000000000b"] {
        store.keep_folded("us-east-1", &folded_alert(instance), now()).await.unwrap();
    }
    let Report::Audit(audit) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
    else {
        panic!("not an audit")
    };
    assert_eq!(audit.alerts_sent, 2);
    let sent = clients.alerts.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "one digest");
    assert!(sent[0].body.contains("i-0000000000000000a") && sent[0].body.contains("i-0000000000000000b"));
    assert!(audit.untrusted.iter().any(|f| f.instance_id == "i-0000000000000000a"), "the gone one is a finding");
    assert!(store.folded("us-east-1").await.unwrap().0.is_empty(), "sent: forgotten");
    // Nothing new: the next audit sends nothing.
    let Report::Audit(again) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
    else {
        panic!("not an audit")
    };
    assert_eq!(again.alerts_sent, 0);
    assert_eq!(clients.alerts.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_digest_keeps_the_folded_records_for_the_retry() {
    let clients = clients(FakeEc2::default());
    let store = clients.ledger.as_ref().unwrap();
    store.keep_folded("us-east-1", &folded_alert("i-0000000000000000a"), now()).await.unwrap();
    let mut clients = clients;
    clients.alerts.fail = true;
    assert!(handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.is_err());
    let store = clients.ledger.as_ref().unwrap();
    assert_eq!(store.folded("us-east-1").await.unwrap().0.len(), 1, "kept");
    clients.alerts.fail = false;
    let Report::Audit(audit) = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap()
    else {
        panic!("not an audit")
    };
    assert_eq!(audit.alerts_sent, 1);
}

#[tokio::test]
async fn an_audit_counts_each_instance_its_digest_alerts() {
    let instances = vec![
        instance("i-0000000000000000b", VENDOR_AMI, InstanceState::Running),
        instance("i-0000000000000000c", VENDOR_AMI, InstanceState::Stopped),
    ];
    let clients =
        clients(FakeEc2 { instances: Mutex::new(instances), images: vec![vendor_image()], ..FakeEc2::default() });
    let audit = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap();
    let Report::Audit(found) = &audit else { panic!("not an audit") };
    assert_eq!(found.alerts_sent, 2);
    assert_eq!(alerts_sent(&audit), (2, 0, false));
    let again = handle(&config(Enforcement::Alert), &clients, &audit_event(), &at()).await.unwrap();
    assert_eq!(alerts_sent(&again), (0, 0, false));
}
