//! Handler tests: an in-memory EC2 for the decisions and outcomes, and `aws-smithy-mocks` on the
//! real `aws_sdk_ec2::Client` adapter for paging, failing pages, throttling, InUse and the Recycle
//! Bin (which moto lacks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::core::{ImageKeepReason, KeepReason, SnapshotFacts, SnapshotListing};
use crate::ports::LaunchTemplateImages;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::ledger::{keys, Item};
use amiguard::recycle_bin::RecycleBin;
use amiguard::tags::{self, Tag};
use amiguard::AwsError;
use chrono::TimeZone;
use serde_json::{json, Value};

use super::*;
use crate::core::ImageFacts;
use crate::event::Event;
use crate::ports::{Ec2, SummaryPublisher};
use crate::report::FailedDeletion;
use amiguard::events::EventError;
use chrono::{DateTime, Utc};
use std::time::{Duration, SystemTime};

const ACCOUNT: &str = "123456789012";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

fn invocation() -> Invocation {
    Invocation::at(now()).with_request_id("r-test").with_deadline(SystemTime::now() + Duration::from_secs(900))
}

/// How long ago the ledger saw the tests' orphans orphaned (established orphans: past the grace).
const SEEN_ORPHANED_DAYS: i64 = 3;

/// A ledger in which the snapshots `ids` of `region` were seen orphaned `SEEN_ORPHANED_DAYS` ago.
fn ledger_seen(region: &str, ids: impl IntoIterator<Item = String>) -> MemoryLedger {
    let ledger = MemoryLedger::new();
    for id in ids {
        ledger.insert(
            Item::new(keys::orphans(region), id)
                .with_time("first_seen", now() - chrono::Duration::days(SEEN_ORPHANED_DAYS)),
        );
    }
    ledger
}

/// Sweeps `regions` with a ledger that saw every listed snapshot orphaned days ago.
async fn sweep_with<E: Ec2 + Listed>(
    config: &Config,
    regions: &[(String, E)],
    publisher: &FakeSns,
    payload: &Value,
    invocation: Invocation,
) -> Result<Report, Error> {
    let ledger = MemoryLedger::new();
    for (region, ec2) in regions {
        for item in ledger_seen(region, ec2.listed()).items() {
            ledger.insert(item);
        }
    }
    let ports = Ports { regions, publisher, ledger: Some(&ledger) };
    handle(config, &ports, payload, &invocation).await.map(|response| response.sweep().expect("a sweep's report"))
}

/// The snapshot ids a test region lists.
trait Listed {
    fn listed(&self) -> Vec<String>;
}

fn config() -> Config {
    Config {
        dry_run: false,
        min_age_hours: 24,
        max_deletions: 500,
        max_delete_fraction: 1.0,
        protect_tag: tags::KEEP.to_string(),
        regions: vec!["us-east-1".into()],
        price_per_gb_month: 0.05,
        report_topic_arn: None,
        recycle_bin_check: true,
        retire_unused_amis_after_days: None,
        recycle_bin: RecycleBin::default(),
        home_region: Some("us-east-1".into()),
        ledger_read_only: false,
    }
}

/// `config()` with the stack's Recycle Bin rules keeping deletions for a week.
fn with_recycle_bin(config: Config) -> Config {
    Config { recycle_bin: RecycleBin::retaining_for(7), ..config }
}

fn event(detail: Value) -> Value {
    json!({
        "version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": ACCOUNT, "time": "2026-06-01T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/sweep"], "detail": detail
    })
}

fn orphan(id: &str) -> SnapshotListing {
    SnapshotListing {
        snapshot_id: id.to_string(),
        owner_id: Some(ACCOUNT.to_string()),
        state: "completed".to_string(),
        start_time: Some(now() - chrono::Duration::days(3)),
        size_gib: 10,
        description: format!("Created by CreateImage(i-0123) for ami-0{} from vol-01", &id[5..]),
        volume_id: Some("vol-01".to_string()),
        storage_tier: Some("standard".to_string()),
        tags: vec![],
    }
}

fn image(id: &str, snapshots: &[&str], age_days: i64) -> ImageFacts {
    ImageFacts {
        image_id: id.into(),
        owner_id: Some(ACCOUNT.into()),
        name: format!("name-{id}"),
        state: "available".into(),
        creation_date: Some(now() - chrono::Duration::days(age_days)),
        last_launched_time: None,
        public: false,
        deregistration_protection: None,
        snapshot_ids: snapshots.iter().map(|&s| s.into()).collect(),
        tags: vec![],
    }
}

fn err(operation: &'static str, code: &str) -> AwsError {
    AwsError::new(operation, code, format!("{code} (fake)"))
}

/// An in-memory region that records every call.
#[derive(Default)]
struct FakeEc2 {
    /// Read with the handler's `PROTECT_TAG`, as the EC2 adapter reads each page.
    snapshots: Vec<SnapshotListing>,
    images: Vec<ImageFacts>,
    bin: BTreeSet<String>,
    instances: BTreeSet<String>,
    templates: LaunchTemplateImages,
    shared: BTreeSet<String>,
    locked: hashbrown::HashSet<crate::core::Id>,
    restores: Vec<crate::core::FastSnapshotRestore>,
    referenced: BTreeSet<String>,
    shared_snapshots: BTreeSet<String>,
    fail: BTreeMap<&'static str, String>,
    delete_errors: BTreeMap<String, String>,
    deregister_errors: BTreeMap<String, String>,
    calls: Mutex<Vec<String>>,
    /// A call that takes this long (real time), to bring the deadline near in the middle of a run.
    slow: Option<(&'static str, Duration)>,
    /// Shared by the regions of one test: how many of their listings and deletions overlap.
    gauge: Option<std::sync::Arc<Gauge>>,
    /// Snapshots whose deletion never answers.
    hang: BTreeSet<String>,
    /// When each DeleteSnapshot started, on tokio's clock (paused in some tests).
    delete_started: Mutex<Vec<tokio::time::Instant>>,
    /// Called as each DeleteSnapshot answers (to break the ledger in the middle of a run).
    on_delete: Option<Box<dyn Fn() + Send + Sync>>,
}

/// The most listings and deletions in flight at once, across regions.
#[derive(Default)]
struct Gauge {
    listing: std::sync::atomic::AtomicUsize,
    most_listing: std::sync::atomic::AtomicUsize,
    deleting: std::sync::atomic::AtomicUsize,
    most_deleting: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    /// Counts one more in flight for the time of `pause`.
    async fn during(count: &std::sync::atomic::AtomicUsize, most: &std::sync::atomic::AtomicUsize, pause: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        most.fetch_max(count.fetch_add(1, SeqCst) + 1, SeqCst);
        tokio::time::sleep(pause).await;
        count.fetch_sub(1, SeqCst);
    }
}

impl FakeEc2 {
    fn with(snapshots: Vec<SnapshotListing>, images: Vec<ImageFacts>) -> Self {
        Self { snapshots, images, ..Self::default() }
    }

    fn call(&self, op: &'static str, arg: &str) -> Result<(), AwsError> {
        self.calls.lock().unwrap().push(if arg.is_empty() { op.to_string() } else { format!("{op} {arg}") });
        match self.fail.get(op) {
            Some(code) => Err(err(op, code)),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn maybe_slow(&self, op: &str) {
        if let Some((slow_op, pause)) = self.slow {
            if slow_op == op {
                tokio::time::sleep(pause).await;
            }
        }
    }

    fn calls_to(&self, op: &str) -> Vec<String> {
        let prefix = format!("{op} ");
        self.calls().into_iter().filter_map(|c| c.strip_prefix(&prefix).map(str::to_string)).collect()
    }
}

impl Listed for FakeEc2 {
    fn listed(&self) -> Vec<String> {
        self.snapshots.iter().map(|s| s.snapshot_id.clone()).collect()
    }
}

impl Ec2 for FakeEc2 {
    async fn snapshots(&self, protect_tag: &str) -> Result<Vec<SnapshotFacts>, AwsError> {
        let read = || self.snapshots.iter().map(|s| s.read(protect_tag)).collect();
        if let Some(gauge) = &self.gauge {
            Gauge::during(&gauge.listing, &gauge.most_listing, Duration::from_millis(50)).await;
        }
        self.call("DescribeSnapshots", "").map(|_| read())
    }
    async fn images(&self, _protect_tag: &str) -> Result<Vec<ImageFacts>, AwsError> {
        self.maybe_slow("DescribeImages").await;
        self.call("DescribeImages", "").map(|_| self.images.clone())
    }
    async fn images_in_recycle_bin(&self) -> Result<BTreeSet<String>, AwsError> {
        self.call("ListImagesInRecycleBin", "").map(|_| self.bin.clone())
    }
    async fn images_used_by_instances(&self) -> Result<BTreeSet<String>, AwsError> {
        self.call("DescribeInstances", "").map(|_| self.instances.clone())
    }
    async fn launch_template_images(&self) -> Result<LaunchTemplateImages, AwsError> {
        self.call("DescribeLaunchTemplateVersions", "").map(|_| self.templates.clone())
    }
    async fn is_image_shared(&self, image_id: &str) -> Result<bool, AwsError> {
        self.call("DescribeImageAttribute", image_id).map(|_| self.shared.contains(image_id))
    }
    async fn locked_snapshots(&self) -> Result<hashbrown::HashSet<crate::core::Id>, AwsError> {
        self.call("DescribeLockedSnapshots", "").map(|_| self.locked.clone())
    }
    async fn fast_snapshot_restores(&self) -> Result<Vec<crate::core::FastSnapshotRestore>, AwsError> {
        self.call("DescribeFastSnapshotRestores", "").map(|_| self.restores.clone())
    }
    async fn referenced_images(&self, image_ids: &[String]) -> Result<BTreeSet<String>, AwsError> {
        self.call("DescribeImageReferences", &image_ids.join(","))
            .map(|_| image_ids.iter().filter(|id| self.referenced.contains(*id)).cloned().collect())
    }
    async fn is_snapshot_shared(&self, snapshot_id: &str) -> Result<bool, AwsError> {
        self.call("DescribeSnapshotAttribute", snapshot_id).map(|_| self.shared_snapshots.contains(snapshot_id))
    }
    async fn deregister_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.call("DeregisterImage", image_id)?;
        match self.deregister_errors.get(image_id) {
            Some(code) => Err(err("DeregisterImage", code)),
            None => Ok(()),
        }
    }
    async fn mark_for_recycle_bin(&self, resource_ids: Vec<String>) -> Result<(), AwsError> {
        self.call("CreateTags", &resource_ids.join(","))
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        if let Some(gauge) = &self.gauge {
            // Longer than a listing: the next region lists and starts deleting meanwhile.
            Gauge::during(&gauge.deleting, &gauge.most_deleting, Duration::from_millis(250)).await;
        }
        self.delete_started.lock().unwrap().push(tokio::time::Instant::now());
        self.maybe_slow("DeleteSnapshot").await;
        if let Some(hook) = &self.on_delete {
            hook();
        }
        if self.hang.contains(snapshot_id) {
            std::future::pending::<()>().await;
        }
        self.call("DeleteSnapshot", snapshot_id)?;
        match self.delete_errors.get(snapshot_id) {
            Some(code) => Err(err("DeleteSnapshot", code)),
            None => Ok(()),
        }
    }
}

#[derive(Default)]
struct FakeSns {
    fail: bool,
    /// Never answers (a publish that hangs until the SDK's timeout).
    hang: bool,
    published: Mutex<Vec<(String, String, String)>>,
    /// Where a publish is noted, beside what the handler logged before it.
    log: Option<std::sync::Arc<Mutex<Vec<String>>>>,
}

impl SummaryPublisher for FakeSns {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<(), AwsError> {
        if let Some(log) = &self.log {
            log.lock().unwrap().push("publish".into());
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.published.lock().unwrap().push((topic_arn.into(), subject.into(), message.into()));
        if self.fail {
            return Err(err("Publish", "AuthorizationError"));
        }
        Ok(())
    }
}

async fn sweep(config: &Config, ec2: FakeEc2) -> (Report, FakeEc2) {
    let regions = vec![("us-east-1".to_string(), ec2)];
    let report = sweep_with(config, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    let (_, ec2) = regions.into_iter().next().unwrap();
    (report, ec2)
}

/// Sweeps `ec2` at `at` with `ledger` as amiguard's memory, kept from run to run.
async fn sweep_in(config: &Config, ec2: FakeEc2, ledger: &MemoryLedger, at: DateTime<Utc>) -> (Report, FakeEc2) {
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(ledger) };
    let invocation =
        Invocation::at(at).with_request_id("r-test").with_deadline(SystemTime::now() + Duration::from_secs(900));
    let response = handle(config, &ports, &event(json!({})), &invocation).await.unwrap();
    let (_, ec2) = regions.into_iter().next().unwrap();
    (response.sweep().expect("a sweep's report"), ec2)
}

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
    // snap-01 the ledger saw orphaned days ago (due), snap-02 it never saw (first seen now).
    let ledger = ledger_seen("us-east-1", ["snap-01".to_string()]);
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

// ---- retiring unused AMIs ----

fn retiring(days: u32) -> Config {
    Config { retire_unused_amis_after_days: Some(days), ..config() }
}

/// An old image with one snapshot (its CreateImage description names it).
fn old_image_with_snapshot(n: u32) -> (ImageFacts, SnapshotListing) {
    let snap = orphan(&format!("snap-{n}"));
    (image(&format!("ami-0{n}"), &[&snap.snapshot_id], 400), snap)
}

#[tokio::test]
async fn an_unused_old_ami_is_deregistered_then_its_snapshots_deleted() {
    let (old, old_snap) = old_image_with_snapshot(1);
    let (used, used_snap) = old_image_with_snapshot(2);
    let (templated, templated_snap) = old_image_with_snapshot(3);
    let (young, young_snap) = {
        let (mut i, s) = old_image_with_snapshot(4);
        i.creation_date = Some(now() - chrono::Duration::days(10));
        (i, s)
    };
    let (mine, mine_snap) = {
        let (mut i, s) = old_image_with_snapshot(5);
        i.tags.push(Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP));
        (i, s)
    };
    let mut ec2 = FakeEc2::with(
        vec![old_snap, used_snap, templated_snap, young_snap, mine_snap],
        vec![old, used, templated, young, mine],
    );
    ec2.instances.insert("ami-02".into());
    ec2.templates.image_ids.insert("ami-03".into());
    let ledger = ledger_seen("us-east-1", ec2.listed());
    let (report, ec2) = sweep_in(&retiring(90), ec2, &ledger, now()).await;
    assert_eq!(ec2.calls_to("DescribeImageAttribute"), ["ami-01"], "sharing is read for candidates only");
    assert_eq!(ec2.calls_to("DeregisterImage"), ["ami-01"]);
    // Its snapshot became an orphan when amiguard deregistered the AMI: it waits the grace period
    // from then (time to notice, and to register the AMI again from it), whatever the ledger saw.
    assert!(ec2.calls_to("DeleteSnapshot").is_empty());
    let waiting = &report.regions[0].waiting;
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].orphan.snapshot_id.as_str(), waiting[0].orphan.source_image_id.as_str()),
        ("snap-1", "ami-01")
    );
    assert_eq!(waiting[0].deletable_after, now() + chrono::Duration::hours(24));
    assert_eq!(report.retired_images.len(), 1);
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::Deregistered);
    assert_eq!(report.retired_images[0].snapshot_ids, ["snap-1"]);
    assert_eq!(report.totals.images_retired, 1);
    let region = &report.regions[0];
    assert_eq!(
        region.images_kept,
        BTreeMap::from([
            (ImageKeepReason::CreatedBySnapshotOnStop, 1),
            (ImageKeepReason::UsedByInstance, 1),
            (ImageKeepReason::UsedByLaunchTemplate, 1),
            (ImageKeepReason::TooYoung, 1),
        ])
    );
    assert_eq!(region.kept, BTreeMap::from([(KeepReason::ReferencedByImage, 4), (KeepReason::TooYoung, 1)]));
    // The recycle bin is read again after a real deregistration.
    assert_eq!(ec2.calls().iter().filter(|c| *c == "ListImagesInRecycleBin").count(), 2);

    // A day later the AMI is gone from EC2 and the ledger dates its deregistration: deleted.
    let (_, old_snap) = old_image_with_snapshot(1);
    let (report, ec2) =
        sweep_in(&retiring(90), FakeEc2::with(vec![old_snap], vec![]), &ledger, now() + chrono::Duration::hours(25))
            .await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-1"], "{:?}", report.regions[0]);
}

#[tokio::test]
async fn retirement_dry_run_changes_nothing_but_reports_both_steps() {
    let (old, snap) = old_image_with_snapshot(1);
    let dry = Config { dry_run: true, ..retiring(90) };
    let (report, ec2) = sweep(&dry, FakeEc2::with(vec![snap], vec![old])).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty() && ec2.calls_to("DeleteSnapshot").is_empty());
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::DryRun);
    // Its snapshot would then wait the grace period from the deregistration.
    let waiting = &report.regions[0].waiting;
    assert_eq!(waiting.iter().map(|w| w.orphan.snapshot_id.as_str()).collect::<Vec<_>>(), ["snap-1"]);
    assert_eq!(waiting[0].deletable_after, now() + chrono::Duration::hours(24));
    assert_eq!(report.totals.images_retired, 0);
}

#[tokio::test]
async fn a_failed_deregistration_keeps_the_image_snapshots() {
    let (old, snap) = old_image_with_snapshot(1);
    let mut ec2 = FakeEc2::with(vec![snap], vec![old]);
    ec2.deregister_errors.insert("ami-01".into(), "UnauthorizedOperation".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert!(ec2.calls_to("DeleteSnapshot").is_empty());
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::Failed);
    assert_eq!(report.retired_images[0].code.as_deref(), Some("UnauthorizedOperation"));
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::ReferencedByImage, 1)]));
}

#[tokio::test]
async fn retirement_keeps_shared_images_and_stops_on_unknowns() {
    let (a, sa) = old_image_with_snapshot(1);
    let (b, sb) = old_image_with_snapshot(2);
    let mut ec2 = FakeEc2::with(vec![sa.clone(), sb.clone()], vec![a.clone(), b.clone()]);
    ec2.shared.insert("ami-02".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert_eq!(ec2.calls_to("DeregisterImage"), ["ami-01"]);
    assert_eq!(report.regions[0].images_kept, BTreeMap::from([(ImageKeepReason::Shared, 1)]));

    // An SSM alias that did not resolve: we cannot tell what is in use, so nothing is retired.
    let mut ec2 = FakeEc2::with(vec![sa.clone()], vec![a.clone()]);
    ec2.templates.unresolved.push("lt-01 version 3: resolve:ssm:/golden".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty());
    assert!(report.regions[0].retirement_skipped.as_deref().unwrap().contains("resolve:ssm:/golden"));
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::ReferencedByImage, 1)]), "the sweep still ran");

    let mut ec2 = FakeEc2::with(vec![sa], vec![a]);
    ec2.fail.insert("DescribeInstances", "RequestLimitExceeded".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty());
    assert!(report.regions[0].retirement_skipped.as_deref().unwrap().starts_with("listing instances failed"));
}

#[tokio::test]
async fn retirement_asks_ec2_who_uses_an_ami_and_respects_what_ec2_says_of_it() {
    let (unused, s1) = old_image_with_snapshot(1);
    let (referenced, s2) = old_image_with_snapshot(2);
    let (protected, s3) = old_image_with_snapshot(3);
    let protected = ImageFacts { deregistration_protection: Some("enabled-without-cooldown".into()), ..protected };
    let (disabled, s4) = old_image_with_snapshot(4);
    let disabled = ImageFacts { state: "disabled".into(), ..disabled };
    let (snapshot_shared, s5) = old_image_with_snapshot(5);
    let (cooling_down, s6) = old_image_with_snapshot(6);
    let cooling_down =
        ImageFacts { deregistration_protection: Some("disabled after 2026-06-02T00:00:00Z".into()), ..cooling_down };
    let (protect_tag_in_caps, s7) = old_image_with_snapshot(7);
    let protect_tag_in_caps = ImageFacts { tags: vec![Tag::new("AMIGUARD:KEEP", "")], ..protect_tag_in_caps };
    let mut ec2 = FakeEc2::with(
        vec![s1, s2, s3, s4, s5, s6, s7],
        vec![unused, referenced, protected, disabled, snapshot_shared, cooling_down, protect_tag_in_caps],
    );
    ec2.referenced.insert("ami-02".into());
    ec2.shared_snapshots.insert("snap-5".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert_eq!(ec2.calls_to("DescribeImageReferences"), ["ami-01,ami-02,ami-05"], "one batch, candidates only");
    assert_eq!(ec2.calls_to("DescribeImageAttribute"), ["ami-01", "ami-05"], "not for a referenced AMI");
    assert_eq!(ec2.calls_to("DescribeSnapshotAttribute"), ["snap-1", "snap-5"]);
    assert_eq!(ec2.calls_to("DeregisterImage"), ["ami-01"], "no DeregisterImage for a protected AMI");
    assert_eq!(
        report.regions[0].images_kept,
        BTreeMap::from([
            (ImageKeepReason::Protected, 1),
            (ImageKeepReason::DeregistrationProtected, 2),
            (ImageKeepReason::Disabled, 1),
            (ImageKeepReason::Referenced, 1),
            (ImageKeepReason::SnapshotShared, 1),
        ])
    );
    let json = serde_json::to_value(&report.regions[0].images_kept).unwrap();
    assert_eq!(json["deregistration_protected"], 2);
    assert_eq!(json["snapshot_shared"], 1);
}

#[tokio::test]
async fn when_ec2_cannot_say_who_uses_an_ami_it_is_kept_and_the_sweep_goes_on() {
    let (a, sa) = old_image_with_snapshot(1);
    let (b, sb) = old_image_with_snapshot(2);
    let established = orphan("snap-09");
    let mut ec2 = FakeEc2::with(vec![sa.clone(), sb.clone(), established.clone()], vec![a.clone(), b.clone()]);
    ec2.fail.insert("DescribeImageReferences", "UnauthorizedOperation".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty());
    assert!(ec2.calls_to("DescribeImageAttribute").is_empty(), "nothing more is asked of an unknown");
    assert_eq!(report.regions[0].images_kept, BTreeMap::from([(ImageKeepReason::ReferencesUnknown, 2)]));
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("DescribeImageReferences") && w.contains("UnauthorizedOperation")));
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-09"], "the sweep still ran");

    let mut ec2 = FakeEc2::with(vec![sa, sb], vec![a, b]);
    ec2.fail.insert("DescribeSnapshotAttribute", "RequestLimitExceeded".into());
    let (report, ec2) = sweep(&retiring(90), ec2).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty());
    assert_eq!(report.regions[0].images_kept, BTreeMap::from([(ImageKeepReason::SnapshotSharingUnknown, 2)]));
}

#[tokio::test]
async fn deregistrations_count_against_max_deletions() {
    let (a, sa) = old_image_with_snapshot(1);
    let (b, sb) = old_image_with_snapshot(2);
    let established = orphan("snap-09");
    let capped = Config { max_deletions: 3, ..retiring(90) };
    let (report, ec2) =
        sweep(&capped, FakeEc2::with(vec![sa, sb, established.clone(), orphan("snap-0a")], vec![a, b])).await;
    assert_eq!(ec2.calls_to("DeregisterImage").len(), 2);
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-09"], "3 = 2 deregistrations + 1 deletion");
    assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::OverCap, 1), (KeepReason::TooYoung, 2)]));
    assert_eq!(report.regions[0].waiting.len(), 2, "the retired AMIs' snapshots wait their grace period");
}

// ---- the real adapter, with aws-smithy-mocks ----

mod mocked {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::delete_snapshot::{DeleteSnapshotError, DeleteSnapshotOutput};
    use aws_sdk_ec2::operation::describe_images::{DescribeImagesError, DescribeImagesOutput};
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::operation::list_images_in_recycle_bin::{
        ListImagesInRecycleBinError, ListImagesInRecycleBinOutput,
    };
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Image, ImageRecycleBinInfo, Snapshot, SnapshotState};
    use aws_sdk_ec2::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    fn sdk_snapshot(id: &str) -> Snapshot {
        Snapshot::builder()
            .snapshot_id(id)
            .owner_id(ACCOUNT)
            .state(SnapshotState::Completed)
            .start_time(aws_smithy_types::DateTime::from_secs((now() - chrono::Duration::days(3)).timestamp()))
            .volume_size(10)
            .volume_id("vol-01")
            .description(format!("Created by CreateImage(i-0123) for ami-0{} from vol-01", &id[5..]))
            .build()
    }

    fn sdk_image(id: &str, snapshot: &str) -> Image {
        Image::builder()
            .image_id(id)
            .owner_id(ACCOUNT)
            .state(aws_sdk_ec2::types::ImageState::Available)
            .block_device_mappings(
                BlockDeviceMapping::builder().ebs(EbsBlockDevice::builder().snapshot_id(snapshot).build()).build(),
            )
            .build()
    }

    fn metadata(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(format!("{code} (mocked)")).build()
    }

    /// Three pages of snapshots (`snap-1` .. `snap-6`).
    fn snapshot_pages() -> Vec<Rule> {
        let page = |ids: [&'static str; 2], token: Option<&'static str>, next: Option<&'static str>| {
            mock!(Client::describe_snapshots).match_requests(move |r| r.next_token() == token).then_output(move || {
                DescribeSnapshotsOutput::builder()
                    .set_snapshots(Some(ids.iter().map(|id| sdk_snapshot(id)).collect()))
                    .set_next_token(next.map(str::to_string))
                    .build()
            })
        };
        vec![
            page(["snap-1", "snap-2"], None, Some("s1")),
            page(["snap-3", "snap-4"], Some("s1"), Some("s2")),
            page(["snap-5", "snap-6"], Some("s2"), None),
        ]
    }

    fn images_page(
        token: Option<&'static str>,
        next: Option<&'static str>,
        image: Option<(&'static str, &'static str)>,
    ) -> Rule {
        mock!(Client::describe_images).match_requests(move |r| r.next_token() == token).then_output(move || {
            DescribeImagesOutput::builder()
                .set_images(image.map(|(id, snap)| vec![sdk_image(id, snap)]))
                .set_next_token(next.map(str::to_string))
                .build()
        })
    }

    fn empty_bin() -> Rule {
        mock!(Client::list_images_in_recycle_bin).then_output(|| ListImagesInRecycleBinOutput::builder().build())
    }

    fn no_locks() -> Rule {
        mock!(Client::describe_locked_snapshots).then_output(|| {
            aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsOutput::builder().build()
        })
    }

    fn no_restores() -> Rule {
        mock!(Client::describe_fast_snapshot_restores).then_output(|| {
            aws_sdk_ec2::operation::describe_fast_snapshot_restores::DescribeFastSnapshotRestoresOutput::builder()
                .build()
        })
    }

    fn deletes() -> Rule {
        mock!(Client::delete_snapshot).then_output(|| DeleteSnapshotOutput::builder().build())
    }

    /// The SDK's clock follows tokio's, so that under paused time the adaptive rate limiter sees
    /// its back-off pass (the mocks' default clock is frozen, and the limiter would wait forever).
    #[derive(Debug)]
    struct TokioClock(tokio::time::Instant);

    impl aws_smithy_async::time::TimeSource for TokioClock {
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000) + self.0.elapsed()
        }
    }

    /// A client with amiguard's retry policy and a retry partition of its own (the SDK shares a
    /// partition's retry quota and adaptive rate limiter process-wide, across parallel tests).
    fn client(rules: &[&Rule]) -> Client {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partition = aws_sdk_ec2::config::retry::RetryPartition::new(format!("sweeper-handler-test-{n}"));
        // No locks, no Fast Snapshot Restore: the listings every sweep makes.
        let (no_locks, no_restores) = (no_locks(), no_restores());
        let rules: Vec<&Rule> = rules.iter().copied().chain([&no_locks, &no_restores]).collect();
        mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &rules, |c| c
            .retry_config(amiguard::sdk::retry_config())
            .retry_partition(partition.clone())
            .time_source(TokioClock(tokio::time::Instant::now())))
    }

    impl Listed for Client {
        /// `snap-1` .. `snap-6`: the pages of `snapshot_pages`.
        fn listed(&self) -> Vec<String> {
            (1..=6).map(|i| format!("snap-{i}")).collect()
        }
    }

    async fn run(client: Client) -> Report {
        let regions = vec![("us-east-1".to_string(), client)];
        sweep_with(&config(), &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reference_on_the_last_page_of_images_keeps_its_snapshot() {
        let snapshots = snapshot_pages();
        let images = [
            images_page(None, Some("i1"), Some(("ami-0a", "snap-1"))),
            images_page(Some("i1"), Some("i2"), None),
            images_page(Some("i2"), None, Some(("ami-0z", "snap-6"))),
        ];
        let (bin, delete) = (empty_bin(), deletes());
        let mut rules: Vec<&Rule> = snapshots.iter().chain(images.iter()).collect();
        rules.extend([&bin, &delete]);
        let report = run(client(&rules)).await;
        let region = &report.regions[0];
        assert_eq!(region.snapshots_scanned, 6, "every page of snapshots");
        assert_eq!(region.images_scanned, 2, "every page of images");
        assert_eq!(region.deleted, ["snap-2", "snap-3", "snap-4", "snap-5"]);
        assert_eq!(region.kept, BTreeMap::from([(KeepReason::ReferencedByImage, 2)]));
        assert_eq!(delete.num_calls(), 4);
        assert_eq!(images[2].num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_second_page_of_images_aborts_with_zero_deletions() {
        let snapshots = snapshot_pages();
        let first = images_page(None, Some("i1"), Some(("ami-0a", "snap-1")));
        let failing = mock!(Client::describe_images)
            .match_requests(|r| r.next_token() == Some("i1"))
            .then_error(|| DescribeImagesError::generic(metadata("InternalError")));
        let (bin, delete) = (empty_bin(), deletes());
        let mut rules: Vec<&Rule> = snapshots.iter().collect();
        rules.extend([&first, &failing, &bin, &delete]);
        let report = run(client(&rules)).await;
        assert_eq!(delete.num_calls(), 0);
        let region = &report.regions[0];
        assert!(region.aborted.as_deref().unwrap().contains("InternalError"), "{:?}", region.aborted);
        assert!(region.deleted.is_empty() && region.orphans.is_empty());
        assert!(failing.num_calls() >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_deletes_succeed_and_in_use_is_a_reported_outcome() {
        let snapshots = snapshot_pages();
        let images = images_page(None, None, None);
        let throttled = mock!(Client::delete_snapshot)
            .match_requests(|r| r.snapshot_id() == Some("snap-1"))
            .sequence()
            .error(|| DeleteSnapshotError::generic(metadata("RequestLimitExceeded")))
            .times(3)
            .output(|| DeleteSnapshotOutput::builder().build())
            .build();
        let in_use = mock!(Client::delete_snapshot)
            .match_requests(|r| r.snapshot_id() == Some("snap-2"))
            .then_error(|| DeleteSnapshotError::generic(metadata("InvalidSnapshot.InUse")));
        let gone = mock!(Client::delete_snapshot)
            .match_requests(|r| r.snapshot_id() == Some("snap-3"))
            .then_error(|| DeleteSnapshotError::generic(metadata("InvalidSnapshot.NotFound")));
        let (bin, delete) = (empty_bin(), deletes());
        let mut rules: Vec<&Rule> = snapshots.iter().collect();
        rules.extend([&images, &bin, &throttled, &in_use, &gone, &delete]);
        let report = run(client(&rules)).await;
        let region = &report.regions[0];
        assert_eq!(throttled.num_calls(), 4, "three throttled attempts, then success");
        assert_eq!(region.deleted, ["snap-1", "snap-4", "snap-5", "snap-6"]);
        assert_eq!(region.already_gone, ["snap-3"]);
        assert_eq!(
            region.failed,
            [FailedDeletion {
                snapshot_id: "snap-2".into(),
                code: "InvalidSnapshot.InUse".into(),
                message: "InvalidSnapshot.InUse (mocked)".into()
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_recycle_bin_keeps_its_amis_snapshots_and_a_failing_listing_aborts() {
        let snapshots = snapshot_pages();
        let images = images_page(None, None, None);
        let bin = mock!(Client::list_images_in_recycle_bin).then_output(|| {
            ListImagesInRecycleBinOutput::builder()
                .images(ImageRecycleBinInfo::builder().image_id("ami-01").build())
                .images(ImageRecycleBinInfo::builder().image_id("ami-05").build())
                .build()
        });
        let delete = deletes();
        let mut rules: Vec<&Rule> = snapshots.iter().collect();
        rules.extend([&images, &bin, &delete]);
        let report = run(client(&rules)).await;
        assert_eq!(report.regions[0].deleted, ["snap-2", "snap-3", "snap-4", "snap-6"]);
        assert_eq!(report.regions[0].kept, BTreeMap::from([(KeepReason::SourceImageInRecycleBin, 2)]));

        let snapshots = snapshot_pages();
        let failing = mock!(Client::list_images_in_recycle_bin)
            .then_error(|| ListImagesInRecycleBinError::generic(metadata("UnauthorizedOperation")));
        let delete = deletes();
        let mut rules: Vec<&Rule> = snapshots.iter().collect();
        rules.extend([&images, &failing, &delete]);
        let report = run(client(&rules)).await;
        assert_eq!(delete.num_calls(), 0);
        let aborted = report.regions[0].aborted.as_deref().unwrap();
        assert!(aborted.starts_with("listing the Recycle Bin failed") && aborted.contains("UnauthorizedOperation"));
    }
}

// ---- hostile input ----

mod hostile_input {
    use amiguard::testing::any_json;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;

    /// Strings and keys that bring payloads close to a scheduled event.
    const HINTS: &[&str] = &["Scheduled Event", "aws.events", "detail-type", "detail"];

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

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Sweeps `payload` over an account with one orphan; returns the result and the deletions made.
    fn sweep_payload(payload: &Value) -> (Result<Report, Error>, usize) {
        let regions = vec![("us-east-1".to_string(), FakeEc2::with(vec![orphan("snap-01")], vec![]))];
        let result = runtime().block_on(sweep_with(&config(), &regions, &FakeSns::default(), payload, invocation()));
        (result, regions[0].1.calls_to("DeleteSnapshot").len())
    }

    fn is_scheduled_event(payload: &Value) -> bool {
        payload["detail-type"] == "Scheduled Event"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_json_is_refused_before_any_deletion(payload in any_json(HINTS)) {
            let (result, deletions) = sweep_payload(&payload);
            match result {
                Ok(_) => prop_assert!(is_scheduled_event(&payload)),
                Err(err) => {
                    prop_assert!(matches!(err, Error::Event(_)), "{:?}", err);
                    prop_assert_eq!(deletions, 0);
                }
            }
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
        for _ in 0..100 {
            let payload = any_json(HINTS).new_tree(&mut runner).unwrap().current();
            let _ = sweep_payload(&payload);
        }
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

// ---- undo: the Recycle Bin ----

/// The position of each call in `calls` (as the fake recorded them) and its argument.
fn positions<'a>(calls: &'a [String], op: &str) -> Vec<(usize, &'a str)> {
    calls.iter().enumerate().filter_map(|(at, c)| c.strip_prefix(&format!("{op} ")).map(|arg| (at, arg))).collect()
}

/// A week after the test's clock (which runs on from `now()` during the sweep).
fn assert_a_week_from_now(until: Option<DateTime<Utc>>) {
    let week = now() + chrono::Duration::days(7);
    let until = until.expect("restorable_until");
    assert!(until >= week && until < week + chrono::Duration::minutes(1), "{until}");
}

#[tokio::test]
async fn deletions_are_tagged_for_the_recycle_bin_a_thousand_a_call_before_they_start() {
    let ids: Vec<String> = (0..1500).map(|n| format!("snap-{n:05}")).collect();
    let ec2 = FakeEc2::with(ids.iter().map(|id| orphan(id)).collect(), vec![]);
    let config = Config { max_deletions: 2000, ..with_recycle_bin(config()) };
    let (report, ec2) = sweep(&config, ec2).await;
    let calls = ec2.calls();
    let tagged = positions(&calls, "CreateTags");
    assert_eq!(tagged.iter().map(|(_, ids)| ids.split(',').count()).collect::<Vec<_>>(), [1000, 500]);
    let deleted = positions(&calls, "DeleteSnapshot");
    assert_eq!(deleted.len(), 1500);
    for (at, id) in &deleted {
        let (tagged_at, _) = tagged
            .iter()
            .find(|(_, batch)| batch.split(',').any(|t| t == *id))
            .unwrap_or_else(|| panic!("{id} deleted untagged"));
        assert!(tagged_at < at, "{id} was tagged before its deletion");
    }
    let region = &report.regions[0];
    assert_eq!(region.deleted.len(), 200, "the report's list is cut; the count is whole");
    assert_eq!(region.counts.deleted, 1500);
    assert_a_week_from_now(region.restorable_until);
    assert_eq!(report.recycle_bin_retention_days, 7);
}

#[tokio::test]
async fn a_snapshot_the_tag_could_not_be_written_on_is_not_deleted() {
    let mut ec2 = FakeEc2::with(vec![orphan("snap-01"), orphan("snap-02")], vec![]);
    ec2.fail.insert("CreateTags", "UnauthorizedOperation".into());
    let (report, ec2) = sweep(&with_recycle_bin(config()), ec2).await;
    assert!(ec2.calls_to("DeleteSnapshot").is_empty(), "a deletion that could not be undone waits");
    let region = &report.regions[0];
    assert_eq!(region.left_for_next_run, ["snap-01", "snap-02"]);
    assert!(region.deleted.is_empty() && region.restorable_until.is_none());
    assert!(
        report.warnings.iter().any(|w| w.contains("Recycle Bin tag") && w.contains("UnauthorizedOperation")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn without_rules_or_in_a_dry_run_nothing_is_tagged_and_in_another_region_nothing_promised() {
    let (report, ec2) = sweep(&config(), FakeEc2::with(vec![orphan("snap-01")], vec![])).await;
    assert!(ec2.calls_to("CreateTags").is_empty());
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-01"], "no rule: deletions are as final as before");
    assert_eq!((report.regions[0].restorable_until, report.recycle_bin_retention_days), (None, 0));

    let dry = Config { dry_run: true, ..with_recycle_bin(config()) };
    let (report, ec2) = sweep(&dry, FakeEc2::with(vec![orphan("snap-01")], vec![])).await;
    assert!(ec2.calls_to("CreateTags").is_empty(), "a dry run tags nothing");
    assert!(report.regions[0].restorable_until.is_none());

    // The stack's rules are in its own region: a sweep of another tags all the same (a rule
    // made there for the tag keeps what it deletes) but promises no restore.
    let elsewhere = Config { home_region: Some("eu-west-1".into()), ..with_recycle_bin(config()) };
    let (report, ec2) = sweep(&elsewhere, FakeEc2::with(vec![orphan("snap-01")], vec![])).await;
    assert_eq!(ec2.calls_to("CreateTags"), ["snap-01"]);
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-01"]);
    assert!(report.regions[0].restorable_until.is_none());
    assert!(
        report.warnings.iter().any(|w| w.contains("us-east-1") && w.contains("tagged but final")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn each_deletion_says_until_when_it_can_be_restored_in_the_journal() {
    let ledger = ledger_seen("us-east-1", ["snap-01".to_string()]);
    let (_, _) =
        sweep_in(&with_recycle_bin(config()), FakeEc2::with(vec![orphan("snap-01")], vec![]), &ledger, now()).await;
    let entry = ledger
        .items()
        .into_iter()
        .find(|i| i.pk == keys::run("r-test") && i.s("resource_id") == Some("snap-01"))
        .expect("the deletion's journal entry");
    assert_eq!(entry.s("state"), Some("done"));
    assert_a_week_from_now(entry.time("restorable_until"));
}

#[tokio::test]
async fn a_retired_ami_is_tagged_before_its_deregistration_and_says_until_when_it_can_be_restored() {
    let (old, snap) = old_image_with_snapshot(1);
    let (report, ec2) = sweep(&with_recycle_bin(retiring(90)), FakeEc2::with(vec![snap], vec![old])).await;
    let calls = ec2.calls();
    let tagged = positions(&calls, "CreateTags");
    let deregistered = positions(&calls, "DeregisterImage");
    assert_eq!(tagged.iter().map(|(_, ids)| *ids).collect::<Vec<_>>(), ["ami-01"], "the AMI only: its snapshot waits");
    assert_eq!(deregistered.len(), 1);
    assert!(tagged[0].0 < deregistered[0].0);
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::Deregistered);
    assert_a_week_from_now(report.retired_images[0].restorable_until);

    // The bin keeps EBS-backed AMIs only: an instance-store one is retired as before, promised
    // nothing.
    let instance_store = image("ami-09", &[], 400);
    let (report, _) = sweep(&with_recycle_bin(retiring(90)), FakeEc2::with(vec![], vec![instance_store])).await;
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::Deregistered);
    assert_eq!(report.retired_images[0].restorable_until, None);

    // Not tagged, not retired.
    let (old, snap) = old_image_with_snapshot(1);
    let mut refusing = FakeEc2::with(vec![snap], vec![old]);
    refusing.fail.insert("CreateTags", "UnauthorizedOperation".into());
    let (report, ec2) = sweep(&with_recycle_bin(retiring(90)), refusing).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty());
    assert_eq!(report.retired_images[0].outcome, RetireOutcome::LeftForNextRun);
    assert_eq!(report.retired_images[0].restorable_until, None);
}
