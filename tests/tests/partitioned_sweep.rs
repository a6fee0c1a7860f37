//! orphan-snapshot-sweeper lists a large region's snapshots in partitions (issue 23, part 2),
//! against a real moto server behind the fault proxy:
//!
//! - a region whose last complete pass (the ledger) listed more than `PARTITIONED_LISTING_ABOVE`
//!   snapshots is listed in 16 partitions (`snapshot-id` filter `snap-*0` ... `snap-*f`, which
//!   moto 5.2.5 honours with EC2's wildcards; it ignores `MaxResults` and `NextToken`, so each
//!   partition is one page) and deletes exactly the orphans one listing finds;
//! - a partition whose listing was cut deletes nothing; the others go on;
//! - markedly fewer snapshots than the last complete pass: nothing deleted, and why, and the
//!   short listing never becomes the baseline (issue 23's review, B3); a region's first
//!   partitioned pass, with no complete pass recorded, records it and deletes nothing;
//! - every complete listing records the pass size, in a dry run too (not with LEDGER_READ_ONLY);
//! - a region too large for one run continues its pass in the next, the partitions left first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use amiguard_integration_tests::proxy::{Fault, FaultKind, Proxy};
use amiguard_integration_tests::sweeper_config as config;
use amiguard_integration_tests::{moto, sample_event, TestAccount, AMAZON_LINUX_AMI, REGION};
use chrono::{SubsecRound, Utc};
use orphan_snapshot_sweeper::core::partitions::{self, Passes, PARTITIONS};
use orphan_snapshot_sweeper::ports::Records;
use orphan_snapshot_sweeper::{handle, Config, Invocation, Ports, PARTITION_CONCURRENCY};
use serde_json::{json, Value};

/// A sweep through `account`'s clients (through a proxy when it is one), with Lambda's deadline
/// `deadline` from now.
async fn sweep_until(account: &TestAccount, config: &Config, deadline: Duration) -> Value {
    let regions = vec![(REGION.to_string(), account.ec2())];
    let ledger = amiguard_integration_tests::ledger::create(account).await;
    let ports = Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(account.account_id);
    let invocation = Invocation::at(Utc::now().trunc_subsecs(0)).with_deadline(SystemTime::now() + deadline);
    serde_json::to_value(handle(config, &ports, &event, &invocation).await.unwrap()).unwrap()
}

async fn sweep(account: &TestAccount, config: &Config) -> Value {
    sweep_until(account, config, Duration::from_secs(900)).await
}

/// `gone` AMIs made and deregistered (their snapshots are orphans, adopted here), `live` AMIs
/// kept, and `manual` snapshots of a volume: the orphans' ids, and every snapshot's.
async fn seed(account: &TestAccount, gone: usize, live: usize, manual: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let ec2 = account.ec2();
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let mut orphans = BTreeSet::new();
    for n in 0..gone + live {
        let name = format!("partitioned-{}-{n}", account.account_id);
        let image = ec2.create_image().instance_id(&instance).name(name).send().await.unwrap().image_id.unwrap();
        if n < gone {
            let described = ec2.describe_images().image_ids(&image).send().await.unwrap();
            let snapshot = described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap();
            orphans.insert(snapshot.to_string());
            ec2.deregister_image().image_id(&image).send().await.unwrap();
        }
    }
    let volume = ec2.create_volume().availability_zone(format!("{REGION}a")).size(1).send().await.unwrap();
    for n in 0..manual {
        ec2.create_snapshot()
            .volume_id(volume.volume_id().unwrap())
            .description(format!("nightly {n}"))
            .send()
            .await
            .unwrap();
    }
    (orphans, own_snapshots(account).await)
}

async fn own_snapshots(account: &TestAccount) -> BTreeSet<String> {
    let listed = account.ec2().describe_snapshots().owner_ids("self").send().await.unwrap();
    listed
        .snapshots()
        .iter()
        .filter(|s| s.owner_id() == Some(account.account_id.as_str()))
        .map(|s| s.snapshot_id().unwrap().to_string())
        .collect()
}

/// How many snapshots `DescribeSnapshots` lists for the account: moto ignores `OwnerIds` and
/// lists the fixture AMIs' public snapshots too (kept `not_owned`): the pass counts them all.
async fn listed(account: &TestAccount) -> usize {
    account.ec2().describe_snapshots().owner_ids("self").send().await.unwrap().snapshots().len()
}

fn strings(list: &Value) -> BTreeSet<String> {
    list.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array().unwrap().iter().map(|o| o["snapshot_id"].as_str().unwrap().to_string()).collect()
}

/// The `snapshot-id` filter values of the `DescribeSnapshots` calls that reached `proxy`, in order.
fn partition_filters(proxy: &Proxy) -> Vec<String> {
    proxy
        .calls()
        .iter()
        .filter(|c| c.action == "DescribeSnapshots")
        .filter_map(|c| c.param("Filter.1.Value.1"))
        .collect()
}

fn all_filters() -> BTreeSet<String> {
    (0..PARTITIONS).map(partitions::filter).collect()
}

/// The adopted orphans, deletable at once: one listing or partitions, `above` decides.
fn adopting(above: &str, dry_run: &str) -> Config {
    config(&[("ADOPT_UNWITNESSED_ORPHANS", "true"), ("PARTITIONED_LISTING_ABOVE", above), ("DRY_RUN", dry_run)])
}

/// A dry run listing the region in one sequence: the complete pass a partitioned listing proves
/// its coverage with (a region's first partitioned pass deletes nothing).
async fn record_a_pass(account: &TestAccount) {
    let report = sweep(account, &adopting("1000000", "true")).await;
    assert_eq!(report["regions"][0]["snapshot_listing"]["mode"], "sequential", "{report}");
}

async fn recorded_passes(account: &TestAccount) -> Passes {
    amiguard_integration_tests::ledger::on(account).snapshot_passes(REGION).await.unwrap()
}

#[tokio::test]
async fn a_region_above_the_threshold_is_listed_in_16_partitions_and_deletes_what_one_listing_would() {
    let account = TestAccount::new().await;
    let (orphans, all) = seed(&account, 12, 3, 10).await;
    // One listing (no pass recorded yet), a dry run: it records the pass size all the same.
    let sequential = sweep(&account, &adopting("20", "true")).await;
    let region = &sequential["regions"][0];
    assert_eq!(ids(&region["orphans"]), orphans, "{region}");
    assert_eq!(region["snapshot_listing"]["mode"], "sequential", "{region}");
    let before = listed(&account).await;
    assert_eq!(region["snapshot_listing"]["pass_recorded"], before, "{region}");
    assert_eq!(recorded_passes(&account).await.last.unwrap().total, before as u64);

    // Its last pass listed 25 own snapshots (and moto's 2 public ones), more than 20: now
    // partitioned, and for real.
    let proxy = Proxy::start(&moto().endpoint).await;
    let report = sweep(&account.through(&proxy), &adopting("20", "false")).await;
    let region = &report["regions"][0];
    assert_eq!(region["aborted"], Value::Null, "{region}");
    assert_eq!(strings(&region["deleted"]), orphans, "the orphans one listing found: {region}");
    assert_eq!(own_snapshots(&account).await, all.difference(&orphans).cloned().collect());
    let listing = &region["snapshot_listing"];
    assert_eq!(listing["mode"], "partitioned", "{listing}");
    assert_eq!(strings(&listing["complete"]), all_filters(), "{listing}");
    assert_eq!((listing["calls"].clone(), listing["throttled"].clone()), (json!(16), json!(0)), "{listing}");
    assert_eq!(listing["last_complete_pass"], before, "{listing}");
    assert_eq!(listing["pass_recorded"], before, "{listing}");
    let filters = partition_filters(&proxy);
    assert_eq!(filters.len(), 16, "one page each on moto: {filters:?}");
    assert_eq!(filters.iter().cloned().collect::<BTreeSet<_>>(), all_filters());
    // Every call a listing of the account's own snapshots, one page of at most 1,000.
    for call in proxy.calls().iter().filter(|c| c.action == "DescribeSnapshots") {
        assert_eq!(call.param("Filter.1.Name").as_deref(), Some("snapshot-id"));
        assert_eq!(call.param("MaxResults").as_deref(), Some("1000"));
    }
    // The images were listed once before the partitions and once more before deleting.
    assert_eq!(proxy.count("DescribeImages"), 2);
    // The pass recorded: every partition's count, summing to what was listed.
    let passes = recorded_passes(&account).await;
    let last = passes.last.unwrap();
    assert_eq!(last.total, before as u64);
    assert_eq!(last.per_partition.iter().sum::<u64>(), before as u64);
    assert!(passes.current.is_empty(), "the pass is complete");
}

#[tokio::test]
async fn throttled_partitions_are_paced_and_retried_and_still_delete_what_one_listing_would() {
    let account = TestAccount::new().await;
    let (orphans, all) = seed(&account, 6, 1, 4).await;
    record_a_pass(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    proxy.inject(Fault {
        action: Some("DescribeSnapshots".into()),
        body_contains: None,
        kind: FaultKind::Throttle(0.5),
        times: None,
    });
    let report = sweep(&account.through(&proxy), &adopting("0", "false")).await;
    let region = &report["regions"][0];
    let listing = &region["snapshot_listing"];
    assert_eq!(strings(&listing["complete"]), all_filters(), "{listing}");
    let throttled = listing["throttled"].as_u64().unwrap();
    assert!(throttled >= 8, "half the calls throttled: {listing}");
    assert_eq!(listing["calls"].as_u64().unwrap(), 16 + throttled, "{listing}");
    assert_eq!(proxy.count("DescribeSnapshots") as u64, 16 + throttled, "not retried by the SDK as well");
    assert_eq!(strings(&region["deleted"]), orphans, "{region}");
    assert_eq!(own_snapshots(&account).await, all.difference(&orphans).cloned().collect());
}

#[tokio::test]
async fn a_cut_partition_deletes_nothing_and_the_others_go_on() {
    let account = TestAccount::new().await;
    let (orphans, all) = seed(&account, 16, 1, 4).await;
    record_a_pass(&account).await;
    // The partition of one orphan fails (an error EC2 gives no retry for).
    let victim = orphans.iter().next().unwrap().clone();
    let cut = partitions::filter(partitions::partition_of(&victim).unwrap());
    let in_cut: BTreeSet<String> = orphans
        .iter()
        .filter(|id| partitions::partition_of(id) == partitions::partition_of(&victim))
        .cloned()
        .collect();
    let proxy = Proxy::start(&moto().endpoint).await;
    let encoded = format!("Filter.1.Value.1={}", cut.replace('*', "%2A"));
    proxy.inject(Fault::error("DescribeSnapshots", 400, "InvalidParameterValue").when_body_contains(&encoded));
    let report = sweep(&account.through(&proxy), &adopting("0", "false")).await;
    let region = &report["regions"][0];
    assert_eq!(region["aborted"], Value::Null, "the other partitions go on: {region}");
    let listing = &region["snapshot_listing"];
    assert_eq!(listing["cut"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["cut"][0]["partition"], cut.as_str(), "{listing}");
    assert!(listing["cut"][0]["reason"].as_str().unwrap().contains("InvalidParameterValue"), "{listing}");
    assert_eq!(listing["complete"].as_array().unwrap().len(), 15, "{listing}");
    assert_eq!(listing["pass_recorded"], Value::Null, "a pass with a cut partition is not complete");
    let deleted = strings(&region["deleted"]);
    assert_eq!(deleted, orphans.difference(&in_cut).cloned().collect(), "{region}");
    assert!(own_snapshots(&account).await.is_superset(&in_cut), "nothing of the cut partition deleted");
    assert!(report["warnings"].to_string().contains(&cut), "{}", report["warnings"]);
    // The pass goes on: 15 partitions covered, the cut one to list first next time.
    let passes = recorded_passes(&account).await;
    assert_eq!(passes.current.len(), 15);
    assert_eq!(passes.order()[0], partitions::partition_of(&victim).unwrap());
    // Next run (nothing cut): the pass completes with every partition's count.
    proxy.clear_faults();
    let next = sweep(&account.through(&proxy), &adopting("0", "false")).await;
    let region = &next["regions"][0];
    assert_eq!(strings(&region["deleted"]), in_cut, "{region}");
    let remaining = listed(&account).await;
    assert_eq!(region["snapshot_listing"]["pass_recorded"], remaining + in_cut.len(), "{region}");
    let _ = all;
}

#[tokio::test]
async fn markedly_fewer_snapshots_than_the_last_pass_delete_nothing_and_say_why() {
    let account = TestAccount::new().await;
    let (orphans, all) = seed(&account, 8, 1, 2).await;
    // The last complete pass listed 2,000 a partition: 32,000 (above the default 20,000, so the
    // region is partitioned), where 11 are listed now.
    let ledger = amiguard_integration_tests::ledger::create(&account).await;
    let before = Passes::after_listing(vec![2000; PARTITIONS], 0);
    ledger.record_snapshot_passes(REGION, &before, Utc::now()).await.unwrap();
    let report = sweep(&account, &adopting("20000", "false")).await;
    let region = &report["regions"][0];
    let aborted = region["aborted"].as_str().unwrap_or_default();
    let now_listed = listed(&account).await;
    assert!(aborted.contains(&format!("found {now_listed} snapshots")), "{aborted}");
    assert!(aborted.contains("listed 32000") && aborted.contains("nothing deleted"), "{aborted}");
    assert_eq!(region["snapshot_listing"]["mode"], "partitioned", "{region}");
    assert_eq!(region["deleted"], json!([]), "{region}");
    assert_eq!(region["planned_deletions"], 0, "{region}");
    assert_eq!(region["kept"]["circuit_breaker"], orphans.len(), "each orphan held once: {region}");
    assert_eq!(region["kept"]["over_cap"], Value::Null, "{region}");
    assert_eq!(ids(&region["orphans"]), orphans, "still reported, for a person to read");
    assert_eq!(own_snapshots(&account).await, all);
    // A complete listing, but the proof refused it: kept for the record, never the baseline
    // (it used to become the new pass: the review's B3). The next run is refused again.
    let passes = recorded_passes(&account).await;
    assert_eq!(passes.last, before.last, "the baseline stays");
    assert_eq!(passes.refused.values().sum::<u64>(), now_listed as u64);
    assert_eq!(region["snapshot_listing"]["pass_recorded"], Value::Null, "{region}");
    let again = sweep(&account, &adopting("20000", "false")).await;
    assert!(again["regions"][0]["aborted"].as_str().unwrap_or_default().contains("listed 32000"), "{again}");
    assert_eq!(own_snapshots(&account).await, all);
}

#[tokio::test]
async fn a_first_partitioned_pass_records_the_region_and_deletes_nothing() {
    let account = TestAccount::new().await;
    let (orphans, all) = seed(&account, 4, 1, 2).await;
    let first = sweep(&account, &adopting("0", "false")).await;
    let region = &first["regions"][0];
    assert!(region["aborted"].as_str().unwrap_or_default().contains("no complete listing pass"), "{region}");
    assert_eq!(region["deleted"], json!([]), "{region}");
    assert_eq!(own_snapshots(&account).await, all);
    assert_eq!(recorded_passes(&account).await.last.unwrap().total, listed(&account).await as u64);
    // Proved against it, the next run deletes.
    let second = sweep(&account, &adopting("0", "false")).await;
    assert_eq!(strings(&second["regions"][0]["deleted"]), orphans, "{second}");
}

#[tokio::test]
async fn the_pass_size_is_recorded_by_dry_runs_but_not_with_a_read_only_ledger() {
    let account = TestAccount::new().await;
    seed(&account, 2, 1, 3).await;
    let all = listed(&account).await;
    amiguard_integration_tests::ledger::create(&account).await;
    let read_only = config(&[("DRY_RUN", "true"), ("LEDGER_READ_ONLY", "true")]);
    let report = sweep(&account, &read_only).await;
    assert_eq!(report["regions"][0]["snapshot_listing"]["pass_recorded"], Value::Null);
    assert_eq!(recorded_passes(&account).await, Passes::default(), "nothing written");
    for dry in [config(&[("DRY_RUN", "true")]), adopting("0", "true")] {
        let report = sweep(&account, &dry).await;
        assert_eq!(report["regions"][0]["snapshot_listing"]["pass_recorded"], all, "{report}");
        assert_eq!(recorded_passes(&account).await.last.unwrap().total, all as u64);
    }
}

#[tokio::test]
async fn a_region_too_large_for_one_run_continues_in_the_next_the_partitions_left_first() {
    let account = TestAccount::new().await;
    let (orphans, _) = seed(&account, 16, 1, 8).await;
    record_a_pass(&account).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    // Each page takes 6 s, and the deadline leaves 10 s past the margin: the first 8 partitions
    // are listed, the next 8 would not end in time and are left for the next run.
    proxy.inject(Fault::delay("DescribeSnapshots", Duration::from_secs(6)));
    let deadline = orphan_snapshot_sweeper::DEADLINE_MARGIN + Duration::from_secs(10);
    let first = sweep_until(&account.through(&proxy), &adopting("0", "false"), deadline).await;
    let region = &first["regions"][0];
    let listing = &region["snapshot_listing"];
    assert_eq!(listing["complete"].as_array().unwrap().len(), PARTITION_CONCURRENCY, "{listing}");
    let left = strings(&listing["left_for_next_run"]);
    assert_eq!(left.len(), PARTITIONS - PARTITION_CONCURRENCY, "{listing}");
    assert_eq!(listing["cut"], Value::Null, "none started to be cut: {listing}");
    let deleted = strings(&region["deleted"]);
    assert!(deleted.iter().all(|id| !left.contains(&partitions::filter(partitions::partition_of(id).unwrap()))));
    assert_eq!(recorded_passes(&account).await.current.len(), PARTITION_CONCURRENCY);

    // The next run lists the partitions left first, and completes the pass.
    proxy.clear_faults();
    let before = proxy.calls().len();
    let second = sweep(&account.through(&proxy), &adopting("0", "false")).await;
    let first_calls: BTreeSet<String> = proxy.calls()[before..]
        .iter()
        .filter(|c| c.action == "DescribeSnapshots")
        .filter_map(|c| c.param("Filter.1.Value.1"))
        .take(PARTITION_CONCURRENCY)
        .collect();
    assert_eq!(first_calls, left, "the partitions the pass had not covered, first");
    let region = &second["regions"][0];
    let all_deleted: BTreeSet<String> = deleted.union(&strings(&region["deleted"])).cloned().collect();
    assert_eq!(all_deleted, orphans, "{region}");
    assert_eq!(
        region["snapshot_listing"]["pass_recorded"],
        listed(&account).await + all_deleted.len() - deleted.len(),
        "{region}"
    );
    assert!(recorded_passes(&account).await.current.is_empty());
}
