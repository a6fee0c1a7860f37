//! Deleting a region's orphans: bounded concurrency, chunk by chunk, each chunk's deletions
//! journaled in the ledger (and their orphan records forgotten) before the next chunk starts.

use amiguard::ledger::journal::{JournalEntry, Resource};
use amiguard::ledger::LedgerStore;
use amiguard::sweeper::records;
use amiguard::sweeper::{Orphan, SweeperEc2};
use futures::stream::{self, StreamExt};

use crate::report::{FailedDeletion, RegionReport, FUNCTION};
use crate::{Run, DELETE_CONCURRENCY};

/// Deletions journaled together (four BatchWriteItem calls).
const JOURNAL_CHUNK: usize = 100;

/// What deleting one snapshot came to.
enum Deletion {
    Deleted,
    AlreadyGone,
    Failed(FailedDeletion),
    NotStarted,
}

impl<L: LedgerStore> Run<'_, L> {
    /// Deletes `orphans`. A deletion not started when the deadline is near is not started at all;
    /// when the journal cannot be written, no further deletion starts (the ledger must know what
    /// amiguard deleted).
    pub(crate) async fn delete<E: SweeperEc2>(
        &self,
        region: &str,
        ec2: &E,
        orphans: &[Orphan],
        report: &mut RegionReport,
        warnings: &mut Vec<String>,
    ) {
        let mut journal_works = true;
        for chunk in orphans.chunks(JOURNAL_CHUNK) {
            if !journal_works {
                report.left_for_next_run.extend(chunk.iter().map(|o| o.snapshot_id.to_string()));
                continue;
            }
            let outcomes: Vec<(&Orphan, Deletion)> = stream::iter(chunk)
                .map(|orphan| async move { (orphan, self.delete_one(ec2, orphan).await) })
                .buffer_unordered(DELETE_CONCURRENCY)
                .collect()
                .await;
            let (mut entries, mut forget) = (Vec::new(), Vec::new());
            for (orphan, outcome) in outcomes {
                let id = orphan.snapshot_id.to_string();
                match outcome {
                    Deletion::Deleted => {
                        entries.push(self.journal_entry(region, orphan).to_item());
                        forget.push(records::orphan_key(region, &id));
                        report.deleted.push(id);
                    }
                    Deletion::AlreadyGone => {
                        forget.push(records::orphan_key(region, &id));
                        report.already_gone.push(id);
                    }
                    Deletion::Failed(failed) => report.failed.push(failed),
                    Deletion::NotStarted => report.left_for_next_run.push(id),
                }
            }
            if let Some(store) = self.store() {
                if let Err(err) = store.write_batch(entries, forget).await {
                    self.ledger_broke(&err);
                    warnings.push(format!(
                        "{region}: the journal could not be written ({err}): no further deletion was started"
                    ));
                    journal_works = false;
                }
            }
        }
        report.deleted.sort();
        report.already_gone.sort();
        report.failed.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        report.left_for_next_run.sort();
    }

    async fn delete_one<E: SweeperEc2>(&self, ec2: &E, orphan: &Orphan) -> Deletion {
        if self.deadline_is_near() {
            return Deletion::NotStarted;
        }
        let id = orphan.snapshot_id.as_str();
        match ec2.delete_snapshot(id).await {
            Ok(()) => Deletion::Deleted,
            Err(err) if err.has_code("InvalidSnapshot.NotFound") => Deletion::AlreadyGone,
            Err(err) => {
                tracing::warn!(snapshot_id = %id, error = %err, "delete failed");
                Deletion::Failed(FailedDeletion { snapshot_id: id.to_string(), code: err.code, message: err.message })
            }
        }
    }

    fn journal_entry(&self, region: &str, orphan: &Orphan) -> JournalEntry {
        JournalEntry {
            run_id: self.invocation.request_id.clone(),
            function: FUNCTION,
            region: region.to_string(),
            resource: Resource::Snapshot,
            resource_id: orphan.snapshot_id.to_string(),
            time: chrono::Utc::now(),
            size_gib: Some(orphan.size_gib),
            source_image_id: Some(orphan.source_image_id.to_string()),
            rule: "orphan",
        }
    }
}
