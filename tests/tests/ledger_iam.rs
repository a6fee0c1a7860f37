//! Each role touches only what amiguard owns, in the ledger and its key (issue 21, items 11 and
//! 14), read from `template.yaml` and held to the code:
//!
//! - each role reads and writes only its own ledger partitions: its `dynamodb:LeadingKeys`
//!   (`ForAllValues:StringLike`, `<prefix>*`) are exactly its crate's `LEDGER_PARTITIONS`, on
//!   item actions that set the key, never without it; every partition `ledger::keys` makes is
//!   listed by some function, and no two functions share one but the journal;
//! - every request of each function's handler runs (the least-privilege tests and the alert's
//!   folding below, through the recording proxy) names only partitions its role is granted;
//! - every grant on the stack's KMS key says through which service (`kms:ViaService`), naming
//!   only the services that use that key on the role's behalf;
//! - the docs say the same (docs/ledger.md's writers, each function page's IAM section).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use amiguard::invocation::Invocation;
use amiguard::ledger::keys;
use amiguard_integration_tests::inbox::AlertInbox;
use amiguard_integration_tests::ledger;
use amiguard_integration_tests::ledger_iam::{
    actions, assert_requests_within_leading_keys, leading_keys, patterns, statements, ACTIONS_WITH_LEADING_KEYS,
    LEADING_KEYS,
};
use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::template::{function_for, function_packages, load};
use amiguard_integration_tests::{moto, sample_event, workspace_root, TestAccount, RHEL_AMI};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

/// Each function and the ledger partitions its crate says it uses.
const FUNCTIONS: [(&str, &[&str]); 3] = [
    (snapshot_on_stop::FUNCTION, snapshot_on_stop::LEDGER_PARTITIONS),
    (orphan_snapshot_sweeper::FUNCTION, orphan_snapshot_sweeper::LEDGER_PARTITIONS),
    (untrusted_ami_alert::FUNCTION, untrusted_ami_alert::LEDGER_PARTITIONS),
];

/// The statements of `function`'s role that allow something.
fn allows(template: &Value, function: &str) -> Vec<Value> {
    let logical_id = function_for(template, function).logical_id;
    statements(template, &logical_id).into_iter().filter(|s| s["Effect"] == "Allow").collect()
}

fn grants_service(statement: &Value, service: &str) -> bool {
    actions(statement).iter().any(|a| a.starts_with(&format!("{service}:")))
}

#[test]
fn every_function_package_says_its_ledger_partitions() {
    let listed: BTreeSet<String> = FUNCTIONS.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(listed, function_packages().into_iter().collect(), "a function left out of these checks");
}

#[test]
fn each_roles_leading_keys_are_exactly_its_crates_partitions() {
    let template = load();
    for (function, partitions) in FUNCTIONS {
        let ledger_statements: Vec<Value> =
            allows(&template, function).into_iter().filter(|s| grants_service(s, "dynamodb")).collect();
        assert!(!ledger_statements.is_empty(), "{function}: no ledger grant");
        for statement in ledger_statements {
            let granted: BTreeSet<String> = leading_keys(&statement)
                .unwrap_or_else(|| panic!("{function}: a ledger grant without {LEADING_KEYS}: {statement}"))
                .into_iter()
                .collect();
            assert_eq!(granted, patterns(partitions), "{function}: template.yaml's LeadingKeys vs LEDGER_PARTITIONS");
        }
    }
}

#[test]
fn every_ledger_grant_is_an_item_action_on_the_ledger_that_names_its_partitions() {
    let template = load();
    for (function, _) in FUNCTIONS {
        for statement in allows(&template, function).into_iter().filter(|s| grants_service(s, "dynamodb")) {
            for action in actions(&statement) {
                assert!(
                    ACTIONS_WITH_LEADING_KEYS.contains(&action.as_str()),
                    "{function}: {action} does not set {LEADING_KEYS} (IAM would let it reach every partition)"
                );
            }
            assert_eq!(statement["Resource"], json!({"!GetAtt": "Ledger.Arn"}), "{function}: the ledger table only");
            // `ForAllValues` also holds over no values at all: the key must be there.
            assert_eq!(
                statement["Condition"]["Null"][LEADING_KEYS],
                json!("false"),
                "{function}: a request that names no partition is refused: {statement}"
            );
            let operators: Vec<&String> = statement["Condition"].as_object().unwrap().keys().collect();
            assert_eq!(operators, ["ForAllValues:StringLike", "Null"], "{function}: {statement}");
        }
    }
    // The guards attached to the roles beside their inline policies grant nothing on the ledger
    // or its key (they are Denies of their own): every grant is where these tests read it.
    for (id, resource) in template["Resources"].as_object().unwrap() {
        if resource["Type"].as_str().is_some_and(|t| t.starts_with("AWS::IAM::")) {
            let text = resource.to_string();
            assert!(!text.contains("dynamodb:") && !text.contains("kms:"), "{id} grants on the ledger or its key");
        }
    }
}

#[test]
fn every_partition_the_key_builders_make_is_listed_by_some_function_and_shared_only_as_the_journal() {
    // The builders' own words: every `format!("<prefix>#...")` of keys.rs names a listed prefix.
    let source = std::fs::read_to_string(workspace_root().join("shared/src/ledger/keys.rs")).unwrap();
    let mut built: BTreeSet<String> = BTreeSet::new();
    for (at, _) in source.match_indices("format!(\"") {
        let literal = &source[at + "format!(\"".len()..];
        let lead = &literal[..literal.find(['{', '"']).unwrap()];
        if !lead.is_empty() {
            let prefix = &lead[..=lead.find('#').unwrap_or_else(|| panic!("a partition key without `#`: {lead}"))];
            built.insert(prefix.to_string());
        }
    }
    let listed: BTreeSet<String> = keys::PARTITION_PREFIXES.iter().map(|p| p.to_string()).collect();
    assert_eq!(built, listed, "keys.rs's builders vs keys::PARTITION_PREFIXES");

    let mut writers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (function, partitions) in FUNCTIONS {
        for prefix in partitions {
            assert!(listed.contains(*prefix), "{function} lists `{prefix}`, which no key builder makes");
            writers.entry(prefix).or_default().push(function);
        }
    }
    let made = [
        keys::instance("eu-west-1", "i-0"),
        keys::made_images("eu-west-1"),
        keys::alert("eu-west-1", "i-0"),
        keys::failed_image_alerts("eu-west-1"),
        keys::launch_alerts("eu-west-1", "ami-0"),
        keys::folded_alerts("eu-west-1"),
        keys::findings("eu-west-1"),
        keys::seen_images("eu-west-1"),
        keys::orphans("eu-west-1"),
        keys::ami_events("eu-west-1"),
        keys::run("r-1"),
        keys::runs("any"),
    ];
    for pk in &made {
        let prefix = keys::partition_prefix(pk).unwrap_or_else(|| panic!("`{pk}` has no listed prefix"));
        assert!(writers.contains_key(prefix), "`{pk}`: no function lists `{prefix}`: no role may write it");
    }
    assert_eq!(writers.len(), listed.len(), "every prefix is some function's: {writers:?}");
    // One partition is shared: the journal, written by each function that deletes.
    let journal = keys::partition_prefix(&keys::run("r-1")).unwrap();
    let shared: Vec<(&&str, &Vec<&str>)> = writers.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(shared.iter().all(|(prefix, _)| **prefix == journal), "shared partitions: {shared:?}");
    // The role that reads the most hostile input shares none.
    for prefix in untrusted_ami_alert::LEDGER_PARTITIONS {
        assert_eq!(writers[prefix], [untrusted_ami_alert::FUNCTION], "`{prefix}`");
    }
}

/// `{"!Sub": "<service>.${AWS::Region}.amazonaws.com"}` → `<service>`.
fn via_service(value: &Value) -> String {
    let text = value["!Sub"].as_str().unwrap_or_else(|| panic!("kms:ViaService is a !Sub of the region: {value}"));
    text.strip_suffix(".${AWS::Region}.amazonaws.com")
        .filter(|service| !service.is_empty() && service.chars().all(|c| c.is_ascii_lowercase()))
        .unwrap_or_else(|| panic!("not <service>.${{AWS::Region}}.amazonaws.com: {text}"))
        .to_string()
}

fn refers_to(value: &Value, logical_id: &str) -> bool {
    value == &json!({"!Ref": logical_id}) || value == &json!({"!GetAtt": format!("{logical_id}.Arn")})
}

/// The services that use the KMS key `key` on a caller's behalf, with the resources each
/// encrypts with it: tables (DynamoDB) and topics (SNS).
fn encrypted_with(template: &Value, key: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (id, resource) in template["Resources"].as_object().unwrap() {
        let properties = &resource["Properties"];
        match resource["Type"].as_str() {
            Some("AWS::DynamoDB::Table") if refers_to(&properties["SSESpecification"]["KMSMasterKeyId"], key) => {
                found.push(("dynamodb", id.clone()))
            }
            Some("AWS::SNS::Topic") if refers_to(&properties["KmsMasterKeyId"], key) => found.push(("sns", id.clone())),
            _ => {}
        }
    }
    found
}

#[test]
fn every_kms_grant_says_through_which_service_and_names_only_those_that_use_the_key_for_the_role() {
    let template = load();
    let keys: Vec<&String> = template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::KMS::Key")
        .map(|(id, _)| id)
        .collect();
    let mut roles_with_kms = 0;
    for (function, _) in FUNCTIONS {
        let allowed = allows(&template, function);
        let mut via: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for statement in allowed.iter().filter(|s| grants_service(s, "kms")) {
            assert!(actions(statement).iter().all(|a| a.starts_with("kms:")), "{function}: one service a statement");
            let key = keys
                .iter()
                .find(|key| refers_to(&statement["Resource"], key))
                .unwrap_or_else(|| panic!("{function}: KMS only on the stack's key: {statement}"));
            let condition = &statement["Condition"]["StringEquals"]["kms:ViaService"];
            let named: Vec<String> = match condition {
                Value::Array(list) => list.iter().map(via_service).collect(),
                Value::Null => panic!("{function}: a KMS grant without kms:ViaService: {statement}"),
                one => vec![via_service(one)],
            };
            let operators: Vec<&String> = statement["Condition"].as_object().unwrap().keys().collect();
            assert_eq!(operators, ["StringEquals"], "{function}: {statement}");
            via.entry(key.to_string()).or_default().extend(named);
        }
        // What uses each key for this role: a service it calls on a resource encrypted with it.
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for key in &keys {
            for (service, resource) in encrypted_with(&template, key) {
                let calls_it = allowed.iter().any(|s| {
                    grants_service(s, service)
                        && (refers_to(&s["Resource"], &resource)
                            || s["Resource"]
                                .as_array()
                                .is_some_and(|list| list.iter().any(|r| refers_to(r, &resource))))
                });
                if calls_it {
                    uses.entry(key.to_string()).or_default().insert(service.to_string());
                }
            }
        }
        assert_eq!(via, uses, "{function}: kms:ViaService of its KMS grants vs the services using the key for it");
        roles_with_kms += usize::from(!via.is_empty());
    }
    assert_eq!(roles_with_kms, FUNCTIONS.len(), "every role uses the ledger's key through DynamoDB");
}

/// The section of `markdown` under the heading that is exactly `heading`, to the next heading of
/// the same or a higher level.
fn section(markdown: &str, heading: &str) -> String {
    let mut lines = markdown.lines().skip_while(|line| line.trim_start_matches('#').trim() != heading);
    let level = lines.next().map(|line| line.chars().take_while(|c| *c == '#').count());
    let level = level.unwrap_or_else(|| panic!("no heading {heading:?}"));
    lines
        .take_while(|line| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes == 0 || hashes > level
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_docs_say_who_may_write_each_partition_and_each_roles_partitions_and_key_condition() {
    let read = |path: &str| std::fs::read_to_string(workspace_root().join(path)).unwrap();
    // docs/ledger.md's table: each row's writers are the functions that list its prefix.
    let ledger = read("docs/ledger.md");
    let table: Vec<Vec<String>> = section(&ledger, "Keys")
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| line.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect())
        .collect();
    let writer = table[0].iter().position(|h| h.starts_with("writer")).expect("a writer column");
    let mut rows = 0;
    for row in table.iter().skip(2) {
        let pk = row[0].trim_matches('`');
        let prefix = keys::partition_prefix(pk).unwrap_or_else(|| panic!("docs/ledger.md: `{pk}` is no partition"));
        let said: BTreeSet<&str> = row[writer].split(',').map(str::trim).collect();
        let listing: BTreeSet<&str> =
            FUNCTIONS.iter().filter(|(_, partitions)| partitions.contains(&prefix)).map(|(f, _)| *f).collect();
        assert_eq!(said, listing, "docs/ledger.md: who may write `{pk}`");
        rows += 1;
    }
    assert!(rows >= keys::PARTITION_PREFIXES.len(), "{rows} rows");
    // Each function page's IAM section: its partitions as IAM grants them, nobody else's, and
    // the key's condition.
    for (function, partitions) in FUNCTIONS {
        let iam = section(&read(&format!("docs/{function}.md")), "IAM");
        for prefix in keys::PARTITION_PREFIXES {
            assert_eq!(
                iam.contains(&format!("`{prefix}*`")),
                partitions.contains(prefix),
                "docs/{function}.md's IAM section and `{prefix}*`"
            );
        }
        assert!(iam.contains("kms:ViaService"), "docs/{function}.md's IAM section says the key's condition");
    }
}

/// untrusted-ami-alert's requests beyond the least-privilege scenario's: the launch-alert slots
/// and the folded alerts (folding on, as the stack sets it with its audit), a slot given back
/// when the publish fails, the digest that sends and forgets the folded alerts. Every partition
/// they name is within the role's LeadingKeys, and every partition granted is used.
#[tokio::test]
async fn the_alerts_folding_and_digest_stay_within_its_partitions() {
    use untrusted_ami_alert::{handle, Config, Ec2Client, Ports, Report, StsIdentity};

    let account = TestAccount::new().await;
    let inbox = AlertInbox::new(&account, true).await;
    let vars = [
        ("ALERT_TOPIC_ARN", inbox.topic_arn.clone()),
        ("TRUSTED_IMAGE_PROVIDERS", "self".to_string()),
        ("ENFORCEMENT", "tag".to_string()),
        ("FOLD_LAUNCH_ALERTS", "true".to_string()),
    ];
    let config =
        Config::from_env(&move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())).unwrap();
    ledger::create(&account).await;
    account.securityhub().enable_security_hub().send().await.unwrap();
    let proxy = Proxy::start(&moto().endpoint).await;
    let through = account.through(&proxy);
    let ports = Ports {
        ec2: Ec2Client::new(through.ec2()),
        alerts: amiguard::alert::sns::SnsAlerts::new(through.sns(), config.alert_topic_arn.clone()),
        identity: StsIdentity::new(through.sts()),
        ledger: Some(ledger::on(&through)),
        region: account.region.clone(),
        // Its findings recorded for the audit to archive (`findings#`).
        findings: Some(Box::new(amiguard::findings::securityhub::SecurityHubFindings::new(
            through.securityhub(),
            through.sts(),
        ))),
    };
    let in_the_hour = |minute: u32| Invocation::at(Utc.with_ymd_and_hms(2026, 12, 2, 10, minute, 0).unwrap());
    // The first publish fails: its claim and its slot are given back, and the retry alerts.
    proxy.inject(Fault::error("Publish", 400, "InvalidParameter").times(1));
    let mut folded = 0;
    for minute in 0..7 {
        let instance = account.run_instance(RHEL_AMI, &[]).await;
        let mut event = sample_event("untrusted-ami-alert.running.json");
        event["account"] = json!(account.account_id);
        event["detail"]["instance-id"] = json!(instance);
        if minute == 0 {
            handle(&config, &ports, &event, &in_the_hour(minute)).await.unwrap_err();
        }
        let Report::Instance(report) = handle(&config, &ports, &event, &in_the_hour(minute)).await.unwrap() else {
            panic!("not one instance's report")
        };
        folded += usize::from(report.alert_folded);
    }
    assert_eq!(folded, 3, "three alerts and a follow-up, then folded");
    let mut audit = sample_event("untrusted-ami-alert.scheduled-audit.json");
    audit["account"] = json!(account.account_id);
    let Report::Audit(audit) = handle(&config, &ports, &audit, &Invocation::at(Utc::now())).await.unwrap() else {
        panic!("not an audit")
    };
    assert_eq!(audit.alerts_sent, 3, "the digest names the folded ones");

    let calls = proxy.calls();
    let used = assert_requests_within_leading_keys(&load(), untrusted_ami_alert::FUNCTION, &calls);
    assert_eq!(used, patterns(untrusted_ami_alert::LEDGER_PARTITIONS), "every partition granted is used");
    let deletes: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.service == "dynamodb" && c.action == "DeleteItem")
        .filter_map(|c| serde_json::from_str::<Value>(&c.body).ok())
        .filter_map(|body| body["Key"]["pk"]["S"].as_str().and_then(keys::partition_prefix).map(str::to_string))
        .collect();
    assert_eq!(deletes, ["alert#", "folded-alerts#", "launch-alerts#"].map(String::from).into());
}

/// The check above bites: the sweeper's clock, as the alert role would write it, is refused.
#[test]
#[should_panic(expected = "PutItem on `orphans#us-east-1`, outside")]
fn a_request_outside_the_roles_partitions_is_caught() {
    let forged = amiguard_integration_tests::proxy::Call {
        service: "dynamodb".into(),
        action: "PutItem".into(),
        body: json!({"Item": {"pk": {"S": keys::orphans("us-east-1")}, "sk": {"S": "snap-0"}}}).to_string(),
        ..Default::default()
    };
    assert_requests_within_leading_keys(&load(), untrusted_ami_alert::FUNCTION, &[forged]);
}
