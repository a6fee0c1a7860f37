//! Undo: what the sweeper deletes or deregisters is tagged for the Recycle Bin's rules first, and
//! the report and the journal say until when it can be restored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use amiguard::ledger::keys;
use chrono::{DateTime, Utc};
use orphan_snapshot_sweeper::{Config, RetireOutcome};
use support::*;

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
