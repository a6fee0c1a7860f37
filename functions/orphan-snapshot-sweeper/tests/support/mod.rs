//! The fakes and fixtures of the handler tests: an in-memory EC2 that records every call, an SNS
//! that records what it publishes, a ledger that saw the orphans days ago, and the sweeps that
//! run the handler over them.

// Each test file uses a part of them.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use amiguard::ledger::memory::MemoryLedger;
use amiguard::ledger::{keys, Item};
use amiguard::recycle_bin::RecycleBin;
use amiguard::tags;
use amiguard::AwsError;
use chrono::{DateTime, TimeZone, Utc};
use orphan_snapshot_sweeper::config::StagedRetirement;
use orphan_snapshot_sweeper::core::{
    FastSnapshotRestore, Id, ImageFacts, LaunchPermissions, SnapshotFacts, SnapshotListing, StagedImage, Stages,
    UsageEntry, UsageReport,
};
use orphan_snapshot_sweeper::ports::{Ec2, LaunchTemplateImages, SummaryPublisher};
use orphan_snapshot_sweeper::{handle, Config, Error, Invocation, Ports, Report};
use serde_json::{json, Value};

pub const ACCOUNT: &str = "123456789012";

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

pub fn invocation() -> Invocation {
    Invocation::at(now()).with_request_id("r-test").with_deadline(SystemTime::now() + Duration::from_secs(900))
}

/// How long ago the ledger saw the tests' orphans orphaned (established orphans: past the grace).
pub const SEEN_ORPHANED_DAYS: i64 = 3;

/// A ledger in which the snapshots `ids` of `region` were seen orphaned `SEEN_ORPHANED_DAYS` ago,
/// each witnessed: the sweep that listed the AMI [`orphan`] describes it for recorded it mapping
/// it, a day before that AMI was found gone.
pub fn ledger_seen(region: &str, ids: impl IntoIterator<Item = String>) -> MemoryLedger {
    let ledger = MemoryLedger::new();
    for id in ids {
        ledger.insert(witnessed_image(region, &id));
        ledger.insert(
            Item::new(keys::orphans(region), id)
                .with_time("first_seen", now() - chrono::Duration::days(SEEN_ORPHANED_DAYS)),
        );
    }
    ledger
}

/// The AMI an [`orphan`] `snapshot_id` says it was made for.
pub fn described_image(snapshot_id: &str) -> String {
    format!("ami-0{}", &snapshot_id[5..])
}

/// The ledger's record of [`described_image`] mapping `snapshot_id` as the last sweep listed it:
/// the next sweep finds it gone (its snapshot's clock starts then).
pub fn listed_image(region: &str, snapshot_id: &str) -> Item {
    Item::new(keys::seen_images(region), described_image(snapshot_id))
        .with_s("kind", "seen-image")
        .with_list("snapshot_ids", [snapshot_id.to_string()])
        .with_time("first_seen", now() - chrono::Duration::days(30))
}

/// The ledger's record of [`described_image`] mapping `snapshot_id`, seen registered until a sweep
/// `SEEN_ORPHANED_DAYS` ago found it gone (what the sweeper itself writes of an image it lists).
pub fn witnessed_image(region: &str, snapshot_id: &str) -> Item {
    let days = |n: i64| now() - chrono::Duration::days(n);
    Item::new(keys::seen_images(region), described_image(snapshot_id))
        .with_s("kind", "seen-image")
        .with_list("snapshot_ids", [snapshot_id.to_string()])
        .with_time("first_seen", days(SEEN_ORPHANED_DAYS + 30))
        .with_time("last_seen", days(SEEN_ORPHANED_DAYS + 1))
        .with_time("gone_at", days(SEEN_ORPHANED_DAYS))
}

/// Sweeps `regions` with a ledger that saw every listed snapshot orphaned days ago.
pub async fn sweep_with<E: Ec2 + Listed>(
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
pub trait Listed {
    fn listed(&self) -> Vec<String>;
}

pub fn config() -> Config {
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
        adopt_unwitnessed_orphans: false,
        recycle_bin: RecycleBin::default(),
        home_region: Some("us-east-1".into()),
        ledger_read_only: false,
        // Today's one-step retirement: the staged one has tests of its own (tests/stages.rs).
        staged_retirement: StagedRetirement {
            stages: Stages::parse("deregister").unwrap(),
            ..StagedRetirement::default()
        },
        exact_savings: true,
        partitioned_listing_above: orphan_snapshot_sweeper::config::DEFAULT_PARTITIONED_LISTING_ABOVE,
    }
}

/// `config()` with the stack's Recycle Bin rules keeping deletions for a week.
pub fn with_recycle_bin(config: Config) -> Config {
    Config { recycle_bin: RecycleBin::retaining_for(7), ..config }
}

pub fn event(detail: Value) -> Value {
    json!({
        "version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": ACCOUNT, "time": "2026-06-01T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/sweep"], "detail": detail
    })
}

pub fn orphan(id: &str) -> SnapshotListing {
    SnapshotListing {
        snapshot_id: id.to_string(),
        owner_id: Some(ACCOUNT.to_string()),
        state: "completed".to_string(),
        start_time: Some(now() - chrono::Duration::days(3)),
        size_gib: 10,
        description: format!("Created by CreateImage(i-0123) for {} from vol-01", described_image(id)),
        volume_id: Some("vol-01".to_string()),
        storage_tier: Some("standard".to_string()),
        tags: vec![],
    }
}

pub fn image(id: &str, snapshots: &[&str], age_days: i64) -> ImageFacts {
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

pub fn err(operation: &'static str, code: &str) -> AwsError {
    AwsError::new(operation, code, format!("{code} (fake)"))
}

/// An in-memory region that records every call.
#[derive(Default)]
pub struct FakeEc2 {
    /// Read with the handler's `PROTECT_TAG`, as the EC2 adapter reads each page.
    pub snapshots: Vec<SnapshotListing>,
    pub images: Vec<ImageFacts>,
    pub bin: BTreeSet<String>,
    pub instances: BTreeSet<String>,
    pub templates: LaunchTemplateImages,
    pub shared: BTreeSet<String>,
    pub locked: hashbrown::HashSet<Id>,
    pub restores: Vec<FastSnapshotRestore>,
    pub referenced: BTreeSet<String>,
    pub shared_snapshots: BTreeSet<String>,
    pub fail: BTreeMap<&'static str, String>,
    /// The call to an operation that fails (`RequestLimitExceeded`): its number among all the
    /// calls to it so far, from 1 (to fail one call in the middle of a run).
    pub fail_nth: Mutex<BTreeMap<&'static str, usize>>,
    pub delete_errors: BTreeMap<String, String>,
    pub deregister_errors: BTreeMap<String, String>,
    pub calls: Mutex<Vec<String>>,
    /// A call that takes this long (real time), to bring the deadline near in the middle of a run.
    pub slow: Option<(&'static str, Duration)>,
    /// Shared by the regions of one test: how many of their listings and deletions overlap.
    pub gauge: Option<std::sync::Arc<Gauge>>,
    /// Snapshots whose deletion never answers.
    pub hang: BTreeSet<String>,
    /// When each DeleteSnapshot started, on tokio's clock (paused in some tests).
    pub delete_started: Mutex<Vec<tokio::time::Instant>>,
    /// Called as each DeleteSnapshot answers (to break the ledger in the middle of a run).
    pub on_delete: Option<Box<dyn Fn() + Send + Sync>>,
    /// Staged retirement: the images as `staged_images` lists them (deprecation and disabling
    /// change them), their launch permissions, and the usage reports asked for.
    pub staged: Mutex<Vec<StagedImage>>,
    pub permissions: Mutex<BTreeMap<String, LaunchPermissions>>,
    pub usage_reports: Mutex<Vec<UsageReport>>,
    /// When a usage report asked for now is made (the tests' clock).
    pub report_clock: Mutex<Option<DateTime<Utc>>>,
    /// The volumes `DescribeVolumes` lists (each one's source snapshot); `None`: not answered.
    pub volumes: Option<Vec<(String, Option<String>)>>,
}

/// The most listings and deletions in flight at once, across regions.
#[derive(Default)]
pub struct Gauge {
    pub listing: std::sync::atomic::AtomicUsize,
    pub most_listing: std::sync::atomic::AtomicUsize,
    pub deleting: std::sync::atomic::AtomicUsize,
    pub most_deleting: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    /// Counts one more in flight for the time of `pause`.
    pub async fn during(
        count: &std::sync::atomic::AtomicUsize,
        most: &std::sync::atomic::AtomicUsize,
        pause: Duration,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        most.fetch_max(count.fetch_add(1, SeqCst) + 1, SeqCst);
        tokio::time::sleep(pause).await;
        count.fetch_sub(1, SeqCst);
    }
}

impl FakeEc2 {
    pub fn with(snapshots: Vec<SnapshotListing>, images: Vec<ImageFacts>) -> Self {
        Self { snapshots, images, ..Self::default() }
    }

    fn call(&self, op: &'static str, arg: &str) -> Result<(), AwsError> {
        self.calls.lock().unwrap().push(if arg.is_empty() { op.to_string() } else { format!("{op} {arg}") });
        let nth = self.calls().iter().filter(|c| c.as_str() == op || c.starts_with(&format!("{op} "))).count();
        if self.fail_nth.lock().unwrap().get(op) == Some(&nth) {
            return Err(err(op, "RequestLimitExceeded"));
        }
        match self.fail.get(op) {
            Some(code) => Err(err(op, code)),
            None => Ok(()),
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn maybe_slow(&self, op: &str) {
        if let Some((slow_op, pause)) = self.slow {
            if slow_op == op {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Changes the staged listing's image `image_id` (a stage taken, or a person's change).
    pub fn change_image(&self, image_id: &str, change: impl FnOnce(&mut StagedImage)) {
        if let Some(image) = self.staged.lock().unwrap().iter_mut().find(|i| i.image_id == image_id) {
            change(image);
        }
    }

    pub fn calls_to(&self, op: &str) -> Vec<String> {
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
    /// A partition's snapshots in one page (tests of paging have their own fake).
    async fn snapshot_page(
        &self,
        protect_tag: &str,
        partition: Option<&str>,
        _next_token: Option<String>,
    ) -> Result<orphan_snapshot_sweeper::ports::SnapshotPage, AwsError> {
        use orphan_snapshot_sweeper::core::partitions::{filter, partition_of};
        self.call("DescribeSnapshots", partition.unwrap_or_default())?;
        let snapshots = self
            .snapshots
            .iter()
            .filter(|s| partition.is_none_or(|p| partition_of(&s.snapshot_id).map(filter).as_deref() == Some(p)))
            .map(|s| s.read(protect_tag))
            .collect();
        Ok(orphan_snapshot_sweeper::ports::SnapshotPage { snapshots, next_token: None })
    }

    async fn volumes(&self, by: &'static str, values: Vec<String>) -> Result<Vec<(Id, Option<Id>)>, AwsError> {
        self.call("DescribeVolumes", by)?;
        let Some(volumes) = &self.volumes else {
            return Err(err("DescribeVolumes", "NotImplemented"));
        };
        let hit = |(volume, source): &&(String, Option<String>)| match by {
            "volume-id" => values.contains(volume),
            _ => source.as_ref().is_some_and(|s| values.contains(s)),
        };
        Ok(volumes.iter().filter(hit).map(|(v, s)| (Id::from(v.as_str()), s.as_deref().map(Id::from))).collect())
    }

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
    async fn image(&self, image_id: &str) -> Result<Option<ImageFacts>, AwsError> {
        self.call("DescribeImages", image_id).map(|_| self.images.iter().find(|i| i.image_id == image_id).cloned())
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
    async fn locked_snapshots(&self) -> Result<hashbrown::HashSet<Id>, AwsError> {
        self.call("DescribeLockedSnapshots", "").map(|_| self.locked.clone())
    }
    async fn fast_snapshot_restores(&self) -> Result<Vec<FastSnapshotRestore>, AwsError> {
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
    async fn staged_images(&self) -> Result<Vec<StagedImage>, AwsError> {
        self.call("DescribeImages", "staged").map(|_| self.staged.lock().unwrap().clone())
    }
    async fn launch_permissions(&self, image_id: &str) -> Result<LaunchPermissions, AwsError> {
        self.call("DescribeImageAttribute", image_id)?;
        Ok(self.permissions.lock().unwrap().get(image_id).cloned().unwrap_or_default())
    }
    async fn add_launch_permissions(&self, image_id: &str, add: &LaunchPermissions) -> Result<(), AwsError> {
        self.call("ModifyImageAttribute", image_id)?;
        let mut permissions = self.permissions.lock().unwrap();
        let now = permissions.entry(image_id.to_string()).or_default();
        now.user_ids.extend(add.user_ids.iter().cloned());
        now.organization_arns.extend(add.organization_arns.iter().cloned());
        now.organizational_unit_arns.extend(add.organizational_unit_arns.iter().cloned());
        Ok(())
    }
    async fn create_image_usage_report(&self, image_id: &str, depth: u32) -> Result<String, AwsError> {
        self.call("CreateImageUsageReport", &format!("{image_id} depth {depth}"))?;
        // Numbered by the reports ever asked for (deleted ones included), as EC2's ids never repeat.
        let report_id = format!("amiur-{}", self.calls_to("CreateImageUsageReport").len());
        let mut reports = self.usage_reports.lock().unwrap();
        let created = self.report_clock.lock().unwrap().unwrap_or_else(now);
        reports.push(UsageReport {
            report_id: report_id.clone(),
            image_id: image_id.to_string(),
            state: "pending".into(),
            created: Some(created),
            expires: Some(created + chrono::Duration::days(30)),
            account_ids: BTreeSet::new(),
            resource_types: vec![("ec2:Instance".into(), None), ("ec2:LaunchTemplate".into(), Some(depth))],
            entries: Some(Vec::new()),
        });
        Ok(report_id)
    }
    async fn image_usage_reports(&self, image_ids: &[String]) -> Result<Vec<UsageReport>, AwsError> {
        self.call("DescribeImageUsageReports", &image_ids.join(","))?;
        let reports = self.usage_reports.lock().unwrap();
        let listed = reports.iter().filter(|r| image_ids.contains(&r.image_id));
        Ok(listed.map(|r| UsageReport { entries: None, ..r.clone() }).collect())
    }
    async fn image_usage_report_entries(&self, report_id: &str) -> Result<Vec<UsageEntry>, AwsError> {
        self.call("DescribeImageUsageReportEntries", report_id)?;
        let reports = self.usage_reports.lock().unwrap();
        Ok(reports.iter().find(|r| r.report_id == report_id).and_then(|r| r.entries.clone()).unwrap_or_default())
    }
    async fn delete_image_usage_report(&self, report_id: &str) -> Result<(), AwsError> {
        self.call("DeleteImageUsageReport", report_id)?;
        self.usage_reports.lock().unwrap().retain(|r| r.report_id != report_id);
        Ok(())
    }
    async fn enable_image_deprecation(&self, image_id: &str, at: DateTime<Utc>) -> Result<(), AwsError> {
        self.call("EnableImageDeprecation", image_id)?;
        self.change_image(image_id, |i| i.deprecation_time = Some(at));
        Ok(())
    }
    async fn disable_image_deprecation(&self, image_id: &str) -> Result<(), AwsError> {
        self.call("DisableImageDeprecation", image_id)?;
        self.change_image(image_id, |i| i.deprecation_time = None);
        Ok(())
    }
    async fn disable_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.call("DisableImage", image_id)?;
        self.change_image(image_id, |i| i.state = "disabled".into());
        // As EC2: every launch permission goes.
        self.permissions.lock().unwrap().remove(image_id);
        Ok(())
    }
    async fn enable_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.call("EnableImage", image_id)?;
        self.change_image(image_id, |i| i.state = "available".into());
        Ok(())
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
pub struct FakeSns {
    pub fail: bool,
    /// Never answers (a publish that hangs until the SDK's timeout).
    pub hang: bool,
    pub published: Mutex<Vec<(String, String, String)>>,
    /// Where a publish is noted, beside what the handler logged before it.
    pub log: Option<std::sync::Arc<Mutex<Vec<String>>>>,
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

pub async fn sweep(config: &Config, ec2: FakeEc2) -> (Report, FakeEc2) {
    let regions = vec![("us-east-1".to_string(), ec2)];
    let report = sweep_with(config, &regions, &FakeSns::default(), &event(json!({})), invocation()).await.unwrap();
    let (_, ec2) = regions.into_iter().next().unwrap();
    (report, ec2)
}

/// Sweeps `ec2` at `at` with `ledger` as amiguard's memory, kept from run to run.
pub async fn sweep_in(config: &Config, ec2: FakeEc2, ledger: &MemoryLedger, at: DateTime<Utc>) -> (Report, FakeEc2) {
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(ledger) };
    let invocation =
        Invocation::at(at).with_request_id("r-test").with_deadline(SystemTime::now() + Duration::from_secs(900));
    let response = handle(config, &ports, &event(json!({})), &invocation).await.unwrap();
    let (_, ec2) = regions.into_iter().next().unwrap();
    (response.sweep().expect("a sweep's report"), ec2)
}

pub fn retiring(days: u32) -> Config {
    Config { retire_unused_amis_after_days: Some(days), ..config() }
}

/// An old image with one snapshot (its CreateImage description names it).
pub fn old_image_with_snapshot(n: u32) -> (ImageFacts, SnapshotListing) {
    let snap = orphan(&format!("snap-{n}"));
    (image(&format!("ami-0{n}"), &[&snap.snapshot_id], 400), snap)
}
