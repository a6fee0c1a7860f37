//! snapshot-on-stop acts only on what it verified (issue 21), on moto: the stop time that names
//! an image and orders retention is EC2's, never an event's alone; a launch template it did not
//! make is never changed; an image made while the ledger failed is adopted by EC2's own proof;
//! `amiguard:created-by` is written only on what it is creating.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use amiguard::invocation::Invocation;
use amiguard::ledger::dynamo::DynamoLedger;
use amiguard::tags;
use amiguard_integration_tests::proxy::{Call, Fault, Proxy};
use amiguard_integration_tests::{ec2_says_stopped_at, ec2_states_transition_reason, ledger, moto, TestAccount};
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use snapshot_on_stop::{handle, records, Config, Ec2Client, MadeImage, Outcome, Ports, SnapshotScope};

const OPT_IN: (&str, &str) = ("amiguard:snapshot-on-stop", "true");

fn keep(last: usize) -> Config {
    Config { scope: SnapshotScope::Tagged, keep_last: last, ..Config::default() }
}

/// The sample stop event of `instance_id` dated `time`, and nothing else: what EC2 says of the
/// stop is left as it is.
fn event_at(instance_id: &str, time: DateTime<Utc>) -> Value {
    let mut event = amiguard_integration_tests::sample_event("snapshot-on-stop.stopped.json");
    event["detail"]["instance-id"] = json!(instance_id);
    event["time"] = json!(rfc3339(time));
    event
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn image_name(instance_id: &str, stopped_at: DateTime<Utc>) -> String {
    format!("amiguard-{instance_id}-{}", stopped_at.format("%Y%m%dT%H%M%SZ"))
}

/// Whole seconds, as EC2 states a stop time.
fn seconds(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(time.timestamp(), 0).unwrap()
}

/// The stop time moto states for the instance (`User initiated (2026-12-07 13:54:12 UTC)`): when
/// StopInstances ran.
async fn moto_stop_time(account: &TestAccount, instance_id: &str) -> DateTime<Utc> {
    let output = account.ec2().describe_instances().instance_ids(instance_id).send().await.unwrap();
    let reason = output.reservations()[0].instances()[0].state_transition_reason().unwrap().to_string();
    let inner = reason.strip_prefix("User initiated (").and_then(|r| r.strip_suffix(" UTC)")).unwrap_or_else(|| {
        panic!("moto's StateTransitionReason changed form: {reason:?}");
    });
    chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%d %H:%M:%S").unwrap().and_utc()
}

/// snapshot-on-stop's ports, EC2 and the ledger both through `proxy` (to record or refuse them).
async fn through(account: &TestAccount, proxy: &Proxy) -> Ports<Ec2Client, DynamoLedger> {
    ledger::create(account).await;
    let through = account.through(proxy);
    Ports {
        ec2: Ec2Client::new(through.ec2()),
        ledger: Some(ledger::on(&through)),
        alerts: None,
        region: account.region.clone(),
        findings: None,
    }
}

/// The calls among `calls` that change something in EC2 or the ledger.
fn changes(calls: &[Call]) -> Vec<String> {
    const EC2_WRITES: [&str; 9] =
        ["Create", "Delete", "Deregister", "Modify", "Enable", "Disable", "Register", "Copy", "Reset"];
    const LEDGER_WRITES: [&str; 5] = ["PutItem", "DeleteItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems"];
    calls
        .iter()
        .filter(|c| match c.service.as_str() {
            "ec2" => EC2_WRITES.iter().any(|w| c.action.starts_with(w)),
            "dynamodb" => LEDGER_WRITES.contains(&c.action.as_str()),
            _ => false,
        })
        .map(|c| format!("{}:{}", c.service, c.action))
        .collect()
}

async fn own_image_ids(account: &TestAccount) -> Vec<String> {
    let output = account.ec2().describe_images().owners("self").send().await.unwrap();
    let mut ids: Vec<String> = output.images().iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    ids.sort();
    ids
}

// ---- 4. the stop time is EC2's ----

#[tokio::test]
async fn a_stop_event_dated_in_the_future_or_far_from_ec2s_stop_changes_nothing_in_ec2_or_the_ledger() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let stopped = moto_stop_time(&account, &instance).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let keep_one = keep(1);
    let real = handle(&ports, &keep_one, event_at(&instance, stopped), &Invocation::at(Utc::now())).await.unwrap();
    assert_eq!(real.outcome, Outcome::Created);
    assert_eq!(real.image_name, Some(image_name(&instance, stopped)));
    let images = own_image_ids(&account).await;
    let recorded = records::read(ports.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();

    // A direct invoke can say anything: 2099 would make an image that counts as the newest
    // forever (KEEP_LAST=1 would then retire every real one); 20 minutes before EC2's stop, an
    // image of another stop than the one EC2 knows.
    let far_future: DateTime<Utc> = "2099-01-01T00:00:00Z".parse().unwrap();
    let soon = seconds(Utc::now() + Duration::minutes(5));
    for (forged, why) in [
        (far_future, "in the future"),
        (soon, "in the future"),
        (stopped - Duration::minutes(20), "more than 15 minutes"),
    ] {
        let calls_before = proxy.calls().len();
        let report = handle(&ports, &keep_one, event_at(&instance, forged), &Invocation::at(Utc::now())).await.unwrap();
        assert_eq!(report.outcome, Outcome::Skipped, "{forged}: {report:?}");
        let reason = report.reason.clone().unwrap();
        assert!(reason.contains(&rfc3339(forged)) && reason.contains(&rfc3339(stopped)), "both times: {reason}");
        assert!(reason.contains(why), "{reason}");
        assert!(report.image_id.is_none() && report.retired_images.is_empty() && report.adopted_images.is_empty());
        assert_eq!(changes(&proxy.calls()[calls_before..]), Vec::<String>::new(), "{forged}: nothing written");
    }
    assert_eq!(own_image_ids(&account).await, images);
    let after = records::read(ports.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    assert_eq!(after, recorded);
}

#[tokio::test]
async fn the_image_is_named_by_ec2s_stop_time_and_every_delivery_of_that_stop_finds_it() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let stopped = moto_stop_time(&account, &instance).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;

    // EventBridge's time lags EC2's a little; a direct invoke may be off by minutes: within 15
    // minutes of EC2's, the stop is EC2's.
    let first =
        handle(&ports, &keep(3), event_at(&instance, stopped - Duration::minutes(10)), &Invocation::at(Utc::now()))
            .await
            .unwrap();
    assert_eq!(first.outcome, Outcome::Created);
    assert_eq!(first.image_name, Some(image_name(&instance, stopped)), "EC2's time, not the event's");
    for lag in [0, 14] {
        let event = event_at(&instance, stopped - Duration::minutes(lag));
        let again = handle(&ports, &keep(3), event, &Invocation::at(Utc::now())).await.unwrap();
        assert_eq!((again.outcome, again.image_id.clone()), (Outcome::AlreadyCreated, first.image_id.clone()));
    }
    assert_eq!(own_image_ids(&account).await.len(), 1);
    let recorded = records::read(ports.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    assert_eq!(recorded.images.iter().map(|r| r.stopped_at).collect::<Vec<_>>(), [stopped], "one record, EC2's time");
    let image = account.ec2().describe_images().image_ids(first.image_id.unwrap()).send().await.unwrap();
    let stopped_at_tag = tags::value(&tags::from_sdk(image.images()[0].tags()), tags::STOPPED_AT).map(str::to_string);
    assert_eq!(stopped_at_tag, Some(rfc3339(stopped)));
}

#[tokio::test]
async fn where_ec2_states_no_stop_time_the_events_serves_only_if_not_in_the_future_nor_before_the_last_recorded_stop() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let recorded_stop = seconds(Utc::now() - Duration::hours(2));
    ec2_says_stopped_at(&instance, &rfc3339(recorded_stop));
    let first =
        handle(&ports, &keep(3), event_at(&instance, recorded_stop), &Invocation::at(Utc::now())).await.unwrap();
    assert_eq!(first.outcome, Outcome::Created);

    // Some stops carry no time in StateTransitionReason (AWS's own, say).
    ec2_states_transition_reason(&instance, "Server.ScheduledStop: Stopped due to scheduled retirement");
    let images = own_image_ids(&account).await;
    let recorded = records::read(ports.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    let earlier = recorded_stop - Duration::hours(1);
    let later_today = seconds(Utc::now() + Duration::hours(1));
    for (refused, why) in [(earlier, &rfc3339(recorded_stop)), (later_today, &"in the future".to_string())] {
        let calls_before = proxy.calls().len();
        let report = handle(&ports, &keep(3), event_at(&instance, refused), &Invocation::at(Utc::now())).await.unwrap();
        assert_eq!(report.outcome, Outcome::Skipped, "{refused}: {report:?}");
        let reason = report.reason.unwrap();
        assert!(reason.contains(&rfc3339(refused)) && reason.contains(why.as_str()), "{reason}");
        assert_eq!(changes(&proxy.calls()[calls_before..]), Vec::<String>::new(), "{refused}: nothing written");
    }
    assert_eq!(own_image_ids(&account).await, images);
    assert_eq!(records::read(ports.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap(), recorded);

    // Not in the future, after the last recorded stop: the event's time is all there is.
    let served = recorded_stop + Duration::hours(1);
    let report = handle(&ports, &keep(3), event_at(&instance, served), &Invocation::at(Utc::now())).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!(report.image_name, Some(image_name(&instance, served)));
}

// ---- 7. a template someone else made is never taken over ----

/// `amiguard-<instance>` made by someone else first (a name is no secret): two versions, the
/// first the default. Answers its id.
async fn someone_elses_template(account: &TestAccount, instance: &str) -> String {
    let ec2 = account.ec2();
    let data =
        |image: &str| RequestLaunchTemplateData::builder().image_id(image).instance_type(InstanceType::T3Large).build();
    let made = ec2
        .create_launch_template()
        .launch_template_name(format!("amiguard-{instance}"))
        .launch_template_data(data(amiguard_integration_tests::AMAZON_LINUX_AMI))
        .send()
        .await
        .unwrap();
    let id = made.launch_template().unwrap().launch_template_id().unwrap().to_string();
    ec2.create_launch_template_version()
        .launch_template_id(&id)
        .launch_template_data(data(amiguard_integration_tests::RHEL_AMI))
        .send()
        .await
        .unwrap();
    id
}

/// (version, image it launches, whether it is the default) of each version of `template_id`.
async fn versions(account: &TestAccount, template_id: &str) -> Vec<(i64, Option<String>, bool)> {
    let output =
        account.ec2().describe_launch_template_versions().launch_template_id(template_id).send().await.unwrap();
    let mut versions: Vec<(i64, Option<String>, bool)> = output
        .launch_template_versions()
        .iter()
        .map(|v| {
            let image = v.launch_template_data().and_then(|d| d.image_id()).map(str::to_string);
            (v.version_number().unwrap(), image, v.default_version().unwrap_or(false))
        })
        .collect();
    versions.sort();
    versions
}

const TEMPLATE_CHANGES: [&str; 3] =
    ["ModifyLaunchTemplate", "CreateLaunchTemplateVersion", "DeleteLaunchTemplateVersions"];

#[tokio::test]
async fn a_launch_template_someone_else_made_under_amiguards_name_is_never_changed() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let template = someone_elses_template(&account, &instance).await;
    let before = versions(&account, &template).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;

    let mut made = Vec::new();
    for hour in ["01", "02"] {
        let time = format!("2026-11-27T{hour}:00:00Z");
        ec2_says_stopped_at(&instance, &time);
        let report = handle(&ports, &keep(1), event_at(&instance, time.parse().unwrap()), &Invocation::at(Utc::now()))
            .await
            .unwrap();
        assert_eq!(report.outcome, Outcome::Created, "the stop is imaged: {report:?}");
        assert_eq!(report.launch_template, None, "no template of amiguard's: {report:?}");
        assert!(
            report.warnings.iter().any(|w| w.contains(&template) && w.contains("not amiguard's")),
            "{:?}",
            report.warnings
        );
        made.push(report);
    }
    assert_eq!(made[1].retired_images, [made[0].image_id.clone().unwrap()], "retention goes on");
    assert_eq!(versions(&account, &template).await, before, "its default and versions are as they were");
    for action in TEMPLATE_CHANGES {
        assert_eq!(proxy.count(action), 0, "{action}");
    }
}

#[tokio::test]
async fn a_template_name_taken_when_amiguard_makes_its_own_is_a_warning_not_a_failure() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let template = someone_elses_template(&account, &instance).await;
    let before = versions(&account, &template).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    // The name was free when amiguard looked, and taken when it created (a race).
    proxy.inject(Fault::error("DescribeLaunchTemplates", 400, "InvalidLaunchTemplateName.NotFoundException"));
    let ports = through(&account, &proxy).await;
    let time = "2026-11-27T03:00:00Z";
    ec2_says_stopped_at(&instance, time);

    let report = handle(&ports, &keep(1), event_at(&instance, time.parse().unwrap()), &Invocation::at(Utc::now()))
        .await
        .expect("a name taken is a warning");

    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!(report.launch_template, None);
    assert!(report.warnings.iter().any(|w| w.contains(&format!("amiguard-{instance}"))), "{:?}", report.warnings);
    assert_eq!(proxy.count("CreateLaunchTemplate"), 1);
    assert_eq!(versions(&account, &template).await, before);
}

// ---- 10. an image made while the ledger failed is adopted ----

/// The image the default version of `amiguard-<instance>` launches.
async fn default_image(account: &TestAccount, instance: &str) -> Option<String> {
    let versions = account
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(format!("amiguard-{instance}"))
        .versions("$Default")
        .send()
        .await
        .unwrap();
    versions.launch_template_versions()[0].launch_template_data()?.image_id().map(str::to_string)
}

/// A stop of `instance` at `at` (EC2 says so), delivered half a minute later.
async fn stop_at(
    ports: &Ports<Ec2Client, DynamoLedger>,
    config: &Config,
    instance: &str,
    at: DateTime<Utc>,
) -> snapshot_on_stop::Report {
    ec2_says_stopped_at(instance, &rfc3339(at));
    handle(ports, config, event_at(instance, at), &Invocation::at(at + Duration::seconds(30))).await.unwrap()
}

#[tokio::test]
async fn an_image_made_while_the_ledger_failed_is_adopted_by_the_next_stop_and_counted_from_then_on() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let keep_one = keep(1);
    let start = seconds(Utc::now() - Duration::hours(4));
    let a = stop_at(&ports, &keep_one, &instance, start).await;
    let a_image = a.image_id.clone().unwrap();

    // The ledger refuses every write during the second stop: its image is made all the same.
    proxy.inject(Fault::error("PutItem", 400, "AccessDeniedException"));
    let b = stop_at(&ports, &keep_one, &instance, start + Duration::hours(1)).await;
    proxy.clear_faults();
    assert_eq!(b.outcome, Outcome::Created);
    assert!(b.warnings.iter().any(|w| w.contains("ledger could not be")), "{:?}", b.warnings);
    assert!(b.retired_images.is_empty());
    let b_image = b.image_id.clone().unwrap();

    // The next stop: its own image still pending (on AWS, for minutes), B is the newest available
    // image once adopted: the default launches it, and KEEP_LAST=1 retires A.
    let c_time = start + Duration::hours(2);
    let c_name = image_name(&instance, c_time);
    proxy.inject(Fault::rewrite_with("DescribeImages", move |answer| {
        amiguard_integration_tests::with_image_state(answer, &c_name, "pending")
    }));
    let c = stop_at(&ports, &keep_one, &instance, c_time).await;
    proxy.clear_faults();
    assert_eq!(c.adopted_images, std::slice::from_ref(&b_image), "{c:?}");
    assert_eq!(c.retired_images, std::slice::from_ref(&a_image), "{c:?}");
    assert_eq!(c.images_not_available, [c.image_id.clone().unwrap()]);
    assert_eq!(default_image(&account, &instance).await.as_deref(), Some(b_image.as_str()));
    let recorded = records::read(ports.ledger.as_ref().unwrap(), &account.region, &instance).await.unwrap();
    let b_record = recorded.images.iter().find(|r| r.image_id.as_deref() == Some(b_image.as_str())).unwrap();
    assert_eq!(b_record.stopped_at, start + Duration::hours(1));
    assert!(b_record.adopted && !b_record.snapshot_ids.is_empty(), "{b_record:?}");

    // Retention counts it from then on: the next stop (all available) retires it.
    let d = stop_at(&ports, &keep_one, &instance, start + Duration::hours(3)).await;
    assert!(d.retired_images.contains(&b_image), "{d:?}");
    assert!(d.adopted_images.is_empty(), "adopted once: {d:?}");
}

#[tokio::test]
async fn a_healthy_redelivery_of_a_stop_whose_ledger_failed_adopts_its_image_instead_of_skipping() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let start = seconds(Utc::now() - Duration::hours(3));
    let a = stop_at(&ports, &keep(1), &instance, start).await;
    proxy.inject(Fault::error("PutItem", 400, "AccessDeniedException"));
    let b_time = start + Duration::hours(1);
    let b = stop_at(&ports, &keep(1), &instance, b_time).await;
    proxy.clear_faults();

    let again = handle(&ports, &keep(1), event_at(&instance, b_time), &Invocation::at(b_time + Duration::minutes(2)))
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyCreated, "{again:?}");
    assert_eq!(again.image_id, b.image_id);
    assert_eq!(again.adopted_images, [b.image_id.clone().unwrap()]);
    assert_eq!(again.retired_images, [a.image_id.clone().unwrap()]);
    assert_eq!(default_image(&account, &instance).await, b.image_id);
}

#[tokio::test]
async fn images_made_before_the_first_adoption_are_not_adopted_later_whatever_their_name() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let start = seconds(Utc::now() - Duration::hours(3));
    stop_at(&ports, &keep(1), &instance, start).await;
    // After the instance's first adoption, an image of an older stop appears under an adoptable
    // name with snapshot-on-stop's tags: EC2 says CreateImage made it of this instance, but no
    // delivery since the ledger was in place could have (its stop is older).
    let old = start - Duration::days(1);
    let ec2 = account.ec2();
    let late = ec2.create_image().instance_id(&instance).name(image_name(&instance, old)).send().await.unwrap();
    let late = late.image_id().unwrap().to_string();
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    ec2.create_tags()
        .resources(&late)
        .tags(tag(tags::SOURCE_INSTANCE, &instance))
        .tags(tag(tags::CREATED_BY, tags::CREATED_BY_SNAPSHOT_ON_STOP))
        .tags(tag(tags::STOPPED_AT, &rfc3339(old)))
        .send()
        .await
        .unwrap();
    let next = stop_at(&ports, &keep(1), &instance, start + Duration::hours(1)).await;
    assert!(next.adopted_images.is_empty(), "{next:?}");
    assert!(own_image_ids(&account).await.contains(&late), "never retired");
}

// ---- 12, 13. amiguard:created-by only on what it is creating ----

/// The tags of each TagSpecification of a recorded call, by resource type.
fn tag_specifications(call: &Call) -> Vec<(String, Vec<(String, String)>)> {
    (1..)
        .map_while(|n| {
            let resource = call.param(&format!("TagSpecification.{n}.ResourceType"))?;
            let tags = (1..)
                .map_while(|m| {
                    let key = call.param(&format!("TagSpecification.{n}.Tag.{m}.Key"))?;
                    Some((key, call.param(&format!("TagSpecification.{n}.Tag.{m}.Value")).unwrap_or_default()))
                })
                .collect();
            Some((resource, tags))
        })
        .collect()
}

/// The keys a CreateTags call writes.
fn tagged_keys(call: &Call) -> Vec<String> {
    (1..).map_while(|n| call.param(&format!("Tag.{n}.Key"))).collect()
}

fn created_by() -> (String, String) {
    (tags::CREATED_BY.to_string(), tags::CREATED_BY_SNAPSHOT_ON_STOP.to_string())
}

async fn snapshot_tags(account: &TestAccount, image_id: &str) -> Vec<tags::Tag> {
    let image = account.ec2().describe_images().image_ids(image_id).send().await.unwrap();
    let mapping = &image.images()[0].block_device_mappings()[0];
    let snapshot_id = mapping.ebs().unwrap().snapshot_id().unwrap();
    let snapshot = account.ec2().describe_snapshots().snapshot_ids(snapshot_id).send().await.unwrap();
    tags::from_sdk(snapshot.snapshots()[0].tags())
}

#[tokio::test]
async fn the_image_its_snapshots_and_its_template_get_created_by_at_creation_and_nothing_existing_ever_does() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let start = seconds(Utc::now() - Duration::hours(3));
    // The second stop retires the first image, tagged for the Recycle Bin first (CreateTags on
    // an image and a snapshot that exist).
    let binned = Config { recycle_bin: amiguard::recycle_bin::RecycleBin::retaining_for(7), ..keep(1) };
    stop_at(&ports, &binned, &instance, start).await;
    let second = stop_at(&ports, &binned, &instance, start + Duration::hours(1)).await;
    assert_eq!(second.retired_images.len(), 1);
    let calls = proxy.calls();

    let created: Vec<&Call> = calls.iter().filter(|c| c.action == "CreateImage").collect();
    assert_eq!(created.len(), 2);
    for call in created {
        let specs = tag_specifications(call);
        for resource in ["image", "snapshot"] {
            let tagged = specs.iter().find(|(r, _)| r == resource).map(|(_, t)| t.clone()).unwrap_or_default();
            assert!(tagged.contains(&created_by()), "{resource} at CreateImage: {specs:?}");
        }
    }
    let template = calls.iter().find(|c| c.action == "CreateLaunchTemplate").expect("the template is made");
    let specs = tag_specifications(template);
    assert!(specs.iter().any(|(r, t)| r == "launch-template" && t.contains(&created_by())), "{specs:?}");
    // Every CreateTags on what exists (the snapshots' `amiguard:image`, the Recycle Bin's tag):
    // never the key IAM's gates read, in any letter case.
    let tagging: Vec<&Call> = calls.iter().filter(|c| c.action == "CreateTags").collect();
    assert!(tagging.iter().any(|c| tagged_keys(c).contains(&tags::IMAGE.to_string())), "the snapshots' AMI");
    assert!(tagging.iter().any(|c| tagged_keys(c).contains(&amiguard::recycle_bin::TAG_KEY.to_string())));
    for call in tagging {
        let keys = tagged_keys(call);
        assert!(!keys.iter().any(|k| k.eq_ignore_ascii_case(tags::CREATED_BY)), "CreateTags on what exists: {keys:?}");
    }
    // What AWS (here, the proxy in front of moto) then holds.
    let image_id = second.image_id.unwrap();
    let on_snapshot = snapshot_tags(&account, &image_id).await;
    assert_eq!(tags::value(&on_snapshot, tags::CREATED_BY), Some(tags::CREATED_BY_SNAPSHOT_ON_STOP));
    assert_eq!(tags::value(&on_snapshot, tags::IMAGE), Some(image_id.as_str()));
}

#[tokio::test]
async fn completing_an_image_made_before_this_change_never_writes_created_by_on_its_existing_snapshots() {
    let account = TestAccount::new().await;
    let instance = account.stopped_instance(&[OPT_IN]).await;
    let proxy = Proxy::start(&moto().endpoint).await;
    let ports = through(&account, &proxy).await;
    let stopped = seconds(Utc::now() - Duration::hours(1));
    ec2_says_stopped_at(&instance, &rfc3339(stopped));
    // A delivery of the previous version died right after CreateImage: its intent is recorded,
    // its image made, its snapshots never tagged.
    let name = image_name(&instance, stopped);
    let intent = MadeImage::intent(stopped, &name, stopped + Duration::seconds(5));
    records::write(ports.ledger.as_ref().unwrap(), &account.region, &instance, &intent).await.unwrap();
    let made = account.ec2().create_image().instance_id(&instance).name(&name).no_reboot(true).send().await.unwrap();
    let image_id = made.image_id().unwrap().to_string();

    let report = handle(&ports, &keep(3), event_at(&instance, stopped), &Invocation::at(Utc::now())).await.unwrap();

    assert_eq!((report.outcome, report.image_id.as_deref()), (Outcome::AlreadyCreated, Some(image_id.as_str())));
    for call in proxy.calls().iter().filter(|c| c.action == "CreateTags") {
        let keys = tagged_keys(call);
        assert!(!keys.iter().any(|k| k.eq_ignore_ascii_case(tags::CREATED_BY)), "{keys:?}");
    }
    let on_snapshot = snapshot_tags(&account, &image_id).await;
    assert_eq!(tags::value(&on_snapshot, tags::IMAGE), Some(image_id.as_str()), "completed");
    assert_eq!(tags::value(&on_snapshot, tags::CREATED_BY), None, "not claimed afterwards");
}
