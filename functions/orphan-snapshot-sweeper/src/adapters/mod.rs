//! The AWS implementations of the ports: EC2 on `aws_sdk_ec2::Client`, the summary on
//! `aws_sdk_sns::Client`, and the sweeper's records on any ledger store.

pub mod ebs;
pub mod ec2;
pub mod image_stages;
pub mod ledger;
mod passes;
pub mod retirement_ledger;
pub mod sns;
