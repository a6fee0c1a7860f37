//! One region of a sweep: listed (snapshots, then images, so that an AMI registered in between is
//! seen; then the Recycle Bin and the snapshot locks), remembered (the ledger's records of it),
//! its unused AMIs retired, planned, the orphans about to be deleted asked whether they are shared,
//! and what it saw written to the ledger before its deletions. Any failed listing or ledger read
//! aborts the region with zero deletions.

use std::collections::BTreeSet;

use amiguard::ledger::Item;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use super::delete::{delete, DELETE_CONCURRENCY};
use super::partitioned;
use super::retirement::retire;
use super::run::{Ledger, Run};
use super::savings;
use super::stages::retire_in_stages;
use crate::core::savings::Tier;
use crate::core::{plan, Id, ImageFacts, Memory, Orphan, Plan, PlanInput, Policy, SnapshotFacts};
use crate::ports::{Ec2, Records, RegionMemory};
use crate::report::{RegionReport, RetiredImage};

/// One region's share of a sweep.
pub(super) struct Swept {
    pub report: RegionReport,
    pub retired: Vec<RetiredImage>,
    pub warnings: Vec<String>,
}

/// What a region's planning leaves for its deletion step.
struct Deletions {
    to_delete: Vec<Orphan>,
    /// When the ledger first saw each of them orphaned (only `to_delete`'s, not the region's).
    recorded: hashbrown::HashMap<Id, DateTime<Utc>>,
    /// What deleting each of them frees (`EXACT_SAVINGS`) if all go, and each one's tier: the
    /// report and the journal say it of those deleted, once the deletions are done.
    freed: savings::Figures,
    tiers: hashbrown::HashMap<Id, Tier>,
}

/// What the region's listings said.
struct Listing {
    snapshots: Vec<SnapshotFacts>,
    images: Vec<ImageFacts>,
    /// The AMIs in the Recycle Bin (none listed when `RECYCLE_BIN_CHECK=false`).
    binned: BTreeSet<String>,
    locked: hashbrown::HashSet<Id>,
}

/// One region, once the regions before it have planned: planned (holding the budget), then
/// `planned` lets the next region plan, then its deletions, side by side with other regions'.
pub(super) async fn sweep_region<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    budget: &tokio::sync::Mutex<u64>,
    planned: tokio::sync::oneshot::Sender<()>,
) -> Swept {
    let mut swept = Swept { report: RegionReport::new(region), retired: Vec::new(), warnings: Vec::new() };
    let deletions = {
        let mut budget = budget.lock().await;
        plan_region(run, region, ec2, &mut budget, &mut swept).await
    };
    // Nobody waiting (the last region) is no error.
    let _ = planned.send(());
    if let Some(deletions) = deletions {
        let Swept { report, warnings, .. } = &mut swept;
        let (to_delete, recorded) = (&deletions.to_delete, &deletions.recorded);
        let done = delete(run, region, ec2, to_delete, recorded, report, warnings).await;
        // What the deletions AWS confirmed free, in the report and in their journal entries.
        let freed = savings::settled(&deletions.freed, &report.deleted, to_delete);
        report.set_freed(savings::deleted_entries(
            &report.deleted,
            &freed,
            &deletions.tiers,
            run.config.price_per_gb_month,
        ));
        savings::journal(run, region, done, &freed, warnings).await;
    }
    swept
}

/// Lists, remembers, retires and plans one region; `None` when nothing is to be deleted in it
/// (a dry run, an aborted region, nothing due).
async fn plan_region<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    budget: &mut u64,
    swept: &mut Swept,
) -> Option<Deletions> {
    if !may_start(run, &mut swept.report) {
        return None;
    }
    // A large region is listed in partitions (issue 23): its images first, its snapshots after
    // the ledger is read, partition by partition (`partitioned`).
    let passes = partitioned::passes(run, region, &mut swept.report).await?;
    let in_partitions = passes.partitioned(run.config.partitioned_listing_above);
    let mut cut_after = None;
    let Some(Listing { snapshots, images, mut binned, locked }) =
        list(run, region, ec2, swept, in_partitions, &mut cut_after).await
    else {
        if let Some(seen) = cut_after {
            // Too large for one listing: the next run lists the region in partitions (issue 23).
            partitioned::record_cut_sequential(run, region, &passes, seen, &mut swept.warnings).await;
        }
        return None;
    };
    let mut pass = None;
    if !in_partitions {
        pass = Some(partitioned::after_sequential(run, &snapshots, &passes, &mut swept.report));
    }
    let RegionMemory { mut memory, image_writes, stale } = remember(run, region, &images, &binned, swept).await?;
    let retired = retire_first(run, region, ec2, &images, budget, swept, &mut binned).await?;
    for image in &retired {
        // Deregistered by this run: its snapshots' clock starts now.
        memory.deregistered_at.insert(image.image_id.clone(), run.invocation.now);
    }
    let retired_ids: BTreeSet<&str> = retired.iter().map(|i| i.image_id.as_str()).collect();
    let live: Vec<ImageFacts> = images.iter().filter(|i| !retired_ids.contains(i.image_id.as_str())).cloned().collect();

    let policy = Policy {
        min_age: chrono::Duration::hours(i64::from(run.config.min_age_hours)),
        max_delete_fraction: run.config.max_delete_fraction,
        adopt_unwitnessed: run.config.adopt_unwitnessed_orphans,
    };
    let input = PlanInput {
        account_id: run.account_id,
        now: run.invocation.now,
        snapshots: &snapshots,
        images: &live,
        retired_images: &retired,
        images_in_recycle_bin: &binned,
        budget: *budget,
        memory: &memory,
        locked: &locked,
    };
    let mut blocked = None;
    let mut plan = if in_partitions {
        let Swept { report, warnings, .. } = swept;
        let listed = partitioned::list_and_plan(run, region, ec2, &input, &policy, &passes, (report, warnings)).await;
        // Only the complete partitions' orphan clocks can be found stale.
        memory
            .orphaned_since
            .retain(|id, _| crate::core::partitions::partition_of(id).is_some_and(|p| listed.complete.contains(&p)));
        blocked = listed.blocked;
        pass = Some(listed.pass);
        listed.plan
    } else {
        plan(&input, &policy)
    };
    if let Some(trip) = &plan.circuit_breaker {
        tracing::warn!(region, %trip, "circuit breaker tripped");
        swept.report.aborted = Some(trip.to_string());
    }
    if blocked.is_none() {
        // In a dry run too: what it says it would delete is what a real run would.
        keep_shared(run, region, ec2, &mut plan, *budget, &mut swept.warnings).await;
    }
    // In a dry run too (read-only): what it says it would delete is what a real run would.
    if in_partitions && blocked.is_none() {
        if let Err(why) = partitioned::recheck_images(run, region, ec2, &mut plan, &mut swept.warnings).await {
            blocked = Some(why);
        }
    }
    if let Some(why) = blocked {
        swept.report.aborted = Some(why);
    }
    if let (Some(pass), false) = (&mut pass, run.dry_run) {
        // The next listing expects the deletions planned now to be missing.
        pass.deleting(&plan.to_delete);
    }
    let report = &mut swept.report;
    let pass_item =
        pass.as_ref().and_then(|p| p.write.as_ref()).map(|p| L::snapshot_passes_item(region, p, run.invocation.now));
    if !write_memory(run, region, &plan, &retired, &memory, (image_writes, stale, pass_item), report).await {
        return None;
    }
    if let Some(pass) = &pass {
        pass.written(report);
    }
    *budget = budget.saturating_sub(plan.to_delete.len() as u64);
    report.fill_from_plan(&plan, run.config.price_per_gb_month);
    // What the planned deletions free (a dry run's: it is for reports; a real run's is reported
    // for what was deleted, after the deletions).
    let freed = savings::freed(run, ec2, run.ebs_in(region), &snapshots, &plan.to_delete, in_partitions).await;
    let entries = savings::entries(&snapshots, &plan.to_delete, &freed.freed, run.config.price_per_gb_month);
    let tiers = entries.iter().map(|e| (Id::from(e.snapshot_id.as_str()), e.tier)).collect();
    if run.dry_run {
        report.set_freed(entries);
    }
    report.orphans_failed_before =
        plan.orphans.iter().filter(|o| memory.failed_before.contains(o.snapshot_id.as_str())).count() as u64;
    if run.dry_run || plan.to_delete.is_empty() {
        return None;
    }
    let recorded = plan
        .to_delete
        .iter()
        .filter_map(|o| memory.orphaned_since.get_key_value(o.snapshot_id.as_str()))
        .map(|(id, since)| (id.clone(), *since))
        .collect();
    Some(Deletions { to_delete: plan.to_delete, recorded, freed, tiers })
}

/// Whether the region may start at all: not without a usable ledger, not once it failed in this
/// run, not near the deadline.
fn may_start<L: Records>(run: &Run<'_, L>, report: &mut RegionReport) -> bool {
    if let Ledger::Refused(reason) = &run.ledger {
        report.aborted = Some(reason.clone());
        return false;
    }
    if let Some(err) = run.ledger_failure() {
        report.aborted = Some(format!("the ledger failed earlier in this run ({err}): nothing deleted without it"));
        return false;
    }
    run.time_for(report, "the region started")
}

/// Aborts the region (nothing is deleted in it): `what` failed with `err`.
fn aborted<T>(region: &str, report: &mut RegionReport, what: &str, err: &dyn std::fmt::Display) -> Option<T> {
    tracing::warn!(region, error = %err, "{what} failed: region aborted, nothing deleted");
    report.aborted = Some(format!("{what} failed, nothing deleted in this region: {err}"));
    None
}

/// The region's listings, in the safe order; `None` when one failed or the deadline came near
/// (the region is aborted). Fast Snapshot Restore decides nothing: failing, it is a warning.
async fn list<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    swept: &mut Swept,
    in_partitions: bool,
    cut_after: &mut Option<u64>,
) -> Option<Listing> {
    let Swept { report, warnings, .. } = swept;
    // Listed in partitions, the snapshots come after the ledger is read (`partitioned`).
    let mut snapshots = Vec::new();
    if !in_partitions {
        let seen = std::sync::atomic::AtomicU64::new(0);
        let listing = ec2.snapshots_counting(&run.config.protect_tag, &seen);
        snapshots = match run.until_cutoff("DescribeSnapshots", listing).await {
            Ok(snapshots) => snapshots,
            Err(err) => {
                if err.has_code("Timeout") {
                    // Cut by the deadline: how far it came.
                    *cut_after = Some(seen.load(std::sync::atomic::Ordering::Relaxed));
                }
                return aborted(region, report, "listing snapshots", &err);
            }
        };
        report.snapshots_scanned = snapshots.len() as u64;
    }
    if !run.time_for(report, "listing images") {
        return None;
    }
    let images = match run.until_cutoff("DescribeImages", ec2.images(&run.config.protect_tag)).await {
        Ok(images) => images,
        Err(err) => return aborted(region, report, "listing images", &err),
    };
    report.images_scanned = images.len() as u64;
    let mut binned = BTreeSet::new();
    if run.config.recycle_bin_check {
        if !run.time_for(report, "listing the Recycle Bin") {
            return None;
        }
        binned = match run.until_cutoff("ListImagesInRecycleBin", ec2.images_in_recycle_bin()).await {
            Ok(binned) => binned,
            Err(err) => return aborted(region, report, "listing the Recycle Bin", &err),
        };
    }
    // Read before deciding: a locked snapshot must never be sent a DeleteSnapshot.
    if !run.time_for(report, "listing snapshot locks") {
        return None;
    }
    let locked = match run.until_cutoff("DescribeLockedSnapshots", ec2.locked_snapshots()).await {
        Ok(locked) => locked,
        Err(err) => return aborted(region, report, "listing snapshot locks", &err),
    };
    // Fast Snapshot Restore decides nothing (it is reported for its cost): a warning at most.
    if !run.time_for(report, "listing Fast Snapshot Restores") {
        return None;
    }
    match run.until_cutoff("DescribeFastSnapshotRestores", ec2.fast_snapshot_restores()).await {
        Ok(restores) => report.set_fast_snapshot_restores(restores),
        Err(err) => warnings.push(format!("{region}: Fast Snapshot Restores could not be listed: {err}")),
    }
    Some(Listing { snapshots, images, binned, locked })
}

/// What the ledger remembers of the region (nothing without a ledger); `None` when it could not
/// be read (the region is aborted, and no later region deletes).
async fn remember<L: Records>(
    run: &Run<'_, L>,
    region: &str,
    images: &[ImageFacts],
    binned: &BTreeSet<String>,
    swept: &mut Swept,
) -> Option<RegionMemory> {
    let report = &mut swept.report;
    if !run.time_for(report, "reading the ledger") {
        return None;
    }
    match &run.ledger {
        Ledger::Ready { store, previous_run } => {
            let reading = store.read_region(region, images, binned, run.invocation.now, *previous_run);
            match run.until_cutoff("Query", reading).await {
                Ok(memory) => Some(memory),
                Err(err) => {
                    run.ledger_broke(&err);
                    aborted(region, report, "reading the ledger", &err)
                }
            }
        }
        _ => Some(RegionMemory::default()),
    }
}

/// With `RETIRE_UNUSED_AMIS_AFTER_DAYS`: the region's unused AMIs retired before planning, and
/// the Recycle Bin listed again if any was deregistered. `None` when the deadline or a failed
/// listing aborted the region.
async fn retire_first<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    images: &[ImageFacts],
    budget: &mut u64,
    swept: &mut Swept,
    binned: &mut BTreeSet<String>,
) -> Option<Vec<ImageFacts>> {
    let Some(days) = run.config.retire_unused_amis_after_days else { return Some(Vec::new()) };
    let Swept { report, retired: retired_out, warnings } = swept;
    if !run.time_for(report, "retiring unused AMIs") {
        return None;
    }
    let retirement = if run.config.staged_retirement.stages.is_one_step() {
        retire(run, region, ec2, images, days, budget, report, retired_out, warnings).await
    } else {
        retire_in_stages(run, region, ec2, images, days, budget, report, retired_out, warnings).await
    };
    if retirement.deregistered_any && run.config.recycle_bin_check {
        if !run.time_for(report, "listing the Recycle Bin after retiring images") {
            return None;
        }
        // A retention rule may have put the images just deregistered in the Recycle Bin.
        *binned = match run.until_cutoff("ListImagesInRecycleBin", ec2.images_in_recycle_bin()).await {
            Ok(binned) => binned,
            Err(err) => return aborted(region, report, "listing the Recycle Bin after retiring images", &err),
        };
    }
    Some(retirement.retired)
}

/// What this sweep saw is written before anything is deleted: a deletion never outruns the memory
/// that justifies it. (A read-only run is a dry run: it deletes nothing.) `false` when the ledger
/// refused the write: the region is aborted, and no later region deletes.
async fn write_memory<L: Records>(
    run: &Run<'_, L>,
    region: &str,
    plan: &Plan,
    retired: &[ImageFacts],
    memory: &Memory,
    (image_writes, stale, pass): (Vec<Item>, Vec<(String, String)>, Option<Item>),
    report: &mut RegionReport,
) -> bool {
    let Some(store) = run.writable_store() else { return true };
    // A dry run's retirement is a simulation: the images stay, so their snapshots get no
    // clock (it would outlive the simulation).
    let simulated: hashbrown::HashSet<&str> = if run.dry_run {
        retired.iter().flat_map(|i| i.snapshot_ids.iter().map(|s| s.as_str())).collect()
    } else {
        hashbrown::HashSet::new()
    };
    // Unwitnessed orphans too: their clock runs while they are kept, so that adopting them later
    // does not restart it.
    let candidates: Vec<&Orphan> = plan
        .orphans
        .iter()
        .chain(&plan.waiting)
        .chain(&plan.unwitnessed)
        .filter(|o| !simulated.contains(o.snapshot_id.as_str()))
        .collect();
    let deleting: hashbrown::HashSet<&str> = if run.dry_run {
        hashbrown::HashSet::new()
    } else {
        plan.to_delete.iter().map(|o| o.snapshot_id.as_str()).collect()
    };
    let (orphan_puts, orphan_deletes) = L::orphan_writes(region, &candidates, &deleting, &memory.orphaned_since);
    let mut puts: Vec<Item> = image_writes;
    puts.extend(orphan_puts);
    let mut deletes = stale;
    deletes.extend(orphan_deletes);
    let writes = (puts.len() + deletes.len()) as u64;
    // The listing's pass rides along (not counted: it is not of an image or a snapshot).
    puts.extend(pass);
    if let Err(err) = run.until_cutoff("BatchWriteItem", store.write_batch(puts, deletes)).await {
        run.ledger_broke(&err);
        report.fill_from_plan(plan, run.config.price_per_gb_month);
        aborted::<()>(region, report, "writing the ledger", &err);
        return false;
    }
    report.ledger_writes = writes;
    true
}

/// Before deleting: an orphan shared with another account or public may be in use there. Only the
/// orphans about to be deleted are asked about (`DescribeSnapshotAttribute` of
/// `createVolumePermission`, one call each, as many in flight as deletions); one shared, or whose
/// permissions could not be read (it could not be verified), is kept `shared`, and the next
/// orphan in line takes its place within the budget ([`Plan::next_to_ask`]): asked in turn until
/// `budget` deletions are verified unshared or none is left. A read that fails is a warning
/// naming the snapshot. Near the deadline no more is asked: what was not asked about is not
/// deleted.
async fn keep_shared<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    plan: &mut Plan,
    budget: u64,
    warnings: &mut Vec<String>,
) {
    let (mut checked, mut shared) = (0, hashbrown::HashSet::<Id>::new());
    loop {
        let next = plan.next_to_ask(checked, shared.len(), budget);
        if next.is_empty() || run.deletion_deadline_is_near() {
            break;
        }
        checked = next.end;
        let answers: Vec<(Id, Result<bool, amiguard::AwsError>)> = stream::iter(&plan.orphans[next])
            .map(|orphan| async move {
                let id = orphan.snapshot_id.clone();
                let answer = run.until_cutoff("DescribeSnapshotAttribute", ec2.is_snapshot_shared(&id)).await;
                (id, answer)
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        for (id, answer) in answers {
            match answer {
                Ok(false) => {}
                Ok(true) => {
                    shared.insert(id);
                }
                Err(err) => {
                    warnings.push(format!(
                        "{region}: {id} kept: its create-volume permissions could not be read, so it may be shared ({err})"
                    ));
                    shared.insert(id);
                }
            }
        }
    }
    plan.keep_shared(checked, &shared);
}
