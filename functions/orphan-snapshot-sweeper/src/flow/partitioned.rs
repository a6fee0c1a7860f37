//! A large region's snapshots listed in partitions side by side (issue 23), each planned as it
//! arrives against the complete image listing and the ledger, and merged into the region's plan
//! (`core::partitions`); and, for every region, the listing passes the ledger keeps.
//!
//! In a partitioned region the images are listed first and completely (a sound plan needs them
//! all), then the partitions, at most [`PARTITION_CONCURRENCY`] at once, paced by one token
//! bucket (EC2's for paginated `DescribeSnapshots`: 100 burst, 20 a second) and retried after a
//! pause when EC2 throttles them anyway. A partition whose listing was cut (an error, throttled
//! out, the deadline) deletes nothing; the others go on. A partition is not started when the
//! time left would not list it (the longest partition so far): it is left for the next run, which
//! lists first the partitions the current pass has not covered. Because the images are listed
//! before the snapshots here, an image registered in between would not be seen: before deleting,
//! the images are listed once more ([`recheck_images`]).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use amiguard::paging::PageTokens;
use amiguard::AwsError;
use futures::stream::{self, StreamExt};
use tokio::time::Instant;

use super::run::{Ledger, Run, DEADLINE_MARGIN};
use crate::core::partitions::{
    self, for_merge, merge, per_partition, CutPartition, ListingReport, Passes, TokenBucket, BUCKET_CAPACITY,
    BUCKET_REFILL_PER_SECOND, MAX_THROTTLED_RETRIES, MAX_TRANSIENT_RETRIES, NO_PASS_TO_PROVE, PARTITIONS,
};
use crate::core::{plan, KeepReason, Orphan, Plan, PlanInput, Policy, SnapshotFacts};
use crate::ports::{Ec2, Records};
use crate::report::RegionReport;

/// How many partitions of a region are listed at once. Fewer than the partitions, so that a
/// region too large for one run completes some partitions (and continues in the next) rather
/// than cutting them all at the deadline.
pub const PARTITION_CONCURRENCY: usize = 8;

/// What the ledger says of the region's passes (none without a ledger); `None` when it could
/// not be read (the region is aborted, as for any ledger read).
pub(super) async fn passes<L: Records>(run: &Run<'_, L>, region: &str, report: &mut RegionReport) -> Option<Passes> {
    let Ledger::Ready { store, .. } = &run.ledger else { return Some(Passes::default()) };
    match run.until_cutoff("Query", store.snapshot_passes(region)).await {
        Ok(passes) => Some(passes),
        Err(err) => {
            run.ledger_broke(&err);
            tracing::warn!(region, error = %err, "reading the listing passes failed: region aborted");
            report.aborted = Some(format!("reading the ledger failed, nothing deleted in this region: {err}"));
            None
        }
    }
}

/// After a complete listing in one sequence: the report's `snapshot_listing`, and the pass to
/// record (dry run or not) with what the region writes before deleting ([`PassToRecord`]).
pub(super) fn after_sequential<L: Records>(
    run: &Run<'_, L>,
    snapshots: &[SnapshotFacts],
    passes: &Passes,
    report: &mut RegionReport,
) -> PassToRecord {
    let (per_partition, outside) = partitions::counts(snapshots.iter().map(|s| s.snapshot_id.as_str()));
    let next = Passes::after_listing(per_partition, outside);
    report.snapshot_listing = Some(ListingReport {
        mode: "sequential",
        last_complete_pass: passes.last.as_ref().map(|l| l.total),
        ..ListingReport::default()
    });
    PassToRecord::new(run, passes, next, true)
}

/// The passes to write with the region's other records (`None` when unchanged: an unchanged
/// account's sweep writes nothing new; or when the ledger is read-only or absent), and the pass
/// size to report once written (`None`: no pass completed).
pub(super) struct PassToRecord {
    pub write: Option<Passes>,
    pub completed: Option<u64>,
    /// The passes to write, changed or not (`None`: the ledger is not written).
    next: Option<Passes>,
}

impl PassToRecord {
    fn new<L: Records>(run: &Run<'_, L>, passes: &Passes, next: Passes, completed: bool) -> Self {
        if run.writable_store().is_none() {
            return Self { write: None, completed: None, next: None };
        }
        let completed = completed.then(|| next.last.as_ref().map(|l| l.total)).flatten();
        let write = (next != *passes).then(|| next.clone());
        Self { write, completed, next: Some(next) }
    }

    /// A real run is about to delete `to_delete` (at most): the next listing of their partitions
    /// expects that many fewer, so that the sweeper's own deletions never read as a shortfall.
    pub fn deleting(&mut self, to_delete: &[Orphan]) {
        let Some(next) = &mut self.next else { return };
        let mut per_partition = [0u64; PARTITIONS];
        for orphan in to_delete {
            if let Some(p) = partitions::partition_of(&orphan.snapshot_id) {
                per_partition[p] += 1;
            }
        }
        if per_partition.iter().any(|n| *n > 0) {
            next.deleting(&per_partition);
            self.write = Some(next.clone());
        }
    }

    /// Once the region's records are written: the report says the pass it recorded.
    pub fn written(&self, report: &mut RegionReport) {
        if let Some(listing) = &mut report.snapshot_listing {
            listing.pass_recorded = self.completed;
        }
    }
}

/// The partitioned listing's plan of the region, from its complete partitions.
pub(super) struct Partitioned {
    pub plan: Plan,
    /// The partitions listed completely this run (only their snapshots can be deleted, and only
    /// their orphan records be found stale).
    pub complete: BTreeSet<usize>,
    /// Why nothing may be deleted in the region this run (the coverage proof failed, or no
    /// partition was listed completely).
    pub blocked: Option<String>,
    pub pass: PassToRecord,
}

/// What became of one partition.
enum Outcome {
    Complete {
        count: u64,
        plan: Box<Plan>,
    },
    Cut(String),
    /// Not started: the deadline would have cut it.
    Left,
}

/// Lists the region's snapshots in partitions and plans each as it arrives with `input` (the
/// region's images, Recycle Bin, locks, ledger memory, budget) and `policy`; merges the complete
/// ones; records the pass; fills the report's `snapshot_listing`.
pub(super) async fn list_and_plan<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    input: &PlanInput<'_>,
    policy: &Policy,
    passes: &Passes,
    (report, warnings): (&mut RegionReport, &mut Vec<String>),
) -> Partitioned {
    let clock = Instant::now();
    let bucket = Mutex::new(TokenBucket::new(BUCKET_CAPACITY, BUCKET_REFILL_PER_SECOND, 0.0));
    let longest = Mutex::new(Duration::ZERO);
    let counters = Mutex::new((0u64, 0u64));
    let (alone, unlimited) = per_partition(policy);
    let outcomes: Vec<(usize, Outcome)> = stream::iter(passes.order())
        .map(|partition| {
            let (bucket, longest, counters, alone) = (&bucket, &longest, &counters, &alone);
            async move {
                let pace = Pace { bucket, clock, counters };
                let outcome = match list_partition(run, ec2, partition, &pace, longest).await {
                    Listed::Complete(snapshots) => {
                        let part = PlanInput { snapshots: &snapshots, budget: unlimited, ..*input };
                        Outcome::Complete {
                            count: snapshots.len() as u64,
                            plan: Box::new(for_merge(plan(&part, alone))),
                        }
                    }
                    Listed::Cut(reason) => Outcome::Cut(reason),
                    Listed::Left => Outcome::Left,
                };
                (partition, outcome)
            }
        })
        .buffer_unordered(PARTITION_CONCURRENCY)
        .collect()
        .await;

    let mut listing = ListingReport {
        mode: "partitioned",
        last_complete_pass: passes.last.as_ref().map(|l| l.total),
        ..ListingReport::default()
    };
    let (mut parts, mut counts, mut complete) = (Vec::new(), Vec::new(), BTreeSet::new());
    let mut sorted = outcomes;
    sorted.sort_by_key(|(p, _)| *p);
    for (partition, outcome) in sorted {
        match outcome {
            Outcome::Complete { count, plan } => {
                listing.complete.push(partitions::filter(partition));
                counts.push((partition, count));
                complete.insert(partition);
                parts.push(*plan);
            }
            Outcome::Cut(reason) => {
                warnings.push(format!(
                    "{region}: the listing of partition {} was cut ({reason}): nothing deleted in it",
                    partitions::filter(partition)
                ));
                listing.cut.push(CutPartition { partition: partitions::filter(partition), reason });
            }
            Outcome::Left => listing.left_for_next_run.push(partitions::filter(partition)),
        }
    }
    let (calls, throttled) = lock(&counters).to_owned();
    (listing.calls, listing.throttled) = (Some(calls), Some(throttled));

    // The circuit breaker over the region: the partitions not complete counted as the last
    // complete pass listed them (`merge`).
    let mut plan = merge(parts, &input.memory.failed_before, policy, input.budget, passes.rest_of_region(&complete));
    let shortfall = passes.shortfall(&counts);
    let mut blocked = shortfall.as_ref().map(ToString::to_string);
    if passes.last.is_none() {
        // Nothing to prove coverage with: the first pass records, and deletes nothing.
        blocked = Some(NO_PASS_TO_PROVE.to_string());
    }
    if complete.is_empty() {
        blocked = Some(format!(
            "listing snapshots failed in every partition ({} cut, {} left for the next run), nothing deleted in this region",
            listing.cut.len(),
            listing.left_for_next_run.len()
        ));
    }
    if let Some(why) = &blocked {
        tracing::warn!(region, why, "partitioned listing: nothing deleted");
        hold_all(&mut plan);
    }
    // A listing the proof refused never counts towards a pass (nor becomes the baseline).
    let next = if shortfall.is_some() { passes.after_refused(&counts) } else { passes.after_partitions(&counts) };
    let completed_pass = shortfall.is_none() && !counts.is_empty() && next.current.is_empty();
    report.snapshot_listing = Some(listing);
    Partitioned { plan, complete, blocked, pass: PassToRecord::new(run, passes, next, completed_pass) }
}

/// Nothing of `plan` is deleted: every orphan is held (counted as the circuit breaker's: a
/// region-wide refusal to act).
fn hold_all(plan: &mut Plan) {
    if plan.circuit_breaker.is_some() {
        // Held already, and counted so.
        return;
    }
    plan.to_delete.clear();
    plan.kept.remove(&KeepReason::OverCap);
    plan.kept.remove(&KeepReason::Shared);
    if !plan.orphans.is_empty() {
        *plan.kept.entry(KeepReason::CircuitBreaker).or_default() += plan.orphans.len() as u64;
    }
}

/// The region's pace: one token bucket for its partitions, and its calls and throttled answers.
struct Pace<'a> {
    bucket: &'a Mutex<TokenBucket>,
    clock: Instant,
    counters: &'a Mutex<(u64, u64)>,
}

impl Pace<'_> {
    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// Waits for a token of the bucket, then counts the call.
    async fn call(&self) {
        let wait = lock(self.bucket).take(self.now());
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        lock(self.counters).0 += 1;
    }

    /// EC2 throttled a call: counted, and the bucket emptied.
    fn throttled(&self) {
        lock(self.counters).1 += 1;
        lock(self.bucket).throttled(self.now());
    }

    /// The pause before the `attempt`-th retry of a throttled call.
    async fn pause(&self, attempt: u32) {
        tokio::time::sleep(Duration::from_secs_f64(partitions::retry_delay(attempt))).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Listed {
    Complete(Vec<SnapshotFacts>),
    Cut(String),
    Left,
}

/// Every page of one partition, or why it was cut; `Left` when the time left would not list it
/// (less than the longest partition so far before the deadline's margin).
async fn list_partition<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    ec2: &E,
    partition: usize,
    pace: &Pace<'_>,
    longest: &Mutex<Duration>,
) -> Listed {
    let started = Instant::now();
    if let Some(deadline) = run.deadline {
        if started + DEADLINE_MARGIN + *lock(longest) >= deadline {
            return Listed::Left;
        }
    }
    let filter = partitions::filter(partition);
    let mut tokens = PageTokens::new("DescribeSnapshots");
    let (mut snapshots, mut next, mut attempt, mut failed) = (Vec::new(), None, 0u32, 0u32);
    loop {
        if run.deadline_is_near() {
            return Listed::Cut("the invocation's deadline was near".into());
        }
        pace.call().await;
        let page = ec2.snapshot_page(&run.config.protect_tag, Some(&filter), next.clone());
        match run.until_cutoff("DescribeSnapshots", page).await {
            Ok(page) => {
                (attempt, failed) = (0, 0);
                if let Err(err) = tokens.check(page.next_token.as_deref()) {
                    return Listed::Cut(err.to_string());
                }
                snapshots.extend(page.snapshots);
                match page.next_token {
                    Some(token) => next = Some(token),
                    None => break,
                }
            }
            Err(err) if is_throttling(&err) => {
                pace.throttled();
                attempt += 1;
                if attempt > MAX_THROTTLED_RETRIES {
                    return Listed::Cut(format!("throttled out after {MAX_THROTTLED_RETRIES} retries: {err}"));
                }
                pace.pause(attempt).await;
            }
            Err(err) if is_transient(&err) && !run.deadline_is_near() => {
                failed += 1;
                if failed > MAX_TRANSIENT_RETRIES {
                    return Listed::Cut(format!("failed after {MAX_TRANSIENT_RETRIES} retries: {err}"));
                }
                pace.pause(failed).await;
            }
            Err(err) => return Listed::Cut(err.to_string()),
        }
    }
    let took = started.elapsed();
    let mut longest = lock(longest);
    *longest = (*longest).max(took);
    Listed::Complete(snapshots)
}

/// EC2's throttling answers.
fn is_throttling(err: &AwsError) -> bool {
    ["RequestLimitExceeded", "Throttling", "ThrottlingException"].iter().any(|code| err.has_code(code))
}

/// A failure that may not happen again: a 5xx answer, a connection reset, a timeout of the call
/// (not the invocation's own deadline, which cuts the partition).
fn is_transient(err: &AwsError) -> bool {
    [
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "TimeoutError",
        "DispatchFailure",
        "ResponseError",
    ]
    .iter()
    .any(|code| err.has_code(code))
}

/// After a listing in one sequence was cut having seen `seen` snapshots, more than
/// `PARTITIONED_LISTING_ABOVE`: the ledger remembers it (dry run or not), so that the next run
/// lists the region in partitions (issue 23: a region too large for one listing would otherwise
/// be cut every day). A failed write is a warning: the region is aborted already.
pub(super) async fn record_cut_sequential<L: Records>(
    run: &Run<'_, L>,
    region: &str,
    passes: &Passes,
    seen: u64,
    warnings: &mut Vec<String>,
) {
    let Some(store) = run.writable_store() else { return };
    if seen <= run.config.partitioned_listing_above {
        return;
    }
    let item = L::snapshot_passes_item(region, &passes.after_cut_sequential(seen), run.invocation.now);
    // Written until the deadline itself: the listing was cut at the cutoff already.
    match run.before_deadline(store.write_batch(vec![item], Vec::new())).await {
        Ok(()) => warnings.push(format!(
            "{region}: the snapshot listing was cut after {seen} snapshots (more than PARTITIONED_LISTING_ABOVE): the next run lists the region in partitions"
        )),
        Err(err) => warnings.push(format!("{region}: recording the cut snapshot listing failed: {err}")),
    }
}

/// Before deleting in a partitioned region: the images listed once more (the snapshots were
/// listed after them, so an image registered in between was not seen). An orphan that an image
/// now maps, or whose AMI is listed again, is not deleted; when the images cannot be listed,
/// nothing is.
pub(super) async fn recheck_images<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    plan: &mut Plan,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if plan.to_delete.is_empty() {
        return Ok(());
    }
    let images = match run.until_cutoff("DescribeImages", ec2.images(&run.config.protect_tag)).await {
        Ok(images) => images,
        Err(err) => {
            hold_all(plan);
            return Err(format!("listing images again before deleting failed, nothing deleted in this region: {err}"));
        }
    };
    let mapped: hashbrown::HashSet<&str> =
        images.iter().flat_map(|i| i.snapshot_ids.iter().map(|s| s.as_str())).collect();
    let live: hashbrown::HashSet<&str> = images.iter().map(|i| i.image_id.as_str()).collect();
    let before = plan.to_delete.len();
    plan.to_delete.retain(|o| !mapped.contains(o.snapshot_id.as_str()) && !live.contains(o.source_image_id.as_str()));
    if plan.to_delete.len() < before {
        warnings.push(format!(
            "{region}: {} orphan(s) not deleted: an image listed after the snapshots maps them or is their AMI",
            before - plan.to_delete.len()
        ));
    }
    Ok(())
}
