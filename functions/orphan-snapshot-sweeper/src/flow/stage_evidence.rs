//! The evidence of staged retirement, asked of EC2 for the images that can still advance or are
//! in a stage: in-account references, launch permissions, snapshots' sharing, and the usage
//! reports of the shared ones with the entries of those available. A failed call leaves its fact
//! unknown (the image waits or is kept) with a warning. Also the records the stages forget and
//! the images they deregister (tagged for the Recycle Bin first).

use std::collections::{BTreeMap, BTreeSet};

use super::retirement::mark_for_recycle_bin;
use super::stages::{in_stage, Region};
use crate::core::{Evidence, ImageFacts, Stage, StageRecord, StagedImage, Verdict};
use crate::ports::{Ec2, Records};

impl<E: Ec2, L: Records> Region<'_, '_, E, L> {
    /// The images about to be deregistered, with their Recycle Bin tag written first.
    pub(super) async fn deregistering<'i>(
        &self,
        decided: &[(StagedImage, Verdict)],
        images: &'i [ImageFacts],
        warnings: &mut Vec<String>,
    ) -> Deregistering<'i> {
        let ids: BTreeSet<&str> = decided
            .iter()
            .filter(|(_, v)| *v == Verdict::Advance(Stage::Deregistered))
            .map(|(i, _)| i.image_id.as_str())
            .collect();
        let facts: BTreeMap<&str, &ImageFacts> =
            images.iter().filter(|i| ids.contains(i.image_id.as_str())).map(|i| (i.image_id.as_str(), i)).collect();
        let bin = self.run.recycle_bin(self.region);
        let listed: Vec<ImageFacts> = facts.values().map(|i| (*i).clone()).collect();
        let untagged = mark_for_recycle_bin(self.run, self.region, self.ec2, &listed, &bin, warnings).await;
        Deregistering { facts, bin, untagged }
    }

    /// Forgets the records of the candidates that are ones no more (and deletes the report asked
    /// for them, an id amiguard's own CreateImageUsageReport answered): a later candidacy is
    /// dated anew, and no report made before it counts.
    pub(super) async fn forget_candidates(
        &self,
        ids: &[String],
        records: &BTreeMap<String, StageRecord>,
        warnings: &mut Vec<String>,
    ) {
        let Some(store) = self.run.writable_store() else { return };
        for id in ids {
            if self.run.deadline_is_near() || self.run.ledger_failure().is_some() {
                return;
            }
            if let Some(report_id) = records.get(id).and_then(|r| r.report_id.as_deref()) {
                let deleted = self
                    .run
                    .until_cutoff("DeleteImageUsageReport", self.ec2.delete_image_usage_report(report_id))
                    .await;
                if let Err(err) = deleted.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) }) {
                    warnings.push(format!("{}: usage report {report_id} could not be deleted: {err}", self.region));
                    continue;
                }
            }
            let forgotten = store.forget_retirement(self.region, id, self.now());
            if let Err(err) = self.run.until_cutoff("PutItem", forgotten).await {
                self.run.ledger_broke(&err);
                warnings.push(format!("{}: the retirement record of {id} could not be forgotten: {err}", self.region));
                return;
            }
        }
    }

    /// Asks EC2 what the images `to_ask` are used by, in order, each question for the images it
    /// can still matter to: references, launch permissions, snapshots' sharing (candidates only),
    /// then the usage reports of the shared ones and the entries of those available. A failed call
    /// leaves its fact unknown (the image waits or is kept) with a warning.
    pub(super) async fn gather(
        &self,
        to_ask: &[String],
        staged: &[StagedImage],
        records: &BTreeMap<String, StageRecord>,
        evidence: &mut BTreeMap<String, Evidence>,
        warnings: &mut Vec<String>,
    ) {
        let (run, region, ec2) = (self.run, self.region, self.ec2);
        if to_ask.is_empty() || run.deadline_is_near() {
            return;
        }
        match run.until_cutoff("DescribeImageReferences", ec2.referenced_images(to_ask)).await {
            Ok(referenced) => {
                to_ask.iter().for_each(|id| set(evidence, id, |e| e.referenced = Some(referenced.contains(id))))
            }
            Err(err) => {
                warnings.push(format!("{region}: {} AMI(s) wait: DescribeImageReferences failed: {err}", to_ask.len()))
            }
        }
        let mut shared = Vec::new();
        for id in to_ask {
            let record = records.get(id).filter(|r| r.ended.is_none());
            match run.until_cutoff("DescribeImageAttribute", ec2.launch_permissions(id)).await {
                Ok(permissions) => set(evidence, id, |e| e.permissions = Some(permissions)),
                Err(err) => {
                    warnings.push(format!("{region}: {id} waits: its launch permissions could not be read: {err}"))
                }
            }
            // The stage in effect (an intended DisableImage EC2 shows counts): a disabled image's
            // permissions are emptied by EC2, its recorded ones say who may use it.
            let image = staged.iter().find(|i| &i.image_id == id);
            let disabled = record.zip(image).is_some_and(|(r, i)| r.effective(i).0 >= Stage::Disabled);
            let judged =
                if disabled { record.and_then(|r| r.permissions.clone()) } else { evidence[id].permissions.clone() };
            if judged.as_ref().is_some_and(|p| p.is_shared() && !p.public) {
                shared.push(id.clone());
            }
            if !in_stage(record) {
                let snapshots = staged.iter().filter(|i| &i.image_id == id).flat_map(|i| i.snapshot_ids.clone());
                let answer = self.any_snapshot_shared(snapshots.collect(), id, warnings).await;
                set(evidence, id, |e| e.snapshot_shared = answer);
            }
        }
        self.read_reports(&shared, evidence, warnings).await;
    }

    async fn any_snapshot_shared(
        &self,
        snapshots: Vec<String>,
        image_id: &str,
        warnings: &mut Vec<String>,
    ) -> Option<bool> {
        for snapshot_id in snapshots {
            match self.run.until_cutoff("DescribeSnapshotAttribute", self.ec2.is_snapshot_shared(&snapshot_id)).await {
                Ok(false) => {}
                Ok(true) => return Some(true),
                Err(err) => {
                    let region = self.region;
                    warnings.push(format!("{region}: {image_id} kept: the create-volume permissions of {snapshot_id} could not be read: {err}"));
                    return None;
                }
            }
        }
        Some(false)
    }

    /// The usage reports of `image_ids`, and the entries of each available, unexpired one.
    async fn read_reports(
        &self,
        image_ids: &[String],
        evidence: &mut BTreeMap<String, Evidence>,
        warnings: &mut Vec<String>,
    ) {
        if image_ids.is_empty() {
            return;
        }
        let (run, region, ec2) = (self.run, self.region, self.ec2);
        let reports = match run.until_cutoff("DescribeImageUsageReports", ec2.image_usage_reports(image_ids)).await {
            Ok(reports) => reports,
            Err(err) => {
                warnings.push(format!(
                    "{region}: {} shared AMI(s) wait: DescribeImageUsageReports failed: {err}",
                    image_ids.len()
                ));
                return;
            }
        };
        for id in image_ids {
            set(evidence, id, |e| e.reports_read = true);
        }
        for mut report in reports {
            if report.state == "available" && report.expires.is_some_and(|at| at > self.now()) {
                let entries = run
                    .until_cutoff("DescribeImageUsageReportEntries", ec2.image_usage_report_entries(&report.report_id));
                match entries.await {
                    Ok(entries) => report.entries = Some(entries),
                    Err(err) => warnings.push(format!(
                        "{region}: the entries of usage report {} could not be read: {err}",
                        report.report_id
                    )),
                }
            }
            if let Some(e) = evidence.get_mut(&report.image_id) {
                e.reports.push(report);
            }
        }
    }
}

fn set(evidence: &mut BTreeMap<String, Evidence>, id: &str, change: impl FnOnce(&mut Evidence)) {
    if let Some(e) = evidence.get_mut(id) {
        change(e);
    }
}

/// The images this run deregisters, tagged for the Recycle Bin first (what could not be tagged
/// is not deregistered).
pub(super) struct Deregistering<'a> {
    pub facts: BTreeMap<&'a str, &'a ImageFacts>,
    pub bin: amiguard::recycle_bin::RecycleBin,
    pub untagged: BTreeSet<String>,
}
