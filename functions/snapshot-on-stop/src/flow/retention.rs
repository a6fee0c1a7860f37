//! Retention: keep the newest `KEEP_LAST` available images of the instance, retire the rest with
//! their snapshots and launch-template versions. The candidates are the ledger's records of what
//! snapshot-on-stop made (that still exist in EC2), never a tag query: an AMI the ledger does not
//! hold is never retired, whatever its tags. A tag can only keep: the protect tag on an image or
//! on one of its snapshots keeps the image (and it does not count in `KEEP_LAST`).

use std::collections::HashMap;

use amiguard::invocation::Invocation;
use amiguard::ledger::journal::{JournalEntry, Resource};
use amiguard::recycle_bin::{self, RecycleBin};

use super::session::Session;
use crate::config::Config;
use crate::core::naming::parse_time;
use crate::core::retention::images_to_retire;
use crate::core::{ImageRecord, InstanceRecords, LaunchTemplateVersion, MadeImage, ManagedImage};
use crate::error::Error;
use crate::ports::{Ec2, Records};
use crate::report::{KeptSnapshot, Report};
use crate::FUNCTION;

/// How many images retention keeps, the tag that keeps one whatever the count, and the Recycle
/// Bin that keeps what it retires restorable.
pub struct Keep<'a> {
    /// `KEEP_LAST`: available, unprotected images.
    pub last: usize,
    /// `PROTECT_TAG`.
    pub protect_tag: &'a str,
    /// `RECYCLE_BIN_RETENTION_DAYS`.
    pub recycle_bin: RecycleBin,
}

impl<'a> Keep<'a> {
    /// The newest `last` images, by `config`'s tag and Recycle Bin.
    pub fn newest(last: usize, config: &'a Config) -> Self {
        Self { last, protect_tag: &config.protect_tag, recycle_bin: config.recycle_bin }
    }
}

/// The recorded images of the instance that still exist in EC2, as retention orders them, with
/// what EC2 says of each (its state, the protect tag on it or its snapshots). A snapshot is a
/// candidate for deletion only when the ledger recorded it for the image *and* the image maps it
/// now. Also answers the records whose image is gone (deregistered by someone else).
pub async fn recorded_images(
    ec2: &impl Ec2,
    records: &InstanceRecords,
    protect_tag: &str,
) -> Result<(Vec<ManagedImage>, Vec<MadeImage>), Error> {
    let live: Vec<&MadeImage> = records.images.iter().filter(|r| r.is_live()).collect();
    let ids: Vec<String> = live.iter().filter_map(|r| r.image_id.clone()).collect();
    let existing: HashMap<String, ImageRecord> = if ids.is_empty() {
        HashMap::new()
    } else {
        ec2.describe_images(&ids).await?.into_iter().map(|i| (i.image_id.clone(), i)).collect()
    };
    let mut managed = Vec::new();
    let mut gone = Vec::new();
    for record in live {
        let Some(image) = record.image_id.as_ref().and_then(|id| existing.get(id)) else {
            gone.push(record.clone());
            continue;
        };
        managed.push(ManagedImage {
            image_id: image.image_id.clone(),
            stopped_at: Some(record.stopped_at),
            creation_date: image.creation_date.as_deref().and_then(parse_time),
            snapshot_ids: record.snapshot_ids.iter().filter(|s| image.snapshot_ids.contains(s)).cloned().collect(),
            available: image.state.as_deref() == Some("available"),
            protected: image.tags.iter().any(|t| t.key.eq_ignore_ascii_case(protect_tag)),
            failed: image.has_failed().then(|| image.state_reason.clone().unwrap_or_default()),
            deregistration_protected: image.is_deregistration_protected(),
            deregistration_protection: image.deregistration_protection.clone(),
        });
    }
    // Every snapshot the images map now, not only the recorded ones: a protect tag on any keeps
    // its image. Asked only when retention could retire something.
    if managed.iter().any(|i| i.available && !i.protected) {
        let mapped: Vec<String> = managed
            .iter()
            .filter_map(|i| existing.get(&i.image_id))
            .flat_map(|image| image.snapshot_ids.iter().cloned())
            .collect();
        let protected = ec2.protected_snapshots(&mapped, protect_tag).await?;
        for image in &mut managed {
            let snapshots = existing.get(&image.image_id).map(|i| i.snapshot_ids.as_slice()).unwrap_or_default();
            image.protected |= snapshots.iter().any(|s| protected.contains(s));
        }
    }
    Ok((managed, gone))
}

/// What a dry run would retire.
pub async fn preview(
    ec2: &impl Ec2,
    records: &InstanceRecords,
    keep: &Keep<'_>,
    current: Option<&str>,
) -> Result<Vec<String>, Error> {
    let (managed, _) = recorded_images(ec2, records, keep.protect_tag).await?;
    // The image this stop would make is still pending when retention runs (on AWS, for
    // minutes): like the real stop, the preview does not count it.
    Ok(images_to_retire(&managed, keep.last, current.unwrap_or_default())
        .into_iter()
        .map(|i| i.image_id.clone())
        .collect())
}

/// Retires what the newest `keep_last` of `managed` (the instance's recorded images, as EC2 says
/// they are now) leave over, except the images in `never_retire` (this stop's image, the one the
/// template's default launches), recording each retirement and journaling each deletion. Runs
/// only with a healthy ledger.
pub async fn retire<L: Records>(
    ec2: &impl Ec2,
    session: &mut Session<'_, L>,
    keep: &Keep<'_>,
    managed: &[ManagedImage],
    never_retire: &[&str],
    report: &mut Report,
    invocation: &Invocation,
) -> Result<(), Error> {
    let region = session.region().to_string();
    let retiring: Vec<ManagedImage> = images_to_retire(managed, keep.last, "")
        .into_iter()
        .filter(|i| !never_retire.contains(&i.image_id.as_str()))
        .cloned()
        .collect();
    let journal = |resource, resource_id: &str| {
        JournalEntry::new(
            &invocation.request_id,
            FUNCTION,
            &region,
            resource,
            resource_id,
            "retention",
            invocation.clock(),
        )
    };
    // Tagged for the Recycle Bin's rules first, images and snapshots in one call per 1,000: an
    // image is retired only when it and all its snapshots carry the tag (otherwise retiring it
    // could not be undone; the next stop tries again).
    let ids: Vec<String> =
        retiring.iter().flat_map(|i| std::iter::once(&i.image_id).chain(&i.snapshot_ids)).cloned().collect();
    let (marked, failure) =
        keep.recycle_bin.mark(&ids, |ids| async move { ec2.create_tags(&ids, &[RecycleBin::tag()]).await }).await;
    if let Some(err) = failure {
        report.warnings.push(format!(
            "retention retired only what the Recycle Bin tag could be written on ({err}): the rest is retired by a later stop"
        ));
    }
    let marked: std::collections::HashSet<String> = marked.into_iter().collect();
    let retiring = retiring
        .into_iter()
        .filter(|i| marked.contains(&i.image_id) && i.snapshot_ids.iter().all(|s| marked.contains(s)));
    for image in retiring {
        // Journaled ahead: nothing is deregistered or deleted that the ledger does not hold.
        let image_entry = journal(Resource::Image, &image.image_id).in_recycle_bin(&keep.recycle_bin);
        let snapshot_entries: Vec<JournalEntry> = image
            .snapshot_ids
            .iter()
            .map(|id| journal(Resource::Snapshot, id).with_source(&image.image_id).in_recycle_bin(&keep.recycle_bin))
            .collect();
        let ahead = std::iter::once(&image_entry).chain(&snapshot_entries).map(JournalEntry::intended).collect();
        if !session.journal_ahead(ahead).await {
            break;
        }
        let mut ended = Vec::new();
        // What this delivery retired is restorable at least until the earliest time of what
        // AWS confirmed gone.
        match ec2.deregister_image(&image.image_id).await {
            Ok(()) => {
                report.restorable_until = recycle_bin::earliest(report.restorable_until, image_entry.restorable_until);
                ended.push(image_entry.done());
            }
            // Gone already (deregistered by someone): its snapshots still need deleting.
            Err(err) if err.is_not_found() => ended.push(image_entry.already_gone()),
            Err(err) => {
                session.journal_end(vec![image_entry.failed(&err.code, &err.message)]).await;
                return Err(err.into());
            }
        }
        report.retired_images.push(image.image_id.clone());
        for (snapshot_id, entry) in image.snapshot_ids.iter().zip(&snapshot_entries) {
            match ec2.delete_snapshot(snapshot_id).await {
                Ok(()) => {
                    report.restorable_until = recycle_bin::earliest(report.restorable_until, entry.restorable_until);
                    report.deleted_snapshots.push(snapshot_id.clone());
                    ended.push(entry.done());
                }
                Err(err) if err.is_not_found() => ended.push(entry.already_gone()),
                Err(err) if err.has_code("InvalidSnapshot.InUse") => {
                    ended.push(entry.failed(&err.code, &err.message));
                    report.kept_snapshots.push(KeptSnapshot { snapshot_id: snapshot_id.clone(), code: err.code })
                }
                Err(err) => {
                    ended.push(entry.failed(&err.code, &err.message));
                    session.journal_end(ended).await;
                    return Err(err.into());
                }
            }
        }
        if let Some(record) =
            session.records.images.iter().find(|r| r.image_id.as_deref() == Some(&image.image_id)).cloned()
        {
            session.record(&MadeImage { retired_at: Some(invocation.now), ..record }).await;
        }
        session.journal_end(ended).await;
    }
    Ok(())
}

/// Deletes the launch-template versions that launch a retired image. A failure loses nothing
/// (the version only points at a deregistered image), so it is a warning, not an error.
pub async fn remove_retired_template_versions(ec2: &impl Ec2, versions: &[LaunchTemplateVersion], report: &mut Report) {
    let Some(template) = report.launch_template.clone() else { return };
    // `template.version` is the default now (it launches the newest available image): never stale.
    let stale: Vec<i64> = versions
        .iter()
        .filter(|v| v.version != template.version)
        .filter(|v| v.image_id.as_ref().is_some_and(|id| report.retired_images.contains(id)))
        .map(|v| v.version)
        .collect();
    if stale.is_empty() {
        return;
    }
    if let Err(err) = ec2.delete_launch_template_versions(&template.id, &stale).await {
        report.warnings.push(format!("launch-template versions {stale:?} of {} not deleted: {err}", template.id));
    }
}
