//! untrusted-ami-alert: judges every launch by who owns its AMI (and who made it), alerts once per
//! instance and image, and optionally tags or stops the instance.
//!
//! Three triggers: an `EC2 Instance State-change Notification` (`pending`/`running`), a CloudTrail
//! `RunInstances` (one report per launched instance), and a `Scheduled Event` that audits every
//! instance that is not terminated (alerts in one digest and tags, never stops). Alert-once is a
//! record in the ledger (`amiguard::alert::once`); a storm of launches of one image folds into the
//! next audit's digest.

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

pub use adapters::ec2::Ec2Client;
pub use adapters::ledger::LEDGER_PARTITIONS;
pub use adapters::sts::StsIdentity;
pub use config::{Config, VARIABLES};
pub use error::{Error, FailedStep, InstanceFailure};
pub use handler::handle;
pub use ports::Ports;
pub use report::{AuditFinding, AuditReport, InstanceReport, Outcome, Report, WouldDo};

pub const FUNCTION: &str = "untrusted-ami-alert";
