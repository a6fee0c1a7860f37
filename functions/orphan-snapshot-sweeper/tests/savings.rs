//! Exact savings through the handler, over fakes: what each deletion frees reaches its journal
//! entry, and under tokio's paused clock a run that runs out of time reports the rest as bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use amiguard::ledger::keys;
use amiguard::AwsError;
use futures::future::BoxFuture;
use orphan_snapshot_sweeper::core::savings::{BlockSet, Blocks};
use orphan_snapshot_sweeper::core::SnapshotListing;
use orphan_snapshot_sweeper::ports::Ebs;
use orphan_snapshot_sweeper::{handle_with_ebs, Ports, DEADLINE_MARGIN};
use serde_json::json;
use support::*;

const BLOCK: u64 = 512 * 1024;

/// The EBS direct APIs over a block model: each snapshot's version of each block index. Each
/// call takes `delay` (on tokio's clock) and is recorded with when it started.
struct FakeEbs {
    versions: HashMap<String, Vec<Option<u32>>>,
    delay: Duration,
    started: Mutex<Vec<tokio::time::Instant>>,
}

impl FakeEbs {
    fn new(versions: &[(&str, &[Option<u32>])], delay: Duration) -> Self {
        let versions = versions.iter().map(|(id, v)| (id.to_string(), v.to_vec())).collect();
        Self { versions, delay, started: Mutex::new(Vec::new()) }
    }

    fn of(&self, id: &str) -> Result<&Vec<Option<u32>>, AwsError> {
        self.versions
            .get(id)
            .ok_or_else(|| AwsError::new("ListSnapshotBlocks", "ResourceNotFoundException", id.to_string()))
    }
}

impl Ebs for FakeEbs {
    fn snapshot_blocks<'a>(&'a self, snapshot_id: &'a str) -> BoxFuture<'a, Result<Blocks, AwsError>> {
        Box::pin(async move {
            self.started.lock().unwrap().push(tokio::time::Instant::now());
            tokio::time::sleep(self.delay).await;
            let versions = self.of(snapshot_id)?;
            let indexes = (0..versions.len() as u32).filter(|b| versions[*b as usize].is_some()).collect();
            Ok(Blocks { indexes, block_size: BLOCK })
        })
    }

    fn changed_blocks<'a>(&'a self, first: &'a str, second: &'a str) -> BoxFuture<'a, Result<BlockSet, AwsError>> {
        Box::pin(async move {
            self.started.lock().unwrap().push(tokio::time::Instant::now());
            tokio::time::sleep(self.delay).await;
            let (a, b) = (self.of(first)?, self.of(second)?);
            Ok((0..a.len() as u32).filter(|i| a[*i as usize] != b[*i as usize]).collect())
        })
    }
}

/// Three orphans of one volume (the support's `orphan`s: `vol-01`, the same start time, so by
/// id), all deleted: each distinct block is freed once, for the oldest holding it.
#[tokio::test]
async fn each_deletion_s_journal_entry_says_what_it_frees() {
    let ids = ["snap-001", "snap-002", "snap-003"];
    let ebs = FakeEbs::new(
        &[("snap-001", &[Some(1), Some(1)]), ("snap-002", &[Some(1), Some(2)]), ("snap-003", &[Some(3), Some(2)])],
        Duration::ZERO,
    );
    let ebs: Vec<(String, Box<dyn Ebs>)> = vec![("us-east-1".into(), Box::new(ebs))];
    let ledger = ledger_seen("us-east-1", ids.iter().map(|s| s.to_string()));
    let regions = vec![("us-east-1".to_string(), with_volumes(ids.iter().map(|id| orphan(id)).collect()))];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let response = handle_with_ebs(&config(), &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let report = response.sweep().unwrap();
    assert_eq!(report.regions[0].deleted.len(), 3);
    let journal = |id: &str| {
        ledger.items().into_iter().find(|i| i.pk == keys::run("r-test") && i.s("resource_id") == Some(id)).unwrap()
    };
    let freed: Vec<Option<i64>> = ids.iter().map(|id| journal(id).n("freed_bytes")).collect();
    let block = BLOCK as i64;
    assert_eq!(freed, [Some(2 * block), Some(block), Some(block)]);
    assert!(ids.iter().all(|id| journal(id).n("freed_bytes_at_most").is_none()));
    assert_eq!(report.totals.freed_bytes, Some(4 * BLOCK));
}

/// Each call takes 100 s and the deadline is 500 s away: questions start while more than
/// `DEADLINE_MARGIN` is left, and the snapshots whose answers did not come are labelled bounds.
#[tokio::test(start_paused = true)]
async fn a_run_that_runs_out_of_time_reports_the_rest_as_bounds() {
    let ids: Vec<String> = (0..20).map(|i| format!("snap-{i:03}")).collect();
    let versions: Vec<(String, Vec<Option<u32>>)> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), vec![Some(i as u32), Some(0)])).collect();
    let model: Vec<(&str, &[Option<u32>])> = versions.iter().map(|(id, v)| (id.as_str(), v.as_slice())).collect();
    let fake = std::sync::Arc::new(FakeEbs::new(&model, Duration::from_secs(100)));
    struct Shared(std::sync::Arc<FakeEbs>);
    impl Ebs for Shared {
        fn snapshot_blocks<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Blocks, AwsError>> {
            self.0.snapshot_blocks(id)
        }
        fn changed_blocks<'a>(&'a self, first: &'a str, second: &'a str) -> BoxFuture<'a, Result<BlockSet, AwsError>> {
            self.0.changed_blocks(first, second)
        }
    }
    let ebs: Vec<(String, Box<dyn Ebs>)> = vec![("us-east-1".into(), Box::new(Shared(fake.clone())))];
    let ledger = ledger_seen("us-east-1", ids.iter().cloned());
    let regions = vec![("us-east-1".to_string(), with_volumes(ids.iter().map(|id| orphan(id)).collect()))];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(500);
    let soon = invocation().with_deadline(SystemTime::now() + Duration::from_secs(500));
    let config = orphan_snapshot_sweeper::Config { dry_run: true, ..config() };
    let report = handle_with_ebs(&config, &ports, Some(&ebs), &event(json!({})), &soon).await.unwrap().sweep().unwrap();
    let started = fake.started.lock().unwrap().clone();
    assert!(!started.is_empty() && started.len() < 39, "some asked, not all 39: {}", started.len());
    assert!(started.iter().all(|at| *at + DEADLINE_MARGIN < deadline), "none inside the margin");
    let freed = &report.regions[0].freed;
    assert_eq!(freed.len(), 20, "every planned deletion has its entry");
    let late: Vec<&str> =
        freed.iter().filter_map(|f| f.why_at_most.as_deref()).filter(|w| w.contains("deadline")).collect();
    assert!(!late.is_empty(), "{freed:#?}");
    for entry in freed {
        assert!(entry.freed_bytes.is_some() != entry.freed_bytes_at_most.is_some(), "one or the other: {entry:?}");
        if let Some(bound) = entry.freed_bytes_at_most {
            assert_eq!(bound, 10 << 30, "the volume's size");
        }
    }
}

/// The support's orphans' volume `vol-01` exists and was created from no snapshot (B1: its oldest
/// snapshot then has no ancestor).
fn with_volumes(snapshots: Vec<SnapshotListing>) -> FakeEc2 {
    FakeEc2 { volumes: Some(vec![("vol-01".into(), None)]), ..FakeEc2::with(snapshots, vec![]) }
}

/// The EBS direct APIs of each region, as the handler takes them.
type EbsRegions = Vec<(String, Box<dyn Ebs>)>;

fn three() -> (EbsRegions, [&'static str; 3]) {
    let ebs = FakeEbs::new(
        &[("snap-001", &[Some(1), Some(1)]), ("snap-002", &[Some(1), Some(2)]), ("snap-003", &[Some(3), Some(2)])],
        Duration::ZERO,
    );
    (vec![("us-east-1".into(), Box::new(ebs))], ["snap-001", "snap-002", "snap-003"])
}

/// B1: the oldest snapshot of a volume that is gone (it may descend from the snapshot the volume
/// was created from) and a snapshot an existing volume was created from get labelled bounds; a
/// failed `DescribeVolumes` bounds them all.
#[tokio::test]
async fn ancestors_and_descendants_amiguard_cannot_compare_give_bounds() {
    let (ebs, ids) = three();
    let ledger = ledger_seen("us-east-1", ids.iter().map(|s| s.to_string()));
    let ec2 = FakeEc2 {
        volumes: Some(vec![("vol-9".into(), Some("snap-003".into()))]),
        ..FakeEc2::with(ids.iter().map(|id| orphan(id)).collect(), vec![])
    };
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let config = orphan_snapshot_sweeper::Config { dry_run: true, ..config() };
    let report = handle_with_ebs(&config, &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let freed = &report.sweep().unwrap().regions[0].freed;
    let why = |id: &str| freed.iter().find(|f| f.snapshot_id == id).unwrap().why_at_most.clone();
    assert!(why("snap-001").unwrap().contains("its volume is gone"), "{freed:#?}");
    assert_eq!(freed[0].freed_bytes_at_most, Some(2 * BLOCK), "what the lineage alone says, as a bound");
    assert_eq!(freed[1].freed_bytes, Some(BLOCK));
    assert!(why("snap-003").unwrap().contains("vol-9"), "{freed:#?}");
    // DescribeVolumes refused: nothing is exact that depends on it.
    let (ebs, _) = three();
    let ec2 = FakeEc2 {
        volumes: Some(vec![]),
        fail: [("DescribeVolumes", "UnauthorizedOperation".to_string())].into_iter().collect(),
        ..FakeEc2::with(ids.iter().map(|id| orphan(id)).collect(), vec![])
    };
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let report = handle_with_ebs(&config, &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let freed = &report.sweep().unwrap().regions[0].freed;
    assert_eq!(freed.len(), 3);
    assert!(freed.iter().all(|f| f.freed_bytes.is_none()), "{freed:#?}");
    assert!(freed.iter().all(|f| f.why_at_most.as_deref().unwrap().contains("UnauthorizedOperation")), "{freed:#?}");
}

/// M1: in a region listed in partitions, every planned deletion has its entry: a labelled bound.
#[tokio::test]
async fn a_region_listed_in_partitions_gives_every_planned_deletion_a_labelled_bound() {
    let ids: Vec<String> = (0..20u32).map(|n| format!("snap-{n:017x}")).collect();
    let ebs = FakeEbs::new(&[], Duration::ZERO);
    let ebs: Vec<(String, Box<dyn Ebs>)> = vec![("us-east-1".into(), Box::new(ebs))];
    let ledger = ledger_seen("us-east-1", ids.iter().cloned());
    let regions = vec![("us-east-1".to_string(), with_volumes(ids.iter().map(|id| orphan(id)).collect()))];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    // A region's first partitioned pass only records itself (the coverage proof has nothing to
    // go by): a listing in one sequence records the pass the partitioned one is held to.
    let sequential =
        orphan_snapshot_sweeper::Config { dry_run: true, partitioned_listing_above: 1_000_000, ..config() };
    handle_with_ebs(&sequential, &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let config = orphan_snapshot_sweeper::Config { dry_run: true, partitioned_listing_above: 0, ..config() };
    let report = handle_with_ebs(&config, &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let region = &report.sweep().unwrap().regions[0];
    assert!(region.snapshot_listing.is_some(), "listed in partitions");
    assert_eq!(region.planned_deletions, 20, "{region:#?}");
    assert_eq!(region.freed.len(), 20, "every planned deletion has its entry");
    for entry in &region.freed {
        assert_eq!(entry.freed_bytes, None);
        assert_eq!(entry.freed_bytes_at_most, Some(10 << 30));
        assert_eq!(entry.why_at_most.as_deref(), Some("listed in partitions: the lineage may be incomplete"));
    }
}

/// C2: a real run whose EBS answers are slow still deletes: the savings' questions stop early
/// enough to leave the deletions their time (before, the last questions ran until the cutoff).
#[tokio::test(start_paused = true)]
async fn slow_savings_leave_a_real_run_s_deletions_their_time() {
    let ids: Vec<String> = (0..20).map(|i| format!("snap-{i:03}")).collect();
    let versions: Vec<(String, Vec<Option<u32>>)> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), vec![Some(i as u32), Some(0)])).collect();
    let model: Vec<(&str, &[Option<u32>])> = versions.iter().map(|(id, v)| (id.as_str(), v.as_slice())).collect();
    let ebs: Vec<(String, Box<dyn Ebs>)> =
        vec![("us-east-1".into(), Box::new(FakeEbs::new(&model, Duration::from_secs(300))))];
    let ledger = ledger_seen("us-east-1", ids.iter().cloned());
    let regions = vec![("us-east-1".to_string(), with_volumes(ids.iter().map(|id| orphan(id)).collect()))];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let soon = invocation().with_deadline(SystemTime::now() + Duration::from_secs(500));
    let report = handle_with_ebs(&config(), &ports, Some(&ebs), &event(json!({})), &soon).await.unwrap();
    let region = &report.sweep().unwrap().regions[0];
    assert_eq!(region.deleted.len(), 20, "{region:#?}");
    assert_eq!(region.freed.len(), 20);
    let late = |f: &&orphan_snapshot_sweeper::core::summary::FreedSnapshot| {
        f.why_at_most.as_deref().is_some_and(|w| w.contains("the rest of its time is the deletions'"))
    };
    assert!(region.freed.iter().any(|f| late(&f)), "{:#?}", region.freed);
}

/// B2: the figures assume the whole planned set goes; a neighbour that was not deleted makes the
/// others' figures bounds, in the report and in their journal entries.
#[tokio::test]
async fn a_neighbour_not_deleted_turns_the_figures_into_bounds_in_the_journal() {
    let (ebs, ids) = three();
    let ledger = ledger_seen("us-east-1", ids.iter().map(|s| s.to_string()));
    let ec2 = FakeEc2 {
        delete_errors: [("snap-002".to_string(), "IncorrectState".to_string())].into_iter().collect(),
        ..with_volumes(ids.iter().map(|id| orphan(id)).collect())
    };
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let response = handle_with_ebs(&config(), &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let report = response.sweep().unwrap();
    assert_eq!(report.regions[0].deleted, ["snap-001", "snap-003"]);
    let freed = &report.regions[0].freed;
    assert_eq!(freed.len(), 2, "only what was deleted: {freed:#?}");
    assert!(freed.iter().all(|f| f.freed_bytes.is_none()), "{freed:#?}");
    assert!(freed[0].why_at_most.as_deref().unwrap().contains("snap-002"), "{freed:#?}");
    assert_eq!(report.totals.freed_bytes, Some(0));
    let journal = |id: &str| {
        ledger.items().into_iter().find(|i| i.pk == keys::run("r-test") && i.s("resource_id") == Some(id)).unwrap()
    };
    for id in ["snap-001", "snap-003"] {
        assert_eq!(journal(id).s("state"), Some("done"));
        assert_eq!(journal(id).n("freed_bytes"), None, "{id}");
        assert!(journal(id).n("freed_bytes_at_most").is_some(), "{id}");
    }
    assert_eq!(journal("snap-002").n("freed_bytes"), None);
    assert_eq!(journal("snap-002").n("freed_bytes_at_most"), None, "not deleted: nothing freed");
}

/// C3: the block indexes held at once are capped; past the cap, answers are dropped and their
/// snapshots get labelled bounds. 100 snapshots of a 16 TiB volume: 4 MiB a set.
#[tokio::test]
async fn the_evidence_held_at_once_is_capped() {
    const HIGH: u32 = (16u64 << 40).div_ceil(BLOCK) as u32 - 1;
    struct Huge;
    impl Ebs for Huge {
        fn snapshot_blocks<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Blocks, AwsError>> {
            Box::pin(async { Ok(Blocks { indexes: [0, HIGH].into_iter().collect(), block_size: BLOCK }) })
        }
        fn changed_blocks<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<BlockSet, AwsError>> {
            Box::pin(async { Ok([HIGH].into_iter().collect()) })
        }
    }
    let ids: Vec<String> = (0..100).map(|i| format!("snap-{i:03}")).collect();
    let ebs: Vec<(String, Box<dyn Ebs>)> = vec![("us-east-1".into(), Box::new(Huge))];
    let ledger = ledger_seen("us-east-1", ids.iter().cloned());
    let regions = vec![("us-east-1".to_string(), with_volumes(ids.iter().map(|id| orphan(id)).collect()))];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let config = orphan_snapshot_sweeper::Config { dry_run: true, ..config() };
    let report = handle_with_ebs(&config, &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let freed = &report.sweep().unwrap().regions[0].freed;
    assert_eq!(freed.len(), 100);
    let capped = freed.iter().filter(|f| f.why_at_most.as_deref().is_some_and(|w| w.contains("memory cap"))).count();
    // 64 MiB hold 16 sets of 4 MiB: the first snapshots' evidence, the rest bounds.
    assert!(capped > 80, "{capped}");
    assert!(freed.iter().any(|f| f.freed_bytes.is_some()), "what fits is still exact");
}

/// B1: the oldest snapshot of a volume created from an AMI's snapshot that is listed and stays is
/// compared with it (`ListChangedBlocks(ami's, oldest)`): exactly what changed since is freed.
#[tokio::test]
async fn the_oldest_snapshot_is_compared_with_the_ami_snapshot_its_volume_came_from() {
    let (_, ids) = three();
    // The AMI's snapshot holds snap-001's first block; snap-001 rewrote none of it but block 1.
    let ebs = FakeEbs::new(
        &[
            ("snap-ami", &[Some(1), Some(0)]),
            ("snap-001", &[Some(1), Some(1)]),
            ("snap-002", &[Some(1), Some(2)]),
            ("snap-003", &[Some(3), Some(2)]),
        ],
        Duration::ZERO,
    );
    let ebs: Vec<(String, Box<dyn Ebs>)> = vec![("us-east-1".into(), Box::new(ebs))];
    let ledger = ledger_seen("us-east-1", ids.iter().map(|s| s.to_string()));
    let mut snapshots: Vec<SnapshotListing> = ids.iter().map(|id| orphan(id)).collect();
    snapshots.push(SnapshotListing { volume_id: Some("vol-ami".into()), ..orphan("snap-ami") });
    let ec2 = FakeEc2 {
        volumes: Some(vec![("vol-01".into(), Some("snap-ami".into()))]),
        ..FakeEc2::with(snapshots, vec![image("ami-golden", &["snap-ami"], 30)])
    };
    let regions = vec![("us-east-1".to_string(), ec2)];
    let ports = Ports { regions: &regions, publisher: &FakeSns::default(), ledger: Some(&ledger) };
    let config = orphan_snapshot_sweeper::Config { dry_run: true, ..config() };
    let report = handle_with_ebs(&config, &ports, Some(&ebs), &event(json!({})), &invocation()).await.unwrap();
    let freed = &report.sweep().unwrap().regions[0].freed;
    let exact: Vec<(&str, Option<u64>)> = freed.iter().map(|f| (f.snapshot_id.as_str(), f.freed_bytes)).collect();
    // Block 0 (version 1) is the AMI's: not freed; block 1's version 1 only snap-001 holds.
    assert_eq!(exact, [("snap-001", Some(BLOCK)), ("snap-002", Some(BLOCK)), ("snap-003", Some(BLOCK))], "{freed:#?}");
}
