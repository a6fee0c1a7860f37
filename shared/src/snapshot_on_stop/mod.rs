//! snapshot-on-stop: image a stopped instance, keep a launch template to relaunch it with the
//! same configuration, and retire its older images with their snapshots.
//!
//! `core` decides (pure), `launch_data` turns an instance's launch data into a template version
//! (pure), `records` is what it remembers in the ledger (the images it made), `failed_alert` the alert for an
//! image that failed (pure), `ec2` is the adapter.

pub mod core;
pub mod ec2;
pub mod failed_alert;
pub mod launch_data;
pub mod records;
