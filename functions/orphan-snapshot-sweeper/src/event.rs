//! The events the sweeper answers: the scheduled sweep (from an EventBridge schedule rule or from
//! EventBridge Scheduler), and `EC2 AMI State Change` events (`available` records an image's
//! mapping, `deregistered` starts the grace clock of its snapshots, each once EC2 confirms it).
//! Anything else is refused before any AWS call.

use amiguard::aws_words::is_resource_id;
pub use amiguard::events::AMI_STATE_CHANGE;
use amiguard::events::{parse_envelope, scheduled_detail, AmiStateChangeDetail, EventError, SCHEDULE_SOURCES};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `detail-type` of a sweep.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// The `detail` of the scheduled event. Any object is accepted; `dry_run: true` forces a dry run
/// (it can only make a run drier: `false` never overrides `DRY_RUN=true`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScheduledDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// An event the sweeper answers.
#[derive(Debug)]
pub enum Event {
    Sweep { account_id: String, detail: ScheduledDetail },
    AmiStateChange { account_id: String, region: String, image_id: String, state: String, time: DateTime<Utc> },
}

/// Reads `payload` as an [`Event`]; anything else is a typed error, before any AWS call.
pub fn parse(payload: &serde_json::Value) -> Result<Event, EventError> {
    let detail_type = payload.get("detail-type");
    match detail_type.and_then(|d| d.as_str()) {
        Some(SCHEDULED_EVENT) => {
            let event = parse_envelope::<serde_json::Value>(payload)?;
            if !SCHEDULE_SOURCES.contains(&event.source.as_str()) {
                return Err(EventError::Unexpected(format!(
                    "`{SCHEDULED_EVENT}` from {}: only a schedule ({}) starts a sweep",
                    event.source,
                    SCHEDULE_SOURCES.join(" or ")
                )));
            }
            let detail = scheduled_detail(event.detail)?;
            let detail: ScheduledDetail = serde_json::from_value(serde_json::Value::Object(detail))
                .map_err(|e| EventError::Malformed(format!("detail: {e}")))?;
            Ok(Event::Sweep { account_id: account(event.account)?, detail })
        }
        Some(AMI_STATE_CHANGE) => {
            let event = parse_envelope::<AmiStateChangeDetail>(payload)?;
            if event.source != "aws.ec2" {
                return Err(EventError::Unexpected(format!(
                    "`{AMI_STATE_CHANGE}` from {}: only aws.ec2 sends it",
                    event.source
                )));
            }
            let image_id = event.detail.image_id;
            if !is_resource_id(&image_id, "ami-") {
                return Err(EventError::Malformed(format!("`detail.ImageId` is not an AMI id: {image_id:?}")));
            }
            let region = event
                .region
                .filter(|r| !r.is_empty())
                .ok_or_else(|| EventError::Malformed("missing field `region`".into()))?;
            let time = event.time.ok_or_else(|| EventError::Malformed("missing field `time`".into()))?;
            Ok(Event::AmiStateChange {
                account_id: account(event.account)?,
                region,
                image_id,
                state: event.detail.state,
                time,
            })
        }
        _ => {
            let got = detail_type.map_or_else(|| "no detail-type".to_string(), |d| format!("detail-type {d}"));
            Err(EventError::Unexpected(format!(
                "orphan-snapshot-sweeper acts only on an EventBridge `{SCHEDULED_EVENT}` (and records `{AMI_STATE_CHANGE}`), got {got}; nothing was done"
            )))
        }
    }
}

fn account(account: Option<String>) -> Result<String, EventError> {
    let account = account.unwrap_or_default();
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(EventError::Malformed(format!(
            "`account` must be the 12-digit id of the account to sweep, got {account:?}"
        )));
    }
    Ok(account)
}
