//! What the emulator cannot do, with `aws-smithy-mocks`: AWS's `InvalidAMIName.Duplicate` on a
//! redelivery racing the first, and throttling that the SDK's retry absorbs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use amiguard::invocation::Invocation;
use amiguard::ledger::memory::MemoryLedger;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::operation::create_image::CreateImageOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, DeviceType, EbsBlockDevice, Image, Instance, InstanceState, InstanceStateName, LaunchTemplate,
    LaunchTemplateVersion, Reservation, ResponseLaunchTemplateData, Tag,
};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use serde_json::json;
use snapshot_on_stop::{handle, records, Config, CreateImageOutcome, Ec2, Ec2Client, Outcome, Ports};

const INSTANCE: &str = "i-0123456789abcdef0";
const IMAGE: &str = "ami-0aaaabbbbccccdddd";
const NAME: &str = "amiguard-i-0123456789abcdef0-20261127T101530Z";

/// An EC2 query-protocol error answer, as AWS sends it.
fn ec2_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{code} (mocked)</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
    );
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

/// The instance's relaunch template `lt-1`, whose default version 4 launches `IMAGE`.
fn relaunch_template() -> (Rule, Rule) {
    let template = mock!(Client::describe_launch_templates).then_output(|| {
        DescribeLaunchTemplatesOutput::builder()
            .launch_templates(
                LaunchTemplate::builder()
                    .launch_template_id("lt-1")
                    .launch_template_name(format!("amiguard-{INSTANCE}"))
                    .build(),
            )
            .build()
    });
    let versions = mock!(Client::describe_launch_template_versions).then_output(|| {
        DescribeLaunchTemplateVersionsOutput::builder()
            .launch_template_versions(
                LaunchTemplateVersion::builder()
                    .version_number(4)
                    .default_version(true)
                    .launch_template_data(ResponseLaunchTemplateData::builder().image_id(IMAGE).build())
                    .build(),
            )
            .build()
    });
    (template, versions)
}

fn fast_retries(builder: aws_sdk_ec2::config::Builder) -> aws_sdk_ec2::config::Builder {
    builder.retry_config(RetryConfig::standard().with_max_attempts(4).with_initial_backoff(Duration::from_millis(1)))
}

fn image() -> Image {
    Image::builder()
        .image_id(IMAGE)
        .name(NAME)
        .state(aws_sdk_ec2::types::ImageState::Available)
        .creation_date("2026-11-27T10:16:00.000Z")
        .tags(Tag::builder().key("amiguard:source-instance").value(INSTANCE).build())
        .tags(Tag::builder().key("amiguard:created-by").value("snapshot-on-stop").build())
        .tags(Tag::builder().key("amiguard:stopped-at").value("2026-11-27T10:15:30Z").build())
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(EbsBlockDevice::builder().snapshot_id("snap-1").build())
                .build(),
        )
        .build()
}

#[tokio::test]
async fn a_duplicate_name_answer_is_an_image_made_already() {
    let duplicate = mock!(Client::create_image).then_http_response(|| ec2_error(400, "InvalidAMIName.Duplicate"));
    let ec2 = Ec2Client::new(mock_client!(aws_sdk_ec2, [&duplicate]));
    let outcome = ec2.create_image(INSTANCE, NAME, "d", &[], &[]).await.unwrap();
    assert_eq!(outcome, CreateImageOutcome::NameTaken);
}

#[tokio::test]
async fn the_handler_answers_already_created_when_aws_says_the_name_is_taken() {
    let instance = mock!(Client::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id(INSTANCE)
                            .state(InstanceState::builder().name(InstanceStateName::Stopped).build())
                            .root_device_type(DeviceType::Ebs)
                            .tags(Tag::builder().key("amiguard:snapshot-on-stop").value("true").build())
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    // The name lookup finds nothing (another delivery is creating it right now), then finds it.
    let by_name = mock!(Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("name")))
        .sequence()
        .output(|| DescribeImagesOutput::builder().build())
        .output(|| DescribeImagesOutput::builder().images(image()).build())
        .build();
    let create = mock!(Client::create_image).then_http_response(|| ec2_error(400, "InvalidAMIName.Duplicate"));
    let by_id = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == [IMAGE])
        .then_output(|| DescribeImagesOutput::builder().images(image()).build());
    let by_tags = mock!(Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("tag:amiguard:source-instance")))
        .then_output(|| DescribeImagesOutput::builder().images(image()).build());
    let tag = mock!(Client::create_tags)
        .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build());
    let (template, versions) = relaunch_template();
    let client = mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        [&instance, &by_name, &create, &by_id, &by_tags, &tag, &template, &versions]
    );
    let config = Config::default();
    let mut event: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/snapshot-on-stop.stopped.json")).unwrap();
    event["detail"]["instance-id"] = json!(INSTANCE);

    // Without the ledger's lease (it is unavailable here), AWS's name uniqueness is what keeps
    // two concurrent deliveries to one image.
    let clients: Ports<_, MemoryLedger> =
        Ports { ec2: Ec2Client::new(client), ledger: None, alerts: None, region: "us-east-1".into(), findings: None };
    let report = handle(&clients, &config, event, &Invocation::at(chrono::Utc::now())).await.unwrap();

    assert_eq!(report.outcome, Outcome::AlreadyCreated);
    assert!(report.retired_images.is_empty());
    assert!(report.warnings.iter().any(|w| w.contains("nothing is retired")), "{:?}", report.warnings);
    assert_eq!(report.image_id.as_deref(), Some(IMAGE));
    assert_eq!(create.num_calls(), 1);
    assert_eq!(tag.num_calls(), 1, "the snapshots are tagged on the redelivery too");
    // Without the ledger nothing says `amiguard-<instance>` is amiguard's: it is left as it is.
    assert_eq!(report.launch_template, None);
    assert!(report.warnings.iter().any(|w| w.contains("lt-1") && w.contains("left as it is")), "{:?}", report.warnings);
}

/// A stop whose `CreateImage` loses the race for the name (`InvalidAMIName.Duplicate`) with the
/// ledger working: the image then found under the name is this stop's only if EC2 says so.
/// `found` is that image; `description` what EC2 says of its snapshot `snap-1`.
async fn lose_the_name_to(
    found: Image,
    description: &str,
) -> Result<snapshot_on_stop::Report, snapshot_on_stop::Error> {
    let description = description.to_string();
    let instance = mock!(Client::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id(INSTANCE)
                            .state(InstanceState::builder().name(InstanceStateName::Stopped).build())
                            .root_device_type(DeviceType::Ebs)
                            .tags(Tag::builder().key("amiguard:snapshot-on-stop").value("true").build())
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let answer = found.clone();
    let by_name = mock!(Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("name")))
        .sequence()
        .output(|| DescribeImagesOutput::builder().build())
        .output(move || DescribeImagesOutput::builder().images(answer.clone()).build())
        .build();
    let create = mock!(Client::create_image).then_http_response(|| ec2_error(400, "InvalidAMIName.Duplicate"));
    let snapshots = mock!(Client::describe_snapshots).then_output(move || {
        aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput::builder()
            .snapshots(
                aws_sdk_ec2::types::Snapshot::builder().snapshot_id("snap-1").description(description.clone()).build(),
            )
            .build()
    });
    let by_id = mock!(Client::describe_images)
        .match_requests(|r| {
            r.image_ids() == [IMAGE]
                || r.filters().iter().any(|f| f.name() == Some("image-id") && f.values() == [IMAGE])
        })
        .then_output(move || DescribeImagesOutput::builder().images(found.clone()).build());
    let tag = mock!(Client::create_tags)
        .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build());
    // The images of the instance the ledger does not hold (made while it failed): none.
    let by_tags = mock!(Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("tag:amiguard:source-instance")))
        .then_output(|| DescribeImagesOutput::builder().build());
    let (template, versions) = relaunch_template();
    let client = mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        [&instance, &by_name, &create, &snapshots, &by_id, &by_tags, &tag, &template, &versions]
    );
    let ledger = MemoryLedger::new();
    // This instance's pre-ledger images were adopted already: only the race is under test.
    records::mark_adopted(&ledger, "us-east-1", INSTANCE, chrono::Utc::now(), chrono::Utc::now()).await.unwrap();
    let clients: Ports<_, _> = Ports {
        ec2: Ec2Client::new(client),
        ledger: Some(ledger),
        alerts: None,
        region: "us-east-1".into(),
        findings: None,
    };
    let config = Config::default();
    let mut event: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/snapshot-on-stop.stopped.json")).unwrap();
    event["detail"]["instance-id"] = json!(INSTANCE);
    event["time"] = json!("2026-11-27T10:15:30Z");
    handle(&clients, &config, event, &Invocation::at(chrono::Utc::now())).await
}

#[tokio::test]
async fn an_image_that_won_the_name_is_this_stops_only_if_ec2_says_createimage_made_it_of_this_instance_after_the_stop()
{
    let ours = &format!("Created by CreateImage({INSTANCE}) for {IMAGE}");
    let report = lose_the_name_to(image(), ours).await.unwrap();
    assert_eq!(report.outcome, Outcome::AlreadyCreated);
    assert_eq!(report.image_id.as_deref(), Some(IMAGE));

    // Made of another instance, or registered over a snapshot whose description names no image
    // of this instance: somebody else's, never touched.
    for description in ["Created by CreateImage(i-0ffffffffffffffff) for ami-0aaaabbbbccccdddd", "my copy", ""] {
        let report = lose_the_name_to(image(), description).await.unwrap();
        assert_eq!(report.outcome, Outcome::Skipped, "{description:?}");
        assert!(report.reason.as_deref().unwrap().contains("EC2 does not say CreateImage made"), "{:?}", report.reason);
        assert_eq!(report.image_id, None);
    }

    // Made before this stop (the instance was still running): not the stop's image.
    let earlier = Image::builder()
        .set_block_device_mappings(image().block_device_mappings.clone())
        .image_id(IMAGE)
        .name(NAME)
        .creation_date("2026-11-27T10:00:00.000Z")
        .build();
    let report = lose_the_name_to(earlier, ours).await.unwrap();
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(report.reason.as_deref().unwrap().contains("not made after this stop"), "{:?}", report.reason);

    // Still pending, its snapshots not listed yet: it cannot be vouched for, so the delivery
    // fails retryably and Lambda's retry decides.
    let pending = Image::builder().image_id(IMAGE).name(NAME).creation_date("2026-11-27T10:16:00.000Z").build();
    let err = lose_the_name_to(pending, ours).await.unwrap_err();
    assert!(matches!(err, snapshot_on_stop::Error::NotYetVerifiable(ref id) if id == IMAGE), "{err:?}");
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "ImageNotYetVerifiable");
}

#[tokio::test]
async fn throttling_is_retried_until_the_call_succeeds() {
    let throttled = mock!(Client::create_image)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded"))
        .times(2)
        .output(|| CreateImageOutput::builder().image_id(IMAGE).build())
        .build();
    let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&throttled], fast_retries);
    let outcome = Ec2Client::new(client).create_image(INSTANCE, NAME, "d", &[], &[]).await.unwrap();
    assert_eq!(outcome, CreateImageOutcome::Created(IMAGE.to_string()));
    assert_eq!(throttled.num_calls(), 3);
}

#[tokio::test]
async fn other_errors_keep_their_aws_code() {
    let denied = mock!(Client::create_image).then_http_response(|| ec2_error(403, "UnauthorizedOperation"));
    let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&denied], fast_retries);
    let err = Ec2Client::new(client).create_image(INSTANCE, NAME, "d", &[], &[]).await.unwrap_err();
    assert_eq!(err.code, "UnauthorizedOperation");
    assert_eq!(err.operation, "CreateImage");
    assert_eq!(denied.num_calls(), 1, "a refusal is not retried");
}
