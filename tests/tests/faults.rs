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
