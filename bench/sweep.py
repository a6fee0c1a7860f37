"""Figures 1 and 2: the sweeper's API calls against the floor, beside Cloud Custodian, and its
deletion throughput under DeleteSnapshot throttling.

It starts moto on a free loopback port, seeds each phase's own account through boto3 (AMIs made
with CreateImage from a few instances, half of them deregistered, plus manual snapshots), puts
bench/proxy.py in front (counts calls by action, emulates EC2 pagination, throttles), and runs
the sweeper's release binary as Lambda does, through bench/runtime_api.py. Everything it starts
it stops; nothing leaves loopback.

Each account gets amiguard's ledger (DynamoDB on the same moto), created from template.yaml.

Phases, each in a fresh account:
  floor       amiguard sweep, no throttling: EC2 calls by action vs ceil(S/1000) + ceil(I/1000) +
              2 per deletion (its sharing check, its DeleteSnapshot) + ceil(deletions/1000) Recycle Bin
              taggings; the ledger's calls and items written, then again for an unchanged rerun
  custodian   Cloud Custodian (ebs-snapshot, `unused` + CreateImage description, `delete`) on the same data
  throughput  amiguard sweep with DeleteSnapshot throttled to AWS's 100 burst, 5/s refill
  regions     the same throttle in each of four regions (a bucket per region), swept in one invocation

usage: sweep.py --binary PATH [--custodian PATH] [--images N] [--manual N] [--throughput-images N]
"""

import argparse
import concurrent.futures
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import botocore.config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, ".out")
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(ROOT, "demo"))
import ledger  # noqa: E402  (demo/ledger.py: the table from template.yaml's definition)
import proxy as recording_proxy  # noqa: E402
import runtime_api  # noqa: E402

LEDGER_TABLE = "amiguard-ledger"

FIXTURE_AMI = "ami-0a1b2c3d4e5f00001"  # tests/fixtures/amis.json: Amazon Linux
INSTANCES = 4
THREADS = 8
ACCOUNTS = {"floor": "100000000001", "custodian": "100000000002", "throughput": "100000000003",
            "regions": "100000000004"}
DELETE_BURST, DELETE_RATE = 100, 5.0  # AWS's DeleteSnapshot throttle, as the issue states it
LAMBDA_TIMEOUT_S = 900
DELETION_MARGIN_S = 60  # orphan_snapshot_sweeper::DELETION_MARGIN: no deletion starts inside it
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1"]  # the regions phase's four


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    env = dict(os.environ, MOTO_EC2_LOAD_DEFAULT_AMIS="false",
               MOTO_AMIS_PATH=os.path.join(ROOT, "tests/fixtures/amis.json"))
    moto_server = os.environ.get("MOTO_SERVER", os.path.join(ROOT, ".venv/bin/moto_server"))
    log = open(os.path.join(OUT, "moto.log"), "w")
    process = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"moto exited; see {log.name}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"moto did not answer within 30 s; see {log.name}")


def create_ledger(endpoint, account):
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                            aws_secret_access_key="bench")
    dynamodb.meta.events.register("before-sign.dynamodb.*",
                                  lambda request, **_: request.headers.__setitem__("x-moto-account-id", account))
    ledger.create(dynamodb, LEDGER_TABLE)


def ec2_client(endpoint, account, region="us-east-1"):
    client = boto3.client("ec2", endpoint_url=endpoint, region_name=region, aws_access_key_id="bench",
                          aws_secret_access_key="bench",
                          config=botocore.config.Config(max_pool_connections=THREADS * 2,
                                                        retries={"max_attempts": 10, "mode": "standard"}))

    def add_account(request, **_):
        request.headers["x-moto-account-id"] = account

    client.meta.events.register("before-sign.ec2.*", add_account)
    return client


def seed(endpoint, account, images, manual, region="us-east-1", with_ledger=True):
    """`images` AMIs by CreateImage from INSTANCES instances, half deregistered; `manual` snapshots
    of their volumes, in `region`. Returns the listing's counts as the sweeper will see them."""
    ec2 = ec2_client(endpoint, account, region)
    started = time.monotonic()
    run = ec2.run_instances(ImageId=FIXTURE_AMI, InstanceType="t3.micro", MinCount=INSTANCES, MaxCount=INSTANCES)
    instances = [i["InstanceId"] for i in run["Instances"]]
    ec2.stop_instances(InstanceIds=instances)
    pool = concurrent.futures.ThreadPoolExecutor(THREADS)
    image_ids = list(pool.map(lambda n: ec2.create_image(InstanceId=instances[n % INSTANCES], Name=f"bench-{n}",
                                                         NoReboot=True)["ImageId"], range(images)))
    list(pool.map(lambda image: ec2.deregister_image(ImageId=image), image_ids[::2]))
    volumes = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    list(pool.map(lambda n: ec2.create_snapshot(VolumeId=volumes[n % len(volumes)],
                                                Description=f"nightly backup {n}"), range(manual)))
    pool.shutdown()
    counts = listing_counts(ec2, account)
    if with_ledger:
        create_ledger(endpoint, account)
    counts["seconds"] = round(time.monotonic() - started, 1)
    return counts


def listing_counts(ec2, account):
    snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    images = ec2.describe_images(Owners=["self"])["Images"]
    return {"snapshots_listed": len(snapshots),
            "own_snapshots": sum(1 for s in snapshots if s.get("OwnerId") == account),
            "images": len(images)}


def scheduled_event(account):
    with open(os.path.join(ROOT, "events/orphan-snapshot-sweeper.scheduled.json")) as f:
        event = json.load(f)
    event["account"] = account
    return event


def run_sweeper(binary, proxy, account, name, extra_env=None):
    """One cold container: start the binary, invoke it once with a scheduled event, stop it."""
    api = runtime_api.RuntimeApi()
    env = {"AWS_ENDPOINT_URL": proxy.endpoint, "DRY_RUN": "false", "MIN_AGE_HOURS": "0",
           "MAX_DELETIONS": "100000", "RECYCLE_BIN_CHECK": "false", "RUST_LOG": "warn", "LEDGER_TABLE": LEDGER_TABLE,
           # The stack's default: every deletion is tagged for the Recycle Bin first.
           "RECYCLE_BIN_RETENTION_DAYS": "7",
           # The seeded AMIs were deregistered before any sweep or AMI event saw them (amiguard
           # installed afterwards): their orphans are unwitnessed, and adopted, as on the first day.
           "ADOPT_UNWITNESSED_ORPHANS": "true"}
    env.update(extra_env or {})
    with open(os.path.join(OUT, f"sweeper-{name}.log"), "w") as log:
        process = runtime_api.start(binary, api, env, log)
        try:
            started = time.monotonic()
            kind, answer = api.invoke(scheduled_event(account), timeout_s=LAMBDA_TIMEOUT_S)
            wall = time.monotonic() - started
            proxy.invoked_at = started
        finally:
            runtime_api.stop(process)
            api.close()
    if kind != "response":
        raise SystemExit(f"the sweeper answered an error: {answer}")
    return answer, wall


def region_of(report):
    region = report["regions"][0]
    if region.get("aborted"):
        raise SystemExit(f"the sweep aborted: {region['aborted']}")
    return region


def print_calls(calls, title):
    print(f"  {title}:")
    for (service, action), count in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {service or '?':<12} {action:<36} {count:>6}")
    print(f"    {'':<12} {'total':<36} {sum(calls.values()):>6}")


def phase_floor(args, endpoint, proxy):
    account = ACCOUNTS["floor"]
    seeded = seed(endpoint, account, args.images, args.manual)
    print(f"  seeded account {account} in {seeded['seconds']} s: {seeded['snapshots_listed']} snapshots listed "
          f"({seeded['own_snapshots']} own), {seeded['images']} images registered, "
          f"{args.images - seeded['images']} AMIs deregistered")
    proxy.reset(account=account)
    report, wall = run_sweeper(args.binary, proxy, account, "floor")
    region = region_of(report)
    everything = proxy.report()
    calls = {key: n for key, n in everything["calls"].items() if key[0] != "dynamodb"}
    first_ledger = ledger_figures(everything, "first sweep (nothing in the ledger yet)")
    s, i = seeded["snapshots_listed"], seeded["images"]
    # The report's lists are bounded (the first 200 entries): its counts are whole.
    counts = region["counts"]
    deletions = counts["deleted"] + counts["already_gone"] + counts["failed"]
    # Snapshot locks keep a snapshot (a locked one is never sent a DeleteSnapshot) and Fast
    # Snapshot Restores are reported: one page each for an account with none. Each orphan about
    # to be deleted is asked whether it is shared (one DescribeSnapshotAttribute each).
    floor = {"DescribeSnapshots": math.ceil(s / 1000), "DescribeImages": math.ceil(i / 1000),
             "DescribeLockedSnapshots": 1, "DescribeFastSnapshotRestores": 1,
             "DescribeSnapshotAttribute": deletions, "DeleteSnapshot": deletions}
    # The Recycle Bin tag (RECYCLE_BIN_RETENTION_DAYS=7): one CreateTags per 1,000 deletions.
    if deletions:
        floor["CreateTags"] = math.ceil(deletions / 1000)
    print_calls(calls, "calls by action (the sweeper's release binary, through the recording proxy)")
    observed = {a: c for (_, a), c in calls.items()}
    total_floor = sum(floor.values())
    tags = floor.get("CreateTags", 0)
    print(f"  floor: ceil(S/1000) + ceil(I/1000) + 1 lock page + 1 Fast Snapshot Restore page"
          f" + 2 per deletion (its sharing check and its DeleteSnapshot) + ceil(deletions/1000) Recycle Bin taggings"
          f" = ceil({s}/1000) + ceil({i}/1000) + 1 + 1 + 2 x {deletions} + {tags}"
          f" = {floor['DescribeSnapshots']} + {floor['DescribeImages']} + 1 + 1 + {2 * deletions} + {tags} = {total_floor}"
          " (+ 1 ListImagesInRecycleBin page on AWS: RECYCLE_BIN_CHECK=false here, moto lacks it)")
    extra = {a: observed.get(a, 0) - floor.get(a, 0) for a in set(observed) | set(floor)}
    extra = {a: d for a, d in extra.items() if d}
    verdict = "AT THE FLOOR" if not extra else f"OFF THE FLOOR by {extra}"
    print(f"  observed {sum(observed.values())} calls: {verdict}")
    remaining = listing_counts(ec2_client(endpoint, account), account)
    stats = proxy.report()
    deletes = sorted(stats["accepted_at"].get("DeleteSnapshot", []))
    in_flight = stats["max_in_flight"].get("DeleteSnapshot", 0)
    print(f"  deleted {counts['deleted']} orphans (failed {counts['failed']}), "
          f"{remaining['snapshots_listed']} snapshots left; wall time {wall:.2f} s "
          f"(invoke to answer, cold container, moto on this machine)")
    if len(deletes) > 1:
        span = deletes[-1] - deletes[0]
        print(f"    of which deletions {span:.2f} s ({(len(deletes) - 1) / span:.0f}/s, at most {in_flight} in flight; "
              f"moto and the Python proxy set this pace), listing and planning the rest")
    proxy.reset(account=account)
    rerun, rerun_wall = run_sweeper(args.binary, proxy, account, "floor-rerun")
    region_of(rerun)
    rerun_ledger = ledger_figures(proxy.report(), f"unchanged rerun ({rerun_wall:.2f} s)")
    return {"seeded": seeded, "calls": observed, "floor": floor, "deleted": counts["deleted"],
            "failed": counts["failed"], "wall_s": round(wall, 2), "at_floor": not extra,
            "max_in_flight": in_flight, "ledger_first": first_ledger, "ledger_rerun": rerun_ledger}


def ledger_figures(stats, title):
    """Prints the ledger's calls by action and the items written; returns them."""
    calls = {action: n for (service, action), n in stats["calls"].items() if service == "dynamodb"}
    written = sum(stats["items_written"].values())
    shown = ", ".join(f"{action} {n}" for action, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])))
    print(f"  ledger, {title}: {sum(calls.values())} calls ({shown or 'none'}), {written} items written")
    return {"calls": calls, "items_written": written}


def phase_custodian(args, endpoint, proxy, amiguard):
    if not args.custodian or not os.path.exists(args.custodian):
        print("  Cloud Custodian is not installed (bench/run.sh installs c7n into bench/.venv-c7n): skipped")
        return None
    account = ACCOUNTS["custodian"]
    seeded = seed(endpoint, account, args.images, args.manual)
    print(f"  seeded account {account} in {seeded['seconds']} s: the same shape "
          f"({seeded['snapshots_listed']} snapshots listed, {seeded['images']} images)")
    policy = os.path.join(OUT, "c7n-policy.yml")
    # `unused`: no AMI, launch template or launch configuration maps it. The description filter
    # limits it to snapshots made by CreateImage, as the sweeper does (custodian's `unused` alone
    # would also delete the manual snapshots).
    with open(policy, "w") as f:
        f.write("""policies:
  - name: bench-orphan-ami-snapshots
    resource: ebs-snapshot
    filters:
      - type: unused
        value: true
      - type: value
        key: Description
        op: regex
        value: "^Created by CreateImage\\\\(i-[0-9a-f]+\\\\) for ami-[0-9a-f]+.*$"
    actions:
      - delete
""")
    proxy.reset(account=account)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    env.pop("AWS_PROFILE", None)
    out_dir = os.path.join(OUT, "c7n")
    started = time.monotonic()
    with open(os.path.join(OUT, "custodian.log"), "w") as log:
        result = subprocess.run([args.custodian, "run", "--cache-period", "0", "-s", out_dir, "-r", "us-east-1",
                                 policy], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=1800)
    wall = time.monotonic() - started
    if result.returncode != 0:
        print(f"  custodian exited with {result.returncode}; see {os.path.join(OUT, 'custodian.log')}")
        return None
    calls = proxy.report()["calls"]
    print_calls(calls, "calls by action (custodian run, through the recording proxy)")
    remaining = listing_counts(ec2_client(endpoint, account), account)
    deleted = seeded["snapshots_listed"] - remaining["snapshots_listed"]
    observed = {a: c for (_, a), c in calls.items()}
    total, ours = sum(observed.values()), sum(amiguard["calls"].values())
    other = total - observed.get("DeleteSnapshot", 0)
    ours_other = ours - amiguard["calls"].get("DeleteSnapshot", 0)
    print(f"  custodian deleted {deleted} snapshots in {wall:.2f} s (process start to exit); amiguard deleted "
          f"{amiguard['deleted']} in {amiguard['wall_s']:.2f} s")
    print(f"  calls: custodian {total} / amiguard {ours} = {total / ours:.2f}x; calls besides DeleteSnapshot: "
          f"custodian {other} / amiguard {ours_other} = {other / max(ours_other, 1):.2f}x")
    return {"calls": observed, "deleted": deleted, "wall_s": round(wall, 2), "ratio_total": round(total / ours, 2),
            "ratio_non_delete": round(other / max(ours_other, 1), 2)}


def phase_throughput(args, endpoint, proxy):
    account = ACCOUNTS["throughput"]
    seeded = seed(endpoint, account, args.throughput_images, args.throughput_images // 2)
    print(f"  seeded account {account} in {seeded['seconds']} s: {seeded['snapshots_listed']} snapshots listed, "
          f"{args.throughput_images - seeded['images']} of {args.throughput_images} AMIs deregistered")
    proxy.reset(account=account, throttle={"DeleteSnapshot": (DELETE_BURST, DELETE_RATE)})
    report, wall = run_sweeper(args.binary, proxy, account, "throughput")
    region = region_of(report)
    stats = proxy.report()
    accepted = sorted(stats["accepted_at"].get("DeleteSnapshot", []))
    throttled = stats["throttled"].get("DeleteSnapshot", 0)
    deleted, failed = region["counts"]["deleted"], region["failed"]
    if not accepted:
        raise SystemExit("no DeleteSnapshot reached moto")
    start, end = accepted[0], accepted[-1]
    overall = (len(accepted) - 1) / (end - start) if end > start else float("inf")
    after_burst = accepted[DELETE_BURST:] if len(accepted) > DELETE_BURST + 1 else []
    steady = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0]) if len(after_burst) > 1 else None
    print(f"  DeleteSnapshot throttled at {DELETE_BURST} burst then {DELETE_RATE:g}/s (token bucket in the proxy; "
          f"answer: 503 RequestLimitExceeded)")
    print(f"  deleted {deleted} of {region['planned_deletions']} planned, failed {region['counts']['failed']}"
          + (f" ({sorted({f['code'] for f in failed})})" if failed else "")
          + f"; {throttled} throttled answers; at most {stats['max_in_flight'].get('DeleteSnapshot', 0)}"
          " DeleteSnapshot in flight at once")
    print(f"  pace: {overall:.2f} deletions/s from first to last"
          + (f", {steady:.2f}/s after the burst" if steady else "") + f"; whole invocation {wall:.1f} s")
    print("  per 10 s window from the first deletion: deletions accepted/throttled answers")
    windows, throttled_windows = {}, {}
    for t in accepted:
        windows[int((t - start) // 10)] = windows.get(int((t - start) // 10), 0) + 1
    for t in stats["throttled_at"].get("DeleteSnapshot", []):
        throttled_windows[int((t - start) // 10)] = throttled_windows.get(int((t - start) // 10), 0) + 1
    last = max(list(windows) + list(throttled_windows))
    cells = [f"{windows.get(w, 0)}/{throttled_windows.get(w, 0)}" for w in range(last + 1)]
    for row in range(0, len(cells), 12):
        print("    " + " ".join(f"{c:>7}" for c in cells[row:row + 12]))
    rate = steady or overall
    listing = max(0.0, wall - (end - start))
    usable = LAMBDA_TIMEOUT_S - DELETION_MARGIN_S - listing
    projected = DELETE_BURST + rate * usable
    ceiling = DELETE_BURST + DELETE_RATE * usable
    print(f"  projection for one 15-minute run: {LAMBDA_TIMEOUT_S} s - {DELETION_MARGIN_S} s deletion margin - "
          f"{listing:.0f} s listing and planning = {usable:.0f} s of deletions:")
    print(f"    at the measured {rate:.2f}/s: {DELETE_BURST} + {rate:.2f} x {usable:.0f} = {projected:,.0f} deletions "
          f"({'>' if projected > 4000 else '<='} 4,000)")
    needed = (4000 - DELETE_BURST) / usable
    print(f"    at AWS's 5/s exactly: {DELETE_BURST} + 5 x {usable:.0f} = {ceiling:,.0f}; {DELETE_BURST} + 900 s x 5/s = "
          f"4,600 is the physical limit, and > 4,000 needs a pace of at least {needed:.2f}/s ({needed / DELETE_RATE:.0%} of 5/s)")
    return {"seeded": seeded, "deleted": deleted, "failed": region["counts"]["failed"], "throttled": throttled,
            "max_in_flight": stats["max_in_flight"].get("DeleteSnapshot", 0), "rate_overall": round(overall, 2),
            "rate_after_burst": round(steady, 2) if steady else None, "wall_s": round(wall, 1),
            "projected_15min": round(projected), "windows_10s": cells}


def phase_regions(args, endpoint, proxy, single):
    """The same throttle in each of four regions (a bucket of its own per region, as EC2 has):
    regions side by side, each region's pace and the invocation's, against the 1-region phase."""
    account = ACCOUNTS["regions"]
    per_region = args.region_images
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(REGIONS)) as pool:
        seeded = list(pool.map(lambda r: seed(endpoint, account, per_region, 0, r, with_ledger=False), REGIONS))
    create_ledger(endpoint, account)
    print(f"  seeded account {account} in {time.monotonic() - started:.1f} s: in each of {', '.join(REGIONS)}, "
          f"{per_region // 2} of {per_region} AMIs deregistered ({sum(s['snapshots_listed'] for s in seeded)} snapshots)")
    proxy.reset(account=account, throttle={"DeleteSnapshot": (DELETE_BURST, DELETE_RATE)})
    report, wall = run_sweeper(args.binary, proxy, account, "regions", {"REGIONS": ",".join(REGIONS)})
    stats = proxy.report()
    invoked = proxy.invoked_at
    rows, projected_total = [], 0
    print(f"  one invocation, REGIONS={','.join(REGIONS)}, DeleteSnapshot throttled per region at {DELETE_BURST} "
          f"burst then {DELETE_RATE:g}/s; whole invocation {wall:.1f} s")
    for region_report in report["regions"]:
        name = region_report["region"]
        if region_report.get("aborted"):
            raise SystemExit(f"{name} aborted: {region_report['aborted']}")
        accepted = sorted(stats["accepted_in"].get((name, "DeleteSnapshot"), []))
        if len(accepted) <= DELETE_BURST + 1:
            raise SystemExit(f"{name}: too few deletions ({len(accepted)}) to measure a pace past the burst")
        after = accepted[DELETE_BURST:]
        pace = (len(after) - 1) / (after[-1] - after[0])
        first, last = accepted[0] - invoked, accepted[-1] - invoked
        usable = LAMBDA_TIMEOUT_S - DELETION_MARGIN_S - first
        projected = min(DELETE_BURST + pace * usable, DELETE_BURST + DELETE_RATE * LAMBDA_TIMEOUT_S)
        projected_total += projected
        rows.append({"region": name, "deleted": region_report["counts"]["deleted"],
                     "failed": region_report["counts"]["failed"], "first_s": round(first, 1), "last_s": round(last, 1),
                     "pace_after_burst": round(pace, 2), "projected_15min": round(projected)})
        print(f"    {name:<15} deleted {region_report['counts']['deleted']:>4} (failed {region_report['counts']['failed']}),"
              f" deleting from {first:5.1f} s to {last:5.1f} s, {pace:.2f}/s after the burst;"
              f" projected {projected:,.0f} in a 15-minute run")
    spans = [(r["first_s"], r["last_s"]) for r in rows]
    overlap = min(last for _, last in spans) - max(first for first, _ in spans)
    print(f"  the four regions delete side by side: {overlap:.1f} s during which all four were deleting")
    one = single["projected_15min"] if single else None
    print(f"  deletions per 15-minute run: 1 region {one if one is not None else '(throughput phase not run)'}"
          f" (phase 2), 4 regions {projected_total:,.0f}"
          + (f" ({projected_total / one:.2f}x)" if one else "")
          + f"; physical limit {DELETE_BURST + DELETE_RATE * LAMBDA_TIMEOUT_S:,.0f} per region per run")
    return {"regions": rows, "wall_s": round(wall, 1), "projected_15min_4_regions": round(projected_total),
            "projected_15min_1_region": one, "all_four_deleting_s": round(overlap, 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True, help="the sweeper's release binary")
    parser.add_argument("--custodian", help="the custodian executable (skipped when missing)")
    parser.add_argument("--images", type=int, default=3000, help="AMIs made per account (half deregistered)")
    parser.add_argument("--manual", type=int, default=2000, help="manual snapshots per account")
    parser.add_argument("--throughput-images", type=int, default=2000,
                        help="AMIs made for the throughput phase (half deregistered: the deletions)")
    parser.add_argument("--region-images", type=int, default=800,
                        help="AMIs made in each of the regions phase's four regions (half deregistered)")
    parser.add_argument("--phases", default="floor,custodian,throughput,regions")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    phases = args.phases.split(",")
    moto, endpoint = start_moto()
    proxy = recording_proxy.Proxy(endpoint)
    results = {}
    try:
        if "floor" in phases or "custodian" in phases:
            print("== 1. API floor: one sweep of ~5,000 snapshots ==")
            results["floor"] = phase_floor(args, endpoint, proxy)
        if "custodian" in phases:
            print("== 1b. Cloud Custodian on the same data ==")
            results["custodian"] = phase_custodian(args, endpoint, proxy, results["floor"])
        if "throughput" in phases:
            print("== 2. deletion throughput under throttling ==")
            results["throughput"] = phase_throughput(args, endpoint, proxy)
        if "regions" in phases:
            print("== 2b. four regions side by side under the same throttle ==")
            results["regions"] = phase_regions(args, endpoint, proxy, results.get("throughput"))
    finally:
        proxy.stop()
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()
    with open(os.path.join(OUT, "sweep.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
