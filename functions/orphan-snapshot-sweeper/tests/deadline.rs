//! The handler against the invocation's deadline, under tokio's paused clock: what starts, what
//! is cut, and the report that still goes out in time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use orphan_snapshot_sweeper::core::SnapshotListing;
use orphan_snapshot_sweeper::{Config, DEADLINE_MARGIN, DELETION_CUTOFF, DELETION_MARGIN};
use serde_json::json;
use support::*;

#[test]
fn each_deadline_margin_outlasts_the_longest_call_it_covers() {
    let longest = amiguard::sdk::timeout_config().operation_timeout().unwrap();
    assert!(DEADLINE_MARGIN > longest, "{DEADLINE_MARGIN:?} must exceed one call's {longest:?}");
    assert!(DELETION_MARGIN > DELETION_CUTOFF && !DELETION_CUTOFF.is_zero(), "in-flight deletions are cut in time");
}

/// Under tokio's paused clock: each deletion takes 10 s, the deadline is 200 s away. Deletions
/// start while more than `DELETION_MARGIN` is left, and not one after.
#[tokio::test(start_paused = true)]
async fn deletions_go_on_until_their_own_margin_and_none_starts_inside_it() {
    let orphans: Vec<SnapshotListing> = (0..150).map(|i| orphan(&format!("snap-{i:03}"))).collect();
    let mut ec2 = FakeEc2::with(orphans, vec![]);
    ec2.slow = Some(("DeleteSnapshot", Duration::from_secs(10)));
    let regions = vec![("us-east-1".to_string(), ec2)];
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(200);
    let soon = invocation().with_deadline(SystemTime::now() + Duration::from_secs(200));
    let report = sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), soon).await.unwrap();
    let region = &report.regions[0];
    let starts = regions[0].1.delete_started.lock().unwrap().clone();
    assert!(!starts.is_empty() && starts.iter().all(|at| *at + DELETION_MARGIN < deadline));
    assert!(starts.iter().any(|at| *at > deadline - DEADLINE_MARGIN), "past the listing margin");
    assert_eq!(region.deleted.len(), starts.len());
    assert!(!region.left_for_next_run.is_empty());
    assert_eq!(region.deleted.len() + region.left_for_next_run.len(), 150);
}

/// A paged listing can outlast any one call's timeout: whatever the region has in flight is cut
/// `DELETION_CUTOFF` before the deadline, and the report still comes back in time.
#[tokio::test(start_paused = true)]
async fn a_listing_still_running_near_the_deadline_is_cut_and_its_region_aborted() {
    let mut ec2 = FakeEc2::with(vec![orphan("snap-01")], vec![]);
    ec2.slow = Some(("DescribeImages", Duration::from_secs(10_000)));
    let regions = vec![("us-east-1".to_string(), ec2)];
    let started = tokio::time::Instant::now();
    let report = sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    let cut_after = tokio::time::Instant::now() - started;
    let cutoff = Duration::from_secs(900) - DELETION_CUTOFF;
    assert!(cut_after <= cutoff && cut_after > cutoff - Duration::from_secs(1), "{cut_after:?}");
    let aborted = report.regions[0].aborted.as_deref().unwrap();
    assert!(aborted.contains("listing images failed") && aborted.contains("Timeout"), "{aborted}");
    assert!(regions[0].1.calls_to("DeleteSnapshot").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_deletion_that_never_answers_is_cut_and_reported_and_the_others_go_on() {
    let mut ec2 = FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02"), orphan("snap-03")], vec![]);
    ec2.hang.insert("snap-02".into());
    let (report, _) = sweep(&config(), ec2).await;
    let region = &report.regions[0];
    assert_eq!(region.deleted, ["snap-01", "snap-03"]);
    assert_eq!(region.failed.len(), 1);
    assert_eq!((region.failed[0].snapshot_id.as_str(), region.failed[0].code.as_str()), ("snap-02", "Timeout"));
    assert!(region.failed[0].message.contains("before the invocation's deadline"));
}

/// Under tokio's paused clock: the handler reads the deadline into it, so time passes only when
/// the fakes say so.
#[tokio::test(start_paused = true)]
async fn no_region_and_no_listing_starts_when_the_deadline_is_near() {
    let orphans = || vec![orphan("snap-01"), orphan("snap-02")];
    let regions = vec![
        ("us-east-1".to_string(), FakeEc2::with(orphans(), vec![])),
        ("eu-west-1".to_string(), FakeEc2::with(orphans(), vec![])),
    ];
    let sns = FakeSns::default();
    let near = invocation().with_deadline(SystemTime::now() + DEADLINE_MARGIN - Duration::from_secs(1));
    let topic = Config { report_topic_arn: Some("arn:aws:sns:us-east-1:123456789012:sweeps".into()), ..config() };
    let report = sweep_with(&topic, &regions, &sns, &event(json!({})), near).await.unwrap();
    for (region, (_, ec2)) in report.regions.iter().zip(&regions) {
        assert!(ec2.calls().is_empty(), "{}: {:?}", region.region, ec2.calls());
        assert!(region.aborted.as_deref().unwrap().contains("deadline was near before the region started"));
    }
    assert_eq!(report.summary_published, Some(true), "the report still goes out, within the margin");

    // The deadline comes near during a listing: the next one never starts, nothing is deleted.
    let mut slow = FakeEc2::with(orphans(), vec![]);
    slow.slow = Some(("DescribeImages", Duration::from_secs(60)));
    let regions = vec![("us-east-1".to_string(), slow)];
    let soon = invocation().with_deadline(SystemTime::now() + DEADLINE_MARGIN + Duration::from_secs(30));
    let report = sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), soon).await.unwrap();
    assert_eq!(regions[0].1.calls(), ["DescribeSnapshots", "DescribeImages"]);
    assert!(report.regions[0].aborted.as_deref().unwrap().contains("before listing the Recycle Bin"));
    assert!(report.regions[0].deleted.is_empty());

    // A deadline already past at start is an emulator's (cargo lambda watch): noted, not obeyed.
    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
    let past = invocation().with_deadline(SystemTime::UNIX_EPOCH + Duration::from_millis(600_000));
    let report = sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), past).await.unwrap();
    assert_eq!(report.regions[0].deleted, ["snap-01"]);
    assert!(report.warnings[0].contains("deadline"), "{:?}", report.warnings);
}

/// The process's tracing subscriber in this test binary: it keeps the `report` field of each
/// event in the log of the thread that emitted it, if that thread is recording. Global, because a
/// scoped subscriber (`set_default`) can miss events when other test threads register the same
/// callsites without one (tracing caches callsite interest process-wide).
struct LogRecorder;

thread_local! {
    static RECORDING: std::cell::RefCell<Option<std::sync::Arc<Mutex<Vec<String>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Starts recording this thread's `report` log lines into the returned log.
fn record_logs() -> std::sync::Arc<Mutex<Vec<String>>> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| tracing::subscriber::set_global_default(LogRecorder).expect("no other subscriber"));
    let log = std::sync::Arc::new(Mutex::new(Vec::new()));
    RECORDING.with(|recording| *recording.borrow_mut() = Some(log.clone()));
    log
}

impl tracing::Subscriber for LogRecorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Report(Option<String>);
        impl tracing::field::Visit for Report {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "report" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut report = Report(None);
        event.record(&mut report);
        if let Some(report) = report.0 {
            RECORDING.with(|recording| {
                if let Some(log) = recording.borrow().as_ref() {
                    log.lock().unwrap().push(report);
                }
            });
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn the_report_is_logged_before_the_summary_is_sent_and_a_hung_publish_ends_at_the_deadline() {
    let log = record_logs();
    let with_topic = Config { report_topic_arn: Some("arn:aws:sns:us-east-1:123456789012:sweeps".into()), ..config() };
    let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
    let hung = FakeSns { hang: true, log: Some(log.clone()), ..FakeSns::default() };
    // Inside the margin: the region is not swept, the report still goes out, and the publish
    // that hangs is cut a second before the deadline.
    let soon = invocation().with_deadline(SystemTime::now() + Duration::from_secs(3));
    let started = tokio::time::Instant::now();
    let report = sweep_with(&with_topic, &regions, &hung, &event(json!({})), soon).await.unwrap();
    let ended_after = tokio::time::Instant::now() - started;
    assert!(ended_after <= Duration::from_secs(2), "cut a second before the deadline: {ended_after:?}");
    assert_eq!(report.summary_published, Some(false));
    assert!(report.warnings.iter().any(|w| w.contains("DeadlineReached")), "{:?}", report.warnings);
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].contains("deadline was near before the region started"), "the whole report first: {}", log[0]);
    assert_eq!(log[1], "publish");
    assert!(log[2].contains(r#""summary_published":false"#) && log[2].contains("DeadlineReached"), "{}", log[2]);
}
