//! Hostile input: whatever the payload, the handler answers `Ok` or a typed error, never panics,
//! never alerts, and keeps answering afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::alert::sns::SnsAlerts;
use amiguard::invocation::Invocation;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::testing::any_json;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::Value;
use untrusted_ami_alert::{handle, Config, Ec2Client, Ports, StsIdentity};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:amiguard-alerts";

/// One of the samples, with one top-level or detail field replaced by anything.
fn mutated_event() -> impl Strategy<Value = Value> {
    let samples = [
        include_str!("../../../events/untrusted-ami-alert.running.json"),
        include_str!("../../../events/untrusted-ami-alert.pending.json"),
        include_str!("../../../events/untrusted-ami-alert.cloudtrail-run-instances.json"),
        include_str!("../../../events/untrusted-ami-alert.scheduled-audit.json"),
    ];
    let fields = [
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "detail",
        "instance-id",
        "state",
        "responseElements",
        "eventName",
    ];
    (prop::sample::select(samples.to_vec()), prop::sample::select(fields.to_vec()), any_json(&[])).prop_map(
        |(sample, field, value)| {
            let mut event: Value = serde_json::from_str(sample).unwrap();
            if event.get(field).is_some() || field.contains('-') && field != "instance-id" {
                event[field] = value;
            } else if event["detail"].is_object() {
                event["detail"][field] = value;
            }
            event
        },
    )
}

struct Mocked {
    clients: Ports<Ec2Client, SnsAlerts, StsIdentity, MemoryLedger>,
    publish: Rule,
}

/// No instance exists (nor did: EC2 has no launch metadata for it); every call that could change
/// something is counted.
fn clients() -> Mocked {
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder().build());
    let metadata = mock!(aws_sdk_ec2::Client::describe_instance_image_metadata).then_output(|| {
        aws_sdk_ec2::operation::describe_instance_image_metadata::DescribeInstanceImageMetadataOutput::builder().build()
    });
    let publish = mock!(aws_sdk_sns::Client::publish)
        .then_output(|| aws_sdk_sns::operation::publish::PublishOutput::builder().message_id("m-1").build());
    let identity = mock!(aws_sdk_sts::Client::get_caller_identity).then_output(|| {
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput::builder().account("123456789012").build()
    });
    Mocked {
        clients: Ports {
            ec2: Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &metadata])),
            alerts: SnsAlerts::new(mock_client!(aws_sdk_sns, RuleMode::MatchAny, [&publish]), TOPIC),
            identity: StsIdentity::new(mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&identity])),
            ledger: Some(MemoryLedger::new()),
            region: "us-east-1".into(),
        },
        publish,
    }
}

fn config() -> Config {
    Config::from_env(&|name: &str| (name == "ALERT_TOPIC_ARN").then(|| TOPIC.to_string())).unwrap()
}

/// The samples' own time: their launches are fresh, so an instance EC2 does not list is one it may
/// not list yet (retried), not one that is gone (judged by the record's image, and alerted).
fn when_the_samples_happened() -> Invocation {
    Invocation::at(chrono::DateTime::parse_from_rfc3339("2026-01-31T12:05:00Z").unwrap().into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_never_panics_nor_alerts(payload in any_json(&[])) {
        let mocked = clients();
        let _typed: Result<_, untrusted_ami_alert::Error> =
            runtime().block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
        prop_assert_eq!(mocked.publish.num_calls(), 0);
    }

    #[test]
    fn mutated_events_never_panic_nor_alert(payload in mutated_event()) {
        let mocked = clients();
        let _typed: Result<_, untrusted_ami_alert::Error> =
            runtime().block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
        prop_assert_eq!(mocked.publish.num_calls(), 0);
    }
}

#[test]
fn still_alive_after_a_hundred_random_payloads() {
    let rt = runtime();
    let mocked = clients();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..100 {
        let payload = any_json(&[]).new_tree(&mut runner).unwrap().current();
        let _ = rt.block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
    }
    let audit: Value =
        serde_json::from_str(include_str!("../../../events/untrusted-ami-alert.scheduled-audit.json")).unwrap();
    let report = rt.block_on(handle(&config(), &mocked.clients, &audit, &when_the_samples_happened())).unwrap();
    let report = serde_json::to_value(report).unwrap();
    assert_eq!(report["outcome"], "audit");
    assert_eq!(report["audited"], 0);
}
