//! Retiring old, unused AMIs (`RETIRE_UNUSED_AMIS_AFTER_DAYS`, opt-in) before the sweep: the
//! images are deregistered here, their snapshots then go through every rule of the planner.

use std::collections::{BTreeMap, BTreeSet};

use amiguard::ledger::journal::{JournalEntry, Resource};
use amiguard::ledger::{Condition, Item};
use amiguard::recycle_bin::RecycleBin;
use amiguard::AwsError;

use super::run::Run;
use crate::core::{plan_retirement, ImageFacts, RetireInput, RetirePolicy, UseFacts};
use crate::ports::{Ec2, Records};
use crate::report::{RegionReport, RetireOutcome, RetiredImage};

/// What the retirement step of one region decided and did.
pub(super) struct Retirement {
    /// The images gone (or, in a dry run, that would be): their snapshots become orphans.
    pub retired: Vec<ImageFacts>,
    /// Whether any image was really deregistered (the Recycle Bin may have taken it).
    pub deregistered_any: bool,
}

/// Plans and (unless a dry run) deregisters this region's unused AMIs. A listing it needs that
/// fails skips retirement in the region (`retirement_skipped`); the sweep goes on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn retire<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    images: &[ImageFacts],
    days: u32,
    budget: &mut u64,
    report: &mut RegionReport,
    retired_out: &mut Vec<RetiredImage>,
    warnings: &mut Vec<String>,
) -> Retirement {
    let mut retirement = Retirement { retired: Vec::new(), deregistered_any: false };
    if *budget == 0 {
        // Nothing could be retired: spare EC2 the questions about every old AMI.
        report.retirement_skipped = Some("MAX_DELETIONS was used up before this region's retirement".into());
        return retirement;
    }
    let Some((used_by_instances, used_by_launch_templates)) = in_use(run, ec2, report).await else {
        return retirement;
    };
    let policy = RetirePolicy {
        unused_for: chrono::Duration::days(i64::from(days)),
        protect_tag: run.config.protect_tag.clone(),
        max_delete_fraction: run.config.max_delete_fraction,
    };
    let unknown = BTreeMap::new();
    let input = RetireInput {
        account_id: run.account_id,
        now: run.invocation.now,
        images,
        used_by_instances: &used_by_instances,
        used_by_launch_templates: &used_by_launch_templates,
        use_facts: &unknown,
        budget: *budget,
    };
    // EC2 is asked about use only for the images that pass every other rule.
    let to_check = plan_retirement(&input, &policy).use_to_check;
    let use_facts = use_facts(run, region, ec2, images, &to_check, warnings).await;
    let plan = plan_retirement(&RetireInput { use_facts: &use_facts, ..input }, &policy);
    *budget = budget.saturating_sub(plan.to_retire.len() as u64);
    report.images_kept = plan.kept;
    if let Some(trip) = plan.circuit_breaker {
        report.retirement_skipped = Some(format!("{trip} (images)"));
    }
    let bin = run.recycle_bin(region);
    let untagged = mark_for_recycle_bin(run, region, ec2, &plan.to_retire, &bin, warnings).await;
    for image in plan.to_retire {
        let (outcome, error, entry) = retire_one(run, region, ec2, &image, &bin, &untagged, warnings).await;
        retired_out.push(retired_image(region, &image, &entry, outcome, error));
        retirement.deregistered_any |= outcome == RetireOutcome::Deregistered;
        if matches!(outcome, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone | RetireOutcome::DryRun) {
            retirement.retired.push(image);
        }
    }
    retirement
}

/// The images in use by instances and by launch templates' default and latest versions; `None`
/// (retirement skipped in the region, said in the report) when either could not be listed, when
/// a template's image could not be resolved, or when the deadline came near.
pub(super) async fn in_use<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    ec2: &E,
    report: &mut RegionReport,
) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let used_by_instances = match run.until_cutoff("DescribeInstances", ec2.images_used_by_instances()).await {
        Ok(ids) => ids,
        Err(err) => {
            report.retirement_skipped = Some(format!("listing instances failed: {err}"));
            return None;
        }
    };
    if run.deadline_is_near() {
        report.retirement_skipped = Some("the invocation's deadline was near before listing launch templates".into());
        return None;
    }
    let templates = match run.until_cutoff("DescribeLaunchTemplateVersions", ec2.launch_template_images()).await {
        Ok(templates) => templates,
        Err(err) => {
            report.retirement_skipped = Some(format!("listing launch template versions failed: {err}"));
            return None;
        }
    };
    if !templates.unresolved.is_empty() {
        report.retirement_skipped = Some(format!(
            "cannot tell which AMIs these launch template versions use: {}",
            templates.unresolved.join("; ")
        ));
        return None;
    }
    Some((used_by_instances, templates.image_ids))
}

/// Tags the images to retire for the Recycle Bin's AMI rule first, in one call per 1,000 (a dry
/// run tags nothing), and answers those that could not be tagged: they are not deregistered,
/// since that could not be undone.
pub(super) async fn mark_for_recycle_bin<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    to_retire: &[ImageFacts],
    bin: &RecycleBin,
    warnings: &mut Vec<String>,
) -> BTreeSet<String> {
    if run.dry_run || to_retire.is_empty() {
        return BTreeSet::new();
    }
    let ids: Vec<String> = to_retire.iter().map(|image| image.image_id.to_string()).collect();
    let (marked, failure) = bin.mark(&ids, |ids| run.until_cutoff("CreateTags", ec2.mark_for_recycle_bin(ids))).await;
    if let Some(err) = failure {
        warnings.push(format!(
            "{region}: {} AMI(s) not retired: the Recycle Bin tag could not be written, so their deregistration could not be undone ({err}); the next run tries them again",
            ids.len() - marked.len()
        ));
    }
    let marked: BTreeSet<String> = marked.into_iter().collect();
    ids.into_iter().filter(|id| !marked.contains(id)).collect()
}

/// Retires one image, unless a dry run: only with its Recycle Bin tag written, time left, a ledger
/// that serves, and its journal entry written ahead. Answers how it ended, and its entry.
pub(super) async fn retire_one<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    image: &ImageFacts,
    bin: &RecycleBin,
    untagged: &BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> (RetireOutcome, Option<AwsError>, JournalEntry) {
    let entry = run.journal(region, Resource::Image, &image.image_id, "unused_image");
    // The bin keeps EBS-backed AMIs only: an instance-store one (no snapshots) is promised
    // nothing.
    let entry = if image.snapshot_ids.is_empty() { entry } else { entry.in_recycle_bin(bin) };
    let (outcome, error) = if run.dry_run {
        (RetireOutcome::DryRun, None)
    } else if untagged.contains(image.image_id.as_str()) || run.deadline_is_near() || run.ledger_failure().is_some() {
        // The next run's: not undoable (no Recycle Bin tag), no time left, or the ledger
        // failed in this run (in this region or another), so it could not be remembered.
        (RetireOutcome::LeftForNextRun, None)
    } else if let Err(err) = run.until_cutoff("PutItem", journal_ahead(run, &entry)).await {
        // No deregistration the journal does not hold.
        (RetireOutcome::Failed, Some(err))
    } else {
        deregister(run, region, ec2, &image.image_id, &entry, warnings).await
    };
    (outcome, error, entry)
}

/// Deregisters `image_id`, journaled ahead in `entry`: journals how it ended and, once the image
/// is gone, remembers its deregistration. A ledger write that fails here is a warning.
async fn deregister<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    image_id: &str,
    entry: &JournalEntry,
    warnings: &mut Vec<String>,
) -> (RetireOutcome, Option<AwsError>) {
    let result = match run.until_cutoff("DeregisterImage", ec2.deregister_image(image_id)).await {
        Ok(()) => (RetireOutcome::Deregistered, None),
        Err(err) if err.is_not_found() || err.has_code("InvalidAMIID.Unavailable") => {
            (RetireOutcome::AlreadyGone, None)
        }
        Err(err) => (RetireOutcome::Failed, Some(err)),
    };
    let ended = match &result {
        (RetireOutcome::Deregistered, _) => entry.done(),
        (_, Some(err)) => entry.failed(&err.code, &err.message),
        _ => entry.already_gone(),
    };
    if let Err(err) = run.until_cutoff("PutItem", journal_end(run, ended)).await {
        warnings.push(format!("{region}: the journal entry of {image_id} stays `intended`: {err}"));
    }
    if matches!(result.0, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone) {
        // The AMI's death as amiguard saw it: the next sweeps date its snapshots'
        // grace period from now, not from when they first miss it.
        let remembered = remember_deregistration(run, region, image_id);
        if let Err(err) = run.until_cutoff("PutItem", remembered).await {
            warnings.push(format!(
                "{region}: the deregistration of {image_id} is not in the ledger (its snapshots' grace period will start at the next sweep): {err}"
            ));
        }
    }
    result
}

/// What the report says of one image this run retired (or tried to).
pub(super) fn retired_image(
    region: &str,
    image: &ImageFacts,
    entry: &JournalEntry,
    outcome: RetireOutcome,
    error: Option<AwsError>,
) -> RetiredImage {
    RetiredImage {
        region: region.to_string(),
        image_id: image.image_id.to_string(),
        name: image.name.clone(),
        creation_date: image.creation_date,
        snapshot_ids: image.snapshot_ids.iter().map(ToString::to_string).collect(),
        restorable_until: entry.restorable_until.filter(|_| outcome == RetireOutcome::Deregistered),
        outcome,
        code: error.as_ref().map(|e| e.code.clone()),
        message: error.map(|e| e.message),
    }
}

/// What EC2 says of the use of `image_ids`, asked in order (references for all at once, then
/// each image's launch permissions, then its snapshots' create-volume permissions), each
/// question only for the images every earlier answer left unused. A failed call leaves the
/// fact unknown, which keeps the image; the run goes on with a warning.
async fn use_facts<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    images: &[ImageFacts],
    image_ids: &[String],
    warnings: &mut Vec<String>,
) -> BTreeMap<String, UseFacts> {
    let mut facts: BTreeMap<String, UseFacts> = image_ids.iter().map(|id| (id.clone(), UseFacts::default())).collect();
    if image_ids.is_empty() || run.deadline_is_near() {
        return facts;
    }
    match run.until_cutoff("DescribeImageReferences", ec2.referenced_images(image_ids)).await {
        Ok(referenced) => {
            for (id, fact) in &mut facts {
                fact.referenced = Some(referenced.contains(id));
            }
        }
        Err(err) => {
            warnings.push(format!("{region}: {} AMI(s) kept: DescribeImageReferences failed: {err}", image_ids.len()))
        }
    }
    for (image_id, fact) in &mut facts {
        if fact.referenced != Some(false) {
            continue;
        }
        match run.until_cutoff("DescribeImageAttribute", ec2.is_image_shared(image_id)).await {
            Ok(shared) => fact.shared = Some(shared),
            Err(err) => {
                warnings.push(format!("{region}: {image_id} kept: its launch permissions could not be read: {err}"));
                continue;
            }
        }
        if fact.shared != Some(false) {
            continue;
        }
        // Every copy of the image in the listing: a snapshot any of them maps is asked about.
        let snapshots: BTreeSet<&str> = images
            .iter()
            .filter(|i| i.image_id == image_id.as_str())
            .flat_map(|i| i.snapshot_ids.iter().map(|s| s.as_str()))
            .collect();
        fact.snapshot_shared = Some(false);
        for snapshot_id in snapshots {
            match run.until_cutoff("DescribeSnapshotAttribute", ec2.is_snapshot_shared(snapshot_id)).await {
                Ok(false) => {}
                Ok(true) => {
                    fact.snapshot_shared = Some(true);
                    break;
                }
                Err(err) => {
                    warnings.push(format!(
                        "{region}: {image_id} kept: the create-volume permissions of {snapshot_id} could not be read: {err}"
                    ));
                    fact.snapshot_shared = None;
                    break;
                }
            }
        }
    }
    facts
}

/// Writes `entry` as `intended` before its call; a failure means the call must not be made.
async fn journal_ahead<L: Records>(run: &Run<'_, L>, entry: &JournalEntry) -> Result<(), AwsError> {
    match run.store() {
        Some(store) => {
            store.put(&entry.intended(), &Condition::Always).await.map(|_| ()).inspect_err(|err| run.ledger_broke(err))
        }
        None => Ok(()),
    }
}

async fn remember_deregistration<L: Records>(run: &Run<'_, L>, region: &str, image_id: &str) -> Result<(), AwsError> {
    match run.store() {
        Some(store) => store.record_deregistration(region, image_id, run.invocation.now).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Writes how a journaled call ended.
async fn journal_end<L: Records>(run: &Run<'_, L>, ended: Item) -> Result<(), AwsError> {
    match run.store() {
        Some(store) => store.put(&ended, &Condition::Always).await.map(|_| ()),
        None => Ok(()),
    }
}
