//! What EC2 says of an image and of a launch template, as plain data: the answers of the EC2 port
//! that the decisions read.

use amiguard::tags::Tag;

/// An image as the adapter reports it: plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub image_id: String,
    pub name: Option<String>,
    pub state: Option<String>,
    /// EC2's `StateReason.Message`: why an image failed.
    pub state_reason: Option<String>,
    pub creation_date: Option<String>,
    pub tags: Vec<Tag>,
    pub snapshot_ids: Vec<String>,
    /// EC2's `DeregistrationProtection`: `disabled`, `enabled-without-cooldown`,
    /// `enabled-with-cooldown`, or `disabled after <time>` (still protected until then).
    pub deregistration_protection: Option<String>,
}

impl ImageRecord {
    /// EC2 refuses to deregister the image now (anything but `disabled`, or no such field).
    pub fn is_deregistration_protected(&self) -> bool {
        self.deregistration_protection.as_deref().is_some_and(|p| p != "disabled")
    }

    /// EC2 says the image will never be usable: `failed`, `error` or `invalid`.
    pub fn has_failed(&self) -> bool {
        matches!(self.state.as_deref(), Some("failed" | "error" | "invalid"))
    }
}

/// A launch template and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LaunchTemplateRef {
    pub id: String,
    pub version: i64,
}

/// A version of a launch template and the image it launches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateVersion {
    pub version: i64,
    pub image_id: Option<String>,
    pub is_default: bool,
}
