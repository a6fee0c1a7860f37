"""`make org-template`: template.yaml as plain CloudFormation, for a service-managed StackSet.

StackSets cannot create or update a service-managed stack set from a template that uses a macro,
and `Transform: AWS::Serverless-2016-10-31` is one; and Lambda reads a function's code only from a
bucket in the function's own region. So this translates the SAM template offline, with the SAM
translator of .venv-sam (nothing is called: no credentials, no IAM lookup), and points each
function's code at `<CodeBucketPrefix>-<region>`, the bucket of the region the stack instance is
in, under a key that names the sources it was built from:

    amiguard/<function>/<sha256 of the function's build inputs>.zip

The build inputs are the workspace's Cargo.toml and Cargo.lock, shared/ and functions/<function>/
(every file but build output), so this needs no build, `make org-upload` puts each zip under the
same key (it reads the keys from the template this writes), and a change of code is a new key:
the stack set's next update replaces that function's code, and the stacks not yet updated keep
reading the old object, which is never overwritten.

    org_template.py [--sam] [--out FILE]

`--sam` writes the SAM translator's own translation instead (placeholder code locations, no
rewrite): what the tests compare the organisation template with.
"""

import argparse
import copy
import hashlib
import json
import os
import sys
from pathlib import Path

import boto3
import yaml
from samcli.yamlhelper import yaml_parse
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

ROOT = Path(__file__).resolve().parent.parent
# The translator needs a region (it names the partition of generated ARNs). A fixed one, so the
# output is the same on every machine; a second translation in another region of the partition
# must give the same template (nothing of the region baked in).
TRANSLATION_REGION = "us-east-1"
CHECK_REGION = "eu-west-1"
PLACEHOLDER_BUCKET = "amiguard-placeholder"
# AWS managed policies template.yaml names by name, and their ARNs, for the translator: offline,
# nothing asks IAM. The template names none today (it writes the one it uses as an ARN).
MANAGED_POLICIES: dict = {}
# Bucket names are 3-63 characters: the prefix leaves room for `-<region>` (up to 15 characters).
PREFIX_PATTERN = "^(?!xn--|sthree-|amzn-s3-demo-)[a-z0-9][a-z0-9-]{1,45}[a-z0-9]$"
BUILD_INPUTS = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "rust-toolchain", ".cargo", "shared"]


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


class OfflineManagedPolicies:
    """The translator asks for this map only for a policy name it does not know itself and that is
    not an ARN: refuse clearly rather than ask IAM or deploy a name as if it were an ARN."""

    def __init__(self, names):
        self.names = names

    def load(self):
        unknown = [name for name in self.names if name not in MANAGED_POLICIES]
        if unknown:
            fail(
                f"template.yaml names managed policies {unknown} that the offline translation does not "
                "know: write each as an ARN (!Sub arn:${AWS::Partition}:iam::aws:policy/<name>) or add it "
                "to MANAGED_POLICIES in deploy/org_template.py"
            )
        return MANAGED_POLICIES


def files_under(path):
    if path.is_file():
        yield path
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name not in ("target", "__pycache__"):
                yield from files_under(child)


def sources_hash(binary):
    """sha256 over the relative path and content of every build input of `binary`."""
    digest = hashlib.sha256()
    inputs = [ROOT / name for name in BUILD_INPUTS] + [ROOT / "functions" / binary]
    for path in (f for i in inputs for f in files_under(i)):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def code_key(binary):
    if not (ROOT / "functions" / binary / "Cargo.toml").exists():
        fail(f"template.yaml builds a function from `{binary}`, which is no package under functions/")
    return f"amiguard/{binary}/{sources_hash(binary)}.zip"


def sam_functions(template):
    """{logical id: binary} of the template's AWS::Serverless::Function resources."""
    found = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if not binary:
            fail(f"{logical_id}: no Metadata.BuildProperties.Binary: which package is its code?")
        found[logical_id] = binary
    return found


def policy_names(template):
    """The plain names (not ARNs, not intrinsics) among the functions' Policies."""
    names = []
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            policies = resource.get("Properties", {}).get("Policies", [])
            for policy in policies if isinstance(policies, list) else [policies]:
                if isinstance(policy, str) and not policy.startswith("arn:"):
                    names.append(policy)
    return names


def translate(template, region=TRANSLATION_REGION):
    """The SAM translator's translation of `template`, offline."""
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())  # recorded, sent nowhere
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=region), metrics=metrics)
    policies = OfflineManagedPolicies(policy_names(template))
    try:
        translated = translator.translate(copy.deepcopy(template), parameter_values={}, get_managed_policy_map=policies.load)
    except Exception as error:  # the translator's own errors name what is wrong in the template
        fail(f"the SAM translator refused template.yaml: {error}")
    metrics.publish()
    return json.loads(json.dumps(translated))  # plain dicts, in the translator's order


def sam_translation(template, keys):
    """The translation with each function's code at a placeholder location under its key."""
    placed = copy.deepcopy(template)
    for logical_id, key in keys.items():
        placed["Resources"][logical_id]["Properties"]["CodeUri"] = f"s3://{PLACEHOLDER_BUCKET}/{key}"
    translated = translate(placed)
    if translate(placed, CHECK_REGION) != translated:
        fail(f"the translation in {CHECK_REGION} differs from the one in {TRANSLATION_REGION}: a region is baked in")
    return translated


def organisation_template(translated, keys):
    """`translated` with every function reading its code from its own region's bucket."""
    org = copy.deepcopy(translated)
    parameters = org.setdefault("Parameters", {})
    if "CodeBucketPrefix" in parameters:
        fail("template.yaml already has a CodeBucketPrefix parameter: the organisation template adds it")
    parameters["CodeBucketPrefix"] = {
        "Type": "String",
        "AllowedPattern": PREFIX_PATTERN,
        "ConstraintDescription": "3-47 lowercase letters, digits and hyphens, starting and ending with a letter or digit",
        "Description": (
            "The functions' code is read from the bucket <CodeBucketPrefix>-<region> of the stack's own "
            "region (make org-upload puts it there)."
        ),
    }
    lambdas = {i: r for i, r in org["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    if sorted(lambdas) != sorted(keys):
        fail(f"the translation's functions {sorted(lambdas)} are not template.yaml's {sorted(keys)}")
    for logical_id, resource in lambdas.items():
        resource["Properties"]["Code"] = {
            "S3Bucket": {"Fn::Sub": "${CodeBucketPrefix}-${AWS::Region}"},
            "S3Key": keys[logical_id],
        }
    return org


class Dumper(yaml.SafeDumper):
    pass


def _string(dumper, text):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


Dumper.add_representer(str, _string)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", action="store_true", help="write the SAM translator's own translation")
    parser.add_argument("--out", default=str(ROOT / "build" / "org-template.yaml"))
    args = parser.parse_args()

    template = yaml_parse((ROOT / "template.yaml").read_text())
    keys = {logical_id: code_key(binary) for logical_id, binary in sam_functions(template).items()}
    if not keys:
        fail("template.yaml has no AWS::Serverless::Function")
    translated = sam_translation(template, keys)
    output = translated if args.sam else organisation_template(translated, keys)
    if not args.sam:
        if PLACEHOLDER_BUCKET in json.dumps(output):
            fail(f"the organisation template still names the placeholder bucket {PLACEHOLDER_BUCKET!r}")
    heading = (
        "# Generated by `make org-template` from template.yaml (deploy/org_template.py): do not edit.\n"
        if not args.sam
        else "# The SAM translator's own translation of template.yaml (deploy/org_template.py --sam).\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # two runs at once each write their own
    tmp.write_text(heading + yaml.dump(output, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True))
    os.replace(tmp, out)
    if not args.sam:
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}; its functions read their code from")
        for logical_id, key in sorted(keys.items()):
            print(f"  <CodeBucketPrefix>-<region>/{key}  ({logical_id})")


if __name__ == "__main__":
    main()
