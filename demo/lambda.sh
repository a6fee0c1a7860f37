# Sourced by demo/run.sh (`make demo`) and demo/try.sh (`make try`): running the functions'
# binaries locally, each as its own process against `cargo lambda watch`'s Lambda runtime API,
# and stopping everything this script started when the caller exits.
#
# After `lambda_build`, LAMBDA_BIN_DIR holds the binaries; after `lambda_serve`,
# AMIGUARD_LAMBDA_PORT is the port demo/common.py's `invoke` sends events to.

PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p .demo

lambda_pids=()
lambda_cleanup() {
  for pid in "${lambda_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap lambda_cleanup EXIT

# lambda_need_tools make-target tool...: each tool must be in .venv, else say which make target installs it.
lambda_need_tools() {
  local target=$1; shift
  for tool in "$PY" "$@"; do
    [[ -x $tool ]] || { echo "error: $tool is missing: run 'make $target' (it installs the tools into .venv)" >&2; exit 1; }
  done
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for url what pid log: until `url` answers, or fail when `pid` has exited.
wait_for() {
  for _ in $(seq 1 600); do
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "error: $2 exited; its log ($4):" >&2; tail -20 "$4" >&2; exit 1; }
    sleep 0.5
  done
  echo "error: $2 did not answer at $1 within 5 minutes; see $4" >&2; exit 1
}

# The functions are the binaries `make test` builds (`cargo test` builds each package's binary
# beside its tests, with the same features): `make test`, `make demo` and `make try` never compile
# the SDK a second time. AMIGUARD_BIN_DIR (the integration tests set it) names binaries already
# built that way, so that nothing is built.
lambda_build() {
  if [[ -n ${AMIGUARD_BIN_DIR:-} ]]; then
    LAMBDA_BIN_DIR=$AMIGUARD_BIN_DIR
  else
    echo "building the functions (the same build as make test; first time: several minutes)..."
    cargo test --workspace --locked --no-run --quiet
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps --locked | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    LAMBDA_BIN_DIR=$target_dir/debug
  fi
}

# cargo lambda serves the Lambda APIs only; each function runs as its own process against them.
lambda_serve() {
  local port
  port=$(free_port)
  cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port" >.demo/watch.log 2>&1 &
  lambda_pids+=($!)
  for _ in $(seq 1 240); do
    "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && break
    kill -0 "${lambda_pids[-1]}" 2>/dev/null || { echo "error: cargo lambda watch exited; see .demo/watch.log" >&2; tail -20 .demo/watch.log >&2; exit 1; }
    sleep 0.5
  done
  export AMIGUARD_LAMBDA_PORT=$port
}

# lambda_start function [NAME=value...]: runs the function's binary against the runtime API, with
# the caller's environment plus the given variables; its output goes to .demo/<function>.log.
lambda_start() {
  local function=$1; shift
  local binary=$LAMBDA_BIN_DIR/$function
  [[ -x $binary ]] || { echo "error: $binary is missing: build it with 'cargo test --workspace --no-run'" >&2; exit 1; }
  env "$@" \
    AWS_LAMBDA_FUNCTION_NAME="$function" AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$AMIGUARD_LAMBDA_PORT/.rt/$function" \
    "$binary" >".demo/$function.log" 2>&1 &
  lambda_pids+=($!)
}
