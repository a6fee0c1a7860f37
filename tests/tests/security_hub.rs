//! Security Hub findings (issue 24) against moto's Security Hub: the real handlers import their
//! findings into the test account's own hub (enabled first, as an account would), read back with
//! GetFindings. Security Hub not enabled, which moto does not answer for BatchImportFindings, is
//! AWS's `InvalidAccessException` through the fault proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use amiguard::alert::sns::SnsAlerts;
use amiguard::findings::securityhub::SecurityHubFindings;
use amiguard::findings::{FindingsPublisher, NOT_ENABLED};
use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use amiguard_integration_tests::inbox::AlertInbox;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::{moto, sample_event, TestAccount, AMAZON_LINUX_AMI, RED_HAT_OWNER_ID};
use aws_sdk_securityhub::types::{AwsSecurityFinding, RecordState, SeverityLabel};
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use untrusted_ami_alert::{handle, Config, Ec2Client, InstanceReport, Outcome, Ports, Report, StsIdentity};

/// Red Hat trusted, so that Amazon Linux (owner 137112412989) is proven untrusted: `high`.
fn config(topic_arn: &str, vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    map.insert("ALERT_TOPIC_ARN".into(), topic_arn.into());
    map.entry("TRUSTED_IMAGE_PROVIDERS".into()).or_insert_with(|| RED_HAT_OWNER_ID.into());
    Config::from_env(&move |name: &str| map.get(name).cloned()).unwrap()
}

fn findings_of(account: &TestAccount) -> Box<dyn FindingsPublisher> {
    Box::new(SecurityHubFindings::new(account.securityhub(), account.sts()))
}

async fn ports(
    account: &TestAccount,
    config: &Config,
    findings: Option<Box<dyn FindingsPublisher>>,
) -> Ports<Ec2Client, SnsAlerts, StsIdentity, DynamoLedger> {
    Ports {
        ec2: Ec2Client::new(account.ec2()),
        alerts: SnsAlerts::new(account.sns(), config.alert_topic_arn.clone()),
        identity: StsIdentity::new(account.sts()),
        ledger: Some(amiguard_integration_tests::ledger::create(account).await),
        region: account.region.clone(),
        findings,
    }
}

/// The account's Security Hub, enabled.
async fn enable_security_hub(account: &TestAccount) {
    account.securityhub().enable_security_hub().send().await.unwrap();
}

/// The account's findings, as GetFindings answers (every page). Read on a thread of its own with a large stack:
/// the SDK's deserializer of an ASFF finding (its `ResourceDetails` alone is 31 KB) overflows a
/// test thread's 2 MB in a debug build. Its own runtime and clients, so that nothing waits on
/// the test's runtime while it runs.
async fn hub_findings(account: &TestAccount) -> Vec<AwsSecurityFinding> {
    let account_id = account.account_id.clone();
    let read = move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let account = TestAccount::with_id(&account_id).await;
            let (client, mut found, mut token) = (account.securityhub(), Vec::new(), None);
            loop {
                let page = client.get_findings().set_next_token(token).send().await.unwrap();
                found.extend(page.findings().iter().cloned());
                token = page.next_token().filter(|t| !t.is_empty()).map(str::to_string);
                if token.is_none() {
                    return found;
                }
            }
        })
    };
    std::thread::Builder::new().stack_size(64 << 20).spawn(read).unwrap().join().unwrap()
}

fn running(account: &TestAccount, instance_id: &str) -> Value {
    let mut event = sample_event("untrusted-ami-alert.running.json");
    event["account"] = json!(account.account_id);
    event["resources"] =
        json!([format!("arn:aws:ec2:{}:{}:instance/{instance_id}", account.region, account.account_id)]);
    event["detail"]["instance-id"] = json!(instance_id);
    event
}

fn audit_event(account: &TestAccount) -> Value {
    let mut event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    event["account"] = json!(account.account_id);
    event
}

fn one(report: Report) -> InstanceReport {
    match report {
        Report::Instance(report) => report,
        other => panic!("expected one instance's report, got {other:?}"),
    }
}

fn warnings_of(report: &Report) -> Vec<String> {
    match report {
        Report::Audit(audit) => audit.warnings.clone(),
        Report::Instance(one) => one.warnings.clone(),
        Report::Launch { instances, .. } => instances.iter().flat_map(|i| i.warnings.clone()).collect(),
    }
}

fn finding_id(account: &TestAccount, instance: &str, image: &str) -> String {
    format!("amiguard/{}/untrusted-image/{instance}/{image}", account.region)
}

#[tokio::test]
async fn a_launch_makes_one_finding_and_a_second_sighting_updates_it() {
    let account = TestAccount::new().await;
    enable_security_hub(&account).await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[]);
    let ports = ports(&account, &config, Some(findings_of(&account))).await;
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;

    let first = one(handle(&config, &ports, &running(&account, &instance), &Invocation::at(Utc::now())).await.unwrap());
    assert_eq!(first.outcome, Outcome::Untrusted);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let found = hub_findings(&account).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let finding = &found[0];
    let (acct, region) = (&account.account_id, &account.region);
    assert_eq!(finding.id(), Some(finding_id(&account, &instance, AMAZON_LINUX_AMI).as_str()));
    assert_eq!(
        finding.product_arn(),
        Some(format!("arn:aws:securityhub:{region}:{acct}:product/{acct}/default").as_str())
    );
    assert_eq!(finding.aws_account_id(), Some(acct.as_str()));
    assert_eq!(finding.severity().and_then(|s| s.label()), Some(&SeverityLabel::High));
    assert_eq!(finding.record_state(), Some(&RecordState::Active));
    let resources: Vec<(&str, &str)> =
        finding.resources().iter().map(|r| (r.r#type().unwrap(), r.id().unwrap())).collect();
    assert_eq!(
        resources,
        [
            ("AwsEc2Instance", format!("arn:aws:ec2:{region}:{acct}:instance/{instance}").as_str()),
            ("Other", format!("arn:aws:ec2:{region}::image/{AMAZON_LINUX_AMI}").as_str()),
        ]
    );
    let description = finding.description().unwrap();
    assert!(first.reasons.iter().all(|r| description.contains(r.as_str())), "{description} lacks {:?}", first.reasons);
    assert!(finding.remediation().and_then(|r| r.recommendation()).and_then(|r| r.text()).is_some());

    // The next event of the same instance (a minute later): no second alert, the same finding.
    let later = Invocation::at(Utc::now() + Duration::minutes(1));
    let second = one(handle(&config, &ports, &running(&account, &instance), &later).await.unwrap());
    assert!(second.already_alerted);
    let again = hub_findings(&account).await;
    assert_eq!(again.len(), 1, "updated, not added: {again:?}");
    assert_eq!(again[0].id(), finding.id());
    assert!(
        again[0].updated_at() > finding.updated_at(),
        "{:?} after {:?}",
        again[0].updated_at(),
        finding.updated_at()
    );
    assert_eq!(again[0].created_at(), finding.created_at(), "dated by its first sighting");
    assert_eq!(inbox.drain().await.len(), 1, "one alert");
}

#[tokio::test]
async fn the_audit_archives_a_finding_only_once_ec2_says_it_is_over() {
    let account = TestAccount::new().await;
    enable_security_hub(&account).await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[]);
    let ports = ports(&account, &config, Some(findings_of(&account))).await;
    let terminated = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let kept = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    for instance in [&terminated, &kept] {
        handle(&config, &ports, &running(&account, instance), &Invocation::at(Utc::now())).await.unwrap();
    }
    let state_of = |found: &[AwsSecurityFinding], instance: &str| {
        let id = finding_id(&account, instance, AMAZON_LINUX_AMI);
        found.iter().find(|f| f.id() == Some(id.as_str())).and_then(|f| f.record_state().cloned())
    };

    // Both still running and untrusted: both stay active.
    let audit = handle(&config, &ports, &audit_event(&account), &Invocation::at(Utc::now())).await.unwrap();
    assert!(warnings_of(&audit).is_empty(), "{:?}", warnings_of(&audit));
    let found = hub_findings(&account).await;
    assert_eq!(found.len(), 2);
    assert_eq!(state_of(&found, &terminated), Some(RecordState::Active));
    assert_eq!(state_of(&found, &kept), Some(RecordState::Active));

    // One terminated: EC2 lists it terminated, its finding is archived; the other stays active.
    account.ec2().terminate_instances().instance_ids(&terminated).send().await.unwrap();
    handle(&config, &ports, &audit_event(&account), &Invocation::at(Utc::now())).await.unwrap();
    let found = hub_findings(&account).await;
    assert_eq!(found.len(), 2, "archived, not removed: {found:?}");
    assert_eq!(state_of(&found, &terminated), Some(RecordState::Archived));
    assert_eq!(state_of(&found, &kept), Some(RecordState::Active));

    // Judged trusted only by the fallback policy (the account's Allowed AMIs settings could not
    // be used, e.g. someone disabled them): that is no verified trust, and archives nothing.
    let fallback = self::config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "amazon")])
        .with_default_policy_because("GetAllowedImagesSettings: disabled");
    handle(&fallback, &ports, &audit_event(&account), &Invocation::at(Utc::now())).await.unwrap();
    assert_eq!(state_of(&hub_findings(&account).await, &kept), Some(RecordState::Active));

    // Its image trusted now (the policy changed): the audit judges it trusted, and archives it.
    let trusting = self::config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "amazon")]);
    handle(&trusting, &ports, &audit_event(&account), &Invocation::at(Utc::now())).await.unwrap();
    assert_eq!(state_of(&hub_findings(&account).await, &kept), Some(RecordState::Archived));
}

#[tokio::test]
async fn a_dry_run_or_findings_off_imports_nothing() {
    let account = TestAccount::new().await;
    enable_security_hub(&account).await;
    let inbox = AlertInbox::new(&account, true).await;
    let dry = config(&inbox.topic_arn, &[("DRY_RUN", "true")]);
    let ports = ports(&account, &dry, Some(findings_of(&account))).await;
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let report = one(handle(&dry, &ports, &running(&account, &instance), &Invocation::at(Utc::now())).await.unwrap());
    assert_eq!(report.outcome, Outcome::Untrusted);
    let off = config(&inbox.topic_arn, &[]);
    let without = self::ports(&account, &off, None).await;
    handle(&off, &without, &running(&account, &instance), &Invocation::at(Utc::now())).await.unwrap();
    assert!(hub_findings(&account).await.is_empty());
}

#[tokio::test]
async fn security_hub_not_enabled_is_a_warning_and_changes_nothing_else() {
    // The same launch in two accounts: one without findings, one whose Security Hub answers
    // InvalidAccessException (not enabled).
    let (plain, disabled) = (TestAccount::new().await, TestAccount::new().await);
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("BatchImportFindings", 401, "InvalidAccessException"));
    let mut reports = Vec::new();
    let mut received = Vec::new();
    let mut tagged = Vec::new();
    for (account, findings) in [(&plain, None), (&disabled, Some(findings_of(&disabled.through(&proxy))))] {
        let inbox = AlertInbox::new(account, true).await;
        let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "tag")]);
        let ports = ports(account, &config, findings).await;
        let first = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
        let second = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
        let mut of_account = Vec::new();
        for instance in [&first, &second] {
            let report = handle(&config, &ports, &running(account, instance), &Invocation::at(Utc::now())).await;
            of_account.push(one(report.expect("never a failed invocation")));
        }
        let audit = handle(&config, &ports, &audit_event(account), &Invocation::at(Utc::now())).await.unwrap();
        of_account.iter_mut().for_each(|r| r.instance_id = None);
        reports.push((of_account, warnings_of(&audit)));
        received.push(inbox.drain().await);
        let tags = account.ec2().describe_tags().send().await.unwrap();
        let mut amiguard_tags: Vec<String> = tags
            .tags()
            .iter()
            .filter(|t| t.key().unwrap().starts_with("amiguard:"))
            .map(|t| format!("{}={}", t.key().unwrap(), t.value().unwrap_or_default()))
            .collect();
        amiguard_tags.sort();
        tagged.push(amiguard_tags);
    }
    assert!(!tagged[0].is_empty(), "ENFORCEMENT=tag tags");
    assert_eq!(tagged[0], tagged[1], "the same tags");
    let (plain_reports, plain_audit) = &reports[0];
    let (disabled_reports, disabled_audit) = &reports[1];
    for (without, with) in plain_reports.iter().zip(disabled_reports) {
        assert_eq!(with.warnings, [NOT_ENABLED], "on every invocation of the container: {:?}", with.warnings);
        assert!(with.alert_message_id.is_some(), "the alert still goes out");
        let with_no_warning = InstanceReport { warnings: vec![], alert_message_id: None, ..with.clone() };
        let without = InstanceReport { alert_message_id: None, ..without.clone() };
        assert_eq!(serde_json::to_value(&with_no_warning).unwrap(), serde_json::to_value(&without).unwrap());
    }
    assert!(plain_audit.is_empty(), "{plain_audit:?}");
    assert_eq!(disabled_audit, &[NOT_ENABLED], "said once in the audit");
    assert_eq!(received[0].len(), 2);
    assert_eq!(received[1].len(), received[0].len(), "the same alerts");
    assert!(received[1].iter().all(|a| a.severity.as_deref() == Some("high")));
    // Not asked again in the same container once Security Hub said it is not enabled.
    assert_eq!(proxy.count("BatchImportFindings"), 1);
}

#[tokio::test]
async fn security_hub_enabled_later_is_asked_again_once_the_wait_is_over() {
    let account = TestAccount::new().await;
    enable_security_hub(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("BatchImportFindings", 401, "InvalidAccessException"));
    let through = account.through(&proxy);
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[]);
    let patient = SecurityHubFindings::new(through.securityhub(), through.sts());
    let ports = ports(&account, &config, Some(Box::new(patient.asking_again_after(std::time::Duration::ZERO)))).await;
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let first = one(handle(&config, &ports, &running(&account, &instance), &Invocation::at(Utc::now())).await.unwrap());
    assert_eq!(first.warnings, [NOT_ENABLED]);
    assert!(hub_findings(&account).await.is_empty());

    // Security Hub answers now (enabled meanwhile): the wait over, the container asks again.
    proxy.clear_faults();
    let second =
        one(handle(&config, &ports, &running(&account, &instance), &Invocation::at(Utc::now())).await.unwrap());
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    assert_eq!(proxy.count("BatchImportFindings"), 2);
    assert_eq!(hub_findings(&account).await.len(), 1, "the finding is imported");
}

#[tokio::test]
async fn a_failed_image_of_snapshot_on_stop_is_a_finding() {
    use snapshot_on_stop::{Config, Ec2Client, Ports};
    let account = TestAccount::new().await;
    enable_security_hub(&account).await;
    let instance = account.stopped_instance(&[("amiguard:snapshot-on-stop", "true")]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let through = account.through(&proxy);
    let inbox = AlertInbox::new(&account, true).await;
    let ports: Ports<Ec2Client, DynamoLedger> = Ports {
        ec2: Ec2Client::new(through.ec2()),
        ledger: Some(amiguard_integration_tests::ledger::create(&account).await),
        alerts: Some(SnsAlerts::new(through.sns(), &inbox.topic_arn)),
        region: account.region.clone(),
        findings: Some(findings_of(&account)),
    };
    let config = Config { keep_last: 1, ..Config::default() };
    let stop = |hour: &str| {
        let time = format!("2026-11-27T{hour}:00:00Z");
        amiguard_integration_tests::ec2_says_stopped_at(&instance, &time);
        let mut event = sample_event("snapshot-on-stop.stopped.json");
        event["detail"]["instance-id"] = json!(instance);
        event["time"] = json!(time);
        event
    };
    let first = snapshot_on_stop::handle(&ports, &config, stop("01"), &Invocation::at(Utc::now())).await.unwrap();
    let failed = first.image_id.unwrap();
    let name = format!("amiguard-{instance}-20261127T010000Z");
    proxy.inject(Fault::rewrite_with("DescribeImages", move |answer| {
        amiguard_integration_tests::with_image_state(answer, &name, "failed")
    }));
    let second = snapshot_on_stop::handle(&ports, &config, stop("02"), &Invocation::at(Utc::now())).await.unwrap();
    assert_eq!(second.alerted_images, std::slice::from_ref(&failed));
    assert!(second.warnings.iter().all(|w| !w.contains("Security Hub")), "{:?}", second.warnings);

    let found = hub_findings(&account).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id(), Some(format!("amiguard/{}/failed-image/{failed}", account.region).as_str()));
    assert_eq!(found[0].severity().and_then(|s| s.label()), Some(&SeverityLabel::Medium));
    assert_eq!(found[0].record_state(), Some(&RecordState::Active));
    let resources: Vec<&str> = found[0].resources().iter().map(|r| r.id().unwrap()).collect();
    assert!(resources.iter().any(|r| r.ends_with(&format!("instance/{instance}"))), "{resources:?}");
    assert!(resources.iter().any(|r| r.ends_with(&format!("image/{failed}"))), "{resources:?}");
    assert_eq!(inbox.drain().await.len(), 1, "and its alert");
}

#[tokio::test]
async fn a_hundred_and_one_findings_take_two_calls_and_a_refused_one_is_a_warning_naming_it() {
    let account = TestAccount::new().await;
    enable_security_hub(&account).await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &config, Some(findings_of(&account.through(&proxy)))).await;
    for _ in 0..101 {
        account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    }
    let audit = handle(&config, &ports, &audit_event(&account), &Invocation::at(Utc::now())).await.unwrap();
    assert!(warnings_of(&audit).is_empty(), "{:?}", warnings_of(&audit));
    assert_eq!(proxy.count("BatchImportFindings"), 2, "at most 100 findings a call");
    assert_eq!(hub_findings(&account).await.len(), 101);

    // Security Hub refuses the next one (its FailedFindings): the report says which and why.
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let id = finding_id(&account, &instance, AMAZON_LINUX_AMI);
    let refused = format!(
        r#""FailedFindings": [{{"ErrorCode": "InvalidInput", "ErrorMessage": "refused by the test", "Id": "{id}"}}]"#
    );
    proxy.inject(Fault::rewrite("BatchImportFindings", r#""FailedFindings": []"#, refused));
    let report =
        one(handle(&config, &ports, &running(&account, &instance), &Invocation::at(Utc::now())).await.unwrap());
    assert!(report.alert_message_id.is_some());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains(&id) && w.contains("InvalidInput") && w.contains("refused by the test")),
        "{:?}",
        report.warnings
    );
}
