//! The JSON the sweeper answers and logs: a sweep's [`Report`] (its types are the data of
//! `core::summary`, named here), what became of an AMI event, and the short second log line of a
//! sweep (`Delivery`).

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::core::summary::{
    ArchivedSnapshots, FailedDeletion, FreedSnapshot, ListCounts, RegionReport, Report, RetireOutcome, RetiredImage,
    Totals, WaitingOrphan, LIST_LIMIT, MAX_REPORT_BYTES,
};

/// What an invocation answers: a sweep's report, or what became of an AMI event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Sweep(Box<Report>),
    AmiEvent(AmiEventReport),
}

impl Response {
    /// The sweep's report (`None` for an AMI event).
    pub fn sweep(self) -> Option<Report> {
        match self {
            Self::Sweep(report) => Some(*report),
            Self::AmiEvent(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmiEventReport {
    /// `recorded`, `already-recorded` (a redelivery) or `skipped`.
    pub outcome: &'static str,
    pub image_id: String,
    pub region: String,
    pub state: String,
    /// The event's own `time`, as it said it: information only (a deregistration is recorded at
    /// amiguard's clock, once EC2 no longer lists the AMI).
    pub time: DateTime<Utc>,
    /// Why nothing was recorded (`skipped`).
    pub reason: Option<String>,
}

/// What became of the report after it was logged: a second, short log line.
#[derive(Debug, Serialize)]
pub(crate) struct Delivery {
    pub run_id: String,
    /// Whether the run's summary reached the ledger (`None`: no ledger).
    pub run_recorded: Option<bool>,
    /// Whether the summary reached `REPORT_TOPIC_ARN` (`None`: no topic).
    pub summary_published: Option<bool>,
    pub warnings: Vec<String>,
}
