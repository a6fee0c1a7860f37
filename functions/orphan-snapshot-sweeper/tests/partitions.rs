//! The partitioned listing's paging and pacing (issue 23), over a fake EC2 that pages each
//! partition (its `snapshot-id` filter) and can throttle one partition without end. Time is
//! paused: the pauses between throttled answers pass at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use amiguard::ledger::memory::MemoryLedger;
use amiguard::AwsError;
use chrono::{DateTime, Utc};
use orphan_snapshot_sweeper::core::partitions::{self, MAX_THROTTLED_RETRIES};
use orphan_snapshot_sweeper::core::partitions::{Passes, MAX_TRANSIENT_RETRIES};
use orphan_snapshot_sweeper::core::{
    FastSnapshotRestore, Id, ImageFacts, LaunchPermissions, SnapshotFacts, StagedImage, UsageEntry, UsageReport,
};
use orphan_snapshot_sweeper::ports::Records;
use orphan_snapshot_sweeper::ports::{Ec2, LaunchTemplateImages, SnapshotPage};
use orphan_snapshot_sweeper::{handle, Invocation, Ports};
use serde_json::json;
use support::*;

/// [`FakeEc2`] whose snapshots are also listed page by page, per partition.
struct Paged {
    inner: FakeEc2,
    page_size: usize,
    /// A partition every call of which EC2 throttles.
    throttled: Option<String>,
    /// Each `snapshot_page` call: the partition and the token it was given.
    pages: Mutex<Vec<(String, Option<String>)>>,
    /// How many more calls of a partition fail with a 503 (`Unavailable`).
    unavailable: Mutex<BTreeMap<String, u32>>,
    /// The listing in one sequence sees this many snapshots, then never ends.
    sequential_hangs_after: Option<u64>,
}

impl Listed for Paged {
    fn listed(&self) -> Vec<String> {
        self.inner.listed()
    }
}

impl Ec2 for Paged {
    async fn snapshot_page(
        &self,
        protect_tag: &str,
        partition: Option<&str>,
        next_token: Option<String>,
    ) -> Result<SnapshotPage, AwsError> {
        let partition = partition.unwrap().to_string();
        self.pages.lock().unwrap().push((partition.clone(), next_token.clone()));
        if self.throttled.as_deref() == Some(partition.as_str()) {
            return Err(err("DescribeSnapshots", "RequestLimitExceeded"));
        }
        if let Some(left) = self.unavailable.lock().unwrap().get_mut(&partition).filter(|n| **n > 0) {
            *left -= 1;
            return Err(err("DescribeSnapshots", "Unavailable"));
        }
        let mine: Vec<SnapshotFacts> = self
            .inner
            .snapshots
            .iter()
            .filter(|s| partitions::filter(partitions::partition_of(&s.snapshot_id).unwrap()) == partition)
            .map(|s| s.read(protect_tag))
            .collect();
        let start: usize = next_token.map_or(0, |t| t.parse().unwrap());
        let end = (start + self.page_size).min(mine.len());
        Ok(SnapshotPage {
            snapshots: mine[start..end].to_vec(),
            next_token: (end < mine.len()).then(|| end.to_string()),
        })
    }
    async fn snapshots(&self, protect_tag: &str) -> Result<Vec<SnapshotFacts>, AwsError> {
        self.inner.snapshots(protect_tag).await
    }
    async fn snapshots_counting(
        &self,
        protect_tag: &str,
        seen: &std::sync::atomic::AtomicU64,
    ) -> Result<Vec<SnapshotFacts>, AwsError> {
        if let Some(n) = self.sequential_hangs_after {
            seen.store(n, std::sync::atomic::Ordering::Relaxed);
            return std::future::pending().await;
        }
        let snapshots = self.inner.snapshots(protect_tag).await?;
        seen.store(snapshots.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(snapshots)
    }
    async fn images(&self, protect_tag: &str) -> Result<Vec<ImageFacts>, AwsError> {
        self.inner.images(protect_tag).await
    }
    async fn image(&self, image_id: &str) -> Result<Option<ImageFacts>, AwsError> {
        self.inner.image(image_id).await
    }
    async fn images_in_recycle_bin(&self) -> Result<BTreeSet<String>, AwsError> {
        self.inner.images_in_recycle_bin().await
    }
    async fn images_used_by_instances(&self) -> Result<BTreeSet<String>, AwsError> {
        self.inner.images_used_by_instances().await
    }
    async fn launch_template_images(&self) -> Result<LaunchTemplateImages, AwsError> {
        self.inner.launch_template_images().await
    }
    async fn is_image_shared(&self, image_id: &str) -> Result<bool, AwsError> {
        self.inner.is_image_shared(image_id).await
    }
    async fn locked_snapshots(&self) -> Result<hashbrown::HashSet<Id>, AwsError> {
        self.inner.locked_snapshots().await
    }
    async fn fast_snapshot_restores(&self) -> Result<Vec<FastSnapshotRestore>, AwsError> {
        self.inner.fast_snapshot_restores().await
    }
    async fn referenced_images(&self, image_ids: &[String]) -> Result<BTreeSet<String>, AwsError> {
        self.inner.referenced_images(image_ids).await
    }
    async fn is_snapshot_shared(&self, snapshot_id: &str) -> Result<bool, AwsError> {
        self.inner.is_snapshot_shared(snapshot_id).await
    }
    async fn deregister_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.inner.deregister_image(image_id).await
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.inner.delete_snapshot(snapshot_id).await
    }
    async fn mark_for_recycle_bin(&self, resource_ids: Vec<String>) -> Result<(), AwsError> {
        self.inner.mark_for_recycle_bin(resource_ids).await
    }
    async fn staged_images(&self) -> Result<Vec<StagedImage>, AwsError> {
        self.inner.staged_images().await
    }
    async fn launch_permissions(&self, image_id: &str) -> Result<LaunchPermissions, AwsError> {
        self.inner.launch_permissions(image_id).await
    }
    async fn add_launch_permissions(&self, image_id: &str, add: &LaunchPermissions) -> Result<(), AwsError> {
        self.inner.add_launch_permissions(image_id, add).await
    }
    async fn create_image_usage_report(&self, image_id: &str, depth: u32) -> Result<String, AwsError> {
        self.inner.create_image_usage_report(image_id, depth).await
    }
    async fn image_usage_reports(&self, image_ids: &[String]) -> Result<Vec<UsageReport>, AwsError> {
        self.inner.image_usage_reports(image_ids).await
    }
    async fn image_usage_report_entries(&self, report_id: &str) -> Result<Vec<UsageEntry>, AwsError> {
        self.inner.image_usage_report_entries(report_id).await
    }
    async fn delete_image_usage_report(&self, report_id: &str) -> Result<(), AwsError> {
        self.inner.delete_image_usage_report(report_id).await
    }
    async fn enable_image_deprecation(&self, image_id: &str, at: DateTime<Utc>) -> Result<(), AwsError> {
        self.inner.enable_image_deprecation(image_id, at).await
    }
    async fn disable_image_deprecation(&self, image_id: &str) -> Result<(), AwsError> {
        self.inner.disable_image_deprecation(image_id).await
    }
    async fn disable_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.inner.disable_image(image_id).await
    }
    async fn enable_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.inner.enable_image(image_id).await
    }
}

/// 64 orphans, 4 in each partition (ids whose last hex digit runs over 0..f).
fn orphans() -> Vec<String> {
    (0..64u32).map(|n| format!("snap-{:016x}{:x}", n / 16 + 1, n % 16)).collect()
}

fn paged(page_size: usize, throttled: Option<&str>) -> Paged {
    let snapshots = orphans().iter().map(|id| orphan(id)).collect();
    Paged {
        inner: FakeEc2::with(snapshots, Vec::new()),
        page_size,
        throttled: throttled.map(str::to_string),
        pages: Mutex::new(Vec::new()),
        unavailable: Mutex::new(BTreeMap::new()),
        sequential_hangs_after: None,
    }
}

/// The region's last complete pass as a ledger records it: `listed` snapshots in each partition.
fn pass_of(listed: u64) -> Passes {
    Passes::after_listing(vec![listed; partitions::PARTITIONS], 0)
}

/// [`sweep_with`] over a ledger that also records `passes` for each region (`None`: none yet),
/// and that ledger.
async fn sweep_recorded(
    config: &orphan_snapshot_sweeper::Config,
    regions: &[(String, Paged)],
    passes: Option<Passes>,
    invocation: Invocation,
) -> (orphan_snapshot_sweeper::report::Report, MemoryLedger) {
    let ledger = MemoryLedger::new();
    for (region, ec2) in regions {
        for item in ledger_seen(region, ec2.listed()).items() {
            ledger.insert(item);
        }
        if let Some(passes) = &passes {
            ledger.record_snapshot_passes(region, passes, now()).await.unwrap();
        }
    }
    (sweep_on(config, regions, &ledger, invocation).await, ledger)
}

async fn sweep_on(
    config: &orphan_snapshot_sweeper::Config,
    regions: &[(String, Paged)],
    ledger: &MemoryLedger,
    invocation: Invocation,
) -> orphan_snapshot_sweeper::report::Report {
    let publisher = FakeSns::default();
    let ports = Ports { regions, publisher: &publisher, ledger: Some(ledger) };
    let response = handle(config, &ports, &event(json!({})), &invocation).await.unwrap();
    response.sweep().expect("a sweep's report")
}

fn partitioned() -> orphan_snapshot_sweeper::Config {
    orphan_snapshot_sweeper::Config { partitioned_listing_above: 0, ..config() }
}

#[tokio::test(start_paused = true)]
async fn every_partition_is_paged_to_its_end_and_plans_what_one_listing_would() {
    let regions = vec![("us-east-1".to_string(), paged(3, None))];
    let (report, _) = sweep_recorded(&partitioned(), &regions, Some(pass_of(4)), invocation()).await;
    let region = &report.regions[0];
    assert_eq!(region.aborted, None);
    let deleted: BTreeSet<String> = region.deleted.iter().cloned().collect();
    assert_eq!(deleted, orphans().into_iter().collect(), "every orphan of every partition");
    // 4 a partition, 3 a page: 2 pages each, the second from the first's token.
    let pages = regions[0].1.pages.lock().unwrap().clone();
    assert_eq!(pages.len(), 32);
    let mut per_partition: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for (partition, token) in pages {
        per_partition.entry(partition).or_default().push(token);
    }
    assert_eq!(per_partition.len(), 16);
    assert!(per_partition.values().all(|tokens| *tokens == [None, Some("3".to_string())]), "{per_partition:?}");
    let listing = region.snapshot_listing.as_ref().unwrap();
    assert_eq!((listing.calls, listing.throttled), (Some(32), Some(0)));
}

#[tokio::test(start_paused = true)]
async fn a_partition_throttled_out_is_cut_after_its_retries_and_deletes_nothing() {
    let throttled = partitions::filter(7);
    let regions = vec![("us-east-1".to_string(), paged(1000, Some(&throttled)))];
    let (report, _) = sweep_recorded(&partitioned(), &regions, Some(pass_of(4)), invocation()).await;
    let region = &report.regions[0];
    assert_eq!(region.aborted, None, "the others go on");
    let in_cut: BTreeSet<String> = orphans().into_iter().filter(|id| id.ends_with('7')).collect();
    let deleted: BTreeSet<String> = region.deleted.iter().cloned().collect();
    assert!(deleted.is_disjoint(&in_cut), "nothing of the cut partition: {deleted:?}");
    assert_eq!(deleted.len(), 60);
    let listing = region.snapshot_listing.as_ref().unwrap();
    assert_eq!(listing.cut.len(), 1);
    assert_eq!(listing.cut[0].partition, throttled);
    assert!(listing.cut[0].reason.contains("throttled out"), "{}", listing.cut[0].reason);
    // The first call and its retries, all throttled.
    let tries = u64::from(MAX_THROTTLED_RETRIES) + 1;
    assert_eq!(listing.throttled, Some(tries));
    assert_eq!(listing.calls, Some(15 + tries));
    assert!(report.warnings.iter().any(|w| w.contains(&throttled)), "{:?}", report.warnings);
}

#[tokio::test(start_paused = true)]
async fn a_first_partitioned_pass_records_the_region_and_deletes_nothing() {
    let regions = vec![("us-east-1".to_string(), paged(3, None))];
    let (report, ledger) = sweep_recorded(&partitioned(), &regions, None, invocation()).await;
    let region = &report.regions[0];
    assert!(region.deleted.is_empty(), "no pass to prove coverage with: {:?}", region.deleted);
    assert!(region.aborted.as_deref().unwrap().contains("no complete listing pass"), "{:?}", region.aborted);
    assert_eq!(region.orphans.len(), 64, "still planned and reported");
    let recorded = ledger.snapshot_passes("us-east-1").await.unwrap();
    assert_eq!(recorded.last.unwrap().per_partition, vec![4; partitions::PARTITIONS], "the pass is recorded");
}

#[tokio::test(start_paused = true)]
async fn a_partition_short_of_its_own_last_count_deletes_nothing_and_never_becomes_the_baseline() {
    // The last pass listed 4 in each partition but one, which held 5: 4 found there now is
    // markedly short (20%), while the region's total is not (64 of 65).
    let mut counts = vec![4; partitions::PARTITIONS];
    counts[9] = 5;
    let last = Passes::after_listing(counts, 0);
    let regions = vec![("us-east-1".to_string(), paged(1000, None))];
    let (first, ledger) = sweep_recorded(&partitioned(), &regions, Some(last.clone()), invocation()).await;
    // The same listing again, the next run: still refused (the short listing did not become the
    // baseline).
    let second = sweep_on(&partitioned(), &regions, &ledger, invocation()).await;
    for report in [first, second] {
        let region = &report.regions[0];
        assert!(region.deleted.is_empty(), "{:?}", region.deleted);
        let why = region.aborted.as_deref().unwrap();
        assert!(why.contains("snap-*9") && why.contains("nothing deleted"), "{why}");
        assert_eq!(region.snapshot_listing.as_ref().unwrap().pass_recorded, None);
    }
    let recorded = ledger.snapshot_passes("us-east-1").await.unwrap();
    assert_eq!(recorded.last, last.last, "the refused listing is not the baseline");
    assert_eq!(recorded.refused.len(), partitions::PARTITIONS, "kept for the record");
    assert!(recorded.current.is_empty(), "nor part of a pass");
}

#[tokio::test(start_paused = true)]
async fn a_real_runs_deletions_are_expected_missing_from_the_next_listing() {
    let regions = vec![("us-east-1".to_string(), paged(1000, None))];
    let (report, ledger) = sweep_recorded(&partitioned(), &regions, Some(pass_of(4)), invocation()).await;
    assert_eq!(report.regions[0].deleted.len(), 64);
    let recorded = ledger.snapshot_passes("us-east-1").await.unwrap();
    assert_eq!(recorded.last.as_ref().unwrap().deleted, vec![4; partitions::PARTITIONS]);
    // Every partition now empty: no shortfall, the sweeper deleted them itself.
    assert_eq!(recorded.shortfall(&(0..partitions::PARTITIONS).map(|p| (p, 0)).collect::<Vec<_>>()), None);
}

#[tokio::test(start_paused = true)]
async fn a_transient_error_on_a_page_is_retried_before_the_partition_is_cut() {
    let regions = vec![("us-east-1".to_string(), paged(3, None))];
    let (flaky, broken) = (partitions::filter(3), partitions::filter(11));
    regions[0].1.unavailable.lock().unwrap().insert(flaky.clone(), MAX_TRANSIENT_RETRIES);
    regions[0].1.unavailable.lock().unwrap().insert(broken.clone(), u32::MAX);
    let (report, _) = sweep_recorded(&partitioned(), &regions, Some(pass_of(4)), invocation()).await;
    let region = &report.regions[0];
    let listing = region.snapshot_listing.as_ref().unwrap();
    assert!(listing.complete.contains(&flaky), "retried {MAX_TRANSIENT_RETRIES} times: {listing:?}");
    assert_eq!(listing.cut.len(), 1, "{listing:?}");
    assert_eq!(listing.cut[0].partition, broken);
    assert!(listing.cut[0].reason.contains("Unavailable"), "{}", listing.cut[0].reason);
    let tries = regions[0].1.pages.lock().unwrap().iter().filter(|(p, _)| *p == broken).count();
    assert_eq!(tries as u32, MAX_TRANSIENT_RETRIES + 1, "bounded");
    assert_eq!(region.deleted.len(), 60, "all but the cut partition's");
}

#[tokio::test(start_paused = true)]
async fn a_listing_in_one_sequence_cut_above_the_threshold_partitions_the_next_run() {
    let mut hanging = paged(1000, None);
    hanging.sequential_hangs_after = Some(25_000);
    let regions = vec![("us-east-1".to_string(), hanging)];
    let config = orphan_snapshot_sweeper::Config { partitioned_listing_above: 20_000, ..config() };
    let soon = Invocation::at(now())
        .with_request_id("r-test")
        .with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(300));
    let (report, ledger) = sweep_recorded(&config, &regions, None, soon).await;
    let region = &report.regions[0];
    assert!(region.aborted.as_deref().unwrap().contains("listing snapshots"), "{:?}", region.aborted);
    let recorded = ledger.snapshot_passes("us-east-1").await.unwrap();
    assert_eq!(recorded.sequential_cut_after, Some(25_000));
    assert!(recorded.partitioned(20_000), "the next run lists in partitions");
    assert!(
        report.warnings.iter().any(|w| w.contains("next run lists the region in partitions")),
        "{:?}",
        report.warnings
    );
    // Cut below the threshold: nothing recorded (a small region cut for another reason).
    let mut small = paged(1000, None);
    small.sequential_hangs_after = Some(20_000);
    let regions = vec![("us-east-1".to_string(), small)];
    let soon = Invocation::at(now())
        .with_request_id("r-test")
        .with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(300));
    let (_, ledger) = sweep_recorded(&config, &regions, None, soon).await;
    assert_eq!(ledger.snapshot_passes("us-east-1").await.unwrap(), Passes::default());
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_dry_run_lists_the_images_again_as_a_real_run_would() {
    let dry = orphan_snapshot_sweeper::Config { dry_run: true, ..partitioned() };
    let regions = vec![("us-east-1".to_string(), paged(1000, None))];
    let (report, _) = sweep_recorded(&dry, &regions, Some(pass_of(4)), invocation()).await;
    assert_eq!(report.regions[0].planned_deletions, 64);
    let images = regions[0].1.inner.calls().iter().filter(|c| *c == "DescribeImages").count();
    assert_eq!(images, 2, "listed once more before 'deleting'");
}
