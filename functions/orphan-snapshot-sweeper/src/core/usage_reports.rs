//! The evidence of other accounts for staged retirement (issue 22): an image's launch
//! permissions, and the AMI usage reports of EC2 with their entries; which report is evidence
//! for a stage ([`report_evidence`]: only amiguard's own, asking what amiguard asks, over every
//! account the image is shared with, asked for under a sharing at least today's). Pure.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An image's launch permissions (`DescribeImageAttribute` `launchPermission`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LaunchPermissions {
    pub user_ids: BTreeSet<String>,
    pub organization_arns: BTreeSet<String>,
    pub organizational_unit_arns: BTreeSet<String>,
    /// Group `all`: the image is public, and never retired.
    pub public: bool,
}

impl LaunchPermissions {
    /// Whether every account, organisation and unit of `self` is in `other` (and `self` is
    /// public only if `other` is): nobody can launch under `self` who could not under `other`.
    pub fn within(&self, other: &LaunchPermissions) -> bool {
        (!self.public || other.public)
            && self.user_ids.is_subset(&other.user_ids)
            && self.organization_arns.is_subset(&other.organization_arns)
            && self.organizational_unit_arns.is_subset(&other.organizational_unit_arns)
    }

    pub fn is_shared(&self) -> bool {
        self.public
            || !self.user_ids.is_empty()
            || !self.organization_arns.is_empty()
            || !self.organizational_unit_arns.is_empty()
    }

    /// Shared with an organization or a unit: every account may use it, so only a report over
    /// every account covers it.
    pub fn needs_every_account(&self) -> bool {
        !self.organization_arns.is_empty() || !self.organizational_unit_arns.is_empty()
    }
}

/// One entry of a usage report: an account using the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEntry {
    pub account_id: String,
    /// `ec2:Instance` or `ec2:LaunchTemplate`.
    pub resource_type: String,
    pub usage_count: i64,
}

/// An AMI usage report as `DescribeImageUsageReports` lists it, with its entries once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub report_id: String,
    pub image_id: String,
    /// `pending`, `available` or `error`.
    pub state: String,
    pub created: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// The accounts it covers; empty: every account.
    pub account_ids: BTreeSet<String>,
    /// The resource types it reads, with the `version-depth` option of each (`None`: not given).
    pub resource_types: Vec<(String, Option<u32>)>,
    /// Read only for an `available` report (`None`: not read, or the read failed).
    pub entries: Option<Vec<UsageEntry>>,
}

impl UsageReport {
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|at| at > now)
    }

    /// Whether it covers every account `permissions` lets launch the image.
    fn covers(&self, permissions: &LaunchPermissions) -> bool {
        if self.account_ids.is_empty() {
            return true;
        }
        !permissions.needs_every_account() && permissions.user_ids.is_subset(&self.account_ids)
    }

    /// Whether it asks what amiguard asks: instances, and launch templates at least `depth`
    /// versions deep (a narrower report, e.g. a person's instances-only check, is no evidence).
    pub fn asks_enough(&self, depth: u32) -> bool {
        let has = |kind: &str| self.resource_types.iter().any(|(k, _)| k == kind);
        has("ec2:Instance")
            && self.resource_types.iter().any(|(k, d)| k == "ec2:LaunchTemplate" && d.is_some_and(|d| d >= depth))
    }

    /// The uses it shows (entries with a count).
    pub fn uses(&self) -> impl Iterator<Item = &UsageEntry> {
        self.entries.iter().flatten().filter(|e| e.usage_count > 0)
    }
}

/// The usage report amiguard asked for (the ledger's id), what the image's launch permissions
/// were then, and the launch-template depth it must have read.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub report_id: Option<&'a str>,
    pub with: Option<&'a LaunchPermissions>,
    pub depth: u32,
}

/// amiguard's own report when it is evidence (of this image, available, unexpired, reading
/// instances and launch templates `depth` deep, covering every account of `permissions`, asked for
/// when the sharing was at least `permissions`, made after `made_after`, its entries read), or why
/// it is not. Any other report (a person's, another tool's) is never evidence to advance.
pub fn report_evidence<'a>(
    image_id: &str,
    permissions: &LaunchPermissions,
    reports: &'a [UsageReport],
    asked: &Asked<'_>,
    made_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<&'a UsageReport, String> {
    let Some(own) = asked.report_id else { return Err("no usage report yet".into()) };
    let Some(report) = reports.iter().find(|r| r.report_id == own && r.image_id == image_id) else {
        return Err(format!("usage report {own} not listed for this image"));
    };
    let id = &report.report_id;
    match report.state.as_str() {
        "available" => {}
        "pending" => return Err(format!("usage report {id} pending")),
        state => return Err(format!("usage report {id} in state {state}")),
    }
    if !report.is_live(now) {
        return Err(format!("usage report {id} expired"));
    }
    if !report.asks_enough(asked.depth) {
        return Err(format!(
            "usage report {id} does not read instances and launch templates USAGE_REPORT_TEMPLATE_DEPTH deep"
        ));
    }
    if !report.covers(permissions) {
        return Err(format!("usage report {id} does not cover every account the image is shared with"));
    }
    if !asked.with.is_some_and(|then| permissions.within(then)) {
        return Err(format!("the image's sharing changed since usage report {id} was asked for"));
    }
    if report.created.is_none_or(|c| c < made_after) {
        return Err(format!(
            "usage report {id} older than the stage + USAGE_REPORT_LAG_DAYS (made before {})",
            made_after.to_rfc3339()
        ));
    }
    if report.entries.is_none() {
        return Err(format!("usage report {id}: its entries could not be read"));
    }
    Ok(report)
}
