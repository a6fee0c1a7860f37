"""`make try` (demo/try.sh): the sweeper and the alert function's audit, as dry runs, against the
caller's own account.

`preflight` finds the caller's credentials and region (the usual boto3 chain: environment,
profile, SSO, ...), asks STS who they are and prints them as shell `export` lines for the
functions, which then need no credential provider of their own (the Rust SDK here has no SSO).
It refuses, with one line on stderr and exit status 2, without credentials, without a region, or
when STS refuses the credentials. `run` builds the two scheduled events with the caller's account
and region, invokes both functions (started by demo/try.sh with DRY_RUN=true) and prints the
readable summaries `make demo` prints. With `TRY_ROLE_NAME`, `preflight` also lists the
organisation's accounts and `org` runs the same dry runs in each of them (demo/try_org.py).

`AWS_ENDPOINT_URL` is honoured by boto3 and by the functions alike: the tests run this against
moto."""

import datetime
import os
import shlex
import sys
import uuid

import boto3
import botocore.exceptions

import try_org
from common import audit_summary, heading, invoke, sample_event, sweep_summary


def refuse(message):
    print(f"make try: {message}", file=sys.stderr)
    sys.exit(2)


def preflight():
    session = boto3.Session()
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as err:
        refuse(f"your AWS credentials could not be loaded ({err}): nothing was run")
    if credentials is None:
        refuse("no AWS credentials found (environment, ~/.aws, AWS_PROFILE): make try runs with "
               "your own; configure them (e.g. `aws configure` or AWS_PROFILE) and run it again")
    region = os.environ.get("AWS_REGION") or session.region_name
    if not region:
        refuse("no AWS region: set AWS_REGION (or a region in your profile) to the region to dry-run")
    try:
        frozen = credentials.get_frozen_credentials()
        identity = session.client("sts", region_name=region).get_caller_identity()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        refuse(f"STS GetCallerIdentity failed with your credentials ({err}): nothing was run")
    partition = identity["Arn"].split(":")[1]
    exports = {
        "AMIGUARD_TRY_ACCOUNT": identity["Account"],
        "AMIGUARD_TRY_CALLER": identity["Arn"],
        "AMIGUARD_TRY_PARTITION": partition,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": frozen.access_key,
        "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
    }
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"export AWS_SESSION_TOKEN={shlex.quote(frozen.token)}" if frozen.token else "unset AWS_SESSION_TOKEN")
    if os.environ.get("TRY_ROLE_NAME"):
        try_org.preflight(session, region, identity)
    else:
        print("unset AMIGUARD_TRY_ROLE")


def scheduled(name, account, region, partition, rule):
    """The sample scheduled event `name`, as EventBridge would deliver it in the caller's account."""
    event = sample_event(name)
    event["id"] = str(uuid.uuid4())
    event["time"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["account"] = account
    event["region"] = region
    event["resources"] = [f"arn:{partition}:events:{region}:{account}:rule/{rule}"]
    return event


def run():
    account, region = os.environ["AMIGUARD_TRY_ACCOUNT"], os.environ["AWS_REGION"]
    partition = os.environ["AMIGUARD_TRY_PARTITION"]
    failed = False

    heading(f"orphan-snapshot-sweeper: a dry-run sweep of account {account}")
    sweep = scheduled("orphan-snapshot-sweeper.scheduled.json", account, region, partition,
                      "amiguard-orphan-snapshot-sweeper")
    sweep["detail"] = {"dry_run": True}  # a detail can only make a run drier
    report, error = invoke("orphan-snapshot-sweeper", sweep)
    if error:
        print(f"orphan-snapshot-sweeper failed: {error}")
        failed = True
    else:
        sweep_summary("Dry run", report)

    heading(f"untrusted-ami-alert: the audit of every instance in {region}")
    audit_event = scheduled("untrusted-ami-alert.scheduled-audit.json", account, region, partition,
                            "amiguard-untrusted-ami-audit")
    audit, error = invoke("untrusted-ami-alert", audit_event)
    if error:
        print(f"untrusted-ami-alert failed: {error}")
        failed = True
    else:
        audit_summary(audit)

    print()
    if failed:
        sys.exit("make try: a function failed (its log is in .demo/); nothing was changed")
    print("make try: dry run finished; nothing was deleted, tagged, stopped or published.")


if __name__ == "__main__":
    {"preflight": preflight, "run": run, "org": lambda: try_org.run(scheduled)}[sys.argv[1]]()
