//! What the deletions a region plans really free (`EXACT_SAVINGS`): their lineages read from the
//! listing, the EBS direct APIs asked (bounded concurrency, a lineage's questions together), and
//! the core's figure for each: exact, or a labelled bound. A dry run too: it is for reports.
//! Nothing here decides what is deleted.

use amiguard::ledger::journal::JournalEntry;
use amiguard::AwsError;
use futures::stream::{self, StreamExt};
use hashbrown::{HashMap, HashSet};

use super::run::Run;
use crate::core::savings::{self, Ask, BlockSet, Evidence, Freed, Lineage, Origin, Prices, Tier};
use crate::core::summary::FreedSnapshot;
use crate::core::{Id, Orphan, SnapshotFacts};
use crate::ports::{Ebs, Ec2, Records, VOLUME_FILTER_VALUES};

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
/// Why a real run's question was not asked or not answered in its time: the rest is the deletions'.
const DELETIONS_TIME: &str =
    "not asked in time: the invocation's deadline was near, the rest of its time is the deletions'";

/// Why a planned snapshot of a region listed in partitions gets its bound (issue 23's part 2 lists
/// one volume's snapshots across every partition; a neighbour may be in one not listed).
pub const PARTITIONED: &str = "listed in partitions: the lineage may be incomplete";
/// Why a planned snapshot gets no figure of its own: none was made (a bound, never nothing).
const NO_FIGURE: &str = "no figure was made for it: the bound only";
/// Why an answer was dropped: the evidence held at once reached [`EVIDENCE_BYTES`].
pub const MEMORY_CAP: &str = "not kept: the block indexes held at once reached the savings' memory cap";
/// The most bytes of block indexes a region holds at once (a 1 TiB volume's take 256 KiB): beyond
/// it an answer is dropped and its snapshots get their bounds, so that the function stays within its
/// memory (the stack's 256 MB) whatever the lineages.
pub const EVIDENCE_BYTES: u64 = 64 << 20;
/// In a real run the savings' questions stop this long, plus [`RESERVE_PER_DELETION`] for each
/// planned deletion, before deletions would stop (`DELETION_MARGIN`): the deletions keep their time.
pub const RESERVE: std::time::Duration = std::time::Duration::from_secs(60);
pub const RESERVE_PER_DELETION: std::time::Duration = std::time::Duration::from_millis(250);

/// What a region's planned deletions free, and each one's volume (its lineage).
#[derive(Debug, Default)]
pub(super) struct Figures {
    pub freed: HashMap<Id, Freed>,
    pub volume_of: HashMap<Id, Id>,
}

/// When the savings' questions stop: in a real run, early enough that the planned deletions keep
/// their time ([`RESERVE`]); in a dry run, with the region's other steps (`DEADLINE_MARGIN`).
fn stop_at<L: Records>(run: &Run<'_, L>, deletions: usize) -> Option<tokio::time::Instant> {
    let at = run.deadline?;
    if run.dry_run {
        return Some(at.checked_sub(super::run::DEADLINE_MARGIN).unwrap_or(at));
    }
    let reserve = RESERVE + RESERVE_PER_DELETION.saturating_mul(u32::try_from(deletions).unwrap_or(u32::MAX));
    Some(at.checked_sub(super::run::DELETION_MARGIN + reserve).unwrap_or(at))
}

/// What deleting `planned` frees, each, with `snapshots` the region's whole listing (their
/// lineages; `in_partitions`: the region was listed in partitions, its lineages are not known).
/// `ebs` is the region's EBS direct APIs (`None`: bounds only), `ec2` says what volumes exist.
pub(super) async fn freed<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    ec2: &E,
    ebs: Option<&dyn Ebs>,
    snapshots: &[SnapshotFacts],
    planned: &[Orphan],
    in_partitions: bool,
) -> Figures {
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
    let bounded = |why: &str| -> Figures {
        let freed = planned
            .iter()
            .map(|o| (o.snapshot_id.clone(), Freed::AtMost { bytes: bound(&o.snapshot_id), why: why.to_string() }))
            .collect();
        Figures { freed, volume_of: HashMap::new() }
    };
    let ebs = match ebs {
        _ if planned.is_empty() => return Figures::default(),
        _ if !run.config.exact_savings => return bounded(OFF),
        _ if in_partitions => return bounded(PARTITIONED),
        None => return bounded(NO_CLIENT),
        Some(ebs) => ebs,
    };
    let stop = stop_at(run, planned.len());
    let ids: HashSet<&str> = planned.iter().map(|o| o.snapshot_id.as_str()).collect();
    let mut found = savings::lineages(snapshots, &ids);
    let volume_of = found
        .lineages
        .iter()
        .flat_map(|l| l.members.iter().filter(|m| m.planned).map(|m| (m.snapshot_id.clone(), l.volume_id.clone())))
        .collect();
    origins(run, ec2, &mut found.lineages, &facts, &ids, stop).await;
    let descended = descended(run, ec2, planned, stop).await;
    let mut freed: HashMap<Id, Freed> = found
        .unknown
        .into_iter()
        .map(|(id, why)| {
            let bytes = bound(&id);
            (id, Freed::AtMost { bytes, why })
        })
        .collect();
    let slots = tokio::sync::Semaphore::new(EBS_CONCURRENCY);
    let held = std::sync::atomic::AtomicU64::new(0);
    let figures: Vec<Vec<(Id, Freed)>> = stream::iter(&found.lineages)
        .map(|lineage| async {
            let (evidence, bytes) = ask(run, ebs, lineage, &slots, stop, (&held, EVIDENCE_BYTES)).await;
            let figures = lineage.freed(&evidence, &bound);
            // The lineage's answers go now.
            drop(evidence);
            held.fetch_sub(bytes, std::sync::atomic::Ordering::SeqCst);
            figures
        })
        .buffer_unordered(LINEAGES_AT_ONCE)
        .collect()
        .await;
    freed.extend(figures.into_iter().flatten());
    // A volume that exists and was created from a planned snapshot may share its blocks.
    for (id, figure) in freed.iter_mut() {
        if let (Freed::Exact { bytes }, Some(why)) = (&*figure, descended.get(id)) {
            *figure = Freed::AtMost { bytes: *bytes, why: why.clone() };
        }
    }
    Figures { freed, volume_of }
}

/// Why a question was not asked (or answered) in time.
fn not_in_time<L: Records>(run: &Run<'_, L>) -> &'static str {
    if run.dry_run {
        NOT_IN_TIME
    } else {
        DELETIONS_TIME
    }
}

/// Whether a question may start: not near the deadline, nor after `stop`.
fn may_ask<L: Records>(run: &Run<'_, L>, stop: Option<tokio::time::Instant>) -> bool {
    !run.deadline_is_near() && stop.is_none_or(|at| tokio::time::Instant::now() < at)
}

/// `call`, cut at `stop` (and at the run's cutoff).
async fn until_stop<L: Records, T>(
    run: &Run<'_, L>,
    stop: Option<tokio::time::Instant>,
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, AwsError>>,
) -> Result<T, AwsError> {
    let call = run.until_cutoff(operation, call);
    match stop {
        None => call.await,
        Some(at) => tokio::time::timeout_at(at, call)
            .await
            .unwrap_or_else(|_| Err(AwsError::new(operation, "Timeout", not_in_time(run)))),
    }
}

/// `DescribeVolumes` by `by` of `values`, in batches; `Err` is why not.
async fn volumes<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    ec2: &E,
    by: &'static str,
    values: Vec<String>,
    stop: Option<tokio::time::Instant>,
) -> Result<Vec<(Id, Option<Id>)>, String> {
    let mut volumes = Vec::new();
    for batch in values.chunks(VOLUME_FILTER_VALUES) {
        if !may_ask(run, stop) {
            return Err(not_in_time(run).to_string());
        }
        let answer = until_stop(run, stop, "DescribeVolumes", ec2.volumes(by, batch.to_vec())).await;
        volumes.extend(answer.map_err(|err| format!("DescribeVolumes failed: {}: {}", err.code, err.message))?);
    }
    Ok(volumes)
}

/// B1: what each lineage's oldest snapshot descends from, when it is planned. The volume exists
/// and came from no snapshot: none; from a snapshot listed and kept: that one (compared); gone,
/// or from a snapshot not listed or planned too: unknown (a bound).
async fn origins<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    ec2: &E,
    lineages: &mut [Lineage],
    facts: &HashMap<&str, &SnapshotFacts>,
    planned: &HashSet<&str>,
    stop: Option<tokio::time::Instant>,
) {
    let asked: Vec<String> = lineages
        .iter()
        .filter(|l| l.members.first().is_some_and(|m| m.planned))
        .map(|l| l.volume_id.to_string())
        .collect();
    if asked.is_empty() {
        return;
    }
    let sources: HashMap<Id, Option<Id>> = match volumes(run, ec2, "volume-id", asked, stop).await {
        Ok(volumes) => volumes.into_iter().collect(),
        Err(why) => {
            for lineage in lineages.iter_mut() {
                lineage.origin = Origin::Unknown(format!("{}; {why}", savings::ORIGIN_UNKNOWN));
            }
            return;
        }
    };
    for lineage in lineages.iter_mut() {
        lineage.origin = match sources.get(&lineage.volume_id) {
            Some(None) => Origin::Empty,
            Some(Some(source)) if facts.contains_key(source.as_str()) && !planned.contains(source.as_str()) => {
                Origin::From(source.clone())
            }
            _ => Origin::Unknown(savings::ORIGIN_UNKNOWN.to_string()),
        };
    }
}

/// The planned snapshots an existing volume was created from (each with why it gets a bound);
/// every one of them when that cannot be read.
async fn descended<E: Ec2, L: Records>(
    run: &Run<'_, L>,
    ec2: &E,
    planned: &[Orphan],
    stop: Option<tokio::time::Instant>,
) -> HashMap<Id, String> {
    let ids: Vec<String> = planned.iter().map(|o| o.snapshot_id.to_string()).collect();
    match volumes(run, ec2, "snapshot-id", ids, stop).await {
        Ok(volumes) => volumes
            .into_iter()
            .filter_map(|(volume, source)| source.map(|s| (s, format!("{} ({volume})", savings::HAS_DESCENDANTS))))
            .collect(),
        Err(why) => planned
            .iter()
            .map(|o| (o.snapshot_id.clone(), format!("whether a volume was created from it is not known: {why}")))
            .collect(),
    }
}

/// B2: the figures of what was deleted. A figure made for the whole planned set assumed that its
/// lineage's other planned snapshots went too; when one of them did not (failed, left for the next
/// run, gone already), the figure is only the most it freed (deleting fewer never frees more).
pub(super) fn settled(figures: &Figures, deleted: &[String], planned: &[Orphan]) -> HashMap<Id, Freed> {
    let gone: HashSet<&str> = deleted.iter().map(String::as_str).collect();
    let kept: HashMap<&Id, &Id> = planned
        .iter()
        .filter(|o| !gone.contains(o.snapshot_id.as_str()))
        .filter_map(|o| figures.volume_of.get(&o.snapshot_id).map(|v| (v, &o.snapshot_id)))
        .collect();
    deleted
        .iter()
        .filter_map(|id| {
            let figure = figures.freed.get(id.as_str())?.clone();
            let figure = match (figure, figures.volume_of.get(id.as_str()).and_then(|v| kept.get(v))) {
                (Freed::Exact { bytes }, Some(other)) => Freed::AtMost {
                    bytes,
                    why: format!("planned with {other} of the same volume, which was not deleted: at most this"),
                },
                (figure, _) => figure,
            };
            Some((Id::from(id.as_str()), figure))
        })
        .collect()
}

/// Every answer `lineage` needs, `EBS_CONCURRENCY` at most in flight across the region; a
/// question not asked before the deadline is near (or `stop`) has the deadline as its answer, and
/// an answer that would take the block indexes held past `cap` is dropped. Answers the evidence and
/// the bytes it holds (to be given back to `held` once it is used).
async fn ask<L: Records>(
    run: &Run<'_, L>,
    ebs: &dyn Ebs,
    lineage: &Lineage,
    slots: &tokio::sync::Semaphore,
    stop: Option<tokio::time::Instant>,
    (held, cap): (&std::sync::atomic::AtomicU64, u64),
) -> (Evidence, u64) {
    use std::sync::atomic::Ordering::SeqCst;
    let answers: Vec<(Ask, Result<Answer, String>, u64)> = stream::iter(lineage.asks())
        .map(|question| async move {
            let Ok(_slot) = slots.acquire().await else { return (question, Err("no slot".to_string()), 0) };
            if !may_ask(run, stop) {
                return (question, Err(not_in_time(run).to_string()), 0);
            }
            let answer = match &question {
                Ask::Blocks(id) => {
                    until_stop(run, stop, "ListSnapshotBlocks", ebs.snapshot_blocks(id)).await.map(Answer::Blocks)
                }
                Ask::Changed { first, second } => {
                    until_stop(run, stop, "ListChangedBlocks", ebs.changed_blocks(first, second))
                        .await
                        .map(Answer::Changed)
                }
            };
            let answer = answer.map_err(|err: AwsError| format!("{}: {}", err.code, err.message));
            // Counted against the cap; beyond it, dropped at once.
            let bytes = match &answer {
                Ok(Answer::Blocks(blocks)) => blocks.indexes.heap_bytes(),
                Ok(Answer::Changed(changed)) => changed.heap_bytes(),
                Err(_) => 0,
            };
            if bytes > 0 && held.fetch_add(bytes, SeqCst) + bytes > cap {
                held.fetch_sub(bytes, SeqCst);
                return (question, Err(MEMORY_CAP.to_string()), 0);
            }
            (question, answer, bytes)
        })
        .buffer_unordered(EBS_CONCURRENCY)
        .collect()
        .await;
    let mut evidence = Evidence::default();
    let mut kept = 0;
    for (question, answer, bytes) in answers {
        kept += bytes;
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
    (evidence, kept)
}

/// The report's entries of what was `deleted`, in order, each priced by its tier.
pub(super) fn deleted_entries(
    deleted: &[String],
    freed: &HashMap<Id, Freed>,
    tiers: &HashMap<Id, Tier>,
    price_per_gb_month: f64,
) -> Vec<FreedSnapshot> {
    let prices = Prices { standard_per_gb_month: price_per_gb_month };
    deleted
        .iter()
        .filter_map(|id| {
            let tier = tiers.get(id.as_str()).copied().unwrap_or_default();
            freed.get(id.as_str()).map(|f| FreedSnapshot::new(id, f, tier, &prices))
        })
        .collect()
}

/// Writes into the journal entry of each deletion AWS confirmed what it freed (`done` again, with
/// the figure): only now, once the region's deletions are done, is the figure known to describe
/// what happened. A failed write is a warning: the entries stay `done`, without a figure.
pub(super) async fn journal<L: Records>(
    run: &Run<'_, L>,
    region: &str,
    done: Vec<JournalEntry>,
    freed: &HashMap<Id, Freed>,
    warnings: &mut Vec<String>,
) {
    let Some(store) = run.store() else { return };
    let items: Vec<_> = done
        .into_iter()
        .filter_map(|entry| {
            let figure = freed.get(entry.resource_id.as_str())?;
            Some(entry.with_freed(figure.exact(), figure.at_most()).done())
        })
        .collect();
    if items.is_empty() {
        return;
    }
    if let Err(err) = run.before_deadline(store.write_batch(items, Vec::new())).await {
        warnings
            .push(format!("{region}: what the deletions freed could not be written to their journal entries: {err}"));
    }
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
        .map(|o| {
            let tier = tiers.get(o.snapshot_id.as_str()).copied().unwrap_or_default();
            let none = || Freed::AtMost { bytes: o.size_gib.saturating_mul(savings::GIB), why: NO_FIGURE.to_string() };
            let figure = freed.get(&o.snapshot_id).cloned().unwrap_or_else(none);
            FreedSnapshot::new(&o.snapshot_id, &figure, tier, &prices)
        })
        .collect()
}

enum Answer {
    Blocks(savings::Blocks),
    Changed(BlockSet),
}
