//! The image-lifecycle model (tests/src/image_lifecycle.rs) behaves as EC2 documents, called with
//! the SDK the sweeper uses: usage reports (`pending` -> `available` or `error`, entries per
//! account and resource type read from moto's real state, paged, expiry after 30 days, deletion),
//! deprecation (a past time refused, seconds rounded, `deprecationTime` shown), and `DisableImage`
//! as EC2 does it (every launch permission removed and not restored by `EnableImage`, hidden
//! unless `IncludeDisabled`, a disabled image not shareable).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use amiguard_integration_tests::image_lifecycle::{ImageLifecycle, UsageEntry};
use amiguard_integration_tests::{TestAccount, AMAZON_LINUX_AMI};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    ImageAttributeName, ImageUsageResourceTypeOptionRequest, ImageUsageResourceTypeRequest, LaunchPermission,
    LaunchPermissionModifications, OperationType, RequestLaunchTemplateData,
};
use aws_smithy_types::DateTime as SdkTime;
use chrono::{DateTime, Duration, TimeZone, Utc};

const ORG: &str = "arn:aws:organizations::111111111111:organization/o-abcdefghij";
const OU_A: &str = "arn:aws:organizations::111111111111:ou/o-abcdefghij/ou-ab12-11111111";
const OU_B: &str = "arn:aws:organizations::111111111111:ou/o-abcdefghij/ou-ab12-22222222";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
}

fn sdk_time(time: DateTime<Utc>) -> SdkTime {
    SdkTime::from_millis(time.timestamp_millis())
}

fn chrono_time(time: &SdkTime) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(time.to_millis().unwrap()).unwrap()
}

/// An image of a fresh instance in `account`.
async fn image(account: &TestAccount, name: &str) -> String {
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let created = account.ec2().create_image().instance_id(instance).name(name).send().await.unwrap();
    created.image_id().unwrap().to_string()
}

/// The usage report request the sweeper makes: instances and launch templates at `depth`.
fn resource_types(depth: u32) -> Vec<ImageUsageResourceTypeRequest> {
    vec![
        ImageUsageResourceTypeRequest::builder().resource_type("ec2:Instance").build(),
        ImageUsageResourceTypeRequest::builder()
            .resource_type("ec2:LaunchTemplate")
            .resource_type_options(
                ImageUsageResourceTypeOptionRequest::builder()
                    .option_name("version-depth")
                    .option_values(depth.to_string())
                    .build(),
            )
            .build(),
    ]
}

/// A launch template in `account` whose first version names `image_id`, followed by `more`
/// versions naming another image: `image_id` is then `more` versions deep.
async fn template_naming_at_depth(account: &TestAccount, name: &str, image_id: &str, more: usize) {
    let ec2 = account.ec2();
    let created = ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(image_id).build())
        .send()
        .await
        .unwrap();
    let id = created.launch_template().unwrap().launch_template_id().unwrap().to_string();
    for _ in 0..more {
        ec2.create_launch_template_version()
            .launch_template_id(&id)
            .launch_template_data(RequestLaunchTemplateData::builder().image_id(AMAZON_LINUX_AMI).build())
            .send()
            .await
            .unwrap();
    }
}

async fn all_entries(ec2: &aws_sdk_ec2::Client, report_id: &str) -> (Vec<(String, String, i64)>, usize) {
    let mut pages = ec2.describe_image_usage_report_entries().report_ids(report_id).into_paginator().send();
    let (mut entries, mut count) = (Vec::new(), 0);
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        count += 1;
        for e in page.image_usage_report_entries() {
            assert_eq!((e.report_id(), e.image_id().is_some()), (Some(report_id), true));
            entries.push((
                e.account_id().unwrap().to_string(),
                e.resource_type().unwrap().to_string(),
                e.usage_count().unwrap(),
            ));
        }
    }
    entries.sort();
    (entries, count)
}

#[tokio::test]
async fn a_usage_report_is_pending_then_shows_each_accounts_instances_and_templates_within_its_depth() {
    let owner = TestAccount::new().await;
    let (runs, templates, too_deep, idle) =
        (TestAccount::new().await, TestAccount::new().await, TestAccount::new().await, TestAccount::new().await);
    let golden = image(&owner, "golden").await;
    runs.run_instance(&golden, &[]).await;
    runs.run_instance(&golden, &[]).await;
    // An instance terminated no longer uses it.
    let gone = runs.run_instance(&golden, &[]).await;
    runs.ec2().terminate_instances().instance_ids(gone).send().await.unwrap();
    template_naming_at_depth(&templates, "web", &golden, 15).await;
    template_naming_at_depth(&too_deep, "old", &golden, 25).await;

    let model = ImageLifecycle::start().await;
    model.set_now(t0());
    let ec2 = owner.through(model.proxy()).ec2();
    let created = ec2
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(20)))
        .send()
        .await
        .unwrap();
    let report_id = created.report_id().unwrap().to_string();
    assert!(report_id.starts_with("amiur-"), "{report_id}");

    let described = ec2.describe_image_usage_reports().image_ids(&golden).send().await.unwrap();
    let [report] = described.image_usage_reports() else { panic!("{described:?}") };
    assert_eq!(
        (report.report_id(), report.image_id(), report.state()),
        (Some(report_id.as_str()), Some(golden.as_str()), Some("pending"))
    );
    assert_eq!(chrono_time(report.creation_time().unwrap()), t0());
    assert_eq!(chrono_time(report.expiration_time().unwrap()), t0() + Duration::days(30));
    assert!(report.account_ids().is_empty(), "no AccountIds: every account");
    let kinds: Vec<(&str, Vec<String>)> = report
        .resource_types()
        .iter()
        .map(|t| {
            let values = t.resource_type_options().iter().flat_map(|o| o.option_values().to_vec()).collect();
            (t.resource_type().unwrap(), values)
        })
        .collect();
    assert_eq!(kinds, [("ec2:Instance", vec![]), ("ec2:LaunchTemplate", vec!["20".to_string()])]);
    assert_eq!(all_entries(&ec2, &report_id).await.0, [], "a pending report shows no entries");

    model.set_page_size(1);
    let completed = model.complete_reports_from(&[&runs, &templates, &too_deep, &idle]).await;
    assert_eq!(completed, std::slice::from_ref(&report_id));
    let described = ec2.describe_image_usage_reports().report_ids(&report_id).send().await.unwrap();
    assert_eq!(described.image_usage_reports()[0].state(), Some("available"));
    let (entries, pages) = all_entries(&ec2, &report_id).await;
    assert_eq!(
        entries,
        [
            (runs.account_id.clone(), "ec2:Instance".to_string(), 2),
            (templates.account_id.clone(), "ec2:LaunchTemplate".to_string(), 1),
        ]
    );
    assert_eq!(pages, 2, "one entry a page");
    let entry = ec2.describe_image_usage_report_entries().report_ids(&report_id).max_results(5).send().await.unwrap();
    assert_eq!(chrono_time(entry.image_usage_report_entries()[0].report_creation_time().unwrap()), t0());

    // A depth of 30 reaches the template 25 versions deep.
    let deeper = ec2
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(30)))
        .send()
        .await
        .unwrap();
    model.complete_reports_from(&[&runs, &templates, &too_deep, &idle]).await;
    let (entries, _) = all_entries(&ec2, deeper.report_id().unwrap()).await;
    assert!(entries.contains(&(too_deep.account_id.clone(), "ec2:LaunchTemplate".to_string(), 1)), "{entries:?}");

    // Deleted: listed no more; a second delete is refused.
    ec2.delete_image_usage_report().report_id(&report_id).send().await.unwrap();
    let left = ec2.describe_image_usage_reports().image_ids(&golden).send().await.unwrap();
    assert_eq!(left.image_usage_reports().len(), 1);
    let again = ec2.delete_image_usage_report().report_id(&report_id).send().await.unwrap_err();
    assert_eq!(again.code(), Some("InvalidImageUsageReportId.NotFound"));
}

#[tokio::test]
async fn a_report_can_fail_covers_only_the_accounts_asked_and_expires_after_thirty_days() {
    let owner = TestAccount::new().await;
    let (asked, other) = (TestAccount::new().await, TestAccount::new().await);
    let golden = image(&owner, "golden").await;
    asked.run_instance(&golden, &[]).await;
    other.run_instance(&golden, &[]).await;
    let model = ImageLifecycle::start().await;
    model.set_now(t0());
    let ec2 = owner.through(model.proxy()).ec2();

    let failing = ec2
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(20)))
        .send()
        .await
        .unwrap();
    model.fail_report(failing.report_id().unwrap(), "internal error");
    let described = ec2.describe_image_usage_reports().report_ids(failing.report_id().unwrap()).send().await.unwrap();
    let report = &described.image_usage_reports()[0];
    assert_eq!((report.state(), report.state_reason()), (Some("error"), Some("internal error")));

    let listed = ec2
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(20)))
        .account_ids(&asked.account_id)
        .send()
        .await
        .unwrap();
    let listed_id = listed.report_id().unwrap().to_string();
    model.complete_reports_from(&[&asked, &other]).await;
    let (entries, _) = all_entries(&ec2, &listed_id).await;
    assert_eq!(entries, [(asked.account_id.clone(), "ec2:Instance".to_string(), 1)]);
    let described = ec2.describe_image_usage_reports().report_ids(&listed_id).send().await.unwrap();
    assert_eq!(described.image_usage_reports()[0].account_ids(), std::slice::from_ref(&asked.account_id));
    assert_eq!(model.reports_of(&golden)[0].state, "error", "the failed one stays failed");

    // Another account cannot report on the owner's image, nor see its reports.
    let stranger = other.through(model.proxy()).ec2();
    let refused = stranger
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(20)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("InvalidAMIID.NotFound"));
    assert!(stranger.describe_image_usage_reports().send().await.unwrap().image_usage_reports().is_empty());

    // Thirty days on, EC2 has deleted them.
    model.set_now(t0() + Duration::days(30) - Duration::seconds(1));
    assert_eq!(
        ec2.describe_image_usage_reports().image_ids(&golden).send().await.unwrap().image_usage_reports().len(),
        2
    );
    model.set_now(t0() + Duration::days(30));
    assert!(ec2
        .describe_image_usage_reports()
        .image_ids(&golden)
        .send()
        .await
        .unwrap()
        .image_usage_reports()
        .is_empty());
    assert!(all_entries(&ec2, &listed_id).await.0.is_empty());
    assert!(model.reports().is_empty());
}

#[tokio::test]
async fn deprecation_refuses_the_past_rounds_to_the_minute_and_shows_in_describe_images() {
    let owner = TestAccount::new().await;
    let golden = image(&owner, "golden").await;
    let model = ImageLifecycle::start().await;
    let now = t0() + Duration::seconds(10);
    model.set_now(now);
    let ec2 = owner.through(model.proxy()).ec2();

    let dry = ec2
        .enable_image_deprecation()
        .image_id(&golden)
        .deprecate_at(sdk_time(now + Duration::hours(1)))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(dry.code(), Some("DryRunOperation"));
    let dry = ec2
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(20)))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(dry.code(), Some("DryRunOperation"));
    assert!(model.reports().is_empty() && model.deprecation(&golden).is_none(), "a dry run changes nothing");
    let past = ec2
        .enable_image_deprecation()
        .image_id(&golden)
        .deprecate_at(sdk_time(now - Duration::minutes(1)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(past.code(), Some("InvalidParameterValue"));
    // 10:00:29 rounds down to 10:00:00, before the clock's 10:00:10: in the past.
    let rounded_down = ec2
        .enable_image_deprecation()
        .image_id(&golden)
        .deprecate_at(sdk_time(t0() + Duration::seconds(29)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(rounded_down.code(), Some("InvalidParameterValue"));
    assert_eq!(model.deprecation(&golden), None);
    let described = ec2.describe_images().image_ids(&golden).send().await.unwrap();
    assert_eq!(described.images()[0].deprecation_time(), None);

    // The next whole minute is accepted; 10:01:40 rounds to 10:02:00.
    ec2.enable_image_deprecation()
        .image_id(&golden)
        .deprecate_at(sdk_time(t0() + Duration::seconds(100)))
        .send()
        .await
        .unwrap();
    assert_eq!(model.deprecation(&golden), Some(t0() + Duration::minutes(2)));
    let described = ec2.describe_images().owners("self").send().await.unwrap();
    let shown = described.images().iter().find(|i| i.image_id() == Some(golden.as_str())).unwrap();
    assert_eq!(shown.deprecation_time(), Some("2026-12-01T10:02:00.000Z"));

    ec2.disable_image_deprecation().image_id(&golden).send().await.unwrap();
    assert_eq!(model.deprecation(&golden), None);
    assert_eq!(ec2.describe_images().image_ids(&golden).send().await.unwrap().images()[0].deprecation_time(), None);

    // Only the owner deprecates its image.
    let other = TestAccount::new().await.through(model.proxy()).ec2();
    let refused = other
        .enable_image_deprecation()
        .image_id(&golden)
        .deprecate_at(sdk_time(t0() + Duration::hours(1)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("InvalidAMIID.NotFound"));
}

async fn sharing(ec2: &aws_sdk_ec2::Client, image_id: &str) -> BTreeSet<String> {
    let described = ec2
        .describe_image_attribute()
        .image_id(image_id)
        .attribute(ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    described
        .launch_permissions()
        .iter()
        .map(|p| {
            p.user_id()
                .or(p.organization_arn())
                .or(p.organizational_unit_arn())
                .map(str::to_string)
                .or(p.group().map(|g| g.as_str().to_string()))
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn disabling_removes_every_launch_permission_which_enabling_does_not_restore() {
    let owner = TestAccount::new().await;
    let golden = image(&owner, "golden").await;
    let model = ImageLifecycle::start().await;
    let ec2 = owner.through(model.proxy()).ec2();
    // Shared with an account, an organisation and two OUs, in EC2's two forms (the second lists
    // two OUs at once, which moto alone would cut to the first).
    ec2.modify_image_attribute()
        .image_id(&golden)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id("111122223333").build())
                .add(LaunchPermission::builder().organization_arn(ORG).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    ec2.modify_image_attribute()
        .image_id(&golden)
        .attribute("launchPermission")
        .operation_type(OperationType::Add)
        .organizational_unit_arns(OU_A)
        .organizational_unit_arns(OU_B)
        .send()
        .await
        .unwrap();
    let shared: BTreeSet<String> = ["111122223333", ORG, OU_A, OU_B].iter().map(|s| s.to_string()).collect();
    assert_eq!(sharing(&ec2, &golden).await, shared);

    ec2.disable_image().image_id(&golden).send().await.unwrap();
    assert!(sharing(&ec2, &golden).await.is_empty(), "DisableImage removes every launch permission");
    let listed = ec2.describe_images().owners("self").send().await.unwrap();
    assert!(listed.images().iter().all(|i| i.image_id() != Some(golden.as_str())), "hidden without IncludeDisabled");
    let listed = ec2.describe_images().owners("self").include_disabled(true).send().await.unwrap();
    let shown = listed.images().iter().find(|i| i.image_id() == Some(golden.as_str())).unwrap();
    assert_eq!(shown.state().map(|s| s.as_str()), Some("disabled"));
    let refused = ec2
        .modify_image_attribute()
        .image_id(&golden)
        .attribute("launchPermission")
        .operation_type(OperationType::Add)
        .user_ids("111122223333")
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("OperationNotPermitted"), "a disabled AMI can't be shared");

    ec2.enable_image().image_id(&golden).send().await.unwrap();
    assert!(sharing(&ec2, &golden).await.is_empty(), "EnableImage does not restore them");
    let listed = ec2.describe_images().owners("self").send().await.unwrap();
    let shown = listed.images().iter().find(|i| i.image_id() == Some(golden.as_str())).unwrap();
    assert_eq!(shown.state().map(|s| s.as_str()), Some("available"));
    // Shared again, each one.
    ec2.modify_image_attribute()
        .image_id(&golden)
        .attribute("launchPermission")
        .operation_type(OperationType::Add)
        .user_ids("111122223333")
        .organization_arns(ORG)
        .organizational_unit_arns(OU_A)
        .organizational_unit_arns(OU_B)
        .send()
        .await
        .unwrap();
    assert_eq!(sharing(&ec2, &golden).await, shared);
    // Entries given by hand are served as given.
    let created = ec2
        .create_image_usage_report()
        .image_id(&golden)
        .set_resource_types(Some(resource_types(20)))
        .send()
        .await
        .unwrap();
    model.complete_report(created.report_id().unwrap(), vec![UsageEntry::new("111122223333", "ec2:Instance", 3)]);
    let (entries, _) = all_entries(&ec2, created.report_id().unwrap()).await;
    assert_eq!(entries, [("111122223333".to_string(), "ec2:Instance".to_string(), 3)]);
}
