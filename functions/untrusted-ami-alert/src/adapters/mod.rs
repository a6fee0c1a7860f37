//! The SDK and ledger implementations of the ports: `ec2` ([`crate::ports::Ec2`]), `sts`
//! ([`crate::ports::CallerIdentity`]) and `ledger` ([`crate::ports::Records`] for every ledger
//! store). Alerts leave through `amiguard::alert::sns::SnsAlerts`.

pub mod ec2;
pub mod ledger;
pub mod sts;
