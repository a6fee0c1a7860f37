//! The report every delivery answers with (and logs as one line): what was done, or would be in
//! a dry run, and why.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::core::LaunchTemplateRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    AlreadyCreated,
    Skipped,
    DryRun,
    /// The instance was terminated: retention ran with `KEEP_AFTER_TERMINATION`.
    Terminated,
    /// An AMI event: EC2 says the image is available; the template and retention followed.
    ImageAvailable,
    /// An AMI event: EC2 says the image failed; everything is kept, the alert sent once.
    ImageFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    /// Empty for an AMI event of an image the ledger does not hold.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    pub image_id: Option<String>,
    pub image_name: Option<String>,
    /// Why the instance was skipped (a stop whose time EC2 does not bear out: both times); for
    /// an AMI event, what was kept.
    pub reason: Option<String>,
    /// For an AMI event: what EC2 says of the image now (what is acted on, not the event's word).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_state: Option<String>,
    /// EC2's `StateReason.Code` of the stop (`Client.UserInitiatedShutdown`, or `Server.*` for a
    /// stop AWS made, such as a Spot interruption).
    pub stop_reason: Option<String>,
    /// The launch template and its default version after this delivery: it launches the newest
    /// available image (a stop's own image only once EC2 says it is available).
    pub launch_template: Option<LaunchTemplateRef>,
    /// Images deregistered by retention (in a dry run: those that would be).
    pub retired_images: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// Until when `retired_images` and `deleted_snapshots` can be restored from the Recycle Bin
    /// (`null`: nothing retired, or no retention rule: `RECYCLE_BIN_RETENTION_DAYS` 0). Each
    /// one's own time is in the journal.
    pub restorable_until: Option<DateTime<Utc>>,
    /// Snapshots of retired images that EC2 refused to delete (`InvalidSnapshot.InUse`: another
    /// image uses them); they are kept.
    pub kept_snapshots: Vec<KeptSnapshot>,
    /// Images made before the ledger existed that this delivery adopted into it.
    pub adopted_images: Vec<String>,
    /// This instance's recorded images that EC2 does not say are `available` (pending, failed,
    /// disabled): retention neither counts nor retires them; a failed or disabled one stays until
    /// a person deregisters it.
    pub images_not_available: Vec<String>,
    /// Failed images this delivery alerted (once each: the ledger remembers).
    pub alerted_images: Vec<String>,
    /// `PROTECT_NEWEST`: the image whose deregistration protection this delivery turned on, and
    /// those it turned off (amiguard's own protection of images no longer the newest).
    pub protection_enabled: Vec<String>,
    pub protection_removed: Vec<String>,
    /// Cleanup that did not happen and loses nothing (a launch-template version left behind), a
    /// ledger that could not be used (nothing is retired then), and a launch template under
    /// amiguard's name that the ledger does not record as its own (left as it is).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptSnapshot {
    pub snapshot_id: String,
    pub code: String,
}

impl Report {
    pub(crate) fn new(outcome: Outcome, instance_id: &str) -> Self {
        Self {
            outcome,
            instance_id: instance_id.to_string(),
            image_id: None,
            image_name: None,
            reason: None,
            image_state: None,
            stop_reason: None,
            launch_template: None,
            retired_images: Vec::new(),
            deleted_snapshots: Vec::new(),
            restorable_until: None,
            kept_snapshots: Vec::new(),
            adopted_images: Vec::new(),
            images_not_available: Vec::new(),
            alerted_images: Vec::new(),
            protection_enabled: Vec::new(),
            protection_removed: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn skipped(instance_id: &str, reason: impl ToString) -> Self {
        Self { reason: Some(reason.to_string()), ..Self::new(Outcome::Skipped, instance_id) }
    }

    /// Adds `warning`, unless the report says it already (two steps may meet the same thing).
    pub(crate) fn warn(&mut self, warning: String) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }
}
