//! orphan-snapshot-sweeper: on a schedule, finds the EBS snapshots that deregistered AMIs left
//! behind in each configured region and deletes them (a dry run by default), keeping everything a
//! safety rule protects and saying why. Optionally retires old, unused AMIs first.
//!
//! The decisions are `core` (the planners, the grace clock); its ports are [`ports::Ec2`],
//! [`ports::SummaryPublisher`] and [`ports::Records`] (what the ledger remembers). Here: the
//! handler, the events (`event`), deleting with the journal (`delete`), retirement
//! (`retirement`), the configuration and the report.
//!
//! Per region, in this order: list snapshots, then images (so an AMI registered in between is
//! seen), then the Recycle Bin and the snapshot locks, then the ledger; any failed listing or
//! ledger read aborts that region with zero deletions. What changed is written to the ledger
//! before anything is deleted. Regions are planned one at a time in `REGIONS` order and delete
//! side by side. The invocation still answers with the report (logged before anything else is
//! sent): an error is only for an event it must not act on.

pub mod adapters;
pub mod config;
pub mod core;
mod delete;
pub mod event;
pub mod metrics;
pub mod ports;
pub mod report;
mod retirement;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::core::{plan, ImageFacts, PlanInput, Policy};
use crate::ports::{Ec2, Records, RegionMemory, SummaryPublisher};
use amiguard::ledger::Item;
use chrono::{DateTime, Utc};
use futures::stream::StreamExt;
use serde::Serialize;

pub use crate::core::{ImageKeepReason, KeepReason};
pub use amiguard::invocation::Invocation;
pub use config::Config;
pub use event::{ScheduledDetail, AMI_STATE_CHANGE, SCHEDULED_EVENT};
pub use ports::Ports;
pub use report::{FailedDeletion, RegionReport, Report, RetireOutcome, RetiredImage};

pub const FUNCTION: &str = "orphan-snapshot-sweeper";

use amiguard::events::EventError;
use event::SweepEvent;

/// Deletions in flight at once per region. The SDK's adaptive retry slows them further when
/// EC2 throttles.
pub const DELETE_CONCURRENCY: usize = 8;
/// Regions whose deletions run at once. EC2 paces each region with request-rate buckets of its
/// own, so regions side by side delete up to this many times as much in one run.
pub const REGION_CONCURRENCY: usize = 4;
/// No region, listing, ledger read or deregistration starts with less than this left before the
/// Lambda deadline. It exceeds the longest single call (the SDK's 120 s operation timeout,
/// `amiguard::sdk::timeout_config`); a paged listing may take many calls, so every call of a
/// region is also cut [`DELETION_CUTOFF`] before the deadline, whatever it is.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(150);
/// A deletion or its journal's write-ahead starts only with more than this left. Deletions are the
/// bulk of a run, so they keep all but its last minute; a deletion still in flight at
/// [`DELETION_CUTOFF`] is cut, so even the last one ends in time for the journal's completion,
/// the report and its summary.
pub const DELETION_MARGIN: Duration = Duration::from_secs(60);
/// How long before the deadline any call of a region still in flight is cut (a listing, a ledger
/// read or write, a deregistration, a deletion): a deletion is then reported failed with code
/// `Timeout` (it may have happened; the next sweep sees), a listing aborts its region.
pub const DELETION_CUTOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Not an event the sweeper answers, or a malformed one: nothing was looked at or changed.
    #[error(transparent)]
    Event(#[from] EventError),
    /// An AMI event could not be recorded (the sweep will see the AMI gone by itself, later).
    #[error("the AMI event could not be recorded in the ledger: {0}")]
    Ledger(amiguard::AwsError),
}

impl From<SweepError> for lambda_runtime::Diagnostic {
    fn from(err: SweepError) -> Self {
        match err {
            SweepError::Event(e) => e.into(),
            SweepError::Ledger(e) => e.into(),
        }
    }
}

/// What an invocation answers: a sweep's report, or what became of an AMI event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Sweep(Box<Report>),
    AmiEvent(AmiEventReport),
}

impl Response {
    /// The sweep's report (`None` for an AMI event).
    pub fn sweep(self) -> Option<Report> {
        match self {
            Self::Sweep(report) => Some(*report),
            Self::AmiEvent(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmiEventReport {
    /// `recorded`, `already-recorded` (a redelivery) or `skipped`.
    pub outcome: &'static str,
    pub image_id: String,
    pub region: String,
    pub state: String,
    pub time: DateTime<Utc>,
    pub reason: Option<String>,
}

/// One invocation: a sweep (every region in order; publish and log the report), or the record
/// of an AMI event.
pub async fn handle<E, P, L>(
    config: &Config,
    ports: &Ports<'_, E, P, L>,
    payload: &serde_json::Value,
    invocation: &Invocation,
) -> Result<Response, SweepError>
where
    E: Ec2,
    P: SummaryPublisher,
    L: Records,
{
    let (account_id, detail) = match event::parse(payload)? {
        SweepEvent::Sweep { account_id, detail } => (account_id, detail),
        SweepEvent::AmiStateChange { region, image_id, state, time, .. } => {
            let report = record_ami_event(ports.ledger, config.ledger_read_only, region, image_id, state, time).await?;
            amiguard::report::log(FUNCTION, &report);
            return Ok(Response::AmiEvent(report));
        }
    };
    let dry_run = config.dry_run || detail.dry_run == Some(true);
    let mut warnings = Vec::new();
    if config.ledger_read_only && ports.ledger.is_some() {
        warnings.push(
            "LEDGER_READ_ONLY: the ledger was read, not written (an orphan it has no clock for counts as first seen now, and no run summary was kept)"
                .to_string(),
        );
    }
    let deadline = match invocation.deadline {
        Some(at) if at <= SystemTime::now() => {
            // Lambda never hands out a deadline already past; local emulators do (cargo lambda
            // watch sends a fixed one in 1970). Such a run is bounded by the function timeout only.
            warnings.push("the invocation deadline was already past at start (a local emulator?): deletions were not time-bounded".to_string());
            None
        }
        // Read once into the monotonic clock: the wall clock may be stepped during a run.
        other => other.map(|at| tokio::time::Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()),
    };
    if config.recycle_bin.is_on() && !dry_run {
        let elsewhere: Vec<&str> = ports
            .regions
            .iter()
            .map(|(region, _)| region.as_str())
            .filter(|region| !config.recycle_bin_in(region).rules_here())
            .collect();
        if !elsewhere.is_empty() {
            warnings.push(format!(
                "the stack's Recycle Bin rules are in its own region: deletions in {} are tagged but final unless a rule there selects the tag {}={}",
                elsewhere.join(", "),
                amiguard::recycle_bin::TAG_KEY,
                amiguard::recycle_bin::TAG_VALUE
            ));
        }
    }
    let ledger = match ports.ledger {
        None if dry_run => {
            warnings.push("no ledger is configured (LEDGER_TABLE): every orphan counts as first seen now".into());
            Ledger::Absent
        }
        None => Ledger::Refused("no ledger is configured (LEDGER_TABLE): nothing is deleted without it".into()),
        Some(store) => match store.previous_run().await {
            Ok(previous_run) => Ledger::Ready { store, previous_run },
            Err(err) => Ledger::Refused(format!("the ledger could not be read ({err}): nothing is deleted without it")),
        },
    };
    let run = Run {
        config,
        account_id: &account_id,
        dry_run,
        invocation,
        deadline,
        ledger,
        ledger_failed: Default::default(),
    };

    // Regions are planned one at a time, in `REGIONS` order: each waits for the one before it to
    // finish planning (so one region's listing is in memory at a time, and `MAX_DELETIONS` is
    // taken in that order without a race); their deletions then run side by side, a region that
    // is done making room for the next. Reports stay in `REGIONS` order.
    let budget = tokio::sync::Mutex::new(u64::from(config.max_deletions));
    let (mut turns, mut previous) = (Vec::new(), None);
    for _ in ports.regions {
        let (done, next) = tokio::sync::oneshot::channel::<()>();
        turns.push((previous.replace(next), done));
    }
    let mut swept: Vec<(usize, Swept)> = futures::stream::iter(ports.regions.iter().zip(turns).enumerate())
        .map(|(index, ((region, ec2), (my_turn, planned)))| {
            let budget = &budget;
            let run = &run;
            async move {
                if let Some(my_turn) = my_turn {
                    // An error means the region before has gone: its turn is over either way.
                    let _ = my_turn.await;
                }
                (index, run.sweep_region(region, ec2, budget, planned).await)
            }
        })
        .buffer_unordered(REGION_CONCURRENCY)
        .collect()
        .await;
    swept.sort_by_key(|(index, _)| *index);
    let swept = swept.into_iter().map(|(_, region)| region);
    let mut region_reports = Vec::new();
    let mut retired_images = Vec::new();
    for region in swept {
        region_reports.push(region.report);
        retired_images.extend(region.retired);
        warnings.extend(region.warnings);
    }
    region_reports.iter_mut().for_each(RegionReport::count);
    let mut report = Report {
        dry_run,
        account_id: account_id.clone(),
        run_id: invocation.request_id.clone(),
        started_at: invocation.now,
        totals: crate::core::summary::totals(&region_reports, &retired_images, config.price_per_gb_month),
        regions: region_reports,
        retired_images,
        recycle_bin_retention_days: config.recycle_bin.retention_days(),
        warnings,
        // A read-only run writes no list to point at.
        full_lists: run.writable_store().map(|store| store.full_lists(&invocation.request_id)),
        summary_published: None,
    };
    report.bound();
    // The report is in the log before anything else is sent: a run cut short by its timeout while
    // writing or publishing still leaves its whole record.
    amiguard::report::log(FUNCTION, &report);
    for line in metrics::emf_lines(&report, Utc::now()) {
        println!("{line}");
    }
    let mut delivery =
        Delivery { run_id: report.run_id.clone(), run_recorded: None, summary_published: None, warnings: Vec::new() };
    if let Some(store) = run.writable_store() {
        let written = run.before_deadline(store.record_run(&report)).await;
        if let Err(err) = &written {
            delivery.warnings.push(format!("the run's summary could not be written to the ledger: {err}"));
        }
        delivery.run_recorded = Some(written.is_ok());
    }
    if let Some(topic) = &config.report_topic_arn {
        let summary = (crate::core::summary::summary_subject(&report), crate::core::summary::summary_text(&report));
        let published = run.before_deadline(ports.publisher.publish(topic, &summary.0, &summary.1)).await;
        if let Err(err) = &published {
            delivery.warnings.push(format!("the summary could not be published to {topic}: {err}"));
        }
        delivery.summary_published = Some(published.is_ok());
    }
    if delivery.run_recorded.is_some() || delivery.summary_published.is_some() {
        amiguard::report::log(FUNCTION, &delivery);
    }
    report.summary_published = delivery.summary_published;
    report.warnings.extend(delivery.warnings);
    Ok(Response::Sweep(Box::new(report)))
}

/// What became of the report after it was logged: a second, short log line.
#[derive(Debug, Serialize)]
struct Delivery {
    run_id: String,
    /// Whether the run's summary reached the ledger (`None`: no ledger).
    run_recorded: Option<bool>,
    /// Whether the summary reached `REPORT_TOPIC_ARN` (`None`: no topic).
    summary_published: Option<bool>,
    warnings: Vec<String>,
}

/// One region's share of a sweep.
struct Swept {
    report: RegionReport,
    retired: Vec<RetiredImage>,
    warnings: Vec<String>,
}

/// What a region's planning leaves for its deletion step.
struct Deletions {
    to_delete: Vec<crate::core::Orphan>,
    /// When the ledger first saw each of them orphaned (only `to_delete`'s, not the region's).
    recorded: hashbrown::HashMap<crate::core::Id, DateTime<Utc>>,
}

/// Records an AMI's deregistration; other states concern the sweep not at all.
async fn record_ami_event<L: Records>(
    ledger: Option<&L>,
    read_only: bool,
    region: String,
    image_id: String,
    state: String,
    time: DateTime<Utc>,
) -> Result<AmiEventReport, SweepError> {
    let mut report = AmiEventReport { outcome: "skipped", image_id, region, state, time, reason: None };
    if report.state != "deregistered" {
        report.reason = Some(format!("state {}: only deregistered starts an orphan's clock", report.state));
        return Ok(report);
    }
    if read_only {
        report.reason = Some("LEDGER_READ_ONLY: not recorded (the sweep sees the AMI gone itself)".into());
        return Ok(report);
    }
    let Some(store) = ledger else {
        report.reason = Some("no ledger is configured (LEDGER_TABLE): the sweep sees the AMI gone itself".into());
        return Ok(report);
    };
    let new = store.record_deregistration(&report.region, &report.image_id, time).await.map_err(SweepError::Ledger)?;
    report.outcome = if new { "recorded" } else { "already-recorded" };
    Ok(report)
}

/// The ledger, as this invocation can use it.
enum Ledger<'a, L> {
    /// Read and written; `previous_run` is when the last sweep started.
    Ready { store: &'a L, previous_run: Option<DateTime<Utc>> },
    /// A dry run without a ledger: no memory, nothing written.
    Absent,
    /// Unusable for a run that would delete: every region is aborted with this reason.
    Refused(String),
}

/// What every region of one invocation shares.
struct Run<'a, L> {
    config: &'a Config,
    account_id: &'a str,
    dry_run: bool,
    invocation: &'a Invocation,
    /// Lambda's deadline on the monotonic clock (`None`: unknown, not time-bounded).
    deadline: Option<tokio::time::Instant>,
    ledger: Ledger<'a, L>,
    /// Set when the ledger failed: from then on no region deletes or deregisters anything more.
    ledger_failed: std::sync::Mutex<Option<String>>,
}

impl<L: Records> Run<'_, L> {
    /// Whether less than [`DEADLINE_MARGIN`] is left: no listing or deregistration starts.
    fn deadline_is_near(&self) -> bool {
        self.deadline.is_some_and(|at| tokio::time::Instant::now() + DEADLINE_MARGIN >= at)
    }

    /// Whether less than [`DELETION_MARGIN`] is left: no deletion starts.
    fn deletion_deadline_is_near(&self) -> bool {
        self.deadline.is_some_and(|at| tokio::time::Instant::now() + DELETION_MARGIN >= at)
    }

    /// Whether `step` may start in this region; if not, the region is aborted (nothing more is
    /// deleted in it) and says which step the deadline stopped.
    fn time_for(&self, report: &mut RegionReport, step: &str) -> bool {
        if self.deadline_is_near() {
            tracing::warn!(region = %report.region, step, "the deadline is near: region stopped");
            report.aborted =
                Some(format!("the invocation's deadline was near before {step}: nothing more done in this region"));
            return false;
        }
        true
    }

    /// Runs `call` (any call of a region's sweep) until [`DELETION_CUTOFF`] before the deadline at
    /// most; cut, it fails with code `Timeout`.
    async fn until_cutoff<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, amiguard::AwsError>>,
    ) -> Result<T, amiguard::AwsError> {
        let Some(at) = self.deadline else { return call.await };
        let cut = at.checked_sub(DELETION_CUTOFF).unwrap_or(at);
        tokio::time::timeout_at(cut, call).await.unwrap_or_else(|_| {
            Err(amiguard::AwsError::new(
                operation,
                "Timeout",
                format!(
                    "cut {} s before the invocation's deadline (a change it asked for may still have happened)",
                    DELETION_CUTOFF.as_secs()
                ),
            ))
        })
    }

    /// Runs `call` (a ledger write, the summary's publish) only while the deadline has not passed,
    /// and no longer than until then: the report is already logged, these may be lost, never the
    /// invocation.
    async fn before_deadline<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, amiguard::AwsError>>,
    ) -> Result<T, amiguard::AwsError> {
        let Some(at) = self.deadline else { return call.await };
        let cut = || amiguard::AwsError::new("Deadline", "DeadlineReached", "the invocation's deadline was reached");
        // A second short of the deadline: Lambda stops the invocation at it.
        let until = at.checked_sub(Duration::from_secs(1)).unwrap_or(at);
        if tokio::time::Instant::now() >= until {
            return Err(cut());
        }
        tokio::time::timeout_at(until, call).await.unwrap_or_else(|_| Err(cut()))
    }

    fn store(&self) -> Option<&L> {
        match self.ledger {
            Ledger::Ready { store, .. } => Some(store),
            _ => None,
        }
    }

    /// The ledger, unless `LEDGER_READ_ONLY` keeps this run from writing it.
    fn writable_store(&self) -> Option<&L> {
        self.store().filter(|_| !self.config.ledger_read_only)
    }

    /// Remembers that the ledger failed, so that no later region deletes without it.
    fn ledger_broke(&self, err: &amiguard::AwsError) {
        if let Ok(mut failed) = self.ledger_failed.lock() {
            failed.get_or_insert_with(|| err.to_string());
        }
    }

    fn ledger_failure(&self) -> Option<String> {
        self.ledger_failed.lock().ok().and_then(|failed| failed.clone())
    }

    /// The Recycle Bin rules of `region` (none in a dry run: nothing is deleted, nothing tagged).
    fn recycle_bin(&self, region: &str) -> amiguard::recycle_bin::RecycleBin {
        if self.dry_run {
            amiguard::recycle_bin::RecycleBin::default()
        } else {
            self.config.recycle_bin_in(region)
        }
    }

    /// A journal entry of this run, now.
    fn journal(
        &self,
        region: &str,
        resource: amiguard::ledger::journal::Resource,
        resource_id: &str,
        rule: &'static str,
    ) -> amiguard::ledger::journal::JournalEntry {
        let time = self.invocation.clock();
        amiguard::ledger::journal::JournalEntry::new(
            &self.invocation.request_id,
            FUNCTION,
            region,
            resource,
            resource_id,
            rule,
            time,
        )
    }

    /// One region, once the regions before it have planned: planned (holding the budget), then
    /// `planned` lets the next region plan, then its deletions, side by side with other regions'.
    async fn sweep_region<E: Ec2>(
        &self,
        region: &str,
        ec2: &E,
        budget: &tokio::sync::Mutex<u64>,
        planned: tokio::sync::oneshot::Sender<()>,
    ) -> Swept {
        let mut swept = Swept { report: RegionReport::new(region), retired: Vec::new(), warnings: Vec::new() };
        let deletions = {
            let mut budget = budget.lock().await;
            self.plan_region(region, ec2, &mut budget, &mut swept).await
        };
        // Nobody waiting (the last region) is no error.
        let _ = planned.send(());
        if let Some(deletions) = deletions {
            self.delete(region, ec2, &deletions.to_delete, &deletions.recorded, &mut swept.report, &mut swept.warnings)
                .await;
        }
        swept
    }

    /// Lists, remembers, retires and plans one region; `None` when nothing is to be deleted in it
    /// (a dry run, an aborted region, nothing due).
    async fn plan_region<E: Ec2>(
        &self,
        region: &str,
        ec2: &E,
        budget: &mut u64,
        swept: &mut Swept,
    ) -> Option<Deletions> {
        let Swept { report, retired: retired_out, warnings } = swept;
        let aborted = |report: &mut RegionReport, what: &str, err: &dyn std::fmt::Display| {
            tracing::warn!(region, error = %err, "{what} failed: region aborted, nothing deleted");
            report.aborted = Some(format!("{what} failed, nothing deleted in this region: {err}"));
            None
        };
        if let Ledger::Refused(reason) = &self.ledger {
            report.aborted = Some(reason.clone());
            return None;
        }
        if let Some(err) = self.ledger_failure() {
            report.aborted = Some(format!("the ledger failed earlier in this run ({err}): nothing deleted without it"));
            return None;
        }
        if !self.time_for(report, "the region started") {
            return None;
        }
        let snapshots = match self.until_cutoff("DescribeSnapshots", ec2.snapshots(&self.config.protect_tag)).await {
            Ok(snapshots) => snapshots,
            Err(err) => return aborted(report, "listing snapshots", &err),
        };
        report.snapshots_scanned = snapshots.len() as u64;
        if !self.time_for(report, "listing images") {
            return None;
        }
        let images = match self.until_cutoff("DescribeImages", ec2.images(&self.config.protect_tag)).await {
            Ok(images) => images,
            Err(err) => return aborted(report, "listing images", &err),
        };
        report.images_scanned = images.len() as u64;
        let mut binned = BTreeSet::new();
        if self.config.recycle_bin_check {
            if !self.time_for(report, "listing the Recycle Bin") {
                return None;
            }
            binned = match self.until_cutoff("ListImagesInRecycleBin", ec2.images_in_recycle_bin()).await {
                Ok(binned) => binned,
                Err(err) => return aborted(report, "listing the Recycle Bin", &err),
            };
        }
        // Read before deciding: a locked snapshot must never be sent a DeleteSnapshot.
        if !self.time_for(report, "listing snapshot locks") {
            return None;
        }
        let locked = match self.until_cutoff("DescribeLockedSnapshots", ec2.locked_snapshots()).await {
            Ok(locked) => locked,
            Err(err) => return aborted(report, "listing snapshot locks", &err),
        };
        // Fast Snapshot Restore decides nothing (it is reported for its cost): a warning at most.
        if !self.time_for(report, "listing Fast Snapshot Restores") {
            return None;
        }
        match self.until_cutoff("DescribeFastSnapshotRestores", ec2.fast_snapshot_restores()).await {
            Ok(restores) => report.set_fast_snapshot_restores(restores),
            Err(err) => warnings.push(format!("{region}: Fast Snapshot Restores could not be listed: {err}")),
        }
        if !self.time_for(report, "reading the ledger") {
            return None;
        }
        let RegionMemory { mut memory, image_writes, stale } = match &self.ledger {
            Ledger::Ready { store, previous_run } => {
                let reading = store.read_region(region, &images, &binned, self.invocation.now, *previous_run);
                match self.until_cutoff("Query", reading).await {
                    Ok(memory) => memory,
                    Err(err) => {
                        self.ledger_broke(&err);
                        return aborted(report, "reading the ledger", &err);
                    }
                }
            }
            _ => RegionMemory::default(),
        };

        let mut retired = Vec::new();
        if let Some(days) = self.config.retire_unused_amis_after_days {
            if !self.time_for(report, "retiring unused AMIs") {
                return None;
            }
            let retirement = self.retire(region, ec2, &images, days, budget, report, retired_out, warnings).await;
            if retirement.deregistered_any && self.config.recycle_bin_check {
                if !self.time_for(report, "listing the Recycle Bin after retiring images") {
                    return None;
                }
                // A retention rule may have put the images just deregistered in the Recycle Bin.
                binned = match self.until_cutoff("ListImagesInRecycleBin", ec2.images_in_recycle_bin()).await {
                    Ok(binned) => binned,
                    Err(err) => return aborted(report, "listing the Recycle Bin after retiring images", &err),
                };
            }
            retired = retirement.retired;
        }
        for image in &retired {
            // Deregistered by this run: its snapshots' clock starts now.
            memory.deregistered_at.insert(image.image_id.clone(), self.invocation.now);
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
            now: self.invocation.now,
            snapshots: &snapshots,
            images: &live,
            retired_images: &retired,
            images_in_recycle_bin: &binned,
            budget: *budget,
            memory: &memory,
            locked: &locked,
        };
        let plan = plan(&input, &policy);
        if let Some(trip) = &plan.circuit_breaker {
            tracing::warn!(region, %trip, "circuit breaker tripped");
            report.aborted = Some(trip.to_string());
        }
        // What this sweep saw is written before anything is deleted: a deletion never outruns
        // the memory that justifies it. (A read-only run is a dry run: it deletes nothing.)
        if let Some(store) = self.writable_store() {
            // A dry run's retirement is a simulation: the images stay, so their snapshots get no
            // clock (it would outlive the simulation).
            let simulated: hashbrown::HashSet<&str> = if self.dry_run {
                retired.iter().flat_map(|i| i.snapshot_ids.iter().map(|s| s.as_str())).collect()
            } else {
                hashbrown::HashSet::new()
            };
            let candidates: Vec<&crate::core::Orphan> = plan
                .orphans
                .iter()
                .chain(&plan.waiting)
                .filter(|o| !simulated.contains(o.snapshot_id.as_str()))
                .collect();
            let deleting: hashbrown::HashSet<&str> = if self.dry_run {
                hashbrown::HashSet::new()
            } else {
                plan.to_delete.iter().map(|o| o.snapshot_id.as_str()).collect()
            };
            let (orphan_puts, orphan_deletes) =
                L::orphan_writes(region, &candidates, &deleting, &memory.orphaned_since);
            let mut puts: Vec<Item> = image_writes;
            puts.extend(orphan_puts);
            let mut deletes = stale;
            deletes.extend(orphan_deletes);
            let writes = (puts.len() + deletes.len()) as u64;
            if let Err(err) = self.until_cutoff("BatchWriteItem", store.write_batch(puts, deletes)).await {
                self.ledger_broke(&err);
                report.fill_from_plan(&plan, self.config.price_per_gb_month);
                return aborted(report, "writing the ledger", &err);
            }
            report.ledger_writes = writes;
        }
        *budget = budget.saturating_sub(plan.to_delete.len() as u64);
        report.fill_from_plan(&plan, self.config.price_per_gb_month);
        report.orphans_failed_before =
            plan.orphans.iter().filter(|o| memory.failed_before.contains(o.snapshot_id.as_str())).count() as u64;
        if self.dry_run || plan.to_delete.is_empty() {
            return None;
        }
        let recorded = plan
            .to_delete
            .iter()
            .filter_map(|o| memory.orphaned_since.get_key_value(o.snapshot_id.as_str()))
            .map(|(id, since)| (id.clone(), *since))
            .collect();
        Some(Deletions { to_delete: plan.to_delete, recorded })
    }
}

#[cfg(test)]
mod tests;
