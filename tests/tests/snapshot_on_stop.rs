//! snapshot-on-stop against a real EC2 emulator: the handler Lambda runs, on moto's state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::{moto, sample_event, TestAccount};
use aws_sdk_ec2::types::{Filter, Image};
use serde_json::{json, Value};
use snapshot_on_stop::{handle, records, Config, Ec2Client, Error, MadeImage, Outcome, Ports, SnapshotScope};

fn config(scope: SnapshotScope, keep_last: usize, dry_run: bool) -> Config {
    Config { scope, keep_last, dry_run, ..Config::default() }
}

fn tagged() -> Config {
    config(SnapshotScope::Tagged, 3, false)
}

/// The function's clients on `account`, with its ledger (created from the template on first use).
async fn clients(account: &TestAccount) -> Ports<Ec2Client, DynamoLedger> {
    Ports {
        ec2: Ec2Client::new(account.ec2()),
        ledger: Some(amiguard_integration_tests::ledger::create(account).await),
        alerts: None,
        region: account.region.clone(),
        findings: None,
    }
}

/// One delivery now (each with a request id of its own, as Lambda gives).
fn delivery() -> Invocation {
    Invocation::at(chrono::Utc::now())
}

/// The sample stop event, for `instance_id`, at `time`; EC2 says the instance stopped then (the
/// stop time that names the image is EC2's, never the event's alone).
fn stop_event(instance_id: &str, time: &str) -> Value {
    amiguard_integration_tests::ec2_says_stopped_at(instance_id, time);
    let mut event = sample_event("snapshot-on-stop.stopped.json");
    event["detail"]["instance-id"] = json!(instance_id);
    event["time"] = json!(time);
    event
}

async fn own_images(account: &TestAccount) -> Vec<Image> {
    let output = account.ec2().describe_images().owners("self").send().await.unwrap();
    output.images().to_vec()
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn snapshot_ids(image: &Image) -> Vec<String> {
    image.block_device_mappings().iter().filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string)).collect()
}

async fn snapshot_exists(account: &TestAccount, snapshot_id: &str) -> bool {
    let output = account.ec2().describe_snapshots().snapshot_ids(snapshot_id).send().await;
    output.map(|o| !o.snapshots().is_empty()).unwrap_or(false)
}

const OPT_IN: (&str, &str) = ("amiguard:snapshot-on-stop", "true");

#[tokio::test]
async fn a_tagged_stop_makes_a_tagged_image_its_snapshot_tags_and_a_relaunch_template() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN, ("Name", "db-1"), ("team", "data")]).await;
    let clients = clients(&account).await;

    let report = handle(&clients, &tagged(), stop_event(&instance, "2026-11-27T10:15:30Z"), &delivery()).await.unwrap();

    assert_eq!(report.outcome, Outcome::Created);
    let image_id = report.image_id.clone().unwrap();
    let expected_name = format!("amiguard-{instance}-20261127T101530Z");
    assert_eq!(report.image_name.as_deref(), Some(expected_name.as_str()));
    let images = own_images(&account).await;
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.image_id(), Some(image_id.as_str()));
    assert_eq!(image.name(), Some(expected_name.as_str()));
    assert_eq!(tag(image.tags(), "amiguard:source-instance"), Some(instance.as_str()));
    assert_eq!(tag(image.tags(), "amiguard:created-by"), Some("snapshot-on-stop"));
    assert_eq!(tag(image.tags(), "amiguard:stopped-at"), Some("2026-11-27T10:15:30Z"));
    assert_eq!(tag(image.tags(), "Name"), Some("db-1"));
    assert_eq!(tag(image.tags(), "team"), Some("data"));
    assert_eq!(tag(image.tags(), "amiguard:snapshot-on-stop"), None, "control tags are not copied");

    let snapshots = snapshot_ids(image);
    assert_eq!(snapshots.len(), 1);
    let snapshot = account.ec2().describe_snapshots().snapshot_ids(&snapshots[0]).send().await.unwrap();
    let snapshot_tags = snapshot.snapshots()[0].tags();
    assert_eq!(tag(snapshot_tags, "amiguard:image"), Some(image_id.as_str()));
    assert_eq!(tag(snapshot_tags, "amiguard:source-instance"), Some(instance.as_str()));
    assert_eq!(tag(snapshot_tags, "amiguard:created-by"), Some("snapshot-on-stop"));
    assert_eq!(tag(snapshot_tags, "amiguard:stopped-at"), Some("2026-11-27T10:15:30Z"));

    let template = report.launch_template.clone().unwrap();
    let versions = account
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(format!("amiguard-{instance}"))
        .versions("$Default")
        .send()
        .await
        .unwrap();
    let default = &versions.launch_template_versions()[0];
    assert_eq!(default.launch_template_id(), Some(template.id.as_str()));
    assert_eq!(default.version_number(), Some(template.version));
    let data = default.launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(image_id.as_str()));
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("t3.micro"));
    assert!(data
        .network_interfaces()
        .iter()
        .all(|n| n.network_interface_id().is_none() && n.private_ip_addresses().is_empty()));
    assert!(report.retired_images.is_empty() && report.deleted_snapshots.is_empty() && report.warnings.is_empty());
}

#[tokio::test]
async fn the_same_event_three_times_makes_one_image() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let clients = clients(&account).await;
    let event = stop_event(&instance, "2026-11-27T11:00:00Z");

    let first = handle(&clients, &tagged(), event.clone(), &delivery()).await.unwrap();
    let second = handle(&clients, &tagged(), event.clone(), &delivery()).await.unwrap();
    let third = handle(&clients, &tagged(), event, &delivery()).await.unwrap();

    assert_eq!(first.outcome, Outcome::Created);
    assert_eq!(second.outcome, Outcome::AlreadyCreated);
    assert_eq!(third.outcome, Outcome::AlreadyCreated);
    assert_eq!(second.image_id, first.image_id);
    assert_eq!(third.launch_template, first.launch_template, "no second template version for the same image");
    assert_eq!(own_images(&account).await.len(), 1);
    let templates = account.ec2().describe_launch_templates().send().await.unwrap();
    assert_eq!(templates.launch_templates().len(), 1);
}

#[tokio::test]
async fn a_redelivery_completes_what_a_crashed_delivery_left_undone() {
    let account = TestAccount::new().await;
    let clients = clients(&account).await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let stopped_at = chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let name = format!("amiguard-{instance}-20261127T120000Z");
    // A first delivery that died right after CreateImage: it recorded its intent, then the
    // image was made; nothing else happened.
    let intent = MadeImage::intent(stopped_at, &name, chrono::Utc::now());
    records::write(clients.ledger.as_ref().unwrap(), &account.region, &instance, &intent).await.unwrap();
    let created = account.ec2().create_image().instance_id(&instance).name(&name).no_reboot(true).send().await.unwrap();
    let image_id = created.image_id().unwrap().to_string();

    let report = handle(&clients, &tagged(), stop_event(&instance, "2026-11-27T12:00:00Z"), &delivery()).await.unwrap();

    assert_eq!(report.outcome, Outcome::AlreadyCreated);
    assert_eq!(report.image_id.as_deref(), Some(image_id.as_str()));
    let image = account.ec2().describe_images().image_ids(&image_id).send().await.unwrap().images()[0].clone();
    let snapshot = account.ec2().describe_snapshots().snapshot_ids(&snapshot_ids(&image)[0]).send().await.unwrap();
    assert_eq!(tag(snapshot.snapshots()[0].tags(), "amiguard:image"), Some(image_id.as_str()));
    let template = report.launch_template.unwrap();
    let versions =
        account.ec2().describe_launch_template_versions().launch_template_id(&template.id).send().await.unwrap();
    assert_eq!(
        versions.launch_template_versions()[0].launch_template_data().unwrap().image_id(),
        Some(image_id.as_str())
    );
    assert_eq!(own_images(&account).await.len(), 1);
    let recorded = records::read(clients.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    let record = recorded.for_stop(stopped_at).unwrap();
    assert_eq!(record.image_id.as_deref(), Some(image_id.as_str()));
    assert_eq!(record.snapshot_ids, snapshot_ids(&image));
    assert_eq!(record.launch_template.as_ref().map(|t| t.version), Some(template.version));
}

#[tokio::test]
async fn an_image_that_took_the_stops_name_without_a_ledger_record_is_not_touched() {
    let account = TestAccount::new().await;
    let clients = clients(&account).await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    // Someone predicted the name (an instance id and a stop time are no secret).
    let name = format!("amiguard-{instance}-20261127T120000Z");
    let squatter = account.ec2().create_image().instance_id(&instance).name(&name).send().await.unwrap();

    let report = handle(&clients, &tagged(), stop_event(&instance, "2026-11-27T12:00:00Z"), &delivery()).await.unwrap();

    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(report.reason.as_deref().unwrap().contains("ledger does not hold"), "{:?}", report.reason);
    let images = own_images(&account).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].image_id(), squatter.image_id());
    assert_eq!(tag(images[0].tags(), "amiguard:created-by"), None, "not tagged as amiguard's");
}

async fn assert_nothing_made(account: &TestAccount) {
    assert!(own_images(account).await.is_empty(), "no image may be made");
    let templates = account.ec2().describe_launch_templates().send().await.unwrap();
    assert!(templates.launch_templates().is_empty(), "no launch template may be made");
}

#[tokio::test]
async fn instances_that_are_not_selected_are_skipped_and_nothing_is_made() {
    let account = TestAccount::new().await;
    let clients = clients(&account).await;
    let untagged = account.stopped_instance(&[]).await;
    let opted_out = account.stopped_instance(&[("amiguard:snapshot-on-stop", "false")]).await;
    let running_again = account.stopped_instance(&[OPT_IN]).await;
    account.ec2().start_instances().instance_ids(&running_again).send().await.unwrap();
    let time = "2026-11-27T13:00:00Z";

    let cases = [
        (untagged.as_str(), tagged(), "not tagged amiguard:snapshot-on-stop=true"),
        (opted_out.as_str(), config(SnapshotScope::All, 3, false), "opted out"),
        (running_again.as_str(), tagged(), "no longer stopped"),
        ("i-0000000000000dead", tagged(), "no longer exists"),
    ];
    for (instance, config, why) in cases {
        let report = handle(&clients, &config, stop_event(instance, time), &delivery()).await.unwrap();
        assert_eq!(report.outcome, Outcome::Skipped, "{instance}");
        assert!(report.reason.as_deref().unwrap().contains(why), "{instance}: {:?}", report.reason);
        assert_eq!(report.image_id, None);
    }
    let mut running_event = stop_event(&untagged, time);
    running_event["detail"]["state"] = json!("running");
    let report = handle(&clients, &tagged(), running_event, &delivery()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Skipped);
    assert_eq!(report.reason.as_deref(), Some("event state is running, not stopped"));
    assert_nothing_made(&account).await;
}

#[tokio::test]
async fn scope_all_images_untagged_instances() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[]).await;
    let report = handle(
        &clients(&account).await,
        &config(SnapshotScope::All, 3, false),
        stop_event(&instance, "2026-11-27T13:30:00Z"),
        &delivery(),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!(own_images(&account).await.len(), 1);
}

#[tokio::test]
async fn retention_keeps_the_newest_and_retires_the_rest_with_their_snapshots() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    // An image of the same instance made by hand: retention must never touch it.
    let manual = account.ec2().create_image().instance_id(&instance).name("hand-made-backup").send().await.unwrap();
    let manual_id = manual.image_id().unwrap().to_string();
    let clients = clients(&account).await;
    let keep_two = config(SnapshotScope::Tagged, 2, false);

    let mut made = Vec::new();
    for hour in ["01", "02", "03", "04"] {
        let report =
            handle(&clients, &keep_two, stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z")), &delivery())
                .await
                .unwrap();
        assert_eq!(report.outcome, Outcome::Created);
        made.push(report);
    }
    let image = |n: usize| made[n].image_id.clone().unwrap();
    let all_images = own_images(&account).await;
    let snapshots_of = |id: &str| snapshot_ids(all_images.iter().find(|i| i.image_id() == Some(id)).unwrap());

    // The third stop retired the first image, the fourth the second.
    assert_eq!(made[2].retired_images, [image(0)]);
    assert_eq!(made[3].retired_images, [image(1)]);
    assert_eq!(made[2].deleted_snapshots.len(), 1);
    let mut remaining: Vec<String> = all_images.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    remaining.sort();
    let mut expected = vec![image(2), image(3), manual_id.clone()];
    expected.sort();
    assert_eq!(remaining, expected);
    for retired in [&made[2], &made[3]] {
        for snapshot in &retired.deleted_snapshots {
            assert!(!snapshot_exists(&account, snapshot).await, "{snapshot} should be deleted");
        }
    }
    for kept in [image(2), image(3), manual_id] {
        for snapshot in snapshots_of(&kept) {
            assert!(snapshot_exists(&account, &snapshot).await, "{snapshot} of kept {kept} must remain");
        }
    }
    // The relaunch template's default launches the newest image.
    let template = made[3].launch_template.clone().unwrap();
    let default = account
        .ec2()
        .describe_launch_template_versions()
        .launch_template_id(&template.id)
        .versions("$Default")
        .send()
        .await
        .unwrap();
    assert_eq!(
        default.launch_template_versions()[0].launch_template_data().unwrap().image_id(),
        Some(image(3).as_str())
    );
    // The versions launching retired images are deleted; moto cannot (HTML 500): that is a
    // warning naming them, never a failure.
    assert!(
        made[2].warnings.iter().any(|w| w.starts_with("launch-template versions [1] of")),
        "{:?}",
        made[2].warnings
    );
    assert!(
        made[3].warnings.iter().any(|w| w.starts_with("launch-template versions [2] of")),
        "{:?}",
        made[3].warnings
    );
    assert_eq!(made[3].warnings.len(), 1, "{:?}", made[3].warnings);
}

#[tokio::test]
async fn a_dry_run_decides_and_reports_but_changes_nothing() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let clients = clients(&account).await;
    let keep_two = config(SnapshotScope::Tagged, 2, false);
    let first = handle(&clients, &keep_two, stop_event(&instance, "2026-11-27T01:00:00Z"), &delivery()).await.unwrap();
    handle(&clients, &keep_two, stop_event(&instance, "2026-11-27T02:00:00Z"), &delivery()).await.unwrap();
    let before: Vec<_> = own_images(&account).await;

    let report = handle(
        &clients,
        &config(SnapshotScope::Tagged, 1, true),
        stop_event(&instance, "2026-11-27T03:00:00Z"),
        &delivery(),
    )
    .await
    .unwrap();

    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(report.image_name, Some(format!("amiguard-{instance}-20261127T030000Z")));
    assert_eq!(report.image_id, None);
    assert_eq!(report.stop_reason.as_deref(), Some("Client.UserInitiatedShutdown"));
    assert_eq!(
        report.retired_images,
        [first.image_id.clone().unwrap()],
        "KEEP_LAST=1: the older of the two; the new image would still be pending, and does not count"
    );
    assert!(report.deleted_snapshots.is_empty());
    assert_eq!(own_images(&account).await, before);
    let versions = account
        .ec2()
        .describe_launch_template_versions()
        .launch_template_id(first.launch_template.unwrap().id)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.launch_template_versions().len(), 2);
}

#[tokio::test]
async fn malformed_or_unexpected_events_are_errors_and_change_nothing() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let clients = clients(&account).await;
    let good = stop_event(&instance, "2026-11-27T05:00:00Z");
    let mut without_detail = good.clone();
    without_detail.as_object_mut().unwrap().remove("detail");
    let mut without_instance = good.clone();
    without_instance["detail"].as_object_mut().unwrap().remove("instance-id");
    let mut wrong_type = good.clone();
    wrong_type["detail"]["instance-id"] = json!(42);
    let mut without_time = good.clone();
    without_time.as_object_mut().unwrap().remove("time");
    let mut other_source = good.clone();
    other_source["detail-type"] = json!("Scheduled Event");
    other_source["source"] = json!("aws.events");

    let cases = [
        (json!("not an object"), "expected a JSON object"),
        (json!({}), "missing field `detail-type`"),
        (without_detail, "missing field `detail`"),
        (without_instance, "instance-id"),
        (wrong_type, "invalid type"),
        (without_time, "missing field `time`"),
        (other_source, "unexpected event"),
    ];
    for (payload, message) in cases {
        let err = handle(&clients, &tagged(), payload, &delivery()).await.unwrap_err();
        assert!(matches!(err, Error::Event(_)), "{err}");
        assert!(err.to_string().contains(message), "{err} should mention {message}");
    }
    assert_nothing_made(&account).await;
}

#[tokio::test]
async fn images_of_other_instances_are_never_retired() {
    let account = TestAccount::new().await;
    let first = account.stopped_instance(&[OPT_IN]).await;
    let second = account.stopped_instance(&[OPT_IN]).await;
    let clients = clients(&account).await;
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    handle(&clients, &keep_one, stop_event(&first, "2026-11-27T01:00:00Z"), &delivery()).await.unwrap();
    let report = handle(&clients, &keep_one, stop_event(&second, "2026-11-27T02:00:00Z"), &delivery()).await.unwrap();
    assert!(report.retired_images.is_empty());
    let images = own_images(&account).await;
    assert_eq!(images.len(), 2);
    let filter = Filter::builder().name("tag:amiguard:source-instance").values(&first).build();
    let of_first = account.ec2().describe_images().owners("self").filters(filter).send().await.unwrap();
    assert_eq!(of_first.images().len(), 1);
}

// ---- the ledger: retention of only what snapshot-on-stop made ----

async fn image_tags_of(account: &TestAccount, image_id: &str) -> Vec<aws_sdk_ec2::types::Tag> {
    let output = account.ec2().describe_images().image_ids(image_id).send().await.unwrap();
    output.images()[0].tags().to_vec()
}

#[tokio::test]
async fn a_tagged_copy_of_an_amiguard_image_survives_any_number_of_stops() {
    let account = TestAccount::new().await;
    let clients = clients(&account).await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let first = handle(&clients, &keep_one, stop_event(&instance, "2026-11-27T01:00:00Z"), &delivery()).await.unwrap();
    let first_id = first.image_id.clone().unwrap();
    // A golden copy kept with `--copy-image-tags`, and a hand-made image tagged like amiguard's.
    let copy = account.copy_image(&first_id, "golden-web-copy").await;
    let forged = account.ec2().create_image().instance_id(&instance).name("golden-web").send().await.unwrap();
    let forged = forged.image_id().unwrap().to_string();
    let original_tags = image_tags_of(&account, &first_id).await;
    account.ec2().create_tags().resources(&copy).resources(&forged).set_tags(Some(original_tags)).send().await.unwrap();

    let mut retired = Vec::new();
    for hour in ["02", "03", "04", "05"] {
        let report =
            handle(&clients, &keep_one, stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z")), &delivery())
                .await
                .unwrap();
        assert_eq!(report.outcome, Outcome::Created);
        assert!(report.warnings.iter().all(|w| !w.contains("ledger")), "{:?}", report.warnings);
        retired.extend(report.retired_images);
    }
    assert_eq!(retired.len(), 4, "each stop retired the one image before it: {retired:?}");
    assert_eq!(retired[0], first_id);
    assert!(!retired.contains(&copy) && !retired.contains(&forged), "{retired:?}");
    let remaining: Vec<String> =
        own_images(&account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    assert!(remaining.contains(&copy) && remaining.contains(&forged), "{remaining:?}");
    assert_eq!(remaining.len(), 3, "the copy, the forged one and the newest");
}

#[tokio::test]
async fn the_same_stop_delivered_three_times_at_once_makes_one_image() {
    let account = TestAccount::new().await;
    let clients = clients(&account).await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let event = stop_event(&instance, "2026-11-27T06:00:00Z");
    let (a, b, c) = (delivery(), delivery(), delivery());

    let (ra, rb, rc) = tokio::join!(
        handle(&clients, &keep_one, event.clone(), &a),
        handle(&clients, &keep_one, event.clone(), &b),
        handle(&clients, &keep_one, event.clone(), &c),
    );

    let reports = [ra.unwrap(), rb.unwrap(), rc.unwrap()];
    let mut outcomes: Vec<Outcome> = reports.iter().map(|r| r.outcome).collect();
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Outcome::AlreadyCreated, Outcome::AlreadyCreated, Outcome::Created]);
    assert!(reports.iter().all(|r| r.image_id == reports[0].image_id));
    assert_eq!(own_images(&account).await.len(), 1, "one stop, one image");
    assert!(reports.iter().all(|r| r.retired_images.is_empty()));
}

#[tokio::test]
async fn images_made_before_the_ledger_are_adopted_once_by_their_exact_name() {
    let account = TestAccount::new().await;
    let clients = clients(&account).await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    // What the previous version made: the deterministic name and snapshot-on-stop's tags.
    let tags = |stopped: &str| {
        vec![
            aws_sdk_ec2::types::Tag::builder().key("amiguard:source-instance").value(&instance).build(),
            aws_sdk_ec2::types::Tag::builder().key("amiguard:created-by").value("snapshot-on-stop").build(),
            aws_sdk_ec2::types::Tag::builder().key("amiguard:stopped-at").value(stopped).build(),
        ]
    };
    let made_before = |name: String, stopped: &'static str| {
        let ec2 = account.ec2();
        let tags = tags(stopped);
        let instance = instance.clone();
        async move {
            let image = ec2.create_image().instance_id(&instance).name(name).send().await.unwrap();
            let id = image.image_id().unwrap().to_string();
            ec2.create_tags().resources(&id).set_tags(Some(tags)).send().await.unwrap();
            id
        }
    };
    let old = made_before(format!("amiguard-{instance}-20261120T010000Z"), "2026-11-20T01:00:00Z").await;
    let renamed = made_before(format!("amiguard-{instance}-20261120T020000Z-copy"), "2026-11-20T02:00:00Z").await;

    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let report = handle(&clients, &keep_one, stop_event(&instance, "2026-11-27T07:00:00Z"), &delivery()).await.unwrap();

    assert_eq!(report.adopted_images, std::slice::from_ref(&old));
    assert_eq!(report.retired_images, [old], "adopted, then retired by KEEP_LAST=1");
    let remaining: Vec<String> =
        own_images(&account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    assert!(remaining.contains(&renamed), "another name is never adopted");
    // Adoption ran once: an image made later under an adoptable name is not adopted.
    let late = made_before(format!("amiguard-{instance}-20261121T010000Z"), "2026-11-21T01:00:00Z").await;
    let next = handle(&clients, &keep_one, stop_event(&instance, "2026-11-27T08:00:00Z"), &delivery()).await.unwrap();
    assert!(next.adopted_images.is_empty());
    assert_eq!(next.retired_images.len(), 1);
    assert_ne!(next.retired_images[0], late);
    let remaining: Vec<String> =
        own_images(&account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    assert!(remaining.contains(&late) && remaining.contains(&renamed));
}

/// snapshot-on-stop's clients with EC2 through `proxy` (which says what moto cannot: a pending
/// image, a hibernation stop), the ledger direct.
async fn clients_through(account: &TestAccount, proxy: &Proxy) -> Ports<Ec2Client, DynamoLedger> {
    Ports {
        ec2: Ec2Client::new(account.through(proxy).ec2()),
        ledger: Some(amiguard_integration_tests::ledger::create(account).await),
        alerts: None,
        region: account.region.clone(),
        findings: None,
    }
}

#[tokio::test]
async fn a_pending_image_never_displaces_the_last_good_one() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let clients = clients_through(&account, &proxy).await;
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let stop = |hour: &str| stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z"));
    let first = handle(&clients, &keep_one, stop("01"), &delivery()).await.unwrap();
    let good = first.image_id.clone().unwrap();

    // EC2 makes an image `pending` for minutes (moto: at once available): every image is pending
    // while the second stop decides, its own included, so nothing is counted and nothing retired.
    proxy.inject(Fault::rewrite(
        "DescribeImages",
        "<imageState>available</imageState>",
        "<imageState>pending</imageState>",
    ));
    let second = handle(&clients, &keep_one, stop("02"), &delivery()).await.unwrap();
    assert_eq!(second.outcome, Outcome::Created);
    assert!(second.retired_images.is_empty(), "{:?}", second.retired_images);
    let pending = second.image_id.clone().unwrap();

    // Third stop: the first image is available, the second still pending, the third available.
    proxy.clear_faults();
    proxy.inject(Fault::rewrite(
        "DescribeImages",
        format!("<imageId>{pending}</imageId><imageState>available</imageState>"),
        format!("<imageId>{pending}</imageId><imageState>pending</imageState>"),
    ));
    let third = handle(&clients, &keep_one, stop("03"), &delivery()).await.unwrap();
    assert_eq!(third.retired_images, std::slice::from_ref(&good), "the pending image is neither retired nor counted");
    assert_eq!(third.images_not_available, std::slice::from_ref(&pending), "and the report says it is waiting");
    let remaining: Vec<String> =
        own_images(&account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    assert!(remaining.contains(&pending) && !remaining.contains(&good), "{remaining:?}");
}

#[tokio::test]
async fn a_protected_image_survives_any_number_of_stops_and_is_not_counted() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let clients = clients(&account).await;
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let stop = |hour: &str| stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z"));
    let kept_by_image_tag = handle(&clients, &keep_one, stop("01"), &delivery()).await.unwrap().image_id.unwrap();
    let ec2 = account.ec2();
    let keep = |key: &str| aws_sdk_ec2::types::Tag::builder().key(key).value("legal hold").build();
    ec2.create_tags().resources(&kept_by_image_tag).tags(keep("amiguard:keep")).send().await.unwrap();
    let second = handle(&clients, &keep_one, stop("02"), &delivery()).await.unwrap();
    assert!(second.retired_images.is_empty(), "{:?}", second.retired_images);
    let kept_by_snapshot_tag = second.image_id.unwrap();
    let image = own_images(&account).await.into_iter().find(|i| i.image_id() == Some(&kept_by_snapshot_tag)).unwrap();
    // On a snapshot, in another letter case: IAM's guard matches it so, and so does retention.
    ec2.create_tags().resources(&snapshot_ids(&image)[0]).tags(keep("AMIGUARD:KEEP")).send().await.unwrap();

    let mut retired = Vec::new();
    for hour in ["03", "04", "05"] {
        let report = handle(&clients, &keep_one, stop(hour), &delivery()).await.unwrap();
        assert_eq!(report.outcome, Outcome::Created);
        retired.extend(report.retired_images);
    }
    assert_eq!(retired.len(), 2, "the protected ones do not count: each later stop retires the one before it");
    assert!(!retired.contains(&kept_by_image_tag) && !retired.contains(&kept_by_snapshot_tag), "{retired:?}");
    let remaining: Vec<String> =
        own_images(&account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    assert!(remaining.contains(&kept_by_image_tag) && remaining.contains(&kept_by_snapshot_tag));
    assert_eq!(remaining.len(), 3, "{remaining:?}");
}

#[tokio::test]
async fn a_hibernation_stop_makes_no_image_and_a_stop_aws_made_is_imaged_and_named() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let clients = clients_through(&account, &proxy).await;
    let says = |code: &str| {
        Fault::rewrite("DescribeInstances", "<code>Client.UserInitiatedShutdown</code>", format!("<code>{code}</code>"))
    };
    proxy.inject(says("Client.UserInitiatedHibernate"));
    let hibernated =
        handle(&clients, &tagged(), stop_event(&instance, "2026-11-27T01:00:00Z"), &delivery()).await.unwrap();
    assert_eq!(hibernated.outcome, Outcome::Skipped);
    assert!(hibernated.reason.as_deref().unwrap().contains("hibernation"), "{:?}", hibernated.reason);
    assert_eq!(hibernated.stop_reason.as_deref(), Some("Client.UserInitiatedHibernate"));
    assert_nothing_made(&account).await;

    proxy.clear_faults();
    proxy.inject(says("Server.SpotInstanceShutdown"));
    let spot = handle(&clients, &tagged(), stop_event(&instance, "2026-11-27T02:00:00Z"), &delivery()).await.unwrap();
    assert_eq!(spot.outcome, Outcome::Created);
    assert_eq!(spot.stop_reason.as_deref(), Some("Server.SpotInstanceShutdown"));
}

#[tokio::test]
async fn a_terminated_instance_keeps_its_newest_images_by_keep_after_termination() {
    use snapshot_on_stop::KeepAfterTermination;
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let clients = clients(&account).await;
    let keep_three = config(SnapshotScope::Tagged, 3, false);
    let mut made = Vec::new();
    for hour in ["01", "02", "03"] {
        let stop = stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z"));
        made.push(handle(&clients, &keep_three, stop, &delivery()).await.unwrap().image_id.unwrap());
    }
    let mut terminated = sample_event("snapshot-on-stop.terminated.json");
    terminated["detail"]["instance-id"] = json!(instance);
    let keep_newest = Config { keep_after_termination: KeepAfterTermination::Newest(1), ..keep_three.clone() };

    // The event alone is not believed: EC2 says the instance is only stopped.
    let early = handle(&clients, &keep_newest, terminated.clone(), &delivery()).await.unwrap();
    assert_eq!(early.outcome, Outcome::Skipped);
    assert!(early.reason.as_deref().unwrap().contains("EC2 says the instance is stopped"), "{:?}", early.reason);
    assert_eq!(own_images(&account).await.len(), 3);

    account.ec2().terminate_instances().instance_ids(&instance).send().await.unwrap();

    // The default keeps every image.
    let kept = handle(&clients, &keep_three, terminated.clone(), &delivery()).await.unwrap();
    assert_eq!(kept.outcome, Outcome::Skipped);
    assert!(kept.reason.as_deref().unwrap().contains("KEEP_AFTER_TERMINATION=all"), "{:?}", kept.reason);
    assert_eq!(own_images(&account).await.len(), 3);

    let preview = Config { dry_run: true, ..keep_newest.clone() };
    let dry = handle(&clients, &preview, terminated.clone(), &delivery()).await.unwrap();
    assert_eq!((dry.outcome, dry.retired_images.len()), (Outcome::DryRun, 2));
    assert_eq!(own_images(&account).await.len(), 3, "a dry run changes nothing");

    let report = handle(&clients, &keep_newest, terminated, &delivery()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Terminated);
    let mut retired = report.retired_images.clone();
    retired.sort();
    let mut oldest = made[..2].to_vec();
    oldest.sort();
    assert_eq!(retired, oldest, "all but the newest");
    let remaining: Vec<String> =
        own_images(&account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    assert_eq!(remaining, [made[2].clone()]);
    assert_eq!(report.deleted_snapshots.len(), 2);
    for snapshot in &report.deleted_snapshots {
        assert!(!snapshot_exists(&account, snapshot).await);
    }
    assert!(report.launch_template.is_some(), "the template stays, with the newest image's version");
}

// ---- following each image to `available` (EC2 AMI State Change) ----

/// The AMI event of `image_id`, from the sample of `state`, in `account`.
fn ami_event(account: &TestAccount, image_id: &str, state: &str) -> Value {
    let mut event = sample_event(&format!("snapshot-on-stop.ami-{state}.json"));
    event["account"] = json!(account.account_id);
    event["region"] = json!(account.region);
    event["detail"]["ImageId"] = json!(image_id);
    event["resources"] = json!([format!("arn:aws:ec2:{}::image/{image_id}", account.region)]);
    event
}

async fn own_image_ids(account: &TestAccount) -> Vec<String> {
    own_images(account).await.iter().filter_map(|i| i.image_id().map(str::to_string)).collect()
}

/// An opted-in stopped instance and snapshot-on-stop's clients, with EC2 through a proxy (which
/// says what moto cannot: a pending or failed image), and, when alerting, an inbox on the topic
/// the function alerts.
struct Scene {
    account: TestAccount,
    instance: String,
    proxy: Proxy,
    clients: Ports<Ec2Client, DynamoLedger>,
    inbox: Option<amiguard_integration_tests::inbox::AlertInbox>,
}

impl Scene {
    async fn new() -> Self {
        let account = TestAccount::new().await;
        let instance = account.stopped_instance(&[OPT_IN]).await;
        let proxy = Proxy::start(&moto().endpoint).await;
        let clients = clients_through(&account, &proxy).await;
        Self { account, instance, proxy, clients, inbox: None }
    }

    /// With alerts to an SQS inbox (`raw`: SNS's raw message delivery).
    async fn alerting(raw: bool) -> Self {
        let scene = Self::new().await;
        let inbox = amiguard_integration_tests::inbox::AlertInbox::new(&scene.account, raw).await;
        let alerts = amiguard::alert::sns::SnsAlerts::new(scene.account.through(&scene.proxy).sns(), &inbox.topic_arn);
        Self { clients: Ports { alerts: Some(alerts), ..scene.clients }, inbox: Some(inbox), ..scene }
    }

    /// The stop at `hour` o'clock on 2026-11-27.
    async fn stop(&self, config: &Config, hour: &str) -> snapshot_on_stop::Report {
        let event = stop_event(&self.instance, &format!("2026-11-27T{hour}:00:00Z"));
        handle(&self.clients, config, event, &delivery()).await.unwrap()
    }

    async fn ami_event(&self, config: &Config, image_id: &str, state: &str) -> Result<snapshot_on_stop::Report, Error> {
        handle(&self.clients, config, ami_event(&self.account, image_id, state), &delivery()).await
    }

    /// EC2 says the image of the stop at `hour` o'clock is `state`, in every DescribeImages
    /// answer, whatever moto says.
    fn image_of_stop_is(&self, hour: &str, state: &'static str) {
        let name = format!("amiguard-{}-20261127T{hour}0000Z", self.instance);
        self.proxy.inject(Fault::rewrite_with("DescribeImages", move |answer| {
            amiguard_integration_tests::with_image_state(answer, &name, state)
        }));
    }

    /// The image the template's default version launches.
    async fn default_image(&self) -> Option<String> {
        let versions = self
            .account
            .ec2()
            .describe_launch_template_versions()
            .launch_template_name(format!("amiguard-{}", self.instance))
            .versions("$Default")
            .send()
            .await
            .unwrap();
        versions.launch_template_versions()[0].launch_template_data()?.image_id().map(str::to_string)
    }
}

#[tokio::test]
async fn keep_last_one_with_the_new_image_pending_keeps_the_old_one_until_its_available_event() {
    let scene = Scene::new().await;
    let (account, instance, proxy) = (&scene.account, scene.instance.clone(), &scene.proxy);
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let good = scene.stop(&keep_one, "01").await;
    let good_image = good.image_id.clone().unwrap();

    scene.image_of_stop_is("02", "pending");
    let second = scene.stop(&keep_one, "02").await;
    let pending = second.image_id.clone().unwrap();
    assert_eq!(second.outcome, Outcome::Created);
    assert!(second.retired_images.is_empty(), "the last good image stays: {:?}", second.retired_images);
    assert_eq!(second.images_not_available, std::slice::from_ref(&pending));
    assert_eq!(scene.default_image().await.as_deref(), Some(good_image.as_str()), "the default stays");
    assert_eq!(second.launch_template, good.launch_template, "the report names the default, still the good image's");
    let versions = account
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(format!("amiguard-{instance}"))
        .send()
        .await
        .unwrap();
    let launched: Vec<Option<&str>> =
        versions.launch_template_versions().iter().map(|v| v.launch_template_data().unwrap().image_id()).collect();
    assert!(launched.contains(&Some(pending.as_str())), "the stop's configuration is kept in a version: {launched:?}");

    // An `available` event EC2 does not agree with yet is retried, and changes nothing.
    let early = scene.ami_event(&keep_one, &pending, "available").await;
    assert!(matches!(early, Err(Error::NotYetSettled { .. })), "{early:?}");
    assert!(own_image_ids(account).await.contains(&good_image));

    // EC2 says available now: the event moves the default and runs retention.
    proxy.clear_faults();
    let settled = scene.ami_event(&keep_one, &pending, "available").await.unwrap();
    assert_eq!(settled.outcome, Outcome::ImageAvailable);
    assert_eq!(settled.instance_id, instance);
    assert_eq!(settled.image_state.as_deref(), Some("available"));
    assert_eq!(settled.retired_images, std::slice::from_ref(&good_image));
    assert_eq!(settled.deleted_snapshots.len(), 1);
    assert!(!snapshot_exists(account, &settled.deleted_snapshots[0]).await);
    assert_eq!(scene.default_image().await.as_deref(), Some(pending.as_str()));
    assert_eq!(own_image_ids(account).await, std::slice::from_ref(&pending));

    // A redelivery of the event finds nothing left to do.
    let again = scene.ami_event(&keep_one, &pending, "available").await.unwrap();
    assert_eq!(again.outcome, Outcome::ImageAvailable);
    assert!(again.retired_images.is_empty() && again.deleted_snapshots.is_empty());
    assert_eq!(scene.default_image().await.as_deref(), Some(pending.as_str()));
}

#[tokio::test]
async fn a_stop_catches_up_on_an_available_event_that_never_came() {
    let scene = Scene::new().await;
    let (account, instance, proxy, clients) = (&scene.account, scene.instance.clone(), &scene.proxy, &scene.clients);
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    // The very first stop's image is pending: no template is made until an image is available.
    scene.image_of_stop_is("01", "pending");
    let first = scene.stop(&keep_one, "01").await;
    assert_eq!(first.launch_template, None);
    assert!(first.warnings.iter().any(|w| w.contains("no image of")), "{:?}", first.warnings);
    let templates = account.ec2().describe_launch_templates().send().await.unwrap();
    assert!(templates.launch_templates().is_empty(), "no template names a pending image");
    let first_image = first.image_id.unwrap();

    // Its event never comes; the next stop's image is pending too, the first is available now.
    proxy.clear_faults();
    scene.image_of_stop_is("02", "pending");
    let second = scene.stop(&keep_one, "02").await;
    assert!(second.retired_images.is_empty(), "{:?}", second.retired_images);
    assert_eq!(scene.default_image().await.as_deref(), Some(first_image.as_str()));
    let template = second.launch_template.unwrap();
    let recorded = records::read(clients.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    let first_record = recorded.images.iter().find(|r| r.image_id.as_deref() == Some(first_image.as_str())).unwrap();
    assert_eq!(first_record.launch_template.as_ref(), Some(&template), "the ledger says which version launches it");
    // The second stop's configuration has its version too (not the default yet).
    let second_image = second.image_id.unwrap();
    let second_record = recorded.images.iter().find(|r| r.image_id.as_deref() == Some(second_image.as_str())).unwrap();
    let version = second_record.launch_template.as_ref().unwrap();
    assert_eq!(version.id, template.id);
    assert_ne!(version.version, template.version);
    let versions =
        account.ec2().describe_launch_template_versions().launch_template_id(&template.id).send().await.unwrap();
    let launching = versions
        .launch_template_versions()
        .iter()
        .find(|v| v.version_number() == Some(version.version))
        .and_then(|v| v.launch_template_data()?.image_id());
    assert_eq!(launching, Some(second_image.as_str()));
}

#[tokio::test]
async fn a_failed_image_keeps_the_last_good_one_and_the_default_and_alerts_once() {
    let scene = Scene::alerting(false).await;
    let (account, instance, proxy, inbox) =
        (&scene.account, &scene.instance, &scene.proxy, scene.inbox.as_ref().unwrap());
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let good = scene.stop(&keep_one, "01").await;
    let good_image = good.image_id.unwrap();
    scene.image_of_stop_is("02", "pending");
    let second = scene.stop(&keep_one, "02").await;
    let failed = second.image_id.unwrap();

    // It fails (a disabled KMS key, say). SNS refuses the first try (the topic's key is disabled
    // too): the invocation fails, so that Lambda's retry alerts.
    proxy.clear_faults();
    scene.image_of_stop_is("02", "failed");
    proxy.inject(Fault::error("Publish", 400, "KMSDisabled").times(1));
    let refused = scene.ami_event(&keep_one, &failed, "failed").await;
    assert!(matches!(refused, Err(Error::Aws(ref e)) if e.code == "KMSDisabled"), "{refused:?}");
    proxy.clear_faults();
    scene.image_of_stop_is("02", "failed");
    // EC2's own reason, which moto cannot give: it is what the report and the alert say.
    let reason = "<stateReason><code>Client.InvalidKMSKey.InvalidState</code><message>The key is disabled</message></stateReason>";
    proxy.inject(Fault::rewrite(
        "DescribeImages",
        "<imageState>failed</imageState>",
        format!("<imageState>failed</imageState>{reason}"),
    ));
    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(scene.ami_event(&keep_one, &failed, "failed").await.unwrap());
    }
    assert!(reports.iter().all(|r| r.outcome == Outcome::ImageFailed && r.retired_images.is_empty()));
    assert_eq!(reports[0].alerted_images, std::slice::from_ref(&failed));
    assert!(reports[1].alerted_images.is_empty() && reports[2].alerted_images.is_empty(), "alerted once");
    let reason = reports[0].reason.clone().unwrap();
    assert!(reason.contains("The key is disabled") && reason.contains(&good_image), "{reason}");
    assert!(!reason.contains("the event says"), "EC2's reason comes first: {reason}");
    assert_eq!(scene.default_image().await.as_deref(), Some(good_image.as_str()), "the default stays");
    assert!(own_image_ids(account).await.contains(&good_image), "the last good image stays");

    // A later stop sees it failed too: never retired, never counted, never alerted again.
    let third = scene.stop(&keep_one, "03").await;
    assert_eq!(third.retired_images, std::slice::from_ref(&good_image), "KEEP_LAST=1 counts the new available image");
    assert!(third.alerted_images.is_empty(), "{:?}", third.alerted_images);
    assert_eq!(third.images_not_available, std::slice::from_ref(&failed));
    assert!(own_image_ids(account).await.contains(&failed), "a failed image stays for a person to look at");
    assert_eq!(scene.default_image().await, third.image_id);

    let received = inbox.drain().await;
    assert_eq!(received.len(), 1, "{received:?}");
    let alert = &received[0];
    assert_eq!(alert.severity.as_deref(), Some("medium"));
    let subject = alert.subject.as_deref().unwrap();
    assert!(
        subject.contains(&failed) && subject.contains(instance.as_str()) && subject.contains("failed"),
        "{subject}"
    );
    assert!(alert.body.contains("Why:      The key is disabled"), "{}", alert.body);
}

#[tokio::test]
async fn a_stop_alerts_a_failed_image_whose_event_never_came() {
    let scene = Scene::alerting(true).await;
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let first = scene.stop(&keep_one, "01").await;
    scene.image_of_stop_is("01", "failed");
    let second = scene.stop(&keep_one, "02").await;
    assert_eq!(second.alerted_images, [first.image_id.clone().unwrap()]);
    let third = scene.stop(&keep_one, "03").await;
    assert!(third.alerted_images.is_empty());
    let received = scene.inbox.as_ref().unwrap().drain().await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].severity.as_deref(), Some("medium"));
}

#[tokio::test]
async fn ami_events_of_images_the_ledger_does_not_hold_change_nothing() {
    let scene = Scene::new().await;
    let (account, instance, clients) = (&scene.account, scene.instance.clone(), &scene.clients);
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let made = scene.stop(&keep_one, "01").await;
    let made = made.image_id.unwrap();
    // An image made by hand, with snapshot-on-stop's tags copied onto it.
    let forged = account.ec2().create_image().instance_id(&instance).name("golden").send().await.unwrap();
    let forged = forged.image_id().unwrap().to_string();
    let copied = image_tags_of(account, &made).await;
    account.ec2().create_tags().resources(&forged).set_tags(Some(copied)).send().await.unwrap();
    let before = own_image_ids(account).await;

    for state in ["available", "failed"] {
        let report = handle(clients, &keep_one, ami_event(account, &forged, state), &delivery()).await.unwrap();
        assert_eq!(report.outcome, Outcome::Skipped);
        assert!(report.reason.as_deref().unwrap().contains("ledger holds no record"), "{:?}", report.reason);
        assert!(report.alerted_images.is_empty());
    }
    let mut deregistered = ami_event(account, &made, "available");
    deregistered["detail"]["State"] = json!("deregistered");
    let report = handle(clients, &keep_one, deregistered, &delivery()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Skipped);
    let mut elsewhere = ami_event(account, &made, "available");
    elsewhere["region"] = json!("eu-west-1");
    let report = handle(clients, &keep_one, elsewhere, &delivery()).await.unwrap();
    assert!(report.reason.as_deref().unwrap().contains("eu-west-1"), "{:?}", report.reason);
    let no_ledger: Ports<Ec2Client, DynamoLedger> = Ports {
        ec2: Ec2Client::new(account.ec2()),
        ledger: None,
        alerts: None,
        region: account.region.clone(),
        findings: None,
    };
    let report = handle(&no_ledger, &keep_one, ami_event(account, &made, "available"), &delivery()).await.unwrap();
    assert!(report.reason.as_deref().unwrap().contains("LEDGER_TABLE"), "{:?}", report.reason);
    let mut malformed = ami_event(account, &made, "available");
    malformed["detail"]["ImageId"] = json!("snap-0123");
    assert!(matches!(handle(clients, &keep_one, malformed, &delivery()).await, Err(Error::Event(_))));
    assert_eq!(own_image_ids(account).await, before);
}

#[tokio::test]
async fn protect_newest_guards_the_newest_image_and_only_undoes_its_own_protection() {
    let scene = Scene::new().await;
    let (account, proxy) = (&scene.account, &scene.proxy);
    let protected = amiguard_integration_tests::emulate_deregistration_protection(proxy);
    let guard = |keep_last| Config { protect_newest: true, ..config(SnapshotScope::Tagged, keep_last, false) };
    let now_protected = || protected.lock().unwrap().keys().cloned().collect::<std::collections::BTreeSet<String>>();
    let by_hand = account.through(proxy).ec2();

    let a = scene.stop(&guard(1), "01").await;
    let a_image = a.image_id.clone().unwrap();
    assert_eq!(a.protection_enabled, std::slice::from_ref(&a_image));
    assert_eq!(now_protected(), [a_image.clone()].into());

    // A newer image is available: it is protected, the older one's protection comes off, and
    // KEEP_LAST=1 retires it in the same delivery.
    let b = scene.stop(&guard(1), "02").await;
    let b_image = b.image_id.clone().unwrap();
    assert_eq!(b.protection_enabled, std::slice::from_ref(&b_image));
    assert_eq!(b.protection_removed, std::slice::from_ref(&a_image));
    assert_eq!(b.retired_images, std::slice::from_ref(&a_image));

    let c = scene.stop(&guard(2), "03").await;
    let c_image = c.image_id.clone().unwrap();
    assert_eq!(c.protection_removed, std::slice::from_ref(&b_image));
    // A person protects B: that protection is theirs, amiguard never takes it off.
    by_hand.enable_image_deregistration_protection().image_id(&b_image).send().await.unwrap();

    let d = scene.stop(&guard(1), "04").await;
    let d_image = d.image_id.clone().unwrap();
    assert_eq!(d.protection_removed, std::slice::from_ref(&c_image), "only amiguard's own protection is removed");
    assert_eq!(d.retired_images, std::slice::from_ref(&c_image), "B is protected: counted, never deregistered");
    assert_eq!(now_protected(), [b_image.clone(), d_image.clone()].into());
    let mut remaining = own_image_ids(account).await;
    remaining.sort();
    let mut expected = vec![b_image.clone(), d_image.clone()];
    expected.sort();
    assert_eq!(remaining, expected);

    // A person makes amiguard's protection of D their own (a cooldown): when E is the newest, D's
    // protection stays, and so does D.
    by_hand.enable_image_deregistration_protection().image_id(&d_image).with_cooldown(true).send().await.unwrap();
    let e = scene.stop(&guard(1), "05").await;
    let e_image = e.image_id.clone().unwrap();
    assert!(e.protection_removed.is_empty(), "{:?}", e.protection_removed);
    assert!(e.retired_images.is_empty(), "{:?}", e.retired_images);
    assert!(
        e.warnings.iter().any(|w| w.contains(&d_image) && w.contains("changed by someone else")),
        "{:?}",
        e.warnings
    );
    assert_eq!(now_protected(), [b_image.clone(), d_image.clone(), e_image.clone()].into());

    // Turned off, PROTECT_NEWEST leaves what it set alone (E's), and says so.
    let off = scene.stop(&config(SnapshotScope::Tagged, 3, false), "06").await;
    assert!(off.protection_enabled.is_empty() && off.protection_removed.is_empty());
    assert!(
        off.warnings.iter().any(|w| w.contains("PROTECT_NEWEST is off") && w.contains(&e_image)),
        "{:?}",
        off.warnings
    );
    assert!(now_protected().contains(&e_image));
}

#[tokio::test]
async fn an_available_event_for_an_opted_out_instance_retires_nothing() {
    let scene = Scene::new().await;
    let (account, instance) = (&scene.account, scene.instance.clone());
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let good = scene.stop(&keep_one, "01").await;
    let good_image = good.image_id.unwrap();
    scene.image_of_stop_is("02", "pending");
    let second = scene.stop(&keep_one, "02").await;
    let newer = second.image_id.unwrap();
    scene.proxy.clear_faults();
    let opt_out = aws_sdk_ec2::types::Tag::builder().key("amiguard:snapshot-on-stop").value("false").build();
    account.ec2().create_tags().resources(&instance).tags(opt_out).send().await.unwrap();

    let report = scene.ami_event(&keep_one, &newer, "available").await.unwrap();
    assert_eq!(report.outcome, Outcome::ImageAvailable);
    assert!(report.retired_images.is_empty(), "{:?}", report.retired_images);
    assert!(report.warnings.iter().any(|w| w.contains("opted out")), "{:?}", report.warnings);
    assert!(own_image_ids(account).await.contains(&good_image));
    assert_eq!(scene.default_image().await, Some(newer), "the default still follows the newest good image");
}

#[tokio::test]
async fn a_dry_run_ami_event_reads_the_ledger_and_writes_nothing() {
    let scene = Scene::new().await;
    let (account, instance, proxy, clients) = (&scene.account, scene.instance.clone(), &scene.proxy, &scene.clients);
    let keep_one = config(SnapshotScope::Tagged, 1, false);
    let good = scene.stop(&keep_one, "01").await;
    scene.image_of_stop_is("02", "pending");
    let second = scene.stop(&keep_one, "02").await;
    proxy.clear_faults();
    let ledger = clients.ledger.as_ref().unwrap();
    let before = records::read(ledger, &account.region, &instance).await.unwrap();

    let dry = config(SnapshotScope::Tagged, 1, true);
    let newer = second.image_id.unwrap();
    let report = scene.ami_event(&dry, &newer, "available").await.unwrap();
    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(report.retired_images, [good.image_id.clone().unwrap()], "what the event would retire");
    assert_eq!(records::read(ledger, &account.region, &instance).await.unwrap(), before, "nothing written");
    assert_eq!(own_image_ids(account).await.len(), 2);
    assert_eq!(scene.default_image().await, good.image_id, "the default stays");
}

#[tokio::test]
async fn protect_newest_that_ec2_refuses_is_a_warning_and_the_next_stop_tries_again() {
    let scene = Scene::new().await;
    let (account, instance, proxy, clients) = (&scene.account, scene.instance.clone(), &scene.proxy, &scene.clients);
    // Injected before the emulation: the first Enable is refused.
    proxy.inject(Fault::error("EnableImageDeregistrationProtection", 400, "UnauthorizedOperation").times(1));
    let protected = amiguard_integration_tests::emulate_deregistration_protection(proxy);
    let guard = Config { protect_newest: true, ..config(SnapshotScope::Tagged, 2, false) };
    let first = scene.stop(&guard, "01").await;
    let image = first.image_id.clone().unwrap();
    assert!(first.protection_enabled.is_empty());
    assert!(first.warnings.iter().any(|w| w.contains("UnauthorizedOperation")), "{:?}", first.warnings);
    let recorded = records::read(clients.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    assert!(!recorded.images[0].protection_set, "the ledger does not claim a protection EC2 refused");
    // The redelivery of the same stop protects it.
    let again = scene.stop(&guard, "01").await;
    assert_eq!(again.protection_enabled, std::slice::from_ref(&image));
    assert!(protected.lock().unwrap().contains_key(&image));
}

#[tokio::test]
async fn retention_tags_exactly_what_it_retires_for_the_recycle_bin_first_and_a_dry_run_nothing() {
    use amiguard_integration_tests::recycle_bin;
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let clients = clients_through(&account, &proxy).await;
    let bin = amiguard::recycle_bin::RecycleBin::retaining_for(7);
    let keep_two = Config { recycle_bin: bin, ..config(SnapshotScope::Tagged, 2, false) };
    let keep_one = Config { recycle_bin: bin, ..config(SnapshotScope::Tagged, 1, false) };
    let stop = |hour: &str| stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z"));
    let first = handle(&clients, &keep_two, stop("01"), &delivery()).await.unwrap();
    let second = handle(&clients, &keep_two, stop("02"), &delivery()).await.unwrap();
    assert!(first.retired_images.is_empty() && second.retired_images.is_empty());

    let dry = Config { dry_run: true, ..keep_one.clone() };
    let preview = handle(&clients, &dry, stop("03"), &delivery()).await.unwrap();
    assert_eq!(preview.outcome, Outcome::DryRun);
    assert_eq!(preview.retired_images, [first.image_id.clone().unwrap()], "the dry run would retire one");
    assert_eq!(proxy.count("DeregisterImage") + proxy.count("DeleteSnapshot"), 0);
    assert!(recycle_bin::taggings(&proxy.calls()).is_empty(), "a dry run tags nothing");

    let started = chrono::Utc::now();
    let third = handle(&clients, &keep_one, stop("03"), &delivery()).await.unwrap();
    let fourth = handle(&clients, &keep_one, stop("04"), &delivery()).await.unwrap();
    let calls = proxy.calls();
    let mut retired_by_third = third.retired_images.clone();
    retired_by_third.sort();
    let mut older = [first.image_id.clone().unwrap(), second.image_id.clone().unwrap()];
    older.sort();
    assert_eq!(retired_by_third, older);
    assert_eq!(fourth.retired_images, [third.image_id.clone().unwrap()]);
    let retired: Vec<String> = [&third, &fourth].iter().flat_map(|r| r.retired_images.clone()).collect();
    let deleted: Vec<String> = [&third, &fourth].iter().flat_map(|r| r.deleted_snapshots.clone()).collect();
    assert_eq!(deleted.len(), 3);
    // One tagging per retiring delivery (both images of the third stop and their snapshots in
    // one call), each before any of its deregistrations and deletions.
    let taggings = recycle_bin::taggings(&calls);
    assert_eq!(taggings.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(), [4, 2]);
    let deregistered = recycle_bin::assert_each_tagged_before(&calls, "DeregisterImage", "ImageId");
    let deleted_ids = recycle_bin::assert_each_tagged_before(&calls, "DeleteSnapshot", "SnapshotId");
    assert_eq!(deregistered, retired.iter().cloned().collect());
    assert_eq!(deleted_ids, deleted.iter().cloned().collect());
    let gone: std::collections::BTreeSet<String> = retired.iter().chain(&deleted).cloned().collect();
    assert_eq!(recycle_bin::tagged(&calls), gone, "nothing else got the tag");
    // The image kept (the newest) carries no such tag.
    let kept = own_images(&account).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(tag(kept[0].tags(), amiguard::recycle_bin::TAG_KEY), None);
    let week = chrono::Duration::days(7);
    for report in [&third, &fourth] {
        let until = report.restorable_until.expect("a retiring stop says until when");
        assert!(until >= started + week && until <= chrono::Utc::now() + week, "{until}");
    }
    assert_eq!(second.restorable_until, None, "nothing retired, nothing to restore");
}

#[tokio::test]
async fn retention_retires_nothing_it_could_not_tag_for_the_recycle_bin_and_the_next_stop_does() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let clients = clients_through(&account, &proxy).await;
    let keep_one = Config {
        recycle_bin: amiguard::recycle_bin::RecycleBin::retaining_for(7),
        ..config(SnapshotScope::Tagged, 1, false)
    };
    // The ledger through the proxy too, to refuse the journal below.
    amiguard_integration_tests::ledger::create(&account).await;
    let clients = Ports { ledger: Some(amiguard_integration_tests::ledger::on(&account.through(&proxy))), ..clients };
    let stop = |hour: &str| stop_event(&instance, &format!("2026-11-27T{hour}:00:00Z"));
    let first = handle(&clients, &keep_one, stop("01"), &delivery()).await.unwrap();
    // Only the Recycle Bin tag is refused (say, an IAM change): the new image is still tagged.
    proxy.inject(Fault::error("CreateTags", 400, "UnauthorizedOperation").when_body_contains("recycle-bin"));
    let refused = handle(&clients, &keep_one, stop("02"), &delivery()).await.unwrap();
    assert_eq!(refused.outcome, Outcome::Created);
    assert!(refused.retired_images.is_empty() && refused.deleted_snapshots.is_empty());
    assert_eq!((proxy.count("DeregisterImage"), proxy.count("DeleteSnapshot")), (0, 0), "nothing undoable-less");
    assert!(refused.warnings.iter().any(|w| w.contains("Recycle Bin")), "{:?}", refused.warnings);
    assert!(own_image_ids(&account).await.contains(&first.image_id.clone().unwrap()));
    assert_eq!(refused.restorable_until, None, "nothing retired, nothing to restore");

    // Tagged, but the journal cannot be written: nothing is retired, and no restore promised.
    proxy.clear_faults();
    proxy.inject(Fault::error("PutItem", 400, "ValidationException").when_body_contains("intended"));
    let unjournaled = handle(&clients, &keep_one, stop("03"), &delivery()).await.expect("a lost ledger is a warning");
    assert!(unjournaled.retired_images.is_empty(), "{unjournaled:?}");
    assert_eq!(unjournaled.restorable_until, None, "{unjournaled:?}");
    assert_eq!((proxy.count("DeregisterImage"), proxy.count("DeleteSnapshot")), (0, 0));

    proxy.clear_faults();
    let next = handle(&clients, &keep_one, stop("04"), &delivery()).await.unwrap();
    assert!(next.retired_images.contains(&first.image_id.unwrap()), "{:?}", next.retired_images);
}
