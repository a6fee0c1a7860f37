//! The handler over the real `aws_sdk_ec2::Client` adapter, answered by `aws-smithy-mocks`:
//! paging, a failing page, throttling, InUse and the Recycle Bin (which moto lacks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::delete_snapshot::{DeleteSnapshotError, DeleteSnapshotOutput};
use aws_sdk_ec2::operation::describe_images::{DescribeImagesError, DescribeImagesOutput};
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::list_images_in_recycle_bin::{ListImagesInRecycleBinError, ListImagesInRecycleBinOutput};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Image, ImageRecycleBinInfo, Snapshot, SnapshotState};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use orphan_snapshot_sweeper::report::FailedDeletion;
use orphan_snapshot_sweeper::{KeepReason, Report};
use serde_json::json;
use support::*;

fn sdk_snapshot(id: &str) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .owner_id(ACCOUNT)
        .state(SnapshotState::Completed)
        .start_time(aws_smithy_types::DateTime::from_secs((now() - chrono::Duration::days(3)).timestamp()))
        .volume_size(10)
        .volume_id("vol-01")
        .description(format!("Created by CreateImage(i-0123) for ami-0{} from vol-01", &id[5..]))
        .build()
}

fn sdk_image(id: &str, snapshot: &str) -> Image {
    Image::builder()
        .image_id(id)
        .owner_id(ACCOUNT)
        .state(aws_sdk_ec2::types::ImageState::Available)
        .block_device_mappings(
            BlockDeviceMapping::builder().ebs(EbsBlockDevice::builder().snapshot_id(snapshot).build()).build(),
        )
        .build()
}

fn metadata(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(format!("{code} (mocked)")).build()
}

/// Three pages of snapshots (`snap-1` .. `snap-6`).
fn snapshot_pages() -> Vec<Rule> {
    let page = |ids: [&'static str; 2], token: Option<&'static str>, next: Option<&'static str>| {
        mock!(Client::describe_snapshots).match_requests(move |r| r.next_token() == token).then_output(move || {
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(ids.iter().map(|id| sdk_snapshot(id)).collect()))
                .set_next_token(next.map(str::to_string))
                .build()
        })
    };
    vec![
        page(["snap-1", "snap-2"], None, Some("s1")),
        page(["snap-3", "snap-4"], Some("s1"), Some("s2")),
        page(["snap-5", "snap-6"], Some("s2"), None),
    ]
}

fn images_page(
    token: Option<&'static str>,
    next: Option<&'static str>,
    image: Option<(&'static str, &'static str)>,
) -> Rule {
    mock!(Client::describe_images).match_requests(move |r| r.next_token() == token).then_output(move || {
        DescribeImagesOutput::builder()
            .set_images(image.map(|(id, snap)| vec![sdk_image(id, snap)]))
            .set_next_token(next.map(str::to_string))
            .build()
    })
}

fn empty_bin() -> Rule {
    mock!(Client::list_images_in_recycle_bin).then_output(|| ListImagesInRecycleBinOutput::builder().build())
}

fn no_locks() -> Rule {
    mock!(Client::describe_locked_snapshots).then_output(|| {
        aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsOutput::builder().build()
    })
}

fn no_restores() -> Rule {
    mock!(Client::describe_fast_snapshot_restores).then_output(|| {
        aws_sdk_ec2::operation::describe_fast_snapshot_restores::DescribeFastSnapshotRestoresOutput::builder().build()
    })
}

/// Shared with nobody: no create-volume permission.
fn not_shared() -> Rule {
    mock!(Client::describe_snapshot_attribute).then_output(|| {
        aws_sdk_ec2::operation::describe_snapshot_attribute::DescribeSnapshotAttributeOutput::builder().build()
    })
}

fn deletes() -> Rule {
    mock!(Client::delete_snapshot).then_output(|| DeleteSnapshotOutput::builder().build())
}

/// The SDK's clock follows tokio's, so that under paused time the adaptive rate limiter sees
/// its back-off pass (the mocks' default clock is frozen, and the limiter would wait forever).
#[derive(Debug)]
struct TokioClock(tokio::time::Instant);

impl aws_smithy_async::time::TimeSource for TokioClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000) + self.0.elapsed()
    }
}

/// A client with amiguard's retry policy and a retry partition of its own (the SDK shares a
/// partition's retry quota and adaptive rate limiter process-wide, across parallel tests).
fn client(rules: &[&Rule]) -> Client {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partition = aws_sdk_ec2::config::retry::RetryPartition::new(format!("sweeper-handler-test-{n}"));
    // No locks, no Fast Snapshot Restore, nothing shared: what every sweep asks besides.
    let (no_locks, no_restores, not_shared) = (no_locks(), no_restores(), not_shared());
    let rules: Vec<&Rule> = rules.iter().copied().chain([&no_locks, &no_restores, &not_shared]).collect();
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &rules, |c| c
        .retry_config(amiguard::sdk::retry_config())
        .retry_partition(partition.clone())
        .time_source(TokioClock(tokio::time::Instant::now())))
}

impl Listed for Client {
    /// `snap-1` .. `snap-6`: the pages of `snapshot_pages`.
    fn listed(&self) -> Vec<String> {
        (1..=6).map(|i| format!("snap-{i}")).collect()
    }
}

async fn run(client: Client) -> Report {
    let regions = vec![("us-east-1".to_string(), client)];
    sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_reference_on_the_last_page_of_images_keeps_its_snapshot() {
    let snapshots = snapshot_pages();
    let images = [
        images_page(None, Some("i1"), Some(("ami-0a", "snap-1"))),
        images_page(Some("i1"), Some("i2"), None),
        images_page(Some("i2"), None, Some(("ami-0z", "snap-6"))),
    ];
    let (bin, delete) = (empty_bin(), deletes());
    let mut rules: Vec<&Rule> = snapshots.iter().chain(images.iter()).collect();
    rules.extend([&bin, &delete]);
    let report = run(client(&rules)).await;
    let region = &report.regions[0];
    assert_eq!(region.snapshots_scanned, 6, "every page of snapshots");
    assert_eq!(region.images_scanned, 2, "every page of images");
    assert_eq!(region.deleted, ["snap-2", "snap-3", "snap-4", "snap-5"]);
    assert_eq!(region.kept, BTreeMap::from([(KeepReason::ReferencedByImage, 2)]));
    assert_eq!(delete.num_calls(), 4);
    assert_eq!(images[2].num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_second_page_of_images_aborts_with_zero_deletions() {
    let snapshots = snapshot_pages();
    let first = images_page(None, Some("i1"), Some(("ami-0a", "snap-1")));
    let failing = mock!(Client::describe_images)
        .match_requests(|r| r.next_token() == Some("i1"))
        .then_error(|| DescribeImagesError::generic(metadata("InternalError")));
    let (bin, delete) = (empty_bin(), deletes());
    let mut rules: Vec<&Rule> = snapshots.iter().collect();
    rules.extend([&first, &failing, &bin, &delete]);
    let report = run(client(&rules)).await;
    assert_eq!(delete.num_calls(), 0);
    let region = &report.regions[0];
    assert!(region.aborted.as_deref().unwrap().contains("InternalError"), "{:?}", region.aborted);
    assert!(region.deleted.is_empty() && region.orphans.is_empty());
    assert!(failing.num_calls() >= 1);
}

#[tokio::test(start_paused = true)]
async fn throttled_deletes_succeed_and_in_use_is_a_reported_outcome() {
    let snapshots = snapshot_pages();
    let images = images_page(None, None, None);
    let throttled = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-1"))
        .sequence()
        .error(|| DeleteSnapshotError::generic(metadata("RequestLimitExceeded")))
        .times(3)
        .output(|| DeleteSnapshotOutput::builder().build())
        .build();
    let in_use = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-2"))
        .then_error(|| DeleteSnapshotError::generic(metadata("InvalidSnapshot.InUse")));
    let gone = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-3"))
        .then_error(|| DeleteSnapshotError::generic(metadata("InvalidSnapshot.NotFound")));
    let (bin, delete) = (empty_bin(), deletes());
    let mut rules: Vec<&Rule> = snapshots.iter().collect();
    rules.extend([&images, &bin, &throttled, &in_use, &gone, &delete]);
    let report = run(client(&rules)).await;
    let region = &report.regions[0];
    assert_eq!(throttled.num_calls(), 4, "three throttled attempts, then success");
    assert_eq!(region.deleted, ["snap-1", "snap-4", "snap-5", "snap-6"]);
    assert_eq!(region.already_gone, ["snap-3"]);
    assert_eq!(
        region.failed,
        [FailedDeletion {
            snapshot_id: "snap-2".into(),
            code: "InvalidSnapshot.InUse".into(),
            message: "InvalidSnapshot.InUse (mocked)".into()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn the_recycle_bin_keeps_its_amis_snapshots_and_a_failing_listing_aborts() {
    let snapshots = snapshot_pages();
    let images = images_page(None, None, None);
    let bin = mock!(Client::list_images_in_recycle_bin).then_output(|| {
        ListImagesInRecycleBinOutput::builder()
            .images(ImageRecycleBinInfo::builder().image_id("ami-01").build())
            .images(ImageRecycleBinInfo::builder().image_id("ami-05").build())
            .build()
    });
    let delete = deletes();
    let mut rules: Vec<&Rule> = snapshots.iter().collect();
    rules.extend([&images, &bin, &delete]);
    let report = run(client(&rules)).await;
    assert_eq!(report.regions[0].deleted, ["snap-2", "snap-3", "snap-4", "snap-6"]);
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::SourceImageInRecycleBin, 2)]));

    let snapshots = snapshot_pages();
    let failing = mock!(Client::list_images_in_recycle_bin)
        .then_error(|| ListImagesInRecycleBinError::generic(metadata("UnauthorizedOperation")));
    let delete = deletes();
    let mut rules: Vec<&Rule> = snapshots.iter().collect();
    rules.extend([&images, &failing, &delete]);
    let report = run(client(&rules)).await;
    assert_eq!(delete.num_calls(), 0);
    let aborted = report.regions[0].aborted.as_deref().unwrap();
    assert!(aborted.starts_with("listing the Recycle Bin failed") && aborted.contains("UnauthorizedOperation"));
}
