//! Parsing the EventBridge envelope every function receives. A payload of the wrong shape is a
//! typed, non-retryable error that names what is wrong; nothing is changed for it.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An event the function cannot act on. Retrying would not help, so Lambda's retry of it is
/// wasted, but it is an error all the same: it means a rule or a caller is misconfigured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("unexpected event: {0}")]
    Unexpected(String),
}

impl From<EventError> for lambda_runtime::Diagnostic {
    fn from(err: EventError) -> Self {
        let error_type = match err {
            EventError::Malformed(_) => "MalformedEvent",
            EventError::Unexpected(_) => "UnexpectedEvent",
        };
        lambda_runtime::Diagnostic { error_type: error_type.to_string(), error_message: err.to_string() }
    }
}

/// Who sends a `Scheduled Event`: an EventBridge schedule rule, or EventBridge Scheduler (SAM's
/// `ScheduleV2`). `aws.*` sources can only come from AWS: PutEvents refuses them.
pub const SCHEDULE_SOURCES: [&str; 2] = ["aws.events", "aws.scheduler"];

/// The `detail` of a scheduled event as an object: EventBridge rules send an object, EventBridge
/// Scheduler a string holding one (`"{}"`). Anything else is malformed.
pub fn scheduled_detail(detail: serde_json::Value) -> Result<serde_json::Map<String, serde_json::Value>, EventError> {
    let object = match detail {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| EventError::Malformed(format!("detail: a string that is not a JSON object ({e})")))?,
        other => other,
    };
    match object {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(EventError::Malformed(format!("detail: expected a JSON object, got {}", kind(&other)))),
    }
}

/// The `detail-type` of an AMI's state change (EventBridge, from aws.ec2).
pub const AMI_STATE_CHANGE: &str = "EC2 AMI State Change";

/// The `detail` of an `EC2 AMI State Change`, as AWS documents it: `State` is `available`,
/// `failed` or `deregistered`; `ErrorMessage` says why an image failed (empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AmiStateChangeDetail {
    #[serde(rename = "ImageId")]
    pub image_id: String,
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "ErrorMessage", default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Parses an EventBridge envelope whose `detail` has the shape `T`. The error says which field
/// is missing or of the wrong type (serde's message, which names it).
pub fn parse_envelope<T>(payload: &serde_json::Value) -> Result<EventBridgeEvent<T>, EventError>
where
    T: DeserializeOwned + Serialize,
{
    if !payload.is_object() {
        return Err(EventError::Malformed(format!("expected a JSON object, got {}", kind(payload))));
    }
    for field in ["detail-type", "source", "detail"] {
        if payload.get(field).is_none() {
            return Err(EventError::Malformed(format!("missing field `{field}`")));
        }
    }
    serde::Deserialize::deserialize(payload).map_err(|e: serde_json::Error| EventError::Malformed(e.to_string()))
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize)]
    struct Detail {
        #[serde(rename = "instance-id")]
        instance_id: String,
    }

    #[test]
    fn a_scheduled_detail_is_an_object_or_a_string_holding_one() {
        assert_eq!(scheduled_detail(json!({"dry_run": true})).unwrap()["dry_run"], json!(true));
        assert!(scheduled_detail(json!("{}")).unwrap().is_empty(), "EventBridge Scheduler's");
        assert_eq!(scheduled_detail(json!("{\"dry_run\": true}")).unwrap()["dry_run"], json!(true));
        for bad in [json!("[]"), json!("not json"), json!(""), json!(7), json!(null), json!([1])] {
            assert!(matches!(scheduled_detail(bad.clone()), Err(EventError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn parses_a_well_formed_envelope() {
        let event = parse_envelope::<Detail>(&json!({
            "detail-type": "X", "source": "aws.ec2", "time": "2026-01-02T03:04:05Z",
            "detail": {"instance-id": "i-1"}
        }))
        .unwrap();
        assert_eq!(event.detail.instance_id, "i-1");
        assert_eq!(event.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn names_what_is_wrong() {
        let err = parse_envelope::<Detail>(&json!([1])).unwrap_err();
        assert_eq!(err, EventError::Malformed("expected a JSON object, got an array".into()));
        let err = parse_envelope::<Detail>(&json!({"source": "aws.ec2", "detail": {}})).unwrap_err();
        assert_eq!(err, EventError::Malformed("missing field `detail-type`".into()));
        let err = parse_envelope::<Detail>(&json!({"detail-type": "X", "source": "s", "detail": {}})).unwrap_err();
        assert!(err.to_string().contains("instance-id"), "{err}");
        let err = parse_envelope::<Detail>(&json!({"detail-type": 5, "source": "s", "detail": {"instance-id": "i"}}))
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}
