//! The snapshot planner: from the facts of one region (snapshots, images, the Recycle Bin, the
//! clock) to a plan that lists every orphan and gives a reason for every snapshot it keeps.
//!
//! It is a pure function: no I/O, no clock of its own, the same plan whatever the order of its
//! input. Every safety rule of the sweeper lives here and is tested exhaustively.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use hashbrown::HashMap;
use serde::Serialize;

use super::facts::{Id, ImageFacts, KeepReason, SnapshotFacts};
use super::grace;
use super::join;

/// The settings that decide what is an orphan and how much one run may delete. (`PROTECT_TAG`
/// is read with the listing: [`super::listing::SnapshotListing::read`].)
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The grace period: snapshots younger than this are kept (`MIN_AGE_HOURS`).
    pub min_age: Duration,
    /// The circuit breaker (`MAX_DELETE_FRACTION`): a plan that would delete more than this
    /// fraction of the region's own snapshots deletes nothing.
    pub max_delete_fraction: f64,
    /// `ADOPT_UNWITNESSED_ORPHANS`: unwitnessed orphans are orphans like the others (the way to
    /// clean up what was left before amiguard was installed, once a person has read the list).
    /// Off, they are kept ([`KeepReason::Unwitnessed`]).
    pub adopt_unwitnessed: bool,
}

/// The facts of one region, gathered by the handler.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The account whose snapshots may be deleted (each snapshot's `OwnerId` must equal it).
    pub account_id: &'a str,
    pub now: DateTime<Utc>,
    pub snapshots: &'a [SnapshotFacts],
    /// Every image still registered (with disabled and deprecated ones): their block-device
    /// mappings protect their snapshots, and their ids protect the snapshots made for them.
    pub images: &'a [ImageFacts],
    /// Images this run deregistered (in a dry run: would deregister). Their snapshots count as
    /// made for them even when the description says nothing.
    pub retired_images: &'a [ImageFacts],
    /// AMIs in the Recycle Bin: they can be restored, so their snapshots are kept.
    pub images_in_recycle_bin: &'a BTreeSet<String>,
    /// How many deletions this region may still start (what is left of `MAX_DELETIONS`).
    pub budget: u64,
    /// What the ledger remembers of the region: the grace clock and gone images' mappings.
    pub memory: &'a Memory,
    /// Snapshots under an EBS snapshot lock (`DescribeLockedSnapshots`, every page).
    pub locked: &'a hashbrown::HashSet<Id>,
}

/// What the ledger remembers of a region, as the planner reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// When amiguard first saw each snapshot orphaned.
    pub orphaned_since: HashMap<Id, DateTime<Utc>>,
    /// When each AMI was seen deregistered (an `EC2 AMI State Change` event, or the first sweep
    /// that found it gone).
    pub deregistered_at: HashMap<Id, DateTime<Utc>>,
    /// For a snapshot that images now gone mapped (EC2's own block-device mappings, as the
    /// ledger recorded them while the images were registered): those images. One of them in the
    /// Recycle Bin keeps the snapshot; the one its description names makes it *witnessed*.
    pub mapped_by_gone_images: HashMap<Id, Vec<Id>>,
    /// Orphans whose deletion failed in an earlier run (refused, in use): they queue behind the
    /// others, so that a few that always fail never use up `MAX_DELETIONS` run after run.
    pub failed_before: hashbrown::HashSet<Id>,
}

/// A snapshot made for an AMI that no longer exists and that nothing else keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Orphan {
    pub snapshot_id: Id,
    pub size_gib: u64,
    pub source_image_id: Id,
    pub start_time: DateTime<Utc>,
    /// Since when it is an orphan, by amiguard's own observation ([`grace`]).
    pub orphaned_since: DateTime<Utc>,
}

/// A number of snapshots and their volumes' size (manual ones, archived ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotTotal {
    pub count: u64,
    pub gib: u64,
}

/// Why the circuit breaker refused a region: `orphans` of `own_snapshots` is more than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CircuitBreakerTrip {
    pub orphans: u64,
    pub own_snapshots: u64,
    pub max_fraction: f64,
}

impl fmt::Display for CircuitBreakerTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker: {} orphans of {} own snapshots is more than MAX_DELETE_FRACTION={}; nothing deleted",
            self.orphans, self.own_snapshots, self.max_fraction
        )
    }
}

/// The decision for one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Distinct snapshots in the listing.
    pub snapshots_scanned: u64,
    /// Of those, the ones owned by the account (the circuit breaker's denominator).
    pub own_snapshots: u64,
    /// Every orphan past its grace period, oldest first (those whose deletion failed in an
    /// earlier run after all others), before the cap and the circuit breaker.
    pub orphans: Vec<Orphan>,
    /// Orphans still in their grace period (counted as kept `too_young`), the soonest deletable
    /// first. With `orphans` and `unwitnessed`, every snapshot the ledger's grace clock follows.
    pub waiting: Vec<Orphan>,
    /// Orphans amiguard never witnessed (counted as kept `unwitnessed`), oldest first: kept
    /// unless adopted, their clock recorded so that adopting them later does not restart it.
    pub unwitnessed: Vec<Orphan>,
    /// The size of all unwitnessed orphans.
    pub unwitnessed_gib: u64,
    /// The grace period, to say when each waiting orphan becomes deletable.
    pub min_age: Duration,
    /// The orphans to delete in this run: the first ones of `orphans`, within the budget, unless
    /// the circuit breaker tripped.
    pub to_delete: Vec<Orphan>,
    /// Every snapshot not in `to_delete`, counted by reason.
    pub kept: BTreeMap<KeepReason, u64>,
    /// Owned snapshots that no image references and that EC2's words do not tie to an AMI.
    pub unreferenced_manual: SnapshotTotal,
    /// Snapshots kept because they are archived (their storage is billed for 90 days anyway).
    pub archived: SnapshotTotal,
    /// The size of all orphans: what deleting them frees at most.
    pub reclaimable_gib: u64,
    pub circuit_breaker: Option<CircuitBreakerTrip>,
}

/// What one copy of a snapshot in the listing classifies as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Kept(KeepReason),
    /// An orphan amiguard never witnessed, kept unless adopted.
    Unwitnessed(Orphan),
    /// An orphan in its grace period.
    Waiting(Orphan),
    Deletable(Orphan),
}

/// Plans one region. See [`KeepReason`] for the rules, in the order they apply.
///
/// The lookups are partitioned hash joins ([`join`]) whose tables stay in cache at any size; one
/// pass over the snapshots then decides each one, allocating nothing but the orphans' records.
pub fn plan(input: &PlanInput<'_>, policy: &Policy) -> Plan {
    plan_in_partitions(input, policy, join::partition_bits(input.snapshots.len()))
}

/// [`plan`] with a chosen partition count (`2^bits`): tests force many partitions on small inputs.
fn plan_in_partitions(input: &PlanInput<'_>, policy: &Policy, bits: u32) -> Plan {
    let rules = Rules::new(input, policy);
    let lookups = join::look_up(
        input.snapshots,
        input.images,
        input.images_in_recycle_bin.iter().map(String::as_str),
        |snapshot| rules.extra_sources(snapshot),
        |snapshot| rules.owns(snapshot),
        bits,
    );
    let mut plan = Plan {
        snapshots_scanned: lookups.distinct,
        own_snapshots: 0,
        orphans: Vec::new(),
        waiting: Vec::new(),
        unwitnessed: Vec::new(),
        unwitnessed_gib: 0,
        min_age: policy.min_age,
        to_delete: Vec::new(),
        kept: BTreeMap::new(),
        unreferenced_manual: SnapshotTotal::default(),
        archived: SnapshotTotal::default(),
        reclaimable_gib: 0,
        circuit_breaker: None,
    };
    // Counted in an array while scanning (a map entry per snapshot would cost more than the rules).
    let mut kept = [0u64; KEEP_REASONS];
    for (index, snapshot) in input.snapshots.iter().enumerate() {
        let found = lookups.found[index];
        if found & join::LATER_COPY != 0 {
            continue;
        }
        let decision = match lookups.copies.get(&index) {
            Some(all) => rules.decide_copies(all.iter().map(|&i| (&input.snapshots[i], lookups.found[i]))),
            None => rules.decide(snapshot, found),
        };
        if decision.owned {
            plan.own_snapshots += 1;
        }
        match decision.verdict {
            Verdict::Kept(reason) => {
                kept[reason as usize] += 1;
                let total = match reason {
                    KeepReason::NotFromImage => Some(&mut plan.unreferenced_manual),
                    KeepReason::Archived => Some(&mut plan.archived),
                    _ => None,
                };
                if let Some(total) = total {
                    total.count += 1;
                    total.gib += decision.size_gib;
                }
            }
            Verdict::Unwitnessed(orphan) => {
                kept[KeepReason::Unwitnessed as usize] += 1;
                plan.unwitnessed.push(orphan);
            }
            Verdict::Waiting(orphan) => {
                kept[KeepReason::TooYoung as usize] += 1;
                plan.waiting.push(orphan);
            }
            Verdict::Deletable(orphan) => plan.orphans.push(orphan),
        }
    }
    for reason in KeepReason::ALL {
        if kept[reason as usize] > 0 {
            plan.kept.insert(reason, kept[reason as usize]);
        }
    }
    // Ids are distinct here, so the order is total and the same whatever the input order.
    sort_oldest_first(&mut plan.orphans);
    if !input.memory.failed_before.is_empty() {
        let (failed, fresh): (Vec<Orphan>, Vec<Orphan>) =
            plan.orphans.drain(..).partition(|o| input.memory.failed_before.contains(o.snapshot_id.as_str()));
        plan.orphans = fresh;
        plan.orphans.extend(failed);
    }
    plan.waiting.sort_by(|a, b| (a.orphaned_since, &a.snapshot_id).cmp(&(b.orphaned_since, &b.snapshot_id)));
    sort_oldest_first(&mut plan.unwitnessed);
    plan.unwitnessed_gib = plan.unwitnessed.iter().map(|o| o.size_gib).sum();
    plan.reclaimable_gib = plan.orphans.iter().map(|o| o.size_gib).sum();

    let orphans = plan.orphans.len() as u64;
    if exceeds_fraction(orphans, plan.own_snapshots, policy.max_delete_fraction) {
        plan.circuit_breaker = Some(CircuitBreakerTrip {
            orphans,
            own_snapshots: plan.own_snapshots,
            max_fraction: policy.max_delete_fraction,
        });
        *plan.kept.entry(KeepReason::CircuitBreaker).or_default() += orphans;
    } else {
        let allowed = usize::try_from(input.budget).unwrap_or(usize::MAX).min(plan.orphans.len());
        plan.to_delete = plan.orphans[..allowed].to_vec();
        let over = orphans - allowed as u64;
        if over > 0 {
            *plan.kept.entry(KeepReason::OverCap).or_default() += over;
        }
    }
    plan
}

/// Orders orphans by start time, then id. A first run can find hundreds of thousands of orphans:
/// sorting small integer keys and then moving each orphan once is several times faster than
/// sorting the orphans themselves (whose ids compare as strings).
fn sort_oldest_first(orphans: &mut Vec<Orphan>) {
    /// The start time, then the id's first 24 bytes as big-endian integers (zero-padded): the
    /// same order as comparing the ids, except where those bytes are equal.
    type Key = (i64, u32, [u64; 3]);
    let key = |orphan: &Orphan| -> Key {
        let mut prefix = [0u8; 24];
        let id = orphan.snapshot_id.as_bytes();
        let len = id.len().min(prefix.len());
        prefix[..len].copy_from_slice(&id[..len]);
        let word = |i: usize| u64::from_be_bytes(std::array::from_fn(|j| prefix[8 * i + j]));
        let time = orphan.start_time;
        (time.timestamp(), time.timestamp_subsec_nanos(), [word(0), word(1), word(2)])
    };
    let mut keys: Vec<(Key, usize)> = orphans.iter().enumerate().map(|(index, o)| (key(o), index)).collect();
    keys.sort_unstable_by(|(a, i), (b, j)| {
        // Equal prefixes (ids longer than 24 bytes) fall back to the whole ids.
        a.cmp(b).then_with(|| orphans[*i].snapshot_id.cmp(&orphans[*j].snapshot_id))
    });
    *orphans = keys.iter().map(|&(_, index)| orphans[index].clone()).collect();
}

impl Plan {
    /// The orphans to ask about next, before deleting, whether they are shared: after the first
    /// `checked` asked already, of which `shared` were, enough to fill what is left of `budget`
    /// (the region's `MAX_DELETIONS`). Empty when the budget is filled, every orphan was asked
    /// about, or the circuit breaker tripped. Only the orphans about to be deleted are asked
    /// about; one kept shared lets the next in line take its place.
    pub fn next_to_ask(&self, checked: usize, shared: usize, budget: u64) -> std::ops::Range<usize> {
        if self.circuit_breaker.is_some() {
            return 0..0;
        }
        let checked = checked.min(self.orphans.len());
        let deletions = checked.saturating_sub(shared);
        let wanted = usize::try_from(budget).unwrap_or(usize::MAX).saturating_sub(deletions);
        checked..checked.saturating_add(wanted).min(self.orphans.len())
    }

    /// The deletions once the first `checked` orphans were asked about: those of them not in
    /// `shared` (found shared, or whose permissions could not be read: kept `shared`); the
    /// orphans not asked about are over the cap. A plan whose circuit breaker tripped deletes
    /// nothing and stays as it is.
    pub fn keep_shared(&mut self, checked: usize, shared: &hashbrown::HashSet<Id>) {
        if self.circuit_breaker.is_some() {
            return;
        }
        let checked = checked.min(self.orphans.len());
        self.to_delete =
            self.orphans[..checked].iter().filter(|o| !shared.contains(o.snapshot_id.as_str())).cloned().collect();
        set_count(&mut self.kept, KeepReason::Shared, (checked - self.to_delete.len()) as u64);
        set_count(&mut self.kept, KeepReason::OverCap, (self.orphans.len() - checked) as u64);
    }
}

fn set_count(kept: &mut BTreeMap<KeepReason, u64>, reason: KeepReason, count: u64) {
    if count == 0 {
        kept.remove(&reason);
    } else {
        kept.insert(reason, count);
    }
}

/// `part` is more than `fraction` of `whole`. No part is never too much.
pub(crate) fn exceeds_fraction(part: u64, whole: u64, fraction: f64) -> bool {
    part > 0 && part as f64 > fraction * whole as f64
}

const KEEP_REASONS: usize = KeepReason::ALL.len();

/// The decision for one distinct snapshot.
struct Decision {
    /// Every copy is owned by the account (counted in the circuit breaker's denominator).
    owned: bool,
    verdict: Verdict,
    /// The largest size any copy gives (for the manual snapshots' total).
    size_gib: u64,
}

struct Rules<'a> {
    account_id: &'a str,
    now: DateTime<Utc>,
    min_age: Duration,
    adopt_unwitnessed: bool,
    /// A snapshot two retired images share gets the smaller id: the same whatever the order.
    /// Small (this run's retirements), so a plain map.
    retired_sources: HashMap<&'a str, &'a str>,
    memory: &'a Memory,
    locked: &'a hashbrown::HashSet<Id>,
}

impl<'a> Rules<'a> {
    fn new(input: &PlanInput<'a>, policy: &Policy) -> Self {
        let mut retired_sources: HashMap<&str, &str> = HashMap::new();
        for image in input.retired_images {
            for snapshot_id in &image.snapshot_ids {
                retired_sources
                    .entry(snapshot_id.as_str())
                    .and_modify(|id| *id = (*id).min(image.image_id.as_str()))
                    .or_insert(image.image_id.as_str());
            }
        }
        Rules {
            account_id: input.account_id,
            now: input.now,
            min_age: policy.min_age,
            adopt_unwitnessed: policy.adopt_unwitnessed,
            retired_sources,
            memory: input.memory,
            locked: input.locked,
        }
    }

    fn owns(&self, snapshot: &SnapshotFacts) -> bool {
        snapshot.owner_id.as_deref() == Some(self.account_id)
    }

    fn retired_source(&self, snapshot: &SnapshotFacts) -> Option<&'a str> {
        if self.retired_sources.is_empty() {
            return None;
        }
        self.retired_sources.get(snapshot.snapshot_id.as_str()).copied()
    }

    /// The AMIs a snapshot is looked up under besides those it names: the retired image it
    /// belonged to, and the gone images the ledger saw map it (any of them binned keeps it).
    fn extra_sources(&self, snapshot: &SnapshotFacts) -> impl Iterator<Item = &'a str> {
        let remembered: &'a [Id] = if self.memory.mapped_by_gone_images.is_empty() {
            &[]
        } else {
            self.memory.mapped_by_gone_images.get(snapshot.snapshot_id.as_str()).map_or(&[], Vec::as_slice)
        };
        self.retired_source(snapshot).into_iter().chain(remembered.iter().map(Id::as_str))
    }

    /// When the snapshot's AMIs were seen deregistered: the last of them (the snapshot became an
    /// orphan when the last one went), or `None` when any of them was not seen going.
    fn deregistered<'s>(&self, sources: impl Iterator<Item = &'s str>) -> Option<DateTime<Utc>> {
        let mut latest = None;
        for source in sources {
            let at = self.memory.deregistered_at.get(source).copied()?;
            latest = Some(latest.map_or(at, |known: DateTime<Utc>| known.max(at)));
        }
        latest
    }

    /// Whether the ledger recorded `source` mapping the snapshot while `source` was registered:
    /// the AMI its description names is one it really belonged to, by EC2's own listing.
    fn witnessed(&self, snapshot: &SnapshotFacts, source: &str) -> bool {
        !self.memory.mapped_by_gone_images.is_empty()
            && self
                .memory
                .mapped_by_gone_images
                .get(snapshot.snapshot_id.as_str())
                .is_some_and(|images| images.iter().any(|image| image == source))
    }

    fn decide(&self, snapshot: &SnapshotFacts, found: join::Found) -> Decision {
        Decision { owned: self.owns(snapshot), verdict: self.classify(snapshot, found), size_gib: snapshot.size_gib }
    }

    /// Every copy must agree that the snapshot is an orphan, and the result must not depend on
    /// which copy came first: the smallest keep reason wins, then unwitnessed (any copy not
    /// witnessed; the copy deletable last, as for waiting, so that adopting it never moves its
    /// clock back), then waiting (the copy deletable last), else the smallest orphan.
    fn decide_copies<'s>(&self, copies: impl Iterator<Item = (&'s SnapshotFacts, join::Found)>) -> Decision {
        let mut owned = true;
        let mut size_gib = 0;
        let mut kept: Option<KeepReason> = None;
        let mut unwitnessed: Option<Orphan> = None;
        let mut waiting: Option<Orphan> = None;
        let mut orphan: Option<Orphan> = None;
        for (snapshot, found) in copies {
            owned &= self.owns(snapshot);
            size_gib = size_gib.max(snapshot.size_gib);
            match self.classify(snapshot, found) {
                Verdict::Kept(reason) => kept = Some(kept.map_or(reason, |k| k.min(reason))),
                Verdict::Unwitnessed(candidate) => {
                    let later = |known: &Orphan| (candidate.orphaned_since, &candidate) > (known.orphaned_since, known);
                    if unwitnessed.as_ref().is_none_or(later) {
                        unwitnessed = Some(candidate);
                    }
                }
                Verdict::Waiting(candidate) => {
                    let later = |known: &Orphan| (candidate.orphaned_since, &candidate) > (known.orphaned_since, known);
                    if waiting.as_ref().is_none_or(later) {
                        waiting = Some(candidate);
                    }
                }
                Verdict::Deletable(candidate) => {
                    if orphan.as_ref().is_none_or(|known| candidate < *known) {
                        orphan = Some(candidate);
                    }
                }
            }
        }
        let verdict = match (kept, unwitnessed, waiting, orphan) {
            (Some(reason), _, _, _) => Verdict::Kept(reason),
            // Its clock is the latest of the copies' (as a waiting one's), so that adopting it
            // later never makes it deletable sooner than its copies agree.
            (None, Some(mut unwitnessed), waiting, _) => {
                if let Some(waiting) = waiting.filter(|w| w.orphaned_since > unwitnessed.orphaned_since) {
                    unwitnessed.orphaned_since = waiting.orphaned_since;
                }
                Verdict::Unwitnessed(unwitnessed)
            }
            (None, None, Some(waiting), _) => Verdict::Waiting(waiting),
            (None, None, None, Some(orphan)) => Verdict::Deletable(orphan),
            // No copies: not reachable from `plan`, and nothing to delete either way.
            (None, None, None, None) => Verdict::Kept(KeepReason::NotOwned),
        };
        Decision { owned, verdict, size_gib }
    }

    /// `found` is what the joins found for this copy (see [`join::look_up`]).
    fn classify(&self, snapshot: &SnapshotFacts, found: join::Found) -> Verdict {
        use KeepReason::*;
        if !self.owns(snapshot) {
            return Verdict::Kept(NotOwned);
        }
        if found & join::REFERENCED != 0 {
            return Verdict::Kept(ReferencedByImage);
        }
        if found & join::SOURCE_EXISTS != 0 {
            return Verdict::Kept(SourceImageExists);
        }
        if found & join::SOURCE_IN_RECYCLE_BIN != 0 {
            return Verdict::Kept(SourceImageInRecycleBin);
        }
        if let Some(reason) = snapshot.marked {
            return Verdict::Kept(reason);
        }
        if !self.locked.is_empty() && self.locked.contains(snapshot.snapshot_id.as_str()) {
            // Never sent a DeleteSnapshot: it would fail, run after run, ahead of deletable ones.
            return Verdict::Kept(Locked);
        }
        let retired = self.retired_source(snapshot);
        let Some(source_image_id) = snapshot.sources.described().or(retired) else {
            return Verdict::Kept(NotFromImage);
        };
        if !snapshot.completed {
            return Verdict::Kept(NotCompleted);
        }
        let Some(start_time) = snapshot.start_time else {
            return Verdict::Kept(TooYoung);
        };
        let first_seen = self.memory.orphaned_since.get(snapshot.snapshot_id.as_str()).copied();
        let deregistered = self.deregistered(snapshot.sources.iter().chain(retired));
        let orphaned_since = grace::orphaned_since(first_seen, deregistered, start_time, self.now);
        let orphan = Orphan {
            snapshot_id: snapshot.snapshot_id.clone(),
            size_gib: snapshot.size_gib,
            source_image_id: Id::from(source_image_id),
            start_time,
            orphaned_since,
        };
        // A description is anyone's to write (`CreateSnapshot`, `CopySnapshot`): only the ledger's
        // record of the AMI mapping it, or this run's retirement of the image, proves the snapshot
        // was that AMI's. (Its clock runs all the same: adopting it later does not restart it.)
        if retired.is_none() && !self.adopt_unwitnessed && !self.witnessed(snapshot, source_image_id) {
            return Verdict::Unwitnessed(orphan);
        }
        let old_enough = self.now.signed_duration_since(start_time) >= self.min_age;
        if old_enough && self.now >= grace::deletable_after(orphaned_since, self.min_age) {
            Verdict::Deletable(orphan)
        } else {
            Verdict::Waiting(orphan)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::listing::SnapshotListing;
    use amiguard::tags;
    use amiguard::tags::Tag;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const ACCOUNT: &str = "123456789012";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn policy() -> Policy {
        Policy { min_age: Duration::hours(24), max_delete_fraction: 1.0, adopt_unwitnessed: false }
    }

    /// What the EC2 adapter does with each page.
    fn read(listings: &[SnapshotListing]) -> Vec<SnapshotFacts> {
        listings.iter().map(|listing| listing.read(tags::KEEP)).collect()
    }

    /// An owned, completed snapshot made 48 hours ago for `ami`.
    fn snapshot(id: &str, ami: &str) -> SnapshotListing {
        SnapshotListing {
            snapshot_id: id.to_string(),
            owner_id: Some(ACCOUNT.to_string()),
            state: "completed".to_string(),
            start_time: Some(now() - Duration::hours(48)),
            size_gib: 8,
            description: format!("Created by CreateImage(i-0123) for {ami} from vol-0abc"),
            volume_id: Some("vol-0abc".to_string()),
            storage_tier: Some("standard".to_string()),
            tags: vec![],
        }
    }

    fn image(id: &str, snapshots: &[&str]) -> ImageFacts {
        ImageFacts {
            image_id: id.into(),
            owner_id: Some(ACCOUNT.into()),
            name: format!("image {id}"),
            state: "available".into(),
            creation_date: Some(now() - Duration::days(400)),
            last_launched_time: None,
            public: false,
            deregistration_protection: None,
            snapshot_ids: snapshots.iter().map(|&s| Id::from(s)).collect(),
            tags: vec![],
        }
    }

    fn no_locks() -> hashbrown::HashSet<Id> {
        hashbrown::HashSet::new()
    }

    /// How long ago the ledger first saw the tests' snapshots orphaned: past the 24-hour grace.
    const ORPHANED_HOURS: i64 = 40;

    /// A memory in which the ledger recorded the AMI each listed snapshot's description names
    /// mapping it, while registered: every orphan among them is witnessed.
    fn witnessing(listings: &[SnapshotListing]) -> Memory {
        let mut memory = Memory::default();
        for listing in listings {
            if let Some(image) = listing.read(tags::KEEP).sources.described() {
                let mapped = memory.mapped_by_gone_images.entry(Id::from(listing.snapshot_id.as_str())).or_default();
                mapped.push(Id::from(image));
            }
        }
        memory
    }

    /// A memory in which the ledger witnessed every listed snapshot's AMI map it, and saw the
    /// snapshot orphaned `ORPHANED_HOURS` ago.
    fn seen_long_ago(listings: &[SnapshotListing]) -> Memory {
        let since = now() - Duration::hours(ORPHANED_HOURS);
        Memory {
            orphaned_since: listings.iter().map(|l| (Id::from(l.snapshot_id.as_str()), since)).collect(),
            ..witnessing(listings)
        }
    }

    fn run(snapshots: &[SnapshotListing], images: &[ImageFacts], binned: &[&str], budget: u64) -> Plan {
        run_with(snapshots, images, binned, budget, &seen_long_ago(snapshots))
    }

    fn run_with(
        snapshots: &[SnapshotListing],
        images: &[ImageFacts],
        binned: &[&str],
        budget: u64,
        memory: &Memory,
    ) -> Plan {
        let binned: BTreeSet<String> = binned.iter().map(|s| s.to_string()).collect();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &read(snapshots),
            images,
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget,
            memory,
            locked: &no_locks(),
        };
        plan(&input, &policy())
    }

    fn only_reason(plan: &Plan) -> KeepReason {
        assert!(plan.to_delete.is_empty() && plan.orphans.is_empty(), "{plan:?}");
        assert_eq!(plan.kept.len(), 1, "{plan:?}");
        *plan.kept.keys().next().unwrap()
    }

    #[test]
    fn a_snapshot_of_a_deregistered_ami_is_an_orphan() {
        let plan = run(&[snapshot("snap-01", "ami-0a")], &[], &[], 10);
        let orphan = Orphan {
            snapshot_id: "snap-01".into(),
            size_gib: 8,
            source_image_id: "ami-0a".into(),
            start_time: now() - Duration::hours(48),
            orphaned_since: now() - Duration::hours(ORPHANED_HOURS),
        };
        assert_eq!(plan.orphans, vec![orphan.clone()]);
        assert_eq!(plan.to_delete, vec![orphan]);
        assert!(plan.kept.is_empty());
        assert_eq!(plan.reclaimable_gib, 8);
        assert_eq!((plan.snapshots_scanned, plan.own_snapshots), (1, 1));
    }

    #[test]
    fn each_keep_reason_on_its_own() {
        let s = snapshot("snap-01", "ami-0a");
        let with = |f: &dyn Fn(&mut SnapshotListing)| {
            let mut s = s.clone();
            f(&mut s);
            vec![s]
        };
        use KeepReason::*;
        type Case<'a> = (Vec<SnapshotListing>, Vec<ImageFacts>, Vec<&'a str>, KeepReason);
        let cases: Vec<Case> = vec![
            (with(&|s| s.owner_id = Some("999999999999".into())), vec![], vec![], NotOwned),
            (with(&|s| s.owner_id = None), vec![], vec![], NotOwned),
            // Referenced by another image than the one it was made for (e.g. a disabled one).
            (vec![s.clone()], vec![image("ami-0b", &["snap-01"])], vec![], ReferencedByImage),
            (vec![s.clone()], vec![image("ami-0a", &[])], vec![], SourceImageExists),
            (vec![s.clone()], vec![], vec!["ami-0a"], SourceImageInRecycleBin),
            (with(&|s| s.tags.push(Tag::new(tags::KEEP, "false"))), vec![], vec![], Protected),
            (with(&|s| s.tags.push(Tag::new("aws:backup:source-resource", "x"))), vec![], vec![], AwsBackup),
            (with(&|s| s.tags.push(Tag::new("aws:dlm:lifecycle-policy-id", "p"))), vec![], vec![], Dlm),
            (with(&|s| s.tags.push(Tag::new("aws:recycle-bin:x", "y"))), vec![], vec![], RecycleBin),
            (with(&|s| s.description = "db before upgrade".into()), vec![], vec![], NotFromImage),
            (with(&|s| s.state = "pending".into()), vec![], vec![], NotCompleted),
            (with(&|s| s.state = "error".into()), vec![], vec![], NotCompleted),
            (with(&|s| s.start_time = None), vec![], vec![], TooYoung),
        ];
        for (snapshots, images, binned, reason) in cases {
            assert_eq!(only_reason(&run(&snapshots, &images, &binned, 10)), reason, "{snapshots:?}");
        }
    }

    #[test]
    fn an_amiguard_image_tag_can_keep_a_snapshot_but_never_make_it_deletable() {
        // A tag anyone can set (or copy) naming a deregistered AMI: still not from an image.
        let mut tagged_only = snapshot("snap-01", "ami-0a");
        tagged_only.description = String::new();
        tagged_only.tags.push(Tag::new(tags::IMAGE, "ami-0c"));
        assert_eq!(only_reason(&run(std::slice::from_ref(&tagged_only), &[], &[], 10)), KeepReason::NotFromImage);

        // EC2's description decides candidacy; the tag's AMI, while live or binned, keeps it.
        let mut s = snapshot("snap-01", "ami-0a");
        s.tags.push(Tag::new(tags::IMAGE, "ami-0c"));
        assert_eq!(run(std::slice::from_ref(&s), &[], &[], 10).to_delete[0].source_image_id, "ami-0a");
        let live_tagged = [image("ami-0c", &[])];
        assert_eq!(only_reason(&run(std::slice::from_ref(&s), &live_tagged, &[], 10)), KeepReason::SourceImageExists);
        assert_eq!(only_reason(&run(&[s], &[], &["ami-0c"], 10)), KeepReason::SourceImageInRecycleBin);
    }

    #[test]
    fn orphans_that_failed_before_queue_behind_fresh_ones() {
        let mut older = snapshot("snap-01", "ami-0a");
        older.start_time = Some(now() - Duration::days(300));
        let newer = snapshot("snap-02", "ami-0b");
        let both = [older, newer];
        let mut memory = seen_long_ago(&both);
        assert_eq!(run_with(&both, &[], &[], 1, &memory).to_delete[0].snapshot_id, "snap-01", "oldest first");
        memory.failed_before.insert(Id::from("snap-01"));
        let plan = run_with(&both, &[], &[], 1, &memory);
        assert_eq!(plan.to_delete.iter().map(|o| o.snapshot_id.as_str()).collect::<Vec<_>>(), ["snap-02"]);
        assert_eq!(plan.orphans.iter().map(|o| o.snapshot_id.as_str()).collect::<Vec<_>>(), ["snap-02", "snap-01"]);
        assert_eq!(plan.kept.get(&KeepReason::OverCap), Some(&1));
        // With room for both, it is tried again, last.
        assert_eq!(run_with(&both, &[], &[], 10, &memory).to_delete.len(), 2);
    }

    #[test]
    fn grace_period_boundary_with_an_injected_clock() {
        let at = |age: Duration| {
            let mut s = snapshot("snap-01", "ami-0a");
            s.start_time = Some(now() - age);
            run(&[s], &[], &[], 10)
        };
        assert_eq!(only_reason(&at(Duration::hours(24) - Duration::seconds(1))), KeepReason::TooYoung);
        assert_eq!(at(Duration::hours(24)).to_delete.len(), 1);
        assert_eq!(at(Duration::days(30)).to_delete.len(), 1);
        // A start time in the future (clock skew) is young, not negative-old.
        assert_eq!(only_reason(&at(-Duration::hours(1))), KeepReason::TooYoung);

        let mut s = snapshot("snap-01", "ami-0a");
        s.start_time = Some(now() - Duration::minutes(5));
        let zero = Policy { min_age: Duration::zero(), ..policy() };
        let binned = BTreeSet::new();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &read(std::slice::from_ref(&s)),
            images: &[],
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget: 1,
            memory: &witnessing(std::slice::from_ref(&s)),
            locked: &no_locks(),
        };
        assert_eq!(plan(&input, &zero).to_delete.len(), 1, "MIN_AGE_HOURS=0 has no grace period");
    }

    #[test]
    fn the_grace_period_counts_from_when_amiguard_saw_the_orphan_not_from_its_start_time() {
        // Two years old, its AMI deregistered just before this sweep, which is the first to see it
        // orphaned: it waits the whole grace period.
        let mut old = snapshot("snap-01", "ami-0a");
        old.start_time = Some(now() - Duration::days(730));
        let old = [old];
        let first = run_with(&old, &[], &[], 10, &witnessing(&old));
        assert!(first.orphans.is_empty() && first.to_delete.is_empty(), "{first:?}");
        assert_eq!(first.kept, BTreeMap::from([(KeepReason::TooYoung, 1)]));
        assert_eq!(first.waiting.len(), 1);
        assert_eq!((first.waiting[0].orphaned_since, first.min_age), (now(), Duration::hours(24)));

        let seen = |hours: i64| Memory {
            orphaned_since: [(Id::from("snap-01"), now() - Duration::hours(hours))].into_iter().collect(),
            ..witnessing(&old)
        };
        assert_eq!(run_with(&old, &[], &[], 10, &seen(23)).waiting.len(), 1, "23 hours of observed orphanhood");
        let due = run_with(&old, &[], &[], 10, &seen(24));
        assert_eq!((due.to_delete.len(), due.to_delete[0].orphaned_since), (1, now() - Duration::hours(24)));

        // An `EC2 AMI State Change` to deregistered, 25 hours ago, starts the clock earlier.
        let event = Memory {
            deregistered_at: [(Id::from("ami-0a"), now() - Duration::hours(25))].into_iter().collect(),
            ..seen(1)
        };
        assert_eq!(run_with(&old, &[], &[], 10, &event).to_delete[0].orphaned_since, now() - Duration::hours(25));
        // The event of another AMI than the snapshot's does not.
        let other = Memory {
            deregistered_at: [(Id::from("ami-0f"), now() - Duration::hours(25))].into_iter().collect(),
            ..seen(1)
        };
        assert_eq!(run_with(&old, &[], &[], 10, &other).waiting.len(), 1);
    }

    #[test]
    fn a_snapshot_the_ledger_saw_mapped_by_a_binned_image_is_kept_whatever_its_description() {
        // Registered into ami-0b from the snapshot: its description still names an older, gone ami-0a.
        let described = snapshot("snap-01", "ami-0a");
        let mut memory = seen_long_ago(std::slice::from_ref(&described));
        memory.mapped_by_gone_images.entry("snap-01".into()).or_default().push("ami-0b".into());
        let binned = run_with(std::slice::from_ref(&described), &[], &["ami-0b"], 10, &memory);
        assert_eq!(only_reason(&binned), KeepReason::SourceImageInRecycleBin);
        // Once ami-0b left the bin for good, nothing keeps the snapshot any more.
        assert_eq!(run_with(std::slice::from_ref(&described), &[], &[], 10, &memory).to_delete.len(), 1);
        // A mapping remembered keeps; it never makes a snapshot deletable: without a description
        // it stays a manual snapshot.
        let mut manual = described;
        manual.description = String::new();
        let manual = [manual];
        assert_eq!(only_reason(&run_with(&manual, &[], &["ami-0b"], 10, &memory)), KeepReason::SourceImageInRecycleBin);
        assert_eq!(only_reason(&run_with(&manual, &[], &[], 10, &memory)), KeepReason::NotFromImage);
    }

    #[test]
    fn a_description_makes_a_candidate_only_the_ledgers_witness_or_adoption_makes_it_deletable() {
        let forged = snapshot("snap-01", "ami-0a");
        let forged = std::slice::from_ref(&forged);
        let seen_orphaned = Memory { mapped_by_gone_images: HashMap::new(), ..seen_long_ago(forged) };
        // Its description alone (anyone can write it): kept, listed with its size and its clock.
        let kept = run_with(forged, &[], &[], 10, &seen_orphaned);
        assert_eq!(only_reason(&kept), KeepReason::Unwitnessed);
        assert_eq!(kept.unwitnessed.len(), 1);
        assert_eq!((kept.unwitnessed[0].size_gib, kept.unwitnessed_gib), (8, 8));
        assert_eq!(kept.unwitnessed[0].orphaned_since, now() - Duration::hours(ORPHANED_HOURS), "its clock runs");
        assert!(kept.waiting.is_empty(), "not waiting to be deleted: kept until adopted");
        // The ledger saw another AMI map it (it was registered into one): not its described AMI's.
        let mut other = seen_orphaned.clone();
        other.mapped_by_gone_images.insert("snap-01".into(), vec!["ami-0b".into()]);
        assert_eq!(only_reason(&run_with(forged, &[], &[], 10, &other)), KeepReason::Unwitnessed);
        // The ledger saw ami-0a map it while registered: witnessed.
        assert_eq!(run_with(forged, &[], &[], 10, &seen_long_ago(forged)).to_delete.len(), 1);
        // Adopted by the operator: an orphan like the others, on the clock it kept.
        let adopting = Policy { adopt_unwitnessed: true, ..policy() };
        let binned = BTreeSet::new();
        let snapshots = read(forged);
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &snapshots,
            images: &[],
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget: 10,
            memory: &seen_orphaned,
            locked: &no_locks(),
        };
        let adopted = plan(&input, &adopting);
        assert_eq!(adopted.to_delete.len(), 1);
        assert_eq!(adopted.to_delete[0].orphaned_since, now() - Duration::hours(ORPHANED_HOURS));
        assert!(adopted.unwitnessed.is_empty());
        // Adopted but first seen now: it waits out the grace period like any orphan.
        let fresh = Memory::default();
        let waiting = plan(&PlanInput { memory: &fresh, ..input }, &adopting);
        assert_eq!((waiting.waiting.len(), waiting.to_delete.len()), (1, 0));
        // An image this run retired maps it: witnessed by the retirement.
        let retired = [image("ami-0r", &["snap-01"])];
        assert_eq!(plan(&PlanInput { retired_images: &retired, ..input }, &policy()).to_delete.len(), 1);
    }

    #[test]
    fn a_shared_orphan_is_kept_and_the_next_in_line_takes_its_place() {
        let snapshots: Vec<SnapshotListing> = (0..5)
            .map(|i| {
                let mut s = snapshot(&format!("snap-0{i}"), &format!("ami-0{i}"));
                s.start_time = Some(now() - Duration::days(10 - i));
                s
            })
            .collect();
        let mut plan = run(&snapshots, &[], &[], 2);
        assert_eq!(plan.next_to_ask(0, 0, 2), 0..2, "the two about to be deleted");
        // snap-00 is shared: one more is asked about, and none beyond the budget.
        assert_eq!(plan.next_to_ask(2, 1, 2), 2..3);
        assert_eq!(plan.next_to_ask(3, 1, 2), 3..3);
        let shared: hashbrown::HashSet<Id> = [Id::from("snap-00")].into_iter().collect();
        plan.keep_shared(3, &shared);
        let ids: Vec<&str> = plan.to_delete.iter().map(|o| o.snapshot_id.as_str()).collect();
        assert_eq!(ids, ["snap-01", "snap-02"]);
        assert_eq!(plan.kept, BTreeMap::from([(KeepReason::Shared, 1), (KeepReason::OverCap, 2)]));
        assert_eq!(plan.orphans.len(), 5, "still reported as orphans");
        // Nothing is asked when the circuit breaker tripped.
        let tripped = Plan {
            circuit_breaker: Some(CircuitBreakerTrip { orphans: 5, own_snapshots: 5, max_fraction: 0.5 }),
            ..plan
        };
        assert_eq!(tripped.next_to_ask(0, 0, 2), 0..0);
    }

    #[test]
    fn manual_snapshots_are_counted_with_their_size() {
        let mut a = snapshot("snap-01", "ami-0a");
        a.description = String::new();
        a.size_gib = 100;
        let mut b = a.clone();
        b.snapshot_id = "snap-02".into();
        b.size_gib = 20;
        b.start_time = Some(now());
        let plan = run(&[a, b], &[], &[], 10);
        assert_eq!(plan.unreferenced_manual, SnapshotTotal { count: 2, gib: 120 });
        assert_eq!(plan.kept, BTreeMap::from([(KeepReason::NotFromImage, 2)]));
    }

    #[test]
    fn snapshots_of_retired_images_count_as_made_for_them() {
        let mut s = snapshot("snap-01", "ami-0a");
        s.description = "registered from a manual snapshot".into();
        let retired = [image("ami-0r", &["snap-01"])];
        let binned = BTreeSet::new();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &read(std::slice::from_ref(&s)),
            images: &[],
            retired_images: &retired,
            images_in_recycle_bin: &binned,
            budget: 10,
            memory: &seen_long_ago(std::slice::from_ref(&s)),
            locked: &no_locks(),
        };
        assert_eq!(plan(&input, &policy()).to_delete[0].source_image_id, "ami-0r");
        // But another image that still maps it keeps it.
        let images = [image("ami-0k", &["snap-01"])];
        let input = PlanInput { images: &images, ..input };
        assert_eq!(only_reason(&plan(&input, &policy())), KeepReason::ReferencedByImage);
    }

    #[test]
    fn the_cap_takes_the_oldest_and_counts_the_rest() {
        let snapshots: Vec<SnapshotListing> = (0..5)
            .map(|i| {
                let mut s = snapshot(&format!("snap-0{i}"), "ami-0a");
                s.start_time = Some(now() - Duration::days(10 - i));
                s
            })
            .collect();
        let plan = run(&snapshots, &[], &[], 2);
        assert_eq!(plan.orphans.len(), 5);
        let ids: Vec<&str> = plan.to_delete.iter().map(|o| o.snapshot_id.as_str()).collect();
        assert_eq!(ids, ["snap-00", "snap-01"]);
        assert_eq!(plan.kept, BTreeMap::from([(KeepReason::OverCap, 3)]));
        assert_eq!(run(&snapshots, &[], &[], 0).kept, BTreeMap::from([(KeepReason::OverCap, 5)]));
    }

    #[test]
    fn the_circuit_breaker_compares_all_orphans_with_own_snapshots() {
        // 3 orphans, 2 referenced: 3 of 5 own snapshots = 60%; foreign snapshots do not count.
        let mut snapshots: Vec<SnapshotListing> =
            (0..5).map(|i| snapshot(&format!("snap-0{i}"), &format!("ami-0{i}"))).collect();
        let mut foreign = snapshot("snap-0f", "ami-0f");
        foreign.owner_id = Some("999999999999".into());
        snapshots.push(foreign);
        let images = [image("ami-0b", &["snap-03", "snap-04"])];
        let binned = BTreeSet::new();
        let memory = seen_long_ago(&snapshots);
        let snapshots = read(&snapshots);
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &snapshots,
            images: &images,
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget: 1,
            memory: &memory,
            locked: &no_locks(),
        };
        let half = Policy { max_delete_fraction: 0.5, ..policy() };
        let tripped = plan(&input, &half);
        assert!(tripped.to_delete.is_empty());
        assert_eq!(tripped.orphans.len(), 3, "the orphans are still reported");
        assert_eq!(
            tripped.circuit_breaker,
            Some(CircuitBreakerTrip { orphans: 3, own_snapshots: 5, max_fraction: 0.5 })
        );
        assert_eq!(tripped.kept[&KeepReason::CircuitBreaker], 3);
        assert!(tripped.circuit_breaker.unwrap().to_string().contains("3 orphans of 5 own snapshots"));
        // The breaker looks at all orphans, not at the one the cap lets through.
        let sixty = Policy { max_delete_fraction: 0.6, ..policy() };
        let allowed = plan(&input, &sixty);
        assert_eq!(allowed.circuit_breaker, None, "exactly the fraction is allowed");
        assert_eq!(allowed.to_delete.len(), 1);
        let none = Policy { max_delete_fraction: 0.0, ..policy() };
        assert!(plan(&input, &none).to_delete.is_empty());
        assert_eq!(plan(&PlanInput { snapshots: &[], ..input }, &none).circuit_breaker, None);
    }

    #[test]
    fn orphans_are_ordered_by_start_time_then_the_whole_id() {
        let at = |id: &str, age: Duration| Orphan {
            snapshot_id: id.into(),
            size_gib: 1,
            source_image_id: "ami-0a".into(),
            start_time: now() - age,
            orphaned_since: now(),
        };
        // Ids longer than the 24 bytes compared as integers differ only after them.
        let long = "snap-0123456789abcdef012345";
        let mut orphans = vec![
            at(&format!("{long}b"), Duration::hours(5)),
            at(&format!("{long}a"), Duration::hours(5)),
            at("snap-2", Duration::hours(5)),
            at("snap-10", Duration::hours(5)),
            at("snap-1", Duration::hours(5)),
            at("snap-9", Duration::hours(9)),
            at("snap-8", Duration::hours(5) + Duration::nanoseconds(1)),
            at("snap-7", Duration::days(365 * 60)),
        ];
        sort_oldest_first(&mut orphans);
        let ids: Vec<&str> = orphans.iter().map(|o| o.snapshot_id.as_str()).collect();
        let (a, b) = (format!("{long}a"), format!("{long}b"));
        assert_eq!(ids, ["snap-7", "snap-9", "snap-8", a.as_str(), b.as_str(), "snap-1", "snap-10", "snap-2"]);
    }

    #[test]
    fn repeated_listing_entries_must_all_agree() {
        let orphan = snapshot("snap-01", "ami-0a");
        let mut protected = orphan.clone();
        protected.tags.push(Tag::new(tags::KEEP, ""));
        for snapshots in [vec![orphan.clone(), protected.clone()], vec![protected, orphan.clone()]] {
            let plan = run(&snapshots, &[], &[], 10);
            assert_eq!(plan.snapshots_scanned, 1);
            assert_eq!(only_reason(&plan), KeepReason::Protected);
        }
        assert_eq!(run(&[orphan.clone(), orphan], &[], &[], 10).to_delete.len(), 1);
    }

    // ---- properties ----

    const AMIS: usize = 6;

    fn ami(i: usize) -> String {
        format!("ami-0{i:x}")
    }

    prop_compose! {
        fn arb_snapshot()(
            owner in prop_oneof![3 => Just(Some(ACCOUNT)), 1 => Just(Some("999999999999")), 1 => Just(None)],
            state in prop_oneof![4 => Just("completed"), 1 => Just("pending"), 1 => Just("error")],
            age_hours in prop::option::weighted(0.9, -5i64..100),
            size_gib in 1u64..2000,
            volume_id in prop_oneof![3 => Just(Some("vol-01")), 1 => Just(Some(super::super::origin::COPY_VOLUME_ID)), 1 => Just(Some("vol-02")), 1 => Just(None)],
            storage_tier in prop_oneof![4 => Just(Some("standard")), 1 => Just(Some("archive")), 1 => Just(None)],
            description in prop_oneof![
                (0..AMIS).prop_map(|i| format!("Created by CreateImage(i-0abc) for {}", ami(i))),
                (0..AMIS).prop_map(|i| format!("Created by CreateImage(i-0abc) for {} from vol-01", ami(i))),
                (0..AMIS).prop_map(|i| format!(
                    "Copied for DestinationAmi {} from SourceAmi ami-0ff for SourceSnapshot snap-0ee. Task created on 1.",
                    ami(i)
                )),
                Just(String::new()),
                Just("manual copy before upgrade".to_string()),
                Just("This snapshot is created by the AWS Backup service.".to_string()),
                Just("Created for policy: policy-0123".to_string()),
            ],
            markers in prop::collection::vec(prop_oneof![
                Just(Tag::new(tags::KEEP, "true")),
                Just(Tag::new("AMIGUARD:Keep", "")),
                Just(Tag::new("aws:backup:source-resource", "arn")),
                Just(Tag::new("aws:dlm:lifecycle-policy-id", "policy-1")),
                Just(Tag::new("aws:recycle-bin:x", "y")),
                (0..AMIS).prop_map(|i| Tag::new(tags::IMAGE, ami(i))),
                Just(Tag::new("Name", "db")),
            ], 0..3),
        ) -> SnapshotListing {
            SnapshotListing {
                snapshot_id: String::new(),
                owner_id: owner.map(str::to_string),
                state: state.to_string(),
                start_time: age_hours.map(|h| now() - Duration::hours(h)),
                size_gib,
                description,
                volume_id: volume_id.map(str::to_string),
                storage_tier: storage_tier.map(str::to_string),
                tags: markers,
            }
        }
    }

    #[derive(Debug, Clone)]
    struct World {
        snapshots: Vec<SnapshotListing>,
        images: Vec<ImageFacts>,
        retired: Vec<ImageFacts>,
        binned: BTreeSet<String>,
        budget: u64,
        fraction: f64,
        min_age_hours: i64,
        /// How many partitions the lookups use (`2^bits`): many, even on a small world.
        partition_bits: u32,
        memory: Memory,
        /// Snapshots under an EBS snapshot lock.
        locked: hashbrown::HashSet<Id>,
        /// `ADOPT_UNWITNESSED_ORPHANS`.
        adopt: bool,
    }

    fn arb_world() -> impl Strategy<Value = World> {
        (
            prop::collection::vec(arb_snapshot(), 0..40),
            prop::collection::vec((0..AMIS, prop::collection::vec(0usize..40, 0..4), any::<bool>()), 0..AMIS),
            prop::collection::btree_set((0..AMIS).prop_map(ami), 0..3),
            0u64..50,
            prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(1.0)],
            prop_oneof![Just(0i64), Just(24)],
            prop::bool::weighted(0.3),
            0u32..5,
            (
                prop::collection::vec(prop::option::weighted(0.6, -5i64..60), 40),
                prop::collection::btree_map((0..AMIS).prop_map(ami), -5i64..60, 0..3),
                prop::collection::vec((0usize..40, (0..AMIS).prop_map(ami)), 0..4),
                prop::collection::btree_set(0usize..40, 0..4),
            ),
            // Adoption, and the listing entries whose described AMI the ledger saw map them.
            (any::<bool>(), prop::collection::btree_set(0usize..40, 0..40)),
        )
            .prop_map(
                |(
                    mut snapshots,
                    images,
                    binned,
                    budget,
                    fraction,
                    min_age_hours,
                    repeats,
                    partition_bits,
                    remembered,
                    (adopt, witnessed),
                )| {
                    let (first_seen, deregistered, gone_mappings, locked) = remembered;
                    let locked = locked.iter().map(|i| Id::from(format!("snap-{i:04x}").as_str())).collect();
                    // Sometimes the listing repeats snapshots (it changed while being paged): the
                    // copies of one id may then disagree.
                    let distinct = if repeats { snapshots.len() / 2 + 1 } else { snapshots.len().max(1) };
                    for (i, s) in snapshots.iter_mut().enumerate() {
                        s.snapshot_id = format!("snap-{:04x}", i % distinct);
                    }
                    let (mut live, mut retired) = (Vec::new(), Vec::new());
                    for (i, refs, is_retired) in images {
                        let refs: Vec<String> = refs.iter().map(|r| format!("snap-{r:04x}")).collect();
                        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                        if is_retired {
                            retired.push(image(&ami(i), &refs))
                        } else {
                            live.push(image(&ami(i), &refs))
                        }
                    }
                    // What the ledger remembers: when some snapshots were first seen orphaned
                    // (hours ago), when some AMIs were seen deregistered, gone images' mappings.
                    let at = |hours: i64| now() - Duration::hours(hours);
                    let mut memory = Memory::default();
                    for (i, hours) in first_seen.iter().enumerate() {
                        if let Some(hours) = hours {
                            memory.orphaned_since.insert(Id::from(format!("snap-{i:04x}").as_str()), at(*hours));
                        }
                    }
                    memory.deregistered_at =
                        deregistered.iter().map(|(id, h)| (Id::from(id.as_str()), at(*h))).collect();
                    for (snapshot, image) in gone_mappings {
                        memory
                            .mapped_by_gone_images
                            .entry(Id::from(format!("snap-{snapshot:04x}").as_str()))
                            .or_default()
                            .push(Id::from(image.as_str()));
                    }
                    for listing in witnessed.iter().filter_map(|&i| snapshots.get(i)) {
                        if let Some(image) = listing.read(tags::KEEP).sources.described() {
                            let id = Id::from(listing.snapshot_id.as_str());
                            memory.mapped_by_gone_images.entry(id).or_default().push(Id::from(image));
                        }
                    }
                    World {
                        snapshots,
                        images: live,
                        retired,
                        binned,
                        budget,
                        fraction,
                        min_age_hours,
                        partition_bits,
                        memory,
                        locked,
                        adopt,
                    }
                },
            )
    }

    fn plan_world(world: &World) -> Plan {
        plan_world_in(world, world.partition_bits)
    }

    fn plan_world_in(world: &World, partition_bits: u32) -> Plan {
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots: &read(&world.snapshots),
            images: &world.images,
            retired_images: &world.retired,
            images_in_recycle_bin: &world.binned,
            budget: world.budget,
            memory: &world.memory,
            locked: &world.locked,
        };
        let policy = Policy {
            min_age: Duration::hours(world.min_age_hours),
            max_delete_fraction: world.fraction,
            adopt_unwitnessed: world.adopt,
        };
        plan_in_partitions(&input, &policy, partition_bits)
    }

    /// Whether the world's ledger saw the AMI the snapshot's description names map it, or this
    /// run retired an image that maps it: read from the facts, not through the planner.
    fn witnessed(world: &World, s: &SnapshotListing) -> bool {
        let retired = world.retired.iter().any(|i| i.snapshot_ids.iter().any(|id| *id == s.snapshot_id));
        let mapped = world.memory.mapped_by_gone_images.get(s.snapshot_id.as_str());
        retired || mapped.is_some_and(|images| images.iter().any(|image| s.description.contains(image.as_str())))
    }

    fn has_key_prefix(s: &SnapshotListing, prefix: &str) -> bool {
        s.tags.iter().any(|t| t.key.to_ascii_lowercase().starts_with(prefix))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Checked against the facts directly, not through the planner's own helpers.
        #[test]
        fn never_deletes_a_snapshot_that_a_rule_keeps(world in arb_world()) {
            let plan = plan_world(&world);
            let referenced: BTreeSet<&str> =
                world.images.iter().flat_map(|i| i.snapshot_ids.iter().map(Id::as_str)).collect();
            let live: BTreeSet<&str> = world.images.iter().map(|i| i.image_id.as_str()).collect();
            // Every copy of a repeated snapshot must pass every rule.
            let copies: Vec<&SnapshotListing> = plan
                .to_delete
                .iter()
                .flat_map(|orphan| world.snapshots.iter().filter(|s| s.snapshot_id == orphan.snapshot_id.as_str()))
                .collect();
            let deleted_ids: BTreeSet<&str> = copies.iter().map(|s| s.snapshot_id.as_str()).collect();
            prop_assert_eq!(deleted_ids.len(), plan.to_delete.len(), "deletes only what was listed");
            for s in copies {
                prop_assert_eq!(s.owner_id.as_deref(), Some(ACCOUNT), "not owned");
                prop_assert!(!referenced.contains(s.snapshot_id.as_str()), "referenced by an image");
                for image in live.iter().copied().chain(world.binned.iter().map(String::as_str)) {
                    // Any AMI the snapshot names, by description or tag, keeps it while it exists.
                    prop_assert!(!s.description.contains(image), "its AMI {} exists or is in the bin", image);
                    prop_assert!(!s.tags.iter().any(|t| t.key == tags::IMAGE && t.value == image), "its AMI {} exists", image);
                }
                prop_assert!(!s.tags.iter().any(|t| t.key.eq_ignore_ascii_case(tags::KEEP)), "protected, in any letter case");
                prop_assert!(!world.locked.contains(s.snapshot_id.as_str()), "locked");
                prop_assert!(s.storage_tier.as_deref().is_none_or(|tier| tier == "standard"), "archived");
                prop_assert!(!has_key_prefix(s, "aws:backup:") && !s.description.contains("AWS Backup"), "Backup");
                prop_assert!(!has_key_prefix(s, "aws:dlm:") && !s.description.starts_with("Created for policy"), "DLM");
                prop_assert!(!has_key_prefix(s, "aws:recycle-bin:"), "Recycle Bin");
                prop_assert_eq!(s.state.as_str(), "completed");
                let age = now() - s.start_time.unwrap();
                prop_assert!(age >= Duration::hours(world.min_age_hours), "too young");
                // EC2's own words, consistent with the snapshot: a tag alone never makes it
                // deletable, a copy is judged only by CopyImage's words, and a `from vol-…` must
                // be its own volume.
                let copied = s.description.starts_with("Copied for DestinationAmi ");
                let created = s.description.starts_with("Created by CreateImage(")
                    && s.volume_id.as_deref() != Some(super::super::origin::COPY_VOLUME_ID)
                    && (!s.description.contains(" from vol-") || s.description.ends_with(&format!(" from {}", s.volume_id.as_deref().unwrap_or("?"))));
                let retired = world.retired.iter().any(|i| i.snapshot_ids.iter().any(|id| *id == s.snapshot_id));
                prop_assert!(copied || created || retired, "not made for an AMI by EC2's own words: {:?}", s);
                // Orphaned for the grace period by amiguard's own observation: a sighting that
                // old, or a deregistration of an AMI it names (or was retired with) that old.
                let min_age = Duration::hours(world.min_age_hours);
                let sighted = world.memory.orphaned_since.get(s.snapshot_id.as_str()).is_some_and(|t| now() - *t >= min_age);
                let named = |image: &str| s.description.contains(image)
                    || s.tags.iter().any(|t| t.key == tags::IMAGE && t.value == image)
                    || world.retired.iter().any(|i| i.image_id == image && i.snapshot_ids.iter().any(|id| *id == s.snapshot_id));
                let event = world.memory.deregistered_at.iter().any(|(image, t)| named(image) && now() - *t >= min_age);
                prop_assert!(min_age.is_zero() || sighted || event, "deleted before MIN_AGE_HOURS of observed orphanhood");
                // No image the ledger saw map it is in the Recycle Bin.
                for image in world.memory.mapped_by_gone_images.get(s.snapshot_id.as_str()).into_iter().flatten() {
                    prop_assert!(!world.binned.contains(image.as_str()), "a binned image {} mapped it", image);
                }
                prop_assert!(world.adopt || witnessed(&world, s), "not witnessed, not adopted: {:?}", s);
            }
        }

        /// No plan ever deletes an orphan that is not witnessed (the ledger saw the AMI its
        /// description names map it, or this run retired an image that maps it) unless adoption
        /// is on; adoption only ever adds the unwitnessed to the orphans, and a kept unwitnessed
        /// orphan is neither deleted nor waiting.
        #[test]
        fn no_plan_deletes_an_unwitnessed_orphan_unless_adoption_is_on(world in arb_world()) {
            let kept = plan_world(&World { adopt: false, ..world.clone() });
            for orphan in kept.to_delete.iter().chain(&kept.orphans).chain(&kept.waiting) {
                let copies: Vec<&SnapshotListing> =
                    world.snapshots.iter().filter(|s| s.snapshot_id == orphan.snapshot_id.as_str()).collect();
                prop_assert!(copies.iter().all(|s| witnessed(&world, s)), "{:?} is not witnessed", orphan);
            }
            let listed = |list: &[Orphan]| -> BTreeSet<String> { list.iter().map(|o| o.snapshot_id.to_string()).collect() };
            let unwitnessed = listed(&kept.unwitnessed);
            prop_assert!(unwitnessed.is_disjoint(&listed(&kept.to_delete)));
            prop_assert!(unwitnessed.is_disjoint(&listed(&kept.waiting)));
            prop_assert_eq!(kept.kept.get(&KeepReason::Unwitnessed).copied().unwrap_or(0), kept.unwitnessed.len() as u64);
            prop_assert_eq!(kept.unwitnessed_gib, kept.unwitnessed.iter().map(|o| o.size_gib).sum::<u64>());

            let adopted = plan_world(&World { adopt: true, ..world });
            prop_assert!(adopted.unwitnessed.is_empty());
            let candidates = |plan: &Plan| -> BTreeSet<String> {
                listed(&plan.orphans).union(&listed(&plan.waiting)).cloned().collect()
            };
            let before: BTreeSet<String> = candidates(&kept).union(&unwitnessed).cloned().collect();
            prop_assert_eq!(candidates(&adopted), before, "adoption turns exactly the unwitnessed into orphans");
            // Adopting them does not restart their clock.
            for orphan in adopted.orphans.iter().chain(&adopted.waiting) {
                if let Some(known) = kept.unwitnessed.iter().find(|u| u.snapshot_id == orphan.snapshot_id) {
                    prop_assert_eq!(known.orphaned_since, orphan.orphaned_since);
                }
            }
        }

        /// Asked in turn, as the sweep asks, with any answers: no shared orphan is ever deleted,
        /// the budget holds, only orphans in line are asked about, and every snapshot is still
        /// accounted for once.
        #[test]
        fn a_shared_orphan_is_never_deleted_and_the_budget_holds(
            world in arb_world(),
            shared_picks in prop::collection::btree_set(0usize..40, 0..40),
        ) {
            let mut plan = plan_world(&world);
            let shared_ids: BTreeSet<String> = shared_picks.iter().map(|i| format!("snap-{i:04x}")).collect();
            let (mut checked, mut found) = (0, hashbrown::HashSet::new());
            loop {
                let next = plan.next_to_ask(checked, found.len(), world.budget);
                if next.is_empty() {
                    break;
                }
                prop_assert_eq!(next.start, checked, "asked in line");
                for orphan in &plan.orphans[next.clone()] {
                    if shared_ids.contains(orphan.snapshot_id.as_str()) {
                        found.insert(orphan.snapshot_id.clone());
                    }
                }
                checked = next.end;
            }
            plan.keep_shared(checked, &found);
            prop_assert!(plan.to_delete.len() as u64 <= world.budget);
            prop_assert!(plan.to_delete.iter().all(|o| !shared_ids.contains(o.snapshot_id.as_str())));
            if plan.circuit_breaker.is_none() {
                let fresh = plan.orphans.iter().filter(|o| !shared_ids.contains(o.snapshot_id.as_str())).count();
                prop_assert_eq!(plan.to_delete.len() as u64, (fresh as u64).min(world.budget), "the budget is filled");
            } else {
                prop_assert!(plan.to_delete.is_empty() && checked == 0);
            }
            let kept: u64 = plan.kept.values().sum();
            prop_assert_eq!(kept + plan.to_delete.len() as u64, plan.snapshots_scanned);
        }

        #[test]
        fn the_plan_does_not_depend_on_input_order(world in arb_world(), seed in any::<u64>()) {
            let mut shuffled = world.clone();
            let mut rng = seed;
            let mut next = move |n: usize| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as usize % n.max(1)
            };
            for list in [&mut shuffled.images, &mut shuffled.retired] {
                for i in (1..list.len()).rev() { let j = next(i + 1); list.swap(i, j); }
                for image in list.iter_mut() {
                    for i in (1..image.snapshot_ids.len()).rev() { let j = next(i + 1); image.snapshot_ids.swap(i, j); }
                }
            }
            for i in (1..shuffled.snapshots.len()).rev() { let j = next(i + 1); shuffled.snapshots.swap(i, j); }
            prop_assert_eq!(plan_world(&world), plan_world(&shuffled));
        }

        /// Partitions only change where the lookups run, never what they find.
        #[test]
        fn the_plan_does_not_depend_on_partitioning(world in arb_world()) {
            prop_assert_eq!(plan_world_in(&world, 0), plan_world_in(&world, world.partition_bits));
        }

        #[test]
        fn cap_and_circuit_breaker_hold_and_every_snapshot_is_accounted_for(world in arb_world()) {
            let plan = plan_world(&world);
            prop_assert!(plan.to_delete.len() as u64 <= world.budget);
            if !plan.to_delete.is_empty() {
                prop_assert!(plan.orphans.len() as f64 <= world.fraction * plan.own_snapshots as f64);
            }
            prop_assert_eq!(plan.to_delete.as_slice(), &plan.orphans[..plan.to_delete.len()]);
            let kept: u64 = plan.kept.values().sum();
            prop_assert_eq!(kept + plan.to_delete.len() as u64, plan.snapshots_scanned);
            // Every waiting orphan is counted as too young, and none of them is deleted.
            prop_assert!(plan.kept.get(&KeepReason::TooYoung).copied().unwrap_or(0) >= plan.waiting.len() as u64);
            prop_assert!(plan.waiting.iter().all(|w| !plan.to_delete.iter().any(|d| d.snapshot_id == w.snapshot_id)));
            prop_assert!(plan.waiting.iter().all(|w| w.orphaned_since <= now()));
            let distinct: BTreeSet<&str> = world.snapshots.iter().map(|s| s.snapshot_id.as_str()).collect();
            prop_assert_eq!(plan.snapshots_scanned, distinct.len() as u64);
            prop_assert_eq!(plan.reclaimable_gib, plan.orphans.iter().map(|o| o.size_gib).sum::<u64>());
            prop_assert!(plan.orphans.windows(2).all(|w| (w[0].start_time, &w[0].snapshot_id) < (w[1].start_time, &w[1].snapshot_id)));
        }
    }
}
