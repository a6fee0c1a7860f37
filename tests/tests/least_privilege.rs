//! Least privilege, proved: each function runs scenarios that reach every AWS call it makes,
//! through a proxy that records them; the actions recorded must equal the actions its policy in
//! `template.yaml` grants: a test fails on an action missing from the policy, and on one granted
//! and never used.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use amiguard::findings::securityhub::SecurityHubFindings;
use amiguard::invocation::Invocation;
use amiguard_integration_tests::ledger;
use amiguard_integration_tests::ledger_iam::{assert_requests_within_leading_keys, patterns};
use amiguard_integration_tests::proxy::{Call, Proxy};
use amiguard_integration_tests::template::{function_for, load, policy_actions};
use amiguard_integration_tests::{moto, sample_event, TestAccount};
use serde_json::json;
use snapshot_on_stop::{Ec2Client, SnapshotScope};

/// IAM actions of the recorded calls (`ec2:CreateImage`, `dynamodb:PutItem`); STS
/// `GetCallerIdentity` needs no permission, so it is left out.
fn iam_actions(calls: &[Call]) -> BTreeSet<String> {
    calls
        .iter()
        .filter(|c| !(c.service == "sts" && c.action == "GetCallerIdentity"))
        .map(|c| format!("{}:{}", c.service, c.action))
        .collect()
}

fn assert_policy_matches(binary: &str, used: BTreeSet<String>) {
    let template = load();
    let function = function_for(&template, binary);
    let mut granted = policy_actions(&template, &function.logical_id);
    // kms:GenerateDataKey/Decrypt on the alert key are used by SNS on the function's behalf
    // (the topic is encrypted); the function never calls KMS itself.
    granted.retain(|action| !action.starts_with("kms:"));
    assert!(granted.iter().all(|a| !a.contains('*')), "{binary}: wildcard action in {granted:?}");
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "{binary}: called but not granted {missing:?}; granted but never called {unused:?}"
    );
}

#[tokio::test]
async fn snapshot_on_stop_calls_exactly_what_its_policy_grants() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[("amiguard:snapshot-on-stop", "true")]).await;
    ledger::create(&account).await;
    // An image the previous version made (its name and tags): adopted, after EC2's own words on
    // its snapshots are read.
    let stopped = "2026-11-26T01:00:00Z";
    let old = account
        .ec2()
        .create_image()
        .instance_id(&instance)
        .name(format!("amiguard-{instance}-20261126T010000Z"))
        .send()
        .await
        .unwrap();
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    account
        .ec2()
        .create_tags()
        .resources(old.image_id().unwrap())
        .tags(tag("amiguard:source-instance", &instance))
        .tags(tag("amiguard:created-by", "snapshot-on-stop"))
        .tags(tag("amiguard:stopped-at", stopped))
        .send()
        .await
        .unwrap();
    let topic =
        account.sns().create_topic().name("amiguard-alerts").send().await.unwrap().topic_arn().unwrap().to_string();
    account.securityhub().enable_security_hub().send().await.unwrap();
    let proxy = Proxy::start(&moto().endpoint).await;
    let through = account.through(&proxy);
    let clients = snapshot_on_stop::Ports {
        ec2: Ec2Client::new(through.ec2()),
        ledger: Some(ledger::on(&through)),
        alerts: Some(amiguard::alert::sns::SnsAlerts::new(through.sns(), &topic)),
        region: account.region.clone(),
        // The failed image is a finding in the account's own Security Hub.
        findings: Some(Box::new(SecurityHubFindings::new(through.securityhub(), through.sts()))),
    };
    let config = snapshot_on_stop::Config {
        scope: SnapshotScope::Tagged,
        keep_last: 1,
        protect_newest: true,
        ..Default::default()
    };
    let protected = amiguard_integration_tests::emulate_deregistration_protection(&proxy);
    // Three stops with KEEP_LAST=1 and PROTECT_NEWEST: create, new template versions, retention with its cleanup;
    // the ledger's lease, records and journal on the way. The second stop's image fails (EC2
    // says so where moto cannot): it is alerted, once.
    let second_image = format!("amiguard-{instance}-20261127T020000Z");
    let failed = move |answer: &str| amiguard_integration_tests::with_image_state(answer, &second_image, "failed");
    proxy.inject(amiguard_integration_tests::proxy::Fault::rewrite_with("DescribeImages", failed));
    let mut made = Vec::new();
    for time in ["2026-11-27T01:00:00Z", "2026-11-27T02:00:00Z", "2026-11-27T03:00:00Z"] {
        let mut event = sample_event("snapshot-on-stop.stopped.json");
        event["detail"]["instance-id"] = json!(instance);
        event["time"] = json!(time);
        amiguard_integration_tests::ec2_says_stopped_at(&instance, time);
        made.push(
            snapshot_on_stop::handle(&clients, &config, event, &Invocation::at(chrono::Utc::now())).await.unwrap(),
        );
    }
    assert_eq!(made.iter().map(|r| r.alerted_images.len()).sum::<usize>(), 1, "{made:?}");
    // The newest image's AMI event (its configuration and retention are settled already).
    let mut available = sample_event("snapshot-on-stop.ami-available.json");
    available["detail"]["ImageId"] = json!(made[2].image_id);
    available["region"] = json!(account.region);
    let report =
        snapshot_on_stop::handle(&clients, &config, available, &Invocation::at(chrono::Utc::now())).await.unwrap();
    assert_eq!(report.outcome, snapshot_on_stop::Outcome::ImageAvailable);
    let protected: Vec<String> = protected.lock().unwrap().keys().cloned().collect();
    assert_eq!(protected, [made[2].image_id.clone().unwrap()]);
    assert_policy_matches("snapshot-on-stop", iam_actions(&proxy.calls()));
    // Every ledger request within its role's partitions (dynamodb:LeadingKeys), each one used.
    let partitions = assert_requests_within_leading_keys(&load(), "snapshot-on-stop", &proxy.calls());
    assert_eq!(partitions, patterns(snapshot_on_stop::LEDGER_PARTITIONS));
}

#[tokio::test]
async fn untrusted_ami_alert_calls_exactly_what_its_policy_grants() {
    use amiguard::alert::sns::SnsAlerts;
    use amiguard_integration_tests::proxy::Fault;
    use amiguard_integration_tests::{AMAZON_LINUX_AMI, RHEL_AMI};
    use untrusted_ami_alert::{Ec2Client, StsIdentity};

    let account = TestAccount::new().await;
    let topic =
        account.sns().create_topic().name("amiguard-alerts").send().await.unwrap().topic_arn().unwrap().to_string();
    let vars = [
        ("ALERT_TOPIC_ARN", topic.clone()),
        ("TRUSTED_IMAGE_PROVIDERS", "self".to_string()),
        ("ENFORCEMENT", "stop".to_string()),
    ];
    let config = untrusted_ami_alert::Config::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    // An instance of a foreign image, and one of an own image deregistered since (its owner is
    // then looked up in the launch metadata).
    let foreign = account.run_instance(RHEL_AMI, &[]).await;
    let source = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let image = account
        .ec2()
        .create_image()
        .instance_id(&source)
        .name("gone-soon")
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    let orphaned = account.run_instance(&image, &[]).await;
    account.ec2().deregister_image().image_id(&image).send().await.unwrap();
    // An instance of an own image (trusted by `self`): its provenance is traced.
    let golden = account.ec2().create_image().instance_id(&source).name("golden").send().await.unwrap();
    let from_golden = account.run_instance(golden.image_id().unwrap(), &[]).await;
    ledger::create(&account).await;

    account.securityhub().enable_security_hub().send().await.unwrap();
    let proxy = Proxy::start(&moto().endpoint).await;
    let through = account.through(&proxy);
    let clients = untrusted_ami_alert::Ports {
        ec2: Ec2Client::new(through.ec2()),
        alerts: SnsAlerts::new(through.sns(), topic),
        identity: StsIdentity::new(through.sts()),
        ledger: Some(ledger::on(&through)),
        region: account.region.clone(),
        // Its untrusted instances are findings in the account's own Security Hub.
        findings: Some(Box::new(SecurityHubFindings::new(through.securityhub(), through.sts()))),
    };
    let delivery = || Invocation::at(chrono::Utc::now());
    let event_for = |instance: &str| {
        let mut event = sample_event("untrusted-ami-alert.running.json");
        event["account"] = json!(account.account_id);
        event["detail"]["instance-id"] = json!(instance);
        event
    };
    // A publish that fails once gives its claim back (the ledger's DeleteItem), then the retry
    // alerts; a redelivery reads the record sent (Query).
    proxy.inject(Fault::error("Publish", 400, "InvalidParameter").times(1));
    untrusted_ami_alert::handle(&config, &clients, &event_for(&foreign), &delivery()).await.unwrap_err();
    for instance in [&foreign, &orphaned, &foreign, &from_golden] {
        untrusted_ami_alert::handle(&config, &clients, &event_for(instance), &delivery()).await.unwrap();
    }
    // TRUST_POLICY_SOURCE=account: the settings read at init (moto lacks the action).
    let settings = "<state>enabled</state><imageCriterionSet><item><imageProviderSet><item>amazon</item></imageProviderSet></item></imageCriterionSet>";
    let answer = amiguard_integration_tests::ec2_answer("GetAllowedImagesSettings", settings);
    proxy.inject(Fault::respond("GetAllowedImagesSettings", answer));
    let (state, criteria) = Ec2Client::new(through.ec2()).allowed_images_settings().await.unwrap();
    assert_eq!((state.as_str(), criteria), ("enabled", json!([{"ImageProviders": ["amazon"]}])));
    assert_policy_matches("untrusted-ami-alert", iam_actions(&proxy.calls()));
    // Every ledger request within its role's partitions (its folding: tests/tests/ledger_iam.rs).
    assert_requests_within_leading_keys(&load(), "untrusted-ami-alert", &proxy.calls());
}

#[tokio::test]
async fn orphan_snapshot_sweeper_calls_exactly_what_its_policy_grants() {
    use amiguard_integration_tests::proxy::Fault;
    use amiguard_integration_tests::{AMAZON_LINUX_AMI, REGION};
    use aws_sdk_ec2::types::RequestLaunchTemplateData;
    use orphan_snapshot_sweeper::{Config, Ports};

    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let topic = account.sns().create_topic().name("sweeps").send().await.unwrap().topic_arn().unwrap().to_string();
    let mut images = Vec::new();
    for name in ["orphaned", "unused", "templated"] {
        let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
        let image = ec2.create_image().instance_id(&instance).name(name).send().await.unwrap();
        images.push(image.image_id().unwrap().to_string());
    }
    ec2.deregister_image().image_id(&images[0]).send().await.unwrap();
    ec2.create_launch_template()
        .launch_template_name("web")
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(&images[2]).build())
        .send()
        .await
        .unwrap();

    ledger::create(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let through = account.through(&proxy);
    let regions = vec![(REGION.to_string(), through.ec2())];
    let (sns, ledger) = (through.sns(), ledger::on(&through));
    let ports = Ports { regions: &regions, publisher: &sns, ledger: Some(&ledger) };
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);
    let run = |overrides: Vec<(&'static str, String)>| {
        let mut vars: Vec<(&str, String)> = vec![
            ("AWS_REGION", REGION.to_string()),
            ("DRY_RUN", "false".into()),
            ("MIN_AGE_HOURS", "0".into()),
            ("MAX_DELETE_FRACTION", "1.0".into()),
            ("RETIRE_UNUSED_AMIS_AFTER_DAYS", "0".into()),
            ("REPORT_TOPIC_ARN", topic.clone()),
            // The stack's default: what it deletes is tagged for the Recycle Bin first.
            ("RECYCLE_BIN_RETENTION_DAYS", "7".into()),
            // One-step retirement first; the staged one below (`staged_retirement_calls`).
            ("RETIRE_STAGES", "deregister".into()),
        ];
        vars.extend(overrides);
        Config::from_env(&move |name: &str| vars.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .unwrap()
    };
    let invocation = || {
        Invocation::at(chrono::Utc::now())
            .with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(900))
    };
    // moto lacks the Recycle Bin (an HTML 500 that would be retried): refuse it at the proxy,
    // which still records the call; that region aborts, as it must.
    proxy.inject(Fault::error("ListImagesInRecycleBin", 400, "UnauthorizedOperation"));
    let checked = run(vec![("RECYCLE_BIN_CHECK", "true".into())]);
    let aborted = orphan_snapshot_sweeper::handle(&checked, &ports, &event, &invocation()).await.unwrap();
    assert!(aborted.sweep().unwrap().regions[0].aborted.is_some());
    // Then the full sweep: retirement, deletions and the summary, and with EXACT_SAVINGS (the
    // stack's default) what each deletion frees: moto's EBS direct APIs know only the snapshots
    // they made, so the answers are refused at the proxy (the calls are recorded all the same),
    // and every snapshot is on one volume, so that neighbours are compared.
    proxy.inject(Fault::error("ListSnapshotBlocks", 400, "ResourceNotFoundException"));
    proxy.inject(Fault::error("ListChangedBlocks", 400, "ResourceNotFoundException"));
    proxy.inject(Fault::rewrite_with("DescribeSnapshots", |answer| {
        amiguard_integration_tests::savings::one_volume(answer, "vol-0feed000000000001")
    }));
    let ebs = amiguard_integration_tests::savings::ebs_regions(&through);
    let unchecked = run(vec![("RECYCLE_BIN_CHECK", "false".into())]);
    let report = orphan_snapshot_sweeper::handle_with_ebs(&unchecked, &ports, Some(&ebs), &event, &invocation())
        .await
        .unwrap()
        .sweep()
        .unwrap();
    assert!(!report.regions[0].deleted.is_empty() && !report.retired_images.is_empty());
    // An AMI's deregistration event is recorded.
    let mut deregistered = sample_event("orphan-snapshot-sweeper.ami-deregistered.json");
    deregistered["account"] = json!(account.account_id);
    orphan_snapshot_sweeper::handle(&unchecked, &ports, &deregistered, &invocation()).await.unwrap();
    let staged = run(vec![
        ("RECYCLE_BIN_CHECK", "false".into()),
        ("RETIRE_STAGES", "deprecate,disable,deregister".into()),
        ("RETIRE_DWELL_DAYS", "0".into()),
        ("USAGE_REPORT_LAG_DAYS", "0".into()),
    ]);
    staged_retirement_calls(&account, &proxy, &staged, &ports, &event).await;

    // And staged retirement (issue 22) through the image-lifecycle model, with consumer accounts.
    let mut calls = proxy.calls();
    calls.extend(staged_retirement_calls_through_the_model().await);
    assert_policy_matches("orphan-snapshot-sweeper", iam_actions(&calls));
    // Every ledger request within its role's partitions (dynamodb:LeadingKeys), each one used.
    let partitions = assert_requests_within_leading_keys(&load(), "orphan-snapshot-sweeper", &calls);
    assert_eq!(partitions, patterns(orphan_snapshot_sweeper::LEDGER_PARTITIONS));
}

/// The sweeper's calls in staged retirement (no dwell, no lag: one stage a run), recorded in front
/// of the image-lifecycle model: an unshared image deprecated, disabled, deregistered and its
/// snapshot deleted; two images shared with a consumer account, each deprecated on a usage report
/// (asked, read, deleted), then one undone when the consumer launches it (its deprecation
/// removed), the other disabled (its launch permissions read first) and undone when a launch
/// template of the consumer names it (enabled again, its sharing restored).
async fn staged_retirement_calls_through_the_model() -> Vec<Call> {
    use amiguard_integration_tests::image_lifecycle::ImageLifecycle;
    use amiguard_integration_tests::{sweeper_config, AMAZON_LINUX_AMI, REGION};
    use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications, RequestLaunchTemplateData};
    use chrono::SubsecRound;
    use orphan_snapshot_sweeper::Ports;

    let model = ImageLifecycle::start().await;
    let recorder = Proxy::start(&model.proxy().endpoint).await;
    let (owner, consumer) = (TestAccount::new().await, TestAccount::new().await);
    ledger::create(&owner).await;
    let ec2 = owner.ec2();
    let mut images = Vec::new();
    for name in ["unshared", "launched", "templated"] {
        let instance = owner.run_instance(AMAZON_LINUX_AMI, &[]).await;
        images.push(ec2.create_image().instance_id(&instance).name(name).send().await.unwrap().image_id.unwrap());
    }
    for shared in &images[1..] {
        let add = LaunchPermission::builder().user_id(&consumer.account_id).build();
        let sharing = LaunchPermissionModifications::builder().add(add).build();
        ec2.modify_image_attribute().image_id(shared).launch_permission(sharing).send().await.unwrap();
    }
    let config = sweeper_config(&[
        ("RETIRE_UNUSED_AMIS_AFTER_DAYS", "0"),
        ("RETIRE_STAGES", "deprecate,disable,deregister"),
        ("RETIRE_DWELL_DAYS", "0"),
        ("USAGE_REPORT_LAG_DAYS", "0"),
        ("RECYCLE_BIN_RETENTION_DAYS", "7"),
    ]);
    let through = owner.through(&recorder);
    let regions = vec![(REGION.to_string(), through.ec2())];
    let (sns, ledger) = (through.sns(), ledger::on(&through));
    let ports = Ports { regions: &regions, publisher: &sns, ledger: Some(&ledger) };
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(owner.account_id);
    let mut now = chrono::Utc::now().trunc_subsecs(0) + chrono::Duration::minutes(1);
    for run in 0..7 {
        model.set_now(now);
        let invocation =
            Invocation::at(now).with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(900));
        orphan_snapshot_sweeper::handle(&config, &ports, &event, &invocation).await.unwrap();
        match run {
            2 => drop(consumer.run_instance(&images[1], &[]).await),
            4 => {
                let data = RequestLaunchTemplateData::builder().image_id(&images[2]).build();
                consumer
                    .ec2()
                    .create_launch_template()
                    .launch_template_name("golden")
                    .launch_template_data(data)
                    .send()
                    .await
                    .unwrap();
            }
            _ => {}
        }
        model.complete_reports_from(&[&consumer]).await;
        now += chrono::Duration::minutes(1);
    }
    let calls = recorder.calls();
    let made: std::collections::BTreeSet<&str> =
        calls.iter().filter(|c| c.succeeded()).map(|c| c.action.as_str()).collect();
    for action in [
        "CreateImageUsageReport",
        "DescribeImageUsageReports",
        "DescribeImageUsageReportEntries",
        "DeleteImageUsageReport",
        "EnableImageDeprecation",
        "DisableImageDeprecation",
        "DisableImage",
        "EnableImage",
        "ModifyImageAttribute",
        "DeregisterImage",
        "DeleteSnapshot",
    ] {
        assert!(made.contains(action), "staged retirement through the model never made {action}: {made:?}");
    }
    calls
}

/// The statements of `logical_id`'s policies that grant `action` (`Action` a string or a list).
fn statements_granting<'a>(
    template: &'a serde_json::Value,
    logical_id: &str,
    action: &str,
) -> Vec<&'a serde_json::Value> {
    fn walk<'a>(value: &'a serde_json::Value, action: &str, found: &mut Vec<&'a serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                let grants = match map.get("Action") {
                    Some(serde_json::Value::String(a)) => a == action,
                    Some(serde_json::Value::Array(list)) => list.iter().any(|a| a == action),
                    _ => false,
                };
                if grants && map.get("Effect").is_some_and(|e| e == "Allow") {
                    found.push(value);
                }
                map.values().for_each(|v| walk(v, action, found));
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| walk(v, action, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&template["Resources"][logical_id]["Properties"]["Policies"], action, &mut found);
    found
}

#[tokio::test]
async fn untrusted_ami_alert_reads_an_ancestor_in_its_own_region_and_its_policy_allows_every_region() {
    use amiguard::alert::sns::SnsAlerts;
    use amiguard_integration_tests::proxy::Fault;
    use amiguard_integration_tests::{ec2_answer, AMAZON_LINUX_AMI};
    use untrusted_ami_alert::{Ec2Client, StsIdentity};

    // The policy: what provenance reads is granted in every region (no region in the resource, no
    // region condition), since an ancestor is read where it is.
    let template = load();
    let function = function_for(&template, "untrusted-ami-alert");
    for action in ["ec2:DescribeImages", "ec2:GetImageAncestry"] {
        let statements = statements_granting(&template, &function.logical_id, action);
        assert!(!statements.is_empty(), "{action} is not granted");
        for statement in statements {
            assert_eq!(statement["Resource"], json!("*"), "{action}: {statement}");
            assert!(statement.get("Condition").is_none(), "{action}: {statement}");
        }
    }

    // The calls: an own image copied from us-west-2; its source is described there.
    let account = TestAccount::new().await;
    let topic = account.sns().create_topic().name("alerts").send().await.unwrap().topic_arn().unwrap().to_string();
    let west = account.ec2_in("us-west-2");
    let builder = account.run_instance_in("us-west-2", AMAZON_LINUX_AMI).await;
    let source = west.create_image().instance_id(&builder).name("golden").send().await.unwrap();
    let source = source.image_id().unwrap().to_string();
    let copy = account.ec2().copy_image().source_image_id(&source).source_region("us-west-2").name("golden").send();
    let copy = copy.await.unwrap().image_id().unwrap().to_string();
    let instance = account.run_instance(&copy, &[]).await;
    ledger::create(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let lineage = format!(
        "<imageAncestryEntrySet><item><imageId>{copy}</imageId><sourceImageId>{source}</sourceImageId><sourceImageRegion>us-west-2</sourceImageRegion></item><item><imageId>{source}</imageId></item></imageAncestryEntrySet>"
    );
    proxy.inject(Fault::respond("GetImageAncestry", ec2_answer("GetImageAncestry", &lineage)));
    let through = account.through(&proxy);
    let vars = [("ALERT_TOPIC_ARN", topic.clone()), ("ENFORCEMENT", "stop".to_string())];
    let config = untrusted_ami_alert::Config::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    let clients = untrusted_ami_alert::Ports {
        ec2: Ec2Client::new(through.ec2()),
        alerts: SnsAlerts::new(through.sns(), topic),
        identity: StsIdentity::new(through.sts()),
        ledger: Some(ledger::on(&through)),
        region: account.region.clone(),
        findings: None,
    };
    let mut event = sample_event("untrusted-ami-alert.running.json");
    event["account"] = json!(account.account_id);
    event["detail"]["instance-id"] = json!(instance);

    let report = untrusted_ami_alert::handle(&config, &clients, &event, &Invocation::at(chrono::Utc::now())).await;

    let untrusted_ami_alert::Report::Instance(one) = report.unwrap() else { panic!("not one instance") };
    assert_eq!(one.outcome, untrusted_ami_alert::Outcome::Trusted, "{:?}", one.reasons);
    let calls = proxy.calls();
    let described_there =
        calls.iter().filter(|c| c.action == "DescribeImages" && c.region == "us-west-2" && c.body.contains(&source));
    assert_eq!(described_there.count(), 1, "the source is described in its own region");
    let granted = policy_actions(&template, &function.logical_id);
    let used = iam_actions(&calls);
    assert!(used.is_subset(&granted), "called but not granted: {:?}", used.difference(&granted).collect::<Vec<_>>());
}

/// The sweeper as the stack deploys it by default (no retirement): a sweep that deletes asks
/// `DescribeSnapshotAttribute` of each orphan about to be deleted, and AMI events describe their
/// image; every action it calls is in the policy the default parameters render (not only in a
/// branch another parameter turns on).
#[tokio::test]
async fn the_default_sweeper_asks_whether_each_orphan_is_shared_and_its_policy_grants_it() {
    use amiguard_integration_tests::template::render;
    use amiguard_integration_tests::{AMAZON_LINUX_AMI, REGION};
    use orphan_snapshot_sweeper::{Config, Ports};

    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let image = ec2.create_image().instance_id(&instance).name("witnessed").send().await.unwrap();
    let image = image.image_id().unwrap().to_string();
    ledger::create(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let through = account.through(&proxy);
    let regions = vec![(REGION.to_string(), through.ec2())];
    let (sns, ledger) = (through.sns(), ledger::on(&through));
    let ports = Ports { regions: &regions, publisher: &sns, ledger: Some(&ledger) };
    let vars = [
        ("AWS_REGION", REGION),
        ("DRY_RUN", "false"),
        ("MIN_AGE_HOURS", "0"),
        ("RECYCLE_BIN_CHECK", "false"),
        ("MAX_DELETE_FRACTION", "1"),
    ];
    let config =
        Config::from_env(&move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
    let invocation = || {
        Invocation::at(chrono::Utc::now())
            .with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(900))
    };
    // Witnessed by its `available` event, deregistered (its event too), then swept.
    for state in ["available", "deregistered"] {
        let mut event = sample_event(&format!("orphan-snapshot-sweeper.ami-{state}.json"));
        event["account"] = json!(account.account_id);
        event["detail"]["ImageId"] = json!(image);
        let answer = orphan_snapshot_sweeper::handle(&config, &ports, &event, &invocation()).await.unwrap();
        assert_eq!(serde_json::to_value(answer).unwrap()["outcome"], "recorded", "{state}");
        if state == "available" {
            ec2.deregister_image().image_id(&image).send().await.unwrap();
        }
    }
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);
    let report =
        orphan_snapshot_sweeper::handle(&config, &ports, &event, &invocation()).await.unwrap().sweep().unwrap();
    assert_eq!(report.regions[0].deleted.len(), 1, "{:?}", report.regions[0]);

    let used = iam_actions(&proxy.calls());
    assert!(used.contains("ec2:DescribeSnapshotAttribute"), "{used:?}");
    assert_eq!(proxy.count("DescribeSnapshotAttribute"), proxy.count("DeleteSnapshot"), "one call per deletion");
    let template = load();
    let function = function_for(&template, "orphan-snapshot-sweeper");
    let granted = policy_actions(&render(&template, &[]), &function.logical_id);
    let missing: Vec<&String> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "called, but not granted by the default parameters: {missing:?}");
}

/// The values of a form-encoded request's `name` or `name.N` fields.
fn form_values(body: &str, name: &str) -> Vec<String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == name || key.strip_prefix(name).is_some_and(|rest| rest.starts_with('.')))
        .map(|(_, value)| value.to_string())
        .collect()
}

/// Staged retirement's calls, every one (the usage reports and deprecation answered here as EC2
/// does, moto lacking them): two shared images go through four runs; X is deprecated, disabled,
/// then found in use and enabled with its sharing put back; Y is deprecated then found in use.
async fn staged_retirement_calls<E, P, L>(
    account: &TestAccount,
    proxy: &Proxy,
    config: &orphan_snapshot_sweeper::Config,
    ports: &orphan_snapshot_sweeper::Ports<'_, E, P, L>,
    event: &serde_json::Value,
) where
    E: orphan_snapshot_sweeper::ports::Ec2,
    P: orphan_snapshot_sweeper::ports::SummaryPublisher,
    L: orphan_snapshot_sweeper::ports::Records,
{
    use amiguard_integration_tests::proxy::Fault;
    use amiguard_integration_tests::{ec2_answer, AMAZON_LINUX_AMI};
    use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    let ec2 = account.ec2();
    let mut shared = Vec::new();
    for name in ["golden-x", "golden-y"] {
        let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
        let image = ec2.create_image().instance_id(&instance).name(name).send().await.unwrap();
        let image = image.image_id().unwrap().to_string();
        let consumer = LaunchPermission::builder().user_id("111111111111").build();
        ec2.modify_image_attribute()
            .image_id(&image)
            .launch_permission(LaunchPermissionModifications::builder().add(consumer).build())
            .send()
            .await
            .unwrap();
        shared.push(image);
    }
    let (x, y) = (shared[0].clone(), shared[1].clone());
    let reports_exist = Arc::new(Mutex::new(false));
    let used: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let deprecated: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let image_of = |body: &str| form_values(body, "ImageId").into_iter().next().unwrap_or_default();
    proxy.inject(Fault::answer_with("CreateImageUsageReport", move |body| {
        ec2_answer("CreateImageUsageReport", &format!("<reportId>amiur-{}</reportId>", image_of(body)))
    }));
    // What amiguard asks a report to read, as EC2 lists it (a narrower report is no evidence).
    const READS: &str = "<resourceTypeSet><item><resourceType>ec2:Instance</resourceType></item><item><resourceType>ec2:LaunchTemplate</resourceType><resourceTypeOptionSet><item><optionName>version-depth</optionName><optionValueSet><item>20</item></optionValueSet></item></resourceTypeOptionSet></item></resourceTypeSet>";
    let exist = reports_exist.clone();
    proxy.inject(Fault::answer_with("DescribeImageUsageReports", move |body| {
        let now = chrono::Utc::now();
        let items: String = if *exist.lock().unwrap() {
            form_values(body, "ImageId")
                .iter()
                .map(|image| {
                    format!(
                        "<item><imageId>{image}</imageId><reportId>amiur-{image}</reportId>{READS}<state>available</state><creationTime>{}</creationTime><expirationTime>{}</expirationTime></item>",
                        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        (now + chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    )
                })
                .collect()
        } else {
            String::new()
        };
        ec2_answer("DescribeImageUsageReports", &format!("<imageUsageReportSet>{items}</imageUsageReportSet>"))
    }));
    let in_use = used.clone();
    proxy.inject(Fault::answer_with("DescribeImageUsageReportEntries", move |body| {
        let report = form_values(body, "ReportId").into_iter().next().unwrap_or_default();
        let image = report.trim_start_matches("amiur-").to_string();
        let item = if in_use.lock().unwrap().contains(&image) {
            format!("<item><reportId>{report}</reportId><imageId>{image}</imageId><accountId>222222222222</accountId><resourceType>ec2:Instance</resourceType><usageCount>1</usageCount></item>")
        } else {
            String::new()
        };
        ec2_answer("DescribeImageUsageReportEntries", &format!("<imageUsageReportEntrySet>{item}</imageUsageReportEntrySet>"))
    }));
    proxy.inject(Fault::answer_with("DeleteImageUsageReport", |_| {
        ec2_answer("DeleteImageUsageReport", "<return>true</return>")
    }));
    let marked = deprecated.clone();
    proxy.inject(Fault::answer_with("EnableImageDeprecation", move |body| {
        marked.lock().unwrap().insert(form_values(body, "ImageId").concat());
        ec2_answer("EnableImageDeprecation", "<return>true</return>")
    }));
    let marked = deprecated.clone();
    proxy.inject(Fault::answer_with("DisableImageDeprecation", move |body| {
        marked.lock().unwrap().remove(&form_values(body, "ImageId").concat());
        ec2_answer("DisableImageDeprecation", "<return>true</return>")
    }));
    // DescribeImages shows the deprecation, as EC2 does (moto does not model it).
    let marked = deprecated.clone();
    proxy.inject(Fault::rewrite_with("DescribeImages", move |answer| {
        let mut answer = answer.to_string();
        for image in marked.lock().unwrap().iter() {
            let id = format!("<imageId>{image}</imageId>");
            answer = answer.replace(&id, &format!("{id}<deprecationTime>2030-01-01T00:00:00.000Z</deprecationTime>"));
        }
        answer
    }));
    let invocation = || {
        Invocation::at(chrono::Utc::now())
            .with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(900))
    };
    let stages = |report: &orphan_snapshot_sweeper::Report| -> Vec<(String, String, String)> {
        let json = serde_json::to_value(report).unwrap();
        json["regions"][0]["retirement_stages"]
            .as_array()
            .unwrap_or_else(|| panic!("no retirement_stages: {json}"))
            .iter()
            .filter(|e| e["image_id"] == x || e["image_id"] == y)
            .map(|e| (e["image_id"].as_str().unwrap().to_string(), e["stage"].to_string(), e["change"].to_string()))
            .collect()
    };
    let sweep = async |step: &str| {
        let answer = orphan_snapshot_sweeper::handle(config, ports, event, &invocation()).await.unwrap();
        let report = answer.sweep().unwrap();
        assert!(report.regions[0].aborted.is_none(), "{step}: {:?}", report.regions[0]);
        stages(&report)
    };
    // A: candidates; the usage reports are asked for.
    sweep("ask").await;
    assert_eq!(proxy.count("CreateImageUsageReport"), 2);
    // B: the reports show no use: both deprecated.
    *reports_exist.lock().unwrap() = true;
    let b = sweep("deprecate").await;
    assert!(b.iter().all(|(_, stage, change)| stage == "\"deprecated\"" && change == "\"advanced\""), "{b:?}");
    // The next stage waits for a report amiguard asks for after the deprecation (its own id).
    sweep("ask again").await;
    assert_eq!(proxy.count("CreateImageUsageReport"), 4);
    // C: Y is in use (undone); X is disabled.
    used.lock().unwrap().insert(y.clone());
    let c = sweep("disable").await;
    assert!(c.contains(&(y.clone(), "\"active\"".into(), "\"undone\"".into())), "{c:?}");
    assert!(c.contains(&(x.clone(), "\"disabled\"".into(), "\"advanced\"".into())), "{c:?}");
    // D: X is in use: enabled, its sharing put back.
    used.lock().unwrap().insert(x.clone());
    let d = sweep("enable").await;
    assert!(d.contains(&(x.clone(), "\"active\"".into(), "\"undone\"".into())), "{d:?}");
    let permissions = ec2
        .describe_image_attribute()
        .image_id(&x)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    let users: Vec<&str> = permissions.launch_permissions().iter().filter_map(|p| p.user_id()).collect();
    assert_eq!(users, ["111111111111"], "the recorded sharing is back");
    proxy.clear_faults();
}
