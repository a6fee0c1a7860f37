//! Only what amiguard verified acts (issue 21), through the handler over fakes: witnessed and
//! adopted orphans, shared ones kept, AMI events recorded by what EC2 says now and at amiguard's
//! clock, and a report whose warnings are bounded like its other lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use amiguard::ledger::memory::MemoryLedger;
use amiguard::ledger::{keys, Item};
use orphan_snapshot_sweeper::{handle, metrics, report, Config, Error, KeepReason, Ports, Response};
use serde_json::{json, Value};
use support::*;

fn ids(orphans: &[orphan_snapshot_sweeper::core::Orphan]) -> Vec<&str> {
    orphans.iter().map(|o| o.snapshot_id.as_str()).collect()
}

#[tokio::test]
async fn an_orphan_whose_ami_the_ledger_never_saw_map_it_is_kept_until_adopted() {
    // snap-01's AMI the ledger saw map it; snap-02 and snap-03 only their descriptions tie to an
    // AMI. All three were first seen orphaned days ago.
    let ledger = ledger_seen("us-east-1", ["snap-01".to_string()]);
    let since = now() - chrono::Duration::days(SEEN_ORPHANED_DAYS);
    for id in ["snap-02", "snap-03"] {
        ledger.insert(Item::new(keys::orphans("us-east-1"), id).with_time("first_seen", since));
    }
    let listing = || FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02"), orphan("snap-03")], vec![]);

    let (report, ec2) = sweep_in(&config(), listing(), &ledger, now()).await;
    let region = &report.regions[0];
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-01"]);
    assert_eq!(region.kept, BTreeMap::from([(KeepReason::Unwitnessed, 2)]));
    assert_eq!(ids(&region.unwitnessed), ["snap-02", "snap-03"]);
    assert_eq!((region.counts.unwitnessed, region.unwitnessed_gib), (2, 20));
    assert_eq!((report.totals.unwitnessed_count, report.totals.unwitnessed_gib), (2, 20));
    assert!(region.waiting.is_empty() && ids(&region.orphans) == ["snap-01"]);
    // The metric and the summary say so.
    let kept = metrics::kept_emf(&report, now());
    assert!(kept.iter().any(|line| line["Reason"] == "unwitnessed" && line["Kept"] == 2), "{kept:?}");
    let summary = orphan_snapshot_sweeper::core::summary::summary_text(&report);
    assert!(summary.contains("unwitnessed orphans") && summary.contains("ADOPT_UNWITNESSED_ORPHANS"), "{summary}");

    // Adopted: deleted on the clock they kept while they were kept.
    let adopting = Config { adopt_unwitnessed_orphans: true, ..config() };
    let left = FakeEc2::with(vec![orphan("snap-02"), orphan("snap-03")], vec![]);
    let (adopted, ec2) = sweep_in(&adopting, left, &ledger, now() + chrono::Duration::hours(1)).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-02", "snap-03"]);
    assert!(adopted.regions[0].orphans.iter().all(|o| o.orphaned_since == since), "{:?}", adopted.regions[0]);
}

#[tokio::test]
async fn a_first_sight_of_an_unwitnessed_orphan_starts_its_clock_and_lists_it() {
    let ledger = MemoryLedger::new();
    let dry = Config { dry_run: true, ..config() };
    let (report, _) = sweep_in(&dry, FakeEc2::with(vec![orphan("snap-01")], vec![]), &ledger, now()).await;
    let region = &report.regions[0];
    assert_eq!(region.kept, BTreeMap::from([(KeepReason::Unwitnessed, 1)]));
    assert_eq!(region.unwitnessed[0].orphaned_since, now());
    let clock = ledger.get(&keys::orphans("us-east-1"), "snap-01").expect("its clock is recorded");
    assert_eq!(clock.time("first_seen"), Some(now()));
}

#[tokio::test]
async fn a_shared_orphan_is_kept_the_next_in_line_takes_its_place_and_an_unread_one_is_kept_and_reported() {
    let snapshots: Vec<_> = (1..=5).map(|i| orphan(&format!("snap-0{i}"))).collect();
    let mut ec2 = FakeEc2::with(snapshots, vec![]);
    ec2.shared_snapshots.insert("snap-01".into());
    let ledger = ledger_seen("us-east-1", ec2.listed());
    let capped = Config { max_deletions: 2, ..config() };
    let (report, ec2) = sweep_in(&capped, ec2, &ledger, now()).await;
    assert_eq!(ec2.calls_to("DescribeSnapshotAttribute"), ["snap-01", "snap-02", "snap-03"]);
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-02", "snap-03"], "the cap is filled by the next in line");
    let region = &report.regions[0];
    assert_eq!(region.kept, BTreeMap::from([(KeepReason::Shared, 1), (KeepReason::OverCap, 2)]));
    assert_eq!((region.planned_deletions, region.counts.orphans), (2, 5));

    // Every read refused: nothing can be verified, nothing is deleted, each one is reported.
    let mut refusing = FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02")], vec![]);
    refusing.fail.insert("DescribeSnapshotAttribute", "UnauthorizedOperation".into());
    let (report, ec2) = sweep(&config(), refusing).await;
    assert!(ec2.calls_to("DeleteSnapshot").is_empty());
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::Shared, 2)]));
    for id in ["snap-01", "snap-02"] {
        let said = report.warnings.iter().any(|w| w.contains(id) && w.contains("UnauthorizedOperation"));
        assert!(said, "{id}: {:?}", report.warnings);
    }
    // The circuit breaker holds the region: nothing is asked.
    let mut held = FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02")], vec![]);
    held.shared_snapshots.insert("snap-01".into());
    let (_, ec2) = sweep(&Config { max_delete_fraction: 0.5, ..config() }, held).await;
    assert!(ec2.calls_to("DescribeSnapshotAttribute").is_empty());
}

/// An AMI event through the handler, with `ec2` listing the region's images, at the clock `at`.
async fn ami_event(
    ec2: FakeEc2,
    ledger: &MemoryLedger,
    image_id: &str,
    state: &str,
    time: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> (Result<Response, Error>, FakeEc2) {
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(ledger) };
    let mut event: Value =
        serde_json::from_str(include_str!("../../../events/orphan-snapshot-sweeper.ami-available.json")).unwrap();
    event["detail"]["ImageId"] = json!(image_id);
    event["detail"]["State"] = json!(state);
    event["time"] = json!(time);
    let invocation = orphan_snapshot_sweeper::Invocation::at(at);
    let result = handle(&config(), &ports, &event, &invocation).await;
    (result, regions.into_iter().next().unwrap().1)
}

fn ami_report(result: Result<Response, Error>) -> orphan_snapshot_sweeper::report::AmiEventReport {
    match result.unwrap() {
        Response::AmiEvent(report) => report,
        other => panic!("not an AMI event's report: {other:?}"),
    }
}

#[tokio::test]
async fn ami_events_record_what_ec2_lists_at_amiguards_clock_never_what_the_event_says() {
    let ledger = MemoryLedger::new();
    let listed = || FakeEc2::with(vec![], vec![image("ami-0a", &["snap-0a", "snap-0b"], 3)]);

    // available, and EC2 lists it: its mapping as EC2 lists it, first seen at amiguard's clock.
    let (result, ec2) = ami_event(listed(), &ledger, "ami-0a", "available", "2099-01-01T00:00:00Z", now()).await;
    assert_eq!(ami_report(result).outcome, "recorded");
    assert_eq!(ec2.calls_to("DescribeImages"), ["ami-0a"]);
    let record = ledger.get(&keys::seen_images("us-east-1"), "ami-0a").unwrap();
    assert_eq!(record.list("snapshot_ids").unwrap(), ["snap-0a", "snap-0b"]);
    assert_eq!(record.time("first_seen"), Some(now()), "not the event's 2099");
    let (again, _) = ami_event(listed(), &ledger, "ami-0a", "available", "2026-06-01T00:00:00Z", now()).await;
    assert_eq!(ami_report(again).outcome, "already-recorded");

    // available, but EC2 does not list it: nothing.
    let (result, _) = ami_event(listed(), &ledger, "ami-0b", "available", "2026-06-01T00:00:00Z", now()).await;
    let report = ami_report(result);
    assert_eq!(report.outcome, "skipped");
    assert!(report.reason.unwrap().contains("not listed"));
    assert!(ledger.get(&keys::seen_images("us-east-1"), "ami-0b").is_none());

    // Listed, but another account's (EC2 answered despite `Owners=self`): not the account's image.
    let mut foreign = image("ami-0f", &["snap-0f"], 3);
    foreign.owner_id = Some("999999999999".into());
    let (result, _) =
        ami_event(FakeEc2::with(vec![], vec![foreign]), &ledger, "ami-0f", "available", "2026-06-01T00:00:00Z", now())
            .await;
    assert_eq!(ami_report(result).outcome, "skipped");
    assert!(ledger.get(&keys::seen_images("us-east-1"), "ami-0f").is_none());

    // deregistered, but EC2 still lists it: nothing changes.
    let (result, _) = ami_event(listed(), &ledger, "ami-0a", "deregistered", "2020-01-01T00:00:00Z", now()).await;
    let report = ami_report(result);
    assert_eq!(report.outcome, "skipped");
    assert!(report.reason.unwrap().contains("still lists"));
    assert!(ledger.get(&keys::ami_events("us-east-1"), "ami-0a").is_none());

    // deregistered, and EC2 no longer lists it: gone as of amiguard's clock, whatever the event's time.
    let gone = || FakeEc2::with(vec![], vec![]);
    let later = now() + chrono::Duration::hours(3);
    let (result, _) = ami_event(gone(), &ledger, "ami-0a", "deregistered", "2020-01-01T00:00:00Z", later).await;
    assert_eq!(ami_report(result).outcome, "recorded");
    let event = ledger.get(&keys::ami_events("us-east-1"), "ami-0a").unwrap();
    assert_eq!(event.time("deregistered_at"), Some(later));
    let (again, _) = ami_event(gone(), &ledger, "ami-0a", "deregistered", "2020-01-01T00:00:00Z", later).await;
    assert_eq!(ami_report(again).outcome, "already-recorded");

    // EC2 cannot be asked: an error, nothing recorded.
    let writes = ledger.writes();
    let mut refusing = gone();
    refusing.fail.insert("DescribeImages", "UnauthorizedOperation".into());
    let (result, _) = ami_event(refusing, &ledger, "ami-0c", "deregistered", "2026-06-01T00:00:00Z", now()).await;
    let err = result.unwrap_err();
    assert!(matches!(&err, Error::Ec2(e) if e.code == "UnauthorizedOperation"), "{err:?}");
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "AwsError.UnauthorizedOperation");
    // Another state, or a region not swept: EC2 is not even asked.
    let (result, ec2) = ami_event(listed(), &ledger, "ami-0a", "failed", "2026-06-01T00:00:00Z", now()).await;
    assert_eq!(ami_report(result).outcome, "skipped");
    assert!(ec2.calls().is_empty());
    assert_eq!(ledger.writes(), writes);
}

#[tokio::test]
async fn the_warnings_of_a_huge_run_are_bounded_like_every_list_and_counted_whole() {
    // Three regions of 3,000 old unused AMIs each, whose launch permissions cannot be read: a
    // warning per AMI.
    let regions: Vec<(String, FakeEc2)> = ["us-east-1", "eu-west-1", "ap-south-1"]
        .iter()
        .enumerate()
        .map(|(r, region)| {
            let images = (0..3000).map(|i| image(&format!("ami-{r}{i:05x}"), &[], 400)).collect();
            let mut ec2 = FakeEc2::with(vec![], images);
            ec2.fail.insert("DescribeImageAttribute", "RequestLimitExceeded".into());
            (region.to_string(), ec2)
        })
        .collect();
    let config = Config {
        dry_run: true,
        retire_unused_amis_after_days: Some(90),
        regions: vec!["us-east-1".into(), "eu-west-1".into(), "ap-south-1".into()],
        ..config()
    };
    let report = sweep_with(&config, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    let logged = serde_json::to_string(&report).unwrap();
    assert!(logged.len() <= report::MAX_REPORT_BYTES, "{} bytes", logged.len());
    assert!(report.totals.warnings >= 9000, "counted whole: {}", report.totals.warnings);
    assert!(!report.warnings.is_empty() && report.warnings.len() <= report::LIST_LIMIT);
    let full = report.full_lists.as_deref().unwrap();
    assert!(full.contains("warning(s) not shown here") && full.contains("r-test"), "{full}");
}

#[tokio::test]
async fn a_ledger_without_the_witness_of_a_gone_image_keeps_its_snapshot_even_when_listed_before() {
    // What a sweep recorded of an image it listed is the witness: the next sweep, the image gone,
    // deletes its snapshot (after the grace period) and never one the image did not map.
    let ledger = MemoryLedger::new();
    let mut forged = orphan("snap-02");
    forged.description = "Created by CreateImage(i-0123) for ami-0a from vol-01".into();
    let live = FakeEc2::with(vec![orphan("snap-01")], vec![image("ami-0a", &["snap-01"], 3)]);
    let zero = Config { min_age_hours: 0, ..config() };
    sweep_in(&zero, live, &ledger, now()).await;
    assert!(ledger.get(&keys::seen_images("us-east-1"), "ami-0a").is_some());
    let mut gone = FakeEc2::with(vec![orphan("snap-01"), forged], vec![]);
    gone.snapshots[0].description = "Created by CreateImage(i-0123) for ami-0a from vol-01".into();
    let (report, ec2) = sweep_in(&zero, gone, &ledger, now() + chrono::Duration::hours(1)).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-01"], "{:?}", report.regions[0]);
    assert_eq!(ids(&report.regions[0].unwitnessed), ["snap-02"], "the same words on another snapshot");
}
