//! The planner's lookups, done as radix-partitioned hash joins so that their cost per snapshot
//! does not grow with the region (issue 5: 10x the snapshots may take at most 11x the time).
//!
//! A plain hash set of a million ids is tens of megabytes, and every lookup then misses the
//! caches: the planner got slower per snapshot as regions grew. Here every id is first filed, in
//! one sequential pass, into a partition chosen by some bits of its hash; each partition's tables
//! then hold a few thousand ids and stay in the core's cache whatever the input size.
//!
//! The joins answer, for each snapshot (by its index in the listing):
//! - is its id mapped by a registered image, and is it a later copy of an id listed before;
//! - does an AMI it names still exist, or is that AMI in the Recycle Bin.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::facts::{Id, ImageFacts, SnapshotFacts};

/// What the joins found for one snapshot (bit flags).
pub(super) type Found = u8;
pub(super) const REFERENCED: Found = 1;
pub(super) const SOURCE_EXISTS: Found = 1 << 1;
pub(super) const SOURCE_IN_RECYCLE_BIN: Found = 1 << 2;
/// The listing named this id at a smaller index already.
pub(super) const LATER_COPY: Found = 1 << 3;

/// About this many snapshots per partition: a partition's entries and tables (~130 bytes a
/// snapshot) then take about two megabytes, inside a core's L2 cache (4 MB here).
const PARTITION_TARGET: usize = 16 * 1024;

/// The partition count for `snapshots` snapshots, as a number of hash bits.
pub(super) fn partition_bits(snapshots: usize) -> u32 {
    (snapshots / PARTITION_TARGET).checked_next_power_of_two().map_or(0, |parts| parts.trailing_zeros()).min(16)
}

/// What the joins found, by snapshot index.
pub(super) struct Lookups {
    pub found: Vec<Found>,
    /// For each id listed more than once: its first index, and the indices of all its copies.
    pub copies: BTreeMap<usize, Vec<usize>>,
    /// Distinct snapshot ids in the listing.
    pub distinct: u64,
}

/// An id with its hash and what it stands for (a snapshot index, or flags).
struct Keyed<T> {
    hash: u64,
    id: Id,
    value: T,
}

struct Partitions {
    bits: u32,
    hasher: DefaultHashBuilder,
}

impl Partitions {
    fn count(&self) -> usize {
        1 << self.bits
    }

    fn of(&self, hash: u64) -> usize {
        // Bits 32 and up choose the partition: the tables inside use the low bits for the slot
        // and the top 7 as a tag, so those must still vary within a partition.
        ((hash >> 32) as usize) & (self.count() - 1)
    }

    /// Empty partitions for about `expected` entries in all.
    fn empty<T>(&self, expected: usize) -> Vec<Vec<Keyed<T>>> {
        let per_partition = expected / self.count() + expected / (4 * self.count()) + 16;
        (0..self.count()).map(|_| Vec::with_capacity(per_partition)).collect()
    }

    /// Files one entry in its partition; entries keep their input order inside a partition.
    fn file<T>(&self, partitions: &mut [Vec<Keyed<T>>], id: &str, value: T) {
        let hash = self.hasher.hash_one(id);
        partitions[self.of(hash)].push(Keyed { hash, id: Id::from(id), value });
    }
}

/// Runs both joins. `needs_sources` says which snapshots' sources are worth looking up (those
/// no earlier rule keeps); `extra_sources` gives the AMIs a snapshot is looked up under besides
/// those it names (the retired image it was made for, gone images that mapped it).
pub(super) fn look_up<'a, Extra: Iterator<Item = &'a str>>(
    snapshots: &'a [SnapshotFacts],
    images: &'a [ImageFacts],
    images_in_recycle_bin: impl Iterator<Item = &'a str>,
    extra_sources: impl Fn(&SnapshotFacts) -> Extra,
    needs_sources: impl Fn(&SnapshotFacts) -> bool,
    bits: u32,
) -> Lookups {
    let partitions = Partitions { bits, hasher: DefaultHashBuilder::default() };
    let mut lookups = Lookups { found: vec![0; snapshots.len()], copies: BTreeMap::new(), distinct: 0 };

    // One sequential pass over each input files what both joins need: memory bandwidth, not the
    // lookups, is what a large region costs.
    let mut listed = partitions.empty(snapshots.len());
    let mut named = partitions.empty(snapshots.len());
    for (index, snapshot) in snapshots.iter().enumerate() {
        partitions.file(&mut listed, &snapshot.snapshot_id, index);
        if needs_sources(snapshot) {
            for image_id in snapshot.sources.iter().chain(extra_sources(snapshot)) {
                partitions.file(&mut named, image_id, index);
            }
        }
    }
    let mut mapped = partitions.empty(images.len());
    let mut known = partitions.empty(images.len());
    for image in images {
        for snapshot_id in &image.snapshot_ids {
            partitions.file(&mut mapped, snapshot_id, ());
        }
        partitions.file(&mut known, &image.image_id, SOURCE_EXISTS);
    }
    for image_id in images_in_recycle_bin {
        partitions.file(&mut known, image_id, SOURCE_IN_RECYCLE_BIN);
    }

    // Join 1, on snapshot ids: the listing against itself (repeats) and against images' mappings.
    for (listed, mapped) in listed.iter().zip(&mapped) {
        let mut mapped_ids: HashTable<&Keyed<()>> = HashTable::with_capacity(mapped.len());
        for entry in mapped {
            if let Entry::Vacant(slot) = mapped_ids.entry(entry.hash, |known| known.id == entry.id, |k| k.hash) {
                slot.insert(entry);
            }
        }
        let mut first_copies: HashTable<&Keyed<usize>> = HashTable::with_capacity(listed.len());
        for entry in listed {
            let index = entry.value;
            if mapped_ids.find(entry.hash, |known| known.id == entry.id).is_some() {
                lookups.found[index] |= REFERENCED;
            }
            // Entries keep the listing's order inside a partition: the first copy comes first.
            match first_copies.entry(entry.hash, |known| known.id == entry.id, |k| k.hash) {
                Entry::Vacant(slot) => {
                    slot.insert(entry);
                    lookups.distinct += 1;
                }
                Entry::Occupied(first) => {
                    let first = first.get().value;
                    lookups.copies.entry(first).or_insert_with(|| vec![first]).push(index);
                    lookups.found[index] |= LATER_COPY;
                }
            }
        }
    }
    drop((listed, mapped));

    // Join 2, on image ids: the AMIs each snapshot names against the registered and binned ones.
    for (named, known) in named.iter().zip(&known) {
        // An id both registered and binned carries both flags.
        let mut known_ids: HashTable<(u64, &Id, Found)> = HashTable::with_capacity(known.len());
        for entry in known {
            match known_ids.entry(entry.hash, |(_, id, _)| **id == entry.id, |(hash, _, _)| *hash) {
                Entry::Occupied(mut same) => same.get_mut().2 |= entry.value,
                Entry::Vacant(slot) => {
                    slot.insert((entry.hash, &entry.id, entry.value));
                }
            }
        }
        for entry in named {
            if let Some((_, _, found)) = known_ids.find(entry.hash, |(_, id, _)| **id == entry.id) {
                lookups.found[entry.value] |= found;
            }
        }
    }
    lookups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_grow_with_the_input_and_stay_near_the_target() {
        assert_eq!(partition_bits(0), 0);
        assert_eq!(partition_bits(10_000), 0);
        assert_eq!(partition_bits(100_000), 3);
        assert_eq!(partition_bits(1_000_000), 6);
        assert_eq!(partition_bits(usize::MAX), 16);
        for bits in [0, 1, 6, 16] {
            let partitions = Partitions { bits, hasher: DefaultHashBuilder::default() };
            assert!([0, u64::MAX, 1 << 63].iter().all(|&hash| partitions.of(hash) < partitions.count()));
        }
    }
}
