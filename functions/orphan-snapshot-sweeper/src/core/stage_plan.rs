//! One region's staged retirement: image families (the newest `RETIRE_KEEP_NEWEST` of each are
//! kept), each image's [`Verdict`], and the bounds on what advances: `MAX_DELETIONS` and the
//! circuit breaker, as today's retirement has them. Pure.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::planner::{exceeds_fraction, CircuitBreakerTrip};
use super::retire::ImageKeepReason;
use super::stages::{decide, Evidence, Stage, StagePolicy, StageRecord, StagedImage, Verdict, IMAGE_BUILDER_TAG};
use amiguard::tags;

/// How images are grouped into families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRule {
    /// `RETIRE_FAMILY_TAG`: the tag whose value names an image's family (unset: none by tag).
    pub tag: Option<String>,
    /// `RETIRE_KEEP_NEWEST`: the images of each family never retired, newest first.
    pub keep_newest: u32,
    /// `RETIRE_IMAGE_BUILDER_IMAGES`: Image Builder's images are grouped by recipe only when
    /// amiguard retires them.
    pub image_builder_images: bool,
}

/// The family of an image: Image Builder's recipe (its `Ec2ImageBuilderArn` without the version
/// and build: `arn:…:image/<recipe>`), else the value of `RETIRE_FAMILY_TAG`; `None`: no family.
pub fn family_of(image: &StagedImage, rule: &FamilyRule) -> Option<String> {
    if let Some(arn) = tags::value(&image.tags, IMAGE_BUILDER_TAG) {
        if !rule.image_builder_images {
            return None;
        }
        let recipe: Vec<&str> = arn.splitn(3, '/').take(2).collect();
        return Some(format!("imagebuilder:{}", recipe.join("/")));
    }
    let tag = rule.tag.as_deref()?;
    tags::value(&image.tags, tag).map(|value| format!("tag:{value}"))
}

/// The ids of the newest `keep_newest` images of each family (by creation date, then id), the
/// images that failed left out. A family tag only ever keeps: it never makes an image retire.
pub fn newest_of_families(images: &[StagedImage], rule: &FamilyRule) -> BTreeSet<String> {
    let mut families: BTreeMap<String, Vec<&StagedImage>> = BTreeMap::new();
    for image in images.iter().filter(|i| i.state != "failed" && i.state != "error") {
        if let Some(family) = family_of(image, rule) {
            families.entry(family).or_default().push(image);
        }
    }
    let keep = usize::try_from(rule.keep_newest).unwrap_or(usize::MAX);
    families
        .into_values()
        .flat_map(|mut members| {
            // An unknown creation date sorts newest: kept rather than retired.
            members.sort_by(|a, b| {
                (b.creation_date.is_none(), b.creation_date, &b.image_id).cmp(&(
                    a.creation_date.is_none(),
                    a.creation_date,
                    &a.image_id,
                ))
            });
            members.into_iter().take(keep).map(|i| i.image_id.clone())
        })
        .collect()
}

/// The input of a region's staged retirement.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    pub now: DateTime<Utc>,
    pub images: &'a [StagedImage],
    pub records: &'a BTreeMap<String, StageRecord>,
    /// This run's evidence per image (an image without any: nothing known, it is kept).
    pub evidence: &'a BTreeMap<String, Evidence>,
    /// How many stages this region may still take (what is left of `MAX_DELETIONS`).
    pub budget: u64,
    pub max_delete_fraction: f64,
}

/// What a region's staged retirement decided.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    /// Every image with a verdict other than `Keep`, oldest first, with that verdict.
    pub decided: Vec<(StagedImage, Verdict)>,
    pub kept: BTreeMap<ImageKeepReason, u64>,
    /// The images kept while the ledger holds them as candidates (no stage taken, none intended,
    /// not ended), for a reason other than a fact not known: candidates no more, their record
    /// (and the report asked for them) forgotten, so that a later candidacy is dated anew.
    pub no_longer_candidates: Vec<String>,
    /// The images kept only because what EC2 says of their use is not asked yet: ask, then plan again.
    pub to_ask: BTreeSet<String>,
    pub circuit_breaker: Option<CircuitBreakerTrip>,
}

/// Each image's verdict; then the advances bounded by the budget (oldest first) and the
/// circuit breaker (more advances than `max_delete_fraction` of the region's images: none).
pub fn plan_stages(input: &StageInput<'_>, policy: &StagePolicy, families: &FamilyRule) -> StagePlan {
    let newest = newest_of_families(input.images, families);
    let mut plan = StagePlan {
        decided: Vec::new(),
        kept: BTreeMap::new(),
        no_longer_candidates: Vec::new(),
        to_ask: BTreeSet::new(),
        circuit_breaker: None,
    };
    let unknown = Evidence::default();
    let mut images: Vec<&StagedImage> = input.images.iter().collect();
    images.sort_by(|a, b| (a.creation_date, &a.image_id).cmp(&(b.creation_date, &b.image_id)));
    images.dedup_by(|a, b| a.image_id == b.image_id);
    for image in images {
        let evidence = input.evidence.get(&image.image_id).unwrap_or(&unknown);
        let record = input.records.get(&image.image_id);
        match decide(image, record, evidence, newest.contains(&image.image_id), policy, input.now) {
            Verdict::Keep(reason) => {
                *plan.kept.entry(reason).or_default() += 1;
                if reason == ImageKeepReason::ReferencesUnknown {
                    plan.to_ask.insert(image.image_id.clone());
                }
                let unknown = matches!(
                    reason,
                    ImageKeepReason::ReferencesUnknown
                        | ImageKeepReason::SharingUnknown
                        | ImageKeepReason::SnapshotSharingUnknown
                );
                let candidate =
                    record.is_some_and(|r| r.ended.is_none() && r.stage == Stage::Active && r.intended.is_none());
                if candidate && !unknown {
                    plan.no_longer_candidates.push(image.image_id.clone());
                }
            }
            verdict => plan.decided.push((image.clone(), verdict)),
        }
    }
    let advances = plan.decided.iter().filter(|(_, v)| matches!(v, Verdict::Advance(_))).count() as u64;
    let own_images = input.images.len() as u64;
    let held = if exceeds_fraction(advances, own_images, input.max_delete_fraction) {
        plan.circuit_breaker = Some(CircuitBreakerTrip {
            orphans: advances,
            own_snapshots: own_images,
            max_fraction: input.max_delete_fraction,
        });
        Some("the circuit breaker (MAX_DELETE_FRACTION of the region's images)")
    } else {
        None
    };
    let mut budget = input.budget;
    for (_, verdict) in &mut plan.decided {
        if !matches!(verdict, Verdict::Advance(_)) {
            continue;
        }
        let why = match held {
            Some(why) => why,
            None if budget == 0 => "MAX_DELETIONS: the next run's",
            None => {
                budget -= 1;
                continue;
            }
        };
        *verdict = Verdict::Wait { waiting_for: why.to_string(), next_at: None, request_report: false };
    }
    plan
}
