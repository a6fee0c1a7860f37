//! Staged retirement (issue 22) through the handler, run after run over one ledger: what EC2 is
//! asked and told, what the ledger records before each stage, and what the report says. The
//! end-to-end tests against moto and the proxy's model are in `tests/tests/golden_images.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use amiguard::ledger::keys;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::tags::Tag;
use chrono::{DateTime, Duration, Utc};
use orphan_snapshot_sweeper::adapters::retirement_ledger;
use orphan_snapshot_sweeper::config::StagedRetirement;
use orphan_snapshot_sweeper::core::{
    ImageFacts, LaunchPermissions, Stage, StageRecord, StagedImage, UsageEntry, UsageReport,
};
use orphan_snapshot_sweeper::{Config, ImageKeepReason, Report};
use serde_json::Value;
use support::*;

const CONSUMER: &str = "111111111111";
const ORG: &str = "arn:aws:organizations::123456789012:organization/o-abc";
const OU: &str = "arn:aws:organizations::123456789012:ou/o-abc/ou-ab12-cdef3456";

/// Retirement in three stages with no dwell and no lag: one stage a run.
fn staged(dwell: u32, lag: u32) -> Config {
    let stages = StagedRetirement { dwell_days: dwell, lag_days: lag, ..StagedRetirement::default() };
    Config { retire_unused_amis_after_days: Some(90), staged_retirement: stages, ..config() }
}

fn staged_image(image: &ImageFacts) -> StagedImage {
    StagedImage {
        image_id: image.image_id.to_string(),
        name: image.name.clone(),
        state: image.state.to_string(),
        public: image.public,
        creation_date: image.creation_date,
        last_launched_time: image.last_launched_time,
        deprecation_time: None,
        deregistration_protection: None,
        snapshot_ids: image.snapshot_ids.iter().map(ToString::to_string).collect(),
        gib: 10,
        tags: image.tags.clone(),
    }
}

/// A region with old images `n` (each with its snapshot), listed both ways.
fn region(ns: &[u32]) -> FakeEc2 {
    let (images, snapshots): (Vec<_>, Vec<_>) = ns.iter().map(|n| old_image_with_snapshot(*n)).unzip();
    let ec2 = FakeEc2::with(snapshots, images.clone());
    *ec2.staged.lock().unwrap() = images.iter().map(staged_image).collect();
    ec2
}

fn hours(n: i64) -> DateTime<Utc> {
    now() + Duration::hours(n)
}

fn stages_of(report: &Report) -> Vec<Value> {
    let json = serde_json::to_value(report).unwrap();
    json["regions"][0]["retirement_stages"].as_array().cloned().unwrap_or_else(|| panic!("no stages: {json}"))
}

fn entry<'a>(stages: &'a [Value], image_id: &str) -> &'a Value {
    stages.iter().find(|e| e["image_id"] == image_id).unwrap_or_else(|| panic!("{image_id} not in {stages:?}"))
}

fn shared_with(ec2: &FakeEc2, image_id: &str, permissions: LaunchPermissions) {
    ec2.permissions.lock().unwrap().insert(image_id.to_string(), permissions);
}

fn consumer() -> LaunchPermissions {
    LaunchPermissions { user_ids: [CONSUMER.to_string()].into(), ..LaunchPermissions::default() }
}

/// Every usage report asked for so far becomes `available`, with `entries`.
fn reports_ready(ec2: &FakeEc2, entries: Vec<UsageEntry>) {
    for report in ec2.usage_reports.lock().unwrap().iter_mut() {
        report.state = "available".into();
        report.entries = Some(entries.clone());
    }
}

#[tokio::test]
async fn an_unused_unshared_image_goes_deprecated_disabled_deregistered_then_its_snapshot_is_deleted() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let (report, ec2) = sweep_in(&config, region(&[1]), &ledger, hours(0)).await;
    let first = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!((first["stage"].as_str(), first["change"].as_str()), (Some("deprecated"), Some("advanced")));
    assert_eq!(first["next_stage"], "disabled");
    assert_eq!(ec2.calls_to("EnableImageDeprecation"), ["ami-01"]);
    let record = ledger.get(&keys::retirement("us-east-1"), "ami-01").expect("recorded");
    assert_eq!(record.s("stage"), Some("deprecated"));
    assert_eq!(report.regions[0].retirement_stage_totals.unwrap().deprecated.images, 1);

    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(1)).await;
    assert_eq!(entry(&stages_of(&report), "ami-01")["stage"], "disabled");
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
    assert!(ec2.calls_to("DeregisterImage").is_empty(), "one stage a run");

    let (report, mut ec2) = sweep_in(&config, ec2, &ledger, hours(2)).await;
    assert_eq!(entry(&stages_of(&report), "ami-01")["stage"], "deregistered");
    assert_eq!(ec2.calls_to("DeregisterImage"), ["ami-01"]);
    assert_eq!(report.totals.retirement_stages.unwrap().deregistered.images, 1);
    // EC2 lists it no more; its snapshot is an orphan amiguard witnessed, deleted after the grace.
    ec2.images.clear();
    ec2.staged.lock().unwrap().clear();
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    assert!(ec2.calls_to("DeleteSnapshot").is_empty(), "in its grace period");
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(27)).await;
    assert_eq!(ec2.calls_to("DeleteSnapshot"), ["snap-1"]);
    assert_eq!(report.regions[0].deleted, ["snap-1"]);
}

#[tokio::test]
async fn the_dwell_holds_each_stage_and_says_until_when() {
    let ledger = MemoryLedger::new();
    let config = staged(14, 3);
    let (_, ec2) = sweep_in(&config, region(&[1]), &ledger, hours(0)).await;
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(24)).await;
    let waiting = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!(waiting["stage"], "deprecated");
    assert_eq!(waiting["change"], "none");
    assert_eq!(waiting["next_at"], serde_json::json!(hours(14 * 24)));
    assert!(waiting["waiting_for"].as_str().unwrap().starts_with("dwell until"));
    assert!(ec2.calls_to("DisableImage").is_empty());
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(14 * 24)).await;
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
}

#[tokio::test]
async fn a_shared_image_advances_only_on_a_later_runs_available_report_and_a_persons_enable_brings_back_its_sharing() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let ec2 = region(&[1]);
    let sharing = LaunchPermissions {
        user_ids: [CONSUMER.to_string()].into(),
        organization_arns: [ORG.to_string()].into(),
        organizational_unit_arns: [OU.to_string()].into(),
        public: false,
    };
    shared_with(&ec2, "ami-01", sharing.clone());
    // Run 1: no report yet: one is asked for (every account), nothing else.
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(0)).await;
    let waiting = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!((waiting["stage"].as_str(), waiting["shared"].as_bool()), (Some("active"), Some(true)));
    assert_eq!(waiting["waiting_for"], "no usage report yet");
    assert_eq!(ec2.calls_to("CreateImageUsageReport"), ["ami-01 depth 20"]);
    // Run 2: still pending: it waits, and asks for no second report.
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(1)).await;
    assert!(entry(&stages_of(&report), "ami-01")["waiting_for"].as_str().unwrap().contains("pending"));
    assert_eq!(ec2.calls_to("CreateImageUsageReport").len(), 1, "one live report per image");
    assert!(ec2.calls_to("EnableImageDeprecation").is_empty());
    // Run 3: available, no use anywhere: deprecated, and the report read is deleted.
    reports_ready(&ec2, vec![]);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(2)).await;
    let deprecated = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!(deprecated["stage"], "deprecated");
    assert_eq!(deprecated["evidence"]["usage_reports"], serde_json::json!(["amiur-1"]));
    assert_eq!(ec2.calls_to("DeleteImageUsageReport"), ["amiur-1"]);
    // Run 4: the next stage needs a report made after the deprecation: asked for, then run 5.
    *ec2.report_clock.lock().unwrap() = Some(hours(3));
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    assert_eq!(ec2.calls_to("CreateImageUsageReport").len(), 2);
    assert!(ec2.calls_to("DisableImage").is_empty());
    reports_ready(&ec2, vec![]);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(4)).await;
    assert_eq!(entry(&stages_of(&report), "ami-01")["stage"], "disabled");
    // The sharing was recorded before DisableImage took it away.
    let record = ledger.get(&keys::retirement("us-east-1"), "ami-01").unwrap();
    assert_eq!(record.list("launch_permission_accounts").unwrap(), [CONSUMER]);
    assert_eq!(record.list("launch_permission_organizations").unwrap(), [ORG]);
    assert_eq!(record.list("launch_permission_units").unwrap(), [OU]);
    assert!(ec2.permissions.lock().unwrap().get("ami-01").is_none(), "EC2 removed them");
    // A person enables it: amiguard puts back exactly the recorded sharing and stops.
    ec2.change_image("ami-01", |i| i.state = "available".into());
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(5)).await;
    let ended = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!((ended["change"].as_str(), ended["stage"].as_str()), (Some("ended_by_person"), Some("active")));
    assert!(ended["why_stopped"].as_str().unwrap().contains("EnableImage"));
    assert_eq!(ec2.permissions.lock().unwrap().get("ami-01"), Some(&sharing));
    // And amiguard's own deprecation goes with it (a person's would stay).
    assert_eq!(ec2.calls_to("DisableImageDeprecation"), ["ami-01"]);
    assert_eq!(ec2.staged.lock().unwrap()[0].deprecation_time, None);
    // Not considered again for RETIRE_UNUSED_AMIS_AFTER_DAYS.
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(6)).await;
    assert_eq!(report.regions[0].images_kept[&ImageKeepReason::RetirementEnded], 1);
    // (The fake's calls add up from run to run: no new ones.)
    assert_eq!((ec2.calls_to("EnableImageDeprecation").len(), ec2.calls_to("CreateImageUsageReport").len()), (1, 2));
}

#[tokio::test]
async fn a_launch_while_deprecated_undoes_amiguards_deprecation() {
    let ledger = MemoryLedger::new();
    let config = staged(14, 3);
    let (_, ec2) = sweep_in(&config, region(&[1]), &ledger, hours(0)).await;
    ec2.change_image("ami-01", |i| i.last_launched_time = Some(hours(5)));
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(30)).await;
    let undone = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!((undone["change"].as_str(), undone["stage"].as_str()), (Some("undone"), Some("active")));
    assert!(undone["why_stopped"].as_str().unwrap().contains("LastLaunchedTime"));
    assert_eq!(ec2.calls_to("DisableImageDeprecation"), ["ami-01"]);
    let record = ledger.get(&keys::retirement("us-east-1"), "ami-01").unwrap();
    assert!(record.s("ended_why").unwrap().contains("LastLaunchedTime"));
}

#[tokio::test]
async fn use_in_another_account_keeps_a_shared_image_and_pauses_it() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let ec2 = region(&[1]);
    shared_with(&ec2, "ami-01", consumer());
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(0)).await;
    let template =
        UsageEntry { account_id: CONSUMER.into(), resource_type: "ec2:LaunchTemplate".into(), usage_count: 1 };
    reports_ready(&ec2, vec![template]);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(1)).await;
    let spared = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!((spared["stage"].as_str(), spared["next_stage"].as_str()), (Some("active"), None));
    assert!(spared["why_stopped"].as_str().unwrap().contains(CONSUMER));
    assert!(ec2.calls_to("EnableImageDeprecation").is_empty());
    let (report, _) = sweep_in(&config, ec2, &ledger, hours(2)).await;
    assert_eq!(report.regions[0].images_kept[&ImageKeepReason::RetirementEnded], 1);
}

#[tokio::test]
async fn a_dry_run_previews_from_the_evidence_there_is_and_changes_nothing() {
    let ledger = MemoryLedger::new();
    let config = Config { dry_run: true, ..staged(0, 0) };
    let ec2 = region(&[1, 2]);
    shared_with(&ec2, "ami-02", consumer());
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(0)).await;
    let stages = stages_of(&report);
    let unshared = entry(&stages, "ami-01");
    assert_eq!(
        (unshared["change"].as_str(), unshared["next_stage"].as_str()),
        (Some("would_advance"), Some("deprecated"))
    );
    assert_eq!(unshared["stage"], "active");
    assert_eq!(entry(&stages, "ami-02")["waiting_for"], "no usage report yet");
    for change in ["EnableImageDeprecation", "CreateImageUsageReport", "DisableImage", "DeregisterImage"] {
        assert!(ec2.calls_to(change).is_empty(), "{change}");
    }
    assert!(ledger.partition(&keys::retirement("us-east-1")).is_empty(), "nothing written");
}

#[tokio::test]
async fn the_newest_of_a_family_survives_and_a_public_image_is_never_retired() {
    let ledger = MemoryLedger::new();
    let mut config = staged(0, 0);
    config.staged_retirement.family_tag = Some("golden:family".into());
    let ec2 = region(&[1, 2, 3]);
    let family = Tag::new("golden:family", "web");
    ec2.change_image("ami-01", |i| i.tags.push(family.clone()));
    ec2.change_image("ami-02", |i| {
        i.tags.push(family.clone());
        i.creation_date = Some(now() - Duration::days(100));
    });
    ec2.change_image("ami-03", |i| i.public = true);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(0)).await;
    assert_eq!(ec2.calls_to("EnableImageDeprecation"), ["ami-01"], "the older of the family only");
    let kept = &report.regions[0].images_kept;
    assert_eq!((kept[&ImageKeepReason::NewestOfFamily], kept[&ImageKeepReason::Public]), (1, 1));
}

#[tokio::test]
async fn no_stage_is_taken_that_the_ledger_could_not_record_first() {
    let ledger = MemoryLedger::new();
    ledger.fail("PutItem");
    let (report, ec2) = sweep_in(&staged(0, 0), region(&[1]), &ledger, hours(0)).await;
    assert!(ec2.calls_to("EnableImageDeprecation").is_empty(), "{:?}", report.warnings);
    assert_eq!(entry(&stages_of(&report), "ami-01")["change"], "none");
}

#[tokio::test]
async fn max_deletions_bounds_the_stages_of_a_run() {
    let ledger = MemoryLedger::new();
    let config = Config { max_deletions: 1, ..staged(0, 0) };
    let (report, ec2) = sweep_in(&config, region(&[1, 2]), &ledger, hours(0)).await;
    assert_eq!(ec2.calls_to("EnableImageDeprecation"), ["ami-01"], "the oldest first");
    let waiting = entry(&stages_of(&report), "ami-02").clone();
    assert!(waiting["waiting_for"].as_str().unwrap().contains("MAX_DELETIONS"), "{waiting}");
}

#[tokio::test]
async fn every_usage_report_amiguard_asked_for_is_deleted_once_read_the_last_one_too() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let ec2 = region(&[1]);
    shared_with(&ec2, "ami-01", consumer());
    let mut ec2 = ec2;
    let mut hour = 0;
    for stage in ["deprecated", "disabled", "deregistered"] {
        *ec2.report_clock.lock().unwrap() = Some(hours(hour));
        let (_, asked) = sweep_in(&config, ec2, &ledger, hours(hour)).await;
        reports_ready(&asked, vec![]);
        let (report, next) = sweep_in(&config, asked, &ledger, hours(hour + 1)).await;
        assert_eq!(entry(&stages_of(&report), "ami-01")["stage"], stage);
        ec2 = next;
        hour += 2;
    }
    assert_eq!(ec2.calls_to("DeleteImageUsageReport"), ["amiur-1", "amiur-2", "amiur-3"]);
    assert!(ec2.usage_reports.lock().unwrap().is_empty());
}

#[tokio::test]
async fn undoing_a_disabled_image_enables_it_puts_back_its_sharing_and_removes_amiguards_deprecation() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let ec2 = region(&[1]);
    shared_with(&ec2, "ami-01", consumer());
    let mut ec2 = ec2;
    for hour in [0, 2] {
        *ec2.report_clock.lock().unwrap() = Some(hours(hour));
        let (_, asked) = sweep_in(&config, ec2, &ledger, hours(hour)).await;
        reports_ready(&asked, vec![]);
        let (_, next) = sweep_in(&config, asked, &ledger, hours(hour + 1)).await;
        ec2 = next;
    }
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
    // A consumer's instance still runs it: the next report says so.
    *ec2.report_clock.lock().unwrap() = Some(hours(4));
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(4)).await;
    let instance = UsageEntry { account_id: CONSUMER.into(), resource_type: "ec2:Instance".into(), usage_count: 1 };
    reports_ready(&ec2, vec![instance]);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(5)).await;
    let undone = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!((undone["change"].as_str(), undone["stage"].as_str()), (Some("undone"), Some("active")));
    assert_eq!(ec2.calls_to("EnableImage"), ["ami-01"]);
    assert_eq!(ec2.permissions.lock().unwrap().get("ami-01"), Some(&consumer()));
    assert_eq!(ec2.calls_to("DisableImageDeprecation"), ["ami-01"]);
}

/// Runs until `ami-01` (shared with the consumer) is deprecated, then asks for and readies the
/// report of its next stage: the next run would disable it.
async fn deprecated_with_a_report(config: &Config, ledger: &MemoryLedger) -> FakeEc2 {
    let ec2 = region(&[1]);
    shared_with(&ec2, "ami-01", consumer());
    let (_, ec2) = sweep_in(config, ec2, ledger, hours(0)).await;
    reports_ready(&ec2, vec![]);
    let (_, ec2) = sweep_in(config, ec2, ledger, hours(1)).await;
    assert_eq!(ec2.calls_to("EnableImageDeprecation"), ["ami-01"]);
    *ec2.report_clock.lock().unwrap() = Some(hours(2));
    let (_, ec2) = sweep_in(config, ec2, ledger, hours(2)).await;
    reports_ready(&ec2, vec![]);
    ec2
}

#[tokio::test]
async fn no_disable_image_when_the_launch_permissions_read_just_before_it_fails() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let ec2 = deprecated_with_a_report(&config, &ledger).await;
    // The run's second read of the permissions (the one just before DisableImage) is throttled.
    let read = ec2.calls_to("DescribeImageAttribute").len();
    ec2.fail_nth.lock().unwrap().insert("DescribeImageAttribute", read + 2);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    assert!(ec2.calls_to("DisableImage").is_empty(), "disabled with its sharing unread");
    let waiting = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!(waiting["stage"], "deprecated");
    assert!(waiting["waiting_for"].as_str().unwrap().contains("could not be read"), "{waiting}");
    assert!(report.warnings.iter().any(|w| w.contains("not disabled")), "{:?}", report.warnings);
    // The next run reads them and records them before disabling.
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(4)).await;
    assert_eq!(entry(&stages_of(&report), "ami-01")["stage"], "disabled");
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
    let record = ledger.get(&keys::retirement("us-east-1"), "ami-01").unwrap();
    assert_eq!(record.list("launch_permission_accounts").unwrap(), [CONSUMER]);
}

#[tokio::test]
async fn a_failed_disable_image_re_adds_nothing_when_the_retirement_later_ends() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let mut ec2 = deprecated_with_a_report(&config, &ledger).await;
    ec2.fail.insert("DisableImage", "UnauthorizedOperation".into());
    let (report, mut ec2) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
    assert!(entry(&stages_of(&report), "ami-01")["waiting_for"].as_str().unwrap().contains("disabled failed"));
    ec2.fail.clear();
    // The owner off-boards the consumer, and removes amiguard's deprecation.
    ec2.permissions.lock().unwrap().remove("ami-01");
    ec2.change_image("ami-01", |i| i.deprecation_time = None);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(4)).await;
    assert_eq!(entry(&stages_of(&report), "ami-01")["change"], "ended_by_person");
    assert!(ec2.calls_to("ModifyImageAttribute").is_empty(), "EC2 never removed them");
    assert_eq!(ec2.permissions.lock().unwrap().get("ami-01"), None);
}

/// A record amiguard left: `stage` taken 20 days ago, its deprecation, `permissions` recorded.
fn record(ledger: &MemoryLedger, image_id: &str, stage: Stage, permissions: Option<LaunchPermissions>) {
    let at = hours(-20 * 24);
    let record = StageRecord {
        stage,
        stage_at: Some(at),
        began_at: Some(at),
        permissions,
        deprecated_by_amiguard: true,
        ..StageRecord::candidate(at - Duration::days(1))
    };
    ledger.insert(retirement_ledger::to_item("us-east-1", image_id, &record));
}

#[tokio::test]
async fn a_restore_with_no_recorded_permissions_is_a_failure_reported_and_retried_never_an_end() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let mut ec2 = region(&[1, 2]);
    for id in ["ami-01", "ami-02"] {
        record(&ledger, id, Stage::Disabled, None);
        ec2.change_image(id, |i| {
            i.state = "disabled".into();
            i.deprecation_time = Some(hours(-20 * 24));
        });
    }
    // ami-01: a person enables it; ami-02: an instance of this account runs it (undo).
    ec2.change_image("ami-01", |i| i.state = "available".into());
    ec2.instances.insert("ami-02".into());
    for hour in [0, 1] {
        let (report, next) = sweep_in(&config, ec2, &ledger, hours(hour)).await;
        ec2 = next;
        let stages = stages_of(&report);
        for id in ["ami-01", "ami-02"] {
            let entry = entry(&stages, id);
            assert_eq!(entry["change"], "none", "{entry}");
            let record = ledger.get(&keys::retirement("us-east-1"), id).unwrap();
            assert_eq!((record.s("stage"), record.s("ended_why")), (Some("disabled"), None), "{id}: not ended");
            assert!(report.warnings.iter().any(|w| w.contains(id) && w.contains("by hand")), "{:?}", report.warnings);
        }
    }
}

#[tokio::test]
async fn a_person_disabling_an_image_amiguard_deprecated_ends_the_retirement_untouched() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let (_, ec2) = sweep_in(&config, region(&[1]), &ledger, hours(0)).await;
    assert_eq!(ec2.calls_to("EnableImageDeprecation"), ["ami-01"]);
    ec2.change_image("ami-01", |i| i.state = "disabled".into());
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(1)).await;
    let ended = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!(ended["change"], "ended_by_person", "{ended}");
    assert!(ended["why_stopped"].as_str().unwrap().contains("found disabled"), "{ended}");
    let record = ledger.get(&keys::retirement("us-east-1"), "ami-01").unwrap();
    assert!(record.s("ended_why").is_some());
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(2)).await;
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    for call in ["DisableImage", "DeregisterImage", "ModifyImageAttribute", "EnableImage"] {
        assert!(ec2.calls_to(call).is_empty(), "{call}");
    }
}

#[tokio::test]
async fn no_stage_is_taken_that_the_ledger_could_not_record_first_at_any_stage() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let (_, ec2) = sweep_in(&config, region(&[1]), &ledger, hours(0)).await;
    ledger.fail("PutItem");
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(1)).await;
    assert!(ec2.calls_to("DisableImage").is_empty());
    ledger.heal();
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(2)).await;
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
    ledger.fail("PutItem");
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    assert!(ec2.calls_to("DeregisterImage").is_empty());
    ledger.heal();
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(4)).await;
    assert_eq!(ec2.calls_to("DeregisterImage"), ["ami-01"]);
}

#[tokio::test]
async fn a_dry_run_with_records_and_reports_present_changes_nothing() {
    let ledger = MemoryLedger::new();
    let ec2 = region(&[1, 2, 3, 4, 5]);
    let deprecated_at = hours(-20 * 24);
    for n in 1..=5 {
        ec2.change_image(&format!("ami-0{n}"), |i| i.deprecation_time = Some(deprecated_at));
    }
    // ami-01: amiguard disabled it, a person enabled it: its sharing would be put back.
    record(&ledger, "ami-01", Stage::Disabled, Some(consumer()));
    // ami-02: launched since amiguard deprecated it: the deprecation would be removed.
    record(&ledger, "ami-02", Stage::Deprecated, Some(LaunchPermissions::default()));
    ec2.change_image("ami-02", |i| i.last_launched_time = Some(hours(-24)));
    // ami-03: shared, amiguard's report read with no use: it would be disabled, the report deleted.
    // ami-04: shared, amiguard's report in error: it would be deleted and another asked for.
    for (id, report_id, state) in [("ami-03", "amiur-3", "available"), ("ami-04", "amiur-4", "error")] {
        shared_with(&ec2, id, consumer());
        let at = hours(-20 * 24);
        let record = StageRecord {
            stage: Stage::Deprecated,
            stage_at: Some(at),
            began_at: Some(at),
            deprecated_by_amiguard: true,
            report_id: Some(report_id.into()),
            report_permissions: Some(consumer()),
            ..StageRecord::candidate(at - Duration::days(1))
        };
        ledger.insert(retirement_ledger::to_item("us-east-1", id, &record));
        ec2.usage_reports.lock().unwrap().push(UsageReport {
            report_id: report_id.into(),
            image_id: id.into(),
            state: state.into(),
            created: Some(hours(-24)),
            expires: Some(hours(24 * 29)),
            account_ids: Default::default(),
            resource_types: vec![("ec2:Instance".into(), None), ("ec2:LaunchTemplate".into(), Some(20))],
            entries: Some(vec![]),
        });
    }
    // ami-05: disabled by amiguard, unshared: it would be deregistered.
    record(&ledger, "ami-05", Stage::Disabled, Some(LaunchPermissions::default()));
    ec2.change_image("ami-05", |i| i.state = "disabled".into());
    ec2.change_image("ami-01", |i| i.state = "available".into());
    let before = ledger.partition(&keys::retirement("us-east-1"));
    let config = Config { dry_run: true, ..staged(0, 0) };
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(0)).await;
    let stages = stages_of(&report);
    assert!(entry(&stages, "ami-01")["why_stopped"]
        .as_str()
        .unwrap()
        .starts_with("would put its recorded sharing back"));
    assert!(entry(&stages, "ami-02")["why_stopped"].as_str().unwrap().starts_with("would undo"));
    for id in ["ami-03", "ami-05"] {
        assert_eq!(entry(&stages, id)["change"], "would_advance", "{id}: {stages:?}");
    }
    assert!(entry(&stages, "ami-04")["waiting_for"].as_str().unwrap().contains("error"));
    for change in [
        "EnableImageDeprecation",
        "DisableImageDeprecation",
        "CreateImageUsageReport",
        "DeleteImageUsageReport",
        "DisableImage",
        "EnableImage",
        "ModifyImageAttribute",
        "DeregisterImage",
        "CreateTags",
    ] {
        assert!(ec2.calls_to(change).is_empty(), "{change}: {:?}", ec2.calls());
    }
    assert_eq!(ledger.partition(&keys::retirement("us-east-1")), before, "no retirement record written");
}

#[tokio::test]
async fn a_candidate_that_stops_being_one_is_forgotten_and_its_old_report_never_counts() {
    let ledger = MemoryLedger::new();
    let config = Config { retire_unused_amis_after_days: Some(1), ..staged(0, 0) };
    let ec2 = region(&[1]);
    shared_with(&ec2, "ami-01", consumer());
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(0)).await;
    assert_eq!(ec2.calls_to("CreateImageUsageReport").len(), 1);
    // Launched: a candidate no more. Its record and the report asked for it are forgotten.
    ec2.change_image("ami-01", |i| i.last_launched_time = Some(hours(1)));
    let (_, ec2) = sweep_in(&config, ec2, &ledger, hours(2)).await;
    assert_eq!(ec2.calls_to("DeleteImageUsageReport"), ["amiur-1"]);
    assert!(ledger.get(&keys::retirement("us-east-1"), "ami-01").unwrap().s("stage").is_none(), "forgotten");
    // A candidate again a day after the launch: the report made before (had it survived) is no
    // evidence; a fresh one is asked for, and nothing advances yet.
    reports_ready(&ec2, vec![]);
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(26)).await;
    assert!(ec2.calls_to("EnableImageDeprecation").is_empty(), "{:?}", stages_of(&report));
    assert_eq!(ec2.calls_to("CreateImageUsageReport").len(), 2);
    let record = ledger.get(&keys::retirement("us-east-1"), "ami-01").unwrap();
    assert_eq!(
        record.s("candidate_since"),
        Some(hours(26).to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str())
    );
}

#[tokio::test]
async fn a_protect_tag_put_on_an_image_amiguard_disabled_undoes_the_stage_and_brings_back_its_sharing() {
    let ledger = MemoryLedger::new();
    let config = staged(0, 0);
    let mut ec2 = deprecated_with_a_report(&config, &ledger).await;
    let (_, next) = sweep_in(&config, ec2, &ledger, hours(3)).await;
    ec2 = next;
    assert_eq!(ec2.calls_to("DisableImage"), ["ami-01"]);
    assert!(ec2.permissions.lock().unwrap().get("ami-01").is_none());
    // A person tags it to keep it: kept means usable, not kept disabled.
    ec2.change_image("ami-01", |i| i.tags.push(Tag::new("amiguard:keep", "")));
    let (report, ec2) = sweep_in(&config, ec2, &ledger, hours(4)).await;
    let undone = entry(&stages_of(&report), "ami-01").clone();
    assert_eq!(undone["change"], "undone", "{undone}");
    assert!(undone["why_stopped"].as_str().unwrap().contains("protected"), "{undone}");
    assert_eq!(ec2.calls_to("EnableImage"), ["ami-01"]);
    assert_eq!(ec2.permissions.lock().unwrap().get("ami-01"), Some(&consumer()));
    assert_eq!(ec2.calls_to("DisableImageDeprecation"), ["ami-01"]);
}
