//! orphan-snapshot-sweeper: on a schedule, finds the EBS snapshots that deregistered AMIs left
//! behind in each configured region and deletes them (a dry run by default), keeping everything a
//! safety rule protects and saying why. Optionally retires old, unused AMIs first. It also records
//! `EC2 AMI State Change` deregistrations, which start the grace clock of an AMI's snapshots.

pub mod adapters;
pub mod config;
pub mod core;
pub mod error;
pub mod event;
mod flow;
mod handler;
pub mod metrics;
pub mod ports;
pub mod report;

pub use crate::adapters::ledger::LEDGER_PARTITIONS;
pub use crate::core::{ImageKeepReason, KeepReason};
pub use amiguard::invocation::Invocation;
pub use config::{Config, VARIABLES};
pub use error::Error;
pub use flow::delete::DELETE_CONCURRENCY;
pub use flow::partitioned::PARTITION_CONCURRENCY;
pub use flow::run::{DEADLINE_MARGIN, DELETION_CUTOFF, DELETION_MARGIN};
pub use flow::sweep::REGION_CONCURRENCY;
pub use handler::{handle, handle_with_ebs};
pub use ports::Ports;
pub use report::{Report, Response, RetireOutcome};

pub const FUNCTION: &str = "orphan-snapshot-sweeper";
