//! snapshot-on-stop: when an instance reaches `stopped`, image it (an image of a stopped instance
//! is consistent), keep a launch template that relaunches it with the same configuration, and
//! retire its older images with their snapshots. Each image is followed to `available` (its
//! `EC2 AMI State Change`, and every later stop): only then does the template's default launch it
//! and retention count it; an image that fails is alerted once. What it made is remembered in the
//! ledger, and only that is ever retired.

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

pub const FUNCTION: &str = "snapshot-on-stop";

pub use crate::adapters::ec2::Ec2Client;
/// The instance's records in the ledger as functions (`records::read(&store, ..)`), for the tests
/// that seed or read them: the [`Records`] methods.
pub use crate::adapters::ledger as records;
pub use crate::adapters::ledger::LEDGER_PARTITIONS;
pub use crate::config::{Config, KeepAfterTermination, VARIABLES};
pub use crate::core::{MadeImage, SnapshotScope};
pub use crate::error::Error;
pub use crate::event::Event;
pub use crate::handler::handle;
pub use crate::ports::{CreateImageOutcome, Ec2, Ports, Records};
pub use crate::report::{KeptSnapshot, Outcome, Report};
