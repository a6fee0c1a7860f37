//! The SDK and ledger implementations of the ports: EC2 through `aws_sdk_ec2` (with the launch
//! data of a relaunch), the records through any `LedgerStore`.

pub mod ec2;
pub mod launch_data;
pub mod ledger;
