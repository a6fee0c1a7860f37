//! Hostile input: whatever the payload, the handler answers a report or a typed error, never
//! panics, never alerts, and keeps answering afterwards. Besides arbitrary JSON (which the
//! envelope parser refuses), valid envelopes of each event it accepts (a state change, a
//! CloudTrail `RunInstances`, a `Scheduled Event`) carry hostile `detail` bodies, so that the
//! handler's own parsing of each is tried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::alert::sns::SnsAlerts;
use amiguard::invocation::Invocation;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::testing::any_json;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use untrusted_ami_alert::{handle, Config, Ec2Client, Error, Ports, Report, StsIdentity};

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

/// Words a handler looks for, offered to the generators as keys and values.
const HINTS: &[&str] = &[
    "instance-id",
    "state",
    "pending",
    "running",
    "stopped",
    "eventSource",
    "ec2.amazonaws.com",
    "eventName",
    "RunInstances",
    "errorCode",
    "Client.DryRunOperation",
    "responseElements",
    "instancesSet",
    "items",
    "instanceId",
    "imageId",
    "recipientAccountId",
    "123456789012",
    "999988887777",
    "i-0123456789abcdef0",
    "i-0",
    "ami-0a1b2c3d4e5f00002",
    "ami-",
    "{}",
];

/// A valid envelope of each accepted event, as EventBridge sends it (this account, this region),
/// whose `detail` is hostile: wholly arbitrary, or the sample's with one field, at any depth of
/// what the handler reads, replaced by anything.
fn hostile_detail() -> impl Strategy<Value = Value> {
    let samples = [
        include_str!("../../../events/untrusted-ami-alert.running.json"),
        include_str!("../../../events/untrusted-ami-alert.cloudtrail-run-instances.json"),
        include_str!("../../../events/untrusted-ami-alert.cloudtrail-published-two-instances.json"),
        include_str!("../../../events/untrusted-ami-alert.scheduled-audit.json"),
    ];
    let paths = [
        "",
        "/instance-id",
        "/state",
        "/eventSource",
        "/eventName",
        "/errorCode",
        "/recipientAccountId",
        "/responseElements",
        "/responseElements/instancesSet",
        "/responseElements/instancesSet/items",
        "/responseElements/instancesSet/items/0",
        "/responseElements/instancesSet/items/0/instanceId",
        "/responseElements/instancesSet/items/0/imageId",
        "/responseElements/instancesSet/items/1/instanceId",
    ];
    (prop::sample::select(samples.to_vec()), prop::sample::select(paths.to_vec()), any_json(HINTS)).prop_map(
        |(sample, path, value)| {
            let mut event: Value = serde_json::from_str(sample).unwrap();
            match event["detail"].pointer_mut(path) {
                Some(field) => *field = value,
                // A field the sample lacks (an error code, a state on an audit): added.
                None => {
                    let key = path.rsplit('/').next().unwrap_or_default();
                    if let Some(detail) = event["detail"].as_object_mut() {
                        detail.insert(key.to_string(), value);
                    }
                }
            }
            event
        },
    )
}

/// Each error type the function answers with (its `Diagnostic`s); AWS errors by their code.
const ERROR_TYPES: &[&str] = &[
    "MalformedEvent",
    "UnexpectedEvent",
    "EventForAnotherAccount",
    "InstanceNotFound",
    "AlertNotSent",
    "AlertInProgress",
    "EnforcementFailed",
];

/// A report (one instance's, a launch's `instances`, an audit's), with its outcome; or an error
/// of one of the function's types, with a message.
fn assert_report_or_typed_error(answer: Result<Report, Error>, payload: &Value) -> Result<(), TestCaseError> {
    match answer {
        Ok(report) => {
            let json = serde_json::to_value(&report).unwrap();
            let outcomes: Vec<&Value> = match json.get("instances").and_then(Value::as_array) {
                Some(instances) => instances.iter().map(|i| &i["outcome"]).collect(),
                None => vec![&json["outcome"]],
            };
            for outcome in outcomes {
                prop_assert!(
                    ["trusted", "untrusted", "skipped", "audit"].iter().any(|o| outcome == o),
                    "a report without an outcome: {json} for {payload}"
                );
            }
        }
        Err(err) => {
            let message = err.to_string();
            let diagnostic = lambda_runtime::Diagnostic::from(err);
            prop_assert!(
                ERROR_TYPES.contains(&diagnostic.error_type.as_str()) || diagnostic.error_type.starts_with("AwsError."),
                "untyped error {diagnostic:?} for {payload}"
            );
            prop_assert!(!message.is_empty() && !diagnostic.error_message.is_empty());
        }
    }
    Ok(())
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
            findings: None,
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
        let answer = runtime().block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
        assert_report_or_typed_error(answer, &payload)?;
        prop_assert_eq!(mocked.publish.num_calls(), 0);
    }

    #[test]
    fn arbitrary_json_in_valid_envelopes_never_panics_nor_alerts(payload in hostile_detail()) {
        let mocked = clients();
        let answer = runtime().block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
        assert_report_or_typed_error(answer, &payload)?;
        prop_assert_eq!(mocked.publish.num_calls(), 0);
    }

    #[test]
    fn mutated_events_never_panic_nor_alert(payload in mutated_event()) {
        let mocked = clients();
        let answer = runtime().block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
        assert_report_or_typed_error(answer, &payload)?;
        prop_assert_eq!(mocked.publish.num_calls(), 0);
    }
}

#[test]
fn still_alive_after_a_hundred_random_payloads() {
    let rt = runtime();
    let mocked = clients();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (arbitrary, enveloped) = (any_json(&[]), hostile_detail());
    for n in 0..100 {
        // Half of them past the envelope parser, into the handler's own.
        let payload = if n % 2 == 0 {
            arbitrary.new_tree(&mut runner).unwrap().current()
        } else {
            enveloped.new_tree(&mut runner).unwrap().current()
        };
        let answer = rt.block_on(handle(&config(), &mocked.clients, &payload, &when_the_samples_happened()));
        assert_report_or_typed_error(answer, &payload).unwrap();
    }
    assert_eq!(mocked.publish.num_calls(), 0);
    let audit: Value =
        serde_json::from_str(include_str!("../../../events/untrusted-ami-alert.scheduled-audit.json")).unwrap();
    let report = rt.block_on(handle(&config(), &mocked.clients, &audit, &when_the_samples_happened())).unwrap();
    let report = serde_json::to_value(report).unwrap();
    assert_eq!(report["outcome"], "audit");
    assert_eq!(report["audited"], 0);
}
