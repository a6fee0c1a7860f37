//! `make try TRY_ROLE_NAME=<role>` (demo/try.sh, demo/try_org.py) against an organisation on this
//! binary's moto server, through the recording proxy: the management account (moto's default,
//! the caller) and four members, one of them closed (SUSPENDED, never visited) and one whose role
//! STS refuses (the proxy answers `AccessDenied` to AssumeRole into it: moto assumes any role),
//! dry-run in two regions. The table has exactly one row per active account and region, each
//! starting with the account id and the region, each account's figures in its own row (orphans
//! seeded in two accounts and regions, an untrusted instance in a third), the refused account's
//! rows saying so while the others print, and the totals summing the rows; only reads (and
//! AssumeRole, ListAccounts, read in two pages) reach the emulator, and its whole state is the same
//! afterwards.
//! Bad settings are refused in one line before anything is built.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::try_org::{create_account, organizations};
use amiguard_integration_tests::try_run::{assert_same_state, bin_dir, emulator_state, run, try_command};
use amiguard_integration_tests::{moto, TestAccount, AMAZON_LINUX_AMI};
use serde_json::json;

/// moto's default account: STS answers it for the caller's keys; it creates the organisation.
const MANAGEMENT: &str = "123456789012";
const ROLE: &str = "amiguard-try-reader";
const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
/// An image no account has: moto launches it anyway.
const UNKNOWN_AMI: &str = "ami-0123456789abcdef0";
const FUNCTIONS: [&str; 2] = ["orphan-snapshot-sweeper", "untrusted-ami-alert"];
/// What a dry run may call: reads only, and the two calls that reach the accounts.
const READ_ACTIONS: [&str; 7] = ["Describe", "Get", "List", "Query", "Scan", "BatchGetItem", "LookupEvents"];
const ORGANISATION_ACTIONS: [&str; 2] = ["AssumeRole", "ListAccounts"];

/// An orphan in `region` of `account`: the snapshot of an AMI of an instance, the AMI
/// deregistered and the instance terminated (so that the audit has nothing to judge there).
async fn orphan(account: &TestAccount, region: &str) -> String {
    let ec2 = account.ec2_in(region);
    let instance = account.run_instance_in(region, AMAZON_LINUX_AMI).await;
    let image = ec2.create_image().instance_id(&instance).name(format!("release-{instance}")).send().await.unwrap();
    let image = image.image_id().unwrap().to_string();
    let described = ec2.describe_images().image_ids(&image).send().await.unwrap();
    let snapshot = described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    ec2.deregister_image().image_id(&image).send().await.unwrap();
    ec2.terminate_instances().instance_ids(&instance).send().await.unwrap();
    snapshot
}

/// The table's rows: (account, region) -> the rest of the line, for every line that starts with a
/// 12-digit account id (a row appearing twice is kept twice, under a `#2` region).
fn rows(stdout: &str) -> BTreeMap<(String, String), String> {
    let mut rows = BTreeMap::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let (Some(account), Some(region)) = (words.next(), words.next()) else { continue };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let rest = words.collect::<Vec<_>>().join(" ");
        let mut key = (account.to_string(), region.to_string());
        while rows.contains_key(&key) {
            key.1.push_str("#2");
        }
        rows.insert(key, rest);
    }
    rows
}

/// witnessed, GiB, $/month, unwitnessed, GiB, $/month, images to retire, untrusted instances.
fn figures(rest: &str) -> Vec<f64> {
    rest.split_whitespace().map(|cell| cell.parse::<f64>().unwrap_or_else(|_| panic!("a figure: {rest}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_try_over_an_organisation_prints_one_row_per_account_and_region_and_changes_nothing() {
    let bin_dir = bin_dir(&FUNCTIONS);
    organizations("CreateOrganization", &json!({"FeatureSet": "ALL"}));
    let orphans = create_account("orphans");
    let untrusted_account = create_account("untrusted");
    let refused = create_account("no-role");
    let closed = create_account("closed");
    organizations("CloseAccount", &json!({"AccountId": closed}));

    let management = TestAccount::with_id(MANAGEMENT).await;
    let orphan_account = TestAccount::with_id(&orphans).await;
    orphan(&orphan_account, "us-east-1").await;
    orphan(&orphan_account, "us-east-1").await;
    orphan(&management, "us-west-2").await;
    // What a visit would find in the closed account (and would print in its row).
    orphan(&TestAccount::with_id(&closed).await, "us-east-1").await;
    let launched = TestAccount::with_id(&untrusted_account).await.ec2_in("us-west-2").run_instances();
    let launched = launched
        .image_id(UNKNOWN_AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let untrusted = launched.instances()[0].instance_id().unwrap().to_string();

    // moto makes an account's EC2 in a region (its default VPC, the fixture AMIs) at its first
    // call there: every account and region is made before the state is taken.
    for account in [MANAGEMENT, &orphans, &untrusted_account, &refused, &closed] {
        let account = TestAccount::with_id(account).await;
        for region in REGIONS {
            account.ec2_in(region).describe_instances().send().await.unwrap();
        }
    }

    let proxy = Proxy::start(&moto().endpoint).await;
    // moto lacks DescribeInstanceImageMetadata: EC2's launch record names an untrusted owner.
    let recorded = format!(
        "<instanceImageMetadataSet><item><instanceId>{untrusted}</instanceId><imageMetadata><imageId>{UNKNOWN_AMI}</imageId><imageOwnerId>111122223333</imageOwnerId></imageMetadata></item></instanceImageMetadataSet>"
    );
    proxy.inject(Fault::respond(
        "DescribeInstanceImageMetadata",
        amiguard_integration_tests::ec2_answer("DescribeInstanceImageMetadata", &recorded),
    ));
    // moto answers every account in one page (up to 100): the proxy hands moto's own list over
    // in two pages, so that only a run that follows NextToken sees every account.
    let listed = organizations("ListAccounts", &json!({}));
    let listed = listed["Accounts"].as_array().unwrap();
    assert_eq!(listed.len(), 5, "{listed:?}");
    let (first, rest) = listed.split_at(2);
    proxy.inject(Fault::respond("ListAccounts", json!({"Accounts": rest}).to_string()).when_body_contains("page-2"));
    proxy.inject(Fault::respond("ListAccounts", json!({"Accounts": first, "NextToken": "page-2"}).to_string()));
    // moto assumes any role: STS refuses the one of this account, as AWS does when the role is
    // missing or does not trust the caller.
    proxy.inject(Fault::error("AssumeRole", 403, "AccessDenied").when_body_contains(&refused));

    let regions = REGIONS.join(",");
    let caller = |adopt: &str, max_delete_fraction: &str| {
        let mut command = try_command(&[
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_REGIONS", regions.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]);
        command
            .env("TRY_ROLE_NAME", ROLE)
            .env("AMIGUARD_BIN_DIR", &bin_dir)
            .env("RECYCLE_BIN_CHECK", "false")
            .env("MIN_AGE_HOURS", "0")
            .env("ADOPT_UNWITNESSED_ORPHANS", adopt)
            .env("MAX_DELETE_FRACTION", max_delete_fraction)
            // What the caller may have set for the deployed functions changes nothing here.
            .env("DRY_RUN", "false")
            .env("REPORT_TOPIC_ARN", format!("arn:aws:sns:us-east-1:{MANAGEMENT}:amiguard-alerts"))
            .env("ENFORCEMENT", "stop");
        command
    };

    let state = emulator_state();
    let started = std::time::Instant::now();
    let (output, text) = run(caller("false", "0.5")).await;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("DRY RUN: nothing will be deleted, tagged, stopped or published.\n"),
        "it says so first: {text}"
    );
    assert_eq!(output.status.code(), Some(1), "a row failed (the refused role), after all rows printed: {text}");
    assert!(stdout.contains(&format!("each through role {ROLE}; regions us-east-1,us-west-2")), "{text}");

    // Exactly one row per active account and region; none for the closed account.
    let rows = rows(&stdout);
    let active = [MANAGEMENT, orphans.as_str(), untrusted_account.as_str(), refused.as_str()];
    let expected: BTreeSet<(String, String)> = active
        .iter()
        .flat_map(|account| REGIONS.iter().map(|region| (account.to_string(), region.to_string())))
        .collect();
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), expected, "{text}");
    assert!(!stdout.contains(&closed), "the closed account is not visited: {text}");

    // The refused role: its rows say so, exactly; every other row has its figures.
    for region in REGIONS {
        assert_eq!(
            rows[&(refused.clone(), region.to_string())],
            format!("role {ROLE} not assumable: AccessDenied"),
            "{text}"
        );
    }
    let row = |account: &str, region: &str| figures(&rows[&(account.to_string(), region.to_string())]);
    //                                          witnessed  GiB  $     unwitn. GiB   $     retire untrusted
    assert_eq!(row(&orphans, "us-east-1"), vec![0.0, 0.0, 0.0, 2.0, 30.0, 1.5, 0.0, 0.0], "{text}");
    assert_eq!(row(MANAGEMENT, "us-west-2"), vec![0.0, 0.0, 0.0, 1.0, 15.0, 0.75, 0.0, 0.0], "{text}");
    assert_eq!(row(&untrusted_account, "us-west-2"), vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "{text}");
    for (account, region) in
        [(MANAGEMENT, "us-east-1"), (orphans.as_str(), "us-west-2"), (untrusted_account.as_str(), "us-east-1")]
    {
        assert_eq!(row(account, region), vec![0.0; 8], "{account} {region}: {text}");
    }
    // The totals: the sum of the rows that ran, over the 4 accounts; the failed rows said so.
    let total = stdout.lines().find(|l| l.starts_with("total ")).unwrap_or_else(|| panic!("{text}"));
    let total = total.split_whitespace().skip(3).collect::<Vec<_>>().join(" ");
    assert!(stdout.contains("total         4 accounts"), "{text}");
    assert_eq!(figures(&total), vec![0.0, 0.0, 0.0, 3.0, 45.0, 2.25, 0.0, 1.0], "{text}");
    assert!(stdout.contains("2 row(s) failed (counted in no total)"), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("make try: 2 row(s) failed"), "{text}");

    // What reached the emulator: the accounts listed, each active one's role asked for once (the
    // closed one's never), then reads only, in both regions.
    let calls = proxy.calls();
    assert_eq!(proxy.count("ListAccounts"), 2, "both pages: {calls:?}");
    let assumed: Vec<String> =
        calls.iter().filter(|c| c.action == "AssumeRole").filter_map(|c| c.param("RoleArn")).collect();
    let mut wanted: Vec<String> = active.iter().map(|a| format!("arn:aws:iam::{a}:role/{ROLE}")).collect();
    let mut asked = assumed.clone();
    asked.sort();
    wanted.sort();
    assert_eq!(asked, wanted, "{text}");
    for region in REGIONS {
        let swept = calls.iter().filter(|c| c.action == "DescribeSnapshots" && c.region == region).count();
        let audited = calls.iter().filter(|c| c.action == "DescribeInstances" && c.region == region).count();
        assert!(swept >= 3 && audited >= 3, "3 accounts swept and audited in {region}: {calls:?}");
    }
    let writes: Vec<String> = calls
        .iter()
        .filter(|c| !READ_ACTIONS.iter().any(|read| c.action.starts_with(read)))
        .filter(|c| !ORGANISATION_ACTIONS.contains(&c.action.as_str()))
        .map(|c| format!("{} {}", c.service, c.action))
        .collect();
    assert!(writes.is_empty(), "a dry run called {writes:?}");
    assert_same_state(&state, &emulator_state(), &text);
    eprintln!("make try over 4 accounts x 2 regions took {:.1} s", took.as_secs_f64());

    // Adopted (ADOPT_UNWITNESSED_ORPHANS=true), the same orphans are in the witnessed columns:
    // a real run would delete them (each is all of its account's own snapshots: the circuit
    // breaker lets them through only at MAX_DELETE_FRACTION=1).
    let (output, text) = run(caller("true", "1")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let rows = self::rows(&stdout);
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), expected, "{text}");
    let row = |account: &str, region: &str| figures(&rows[&(account.to_string(), region.to_string())]);
    assert_eq!(row(&orphans, "us-east-1"), vec![2.0, 30.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0], "{text}");
    assert_eq!(row(MANAGEMENT, "us-west-2"), vec![1.0, 15.0, 0.75, 0.0, 0.0, 0.0, 0.0, 0.0], "{text}");
    let total = stdout.lines().find(|l| l.starts_with("total ")).unwrap_or_else(|| panic!("{text}"));
    let total = total.split_whitespace().skip(3).collect::<Vec<_>>().join(" ");
    assert_eq!(figures(&total), vec![3.0, 45.0, 2.25, 0.0, 0.0, 0.0, 0.0, 1.0], "{text}");
    assert_same_state(&state, &emulator_state(), &text);

    // At the default breaker, a real run would stop in those two places: their rows say why, and
    // every other row still has its figures.
    let (output, text) = run(caller("true", "0.5")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let rows = self::rows(&stdout);
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), expected, "{text}");
    for (account, region, orphans) in [(orphans.as_str(), "us-east-1", 2), (MANAGEMENT, "us-west-2", 1)] {
        assert_eq!(
            rows[&(account.to_string(), region.to_string())],
            format!("sweep aborted: circuit breaker: {orphans} orphans of {orphans} own snapshots is more than MAX_DELETE_FRACTION=0.5; nothing deleted"),
            "{text}"
        );
    }
    assert_eq!(figures(&rows[&(untrusted_account.clone(), "us-west-2".to_string())])[7], 1.0, "{text}");
    assert!(stdout.contains("4 row(s) failed (counted in no total)"), "{text}");
    assert_same_state(&state, &emulator_state(), &text);
}

#[tokio::test]
async fn make_try_refuses_a_bad_role_name_or_region_list_in_one_line_before_building() {
    let proxy = Proxy::start(&moto().endpoint).await;
    for (role, regions, refusal) in [
        (
            "arn:aws:iam::123456789012:role/x",
            "us-east-1",
            "make try: TRY_ROLE_NAME='arn:aws:iam::123456789012:role/x' is not an IAM role name",
        ),
        (ROLE, "us-east-1,europe", "make try: AWS_REGIONS='us-east-1,europe' is not a comma-separated list of regions"),
    ] {
        let mut command = try_command(&[
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_REGIONS", regions),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]);
        // Nothing to build with: a refusal must come before any build.
        command.env("TRY_ROLE_NAME", role).env("PATH", "/usr/bin:/bin").env_remove("CARGO_TARGET_DIR");
        let (output, text) = run(command).await;
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {text}");
        assert!(stderr.starts_with(refusal), "{text}");
    }
    assert!(
        proxy.calls().iter().all(|c| c.action != "AssumeRole" && c.action != "ListAccounts"),
        "{:?}",
        proxy.calls()
    );

    // Credentials that may not list the organisation (not its management or a delegated
    // administrator account): refused in one line, no role assumed, nothing built.
    proxy.inject(Fault::error("ListAccounts", 400, "AccessDeniedException"));
    let mut command = try_command(&[
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]);
    command.env("TRY_ROLE_NAME", ROLE).env("PATH", "/usr/bin:/bin").env_remove("CARGO_TARGET_DIR");
    let (output, text) = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {text}");
    assert!(
        stderr.starts_with("make try: Organizations ListAccounts failed for arn:aws:sts::123456789012:user/moto (AccessDeniedException): TRY_ROLE_NAME needs"),
        "{text}"
    );
    assert!(proxy.calls().iter().all(|c| c.action != "AssumeRole"), "{:?}", proxy.calls());
}
