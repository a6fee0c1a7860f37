//! The template and the workspace agree: every function package is deployed, every resource
//! builds a package that exists, and each function's rules deliver its sample events (and reject
//! near misses), by EventBridge pattern semantics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard_integration_tests::event_pattern::matches;
use amiguard_integration_tests::template::{
    emitted_metrics, function_packages, functions, load, sample_events, statements_naming, TemplateFunction,
};
use serde_json::{json, Value};

/// Samples that exist to show what a function does with an event its rules never deliver
/// (`cargo lambda invoke` can still send them); every other sample must be delivered.
const NOT_DELIVERED: &[&str] = &[
    // snapshot-on-stop answers `skipped` for another state; its rule only sends `stopped`.
    "snapshot-on-stop.running.json",
    // untrusted-ami-alert answers `skipped` for states other than pending and running.
    "untrusted-ami-alert.stopped.json",
    // An EventBridge Scheduler payload: the stack schedules the sweep with an EventBridge rule,
    // so nothing in it sends this; the sample shows a sweep started by a Scheduler schedule an
    // operator creates instead, which the sweeper accepts (source aws.scheduler).
    "orphan-snapshot-sweeper.scheduler.json",
];

fn delivered(function: &TemplateFunction, event: &Value) -> bool {
    let scheduled = event["detail-type"] == "Scheduled Event" && event["source"] == "aws.events";
    (scheduled && function.scheduled) || function.patterns.iter().any(|p| matches(p, event).unwrap())
}

#[test]
fn every_function_package_has_its_resource_and_every_resource_its_package() {
    let template = load();
    let deployed = functions(&template);
    let packages = function_packages();
    assert!(!packages.is_empty());
    for package in &packages {
        let resource = deployed.iter().find(|f| f.binary.as_deref() == Some(package.as_str()));
        let resource = resource.unwrap_or_else(|| panic!("functions/{package} has no resource in template.yaml"));
        assert_eq!(resource.code_uri, Some(json!(".")), "{}: CodeUri must be the workspace root", resource.logical_id);
    }
    for function in &deployed {
        let binary = function
            .binary
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no BuildProperties.Binary", function.logical_id));
        assert!(
            packages.iter().any(|p| p == binary),
            "{} builds `{binary}`, which is not a package under functions/",
            function.logical_id
        );
    }
    let resources = template["Resources"].as_object().unwrap();
    for function in &deployed {
        assert_eq!(resources[&function.logical_id]["Metadata"]["BuildMethod"], "rust-cargolambda");
    }
}

#[test]
fn each_function_is_triggered_and_its_rules_deliver_its_sample_events() {
    let template = load();
    for function in functions(&template) {
        let binary = function.binary.clone().unwrap();
        assert!(function.scheduled || !function.patterns.is_empty(), "{binary} has no trigger");
        let samples = sample_events(&binary);
        assert!(!samples.is_empty(), "{binary} has no sample under events/");
        for (name, event) in samples {
            let expected = !NOT_DELIVERED.contains(&name.as_str());
            assert_eq!(delivered(&function, &event), expected, "{name}: delivered to {binary} should be {expected}");
        }
    }
}

#[test]
fn the_stop_rule_rejects_near_misses() {
    let template = load();
    let function = functions(&template).into_iter().find(|f| f.binary.as_deref() == Some("snapshot-on-stop")).unwrap();
    let stopped = amiguard_integration_tests::sample_event("snapshot-on-stop.stopped.json");
    assert!(delivered(&function, &stopped));
    let terminated = amiguard_integration_tests::sample_event("snapshot-on-stop.terminated.json");
    assert!(delivered(&function, &terminated), "a termination runs KEEP_AFTER_TERMINATION");
    for state in ["running", "stopping", "pending", "shutting-down", "Stopped", "stopped "] {
        let mut other = stopped.clone();
        other["detail"]["state"] = json!(state);
        assert!(!delivered(&function, &other), "state {state} must not be delivered");
    }
    let mut other_source = stopped.clone();
    other_source["source"] = json!("custom.ec2");
    assert!(!delivered(&function, &other_source));
    let mut other_type = stopped;
    other_type["detail-type"] = json!("EC2 Spot Instance Interruption Warning");
    assert!(!delivered(&function, &other_type));
}

#[test]
fn the_image_rule_takes_only_available_and_failed_images_from_ec2() {
    let template = load();
    let function = functions(&template).into_iter().find(|f| f.binary.as_deref() == Some("snapshot-on-stop")).unwrap();
    let available = amiguard_integration_tests::sample_event("snapshot-on-stop.ami-available.json");
    let failed = amiguard_integration_tests::sample_event("snapshot-on-stop.ami-failed.json");
    assert!(delivered(&function, &available) && delivered(&function, &failed));
    for state in ["deregistered", "disabled", "pending", "Available", "available "] {
        let mut other = available.clone();
        other["detail"]["State"] = json!(state);
        assert!(!delivered(&function, &other), "state {state} must not be delivered");
    }
    let mut lower_case = available.clone();
    lower_case["detail"] = json!({"ImageId": "ami-0a1b2c3d4e5f60718", "state": "available"});
    assert!(!delivered(&function, &lower_case), "field names are case-sensitive");
    let mut other_source = available.clone();
    other_source["source"] = json!("custom.ec2");
    assert!(!delivered(&function, &other_source));
    let mut other_type = failed;
    other_type["detail-type"] = json!("EC2 Instance State-change Notification");
    assert!(!delivered(&function, &other_type));
    // The sweeper's rule takes `available` too (it records the image's mapping as EC2 lists it:
    // the image is then witnessed), never `failed`; each function acts only on what concerns it.
    let sweeper =
        functions(&template).into_iter().find(|f| f.binary.as_deref() == Some("orphan-snapshot-sweeper")).unwrap();
    assert!(delivered(&sweeper, &available));
    assert!(!delivered(&sweeper, &amiguard_integration_tests::sample_event("snapshot-on-stop.ami-failed.json")));
}

#[test]
fn the_sweepers_ami_rule_takes_only_available_and_deregistered_images_from_ec2() {
    let template = load();
    let function =
        functions(&template).into_iter().find(|f| f.binary.as_deref() == Some("orphan-snapshot-sweeper")).unwrap();
    let deregistered = amiguard_integration_tests::sample_event("orphan-snapshot-sweeper.ami-deregistered.json");
    let available = amiguard_integration_tests::sample_event("orphan-snapshot-sweeper.ami-available.json");
    assert!(delivered(&function, &deregistered) && delivered(&function, &available));
    for state in ["failed", "disabled", "pending", "Available", "deregistered "] {
        let mut other = deregistered.clone();
        other["detail"]["State"] = json!(state);
        assert!(!delivered(&function, &other), "state {state} must not be delivered");
    }
    let mut lower_case = deregistered.clone();
    lower_case["detail"] = json!({"ImageId": "ami-0123456789abcdef0", "state": "deregistered"});
    assert!(!delivered(&function, &lower_case), "field names are case-sensitive");
    let mut other_source = deregistered.clone();
    other_source["source"] = json!("custom.ec2");
    assert!(!delivered(&function, &other_source));
    let mut instance_event = deregistered;
    instance_event["detail-type"] = json!("EC2 Instance State-change Notification");
    assert!(!delivered(&function, &instance_event));
}

/// The protect tag's IAM backstop follows its parameter, for each function that deletes: a policy
/// of its own on the function's role that only denies (it can never widen what least privilege
/// proves), covers both destructive actions, and is on the role before the function exists.
#[test]
fn the_protect_tag_is_denied_by_iam_whatever_the_parameter_says() {
    let template = load();
    let resources = template["Resources"].as_object().unwrap();
    for (function, parameter) in
        [("OrphanSnapshotSweeperFunction", "SweeperProtectTag"), ("SnapshotOnStopFunction", "SnapshotOnStopProtectTag")]
    {
        let default_tag = template["Parameters"][parameter]["Default"].as_str().unwrap();
        assert_eq!(default_tag, "amiguard:keep");
        let role = format!("{function}Role");
        let guards: Vec<(&String, &Value)> = resources
            .iter()
            .filter(|(_, r)| {
                r["Type"] == "AWS::IAM::Policy"
                    && r["Properties"]["Roles"].as_array().is_some_and(|roles| roles.contains(&json!({"!Ref": role})))
            })
            .collect();
        assert_eq!(guards.len(), 1, "exactly one policy of its own on {role}");
        let (guard_id, guard) = guards[0];
        let document = guard["Properties"]["PolicyDocument"]["!Sub"].as_str().expect("the document is a !Sub string");
        let placeholder = format!("${{{parameter}}}");
        assert!(document.contains(&placeholder), "{guard_id}: the condition key follows {parameter}");
        for tag in [default_tag, "legal-hold"] {
            let document: Value = serde_json::from_str(&document.replace(&placeholder, tag)).unwrap();
            let statements = document["Statement"].as_array().unwrap();
            assert!(!statements.is_empty());
            assert!(statements.iter().all(|s| s["Effect"] == "Deny"), "{guard_id} must only deny");
            let deny = &statements[0];
            let actions: Vec<&str> = deny["Action"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert_eq!(actions, ["ec2:DeleteSnapshot", "ec2:DeregisterImage"]);
            assert_eq!(deny["Resource"], "*");
            assert_eq!(deny["Condition"]["Null"][format!("aws:ResourceTag/{tag}")], "false");
        }
        assert_eq!(resources[function]["DependsOn"], json!(guard_id));
        let env = &resources[function]["Properties"]["Environment"]["Variables"];
        assert_eq!(env["PROTECT_TAG"], json!({"!Ref": parameter}), "{function} reads the key IAM guards");
    }
}

/// The one managed policy any function gets is AWS's read access for `DescribeImageReferences`
/// (which reads launch templates, SSM parameters and Image Builder recipes with the caller's
/// permissions), on the sweeper only, and only when retirement is on. Everything else a function
/// may do is in its inline statements, which the least-privilege tests hold to what it calls.
#[test]
fn the_only_managed_policy_is_the_image_references_read_for_retirement() {
    let template = load();
    for function in functions(&template) {
        let policies = template["Resources"][&function.logical_id]["Properties"]["Policies"].as_array().unwrap();
        let managed: Vec<&Value> = policies.iter().filter(|p| p.get("Statement").is_none()).collect();
        if function.binary.as_deref() != Some("orphan-snapshot-sweeper") {
            assert!(managed.is_empty(), "{}: {managed:?}", function.logical_id);
            continue;
        }
        assert_eq!(
            managed,
            [&json!({"!If": [
                "SweeperRetiresImages",
                {"!Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonEC2ImageReferencesAccessPolicy"},
                {"!Ref": "AWS::NoValue"}
            ]})]
        );
    }
}

/// `SweeperProtectTag` (and `SnapshotOnStopProtectTag`, the same pattern) goes into the IAM guard's JSON and must be the very key the sweeper reads:
/// its pattern (checked here by Python's `re`, whose syntax for it is CloudFormation's) refuses
/// anything that could break out of the JSON string or the `!Sub`, a space at either end (the
/// function trims it, IAM would not) and the reserved `aws:` prefix.
#[test]
fn the_protect_tag_parameter_admits_only_keys_the_guard_and_the_code_agree_on() {
    let template = load();
    let pattern = template["Parameters"]["SweeperProtectTag"]["AllowedPattern"].as_str().unwrap();
    assert_eq!(template["Parameters"]["SnapshotOnStopProtectTag"]["AllowedPattern"], json!(pattern));
    let accepted = ["amiguard:keep", "legal-hold", "Keep", "k", "team/keep me", "a=b+c@d.e_f"];
    let refused = ["", " keep", "keep ", "aws:keep", "AWS:keep", "ke\"ep", "ke\\ep", "ke${x}ep", "ke{ep", "ke,ep"];
    let keys: Vec<&str> = accepted.iter().chain(refused.iter()).copied().collect();
    let matched = parameter_accepts(&template, "SweeperProtectTag", &keys);
    assert_eq!(matched, keys.iter().map(|k| accepted.contains(k)).collect::<Vec<_>>(), "{keys:?}");
}

/// `PARTITIONED_LISTING_ABOVE`'s parameter admits exactly what the sweeper's config accepts, and
/// the stack passes it on.
#[test]
fn the_partitioned_listing_parameter_admits_what_the_sweeper_accepts() {
    let template = load();
    let parameter = &template["Parameters"]["SweeperPartitionedListingAbove"];
    assert_eq!(parameter["Default"], json!("20000"));
    let values =
        ["0", "1", "20000", "999999999", "1000000000", "", "-1", "1000000001", "20000.5", "1e4", "abc", "99999999999"];
    // Whole numbers written plainly: the function also trims spaces and reads `+5` or `007`, which
    // the parameter refuses (a stricter form, the same range).
    let admitted = parameter_accepts(&template, "SweeperPartitionedListingAbove", &values);
    for (value, admitted) in values.iter().zip(admitted) {
        let read = |name: &str| match name {
            "PARTITIONED_LISTING_ABOVE" => Some(value.to_string()),
            "AWS_REGION" => Some("us-east-1".to_string()),
            _ => None,
        };
        let accepted = orphan_snapshot_sweeper::Config::from_env(&read).is_ok();
        // An empty value is the default to the function; CloudFormation refuses it.
        if !value.is_empty() {
            assert_eq!(admitted, accepted, "{value:?}");
        } else {
            assert!(!admitted);
        }
    }
    let sweeper = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["Properties"]["Environment"]["Variables"]["EXACT_SAVINGS"].is_object())
        .expect("the sweeper's function");
    assert_eq!(
        sweeper["Properties"]["Environment"]["Variables"]["PARTITIONED_LISTING_ABOVE"],
        json!({"!Ref": "SweeperPartitionedListingAbove"})
    );
}

/// The Recycle Bin rules the stack deploys with these parameters, by resource type: the whole
/// resource.
fn recycle_bin_rules(rendered: &Value) -> Vec<(String, Value)> {
    let resources = rendered["Resources"].as_object().unwrap();
    let mut rules: Vec<(String, Value)> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::Rbin::Rule")
        .map(|r| (r["Properties"]["ResourceType"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    rules
}

/// Which of `values` CloudFormation accepts for the parameter `name`: its AllowedPattern, a Java
/// regex matched against the whole value, checked with Python's `re.fullmatch`, whose syntax for
/// the patterns of this template is the same.
fn parameter_accepts(template: &Value, name: &str, values: &[&str]) -> Vec<bool> {
    let pattern = template["Parameters"][name]["AllowedPattern"].as_str().expect("an AllowedPattern");
    let script = "import json, re, sys\npattern, values = json.loads(sys.argv[1]), json.loads(sys.argv[2])\nprint(json.dumps([re.fullmatch(pattern, v) is not None for v in values]))";
    let output = std::process::Command::new("python3")
        .args(["-c", script, &json!(pattern).to_string(), &json!(values).to_string()])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_recycle_bin_rules_exist_above_zero_days_select_the_codes_tag_and_outlive_the_stack() {
    use amiguard::recycle_bin::{MAX_RETENTION_DAYS, TAG_KEY, TAG_VALUE};
    let template = load();
    assert_eq!(template["Parameters"]["RecycleBinRetentionDays"]["Default"], json!("7"));
    // The days the template accepts are the days the functions accept (0..=MAX_RETENTION_DAYS),
    // written one way only.
    let days: Vec<String> = (0..=MAX_RETENTION_DAYS + 1).map(|d| d.to_string()).collect();
    let days: Vec<&str> = days.iter().map(String::as_str).collect();
    let accepted = parameter_accepts(&template, "RecycleBinRetentionDays", &days);
    let expected: Vec<bool> = (0..=MAX_RETENTION_DAYS + 1).map(|d| d <= MAX_RETENTION_DAYS).collect();
    assert_eq!(accepted, expected);
    let odd = ["", "00", "07", "7.5", "-1", "1e2", " 7"];
    assert_eq!(parameter_accepts(&template, "RecycleBinRetentionDays", &odd), [false; 7], "{odd:?}");
    for days in [None, Some("30")] {
        let overrides: Vec<(&str, &str)> = days.map(|d| ("RecycleBinRetentionDays", d)).into_iter().collect();
        let rendered = amiguard_integration_tests::template::render(&template, &overrides);
        let rules = recycle_bin_rules(&rendered);
        assert_eq!(rules.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["EBS_SNAPSHOT", "EC2_IMAGE"]);
        for (_, resource) in &rules {
            let rule = &resource["Properties"];
            // Exactly the tag the functions write (shared/src/recycle_bin.rs), nothing broader.
            assert_eq!(rule["ResourceTags"], json!([{"ResourceTagKey": TAG_KEY, "ResourceTagValue": TAG_VALUE}]));
            assert_eq!(rule["RetentionPeriod"]["RetentionPeriodValue"], json!({"!Ref": "RecycleBinRetentionDays"}));
            // Recycle Bin cannot lock a tag-level rule: a LockConfiguration would fail the deploy.
            assert_eq!(rule.get("LockConfiguration"), None);
            // Deleting the stack leaves the rules: what the bin holds keeps its retention.
            assert_eq!(
                (&resource["DeletionPolicy"], &resource["UpdateReplacePolicy"]),
                (&json!("Retain"), &json!("Retain"))
            );
        }
        // Their ARNs, for the SCP that keeps them from being changed (docs/undo.md).
        let outputs = &rendered["Outputs"];
        assert_eq!(outputs["RecycleBinSnapshotRuleArn"]["Value"], json!({"!GetAtt": "RecycleBinSnapshotRule.Arn"}));
        assert_eq!(outputs["RecycleBinImageRuleArn"]["Value"], json!({"!GetAtt": "RecycleBinImageRule.Arn"}));
        for function in ["OrphanSnapshotSweeperFunction", "SnapshotOnStopFunction"] {
            let env = &rendered["Resources"][function]["Properties"]["Environment"]["Variables"];
            assert_eq!(env["RECYCLE_BIN_RETENTION_DAYS"], json!({"!Ref": "RecycleBinRetentionDays"}), "{function}");
        }
        // The sweeper may write that tag and no other, in every region it sweeps.
        let statements = rendered["Resources"]["OrphanSnapshotSweeperFunction"]["Properties"]["Policies"][0]
            ["Statement"]
            .as_array()
            .unwrap()
            .clone();
        let tagging: Vec<&Value> = statements.iter().filter(|s| s["Action"] == "ec2:CreateTags").collect();
        assert_eq!(tagging.len(), 1);
        assert_eq!(tagging[0]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"], json!([TAG_KEY]));
        assert_eq!(tagging[0]["Condition"]["StringEquals"][format!("aws:RequestTag/{TAG_KEY}")], json!(TAG_VALUE));
        assert_eq!(
            tagging[0]["Resource"],
            json!([
                {"!Sub": "arn:${AWS::Partition}:ec2:*::snapshot/*"},
                {"!Sub": "arn:${AWS::Partition}:ec2:*::image/*"}
            ])
        );
    }

    let off = amiguard_integration_tests::template::render(&template, &[("RecycleBinRetentionDays", "0")]);
    assert!(recycle_bin_rules(&off).is_empty(), "0 days: no rules");
    assert!(
        off["Outputs"].get("RecycleBinSnapshotRuleArn").is_none()
            && off["Outputs"].get("RecycleBinImageRuleArn").is_none()
    );
    let statements = off["Resources"]["OrphanSnapshotSweeperFunction"]["Properties"]["Policies"][0]["Statement"]
        .as_array()
        .unwrap()
        .clone();
    assert!(statements.iter().all(|s| s["Action"] != "ec2:CreateTags"), "no rules, no tag to write");
}

/// What issue 15 asks the dashboard to show of amiguard's own metrics, per function.
const ASKED_FOR: &[(&str, &str)] = &[
    ("orphan-snapshot-sweeper", "ReclaimableGiB"),
    ("orphan-snapshot-sweeper", "EstimatedMonthlySavingsUSD"),
    ("orphan-snapshot-sweeper", "Deleted"),
    ("orphan-snapshot-sweeper", "DeleteFailed"),
    ("orphan-snapshot-sweeper", "Kept"),
    ("orphan-snapshot-sweeper", "RegionsAborted"),
    ("snapshot-on-stop", "ImagesCreated"),
    ("snapshot-on-stop", "ImagesRetired"),
    ("snapshot-on-stop", "ImagesFailed"),
    ("untrusted-ami-alert", "AlertsSent"),
];

#[test]
fn every_amiguard_metric_the_dashboard_shows_is_one_its_function_emits_under_those_dimensions() {
    let template = load();
    let dashboard = amiguard_integration_tests::template::dashboard(&template);
    let own: Vec<_> = dashboard.metrics.iter().filter(|m| m.namespace == amiguard::metrics::NAMESPACE).collect();
    assert!(!own.is_empty());
    let packages = function_packages();
    for metric in &own {
        let function = metric.dimension(amiguard::metrics::FUNCTION_DIMENSION).unwrap_or_else(|| {
            panic!("{}: {} names no Function: every amiguard metric has one", metric.widget, metric.name)
        });
        assert!(packages.iter().any(|p| p == function), "{}: no function {function}", metric.widget);
        let (names, dimensions) = emitted_metrics(function);
        assert!(
            names.contains(&metric.name.as_str()),
            "{}: {function} emits no metric {:?} (its METRIC_NAMES: {names:?})",
            metric.widget,
            metric.name
        );
        let extra = dimensions.iter().find(|(n, _)| *n == metric.name).map_or(&[][..], |(_, d)| *d);
        let mut expected: Vec<String> = std::iter::once(amiguard::metrics::FUNCTION_DIMENSION)
            .chain(extra.iter().copied())
            .map(str::to_string)
            .collect();
        expected.sort();
        assert_eq!(
            metric.dimension_names(),
            expected,
            "{}: {function} publishes {} under these dimensions (a different set is another metric, with no data)",
            metric.widget,
            metric.name
        );
    }
    for (function, name) in ASKED_FOR {
        assert!(emitted_metrics(function).0.contains(name), "{function} must emit {name}");
        assert!(
            own.iter().any(|m| m.name == *name && m.dimension("Function") == Some(function)),
            "the dashboard must show {function}'s {name}"
        );
    }
    // The two functions whose every metric the issue lists: each of them is shown.
    for function in [snapshot_on_stop::FUNCTION, untrusted_ami_alert::FUNCTION] {
        for name in emitted_metrics(function).0 {
            assert!(ASKED_FOR.contains(&(function, *name)), "{function}'s {name} is shown and listed above");
        }
    }
    // AlertsSent: one series per severity the code gives an alert, nothing else.
    let mut severities: Vec<&str> =
        own.iter().filter(|m| m.name == "AlertsSent").filter_map(|m| m.dimension("Severity")).collect();
    severities.sort_unstable();
    use amiguard::alert::Severity;
    assert_eq!(severities, [Severity::High.as_str(), Severity::Medium.as_str()]);
    // Kept: every reason (a SEARCH over the Reason dimension), of the sweeper.
    let kept: Vec<_> = own.iter().filter(|m| m.name == "Kept").collect();
    assert!(
        !kept.is_empty() && kept.iter().all(|m| m.dimensions.iter().any(|(d, v)| d == "Reason" && v.is_none())),
        "{kept:?}"
    );
}

#[test]
fn the_dashboards_lambda_and_sqs_panels_name_every_function_and_dead_letter_queue_of_the_template() {
    let template = load();
    let dashboard = amiguard_integration_tests::template::dashboard(&template);
    let resources = template["Resources"].as_object().unwrap();
    // Every substitution is a pseudo parameter or a resource (attribute) of the template.
    for name in &dashboard.substitutions {
        let resource = name.split('.').next().unwrap();
        assert!(
            name.starts_with("AWS::") || resources.contains_key(resource),
            "${{{name}}} in the dashboard names nothing in the template"
        );
    }
    let mut functions: Vec<String> = functions(&template).into_iter().map(|f| f.logical_id).collect();
    functions.sort();
    let mut errors: Vec<String> = dashboard
        .metrics
        .iter()
        .filter(|m| m.namespace == "AWS/Lambda")
        .map(|m| {
            assert_eq!((m.name.as_str(), m.dimension_names()), ("Errors", vec!["FunctionName".to_string()]), "{m:?}");
            let value = m.dimension("FunctionName").unwrap();
            let id = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')).unwrap_or(value);
            assert_eq!(resources[id]["Type"], "AWS::Serverless::Function", "{}: {value} is not a function", m.widget);
            id.to_string()
        })
        .collect();
    errors.sort();
    assert_eq!(errors, functions, "one Errors series per function, by its Ref");

    let mut queues: Vec<String> = functions
        .iter()
        .map(|f| {
            let target = &resources[f]["Properties"]["DeadLetterQueue"]["TargetArn"]["!GetAtt"];
            let queue = target.as_str().and_then(|t| t.strip_suffix(".Arn")).unwrap_or_else(|| panic!("{f}: no DLQ"));
            assert_eq!(resources[queue]["Type"], "AWS::SQS::Queue");
            queue.to_string()
        })
        .collect();
    queues.sort();
    let mut depths: Vec<String> = dashboard
        .metrics
        .iter()
        .filter(|m| m.namespace == "AWS/SQS")
        .map(|m| {
            assert_eq!(m.name, "ApproximateNumberOfMessagesVisible", "{m:?}");
            assert_eq!(m.dimension_names(), ["QueueName"]);
            let value = m.dimension("QueueName").unwrap();
            let queue = value.strip_prefix("${").and_then(|v| v.strip_suffix(".QueueName}"));
            queue.unwrap_or_else(|| panic!("{}: {value} is not ${{Queue.QueueName}}", m.widget)).to_string()
        })
        .collect();
    depths.sort();
    assert_eq!(depths, queues, "one depth series per dead-letter queue");
    // Only amiguard's, Lambda's and SQS's metrics: nothing that no one publishes.
    let namespaces: std::collections::BTreeSet<&str> = dashboard.metrics.iter().map(|m| m.namespace.as_str()).collect();
    assert_eq!(namespaces.into_iter().collect::<Vec<_>>(), ["AWS/Lambda", "AWS/SQS", "amiguard"]);
    // Every metric widget is in the stack's region, and the outputs name the dashboard.
    for widget in dashboard.body["widgets"].as_array().unwrap().iter().filter(|w| w["type"] == "metric") {
        assert_eq!(widget["properties"]["region"], "${AWS::Region}", "{}", widget["properties"]["title"]);
    }
    assert_eq!(template["Outputs"]["DashboardName"]["Value"], json!({"!Ref": dashboard.logical_id}));
}

#[test]
fn only_the_functions_that_import_findings_may_import_them_and_only_into_the_accounts_default_product() {
    let template = load();
    let grants = |rendered: &Value, function: &str| statements_naming(rendered, function, "securityhub:");
    let product = json!({"!Sub": "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:product/${AWS::AccountId}/default"});
    let on = amiguard_integration_tests::template::render(&template, &[]);
    for function in ["UntrustedAmiAlertFunction", "SnapshotOnStopFunction"] {
        let statements = grants(&on, function);
        assert_eq!(statements.len(), 1, "{function}: {statements:#?}");
        assert_eq!(statements[0]["Action"], "securityhub:BatchImportFindings", "{function}");
        assert_eq!(statements[0]["Resource"], product, "{function}");
        let env = &on["Resources"][function]["Properties"]["Environment"]["Variables"];
        assert_eq!(env["SECURITY_HUB_FINDINGS"], json!({"!Ref": "SecurityHubFindings"}), "{function}");
    }
    assert!(grants(&on, "OrphanSnapshotSweeperFunction").is_empty(), "the sweeper makes no finding");
    let off = amiguard_integration_tests::template::render(&template, &[("SecurityHubFindings", "false")]);
    for function in ["UntrustedAmiAlertFunction", "SnapshotOnStopFunction", "OrphanSnapshotSweeperFunction"] {
        assert!(grants(&off, function).is_empty(), "{function}: findings off, no Security Hub grant");
    }
}

/// Whether the sweeper's config accepts `value` for `variable` (the rest as deployed defaults).
fn sweeper_accepts(variable: &str, value: &str) -> bool {
    let vars: std::collections::HashMap<String, String> =
        [("AWS_REGION", "us-east-1"), (variable, value)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    orphan_snapshot_sweeper::Config::from_env(&move |name: &str| vars.get(name).cloned()).is_ok()
}

/// Every value the staged-retirement parameters allow is one the function accepts, and every
/// plain number it accepts the parameter allows: a deployed value it refused would fail every
/// sweep at init (snapshot sweeping included).
#[test]
fn the_staged_retirement_parameters_allow_exactly_what_the_sweeper_accepts() {
    let template = load();
    let env = &template["Resources"]["OrphanSnapshotSweeperFunction"]["Properties"]["Environment"]["Variables"];
    let variable = |parameter: &str| {
        let found = env.as_object().unwrap().iter().find(|(_, v)| **v == json!({"!Ref": parameter}));
        found.unwrap_or_else(|| panic!("{parameter} is not passed to the sweeper")).0.clone()
    };
    for (parameter, max) in
        [("SweeperRetireDwellDays", 3650), ("SweeperUsageReportLagDays", 29), ("SweeperRetireKeepNewest", 1000)]
    {
        let name = variable(parameter);
        let mut values: Vec<String> = (0..=max + 1).map(|d: u32| d.to_string()).collect();
        values.extend(["", "00", "07", "-1", "1e2", " 7", "99999"].map(str::to_string));
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let allowed = parameter_accepts(&template, parameter, &values);
        for (value, allowed) in values.iter().zip(allowed) {
            let canonical = value.parse::<u32>().is_ok_and(|n| n.to_string() == *value);
            if allowed || canonical {
                assert_eq!(allowed, sweeper_accepts(&name, value), "{parameter} ({name}) = {value:?}");
            }
        }
    }
    let name = variable("SweeperRetireFamilyTag");
    let long = "a".repeat(128);
    let too_long = "a".repeat(129);
    let tags = ["", "golden:family", "team/app", "aws:x", "AWS:x", " x", "x ", "a b", &long, &too_long];
    let allowed = parameter_accepts(&template, "SweeperRetireFamilyTag", &tags);
    for (tag, allowed) in tags.iter().zip(allowed) {
        assert!(
            !allowed || sweeper_accepts(&name, tag),
            "SweeperRetireFamilyTag = {tag:?} allowed, refused by the sweeper"
        );
    }
    assert!(!parameter_accepts(&template, "SweeperRetireFamilyTag", &["aws:x", " x"]).contains(&true));
    for parameter in ["SweeperRetireStages", "SweeperRetireImageBuilderImages"] {
        let name = variable(parameter);
        for value in template["Parameters"][parameter]["AllowedValues"].as_array().unwrap() {
            let value = value.as_str().unwrap();
            assert!(sweeper_accepts(&name, value), "{parameter} ({name}) = {value:?}");
        }
    }
}
