//! The fakes the handler tests run against (what moto cannot show: pending instances, failures),
//! and the events, images and configurations they share.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use amiguard::alert::{Alert, AlertPublisher, Severity};
use amiguard::error::AwsError;
use amiguard::invocation::Invocation;
use amiguard::ledger::memory::MemoryLedger;
use amiguard::tags::Tag;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use untrusted_ami_alert::core::enforce::{Enforcement, EnforcementTaken, InstanceState, LaunchedInstance, StopOutcome};
use untrusted_ami_alert::core::message::{AlertDetails, OwnerSource};
use untrusted_ami_alert::core::policy::TrustPolicy;
use untrusted_ami_alert::core::provenance::Ancestor;
use untrusted_ami_alert::core::verdict::LaunchImage;
use untrusted_ami_alert::ports::{CallerIdentity, Ec2, LaunchMetadata};
use untrusted_ami_alert::{metrics, Config, InstanceReport, Ports, Report};

pub const ACCOUNT: &str = "123456789012";
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:amiguard-alerts";
pub const INSTANCE: &str = "i-0123456789abcdef0";
pub const VENDOR_AMI: &str = "ami-0aaaaaaaaaaaaaaaa";

#[derive(Default)]
pub struct FakeEc2 {
    pub instances: Mutex<Vec<LaunchedInstance>>,
    pub images: Vec<LaunchImage>,
    /// Images of other regions (an ancestor's), by region.
    pub images_elsewhere: Vec<(String, LaunchImage)>,
    /// A listing that answers this error code (e.g. `RepeatedNextToken`), by operation.
    pub failing_listing: Option<(&'static str, &'static str)>,
    pub metadata: Vec<(String, LaunchImage)>,
    /// What the launch metadata says of each instance's state (`None`: it does not say).
    pub metadata_state: Option<InstanceState>,
    /// GetImageAncestry's answers: an image's ancestors, or the error code.
    pub ancestry: HashMap<String, Result<Vec<Ancestor>, &'static str>>,
    pub fail_tag: Option<&'static str>,
    pub fail_stop: Option<&'static str>,
    pub stop_refused: bool,
    pub calls: Mutex<Vec<String>>,
}

impl FakeEc2 {
    pub fn with(instance: LaunchedInstance) -> Self {
        Self { instances: Mutex::new(vec![instance]), ..Self::default() }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// The error `failing_listing` names for `operation`, if any.
    fn listing_fails(&self, operation: &'static str) -> Result<(), AwsError> {
        match self.failing_listing {
            Some((failing, code)) if failing == operation => Err(AwsError::new(operation, code, "mocked")),
            _ => Ok(()),
        }
    }
}

impl Ec2 for FakeEc2 {
    async fn instances(&self, ids: &[String]) -> Result<Vec<LaunchedInstance>, AwsError> {
        self.log("DescribeInstances".into());
        self.listing_fails("DescribeInstances")?;
        Ok(self.instances.lock().unwrap().iter().filter(|i| ids.contains(&i.instance_id)).cloned().collect())
    }

    async fn live_instances(&self) -> Result<Vec<LaunchedInstance>, AwsError> {
        self.log("DescribeInstances".into());
        self.listing_fails("DescribeInstances")?;
        Ok(self.instances.lock().unwrap().iter().filter(|i| i.state != InstanceState::Terminated).cloned().collect())
    }

    async fn visible_images(&self, ids: &[String]) -> Result<Vec<LaunchImage>, AwsError> {
        self.log("DescribeImages".into());
        self.listing_fails("DescribeImages")?;
        Ok(self.images.iter().filter(|i| ids.contains(&i.image_id)).cloned().collect())
    }

    async fn visible_images_in(&self, region: &str, ids: &[String]) -> Result<Vec<LaunchImage>, AwsError> {
        self.log(format!("DescribeImages {region}"));
        self.listing_fails("DescribeImages")?;
        let here = self.images_elsewhere.iter().filter(|(r, i)| r == region && ids.contains(&i.image_id));
        Ok(here.map(|(_, i)| i.clone()).collect())
    }

    async fn launch_image_metadata(&self, ids: &[String]) -> Result<Vec<LaunchMetadata>, AwsError> {
        self.log("DescribeInstanceImageMetadata".into());
        self.listing_fails("DescribeInstanceImageMetadata")?;
        if self.metadata.is_empty() {
            return Err(AwsError::new("DescribeInstanceImageMetadata", "UnauthorizedOperation", "no"));
        }
        Ok(self
            .metadata
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(id, image)| LaunchMetadata {
                instance_id: id.clone(),
                image: image.clone(),
                instance_state: self.metadata_state.clone(),
            })
            .collect())
    }

    async fn image_ancestry(&self, image_id: &str) -> Result<Vec<Ancestor>, AwsError> {
        self.log(format!("GetImageAncestry {image_id}"));
        match self.ancestry.get(image_id) {
            Some(Ok(ancestors)) => Ok(ancestors.clone()),
            Some(Err(code)) => Err(AwsError::new("GetImageAncestry", *code, "mocked")),
            None => Ok(Vec::new()),
        }
    }

    async fn tag_instance(&self, instance_id: &str, tag: &Tag) -> Result<(), AwsError> {
        self.log(format!("CreateTags {instance_id} {}={}", tag.key, tag.value));
        match self.fail_tag {
            Some(code) => Err(AwsError::new("CreateTags", code, "mocked")),
            None => Ok(()),
        }
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<StopOutcome, AwsError> {
        self.log(format!("StopInstances {instance_id}"));
        if let Some(code) = self.fail_stop {
            return Err(AwsError::new("StopInstances", code, "mocked"));
        }
        if self.stop_refused {
            return Ok(StopOutcome::NotStoppable);
        }
        for instance in self.instances.lock().unwrap().iter_mut().filter(|i| i.instance_id == instance_id) {
            instance.state = InstanceState::Stopping;
        }
        Ok(StopOutcome::Stopping)
    }
}

#[derive(Default)]
pub struct FakeSns {
    pub sent: Mutex<Vec<Alert>>,
    pub fail: bool,
}

impl AlertPublisher for FakeSns {
    async fn publish(&self, alert: &Alert) -> Result<String, AwsError> {
        if self.fail {
            return Err(AwsError::new("Publish", "NotFound", "Topic does not exist"));
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(alert.clone());
        Ok(format!("msg-{}", sent.len()))
    }
}

pub struct FakeSts {
    pub calls: Mutex<usize>,
}

impl CallerIdentity for FakeSts {
    async fn account_id(&self) -> Result<String, AwsError> {
        *self.calls.lock().unwrap() += 1;
        Ok(ACCOUNT.to_string())
    }
}

pub fn clients(ec2: FakeEc2) -> Ports<FakeEc2, FakeSns, FakeSts, MemoryLedger> {
    Ports {
        ec2,
        alerts: FakeSns::default(),
        identity: FakeSts { calls: Mutex::new(0) },
        ledger: Some(MemoryLedger::new()),
        region: "us-east-1".into(),
        findings: None,
    }
}

pub fn config(enforcement: Enforcement) -> Config {
    Config {
        policy: TrustPolicy::default(),
        alert_topic_arn: TOPIC.into(),
        enforcement,
        enforce_unverifiable: false,
        check_provenance: true,
        policy_from_account: false,
        fold_launch_alerts: true,
        dry_run: false,
        security_hub_findings: true,
        policy_note: None,
    }
}

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
}

/// One delivery (a fresh request id) at the tests' clock.
pub fn at() -> Invocation {
    Invocation::at(now())
}

pub fn instance(id: &str, image: &str, state: InstanceState) -> LaunchedInstance {
    LaunchedInstance { instance_id: id.into(), image_id: Some(image.into()), state }
}

pub fn vendor_image() -> LaunchImage {
    LaunchImage {
        image_id: VENDOR_AMI.into(),
        owner_id: "111122223333".into(),
        name: Some("vendor".into()),
        creation_date: Some("2025-01-01T00:00:00.000Z".into()),
        ..LaunchImage::default()
    }
}

pub fn state_change(state: &str) -> serde_json::Value {
    json!({
        "version": "0", "id": "1", "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "account": ACCOUNT, "time": "2026-01-31T12:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"instance-id": INSTANCE, "state": state}
    })
}

pub fn instance_report(report: Report) -> InstanceReport {
    match report {
        Report::Instance(one) => one,
        other => panic!("not an instance report: {other:?}"),
    }
}

/// An image this account owns (trusted by `self`), running on the instance.
pub fn own_image() -> LaunchImage {
    LaunchImage { image_id: "ami-0c0c0c0c0c0c0c0c0".into(), owner_id: ACCOUNT.into(), ..vendor_image() }
}

pub fn copied_in(ancestry: Result<Vec<Ancestor>, &'static str>, source: Option<&str>) -> FakeEc2 {
    let own = LaunchImage { source_image_id: source.map(str::to_string), ..own_image() };
    FakeEc2 {
        images: vec![own.clone(), vendor_image()],
        ancestry: [(own.image_id.clone(), ancestry)].into(),
        ..FakeEc2::with(instance(INSTANCE, &own.image_id, InstanceState::Running))
    }
}

pub fn vendor_ancestor() -> Ancestor {
    Ancestor { image_id: VENDOR_AMI.into(), region: Some("us-east-1".into()), ..Ancestor::default() }
}

pub fn audit_event() -> serde_json::Value {
    json!({"detail-type": "Scheduled Event", "source": "aws.events", "account": ACCOUNT, "region": "us-east-1", "detail": {}})
}

/// A folded launch alert as the ledger keeps it, for `instance` running the vendor image.
pub fn folded_alert(instance: &str) -> AlertDetails {
    AlertDetails {
        instance_id: instance.into(),
        instance_state: "running".into(),
        image_id: VENDOR_AMI.into(),
        owner_id: Some("111122223333".into()),
        owner_alias: None,
        owner_source: OwnerSource::Image,
        image_name: Some("vendor".into()),
        reasons: vec!["owner 111122223333 is not trusted".into()],
        severity: Severity::High,
        region: "us-east-1".into(),
        account: ACCOUNT.into(),
        seen_on: "launch".into(),
        enforcement_mode: Enforcement::Alert,
        enforcement: EnforcementTaken::None,
        enforcement_error: None,
        tag_error: None,
        policy: "trusted image providers: amazon, self".into(),
        ledger_warning: None,
    }
}

/// A RunInstances record two hours old (EC2 has forgotten an instance terminated since).
pub fn cloudtrail(response: serde_json::Value) -> serde_json::Value {
    json!({
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "account": ACCOUNT, "region": "us-east-1",
        "time": "2026-01-31T10:00:00Z",
        "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "responseElements": response}
    })
}

pub fn dry(enforcement: Enforcement) -> Config {
    Config { dry_run: true, ..config(enforcement) }
}

/// What a dry run must never do: no publish, no tag, no stop, no ledger write (reads only).
pub fn assert_changed_nothing(clients: &Ports<FakeEc2, FakeSns, FakeSts, MemoryLedger>) {
    assert!(clients.alerts.sent.lock().unwrap().is_empty(), "published");
    let calls = clients.ec2.calls();
    assert!(
        calls.iter().all(|c| !c.starts_with("CreateTags") && !c.starts_with("StopInstances")),
        "changed EC2: {calls:?}"
    );
    let ledger = clients.ledger.as_ref().unwrap();
    assert_eq!(ledger.writes(), 0, "wrote the ledger: {:?}", ledger.calls());
    assert!(ledger.calls().iter().all(|c| *c == "Query"), "{:?}", ledger.calls());
}

/// `AlertsSent` of each severity in the invocation's EMF lines, and whether they say dry run.
pub fn alerts_sent(report: &Report) -> (i64, i64, bool) {
    let lines = metrics::emf_lines(report, now());
    let of = |severity: &str| {
        let line = lines.iter().find(|l| l["Severity"] == severity).unwrap();
        line["AlertsSent"].as_i64().unwrap()
    };
    let dry = lines.iter().all(|l| l["DryRun"] == json!(true));
    assert!(dry || lines.iter().all(|l| l["DryRun"] == json!(false)));
    (of("high"), of("medium"), dry)
}
