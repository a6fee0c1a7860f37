#!/usr/bin/env bash
# `make bench`: the four figures of issue 5, printed (benchmarks, not timed tests).
#   1. API floor: the sweeper's calls on ~5,000 snapshots against ceil(S/1000)+ceil(I/1000)+2 per
#      deletion (its sharing check, its DeleteSnapshot)+ceil(deletions/1000) taggings, beside Cloud
#      Custodian on the same data                   (bench/sweep.py, moto + bench/proxy.py)
#   2. Deletion throughput under DeleteSnapshot throttling (100 burst, 5/s)   (bench/sweep.py)
#   3. The planner at 10k/100k/1M snapshots, one core (criterion) and peak memory at 1M
#                                                    (functions/orphan-snapshot-sweeper/benches/)
#   4. Binary sizes (cargo lambda build --release --arm64) and init time to the first Runtime API poll
#                                                    (bench/cold_start.py, bench/runtime_api.py)
#   5. (issue 23; only with BENCH_PARTS=scale: about 50 minutes) a million snapshots in one run:
#      the release binary as Lambda runs it, dry run, against a synthetic EC2 endpoint of N
#      snapshots at 1 and 3 s a page (bench/scale.py, bench/ec2_synth.py), beside the code before
#      issue 23 (SCALE_BASELINE: a binary; unset, built from a worktree of $SCALE_BASELINE_COMMIT)
# Everything it starts (moto, the proxy, the fake Runtime API, the functions) listens on loopback
# only and is stopped before it exits. Builds go to $CARGO_TARGET_DIR (default target/); a cold
# run builds the workspace three times (x86_64 release, arm64 release, bench profile with the
# dev-dependencies' features): about 50 minutes on 2 cores. Later runs take about 14 minutes.
#
# BENCH_PARTS=sweep,planner,cold-start (default) selects parts, `scale` among them; the builds
# they need run first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PARTS=${BENCH_PARTS:-sweep,planner,cold-start}
PY=.venv/bin/python
FUNCTIONS=(snapshot-on-stop orphan-snapshot-sweeper untrusted-ami-alert)
OUT=bench/.out
mkdir -p "$OUT"
has() { [[ ,$PARTS, == *,$1,* ]]; }
for tool in "$PY" .venv/bin/moto_server .venv/bin/cargo-lambda; do
  [[ -x $tool ]] || { echo "error: $tool is missing: run 'make bench' (it installs the tools into .venv)" >&2; exit 1; }
done
export PATH="$ROOT/.venv/bin:$PATH"

echo "== machine =="
echo "nproc: $(nproc); $(lscpu | sed -n 's/^Model name:[[:space:]]*/cpu: /p' | head -1); memory: $(free -g | awk '/^Mem:/{print $2}') GiB"
echo "rustc: $(rustc --version); moto: $($PY -c 'import moto; print(moto.__version__)')"
echo

packages=()
for f in "${FUNCTIONS[@]}"; do packages+=(-p "$f"); done
if has scale && [[ -z ${SCALE_BASELINE:-} ]]; then
  # The baseline first: it is built into the same target dir (the same artifact names), then
  # copied aside, and today's binaries are built after it.
  SCALE_BASELINE=$OUT/orphan-snapshot-sweeper-${SCALE_BASELINE_COMMIT:=f3c5bca}
  if [[ ! -x $SCALE_BASELINE ]]; then
    echo "building the baseline sweeper of $SCALE_BASELINE_COMMIT (a git worktree; cold: ~15 min)..."
    base=$(mktemp -d)
    git worktree add --detach "$base/tree" "$SCALE_BASELINE_COMMIT" >/dev/null
    (cd "$base/tree" && cargo build --release --locked --quiet -p orphan-snapshot-sweeper)
    cp "$CARGO_TARGET_DIR/release/orphan-snapshot-sweeper" "$SCALE_BASELINE"
    git worktree remove --force "$base/tree"
    # Cargo would take the baseline's workspace crates for today's (same names, and the
    # baseline's sources unchanged): they are built again.
    cargo clean --release --quiet -p amiguard -p orphan-snapshot-sweeper
  fi
fi
if has sweep || has cold-start || has scale; then
  echo "building the x86_64 release binaries (cargo build --release; cold: ~17 min)..."
  cargo build --release --locked --quiet "${packages[@]}"
fi
if has cold-start; then
  echo "building the arm64 Lambda binaries (cargo lambda build --release --arm64; cold: ~18 min)..."
  if ! cargo lambda build --release --arm64 --locked "${packages[@]}" >"$OUT/lambda-build.log" 2>&1; then
    echo "warning: cargo lambda build --release --arm64 failed (see $OUT/lambda-build.log): sizes below are x86_64 only" >&2
  fi
fi
echo

if has sweep; then
  custodian=""
  if [[ ! -x bench/.venv-c7n/bin/custodian ]]; then
    echo "installing Cloud Custodian (bench/requirements-c7n.txt) into bench/.venv-c7n..."
    if python3 -m venv bench/.venv-c7n >/dev/null 2>&1 &&
      bench/.venv-c7n/bin/pip install --quiet --disable-pip-version-check -r bench/requirements-c7n.txt >"$OUT/c7n-install.log" 2>&1; then
      :
    else
      echo "warning: Cloud Custodian could not be installed (see $OUT/c7n-install.log): its comparison is skipped" >&2
    fi
  fi
  [[ -x bench/.venv-c7n/bin/custodian ]] && custodian=$ROOT/bench/.venv-c7n/bin/custodian
  $PY bench/sweep.py --binary "$CARGO_TARGET_DIR/release/orphan-snapshot-sweeper" ${custodian:+--custodian "$custodian"}
  echo
fi

if has planner; then
  echo "== 3. planning at scale (criterion; pinned to one core with taskset -c 0) =="
  echo "building the planner benchmarks (bench profile; cold: ~15 min)..."
  cargo bench --locked -p orphan-snapshot-sweeper --bench planner --bench planner_memory --no-run --quiet 2>"$OUT/bench-build.log" ||
    { cat "$OUT/bench-build.log" >&2; exit 1; }
  taskset -c 0 cargo bench --locked -p orphan-snapshot-sweeper --bench planner >"$OUT/criterion.log" 2>&1 ||
    { cat "$OUT/criterion.log" >&2; exit 1; }
  $PY bench/planner_summary.py "$CARGO_TARGET_DIR/criterion"
  # One size per process: the high-water mark (VmHWM) never goes down.
  for size in 10000 100000 1000000; do
    taskset -c 0 cargo bench --locked --quiet -p orphan-snapshot-sweeper --bench planner_memory -- "$size" 2>>"$OUT/bench-build.log" |
      grep '^planner_memory'
  done
  echo
fi

if has scale; then
  # SCALE_SIZES and SCALE_LATENCIES (comma-separated) change the grid: 100000,1000000 and 1,3.
  $PY bench/scale.py --binary "$CARGO_TARGET_DIR/release/orphan-snapshot-sweeper" --baseline "$SCALE_BASELINE" \
    --sizes "${SCALE_SIZES:-100000,1000000}" --latencies "${SCALE_LATENCIES:-1,3}"
  echo
fi

if has cold-start; then
  $PY bench/cold_start.py "$CARGO_TARGET_DIR" "${COLD_START_RUNS:-20}"
fi
