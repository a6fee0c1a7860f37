//! Retiring unused AMIs (`RETIRE_UNUSED_AMIS_AFTER_DAYS`) through the handler: what EC2 is
//! asked, what is deregistered, and what their snapshots then wait for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use amiguard::tags::{self, Tag};
use orphan_snapshot_sweeper::core::ImageFacts;
use orphan_snapshot_sweeper::{Config, ImageKeepReason, KeepReason, RetireOutcome};
use support::*;

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
