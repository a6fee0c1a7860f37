//! The sweep's report as data, and what is computed from it: each region's outcome (what the
//! plan found, what the deletions came to), the whole length of each list, the run's totals,
//! the lists cut to fit one log event, and the summary in words (the SNS subject and message).
//! Its JSON, field by field and in this order, is the function's contract (`report.rs` names it).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::facts::{FastSnapshotRestore, KeepReason};
use super::grace;
use super::planner::{Orphan, Plan, SnapshotTotal};
use super::retire::ImageKeepReason;
use super::savings::gib;
pub use super::savings::FreedSnapshot;
use super::stage_report::{RetirementStageEntry, StageTotals};

/// The most entries any list of the report shows (fewer when the report would not fit one log
/// event); the counts are always whole, and the full lists are in the ledger.
pub const LIST_LIMIT: usize = 200;
/// CloudWatch Logs takes events of up to 256 KB: the logged report stays under this.
pub const MAX_REPORT_BYTES: usize = 200_000;
/// EBS snapshot archive storage, USD per GB-month (us-east-1), billed for at least 90 days: what
/// deleting an archived snapshot early would still cost, at most.
pub const ARCHIVE_PRICE_PER_GB_MONTH: f64 = super::savings::ARCHIVE_PRICE_PER_GB_MONTH;
pub const ARCHIVE_MINIMUM_MONTHS: f64 = 3.0;
/// Fast Snapshot Restore, USD per snapshot and Availability Zone and hour (us-east-1).
pub const FAST_SNAPSHOT_RESTORE_PRICE_PER_HOUR: f64 = 0.75;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub account_id: String,
    /// The Lambda request id: the journal's key (`pk = run#<run_id>`).
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub regions: Vec<RegionReport>,
    pub retired_images: Vec<RetiredImage>,
    /// `RECYCLE_BIN_RETENTION_DAYS` in the stack's region: how long what this run deleted there
    /// stays restorable (0: deletions are final).
    pub recycle_bin_retention_days: u32,
    pub totals: Totals,
    /// Things worth a look that did not stop the run (a summary that could not be published, ...),
    /// bounded like every list (`totals.warnings` counts them all).
    pub warnings: Vec<String>,
    /// Where the full lists are, when the report's lists are cut to fit (see `counts`, and
    /// `totals.warnings`).
    pub full_lists: Option<String>,
    /// `null` without `REPORT_TOPIC_ARN`; otherwise whether SNS accepted the summary. Always
    /// `null` in the report's log line, which is written before the publish: the second log line
    /// (`summary_published`, `run_recorded`) says how it went.
    pub summary_published: Option<bool>,
}

/// A waiting orphan: deletable once amiguard has seen it orphaned for `MIN_AGE_HOURS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingOrphan {
    #[serde(flatten)]
    pub orphan: Orphan,
    pub deletable_after: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ArchivedSnapshots {
    pub count: u64,
    pub gib: u64,
    pub early_deletion_cost_usd_at_most: f64,
}

/// The whole length of each list of a region report (the lists themselves may be cut).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ListCounts {
    pub orphans: u64,
    pub waiting: u64,
    pub deleted: u64,
    pub already_gone: u64,
    pub failed: u64,
    pub left_for_next_run: u64,
    pub unwitnessed: u64,
    /// With staged retirement: the whole length of `retirement_stages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retirement_stages: Option<u64>,
    /// The planned deletions' savings entries (`EXACT_SAVINGS`).
    #[serde(skip_serializing_if = "is_zero")]
    pub freed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionReport {
    pub region: String,
    pub snapshots_scanned: u64,
    pub images_scanned: u64,
    /// Every orphan past its grace period, oldest first, those whose deletion failed in an
    /// earlier run last (also those beyond the cap or held by the breaker).
    pub orphans: Vec<Orphan>,
    /// How many of `orphans` failed to delete in an earlier run (they queue behind the others).
    pub orphans_failed_before: u64,
    /// Orphans in their grace period, with the time each becomes deletable (soonest first).
    pub waiting: Vec<WaitingOrphan>,
    /// Orphans amiguard never witnessed (their AMI known only from a description), kept unless
    /// `ADOPT_UNWITNESSED_ORPHANS=true`: each with its size and since when it is an orphan (its
    /// clock runs while it is kept), oldest first, for a person to read before adopting them.
    pub unwitnessed: Vec<Orphan>,
    /// The size of all unwitnessed orphans (what adopting them would free at most).
    pub unwitnessed_gib: u64,
    /// How many of the orphans this run set out to delete (in a dry run: would delete).
    pub planned_deletions: u64,
    /// Deletions AWS confirmed. Nothing else is ever counted as deleted.
    pub deleted: Vec<String>,
    /// Until when every snapshot in `deleted` can be restored from the Recycle Bin (the earliest
    /// of their times; each one's own is in the journal). `null`: no deletion, or no retention
    /// rule in this region (`RECYCLE_BIN_RETENTION_DAYS` 0, or a region other than the stack's).
    pub restorable_until: Option<DateTime<Utc>>,
    /// `InvalidSnapshot.NotFound` on delete: someone else deleted it first.
    pub already_gone: Vec<String>,
    pub failed: Vec<FailedDeletion>,
    /// Planned but not started because the invocation's deadline was near: the next run's.
    pub left_for_next_run: Vec<String>,
    pub kept: BTreeMap<KeepReason, u64>,
    pub unreferenced_manual: SnapshotTotal,
    /// Snapshots kept in the archive tier, and what deleting them now would still cost at most
    /// (the rest of their 90-day minimum).
    pub archived: ArchivedSnapshots,
    /// Snapshots with Fast Snapshot Restore on (decides nothing: it costs by the hour).
    pub fast_snapshot_restores: Vec<FastSnapshotRestore>,
    pub fast_snapshot_restore_cost_usd_per_hour: f64,
    pub reclaimable_gib: u64,
    /// `reclaimable_gib` x `PRICE_PER_GB_MONTH`: an upper bound (snapshots are incremental).
    pub estimated_monthly_savings_usd: f64,
    /// Why this region deleted nothing (a failed listing, the circuit breaker), or `null`.
    pub aborted: Option<String>,
    /// With `RETIRE_UNUSED_AMIS_AFTER_DAYS`: the images not retired, by reason.
    pub images_kept: BTreeMap<ImageKeepReason, u64>,
    /// With `RETIRE_UNUSED_AMIS_AFTER_DAYS`: why no image was retired in this region, or `null`.
    pub retirement_skipped: Option<String>,
    /// Items this sweep wrote to the ledger for the region before deleting (0 when nothing changed).
    pub ledger_writes: u64,
    /// The whole length of each list above.
    pub counts: ListCounts,
    /// With staged retirement (`RETIRE_STAGES` of more than `deregister`): every image in a stage
    /// or with a next stage, those this run changed first (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retirement_stages: Option<Vec<RetirementStageEntry>>,
    /// With staged retirement: per stage, its images after the run and their monthly cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retirement_stage_totals: Option<StageTotals>,
    /// What each planned deletion frees (a dry run's too), in the order they are planned: absent
    /// when none is planned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freed: Vec<FreedSnapshot>,
    /// The sum of the exact figures of `freed`, and what they cost a month by tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_monthly_usd: Option<f64>,
    /// The sum of the bounds of `freed` (deletions with no exact figure), and their monthly cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes_at_most: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_monthly_usd_at_most: Option<f64>,
    /// How the region's snapshots were listed: in one sequence or in partitions (which were
    /// complete, cut, left for the next run; calls; throttled answers), and the passes' sizes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_listing: Option<super::partitions::ListingReport>,
}

impl RegionReport {
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            snapshots_scanned: 0,
            images_scanned: 0,
            orphans: Vec::new(),
            orphans_failed_before: 0,
            waiting: Vec::new(),
            unwitnessed: Vec::new(),
            unwitnessed_gib: 0,
            planned_deletions: 0,
            deleted: Vec::new(),
            restorable_until: None,
            already_gone: Vec::new(),
            failed: Vec::new(),
            left_for_next_run: Vec::new(),
            kept: BTreeMap::new(),
            unreferenced_manual: SnapshotTotal::default(),
            archived: ArchivedSnapshots::default(),
            fast_snapshot_restores: Vec::new(),
            fast_snapshot_restore_cost_usd_per_hour: 0.0,
            reclaimable_gib: 0,
            estimated_monthly_savings_usd: 0.0,
            aborted: None,
            images_kept: BTreeMap::new(),
            retirement_skipped: None,
            ledger_writes: 0,
            counts: ListCounts::default(),
            retirement_stages: None,
            retirement_stage_totals: None,
            freed: Vec::new(),
            freed_bytes: None,
            freed_monthly_usd: None,
            freed_bytes_at_most: None,
            freed_monthly_usd_at_most: None,
            snapshot_listing: None,
        }
    }

    /// What the plan found, as the report says it.
    pub fn fill_from_plan(&mut self, plan: &Plan, price_per_gb_month: f64) {
        self.snapshots_scanned = plan.snapshots_scanned;
        self.planned_deletions = plan.to_delete.len() as u64;
        self.kept = plan.kept.clone();
        self.unreferenced_manual = plan.unreferenced_manual;
        self.archived = ArchivedSnapshots {
            count: plan.archived.count,
            gib: plan.archived.gib,
            early_deletion_cost_usd_at_most: cents(
                plan.archived.gib as f64 * ARCHIVE_PRICE_PER_GB_MONTH * ARCHIVE_MINIMUM_MONTHS,
            ),
        };
        self.reclaimable_gib = plan.reclaimable_gib;
        self.estimated_monthly_savings_usd = monthly_cost(plan.reclaimable_gib, price_per_gb_month);
        self.orphans = plan.orphans.clone();
        self.unwitnessed = plan.unwitnessed.clone();
        self.unwitnessed_gib = plan.unwitnessed_gib;
        self.waiting = plan
            .waiting
            .iter()
            .map(|orphan| WaitingOrphan {
                orphan: orphan.clone(),
                deletable_after: grace::deletable_after(orphan.orphaned_since, plan.min_age),
            })
            .collect();
    }

    pub fn set_fast_snapshot_restores(&mut self, restores: Vec<FastSnapshotRestore>) {
        self.fast_snapshot_restore_cost_usd_per_hour =
            cents(restores.len() as f64 * FAST_SNAPSHOT_RESTORE_PRICE_PER_HOUR);
        self.fast_snapshot_restores = restores;
    }

    /// Takes the whole length of each list (before [`Report::bound`] cuts them).
    pub fn count(&mut self) {
        self.counts = ListCounts {
            orphans: self.orphans.len() as u64,
            waiting: self.waiting.len() as u64,
            deleted: self.deleted.len() as u64,
            already_gone: self.already_gone.len() as u64,
            failed: self.failed.len() as u64,
            left_for_next_run: self.left_for_next_run.len() as u64,
            unwitnessed: self.unwitnessed.len() as u64,
            retirement_stages: self.retirement_stages.as_ref().map(|list| list.len() as u64),
            freed: self.freed.len() as u64,
        };
    }

    fn cut(&mut self, limit: usize) {
        self.orphans.truncate(limit);
        self.waiting.truncate(limit);
        self.deleted.truncate(limit);
        self.already_gone.truncate(limit);
        self.failed.truncate(limit);
        self.left_for_next_run.truncate(limit);
        self.fast_snapshot_restores.truncate(limit);
        self.unwitnessed.truncate(limit);
        if let Some(list) = &mut self.retirement_stages {
            list.truncate(limit);
        }
        self.freed.truncate(limit);
    }
}

impl Report {
    /// Cuts every list to what fits one log event (at most [`LIST_LIMIT`] entries each, fewer
    /// for a large run), after the counts and totals were taken from the whole lists. Answers the
    /// warnings cut from the report (to be logged one a line: the journal and the orphans'
    /// clocks are in the ledger, the warnings only in the log), and `full_lists` then says so.
    pub fn bound(&mut self) -> Vec<String> {
        self.totals.warnings = self.warnings.len() as u64;
        let mut limit = LIST_LIMIT;
        let mut cut = Vec::new();
        loop {
            for region in &mut self.regions {
                region.cut(limit);
            }
            self.retired_images.truncate(limit);
            if self.warnings.len() > limit {
                let mut rest = self.warnings.split_off(limit);
                rest.append(&mut cut);
                cut = rest;
            }
            let size = serde_json::to_string(self).map_or(0, |json| json.len());
            if size <= MAX_REPORT_BYTES || limit == 0 {
                break;
            }
            limit /= 2;
        }
        if !cut.is_empty() {
            let where_warnings_are = format!(
                "the {} warning(s) not shown here: this run's log, one `warning` line each (run_id {})",
                cut.len(),
                self.run_id
            );
            self.full_lists = Some(match self.full_lists.take() {
                Some(lists) => format!("{lists}; {where_warnings_are}"),
                None => where_warnings_are,
            });
        }
        cut
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDeletion {
    pub snapshot_id: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetiredImage {
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub creation_date: Option<DateTime<Utc>>,
    pub snapshot_ids: Vec<String>,
    pub outcome: RetireOutcome,
    /// For `deregistered`: until when the AMI can be restored from the Recycle Bin (`null`: no
    /// retention rule in its region). Its snapshots stay while it is in the bin.
    pub restorable_until: Option<DateTime<Utc>>,
    /// For `failed`: the AWS error.
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireOutcome {
    /// AWS confirmed the deregistration.
    Deregistered,
    /// `InvalidAMIID.NotFound` / `.Unavailable`: it was already gone.
    AlreadyGone,
    /// A dry run: it would be deregistered.
    DryRun,
    Failed,
    /// Not started: the invocation's deadline was near.
    LeftForNextRun,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub snapshots_scanned: u64,
    pub orphans: u64,
    /// Orphans in their grace period.
    pub waiting: u64,
    pub planned_deletions: u64,
    pub deleted: u64,
    pub already_gone: u64,
    pub failed: u64,
    pub left_for_next_run: u64,
    pub reclaimable_gib: u64,
    pub estimated_monthly_savings_usd: f64,
    pub unreferenced_manual_count: u64,
    pub unreferenced_manual_gib: u64,
    pub regions_aborted: u64,
    pub images_retired: u64,
    /// Orphans kept `unwitnessed`, and their size.
    pub unwitnessed_count: u64,
    pub unwitnessed_gib: u64,
    /// The run's warnings, all of them (the report's `warnings` may show fewer).
    pub warnings: u64,
    /// With staged retirement: per stage, its images after the run and their monthly cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retirement_stages: Option<StageTotals>,
    /// What the planned deletions free, over the regions: exact figures (`freed_bytes`) and
    /// bounds (`freed_bytes_at_most`) apart, each with its monthly cost by tier. Absent when no
    /// region planned a deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_monthly_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes_at_most: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_monthly_usd_at_most: Option<f64>,
}

/// `Some(a + b)` when either is there.
fn add<T: std::ops::Add<Output = T> + Default>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
    }
}

/// Dollars, to the cent.
pub fn monthly_cost(gib: u64, price_per_gb_month: f64) -> f64 {
    cents(gib as f64 * price_per_gb_month)
}

pub(crate) fn cents(usd: f64) -> f64 {
    (usd * 100.0).round() / 100.0
}

pub fn totals(regions: &[RegionReport], retired: &[RetiredImage], price_per_gb_month: f64) -> Totals {
    let mut t = Totals::default();
    for r in regions {
        t.snapshots_scanned += r.snapshots_scanned;
        t.orphans += r.counts.orphans;
        t.waiting += r.counts.waiting;
        t.planned_deletions += r.planned_deletions;
        t.deleted += r.counts.deleted;
        t.already_gone += r.counts.already_gone;
        t.failed += r.counts.failed;
        t.left_for_next_run += r.counts.left_for_next_run;
        t.reclaimable_gib += r.reclaimable_gib;
        t.unreferenced_manual_count += r.unreferenced_manual.count;
        t.unreferenced_manual_gib += r.unreferenced_manual.gib;
        t.regions_aborted += u64::from(r.aborted.is_some());
        t.unwitnessed_count += r.counts.unwitnessed;
        t.unwitnessed_gib += r.unwitnessed_gib;
        t.freed_bytes = add(t.freed_bytes, r.freed_bytes);
        t.freed_monthly_usd = add(t.freed_monthly_usd, r.freed_monthly_usd).map(cents);
        t.freed_bytes_at_most = add(t.freed_bytes_at_most, r.freed_bytes_at_most);
        t.freed_monthly_usd_at_most = add(t.freed_monthly_usd_at_most, r.freed_monthly_usd_at_most).map(cents);
    }
    t.estimated_monthly_savings_usd = monthly_cost(t.reclaimable_gib, price_per_gb_month);
    let staged: Vec<&StageTotals> = regions.iter().filter_map(|r| r.retirement_stage_totals.as_ref()).collect();
    if !staged.is_empty() {
        t.retirement_stages = Some(StageTotals::sum(staged.into_iter(), price_per_gb_month));
    }
    t.images_retired = retired
        .iter()
        .filter(|i| matches!(i.outcome, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone))
        .count() as u64;
    t
}

/// The SNS subject: what happened, in a line.
pub fn summary_subject(report: &Report) -> String {
    let t = &report.totals;
    let mode = if report.dry_run { " (dry run)" } else { "" };
    let aborted =
        if t.regions_aborted > 0 { format!(", {} region(s) ABORTED", t.regions_aborted) } else { String::new() };
    format!(
        "amiguard sweep {}{mode}: {} orphans, {} deleted, {} failed{aborted}",
        report.account_id, t.orphans, t.deleted, t.failed
    )
}

/// The SNS message: readable by a person, one paragraph per region.
pub fn summary_text(report: &Report) -> String {
    let mut text = String::new();
    let t = &report.totals;
    let _ = writeln!(
        text,
        "orphan-snapshot-sweeper, account {}, {}{}",
        report.account_id,
        report.started_at.to_rfc3339(),
        if report.dry_run { ", DRY RUN: nothing was changed" } else { "" }
    );
    let _ = writeln!(
        text,
        "Total: {} snapshots scanned, {} orphans ({} GiB, up to ${:.2}/month), {} deleted, {} already gone, {} failed, {} left for the next run.",
        t.snapshots_scanned, t.orphans, t.reclaimable_gib, t.estimated_monthly_savings_usd, t.deleted, t.already_gone, t.failed, t.left_for_next_run
    );
    for r in &report.regions {
        let _ = writeln!(text);
        let _ = writeln!(text, "{}:", r.region);
        if let Some(reason) = &r.aborted {
            let _ = writeln!(text, "  ABORTED: {reason}");
        }
        let _ = writeln!(
            text,
            "  {} snapshots, {} images scanned; {} orphans ({} GiB, up to ${:.2}/month); {} planned, {} deleted, {} already gone, {} failed, {} left for the next run",
            r.snapshots_scanned,
            r.images_scanned,
            r.counts.orphans,
            r.reclaimable_gib,
            r.estimated_monthly_savings_usd,
            r.planned_deletions,
            r.counts.deleted,
            r.counts.already_gone,
            r.counts.failed,
            r.counts.left_for_next_run
        );
        if let (Some(exact), Some(at_most)) = (r.freed_bytes, r.freed_bytes_at_most) {
            let _ = writeln!(
                text,
                "  the planned deletions free {:.2} GiB exactly (${:.2}/month), and at most {:.2} GiB more where there is no exact figure (up to ${:.2}/month)",
                gib(exact),
                r.freed_monthly_usd.unwrap_or_default(),
                gib(at_most),
                r.freed_monthly_usd_at_most.unwrap_or_default()
            );
        }
        if let Some(first) = r.waiting.first() {
            let _ = writeln!(
                text,
                "  {} orphans in their grace period (amiguard saw them orphaned less than MIN_AGE_HOURS ago); the first becomes deletable at {}",
                r.counts.waiting,
                first.deletable_after.to_rfc3339()
            );
        }
        if !r.kept.is_empty() {
            let kept: Vec<String> = r.kept.iter().map(|(reason, n)| format!("{} {n}", json_name(reason))).collect();
            let _ = writeln!(text, "  kept: {}", kept.join(", "));
        }
        if r.archived.count > 0 {
            let _ = writeln!(
                text,
                "  archived snapshots (kept: billed for 90 days anyway; deleting them now would still cost up to ${:.2}): {} ({} GiB)",
                r.archived.early_deletion_cost_usd_at_most, r.archived.count, r.archived.gib
            );
        }
        if !r.fast_snapshot_restores.is_empty() {
            let _ = writeln!(
                text,
                "  Fast Snapshot Restore on: {} snapshot-zone(s), ${:.2}/hour",
                r.fast_snapshot_restores.len(),
                r.fast_snapshot_restore_cost_usd_per_hour
            );
        }
        if r.counts.unwitnessed > 0 {
            let _ = writeln!(
                text,
                "  unwitnessed orphans (kept: amiguard never saw their AMI map them, only a description names it; read the report's list, then ADOPT_UNWITNESSED_ORPHANS=true deletes them): {} ({} GiB)",
                r.counts.unwitnessed, r.unwitnessed_gib
            );
        }
        if r.unreferenced_manual.count > 0 {
            let _ = writeln!(
                text,
                "  manual snapshots no image uses (never deleted, review them): {} ({} GiB)",
                r.unreferenced_manual.count, r.unreferenced_manual.gib
            );
        }
        for f in &r.failed {
            let _ = writeln!(text, "  failed: {} {}: {}", f.snapshot_id, f.code, f.message);
        }
        if let Some(reason) = &r.retirement_skipped {
            let _ = writeln!(text, "  no image retired: {reason}");
        }
        if let Some(stages) = &r.retirement_stage_totals {
            let _ = writeln!(
                text,
                "  retirement stages: {} deprecated, {} disabled (${:.2}/month held), {} deregistered this run",
                stages.deprecated.images,
                stages.disabled.images,
                stages.deprecated.monthly_cost_usd + stages.disabled.monthly_cost_usd,
                stages.deregistered.images
            );
        }
    }
    if !report.retired_images.is_empty() {
        let _ = writeln!(text);
        let _ = writeln!(text, "Unused images retired:");
        for i in &report.retired_images {
            let _ = writeln!(text, "  {} {} ({}): {}", i.region, i.image_id, i.name, json_name(&i.outcome));
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(text, "warning: {warning}");
    }
    let unshown = report.totals.warnings.saturating_sub(report.warnings.len() as u64);
    if unshown > 0 {
        let _ = writeln!(text, "and {unshown} more warning(s): see full_lists");
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Savings are an upper bound: EBS snapshots are incremental, so deleting one frees at most the size of its volume."
    );
    if t.freed_bytes.is_some() {
        let _ = writeln!(
            text,
            "What the planned deletions free exactly is read from the EBS direct APIs (EXACT_SAVINGS): each region's `freed` list says which figure is exact and why the others are bounds."
        );
    }
    text
}

/// The name serde gives a unit variant (`referenced_by_image`).
pub fn json_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => "?".to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    /// A run over two regions: one with an orphan whose deletion failed, one aborted.
    pub(crate) fn report() -> Report {
        let mut r = RegionReport::new("us-east-1");
        r.snapshots_scanned = 10;
        r.images_scanned = 2;
        r.orphans = vec![Orphan {
            snapshot_id: "snap-01".into(),
            size_gib: 30,
            source_image_id: "ami-0a".into(),
            start_time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            orphaned_since: Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
        }];
        r.planned_deletions = 1;
        r.failed = vec![FailedDeletion {
            snapshot_id: "snap-01".into(),
            code: "InvalidSnapshot.InUse".into(),
            message: "in use".into(),
        }];
        r.kept = BTreeMap::from([(KeepReason::ReferencedByImage, 2), (KeepReason::NotFromImage, 7)]);
        r.unreferenced_manual = SnapshotTotal { count: 7, gib: 700 };
        r.reclaimable_gib = 30;
        r.estimated_monthly_savings_usd = 1.5;
        let mut aborted = RegionReport::new("eu-west-1");
        aborted.aborted = Some("listing images failed".into());
        let mut regions = vec![r, aborted];
        regions.iter_mut().for_each(RegionReport::count);
        let totals = totals(&regions, &[], 0.05);
        Report {
            dry_run: false,
            account_id: "123456789012".into(),
            run_id: "r-1".into(),
            full_lists: None,
            started_at: Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
            regions,
            retired_images: vec![],
            recycle_bin_retention_days: 0,
            totals,
            warnings: vec![],
            summary_published: None,
        }
    }

    #[test]
    fn totals_add_up_the_regions() {
        let t = report().totals;
        assert_eq!((t.snapshots_scanned, t.orphans, t.failed, t.deleted), (10, 1, 1, 0));
        assert_eq!((t.reclaimable_gib, t.estimated_monthly_savings_usd), (30, 1.5));
        assert_eq!((t.unreferenced_manual_count, t.unreferenced_manual_gib, t.regions_aborted), (7, 700, 1));
        assert_eq!(monthly_cost(3, 0.0333), 0.1);
    }

    #[test]
    fn the_report_serialises_with_the_contract_field_names() {
        let value = serde_json::to_value(report()).unwrap();
        let region = &value["regions"][0];
        for field in [
            "region",
            "snapshots_scanned",
            "images_scanned",
            "orphans",
            "deleted",
            "failed",
            "kept",
            "unreferenced_manual",
            "reclaimable_gib",
            "estimated_monthly_savings_usd",
            "aborted",
        ] {
            assert!(region.get(field).is_some(), "missing {field}");
        }
        assert_eq!(
            region["orphans"][0],
            json!({"snapshot_id": "snap-01", "size_gib": 30, "source_image_id": "ami-0a", "start_time": "2026-01-01T00:00:00Z", "orphaned_since": "2026-05-01T00:00:00Z"})
        );
        assert_eq!(
            region["failed"][0],
            json!({"snapshot_id": "snap-01", "code": "InvalidSnapshot.InUse", "message": "in use"})
        );
        assert_eq!(region["kept"], json!({"referenced_by_image": 2, "not_from_image": 7}));
        assert_eq!(region["unreferenced_manual"], json!({"count": 7, "gib": 700}));
        assert_eq!(region["aborted"], Value::Null);
        assert_eq!(value["regions"][1]["aborted"], "listing images failed");
        assert_eq!(value["dry_run"], false);
        assert_eq!(value["retired_images"], json!([]));
    }

    #[test]
    fn warnings_are_bounded_like_every_list_and_full_lists_says_where_the_rest_is() {
        let mut report = report();
        report.warnings = (0..1000).map(|i| format!("eu-west-1: snap-{i:05} kept: could not be read")).collect();
        let cut = report.bound();
        assert_eq!(report.totals.warnings, 1000, "the count is whole");
        assert_eq!(report.warnings.len(), LIST_LIMIT);
        assert_eq!(cut.len(), 1000 - LIST_LIMIT, "every warning is either shown or answered");
        assert_eq!(cut[0], format!("eu-west-1: snap-{LIST_LIMIT:05} kept: could not be read"), "in order");
        let full = report.full_lists.clone().unwrap();
        assert!(full.contains("800 warning(s)") && full.contains("r-1"), "{full}");
        assert!(summary_text(&report).contains("and 800 more warning(s)"));

        // A report that fits shows them all and says nothing more.
        let mut small = super::tests::report();
        small.warnings = vec!["one".into()];
        assert!(small.bound().is_empty());
        assert_eq!((small.totals.warnings, small.full_lists), (1, None));
    }

    #[test]
    fn freed_figures_add_up_exact_and_bounds_apart_by_region_and_run() {
        use crate::core::savings::{Freed, Prices, Tier, GIB};
        let prices = Prices { standard_per_gb_month: 0.05 };
        let mut report = report();
        let exact = FreedSnapshot::new("snap-01", &Freed::Exact { bytes: 2 * GIB }, Tier::Standard, &prices);
        let bound = FreedSnapshot::new(
            "snap-02",
            &Freed::AtMost { bytes: 8 * GIB, why: "a copy".into() },
            Tier::Standard,
            &prices,
        );
        let archived = FreedSnapshot::new("snap-03", &Freed::Exact { bytes: 100 * GIB }, Tier::Archive, &prices);
        report.regions[0].set_freed(vec![exact, bound, archived]);
        let r = &report.regions[0];
        assert_eq!((r.freed_bytes, r.freed_bytes_at_most), (Some(102 * GIB), Some(8 * GIB)));
        assert_eq!((r.freed_monthly_usd, r.freed_monthly_usd_at_most), (Some(1.35), Some(0.4)), "by tier: 0.10 + 1.25");
        report.regions[1].set_freed(vec![]);
        assert_eq!(report.regions[1].freed_bytes, None, "nothing planned: not applicable");
        report.regions.iter_mut().for_each(RegionReport::count);
        let t = totals(&report.regions, &[], 0.05);
        assert_eq!((t.freed_bytes, t.freed_bytes_at_most), (Some(102 * GIB), Some(8 * GIB)));
        assert_eq!((t.estimated_monthly_savings_usd, t.reclaimable_gib), (1.5, 30), "the bound as before");
        let value = serde_json::to_value(&report.regions[0]).unwrap();
        assert_eq!(
            value["freed"][1],
            json!({"snapshot_id": "snap-02", "freed_bytes_at_most": 8 * GIB, "why_at_most": "a copy", "tier": "standard", "monthly_usd": 0.4})
        );
        assert_eq!(value["counts"]["freed"], 3);
        report.totals = t;
        assert!(summary_text(&report).contains("free 102.00 GiB exactly ($1.35/month), and at most 8.00 GiB more"));
        // A report without planned deletions has none of these fields.
        let plain = serde_json::to_value(super::tests::report()).unwrap();
        for field in ["freed", "freed_bytes", "freed_bytes_at_most"] {
            assert!(plain["regions"][0].get(field).is_none() && plain["totals"].get(field).is_none(), "{field}");
        }
        assert!(plain["regions"][0]["counts"].get("freed").is_none());
    }

    #[test]
    fn the_summary_reads_well() {
        let report = report();
        assert_eq!(
            summary_subject(&report),
            "amiguard sweep 123456789012: 1 orphans, 0 deleted, 1 failed, 1 region(s) ABORTED"
        );
        let text = summary_text(&report);
        assert!(
            text.contains("us-east-1:\n  10 snapshots, 2 images scanned; 1 orphans (30 GiB, up to $1.50/month)"),
            "{text}"
        );
        assert!(text.contains("kept: referenced_by_image 2, not_from_image 7"), "{text}");
        assert!(text.contains("failed: snap-01 InvalidSnapshot.InUse: in use"), "{text}");
        assert!(text.contains("eu-west-1:\n  ABORTED: listing images failed"), "{text}");
        assert!(text.contains("upper bound"), "{text}");
        let dry = Report { dry_run: true, ..report };
        assert!(summary_subject(&dry).contains("(dry run)"));
        assert!(summary_text(&dry).contains("DRY RUN"));
    }
}
