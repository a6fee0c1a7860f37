//! What the deletions a region plans really free (`EXACT_SAVINGS`): their lineages read from the
//! listing, the EBS direct APIs asked (bounded concurrency, a lineage's questions together), and
//! the core's figure for each: exact, or a labelled bound. A dry run too: it is for reports.
//! Nothing here decides what is deleted.

use amiguard::AwsError;
use futures::stream::{self, StreamExt};
use hashbrown::{HashMap, HashSet};

use super::run::Run;
use crate::core::savings::{self, Ask, BlockSet, Evidence, Freed, Lineage, Prices, Tier};
use crate::core::summary::FreedSnapshot;
use crate::core::{Id, Orphan, SnapshotFacts};
use crate::ports::{Ebs, Records};

/// EBS direct API requests in flight at once per region (their own throttles are per account:
/// `ListSnapshotBlocks` and `ListChangedBlocks` each allow a few dozen a second).
pub const EBS_CONCURRENCY: usize = 8;
/// Lineages whose questions are asked at once: each lineage's answers stay in memory until its
/// figures are made, then go.
const LINEAGES_AT_ONCE: usize = 4;

/// Why a planned snapshot gets its bound and no exact figure when no EBS call is made.
pub const OFF: &str = "EXACT_SAVINGS=false: the bound only";
pub const NO_CLIENT: &str = "no EBS direct API client for this region: the bound only";
const NOT_IN_TIME: &str = "not asked: the invocation's deadline was near";

/// What deleting `planned` frees, each, with `snapshots` the region's whole listing (their
/// lineages). `ebs` is the region's EBS direct APIs (`None`: bounds only).
pub(super) async fn freed<L: Records>(
    run: &Run<'_, L>,
    ebs: Option<&dyn Ebs>,
    snapshots: &[SnapshotFacts],
    planned: &[Orphan],
) -> HashMap<Id, Freed> {
    let facts: HashMap<&str, &SnapshotFacts> = snapshots.iter().map(|s| (s.snapshot_id.as_str(), s)).collect();
    let sizes: HashMap<&str, u64> = planned
        .iter()
        .map(|o| {
            let size = facts
                .get(o.snapshot_id.as_str())
                .map_or(o.size_gib.saturating_mul(savings::GIB), |s| savings::bound(s));
            (o.snapshot_id.as_str(), size)
        })
        .collect();
    let bound = |id: &str| sizes.get(id).copied().unwrap_or(0);
    let bounded = |why: &str| -> HashMap<Id, Freed> {
        planned
            .iter()
            .map(|o| (o.snapshot_id.clone(), Freed::AtMost { bytes: bound(&o.snapshot_id), why: why.to_string() }))
            .collect()
    };
    let ebs = match ebs {
        _ if planned.is_empty() => return HashMap::new(),
        _ if !run.config.exact_savings => return bounded(OFF),
        None => return bounded(NO_CLIENT),
        Some(ebs) => ebs,
    };
    let ids: HashSet<&str> = planned.iter().map(|o| o.snapshot_id.as_str()).collect();
    let found = savings::lineages(snapshots, &ids);
    let mut freed: HashMap<Id, Freed> = found
        .unknown
        .into_iter()
        .map(|(id, why)| {
            let bytes = bound(&id);
            (id, Freed::AtMost { bytes, why })
        })
        .collect();
    let slots = tokio::sync::Semaphore::new(EBS_CONCURRENCY);
    let figures: Vec<Vec<(Id, Freed)>> = stream::iter(&found.lineages)
        .map(|lineage| async {
            let evidence = ask(run, ebs, lineage, &slots).await;
            lineage.freed(&evidence, &bound)
        })
        .buffer_unordered(LINEAGES_AT_ONCE)
        .collect()
        .await;
    freed.extend(figures.into_iter().flatten());
    freed
}

/// Every answer `lineage` needs, `EBS_CONCURRENCY` at most in flight across the region; a
/// question not asked before the deadline is near has the deadline as its answer.
async fn ask<L: Records>(
    run: &Run<'_, L>,
    ebs: &dyn Ebs,
    lineage: &Lineage,
    slots: &tokio::sync::Semaphore,
) -> Evidence {
    let answers: Vec<(Ask, Result<Answer, String>)> = stream::iter(lineage.asks())
        .map(|question| async move {
            let Ok(_slot) = slots.acquire().await else { return (question, Err("no slot".to_string())) };
            if run.deadline_is_near() {
                return (question, Err(NOT_IN_TIME.to_string()));
            }
            let answer = match &question {
                Ask::Blocks(id) => {
                    run.until_cutoff("ListSnapshotBlocks", ebs.snapshot_blocks(id)).await.map(Answer::Blocks)
                }
                Ask::Changed { first, second } => {
                    run.until_cutoff("ListChangedBlocks", ebs.changed_blocks(first, second)).await.map(Answer::Changed)
                }
            };
            (question, answer.map_err(|err: AwsError| format!("{}: {}", err.code, err.message)))
        })
        .buffer_unordered(EBS_CONCURRENCY)
        .collect()
        .await;
    let mut evidence = Evidence::default();
    for (question, answer) in answers {
        match (question, answer) {
            (Ask::Blocks(id), Ok(Answer::Blocks(blocks))) => {
                evidence.blocks.insert(id, Ok(blocks));
            }
            (Ask::Changed { first, second }, Ok(Answer::Changed(changed))) => {
                evidence.changed.insert((first, second), Ok(changed));
            }
            (Ask::Blocks(id), Err(why)) => {
                evidence.blocks.insert(id, Err(why));
            }
            (Ask::Changed { first, second }, Err(why)) => {
                evidence.changed.insert((first, second), Err(why));
            }
            (question, Ok(_)) => tracing::warn!(?question, "an answer of the wrong kind"),
        }
    }
    evidence
}

/// The report's entries of `planned`, in order, each priced by its tier.
pub(super) fn entries(
    snapshots: &[SnapshotFacts],
    planned: &[Orphan],
    freed: &HashMap<Id, Freed>,
    price_per_gb_month: f64,
) -> Vec<FreedSnapshot> {
    let tiers: HashMap<&str, Tier> = snapshots.iter().map(|s| (s.snapshot_id.as_str(), s.tier)).collect();
    let prices = Prices { standard_per_gb_month: price_per_gb_month };
    planned
        .iter()
        .filter_map(|o| {
            let tier = tiers.get(o.snapshot_id.as_str()).copied().unwrap_or_default();
            freed.get(&o.snapshot_id).map(|f| FreedSnapshot::new(&o.snapshot_id, f, tier, &prices))
        })
        .collect()
}

enum Answer {
    Blocks(savings::Blocks),
    Changed(BlockSet),
}
