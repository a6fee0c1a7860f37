//! The steps of a delivery, over the core's decisions and the ports.
//!
//! A sweep, per region and in this order: list snapshots, then images (so an AMI registered in
//! between is seen), then the Recycle Bin and the snapshot locks, then the ledger; any failed
//! listing or ledger read aborts that region with zero deletions. The orphans about to be deleted
//! are asked whether they are shared. What changed is written to the ledger before anything is
//! deleted. Regions are planned one at a time in `REGIONS` order and delete side by side. The
//! invocation still answers with the report (logged before anything else is sent): an error is
//! only for an event it must not act on.

pub(crate) mod ami_event;
pub(crate) mod delete;
pub(crate) mod partitioned;
pub(crate) mod region;
pub(crate) mod retirement;
pub(crate) mod run;
pub(crate) mod savings;
pub(crate) mod stage_evidence;
pub(crate) mod stages;
pub(crate) mod sweep;
