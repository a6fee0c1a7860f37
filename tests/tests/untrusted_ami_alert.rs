//! untrusted-ami-alert against moto: the real handler, EC2 and SNS, alerts read back through an
//! SQS queue subscribed to the topic.
//!
//! moto gives every fixture AMI the alias `amazon` whatever its owner, and does not share AMIs
//! across accounts, so owner-id rules are tested with explicit account ids: Amazon Linux is owned
//! by 137112412989, RHEL by 309956199498, and images made in the test account by that account.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use amiguard::alert::sns::SnsAlerts;
use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use amiguard::tags;
use amiguard_integration_tests::inbox::AlertInbox;
use amiguard_integration_tests::{
    moto, sample_event, TestAccount, AMAZON_LINUX_AMI, AMAZON_OWNER_ID, RED_HAT_OWNER_ID, RHEL_AMI,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use untrusted_ami_alert::{handle, Config, Ec2Client, Error, InstanceReport, Outcome, Ports, Report, StsIdentity};

fn config(topic_arn: &str, vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    map.insert("ALERT_TOPIC_ARN".into(), topic_arn.into());
    Config::from_env(&move |name: &str| map.get(name).cloned()).unwrap()
}

/// The function's clients on `account`, with its ledger (created from the template on first use).
async fn clients(account: &TestAccount, config: &Config) -> Ports<Ec2Client, SnsAlerts, StsIdentity, DynamoLedger> {
    Ports {
        ec2: Ec2Client::new(account.ec2()),
        alerts: SnsAlerts::new(account.sns(), config.alert_topic_arn.clone()),
        identity: StsIdentity::new(account.sts()),
        ledger: Some(amiguard_integration_tests::ledger::create(account).await),
        region: account.region.clone(),
        findings: None,
    }
}

/// One delivery now (each gets a request id of its own, as Lambda gives).
fn delivery() -> Invocation {
    Invocation::at(Utc::now())
}

fn state_change(account: &TestAccount, instance_id: &str, state: &str) -> Value {
    let mut event = sample_event(&format!("untrusted-ami-alert.{state}.json"));
    event["account"] = json!(account.account_id);
    event["resources"] =
        json!([format!("arn:aws:ec2:{}:{}:instance/{instance_id}", account.region, account.account_id)]);
    event["detail"]["instance-id"] = json!(instance_id);
    event
}

fn one(report: Report) -> InstanceReport {
    match report {
        Report::Instance(report) => report,
        other => panic!("expected one instance's report, got {other:?}"),
    }
}

async fn instance_tags(account: &TestAccount, instance_id: &str) -> HashMap<String, String> {
    let output = account.ec2().describe_instances().instance_ids(instance_id).send().await.unwrap();
    let instance = &output.reservations()[0].instances()[0];
    instance.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap_or_default().to_string())).collect()
}

async fn instance_state(account: &TestAccount, instance_id: &str) -> String {
    let output = account.ec2().describe_instances().instance_ids(instance_id).send().await.unwrap();
    output.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string()
}

/// An AMI made in the test account (owner: the test account, no alias).
async fn own_image(account: &TestAccount, name: &str) -> String {
    let source = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let output = account.ec2().create_image().instance_id(&source).name(name).send().await.unwrap();
    output.image_id().unwrap().to_string()
}

#[tokio::test]
async fn an_instance_of_an_own_ami_is_trusted_and_nothing_is_sent_or_tagged() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop")]);
    let image = own_image(&account, "golden-2026-01").await;
    let instance = account.run_instance(&image, &[]).await;

    let report = one(handle(
        &config,
        &clients(&account, &config).await,
        &state_change(&account, &instance, "running"),
        &delivery(),
    )
    .await
    .unwrap());

    assert_eq!(report.outcome, Outcome::Trusted);
    assert_eq!(report.image_id.as_deref(), Some(image.as_str()));
    assert_eq!(report.owner_id.as_deref(), Some(account.account_id.as_str()));
    assert!(inbox.drain().await.is_empty());
    assert!(!instance_tags(&account, &instance).await.keys().any(|k| tags::is_amiguard(k)));
    assert_eq!(instance_state(&account, &instance).await, "running");
}

#[tokio::test]
async fn a_listed_account_id_is_trusted_by_owner_id_and_never_by_alias() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    // Red Hat's account listed, no alias keyword: RHEL is trusted by its owner id; Amazon Linux
    // (alias amazon in moto, owner 137112412989) is not, alias or not.
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", RED_HAT_OWNER_ID)]);
    let clients = clients(&account, &config).await;
    let rhel = account.run_instance(RHEL_AMI, &[]).await;
    let amazon = account.run_instance(AMAZON_LINUX_AMI, &[]).await;

    let trusted = one(handle(&config, &clients, &state_change(&account, &rhel, "running"), &delivery()).await.unwrap());
    assert_eq!(trusted.outcome, Outcome::Trusted);
    assert_eq!(trusted.owner_id.as_deref(), Some(RED_HAT_OWNER_ID));

    let untrusted =
        one(handle(&config, &clients, &state_change(&account, &amazon, "running"), &delivery()).await.unwrap());
    assert_eq!(untrusted.outcome, Outcome::Untrusted);
    assert_eq!(
        untrusted.reasons,
        [format!(
            "owner {AMAZON_OWNER_ID} (owner alias amazon) is not a trusted provider (trusted: {RED_HAT_OWNER_ID})"
        )]
    );
    assert_eq!(inbox.drain().await.len(), 1);
}

#[tokio::test]
async fn an_unlisted_owner_is_alerted_once_across_pending_running_and_redelivery() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, false).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", &format!("self,{AMAZON_OWNER_ID}"))]);
    let clients = clients(&account, &config).await;
    let instance = account.run_instance(RHEL_AMI, &[("Name", "web-1")]).await;

    let pending =
        one(handle(&config, &clients, &state_change(&account, &instance, "pending"), &delivery()).await.unwrap());
    let running = state_change(&account, &instance, "running");
    let later = one(handle(&config, &clients, &running, &delivery()).await.unwrap());
    let redelivered = one(handle(&config, &clients, &running, &delivery()).await.unwrap());

    assert_eq!(pending.outcome, Outcome::Untrusted);
    assert_eq!(pending.owner_id.as_deref(), Some(RED_HAT_OWNER_ID));
    assert!(pending.alert_message_id.is_some());
    assert!(!pending.already_alerted);
    for report in [&later, &redelivered] {
        assert_eq!(report.outcome, Outcome::Untrusted);
        assert_eq!(report.alert_message_id, None);
        assert!(report.already_alerted);
    }
    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 1, "one alert per instance and image: {alerts:?}");
    let alert = &alerts[0];
    let subject = alert.subject.as_deref().unwrap();
    assert!(subject.contains(&instance) && subject.len() <= 100, "{subject}");
    assert_eq!(alert.severity.as_deref(), Some("high"));
    assert!(alert.body.contains(&format!("Owner:       {RED_HAT_OWNER_ID} (owner alias amazon)")), "{}", alert.body);
    let json_block: Value = serde_json::from_str(alert.body.split("Details (JSON):\n").nth(1).unwrap()).unwrap();
    assert_eq!(json_block["instance_id"], instance);
    assert_eq!(json_block["image_id"], RHEL_AMI);
    assert_eq!(json_block["owner_id"], RED_HAT_OWNER_ID);
    assert_eq!(json_block["owner_alias"], "amazon");
    assert_eq!(json_block["image_name"], "RHEL-9.4.0_HVM-20240605-x86_64-82-Hourly2-GP3");
    assert_eq!(json_block["account"], account.account_id);
    assert_eq!(json_block["region"], account.region);
    assert_eq!(json_block["enforcement"], "none");
    assert_eq!(json_block["reasons"][0], pending.reasons[0]);
    assert!(!instance_tags(&account, &instance).await.keys().any(|k| tags::is_amiguard(k)), "alerts leave no tag");
}

#[tokio::test]
async fn a_deregistered_image_is_alerted_as_unverifiable() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[]);
    let image = own_image(&account, "golden-retired").await;
    let instance = account.run_instance(&image, &[]).await;
    account.ec2().deregister_image().image_id(&image).send().await.unwrap();

    let report = one(handle(
        &config,
        &clients(&account, &config).await,
        &state_change(&account, &instance, "running"),
        &delivery(),
    )
    .await
    .unwrap());

    assert_eq!(report.outcome, Outcome::Untrusted, "even the account's own image: its owner can no longer be verified");
    assert_eq!(report.reasons.len(), 1);
    assert!(report.reasons[0].starts_with("image not visible"), "{:?}", report.reasons);
    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 1);
    // Unverifiable, not proven untrusted: alerted (medium), never enforced on that alone.
    assert_eq!(alerts[0].severity.as_deref(), Some("medium"));
    assert!(alerts[0].body.contains("image not visible"), "{}", alerts[0].body);
}

#[tokio::test]
async fn a_cloudtrail_run_instances_event_reports_each_instance() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", &format!("self,{AMAZON_OWNER_ID}"))]);
    let rhel = account.run_instance(RHEL_AMI, &[]).await;
    let amazon = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let mut event = sample_event("untrusted-ami-alert.cloudtrail-run-instances.json");
    event["account"] = json!(account.account_id);
    event["detail"]["recipientAccountId"] = json!(account.account_id);
    event["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] = json!(rhel);
    event["detail"]["responseElements"]["instancesSet"]["items"][1]["instanceId"] = json!(amazon);
    event["detail"]["responseElements"]["instancesSet"]["items"][1]["imageId"] = json!(AMAZON_LINUX_AMI);

    let report = handle(&config, &clients(&account, &config).await, &event, &delivery()).await.unwrap();

    let Report::Launch { instances, .. } = report else { panic!("expected `instances`, got {report:?}") };
    let verdicts: Vec<(&str, Outcome)> =
        instances.iter().map(|r| (r.instance_id.as_deref().unwrap(), r.outcome)).collect();
    assert_eq!(verdicts, [(rhel.as_str(), Outcome::Untrusted), (amazon.as_str(), Outcome::Trusted)]);
    assert!(instances[0].alert_message_id.is_some());
    assert_eq!(inbox.drain().await.len(), 1);

    let mut failed = sample_event("untrusted-ami-alert.cloudtrail-run-instances-failed.json");
    failed["account"] = json!(account.account_id);
    failed["detail"]["recipientAccountId"] = json!(account.account_id);
    let skipped = one(handle(&config, &clients(&account, &config).await, &failed, &delivery()).await.unwrap());
    assert_eq!(skipped.outcome, Outcome::Skipped);
}

#[tokio::test]
async fn the_audit_lists_exactly_the_untrusted_instances_tags_them_and_never_stops() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(
        &inbox.topic_arn,
        &[("TRUSTED_IMAGE_PROVIDERS", &format!("self,{AMAZON_OWNER_ID}")), ("ENFORCEMENT", "stop")],
    );
    let clients = clients(&account, &config).await;
    let own = own_image(&account, "golden-audit").await; // its source instance runs Amazon Linux
    let trusted_own = account.run_instance(&own, &[]).await;
    let running_rhel = account.run_instance(RHEL_AMI, &[]).await;
    let stopped_amazon = account.stopped_instance(&[]).await; // Amazon Linux, stopped: trusted
    let invisible = account.run_instance("ami-0123456789abcdef0", &[]).await; // no such image
    let gone = account.run_instance(RHEL_AMI, &[]).await;
    account.ec2().terminate_instances().instance_ids(&gone).send().await.unwrap();
    let mut event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    event["account"] = json!(account.account_id);

    let Report::Audit(audit) = handle(&config, &clients, &event, &delivery()).await.unwrap() else {
        panic!("not an audit")
    };

    assert_eq!(audit.outcome, Outcome::Audit);
    assert_eq!(audit.audited, 5, "source, own, RHEL, stopped Amazon Linux, invisible; not the terminated one");
    let mut found: Vec<(&str, Option<&str>)> =
        audit.untrusted.iter().map(|f| (f.instance_id.as_str(), f.owner_id.as_deref())).collect();
    found.sort();
    let mut expected = vec![(running_rhel.as_str(), Some(RED_HAT_OWNER_ID)), (invisible.as_str(), None)];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(audit.alerts_sent, 2);
    let digest = inbox.drain().await;
    assert_eq!(digest.len(), 1, "one digest for the audit: {digest:?}");
    assert!(digest[0].body.contains(&running_rhel) && digest[0].body.contains(&invisible), "{}", digest[0].body);
    for instance in [&running_rhel, &invisible] {
        assert_eq!(instance_state(&account, instance).await, "running", "an audit never stops");
    }
    // Tagged: the proven one (Red Hat's owner is not trusted); the invisible image's owner cannot
    // be verified (medium), so it is alerted and not tagged.
    assert!(instance_tags(&account, &running_rhel).await.contains_key(tags::UNTRUSTED_AMI));
    assert!(!instance_tags(&account, &invisible).await.contains_key(tags::UNTRUSTED_AMI));
    for instance in [&trusted_own, &stopped_amazon] {
        assert!(!instance_tags(&account, instance).await.keys().any(|k| tags::is_amiguard(k)));
    }

    // The next audit finds the same instances but alerts nobody twice.
    let Report::Audit(again) = handle(&config, &clients, &event, &delivery()).await.unwrap() else {
        panic!("not an audit")
    };
    assert_eq!(again.untrusted.len(), 2);
    assert_eq!(again.alerts_sent, 0);
    assert!(inbox.drain().await.is_empty());
}

#[tokio::test]
async fn tag_enforcement_tags_the_instance_with_the_image() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "tag")]);
    let instance = account.run_instance(RHEL_AMI, &[]).await;

    let report = one(handle(
        &config,
        &clients(&account, &config).await,
        &state_change(&account, &instance, "running"),
        &delivery(),
    )
    .await
    .unwrap());

    assert_eq!(serde_json::to_value(report.enforcement).unwrap(), "tagged");
    let tags_now = instance_tags(&account, &instance).await;
    assert_eq!(tags_now.get(tags::UNTRUSTED_AMI), Some(&RHEL_AMI.to_string()));
    assert_eq!(instance_state(&account, &instance).await, "running");
    assert!(inbox.drain().await[0].body.contains(&format!("Enforcement: tagged {}={RHEL_AMI}", tags::UNTRUSTED_AMI)));
}

#[tokio::test]
async fn stop_enforcement_tags_and_stops_a_running_instance() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "stop")]);
    let clients = clients(&account, &config).await;
    let instance = account.run_instance(RHEL_AMI, &[]).await;

    let report =
        one(handle(&config, &clients, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());

    assert_eq!(serde_json::to_value(report.enforcement).unwrap(), "tagged-and-stopped");
    assert!(["stopping", "stopped"].contains(&instance_state(&account, &instance).await.as_str()));
    assert_eq!(instance_tags(&account, &instance).await.get(tags::UNTRUSTED_AMI), Some(&RHEL_AMI.to_string()));
    // A redelivery finds it stopped: nothing more to do, no error, no second alert.
    let again =
        one(handle(&config, &clients, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());
    assert_eq!(serde_json::to_value(again.enforcement).unwrap(), "tagged-not-running");
    assert_eq!(inbox.drain().await.len(), 1);
}

#[tokio::test]
async fn allowed_images_criteria_judge_names_and_ages_by_the_given_clock() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let criteria = r#"[{"ImageProviders": ["amazon"], "ImageNames": ["al2023-ami-*"],
                        "CreationDateCondition": {"MaximumDaysSinceCreated": 365}}]"#;
    let config = config(&inbox.topic_arn, &[("ALLOWED_IMAGES_CRITERIA", criteria)]);
    let clients = clients(&account, &config).await;
    let amazon = account.run_instance(AMAZON_LINUX_AMI, &[]).await; // created 2024-10-10
    let rhel = account.run_instance(RHEL_AMI, &[]).await;
    let at = |y, m, d| -> DateTime<Utc> { Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap() };

    let young =
        one(handle(&config, &clients, &state_change(&account, &amazon, "running"), &Invocation::at(at(2025, 10, 10)))
            .await
            .unwrap());
    assert_eq!(young.outcome, Outcome::Trusted, "exactly 365 days old is still allowed");
    let wrong_name =
        one(handle(&config, &clients, &state_change(&account, &rhel, "running"), &Invocation::at(at(2025, 1, 1)))
            .await
            .unwrap());
    assert_eq!(wrong_name.outcome, Outcome::Untrusted);
    assert!(wrong_name.reasons[0].contains("matches none of the allowed names"), "{:?}", wrong_name.reasons);
    let old =
        one(handle(&config, &clients, &state_change(&account, &amazon, "running"), &Invocation::at(at(2025, 10, 11)))
            .await
            .unwrap());
    assert_eq!(old.reasons, ["image created 2024-10-10T00:00:00Z is older than the 365 days allowed"]);
    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().any(|a| a.severity.as_deref() == Some("medium")), "a trusted owner's old image is medium");
}

#[tokio::test]
async fn a_failed_publish_is_an_error_and_the_retry_alerts() {
    let account = TestAccount::new().await;
    let missing_topic = format!("arn:aws:sns:{}:{}:does-not-exist", account.region, account.account_id);
    let config = config(&missing_topic, &[("TRUSTED_IMAGE_PROVIDERS", "self")]);
    let instance = account.run_instance(RHEL_AMI, &[]).await;

    let err =
        handle(&config, &clients(&account, &config).await, &state_change(&account, &instance, "running"), &delivery())
            .await
            .unwrap_err();

    assert!(matches!(&err, Error::NotGuarded(failures) if failures[0].error.operation == "Publish"), "{err}");
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "AlertNotSent");
    // The claim was given back: the retry (to a topic that exists now) alerts.
    let inbox = AlertInbox::new(&account, true).await;
    let fixed = self::config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self")]);
    let retry = one(handle(
        &fixed,
        &clients(&account, &fixed).await,
        &state_change(&account, &instance, "running"),
        &delivery(),
    )
    .await
    .unwrap());
    assert!(retry.alert_message_id.is_some() && !retry.already_alerted);
    assert_eq!(inbox.drain().await.len(), 1);
}

#[tokio::test]
async fn bad_input_is_an_error_that_sends_and_tags_nothing() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "stop")]);
    let clients = clients(&account, &config).await;
    let instance = account.run_instance(RHEL_AMI, &[]).await;
    let mut wrong_type = state_change(&account, &instance, "running");
    wrong_type["detail"]["instance-id"] = json!(42);
    let mut missing = state_change(&account, &instance, "running");
    missing["detail"].as_object_mut().unwrap().remove("state");

    for payload in [json!("not an event"), json!({}), wrong_type, missing] {
        let err = handle(&config, &clients, &payload, &delivery()).await.unwrap_err();
        assert!(matches!(err, Error::Event(_)), "{err}");
    }
    let stopped =
        one(handle(&config, &clients, &state_change(&account, &instance, "stopped"), &delivery()).await.unwrap());
    assert_eq!(stopped.outcome, Outcome::Skipped);

    assert!(inbox.drain().await.is_empty());
    assert!(!instance_tags(&account, &instance).await.keys().any(|k| tags::is_amiguard(k)));
    assert_eq!(instance_state(&account, &instance).await, "running");
}

// ---- the ledger: alert once, whatever the instance's tags ----

/// The tags a launcher sets to look already alerted and already enforced.
fn forged_tags(image: &str) -> [(&'static str, String); 2] {
    [("amiguard:alerted", image.to_string()), (tags::UNTRUSTED_AMI, image.to_string())]
}

#[tokio::test]
async fn preset_tags_silence_nothing_across_pending_running_redelivery_and_audit() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "tag")]);
    let clients = clients(&account, &config).await;
    let forged = forged_tags(RHEL_AMI);
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let instance = account.run_instance(RHEL_AMI, &forged).await;

    let pending =
        one(handle(&config, &clients, &state_change(&account, &instance, "pending"), &delivery()).await.unwrap());
    let running = state_change(&account, &instance, "running");
    let later = one(handle(&config, &clients, &running, &delivery()).await.unwrap());
    let redelivered = one(handle(&config, &clients, &running, &delivery()).await.unwrap());
    let mut audit_event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    audit_event["account"] = json!(account.account_id);
    let Report::Audit(audit) = handle(&config, &clients, &audit_event, &delivery()).await.unwrap() else {
        panic!("not an audit")
    };

    assert!(pending.alert_message_id.is_some() && !pending.already_alerted, "the forged mark silences nothing");
    assert!(later.already_alerted && redelivered.already_alerted);
    assert_eq!((audit.untrusted.len(), audit.alerts_sent), (1, 0));
    assert_eq!(inbox.drain().await.len(), 1, "exactly one alert");
    for report in [&pending, &later, &redelivered] {
        assert_eq!(
            serde_json::to_value(report.enforcement).unwrap(),
            "tagged",
            "a pre-set tag does not skip enforcement"
        );
    }
}

#[tokio::test]
async fn an_instance_with_fifty_tags_is_alerted_once_and_no_invocation_fails() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "tag")]);
    let clients = clients(&account, &config).await;
    let keys: Vec<String> = (0..50).map(|i| format!("team:tag-{i:02}")).collect();
    let full: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "x")).collect();
    let instance = account.run_instance(RHEL_AMI, &full).await;
    let mut audit_event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    audit_event["account"] = json!(account.account_id);

    let mut reports = Vec::new();
    for state in ["pending", "running", "running"] {
        reports.push(one(handle(&config, &clients, &state_change(&account, &instance, state), &delivery())
            .await
            .unwrap()));
    }
    for _ in 0..2 {
        let Report::Audit(audit) = handle(&config, &clients, &audit_event, &delivery()).await.unwrap() else {
            panic!("not an audit")
        };
        assert_eq!(audit.alerts_sent, 0);
        assert!(audit.warnings.iter().any(|w| w.contains("TagLimitExceeded")), "{:?}", audit.warnings);
    }

    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 1, "one alert, no storm: {alerts:?}");
    assert!(
        alerts[0].body.contains("NOT TAGGED: the tag amiguard:untrusted-ami could not be written"),
        "{}",
        alerts[0].body
    );
    assert!(alerts[0].body.contains("TagLimitExceeded"));
    for report in &reports {
        assert_eq!(serde_json::to_value(report.enforcement).unwrap(), "tag-failed");
        assert!(report.warnings.iter().any(|w| w.contains("TagLimitExceeded")), "{:?}", report.warnings);
    }
    assert!(!instance_tags(&account, &instance).await.contains_key(tags::UNTRUSTED_AMI));
}

#[tokio::test]
async fn an_instance_terminated_before_the_function_ran_is_alerted_once_with_nothing_enforced() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let trusted = format!("self,{AMAZON_OWNER_ID}");
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop"), ("TRUSTED_IMAGE_PROVIDERS", &trusted)]);
    let clients = clients(&account, &config).await;
    // A miner that ran for a minute: gone by the time its event is handled.
    let miner = account.run_instance(RHEL_AMI, &[]).await;
    account.ec2().terminate_instances().instance_ids(&miner).send().await.unwrap();

    let first = one(handle(&config, &clients, &state_change(&account, &miner, "running"), &delivery()).await.unwrap());
    let again = one(handle(&config, &clients, &state_change(&account, &miner, "running"), &delivery()).await.unwrap());

    assert_eq!(first.outcome, Outcome::Untrusted);
    assert_eq!(serde_json::to_value(first.enforcement).unwrap(), "instance-gone");
    assert!(first.alert_message_id.is_some());
    assert!(again.already_alerted && again.alert_message_id.is_none());
    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].body.contains("nothing to tag or stop"), "{}", alerts[0].body);
    let described = account.ec2().describe_instances().instance_ids(&miner).send().await.unwrap();
    let instance = &described.reservations()[0].instances()[0];
    assert!(
        instance.tags().iter().all(|t| t.key() != Some(tags::UNTRUSTED_AMI)),
        "a terminated instance is not tagged"
    );
}

#[tokio::test]
async fn published_cloudtrail_records_each_get_an_answer_never_an_error() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[]);
    let clients = clients(&account, &config).await;
    let answers = [
        ("untrusted-ami-alert.cloudtrail-published-single.json", 1),
        ("untrusted-ami-alert.cloudtrail-published-two-instances.json", 1),
        ("untrusted-ami-alert.cloudtrail-null-response.json", 0),
        ("untrusted-ami-alert.cloudtrail-dry-run.json", 0),
    ];
    for (sample, judged) in answers {
        let mut event = sample_event(sample);
        // As delivered where the function runs: its account and region.
        event["account"] = json!(account.account_id);
        event["detail"]["recipientAccountId"] = json!(account.account_id);
        event["region"] = json!(account.region);
        let report = handle(&config, &clients, &event, &delivery()).await;
        let report = report.unwrap_or_else(|err| panic!("{sample}: {err}"));
        let instances = match report {
            Report::Launch { instances, .. } => instances,
            Report::Instance(one) => vec![one],
            Report::Audit(_) => panic!("{sample}: an audit"),
        };
        let untrusted = instances.iter().filter(|i| i.outcome == Outcome::Untrusted).count();
        assert_eq!(untrusted, judged, "{sample}: {instances:?}");
        if judged == 0 {
            assert!(instances.iter().all(|i| i.outcome == Outcome::Skipped), "{sample}: {instances:?}");
        }
    }
    // The instances are gone (never in this account): judged by each record's image, alerted once
    // per instance and image (the two records name two images).
    assert_eq!(inbox.drain().await.len(), 2);
}

#[tokio::test]
async fn an_untrusted_image_copied_into_the_account_is_alerted_with_its_chain() {
    use amiguard_integration_tests::proxy::{Fault, Proxy};
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, false).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", &format!("self,{AMAZON_OWNER_ID}"))]);
    // `copy-image` of Red Hat's public image: the copy is owned by this account (`self`).
    let copy = account.copy_image(RHEL_AMI, "rhel-copied-in").await;
    let instance = account.run_instance(&copy, &[]).await;
    // EC2 records the copy's lineage (moto does not: the proxy answers as EC2 would).
    let proxy = Proxy::start(&moto().endpoint).await;
    let lineage = format!(
        "<imageAncestryEntrySet><item><imageId>{copy}</imageId><sourceImageId>{RHEL_AMI}</sourceImageId><sourceImageRegion>{}</sourceImageRegion></item><item><imageId>{RHEL_AMI}</imageId></item></imageAncestryEntrySet>",
        account.region
    );
    proxy.inject(Fault::respond(
        "GetImageAncestry",
        amiguard_integration_tests::ec2_answer("GetImageAncestry", &lineage),
    ));
    let through = account.through(&proxy);
    let clients = Ports { ec2: Ec2Client::new(through.ec2()), ..clients(&account, &config).await };

    let report =
        one(handle(&config, &clients, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());

    assert_eq!(report.outcome, Outcome::Untrusted);
    assert_eq!(report.image_id.as_deref(), Some(copy.as_str()));
    let chain = format!("{copy} <- {RHEL_AMI}");
    assert!(report.reasons.iter().any(|r| r.contains(&chain) && r.contains(RED_HAT_OWNER_ID)), "{:?}", report.reasons);
    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity.as_deref(), Some("high"));
    assert!(alerts[0].body.contains(&chain), "{}", alerts[0].body);
}

#[tokio::test]
async fn the_audit_of_four_untrusted_instances_sends_one_digest_naming_all_four() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, false).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", &format!("self,{AMAZON_OWNER_ID}"))]);
    let clients = clients(&account, &config).await;
    let mut untrusted = Vec::new();
    for image in [RHEL_AMI, RHEL_AMI, RHEL_AMI, "ami-0123456789abcdef0"] {
        untrusted.push(account.run_instance(image, &[]).await);
    }
    account.run_instance(AMAZON_LINUX_AMI, &[]).await; // trusted: not in the digest
    let mut event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    event["account"] = json!(account.account_id);

    let Report::Audit(audit) = handle(&config, &clients, &event, &delivery()).await.unwrap() else { panic!() };

    assert_eq!(audit.untrusted.len(), 4);
    let messages = inbox.drain().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let digest = &messages[0];
    assert_eq!(
        digest.subject.as_deref(),
        Some(format!("amiguard: untrusted AMIs on 4 instances ({} {})", account.account_id, account.region).as_str())
    );
    assert_eq!(digest.severity.as_deref(), Some("high"));
    for instance in &untrusted {
        assert_eq!(digest.body.matches(&format!("  - {instance} (")).count(), 1, "{instance}: {}", digest.body);
    }
    assert!(
        digest.body.contains(&format!("Image {RHEL_AMI}")) && digest.body.contains("3 instances:"),
        "{}",
        digest.body
    );
    // Nothing new: nothing sent.
    let Report::Audit(again) = handle(&config, &clients, &event, &delivery()).await.unwrap() else { panic!() };
    assert_eq!(again.alerts_sent, 0);
    assert!(inbox.drain().await.is_empty());
}

#[tokio::test]
async fn ten_launches_of_one_untrusted_image_in_an_hour_send_at_most_four_messages() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(
        &inbox.topic_arn,
        &[("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "tag"), ("FOLD_LAUNCH_ALERTS", "true")],
    );
    let clients = clients(&account, &config).await;
    let mut reports = Vec::new();
    let mut instances = Vec::new();
    // All within one clock hour, whenever the test runs.
    let in_the_hour = |minute: u32| Invocation::at(Utc.with_ymd_and_hms(2026, 12, 2, 10, minute, 0).unwrap());
    for minute in 0..10 {
        let instance = account.run_instance(RHEL_AMI, &[]).await;
        let event = state_change(&account, &instance, "running");
        reports.push(one(handle(&config, &clients, &event, &in_the_hour(minute)).await.unwrap()));
        instances.push(instance);
    }
    let messages = inbox.drain().await;
    assert_eq!(messages.len(), 4, "three alerts and the follow-up: {messages:?}");
    assert!(
        messages[3].body.starts_with(&format!("This is launch 4 of image {RHEL_AMI} within the hour")),
        "{}",
        messages[3].body
    );
    assert!(reports[..4].iter().all(|r| r.alert_message_id.is_some() && !r.alert_folded));
    assert!(reports[4..].iter().all(|r| r.alert_message_id.is_none() && r.alert_folded), "{reports:?}");
    // Folding silences no enforcement: every instance carries the tag.
    for instance in &instances {
        assert!(instance_tags(&account, instance).await.contains_key(tags::UNTRUSTED_AMI), "{instance}");
    }
    // Two of the folded ones are gone before the audit (an audit lists only live instances):
    // the ledger kept their alerts. The digest lists the six that were folded, and only them.
    account.ec2().terminate_instances().instance_ids(&instances[8]).instance_ids(&instances[9]).send().await.unwrap();
    let gone = [instances[8].clone(), instances[9].clone()];
    for instance in &gone {
        assert_eq!(instance_state(&account, instance).await, "terminated");
    }
    let mut event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    event["account"] = json!(account.account_id);
    let Report::Audit(audit) = handle(&config, &clients, &event, &delivery()).await.unwrap() else { panic!() };
    assert_eq!(audit.alerts_sent, 6);
    let digest = inbox.drain().await;
    assert_eq!(digest.len(), 1);
    for (n, instance) in instances.iter().enumerate() {
        assert_eq!(digest[0].body.contains(instance.as_str()), n >= 4, "{instance}");
    }
    // Each once: the next audit has nothing to send.
    let Report::Audit(again) = handle(&config, &clients, &event, &delivery()).await.unwrap() else { panic!() };
    assert_eq!(again.alerts_sent, 0);
    assert!(inbox.drain().await.is_empty());
}

/// Every item of the test account's ledger, as DynamoDB holds it.
async fn ledger_items(account: &TestAccount) -> usize {
    let scan = account.dynamodb().scan().table_name(amiguard_integration_tests::ledger::TABLE).send().await.unwrap();
    scan.items().len()
}

#[tokio::test]
async fn a_dry_run_names_the_untrusted_launch_and_sends_tags_stops_and_writes_nothing() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let vars = [("TRUSTED_IMAGE_PROVIDERS", "self"), ("ENFORCEMENT", "stop"), ("FOLD_LAUNCH_ALERTS", "true")];
    let dry = config(&inbox.topic_arn, &[vars[0], vars[1], vars[2], ("DRY_RUN", "true")]);
    let clients = clients(&account, &dry).await;
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let mut cloudtrail = sample_event("untrusted-ami-alert.cloudtrail-run-instances.json");
    cloudtrail["account"] = json!(account.account_id);
    cloudtrail["detail"]["recipientAccountId"] = json!(account.account_id);
    let items = &mut cloudtrail["detail"]["responseElements"]["instancesSet"]["items"];
    items.as_array_mut().unwrap().truncate(1);
    items[0]["instanceId"] = json!(instance);
    items[0]["imageId"] = json!(AMAZON_LINUX_AMI);
    let mut audit_event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    audit_event["account"] = json!(account.account_id);

    let launch = one(handle(&dry, &clients, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());
    let Report::Launch { instances, .. } = handle(&dry, &clients, &cloudtrail, &delivery()).await.unwrap() else {
        panic!("not a launch report")
    };
    let Report::Audit(audit) = handle(&dry, &clients, &audit_event, &delivery()).await.unwrap() else {
        panic!("not an audit")
    };

    for report in [&launch, &instances[0]] {
        assert_eq!((report.outcome, report.dry_run), (Outcome::Untrusted, true));
        assert_eq!(report.instance_id.as_deref(), Some(instance.as_str()));
        assert!(report.reasons[0].contains(AMAZON_OWNER_ID), "{:?}", report.reasons);
        let json = serde_json::to_value(report).unwrap();
        assert_eq!(json["would"], json!(["tag", "stop", "alert"]), "{json}");
        assert_eq!((report.alert_message_id.as_deref(), report.already_alerted), (None, false));
    }
    assert!(audit.dry_run);
    assert_eq!(audit.untrusted.iter().map(|f| f.instance_id.as_str()).collect::<Vec<_>>(), [instance.as_str()]);
    assert_eq!((audit.alerts_sent, audit.alerts_would_send), (0, Some(1)));
    assert!(inbox.drain().await.is_empty(), "nothing published");
    assert!(!instance_tags(&account, &instance).await.keys().any(|k| tags::is_amiguard(k)), "nothing tagged");
    assert_eq!(instance_state(&account, &instance).await, "running", "nothing stopped");
    assert_eq!(ledger_items(&account).await, 0, "no claim, slot, fold record or lease written");

    // The same launch, for real: the alert, the tag and the stop happen (the dry run silenced nothing).
    let real = config(&inbox.topic_arn, &vars);
    let acted = one(handle(&real, &clients, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());
    assert!(acted.alert_message_id.is_some() && !acted.dry_run && acted.would.is_empty());
    assert_eq!(inbox.drain().await.len(), 1);
    assert!(ledger_items(&account).await > 0);
}
