"""What the demo scripts share: boto3 clients on the local moto, and invoking a function through
`cargo lambda invoke` against the `cargo lambda watch` that demo/run.sh started."""

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
