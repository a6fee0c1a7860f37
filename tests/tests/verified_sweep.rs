//! orphan-snapshot-sweeper acts only on what amiguard verified (issue 21, items 1 to 3), against a
//! real moto server:
//!
//! - an orphan is deleted only when *witnessed* (the ledger recorded its AMI mapping it while the
//!   AMI was registered: a sweep's listing, an `available` AMI event, a retirement) or adopted
//!   (`ADOPT_UNWITNESSED_ORPHANS=true`); an EC2-style description alone, which anyone can write
//!   with `CreateSnapshot` or `CopySnapshot`, keeps it `unwitnessed`;
//! - an orphan shared with another account or public (`createVolumePermission`) is kept `shared`,
//!   and so is one whose permissions could not be read;
//! - the grace clock starts at amiguard's own clock once EC2 confirms the AMI is gone, never at an
//!   event's `time`.
//!
//! The answers are read as JSON: the report's contract, field by field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::sweeper_config as config;
use amiguard_integration_tests::{moto, sample_event, TestAccount, AMAZON_LINUX_AMI, REGION};
use aws_sdk_ec2::types::{OperationType, SnapshotAttributeName};
use chrono::{DateTime, SubsecRound, Utc};
use orphan_snapshot_sweeper::{handle, Config, Invocation, Ports};
use serde_json::{json, Value};

/// A disaster-recovery region: snapshots are copied there, AMIs never registered.
const DR_REGION: &str = "eu-west-1";

/// A time the ledger keeps exactly (it keeps seconds).
fn start() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// One client per region of `config`, through `proxy` when given.
fn clients(account: &TestAccount, config: &Config) -> Vec<(String, aws_sdk_ec2::Client)> {
    config.regions.iter().map(|region| (region.clone(), account.ec2_in(region))).collect()
}

/// One invocation with `event` at the clock `now`, with the account's ledger: its answer as JSON.
async fn invoke(
    account: &TestAccount,
    regions: &[(String, aws_sdk_ec2::Client)],
    config: &Config,
    event: &Value,
    now: DateTime<Utc>,
) -> Value {
    let ledger = amiguard_integration_tests::ledger::create(account).await;
    let ports = Ports { regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let invocation = Invocation::at(now).with_deadline(SystemTime::now() + Duration::from_secs(900));
    serde_json::to_value(handle(config, &ports, event, &invocation).await.unwrap()).unwrap()
}

/// A sweep of the regions of `config` at `now`.
async fn sweep(account: &TestAccount, config: &Config, now: DateTime<Utc>) -> Value {
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);
    invoke(account, &clients(account, config), config, &event, now).await
}

/// An `EC2 AMI State Change` of `image_id` to `state`, dated `time`, delivered at `now`.
async fn ami_event(
    account: &TestAccount,
    region: &str,
    image_id: &str,
    state: &str,
    time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Value {
    let sample = if state == "available" { "ami-available" } else { "ami-deregistered" };
    let mut event = sample_event(&format!("orphan-snapshot-sweeper.{sample}.json"));
    event["account"] = json!(account.account_id);
    event["region"] = json!(region);
    event["resources"] = json!([format!("arn:aws:ec2:{region}::image/{image_id}")]);
    event["detail"]["ImageId"] = json!(image_id);
    event["detail"]["State"] = json!(state);
    event["time"] = json!(amiguard::ledger::store::format_time(time));
    let config = config(&[("REGIONS", region)]);
    invoke(account, &clients(account, &config), &config, &event, now).await
}

/// An AMI of a fresh instance, and its (one) snapshot.
async fn image(account: &TestAccount, ec2: &aws_sdk_ec2::Client) -> (String, String) {
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
    let name = format!("verified-{}-{instance_id}", account.account_id);
    let image_id = ec2.create_image().instance_id(instance_id).name(name).send().await.unwrap().image_id.unwrap();
    let described = ec2.describe_images().image_ids(&image_id).send().await.unwrap();
    let snapshot_id =
        described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    (image_id, snapshot_id)
}

/// A snapshot of a new volume described as anyone can describe one with `CreateSnapshot`.
async fn described_by_hand(ec2: &aws_sdk_ec2::Client, region: &str, description: &str, size: i32) -> String {
    let volume = ec2.create_volume().availability_zone(format!("{region}a")).size(size).send().await.unwrap();
    let snapshot =
        ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).description(description).send().await.unwrap();
    snapshot.snapshot_id().unwrap().to_string()
}

async fn own_snapshots(account: &TestAccount, ec2: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let listed = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    listed
        .snapshots()
        .iter()
        .filter(|s| s.owner_id() == Some(account.account_id.as_str()))
        .map(|s| s.snapshot_id().unwrap().to_string())
        .collect()
}

/// The ledger's items under `pk`.
async fn ledger_items(account: &TestAccount, pk: &str) -> Vec<amiguard::ledger::Item> {
    let ledger = amiguard_integration_tests::ledger::create(account).await;
    amiguard::ledger::store::query_all(&ledger, pk, "").await.unwrap()
}

fn strings(list: &Value) -> BTreeSet<String> {
    list.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array().unwrap().iter().map(|o| o["snapshot_id"].as_str().unwrap().to_string()).collect()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn only_witnessed_orphans_are_deleted_and_adoption_takes_the_rest_after_a_person_read_them() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let t0 = start();
    // An AMI the daily sweep lists (a dry run still records what it saw).
    let (listed, listed_snapshot) = image(&account, &ec2).await;
    sweep(&account, &config(&[("DRY_RUN", "true")]), t0).await;
    // An AMI EC2 said became available (the sweeper's rule delivers the event).
    let (announced, announced_snapshot) = image(&account, &ec2).await;
    let recorded = ami_event(&account, REGION, &announced, "available", t0, t0).await;
    assert_eq!(recorded["outcome"], "recorded", "{recorded}");
    // An AMI made and deregistered before amiguard was installed: nothing ever saw it.
    let (before, before_snapshot) = image(&account, &ec2).await;
    for image_id in [&listed, &announced, &before] {
        ec2.deregister_image().image_id(image_id).send().await.unwrap();
    }
    // EC2's words, written by hand: a CreateImage description (no volume named, as newer EC2
    // snapshots and moto write it) and a CopyImage one.
    let created =
        described_by_hand(&ec2, REGION, "Created by CreateImage(i-0123456789abcdef0) for ami-0123456789abcdef0", 5)
            .await;
    let copied = described_by_hand(
        &ec2,
        REGION,
        "Copied for DestinationAmi ami-0fedcba9876543210 from SourceAmi ami-0aaaabbbbccccdddd for SourceSnapshot snap-0123456789abcdef0. Task created on 1,700,000,000.",
        6,
    )
    .await;

    let report = sweep(&account, &config(&[]), t0 + hours(1)).await;

    let region = &report["regions"][0];
    assert_eq!(region["aborted"], Value::Null, "{region}");
    assert_eq!(strings(&region["deleted"]), set(&[&listed_snapshot, &announced_snapshot]), "{region}");
    let unwitnessed = set(&[&before_snapshot, &created, &copied]);
    assert_eq!(region["kept"]["unwitnessed"], 3, "{region}");
    assert_eq!(ids(&region["unwitnessed"]), unwitnessed, "each listed, for a person to read");
    assert_eq!(region["counts"]["unwitnessed"], 3);
    // moto's CreateImage snapshots are 15 GiB; the hand-made ones 5 and 6.
    assert_eq!(region["unwitnessed_gib"], 15 + 5 + 6);
    assert_eq!(
        (report["totals"]["unwitnessed_count"].clone(), report["totals"]["unwitnessed_gib"].clone()),
        (json!(3), json!(26))
    );
    assert!(own_snapshots(&account, &ec2).await.is_superset(&unwitnessed));
    // Their clock runs while they are kept: the ledger has each one's first sighting.
    let clocks: BTreeSet<String> =
        ledger_items(&account, &format!("orphans#{REGION}")).await.iter().map(|i| i.sk.clone()).collect();
    assert!(clocks.is_superset(&unwitnessed), "{clocks:?}");

    // A person read the list and adopts them for one run.
    let adopted = sweep(&account, &config(&[("ADOPT_UNWITNESSED_ORPHANS", "true")]), t0 + hours(2)).await;
    let region = &adopted["regions"][0];
    assert_eq!(strings(&region["deleted"]), unwitnessed, "{region}");
    assert!(own_snapshots(&account, &ec2).await.is_disjoint(&unwitnessed));
}

#[tokio::test]
async fn an_unwitnessed_orphans_clock_runs_while_it_is_kept_so_adopting_it_later_does_not_restart_the_wait() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let (before, snapshot) = image(&account, &ec2).await;
    ec2.deregister_image().image_id(&before).send().await.unwrap();
    let t0 = start();

    // The first day: the stack's defaults, a dry run with a day's grace.
    let first = sweep(&account, &config(&[("DRY_RUN", "true"), ("MIN_AGE_HOURS", "24")]), t0).await;
    let region = &first["regions"][0];
    assert_eq!(region["kept"]["unwitnessed"], 1, "{region}");
    assert_eq!(region["kept"]["too_young"], Value::Null, "{region}");
    assert_eq!(ids(&region["unwitnessed"]), set(&[&snapshot]));
    assert_eq!(region["unwitnessed"][0]["orphaned_since"], json!(amiguard::ledger::store::format_time(t0)));
    assert_eq!(region["waiting"], json!([]), "not waiting to be deleted: kept until a person adopts it");

    // A day and an hour later, adopted: deletable at once, its clock ran from the first sight.
    let adopting = config(&[("MIN_AGE_HOURS", "24"), ("ADOPT_UNWITNESSED_ORPHANS", "true")]);
    let report = sweep(&account, &adopting, t0 + hours(25)).await;
    assert_eq!(strings(&report["regions"][0]["deleted"]), set(&[&snapshot]), "{report}");
}

#[tokio::test]
async fn a_dr_copy_that_kept_its_originals_description_is_kept_in_a_region_where_that_ami_never_existed() {
    let account = TestAccount::new().await;
    let (east, dr) = (account.ec2(), account.ec2_in(DR_REGION));
    let (original, snapshot) = image(&account, &east).await;
    assert_eq!(ami_event(&account, REGION, &original, "available", start(), start()).await["outcome"], "recorded");
    let listed = east.describe_snapshots().snapshot_ids(&snapshot).send().await.unwrap();
    let description = listed.snapshots()[0].description().unwrap().to_string();
    assert!(description.starts_with("Created by CreateImage("), "{description}");
    // A DR script copies the snapshot and keeps its description, or writes CopyImage's words.
    let copy = |description: String| {
        let (dr, snapshot) = (dr.clone(), snapshot.clone());
        async move {
            let copied = dr
                .copy_snapshot()
                .source_region(REGION)
                .source_snapshot_id(&snapshot)
                .description(description)
                .send()
                .await
                .unwrap();
            copied.snapshot_id().unwrap().to_string()
        }
    };
    let kept_words = copy(description.clone()).await;
    let copy_words = copy(format!(
        "Copied for DestinationAmi {original} from SourceAmi ami-0aaaabbbbccccdddd for SourceSnapshot {snapshot}. Task created on 1,700,000,000."
    ))
    .await;
    east.deregister_image().image_id(&original).send().await.unwrap();

    let both = config(&[("REGIONS", &format!("{REGION},{DR_REGION}"))]);
    let report = sweep(&account, &both, start()).await;

    let (home, away) = (&report["regions"][0], &report["regions"][1]);
    assert_eq!(strings(&home["deleted"]), set(&[&snapshot]), "the witnessed original: {home}");
    assert_eq!(away["region"], DR_REGION);
    assert_eq!(away["deleted"], json!([]), "{away}");
    assert_eq!(away["kept"]["unwitnessed"], 2, "{away}");
    assert!(own_snapshots(&account, &dr).await.is_superset(&set(&[&kept_words, &copy_words])));
}

#[tokio::test]
async fn an_available_event_records_the_mapping_ec2_lists_and_nothing_for_an_image_it_does_not() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let (available, snapshot) = image(&account, &ec2).await;
    let (gone, _) = image(&account, &ec2).await;
    ec2.deregister_image().image_id(&gone).send().await.unwrap();
    let now = start();

    let recorded = ami_event(&account, REGION, &available, "available", now, now).await;
    assert_eq!((recorded["outcome"].clone(), recorded["image_id"].clone()), (json!("recorded"), json!(available)));
    let again = ami_event(&account, REGION, &available, "available", now, now).await;
    assert_eq!(again["outcome"], "already-recorded", "a redelivery changes nothing");
    let images = ledger_items(&account, &format!("images#{REGION}")).await;
    let record = images.iter().find(|i| i.sk == available).expect("the image's record");
    assert_eq!(record.list("snapshot_ids"), Some(&[snapshot.clone()][..]), "EC2's own mapping");

    // EC2 does not list these as own images: gone, never existed, another account's.
    for image_id in [gone.as_str(), "ami-0123456789abcdef0", AMAZON_LINUX_AMI] {
        let answer = ami_event(&account, REGION, image_id, "available", now, now).await;
        assert_eq!(answer["outcome"], "skipped", "{image_id}: {answer}");
        assert!(answer["reason"].as_str().unwrap().contains("not listed"), "{answer}");
    }
    let images = ledger_items(&account, &format!("images#{REGION}")).await;
    assert_eq!(images.iter().map(|i| i.sk.clone()).collect::<Vec<_>>(), [available], "nothing else recorded");
}

#[tokio::test]
async fn a_forged_deregistration_time_never_shortens_the_grace_period() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let day = config(&[("MIN_AGE_HOURS", "24")]);
    let t0 = start();
    let (image_id, snapshot) = image(&account, &ec2).await;
    let (still_listed, _) = image(&account, &ec2).await;
    sweep(&account, &day, t0).await;
    ec2.deregister_image().image_id(&image_id).send().await.unwrap();

    // Twenty hours later amiguard learns (EC2 confirms) the AMI is gone; the event claims it went a
    // minute after the last sweep.
    let learned = t0 + hours(20);
    let forged =
        ami_event(&account, REGION, &image_id, "deregistered", t0 + chrono::Duration::minutes(1), learned).await;
    assert_eq!(forged["outcome"], "recorded", "{forged}");
    let events = ledger_items(&account, &format!("ami-events#{REGION}")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].time("deregistered_at"), Some(learned), "amiguard's clock, not the event's time");
    // An event for an AMI EC2 still lists changes nothing.
    let lie = ami_event(&account, REGION, &still_listed, "deregistered", t0 - hours(24 * 30), learned).await;
    assert_eq!(lie["outcome"], "skipped", "{lie}");
    assert!(lie["reason"].as_str().unwrap().contains("still lists"), "{lie}");
    assert_eq!(ledger_items(&account, &format!("ami-events#{REGION}")).await.len(), 1);

    // A day after the forged time, but only 4 hours after amiguard learned it: kept.
    let early = sweep(&account, &day, t0 + hours(24) + chrono::Duration::minutes(2)).await;
    let region = &early["regions"][0];
    assert_eq!(region["deleted"], json!([]), "{region}");
    assert_eq!(region["waiting"][0]["snapshot_id"], json!(snapshot));
    assert_eq!(
        region["waiting"][0]["deletable_after"],
        json!(amiguard::ledger::store::format_time(learned + hours(24)))
    );
    assert!(own_snapshots(&account, &ec2).await.contains(&snapshot));
    let due = sweep(&account, &day, learned + hours(24)).await;
    assert_eq!(strings(&due["regions"][0]["deleted"]), set(&[&snapshot]), "{due}");
}

#[tokio::test]
async fn a_shared_or_public_orphan_is_kept_and_so_is_one_whose_sharing_could_not_be_read() {
    let account = TestAccount::new().await;
    let ec2 = account.ec2();
    let now = start();
    let mut witnessed = Vec::new();
    for _ in 0..5 {
        let (image_id, snapshot) = image(&account, &ec2).await;
        assert_eq!(ami_event(&account, REGION, &image_id, "available", now, now).await["outcome"], "recorded");
        ec2.deregister_image().image_id(&image_id).send().await.unwrap();
        witnessed.push(snapshot);
    }
    let [with_account, public, unreadable, plain, protected] = witnessed.try_into().unwrap();
    let share = |snapshot: &String, user: Option<&str>, group: Option<&str>| {
        ec2.modify_snapshot_attribute()
            .snapshot_id(snapshot)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(OperationType::Add)
            .set_user_ids(user.map(|u| vec![u.to_string()]))
            .set_group_names(group.map(|g| vec![g.to_string()]))
            .send()
    };
    share(&with_account, Some("111122223333"), None).await.unwrap();
    share(&public, None, Some("all")).await.unwrap();
    ec2.create_tags()
        .resources(&protected)
        .tags(aws_sdk_ec2::types::Tag::builder().key("amiguard:keep").value("").build())
        .send()
        .await
        .unwrap();
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(
        Fault::error("DescribeSnapshotAttribute", 403, "UnauthorizedOperation").when_body_contains(&unreadable),
    );
    // After every snapshot was made (a snapshot younger than the clock is too young).
    let now = Utc::now();
    let through = account.through(&proxy);
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);

    for dry_run in ["true", "false"] {
        let config = config(&[("DRY_RUN", dry_run)]);
        let report = invoke(&account, &clients(&through, &config), &config, &event, now).await;
        let region = &report["regions"][0];
        assert_eq!(region["kept"]["shared"], 3, "{dry_run}: {region}");
        assert_eq!(region["planned_deletions"], 1, "{dry_run}: {region}");
        let warned = report["warnings"].as_array().unwrap().iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains(&unreadable) && w.contains("UnauthorizedOperation")
        });
        assert!(warned, "the unread one is reported: {report}");
    }
    let calls = proxy.calls();
    let asked: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.action == "DescribeSnapshotAttribute")
        .filter_map(|c| c.param("SnapshotId"))
        .collect();
    assert_eq!(asked, set(&[&with_account, &public, &unreadable, &plain]), "only those about to be deleted");
    let deletes: Vec<String> =
        calls.iter().filter(|c| c.action == "DeleteSnapshot").filter_map(|c| c.param("SnapshotId")).collect();
    assert_eq!(deletes, std::slice::from_ref(&plain));
    let left = own_snapshots(&account, &ec2).await;
    assert!(left.is_superset(&set(&[&with_account, &public, &unreadable, &protected])) && !left.contains(&plain));
}
