//! The handler over fakes: which events it acts on, what it deletes and keeps and why, the
//! regions in turn, the summary it sends, and a report that fits one log event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use amiguard::events::EventError;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::tags::{self, Tag};
use orphan_snapshot_sweeper::core::SnapshotListing;
use orphan_snapshot_sweeper::event::{self, Event};
use orphan_snapshot_sweeper::report;
use orphan_snapshot_sweeper::{
    handle, Config, Error, KeepReason, Ports, Report, Response, DELETE_CONCURRENCY, REGION_CONCURRENCY,
};
use serde_json::{json, Value};
use support::*;

// ---- events ----

#[tokio::test]
async fn anything_but_a_scheduled_event_is_refused_before_any_call() {
    let ec2 = FakeEc2::with(vec![orphan("snap-01")], vec![]);
    let regions = vec![("us-east-1".to_string(), ec2)];
    let sns = FakeSns::default();
    let state_change = json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "account": ACCOUNT, "detail": {"instance-id": "i-1", "state": "stopped"}});
    for payload in [json!({}), json!([]), json!("Scheduled Event"), json!(null), state_change] {
        let err = sweep_with(&config(), &regions, &sns, &payload, invocation()).await.unwrap_err();
        let Error::Event(EventError::Unexpected(message)) = &err else { panic!("{err:?}") };
        assert!(message.contains("Scheduled Event"), "{message}");
        let diagnostic = lambda_runtime::Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, "UnexpectedEvent");
    }
    let mut no_account = event(json!({}));
    no_account.as_object_mut().unwrap().remove("account");
    for payload in [event(Value::Null), event(json!("x")), event(json!({"dry_run": "yes"})), no_account] {
        let err = sweep_with(&config(), &regions, &sns, &payload, invocation()).await.unwrap_err();
        assert!(matches!(err, Error::Event(EventError::Malformed(_))), "{payload}: {err:?}");
    }
    assert!(regions[0].1.calls().is_empty(), "nothing was listed or deleted");
    assert!(sns.published.lock().unwrap().is_empty());
}

#[test]
fn the_sample_events_are_scheduled_events() {
    for sample in [
        include_str!("../../../events/orphan-snapshot-sweeper.scheduled.json"),
        include_str!("../../../events/orphan-snapshot-sweeper.custom-detail.json"),
        include_str!("../../../events/orphan-snapshot-sweeper.dry-run.json"),
        include_str!("../../../events/orphan-snapshot-sweeper.scheduler.json"),
    ] {
        let payload: Value = serde_json::from_str(sample).unwrap();
        let Ok(Event::Sweep { account_id, .. }) = event::parse(&payload) else { panic!("{sample}") };
        assert_eq!(account_id, ACCOUNT, "moto's default account, for `make demo`");
    }
    let dry: Value =
        serde_json::from_str(include_str!("../../../events/orphan-snapshot-sweeper.dry-run.json")).unwrap();
    let Ok(Event::Sweep { detail, .. }) = event::parse(&dry) else { panic!("not a sweep") };
    assert_eq!(detail.dry_run, Some(true));
}

#[tokio::test]
async fn an_eventbridge_scheduler_payload_sweeps_and_a_scheduled_event_from_elsewhere_is_refused() {
    let scheduler: Value =
        serde_json::from_str(include_str!("../../../events/orphan-snapshot-sweeper.scheduler.json")).unwrap();
    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
    let sns = FakeSns::default();
    let report = sweep_with(&config(), &regions, &sns, &scheduler, invocation()).await.unwrap();
    assert_eq!(report.regions[0].deleted, ["snap-01"], "the detail \"{{}}\" as a string is an empty detail");

    // Its detail, a string, can force a dry run like an object can.
    let mut drier = scheduler.clone();
    drier["detail"] = json!("{\"dry_run\": true}");
    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
    let report = sweep_with(&config(), &regions, &sns, &drier, invocation()).await.unwrap();
    assert!(report.dry_run && report.regions[0].deleted.is_empty());
    assert!(regions[0].1.calls_to("DeleteSnapshot").is_empty());

    // A `Scheduled Event` from any other source is not a schedule (custom sources can send that
    // detail-type through PutEvents).
    let mut forged = event(json!({}));
    forged["source"] = json!("my.app");
    let err = sweep_with(&config(), &regions, &sns, &forged, invocation()).await.unwrap_err();
    assert!(matches!(err, Error::Event(EventError::Unexpected(ref m)) if m.contains("my.app")), "{err:?}");
    let mut not_an_object = scheduler;
    not_an_object["detail"] = json!("[]");
    let err = sweep_with(&config(), &regions, &sns, &not_an_object, invocation()).await.unwrap_err();
    assert!(matches!(err, Error::Event(EventError::Malformed(_))), "{err:?}");
}

// ---- deciding and acting ----

#[tokio::test]
async fn deletes_exactly_the_orphans_and_reports_why_the_rest_is_kept() {
    let mut protected = orphan("snap-03");
    protected.tags.push(Tag::new(tags::KEEP, "true"));
    let mut manual = orphan("snap-04");
    manual.description = "before the upgrade".into();
    let snapshots = vec![orphan("snap-01"), orphan("snap-02"), protected, manual, orphan("snap-05")];
    let images = vec![image("ami-0x", &["snap-05"], 10)];
    let (report, ec2) = sweep(&config(), FakeEc2::with(snapshots, images)).await;
    let region = &report.regions[0];
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-01", "snap-02"]);
    assert_eq!(region.deleted, ["snap-01", "snap-02"]);
    assert_eq!(region.planned_deletions, 2);
    assert_eq!(
        region.kept,
        BTreeMap::from([(KeepReason::ReferencedByImage, 1), (KeepReason::Protected, 1), (KeepReason::NotFromImage, 1)])
    );
    assert_eq!((region.reclaimable_gib, region.estimated_monthly_savings_usd), (20, 1.0));
    assert_eq!(region.unreferenced_manual.count, 1);
    assert_eq!((region.snapshots_scanned, region.images_scanned), (5, 1));
    assert_eq!(region.aborted, None);
    assert!(!report.dry_run);
    assert_eq!((report.totals.deleted, report.totals.orphans), (2, 2));
    // The listings come in the safe order: snapshots, then images, then the Recycle Bin.
    assert_eq!(&ec2.calls()[..3], ["DescribeSnapshots", "DescribeImages", "ListImagesInRecycleBin"]);
}

#[tokio::test]
async fn the_configured_protect_tag_is_the_one_that_protects() {
    let mut team_kept = orphan("snap-01");
    team_kept.tags.push(Tag::new("team:keep", ""));
    let mut default_kept = orphan("snap-02");
    default_kept.tags.push(Tag::new(tags::KEEP, "true"));
    let config = Config { protect_tag: "team:keep".into(), ..config() };
    let (report, ec2) = sweep(&config, FakeEc2::with(vec![team_kept, default_kept], vec![])).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-02"], "PROTECT_TAG replaces amiguard:keep");
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::Protected, 1)]));
}

#[tokio::test]
async fn per_snapshot_outcomes_are_reported_and_the_run_goes_on() {
    let mut ec2 = FakeEc2::with((1..=4).map(|i| orphan(&format!("snap-0{i}"))).collect(), vec![]);
    ec2.delete_errors.insert("snap-01".into(), "InvalidSnapshot.NotFound".into());
    ec2.delete_errors.insert("snap-02".into(), "InvalidSnapshot.InUse".into());
    ec2.delete_errors.insert("snap-03".into(), "InternalError".into());
    let (report, ec2) = sweep(&config(), ec2).await;
    let region = &report.regions[0];
    assert_eq!(ec2.calls_to("DeleteSnapshot").len(), 4);
    assert_eq!(region.deleted, ["snap-04"], "only what AWS confirmed counts as deleted");
    assert_eq!(region.already_gone, ["snap-01"]);
    let failed: Vec<(&str, &str)> = region.failed.iter().map(|f| (f.snapshot_id.as_str(), f.code.as_str())).collect();
    assert_eq!(failed, [("snap-02", "InvalidSnapshot.InUse"), ("snap-03", "InternalError")]);
    assert_eq!(region.failed[0].message, "InvalidSnapshot.InUse (fake)");
    assert_eq!((report.totals.deleted, report.totals.already_gone, report.totals.failed), (1, 1, 2));
}

#[tokio::test]
async fn dry_run_deletes_nothing_and_the_event_can_only_make_a_run_drier() {
    let snapshots = vec![orphan("snap-01"), orphan("snap-02")];
    let dry = Config { dry_run: true, ..config() };
    let (report, ec2) = sweep(&dry, FakeEc2::with(snapshots.clone(), vec![])).await;
    assert!(report.dry_run);
    assert!(ec2.calls_to("DeleteSnapshot").is_empty());
    let region = &report.regions[0];
    assert_eq!((region.orphans.len(), region.planned_deletions, region.deleted.len()), (2, 2, 0));

    let regions = vec![("us-east-1".to_string(), FakeEc2::with(snapshots.clone(), vec![]))];
    let sns = FakeSns::default();
    let forced = sweep_with(&config(), &regions, &sns, &event(json!({"dry_run": true})), invocation()).await.unwrap();
    assert!(forced.dry_run);
    assert!(regions[0].1.calls_to("DeleteSnapshot").is_empty());

    let regions = vec![("us-east-1".to_string(), FakeEc2::with(snapshots, vec![]))];
    let still_dry =
        sweep_with(&dry, &regions, &sns, &event(json!({"dry_run": false, "note": "x"})), invocation()).await.unwrap();
    assert!(still_dry.dry_run, "detail dry_run=false never overrides DRY_RUN=true");
    assert!(regions[0].1.calls_to("DeleteSnapshot").is_empty());
}

#[tokio::test]
async fn a_read_only_dry_run_uses_the_ledgers_clocks_and_writes_nothing() {
    // snap-01 the ledger saw orphaned days ago (due), snap-02 it saw only mapped by its AMI, which
    // the last sweep listed (first seen orphaned now).
    let ledger = ledger_seen("us-east-1", ["snap-01".to_string()]);
    ledger.insert(listed_image("us-east-1", "snap-02"));
    let before = ledger.items();
    let read_only = Config { dry_run: true, ledger_read_only: true, ..config() };
    let ec2 = FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02")], vec![]);
    let (report, ec2) = sweep_in(&read_only, ec2, &ledger, now()).await;
    let region = &report.regions[0];
    assert_eq!(region.orphans.iter().map(|o| o.snapshot_id.as_str()).collect::<Vec<_>>(), ["snap-01"]);
    assert_eq!(region.waiting.iter().map(|w| w.orphan.snapshot_id.as_str()).collect::<Vec<_>>(), ["snap-02"]);
    assert_eq!((region.planned_deletions, region.ledger_writes, region.deleted.len()), (1, 0, 0));
    assert!(ec2.calls_to("DeleteSnapshot").is_empty());
    assert_eq!((ledger.writes(), ledger.items()), (0, before), "{:?}", ledger.calls());
    assert!(report.full_lists.is_none(), "no lists were written to point at");
    assert!(report.warnings.iter().any(|w| w.contains("LEDGER_READ_ONLY")), "{:?}", report.warnings);
    // The same dry run without the flag keeps its first sightings (the deployed stack's contract).
    let (writing, _) =
        sweep_in(&Config { dry_run: true, ..config() }, FakeEc2::with(vec![orphan("snap-02")], vec![]), &ledger, now())
            .await;
    assert!(writing.regions[0].ledger_writes > 0 && ledger.writes() > 0);
}

#[tokio::test]
async fn a_read_only_sweeper_records_no_ami_event() {
    let ledger = MemoryLedger::new();
    let regions: Vec<(String, FakeEc2)> = vec![];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let read_only = Config { dry_run: true, ledger_read_only: true, ..config() };
    let event: Value =
        serde_json::from_str(include_str!("../../../events/orphan-snapshot-sweeper.ami-deregistered.json")).unwrap();
    let Response::AmiEvent(report) = handle(&read_only, &ports, &event, &invocation()).await.unwrap() else {
        panic!("not an AMI event's report")
    };
    assert_eq!(report.outcome, "skipped");
    assert!(report.reason.as_deref().is_some_and(|r| r.contains("LEDGER_READ_ONLY")), "{report:?}");
    assert_eq!(ledger.writes(), 0);
}

#[tokio::test(start_paused = true)]
async fn regions_delete_side_by_side_but_list_one_at_a_time_and_report_in_order() {
    let gauge = std::sync::Arc::new(Gauge::default());
    let names = ["us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1", "ca-central-1"];
    // Each region: as many orphans as it deletes at once, all on the shared gauge.
    let fresh_regions = || -> Vec<(String, FakeEc2)> {
        names
            .iter()
            .enumerate()
            .map(|(r, name)| {
                let snapshots = (0..DELETE_CONCURRENCY).map(|i| orphan(&format!("snap-{r}{i:02}"))).collect();
                let ec2 = FakeEc2 { gauge: Some(gauge.clone()), ..FakeEc2::with(snapshots, vec![]) };
                (name.to_string(), ec2)
            })
            .collect()
    };
    let regions = fresh_regions();
    let config = Config { regions: names.iter().map(|n| n.to_string()).collect(), ..config() };
    let report = sweep_with(&config, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(gauge.most_listing.load(SeqCst), 1, "one region's listing in memory at a time");
    let most = gauge.most_deleting.load(SeqCst);
    assert!(most > DELETE_CONCURRENCY, "regions' deletions overlap: at most {most} in flight");
    assert!(most <= DELETE_CONCURRENCY * REGION_CONCURRENCY, "bounded: {most}");
    assert_eq!(report.regions.iter().map(|r| r.region.as_str()).collect::<Vec<_>>(), names);
    assert_eq!(report.totals.deleted, (DELETE_CONCURRENCY * names.len()) as u64);

    // One MAX_DELETIONS for regions deleting at once, taken in REGIONS order.
    let regions = fresh_regions();
    let capped = Config { max_deletions: 20, ..config };
    let report = sweep_with(&capped, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    let deleted: Vec<usize> = regions.iter().map(|(_, ec2)| ec2.calls_to("DeleteSnapshot").len()).collect();
    assert_eq!(deleted, [8, 8, 4, 0, 0]);
    assert_eq!(report.totals.deleted, 20);
}

/// The ledger breaks while one region deletes: no region starts another batch of deletions.
#[tokio::test(start_paused = true)]
async fn a_ledger_failure_in_one_region_stops_the_deletions_of_every_region() {
    let ledger = std::sync::Arc::new(MemoryLedger::new());
    let orphans = |r: &str, n: usize| (0..n).map(|i| orphan(&format!("snap-{r}{i:03}"))).collect::<Vec<_>>();
    let breaking = ledger.clone();
    let first = FakeEc2 {
        slow: Some(("DeleteSnapshot", Duration::from_secs(1))),
        on_delete: Some(Box::new(move || breaking.fail_everything())),
        ..FakeEc2::with(orphans("a", 1), vec![])
    };
    // The second region's deletions are slower than the first's and come in three batches.
    let second =
        FakeEc2 { slow: Some(("DeleteSnapshot", Duration::from_secs(2))), ..FakeEc2::with(orphans("b", 250), vec![]) };
    let regions = vec![("us-east-1".to_string(), first), ("eu-west-1".to_string(), second)];
    for (region, ec2) in &regions {
        for item in ledger_seen(region, ec2.listed()).items() {
            ledger.insert(item);
        }
    }
    let config = Config { regions: vec!["us-east-1".into(), "eu-west-1".into()], ..config() };
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&*ledger) };
    let report = handle(&config, &ports, &event(json!({})), &invocation()).await.unwrap().sweep().unwrap();
    let second_deleted = regions[1].1.calls_to("DeleteSnapshot").len();
    assert!(second_deleted <= 100, "at most the batch journaled before the failure: {second_deleted}");
    for region in &report.regions {
        assert!(
            region.aborted.as_deref().is_some_and(|a| a.contains("ledger")),
            "{}: {:?}",
            region.region,
            region.aborted
        );
    }
    assert!(second_deleted > 0, "the second region was deleting when the ledger broke");
    assert_eq!(report.regions[1].left_for_next_run.len(), 250 - second_deleted);
}

#[tokio::test]
async fn max_deletions_is_per_invocation_across_regions() {
    let a: Vec<SnapshotListing> = (1..=3).map(|i| orphan(&format!("snap-a{i}"))).collect();
    let b: Vec<SnapshotListing> = (1..=3).map(|i| orphan(&format!("snap-b{i}"))).collect();
    let regions =
        vec![("us-east-1".to_string(), FakeEc2::with(a, vec![])), ("eu-west-1".to_string(), FakeEc2::with(b, vec![]))];
    let capped = Config { max_deletions: 4, ..config() };
    let report = sweep_with(&capped, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    assert_eq!(regions[0].1.calls_to("DeleteSnapshot").len(), 3);
    assert_eq!(regions[1].1.calls_to("DeleteSnapshot").len(), 1);
    assert_eq!(report.regions[1].region, "eu-west-1");
    assert_eq!(report.regions[1].orphans.len(), 3);
    assert_eq!(report.regions[1].kept, BTreeMap::from([(KeepReason::OverCap, 2)]));
    assert_eq!(report.totals.deleted, 4);
}

#[tokio::test]
async fn a_failed_listing_aborts_only_its_region() {
    for (failing, what) in [
        ("DescribeSnapshots", "listing snapshots"),
        ("DescribeImages", "listing images"),
        ("ListImagesInRecycleBin", "listing the Recycle Bin"),
    ] {
        let mut broken = FakeEc2::with(vec![orphan("snap-01")], vec![]);
        broken.fail.insert(failing, "UnauthorizedOperation".into());
        let regions = vec![
            ("us-east-1".to_string(), broken),
            ("eu-west-1".to_string(), FakeEc2::with(vec![orphan("snap-02")], vec![])),
        ];
        let report =
            sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
        assert!(regions[0].1.calls_to("DeleteSnapshot").is_empty(), "{failing}");
        let aborted = report.regions[0].aborted.as_deref().unwrap();
        assert!(aborted.starts_with(what) && aborted.contains("UnauthorizedOperation"), "{aborted}");
        assert!(report.regions[0].orphans.is_empty());
        assert_eq!(report.regions[1].deleted, ["snap-02"], "the other region is swept");
        assert_eq!(report.totals.regions_aborted, 1);
    }
}

#[tokio::test]
async fn recycle_bin_check_off_skips_the_call_and_on_keeps_binned_amis_snapshots() {
    let mut ec2 = FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02")], vec![]);
    ec2.bin.insert("ami-001".into());
    let (report, ec2) = sweep(&config(), ec2).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-02"]);
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::SourceImageInRecycleBin, 1)]));

    let mut ec2 = FakeEc2::with(vec![orphan("snap-01")], vec![]);
    ec2.fail.insert("ListImagesInRecycleBin", "InternalError".into());
    let (report, ec2) = sweep(&Config { recycle_bin_check: false, ..config() }, ec2).await;
    assert!(!ec2.calls().contains(&"ListImagesInRecycleBin".to_string()));
    assert_eq!(report.regions[0].deleted, ["snap-01"]);
}

#[tokio::test]
async fn the_circuit_breaker_aborts_the_region_with_its_reason() {
    let snapshots = vec![orphan("snap-01"), orphan("snap-02"), orphan("snap-03")];
    let images = vec![image("ami-0x", &["snap-03"], 10)];
    let (report, ec2) = sweep(&Config { max_delete_fraction: 0.5, ..config() }, FakeEc2::with(snapshots, images)).await;
    assert!(ec2.calls_to("DeleteSnapshot").is_empty());
    let region = &report.regions[0];
    assert!(region.aborted.as_deref().unwrap().starts_with("circuit breaker: 2 orphans of 3 own snapshots"));
    assert_eq!(region.orphans.len(), 2);
    assert_eq!(region.kept[&KeepReason::CircuitBreaker], 2);
}

#[tokio::test]
async fn the_summary_goes_to_the_topic_and_a_failed_publish_is_only_a_warning() {
    let topic = "arn:aws:sns:us-east-1:123456789012:sweeps";
    let with_topic = Config { report_topic_arn: Some(topic.into()), ..config() };
    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
    let sns = FakeSns::default();
    let report = sweep_with(&with_topic, &regions, &sns, &event(json!({})), invocation()).await.unwrap();
    assert_eq!(report.summary_published, Some(true));
    let published = sns.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, topic);
    assert!(published[0].1.contains("1 deleted"), "{}", published[0].1);
    assert!(published[0].2.contains("us-east-1:"), "{}", published[0].2);

    let failing = FakeSns { fail: true, ..FakeSns::default() };
    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
    let report = sweep_with(&with_topic, &regions, &failing, &event(json!({})), invocation()).await.unwrap();
    assert_eq!(report.summary_published, Some(false));
    assert!(report.warnings.iter().any(|w| w.contains("AuthorizationError")), "{:?}", report.warnings);
    assert_eq!(report.regions[0].deleted, ["snap-01"]);

    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![], vec![]))];
    let report = sweep_with(&config(), &regions, &sns, &event(json!({})), invocation()).await.unwrap();
    assert_eq!(report.summary_published, None);
    assert_eq!(sns.published.lock().unwrap().len(), 1, "no topic, no publish");
}

#[tokio::test]
async fn orphans_that_always_fail_queue_behind_fresh_ones_instead_of_starving_the_cap() {
    // Two old orphans EC2 refuses to delete (an SCP, a lock the listing did not show yet), and
    // MAX_DELETIONS=2: oldest first, they take the whole cap on the first run.
    let mut stuck = vec![orphan("snap-01"), orphan("snap-02")];
    for s in &mut stuck {
        s.start_time = Some(now() - chrono::Duration::days(300));
    }
    let fresh = vec![orphan("snap-03"), orphan("snap-04")];
    let listing: Vec<SnapshotListing> = stuck.iter().chain(&fresh).cloned().collect();
    let refusing = || {
        let mut ec2 = FakeEc2::with(listing.clone(), vec![]);
        for id in ["snap-01", "snap-02"] {
            ec2.delete_errors.insert(id.into(), "UnauthorizedOperation".into());
        }
        ec2
    };
    let capped = Config { max_deletions: 2, ..config() };
    let ledger = ledger_seen("us-east-1", listing.iter().map(|s| s.snapshot_id.clone()));
    let (first, ec2) = sweep_in(&capped, refusing(), &ledger, now()).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-01", "snap-02"]);
    assert_eq!(first.regions[0].failed.len(), 2);

    // The next run remembers the failures: the fresh orphans get the cap, the stuck ones wait.
    let (second, ec2) = sweep_in(&capped, refusing(), &ledger, now() + chrono::Duration::hours(24)).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-03", "snap-04"]);
    let region = &second.regions[0];
    assert_eq!(region.deleted, ["snap-03", "snap-04"]);
    assert_eq!(region.orphans_failed_before, 2);
    let order: Vec<&str> = region.orphans.iter().map(|o| o.snapshot_id.as_str()).collect();
    assert_eq!(order, ["snap-03", "snap-04", "snap-01", "snap-02"]);
    assert_eq!(region.kept.get(&KeepReason::OverCap), Some(&2));
    // Their clock went on: they are orphans since the ledger first saw them, not since the failure.
    let since = now() - chrono::Duration::days(SEEN_ORPHANED_DAYS);
    assert!(region.orphans.iter().all(|o| o.orphaned_since == since), "{:?}", region.orphans);
}

// ---- hostile input ----

mod hostile_input {
    use amiguard::testing::any_json;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;

    /// Strings and keys that bring payloads close to an event the sweeper answers.
    const HINTS: &[&str] = &[
        "Scheduled Event",
        "aws.events",
        "detail-type",
        "detail",
        "EC2 AMI State Change",
        "aws.ec2",
        "ImageId",
        "State",
        "available",
        "deregistered",
        "dry_run",
        "ami-001",
    ];

    /// The scheduled sample with one field replaced by anything.
    fn mutated_event() -> impl Strategy<Value = Value> {
        let fields = ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"];
        (prop::sample::select(fields.to_vec()), any_json(HINTS), any::<bool>()).prop_map(|(field, value, dry)| {
            let mut payload = event(json!({}));
            if dry {
                payload["detail"] = json!({"dry_run": value});
            } else {
                payload[field] = value;
            }
            payload
        })
    }

    /// A valid `EC2 AMI State Change` envelope around a hostile `detail`: anything, or the
    /// documented keys with any values (the AMI of the account's orphan among them).
    fn ami_event_with_hostile_detail() -> impl Strategy<Value = Value> {
        let image_id = prop_oneof![
            Just(json!("ami-001")),
            "ami-[0-9a-f]{0,20}".prop_map(Value::from),
            ".{0,24}".prop_map(Value::from),
            any_json(HINTS),
        ];
        let state = prop_oneof![
            prop::sample::select(vec!["available", "deregistered", "failed", "disabled", "Deregistered"])
                .prop_map(Value::from),
            any_json(HINTS),
        ];
        let documented = (image_id, state, any_json(HINTS)).prop_map(
            |(image_id, state, message)| json!({"ImageId": image_id, "State": state, "ErrorMessage": message}),
        );
        prop_oneof![documented, any_json(HINTS)].prop_map(|detail| {
            json!({
                "version": "0", "id": "e-2", "detail-type": "EC2 AMI State Change", "source": "aws.ec2",
                "account": ACCOUNT, "time": "2026-06-01T02:10:00Z", "region": "us-east-1",
                "resources": ["arn:aws:ec2:us-east-1::image/ami-001"], "detail": detail
            })
        })
    }

    /// Random JSON, and valid envelopes (a scheduled event, an AMI event) around hostile details,
    /// so that the handler's own parsing is tried and not only the envelope's.
    fn payloads() -> impl Strategy<Value = Value> {
        prop_oneof![any_json(HINTS), any_json(HINTS).prop_map(event), ami_event_with_hostile_detail()]
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Answers `payload` over an account with one (witnessed) orphan; returns the answer and the
    /// deletions made.
    fn answer(payload: &Value) -> (Result<Response, Error>, usize) {
        let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
        let ledger = ledger_seen("us-east-1", regions[0].1.listed());
        let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
        let result = runtime().block_on(handle(&config(), &ports, payload, &invocation()));
        (result, regions[0].1.calls_to("DeleteSnapshot").len())
    }

    /// Sweeps `payload`; returns the result and the deletions made.
    fn sweep_payload(payload: &Value) -> (Result<Report, Error>, usize) {
        let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
        let result = runtime().block_on(sweep_with(&config(), &regions, &FakeSns::default(), payload, invocation()));
        (result, regions[0].1.calls_to("DeleteSnapshot").len())
    }

    fn is_scheduled_event(payload: &Value) -> bool {
        payload["detail-type"] == "Scheduled Event"
    }

    /// A report or a typed error, and never a deletion the answer does not account for.
    fn check(payload: &Value, result: Result<Response, Error>, deletions: usize) -> Result<(), TestCaseError> {
        match result {
            Ok(Response::Sweep(report)) => {
                prop_assert!(is_scheduled_event(payload), "a sweep from {}", payload);
                prop_assert_eq!(deletions as u64, report.totals.deleted);
                prop_assert!(deletions <= 1 && (!report.dry_run || deletions == 0));
            }
            Ok(Response::AmiEvent(report)) => {
                prop_assert_eq!(&payload["detail-type"], "EC2 AMI State Change");
                prop_assert_eq!(deletions, 0, "an AMI event deletes nothing");
                prop_assert!(["recorded", "already-recorded", "skipped"].contains(&report.outcome));
                prop_assert!(report.outcome != "skipped" || report.reason.is_some(), "a skip says why");
            }
            Err(err) => {
                prop_assert!(matches!(err, Error::Event(_)), "{:?}", err);
                prop_assert_eq!(deletions, 0);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_json_is_refused_before_any_deletion(payload in payloads()) {
            let (result, deletions) = answer(&payload);
            check(&payload, result, deletions)?;
        }

        #[test]
        fn a_mutated_scheduled_event_is_a_report_or_a_typed_error(payload in mutated_event()) {
            let (result, deletions) = sweep_payload(&payload);
            match result {
                Ok(report) => prop_assert!(report.dry_run || deletions <= 1),
                Err(err) => {
                    prop_assert!(matches!(err, Error::Event(_)), "{:?}", err);
                    prop_assert_eq!(deletions, 0);
                }
            }
        }
    }

    #[test]
    fn still_alive_after_a_hundred_random_payloads() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut reports, mut errors) = (0, 0);
        for _ in 0..100 {
            let payload = payloads().new_tree(&mut runner).unwrap().current();
            let (result, deletions) = answer(&payload);
            if result.is_ok() {
                reports += 1;
            } else {
                errors += 1;
            }
            check(&payload, result, deletions).unwrap_or_else(|e| panic!("{payload}: {e}"));
        }
        assert_eq!(reports + errors, 100);
        assert!(reports > 0 && errors > 0, "both kinds of answer were tried: {reports} reports, {errors} errors");
        let (result, deletions) = sweep_payload(&event(json!({})));
        assert_eq!(result.unwrap().regions[0].deleted, ["snap-01"]);
        assert_eq!(deletions, 1);
    }
}

// ---- a bounded report ----

#[tokio::test]
async fn the_report_of_a_huge_first_run_fits_one_log_event_and_says_where_the_rest_is() {
    let regions: Vec<(String, FakeEc2)> = ["us-east-1", "eu-west-1", "ap-south-1"]
        .iter()
        .enumerate()
        .map(|(r, region)| {
            let snapshots = (0..3000).map(|i| orphan(&format!("snap-{r}{i:05x}"))).collect();
            (region.to_string(), FakeEc2::with(snapshots, vec![]))
        })
        .collect();
    let dry = Config { dry_run: true, ..config() };
    let report = sweep_with(&dry, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();

    let logged = serde_json::to_string(&report).unwrap();
    assert!(logged.len() <= report::MAX_REPORT_BYTES, "{} bytes", logged.len());
    assert_eq!(report.totals.orphans, 9000, "the totals count everything");
    for region in &report.regions {
        assert_eq!(region.counts.orphans, 3000);
        assert!(region.orphans.len() <= report::LIST_LIMIT && !region.orphans.is_empty());
        // The oldest first: what is shown is what the next deletions would take.
        assert!(region
            .orphans
            .windows(2)
            .all(|w| (w[0].start_time, &w[0].snapshot_id) <= (w[1].start_time, &w[1].snapshot_id)));
    }
    let full = report.full_lists.as_deref().unwrap();
    assert!(full.contains("run#r-test") && full.contains("orphans#<region>"), "{full}");
}
