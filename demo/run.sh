#!/usr/bin/env bash
# `make demo`: the three functions, invoked through `cargo lambda`'s Lambda API emulator, against
# a moto server on loopback that this script starts, seeds (through demo/*.py) and stops again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for tool in "$PY" .venv/bin/moto_server .venv/bin/cargo-lambda; do
  [[ -x $tool ]] || { echo "error: $tool is missing: run 'make demo' (it installs the tools into .venv)" >&2; exit 1; }
done
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p .demo
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # url, what, pid, log
  for _ in $(seq 1 600); do
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "error: $2 exited; its log ($4):" >&2; tail -20 "$4" >&2; exit 1; }
    sleep 0.5
  done
  echo "error: $2 did not answer at $1 within 5 minutes; see $4" >&2; exit 1
}

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

MOTO_PORT=$(free_port)
MOTO_AMIS_PATH=tests/fixtures/amis.json MOTO_EC2_LOAD_DEFAULT_AMIS=false \
  moto_server -H 127.0.0.1 -p "$MOTO_PORT" >.demo/moto.log 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$MOTO_PORT/moto-api/" "moto" "${pids[-1]}" .demo/moto.log

# The functions call a few EC2 actions moto lacks (snapshot locks, Fast Snapshot Restores, image
# references): a proxy in front of moto answers them as an account without any would.
rm -f .demo/proxy.endpoint
"$PY" bench/proxy.py "http://127.0.0.1:$MOTO_PORT" .demo/proxy.endpoint >.demo/proxy.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [[ -s .demo/proxy.endpoint ]] && break; sleep 0.1; done
[[ -s .demo/proxy.endpoint ]] || { echo "error: the gap-filling proxy did not start; see .demo/proxy.log" >&2; tail -20 .demo/proxy.log >&2; exit 1; }

export AWS_ENDPOINT_URL="$(cat .demo/proxy.endpoint)" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
ACCOUNT=123456789012 # moto's default account
export ALERT_TOPIC_ARN="arn:aws:sns:us-east-1:$ACCOUNT:amiguard-alerts"
export LEDGER_TABLE=amiguard-ledger
"$PY" demo/ledger.py

# The functions are the binaries `make test` builds (`cargo test` builds each package's binary
# beside its tests, with the same features): neither command ever compiles the SDK a second time.
echo "building the functions (the same build as make test; first time: several minutes)..."
cargo test --workspace --locked --no-run --quiet
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
LAMBDA_PORT=$(free_port)
# cargo lambda serves the Lambda APIs only; each function runs as its own process against them.
cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$LAMBDA_PORT" >.demo/watch.log 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do
  "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$LAMBDA_PORT" 2>/dev/null && break
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "error: cargo lambda watch exited; see .demo/watch.log" >&2; tail -20 .demo/watch.log >&2; exit 1; }
  sleep 0.5
done
for function in snapshot-on-stop orphan-snapshot-sweeper untrusted-ami-alert; do
  env RUST_LOG=warn AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
    SNAPSHOT_SCOPE=tagged KEEP_LAST=2 DRY_RUN=false MIN_AGE_HOURS=0 RECYCLE_BIN_CHECK=false ENFORCEMENT=tag \
    AWS_LAMBDA_FUNCTION_NAME="$function" AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$LAMBDA_PORT/.rt/$function" \
    "$TARGET_DIR/debug/$function" >".demo/$function.log" 2>&1 &
  pids+=($!)
done
export AMIGUARD_LAMBDA_PORT=$LAMBDA_PORT

started=$SECONDS
for function in snapshot-on-stop orphan-snapshot-sweeper untrusted-ami-alert; do
  "$PY" "demo/$function.py"
done
echo
echo "demo finished in $((SECONDS - started)) s (after the build); moto, cargo lambda and the functions stopped."
