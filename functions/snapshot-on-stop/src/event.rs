//! The events snapshot-on-stop accepts, both from `aws.ec2`: an instance's state change (it acts
//! on `stopped` and `terminated`) and an AMI's state change (it follows `available` and `failed`).
//! Anything else is a typed error, and nothing is changed for it.

use amiguard::events::{self, AmiStateChangeDetail, EventError, AMI_STATE_CHANGE};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const STATE_CHANGE: &str = "EC2 Instance State-change Notification";

/// An accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `EC2 Instance State-change Notification`.
    InstanceStateChange {
        /// An `i-…` id.
        instance_id: String,
        /// The state the event says the instance reached.
        state: String,
        /// The event's time (required for `stopped` only): checked against the stop time EC2
        /// states, which names the image; never believed alone but where EC2 states none.
        time: Option<DateTime<Utc>>,
        account: Option<String>,
    },
    /// `EC2 AMI State Change`; `detail.image_id` is an `ami-…` id.
    AmiStateChange { detail: AmiStateChangeDetail, region: Option<String>, account: Option<String> },
}

/// The `detail` of an EC2 state-change notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateChange {
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    pub state: String,
}

/// The event in `payload`, or why it is not one snapshot-on-stop accepts.
pub fn parse(payload: &serde_json::Value) -> Result<Event, EventError> {
    let detail_type = payload.get("detail-type").and_then(serde_json::Value::as_str);
    let source = payload.get("source").and_then(serde_json::Value::as_str);
    if detail_type == Some(AMI_STATE_CHANGE) && source == Some("aws.ec2") {
        let event = events::parse_envelope::<AmiStateChangeDetail>(payload)?;
        let image_id = event.detail.image_id.as_str();
        if !image_id.starts_with("ami-") {
            return Err(EventError::Malformed(format!("`detail.ImageId` is not an AMI id: {image_id:?}")));
        }
        return Ok(Event::AmiStateChange { detail: event.detail, region: event.region, account: event.account });
    }
    let event = events::parse_envelope::<StateChange>(payload)?;
    if event.detail_type != STATE_CHANGE || event.source != "aws.ec2" {
        return Err(EventError::Unexpected(format!(
            "expected `{STATE_CHANGE}` or `{AMI_STATE_CHANGE}` from aws.ec2, got `{}` from {}",
            event.detail_type, event.source
        )));
    }
    let instance_id = event.detail.instance_id;
    if !instance_id.starts_with("i-") {
        return Err(EventError::Malformed(format!("`detail.instance-id` is not an instance id: {instance_id:?}")));
    }
    Ok(Event::InstanceStateChange { instance_id, state: event.detail.state, time: event.time, account: event.account })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> serde_json::Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_sample_events_are_accepted() {
        for (name, state) in [
            ("snapshot-on-stop.stopped.json", "stopped"),
            ("snapshot-on-stop.running.json", "running"),
            ("snapshot-on-stop.terminated.json", "terminated"),
        ] {
            let Event::InstanceStateChange { state: parsed, instance_id, .. } = parse(&sample(name)).unwrap() else {
                panic!("{name}: not an instance state change");
            };
            assert_eq!(parsed, state);
            assert!(instance_id.starts_with("i-"));
        }
        for (name, state) in
            [("snapshot-on-stop.ami-available.json", "available"), ("snapshot-on-stop.ami-failed.json", "failed")]
        {
            let Event::AmiStateChange { detail, region, .. } = parse(&sample(name)).unwrap() else {
                panic!("{name}: not an AMI state change");
            };
            assert_eq!((detail.state.as_str(), region.as_deref()), (state, Some("us-east-1")));
        }
    }

    #[test]
    fn anything_else_is_a_typed_error() {
        let mut other = sample("snapshot-on-stop.stopped.json");
        other["detail-type"] = json!("EC2 Spot Instance Interruption Warning");
        assert!(matches!(parse(&other), Err(EventError::Unexpected(_))));
        let mut not_an_instance = sample("snapshot-on-stop.stopped.json");
        not_an_instance["detail"]["instance-id"] = json!("vol-0123");
        assert!(matches!(parse(&not_an_instance), Err(EventError::Malformed(_))));
        let mut not_an_image = sample("snapshot-on-stop.ami-failed.json");
        not_an_image["detail"]["ImageId"] = json!("snap-0123");
        assert!(matches!(parse(&not_an_image), Err(EventError::Malformed(_))));
        assert!(matches!(parse(&json!({})), Err(EventError::Malformed(_))));
    }
}
