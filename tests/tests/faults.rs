//! Fault injection: a proxy between the SDK and moto throttles, fails or cuts chosen calls, and
//! each scenario asserts the emulator's state afterwards: nothing lost, nothing half-done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::{ledger, moto, sample_event, TestAccount};
use serde_json::{json, Value};
use snapshot_on_stop::{Ec2Client, SnapshotScope};

/// The sample stop event, for `instance_id`, at `time`; EC2 says the instance stopped then.
fn stop_event(instance_id: &str, time: &str) -> Value {
    amiguard_integration_tests::ec2_says_stopped_at(instance_id, time);
    let mut event = sample_event("snapshot-on-stop.stopped.json");
    event["detail"]["instance-id"] = json!(instance_id);
    event["time"] = json!(time);
    event
}

fn snapshot_on_stop_config() -> snapshot_on_stop::Config {
    snapshot_on_stop::Config { scope: SnapshotScope::Tagged, keep_last: 2, ..Default::default() }
}

const OPT_IN: (&str, &str) = ("amiguard:snapshot-on-stop", "true");

/// snapshot-on-stop's clients, every call (EC2 and the ledger) through `proxy`.
async fn snapshot_on_stop_clients(
    account: &TestAccount,
    proxy: &Proxy,
) -> snapshot_on_stop::Ports<Ec2Client, DynamoLedger> {
    ledger::create(account).await;
    let through = account.through(proxy);
    snapshot_on_stop::Ports {
        ec2: Ec2Client::new(through.ec2()),
        ledger: Some(ledger::on(&through)),
        alerts: None,
        region: account.region.clone(),
        findings: None,
    }
}

fn delivery() -> Invocation {
    Invocation::at(chrono::Utc::now())
}

#[tokio::test]
async fn snapshot_on_stop_when_create_image_fails_returns_an_error_and_leaves_no_template() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("CreateImage", 500, "InternalError"));
    let ec2 = snapshot_on_stop_clients(&account, &proxy).await;

    let err = snapshot_on_stop::handle(
        &ec2,
        &snapshot_on_stop_config(),
        stop_event(&instance, "2026-11-27T01:00:00Z"),
        &delivery(),
    )
    .await
    .unwrap_err();

    assert!(err.to_string().contains("InternalError"), "{err}");
    assert!(proxy.count("CreateImage") > 1, "a 500 is retried before giving up");
    let images = account.ec2().describe_images().owners("self").send().await.unwrap();
    assert!(images.images().is_empty());
    let templates = account.ec2().describe_launch_templates().send().await.unwrap();
    assert!(templates.launch_templates().is_empty(), "no launch template may point at a missing image");
}

#[tokio::test]
async fn snapshot_on_stop_when_tagging_fails_the_next_delivery_completes_it_with_the_same_image() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let event = stop_event(&instance, "2026-11-27T02:00:00Z");
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("CreateTags", 400, "UnauthorizedOperation"));
    let through_proxy = snapshot_on_stop_clients(&account, &proxy).await;

    let first = snapshot_on_stop::handle(&through_proxy, &snapshot_on_stop_config(), event.clone(), &delivery()).await;
    assert!(first.unwrap_err().to_string().contains("UnauthorizedOperation"));
    proxy.clear_faults();
    let second =
        snapshot_on_stop::handle(&through_proxy, &snapshot_on_stop_config(), event, &delivery()).await.unwrap();

    assert_eq!(second.outcome, snapshot_on_stop::Outcome::AlreadyCreated);
    let images = account.ec2().describe_images().owners("self").send().await.unwrap();
    assert_eq!(images.images().len(), 1, "one image, not two");
    let image = &images.images()[0];
    let snapshot_id = image.block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap();
    let snapshot = account.ec2().describe_snapshots().snapshot_ids(snapshot_id).send().await.unwrap();
    let tagged = snapshot.snapshots()[0]
        .tags()
        .iter()
        .any(|t| t.key() == Some("amiguard:image") && t.value() == image.image_id());
    assert!(tagged, "the redelivery tagged the snapshot");
    assert!(second.launch_template.is_some());
}

/// One stop of `instance` at `time`: its image.
async fn stop(
    clients: &snapshot_on_stop::Ports<Ec2Client, DynamoLedger>,
    config: &snapshot_on_stop::Config,
    instance: &str,
    time: &str,
) -> String {
    let report = snapshot_on_stop::handle(clients, config, stop_event(instance, time), &delivery()).await.unwrap();
    report.image_id.unwrap()
}

#[tokio::test]
async fn snapshot_on_stop_an_ami_event_without_a_usable_ledger_fails_and_changes_nothing() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let clients = snapshot_on_stop_clients(&account, &proxy).await;
    let keep_one = snapshot_on_stop::Config { keep_last: 1, ..snapshot_on_stop_config() };
    let first = stop(&clients, &keep_one, &instance, "2026-11-27T01:00:00Z").await;
    // The second stop's image is pending while it stops (EC2 says so where moto cannot): the
    // first stays, and it is the AMI event's to retire.
    let name = format!("amiguard-{instance}-20261127T020000Z");
    proxy.inject(Fault::rewrite_with("DescribeImages", move |answer| {
        amiguard_integration_tests::with_image_state(answer, &name, "pending")
    }));
    let second = stop(&clients, &keep_one, &instance, "2026-11-27T02:00:00Z").await;
    let images_before = account.ec2().describe_images().owners("self").send().await.unwrap().images().len();
    assert_eq!(images_before, 2);
    let mut available = sample_event("snapshot-on-stop.ami-available.json");
    available["detail"]["ImageId"] = json!(second);
    available["region"] = json!(account.region);

    // The ledger cannot be read (which instance?), then cannot be leased, then the journal cannot
    // be written: the event is retried (then dead-lettered with its alarm), and nothing is retired
    // without the ledger.
    let denied = |action: &str| Fault::error(action, 400, "AccessDeniedException");
    // The journal's entries (`deleted#<id>`) are single puts too, after the lease's.
    for fault in [denied("Query"), denied("PutItem"), denied("PutItem").when_body_contains("deleted#")] {
        proxy.clear_faults();
        proxy.inject(fault.clone());
        let err = snapshot_on_stop::handle(&clients, &keep_one, available.clone(), &delivery()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AccessDeniedException") || text.contains("LedgerUnavailable"), "{fault:?}: {err}");
    }
    let images_after = account.ec2().describe_images().owners("self").send().await.unwrap().images().len();
    assert_eq!(images_after, 2, "the first image stays while the ledger cannot be used");
    // With the ledger back, the retry does what the event asks.
    proxy.clear_faults();
    let report = snapshot_on_stop::handle(&clients, &keep_one, available, &delivery()).await.unwrap();
    assert_eq!(report.retired_images, [first]);
}

#[tokio::test]
async fn snapshot_on_stop_under_throttling_still_completes() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::throttle(0.3));
    let ec2 = snapshot_on_stop_clients(&account, &proxy).await;

    let report = snapshot_on_stop::handle(
        &ec2,
        &snapshot_on_stop_config(),
        stop_event(&instance, "2026-11-27T03:00:00Z"),
        &delivery(),
    )
    .await
    .unwrap();

    assert_eq!(report.outcome, snapshot_on_stop::Outcome::Created);
    assert!(proxy.calls().iter().any(|c| c.faulted), "some calls were throttled");
    let images = account.ec2().describe_images().owners("self").send().await.unwrap();
    assert_eq!(images.images().len(), 1);
}

#[tokio::test]
async fn snapshot_on_stop_survives_a_cut_connection() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::cut("DescribeInstances").times(1));
    let ec2 = snapshot_on_stop_clients(&account, &proxy).await;

    let report = snapshot_on_stop::handle(
        &ec2,
        &snapshot_on_stop_config(),
        stop_event(&instance, "2026-11-27T04:00:00Z"),
        &delivery(),
    )
    .await
    .unwrap();

    assert_eq!(report.outcome, snapshot_on_stop::Outcome::Created);
    assert_eq!(proxy.count("DescribeInstances"), 2, "the cut call was retried once");
}

/// A real orphan: an AMI created, witnessed by the sweeper (EC2 said it became available: its
/// mapping is in the ledger), then deregistered.
async fn orphan(account: &TestAccount) -> String {
    use amiguard_integration_tests::REGION;
    let instance = account.run_instance(amiguard_integration_tests::AMAZON_LINUX_AMI, &[]).await;
    let ec2 = account.ec2();
    let name = format!("faults-{instance}");
    let image_id = ec2.create_image().instance_id(&instance).name(name).send().await.unwrap().image_id.unwrap();
    let image = ec2.describe_images().image_ids(&image_id).send().await.unwrap();
    let snapshot = image.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    let mut available = sample_event("orphan-snapshot-sweeper.ami-available.json");
    available["account"] = json!(account.account_id);
    available["detail"]["ImageId"] = json!(image_id);
    let vars = [("AWS_REGION", REGION)];
    let config = orphan_snapshot_sweeper::Config::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    })
    .unwrap();
    let regions = vec![(REGION.to_string(), ec2.clone())];
    let ledger = ledger::create(account).await;
    let ports = orphan_snapshot_sweeper::Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let witnessed = orphan_snapshot_sweeper::handle(&config, &ports, &available, &delivery()).await.unwrap();
    assert_eq!(serde_json::to_value(witnessed).unwrap()["outcome"], "recorded");
    ec2.deregister_image().image_id(image_id).send().await.unwrap();
    snapshot
}

/// An orphan in `region` as EC2 would describe it: a snapshot of its own volume "created by
/// CreateImage" for an AMI that does not exist. Nothing witnessed it: deleted only when adopted.
async fn orphan_in(account: &TestAccount, region: &str) -> String {
    let ec2 = account.ec2_in(region);
    let volume = ec2.create_volume().availability_zone(format!("{region}a")).size(8).send().await.unwrap();
    let volume = volume.volume_id().unwrap();
    let description = format!("Created by CreateImage(i-0123456789abcdef0) for ami-0123456789abcdef0 from {volume}");
    let snapshot = ec2.create_snapshot().volume_id(volume).description(description).send().await.unwrap();
    snapshot.snapshot_id().unwrap().to_string()
}

async fn snapshot_exists(account: &TestAccount, snapshot_id: &str) -> bool {
    let output = account.ec2().describe_snapshots().snapshot_ids(snapshot_id).send().await;
    output.map(|o| !o.snapshots().is_empty()).unwrap_or(false)
}

#[tokio::test]
async fn sweeper_when_one_delete_keeps_failing_deletes_the_others_and_reports_that_one() {
    use amiguard_integration_tests::REGION;
    let account = TestAccount::new().await;
    let mut orphans = Vec::new();
    for _ in 0..4 {
        orphans.push(orphan(&account).await);
    }
    let failing = orphans[1].clone();
    let proxy = Proxy::start(&moto().endpoint).await;
    // As when an IAM deny or an SCP covers that one snapshot (a 5xx would be retried ten times).
    proxy.inject(Fault::error("DeleteSnapshot", 403, "UnauthorizedOperation").when_body_contains(&failing));
    let vars = [
        ("AWS_REGION", REGION),
        ("DRY_RUN", "false"),
        ("MIN_AGE_HOURS", "0"),
        ("RECYCLE_BIN_CHECK", "false"),
        ("MAX_DELETE_FRACTION", "1"),
    ];
    let config = orphan_snapshot_sweeper::Config::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    })
    .unwrap();
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);
    let regions = vec![(REGION.to_string(), account.through(&proxy).ec2())];
    let ledger = ledger::create(&account).await;
    let ports = orphan_snapshot_sweeper::Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };

    let report = orphan_snapshot_sweeper::handle(&config, &ports, &event, &delivery()).await.unwrap().sweep().unwrap();

    let region = &report.regions[0];
    assert_eq!(region.failed.len(), 1);
    assert_eq!(
        (region.failed[0].snapshot_id.as_str(), region.failed[0].code.as_str()),
        (failing.as_str(), "UnauthorizedOperation")
    );
    assert_eq!(region.deleted.len(), 3);
    assert!(!region.deleted.contains(&failing), "a failed deletion is never counted deleted");
    assert!(snapshot_exists(&account, &failing).await);
    for deleted in &region.deleted {
        assert!(!snapshot_exists(&account, deleted).await, "{deleted}");
    }
    // The journal was written ahead of the deletions (`intended`), then says how each ended.
    let journal = amiguard::ledger::store::query_all(&ledger, &format!("run#{}", report.run_id), "").await.unwrap();
    assert_eq!(journal.len(), 4);
    for entry in &journal {
        let snapshot = entry.s("resource_id").unwrap();
        if snapshot == failing {
            assert_eq!((entry.s("state"), entry.s("code")), (Some("failed"), Some("UnauthorizedOperation")));
        } else {
            assert_eq!(entry.s("state"), Some("done"), "{snapshot}");
            assert!(region.deleted.iter().any(|d| d == snapshot));
        }
    }
}

#[tokio::test]
async fn untrusted_ami_alert_when_publish_fails_is_an_error_and_the_redelivery_alerts() {
    use amiguard::alert::sns::SnsAlerts;
    use untrusted_ami_alert::{Ec2Client, StsIdentity};

    let account = TestAccount::new().await;
    let topic = account.sns().create_topic().name("alerts").send().await.unwrap().topic_arn().unwrap().to_string();
    let instance = account.run_instance(amiguard_integration_tests::RHEL_AMI, &[]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    // Refused, not throttled: a 5xx would be retried ten times first (tested for EC2 above).
    proxy.inject(Fault::error("Publish", 403, "AuthorizationError"));
    let through = account.through(&proxy);
    let vars = [("ALERT_TOPIC_ARN", topic.clone()), ("TRUSTED_IMAGE_PROVIDERS", "self".to_string())];
    let config = untrusted_ami_alert::Config::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    let clients = untrusted_ami_alert::Ports {
        ec2: Ec2Client::new(through.ec2()),
        alerts: SnsAlerts::new(through.sns(), topic),
        identity: StsIdentity::new(through.sts()),
        ledger: Some(ledger::create(&account).await),
        region: account.region.clone(),
        findings: None,
    };
    let mut event = sample_event("untrusted-ami-alert.running.json");
    event["account"] = json!(account.account_id);
    event["detail"]["instance-id"] = json!(instance);

    let err = untrusted_ami_alert::handle(&config, &clients, &event, &delivery()).await.unwrap_err();
    assert!(err.to_string().contains("AuthorizationError"), "{err}");

    // Once SNS answers again, the redelivery alerts; the one after it does not.
    proxy.clear_faults();
    let retry = untrusted_ami_alert::handle(&config, &clients, &event, &delivery()).await.unwrap();
    let again = untrusted_ami_alert::handle(&config, &clients, &event, &delivery()).await.unwrap();
    let sent = |report: &untrusted_ami_alert::Report| match report {
        untrusted_ami_alert::Report::Instance(one) => one.alert_message_id.is_some(),
        other => panic!("{other:?}"),
    };
    assert!(sent(&retry) && !sent(&again));
    assert_eq!(proxy.count("Publish"), 2, "the refused one and the retry");
}

#[tokio::test]
async fn a_hung_call_times_out_and_is_retried_instead_of_eating_the_run() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    // Longer than the attempt timeout of amiguard::sdk (20 s): the first attempt hangs.
    proxy.inject(Fault::delay("DescribeInstances", std::time::Duration::from_secs(60)).times(1));
    let ec2 = snapshot_on_stop_clients(&account, &proxy).await;
    let started = std::time::Instant::now();

    let report = snapshot_on_stop::handle(
        &ec2,
        &snapshot_on_stop_config(),
        stop_event(&instance, "2026-11-27T05:00:00Z"),
        &delivery(),
    )
    .await
    .unwrap();

    assert_eq!(report.outcome, snapshot_on_stop::Outcome::Created);
    assert_eq!(proxy.count("DescribeInstances"), 2, "the hung attempt was abandoned and retried");
    assert!(started.elapsed() < std::time::Duration::from_secs(40), "took {:?}", started.elapsed());
}

// ---- the ledger refusing writes: each function fails safe ----

/// DynamoDB's answer to a role without the permission (4xx: not retried).
fn ledger_refuses(action: &str) -> Fault {
    Fault::error(action, 400, "AccessDeniedException")
}

#[tokio::test]
async fn snapshot_on_stop_without_a_writable_ledger_still_images_but_retires_nothing() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let clients = snapshot_on_stop_clients(&account, &proxy).await;
    let keep_one = snapshot_on_stop::Config { keep_last: 1, ..snapshot_on_stop_config() };
    let first =
        snapshot_on_stop::handle(&clients, &keep_one, stop_event(&instance, "2026-11-27T06:00:00Z"), &delivery())
            .await
            .unwrap();

    proxy.inject(ledger_refuses("PutItem"));
    let second =
        snapshot_on_stop::handle(&clients, &keep_one, stop_event(&instance, "2026-11-27T07:00:00Z"), &delivery())
            .await
            .unwrap();

    assert_eq!(second.outcome, snapshot_on_stop::Outcome::Created, "the image is still made");
    assert!(second.retired_images.is_empty(), "nothing retired without the ledger");
    assert!(
        second.warnings.iter().any(|w| w.contains("ledger could not be") && w.contains("AccessDeniedException")),
        "{:?}",
        second.warnings
    );
    let images = account.ec2().describe_images().owners("self").send().await.unwrap();
    let ids: Vec<&str> = images.images().iter().filter_map(|i| i.image_id()).collect();
    assert!(ids.contains(&first.image_id.as_deref().unwrap()) && ids.contains(&second.image_id.as_deref().unwrap()));
    assert!(proxy.count("DeregisterImage") == 0 && proxy.count("DeleteSnapshot") == 0);
}

#[tokio::test]
async fn the_sweeper_without_a_working_ledger_deletes_nothing_in_any_region() {
    use amiguard_integration_tests::REGION;
    let account = TestAccount::new().await;
    let snapshot = orphan(&account).await;
    // An orphan in the second region too: it plans while the first deletes, so its own deletions
    // must be what the ledger's failure stops.
    let other = orphan_in(&account, "eu-west-1").await;
    let vars = [
        ("AWS_REGION", REGION),
        ("DRY_RUN", "false"),
        ("MIN_AGE_HOURS", "0"),
        ("RECYCLE_BIN_CHECK", "false"),
        ("MAX_DELETE_FRACTION", "1"),
        // The second region's orphan is deletable but for the ledger.
        ("ADOPT_UNWITNESSED_ORPHANS", "true"),
    ];
    let config = orphan_snapshot_sweeper::Config::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    })
    .unwrap();
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);
    ledger::create(&account).await;
    for refused in ["Query", "BatchWriteItem"] {
        let proxy = Proxy::start(&moto().endpoint).await;
        proxy.inject(ledger_refuses(refused));
        let through = account.through(&proxy);
        let regions = vec![(REGION.to_string(), through.ec2()), ("eu-west-1".to_string(), through.ec2_in("eu-west-1"))];
        let (sns, ledger) = (through.sns(), ledger::on(&through));
        let ports = orphan_snapshot_sweeper::Ports { regions: &regions, publisher: &sns, ledger: Some(&ledger) };

        let report =
            orphan_snapshot_sweeper::handle(&config, &ports, &event, &delivery()).await.unwrap().sweep().unwrap();

        for region in &report.regions {
            let why = region.aborted.as_deref().unwrap_or_else(|| panic!("{refused}: {} not aborted", region.region));
            assert!(why.contains("ledger") && why.contains("AccessDeniedException"), "{why}");
            assert!(region.deleted.is_empty());
        }
        assert_eq!(proxy.count("DeleteSnapshot"), 0, "{refused}: nothing deleted");
        assert!(snapshot_exists(&account, &snapshot).await);
        let left = account.ec2_in("eu-west-1").describe_snapshots().snapshot_ids(&other).send().await.unwrap();
        assert_eq!(left.snapshots().len(), 1, "{refused}: the second region's orphan is kept");
    }
}

#[tokio::test]
async fn untrusted_ami_alert_without_a_writable_ledger_alerts_anyway_and_says_it_may_repeat() {
    use amiguard::alert::sns::SnsAlerts;
    use untrusted_ami_alert::{Ec2Client, StsIdentity};

    let account = TestAccount::new().await;
    let topic = account.sns().create_topic().name("alerts").send().await.unwrap().topic_arn().unwrap().to_string();
    let instance = account.run_instance(amiguard_integration_tests::RHEL_AMI, &[]).await;
    ledger::create(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(ledger_refuses("PutItem"));
    let through = account.through(&proxy);
    let vars = [("ALERT_TOPIC_ARN", topic.clone()), ("TRUSTED_IMAGE_PROVIDERS", "self".to_string())];
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

    for _ in 0..2 {
        let report = untrusted_ami_alert::handle(&config, &clients, &event, &delivery()).await.unwrap();
        let untrusted_ami_alert::Report::Instance(one) = report else { panic!("not one instance") };
        assert!(one.alert_message_id.is_some(), "never silent");
        assert!(
            one.warnings.iter().any(|w| w.contains("ledger") && w.contains("AccessDeniedException")),
            "{:?}",
            one.warnings
        );
    }
    assert_eq!(proxy.count("Publish"), 2, "a duplicate rather than a missed alert");
}
