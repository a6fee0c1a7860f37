//! orphan-snapshot-sweeper: on a schedule, finds the EBS snapshots that deregistered AMIs left
//! behind in each configured region and deletes them (a dry run by default), keeping everything a
//! safety rule protects and saying why. Optionally retires old, unused AMIs first.
//!
//! The handler gathers facts through [`SweeperEc2`], asks the pure planners in
//! `amiguard::sweeper` what to do, acts, and returns a [`Report`]. Per region, in this order:
//! list snapshots, then images (so an AMI registered in between is seen), then the Recycle Bin;
//! any failed listing aborts that region with zero deletions. The invocation still answers with
//! the report: an error is only for an event it must not act on.

pub mod config;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use amiguard::events::{parse_envelope, EventError};
use amiguard::sweeper::{
    plan, plan_retirement, ImageFacts, Orphan, PlanInput, Policy, RetireInput, RetirePolicy, SummaryPublisher,
    SweeperEc2,
};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

pub use config::Config;
pub use report::{FailedDeletion, RegionReport, Report, RetireOutcome, RetiredImage, FUNCTION};

/// The only `detail-type` the sweeper acts on.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
/// Deletions in flight at once per region. The SDK's adaptive retry slows them further when
/// EC2 throttles.
pub const DELETE_CONCURRENCY: usize = 8;
/// No new deletion starts with less than this left before the Lambda deadline: it leaves room
/// for the ones in flight (each bounded by the SDK's timeouts) and for the report.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The `detail` of the scheduled event. Any object is accepted; `dry_run: true` forces a dry run
/// (it can only make a run drier: `false` never overrides `DRY_RUN=true`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScheduledDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// The facts of this invocation that are not in the event: the planners' clock and Lambda's
/// deadline (`None` when unknown).
#[derive(Debug, Clone, Copy)]
pub struct Invocation {
    pub now: DateTime<Utc>,
    pub deadline: Option<SystemTime>,
}

impl Invocation {
    /// From `LambdaEvent.context.deadline` (milliseconds since the epoch).
    pub fn from_lambda_deadline(deadline_ms: u64) -> Self {
        Self { now: Utc::now(), deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms)) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Not a scheduled event, or a malformed one: nothing was looked at or changed.
    #[error(transparent)]
    Event(#[from] EventError),
}

impl From<SweepError> for lambda_runtime::Diagnostic {
    fn from(err: SweepError) -> Self {
        match err {
            SweepError::Event(e) => e.into(),
        }
    }
}

/// One invocation: parse the event, sweep every region in order, publish and log the report.
pub async fn handle<E, P>(
    config: &Config,
    regions: &[(String, E)],
    publisher: &P,
    payload: &serde_json::Value,
    invocation: Invocation,
) -> Result<Report, SweepError>
where
    E: SweeperEc2,
    P: SummaryPublisher,
{
    let (account_id, detail) = parse_event(payload)?;
    let dry_run = config.dry_run || detail.dry_run == Some(true);
    let mut warnings = Vec::new();
    let deadline = match invocation.deadline {
        Some(at) if at <= SystemTime::now() => {
            // Lambda never hands out a deadline already past; local emulators do (cargo lambda
            // watch sends a fixed one in 1970). Such a run is bounded by the function timeout only.
            warnings.push("the invocation deadline was already past at start (a local emulator?): deletions were not time-bounded".to_string());
            None
        }
        other => other,
    };
    let run = Run { config, account_id: &account_id, dry_run, now: invocation.now, deadline };

    let mut budget = u64::from(config.max_deletions);
    let mut region_reports = Vec::new();
    let mut retired_images = Vec::new();
    for (region, ec2) in regions {
        let swept = run.sweep_region(region, ec2, &mut budget, &mut retired_images, &mut warnings).await;
        region_reports.push(swept);
    }
    let totals = report::totals(&region_reports, &retired_images, config.price_per_gb_month);
    let mut report = Report {
        dry_run,
        account_id,
        started_at: invocation.now,
        regions: region_reports,
        retired_images,
        totals,
        warnings,
        summary_published: None,
    };

    if let Some(topic) = &config.report_topic_arn {
        let published =
            publisher.publish(topic, &report::summary_subject(&report), &report::summary_text(&report)).await;
        if let Err(err) = &published {
            report.warnings.push(format!("the summary could not be published to {topic}: {err}"));
        }
        report.summary_published = Some(published.is_ok());
    }
    amiguard::report::log(FUNCTION, &report);
    println!("{}", report::emf(&report, Utc::now()));
    Ok(report)
}

/// The account and detail of a `Scheduled Event`; anything else is refused before any AWS call.
fn parse_event(payload: &serde_json::Value) -> Result<(String, ScheduledDetail), EventError> {
    let detail_type = payload.get("detail-type");
    if detail_type.and_then(|d| d.as_str()) != Some(SCHEDULED_EVENT) {
        let got = detail_type.map_or_else(|| "no detail-type".to_string(), |d| format!("detail-type {d}"));
        return Err(EventError::Unexpected(format!(
            "orphan-snapshot-sweeper acts only on an EventBridge `{SCHEDULED_EVENT}`, got {got}; nothing was done"
        )));
    }
    let event = parse_envelope::<ScheduledDetail>(payload)?;
    let account = event.account.unwrap_or_default();
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(EventError::Malformed(format!(
            "`account` must be the 12-digit id of the account to sweep, got {account:?}"
        )));
    }
    Ok((account, event.detail))
}

/// What every region of one invocation shares.
struct Run<'a> {
    config: &'a Config,
    account_id: &'a str,
    dry_run: bool,
    now: DateTime<Utc>,
    deadline: Option<SystemTime>,
}

/// What deleting one snapshot came to.
enum Deletion {
    Deleted(String),
    AlreadyGone(String),
    Failed(FailedDeletion),
    NotStarted(String),
}

/// What the retirement step of one region decided and did.
struct Retirement {
    /// The images gone (or, in a dry run, that would be): their snapshots become orphans.
    retired: Vec<ImageFacts>,
    /// Whether any image was really deregistered (the Recycle Bin may have taken it).
    deregistered_any: bool,
}

impl Run<'_> {
    fn deadline_is_near(&self) -> bool {
        self.deadline.is_some_and(|at| SystemTime::now() + DEADLINE_MARGIN >= at)
    }

    async fn sweep_region<E: SweeperEc2>(
        &self,
        region: &str,
        ec2: &E,
        budget: &mut u64,
        retired_out: &mut Vec<RetiredImage>,
        warnings: &mut Vec<String>,
    ) -> RegionReport {
        let mut report = RegionReport::new(region);
        let aborted = |mut report: RegionReport, what: &str, err: amiguard::AwsError| {
            tracing::warn!(region, error = %err, "{what} failed: region aborted, nothing deleted");
            report.aborted = Some(format!("{what} failed, nothing deleted in this region: {err}"));
            report
        };
        let snapshots = match ec2.snapshots(&self.config.protect_tag).await {
            Ok(snapshots) => snapshots,
            Err(err) => return aborted(report, "listing snapshots", err),
        };
        report.snapshots_scanned = snapshots.len() as u64;
        let images = match ec2.images(&self.config.protect_tag).await {
            Ok(images) => images,
            Err(err) => return aborted(report, "listing images", err),
        };
        report.images_scanned = images.len() as u64;
        let mut binned = BTreeSet::new();
        if self.config.recycle_bin_check {
            binned = match ec2.images_in_recycle_bin().await {
                Ok(binned) => binned,
                Err(err) => return aborted(report, "listing the Recycle Bin", err),
            };
        }

        let mut retired = Vec::new();
        if let Some(days) = self.config.retire_unused_amis_after_days {
            let retirement = self.retire(region, ec2, &images, days, budget, &mut report, retired_out, warnings).await;
            if retirement.deregistered_any && self.config.recycle_bin_check {
                // A retention rule may have put the images just deregistered in the Recycle Bin.
                binned = match ec2.images_in_recycle_bin().await {
                    Ok(binned) => binned,
                    Err(err) => return aborted(report, "listing the Recycle Bin after retiring images", err),
                };
            }
            retired = retirement.retired;
        }
        let retired_ids: BTreeSet<&str> = retired.iter().map(|i| i.image_id.as_str()).collect();
        let live: Vec<ImageFacts> =
            images.iter().filter(|i| !retired_ids.contains(i.image_id.as_str())).cloned().collect();

        let policy = Policy {
            min_age: chrono::Duration::hours(i64::from(self.config.min_age_hours)),
            max_delete_fraction: self.config.max_delete_fraction,
        };
        let input = PlanInput {
            account_id: self.account_id,
            now: self.now,
            snapshots: &snapshots,
            images: &live,
            retired_images: &retired,
            images_in_recycle_bin: &binned,
            budget: *budget,
        };
        let plan = plan(&input, &policy);
        *budget = budget.saturating_sub(plan.to_delete.len() as u64);
        report.snapshots_scanned = plan.snapshots_scanned;
        report.planned_deletions = plan.to_delete.len() as u64;
        report.kept = plan.kept;
        report.unreferenced_manual = plan.unreferenced_manual;
        report.reclaimable_gib = plan.reclaimable_gib;
        report.estimated_monthly_savings_usd =
            report::monthly_cost(plan.reclaimable_gib, self.config.price_per_gb_month);
        report.orphans = plan.orphans;
        if let Some(trip) = plan.circuit_breaker {
            tracing::warn!(region, %trip, "circuit breaker tripped");
            report.aborted = Some(trip.to_string());
        }
        if !self.dry_run {
            for outcome in self.delete(ec2, &plan.to_delete).await {
                match outcome {
                    Deletion::Deleted(id) => report.deleted.push(id),
                    Deletion::AlreadyGone(id) => report.already_gone.push(id),
                    Deletion::Failed(failed) => report.failed.push(failed),
                    Deletion::NotStarted(id) => report.left_for_next_run.push(id),
                }
            }
            report.deleted.sort();
            report.already_gone.sort();
            report.failed.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
            report.left_for_next_run.sort();
        }
        report
    }

    /// Deletes `orphans` with bounded concurrency. A deletion that has not started when the
    /// deadline is near is not started at all.
    async fn delete<E: SweeperEc2>(&self, ec2: &E, orphans: &[Orphan]) -> Vec<Deletion> {
        stream::iter(orphans)
            .map(|orphan| async move {
                let id = orphan.snapshot_id.to_string();
                if self.deadline_is_near() {
                    return Deletion::NotStarted(id);
                }
                match ec2.delete_snapshot(&id).await {
                    Ok(()) => Deletion::Deleted(id),
                    Err(err) if err.has_code("InvalidSnapshot.NotFound") => Deletion::AlreadyGone(id),
                    Err(err) => {
                        tracing::warn!(snapshot_id = %id, error = %err, "delete failed");
                        Deletion::Failed(FailedDeletion { snapshot_id: id, code: err.code, message: err.message })
                    }
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await
    }

    /// Plans and (unless a dry run) deregisters this region's unused AMIs. A listing it needs that
    /// fails skips retirement in the region (`retirement_skipped`); the sweep goes on.
    #[allow(clippy::too_many_arguments)]
    async fn retire<E: SweeperEc2>(
        &self,
        region: &str,
        ec2: &E,
        images: &[ImageFacts],
        days: u32,
        budget: &mut u64,
        report: &mut RegionReport,
        retired_out: &mut Vec<RetiredImage>,
        warnings: &mut Vec<String>,
    ) -> Retirement {
        let mut retirement = Retirement { retired: Vec::new(), deregistered_any: false };
        let used_by_instances = match ec2.images_used_by_instances().await {
            Ok(ids) => ids,
            Err(err) => {
                report.retirement_skipped = Some(format!("listing instances failed: {err}"));
                return retirement;
            }
        };
        let templates = match ec2.launch_template_images().await {
            Ok(templates) => templates,
            Err(err) => {
                report.retirement_skipped = Some(format!("listing launch template versions failed: {err}"));
                return retirement;
            }
        };
        if !templates.unresolved.is_empty() {
            report.retirement_skipped = Some(format!(
                "cannot tell which AMIs these launch template versions use: {}",
                templates.unresolved.join("; ")
            ));
            return retirement;
        }
        let policy = RetirePolicy {
            unused_for: chrono::Duration::days(i64::from(days)),
            protect_tag: self.config.protect_tag.clone(),
            max_delete_fraction: self.config.max_delete_fraction,
        };
        let unknown = BTreeMap::new();
        let input = RetireInput {
            account_id: self.account_id,
            now: self.now,
            images,
            used_by_instances: &used_by_instances,
            used_by_launch_templates: &templates.image_ids,
            sharing: &unknown,
            budget: *budget,
        };
        // Launch permissions are read only for the images that pass every other rule.
        let mut sharing = BTreeMap::new();
        for image_id in plan_retirement(&input, &policy).sharing_to_check {
            match ec2.is_image_shared(&image_id).await {
                Ok(shared) => {
                    sharing.insert(image_id, shared);
                }
                Err(err) => {
                    warnings.push(format!("{region}: {image_id} kept: its launch permissions could not be read: {err}"))
                }
            }
        }
        let plan = plan_retirement(&RetireInput { sharing: &sharing, ..input }, &policy);
        *budget = budget.saturating_sub(plan.to_retire.len() as u64);
        report.images_kept = plan.kept;
        if let Some(trip) = plan.circuit_breaker {
            report.retirement_skipped = Some(format!("{trip} (images)"));
        }
        for image in plan.to_retire {
            let (outcome, error) = if self.dry_run {
                (RetireOutcome::DryRun, None)
            } else if self.deadline_is_near() {
                (RetireOutcome::LeftForNextRun, None)
            } else {
                match ec2.deregister_image(&image.image_id).await {
                    Ok(()) => (RetireOutcome::Deregistered, None),
                    Err(err) if err.is_not_found() || err.has_code("InvalidAMIID.Unavailable") => {
                        (RetireOutcome::AlreadyGone, None)
                    }
                    Err(err) => (RetireOutcome::Failed, Some(err)),
                }
            };
            retired_out.push(RetiredImage {
                region: region.to_string(),
                image_id: image.image_id.to_string(),
                name: image.name.clone(),
                creation_date: image.creation_date,
                snapshot_ids: image.snapshot_ids.iter().map(ToString::to_string).collect(),
                outcome,
                code: error.as_ref().map(|e| e.code.clone()),
                message: error.map(|e| e.message),
            });
            retirement.deregistered_any |= outcome == RetireOutcome::Deregistered;
            if matches!(outcome, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone | RetireOutcome::DryRun) {
                retirement.retired.push(image);
            }
        }
        retirement
    }
}

#[cfg(test)]
mod tests;
