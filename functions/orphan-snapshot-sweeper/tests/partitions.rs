//! The partitioned listing's paging and pacing (issue 23), over a fake EC2 that pages each
//! partition (its `snapshot-id` filter) and can throttle one partition without end. Time is
//! paused: the pauses between throttled answers pass at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use amiguard::AwsError;
use chrono::{DateTime, Utc};
use orphan_snapshot_sweeper::core::partitions::{self, MAX_THROTTLED_RETRIES};
use orphan_snapshot_sweeper::core::{
    FastSnapshotRestore, Id, ImageFacts, LaunchPermissions, SnapshotFacts, StagedImage, UsageEntry, UsageReport,
};
use orphan_snapshot_sweeper::ports::{Ec2, LaunchTemplateImages, SnapshotPage};
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
    }
}

fn partitioned() -> orphan_snapshot_sweeper::Config {
    orphan_snapshot_sweeper::Config { partitioned_listing_above: 0, ..config() }
}

#[tokio::test(start_paused = true)]
async fn every_partition_is_paged_to_its_end_and_plans_what_one_listing_would() {
    let regions = vec![("us-east-1".to_string(), paged(3, None))];
    let report = sweep_with(&partitioned(), &regions, &FakeSns::default(), &event(json!({})), invocation()).await;
    let region = &report.unwrap().regions[0];
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
    let report = sweep_with(&partitioned(), &regions, &FakeSns::default(), &event(json!({})), invocation()).await;
    let report = report.unwrap();
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
