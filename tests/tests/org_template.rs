//! The organisation deploy (issue 24, part 1): `make org-template` writes template.yaml as plain
//! CloudFormation, the SAM translator's own translation but for each function's code, which is
//! read from `<CodeBucketPrefix>-<region>` under a key naming its sources; `make org-upload` puts
//! each zip under exactly that key in every listed region's bucket (against this binary's moto S3
//! through `AWS_ENDPOINT_URL`). And the organisation's dashboard: the member stack's optional link
//! to a monitoring account's sink, and deploy/monitoring.yaml's dashboard of every amiguard metric
//! summed over the linked accounts.
//!
//! The upload tests hand over small stand-in zips in `ORG_UPLOAD_ZIPS_DIR` (an arm64 release build
//! takes a quarter of an hour): what they prove is where the zips go, not how they are built.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use amiguard_integration_tests::template::{dashboard, emitted_metrics, function_packages, load, render};
use amiguard_integration_tests::{moto, workspace_root};
use serde_json::{json, Value};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn tool(venv: &str, name: &str, target: &str) -> PathBuf {
    let path = workspace_root().join(venv).join("bin").join(name);
    assert!(path.exists(), "{} is missing: run `make {target}` (make test does)", path.display());
    path
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh directory under the system's temporary one.
fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("amiguard-org-{}-{nanos}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(yaml).unwrap()
}

/// deploy/org_template.py of the workspace rooted at `root` (its own copy of the script), with
/// `args`: the template it wrote.
fn generate_in(root: &Path, args: &[&str], name: &str) -> Value {
    let out = scratch(name).join(format!("{name}.yaml"));
    let output = Command::new(tool(".venv-sam", "python", "template-tools"))
        .arg(root.join("deploy/org_template.py"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    load_yaml(&out)
}

/// The organisation template and the SAM translator's own translation of template.yaml.
fn org_and_sam() -> (Value, Value) {
    (generate_in(&workspace_root(), &[], "org"), generate_in(&workspace_root(), &["--sam"], "sam"))
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

/// {logical id: resource} of the template's resources of `kind`.
fn of_type<'a>(template: &'a Value, kind: &str) -> BTreeMap<&'a str, &'a Value> {
    resources(template).iter().filter(|(_, r)| r["Type"] == kind).map(|(id, r)| (id.as_str(), r)).collect()
}

/// Every parameter the template refers to: `Ref`s (`!Ref`) and `${Name}` in `Fn::Sub` (`!Sub`).
fn referenced_parameters(template: &Value) -> BTreeSet<String> {
    fn visit(value: &Value, parameters: &BTreeSet<String>, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("Ref" | "!Ref", Value::String(name)) if parameters.contains(name) => {
                            found.insert(name.clone());
                        }
                        ("Fn::Sub" | "!Sub", _) => {
                            let text = inner.as_str().or_else(|| inner[0].as_str()).unwrap_or_default();
                            for name in parameters {
                                if text.contains(&format!("${{{name}}}")) {
                                    found.insert(name.clone());
                                }
                            }
                            visit(inner, parameters, found);
                        }
                        _ => visit(inner, parameters, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| visit(item, parameters, found)),
            _ => {}
        }
    }
    let parameters: BTreeSet<String> =
        template["Parameters"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    let mut found = BTreeSet::new();
    for section in ["Conditions", "Resources", "Outputs"] {
        visit(&template[section], &parameters, &mut found);
    }
    found
}

#[test]
fn the_organisation_template_is_the_sam_translation_with_each_functions_code_in_its_regions_bucket() {
    let (org, sam) = org_and_sam();
    assert_eq!(load()["Transform"], "AWS::Serverless-2016-10-31", "template.yaml itself is SAM");
    assert!(org.get("Transform").is_none(), "a service-managed StackSet refuses a template with a transform");
    let types = |t: &Value| -> BTreeMap<String, String> {
        resources(t).iter().map(|(id, r)| (id.clone(), r["Type"].as_str().unwrap().to_string())).collect()
    };
    assert_eq!(types(&org), types(&sam), "every resource, by logical id and type");
    assert!(types(&org).values().all(|t| !t.starts_with("AWS::Serverless::")), "nothing left to translate");

    // Resource by resource: the same, policies and roles included, but the functions' Code.
    let functions = of_type(&org, "AWS::Lambda::Function");
    let packages = function_packages();
    assert_eq!(functions.len(), packages.len(), "{functions:?}");
    for (id, resource) in resources(&sam) {
        let mut theirs = resource.clone();
        let mut ours = org["Resources"][id].clone();
        if resource["Type"] == "AWS::Lambda::Function" {
            let (sam_code, org_code) = (theirs["Properties"]["Code"].take(), ours["Properties"]["Code"].take());
            let binary = resource["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
            assert!(packages.iter().any(|p| p == binary), "{id}: {binary}");
            let key = org_code["S3Key"].as_str().unwrap_or_else(|| panic!("{id}: {org_code}"));
            let hash = key.strip_prefix(&format!("amiguard/{binary}/")).and_then(|k| k.strip_suffix(".zip"));
            assert!(
                hash.is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())),
                "{id}: the key names the function and the sha256 of its sources: {key}"
            );
            // No fixed bucket, no fixed region: the stack's own region's bucket.
            assert_eq!(
                org_code,
                json!({"S3Bucket": {"Fn::Sub": "${CodeBucketPrefix}-${AWS::Region}"}, "S3Key": key}),
                "{id}"
            );
            assert_eq!(sam_code["S3Key"], json!(key), "{id}: the same key in both translations");
        }
        assert_eq!(ours, theirs, "{id} differs from the SAM translator's own translation");
    }
    let roles = of_type(&org, "AWS::IAM::Role");
    assert_eq!(roles.len(), functions.len(), "one role per function: {roles:?}");
    assert!(!of_type(&org, "AWS::IAM::Policy").is_empty(), "the protect tags' guards");

    // Parameters, conditions and outputs: SAM's own, plus CodeBucketPrefix only.
    let mut parameters = sam["Parameters"].as_object().unwrap().clone();
    parameters.insert("CodeBucketPrefix".into(), org["Parameters"]["CodeBucketPrefix"].clone());
    assert_eq!(org["Parameters"], Value::Object(parameters));
    assert!(sam["Parameters"].get("CodeBucketPrefix").is_none());
    for section in ["AWSTemplateFormatVersion", "Description", "Conditions", "Outputs"] {
        assert_eq!(org[section], sam[section], "{section}");
    }
    let keys: BTreeSet<&String> = org.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["AWSTemplateFormatVersion", "Conditions", "Description", "Outputs", "Parameters", "Resources"]
            .iter()
            .map(|k| k.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect()
    );
    let whole = org.to_string();
    assert!(!whole.contains("amiguard-placeholder") && !whole.contains("s3://"), "no placeholder left");
}

/// Checked against template.yaml itself, not only against the translator: each of its resources,
/// parameters and outputs is in the organisation template, and every parameter it uses is still
/// used (the translator substitutes no default for one).
#[test]
fn the_organisation_template_keeps_everything_template_yaml_declares() {
    let template = load();
    let (org, _) = org_and_sam();
    for (id, resource) in resources(&template) {
        let kind = resource["Type"].as_str().unwrap();
        let expected = if kind == "AWS::Serverless::Function" { "AWS::Lambda::Function" } else { kind };
        assert_eq!(org["Resources"][id]["Type"], expected, "{id}");
        if kind == "AWS::Serverless::Function" {
            let events = resource["Properties"]["Events"].as_object().unwrap();
            for event in events.keys() {
                assert!(
                    resources(&org).contains_key(&format!("{id}{event}")),
                    "{id}: its event {event} became a rule of its own"
                );
            }
        }
    }
    for section in ["Parameters", "Outputs", "Conditions"] {
        for (name, value) in template[section].as_object().unwrap() {
            assert!(org[section].get(name).is_some(), "{section} {name} is kept");
            if section == "Parameters" {
                assert_eq!(org[section][name]["Default"], value["Default"], "{name}'s default");
            }
        }
    }
    let used = referenced_parameters(&template);
    let still_used = referenced_parameters(&org);
    assert!(used.len() > 20, "{used:?}");
    let lost: Vec<&String> = used.difference(&still_used).collect();
    assert!(lost.is_empty(), "parameters no longer referenced (a default baked in?): {lost:?}");
    assert!(still_used.contains("CodeBucketPrefix"));
}

#[test]
fn the_organisation_and_monitoring_templates_pass_cfn_lint() {
    let out = scratch("lint").join("org-template.yaml");
    let output = Command::new(tool(".venv-sam", "python", "template-tools"))
        .args(["deploy/org_template.py", "--out"])
        .arg(&out)
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    for path in [out, workspace_root().join("deploy/monitoring.yaml")] {
        let output = Command::new(tool(".venv", "cfn-lint", "tools")).arg(&path).output().unwrap();
        assert!(output.status.success(), "cfn-lint {}:\n{}", path.display(), text(&output));
    }
}

/// The same tree gives the same template; a change of one function's sources changes its key
/// only, a change of the shared crate every key: a new build never lands under a key a running
/// stack reads, and an update of the stack set replaces exactly the code that changed.
#[test]
fn a_functions_key_changes_with_its_sources_and_only_then() {
    let root = scratch("tree");
    let source = workspace_root();
    for name in ["Cargo.toml", "Cargo.lock", "template.yaml", "deploy/org_template.py"] {
        std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
        std::fs::copy(source.join(name), root.join(name)).unwrap();
    }
    for dir in ["shared", "functions"] {
        copy_tree(&source.join(dir), &root.join(dir));
    }
    let keys = |template: &Value| -> BTreeMap<String, String> {
        of_type(template, "AWS::Lambda::Function")
            .iter()
            .map(|(id, r)| (id.to_string(), r["Properties"]["Code"]["S3Key"].as_str().unwrap().to_string()))
            .collect()
    };
    let first = generate_in(&root, &[], "first");
    assert_eq!(keys(&first), keys(&generate_in(&source, &[], "workspace")), "a copy of the tree: the same keys");
    assert_eq!(first, generate_in(&root, &[], "again"), "the same tree: the same template");

    let main = root.join("functions/snapshot-on-stop/src/main.rs");
    let mut code = std::fs::read_to_string(&main).unwrap();
    code.push_str("\n// a change\n");
    std::fs::write(&main, code).unwrap();
    let changed = keys(&generate_in(&root, &[], "changed"));
    for (id, key) in keys(&first) {
        assert_eq!(changed[&id] != key, id == "SnapshotOnStopFunction", "{id}: {key} -> {}", changed[&id]);
    }

    std::fs::write(root.join("shared/src/new_file.rs"), "// new\n").unwrap();
    let shared = keys(&generate_in(&root, &[], "shared"));
    for (id, key) in &changed {
        assert_ne!(&shared[id], key, "{id}: shared/ is built into every function");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// The translation asks IAM for nothing: a managed policy named by a name neither the translator's
/// own map nor deploy/org_template.py's knows stops it, saying what to write instead.
#[test]
fn an_unknown_managed_policy_name_stops_the_offline_translation() {
    let root = scratch("policy");
    let source = workspace_root();
    for name in ["Cargo.toml", "Cargo.lock", "deploy/org_template.py"] {
        std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
        std::fs::copy(source.join(name), root.join(name)).unwrap();
    }
    for dir in ["shared", "functions"] {
        copy_tree(&source.join(dir), &root.join(dir));
    }
    let template = std::fs::read_to_string(source.join("template.yaml")).unwrap();
    let needle = "      Policies:\n";
    assert!(template.contains(needle));
    let edited = template.replacen(needle, &format!("{needle}        - NoSuchManagedPolicyAnywhere\n"), 1);
    std::fs::write(root.join("template.yaml"), edited).unwrap();
    let output = Command::new(tool(".venv-sam", "python", "template-tools"))
        .arg(root.join("deploy/org_template.py"))
        .arg("--out")
        .arg(root.join("out.yaml"))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NoSuchManagedPolicyAnywhere") && stderr.contains("write each as an ARN"),
        "{}",
        text(&output)
    );
    assert!(!root.join("out.yaml").exists(), "nothing written");
    std::fs::remove_dir_all(&root).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" {
                copy_tree(&path, &to.join(&name));
            }
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// CodeBucketPrefix's pattern (CloudFormation's Java regex; Python's `re` reads these the same)
/// admits only prefixes that make a valid bucket name with `-<region>`, and org_upload.py checks
/// CODE_BUCKET_PREFIX with the very same pattern.
#[test]
fn the_code_bucket_prefix_admits_only_bucket_name_prefixes() {
    let (org, _) = org_and_sam();
    let pattern = org["Parameters"]["CodeBucketPrefix"]["AllowedPattern"].as_str().unwrap();
    let upload = std::fs::read_to_string(workspace_root().join("deploy/org_upload.py")).unwrap();
    assert!(upload.contains(&format!("PREFIX_PATTERN = r\"{pattern}\"")), "org_upload.py checks {pattern}");
    let longest = "a".repeat(47);
    let accepted = ["acme-code", "a1b", "amiguard-code-123456789012", longest.as_str()];
    let too_long = "a".repeat(48);
    let refused = ["", "ab", "Acme", "acme.code", "acme_code", "-acme", "acme-", "xn--acme", too_long.as_str()];
    let values: Vec<&str> = accepted.iter().chain(refused.iter()).copied().collect();
    let script = "import json, re, sys\npattern, values = json.loads(sys.argv[1]), json.loads(sys.argv[2])\nprint(json.dumps([re.fullmatch(pattern, v) is not None for v in values]))";
    let output = Command::new("python3")
        .args(["-c", script, &json!(pattern).to_string(), &json!(values).to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let matched: Vec<bool> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(matched, values.iter().map(|v| accepted.contains(v)).collect::<Vec<_>>(), "{values:?}");
    // The longest prefix and the longest region name still make a bucket name (63 at most).
    assert!(longest.len() + "-ap-southeast-7".len() <= 63);
}

/// boto3 (.venv) against this binary's moto, as moto's default account (the one any credentials
/// act as): runs `script` with `args` and returns what it prints as JSON.
fn s3(script: &str, args: &[&str]) -> Value {
    let prelude = "import json, sys, hashlib, boto3, botocore.config\n\
        def s3(region): return boto3.client('s3', region_name=region, config=botocore.config.Config(s3={'addressing_style': 'path'}))\n";
    let output = Command::new(tool(".venv", "python", "tools"))
        .args(["-c", &format!("{prelude}{script}")])
        .args(args)
        .envs(aws_env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
}

fn aws_env() -> Vec<(&'static str, String)> {
    let nowhere = std::env::temp_dir().join("amiguard-org-no-aws-config").display().to_string();
    vec![
        ("AWS_ENDPOINT_URL", moto().upstream.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_CONFIG_FILE", nowhere.clone()),
        ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

fn create_buckets(buckets: &[(&str, &str)]) {
    let script = "for bucket, region in json.loads(sys.argv[1]):\n\
        \x20   extra = {} if region == 'us-east-1' else {'CreateBucketConfiguration': {'LocationConstraint': region}}\n\
        \x20   s3(region).create_bucket(Bucket=bucket, **extra)\n\
        print('[]')";
    s3(script, &[&json!(buckets).to_string()]);
}

/// {bucket: {key: sha256 of the object}} of every bucket whose name starts with `prefix`.
fn objects(prefix: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let script = "out = {}\n\
        client = s3('us-east-1')\n\
        for bucket in client.list_buckets()['Buckets']:\n\
        \x20   name = bucket['Name']\n\
        \x20   if not name.startswith(sys.argv[1]): continue\n\
        \x20   out[name] = {}\n\
        \x20   for o in client.list_objects_v2(Bucket=name).get('Contents', []):\n\
        \x20       body = client.get_object(Bucket=name, Key=o['Key'])['Body'].read()\n\
        \x20       out[name][o['Key']] = hashlib.sha256(body).hexdigest()\n\
        print(json.dumps(out))";
    serde_json::from_value(s3(script, &[prefix])).unwrap()
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("amiguard-{name}-{}-{nanos}", std::process::id())
}

fn sha256(bytes: &[u8]) -> String {
    let dir = scratch("sha");
    std::fs::write(dir.join("file"), bytes).unwrap();
    let output = Command::new("sha256sum").arg(dir.join("file")).output().unwrap();
    String::from_utf8_lossy(&output.stdout).split(' ').next().unwrap().to_string()
}

/// Stand-in zips in cargo lambda's layout (`<dir>/<function>/bootstrap.zip`), each with `tag`.
fn zips(tag: &str) -> (PathBuf, BTreeMap<String, String>) {
    let dir = scratch(&format!("zips-{tag}"));
    let mut sha = BTreeMap::new();
    for function in function_packages() {
        let body = format!("{function} {tag}");
        std::fs::create_dir_all(dir.join(&function)).unwrap();
        std::fs::write(dir.join(&function).join("bootstrap.zip"), &body).unwrap();
        sha.insert(function, sha256(body.as_bytes()));
    }
    (dir, sha)
}

/// `make org-upload` with `vars` (make's command-line variables), the zips in `zips_dir`, against moto.
fn make_org_upload(vars: &[(&str, &str)], zips_dir: &Path) -> Output {
    let mut command = Command::new("make");
    command.arg("org-upload").current_dir(workspace_root());
    for (name, value) in vars {
        command.arg(format!("{name}={value}"));
    }
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_")
            || ["CODE_BUCKET_PREFIX", "REGIONS", "ORG_UPLOAD_ZIPS_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"]
                .contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    command.envs(aws_env()).env("ORG_UPLOAD_ZIPS_DIR", zips_dir).output().unwrap()
}

/// {function package: key} the written build/org-template.yaml reads its code from.
fn template_keys() -> BTreeMap<String, String> {
    let org = load_yaml(&workspace_root().join("build/org-template.yaml"));
    of_type(&org, "AWS::Lambda::Function")
        .values()
        .map(|r| {
            let code = &r["Properties"]["Code"];
            assert_eq!(code["S3Bucket"], json!({"Fn::Sub": "${CodeBucketPrefix}-${AWS::Region}"}));
            (
                r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_string(),
                code["S3Key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn make_org_upload_puts_each_zip_under_the_templates_key_in_every_regions_bucket() {
    let prefix = unique_prefix("up");
    let buckets: Vec<(String, &str)> = REGIONS.iter().map(|r| (format!("{prefix}-{r}"), *r)).collect();
    create_buckets(&buckets.iter().map(|(b, r)| (b.as_str(), *r)).collect::<Vec<_>>());
    let (dir, sha) = zips("first");
    let output = make_org_upload(&[("CODE_BUCKET_PREFIX", &prefix), ("REGIONS", &REGIONS.join(","))], &dir);
    assert!(output.status.success(), "{}", text(&output));

    let keys = template_keys();
    assert_eq!(keys.keys().cloned().collect::<Vec<_>>(), function_packages());
    let mut expected: BTreeMap<String, String> = keys.iter().map(|(f, k)| (k.clone(), sha[f].clone())).collect();
    // And the template itself, for --template-url (its body is over CloudFormation's 51,200
    // bytes for --template-body), named by its sha256, at the URL the output gives.
    let template = std::fs::read(workspace_root().join("build/org-template.yaml")).unwrap();
    let output_text = String::from_utf8_lossy(&output.stdout).to_string();
    let template_sha = sha256(&template);
    let template_key = format!("amiguard/org-template/{template_sha}.yaml");
    expected.insert(template_key.clone(), template_sha);
    let found = objects(&prefix);
    assert_eq!(found.len(), REGIONS.len(), "{found:?}");
    for (bucket, region) in &buckets {
        assert_eq!(found[bucket], expected, "{bucket}: the three zips under the keys the template reads, and it");
        let url = format!("--template-url https://{bucket}.s3.{region}.amazonaws.com/{template_key}");
        assert!(output_text.contains(&url), "{url}\n{output_text}");
    }

    // Again with another build of the same sources: what stacks may be running is never replaced.
    let (other, _) = zips("second");
    let output = make_org_upload(&[("CODE_BUCKET_PREFIX", &prefix), ("REGIONS", &REGIONS.join(","))], &other);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("kept"), "{}", text(&output));
    assert_eq!(objects(&prefix), found, "nothing replaced");
}

#[test]
fn make_org_upload_without_a_prefix_or_a_bucket_uploads_nothing() {
    let prefix = unique_prefix("none");
    // Only the first region's bucket exists.
    create_buckets(&[(&format!("{prefix}-{}", REGIONS[0]), REGIONS[0])]);
    let (dir, _) = zips("none");
    let before = objects(&prefix);
    assert_eq!(before.values().map(BTreeMap::len).sum::<usize>(), 0);

    let output = make_org_upload(&[("REGIONS", &REGIONS.join(","))], &dir);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CODE_BUCKET_PREFIX is not set"), "{}", text(&output));

    let output = make_org_upload(&[("CODE_BUCKET_PREFIX", &prefix)], &dir);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("REGIONS is not set"), "{}", text(&output));

    let output = make_org_upload(&[("CODE_BUCKET_PREFIX", &prefix), ("REGIONS", &REGIONS.join(","))], &dir);
    assert!(!output.status.success(), "{}", text(&output));
    let missing = format!("bucket {prefix}-{} does not exist", REGIONS[1]);
    assert!(String::from_utf8_lossy(&output.stderr).contains(&missing), "{}", text(&output));

    let output = make_org_upload(&[("CODE_BUCKET_PREFIX", "Not_A_Prefix"), ("REGIONS", REGIONS[0])], &dir);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CODE_BUCKET_PREFIX="), "{}", text(&output));

    assert_eq!(objects(&prefix), before, "nothing uploaded");
}

#[test]
fn the_monitoring_link_exists_only_when_a_sink_is_given_and_shares_only_amiguards_metrics() {
    let template = load();
    let parameter = &template["Parameters"]["MonitoringSinkArn"];
    assert_eq!(parameter["Default"], "", "optional");
    let links = |rendered: &Value| -> Vec<Value> {
        resources(rendered).values().filter(|r| r["Type"] == "AWS::Oam::Link").cloned().collect()
    };
    let unlinked = render(&template, &[]);
    assert!(links(&unlinked).is_empty(), "no sink, no link");
    assert!(unlinked["Outputs"].get("MonitoringLinkArn").is_none());

    let sink = "arn:aws:oam:eu-west-1:111122223333:sink/f3b6c2a4-1a2b-4c3d-8e9f-0123456789ab";
    let linked = render(&template, &[("MonitoringSinkArn", sink)]);
    let links = links(&linked);
    assert_eq!(links.len(), 1, "{links:?}");
    let link = &links[0]["Properties"];
    assert_eq!(link["SinkIdentifier"], json!({"!Ref": "MonitoringSinkArn"}));
    assert_eq!(link["ResourceTypes"], json!(["AWS::CloudWatch::Metric"]));
    assert_eq!(link["LabelTemplate"], "$AccountName");
    let filter = format!("Namespace = '{}'", amiguard::metrics::NAMESPACE);
    assert_eq!(link["LinkConfiguration"], json!({"MetricConfiguration": {"Filter": filter}}));
    assert!(linked["Outputs"].get("MonitoringLinkArn").is_some());

    // Only an empty value or a sink's ARN.
    let pattern = parameter["AllowedPattern"].as_str().unwrap();
    let script = "import json, re, sys\npattern, values = json.loads(sys.argv[1]), json.loads(sys.argv[2])\nprint(json.dumps([re.fullmatch(pattern, v) is not None for v in values]))";
    let values = ["", sink, "arn:aws:oam:eu-west-1:111122223333:link/abc", "sink/abc", " "];
    let output = Command::new("python3")
        .args(["-c", script, &json!(pattern).to_string(), &json!(values).to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let matched: Vec<bool> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(matched, [true, true, false, false, false]);
}

/// The monitoring account's dashboard: every metric a function emits, under the dimensions it
/// publishes it with, each summed over the linked accounts; nothing no function emits.
#[test]
fn the_organisations_dashboard_sums_every_metric_the_functions_emit_and_only_those() {
    let monitoring = load_yaml(&workspace_root().join("deploy/monitoring.yaml"));
    let dashboard = dashboard(&monitoring);
    let packages = function_packages();
    let mut shown = BTreeSet::new();
    for metric in &dashboard.metrics {
        assert_eq!(metric.namespace, amiguard::metrics::NAMESPACE, "{metric:?}");
        let function = metric.dimension(amiguard::metrics::FUNCTION_DIMENSION).unwrap_or_else(|| panic!("{metric:?}"));
        assert!(packages.iter().any(|p| p == function), "{}: no function {function}", metric.widget);
        let (names, dimensions) = emitted_metrics(function);
        assert!(names.contains(&metric.name.as_str()), "{}: {function} emits no {}", metric.widget, metric.name);
        let extra = dimensions.iter().find(|(n, _)| *n == metric.name).map_or(&[][..], |(_, d)| *d);
        let mut expected: Vec<String> = std::iter::once(amiguard::metrics::FUNCTION_DIMENSION)
            .chain(extra.iter().copied())
            .map(str::to_string)
            .collect();
        expected.sort();
        assert_eq!(metric.dimension_names(), expected, "{}: {function}'s {}", metric.widget, metric.name);
        shown.insert((function.to_string(), metric.name.clone()));
    }
    for function in &packages {
        for name in emitted_metrics(function).0 {
            assert!(
                shown.contains(&(function.clone(), name.to_string())),
                "the dashboard must show {function}'s {name}"
            );
        }
    }
    // AlertsSent: each severity the code gives an alert.
    let mut severities: Vec<&str> =
        dashboard.metrics.iter().filter(|m| m.name == "AlertsSent").filter_map(|m| m.dimension("Severity")).collect();
    severities.sort_unstable();
    use amiguard::alert::Severity;
    assert_eq!(severities, [Severity::High.as_str(), Severity::Medium.as_str()]);

    // Summed over the accounts: every series a SUM of a SEARCH (the SEARCH finds each linked
    // account's), but the one panel that shows them account by account; all in the stack's region.
    let mut per_account = 0;
    for widget in dashboard.body["widgets"].as_array().unwrap().iter().filter(|w| w["type"] == "metric") {
        assert_eq!(widget["properties"]["region"], "${AWS::Region}");
        for row in widget["properties"]["metrics"].as_array().unwrap() {
            let expression = row[0]["expression"].as_str().unwrap();
            if !expression.starts_with("SUM(SEARCH('") {
                assert!(expression.starts_with("SEARCH('"), "{expression}");
                per_account += 1;
            }
        }
    }
    assert_eq!(per_account, 1);
    assert!(dashboard.substitutions.iter().all(|s| s == "AWS::Region"), "{:?}", dashboard.substitutions);

    // The sink lets the organisation's accounts link their metrics, nothing else.
    let sink = of_type(&monitoring, "AWS::Oam::Sink");
    assert_eq!(sink.len(), 1);
    let statement = &sink.values().next().unwrap()["Properties"]["Policy"]["Statement"][0];
    assert_eq!(statement["Action"], json!(["oam:CreateLink", "oam:UpdateLink"]));
    assert_eq!(statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"], json!({"!Ref": "OrganizationId"}));
    assert_eq!(
        statement["Condition"]["ForAllValues:StringEquals"]["oam:ResourceTypes"],
        json!(["AWS::CloudWatch::Metric"])
    );
    assert_eq!(monitoring["Outputs"]["SinkArn"]["Value"], json!({"!GetAtt": "Sink.Arn"}));
}
