//! Deleting a region's orphans: tagged for the Recycle Bin's rule a thousand at a time, then
//! deleted with bounded concurrency, chunk by chunk, each chunk journaled in the ledger before its
//! deletions start.

use amiguard::ledger::journal::{JournalEntry, Resource};
use amiguard::ledger::Item;
use amiguard::recycle_bin;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use std::collections::HashSet;

use super::run::Run;
use crate::core::{Id, Orphan};
use crate::ports::{Ec2, Records};
use crate::report::{FailedDeletion, RegionReport};

/// Deletions in flight at once per region. The SDK's adaptive retry slows them further when
/// EC2 throttles.
pub const DELETE_CONCURRENCY: usize = 8;

/// Deletions journaled together (four BatchWriteItem calls).
const JOURNAL_CHUNK: usize = 100;

/// What deleting one snapshot came to.
enum Deletion {
    Deleted,
    AlreadyGone,
    Failed(FailedDeletion),
    NotStarted,
}

/// Deletes `orphans`: tagged for the Recycle Bin (with a rule in the region) a thousand at a
/// time, then chunk by chunk. Each chunk's journal entries are written *before* its
/// deletions start (a write-ahead journal: nothing is deleted that the ledger does not know
/// of), then corrected for the ones that did not happen. A deletion not started when the
/// deadline is near is not started at all; once the journal cannot be written, no further
/// deletion starts in the run. Answers the journal entries of the deletions AWS confirmed: what
/// each freed is known only once the region's deletions are done (`savings::journal` writes it).
pub(super) async fn delete<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    orphans: &[Orphan],
    recorded: &hashbrown::HashMap<Id, DateTime<Utc>>,
    report: &mut RegionReport,
    warnings: &mut Vec<String>,
) -> Vec<JournalEntry> {
    let mut done = Vec::new();
    let bin = run.recycle_bin(region);
    for batch in orphans.chunks(recycle_bin::CREATE_TAGS_MAX_IDS) {
        if !may_go_on_deleting(run, report) {
            report.left_for_next_run.extend(batch.iter().map(|o| o.snapshot_id.to_string()));
            continue;
        }
        // Tagged for the Recycle Bin's rule first (one call per 1,000): a snapshot that could
        // not be tagged is not deleted, since its deletion could not be undone.
        let ids: Vec<String> = batch.iter().map(|o| o.snapshot_id.to_string()).collect();
        let (marked, failure) =
            bin.mark(&ids, |ids| run.until_cutoff("CreateTags", ec2.mark_for_recycle_bin(ids))).await;
        let marked: HashSet<String> = marked.into_iter().collect();
        if let Some(err) = failure {
            warnings.push(format!(
                "{region}: {} snapshot(s) not deleted: the Recycle Bin tag could not be written, so their deletion could not be undone ({err}); the next run tries them again",
                ids.len() - marked.len()
            ));
            report.left_for_next_run.extend(ids.iter().filter(|id| !marked.contains(id.as_str())).cloned());
        }
        let marked: Vec<&Orphan> = batch.iter().filter(|o| marked.contains(o.snapshot_id.as_str())).collect();
        for chunk in marked.chunks(JOURNAL_CHUNK) {
            if !may_go_on_deleting(run, report) {
                report.left_for_next_run.extend(chunk.iter().map(|o| o.snapshot_id.to_string()));
                continue;
            }
            done.extend(delete_chunk(run, region, ec2, chunk, recorded, report, warnings).await);
        }
    }
    report.deleted.sort();
    report.already_gone.sort();
    report.failed.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    report.left_for_next_run.sort();
    done
}

/// Whether another deletion may start in the region: not once a ledger failure (in this
/// region or another) or an abort stopped it, nor near the deadline.
fn may_go_on_deleting<L: Records>(run: &Run<'_, L>, report: &mut RegionReport) -> bool {
    if let (Some(err), None) = (run.ledger_failure(), &report.aborted) {
        report.aborted = Some(format!("the ledger failed in this run ({err}): nothing more deleted in this region"));
    }
    !run.deletion_deadline_is_near() && report.aborted.is_none()
}

/// Journals `chunk` ahead, deletes it, and journals how each deletion ended; answers the entries
/// of the deletions AWS confirmed.
async fn delete_chunk<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    region: &str,
    ec2: &E,
    chunk: &[&Orphan],
    recorded: &hashbrown::HashMap<Id, DateTime<Utc>>,
    report: &mut RegionReport,
    warnings: &mut Vec<String>,
) -> Vec<JournalEntry> {
    // One entry per deletion, dated before its call: its `restorable_until` is then a lower
    // bound, never a promise a few seconds too long.
    let entries: Vec<(&Orphan, JournalEntry)> =
        chunk.iter().map(|orphan| (*orphan, journal_entry(run, region, orphan))).collect();
    if let Some(store) = run.store() {
        let ahead: Vec<_> = entries.iter().map(|(_, entry)| entry.intended()).collect();
        if let Err(err) = run.until_cutoff("BatchWriteItem", store.write_batch(ahead, Vec::new())).await {
            report.aborted = Some(if run.deletion_deadline_is_near() {
                // Cut by the deadline, not refused by the ledger: other regions go on.
                format!("the invocation's deadline came while writing the journal: {err}")
            } else {
                run.ledger_broke(&err);
                format!("writing the journal to the ledger failed, nothing more deleted in this region: {err}")
            });
            report.left_for_next_run.extend(chunk.iter().map(|o| o.snapshot_id.to_string()));
            return Vec::new();
        }
    }
    let outcomes: Vec<(&Orphan, &JournalEntry, Deletion)> = stream::iter(&entries)
        .map(|(orphan, entry)| async move { (*orphan, entry, delete_one(run, ec2, orphan).await) })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    let (ended, removed, done) = settle(run, region, outcomes, recorded, report);
    if let Some(store) = run.store() {
        if let Err(err) = run.before_deadline(store.write_batch(ended, removed)).await {
            run.ledger_broke(&err);
            report.aborted = Some(format!(
                "completing the journal in the ledger failed, nothing more deleted in this region: {err}"
            ));
            warnings.push(format!("{region}: some journal entries of this run stay `intended`: {err}"));
        }
    }
    done
}

/// Reports how each deletion of a chunk ended, and answers what the ledger is to say of them:
/// each entry how it ended (a call never made leaves none), and the orphan records of what is
/// gone now forgotten.
fn settle<L: Records>(
    run: &Run<'_, L>,
    region: &str,
    outcomes: Vec<(&Orphan, &JournalEntry, Deletion)>,
    recorded: &hashbrown::HashMap<Id, DateTime<Utc>>,
    report: &mut RegionReport,
) -> (Vec<Item>, Vec<(String, String)>, Vec<JournalEntry>) {
    let (mut ended, mut removed, mut done) = (Vec::new(), Vec::new(), Vec::new());
    for (orphan, entry, outcome) in outcomes {
        let id = orphan.snapshot_id.to_string();
        if matches!(outcome, Deletion::Deleted | Deletion::AlreadyGone) && recorded.contains_key(id.as_str()) {
            removed.push(L::orphan_key(region, &id));
        }
        match outcome {
            Deletion::Deleted => {
                // Every deletion of the region is restorable at least until the
                // earliest of their times.
                report.restorable_until = recycle_bin::earliest(report.restorable_until, entry.restorable_until);
                ended.push(entry.done());
                done.push(entry.clone());
                report.deleted.push(id);
            }
            Deletion::AlreadyGone => {
                ended.push(entry.already_gone());
                report.already_gone.push(id);
            }
            Deletion::Failed(failed) => {
                ended.push(entry.failed(&failed.code, &failed.message));
                // Still an orphan, on the same clock; the next runs try it after the others.
                ended.push(L::failed_orphan(region, orphan, &failed.code, run.invocation.clock()));
                report.failed.push(failed);
            }
            Deletion::NotStarted => {
                removed.push(entry.key());
                report.left_for_next_run.push(id);
            }
        }
    }
    (ended, removed, done)
}

async fn delete_one<E: Ec2, L: Records>(run: &Run<'_, L>, ec2: &E, orphan: &Orphan) -> Deletion {
    // A deletion starts only while there is time left for it (checked again per deletion: a
    // chunk's deletions may take long under throttling).
    if run.deletion_deadline_is_near() {
        return Deletion::NotStarted;
    }
    let id = orphan.snapshot_id.as_str();
    match run.until_cutoff("DeleteSnapshot", ec2.delete_snapshot(id)).await {
        Ok(()) => Deletion::Deleted,
        Err(err) if err.has_code("InvalidSnapshot.NotFound") => Deletion::AlreadyGone,
        Err(err) => {
            tracing::warn!(snapshot_id = %id, error = %err, "delete failed");
            Deletion::Failed(FailedDeletion { snapshot_id: id.to_string(), code: err.code, message: err.message })
        }
    }
}

fn journal_entry<L: Records>(run: &Run<'_, L>, region: &str, orphan: &Orphan) -> JournalEntry {
    run.journal(region, Resource::Snapshot, &orphan.snapshot_id, "orphan")
        .with_size(orphan.size_gib)
        .with_source(&orphan.source_image_id)
        .in_recycle_bin(&run.recycle_bin(region))
}
