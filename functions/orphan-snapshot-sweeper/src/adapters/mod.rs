//! The AWS implementations of the ports: EC2 on `aws_sdk_ec2::Client`, the summary on
//! `aws_sdk_sns::Client`, and the sweeper's records on any ledger store.

pub mod ec2;
pub mod ledger;
mod passes;
mod snapshot_pages;
pub mod sns;
