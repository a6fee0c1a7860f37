//! Synthetic facts for the planner benchmarks: one region with `snapshots` snapshots and a third
//! as many images, shaped like an account that has imaged instances for years.
//!
//! - A third of the snapshots are mapped by a registered image (one root volume each).
//! - A third are orphans: made by `CreateImage` for an AMI since deregistered (half of them by
//!   snapshot-on-stop, with its five `amiguard:` tags), old and `completed`.
//! - The last third exercises every other keep rule in turn: manual, AWS Backup, DLM, protected,
//!   too young, pending, not owned, source AMI still registered, source AMI in the Recycle Bin,
//!   archived, locked, and a manual snapshot with a `Name` tag.
//!
//! The facts are what the EC2 adapter keeps of each page: snapshots read by `SnapshotListing::read`,
//! images with the tags retirement reads; the ledger witnessed every orphan's image map it, and saw
//! the orphan orphaned 30 days ago. The listing comes in a shuffled order (a fixed seed):
//! the planner must not profit from sorted input.

use std::collections::BTreeSet;

use amiguard::tags::Tag;
use chrono::{DateTime, Duration, TimeZone, Utc};
use orphan_snapshot_sweeper::core::{Id, ImageFacts, Memory, Plan, PlanInput, Policy, SnapshotFacts, SnapshotListing};

pub const ACCOUNT: &str = "123456789012";
const OTHER_ACCOUNT: &str = "210987654321";
const PROTECT_TAG: &str = "amiguard:keep";
/// `MAX_DELETIONS`' default: the plan copies this many orphans into `to_delete`.
pub const BUDGET: u64 = 500;

/// The facts of one region and what the planner must find in them.
pub struct Region {
    pub now: DateTime<Utc>,
    pub snapshots: Vec<SnapshotFacts>,
    pub images: Vec<ImageFacts>,
    pub images_in_recycle_bin: BTreeSet<String>,
    /// What the ledger remembers: when each orphan was first seen orphaned.
    pub memory: Memory,
    /// Snapshot locks (none: the common account).
    pub locked: hashbrown::HashSet<Id>,
    /// How many orphans the data holds by construction.
    pub expected_orphans: u64,
}

impl Region {
    pub fn input(&self) -> PlanInput<'_> {
        PlanInput {
            account_id: ACCOUNT,
            now: self.now,
            snapshots: &self.snapshots,
            images: &self.images,
            retired_images: &[],
            images_in_recycle_bin: &self.images_in_recycle_bin,
            budget: BUDGET,
            memory: &self.memory,
            locked: &self.locked,
        }
    }
}

pub fn policy() -> Policy {
    Policy { min_age: Duration::hours(24), max_delete_fraction: 0.5, adopt_unwitnessed: false }
}

/// splitmix64: a small deterministic generator, so the data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn id(prefix: &str, n: u64) -> String {
    format!("{prefix}-0{:016x}", n.wrapping_mul(0x2545_F491_4F6C_DD1D))
}

fn create_image_description(n: u64, image_id: &str) -> String {
    format!("Created by CreateImage({}) for {image_id} from {}", id("i", n % 997), id("vol", n))
}

fn amiguard_tags(n: u64, image_id: &str) -> Vec<Tag> {
    vec![
        Tag::new("amiguard:source-instance", id("i", n % 997)),
        Tag::new("amiguard:created-by", "snapshot-on-stop"),
        Tag::new("amiguard:stopped-at", "2024-05-01T10:00:00Z"),
        Tag::new("amiguard:image", image_id),
        Tag::new("Name", format!("web-{}", n % 997)),
    ]
}

/// A region with `snapshots` snapshots and `snapshots / 3` images.
pub fn region(snapshots: usize) -> Region {
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).single().unwrap_or_default();
    let old = now - Duration::days(90);
    let images_count = snapshots / 3;
    let mut rng = Rng(0x5EED);

    let image_id = |k: usize| id("ami", k as u64);
    let gone_image_id = |k: usize| id("ami", (1u64 << 40) + k as u64);
    let images: Vec<ImageFacts> = (0..images_count)
        .map(|k| ImageFacts {
            image_id: image_id(k).into(),
            owner_id: Some(ACCOUNT.into()),
            name: format!("amiguard-{}-{k}", id("i", k as u64 % 997)),
            state: "available".into(),
            creation_date: Some(old),
            last_launched_time: None,
            public: false,
            deregistration_protection: None,
            snapshot_ids: vec![id("snap", k as u64).into()],
            // Of snapshot-on-stop's five tags, the adapter keeps the one retirement reads.
            tags: amiguard_tags(k as u64, &image_id(k))
                .into_iter()
                .filter(|t| t.key == "amiguard:created-by")
                .collect(),
        })
        .collect();
    let mut images_in_recycle_bin = BTreeSet::new();
    let mut locked = hashbrown::HashSet::new();

    let mut expected_orphans = 0;
    let mut memory = Memory::default();
    let mut facts: Vec<SnapshotFacts> = Vec::with_capacity(snapshots);
    for n in 0..snapshots {
        let snapshot = |description: String, tags: Vec<Tag>| SnapshotListing {
            snapshot_id: id("snap", n as u64),
            owner_id: Some(ACCOUNT.to_string()),
            state: "completed".to_string(),
            start_time: Some(old),
            size_gib: 8 + (n as u64 % 4) * 24,
            description,
            volume_id: Some(id("vol", n as u64)),
            storage_tier: Some("standard".to_string()),
            tags,
        };
        let s = if n < images_count {
            // Mapped by image n.
            let image = image_id(n);
            let tags = if n % 2 == 0 { amiguard_tags(n as u64, &image) } else { Vec::new() };
            snapshot(create_image_description(n as u64, &image), tags)
        } else if n < 2 * images_count {
            expected_orphans += 1;
            memory.orphaned_since.insert(id("snap", n as u64).into(), now - Duration::days(30));
            let image = gone_image_id(n);
            // Witnessed: the ledger recorded the image mapping it while it was registered.
            memory.mapped_by_gone_images.insert(id("snap", n as u64).into(), vec![image.as_str().into()]);
            let tags = if n % 2 == 0 { amiguard_tags(n as u64, &image) } else { Vec::new() };
            snapshot(create_image_description(n as u64, &image), tags)
        } else {
            let gone = gone_image_id(n);
            let orphan_description = create_image_description(n as u64, &gone);
            match Other::ALL[n % Other::ALL.len()] {
                Other::Manual => snapshot("nightly backup of the database volume".into(), Vec::new()),
                Other::ManualNamed => snapshot(String::new(), vec![Tag::new("Name", format!("scratch-{n}"))]),
                Other::AwsBackup => snapshot(
                    "This snapshot is created by the AWS Backup service.".into(),
                    vec![Tag::new("aws:backup:source-resource", id("vol", n as u64))],
                ),
                Other::Dlm => snapshot(
                    format!("Created for policy: {} schedule: Default Schedule", id("policy", 7)),
                    vec![Tag::new("aws:dlm:lifecycle-policy-id", id("policy", 7))],
                ),
                Other::Protected => snapshot(orphan_description, vec![Tag::new("amiguard:keep", "legal hold")]),
                Other::TooYoung => SnapshotListing { start_time: Some(now), ..snapshot(orphan_description, vec![]) },
                Other::Pending => SnapshotListing { state: "pending".into(), ..snapshot(orphan_description, vec![]) },
                Other::NotOwned => {
                    SnapshotListing { owner_id: Some(OTHER_ACCOUNT.into()), ..snapshot(orphan_description, vec![]) }
                }
                Other::SourceImageExists => {
                    snapshot(create_image_description(n as u64, &image_id(n % images_count.max(1))), vec![])
                }
                Other::SourceImageInRecycleBin => {
                    images_in_recycle_bin.insert(gone);
                    snapshot(orphan_description, vec![])
                }
                Other::Archived => {
                    SnapshotListing { storage_tier: Some("archive".into()), ..snapshot(orphan_description, vec![]) }
                }
                Other::Locked => {
                    locked.insert(id("snap", n as u64).into());
                    snapshot(orphan_description, vec![])
                }
            }
        };
        // Read as the EC2 adapter reads each page: the description and tags go with the listing.
        facts.push(s.read(PROTECT_TAG));
    }
    // Fisher-Yates with the fixed seed.
    for i in (1..facts.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        facts.swap(i, j);
    }
    Region { now, snapshots: facts, images, images_in_recycle_bin, memory, locked, expected_orphans }
}

/// The kinds of the last third, each kept by another rule.
#[derive(Clone, Copy)]
enum Other {
    Manual,
    ManualNamed,
    AwsBackup,
    Dlm,
    Protected,
    TooYoung,
    Pending,
    NotOwned,
    SourceImageExists,
    SourceImageInRecycleBin,
    Archived,
    Locked,
}

impl Other {
    const ALL: [Other; 12] = [
        Other::Manual,
        Other::ManualNamed,
        Other::AwsBackup,
        Other::Dlm,
        Other::Protected,
        Other::TooYoung,
        Other::Pending,
        Other::NotOwned,
        Other::SourceImageExists,
        Other::SourceImageInRecycleBin,
        Other::Archived,
        Other::Locked,
    ];
}

/// Checks that the plan found what the data holds: a benchmark of a planner that silently did
/// nothing would measure nothing.
pub fn check(region: &Region, plan: &Plan) -> Result<(), String> {
    let orphans = plan.orphans.len() as u64;
    if orphans != region.expected_orphans || plan.to_delete.len() as u64 != BUDGET.min(orphans) {
        return Err(format!(
            "the plan found {orphans} orphans ({} to delete), the data holds {}",
            plan.to_delete.len(),
            region.expected_orphans
        ));
    }
    if plan.circuit_breaker.is_some() {
        return Err("the circuit breaker tripped on the synthetic data".into());
    }
    Ok(())
}
