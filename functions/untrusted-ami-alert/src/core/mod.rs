//! The pure decisions of untrusted-ami-alert: no I/O, no SDK type, no ledger, the clock a
//! parameter. From the bottom up: `criteria` (the Allowed AMIs language), `policy` (the trust
//! policy), `verdict` (an image by the policy), `provenance` (who made it), `enforce` (what to do
//! about an untrusted instance), `message` (the alert a person reads, the audit's digest),
//! `judge` (the verdict on a launch), `fold` (no storm of launch alerts) and `finding` (its
//! Security Hub finding).

pub mod criteria;
pub mod enforce;
pub mod finding;
pub mod fold;
pub mod judge;
pub mod message;
pub mod policy;
pub mod provenance;
pub mod verdict;
