//! The evidence of staged retirement, asked of EC2 for the images that can still advance or are
//! in a stage: in-account references, launch permissions, snapshots' sharing, and the usage
//! reports of the shared ones with the entries of those available. A failed call leaves its fact
//! unknown (the image waits or is kept) with a warning.

use std::collections::BTreeMap;

use super::stages::{in_stage, Region};
use crate::core::{Evidence, Stage, StageRecord, StagedImage};
use crate::ports::{Ec2, Records};

impl<E: Ec2, L: Records> Region<'_, '_, E, L> {
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
