//! snapshot-on-stop's decisions, as plain functions over plain data: which stopped instance is
//! imaged, when it stopped (EC2's word, never an event's alone), the names and tags of what it
//! makes, which images retention retires, what the ledger's records say and which found image is
//! its own, and the alert of a failed image. No I/O: what EC2 and the ledger say, and the clock,
//! come in as parameters.

pub mod described;
pub mod failed_alert;
pub mod naming;
pub mod records;
pub mod retention;
pub mod selection;
pub mod stop_time;

pub use described::{ImageRecord, LaunchTemplateRef, LaunchTemplateVersion};
pub use records::{InstanceRecords, MadeImage};
pub use retention::ManagedImage;
pub use selection::{SkipReason, SnapshotScope, StoppedInstance};
pub use stop_time::StopTime;
