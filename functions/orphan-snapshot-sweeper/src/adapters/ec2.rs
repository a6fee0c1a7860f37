//! The sweeper's EC2 port ([`Ec2`], one per region) on `aws_sdk_ec2::Client`.
//!
//! Every listing reads every page and fails as a whole when any page fails: a partial listing of
//! images would make referenced snapshots look orphaned, so there is no "best effort" here.

use std::collections::BTreeSet;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::types::{
    Filter, ImageAttributeName, ImageReferenceOptionName, ImageReferenceResourceType, LockState, ResourceTypeOption,
    ResourceTypeRequest, SnapshotAttributeName,
};
use chrono::{DateTime, Utc};
use hashbrown::HashSet;

use amiguard::paging::PageTokens;
use amiguard::tags;
use amiguard::AwsError;

use super::image_stages;
use crate::core::retire::reads_image_tag;
use crate::core::{
    FastSnapshotRestore, Id, ImageFacts, LaunchPermissions, SnapshotFacts, SnapshotListing, StagedImage, UsageEntry,
    UsageReport,
};
use crate::ports::{Ec2, LaunchTemplateImages};

/// EC2's page-size maxima differ by API.
const MAX_RESULTS: i32 = 1000;
const MAX_RESULTS_LAUNCH_TEMPLATES: i32 = 200;
const MAX_RESULTS_IMAGE_REFERENCES: i32 = 1000;
/// `DescribeVolumes` answers 500 at most a page.
const MAX_RESULTS_VOLUMES: i32 = 500;
/// `DescribeImageReferences` takes at most this many image ids a call.
pub const IMAGE_REFERENCE_IDS_PER_CALL: usize = 10;
/// The launch-template versions `DescribeImageReferences` reads back: its maximum (default 10),
/// so that a version pinned by number years ago still counts.
const LAUNCH_TEMPLATE_VERSION_DEPTH: &str = "10000";

/// The states of an instance that is not terminated.
const LIVE_INSTANCE_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

impl Ec2 for aws_sdk_ec2::Client {
    async fn snapshots(&self, protect_tag: &str) -> Result<Vec<SnapshotFacts>, AwsError> {
        self.snapshots_counting(protect_tag, &std::sync::atomic::AtomicU64::new(0)).await
    }

    async fn snapshots_counting(
        &self,
        protect_tag: &str,
        seen: &std::sync::atomic::AtomicU64,
    ) -> Result<Vec<SnapshotFacts>, AwsError> {
        let mut pages = self
            .describe_snapshots()
            .owner_ids("self")
            .max_results(MAX_RESULTS)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeSnapshots");
        let mut snapshots = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeSnapshots", e))?;
            tokens.check(page.next_token())?;
            seen.fetch_add(page.snapshots().len() as u64, std::sync::atomic::Ordering::Relaxed);
            // Each page's descriptions and tags are dropped here, once read.
            snapshots.extend(page.snapshots().iter().filter_map(|snapshot| snapshot_facts(snapshot, protect_tag)));
        }
        Ok(snapshots)
    }

    async fn snapshot_page(
        &self,
        protect_tag: &str,
        partition: Option<&str>,
        next_token: Option<String>,
    ) -> Result<crate::ports::SnapshotPage, AwsError> {
        // Answered as EC2 gave it: a throttled answer comes back as `RequestLimitExceeded`
        // instead of being retried by the SDK, so that the caller paces the partitions of a region
        // with one token bucket and counts what EC2 throttled (`flow::partitioned`).
        let filter = partition.map(|value| Filter::builder().name("snapshot-id").values(value).build());
        let page = self
            .describe_snapshots()
            .owner_ids("self")
            .max_results(MAX_RESULTS)
            .set_filters(filter.map(|f| vec![f]))
            .set_next_token(next_token)
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSnapshots", e))?;
        Ok(crate::ports::SnapshotPage {
            // Each page's descriptions and tags are dropped here, once read.
            snapshots: page.snapshots().iter().filter_map(|snapshot| snapshot_facts(snapshot, protect_tag)).collect(),
            next_token: page.next_token().filter(|t| !t.is_empty()).map(str::to_string),
        })
    }

    async fn volumes(&self, by: &'static str, values: Vec<String>) -> Result<Vec<(Id, Option<Id>)>, AwsError> {
        // A filter, not `VolumeIds`: a volume that is gone is not an error, only absent.
        let filter = Filter::builder().name(by).set_values(Some(values)).build();
        let mut pages = self
            .describe_volumes()
            .filters(filter)
            .max_results(MAX_RESULTS_VOLUMES)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeVolumes");
        let mut volumes = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeVolumes", e))?;
            tokens.check(page.next_token())?;
            volumes.extend(page.volumes().iter().filter_map(|v| {
                let source = v.snapshot_id().filter(|s| !s.is_empty()).map(Id::from);
                v.volume_id().map(|id| (Id::from(id), source))
            }));
        }
        Ok(volumes)
    }

    async fn images(&self, protect_tag: &str) -> Result<Vec<ImageFacts>, AwsError> {
        amiguard::paging::describe_own_images(self, Vec::new(), |image| image_facts(image, protect_tag)).await
    }

    async fn image(&self, image_id: &str) -> Result<Option<ImageFacts>, AwsError> {
        // One id: no page to follow (EC2 refuses `MaxResults` beside `ImageIds`).
        let answer = self
            .describe_images()
            .image_ids(image_id)
            .owners("self")
            .include_disabled(true)
            .include_deprecated(true)
            .send()
            .await;
        match answer {
            Ok(output) => {
                Ok(output.images().iter().filter(|i| i.image_id() == Some(image_id)).find_map(|i| image_facts(i, "")))
            }
            // An id that never existed (a deregistered one answers an empty list).
            Err(err) => match AwsError::from_sdk("DescribeImages", err) {
                err if err.has_code("InvalidAMIID.NotFound") || err.has_code("InvalidAMIID.Unavailable") => Ok(None),
                err => Err(err),
            },
        }
    }

    async fn images_in_recycle_bin(&self) -> Result<BTreeSet<String>, AwsError> {
        let mut pages = self
            .list_images_in_recycle_bin()
            .max_results(MAX_RESULTS)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("ListImagesInRecycleBin");
        let mut ids = BTreeSet::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListImagesInRecycleBin", e))?;
            tokens.check(page.next_token())?;
            ids.extend(page.images().iter().filter_map(|i| i.image_id().map(str::to_string)));
        }
        Ok(ids)
    }

    async fn images_used_by_instances(&self) -> Result<BTreeSet<String>, AwsError> {
        let state = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(LIVE_INSTANCE_STATES.iter().map(|s| s.to_string()).collect()))
            .build();
        let mut pages = self
            .describe_instances()
            .filters(state)
            .max_results(MAX_RESULTS)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeInstances");
        let mut ids = BTreeSet::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeInstances", e))?;
            tokens.check(page.next_token())?;
            for reservation in page.reservations() {
                ids.extend(reservation.instances().iter().filter_map(|i| i.image_id().map(str::to_string)));
            }
        }
        Ok(ids)
    }

    async fn launch_template_images(&self) -> Result<LaunchTemplateImages, AwsError> {
        // Without a template id, `$Default` and `$Latest` describe those versions of every
        // template in the region, in one paged listing.
        let mut pages = self
            .describe_launch_template_versions()
            .versions("$Default")
            .versions("$Latest")
            .resolve_alias(true)
            .max_results(MAX_RESULTS_LAUNCH_TEMPLATES)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeLaunchTemplateVersions");
        let mut images = LaunchTemplateImages::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeLaunchTemplateVersions", e))?;
            tokens.check(page.next_token())?;
            for version in page.launch_template_versions() {
                let Some(image) = version.launch_template_data().and_then(|d| d.image_id()) else {
                    continue;
                };
                if image.starts_with("ami-") {
                    images.image_ids.insert(image.to_string());
                } else {
                    images.unresolved.push(format!(
                        "{} version {}: {image}",
                        version.launch_template_id().unwrap_or("?"),
                        version.version_number().unwrap_or_default()
                    ));
                }
            }
        }
        Ok(images)
    }

    async fn is_image_shared(&self, image_id: &str) -> Result<bool, AwsError> {
        let output = self
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeImageAttribute", e))?;
        Ok(!output.launch_permissions().is_empty())
    }

    async fn locked_snapshots(&self) -> Result<HashSet<Id>, AwsError> {
        // No paginator in the SDK for this one: paged by hand, with the same token check.
        let mut tokens = PageTokens::new("DescribeLockedSnapshots");
        let mut locked = HashSet::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .describe_locked_snapshots()
                .max_results(MAX_RESULTS)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeLockedSnapshots", e))?;
            tokens.check(page.next_token())?;
            for snapshot in page.snapshots() {
                // An unknown state is a lock until EC2 says otherwise.
                if snapshot.lock_state() != Some(&LockState::Expired) {
                    locked.extend(snapshot.snapshot_id().map(Id::from));
                }
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => return Ok(locked),
            }
        }
    }

    async fn fast_snapshot_restores(&self) -> Result<Vec<FastSnapshotRestore>, AwsError> {
        let mut pages = self
            .describe_fast_snapshot_restores()
            .max_results(200) // the API's maximum for this call
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeFastSnapshotRestores");
        let mut restores = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeFastSnapshotRestores", e))?;
            tokens.check(page.next_token())?;
            for item in page.fast_snapshot_restores() {
                let state = item.state().map(|s| s.as_str().to_string()).unwrap_or_default();
                if let (Some(snapshot), false) = (item.snapshot_id(), state == "disabled") {
                    restores.push(FastSnapshotRestore {
                        snapshot_id: snapshot.to_string(),
                        availability_zone: item.availability_zone().unwrap_or_default().to_string(),
                        state,
                    });
                }
            }
        }
        Ok(restores)
    }

    async fn referenced_images(&self, image_ids: &[String]) -> Result<BTreeSet<String>, AwsError> {
        let depth = ResourceTypeOption::builder()
            .option_name(ImageReferenceOptionName::VersionDepth)
            .option_values(LAUNCH_TEMPLATE_VERSION_DEPTH)
            .build();
        // Instances as `images_used_by_instances` counts them: every state but terminated (the API
        // default includes terminated ones, which use nothing).
        let live = ResourceTypeOption::builder()
            .option_name(ImageReferenceOptionName::StateName)
            .set_option_values(Some(LIVE_INSTANCE_STATES.iter().map(|s| s.to_string()).collect()))
            .build();
        let every_type = [
            ResourceTypeRequest::builder()
                .resource_type(ImageReferenceResourceType::Ec2Instance)
                .resource_type_options(live)
                .build(),
            ResourceTypeRequest::builder()
                .resource_type(ImageReferenceResourceType::Ec2LaunchTemplate)
                .resource_type_options(depth)
                .build(),
            ResourceTypeRequest::builder().resource_type(ImageReferenceResourceType::SsmParameter).build(),
            ResourceTypeRequest::builder().resource_type(ImageReferenceResourceType::ImageBuilderImageRecipe).build(),
            ResourceTypeRequest::builder()
                .resource_type(ImageReferenceResourceType::ImageBuilderContainerRecipe)
                .build(),
        ];
        let mut referenced = BTreeSet::new();
        for chunk in image_ids.chunks(IMAGE_REFERENCE_IDS_PER_CALL) {
            let mut pages = self
                .describe_image_references()
                .set_image_ids(Some(chunk.to_vec()))
                .set_resource_types(Some(every_type.to_vec()))
                .max_results(MAX_RESULTS_IMAGE_REFERENCES)
                .into_paginator()
                .stop_on_duplicate_token(false)
                .send();
            let mut tokens = PageTokens::new("DescribeImageReferences");
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeImageReferences", e))?;
                tokens.check(page.next_token())?;
                referenced.extend(page.image_references().iter().filter_map(|r| r.image_id().map(str::to_string)));
            }
        }
        Ok(referenced)
    }

    async fn is_snapshot_shared(&self, snapshot_id: &str) -> Result<bool, AwsError> {
        let output = self
            .describe_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSnapshotAttribute", e))?;
        Ok(!output.create_volume_permissions().is_empty())
    }

    async fn deregister_image(&self, image_id: &str) -> Result<(), AwsError> {
        // Its snapshots are deleted by the sweep that follows, through every rule of the planner,
        // not by EC2's `DeleteAssociatedSnapshots`.
        self.deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("DeregisterImage", e))
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("DeleteSnapshot", e))
    }

    /// Writes the Recycle Bin rules' tag on `resource_ids` (at most
    /// [`amiguard::recycle_bin::CREATE_TAGS_MAX_IDS`]) in one `CreateTags`: the only tag the role
    /// that deletes orphans may write.
    async fn mark_for_recycle_bin(&self, resource_ids: Vec<String>) -> Result<(), AwsError> {
        let tag = amiguard::recycle_bin::RecycleBin::tag();
        self.create_tags()
            .set_resources(Some(resource_ids))
            .tags(aws_sdk_ec2::types::Tag::builder().key(tag.key).value(tag.value).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("CreateTags", e))
    }

    async fn staged_images(&self) -> Result<Vec<StagedImage>, AwsError> {
        image_stages::staged_images(self).await
    }

    async fn launch_permissions(&self, image_id: &str) -> Result<LaunchPermissions, AwsError> {
        image_stages::launch_permissions(self, image_id).await
    }

    async fn add_launch_permissions(&self, image_id: &str, permissions: &LaunchPermissions) -> Result<(), AwsError> {
        image_stages::add_launch_permissions(self, image_id, permissions).await
    }

    async fn create_image_usage_report(&self, image_id: &str, template_depth: u32) -> Result<String, AwsError> {
        image_stages::create_image_usage_report(self, image_id, template_depth).await
    }

    async fn image_usage_reports(&self, image_ids: &[String]) -> Result<Vec<UsageReport>, AwsError> {
        image_stages::image_usage_reports(self, image_ids).await
    }

    async fn image_usage_report_entries(&self, report_id: &str) -> Result<Vec<UsageEntry>, AwsError> {
        image_stages::image_usage_report_entries(self, report_id).await
    }

    async fn delete_image_usage_report(&self, report_id: &str) -> Result<(), AwsError> {
        image_stages::delete_image_usage_report(self, report_id).await
    }

    async fn enable_image_deprecation(&self, image_id: &str, now: DateTime<Utc>) -> Result<(), AwsError> {
        image_stages::enable_image_deprecation(self, image_id, now).await
    }

    async fn disable_image_deprecation(&self, image_id: &str) -> Result<(), AwsError> {
        image_stages::disable_image_deprecation(self, image_id).await
    }

    async fn disable_image(&self, image_id: &str) -> Result<(), AwsError> {
        image_stages::disable_image(self, image_id).await
    }

    async fn enable_image(&self, image_id: &str) -> Result<(), AwsError> {
        image_stages::enable_image(self, image_id).await
    }
}

/// A listed snapshot's facts, with its `FullSnapshotSizeInBytes` (what deleting it frees at most).
pub fn snapshot_facts(snapshot: &aws_sdk_ec2::types::Snapshot, protect_tag: &str) -> Option<SnapshotFacts> {
    let mut facts = snapshot_listing(snapshot)?.read(protect_tag);
    facts.full_size_bytes = snapshot.full_snapshot_size_in_bytes().and_then(|bytes| u64::try_from(bytes).ok());
    Some(facts)
}

/// A listed snapshot as the sweeper reads it; `None` for an entry without an id.
pub fn snapshot_listing(snapshot: &aws_sdk_ec2::types::Snapshot) -> Option<SnapshotListing> {
    Some(SnapshotListing {
        snapshot_id: snapshot.snapshot_id()?.to_string(),
        owner_id: snapshot.owner_id().map(str::to_string),
        state: snapshot.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        start_time: snapshot.start_time().and_then(to_chrono),
        size_gib: snapshot.volume_size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        description: snapshot.description().unwrap_or_default().to_string(),
        volume_id: snapshot.volume_id().map(str::to_string),
        storage_tier: snapshot.storage_tier().map(|t| t.as_str().to_string()),
        tags: tags::from_sdk(snapshot.tags()),
    })
}

/// The planners' view of a listed image; `None` for an entry without an id.
pub fn image_facts(image: &aws_sdk_ec2::types::Image, protect_tag: &str) -> Option<ImageFacts> {
    Some(ImageFacts {
        image_id: Id::from(image.image_id()?),
        owner_id: image.owner_id().map(Id::from),
        name: image.name().unwrap_or_default().to_string(),
        state: image.state().map(|s| Id::from(s.as_str())).unwrap_or_default(),
        creation_date: image.creation_date().and_then(parse_time),
        last_launched_time: image.last_launched_time().and_then(parse_time),
        public: image.public().unwrap_or(false),
        deregistration_protection: image.deregistration_protection().map(str::to_string),
        snapshot_ids: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|ebs| ebs.snapshot_id()).map(Id::from))
            .collect(),
        tags: tags::from_sdk(image.tags()).into_iter().filter(|t| reads_image_tag(&t.key, protect_tag)).collect(),
    })
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// EC2 writes image dates as RFC 3339 strings (`2024-10-10T00:00:00.000Z`). An unreadable one is
/// unknown, and unknown ages are treated as young.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::delete_snapshot::{DeleteSnapshotError, DeleteSnapshotOutput};
    use aws_sdk_ec2::operation::describe_image_attribute::DescribeImageAttributeOutput;
    use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
    use aws_sdk_ec2::operation::describe_snapshots::{DescribeSnapshotsError, DescribeSnapshotsOutput};
    use aws_sdk_ec2::operation::list_images_in_recycle_bin::{
        ListImagesInRecycleBinError, ListImagesInRecycleBinOutput,
    };
    use aws_sdk_ec2::types::{
        BlockDeviceMapping, EbsBlockDevice, Image, ImageRecycleBinInfo, ImageState, Instance, LaunchPermission,
        LaunchTemplateVersion, PermissionGroup, Reservation, ResponseLaunchTemplateData, Snapshot, SnapshotState,
    };
    use aws_sdk_ec2::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn snapshot(id: &str) -> Snapshot {
        Snapshot::builder()
            .snapshot_id(id)
            .owner_id("123456789012")
            .state(SnapshotState::Completed)
            .start_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .volume_size(8)
            .volume_id("vol-01")
            .storage_tier(aws_sdk_ec2::types::StorageTier::Archive)
            .description("Created by CreateImage(i-01) for ami-0a from vol-01")
            .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("x").build())
            .build()
    }

    fn page(ids: &[&str], next: Option<&str>) -> DescribeSnapshotsOutput {
        DescribeSnapshotsOutput::builder()
            .set_snapshots(Some(ids.iter().map(|id| snapshot(id)).collect()))
            .set_next_token(next.map(str::to_string))
            .build()
    }

    fn service_error(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(format!("{code} (mocked)")).build()
    }

    /// A retry partition of its own for each test client: the SDK shares the retry quota and the
    /// adaptive rate limiter of a partition process-wide, so one test's throttling must not slow
    /// down another's.
    fn own_partition() -> aws_sdk_ec2::config::retry::RetryPartition {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        aws_sdk_ec2::config::retry::RetryPartition::new(format!("sweeper-ec2-test-{n}"))
    }

    /// A client with amiguard's retry policy (adaptive, 10 attempts); run under paused time so
    /// back-off costs nothing.
    macro_rules! client {
        ($($rule:expr),+) => {
            mock_client!(aws_sdk_ec2, RuleMode::Sequential, [$($rule),+], |c| c
                .retry_config(amiguard::sdk::retry_config())
                .retry_partition(own_partition()))
        };
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_reads_every_page_and_asks_for_own_snapshots() {
        let first = mock!(Client::describe_snapshots)
            .match_requests(|r| {
                r.owner_ids() == ["self".to_string()] && r.max_results() == Some(1000) && r.next_token().is_none()
            })
            .then_output(|| page(&["snap-01", "snap-02"], Some("t1")));
        let second = mock!(Client::describe_snapshots)
            .match_requests(|r| r.next_token() == Some("t1"))
            .then_output(|| page(&["snap-03"], Some("t2")));
        let last = mock!(Client::describe_snapshots)
            .match_requests(|r| r.next_token() == Some("t2"))
            .then_output(|| page(&["snap-04"], None));
        let client = client!(&first, &second, &last);
        let snapshots = client.snapshots(tags::KEEP).await.unwrap();
        let ids: Vec<&str> = snapshots.iter().map(|s| s.snapshot_id.as_str()).collect();
        assert_eq!(ids, ["snap-01", "snap-02", "snap-03", "snap-04"]);
        let s = &snapshots[0];
        assert_eq!(s.owner_id.as_deref(), Some("123456789012"));
        assert!(s.completed);
        assert_eq!(s.size_gib, 8);
        assert_eq!(s.start_time.unwrap().timestamp(), 1_700_000_000);
        // Read with the page: the description names the AMI, the `Name` tag marks nothing.
        // The description is believed because it names the volume EC2 says the snapshot is from.
        assert_eq!(s.sources.iter().collect::<Vec<_>>(), ["ami-0a"]);
        // The archive tier is read with the page and keeps the snapshot.
        assert_eq!(s.marked, Some(crate::core::KeepReason::Archived));
        assert_eq!(last.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_page_fails_the_whole_listing_with_its_code() {
        let first = mock!(Client::describe_snapshots).then_output(|| page(&["snap-01"], Some("t1")));
        let failing = mock!(Client::describe_snapshots)
            .then_error(|| DescribeSnapshotsError::generic(service_error("UnauthorizedOperation")));
        let client = client!(&first, &failing);
        let err = client.snapshots(tags::KEEP).await.unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("DescribeSnapshots", "UnauthorizedOperation"));
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_pages_are_retried_not_failed() {
        let throttled = mock!(Client::describe_snapshots)
            .sequence()
            .error(|| DescribeSnapshotsError::generic(service_error("RequestLimitExceeded")))
            .times(4)
            .output(|| page(&["snap-01"], None))
            .build();
        let client = client!(&throttled);
        assert_eq!(client.snapshots(tags::KEEP).await.unwrap().len(), 1);
        assert_eq!(throttled.num_calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn images_include_disabled_and_deprecated_and_read_every_page() {
        let image = |id: &str, snap: &str| {
            Image::builder()
                .image_id(id)
                .owner_id("123456789012")
                .name(format!("n-{id}"))
                .state(ImageState::Disabled)
                .creation_date("2024-10-10T00:00:00.000Z")
                .public(false)
                .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("web").build())
                .tags(aws_sdk_ec2::types::Tag::builder().key("team:keep").value("").build())
                .tags(aws_sdk_ec2::types::Tag::builder().key(tags::CREATED_BY).value("snapshot-on-stop").build())
                .tags(aws_sdk_ec2::types::Tag::builder().key(tags::KEEP).value("").build())
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name("/dev/xvda")
                        .ebs(EbsBlockDevice::builder().snapshot_id(snap).build())
                        .build(),
                )
                .block_device_mappings(
                    BlockDeviceMapping::builder().device_name("/dev/sdb").virtual_name("ephemeral0").build(),
                )
                .build()
        };
        let first = mock!(Client::describe_images)
            .match_requests(|r| {
                r.owners() == ["self".to_string()]
                    && r.include_disabled() == Some(true)
                    && r.include_deprecated() == Some(true)
                    && r.max_results() == Some(1000)
            })
            .then_output(move || {
                DescribeImagesOutput::builder().images(image("ami-0a", "snap-0a")).next_token("t").build()
            });
        let last = mock!(Client::describe_images)
            .match_requests(|r| r.next_token() == Some("t"))
            .then_output(move || DescribeImagesOutput::builder().images(image("ami-0b", "snap-0b")).build());
        let client = client!(&first, &last);
        let images = client.images("team:keep").await.unwrap();
        assert_eq!(images.len(), 2);
        // Only the tags retirement reads are kept: the configured protect tag and created-by.
        let kept: Vec<&str> = images[0].tags.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(kept, ["team:keep", tags::CREATED_BY]);
        assert_eq!(images[1].snapshot_ids, ["snap-0b"]);
        assert_eq!(images[0].state, "disabled");
        assert_eq!(images[0].creation_date.unwrap().to_rfc3339(), "2024-10-10T00:00:00+00:00");
        assert_eq!(images[0].last_launched_time, None);
    }

    #[tokio::test(start_paused = true)]
    async fn one_image_is_asked_by_id_as_an_own_image_and_not_listed_is_none() {
        let mapped = Image::builder()
            .image_id("ami-0a")
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(EbsBlockDevice::builder().snapshot_id("snap-0a").build())
                    .build(),
            )
            .build();
        let listed = mock!(Client::describe_images)
            .match_requests(|r| {
                r.image_ids() == ["ami-0a".to_string()]
                    && r.owners() == ["self".to_string()]
                    && r.include_disabled() == Some(true)
                    && r.include_deprecated() == Some(true)
                    && r.max_results().is_none()
            })
            .then_output(move || DescribeImagesOutput::builder().images(mapped.clone()).build());
        // Deregistered: an empty list; never existed: EC2's NotFound; a refusal is an error.
        let gone = mock!(Client::describe_images).then_output(|| DescribeImagesOutput::builder().build());
        let never = mock!(Client::describe_images).then_error(|| {
            aws_sdk_ec2::operation::describe_images::DescribeImagesError::generic(service_error(
                "InvalidAMIID.NotFound",
            ))
        });
        let refused = mock!(Client::describe_images).then_error(|| {
            aws_sdk_ec2::operation::describe_images::DescribeImagesError::generic(service_error(
                "UnauthorizedOperation",
            ))
        });
        let client = client!(&listed, &gone, &never, &refused);
        assert_eq!(client.image("ami-0a").await.unwrap().unwrap().snapshot_ids, ["snap-0a"]);
        assert_eq!(client.image("ami-0b").await.unwrap(), None);
        assert_eq!(client.image("ami-0c").await.unwrap(), None);
        assert_eq!(client.image("ami-0d").await.unwrap_err().code, "UnauthorizedOperation");
    }

    #[tokio::test(start_paused = true)]
    async fn recycle_bin_listing_pages_and_fails_as_a_whole() {
        let first = mock!(Client::list_images_in_recycle_bin)
            .match_requests(|r| r.max_results() == Some(1000))
            .then_output(|| {
                ListImagesInRecycleBinOutput::builder()
                    .images(ImageRecycleBinInfo::builder().image_id("ami-0bin1").build())
                    .next_token("t")
                    .build()
            });
        let last = mock!(Client::list_images_in_recycle_bin).then_output(|| {
            ListImagesInRecycleBinOutput::builder()
                .images(ImageRecycleBinInfo::builder().image_id("ami-0bin2").build())
                .build()
        });
        let client = client!(&first, &last);
        let ids = client.images_in_recycle_bin().await.unwrap();
        assert_eq!(ids, BTreeSet::from(["ami-0bin1".to_string(), "ami-0bin2".to_string()]));

        let denied = mock!(Client::list_images_in_recycle_bin)
            .then_error(|| ListImagesInRecycleBinError::generic(service_error("UnauthorizedOperation")));
        let client = client!(&denied);
        let err = client.images_in_recycle_bin().await.unwrap_err();
        assert_eq!((err.operation, err.code.as_str()), ("ListImagesInRecycleBin", "UnauthorizedOperation"));
    }

    #[tokio::test(start_paused = true)]
    async fn delete_keeps_the_aws_code_and_survives_throttling() {
        let in_use = mock!(Client::delete_snapshot)
            .then_error(|| DeleteSnapshotError::generic(service_error("InvalidSnapshot.InUse")));
        let client = client!(&in_use);
        let err = Ec2::delete_snapshot(&client, "snap-01").await.unwrap_err();
        assert!(err.has_code("InvalidSnapshot.InUse"));
        assert_eq!(in_use.num_calls(), 1, "InUse is not retried");

        // A third of calls throttled (and worse) slows the run down but does not fail it.
        let throttled = mock!(Client::delete_snapshot)
            .match_requests(|r| r.snapshot_id() == Some("snap-02"))
            .sequence()
            .error(|| DeleteSnapshotError::generic(service_error("RequestLimitExceeded")))
            .times(6)
            .output(|| DeleteSnapshotOutput::builder().build())
            .build();
        let client = client!(&throttled);
        Ec2::delete_snapshot(&client, "snap-02").await.unwrap();
        assert_eq!(throttled.num_calls(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn instances_ask_for_every_state_but_terminated() {
        let rule = mock!(Client::describe_instances)
            .match_requests(|r| {
                let filter = &r.filters()[0];
                filter.name() == Some("instance-state-name")
                    && filter.values() == LIVE_INSTANCE_STATES.map(String::from)
                    && !filter.values().contains(&"terminated".to_string())
            })
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(Instance::builder().image_id("ami-0a").build())
                            .instances(Instance::builder().image_id("ami-0b").build())
                            .build(),
                    )
                    .build()
            });
        let client = client!(&rule);
        let ids = client.images_used_by_instances().await.unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["ami-0a", "ami-0b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn launch_templates_default_and_latest_with_unresolved_aliases() {
        let version = |lt: &str, n: i64, image: Option<&str>| {
            let data = ResponseLaunchTemplateData::builder().set_image_id(image.map(str::to_string)).build();
            LaunchTemplateVersion::builder().launch_template_id(lt).version_number(n).launch_template_data(data).build()
        };
        let rule = mock!(Client::describe_launch_template_versions)
            .match_requests(|r| {
                r.versions() == ["$Default".to_string(), "$Latest".to_string()]
                    && r.resolve_alias() == Some(true)
                    && r.launch_template_id().is_none()
                    && r.max_results() == Some(200)
            })
            .then_output(move || {
                DescribeLaunchTemplateVersionsOutput::builder()
                    .launch_template_versions(version("lt-01", 1, Some("ami-0a")))
                    .launch_template_versions(version("lt-01", 2, None))
                    .launch_template_versions(version("lt-02", 5, Some("resolve:ssm:/golden/ami")))
                    .build()
            });
        let client = client!(&rule);
        let images = client.launch_template_images().await.unwrap();
        assert_eq!(images.image_ids.into_iter().collect::<Vec<_>>(), ["ami-0a"]);
        assert_eq!(images.unresolved, ["lt-02 version 5: resolve:ssm:/golden/ami"]);
    }

    #[tokio::test(start_paused = true)]
    async fn any_launch_permission_means_shared() {
        let private = mock!(Client::describe_image_attribute)
            .match_requests(|r| {
                r.image_id() == Some("ami-0a") && r.attribute() == Some(&ImageAttributeName::LaunchPermission)
            })
            .then_output(|| DescribeImageAttributeOutput::builder().image_id("ami-0a").build());
        let org = mock!(Client::describe_image_attribute).then_output(|| {
            DescribeImageAttributeOutput::builder()
                .launch_permissions(
                    LaunchPermission::builder().organization_arn("arn:aws:organizations::1:organization/o-1").build(),
                )
                .build()
        });
        let public = mock!(Client::describe_image_attribute).then_output(|| {
            DescribeImageAttributeOutput::builder()
                .launch_permissions(LaunchPermission::builder().group(PermissionGroup::All).build())
                .build()
        });
        let client = client!(&private, &org, &public);
        assert!(!client.is_image_shared("ami-0a").await.unwrap());
        assert!(client.is_image_shared("ami-0b").await.unwrap());
        assert!(client.is_image_shared("ami-0c").await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn image_references_ask_every_type_in_batches_of_ten_and_read_every_page() {
        use aws_sdk_ec2::operation::describe_image_references::DescribeImageReferencesOutput;
        use aws_sdk_ec2::types::ImageReference;
        let ids: Vec<String> = (0..23).map(|i| format!("ami-{i:02}")).collect();
        // Every resource type the API offers, launch templates at their deepest.
        let asks_everything = |r: &aws_sdk_ec2::operation::describe_image_references::DescribeImageReferencesInput| {
            let types: Vec<&str> =
                r.resource_types().iter().filter_map(|t| t.resource_type()).map(|t| t.as_str()).collect();
            let option = |name: ImageReferenceOptionName| -> Vec<&str> {
                r.resource_types()
                    .iter()
                    .flat_map(|t| t.resource_type_options())
                    .filter(|o| o.option_name() == Some(&name))
                    .flat_map(|o| o.option_values())
                    .map(String::as_str)
                    .collect()
            };
            let all = ImageReferenceResourceType::values().iter().filter(|t| !t.is_empty()).count();
            types.len() == all
                && option(ImageReferenceOptionName::VersionDepth) == [LAUNCH_TEMPLATE_VERSION_DEPTH]
                && option(ImageReferenceOptionName::StateName) == LIVE_INSTANCE_STATES
                && r.max_results() == Some(1000)
        };
        let reference =
            |id: &str| ImageReference::builder().image_id(id).arn(format!("arn:aws:ssm:::parameter/{id}")).build();
        let first = mock!(Client::describe_image_references)
            .match_requests(move |r| r.image_ids().len() == 10 && r.image_ids()[0] == "ami-00" && asks_everything(r))
            .then_output(move || {
                DescribeImageReferencesOutput::builder().image_references(reference("ami-03")).next_token("p2").build()
            });
        let first_next = mock!(Client::describe_image_references)
            .match_requests(|r| r.next_token() == Some("p2") && r.image_ids()[0] == "ami-00")
            .then_output(move || {
                DescribeImageReferencesOutput::builder().image_references(reference("ami-07")).build()
            });
        let second = mock!(Client::describe_image_references)
            .match_requests(move |r| r.image_ids().len() == 10 && r.image_ids()[0] == "ami-10" && asks_everything(r))
            .then_output(|| DescribeImageReferencesOutput::builder().build());
        let third = mock!(Client::describe_image_references)
            .match_requests(move |r| r.image_ids() == ["ami-20", "ami-21", "ami-22"] && asks_everything(r))
            .then_output(move || {
                DescribeImageReferencesOutput::builder().image_references(reference("ami-22")).build()
            });
        let client = client!(&first, &first_next, &second, &third);
        let referenced = client.referenced_images(&ids).await.unwrap();
        assert_eq!(referenced.into_iter().collect::<Vec<_>>(), ["ami-03", "ami-07", "ami-22"]);
        assert_eq!(third.num_calls(), 1);

        // A repeated page token is a failed listing, not a short one.
        let looping = mock!(Client::describe_image_references)
            .then_output(|| DescribeImageReferencesOutput::builder().next_token("same").build());
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&looping]);
        assert!(client.referenced_images(&ids[..1]).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn any_create_volume_permission_means_a_shared_snapshot() {
        use aws_sdk_ec2::operation::describe_snapshot_attribute::DescribeSnapshotAttributeOutput;
        use aws_sdk_ec2::types::CreateVolumePermission;
        let private = mock!(Client::describe_snapshot_attribute)
            .match_requests(|r| {
                r.snapshot_id() == Some("snap-0a")
                    && r.attribute() == Some(&SnapshotAttributeName::CreateVolumePermission)
            })
            .then_output(|| DescribeSnapshotAttributeOutput::builder().snapshot_id("snap-0a").build());
        let shared = mock!(Client::describe_snapshot_attribute).then_output(|| {
            DescribeSnapshotAttributeOutput::builder()
                .create_volume_permissions(CreateVolumePermission::builder().user_id("111122223333").build())
                .build()
        });
        let client = client!(&private, &shared);
        assert!(!client.is_snapshot_shared("snap-0a").await.unwrap());
        assert!(client.is_snapshot_shared("snap-0b").await.unwrap());
    }

    #[test]
    fn facts_tolerate_missing_fields_safely() {
        let bare = Snapshot::builder().snapshot_id("snap-01").build();
        let listing = snapshot_listing(&bare).unwrap();
        assert_eq!((listing.owner_id, listing.state.as_str(), listing.start_time), (None, "", None));
        assert!(snapshot_listing(&Snapshot::builder().build()).is_none());
        let image = Image::builder().image_id("ami-0a").creation_date("yesterday").build();
        let facts = image_facts(&image, tags::KEEP).unwrap();
        assert_eq!((facts.creation_date, facts.public), (None, false));
    }

    #[test]
    fn snapshot_facts_carry_the_lineage_full_size_and_tier_savings_read() {
        let listed = Snapshot::builder().snapshot_id("snap-01").full_snapshot_size_in_bytes(3 << 20).build();
        let facts = snapshot_facts(&snapshot("snap-01"), tags::KEEP).unwrap();
        assert_eq!(facts.volume_id.as_deref(), Some("vol-01"));
        assert_eq!((facts.full_size_bytes, facts.tier), (None, crate::core::Tier::Archive));
        let facts = snapshot_facts(&listed, tags::KEEP).unwrap();
        assert_eq!(
            (facts.full_size_bytes, facts.volume_id, facts.tier),
            (Some(3 << 20), None, crate::core::Tier::Standard)
        );
    }
}
