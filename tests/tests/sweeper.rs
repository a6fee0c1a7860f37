//! orphan-snapshot-sweeper against a real moto server: seed an account with the SDK, run exactly
//! the handler Lambda runs, and check what is left in the emulator.
//!
//! moto cannot backdate snapshots (so `MIN_AGE_HOURS=0` here; age is unit-tested with an injected
//! clock), ignores `OwnerIds` (every account sees the fixture AMIs' snapshots, owned by others:
//! exactly what the owner check is for) and lacks the Recycle Bin (`RECYCLE_BIN_CHECK=false`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use amiguard::ledger::dynamo::DynamoLedger;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::sweeper_config as config;
use amiguard_integration_tests::{moto, sample_event, TestAccount, AMAZON_LINUX_AMI, REGION};
use aws_sdk_ec2::types::{
    LaunchPermission, LaunchPermissionModifications, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use chrono::{SubsecRound, Utc};
use orphan_snapshot_sweeper::{handle, Config, ImageKeepReason, Invocation, KeepReason, Ports, Report, RetireOutcome};
use serde_json::Value;

const EU_REGION: &str = "eu-west-1";

/// The sample scheduled event, for this test's account.
fn scheduled(account: &TestAccount) -> Value {
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = Value::String(account.account_id.clone());
    event
}

fn invocation() -> Invocation {
    Invocation::at(Utc::now()).with_deadline(SystemTime::now() + Duration::from_secs(900))
}

async fn sweep(account: &TestAccount, config: &Config, event: &Value) -> Report {
    sweep_at(account, config, event, invocation()).await
}

/// A sweep of `account` at `invocation`'s clock, with its ledger (created from the template).
async fn sweep_at(account: &TestAccount, config: &Config, event: &Value, invocation: Invocation) -> Report {
    let regions: Vec<(String, aws_sdk_ec2::Client)> =
        config.regions.iter().map(|r| (r.clone(), account.ec2_in(r))).collect();
    let ledger = ledger(account).await;
    let ports = Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    handle(config, &ports, event, &invocation).await.unwrap().sweep().expect("a sweep's report")
}

async fn ledger(account: &TestAccount) -> DynamoLedger {
    amiguard_integration_tests::ledger::create(account).await
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// An AMI of a fresh instance, and its (one) snapshot.
async fn image(ec2: &aws_sdk_ec2::Client) -> (String, String) {
    let instance = ec2
        .run_instances()
        .image_id(AMAZON_LINUX_AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance_id = instance.instances()[0].instance_id().unwrap();
    let name = format!("sweeper-test-{instance_id}");
    let image_id = ec2.create_image().instance_id(instance_id).name(name).send().await.unwrap().image_id.unwrap();
    let described = ec2.describe_images().image_ids(&image_id).send().await.unwrap();
    let snapshot_id =
        described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    (image_id, snapshot_id)
}

/// A real orphan: an AMI created, witnessed (EC2 said it became available: the sweeper recorded
/// its mapping), then deregistered (its snapshot stays behind).
async fn orphan(account: &TestAccount, ec2: &aws_sdk_ec2::Client) -> String {
    let (image_id, snapshot_id) = image(ec2).await;
    let witnessed = witness(account, ec2, &image_id).await;
    assert_eq!(witnessed["outcome"], "recorded", "{witnessed}");
    ec2.deregister_image().image_id(image_id).send().await.unwrap();
    snapshot_id
}

/// What EventBridge delivers when EC2 says `image_id` became available: the sweeper records the
/// image's mapping as EC2 lists it. Its answer, as JSON.
async fn witness(account: &TestAccount, ec2: &aws_sdk_ec2::Client, image_id: &str) -> Value {
    let region = region_of(ec2);
    let mut event = sample_event("orphan-snapshot-sweeper.ami-available.json");
    event["account"] = Value::String(account.account_id.clone());
    event["region"] = Value::String(region.clone());
    event["detail"]["ImageId"] = Value::String(image_id.to_string());
    let regions = vec![(region.clone(), ec2.clone())];
    let ledger = ledger(account).await;
    let ports = Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let answer = handle(&config(&[("REGIONS", &region)]), &ports, &event, &invocation()).await.unwrap();
    serde_json::to_value(answer).unwrap()
}

/// A snapshot of a new volume with a description and tags of our choosing (moto lets tests write
/// `aws:` tags); `{volume}` in the description is the snapshot's own volume.
async fn crafted(ec2: &aws_sdk_ec2::Client, description: &str, tags: &[(&str, &str)], size: i32) -> String {
    let volume = ec2.create_volume().availability_zone(format!("{}a", region_of(ec2))).size(size).send().await.unwrap();
    let volume_id = volume.volume_id().unwrap();
    let description = description.replace("{volume}", volume_id);
    let mut request = ec2.create_snapshot().volume_id(volume_id).description(description);
    if !tags.is_empty() {
        request = request.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v)).collect()))
                .build(),
        );
    }
    request.send().await.unwrap().snapshot_id().unwrap().to_string()
}

fn region_of(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.config().region().unwrap().to_string()
}

async fn tag_snapshot(ec2: &aws_sdk_ec2::Client, snapshot_id: &str, key: &str) {
    ec2.create_tags().resources(snapshot_id).tags(tag(key, "")).send().await.unwrap();
}

/// The account's own snapshots still in the emulator.
async fn own_snapshots(account: &TestAccount, ec2: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let listed = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    listed
        .snapshots()
        .iter()
        .filter(|s| s.owner_id() == Some(account.account_id.as_str()))
        .map(|s| s.snapshot_id().unwrap().to_string())
        .collect()
}

/// Snapshots the listing shows that belong to others (moto's fixture AMIs).
async fn foreign_snapshots(account: &TestAccount, ec2: &aws_sdk_ec2::Client) -> u64 {
    let listed = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    listed.snapshots().iter().filter(|s| s.owner_id() != Some(account.account_id.as_str())).count() as u64
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn ids(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

#[tokio::test]
async fn deletes_exactly_the_orphans_of_a_realistic_account() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let orphan_a = orphan(&account, &ec2).await;
    let orphan_b = orphan(&account, &ec2).await;
    let (live_image, referenced) = image(&ec2).await;
    let (disabled_image, disabled_snapshot) = image(&ec2).await;
    ec2.disable_image().image_id(&disabled_image).send().await.unwrap();
    let protected = orphan(&account, &ec2).await;
    tag_snapshot(&ec2, &protected, "amiguard:keep").await;
    let gone = "Created by CreateImage(i-0123456789abcdef0) for ami-0123456789abcdef0 from vol-0123456789abcdef0";
    let backup = crafted(&ec2, gone, &[("aws:backup:source-resource", "arn:aws:ec2:us-east-1::volume/vol-1")], 4).await;
    let dlm = crafted(&ec2, gone, &[("aws:dlm:lifecycle-policy-id", "policy-0123")], 4).await;
    let manual = crafted(&ec2, "before the database upgrade", &[], 7).await;
    // EC2's words written by hand (`CreateSnapshot` takes any description), even on a snapshot of
    // the very volume they name: they prove nothing. Kept unwitnessed (the ledger never saw that
    // AMI map it), deleted only once adopted.
    let create_image_form =
        crafted(&ec2, "Created by CreateImage(i-0123456789abcdef0) for ami-0123456789abcdef0 from {volume}", &[], 5)
            .await;
    // The same words on a snapshot of another volume (a copy that kept them, or a forgery), and a
    // tag naming a gone AMI: neither proves the snapshot was made for an AMI. Manual, kept.
    let other_volume = crafted(&ec2, gone, &[], 4).await;
    let tagged_only = crafted(&ec2, "", &[("amiguard:image", "ami-0123456789abcdef0")], 2).await;
    let copy_form = crafted(
        &ec2,
        "Copied for DestinationAmi ami-0fedcba9876543210 from SourceAmi ami-0aaaabbbbccccdddd for SourceSnapshot snap-0123456789abcdef0. Task created on 1,700,000,000.",
        &[],
        6,
    )
    .await;
    let oflive_image = crafted(&ec2, &format!("Created by CreateImage(i-0abc) for {live_image}"), &[], 3).await;
    let before = own_snapshots(&account, &ec2).await;
    let foreign = foreign_snapshots(&account, &ec2).await;

    let report = sweep(&account, &config(&[]), &scheduled(&account)).await;

    // Only the witnessed orphans: AMIs EC2 said became available, then deregistered.
    let expected = set(&[&orphan_a, &orphan_b]);
    let forgeries = set(&[&create_image_form, &copy_form]);
    let region = &report.regions[0];
    assert_eq!(region.aborted, None);
    assert_eq!(ids(&region.deleted), expected);
    assert!(region.failed.is_empty() && region.already_gone.is_empty(), "{region:?}");
    let after = own_snapshots(&account, &ec2).await;
    assert_eq!(before.difference(&after).cloned().collect::<BTreeSet<_>>(), expected, "exactly the orphans are gone");
    for kept in [
        &referenced,
        &disabled_snapshot,
        &protected,
        &backup,
        &dlm,
        &manual,
        &oflive_image,
        &other_volume,
        &tagged_only,
        &create_image_form,
        &copy_form,
    ] {
        assert!(after.contains(kept), "{kept} must be kept");
    }
    let mut expected_kept = BTreeMap::from([
        (KeepReason::ReferencedByImage, 2), // the live image's and the disabled image's
        (KeepReason::SourceImageExists, 1),
        (KeepReason::Protected, 1),
        (KeepReason::AwsBackup, 1),
        (KeepReason::Dlm, 1),
        (KeepReason::NotFromImage, 3),
        (KeepReason::Unwitnessed, 2),
    ]);
    if foreign > 0 {
        expected_kept.insert(KeepReason::NotOwned, foreign);
    }
    assert_eq!(region.kept, expected_kept);
    assert_eq!((region.unreferenced_manual.count, region.unreferenced_manual.gib), (3, 7 + 4 + 2));
    let orphan_ids: BTreeSet<String> = region.orphans.iter().map(|o| o.snapshot_id.to_string()).collect();
    assert_eq!(orphan_ids, expected);
    // The forgeries are listed, each with its size and the AMI its words name, for a person to read.
    let unwitnessed: BTreeSet<String> = region.unwitnessed.iter().map(|o| o.snapshot_id.to_string()).collect();
    assert_eq!(unwitnessed, forgeries);
    let sources: BTreeSet<&str> = region.unwitnessed.iter().map(|o| o.source_image_id.as_str()).collect();
    assert_eq!(sources, BTreeSet::from(["ami-0123456789abcdef0", "ami-0fedcba9876543210"]));
    assert_eq!(region.unwitnessed_gib, 5 + 6);
    // moto's CreateImage snapshots are 15 GiB.
    let size: u64 = region.orphans.iter().map(|o| o.size_gib).sum();
    assert_eq!(size, 30);
    assert_eq!(region.reclaimable_gib, size);
    assert_eq!(region.estimated_monthly_savings_usd, (size as f64 * 0.05 * 100.0).round() / 100.0);
    assert_eq!(region.snapshots_scanned, before.len() as u64 + foreign);
    assert_eq!(region.images_scanned, 2, "the live and the disabled image, listed with Owners=self");
    assert_eq!(report.totals.deleted, 2);
    assert_eq!((report.totals.unwitnessed_count, report.totals.unwitnessed_gib), (2, 11));

    // Adopted (a person read the list): the forgeries go, nothing else.
    let adopted = sweep(&account, &config(&[("ADOPT_UNWITNESSED_ORPHANS", "true")]), &scheduled(&account)).await;
    assert_eq!(ids(&adopted.regions[0].deleted), forgeries);
    assert!(adopted.regions[0].unwitnessed.is_empty());

    // Idempotent: a second run finds nothing more to delete.
    let again = sweep(&account, &config(&[]), &scheduled(&account)).await;
    assert!(again.regions[0].deleted.is_empty() && again.regions[0].orphans.is_empty());
}

/// EC2's answer to `action` with `content`, as the proxy gives it for what moto lacks.
fn answer(action: &str, content: &str) -> Fault {
    Fault::respond(action, amiguard_integration_tests::ec2_answer(action, content))
}

#[tokio::test]
async fn what_ec2_says_of_a_snapshot_keeps_it_locks_the_archive_tier_copies_and_the_protect_tag_in_any_case() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let deletable = orphan(&account, &ec2).await;
    let archived = orphan(&account, &ec2).await;
    ec2.modify_snapshot_tier()
        .snapshot_id(&archived)
        .storage_tier(aws_sdk_ec2::types::TargetStorageTier::Archive)
        .send()
        .await
        .unwrap();
    let locked = orphan(&account, &ec2).await;
    let shouting = orphan(&account, &ec2).await;
    tag_snapshot(&ec2, &shouting, "AMIGUARD:KEEP").await;
    // A DR copy that kept its original's CreateImage words: EC2 gives a copy the volume
    // vol-ffffffff (moto keeps the original's, so the proxy says what EC2 would).
    let copy = crafted(&ec2, "Created by CreateImage(i-0123456789abcdef0) for ami-0123456789abcdef0", &[], 3).await;
    let listed = ec2.describe_snapshots().snapshot_ids(&copy).send().await.unwrap();
    let copy_volume = listed.snapshots()[0].volume_id().unwrap().to_string();
    let (_, restored) = image(&ec2).await;

    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(answer(
        "DescribeLockedSnapshots",
        &format!(
            "<snapshotSet><item><ownerId>{}</ownerId><snapshotId>{locked}</snapshotId><lockState>compliance</lockState></item></snapshotSet>",
            account.account_id
        ),
    ));
    proxy.inject(answer(
        "DescribeFastSnapshotRestores",
        &format!(
            "<fastSnapshotRestoreSet><item><snapshotId>{restored}</snapshotId><availabilityZone>{REGION}a</availabilityZone><state>enabled</state></item></fastSnapshotRestoreSet>"
        ),
    ));
    proxy.inject(Fault::rewrite(
        "DescribeSnapshots",
        format!("<volumeId>{copy_volume}</volumeId>"),
        "<volumeId>vol-ffffffff</volumeId>",
    ));

    let report = sweep_through(&account, &proxy, &config(&[]), Utc::now()).await;

    let region = &report.regions[0];
    assert_eq!(region.aborted, None);
    assert_eq!(region.deleted, std::slice::from_ref(&deletable), "only the plain orphan");
    assert_eq!(
        proxy.count("DeleteSnapshot"),
        1,
        "a kept snapshot (a locked one above all) is never sent a DeleteSnapshot"
    );
    let after = own_snapshots(&account, &ec2).await;
    for kept in [&archived, &locked, &shouting, &copy] {
        assert!(after.contains(kept), "{kept} must be kept");
    }
    assert_eq!(region.kept.get(&KeepReason::Archived), Some(&1));
    assert_eq!(region.kept.get(&KeepReason::Locked), Some(&1));
    assert_eq!(region.kept.get(&KeepReason::Protected), Some(&1));
    assert_eq!(region.kept.get(&KeepReason::NotFromImage), Some(&1), "the copy is manual: {:?}", region.kept);
    // moto's CreateImage snapshots are 15 GiB: what deleting the archive early would still cost.
    assert_eq!((region.archived.count, region.archived.gib), (1, 15));
    assert_eq!(region.archived.early_deletion_cost_usd_at_most, 0.56, "15 GiB x $0.0125 x 3 months");
    // Fast Snapshot Restore decides nothing; it is reported with what it costs.
    assert_eq!(region.fast_snapshot_restores.len(), 1);
    assert_eq!(region.fast_snapshot_restores[0].snapshot_id, restored);
    assert_eq!(region.fast_snapshot_restore_cost_usd_per_hour, 0.75);
}

#[tokio::test]
async fn dry_run_by_default_and_by_event_deletes_nothing() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let a = orphan(&account, &ec2).await;
    let b = orphan(&account, &ec2).await;
    let before = own_snapshots(&account, &ec2).await;

    // DRY_RUN unset: the default is a dry run.
    let report = sweep(&account, &config(&[("DRY_RUN", "")]), &scheduled(&account)).await;
    assert!(report.dry_run);
    let region = &report.regions[0];
    assert_eq!(region.orphans.iter().map(|o| o.snapshot_id.to_string()).collect::<BTreeSet<_>>(), set(&[&a, &b]));
    assert_eq!((region.planned_deletions, region.deleted.len()), (2, 0));
    assert_eq!(own_snapshots(&account, &ec2).await, before);

    // DRY_RUN=false, but the event asks for a dry run.
    let mut event = sample_event("orphan-snapshot-sweeper.dry-run.json");
    event["account"] = Value::String(account.account_id.clone());
    let report = sweep(&account, &config(&[]), &event).await;
    assert!(report.dry_run);
    assert_eq!(own_snapshots(&account, &ec2).await, before);

    // A custom detail is accepted and acts normally.
    let mut event = sample_event("orphan-snapshot-sweeper.custom-detail.json");
    event["account"] = Value::String(account.account_id.clone());
    let report = sweep(&account, &config(&[]), &event).await;
    assert_eq!(ids(&report.regions[0].deleted), set(&[&a, &b]));
}

#[tokio::test]
async fn the_grace_period_keeps_fresh_orphans() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let fresh = orphan(&account, &ec2).await;
    let report = sweep(&account, &config(&[("MIN_AGE_HOURS", "24")]), &scheduled(&account)).await;
    assert_eq!(report.regions[0].kept.get(&KeepReason::TooYoung), Some(&1));
    assert!(report.regions[0].orphans.is_empty());
    assert!(own_snapshots(&account, &ec2).await.contains(&fresh));
}

#[tokio::test]
async fn the_cap_bounds_a_run_and_the_next_run_continues() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    for _ in 0..5 {
        orphan(&account, &ec2).await;
    }
    let capped = config(&[("MAX_DELETIONS", "2")]);
    let report = sweep(&account, &capped, &scheduled(&account)).await;
    let region = &report.regions[0];
    assert_eq!((region.orphans.len(), region.deleted.len()), (5, 2));
    assert_eq!(region.kept.get(&KeepReason::OverCap), Some(&3));
    assert_eq!(own_snapshots(&account, &ec2).await.len(), 3);
    let next = sweep(&account, &capped, &scheduled(&account)).await;
    assert_eq!(next.regions[0].deleted.len(), 2);
    assert_eq!(own_snapshots(&account, &ec2).await.len(), 1);
}

#[tokio::test]
async fn the_circuit_breaker_refuses_to_delete_most_of_a_region() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    for _ in 0..3 {
        orphan(&account, &ec2).await;
    }
    image(&ec2).await;
    let before = own_snapshots(&account, &ec2).await;
    let report = sweep(&account, &config(&[("MAX_DELETE_FRACTION", "0.5")]), &scheduled(&account)).await;
    let region = &report.regions[0];
    assert!(region.deleted.is_empty());
    let reason = region.aborted.as_deref().unwrap();
    assert!(reason.contains("3 orphans of 4 own snapshots"), "{reason}");
    assert_eq!(region.kept.get(&KeepReason::CircuitBreaker), Some(&3));
    assert_eq!(own_snapshots(&account, &ec2).await, before);
}

#[tokio::test]
async fn two_regions_share_one_cap() {
    let account = TestAccount::new().await;
    let (east, eu) = (account.ec2(), account.ec2_in(EU_REGION));
    let east_orphans = [orphan(&account, &east).await, orphan(&account, &east).await];
    let eu_orphans = [orphan(&account, &eu).await, orphan(&account, &eu).await];
    let eu_referenced = image(&eu).await.1;

    let both = config(&[("REGIONS", &format!("{REGION},{EU_REGION}")), ("MAX_DELETIONS", "3")]);
    let report = sweep(&account, &both, &scheduled(&account)).await;
    assert_eq!(report.regions.iter().map(|r| r.region.as_str()).collect::<Vec<_>>(), [REGION, EU_REGION]);
    assert_eq!(ids(&report.regions[0].deleted), set(&[&east_orphans[0], &east_orphans[1]]));
    assert_eq!(report.regions[1].deleted.len(), 1, "what is left of the cap");
    assert_eq!(report.regions[1].kept.get(&KeepReason::OverCap), Some(&1));
    assert!(own_snapshots(&account, &east).await.is_disjoint(&set(&[&east_orphans[0], &east_orphans[1]])));
    let eu_left = own_snapshots(&account, &eu).await;
    assert!(eu_left.contains(&eu_referenced));
    assert_eq!(eu_left.intersection(&set(&[&eu_orphans[0], &eu_orphans[1]])).count(), 1);
    assert_eq!(report.totals.deleted, 3);
}

#[tokio::test]
async fn an_unexpected_event_changes_nothing() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let snapshot = orphan(&account, &ec2).await;
    let regions = vec![(REGION.to_string(), ec2.clone())];
    let ledger = ledger(&account).await;
    let ports = Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let state_change = serde_json::json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "account": account.account_id, "detail": {"instance-id": "i-0123", "state": "stopped"}});
    for payload in [serde_json::json!({}), state_change] {
        let result = handle(&config(&[]), &ports, &payload, &invocation()).await;
        assert!(result.is_err(), "{payload}");
    }
    assert!(own_snapshots(&account, &ec2).await.contains(&snapshot));
}

#[tokio::test]
async fn the_summary_is_published_to_the_report_topic() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    orphan(&account, &ec2).await;
    let (sns, sqs) = (account.sns(), account.sqs());
    let topic = sns.create_topic().name("sweeps").send().await.unwrap().topic_arn.unwrap();
    let queue_url = sqs.create_queue().queue_name("sweeps").send().await.unwrap().queue_url.unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(queue_arn).send().await.unwrap();

    let report = sweep(&account, &config(&[("REPORT_TOPIC_ARN", &topic)]), &scheduled(&account)).await;
    assert_eq!(report.summary_published, Some(true));
    let messages = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).send().await.unwrap();
    let body: Value = serde_json::from_str(messages.messages()[0].body().unwrap()).unwrap();
    assert_eq!(body["Subject"], format!("amiguard sweep {}: 1 orphans, 1 deleted, 0 failed", account.account_id));
    let text = body["Message"].as_str().unwrap();
    assert!(text.contains(&format!("{REGION}:")) && text.contains("1 deleted"), "{text}");
    assert!(text.contains("upper bound"), "{text}");
}

#[tokio::test]
async fn unused_amis_are_retired_then_their_snapshots_swept() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let (unused, unused_snapshot) = image(&ec2).await;
    let (in_use, in_use_snapshot) = image(&ec2).await;
    account.run_instance(&in_use, &[]).await;
    let (templated, _) = image(&ec2).await;
    ec2.create_launch_template()
        .launch_template_name("web")
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(&templated).build())
        .send()
        .await
        .unwrap();
    let (shared, _) = image(&ec2).await;
    ec2.modify_image_attribute()
        .image_id(&shared)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id("111122223333").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (protected, _) = image(&ec2).await;
    ec2.create_tags().resources(&protected).tags(tag("amiguard:keep", "")).send().await.unwrap();
    let (stop_image, _) = image(&ec2).await;
    ec2.create_tags().resources(&stop_image).tags(tag("amiguard:created-by", "snapshot-on-stop")).send().await.unwrap();

    // 0 days: moto cannot backdate an AMI. The age rule is unit-tested with an injected clock.
    let retiring = [("RETIRE_UNUSED_AMIS_AFTER_DAYS", "0")];
    let dry = sweep(&account, &config(&[retiring[0], ("DRY_RUN", "true")]), &scheduled(&account)).await;
    assert_eq!(dry.retired_images.len(), 1);
    assert_eq!(
        (dry.retired_images[0].image_id.as_str(), dry.retired_images[0].outcome),
        (unused.as_str(), RetireOutcome::DryRun)
    );
    assert_eq!(
        dry.regions[0].orphans.iter().map(|o| o.snapshot_id.as_str()).collect::<Vec<_>>(),
        [unused_snapshot.as_str()]
    );
    assert!(own_snapshots(&account, &ec2).await.contains(&unused_snapshot));

    let report = sweep(&account, &config(&retiring), &scheduled(&account)).await;
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::Deregistered);
    assert_eq!(report.regions[0].deleted, std::slice::from_ref(&unused_snapshot));
    assert_eq!(
        report.regions[0].images_kept,
        BTreeMap::from([
            (ImageKeepReason::Protected, 1),
            (ImageKeepReason::CreatedBySnapshotOnStop, 1),
            (ImageKeepReason::UsedByInstance, 1),
            (ImageKeepReason::UsedByLaunchTemplate, 1),
            (ImageKeepReason::Shared, 1),
        ])
    );
    let left = ec2.describe_images().owners("self").send().await.unwrap();
    let left: BTreeSet<&str> = left.images().iter().filter_map(|i| i.image_id()).collect();
    assert!(!left.contains(unused.as_str()));
    assert_eq!(left.len(), 5);
    let snapshots = own_snapshots(&account, &ec2).await;
    assert!(!snapshots.contains(&unused_snapshot) && snapshots.contains(&in_use_snapshot));
}

/// What moto cannot say, said by the proxy as EC2 would: an SSM parameter that names an AMI
/// (`DescribeImageReferences`) and an AMI's deregistration protection (`DescribeImages`).
#[tokio::test]
async fn retirement_keeps_what_ec2_says_is_referenced_protected_disabled_or_shared() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let (unused, unused_snapshot) = image(&ec2).await;
    let (referenced, _) = image(&ec2).await;
    let (protected, _) = image(&ec2).await;
    let (disabled, _) = image(&ec2).await;
    ec2.disable_image().image_id(&disabled).send().await.unwrap();
    let (snapshot_shared, shared_snapshot) = image(&ec2).await;
    ec2.modify_snapshot_attribute()
        .snapshot_id(&shared_snapshot)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        // The form moto reads (EC2 takes this one and the CreateVolumePermission structure).
        .operation_type(aws_sdk_ec2::types::OperationType::Add)
        .user_ids("111122223333")
        .send()
        .await
        .unwrap();

    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(
        answer(
            "DescribeImageReferences",
            &format!(
                "<imageReferenceSet><item><imageId>{referenced}</imageId><resourceType>ssm:Parameter</resourceType><arn>arn:aws:ssm:{REGION}:{}:parameter/golden-ami</arn></item></imageReferenceSet>",
                account.account_id
            ),
        )
        .when_body_contains(&referenced),
    );
    proxy.inject(Fault::rewrite(
        "DescribeImages",
        format!("<imageId>{protected}</imageId>"),
        format!(
            "<imageId>{protected}</imageId><deregistrationProtection>enabled-with-cooldown</deregistrationProtection>"
        ),
    ));
    let report = sweep_through(&account, &proxy, &config(&[("RETIRE_UNUSED_AMIS_AFTER_DAYS", "0")]), Utc::now()).await;

    assert_eq!(report.retired_images.iter().map(|i| i.image_id.as_str()).collect::<Vec<_>>(), [unused.as_str()]);
    assert_eq!(proxy.count("DeregisterImage"), 1, "no DeregisterImage for a protected AMI");
    assert_eq!(
        report.regions[0].images_kept,
        BTreeMap::from([
            (ImageKeepReason::DeregistrationProtected, 1),
            (ImageKeepReason::Disabled, 1),
            (ImageKeepReason::Referenced, 1),
            (ImageKeepReason::SnapshotShared, 1),
        ])
    );
    let left = ec2.describe_images().owners("self").include_disabled(true).send().await.unwrap();
    let left: BTreeSet<&str> = left.images().iter().filter_map(|i| i.image_id()).collect();
    assert_eq!(
        left,
        BTreeSet::from([referenced.as_str(), protected.as_str(), disabled.as_str(), snapshot_shared.as_str()])
    );
    let snapshots = own_snapshots(&account, &ec2).await;
    assert!(snapshots.contains(&shared_snapshot));
    // MIN_AGE_HOURS=0: the retired AMI's snapshot goes in the same run.
    assert_eq!(report.regions[0].deleted, [unused_snapshot]);
}

// ---- faults, through the harness's proxy ----

#[tokio::test]
async fn a_third_of_calls_throttled_slows_the_sweep_but_deletes_every_orphan() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let mut orphans = BTreeSet::new();
    for _ in 0..9 {
        orphans.insert(orphan(&account, &ec2).await);
    }
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::throttle(1.0 / 3.0));
    let report = sweep(&account.through(&proxy), &config(&[]), &scheduled(&account)).await;
    let region = &report.regions[0];
    assert_eq!(region.aborted, None);
    assert_eq!(ids(&region.deleted), orphans);
    assert!(region.failed.is_empty(), "{:?}", region.failed);
    assert!(proxy.calls().iter().any(|c| c.faulted), "the proxy did throttle");
    assert!(proxy.count("DeleteSnapshot") > orphans.len(), "throttled deletions were retried");
    assert!(own_snapshots(&account, &ec2).await.is_disjoint(&orphans));
}

#[tokio::test]
async fn a_listing_refused_by_aws_aborts_the_region_and_deletes_nothing() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    orphan(&account, &ec2).await;
    let before = own_snapshots(&account, &ec2).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("DescribeImages", 403, "UnauthorizedOperation"));
    let report = sweep(&account.through(&proxy), &config(&[]), &scheduled(&account)).await;
    let aborted = report.regions[0].aborted.as_deref().unwrap();
    assert!(aborted.starts_with("listing images failed") && aborted.contains("UnauthorizedOperation"), "{aborted}");
    assert_eq!(proxy.count("DeleteSnapshot"), 0);
    assert_eq!(own_snapshots(&account, &ec2).await, before);
    assert_eq!(report.totals.regions_aborted, 1);
}

#[tokio::test]
async fn a_delete_answered_in_use_is_reported_and_the_others_go_on() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    for _ in 0..3 {
        orphan(&account, &ec2).await;
    }
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::error("DeleteSnapshot", 400, "InvalidSnapshot.InUse").times(1));
    let report = sweep(&account.through(&proxy), &config(&[]), &scheduled(&account)).await;
    let region = &report.regions[0];
    assert_eq!(region.deleted.len(), 2);
    assert_eq!(region.failed.len(), 1);
    assert_eq!(region.failed[0].code, "InvalidSnapshot.InUse");
    assert!(
        own_snapshots(&account, &ec2).await.contains(&region.failed[0].snapshot_id),
        "only confirmed deletions count"
    );
    assert_eq!(report.totals.deleted, 2);
}

// ---- the ledger: the grace clock, the Recycle Bin by mapping, the journal, writes ----

/// An invocation at `now` (the tests' clock: moto cannot backdate anything).
fn at(now: chrono::DateTime<Utc>) -> Invocation {
    Invocation::at(now).with_deadline(SystemTime::now() + Duration::from_secs(900))
}

/// The account's calls through `proxy`, swept with the ledger at `now`.
async fn sweep_through(account: &TestAccount, proxy: &Proxy, config: &Config, now: chrono::DateTime<Utc>) -> Report {
    ledger(account).await;
    let through = account.through(proxy);
    let regions: Vec<(String, aws_sdk_ec2::Client)> =
        config.regions.iter().map(|r| (r.clone(), through.ec2_in(r))).collect();
    let (sns, ledger) = (through.sns(), amiguard_integration_tests::ledger::on(&through));
    let ports = Ports { regions: &regions, publisher: &sns, ledger: Some(&ledger) };
    handle(config, &ports, &scheduled(account), &at(now)).await.unwrap().sweep().expect("a sweep's report")
}

#[tokio::test]
async fn an_old_snapshot_is_deleted_only_min_age_hours_after_amiguard_first_saw_it_orphaned() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let (image_id, snapshot) = image(&ec2).await;
    // moto cannot backdate: the proxy makes every snapshot look two years old.
    let proxy = Proxy::start(&moto().endpoint).await;
    let this_year = Utc::now().format("<startTime>%Y-").to_string();
    let two_years_ago = (Utc::now() - chrono::Duration::days(730)).format("<startTime>%Y-").to_string();
    proxy.inject(Fault::rewrite("DescribeSnapshots", this_year, two_years_ago));
    let day = config(&[("MIN_AGE_HOURS", "24")]);
    let t0 = Utc::now();

    assert!(sweep_through(&account, &proxy, &day, t0).await.regions[0].deleted.is_empty());
    // Deregistered by mistake five minutes before the next daily sweep.
    ec2.deregister_image().image_id(&image_id).send().await.unwrap();
    let first = sweep_through(&account, &proxy, &day, t0 + chrono::Duration::hours(24)).await;
    let region = &first.regions[0];
    assert!(region.deleted.is_empty(), "no time at all to notice would be no grace at all");
    assert_eq!(region.waiting.len(), 1);
    assert_eq!(region.waiting[0].orphan.snapshot_id, snapshot.as_str());
    assert!(region.waiting[0].orphan.start_time < t0 - chrono::Duration::days(700), "it looks two years old");
    assert_eq!(region.waiting[0].deletable_after, t0 + chrono::Duration::hours(48));
    let almost = sweep_through(&account, &proxy, &day, t0 + chrono::Duration::hours(47)).await;
    assert!(almost.regions[0].deleted.is_empty());
    let due = sweep_through(&account, &proxy, &day, t0 + chrono::Duration::hours(48)).await;
    assert_eq!(due.regions[0].deleted, std::slice::from_ref(&snapshot));
    assert!(!own_snapshots(&account, &ec2).await.contains(&snapshot));
}

#[tokio::test]
async fn an_ami_deregistration_event_starts_the_clock_of_its_snapshots() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let (with_event, snapshot_of_event) = image(&ec2).await;
    let (without_event, snapshot_without) = image(&ec2).await;
    let hour = config(&[("MIN_AGE_HOURS", "1")]);
    let t0 = Utc::now();
    sweep_at(&account, &hour, &scheduled(&account), at(t0)).await;
    for image_id in [&with_event, &without_event] {
        ec2.deregister_image().image_id(image_id).send().await.unwrap();
    }
    // Delivered ten minutes after the sweep: EC2 no longer lists the AMI, so it is gone as of
    // then (amiguard's clock; the event's own time says nothing).
    let mut event = sample_event("orphan-snapshot-sweeper.ami-deregistered.json");
    event["account"] = Value::String(account.account_id.clone());
    event["detail"]["ImageId"] = Value::String(with_event.clone());
    let delivered = at(t0 + chrono::Duration::minutes(10));
    let ledger = ledger(&account).await;
    let regions = vec![(REGION.to_string(), ec2.clone())];
    let ports = Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let recorded = serde_json::to_value(handle(&hour, &ports, &event, &delivered).await.unwrap()).unwrap();
    assert_eq!(recorded["outcome"], "recorded");
    let again = serde_json::to_value(handle(&hour, &ports, &event, &delivered).await.unwrap()).unwrap();
    assert_eq!(again["outcome"], "already-recorded", "a redelivered event changes nothing");

    // 70 minutes after the deregistration: one hour since the event, but only just seen by a sweep.
    let report = sweep_at(&account, &hour, &scheduled(&account), at(t0 + chrono::Duration::minutes(70))).await;
    let region = &report.regions[0];
    assert_eq!(region.deleted, [snapshot_of_event]);
    assert_eq!(region.waiting.iter().map(|w| w.orphan.snapshot_id.to_string()).collect::<Vec<_>>(), [snapshot_without]);
}

#[tokio::test]
async fn a_snapshot_an_image_in_the_recycle_bin_mapped_is_kept_whatever_its_description() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    // A snapshot whose description names an AMI long gone, registered into a new AMI: moto's
    // RegisterImage ignores block-device mappings, so the proxy makes the new image map it.
    let volume = ec2.create_volume().availability_zone(format!("{REGION}a")).size(8).send().await.unwrap();
    let volume_id = volume.volume_id().unwrap().to_string();
    let description = format!("Created by CreateImage(i-0123456789abcdef0) for ami-0deadbeefdeadbeef from {volume_id}");
    let registered_from = ec2.create_snapshot().volume_id(&volume_id).description(description).send().await.unwrap();
    let registered_from = registered_from.snapshot_id().unwrap().to_string();
    let (binned_image, own_snapshot) = image(&ec2).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault::rewrite("DescribeImages", own_snapshot.clone(), registered_from.clone()));
    let checked = config(&[("RECYCLE_BIN_CHECK", "true")]);
    let bin = |images: &[&str]| {
        let items: String =
            images.iter().map(|id| format!("<item><imageId>{id}</imageId><name>binned</name></item>")).collect();
        format!("<ListImagesInRecycleBinResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><imageSet>{items}</imageSet></ListImagesInRecycleBinResponse>")
    };
    proxy.inject(Fault::respond("ListImagesInRecycleBin", bin(&[])));
    let seen = sweep_through(&account, &proxy, &checked, Utc::now()).await;
    assert_eq!(seen.regions[0].kept.get(&KeepReason::ReferencedByImage), Some(&1), "{:?}", seen.regions[0].kept);

    // Deregistered into the Recycle Bin (a retention rule), which lists no mappings.
    ec2.deregister_image().image_id(&binned_image).send().await.unwrap();
    proxy.clear_faults();
    proxy.inject(Fault::respond("ListImagesInRecycleBin", bin(&[&binned_image])));
    let report = sweep_through(&account, &proxy, &checked, Utc::now()).await;

    let region = &report.regions[0];
    assert!(region.deleted.is_empty(), "{:?}", region.deleted);
    assert!(
        own_snapshots(&account, &ec2).await.contains(&registered_from),
        "the binned image could not be restored without it"
    );
    assert_eq!(region.kept.get(&KeepReason::SourceImageInRecycleBin), Some(&2), "{:?}", region.kept);
}

#[tokio::test]
async fn every_deletion_is_journaled_under_its_run_and_one_query_lists_them() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let orphans = [orphan(&account, &ec2).await, orphan(&account, &ec2).await];
    let report = sweep(&account, &config(&[]), &scheduled(&account)).await;
    assert_eq!(ids(&report.regions[0].deleted), set(&[&orphans[0], &orphans[1]]));

    let journal = amiguard::ledger::store::query_all(&ledger(&account).await, &format!("run#{}", report.run_id), "")
        .await
        .unwrap();
    /// What a journal entry says: snapshot, rule, size, source image.
    type Entry = (String, Option<String>, Option<i64>, Option<String>);
    let mut entries: Vec<Entry> = journal
        .iter()
        .map(|e| {
            (
                e.s("resource_id").unwrap().to_string(),
                e.s("rule").map(str::to_string),
                e.n("size_gib"),
                e.s("source_image_id").map(str::to_string),
            )
        })
        .collect();
    entries.sort();
    let mut expected: Vec<String> = orphans.to_vec();
    expected.sort();
    assert_eq!(entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), expected);
    for (snapshot, rule, size, source) in &entries {
        let orphan = report.regions[0].orphans.iter().find(|o| o.snapshot_id == snapshot.as_str()).unwrap();
        assert_eq!(rule.as_deref(), Some("orphan"));
        let entry = journal.iter().find(|e| e.s("resource_id") == Some(snapshot.as_str())).unwrap();
        assert_eq!(entry.s("state"), Some("done"));
        assert_eq!(*size, Some(orphan.size_gib as i64));
        assert_eq!(source.as_deref(), Some(orphan.source_image_id.as_str()));
    }
    assert!(report.full_lists.as_deref().unwrap().contains(&format!("run#{}", report.run_id)));
}

#[tokio::test]
async fn an_unchanged_account_costs_one_run_record_and_a_first_sweep_batches_its_writes() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    for _ in 0..3 {
        image(&ec2).await;
    }
    for _ in 0..30 {
        crafted(&ec2, "Created by CreateImage(i-0123456789abcdef0) for ami-0aaaaaaaaaaaaaaaa", &[], 1).await;
    }
    let dry = config(&[("DRY_RUN", "true"), ("MIN_AGE_HOURS", "24")]);
    let proxy = Proxy::start(&moto().endpoint).await;
    let first = sweep_through(&account, &proxy, &dry, Utc::now()).await;
    let writes = |proxy: &Proxy| -> Vec<String> {
        proxy
            .calls()
            .iter()
            .filter(|c| c.service == "dynamodb" && !matches!(c.action.as_str(), "Query" | "DescribeTable"))
            .map(|c| c.action.clone())
            .collect()
    };
    // 3 images and 30 orphans first seen (unwitnessed: only their descriptions name an AMI,
    // but their clocks run): 33 items, in two BatchWriteItem calls, and the run.
    assert_eq!(first.regions[0].ledger_writes, 33);
    assert_eq!(writes(&proxy), ["BatchWriteItem", "BatchWriteItem", "PutItem"]);
    assert_eq!(first.regions[0].unwitnessed.len(), 30);

    let proxy = Proxy::start(&moto().endpoint).await;
    let again = sweep_through(&account, &proxy, &dry, Utc::now()).await;
    assert_eq!(again.regions[0].ledger_writes, 0);
    assert_eq!(writes(&proxy), ["PutItem"], "one run record, nothing per image or snapshot");
    let unwitnessed = &again.regions[0].unwitnessed;
    assert_eq!(unwitnessed.len(), 30);
    // The ledger keeps seconds.
    let first_seen = first.regions[0].unwitnessed[0].orphaned_since.trunc_subsecs(0);
    assert!(unwitnessed.iter().all(|o| o.orphaned_since == first_seen), "by the first sighting's clock");
}

/// Own snapshots and images that carry the Recycle Bin rules' tag now.
async fn tagged_for_the_recycle_bin(ec2: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let key = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(amiguard::recycle_bin::TAG_KEY).build();
    let snapshots = ec2.describe_snapshots().owner_ids("self").filters(key.clone()).send().await.unwrap();
    let images = ec2.describe_images().owners("self").filters(key).send().await.unwrap();
    snapshots
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id())
        .chain(images.images().iter().filter_map(|i| i.image_id()))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_sweeper_tags_exactly_what_it_then_deletes_or_retires_for_the_recycle_bin_and_a_dry_run_nothing() {
    use amiguard_integration_tests::recycle_bin;
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let orphans: BTreeSet<String> =
        [orphan(&account, &ec2).await, orphan(&account, &ec2).await, orphan(&account, &ec2).await].into();
    let (unused, unused_snapshot) = image(&ec2).await;
    let in_use = image(&ec2).await;
    account.run_instance(&in_use.0, &[]).await;
    let protected = orphan(&account, &ec2).await;
    tag_snapshot(&ec2, &protected, "amiguard:keep").await;
    let manual = crafted(&ec2, "before the upgrade", &[], 8).await;
    let settings = [("RETIRE_UNUSED_AMIS_AFTER_DAYS", "0"), ("RECYCLE_BIN_RETENTION_DAYS", "7")];

    let proxy = Proxy::start(&moto().endpoint).await;
    let dry =
        sweep_through(&account, &proxy, &config(&[settings[0], settings[1], ("DRY_RUN", "true")]), Utc::now()).await;
    assert!(dry.regions[0].restorable_until.is_none() && dry.retired_images[0].restorable_until.is_none());
    assert_eq!(proxy.count("CreateTags"), 0, "a dry run tags nothing");

    let started = Utc::now();
    let report = sweep_through(&account, &proxy, &config(&settings), started).await;
    let calls = proxy.calls();
    // One tagging per step here (each well under 1,000 ids): the AMI before its deregistration,
    // the orphans before their deletions.
    let taggings = recycle_bin::taggings(&calls);
    assert_eq!(taggings.len(), 2, "{taggings:?}");
    let deregistered = recycle_bin::assert_each_tagged_before(&calls, "DeregisterImage", "ImageId");
    let deleted = recycle_bin::assert_each_tagged_before(&calls, "DeleteSnapshot", "SnapshotId");
    assert_eq!(deregistered, BTreeSet::from([unused.clone()]));
    // The orphans, and (MIN_AGE_HOURS=0) the retired AMI's snapshot, in the same run.
    let mut expected = orphans.clone();
    expected.insert(unused_snapshot.clone());
    assert_eq!(deleted, expected);
    assert_eq!(ids(&report.regions[0].deleted), expected);
    // Nothing but what was deleted or retired got the tag.
    let mut gone = deleted.clone();
    gone.insert(unused.clone());
    assert_eq!(recycle_bin::tagged(&calls), gone);
    let still_tagged = tagged_for_the_recycle_bin(&ec2).await;
    for kept in [&in_use.1, &protected, &manual, &in_use.0] {
        assert!(!still_tagged.contains(kept), "{kept} was kept and must not carry the tag");
    }
    // The report says until when: a week from the run (each deletion's own time is in the journal).
    let week = chrono::Duration::days(7);
    let until = report.regions[0].restorable_until.expect("restorable_until");
    assert!(until >= started + week && until <= Utc::now() + week, "{until}");
    assert_eq!(report.recycle_bin_retention_days, 7);
    let retired = &report.retired_images[0];
    assert_eq!((retired.outcome, retired.restorable_until.is_some()), (RetireOutcome::Deregistered, true));
    let journal = amiguard::ledger::store::query_all(&ledger(&account).await, &format!("run#{}", report.run_id), "")
        .await
        .unwrap();
    assert_eq!(journal.len(), deleted.len() + 1);
    for entry in &journal {
        assert_eq!(entry.s("state"), Some("done"), "{entry:?}");
        // The ledger keeps times to the second, rounded down: still a lower bound.
        let until = entry.time("restorable_until").expect("each entry says until when");
        assert!(until >= started.trunc_subsecs(0) + week && until <= Utc::now() + week, "{until}");
    }
}
