//! Fault injection: a proxy between the SDK and moto throttles, fails or cuts chosen calls, and
//! each scenario asserts the emulator's state afterwards: nothing lost, nothing half-done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::snapshot_on_stop::core::SnapshotScope;
use amiguard::snapshot_on_stop::ec2::Ec2Client;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::{moto, sample_event, TestAccount};
use serde_json::{json, Value};

fn stop_event(instance_id: &str, time: &str) -> Value {
    let mut event = sample_event("snapshot-on-stop.stopped.json");
    event["detail"]["instance-id"] = json!(instance_id);
    event["time"] = json!(time);
    event
}

fn snapshot_on_stop_config() -> snapshot_on_stop::Config {
    snapshot_on_stop::Config { scope: SnapshotScope::Tagged, keep_last: 2, dry_run: false }
}

const OPT_IN: (&str, &str) = ("amiguard:snapshot-on-stop", "true");

#[tokio::test]
async fn snapshot_on_stop_when_create_image_fails_returns_an_error_and_leaves_no_template() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("CreateImage", 500, "InternalError"));
    let ec2 = Ec2Client::new(account.through(&proxy).ec2());

    let err = snapshot_on_stop::handle(&ec2, &snapshot_on_stop_config(), stop_event(&instance, "2026-11-27T01:00:00Z"))
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
    let through_proxy = Ec2Client::new(account.through(&proxy).ec2());

    let first = snapshot_on_stop::handle(&through_proxy, &snapshot_on_stop_config(), event.clone()).await;
    assert!(first.unwrap_err().to_string().contains("UnauthorizedOperation"));
    proxy.clear_faults();
    let second = snapshot_on_stop::handle(&through_proxy, &snapshot_on_stop_config(), event).await.unwrap();

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

#[tokio::test]
async fn snapshot_on_stop_under_throttling_still_completes() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::throttle(0.3));
    let ec2 = Ec2Client::new(account.through(&proxy).ec2());

    let report =
        snapshot_on_stop::handle(&ec2, &snapshot_on_stop_config(), stop_event(&instance, "2026-11-27T03:00:00Z"))
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
    let ec2 = Ec2Client::new(account.through(&proxy).ec2());

    let report =
        snapshot_on_stop::handle(&ec2, &snapshot_on_stop_config(), stop_event(&instance, "2026-11-27T04:00:00Z"))
            .await
            .unwrap();

    assert_eq!(report.outcome, snapshot_on_stop::Outcome::Created);
    assert_eq!(proxy.count("DescribeInstances"), 2, "the cut call was retried once");
}

/// A real orphan: an AMI created, then deregistered.
async fn orphan(account: &TestAccount) -> String {
    let instance = account.run_instance(amiguard_integration_tests::AMAZON_LINUX_AMI, &[]).await;
    let ec2 = account.ec2();
    let name = format!("faults-{instance}");
    let image_id = ec2.create_image().instance_id(&instance).name(name).send().await.unwrap().image_id.unwrap();
    let image = ec2.describe_images().image_ids(&image_id).send().await.unwrap();
    let snapshot = image.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    ec2.deregister_image().image_id(image_id).send().await.unwrap();
    snapshot
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
    let invocation = orphan_snapshot_sweeper::Invocation {
        now: chrono::Utc::now(),
        deadline: Some(std::time::SystemTime::now() + std::time::Duration::from_secs(900)),
    };

    let report = orphan_snapshot_sweeper::handle(&config, &regions, &account.sns(), &event, invocation).await.unwrap();

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
}

#[tokio::test]
async fn untrusted_ami_alert_when_publish_fails_is_an_error_and_leaves_no_mark() {
    use amiguard::trust::ec2::Ec2Trust;
    use amiguard::trust::identity::StsIdentity;
    use amiguard::trust::sns::SnsAlerts;

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
    let clients = untrusted_ami_alert::Clients {
        ec2: Ec2Trust::new(through.ec2()),
        alerts: SnsAlerts::new(through.sns(), topic),
        identity: StsIdentity::from_conf(through.sdk_config()),
        region: account.region.clone(),
    };
    let mut event = sample_event("untrusted-ami-alert.running.json");
    event["account"] = json!(account.account_id);
    event["detail"]["instance-id"] = json!(instance);

    let err = untrusted_ami_alert::handle(&config, &clients, &event, chrono::Utc::now()).await.unwrap_err();

    assert!(err.to_string().contains("AuthorizationError"), "{err}");
    let described = account.ec2().describe_instances().instance_ids(&instance).send().await.unwrap();
    let tags = described.reservations()[0].instances()[0].tags();
    assert!(!tags.iter().any(|t| t.key() == Some("amiguard:alerted")), "no mark without an alert");

    // Once SNS answers again, the redelivery alerts and marks.
    proxy.clear_faults();
    untrusted_ami_alert::handle(&config, &clients, &event, chrono::Utc::now()).await.unwrap();
    let described = account.ec2().describe_instances().instance_ids(&instance).send().await.unwrap();
    let tags = described.reservations()[0].instances()[0].tags();
    assert!(tags.iter().any(|t| t.key() == Some("amiguard:alerted")));
}

#[tokio::test]
async fn a_hung_call_times_out_and_is_retried_instead_of_eating_the_run() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    // Longer than the attempt timeout of amiguard::sdk (20 s): the first attempt hangs.
    proxy.inject(Fault::delay("DescribeInstances", std::time::Duration::from_secs(60)).times(1));
    let ec2 = Ec2Client::new(account.through(&proxy).ec2());
    let started = std::time::Instant::now();

    let report =
        snapshot_on_stop::handle(&ec2, &snapshot_on_stop_config(), stop_event(&instance, "2026-11-27T05:00:00Z"))
            .await
            .unwrap();

    assert_eq!(report.outcome, snapshot_on_stop::Outcome::Created);
    assert_eq!(proxy.count("DescribeInstances"), 2, "the hung attempt was abandoned and retried");
    assert!(started.elapsed() < std::time::Duration::from_secs(40), "took {:?}", started.elapsed());
}
