"""`make bench` part `scale` (issue 23): the sweeper's release binary, run as Lambda runs it
(bench/runtime_api.py, one cold container per run, Lambda's 15-minute deadline), in a dry run
against the synthetic EC2 endpoint bench/ec2_synth.py: an account of N snapshots (and N/50
images), a latency per page, EC2's token buckets. For each N and latency: the time to a complete
plan (the invocation's answer), the peak memory (VmHWM of the function's process), the
DescribeSnapshots calls and throttled answers (the server's count), and how the region was listed.

The baseline is today's code (a binary built from main before issue 23) on the same server; a run
the deadline cuts says how many pages it reached.

Usage: scale.py --binary PATH [--baseline PATH] [--sizes 100000,1000000] [--latencies 1,3]
                [--deadline 900] [--out bench/.out/scale.json]
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import runtime_api  # noqa: E402

ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "bench/.out")
ACCOUNT = "123456789012"


def start_server(snapshots, latency, log):
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "ec2_synth.py"), "--snapshots", str(snapshots),
                                "--latency", str(latency)], stdout=subprocess.PIPE, stderr=log,
                               stdin=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise SystemExit(f"ec2_synth did not start: {line!r}")
    return process, f"http://127.0.0.1:{int(line.split()[-1])}"


def stats_of(endpoint):
    with urllib.request.urlopen(endpoint + "/stats", timeout=10) as answer:
        return json.load(answer)


def peak_memory_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def scheduled_event():
    with open(os.path.join(ROOT, "events/orphan-snapshot-sweeper.scheduled.json")) as f:
        event = json.load(f)
    event["account"] = ACCOUNT
    return event


def run_once(label, binary, snapshots, latency, deadline):
    name = f"scale-{label}-{snapshots}-{latency:g}s"
    with open(os.path.join(OUT, f"{name}-server.log"), "w") as server_log:
        server, endpoint = start_server(snapshots, latency, server_log)
        api = runtime_api.RuntimeApi()
        env = {"AWS_ENDPOINT_URL": endpoint, "DRY_RUN": "true", "MIN_AGE_HOURS": "0", "RECYCLE_BIN_CHECK": "false",
               "ADOPT_UNWITNESSED_ORPHANS": "true", "RUST_LOG": "warn",
               # No ledger here (a dry run may go without one): no pass recorded to go by, so
               # the partitioned listing is asked for; the baseline does not read it.
               "PARTITIONED_LISTING_ABOVE": "0", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}
        try:
            with open(os.path.join(OUT, f"{name}-function.log"), "w") as log:
                process = runtime_api.start(binary, api, env, log)
                try:
                    started = time.monotonic()
                    kind, answer = api.invoke(scheduled_event(), timeout_s=deadline)
                    seconds = time.monotonic() - started
                    peak = peak_memory_kib(process.pid)
                finally:
                    runtime_api.stop(process)
                    api.close()
            stats = stats_of(endpoint)
        finally:
            server.terminate()
            server.wait()
    if kind != "response":
        raise SystemExit(f"{name}: the sweeper answered an error: {answer}")
    with open(os.path.join(OUT, f"{name}-report.json"), "w") as f:
        json.dump(answer, f, indent=1)
    region = answer["regions"][0]
    listing = region.get("snapshot_listing") or {}
    return {
        "code": label, "snapshots": snapshots, "latency_s": latency, "seconds": round(seconds, 1),
        "peak_mib": round(peak / 1024) if peak else None,
        "snapshots_scanned": region["snapshots_scanned"], "orphans": region["counts"]["orphans"],
        "aborted": region.get("aborted"),
        "calls": stats["calls"].get("DescribeSnapshots", 0),
        "throttled": stats["throttled"].get("DescribeSnapshots", 0),
        "pages": stats["pages"].get("DescribeSnapshots", 0),
        "image_pages": stats["pages"].get("DescribeImages", 0),
        "mode": listing.get("mode", "sequential"),
        "partitions": len(listing.get("complete", [])) if listing.get("mode") == "partitioned" else None,
    }


def show(row):
    plan = "cut by the deadline" if row["aborted"] else f"{row['seconds']:.0f} s"
    parts = f", {row['partitions']}/16 partitions" if row["partitions"] is not None else ""
    print(f"  {row['code']:<9} N={row['snapshots']:>8,} {row['latency_s']:g} s/page: plan {plan:<20} "
          f"peak {row['peak_mib']} MiB, DescribeSnapshots {row['calls']} calls ({row['throttled']} throttled, "
          f"{row['pages']} pages), {row['snapshots_scanned']:,} listed, {row['orphans']:,} orphans "
          f"[{row['mode']}{parts}]" + (f"; aborted: {row['aborted'][:90]}" if row["aborted"] else ""), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--baseline")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--latencies", default="1,3")
    parser.add_argument("--deadline", type=int, default=900, help="the Lambda deadline the fake runtime gives (s)")
    parser.add_argument("--only", choices=["partitioned", "baseline"], help="run one of the two codes")
    parser.add_argument("--out", default=os.path.join(OUT, "scale.json"))
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    latencies = [float(s) for s in args.latencies.split(",")]
    codes = [("issue-23", args.binary)] + ([("baseline", args.baseline)] if args.baseline else [])
    if args.only == "partitioned":
        codes = codes[:1]
    elif args.only == "baseline":
        codes = codes[1:]
    print(f"== 5. a million snapshots in one run (synthetic EC2, Lambda deadline {args.deadline} s, dry run) ==")
    rows = []
    for snapshots in sizes:
        for latency in latencies:
            for label, binary in codes:
                rows.append(run_once(label, binary, snapshots, latency, args.deadline))
                show(rows[-1])
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
