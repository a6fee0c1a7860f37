//! What a handler knows of its invocation besides the event: its id (the run id of the ledger's
//! journal), its clock and Lambda's deadline. Tests build one with the clock they need.

use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Lambda's request id: the run id the journal files this invocation's deletions under.
    pub request_id: String,
    /// When the invocation started, by the clock its decisions use (injected in tests).
    pub now: DateTime<Utc>,
    /// `None` when unknown.
    pub deadline: Option<SystemTime>,
    started: Instant,
}

impl Invocation {
    /// From the runtime's context (`deadline` in milliseconds since the epoch).
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        Self {
            request_id: context.request_id.clone(),
            now: Utc::now(),
            deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(context.deadline)),
            started: Instant::now(),
        }
    }

    /// An invocation at `now` with a fresh id and no deadline (tests, local runs).
    pub fn at(now: DateTime<Utc>) -> Self {
        Self { request_id: fresh_id(now), now, deadline: None, started: Instant::now() }
    }

    pub fn with_deadline(self, deadline: SystemTime) -> Self {
        Self { deadline: Some(deadline), ..self }
    }

    pub fn with_request_id(self, request_id: impl Into<String>) -> Self {
        Self { request_id: request_id.into(), ..self }
    }

    /// The invocation's clock now: `now` plus the time spent since it started. Leases and claims
    /// written late in a long invocation expire when they should, not minutes early.
    pub fn clock(&self) -> DateTime<Utc> {
        self.now + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default()
    }
}

/// An id unique within this process and unlikely to repeat across processes.
fn fresh_id(now: DateTime<Utc>) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("local-{}-{}-{n}", now.format("%Y%m%dT%H%M%S%.6fZ"), std::process::id())
}
