//! amiguard: the pure core and the AWS adapters shared by the amiguard Lambda functions.
//!
//! Each function has a module: a pure `core` (decisions over plain data, no I/O, tested
//! exhaustively) and an `ec2` adapter (a narrow trait and its `aws_sdk_ec2::Client` impl).

pub mod alert;
pub mod aws_words;
pub mod config;
pub mod error;
pub mod events;
pub mod invocation;
pub mod ledger;
pub mod metrics;
pub mod paging;
pub mod recycle_bin;
pub mod report;
pub mod sdk;
pub mod sns;
pub mod tags;

pub mod snapshot_on_stop;
pub mod trust;

#[cfg(feature = "test-util")]
pub mod testing;

pub use error::AwsError;
