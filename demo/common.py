"""What the demo scripts and `make try` share: boto3 clients on the local moto, invoking a function
through `cargo lambda invoke` against the `cargo lambda watch` that demo/lambda.sh started, and the
readable summaries of the functions' reports."""

import json
import os
import subprocess
import tempfile

import boto3

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def client(service, account=None):
    """A boto3 client on the emulator; `account` other than the default is sent as moto's header."""
    made = boto3.client(service, region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    if account:
        def add_header(request, **_):
            request.headers["x-moto-account-id"] = account
        made.meta.events.register("before-sign", add_header)
    return made


def invoke(function, event):
    """Runs `function` on `event` (a dict) through cargo lambda; returns (report or None, error text)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(event, f)
        path = f.name
    try:
        done = subprocess.run(
            ["cargo", "lambda", "invoke", function, "--data-file", path,
             "--invoke-address", "127.0.0.1", "--invoke-port", os.environ["AMIGUARD_LAMBDA_PORT"], "--output-format", "json"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
    finally:
        os.unlink(path)
    if done.returncode != 0:
        return None, (done.stderr or done.stdout).strip()
    return json.loads(done.stdout), ""


def sample_event(name):
    with open(os.path.join(ROOT, "events", name)) as f:
        return json.load(f)


def heading(text):
    print()
    print(text)
    print("=" * len(text))


def sweep_summary(title, report):
    """The sweeper's report, readable: per region what was scanned, kept, deleted (or, in a dry
    run, would be deleted) and what waits out its grace period."""
    dry_run = report["dry_run"]
    print(f"\n{title} (dry_run={str(dry_run).lower()}):")
    for region in report["regions"]:
        counts = region["counts"]
        print(f"  {region['region']}: {region['snapshots_scanned']} snapshots scanned, "
              f"{counts['orphans']} orphans, {region['planned_deletions']} planned, "
              f"{counts['deleted']} deleted, {counts['failed']} failed, "
              f"{region['ledger_writes']} ledger writes")
        if region["aborted"]:
            print(f"    aborted: {region['aborted']}")
        kept = ", ".join(f"{reason} {count}" for reason, count in region["kept"].items())
        print(f"    kept: {kept or 'nothing'}")
        manual = region["unreferenced_manual"]
        print(f"    manual snapshots (never deleted): {manual['count']}, {manual['gib']} GiB")
        print(f"    reclaimable: {region['reclaimable_gib']} GiB, "
              f"up to ${region['estimated_monthly_savings_usd']:.2f}/month (snapshots are incremental)")
        if dry_run and not region["aborted"]:
            if region["planned_deletions"] < counts["orphans"]:
                print(f"    {region['planned_deletions']} of these orphans would be deleted this run "
                      "(MAX_DELETIONS or the circuit breaker hold the others)")
            for orphan in region["orphans"]:
                print(f"    would delete {orphan['snapshot_id']}  ({orphan['size_gib']} GiB, "
                      f"left by {orphan['source_image_id']})")
        for orphan in region.get("unwitnessed", []):
            print(f"    unwitnessed  {orphan['snapshot_id']}  ({orphan['size_gib']} GiB, its description names "
                  f"{orphan['source_image_id']}): kept, amiguard never saw that AMI map it; "
                  "ADOPT_UNWITNESSED_ORPHANS=true deletes it once you have read this list")
        for waiting in region["waiting"]:
            print(f"    waiting      {waiting['snapshot_id']}  ({waiting['size_gib']} GiB, left by "
                  f"{waiting['source_image_id']}): deletable after {waiting['deletable_after']}")
        for snapshot_id in region["deleted"]:
            print(f"    deleted {snapshot_id}")
        for failed in region["failed"]:
            print(f"    failed  {failed['snapshot_id']}: {failed['code']} {failed['message']}")
    for warning in report["warnings"]:
        print(f"  note: {warning}")


def audit_summary(audit):
    """untrusted-ami-alert's scheduled audit, readable: the untrusted instances, why, and (in a
    dry run) what a real run would do about each."""
    untrusted = audit["untrusted"]
    line = (f"scheduled audit (dry_run={str(audit['dry_run']).lower()}): {audit['audited']} instances audited, "
            f"{len(untrusted)} untrusted ({', '.join(u['instance_id'] for u in untrusted) or 'none'}), "
            f"{audit['alerts_sent']} new alert(s)")
    if audit.get("alerts_would_send") is not None:
        line += f", {audit['alerts_would_send']} alert(s) a real run would send"
    print(line)
    for finding in untrusted:
        owner = f"owner {finding['owner_id']}" if finding["owner_id"] else "owner unknown"
        print(f"  untrusted {finding['instance_id']}  (image {finding['image_id'] or 'unknown'}, {owner})")
        for reason in finding["reasons"]:
            print(f"    - {reason}")
        if finding.get("would"):
            print(f"    a real run would: {', '.join(finding['would'])}")
    for warning in audit["warnings"]:
        print(f"  note: {warning}")
