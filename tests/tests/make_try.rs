//! `make try` (demo/try.sh) against this binary's moto server, through `AWS_ENDPOINT_URL`, as a
//! caller with credentials of moto's default account (STS answers `123456789012` whatever the
//! keys): the output says it is a dry run first, the summaries name the orphan and the untrusted
//! instance, only read actions reach the emulator, and its whole state is the same afterwards.
//! Without credentials, or without a region, it refuses in one line before building anything.
//!
//! The functions are the binaries `cargo test --workspace` builds beside their packages' tests
//! (the build `make try` itself uses), handed over in `AMIGUARD_BIN_DIR`: no cargo runs inside
//! the tests. moto lacks the Recycle Bin, so these runs set `RECYCLE_BIN_CHECK=false`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard_integration_tests::proxy::{Fault, Proxy};
use amiguard_integration_tests::try_run::{assert_same_state, bin_dir, emulator_state, run, try_command};
use amiguard_integration_tests::{moto, TestAccount, AMAZON_LINUX_AMI};
use serde_json::Value;

/// moto's default account: the one STS answers for any credentials, so the one `make try` sees.
const CALLER_ACCOUNT: &str = "123456789012";
/// An image no account has: moto launches it anyway, and the audit cannot verify its owner.
const UNKNOWN_AMI: &str = "ami-0123456789abcdef0";
const FUNCTIONS: [&str; 2] = ["orphan-snapshot-sweeper", "untrusted-ami-alert"];
/// What a dry run may call: reads only.
const READ_ACTIONS: [&str; 7] = ["Describe", "Get", "List", "Query", "Scan", "BatchGetItem", "LookupEvents"];

/// What the account holds, as the SDK lists it (the readable half of the before/after check).
async fn account_state(account: &TestAccount) -> Vec<String> {
    let ec2 = account.ec2();
    let mut lines = Vec::new();
    let snapshots = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    for s in snapshots.snapshots() {
        if s.owner_id() == Some(CALLER_ACCOUNT) {
            lines.push(format!("snapshot {:?} {:?} {:?}", s.snapshot_id(), s.state(), s.tags()));
        }
    }
    let images = ec2.describe_images().owners("self").include_deprecated(true).send().await.unwrap();
    for i in images.images() {
        lines.push(format!("image {:?} {:?} {:?}", i.image_id(), i.state(), i.tags()));
    }
    let reservations = ec2.describe_instances().send().await.unwrap();
    for i in reservations.reservations().iter().flat_map(|r| r.instances()) {
        lines.push(format!("instance {:?} {:?} {:?}", i.instance_id(), i.state().and_then(|s| s.name()), i.tags()));
    }
    let tags = ec2.describe_tags().send().await.unwrap();
    lines.extend(tags.tags().iter().map(|t| format!("tag {:?} {:?} {:?}", t.resource_id(), t.key(), t.value())));
    let topics = account.sns().list_topics().send().await.unwrap();
    lines.extend(topics.topics().iter().map(|t| format!("topic {:?}", t.topic_arn())));
    let tables = account.dynamodb().list_tables().send().await.unwrap();
    for table in tables.table_names() {
        let items = account.dynamodb().scan().table_name(table).send().await.unwrap();
        lines.push(format!("table {table}: {} items", items.items().len()));
        for item in items.items() {
            let item: std::collections::BTreeMap<&String, String> =
                item.iter().map(|(name, value)| (name, format!("{value:?}"))).collect();
            lines.push(format!("item of {table}: {item:?}"));
        }
    }
    lines.sort();
    lines
}

/// An AMI of a fresh instance, deregistered: its snapshot is an orphan. Answers the snapshot.
async fn orphan(account: &TestAccount) -> String {
    let ec2 = account.ec2();
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let image = ec2.create_image().instance_id(&instance).name("release-1").send().await.unwrap();
    let image = image.image_id().unwrap().to_string();
    let described = ec2.describe_images().image_ids(&image).send().await.unwrap();
    let snapshot = described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    ec2.deregister_image().image_id(&image).send().await.unwrap();
    snapshot
}

/// An orphan the deployed sweeper witnessed: an AMI whose `available` event it recorded in the
/// ledger, then deregistered. Answers the snapshot.
async fn witnessed_orphan(account: &TestAccount) -> String {
    let ec2 = account.ec2();
    let instance = account.run_instance(AMAZON_LINUX_AMI, &[]).await;
    let image = ec2.create_image().instance_id(&instance).name("release-2").send().await.unwrap();
    let image = image.image_id().unwrap().to_string();
    let described = ec2.describe_images().image_ids(&image).send().await.unwrap();
    let snapshot = described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
    let mut available = amiguard_integration_tests::sample_event("orphan-snapshot-sweeper.ami-available.json");
    available["account"] = Value::String(account.account_id.clone());
    available["detail"]["ImageId"] = Value::String(image.clone());
    let config = orphan_snapshot_sweeper::Config::from_env(&|name: &str| {
        (name == "AWS_REGION").then(|| amiguard_integration_tests::REGION.to_string())
    })
    .unwrap();
    let regions = vec![(amiguard_integration_tests::REGION.to_string(), ec2.clone())];
    let ledger = amiguard_integration_tests::ledger::create(account).await;
    let ports = orphan_snapshot_sweeper::Ports { regions: &regions, publisher: &account.sns(), ledger: Some(&ledger) };
    let invocation = orphan_snapshot_sweeper::Invocation::at(chrono::Utc::now());
    let answer = orphan_snapshot_sweeper::handle(&config, &ports, &available, &invocation).await.unwrap();
    assert_eq!(serde_json::to_value(answer).unwrap()["outcome"], "recorded");
    ec2.deregister_image().image_id(&image).send().await.unwrap();
    snapshot
}

fn assert_only_reads(proxy: &Proxy, what: &str) {
    let calls = proxy.calls();
    assert!(calls.iter().any(|c| c.action == "DescribeSnapshots"), "{what}: the sweeper ran: {calls:?}");
    assert!(calls.iter().any(|c| c.action == "DescribeInstances"), "{what}: the audit ran: {calls:?}");
    let writes: Vec<String> = calls
        .iter()
        .filter(|c| !READ_ACTIONS.iter().any(|read| c.action.starts_with(read)))
        .map(|c| format!("{} {}", c.service, c.action))
        .collect();
    assert!(writes.is_empty(), "{what}: a dry run called {writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_try_prints_the_dry_runs_summaries_and_changes_nothing_with_or_without_a_ledger() {
    let bin_dir = bin_dir(&FUNCTIONS);
    let account = TestAccount::with_id(CALLER_ACCOUNT).await;
    let ec2 = account.ec2();
    let orphan = orphan(&account).await;
    let kept_image = ec2.create_image().instance_id(account.run_instance(AMAZON_LINUX_AMI, &[]).await);
    let kept_image = kept_image.name("release-current").send().await.unwrap().image_id().unwrap().to_string();
    let untrusted = account.run_instance(UNKNOWN_AMI, &[("Name", "miner-1")]).await;
    let volume = ec2.create_volume().availability_zone("us-east-1a").size(20).send().await.unwrap();
    ec2.create_snapshot()
        .volume_id(volume.volume_id().unwrap())
        .description("before the upgrade")
        .send()
        .await
        .unwrap();
    // A topic the functions could publish to if they did (the alert function is given another).
    account.sns().create_topic().name("amiguard-alerts").send().await.unwrap();

    let proxy = Proxy::start(&moto().endpoint).await;
    // moto lacks DescribeInstanceImageMetadata: EC2's launch record of the instance whose image is
    // not visible names an owner the default policy does not trust, so the audit's verdict is
    // proven (high) and a real run would tag it.
    let recorded = format!(
        "<instanceImageMetadataSet><item><instanceId>{untrusted}</instanceId><imageMetadata><imageId>{UNKNOWN_AMI}</imageId><imageOwnerId>111122223333</imageOwnerId></imageMetadata></item></instanceImageMetadataSet>"
    );
    proxy.inject(Fault::respond(
        "DescribeInstanceImageMetadata",
        amiguard_integration_tests::ec2_answer("DescribeInstanceImageMetadata", &recorded),
    ));
    let caller = |ledger: Option<&str>, min_age: &str| {
        let mut aws = vec![
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ];
        aws.extend(ledger.map(|table| ("LEDGER_TABLE", table)));
        let mut command = try_command(&aws);
        command
            .env("AMIGUARD_BIN_DIR", &bin_dir)
            .env("RECYCLE_BIN_CHECK", "false")
            .env("MIN_AGE_HOURS", min_age)
            // What the caller may have set for the deployed functions changes nothing here.
            .env("DRY_RUN", "false")
            .env("REPORT_TOPIC_ARN", format!("arn:aws:sns:us-east-1:{CALLER_ACCOUNT}:amiguard-alerts"))
            .env("ENFORCEMENT", "stop");
        command
    };

    // Without a ledger, MIN_AGE_HOURS=0: nothing witnessed the orphan's AMI (it was there before
    // amiguard), so it is listed unwitnessed for the caller to read, and nothing would be deleted.
    let (state, listed) = (emulator_state(), account_state(&account).await);
    let (output, text) = run(caller(None, "0")).await;
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("DRY RUN: nothing will be deleted, tagged, stopped or published.\n"),
        "it says so first: {text}"
    );
    assert!(stdout.contains(&format!("account {CALLER_ACCOUNT}")), "{text}");
    assert!(stdout.contains("ledger: none"), "{text}");
    assert!(stdout.contains("Dry run (dry_run=true):"), "{text}");
    assert!(stdout.contains(&format!("unwitnessed  {orphan}  (15 GiB")), "{text}");
    assert!(stdout.contains("ADOPT_UNWITNESSED_ORPHANS=true"), "{text}");
    assert!(stdout.contains("manual snapshots (never deleted): 1, 20 GiB"), "{text}");
    assert!(stdout.contains("referenced_by_image 1"), "the snapshot of {kept_image} is kept: {text}");
    assert!(stdout.contains("unwitnessed 1"), "{text}");
    assert_eq!(stdout.matches("would delete").count(), 0, "nothing witnessed: {text}");
    assert!(stdout.contains("scheduled audit (dry_run=true):"), "{text}");
    assert!(stdout.contains(&format!("untrusted {untrusted}  (image {UNKNOWN_AMI}")), "{text}");
    let would = stdout.lines().find(|l| l.contains("a real run would: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(would.contains("tag") && !would.contains("stop"), "ENFORCEMENT=stop: an audit tags, never stops: {text}");
    assert!(stdout.contains("nothing was deleted, tagged, stopped or published"), "{text}");
    assert_only_reads(&proxy, "without a ledger");
    assert_eq!(account_state(&account).await, listed, "{text}");
    assert_same_state(&state, &emulator_state(), &text);

    // With the ledger: read (its clocks, sent alerts), never written; MIN_AGE_HOURS=24 (the
    // default). An AMI the deployed sweeper witnessed (EC2 said it became available), then
    // deregistered: its orphan, first seen now, waits out its grace period.
    amiguard_integration_tests::ledger::create(&account).await;
    let witnessed = witnessed_orphan(&account).await;
    let before = proxy.calls().len();
    let (state, listed) = (emulator_state(), account_state(&account).await);
    let (output, text) = run(caller(Some(amiguard_integration_tests::ledger::TABLE), "24")).await;
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("DRY RUN: "), "{text}");
    assert!(stdout.contains("ledger: amiguard-ledger, read only"), "{text}");
    assert!(stdout.contains(&format!("waiting      {witnessed}")), "{text}");
    assert!(stdout.contains(&format!("unwitnessed  {orphan}")), "{text}");
    assert!(!stdout.contains("would delete"), "{text}");
    assert!(stdout.contains("LEDGER_READ_ONLY: the ledger was read, not written"), "{text}");
    assert!(stdout.contains(&format!("untrusted {untrusted}")), "{text}");
    let ledger_reads = proxy.calls()[before..].iter().filter(|c| c.service == "dynamodb").count();
    assert!(ledger_reads > 0, "the ledger was read: {:?}", &proxy.calls()[before..]);
    assert_only_reads(&proxy, "with the ledger");
    assert_eq!(account_state(&account).await, listed, "{text}");
    assert_same_state(&state, &emulator_state(), &text);
}

#[tokio::test]
async fn make_try_refuses_in_one_line_without_credentials_or_without_a_region() {
    let home = std::env::temp_dir().join(format!("amiguard-make-try-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    for (aws, refusal) in [
        (&[("AWS_REGION", "us-east-1")][..], "make try: no AWS credentials found"),
        (&[][..], "make try: no AWS credentials found"),
        (&[("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")][..], "make try: no AWS region"),
    ] {
        let mut command = try_command(aws);
        // Nothing to build with: a refusal must come before any build.
        command.env("HOME", &home).env("PATH", "/usr/bin:/bin").env_remove("CARGO_TARGET_DIR");
        let (output, text) = run(command).await;
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {text}");
        assert!(stderr.starts_with(refusal), "{text}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "DRY RUN: nothing will be deleted, tagged, stopped or published.\n",
            "{text}"
        );
    }
    std::fs::remove_dir_all(&home).unwrap();
}
