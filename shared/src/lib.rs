//! amiguard: the platform of the amiguard Lambda functions.
//!
//! **A line lives in the crate of the only function that runs it. Code that two or more
//! functions run lives here, in `amiguard`, which never names a function.** What is here is what
//! every function stands on: building the SDK and the typed AWS error ([`sdk`], [`error`]),
//! paging with the repeated-token check ([`paging`]), the grammar of AWS words ([`aws_words`]),
//! reading the environment ([`config`]), the EventBridge envelope ([`events`]), the invocation
//! ([`invocation`]), tags ([`tags`]), the Recycle Bin tag ([`recycle_bin`]), the ledger store and
//! its keys ([`ledger`]), the report and metric line builders ([`report`], [`metrics`]), and the
//! alerting more than one function sends ([`alert`], [`sns`]) and its Security Hub findings
//! ([`findings`]).
//!
//! Each function crate has the same skeleton: `core/` (pure decisions), `flow/` (the steps of a
//! delivery over the crate's ports), `adapters/` (the SDK and ledger implementations of the
//! ports), beside `handler.rs`, `config.rs`, `event.rs`, `report.rs`, `metrics.rs`, `error.rs` and
//! `ports.rs`. The integration tests' `layout` suite keeps the rule.

pub mod alert;
pub mod aws_words;
pub mod config;
pub mod error;
pub mod events;
pub mod findings;
pub mod invocation;
pub mod ledger;
pub mod metrics;
pub mod paging;
pub mod recycle_bin;
pub mod report;
pub mod sdk;
pub mod sns;
pub mod tags;

#[cfg(feature = "test-util")]
pub mod testing;

pub use error::AwsError;
