//! Exact savings (issue 23), end to end on moto: a lineage of five daily snapshots built block by
//! block with the EBS direct APIs (`StartSnapshot`, `PutSnapshotBlock`, `CompleteSnapshot`), the
//! sweeper's dry run asking `ListSnapshotBlocks` and `ListChangedBlocks` through the fault proxy,
//! which gives the snapshots their lineage as EC2 would (moto gives each a volume of its own) and
//! injects failures and throttles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::invocation::Invocation;
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::savings::{as_lineage, ebs_regions, snapshot_of, MOTO_BLOCK_SIZE};
use amiguard_integration_tests::{moto, sample_event, sweeper_config, TestAccount};
use orphan_snapshot_sweeper::report::{FreedSnapshot, Report};
use orphan_snapshot_sweeper::Ports;
use serde_json::json;

const BLOCK: u64 = MOTO_BLOCK_SIZE;

/// Five daily snapshots of a 6-block volume. Day 3 (the middle one) wrote blocks 2 and 3, which
/// day 4 wrote again: they are day 3's own. Day 2 wrote blocks 1 and 2; day 5 wrote block 4.
const DAYS: [[u8; 6]; 5] =
    [[1, 1, 1, 1, 1, 1], [1, 2, 2, 1, 1, 1], [1, 2, 3, 3, 1, 1], [1, 2, 4, 4, 1, 1], [1, 2, 4, 4, 5, 1]];

struct Lineage {
    account: TestAccount,
    snapshots: Vec<String>,
    proxy: Proxy,
}

/// The five days, `planned` (by day index) described as made for an AMI that no longer exists
/// (orphans the sweeper adopts), the others manual snapshots (kept); DescribeSnapshots through the
/// proxy gives them one volume, a day apart.
async fn lineage(planned: &[usize]) -> Lineage {
    let account = TestAccount::new().await;
    let mut snapshots = Vec::new();
    for (day, blocks) in DAYS.iter().enumerate() {
        let description = if planned.contains(&day) {
            format!("Created by CreateImage(i-0123456789abcdef0) for ami-0dead00000000000{day}")
        } else {
            "nightly".to_string()
        };
        let blocks: Vec<Option<u8>> = blocks.iter().map(|b| Some(*b)).collect();
        snapshots.push(snapshot_of(&account, &blocks, &description).await);
    }
    let proxy = Proxy::start(&moto().endpoint).await;
    let ids = snapshots.clone();
    proxy.inject(Fault::rewrite_with("DescribeSnapshots", move |answer| {
        as_lineage(answer, &ids, "vol-0feed000000000001", 1)
    }));
    Lineage { account, snapshots, proxy }
}

/// A dry run of the sweeper (adopting unwitnessed orphans, no ledger), with `EXACT_SAVINGS`.
async fn dry_run(lineage: &Lineage, exact_savings: &str) -> Report {
    let through = lineage.account.through(&lineage.proxy);
    let regions = vec![(lineage.account.region.clone(), through.ec2())];
    let sns = through.sns();
    let ports: Ports<'_, _, _, amiguard::ledger::dynamo::DynamoLedger> =
        Ports { regions: &regions, publisher: &sns, ledger: None };
    let ebs = ebs_regions(&through);
    let config =
        sweeper_config(&[("DRY_RUN", "true"), ("ADOPT_UNWITNESSED_ORPHANS", "true"), ("EXACT_SAVINGS", exact_savings)]);
    let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
    event["account"] = json!(lineage.account.account_id);
    let invocation = Invocation::at(chrono::Utc::now())
        .with_deadline(std::time::SystemTime::now() + std::time::Duration::from_secs(900));
    let response = orphan_snapshot_sweeper::handle_with_ebs(&config, &ports, Some(&ebs), &event, &invocation).await;
    response.unwrap().sweep().unwrap()
}

fn entry<'a>(report: &'a Report, snapshot_id: &str) -> &'a FreedSnapshot {
    report.regions[0].freed.iter().find(|f| f.snapshot_id == snapshot_id).expect("an entry per planned deletion")
}

#[tokio::test]
async fn deleting_the_middle_snapshot_frees_exactly_its_own_blocks() {
    let lineage = lineage(&[2]).await;
    let report = dry_run(&lineage, "true").await;
    let region = &report.regions[0];
    assert_eq!(region.planned_deletions, 1, "{region:?}");
    let middle = entry(&report, &lineage.snapshots[2]);
    assert_eq!((middle.freed_bytes, middle.freed_bytes_at_most), (Some(2 * BLOCK), None), "{middle:?}");
    assert_eq!((region.freed_bytes, region.freed_bytes_at_most), (Some(2 * BLOCK), Some(0)));
    assert_eq!((report.totals.freed_bytes, report.totals.freed_bytes_at_most), (Some(2 * BLOCK), Some(0)));
    // Its blocks, and its changes from day 2 and to day 4: nothing more.
    assert_eq!(lineage.proxy.count("ListSnapshotBlocks"), 1);
    assert_eq!(lineage.proxy.count("ListChangedBlocks"), 2);
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(value["regions"][0]["freed"][0]["freed_bytes"], json!(2 * BLOCK));
    assert!(value["regions"][0]["freed"][0].get("freed_bytes_at_most").is_none());
    assert_eq!(value["totals"]["freed_bytes"], json!(2 * BLOCK));
}

#[tokio::test]
async fn deleting_two_adjacent_snapshots_frees_what_only_they_held() {
    let lineage = lineage(&[1, 2]).await;
    let report = dry_run(&lineage, "true").await;
    // Day 2's own block 2 (its block 1 stays on days 3 to 5), and day 3's blocks 2 and 3.
    assert_eq!(entry(&report, &lineage.snapshots[1]).freed_bytes, Some(BLOCK));
    assert_eq!(entry(&report, &lineage.snapshots[2]).freed_bytes, Some(2 * BLOCK));
    assert_eq!(report.totals.freed_bytes, Some(3 * BLOCK));
}

#[tokio::test]
async fn a_failed_comparison_gives_a_labelled_bound() {
    let lineage = lineage(&[2]).await;
    // The comparison of day 3 with day 4 fails (asked by the newer one's path).
    let day4 = lineage.snapshots[3].clone();
    lineage.proxy.inject(Fault::error("ListChangedBlocks", 400, "ValidationException").when_body_contains(&day4));
    let report = dry_run(&lineage, "true").await;
    let middle = entry(&report, &lineage.snapshots[2]);
    assert_eq!(middle.freed_bytes, None);
    assert_eq!(middle.freed_bytes_at_most, Some(1 << 30), "its volume's size: 1 GiB");
    let why = middle.why_at_most.as_deref().unwrap();
    assert!(why.contains("ListChangedBlocks") && why.contains("ValidationException"), "{why}");
    assert_eq!((report.totals.freed_bytes, report.totals.freed_bytes_at_most), (Some(0), Some(1 << 30)));
}

#[tokio::test]
async fn throttled_answers_are_retried() {
    let lineage = lineage(&[2]).await;
    lineage.proxy.inject(Fault::error("ListSnapshotBlocks", 400, "RequestThrottledException").times(2));
    lineage.proxy.inject(Fault::error("ListChangedBlocks", 400, "ConcurrentLimitExceededException").times(1));
    let report = dry_run(&lineage, "true").await;
    assert_eq!(entry(&report, &lineage.snapshots[2]).freed_bytes, Some(2 * BLOCK));
    assert_eq!(lineage.proxy.count("ListSnapshotBlocks"), 3, "two throttled, then answered");
    assert_eq!(lineage.proxy.count("ListChangedBlocks"), 3, "one refused, then both answered");
}

#[tokio::test]
async fn exact_savings_off_makes_no_ebs_call() {
    let lineage = lineage(&[2]).await;
    let report = dry_run(&lineage, "false").await;
    let middle = entry(&report, &lineage.snapshots[2]);
    assert_eq!((middle.freed_bytes, middle.freed_bytes_at_most), (None, Some(1 << 30)));
    assert!(middle.why_at_most.as_deref().unwrap().contains("EXACT_SAVINGS=false"));
    assert_eq!(lineage.proxy.count("ListSnapshotBlocks") + lineage.proxy.count("ListChangedBlocks"), 0);
    assert!(lineage.proxy.calls().iter().all(|c| c.service != "ebs"));
}

#[test]
fn the_ebs_direct_apis_are_granted_to_the_sweeper_only_while_exact_savings_is_on() {
    use amiguard_integration_tests::template::{load, render, statements_naming};
    use serde_json::Value;
    let template = load();
    let grants = |rendered: &Value, function: &str| statements_naming(rendered, function, "ebs:");
    let on = render(&template, &[]);
    let statements = grants(&on, "OrphanSnapshotSweeperFunction");
    assert_eq!(statements.len(), 1, "{statements:#?}");
    assert_eq!(statements[0]["Action"], json!(["ebs:ListSnapshotBlocks", "ebs:ListChangedBlocks"]));
    let env = &on["Resources"]["OrphanSnapshotSweeperFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["EXACT_SAVINGS"], json!({"!Ref": "SweeperExactSavings"}));
    for function in ["UntrustedAmiAlertFunction", "SnapshotOnStopFunction"] {
        assert!(grants(&on, function).is_empty(), "{function}: no EBS direct API");
    }
    let off = render(&template, &[("SweeperExactSavings", "false")]);
    assert!(grants(&off, "OrphanSnapshotSweeperFunction").is_empty(), "EXACT_SAVINGS off: no EBS grant");
}

#[tokio::test]
async fn every_page_of_both_listings_is_read() {
    use amiguard_integration_tests::savings::paged;
    let lineage = lineage(&[2]).await;
    paged(&lineage.proxy, "ListSnapshotBlocks", "Blocks", 2);
    paged(&lineage.proxy, "ListChangedBlocks", "ChangedBlocks", 1);
    let report = dry_run(&lineage, "true").await;
    assert_eq!(entry(&report, &lineage.snapshots[2]).freed_bytes, Some(2 * BLOCK), "the same as in one page");
    assert_eq!(lineage.proxy.count("ListSnapshotBlocks"), 2, "two pages");
    let pages: Vec<String> =
        lineage.proxy.calls().iter().filter(|c| c.action == "ListChangedBlocks").map(|c| c.path.clone()).collect();
    assert!(pages.iter().any(|p| p.contains("pageToken=page-2")), "{pages:?}");
    assert!(pages.iter().all(|p| p.contains("maxResults=10000")), "{pages:?}");
}
