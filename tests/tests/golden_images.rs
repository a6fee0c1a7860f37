//! Golden images (issue 22), end to end: the sweeper's handler against moto, with EC2's image
//! lifecycle as AWS documents it (usage reports, deprecation, `DisableImage` removing every launch
//! permission) answered by the model of `tests/src/image_lifecycle.rs` on its own proxy, a
//! recording proxy in front of it, consumer accounts on the same moto whose instances and launch
//! templates are what the usage reports show, and the sweeper's injected clock (the model's clock
//! set to it before each run).
//!
//! Each test asserts on EC2's state (moto and the model) and on the report's contract fields
//! (`regions[].retirement_stages[]`: `stage`, `change`, `next_stage`, `next_at`, `waiting_for`,
//! `why_stopped`, `evidence`; `totals.retirement_stages`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use amiguard_integration_tests::image_lifecycle::ImageLifecycle;
use amiguard_integration_tests::proxy::Proxy;
use amiguard_integration_tests::{ledger, sample_event, sweeper_config, TestAccount, AMAZON_LINUX_AMI, REGION};
use aws_sdk_ec2::types::{
    ImageAttributeName, LaunchPermission, LaunchPermissionModifications, RequestLaunchTemplateData, Tag,
};
use chrono::{DateTime, SubsecRound, Utc};
use orphan_snapshot_sweeper::{handle, Invocation, Ports};
use serde_json::{json, Value};

const ORG: &str = "arn:aws:organizations::111111111111:organization/o-abcdefghij";
const OU: &str = "arn:aws:organizations::111111111111:ou/o-abcdefghij/ou-ab12-11111111";

/// Retirement on, in its three stages (`sweeper_config` asks for one step), every wait at zero:
/// each run advances at most one stage.
const QUICK: [(&str, &str); 4] = [
    ("RETIRE_UNUSED_AMIS_AFTER_DAYS", "0"),
    ("RETIRE_STAGES", "deprecate,disable,deregister"),
    ("RETIRE_DWELL_DAYS", "0"),
    ("USAGE_REPORT_LAG_DAYS", "0"),
];

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// The golden-image account, its consumers, the model and the recording proxy in front of it.
struct World {
    owner: TestAccount,
    model: ImageLifecycle,
    recorder: Proxy,
    /// The sweeper's first run: a whole second (the ledger keeps seconds), after moto made the images.
    start: DateTime<Utc>,
}

impl World {
    async fn new() -> Self {
        let model = ImageLifecycle::start().await;
        let recorder = Proxy::start(&model.proxy().endpoint).await;
        let owner = TestAccount::new().await;
        ledger::create(&owner).await;
        let start = Utc::now().trunc_subsecs(0) + minutes(1);
        Self { owner, model, recorder, start }
    }

    /// One scheduled sweep at `now` with `settings` over [`QUICK`]: the report as JSON.
    async fn run(&self, settings: &[(&str, &str)], now: DateTime<Utc>) -> Value {
        self.model.set_now(now);
        let mut all: Vec<(&str, &str)> = QUICK.to_vec();
        all.extend_from_slice(settings);
        let config = sweeper_config(&all);
        let through = self.owner.through(&self.recorder);
        let regions = vec![(REGION.to_string(), through.ec2())];
        let ledger = ledger::on(&through);
        let sns = through.sns();
        let ports = Ports { regions: &regions, publisher: &sns, ledger: Some(&ledger) };
        let mut event = sample_event("orphan-snapshot-sweeper.scheduled.json");
        event["account"] = json!(self.owner.account_id);
        let invocation = Invocation::at(now).with_deadline(SystemTime::now() + Duration::from_secs(900));
        serde_json::to_value(handle(&config, &ports, &event, &invocation).await.unwrap()).unwrap()
    }

    /// The owner's client straight to moto (what EC2 holds, whatever the model shows).
    fn ec2(&self) -> aws_sdk_ec2::Client {
        self.owner.ec2()
    }

    /// The owner's client through the model (a person's calls, as EC2 answers them).
    fn person(&self) -> aws_sdk_ec2::Client {
        self.owner.through(self.model.proxy()).ec2()
    }

    /// How many calls of `action` the sweeper made so far.
    fn calls(&self, action: &str) -> usize {
        self.recorder.count(action)
    }

    /// An image of a fresh instance, tagged `tags`: its id and its snapshot.
    async fn image(&self, name: &str, tags: &[(&str, &str)]) -> (String, String) {
        let ec2 = self.ec2();
        let instance = self.owner.run_instance(AMAZON_LINUX_AMI, &[]).await;
        let image_id = ec2.create_image().instance_id(instance).name(name).send().await.unwrap().image_id.unwrap();
        if !tags.is_empty() {
            let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect();
            ec2.create_tags().resources(&image_id).set_tags(Some(tags)).send().await.unwrap();
        }
        let described = ec2.describe_images().image_ids(&image_id).send().await.unwrap();
        let snapshot =
            described.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_string();
        (image_id, snapshot)
    }

    /// Shares `image_id` with `accounts`, and with the organisation and the OU when `org`.
    async fn share(&self, image_id: &str, accounts: &[&str], org: bool) {
        let mut add = LaunchPermissionModifications::builder();
        for account in accounts {
            add = add.add(LaunchPermission::builder().user_id(*account).build());
        }
        if org {
            add = add
                .add(LaunchPermission::builder().organization_arn(ORG).build())
                .add(LaunchPermission::builder().organizational_unit_arn(OU).build());
        }
        self.ec2().modify_image_attribute().image_id(image_id).launch_permission(add.build()).send().await.unwrap();
    }

    /// Whom `image_id` is shared with, as EC2 holds it.
    async fn sharing(&self, image_id: &str) -> BTreeSet<String> {
        let described = self
            .ec2()
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(ImageAttributeName::LaunchPermission)
            .send()
            .await
            .unwrap();
        described
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id().or(p.organization_arn()).or(p.organizational_unit_arn()).map(str::to_string))
            .collect()
    }

    /// The image's state as EC2 holds it (`None`: deregistered).
    async fn state(&self, image_id: &str) -> Option<String> {
        let described = self.ec2().describe_images().image_ids(image_id).include_disabled(true).send().await.ok()?;
        described.images().first().and_then(|i| i.state()).map(|s| s.as_str().to_string())
    }

    async fn snapshot_exists(&self, snapshot_id: &str) -> bool {
        let listed = self.ec2().describe_snapshots().owner_ids("self").send().await.unwrap();
        listed.snapshots().iter().any(|s| s.snapshot_id() == Some(snapshot_id))
    }
}

/// The image's entry of `retirement_stages` in the report's (one) region, if any.
fn entry<'a>(report: &'a Value, image_id: &str) -> Option<&'a Value> {
    report["regions"][0]["retirement_stages"].as_array()?.iter().find(|e| e["image_id"] == image_id)
}

/// The image's entry, which must be there.
fn stage<'a>(report: &'a Value, image_id: &str) -> &'a Value {
    entry(report, image_id).unwrap_or_else(|| panic!("{image_id} has no retirement_stages entry: {report:#}"))
}

fn fields(entry: &Value) -> (&str, &str, Option<&str>) {
    (entry["stage"].as_str().unwrap(), entry["change"].as_str().unwrap(), entry["next_stage"].as_str())
}

fn strings(list: &Value) -> BTreeSet<String> {
    list.as_array().map(|l| l.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// A launch template in `account` whose first version launches `image_id`, followed by `more`
/// versions launching another image.
async fn template_naming_at_depth(account: &TestAccount, image_id: &str, more: usize) {
    let ec2 = account.ec2();
    let created = ec2
        .create_launch_template()
        .launch_template_name("golden-web")
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(image_id).build())
        .send()
        .await
        .unwrap();
    let id = created.launch_template().unwrap().launch_template_id().unwrap().to_string();
    for _ in 0..more {
        ec2.create_launch_template_version()
            .launch_template_id(&id)
            .launch_template_data(RequestLaunchTemplateData::builder().image_id(AMAZON_LINUX_AMI).build())
            .send()
            .await
            .unwrap();
    }
}

/// Runs until the image has been considered with an available report: the first run asks for a
/// report, which the consumers' real state then fills; the second reads it. Answers both reports.
async fn with_a_report(
    world: &World,
    consumers: &[&TestAccount],
    settings: &[(&str, &str)],
    at: DateTime<Utc>,
) -> (Value, Value) {
    let asked = world.run(settings, at).await;
    world.model.complete_reports_from(consumers).await;
    let read = world.run(settings, at + minutes(1)).await;
    (asked, read)
}

#[tokio::test]
async fn a_shared_image_one_consumer_account_runs_is_never_deprecated_nor_disabled() {
    let world = World::new().await;
    let (runs, idle) = (TestAccount::new().await, TestAccount::new().await);
    let (golden, snapshot) = world.image("golden-2026-11", &[]).await;
    world.share(&golden, &[&runs.account_id, &idle.account_id], false).await;
    runs.run_instance(&golden, &[]).await;
    template_naming_at_depth(&runs, &golden, 0).await;
    // One entry a page: the sweeper reads every page.
    world.model.set_page_size(1);

    let (asked, read) = with_a_report(&world, &[&runs, &idle], &[], world.start).await;
    let first = stage(&asked, &golden);
    assert_eq!(fields(first).0, "active", "{first}");
    assert_eq!(world.calls("CreateImageUsageReport"), 1, "a shared image waits for EC2's view of every account");
    let second = stage(&read, &golden);
    assert_eq!((second["stage"].as_str(), second["change"].as_str()), (Some("active"), Some("none")), "{second}");
    let uses: BTreeSet<String> = second["evidence"]["usage_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["account_id"].as_str().unwrap(),
                e["resource_type"].as_str().unwrap(),
                e["usage_count"]
            )
        })
        .collect();
    let expected = [format!("{} ec2:Instance 1", runs.account_id), format!("{} ec2:LaunchTemplate 1", runs.account_id)];
    assert_eq!(uses, BTreeSet::from(expected), "{second}");
    assert!(!strings(&second["evidence"]["usage_reports"]).is_empty(), "{second}");
    // Weeks of runs: still in use, never deprecated nor disabled, its sharing untouched.
    for n in 1..=3 {
        let at = world.start + days(7 * n);
        let (_, read) = with_a_report(&world, &[&runs, &idle], &[], at).await;
        assert_eq!(fields(stage(&read, &golden)).0, "active");
    }
    assert_eq!((world.calls("EnableImageDeprecation"), world.calls("DisableImage")), (0, 0));
    assert_eq!(world.model.deprecation(&golden), None);
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));
    assert_eq!(world.sharing(&golden).await, BTreeSet::from([runs.account_id.clone(), idle.account_id.clone()]));
    assert!(world.snapshot_exists(&snapshot).await);
}

#[tokio::test]
async fn an_image_only_a_launch_template_version_15_deep_in_another_account_names_is_kept() {
    let world = World::new().await;
    let templates = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-10", &[]).await;
    world.share(&golden, &[&templates.account_id], false).await;
    template_naming_at_depth(&templates, &golden, 15).await;

    let asked = world.run(&[], world.start).await;
    assert_eq!(fields(stage(&asked, &golden)).0, "active");
    let [report] = world.model.reports_of(&golden).try_into().unwrap_or_else(|r| panic!("one report: {r:?}"));
    assert_eq!(report.version_depth(), Some(20), "USAGE_REPORT_TEMPLATE_DEPTH's default");
    assert!(report.account_ids.is_empty(), "every account");
    world.model.complete_reports_from(&[&templates]).await;
    let read = world.run(&[], world.start + minutes(1)).await;
    let kept = stage(&read, &golden);
    assert_eq!((kept["stage"].as_str(), kept["change"].as_str()), (Some("active"), Some("none")), "{kept}");
    assert_eq!(
        kept["evidence"]["usage_entries"],
        json!([{"account_id": templates.account_id, "resource_type": "ec2:LaunchTemplate", "usage_count": 1}])
    );
    assert_eq!((world.calls("EnableImageDeprecation"), world.calls("DisableImage")), (0, 0));
    assert_eq!(world.model.deprecation(&golden), None);
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));
}

#[tokio::test]
async fn unused_everywhere_it_goes_deprecated_disabled_deregistered_and_its_snapshot_is_deleted() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, snapshot) = world.image("golden-2026-01", &[]).await;
    world.share(&golden, &[&consumer.account_id], true).await;
    // Deprecated, on a report made after it became a candidate that shows no use anywhere.
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start).await;
    let deprecated = stage(&read, &golden);
    assert_eq!(fields(deprecated), ("deprecated", "advanced", Some("disabled")), "{deprecated}");
    let since: DateTime<Utc> = deprecated["since"].as_str().unwrap().parse().unwrap();
    assert_eq!(since, world.start + minutes(1), "the stage is dated by the run's clock: {deprecated}");
    let time = world.model.deprecation(&golden).expect("EnableImageDeprecation");
    assert!(
        time >= world.start && time <= world.model.now() + minutes(1),
        "deprecated at its clock's next minute: {time}"
    );
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"), "launches still work");
    assert_eq!(read["totals"]["retirement_stages"]["deprecated"]["images"], 1, "{:#}", read["totals"]);
    let region_totals = &read["regions"][0]["retirement_stage_totals"]["deprecated"];
    assert_eq!(region_totals["images"], 1, "{region_totals}");
    assert!(region_totals["gib"].as_f64().is_some_and(|g| g > 0.0), "what it holds: {region_totals}");
    assert!(region_totals["monthly_cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{region_totals}");
    assert!(world.model.reports_of(&golden).is_empty(), "the report amiguard made is deleted once read");

    // Disabled, on a report made after the deprecation.
    let (asked, read) = with_a_report(&world, &[&consumer], &[], world.start + minutes(2)).await;
    assert_eq!(fields(stage(&asked, &golden)).0, "deprecated", "no report newer than the stage yet");
    let disabled = stage(&read, &golden);
    assert_eq!(fields(disabled), ("disabled", "advanced", Some("deregistered")), "{disabled}");
    assert_eq!(world.state(&golden).await.as_deref(), Some("disabled"));
    assert!(world.sharing(&golden).await.is_empty(), "EC2 removed its launch permissions");
    assert_eq!(read["totals"]["retirement_stages"]["disabled"]["images"], 1);

    // Deregistered, on a report made after the disabling; its snapshot then a witnessed orphan.
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start + minutes(4)).await;
    let gone = stage(&read, &golden);
    assert_eq!(fields(gone).0, "deregistered", "{gone}");
    assert_eq!(fields(gone).1, "advanced", "{gone}");
    assert_eq!(world.state(&golden).await, None);
    let mut deleted = strings(&read["regions"][0]["deleted"]);
    if !deleted.contains(&snapshot) {
        let after = world.run(&[], world.start + minutes(6)).await;
        deleted = strings(&after["regions"][0]["deleted"]);
    }
    assert!(deleted.contains(&snapshot), "the snapshot is deleted as a witnessed orphan: {deleted:?}");
    assert!(!world.snapshot_exists(&snapshot).await);
    // Each stage waited for its own report: three reports asked.
    assert_eq!(world.calls("CreateImageUsageReport"), 3);
}

#[tokio::test]
async fn every_usage_report_amiguard_asked_for_is_deleted_once_read() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-07", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    for (n, taken) in ["deprecated", "disabled", "deregistered"].iter().enumerate() {
        let (_, read) = with_a_report(&world, &[&consumer], &[], world.start + minutes(2 * n as i64)).await;
        assert_eq!(fields(stage(&read, &golden)).0, *taken);
    }
    assert_eq!(world.calls("CreateImageUsageReport"), 3);
    assert!(world.model.reports().is_empty(), "left behind: {:?}", world.model.reports());
}

#[tokio::test]
async fn a_launch_while_deprecated_undoes_the_deprecation_for_good() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-02", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    let (private, _) = world.image("private", &[]).await;
    // Real thresholds: unused for 30 days; the clock starts 31 days after the image was made.
    let settings = [("RETIRE_UNUSED_AMIS_AFTER_DAYS", "30")];
    let start = world.start + days(31);
    let asked = world.run(&settings, start).await;
    assert_eq!(fields(stage(&asked, &private)).0, "deprecated", "unshared: the account's own evidence");
    // The private one is launched in the owner's account right after: EC2's LastLaunchedTime
    // (which moto lacks, written into DescribeImages as EC2 states it) is after its stage began.
    let launched = amiguard::ledger::store::format_time(start + chrono::Duration::seconds(30));
    let id = format!("<imageId>{private}</imageId>");
    world.recorder.inject(amiguard_integration_tests::proxy::Fault::rewrite(
        "DescribeImages",
        id.clone(),
        format!("{id}<lastLaunchedTime>{launched}</lastLaunchedTime>"),
    ));
    world.model.complete_reports_from(&[&consumer]).await;
    let read = world.run(&settings, start + minutes(1)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated");
    assert!(world.model.deprecation(&golden).is_some());
    let private_undone = stage(&read, &private);
    assert_eq!(fields(private_undone).1, "undone", "{private_undone}");
    assert_eq!(fields(private_undone).0, "active", "{private_undone}");
    assert!(private_undone["why_stopped"].as_str().is_some_and(|w| w.contains("LastLaunchedTime")), "{private_undone}");
    assert_eq!(world.model.deprecation(&private), None);
    assert_eq!(world.state(&private).await.as_deref(), Some("available"));

    // A consumer launches the shared one while it is deprecated (launches still work): the next
    // report shows it.
    consumer.run_instance(&golden, &[]).await;
    let (_, read) = with_a_report(&world, &[&consumer], &settings, start + days(1)).await;
    let undone = stage(&read, &golden);
    assert_eq!(fields(undone).0, "active", "{undone}");
    assert_eq!(fields(undone).1, "undone", "{undone}");
    assert!(undone["why_stopped"].as_str().is_some_and(|w| w.contains(&consumer.account_id)), "{undone}");
    assert_eq!(world.model.deprecation(&golden), None, "amiguard removed its deprecation");
    assert_eq!(world.calls("DisableImageDeprecation"), 2);

    // Not considered again for RETIRE_UNUSED_AMIS_AFTER_DAYS: no new report, no deprecation.
    let asked_before = world.calls("CreateImageUsageReport");
    for n in 2..5 {
        let later = world.run(&settings, start + days(n)).await;
        assert!(entry(&later, &golden).is_none_or(|e| e["change"] == "none"), "{later:#}");
    }
    assert_eq!(world.calls("CreateImageUsageReport"), asked_before);
    assert_eq!(world.calls("EnableImageDeprecation"), 2);
    assert_eq!((world.model.deprecation(&golden), world.model.deprecation(&private)), (None, None));
}

#[tokio::test]
async fn use_seen_while_disabled_enables_it_again_with_exactly_its_recorded_sharing() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-06", &[]).await;
    world.share(&golden, &[&consumer.account_id], true).await;
    let shared = world.sharing(&golden).await;
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated");
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start + minutes(2)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "disabled");

    // A consumer's launch template names it (a launch would fail: it is disabled).
    template_naming_at_depth(&consumer, &golden, 0).await;
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start + minutes(4)).await;
    let undone = stage(&read, &golden);
    assert_eq!(fields(undone).1, "undone", "{undone}");
    assert_eq!(fields(undone).0, "active", "{undone}");
    assert!(undone["why_stopped"].as_str().is_some_and(|w| w.contains(&consumer.account_id)), "{undone}");
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"), "enabled again");
    assert_eq!(world.sharing(&golden).await, shared, "exactly the accounts, organisation and OU recorded");
}

/// A shared image taken to `disabled` by two stages of quick runs from `start`.
async fn disabled_by_amiguard(
    world: &World,
    consumer: &TestAccount,
    settings: &[(&str, &str)],
    start: DateTime<Utc>,
) -> String {
    let (golden, _) = world.image("golden-disabled", &[]).await;
    world.share(&golden, &[&consumer.account_id], true).await;
    let (_, read) = with_a_report(world, &[consumer], settings, start).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated");
    let (_, read) = with_a_report(world, &[consumer], settings, start + minutes(2)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "disabled");
    golden
}

#[tokio::test]
async fn undoing_a_disabled_image_removes_amiguards_deprecation_too() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let golden = disabled_by_amiguard(&world, &consumer, &[], world.start).await;
    template_naming_at_depth(&consumer, &golden, 0).await;
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start + minutes(4)).await;
    assert_eq!(fields(stage(&read, &golden)).1, "undone");
    assert_eq!(world.model.deprecation(&golden), None, "amiguard's deprecation is undone with its disabling");
}

#[tokio::test]
async fn a_persons_enable_image_removes_amiguards_deprecation_too() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let golden = disabled_by_amiguard(&world, &consumer, &[], world.start).await;
    world.person().enable_image().image_id(&golden).send().await.unwrap();
    let after = world.run(&[], world.start + minutes(4)).await;
    assert_eq!(fields(stage(&after, &golden)).1, "ended_by_person");
    assert_eq!(world.model.deprecation(&golden), None, "amiguard's deprecation ends with its retirement");
}

#[tokio::test]
async fn a_persons_enable_image_brings_back_exactly_its_recorded_sharing_and_ends_the_retirement() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, snapshot) = world.image("golden-2026-03", &[]).await;
    world.share(&golden, &[&consumer.account_id], true).await;
    let shared = world.sharing(&golden).await;
    assert_eq!(shared, BTreeSet::from([consumer.account_id.clone(), ORG.to_string(), OU.to_string()]));
    // Real thresholds: unused for 30 days; the clock starts 31 days after the image was made.
    let settings = [("RETIRE_UNUSED_AMIS_AFTER_DAYS", "30")];
    let start = world.start + days(31);
    let (_, read) = with_a_report(&world, &[&consumer], &settings, start).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated");
    let (_, read) = with_a_report(&world, &[&consumer], &settings, start + minutes(2)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "disabled");
    assert!(world.sharing(&golden).await.is_empty());

    // A person enables it again: EC2 gives back none of its sharing.
    world.person().enable_image().image_id(&golden).send().await.unwrap();
    assert!(world.sharing(&golden).await.is_empty());
    let after = world.run(&settings, start + minutes(4)).await;
    let ended = stage(&after, &golden);
    assert_eq!(fields(ended).1, "ended_by_person", "{ended}");
    assert_eq!(fields(ended).0, "active", "{ended}");
    assert!(ended["why_stopped"].is_string(), "{ended}");
    assert_eq!(world.sharing(&golden).await, shared, "exactly the accounts, organisation and OU recorded");
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));

    // The retirement is over: later runs neither ask for a report nor take a stage.
    let asked = world.calls("CreateImageUsageReport");
    for n in 1..4 {
        world.run(&settings, start + days(n)).await;
    }
    assert_eq!(world.calls("CreateImageUsageReport"), asked);
    assert_eq!(world.calls("DisableImage"), 1);
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));
    assert!(world.snapshot_exists(&snapshot).await);
}

#[tokio::test]
async fn a_deprecation_a_person_set_is_left_alone() {
    let world = World::new().await;
    let (mine, _) = world.image("deprecated-by-hand", &[]).await;
    let (unused, _) = world.image("unused", &[]).await;
    let at = world.start + days(30) + chrono::Duration::seconds(20);
    world.model.set_now(world.start);
    let sdk_at = aws_smithy_types::DateTime::from_secs(at.timestamp());
    world.person().enable_image_deprecation().image_id(&mine).deprecate_at(sdk_at).send().await.unwrap();
    let set = world.model.deprecation(&mine).unwrap();

    for n in 0..3 {
        let report = world.run(&[], world.start + minutes(n)).await;
        assert!(entry(&report, &mine).is_none_or(|e| e["change"] == "none"), "{report:#}");
    }
    assert_eq!(world.model.deprecation(&mine), Some(set), "neither removed nor moved");
    assert_eq!(world.calls("DisableImageDeprecation"), 0);
    assert_eq!(world.state(&mine).await.as_deref(), Some("available"), "never disabled");
    // The unshared, unused one beside it went through its stages meanwhile.
    assert_ne!(world.state(&unused).await.as_deref(), Some("available"));
    assert_eq!(world.calls("EnableImageDeprecation"), 1, "only the unused image's");
}

#[tokio::test]
async fn a_pending_or_failed_report_advances_nothing() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-04", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;

    world.run(&[], world.start).await;
    let [pending] = world.model.reports_of(&golden).try_into().unwrap_or_else(|r| panic!("one report: {r:?}"));
    let waiting = world.run(&[], world.start + minutes(1)).await;
    let entry = stage(&waiting, &golden);
    assert_eq!(fields(entry), ("active", "none", Some("deprecated")), "{entry}");
    assert!(entry["waiting_for"].as_str().is_some_and(|w| w.contains("pending")), "{entry}");
    assert_eq!(world.model.reports_of(&golden).len(), 1, "at most one live report per image");

    world.model.fail_report(&pending.report_id, "internal error");
    let failed = world.run(&[], world.start + minutes(2)).await;
    assert_eq!(fields(stage(&failed, &golden)).0, "active");
    assert_eq!(world.calls("EnableImageDeprecation"), 0);
    assert_eq!(world.model.deprecation(&golden), None);
}

#[tokio::test]
async fn a_report_older_than_the_stage_plus_the_lag_or_expired_advances_nothing() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-05", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    // The defaults: 14 days' dwell, 3 days' lag.
    let real = [("RETIRE_DWELL_DAYS", "14"), ("USAGE_REPORT_LAG_DAYS", "3")];
    let t = world.start;
    let (_, read) = with_a_report(&world, &[&consumer], &real, t).await;
    let deprecated = stage(&read, &golden);
    assert_eq!(fields(deprecated), ("deprecated", "advanced", Some("disabled")), "{deprecated}");
    let since: DateTime<Utc> = deprecated["since"].as_str().unwrap().parse().unwrap();

    // A report a person made a day after the deprecation (before the lag is over) shows no use.
    world.model.set_now(since + days(1));
    let early = world
        .person()
        .create_image_usage_report()
        .image_id(&golden)
        .resource_types(
            aws_sdk_ec2::types::ImageUsageResourceTypeRequest::builder().resource_type("ec2:Instance").build(),
        )
        .send()
        .await
        .unwrap();
    world.model.complete_reports_from(&[&consumer]).await;
    let dwelling = world.run(&real, since + days(2)).await;
    let entry = stage(&dwelling, &golden);
    assert_eq!(fields(entry).0, "deprecated");
    let next_at: DateTime<Utc> = entry["next_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(next_at, since + days(14), "the dwell's end: {entry}");
    // The dwell over: that report is too old to tell (launch templates lag), nothing advances.
    let stale = world.run(&real, since + days(15)).await;
    let entry = stage(&stale, &golden);
    assert_eq!(fields(entry), ("deprecated", "none", Some("disabled")), "{entry}");
    // (A person's report, instances only, is no evidence at all: amiguard asks for its own.)
    assert_eq!(entry["waiting_for"], "no usage report yet", "{entry}");
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));
    assert_eq!(world.calls("DisableImage"), 0);
    assert!(world.model.reports().iter().any(|r| r.report_id == early.report_id().unwrap()), "not amiguard's: kept");

    // Its own report, made now, is then pending; completed, but read 30 days on: expired.
    world.model.complete_reports_from(&[&consumer]).await;
    let expired = world.run(&real, since + days(15) + days(30)).await;
    assert_eq!(fields(stage(&expired, &golden)).0, "deprecated");
    assert_eq!(world.calls("DisableImage"), 0);
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));
}

#[tokio::test]
async fn the_newest_image_of_a_family_survives() {
    let world = World::new().await;
    let family = [("RETIRE_FAMILY_TAG", "golden:family")];
    let mut images = Vec::new();
    for n in 0..3 {
        images.push(world.image(&format!("web-{n}"), &[("golden:family", "web")]).await.0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (loner, _) = world.image("no-family", &[]).await;
    // The newest by EC2's creation date (then id), as the family rule reads it.
    let described = world.ec2().describe_images().set_image_ids(Some(images.clone())).send().await.unwrap();
    let newest = described
        .images()
        .iter()
        .max_by_key(|i| (i.creation_date().unwrap().to_string(), i.image_id().unwrap().to_string()))
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();

    let mut report = Value::Null;
    for n in 0..4 {
        report = world.run(&family, world.start + minutes(n)).await;
    }
    assert_eq!(world.state(&newest).await.as_deref(), Some("available"), "{report:#}");
    assert_eq!(world.model.deprecation(&newest), None);
    assert!(entry(&report, &newest).is_none_or(|e| e["stage"] == "active"), "{report:#}");
    for older in images.iter().filter(|i| **i != newest).chain([&loner]) {
        assert_ne!(world.state(older).await.as_deref(), Some("available"), "{older} retires: {report:#}");
    }
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_previews_each_stage() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-shared", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    let (private, private_snapshot) = world.image("private", &[]).await;
    let dry = [("DRY_RUN", "true")];
    let mutating = [
        "CreateImageUsageReport",
        "DeleteImageUsageReport",
        "EnableImageDeprecation",
        "DisableImageDeprecation",
        "DisableImage",
        "EnableImage",
        "ModifyImageAttribute",
        "DeregisterImage",
        "DeleteSnapshot",
        "CreateTags",
    ];
    let changes = |world: &World| mutating.iter().map(|a| world.calls(a)).sum::<usize>();

    // Nothing retired yet: the dry run previews the first stage, and asks EC2 for no report.
    let preview = world.run(&dry, world.start).await;
    let entry = stage(&preview, &private);
    assert_eq!(fields(entry), ("active", "would_advance", Some("deprecated")), "{entry}");
    assert_eq!(fields(stage(&preview, &golden)).0, "active");
    assert_eq!(preview["regions"][0]["counts"]["retirement_stages"], 2, "{:#}", preview["regions"][0]["counts"]);
    assert_eq!(changes(&world), 0);
    assert!(world.model.reports().is_empty(), "a dry run creates no usage report");
    assert_eq!(world.model.deprecation(&private), None);

    // Each later stage previewed the same way, from the state real runs left.
    let mut at = world.start;
    for (taken, next) in [("deprecated", "disabled"), ("disabled", "deregistered")] {
        at += minutes(1);
        let real = world.run(&[], at).await;
        assert_eq!(fields(stage(&real, &private)).0, taken, "{real:#}");
        let before = (changes(&world), world.state(&private).await, world.model.deprecation(&private));
        at += minutes(1);
        let preview = world.run(&dry, at).await;
        let entry = stage(&preview, &private);
        assert_eq!(fields(entry), (taken, "would_advance", Some(next)), "{entry}");
        let after = (changes(&world), world.state(&private).await, world.model.deprecation(&private));
        assert_eq!(before, after, "the dry run changed nothing");
    }
    assert!(world.snapshot_exists(&private_snapshot).await);
    assert_eq!(world.sharing(&golden).await, BTreeSet::from([consumer.account_id.clone()]));
}

#[tokio::test]
async fn a_report_made_before_the_image_became_a_candidate_or_over_some_accounts_only_advances_nothing() {
    let world = World::new().await;
    let (listed, other) = (TestAccount::new().await, TestAccount::new().await);
    let (golden, _) = world.image("golden-2026-08", &[]).await;
    world.share(&golden, &[&listed.account_id, &other.account_id], true).await;
    let instances =
        || aws_sdk_ec2::types::ImageUsageResourceTypeRequest::builder().resource_type("ec2:Instance").build();

    // A person's report from before amiguard considered the image, showing no use.
    world.model.set_now(world.start - minutes(30));
    world.person().create_image_usage_report().image_id(&golden).resource_types(instances()).send().await.unwrap();
    world.model.complete_reports_from(&[&listed, &other]).await;
    let first = world.run(&[], world.start).await;
    assert_eq!(fields(stage(&first, &golden)).0, "active", "older than the candidate: no evidence");
    assert_eq!(world.model.deprecation(&golden), None);

    // amiguard's own report stays pending; a person's newer one over one account only shows no use.
    world.model.set_now(world.start + minutes(1));
    world
        .person()
        .create_image_usage_report()
        .image_id(&golden)
        .resource_types(instances())
        .account_ids(&listed.account_id)
        .send()
        .await
        .unwrap();
    let partial: Vec<String> = world
        .model
        .reports_of(&golden)
        .into_iter()
        .filter(|r| !r.account_ids.is_empty())
        .map(|r| r.report_id)
        .collect();
    world.model.complete_report(&partial[0], Vec::new());
    // Three reports of the image, one a page: the sweeper still finds its own pending one.
    world.model.set_page_size(1);
    let second = world.run(&[], world.start + minutes(2)).await;
    assert_eq!(world.calls("CreateImageUsageReport"), 1, "at most one live report of amiguard's per image");
    let entry = stage(&second, &golden);
    assert_eq!(fields(entry).0, "active", "it does not cover every account it is shared with: {entry}");
    assert_eq!((world.calls("EnableImageDeprecation"), world.model.deprecation(&golden)), (0, None));
    assert_eq!(world.sharing(&golden).await.len(), 4);
}

#[tokio::test]
async fn a_person_removing_amiguards_deprecation_ends_the_retirement() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-2026-09", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    let settings = [("RETIRE_UNUSED_AMIS_AFTER_DAYS", "30")];
    let start = world.start + days(31);
    let (_, read) = with_a_report(&world, &[&consumer], &settings, start).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated");

    world.model.set_now(start + minutes(5));
    world.person().disable_image_deprecation().image_id(&golden).send().await.unwrap();
    let after = world.run(&settings, start + minutes(10)).await;
    let ended = stage(&after, &golden);
    assert_eq!(fields(ended).1, "ended_by_person", "{ended}");
    assert!(ended["why_stopped"].is_string(), "{ended}");
    // Not deprecated again, nor asked about, for RETIRE_UNUSED_AMIS_AFTER_DAYS.
    let asked = world.calls("CreateImageUsageReport");
    for n in 1..4 {
        world.model.complete_reports_from(&[&consumer]).await;
        world.run(&settings, start + days(n)).await;
    }
    assert_eq!(world.calls("CreateImageUsageReport"), asked);
    assert_eq!((world.calls("EnableImageDeprecation"), world.model.deprecation(&golden)), (1, None));
    assert_eq!(world.state(&golden).await.as_deref(), Some("available"));
}

#[tokio::test]
async fn with_the_default_dwell_and_lag_each_stage_waits_its_days() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, snapshot) = world.image("golden-2026-10", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    let defaults = [("RETIRE_DWELL_DAYS", "14"), ("USAGE_REPORT_LAG_DAYS", "3")];
    let since = |entry: &Value| -> DateTime<Utc> { entry["since"].as_str().unwrap().parse().unwrap() };
    let next_at = |entry: &Value| -> DateTime<Utc> { entry["next_at"].as_str().unwrap().parse().unwrap() };

    let (_, read) = with_a_report(&world, &[&consumer], &defaults, world.start).await;
    let deprecated = stage(&read, &golden);
    assert_eq!(fields(deprecated), ("deprecated", "advanced", Some("disabled")), "{deprecated}");
    let d = since(deprecated);
    assert_eq!(next_at(deprecated), d + days(14), "{deprecated}");

    // A day in: it dwells, and asks EC2 for nothing yet.
    let dwelling = world.run(&defaults, d + days(1)).await;
    assert_eq!(fields(stage(&dwelling, &golden)), ("deprecated", "none", Some("disabled")));
    assert_eq!(world.calls("CreateImageUsageReport"), 1);
    // Just before the dwell ends: still deprecated.
    let (_, read) = with_a_report(&world, &[&consumer], &defaults, d + days(14) - minutes(2)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated", "{read:#}");
    assert_eq!(world.calls("DisableImage"), 0);

    // The dwell over: a report made now (later than the stage + the lag) shows no use: disabled.
    let (_, read) = with_a_report(&world, &[&consumer], &defaults, d + days(14)).await;
    let disabled = stage(&read, &golden);
    assert_eq!(fields(disabled), ("disabled", "advanced", Some("deregistered")), "{disabled}");
    let e = since(disabled);
    assert!(e >= d + days(14), "{disabled}");
    assert_eq!(next_at(disabled), e + days(14), "{disabled}");
    assert_eq!(world.state(&golden).await.as_deref(), Some("disabled"));

    let (_, read) = with_a_report(&world, &[&consumer], &defaults, e + days(7)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "disabled");
    let (_, read) = with_a_report(&world, &[&consumer], &defaults, e + days(14)).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deregistered", "{read:#}");
    assert_eq!(world.state(&golden).await, None);
    let after = world.run(&defaults, e + days(15)).await;
    let deleted: BTreeSet<String> = [&read, &after].iter().flat_map(|r| strings(&r["regions"][0]["deleted"])).collect();
    assert!(deleted.contains(&snapshot), "{deleted:?}");
}

/// A person's DisableImage on an image amiguard deprecated (EC2 then empties its launch
/// permissions): amiguard's retirement ends there, untouched; the emptied permissions are never
/// read as "not shared", and it is neither disabled again nor deregistered.
#[tokio::test]
async fn a_persons_disable_image_on_an_image_amiguard_deprecated_ends_the_retirement() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, snapshot) = world.image("golden-held", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    let (_, read) = with_a_report(&world, &[&consumer], &[], world.start).await;
    assert_eq!(fields(stage(&read, &golden)).0, "deprecated");
    world.person().disable_image().image_id(&golden).send().await.unwrap();
    assert_eq!(world.state(&golden).await.as_deref(), Some("disabled"));
    let next = world.run(&[], world.start + minutes(2)).await;
    let ended = stage(&next, &golden);
    assert_eq!(ended["change"], "ended_by_person", "{ended}");
    assert!(ended["why_stopped"].as_str().is_some_and(|w| w.contains("found disabled")), "{ended}");
    for n in 4..8 {
        world.run(&[], world.start + minutes(n)).await;
    }
    assert_eq!((world.calls("DisableImage"), world.calls("DeregisterImage")), (0, 0));
    assert_eq!(world.state(&golden).await.as_deref(), Some("disabled"), "left as the person left it");
    assert!(world.snapshot_exists(&snapshot).await);
}

/// A report someone else made (every account, instances and launch templates 20 deep, no use) is
/// no evidence: only the report amiguard asked for (the ledger's id) advances a shared image.
#[tokio::test]
async fn a_report_someone_else_made_advances_nothing() {
    let world = World::new().await;
    let consumer = TestAccount::new().await;
    let (golden, _) = world.image("golden-others-report", &[]).await;
    world.share(&golden, &[&consumer.account_id], false).await;
    world.run(&[], world.start).await;
    assert_eq!(world.calls("CreateImageUsageReport"), 1);
    // A person deletes amiguard's report and makes one of their own, as full as amiguard's.
    let [own] = world.model.reports_of(&golden).try_into().unwrap_or_else(|r| panic!("one report: {r:?}"));
    world.person().delete_image_usage_report().report_id(&own.report_id).send().await.unwrap();
    let depth = aws_sdk_ec2::types::ImageUsageResourceTypeOptionRequest::builder()
        .option_name("version-depth")
        .option_values("20")
        .build();
    world
        .person()
        .create_image_usage_report()
        .image_id(&golden)
        .resource_types(
            aws_sdk_ec2::types::ImageUsageResourceTypeRequest::builder().resource_type("ec2:Instance").build(),
        )
        .resource_types(
            aws_sdk_ec2::types::ImageUsageResourceTypeRequest::builder()
                .resource_type("ec2:LaunchTemplate")
                .resource_type_options(depth)
                .build(),
        )
        .send()
        .await
        .unwrap();
    world.model.complete_reports_from(&[&consumer]).await;
    let read = world.run(&[], world.start + minutes(1)).await;
    let waiting = stage(&read, &golden);
    assert_eq!(fields(waiting).0, "active", "{waiting}");
    assert_eq!(world.model.deprecation(&golden), None);
    assert_eq!(world.calls("CreateImageUsageReport"), 2, "its own asked for again");
}
