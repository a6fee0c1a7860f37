//! Retiring old, unused AMIs (`RETIRE_UNUSED_AMIS_AFTER_DAYS`, opt-in) before the sweep: the
//! images are deregistered here, their snapshots then go through every rule of the planner.

use std::collections::{BTreeMap, BTreeSet};

use amiguard::ledger::journal::{JournalEntry, Resource};
use amiguard::ledger::{Condition, Item};
use amiguard::AwsError;

use crate::core::{plan_retirement, ImageFacts, RetireInput, RetirePolicy, UseFacts};
use crate::ports::{Ec2, Records};
use crate::report::{RegionReport, RetireOutcome, RetiredImage};
use crate::Run;

/// What the retirement step of one region decided and did.
pub(crate) struct Retirement {
    /// The images gone (or, in a dry run, that would be): their snapshots become orphans.
    pub retired: Vec<ImageFacts>,
    /// Whether any image was really deregistered (the Recycle Bin may have taken it).
    pub deregistered_any: bool,
}

impl<L: Records> Run<'_, L> {
    /// Plans and (unless a dry run) deregisters this region's unused AMIs. A listing it needs that
    /// fails skips retirement in the region (`retirement_skipped`); the sweep goes on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn retire<E: Ec2>(
        &self,
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
        let used_by_instances = match self.until_cutoff("DescribeInstances", ec2.images_used_by_instances()).await {
            Ok(ids) => ids,
            Err(err) => {
                report.retirement_skipped = Some(format!("listing instances failed: {err}"));
                return retirement;
            }
        };
        if self.deadline_is_near() {
            report.retirement_skipped =
                Some("the invocation's deadline was near before listing launch templates".into());
            return retirement;
        }
        let templates = match self.until_cutoff("DescribeLaunchTemplateVersions", ec2.launch_template_images()).await {
            Ok(templates) => templates,
            Err(err) => {
                report.retirement_skipped = Some(format!("listing launch template versions failed: {err}"));
                return retirement;
            }
        };
        if !templates.unresolved.is_empty() {
            report.retirement_skipped = Some(format!(
                "cannot tell which AMIs these launch template versions use: {}",
                templates.unresolved.join("; ")
            ));
            return retirement;
        }
        let policy = RetirePolicy {
            unused_for: chrono::Duration::days(i64::from(days)),
            protect_tag: self.config.protect_tag.clone(),
            max_delete_fraction: self.config.max_delete_fraction,
        };
        let unknown = BTreeMap::new();
        let input = RetireInput {
            account_id: self.account_id,
            now: self.invocation.now,
            images,
            used_by_instances: &used_by_instances,
            used_by_launch_templates: &templates.image_ids,
            use_facts: &unknown,
            budget: *budget,
        };
        // EC2 is asked about use only for the images that pass every other rule.
        let to_check = plan_retirement(&input, &policy).use_to_check;
        let use_facts = self.use_facts(region, ec2, images, &to_check, warnings).await;
        let plan = plan_retirement(&RetireInput { use_facts: &use_facts, ..input }, &policy);
        *budget = budget.saturating_sub(plan.to_retire.len() as u64);
        report.images_kept = plan.kept;
        if let Some(trip) = plan.circuit_breaker {
            report.retirement_skipped = Some(format!("{trip} (images)"));
        }
        // Tagged for the Recycle Bin's AMI rule first, in one call per 1,000 (a dry run tags
        // nothing): an image that could not be tagged is not deregistered, since that could not
        // be undone.
        let bin = self.recycle_bin(region);
        let untagged: BTreeSet<String> = if self.dry_run || plan.to_retire.is_empty() {
            BTreeSet::new()
        } else {
            let ids: Vec<String> = plan.to_retire.iter().map(|image| image.image_id.to_string()).collect();
            let (marked, failure) =
                bin.mark(&ids, |ids| self.until_cutoff("CreateTags", ec2.mark_for_recycle_bin(ids))).await;
            if let Some(err) = failure {
                warnings.push(format!(
                    "{region}: {} AMI(s) not retired: the Recycle Bin tag could not be written, so their deregistration could not be undone ({err}); the next run tries them again",
                    ids.len() - marked.len()
                ));
            }
            let marked: BTreeSet<String> = marked.into_iter().collect();
            ids.into_iter().filter(|id| !marked.contains(id)).collect()
        };
        for image in plan.to_retire {
            let entry = self.journal(region, Resource::Image, &image.image_id, "unused_image");
            // The bin keeps EBS-backed AMIs only: an instance-store one (no snapshots) is promised
            // nothing.
            let entry = if image.snapshot_ids.is_empty() { entry } else { entry.in_recycle_bin(&bin) };
            let (outcome, error) = if self.dry_run {
                (RetireOutcome::DryRun, None)
            } else if untagged.contains(image.image_id.as_str())
                || self.deadline_is_near()
                || self.ledger_failure().is_some()
            {
                // The next run's: not undoable (no Recycle Bin tag), no time left, or the ledger
                // failed in this run (in this region or another), so it could not be remembered.
                (RetireOutcome::LeftForNextRun, None)
            } else if let Err(err) = self.until_cutoff("PutItem", self.journal_ahead(&entry)).await {
                // No deregistration the journal does not hold.
                (RetireOutcome::Failed, Some(err))
            } else {
                let result = match self.until_cutoff("DeregisterImage", ec2.deregister_image(&image.image_id)).await {
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
                if let Err(err) = self.until_cutoff("PutItem", self.journal_end(ended)).await {
                    warnings.push(format!("{region}: the journal entry of {} stays `intended`: {err}", image.image_id));
                }
                if matches!(result.0, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone) {
                    // The AMI's death as amiguard saw it: the next sweeps date its snapshots'
                    // grace period from now, not from when they first miss it.
                    let remembered = self.remember_deregistration(region, &image.image_id);
                    if let Err(err) = self.until_cutoff("PutItem", remembered).await {
                        warnings.push(format!(
                            "{region}: the deregistration of {} is not in the ledger (its snapshots' grace period will start at the next sweep): {err}",
                            image.image_id
                        ));
                    }
                }
                result
            };
            retired_out.push(RetiredImage {
                region: region.to_string(),
                image_id: image.image_id.to_string(),
                name: image.name.clone(),
                creation_date: image.creation_date,
                snapshot_ids: image.snapshot_ids.iter().map(ToString::to_string).collect(),
                restorable_until: entry.restorable_until.filter(|_| outcome == RetireOutcome::Deregistered),
                outcome,
                code: error.as_ref().map(|e| e.code.clone()),
                message: error.map(|e| e.message),
            });
            retirement.deregistered_any |= outcome == RetireOutcome::Deregistered;
            if matches!(outcome, RetireOutcome::Deregistered | RetireOutcome::AlreadyGone | RetireOutcome::DryRun) {
                retirement.retired.push(image);
            }
        }
        retirement
    }

    /// What EC2 says of the use of `image_ids`, asked in order (references for all at once, then
    /// each image's launch permissions, then its snapshots' create-volume permissions), each
    /// question only for the images every earlier answer left unused. A failed call leaves the
    /// fact unknown, which keeps the image; the run goes on with a warning.
    async fn use_facts<E: Ec2>(
        &self,
        region: &str,
        ec2: &E,
        images: &[ImageFacts],
        image_ids: &[String],
        warnings: &mut Vec<String>,
    ) -> BTreeMap<String, UseFacts> {
        let mut facts: BTreeMap<String, UseFacts> =
            image_ids.iter().map(|id| (id.clone(), UseFacts::default())).collect();
        if image_ids.is_empty() || self.deadline_is_near() {
            return facts;
        }
        match self.until_cutoff("DescribeImageReferences", ec2.referenced_images(image_ids)).await {
            Ok(referenced) => {
                for (id, fact) in &mut facts {
                    fact.referenced = Some(referenced.contains(id));
                }
            }
            Err(err) => warnings
                .push(format!("{region}: {} AMI(s) kept: DescribeImageReferences failed: {err}", image_ids.len())),
        }
        for (image_id, fact) in &mut facts {
            if fact.referenced != Some(false) {
                continue;
            }
            match self.until_cutoff("DescribeImageAttribute", ec2.is_image_shared(image_id)).await {
                Ok(shared) => fact.shared = Some(shared),
                Err(err) => {
                    warnings
                        .push(format!("{region}: {image_id} kept: its launch permissions could not be read: {err}"));
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
                match self.until_cutoff("DescribeSnapshotAttribute", ec2.is_snapshot_shared(snapshot_id)).await {
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
    async fn journal_ahead(&self, entry: &JournalEntry) -> Result<(), AwsError> {
        match self.store() {
            Some(store) => store
                .put(&entry.intended(), &Condition::Always)
                .await
                .map(|_| ())
                .inspect_err(|err| self.ledger_broke(err)),
            None => Ok(()),
        }
    }

    async fn remember_deregistration(&self, region: &str, image_id: &str) -> Result<(), AwsError> {
        match self.store() {
            Some(store) => store.record_deregistration(region, image_id, self.invocation.now).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Writes how a journaled call ended.
    async fn journal_end(&self, ended: Item) -> Result<(), AwsError> {
        match self.store() {
            Some(store) => store.put(&ended, &Condition::Always).await.map(|_| ()),
            None => Ok(()),
        }
    }
}
