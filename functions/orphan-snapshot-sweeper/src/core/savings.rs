//! What a deletion really frees (issue 23). EBS snapshots are incremental: a snapshot's blocks are
//! shared with the snapshots of the same volume taken before and after it while the volume did not
//! change them. Deleting a snapshot frees only the blocks that no snapshot still there holds.
//!
//! A *lineage* is the snapshots of one volume, oldest first. A block of a planned snapshot is freed
//! only if neither its older nor its newer neighbour among the snapshots that will still exist
//! holds the same block. Deleting a set changes its members' neighbours, so the whole planned set
//! is computed at once: a block that only co-deleted snapshots hold is counted once, for the
//! oldest planned snapshot holding it.
//!
//! The evidence is the EBS direct APIs' (`ListSnapshotBlocks` of each planned snapshot,
//! `ListChangedBlocks` of each pair of neighbours one of which is planned). A block index that
//! `ListChangedBlocks(older, newer)` does not list, and that the older holds, is the same block in
//! the newer one: the same data, stored once. Where a neighbour is unknown (a copy, a snapshot
//! whose volume or start time EC2 did not say) or a comparison failed or was not made in time, the
//! snapshot gets a labelled bound (its full size, or its volume's size): never a guess.
//!
//! Also here: the one table of prices by storage tier.

use chrono::{DateTime, Utc};
use hashbrown::{HashMap, HashSet};

pub use super::facts::Tier;
use super::facts::{Id, SnapshotFacts};
use serde::Serialize;

/// A GiB in bytes.
pub const GIB: u64 = 1 << 30;
/// EBS snapshot archive storage, USD per GB-month (us-east-1), billed for at least 90 days.
pub const ARCHIVE_PRICE_PER_GB_MONTH: f64 = 0.0125;
/// The `VolumeId` EC2 gives a copied snapshot (`CopySnapshot`, `CopyImage`): no lineage.
pub const COPY_VOLUME_ID: &str = "vol-ffffffff";

/// USD per GiB-month by tier: the one table of snapshot storage prices. The standard tier's is
/// `PRICE_PER_GB_MONTH` (the operator's region and discounts); the archive tier's is AWS's list
/// price ([`ARCHIVE_PRICE_PER_GB_MONTH`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub standard_per_gb_month: f64,
}

impl Prices {
    pub fn per_gb_month(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Standard => self.standard_per_gb_month,
            Tier::Archive => ARCHIVE_PRICE_PER_GB_MONTH,
        }
    }

    /// What `bytes` of `tier` cost a month, to the cent.
    pub fn monthly_usd(&self, bytes: u64, tier: Tier) -> f64 {
        let usd = bytes as f64 / GIB as f64 * self.per_gb_month(tier);
        (usd * 100.0).round() / 100.0
    }
}

/// The most deleting `snapshot` can free: its full size (`FullSnapshotSizeInBytes`) when EC2 says
/// it, else its volume's size.
pub fn bound(snapshot: &SnapshotFacts) -> u64 {
    snapshot.full_size_bytes.unwrap_or(snapshot.size_gib.saturating_mul(GIB))
}

/// What deleting one planned snapshot frees: exactly, or at most (with why no exact figure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freed {
    Exact { bytes: u64 },
    AtMost { bytes: u64, why: String },
}

impl Freed {
    /// The exact figure, if there is one.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Self::Exact { bytes } => Some(*bytes),
            Self::AtMost { .. } => None,
        }
    }

    /// The bound, if there is no exact figure.
    pub fn at_most(&self) -> Option<u64> {
        match self {
            Self::Exact { .. } => None,
            Self::AtMost { bytes, .. } => Some(*bytes),
        }
    }

    pub fn why(&self) -> Option<&str> {
        match self {
            Self::Exact { .. } => None,
            Self::AtMost { why, .. } => Some(why),
        }
    }
}

/// What deleting one planned snapshot frees (the whole planned set deleted): `freed_bytes`
/// exactly, from the EBS direct APIs; or `freed_bytes_at_most` (its full size, or its volume's)
/// with `why_at_most`, when there is no exact figure. `monthly_usd` prices whichever is given by
/// the snapshot's tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreedSnapshot {
    pub snapshot_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes_at_most: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_at_most: Option<String>,
    pub tier: Tier,
    pub monthly_usd: f64,
}

impl FreedSnapshot {
    pub fn new(snapshot_id: &str, freed: &Freed, tier: Tier, prices: &Prices) -> Self {
        let bytes = freed.exact().or(freed.at_most()).unwrap_or(0);
        Self {
            snapshot_id: snapshot_id.to_string(),
            freed_bytes: freed.exact(),
            freed_bytes_at_most: freed.at_most(),
            why_at_most: freed.why().map(str::to_string),
            tier,
            monthly_usd: prices.monthly_usd(bytes, tier),
        }
    }
}

/// Bytes in GiB, for people.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

/// One snapshot of a lineage, as savings read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub snapshot_id: Id,
    pub planned: bool,
}

/// The snapshots of one volume, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub volume_id: Id,
    pub members: Vec<Member>,
    /// What the oldest listed member descends from (the snapshot its volume was created from).
    pub origin: Origin,
}

/// The snapshot a lineage's volume was created from, as amiguard verified it (`DescribeVolumes`):
/// the oldest listed snapshot of a volume created from snapshot S is incremental to S (every
/// instance's root volume comes from an AMI's snapshot), so what deleting it frees depends on S.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The volume exists and was created from no snapshot: the oldest member has no ancestor.
    Empty,
    /// Created from this snapshot, which is listed and stays: the oldest member is compared with it.
    From(Id),
    /// Not verified (why): the oldest member, when planned, gets its bound.
    Unknown(String),
}

/// Why the oldest snapshot of a lineage whose origin was not verified gets a bound.
pub const ORIGIN_UNKNOWN: &str =
    "its volume is gone or was created from a snapshot amiguard cannot compare: it may share blocks with that snapshot";
/// Why a planned snapshot that an existing volume was created from gets a bound.
pub const HAS_DESCENDANTS: &str =
    "an existing volume was created from it: that volume's snapshots may share its blocks";

/// A question to the EBS direct APIs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ask {
    /// `ListSnapshotBlocks` of a planned snapshot.
    Blocks(Id),
    /// `ListChangedBlocks` from the older (`first`) to the newer (`second`) of two neighbours.
    Changed { first: Id, second: Id },
}

/// A set of block indexes, one bit each: a 1 TiB volume's blocks (2M of 512 KiB) take 256 KiB,
/// whatever share of them a listing holds, so that a lineage of many large snapshots fits the
/// function's memory. Indexes come from the EBS direct APIs, bounded by the volume's size
/// (`adapters::ebs` refuses one beyond it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSet {
    words: Vec<u64>,
}

impl BlockSet {
    pub fn insert(&mut self, index: u32) {
        let (word, bit) = ((index / 64) as usize, index % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    pub fn contains(&self, index: u32) -> bool {
        self.words.get((index / 64) as usize).is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The memory the set holds, in bytes (one bit per block up to its highest index).
    pub fn heap_bytes(&self) -> u64 {
        (self.words.capacity() * std::mem::size_of::<u64>()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(n, word)| {
            (0..64u32).filter(move |bit| word & (1 << bit) != 0).map(move |bit| n as u32 * 64 + bit)
        })
    }

    /// The indexes in both.
    pub fn and(&self, other: &Self) -> Self {
        Self { words: self.words.iter().zip(&other.words).map(|(a, b)| a & b).collect() }
    }

    /// The indexes in `self` and not in `other`.
    pub fn and_not(&self, other: &Self) -> Self {
        let word = |n: usize| other.words.get(n).copied().unwrap_or(0);
        Self { words: self.words.iter().enumerate().map(|(n, a)| a & !word(n)).collect() }
    }
}

impl FromIterator<u32> for BlockSet {
    fn from_iter<I: IntoIterator<Item = u32>>(indexes: I) -> Self {
        let mut set = Self::default();
        indexes.into_iter().for_each(|index| set.insert(index));
        set
    }
}

/// `ListSnapshotBlocks`' answer: every block index the snapshot holds, and the block size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocks {
    pub indexes: BlockSet,
    pub block_size: u64,
}

/// The answers gathered; an `Err` is why there is none (the AWS error, or the deadline).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub blocks: HashMap<Id, Result<Blocks, String>>,
    /// By `(first, second)`: the block indexes `ListChangedBlocks` listed.
    pub changed: HashMap<(Id, Id), Result<BlockSet, String>>,
}

/// What the planned set is to savings: its lineages (every snapshot of a volume that holds a
/// planned one, planned or not), and the planned snapshots with no known lineage, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineages {
    pub lineages: Vec<Lineage>,
    pub unknown: Vec<(Id, String)>,
}

/// The lineages of the `planned` snapshots among the region's whole listing `snapshots`: each
/// planned snapshot's volume, with every snapshot of that volume, oldest first (ties by id). A
/// planned snapshot whose volume EC2 did not say, or a copy's (`vol-ffffffff`), has no known
/// neighbours; a lineage where one snapshot's start time is not said cannot be ordered: its
/// planned snapshots have no known neighbours either.
pub fn lineages(snapshots: &[SnapshotFacts], planned: &HashSet<&str>) -> Lineages {
    let mut by_volume: HashMap<&str, Vec<&SnapshotFacts>> = HashMap::new();
    let mut unknown = Vec::new();
    let mut volumes: Vec<&str> = Vec::new();
    for snapshot in snapshots.iter().filter(|s| planned.contains(s.snapshot_id.as_str())) {
        match snapshot.volume_id.as_deref() {
            None => unknown.push((snapshot.snapshot_id.clone(), "its volume is not known".to_string())),
            Some(COPY_VOLUME_ID) => {
                unknown.push((snapshot.snapshot_id.clone(), "a copy: its lineage is not known".to_string()))
            }
            Some(volume) => {
                if !by_volume.contains_key(volume) {
                    volumes.push(volume);
                    by_volume.insert(volume, Vec::new());
                }
            }
        }
    }
    for snapshot in snapshots {
        if let Some(members) = snapshot.volume_id.as_deref().and_then(|v| by_volume.get_mut(v)) {
            members.push(snapshot);
        }
    }
    let mut lineages = Vec::new();
    for volume in volumes {
        let mut members = by_volume.remove(volume).unwrap_or_default();
        members.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        members.dedup_by(|a, b| a.snapshot_id == b.snapshot_id);
        if let Some(undated) = members.iter().find(|s| s.start_time.is_none()) {
            let why = format!("its lineage cannot be ordered: the start time of {} is not known", undated.snapshot_id);
            unknown.extend(
                members
                    .iter()
                    .filter(|s| planned.contains(s.snapshot_id.as_str()))
                    .map(|s| (s.snapshot_id.clone(), why.clone())),
            );
            continue;
        }
        members.sort_by_key(|s| (s.start_time.unwrap_or(DateTime::<Utc>::MIN_UTC), s.snapshot_id.clone()));
        let members = members
            .into_iter()
            .map(|s| Member { snapshot_id: s.snapshot_id.clone(), planned: planned.contains(s.snapshot_id.as_str()) })
            .collect();
        lineages.push(Lineage {
            volume_id: Id::from(volume),
            members,
            origin: Origin::Unknown(ORIGIN_UNKNOWN.to_string()),
        });
    }
    Lineages { lineages, unknown }
}

impl Lineage {
    /// What to ask of the EBS direct APIs: the blocks of each planned snapshot, and the changes
    /// between each pair of neighbours one of which is planned.
    pub fn asks(&self) -> Vec<Ask> {
        let mut asks = Vec::new();
        if let (Origin::From(source), Some(oldest)) = (&self.origin, self.members.first()) {
            if oldest.planned {
                asks.push(Ask::Changed { first: source.clone(), second: oldest.snapshot_id.clone() });
            }
        }
        for (i, member) in self.members.iter().enumerate() {
            if member.planned {
                asks.push(Ask::Blocks(member.snapshot_id.clone()));
            }
            if let Some(next) = self.members.get(i + 1) {
                if member.planned || next.planned {
                    asks.push(Ask::Changed { first: member.snapshot_id.clone(), second: next.snapshot_id.clone() });
                }
            }
        }
        asks
    }

    /// What each planned snapshot frees when the whole planned set is deleted; `bound` is each
    /// one's upper bound (its full size, or its volume's size), given where the evidence is
    /// missing.
    pub fn freed(&self, evidence: &Evidence, bound: &dyn Fn(&str) -> u64) -> Vec<(Id, Freed)> {
        let members = &self.members;
        let changed = |j: usize| -> Result<&BlockSet, String> {
            let (first, second) = (&members[j].snapshot_id, &members[j + 1].snapshot_id);
            match evidence.changed.get(&(first.clone(), second.clone())) {
                Some(Ok(changed)) => Ok(changed),
                Some(Err(why)) => Err(format!("ListChangedBlocks {first} -> {second} failed: {why}")),
                None => Err(format!("ListChangedBlocks {first} -> {second} was not asked")),
            }
        };
        let mut out = Vec::new();
        for (i, member) in members.iter().enumerate().filter(|(_, m)| m.planned) {
            let id = &member.snapshot_id;
            let freed = (|| -> Result<u64, String> {
                let blocks = match evidence.blocks.get(id) {
                    Some(Ok(blocks)) => blocks,
                    Some(Err(why)) => return Err(format!("ListSnapshotBlocks {id} failed: {why}")),
                    None => return Err(format!("ListSnapshotBlocks {id} was not asked")),
                };
                // The blocks it holds that its older neighbour does not: an older one holding the
                // same block is either still there (nothing freed) or planned and older (counted
                // for it).
                let mut held = match (i, &self.origin) {
                    (0, Origin::Empty) => blocks.indexes.clone(),
                    // The snapshot its volume was created from stays: what it holds unchanged is
                    // not freed.
                    (0, Origin::From(source)) => match evidence.changed.get(&(source.clone(), id.clone())) {
                        Some(Ok(changed)) => blocks.indexes.and(changed),
                        Some(Err(why)) => return Err(format!("ListChangedBlocks {source} -> {id} failed: {why}")),
                        None => return Err(format!("ListChangedBlocks {source} -> {id} was not asked")),
                    },
                    // Unverified: what the lineage alone says is the most it frees (an ancestor
                    // holding some of it only frees less).
                    (0, Origin::Unknown(_)) => blocks.indexes.clone(),
                    _ => blocks.indexes.and(changed(i - 1)?),
                };
                // Followed newer, through co-deleted neighbours: a block the next snapshot holds
                // unchanged is freed only if that one is planned too and it ends among planned ones.
                let mut freed = 0u64;
                let mut j = i;
                while !held.is_empty() {
                    if j + 1 == members.len() {
                        freed += held.len();
                        break;
                    }
                    let to_newer = changed(j)?;
                    let (carried, ended) = (held.and_not(to_newer), held.and(to_newer));
                    freed += ended.len();
                    if !members[j + 1].planned {
                        break;
                    }
                    held = carried;
                    j += 1;
                }
                Ok(freed.saturating_mul(blocks.block_size))
            })();
            let freed = match (freed, &self.origin) {
                (Ok(bytes), Origin::Unknown(why)) if i == 0 => {
                    Freed::AtMost { bytes: bytes.min(bound(id)), why: why.clone() }
                }
                (Ok(bytes), _) => Freed::Exact { bytes },
                (Err(why), _) => Freed::AtMost { bytes: bound(id), why },
            };
            out.push((id.clone(), freed));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const BLOCK: u64 = 512 * 1024;

    /// A lineage modelled block by block: `versions[s][b]` is the version of block index `b` that
    /// snapshot `s` holds (`None`: no data there). The same version in two snapshots is one block.
    #[derive(Debug)]
    struct Model {
        versions: Vec<Vec<Option<u32>>>,
        planned: Vec<bool>,
    }

    fn id(s: usize) -> Id {
        Id::from(format!("snap-{s:02}"))
    }

    impl Model {
        fn lineage(&self) -> Lineage {
            let members =
                self.planned.iter().enumerate().map(|(s, &planned)| Member { snapshot_id: id(s), planned }).collect();
            Lineage { volume_id: "vol-01".into(), members, origin: Origin::Empty }
        }

        /// What the EBS direct APIs answer of this model, for every question the lineage asks.
        fn evidence(&self) -> Evidence {
            let mut evidence = Evidence::default();
            for ask in self.lineage().asks() {
                match ask {
                    Ask::Blocks(snapshot) => {
                        let s: usize = snapshot[5..].parse().unwrap();
                        let indexes = (0..self.versions[s].len() as u32)
                            .filter(|&b| self.versions[s][b as usize].is_some())
                            .collect();
                        evidence.blocks.insert(snapshot, Ok(Blocks { indexes, block_size: BLOCK }));
                    }
                    Ask::Changed { first, second } => {
                        let (f, s): (usize, usize) = (first[5..].parse().unwrap(), second[5..].parse().unwrap());
                        let changed = (0..self.versions[f].len() as u32)
                            .filter(|&b| self.versions[f][b as usize] != self.versions[s][b as usize])
                            .collect();
                        evidence.changed.insert((first, second), Ok(changed));
                    }
                }
            }
            evidence
        }

        /// By brute force: each block (index, version) that planned snapshots hold and no
        /// snapshot left holds, counted for the oldest planned one holding it.
        fn brute_force(&self) -> Vec<u64> {
            let mut freed = vec![0u64; self.planned.len()];
            let mut blocks: Vec<(usize, u32)> = Vec::new();
            for row in &self.versions {
                for (b, v) in row.iter().enumerate() {
                    if let Some(v) = v {
                        blocks.push((b, *v));
                    }
                }
            }
            blocks.sort_unstable();
            blocks.dedup();
            for (b, v) in blocks {
                let holders: Vec<usize> = (0..self.planned.len()).filter(|&s| self.versions[s][b] == Some(v)).collect();
                if holders.iter().all(|&s| self.planned[s]) {
                    freed[holders[0]] += BLOCK;
                }
            }
            freed
        }
    }

    fn freed(model: &Model, evidence: &Evidence) -> Vec<(Id, Freed)> {
        model.lineage().freed(evidence, &|_| 1000 * GIB)
    }

    /// Five daily snapshots of an 8-block volume: block 0 never changes; day 2 rewrites 1 and 2;
    /// day 3 (the middle one) rewrites 2 and 3, and day 4 rewrites them again (so day 3's versions
    /// of 2 and 3 are its own); day 5 rewrites 4.
    fn five_days(planned: [bool; 5]) -> Model {
        let days = [
            [Some(0), Some(0), Some(0), Some(0), Some(0), None, None, None],
            [Some(0), Some(1), Some(1), Some(0), Some(0), None, None, None],
            [Some(0), Some(1), Some(2), Some(2), Some(0), None, None, None],
            [Some(0), Some(1), Some(3), Some(3), Some(0), None, None, None],
            [Some(0), Some(1), Some(3), Some(3), Some(4), None, None, None],
        ];
        Model { versions: days.iter().map(|d| d.to_vec()).collect(), planned: planned.to_vec() }
    }

    #[test]
    fn deleting_the_middle_snapshot_frees_exactly_its_own_blocks() {
        let model = five_days([false, false, true, false, false]);
        let freed = freed_of(&model);
        assert_eq!(freed, vec![(id(2), Freed::Exact { bytes: 2 * BLOCK })], "blocks 2 and 3 of day 3");
        assert_eq!(model.brute_force()[2], 2 * BLOCK);
    }

    #[test]
    fn deleting_two_adjacent_snapshots_frees_what_only_they_held_once_for_the_older() {
        // Days 2 and 3: day 2's versions of 1 and 2 (1 is held by days 3-5: not freed; 2 only by
        // day 2), and day 3's versions of 2 and 3.
        let model = five_days([false, true, true, false, false]);
        let freed = freed_of(&model);
        assert_eq!(freed, vec![(id(1), Freed::Exact { bytes: BLOCK }), (id(2), Freed::Exact { bytes: 2 * BLOCK })]);
        // A block only co-deleted snapshots hold counts once, for the oldest: days 3 and 4 of a
        // lineage where day 4 keeps day 3's block.
        let model = five_days([false, false, true, true, false]);
        let freed = freed_of(&model);
        // Day 3's versions of 2 and 3 end at day 3 (day 4 rewrote them); day 4's versions of 2
        // and 3 are held by day 5 too: nothing of day 4 is freed.
        assert_eq!(freed, vec![(id(2), Freed::Exact { bytes: 2 * BLOCK }), (id(3), Freed::Exact { bytes: 0 })]);
        let model = five_days([false, false, false, true, true]);
        let freed = freed_of(&model);
        // Day 4's 2 and 3, held by day 5 too (planned): counted once, for day 4; day 5's block 4.
        assert_eq!(freed, vec![(id(3), Freed::Exact { bytes: 2 * BLOCK }), (id(4), Freed::Exact { bytes: BLOCK })]);
        assert_eq!(model.brute_force(), vec![0, 0, 0, 2 * BLOCK, BLOCK]);
    }

    #[test]
    fn the_ends_of_a_lineage_have_one_neighbour() {
        let model = five_days([true, false, false, false, true]);
        // Day 1's versions of blocks 1 and 2 end at day 1 (day 2 rewrote them); its 0, 3 and 4
        // are held by day 2. Day 5 frees its block 4.
        assert_eq!(
            freed_of(&model),
            vec![(id(0), Freed::Exact { bytes: 2 * BLOCK }), (id(4), Freed::Exact { bytes: BLOCK })]
        );
        // All of them: every distinct block is freed, each once (5 of day 1, 2 each of days 2, 3
        // and 4, 1 of day 5).
        let model = five_days([true; 5]);
        let total = freed_total(&freed_of(&model));
        assert_eq!(total, 12 * BLOCK);
        assert_eq!(total, model.brute_force().iter().sum::<u64>());
    }

    fn freed_of(model: &Model) -> Vec<(Id, Freed)> {
        freed(model, &model.evidence())
    }

    fn freed_total(freed: &[(Id, Freed)]) -> u64 {
        freed.iter().filter_map(|(_, f)| f.exact()).sum()
    }

    #[test]
    fn a_failed_comparison_gives_a_labelled_bound_to_the_snapshots_it_leaves_unknown() {
        let model = five_days([false, true, true, false, false]);
        let mut evidence = model.evidence();
        evidence.changed.insert((id(2), id(3)), Err("InternalServerException: boom".into()));
        let freed = model.lineage().freed(&evidence, &|snapshot| if snapshot == "snap-01" { 7 } else { 9 });
        // Both need day 3 -> day 4: day 2's block 1 is carried through day 3 to day 4.
        assert_eq!(freed.len(), 2);
        for (snapshot, f) in &freed {
            let why = f.why().unwrap();
            assert!(why.contains("ListChangedBlocks snap-02 -> snap-03 failed: InternalServerException"), "{why}");
            assert_eq!(f.at_most(), Some(if snapshot == "snap-01" { 7 } else { 9 }));
        }
        // A missing block listing bounds only its own snapshot.
        let mut evidence = model.evidence();
        evidence.blocks.remove(&id(2));
        let freed = model.lineage().freed(&evidence, &|_| 5);
        assert_eq!(freed[0], (id(1), Freed::Exact { bytes: BLOCK }));
        assert_eq!(freed[1].1.at_most(), Some(5));
        assert!(freed[1].1.why().unwrap().contains("ListSnapshotBlocks snap-02 was not asked"));
    }

    /// B1: the oldest listed snapshot of a volume created from a surviving snapshot (an AMI's)
    /// frees only what changed since that snapshot; unverified, it gets its bound.
    #[test]
    fn the_oldest_snapshot_is_compared_with_the_snapshot_its_volume_came_from() {
        // Day 1 holds blocks 0-4; the AMI's snapshot it came from holds 0, 1 and 2 unchanged.
        let model = five_days([true, false, false, false, false]);
        let mut lineage = model.lineage();
        lineage.origin = Origin::From("snap-ami".into());
        assert_eq!(lineage.asks()[0], Ask::Changed { first: "snap-ami".into(), second: id(0) });
        let mut evidence = model.evidence();
        // Blocks 3 and 4 changed since the AMI's snapshot.
        evidence.changed.insert(("snap-ami".into(), id(0)), Ok([3u32, 4].into_iter().collect()));
        // Of day 1's own (3, 4), day 2 still holds both: nothing freed; without the ancestor it
        // would be day 1's blocks 1 and 2 (rewritten on day 2), which the AMI's snapshot holds.
        assert_eq!(lineage.freed(&evidence, &|_| 99), vec![(id(0), Freed::Exact { bytes: 0 })]);
        evidence.changed.insert(("snap-ami".into(), id(0)), Ok([1u32, 2, 3, 4].into_iter().collect()));
        assert_eq!(lineage.freed(&evidence, &|_| 99), vec![(id(0), Freed::Exact { bytes: 2 * BLOCK })]);
        evidence.changed.remove(&("snap-ami".into(), id(0)));
        assert!(lineage.freed(&evidence, &|_| 99)[0].1.why().unwrap().contains("snap-ami -> snap-00 was not asked"));
        // Not verified: a labelled bound (what the lineage alone says), never exact.
        lineage.origin = Origin::Unknown(ORIGIN_UNKNOWN.into());
        assert_eq!(
            lineage.freed(&model.evidence(), &|_| 99 * BLOCK),
            vec![(id(0), Freed::AtMost { bytes: 2 * BLOCK, why: ORIGIN_UNKNOWN.into() })]
        );
        // A lineage read from a listing starts unverified.
        let found = lineages(&[facts("snap-a", Some("vol-1"), Some(1))], &["snap-a"].into_iter().collect());
        assert_eq!(found.lineages[0].origin, Origin::Unknown(ORIGIN_UNKNOWN.into()));
    }

    #[test]
    fn the_lineage_asks_only_what_the_planned_set_needs() {
        let model = five_days([false, false, true, false, false]);
        let changed = |f: usize, s: usize| Ask::Changed { first: id(f), second: id(s) };
        assert_eq!(model.lineage().asks(), vec![changed(1, 2), Ask::Blocks(id(2)), changed(2, 3)]);
        let model = five_days([true, true, false, false, false]);
        assert_eq!(model.lineage().asks(), vec![Ask::Blocks(id(0)), changed(0, 1), Ask::Blocks(id(1)), changed(1, 2)]);
    }

    fn facts(snapshot: &str, volume: Option<&str>, day: Option<u32>) -> SnapshotFacts {
        SnapshotFacts {
            snapshot_id: snapshot.into(),
            owner_id: Some("123456789012".into()),
            completed: true,
            start_time: day.map(|d| Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap()),
            size_gib: 8,
            sources: Default::default(),
            marked: None,
            volume_id: volume.map(Id::from),
            full_size_bytes: None,
            tier: Tier::Standard,
        }
    }

    #[test]
    fn lineages_are_each_planned_volume_s_snapshots_oldest_first() {
        let snapshots = vec![
            facts("snap-c", Some("vol-1"), Some(3)),
            facts("snap-a", Some("vol-1"), Some(1)),
            facts("snap-b", Some("vol-1"), Some(2)),
            facts("snap-x", Some("vol-2"), Some(1)),
            facts("snap-copy", Some(COPY_VOLUME_ID), Some(1)),
            facts("snap-nowhere", None, Some(1)),
            facts("snap-u1", Some("vol-3"), Some(1)),
            facts("snap-u2", Some("vol-3"), None),
        ];
        let planned: HashSet<&str> = ["snap-b", "snap-copy", "snap-nowhere", "snap-u1"].into_iter().collect();
        let found = lineages(&snapshots, &planned);
        assert_eq!(found.lineages.len(), 1, "vol-2 holds nothing planned; vol-3 cannot be ordered");
        let lineage = &found.lineages[0];
        assert_eq!(lineage.volume_id, "vol-1");
        let ids: Vec<(&str, bool)> = lineage.members.iter().map(|m| (m.snapshot_id.as_str(), m.planned)).collect();
        assert_eq!(ids, [("snap-a", false), ("snap-b", true), ("snap-c", false)]);
        let unknown: HashMap<&str, &str> = found.unknown.iter().map(|(id, why)| (id.as_str(), why.as_str())).collect();
        assert_eq!(unknown.len(), 3);
        assert_eq!(unknown["snap-copy"], "a copy: its lineage is not known");
        assert_eq!(unknown["snap-nowhere"], "its volume is not known");
        assert!(unknown["snap-u1"].contains("start time of snap-u2 is not known"), "{}", unknown["snap-u1"]);
    }

    #[test]
    fn the_bound_is_the_full_size_when_said_else_the_volume_size() {
        let mut snapshot = facts("snap-a", Some("vol-1"), Some(1));
        assert_eq!(bound(&snapshot), 8 * GIB);
        snapshot.full_size_bytes = Some(123);
        assert_eq!(bound(&snapshot), 123);
    }

    #[test]
    fn prices_come_from_one_table_by_tier() {
        let prices = Prices { standard_per_gb_month: 0.05 };
        assert_eq!(prices.monthly_usd(10 * GIB, Tier::Standard), 0.5);
        assert_eq!(prices.monthly_usd(100 * GIB, Tier::Archive), 1.25);
        assert_eq!(prices.monthly_usd(GIB / 2, Tier::Standard), 0.03, "to the cent");
        assert_eq!(
            (Tier::from_ec2(Some("archive")), Tier::from_ec2(Some("standard"))),
            (Tier::Archive, Tier::Standard)
        );
        assert_eq!(Tier::from_ec2(None), Tier::Standard);
    }

    /// A random lineage: each day keeps, rewrites or drops each block of the day before.
    fn model() -> impl Strategy<Value = Model> {
        (1usize..7, 1usize..6).prop_flat_map(|(days, width)| {
            (
                proptest::collection::vec(proptest::collection::vec(0u8..4, width), days),
                proptest::collection::vec(any::<bool>(), days),
            )
                .prop_map(move |(steps, planned)| {
                    let mut versions: Vec<Vec<Option<u32>>> = Vec::new();
                    let mut next = 0u32;
                    for step in steps {
                        let row = step
                            .iter()
                            .enumerate()
                            .map(|(b, change)| {
                                let before = versions.last().and_then(|row| row[b]);
                                match (change, before) {
                                    (0, _) => None,
                                    (1, Some(v)) | (2, Some(v)) => Some(v),
                                    _ => {
                                        next += 1;
                                        Some(next)
                                    }
                                }
                            })
                            .collect();
                        versions.push(row);
                    }
                    Model { versions, planned }
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// With every answer, each planned snapshot's figure is exact and equals the brute-force
        /// count of blocks no survivor holds, counted for the oldest planned holder.
        #[test]
        fn exact_freed_bytes_equal_a_block_by_block_count(model in model()) {
            let freed = freed(&model, &model.evidence());
            let brute = model.brute_force();
            for (snapshot, f) in &freed {
                let s: usize = snapshot[5..].parse().unwrap();
                prop_assert_eq!(f.exact(), Some(brute[s]), "{}", snapshot);
            }
            prop_assert_eq!(freed.len(), model.planned.iter().filter(|p| **p).count());
        }

        /// The bit set is a set: what it holds, and what `and` and `and_not` make of two.
        #[test]
        fn block_sets_are_sets(a in proptest::collection::btree_set(0u32..300, 0..40), b in proptest::collection::btree_set(0u32..300, 0..40)) {
            let (sa, sb): (BlockSet, BlockSet) = (a.iter().copied().collect(), b.iter().copied().collect());
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), a.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.len(), a.len() as u64);
            prop_assert_eq!(sa.is_empty(), a.is_empty());
            prop_assert!((0..320).all(|i| sa.contains(i) == a.contains(&i)));
            prop_assert_eq!(sa.and(&sb).iter().collect::<Vec<_>>(), a.intersection(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.and_not(&sb).iter().collect::<Vec<_>>(), a.difference(&b).copied().collect::<Vec<_>>());
        }

        /// With answers missing, every figure is either exact and right, or a labelled bound; an
        /// exact figure never exceeds the snapshot's own size.
        #[test]
        fn missing_answers_give_labelled_bounds_never_a_wrong_figure(
            model in model(),
            drop in proptest::collection::vec(any::<bool>(), 16),
        ) {
            let mut evidence = model.evidence();
            let mut asks = model.lineage().asks();
            asks.sort();
            for (ask, drop) in asks.iter().zip(drop.iter().cycle()) {
                if *drop {
                    match ask {
                        Ask::Blocks(s) => { evidence.blocks.insert(s.clone(), Err("throttled".into())); }
                        Ask::Changed { first, second } => { evidence.changed.insert((first.clone(), second.clone()), Err("throttled".into())); }
                    }
                }
            }
            let width = model.versions[0].len() as u64;
            let freed = model.lineage().freed(&evidence, &|_| width * BLOCK);
            let brute = model.brute_force();
            for (snapshot, f) in &freed {
                let s: usize = snapshot[5..].parse().unwrap();
                match f {
                    Freed::Exact { bytes } => {
                        prop_assert_eq!(*bytes, brute[s]);
                        prop_assert!(*bytes <= width * BLOCK);
                    }
                    Freed::AtMost { bytes, why } => {
                        prop_assert!(why.contains("failed: throttled"), "{}", why);
                        prop_assert!(*bytes >= brute[s]);
                    }
                }
            }
        }
    }
}
