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

    assert_policy_matches("orphan-snapshot-sweeper", iam_actions(&proxy.calls()));
    // Every ledger request within its role's partitions (dynamodb:LeadingKeys), each one used.
    let partitions = assert_requests_within_leading_keys(&load(), "orphan-snapshot-sweeper", &proxy.calls());
    assert_eq!(partitions, patterns(orphan_snapshot_sweeper::LEDGER_PARTITIONS));
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
