"""Figure 4: size of each Lambda binary and its init time.

Size: the `bootstrap` files of `cargo lambda build --release --arm64` (what is deployed), and the
x86_64 release binaries measured here.

Init time: from just before the process is started (fork + exec included) to its first poll of
the Lambda Runtime API (`GET /2018-06-01/runtime/invocation/next`), answered by bench/runtime_api.py
on loopback; the x86_64 release binary, the function's required variables set, RUNS times each,
the median and the slowest printed. Everything a function does before that poll (tracing,
configuration, SDK configuration, clients) is its init; nothing is built per invocation.

usage: cold_start.py TARGET_DIR [RUNS]
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runtime_api  # noqa: E402

FUNCTIONS = {
    "snapshot-on-stop": {},
    "orphan-snapshot-sweeper": {},
    "untrusted-ami-alert": {"ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:amiguard-alerts"},
}
SIZE_TARGET_MB = 10
INIT_TARGET_MS = 30


def init_time_ms(binary, env, log):
    api = runtime_api.RuntimeApi()
    try:
        started = time.perf_counter()
        process = runtime_api.start(binary, api, env, log)
        try:
            deadline = started + 10
            while api.first_poll is None:
                if process.poll() is not None:
                    raise SystemExit(f"{binary} exited with {process.returncode} before polling; see {log.name}")
                if time.perf_counter() > deadline:
                    raise SystemExit(f"{binary} did not poll the runtime API within 10 s; see {log.name}")
                time.sleep(0.0005)
            return (api.first_poll - started) * 1000
        finally:
            runtime_api.stop(process)
    finally:
        api.close()


def main():
    target = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".out")
    os.makedirs(out, exist_ok=True)
    print("== 4. cold start and size ==")
    print(f"{'function':<26} {'arm64 bootstrap':>16} {'x86_64 binary':>14} {'init median':>12} {'init max':>9}")
    misses = []
    for name, env in FUNCTIONS.items():
        arm = os.path.join(target, "lambda", name, "bootstrap")
        x86 = os.path.join(target, "release", name)
        if not os.path.exists(x86):
            raise SystemExit(f"{x86} is missing: build it first (cargo build --release)")
        arm_mb = os.path.getsize(arm) / 1e6 if os.path.exists(arm) else None
        x86_mb = os.path.getsize(x86) / 1e6
        with open(os.path.join(out, f"cold-start-{name}.log"), "w") as log:
            times = [init_time_ms(x86, env, log) for _ in range(runs)]
        median, worst = statistics.median(times), max(times)
        arm_text = f"{arm_mb:.2f} MB" if arm_mb is not None else "not built"
        print(f"{name:<26} {arm_text:>16} {x86_mb:>11.2f} MB {median:>9.1f} ms {worst:>6.1f} ms")
        if arm_mb is None or arm_mb >= SIZE_TARGET_MB:
            misses.append(f"{name}: arm64 size {arm_text} (target < {SIZE_TARGET_MB} MB)")
        if median >= INIT_TARGET_MS:
            misses.append(f"{name}: init median {median:.1f} ms (target < {INIT_TARGET_MS} ms)")
    print(f"(init: {runs} starts each, x86_64 release binary, process start to first "
          "GET /2018-06-01/runtime/invocation/next; MB = 10^6 bytes)")
    for miss in misses:
        print(f"MISSED: {miss}")
    if not misses:
        print(f"all binaries < {SIZE_TARGET_MB} MB (arm64) and init < {INIT_TARGET_MS} ms (x86_64): targets met")


if __name__ == "__main__":
    main()
