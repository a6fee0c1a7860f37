"""`make org-upload CODE_BUCKET_PREFIX=<p> REGIONS=<a,b>`: each function's zip, built once, into the
bucket `<p>-<region>` of every listed region, under the key build/org-template.yaml reads; and the
template itself beside them (amiguard/org-template/<sha256>.yaml), for create-stack-set's
--template-url.

The keys come from the organisation template `make org-template` has just written (the make target
runs it first), so the two cannot disagree. The zips are cargo lambda's arm64 release build (what
`sam build` deploys for `BuildMethod: rust-cargolambda`), made once for all regions; with
ORG_UPLOAD_ZIPS_DIR set, the zips already in that directory (cargo lambda's layout:
<dir>/<function>/bootstrap.zip) are uploaded and nothing is built: the tests use it.

Nothing is uploaded unless every bucket exists in its own region (Lambda reads code only from a
bucket of the function's region). An object already at a key is never replaced: the key names the
sources it was built from, stacks may be running it, and a rebuild of the same sources is the
same code. AWS_ENDPOINT_URL is honoured (the tests run this against moto's S3).
"""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "build" / "org-template.yaml"
LAMBDA_DIR = ROOT / "build" / "lambda"
# The organisation template's own pattern for the parameter (a bucket name prefix).
PREFIX_PATTERN = r"^(?!xn--|sthree-|amzn-s3-demo-)[a-z0-9][a-z0-9-]{1,45}[a-z0-9]$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]$"


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def settings():
    prefix = os.environ.get("CODE_BUCKET_PREFIX", "").strip()
    regions = [r.strip() for r in os.environ.get("REGIONS", "").split(",") if r.strip()]
    if not prefix:
        fail("CODE_BUCKET_PREFIX is not set: make org-upload CODE_BUCKET_PREFIX=<prefix> REGIONS=<region,region...>")
    if not re.fullmatch(PREFIX_PATTERN, prefix):
        fail(f"CODE_BUCKET_PREFIX={prefix!r}: 3-47 lowercase letters, digits and hyphens, starting and ending with a letter or digit")
    if not regions:
        fail("REGIONS is not set: make org-upload CODE_BUCKET_PREFIX=<prefix> REGIONS=<region,region...>")
    bad = [r for r in regions if not re.fullmatch(REGION_PATTERN, r)]
    if bad:
        fail(f"REGIONS: not a region name: {', '.join(bad)}")
    return prefix, list(dict.fromkeys(regions))


def template_keys():
    """{function (package): key} of build/org-template.yaml's AWS::Lambda::Function resources."""
    if not TEMPLATE.exists():
        fail(f"{TEMPLATE.relative_to(ROOT)} is missing: run make org-template first")
    template = yaml.safe_load(TEMPLATE.read_text())
    keys = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        key = resource["Properties"]["Code"].get("S3Key")
        if not binary or not isinstance(key, str) or not key.startswith(f"amiguard/{binary}/"):
            fail(f"{TEMPLATE.relative_to(ROOT)}: {logical_id} has no amiguard/<function>/ key: run make org-template again")
        keys[binary] = key
    if not keys:
        fail(f"{TEMPLATE.relative_to(ROOT)} has no function")
    return keys


def s3(region):
    # An emulator's endpoint (an address, no bucket host names): path-style addressing.
    style = "path" if os.environ.get("AWS_ENDPOINT_URL") else "auto"
    return boto3.client("s3", region_name=region, config=botocore.config.Config(s3={"addressing_style": style}))


def error_code(error):
    return error.response.get("Error", {}).get("Code", "")


def caller_account(region):
    try:
        return boto3.client("sts", region_name=region).get_caller_identity()["Account"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        fail(f"no AWS credentials that work (STS GetCallerIdentity: {error})")


def check_buckets(prefix, regions, owner):
    """Every bucket exists, is the caller's account's and is in its region, or nothing is uploaded.
    Bucket names are global: a bucket of that name in another account would serve its owner's code
    to every stack of the region."""
    problems = []
    for region in regions:
        bucket = f"{prefix}-{region}"
        try:
            answer = s3(region).get_bucket_location(Bucket=bucket, ExpectedBucketOwner=owner)
            location = answer.get("LocationConstraint") or "us-east-1"
        except botocore.exceptions.ClientError as error:
            code = error_code(error)
            if code in ("NoSuchBucket", "404"):
                problems.append(f"bucket {bucket} does not exist: create it in {region} (README, Deploy)")
            elif code in ("AccessDenied", "403"):
                problems.append(f"bucket {bucket} is not this account's ({owner}) or not readable: {code}")
            else:
                problems.append(f"bucket {bucket}: {code or error}")
            continue
        except botocore.exceptions.BotoCoreError as error:
            fail(f"cannot reach S3 in {region}: {error}")
        if location != region:
            problems.append(f"bucket {bucket} is in {location}, not {region}: Lambda reads code only from its own region")
    if problems:
        fail("nothing uploaded:\n  " + "\n  ".join(problems))


def zips(functions):
    """{function: zip path}: ORG_UPLOAD_ZIPS_DIR's, or cargo lambda's arm64 release build, once."""
    given = os.environ.get("ORG_UPLOAD_ZIPS_DIR", "").strip()
    directory = Path(given) if given else LAMBDA_DIR
    if not given:
        print("building the functions: cargo lambda build --release --arm64 (cold: ~15 minutes)...")
        command = ["cargo", "lambda", "build", "--release", "--arm64", "--locked", "--output-format", "zip",
                   "--lambda-dir", str(LAMBDA_DIR)]
        for function in functions:
            command += ["--package", function]
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            fail("cargo lambda build failed (it needs the zig linker of .venv's cargo-lambda and the "
                 "aarch64-unknown-linux-gnu target: rustup target add aarch64-unknown-linux-gnu)")
    paths = {f: directory / f / "bootstrap.zip" for f in functions}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        fail(f"no zip at {', '.join(missing)}")
    return paths


def template_key():
    """Where the template goes beside the code: CloudFormation takes a template over 51,200 bytes
    only from S3 (--template-url), and this one is about that size."""
    return f"amiguard/org-template/{hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()}.yaml"


def upload(prefix, regions, keys, paths, owner):
    files = {key: paths[function] for function, key in keys.items()}
    files[template_key()] = TEMPLATE
    for region in regions:
        client = s3(region)
        bucket = f"{prefix}-{region}"
        for key, path in sorted(files.items()):
            body = path.read_bytes()
            sha256 = hashlib.sha256(body).hexdigest()
            try:
                # Never over an existing object: the put fails if the key is taken.
                client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", ExpectedBucketOwner=owner,
                                  ContentType="application/zip" if key.endswith(".zip") else "text/yaml",
                                  Metadata={"sha256": sha256})
                print(f"put    s3://{bucket}/{key}")
            except botocore.exceptions.ClientError as error:
                if error_code(error) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    fail(f"s3://{bucket}/{key}: {error_code(error) or error}")
                existing = client.head_object(Bucket=bucket, Key=key, ExpectedBucketOwner=owner).get("Metadata", {}).get("sha256")
                same = "the same zip" if existing == sha256 else "a build of the same sources"
                print(f"kept   s3://{bucket}/{key} (already there: {same})")


def main():
    prefix, regions = settings()
    keys = template_keys()
    owner = caller_account(regions[0])
    check_buckets(prefix, regions, owner)
    paths = zips(sorted(keys))
    upload(prefix, regions, keys, paths, owner)
    print(f"build/org-template.yaml's code is in {', '.join(f'{prefix}-{r}' for r in regions)}: "
          f"deploy it with CodeBucketPrefix={prefix} to these regions (README, Deploy), from")
    for region in regions:
        print(f"  --template-url https://{prefix}-{region}.s3.{region}.amazonaws.com/{template_key()}")


if __name__ == "__main__":
    main()
