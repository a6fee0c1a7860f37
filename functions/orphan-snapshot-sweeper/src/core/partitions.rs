//! A large region's snapshots listed in partitions side by side (issue 23): which partitions,
//! in which order, how fast (EC2's token bucket), what the ledger keeps of each pass, whether a
//! partitioned listing covered what the last complete pass listed, and how the partitions' plans
//! make the region's plan.
//!
//! A snapshot's fate depends only on the complete image listing, the ledger and its own facts, so
//! each partition is planned alone as it arrives ([`super::plan`] with no budget and no circuit
//! breaker), and [`merge`] then applies the rules that need the whole region, exactly as
//! [`super::plan`] does on one listing: the order of deletions (oldest first, failed before
//! last), the circuit breaker (over the complete partitions' own snapshots) and the budget.
//! A partition whose listing was cut is never merged: it deletes nothing.
//!
//! The partitions are EC2's `snapshot-id` filter on the id's last hex digit: `snap-*0` ...
//! `snap-*f`. EC2's filter values are case-sensitive; `*` matches zero or more characters, `?`
//! exactly one (a backslash escapes them). EC2 writes snapshot ids in lower-case hex, so every
//! id is in exactly one partition ([`partition_of`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::facts::Id;
use super::planner::{exceeds_fraction, CircuitBreakerTrip, Plan, Policy};

/// How many partitions a partitioned listing has: one per last hex digit.
pub const PARTITIONS: usize = 16;
const HEX: &[u8; PARTITIONS] = b"0123456789abcdef";

/// EC2's token bucket for paginated `DescribeSnapshots` calls: its burst, and its refill a second.
pub const BUCKET_CAPACITY: f64 = 100.0;
pub const BUCKET_REFILL_PER_SECOND: f64 = 20.0;
/// How many throttled answers in a row one page may get before its partition is cut.
pub const MAX_THROTTLED_RETRIES: u32 = 8;
/// How many transient failures in a row (a 5xx answer, a connection reset, a timeout) one page
/// may get before its partition is cut; each retried after the same pause as a throttled answer.
pub const MAX_TRANSIENT_RETRIES: u32 = 3;

/// A listing that finds more than this fraction fewer snapshots than the last complete pass
/// listed in the same partitions, or in any one of them, deletes nothing ("markedly fewer").
pub const COVERAGE_SHORTFALL: f64 = 0.10;

/// The `snapshot-id` filter value of partition `index` (`snap-*0` ... `snap-*f`).
pub fn filter(index: usize) -> String {
    format!("snap-*{}", HEX[index % PARTITIONS] as char)
}

/// The partition whose filter matches `snapshot_id` (`None`: an id not in EC2's form, which no
/// partition lists).
pub fn partition_of(snapshot_id: &str) -> Option<usize> {
    let last = *snapshot_id.strip_prefix("snap-")?.as_bytes().last()?;
    HEX.iter().position(|&h| h == last)
}

/// How many snapshots of `ids` each partition holds, and how many no partition holds.
pub fn counts<'a>(ids: impl Iterator<Item = &'a str>) -> (Vec<u64>, u64) {
    let (mut counts, mut outside) = (vec![0u64; PARTITIONS], 0);
    for id in ids {
        match partition_of(id) {
            Some(p) => counts[p] += 1,
            None => outside += 1,
        }
    }
    (counts, outside)
}

/// A client-side token bucket (EC2's own shape: a burst, a refill a second), shared by the
/// partitions of a region. A caller takes a token and waits what it answers: a token taken
/// from an empty bucket is reserved, so waiting callers are served in turn. Times are seconds on
/// any monotonic clock, passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: f64,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(capacity: f64, per_second: f64, now: f64) -> Self {
        Self { capacity, per_second, tokens: capacity, at: now }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.per_second).min(self.capacity);
            self.at = now;
        }
    }

    /// Takes a token at `now`; answers how many seconds to wait before the call (0: at once).
    pub fn take(&mut self, now: f64) -> f64 {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.per_second
        }
    }

    /// EC2 answered "throttled": its bucket is empty whatever ours says (other clients share it).
    pub fn throttled(&mut self, now: f64) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }
}

/// How long to wait before retrying a page after its `attempt`-th throttled answer in a row:
/// 0.5 s doubling, at most 8 s.
pub fn retry_delay(attempt: u32) -> f64 {
    (0.25 * f64::from(1u32 << attempt.clamp(1, 5))).min(8.0)
}

/// What the ledger keeps of a region's listing passes: the last complete one, and how far the
/// current one came (a region too large for one run continues its pass in the next).
///
/// Only a listing that passed the coverage proof counts towards a pass ([`Passes::after_partitions`]);
/// one the proof refused is kept in `refused`, for the record, and never compared with: a
/// listing that is short for a lasting reason (a filter EC2 reads otherwise, a listing ended
/// early without an error) must not become the baseline that proves the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passes {
    pub last: Option<LastPass>,
    /// The partitions the current pass has covered so far, each with the count it listed.
    pub current: BTreeMap<usize, u64>,
    /// The deletions planned in each partition of the current pass after it was listed (the
    /// next listing of the partition expects that many fewer).
    pub current_deleted: BTreeMap<usize, u64>,
    /// The last counts the coverage proof refused, per partition: a record, never a baseline.
    pub refused: BTreeMap<usize, u64>,
    /// A listing in one sequence was cut (the deadline) after seeing this many snapshots, more
    /// than the threshold: the region is listed in partitions from the next run on.
    pub sequential_cut_after: Option<u64>,
}

/// A complete pass: every snapshot of the region listed, by one listing or by partitions over
/// one or more runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastPass {
    pub total: u64,
    /// How many each partition held (`PARTITIONS` numbers).
    pub per_partition: Vec<u64>,
    /// How many deletions were planned in each partition after it was listed (`PARTITIONS`
    /// numbers, or none): the next listing expects that many fewer there.
    pub deleted: Vec<u64>,
}

impl LastPass {
    /// What the next listing of `partition` should find at least as many of (less 10%): its
    /// count less the deletions planned after it (`None`: per partition unknown).
    fn expected(&self, partition: usize) -> Option<u64> {
        let listed = *self.per_partition.get(partition)?;
        Some(listed.saturating_sub(self.deleted.get(partition).copied().unwrap_or(0)))
    }
}

impl Passes {
    /// Whether the region is listed in partitions: its last complete pass listed more than
    /// `above` snapshots, a partitioned pass is under way, or a listing in one sequence was cut
    /// after seeing more than `above`; `above` 0 partitions every region.
    pub fn partitioned(&self, above: u64) -> bool {
        above == 0
            || !self.current.is_empty()
            || self.sequential_cut_after.is_some_and(|seen| seen > above)
            || self.last.as_ref().is_some_and(|last| last.total > above)
    }

    /// The partitions in the order to list them: those the current pass has not covered first.
    pub fn order(&self) -> Vec<usize> {
        let (mut fresh, covered): (Vec<usize>, Vec<usize>) =
            (0..PARTITIONS).partition(|p| !self.current.contains_key(p));
        fresh.extend(covered);
        fresh
    }

    /// After a complete one-sequence listing of `per_partition` (and `outside` ids no partition
    /// holds): a complete pass.
    pub fn after_listing(per_partition: Vec<u64>, outside: u64) -> Self {
        let total = per_partition.iter().sum::<u64>() + outside;
        Passes { last: Some(LastPass { total, per_partition, deleted: Vec::new() }), ..Passes::default() }
    }

    /// After a listing in one sequence cut after seeing `seen` snapshots: remembered, so that
    /// the next run lists the region in partitions when `seen` is above the threshold.
    pub fn after_cut_sequential(&self, seen: u64) -> Self {
        Passes { sequential_cut_after: Some(seen), ..self.clone() }
    }

    /// After a partitioned listing whose `complete` partitions listed these counts (and passed
    /// the coverage proof, or there was no pass to prove it with): they are covered; once every
    /// partition is, the pass is complete (and the next one starts).
    pub fn after_partitions(&self, complete: &[(usize, u64)]) -> Self {
        let mut next = self.clone();
        for (p, n) in complete {
            next.current.insert(*p, *n);
            next.current_deleted.remove(p);
            next.refused.remove(p);
        }
        if next.current.len() == PARTITIONS {
            let per_partition: Vec<u64> = (0..PARTITIONS).map(|p| next.current[&p]).collect();
            let deleted: Vec<u64> =
                (0..PARTITIONS).map(|p| next.current_deleted.get(&p).copied().unwrap_or(0)).collect();
            let total = per_partition.iter().sum();
            next = Passes {
                last: Some(LastPass { total, per_partition, deleted }),
                refused: next.refused,
                ..Passes::default()
            };
        }
        next
    }

    /// After a partitioned listing the coverage proof refused: its counts are kept for the
    /// record only; the pass, and the last complete pass, stay as they were.
    pub fn after_refused(&self, complete: &[(usize, u64)]) -> Self {
        let mut next = self.clone();
        next.refused.extend(complete.iter().copied());
        next
    }

    /// `deleting` planned (at most) in each partition after this run listed it: the next listing
    /// of that partition expects that many fewer. Counted with the current pass when the
    /// partition is in it, else with the last complete pass (a listing in one sequence, or a
    /// pass this run completed).
    pub fn deleting(&mut self, deleting: &[u64; PARTITIONS]) {
        for (p, n) in deleting.iter().enumerate().filter(|(_, n)| **n > 0) {
            if self.current.contains_key(&p) {
                *self.current_deleted.entry(p).or_default() += n;
            } else if let Some(last) = &mut self.last {
                if last.per_partition.len() == PARTITIONS {
                    last.deleted.resize(PARTITIONS, 0);
                    last.deleted[p] += n;
                }
            }
        }
    }

    /// What the next listing of `partition` should find at least as many of (less 10%): its most
    /// recent proved count (the current pass's, else the last complete pass's) less the
    /// deletions planned after it (`None`: no pass, or per partition unknown).
    fn expected(&self, partition: usize) -> Option<u64> {
        match self.current.get(&partition) {
            Some(n) if self.last.as_ref().is_some_and(|l| l.per_partition.len() == PARTITIONS) => {
                Some(n.saturating_sub(self.current_deleted.get(&partition).copied().unwrap_or(0)))
            }
            _ => self.last.as_ref()?.expected(partition),
        }
    }

    /// The region's snapshots outside the `complete` partitions, as the last complete pass listed
    /// them less the deletions planned since (0: no pass recorded, or per partition unknown and
    /// every partition complete).
    pub fn rest_of_region(&self, complete: &std::collections::BTreeSet<usize>) -> u64 {
        let Some(last) = &self.last else { return 0 };
        if last.per_partition.len() == PARTITIONS {
            (0..PARTITIONS).filter(|p| !complete.contains(p)).filter_map(|p| self.expected(p)).sum()
        } else {
            last.total * (PARTITIONS - complete.len()) as u64 / PARTITIONS as u64
        }
    }

    /// Whether the `complete` partitions found markedly fewer snapshots than the last complete
    /// pass listed in them, in all or in any one of them (`None`: no pass to compare with, or
    /// not markedly fewer). The last pass's counts are less the deletions planned after them.
    pub fn shortfall(&self, complete: &[(usize, u64)]) -> Option<Shortfall> {
        let last = self.last.as_ref()?;
        if complete.is_empty() {
            return None;
        }
        let short = |found: u64, expected: u64| (found as f64) < (1.0 - COVERAGE_SHORTFALL) * expected as f64;
        let found: u64 = complete.iter().map(|(_, n)| n).sum();
        let expected: u64 = if last.per_partition.len() == PARTITIONS {
            complete.iter().filter_map(|(p, _)| self.expected(*p)).sum()
        } else {
            last.total.saturating_sub(last.deleted.iter().sum()) * complete.len() as u64 / PARTITIONS as u64
        };
        // One partition short is enough: a partition that comes back complete but empty is
        // only 1/16 of the region's total.
        let partition =
            complete.iter().find_map(|(p, n)| self.expected(*p).filter(|e| short(*n, *e)).map(|e| (filter(*p), *n, e)));
        (short(found, expected) || partition.is_some()).then_some(Shortfall {
            found,
            expected,
            partitions: complete.len(),
            partition,
        })
    }
}

/// Why a partitioned listing deletes nothing when the region has no complete pass recorded to
/// prove its coverage with (its first partitioned pass).
pub const NO_PASS_TO_PROVE: &str = "coverage not proved: no complete listing pass of this region is recorded to compare with (its first partitioned pass); this pass is recorded and nothing is deleted in this region until it is complete";

/// A partitioned listing that found markedly fewer snapshots than the last complete pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub found: u64,
    pub expected: u64,
    pub partitions: usize,
    /// The first partition markedly short of its own last count: its filter, found, expected.
    pub partition: Option<(String, u64, u64)>,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "coverage not proved: the partitioned listing found {} snapshots in {} complete partition(s) where the last complete pass listed {} (more than {}% fewer, in all or in one partition); nothing deleted in this region this run",
            self.found,
            self.partitions,
            self.expected,
            (COVERAGE_SHORTFALL * 100.0).round()
        )?;
        if let Some((partition, found, expected)) = &self.partition {
            write!(
                f,
                " (partition {partition}: {found} where the last pass listed {expected}, less the deletions since)"
            )?;
        }
        Ok(())
    }
}

/// How the region's snapshots were listed (the report's `snapshot_listing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListingReport {
    /// `sequential` (one listing) or `partitioned`.
    pub mode: &'static str,
    /// Partitioned: the filter values of the partitions listed completely this run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub complete: Vec<String>,
    /// Partitioned: the partitions whose listing was cut (they delete nothing), with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<CutPartition>,
    /// Partitioned: the partitions not started (the deadline came): the next run lists them first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_for_next_run: Vec<String>,
    /// Partitioned: `DescribeSnapshots` calls, throttled answers included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// Partitioned: answers EC2 throttled (`RequestLimitExceeded`), each retried after a pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<u64>,
    /// The snapshots the last complete pass listed (the ledger), before this run.
    pub last_complete_pass: Option<u64>,
    /// The size of the pass this run completed and recorded (`null`: none completed, or the
    /// ledger is not written).
    pub pass_recorded: Option<u64>,
}

/// A partition whose listing was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CutPartition {
    pub partition: String,
    pub reason: String,
}

/// The region's plan from the plans of its complete partitions (each made by [`super::plan`]
/// with an unlimited budget and no circuit breaker: [`per_partition`]): the rules that need the
/// whole region applied once, as [`super::plan`] applies them to one listing. `failed_before`
/// is the ledger's [`super::Memory::failed_before`], `budget` what the region may still delete.
///
/// The circuit breaker is over the region, as DESIGN names it: the orphans found (only the
/// complete partitions' can be deleted) against the region's own snapshots, the complete
/// partitions' plus `rest` (what the last complete pass listed in the others, less the deletions
/// planned since: [`Passes::rest_of_region`]). So a run deletes at most the fraction of the
/// region, as a listing in one sequence would. While fewer than half the partitions are complete,
/// their own fraction must hold too (they are a uniform sample: the id's last hex digit is
/// random): a sample far above the fraction is a sign that something is wrong, held, not acted on.
pub fn merge(
    parts: Vec<Plan>,
    failed_before: &hashbrown::HashSet<Id>,
    policy: &Policy,
    budget: u64,
    rest: u64,
) -> Plan {
    let sampled = parts.len() < PARTITIONS / 2;
    let mut plan = Plan {
        snapshots_scanned: 0,
        own_snapshots: 0,
        orphans: Vec::new(),
        waiting: Vec::new(),
        unwitnessed: Vec::new(),
        unwitnessed_gib: 0,
        min_age: policy.min_age,
        to_delete: Vec::new(),
        kept: BTreeMap::new(),
        unreferenced_manual: Default::default(),
        archived: Default::default(),
        reclaimable_gib: 0,
        circuit_breaker: None,
    };
    for part in parts {
        plan.snapshots_scanned += part.snapshots_scanned;
        plan.own_snapshots += part.own_snapshots;
        plan.orphans.extend(part.orphans);
        plan.waiting.extend(part.waiting);
        plan.unwitnessed.extend(part.unwitnessed);
        plan.unwitnessed_gib += part.unwitnessed_gib;
        for (reason, count) in part.kept {
            *plan.kept.entry(reason).or_default() += count;
        }
        plan.unreferenced_manual.count += part.unreferenced_manual.count;
        plan.unreferenced_manual.gib += part.unreferenced_manual.gib;
        plan.archived.count += part.archived.count;
        plan.archived.gib += part.archived.gib;
        plan.reclaimable_gib += part.reclaimable_gib;
    }
    // The planner's order: oldest first by start time then id, those that failed before last.
    plan.orphans.sort_unstable_by(|a, b| {
        let failed = |o: &super::Orphan| failed_before.contains(o.snapshot_id.as_str());
        (failed(a), a.start_time, &a.snapshot_id).cmp(&(failed(b), b.start_time, &b.snapshot_id))
    });
    plan.waiting.sort_unstable_by(|a, b| (a.orphaned_since, &a.snapshot_id).cmp(&(b.orphaned_since, &b.snapshot_id)));
    plan.unwitnessed.sort_unstable_by(|a, b| (a.start_time, &a.snapshot_id).cmp(&(b.start_time, &b.snapshot_id)));
    let orphans = plan.orphans.len() as u64;
    let region = plan.own_snapshots.saturating_add(rest);
    let over_region = exceeds_fraction(orphans, region, policy.max_delete_fraction);
    let over_sample = sampled && exceeds_fraction(orphans, plan.own_snapshots, policy.max_delete_fraction);
    if over_region || over_sample {
        plan.circuit_breaker = Some(CircuitBreakerTrip {
            orphans,
            own_snapshots: if over_region { region } else { plan.own_snapshots },
            max_fraction: policy.max_delete_fraction,
        });
        *plan.kept.entry(super::KeepReason::CircuitBreaker).or_default() += orphans;
    } else {
        let allowed = usize::try_from(budget).unwrap_or(usize::MAX).min(plan.orphans.len());
        plan.to_delete = plan.orphans[..allowed].to_vec();
        let over = orphans - allowed as u64;
        if over > 0 {
            *plan.kept.entry(super::KeepReason::OverCap).or_default() += over;
        }
    }
    plan
}

/// The policy and budget one partition is planned with: the region's policy without its circuit
/// breaker, and no budget (both need the whole region: [`merge`] applies them).
pub fn per_partition(policy: &Policy) -> (Policy, u64) {
    (Policy { max_delete_fraction: f64::INFINITY, ..policy.clone() }, u64::MAX)
}

/// A partition's plan as [`merge`] takes it: what it would delete alone is dropped (the merge
/// decides), so that a million orphans are not held twice.
pub fn for_merge(mut plan: Plan) -> Plan {
    plan.to_delete = Vec::new();
    plan
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::listing::SnapshotListing;
    use crate::core::{plan, ImageFacts, Memory, PlanInput};
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const ACCOUNT: &str = "123456789012";

    /// EC2's filter wildcards, as its documentation gives them: `*` zero or more characters, `?`
    /// exactly one, a backslash escapes the next character; case-sensitive.
    fn ec2_matches(pattern: &str, value: &str) -> bool {
        fn go(p: &[char], v: &[char]) -> bool {
            match p.split_first() {
                None => v.is_empty(),
                Some(('*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
                Some(('?', rest)) => !v.is_empty() && go(rest, &v[1..]),
                Some(('\\', rest)) if !rest.is_empty() => v.first() == Some(&rest[0]) && go(&rest[1..], &v[1..]),
                Some((c, rest)) => v.first() == Some(c) && go(rest, &v[1..]),
            }
        }
        let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
        go(&p, &v)
    }

    proptest! {
        /// Every snapshot id EC2 writes (`snap-` and 8 or 17 lower-case hex digits) is matched by
        /// exactly one partition's filter, the one `partition_of` names.
        #[test]
        fn the_partitions_cover_every_snapshot_id_exactly_once(id in "snap-([0-9a-f]{8}|[0-9a-f]{17})") {
            let matching: Vec<usize> = (0..PARTITIONS).filter(|&p| ec2_matches(&filter(p), &id)).collect();
            prop_assert_eq!(matching.len(), 1, "{} matched by {:?}", id, matching);
            prop_assert_eq!(partition_of(&id), Some(matching[0]));
        }

        /// An id in no partition's form is in none (and `partition_of` says so).
        #[test]
        fn an_id_no_filter_matches_is_in_no_partition(id in "[a-zA-Z0-9-]{0,12}") {
            let matching = (0..PARTITIONS).filter(|&p| ec2_matches(&filter(p), &id)).count();
            prop_assert_eq!(matching, usize::from(partition_of(&id).is_some()));
        }
    }

    #[test]
    fn the_filters_are_ec2s_wildcards_on_the_last_hex_digit() {
        assert_eq!(filter(0), "snap-*0");
        assert_eq!(filter(15), "snap-*f");
        assert!(ec2_matches("snap-*0", "snap-0"), "* matches zero characters");
        assert!(!ec2_matches("snap-*a", "snap-0123456A"), "case-sensitive");
        assert_eq!(partition_of("snap-0123456789abcdef0"), Some(0));
        assert_eq!(partition_of("snap-0123456A"), None);
        assert_eq!(partition_of("vol-01"), None);
        let (counts, outside) = counts(["snap-01", "snap-02", "snap-11", "snap-X"].into_iter());
        assert_eq!((counts[1], counts[2], outside), (2, 1, 1));
    }

    #[test]
    fn the_bucket_gives_its_burst_then_its_refill_rate() {
        let mut bucket = TokenBucket::new(BUCKET_CAPACITY, BUCKET_REFILL_PER_SECOND, 0.0);
        let waits: Vec<f64> = (0..120).map(|_| bucket.take(0.0)).collect();
        assert!(waits[..100].iter().all(|w| *w == 0.0));
        assert!((waits[119] - 1.0).abs() < 1e-9, "the 20th beyond the burst waits one second: {}", waits[119]);
        // Later, refilled at 20 a second, never above the burst.
        let mut bucket = TokenBucket::new(100.0, 20.0, 0.0);
        for _ in 0..100 {
            bucket.take(0.0);
        }
        assert_eq!(bucket.take(0.5), 0.0, "10 tokens back after half a second");
        let mut full = TokenBucket::new(100.0, 20.0, 0.0);
        full.take(1000.0);
        assert_eq!(full.tokens, 99.0);
        full.throttled(1000.0);
        assert!(full.take(1000.0) > 0.0, "after a throttled answer the next call waits");
        assert_eq!((retry_delay(1), retry_delay(2), retry_delay(9)), (0.5, 1.0, 8.0));
    }

    proptest! {
        /// However the calls come, the bucket never lets more than its burst plus its refill
        /// through by any time.
        #[test]
        fn the_bucket_never_exceeds_its_rate(gaps in prop::collection::vec(0.0f64..0.2, 1..400)) {
            let mut bucket = TokenBucket::new(100.0, 20.0, 0.0);
            let (mut now, mut calls) = (0.0, Vec::new());
            for gap in gaps {
                now += gap;
                calls.push(now + bucket.take(now));
            }
            calls.sort_by(f64::total_cmp);
            for (i, at) in calls.iter().enumerate() {
                prop_assert!((i + 1) as f64 <= 100.0 + 20.0 * at + 1e-6, "call {} at {}", i + 1, at);
            }
        }
    }

    #[test]
    fn a_region_is_partitioned_above_the_threshold_or_while_a_pass_goes_on() {
        let mut passes = Passes::default();
        assert!(!passes.partitioned(20_000), "no pass recorded: one listing");
        assert!(passes.partitioned(0), "0 partitions every region");
        passes = Passes::after_listing(vec![1250; PARTITIONS], 0);
        assert_eq!(passes.last.as_ref().unwrap().total, 20_000);
        assert!(!passes.partitioned(20_000), "more than, not as many as");
        passes = Passes::after_listing(vec![1251; PARTITIONS], 0);
        assert!(passes.partitioned(20_000));
        let going_on = Passes { current: BTreeMap::from([(3, 10)]), ..Passes::default() };
        assert!(going_on.partitioned(20_000));
    }

    #[test]
    fn a_pass_continues_across_runs_and_completes_when_every_partition_is_covered() {
        let start = Passes::after_listing(vec![100; PARTITIONS], 0);
        let first: Vec<(usize, u64)> = (0..10).map(|p| (p, 101)).collect();
        let after_one = start.after_partitions(&first);
        assert_eq!(after_one.last, start.last, "the pass is not complete yet");
        assert_eq!(after_one.current.len(), 10);
        assert_eq!(after_one.order()[..6], [10, 11, 12, 13, 14, 15], "the uncovered first");
        let rest: Vec<(usize, u64)> = (10..16).map(|p| (p, 99)).collect();
        let after_two = after_one.after_partitions(&rest);
        assert!(after_two.current.is_empty(), "a new pass starts");
        let last = after_two.last.unwrap();
        assert_eq!(last.total, 10 * 101 + 6 * 99);
        assert_eq!(last.per_partition[0], 101);
        assert_eq!(last.per_partition[15], 99);
    }

    #[test]
    fn markedly_fewer_than_the_last_pass_in_the_same_partitions_is_a_shortfall() {
        let passes = Passes::after_listing(vec![1000; PARTITIONS], 0);
        assert_eq!(passes.shortfall(&[(0, 900), (1, 1000)]), None, "5% fewer is not marked");
        let short = passes.shortfall(&[(0, 800), (1, 999)]).unwrap();
        assert_eq!((short.found, short.expected, short.partitions), (1799, 2000, 2));
        let text = short.to_string();
        assert!(text.contains("1799") && text.contains("2000") && text.contains("nothing deleted"), "{text}");
        assert_eq!(Passes::default().shortfall(&[(0, 0)]), None, "no pass to compare with");
        let whole = Passes {
            last: Some(LastPass { total: 16_000, per_partition: Vec::new(), deleted: Vec::new() }),
            ..Passes::default()
        };
        assert!(whole.shortfall(&[(0, 899)]).is_some(), "per partition unknown: the total's share");
        assert!(whole.shortfall(&[(0, 900)]).is_none());
    }

    #[test]
    fn the_rest_of_the_region_is_the_last_pass_less_the_deletions_since() {
        let mut passes = Passes::after_listing(vec![100; PARTITIONS], 0);
        let mut deleting = [0u64; PARTITIONS];
        deleting[1] = 30;
        passes.deleting(&deleting);
        let complete: std::collections::BTreeSet<usize> = (2..PARTITIONS).collect();
        assert_eq!(passes.rest_of_region(&complete), 100 + 70);
        assert_eq!(Passes::default().rest_of_region(&complete), 0);
    }

    #[test]
    fn one_partition_markedly_short_of_its_own_last_count_is_a_shortfall() {
        let passes = Passes::after_listing(vec![1000; PARTITIONS], 0);
        // Every partition complete, one of them empty: 1/16 of the total, yet a shortfall.
        let mut counts: Vec<(usize, u64)> = (0..PARTITIONS).map(|p| (p, 1000)).collect();
        counts[5].1 = 0;
        let short = passes.shortfall(&counts).unwrap();
        assert_eq!(short.partition, Some((filter(5), 0, 1000)));
        assert!(short.to_string().contains("snap-*5"), "{short}");
        counts[5].1 = 901;
        assert_eq!(passes.shortfall(&counts), None, "within 10% of its own count");
    }

    #[test]
    fn the_deletions_planned_after_a_listing_are_expected_missing_from_the_next() {
        let mut passes = Passes::after_listing(vec![1000; PARTITIONS], 0);
        let mut deleting = [0u64; PARTITIONS];
        deleting[2] = 400;
        passes.deleting(&deleting);
        assert_eq!(passes.shortfall(&[(2, 600)]), None, "the 400 deleted are not missing");
        assert!(passes.shortfall(&[(2, 500)]).is_some());
        // In a pass under way, the deletions go with the partition's current count, and into
        // the last pass once it completes.
        let going_on = passes.after_partitions(&[(3, 1000)]);
        let mut going_on = going_on.clone();
        deleting = [0; PARTITIONS];
        deleting[3] = 300;
        going_on.deleting(&deleting);
        assert_eq!(going_on.current_deleted.get(&3), Some(&300));
        let rest: Vec<(usize, u64)> = (0..PARTITIONS).filter(|p| *p != 3).map(|p| (p, 1000)).collect();
        let complete = going_on.after_partitions(&rest);
        assert_eq!(complete.last.as_ref().unwrap().deleted[3], 300);
        assert_eq!(complete.shortfall(&[(3, 700)]), None);
        assert!(complete.current_deleted.is_empty());
        // A partition listed again before its pass completes: its current count, less the
        // deletions planned after it, is what it is compared with.
        assert_eq!(going_on.shortfall(&[(3, 700)]), None);
        assert!(going_on.shortfall(&[(3, 600)]).is_some());
    }

    #[test]
    fn a_refused_listing_is_recorded_but_never_becomes_the_baseline() {
        let passes = Passes::after_listing(vec![1000; PARTITIONS], 0);
        let short: Vec<(usize, u64)> = (0..PARTITIONS).map(|p| (p, 500)).collect();
        assert!(passes.shortfall(&short).is_some());
        let after = passes.after_refused(&short);
        assert_eq!(after.last, passes.last, "the baseline stays");
        assert!(after.current.is_empty(), "nothing covered");
        assert_eq!(after.refused.len(), PARTITIONS);
        assert!(after.shortfall(&short).is_some(), "refused again the next run");
    }

    #[test]
    fn a_sequential_listing_cut_above_the_threshold_partitions_the_next_run() {
        let passes = Passes::default();
        assert!(!passes.after_cut_sequential(20_000).partitioned(20_000), "not above");
        let cut = passes.after_cut_sequential(20_001);
        assert!(cut.partitioned(20_000));
        assert_eq!(cut.shortfall(&[(0, 1)]), None, "no pass to prove with: the caller refuses");
        let complete = cut.after_partitions(&(0..PARTITIONS).map(|p| (p, 2000)).collect::<Vec<_>>());
        assert_eq!(complete.sequential_cut_after, None, "a complete pass replaces the marker");
        assert!(complete.partitioned(20_000));
    }

    // ---- the partitions' plans merged are the region's plan ----

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    fn ami(i: usize) -> String {
        format!("ami-0{i:x}")
    }

    #[derive(Debug, Clone)]
    struct World {
        snapshots: Vec<crate::core::SnapshotFacts>,
        images: Vec<ImageFacts>,
        memory: Memory,
        budget: u64,
        fraction: f64,
        min_age_hours: i64,
        adopt: bool,
    }

    fn image(id: &str, snapshots: Vec<Id>) -> ImageFacts {
        ImageFacts {
            image_id: id.into(),
            owner_id: Some(ACCOUNT.into()),
            name: id.into(),
            state: "available".into(),
            creation_date: None,
            last_launched_time: None,
            public: false,
            deregistration_protection: None,
            snapshot_ids: snapshots,
            tags: Vec::new(),
        }
    }

    fn arb_world() -> impl Strategy<Value = World> {
        let snapshot = (
            0u32..64,
            prop_oneof![4 => Just(ACCOUNT), 1 => Just("999999999999")],
            prop::bool::weighted(0.9),
            0i64..100,
            1u64..100,
            0usize..6,
            prop::bool::weighted(0.1),
        );
        (
            prop::collection::vec(snapshot, 0..60),
            prop::collection::vec((0usize..6, prop::collection::vec(0u32..64, 0..4)), 0..4),
            prop::collection::vec((0u32..64, prop::option::of(0i64..60), any::<bool>(), any::<bool>()), 0..40),
            0u64..30,
            prop_oneof![Just(0.25), Just(0.5), Just(1.0)],
            prop_oneof![Just(0i64), Just(24)],
            any::<bool>(),
        )
            .prop_map(|(snapshots, images, remembered, budget, fraction, min_age_hours, adopt)| {
                let id = |n: u32| format!("snap-{:08x}", n.wrapping_mul(0x9e37_79b9) % 0x1000_0000);
                let snapshots = snapshots
                    .into_iter()
                    .map(|(n, owner, completed, age, size, source, protected)| {
                        SnapshotListing {
                            snapshot_id: id(n),
                            owner_id: Some(owner.to_string()),
                            state: if completed { "completed" } else { "pending" }.into(),
                            start_time: Some(now() - Duration::hours(age)),
                            size_gib: size,
                            description: format!("Created by CreateImage(i-0abc) for {} from vol-01", ami(source)),
                            volume_id: Some("vol-01".into()),
                            storage_tier: None,
                            tags: if protected {
                                vec![amiguard::tags::Tag::new(amiguard::tags::KEEP, "")]
                            } else {
                                Vec::new()
                            },
                        }
                        .read(amiguard::tags::KEEP)
                    })
                    .collect::<Vec<_>>();
                let images = images
                    .into_iter()
                    .map(|(i, refs)| image(&ami(i), refs.into_iter().map(|n| Id::from(id(n).as_str())).collect()))
                    .collect();
                let mut memory = Memory::default();
                for (n, first_seen, witnessed, failed) in remembered {
                    let snapshot = Id::from(id(n).as_str());
                    if let Some(hours) = first_seen {
                        memory.orphaned_since.insert(snapshot.clone(), now() - Duration::hours(hours));
                    }
                    if witnessed {
                        let source =
                            snapshots.iter().find(|s| s.snapshot_id == snapshot).and_then(|s| s.sources.described());
                        if let Some(source) = source {
                            memory.mapped_by_gone_images.entry(snapshot.clone()).or_default().push(Id::from(source));
                            memory.deregistered_at.insert(Id::from(source), now() - Duration::hours(30));
                        }
                    }
                    if failed {
                        memory.failed_before.insert(snapshot);
                    }
                }
                World { snapshots, images, memory, budget, fraction, min_age_hours, adopt }
            })
    }

    fn policy(world: &World) -> Policy {
        Policy {
            min_age: Duration::hours(world.min_age_hours),
            max_delete_fraction: world.fraction,
            adopt_unwitnessed: world.adopt,
        }
    }

    fn plan_of(world: &World, snapshots: &[crate::core::SnapshotFacts], policy: &Policy, budget: u64) -> Plan {
        let binned = BTreeSet::new();
        let locked = hashbrown::HashSet::new();
        let input = PlanInput {
            account_id: ACCOUNT,
            now: now(),
            snapshots,
            images: &world.images,
            retired_images: &[],
            images_in_recycle_bin: &binned,
            budget,
            memory: &world.memory,
            locked: &locked,
        };
        plan(&input, policy)
    }

    /// The plans of `partitions` (planned alone, as they arrive), merged.
    fn merged(world: &World, partitions: &BTreeSet<usize>) -> Plan {
        let (alone, unlimited) = per_partition(&policy(world));
        let parts = partitions
            .iter()
            .map(|&p| {
                let mine: Vec<_> =
                    world.snapshots.iter().filter(|s| partition_of(&s.snapshot_id) == Some(p)).cloned().collect();
                for_merge(plan_of(world, &mine, &alone, unlimited))
            })
            .collect();
        merge(parts, &world.memory.failed_before, &policy(world), world.budget, 0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Planned partition by partition, the region gets the very plan one listing gives: the
        /// same orphans in the same order, the same deletions within the budget, the same
        /// circuit breaker, the same counts.
        #[test]
        fn the_merged_partitions_plan_as_one_listing(world in arb_world()) {
            let whole = plan_of(&world, &world.snapshots, &policy(&world), world.budget);
            let all: BTreeSet<usize> = (0..PARTITIONS).collect();
            prop_assert_eq!(merged(&world, &all), whole);
        }

        /// A partition whose listing was cut is never merged: nothing of it is deleted, whatever
        /// the others do; the circuit breaker and the budget hold over what was listed.
        #[test]
        fn a_cut_partition_never_yields_a_deletion(
            world in arb_world(),
            complete in prop::collection::btree_set(0usize..PARTITIONS, 0..PARTITIONS),
        ) {
            let plan = merged(&world, &complete);
            for orphan in &plan.to_delete {
                prop_assert!(complete.contains(&partition_of(&orphan.snapshot_id).unwrap()));
            }
            prop_assert!(plan.to_delete.len() as u64 <= world.budget);
        }

        /// The circuit breaker is over the region: the orphans of the complete partitions against
        /// the region's own snapshots (those listed, and the rest as the last pass knew them);
        /// fewer than half the partitions complete, their own fraction must hold as well.
        #[test]
        fn the_circuit_breaker_is_over_the_region(
            world in arb_world(),
            complete in prop::collection::btree_set(0usize..PARTITIONS, 1..PARTITIONS),
            rest in 0u64..200,
        ) {
            let (alone, unlimited) = per_partition(&policy(&world));
            let parts: Vec<Plan> = complete
                .iter()
                .map(|&p| {
                    let mine: Vec<_> = world.snapshots.iter().filter(|s| partition_of(&s.snapshot_id) == Some(p)).cloned().collect();
                    for_merge(plan_of(&world, &mine, &alone, unlimited))
                })
                .collect();
            let plan = merge(parts, &world.memory.failed_before, &policy(&world), world.budget, rest);
            let orphans = plan.orphans.len() as u64;
            let over_region = exceeds_fraction(orphans, plan.own_snapshots + rest, world.fraction);
            let over_sample = complete.len() < PARTITIONS / 2 && exceeds_fraction(orphans, plan.own_snapshots, world.fraction);
            prop_assert_eq!(plan.circuit_breaker.is_some(), over_region || over_sample);
            if plan.circuit_breaker.is_some() {
                prop_assert!(plan.to_delete.is_empty());
            }
        }
    }
}
