//! untrusted-ami-alert acts only on what it verified (issue 21), against moto: `self` is STS's
//! account, never the event's; enforcement (tag, stop) only on a `high` verdict; real lineages
//! (an ancestor in another region, a throttled answer, a failure) through the fault proxy; a
//! repeated page token fails the audit; the audit's report line stays under 256 KB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use amiguard::alert::sns::SnsAlerts;
use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use amiguard::tags;
use amiguard_integration_tests::inbox::AlertInbox;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::{
    ec2_answer, moto, sample_event, TestAccount, AMAZON_LINUX_AMI, RED_HAT_OWNER_ID, RHEL_AMI,
};
use chrono::Utc;
use serde_json::{json, Value};
use untrusted_ami_alert::{handle, Config, Ec2Client, Error, InstanceReport, Outcome, Ports, Report, StsIdentity};

const WEST: &str = "us-west-2";
/// Another account, named by a forged event.
const STRANGER: &str = "999988887777";

fn config(topic_arn: &str, vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    map.insert("ALERT_TOPIC_ARN".into(), topic_arn.into());
    Config::from_env(&move |name: &str| map.get(name).cloned()).unwrap()
}

/// The function's ports on `account`, every call through `proxy`; `self` is what STS answers.
async fn ports(
    account: &TestAccount,
    proxy: &Proxy,
    config: &Config,
) -> Ports<Ec2Client, SnsAlerts, StsIdentity, DynamoLedger> {
    amiguard_integration_tests::ledger::create(account).await;
    let through = account.through(proxy);
    Ports {
        ec2: Ec2Client::new(through.ec2()),
        alerts: SnsAlerts::new(through.sns(), config.alert_topic_arn.clone()),
        identity: StsIdentity::new(through.sts()),
        ledger: Some(amiguard_integration_tests::ledger::on(&through)),
        region: account.region.clone(),
        findings: None,
    }
}

fn delivery() -> Invocation {
    Invocation::at(Utc::now())
}

fn state_change(account: &TestAccount, instance_id: &str, state: &str) -> Value {
    let mut event = sample_event(&format!("untrusted-ami-alert.{state}.json"));
    event["account"] = json!(account.account_id);
    event["detail"]["instance-id"] = json!(instance_id);
    event
}

fn one(report: Report) -> InstanceReport {
    match report {
        Report::Instance(report) => report,
        other => panic!("expected one instance's report, got {other:?}"),
    }
}

async fn instance_state(account: &TestAccount, instance_id: &str) -> String {
    let output = account.ec2().describe_instances().instance_ids(instance_id).send().await.unwrap();
    output.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string()
}

async fn amiguard_tags(account: &TestAccount, instance_id: &str) -> Vec<String> {
    let output = account.ec2().describe_instances().instance_ids(instance_id).send().await.unwrap();
    let instance = &output.reservations()[0].instances()[0];
    instance.tags().iter().filter_map(|t| t.key()).filter(|k| tags::is_amiguard(k)).map(str::to_string).collect()
}

/// An AMI made in the test account in `region` (CreateImage of an Amazon Linux instance there).
async fn own_image_in(account: &TestAccount, region: &str, name: &str) -> String {
    let ec2 = account.ec2_in(region);
    let source = account.run_instance_in(region, AMAZON_LINUX_AMI).await;
    ec2.create_image().instance_id(&source).name(name).send().await.unwrap().image_id().unwrap().to_string()
}

/// `copy-image` of `source` in `from` into the test account's region.
async fn copied_from(account: &TestAccount, source: &str, from: &str, name: &str) -> String {
    let copy = account.ec2().copy_image().source_image_id(source).source_region(from).name(name).send().await.unwrap();
    copy.image_id().unwrap().to_string()
}

/// One entry of a `GetImageAncestry` answer: the image, its source and the source's region, its
/// owner alias.
fn entry(image: &str, source: Option<(&str, &str)>, alias: Option<&str>) -> String {
    let source = source
        .map(|(id, region)| {
            format!("<sourceImageId>{id}</sourceImageId><sourceImageRegion>{region}</sourceImageRegion>")
        })
        .unwrap_or_default();
    let alias = alias.map(|a| format!("<imageOwnerAlias>{a}</imageOwnerAlias>")).unwrap_or_default();
    format!("<item><imageId>{image}</imageId>{source}{alias}</item>")
}

/// EC2 records `image`'s lineage as `entries` (moto does not: the proxy answers as EC2 would).
fn lineage(proxy: &Proxy, image: &str, entries: &[String]) {
    let set = format!("<imageAncestryEntrySet>{}</imageAncestryEntrySet>", entries.concat());
    proxy.inject(Fault::respond("GetImageAncestry", ec2_answer("GetImageAncestry", &set)).when_body_contains(image));
}

/// DescribeImages shows `copy`'s source, as EC2 does for a copy (moto leaves it out).
fn shows_source(proxy: &Proxy, copy: &str, source: &str, region: &str) {
    let id = format!("<imageId>{copy}</imageId>");
    let with = format!("{id}<sourceImageId>{source}</sourceImageId><sourceImageRegion>{region}</sourceImageRegion>");
    proxy.inject(Fault::rewrite("DescribeImages", id, with));
}

/// The calls that change something: EC2's tag and stop, and SNS's publish.
fn changes(proxy: &Proxy) -> Vec<String> {
    let acting = ["CreateTags", "StopInstances", "Publish"];
    proxy.calls().into_iter().filter(|c| acting.contains(&c.action.as_str())).map(|c| c.action).collect()
}

// ---- item 5: `self` comes from STS, never from the event ----

#[tokio::test]
async fn an_event_naming_another_account_is_refused_and_changes_nothing_even_with_enforcement_stop() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop")]); // amazon,self
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    let image = own_image_in(&account, &account.region, "golden-2026").await;
    let instance = account.run_instance(&image, &[]).await;

    let mut forged_state_change = state_change(&account, &instance, "running");
    forged_state_change["account"] = json!(STRANGER);
    let mut cloudtrail = sample_event("untrusted-ami-alert.cloudtrail-run-instances.json");
    let items = &mut cloudtrail["detail"]["responseElements"]["instancesSet"]["items"];
    items.as_array_mut().unwrap().truncate(1);
    items[0]["instanceId"] = json!(instance);
    items[0]["imageId"] = json!(image);
    cloudtrail["account"] = json!(account.account_id);
    let mut forged_recipient = cloudtrail.clone();
    forged_recipient["detail"]["recipientAccountId"] = json!(STRANGER);
    let mut forged_envelope = cloudtrail.clone();
    forged_envelope["account"] = json!(STRANGER);
    forged_envelope["detail"]["recipientAccountId"] = json!(account.account_id);
    let mut forged_audit = sample_event("untrusted-ami-alert.scheduled-audit.json");
    forged_audit["account"] = json!(STRANGER);

    for (what, event) in [
        ("state change", forged_state_change),
        ("CloudTrail recipientAccountId", forged_recipient),
        ("CloudTrail account", forged_envelope),
        ("audit", forged_audit),
    ] {
        let err = handle(&config, &ports, &event, &delivery()).await.expect_err(what);
        let message = err.to_string();
        assert!(message.contains(STRANGER) && message.contains(&account.account_id), "{what}: {message}");
        assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "EventForAnotherAccount", "{what}");
    }

    assert_eq!(changes(&proxy), Vec::<String>::new(), "no tag, no stop, no publish");
    assert_eq!(instance_state(&account, &instance).await, "running");
    assert!(amiguard_tags(&account, &instance).await.is_empty());
    assert!(inbox.drain().await.is_empty());
    // The same launch for this account: its own image, trusted by `self` as STS says it.
    let mut ours = cloudtrail;
    ours["detail"]["recipientAccountId"] = json!(account.account_id);
    let Report::Launch { instances, .. } = handle(&config, &ports, &ours, &delivery()).await.unwrap() else {
        panic!("not a launch")
    };
    assert_eq!(instances[0].outcome, Outcome::Trusted, "{:?}", instances[0].reasons);
    assert_eq!(proxy.count("GetCallerIdentity"), 1, "STS once per container");
}

#[tokio::test]
async fn an_event_without_an_account_is_judged_as_stss_account() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    let image = own_image_in(&account, &account.region, "golden-2026").await;
    let instance = account.run_instance(&image, &[]).await;
    let mut event = state_change(&account, &instance, "running");
    event.as_object_mut().unwrap().remove("account");

    let report = one(handle(&config, &ports, &event, &delivery()).await.unwrap());

    assert_eq!(report.outcome, Outcome::Trusted, "{:?}", report.reasons);
    assert_eq!(instance_state(&account, &instance).await, "running");
    assert!(inbox.drain().await.is_empty());
}

// ---- item 6: enforcement only on what is proven; lineages read where they are ----

#[tokio::test]
async fn an_own_image_copied_from_another_region_is_judged_by_its_sources_owner_there() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    // The account's golden image, built in us-west-2 and copied here (a DR or multi-region setup).
    let golden = own_image_in(&account, WEST, "golden-west").await;
    let copy = copied_from(&account, &golden, WEST, "golden-east").await;
    lineage(&proxy, &copy, &[entry(&copy, Some((&golden, WEST)), None), entry(&golden, None, None)]);
    shows_source(&proxy, &copy, &golden, WEST);
    let instance = account.run_instance(&copy, &[]).await;

    let report =
        one(handle(&config, &ports, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());

    assert_eq!(report.outcome, Outcome::Trusted, "its source's owner (this account) is read in {WEST}: {report:?}");
    assert_eq!(instance_state(&account, &instance).await, "running");
    assert!(amiguard_tags(&account, &instance).await.is_empty());
    assert!(inbox.drain().await.is_empty());
    let west = proxy.calls().into_iter().filter(|c| c.action == "DescribeImages" && c.body.contains(&golden)).count();
    assert!(west >= 1, "the source was described (in its region)");
}

#[tokio::test]
async fn a_copy_whose_ancestor_in_another_region_is_untrusted_is_high_and_stopped() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop"), ("TRUSTED_IMAGE_PROVIDERS", "self")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    // Red Hat's image copied into the account in us-west-2, then copied here.
    let west_copy = account
        .ec2_in(WEST)
        .copy_image()
        .source_image_id(RHEL_AMI)
        .source_region(WEST)
        .name("rhel-west")
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    let copy = copied_from(&account, &west_copy, WEST, "rhel-east").await;
    let entries = [
        entry(&copy, Some((&west_copy, WEST)), None),
        entry(&west_copy, Some((RHEL_AMI, WEST)), None),
        entry(RHEL_AMI, None, None),
    ];
    lineage(&proxy, &copy, &entries);
    let instance = account.run_instance(&copy, &[]).await;

    let report =
        one(handle(&config, &ports, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());

    assert_eq!(report.outcome, Outcome::Untrusted);
    assert_eq!(serde_json::to_value(report.severity).unwrap(), "high", "{:?}", report.reasons);
    let chain = format!("{copy} <- {west_copy} <- {RHEL_AMI}");
    assert!(report.reasons.iter().any(|r| r.contains(&chain) && r.contains(RED_HAT_OWNER_ID)), "{:?}", report.reasons);
    assert_eq!(serde_json::to_value(report.enforcement).unwrap(), "tagged-and-stopped");
    assert!(["stopping", "stopped"].contains(&instance_state(&account, &instance).await.as_str()));
}

/// An app image built from the account's golden image, itself built from Amazon Linux: a trusted
/// lineage, as EC2 would record it.
async fn app_image_with_a_trusted_lineage(account: &TestAccount, proxy: &Proxy) -> String {
    let golden = own_image_in(account, &account.region, "golden").await;
    let builder = account.run_instance(&golden, &[]).await;
    let app = account.ec2().create_image().instance_id(&builder).name("app").send().await.unwrap();
    let app = app.image_id().unwrap().to_string();
    let region = account.region.as_str();
    let entries = [
        entry(&app, Some((&golden, region)), None),
        entry(&golden, Some((AMAZON_LINUX_AMI, region)), None),
        entry(AMAZON_LINUX_AMI, None, Some("amazon")),
    ];
    lineage(proxy, &app, &entries);
    app
}

#[tokio::test]
async fn a_throttled_ancestry_is_retried_then_judged_and_a_complete_one_is_asked_once() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    // Throttled twice, then answered (injected first, so it answers first).
    proxy.inject(Fault::error("GetImageAncestry", 503, "RequestLimitExceeded").times(2));
    let app = app_image_with_a_trusted_lineage(&account, &proxy).await;
    let instance = account.run_instance(&app, &[]).await;

    for state in ["pending", "running"] {
        let report =
            one(handle(&config, &ports, &state_change(&account, &instance, state), &delivery()).await.unwrap());
        assert_eq!(report.outcome, Outcome::Trusted, "{state}: {:?}", report.reasons);
    }

    assert_eq!(proxy.count("GetImageAncestry"), 3, "two throttled, one answer, then the container's cache");
    assert_eq!(changes(&proxy), Vec::<String>::new());
    assert_eq!(instance_state(&account, &instance).await, "running");
    assert!(inbox.drain().await.is_empty());
}

#[tokio::test]
async fn an_unreadable_lineage_is_medium_alerted_and_neither_tagged_nor_stopped_unless_told_to() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    proxy.inject(Fault::error("GetImageAncestry", 400, "UnauthorizedOperation"));
    let image = own_image_in(&account, &account.region, "golden").await;
    let instance = account.run_instance(&image, &[]).await;

    let report =
        one(handle(&config, &ports, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());
    let again = one(handle(&config, &ports, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());

    assert_eq!(report.outcome, Outcome::Untrusted);
    assert_eq!(serde_json::to_value(report.severity).unwrap(), "medium");
    assert!(report.reasons[0].contains("provenance cannot be verified"), "{:?}", report.reasons);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["enforcement"], "withheld", "{json}");
    let why = json["why_not_enforced"].as_str().unwrap_or_default();
    assert!(why.contains("not proven untrusted") && why.contains("ENFORCE_UNVERIFIABLE"), "{json}");
    assert_eq!(instance_state(&account, &instance).await, "running", "an unverifiable verdict stops nothing");
    assert!(amiguard_tags(&account, &instance).await.is_empty(), "nor tags");
    let alerts = inbox.drain().await;
    assert_eq!(alerts.len(), 1, "alerted, once");
    assert_eq!(alerts[0].severity.as_deref(), Some("medium"));
    assert!(alerts[0].body.contains("Enforcement: none: not proven untrusted"), "{}", alerts[0].body);
    assert!(again.already_alerted);
    assert_eq!(proxy.count("GetImageAncestry"), 2, "a failed answer is not kept");

    // ENFORCE_UNVERIFIABLE=true: the operator's choice to act on it all the same.
    let told = self::config(&inbox.topic_arn, &[("ENFORCEMENT", "stop"), ("ENFORCE_UNVERIFIABLE", "true")]);
    let enforced =
        one(handle(&told, &ports, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());
    assert_eq!(serde_json::to_value(enforced.enforcement).unwrap(), "tagged-and-stopped");
    assert!(["stopping", "stopped"].contains(&instance_state(&account, &instance).await.as_str()));
}

#[tokio::test]
async fn a_trusted_owners_image_failing_a_name_condition_is_alerted_not_stopped() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let criteria = r#"[{"ImageProviders": ["self"], "ImageNames": ["golden-*"]}]"#;
    let config = config(&inbox.topic_arn, &[("ENFORCEMENT", "stop"), ("ALLOWED_IMAGES_CRITERIA", criteria)]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    let image = own_image_in(&account, &account.region, "adhoc-build").await;
    let instance = account.run_instance(&image, &[]).await;

    let report =
        one(handle(&config, &ports, &state_change(&account, &instance, "running"), &delivery()).await.unwrap());

    assert_eq!(serde_json::to_value(report.severity).unwrap(), "medium");
    assert_eq!(serde_json::to_value(report.enforcement).unwrap(), "withheld");
    assert_eq!(instance_state(&account, &instance).await, "running");
    assert!(amiguard_tags(&account, &instance).await.is_empty());
    assert_eq!(inbox.drain().await.len(), 1);
}

// ---- item 8: a listing that repeats a page token fails the audit, and no digest goes out ----

/// Every answer of `action` hands back the same page token: moto's listing first, then (asked
/// for the next page) an empty page with that token again. `set` is the answer's list element.
fn repeats_its_token(proxy: &Proxy, action: &str, set: &str) {
    let next_page = ec2_answer(action, &format!("<{set}/><nextToken>again</nextToken>"));
    proxy.inject(Fault::respond(action, next_page).when_body_contains("NextToken=again"));
    let end = format!("</{action}Response>");
    proxy.inject(Fault::rewrite(action, end.clone(), format!("<nextToken>again</nextToken>{end}")));
}

#[tokio::test]
async fn a_repeated_page_token_fails_the_audit_naming_it_and_sends_no_digest() {
    for action in ["DescribeInstances", "DescribeImages", "DescribeInstanceImageMetadata"] {
        let account = TestAccount::new().await;
        let inbox = AlertInbox::new(&account, true).await;
        let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self")]);
        let proxy = Proxy::start(&moto().endpoint).await;
        let ports = ports(&account, &proxy, &config).await;
        account.run_instance(RHEL_AMI, &[]).await;
        let invisible = account.run_instance("ami-0123456789abcdef0", &[]).await;
        if action == "DescribeInstanceImageMetadata" {
            // moto lacks it: EC2's answer for the instance whose image is not visible.
            let item = format!(
                "<instanceImageMetadataSet><item><instanceId>{invisible}</instanceId><imageMetadata><imageId>ami-0123456789abcdef0</imageId><imageOwnerId>111122223333</imageOwnerId></imageMetadata></item></instanceImageMetadataSet><nextToken>again</nextToken>"
            );
            proxy.inject(Fault::respond(action, ec2_answer(action, &item)));
        } else if action == "DescribeInstances" {
            repeats_its_token(&proxy, action, "reservationSet");
        } else {
            repeats_its_token(&proxy, action, "imagesSet");
        }
        let mut event = sample_event("untrusted-ami-alert.scheduled-audit.json");
        event["account"] = json!(account.account_id);

        let err = handle(&config, &ports, &event, &delivery()).await.expect_err(action);

        let message = err.to_string();
        assert!(message.contains("RepeatedNextToken") && message.contains(action), "{action}: {message}");
        assert!(matches!(&err, Error::Aws(aws) if aws.operation == action), "{action}: {err:?}");
        assert_eq!(proxy.count("Publish"), 0, "{action}: no digest");
        assert!(inbox.drain().await.is_empty(), "{action}");
    }
}

// ---- item 9: the audit's report line stays under 256 KB, with the true counts ----

#[tokio::test]
async fn an_audit_of_1500_untrusted_instances_logs_a_line_under_256_kb_with_the_true_counts() {
    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let config = config(&inbox.topic_arn, &[("TRUSTED_IMAGE_PROVIDERS", "self")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = ports(&account, &proxy, &config).await;
    let run = account
        .ec2()
        .run_instances()
        .image_id(RHEL_AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1500)
        .max_count(1500)
        .send()
        .await
        .unwrap();
    assert_eq!(run.instances().len(), 1500);
    let mut event = sample_event("untrusted-ami-alert.scheduled-audit.json");
    event["account"] = json!(account.account_id);

    let report = handle(&config, &ports, &event, &delivery()).await.unwrap();

    let line = serde_json::to_string(&report).unwrap();
    assert!(line.len() < 256 * 1024, "the report line is {} bytes", line.len());
    let json: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((json["audited"].as_u64(), json["alerts_sent"].as_u64()), (Some(1500), Some(1500)));
    assert_eq!(json["counts"]["untrusted"], 1500, "{}", json["counts"]);
    assert!(json["untrusted"].as_array().unwrap().len() < 1500);
    let full_lists = json["full_lists"].as_str().unwrap_or_default();
    assert!(full_lists.contains("digest") && full_lists.contains("alert#"), "{full_lists}");
    assert_eq!(proxy.count("Publish"), 30, "the digest in parts of 50");
    assert_eq!(inbox.drain().await.len(), 30);
}
