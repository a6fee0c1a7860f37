//! Peak memory of planning one region: builds the synthetic facts of each size given on the
//! command line (default 1,000,000 snapshots, a third as many images), plans once, and prints
//! - the process's resident memory from /proc/self/status: after building the input (`VmRSS`)
//!   and its high-water mark after planning (`VmHWM`, what Lambda's "Max Memory Used" reports);
//! - the heap bytes live, counted by a wrapping global allocator: the snapshots' facts, the
//!   images' facts, and the most the planner held at once on top of its input.
//!
//! Run one size per process, as `make bench` does: the high-water mark never goes down.
//! `cargo bench -p orphan-snapshot-sweeper --bench planner_memory -- 1000000`

mod synthetic;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use orphan_snapshot_sweeper::core::plan;

/// Issue 5's target at 1M snapshots: 512 MiB.
const TARGET_KIB: u64 = 512 * 1024;

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib_kib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.replace('_', "").parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000_000] } else { sizes };
    let policy = synthetic::policy();
    for snapshots in sizes {
        let start_rss = status_kib("VmRSS:");
        let mut region = synthetic::region(snapshots);
        let input_rss = status_kib("VmRSS:");
        let input_live = LIVE.load(Ordering::Relaxed);
        PEAK.store(input_live, Ordering::Relaxed);
        let started = Instant::now();
        let plan = plan(&region.input(), &policy);
        let elapsed = started.elapsed();
        let peak_rss = status_kib("VmHWM:");
        let planner_peak = PEAK.load(Ordering::Relaxed) - input_live;
        if let Err(problem) = synthetic::check(&region, &plan) {
            eprintln!("planner_memory: synthetic data at {snapshots}: {problem}");
            std::process::exit(1);
        }
        let orphans = plan.orphans.len();
        drop(plan);
        let before_snapshots = LIVE.load(Ordering::Relaxed);
        drop(std::mem::take(&mut region.snapshots));
        let snapshot_bytes = before_snapshots - LIVE.load(Ordering::Relaxed);
        println!(
            "planner_memory snapshots={snapshots} images={} orphans={orphans} one_plan={:.3}s \
             rss: start={} input={} peak(VmHWM)={}; heap: input={} (snapshots {} = {} B each, images {}), \
             planner peak on top={} ({} B per snapshot)",
            region.images.len(),
            elapsed.as_secs_f64(),
            mib_kib(start_rss),
            mib_kib(input_rss),
            mib_kib(peak_rss),
            mib(input_live),
            mib(snapshot_bytes),
            snapshot_bytes / snapshots.max(1),
            mib(input_live - snapshot_bytes),
            mib(planner_peak),
            planner_peak / snapshots.max(1),
        );
        if snapshots == 1_000_000 {
            let verdict = match peak_rss {
                Some(kib) if kib < TARGET_KIB => "met",
                Some(_) => "MISSED",
                None => "unknown (no /proc/self/status)",
            };
            println!("planner_memory target: peak resident < 512 MiB at 1M snapshots: {verdict}");
        }
    }
}
