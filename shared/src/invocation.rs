//! What a handler knows of its invocation besides the event: its id (the run id of the ledger's
//! journal), its clock and Lambda's deadline. Tests build one with the clock they need.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Lambda's request id: unique per invocation (a retry gets a new one).
    pub request_id: String,
    pub now: DateTime<Utc>,
    /// `None` when unknown.
    pub deadline: Option<SystemTime>,
}

impl Invocation {
    /// From the runtime's context (`deadline` in milliseconds since the epoch).
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        Self {
            request_id: context.request_id.clone(),
            now: Utc::now(),
            deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(context.deadline)),
        }
    }

    /// An invocation at `now` with a fresh id and no deadline (tests, local runs).
    pub fn at(now: DateTime<Utc>) -> Self {
        Self { request_id: fresh_id(now), now, deadline: None }
    }
}

/// An id unique within this process and unlikely to repeat across processes.
fn fresh_id(now: DateTime<Utc>) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("local-{}-{}-{n}", now.format("%Y%m%dT%H%M%S%.6fZ"), std::process::id())
}
