//! snapshot-on-stop's tag gates, read from `template.yaml` and held to the tags the code writes
//! (`amiguard::tags`, `snapshot_on_stop::core::naming`): its role deregisters, deletes and changes
//! launch templates only where `amiguard:created-by=snapshot-on-stop` is, and writes that tag
//! only on what it is creating. A renamed tag, a new `CreateTags` grant or a lost condition
//! breaks the build.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use amiguard::tags;
use amiguard_integration_tests::template::{function_for, load, render};
use serde_json::Value;

/// Every statement of snapshot-on-stop's policies, as CloudFormation deploys them with
/// `overrides` (each `!If` resolved).
fn statements(overrides: &[(&str, &str)]) -> Vec<Value> {
    let template = load();
    let function = function_for(&template, snapshot_on_stop::FUNCTION);
    let rendered = render(&template, overrides);
    let policies = rendered["Resources"][&function.logical_id]["Properties"]["Policies"].clone();
    let mut found = Vec::new();
    for policy in policies.as_array().unwrap() {
        for statement in policy["Statement"].as_array().unwrap() {
            found.push(statement.clone());
        }
    }
    assert!(!found.is_empty());
    found
}

/// Both deployments: with and without `PROTECT_NEWEST` (the only `!If` of the policy).
fn every_deployment() -> Vec<Vec<Value>> {
    vec![statements(&[]), statements(&[("SnapshotOnStopProtectNewest", "true")])]
}

fn actions(statement: &Value) -> BTreeSet<String> {
    match &statement["Action"] {
        Value::String(action) => [action.clone()].into(),
        Value::Array(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => BTreeSet::new(),
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    match value {
        Value::String(one) => [one.clone()].into(),
        Value::Array(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => BTreeSet::new(),
    }
}

fn allowing<'a>(statements: &'a [Value], action: &str) -> Vec<&'a Value> {
    statements.iter().filter(|s| s["Effect"] == "Allow" && actions(s).contains(action)).collect()
}

/// The condition `aws:ResourceTag/amiguard:created-by` = `snapshot-on-stop`, as the code writes
/// the tag.
fn requires_created_by(statement: &Value) -> bool {
    let key = format!("aws:ResourceTag/{}", tags::CREATED_BY);
    strings(&statement["Condition"]["StringEquals"][&key]) == [tags::CREATED_BY_SNAPSHOT_ON_STOP.to_string()].into()
}

#[test]
fn deregistering_and_deleting_need_the_created_by_tag_the_code_writes() {
    for statements in every_deployment() {
        for action in ["ec2:DeregisterImage", "ec2:DeleteSnapshot"] {
            let granting = allowing(&statements, action);
            assert!(!granting.is_empty(), "{action} is granted");
            for statement in granting {
                assert!(requires_created_by(statement), "{action} without the tag gate: {statement}");
            }
        }
    }
}

#[test]
fn launch_template_changes_need_the_created_by_tag_create_launch_template_writes() {
    for statements in every_deployment() {
        for action in
            ["ec2:ModifyLaunchTemplate", "ec2:CreateLaunchTemplateVersion", "ec2:DeleteLaunchTemplateVersions"]
        {
            let granting = allowing(&statements, action);
            assert!(!granting.is_empty(), "{action} is granted");
            for statement in granting {
                assert!(requires_created_by(statement), "{action} on any template: {statement}");
            }
        }
    }
}

/// The resource creations whose tagging (`ec2:CreateAction`) may carry `amiguard:created-by`.
const CREATIONS: [&str; 2] = ["CreateImage", "CreateLaunchTemplate"];

#[test]
fn created_by_is_written_only_on_what_is_being_created() {
    for statements in every_deployment() {
        let granting = allowing(&statements, "ec2:CreateTags");
        assert!(granting.len() >= 2, "tagging at creation, and of what exists: {granting:?}");
        let mut at_creation = BTreeSet::new();
        for statement in granting {
            let condition = &statement["Condition"];
            let creating = strings(&condition["StringEquals"]["ec2:CreateAction"]);
            let excluded = strings(&condition["ForAllValues:StringNotEqualsIgnoreCase"]["aws:TagKeys"]);
            if !creating.is_empty() {
                // Only while creating, and only what snapshot-on-stop creates.
                assert!(creating.iter().all(|a| CREATIONS.contains(&a.as_str())), "{statement}");
                at_creation.extend(creating);
            } else {
                assert!(
                    excluded.iter().any(|k| k.eq_ignore_ascii_case(tags::CREATED_BY)),
                    "CreateTags on what exists may write {}: {statement}",
                    tags::CREATED_BY
                );
            }
        }
        assert_eq!(
            at_creation,
            CREATIONS.iter().map(|a| a.to_string()).collect(),
            "the image, its snapshots, the template"
        );
        // And a Deny, should any later statement allow more.
        let denied = statements.iter().any(|s| {
            let condition = &s["Condition"];
            s["Effect"] == "Deny"
                && actions(s).contains("ec2:CreateTags")
                && strings(&condition["ForAnyValue:StringEqualsIgnoreCase"]["aws:TagKeys"])
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(tags::CREATED_BY))
                && condition["Null"]["ec2:CreateAction"] == "true"
        });
        assert!(denied, "no Deny of {} on what exists", tags::CREATED_BY);
    }
}

/// The tags the code writes: `amiguard:created-by=snapshot-on-stop` on what it creates (the
/// image, its snapshots, the template: the gates above read exactly that key and value), never on
/// what exists (its snapshots' later tags, the Recycle Bin's).
#[test]
fn the_code_writes_the_tag_the_gates_read_at_creation_and_never_afterwards() {
    use snapshot_on_stop::core::naming;
    use snapshot_on_stop::core::StoppedInstance;

    let created_by = tags::Tag::new(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP);
    let stopped_at = chrono::DateTime::parse_from_rfc3339("2026-11-27T01:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let instance = StoppedInstance {
        instance_id: "i-0123456789abcdef0".into(),
        state: "stopped".into(),
        root_device_type: Some("ebs".into()),
        state_reason: None,
        state_transition_reason: None,
        // A person's own created-by on the instance is a control tag: never copied.
        tags: vec![tags::Tag::new("AMIGUARD:CREATED-BY", "someone")],
    };
    let at_creation = [
        ("image", naming::image_tags(&instance, stopped_at, tags::KEEP)),
        ("snapshot", naming::snapshot_creation_tags(&instance.instance_id, stopped_at)),
        ("launch-template", naming::launch_template_tags(&instance.instance_id)),
    ];
    for (resource, written) in at_creation {
        let claims: Vec<&tags::Tag> = written.iter().filter(|t| t.key.eq_ignore_ascii_case(tags::CREATED_BY)).collect();
        assert_eq!(claims, [&created_by], "{resource}: {written:?}");
    }
    let afterwards = [
        naming::snapshot_tags_after_creation(&instance.instance_id, stopped_at, "ami-0123"),
        vec![amiguard::recycle_bin::RecycleBin::tag()],
    ];
    for written in afterwards {
        assert!(!written.iter().any(|t| t.key.eq_ignore_ascii_case(tags::CREATED_BY)), "{written:?}");
    }
    for statements in every_deployment() {
        assert!(statements.iter().any(requires_created_by), "the gates read the tag the code writes");
    }
}
