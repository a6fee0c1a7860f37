//! The retirement planner (`RETIRE_UNUSED_AMIS_AFTER_DAYS`): which of the account's own AMIs are
//! old and unused enough to deregister. Their snapshots then go through the snapshot planner,
//! with every one of its rules.
//!
//! Pure, like the snapshot planner. "Unused" is judged from what the handler could list: instances
//! that are not terminated, launch templates' default and latest versions, what EC2's
//! `DescribeImageReferences` finds (instances, every launch-template version, SSM parameters,
//! Image Builder recipes), and whether the image or any of its snapshots is shared (it may be in
//! use in another account, where we cannot see). What EC2 says about the image itself keeps it
//! too: deregistration protection, and the `disabled` state (the disable-then-archive flow).
//!
//! The planner runs twice: the first pass, with no [`UseFacts`], names the images that pass every
//! rule it can judge alone ([`RetirePlan::use_to_check`]); the handler asks EC2 about those only,
//! and the second pass decides.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::facts::ImageFacts;
use super::planner::{exceeds_fraction, CircuitBreakerTrip};
use amiguard::tags;

#[derive(Debug, Clone, PartialEq)]
pub struct RetirePolicy {
    /// Images younger than this, or launched more recently than this, are kept.
    pub unused_for: Duration,
    /// An image carrying this tag key, whatever its value, is kept.
    pub protect_tag: String,
    /// The circuit breaker: retiring more than this fraction of the region's own images retires none.
    pub max_delete_fraction: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct RetireInput<'a> {
    pub account_id: &'a str,
    pub now: DateTime<Utc>,
    pub images: &'a [ImageFacts],
    /// Images of the instances that are not terminated.
    pub used_by_instances: &'a BTreeSet<String>,
    /// Images of launch templates' default and latest versions.
    pub used_by_launch_templates: &'a BTreeSet<String>,
    /// What EC2 said of the images the handler asked about ([`RetirePlan::use_to_check`]). An
    /// image not in the map, or a fact left `None` (its call failed), is kept.
    pub use_facts: &'a BTreeMap<String, UseFacts>,
    /// How many deregistrations this region may still start (what is left of `MAX_DELETIONS`).
    pub budget: u64,
}

/// What the handler asked EC2 about one image that passed every other rule; `None`: not known
/// (not asked, or the call failed), which keeps the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UseFacts {
    /// `DescribeImageReferences` found it in use.
    pub referenced: Option<bool>,
    /// It has a launch permission (an account, an organization or unit).
    pub shared: Option<bool>,
    /// One of its snapshots has a create-volume permission.
    pub snapshot_shared: Option<bool>,
}

impl UseFacts {
    /// What EC2 says of an image nobody uses.
    pub const UNUSED: Self = Self { referenced: Some(false), shared: Some(false), snapshot_shared: Some(false) };
}

/// Why an image is not retired. One reason per image, the first that applies in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKeepReason {
    NotOwned,
    Protected,
    /// snapshot-on-stop has its own retention for the images it makes.
    CreatedBySnapshotOnStop,
    UsedByInstance,
    UsedByLaunchTemplate,
    /// EC2's deregistration protection is on (or on until its cooldown ends): no
    /// `DeregisterImage` is sent, it could only fail.
    DeregistrationProtected,
    /// Disabled by someone: the first step of AWS's disable-then-archive flow, not an unused image.
    Disabled,
    /// Not `available` (pending, failed, ...).
    NotRetirableState,
    /// Created less than the retention period ago, or its creation date is unknown.
    TooYoung,
    /// Launched less than the retention period ago (EC2's `LastLaunchedTime`).
    RecentlyLaunched,
    Public,
    /// `DescribeImageReferences` found it in use (an instance, a launch-template version, an SSM
    /// parameter, an Image Builder recipe).
    Referenced,
    /// `DescribeImageReferences` could not be asked about it.
    ReferencesUnknown,
    /// Shared with other accounts, organizations or units: it may be in use there.
    Shared,
    /// Its launch permissions could not be read.
    SharingUnknown,
    /// One of its snapshots is shared (create-volume permission): someone may build from it.
    SnapshotShared,
    /// The create-volume permissions of one of its snapshots could not be read.
    SnapshotSharingUnknown,
    /// Passes every rule the planner judges alone; what EC2 says of its use is still to be asked
    /// (the first pass). The handler asks about every such image, so a report shows it only if it
    /// did not.
    UseUnknown,
    OverCap,
    CircuitBreaker,
    /// Staged retirement: made by EC2 Image Builder (its `Ec2ImageBuilderArn` tag), left to Image
    /// Builder's own lifecycle policies unless `RETIRE_IMAGE_BUILDER_IMAGES=true`.
    LeftToImageBuilder,
    /// Staged retirement: among the newest `RETIRE_KEEP_NEWEST` of its family.
    NewestOfFamily,
    /// Staged retirement: deprecated by someone else (no stage of amiguard's): left alone.
    DeprecatedByPerson,
    /// Staged retirement: its retirement ended (undone on use, or by a person) less than
    /// `RETIRE_UNUSED_AMIS_AFTER_DAYS` ago.
    RetirementEnded,
}

/// The decision for one region.
#[derive(Debug, Clone, PartialEq)]
pub struct RetirePlan {
    pub own_images: u64,
    /// Every image that qualifies, oldest first, before the cap and the circuit breaker.
    pub candidates: Vec<ImageFacts>,
    /// What this run retires.
    pub to_retire: Vec<ImageFacts>,
    pub kept: BTreeMap<ImageKeepReason, u64>,
    /// The images kept only because what EC2 says of their use is not known yet: ask, then plan
    /// again.
    pub use_to_check: Vec<String>,
    pub circuit_breaker: Option<CircuitBreakerTrip>,
}

/// Whether [`plan_retirement`] reads an image tag with this key: the EC2 adapter keeps these and
/// drops the others with the page, so a rule that reads another tag must be added here. The
/// protect tag in any letter case, as IAM's guard matches it.
pub fn reads_image_tag(key: &str, protect_tag: &str) -> bool {
    key.eq_ignore_ascii_case(protect_tag) || key == tags::CREATED_BY
}

pub fn plan_retirement(input: &RetireInput<'_>, policy: &RetirePolicy) -> RetirePlan {
    // One verdict per image id; a repeated entry must agree on retiring it.
    let mut verdicts: BTreeMap<&str, Vec<Result<&ImageFacts, ImageKeepReason>>> = BTreeMap::new();
    for image in input.images {
        verdicts.entry(image.image_id.as_str()).or_default().push(classify(image, input, policy));
    }
    let mut plan = RetirePlan {
        own_images: 0,
        candidates: Vec::new(),
        to_retire: Vec::new(),
        kept: BTreeMap::new(),
        use_to_check: Vec::new(),
        circuit_breaker: None,
    };
    for (id, copies) in &verdicts {
        if copies.iter().all(|v| v.err() != Some(ImageKeepReason::NotOwned)) {
            plan.own_images += 1;
        }
        match copies.iter().filter_map(|v| v.err()).min() {
            Some(reason) => {
                *plan.kept.entry(reason).or_default() += 1;
                if reason == ImageKeepReason::UseUnknown {
                    plan.use_to_check.push(id.to_string());
                }
            }
            None => {
                if let Some(image) = copies.iter().filter_map(|v| v.ok()).min_by(|a, b| compare(a, b)) {
                    plan.candidates.push(image.clone());
                }
            }
        }
    }
    plan.candidates.sort_by(compare);

    let candidates = plan.candidates.len() as u64;
    if exceeds_fraction(candidates, plan.own_images, policy.max_delete_fraction) {
        plan.circuit_breaker = Some(CircuitBreakerTrip {
            orphans: candidates,
            own_snapshots: plan.own_images,
            max_fraction: policy.max_delete_fraction,
        });
        *plan.kept.entry(ImageKeepReason::CircuitBreaker).or_default() += candidates;
    } else {
        let allowed = usize::try_from(input.budget).unwrap_or(usize::MAX).min(plan.candidates.len());
        plan.to_retire = plan.candidates[..allowed].to_vec();
        let over = candidates - allowed as u64;
        if over > 0 {
            *plan.kept.entry(ImageKeepReason::OverCap).or_default() += over;
        }
    }
    plan
}

/// Oldest first; an unknown date never gets here (such images are kept).
fn compare(a: &ImageFacts, b: &ImageFacts) -> std::cmp::Ordering {
    (a.creation_date, &a.image_id).cmp(&(b.creation_date, &b.image_id))
}

fn classify<'a>(
    image: &'a ImageFacts,
    input: &RetireInput<'_>,
    policy: &RetirePolicy,
) -> Result<&'a ImageFacts, ImageKeepReason> {
    use ImageKeepReason::*;
    let recent = |time: Option<DateTime<Utc>>| match time {
        Some(time) => input.now.signed_duration_since(time) < policy.unused_for,
        None => true,
    };
    if image.owner_id.as_deref() != Some(input.account_id) {
        return Err(NotOwned);
    }
    if image.tags.iter().any(|t| t.key.eq_ignore_ascii_case(&policy.protect_tag)) {
        return Err(Protected);
    }
    if tags::value(&image.tags, tags::CREATED_BY) == Some(tags::CREATED_BY_SNAPSHOT_ON_STOP) {
        return Err(CreatedBySnapshotOnStop);
    }
    if input.used_by_instances.contains(image.image_id.as_str()) {
        return Err(UsedByInstance);
    }
    if input.used_by_launch_templates.contains(image.image_id.as_str()) {
        return Err(UsedByLaunchTemplate);
    }
    if image.deregistration_protection.as_deref().is_some_and(|p| p != "disabled") {
        return Err(DeregistrationProtected);
    }
    if image.state == "disabled" {
        return Err(Disabled);
    }
    if image.state != "available" {
        return Err(NotRetirableState);
    }
    if recent(image.creation_date) {
        return Err(TooYoung);
    }
    if image.last_launched_time.is_some() && recent(image.last_launched_time) {
        return Err(RecentlyLaunched);
    }
    if image.public {
        return Err(Public);
    }
    let Some(facts) = input.use_facts.get(image.image_id.as_str()) else {
        return Err(UseUnknown);
    };
    // Each fact in the order the handler asks them: a use found first keeps the image without
    // the later calls.
    let checks = [
        (facts.referenced, Referenced, ReferencesUnknown),
        (facts.shared, Shared, SharingUnknown),
        (facts.snapshot_shared, SnapshotShared, SnapshotSharingUnknown),
    ];
    for (fact, used, unknown) in checks {
        match fact {
            Some(false) => {}
            Some(true) => return Err(used),
            None => return Err(unknown),
        }
    }
    Ok(image)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use amiguard::tags::Tag;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const ACCOUNT: &str = "123456789012";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn policy() -> RetirePolicy {
        RetirePolicy { unused_for: Duration::days(90), protect_tag: tags::KEEP.to_string(), max_delete_fraction: 1.0 }
    }

    fn image(id: &str, age_days: i64) -> ImageFacts {
        ImageFacts {
            image_id: id.into(),
            owner_id: Some(ACCOUNT.into()),
            name: format!("name-{id}"),
            state: "available".into(),
            creation_date: Some(now() - Duration::days(age_days)),
            last_launched_time: None,
            public: false,
            deregistration_protection: None,
            snapshot_ids: vec![format!("snap-{}", &id[4..]).into()],
            tags: vec![],
        }
    }

    struct Facts {
        images: Vec<ImageFacts>,
        instances: BTreeSet<String>,
        templates: BTreeSet<String>,
        use_facts: BTreeMap<String, UseFacts>,
        budget: u64,
    }

    impl Facts {
        fn new(images: Vec<ImageFacts>) -> Self {
            let use_facts = images.iter().map(|i| (i.image_id.to_string(), UseFacts::UNUSED)).collect();
            Self { images, instances: BTreeSet::new(), templates: BTreeSet::new(), use_facts, budget: 100 }
        }

        fn plan(&self, policy: &RetirePolicy) -> RetirePlan {
            plan_retirement(
                &RetireInput {
                    account_id: ACCOUNT,
                    now: now(),
                    images: &self.images,
                    used_by_instances: &self.instances,
                    used_by_launch_templates: &self.templates,
                    use_facts: &self.use_facts,
                    budget: self.budget,
                },
                policy,
            )
        }
    }

    fn set_use(facts: &mut Facts, change: impl Fn(&mut UseFacts)) {
        facts.use_facts.values_mut().for_each(change);
    }

    fn only_reason(plan: &RetirePlan) -> ImageKeepReason {
        assert!(plan.to_retire.is_empty() && plan.candidates.is_empty(), "{plan:?}");
        assert_eq!(plan.kept.len(), 1, "{plan:?}");
        *plan.kept.keys().next().unwrap()
    }

    #[test]
    fn an_old_unused_private_image_is_retired() {
        let plan = Facts::new(vec![image("ami-0a", 91)]).plan(&policy());
        assert_eq!(plan.to_retire.len(), 1);
        assert_eq!(plan.own_images, 1);
        let protection_off = ImageFacts { deregistration_protection: Some("disabled".into()), ..image("ami-0a", 91) };
        assert_eq!(Facts::new(vec![protection_off]).plan(&policy()).to_retire.len(), 1);
    }

    #[test]
    fn each_keep_reason_on_its_own() {
        use ImageKeepReason::*;
        let base = image("ami-0a", 200);
        let with = |f: &dyn Fn(&mut ImageFacts, &mut Facts)| {
            let mut facts = Facts::new(vec![base.clone()]);
            let mut img = base.clone();
            f(&mut img, &mut facts);
            facts.images = vec![img];
            facts.plan(&policy())
        };
        let cases: Vec<(RetirePlan, ImageKeepReason)> = vec![
            (with(&|i, _| i.owner_id = Some("999999999999".into())), NotOwned),
            (with(&|i, _| i.tags.push(Tag::new(tags::KEEP, "no"))), Protected),
            // IAM's guard matches the key in any letter case: so does the planner.
            (with(&|i, _| i.tags.push(Tag::new("AMIGUARD:Keep", ""))), Protected),
            (
                with(&|i, _| i.tags.push(Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP))),
                CreatedBySnapshotOnStop,
            ),
            (
                with(&|_, f| {
                    f.instances.insert("ami-0a".into());
                }),
                UsedByInstance,
            ),
            (
                with(&|_, f| {
                    f.templates.insert("ami-0a".into());
                }),
                UsedByLaunchTemplate,
            ),
            (with(&|i, _| i.deregistration_protection = Some("enabled-with-cooldown".into())), DeregistrationProtected),
            (
                with(&|i, _| i.deregistration_protection = Some("enabled-without-cooldown".into())),
                DeregistrationProtected,
            ),
            // Turned off, but on until its cooldown ends.
            (
                with(&|i, _| i.deregistration_protection = Some("disabled after 2026-06-02T12:00:00Z".into())),
                DeregistrationProtected,
            ),
            (with(&|i, _| i.state = "disabled".into()), Disabled),
            (with(&|i, _| i.state = "pending".into()), NotRetirableState),
            (with(&|i, _| i.state = "failed".into()), NotRetirableState),
            (with(&|i, _| i.creation_date = Some(now() - Duration::days(89))), TooYoung),
            (with(&|i, _| i.creation_date = None), TooYoung),
            (with(&|i, _| i.last_launched_time = Some(now() - Duration::days(3))), RecentlyLaunched),
            (with(&|i, _| i.public = true), Public),
            (with(&|_, f| set_use(f, |u| u.referenced = Some(true))), Referenced),
            (with(&|_, f| set_use(f, |u| u.referenced = None)), ReferencesUnknown),
            (with(&|_, f| set_use(f, |u| u.shared = Some(true))), Shared),
            (with(&|_, f| set_use(f, |u| u.shared = None)), SharingUnknown),
            (with(&|_, f| set_use(f, |u| u.snapshot_shared = Some(true))), SnapshotShared),
            (with(&|_, f| set_use(f, |u| u.snapshot_shared = None)), SnapshotSharingUnknown),
            (with(&|_, f| f.use_facts.clear()), UseUnknown),
        ];
        for (plan, reason) in cases {
            assert_eq!(only_reason(&plan), reason);
        }
        let launched_long_ago = with(&|i, _| i.last_launched_time = Some(now() - Duration::days(120)));
        assert_eq!(launched_long_ago.to_retire.len(), 1);
    }

    #[test]
    fn unknown_use_is_listed_for_the_handler_to_ask_and_only_then() {
        let protected =
            ImageFacts { deregistration_protection: Some("enabled-with-cooldown".into()), ..image("ami-0c", 100) };
        let mut facts = Facts::new(vec![image("ami-0a", 100), image("ami-0b", 100), protected, image("ami-0d", 10)]);
        facts.use_facts.clear();
        let first = facts.plan(&policy());
        assert_eq!(first.use_to_check, ["ami-0a", "ami-0b"], "EC2 is asked only about what passes every other rule");
        assert!(first.to_retire.is_empty());
        facts.use_facts = BTreeMap::from([
            ("ami-0a".into(), UseFacts::UNUSED),
            ("ami-0b".into(), UseFacts { referenced: Some(true), ..UseFacts::default() }),
        ]);
        let second = facts.plan(&policy());
        assert_eq!(second.to_retire.iter().map(|i| i.image_id.as_str()).collect::<Vec<_>>(), ["ami-0a"]);
        assert!(second.use_to_check.is_empty());
        assert_eq!(second.kept[&ImageKeepReason::Referenced], 1);
    }

    #[test]
    fn cap_takes_the_oldest_and_the_breaker_refuses_too_many() {
        let mut facts = Facts::new(vec![image("ami-0a", 100), image("ami-0b", 300), image("ami-0c", 200)]);
        facts.budget = 2;
        let plan = facts.plan(&policy());
        assert_eq!(plan.to_retire.iter().map(|i| i.image_id.as_str()).collect::<Vec<_>>(), ["ami-0b", "ami-0c"]);
        assert_eq!(plan.kept, BTreeMap::from([(ImageKeepReason::OverCap, 1)]));

        facts.images.push(image("ami-0d", 1));
        let half = RetirePolicy { max_delete_fraction: 0.5, ..policy() };
        let plan = facts.plan(&half);
        assert!(plan.to_retire.is_empty());
        assert_eq!(plan.kept[&ImageKeepReason::CircuitBreaker], 3);
        assert_eq!(plan.circuit_breaker.map(|c| (c.orphans, c.own_snapshots)), Some((3, 4)));
    }

    proptest! {
        #[test]
        fn never_retires_what_a_rule_keeps_and_ignores_order(
            specs in prop::collection::vec(
                (0usize..8, -10i64..400, prop::option::of(0i64..400), any::<[bool; 8]>(), 0u8..3, any::<[u8; 3]>()), 0..12),
            budget in 0u64..6,
            fraction in prop_oneof![Just(0.3), Just(1.0)],
            seed in any::<u64>(),
        ) {
            let mut facts = Facts::new(vec![]);
            facts.budget = budget;
            // A use fact: 0 unknown, 1 in use, otherwise unused.
            let fact = |n: u8| match n % 3 { 0 => None, 1 => Some(true), _ => Some(false) };
            for (i, age, launched, flags, state, uses) in &specs {
                let id = format!("ami-0{i}");
                let mut img = image(&id, *age);
                img.last_launched_time = launched.map(|d| now() - Duration::days(d));
                img.public = flags[0];
                if flags[1] { img.tags.push(Tag::new(tags::KEEP, "")); }
                if flags[2] { img.tags.push(Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP)); }
                if flags[3] { facts.instances.insert(id.clone()); }
                if flags[4] { facts.templates.insert(id.clone()); }
                if flags[5] { img.deregistration_protection = Some("enabled-with-cooldown".into()); }
                if flags[6] { img.deregistration_protection = Some("disabled".into()); }
                img.state = ["available", "disabled", "pending"][usize::from(*state)].into();
                if flags[7] {
                    let use_facts =
                        UseFacts { referenced: fact(uses[0]), shared: fact(uses[1]), snapshot_shared: fact(uses[2]) };
                    facts.use_facts.insert(id.clone(), use_facts);
                } else {
                    facts.use_facts.remove(&id);
                }
                facts.images.push(img);
            }
            let policy = RetirePolicy { max_delete_fraction: fraction, ..policy() };
            let plan = facts.plan(&policy);
            prop_assert!(plan.to_retire.len() as u64 <= budget);
            for retired in &plan.to_retire {
                for img in facts.images.iter().filter(|i| i.image_id == retired.image_id) {
                    prop_assert!(!img.public && img.state == "available", "disabled and pending are kept");
                    prop_assert!(img.deregistration_protection.as_deref().is_none_or(|p| p == "disabled"));
                    prop_assert!(img.tags.is_empty(), "protected or snapshot-on-stop's");
                    prop_assert!(now() - img.creation_date.unwrap() >= Duration::days(90));
                    prop_assert!(img.last_launched_time.is_none_or(|t| now() - t >= Duration::days(90)));
                }
                prop_assert!(!facts.instances.contains(retired.image_id.as_str()));
                prop_assert!(!facts.templates.contains(retired.image_id.as_str()));
                prop_assert_eq!(facts.use_facts.get(retired.image_id.as_str()), Some(&UseFacts::UNUSED));
            }
            let mut rng = seed;
            for i in (1..facts.images.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                facts.images.swap(i, (rng >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(facts.plan(&policy), plan);
        }
    }
}
