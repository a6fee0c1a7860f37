//! The SDK implementation of [`Ec2`]: DescribeInstances, DescribeImages (here and in the regions
//! of images' ancestors), DescribeInstanceImageMetadata, GetImageAncestry, CreateTags and
//! StopInstances, each listing paged to its end with the repeated-token check
//! (`amiguard::paging`); and GetAllowedImagesSettings, read once at init.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::types::Filter;

use amiguard::error::AwsError;
use amiguard::paging::{PageTokens, MAX_RESULTS};
use amiguard::sdk;
use amiguard::tags::{self, Tag};

use crate::core::enforce::{InstanceState, LaunchedInstance, StopOutcome};
use crate::core::provenance::Ancestor;
use crate::core::verdict::LaunchImage;
use crate::ports::{Ec2, LaunchMetadata};

/// Ids per filter: EC2 takes up to 200 values per filter; stay well under.
const IDS_PER_CALL: usize = 100;
/// Lineages kept per container at most (a container judging more distinct own images than this
/// starts over: a lineage asked again costs one call).
const LINEAGES_KEPT: usize = 10_000;

/// The states of an instance that is not terminated (the audit's scope).
pub const LIVE_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

/// The real EC2 client.
#[derive(Debug, Clone)]
pub struct Ec2Client {
    client: aws_sdk_ec2::Client,
    /// The same client with two attempts at most, for calls whose failure only loses detail.
    best_effort: aws_sdk_ec2::Client,
    /// Clients of the other regions an ancestor was read in, each made on first use and kept
    /// (with `client`'s configuration: its retries, timeouts and credentials).
    regions: Arc<Mutex<HashMap<String, aws_sdk_ec2::Client>>>,
    /// GetImageAncestry's answers by image id: a lineage never changes. Only answers EC2 gave are
    /// kept; a failure is asked again.
    lineages: Arc<Mutex<HashMap<String, Vec<Ancestor>>>>,
}

impl Ec2Client {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        let config = client.config().to_builder().retry_config(sdk::cleanup_retry_config()).build();
        Self {
            best_effort: aws_sdk_ec2::Client::from_conf(config),
            client,
            regions: Arc::default(),
            lineages: Arc::default(),
        }
    }

    /// The client of `region`: this one's own, or one made for it once.
    fn in_region(&self, region: &str) -> aws_sdk_ec2::Client {
        if self.client.config().region().is_some_and(|own| own.as_ref() == region) {
            return self.client.clone();
        }
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        let client = regions.entry(region.to_string()).or_insert_with(|| {
            let config = self.client.config().to_builder().region(Region::new(region.to_string())).build();
            aws_sdk_ec2::Client::from_conf(config)
        });
        client.clone()
    }
}

fn launched_instance(instance: &aws_sdk_ec2::types::Instance) -> Option<LaunchedInstance> {
    Some(LaunchedInstance {
        instance_id: instance.instance_id()?.to_string(),
        image_id: instance.image_id().map(str::to_string),
        state: InstanceState::parse(instance.state().and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or_default()),
    })
}

fn launch_image(image: &aws_sdk_ec2::types::Image) -> Option<LaunchImage> {
    Some(LaunchImage {
        image_id: image.image_id()?.to_string(),
        owner_id: image.owner_id().unwrap_or_default().to_string(),
        owner_alias: image.image_owner_alias().map(str::to_string),
        name: image.name().map(str::to_string),
        creation_date: image.creation_date().map(str::to_string),
        deprecation_time: image.deprecation_time().map(str::to_string),
        source_image_id: image.source_image_id().map(str::to_string),
        source_image_region: image.source_image_region().map(str::to_string),
        image_allowed: image.image_allowed(),
    })
}

fn launch_metadata(metadata: &aws_sdk_ec2::types::InstanceImageMetadata) -> Option<LaunchMetadata> {
    let image = metadata.image_metadata()?;
    Some(LaunchMetadata {
        instance_id: metadata.instance_id()?.to_string(),
        instance_state: metadata.state().and_then(|s| s.name()).map(|n| InstanceState::parse(n.as_str())),
        image: LaunchImage {
            image_id: image.image_id()?.to_string(),
            owner_id: image.owner_id().unwrap_or_default().to_string(),
            owner_alias: image.image_owner_alias().map(str::to_string),
            name: image.name().map(str::to_string),
            creation_date: image.creation_date().map(str::to_string),
            deprecation_time: image.deprecation_time().map(str::to_string),
            image_allowed: image.image_allowed(),
            ..LaunchImage::default()
        },
    })
}

fn filter(name: &str, values: &[String]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.to_vec())).build()
}

impl Ec2Client {
    /// `GetAllowedImagesSettings`: the state (`enabled`, `audit-mode`, `disabled`) and the
    /// criteria, as the JSON `aws ec2 get-allowed-images-settings` prints (the policy parser
    /// reads it, and refuses what it cannot evaluate).
    pub async fn allowed_images_settings(&self) -> Result<(String, serde_json::Value), AwsError> {
        let output = self
            .client
            .get_allowed_images_settings()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetAllowedImagesSettings", e))?;
        let criteria: Vec<serde_json::Value> = output
            .image_criteria()
            .iter()
            .map(|c| {
                let mut criterion = serde_json::Map::new();
                let list = |items: &[String]| serde_json::Value::from(items.to_vec());
                if !c.image_providers().is_empty() {
                    criterion.insert("ImageProviders".into(), list(c.image_providers()));
                }
                if !c.image_names().is_empty() {
                    criterion.insert("ImageNames".into(), list(c.image_names()));
                }
                if !c.marketplace_product_codes().is_empty() {
                    criterion.insert("MarketplaceProductCodes".into(), list(c.marketplace_product_codes()));
                }
                if let Some(days) = c.creation_date_condition().and_then(|d| d.maximum_days_since_created()) {
                    criterion
                        .insert("CreationDateCondition".into(), serde_json::json!({"MaximumDaysSinceCreated": days}));
                }
                if let Some(days) = c.deprecation_time_condition().and_then(|d| d.maximum_days_since_deprecated()) {
                    criterion.insert(
                        "DeprecationTimeCondition".into(),
                        serde_json::json!({"MaximumDaysSinceDeprecated": days}),
                    );
                }
                // Conditions amiguard cannot evaluate are passed on by name, so that the parser
                // refuses them rather than trusting more than EC2 would.
                if !c.image_watermarks().is_empty() {
                    criterion.insert("ImageWatermarks".into(), serde_json::Value::Bool(true));
                }
                if c.scan_result_condition().is_some() {
                    criterion.insert("ScanResultCondition".into(), serde_json::Value::Bool(true));
                }
                serde_json::Value::Object(criterion)
            })
            .collect();
        Ok((output.state().unwrap_or("disabled").to_string(), serde_json::Value::Array(criteria)))
    }

    async fn describe_instances(&self, filter: Filter) -> Result<Vec<LaunchedInstance>, AwsError> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(filter)
            .max_results(MAX_RESULTS)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeInstances");
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeInstances", e))?;
            tokens.check(page.next_token())?;
            found.extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(launched_instance));
        }
        Ok(found)
    }
}

/// The images among `image_ids` that `client`'s region shows, every page of every chunk.
async fn describe_images(client: &aws_sdk_ec2::Client, image_ids: &[String]) -> Result<Vec<LaunchImage>, AwsError> {
    let mut found = Vec::new();
    for chunk in image_ids.chunks(IDS_PER_CALL) {
        let mut pages = client
            .describe_images()
            .filters(filter("image-id", chunk))
            .include_deprecated(true)
            .include_disabled(true)
            .max_results(MAX_RESULTS)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeImages");
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeImages", e))?;
            tokens.check(page.next_token())?;
            found.extend(page.images().iter().filter_map(launch_image));
        }
    }
    Ok(found)
}

/// `GetImageAncestry`'s entries, from the image to the root, as ancestors parent first.
fn ancestors(image_id: &str, entries: &[aws_sdk_ec2::types::ImageAncestryEntry]) -> Vec<Ancestor> {
    // Each entry names its parent's region.
    let mut ancestors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some(id) = entry.image_id() else { continue };
        if index == 0 && id == image_id {
            continue;
        }
        let child = index.checked_sub(1).and_then(|c| entries.get(c));
        let region = child.and_then(|c| c.source_image_region()).map(str::to_string);
        ancestors.push(Ancestor {
            image_id: id.to_string(),
            region,
            owner_id: None,
            owner_alias: entry.image_owner_alias().map(str::to_string),
        });
    }
    // The chain can end before the root (AWS cuts it at 50 entries, or at a source in another
    // partition): a last entry that still names a source is not the root, and that source is
    // judged like any ancestor (its owner unknown unless it can be read).
    if let Some(source) = entries.last().and_then(|last| last.source_image_id()) {
        if !ancestors.iter().any(|a| a.image_id == source) && source != image_id {
            let region = entries.last().and_then(|last| last.source_image_region()).map(str::to_string);
            ancestors.push(Ancestor { image_id: source.to_string(), region, ..Ancestor::default() });
        }
    }
    ancestors
}

impl Ec2 for Ec2Client {
    // Filters rather than `InstanceIds`/`ImageIds`: an unknown id in a filter is simply absent,
    // where in the id list it fails the whole call; and filters page with MaxResults.
    async fn instances(&self, instance_ids: &[String]) -> Result<Vec<LaunchedInstance>, AwsError> {
        let mut found = Vec::new();
        for chunk in instance_ids.chunks(IDS_PER_CALL) {
            found.extend(self.describe_instances(filter("instance-id", chunk)).await?);
        }
        Ok(found)
    }

    async fn live_instances(&self) -> Result<Vec<LaunchedInstance>, AwsError> {
        let states: Vec<String> = LIVE_STATES.iter().map(|s| s.to_string()).collect();
        self.describe_instances(filter("instance-state-name", &states)).await
    }

    async fn visible_images(&self, image_ids: &[String]) -> Result<Vec<LaunchImage>, AwsError> {
        describe_images(&self.client, image_ids).await
    }

    async fn visible_images_in(&self, region: &str, image_ids: &[String]) -> Result<Vec<LaunchImage>, AwsError> {
        describe_images(&self.in_region(region), image_ids).await
    }

    async fn launch_image_metadata(&self, instance_ids: &[String]) -> Result<Vec<LaunchMetadata>, AwsError> {
        let mut found = Vec::new();
        for chunk in instance_ids.chunks(IDS_PER_CALL) {
            let mut pages = self
                .best_effort
                .describe_instance_image_metadata()
                .filters(filter("instance-id", chunk))
                .max_results(MAX_RESULTS)
                .into_paginator()
                .stop_on_duplicate_token(false)
                .send();
            let mut tokens = PageTokens::new("DescribeInstanceImageMetadata");
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeInstanceImageMetadata", e))?;
                tokens.check(page.next_token())?;
                found.extend(page.instance_image_metadata().iter().filter_map(launch_metadata));
            }
        }
        Ok(found)
    }

    async fn image_ancestry(&self, image_id: &str) -> Result<Vec<Ancestor>, AwsError> {
        if let Some(known) = self.lineages.lock().unwrap_or_else(PoisonError::into_inner).get(image_id) {
            return Ok(known.clone());
        }
        // The standard client: a throttled call is retried like any other, not taken for a
        // lineage that cannot be read.
        let output = self
            .client
            .get_image_ancestry()
            .image_id(image_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetImageAncestry", e))?;
        let ancestors = ancestors(image_id, output.image_ancestry_entries());
        let mut kept = self.lineages.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= LINEAGES_KEPT {
            kept.clear();
        }
        kept.insert(image_id.to_string(), ancestors.clone());
        Ok(ancestors)
    }

    async fn tag_instance(&self, instance_id: &str, tag: &Tag) -> Result<(), AwsError> {
        self.client
            .create_tags()
            .resources(instance_id)
            .set_tags(Some(tags::to_sdk(std::slice::from_ref(tag))))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("CreateTags", e))
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<StopOutcome, AwsError> {
        match self.client.stop_instances().instance_ids(instance_id).send().await {
            Ok(_) => Ok(StopOutcome::Stopping),
            Err(err) => {
                let err = AwsError::from_sdk("StopInstances", err);
                if err.has_code("IncorrectInstanceState") {
                    Ok(StopOutcome::NotStoppable)
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ec2::operation::describe_instance_image_metadata::{
        DescribeInstanceImageMetadataError, DescribeInstanceImageMetadataOutput,
    };
    use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesOutput};
    use aws_sdk_ec2::operation::stop_instances::{StopInstancesError, StopInstancesOutput};
    use aws_sdk_ec2::types::{Image, ImageMetadata, Instance, InstanceImageMetadata, InstanceStateName, Reservation};
    use aws_sdk_ec2::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    fn code(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message("mocked").build()
    }

    fn instance(id: &str, state: InstanceStateName) -> Instance {
        Instance::builder()
            .instance_id(id)
            .image_id("ami-0123456789abcdef0")
            .state(aws_sdk_ec2::types::InstanceState::builder().name(state).build())
            .build()
    }

    #[tokio::test]
    async fn instances_follow_every_page_and_keep_their_state() {
        let first = mock!(Client::describe_instances)
            .match_requests(|r| r.next_token().is_none() && r.max_results() == Some(1000))
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(Reservation::builder().instances(instance("i-1", InstanceStateName::Pending)).build())
                    .next_token("page-2")
                    .build()
            });
        let second =
            mock!(Client::describe_instances).match_requests(|r| r.next_token() == Some("page-2")).then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(Reservation::builder().instances(instance("i-2", InstanceStateName::Running)).build())
                    .build()
            });
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&first, &second]);
        let found = Ec2Client::new(client).live_instances().await.unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].instance_id, "i-1");
        assert_eq!(found[0].state, InstanceState::Pending);
        assert_eq!(found[1].state, InstanceState::Running);
        assert_eq!(first.num_calls() + second.num_calls(), 2);
    }

    #[tokio::test]
    async fn a_failed_page_fails_the_listing() {
        let first = mock!(Client::describe_instances).match_requests(|r| r.next_token().is_none()).then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(instance("i-1", InstanceStateName::Running)).build())
                .next_token("page-2")
                .build()
        });
        let failing = mock!(Client::describe_instances)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_error(|| DescribeInstancesError::generic(code("UnauthorizedOperation")));
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&first, &failing]);
        let err = Ec2Client::new(client).instances(&["i-1".to_string()]).await.unwrap_err();
        assert_eq!(err.operation, "DescribeInstances");
        assert_eq!(err.code, "UnauthorizedOperation");
    }

    #[tokio::test]
    async fn images_are_asked_by_filter_with_deprecated_and_disabled_ones() {
        let rule = mock!(Client::describe_images)
            .match_requests(|r| {
                r.include_deprecated() == Some(true)
                    && r.include_disabled() == Some(true)
                    && r.image_ids().is_empty()
                    && r.filters().iter().any(|f| f.name() == Some("image-id") && f.values().len() == 2)
            })
            .then_output(|| {
                DescribeImagesOutput::builder()
                    .images(
                        Image::builder()
                            .image_id("ami-1")
                            .owner_id("111122223333")
                            .name("vendor")
                            .creation_date("2025-01-01T00:00:00.000Z")
                            .deprecation_time("2026-01-01T00:00:00Z")
                            .source_image_id("ami-0source")
                            .source_image_region("eu-west-1")
                            .image_allowed(false)
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let images = Ec2Client::new(client).visible_images(&["ami-1".to_string(), "ami-2".to_string()]).await.unwrap();
        assert_eq!(
            images,
            [LaunchImage {
                image_id: "ami-1".into(),
                owner_id: "111122223333".into(),
                owner_alias: None,
                name: Some("vendor".into()),
                creation_date: Some("2025-01-01T00:00:00.000Z".into()),
                deprecation_time: Some("2026-01-01T00:00:00Z".into()),
                source_image_id: Some("ami-0source".into()),
                source_image_region: Some("eu-west-1".into()),
                image_allowed: Some(false),
            }]
        );
    }

    #[tokio::test]
    async fn more_ids_than_a_filter_takes_are_split_across_calls() {
        let rule = mock!(Client::describe_images)
            .match_requests(|r| r.filters().iter().all(|f| f.values().len() <= IDS_PER_CALL))
            .then_output(|| DescribeImagesOutput::builder().build());
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let ids: Vec<String> = (0..250).map(|i| format!("ami-{i:017x}")).collect();
        Ec2Client::new(client).visible_images(&ids).await.unwrap();
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test]
    async fn launch_metadata_gives_the_owner_of_an_image_no_longer_visible() {
        let rule = mock!(Client::describe_instance_image_metadata)
            .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("instance-id")))
            .then_output(|| {
                DescribeInstanceImageMetadataOutput::builder()
                    .instance_image_metadata(
                        InstanceImageMetadata::builder()
                            .instance_id("i-1")
                            .state(
                                aws_sdk_ec2::types::InstanceState::builder()
                                    .name(aws_sdk_ec2::types::InstanceStateName::Terminated)
                                    .build(),
                            )
                            .image_metadata(
                                ImageMetadata::builder()
                                    .image_id("ami-gone")
                                    .owner_id("444455556666")
                                    .image_owner_alias("aws-marketplace")
                                    .name("old")
                                    .state(aws_sdk_ec2::types::ImageState::Deregistered)
                                    .build(),
                            )
                            .build(),
                    )
                    // An instance without image metadata is left out rather than guessed.
                    .instance_image_metadata(InstanceImageMetadata::builder().instance_id("i-2").build())
                    .build()
            });
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let found =
            Ec2Client::new(client).launch_image_metadata(&["i-1".to_string(), "i-2".to_string()]).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].instance_id, "i-1");
        assert_eq!(found[0].image.owner_id, "444455556666");
        assert_eq!(found[0].image.owner_alias.as_deref(), Some("aws-marketplace"));
        assert_eq!(found[0].instance_state, Some(InstanceState::Terminated));
    }

    #[tokio::test]
    async fn the_ancestry_is_read_parent_first_with_each_ancestors_region_and_alias() {
        use aws_sdk_ec2::operation::get_image_ancestry::GetImageAncestryOutput;
        use aws_sdk_ec2::types::ImageAncestryEntry;
        let entry = |id: &str, source: Option<(&str, &str)>, alias: Option<&str>| {
            let mut e = ImageAncestryEntry::builder().image_id(id);
            if let Some((source, region)) = source {
                e = e.source_image_id(source).source_image_region(region);
            }
            if let Some(alias) = alias {
                e = e.image_owner_alias(alias);
            }
            e.build()
        };
        let rule = mock!(Client::get_image_ancestry).match_requests(|r| r.image_id() == Some("ami-app")).then_output(
            move || {
                GetImageAncestryOutput::builder()
                    .image_ancestry_entries(entry("ami-app", Some(("ami-copy", "us-east-1")), None))
                    .image_ancestry_entries(entry("ami-copy", Some(("ami-base", "eu-west-1")), None))
                    .image_ancestry_entries(entry("ami-base", None, Some("amazon")))
                    .build()
            },
        );
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let ancestors = Ec2Client::new(client).image_ancestry("ami-app").await.unwrap();
        let read: Vec<(&str, Option<&str>, Option<&str>)> =
            ancestors.iter().map(|a| (a.image_id.as_str(), a.region.as_deref(), a.owner_alias.as_deref())).collect();
        assert_eq!(read, [("ami-copy", Some("us-east-1"), None), ("ami-base", Some("eu-west-1"), Some("amazon"))]);
        assert!(ancestors.iter().all(|a| a.owner_id.is_none()), "GetImageAncestry names no owner id");
        // A chain cut before its root: the source its last entry names is an ancestor too.
        let cut = mock!(Client::get_image_ancestry).then_output(move || {
            GetImageAncestryOutput::builder()
                .image_ancestry_entries(entry("ami-app", Some(("ami-50th", "us-east-1")), None))
                .image_ancestry_entries(entry("ami-50th", Some(("ami-beyond", "us-west-2")), None))
                .build()
        });
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&cut]);
        let ancestors = Ec2Client::new(client).image_ancestry("ami-app").await.unwrap();
        let ids: Vec<(&str, Option<&str>)> =
            ancestors.iter().map(|a| (a.image_id.as_str(), a.region.as_deref())).collect();
        assert_eq!(ids, [("ami-50th", Some("us-east-1")), ("ami-beyond", Some("us-west-2"))]);
    }

    #[tokio::test]
    async fn the_accounts_allowed_images_settings_are_read_as_the_cli_prints_them() {
        use aws_sdk_ec2::operation::get_allowed_images_settings::GetAllowedImagesSettingsOutput;
        use aws_sdk_ec2::types::ImageCriterion;
        let rule = mock!(Client::get_allowed_images_settings).then_output(|| {
            GetAllowedImagesSettingsOutput::builder()
                .state("audit-mode")
                .image_criteria(
                    ImageCriterion::builder()
                        .image_providers("amazon")
                        .image_providers("123456789012")
                        .image_names("al2023-ami-*")
                        .creation_date_condition(
                            aws_sdk_ec2::types::CreationDateCondition::builder()
                                .maximum_days_since_created(300)
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]);
        let (state, criteria) = Ec2Client::new(client).allowed_images_settings().await.unwrap();
        assert_eq!(state, "audit-mode");
        assert_eq!(
            criteria,
            serde_json::json!([{
                "ImageProviders": ["amazon", "123456789012"],
                "ImageNames": ["al2023-ami-*"],
                "CreationDateCondition": {"MaximumDaysSinceCreated": 300}
            }])
        );
        let policy = crate::core::policy::TrustPolicy::from_account_settings(&state, criteria).unwrap();
        assert!(policy.defers_to_ec2());
    }

    /// Tokio's clock, so that a paused test runtime skips the retry back-off.
    #[derive(Debug)]
    struct TokioSleeper;

    impl aws_sdk_ec2::config::AsyncSleep for TokioSleeper {
        fn sleep(&self, duration: std::time::Duration) -> aws_sdk_ec2::config::Sleep {
            aws_sdk_ec2::config::Sleep::new(tokio::time::sleep(duration))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn launch_metadata_is_retried_at_most_twice_while_other_calls_keep_the_full_policy() {
        let metadata = mock!(Client::describe_instance_image_metadata)
            .then_error(|| DescribeInstanceImageMetadataError::generic(code("RequestLimitExceeded")));
        let instances = mock!(Client::describe_instances)
            .then_error(|| DescribeInstancesError::generic(code("RequestLimitExceeded")));
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&metadata, &instances], |b| b
            .retry_config(sdk::retry_config())
            .sleep_impl(aws_sdk_ec2::config::SharedAsyncSleep::new(TokioSleeper)));
        let ec2 = Ec2Client::new(client);
        let err = ec2.launch_image_metadata(&["i-1".to_string()]).await.unwrap_err();
        assert_eq!(err.code, "RequestLimitExceeded");
        assert_eq!(metadata.num_calls(), 2);
        let err = ec2.instances(&["i-1".to_string()]).await.unwrap_err();
        assert_eq!(err.code, "RequestLimitExceeded");
        assert_eq!(instances.num_calls(), sdk::MAX_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn every_listing_pages_by_the_most_and_fails_on_a_page_token_it_answered_before() {
        let instances = mock!(Client::describe_instances)
            .match_requests(|r| r.max_results() == Some(MAX_RESULTS))
            .then_output(|| DescribeInstancesOutput::builder().next_token("again").build());
        let images = mock!(Client::describe_images)
            .match_requests(|r| r.max_results() == Some(MAX_RESULTS))
            .then_output(|| DescribeImagesOutput::builder().next_token("again").build());
        let metadata = mock!(Client::describe_instance_image_metadata)
            .match_requests(|r| r.max_results() == Some(MAX_RESULTS))
            .then_output(|| DescribeInstanceImageMetadataOutput::builder().next_token("again").build());
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&instances, &images, &metadata]);
        let ec2 = Ec2Client::new(client);
        let ids = ["i-1".to_string()];
        let errors = [
            ec2.live_instances().await.unwrap_err(),
            ec2.instances(&ids).await.unwrap_err(),
            ec2.visible_images(&ids).await.unwrap_err(),
            ec2.visible_images_in("eu-west-1", &ids).await.unwrap_err(),
            ec2.launch_image_metadata(&ids).await.unwrap_err(),
        ];
        let operations: Vec<&str> = errors.iter().map(|e| e.operation).collect();
        assert_eq!(
            operations,
            [
                "DescribeInstances",
                "DescribeInstances",
                "DescribeImages",
                "DescribeImages",
                "DescribeInstanceImageMetadata"
            ]
        );
        for err in &errors {
            assert_eq!(err.code, amiguard::paging::REPEATED_NEXT_TOKEN);
            assert!(err.to_string().contains("(again)"), "{err}");
        }
        // The second page answered the token again: two calls each, not a quiet end.
        assert_eq!((instances.num_calls(), images.num_calls(), metadata.num_calls()), (4, 4, 2));
    }

    #[tokio::test]
    async fn another_regions_images_are_read_with_that_regions_client_made_once() {
        let rule = mock!(Client::describe_images).then_output(|| DescribeImagesOutput::builder().build());
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule], |b| b.region(Region::new("us-east-1")));
        let ec2 = Ec2Client::new(client);
        let region = |client: aws_sdk_ec2::Client| client.config().region().map(|r| r.as_ref().to_string());
        assert_eq!(region(ec2.in_region("eu-west-1")).as_deref(), Some("eu-west-1"));
        for _ in 0..2 {
            ec2.visible_images_in("eu-west-1", &["ami-1".to_string()]).await.unwrap();
        }
        assert_eq!(region(ec2.in_region("us-east-1")).as_deref(), Some("us-east-1"), "its own region: its own client");
        let made: Vec<String> = ec2.regions.lock().unwrap().keys().cloned().collect();
        assert_eq!(made, ["eu-west-1"], "one client per other region, kept");
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_ancestry_is_retried_an_answer_is_kept_and_a_failure_asked_again() {
        use aws_sdk_ec2::operation::get_image_ancestry::{GetImageAncestryError, GetImageAncestryOutput};
        use aws_sdk_ec2::types::ImageAncestryEntry;
        let answer = || {
            GetImageAncestryOutput::builder()
                .image_ancestry_entries(
                    ImageAncestryEntry::builder()
                        .image_id("ami-app")
                        .source_image_id("ami-base")
                        .source_image_region("eu-west-1")
                        .build(),
                )
                .image_ancestry_entries(ImageAncestryEntry::builder().image_id("ami-base").build())
                .build()
        };
        let app = mock!(Client::get_image_ancestry)
            .match_requests(|r| r.image_id() == Some("ami-app"))
            .sequence()
            .error(|| GetImageAncestryError::generic(code("RequestLimitExceeded")))
            .times(3)
            .output(answer)
            .build();
        let denied = mock!(Client::get_image_ancestry)
            .match_requests(|r| r.image_id() == Some("ami-denied"))
            .then_error(|| GetImageAncestryError::generic(code("UnauthorizedOperation")));
        // The standard mode with the policy's attempts, in a partition of its own: the adaptive
        // mode's rate limiter reads the wall clock, which a paused runtime does not move.
        let policy = aws_sdk_ec2::config::retry::RetryConfig::standard().with_max_attempts(sdk::MAX_ATTEMPTS);
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&app, &denied], |b| b
            .retry_config(policy.clone())
            .retry_partition(aws_sdk_ec2::config::retry::RetryPartition::new("ancestry-test"))
            .sleep_impl(aws_sdk_ec2::config::SharedAsyncSleep::new(TokioSleeper)));
        let ec2 = Ec2Client::new(client);
        for _ in 0..3 {
            let ancestors = ec2.image_ancestry("ami-app").await.unwrap();
            let read: Vec<(&str, Option<&str>)> =
                ancestors.iter().map(|a| (a.image_id.as_str(), a.region.as_deref())).collect();
            assert_eq!(read, [("ami-base", Some("eu-west-1"))]);
        }
        assert_eq!(app.num_calls(), 4, "three throttled attempts, one answer, then the container's copy");
        for _ in 0..2 {
            assert_eq!(ec2.image_ancestry("ami-denied").await.unwrap_err().code, "UnauthorizedOperation");
        }
        assert_eq!(denied.num_calls(), 2, "a failure is not kept");
    }

    #[tokio::test]
    async fn a_stop_refused_for_the_state_is_an_outcome_and_anything_else_an_error() {
        let refused = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids() == ["i-pending"])
            .then_error(|| StopInstancesError::generic(code("IncorrectInstanceState")));
        let denied = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids() == ["i-spot"])
            .then_error(|| StopInstancesError::generic(code("UnsupportedOperation")));
        let ok = mock!(Client::stop_instances)
            .match_requests(|r| r.instance_ids() == ["i-running"])
            .then_output(|| StopInstancesOutput::builder().build());
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&refused, &denied, &ok]);
        let ec2 = Ec2Client::new(client);
        assert_eq!(ec2.stop_instance("i-running").await.unwrap(), StopOutcome::Stopping);
        assert_eq!(ec2.stop_instance("i-pending").await.unwrap(), StopOutcome::NotStoppable);
        assert_eq!(ec2.stop_instance("i-spot").await.unwrap_err().code, "UnsupportedOperation");
    }
}
