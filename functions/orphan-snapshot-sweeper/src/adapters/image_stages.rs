//! The EC2 calls of staged retirement (issue 22), on `aws_sdk_ec2::Client`: the images with their
//! deprecation and every tag, launch permissions read and put back, AMI usage reports, and the
//! stages themselves. `adapters::ec2`'s `Ec2` implementation calls these. Each failure keeps
//! EC2's error code ([`AwsError`]); each listing reads every page or fails as a whole.

use aws_sdk_ec2::types::{
    Image, ImageAttributeName, ImageUsageResourceTypeOptionRequest, ImageUsageResourceTypeRequest, LaunchPermission,
    LaunchPermissionModifications,
};
use aws_sdk_ec2::Client;
use chrono::{DateTime, Timelike, Utc};

use amiguard::paging::PageTokens;
use amiguard::tags;
use amiguard::AwsError;

use crate::core::{LaunchPermissions, StagedImage, UsageEntry, UsageReport};

/// `DescribeImageUsageReports` and `DescribeImageUsageReportEntries` take at most this many
/// results a page.
const MAX_RESULTS_USAGE: i32 = 1000;
/// Image ids asked about in one `DescribeImageUsageReports` call.
pub const USAGE_REPORT_IMAGE_IDS_PER_CALL: usize = 100;

/// Every own image, disabled and deprecated ones included, as the stages read it.
pub async fn staged_images(client: &Client) -> Result<Vec<StagedImage>, AwsError> {
    amiguard::paging::describe_own_images(client, Vec::new(), staged_image).await
}

/// A listed image as the stages read it; `None` for an entry without an id.
pub fn staged_image(image: &Image) -> Option<StagedImage> {
    let ebs: Vec<_> = image.block_device_mappings().iter().filter_map(|m| m.ebs()).collect();
    Some(StagedImage {
        image_id: image.image_id()?.to_string(),
        name: image.name().unwrap_or_default().to_string(),
        state: image.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        public: image.public().unwrap_or(false),
        creation_date: image.creation_date().and_then(parse_time),
        last_launched_time: image.last_launched_time().and_then(parse_time),
        deprecation_time: image.deprecation_time().and_then(parse_time),
        deregistration_protection: image.deregistration_protection().map(str::to_string),
        snapshot_ids: ebs.iter().filter_map(|e| e.snapshot_id().map(str::to_string)).collect(),
        gib: ebs.iter().filter_map(|e| e.volume_size()).map(|s| u64::try_from(s).unwrap_or(0)).sum(),
        tags: tags::from_sdk(image.tags()),
    })
}

pub async fn launch_permissions(client: &Client, image_id: &str) -> Result<LaunchPermissions, AwsError> {
    let output = client
        .describe_image_attribute()
        .image_id(image_id)
        .attribute(ImageAttributeName::LaunchPermission)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeImageAttribute", e))?;
    let mut permissions = LaunchPermissions::default();
    for permission in output.launch_permissions() {
        permissions.user_ids.extend(permission.user_id().map(str::to_string));
        permissions.organization_arns.extend(permission.organization_arn().map(str::to_string));
        permissions.organizational_unit_arns.extend(permission.organizational_unit_arn().map(str::to_string));
        permissions.public |= permission.group().is_some_and(|g| g.as_str() == "all");
    }
    Ok(permissions)
}

/// Puts back the recorded launch permissions (accounts, organizations, units) in one
/// `ModifyImageAttribute`; never `all`: a public image is never retired, so never recorded so.
pub async fn add_launch_permissions(
    client: &Client,
    image_id: &str,
    permissions: &LaunchPermissions,
) -> Result<(), AwsError> {
    let users = permissions.user_ids.iter().map(|id| LaunchPermission::builder().user_id(id).build());
    let orgs =
        permissions.organization_arns.iter().map(|arn| LaunchPermission::builder().organization_arn(arn).build());
    let units = permissions
        .organizational_unit_arns
        .iter()
        .map(|arn| LaunchPermission::builder().organizational_unit_arn(arn).build());
    let add: Vec<LaunchPermission> = users.chain(orgs).chain(units).collect();
    if add.is_empty() {
        return Ok(());
    }
    client
        .modify_image_attribute()
        .image_id(image_id)
        .launch_permission(LaunchPermissionModifications::builder().set_add(Some(add)).build())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("ModifyImageAttribute", e))
}

/// Asks for a usage report of the image over every account (no `AccountIds`): instances, and
/// launch templates to `template_depth` versions back. Answers its id.
pub async fn create_image_usage_report(
    client: &Client,
    image_id: &str,
    template_depth: u32,
) -> Result<String, AwsError> {
    let depth = ImageUsageResourceTypeOptionRequest::builder()
        .option_name("version-depth")
        .option_values(template_depth.to_string())
        .build();
    let output = client
        .create_image_usage_report()
        .image_id(image_id)
        .resource_types(ImageUsageResourceTypeRequest::builder().resource_type("ec2:Instance").build())
        .resource_types(
            ImageUsageResourceTypeRequest::builder()
                .resource_type("ec2:LaunchTemplate")
                .resource_type_options(depth)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("CreateImageUsageReport", e))?;
    output
        .report_id()
        .map(str::to_string)
        .ok_or_else(|| AwsError::new("CreateImageUsageReport", "MissingReportId", "EC2 answered without a report id"))
}

/// Every usage report of `image_ids` (any maker), every page, without entries.
pub async fn image_usage_reports(client: &Client, image_ids: &[String]) -> Result<Vec<UsageReport>, AwsError> {
    let mut reports = Vec::new();
    for chunk in image_ids.chunks(USAGE_REPORT_IMAGE_IDS_PER_CALL) {
        let mut pages = client
            .describe_image_usage_reports()
            .set_image_ids(Some(chunk.to_vec()))
            .max_results(MAX_RESULTS_USAGE)
            .into_paginator()
            .stop_on_duplicate_token(false)
            .send();
        let mut tokens = PageTokens::new("DescribeImageUsageReports");
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("DescribeImageUsageReports", e))?;
            tokens.check(page.next_token())?;
            for report in page.image_usage_reports() {
                let (Some(report_id), Some(image_id)) = (report.report_id(), report.image_id()) else { continue };
                reports.push(UsageReport {
                    report_id: report_id.to_string(),
                    image_id: image_id.to_string(),
                    state: report.state().unwrap_or_default().to_string(),
                    created: report.creation_time().and_then(to_chrono),
                    expires: report.expiration_time().and_then(to_chrono),
                    account_ids: report.account_ids().iter().cloned().collect(),
                    resource_types: report
                        .resource_types()
                        .iter()
                        .map(|t| {
                            let depth = t
                                .resource_type_options()
                                .iter()
                                .filter(|o| o.option_name() == Some("version-depth"))
                                .flat_map(|o| o.option_values())
                                .find_map(|v| v.parse().ok());
                            (t.resource_type().unwrap_or_default().to_string(), depth)
                        })
                        .collect(),
                    entries: None,
                });
            }
        }
    }
    Ok(reports)
}

/// The entries of one report, every page. An entry without a report id is counted (the request
/// names one report); one naming another report is an error, never dropped.
pub async fn image_usage_report_entries(client: &Client, report_id: &str) -> Result<Vec<UsageEntry>, AwsError> {
    let mut pages = client
        .describe_image_usage_report_entries()
        .report_ids(report_id)
        .max_results(MAX_RESULTS_USAGE)
        .into_paginator()
        .stop_on_duplicate_token(false)
        .send();
    let mut tokens = PageTokens::new("DescribeImageUsageReportEntries");
    let mut entries = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("DescribeImageUsageReportEntries", e))?;
        tokens.check(page.next_token())?;
        for e in page.image_usage_report_entries() {
            if let Some(other) = e.report_id().filter(|id| *id != report_id) {
                return Err(AwsError::new(
                    "DescribeImageUsageReportEntries",
                    "UnexpectedReportId",
                    format!("asked for the entries of {report_id}, EC2 answered one of {other}"),
                ));
            }
            entries.push(UsageEntry {
                account_id: e.account_id().unwrap_or_default().to_string(),
                resource_type: e.resource_type().unwrap_or_default().to_string(),
                // An entry without a count is use until EC2 says otherwise.
                usage_count: e.usage_count().unwrap_or(1),
            });
        }
    }
    Ok(entries)
}

pub async fn delete_image_usage_report(client: &Client, report_id: &str) -> Result<(), AwsError> {
    client
        .delete_image_usage_report()
        .report_id(report_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("DeleteImageUsageReport", e))
}

/// The next whole minute after `now`: EC2 refuses a deprecation time in the past and rounds
/// seconds away, so this is the earliest time it takes as asked.
pub fn next_whole_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    let floor = now.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(now);
    floor + chrono::Duration::minutes(1)
}

pub async fn enable_image_deprecation(client: &Client, image_id: &str, now: DateTime<Utc>) -> Result<(), AwsError> {
    let at = aws_smithy_types::DateTime::from_secs(next_whole_minute(now).timestamp());
    client
        .enable_image_deprecation()
        .image_id(image_id)
        .deprecate_at(at)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("EnableImageDeprecation", e))
}

pub async fn disable_image_deprecation(client: &Client, image_id: &str) -> Result<(), AwsError> {
    client
        .disable_image_deprecation()
        .image_id(image_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("DisableImageDeprecation", e))
}

pub async fn disable_image(client: &Client, image_id: &str) -> Result<(), AwsError> {
    client
        .disable_image()
        .image_id(image_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("DisableImage", e))
}

pub async fn enable_image(client: &Client, image_id: &str) -> Result<(), AwsError> {
    client.enable_image().image_id(image_id).send().await.map(|_| ()).map_err(|e| AwsError::from_sdk("EnableImage", e))
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}
