"""Figure 3: the planner's times from criterion's estimates, the 10x ratios and the targets.

usage: planner_summary.py CRITERION_DIR   (e.g. $CARGO_TARGET_DIR/criterion)
"""

import json
import os
import sys

SIZES = [10_000, 100_000, 1_000_000]


def estimate(criterion_dir, size):
    path = os.path.join(criterion_dir, "planner", "plan", str(size), "new", "estimates.json")
    with open(path) as f:
        estimates = json.load(f)
    mean = estimates["mean"]
    return mean["point_estimate"] / 1e9, mean["confidence_interval"]["lower_bound"] / 1e9, \
        mean["confidence_interval"]["upper_bound"] / 1e9


def main():
    criterion_dir = sys.argv[1]
    times = {size: estimate(criterion_dir, size) for size in SIZES}
    print("planner (criterion mean, 95% CI; one core; a third as many images as snapshots):")
    for size, (mean, low, high) in times.items():
        print(f"  {size:>9,} snapshots {size // 3:>8,} images: {mean * 1000:9.2f} ms  [{low * 1000:.2f} .. "
              f"{high * 1000:.2f}]  {mean / size * 1e9:6.0f} ns/snapshot")
    misses = []
    for small, large in zip(SIZES, SIZES[1:]):
        ratio = times[large][0] / times[small][0]
        print(f"  {large:,} / {small:,}: {ratio:.2f}x the time for 10x the input (target <= 11x)")
        if ratio > 11:
            misses.append(f"{large:,}/{small:,} ratio {ratio:.2f}x > 11x")
    at_million = times[1_000_000][0]
    if at_million >= 1.0:
        misses.append(f"1M snapshots take {at_million:.2f} s (target < 1 s)")
    for miss in misses:
        print(f"MISSED: {miss}")
    if not misses:
        print(f"  targets met: 1M in {at_million * 1000:.0f} ms < 1 s, every 10x step <= 11x")


if __name__ == "__main__":
    main()
