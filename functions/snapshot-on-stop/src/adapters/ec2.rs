//! The SDK implementation of the [`Ec2`] port: every listing paged (with the repeated-token
//! check), every SDK error mapped to [`AwsError`] with its AWS code.

use std::collections::BTreeSet;

use amiguard::tags::{self, Tag};
use amiguard::{paging, sdk, AwsError};
use aws_sdk_ec2::types::{Filter, RequestLaunchTemplateData, ResourceType, TagSpecification};

use super::launch_data;
use crate::core::{ImageRecord, LaunchTemplateRef, LaunchTemplateVersion, StoppedInstance};
use crate::ports::{CreateImageOutcome, Ec2};

/// The real EC2 client.
#[derive(Debug, Clone)]
pub struct Ec2Client {
    client: aws_sdk_ec2::Client,
}

impl Ec2Client {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        Self { client }
    }

    /// `read` of each of this account's snapshots among `snapshot_ids`, every page; an id that no
    /// longer exists is absent (a filter, not `SnapshotIds`, which would fail the call).
    async fn own_snapshots_by_id<T>(
        &self,
        snapshot_ids: &[String],
        read: impl Fn(&aws_sdk_ec2::types::Snapshot) -> Option<T>,
    ) -> Result<Vec<T>, AwsError> {
        let mut found = Vec::new();
        for chunk in snapshot_ids.chunks(100) {
            let by_id = Filter::builder().name("snapshot-id").set_values(Some(chunk.to_vec())).build();
            let mut pages = self
                .client
                .describe_snapshots()
                .owner_ids("self")
                .filters(by_id)
                .into_paginator()
                .stop_on_duplicate_token(false)
                .send();
            let mut tokens = paging::PageTokens::new("DescribeSnapshots");
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeSnapshots", e))?;
                tokens.check(page.next_token())?;
                found.extend(page.snapshots().iter().filter_map(&read));
            }
        }
        Ok(found)
    }

    /// `GetLaunchTemplateData` of the instance.
    async fn instance_launch_data(
        &self,
        instance_id: &str,
    ) -> Result<aws_sdk_ec2::types::ResponseLaunchTemplateData, AwsError> {
        let output = self
            .client
            .get_launch_template_data()
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetLaunchTemplateData", e))?;
        output.launch_template_data.ok_or_else(|| {
            AwsError::new(
                "GetLaunchTemplateData",
                "MissingLaunchTemplateData",
                "GetLaunchTemplateData answered without data",
            )
        })
    }

    /// The launch data of a relaunch of `instance_id`'s configuration from `image_id`.
    async fn relaunch_data(&self, instance_id: &str, image_id: &str) -> Result<RequestLaunchTemplateData, AwsError> {
        Ok(launch_data::relaunch_data(&self.instance_launch_data(instance_id).await?, image_id))
    }
}

fn image_record(image: &aws_sdk_ec2::types::Image) -> Option<ImageRecord> {
    Some(ImageRecord {
        image_id: image.image_id()?.to_string(),
        name: image.name().map(str::to_string),
        state: image.state().map(|s| s.as_str().to_string()),
        state_reason: image.state_reason().and_then(|r| r.message()).map(str::to_string),
        creation_date: image.creation_date().map(str::to_string),
        tags: tags::from_sdk(image.tags()),
        snapshot_ids: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect(),
        deregistration_protection: image.deregistration_protection().map(str::to_string),
    })
}

impl Ec2 for Ec2Client {
    async fn describe_instance(&self, instance_id: &str) -> Result<Option<StoppedInstance>, AwsError> {
        let output = match self.client.describe_instances().instance_ids(instance_id).send().await {
            Ok(output) => output,
            Err(err) => {
                let err = AwsError::from_sdk("DescribeInstances", err);
                return if err.is_not_found() { Ok(None) } else { Err(err) };
            }
        };
        let instance =
            output.reservations().iter().flat_map(|r| r.instances()).find(|i| i.instance_id() == Some(instance_id));
        Ok(instance.map(|i| StoppedInstance {
            instance_id: instance_id.to_string(),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
            root_device_type: i.root_device_type().map(|t| t.as_str().to_string()),
            state_reason: i.state_reason().and_then(|r| r.code()).map(str::to_string),
            state_transition_reason: i.state_transition_reason().map(str::to_string),
            tags: tags::from_sdk(i.tags()),
        }))
    }

    async fn find_own_image_by_name(&self, name: &str) -> Result<Option<ImageRecord>, AwsError> {
        let by_name = Filter::builder().name("name").values(name).build();
        let named = |i: &aws_sdk_ec2::types::Image| if i.name() == Some(name) { image_record(i) } else { None };
        let images = paging::describe_own_images(&self.client, vec![by_name], named).await?;
        Ok(images.into_iter().next())
    }

    async fn describe_image(&self, image_id: &str) -> Result<Option<ImageRecord>, AwsError> {
        match self
            .client
            .describe_images()
            .image_ids(image_id)
            .include_disabled(true)
            .include_deprecated(true)
            .send()
            .await
        {
            Ok(output) => Ok(output.images().iter().filter(|i| i.image_id() == Some(image_id)).find_map(image_record)),
            Err(err) => {
                let err = AwsError::from_sdk("DescribeImages", err);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn snapshot_descriptions(&self, snapshot_ids: &[String]) -> Result<Vec<(String, String)>, AwsError> {
        self.own_snapshots_by_id(snapshot_ids, |s| {
            Some((s.snapshot_id()?.to_string(), s.description().unwrap_or_default().to_string()))
        })
        .await
    }

    async fn protected_snapshots(
        &self,
        snapshot_ids: &[String],
        protect_tag: &str,
    ) -> Result<BTreeSet<String>, AwsError> {
        let protected = |s: &aws_sdk_ec2::types::Snapshot| {
            let tagged = s.tags().iter().any(|t| t.key().is_some_and(|k| k.eq_ignore_ascii_case(protect_tag)));
            tagged.then(|| s.snapshot_id().map(str::to_string)).flatten()
        };
        Ok(self.own_snapshots_by_id(snapshot_ids, protected).await?.into_iter().collect())
    }

    async fn describe_images(&self, image_ids: &[String]) -> Result<Vec<ImageRecord>, AwsError> {
        let mut found = Vec::new();
        // A filter, not `ImageIds`: an id that no longer exists is then absent instead of failing
        // the call; 100 ids a call stays well under EC2's 200 values per filter.
        for chunk in image_ids.chunks(100) {
            let by_id = Filter::builder().name("image-id").set_values(Some(chunk.to_vec())).build();
            found.extend(paging::describe_own_images(&self.client, vec![by_id], image_record).await?);
        }
        Ok(found)
    }

    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: &str,
        image_tags: &[Tag],
        snapshot_tags: &[Tag],
    ) -> Result<CreateImageOutcome, AwsError> {
        let spec = |resource, tags: &[Tag]| {
            TagSpecification::builder().resource_type(resource).set_tags(Some(tags::to_sdk(tags))).build()
        };
        let result = self
            .client
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description(description)
            .no_reboot(true)
            .tag_specifications(spec(ResourceType::Image, image_tags))
            .tag_specifications(spec(ResourceType::Snapshot, snapshot_tags))
            .send()
            .await;
        match result {
            Ok(output) => output.image_id().map(|id| CreateImageOutcome::Created(id.to_string())).ok_or_else(|| {
                AwsError::new("CreateImage", "MissingImageId", "CreateImage answered without an image id")
            }),
            Err(err) => {
                let err = AwsError::from_sdk("CreateImage", err);
                if err.has_code("InvalidAMIName.Duplicate") {
                    Ok(CreateImageOutcome::NameTaken)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn create_tags(&self, resource_ids: &[String], tags: &[Tag]) -> Result<(), AwsError> {
        self.client
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(tags::to_sdk(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("CreateTags", e))
    }

    async fn list_own_images_tagged(&self, tag_filters: &[Tag]) -> Result<Vec<ImageRecord>, AwsError> {
        let filters =
            tag_filters.iter().map(|t| Filter::builder().name(format!("tag:{}", t.key)).values(&t.value).build());
        paging::describe_own_images(&self.client, filters.collect(), image_record).await
    }

    async fn deregister_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.client
            .deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("DeregisterImage", e))
    }

    async fn enable_deregistration_protection(&self, image_id: &str) -> Result<(), AwsError> {
        self.client
            .enable_image_deregistration_protection()
            .image_id(image_id)
            .with_cooldown(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("EnableImageDeregistrationProtection", e))
    }

    async fn disable_deregistration_protection(&self, image_id: &str) -> Result<(), AwsError> {
        self.client
            .disable_image_deregistration_protection()
            .image_id(image_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("DisableImageDeregistrationProtection", e))
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.client
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("DeleteSnapshot", e))
    }

    async fn find_launch_template(&self, name: &str) -> Result<Option<String>, AwsError> {
        match self.client.describe_launch_templates().launch_template_names(name).send().await {
            Ok(output) => Ok(output
                .launch_templates()
                .iter()
                .find(|t| t.launch_template_name() == Some(name))
                .and_then(|t| t.launch_template_id())
                .map(str::to_string)),
            Err(err) => {
                let err = AwsError::from_sdk("DescribeLaunchTemplates", err);
                // AWS answers `InvalidLaunchTemplateName.NotFoundException` for an unknown name.
                if err.is_not_found() || err.code.contains("NotFound") {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn create_launch_template(
        &self,
        name: &str,
        instance_id: &str,
        image_id: &str,
        version_description: &str,
        tags: &[Tag],
    ) -> Result<LaunchTemplateRef, AwsError> {
        let data = self.relaunch_data(instance_id, image_id).await?;
        let output = self
            .client
            .create_launch_template()
            .launch_template_name(name)
            .version_description(version_description)
            .launch_template_data(data)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .set_tags(Some(tags::to_sdk(tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateLaunchTemplate", e))?;
        let template = output.launch_template();
        match (template.and_then(|t| t.launch_template_id()), template.and_then(|t| t.latest_version_number())) {
            (Some(id), Some(version)) => Ok(LaunchTemplateRef { id: id.to_string(), version }),
            _ => Err(AwsError::new(
                "CreateLaunchTemplate",
                "MissingLaunchTemplate",
                "CreateLaunchTemplate answered without id or version",
            )),
        }
    }

    async fn create_launch_template_version(
        &self,
        template_id: &str,
        instance_id: &str,
        image_id: &str,
        version_description: &str,
    ) -> Result<i64, AwsError> {
        let data = self.relaunch_data(instance_id, image_id).await?;
        let output = self
            .client
            .create_launch_template_version()
            .launch_template_id(template_id)
            .version_description(version_description)
            .launch_template_data(data)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateLaunchTemplateVersion", e))?;
        output.launch_template_version().and_then(|v| v.version_number()).ok_or_else(|| {
            AwsError::new(
                "CreateLaunchTemplateVersion",
                "MissingVersion",
                "CreateLaunchTemplateVersion answered without a version",
            )
        })
    }

    async fn set_default_launch_template_version(&self, template_id: &str, version: i64) -> Result<(), AwsError> {
        self.client
            .modify_launch_template()
            .launch_template_id(template_id)
            .default_version(version.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("ModifyLaunchTemplate", e))
    }

    async fn list_launch_template_versions(&self, template_id: &str) -> Result<Vec<LaunchTemplateVersion>, AwsError> {
        let mut pages = self
            .client
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .max_results(200) // the API's maximum for this call
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = paging::PageTokens::new("DescribeLaunchTemplateVersions");
        let mut versions = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeLaunchTemplateVersions", e))?;
            tokens.check(page.next_token())?;
            versions.extend(page.launch_template_versions().iter().filter_map(|v| {
                Some(LaunchTemplateVersion {
                    version: v.version_number()?,
                    image_id: v.launch_template_data().and_then(|d| d.image_id()).map(str::to_string),
                    is_default: v.default_version().unwrap_or(false),
                })
            }));
        }
        Ok(versions)
    }

    async fn delete_launch_template_versions(&self, template_id: &str, versions: &[i64]) -> Result<(), AwsError> {
        let output = self
            .client
            .delete_launch_template_versions()
            .launch_template_id(template_id)
            .set_versions(Some(versions.iter().map(i64::to_string).collect()))
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(sdk::cleanup_retry_config()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DeleteLaunchTemplateVersions", e))?;
        match output.unsuccessfully_deleted_launch_template_versions().first() {
            None => Ok(()),
            Some(failed) => {
                let error = failed.response_error();
                Err(AwsError::new(
                    "DeleteLaunchTemplateVersions",
                    error.and_then(|e| e.code()).map(|c| c.as_str().to_string()).unwrap_or_else(|| "Unknown".into()),
                    format!(
                        "version {}: {}",
                        failed.version_number().unwrap_or_default(),
                        error.and_then(|e| e.message()).unwrap_or("not deleted")
                    ),
                ))
            }
        }
    }
}
