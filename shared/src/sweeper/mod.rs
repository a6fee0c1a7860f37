//! orphan-snapshot-sweeper: finds the EBS snapshots that deregistered AMIs left behind and says,
//! for every other snapshot, why it is kept.
//!
//! - [`facts`]: what the sweeper keeps of each listed snapshot and image.
//! - [`origin`]: which AMI a snapshot was made for, read from its description or amiguard's tags.
//! - [`planner`]: the pure snapshot planner (facts in, plan out, no I/O) carrying the safety rules.
//! - [`grace`]: the grace clock, from amiguard's own observation of when a snapshot was orphaned.
//! - [`records`]: what the sweeper remembers in the ledger (images' mappings, orphans' clocks,
//!   AMI events) and writes only when it changed.
//! - [`retire`]: the pure planner of unused AMIs to retire (`RETIRE_UNUSED_AMIS_AFTER_DAYS`).
//! - [`ec2`]: the narrow EC2 port the handler needs and its `aws_sdk_ec2::Client` adapter.
//! - [`sns`]: the port that publishes the run's summary, and its `aws_sdk_sns::Client` adapter.

pub mod ec2;
pub mod facts;
pub mod grace;
mod join;
pub mod origin;
pub mod planner;
pub mod records;
pub mod retire;
pub mod sns;

pub use ec2::{LaunchTemplateImages, SweeperEc2};
pub use facts::{Id, ImageFacts, SnapshotFacts, SnapshotListing};
pub use planner::{plan, KeepReason, Memory, Orphan, Plan, PlanInput, Policy, SnapshotTotal};
pub use retire::{plan_retirement, ImageKeepReason, RetireInput, RetirePlan, RetirePolicy, UseFacts};
pub use sns::SummaryPublisher;
