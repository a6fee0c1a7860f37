//! Peak memory of planning one region: builds the synthetic facts of each size given on the
//! command line (default 1,000,000 snapshots, a third as many images), plans once, and prints
//! the process's resident memory from /proc/self/status: after building the input (`VmRSS`) and
//! the high-water mark after planning (`VmHWM`). Run one size per process, as `make bench` does:
//! the high-water mark never goes down.
//!
//! `cargo bench -p amiguard --bench planner_memory -- 1000000`

mod synthetic;

use std::time::Instant;

use amiguard::sweeper::plan;

/// Issue 5's target at 1M snapshots: 512 MiB.
const TARGET_KIB: u64 = 512 * 1024;

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.replace('_', "").parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000_000] } else { sizes };
    let policy = synthetic::policy();
    for snapshots in sizes {
        let before = status_kib("VmRSS:");
        let region = synthetic::region(snapshots);
        let input_rss = status_kib("VmRSS:");
        let started = Instant::now();
        let plan = plan(&region.input(), &policy);
        let elapsed = started.elapsed();
        let peak = status_kib("VmHWM:");
        if let Err(problem) = synthetic::check(&region, &plan) {
            eprintln!("planner_memory: synthetic data at {snapshots}: {problem}");
            std::process::exit(1);
        }
        println!(
            "planner_memory snapshots={snapshots} images={} orphans={} process_start_rss={} input_rss={} peak_rss(VmHWM)={} one_plan={:.3}s",
            region.images.len(),
            plan.orphans.len(),
            mib(before),
            mib(input_rss),
            mib(peak),
            elapsed.as_secs_f64()
        );
        if snapshots == 1_000_000 {
            let verdict = match peak {
                Some(kib) if kib < TARGET_KIB => "met",
                Some(_) => "MISSED",
                None => "unknown (no /proc/self/status)",
            };
            println!("planner_memory target: peak < 512 MiB at 1M snapshots: {verdict}");
        }
        drop(plan);
    }
}
