//! The JSON the sweeper answers and logs: a sweep's [`Report`] (its types are the data of
//! `core::summary`, named here), or what became of an AMI event.

pub use crate::core::summary::{
    ArchivedSnapshots, FailedDeletion, ListCounts, RegionReport, Report, RetireOutcome, RetiredImage, Totals,
    WaitingOrphan, LIST_LIMIT, MAX_REPORT_BYTES,
};
