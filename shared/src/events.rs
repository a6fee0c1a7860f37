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
