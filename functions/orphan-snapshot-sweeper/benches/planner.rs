//! The pure snapshot planner at 10k, 100k and 1M snapshots (a third as many images), timed by
//! criterion. `bench/planner_summary.py` prints the times and the 10x ratios from criterion's
//! estimates; `make bench` runs it pinned to one core.

mod synthetic;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orphan_snapshot_sweeper::core::plan;

/// Sizes and how long criterion measures each (fewer samples for the large ones).
const SIZES: [(usize, usize, u64); 3] = [(10_000, 100, 5), (100_000, 20, 8), (1_000_000, 10, 20)];

fn planner(c: &mut Criterion) {
    let policy = synthetic::policy();
    let mut group = c.benchmark_group("planner");
    for (snapshots, samples, seconds) in SIZES {
        let region = synthetic::region(snapshots);
        let input = region.input();
        if let Err(problem) = synthetic::check(&region, &plan(&input, &policy)) {
            panic!("synthetic data at {snapshots}: {problem}");
        }
        group.sample_size(samples).measurement_time(Duration::from_secs(seconds));
        group.throughput(Throughput::Elements(snapshots as u64));
        group.bench_with_input(BenchmarkId::new("plan", snapshots), &input, |b, input| {
            b.iter(|| plan(std::hint::black_box(input), &policy))
        });
    }
    group.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
