//! untrusted-ami-alert: judge every launch by who owns its AMI, alert once, optionally enforce.
//!
//! Pure core: `policy` (the trust policy, the Allowed AMIs criteria matcher and the verdict),
//! `provenance` (who made an image: the owners of its ancestors), `enforce` (what to do about an
//! untrusted instance), `alert` (the message a person reads) and `trigger` (the three events the
//! function answers). `sent` is alert-once, a record in the ledger; `fold` folds a storm of
//! launch alerts of one image. Adapters: `ec2`, `sns` (the alert topic) and `identity` (STS, only
//! when an event does not name its account).

pub mod alert;
pub mod ec2;
pub mod enforce;
pub mod fold;
pub mod identity;
pub mod policy;
pub mod provenance;
pub mod trigger;
