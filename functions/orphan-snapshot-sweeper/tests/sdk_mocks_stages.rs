//! Staged retirement's EC2 calls on the real `aws_sdk_ec2::Client` adapter, answered by
//! `aws-smithy-mocks` (moto has none of the usage-report calls and no deprecation): each request
//! exactly as sent, each listing read page by page, each failure with EC2's code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_image_usage_report::CreateImageUsageReportOutput;
use aws_sdk_ec2::operation::delete_image_usage_report::DeleteImageUsageReportError;
use aws_sdk_ec2::operation::describe_image_attribute::DescribeImageAttributeOutput;
use aws_sdk_ec2::operation::describe_image_usage_report_entries::{
    DescribeImageUsageReportEntriesError, DescribeImageUsageReportEntriesOutput,
};
use aws_sdk_ec2::operation::describe_image_usage_reports::DescribeImageUsageReportsOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::disable_image::{DisableImageError, DisableImageOutput};
use aws_sdk_ec2::operation::disable_image_deprecation::DisableImageDeprecationOutput;
use aws_sdk_ec2::operation::enable_image::EnableImageOutput;
use aws_sdk_ec2::operation::enable_image_deprecation::EnableImageDeprecationOutput;
use aws_sdk_ec2::operation::modify_image_attribute::ModifyImageAttributeOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageAttributeName, ImageState, ImageUsageReport, ImageUsageReportEntry,
    LaunchPermission, PermissionGroup, Tag,
};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::DateTime as SdkTime;
use chrono::{TimeZone, Utc};
use orphan_snapshot_sweeper::core::{LaunchPermissions, UsageEntry};
use orphan_snapshot_sweeper::ports::Ec2;

const CONSUMER: &str = "111111111111";
const ORG: &str = "arn:aws:organizations::123456789012:organization/o-abc";
const OU: &str = "arn:aws:organizations::123456789012:ou/o-abc/ou-ab12-cdef3456";

/// A resource type's options as sent: each name with its values.
type Options<'a> = Vec<(&'a str, Vec<String>)>;
/// A launch permission as sent: account, organization, unit, and whether a group.
type Granted<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);

fn metadata(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(format!("{code} (mocked)")).build()
}

#[tokio::test]
async fn a_usage_report_is_asked_over_every_account_with_the_template_depth() {
    let create = mock!(Client::create_image_usage_report)
        .match_requests(|r| {
            let types: Vec<(&str, Options<'_>)> = r
                .resource_types()
                .iter()
                .map(|t| {
                    let options = t
                        .resource_type_options()
                        .iter()
                        .map(|o| (o.option_name().unwrap_or_default(), o.option_values().to_vec()))
                        .collect();
                    (t.resource_type().unwrap_or_default(), options)
                })
                .collect();
            r.image_id() == Some("ami-1")
                && r.account_ids().is_empty()
                && types
                    == [
                        ("ec2:Instance", vec![]),
                        ("ec2:LaunchTemplate", vec![("version-depth", vec!["15".to_string()])]),
                    ]
        })
        .then_output(|| CreateImageUsageReportOutput::builder().report_id("amiur-1").build());
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&create]);
    assert_eq!(Ec2::create_image_usage_report(&client, "ami-1", 15).await.unwrap(), "amiur-1");
    assert_eq!(create.num_calls(), 1);
}

#[tokio::test]
async fn usage_reports_and_their_entries_are_read_page_by_page() {
    let created = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let report = move |id: &str, state: &str, accounts: &[&str]| {
        ImageUsageReport::builder()
            .report_id(id)
            .image_id("ami-1")
            .state(state)
            .creation_time(SdkTime::from_secs(created.timestamp()))
            .expiration_time(SdkTime::from_secs(created.timestamp() + 30 * 86_400))
            .set_account_ids(Some(accounts.iter().map(|a| a.to_string()).collect()))
            .build()
    };
    let first = mock!(Client::describe_image_usage_reports)
        .match_requests(|r| r.image_ids() == ["ami-1"] && r.next_token().is_none() && r.max_results() == Some(1000))
        .then_output(move || {
            DescribeImageUsageReportsOutput::builder()
                .image_usage_reports(report("amiur-1", "available", &[]))
                .next_token("p2")
                .build()
        });
    let second = mock!(Client::describe_image_usage_reports)
        .match_requests(|r| r.next_token() == Some("p2"))
        .then_output(move || {
            DescribeImageUsageReportsOutput::builder()
                .image_usage_reports(report("amiur-2", "pending", &[CONSUMER]))
                .build()
        });
    let entry = |account: &str, kind: &str, count: i64| {
        ImageUsageReportEntry::builder()
            .report_id("amiur-1")
            .image_id("ami-1")
            .account_id(account)
            .resource_type(kind)
            .usage_count(count)
            .build()
    };
    let entries_1 = mock!(Client::describe_image_usage_report_entries)
        .match_requests(|r| r.report_ids() == ["amiur-1"] && r.next_token().is_none())
        .then_output(move || {
            DescribeImageUsageReportEntriesOutput::builder()
                .image_usage_report_entries(entry(CONSUMER, "ec2:Instance", 2))
                .next_token("e2")
                .build()
        });
    let entries_2 = mock!(Client::describe_image_usage_report_entries)
        .match_requests(|r| r.next_token() == Some("e2"))
        .then_output(move || {
            DescribeImageUsageReportEntriesOutput::builder()
                .image_usage_report_entries(entry("222222222222", "ec2:LaunchTemplate", 1))
                .build()
        });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&first, &second, &entries_1, &entries_2]);
    let reports = Ec2::image_usage_reports(&client, &["ami-1".to_string()]).await.unwrap();
    let read: Vec<(&str, &str, BTreeSet<String>)> =
        reports.iter().map(|r| (r.report_id.as_str(), r.state.as_str(), r.account_ids.clone())).collect();
    assert_eq!(
        read,
        [("amiur-1", "available", BTreeSet::new()), ("amiur-2", "pending", [CONSUMER.to_string()].into())]
    );
    assert_eq!(reports[0].created, Some(created));
    assert_eq!(reports[0].expires, Some(created + chrono::Duration::days(30)));
    let entries = Ec2::image_usage_report_entries(&client, "amiur-1").await.unwrap();
    assert_eq!(
        entries,
        [
            UsageEntry { account_id: CONSUMER.into(), resource_type: "ec2:Instance".into(), usage_count: 2 },
            UsageEntry {
                account_id: "222222222222".into(),
                resource_type: "ec2:LaunchTemplate".into(),
                usage_count: 1
            },
        ]
    );
}

#[tokio::test]
async fn a_failed_call_keeps_ec2s_code() {
    let entries = mock!(Client::describe_image_usage_report_entries)
        .then_error(|| DescribeImageUsageReportEntriesError::generic(metadata("InvalidImageUsageReportId.NotFound")));
    let delete = mock!(Client::delete_image_usage_report)
        .then_error(|| DeleteImageUsageReportError::generic(metadata("InvalidImageUsageReportId.NotFound")));
    let disable =
        mock!(Client::disable_image).then_error(|| DisableImageError::generic(metadata("UnauthorizedOperation")));
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&entries, &delete, &disable]);
    let err = Ec2::image_usage_report_entries(&client, "amiur-9").await.unwrap_err();
    assert_eq!(
        (err.operation.to_string(), err.code.clone()),
        ("DescribeImageUsageReportEntries".to_string(), "InvalidImageUsageReportId.NotFound".to_string())
    );
    assert!(Ec2::delete_image_usage_report(&client, "amiur-9").await.unwrap_err().is_not_found());
    assert_eq!(Ec2::disable_image(&client, "ami-1").await.unwrap_err().code, "UnauthorizedOperation");
}

#[tokio::test]
async fn deprecation_is_asked_for_the_next_whole_minute_and_each_stage_names_its_image() {
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 42).unwrap();
    let next_minute = Utc.with_ymd_and_hms(2026, 6, 1, 12, 1, 0).unwrap().timestamp();
    let deprecate = mock!(Client::enable_image_deprecation)
        .match_requests(move |r| {
            r.image_id() == Some("ami-1") && r.deprecate_at().map(|t| t.secs()) == Some(next_minute)
        })
        .then_output(|| EnableImageDeprecationOutput::builder().r#return(true).build());
    let undeprecate = mock!(Client::disable_image_deprecation)
        .match_requests(|r| r.image_id() == Some("ami-1"))
        .then_output(|| DisableImageDeprecationOutput::builder().r#return(true).build());
    let disable = mock!(Client::disable_image)
        .match_requests(|r| r.image_id() == Some("ami-1"))
        .then_output(|| DisableImageOutput::builder().r#return(true).build());
    let enable = mock!(Client::enable_image)
        .match_requests(|r| r.image_id() == Some("ami-1"))
        .then_output(|| EnableImageOutput::builder().r#return(true).build());
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&deprecate, &undeprecate, &disable, &enable]);
    Ec2::enable_image_deprecation(&client, "ami-1", now).await.unwrap();
    Ec2::disable_image_deprecation(&client, "ami-1").await.unwrap();
    Ec2::disable_image(&client, "ami-1").await.unwrap();
    Ec2::enable_image(&client, "ami-1").await.unwrap();
    for rule in [&deprecate, &undeprecate, &disable, &enable] {
        assert_eq!(rule.num_calls(), 1);
    }
}

#[tokio::test]
async fn launch_permissions_are_read_whole_and_put_back_exactly() {
    let read = mock!(Client::describe_image_attribute)
        .match_requests(|r| {
            r.image_id() == Some("ami-1") && r.attribute() == Some(&ImageAttributeName::LaunchPermission)
        })
        .then_output(|| {
            DescribeImageAttributeOutput::builder()
                .launch_permissions(LaunchPermission::builder().user_id(CONSUMER).build())
                .launch_permissions(LaunchPermission::builder().organization_arn(ORG).build())
                .launch_permissions(LaunchPermission::builder().organizational_unit_arn(OU).build())
                .launch_permissions(LaunchPermission::builder().group(PermissionGroup::All).build())
                .build()
        });
    let restore = mock!(Client::modify_image_attribute)
        .match_requests(|r| {
            let added: Vec<Granted<'_>> = r
                .launch_permission()
                .map(|m| m.add())
                .unwrap_or_default()
                .iter()
                .map(|p| (p.user_id(), p.organization_arn(), p.organizational_unit_arn(), p.group().is_some()))
                .collect();
            r.image_id() == Some("ami-1")
                && r.launch_permission().is_some_and(|m| m.remove().is_empty())
                && added
                    == [
                        (Some(CONSUMER), None, None, false),
                        (None, Some(ORG), None, false),
                        (None, None, Some(OU), false),
                    ]
        })
        .then_output(|| ModifyImageAttributeOutput::builder().build());
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&read, &restore]);
    let permissions = Ec2::launch_permissions(&client, "ami-1").await.unwrap();
    assert_eq!(
        permissions,
        LaunchPermissions {
            user_ids: [CONSUMER.to_string()].into(),
            organization_arns: [ORG.to_string()].into(),
            organizational_unit_arns: [OU.to_string()].into(),
            public: true,
        }
    );
    // Never `all`: a public image is never retired, so never put back public.
    Ec2::add_launch_permissions(&client, "ami-1", &permissions).await.unwrap();
    assert_eq!(restore.num_calls(), 1);
    Ec2::add_launch_permissions(&client, "ami-1", &LaunchPermissions::default()).await.unwrap();
    assert_eq!(restore.num_calls(), 1, "nothing recorded: no call");
}

#[tokio::test]
async fn the_stages_listing_includes_disabled_images_with_their_deprecation_tags_and_sizes() {
    let list = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"] && r.include_disabled() == Some(true) && r.include_deprecated() == Some(true)
        })
        .then_output(|| {
            let volume = |snap: &str, gib: i32| {
                BlockDeviceMapping::builder()
                    .ebs(EbsBlockDevice::builder().snapshot_id(snap).volume_size(gib).build())
                    .build()
            };
            DescribeImagesOutput::builder()
                .images(
                    Image::builder()
                        .image_id("ami-1")
                        .name("golden-web-42")
                        .state(ImageState::Disabled)
                        .creation_date("2025-01-01T00:00:00.000Z")
                        .deprecation_time("2026-06-01T12:01:00.000Z")
                        .block_device_mappings(volume("snap-1", 8))
                        .block_device_mappings(volume("snap-2", 100))
                        .tags(Tag::builder().key("golden:family").value("web").build())
                        .tags(
                            Tag::builder()
                                .key("Ec2ImageBuilderArn")
                                .value("arn:aws:imagebuilder:us-east-1:1:image/web/1.0.0/3")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&list]);
    let images = Ec2::staged_images(&client).await.unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!((image.state.as_str(), image.gib), ("disabled", 108));
    assert_eq!(image.deprecation_time, Some(Utc.with_ymd_and_hms(2026, 6, 1, 12, 1, 0).unwrap()));
    assert_eq!(image.snapshot_ids, ["snap-1", "snap-2"]);
    assert_eq!(image.tags.len(), 2, "every tag: families read them (to keep)");
}

#[tokio::test]
async fn a_reports_resource_types_are_read_and_entries_without_a_report_id_count() {
    use aws_sdk_ec2::types::{ImageUsageResourceType, ImageUsageResourceTypeOption};
    let listed = mock!(Client::describe_image_usage_reports).then_output(|| {
        let depth = ImageUsageResourceTypeOption::builder().option_name("version-depth").option_values("20").build();
        DescribeImageUsageReportsOutput::builder()
            .image_usage_reports(
                ImageUsageReport::builder()
                    .report_id("amiur-1")
                    .image_id("ami-1")
                    .state("available")
                    .resource_types(ImageUsageResourceType::builder().resource_type("ec2:Instance").build())
                    .resource_types(
                        ImageUsageResourceType::builder()
                            .resource_type("ec2:LaunchTemplate")
                            .resource_type_options(depth)
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    // EC2 may leave an entry's ReportId out: the request named one report, so it is that one's.
    let unnamed = mock!(Client::describe_image_usage_report_entries)
        .match_requests(|r| r.report_ids() == ["amiur-1"])
        .then_output(|| {
            DescribeImageUsageReportEntriesOutput::builder()
                .image_usage_report_entries(
                    ImageUsageReportEntry::builder()
                        .account_id(CONSUMER)
                        .resource_type("ec2:LaunchTemplate")
                        .usage_count(1)
                        .build(),
                )
                .build()
        });
    let other = mock!(Client::describe_image_usage_report_entries)
        .match_requests(|r| r.report_ids() == ["amiur-2"])
        .then_output(|| {
            DescribeImageUsageReportEntriesOutput::builder()
                .image_usage_report_entries(
                    ImageUsageReportEntry::builder().report_id("amiur-9").account_id(CONSUMER).usage_count(1).build(),
                )
                .build()
        });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&listed, &unnamed, &other]);
    let reports = Ec2::image_usage_reports(&client, &["ami-1".to_string()]).await.unwrap();
    assert_eq!(
        reports[0].resource_types,
        [("ec2:Instance".to_string(), None), ("ec2:LaunchTemplate".to_string(), Some(20))]
    );
    let entries = Ec2::image_usage_report_entries(&client, "amiur-1").await.unwrap();
    assert_eq!(
        entries,
        [UsageEntry { account_id: CONSUMER.into(), resource_type: "ec2:LaunchTemplate".into(), usage_count: 1 }]
    );
    let err = Ec2::image_usage_report_entries(&client, "amiur-2").await.unwrap_err();
    assert_eq!(err.code, "UnexpectedReportId");
}
