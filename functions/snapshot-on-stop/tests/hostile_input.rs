//! Hostile input: whatever the payload, the handler answers `Ok` or a typed error, never panics,
//! and keeps answering afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::invocation::Invocation;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::testing::any_json;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use snapshot_on_stop::{handle, Config, Ec2Client, Error, Outcome, Ports, SnapshotScope};

/// The sample stop event with one field (possibly nested) replaced by anything.
fn mutated_event() -> impl Strategy<Value = Value> {
    let fields = ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"];
    (prop::sample::select(fields.to_vec()), any_json(&[]), any::<bool>()).prop_map(|(field, value, in_detail)| {
        let mut event: Value =
            serde_json::from_str(include_str!("../../../events/snapshot-on-stop.stopped.json")).unwrap();
        if in_detail {
            let key = if field.len() % 2 == 0 { "instance-id" } else { "state" };
            event["detail"][key] = value;
        } else {
            event[field] = value;
        }
        event
    })
}

/// What a hostile `detail` is made of: the fields the handlers read, and values that look like
/// what they expect.
const DETAIL_HINTS: &[&str] = &[
    "instance-id",
    "state",
    "ImageId",
    "State",
    "ErrorMessage",
    "i-0123456789abcdef0",
    "i-",
    "stopped",
    "terminated",
    "ami-0a1b2c3d4e5f60718",
    "ami-",
    "available",
    "failed",
];

/// A valid envelope of an event snapshot-on-stop accepts (an instance's state change, an AMI's)
/// whose `detail` is hostile: anything, or the expected fields with anything in them, so that
/// the handlers' own parsing is tried, not only the envelope's.
fn envelope_with_hostile_detail() -> impl Strategy<Value = Value> {
    let samples = [
        include_str!("../../../events/snapshot-on-stop.stopped.json"),
        include_str!("../../../events/snapshot-on-stop.terminated.json"),
        include_str!("../../../events/snapshot-on-stop.ami-available.json"),
        include_str!("../../../events/snapshot-on-stop.ami-failed.json"),
    ];
    let detail = prop_oneof![
        any_json(DETAIL_HINTS),
        prop::collection::btree_map(prop::sample::select(&DETAIL_HINTS[..5]), any_json(DETAIL_HINTS), 0..5)
            .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
    ];
    (prop::sample::select(samples.to_vec()), detail).prop_map(|(sample, detail)| {
        let mut event: Value = serde_json::from_str(sample).unwrap();
        event["detail"] = detail;
        event
    })
}

/// Anything at all, or a valid envelope with a hostile `detail`.
fn any_payload() -> impl Strategy<Value = Value> {
    prop_oneof![any_json(&[]), envelope_with_hostile_detail()]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn clients() -> Ports<Ec2Client, MemoryLedger> {
    Ports { ec2: ec2(), ledger: Some(MemoryLedger::new()), alerts: None, region: "us-east-1".into(), findings: None }
}

fn now() -> Invocation {
    Invocation::at(chrono::Utc::now())
}

fn ec2() -> Ec2Client {
    // Every instance is unknown: a well-formed event ends as `skipped`, and nothing is called
    // that could change anything.
    let unknown = mock!(Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build());
    Ec2Client::new(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&unknown]))
}

fn config() -> Config {
    Config { scope: SnapshotScope::All, ..Config::default() }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_is_an_answer_or_a_typed_error(payload in any_payload()) {
        let result = runtime().block_on(handle(&clients(), &config(), payload, &now()));
        match result {
            Ok(report) => prop_assert_eq!(report.outcome, Outcome::Skipped),
            Err(err) => prop_assert!(matches!(err, Error::Event(_)), "{}", err),
        }
    }

    #[test]
    fn mutated_events_are_an_answer_or_a_typed_error(payload in mutated_event()) {
        let result = runtime().block_on(handle(&clients(), &config(), payload, &now()));
        match result {
            Ok(report) => prop_assert_eq!(report.outcome, Outcome::Skipped),
            Err(err) => prop_assert!(matches!(err, Error::Event(_)), "{}", err),
        }
    }
}

#[test]
fn still_alive_after_a_hundred_random_payloads() {
    let rt = runtime();
    let clients = clients();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..100 {
        let payload = any_payload().new_tree(&mut runner).unwrap().current();
        match rt.block_on(handle(&clients, &config(), payload.clone(), &now())) {
            // Nothing exists here: whatever the payload, nothing is ever made or retired.
            Ok(report) => assert_eq!(report.outcome, Outcome::Skipped, "{payload}: {report:?}"),
            Err(err) => assert!(matches!(err, Error::Event(_)), "{payload}: {err}"),
        }
    }
    let mut event: Value = serde_json::from_str(include_str!("../../../events/snapshot-on-stop.stopped.json")).unwrap();
    event["detail"]["instance-id"] = json!("i-0000000000000beef");
    let report = rt.block_on(handle(&clients, &config(), event, &now())).unwrap();
    assert_eq!(report.outcome, Outcome::Skipped);
    assert_eq!(report.reason.as_deref(), Some("instance no longer exists"));
}
