//! The events untrusted-ami-alert answers, parsed from the EventBridge envelope: a state change, a
//! CloudTrail `RunInstances` (or another CloudTrail call, or a failed one), and the scheduled
//! audit. Anything else is an error that changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use amiguard::events::{parse_envelope, EventError};

pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
pub const CLOUDTRAIL_API_CALL: &str = "AWS API Call via CloudTrail";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// What the event asks for, with where and when it happened ([`Origin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An instance changed state (any state: the handler skips all but `pending` and `running`).
    StateChange { instance_id: String, state: String, origin: Origin },
    /// `RunInstances` launched these instances (in the order of the call, without repeats), each
    /// with the image the record says it was launched from (a launch-template launch names no
    /// image in its request; its response does).
    RunInstances { instances: Vec<Launched>, origin: Origin },
    /// `RunInstances` failed (`errorCode`; a `DryRun` call answers `Client.DryRunOperation`):
    /// nothing was launched.
    RunInstancesFailed { error_code: String, origin: Origin },
    /// `RunInstances` without an error whose record holds no response (`"responseElements":
    /// null`, as CloudTrail writes when the response was too large or not recorded): the
    /// instances are unknown here; their state-change events judge them.
    RunInstancesUnrecorded { origin: Origin },
    /// A CloudTrail event of another EC2 call: the rule sends more than it should.
    OtherApiCall { event_name: String, origin: Origin },
    /// The scheduled audit.
    Audit { origin: Origin },
}

impl Event {
    /// Where and when the envelope says the event happened.
    pub fn origin(&self) -> &Origin {
        match self {
            Self::StateChange { origin, .. }
            | Self::RunInstances { origin, .. }
            | Self::RunInstancesFailed { origin, .. }
            | Self::RunInstancesUnrecorded { origin }
            | Self::OtherApiCall { origin, .. }
            | Self::Audit { origin } => origin,
        }
    }
}

/// One instance a `RunInstances` record says was launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub instance_id: String,
    /// The record's `imageId` for it (EC2's own answer to the call).
    pub image_id: Option<String>,
}

/// What the envelope says of any event: each a field a direct invoker may leave out, or write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The account the envelope says the event is about, when it says. Never `self` (that is
    /// STS's answer): an event naming another account is refused.
    pub account: Option<String>,
    /// A CloudTrail record's `recipientAccountId`: the account that received the call.
    pub recipient_account: Option<String>,
    pub region: Option<String>,
    /// When the event happened, when the envelope says.
    pub time: Option<DateTime<Utc>>,
}

impl Origin {
    /// Every account the event names (the envelope's, a CloudTrail record's recipient).
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        self.account.iter().chain(&self.recipient_account).map(String::as_str)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateChangeDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    event_source: String,
    event_name: String,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    recipient_account_id: Option<String>,
    /// Read loosely: published records carry many shapes (`launchTime` as epoch milliseconds,
    /// sometimes a float; nested sets of every kind). Only the instance and image ids are read.
    #[serde(default)]
    response_elements: Option<serde_json::Value>,
}

pub fn parse(payload: &serde_json::Value) -> Result<Event, EventError> {
    let envelope = parse_envelope::<serde_json::Value>(payload)?;
    let account = envelope.account.filter(|a| !a.trim().is_empty());
    // Said after what the event is: an event from elsewhere is unexpected, whatever its account.
    let bad_account = account.as_deref().and_then(|a| account_error("account", a));
    let origin = Origin {
        account,
        recipient_account: None,
        region: envelope.region.filter(|r| !r.trim().is_empty()),
        time: envelope.time,
    };
    let source = envelope.source.as_str();
    let event = match envelope.detail_type.as_str() {
        STATE_CHANGE => {
            expect_source(source, &["aws.ec2"])?;
            let detail: StateChangeDetail = detail(envelope.detail)?;
            check_instance_id(&detail.instance_id)?;
            Event::StateChange { instance_id: detail.instance_id, state: detail.state, origin }
        }
        CLOUDTRAIL_API_CALL => {
            expect_source(source, &["aws.ec2"])?;
            cloudtrail(detail(envelope.detail)?, origin)?
        }
        SCHEDULED_EVENT => {
            expect_source(source, &amiguard::events::SCHEDULE_SOURCES)?;
            amiguard::events::scheduled_detail(envelope.detail)?;
            Event::Audit { origin }
        }
        other => {
            return Err(EventError::Unexpected(format!(
                "detail-type {other:?}: expected {STATE_CHANGE:?}, {CLOUDTRAIL_API_CALL:?} or {SCHEDULED_EVENT:?}"
            )))
        }
    };
    match bad_account {
        Some(err) => Err(err),
        None => Ok(event),
    }
}

/// The error for an account field that is not a 12-digit account id.
fn account_error(field: &str, account: &str) -> Option<EventError> {
    (!amiguard::aws_words::is_account_id(account))
        .then(|| EventError::Malformed(format!("{field} {account:?}: expected a 12-digit account id")))
}

fn cloudtrail(detail: CloudTrailDetail, mut origin: Origin) -> Result<Event, EventError> {
    if detail.event_source != "ec2.amazonaws.com" {
        return Err(EventError::Unexpected(format!(
            "CloudTrail eventSource {:?}: expected \"ec2.amazonaws.com\"",
            detail.event_source
        )));
    }
    origin.recipient_account = detail.recipient_account_id.filter(|a| !a.trim().is_empty());
    if let Some(err) = origin.recipient_account.as_deref().and_then(|a| account_error("detail.recipientAccountId", a)) {
        return Err(err);
    }
    if detail.event_name != "RunInstances" {
        return Ok(Event::OtherApiCall { event_name: detail.event_name, origin });
    }
    if let Some(error_code) = detail.error_code.filter(|c| !c.is_empty()) {
        return Ok(Event::RunInstancesFailed { error_code, origin });
    }
    let Some(response) = detail.response_elements.filter(|r| !r.is_null()) else {
        return Ok(Event::RunInstancesUnrecorded { origin });
    };
    let items = response.pointer("/instancesSet/items").and_then(serde_json::Value::as_array);
    let Some(items) = items.filter(|items| !items.is_empty()) else {
        return Err(EventError::Malformed(
            "detail.responseElements.instancesSet.items: no instance in a RunInstances response".to_string(),
        ));
    };
    let mut instances: Vec<Launched> = Vec::new();
    for item in items {
        let instance_id = item.get("instanceId").and_then(serde_json::Value::as_str).ok_or_else(|| {
            EventError::Malformed("detail.responseElements.instancesSet.items[].instanceId: missing".to_string())
        })?;
        check_instance_id(instance_id)?;
        let image_id = item.get("imageId").and_then(serde_json::Value::as_str).filter(|id| id.starts_with("ami-"));
        if !instances.iter().any(|i| i.instance_id == instance_id) {
            instances.push(Launched { instance_id: instance_id.to_string(), image_id: image_id.map(str::to_string) });
        }
    }
    Ok(Event::RunInstances { instances, origin })
}

fn detail<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, EventError> {
    serde_json::from_value(value).map_err(|e| EventError::Malformed(format!("detail: {e}")))
}

/// Events from `aws.*` sources can only come from AWS (PutEvents refuses them), so checking the
/// source also keeps forged events out.
fn expect_source(source: &str, expected: &[&str]) -> Result<(), EventError> {
    if expected.contains(&source) {
        Ok(())
    } else {
        Err(EventError::Unexpected(format!("source {source:?}: expected {}", expected.join(" or "))))
    }
}

/// `i-` and hexadecimal digits: anything else would only come back from EC2 as a malformed id.
fn check_instance_id(id: &str) -> Result<(), EventError> {
    let valid = id
        .strip_prefix("i-")
        .is_some_and(|hex| (8..=32).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if valid {
        Ok(())
    } else {
        Err(EventError::Malformed(format!("instance id {id:?}: expected i- followed by hexadecimal digits")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state_change(state: &str) -> serde_json::Value {
        json!({
            "version": "0", "id": "e1", "detail-type": STATE_CHANGE, "source": "aws.ec2",
            "account": "123456789012", "time": "2026-01-31T12:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"],
            "detail": {"instance-id": "i-0123456789abcdef0", "state": state}
        })
    }

    fn run_instances(detail: serde_json::Value) -> serde_json::Value {
        json!({"detail-type": CLOUDTRAIL_API_CALL, "source": "aws.ec2", "account": "123456789012", "region": "us-east-1", "detail": detail})
    }

    /// Where `run_instances` events come from.
    fn the_accounts() -> Origin {
        Origin { account: Some("123456789012".into()), region: Some("us-east-1".into()), ..Origin::default() }
    }

    #[test]
    fn a_state_change() {
        let event = parse(&state_change("pending")).unwrap();
        assert_eq!(
            event,
            Event::StateChange {
                instance_id: "i-0123456789abcdef0".into(),
                state: "pending".into(),
                origin: Origin {
                    account: Some("123456789012".into()),
                    recipient_account: None,
                    region: Some("us-east-1".into()),
                    time: Some(chrono::DateTime::parse_from_rfc3339("2026-01-31T12:00:00Z").unwrap().into()),
                },
            }
        );
    }

    #[test]
    fn a_run_instances_call_lists_its_instances_once_each() {
        let event = parse(&run_instances(json!({
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "awsRegion": "us-east-1",
            "responseElements": {"instancesSet": {"items": [
                {"instanceId": "i-0aaaaaaaaaaaaaaaa", "imageId": "ami-1"},
                {"instanceId": "i-0bbbbbbbbbbbbbbbb", "imageId": "ami-1"},
                {"instanceId": "i-0aaaaaaaaaaaaaaaa", "imageId": "ami-1"}
            ]}}
        })))
        .unwrap();
        let launched = |id: &str| Launched { instance_id: id.into(), image_id: Some("ami-1".into()) };
        assert_eq!(
            event,
            Event::RunInstances {
                instances: vec![launched("i-0aaaaaaaaaaaaaaaa"), launched("i-0bbbbbbbbbbbbbbbb")],
                origin: the_accounts(),
            }
        );
    }

    #[test]
    fn every_account_an_event_names_is_read_and_must_be_an_account_id() {
        let mut detail = json!({
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
            "recipientAccountId": "999988887777", "responseElements": null
        });
        let event = parse(&run_instances(detail.clone())).unwrap();
        assert_eq!(event.origin().accounts().collect::<Vec<_>>(), ["123456789012", "999988887777"]);
        detail["recipientAccountId"] = json!("");
        assert_eq!(parse(&run_instances(detail.clone())).unwrap().origin().accounts().count(), 1);
        detail["recipientAccountId"] = json!("me");
        let err = parse(&run_instances(detail)).unwrap_err();
        assert!(matches!(&err, EventError::Malformed(m) if m.contains("recipientAccountId")), "{err}");
        assert_eq!(parse(&state_change("running")).unwrap().origin().accounts().collect::<Vec<_>>(), ["123456789012"]);
    }

    #[test]
    fn a_failed_or_other_call_is_recognised() {
        let failed = parse(&run_instances(json!({
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
            "errorCode": "Client.UnauthorizedOperation", "responseElements": null
        })))
        .unwrap();
        assert_eq!(
            failed,
            Event::RunInstancesFailed { error_code: "Client.UnauthorizedOperation".into(), origin: the_accounts() }
        );
        let other =
            parse(&run_instances(json!({"eventSource": "ec2.amazonaws.com", "eventName": "StopInstances"}))).unwrap();
        assert_eq!(other, Event::OtherApiCall { event_name: "StopInstances".into(), origin: the_accounts() });
    }

    #[test]
    fn a_run_instances_record_without_a_response_or_a_dry_run_is_answered_not_refused() {
        for response in [json!(null), json!("absent")] {
            let mut detail = json!({"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances"});
            if !response.is_string() {
                detail["responseElements"] = response;
            }
            assert_eq!(
                parse(&run_instances(detail)).unwrap(),
                Event::RunInstancesUnrecorded { origin: the_accounts() }
            );
        }
        let dry_run = parse(&run_instances(json!({
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
            "errorCode": "Client.DryRunOperation", "errorMessage": "Request would have succeeded, but DryRun flag is set."
        })));
        assert_eq!(
            dry_run.unwrap(),
            Event::RunInstancesFailed { error_code: "Client.DryRunOperation".into(), origin: the_accounts() }
        );
    }

    #[test]
    fn a_launch_from_several_images_and_odd_field_types_is_read() {
        let event = parse(&run_instances(json!({
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
            "requestParameters": {"launchTemplate": {"launchTemplateId": "lt-0123"}},
            "responseElements": {"instancesSet": {"items": [
                {"instanceId": "i-0aaaaaaaaaaaaaaaa", "imageId": "ami-1", "launchTime": 1712070786000u64},
                {"instanceId": "i-0bbbbbbbbbbbbbbbb", "imageId": "ami-2", "launchTime": 1712070786000.5},
                {"instanceId": "i-0cccccccccccccccc", "launchTime": "2026-01-31T12:00:00Z"}
            ]}}
        })))
        .unwrap();
        let Event::RunInstances { instances, .. } = event else { panic!("not a launch") };
        let images: Vec<Option<&str>> = instances.iter().map(|i| i.image_id.as_deref()).collect();
        assert_eq!(images, [Some("ami-1"), Some("ami-2"), None]);
    }

    #[test]
    fn a_scheduled_event_with_or_without_account() {
        let event = parse(&json!({"detail-type": SCHEDULED_EVENT, "source": "aws.events", "detail": {}})).unwrap();
        assert_eq!(event, Event::Audit { origin: Origin::default() });
        let blank = parse(
            &json!({"detail-type": SCHEDULED_EVENT, "source": "aws.scheduler", "account": "", "detail": {"x": 1}}),
        );
        assert_eq!(blank.unwrap().origin().account, None);
        // EventBridge Scheduler sends the detail as a string holding the object.
        let scheduler = parse(&json!({"detail-type": SCHEDULED_EVENT, "source": "aws.scheduler", "detail": "{}"}));
        assert_eq!(scheduler.unwrap(), Event::Audit { origin: Origin::default() });
        let not_an_object = parse(&json!({"detail-type": SCHEDULED_EVENT, "source": "aws.scheduler", "detail": "[]"}));
        assert!(matches!(not_an_object, Err(EventError::Malformed(_))));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let malformed = |payload: serde_json::Value, expected: &str| {
            let err = parse(&payload).unwrap_err();
            assert!(matches!(err, EventError::Malformed(_)), "{err}");
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        };
        malformed(json!("text"), "expected a JSON object");
        malformed(json!({"source": "aws.ec2", "detail": {}}), "detail-type");
        malformed(
            json!({"detail-type": STATE_CHANGE, "source": "aws.ec2", "detail": {"state": "running"}}),
            "instance-id",
        );
        malformed(
            json!({"detail-type": STATE_CHANGE, "source": "aws.ec2", "detail": {"instance-id": 5, "state": "running"}}),
            "invalid type",
        );
        malformed(
            json!({"detail-type": STATE_CHANGE, "source": "aws.ec2", "detail": {"instance-id": "sg-1234abcd", "state": "running"}}),
            "instance id \"sg-1234abcd\"",
        );
        malformed(
            json!({"detail-type": STATE_CHANGE, "source": "aws.ec2", "account": "me", "detail": {"instance-id": "i-0123456789abcdef0", "state": "running"}}),
            "12-digit",
        );
        malformed(
            run_instances(
                json!({"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "responseElements": {"instancesSet": {"items": []}}}),
            ),
            "no instance",
        );
        malformed(
            run_instances(
                json!({"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "responseElements": {"instancesSet": {}}}),
            ),
            "no instance",
        );
        malformed(
            json!({"detail-type": SCHEDULED_EVENT, "source": "aws.events", "detail": []}),
            "expected a JSON object",
        );
    }

    #[test]
    fn events_from_elsewhere_are_unexpected() {
        let unexpected = |payload: serde_json::Value| {
            let err = parse(&payload).unwrap_err();
            assert!(matches!(err, EventError::Unexpected(_)), "{err}");
        };
        unexpected(json!({"detail-type": "Object Created", "source": "aws.s3", "detail": {}}));
        unexpected(
            json!({"detail-type": STATE_CHANGE, "source": "my.app", "detail": {"instance-id": "i-0123456789abcdef0", "state": "running"}}),
        );
        unexpected(json!({"detail-type": SCHEDULED_EVENT, "source": "aws.ec2", "detail": {}}));
        unexpected(run_instances(json!({"eventSource": "s3.amazonaws.com", "eventName": "RunInstances"})));
    }
}
