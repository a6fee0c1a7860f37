//! The snapshot planner: from the facts of one region (snapshots, images, the Recycle Bin, the
//! clock) to a plan that lists every orphan and gives a reason for every snapshot it keeps.
//!
//! It is a pure function: no I/O, no clock of its own, the same plan whatever the order of its
//! input. Every safety rule of the sweeper lives here and is tested exhaustively.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::origin;
use crate::tags::Tag;

/// What the region's `DescribeSnapshots` said about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub snapshot_id: String,
    /// `None` when the listing did not say: such a snapshot is never treated as ours.
    pub owner_id: Option<String>,
    /// EC2's state (`completed`, `pending`, `error`, `recoverable`, `recovering`).
    pub state: String,
    /// `None` when the listing did not say: such a snapshot is treated as too young.
    pub start_time: Option<DateTime<Utc>>,
    /// The size of the volume it was taken from (what the snapshot can cost at most).
    pub size_gib: u64,
    pub description: String,
    pub tags: Vec<Tag>,
}

/// What the region's `DescribeImages` said about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub image_id: String,
    pub owner_id: Option<String>,
    pub name: String,
    /// EC2's state (`available`, `disabled`, `pending`, `failed`, ...).
    pub state: String,
    pub creation_date: Option<DateTime<Utc>>,
    pub last_launched_time: Option<DateTime<Utc>>,
    pub public: bool,
    /// The snapshots of its EBS block-device mappings.
    pub snapshot_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

/// The settings that decide what is an orphan and how much one run may delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The grace period: snapshots younger than this are kept (`MIN_AGE_HOURS`).
    pub min_age: Duration,
    /// A snapshot carrying this tag key, whatever its value, is kept (`PROTECT_TAG`).
    pub protect_tag: String,
    /// The circuit breaker (`MAX_DELETE_FRACTION`): a plan that would delete more than this
    /// fraction of the region's own snapshots deletes nothing.
    pub max_delete_fraction: f64,
}

/// The facts of one region, gathered by the handler.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The account whose snapshots may be deleted (each snapshot's `OwnerId` must equal it).
    pub account_id: &'a str,
    pub now: DateTime<Utc>,
    pub snapshots: &'a [SnapshotFacts],
    /// Every image still registered (with disabled and deprecated ones): their block-device
    /// mappings protect their snapshots, and their ids protect the snapshots made for them.
    pub images: &'a [ImageFacts],
    /// Images this run deregistered (in a dry run: would deregister). Their snapshots count as
    /// made for them even when the description says nothing.
    pub retired_images: &'a [ImageFacts],
    /// AMIs in the Recycle Bin: they can be restored, so their snapshots are kept.
    pub images_in_recycle_bin: &'a BTreeSet<String>,
    /// How many deletions this region may still start (what is left of `MAX_DELETIONS`).
    pub budget: u64,
}

/// Why a snapshot is kept. One reason per snapshot, the first that applies in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Its `OwnerId` is not this account (shared with us, public, or not said).
    NotOwned,
    /// An image (available, disabled or deprecated) maps it in a block device.
    ReferencedByImage,
    /// The AMI it was made for still exists.
    SourceImageExists,
    /// The AMI it was made for is in the Recycle Bin and can be restored.
    SourceImageInRecycleBin,
    /// It carries the protect tag.
    Protected,
    /// AWS Backup manages it.
    AwsBackup,
    /// Data Lifecycle Manager manages it.
    Dlm,
    /// Recycle Bin manages it (`aws:recycle-bin:*` tags).
    RecycleBin,
    /// Nothing says it was made for an AMI: a manual snapshot, never deleted by the sweeper.
    NotFromImage,
    /// Its state is not `completed`.
    NotCompleted,
    /// Younger than the grace period (or its start time is unknown).
    TooYoung,
    /// An orphan beyond what this run may delete (`MAX_DELETIONS`): next run.
    OverCap,
    /// An orphan in a region where the circuit breaker refused to act.
    CircuitBreaker,
}

/// A snapshot made for an AMI that no longer exists and that nothing else keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Orphan {
    pub snapshot_id: String,
    pub size_gib: u64,
    pub source_image_id: String,
    pub start_time: DateTime<Utc>,
}

/// Owned snapshots that no image references and that were not made for an AMI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ManualSnapshots {
    pub count: u64,
    pub gib: u64,
}

/// Why the circuit breaker refused a region: `orphans` of `own_snapshots` is more than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CircuitBreakerTrip {
    pub orphans: u64,
    pub own_snapshots: u64,
    pub max_fraction: f64,
}

impl fmt::Display for CircuitBreakerTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker: {} orphans of {} own snapshots is more than MAX_DELETE_FRACTION={}; nothing deleted",
            self.orphans, self.own_snapshots, self.max_fraction
        )
    }
}

/// The decision for one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Distinct snapshots in the listing.
    pub snapshots_scanned: u64,
    /// Of those, the ones owned by the account (the circuit breaker's denominator).
    pub own_snapshots: u64,
    /// Every orphan found, oldest first, before the cap and the circuit breaker.
    pub orphans: Vec<Orphan>,
    /// The orphans to delete in this run: the oldest ones, within the budget, unless the
    /// circuit breaker tripped.
    pub to_delete: Vec<Orphan>,
    /// Every snapshot not in `to_delete`, counted by reason.
    pub kept: BTreeMap<KeepReason, u64>,
    pub unreferenced_manual: ManualSnapshots,
    /// The size of all orphans: what deleting them frees at most.
    pub reclaimable_gib: u64,
    pub circuit_breaker: Option<CircuitBreakerTrip>,
}

/// What one copy of a snapshot in the listing classifies as.
type Verdict = Result<Orphan, KeepReason>;

/// Plans one region. See [`KeepReason`] for the rules, in the order they apply.
pub fn plan(input: &PlanInput<'_>, policy: &Policy) -> Plan {
    let referenced: BTreeSet<&str> =
        input.images.iter().flat_map(|image| image.snapshot_ids.iter().map(String::as_str)).collect();
    let existing_images: BTreeSet<&str> = input.images.iter().map(|image| image.image_id.as_str()).collect();
    // A snapshot two retired images share gets the smaller id: the same whatever the order.
    let mut retired_sources: BTreeMap<&str, &str> = BTreeMap::new();
    for image in input.retired_images {
        for snapshot_id in &image.snapshot_ids {
            retired_sources
                .entry(snapshot_id.as_str())
                .and_modify(|id| *id = (*id).min(image.image_id.as_str()))
                .or_insert(image.image_id.as_str());
        }
    }
    let rules = Rules {
        account_id: input.account_id,
        now: input.now,
        policy,
        referenced,
        existing_images,
        retired_sources,
        images_in_recycle_bin: input.images_in_recycle_bin,
    };

    // A listing can repeat a snapshot (it changed while being paged): every copy must agree that
    // it is an orphan, and the result must not depend on which copy came first.
    let mut verdicts: BTreeMap<&str, Vec<(Verdict, &SnapshotFacts)>> = BTreeMap::new();
    for snapshot in input.snapshots {
        verdicts.entry(snapshot.snapshot_id.as_str()).or_default().push((rules.classify(snapshot), snapshot));
    }

    let mut plan = Plan {
        snapshots_scanned: verdicts.len() as u64,
        own_snapshots: 0,
        orphans: Vec::new(),
        to_delete: Vec::new(),
        kept: BTreeMap::new(),
        unreferenced_manual: ManualSnapshots::default(),
        reclaimable_gib: 0,
        circuit_breaker: None,
    };
    for copies in verdicts.values() {
        if copies.iter().all(|(_, s)| s.owner_id.as_deref() == Some(input.account_id)) {
            plan.own_snapshots += 1;
        }
        let kept = copies.iter().filter_map(|(verdict, _)| verdict.as_ref().err()).min();
        match kept {
            Some(&reason) => {
                *plan.kept.entry(reason).or_default() += 1;
                if reason == KeepReason::NotFromImage {
                    plan.unreferenced_manual.count += 1;
                    plan.unreferenced_manual.gib += copies.iter().map(|(_, s)| s.size_gib).max().unwrap_or(0);
                }
            }
            None => {
                if let Some(orphan) = copies.iter().filter_map(|(verdict, _)| verdict.as_ref().ok()).min() {
                    plan.orphans.push(orphan.clone());
                }
            }
        }
    }
    plan.orphans.sort_by(|a, b| (a.start_time, &a.snapshot_id).cmp(&(b.start_time, &b.snapshot_id)));
    plan.reclaimable_gib = plan.orphans.iter().map(|o| o.size_gib).sum();

    let orphans = plan.orphans.len() as u64;
    if exceeds_fraction(orphans, plan.own_snapshots, policy.max_delete_fraction) {
        plan.circuit_breaker = Some(CircuitBreakerTrip {
            orphans,
            own_snapshots: plan.own_snapshots,
            max_fraction: policy.max_delete_fraction,
        });
        *plan.kept.entry(KeepReason::CircuitBreaker).or_default() += orphans;
    } else {
        let allowed = usize::try_from(input.budget).unwrap_or(usize::MAX).min(plan.orphans.len());
        plan.to_delete = plan.orphans[..allowed].to_vec();
        let over = orphans - allowed as u64;
        if over > 0 {
            *plan.kept.entry(KeepReason::OverCap).or_default() += over;
        }
    }
    plan
}

/// `part` is more than `fraction` of `whole`. No part is never too much.
pub(crate) fn exceeds_fraction(part: u64, whole: u64, fraction: f64) -> bool {
    part > 0 && part as f64 > fraction * whole as f64
}

struct Rules<'a> {
    account_id: &'a str,
    now: DateTime<Utc>,
    policy: &'a Policy,
    referenced: BTreeSet<&'a str>,
    existing_images: BTreeSet<&'a str>,
    retired_sources: BTreeMap<&'a str, &'a str>,
    images_in_recycle_bin: &'a BTreeSet<String>,
}

impl Rules<'_> {
    fn classify(&self, snapshot: &SnapshotFacts) -> Verdict {
        use KeepReason::*;
        if snapshot.owner_id.as_deref() != Some(self.account_id) {
            return Err(NotOwned);
        }
        if self.referenced.contains(snapshot.snapshot_id.as_str()) {
            return Err(ReferencedByImage);
        }
        let mut sources = origin::source_images(&snapshot.description, &snapshot.tags);
        if let Some(retired) = self.retired_sources.get(snapshot.snapshot_id.as_str()) {
            if !sources.iter().any(|s| s == retired) {
                sources.push(retired.to_string());
            }
        }
        if sources.iter().any(|s| self.existing_images.contains(s.as_str())) {
            return Err(SourceImageExists);
        }
        if sources.iter().any(|s| self.images_in_recycle_bin.contains(s)) {
            return Err(SourceImageInRecycleBin);
        }
        if snapshot.tags.iter().any(|t| t.key == self.policy.protect_tag) {
            return Err(Protected);
        }
        if origin::is_aws_backup(&snapshot.description, &snapshot.tags) {
            return Err(AwsBackup);
        }
        if origin::is_dlm(&snapshot.description, &snapshot.tags) {
            return Err(Dlm);
        }
        if origin::is_recycle_bin(&snapshot.tags) {
            return Err(RecycleBin);
        }
        let Some(source_image_id) = sources.into_iter().next() else {
            return Err(NotFromImage);
        };
        if snapshot.state != "completed" {
            return Err(NotCompleted);
        }
        match snapshot.start_time {
            Some(start_time) if self.now.signed_duration_since(start_time) >= self.policy.min_age => Ok(Orphan {
                snapshot_id: snapshot.snapshot_id.clone(),
                size_gib: snapshot.size_gib,
                source_image_id,
                start_time,
            }),
            _ => Err(TooYoung),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::tags;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const ACCOUNT: &str = "123456789012";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn policy() -> Policy {
        Policy { min_age: Duration::hours(24), protect_tag: tags::KEEP.to_string(), max_delete_fraction: 1.0 }
    }

    /// An owned, completed snapshot made 48 hours ago for `ami`.
    fn snapshot(id: &str, ami: &str) -> SnapshotFacts {
        SnapshotFacts {
            snapshot_id: id.to_string(),
            owner_id: Some(ACCOUNT.to_string()),
            state: "completed".to_string(),
            start_time: Some(now() - Duration::hours(48)),
            size_gib: 8,
            description: format!("Created by CreateImage(i-0123) for {ami} from vol-0abc"),
            tags: vec![],
        }
    }

    fn image(id: &str, snapshots: &[&str]) -> ImageFacts {
        ImageFacts {
            image_id: id.to_string(),
            owner_id: Some(ACCOUNT.to_string()),
            name: format!("image {id}"),
            state: "available".to_string(),
            creation_date: Some(now() - Duration::days(400)),
            last_launched_time: None,
            public: false,
            snapshot_ids: snapshots.iter().map(|s| s.to_string()).collect(),
            tags: vec![],
        }
    }

    fn run(snapshots: &[SnapshotFacts], images: &[ImageFacts], binned: &[&str], budget: u64) -> Plan {
        let binned: BTreeSet<String> = binned.iter().map(|s| s.to_string()).collect();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots,
            images,
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget,
        };
        plan(&input, &policy())
    }

    fn only_reason(plan: &Plan) -> KeepReason {
        assert!(plan.to_delete.is_empty() && plan.orphans.is_empty(), "{plan:?}");
        assert_eq!(plan.kept.len(), 1, "{plan:?}");
        *plan.kept.keys().next().unwrap()
    }

    #[test]
    fn a_snapshot_of_a_deregistered_ami_is_an_orphan() {
        let plan = run(&[snapshot("snap-01", "ami-0a")], &[], &[], 10);
        let orphan = Orphan {
            snapshot_id: "snap-01".into(),
            size_gib: 8,
            source_image_id: "ami-0a".into(),
            start_time: now() - Duration::hours(48),
        };
        assert_eq!(plan.orphans, vec![orphan.clone()]);
        assert_eq!(plan.to_delete, vec![orphan]);
        assert!(plan.kept.is_empty());
        assert_eq!(plan.reclaimable_gib, 8);
        assert_eq!((plan.snapshots_scanned, plan.own_snapshots), (1, 1));
    }

    #[test]
    fn each_keep_reason_on_its_own() {
        let s = snapshot("snap-01", "ami-0a");
        let with = |f: &dyn Fn(&mut SnapshotFacts)| {
            let mut s = s.clone();
            f(&mut s);
            vec![s]
        };
        use KeepReason::*;
        type Case<'a> = (Vec<SnapshotFacts>, Vec<ImageFacts>, Vec<&'a str>, KeepReason);
        let cases: Vec<Case> = vec![
            (with(&|s| s.owner_id = Some("999999999999".into())), vec![], vec![], NotOwned),
            (with(&|s| s.owner_id = None), vec![], vec![], NotOwned),
            // Referenced by another image than the one it was made for (e.g. a disabled one).
            (vec![s.clone()], vec![image("ami-0b", &["snap-01"])], vec![], ReferencedByImage),
            (vec![s.clone()], vec![image("ami-0a", &[])], vec![], SourceImageExists),
            (vec![s.clone()], vec![], vec!["ami-0a"], SourceImageInRecycleBin),
            (with(&|s| s.tags.push(Tag::new(tags::KEEP, "false"))), vec![], vec![], Protected),
            (with(&|s| s.tags.push(Tag::new("aws:backup:source-resource", "x"))), vec![], vec![], AwsBackup),
            (with(&|s| s.tags.push(Tag::new("aws:dlm:lifecycle-policy-id", "p"))), vec![], vec![], Dlm),
            (with(&|s| s.tags.push(Tag::new("aws:recycle-bin:x", "y"))), vec![], vec![], RecycleBin),
            (with(&|s| s.description = "db before upgrade".into()), vec![], vec![], NotFromImage),
            (with(&|s| s.state = "pending".into()), vec![], vec![], NotCompleted),
            (with(&|s| s.state = "error".into()), vec![], vec![], NotCompleted),
            (with(&|s| s.start_time = None), vec![], vec![], TooYoung),
        ];
        for (snapshots, images, binned, reason) in cases {
            assert_eq!(only_reason(&run(&snapshots, &images, &binned, 10)), reason, "{snapshots:?}");
        }
    }

    #[test]
    fn amiguard_image_tag_makes_a_snapshot_from_an_ami_and_either_source_keeps_it() {
        let mut s = snapshot("snap-01", "ami-0a");
        s.description = String::new();
        s.tags.push(Tag::new(tags::IMAGE, "ami-0c"));
        let plan = run(std::slice::from_ref(&s), &[], &[], 10);
        assert_eq!(plan.to_delete[0].source_image_id, "ami-0c");
        // Description and tag disagree: the snapshot is kept while either AMI exists.
        s.description = "Created by CreateImage(i-01) for ami-0a".into();
        assert_eq!(run(std::slice::from_ref(&s), &[], &[], 10).to_delete[0].source_image_id, "ami-0a");
        let live_tagged = [image("ami-0c", &[])];
        assert_eq!(only_reason(&run(std::slice::from_ref(&s), &live_tagged, &[], 10)), KeepReason::SourceImageExists);
        assert_eq!(only_reason(&run(&[s], &[], &["ami-0c"], 10)), KeepReason::SourceImageInRecycleBin);
    }

    #[test]
    fn grace_period_boundary_with_an_injected_clock() {
        let at = |age: Duration| {
            let mut s = snapshot("snap-01", "ami-0a");
            s.start_time = Some(now() - age);
            run(&[s], &[], &[], 10)
        };
        assert_eq!(only_reason(&at(Duration::hours(24) - Duration::seconds(1))), KeepReason::TooYoung);
        assert_eq!(at(Duration::hours(24)).to_delete.len(), 1);
        assert_eq!(at(Duration::days(30)).to_delete.len(), 1);
        // A start time in the future (clock skew) is young, not negative-old.
        assert_eq!(only_reason(&at(-Duration::hours(1))), KeepReason::TooYoung);

        let mut s = snapshot("snap-01", "ami-0a");
        s.start_time = Some(now() - Duration::minutes(5));
        let zero = Policy { min_age: Duration::zero(), ..policy() };
        let binned = BTreeSet::new();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &[s],
            images: &[],
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget: 1,
        };
        assert_eq!(plan(&input, &zero).to_delete.len(), 1, "MIN_AGE_HOURS=0 has no grace period");
    }

    #[test]
    fn manual_snapshots_are_counted_with_their_size() {
        let mut a = snapshot("snap-01", "ami-0a");
        a.description = String::new();
        a.size_gib = 100;
        let mut b = a.clone();
        b.snapshot_id = "snap-02".into();
        b.size_gib = 20;
        b.start_time = Some(now());
        let plan = run(&[a, b], &[], &[], 10);
        assert_eq!(plan.unreferenced_manual, ManualSnapshots { count: 2, gib: 120 });
        assert_eq!(plan.kept, BTreeMap::from([(KeepReason::NotFromImage, 2)]));
    }

    #[test]
    fn snapshots_of_retired_images_count_as_made_for_them() {
        let mut s = snapshot("snap-01", "ami-0a");
        s.description = "registered from a manual snapshot".into();
        let retired = [image("ami-0r", &["snap-01"])];
        let binned = BTreeSet::new();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: std::slice::from_ref(&s),
            images: &[],
            retired_images: &retired,
            images_in_recycle_bin: &binned,
            budget: 10,
        };
        assert_eq!(plan(&input, &policy()).to_delete[0].source_image_id, "ami-0r");
        // But another image that still maps it keeps it.
        let images = [image("ami-0k", &["snap-01"])];
        let input = PlanInput { images: &images, ..input };
        assert_eq!(only_reason(&plan(&input, &policy())), KeepReason::ReferencedByImage);
    }

    #[test]
    fn the_cap_takes_the_oldest_and_counts_the_rest() {
        let snapshots: Vec<SnapshotFacts> = (0..5)
            .map(|i| {
                let mut s = snapshot(&format!("snap-0{i}"), "ami-0a");
                s.start_time = Some(now() - Duration::days(10 - i));
                s
            })
            .collect();
        let plan = run(&snapshots, &[], &[], 2);
        assert_eq!(plan.orphans.len(), 5);
        let ids: Vec<&str> = plan.to_delete.iter().map(|o| o.snapshot_id.as_str()).collect();
        assert_eq!(ids, ["snap-00", "snap-01"]);
        assert_eq!(plan.kept, BTreeMap::from([(KeepReason::OverCap, 3)]));
        assert_eq!(run(&snapshots, &[], &[], 0).kept, BTreeMap::from([(KeepReason::OverCap, 5)]));
    }

    #[test]
    fn the_circuit_breaker_compares_all_orphans_with_own_snapshots() {
        // 3 orphans, 2 referenced: 3 of 5 own snapshots = 60%; foreign snapshots do not count.
        let mut snapshots: Vec<SnapshotFacts> =
            (0..5).map(|i| snapshot(&format!("snap-0{i}"), &format!("ami-0{i}"))).collect();
        let mut foreign = snapshot("snap-0f", "ami-0f");
        foreign.owner_id = Some("999999999999".into());
        snapshots.push(foreign);
        let images = [image("ami-0b", &["snap-03", "snap-04"])];
        let binned = BTreeSet::new();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &snapshots,
            images: &images,
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget: 1,
        };
        let half = Policy { max_delete_fraction: 0.5, ..policy() };
        let tripped = plan(&input, &half);
        assert!(tripped.to_delete.is_empty());
        assert_eq!(tripped.orphans.len(), 3, "the orphans are still reported");
        assert_eq!(
            tripped.circuit_breaker,
            Some(CircuitBreakerTrip { orphans: 3, own_snapshots: 5, max_fraction: 0.5 })
        );
        assert_eq!(tripped.kept[&KeepReason::CircuitBreaker], 3);
        assert!(tripped.circuit_breaker.unwrap().to_string().contains("3 orphans of 5 own snapshots"));
        // The breaker looks at all orphans, not at the one the cap lets through.
        let sixty = Policy { max_delete_fraction: 0.6, ..policy() };
        let allowed = plan(&input, &sixty);
        assert_eq!(allowed.circuit_breaker, None, "exactly the fraction is allowed");
        assert_eq!(allowed.to_delete.len(), 1);
        let none = Policy { max_delete_fraction: 0.0, ..policy() };
        assert!(plan(&input, &none).to_delete.is_empty());
        assert_eq!(plan(&PlanInput { snapshots: &[], ..input }, &none).circuit_breaker, None);
    }

    #[test]
    fn repeated_listing_entries_must_all_agree() {
        let orphan = snapshot("snap-01", "ami-0a");
        let mut protected = orphan.clone();
        protected.tags.push(Tag::new(tags::KEEP, ""));
        for snapshots in [vec![orphan.clone(), protected.clone()], vec![protected, orphan.clone()]] {
            let plan = run(&snapshots, &[], &[], 10);
            assert_eq!(plan.snapshots_scanned, 1);
            assert_eq!(only_reason(&plan), KeepReason::Protected);
        }
        assert_eq!(run(&[orphan.clone(), orphan], &[], &[], 10).to_delete.len(), 1);
    }

    // ---- properties ----

    const AMIS: usize = 6;

    fn ami(i: usize) -> String {
        format!("ami-0{i:x}")
    }

    prop_compose! {
        fn arb_snapshot()(
            owner in prop_oneof![3 => Just(Some(ACCOUNT)), 1 => Just(Some("999999999999")), 1 => Just(None)],
            state in prop_oneof![4 => Just("completed"), 1 => Just("pending"), 1 => Just("error")],
            age_hours in prop::option::weighted(0.9, -5i64..100),
            size_gib in 1u64..2000,
            description in prop_oneof![
                (0..AMIS).prop_map(|i| format!("Created by CreateImage(i-0abc) for {}", ami(i))),
                (0..AMIS).prop_map(|i| format!("Created by CreateImage(i-0abc) for {} from vol-01", ami(i))),
                (0..AMIS).prop_map(|i| format!(
                    "Copied for DestinationAmi {} from SourceAmi ami-0ff for SourceSnapshot snap-0ee. Task created on 1.",
                    ami(i)
                )),
                Just(String::new()),
                Just("manual copy before upgrade".to_string()),
                Just("This snapshot is created by the AWS Backup service.".to_string()),
                Just("Created for policy: policy-0123".to_string()),
            ],
            markers in prop::collection::vec(prop_oneof![
                Just(Tag::new(tags::KEEP, "true")),
                Just(Tag::new("aws:backup:source-resource", "arn")),
                Just(Tag::new("aws:dlm:lifecycle-policy-id", "policy-1")),
                Just(Tag::new("aws:recycle-bin:x", "y")),
                (0..AMIS).prop_map(|i| Tag::new(tags::IMAGE, ami(i))),
                Just(Tag::new("Name", "db")),
            ], 0..3),
        ) -> SnapshotFacts {
            SnapshotFacts {
                snapshot_id: String::new(),
                owner_id: owner.map(str::to_string),
                state: state.to_string(),
                start_time: age_hours.map(|h| now() - Duration::hours(h)),
                size_gib,
                description,
                tags: markers,
            }
        }
    }

    #[derive(Debug, Clone)]
    struct World {
        snapshots: Vec<SnapshotFacts>,
        images: Vec<ImageFacts>,
        retired: Vec<ImageFacts>,
        binned: BTreeSet<String>,
        budget: u64,
        fraction: f64,
        min_age_hours: i64,
    }

    fn arb_world() -> impl Strategy<Value = World> {
        (
            prop::collection::vec(arb_snapshot(), 0..40),
            prop::collection::vec((0..AMIS, prop::collection::vec(0usize..40, 0..4), any::<bool>()), 0..AMIS),
            prop::collection::btree_set((0..AMIS).prop_map(ami), 0..3),
            0u64..50,
            prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(1.0)],
            prop_oneof![Just(0i64), Just(24)],
        )
            .prop_map(|(mut snapshots, images, binned, budget, fraction, min_age_hours)| {
                for (i, s) in snapshots.iter_mut().enumerate() {
                    s.snapshot_id = format!("snap-{i:04x}");
                }
                let (mut live, mut retired) = (Vec::new(), Vec::new());
                for (i, refs, is_retired) in images {
                    let refs: Vec<String> = refs.iter().map(|r| format!("snap-{r:04x}")).collect();
                    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                    if is_retired {
                        retired.push(image(&ami(i), &refs))
                    } else {
                        live.push(image(&ami(i), &refs))
                    }
                }
                World { snapshots, images: live, retired, binned, budget, fraction, min_age_hours }
            })
    }

    fn plan_world(world: &World) -> Plan {
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &world.snapshots,
            images: &world.images,
            retired_images: &world.retired,
            images_in_recycle_bin: &world.binned,
            budget: world.budget,
        };
        let policy = Policy {
            min_age: Duration::hours(world.min_age_hours),
            protect_tag: tags::KEEP.to_string(),
            max_delete_fraction: world.fraction,
        };
        plan(&input, &policy)
    }

    fn has_key_prefix(s: &SnapshotFacts, prefix: &str) -> bool {
        s.tags.iter().any(|t| t.key.to_ascii_lowercase().starts_with(prefix))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Checked against the facts directly, not through the planner's own helpers.
        #[test]
        fn never_deletes_a_snapshot_that_a_rule_keeps(world in arb_world()) {
            let plan = plan_world(&world);
            let referenced: BTreeSet<&str> =
                world.images.iter().flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
            let live: BTreeSet<&str> = world.images.iter().map(|i| i.image_id.as_str()).collect();
            for orphan in &plan.to_delete {
                let s = world.snapshots.iter().find(|s| s.snapshot_id == orphan.snapshot_id).unwrap();
                prop_assert_eq!(s.owner_id.as_deref(), Some(ACCOUNT), "not owned");
                prop_assert!(!referenced.contains(s.snapshot_id.as_str()), "referenced by an image");
                for image in live.iter().copied().chain(world.binned.iter().map(String::as_str)) {
                    // Any AMI the snapshot names, by description or tag, keeps it while it exists.
                    prop_assert!(!s.description.contains(image), "its AMI {} exists or is in the bin", image);
                    prop_assert!(!s.tags.iter().any(|t| t.key == tags::IMAGE && t.value == image), "its AMI {} exists", image);
                }
                prop_assert!(!s.tags.iter().any(|t| t.key == tags::KEEP), "protected");
                prop_assert!(!has_key_prefix(s, "aws:backup:") && !s.description.contains("AWS Backup"), "Backup");
                prop_assert!(!has_key_prefix(s, "aws:dlm:") && !s.description.starts_with("Created for policy"), "DLM");
                prop_assert!(!has_key_prefix(s, "aws:recycle-bin:"), "Recycle Bin");
                prop_assert_eq!(s.state.as_str(), "completed");
                let age = now() - s.start_time.unwrap();
                prop_assert!(age >= Duration::hours(world.min_age_hours), "too young");
                let made_for_ami = s.description.starts_with("Created by CreateImage(")
                    || s.description.starts_with("Copied for DestinationAmi ")
                    || s.tags.iter().any(|t| t.key == tags::IMAGE)
                    || world.retired.iter().any(|i| i.snapshot_ids.contains(&s.snapshot_id));
                prop_assert!(made_for_ami, "not made for an AMI");
            }
        }

        #[test]
        fn the_plan_does_not_depend_on_input_order(world in arb_world(), seed in any::<u64>()) {
            let mut shuffled = world.clone();
            let mut rng = seed;
            let mut next = move |n: usize| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as usize % n.max(1)
            };
            for list in [&mut shuffled.images, &mut shuffled.retired] {
                for i in (1..list.len()).rev() { let j = next(i + 1); list.swap(i, j); }
                for image in list.iter_mut() {
                    for i in (1..image.snapshot_ids.len()).rev() { let j = next(i + 1); image.snapshot_ids.swap(i, j); }
                }
            }
            for i in (1..shuffled.snapshots.len()).rev() { let j = next(i + 1); shuffled.snapshots.swap(i, j); }
            prop_assert_eq!(plan_world(&world), plan_world(&shuffled));
        }

        #[test]
        fn cap_and_circuit_breaker_hold_and_every_snapshot_is_accounted_for(world in arb_world()) {
            let plan = plan_world(&world);
            prop_assert!(plan.to_delete.len() as u64 <= world.budget);
            if !plan.to_delete.is_empty() {
                prop_assert!(plan.orphans.len() as f64 <= world.fraction * plan.own_snapshots as f64);
            }
            prop_assert_eq!(plan.to_delete.as_slice(), &plan.orphans[..plan.to_delete.len()]);
            let kept: u64 = plan.kept.values().sum();
            prop_assert_eq!(kept + plan.to_delete.len() as u64, plan.snapshots_scanned);
            prop_assert_eq!(plan.snapshots_scanned, world.snapshots.len() as u64);
            prop_assert_eq!(plan.reclaimable_gib, plan.orphans.iter().map(|o| o.size_gib).sum::<u64>());
            prop_assert!(plan.orphans.windows(2).all(|w| (w[0].start_time, &w[0].snapshot_id) < (w[1].start_time, &w[1].snapshot_id)));
        }
    }
}
