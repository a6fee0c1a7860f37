//! The sweeper's pure decisions: which snapshots are orphans and why every other one is kept,
//! which unused AMIs retire, when an orphan's grace period ends, and what a run comes to in
//! numbers and words. Facts in, decisions out: no I/O, no SDK type, no ledger, no clock of its
//! own (`now` is a parameter).
//!
//! [`facts`] is the bottom: it owns the types the other modules read and imports none of them,
//! so that no two modules here import each other.

pub mod facts;
mod freed_report;
pub mod grace;
mod join;
pub mod listing;
pub mod origin;
pub mod partitions;
pub mod planner;
pub mod retire;
pub mod savings;
pub mod stage_plan;
pub mod stage_report;
pub mod stages;
pub mod summary;
pub mod usage_reports;

pub use facts::{FastSnapshotRestore, Id, ImageFacts, KeepReason, SnapshotFacts, Tier};
pub use listing::SnapshotListing;
pub use planner::{plan, Memory, Orphan, Plan, PlanInput, Policy, SnapshotTotal};
pub use retire::{plan_retirement, ImageKeepReason, RetireInput, RetirePlan, RetirePolicy, UseFacts};
pub use stage_plan::{plan_stages, FamilyRule, StageInput, StagePlan};
pub use stage_report::{RetirementStageEntry, StageChange, StageEvidence, StageTotal, StageTotals};
pub use stages::{
    Evidence, LaunchPermissions, Stage, StagePolicy, StageRecord, StagedImage, Stages, UsageEntry, UsageReport, Verdict,
};
